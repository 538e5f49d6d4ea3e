//! Wide, low-rate swarms: thousands of sources, each fetching the same page only once every
//! half minute or slower (random query strings, which normalisation drops), so no source ever
//! reaches the per-source bar of `min_requests` in the window, while the page itself is
//! hammered. The evidence is per page and over minutes rather than seconds:
//!
//! - **per page**, the distinct sources that fetched it in each minute (each source once a
//!   minute), against that page's own baseline of distinct sources per minute (EWMA over the
//!   baseline window, not updated while the page runs hot). A slow swarm's sources are new
//!   only in its first minute, so it is the distinct count per minute that stays high for as
//!   long as the swarm lasts; a popular page has a high baseline;
//! - **per source**, over [`WideConfig::window`] (5 min): the times of its last few page
//!   fetches without a Referer, and when it last fetched a sub-resource, sent a Referer or
//!   fetched a third page. A source is *narrow* when it fetched one or two pages at least
//!   [`WideConfig::min_hits`] times in that window, those fetches spanning at least the short
//!   window (it stayed low-rate: a fast bot's first seconds are not wide evidence), and did
//!   nothing else: no asset, no Referer, no other page, and not several User-Agents (a shared
//!   address);
//! - a narrow source whose page runs hot on distinct sources, and that stays under the
//!   per-source bar (over it, it is a request candidate), is a candidate; candidates are
//!   clustered by page as usual, and a cluster is a swarm when it has
//!   [`WideConfig::min_members`] sources that share fingerprints: their most common
//!   User-Agents (or, when hellos were seen, JA4s) cover [`WideConfig::fingerprint_share`] of
//!   them. People who reload a page (a live blog) each run their own browser build.
//!
//! Never members: a flash crowd (each visitor once, with assets, then following links), a
//! popular page's visitors (assets and Referers), a NAT (many User-Agents, many pages) and a
//! crawler (many pages, each once).
//!
//! Memory: at most [`WideConfig::max_sources`] sources (the least recently active tenth is
//! evicted in one go when full), each a [`WideSource`] (112 bytes) in a [`SourceTable`] (77
//! bytes more per source): 18.9 MB with the default 100,000. Plus 32 bytes per page slot of the
//! detector (`max_pages_tracked`, 50,000 by default: 1.6 MB).

use std::{
    collections::{BTreeSet, HashMap},
    net::IpAddr,
    time::Duration,
};

use rustc_hash::FxHashSet;

use super::{
    Basis, Detector, HANDSHAKE_JA4S, Site,
    candidates::Candidate,
    evidence::{Found, Parts},
    table::SourceTable,
};
use crate::l7::RequestEvent;

/// Page fetches a source remembers (the most [`WideConfig::min_hits`] can ask for).
pub const WIDE_HITS: usize = 4;

/// Pages a narrow source may fetch.
const NARROW_PAGES: usize = 2;

/// Distinct User-Agents a source keeps (a third one marks it as shared, by default).
const AGENTS: usize = 3;

/// Tuning of wide, low-rate swarm detection (see [`wide`](self)).
#[derive(Clone, Debug, PartialEq)]
pub struct WideConfig {
    /// How far back a source's page fetches count.
    pub window: Duration,
    /// Page fetches without a Referer a source needs within `window` (at most [`WIDE_HITS`]).
    pub min_hits: usize,
    /// Distinct sources per minute a page needs to run hot on distinct sources (and
    /// `hot_factor` times its baseline).
    pub min_sources_per_minute: f64,
    /// Sources a cluster of narrow sources needs to be a swarm.
    pub min_members: usize,
    /// Share of the members that the [`HANDSHAKE_JA4S`] most common User-Agents (or JA4s)
    /// must cover: one program, not a crowd of browsers.
    pub fingerprint_share: f64,
    /// Most sources tracked at once.
    pub max_sources: usize,
}

impl Default for WideConfig {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(300),
            min_hits: 3,
            min_sources_per_minute: 30.0,
            min_members: 20,
            fingerprint_share: 0.6,
            max_sources: 100_000,
        }
    }
}

/// Event time in whole seconds, plus one (0 means never); saturates far beyond any capture.
fn secs(ns: u64) -> u32 {
    u32::try_from(ns / 1_000_000_000)
        .unwrap_or(u32::MAX - 1)
        .saturating_add(1)
}

/// Whether second `t` (0: never) lies within `window` seconds of `now`.
fn within(t: u32, now: u32, window: u32) -> bool {
    t != 0 && now.saturating_sub(t) <= window
}

/// One page a source fetched.
#[derive(Clone, Copy, Debug, Default)]
struct PageSlot {
    page: u32,
    generation: u32,
    /// The minute (event time) it was last counted in the page's distinct sources.
    minute: u32,
    /// Its last fetch, [`secs`].
    last: u32,
}

/// One source's evidence over minutes.
#[derive(Clone, Debug, Default)]
pub(super) struct WideSource {
    /// Its last event, [`secs`].
    last: u32,
    /// Its last [`WIDE_HITS`] page fetches without a Referer, [`secs`], as a ring.
    hits: [u32; WIDE_HITS],
    next_hit: u8,
    /// Its last sub-resource fetch or request with a Referer: a browser's.
    broad: u32,
    /// Its last fetch of a page beyond its first [`NARROW_PAGES`].
    other: u32,
    pages: [PageSlot; NARROW_PAGES],
    /// Distinct User-Agent hashes (truncated) and when each was last seen.
    agents: [(u32, u32); AGENTS],
    site: Option<Site>,
    /// The watch epoch ([`Detector::epoch`]) it was put on the wide watch list in: nothing
    /// leaves the list between two ticks, so once per epoch is enough.
    watched: u32,
}

/// One page's distinct sources per minute.
#[derive(Clone, Debug, Default)]
pub(super) struct WidePage {
    generation: u32,
    /// The current minute, and the distinct sources counted in it so far.
    minute: u32,
    distinct: u32,
    /// Distinct sources in the minute before.
    previous: u32,
    /// Long-term distinct sources per minute.
    baseline: f64,
    /// It ran hot on distinct sources at the last tick.
    hot: bool,
}

impl WidePage {
    /// Moves to `minute`; the minutes that passed feed the baseline (unless the page ran hot).
    fn roll(&mut self, minute: u32, hot_factor: f64, floor: f64, baseline_minutes: f64) {
        if minute <= self.minute {
            return;
        }
        let gap = minute - self.minute;
        let finished = f64::from(self.distinct);
        self.previous = if gap == 1 { self.distinct } else { 0 };
        if !self.hot {
            // The finished minute, then `gap - 1` empty ones.
            let a = 1.0 - (-1.0 / baseline_minutes).exp();
            self.baseline +=
                a * (finished.min(self.baseline.max(floor) * hot_factor) - self.baseline);
            self.baseline *= (-f64::from(gap - 1) / baseline_minutes).exp();
        }
        self.minute = minute;
        self.distinct = 0;
    }

    /// Distinct sources per minute now: the last whole minute or the current one, the larger.
    fn rate(&self) -> f64 {
        f64::from(self.previous.max(self.distinct))
    }
}

/// Sources and pages of wide-swarm detection.
pub(super) struct Wide {
    sources: SourceTable<WideSource>,
    pages: Vec<WidePage>,
    /// The sources with `min_hits` fetches within the window at their last fetch: only they
    /// can be candidates (fetches only age between events), so a tick reads these, not every
    /// source. Pruned at each tick; never more than `sources`.
    watch: FxHashSet<IpAddr>,
}

impl Wide {
    /// Asks the CPU for the index bucket of `addr` (the first of [`SourceTable`]'s two steps).
    pub(super) fn prefetch_bucket(&self, addr: &IpAddr) {
        self.sources.prefetch_bucket(addr);
    }

    /// Asks the CPU to bring the record of `addr`, if any, into its caches.
    pub(super) fn prefetch(&self, addr: &IpAddr) {
        self.sources.prefetch(addr);
    }

    /// Whether `addr` has a record.
    pub(super) fn has(&self, addr: &IpAddr) -> bool {
        self.sources.contains_key(addr)
    }

    /// Room for `max_sources` sources.
    pub(super) fn new(max_sources: usize) -> Self {
        Self {
            sources: SourceTable::new(max_sources),
            pages: Vec::new(),
            watch: FxHashSet::default(),
        }
    }
}

/// How many of `hits` fall within `window` seconds of `now`.
fn hits_within(hits: &[u32; WIDE_HITS], now: u32, window: u32) -> usize {
    hits.iter().filter(|t| within(**t, now, window)).count()
}

impl Detector {
    /// Feeds one HTTP request to the wide-swarm evidence: `page` is its page id (`None` for a
    /// sub-resource).
    pub(super) fn observe_wide(&mut self, ev: &RequestEvent, page: Option<u32>, asset: bool) {
        let now = secs(ev.ts_ns);
        let cfg = &self.cfg.wide;
        let referred = ev.referer.as_deref().is_some_and(|r| !r.is_empty());
        // Only a page fetch starts a record: a flood of asset requests costs nothing here.
        if page.is_none() && !self.wide.sources.contains_key(&ev.src) {
            return;
        }
        let ua = ev.user_agent.as_deref().map_or(0, super::fx) as u32;
        let (s, _) = self.wide.sources.touch(ev.src, ev.ts_ns);
        s.last = s.last.max(now);
        s.site = Some((ev.dst, ev.dst_port));
        note_agent(&mut s.agents, ua, now);
        let Some(page) = page else {
            if asset {
                s.broad = now;
            } else {
                // A page nobody else fetched lately: a page beyond the narrow ones.
                s.other = now;
            }
            return;
        };
        let window = cfg.window.as_secs() as u32;
        if referred {
            s.broad = now;
        } else {
            s.hits[usize::from(s.next_hit) % WIDE_HITS] = now;
            s.next_hit = s.next_hit.wrapping_add(1) % WIDE_HITS as u8;
            // Broad lately (an asset, a Referer, a third page) is no candidate: watched again
            // at its next bare fetch once that has aged out of the window.
            if s.watched != self.epoch
                && hits_within(&s.hits, now, window) >= cfg.min_hits.clamp(1, WIDE_HITS)
                && !within(s.broad, now, window)
                && !within(s.other, now, window)
            {
                s.watched = self.epoch;
                self.wide.watch.insert(ev.src);
            }
        }
        let generation = self.pages[page as usize].generation;
        let minute = now / 60;
        let slot = match s
            .pages
            .iter()
            .position(|p| p.last != 0 && p.page == page && p.generation == generation)
        {
            Some(i) => Some(i),
            // A free slot, or one whose page was not fetched within the window.
            None => s.pages.iter().position(|p| !within(p.last, now, window)),
        };
        let Some(i) = slot else {
            s.other = now;
            return;
        };
        let slot = &mut s.pages[i];
        if slot.page != page || slot.generation != generation || slot.last == 0 {
            *slot = PageSlot {
                page,
                generation,
                minute: 0,
                last: 0,
            };
        }
        slot.last = now;
        let counted = slot.minute == minute + 1;
        slot.minute = minute + 1;
        if counted {
            return;
        }
        let (hot_factor, floor) = (self.cfg.hot_factor, self.cfg.wide.min_sources_per_minute);
        let baseline_minutes = (self.cfg.baseline_window.as_secs_f64() / 60.0).max(1.0);
        let pages = &mut self.wide.pages;
        if pages.len() <= page as usize {
            pages.resize(page as usize + 1, WidePage::default());
        }
        let wp = &mut pages[page as usize];
        if wp.generation != generation {
            *wp = WidePage {
                generation,
                minute,
                ..WidePage::default()
            };
        }
        wp.roll(minute, hot_factor, floor / hot_factor, baseline_minutes);
        wp.distinct += 1;
    }

    /// Sources tracked for wide-swarm evidence.
    pub fn tracked_wide_sources(&self) -> usize {
        self.wide.sources.len()
    }

    /// Marks which pages run hot on distinct sources at `now_ns`, rolling their minutes.
    fn update_wide_pages(&mut self, now_ns: u64) {
        let minute = secs(now_ns) / 60;
        let (hot_factor, floor) = (self.cfg.hot_factor, self.cfg.wide.min_sources_per_minute);
        let baseline_minutes = (self.cfg.baseline_window.as_secs_f64() / 60.0).max(1.0);
        for (i, wp) in self.wide.pages.iter_mut().enumerate() {
            if self
                .pages
                .get(i)
                .is_none_or(|p| p.generation != wp.generation)
            {
                wp.hot = false;
                continue;
            }
            wp.roll(minute, hot_factor, floor / hot_factor, baseline_minutes);
            let rate = wp.rate();
            wp.hot = rate >= floor && rate >= hot_factor * wp.baseline;
        }
    }

    /// The narrow sources at `now_ns` whose pages run hot on distinct sources (see the module
    /// documentation).
    pub(super) fn wide_candidates(&mut self, now_ns: u64) -> Vec<Candidate> {
        self.update_wide_pages(now_ns);
        let cfg = &self.cfg.wide;
        let now = secs(now_ns);
        let window = cfg.window.as_secs() as u32;
        let agents_window = self.cfg.window.as_secs() as u32;
        let min_hits = cfg.min_hits.clamp(1, WIDE_HITS);
        let tau = self.cfg.window.as_nanos() as f64;
        let short = self.cfg.window.as_secs() as u32;
        let mut cands = Vec::new();
        let Wide { sources, watch, .. } = &mut self.wide;
        watch.retain(|a| {
            sources
                .get(a)
                .is_some_and(|s| hits_within(&s.hits, now, window) >= min_hits)
        });
        let (sources, watch) = (&self.wide.sources, &self.wide.watch);
        for (addr, s) in watch.iter().filter_map(|a| Some((a, sources.get(a)?))) {
            // Newest first; fetches outside the window count as never (0, sorted last).
            let mut recent = s.hits.map(|t| if within(t, now, window) { t } else { 0 });
            let hits = recent.iter().filter(|t| **t != 0).count();
            if hits < min_hits || within(s.broad, now, window) || within(s.other, now, window) {
                continue;
            }
            // Low rate over minutes: its last `min_hits` fetches span at least the short
            // window. A fast bot's first seconds (or the tail of its burst) are dense, and
            // the request candidates judge those.
            recent.sort_unstable_by(|a, b| b.cmp(a));
            if recent[0] - recent[min_hits - 1] < short {
                continue;
            }
            let agents = s
                .agents
                .iter()
                .filter(|a| within(a.1, now, agents_window.max(window)))
                .count();
            if agents >= self.cfg.shared_clients {
                continue;
            }
            // Over the per-source bar: the request candidates' business, with their evidence.
            let fast = self.sources.get(addr).is_some_and(|r| {
                r.requests * super::decay_factor(r.last_ns, now_ns, tau) >= self.cfg.min_requests
            });
            if fast {
                continue;
            }
            let pages: Vec<u32> = s
                .pages
                .iter()
                .filter(|p| {
                    within(p.last, now, window)
                        && self
                            .wide
                            .pages
                            .get(p.page as usize)
                            .is_some_and(|wp| wp.hot && wp.generation == p.generation)
                })
                .map(|p| p.page)
                .collect();
            let Some(site) = s.site else { continue };
            if pages.is_empty() {
                continue;
            }
            cands.push(Candidate {
                addr: *addr,
                site,
                pages,
                requests: hits as f64,
                ua: s
                    .agents
                    .iter()
                    .max_by_key(|a| a.1)
                    .map_or(0, |a| u64::from(a.0)),
                handshakes: false,
                views: false,
            });
        }
        cands
    }

    /// The swarm the cluster `idx` of wide candidates `cands` makes at `now_ns`, if it has
    /// `min_members` sources that share fingerprints.
    pub(super) fn wide_evidence(
        &self,
        now_ns: u64,
        cands: &[Candidate],
        idx: &[usize],
    ) -> Option<Found> {
        let cfg = &self.cfg.wide;
        let members: BTreeSet<IpAddr> = idx.iter().map(|i| cands[*i].addr).collect();
        if members.len() < cfg.min_members {
            return None;
        }
        let mut uas: HashMap<u64, usize> = HashMap::new();
        for i in idx {
            *uas.entry(cands[*i].ua).or_default() += 1;
        }
        let mut counts: Vec<usize> = uas.into_values().collect();
        counts.sort_unstable_by(|a, b| b.cmp(a));
        let ua_share = counts.iter().take(HANDSHAKE_JA4S).sum::<usize>() as f64 / idx.len() as f64;
        let ja4_share = self.ja4_concentration(&members);
        let shared = ua_share.max(ja4_share);
        if shared < cfg.fingerprint_share {
            // Each its own browser build: people reloading a page, not one program.
            return None;
        }
        let Parts {
            member_site,
            sites,
            names,
            page_ids,
            pages,
            rate,
        } = self.parts(cands, idx);
        let (distinct, baseline) = page_ids
            .iter()
            .filter_map(|p| self.wide.pages.get(*p as usize))
            .fold((0.0, 0.0), |(d, b), wp| (d + wp.rate(), b + wp.baseline));
        let spike = if baseline > 0.0 {
            distinct / baseline
        } else {
            f64::INFINITY
        };
        let window = cfg.window.as_secs() as u32;
        let now = secs(now_ns);
        let onset = members
            .iter()
            .filter_map(|m| self.wide.sources.get(m))
            .flat_map(|s| s.hits.iter().copied().filter(|t| within(*t, now, window)))
            .min()
            .map_or(now_ns, |t| u64::from(t - 1) * 1_000_000_000);
        let mean_hits = idx.iter().map(|i| cands[*i].requests).sum::<f64>() / idx.len() as f64;
        let short: Vec<f64> = members
            .iter()
            .filter_map(|m| self.sources.get(m))
            .map(|s| {
                s.requests
                    * super::decay_factor(s.last_ns, now_ns, self.cfg.window.as_nanos() as f64)
            })
            .collect();
        let short_mean = short.iter().sum::<f64>() / short.len().max(1) as f64;
        let basis = if page_ids.iter().any(|p| self.pages[*p as usize].from_log) {
            Basis::Log
        } else {
            Basis::Requests
        };
        let page_names: Vec<String> = pages
            .iter()
            .map(|p| format!("{}{}", p.host.as_deref().unwrap_or(""), p.path))
            .collect();
        let confidence = (0.55
            + 0.15 * (members.len() as f64 / (5.0 * cfg.min_members as f64)).min(1.0)
            + 0.15 * (spike / (2.0 * self.cfg.hot_factor)).min(1.0)
            + 0.15 * shared)
            .clamp(0.0, 1.0);
        let mut evidence = vec![
            format!(
                "{} sources each fetched {} >= {} times in the last {}s (mean {mean_hits:.1}) and nothing else of {}: no sub-resources, no Referer, at most {NARROW_PAGES} pages, one User-Agent",
                members.len(),
                page_names.join(" and "),
                cfg.min_hits,
                cfg.window.as_secs(),
                names.join(" and "),
            ),
            format!(
                "a wide, low-rate swarm: each member sent {short_mean:.1} requests in the last {}s on average, under the per-source bar of {:.0}",
                self.cfg.window.as_secs(),
                self.cfg.min_requests
            ),
            if baseline > 0.0 {
                format!(
                    "the pages get {distinct:.0} distinct sources per minute, {spike:.0}x their baseline of {baseline:.1}/min, and {rate:.1} req/s"
                )
            } else {
                format!(
                    "the pages get {distinct:.0} distinct sources per minute and had none before, and {rate:.1} req/s"
                )
            },
        ];
        evidence.push(if ja4_share > ua_share {
            format!(
                "their {HANDSHAKE_JA4S} most common TLS fingerprints (JA4) cover {:.0}% of the members: one program, not a crowd of browsers",
                ja4_share * 100.0
            )
        } else {
            format!(
                "their {HANDSHAKE_JA4S} most common User-Agents cover {:.0}% of the members: one program, not a crowd of browsers",
                ua_share * 100.0
            )
        });
        evidence.extend(self.pretenders(&members));
        Some(Found {
            basis,
            members,
            member_site,
            sites,
            pages,
            rate,
            onset,
            confidence,
            evidence,
        })
    }
}

/// Notes User-Agent hash `ua` seen at `now` in `agents`, the oldest replaced when full.
fn note_agent(agents: &mut [(u32, u32); AGENTS], ua: u32, now: u32) {
    if let Some(a) = agents.iter_mut().find(|a| a.1 != 0 && a.0 == ua) {
        a.1 = a.1.max(now);
    } else if let Some(oldest) = agents.iter_mut().min_by_key(|a| a.1) {
        *oldest = (ua, now);
    }
}
#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use super::WideConfig;
    use crate::{
        detect::{Detector, DetectorConfig},
        l7::RequestEvent,
    };

    const BOT_UAS: [&str; 3] = [
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36",
        "python-requests/2.31.0",
        "Mozilla/5.0 (X11; Linux x86_64; rv:109.0) Gecko/20100101 Firefox/115.0",
    ];

    /// A small deterministic generator (xorshift), so every run sees the same traffic.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        /// Uniform in `lo..hi`.
        fn range(&mut self, lo: f64, hi: f64) -> f64 {
            lo + (hi - lo) * (self.next() % 1_000_000) as f64 / 1e6
        }
    }

    use super::super::request as ev;

    fn run(cfg: DetectorConfig, events: &mut [RequestEvent]) -> Detector {
        crate::detect::replay(cfg, events)
    }

    fn bot(i: usize) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(198, 18, (i / 250) as u8, (i % 250 + 1) as u8))
    }

    fn visitor(i: usize) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(
            198,
            51,
            100 + (i / 250) as u8,
            (i % 250 + 1) as u8,
        ))
    }

    /// The user's case: `n` sources from t = 60 s to 300 s, each fetching `/gallery/7` once
    /// every 30–60 s (the random query string is gone once the path is normalised), no assets,
    /// no Referer: about 50 requests/s for 2000 sources.
    fn wide_swarm(n: usize, rng: &mut Rng) -> Vec<RequestEvent> {
        let mut evs = Vec::new();
        for b in 0..n {
            let ua = BOT_UAS[b % BOT_UAS.len()];
            let mut t = 60.0 + rng.range(0.0, 45.0);
            while t < 300.0 {
                evs.push(ev(t, bot(b), "/gallery/7", ua, None));
                t += rng.range(30.0, 60.0);
            }
        }
        evs
    }

    /// `n` people browsing for the whole capture: a page view every 10–40 s with its assets,
    /// the page before as Referer. Each with its own browser build.
    fn browsing(n: usize, rng: &mut Rng) -> Vec<RequestEvent> {
        let mut evs = Vec::new();
        for v in 0..n {
            let ua = format!("Mozilla/5.0 Firefox/{}.{}", 100 + v % 30, v);
            let mut t = rng.range(0.0, 20.0);
            let mut prev: Option<String> = None;
            while t < 320.0 {
                let page = format!("/gallery/{}", rng.next() % 8 + 1);
                let referer = prev.as_deref().map(|p| format!("http://shop.example{p}"));
                evs.push(ev(t, visitor(v), &page, &ua, referer.as_deref()));
                let own = format!("http://shop.example{page}");
                for a in 0..5 {
                    let img = format!("/img/g-{a}.jpg");
                    evs.push(ev(t + 0.2, visitor(v), &img, &ua, Some(&own)));
                }
                prev = Some(page);
                t += rng.range(10.0, 40.0);
            }
        }
        evs
    }

    #[test]
    fn a_wide_low_rate_swarm_under_every_per_source_bar_is_found() {
        let mut rng = Rng(0x5eed);
        let mut evs = wide_swarm(2000, &mut rng);
        // The user's numbers: ~50 req/s on the page, and no source near 8 requests in 30 s.
        let swarm_rps = evs.len() as f64 / 240.0;
        assert!((35.0..70.0).contains(&swarm_rps), "{swarm_rps}");
        evs.extend(browsing(30, &mut rng));
        let d = run(DetectorConfig::default(), &mut evs);
        let [s] = d.swarms() else {
            panic!("expected one swarm: {:#?}", d.swarms())
        };
        let bots = s
            .members
            .iter()
            .filter(|m| m.to_string().starts_with("198.18."))
            .count();
        assert_eq!(
            bots,
            s.members.len(),
            "a visitor is a member: {:?}",
            s.members
        );
        assert!(bots >= 1900, "recall: {bots} of 2000");
        assert_eq!(s.pages.len(), 1, "{:?}", s.pages);
        assert_eq!(s.pages[0].path, "/gallery/7");
        assert!(
            s.evidence.iter().any(|l| l.contains("distinct sources")),
            "{:#?}",
            s.evidence
        );
    }

    /// `n` new visitors within 20 s from t = 60 s, each loading `page` once with its 8 assets,
    /// then following 0–2 links (with Referer, assets cached).
    fn flash_crowd(n: usize, page: &str, rng: &mut Rng) -> Vec<RequestEvent> {
        let mut evs = Vec::new();
        for v in 0..n {
            let src = visitor(1000 + v);
            let ua = BOT_UAS[v % 3];
            let t = 60.0 + rng.range(0.0, 20.0);
            evs.push(ev(t, src, page, ua, None));
            let own = format!("http://shop.example{page}");
            for a in 0..8 {
                evs.push(ev(t + 0.3, src, &format!("/img/p-{a}.jpg"), ua, Some(&own)));
            }
            for k in 0..(rng.next() % 3) {
                let next = format!("/product/{}", rng.next() % 20);
                evs.push(ev(t + 20.0 * (k + 1) as f64, src, &next, ua, Some(&own)));
            }
        }
        evs
    }

    /// `n` addresses of a carrier-grade NAT, each with 6 users (their own browsers) who reload
    /// `page` from a bookmark every 30–60 s, assets cached: narrow fetches, many User-Agents.
    fn nat(n: usize, page: &str, rng: &mut Rng) -> Vec<RequestEvent> {
        let mut evs = Vec::new();
        for a in 0..n {
            let src = IpAddr::V4(Ipv4Addr::new(100, 64, 7, a as u8 + 1));
            for u in 0..6 {
                let ua = format!("Mozilla/5.0 Chrome/{}.0", 110 + u);
                let mut t = 60.0 + rng.range(0.0, 30.0);
                while t < 300.0 {
                    evs.push(ev(t, src, page, &ua, None));
                    t += rng.range(30.0, 60.0);
                }
            }
        }
        evs
    }

    /// `n` crawler addresses of one search engine: each fetches distinct pages, one every
    /// 10 s, HTML only, no Referer, plus `page` now and then.
    fn crawlers(n: usize, page: &str) -> Vec<RequestEvent> {
        let mut evs = Vec::new();
        for c in 0..n {
            let src = IpAddr::V4(Ipv4Addr::new(198, 51, 102, c as u8 + 1));
            let ua = "Mozilla/5.0 (compatible; ExampleBot/2.1)";
            for k in 0..24 {
                let t = 60.0 + c as f64 * 0.1 + k as f64 * 10.0;
                let path = if k % 6 == 0 {
                    page.to_owned()
                } else {
                    format!("/page/{c}-{k}")
                };
                evs.push(ev(t, src, &path, ua, None));
            }
        }
        evs
    }

    /// A popular page's ordinary visitors: `n` sources from t = 0, each coming to `page` 3
    /// times within 5 minutes, the first time with its assets, the other times from another
    /// page of the site (Referer).
    fn popular(n: usize, page: &str, rng: &mut Rng) -> Vec<RequestEvent> {
        let mut evs = Vec::new();
        for v in 0..n {
            let src = visitor(4000 + v);
            let ua = BOT_UAS[v % 3];
            let mut t = rng.range(0.0, 300.0);
            let own = format!("http://shop.example{page}");
            evs.push(ev(t, src, page, ua, None));
            for a in 0..6 {
                evs.push(ev(t + 0.2, src, &format!("/img/h-{a}.jpg"), ua, Some(&own)));
            }
            for _ in 0..2 {
                t += rng.range(30.0, 100.0);
                evs.push(ev(t, src, page, ua, Some("http://shop.example/cart")));
            }
        }
        evs
    }

    fn no_swarm(evs: &mut [RequestEvent]) {
        let d = run(DetectorConfig::default(), evs);
        assert!(d.swarms().is_empty(), "{:#?}", d.swarms());
    }

    #[test]
    fn a_flash_crowd_of_new_visitors_with_assets_and_links_is_not_a_swarm() {
        let mut rng = Rng(7);
        let mut evs = flash_crowd(2000, "/launch", &mut rng);
        evs.extend(browsing(30, &mut rng));
        no_swarm(&mut evs);
    }

    #[test]
    fn a_popular_pages_ordinary_visitors_are_not_a_swarm() {
        let mut rng = Rng(8);
        let mut evs = popular(3000, "/gallery/7", &mut rng);
        evs.extend(browsing(30, &mut rng));
        no_swarm(&mut evs);
    }

    #[test]
    fn nat_addresses_reloading_a_page_are_not_a_swarm() {
        let mut rng = Rng(9);
        let mut evs = nat(60, "/news", &mut rng);
        evs.extend(browsing(30, &mut rng));
        no_swarm(&mut evs);
    }

    #[test]
    fn a_fleet_of_crawlers_is_not_a_swarm() {
        let mut evs = crawlers(60, "/gallery/7");
        evs.extend(browsing(30, &mut Rng(10)));
        no_swarm(&mut evs);
    }

    #[test]
    fn people_reloading_a_live_page_each_with_their_own_browser_are_not_a_swarm() {
        // Narrow as bots are (assets cached, no Referer), but every one its own browser build.
        let mut rng = Rng(11);
        let mut evs = Vec::new();
        for v in 0..400 {
            let ua = format!("Mozilla/5.0 Firefox/{}.{}", 100 + v % 30, v);
            let mut t = 60.0 + rng.range(0.0, 30.0);
            while t < 300.0 {
                evs.push(ev(t, visitor(2000 + v), "/live", &ua, None));
                t += rng.range(30.0, 40.0);
            }
        }
        no_swarm(&mut evs);
    }

    #[test]
    fn beside_a_wide_swarm_the_flash_crowd_nat_crawlers_and_visitors_are_never_members() {
        let mut rng = Rng(12);
        let mut evs = wide_swarm(2000, &mut rng);
        evs.extend(browsing(30, &mut rng));
        evs.extend(flash_crowd(500, "/gallery/7", &mut rng));
        evs.extend(nat(30, "/gallery/7", &mut rng));
        evs.extend(crawlers(30, "/gallery/7"));
        evs.extend(popular(500, "/gallery/7", &mut rng));
        let d = run(DetectorConfig::default(), &mut evs);
        let [s] = d.swarms() else {
            panic!("{:#?}", d.swarms())
        };
        let strays: Vec<&IpAddr> = s
            .members
            .iter()
            .filter(|m| !m.to_string().starts_with("198.18."))
            .collect();
        assert!(strays.is_empty(), "not bots: {strays:?}");
        assert!(s.members.len() >= 1900, "{}", s.members.len());
    }

    #[test]
    fn wide_memory_is_bounded_under_a_flood_of_random_sources() {
        let cfg = DetectorConfig {
            wide: WideConfig {
                max_sources: 1000,
                ..WideConfig::default()
            },
            max_pages_tracked: 500,
            ..DetectorConfig::default()
        };
        let mut d = Detector::new(cfg);
        let mut rng = Rng(13);
        for i in 0..50_000u64 {
            let src = IpAddr::V4(Ipv4Addr::from(rng.next() as u32));
            let path = format!("/r/{}", rng.next() % 100_000);
            let e = ev(i as f64 * 0.001, src, &path, "x", None);
            d.observe(&e);
            if i % 1000 == 0 {
                d.tick(e.ts_ns);
            }
        }
        assert!(d.tracked_wide_sources() <= 1000);
        // One-off sources never reach the watch list: a tick under a flood reads nobody.
        assert!(d.wide.watch.is_empty(), "{}", d.wide.watch.len());
        assert!(d.wide.pages.len() <= 500);
        // The bound stated in the module docs.
        let size = std::mem::size_of::<super::WideSource>();
        assert!(size <= 112, "{size}: the bound in the module docs");
        assert_eq!(std::mem::size_of::<super::WidePage>(), 32);
    }
}
