//! Traffic scenarios with ground truth: deterministic pcaps of web traffic to two small sites,
//! some with a bot swarm in them, for testing `swarmwall analyze` and for trying it out.
//!
//! Every scenario is built from [`generate`]`(scenario, seed)`: the same seed gives the same bytes,
//! on any machine. [`write()`] stores it as a classic pcap (Ethernet link type, microsecond
//! timestamps) with its [`Labels`] — who the swarm is, which site and pages it attacks, which
//! sources are legitimate — as JSON in `<pcap>.labels.json` ([`labels_path`]).
//!
//! # The sites
//!
//! Two tenants on one host, port 80, each with an IPv4 and an IPv6 address (IPv6 clients use
//! the latter; [`sites`] lists every page and its assets):
//! - `shop.example` at 203.0.113.10 and 2001:db8:203::10: 40 pages — `/`, `/cart`, `/about`, `/contact`, `/account`,
//!   `/category/<name>` (6), `/product/1`–`/product/21`, `/gallery/1`–`/gallery/8` — each with
//!   7–15 assets (`/static/css/site.css`, `/static/js/app.js`, `/img/product-<n>-<k>.jpg`, ...)
//!   shared across pages. The galleries are image-heavy (15 assets).
//! - `blog.example` at 203.0.113.20 and 2001:db8:203::20: 40 pages — `/`, `/about`, `/archive`, `/contact`,
//!   `/tag/<name>` (6), `/post/1`–`/post/30` — each with 5–11 assets.
//!
//! # The traffic
//!
//! Each HTTP request is one Ethernet/IPv4 or IPv6/TCP segment, PSH|ACK, carrying a complete
//! HTTP/1.1 request in the header order of the browser (or tool) that sends it. Each TCP
//! connection starts with a SYN one round trip before its first request ([`Labels::syns`]
//! counts them apart from [`Labels::requests`]); sequence numbers start at a random ISN and
//! advance by each request's length, acknowledgement numbers by a plausible response size.
//! Browsers keep up to 6 connections per site alive for 60 s; they cache assets, so a page's
//! assets are fetched the first time a visitor needs them only (a repeat view of a page is its
//! HTML alone). Some category views carry a query string (`?sort=price`); some product views
//! are followed by a form `POST /cart/add` and the `GET /cart` it redirects to.
//!
//! Addresses are from documentation ranges only:
//!
//! | who | where |
//! |---|---|
//! | legitimate visitors | 198.51.100.0/24 (.1–.199, .201–.249), 2001:db8:100::/64, and 192.0.2.200–.202 |
//! | NAT gateway (80 users) | 198.51.100.250 |
//! | crawler | 198.51.100.200 |
//! | bots | 192.0.2.1–.199 (90), 100.64.0.0/24 (50), one each in 30 other /24s of 100.64.0.0/16, 2001:db8:bad:1::/64 (20), ten other /64s of 2001:db8:bad::/48 |
//! | wide-swarm bots | ten each in 180 /24s of 198.18.0.0/16, 192.0.2.1–.199 (20), 2001:db8:bad:1::/64 (100), 80 other /64s of 2001:db8:bad::/48 |
//!
//! 198.18.0.0/15 is RFC 2544's benchmarking range: never a real source.
//! 100.64.0.0/16 is RFC 6598 *shared address space* (carrier-grade NAT): a real source there may
//! be many subscribers. [`Labels::shared_address_space`] says when a capture uses it.
//!
//! # The scenarios
//!
//! Every scenario contains the same [`Scenario::Browsing`] traffic for a given seed (the actors
//! draw from separate random streams), so a test can compare what a detector says with and
//! without the extra actors. See [`Scenario`] for what each adds.

use std::{
    collections::BTreeSet,
    fmt, fs,
    io::{BufWriter, Write as _},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6},
    path::{Path, PathBuf},
    str::FromStr,
    time::Duration,
};

use anyhow::{Context as _, Result};
use pcap_file::{
    DataLink, Endianness, TsResolution,
    pcap::{PcapHeader, PcapPacket, PcapWriter},
};
use pnet::packet::{
    Packet as _,
    ipv4::{self, Ipv4Flags, MutableIpv4Packet},
    ipv6::MutableIpv6Packet,
    tcp::{MutableTcpPacket, TcpFlags},
};
use serde::{Deserialize, Serialize};

use crate::packets::Frame;

/// Capture time of a scenario's start (2024-05-01T12:00:00Z), µs since the Unix epoch. Every
/// timestamp is this plus the actors' offsets.
pub const EPOCH_US: u64 = 1_714_564_800_000_000;

/// `shop.example`'s address.
pub const SHOP: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 10), 80));
/// `blog.example`'s address.
pub const BLOG: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 20), 80));
/// `shop.example`'s IPv6 address, where IPv6 clients go.
pub const SHOP6: SocketAddr = SocketAddr::V6(SocketAddrV6::new(
    Ipv6Addr::new(0x2001, 0xdb8, 0x203, 0, 0, 0, 0, 0x10),
    80,
    0,
    0,
));
/// `blog.example`'s IPv6 address, where IPv6 clients go.
pub const BLOG6: SocketAddr = SocketAddr::V6(SocketAddrV6::new(
    Ipv6Addr::new(0x2001, 0xdb8, 0x203, 0, 0, 0, 0, 0x20),
    80,
    0,
    0,
));
/// The shop's `Host`.
pub const SHOP_HOST: &str = "shop.example";
/// The blog's `Host`.
pub const BLOG_HOST: &str = "blog.example";
/// The NAT gateway of [`Scenario::Nat`].
pub const NAT_ADDR: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 250);
/// Users behind [`NAT_ADDR`].
pub const NAT_USERS: usize = 80;
/// The crawler of [`Scenario::Crawler`].
pub const CRAWLER_ADDR: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 200);
/// The crawler's `User-Agent`.
pub const CRAWLER_UA: &str =
    "Mozilla/5.0 (compatible; ExampleBot/2.1; +http://example.invalid/bot)";
/// Legitimate visitors of the browsing baseline.
pub const VISITORS: usize = 60;
/// Bots of the swarm scenarios.
pub const BOTS: usize = 200;
/// Bots of [`Scenario::WideSwarm`].
pub const WIDE_BOTS: usize = 2000;
/// The page [`Scenario::WideSwarm`] hammers.
pub const WIDE_PAGE: &str = "/gallery/3";
/// New visitors of [`Scenario::FlashCrowd`].
pub const FLASH_VISITORS: usize = 800;
/// When the swarm (or the flash crowd) starts, µs after [`EPOCH_US`].
pub const EVENT_START_US: u64 = 60_000_000;
/// Most HTTP requests any scenario holds (the browser-like swarms': each view is 16).
pub const MAX_REQUESTS: usize = 80_000;
/// Largest pcap any scenario makes, bytes.
pub const MAX_PCAP_BYTES: u64 = 40_000_000;

/// The legitimate browsers placed inside the bots' 192.0.2.0/24.
const LEGIT_IN_BOT_NET: [Ipv4Addr; 3] = [
    Ipv4Addr::new(192, 0, 2, 200),
    Ipv4Addr::new(192, 0, 2, 201),
    Ipv4Addr::new(192, 0, 2, 202),
];
const V4_VISITORS: usize = 42;
const V6_VISITORS: usize = VISITORS - V4_VISITORS - LEGIT_IN_BOT_NET.len();
const BOTS_192: usize = 90;
const BOTS_CGN_24: usize = 50;
const BOTS_CGN_SCATTERED: usize = 30;
const BOTS_V6_ONE_64: usize = 20;
const BOTS_V6_SCATTERED: usize =
    BOTS - BOTS_192 - BOTS_CGN_24 - BOTS_CGN_SCATTERED - BOTS_V6_ONE_64;

const SECOND: u64 = 1_000_000;
const MS: u64 = 1_000;
/// Browsers open at most this many connections per site.
const BROWSER_CONNS: usize = 6;

// ---------------------------------------------------------------------------------------------
// Scenarios and labels
// ---------------------------------------------------------------------------------------------

/// A traffic scenario. All include the [`Browsing`](Scenario::Browsing) baseline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scenario {
    /// 60 legitimate visitors (42 IPv4 in 198.51.100.0/24, 15 IPv6 in 2001:db8:100::/64, 3 in
    /// 192.0.2.200–.202), each browsing one or both sites for 2–5 minutes: a page view every
    /// 5–40 s, its assets within about a second with the page as `Referer`.
    Browsing,
    /// Browsing plus, from t = 60 s, 200 bots requesting `shop.example`'s `/gallery/7` and
    /// `/gallery/8` (HTML only) at 1–4 requests/s each for 60–120 s.
    Swarm,
    /// Browsing plus 800 new visitors within ~20 s from t = 60 s, each loading `/product/1` with
    /// all its assets, then 0–2 more pages.
    FlashCrowd,
    /// Browsing plus 80 users behind one NAT address, 198.51.100.250, browsing both sites.
    Nat,
    /// Browsing plus a crawler at 198.51.100.200 fetching each site's `/robots.txt` and then
    /// every page of both sites once, 2 requests/s, HTML only.
    Crawler,
    /// Browsing plus the swarm's 200 bots attacking `blog.example`'s `/post/3` and `/post/4`;
    /// `shop.example` sees only legitimate traffic.
    MultiTenant,
    /// Browsing plus a wide, low-rate swarm: from t = 60 s to 300 s, 2000 bots each fetch
    /// `shop.example`'s [`WIDE_PAGE`] once every 30–60 s with a random query string (HTML only,
    /// no Referer), about 50 requests/s in all, while no bot ever sends 8 requests in 30 s.
    WideSwarm,
    /// Browsing plus, from t = 60 s, the swarm's 200 bots loading `shop.example`'s
    /// `/gallery/1` and `/gallery/2` the way `wget -p` or a headless browser does: the page
    /// and then all its 15 assets, no cache, a view every 1-1.5 s for 22-30 s. Each bot keeps
    /// one `User-Agent` (wget, headless Chrome, or a script); most send the page as `Referer`
    /// with its assets, the scripts send none.
    BrowserSwarm,
    /// [`BrowserSwarm`](Scenario::BrowserSwarm)'s bots, but each view with another real
    /// browser's `User-Agent` (and its header order) and a random ~60 % of the page's assets;
    /// half of them send no `Referer`.
    BrowserSwarmRotating,
}

impl Scenario {
    /// Every scenario, in a fixed order.
    pub const fn all() -> [Scenario; 9] {
        [
            Scenario::Browsing,
            Scenario::Swarm,
            Scenario::FlashCrowd,
            Scenario::Nat,
            Scenario::Crawler,
            Scenario::MultiTenant,
            Scenario::WideSwarm,
            Scenario::BrowserSwarm,
            Scenario::BrowserSwarmRotating,
        ]
    }

    /// The scenario's name, as [`FromStr`] accepts it and as its pcap is named:
    /// `browsing`, `swarm`, `flash-crowd`, `nat`, `crawler`, `multi-tenant`, `wide-swarm`,
    /// `browser-swarm`, `browser-swarm-rotating`.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Browsing => "browsing",
            Scenario::Swarm => "swarm",
            Scenario::FlashCrowd => "flash-crowd",
            Scenario::Nat => "nat",
            Scenario::Crawler => "crawler",
            Scenario::MultiTenant => "multi-tenant",
            Scenario::WideSwarm => "wide-swarm",
            Scenario::BrowserSwarm => "browser-swarm",
            Scenario::BrowserSwarmRotating => "browser-swarm-rotating",
        }
    }

    /// Whether the scenario holds a bot swarm.
    pub fn has_swarm(self) -> bool {
        matches!(
            self,
            Scenario::Swarm
                | Scenario::MultiTenant
                | Scenario::WideSwarm
                | Scenario::BrowserSwarm
                | Scenario::BrowserSwarmRotating
        )
    }
}

/// The one of `all` whose `name` is `s`, case and `-`/`_` ignored; an error naming `s` and
/// every name (`what`: the kind, for the message) otherwise.
pub(crate) fn by_name<T: Copy>(
    all: &[T],
    name: impl Fn(T) -> &'static str,
    s: &str,
    what: &str,
) -> Result<T> {
    let squash = |s: &str| {
        s.chars()
            .filter(|c| !matches!(c, '-' | '_'))
            .collect::<String>()
            .to_ascii_lowercase()
    };
    let wanted = squash(s);
    all.iter()
        .copied()
        .find(|sc| squash(name(*sc)) == wanted)
        .with_context(|| {
            let names: Vec<_> = all.iter().map(|s| name(*s)).collect();
            format!("unknown {what} {s:?}; one of: {}", names.join(", "))
        })
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Scenario {
    type Err = anyhow::Error;

    /// A scenario's [`name`](Scenario::name), case and `-`/`_` ignored (`FlashCrowd`,
    /// `flash_crowd` and `flash-crowd` all work).
    fn from_str(s: &str) -> Result<Self> {
        by_name(&Scenario::all(), Scenario::name, s, "scenario")
    }
}

/// The ground truth of a scenario, stored as JSON next to its pcap.
///
/// Address lists are sorted and free of duplicates. Every source in the capture is in exactly
/// one of [`swarm_members`](Labels::swarm_members) and [`legitimate`](Labels::legitimate).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Labels {
    /// The scenario's [`name`](Scenario::name).
    pub scenario: String,
    /// The seed it was generated with.
    pub seed: u64,
    /// HTTP requests (PSH|ACK frames with a payload).
    pub requests: usize,
    /// TLS ClientHellos (HTTPS scenarios, see [`crate::https_scenarios`]; 0 in the others).
    #[serde(default)]
    pub handshakes: usize,
    /// Connection-opening SYN frames (no payload); frames in the pcap = requests + syns.
    #[serde(default)]
    pub syns: usize,
    /// Requests sent by swarm members.
    #[serde(default)]
    pub swarm_requests: usize,
    /// Timestamp of the first frame, µs since the Unix epoch.
    #[serde(default)]
    pub first_us: u64,
    /// Timestamp of the last frame, µs since the Unix epoch.
    #[serde(default)]
    pub last_us: u64,
    /// The bots: what a detector should find (and block).
    pub swarm_members: Vec<IpAddr>,
    /// The site the swarm attacks, if there is one.
    pub attacked_site: Option<SocketAddr>,
    /// Every address of the attacked site: IPv4 ([`attacked_site`](Labels::attacked_site)) and
    /// IPv6 (where the IPv6 bots go).
    #[serde(default)]
    pub attacked_site_addrs: Vec<SocketAddr>,
    /// The attacked site's `Host`.
    #[serde(default)]
    pub attacked_host: Option<String>,
    /// The pages the swarm requests (paths; bots may add a cache-busting query string).
    pub attacked_pages: Vec<String>,
    /// Every source that is not a swarm member, NAT gateways and crawlers included: blocking
    /// any of these is a false positive.
    pub legitimate: Vec<IpAddr>,
    /// NAT gateways (many users behind one address); a subset of `legitimate`.
    pub nat: Vec<IpAddr>,
    /// Well-behaved crawlers; a subset of `legitimate`.
    pub crawlers: Vec<IpAddr>,
    /// Prefixes where every source in the capture is a swarm member and that hold many of them:
    /// a prefix rule there blocks no legitimate source of this capture.
    pub bot_only_prefixes: Vec<String>,
    /// Prefixes holding both swarm members and legitimate sources: collapsing the members there
    /// into a prefix rule would block legitimate visitors.
    #[serde(default)]
    pub mixed_prefixes: Vec<String>,
    /// Prefixes of RFC 6598 shared address space (carrier-grade NAT) that sources come from: in
    /// real traffic one such address, or a /24 of them, can be many unrelated subscribers.
    #[serde(default)]
    pub shared_address_space: Vec<String>,
}

impl Labels {
    /// The labels of scenario `name` with `seed` before anything is generated.
    pub(crate) fn empty(name: &str, seed: u64) -> Self {
        Labels {
            scenario: name.to_owned(),
            seed,
            requests: 0,
            handshakes: 0,
            syns: 0,
            swarm_requests: 0,
            first_us: 0,
            last_us: 0,
            swarm_members: Vec::new(),
            attacked_site: None,
            attacked_site_addrs: Vec::new(),
            attacked_host: None,
            attacked_pages: Vec::new(),
            legitimate: Vec::new(),
            nat: Vec::new(),
            crawlers: Vec::new(),
            bot_only_prefixes: Vec::new(),
            mixed_prefixes: Vec::new(),
            shared_address_space: Vec::new(),
        }
    }
}

/// Where [`write()`] puts a pcap's labels: `<pcap>.labels.json` (the pcap's full name plus
/// `.labels.json`, e.g. `swarm.pcap.labels.json`).
pub fn labels_path(pcap: &Path) -> PathBuf {
    let mut name = pcap.as_os_str().to_owned();
    name.push(".labels.json");
    PathBuf::from(name)
}

/// Reads the labels [`write()`] stored for `pcap`.
pub fn read_labels(pcap: &Path) -> Result<Labels> {
    let path = labels_path(pcap);
    let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// Generates a scenario: its frames in time order, as (timestamp µs since the Unix epoch,
/// Ethernet frame), and its labels. Deterministic: the same `(s, seed)` gives the same bytes.
pub fn generate(s: Scenario, seed: u64) -> (Vec<(u64, Vec<u8>)>, Labels) {
    let sites = sites();
    let mut g = Gen::new(seed);
    let mut labels = Labels::empty(s.name(), seed);
    let mut legit = BTreeSet::new();

    let visitors = visitor_addresses(&mut Rng::new(seed, "addresses/visitors"));
    for (i, &ip) in visitors.iter().enumerate() {
        legit.insert(ip);
        let mut rng = Rng::new(seed, &format!("visitor/{i}"));
        // The three browsers inside the bots' /24 are about while the swarm is.
        let start = if LEGIT_IN_BOT_NET.iter().any(|a| IpAddr::V4(*a) == ip) {
            rng.range(30 * SECOND, 90 * SECOND)
        } else {
            rng.range(SECOND, 120 * SECOND)
        };
        let duration = rng.range(120 * SECOND, 300 * SECOND);
        let ports = g.new_ports(&mut rng, false);
        let mut client = Client::browser(ip, ports, rng);
        let plan = SessionPlan {
            prefer: Preference::of(i),
            start,
            duration,
            gap: (5 * SECOND, 40 * SECOND),
            landing: None,
            max_views: usize::MAX,
        };
        browse(&mut g, &mut client, &sites, &plan);
    }

    match s {
        Scenario::Browsing => {}
        Scenario::Swarm => swarm(
            &mut g,
            &mut labels,
            &sites[0],
            &["/gallery/7", "/gallery/8"],
        ),
        Scenario::MultiTenant => swarm(&mut g, &mut labels, &sites[1], &["/post/3", "/post/4"]),
        Scenario::WideSwarm => wide_swarm(&mut g, &mut labels, &sites[0]),
        Scenario::BrowserSwarm | Scenario::BrowserSwarmRotating => browser_swarm(
            &mut g,
            &mut labels,
            &sites[0],
            &["/gallery/1", "/gallery/2"],
            s == Scenario::BrowserSwarmRotating,
        ),
        Scenario::FlashCrowd => {
            let crowd = flash_addresses(&mut Rng::new(seed, "addresses/flash"), &visitors);
            for (i, &ip) in crowd.iter().enumerate() {
                legit.insert(ip);
                let mut rng = Rng::new(seed, &format!("flash/{i}"));
                // Arrivals bunch up early (a link just went viral), all within ~20 s.
                let u = rng.unit();
                let start = EVENT_START_US + (u * u * 20.0 * SECOND as f64) as u64;
                let extra_views = rng.below(3) as usize;
                let ports = g.new_ports(&mut rng, false);
                let mut client = Client::browser(ip, ports, rng);
                let product_1 = sites[0].page_index("/product/1");
                let plan = SessionPlan {
                    prefer: Preference::Shop,
                    start,
                    duration: u64::MAX / 4,
                    gap: (5 * SECOND, 40 * SECOND),
                    landing: Some(product_1),
                    max_views: 1 + extra_views,
                };
                browse(&mut g, &mut client, &sites, &plan);
            }
        }
        Scenario::Nat => {
            let nat = IpAddr::V4(NAT_ADDR);
            legit.insert(nat);
            labels.nat.push(nat);
            let mut nat_rng = Rng::new(seed, "nat");
            // One port allocator for everyone behind the gateway, sequential from a random start.
            let ports = g.new_ports(&mut nat_rng, true);
            let ttl_hops = nat_rng.range(6, 14) as u8;
            for i in 0..NAT_USERS {
                let mut rng = Rng::new(seed, &format!("nat/{i}"));
                let start = rng.range(SECOND, 120 * SECOND);
                let duration = rng.range(120 * SECOND, 300 * SECOND);
                let mut client = Client::browser(nat, ports, rng);
                // The gateway decrements every user's TTL once more, from the same hop count.
                client.ttl = client.browser.initial_ttl - ttl_hops;
                let plan = SessionPlan {
                    prefer: Preference::of(i),
                    start,
                    duration,
                    gap: (5 * SECOND, 25 * SECOND),
                    landing: None,
                    max_views: usize::MAX,
                };
                browse(&mut g, &mut client, &sites, &plan);
            }
        }
        Scenario::Crawler => {
            let ip = IpAddr::V4(CRAWLER_ADDR);
            legit.insert(ip);
            labels.crawlers.push(ip);
            crawl(&mut g, ip, &sites);
        }
    }

    let mut events = std::mem::take(&mut g.events);
    events.sort_by_key(|e| (e.ts, e.order));
    let frames: Vec<(u64, Vec<u8>)> = events
        .into_iter()
        .map(|e| (EPOCH_US + e.ts, e.frame))
        .collect();
    labels.requests = g.requests;
    labels.syns = g.syns;
    labels.first_us = frames.first().map_or(EPOCH_US, |f| f.0);
    labels.last_us = frames.last().map_or(EPOCH_US, |f| f.0);
    labels.swarm_members.sort();
    labels.swarm_requests = g.bot_requests;
    labels.legitimate = legit.into_iter().collect();
    (frames, labels)
}

/// Generates a scenario and writes it to `pcap` (Ethernet link type, µs timestamps,
/// little-endian) and its labels to [`labels_path`]`(pcap)`; returns the labels.
pub fn write(s: Scenario, seed: u64, pcap: &Path) -> Result<Labels> {
    let (frames, labels) = generate(s, seed);
    write_pcap(&frames, &labels, pcap)?;
    Ok(labels)
}

/// Writes frames (e.g. from [`generate`], perhaps edited) to `pcap` as [`write()`] does, and
/// `labels` to [`labels_path`]`(pcap)`.
pub fn write_pcap(frames: &[(u64, Vec<u8>)], labels: &Labels, pcap: &Path) -> Result<()> {
    let file = fs::File::create(pcap).with_context(|| format!("creating {}", pcap.display()))?;
    let header = PcapHeader {
        datalink: DataLink::ETHERNET,
        ts_resolution: TsResolution::MicroSecond,
        endianness: Endianness::Little,
        ..PcapHeader::default()
    };
    let mut writer = PcapWriter::with_header(BufWriter::new(file), header)
        .with_context(|| format!("writing {}", pcap.display()))?;
    for (ts, frame) in frames {
        let len = u32::try_from(frame.len()).context("frame longer than 4 GiB")?;
        writer
            .write_packet(&PcapPacket::new(Duration::from_micros(*ts), len, frame))
            .with_context(|| format!("writing {}", pcap.display()))?;
    }
    writer
        .into_writer()
        .flush()
        .with_context(|| format!("writing {}", pcap.display()))?;
    let json = serde_json::to_string_pretty(labels)?;
    let path = labels_path(pcap);
    fs::write(&path, json + "\n").with_context(|| format!("writing {}", path.display()))
}

/// How [`write_access_log`] renders a scenario's requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogLayout {
    /// nginx's and Apache's default (`combined`): no site per line, so the reader is told it.
    Combined,
    /// [`COMBINED_WITH_SERVER`]: `combined` plus `$host`, `$server_addr` and `$server_port`, as
    /// a multi-tenant server logs.
    CombinedWithServer,
}

/// The nginx `log_format` of [`LogLayout::CombinedWithServer`].
pub const COMBINED_WITH_SERVER: &str = r#"$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent" "$host" $server_addr $server_port"#;

/// Generates a scenario and writes its HTTP requests to `log` as the web server would have
/// logged them (one line per request, second resolution, in capture order), and its labels to
/// [`labels_path`]`(log)`; returns the labels.
pub fn write_access_log(s: Scenario, seed: u64, layout: LogLayout, log: &Path) -> Result<Labels> {
    let (frames, labels) = generate(s, seed);
    let mut out = BufWriter::new(
        fs::File::create(log).with_context(|| format!("creating {}", log.display()))?,
    );
    for (ts, frame) in &frames {
        if let Some(line) = access_log_line(*ts, frame, layout) {
            out.write_all(line.as_bytes())
                .with_context(|| format!("writing {}", log.display()))?;
        }
    }
    out.flush()
        .with_context(|| format!("writing {}", log.display()))?;
    let json = serde_json::to_string_pretty(&labels)?;
    let path = labels_path(log);
    fs::write(&path, json + "\n")
        .with_context(|| format!("writing {}", path.display()))
        .map(|()| labels)
}

/// The access-log line of the request a frame carries (`None` for a SYN).
fn access_log_line(ts_us: u64, frame: &[u8], layout: LogLayout) -> Option<String> {
    use pnet::packet::{
        ethernet::{EtherTypes, EthernetPacket},
        ipv4::Ipv4Packet,
        ipv6::Ipv6Packet,
        tcp::TcpPacket,
    };
    let eth = EthernetPacket::new(frame)?;
    let (src, dst, l4): (IpAddr, IpAddr, Vec<u8>) = match eth.get_ethertype() {
        EtherTypes::Ipv4 => {
            let ip = Ipv4Packet::new(eth.payload())?;
            (
                ip.get_source().into(),
                ip.get_destination().into(),
                ip.payload().to_vec(),
            )
        }
        EtherTypes::Ipv6 => {
            let ip = Ipv6Packet::new(eth.payload())?;
            (
                ip.get_source().into(),
                ip.get_destination().into(),
                ip.payload().to_vec(),
            )
        }
        _ => return None,
    };
    let tcp = TcpPacket::new(&l4)?;
    let text = std::str::from_utf8(tcp.payload()).ok()?;
    let (head, _body) = text.split_once("\r\n\r\n")?;
    let request = head.split("\r\n").next()?;
    let method = request.split(' ').next()?;
    let header = |name: &str| {
        head.split("\r\n")
            .skip(1)
            .find_map(|l| {
                l.split_once(": ")
                    .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            })
            .map_or("-", |(_, v)| v)
    };
    let (host, referer, ua) = (header("Host"), header("Referer"), header("User-Agent"));
    // What a server plausibly answered: the form's redirect, else the page or asset, with a
    // size that depends on the path only (as a static file's would).
    let status = if method == "POST" { 303 } else { 200 };
    let bytes = if method == "POST" {
        0
    } else {
        1_000 + request.bytes().map(u64::from).sum::<u64>() * 37 % 50_000
    };
    let time = clf_time(ts_us);
    let mut line =
        format!("{src} - - [{time}] \"{request}\" {status} {bytes} \"{referer}\" \"{ua}\"");
    if layout == LogLayout::CombinedWithServer {
        let host = host.split(':').next().unwrap_or(host);
        line.push_str(&format!(" \"{host}\" {dst} {}", tcp.get_destination()));
    }
    line.push('\n');
    Some(line)
}

/// `$time_local` in UTC (`01/May/2024:12:00:00 +0000`) of a time in µs since the Unix epoch.
fn clf_time(us: u64) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = us / 1_000_000;
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{d:02}/{}/{y}:{:02}:{:02}:{:02} +0000",
        MONTHS[(m - 1) as usize],
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

// ---------------------------------------------------------------------------------------------
// The sites
// ---------------------------------------------------------------------------------------------

/// One site: its pages and their assets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SitePlan {
    /// `Host`.
    pub host: &'static str,
    /// Address and port.
    pub addr: SocketAddr,
    /// IPv6 address and port.
    pub addr6: SocketAddr,
    /// The HTML pages.
    pub pages: Vec<PagePlan>,
}

/// One HTML page of a [`SitePlan`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PagePlan {
    /// Path.
    pub path: String,
    /// Its assets in the order a browser requests them (shared assets appear on many pages).
    pub assets: Vec<String>,
    /// How popular the page is, relative to the site's other pages.
    pub weight: u32,
}

impl SitePlan {
    fn page_index(&self, path: &str) -> usize {
        self.pages
            .iter()
            .position(|p| p.path == path)
            .unwrap_or_else(|| panic!("{} has no page {path}", self.host))
    }

    /// Where a client at `src` sends its requests: the site's address of the same family.
    pub fn addr_for(&self, src: IpAddr) -> SocketAddr {
        if src.is_ipv4() { self.addr } else { self.addr6 }
    }

    fn origin(&self) -> String {
        format!("http://{}/", self.host)
    }
}

/// The two sites: `shop.example` then `blog.example`.
pub fn sites() -> [SitePlan; 2] {
    [shop(), blog()]
}

const SHOP_CATEGORIES: [&str; 6] = ["shoes", "bags", "hats", "watches", "jackets", "accessories"];
const SHOP_PRODUCTS: u32 = 21;
const SHOP_GALLERIES: u32 = 8;
const BLOG_TAGS: [&str; 6] = [
    "rust",
    "networking",
    "ebpf",
    "security",
    "linux",
    "performance",
];
const BLOG_POSTS: u32 = 30;

/// A page's assets: the site's head (CSS, JS), the page's own head, the logo/avatar, the page's
/// images, then what CSS pulls in late (fonts) and the favicon.
fn page_assets(
    head: &[&str],
    own_head: &[&str],
    logo: &str,
    images: &[String],
    tail: &[&str],
) -> Vec<String> {
    head.iter()
        .chain(own_head)
        .map(|s| (*s).to_owned())
        .chain([logo.to_owned()])
        .chain(images.iter().cloned())
        .chain(tail.iter().map(|s| (*s).to_owned()))
        .collect()
}

fn shop() -> SitePlan {
    const HEAD: [&str; 3] = [
        "/static/css/site.css",
        "/static/js/vendor.js",
        "/static/js/app.js",
    ];
    const LOGO: &str = "/static/img/logo.svg";
    const TAIL: [&str; 2] = ["/static/fonts/inter.woff2", "/favicon.ico"];
    let thumb = |n: u32| format!("/img/product-{n}-1.jpg");
    let page = |path: String, own: &[&str], images: &[String], weight| PagePlan {
        path,
        assets: page_assets(&HEAD, own, LOGO, images, &TAIL),
        weight,
    };
    let mut pages = vec![page(
        "/".into(),
        &[],
        &[
            "/img/banner-1.jpg".into(),
            "/img/banner-2.jpg".into(),
            thumb(1),
            thumb(2),
            thumb(3),
            thumb(4),
        ],
        20,
    )];
    pages.push(page("/cart".into(), &["/static/js/cart.js"], &[], 3));
    pages.push(page("/about".into(), &[], &["/img/team.jpg".into()], 1));
    pages.push(page("/contact".into(), &[], &["/img/map.png".into()], 1));
    pages.push(page("/account".into(), &["/static/js/account.js"], &[], 1));
    for (c, name) in SHOP_CATEGORIES.iter().enumerate() {
        let thumbs: Vec<String> = (1..=SHOP_PRODUCTS)
            .filter(|n| (n - 1) as usize % SHOP_CATEGORIES.len() == c)
            .map(thumb)
            .collect();
        pages.push(page(
            format!("/category/{name}"),
            &["/static/css/category.css"],
            &thumbs,
            5,
        ));
    }
    for n in 1..=SHOP_PRODUCTS {
        let images: Vec<String> = (1..=3 + n % 4)
            .map(|k| format!("/img/product-{n}-{k}.jpg"))
            .collect();
        let weight = if n == 1 { 6 } else { 3 };
        pages.push(page(
            format!("/product/{n}"),
            &["/static/css/product.css", "/static/js/product.js"],
            &images,
            weight,
        ));
    }
    for n in 1..=SHOP_GALLERIES {
        let images: Vec<String> = (1..=8)
            .map(|k| format!("/img/gallery-{n}-{k}.jpg"))
            .collect();
        pages.push(page(
            format!("/gallery/{n}"),
            &["/static/js/lightbox.js"],
            &images,
            // The swarm's targets are among the popular galleries.
            if n == 7 || n == 8 { 4 } else { 2 },
        ));
    }
    SitePlan {
        host: SHOP_HOST,
        addr: SHOP,
        addr6: SHOP6,
        pages,
    }
}

fn blog() -> SitePlan {
    const HEAD: [&str; 2] = ["/static/css/blog.css", "/static/js/blog.js"];
    const LOGO: &str = "/static/img/avatar.png";
    const TAIL: [&str; 2] = ["/static/fonts/serif.woff2", "/favicon.ico"];
    let post_images = |n: u32| -> Vec<String> {
        (1..=1 + n % 4)
            .map(|k| format!("/img/post-{n}-{k}.png"))
            .collect()
    };
    let page = |path: String, own: &[&str], images: &[String], weight| PagePlan {
        path,
        assets: page_assets(&HEAD, own, LOGO, images, &TAIL),
        weight,
    };
    let recent: Vec<String> = (BLOG_POSTS - 2..=BLOG_POSTS)
        .rev()
        .map(|n| format!("/img/post-{n}-1.png"))
        .chain(["/img/hero.jpg".to_owned()])
        .collect();
    let mut pages = vec![page("/".into(), &[], &recent, 15)];
    pages.push(page("/about".into(), &[], &["/img/portrait.jpg".into()], 2));
    pages.push(page("/archive".into(), &[], &[], 3));
    pages.push(page("/contact".into(), &["/static/js/contact.js"], &[], 1));
    for tag in BLOG_TAGS {
        pages.push(page(
            format!("/tag/{tag}"),
            &[],
            &[format!("/static/img/tag-{tag}.svg")],
            2,
        ));
    }
    for n in 1..=BLOG_POSTS {
        pages.push(page(
            format!("/post/{n}"),
            &["/static/css/highlight.css", "/static/js/highlight.js"],
            &post_images(n),
            // Newer posts are read more; 3 and 4 (the multi-tenant swarm's targets) are classics.
            if n == 3 || n == 4 { 6 } else { 1 + n / 6 },
        ));
    }
    SitePlan {
        host: BLOG_HOST,
        addr: BLOG,
        addr6: BLOG6,
        pages,
    }
}

// ---------------------------------------------------------------------------------------------
// Randomness
// ---------------------------------------------------------------------------------------------

/// SplitMix64: tiny, fast, statistically fine for traffic shapes, identical on every platform.
#[derive(Clone, Debug)]
pub(crate) struct Rng(u64);

impl Rng {
    /// An independent stream for one actor: the seed mixed with the stream's name.
    pub(crate) fn new(seed: u64, stream: &str) -> Self {
        // FNV-1a of the name, then a SplitMix round so nearby seeds diverge at once.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in stream.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        let mut rng = Rng(seed ^ h.rotate_left(29));
        rng.next_u64();
        rng
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `lo..=hi`.
    pub(crate) fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    /// Uniform in [0, 1).
    pub(crate) fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub(crate) fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    /// An index drawn with the given weights.
    pub(crate) fn weighted(&mut self, weights: &[u32]) -> usize {
        let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
        let mut x = self.below(total);
        for (i, &w) in weights.iter().enumerate() {
            if x < u64::from(w) {
                return i;
            }
            x -= u64::from(w);
        }
        unreachable!("x < total")
    }

    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Addresses
// ---------------------------------------------------------------------------------------------

fn v6(prefix: [u16; 4], iid: u64) -> IpAddr {
    let bits = (u128::from(prefix[0]) << 112)
        | (u128::from(prefix[1]) << 96)
        | (u128::from(prefix[2]) << 80)
        | (u128::from(prefix[3]) << 64)
        | u128::from(iid);
    IpAddr::V6(Ipv6Addr::from(bits))
}

/// A random interface id: privacy addresses look like this (never 0, never ::1-ish).
fn random_iid(rng: &mut Rng) -> u64 {
    rng.next_u64() | 0x0200_0000_0000_0000
}

const LEGIT_V6: [u16; 4] = [0x2001, 0x0db8, 0x0100, 0];

/// The baseline's visitors: 42 in 198.51.100.1–.199, 15 in 2001:db8:100::/64 and the three in
/// 192.0.2.200–.202, interleaved.
pub(crate) fn visitor_addresses(rng: &mut Rng) -> Vec<IpAddr> {
    let mut hosts: Vec<u8> = (1..=199).collect();
    rng.shuffle(&mut hosts);
    let mut out: Vec<IpAddr> = hosts[..V4_VISITORS]
        .iter()
        .map(|&h| IpAddr::V4(Ipv4Addr::new(198, 51, 100, h)))
        .collect();
    let mut seen = BTreeSet::new();
    while seen.len() < V6_VISITORS {
        seen.insert(v6(LEGIT_V6, random_iid(rng)));
    }
    out.extend(seen);
    out.extend(LEGIT_IN_BOT_NET.map(IpAddr::V4));
    rng.shuffle(&mut out);
    out
}

/// The flash crowd: every 198.51.100.0/24 host the baseline left free (but the crawler's and
/// the NAT's), the rest in 2001:db8:100::/64.
pub(crate) fn flash_addresses(rng: &mut Rng, taken: &[IpAddr]) -> Vec<IpAddr> {
    let taken: BTreeSet<IpAddr> = taken.iter().copied().collect();
    let mut out: Vec<IpAddr> = (1..=249)
        .map(|h| IpAddr::V4(Ipv4Addr::new(198, 51, 100, h)))
        .filter(|a| !taken.contains(a) && *a != IpAddr::V4(CRAWLER_ADDR))
        .collect();
    let mut seen = taken;
    while out.len() < FLASH_VISITORS {
        let a = v6(LEGIT_V6, random_iid(rng));
        if seen.insert(a) {
            out.push(a);
        }
    }
    rng.shuffle(&mut out);
    out
}

/// The swarm's 200 bots (see the module docs for the layout).
pub(crate) fn bot_addresses(rng: &mut Rng) -> Vec<IpAddr> {
    let mut out = Vec::with_capacity(BOTS);
    let mut hosts: Vec<u8> = (1..=199).collect();
    rng.shuffle(&mut hosts);
    out.extend(
        hosts[..BOTS_192]
            .iter()
            .map(|&h| IpAddr::V4(Ipv4Addr::new(192, 0, 2, h))),
    );
    let mut hosts: Vec<u8> = (1..=254).collect();
    rng.shuffle(&mut hosts);
    out.extend(
        hosts[..BOTS_CGN_24]
            .iter()
            .map(|&h| IpAddr::V4(Ipv4Addr::new(100, 64, 0, h))),
    );
    let mut nets: Vec<u8> = (1..=255).collect();
    rng.shuffle(&mut nets);
    for &net in &nets[..BOTS_CGN_SCATTERED] {
        let host = rng.range(1, 254) as u8;
        out.push(IpAddr::V4(Ipv4Addr::new(100, 64, net, host)));
    }
    let mut seen = BTreeSet::new();
    while seen.len() < BOTS_V6_ONE_64 {
        seen.insert(v6([0x2001, 0x0db8, 0x0bad, 1], random_iid(rng)));
    }
    out.extend(seen);
    let mut subnets: Vec<u16> = (2..=0xff).collect();
    rng.shuffle(&mut subnets);
    for &subnet in &subnets[..BOTS_V6_SCATTERED] {
        out.push(v6([0x2001, 0x0db8, 0x0bad, subnet], random_iid(rng)));
    }
    rng.shuffle(&mut out);
    out
}

// ---------------------------------------------------------------------------------------------
// Frames, connections and the event list
// ---------------------------------------------------------------------------------------------

struct Event {
    ts: u64,
    order: u64,
    frame: Vec<u8>,
}

/// An ephemeral-port allocator: one per host, or one shared by everyone behind a NAT.
struct Ports {
    next: u32,
    lo: u32,
    hi: u32,
    /// Largest step between consecutive ports (1 = strictly sequential).
    stride: u32,
}

/// How a client treats connections.
#[derive(Clone, Copy)]
struct ConnPolicy {
    /// A connection idle this long is gone; the next request opens a new one.
    idle_us: u64,
    /// The server closes a connection after this many requests.
    max_requests: u32,
    /// `Connection: close`: one request per connection.
    close: bool,
}

const BROWSER_CONNS_POLICY: ConnPolicy = ConnPolicy {
    idle_us: 60 * SECOND,
    max_requests: 100,
    close: false,
};

#[derive(Clone, Copy)]
struct Conn {
    sport: u16,
    seq: u32,
    ack: u32,
    last_us: u64,
    served: u32,
}

/// The event list being built.
struct Gen {
    seed: u64,
    events: Vec<Event>,
    ports: Vec<Ports>,
    requests: usize,
    syns: usize,
    bot_requests: usize,
}

impl Gen {
    fn new(seed: u64) -> Self {
        Gen {
            seed,
            events: Vec::new(),
            ports: Vec::new(),
            requests: 0,
            syns: 0,
            bot_requests: 0,
        }
    }

    /// A new port allocator: Linux-like (32768–60999, small random steps) for a host, a whole
    /// 1024–65535 sequential range for a NAT.
    fn new_ports(&mut self, rng: &mut Rng, nat: bool) -> usize {
        let (lo, hi, stride) = if nat {
            (1024, 65535, 1)
        } else {
            (32768, 60999, 3)
        };
        let next = rng.range(u64::from(lo), u64::from(hi)) as u32;
        self.ports.push(Ports {
            next,
            lo,
            hi,
            stride,
        });
        self.ports.len() - 1
    }

    fn take_port(&mut self, ports: usize, rng: &mut Rng) -> u16 {
        let p = &mut self.ports[ports];
        let port = p.next;
        p.next += 1 + rng.below(u64::from(p.stride)) as u32;
        if p.next > p.hi {
            p.next = p.lo + (p.next - p.hi - 1);
        }
        port as u16
    }

    fn push(&mut self, ts: u64, frame: Vec<u8>) {
        let order = self.events.len() as u64;
        self.events.push(Event { ts, order, frame });
    }

    /// Sends one request from `c` on its connection `slot` to `site` at `ts`, opening the
    /// connection first (a SYN one RTT earlier) when there is none to reuse.
    #[allow(clippy::too_many_arguments)]
    fn send(
        &mut self,
        c: &mut Client,
        site: usize,
        dst: SocketAddr,
        slot: usize,
        ts: u64,
        payload: &[u8],
        reply_bytes: u32,
        policy: ConnPolicy,
    ) {
        assert!(payload.len() <= 1400, "a request must fit one segment");
        let conns = &mut c.conns[site];
        if conns.len() <= slot {
            conns.resize(slot + 1, None);
        }
        let usable = conns[slot].filter(|conn| {
            ts.saturating_sub(conn.last_us) < policy.idle_us && conn.served < policy.max_requests
        });
        let mut conn = match usable {
            Some(conn) => conn,
            None => {
                let sport = self.take_port(c.ports, &mut c.rng);
                let isn = c.rng.next_u64() as u32;
                let server_isn = c.rng.next_u64() as u32;
                let syn = tcp_frame(c.ip, sport, dst, TcpFlags::SYN, isn, 0, c.ttl, &[]);
                self.push(ts - c.rtt_us, syn);
                self.syns += 1;
                Conn {
                    sport,
                    seq: isn.wrapping_add(1),
                    ack: server_isn.wrapping_add(1),
                    last_us: ts,
                    served: 0,
                }
            }
        };
        let frame = tcp_frame(
            c.ip,
            conn.sport,
            dst,
            TcpFlags::PSH | TcpFlags::ACK,
            conn.seq,
            conn.ack,
            c.ttl,
            payload,
        );
        self.push(ts, frame);
        self.requests += 1;
        if c.bot {
            self.bot_requests += 1;
        }
        conn.seq = conn.seq.wrapping_add(payload.len() as u32);
        conn.ack = conn.ack.wrapping_add(reply_bytes);
        conn.last_us = ts;
        conn.served += 1;
        c.conns[site][slot] = if policy.close { None } else { Some(conn) };
    }
}

/// A TCP segment with the given sequence/acknowledgement numbers and TTL (hop limit), checksums
/// recomputed. Built by [`Frame`], which fixes those fields, then patched.
#[allow(clippy::too_many_arguments)]
pub(crate) fn tcp_frame(
    src: IpAddr,
    sport: u16,
    dst: SocketAddr,
    flags: u8,
    seq: u32,
    ack: u32,
    ttl: u8,
    payload: &[u8],
) -> Vec<u8> {
    const ETH: usize = 14;
    let mut frame = Frame::tcp(src, dst.ip(), sport, dst.port())
        .tcp_flags(flags)
        .payload(payload)
        .build();
    let l4 = match src {
        IpAddr::V4(_) => {
            let mut ip = MutableIpv4Packet::new(&mut frame[ETH..]).expect("IPv4 frame");
            ip.set_ttl(ttl);
            // Linux and Windows set Don't Fragment on TCP (path MTU discovery).
            ip.set_flags(Ipv4Flags::DontFragment);
            let sum = ipv4::checksum(&ip.to_immutable());
            ip.set_checksum(sum);
            ETH + usize::from(ip.get_header_length()) * 4
        }
        IpAddr::V6(_) => {
            let mut ip = MutableIpv6Packet::new(&mut frame[ETH..]).expect("IPv6 frame");
            ip.set_hop_limit(ttl);
            ETH + 40
        }
    };
    // Patch sequence and acknowledgement (bytes 4..12) and update the checksum (bytes 16..18)
    // incrementally (RFC 1624) rather than summing the whole segment again.
    let mut seg = MutableTcpPacket::new(&mut frame[l4..]).expect("TCP segment");
    let mut old = [0; 8];
    old.copy_from_slice(&seg.packet()[4..12]);
    seg.set_sequence(seq);
    seg.set_acknowledgement(ack);
    let sum = checksum_update(seg.get_checksum(), &old, &seg.packet()[4..12]);
    seg.set_checksum(sum);
    frame
}

/// An Internet checksum updated for 16-bit-aligned bytes changed from `old` to `new`:
/// HC' = ~(~HC + ~m + m') (RFC 1624, eqn. 3).
fn checksum_update(sum: u16, old: &[u8], new: &[u8]) -> u16 {
    let mut acc = u32::from(!sum);
    for (o, n) in old.chunks(2).zip(new.chunks(2)) {
        acc += u32::from(!u16::from_be_bytes([o[0], o[1]]));
        acc += u32::from(u16::from_be_bytes([n[0], n[1]]));
    }
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

// ---------------------------------------------------------------------------------------------
// Browsers and HTTP requests
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Family {
    Chrome,
    Firefox,
    Safari,
}

struct Browser {
    ua: &'static str,
    family: Family,
    /// 128 on Windows, 64 elsewhere.
    initial_ttl: u8,
    weight: u32,
}

/// The most common desktop browser; some bots copy its `User-Agent` exactly.
const CHROME_WINDOWS: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36";

const BROWSERS: [Browser; 11] = [
    Browser {
        ua: CHROME_WINDOWS,
        family: Family::Chrome,
        initial_ttl: 128,
        weight: 25,
    },
    Browser {
        ua: "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Mobile Safari/537.36",
        family: Family::Chrome,
        initial_ttl: 64,
        weight: 15,
    },
    Browser {
        ua: "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4.1 Mobile/15E148 Safari/604.1",
        family: Family::Safari,
        initial_ttl: 64,
        weight: 15,
    },
    Browser {
        ua: "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
        family: Family::Chrome,
        initial_ttl: 64,
        weight: 8,
    },
    Browser {
        ua: "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36 Edg/124.0.0.0",
        family: Family::Chrome,
        initial_ttl: 128,
        weight: 8,
    },
    Browser {
        ua: "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0",
        family: Family::Firefox,
        initial_ttl: 128,
        weight: 7,
    },
    Browser {
        ua: "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4.1 Safari/605.1.15",
        family: Family::Safari,
        initial_ttl: 64,
        weight: 7,
    },
    Browser {
        ua: "Mozilla/5.0 (Linux; Android 14; SAMSUNG SM-S911B) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/24.0 Chrome/117.0.0.0 Mobile Safari/537.36",
        family: Family::Chrome,
        initial_ttl: 64,
        weight: 5,
    },
    Browser {
        ua: "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/123.0.0.0 Safari/537.36",
        family: Family::Chrome,
        initial_ttl: 64,
        weight: 4,
    },
    Browser {
        ua: "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
        family: Family::Firefox,
        initial_ttl: 64,
        weight: 3,
    },
    Browser {
        ua: "Mozilla/5.0 (Android 14; Mobile; rv:125.0) Gecko/125.0 Firefox/125.0",
        family: Family::Firefox,
        initial_ttl: 64,
        weight: 3,
    },
];

const LANGUAGES: [(&str, u32); 8] = [
    ("en-US,en;q=0.9", 40),
    ("en-GB,en-US;q=0.9,en;q=0.8", 12),
    ("de-DE,de;q=0.9,en-US;q=0.8,en;q=0.7", 12),
    ("fr-FR,fr;q=0.9,en-US;q=0.8,en;q=0.7", 10),
    ("es-ES,es;q=0.9", 8),
    ("nl-NL,nl;q=0.9,en-US;q=0.8,en;q=0.7", 6),
    ("pt-BR,pt;q=0.9,en-US;q=0.8,en;q=0.7", 6),
    ("ja-JP,ja;q=0.9,en-US;q=0.8,en;q=0.7", 6),
];

/// What a request fetches; it decides `Accept`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dest {
    Document,
    Style,
    Script,
    Image,
    Font,
}

impl Dest {
    fn of(path: &str) -> Dest {
        let ext = path.rsplit('.').next().unwrap_or("");
        match ext {
            "css" => Dest::Style,
            "js" => Dest::Script,
            "woff2" | "woff" => Dest::Font,
            "jpg" | "png" | "svg" | "ico" | "webp" => Dest::Image,
            _ => Dest::Document,
        }
    }

    /// A plausible response size in bytes, for the acknowledgement numbers.
    fn reply_bytes(self, rng: &mut Rng) -> u32 {
        let (lo, hi) = match self {
            Dest::Document => (8_000, 60_000),
            Dest::Style => (4_000, 40_000),
            Dest::Script => (10_000, 150_000),
            Dest::Image => (15_000, 300_000),
            Dest::Font => (20_000, 60_000),
        };
        rng.range(lo, hi) as u32
    }
}

fn accept(family: Family, dest: Dest) -> &'static str {
    match (family, dest) {
        (Family::Chrome, Dest::Document) => {
            "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7"
        }
        (Family::Firefox, Dest::Document) => {
            "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8"
        }
        (Family::Safari, Dest::Document) => {
            "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
        }
        (_, Dest::Style) => "text/css,*/*;q=0.1",
        (Family::Chrome, Dest::Image) => {
            "image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8"
        }
        (Family::Firefox, Dest::Image) => "image/avif,image/webp,*/*",
        (Family::Safari, Dest::Image) => {
            "image/webp,image/avif,image/jxl,image/heic,image/heic-sequence,video/*;q=0.8,image/png,image/svg+xml,image/*;q=0.8,*/*;q=0.5"
        }
        (Family::Firefox, Dest::Font) => {
            "application/font-woff2;q=1.0,application/font-woff;q=0.9,*/*;q=0.8"
        }
        (_, Dest::Script | Dest::Font) => "*/*",
    }
}

/// Serializes a request: request line, headers in the order given, blank line, body.
fn http(method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("{method} {target} HTTP/1.1\r\n");
    for (name, value) in headers {
        out.push_str(name);
        out.push_str(": ");
        out.push_str(value);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    let mut out = out.into_bytes();
    out.extend_from_slice(body);
    out
}

/// A form submission's extras.
struct Form<'a> {
    origin: &'a str,
    body: &'a [u8],
}

/// A browser's request, in its family's header order.
fn browser_request(
    b: &Browser,
    lang: &str,
    method: &str,
    target: &str,
    host: &str,
    referer: Option<&str>,
    form: Option<&Form<'_>>,
) -> Vec<u8> {
    let dest = if form.is_some() {
        Dest::Document
    } else {
        Dest::of(target.split('?').next().unwrap_or(target))
    };
    let accept = accept(b.family, dest);
    let len = form.map(|f| f.body.len().to_string());
    let mut h: Vec<(&str, &str)> = Vec::with_capacity(12);
    let doc = dest == Dest::Document;
    const FORM_TYPE: &str = "application/x-www-form-urlencoded";
    const ENCODING: &str = "gzip, deflate";
    match b.family {
        Family::Chrome => {
            h.push(("Host", host));
            h.push(("Connection", "keep-alive"));
            if let (Some(f), Some(len)) = (form, &len) {
                h.push(("Content-Length", len));
                h.push(("Cache-Control", "max-age=0"));
                h.push(("Origin", f.origin));
                h.push(("Content-Type", FORM_TYPE));
            }
            if doc {
                h.push(("Upgrade-Insecure-Requests", "1"));
            }
            h.push(("User-Agent", b.ua));
            h.push(("Accept", accept));
            if let Some(r) = referer {
                h.push(("Referer", r));
            }
            h.push(("Accept-Encoding", ENCODING));
            h.push(("Accept-Language", lang));
        }
        Family::Firefox => {
            h.push(("Host", host));
            h.push(("User-Agent", b.ua));
            h.push(("Accept", accept));
            h.push(("Accept-Language", lang));
            h.push(("Accept-Encoding", ENCODING));
            if let (Some(f), Some(len)) = (form, &len) {
                h.push(("Content-Type", FORM_TYPE));
                h.push(("Content-Length", len));
                h.push(("Origin", f.origin));
            }
            h.push(("Connection", "keep-alive"));
            if let Some(r) = referer {
                h.push(("Referer", r));
            }
            if doc {
                h.push(("Upgrade-Insecure-Requests", "1"));
            }
        }
        Family::Safari => {
            h.push(("Host", host));
            if let (Some(f), Some(len)) = (form, &len) {
                h.push(("Content-Type", FORM_TYPE));
                h.push(("Origin", f.origin));
                h.push(("Content-Length", len));
            }
            if doc {
                h.push(("Upgrade-Insecure-Requests", "1"));
            }
            h.push(("Accept", accept));
            h.push(("User-Agent", b.ua));
            h.push(("Accept-Language", lang));
            if let Some(r) = referer {
                h.push(("Referer", r));
            }
            h.push(("Accept-Encoding", ENCODING));
            h.push(("Connection", "keep-alive"));
        }
    }
    http(method, target, &h, form.map_or(&[], |f| f.body))
}

// ---------------------------------------------------------------------------------------------
// Visitors
// ---------------------------------------------------------------------------------------------

/// One source host (or one user behind a NAT) and its connection state.
struct Client {
    ip: IpAddr,
    rng: Rng,
    browser: &'static Browser,
    lang: &'static str,
    ttl: u8,
    rtt_us: u64,
    ports: usize,
    /// Per site (shop, blog): connection slots.
    conns: [Vec<Option<Conn>>; 2],
    /// Assets in the browser cache, as `host` + path.
    cache: BTreeSet<String>,
    bot: bool,
}

impl Client {
    fn browser(ip: IpAddr, ports: usize, mut rng: Rng) -> Self {
        let weights: Vec<u32> = BROWSERS.iter().map(|b| b.weight).collect();
        let browser = &BROWSERS[rng.weighted(&weights)];
        let langs: Vec<u32> = LANGUAGES.iter().map(|l| l.1).collect();
        let lang = LANGUAGES[rng.weighted(&langs)].0;
        let ttl = browser.initial_ttl - rng.range(5, 18) as u8;
        let rtt_us = rng.range(8 * MS, 120 * MS);
        Client {
            ip,
            rng,
            browser,
            lang,
            ttl,
            rtt_us,
            ports,
            conns: [Vec::new(), Vec::new()],
            cache: BTreeSet::new(),
            bot: false,
        }
    }
}

/// Which sites a visitor uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Preference {
    Shop,
    Blog,
    Both,
}

impl Preference {
    /// Fixed shares by index (55% shop, 30% blog, 15% both), so every seed has visitors of each
    /// kind.
    fn of(i: usize) -> Preference {
        match i % 20 {
            0..11 => Preference::Shop,
            11..17 => Preference::Blog,
            _ => Preference::Both,
        }
    }
}

struct SessionPlan {
    prefer: Preference,
    start: u64,
    duration: u64,
    /// Time between page views.
    gap: (u64, u64),
    /// The first page (a shop page index), else a weighted pick of the start site's pages.
    landing: Option<usize>,
    max_views: usize,
}

/// Where visitors arriving from elsewhere come from (origin only: strict-origin-when-cross-origin).
const EXTERNAL_REFERERS: [&str; 3] = [
    "http://search.example/",
    "http://news.example/",
    "http://social.example/",
];

/// A browsing session: page views with their assets, one site or both.
fn browse(g: &mut Gen, c: &mut Client, sites: &[SitePlan; 2], plan: &SessionPlan) {
    let mut site = match plan.prefer {
        Preference::Shop => 0,
        Preference::Blog => 1,
        Preference::Both => c.rng.below(2) as usize,
    };
    let end = plan.start.saturating_add(plan.duration);
    let mut t = plan.start;
    // The page the visitor is on: (site, full URL).
    let mut current: Option<(usize, String)> = None;
    let mut views = 0;
    while t < end && views < plan.max_views {
        if plan.prefer == Preference::Both && current.is_some() && c.rng.chance(0.3) {
            site = 1 - site;
        }
        let s = &sites[site];
        let page = match (views, plan.landing) {
            (0, Some(p)) => p,
            (0, None) if c.rng.chance(0.4) => 0,
            _ => {
                let weights: Vec<u32> = s.pages.iter().map(|p| p.weight).collect();
                c.rng.weighted(&weights)
            }
        };
        let path = &s.pages[page].path;
        let mut target = path.clone();
        if path.starts_with("/category/") && c.rng.chance(0.25) {
            const QUERIES: [&str; 3] = ["?sort=price", "?sort=new", "?page=2"];
            let query: &&str = c.rng.pick(&QUERIES);
            target.push_str(query);
        }
        let referer = match &current {
            Some((from, url)) if *from == site => Some(url.clone()),
            Some((from, _)) => Some(sites[*from].origin()),
            None if plan.landing.is_some() => {
                // A shared link: most arrive with the news site as referrer, apps send none.
                c.rng.chance(0.8).then(|| EXTERNAL_REFERERS[1].to_owned())
            }
            None => c
                .rng
                .chance(0.5)
                .then(|| (*c.rng.pick(&EXTERNAL_REFERERS)).to_owned()),
        };
        let url = format!("http://{}{}", s.host, target);
        let mut done = page_view(g, c, s, site, page, &target, t, referer.as_deref());
        views += 1;
        // Some product views put the product in the cart: a form POST, then the cart page it
        // redirects to (303), whose Referer is still the product page.
        if path.starts_with("/product/") && c.rng.chance(0.15) && views < plan.max_views {
            let at = done + c.rng.range(3 * SECOND, 15 * SECOND);
            let n = &path["/product/".len()..];
            let body = format!("product={n}&qty=1");
            let origin = format!("http://{}", s.host);
            let form = Form {
                origin: &origin,
                body: body.as_bytes(),
            };
            let req = browser_request(
                c.browser,
                c.lang,
                "POST",
                "/cart/add",
                s.host,
                Some(&url),
                Some(&form),
            );
            let reply = 300;
            g.send(
                c,
                site,
                s.addr_for(c.ip),
                0,
                at,
                &req,
                reply,
                BROWSER_CONNS_POLICY,
            );
            let cart = s.page_index("/cart");
            let redirect_at = at + c.rtt_us + c.rng.range(20 * MS, 80 * MS);
            done = page_view(g, c, s, site, cart, "/cart", redirect_at, Some(&url));
            views += 1;
            current = Some((site, format!("http://{}/cart", s.host)));
        } else {
            current = Some((site, url));
        }
        t = done + c.rng.range(plan.gap.0, plan.gap.1);
    }
}

/// One page view at `t`: the HTML, then the assets not yet cached within about a second, spread
/// over up to six connections. Returns when the last request went out.
#[allow(clippy::too_many_arguments)]
fn page_view(
    g: &mut Gen,
    c: &mut Client,
    s: &SitePlan,
    site: usize,
    page: usize,
    target: &str,
    t: u64,
    referer: Option<&str>,
) -> u64 {
    let req = browser_request(c.browser, c.lang, "GET", target, s.host, referer, None);
    let reply = Dest::Document.reply_bytes(&mut c.rng);
    g.send(
        c,
        site,
        s.addr_for(c.ip),
        0,
        t,
        &req,
        reply,
        BROWSER_CONNS_POLICY,
    );
    let url = format!("http://{}{}", s.host, target);
    let missing: Vec<&String> = s.pages[page]
        .assets
        .iter()
        .filter(|a| !c.cache.contains(&format!("{}{a}", s.host)))
        .collect();
    // The HTML's first bytes arrive after a round trip and the server's think time.
    let mut at = t + c.rtt_us + c.rng.range(30 * MS, 200 * MS);
    let step_max = (700 * MS / missing.len().max(1) as u64).max(5 * MS);
    let mut last = t;
    for (k, asset) in missing.iter().enumerate() {
        let req = browser_request(c.browser, c.lang, "GET", asset, s.host, Some(&url), None);
        let reply = Dest::of(asset).reply_bytes(&mut c.rng);
        g.send(
            c,
            site,
            s.addr_for(c.ip),
            k % BROWSER_CONNS,
            at,
            &req,
            reply,
            BROWSER_CONNS_POLICY,
        );
        c.cache.insert(format!("{}{asset}", s.host));
        last = at;
        at += c.rng.range(2 * MS, step_max);
    }
    last
}

// ---------------------------------------------------------------------------------------------
// The swarm
// ---------------------------------------------------------------------------------------------

/// How a kind of bot talks: `User-Agent`, headers, connections.
struct BotKind {
    ua: &'static str,
    weight: u32,
    policy: ConnPolicy,
    /// Adds `?_=<random>` to defeat caches.
    cache_bust: bool,
    style: BotStyle,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum BotStyle {
    /// python-requests' defaults.
    Requests,
    /// curl with `Connection: close`.
    Curl,
    /// A Chrome look-alike (header order, `Accept`, `Accept-Language`) with a constant `Referer`:
    /// the attacked site's home page.
    ChromeLike,
    /// A Firefox look-alike without `Referer`.
    FirefoxLike,
}

const KEEP_ALIVE: ConnPolicy = ConnPolicy {
    idle_us: 60 * SECOND,
    max_requests: 100,
    close: false,
};
const CLOSE: ConnPolicy = ConnPolicy {
    idle_us: 0,
    max_requests: 1,
    close: true,
};

const BOT_KINDS: [BotKind; 4] = [
    BotKind {
        ua: "python-requests/2.31.0",
        weight: 30,
        policy: KEEP_ALIVE,
        cache_bust: true,
        style: BotStyle::Requests,
    },
    BotKind {
        ua: "curl/8.5.0",
        weight: 15,
        policy: CLOSE,
        cache_bust: false,
        style: BotStyle::Curl,
    },
    BotKind {
        ua: CHROME_WINDOWS,
        weight: 35,
        policy: KEEP_ALIVE,
        cache_bust: false,
        style: BotStyle::ChromeLike,
    },
    BotKind {
        ua: "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:109.0) Gecko/20100101 Firefox/115.0",
        weight: 20,
        policy: CLOSE,
        cache_bust: false,
        style: BotStyle::FirefoxLike,
    },
];

fn bot_request(kind: &BotKind, target: &str, site: &SitePlan, referer: &str) -> Vec<u8> {
    let host = site.host;
    match kind.style {
        BotStyle::Requests => http(
            "GET",
            target,
            &[
                ("Host", host),
                ("User-Agent", kind.ua),
                ("Accept-Encoding", "gzip, deflate"),
                ("Accept", "*/*"),
                ("Connection", "keep-alive"),
            ],
            &[],
        ),
        BotStyle::Curl => http(
            "GET",
            target,
            &[
                ("Host", host),
                ("User-Agent", kind.ua),
                ("Accept", "*/*"),
                ("Connection", "close"),
            ],
            &[],
        ),
        BotStyle::ChromeLike => http(
            "GET",
            target,
            &[
                ("Host", host),
                ("Connection", "keep-alive"),
                ("User-Agent", kind.ua),
                ("Accept", accept(Family::Chrome, Dest::Document)),
                ("Referer", referer),
                ("Accept-Encoding", "gzip, deflate"),
                ("Accept-Language", "en-US,en;q=0.9"),
            ],
            &[],
        ),
        BotStyle::FirefoxLike => http(
            "GET",
            target,
            &[
                ("Host", host),
                ("User-Agent", kind.ua),
                ("Accept", accept(Family::Firefox, Dest::Document)),
                ("Accept-Language", "en-US,en;q=0.5"),
                ("Accept-Encoding", "gzip, deflate"),
                ("Connection", "close"),
            ],
            &[],
        ),
    }
}

/// 200 bots hammering `pages` of `site` from t = 60 s; fills the swarm's labels.
fn swarm(g: &mut Gen, labels: &mut Labels, site: &SitePlan, pages: &[&str]) {
    let seed = g.seed;
    let site_idx = usize::from(site.addr != SHOP);
    let bots = bot_addresses(&mut Rng::new(seed, "addresses/bots"));
    let referer = site.origin();
    let weights: Vec<u32> = BOT_KINDS.iter().map(|k| k.weight).collect();
    for (i, &ip) in bots.iter().enumerate() {
        let mut rng = Rng::new(seed, &format!("bot/{i}"));
        let kind = &BOT_KINDS[rng.weighted(&weights)];
        let ports = g.new_ports(&mut rng, false);
        let mut c = Client::browser(ip, ports, rng);
        c.bot = true;
        c.ttl = 64 - c.rng.range(8, 22) as u8;
        c.rtt_us = c.rng.range(20 * MS, 200 * MS);
        let start = EVENT_START_US + c.rng.range(0, 5 * SECOND);
        let end = start + c.rng.range(60 * SECOND, 120 * SECOND);
        // Requests per 1000 s: 1–4 per second.
        let rate = c.rng.range(1_000, 4_000);
        let interval = 1_000 * SECOND / rate;
        let mut t = start;
        while t < end {
            let page = *c.rng.pick(pages);
            let target = if kind.cache_bust && c.rng.chance(0.5) {
                format!("{page}?_={}", c.rng.next_u64() % 10_000_000_000_000)
            } else {
                page.to_owned()
            };
            let req = bot_request(kind, &target, site, &referer);
            let reply = Dest::Document.reply_bytes(&mut c.rng);
            let dst = site.addr_for(c.ip);
            g.send(&mut c, site_idx, dst, 0, t, &req, reply, kind.policy);
            // Jitter: 0.5–1.5 × the mean interval.
            t += c.rng.range(interval / 2, interval * 3 / 2);
        }
    }
    swarm_labels(labels, bots, site, pages);
}

/// The labels of a swarm of [`bot_addresses`] `bots` attacking `pages` of `site`.
fn swarm_labels(labels: &mut Labels, bots: Vec<IpAddr>, site: &SitePlan, pages: &[&str]) {
    labels.swarm_members = bots;
    labels.attacked_site = Some(site.addr);
    labels.attacked_site_addrs = vec![site.addr, site.addr6];
    labels.attacked_host = Some(site.host.to_owned());
    labels.attacked_pages = pages.iter().map(|p| (*p).to_owned()).collect();
    // The /24 and /64 a per-/24-or-/64 policy may collapse, and the /48 around all IPv6 bots.
    labels.bot_only_prefixes = vec![
        "100.64.0.0/24".into(),
        "2001:db8:bad:1::/64".into(),
        "2001:db8:bad::/48".into(),
    ];
    labels.mixed_prefixes = vec!["192.0.2.0/24".into()];
    labels.shared_address_space = vec!["100.64.0.0/16".into()];
}

/// The kinds of [`Scenario::WideSwarm`]'s bots: none sends a Referer.
const WIDE_KINDS: [BotKind; 3] = [
    BotKind {
        ua: "python-requests/2.31.0",
        weight: 50,
        policy: KEEP_ALIVE,
        cache_bust: true,
        style: BotStyle::Requests,
    },
    BotKind {
        ua: "curl/8.5.0",
        weight: 20,
        policy: CLOSE,
        cache_bust: true,
        style: BotStyle::Curl,
    },
    BotKind {
        ua: "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:109.0) Gecko/20100101 Firefox/115.0",
        weight: 30,
        policy: CLOSE,
        cache_bust: true,
        style: BotStyle::FirefoxLike,
    },
];

/// [`Scenario::WideSwarm`]'s 2000 bots (see the module docs for the layout).
pub(crate) fn wide_bot_addresses(rng: &mut Rng) -> Vec<IpAddr> {
    let mut out = Vec::with_capacity(WIDE_BOTS);
    let mut nets: Vec<u8> = (0..=255).collect();
    rng.shuffle(&mut nets);
    for &net in &nets[..180] {
        let mut hosts: Vec<u8> = (1..=254).collect();
        rng.shuffle(&mut hosts);
        out.extend(
            hosts[..10]
                .iter()
                .map(|&h| IpAddr::V4(Ipv4Addr::new(198, 18, net, h))),
        );
    }
    let mut hosts: Vec<u8> = (1..=199).collect();
    rng.shuffle(&mut hosts);
    out.extend(
        hosts[..20]
            .iter()
            .map(|&h| IpAddr::V4(Ipv4Addr::new(192, 0, 2, h))),
    );
    let mut seen = BTreeSet::new();
    while seen.len() < 100 {
        seen.insert(v6([0x2001, 0x0db8, 0x0bad, 1], random_iid(rng)));
    }
    out.extend(seen);
    let mut subnets: Vec<u16> = (2..=0xff).collect();
    rng.shuffle(&mut subnets);
    for &subnet in &subnets[..WIDE_BOTS - out.len()] {
        out.push(v6([0x2001, 0x0db8, 0x0bad, subnet], random_iid(rng)));
    }
    out
}

/// 2000 bots from t = 60 s to 300 s, each fetching [`WIDE_PAGE`] of `site` once every 30–60 s
/// with a random query string; fills the swarm's labels.
fn wide_swarm(g: &mut Gen, labels: &mut Labels, site: &SitePlan) {
    let seed = g.seed;
    let site_idx = usize::from(site.addr != SHOP);
    let mut bots = wide_bot_addresses(&mut Rng::new(seed, "addresses/wide-bots"));
    let referer = site.origin();
    let weights: Vec<u32> = WIDE_KINDS.iter().map(|k| k.weight).collect();
    let end = EVENT_START_US + 240 * SECOND;
    for (i, &ip) in bots.iter().enumerate() {
        let mut rng = Rng::new(seed, &format!("wide-bot/{i}"));
        let kind = &WIDE_KINDS[rng.weighted(&weights)];
        let ports = g.new_ports(&mut rng, false);
        let mut c = Client::browser(ip, ports, rng);
        c.bot = true;
        c.ttl = 64 - c.rng.range(8, 22) as u8;
        c.rtt_us = c.rng.range(20 * MS, 200 * MS);
        let mut t = EVENT_START_US + c.rng.range(0, 45 * SECOND);
        while t < end {
            let target = format!("{WIDE_PAGE}?r={}", c.rng.next_u64() % 10_000_000_000);
            let req = bot_request(kind, &target, site, &referer);
            let reply = Dest::Document.reply_bytes(&mut c.rng);
            let dst = site.addr_for(c.ip);
            g.send(&mut c, site_idx, dst, 0, t, &req, reply, kind.policy);
            t += c.rng.range(30 * SECOND, 60 * SECOND);
        }
    }
    bots.sort();
    labels.swarm_members = bots;
    labels.attacked_site = Some(site.addr);
    labels.attacked_site_addrs = vec![site.addr, site.addr6];
    labels.attacked_host = Some(site.host.to_owned());
    labels.attacked_pages = vec![WIDE_PAGE.to_owned()];
    labels.bot_only_prefixes = vec!["2001:db8:bad:1::/64".into(), "2001:db8:bad::/48".into()];
    labels.mixed_prefixes = vec!["192.0.2.0/24".into()];
}

/// A headless Chrome, as a bot drives it: Chrome's headers, its own `User-Agent`.
const HEADLESS_CHROME: Browser = Browser {
    ua: "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/124.0.0.0 Safari/537.36",
    family: Family::Chrome,
    initial_ttl: 64,
    weight: 0,
};

/// `wget -p`'s request: its header order, the page as `Referer` for the page's requisites.
fn wget_request(target: &str, host: &str, referer: Option<&str>) -> Vec<u8> {
    let mut h: Vec<(&str, &str)> = Vec::with_capacity(6);
    if let Some(r) = referer {
        h.push(("Referer", r));
    }
    h.extend([
        ("User-Agent", "Wget/1.21.3"),
        ("Accept", "*/*"),
        ("Accept-Encoding", "identity"),
        ("Host", host),
        ("Connection", "Keep-Alive"),
    ]);
    http("GET", target, &h, &[])
}

/// How a browser-like bot loads a page.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Loader {
    /// `wget -p`: one connection, requisites one after the other, `Referer` the page.
    Wget,
    /// A headless Chrome: six connections, `Referer` the page.
    Headless,
    /// A script that fetches the page and then its assets, sending no `Referer`.
    Script,
    /// A real browser's headers with a `User-Agent` drawn anew for each view, a random subset
    /// of the assets; `Referer` or not, per bot.
    Rotating { referer: bool },
}

/// 200 bots loading `pages` of `site` with their assets from t = 60 s (see
/// [`Scenario::BrowserSwarm`]); `rotating`: [`Scenario::BrowserSwarmRotating`]'s bots.
fn browser_swarm(
    g: &mut Gen,
    labels: &mut Labels,
    site: &SitePlan,
    pages: &[&str],
    rotating: bool,
) {
    let seed = g.seed;
    let site_idx = usize::from(site.addr != SHOP);
    let bots = bot_addresses(&mut Rng::new(seed, "addresses/bots"));
    let ua_weights: Vec<u32> = BROWSERS.iter().map(|b| b.weight).collect();
    for (i, &ip) in bots.iter().enumerate() {
        let mut rng = Rng::new(seed, &format!("browser-bot/{i}"));
        let loader = match (rotating, rng.below(10)) {
            (true, k) => Loader::Rotating { referer: k < 5 },
            (false, 0..4) => Loader::Wget,
            (false, 4..8) => Loader::Headless,
            (false, _) => Loader::Script,
        };
        let ports = g.new_ports(&mut rng, false);
        let mut c = Client::browser(ip, ports, rng);
        c.bot = true;
        c.ttl = 64 - c.rng.range(8, 22) as u8;
        c.rtt_us = c.rng.range(10 * MS, 60 * MS);
        let dst = site.addr_for(c.ip);
        let start = EVENT_START_US + c.rng.range(0, 5 * SECOND);
        let end = start + c.rng.range(22 * SECOND, 30 * SECOND);
        let mut t = start;
        while t < end {
            let path = *c.rng.pick(pages);
            let page = &site.pages[site.page_index(path)];
            let url = format!("http://{}{path}", site.host);
            let browser = match loader {
                Loader::Rotating { .. } => &BROWSERS[c.rng.weighted(&ua_weights)],
                _ => &HEADLESS_CHROME,
            };
            let request = |target: &str, referer: Option<&str>| match loader {
                Loader::Wget => wget_request(target, site.host, referer),
                Loader::Headless | Loader::Script => browser_request(
                    browser,
                    "en-US,en;q=0.9",
                    "GET",
                    target,
                    site.host,
                    referer,
                    None,
                ),
                Loader::Rotating { .. } => {
                    browser_request(browser, c.lang, "GET", target, site.host, referer, None)
                }
            };
            let asset_referer = match loader {
                Loader::Wget | Loader::Headless | Loader::Rotating { referer: true } => {
                    Some(url.as_str())
                }
                Loader::Script | Loader::Rotating { referer: false } => None,
            };
            let req = request(path, None);
            let assets: Vec<&String> = match loader {
                Loader::Rotating { .. } => {
                    page.assets.iter().filter(|_| c.rng.chance(0.6)).collect()
                }
                _ => page.assets.iter().collect(),
            };
            let reqs: Vec<Vec<u8>> = assets.iter().map(|a| request(a, asset_referer)).collect();
            let reply = Dest::Document.reply_bytes(&mut c.rng);
            g.send(&mut c, site_idx, dst, 0, t, &req, reply, KEEP_ALIVE);
            let mut at = t + c.rtt_us + c.rng.range(20 * MS, 80 * MS);
            for (k, (asset, req)) in assets.iter().zip(&reqs).enumerate() {
                let reply = Dest::of(asset).reply_bytes(&mut c.rng);
                // wget fetches one requisite after the other on its one connection; the
                // others spread them over six, as a browser does.
                let (slot, step) = match loader {
                    Loader::Wget => (0, c.rtt_us + c.rng.range(2 * MS, 10 * MS)),
                    _ => (k % BROWSER_CONNS, c.rng.range(3 * MS, 40 * MS)),
                };
                g.send(
                    &mut c,
                    site_idx,
                    dst,
                    slot,
                    at,
                    req,
                    reply,
                    BROWSER_CONNS_POLICY,
                );
                at += step;
            }
            // The next view once this one is loaded, at most about one a second.
            let next = t + c.rng.range(SECOND, 1500 * MS);
            t = next.max(at + c.rng.range(50 * MS, 200 * MS));
        }
    }
    swarm_labels(labels, bots, site, pages);
}

// ---------------------------------------------------------------------------------------------
// The crawler
// ---------------------------------------------------------------------------------------------

/// `/robots.txt`, then every page, of each site in turn: 2 requests/s, HTML only, no Referer.
fn crawl(g: &mut Gen, ip: IpAddr, sites: &[SitePlan; 2]) {
    let mut rng = Rng::new(g.seed, "crawler");
    let ports = g.new_ports(&mut rng, false);
    let mut c = Client::browser(ip, ports, rng);
    c.ttl = 64 - 9;
    c.rtt_us = 25 * MS;
    let mut t = 30 * SECOND;
    for (site_idx, s) in sites.iter().enumerate() {
        let paths = std::iter::once("/robots.txt").chain(s.pages.iter().map(|p| p.path.as_str()));
        for path in paths {
            let accept = if path == "/robots.txt" {
                "text/plain,*/*;q=0.8"
            } else {
                "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
            };
            let req = http(
                "GET",
                path,
                &[
                    ("Host", s.host),
                    ("User-Agent", CRAWLER_UA),
                    ("Accept", accept),
                    ("Accept-Encoding", "gzip, deflate"),
                    ("Connection", "keep-alive"),
                ],
                &[],
            );
            let reply = Dest::Document.reply_bytes(&mut c.rng);
            let dst = s.addr_for(c.ip);
            g.send(&mut c, site_idx, dst, 0, t, &req, reply, KEEP_ALIVE);
            t += c.rng.range(450 * MS, 550 * MS);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use std::{
        collections::{BTreeMap, HashMap},
        sync::OnceLock,
    };

    use pcap_file::pcap::PcapReader;
    use pnet::packet::{
        Packet as _,
        ethernet::{EtherTypes, EthernetPacket},
        ip::IpNextHeaderProtocols,
        ipv4::Ipv4Packet,
        ipv6::Ipv6Packet,
        tcp::{self, TcpPacket},
    };

    use super::*;

    const SEED: u64 = 7;

    type Generated = (Vec<(u64, Vec<u8>)>, Labels);

    /// Every scenario for [`SEED`], generated once for all tests.
    fn cached(s: Scenario) -> &'static Generated {
        static ALL: OnceLock<Vec<Generated>> = OnceLock::new();
        let all = ALL.get_or_init(|| {
            std::thread::scope(|scope| {
                let handles = Scenario::all().map(|s| scope.spawn(move || generate(s, SEED)));
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            })
        });
        &all[index(s)]
    }

    const SCENARIOS: usize = Scenario::all().len();

    fn index(s: Scenario) -> usize {
        Scenario::all().iter().position(|x| *x == s).unwrap()
    }

    /// Every frame of a scenario, decoded and checked once.
    fn segments(s: Scenario) -> &'static [Seg] {
        static DECODED: [OnceLock<Vec<Seg>>; SCENARIOS] = [const { OnceLock::new() }; SCENARIOS];
        DECODED[index(s)].get_or_init(|| cached(s).0.iter().map(|(ts, f)| decode(*ts, f)).collect())
    }

    /// One frame, decoded and checked: addresses, ports, flags, checksums.
    #[derive(Clone, Debug)]
    struct Seg {
        ts: u64,
        src: IpAddr,
        sport: u16,
        dst: SocketAddr,
        syn: bool,
        seq: u32,
        ack: u32,
        payload: Vec<u8>,
    }

    fn decode(ts: u64, frame: &[u8]) -> Seg {
        let eth = EthernetPacket::new(frame).expect("Ethernet");
        let (src, dst, l4, ip_payload): (IpAddr, IpAddr, _, Vec<u8>) = match eth.get_ethertype() {
            EtherTypes::Ipv4 => {
                let ip = Ipv4Packet::new(eth.payload()).expect("IPv4");
                assert_eq!(ip.get_checksum(), ipv4::checksum(&ip), "IPv4 checksum");
                assert_eq!(usize::from(ip.get_total_length()), eth.payload().len());
                (
                    ip.get_source().into(),
                    ip.get_destination().into(),
                    ip.get_next_level_protocol(),
                    ip.payload().to_vec(),
                )
            }
            EtherTypes::Ipv6 => {
                let ip = Ipv6Packet::new(eth.payload()).expect("IPv6");
                (
                    ip.get_source().into(),
                    ip.get_destination().into(),
                    ip.get_next_header(),
                    ip.payload().to_vec(),
                )
            }
            other => panic!("ethertype {other}"),
        };
        assert_eq!(l4, IpNextHeaderProtocols::Tcp);
        let seg = TcpPacket::new(&ip_payload).expect("TCP");
        let sum = match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => tcp::ipv4_checksum(&seg, &s, &d),
            (IpAddr::V6(s), IpAddr::V6(d)) => tcp::ipv6_checksum(&seg, &s, &d),
            _ => panic!("mixed families"),
        };
        assert_eq!(seg.get_checksum(), sum, "TCP checksum");
        let flags = seg.get_flags();
        let syn = flags == TcpFlags::SYN;
        assert!(
            syn || flags == TcpFlags::PSH | TcpFlags::ACK,
            "flags {flags:#x}"
        );
        Seg {
            ts,
            src,
            sport: seg.get_source(),
            dst: SocketAddr::new(dst, seg.get_destination()),
            syn,
            seq: seg.get_sequence(),
            ack: seg.get_acknowledgement(),
            payload: seg.payload().to_vec(),
        }
    }

    /// A request's method, target and headers.
    #[derive(Debug)]
    struct Req {
        method: String,
        target: String,
        headers: BTreeMap<String, String>,
    }

    impl Req {
        fn path(&self) -> &str {
            self.target.split('?').next().unwrap()
        }
        fn header(&self, name: &str) -> Option<&str> {
            self.headers.get(name).map(String::as_str)
        }
    }

    fn parse_http(payload: &[u8]) -> Req {
        let text = std::str::from_utf8(payload).expect("ASCII request");
        let (head, body) = text.split_once("\r\n\r\n").expect("end of headers");
        let mut lines = head.split("\r\n");
        let mut line = lines.next().unwrap().split(' ');
        let (method, target, version) = (
            line.next().unwrap().to_owned(),
            line.next().unwrap().to_owned(),
            line.next().unwrap(),
        );
        assert_eq!(version, "HTTP/1.1");
        let mut headers = BTreeMap::new();
        for l in lines {
            let (k, v) = l.split_once(": ").expect("header");
            assert!(
                headers.insert(k.to_owned(), v.to_owned()).is_none(),
                "repeated {k}"
            );
        }
        match headers.get("Content-Length") {
            Some(n) => assert_eq!(body.len(), n.parse::<usize>().unwrap()),
            None => assert!(body.is_empty()),
        }
        Req {
            method,
            target,
            headers,
        }
    }

    /// Every request of a scenario, decoded: (segment, request).
    fn requests(s: Scenario) -> &'static [(Seg, Req)] {
        static DECODED: [OnceLock<Vec<(Seg, Req)>>; SCENARIOS] =
            [const { OnceLock::new() }; SCENARIOS];
        DECODED[index(s)].get_or_init(|| {
            segments(s)
                .iter()
                .filter(|seg| !seg.syn)
                .map(|seg| (seg.clone(), parse_http(&seg.payload)))
                .collect()
        })
    }

    fn in_prefix(a: IpAddr, prefix: &str) -> bool {
        let (net, len) = prefix.split_once('/').unwrap();
        let len: u32 = len.parse().unwrap();
        match (a, net.parse::<IpAddr>().unwrap()) {
            (IpAddr::V4(a), IpAddr::V4(n)) => {
                let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
                u32::from(a) & mask == u32::from(n) & mask
            }
            (IpAddr::V6(a), IpAddr::V6(n)) => {
                let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
                u128::from(a) & mask == u128::from(n) & mask
            }
            _ => false,
        }
    }

    fn is_asset(path: &str) -> bool {
        Dest::of(path) != Dest::Document
    }

    #[test]
    fn names_round_trip_and_parse_loosely() {
        for s in Scenario::all() {
            assert_eq!(s.name().parse::<Scenario>().unwrap(), s);
            assert_eq!(s.to_string(), s.name());
        }
        assert_eq!(
            "FlashCrowd".parse::<Scenario>().unwrap(),
            Scenario::FlashCrowd
        );
        assert_eq!(
            "multi_tenant".parse::<Scenario>().unwrap(),
            Scenario::MultiTenant
        );
        let err = "ddos".parse::<Scenario>().unwrap_err().to_string();
        assert!(err.contains("flash-crowd"), "{err}");
    }

    #[test]
    fn sites_have_about_40_pages_with_5_to_15_shared_assets() {
        for site in sites() {
            assert_eq!(site.pages.len(), 40, "{}", site.host);
            let mut uses: HashMap<&str, usize> = HashMap::new();
            for page in &site.pages {
                assert!(
                    (5..=15).contains(&page.assets.len()),
                    "{}{} has {} assets",
                    site.host,
                    page.path,
                    page.assets.len()
                );
                assert!(!is_asset(&page.path));
                for a in &page.assets {
                    assert!(is_asset(a), "{a}");
                    *uses.entry(a).or_default() += 1;
                }
            }
            assert!(uses.values().filter(|&&n| n > 1).count() >= 5);
        }
        let shop = &sites()[0];
        let gallery = &shop.pages[shop.page_index("/gallery/7")];
        assert_eq!(gallery.assets.len(), 15, "galleries are image-heavy");
    }

    #[test]
    fn same_seed_same_bytes_other_seed_other_bytes() {
        assert!(
            generate(Scenario::Swarm, SEED) == *cached(Scenario::Swarm),
            "not deterministic"
        );
        let other = generate(Scenario::Browsing, SEED + 1);
        assert!(
            other.0 != cached(Scenario::Browsing).0,
            "the seed changes nothing"
        );
    }

    #[test]
    fn every_scenario_contains_the_browsing_baseline() {
        let base: Vec<&Vec<u8>> = cached(Scenario::Browsing).0.iter().map(|f| &f.1).collect();
        for s in Scenario::all() {
            let mut have: HashMap<&[u8], usize> = HashMap::new();
            for (_, f) in &cached(s).0 {
                *have.entry(f).or_default() += 1;
            }
            for f in &base {
                let n = have.get(f.as_slice()).copied().unwrap_or(0);
                assert!(n > 0, "{s} lacks a baseline frame");
                have.insert(f.as_slice(), n - 1);
            }
        }
    }

    #[test]
    fn frames_are_tcp_to_the_sites_carrying_http_requests() {
        for s in Scenario::all() {
            let (frames, labels) = cached(s);
            let (mut reqs, mut syns) = (0, 0);
            for seg in segments(s) {
                assert!(
                    [SHOP, BLOG, SHOP6, BLOG6].contains(&seg.dst),
                    "{s}: to {}",
                    seg.dst
                );
                assert_eq!(seg.src.is_ipv4(), seg.dst.is_ipv4());
                if seg.syn {
                    syns += 1;
                    assert!(seg.payload.is_empty());
                    assert_eq!(seg.ack, 0);
                    continue;
                }
                reqs += 1;
                assert!(
                    seg.payload.starts_with(b"GET ") || seg.payload.starts_with(b"POST "),
                    "{s}: {:?}",
                    String::from_utf8_lossy(&seg.payload)
                );
                let req = parse_http(&seg.payload);
                let host = if seg.dst == SHOP || seg.dst == SHOP6 {
                    SHOP_HOST
                } else {
                    BLOG_HOST
                };
                assert_eq!(req.header("Host"), Some(host));
                for h in ["User-Agent", "Accept", "Connection"] {
                    assert!(req.header(h).is_some(), "{s}: no {h} in {req:?}");
                }
                assert!(req.target.starts_with('/'));
            }
            assert_eq!((reqs, syns), (labels.requests, labels.syns), "{s}");
            assert_eq!(frames.len(), labels.requests + labels.syns);
        }
    }

    #[test]
    fn connections_have_a_syn_and_consecutive_sequence_numbers() {
        for s in Scenario::all() {
            // (src, sport, dst) -> next expected seq
            let mut next: HashMap<(IpAddr, u16, SocketAddr), u32> = HashMap::new();
            let mut max_ports_reused = 0;
            for seg in segments(s) {
                let key = (seg.src, seg.sport, seg.dst);
                if seg.syn {
                    if next.insert(key, seg.seq.wrapping_add(1)).is_some() {
                        max_ports_reused += 1;
                    }
                    continue;
                }
                let want = next
                    .get_mut(&key)
                    .unwrap_or_else(|| panic!("{s}: no SYN for {key:?}"));
                assert_eq!(seg.seq, *want, "{s}: seq on {key:?}");
                *want = want.wrapping_add(seg.payload.len() as u32);
            }
            assert_eq!(max_ports_reused, 0, "{s}: a port was reused");
        }
    }

    #[test]
    fn frames_are_in_time_order_from_the_epoch() {
        for s in Scenario::all() {
            let (frames, labels) = cached(s);
            assert!(frames.windows(2).all(|w| w[0].0 <= w[1].0), "{s}");
            assert!(frames[0].0 >= EPOCH_US);
            assert_eq!(labels.first_us, frames[0].0);
            assert_eq!(labels.last_us, frames.last().unwrap().0);
            assert!(labels.last_us - labels.first_us < 10 * 60 * SECOND);
        }
    }

    #[test]
    fn sizes_are_bounded_for_several_seeds() {
        let check = |s: Scenario, seed: u64, (frames, labels): &Generated| {
            let bytes: u64 = 24 + frames.iter().map(|f| 16 + f.1.len() as u64).sum::<u64>();
            assert!(
                labels.requests <= MAX_REQUESTS,
                "{s}/{seed}: {} requests",
                labels.requests
            );
            assert!(bytes <= MAX_PCAP_BYTES, "{s}/{seed}: {bytes} bytes");
            assert!(frames.iter().all(|f| f.1.len() <= 1514), "{s}/{seed}");
        };
        for s in Scenario::all() {
            check(s, SEED, cached(s));
        }
        // The largest scenarios with another seed (`cargo xtask scenarios` writes seed 1).
        for s in [Scenario::Swarm, Scenario::FlashCrowd] {
            check(s, 1, &generate(s, 1));
        }
    }

    #[test]
    fn the_wide_swarm_hammers_one_page_while_every_bot_stays_under_every_per_source_bar() {
        let s = Scenario::WideSwarm;
        let members: BTreeSet<IpAddr> = cached(s).1.swarm_members.iter().copied().collect();
        let mut times: std::collections::BTreeMap<IpAddr, Vec<u64>> = Default::default();
        for (seg, req) in requests(s).iter().filter(|r| members.contains(&r.0.src)) {
            let (path, query) = req.target.split_once('?').expect("a random query string");
            assert_eq!(path, WIDE_PAGE);
            assert!(query.starts_with("r="), "{query}");
            assert!(
                !req.headers
                    .iter()
                    .any(|(k, _)| k.eq_ignore_ascii_case("referer")),
                "{req:?}"
            );
            times.entry(seg.src).or_default().push(seg.ts);
        }
        assert_eq!(times.len(), WIDE_BOTS, "every bot fetches the page");
        // No bot gets near 8 requests in 30 s (nor 2 in 30 s: each waits 30–60 s).
        for (bot, ts) in &times {
            assert!(
                ts.windows(2).all(|w| w[1] - w[0] >= 30 * SECOND),
                "{bot}: {ts:?}"
            );
        }
        let all: usize = times.values().map(Vec::len).sum();
        let rps = all as f64 / 240.0;
        assert!((35.0..70.0).contains(&rps), "{rps} req/s on the page");
    }

    #[test]
    fn labels_are_consistent_with_the_traffic() {
        for s in Scenario::all() {
            let (_, labels) = cached(s);
            let reqs = requests(s);
            let sources: BTreeSet<IpAddr> = reqs.iter().map(|r| r.0.src).collect();
            let members: BTreeSet<IpAddr> = labels.swarm_members.iter().copied().collect();
            let legit: BTreeSet<IpAddr> = labels.legitimate.iter().copied().collect();
            assert_eq!(members.len(), labels.swarm_members.len(), "{s}: duplicates");
            assert!(
                members.is_disjoint(&legit),
                "{s}: a member is also legitimate"
            );
            let labelled: BTreeSet<IpAddr> = members.union(&legit).copied().collect();
            assert_eq!(labelled, sources, "{s}: labels and sources differ");
            assert!(labels.nat.iter().all(|a| legit.contains(a)));
            assert!(labels.crawlers.iter().all(|a| legit.contains(a)));
            let from_members = reqs.iter().filter(|r| members.contains(&r.0.src)).count();
            assert_eq!(from_members, labels.swarm_requests);
            assert_eq!(labels.scenario, s.name());
            assert_eq!(labels.seed, SEED);
            if s.has_swarm() {
                let (bots, pages) = if s == Scenario::WideSwarm {
                    (WIDE_BOTS, 1)
                } else {
                    (BOTS, 2)
                };
                assert_eq!(labels.swarm_members.len(), bots);
                assert!(labels.attacked_site.is_some());
                assert_eq!(labels.attacked_pages.len(), pages);
                for p in &labels.bot_only_prefixes {
                    let inside: Vec<_> = sources.iter().filter(|a| in_prefix(**a, p)).collect();
                    assert!(inside.len() >= 10, "{s}: {p} holds {}", inside.len());
                    assert!(
                        inside.iter().all(|a| members.contains(a)),
                        "{s}: {p} not bot-only"
                    );
                }
                assert!(
                    s == Scenario::WideSwarm
                        || labels
                            .bot_only_prefixes
                            .contains(&"100.64.0.0/24".to_owned())
                );
                for p in &labels.mixed_prefixes {
                    assert!(
                        sources
                            .iter()
                            .any(|a| in_prefix(*a, p) && members.contains(a))
                    );
                    assert!(
                        sources
                            .iter()
                            .any(|a| in_prefix(*a, p) && legit.contains(a))
                    );
                }
                assert!(labels.mixed_prefixes.contains(&"192.0.2.0/24".to_owned()));
                assert!(members.iter().any(|a| a.is_ipv6()) && members.iter().any(|a| a.is_ipv4()));
                for p in &labels.shared_address_space {
                    assert!(members.iter().any(|a| in_prefix(*a, p)));
                }
            } else {
                assert!(labels.swarm_members.is_empty());
                assert!(labels.attacked_site.is_none() && labels.attacked_host.is_none());
                assert!(labels.attacked_pages.is_empty() && labels.bot_only_prefixes.is_empty());
                assert_eq!(labels.swarm_requests, 0);
            }
            assert_eq!(!labels.nat.is_empty(), s == Scenario::Nat);
            assert_eq!(!labels.crawlers.is_empty(), s == Scenario::Crawler);
            // Everything is from documentation (or shared, or benchmarking) space.
            let documentation = [
                "198.51.100.0/24",
                "192.0.2.0/24",
                "100.64.0.0/16",
                "198.18.0.0/15",
                "2001:db8:100::/64",
                "2001:db8:bad::/48",
            ];
            for a in &sources {
                assert!(documentation.iter().any(|p| in_prefix(*a, p)), "{a}");
            }
        }
    }

    #[test]
    fn bots_hammer_only_the_attacked_pages_without_assets() {
        for s in [Scenario::Swarm, Scenario::MultiTenant] {
            let (_, labels) = cached(s);
            let members: BTreeSet<IpAddr> = labels.swarm_members.iter().copied().collect();
            let site = labels.attacked_site.unwrap();
            let host = labels.attacked_host.as_deref().unwrap();
            let mut per_bot: HashMap<IpAddr, Vec<u64>> = HashMap::new();
            let mut uas = BTreeSet::new();
            let mut referers = BTreeSet::new();
            for (seg, req) in requests(s) {
                if !members.contains(&seg.src) {
                    continue;
                }
                assert!(labels.attacked_site_addrs.contains(&seg.dst));
                assert_eq!(req.header("Host"), Some(host));
                assert_eq!(req.method, "GET");
                assert!(
                    labels.attacked_pages.iter().any(|p| p == req.path()),
                    "{}",
                    req.target
                );
                assert!(seg.ts >= EPOCH_US + EVENT_START_US);
                uas.insert(req.header("User-Agent").unwrap().to_owned());
                referers.insert(req.header("Referer").map(str::to_owned));
                per_bot.entry(seg.src).or_default().push(seg.ts);
            }
            assert_eq!(per_bot.len(), BOTS, "{s}: every bot sends");
            assert!((2..=6).contains(&uas.len()), "{s}: {uas:?}");
            assert!(
                uas.contains(CHROME_WINDOWS),
                "some bots copy a real browser"
            );
            assert!(referers.len() <= 2, "{s}: {referers:?}");
            for (bot, ts) in &per_bot {
                let span = (ts.last().unwrap() - ts[0]) as f64 / SECOND as f64;
                let rate = (ts.len() - 1) as f64 / span;
                assert!((55.0..=125.0).contains(&span), "{bot}: {span} s");
                assert!((0.7..=4.5).contains(&rate), "{bot}: {rate}/s");
            }
            assert_eq!(labels.attacked_site_addrs[0], site);
            assert!(members.iter().any(|a| a.is_ipv6()));
            // The other site gets no bots.
            let reqs = requests(s);
            let other = |r: &Req| r.header("Host") != Some(host);
            assert!(reqs.iter().any(|(_, r)| other(r)));
            assert!(
                reqs.iter()
                    .filter(|(_, r)| other(r))
                    .all(|(seg, _)| !members.contains(&seg.src))
            );
            if s == Scenario::Swarm {
                // The attacked pages get legitimate visits too.
                assert!(reqs.iter().any(|(seg, r)| !members.contains(&seg.src)
                    && !other(r)
                    && labels.attacked_pages.iter().any(|p| p == r.path())));
            }
        }
    }

    #[test]
    fn browser_like_bots_load_the_galleries_with_their_assets_again_and_again() {
        let gallery_assets = |path: &str| -> BTreeSet<String> {
            let shop = &sites()[0];
            shop.pages[shop.page_index(path)]
                .assets
                .iter()
                .cloned()
                .collect()
        };
        for s in [Scenario::BrowserSwarm, Scenario::BrowserSwarmRotating] {
            let (_, labels) = cached(s);
            assert_eq!(labels.attacked_pages, ["/gallery/1", "/gallery/2"]);
            let members: BTreeSet<IpAddr> = labels.swarm_members.iter().copied().collect();
            // Per bot: its views (page, assets that followed), its User-Agents, whether it
            // sent a Referer with its assets.
            let mut views: HashMap<IpAddr, Vec<(String, usize)>> = HashMap::new();
            let mut uas: HashMap<IpAddr, BTreeSet<String>> = HashMap::new();
            let mut with_referer = BTreeSet::new();
            for (seg, req) in requests(s) {
                if !members.contains(&seg.src) {
                    continue;
                }
                assert_eq!(req.header("Host"), Some(SHOP_HOST));
                uas.entry(seg.src)
                    .or_default()
                    .insert(req.header("User-Agent").unwrap().to_owned());
                let v = views.entry(seg.src).or_default();
                if is_asset(req.path()) {
                    let (page, n) = v.last_mut().expect("a bot's assets follow a page");
                    assert!(gallery_assets(page).contains(req.path()), "{}", req.path());
                    *n += 1;
                    if req.header("Referer") == Some(&format!("http://{SHOP_HOST}{page}")) {
                        with_referer.insert(seg.src);
                    }
                } else {
                    assert!(labels.attacked_pages.iter().any(|p| p == req.path()));
                    v.push((req.path().to_owned(), 0));
                }
            }
            assert_eq!(views.len(), BOTS, "{s}: every bot loads pages");
            let all_assets = gallery_assets("/gallery/1").len();
            let mut per_view = Vec::new();
            for (bot, v) in &views {
                assert!((15..=31).contains(&v.len()), "{s} {bot}: {} views", v.len());
                per_view.extend(v.iter().map(|(_, n)| *n));
            }
            let mean = per_view.iter().sum::<usize>() as f64 / per_view.len() as f64;
            let rotating_uas = uas.values().filter(|u| u.len() >= 3).count();
            if s == Scenario::BrowserSwarm {
                assert!(per_view.iter().all(|n| *n == all_assets), "{s}: all assets");
                assert!(uas.values().all(|u| u.len() == 1), "{s}: one UA per bot");
                assert!(
                    (100..BOTS).contains(&with_referer.len()),
                    "{s}: some send none"
                );
            } else {
                assert!(
                    (0.5..0.7).contains(&(mean / all_assets as f64)),
                    "{s}: {mean}"
                );
                assert!(rotating_uas >= BOTS * 9 / 10, "{s}: {rotating_uas} rotate");
                assert!(
                    (60..140).contains(&with_referer.len()),
                    "{s}: half send one"
                );
            }
        }
    }

    #[test]
    fn the_bots_slash_24_also_holds_active_legitimate_browsers() {
        let (_, labels) = cached(Scenario::Swarm);
        let members: BTreeSet<IpAddr> = labels.swarm_members.iter().copied().collect();
        let mut legit_during_attack = BTreeSet::new();
        for (seg, req) in requests(Scenario::Swarm) {
            if in_prefix(seg.src, "192.0.2.0/24") && !members.contains(&seg.src) {
                assert!(LEGIT_IN_BOT_NET.iter().any(|a| IpAddr::V4(*a) == seg.src));
                let t = seg.ts - EPOCH_US;
                if (EVENT_START_US..EVENT_START_US + 60 * SECOND).contains(&t) {
                    legit_during_attack.insert(seg.src);
                }
                assert!(req.header("Accept-Language").is_some());
            }
        }
        assert!(!legit_during_attack.is_empty());
        let cgn_24 = members
            .iter()
            .filter(|a| in_prefix(**a, "100.64.0.0/24"))
            .count();
        assert_eq!(cgn_24, BOTS_CGN_24);
    }

    #[test]
    fn browsers_fetch_assets_with_the_page_as_referer_within_a_second() {
        let reqs = requests(Scenario::Browsing);
        let mut last_page: HashMap<IpAddr, (u64, String)> = HashMap::new();
        let mut uas = BTreeSet::new();
        let mut assets = 0;
        let mut posts = 0;
        for (seg, req) in reqs {
            uas.insert(req.header("User-Agent").unwrap().to_owned());
            assert!(req.header("Accept-Language").is_some());
            if req.method == "POST" {
                posts += 1;
                assert_eq!(req.target, "/cart/add");
                continue;
            }
            let host = req.header("Host").unwrap();
            if is_asset(req.path()) {
                assets += 1;
                let (at, page) = &last_page[&seg.src];
                assert_eq!(req.header("Referer"), Some(page.as_str()), "{req:?}");
                assert!(
                    seg.ts - at <= 1_500 * MS,
                    "asset {} ms after its page",
                    (seg.ts - at) / MS
                );
            } else {
                last_page.insert(seg.src, (seg.ts, format!("http://{host}{}", req.target)));
            }
        }
        assert!(uas.len() >= 6, "{uas:?}");
        assert!(assets > reqs.len() / 2, "{assets} of {}", reqs.len());
        assert!(posts > 0);
        assert!(reqs.iter().any(|r| r.1.target.contains('?')));
        assert_eq!(last_page.len(), VISITORS);
    }

    #[test]
    fn flash_crowd_loads_product_1_with_all_its_assets() {
        let (_, labels) = cached(Scenario::FlashCrowd);
        let baseline: BTreeSet<IpAddr> = cached(Scenario::Browsing)
            .1
            .legitimate
            .iter()
            .copied()
            .collect();
        let mut first: HashMap<IpAddr, Vec<&Req>> = HashMap::new();
        for (seg, req) in requests(Scenario::FlashCrowd) {
            if !baseline.contains(&seg.src) {
                let t = seg.ts - EPOCH_US;
                first.entry(seg.src).or_default().push(req);
                assert!(t >= EVENT_START_US);
            }
        }
        assert_eq!(first.len(), FLASH_VISITORS);
        assert_eq!(labels.legitimate.len(), VISITORS + FLASH_VISITORS);
        let product = sites()[0].pages[sites()[0].page_index("/product/1")].clone();
        for reqs in first.values() {
            assert_eq!(reqs[0].target, "/product/1");
            let assets: Vec<&str> = reqs[1..=product.assets.len()]
                .iter()
                .map(|r| r.target.as_str())
                .collect();
            assert_eq!(
                assets,
                product
                    .assets
                    .iter()
                    .map(String::as_str)
                    .collect::<Vec<_>>()
            );
            for r in &reqs[1..=product.assets.len()] {
                assert_eq!(r.header("Referer"), Some("http://shop.example/product/1"));
            }
        }
    }

    #[test]
    fn nat_carries_many_users_at_about_20_requests_per_second() {
        let mut uas = BTreeSet::new();
        let mut ts = Vec::new();
        for (seg, req) in requests(Scenario::Nat) {
            if seg.src == IpAddr::V4(NAT_ADDR) {
                uas.insert(req.header("User-Agent").unwrap().to_owned());
                ts.push(seg.ts);
            }
        }
        let span = (ts.last().unwrap() - ts[0]) as f64 / SECOND as f64;
        // The busy middle: the minute after every user has arrived.
        let busy = ts
            .iter()
            .filter(|t| (90 * SECOND..150 * SECOND).contains(&(**t - EPOCH_US)))
            .count() as f64
            / 60.0;
        assert!(uas.len() >= 8, "{uas:?}");
        assert!(
            (12.0..=35.0).contains(&busy),
            "{busy} req/s (over {span} s)"
        );
    }

    #[test]
    fn crawler_walks_every_page_once_at_2_per_second() {
        let mut seen = Vec::new();
        let mut ts = Vec::new();
        for (seg, req) in requests(Scenario::Crawler) {
            if seg.src == IpAddr::V4(CRAWLER_ADDR) {
                assert_eq!(req.header("User-Agent"), Some(CRAWLER_UA));
                assert_eq!(req.header("Referer"), None);
                assert!(!is_asset(req.path()));
                seen.push(format!("{}{}", req.header("Host").unwrap(), req.target));
                ts.push(seg.ts);
            }
        }
        let pages: usize = sites().iter().map(|s| s.pages.len() + 1).sum();
        let unique: BTreeSet<&String> = seen.iter().collect();
        assert_eq!((seen.len(), unique.len()), (pages, pages));
        let rate = (ts.len() - 1) as f64 / ((ts.last().unwrap() - ts[0]) as f64 / SECOND as f64);
        assert!((1.8..=2.2).contains(&rate), "{rate}/s");
    }

    #[test]
    fn multi_tenant_shop_sees_only_legitimate_traffic_some_shared_with_the_blog() {
        let (_, labels) = cached(Scenario::MultiTenant);
        assert_eq!(labels.attacked_site, Some(BLOG));
        assert_eq!(labels.attacked_pages, ["/post/3", "/post/4"]);
        let members: BTreeSet<IpAddr> = labels.swarm_members.iter().copied().collect();
        let mut shop = BTreeSet::new();
        let mut blog = BTreeSet::new();
        for (seg, _) in requests(Scenario::MultiTenant) {
            if members.contains(&seg.src) {
                continue;
            }
            if seg.dst == SHOP || seg.dst == SHOP6 {
                shop.insert(seg.src);
            } else {
                blog.insert(seg.src);
            }
        }
        assert!(shop.intersection(&blog).count() >= 3);
    }

    #[test]
    fn pcap_and_labels_read_back() {
        let dir = std::env::temp_dir().join(format!("swl-scenarios-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        for s in [Scenario::Crawler, Scenario::Swarm] {
            let path = dir.join(format!("{s}.pcap"));
            let (frames, want) = cached(s);
            let labels = if s == Scenario::Crawler {
                write(s, SEED, &path).unwrap()
            } else {
                write_pcap(frames, want, &path).unwrap();
                want.clone()
            };
            assert_eq!(&labels, want);
            assert_eq!(&read_labels(&path).unwrap(), want);
            let mut reader = PcapReader::new(fs::File::open(&path).unwrap()).unwrap();
            let header = reader.header();
            assert_eq!(header.datalink, DataLink::ETHERNET);
            assert_eq!(header.ts_resolution, TsResolution::MicroSecond);
            let mut n = 0;
            while let Some(packet) = reader.next_packet() {
                let packet = packet.unwrap();
                let (ts, frame) = &frames[n];
                assert_eq!(packet.timestamp, Duration::from_micros(*ts));
                assert_eq!(packet.orig_len as usize, frame.len());
                assert_eq!(&*packet.data, frame.as_slice());
                n += 1;
            }
            assert_eq!(n, labels.requests + labels.syns);
            let size = fs::metadata(&path).unwrap().len();
            assert!(size <= MAX_PCAP_BYTES);
        }
        fs::remove_dir_all(&dir).unwrap();
    }
}
