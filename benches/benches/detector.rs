//! Swarm detector throughput on one core, next to a baseline that only touches every event
//! (the floor of any consumer), in one run. Two mixes: a realistic one (browsing with assets plus
//! a swarm on two pages) and a flood of random sources and random paths (the worst case for the
//! detector's tables, which must stay bounded).

use std::{hint::black_box, net::IpAddr, time::Instant};

use swarmwall::{
    detect::{Detector, DetectorConfig},
    l7::{Kind, RequestEvent},
};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn event(ts_ns: u64, src: IpAddr, path: String, ua: &str) -> RequestEvent {
    RequestEvent {
        ts_ns,
        src,
        dst: "203.0.113.10".parse().expect("literal"),
        dst_port: 80,
        kind: Kind::Http,
        host: Some("shop.example".into()),
        ja4: None,
        path,
        user_agent: Some(ua.into()),
        referer: None,
        ..RequestEvent::default()
    }
}

fn realistic(n: usize) -> Vec<RequestEvent> {
    let mut r = Rng(7);
    (0..n)
        .map(|i| {
            let ts = i as u64 * 20_000; // 50k events per second of event time
            if i.is_multiple_of(3) {
                let bot = r.next() % 2000;
                let src = IpAddr::from([192, 0, (2 + bot / 250) as u8, (bot % 250) as u8]);
                event(ts, src, format!("/gallery/{}", 7 + r.next() % 2), "bot/1.0")
            } else {
                let v = r.next() % 50_000;
                let src = IpAddr::from([198, 51, (v >> 8) as u8, v as u8]);
                let path = if r.next().is_multiple_of(4) {
                    format!("/product/{}", r.next() % 40)
                } else {
                    format!("/img/p{}-{}.jpg", r.next() % 40, r.next() % 8)
                };
                event(ts, src, path, "Mozilla/5.0")
            }
        })
        .collect()
}

/// An HTTPS site with no log: TLS hellos only — a swarm of 2000 bots opening connections with one
/// JA4, 50k browsers with four, and a stream of first-time visitors (a flash crowd).
fn handshakes(n: usize) -> Vec<RequestEvent> {
    const BOT: &str = "t13d3112h2_e8f1e7e78f70_6bebaf5329ac";
    const BROWSERS: [&str; 4] = [
        "t13d1516h2_8daaf6152771_e5627efa2ab1",
        "t13d1715h2_5b57614c22b0_3d5424432f57",
        "t13d2014h2_a09f3c656075_14788d8d241b",
        "t13d1516h2_8daaf6152771_02713d6af862",
    ];
    let mut r = Rng(13);
    (0..n)
        .map(|i| {
            let ts = i as u64 * 20_000;
            let (src, ja4) = match i % 3 {
                0 => {
                    let bot = r.next() % 2000;
                    (
                        IpAddr::from([192, 0, (2 + bot / 250) as u8, (bot % 250) as u8]),
                        BOT,
                    )
                }
                1 => {
                    let v = r.next() % 50_000;
                    (
                        IpAddr::from([198, 51, (v >> 8) as u8, v as u8]),
                        BROWSERS[v as usize % 4],
                    )
                }
                _ => (
                    IpAddr::from((r.next() as u32 | 0x0a00_0000).to_be_bytes()),
                    BROWSERS[i % 4],
                ),
            };
            RequestEvent {
                ts_ns: ts,
                src,
                dst: "203.0.113.10".parse().expect("literal"),
                dst_port: 443,
                kind: Kind::TlsHello,
                host: Some("shop.example".into()),
                ja4: Some(ja4.into()),
                ..RequestEvent::default()
            }
        })
        .collect()
}

fn flood(n: usize) -> Vec<RequestEvent> {
    let mut r = Rng(11);
    (0..n)
        .map(|i| {
            let x = r.next();
            event(
                i as u64 * 1_000,
                IpAddr::from((x as u32).to_be_bytes()),
                format!("/r/{}", x >> 44),
                "x",
            )
        })
        .collect()
}

/// Events the daemon's detector thread hands the detector at most at once (its drain batch).
const BATCH: usize = 4096;

/// Events per second (steady state: the second half of the mix), the baseline's, sources
/// tracked, and one tick's cost in ms with the detector as full as the mix left it (the daemon
/// ticks every 250 ms). `batch`: fed as the daemon feeds it, in batches
/// ([`Detector::observe_batch`]); otherwise one [`Detector::observe`] per event.
fn measure(events: &[RequestEvent], cfg: &DetectorConfig, batch: bool) -> (f64, f64, usize, f64) {
    // Baseline: touch every event (hash its address and path length) and tick as often.
    let t = Instant::now();
    let mut acc = 0u64;
    for e in events {
        acc = acc.wrapping_add(e.ts_ns ^ e.path.len() as u64 ^ u64::from(e.dst_port));
        if let IpAddr::V4(a) = e.src {
            acc ^= u64::from(u32::from(a));
        }
    }
    black_box(acc);
    let base = events.len() as f64 / t.elapsed().as_secs_f64();
    // The first half fills the detector's tables (untimed): page faults of their first growth
    // are the kernel's cost, not the detector's, and vary from run to run on a VM. The second
    // half is the steady state a long-running daemon sees.
    let mut d = Detector::new(cfg.clone());
    let (warm, timed) = events.split_at(events.len() / 2);
    let mut next = 0u64;
    // Ticks every second of event time, between batches as in the daemon.
    let mut feed = |d: &mut Detector, mut events: &[RequestEvent]| {
        while let Some(first) = events.first() {
            if first.ts_ns >= next {
                d.tick(first.ts_ns);
                next = first.ts_ns + 1_000_000_000;
            }
            let due = events.partition_point(|e| e.ts_ns < next).clamp(1, BATCH);
            let (now, rest) = events.split_at(due);
            if batch {
                d.observe_batch(now);
            } else {
                now.iter().for_each(|e| d.observe(e));
            }
            events = rest;
        }
    };
    feed(&mut d, warm);
    let t = Instant::now();
    feed(&mut d, timed);
    let rate = timed.len() as f64 / t.elapsed().as_secs_f64();
    let last = events.last().map_or(0, |e| e.ts_ns);
    const TICKS: u64 = 5;
    let t = Instant::now();
    for k in 1..=TICKS {
        black_box(d.tick(last + k * 250_000_000));
    }
    let tick_ms = t.elapsed().as_secs_f64() * 1000.0 / TICKS as f64;
    (
        rate,
        base,
        d.tracked_sources() + d.tracked_handshake_sources(),
        tick_ms,
    )
}

fn main() {
    let quick = std::env::var("SWARMWALL_BENCH_QUICK").is_ok_and(|v| v == "1");
    let n = if quick { 300_000 } else { 3_000_000 };
    // One mix only (a word of its name), e.g. to profile it.
    let only = std::env::var("SWARMWALL_BENCH_MIX").ok();
    let cfg = DetectorConfig::default();
    println!("swarm detector, one core, {n} events per mix");
    println!(
        "{:<40} {:>14} {:>14} {:>10} {:>14} {:>10} {:>10} {:>10}",
        "mix", "events/s", "one by one/s", "× one", "baseline/s", "ratio", "sources", "tick ms"
    );
    type Mix = fn(usize) -> Vec<RequestEvent>;
    let mixes: [(&str, Mix); 3] = [
        ("browsing + swarm (realistic)", realistic),
        ("flood: random sources and paths", flood),
        ("TLS hellos only (bots, browsers, crowd)", handshakes),
    ];
    for (name, mix) in mixes {
        if only.as_deref().is_some_and(|w| !name.contains(w)) {
            continue;
        }
        let events = mix(n);
        // One event at a time first: the same-run reference for what batches gain.
        let (single, _, _, _) = measure(&events, &cfg, false);
        let (rate, base, tracked, tick_ms) = measure(&events, &cfg, true);
        println!(
            "{name:<40} {rate:>14.0} {single:>14.0} {:>10.2} {base:>14.0} {:>10.3} {tracked:>10} {tick_ms:>10.1}",
            rate / single,
            rate / base
        );
    }
    println!(
        "bounds: at most {} sources and {} pages tracked",
        cfg.max_sources, cfg.max_pages_tracked
    );
}
