//! `swarms`: the detected swarms, one in detail, and pardons.

use std::{
    fmt::Write as _,
    time::{Duration, SystemTime},
};

use anyhow::Result;
use swarmwall::{
    Target,
    api::{
        client::Client,
        types::{PardonRequest, PardonResult, PipelineView, SourceView, SwarmView, SwarmsView},
    },
};

use super::{print_json, print_raw};
use crate::cli::{
    SwarmsArgs, SwarmsCommand, emit,
    fmt::{self, Align, Table},
};

pub async fn swarms(client: &Client, args: SwarmsArgs) -> Result<()> {
    match args.command {
        None if args.json => print_raw(client, "/v1/swarms").await,
        None => emit(&render_swarms(&client.swarms().await?, SystemTime::now())),
        Some(SwarmsCommand::Show { id, json: true }) => {
            print_raw(client, &format!("/v1/swarms/{id}")).await
        }
        Some(SwarmsCommand::Show { id, .. }) => {
            emit(&render_swarm(&client.swarm(id).await?, SystemTime::now()))
        }
        Some(SwarmsCommand::Pardon {
            id,
            members,
            reason,
            json,
        }) => {
            let request = PardonRequest {
                members: members.iter().map(Target::to_string).collect(),
                reason,
            };
            let r: PardonResult = client
                .send(
                    hyper::Method::POST,
                    &format!("/v1/swarms/{id}/pardon"),
                    &request,
                )
                .await?;
            if json {
                return print_json(&r);
            }
            emit(&match r.change_id {
                Some(c) => format!(
                    "{} (change {c}; `swarmwall rules undo {c}` puts the rules back)\n",
                    r.summary
                ),
                None => format!("{}\n", r.summary),
            })
        }
    }
}

fn pages_line(s: &SwarmView) -> String {
    let pages: Vec<String> = s.pages.iter().map(|p| page_name(s, p)).collect();
    pages.join(", ")
}

/// `shop.example/gallery/1`, or for a swarm seen in handshakes only `TLS to shop.example`.
fn page_name(s: &SwarmView, p: &swarmwall::api::types::PageView) -> String {
    let host = p.host.as_deref().unwrap_or("");
    if s.basis == "handshakes" {
        let host = if host.is_empty() { "(no SNI)" } else { host };
        return format!("TLS to {host}");
    }
    format!("{host}{}", p.path)
}

/// What the `basis` of a swarm means, for `swarms show`.
fn basis_line(basis: &str) -> &'static str {
    match basis {
        "log" => "the web server's access log (its requests decided)",
        "handshakes" => "TLS handshakes alone (no access log covers the site; pages not visible)",
        "requests" => "HTTP requests seen on the wire",
        _ => "not reported by this daemon",
    }
}

fn pipeline_line(p: &PipelineView) -> String {
    if let Some(e) = &p.error {
        return format!("swarm detection stopped: {e}; rules already pushed stay in force\n");
    }
    if !p.enabled {
        return "swarm detection is off ([swarm] enabled = false in the config)\n".into();
    }
    let mut out = format!(
        "pipeline: {} samples, {} requests, {} sources tracked; dropped: {} queue overflow, \
         {} skipped and {} lost in the kernel\n",
        fmt::si_u64(p.samples),
        fmt::si_u64(p.requests),
        fmt::si_u64(p.tracked_sources),
        fmt::si_u64(p.queue_overflow),
        fmt::si_u64(p.kernel_skipped),
        fmt::si_u64(p.kernel_lost),
    );
    for s in &p.sources {
        out.push_str(&source_line(s));
        out.push('\n');
    }
    out
}

/// One access log's line: `log /var/log/nginx/access.log: 1.2k lines, ...`.
pub(in crate::cli) fn source_line(s: &SourceView) -> String {
    let mut line = format!(
        "log {}: {} lines, {} requests, {} rejected, {} queue overflow",
        s.name,
        fmt::si_u64(s.read),
        fmt::si_u64(s.requests),
        fmt::si_u64(s.rejected),
        fmt::si_u64(s.queue_overflow)
    );
    if let Some(b) = s.behind_bytes {
        line.push_str(&format!(", {}B unread", fmt::si_u64(b)));
    }
    if let Some(age) = s.newest_line_age_ms {
        line.push_str(&format!(", newest line {:.1} s old", age as f64 / 1000.0));
    }
    if let Some(p) = &s.problem {
        line.push_str(&format!("; warning: {p}"));
    }
    line
}

fn render_swarms(v: &SwarmsView, now: SystemTime) -> String {
    let mut out = String::new();
    if v.swarms.is_empty() {
        out.push_str("no swarms detected\n");
    } else {
        let mut t = Table::new(&[
            ("ID", Align::Right),
            ("STATE", Align::Left),
            ("SITE", Align::Left),
            ("MEMBERS", Align::Right),
            ("RULES", Align::Right),
            ("DROPPED", Align::Right),
            ("REQ/S", Align::Right),
            ("CONF", Align::Right),
            ("DETECTED", Align::Left),
            ("PAGES", Align::Left),
        ]);
        for s in &v.swarms {
            t.row(vec![
                s.id.to_string(),
                s.state.clone(),
                if s.sites.len() > 1 {
                    format!("{} +{}", s.site, s.sites.len() - 1)
                } else {
                    s.site.clone()
                },
                s.members.len().to_string(),
                s.rules.len().to_string(),
                fmt::si_u64(s.dropped),
                fmt::si(s.rate_rps),
                format!("{:.2}", s.confidence),
                fmt::relative(&s.detected, now),
                pages_line(s),
            ]);
        }
        out.push_str(&t.render());
    }
    out.push_str(&pipeline_line(&v.pipeline));
    out
}

fn render_swarm(s: &SwarmView, now: SystemTime) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "swarm {}: {}", s.id, s.state);
    let sites = if s.sites.is_empty() {
        s.site.clone()
    } else {
        s.sites.join(", ")
    };
    let _ = writeln!(o, "  site        {sites}");
    let _ = writeln!(o, "  seen in     {}", basis_line(&s.basis));
    for (i, p) in s.pages.iter().enumerate() {
        let label = if i == 0 { "pages" } else { "" };
        let _ = writeln!(o, "  {label:<10}  {}", page_name(s, p));
    }
    let _ = writeln!(
        o,
        "  onset       {} ({})",
        s.onset,
        fmt::relative(&s.onset, now)
    );
    let _ = writeln!(
        o,
        "  detected    {} ({})",
        s.detected,
        fmt::relative(&s.detected, now)
    );
    if let (Some(at), Some(ms)) = (&s.blocked_at, s.time_to_block_ms) {
        let since_onset = s
            .onset_to_block_ms
            .map(|o| format!(", {:.1} s after onset", o as f64 / 1000.0))
            .unwrap_or_default();
        let _ = writeln!(
            o,
            "  blocked     {at} ({ms} ms after detection{since_onset})"
        );
    }
    let _ = writeln!(
        o,
        "  rate        {} {} (at its strongest {}); confidence {:.2}; impact preview {:.1}% of legitimate requests",
        fmt::si(s.rate_rps),
        if s.basis == "handshakes" {
            "new TLS connections/s to the name"
        } else {
            "req/s to its pages"
        },
        fmt::si(s.peak_rps),
        s.confidence,
        s.impact * 100.0
    );
    let _ = writeln!(
        o,
        "  rules       {} in force{}, {} packets dropped; {} pushed in all",
        s.rules.len(),
        if s.rules.is_empty() {
            String::new()
        } else {
            format!(" (ids {})", id_ranges(&s.rules))
        },
        fmt::si_u64(s.dropped),
        s.rules_pushed
    );
    if !s.changes.is_empty() {
        let ids: Vec<String> = s.changes.iter().map(u64::to_string).collect();
        let _ = writeln!(
            o,
            "  changes     {} (revert with `swarmwall rules undo {}`)",
            ids.join(", "),
            ids.last().map_or("ID", String::as_str)
        );
    }
    let _ = writeln!(o, "  evidence");
    for e in &s.evidence {
        let _ = writeln!(o, "    - {e}");
    }
    o.push_str(&ja4_lines(s));
    let _ = writeln!(
        o,
        "  members     {} ({} active at the last tick)",
        s.members.len(),
        s.active
    );
    let width = s.members.iter().map(String::len).max().unwrap_or(0) + 2;
    let per_line = (96 / width).max(1);
    for chunk in s.members.chunks(per_line) {
        let cells: Vec<String> = chunk.iter().map(|m| format!("{m:<width$}")).collect();
        let _ = writeln!(o, "    {}", cells.concat().trim_end());
    }
    if !s.planned.is_empty() {
        let _ = writeln!(
            o,
            "  planned     {} rules, not pushed (observe mode; `swarmwall mode enforce` pushes them)",
            s.planned.len()
        );
        for p in &s.planned {
            let _ = writeln!(
                o,
                "    {}  {}  ttl {}",
                p.target,
                fmt::scope(&p.scope),
                fmt::short_duration(Duration::from_secs(p.ttl_s))
            );
        }
    }
    if !s.refused.is_empty() {
        let _ = writeln!(o, "  refused by the guards");
        for r in &s.refused {
            let _ = writeln!(o, "    {}: {}", r.target, r.why);
        }
    }
    o
}

/// The members' TLS fingerprints, one per line with its share; nothing when no member's
/// ClientHello was seen.
fn ja4_lines(s: &SwarmView) -> String {
    let mut o = String::new();
    for (i, j) in s.ja4.iter().enumerate() {
        let label = if i == 0 { "ja4" } else { "" };
        let _ = writeln!(
            o,
            "  {label:<10}  {}  {:.0}% of members",
            j.fingerprint,
            j.share * 100.0
        );
    }
    o
}

/// `1-40, 45, 47-48`: rule ids, compactly.
fn id_ranges(ids: &[u64]) -> String {
    let mut sorted = ids.to_vec();
    sorted.sort_unstable();
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i];
        let mut end = start;
        while i + 1 < sorted.len() && sorted[i + 1] == end + 1 {
            i += 1;
            end = sorted[i];
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    parts.join(", ")
}
