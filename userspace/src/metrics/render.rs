//! The exposition: views of the daemon in, OpenMetrics text out.

use std::{collections::BTreeMap, fmt};

use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::{Registry, Unit},
};

use crate::api::types::{RuleView, Status, SwarmsView};

/// What one scrape shows.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// `GET /v1/status`.
    pub status: Status,
    /// `GET /v1/swarms`.
    pub swarms: SwarmsView,
    /// `GET /v1/rules`.
    pub rules: Vec<RuleView>,
}

type Labels = Vec<(&'static str, String)>;
type Counters = Family<Labels, Counter>;
type Gauges = Family<Labels, Gauge>;
type FloatGauges = Family<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>;

fn labels<const N: usize>(pairs: [(&'static str, &str); N]) -> Labels {
    pairs.iter().map(|(k, v)| (*k, escape(v))).collect()
}

/// A label value as the text format needs it. `prometheus-client` 0.24 writes values as they
/// are, so a log path with a quote or a newline (an admin's glob can match any name) would
/// break the whole exposition.
fn escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

fn gauge_value(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Renders `s` in the OpenMetrics text format (`# EOF` last).
pub fn render(s: &Snapshot) -> Result<String, fmt::Error> {
    let mut reg = Registry::with_prefix("swarmwall");
    let st = &s.status;
    let stat = |name: &str| st.stats.get(name).copied().unwrap_or(0);

    // A gauge at 1 rather than OpenMetrics' info type, which promtool and the classic text
    // format do not know.
    let build = Gauges::default();
    build
        .get_or_create(&labels([
            ("version", &st.version),
            ("abi", &st.abi.to_string()),
            ("mode", &st.mode),
        ]))
        .set(1);
    reg.register(
        "build_info",
        "The running daemon: its version, kernel ABI and global mode",
        build,
    );
    let uptime = Gauge::<i64>::default();
    uptime.set(gauge_value(st.uptime_s));
    reg.register_with_unit(
        "uptime",
        "Time since the daemon started",
        Unit::Seconds,
        uptime,
    );
    let attached = Gauges::default();
    for i in &st.interfaces {
        attached
            .get_or_create(&labels([("interface", &i.name), ("mode", &i.mode)]))
            .set(1);
    }
    reg.register(
        "interface_attached",
        "Interfaces the XDP program is attached to, by attach mode (driver or generic)",
        attached,
    );

    let packets = Counters::default();
    for (verdict, reason, name) in [
        ("pass", "no_rule", "passed"),
        ("pass", "allow_list", "allowed"),
        ("pass", "observe", "observed"),
        ("drop", "exact_rule", "dropped_exact"),
        ("drop", "prefix_rule", "dropped_prefix"),
    ] {
        packets
            .get_or_create(&labels([("verdict", verdict), ("reason", reason)]))
            .inc_by(stat(name));
    }
    reg.register(
        "packets",
        "Packets the XDP program decided, by verdict and the reason for it (observe: a rule \
         would have dropped it)",
        packets,
    );
    let seen = Counter::<u64>::default();
    seen.inc_by(stat("seen"));
    reg.register("packets_seen", "Every packet the XDP program saw", seen);
    let anomalies = Counters::default();
    for kind in [
        "not_ip",
        "parse_failed",
        "l4_truncated",
        "fragment",
        "source_insert_failed",
    ] {
        anomalies
            .get_or_create(&labels([("kind", kind)]))
            .inc_by(stat(kind));
    }
    reg.register(
        "packet_anomalies",
        "Packets the program could not fully parse or account (they pass, or are decided \
         without ports)",
        anomalies,
    );

    rules(&mut reg, s);
    let allow = Gauge::<i64>::default();
    allow.set(gauge_value(st.allow as u64));
    reg.register(
        "allow_entries",
        "Allow-list entries (the config file's and the API's)",
        allow,
    );

    pipeline(&mut reg, s, &stat);
    if let Some(f) = &st.firewall {
        firewall(&mut reg, f);
    }
    let mut out = String::new();
    encode(&mut out, &reg)?;
    Ok(out)
}

/// `openmetrics` (as [`render`] writes it) in the classic Prometheus text format (0.0.4), for
/// scrapers that do not ask for OpenMetrics (`promtool check metrics`, older agents).
/// `prometheus-client` writes only OpenMetrics, whose counter families are named without the
/// `_total` of their samples; the classic format names them with it, and has no `# UNIT` or
/// `# EOF`. Counters and gauges are all this exposition has.
pub fn classic(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len() + 64 * counters.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|tag| {
            let rest = line.strip_prefix(tag)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{tag}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

/// The rules in force, by origin, action and family, and what they dropped.
fn rules(reg: &mut Registry, s: &Snapshot) {
    let count = Gauges::default();
    let packets = Gauges::default();
    let bytes = Gauges::default();
    // Every label set appears, zero or not, so a query need not guess which exist.
    let mut by: BTreeMap<(&str, &str, &str), u64> = BTreeMap::new();
    for origin in ["swarm", "admin"] {
        for action in ["drop", "observe"] {
            for family in ["ipv4", "ipv6"] {
                by.insert((origin, action, family), 0);
            }
        }
    }
    let mut dropped: BTreeMap<&str, (u64, u64)> = [("swarm", (0, 0)), ("admin", (0, 0))].into();
    for r in &s.rules {
        let origin = r.origin();
        let action = if r.action == "observe" {
            "observe"
        } else {
            "drop"
        };
        let family = if r.target.contains(':') {
            "ipv6"
        } else {
            "ipv4"
        };
        *by.entry((origin, action, family)).or_default() += 1;
        let d = dropped.entry(origin).or_default();
        d.0 += r.dropped;
        d.1 += r.dropped_bytes;
    }
    for ((origin, action, family), n) in by {
        count
            .get_or_create(&labels([
                ("origin", origin),
                ("action", action),
                ("family", family),
            ]))
            .set(gauge_value(n));
    }
    for (origin, (p, b)) in dropped {
        packets
            .get_or_create(&labels([("origin", origin)]))
            .set(gauge_value(p));
        bytes
            .get_or_create(&labels([("origin", origin)]))
            .set(gauge_value(b));
    }
    reg.register(
        "rules",
        "Rules in force, by origin (swarm: the detector's; admin: the API's), action and \
         address family",
        count,
    );
    // Gauges: a rule's counts leave with it, so the sum can fall.
    reg.register(
        "rules_dropped_packets",
        "Packets dropped by the rules in force, by the rules' origin",
        packets,
    );
    reg.register(
        "rules_dropped_bytes",
        "Bytes dropped by the rules in force, by the rules' origin",
        bytes,
    );
}

/// The host firewall's copy of the rules (only when `[firewall]` configures one).
fn firewall(reg: &mut Registry, f: &crate::api::types::FirewallView) {
    let l = labels([("backend", &f.backend), ("role", &f.role)]);
    let healthy = Gauges::default();
    healthy.get_or_create(&l).set(i64::from(f.healthy));
    reg.register(
        "firewall_healthy",
        "1 when the firewall holds what the rule store holds (as of the last change or \
         reconcile); 0 when its last command failed (XDP still enforces)",
        healthy,
    );
    let elements = Gauges::default();
    elements
        .get_or_create(&l)
        .set(gauge_value(f.elements as u64));
    reg.register(
        "firewall_elements",
        "Rules and allow entries the firewall holds",
        elements,
    );
    let drift = Gauges::default();
    drift.get_or_create(&l).set(gauge_value(f.drift as u64));
    reg.register(
        "firewall_reconcile_drift",
        "Differences the last reconcile found between the firewall and the rule store \
         (elements added, removed or re-timed)",
        drift,
    );
}

/// Kernel sampling, the detector's pipeline, its log sources and the swarms it found.
fn pipeline(reg: &mut Registry, s: &Snapshot, stat: &dyn Fn(&str) -> u64) {
    let p = &s.swarms.pipeline;
    let up = Gauge::<i64>::default();
    up.set(i64::from(p.enabled && p.error.is_none()));
    reg.register(
        "detection_up",
        "1 while swarm detection runs; 0 when it is off or one of its threads failed",
        up,
    );
    let samples = Counters::default();
    for (outcome, n) in [
        ("sampled", stat("l7_sampled")),
        ("skipped", stat("l7_skipped")),
        ("lost", stat("l7_lost")),
    ] {
        samples
            .get_or_create(&labels([("outcome", outcome)]))
            .inc_by(n);
    }
    reg.register(
        "l7_samples",
        "Requests and TLS hellos the kernel sampled for the detector, skipped (over the \
         per-CPU budget) or lost (the ring buffer was full)",
        samples,
    );
    let hellos = Counters::default();
    for (event, n) in [
        ("tracked", stat("l7_hello_tracked")),
        ("continued", stat("l7_hello_continued")),
        ("reassembled", p.hellos_reassembled),
        ("timed_out", p.hellos_timed_out),
        ("dropped", p.hellos_dropped),
    ] {
        hellos.get_or_create(&labels([("event", event)])).inc_by(n);
    }
    reg.register(
        "tls_hellos",
        "TLS hellos longer than a segment: flows followed and continuations copied (kernel), \
         put together, timed out or dropped for memory (daemon)",
        hellos,
    );
    for (name, help, n) in [
        (
            "l7_samples_read",
            "Samples the daemon read from the kernel's ring buffer",
            p.samples,
        ),
        (
            "l7_samples_unparsed",
            "Samples that parsed to no request",
            p.unparsed,
        ),
        (
            "detector_requests",
            "Requests and hellos handed to the swarm detector",
            p.requests,
        ),
        (
            "detector_queue_overflow",
            "Kernel samples dropped because the detector's queue was full",
            p.queue_overflow,
        ),
    ] {
        let c = Counter::<u64>::default();
        c.inc_by(n);
        reg.register(name, help, c);
    }
    let tracked = Gauge::<i64>::default();
    tracked.set(gauge_value(p.tracked_sources));
    reg.register(
        "detector_tracked_sources",
        "Sources the swarm detector holds state for",
        tracked,
    );

    let lines = Counters::default();
    let rejected = Counters::default();
    let requests = Counters::default();
    let overflow = Counters::default();
    let source_up = Gauges::default();
    let behind = Gauges::default();
    let age = FloatGauges::default();
    for src in &p.sources {
        let l = labels([("source", &src.name)]);
        lines.get_or_create(&l).inc_by(src.read);
        rejected.get_or_create(&l).inc_by(src.rejected);
        requests.get_or_create(&l).inc_by(src.requests);
        overflow.get_or_create(&l).inc_by(src.queue_overflow);
        source_up
            .get_or_create(&l)
            .set(i64::from(src.problem.is_none()));
        if let Some(b) = src.behind_bytes {
            behind.get_or_create(&l).set(gauge_value(b));
        }
        if let Some(ms) = src.newest_line_age_ms {
            age.get_or_create(&l).set(ms as f64 / 1000.0);
        }
    }
    reg.register("log_lines", "Lines read from an access log", lines);
    reg.register(
        "log_lines_rejected",
        "Lines of an access log rejected: malformed, oversize or unparsable",
        rejected,
    );
    reg.register(
        "log_requests",
        "Request events an access log's lines gave",
        requests,
    );
    reg.register(
        "log_queue_overflow",
        "An access log's events dropped because the detector's queue was full",
        overflow,
    );
    reg.register(
        "log_source_up",
        "1 while an access log is read without a problem (a missing or unreadable file is 0)",
        source_up,
    );
    reg.register_with_unit(
        "log_behind",
        "Bytes written to an access log that the daemon has not read yet",
        Unit::Bytes,
        behind,
    );
    reg.register_with_unit(
        "log_newest_line_age",
        "Age of the newest line read from an access log, by the time written in it",
        Unit::Seconds,
        age,
    );

    let swarms = Gauges::default();
    let mut by_state: BTreeMap<&str, u64> =
        ["detected", "blocked", "reported", "refused", "expired"]
            .into_iter()
            .map(|k| (k, 0))
            .collect();
    for sw in &s.swarms.swarms {
        *by_state.entry(sw.state.as_str()).or_default() += 1;
    }
    for (state, n) in by_state {
        swarms
            .get_or_create(&labels([("state", state)]))
            .set(gauge_value(n));
    }
    reg.register(
        "swarms",
        "Swarms in the daemon's book, by state (blocked: rules in force; reported: observe \
         mode; refused: the guards stopped every rule; expired: its rules ran out)",
        swarms,
    );
}

#[cfg(test)]
mod tests;
