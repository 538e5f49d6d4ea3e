//! `cargo xtask scenarios`: writes the traffic scenarios of
//! [`swarmwall_integration::scenarios`] as pcaps and access logs, and those of
//! [`swarmwall_integration::https_scenarios`] as pcaps of TLS handshakes, each with its
//! ground-truth labels, to try `swarmwall analyze` on or to test it against.
//!
//! Nothing here needs root, the network or the eBPF toolchain: it only writes files.

use std::{
    env, fs,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result};
use swarmwall_integration::{
    https_scenarios::{self, HttpsScenario},
    scenarios::{self, COMBINED_WITH_SERVER, LogLayout, Scenario},
};

use crate::cmd::workspace_root;

/// Options of `cargo xtask scenarios`.
#[derive(Debug, Clone, clap::Args)]
pub struct ScenariosArgs {
    /// Directory to write `<name>.pcap`, `<name>.access.log` and their `.labels.json` into
    /// (created if missing). Default: `scenarios` in cargo's target directory.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Seed of the generator: the same seed writes the same bytes.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub seed: u64,
    /// Write only this scenario: browsing, swarm, flash-crowd, nat, crawler, multi-tenant,
    /// wide-swarm, browser-swarm, browser-swarm-rotating, https-browsing, https-swarm,
    /// https-flash-crowd or https-nat.
    #[arg(long, value_name = "NAME", value_parser = parse_scenario)]
    pub only: Option<Chosen>,
}

/// A scenario of either kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chosen {
    /// HTTP: a pcap and an access log.
    Http(Scenario),
    /// HTTPS handshakes: a pcap.
    Https(HttpsScenario),
}

fn parse_scenario(s: &str) -> Result<Chosen, String> {
    if let Ok(h) = s.parse::<HttpsScenario>() {
        return Ok(Chosen::Https(h));
    }
    s.parse().map(Chosen::Http).map_err(|e: anyhow::Error| {
        let https: Vec<_> = HttpsScenario::all().iter().map(|s| s.name()).collect();
        format!("{e}, {}", https.join(", "))
    })
}

/// Writes the scenarios, one line per file: file, requests (or handshakes), SYNs, swarm
/// members, size.
pub fn scenarios(args: &ScenariosArgs) -> Result<()> {
    let out = args.out.clone().unwrap_or_else(default_out);
    fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let (http, https): (Vec<Scenario>, Vec<HttpsScenario>) = match args.only {
        Some(Chosen::Http(s)) => (vec![s], Vec::new()),
        Some(Chosen::Https(s)) => (Vec::new(), vec![s]),
        None => (Scenario::all().to_vec(), HttpsScenario::all().to_vec()),
    };
    let mut example = None;
    let mut example_log = None;
    for s in http {
        let pcap = out.join(format!("{}.pcap", s.name()));
        let labels = scenarios::write(s, args.seed, &pcap)?;
        println!("{}", summary(&pcap, &labels, size(&pcap)?));
        let log = out.join(format!("{}.access.log", s.name()));
        let labels =
            scenarios::write_access_log(s, args.seed, LogLayout::CombinedWithServer, &log)?;
        println!("{}", summary(&log, &labels, size(&log)?));
        // Suggest files with a swarm in them, if one was written.
        if example.is_none() && s.has_swarm() {
            example = Some(pcap);
            example_log = Some(log);
        }
    }
    for s in https {
        let pcap = out.join(format!("{}.pcap", s.name()));
        let labels = https_scenarios::write_https(s, args.seed, &pcap)?;
        println!("{}", summary(&pcap, &labels, size(&pcap)?));
        if example.is_none() && s.has_swarm() {
            example = Some(pcap);
        }
    }
    println!(
        "labels: <file>.labels.json next to each file (seed {})",
        args.seed
    );
    if let Some(pcap) = example {
        println!("try: swarmwall analyze {}", pcap.display());
    }
    if let Some(log) = example_log {
        println!(
            "try: swarmwall analyze --format '{COMBINED_WITH_SERVER}' {}",
            log.display()
        );
    }
    Ok(())
}

fn size(path: &Path) -> Result<u64> {
    Ok(fs::metadata(path)
        .with_context(|| format!("reading {}", path.display()))?
        .len())
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
    let what = if labels.handshakes > 0 {
        format!("{} TLS handshakes", labels.handshakes)
    } else {
        format!("{} requests", labels.requests)
    };
    let mut line = format!(
        "{}  {what}, {} SYNs, {} swarm members, {} legitimate sources, {span} s, {:.1} MB",
        pcap.display(),
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
                assert_eq!(
                    (args.seed, args.only),
                    (9, Some(Chosen::Http(Scenario::FlashCrowd)))
                );
            }
            other => panic!("parsed as {other:?}"),
        }
        let cli = Cli::try_parse_from(["cargo xtask", "scenarios", "--only", "https-nat"]).unwrap();
        match cli.command {
            Commands::Scenarios(args) => {
                assert_eq!(args.only, Some(Chosen::Https(HttpsScenario::Nat)));
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
