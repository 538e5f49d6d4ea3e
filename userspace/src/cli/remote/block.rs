//! `block`: adding, importing, deleting, listing and testing rules.

use std::{fmt::Write as _, io::Read as _, path::Path, time::SystemTime};

use anyhow::{Context as _, Result};
use serde::Serialize;
use swarmwall::{
    Target,
    api::{
        client::Client,
        types::{
            AddRules, DeleteRules, NewRule, RuleView, RulesPreview, RulesQuery, ScopeView,
            VerdictQuery, VerdictView,
        },
    },
};

use super::{print_change, print_json, print_raw};
use crate::cli::{
    BlockCommand, BlockDel, BlockList, BlockTest, Origin, Refused, RuleOpts, RuleRef, emit,
    fmt::{self, Align, Table},
};

pub async fn block(client: &Client, cmd: BlockCommand) -> Result<()> {
    match cmd {
        BlockCommand::Add(a) => {
            let rules = a.targets.iter().map(|t| new_rule(*t, &a.opts)).collect();
            add(client, &add_request(rules, &a.opts, None), a.opts.json).await
        }
        BlockCommand::Import(a) => {
            let (text, name) = read_list(&a.file)?;
            let targets = parse_list(&text).with_context(|| format!("reading {name}"))?;
            if targets.is_empty() {
                anyhow::bail!("{name} lists no addresses");
            }
            let rules = targets.iter().map(|t| new_rule(*t, &a.opts)).collect();
            let request = add_request(rules, &a.opts, Some(format!("import from {name}")));
            if a.dry_run {
                return preview(client, &request, a.opts.json).await;
            }
            add(client, &request, a.opts.json).await
        }
        BlockCommand::Del(d) => del(client, d).await,
        BlockCommand::List(l) => list(client, &l).await,
        BlockCommand::Test(t) => test(client, &t).await,
    }
}

/// `path?query` for a GET whose query is a wire type (fields left `None` are left out).
fn query_path<Q: Serialize>(path: &str, query: &Q) -> Result<String> {
    let q = serde_urlencoded::to_string(query).context("encoding the query")?;
    Ok(if q.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{q}")
    })
}

fn rules_query(l: &BlockList) -> RulesQuery {
    RulesQuery {
        target: l.target.map(|t| t.to_string()),
        origin: l.origin.map(|o| {
            match o {
                Origin::Swarm => "swarm",
                Origin::Admin => "admin",
            }
            .to_owned()
        }),
        actor: l.actor.clone(),
    }
}

async fn list(client: &Client, l: &BlockList) -> Result<()> {
    let path = query_path("/v1/rules", &rules_query(l))?;
    if l.json {
        return print_raw(client, &path).await;
    }
    let mut rules: Vec<RuleView> = client.get(&path).await?;
    rules.sort_by_key(|r| r.id);
    emit(&render_rules(&rules, SystemTime::now()))
}

/// The request that adds (or previews) `rules` with the options given; `--reason` wins over
/// `default_reason`.
fn add_request(rules: Vec<NewRule>, o: &RuleOpts, default_reason: Option<String>) -> AddRules {
    AddRules {
        rules,
        reason: o.reason.clone().or(default_reason),
        force: o.force,
    }
}

async fn preview(client: &Client, request: &AddRules, json: bool) -> Result<()> {
    let p: RulesPreview = client
        .send(hyper::Method::POST, "/v1/rules/preview", request)
        .await?;
    if json {
        return print_json(&p);
    }
    emit(&render_preview(&p, SystemTime::now()))
}

fn render_preview(p: &RulesPreview, now: SystemTime) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "dry run, nothing changed: would add {}, update {}, leave {} unchanged, refuse {}",
        p.added.len(),
        p.updated.len(),
        p.unchanged.len(),
        p.refused.len()
    );
    for u in &p.updated {
        let _ = writeln!(
            o,
            "  update  {} (rule {}): expires {} -> {}",
            u.target,
            u.id.map_or_else(|| "-".into(), |i| i.to_string()),
            fmt::expiry(u.previous_expires_at.as_deref(), now),
            fmt::expiry(u.expires_at.as_deref(), now)
        );
    }
    for r in &p.refused {
        let _ = writeln!(o, "  refuse  {}: {}", r.target, r.why);
    }
    if !p.refused.is_empty() {
        let _ = writeln!(
            o,
            "a refused rule fails the whole import; remove those lines (or fix the allow list) \
             first"
        );
    }
    o
}

async fn test(client: &Client, t: &BlockTest) -> Result<()> {
    // A port implies a transport protocol; the kernel sees one on every packet with a port.
    let proto = t.proto.or(t.port.map(|_| swarmwall::Proto::Tcp));
    let q = VerdictQuery {
        src: t.src.to_string(),
        dst: t.dst.map(|d| d.to_string()),
        proto: proto.map(|p| p.to_string()),
        port: t.port,
    };
    let path = query_path("/v1/verdict", &q)?;
    if t.json {
        return print_raw(client, &path).await;
    }
    let v: VerdictView = client.get(&path).await?;
    emit(&render_verdict(&q, &v, SystemTime::now()))
}

fn packet_text(q: &VerdictQuery) -> String {
    let mut s = format!("from {}", q.src);
    if let Some(d) = &q.dst {
        let _ = write!(s, " to {d}");
    }
    if let Some(p) = &q.proto {
        let _ = write!(s, " {p}");
    }
    if let Some(p) = q.port {
        let _ = write!(s, " port {p}");
    }
    s
}

fn rule_text(r: &RuleView, now: SystemTime) -> String {
    format!(
        "rule {} ({} {}, scope {}, expires {}, by {}{})",
        r.id,
        r.action,
        r.target,
        fmt::scope(&r.scope),
        fmt::expiry(r.expires_at.as_deref(), now),
        r.actor,
        r.reason
            .as_deref()
            .map(|x| format!(": {x}"))
            .unwrap_or_default()
    )
}

fn render_verdict(q: &VerdictQuery, v: &VerdictView, now: SystemTime) -> String {
    let mut o = String::new();
    let what = match (v.outcome.as_str(), &v.rule, &v.allowed_by) {
        ("allowed", _, Some(a)) => format!("pass: allow-listed ({a})"),
        ("passed", _, _) => "pass: no rule matches".to_owned(),
        (_, Some(r), _) => {
            let stage = v.stage.as_deref().unwrap_or("");
            let verb = if v.action == "drop" {
                "drop"
            } else {
                "pass, counted as would-have-dropped"
            };
            format!("{verb}: {} [{stage} lookup]", rule_text(r, now))
        }
        _ => format!("{}: {}", v.action, v.outcome),
    };
    let _ = writeln!(o, "a packet {}: {what}", packet_text(q));
    if let Some(e) = &v.in_enforce_mode {
        let _ = writeln!(
            o,
            "the daemon is in observe mode; in enforce mode it would {e}"
        );
    }
    if !v.unmatched.is_empty() {
        let _ = writeln!(
            o,
            "other rules for this source (their scope does not match):"
        );
        for r in &v.unmatched {
            let _ = writeln!(o, "  {}", rule_text(r, now));
        }
    }
    o
}

fn new_rule(target: Target, o: &RuleOpts) -> NewRule {
    NewRule {
        target: target.to_string(),
        action: Some(if o.observe { "observe" } else { "drop" }.into()),
        scope: ScopeView {
            dst: o.dst.map(|d| d.to_string()),
            proto: o.proto.map(|p| p.to_string()),
            port: o.port,
        },
        // Round up: a TTL never ends early.
        ttl_s: o.ttl.map(|d| d.as_secs() + u64::from(d.subsec_nanos() > 0)),
    }
}

async fn add(client: &Client, request: &AddRules, json: bool) -> Result<()> {
    let r = client.add_rules(request).await?;
    print_change(&r, json)
}

/// Reads a list file, or standard input for `-`; its text and a name for messages.
fn read_list(path: &Path) -> Result<(String, String)> {
    if path.as_os_str() == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading standard input")?;
        return Ok((s, "standard input".into()));
    }
    let s = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok((s, path.display().to_string()))
}

/// One address or prefix per line; `#` starts a comment; blank lines are skipped.
pub(super) fn parse_list(text: &str) -> Result<Vec<Target>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let t = line
            .parse::<Target>()
            .with_context(|| format!("line {}", i + 1))?;
        out.push(t);
    }
    Ok(out)
}

async fn del(client: &Client, d: BlockDel) -> Result<()> {
    let mut ids: Vec<u64> = Vec::new();
    let mut targets: Vec<Target> = Vec::new();
    for r in &d.ids {
        match r {
            RuleRef::Id(id) => ids.push(*id),
            RuleRef::Target(t) => targets.push(*t),
        }
    }
    ids.sort_unstable();
    ids.dedup();
    targets.sort_unstable();
    targets.dedup();
    if !d.yes && (d.all || ids.len() + targets.len() > 1 || !targets.is_empty()) {
        let n = if d.all {
            client.rules().await?.len()
        } else {
            // What the daemon will remove: the ids, and every rule whose target is exactly one
            // of the targets.
            let mut victims = ids.clone();
            for t in &targets {
                let q = RulesQuery {
                    target: Some(t.to_string()),
                    ..RulesQuery::default()
                };
                let rules: Vec<RuleView> = client.get(&query_path("/v1/rules", &q)?).await?;
                victims.extend(
                    rules
                        .iter()
                        .filter(|r| r.target.parse::<Target>().is_ok_and(|rt| rt == *t))
                        .map(|r| r.id),
                );
            }
            victims.sort_unstable();
            victims.dedup();
            victims.len()
        };
        if n <= 1 && !d.all {
            return del_now(client, ids, targets, d).await;
        }
        if n == 0 {
            return emit("no rules to delete\n");
        }
        return Err(Refused(format!(
            "this would delete {n} rule{}; rerun with --yes to confirm (it can be undone with \
             `swarmwall rules undo <change-id>`)",
            if n == 1 { "" } else { "s" }
        ))
        .into());
    }
    del_now(client, ids, targets, d).await
}

async fn del_now(client: &Client, ids: Vec<u64>, targets: Vec<Target>, d: BlockDel) -> Result<()> {
    let request = DeleteRules {
        ids,
        targets: targets.iter().map(Target::to_string).collect(),
        all: d.all,
        yes: d.yes,
        reason: d.reason,
    };
    let r = client.delete_rules(&request).await?;
    print_change(&r, d.json)
}

fn render_rules(rules: &[RuleView], now: SystemTime) -> String {
    if rules.is_empty() {
        return "no rules\n".into();
    }
    // Where each rule is enforced, only when somewhere besides XDP is (a firewall mirror).
    let where_column = rules
        .iter()
        .any(|r| r.enforced_by.iter().any(|e| e != "xdp"));
    let mut columns = vec![
        ("ID", Align::Right),
        ("TARGET", Align::Left),
        ("ACTION", Align::Left),
        ("SCOPE", Align::Left),
        ("EXPIRES", Align::Left),
        ("HITS", Align::Right),
        ("DROPPED", Align::Right),
    ];
    if where_column {
        columns.push(("ENFORCED", Align::Left));
    }
    columns.push(("REASON", Align::Left));
    let mut t = Table::new(&columns);
    for r in rules {
        let mut row = vec![
            r.id.to_string(),
            r.target.clone(),
            r.action.clone(),
            fmt::scope(&r.scope),
            fmt::expiry(r.expires_at.as_deref(), now),
            fmt::si_u64(r.hits),
            fmt::si_u64(r.dropped),
        ];
        if where_column {
            row.push(if r.enforced_by.is_empty() {
                "-".into()
            } else {
                r.enforced_by.join("+")
            });
        }
        row.push(fmt::or_dash(r.reason.as_deref()));
        t.row(row);
    }
    t.render()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn lists_parse_with_comments_and_line_numbers() {
        let text = "# feed\n192.0.2.7\n\n  198.51.100.0/24  # a comment\n2001:db8::1\n";
        let t = parse_list(text).unwrap();
        assert_eq!(t.len(), 3);
        assert_eq!(t[1].to_string(), "198.51.100.0/24");
        let e = parse_list("192.0.2.7\nnot-an-ip\n").unwrap_err();
        assert!(format!("{e:#}").starts_with("line 2: "), "{e:#}");
    }

    #[test]
    fn rule_table() {
        let now = fmt::parse_time("2026-05-20T12:00:00Z").unwrap();
        let r = RuleView {
            id: 3,
            target: "192.0.2.7".into(),
            action: "drop".into(),
            scope: ScopeView {
                dst: None,
                proto: Some("tcp".into()),
                port: Some(443),
            },
            expires_at: Some("2026-05-20T12:09:58Z".into()),
            created_at: "2026-05-20T11:59:58Z".into(),
            actor: "uid 0".into(),
            reason: Some("scraper".into()),
            hits: 1500,
            dropped: 1500,
            dropped_bytes: 90_000,
            enforced_by: vec!["xdp".into()],
        };
        let text = render_rules(&[r], now);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "ID  TARGET     ACTION  SCOPE    EXPIRES   HITS  DROPPED  REASON"
        );
        assert_eq!(
            lines[1],
            " 3  192.0.2.7  drop    tcp/443  in 9m58s  1.5k     1.5k  scraper"
        );
    }

    #[test]
    fn rule_table_says_where_rules_are_enforced_once_a_firewall_mirrors_them() {
        let now = fmt::parse_time("2026-05-20T12:00:00Z").unwrap();
        let rule = |id: u64, by: &[&str]| RuleView {
            id,
            target: format!("192.0.2.{id}"),
            action: "drop".into(),
            scope: ScopeView::default(),
            expires_at: None,
            created_at: "2026-05-20T11:59:58Z".into(),
            actor: "uid 0".into(),
            reason: None,
            hits: 0,
            dropped: 0,
            dropped_bytes: 0,
            enforced_by: by.iter().map(|s| s.to_string()).collect(),
        };
        let text = render_rules(&[rule(1, &["xdp", "nftables"]), rule(2, &["xdp"])], now);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].contains("DROPPED  ENFORCED      REASON"), "{text}");
        assert!(lines[1].contains("xdp+nftables"), "{text}");
        assert!(lines[2].contains(" xdp "), "{text}");
        let only_xdp = render_rules(&[rule(2, &["xdp"])], now);
        assert!(!only_xdp.contains("ENFORCED"), "{only_xdp}");
    }

    #[test]
    fn ttl_rounds_up() {
        let o = RuleOpts {
            ttl: Some(Duration::from_millis(1500)),
            dst: None,
            port: None,
            proto: None,
            observe: true,
            reason: None,
            force: false,
            json: false,
        };
        let r = new_rule("192.0.2.7".parse().unwrap(), &o);
        assert_eq!(r.ttl_s, Some(2));
        assert_eq!(r.action.as_deref(), Some("observe"));
    }
}
