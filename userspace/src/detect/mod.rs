//! The swarm detector: from request events to swarms (many sources hammering the same few
//! pages of one site, during a spike, behaving like bots).
//!
//! Per source it keeps exponentially decayed counts (time constant [`DetectorConfig::window`]):
//! requests, sub-resource (asset) requests, and up to [`MAX_TRACKED_PAGES`] pages with their
//! counts. Per page it keeps a short-term rate and a long-term baseline (EWMA). On every
//! [`Detector::tick`]:
//! 1. a source is a *candidate* when, within the window, it made at least `min_requests`
//!    requests, at least `concentration` of them to at most `max_pages` pages, at least
//!    `min_repeat` requests per page on average, and almost no asset requests; or, loading
//!    the pages with their assets as a browser does, when it repeats views of the same few
//!    pages (see `views`);
//! 2. candidates are clustered by the pages they share (union-find over pages); pages of one
//!    site on several addresses (IPv4 and IPv6, the same `Host` and path) count as one, so a
//!    dual-stack site under attack is one swarm (each member keeps the address it attacked);
//! 3. a cluster with at least `min_members` sources whose pages are hot (rate well above their
//!    baseline) is a swarm. Swarms keep their id across ticks and only gain members.
//!
//! One submodule per step: `pages` (rates, baselines, hot pages), `candidates`, `clustering`,
//! `evidence` (a cluster becomes a swarm, new or merged).
//!
//! What this deliberately does not call a swarm: a flash crowd (each visitor loads a page once,
//! with its assets), a NAT (one address, many pages, with assets), a crawler (one source, many
//! distinct pages, each once), a visitor reloading a page now and then (too few requests).
//! Memory is bounded: at most `max_sources` sources and `max_pages` pages; beyond that the least
//! recently active are evicted.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    time::Duration,
};

use hashbrown::HashTable;
use rustc_hash::{FxHashMap, FxHashSet};
use smallvec::SmallVec;

use crate::l7::{Kind, Origin, RequestEvent, ja4::Fingerprint};

mod candidates;
mod clustering;
mod evidence;
mod fingerprints;
mod handshakes;
mod index;
mod neighbours;
mod page_counts;
mod pages;
mod prefetch;
mod table;
mod views;
mod wide;

use page_counts::{PageCounts, decay_factor};
use table::SourceTable;

pub use fingerprints::{Family, JA4_EVIDENCE_SHARE, JA4_TOP};
pub use handshakes::HANDSHAKE_JA4S;
pub use wide::{WIDE_HITS, WideConfig};

/// Pages remembered per source; a source with more distinct pages is not concentrated anyway.
pub const MAX_TRACKED_PAGES: usize = 6;

/// How many events ahead of the one it observes [`Detector::observe_batch`] asks for the
/// states the next ones will read: far enough for a miss to memory to complete meanwhile, near
/// enough that the lines are still in cache when their event comes (4 to 16 measured alike in
/// the detector bench; 0 was up to twice as slow).
const PREFETCH_AHEAD: usize = 6;

/// Tuning of the detector. The defaults are the ones the scenario tests are run with.
#[derive(Clone, Debug, PartialEq)]
pub struct DetectorConfig {
    /// Time constant of the per-source counts.
    pub window: Duration,
    /// Requests a source needs within the window to be a candidate.
    pub min_requests: f64,
    /// Most distinct pages a candidate may concentrate on.
    pub max_pages: usize,
    /// Share of its requests a candidate sends to those pages.
    pub concentration: f64,
    /// Average requests per page (repeats) a candidate needs.
    pub min_repeat: f64,
    /// Largest share of asset requests a candidate may have.
    pub max_asset_ratio: f64,
    /// Sources a cluster needs to be a swarm.
    pub min_members: usize,
    /// A swarm page's rate must be at least this many times its baseline...
    pub hot_factor: f64,
    /// ...or its baseline below this many requests per second.
    pub cold_baseline_rps: f64,
    /// Time constant of page baselines.
    pub baseline_window: Duration,
    /// Most sources tracked at once.
    pub max_sources: usize,
    /// Most pages tracked at once.
    pub max_pages_tracked: usize,
    /// TLS handshakes a source needs within the window to be a handshake candidate (on a
    /// site no access log covers; see [`handshakes`]).
    pub min_handshakes: f64,
    /// Distinct seconds within the window in which a handshake candidate opened connections:
    /// a browser opens its few connections in a burst when a visit starts, a bot keeps coming.
    pub min_handshake_seconds: f64,
    /// Page views (a page and the assets that follow it) a source needs within the window to
    /// count as reloading the same few pages (see [`views`]).
    pub min_views: f64,
    /// Distinct JA4 fingerprints or User-Agents from one address from which it counts as
    /// shared (NAT, proxy) and is never a member on handshake evidence alone.
    pub shared_clients: usize,
    /// Share of a handshake swarm's members whose fingerprint is one of its
    /// [`HANDSHAKE_JA4S`] most common ones: a swarm runs one program, a crowd many.
    pub handshake_ja4_share: f64,
    /// Sites an access log covers (`[[sources.log]]` `site`): their handshakes add evidence,
    /// the log's requests decide. Sites whose log lines name them are learnt as they come.
    pub logged_sites: Vec<Site>,
    /// Wide, low-rate swarms: evidence per page and over minutes (see [`wide`]).
    pub wide: WideConfig,
    /// Most /24 and /64 prefixes whose residents are remembered for the policy's prefix
    /// collapse, beyond the source table (see [`Detector::neighbours`]).
    pub max_prefixes: usize,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(30),
            min_requests: 8.0,
            max_pages: 3,
            concentration: 0.9,
            min_repeat: 3.0,
            max_asset_ratio: 0.1,
            min_members: 10,
            hot_factor: 5.0,
            cold_baseline_rps: 0.5,
            baseline_window: Duration::from_secs(600),
            max_sources: 200_000,
            max_pages_tracked: 50_000,
            min_handshakes: 8.0,
            min_handshake_seconds: 4.0,
            min_views: views::MIN_VIEWS,
            shared_clients: 3,
            handshake_ja4_share: 0.8,
            logged_sites: Vec::new(),
            wide: WideConfig::default(),
            max_prefixes: 65_536,
        }
    }
}

/// A site: the destination address and port.
pub type Site = (IpAddr, u16);

/// A page of a site.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Page {
    /// The site.
    pub site: Site,
    /// `Host`, if the requests carried one.
    pub host: Option<String>,
    /// Normalised path; empty for handshakes.
    pub path: String,
    /// The page stands for the TLS handshakes to its site and SNI (`host`): on an HTTPS site
    /// no access log covers, the path is never seen.
    pub handshakes: bool,
}

#[derive(Clone, Debug)]
struct PageState {
    page: Page,
    /// Bumped when the slot is recycled for another page: counts that name an older
    /// generation are stale.
    generation: u32,
    /// Decayed request count (short window) and when it was last decayed.
    count: f64,
    last_ns: u64,
    /// Long-term requests per second, updated on ticks.
    baseline_rps: f64,
    /// When the page first ran hot in the current spike.
    hot_since_ns: Option<u64>,
    /// Its last request came from an access log.
    from_log: bool,
    /// Its key in the page index, kept so that evicting it or growing the index hashes no
    /// strings.
    hash: u64,
}

#[derive(Clone, Debug, Default)]
struct SourceState {
    last_ns: u64,
    requests: f64,
    assets: f64,
    /// Decayed requests the server answered with an error (4xx, 5xx) and decayed bytes it
    /// sent; only access logs know either.
    errors: f64,
    bytes: f64,
    other_pages: f64,
    pages: PageCounts,
    /// Site most of its requests go to (the last one seen).
    site: Option<Site>,
    user_agent: u64,
    /// The distinct User-Agents it sent lately, with when each was last seen: many of them is
    /// an address shared by many people (see [`handshakes`]).
    agents: Recent,
    /// What its User-Agent claims to be.
    family: Option<fingerprints::Family>,
    /// Its page views (see [`views`]).
    view: views::ViewState,
    /// When [`neighbours`] last noted it.
    neighbour_ns: u64,
    /// The watch epoch ([`Detector::epoch`]) in which it was put on the watch list and on the
    /// view watch list: nothing leaves them between two ticks, so once per epoch is enough.
    watched: u32,
    view_watched: u32,
    /// It may have a wide-swarm record (see [`wide`]): false only when it certainly has none,
    /// so that an asset request of a source with none costs no lookup there.
    wide: bool,
}

/// A few distinct hashes (User-Agents, fingerprints) with when each was last seen, the oldest
/// replaced when full: enough to tell one client from many behind one address.
type Recent = SmallVec<[(u64, u64); RECENT]>;

/// Distinct values [`Recent`] keeps.
const RECENT: usize = 4;

/// Notes `hash` seen at `now` in `recent`.
fn note_recent(recent: &mut Recent, hash: u64, now: u64) {
    if let Some(e) = recent.iter_mut().find(|e| e.0 == hash) {
        e.1 = e.1.max(now);
    } else if recent.len() < RECENT {
        recent.push((hash, now));
    } else if let Some(oldest) = recent.iter_mut().min_by_key(|e| e.1) {
        *oldest = (hash, now);
    }
}

/// How many of `recent` were seen within `window_ns` of `now`.
fn count_recent(recent: &Recent, now: u64, window_ns: u64) -> usize {
    recent
        .iter()
        .filter(|e| now.saturating_sub(e.1) <= window_ns)
        .count()
}

/// The evidence a swarm was decided on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Basis {
    /// Plain-HTTP requests seen on the wire.
    Requests,
    /// Requests in a web server's access log (HTTPS, or any logged site).
    Log,
    /// TLS handshakes alone: an HTTPS site no access log covers.
    Handshakes,
}

impl Basis {
    /// `requests`, `log` or `handshakes`, as the API and the CLI name it.
    pub fn name(self) -> &'static str {
        match self {
            Basis::Requests => "requests",
            Basis::Log => "log",
            Basis::Handshakes => "handshakes",
        }
    }
}

/// A detected swarm.
#[derive(Clone, Debug, PartialEq)]
pub struct Swarm {
    /// Stable id.
    pub id: u64,
    /// What decided it.
    pub basis: Basis,
    /// The attacked site: the one most members attack (see `sites`).
    pub site: Site,
    /// Every site it attacks, `site` first: one site's addresses (IPv4 and IPv6, ports) when
    /// its pages carry the same `Host`.
    pub sites: Vec<Site>,
    /// The site each member attacks (its rules are scoped to that one).
    pub member_site: BTreeMap<IpAddr, Site>,
    /// The last TLS fingerprint (JA4) of each member whose ClientHello was seen.
    pub member_ja4: BTreeMap<IpAddr, Fingerprint>,
    /// The pages it hammers.
    pub pages: Vec<Page>,
    /// Member sources (every source ever clustered into the swarm).
    pub members: BTreeSet<IpAddr>,
    /// The members that behaved as the swarm at the last tick: the ones to (re)block now. A
    /// member whose rule expired shows up here again only if it resumes the attack.
    pub active: BTreeSet<IpAddr>,
    /// Earliest request of a member to a swarm page, event-time ns.
    pub onset_ns: u64,
    /// When the evidence threshold was first met, event-time ns.
    pub detected_ns: u64,
    /// The last tick at which members behaved as the swarm, event-time ns.
    pub last_active_ns: u64,
    /// Requests per second to the swarm's pages at the last tick.
    pub rate_rps: f64,
    /// Requests per second to its pages at the tick `evidence` comes from: the strongest so
    /// far, so that once its members are blocked the evidence still shows the attack, not
    /// its decaying tail.
    pub peak_rps: f64,
    /// 0..1.
    pub confidence: f64,
    /// Why: the features that decided it, for humans.
    pub evidence: Vec<String>,
}

impl Swarm {
    /// Its pages by name (`Host`, path), each once: a site on several addresses has one page
    /// per address, and the admin wants to read each name once.
    pub fn page_names(&self) -> Vec<(Option<&str>, &str)> {
        let mut names: Vec<(Option<&str>, &str)> = Vec::with_capacity(self.pages.len());
        for p in &self.pages {
            let name = (p.host.as_deref(), p.path.as_str());
            if !names.contains(&name) {
                names.push(name);
            }
        }
        names
    }
}

/// What an HTTP request is, worked out before any state is read (see
/// [`Detector::observe_batch`]).
#[derive(Clone, Copy, Debug, Default)]
struct Look {
    /// A sub-resource (see [`is_asset`]).
    asset: bool,
    /// The page's index hash ([`PageKey::hash`]); 0 for an asset or a handshake.
    page_hash: u64,
}

/// The detector.
pub struct Detector {
    cfg: DetectorConfig,
    sources: SourceTable<SourceState>,
    pages: Vec<PageState>,
    /// Page ids by a hash of the page: lookups borrow the event's strings, and the page itself
    /// lives once, in `pages`. The hash has a random seed per detector (foldhash) because
    /// paths are chosen by whoever sends the requests.
    page_index: HashTable<u32>,
    page_hasher: foldhash::fast::RandomState,
    /// Pages seen once and not yet given a slot (see [`Detector::page_seen_before`]).
    doorkeeper: pages::Doorkeeper,
    /// What recent User-Agents claim to be.
    families: fingerprints::FamilyCache,
    free_pages: Vec<u32>,
    swarms: Vec<Swarm>,
    next_swarm: u64,
    last_tick_ns: Option<u64>,
    events: u64,
    /// Last JA4 of each source and when it was seen (at most `max_sources`).
    fingerprints: FxHashMap<IpAddr, (Fingerprint, u64)>,
    /// Per source, its TLS handshakes to sites no log covers (at most `max_sources`).
    tls_sources: SourceTable<handshakes::TlsSource>,
    /// Sites access-log lines named lately, with the time of the last line.
    logged: FxHashMap<Site, u64>,
    /// The sources whose decayed request (handshake) count reached `min_requests`
    /// (`min_handshakes`), with few enough assets, at their last event: the only ones that can
    /// be candidates, since the counts only decay, and alike, between events. A tick looks at
    /// these, not at every source.
    watch: FxHashSet<IpAddr>,
    /// Ticks so far, plus one: the watch lists change only at a tick.
    epoch: u32,
    tls_watch: FxHashSet<IpAddr>,
    /// The same for page views (see [`views`]): sources with the requests and views a view
    /// candidate needs, whatever their assets.
    view_watch: FxHashSet<IpAddr>,
    /// Kept between evictions (see [`evict_oldest`]).
    scratch: Vec<(u64, IpAddr)>,
    page_scratch: Vec<(u64, u32)>,
    /// Per page and per source, the evidence of wide, low-rate swarms.
    wide: wide::Wide,
    /// A few residents of each /24 and /64, kept when the source table forgets them.
    neighbours: neighbours::Neighbours,
}

fn decay(value: &mut f64, last: u64, now: u64, tau_ns: f64) {
    if now > last {
        *value *= (-((now - last) as f64) / tau_ns).exp();
    }
}

fn is_asset(path: &str) -> bool {
    /// Extensions of sub-resources, lowercase (compared without regard to case, and without
    /// allocating: this runs for every request).
    const ASSETS: [&str; 20] = [
        "css", "js", "mjs", "png", "jpg", "jpeg", "gif", "svg", "webp", "avif", "ico", "woff",
        "woff2", "ttf", "otf", "map", "mp4", "webm", "mp3", "json",
    ];
    path.rsplit_once('.').is_some_and(|(_, ext)| {
        ext.len() <= 5 && ASSETS.iter().any(|a| a.eq_ignore_ascii_case(ext))
    }) || path.starts_with("/static/")
        || path.starts_with("/assets/")
}

/// The sites of a swarm, the one with most members first (ties: the lower address).
fn sites_by_members(member_site: &BTreeMap<IpAddr, Site>) -> Vec<Site> {
    let mut count: BTreeMap<Site, usize> = BTreeMap::new();
    for site in member_site.values() {
        *count.entry(*site).or_default() += 1;
    }
    let mut sites: Vec<(Site, usize)> = count.into_iter().collect();
    sites.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    sites.into_iter().map(|(s, _)| s).collect()
}

/// A page as a request names it, borrowing the request's strings.
#[derive(Clone, Copy)]
struct PageKey<'a> {
    site: Site,
    host: Option<&'a str>,
    path: &'a str,
    /// The pseudo-page of the TLS handshakes to `site` and SNI `host`.
    handshakes: bool,
}

impl PageKey<'_> {
    /// Its index hash, seeded per detector.
    fn hash(&self, hasher: &foldhash::fast::RandomState) -> u64 {
        use std::hash::{BuildHasher as _, Hash as _, Hasher as _};
        let mut h = hasher.build_hasher();
        self.site.hash(&mut h);
        self.host.hash(&mut h);
        self.path.hash(&mut h);
        self.handshakes.hash(&mut h);
        h.finish()
    }

    /// Whether it names `page`.
    fn names(&self, page: &Page) -> bool {
        page.site == self.site
            && page.host.as_deref() == self.host
            && page.path == self.path
            && page.handshakes == self.handshakes
    }
}

/// Forgets the least recently active tenth of `map` (by `last`) in one go, so a flood of new
/// sources costs amortized O(1) each. `scratch` is kept between calls: a fresh vector of every
/// source each time made the kernel zero megabytes of new pages per eviction.
fn evict_oldest<V>(
    map: &mut FxHashMap<IpAddr, V>,
    max: usize,
    last: impl Fn(&V) -> u64,
    scratch: &mut Vec<(u64, IpAddr)>,
) {
    scratch.clear();
    scratch.extend(map.iter().map(|(a, v)| (last(v), *a)));
    let n = (max / 10).max(1).min(scratch.len());
    if n == 0 {
        return;
    }
    scratch.select_nth_unstable(n - 1);
    for (_, a) in &scratch[..n] {
        map.remove(a);
    }
}

/// Sets `slot` to `value`, reusing its buffer: a page slot recycled under a flood of new paths
/// then allocates nothing.
fn reuse(slot: &mut String, value: &str) {
    slot.clear();
    slot.push_str(value);
}

fn fx(s: &str) -> u64 {
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut h = rustc_hash::FxBuildHasher.build_hasher();
    h.write(s.as_bytes());
    h.finish()
}

impl Detector {
    /// A detector with `cfg`.
    pub fn new(cfg: DetectorConfig) -> Self {
        let max_sources = cfg.max_sources;
        let wide_sources = cfg.wide.max_sources;
        Self {
            neighbours: neighbours::Neighbours::new(
                cfg.max_prefixes,
                cfg.baseline_window.as_secs() as u32,
            ),
            cfg,
            sources: SourceTable::new(max_sources),
            pages: Vec::new(),
            page_index: HashTable::new(),
            page_hasher: foldhash::fast::RandomState::default(),
            doorkeeper: pages::Doorkeeper::default(),
            families: fingerprints::FamilyCache::default(),
            free_pages: Vec::new(),
            swarms: Vec::new(),
            next_swarm: 1,
            last_tick_ns: None,
            events: 0,
            fingerprints: FxHashMap::default(),
            tls_sources: SourceTable::new(max_sources),
            logged: FxHashMap::default(),
            watch: FxHashSet::default(),
            epoch: 1,
            tls_watch: FxHashSet::default(),
            view_watch: FxHashSet::default(),
            scratch: Vec::new(),
            page_scratch: Vec::new(),
            wide: wide::Wide::new(wide_sources),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &DetectorConfig {
        &self.cfg
    }

    /// Events observed so far.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// Sources currently tracked.
    pub fn tracked_sources(&self) -> usize {
        self.sources.len()
    }

    /// Every tracked source, the site it last talked to and its decayed request count (for
    /// policy: who else lives in a prefix, and what a rule would cost them). A source seen
    /// both in requests and in handshakes to a site no log covers comes once for each, with
    /// its handshakes as its load there.
    pub fn sources(&self) -> impl Iterator<Item = (IpAddr, Option<Site>, f64)> + '_ {
        self.sources
            .iter()
            .map(|(a, s)| (*a, s.site, s.requests))
            .chain(self.handshake_sources())
    }

    /// A few sources of every /24 and /64 seen lately (at most `max_prefixes` prefixes of
    /// [`neighbours::NEIGHBOURS`] each), which the source table may have evicted under a flood:
    /// for policy, a prefix is all members only if these are too.
    pub fn neighbours(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.neighbours.addresses()
    }

    /// Swarms detected so far.
    pub fn swarms(&self) -> &[Swarm] {
        &self.swarms
    }

    /// Drops the swarms that have not been active for `idle` (event time `now_ns`). The swarm
    /// list stays bounded by the attacks of the recent past; if the same
    /// sources come back later, that is a new swarm (the policy still remembers them).
    pub fn retire(&mut self, idle: Duration, now_ns: u64) {
        let idle = idle.as_nanos() as u64;
        self.swarms
            .retain(|s| now_ns.saturating_sub(s.last_active_ns) <= idle);
    }

    /// Feeds `events`, in order, as [`Detector::observe`] would one by one, only faster: while
    /// it works on one, the CPU fetches what the next few will read (see [`prefetch`]), in two
    /// steps, since finding a source's state is itself a read: the index buckets of the events
    /// [`PREFETCH_AHEAD`] × 2 ahead, then the states the (now cached) buckets point to of the
    /// events [`PREFETCH_AHEAD`] ahead.
    pub fn observe_batch(&mut self, events: &[RequestEvent]) {
        // What the far step worked out of each event, kept for when it is observed.
        const RING: usize = (2 * PREFETCH_AHEAD + 1).next_power_of_two();
        let mut looks = [Look::default(); RING];
        for (i, ev) in events.iter().take(2 * PREFETCH_AHEAD).enumerate() {
            looks[i % RING] = self.look(ev);
        }
        for (i, ev) in events.iter().enumerate() {
            if let Some(far) = events.get(i + 2 * PREFETCH_AHEAD) {
                let look = self.look(far);
                self.prefetch_buckets(far, look);
                looks[(i + 2 * PREFETCH_AHEAD) % RING] = look;
            }
            if let Some(next) = events.get(i + PREFETCH_AHEAD) {
                self.prefetch(next);
            }
            self.observe_looked(ev, looks[i % RING]);
        }
    }

    /// What [`Detector::observe`] works out of `ev` before it reads any state.
    fn look(&self, ev: &RequestEvent) -> Look {
        match ev.kind {
            Kind::TlsHello => Look::default(),
            Kind::Http if is_asset(&ev.path) => Look {
                asset: true,
                page_hash: 0,
            },
            Kind::Http => Look {
                asset: false,
                page_hash: self.page_key(ev).hash(&self.page_hasher),
            },
        }
    }

    /// Asks the CPU for the index buckets (and the doorkeeper's slot) `ev` will look up.
    fn prefetch_buckets(&self, ev: &RequestEvent, look: Look) {
        match ev.kind {
            Kind::Http => {
                if !look.asset {
                    self.doorkeeper.prefetch(look.page_hash);
                }
                self.sources.prefetch_bucket(&ev.src);
                self.wide.prefetch_bucket(&ev.src);
            }
            Kind::TlsHello => self.tls_sources.prefetch_bucket(&ev.src),
        }
    }

    /// Asks the CPU for the per-source states `ev` will read (their buckets asked for before).
    fn prefetch(&self, ev: &RequestEvent) {
        match ev.kind {
            Kind::Http => {
                if !self.sources.prefetch(&ev.src) {
                    // A new source: noting its neighbours is due.
                    self.neighbours.prefetch(ev.src);
                }
                self.wide.prefetch(&ev.src);
            }
            Kind::TlsHello => {
                self.tls_sources.prefetch(&ev.src);
            }
        }
    }

    /// Feeds one request.
    pub fn observe(&mut self, ev: &RequestEvent) {
        self.observe_looked(ev, self.look(ev));
    }

    /// [`Detector::observe`], with `look` worked out of `ev` already.
    fn observe_looked(&mut self, ev: &RequestEvent, look: Look) {
        // The hello that carries a JA4 carries no page: remember it for the source's requests.
        let fp = ev.ja4.as_deref().and_then(Fingerprint::parse);
        if let Some(fp) = fp {
            self.note_ja4(ev.src, fp, ev.ts_ns);
        }
        match ev.kind {
            Kind::TlsHello => return self.observe_handshake(ev, fp),
            Kind::Http => {}
        }
        self.events += 1;
        let now = ev.ts_ns;
        if ev.origin == Origin::Log {
            self.logged.insert((ev.dst, ev.dst_port), now);
        }
        let tau = self.cfg.window.as_nanos() as f64;
        let asset = look.asset;
        // `None` for a page too: one seen for the first time has no slot yet.
        let page = if asset {
            None
        } else {
            self.page_seen_before(ev, look.page_hash, now)
        };
        if let Some(p) = page {
            let ps = &mut self.pages[p as usize];
            decay(&mut ps.count, ps.last_ns, now, tau);
            ps.count += 1.0;
            ps.last_ns = ps.last_ns.max(now);
            ps.from_log = ev.origin == Origin::Log;
        }
        let generation = page.map_or(0, |p| self.pages[p as usize].generation);
        let (s, new) = self.sources.touch(ev.src, now);
        if new {
            s.last_ns = now;
            // The wide record may have outlived an earlier state of the source.
            s.wide = self.wide.has(&ev.src);
        }
        // A page fetch makes one.
        s.wide |= page.is_some();
        let wide = s.wide;
        self.neighbours
            .note_due(ev.src, &mut s.neighbour_ns, new, now);
        s.pages.forget_recycled(&self.pages);
        let factor = decay_factor(s.last_ns, now, tau);
        s.requests = s.requests * factor + 1.0;
        s.assets *= factor;
        s.other_pages *= factor;
        s.errors *= factor;
        s.bytes *= factor;
        if ev.status.is_some_and(|c| c >= 400) {
            s.errors += 1.0;
        }
        s.bytes += ev.bytes.unwrap_or(0) as f64;
        s.pages.decay(factor);
        s.view
            .note(!asset, &ev.path, ev.referer.as_deref(), now, factor);
        s.last_ns = s.last_ns.max(now);
        s.site = Some((ev.dst, ev.dst_port));
        let ua = ev.user_agent.as_deref().map_or(0, fx);
        if ua != s.user_agent || s.agents.is_empty() {
            s.family = ev
                .user_agent
                .as_deref()
                .and_then(|u| self.families.of(u, ua));
        }
        s.user_agent = ua;
        note_recent(&mut s.agents, ua, now);
        match page {
            None if asset => s.assets += 1.0,
            // A page nobody else fetched lately: outside every page it could concentrate on.
            None => s.other_pages += 1.0,
            Some(p) => s.other_pages += s.pages.count(p, generation, now),
        }
        // Requests and assets decay alike, so their ratio holds until the next event: a
        // source over the asset bar now cannot be a candidate before it sends another request.
        if s.watched != self.epoch
            && s.requests >= self.cfg.min_requests
            && s.assets <= self.cfg.max_asset_ratio * s.requests
        {
            s.watched = self.epoch;
            self.watch.insert(ev.src);
        }
        if s.view_watched != self.epoch
            && views::may_view(s, 1.0, self.cfg.min_requests, self.cfg.min_views)
        {
            s.view_watched = self.epoch;
            self.view_watch.insert(ev.src);
        }
        if wide {
            self.observe_wide(ev, page, asset);
        }
    }

    /// The id of the page `path` on `site` (`host`), added at `now` if this is at least its
    /// second request lately; `None` for its first. A flood of random paths, each fetched
    /// once, then costs one store in the [`pages::Doorkeeper`] per request instead of a page
    /// slot and the evictions that make room for it; a page requested again within the
    /// doorkeeper's memory (at least a quarter second at a million new paths a second, where
    /// the page table would have evicted it within 50 ms) gets its slot, counted from then. `hash`: its index hash.
    fn page_seen_before(&mut self, ev: &RequestEvent, hash: u64, now: u64) -> Option<u32> {
        let key = self.page_key(ev);
        if let Some(id) = self.find_page(hash, &key) {
            return Some(id);
        }
        let pages::Door::Second { src, at_ns } = self.doorkeeper.sight(hash, ev.src, now) else {
            return None;
        };
        let id = self.add_page(hash, &key, now);
        // Its first request, which the doorkeeper took, counts for the page and for the source
        // that made it (as a page now, no longer as one beyond its pages).
        let p = &mut self.pages[id as usize];
        p.count = 1.0;
        let generation = p.generation;
        if let Some(s) = self.sources.get_mut(&src) {
            s.other_pages = (s.other_pages - 1.0).max(0.0);
            s.other_pages += s.pages.count(id, generation, at_ns);
        }
        Some(id)
    }

    /// The page `ev` requests (not a handshake).
    fn page_key<'a>(&self, ev: &'a RequestEvent) -> PageKey<'a> {
        PageKey {
            site: (ev.dst, ev.dst_port),
            host: ev.host.as_deref(),
            path: &ev.path,
            handshakes: false,
        }
    }

    /// The id of the pseudo-page of the TLS handshakes to `site` with SNI `host`, added at
    /// `now` if new.
    fn handshake_page(&mut self, site: Site, host: Option<&str>, now: u64) -> u32 {
        let key = PageKey {
            site,
            host,
            path: "",
            handshakes: true,
        };
        let hash = key.hash(&self.page_hasher);
        match self.find_page(hash, &key) {
            Some(id) => id,
            None => self.add_page(hash, &key, now),
        }
    }

    /// The page `key` (index hash `hash`), if it has a slot.
    fn find_page(&self, hash: u64, key: &PageKey) -> Option<u32> {
        let pages = &self.pages;
        self.page_index
            .find(hash, |id| key.names(&pages[*id as usize].page))
            .copied()
    }

    /// A slot for the page `key`, not in the index (its index hash `hash`), requested at
    /// `now`.
    fn add_page(&mut self, hash: u64, key: &PageKey, now: u64) -> u32 {
        let PageKey {
            site,
            host,
            path,
            handshakes,
        } = *key;
        if self.pages.len() >= self.cfg.max_pages_tracked && self.free_pages.is_empty() {
            self.evict_pages();
        }
        let id = match self.free_pages.pop() {
            Some(i) => {
                let slot = &mut self.pages[i as usize];
                slot.page.site = site;
                match (&mut slot.page.host, host) {
                    (Some(old), Some(new)) => reuse(old, new),
                    (old, new) => *old = new.map(str::to_owned),
                }
                reuse(&mut slot.page.path, path);
                slot.page.handshakes = handshakes;
                slot.generation = slot.generation.wrapping_add(1);
                slot.count = 0.0;
                slot.last_ns = now;
                slot.baseline_rps = 0.0;
                slot.hot_since_ns = None;
                slot.from_log = false;
                i
            }
            None => {
                self.pages.push(PageState {
                    page: Page {
                        site,
                        host: host.map(str::to_owned),
                        path: path.to_owned(),
                        handshakes,
                    },
                    generation: 0,
                    count: 0.0,
                    last_ns: now,
                    baseline_rps: 0.0,
                    hot_since_ns: None,
                    from_log: false,
                    hash: 0,
                });
                (self.pages.len() - 1) as u32
            }
        };
        self.pages[id as usize].hash = hash;
        let pages = &self.pages;
        self.page_index
            .insert_unique(hash, id, |i| pages[*i as usize].hash);
        id
    }

    /// Frees the least recently requested tenth of the page slots (never a swarm's page) in one
    /// go, so a flood of random paths costs amortized O(log n) per new page.
    fn evict_pages(&mut self) {
        let named: BTreeSet<&Page> = self.swarms.iter().flat_map(|s| &s.pages).collect();
        let by_age = &mut self.page_scratch;
        by_age.clear();
        by_age.extend(
            self.pages
                .iter()
                .enumerate()
                .filter(|(_, p)| named.is_empty() || !named.contains(&p.page))
                .map(|(i, p)| (p.last_ns, i as u32)),
        );
        if by_age.is_empty() {
            return;
        }
        let n = (self.cfg.max_pages_tracked / 10).clamp(1, by_age.len());
        by_age.select_nth_unstable(n - 1);
        for &(_, i) in &by_age[..n] {
            let hash = self.pages[i as usize].hash;
            if let Ok(entry) = self.page_index.find_entry(hash, |x| *x == i) {
                entry.remove();
            }
            self.free_pages.push(i);
        }
    }

    /// Re-evaluates at event time `now_ns`; returns the swarms that are new or gained members.
    pub fn tick(&mut self, now_ns: u64) -> Vec<Swarm> {
        let dt = self
            .last_tick_ns
            .map_or(0.0, |l| now_ns.saturating_sub(l) as f64 / 1e9);
        self.last_tick_ns = Some(now_ns);
        self.forget_logged(now_ns);
        self.prune_watch(now_ns);
        self.epoch = self.epoch.wrapping_add(1).max(1);
        let hot = self.update_pages(now_ns, dt);
        let mut cands = self.candidates(now_ns, &hot);
        cands.extend(self.handshake_candidates(now_ns, &hot));
        cands.extend(self.view_candidates(now_ns, &hot, &cands));
        let clusters = self.cluster(&cands);
        let mut changed = Vec::new();
        for s in &mut self.swarms {
            s.active.clear();
        }
        for idx in clusters {
            if let Some(found) = self.evidence(now_ns, &cands, &idx)
                && let Some(s) = self.merge(found, now_ns)
            {
                changed.push(s);
            }
        }
        // Wide, low-rate swarms: clustered apart, so their evidence says what decided them.
        let wide = self.wide_candidates(now_ns);
        for idx in self.cluster(&wide) {
            if let Some(found) = self.wide_evidence(now_ns, &wide, &idx)
                && let Some(s) = self.merge(found, now_ns)
            {
                changed.retain(|c| c.id != s.id);
                changed.push(s);
            }
        }
        for s in &changed {
            self.neighbours.mark_members(&s.members);
        }
        changed
    }
}

/// A detector with `cfg` fed `events` in time order, ticking every second of event time as
/// the daemon ticks, and once more after the last: what the detector's tests replay.
#[cfg(test)]
fn replay(cfg: DetectorConfig, events: &mut [RequestEvent]) -> Detector {
    events.sort_by_key(|e| e.ts_ns);
    let mut d = Detector::new(cfg);
    let mut next = 0u64;
    for e in events.iter() {
        while e.ts_ns >= next {
            d.tick(next);
            next += 1_000_000_000;
        }
        d.observe(e);
    }
    d.tick(next);
    d
}

/// What the detector's tests feed it: a request at `ts_s` seconds from `src` to
/// shop.example on 203.0.113.10:80.
#[cfg(test)]
fn request(ts_s: f64, src: IpAddr, path: &str, ua: &str, referer: Option<&str>) -> RequestEvent {
    RequestEvent {
        ts_ns: (ts_s * 1e9) as u64,
        src,
        dst: "203.0.113.10".parse().unwrap(),
        dst_port: 80,
        kind: Kind::Http,
        host: Some("shop.example".into()),
        path: path.into(),
        user_agent: Some(ua.into()),
        referer: referer.map(str::to_owned),
        ..RequestEvent::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(ts_s: f64, src: &str, path: &str, ua: &str) -> RequestEvent {
        request(ts_s, src.parse().unwrap(), path, ua, None)
    }

    fn run(events: &mut [RequestEvent]) -> Detector {
        replay(DetectorConfig::default(), events)
    }

    #[test]
    fn bots_hammering_two_pages_are_a_swarm() {
        let mut evs = Vec::new();
        for b in 0..30 {
            for k in 0..60 {
                let page = if k % 2 == 0 {
                    "/gallery/7"
                } else {
                    "/gallery/8"
                };
                evs.push(ev(
                    10.0 + k as f64 * 0.5 + b as f64 * 0.01,
                    &format!("192.0.2.{b}"),
                    page,
                    "bot/1.0",
                ));
            }
        }
        // A browsing visitor with assets, on the same pages even (among others: reloading one
        // gallery every few seconds is what a bot does, see `views`).
        for k in 0..10 {
            let page = match k % 4 {
                0 => "/gallery/7".to_owned(),
                2 => "/gallery/8".to_owned(),
                _ => format!("/product/{k}"),
            };
            evs.push(ev(10.0 + k as f64 * 3.0, "198.51.100.7", &page, "Firefox"));
            for a in 0..6 {
                evs.push(ev(
                    10.1 + k as f64 * 3.0,
                    "198.51.100.7",
                    &format!("/img/{k}-{a}.jpg"),
                    "Firefox",
                ));
            }
        }
        let d = run(&mut evs);
        assert_eq!(d.swarms().len(), 1);
        let s = &d.swarms()[0];
        assert_eq!(s.members.len(), 30);
        assert!(!s.members.contains(&"198.51.100.7".parse().unwrap()));
        assert_eq!(s.pages.len(), 2);
        assert!(s.confidence > 0.8, "{}", s.confidence);
    }

    #[test]
    fn batches_detect_exactly_what_one_event_at_a_time_does() {
        // Bots, a visitor with assets, TLS hellos, and a flood of one-off sources that makes
        // the small tables evict while batches are in flight: the prefetch of a batch must not
        // change a single result.
        let mut evs = Vec::new();
        for k in 0..400u32 {
            let t = 10.0 + f64::from(k) * 0.05;
            let bot = format!("192.0.2.{}", k % 30);
            let page = ["/gallery/7", "/gallery/8"][(k / 30) as usize % 2];
            evs.push(ev(t, &bot, page, "bot/1.0"));
            evs.push(ev(
                t,
                "198.51.100.7",
                &format!("/img/{}.jpg", k % 9),
                "Firefox",
            ));
            evs.push(ev(t, &format!("10.{}.{}.1", k / 200, k % 200), "/r", "x"));
            let mut hello = ev(t, &format!("192.0.2.{}", 100 + k % 20), "", "");
            hello.kind = Kind::TlsHello;
            hello.dst_port = 443;
            evs.push(hello);
        }
        evs.sort_by_key(|e| e.ts_ns);
        let cfg = DetectorConfig {
            max_sources: 200,
            ..DetectorConfig::default()
        };
        let (mut one, mut batched) = (Detector::new(cfg.clone()), Detector::new(cfg));
        for (second, chunk) in evs
            .chunk_by(|a, b| a.ts_ns / 1_000_000_000 == b.ts_ns / 1_000_000_000)
            .enumerate()
        {
            let at = chunk[0].ts_ns;
            assert_eq!(one.tick(at), batched.tick(at), "tick {second}");
            chunk.iter().for_each(|e| one.observe(e));
            batched.observe_batch(chunk);
        }
        assert!(!one.swarms().is_empty(), "the bots are a swarm");
        assert_eq!(one.swarms(), batched.swarms());
        assert_eq!(one.tracked_sources(), batched.tracked_sources());
        assert_eq!(one.events(), batched.events());
    }

    #[test]
    fn flash_crowd_nat_and_crawler_are_not_swarms() {
        let mut evs = Vec::new();
        // Flash crowd: 500 visitors load one page once, with assets.
        for v in 0..500 {
            let src = format!("198.51.{}.{}", 100 + v / 250, v % 250);
            evs.push(ev(10.0 + v as f64 * 0.02, &src, "/product/1", "Chrome"));
            for a in 0..8 {
                evs.push(ev(
                    10.1 + v as f64 * 0.02,
                    &src,
                    &format!("/img/p1-{a}.jpg"),
                    "Chrome",
                ));
            }
        }
        // NAT: one address, many pages with assets.
        for k in 0..600 {
            evs.push(ev(
                10.0 + k as f64 * 0.1,
                "198.51.100.250",
                &format!("/product/{}", k % 40),
                "Safari",
            ));
            evs.push(ev(
                10.05 + k as f64 * 0.1,
                "198.51.100.250",
                "/static/css/site.css",
                "Safari",
            ));
        }
        // Crawler: every page once.
        for k in 0..200 {
            evs.push(ev(
                10.0 + k as f64 * 0.5,
                "198.51.100.200",
                &format!("/page/{k}"),
                "ExampleBot",
            ));
        }
        let d = run(&mut evs);
        assert!(d.swarms().is_empty(), "{:?}", d.swarms());
    }

    #[test]
    fn memory_is_bounded_under_a_flood_of_random_sources_and_paths() {
        let cfg = DetectorConfig {
            max_sources: 1000,
            max_pages_tracked: 500,
            ..DetectorConfig::default()
        };
        let mut d = Detector::new(cfg);
        let mut x: u64 = 1;
        for i in 0..50_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let src = std::net::Ipv4Addr::from(x as u32).to_string();
            let e = ev(i as f64 * 0.001, &src, &format!("/r/{}", x >> 40), "x");
            d.observe(&e);
            if i % 1000 == 0 {
                d.tick(e.ts_ns);
            }
        }
        assert!(d.tracked_sources() <= 1000);
        assert!(d.pages.len() <= 500);
    }

    #[test]
    fn sub_resources_are_known_by_extension_in_any_case_and_by_folder() {
        for p in [
            "/img/a.jpg",
            "/A.PNG",
            "/s/app.Js",
            "/static/x",
            "/assets/logo",
            "/f.woff2",
        ] {
            assert!(is_asset(p), "{p}");
        }
        for p in [
            "/gallery/7",
            "/index.html",
            "/a.jpg/page",
            "/x.jpegxl",
            "/",
            "",
        ] {
            assert!(!is_asset(p), "{p}");
        }
    }

    /// The memory bounds stated in the README and the modules' documentation are computed from
    /// these sizes: a state that grows must update them.
    #[test]
    fn per_source_states_are_no_larger_than_the_stated_bounds_assume() {
        use std::mem::size_of;
        assert!(
            size_of::<SourceState>() <= 360,
            "{}",
            size_of::<SourceState>()
        );
        assert!(size_of::<handshakes::TlsSource>() <= 312);
        assert!(size_of::<wide::WideSource>() <= 112);
        assert!(size_of::<neighbours::Prefix>() <= 72);
    }
}
