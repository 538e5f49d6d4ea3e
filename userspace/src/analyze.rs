//! `swarmwall analyze <file>`: the parser, detector and policy of the live daemon, run over a
//! pcap capture or a web server's access log with its own timestamps, so an admin can see what
//! swarmwall would have done with yesterday's traffic before trusting it to enforce. Needs no
//! root and no daemon.

use std::{
    collections::{BTreeMap, BTreeSet},
    io::Read as _,
    net::{IpAddr, SocketAddr},
    path::Path,
    time::Duration,
};

use ipnet::IpNet;

use serde::Serialize;

pub use crate::sources::pcap::requests_in_frame;
use crate::{
    Target,
    api::types::Ja4View,
    detect::{Detector, DetectorConfig},
    guard::Guards,
    l7::{Kind, RequestEvent},
    policy::{Policy, PolicyConfig},
    sources::{
        EventSource as _, Polled, SourceError,
        log::{Format, LineParser, LogSource, Reject},
        pcap::PcapSource,
    },
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
    /// How to read an access log (ignored for a pcap).
    pub log: LogOptions,
}

/// How `analyze` reads an access log.
#[derive(Clone, Debug, Default)]
pub struct LogOptions {
    /// `combined`, `common`, `json` or an nginx `log_format` string; `None`: whichever of the
    /// first three reads the file's first lines best.
    pub format: Option<String>,
    /// The site the requests went to (`ADDR:PORT`, one per address family); `None`: from the
    /// lines' `$server_addr`, else unspecified addresses on port 80.
    pub sites: Vec<SocketAddr>,
    /// Reverse proxies whose `X-Forwarded-For` names the client.
    pub trusted_proxies: Vec<IpNet>,
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
    /// What decided it: `requests` (HTTP on the wire), `log` (access-log lines) or
    /// `handshakes` (TLS ClientHellos alone; the pages then have an empty path).
    pub basis: &'static str,
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
    /// The members' most common TLS client fingerprints, with the share of members on each
    /// (as `swarms --json` shows them); empty when no member's whole ClientHello was seen.
    pub ja4: Vec<Ja4View>,
}

/// A share of a site's TLS handshakes.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ShareOut {
    /// The value: a JA4 fingerprint, or an ALPN list (`h2,http/1.1`).
    pub value: String,
    /// Share of the site's handshakes (0..1) that had it.
    pub share: f64,
}

/// The TLS handshakes to one server name (SNI) in the report.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TlsOut {
    /// The SNI; `None` for hellos that named none (or were cut before the name).
    pub sni: Option<String>,
    /// ClientHellos seen.
    pub handshakes: u64,
    /// Distinct source addresses that sent them.
    pub sources: u64,
    /// The most common JA4 fingerprints (hellos seen whole only).
    pub ja4: Vec<ShareOut>,
    /// The most common ALPN offers (the protocols in the client's order, joined with `,`).
    pub alpn: Vec<ShareOut>,
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
    /// Packets read (a pcap).
    pub packets: u64,
    /// Lines read (an access log; absent for a pcap).
    #[serde(skip_serializing_if = "is_zero")]
    pub lines: u64,
    /// HTTP requests parsed.
    pub requests: u64,
    /// TLS ClientHellos seen (a pcap).
    #[serde(skip_serializing_if = "is_zero")]
    pub handshakes: u64,
    /// The TLS handshakes per server name, most handshakes first (at most [`TLS_TOP`]);
    /// absent when there were none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tls: Vec<TlsOut>,
    /// Problems with the capture (e.g. a truncated tail).
    pub warnings: Vec<String>,
}

/// Errors that stop an analysis: the capture's (a damaged tail only warns).
pub type AnalyzeError = SourceError;

/// Server names listed in [`Report::tls`], and values listed per name.
pub const TLS_TOP: usize = 10;
/// Values of [`TlsOut::ja4`] and [`TlsOut::alpn`] listed per name.
const SHARES_TOP: usize = 3;

/// What the handshakes to one server name had, while reading.
#[derive(Default)]
struct TlsTally {
    handshakes: u64,
    sources: BTreeSet<IpAddr>,
    ja4: BTreeMap<String, u64>,
    alpn: BTreeMap<String, u64>,
}

impl TlsTally {
    fn note(&mut self, ev: &RequestEvent) {
        self.handshakes += 1;
        self.sources.insert(ev.src);
        if let Some(j) = &ev.ja4 {
            *self.ja4.entry(j.clone()).or_default() += 1;
        }
        if let Some(a) = &ev.alpn {
            *self.alpn.entry(a.clone()).or_default() += 1;
        }
    }

    fn out(self, sni: Option<String>) -> TlsOut {
        let all = self.handshakes.max(1) as f64;
        let top = |m: BTreeMap<String, u64>| {
            let mut v: Vec<(String, u64)> = m.into_iter().collect();
            v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            v.into_iter()
                .take(SHARES_TOP)
                .map(|(value, n)| ShareOut {
                    value,
                    share: (n as f64 / all * 1000.0).round() / 1000.0,
                })
                .collect()
        };
        TlsOut {
            sni,
            handshakes: self.handshakes,
            sources: self.sources.len() as u64,
            ja4: top(self.ja4),
            alpn: top(self.alpn),
        }
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

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
    let mut tls: BTreeMap<Option<String>, TlsTally> = BTreeMap::new();
    for ev in events {
        match ev.kind {
            Kind::Http => report.requests += 1,
            Kind::TlsHello => {
                report.handshakes += 1;
                tls.entry(ev.host.clone()).or_default().note(&ev);
            }
        }
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
            basis: s.basis.name(),
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
            ja4: s
                .ja4_shares()
                .into_iter()
                .map(|(fp, share)| Ja4View {
                    fingerprint: fp.to_string(),
                    share: (share * 1000.0).round() / 1000.0,
                })
                .collect(),
        })
        .collect();
    let mut tls: Vec<TlsOut> = tls.into_iter().map(|(sni, t)| t.out(sni)).collect();
    tls.sort_by(|a, b| {
        b.handshakes
            .cmp(&a.handshakes)
            .then_with(|| a.sni.cmp(&b.sni))
    });
    tls.truncate(TLS_TOP);
    report.tls = tls;
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

/// What a file holds, judged by its first bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputKind {
    /// A pcap (or pcapng) capture, or binary data (which the pcap reader then refuses).
    Pcap,
    /// Text: an access log.
    Log,
}

/// Bytes looked at to tell a capture from a log, and to guess a log's format.
const SNIFF: usize = 64 * 1024;

/// Whether `head` (a file's first bytes) is a capture or text: pcap magic numbers (either byte
/// order, µs or ns) and pcapng's are captures; bytes with no NUL that are mostly printable
/// (UTF-8 allowed) are text; anything else goes to the pcap reader, whose error says why.
pub fn detect(head: &[u8]) -> InputKind {
    const MAGICS: [[u8; 4]; 5] = [
        [0xd4, 0xc3, 0xb2, 0xa1],
        [0xa1, 0xb2, 0xc3, 0xd4],
        [0x4d, 0x3c, 0xb2, 0xa1],
        [0xa1, 0xb2, 0x3c, 0x4d],
        [0x0a, 0x0d, 0x0d, 0x0a],
    ];
    if head.len() >= 4 && MAGICS.iter().any(|m| head.starts_with(m)) {
        return InputKind::Pcap;
    }
    if head.is_empty() || head.contains(&0) {
        return InputKind::Pcap;
    }
    let printable = head
        .iter()
        .filter(|&&b| b >= 0x20 || matches!(b, b'\n' | b'\r' | b'\t'))
        .count();
    if printable * 100 >= head.len() * 95 {
        InputKind::Log
    } else {
        InputKind::Pcap
    }
}

/// Analyzes a pcap capture or an access log, told apart by content ([`detect`]).
pub fn analyze_file(path: &Path, opts: &Options) -> Result<Report, AnalyzeError> {
    let head = read_head(path)?;
    match detect(&head) {
        InputKind::Pcap => analyze_pcap(path, opts),
        InputKind::Log => analyze_log(path, opts),
    }
}

fn read_head(path: &Path) -> Result<Vec<u8>, AnalyzeError> {
    let open = |source| SourceError::Open {
        path: path.display().to_string(),
        source,
    };
    let mut head = Vec::with_capacity(SNIFF);
    std::fs::File::open(path)
        .and_then(|f| f.take(SNIFF as u64).read_to_end(&mut head))
        .map_err(open)?;
    Ok(head)
}

/// Analyzes a web server's access log. Rejected lines (garbage, oversize, another format) are
/// counted and reported as a warning, as is a last line cut short; a file none of whose first
/// lines parse is an error naming the format and the first line's fault.
pub fn analyze_log(path: &Path, opts: &Options) -> Result<Report, AnalyzeError> {
    let name = path.display().to_string();
    let not_log = |why: String| SourceError::NotLog {
        path: name.clone(),
        why,
    };
    let head = read_head(path)?;
    let (spec, format) = match &opts.log.format {
        Some(spec) => (
            spec.clone(),
            Format::parse(spec, None).map_err(|e| not_log(e.to_string()))?,
        ),
        None => guess_format(&head).ok_or_else(|| not_log(first_fault(&head)))?,
    };
    let mut warnings = Vec::new();
    let mut sites = opts.log.sites.clone();
    if sites.is_empty() && !format.has_server_addr() {
        sites = vec![
            SocketAddr::from(([0, 0, 0, 0], 80)),
            SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 80)),
        ];
        warnings.push(format!(
            "{name}: format {spec:?} does not name the server (no $server_addr) and no --site was given; requests are taken as sent to 0.0.0.0:80 and [::]:80 (pass --site ADDR:PORT to scope rules to the site)"
        ));
    }
    let parser = LineParser::new(format, sites, opts.log.trusted_proxies.clone());
    let mut source = LogSource::open(path, parser)?;
    let mut events = Vec::new();
    while source.poll(Duration::ZERO, &mut |ev| events.push(ev))? == Polled::More {}
    let counters = source.log_counters();
    if counters.events == 0 {
        let why = match source.first_reject() {
            Some((line, r)) => format!(
                "no line is in format {spec:?} (line {line}: {})",
                describe(r)
            ),
            None => "it holds no lines".to_owned(),
        };
        return Err(not_log(why));
    }
    let mut report = analyze_events(events, opts);
    report.lines = counters.lines;
    warnings.extend(source.take_warnings());
    report.warnings = warnings;
    Ok(report)
}

/// The named format that reads the most of the first lines, if any reads one.
fn guess_format(head: &[u8]) -> Option<(String, Format)> {
    let lines: Vec<&[u8]> = head
        .split(|&b| b == b'\n')
        .filter(|l| !l.trim_ascii().is_empty())
        .take(200)
        .collect();
    let mut best: Option<(usize, &str)> = None;
    for spec in ["combined", "common", "json"] {
        let Ok(format) = Format::parse(spec, None) else {
            continue;
        };
        // Any site will do to count parsable lines.
        let p = LineParser::new(
            format,
            vec![SocketAddr::from(([192, 0, 2, 1], 80))],
            Vec::new(),
        );
        let ok = lines.iter().filter(|l| p.parse(l).is_ok()).count();
        if ok > 0 && best.is_none_or(|(n, _)| ok > n) {
            best = Some((ok, spec));
        }
    }
    let (_, spec) = best?;
    Some((spec.to_owned(), Format::parse(spec, None).ok()?))
}

/// Why the first line fits no named format, for the error.
fn first_fault(head: &[u8]) -> String {
    let Some(first) = head
        .split(|&b| b == b'\n')
        .find(|l| !l.trim_ascii().is_empty())
    else {
        return "it holds no lines".to_owned();
    };
    let site = vec![SocketAddr::from(([192, 0, 2, 1], 80))];
    let why = |spec: &str| {
        Format::parse(spec, None)
            .ok()
            .and_then(|f| {
                LineParser::new(f, site.clone(), Vec::new())
                    .parse(first)
                    .err()
            })
            .map_or("unreadable", describe)
    };
    format!(
        "its first line is not in format combined ({}), common ({}) or json ({}); pass --format '<nginx log_format>' if it is another",
        why("combined"),
        why("common"),
        why("json")
    )
}

fn describe(r: Reject) -> &'static str {
    match r {
        Reject::Oversize => "longer than 8 KiB",
        Reject::Layout => "the text around the fields does not match",
        Reject::Json => "not a JSON object of strings and numbers",
        Reject::Client => "the client is not an IP address",
        Reject::Time => "the time is missing or unreadable",
        Reject::Request => "the request is not METHOD target HTTP/x",
        Reject::Status => "the status is not a number",
        Reject::Site => "no site",
    }
}
