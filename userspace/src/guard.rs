//! The guards every producer of rules passes: the admin's API and CLI, the swarm policy, and
//! (next) imports and CrowdSec. One implementation, so "own address" or "overlaps the allow
//! list" means the same thing whoever asks, and a refusal names the guard and the value.
//!
//! The guards are about *what* a rule covers. Whether an identical rule already exists is the
//! store's business, not a guard's.

use std::net::IpAddr;

use crate::Target;

/// Widest IPv4 prefix a rule may have without `force`, unless configured otherwise.
pub const DEFAULT_MAX_PREFIX_V4: u8 = 16;
/// Widest IPv6 prefix a rule may have without `force`, unless configured otherwise.
pub const DEFAULT_MAX_PREFIX_V6: u8 = 48;

/// Why a guard refused a rule. Each message starts with the guard's name and names the value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// A `/0`: every address of a family.
    #[error("guard 'everything': {target} covers every address; refusing")]
    Everything {
        /// The rule's target.
        target: Target,
    },
    /// Wider than the configured bound, and not forced.
    #[error(
        "guard 'prefix width': {target} is wider than /{bound}, the configured bound; add force (--force) if you mean it"
    )]
    TooWide {
        /// The rule's target.
        target: Target,
        /// The bound for its family (`max_prefix_v4` / `max_prefix_v6`).
        bound: u8,
    },
    /// Shares addresses with an allow-list entry (force does not help: the kernel would let
    /// the allow list win anyway, so such a rule is a mistake).
    #[error(
        "guard 'allow list': {target} covers allow-listed {entry}; remove the allow entry first or narrow the rule"
    )]
    AllowListed {
        /// The rule's target.
        target: Target,
        /// The allow-list entry it overlaps.
        entry: Target,
    },
    /// Covers a trusted proxy: the reverse proxy or CDN an access log names as the peer of
    /// every request it forwarded (blocking it would block every visitor behind it).
    #[error(
        "guard 'trusted proxy': {target} covers the trusted proxy {proxy} (a log source's trusted_proxies); refusing"
    )]
    TrustedProxy {
        /// The rule's target.
        target: Target,
        /// The trusted proxy entry it overlaps.
        proxy: Target,
    },
    /// Covers one of the host's own addresses (configured, or on an interface right now).
    #[error("guard 'own address': {target} covers this host's own address {own}; refusing")]
    OwnAddress {
        /// The rule's target.
        target: Target,
        /// The own address or prefix it overlaps.
        own: Target,
    },
}

/// True if `a` and `b` share at least one address (one contains the other: prefixes nest or
/// are disjoint).
pub fn overlaps(a: &Target, b: &Target) -> bool {
    let (a, b) = (a.net(), b.net());
    a.contains(&b) || b.contains(&a)
}

/// The guards as they stand at one moment: build one per batch of rules.
#[derive(Clone, Debug)]
pub struct Guards {
    allow: Vec<Target>,
    own: Vec<Target>,
    /// The access-log sources' trusted proxies (their `X-Forwarded-For` peers).
    proxies: Vec<Target>,
    max_prefix_v4: u8,
    max_prefix_v6: u8,
}

impl Default for Guards {
    fn default() -> Self {
        Self::new(Vec::new(), Vec::new())
    }
}

impl Guards {
    /// Guards with the allow list `allow` and the own addresses `own`, and the default prefix
    /// bounds.
    pub fn new(allow: Vec<Target>, own: Vec<Target>) -> Self {
        Self {
            allow,
            own,
            proxies: Vec::new(),
            max_prefix_v4: DEFAULT_MAX_PREFIX_V4,
            max_prefix_v6: DEFAULT_MAX_PREFIX_V6,
        }
    }

    /// With other prefix-width bounds (the config's `max_prefix_v4`, `max_prefix_v6`).
    pub fn with_prefix_bounds(mut self, v4: u8, v6: u8) -> Self {
        self.max_prefix_v4 = v4;
        self.max_prefix_v6 = v6;
        self
    }

    /// Adds the addresses on the host's interfaces to the own addresses.
    pub fn with_host_addresses(mut self, addrs: impl IntoIterator<Item = IpAddr>) -> Self {
        self.own.extend(addrs.into_iter().map(Target::Addr));
        self
    }

    /// Adds trusted proxies: no rule may cover one.
    pub fn with_trusted_proxies(mut self, proxies: impl IntoIterator<Item = Target>) -> Self {
        self.proxies.extend(proxies);
        self
    }

    /// The allow list.
    pub fn allow(&self) -> &[Target] {
        &self.allow
    }

    /// The own addresses (configured and on the host's interfaces).
    pub fn own(&self) -> &[Target] {
        &self.own
    }

    /// Checks a rule's `target`. `force` lifts only the prefix-width bound.
    pub fn check(&self, target: &Target, force: bool) -> Result<(), Refusal> {
        let target = *target;
        if target.prefix_len() == 0 {
            return Err(Refusal::Everything { target });
        }
        if let Target::Net(n) = target {
            let bound = if n.addr().is_ipv4() {
                self.max_prefix_v4
            } else {
                self.max_prefix_v6
            };
            if n.prefix_len() < bound && !force {
                return Err(Refusal::TooWide { target, bound });
            }
        }
        if let Some(entry) = self.allow.iter().find(|a| overlaps(a, &target)) {
            return Err(Refusal::AllowListed {
                target,
                entry: *entry,
            });
        }
        if let Some(own) = self.own.iter().find(|o| overlaps(o, &target)) {
            return Err(Refusal::OwnAddress { target, own: *own });
        }
        if let Some(proxy) = self.proxies.iter().find(|p| overlaps(p, &target)) {
            return Err(Refusal::TrustedProxy {
                target,
                proxy: *proxy,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Target {
        s.parse().unwrap()
    }

    #[test]
    fn each_guard_refuses_naming_itself_and_the_value() {
        let g = Guards::new(vec![t("10.1.0.0/16")], vec![t("203.0.113.10")])
            .with_host_addresses(["198.51.100.1".parse().unwrap()]);
        assert!(g.check(&t("192.0.2.7"), false).is_ok());
        let e = g.check(&t("10.0.0.0/8"), true).unwrap_err().to_string();
        assert!(e.contains("allow list") && e.contains("10.1.0.0/16"), "{e}");
        let e = g.check(&t("10.1.2.3"), false).unwrap_err().to_string();
        assert!(e.contains("allow list"), "{e}");
        let e = g
            .check(&t("203.0.113.0/24"), false)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("own address") && e.contains("203.0.113.10"),
            "{e}"
        );
        let e = g.check(&t("198.51.100.1"), false).unwrap_err();
        assert!(matches!(e, Refusal::OwnAddress { .. }), "{e}");
        let e = g.check(&t("172.16.0.0/12"), false).unwrap_err().to_string();
        assert!(e.contains("prefix width") && e.contains("/16"), "{e}");
        assert!(g.check(&t("172.16.0.0/12"), true).is_ok());
        let g6 = Guards::default().with_prefix_bounds(32, 64);
        assert!(g6.check(&t("2001:db8::/48"), false).is_err());
        assert!(g6.check(&t("2001:db8::/64"), false).is_ok());
        // A /0 can only come from a typed producer (the parser refuses it), but is refused too.
        let all = Target::Net("0.0.0.0/0".parse().unwrap());
        assert!(matches!(
            g.check(&all, true),
            Err(Refusal::Everything { .. })
        ));
    }

    #[test]
    fn a_trusted_proxy_is_never_covered() {
        let g = Guards::default().with_trusted_proxies([t("192.0.2.0/28")]);
        for target in ["192.0.2.5", "192.0.2.0/24", "192.0.0.0/16"] {
            let e = g.check(&t(target), true).unwrap_err().to_string();
            assert!(
                e.starts_with("guard 'trusted proxy'") && e.contains("192.0.2.0/28"),
                "{target}: {e}"
            );
        }
        assert!(g.check(&t("192.0.2.16"), false).is_ok());
    }

    #[test]
    fn overlap_is_symmetric_and_nesting_only() {
        assert!(overlaps(&t("10.0.0.0/8"), &t("10.2.3.4")));
        assert!(overlaps(&t("10.2.3.4"), &t("10.0.0.0/8")));
        assert!(!overlaps(&t("10.0.0.0/8"), &t("11.0.0.0/8")));
        assert!(!overlaps(&t("10.0.0.1"), &t("2001:db8::1")));
    }
}
