//! Top talkers: per-source rates from periodic counter samples.
//!
//! Each source keeps exponentially weighted rates for a few time constants (1 s, 10 s, 60 s,
//! 300 s); a query for a window uses the nearest. That bounds memory to a few floats per
//! source whatever the window, and a query is one partial sort, not a pass over the kernel maps:
//! the sampler pays for reading the maps, in the background.

use std::{
    cmp::{Ordering, Reverse},
    collections::{BinaryHeap, HashMap},
    net::IpAddr,
    time::Instant,
};

/// A source ranked by its sort key; ties go to the lower address, so the order is stable.
#[derive(Clone, Copy, PartialEq)]
struct Ranked(f64, IpAddr);

impl Eq for Ranked {}

impl PartialOrd for Ranked {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Ranked {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0).then(other.1.cmp(&self.1))
    }
}

use crate::{
    api::types::{TalkerView, TopView},
    dataplane::SourceStats,
};

/// Time constants of the kept averages, seconds.
const TAUS: [f64; 4] = [1.0, 10.0, 60.0, 300.0];

#[derive(Clone, Copy, Default)]
struct Rates {
    pps: f64,
    bps: f64,
    drop_pps: f64,
}

#[derive(Clone, Copy, Default)]
struct Source {
    packets: u64,
    bytes: u64,
    dropped: u64,
    rates: [Rates; TAUS.len()],
    /// The sample that last saw this source; older ones were evicted from the kernel.
    seen: u64,
}

/// The sampler's state.
#[derive(Default)]
pub struct Top {
    last: Option<Instant>,
    first: Option<Instant>,
    sources: HashMap<IpAddr, Source>,
    samples: u64,
}

impl Top {
    /// Folds in a fresh read of the per-source counters taken at `now`.
    pub fn update(&mut self, now: Instant, sample: &[SourceStats]) {
        let dt = self.last.map(|l| now.duration_since(l).as_secs_f64());
        self.last = Some(now);
        self.first.get_or_insert(now);
        self.samples += 1;
        let now_sample = self.samples;
        for s in sample {
            let Some(addr) = s.addr else { continue };
            let entry = self.sources.entry(addr);
            let is_new = matches!(entry, std::collections::hash_map::Entry::Vacant(_));
            let src = entry.or_default();
            if let Some(dt) = dt.filter(|d| *d > 0.0) {
                // A source first seen now had zero counts at the previous sample. Counters only
                // grow; a smaller value means the LRU evicted and re-created it: start over.
                let prev = if is_new { Source::default() } else { *src };
                let d = |a: u64, b: u64| a.saturating_sub(b) as f64 / dt;
                let inst = Rates {
                    pps: d(s.packets, prev.packets),
                    bps: d(s.bytes, prev.bytes) * 8.0,
                    drop_pps: d(s.dropped, prev.dropped),
                };
                for (r, tau) in src.rates.iter_mut().zip(TAUS) {
                    let a = 1.0 - (-dt / tau).exp();
                    r.pps += a * (inst.pps - r.pps);
                    r.bps += a * (inst.bps - r.bps);
                    r.drop_pps += a * (inst.drop_pps - r.drop_pps);
                }
            }
            src.packets = s.packets;
            src.bytes = s.bytes;
            src.dropped = s.dropped;
            src.seen = now_sample;
        }
        // Sources gone from the kernel (evicted) are dropped here too: memory follows the maps.
        self.sources.retain(|_, s| s.seen == now_sample);
    }

    /// The top `limit` sources by `by` (`pps`, `bps`, `drops`) over about `window` seconds.
    pub fn view(&self, by: &str, window: f64, limit: usize) -> TopView {
        let k = TAUS
            .iter()
            .enumerate()
            .min_by(|a, b| {
                (a.1.ln() - window.ln())
                    .abs()
                    .total_cmp(&(b.1.ln() - window.ln()).abs())
            })
            .map_or(1, |(i, _)| i);
        let key = |s: &Source| match by {
            "bps" => s.rates[k].bps,
            "drops" => s.rates[k].drop_pps,
            _ => s.rates[k].pps,
        };
        // One pass keeping the best `limit` in a min-heap: no copy of a million entries.
        let mut heap: BinaryHeap<Reverse<Ranked>> = BinaryHeap::with_capacity(limit + 1);
        for (addr, src) in &self.sources {
            let r = Ranked(key(src), *addr);
            if heap.len() < limit {
                heap.push(Reverse(r));
            } else if let Some(Reverse(min)) = heap.peek()
                && r > *min
            {
                heap.pop();
                heap.push(Reverse(r));
            }
        }
        let mut best: Vec<Ranked> = heap.into_iter().map(|Reverse(r)| r).collect();
        best.sort_by(|a, b| b.cmp(a));
        let all: Vec<(IpAddr, Source)> = best
            .into_iter()
            .map(|Ranked(_, a)| (a, self.sources[&a]))
            .collect();
        let span = match (self.first, self.last) {
            (Some(f), Some(l)) => l.duration_since(f).as_secs_f64(),
            _ => 0.0,
        };
        TopView {
            window_s: TAUS[k].min(span.max(0.0)),
            by: by.to_owned(),
            tracked: self.sources.len(),
            sources: all
                .into_iter()
                .map(|(a, s)| TalkerView {
                    addr: a.to_string(),
                    pps: s.rates[k].pps,
                    bps: s.rates[k].bps,
                    drop_pps: s.rates[k].drop_pps,
                    packets: s.packets,
                    bytes: s.bytes,
                    dropped: s.dropped,
                    rules: Vec::new(),
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn s(a: &str, packets: u64, dropped: u64) -> SourceStats {
        SourceStats {
            addr: Some(a.parse().unwrap()),
            packets,
            bytes: packets * 100,
            dropped,
            ..SourceStats::default()
        }
    }

    #[test]
    fn steady_rates_converge_and_rank() {
        let mut t = Top::default();
        let t0 = Instant::now();
        for i in 0..120u64 {
            t.update(
                t0 + Duration::from_secs(i),
                &[s("192.0.2.1", i * 1000, 0), s("192.0.2.2", i * 10, i * 10)],
            );
        }
        let v = t.view("pps", 10.0, 10);
        assert_eq!(v.tracked, 2);
        assert_eq!(v.sources[0].addr, "192.0.2.1");
        assert!(
            (v.sources[0].pps - 1000.0).abs() < 1.0,
            "{}",
            v.sources[0].pps
        );
        assert!((v.sources[0].bps - 800_000.0).abs() < 1000.0);
        let d = t.view("drops", 10.0, 1);
        assert_eq!(d.sources.len(), 1);
        assert_eq!(d.sources[0].addr, "192.0.2.2");
        assert!((d.sources[0].drop_pps - 10.0).abs() < 0.1);
    }

    #[test]
    fn a_burst_shows_in_short_windows_first() {
        let mut t = Top::default();
        let t0 = Instant::now();
        t.update(t0, &[s("192.0.2.1", 0, 0)]);
        t.update(t0 + Duration::from_secs(1), &[s("192.0.2.1", 10_000, 0)]);
        let short = t.view("pps", 1.0, 1).sources[0].pps;
        let long = t.view("pps", 60.0, 1).sources[0].pps;
        assert!(short > 5000.0 && long < 500.0, "{short} {long}");
    }

    #[test]
    fn top_of_a_million_is_a_partial_sort() {
        let mut t = Top::default();
        let sample: Vec<SourceStats> = (0..200_000u32)
            .map(|i| s(&std::net::Ipv4Addr::from(i).to_string(), i as u64, 0))
            .collect();
        t.update(Instant::now(), &sample);
        let v = t.view("pps", 10.0, 5);
        assert_eq!(v.sources.len(), 5);
        assert_eq!(v.tracked, 200_000);
    }
}
