//! `allow`, `mode` and `rules`: the allow list, the mode and the journal of changes.

use std::time::SystemTime;

use anyhow::Result;
use swarmwall::api::{
    client::{Client, history_path},
    types::{AllowRequest, AllowView, ChangeView, ModeView},
};

use super::{print_change, print_json, print_raw};
use crate::cli::{
    AllowCommand, ModeArg, ModeArgs, RulesCommand, emit,
    fmt::{self, Align, Table},
};

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
        RulesCommand::Repair(args) => crate::cli::repair::run(args, None),
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
