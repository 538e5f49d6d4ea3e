//! `cargo xtask scenarios`: writes the traffic scenarios of
//! [`swarmwall_integration::scenarios`] as pcaps with their ground-truth labels, to try
//! `swarmwall analyze` on or to test it against.
//!
//! Nothing here needs root, the network or the eBPF toolchain: it only writes files.

use std::{
    env, fs,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result};
use swarmwall_integration::scenarios::{self, Scenario};

use crate::cmd::workspace_root;

/// Options of `cargo xtask scenarios`.
#[derive(Debug, Clone, clap::Args)]
pub struct ScenariosArgs {
    /// Directory to write `<name>.pcap` and `<name>.pcap.labels.json` into (created if missing).
    /// Default: `scenarios` in cargo's target directory.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Seed of the generator: the same seed writes the same bytes.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub seed: u64,
    /// Write only this scenario: browsing, swarm, flash-crowd, nat, crawler or multi-tenant.
    #[arg(long, value_name = "NAME", value_parser = parse_scenario)]
    pub only: Option<Scenario>,
}

fn parse_scenario(s: &str) -> Result<Scenario, String> {
    s.parse().map_err(|e: anyhow::Error| e.to_string())
}

/// Writes the scenarios, one line each: file, requests, SYNs, swarm members, size.
pub fn scenarios(args: &ScenariosArgs) -> Result<()> {
    let out = args.out.clone().unwrap_or_else(default_out);
    fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let chosen: Vec<Scenario> = match args.only {
        Some(s) => vec![s],
        None => Scenario::all().to_vec(),
    };
    let mut example = None;
    for s in chosen {
        let pcap = out.join(format!("{}.pcap", s.name()));
        let labels = scenarios::write(s, args.seed, &pcap)?;
        let bytes = fs::metadata(&pcap)
            .with_context(|| format!("reading {}", pcap.display()))?
            .len();
        println!("{}", summary(&pcap, &labels, bytes));
        // Suggest a pcap with a swarm in it, if one was written.
        if example.is_none() && s.has_swarm() {
            example = Some(pcap);
        }
    }
    println!(
        "labels: <file>.labels.json next to each pcap (seed {})",
        args.seed
    );
    if let Some(pcap) = example {
        println!("try: swarmwall analyze {}", pcap.display());
    }
    Ok(())
}

/// `target/scenarios`, wherever cargo's target directory is.
fn default_out() -> PathBuf {
    env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|t| {
            if t.is_relative() {
                workspace_root().join(t)
            } else {
                t
            }
        })
        .unwrap_or_else(|| workspace_root().join("target"))
        .join("scenarios")
}

fn summary(pcap: &Path, labels: &scenarios::Labels, bytes: u64) -> String {
    let span = labels.last_us.saturating_sub(labels.first_us) / 1_000_000;
    let mut line = format!(
        "{}  {} requests, {} SYNs, {} swarm members, {} legitimate sources, {span} s, {:.1} MB",
        pcap.display(),
        labels.requests,
        labels.syns,
        labels.swarm_members.len(),
        labels.legitimate.len(),
        bytes as f64 / 1e6,
    );
    if let (Some(host), Some(addr)) = (&labels.attacked_host, labels.attacked_site) {
        line.push_str(&format!(
            "; attacks {host} ({addr}) {}",
            labels.attacked_pages.join(" ")
        ));
    }
    line
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::{Cli, Commands};

    #[test]
    fn parses_options_and_rejects_unknown_scenarios() {
        let cli = Cli::try_parse_from(["cargo xtask", "scenarios"]).unwrap();
        match cli.command {
            Commands::Scenarios(args) => {
                assert_eq!((args.out, args.seed, args.only), (None, 1, None));
            }
            other => panic!("parsed as {other:?}"),
        }
        let cli = Cli::try_parse_from([
            "cargo xtask",
            "scenarios",
            "--out",
            "/tmp/x",
            "--seed",
            "9",
            "--only",
            "FlashCrowd",
        ])
        .unwrap();
        match cli.command {
            Commands::Scenarios(args) => {
                assert_eq!(args.out.as_deref(), Some(Path::new("/tmp/x")));
                assert_eq!((args.seed, args.only), (9, Some(Scenario::FlashCrowd)));
            }
            other => panic!("parsed as {other:?}"),
        }
        let bad = Cli::try_parse_from(["cargo xtask", "scenarios", "--only", "ddos"]);
        assert!(bad.is_err());
    }

    #[test]
    fn default_out_is_in_the_target_directory() {
        assert!(default_out().ends_with("scenarios"));
    }
}
