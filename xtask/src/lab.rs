//! `cargo xtask lab`: swarmwall blocking real traffic in a throw-away lab of network namespaces.
//!
//! The lab is two namespaces joined by a veth pair: a *server* side (198.51.100.1/24, a UDP
//! sink counting datagrams per source) and a *clients* side (198.51.100.2 plus five source
//! addresses, .10–.14). It runs the real `swarmwall` binary on the server end of the veth with
//! `--block 198.51.100.13 --block 198.51.100.14 --json`, sends a paced, bounded burst of UDP from
//! every source, stops swarmwall with SIGINT and checks its per-source counters against what was
//! sent and what the sink received: blocked sources 100% dropped by XDP, the others 100%
//! delivered.
//!
//! Safety: the addresses are from a documentation range and live only inside the two
//! namespaces, which have no default route and no uplink; the burst is bounded in datagrams and
//! seconds. Everything is removed on every way out — success, failure, panic, Ctrl-C (handled:
//! the lab stops sending and cleans up), SIGTERM and SIGHUP. swarmwall runs in its own process
//! group with a parent-death signal and a `--duration` bound, so even a `kill -9` of the lab
//! leaves no swarmwall running; the namespaces such a kill leaves behind are removed by the next
//! lab run.

use std::{
    collections::HashMap,
    fs,
    io::{BufRead as _, BufReader, Read as _},
    net::{IpAddr, SocketAddr},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{ChildStderr, ExitCode, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow, bail};
use serde_json::Value;
use swarmwall_integration::{
    netns::{ChildGuard, NETNS_DIR, NetNs, VethPair, add_addr},
    traffic::{Flow, UdpSink, send_udp},
};

use crate::cmd::{cargo, probe};

/// The server's address; the sink listens on it.
pub const SERVER: &str = "198.51.100.1";
/// The clients' own address on the veth (it sends nothing).
pub const CLIENT: &str = "198.51.100.2";
/// The sources that send, all on the clients' end of the veth.
pub const SOURCES: [&str; 5] = [
    "198.51.100.10",
    "198.51.100.11",
    "198.51.100.12",
    "198.51.100.13",
    "198.51.100.14",
];
/// The sources swarmwall is told to block.
pub const BLOCKED: [&str; 2] = ["198.51.100.13", "198.51.100.14"];
/// The sink's UDP port.
pub const SINK_PORT: u16 = 9000;
/// Prefix of the lab's namespace names (`swlab-srv-PID-N`, `swlab-cli-PID-N`).
pub const NETNS_PREFIX: &str = "swlab-";

/// How long swarmwall may take to load and attach (loading verifies the program: 1–3 s here).
const ATTACH_TIMEOUT: Duration = Duration::from_secs(30);
/// How long swarmwall may take to print its report and detach after SIGINT.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// The sink stops once nothing has arrived for this long after the burst.
const SINK_QUIET: Duration = Duration::from_millis(300);

/// Options of `cargo xtask lab`.
#[derive(Debug, Clone, clap::Args)]
pub struct LabArgs {
    /// Datagrams each source sends.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub datagrams: u32,
    /// Seconds to spread the burst over.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=30))]
    pub seconds: u64,
    /// Use the swarmwall binary already built in target/release: skip setup and the build.
    #[arg(long)]
    pub no_build: bool,
}

/// Runs the lab; `lab: OK` and success when the numbers add up.
pub fn lab(args: &LabArgs) -> Result<ExitCode> {
    if !crate::setup::is_root() {
        bail!(
            "the lab needs root: it creates network namespaces and a veth pair and attaches XDP \
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
    // Every guard has dropped by now: namespaces, veth, swarmwall, sink thread.
    if stop.load(Ordering::Relaxed) {
        if let Err(err) = &result {
            println!("lab: ({err:#})");
        }
        println!("lab: interrupted; the lab's namespaces and processes are gone");
        return Ok(ExitCode::from(130));
    }
    let outcome = result?;
    if outcome.problems.is_empty() {
        println!("lab: OK");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("lab: FAILED: the numbers don't add up:");
        for problem in &outcome.problems {
            println!("  - {problem}");
        }
        Ok(ExitCode::FAILURE)
    }
}

fn prepare_and_run(args: &LabArgs, stop: &AtomicBool) -> Result<Outcome> {
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
    run_lab(&binary, args, stop)
}

fn interrupted(stop: &AtomicBool) -> Result<()> {
    if stop.load(Ordering::Relaxed) {
        bail!("stopped by a signal");
    }
    Ok(())
}

/// Cargo's target directory (it may be moved by `CARGO_TARGET_DIR` or a config file).
fn target_dir() -> Result<PathBuf> {
    let out = probe(cargo().args(["metadata", "--format-version", "1", "--no-deps"]))
        .context("`cargo metadata` failed")?;
    let meta: Value = serde_json::from_str(&out).context("parsing `cargo metadata`")?;
    meta["target_directory"]
        .as_str()
        .map(PathBuf::from)
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
    if parts.next().is_some() || !["srv", "cli"].contains(&role) || n.parse::<u32>().is_err() {
        return None;
    }
    pid.parse().ok()
}

/// What the lab measured, and what is wrong with it (nothing, when it worked).
struct Outcome {
    problems: Vec<String>,
}

fn run_lab(binary: &Path, args: &LabArgs, stop: &AtomicBool) -> Result<Outcome> {
    let per_source = args.datagrams as usize;
    let over = Duration::from_secs(args.seconds);

    println!("lab: creating namespaces and a veth pair…");
    let server = NetNs::new(&format!("{NETNS_PREFIX}srv"))?;
    let clients = NetNs::new(&format!("{NETNS_PREFIX}cli"))?;
    let link = VethPair::new(
        &clients,
        &server,
        &format!("{CLIENT}/24"),
        &format!("{SERVER}/24"),
    )?;
    for source in SOURCES {
        add_addr(&clients, &link.iface_a, &format!("{source}/24"))?;
    }
    println!(
        "lab:   server  netns {:<24} {} {SERVER}/24",
        server.name(),
        link.iface_b
    );
    println!(
        "lab:   clients netns {:<24} {} {CLIENT}/24 + sources {}–{}",
        clients.name(),
        link.iface_a,
        SOURCES[0],
        SOURCES[SOURCES.len() - 1].rsplit('.').next().unwrap_or("")
    );
    interrupted(stop)?;

    let sink_addr = SocketAddr::new(SERVER.parse()?, SINK_PORT);
    println!("lab: starting a UDP sink on {sink_addr} in the server namespace…");
    let sink = UdpSink::bind(&server, sink_addr)?;

    println!(
        "lab: attaching swarmwall to {} (blocking {})…",
        link.iface_b,
        BLOCKED.join(", ")
    );
    let mut swarmwall = Swarmwall::start(&server, binary, &link.iface_b, over, stop)?;

    let flows: Vec<Flow> = SOURCES
        .iter()
        .map(|src| {
            Ok(Flow {
                src: src.parse()?,
                dst: sink_addr,
            })
        })
        .collect::<Result<_>>()?;
    println!(
        "lab: sending {} datagrams ({per_source} from each of {} sources, over {} s)…",
        per_source * flows.len(),
        flows.len(),
        over.as_secs()
    );
    let sent = send_udp(&clients, &flows, per_source, over, stop)?;
    interrupted(stop)?;
    let sent: HashMap<IpAddr, u64> = flows.iter().map(|f| f.src).zip(sent).collect();

    println!("lab: waiting for the last datagrams to arrive…");
    let received = sink.finish(SINK_QUIET, Duration::from_secs(5))?;
    interrupted(stop)?;

    println!("lab: stopping swarmwall (SIGINT) and reading its JSON report…");
    let report = swarmwall.stop()?;
    let report = Report::parse(&report)?;
    println!();
    Ok(summarize(
        &report,
        &sent,
        &received,
        per_source as u64,
        &link.iface_b,
    ))
}

/// The `swarmwall run` child: started in the server namespace, stopped with SIGINT.
struct Swarmwall {
    child: ChildGuard,
    stdout: Option<JoinHandle<std::io::Result<String>>>,
}

impl Swarmwall {
    /// Starts swarmwall and returns once it reports that it attached.
    fn start(
        ns: &NetNs,
        binary: &Path,
        iface: &str,
        burst: Duration,
        stop: &AtomicBool,
    ) -> Result<Swarmwall> {
        let binary = binary.to_str().context("the swarmwall path is not UTF-8")?;
        // A bound in time for swarmwall itself, well past anything the lab needs.
        let duration = format!("{}s", burst.as_secs() + 120);
        let mut argv = vec![binary, "run", "-i", iface];
        for blocked in BLOCKED {
            argv.extend(["--block", blocked]);
        }
        argv.extend(["--json", "--top", "1000", "--duration", &duration]);
        let mut cmd = ns.command(&argv);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group: a Ctrl-C at the terminal reaches the lab only, and the lab
            // stops swarmwall in order (SIGINT, so it prints its report and detaches).
            .process_group(0);
        // SAFETY: prctl is async-signal-safe and touches only the child's own state.
        unsafe {
            cmd.pre_exec(|| {
                // If the lab dies without cleaning up (SIGKILL), swarmwall gets SIGTERM.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        println!("+ {}", crate::cmd::display(&cmd));
        let mut child = ChildGuard::new(
            cmd.spawn()
                .with_context(|| format!("starting {binary} in netns {}", ns.name()))?,
        );
        let stdout = child.stdout.take().context("swarmwall's stdout")?;
        let stderr = child.stderr.take().context("swarmwall's stderr")?;
        let stdout = std::thread::spawn(move || {
            let mut text = String::new();
            BufReader::new(stdout).read_to_string(&mut text)?;
            Ok(text)
        });
        let mut swarmwall = Swarmwall {
            child,
            stdout: Some(stdout),
        };
        swarmwall.wait_attached(forward_stderr(stderr), stop)?;
        Ok(swarmwall)
    }

    fn wait_attached(&mut self, lines: mpsc::Receiver<String>, stop: &AtomicBool) -> Result<()> {
        let deadline = Instant::now() + ATTACH_TIMEOUT;
        loop {
            match lines.recv_timeout(Duration::from_millis(100)) {
                Ok(line) if line.contains("attached to") => return Ok(()),
                Ok(_) | Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // stderr closed: it is exiting; give it a moment to be reaped below.
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
            interrupted(stop)?;
            if let Some(status) = self.child.try_wait()? {
                bail!("swarmwall exited ({status}) before attaching; its messages are above");
            }
            if Instant::now() > deadline {
                bail!("swarmwall did not attach within {ATTACH_TIMEOUT:?}");
            }
        }
    }

    /// SIGINT, then its JSON report once it has exited.
    fn stop(&mut self) -> Result<String> {
        self.interrupt();
        let status = self.wait(STOP_TIMEOUT)?.ok_or_else(|| {
            anyhow!("swarmwall did not exit within {STOP_TIMEOUT:?} of SIGINT; killing it")
        })?;
        if !status.success() {
            bail!("swarmwall exited with {status}; its messages are above");
        }
        let stdout = self.stdout.take().context("report already read")?;
        stdout
            .join()
            .map_err(|_| anyhow!("the thread reading swarmwall's stdout panicked"))?
            .context("reading swarmwall's stdout")
    }

    fn interrupt(&self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SAFETY: kill has no memory-safety preconditions; the child is not reaped yet (we
            // hold it), so the pid is still its.
            unsafe { libc::kill(pid, libc::SIGINT) };
        }
    }

    fn wait(&mut self, timeout: Duration) -> Result<Option<std::process::ExitStatus>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(Some(status));
            }
            if Instant::now() > deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Swarmwall {
    /// On an early exit, let swarmwall detach in order; the guard kills it if it won't.
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.interrupt();
            let _ = self.wait(Duration::from_secs(3));
        }
    }
}

/// Echoes swarmwall's stderr as it comes, and hands each line to the caller.
fn forward_stderr(stderr: ChildStderr) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            println!("  │ {line}");
            // The receiver goes away after "attached"; keep echoing regardless.
            let _ = tx.send(line);
        }
    });
    rx
}

/// What the lab needs from `swarmwall run --json`.
#[derive(Debug, Default, PartialEq)]
struct Report {
    mode: String,
    /// Per source: packets, bytes, dropped.
    sources: HashMap<IpAddr, SourceCounts>,
    /// (target, dropped) per rule.
    rules: Vec<(String, u64)>,
    /// Global stats in the order swarmwall printed them (serde_json sorts keys).
    stats: Vec<(String, u64)>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct SourceCounts {
    packets: u64,
    bytes: u64,
    dropped: u64,
}

impl Report {
    fn parse(json: &str) -> Result<Report> {
        let value: Value = serde_json::from_str(json.trim())
            .with_context(|| format!("swarmwall's report is not JSON: {json:?}"))?;
        let u64_of = |v: &Value, key: &str| -> Result<u64> {
            v[key]
                .as_u64()
                .with_context(|| format!("report: {key:?} missing or not a count in {v}"))
        };
        let mut sources = HashMap::new();
        for s in value["sources"]
            .as_array()
            .context("report: no \"sources\" array")?
        {
            let Some(addr) = s["addr"].as_str() else {
                continue;
            };
            let addr: IpAddr = addr
                .parse()
                .with_context(|| format!("report: bad source address {addr:?}"))?;
            sources.insert(
                addr,
                SourceCounts {
                    packets: u64_of(s, "packets")?,
                    bytes: u64_of(s, "bytes")?,
                    dropped: u64_of(s, "dropped")?,
                },
            );
        }
        let rules = value["rules"]
            .as_array()
            .context("report: no \"rules\" array")?
            .iter()
            .map(|r| {
                let target = r["target"]
                    .as_str()
                    .context("report: rule without target")?;
                Ok((target.to_owned(), u64_of(r, "dropped")?))
            })
            .collect::<Result<_>>()?;
        let stats = value["stats"]
            .as_object()
            .context("report: no \"stats\" object")?
            .iter()
            .map(|(k, v)| Ok((k.clone(), v.as_u64().context("report: stat not a count")?)))
            .collect::<Result<_>>()?;
        Ok(Report {
            mode: value["mode"].as_str().unwrap_or("?").to_owned(),
            sources,
            rules,
            stats,
        })
    }

    fn stat(&self, name: &str) -> Option<u64> {
        self.stats.iter().find(|(k, _)| k == name).map(|(_, v)| *v)
    }
}

/// Stats in the order a reader wants them; any others follow alphabetically.
const STAT_ORDER: [&str; 11] = [
    "seen",
    "passed",
    "dropped_exact",
    "dropped_prefix",
    "allowed",
    "observed",
    "not_ip",
    "parse_failed",
    "l4_truncated",
    "fragment",
    "source_insert_failed",
];

fn percent(part: u64, whole: u64) -> String {
    if whole == 0 {
        "-".into()
    } else {
        format!("{:.0}%", part as f64 * 100.0 / whole as f64)
    }
}

/// Prints the per-source table and the global stats, and lists whatever does not add up.
fn summarize(
    report: &Report,
    sent: &HashMap<IpAddr, u64>,
    received: &HashMap<IpAddr, u64>,
    per_source: u64,
    iface: &str,
) -> Outcome {
    let mut problems = Vec::new();
    let blocked: Vec<IpAddr> = BLOCKED.iter().filter_map(|b| b.parse().ok()).collect();
    println!("swarmwall on {iface} ({} mode):", report.mode);
    println!(
        "  {:<15} {:<7} {:>7} {:>9} {:>12} {:>9}  RESULT",
        "SOURCE", "RULE", "SENT", "XDP SEEN", "XDP DROPPED", "RECEIVED"
    );
    let mut sources: Vec<IpAddr> = sent.keys().copied().collect();
    sources.sort();
    for src in &sources {
        let sent = sent[src];
        let xdp = report.sources.get(src).copied().unwrap_or_default();
        let got = received.get(src).copied().unwrap_or(0);
        let is_blocked = blocked.contains(src);
        let result = if is_blocked {
            format!("{} dropped", percent(xdp.dropped, sent))
        } else {
            format!("{} delivered", percent(got, sent))
        };
        println!(
            "  {:<15} {:<7} {:>7} {:>9} {:>12} {:>9}  {result}",
            src.to_string(),
            if is_blocked { "block" } else { "-" },
            sent,
            xdp.packets,
            xdp.dropped,
            got
        );
        if sent != per_source {
            problems.push(format!(
                "{src}: the sender sent {sent} of {per_source} (it stops after its time bound)"
            ));
        }
        if xdp.packets != sent {
            problems.push(format!(
                "{src}: sent {sent} datagrams but XDP counted {} packets from it",
                xdp.packets
            ));
        }
        if is_blocked {
            if xdp.dropped != xdp.packets {
                problems.push(format!(
                    "{src} is blocked, but XDP dropped only {} of its {} packets",
                    xdp.dropped, xdp.packets
                ));
            }
            if got != 0 {
                problems.push(format!(
                    "{src} is blocked, but the sink received {got} datagrams from it"
                ));
            }
        } else {
            if xdp.dropped != 0 {
                problems.push(format!(
                    "{src} is not blocked, but XDP dropped {} of its packets",
                    xdp.dropped
                ));
            }
            if got != sent {
                problems.push(format!(
                    "{src}: sent {sent} datagrams, the sink received {got}"
                ));
            }
        }
    }

    let others: Vec<(&IpAddr, &SourceCounts)> = report
        .sources
        .iter()
        .filter(|(addr, _)| !sent.contains_key(addr))
        .collect();
    if !others.is_empty() {
        let packets: u64 = others.iter().map(|(_, c)| c.packets).sum();
        let mut names: Vec<String> = others.iter().map(|(a, _)| a.to_string()).collect();
        names.sort();
        let link_local = others
            .iter()
            .all(|(a, _)| matches!(a, IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80));
        println!(
            "  XDP also saw {packets} packet{} from {} other source{} ({}){}.",
            if packets == 1 { "" } else { "s" },
            others.len(),
            if others.len() == 1 { "" } else { "s" },
            names.join(", "),
            if link_local {
                ": the kernel's own IPv6 link-local housekeeping (router solicitations, MLD)"
            } else {
                ""
            }
        );
        for (addr, counts) in &others {
            if counts.dropped != 0 {
                problems.push(format!("{addr} (not a lab source) had packets dropped"));
            }
        }
    }

    println!("  (ARP is not IP: XDP counts it in not_ip, not per source.)");
    println!();
    println!("  rules:");
    for (target, dropped) in &report.rules {
        println!("    drop {target:<15} dropped {dropped}");
    }
    let mut stats: Vec<&(String, u64)> = report.stats.iter().collect();
    stats.sort_by_key(|(name, _)| {
        (
            STAT_ORDER
                .iter()
                .position(|s| s == name)
                .unwrap_or(STAT_ORDER.len()),
            name.clone(),
        )
    });
    let line: Vec<String> = stats.iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!("  global: {}", line.join(" "));
    println!();

    let blocked_sent: u64 = blocked.iter().filter_map(|b| sent.get(b)).sum();
    match report.stat("dropped_exact") {
        Some(d) if d == blocked_sent => {}
        Some(d) => problems.push(format!(
            "global dropped_exact is {d}, but the blocked sources sent {blocked_sent}"
        )),
        None => problems.push("the report has no dropped_exact stat".into()),
    }
    if let Some(d) = report.stat("dropped_prefix").filter(|&d| d != 0) {
        problems.push(format!(
            "global dropped_prefix is {d}; the lab has no prefix rules"
        ));
    }
    let total_sent: u64 = sent.values().sum();
    match report.stat("seen") {
        Some(seen) if seen >= total_sent => {}
        Some(seen) => problems.push(format!(
            "XDP saw {seen} packets in all, fewer than the {total_sent} datagrams sent"
        )),
        None => problems.push("the report has no seen stat".into()),
    }
    for (target, dropped) in &report.rules {
        let expected = target
            .parse::<IpAddr>()
            .ok()
            .and_then(|t| sent.get(&t))
            .copied();
        if let Some(expected) = expected.filter(|e| e != dropped) {
            problems.push(format!(
                "rule {target} dropped {dropped}, but its source sent {expected}"
            ));
        }
    }
    if report.rules.len() != BLOCKED.len() {
        problems.push(format!(
            "swarmwall reports {} rules, the lab gave it {}",
            report.rules.len(),
            BLOCKED.len()
        ));
    }
    Outcome { problems }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPORT: &str = r#"{"mode":"enforce","sources":[
        {"addr":"198.51.100.10","packets":5,"bytes":400,"dropped":0,"first_seen_ns":1,"last_seen_ns":2},
        {"addr":"198.51.100.13","packets":5,"bytes":400,"dropped":5,"first_seen_ns":0,"last_seen_ns":0},
        {"addr":"fe80::1","packets":2,"bytes":140,"dropped":0,"first_seen_ns":1,"last_seen_ns":2}],
        "rules":[{"id":0,"target":"198.51.100.13","action":"drop","scope":{},"hits":5,"dropped":5}],
        "stats":{"dropped_exact":5,"passed":7,"seen":12}}"#;

    #[test]
    fn parses_swarmwalls_report() {
        let r = Report::parse(REPORT).unwrap();
        assert_eq!(r.mode, "enforce");
        assert_eq!(
            r.sources[&"198.51.100.13".parse::<IpAddr>().unwrap()],
            SourceCounts {
                packets: 5,
                bytes: 400,
                dropped: 5
            }
        );
        assert_eq!(r.rules, [("198.51.100.13".to_owned(), 5)]);
        assert_eq!(r.stat("seen"), Some(12));
        assert!(Report::parse("not json").is_err());
        assert!(Report::parse(r#"{"mode":"enforce"}"#).is_err());
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn summary_flags_a_leak_and_a_drop_mismatch() {
        let report = Report::parse(REPORT).unwrap();
        let sent = HashMap::from([(ip("198.51.100.10"), 5), (ip("198.51.100.13"), 5)]);
        // The blocked source leaked one datagram to the sink, and a second rule is missing.
        let received = HashMap::from([(ip("198.51.100.10"), 5), (ip("198.51.100.13"), 1)]);
        let outcome = summarize(&report, &sent, &received, 5, "veth");
        let text = outcome.problems.join("\n");
        assert!(
            text.contains("198.51.100.13 is blocked, but the sink received 1"),
            "{text}"
        );
        assert!(
            text.contains("reports 1 rules, the lab gave it 2"),
            "{text}"
        );
        assert!(!text.contains("198.51.100.10"), "{text}");
    }

    #[test]
    fn recognises_only_lab_namespace_names() {
        assert_eq!(lab_netns_pid("swlab-srv-1234-0"), Some(1234));
        assert_eq!(lab_netns_pid("swlab-cli-99-17"), Some(99));
        assert_eq!(lab_netns_pid("swlab-xyz-99-17"), None);
        assert_eq!(lab_netns_pid("swlab-srv-99"), None);
        assert_eq!(lab_netns_pid("swlab-srv-99-1-2"), None);
        assert_eq!(lab_netns_pid("swls-99-1"), None);
    }

    #[test]
    fn lab_addresses_are_documentation_addresses() {
        for a in SOURCES.iter().chain(&BLOCKED).chain(&[SERVER, CLIENT]) {
            let a: std::net::Ipv4Addr = a.parse().unwrap();
            assert_eq!(
                a.octets()[..3],
                [198, 51, 100],
                "{a} is outside 198.51.100.0/24"
            );
        }
        assert!(BLOCKED.iter().all(|b| SOURCES.contains(b)));
    }
}
