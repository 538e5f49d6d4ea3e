//! Page rates and baselines: which pages run hot at a tick.

use std::net::IpAddr;

use super::{Detector, decay};

impl Detector {
    /// Decays every page's count to `now_ns`, updates its baseline (`dt` seconds since the last
    /// tick) and returns, per page id, whether it runs hot: well above its baseline, or with
    /// hardly any baseline at all.
    pub(super) fn update_pages(&mut self, now_ns: u64, dt: f64) -> Vec<bool> {
        let tau = self.cfg.window.as_nanos() as f64;
        let btau = self.cfg.baseline_window.as_secs_f64();
        let mut hot = vec![false; self.pages.len()];
        for (i, p) in self.pages.iter_mut().enumerate() {
            decay(&mut p.count, p.last_ns, now_ns, tau);
            p.last_ns = p.last_ns.max(now_ns);
            let rate = p.count / self.cfg.window.as_secs_f64();
            let is_hot = rate >= self.cfg.hot_factor * p.baseline_rps
                || p.baseline_rps < self.cfg.cold_baseline_rps;
            hot[i] = is_hot && rate > 0.0;
            if hot[i] {
                p.hot_since_ns.get_or_insert(now_ns);
            } else {
                p.hot_since_ns = None;
            }
            if dt > 0.0 {
                // The baseline follows the rate slowly, and not at all while the page is hot:
                // a long attack must not become the new normal.
                if !hot[i] || p.baseline_rps < self.cfg.cold_baseline_rps {
                    let a = 1.0 - (-dt / btau).exp();
                    p.baseline_rps += a
                        * (rate.min(
                            p.baseline_rps.max(self.cfg.cold_baseline_rps) * self.cfg.hot_factor,
                        ) - p.baseline_rps);
                }
            }
        }
        hot
    }
}

/// Page hashes the doorkeeper remembers (32 bytes each: 4 MB). Under a flood of a million new
/// paths a second each stays for about a tenth of a second, twice as long as the page table
/// would keep a page through that flood.
const DOORKEEPER_SLOTS: usize = 1 << 17;

/// A page requested once: its index hash (never 0; 0 marks a free slot), who requested it and
/// when.
#[derive(Clone, Copy)]
struct Sight {
    tag: u64,
    src: IpAddr,
    at_ns: u64,
}

const NO_SIGHT: Sight = Sight {
    tag: 0,
    src: IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
    at_ns: 0,
};

/// The pages requested once and given no slot: a direct-mapped table, a newer page taking
/// the place of an older one.
pub(super) struct Doorkeeper(Vec<Sight>);

impl Default for Doorkeeper {
    fn default() -> Self {
        Self(vec![NO_SIGHT; DOORKEEPER_SLOTS])
    }
}

/// What the doorkeeper says of a request to a page with no slot.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Door {
    /// Its first request: remembered, no slot yet.
    First,
    /// Its second: give it a slot. The first came from `src` at `at_ns`.
    Second { src: IpAddr, at_ns: u64 },
}

impl Doorkeeper {
    fn at(hash: u64) -> usize {
        (hash >> 40) as usize & (DOORKEEPER_SLOTS - 1)
    }

    /// Asks the CPU for the slot of the page with index hash `hash` (see [`super::prefetch`]).
    pub(super) fn prefetch(&self, hash: u64) {
        super::prefetch::value(&self.0[Self::at(hash)]);
    }

    /// Notes a request from `src` at `now_ns` to the page with index hash `hash`. A second
    /// sight forgets the page: it gets a slot of its own then.
    pub(super) fn sight(&mut self, hash: u64, src: IpAddr, now_ns: u64) -> Door {
        let tag = hash | 1;
        let slot = &mut self.0[Self::at(hash)];
        if slot.tag == tag {
            let first = Door::Second {
                src: slot.src,
                at_ns: slot.at_ns,
            };
            *slot = NO_SIGHT;
            first
        } else {
            *slot = Sight {
                tag,
                src,
                at_ns: now_ns,
            };
            Door::First
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_gets_through_at_its_second_sight_and_a_newer_page_replaces_an_older_one() {
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        let mut d = Doorkeeper::default();
        let page = 42 << 40;
        assert_eq!(d.sight(page, a, 1), Door::First);
        assert_eq!(
            d.sight(page, b, 2),
            Door::Second { src: a, at_ns: 1 },
            "the second sight lets it in, naming the first"
        );
        assert_eq!(d.sight(page, b, 3), Door::First, "and forgets it");
        // Same slot, another page: the newer one takes it.
        let other = page | (7 << 1);
        assert_eq!(d.sight(other, a, 4), Door::First);
        assert_eq!(d.sight(page, a, 5), Door::First);
        assert_eq!(d.sight(other, a, 6), Door::First);
    }
}
