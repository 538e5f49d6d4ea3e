//! The rule model: what an admin (or the detector) asks for, validated before it reaches a map.

use std::{fmt, net::IpAddr, str::FromStr, time::Duration};

use swarmwall_maps::{ACTION_DROP, ACTION_OBSERVE, SCOPE_DST, SCOPE_PORT, SCOPE_PROTO};

use crate::addr::{Target, to_key};

/// Rule id: assigned by the rule table, never reused while the table lives.
pub type RuleId = u64;

/// What a matching rule does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// Drop the packet.
    Drop,
    /// Pass it, counting it as would-have-dropped: a dry run of a rule.
    Observe,
}

impl Action {
    pub(crate) fn code(self) -> u8 {
        match self {
            Action::Drop => ACTION_DROP,
            Action::Observe => ACTION_OBSERVE,
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Drop => "drop",
            Action::Observe => "observe",
        })
    }
}

/// Transport protocols a scope can name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Proto {
    /// TCP (6).
    Tcp,
    /// UDP (17).
    Udp,
    /// ICMP (1).
    Icmp,
    /// ICMPv6 (58).
    Icmpv6,
}

impl Proto {
    /// The IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Proto::Tcp => 6,
            Proto::Udp => 17,
            Proto::Icmp => 1,
            Proto::Icmpv6 => 58,
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Icmp => "icmp",
            Proto::Icmpv6 => "icmpv6",
        })
    }
}

impl FromStr for Proto {
    type Err = RuleError;
    fn from_str(s: &str) -> Result<Self, RuleError> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" | "6" => Ok(Proto::Tcp),
            "udp" | "17" => Ok(Proto::Udp),
            "icmp" | "1" => Ok(Proto::Icmp),
            "icmpv6" | "ipv6-icmp" | "58" => Ok(Proto::Icmpv6),
            _ => Err(RuleError::BadProto {
                value: s.to_owned(),
            }),
        }
    }
}

/// Which traffic to a host the rule applies to: the site it protects. Empty means all traffic.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Scope {
    /// Only packets to this destination address.
    pub dst: Option<IpAddr>,
    /// Only packets of this protocol.
    pub proto: Option<Proto>,
    /// Only TCP/UDP packets to this destination port.
    pub port: Option<u16>,
}

impl Scope {
    /// True if the scope matches all traffic.
    pub fn is_any(&self) -> bool {
        self.dst.is_none() && self.proto.is_none() && self.port.is_none()
    }

    pub(crate) fn flags(&self) -> u8 {
        (if self.dst.is_some() { SCOPE_DST } else { 0 })
            | (if self.proto.is_some() { SCOPE_PROTO } else { 0 })
            | (if self.port.is_some() { SCOPE_PORT } else { 0 })
    }

    pub(crate) fn dst_key(&self) -> [u8; 16] {
        self.dst.map(to_key).unwrap_or([0; 16])
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_any() {
            return f.write_str("any");
        }
        let mut parts = Vec::new();
        if let Some(d) = self.dst {
            parts.push(format!("dst {d}"));
        }
        if let Some(p) = self.proto {
            parts.push(p.to_string());
        }
        if let Some(p) = self.port {
            parts.push(format!("port {p}"));
        }
        f.write_str(&parts.join(" "))
    }
}

/// A requested rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleSpec {
    /// The source address or prefix.
    pub target: Target,
    /// What happens to matching packets.
    pub action: Action,
    /// Which traffic it applies to.
    pub scope: Scope,
    /// Lifetime; `None` for a permanent rule.
    pub ttl: Option<Duration>,
}

impl RuleSpec {
    /// A permanent, unscoped drop rule.
    pub fn drop(target: Target) -> Self {
        Self {
            target,
            action: Action::Drop,
            scope: Scope::default(),
            ttl: None,
        }
    }

    /// Checks what the type system cannot.
    pub fn validate(&self) -> Result<(), RuleError> {
        if self.ttl == Some(Duration::ZERO) {
            return Err(RuleError::ZeroTtl);
        }
        if let Some(p) = self.scope.proto
            && self.scope.port.is_some()
            && !matches!(p, Proto::Tcp | Proto::Udp)
        {
            return Err(RuleError::PortWithoutPorts { proto: p });
        }
        if self.scope.port == Some(0) {
            return Err(RuleError::PortZero);
        }
        Ok(())
    }
}

/// The longest TTL a new rule may have (ten years, written `10years`); longer is what a
/// permanent rule (no TTL) is for. It keeps every expiry far inside what the store records
/// (year 9999) and the kernel's nanosecond clock holds (584 years). Checked where rules are
/// asked for (the CLI's `--ttl`, the config's TTLs), not in [`RuleSpec::validate`], so that a
/// stored rule with a longer one still loads.
pub const MAX_TTL: Duration = Duration::from_secs(10 * 31_557_600);

/// Errors from building or changing rules.
#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    /// TTL of zero: a rule that would never act.
    #[error("a TTL of zero would expire at once; omit the TTL for a permanent rule")]
    ZeroTtl,
    /// Unknown protocol name.
    #[error("unknown protocol '{value}' (expected tcp, udp, icmp or icmpv6)")]
    BadProto {
        /// The rejected text.
        value: String,
    },
    /// A port scope with a protocol that has no ports.
    #[error("protocol {proto} has no ports; a port scope needs tcp or udp (or no protocol)")]
    PortWithoutPorts {
        /// The protocol given.
        proto: Proto,
    },
    /// Port 0.
    #[error("port 0 is not a destination port")]
    PortZero,
    /// No rule with that id.
    #[error("no rule with id {id}")]
    NoSuchRule {
        /// The id asked for.
        id: RuleId,
    },
    /// No allow entry for that prefix.
    #[error("{target} is not on the allow list")]
    NotAllowed {
        /// The target asked for.
        target: Target,
    },
    /// Already on the allow list.
    #[error("{target} is already on the allow list")]
    AlreadyAllowed {
        /// The target asked for.
        target: Target,
    },
    /// The same rule exists.
    #[error("an identical rule already exists (id {id})")]
    Duplicate {
        /// The existing rule.
        id: RuleId,
    },
    /// The rule would cover an allow-listed address.
    #[error(
        "{target} covers an allow-listed address; remove the allow entry first or narrow the rule"
    )]
    CoversAllowed {
        /// The rule's target.
        target: Target,
    },
    /// More rules than the kernel walks for one key.
    #[error(
        "{target} would have {count} rules including those inherited from covering prefixes; the kernel evaluates at most {max}"
    )]
    ChainTooLong {
        /// The key whose chain would be too long.
        target: Target,
        /// Its chain length.
        count: usize,
        /// The limit.
        max: u32,
    },
    /// Every rule slot is in use.
    #[error("all {capacity} rule slots are in use; load with a larger rule capacity")]
    Full {
        /// Slot capacity.
        capacity: u32,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_the_problem() {
        let mut r = RuleSpec::drop("192.0.2.1".parse().unwrap());
        assert!(r.validate().is_ok());
        r.ttl = Some(Duration::ZERO);
        assert!(matches!(r.validate(), Err(RuleError::ZeroTtl)));
        r.ttl = None;
        r.scope.proto = Some(Proto::Icmp);
        r.scope.port = Some(80);
        assert!(
            r.validate()
                .unwrap_err()
                .to_string()
                .contains("icmp has no ports")
        );
        assert!(
            "sctp"
                .parse::<Proto>()
                .unwrap_err()
                .to_string()
                .contains("'sctp'")
        );
        assert_eq!("TCP".parse::<Proto>().unwrap(), Proto::Tcp);
    }
}
