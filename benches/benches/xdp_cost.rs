//! In-kernel per-packet cost of the XDP program, measured with `BPF_PROG_TEST_RUN`, next to a
//! trivial `XDP_PASS` program from the same object (the floor), in one run.
//!
//! Loads 1M exact rules and 100k prefix rules first (the sizes the targets are stated for), then
//! runs each path `REPEAT` times per round, several rounds, and reports the median. Needs root.
//!
//! `cargo xtask bench` (or `cargo bench -p swarmwall-benches`); `SWARMWALL_BENCH_QUICK=1` runs a
//! small configuration for a smoke check.

use std::{
    net::{IpAddr, Ipv4Addr},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use swarmwall::{Action, Dataplane, Prog, RuleSpec, Scope, Sizes, Target};
use swarmwall_integration::{
    hello::browser_client_hello,
    packets::{DEFAULT_SEQ, Frame},
};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;

struct Config {
    exact: u32,
    prefixes: u32,
    repeat: u32,
    rounds: usize,
    /// Runs of one packet each, for the TLS paths.
    single_runs: usize,
}

fn config() -> Config {
    if std::env::var("SWARMWALL_BENCH_QUICK").is_ok_and(|v| v == "1") {
        Config {
            exact: 10_000,
            prefixes: 1_000,
            repeat: 200_000,
            rounds: 5,
            single_runs: 500,
        }
    } else {
        Config {
            exact: 1_000_000,
            prefixes: 100_000,
            repeat: 2_000_000,
            rounds: 7,
            single_runs: 5000,
        }
    }
}

/// A 64-byte IPv4 (or 84-byte IPv6) UDP frame, the calibration packet of the design notes.
fn frame(src: &str, dst: &str) -> Vec<u8> {
    let src: IpAddr = src.parse().expect("literal address");
    let dst: IpAddr = dst.parse().expect("literal address");
    Frame::udp(src, dst, 40000, 53).pad_to(64).build()
}

fn v4(n: u32) -> Target {
    Target::Addr(IpAddr::V4(Ipv4Addr::from(n)))
}

fn main() -> Result<()> {
    if !nix_is_root() {
        eprintln!("skipping: the XDP benchmark needs root (BPF_PROG_TEST_RUN)");
        return Ok(());
    }
    let cfg = config();
    let mut dp = Dataplane::load(Sizes {
        sources: 1 << 20,
        exact: cfg.exact + 1024,
        prefix: cfg.prefixes + 1024,
        allow: 1024,
        rules: cfg.exact + cfg.prefixes + 2048,
        cache: 1 << 16,
    })
    .context("loading the data plane")?;

    let t = Instant::now();
    // Exact rules: 10.0.0.0 upwards, one address each.
    for i in 0..cfg.exact {
        dp.add_rule(RuleSpec::drop(v4((10 << 24) + i)))?;
    }
    let exact_load = t.elapsed();
    let t = Instant::now();
    // Prefix rules: consecutive /24s from 11.0.0.0.
    for i in 0..cfg.prefixes {
        let net = ipnet_v4((11 << 24) + (i << 8), 24);
        dp.add_rule(RuleSpec::drop(net))?;
    }
    let prefix_load = t.elapsed();
    let last_prefix = (11u32 << 24) + ((cfg.prefixes - 1) << 8);
    // A source in the same /16 as the last blocked /24 but not in any: filter hit, trie miss.
    let near_miss = Ipv4Addr::from(last_prefix + (1 << 8) + 1);

    let mut ttl = RuleSpec::drop("192.0.2.200".parse()?);
    ttl.ttl = Some(Duration::from_secs(3600));
    dp.add_rule(ttl)?;
    let mut scoped = RuleSpec::drop("192.0.2.201".parse()?);
    scoped.scope = Scope {
        dst: Some("203.0.113.10".parse()?),
        port: Some(53),
        ..Scope::default()
    };
    dp.add_rule(scoped)?;
    let mut observe = RuleSpec::drop("192.0.2.202".parse()?);
    observe.action = Action::Observe;
    dp.add_rule(observe)?;
    dp.allow("192.0.2.250".parse()?)?;

    let dst = "203.0.113.10";
    let cases = vec![
        Case::new(
            "floor (XDP_PASS program)",
            frame("192.0.2.1", dst),
            XDP_PASS,
            None,
            false,
        ),
        Case::new(
            "pass: unknown IPv4 source",
            frame("192.0.2.1", dst),
            XDP_PASS,
            Some(2.0),
            false,
        ),
        Case::new(
            "pass: unknown IPv6 source",
            frame("2001:db8::1", "2001:db8:1::1"),
            XDP_PASS,
            Some(2.0),
            false,
        ),
        Case::new(
            "pass: allow-listed source",
            frame("192.0.2.250", dst),
            XDP_PASS,
            None,
            false,
        ),
        Case::new(
            "pass: observe-only rule",
            frame("192.0.2.202", dst),
            XDP_PASS,
            None,
            false,
        ),
        Case::new(
            "drop: exact rule",
            frame("10.0.1.2", dst),
            XDP_DROP,
            Some(1.5),
            false,
        ),
        Case::new(
            "drop: exact rule with TTL",
            frame("192.0.2.200", dst),
            XDP_DROP,
            None,
            false,
        ),
        Case::new(
            "drop: exact rule, scoped",
            frame("192.0.2.201", dst),
            XDP_DROP,
            None,
            false,
        ),
        Case::new(
            "drop: prefix rule",
            frame("11.0.5.5", dst),
            XDP_DROP,
            Some(3.0),
            false,
        ),
        Case::new(
            "cold pass: unknown IPv4",
            frame("192.0.2.1", dst),
            XDP_PASS,
            None,
            true,
        ),
        Case::new(
            "cold pass: filter hit, trie miss",
            frame(&near_miss.to_string(), dst),
            XDP_PASS,
            None,
            true,
        ),
        Case::new(
            "cold drop: exact rule",
            frame("10.0.1.2", dst),
            XDP_DROP,
            None,
            true,
        ),
        Case::new(
            "cold drop: prefix rule",
            frame("11.0.5.5", dst),
            XDP_DROP,
            None,
            true,
        ),
    ];

    println!(
        "swarmwall XDP cost: {} exact rules (loaded in {:.2?}), {} prefixes (loaded in {:.2?}); \
         BPF_PROG_TEST_RUN, {} packets x {} rounds",
        cfg.exact, exact_load, cfg.prefixes, prefix_load, cfg.repeat, cfg.rounds
    );
    println!(
        "hot = the source is in this CPU's source cache (any source sending more than one packet); \
         cold = cache bypassed: every lookup done and the counts flushed to the LRU hash"
    );
    println!(
        "{:<34} {:>8} {:>8} {:>8} {:>8}  verdict",
        "path", "min ns", "med ns", "x floor", "target"
    );
    let mut floor = 0.0;
    let mut missed = Vec::new();
    for (
        i,
        Case {
            name,
            frame: f,
            want,
            target,
            cold,
        },
    ) in cases.iter().enumerate()
    {
        let prog = if i == 0 { Prog::Floor } else { Prog::Main };
        dp.set_cache_bypass(*cold)?;
        let mut samples = Vec::with_capacity(cfg.rounds);
        for _ in 0..cfg.rounds {
            let r = dp.test_run(prog, f, cfg.repeat)?;
            if r.action != *want {
                bail!("{name}: action {} (expected {want})", r.action);
            }
            samples.push(r.per_packet.as_nanos() as f64);
        }
        samples.sort_by(f64::total_cmp);
        // The minimum is the cost without interference from the other work on the machine; the
        // median shows how much that interference was.
        let (min, med) = (samples[0], samples[samples.len() / 2]);
        if i == 0 {
            floor = min;
        }
        let ratio = min / floor;
        let (tgt, verdict) = match target {
            Some(t) if ratio <= *t => (format!("<= {t}x"), "ok"),
            Some(t) => {
                missed.push(*name);
                (format!("<= {t}x"), "MISSED")
            }
            None => (String::new(), ""),
        };
        println!("{name:<34} {min:>8.1} {med:>8.1} {ratio:>8.2} {tgt:>8}  {verdict}");
    }
    dp.set_cache_bypass(false)?;
    if !missed.is_empty() {
        println!("targets missed: {}", missed.join(", "));
    }
    tls_paths(&mut dp, cfg.single_runs)
}

/// The TLS port's paths, one packet per run: a sampled hello changes state (the flow map, the
/// ring), so a repeated run would measure a different path from the second packet on. The
/// floor is measured the same way, since one run's timer overhead is part of every row.
fn tls_paths(dp: &mut Dataplane, runs: usize) -> Result<()> {
    // Budget high enough that no run is skipped for it; the ring is drained after every run.
    dp.set_l7(&[80, 8080], &[443], 10_000_000)?;
    let mut ring = dp.take_l7_reader()?;
    let src: IpAddr = "192.0.2.1".parse()?;
    let dst: IpAddr = "203.0.113.10".parse()?;
    let hello = browser_client_hello("late.shop.example");
    const MSS: usize = 1448;
    let seg = |sport: u16, seq: u32, payload: &[u8]| {
        Frame::tcp(src, dst, sport, 443)
            .tcp_flags(0x18)
            .tcp_seq(seq)
            .payload(payload)
            .build()
    };
    let other_port = Frame::tcp(src, dst, 40000, 22)
        .tcp_flags(0x18)
        .payload(&[0x55; 200])
        .build();
    let mid_record = seg(40000, DEFAULT_SEQ, &[0x17; 200]);
    println!(
        "\nTLS port 443 sampled ({}-byte hello in {MSS}+{} bytes), one packet per run, {runs} runs",
        hello.len(),
        hello.len() - MSS
    );
    println!(
        "{:<34} {:>8} {:>8} {:>8}  events",
        "path", "min ns", "med ns", "x floor"
    );
    let mut floor = 0.0;
    let rows: [(&str, Prog); 5] = [
        ("floor (XDP_PASS program)", Prog::Floor),
        ("tcp data to another port", Prog::Main),
        ("tls port: not a record start", Prog::Main),
        ("tls: hello's first segment", Prog::Main),
        ("tls: its continuation", Prog::Main),
    ];
    for (row, (name, prog)) in rows.into_iter().enumerate() {
        let mut samples = Vec::with_capacity(runs);
        let mut events = 0;
        for i in 0..runs {
            // A new flow per run, so each first segment starts one (the map is an LRU).
            let sport = 1024 + (i % 60_000) as u16;
            let first = || seg(sport, DEFAULT_SEQ, &hello[..MSS]);
            let frame = match row {
                0 | 1 => other_port.clone(),
                2 => mid_record.clone(),
                3 => first(),
                _ => {
                    dp.test_run(Prog::Main, &first(), 1)?;
                    std::iter::from_fn(|| ring.next_event()).for_each(drop);
                    seg(sport, DEFAULT_SEQ + MSS as u32, &hello[MSS..])
                }
            };
            let r = dp.test_run(prog, &frame, 1)?;
            if r.action != XDP_PASS {
                bail!("{name}: action {} (expected pass)", r.action);
            }
            samples.push(r.per_packet.as_nanos() as f64);
            events += std::iter::from_fn(|| ring.next_event()).count();
        }
        samples.sort_by(f64::total_cmp);
        let (min, med) = (samples[0], samples[samples.len() / 2]);
        if row == 0 {
            floor = med;
        }
        // One run's timer is coarse: the median is the figure here, the minimum a bound.
        let per_run = events as f64 / runs as f64;
        println!(
            "{name:<34} {min:>8.1} {med:>8.1} {:>8.2}  {per_run:.1}/run",
            med / floor
        );
    }
    Ok(())
}
/// One measured path.
struct Case {
    name: &'static str,
    frame: Vec<u8>,
    /// Expected XDP action: the bench refuses to report a path that does the wrong thing.
    want: u32,
    /// Target ratio to the floor, if the design states one.
    target: Option<f64>,
    /// Run with the source cache bypassed (every lookup, every flush).
    cold: bool,
}

impl Case {
    fn new(name: &'static str, frame: Vec<u8>, want: u32, target: Option<f64>, cold: bool) -> Self {
        Self {
            name,
            frame,
            want,
            target,
            cold,
        }
    }
}

fn ipnet_v4(addr: u32, len: u8) -> Target {
    Target::Net(ipnet::IpNet::V4(
        ipnet::Ipv4Net::new(Ipv4Addr::from(addr), len).expect("valid prefix length"),
    ))
}

fn nix_is_root() -> bool {
    swarmwall_integration::netns::is_root()
}
