//! The nftables mirror: how long mirroring a whole rule store takes, and how long one change
//! takes to reach the firewall, next to the floor of the same work done by `nft` alone (one
//! script with the same elements, written by hand), in one run, in a namespace of its own.
//!
//! Targets (issue 11): 100k rules mirrored in < 2 s; one change in < 50 ms. For scale: a
//! CrowdSec firewall bouncer user reported about 40 decisions/s.
//!
//! Needs root and nft. `SWARMWALL_BENCH_QUICK=1` uses 10k rules and fewer changes.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    io::Write as _,
    process::{Command, Stdio},
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context as _, Result, bail};
use hdrhistogram::Histogram;
use swarmwall::{
    Action, Mode, Proto, Scope,
    backend::{Context, Desired, RuleBackend as _},
    firewall::{NftConfig, Nftables},
    store::{Op, RuleRecord},
};
use swarmwall_integration::netns::{NetNs, in_netns, is_root};

/// Rule `i`: a distinct source in 10.0.0.0/8; every other one scoped to a site (dst, TCP, 443).
fn rule(i: u32, now: SystemTime) -> RuleRecord {
    let scope = if i.is_multiple_of(2) {
        Scope {
            dst: Some("203.0.113.10".parse().expect("literal")),
            proto: Some(Proto::Tcp),
            port: Some(443),
        }
    } else {
        Scope::default()
    };
    RuleRecord {
        id: u64::from(i) + 1,
        target: swarmwall::addr::Target::Addr(std::net::IpAddr::from(
            (0x0a00_0000 | i).to_be_bytes(),
        )),
        action: Action::Drop,
        scope,
        expires_at: Some(now + Duration::from_secs(3600)),
        created_at: now,
        actor: "bench".into(),
        reason: None,
    }
}

/// `nft -f -` of `script`: the floor of any nftables mirror.
fn nft(script: &str) -> Result<()> {
    let mut c = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running nft")?;
    c.stdin
        .take()
        .expect("piped")
        .write_all(script.as_bytes())?;
    let out = c.wait_with_output()?;
    if !out.status.success() {
        bail!("nft: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// The same elements as swarmwall writes them, in two sets, by hand.
fn floor_script(rules: &BTreeMap<u64, RuleRecord>) -> String {
    let mut s = String::from(
        "add table inet floor\n\
         add set inet floor a { type ipv4_addr; flags timeout; counter; }\n\
         add set inet floor b { type ipv4_addr . ipv4_addr . inet_proto . inet_service; \
         flags timeout; counter; }\n",
    );
    for r in rules.values() {
        if r.scope.dst.is_some() {
            let _ = writeln!(
                s,
                "add element inet floor b {{ {} . 203.0.113.10 . 6 . 443 timeout 3600s }}",
                r.target
            );
        } else {
            let _ = writeln!(
                s,
                "add element inet floor a {{ {} timeout 3600s }}",
                r.target
            );
        }
    }
    s
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() -> Result<()> {
    if !is_root() {
        eprintln!("skipping: the firewall benchmark needs root (a namespace, nftables)");
        return Ok(());
    }
    let quick = std::env::var("SWARMWALL_BENCH_QUICK").is_ok_and(|v| v == "1");
    let (n, changes) = if quick { (10_000, 50) } else { (100_000, 200) };
    let ns = NetNs::new("swl-bench-fw")?;
    in_netns(&ns, || run(n, changes))?
}

fn run(n: u32, changes: u32) -> Result<()> {
    let now = SystemTime::now();
    let rules: BTreeMap<u64, RuleRecord> =
        (0..n).map(|i| (u64::from(i) + 1, rule(i, now))).collect();
    let want = Desired {
        rules: &rules,
        allow: Vec::new(),
        mode: Mode::Enforce,
        now,
    };
    println!("nftables mirror, {n} rules (half scoped to a site), {changes} single changes");
    println!(
        "{:<52} {:>12} {:>12} {:>10}",
        "step", "swarmwall", "nft alone", "ratio"
    );

    let t = Instant::now();
    nft(&floor_script(&rules))?;
    let floor_bulk = t.elapsed();
    let mut fw = Nftables::new(NftConfig::default());
    let t = Instant::now();
    let done = fw.reconcile(&want)?;
    let bulk = t.elapsed();
    assert_eq!(done.added, n as usize);
    println!(
        "{:<52} {:>9.0} ms {:>9.0} ms {:>10.2}",
        format!("mirror {n} rules into an empty table (target < 2 s)"),
        ms(bulk),
        ms(floor_bulk),
        bulk.as_secs_f64() / floor_bulk.as_secs_f64()
    );
    let t = Instant::now();
    let again = fw.reconcile(&want)?;
    let check = t.elapsed();
    assert_eq!(fw.drift(), 0, "{again:?}");
    let t = Instant::now();
    let listed = Command::new("nft")
        .args(["-j", "list", "table", "inet", "floor"])
        .output()?;
    let floor_list = t.elapsed();
    assert!(listed.status.success());
    println!(
        "{:<52} {:>9.0} ms {:>9.0} ms {:>10.2}",
        "reconcile, nothing to change (list + diff)",
        ms(check),
        ms(floor_list),
        check.as_secs_f64() / floor_list.as_secs_f64()
    );

    // One change at a time, as a swarm push or `block add` commits it.
    let mut ours = Histogram::<u64>::new(3)?;
    let mut alone = Histogram::<u64>::new(3)?;
    let ctx = Context {
        config_allow: &[],
        now,
    };
    for k in 0..changes {
        let r = rule(n + k, now);
        let t = Instant::now();
        fw.apply(&[Op::AddRule(r.clone())], &ctx)?;
        ours.record(t.elapsed().as_micros() as u64)?;
        let t = Instant::now();
        nft(&format!(
            "add element inet floor a {{ {} timeout 3600s }}\n",
            r.target
        ))?;
        alone.record(t.elapsed().as_micros() as u64)?;
    }
    for (q, name) in [(0.5, "p50"), (0.99, "p99"), (1.0, "max")] {
        let (a, b) = (ours.value_at_quantile(q), alone.value_at_quantile(q));
        println!(
            "{:<52} {:>9.1} ms {:>9.1} ms {:>10.2}",
            format!("one change reaches the firewall, {name} (target < 50 ms)"),
            a as f64 / 1000.0,
            b as f64 / 1000.0,
            a as f64 / b as f64
        );
    }
    Ok(())
}
