//! `status` and `top`: the daemon's state and the busiest sources.

use std::{fmt::Write as _, time::Duration};

use anyhow::Result;
use swarmwall::api::{
    client::{Client, top_path},
    types::{FirewallView, Status, SwarmsView, TopQuery, TopView},
};

use super::print_raw;
use crate::cli::{
    TopArgs, emit,
    fmt::{self, Align, Table},
};

pub async fn status(client: &Client, json: bool) -> Result<()> {
    if json {
        return print_raw(client, "/v1/status").await;
    }
    let status = client.status().await?;
    // An older daemon without /v1/swarms still gets its status shown.
    let swarms = client.swarms().await.ok();
    emit(&render_status(&status, swarms.as_ref()))
}

fn render_status(s: &Status, swarms: Option<&SwarmsView>) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "swarmwall {} (ABI {}), up {}",
        s.version,
        s.abi,
        fmt::short_duration(Duration::from_secs(s.uptime_s))
    );
    let ifaces = if s.interfaces.is_empty() {
        "none".to_string()
    } else {
        s.interfaces
            .iter()
            .map(|i| format!("{} ({})", i.name, i.mode))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let adopted = if s.adopted {
        " (adopted from an earlier daemon)"
    } else {
        ""
    };
    let _ = writeln!(o, "mode:        {}", s.mode);
    let _ = writeln!(o, "interfaces:  {ifaces}");
    let _ = writeln!(
        o,
        "rules:       {} exact, {} prefix",
        s.rules.exact, s.rules.prefix
    );
    let _ = writeln!(o, "allow list:  {} entries", s.allow);
    if let Some(v) = swarms {
        let blocked = v.swarms.iter().filter(|s| s.state == "blocked").count();
        let line = if let Some(e) = &v.pipeline.error {
            format!("detection stopped: {e}")
        } else if v.pipeline.enabled {
            format!(
                "{} detected, {blocked} blocked now (`swarmwall swarms`)",
                v.swarms.len()
            )
        } else {
            "detection off ([swarm] enabled = false)".into()
        };
        let _ = writeln!(o, "swarms:      {line}");
        for src in &v.pipeline.sources {
            let _ = writeln!(o, "source:      {}", super::swarms::source_line(src));
        }
    }
    if let Some(f) = &s.firewall {
        let _ = writeln!(o, "firewall:    {}", firewall_line(f));
    }
    let _ = writeln!(o, "pinned at:   {}{adopted}", s.pin_dir);
    for w in &s.warnings {
        let _ = writeln!(o, "warning:     {w}");
    }
    if !s.stats.is_empty() {
        let _ = writeln!(o, "counters:");
        let w = s.stats.keys().map(String::len).max().unwrap_or(0);
        for (k, v) in &s.stats {
            let _ = writeln!(o, "  {k:<w$}  {v:>14}");
        }
    }
    o
}

/// `nftables mirror, table inet swarmwall: 12 elements, in sync (drift 0, checked 40s ago)`.
fn firewall_line(f: &FirewallView) -> String {
    let checked = f
        .reconciled_s_ago
        .map(|s| {
            format!(
                ", checked {} ago",
                fmt::short_duration(Duration::from_secs(s))
            )
        })
        .unwrap_or_default();
    if f.healthy {
        format!(
            "{} {}, table {}: {} elements, drift {} at the last reconcile{checked}",
            f.backend, f.role, f.table, f.elements, f.drift
        )
    } else {
        format!(
            "{} {}, table {}: UNHEALTHY (XDP still enforces; retrying): {}",
            f.backend, f.role, f.table, f.detail
        )
    }
}

pub(in crate::cli) fn top_query(args: &TopArgs) -> TopQuery {
    TopQuery {
        by: Some(args.by.as_str().into()),
        window_s: Some(args.window.as_secs()),
        limit: Some(args.limit),
    }
}

pub async fn top(client: &Client, args: &TopArgs) -> Result<()> {
    let q = top_query(args);
    if args.json {
        return print_raw(client, &top_path(&q)).await;
    }
    let view = client.top(&q).await?;
    let mut text = String::new();
    for l in top_lines(&view) {
        let _ = writeln!(text, "{l}");
    }
    emit(&text)
}

/// The `top` header and table, shared with `--watch`.
pub(in crate::cli) fn top_lines(v: &TopView) -> Vec<String> {
    let mut lines = vec![format!(
        "{} of {} tracked sources by {} over {}s",
        v.sources.len(),
        v.tracked,
        v.by,
        fmt::si(v.window_s)
    )];
    let mut t = Table::new(&[
        ("SOURCE", Align::Left),
        ("PPS", Align::Right),
        ("BITS/S", Align::Right),
        ("DROP/S", Align::Right),
        ("PACKETS", Align::Right),
        ("BYTES", Align::Right),
        ("DROPPED", Align::Right),
        ("RULES", Align::Left),
    ]);
    for s in &v.sources {
        let rules = if s.rules.is_empty() {
            "-".to_string()
        } else {
            s.rules
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(",")
        };
        t.row(vec![
            s.addr.clone(),
            fmt::si(s.pps),
            fmt::si(s.bps),
            fmt::si(s.drop_pps),
            fmt::si_u64(s.packets),
            fmt::si_u64(s.bytes),
            fmt::si_u64(s.dropped),
            rules,
        ]);
    }
    lines.extend(t.lines());
    lines
}
