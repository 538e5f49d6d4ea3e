//! `swarmwall analyze <file.pcap>`: the parser, detector and policy of the live daemon, run over
//! a capture with its own timestamps, so an admin can see what swarmwall would have done with
//! yesterday's traffic before trusting it to enforce. Needs no root and no daemon.

use std::{path::Path, time::Duration};

use serde::Serialize;

pub use crate::sources::pcap::requests_in_frame;
use crate::{
    Target,
    detect::{Detector, DetectorConfig},
    guard::Guards,
    l7::RequestEvent,
    policy::{Policy, PolicyConfig},
    sources::{EventSource as _, Polled, SourceError, pcap::PcapSource},
};

/// What `analyze` needs besides the capture.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Detector tuning.
    pub detector: DetectorConfig,
    /// Policy tuning.
    pub policy: PolicyConfig,
    /// Never blocked.
    pub allow: Vec<Target>,
    /// The host's own addresses.
    pub own: Vec<Target>,
}

/// A page in the report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PageOut {
    /// `Host` of the requests.
    pub host: Option<String>,
    /// Path.
    pub path: String,
}

/// A swarm in the report.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SwarmOut {
    /// Swarm id (what rules refer to).
    pub id: u64,
    /// The pages it hammered.
    pub pages: Vec<PageOut>,
    /// Member addresses.
    pub members: Vec<String>,
    /// First request of a member to those pages (RFC 3339, capture time).
    pub onset: String,
    /// 0..1.
    pub confidence: f64,
    /// The attacked site, `address:port` (the one most members attack).
    pub site: String,
    /// Every address of the site it attacks (IPv4 and IPv6 of one `Host` are one swarm).
    pub sites: Vec<String>,
    /// When the evidence threshold was met (capture time).
    pub detected: String,
    /// Why.
    pub evidence: Vec<String>,
}

/// A rule's scope in the report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ScopeOut {
    /// Destination address.
    pub dst: String,
    /// Destination port.
    pub port: u16,
    /// Protocol.
    pub proto: String,
}

/// A rule in the report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RuleOut {
    /// Source address or prefix.
    pub prefix: String,
    /// Scope.
    pub scope: ScopeOut,
    /// Lifetime, seconds.
    pub ttl_s: u64,
    /// The swarm that caused it.
    pub swarm: u64,
}

/// Something the policy refused to push.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RefusedOut {
    /// Member or rule.
    pub target: String,
    /// Why.
    pub why: String,
}

/// The report: `{"swarms": [...], "rules": [...]}` plus what was read.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Report {
    /// Swarms found.
    pub swarms: Vec<SwarmOut>,
    /// Rules swarmwall would have pushed.
    pub rules: Vec<RuleOut>,
    /// What the guards stopped.
    pub refused: Vec<RefusedOut>,
    /// Packets read.
    pub packets: u64,
    /// HTTP requests parsed.
    pub requests: u64,
    /// Problems with the capture (e.g. a truncated tail).
    pub warnings: Vec<String>,
}

/// Errors that stop an analysis: the capture's (a damaged tail only warns).
pub type AnalyzeError = SourceError;

fn rfc3339(ns: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_nanos(ns);
    humantime::format_rfc3339_micros(t).to_string()
}

/// Runs the detector and policy over events in time order; ticks once a second of event time.
pub fn analyze_events(events: impl IntoIterator<Item = RequestEvent>, opts: &Options) -> Report {
    let mut det = Detector::new(opts.detector.clone());
    let mut policy = Policy::new(opts.policy.clone());
    let mut report = Report::default();
    let mut next_tick: Option<u64> = None;
    let guards = Guards::new(opts.allow.clone(), opts.own.clone());
    let plan_round = |det: &mut Detector, policy: &mut Policy, report: &mut Report, now: u64| {
        for swarm in det.tick(now) {
            let plan = policy.plan(&swarm, det, &guards, now);
            // Offline, a planned rule is as good as pushed.
            for r in &plan.rules {
                policy.landed(r, now);
            }
            report.rules.extend(plan.rules.iter().map(|r| RuleOut {
                prefix: r.target.to_string(),
                scope: ScopeOut {
                    dst: r.site.0.to_string(),
                    port: r.site.1,
                    proto: r.proto.to_string(),
                },
                ttl_s: r.ttl.as_secs(),
                swarm: r.swarm,
            }));
            report.refused.extend(
                plan.refused
                    .into_iter()
                    .map(|(target, why)| RefusedOut { target, why }),
            );
            // A prefix rule replaces the single-address rules inside it.
            for (site, t) in plan.superseded {
                let (dst, prefix) = (site.0.to_string(), t.to_string());
                report.rules.retain(|r| {
                    !(r.prefix == prefix && r.scope.dst == dst && r.scope.port == site.1)
                });
            }
        }
    };
    for ev in events {
        report.requests += 1;
        let t = *next_tick.get_or_insert(ev.ts_ns);
        if ev.ts_ns >= t {
            let mut t = t;
            while ev.ts_ns >= t {
                plan_round(&mut det, &mut policy, &mut report, t);
                t += 1_000_000_000;
            }
            next_tick = Some(t);
        }
        det.observe(&ev);
    }
    if let Some(t) = next_tick {
        plan_round(&mut det, &mut policy, &mut report, t);
    }
    report.swarms = det
        .swarms()
        .iter()
        .map(|s| SwarmOut {
            id: s.id,
            pages: s
                .page_names()
                .into_iter()
                .map(|(host, path)| PageOut {
                    host: host.map(String::from),
                    path: path.into(),
                })
                .collect(),
            members: s.members.iter().map(|m| m.to_string()).collect(),
            onset: rfc3339(s.onset_ns),
            confidence: (s.confidence * 1000.0).round() / 1000.0,
            site: std::net::SocketAddr::from(s.site).to_string(),
            sites: s
                .sites
                .iter()
                .map(|x| std::net::SocketAddr::from(*x).to_string())
                .collect(),
            detected: rfc3339(s.detected_ns),
            evidence: s.evidence.clone(),
        })
        .collect();
    report
}

/// Analyzes a pcap file (Ethernet link type). A truncated or damaged tail is reported as a
/// warning and the packets before it are used; a file that is not a pcap is an error.
pub fn analyze_pcap(path: &Path, opts: &Options) -> Result<Report, AnalyzeError> {
    let mut source = PcapSource::open(path)?;
    let mut events = Vec::new();
    while source.poll(Duration::ZERO, &mut |ev| events.push(ev))? == Polled::More {}
    let mut report = analyze_events(events, opts);
    report.packets = source.counters().read;
    report.warnings = source.take_warnings();
    Ok(report)
}
