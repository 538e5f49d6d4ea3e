//! `cargo xtask lab`: the whole story on one machine — a small web host under a bot swarm, and
//! swarmwall defending it, over HTTP and then over HTTPS.
//!
//! The lab ([`swarmwall_integration::swarm_lab`]) is three network namespaces: a *server* (a real
//! HTTP server on 198.51.100.1:80, the same site over HTTPS on :443 with an nginx `combined`
//! access log and on :8443 with none, the `swarmwall` daemon with XDP on both its veths, tailing
//! that log), *visitors*
//! (legitimate browsers loading pages with their images, styles and scripts) and *bots* (40
//! made-up addresses in 203.0.113.0/24, each fetching the same two image-heavy pages over and
//! over on fresh connections, and 40 more in 192.0.2.0/24 for the HTTPS acts).
//!
//! Act 1, HTTP: the visitors browse; the swarm starts; the daemon samples the requests in the
//! kernel, detects the swarm and blocks each member, scoped to the attacked site, with a TTL.
//! Act 2, HTTPS: the same over TLS — each bot request a new TLS connection — where the kernel
//! sees only ClientHellos: the daemon finds the pages in the access log, detects the swarm from
//! it and blocks the members scoped to port 443. The HTTPS swarm is a fresh range of addresses
//! because the first act's bots are blocked by then: new attackers show the log path on its
//! own, with no earlier rule helping, and keep the first act's rules on view.
//! Act 3, HTTPS with no log: the same TLS bots (blocked on :443 only) turn to the site's port
//! 8443, which no log covers; the daemon sees nothing but their handshakes — many new
//! connections per source to one SNI, one JA4 — and blocks them scoped to :8443.
//!
//! For each act the lab prints `swarmwall swarms` and `swarmwall swarms show` as an admin would
//! see them, then a summary — requests served, bot requests dropped, time to block, which
//! evidence decided — and checks it: every visitor request served, only bots blocked, bots
//! dropped once blocked, evidence to rules in the kernel under a second, each swarm decided by
//! the act's evidence (`requests`, `log`, `handshakes`), each act's rules scoped to its port.
//! The last line is `lab: OK` or what does not add up.
//!
//! Safety: no namespace has a default route or an uplink, the server does not forward, replies
//! to the bots end in the bots' namespace; traffic is bounded in requests and seconds. Everything
//! is removed on every way out — success, failure, panic, Ctrl-C, SIGTERM, SIGHUP (the lab stops
//! its clients and cleans up). The daemon runs in its own process group with a parent-death
//! signal, so even a `kill -9` of the lab leaves no daemon running; the namespaces such a kill
//! leaves behind are removed by the next lab run.

use std::{
    fs,
    net::IpAddr,
    process::ExitCode,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use ipnet::IpNet;
use serde_json::Value;
use swarmwall_integration::{
    netns::NETNS_DIR,
    swarm_lab::{
        BOT_NET, HANDSHAKE_PORT, HOST, HTTPS_PORT, NEIGHBOUR, NEIGHBOUR_HOST, Plan, SERVER,
        SWARM_PAGES, SwarmLab, TLS_BOT_NET, Tally, VISITOR_NET,
    },
    web::{Failure, Outcome},
};

use crate::cmd::{cargo, probe};

/// Prefix of the lab's namespace names (`swlab-srv-PID-N`, `swlab-vis-…`, `swlab-bot-…`).
pub const NETNS_PREFIX: &str = "swlab-";
/// The roles in the lab's namespace names.
const ROLES: [&str; 3] = ["srv", "vis", "bot"];

/// Options of `cargo xtask lab`.
#[derive(Debug, Clone, clap::Args)]
pub struct LabArgs {
    /// Bots in the swarm.
    #[arg(long, default_value_t = 40, value_parser = clap::value_parser!(u16).range(10..=200))]
    pub bots: u16,
    /// Legitimate visitors.
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u16).range(1..=200))]
    pub visitors: u16,
    /// Requests per second each bot sends.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=50))]
    pub rps: u16,
    /// Seconds the swarm runs in each act (the visitors browse 4 s longer).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(5..=60))]
    pub seconds: u64,
    /// Use the swarmwall binary already built in target/release: skip setup and the build.
    #[arg(long)]
    pub no_build: bool,
    /// The bots load each page with all its assets, as `wget -p` does (fresh connections,
    /// the page as Referer); `--rps` then counts page views.
    #[arg(long)]
    pub bots_load_assets: bool,
}

impl LabArgs {
    fn plan(&self) -> Plan {
        Plan {
            visitors: self.visitors.into(),
            bots: self.bots.into(),
            bots6: 0,
            bot_rps: self.rps.into(),
            bots_load_assets: self.bots_load_assets,
            bots_after: Duration::from_secs(2),
            bots_for: Duration::from_secs(self.seconds),
            browse_for: Duration::from_secs(self.seconds + 4),
        }
    }
}

/// Runs the lab; `lab: OK` and success when the story checks out.
pub fn lab(args: &LabArgs) -> Result<ExitCode> {
    if !crate::setup::is_root() {
        bail!(
            "the lab needs root: it creates network namespaces and veths and runs the daemon \
             (try: sudo -E cargo xtask lab)"
        );
    }
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ] {
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .context("installing the signal handlers")?;
    }
    let result = prepare_and_run(args, &stop);
    // Every guard has dropped by now: daemon, pins, namespaces, veths, web server.
    if stop.load(Ordering::Relaxed) {
        if let Err(err) = &result {
            println!("lab: ({err:#})");
        }
        println!("lab: interrupted; the lab's namespaces and processes are gone");
        return Ok(ExitCode::from(130));
    }
    let problems = result?;
    if problems.is_empty() {
        println!("lab: OK");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("lab: FAILED:");
        for problem in &problems {
            println!("  - {problem}");
        }
        Ok(ExitCode::FAILURE)
    }
}

fn prepare_and_run(args: &LabArgs, stop: &AtomicBool) -> Result<Vec<String>> {
    if !args.no_build {
        crate::build(true)?;
    }
    interrupted(stop)?;
    let binary = target_dir()?.join("release/swarmwall");
    if !binary.is_file() {
        bail!(
            "{} is missing; run without --no-build (or `cargo xtask build --release`)",
            binary.display()
        );
    }
    remove_leftovers();
    run_lab(&binary, &args.plan(), stop)
}

fn interrupted(stop: &AtomicBool) -> Result<()> {
    if stop.load(Ordering::Relaxed) {
        bail!("stopped by a signal");
    }
    Ok(())
}

/// Cargo's target directory (it may be moved by `CARGO_TARGET_DIR` or a config file).
fn target_dir() -> Result<std::path::PathBuf> {
    let out = probe(cargo().args(["metadata", "--format-version", "1", "--no-deps"]))
        .context("`cargo metadata` failed")?;
    let meta: Value = serde_json::from_str(&out).context("parsing `cargo metadata`")?;
    meta["target_directory"]
        .as_str()
        .map(std::path::PathBuf::from)
        .context("`cargo metadata` names no target_directory")
}

/// Deletes lab namespaces whose lab is gone (killed with SIGKILL, say), killing what is inside.
/// A namespace whose creator still runs as `xtask` belongs to another lab and is left alone.
fn remove_leftovers() {
    let Ok(entries) = fs::read_dir(NETNS_DIR) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = lab_netns_pid(&name) else {
            continue;
        };
        let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if comm.trim() == "xtask" {
            continue;
        }
        println!("lab: removing namespace {name}, left behind by an earlier lab (pid {pid})");
        let pids = probe(std::process::Command::new("ip").args(["netns", "pids", &name]));
        for pid in pids.unwrap_or_default().split_whitespace() {
            if let Ok(pid) = pid.parse::<i32>() {
                // SAFETY: kill has no memory-safety preconditions.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        let _ = probe(std::process::Command::new("ip").args(["netns", "delete", &name]));
    }
}

/// The creator's pid in a lab namespace name (`swlab-srv-PID-N`), if it is one.
fn lab_netns_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(NETNS_PREFIX)?;
    let mut parts = rest.split('-');
    let (role, pid, n) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || !ROLES.contains(&role) || n.parse::<u32>().is_err() {
        return None;
    }
    pid.parse().ok()
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("    {l}\n")).collect()
}

/// One act of the lab: the site over one protocol, and the swarm that attacks it there.
#[derive(Clone, Copy, Debug)]
struct Act {
    /// `HTTP`, `HTTPS` or `HTTPS, no log`.
    label: &'static str,
    port: u16,
    /// The swarm's network.
    bot_net: &'static str,
    /// The evidence that must decide the swarm (`swarms --json` `basis`).
    basis: &'static str,
}

const HTTP_ACT: Act = Act {
    label: "HTTP",
    port: 80,
    bot_net: BOT_NET,
    basis: "requests",
};

const HTTPS_ACT: Act = Act {
    label: "HTTPS",
    port: HTTPS_PORT,
    bot_net: TLS_BOT_NET,
    basis: "log",
};

/// The same bots as [`HTTPS_ACT`] — blocked on :443 only — on the port no log covers.
const HANDSHAKE_ACT: Act = Act {
    label: "HTTPS, no log",
    port: HANDSHAKE_PORT,
    bot_net: TLS_BOT_NET,
    basis: "handshakes",
};

impl Act {
    /// The attacked site, as the daemon names it (`swarms --json` `site`).
    fn site(&self) -> String {
        format!("{SERVER}:{}", self.port)
    }

    fn tls(&self) -> bool {
        self.port != 80
    }

    /// The site's address as a visitor types it.
    fn url(&self) -> String {
        match self.port {
            80 => format!("http://{HOST}/"),
            HTTPS_PORT => format!("https://{HOST}/"),
            port => format!("https://{HOST}:{port}/"),
        }
    }

    fn bots<'a>(&self, lab: &'a SwarmLab) -> &'a [IpAddr] {
        if self.tls() {
            &lab.tls_bot_addrs
        } else {
            &lab.bot_addrs
        }
    }

    /// This act's swarm among `swarms` (the `swarms --json` answer): the one attacking its site.
    fn swarm<'a>(&self, swarms: &'a Value) -> Option<&'a Value> {
        let site = self.site();
        swarms["swarms"].as_array()?.iter().find(|s| {
            s["site"] == site.as_str()
                || s["sites"]
                    .as_array()
                    .is_some_and(|all| all.iter().any(|x| x == site.as_str()))
        })
    }
}

fn basis_words(basis: &str) -> &'static str {
    match basis {
        "requests" => "HTTP requests sampled by XDP on the wire",
        "log" => "the web server's access log (the kernel sees only TLS handshakes there)",
        "handshakes" => "TLS ClientHellos alone (no log covers the site)",
        _ => "evidence this lab does not know",
    }
}

fn run_lab(binary: &std::path::Path, plan: &Plan, stop: &AtomicBool) -> Result<Vec<String>> {
    println!("lab: building the lab: server, visitors and bots namespaces…");
    let mut lab = SwarmLab::new(NETNS_PREFIX, binary, plan)?;
    let [if_v, if_b] = lab.server_ifaces();
    println!(
        "lab:   server    netns {:<22} http://{HOST}/ on {SERVER}:80, XDP on {if_v} and {if_b}",
        lab.server.name()
    );
    println!(
        "lab:{:42}https://{HOST}/ on {SERVER}:{HTTPS_PORT} (rustls, a throw-away certificate), \
         access log {}",
        "",
        lab.access_log_path().display()
    );
    println!(
        "lab:{:42}https://{HOST}:{HANDSHAKE_PORT}/ on {SERVER}:{HANDSHAKE_PORT}, no access log",
        ""
    );
    println!(
        "lab:{:42}and a neighbour's site, http://{NEIGHBOUR_HOST}/ on {NEIGHBOUR}:80",
        ""
    );
    println!(
        "lab:   visitors  netns {:<22} {} browsers, {VISITOR_NET}.10 onwards",
        lab.visitors.name(),
        plan.visitors
    );
    println!(
        "lab:   bots      netns {:<22} {} bots, {BOT_NET}.10 onwards, and {} more for the HTTPS \
         acts, {TLS_BOT_NET}.10 onwards (no route out of the lab)",
        lab.bots.name(),
        plan.bots,
        plan.bots
    );
    interrupted(stop)?;
    println!(
        "lab: starting the swarmwall daemon (log: {}), tailing the HTTPS access log…",
        lab.log_path().display()
    );
    lab.start_daemon(&lab.daemon_config())?;
    interrupted(stop)?;

    let mut checks = Vec::new();
    for (n, act) in [HTTP_ACT, HTTPS_ACT, HANDSHAKE_ACT].iter().enumerate() {
        println!(
            "\nlab: act {}, {}: visitors browse {} for {} s; in {} s the swarm starts: \
             {} bots ({}.10 onwards) x {} {} on {}{}",
            n + 1,
            act.label,
            act.url(),
            plan.browse_for.as_secs(),
            plan.bots_after.as_secs(),
            plan.bots,
            act.bot_net,
            plan.bot_rps,
            if plan.bots_load_assets {
                "page views/s, each page with all its assets (wget -p)"
            } else {
                "req/s"
            },
            SWARM_PAGES.join(" and "),
            match act.port {
                80 => "",
                HTTPS_PORT => ", each request on a new TLS connection",
                _ => ", each request on a new TLS connection, to a port no log covers",
            }
        );
        let started = Instant::now();
        let during = || show_the_block(&lab, plan, act, stop);
        let (traffic, shown) = if act.tls() {
            lab.run_https_traffic(plan, act.port, stop, during)?
        } else {
            lab.run_traffic(plan, stop, during)?
        };
        interrupted(stop)?;
        shown?;
        println!(
            "lab: act {} over after {:.1} s",
            n + 1,
            started.elapsed().as_secs_f64()
        );
        let swarms = lab.cli_json(&["swarms"])?;
        let rules = lab.cli_json(&["block", "list"])?;
        let problems = summarize(&lab, plan, act, &traffic, &swarms, &rules);
        checks.extend(problems.into_iter().map(|p| format!("{}: {p}", act.label)));
        checks.extend(
            scope_checks(&lab, act)?
                .into_iter()
                .map(|p| format!("{}: {p}", act.label)),
        );
        interrupted(stop)?;
    }
    Ok(checks)
}

/// Surgical: a blocked bot of `act` still reaches what the act's rules do not cover — the
/// neighbour's site on the same host (HTTP act), the same site's plain-HTTP port (HTTPS acts).
fn scope_checks(lab: &SwarmLab, act: &Act) -> Result<Vec<String>> {
    let mut checks = Vec::new();
    let Some(bot) = act.bots(lab).first().copied() else {
        return Ok(checks);
    };
    let show = |o: &Outcome| match o.result {
        Ok(code) => format!("HTTP {code}"),
        Err(e) => e.to_string(),
    };
    if act.tls() {
        let this = lab.probe_https(bot, act.port, "/")?;
        let other = lab.probe(bot, SERVER, HOST, "/")?;
        println!(
            "  scope     bot {bot} now: {} → {}; http://{HOST}/ (port 80, not attacked from \
             it) → {}\n",
            act.url(),
            show(&this),
            show(&other)
        );
        if other.result != Ok(200) {
            checks.push(format!("port 80 was blocked for {bot} too"));
        }
        if this.result != Err(Failure::ConnectTimeout) {
            checks.push(format!("{bot} still reaches {} after the block", act.url()));
        }
    } else {
        let other = lab.probe(bot, NEIGHBOUR, NEIGHBOUR_HOST, "/")?;
        let this = lab.probe(bot, SERVER, HOST, "/")?;
        println!(
            "  scope     bot {bot} now: http://{HOST}/ → {}; the neighbour's http://{NEIGHBOUR_HOST}/ → {}\n",
            show(&this),
            show(&other)
        );
        if other.result != Ok(200) {
            checks.push(format!("the neighbour's site was blocked for {bot} too"));
        }
        if this.result != Err(Failure::ConnectTimeout) {
            checks.push(format!("{bot} still reaches {HOST} after the block"));
        }
    }
    Ok(checks)
}

/// While the traffic runs: waits for the act's swarm to be blocked and shows it as an admin
/// would see it.
fn show_the_block(lab: &SwarmLab, plan: &Plan, act: &Act, stop: &AtomicBool) -> Result<()> {
    let deadline = Instant::now() + plan.bots_after + plan.bots_for;
    let started = Instant::now();
    while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
        let v = lab.cli_json(&["swarms"])?;
        let Some(swarm) = act.swarm(&v).filter(|s| s["state"] == "blocked") else {
            std::thread::sleep(Duration::from_millis(200));
            continue;
        };
        // Let the tail of the swarm join, then show.
        std::thread::sleep(Duration::from_millis(600));
        println!(
            "\nlab: t+{:.1} s  $ swarmwall swarms",
            started.elapsed().as_secs_f64()
        );
        print!("{}", indent(&lab.cli_ok(&["swarms"])?));
        let id = swarm["id"].as_u64().unwrap_or(1).to_string();
        println!("\nlab: $ swarmwall swarms show {id}");
        print!("{}", indent(&lab.cli_ok(&["swarms", "show", &id])?));
        // The act's own rules: its bots may carry an earlier act's, scoped to another port.
        let net = format!("{}.0/24", act.bot_net);
        let port = format!("tcp/{}", act.port);
        println!("\nlab: $ swarmwall block list --target {net} | grep -e ^ID -e {port} | head -4");
        let list = lab.cli_ok(&["block", "list", "--target", &net])?;
        let rows: Vec<&str> = list
            .lines()
            .filter(|l| l.trim_start().starts_with("ID") || l.contains(&port))
            .take(4)
            .collect();
        print!("{}", indent(&rows.join("\n")));
        println!("\nlab: the swarm keeps trying; visitors keep browsing…");
        return Ok(());
    }
    println!(
        "lab: no {} swarm was blocked while the swarm ran",
        act.label
    );
    Ok(())
}

fn percent(part: u64, whole: u64) -> String {
    if whole == 0 {
        "-".into()
    } else {
        format!("{:.1}%", part as f64 * 100.0 / whole as f64)
    }
}

/// Prints the act's summary; returns what does not add up.
fn summarize(
    lab: &SwarmLab,
    plan: &Plan,
    act: &Act,
    traffic: &swarmwall_integration::swarm_lab::Traffic,
    swarms: &Value,
    rules: &Value,
) -> Vec<String> {
    let mut problems = Vec::new();
    let visitors = Tally::of(&traffic.visitors, None);
    let bots = Tally::of(&traffic.bots, None);
    let empty = Vec::new();
    let bot_set: std::collections::BTreeSet<String> =
        act.bots(lab).iter().map(|a| a.to_string()).collect();
    println!("\nsummary, {} ({})", act.label, act.url());
    println!(
        "  visitors  {} requests, {} served ({}), {} failed",
        visitors.requests,
        visitors.ok,
        percent(visitors.ok, visitors.requests),
        visitors.failed + visitors.dropped
    );
    println!(
        "  bots      {} requests: {} served before the block, {} dropped by XDP ({}), {} other failures",
        bots.requests,
        bots.ok,
        bots.dropped,
        percent(bots.dropped, bots.requests),
        bots.failed
    );
    if visitors.requests == 0 {
        problems.push("the visitors made no requests".into());
    }
    if visitors.ok != visitors.requests {
        problems.push(format!(
            "{} of {} visitor requests were not served",
            visitors.requests - visitors.ok,
            visitors.requests
        ));
    }
    let Some(s) = act.swarm(swarms) else {
        problems.push(format!("no swarm was detected on {}", act.site()));
        return problems;
    };
    let members: Vec<String> = s["members"]
        .as_array()
        .unwrap_or(&empty)
        .iter()
        .filter_map(|m| m.as_str().map(String::from))
        .collect();
    let innocent: Vec<&String> = members.iter().filter(|m| !bot_set.contains(*m)).collect();
    println!(
        "  swarm {}   {} members: {} of {} bots, {} others; state {}; {} packets dropped by its rules",
        s["id"],
        members.len(),
        members.len() - innocent.len(),
        plan.bots,
        innocent.len(),
        s["state"].as_str().unwrap_or("?"),
        s["dropped"]
    );
    let basis = s["basis"].as_str().unwrap_or("-");
    println!(
        "  evidence  decided by {} (basis {basis:?})",
        basis_words(basis)
    );
    if basis != act.basis {
        problems.push(format!(
            "the swarm was decided by {basis:?}, not by {:?}",
            act.basis
        ));
    }
    let (line, rule_problems) = check_rules(act, &members, rules, &lab.visitor_addrs);
    println!("  rules     {line}");
    let ttb = s["time_to_block_ms"].as_u64();
    let otb = s["onset_to_block_ms"].as_u64();
    let client = match (traffic.bots_started, traffic.first_bot_drop()) {
        (Some(a), Some(b)) => format!("{:.1} s", b.saturating_duration_since(a).as_secs_f64()),
        _ => "-".into(),
    };
    println!(
        "  time      evidence → rules in the kernel {}; swarm onset → blocked {}; first bot request → first bot dropped {client}",
        ttb.map_or("-".into(), |ms| format!("{ms} ms")),
        otb.map_or("-".into(), |ms| format!("{:.1} s", ms as f64 / 1000.0)),
    );
    if let Some(late) = traffic.bots_after_block(Duration::from_millis(1500)) {
        println!(
            "  after     from 1.5 s after the first drop on: {} bot requests, {} served",
            late.requests, late.ok
        );
        if late.ok * 50 > late.requests {
            problems.push(format!(
                "bots were still served after the block: {} of {}",
                late.ok, late.requests
            ));
        }
    } else {
        problems.push("no bot request was ever dropped".into());
    }
    if !innocent.is_empty() {
        problems.push(format!("non-bots in the swarm: {innocent:?}"));
    }
    if members.len() * 100 < plan.bots * 95 {
        problems.push(format!(
            "only {} of {} bots detected",
            members.len(),
            plan.bots
        ));
    }
    problems.extend(rule_problems);
    match ttb {
        Some(ms) if ms < 1000 => {}
        Some(ms) => problems.push(format!("{ms} ms from evidence to rules (bound: 1 s)")),
        None => problems.push("the swarm was never blocked".into()),
    }
    problems
}

/// The act's rules (those scoped to its port, from `block list --json`) against its swarm's
/// `members`: the summary's line and what does not add up. A rule is one member, or a prefix
/// when the daemon collapsed a cohort (every source it saw in the prefix a member); either way
/// every member must be covered, no rule may cover an `innocent`, and each must be scoped to
/// the attacked site with a TTL.
fn check_rules(
    act: &Act,
    members: &[String],
    rules: &Value,
    innocent: &[IpAddr],
) -> (String, Vec<String>) {
    let mut problems = Vec::new();
    let targets: Vec<(&str, Option<IpNet>, bool)> = rules
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter(|r| r["scope"]["port"] == act.port)
        .map(|r| {
            let target = r["target"].as_str().unwrap_or("?");
            let net = target
                .parse::<IpNet>()
                .ok()
                .or_else(|| target.parse::<IpAddr>().ok().map(IpNet::from));
            let scoped = r["scope"]["dst"] == SERVER && r["expires_at"].is_string();
            (target, net, scoped)
        })
        .collect();
    let prefixes: Vec<&str> = targets
        .iter()
        .filter(|(_, net, _)| net.is_some_and(|n| n.prefix_len() < n.max_prefix_len()))
        .map(|(t, _, _)| *t)
        .collect();
    let covered = |a: &IpAddr| {
        targets
            .iter()
            .any(|(_, net, _)| net.is_some_and(|n| n.contains(a)))
    };
    let member_addrs: Vec<IpAddr> = members.iter().filter_map(|m| m.parse().ok()).collect();
    let n_covered = member_addrs.iter().filter(|a| covered(a)).count();
    let scoped = targets.iter().all(|(_, _, scoped)| *scoped);
    let singles = targets.len() - prefixes.len();
    let shape = match (singles, prefixes.len()) {
        (_, 0) => "each one bot".to_owned(),
        (0, _) => format!(
            "{} (a whole cohort: every source seen in it is a member)",
            prefixes.join(", ")
        ),
        _ => format!(
            "{singles} single bots and {} (cohorts: every source seen in them is a member)",
            prefixes.join(", ")
        ),
    };
    let line = format!(
        "{}, {shape}, covering {n_covered} of {} members, scoped to {SERVER}:{}/tcp, with a TTL: {}",
        targets.len(),
        members.len(),
        act.port,
        if scoped { "yes" } else { "NO" }
    );
    if !scoped {
        problems.push(format!("rules not scoped to {} with a TTL", act.site()));
    }
    if n_covered != members.len() || member_addrs.len() != members.len() {
        problems.push(format!(
            "{} rules cover {n_covered} of {} members",
            targets.len(),
            members.len()
        ));
    }
    if targets.len() > members.len() {
        problems.push(format!(
            "{} rules for {} members",
            targets.len(),
            members.len()
        ));
    }
    let hit: Vec<String> = innocent
        .iter()
        .filter(|a| covered(a))
        .map(ToString::to_string)
        .collect();
    if !hit.is_empty() {
        problems.push(format!("rules on {} cover visitors: {hit:?}", act.site()));
    }
    (line, problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_only_lab_namespace_names() {
        assert_eq!(lab_netns_pid("swlab-srv-1234-0"), Some(1234));
        assert_eq!(lab_netns_pid("swlab-bot-99-17"), Some(99));
        assert_eq!(lab_netns_pid("swlab-vis-99-2"), Some(99));
        assert_eq!(lab_netns_pid("swlab-xyz-99-17"), None);
        assert_eq!(lab_netns_pid("swlab-srv-99"), None);
        assert_eq!(lab_netns_pid("swlab-srv-99-1-2"), None);
        assert_eq!(lab_netns_pid("swls-99-1"), None);
    }

    fn rule(target: &str, port: u16) -> Value {
        serde_json::json!({
            "target": target,
            "scope": { "dst": SERVER, "proto": "tcp", "port": port },
            "expires_at": "2026-12-02T02:20:00Z",
        })
    }

    /// What the first lab run with a TLS swarm showed: the daemon blocked the 40 members of
    /// 192.0.2.0/24 with one /24 rule, as its cohort escalation does when every source it saw in
    /// the prefix is a member — one rule, every member covered.
    #[test]
    fn rules_may_be_one_per_member_or_a_cohorts_prefix() {
        let members: Vec<String> = (10..50).map(|i| format!("192.0.2.{i}")).collect();
        let visitors: Vec<IpAddr> = vec!["198.51.100.10".parse().unwrap()];
        let singles: Vec<Value> = members.iter().map(|m| rule(m, 443)).collect();
        let (line, problems) = check_rules(
            &HTTPS_ACT,
            &members,
            &Value::from(singles.clone()),
            &visitors,
        );
        assert!(problems.is_empty(), "{problems:?}");
        assert!(
            line.starts_with("40, each one bot, covering 40 of 40"),
            "{line}"
        );

        // One /24 for all, beside an earlier act's rules on another port.
        let rules = Value::from(vec![rule("192.0.2.0/24", 443), rule("203.0.113.10", 80)]);
        let (line, problems) = check_rules(&HTTPS_ACT, &members, &rules, &visitors);
        assert!(problems.is_empty(), "{problems:?}");
        assert!(line.contains("192.0.2.0/24"), "{line}");
        assert!(line.contains("covering 40 of 40 members"), "{line}");
        let (_, problems) = check_rules(&HANDSHAKE_ACT, &members, &rules, &visitors);
        assert_eq!(
            problems.len(),
            1,
            "no rule on 8443 covers them: {problems:?}"
        );

        // A prefix that takes a visitor with it, a member left out, a rule without a TTL.
        let wide = Value::from(vec![rule("198.51.100.0/24", 443)]);
        let (_, problems) = check_rules(&HTTPS_ACT, &["198.51.100.20".into()], &wide, &visitors);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("198.51.100.10"), "{problems:?}");
        let (_, problems) = check_rules(
            &HTTPS_ACT,
            &members,
            &Value::from(singles[1..].to_vec()),
            &visitors,
        );
        assert!(problems[0].contains("cover 39 of 40"), "{problems:?}");
        let mut forever = rule("192.0.2.0/24", 443);
        forever["expires_at"] = Value::Null;
        let (line, problems) =
            check_rules(&HTTPS_ACT, &members, &Value::from(vec![forever]), &visitors);
        assert!(line.ends_with("with a TTL: NO"), "{line}");
        assert_eq!(problems.len(), 1, "{problems:?}");
    }

    #[test]
    fn plan_follows_the_options() {
        let args = LabArgs {
            bots: 20,
            visitors: 3,
            rps: 5,
            seconds: 8,
            no_build: true,
            bots_load_assets: true,
        };
        let p = args.plan();
        assert_eq!((p.bots, p.visitors, p.bot_rps), (20, 3, 5.0));
        assert!(p.bots_load_assets);
        assert_eq!(p.browse_for, p.bots_for + Duration::from_secs(4));
        for act in [HTTP_ACT, HTTPS_ACT, HANDSHAKE_ACT] {
            assert_eq!(act.tls(), act.port != 80, "{act:?}");
        }
        assert_eq!(HTTPS_ACT.url(), "https://shop.example/");
        assert_eq!(HANDSHAKE_ACT.url(), "https://shop.example:8443/");
        assert_eq!(HANDSHAKE_ACT.site(), "198.51.100.1:8443");
    }
}
