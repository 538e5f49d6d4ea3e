//! HTTPS scenarios with ground truth: deterministic pcaps of TLS ClientHellos to the two sites
//! of [`crate::scenarios`] on port 443, as the kernel sees HTTPS when no access log covers the
//! site. Only the handshakes are there — a SYN, then the hello in one or two segments (a
//! post-quantum hello is ~1.8 KB) — never a path.
//!
//! Every scenario holds the same [`HttpsScenario::Browsing`] baseline for a given seed: the 60
//! visitors of [`crate::scenarios`] (same addresses), each on one browser
//! ([`BROWSER_PROFILES`], so one JA4 each), opening a connection or two per site every 20–90 s
//! (browsers keep connections alive) for 2–5 minutes.
//!
//! [`write_https`] stores a scenario as a pcap with [`Labels`] in `<pcap>.labels.json`:
//! `requests` is 0 (there are no HTTP requests), [`Labels::handshakes`] counts the hellos,
//! `attacked_pages` is empty.

use std::{
    collections::BTreeSet,
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6},
    path::Path,
    str::FromStr,
};

use anyhow::Result;
use pnet::packet::tcp::TcpFlags;

use crate::{
    hello::{BOT_PROFILE, BROWSER_PROFILES, BROWSER_WEIGHTS, Profile, client_hello},
    scenarios::{
        BLOG_HOST, BOTS, EPOCH_US, EVENT_START_US, FLASH_VISITORS, Labels, NAT_ADDR, NAT_USERS,
        Rng, SHOP_HOST, bot_addresses, flash_addresses, tcp_frame, visitor_addresses, write_pcap,
    },
};

/// `shop.example` over TLS.
pub const SHOP_TLS: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 10), 443));
/// `shop.example` over TLS, IPv6.
pub const SHOP6_TLS: SocketAddr = SocketAddr::V6(SocketAddrV6::new(
    Ipv6Addr::new(0x2001, 0xdb8, 0x203, 0, 0, 0, 0, 0x10),
    443,
    0,
    0,
));
/// `blog.example` over TLS.
pub const BLOG_TLS: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 20), 443));
/// `blog.example` over TLS, IPv6.
pub const BLOG6_TLS: SocketAddr = SocketAddr::V6(SocketAddrV6::new(
    Ipv6Addr::new(0x2001, 0xdb8, 0x203, 0, 0, 0, 0, 0x20),
    443,
    0,
    0,
));
/// The payload of one segment (a 1500-byte MTU, TCP timestamps on).
pub const MSS: usize = 1448;

const SECOND: u64 = 1_000_000;
const MS: u64 = 1_000;

/// An HTTPS scenario. All include the [`Browsing`](HttpsScenario::Browsing) baseline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HttpsScenario {
    /// The 60 visitors' handshakes only.
    Browsing,
    /// Browsing plus, from t = 60 s, the 200 bots of [`crate::scenarios`] each opening a new
    /// TLS connection to `shop.example` (SNI, port 443) every 0.6–2 s for 60–120 s, all with
    /// one client library's hello ([`BOT_PROFILE`], one JA4).
    Swarm,
    /// Browsing plus 800 new visitors within ~20 s from t = 60 s, one or two handshakes each
    /// to `shop.example`, on the browsers' several JA4s.
    FlashCrowd,
    /// Browsing plus 80 users behind 198.51.100.250, each on their own browser (so many JA4s
    /// and `User-Agent`s from one address), handshaking like visitors do.
    Nat,
}

impl HttpsScenario {
    /// Every HTTPS scenario, in a fixed order.
    pub fn all() -> [HttpsScenario; 4] {
        [
            HttpsScenario::Browsing,
            HttpsScenario::Swarm,
            HttpsScenario::FlashCrowd,
            HttpsScenario::Nat,
        ]
    }

    /// `https-browsing`, `https-swarm`, `https-flash-crowd`, `https-nat`: the pcap's name.
    pub fn name(self) -> &'static str {
        match self {
            HttpsScenario::Browsing => "https-browsing",
            HttpsScenario::Swarm => "https-swarm",
            HttpsScenario::FlashCrowd => "https-flash-crowd",
            HttpsScenario::Nat => "https-nat",
        }
    }

    /// Whether the scenario holds a bot swarm.
    pub fn has_swarm(self) -> bool {
        self == HttpsScenario::Swarm
    }
}

impl fmt::Display for HttpsScenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for HttpsScenario {
    type Err = anyhow::Error;

    /// A [`name`](HttpsScenario::name), case and `-`/`_` ignored.
    fn from_str(s: &str) -> Result<Self> {
        crate::scenarios::by_name(
            &HttpsScenario::all(),
            HttpsScenario::name,
            s,
            "HTTPS scenario",
        )
    }
}

/// The frames of a TLS connection's start as the client sends them: a SYN one round trip
/// (`rtt_us`) before `ts_us`, then `hello` in segments of at most [`MSS`] bytes, 50 µs apart,
/// in sequence from `isn`. Timestamps are µs since the Unix epoch.
#[allow(clippy::too_many_arguments)]
pub fn handshake_frames(
    src: IpAddr,
    sport: u16,
    dst: SocketAddr,
    ts_us: u64,
    rtt_us: u64,
    isn: u32,
    ttl: u8,
    hello: &[u8],
) -> Vec<(u64, Vec<u8>)> {
    let mut out = vec![(
        ts_us.saturating_sub(rtt_us),
        tcp_frame(src, sport, dst, TcpFlags::SYN, isn, 0, ttl, &[]),
    )];
    let ack = isn.rotate_left(13) ^ 0x5357;
    let mut seq = isn.wrapping_add(1);
    for (i, seg) in hello.chunks(MSS).enumerate() {
        out.push((
            ts_us + 50 * i as u64,
            tcp_frame(
                src,
                sport,
                dst,
                TcpFlags::PSH | TcpFlags::ACK,
                seq,
                ack,
                ttl,
                seg,
            ),
        ));
        seq = seq.wrapping_add(seg.len() as u32);
    }
    out
}

/// One client: its address, browser and port allocator.
struct Client {
    ip: IpAddr,
    profile: &'static Profile,
    rng: Rng,
    port: u16,
    ttl: u8,
    rtt_us: u64,
}

impl Client {
    fn new(ip: IpAddr, profile: &'static Profile, mut rng: Rng) -> Self {
        let port = rng.range(32768, 60999) as u16;
        let ttl = 64 - rng.range(5, 18) as u8;
        let rtt_us = rng.range(8 * MS, 120 * MS);
        Client {
            ip,
            profile,
            rng,
            port,
            ttl,
            rtt_us,
        }
    }

    fn browser(ip: IpAddr, mut rng: Rng) -> Self {
        let profile = &BROWSER_PROFILES[rng.weighted(&BROWSER_WEIGHTS)];
        Client::new(ip, profile, rng)
    }
}

struct Gen {
    frames: Vec<(u64, u64, Vec<u8>)>,
    handshakes: usize,
    syns: usize,
    bot_handshakes: usize,
    /// Shared ports of the NAT (sequential), when the client is behind it.
    nat_port: u16,
}

impl Gen {
    /// One handshake of `c` to `host` at `dst`, `t` µs after the scenario's start.
    fn handshake(&mut self, c: &mut Client, host: &str, dst: SocketAddr, t: u64, nat: bool) {
        let sport = if nat {
            self.nat_port = if self.nat_port == u16::MAX {
                1024
            } else {
                self.nat_port + 1
            };
            self.nat_port
        } else {
            c.port = if c.port >= 60999 { 32768 } else { c.port + 1 };
            c.port
        };
        let isn = c.rng.next_u64() as u32;
        let hello = client_hello(c.profile, host, c.rng.next_u64());
        for (ts, frame) in
            handshake_frames(c.ip, sport, dst, EPOCH_US + t, c.rtt_us, isn, c.ttl, &hello)
        {
            let order = self.frames.len() as u64;
            self.frames.push((ts, order, frame));
        }
        self.syns += 1;
        self.handshakes += 1;
    }

    /// A visitor's session: a connection or two per site visit, every `gap` µs.
    fn browse(
        &mut self,
        c: &mut Client,
        sites: &[(&str, SocketAddr)],
        plan: (u64, u64),
        nat: bool,
    ) {
        let (start, duration) = plan;
        let mut t = start;
        while t < start + duration {
            let (host, dst) = sites[c.rng.below(sites.len() as u64) as usize];
            let conns = 1 + u64::from(c.rng.chance(0.4));
            for k in 0..conns {
                self.handshake(c, host, dst, t + k * 3 * MS, nat);
            }
            t += c.rng.range(20 * SECOND, 90 * SECOND);
        }
    }
}

fn site_of(ip: IpAddr, v4: SocketAddr, v6: SocketAddr) -> SocketAddr {
    if ip.is_ipv4() { v4 } else { v6 }
}

/// Generates an HTTPS scenario: its frames in time order (timestamp µs since the Unix epoch,
/// Ethernet frame) and its labels. Deterministic: the same `(s, seed)` gives the same bytes.
pub fn generate_https(s: HttpsScenario, seed: u64) -> (Vec<(u64, Vec<u8>)>, Labels) {
    let mut g = Gen {
        frames: Vec::new(),
        handshakes: 0,
        syns: 0,
        bot_handshakes: 0,
        nat_port: 1024,
    };
    let mut labels = Labels::empty(s.name(), seed);
    let mut legit = BTreeSet::new();
    let visitors = visitor_addresses(&mut Rng::new(seed, "addresses/visitors"));
    for (i, &ip) in visitors.iter().enumerate() {
        legit.insert(ip);
        let mut rng = Rng::new(seed, &format!("https/visitor/{i}"));
        let start = rng.range(SECOND, 120 * SECOND);
        let duration = rng.range(120 * SECOND, 300 * SECOND);
        let mut c = Client::browser(ip, rng);
        let shop = (SHOP_HOST, site_of(ip, SHOP_TLS, SHOP6_TLS));
        let blog = (BLOG_HOST, site_of(ip, BLOG_TLS, BLOG6_TLS));
        let sites: Vec<(&str, SocketAddr)> = match i % 20 {
            0..11 => vec![shop],
            11..17 => vec![blog],
            _ => vec![shop, blog],
        };
        g.browse(&mut c, &sites, (start, duration), false);
    }
    match s {
        HttpsScenario::Browsing => {}
        HttpsScenario::Swarm => {
            let bots = bot_addresses(&mut Rng::new(seed, "addresses/bots"));
            assert_eq!(bots.len(), BOTS);
            for (i, &ip) in bots.iter().enumerate() {
                let rng = Rng::new(seed, &format!("https/bot/{i}"));
                let mut c = Client::new(ip, &BOT_PROFILE, rng);
                c.rtt_us = c.rng.range(20 * MS, 200 * MS);
                let start = EVENT_START_US + c.rng.range(0, 5 * SECOND);
                let end = start + c.rng.range(60 * SECOND, 120 * SECOND);
                let dst = site_of(ip, SHOP_TLS, SHOP6_TLS);
                let mut t = start;
                while t < end {
                    g.handshake(&mut c, SHOP_HOST, dst, t, false);
                    g.bot_handshakes += 1;
                    t += c.rng.range(600 * MS, 2 * SECOND);
                }
            }
            labels.swarm_members = bots;
            labels.attacked_site = Some(SHOP_TLS);
            labels.attacked_site_addrs = vec![SHOP_TLS, SHOP6_TLS];
            labels.attacked_host = Some(SHOP_HOST.to_owned());
            labels.bot_only_prefixes = vec![
                "100.64.0.0/24".into(),
                "2001:db8:bad:1::/64".into(),
                "2001:db8:bad::/48".into(),
            ];
            labels.mixed_prefixes = vec!["192.0.2.0/24".into()];
            labels.shared_address_space = vec!["100.64.0.0/16".into()];
        }
        HttpsScenario::FlashCrowd => {
            let crowd = flash_addresses(&mut Rng::new(seed, "addresses/flash"), &visitors);
            assert_eq!(crowd.len(), FLASH_VISITORS);
            for (i, &ip) in crowd.iter().enumerate() {
                legit.insert(ip);
                let rng = Rng::new(seed, &format!("https/flash/{i}"));
                let mut c = Client::browser(ip, rng);
                let u = c.rng.unit();
                let start = EVENT_START_US + (u * u * 20.0 * SECOND as f64) as u64;
                let dst = site_of(ip, SHOP_TLS, SHOP6_TLS);
                let conns = 1 + u64::from(c.rng.chance(0.4));
                for k in 0..conns {
                    g.handshake(&mut c, SHOP_HOST, dst, start + k * 3 * MS, false);
                }
            }
        }
        HttpsScenario::Nat => {
            let nat = IpAddr::V4(NAT_ADDR);
            legit.insert(nat);
            labels.nat.push(nat);
            let mut nat_rng = Rng::new(seed, "https/nat");
            g.nat_port = nat_rng.range(1024, 65535) as u16;
            let hops = nat_rng.range(6, 14) as u8;
            for i in 0..NAT_USERS {
                let rng = Rng::new(seed, &format!("https/nat/{i}"));
                let mut c = Client::browser(nat, rng);
                c.ttl = 64 - hops;
                let start = c.rng.range(SECOND, 120 * SECOND);
                let duration = c.rng.range(120 * SECOND, 300 * SECOND);
                let sites = [(SHOP_HOST, SHOP_TLS), (BLOG_HOST, BLOG_TLS)];
                g.browse(&mut c, &sites, (start, duration), true);
            }
        }
    }
    let mut frames = std::mem::take(&mut g.frames);
    frames.sort_by_key(|f| (f.0, f.1));
    let frames: Vec<(u64, Vec<u8>)> = frames.into_iter().map(|(ts, _, f)| (ts, f)).collect();
    labels.handshakes = g.handshakes;
    labels.syns = g.syns;
    labels.swarm_requests = g.bot_handshakes;
    labels.first_us = frames.first().map_or(EPOCH_US, |f| f.0);
    labels.last_us = frames.last().map_or(EPOCH_US, |f| f.0);
    labels.swarm_members.sort();
    labels.legitimate = legit.into_iter().collect();
    (frames, labels)
}

/// Generates an HTTPS scenario and writes it to `pcap` with its labels next to it (as
/// [`crate::scenarios::write()`] does); returns the labels.
pub fn write_https(s: HttpsScenario, seed: u64, pcap: &Path) -> Result<Labels> {
    let (frames, labels) = generate_https(s, seed);
    write_pcap(&frames, &labels, pcap)?;
    Ok(labels)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use pnet::packet::{
        Packet as _, ethernet::EthernetPacket, ipv4::Ipv4Packet, ipv6::Ipv6Packet, tcp::TcpPacket,
    };

    use super::*;

    /// (source, destination port, payload) of each frame.
    fn decode(frame: &[u8]) -> (IpAddr, u16, Vec<u8>) {
        let eth = EthernetPacket::new(frame).unwrap();
        let (src, l4) = match eth.get_ethertype().0 {
            0x0800 => {
                let ip = Ipv4Packet::new(eth.payload()).unwrap();
                (IpAddr::V4(ip.get_source()), ip.payload().to_vec())
            }
            _ => {
                let ip = Ipv6Packet::new(eth.payload()).unwrap();
                (IpAddr::V6(ip.get_source()), ip.payload().to_vec())
            }
        };
        let tcp = TcpPacket::new(&l4).unwrap();
        (src, tcp.get_destination(), tcp.payload().to_vec())
    }

    #[test]
    fn same_seed_same_bytes_and_names_parse() {
        let (a, la) = generate_https(HttpsScenario::Nat, 3);
        let (b, lb) = generate_https(HttpsScenario::Nat, 3);
        assert_eq!(a, b);
        assert_eq!(la, lb);
        assert_ne!(generate_https(HttpsScenario::Nat, 4).0, a);
        for s in HttpsScenario::all() {
            assert_eq!(s.name().parse::<HttpsScenario>().unwrap(), s);
        }
        assert!("https_flash_crowd".parse::<HttpsScenario>().is_ok());
        assert!("swarm".parse::<HttpsScenario>().is_err());
    }

    #[test]
    fn frames_are_syns_and_hellos_to_443_and_labels_add_up() {
        for s in HttpsScenario::all() {
            let (frames, labels) = generate_https(s, 1);
            assert!(frames.windows(2).all(|w| w[0].0 <= w[1].0), "{s}");
            let mut syns = 0;
            let mut hello_starts = 0;
            let mut sources = BTreeSet::new();
            let mut two_segments = 0;
            for (_, f) in &frames {
                let (src, port, payload) = decode(f);
                assert_eq!(port, 443);
                sources.insert(src);
                if payload.is_empty() {
                    syns += 1;
                } else if payload.starts_with(&[0x16, 3, 1]) && payload.get(5) == Some(&1) {
                    hello_starts += 1;
                    let len = usize::from(u16::from_be_bytes([payload[3], payload[4]])) + 5;
                    two_segments += usize::from(len > MSS);
                }
            }
            assert_eq!(
                (syns, hello_starts),
                (labels.syns, labels.handshakes),
                "{s}"
            );
            assert!(two_segments > 0, "{s}: some hellos are post-quantum sized");
            let labelled: BTreeSet<IpAddr> = labels
                .swarm_members
                .iter()
                .chain(&labels.legitimate)
                .copied()
                .collect();
            assert_eq!(sources, labelled, "{s}");
        }
    }

    #[test]
    fn the_swarm_repeats_one_hello_shape_the_nat_many() {
        let (frames, labels) = generate_https(HttpsScenario::Swarm, 1);
        let members: BTreeSet<IpAddr> = labels.swarm_members.iter().copied().collect();
        let mut per_bot: BTreeMap<IpAddr, usize> = BTreeMap::new();
        for (_, f) in &frames {
            let (src, _, payload) = decode(f);
            if members.contains(&src) && payload.starts_with(&[0x16, 3, 1]) {
                *per_bot.entry(src).or_default() += 1;
            }
        }
        assert_eq!(per_bot.len(), BOTS);
        assert!(per_bot.values().all(|&n| n >= 30), "{per_bot:?}");
        let (_, nat) = generate_https(HttpsScenario::Nat, 1);
        assert_eq!(nat.nat, vec![IpAddr::V4(NAT_ADDR)]);
        assert!(nat.swarm_members.is_empty());
    }
}
