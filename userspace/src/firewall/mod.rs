//! The host firewall as a second place rules live (`[firewall]` in the config).
//!
//! In the **mirror** role every rule and allow entry the kernel's XDP program enforces is also
//! an element in the host firewall: `nft list ruleset` shows what swarmwall blocks, other tools
//! can reference the sets, and traffic XDP never sees (forwarded, containers) is covered as
//! well. A mirror is a copy: when it fails (no `nft`, a refused transaction) the daemon says
//! so in `status`, XDP keeps enforcing, the journal is untouched, and a periodic reconcile
//! retries.
//!
//! Backends: [`nft`] (nftables). The config's `role = "enforce"` (the firewall as the only data
//! plane) and the ipset backend are not built yet, and the config says so rather than
//! pretending.

pub mod mirror;
pub mod nft;

use std::{path::PathBuf, time::Duration};

use serde::Deserialize;

pub use mirror::Mirror;
pub use nft::{NftConfig, Nftables};

/// `[firewall]`, as written.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FirewallConfig {
    /// `"nftables"` or `"none"` (the default).
    pub backend: String,
    /// `"mirror"`: the firewall holds a copy of every rule XDP enforces.
    pub role: String,
    /// The nftables table (family `inet`).
    pub table: String,
    /// Its base chains' priority (`filter` is 0; the default -10 runs just before it).
    pub priority: i32,
    /// The `nft` binary.
    pub nft: PathBuf,
    /// How often the table is diffed against the store while all is well (`"5m"`); after a
    /// failure it is every 10 s.
    pub reconcile_every: String,
}

impl Default for FirewallConfig {
    fn default() -> Self {
        let n = NftConfig::default();
        Self {
            backend: "none".into(),
            role: "mirror".into(),
            table: n.table,
            priority: n.priority,
            nft: n.nft,
            reconcile_every: humantime::format_duration(n.reconcile_every).to_string(),
        }
    }
}

impl FirewallConfig {
    /// The nftables settings, if that is the backend; an error that names the bad value.
    pub fn check(&self) -> anyhow::Result<Option<NftConfig>> {
        match self.role.as_str() {
            "mirror" => {}
            "enforce" => anyhow::bail!(
                "[firewall] role = \"enforce\" is not supported yet: the firewall can mirror \
                 XDP's rules (role = \"mirror\") but not replace it"
            ),
            r => anyhow::bail!("[firewall] role = \"{r}\": expected \"mirror\""),
        }
        let valid_name = !self.table.is_empty()
            && self.table.len() <= 64
            && self
                .table
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !valid_name {
            anyhow::bail!(
                "[firewall] table = {:?}: use letters, digits, '_' and '-' (at most 64)",
                self.table
            );
        }
        if !(-400..=400).contains(&self.priority) {
            anyhow::bail!(
                "[firewall] priority = {}: expected -400 to 400 (filter is 0)",
                self.priority
            );
        }
        let reconcile_every = humantime::parse_duration(&self.reconcile_every)
            .ok()
            .filter(|d| (Duration::from_secs(1)..=Duration::from_secs(86_400)).contains(d))
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "[firewall] reconcile_every = {:?}: expected a duration from 1s to 1d, \
                     e.g. \"5m\"",
                    self.reconcile_every
                )
            })?;
        match self.backend.as_str() {
            "none" => Ok(None),
            "nftables" => Ok(Some(NftConfig {
                nft: self.nft.clone(),
                table: self.table.clone(),
                priority: self.priority,
                reconcile_every,
            })),
            "ipset" => anyhow::bail!(
                "[firewall] backend = \"ipset\" is not supported yet; use \"nftables\""
            ),
            b => anyhow::bail!("[firewall] backend = \"{b}\": expected \"nftables\" or \"none\""),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml_text: &str) -> FirewallConfig {
        toml::from_str(toml_text).unwrap()
    }

    #[test]
    fn off_by_default_and_bad_values_are_named() {
        assert_eq!(FirewallConfig::default().check().unwrap(), None);
        let on = parse("backend = \"nftables\"\npriority = -5\n")
            .check()
            .unwrap()
            .unwrap();
        assert_eq!((on.table.as_str(), on.priority), ("swarmwall", -5));
        for (text, says) in [
            ("backend = \"iptables\"", "\"iptables\""),
            (
                "backend = \"nftables\"\nrole = \"enforce\"",
                "not supported yet",
            ),
            ("role = \"mirorr\"", "\"mirorr\""),
            ("backend = \"nftables\"\ntable = \"a b\"", "\"a b\""),
            ("backend = \"nftables\"\npriority = 1000", "1000"),
            ("reconcile_every = \"0s\"", "\"0s\""),
            ("reconcile_every = \"soon\"", "\"soon\""),
        ] {
            let e = parse(text).check().unwrap_err().to_string();
            assert!(e.contains(says), "{text}: {e}");
        }
    }
}
