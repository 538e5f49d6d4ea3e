//! How rules become nftables set elements.
//!
//! One set per *shape*: what a rule does (allow, observe, drop), its family, the length of its
//! source prefix, and which parts of a scope it names (destination, protocol, port). Each set
//! is a plain hash set of exact keys with `flags timeout` (the kernel expires an element with
//! its rule's TTL) and `counter` (every element counts its packets: per-rule hits). A prefix
//! rule's key is its network address, looked up with the source masked to the prefix's length
//! (`ip saddr & 255.255.255.0 . ip daddr ...`).
//!
//! Why not one set with `flags interval` over `saddr . daddr . l4proto . dport`, the parts a
//! rule leaves open as full ranges: nft 1.0.6 and this kernel accept such a set, but refuse an
//! element that overlaps another ("interval overlaps", EEXIST), and a /24 rule beside a /32
//! inside it is an ordinary state of a rule store. Exact keys never overlap, an element is
//! exactly one rule, and a lookup costs one hash per shape in use (a handful in practice).

use std::{fmt, net::IpAddr};

use ipnet::IpNet;

use crate::{Action, Mode, Proto, RuleSpec, addr::Target};

/// What a set's elements do, in the order their rules run: the allow list accepts before any
/// block, and an observe rule counts even a source a drop rule would drop.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Class {
    /// Allow entries: accept.
    Allow,
    /// Observe rules: count, never drop.
    Observe,
    /// Drop rules (count only while the global mode is observe).
    Drop,
}

impl Class {
    fn name(self) -> &'static str {
        match self {
            Class::Allow => "allow",
            Class::Observe => "observe",
            Class::Drop => "drop",
        }
    }
}

/// The shape of a set (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Shape {
    /// What its elements do.
    pub class: Class,
    /// IPv6 (else IPv4).
    pub v6: bool,
    /// Source prefix length (32 or 128: one address).
    pub prefix: u8,
    /// Its keys name a destination address.
    pub dst: bool,
    /// ... a protocol.
    pub proto: bool,
    /// ... a destination port (TCP or UDP when no protocol is named).
    pub port: bool,
}

/// One element: a set's shape and the key within it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Elem {
    /// Its set.
    pub shape: Shape,
    /// The source (the network address of a prefix).
    pub src: IpAddr,
    /// The scope's destination.
    pub dst: Option<IpAddr>,
    /// The scope's protocol number.
    pub proto: Option<u8>,
    /// The scope's destination port.
    pub port: Option<u16>,
}

/// Why a rule cannot be mirrored.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ShapeError {
    /// A source of one family with a destination of the other matches no packet.
    #[error("source {src} and destination {dst} are of different families")]
    MixedFamilies {
        /// The rule's target.
        src: Target,
        /// Its scope's destination.
        dst: IpAddr,
    },
}

fn network(t: Target) -> (IpAddr, u8) {
    match t {
        Target::Addr(ip) => (ip, if ip.is_ipv4() { 32 } else { 128 }),
        Target::Net(n) => (n.network(), n.prefix_len()),
    }
}

impl Elem {
    /// The element of a rule.
    pub fn of_rule(spec: &RuleSpec) -> Result<Elem, ShapeError> {
        let (src, prefix) = network(spec.target);
        if let Some(dst) = spec.scope.dst
            && dst.is_ipv4() != src.is_ipv4()
        {
            return Err(ShapeError::MixedFamilies {
                src: spec.target,
                dst,
            });
        }
        let class = match spec.action {
            Action::Drop => Class::Drop,
            Action::Observe => Class::Observe,
        };
        Ok(Elem {
            shape: Shape {
                class,
                v6: src.is_ipv6(),
                prefix,
                dst: spec.scope.dst.is_some(),
                proto: spec.scope.proto.is_some(),
                port: spec.scope.port.is_some(),
            },
            src,
            dst: spec.scope.dst,
            proto: spec.scope.proto.map(Proto::number),
            port: spec.scope.port,
        })
    }

    /// The element of an allow entry.
    pub fn of_allow(t: Target) -> Elem {
        let (src, prefix) = network(t);
        Elem {
            shape: Shape {
                class: Class::Allow,
                v6: src.is_ipv6(),
                prefix,
                dst: false,
                proto: false,
                port: false,
            },
            src,
            dst: None,
            proto: None,
            port: None,
        }
    }
}

/// The key as nft writes it: `192.0.2.0 . 203.0.113.10 . 6 . 80`.
impl fmt::Display for Elem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.src)?;
        if let Some(d) = self.dst {
            write!(f, " . {d}")?;
        }
        if let Some(p) = self.proto {
            write!(f, " . {p}")?;
        }
        if let Some(p) = self.port {
            write!(f, " . {p}")?;
        }
        Ok(())
    }
}

impl Shape {
    /// The set's name: `drop_v4_24_dst_proto_port`.
    pub fn set_name(&self) -> String {
        let mut n = format!(
            "{}_v{}_{}",
            self.class.name(),
            if self.v6 { 6 } else { 4 },
            self.prefix
        );
        for (on, part) in [
            (self.dst, "_dst"),
            (self.proto, "_proto"),
            (self.port, "_port"),
        ] {
            if on {
                n.push_str(part);
            }
        }
        n
    }

    /// The shape a set name names; `None` for a name swarmwall does not make.
    pub fn parse(name: &str) -> Option<Shape> {
        let mut parts = name.split('_');
        let class = match parts.next()? {
            "allow" => Class::Allow,
            "observe" => Class::Observe,
            "drop" => Class::Drop,
            _ => return None,
        };
        let v6 = match parts.next()? {
            "v4" => false,
            "v6" => true,
            _ => return None,
        };
        let prefix: u8 = parts.next()?.parse().ok()?;
        if prefix == 0 || prefix > if v6 { 128 } else { 32 } {
            return None;
        }
        let mut s = Shape {
            class,
            v6,
            prefix,
            dst: false,
            proto: false,
            port: false,
        };
        for p in parts {
            let flag = match p {
                "dst" => &mut s.dst,
                "proto" => &mut s.proto,
                "port" => &mut s.port,
                _ => return None,
            };
            if *flag {
                return None;
            }
            *flag = true;
        }
        // Only the canonical spelling (parts in order) is ours.
        (s.set_name() == name && (class != Class::Allow || !(s.dst || s.proto || s.port)))
            .then_some(s)
    }

    fn addr_type(&self) -> &'static str {
        if self.v6 { "ipv6_addr" } else { "ipv4_addr" }
    }

    /// The set's declaration, inside `{ }`.
    pub fn set_body(&self) -> String {
        let mut types = vec![self.addr_type()];
        if self.dst {
            types.push(self.addr_type());
        }
        if self.proto {
            types.push("inet_proto");
        }
        if self.port {
            types.push("inet_service");
        }
        format!("type {}; flags timeout; counter;", types.join(" . "))
    }

    /// The chain rule that looks packets up in the set, in `mode`.
    pub fn rule(&self, mode: Mode) -> String {
        let (fam, width) = if self.v6 { ("ip6", 128) } else { ("ip", 32) };
        let mut rule = String::new();
        if self.port && !self.proto {
            // A port names TCP and UDP alike (as in the XDP program).
            rule.push_str("meta l4proto { tcp, udp } ");
        }
        let mut key = vec![if self.prefix == width {
            format!("{fam} saddr")
        } else {
            let net: IpNet = IpNet::new(
                if self.v6 {
                    IpAddr::from([0u16; 8])
                } else {
                    IpAddr::from([0u8; 4])
                },
                self.prefix,
            )
            .expect("a prefix length within the family, as parse() and of_rule() make it");
            format!("{fam} saddr & {}", net.netmask())
        }];
        if self.dst {
            key.push(format!("{fam} daddr"));
        }
        if self.proto {
            key.push("meta l4proto".into());
        }
        if self.port {
            key.push("th dport".into());
        }
        let verdict = match (self.class, mode) {
            (Class::Allow, _) => " accept",
            (Class::Drop, Mode::Enforce) => " drop",
            (Class::Drop, Mode::Observe) | (Class::Observe, _) => "",
        };
        rule.push_str(&format!(
            "{} @{}{verdict}",
            key.join(" . "),
            self.set_name()
        ));
        rule
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Scope;

    fn spec(target: &str, dst: Option<&str>, proto: Option<Proto>, port: Option<u16>) -> RuleSpec {
        RuleSpec {
            target: target.parse().unwrap(),
            action: Action::Drop,
            scope: Scope {
                dst: dst.map(|d| d.parse().unwrap()),
                proto,
                port,
            },
            ttl: None,
        }
    }

    #[test]
    fn a_scoped_prefix_rule_keeps_its_scope_and_looks_up_the_masked_source() {
        let e = Elem::of_rule(&spec(
            "198.51.100.0/24",
            Some("203.0.113.10"),
            Some(Proto::Tcp),
            Some(443),
        ))
        .unwrap();
        assert_eq!(e.shape.set_name(), "drop_v4_24_dst_proto_port");
        assert_eq!(e.to_string(), "198.51.100.0 . 203.0.113.10 . 6 . 443");
        assert_eq!(
            e.shape.set_body(),
            "type ipv4_addr . ipv4_addr . inet_proto . inet_service; flags timeout; counter;"
        );
        assert_eq!(
            e.shape.rule(Mode::Enforce),
            "ip saddr & 255.255.255.0 . ip daddr . meta l4proto . th dport \
             @drop_v4_24_dst_proto_port drop"
        );
        assert_eq!(
            e.shape.rule(Mode::Observe),
            "ip saddr & 255.255.255.0 . ip daddr . meta l4proto . th dport \
             @drop_v4_24_dst_proto_port",
            "global observe mode counts and never drops"
        );
        assert_eq!(Shape::parse(&e.shape.set_name()), Some(e.shape));
    }

    #[test]
    fn a_port_without_a_protocol_means_tcp_and_udp() {
        let e = Elem::of_rule(&spec("2001:db8::1", None, None, Some(80))).unwrap();
        assert_eq!(e.shape.set_name(), "drop_v6_128_port");
        assert_eq!(
            e.shape.rule(Mode::Enforce),
            "meta l4proto { tcp, udp } ip6 saddr . th dport @drop_v6_128_port drop"
        );
    }

    #[test]
    fn mixed_families_are_refused_and_foreign_set_names_are_not_ours() {
        assert!(matches!(
            Elem::of_rule(&spec("192.0.2.1", Some("2001:db8::1"), None, None)),
            Err(ShapeError::MixedFamilies { .. })
        ));
        for name in [
            "drop_v4_33",
            "drop_v4_0",
            "drop_v4_24_port_dst",
            "drop_v4_24_dst_dst",
            "allow_v4_32_port",
            "crowdsec-blacklists",
            "drop_v5_24",
            "drop_v4_x",
            "",
        ] {
            assert_eq!(Shape::parse(name), None, "{name}");
        }
        let a = Elem::of_allow("10.0.0.0/8".parse().unwrap());
        assert_eq!(
            a.shape.rule(Mode::Observe),
            "ip saddr & 255.0.0.0 @allow_v4_8 accept"
        );
        assert_eq!(Shape::parse("allow_v4_8"), Some(a.shape));
    }
}
