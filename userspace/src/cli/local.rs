//! The local commands: `check` and `run` drive the data plane in this process, without a
//! daemon (a foreground test run; the daemon is the long-running form).

use std::{
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use clap::ValueEnum;
use swarmwall::{
    Action, AttachMode, Dataplane, Mode, Proto, RuleSpec, Scope, Sizes, Target,
    dataplane::{RuleInfo, SourceStats, monotonic_ns},
};
use swarmwall_maps::Stat;

#[derive(clap::Args)]
pub struct RunArgs {
    /// Interface to attach to (repeat for several).
    #[arg(short, long = "iface", required = true, value_name = "IFACE")]
    ifaces: Vec<String>,
    /// Attach mode: auto tries native (driver) XDP and falls back to generic.
    #[arg(long, value_enum, default_value_t = AttachArg::Auto)]
    attach: AttachArg,
    /// Source address or prefix to block (repeatable), e.g. 192.0.2.7 or 198.51.100.0/24.
    #[arg(long, value_name = "ADDR|PREFIX")]
    block: Vec<Target>,
    /// Source address or prefix that is never blocked (repeatable); wins over every rule.
    #[arg(long, value_name = "ADDR|PREFIX")]
    allow: Vec<Target>,
    /// Scope the --block rules to traffic to this destination address (one site of many).
    #[arg(long, value_name = "ADDR")]
    dst: Option<std::net::IpAddr>,
    /// Scope the --block rules to this destination port.
    #[arg(long)]
    port: Option<u16>,
    /// Scope the --block rules to this protocol (tcp, udp, icmp, icmpv6).
    #[arg(long)]
    proto: Option<Proto>,
    /// Expire the --block rules after this long (e.g. 90s, 10m); enforced in the kernel.
    #[arg(long, value_parser = humantime::parse_duration)]
    ttl: Option<Duration>,
    /// Add --block rules even if they overlap the allow list (which still wins in the kernel).
    #[arg(long)]
    force: bool,
    /// Observe mode: rules count what they would drop but pass everything.
    #[arg(long)]
    observe: bool,
    /// Stop after this long (e.g. 10s); default: until Ctrl-C.
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// Print the counters every this often while running (text output only).
    #[arg(long, value_parser = humantime::parse_duration)]
    interval: Option<Duration>,
    /// Show at most this many sources, busiest first.
    #[arg(long, default_value_t = 20)]
    top: usize,
    /// Tracked-source capacity (LRU: the least recently seen are evicted).
    #[arg(long, default_value_t = swarmwall_maps::defaults::SOURCES)]
    max_sources: u32,
    /// Print one JSON object at exit instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum AttachArg {
    Auto,
    Driver,
    Generic,
}

pub fn check(json: bool) -> Result<()> {
    let sizes = Sizes::default();
    let _dp = Dataplane::load(sizes)?;
    let abi = swarmwall_maps::ABI_VERSION;
    if json {
        println!(
            "{}",
            serde_json::json!({
                "loaded": true, "abi": abi,
                "capacity": {"sources": sizes.sources, "exact": sizes.exact,
                    "prefix": sizes.prefix, "allow": sizes.allow, "rules": sizes.rules},
            })
        );
    } else {
        println!("ok: the XDP program loads and verifies on this kernel (ABI {abi})");
        println!(
            "capacity: {} sources, {} exact keys, {} prefixes, {} allow prefixes, {} rules",
            sizes.sources, sizes.exact, sizes.prefix, sizes.allow, sizes.rules
        );
    }
    Ok(())
}

/// `swarmwall down`: detaches and removes the pinned data plane, unless a daemon owns it. The
/// pin directory's lock decides, whatever socket the daemon serves; the socket check before it
/// only gives the usual case a clearer message.
pub fn down(
    pin_dir: &Path,
    socket: &Path,
    firewall: Option<&swarmwall::firewall::NftConfig>,
) -> Result<()> {
    if std::os::unix::net::UnixStream::connect(socket).is_ok() {
        anyhow::bail!(
            "a daemon is still serving {}; stop it first (its pins would be recreated)",
            socket.display()
        );
    }
    let removed = swarmwall::dataplane::pins::remove_unowned(pin_dir)?;
    if removed.is_empty() {
        println!("nothing pinned under {}", pin_dir.display());
    } else {
        println!(
            "detached and removed {} pins under {}",
            removed.len(),
            pin_dir.display()
        );
    }
    if let Some(fw) = firewall {
        let table = format!("inet {}", fw.table);
        if swarmwall::firewall::nft::remove_table(fw).context("removing the firewall table")? {
            println!("removed the nftables table {table}");
        } else {
            println!("no nftables table {table}");
        }
    }
    Ok(())
}

pub fn run(a: RunArgs) -> Result<()> {
    let mut dp = Dataplane::load(Sizes {
        sources: a.max_sources,
        ..Sizes::default()
    })?;
    let scope = Scope {
        dst: a.dst,
        proto: a.proto,
        port: a.port,
    };
    for t in &a.allow {
        dp.allow(*t).with_context(|| format!("allow {t}"))?;
    }
    for t in &a.block {
        if dp.covers_allowed(t) && !a.force {
            return Err(swarmwall::RuleError::CoversAllowed { target: *t })
                .context("refusing (use --force to add it anyway; the allow list still wins)");
        }
        dp.add_rule(RuleSpec {
            target: *t,
            action: Action::Drop,
            scope,
            ttl: a.ttl,
        })
        .with_context(|| format!("block {t}"))?;
    }
    if a.observe {
        dp.set_mode(Mode::Observe)?;
    }
    let mode = match a.attach {
        AttachArg::Auto => AttachMode::Auto,
        AttachArg::Driver => AttachMode::Driver,
        AttachArg::Generic => AttachMode::Generic,
    };
    for iface in &a.ifaces {
        let m = dp.attach(iface, mode)?;
        eprintln!("swarmwall: attached to {iface} ({m:?} mode)");
    }

    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop)).context("installing signal handler")?;
    }
    let start = Instant::now();
    let mut last_print = Instant::now();
    let mut last_sweep = Instant::now();
    while !stop.load(Ordering::Relaxed) && a.duration.is_none_or(|d| start.elapsed() < d) {
        std::thread::sleep(Duration::from_millis(50));
        if let Some(i) = a.interval
            && !a.json
            && last_print.elapsed() >= i
        {
            print_text(&dp, a.top)?;
            last_print = Instant::now();
        }
        // The kernel already ignores expired rules; this only frees their slots, so once a
        // second is plenty (it scans every rule).
        if last_sweep.elapsed() >= Duration::from_secs(1) {
            dp.remove_expired()?;
            last_sweep = Instant::now();
        }
    }
    // Read before detaching: the report describes the run that just ended.
    if a.json {
        print_json(&dp, a.top)?;
    } else {
        print_text(&dp, a.top)?;
    }
    dp.detach_all()?;
    eprintln!("swarmwall: detached");
    Ok(())
}

fn top_sources(dp: &Dataplane, n: usize) -> Result<Vec<SourceStats>> {
    let mut s = dp.sources()?;
    s.sort_by(|a, b| b.packets.cmp(&a.packets).then(a.addr.cmp(&b.addr)));
    s.truncate(n);
    Ok(s)
}

fn ago(ns: u64, now: u64) -> String {
    if ns == 0 {
        return "-".into();
    }
    format!("{:.1}s", now.saturating_sub(ns) as f64 / 1e9)
}

fn print_text(dp: &Dataplane, n: usize) -> Result<()> {
    let now = monotonic_ns();
    println!(
        "{:<40} {:>10} {:>12} {:>10} {:>9}",
        "SOURCE", "PACKETS", "BYTES", "DROPPED", "LAST"
    );
    for s in top_sources(dp, n)? {
        let addr = s.addr.map_or("-".into(), |a| a.to_string());
        println!(
            "{:<40} {:>10} {:>12} {:>10} {:>9}",
            addr,
            s.packets,
            s.bytes,
            s.dropped,
            ago(s.last_seen_ns, now)
        );
    }
    let rules = dp.rules()?;
    if !rules.is_empty() {
        println!();
        println!(
            "{:<6} {:<28} {:<8} {:<24} {:>10} {:>10}",
            "RULE", "TARGET", "ACTION", "SCOPE", "HITS", "DROPPED"
        );
        for RuleInfo { id, entry, hits } in rules {
            println!(
                "{:<6} {:<28} {:<8} {:<24} {:>10} {:>10}",
                id,
                entry.spec.target,
                entry.spec.action,
                entry.spec.scope,
                hits.packets,
                hits.dropped_packets
            );
        }
    }
    let stats = dp.stats()?;
    let line: Vec<String> = Stat::ALL
        .iter()
        .map(|s| format!("{}={}", s.name(), stats.counters[*s as usize]))
        .collect();
    println!("\n{}\n", line.join(" "));
    Ok(())
}

fn print_json(dp: &Dataplane, n: usize) -> Result<()> {
    let sources: Vec<_> = top_sources(dp, n)?
        .into_iter()
        .map(|s| {
            serde_json::json!({
                "addr": s.addr.map(|a| a.to_string()), "packets": s.packets, "bytes": s.bytes,
                "dropped": s.dropped, "first_seen_ns": s.first_seen_ns, "last_seen_ns": s.last_seen_ns,
            })
        })
        .collect();
    let rules: Vec<_> = dp
        .rules()?
        .into_iter()
        .map(|r| {
            serde_json::json!({
                "id": r.id, "target": r.entry.spec.target.to_string(),
                "action": r.entry.spec.action.to_string(),
                "scope": {
                    "dst": r.entry.spec.scope.dst.map(|d| d.to_string()),
                    "proto": r.entry.spec.scope.proto.map(|p| p.to_string()),
                    "port": r.entry.spec.scope.port,
                },
                "expires_ns": r.entry.expires_ns,
                "hits": r.hits.packets, "hit_bytes": r.hits.bytes,
                "dropped": r.hits.dropped_packets, "dropped_bytes": r.hits.dropped_bytes,
            })
        })
        .collect();
    let stats = dp.stats()?;
    let stats: serde_json::Map<String, serde_json::Value> = Stat::ALL
        .iter()
        .map(|s| (s.name().to_string(), stats.counters[*s as usize].into()))
        .collect();
    let mode = match dp.mode()? {
        Mode::Enforce => "enforce",
        Mode::Observe => "observe",
    };
    println!(
        "{}",
        serde_json::json!({"mode": mode, "sources": sources, "rules": rules, "stats": stats})
    );
    Ok(())
}
