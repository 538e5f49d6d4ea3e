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

use crate::{
    AttachMode, Sizes, Target,
    detect::{DetectorConfig, WIDE_HITS, WideConfig},
    policy::PolicyConfig,
    rules::MAX_TTL,
};

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
    #[serde(deserialize_with = "maps_section")]
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
    #[serde(deserialize_with = "ranged::<_, _, 1, 32>")]
    pub max_prefix_v4: u8,
    /// Widest IPv6 prefix a rule may have without `force`.
    #[serde(deserialize_with = "ranged::<_, _, 1, 128>")]
    pub max_prefix_v6: u8,
    /// `[l7]`: which payloads the kernel samples for the swarm detector.
    pub l7: L7Config,
    /// `[swarm]`: the swarm detector and the policy that turns swarms into rules.
    pub swarm: SwarmConfig,
    /// `[sources]`: request events besides the kernel's samples.
    pub sources: SourcesConfig,
    /// `[metrics]`: the Prometheus endpoint.
    pub metrics: MetricsConfig,
    /// `[firewall]`: a copy of the rules in the host firewall.
    pub firewall: crate::firewall::FirewallConfig,
}

/// `[metrics]`: Prometheus metrics at `http://LISTEN/metrics`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// `ADDR:PORT` to serve on; absent (the default): no listener. Only what is written here
    /// is ever bound, so a public address is always the admin's explicit choice.
    pub listen: Option<String>,
}

/// `[sources]`: where the swarm detector's requests come from besides the kernel's samples.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SourcesConfig {
    /// `[[sources.log]]`: web-server access logs, tailed (the pages behind HTTPS).
    pub log: Vec<crate::sources::log::config::LogSourceConfig>,
}

/// `[l7]`: kernel payload sampling.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct L7Config {
    /// TCP ports whose segments starting an HTTP request are sampled (at most 4).
    #[serde(deserialize_with = "ports")]
    pub http_ports: Vec<u16>,
    /// TCP ports whose TLS ClientHellos are sampled, for the SNI (at most 2).
    #[serde(deserialize_with = "ports")]
    pub tls_ports: Vec<u16>,
    /// Samples per second per CPU, at most; the rest are counted as skipped.
    #[serde(deserialize_with = "ranged::<_, _, 0, { u32::MAX as i64 }>")]
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
    #[serde(deserialize_with = "ranged::<_, _, 2, { u32::MAX as i64 }>")]
    pub min_members: usize,
    /// Requests a source needs within `window` to count as hammering.
    #[serde(deserialize_with = "number")]
    pub min_requests: f64,
    /// Time constant of the per-source counts.
    pub window: String,
    /// TLS handshakes a source needs within `window` to count as hammering an HTTPS site
    /// that no access log covers.
    #[serde(deserialize_with = "number")]
    pub min_handshakes: f64,
    /// Distinct seconds within `window` those handshakes must spread over (a browser's
    /// burst of connections at the start of a visit never does).
    #[serde(deserialize_with = "number")]
    pub min_handshake_seconds: f64,
    /// Page views (a page and the assets that follow it) a source needs within `window` to
    /// count as reloading the same few pages, as a bot loading a gallery does.
    #[serde(deserialize_with = "number")]
    pub min_views: f64,
    /// How far back a wide, low-rate swarm's members' page fetches count.
    pub wide_window: String,
    /// Bare page fetches (no asset, no Referer) a source needs within `wide_window` to be a
    /// member of a wide swarm.
    #[serde(deserialize_with = "ranged::<_, _, 1, { WIDE_HITS as i64 }>")]
    pub wide_min_hits: usize,
    /// New distinct sources a minute a page needs (and `hot_factor` times its baseline) to
    /// run hot on distinct sources.
    #[serde(deserialize_with = "number")]
    pub wide_min_sources_per_minute: f64,
    /// Sources a wide swarm needs.
    #[serde(deserialize_with = "ranged::<_, _, 2, { u32::MAX as i64 }>")]
    pub wide_min_members: usize,
    /// Sources the detector tracks at once (memory: about 400 bytes each, as many again for
    /// sources seen only in TLS handshakes); beyond it the least recently active tenth is
    /// forgotten.
    #[serde(deserialize_with = "ranged::<_, _, 1000, { u32::MAX as i64 }>")]
    pub max_sources: usize,
    /// TTL of a member's first block; it doubles with every repeat offence...
    pub block_ttl: String,
    /// ...up to this.
    pub max_block_ttl: String,
    /// New swarm rules per minute, at most.
    #[serde(deserialize_with = "ranged::<_, _, 0, { u32::MAX as i64 }>")]
    pub max_rules_per_minute: usize,
    /// Largest share of recent legitimate requests to the site a swarm's rules may cover; a
    /// plan over it is refused and reported instead.
    #[serde(deserialize_with = "number")]
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
            min_handshakes: d.min_handshakes,
            min_handshake_seconds: d.min_handshake_seconds,
            min_views: d.min_views,
            wide_window: humantime::format_duration(d.wide.window).to_string(),
            wide_min_hits: d.wide.min_hits,
            wide_min_sources_per_minute: d.wide.min_sources_per_minute,
            wide_min_members: d.wide.min_members,
            max_sources: d.max_sources,
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
            sources: SourcesConfig::default(),
            metrics: MetricsConfig::default(),
            firewall: crate::firewall::FirewallConfig::default(),
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
    /// Every log source's `trusted_proxies`: no rule may cover one.
    pub trusted_proxies: Vec<Target>,
    /// `[metrics] listen`.
    pub metrics: Option<std::net::SocketAddr>,
    /// `[firewall]`, when its backend is nftables.
    pub firewall: Option<crate::firewall::NftConfig>,
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
            Some(s) => Some(ttl("default_ttl", s, "omit it for permanent rules")?),
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
        let (mut detector, policy) = self.swarm.check()?;
        let mut trusted_proxies = Vec::new();
        for l in &self.sources.log {
            l.validate()?;
            // Where a log covers a site, its requests decide, not the site's handshakes.
            detector
                .logged_sites
                .extend(l.site.iter().map(|s| (s.ip(), s.port())));
            for net in &l.trusted_proxies {
                // A /32 (/128) is the one address: the parser makes it an exact target.
                let t: Target = net.trunc().to_string().parse().with_context(|| {
                    format!("sources.log {:?} trusted_proxies: entry {net}", l.path)
                })?;
                trusted_proxies.push(t);
            }
        }
        let metrics = match &self.metrics.listen {
            Some(a) => Some(a.parse().map_err(|_| {
                anyhow::anyhow!(
                    "[metrics] listen = \"{a}\": expected ADDR:PORT, e.g. \"127.0.0.1:9469\" \
                     or \"[::1]:9469\""
                )
            })?),
            None => None,
        };
        let firewall = self.firewall.check()?;
        Ok(Checked {
            metrics,
            firewall,
            raw: self,
            attach,
            allow,
            own,
            default_ttl,
            socket_gid,
            sizes,
            detector,
            policy,
            trusted_proxies,
        })
    }
}

impl SwarmConfig {
    /// The detector and policy tuning this section describes.
    fn check(&self) -> Result<(DetectorConfig, PolicyConfig)> {
        let window = positive_duration("[swarm] window", &self.window)?;
        let base_ttl = ttl("[swarm] block_ttl", &self.block_ttl, "swarm rules expire")?;
        let max_ttl = ttl(
            "[swarm] max_block_ttl",
            &self.max_block_ttl,
            "swarm rules expire",
        )?;
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
        for (key, v) in [
            ("min_handshakes", self.min_handshakes),
            ("min_handshake_seconds", self.min_handshake_seconds),
            ("min_views", self.min_views),
            (
                "wide_min_sources_per_minute",
                self.wide_min_sources_per_minute,
            ),
        ] {
            if !(v >= 1.0 && v.is_finite()) {
                bail!("[swarm] {key} = {v}: expected 1 or more");
            }
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
            min_handshakes: self.min_handshakes,
            min_handshake_seconds: self.min_handshake_seconds,
            min_views: self.min_views,
            max_sources: self.max_sources,
            wide: WideConfig {
                window: positive_duration("[swarm] wide_window", &self.wide_window)?,
                min_hits: self.wide_min_hits,
                min_sources_per_minute: self.wide_min_sources_per_minute,
                min_members: self.wide_min_members,
                ..WideConfig::default()
            },
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

/// Parses the duration `value` of `key` ("90s", "10m", "1h"), longer than zero.
fn positive_duration(key: &str, value: &str) -> Result<Duration> {
    match humantime::parse_duration(value) {
        Ok(d) if !d.is_zero() => Ok(d),
        _ => bail!("{key} = \"{value}\": expected a duration longer than zero, like \"10m\""),
    }
}

/// Parses the TTL `value` of `key`: a duration from 1s to [`MAX_TTL`] ("10years"); `otherwise`
/// says what to do instead of a longer one.
fn ttl(key: &str, value: &str, otherwise: &str) -> Result<Duration> {
    let range = format!("1s to {}", humantime::format_duration(MAX_TTL));
    match humantime::parse_duration(value) {
        Ok(d) if (Duration::from_secs(1)..=MAX_TTL).contains(&d) => Ok(d),
        Ok(_) | Err(humantime::DurationError::NumberOverflow) => {
            bail!("{key} = \"{value}\": expected {range} ({otherwise})")
        }
        Err(_) => bail!("{key} = \"{value}\" is not a duration: expected {range}, like \"1h\""),
    }
}

/// The interfaces in `names` this host (this network namespace) does not have.
pub fn missing_interfaces(names: &[String]) -> Vec<String> {
    names
        .iter()
        .filter(|n| nix::net::if_::if_nametoindex(n.as_str()).is_err())
        .cloned()
        .collect()
}

/// Deserializes an integer from `LO` to `HI`; a message says so, rather than "expected u8".
fn ranged<'de, D, T, const LO: i64, const HI: i64>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: TryFrom<i64>,
{
    struct Range<const LO: i64, const HI: i64>;
    impl<const LO: i64, const HI: i64> serde::de::Visitor<'_> for Range<LO, HI> {
        type Value = i64;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "an integer from {LO} to {HI}")
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<i64, E> {
            if (LO..=HI).contains(&v) {
                Ok(v)
            } else {
                Err(E::invalid_value(serde::de::Unexpected::Signed(v), &self))
            }
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<i64, E> {
            match i64::try_from(v) {
                Ok(v) => self.visit_i64(v),
                Err(_) => Err(E::invalid_value(serde::de::Unexpected::Unsigned(v), &self)),
            }
        }
    }
    let v = d.deserialize_i64(Range::<LO, HI>)?;
    // In range, so it fits: `HI` is at most `T`'s maximum wherever this is used.
    T::try_from(v).map_err(|_| {
        <D::Error as serde::de::Error>::custom(format!("{v} does not fit (expected {LO} to {HI})"))
    })
}

/// Deserializes a number, integer or not (its range is checked later, with the key's name).
fn number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    struct Number;
    impl serde::de::Visitor<'_> for Number {
        type Value = f64;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a number")
        }
        fn visit_f64<E>(self, v: f64) -> Result<f64, E> {
            Ok(v)
        }
        fn visit_i64<E>(self, v: i64) -> Result<f64, E> {
            Ok(v as f64)
        }
        fn visit_u64<E>(self, v: u64) -> Result<f64, E> {
            Ok(v as f64)
        }
    }
    d.deserialize_f64(Number)
}

/// A list of TCP ports, each from 1 to 65535.
fn ports<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u16>, D::Error> {
    #[derive(Deserialize)]
    struct Port(#[serde(deserialize_with = "ranged::<_, _, 1, 65535>")] u16);
    Ok(Vec::<Port>::deserialize(d)?
        .into_iter()
        .map(|p| p.0)
        .collect())
}

/// `[maps]`, with each capacity from 1 to 4294967295 (the `cache` also a power of two, checked
/// later).
fn maps_section<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Sizes, D::Error> {
    const MAX: i64 = u32::MAX as i64;
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields, default)]
    struct Maps {
        #[serde(deserialize_with = "ranged::<_, _, 1, MAX>")]
        sources: u32,
        #[serde(deserialize_with = "ranged::<_, _, 1, MAX>")]
        exact: u32,
        #[serde(deserialize_with = "ranged::<_, _, 1, MAX>")]
        prefix: u32,
        #[serde(deserialize_with = "ranged::<_, _, 1, MAX>")]
        allow: u32,
        #[serde(deserialize_with = "ranged::<_, _, 1, MAX>")]
        rules: u32,
        #[serde(deserialize_with = "ranged::<_, _, 1, MAX>")]
        cache: u32,
    }
    impl Default for Maps {
        fn default() -> Self {
            let d = Sizes::default();
            Maps {
                sources: d.sources,
                exact: d.exact,
                prefix: d.prefix,
                allow: d.allow,
                rules: d.rules,
                cache: d.cache,
            }
        }
    }
    let m = Maps::deserialize(d)?;
    Ok(Sizes {
        sources: m.sources,
        exact: m.exact,
        prefix: m.prefix,
        allow: m.allow,
        rules: m.rules,
        cache: m.cache,
    })
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
    fn metrics_listen_is_off_by_default_and_a_bad_address_is_named() {
        assert_eq!(Config::default().check().unwrap().metrics, None);
        let c = Config::parse("[metrics]\nlisten = \"127.0.0.1:9469\"\n").unwrap();
        assert_eq!(
            c.check().unwrap().metrics,
            Some("127.0.0.1:9469".parse().unwrap())
        );
        let c = Config::parse("[metrics]\nlisten = \"localhost\"\n").unwrap();
        let e = format!("{:#}", c.check().unwrap_err());
        assert!(e.contains("[metrics] listen = \"localhost\""), "{e}");
        let e = Config::parse("[metrics]\nport = 9469\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("port"), "{e}");
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
        let c = Config::parse(
            "detect_own_addresses = false\n[swarm]\nmin_handshakes = 20\n\
             [[sources.log]]\npath = \"/var/log/a.log\"\nformat = \"combined\"\n\
             site = [\"203.0.113.10:443\", \"[2001:db8::10]:443\"]\n",
        )
        .unwrap()
        .check()
        .unwrap();
        assert_eq!(c.detector.min_handshakes, 20.0);
        assert_eq!(
            c.detector.logged_sites,
            [
                ("203.0.113.10".parse().unwrap(), 443),
                ("2001:db8::10".parse().unwrap(), 443)
            ]
        );
        let c = Config::parse(
            "detect_own_addresses = false\n[swarm]\nmin_views = 6\nwide_window = \"10m\"\n\
             wide_min_hits = 2\nwide_min_members = 50\nmax_sources = 50000\n",
        )
        .unwrap()
        .check()
        .unwrap();
        assert_eq!(c.detector.min_views, 6.0);
        assert_eq!(c.detector.wide.window, Duration::from_secs(600));
        assert_eq!(c.detector.wide.min_hits, 2);
        assert_eq!(c.detector.wide.min_members, 50);
        assert_eq!(c.detector.max_sources, 50_000);
        for (text, named) in [
            ("wide_min_hits = 5", "wide_min_hits"),
            ("wide_window = \"0s\"", "wide_window"),
            ("min_views = 0.5", "min_views = 0.5"),
            ("max_sources = 10", "max_sources"),
        ] {
            let bad = Config::parse(&format!("[swarm]\n{text}\n")).and_then(|c| c.check());
            let err = format!("{:#}", bad.unwrap_err());
            assert!(err.contains(named), "{text}: {err}");
        }
        let bad = Config::parse("[swarm]\nmin_handshake_seconds = 0\n")
            .unwrap()
            .check()
            .unwrap_err();
        assert!(
            format!("{bad:#}").contains("min_handshake_seconds = 0"),
            "{bad:#}"
        );
    }

    #[test]
    fn missing_file_is_fine_unless_required() {
        let p = Path::new("/nonexistent/swarmwall.toml");
        assert_eq!(Config::load(p, false).unwrap(), Config::default());
        assert!(Config::load(p, true).is_err());
    }
}
