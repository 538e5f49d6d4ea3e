//! `swarmwall rules repair`: examine and mend a damaged rule journal, with the daemon stopped.
//!
//! The daemon refuses to start on a journal damaged anywhere but its last line (see
//! [`swarmwall::store`]); this is the explicit way out. It works on the files directly, so it
//! takes the store's lock: while a daemon has the store open it refuses.

use std::{collections::BTreeSet, path::PathBuf};

use anyhow::{Context as _, Result};
use serde_json::json;
use swarmwall::store::{self, Repair, StoreError};

use super::{Refused, config_cmd::ClientConfig};

/// Options of `swarmwall rules repair`.
#[derive(Clone, Debug, clap::Args)]
pub struct RepairArgs {
    /// The rule store's directory [default: the config file's state_dir, else
    /// /var/lib/swarmwall].
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Drop this line (1-based, as the daemon's refusal names it) and keep every other line;
    /// repeat it for several. The lines left must replay as a consistent history.
    #[arg(long, value_name = "N", conflicts_with = "keep_valid_prefix")]
    pub drop_line: Vec<usize>,
    /// Keep only the lines before the first damaged one (and set the snapshot aside). The
    /// changes after it are lost: needs --yes.
    #[arg(long)]
    pub keep_valid_prefix: bool,
    /// Confirm --keep-valid-prefix.
    #[arg(long)]
    pub yes: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Runs `swarmwall rules repair`; `file` is the configuration file's settings, read when
/// `--state-dir` is not given.
pub fn run(args: RepairArgs, file: Option<&ClientConfig>) -> Result<()> {
    let dir = args
        .state_dir
        .clone()
        .or_else(|| file.map(|f| f.state_dir.clone()))
        .unwrap_or_else(|| swarmwall::daemon::config::Config::default().state_dir);
    let how = if args.keep_valid_prefix {
        if !args.yes {
            return Err(Refused(
                "--keep-valid-prefix drops every change after the first damaged line; run \
                 `swarmwall rules repair` to see what that is, then add --yes"
                    .into(),
            )
            .into());
        }
        Repair::KeepValidPrefix
    } else if !args.drop_line.is_empty() {
        Repair::DropLines(args.drop_line.iter().copied().collect::<BTreeSet<_>>())
    } else {
        Repair::Diagnose
    };
    let actor = format!("uid {} (swarmwall rules repair)", nix::unistd::getuid());
    let out = match store::repair(&dir, &how, &actor) {
        Err(StoreError::Locked { path }) => anyhow::bail!(
            "a swarmwall daemon has the rule store {} open; stop it first (the store is only \
             repaired while nothing uses it)",
            path.display()
        ),
        r => r.with_context(|| format!("repairing the rule store in {}", dir.display()))?,
    };
    let d = &out.before;
    if args.json {
        let v = json!({
            "journal": d.journal,
            "lines": d.lines,
            "valid_changes": d.valid_changes,
            "fault": d.fault.as_ref().map(|(line, why, torn)| json!({
                "line": line, "why": why, "torn_tail": torn,
            })),
            "refused": d.refusal.as_ref().map(|r| r.to_string()),
            "repaired": out.change.as_ref().map(|c| json!({
                "change_id": c.id,
                "summary": store::Store::summary(c),
                "original": out.original,
                "rules": out.rules,
            })),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else if let Some(c) = &out.change {
        println!(
            "{} (change {}); {} in force; the journal as it was is kept as {}",
            store::Store::summary(c),
            c.id,
            match out.rules {
                1 => "1 rule".to_owned(),
                n => format!("{n} rules"),
            },
            out.original
                .as_ref()
                .map_or(String::new(), |p| p.display().to_string())
        );
    } else {
        match (&d.refusal, &d.fault) {
            (Some(r), _) => println!("{r}"),
            (None, Some((line, why, _))) => println!(
                "{}: line {line}, the last, is unreadable ({why}), as a crash while writing \
                 leaves it; the daemon drops it at start (its change was never acknowledged) \
                 and keeps the {} before it",
                d.journal.display(),
                d.valid_changes
            ),
            (None, None) => println!(
                "{}: {} lines, {} changes, all valid; {} rules in force; nothing to repair",
                d.journal.display(),
                d.lines,
                d.valid_changes,
                d.rules
            ),
        }
    }
    // A diagnosis that finds a store the daemon would refuse fails, so scripts notice.
    if out.change.is_none() && d.refusal.is_some() {
        std::process::exit(1);
    }
    Ok(())
}
