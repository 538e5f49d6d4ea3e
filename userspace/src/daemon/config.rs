//! The daemon's configuration file (TOML). Every key is optional; `config.example.toml` at the
//! repository root documents each with its default. A file that does not parse, or has a key
//! this version does not know, stops the daemon with the line at fault: a blocker must not run
//! on half a configuration.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use serde::Deserialize;

use crate::{AttachMode, Sizes, Target, detect::DetectorConfig, policy::PolicyConfig};

/// Where the daemon looks for its configuration unless told otherwise.
pub const DEFAULT_PATH: &str = "/etc/swarmwall/config.toml";

/// The configuration file, as written.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Interfaces to attach to.
    pub interfaces: Vec<String>,
    /// `auto` (native XDP, falling back to generic), `driver` or `generic`.
    pub attach_mode: String,
    /// Rule journal and snapshots.
    pub state_dir: PathBuf,
    /// Control socket.
    pub socket: PathBuf,
    /// Group whose members may read (not change) through the socket; the socket becomes 0660.
    pub socket_group: Option<String>,
    /// Where maps and links are pinned (on a BPF filesystem).
    pub pin_dir: PathBuf,
    /// `[maps]`: capacities, fixed when the data plane is first created.
    pub maps: Sizes,
    /// Addresses and prefixes that are never blocked (the kernel lets them through first).
    pub allow: Vec<String>,
    /// This host's own addresses: no rule may cover them.
    pub own_addresses: Vec<String>,
    /// Also treat every address configured on this host's interfaces as its own.
    pub detect_own_addresses: bool,
    /// TTL of rules added without one (`"1h"`, `"30m"`); absent: permanent.
    pub default_ttl: Option<String>,
    /// Widest IPv4 prefix a rule may have without `force`.
    pub max_prefix_v4: u8,
    /// Widest IPv6 prefix a rule may have without `force`.
    pub max_prefix_v6: u8,
    /// `[l7]`: which payloads the kernel samples for the swarm detector.
    pub l7: L7Config,
    /// `[swarm]`: the swarm detector and the policy that turns swarms into rules.
    pub swarm: SwarmConfig,
}

/// `[l7]`: kernel payload sampling.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct L7Config {
    /// TCP ports whose segments starting an HTTP request are sampled (at most 4).
    pub http_ports: Vec<u16>,
    /// TCP ports whose TLS ClientHellos are sampled, for the SNI (at most 2).
    pub tls_ports: Vec<u16>,
    /// Samples per second per CPU, at most; the rest are counted as skipped.
    pub sample_rate: u32,
}

impl Default for L7Config {
    fn default() -> Self {
        Self {
            http_ports: vec![80, 8080],
            tls_ports: vec![443],
            sample_rate: 20_000,
        }
    }
}

/// `[swarm]`: detection and blocking of bot swarms.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SwarmConfig {
    /// Detect swarms (and, in enforce mode, block them).
    pub enabled: bool,
    /// Sources a swarm needs.
    pub min_members: usize,
    /// Requests a source needs within `window` to count as hammering.
    pub min_requests: f64,
    /// Time constant of the per-source counts.
    pub window: String,
    /// TTL of a member's first block; it doubles with every repeat offence...
    pub block_ttl: String,
    /// ...up to this.
    pub max_block_ttl: String,
    /// New swarm rules per minute, at most.
    pub max_rules_per_minute: usize,
    /// Largest share of recent legitimate requests to the site a swarm's rules may cover; a
    /// plan over it is refused and reported instead.
    pub max_impact: f64,
}

impl Default for SwarmConfig {
    fn default() -> Self {
        let d = DetectorConfig::default();
        let p = PolicyConfig::default();
        Self {
            enabled: true,
            min_members: d.min_members,
            min_requests: d.min_requests,
            window: humantime::format_duration(d.window).to_string(),
            block_ttl: humantime::format_duration(p.base_ttl).to_string(),
            max_block_ttl: humantime::format_duration(p.max_ttl).to_string(),
            max_rules_per_minute: p.max_rules_per_minute,
            max_impact: p.max_impact,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            interfaces: Vec::new(),
            attach_mode: "auto".into(),
            state_dir: "/var/lib/swarmwall".into(),
            socket: "/run/swarmwall/control.sock".into(),
            socket_group: None,
            pin_dir: "/sys/fs/bpf/swarmwall".into(),
            maps: Sizes::default(),
            allow: Vec::new(),
            own_addresses: Vec::new(),
            detect_own_addresses: true,
            default_ttl: None,
            max_prefix_v4: 16,
            max_prefix_v6: 48,
            l7: L7Config::default(),
            swarm: SwarmConfig::default(),
        }
    }
}

/// The configuration, checked and in the types the daemon uses.
#[derive(Clone, Debug)]
pub struct Checked {
    /// What was written (with command-line overrides applied).
    pub raw: Config,
    /// `attach_mode`.
    pub attach: AttachMode,
    /// `allow`.
    pub allow: Vec<Target>,
    /// `own_addresses` (the host's interface addresses are added live, when detected).
    pub own: Vec<Target>,
    /// `default_ttl`.
    pub default_ttl: Option<Duration>,
    /// `socket_group` as a gid.
    pub socket_gid: Option<u32>,
    /// `[maps]`.
    pub sizes: Sizes,
    /// `[swarm]`, as detector tuning.
    pub detector: DetectorConfig,
    /// `[swarm]`, as policy tuning.
    pub policy: PolicyConfig,
}

impl Config {
    /// Reads the file at `path`. With `required` false a missing file means defaults (so the
    /// daemon starts with no configuration at all); any other problem is an error naming it.
    pub fn load(path: &Path, required: bool) -> Result<Self> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
                return Ok(Self::default());
            }
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        Self::parse(&text).with_context(|| format!("in {}", path.display()))
    }

    /// Parses configuration text (errors carry the line and column).
    pub fn parse(text: &str) -> Result<Self> {
        toml::from_str(text).map_err(|e| anyhow::anyhow!("{e}"))
    }

    /// Checks every value and converts it.
    pub fn check(self) -> Result<Checked> {
        let attach = match self.attach_mode.as_str() {
            "auto" => AttachMode::Auto,
            "driver" => AttachMode::Driver,
            "generic" => AttachMode::Generic,
            other => {
                bail!("attach_mode = \"{other}\": expected \"auto\", \"driver\" or \"generic\"")
            }
        };
        let targets = |key: &str, list: &[String]| -> Result<Vec<Target>> {
            list.iter()
                .map(|s| {
                    s.parse::<Target>()
                        .with_context(|| format!("{key}: entry \"{s}\""))
                })
                .collect()
        };
        let allow = targets("allow", &self.allow)?;
        // The host's interface addresses (`detect_own_addresses`) are not a snapshot taken
        // here: the daemon follows them live (`host_addrs`).
        let own = targets("own_addresses", &self.own_addresses)?;
        let default_ttl = match &self.default_ttl {
            Some(s) => Some(positive_duration(
                "default_ttl",
                s,
                "1h",
                "a zero TTL would expire at once; omit it for permanent rules",
            )?),
            None => None,
        };
        if !(1..=32).contains(&self.max_prefix_v4) {
            bail!("max_prefix_v4 = {}: expected 1 to 32", self.max_prefix_v4);
        }
        if !(1..=128).contains(&self.max_prefix_v6) {
            bail!("max_prefix_v6 = {}: expected 1 to 128", self.max_prefix_v6);
        }
        let socket_gid = match &self.socket_group {
            Some(g) => Some(
                nix::unistd::Group::from_name(g)
                    .with_context(|| format!("looking up socket_group \"{g}\""))?
                    .with_context(|| format!("socket_group = \"{g}\": no such group"))?
                    .gid
                    .as_raw(),
            ),
            None => None,
        };
        let m = &self.maps;
        if m.cache < 2 || !m.cache.is_power_of_two() {
            bail!("[maps] cache = {}: expected a power of two", m.cache);
        }
        for (k, v) in [
            ("sources", m.sources),
            ("exact", m.exact),
            ("prefix", m.prefix),
            ("allow", m.allow),
            ("rules", m.rules),
        ] {
            if v == 0 {
                bail!("[maps] {k} = 0: expected at least 1");
            }
        }
        let sizes = self.maps;
        let l7 = &self.l7;
        if l7.http_ports.len() > 4 || l7.tls_ports.len() > 2 {
            bail!(
                "[l7] takes at most 4 http_ports and 2 tls_ports (got {} and {})",
                l7.http_ports.len(),
                l7.tls_ports.len()
            );
        }
        if let Some(p) = l7.http_ports.iter().chain(&l7.tls_ports).find(|p| **p == 0) {
            bail!("[l7] port {p}: expected 1 to 65535");
        }
        let (detector, policy) = self.swarm.check()?;
        Ok(Checked {
            raw: self,
            attach,
            allow,
            own,
            default_ttl,
            socket_gid,
            sizes,
            detector,
            policy,
        })
    }
}

impl SwarmConfig {
    /// The detector and policy tuning this section describes.
    fn check(&self) -> Result<(DetectorConfig, PolicyConfig)> {
        let duration = |key: &str, v: &str| {
            positive_duration(
                &format!("[swarm] {key}"),
                v,
                "10m",
                "must be longer than zero",
            )
        };
        let window = duration("window", &self.window)?;
        let base_ttl = duration("block_ttl", &self.block_ttl)?;
        let max_ttl = duration("max_block_ttl", &self.max_block_ttl)?;
        if max_ttl < base_ttl {
            bail!(
                "[swarm] max_block_ttl = \"{}\" is shorter than block_ttl = \"{}\"",
                self.max_block_ttl,
                self.block_ttl
            );
        }
        if self.min_members < 2 {
            bail!(
                "[swarm] min_members = {}: a swarm needs at least 2 sources",
                self.min_members
            );
        }
        if !(self.min_requests >= 1.0 && self.min_requests.is_finite()) {
            bail!(
                "[swarm] min_requests = {}: expected 1 or more",
                self.min_requests
            );
        }
        if !(0.0..=1.0).contains(&self.max_impact) {
            bail!(
                "[swarm] max_impact = {}: expected a share from 0 to 1",
                self.max_impact
            );
        }
        let detector = DetectorConfig {
            window,
            min_members: self.min_members,
            min_requests: self.min_requests,
            ..DetectorConfig::default()
        };
        let policy = PolicyConfig {
            base_ttl,
            max_ttl,
            max_rules_per_minute: self.max_rules_per_minute,
            max_impact: self.max_impact,
            ..PolicyConfig::default()
        };
        Ok((detector, policy))
    }
}

/// Parses the duration `value` of `key` ("90s", "10m", "1h"); zero is refused with `if_zero`.
fn positive_duration(key: &str, value: &str, example: &str, if_zero: &str) -> Result<Duration> {
    let d = humantime::parse_duration(value)
        .with_context(|| format!("{key} = \"{value}\" is not a duration like \"{example}\""))?;
    if d.is_zero() {
        bail!("{key} = \"{value}\": {if_zero}");
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_all_defaults() {
        assert_eq!(Config::parse("").unwrap(), Config::default());
    }

    #[test]
    fn the_example_file_documents_exactly_the_defaults() {
        let example = include_str!("../../../config.example.toml");
        assert_eq!(Config::parse(example).unwrap(), Config::default());
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_line() {
        let e = Config::parse("interfaces = [\"eth0\"]\nmax_prefix = 8\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2") && e.contains("max_prefix"), "{e}");
        let e = Config::parse("[maps]\nsources = \"many\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2"), "{e}");
    }

    #[test]
    fn check_converts_and_refuses_nonsense() {
        let mut c = Config::parse(
            "allow = [\"10.0.0.0/8\"]\nown_addresses = [\"203.0.113.10\"]\ndefault_ttl = \"1h\"\n\
             detect_own_addresses = false\n",
        )
        .unwrap();
        let ok = c.clone().check().unwrap();
        assert_eq!(ok.allow.len(), 1);
        assert_eq!(ok.own.len(), 1);
        assert_eq!(ok.default_ttl, Some(Duration::from_secs(3600)));
        c.allow = vec!["10.0.0.1/8".into()];
        let e = format!("{:#}", c.clone().check().unwrap_err());
        assert!(e.contains("10.0.0.1/8") && e.contains("host bits"), "{e}");
        c.allow.clear();
        c.attach_mode = "turbo".into();
        assert!(c.clone().check().unwrap_err().to_string().contains("turbo"));
        c.attach_mode = "auto".into();
        c.maps.cache = 1000;
        assert!(
            c.clone()
                .check()
                .unwrap_err()
                .to_string()
                .contains("power of two")
        );
        c.maps.cache = 1024;
        c.swarm.block_ttl = "soon".into();
        let e = format!("{:#}", c.clone().check().unwrap_err());
        assert!(e.contains("block_ttl") && e.contains("soon"), "{e}");
        c.swarm.block_ttl = "10m".into();
        c.l7.http_ports = vec![80, 0];
        assert!(c.check().unwrap_err().to_string().contains("port 0"));
    }

    #[test]
    fn swarm_section_becomes_detector_and_policy_tuning() {
        let c = Config::parse(
            "detect_own_addresses = false\n[swarm]\nmin_members = 5\nblock_ttl = \"2m\"\n",
        )
        .unwrap()
        .check()
        .unwrap();
        assert_eq!(c.detector.min_members, 5);
        assert_eq!(c.policy.base_ttl, Duration::from_secs(120));
        assert_eq!(c.detector.window, DetectorConfig::default().window);
    }

    #[test]
    fn missing_file_is_fine_unless_required() {
        let p = Path::new("/nonexistent/swarmwall.toml");
        assert_eq!(Config::load(p, false).unwrap(), Config::default());
        assert!(Config::load(p, true).is_err());
    }
}
