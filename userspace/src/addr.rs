//! Addresses and prefixes as the kernel keys them: 16 bytes, IPv4 as IPv4-mapped IPv6.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    str::FromStr,
};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use swarmwall_maps::{Addr, is_v4_mapped, v4_mapped};

/// Errors from parsing an address or prefix.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AddrError {
    /// Neither an address nor a prefix.
    #[error(
        "'{value}' is not an IP address or prefix (examples: 192.0.2.7, 198.51.100.0/24, 2001:db8::/32)"
    )]
    Syntax {
        /// The rejected text.
        value: String,
    },
    /// A `/0` prefix: every address.
    #[error("'{value}' covers every address; refusing")]
    Everything {
        /// The rejected text.
        value: String,
    },
    /// Bits set below the prefix length.
    #[error("'{value}' has host bits set (did you mean {suggestion}?)")]
    HostBits {
        /// The rejected text.
        value: String,
        /// The prefix with host bits cleared.
        suggestion: String,
    },
    /// An IPv6 prefix that covers IPv4-mapped space, which the kernel keys IPv4 by.
    #[error(
        "'{value}' overlaps the IPv4-mapped range ::ffff:0:0/96; write IPv4 prefixes in IPv4 notation"
    )]
    OverlapsV4Mapped {
        /// The rejected text.
        value: String,
    },
}

/// The kernel key of an IP address.
pub fn to_key(ip: IpAddr) -> Addr {
    match ip {
        IpAddr::V4(v4) => v4_mapped(v4.octets()),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// The IP address of a kernel key, IPv4-mapped keys shown as IPv4.
pub fn from_key(key: &Addr) -> IpAddr {
    if is_v4_mapped(key) {
        IpAddr::V4(Ipv4Addr::new(key[12], key[13], key[14], key[15]))
    } else {
        IpAddr::V6(Ipv6Addr::from(*key))
    }
}

/// What a rule or allow entry covers: one address or a prefix. A host route written as a prefix
/// (`/32`, `/128`) is a single address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    /// One address: the exact-match map.
    Addr(IpAddr),
    /// A prefix shorter than a host route: the LPM trie.
    Net(IpNet),
}

impl Target {
    /// The key in the 128-bit kernel address space: address bits and prefix length.
    pub fn key(&self) -> (Addr, u32) {
        match *self {
            Target::Addr(ip) => (to_key(ip), 128),
            Target::Net(IpNet::V4(n)) => {
                (v4_mapped(n.network().octets()), 96 + n.prefix_len() as u32)
            }
            Target::Net(IpNet::V6(n)) => (n.network().octets(), n.prefix_len() as u32),
        }
    }

    /// The prefix this target stands for (a host route for a single address).
    pub fn net(&self) -> IpNet {
        match *self {
            Target::Addr(ip) => IpNet::from(ip),
            Target::Net(n) => n,
        }
    }

    /// True if `ip` falls inside this target.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.net().contains(&ip)
    }

    /// Prefix length in the target's own family (32/128 for a single address).
    pub fn prefix_len(&self) -> u8 {
        self.net().prefix_len()
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Addr(ip) => write!(f, "{ip}"),
            Target::Net(n) => write!(f, "{n}"),
        }
    }
}

impl FromStr for Target {
    type Err = AddrError;

    fn from_str(s: &str) -> Result<Self, AddrError> {
        let value = s.trim();
        if let Ok(ip) = value.parse::<IpAddr>() {
            return Ok(Target::Addr(canonical_ip(ip)));
        }
        let net: IpNet = value.parse().map_err(|_| AddrError::Syntax {
            value: value.to_owned(),
        })?;
        let net = canonical_net(net);
        if net.prefix_len() == 0 {
            return Err(AddrError::Everything {
                value: value.to_owned(),
            });
        }
        if net.trunc() != net {
            return Err(AddrError::HostBits {
                value: value.to_owned(),
                suggestion: net.trunc().to_string(),
            });
        }
        if net.prefix_len() == net.max_prefix_len() {
            return Ok(Target::Addr(net.addr()));
        }
        if let IpNet::V6(n) = net {
            let mapped = Ipv6Net::new(Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0, 0), 96)
                .expect("a /96 is a valid prefix");
            if n.contains(&mapped) {
                return Err(AddrError::OverlapsV4Mapped {
                    value: value.to_owned(),
                });
            }
        }
        Ok(Target::Net(net))
    }
}

/// IPv4-mapped IPv6 written as IPv6 is the same key; show and store it as IPv4.
fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

fn canonical_net(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(n) if n.prefix_len() >= 96 => match n.addr().to_ipv4_mapped() {
            Some(v4) => Ipv4Net::new(v4, n.prefix_len() - 96)
                .map(IpNet::V4)
                .unwrap_or(net),
            None => net,
        },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Result<Target, AddrError> {
        s.parse()
    }

    #[test]
    fn host_routes_are_single_addresses() {
        assert_eq!(
            t("192.0.2.7/32").unwrap(),
            Target::Addr("192.0.2.7".parse().unwrap())
        );
        assert_eq!(
            t("2001:db8::1/128").unwrap(),
            Target::Addr("2001:db8::1".parse().unwrap())
        );
        assert_eq!(
            t(" 192.0.2.7 ").unwrap(),
            Target::Addr("192.0.2.7".parse().unwrap())
        );
    }

    #[test]
    fn v4_mapped_v6_is_v4() {
        assert_eq!(t("::ffff:192.0.2.7").unwrap(), t("192.0.2.7").unwrap());
        assert_eq!(
            t("::ffff:198.51.100.0/120").unwrap(),
            t("198.51.100.0/24").unwrap()
        );
    }

    #[test]
    fn bad_input_names_the_value() {
        let e = t("10.0.0.1/8").unwrap_err();
        assert_eq!(
            e.to_string(),
            "'10.0.0.1/8' has host bits set (did you mean 10.0.0.0/8?)"
        );
        assert!(matches!(t("0.0.0.0/0"), Err(AddrError::Everything { .. })));
        assert!(matches!(t("::/0"), Err(AddrError::Everything { .. })));
        assert!(
            t("300.1.1.1")
                .unwrap_err()
                .to_string()
                .contains("'300.1.1.1'")
        );
        assert!(matches!(t("1.2.3.0/33"), Err(AddrError::Syntax { .. })));
        assert!(matches!(t(""), Err(AddrError::Syntax { .. })));
        assert!(matches!(t("::/8"), Err(AddrError::OverlapsV4Mapped { .. })));
    }

    #[test]
    fn keys_live_in_one_space() {
        let (k, l) = t("198.51.100.0/24").unwrap().key();
        assert_eq!(l, 120);
        assert_eq!(k, v4_mapped([198, 51, 100, 0]));
        let (k, l) = t("2001:db8::/32").unwrap().key();
        assert_eq!(l, 32);
        assert_eq!(&k[..4], &[0x20, 0x01, 0x0d, 0xb8]);
        assert_eq!(
            from_key(&to_key("192.0.2.1".parse().unwrap())).to_string(),
            "192.0.2.1"
        );
    }
}
