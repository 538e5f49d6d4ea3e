//! Client commands: each is one or two API calls and a rendering of the answer.

use std::{
    fmt::Write as _,
    io::Read as _,
    path::Path,
    time::{Duration, SystemTime},
};

use anyhow::{Context as _, Result};
use serde::Serialize;
use swarmwall::{
    Target,
    api::{
        client::{Client, history_path, top_path},
        types::{
            AddRules, AllowRequest, AllowView, ChangeResult, ChangeView, DeleteRules, ModeView,
            NewRule, PipelineView, RuleView, ScopeView, Status, SwarmView, SwarmsView, TopQuery,
            TopView,
        },
    },
};

use swarmwall::api::types::{
    PardonRequest, PardonResult, RulesPreview, RulesQuery, VerdictQuery, VerdictView,
};

use super::{
    AllowCommand, BlockCommand, BlockDel, BlockList, BlockTest, ModeArg, ModeArgs, Origin, Refused,
    RuleOpts, RuleRef, RulesCommand, SwarmsArgs, SwarmsCommand, TopArgs, emit,
    fmt::{self, Align, Table},
};

/// Prints any API answer as indented JSON.
fn print_json<T: Serialize>(value: &T) -> Result<()> {
    emit(&format!("{}\n", serde_json::to_string_pretty(value)?))
}

/// Fetches a route's raw JSON and prints it: `--json` shows exactly what the daemon said,
/// including fields this CLI doesn't know.
async fn print_raw(client: &Client, path: &str) -> Result<()> {
    let value: serde_json::Value = client.get(path).await?;
    print_json(&value)
}

/// Reports a change: its summary and how to undo it.
fn print_change(r: &ChangeResult, json: bool) -> Result<()> {
    if json {
        return print_json(r);
    }
    if r.change_id == 0 {
        // Nothing was committed (every rule already as asked): nothing to undo.
        return emit(&format!("{}\n", r.summary));
    }
    emit(&format!(
        "{} (change {id}; undo with `swarmwall rules undo {id}`)\n",
        r.summary,
        id = r.change_id
    ))
}

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

pub(super) fn top_query(args: &TopArgs) -> TopQuery {
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
pub(super) fn top_lines(v: &TopView) -> Vec<String> {
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

pub async fn block(client: &Client, cmd: BlockCommand) -> Result<()> {
    match cmd {
        BlockCommand::Add(a) => {
            let rules = a.targets.iter().map(|t| new_rule(*t, &a.opts)).collect();
            add(client, rules, &a.opts, None).await
        }
        BlockCommand::Import(a) => {
            let (text, name) = read_list(&a.file)?;
            let targets = parse_list(&text).with_context(|| format!("reading {name}"))?;
            if targets.is_empty() {
                anyhow::bail!("{name} lists no addresses");
            }
            let rules = targets.iter().map(|t| new_rule(*t, &a.opts)).collect();
            let reason = Some(format!("import from {name}"));
            if a.dry_run {
                return preview(client, rules, &a.opts, reason).await;
            }
            add(client, rules, &a.opts, reason).await
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

async fn preview(
    client: &Client,
    rules: Vec<NewRule>,
    o: &RuleOpts,
    default_reason: Option<String>,
) -> Result<()> {
    let request = AddRules {
        rules,
        reason: o.reason.clone().or(default_reason),
        force: o.force,
    };
    let p: RulesPreview = client
        .send(hyper::Method::POST, "/v1/rules/preview", &request)
        .await?;
    if o.json {
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

async fn add(
    client: &Client,
    rules: Vec<NewRule>,
    o: &RuleOpts,
    default_reason: Option<String>,
) -> Result<()> {
    let request = AddRules {
        rules,
        reason: o.reason.clone().or(default_reason),
        force: o.force,
    };
    let r = client.add_rules(&request).await?;
    print_change(&r, o.json)
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
    let mut t = Table::new(&[
        ("ID", Align::Right),
        ("TARGET", Align::Left),
        ("ACTION", Align::Left),
        ("SCOPE", Align::Left),
        ("EXPIRES", Align::Left),
        ("HITS", Align::Right),
        ("DROPPED", Align::Right),
        ("REASON", Align::Left),
    ]);
    for r in rules {
        t.row(vec![
            r.id.to_string(),
            r.target.clone(),
            r.action.clone(),
            fmt::scope(&r.scope),
            fmt::expiry(r.expires_at.as_deref(), now),
            fmt::si_u64(r.hits),
            fmt::si_u64(r.dropped),
            fmt::or_dash(r.reason.as_deref()),
        ]);
    }
    t.render()
}

pub async fn allow(client: &Client, cmd: AllowCommand) -> Result<()> {
    match cmd {
        AllowCommand::Add(a) => {
            let request = AllowRequest {
                target: a.target.to_string(),
                reason: a.reason,
            };
            print_change(&client.allow_add(&request).await?, a.json)
        }
        AllowCommand::Del(a) => {
            let request = AllowRequest {
                target: a.target.to_string(),
                reason: a.reason,
            };
            print_change(&client.allow_delete(&request).await?, a.json)
        }
        AllowCommand::List { json } => {
            if json {
                return print_raw(client, "/v1/allow").await;
            }
            emit(&render_allow(
                &client.allow_list().await?,
                SystemTime::now(),
            ))
        }
    }
}

fn render_allow(entries: &[AllowView], now: SystemTime) -> String {
    if entries.is_empty() {
        return "the allow list is empty\n".into();
    }
    let mut t = Table::new(&[
        ("TARGET", Align::Left),
        ("ADDED", Align::Left),
        ("BY", Align::Left),
        ("REASON", Align::Left),
    ]);
    for e in entries {
        t.row(vec![
            e.target.clone(),
            if e.from_config {
                "config".into()
            } else {
                fmt::relative(&e.created_at, now)
            },
            e.actor.clone(),
            fmt::or_dash(e.reason.as_deref()),
        ]);
    }
    t.render()
}

pub async fn mode(client: &Client, a: ModeArgs) -> Result<()> {
    let Some(m) = a.mode else {
        if a.json {
            return print_raw(client, "/v1/mode").await;
        }
        return emit(&format!("{}\n", client.mode().await?.mode));
    };
    let request = ModeView {
        mode: match m {
            ModeArg::Enforce => "enforce",
            ModeArg::Observe => "observe",
        }
        .into(),
        reason: a.reason,
    };
    print_change(&client.set_mode(&request).await?, a.json)
}

pub async fn rules(client: &Client, cmd: RulesCommand) -> Result<()> {
    match cmd {
        RulesCommand::History { limit, json } => {
            if json {
                return print_raw(client, &history_path(Some(limit))).await;
            }
            emit(&render_history(
                &client.history(Some(limit)).await?,
                SystemTime::now(),
            ))
        }
        RulesCommand::Undo { change_id, json } => {
            let r = client.undo(change_id).await?;
            if json {
                return print_json(&r);
            }
            emit(&format!("{} (change {})\n", r.summary, r.change_id))
        }
        // Local, and dispatched before a client exists; here for completeness.
        RulesCommand::Repair(args) => super::repair::run(args, None),
    }
}

fn render_history(changes: &[ChangeView], now: SystemTime) -> String {
    if changes.is_empty() {
        return "no changes yet\n".into();
    }
    let mut t = Table::new(&[
        ("ID", Align::Right),
        ("WHEN", Align::Left),
        ("ACTOR", Align::Left),
        ("OPS", Align::Right),
        ("UNDO", Align::Left),
        ("REASON", Align::Left),
        ("SUMMARY", Align::Left),
    ]);
    for c in changes {
        let undo = match (c.undoes, c.undone_by) {
            (_, Some(by)) => format!("undone by {by}"),
            (Some(of), None) => format!("undoes {of}"),
            (None, None) => "-".into(),
        };
        t.row(vec![
            c.id.to_string(),
            fmt::relative(&c.time, now),
            c.actor.clone(),
            c.ops.to_string(),
            undo,
            fmt::or_dash(c.reason.as_deref()),
            c.summary.clone(),
        ]);
    }
    t.render()
}

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
    let pages: Vec<String> = s
        .pages
        .iter()
        .map(|p| format!("{}{}", p.host.as_deref().unwrap_or(""), p.path))
        .collect();
    pages.join(", ")
}

fn pipeline_line(p: &PipelineView) -> String {
    if let Some(e) = &p.error {
        return format!("swarm detection stopped: {e}; rules already pushed stay in force\n");
    }
    if !p.enabled {
        return "swarm detection is off ([swarm] enabled = false in the config)\n".into();
    }
    format!(
        "pipeline: {} samples, {} requests, {} sources tracked; dropped: {} queue overflow, \
         {} skipped and {} lost in the kernel\n",
        fmt::si_u64(p.samples),
        fmt::si_u64(p.requests),
        fmt::si_u64(p.tracked_sources),
        fmt::si_u64(p.queue_overflow),
        fmt::si_u64(p.kernel_skipped),
        fmt::si_u64(p.kernel_lost),
    )
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
    for (i, p) in s.pages.iter().enumerate() {
        let label = if i == 0 { "pages" } else { "" };
        let _ = writeln!(
            o,
            "  {label:<10}  {}{}",
            p.host.as_deref().unwrap_or(""),
            p.path
        );
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
        "  rate        {} req/s to its pages; confidence {:.2}; impact preview {:.1}% of \
         legitimate requests",
        fmt::si(s.rate_rps),
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

#[cfg(test)]
mod tests {
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
