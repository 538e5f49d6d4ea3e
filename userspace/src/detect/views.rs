//! Browser-like swarms: bots that load a page the way a browser (or `wget -p`) does, the HTML
//! and then every image, script and style sheet on it, again and again. Counted per request
//! they look like visitors: most of their requests are assets, spread over dozens of paths, so
//! the request rule (see `candidates`) never takes them. Counted per *page view* they are what
//! they are: the same one or two pages, viewed every few seconds.
//!
//! A view is a page (a request that is not an asset) plus the assets that follow it: an asset
//! whose `Referer` names the page, or, when it names no page (none sent, or a style sheet's
//! URL for its fonts), one that comes within [`VIEW_GAP_NS`] of the view's last request. Per
//! source the detector already keeps, decayed over the window, its page requests per page
//! (`SourceState::pages`, these are its views per page) and its assets; [`ViewState`] adds the
//! view in progress and the decayed count of assets that followed views, so each view's
//! weight is known.
//!
//! A source that is no request candidate is a *view candidate* when, within the window, it
//! made at least `min_requests` requests (assets count: each view costs the server all of
//! them), at least `min_views` ([`MIN_VIEWS`] by default) views, at least `concentration` of them of at most
//! [`VIEW_MAX_PAGES`] pages and none of any other page lately (see [`RECENT_VIEWS`]),
//! [`MIN_VIEW_REPEAT`] views per page on average, and one of those pages is hot. A member of
//! a swarm stays a candidate down to half the views: once blocked it views nothing, and the
//! bots that reach the bar a moment later must still find a cluster to join.
//!
//! The bars are higher than the request rule's because a visitor who loads assets is one: on
//! a small site a person clicking through its four pages is, for a few views, a source that
//! viewed two or three of them again and again. Ten views that never strayed from two pages
//! happen to a visitor picking among four pages at random once in about 300 visits (6 / 2^11);
//! with three pages and four views, to one in two.
//! How many assets it loads with each view does not matter: they do not hide it. Neither does
//! its User-Agent, so bots that rotate it are found all the same. What keeps the traps clean is
//! the repetition of the same few pages: a person browsing views many pages, or one page twice;
//! a flash crowd views its launch page once each; a NAT's many users view many pages; a
//! crawler views each page once.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use rustc_hash::FxHashSet;

use super::{
    Detector, MAX_TRACKED_PAGES, SourceState, candidates::Candidate, decay_factor, fx, is_asset,
};

/// Views a view candidate needs within the window (decayed), by default
/// ([`super::DetectorConfig::min_views`]).
pub(super) const MIN_VIEWS: f64 = 10.0;

/// Most distinct pages a view candidate views.
pub(super) const VIEW_MAX_PAGES: usize = 2;

/// Decayed views from which a page counts as one the source views lately: one view within
/// about the last 20 s (with a 30 s window).
pub(super) const RECENT_VIEWS: f64 = 0.5;

/// Views per page a view candidate needs on average: a page viewed twice within the window
/// (a person going back to it) never gets there, as the first view has decayed.
pub(super) const MIN_VIEW_REPEAT: f64 = 2.0;

/// Longest gap between a view's requests for an asset without a page's `Referer` to belong to
/// it: a browser asks for a page's assets within about a second of its HTML.
pub(super) const VIEW_GAP_NS: u64 = 2_000_000_000;

/// One source's view in progress, and how many assets its views carried.
#[derive(Clone, Debug, Default)]
pub(super) struct ViewState {
    /// Hash of the path of the page last viewed (0: none yet).
    page: u64,
    /// When the view's last request (its page or an asset) came.
    last_ns: u64,
    /// Decayed count of the assets that followed a view.
    assets: f64,
}

/// The path a `Referer` names: scheme and authority dropped, and query and fragment (pages are
/// counted without them).
fn referer_path(referer: &str) -> &str {
    let rest = referer.split_once("://").map_or(referer, |(_, r)| r);
    let path = rest.find('/').map_or("/", |i| &rest[i..]);
    path.split(['?', '#']).next().unwrap_or(path)
}

/// The view hash of `path` (never 0, which means no view).
fn page_hash(path: &str) -> u64 {
    fx(path) | 1
}

impl ViewState {
    /// Notes one request of its source at `now`: a page (`page`) starts a view, an asset that
    /// follows the view in progress is counted with it. `factor` decays the counts as the
    /// source's other counts were decayed.
    pub(super) fn note(
        &mut self,
        page: bool,
        path: &str,
        referer: Option<&str>,
        now: u64,
        factor: f64,
    ) {
        self.assets *= factor;
        if page {
            self.page = page_hash(path);
            self.last_ns = now;
        } else if self.follows(referer, now) {
            self.assets += 1.0;
            self.last_ns = self.last_ns.max(now);
        }
    }

    /// Whether an asset at `now` with `referer` belongs to the view in progress.
    fn follows(&self, referer: Option<&str>, now: u64) -> bool {
        if self.page == 0 {
            return false;
        }
        match referer.map(referer_path) {
            // Another page's asset (a second tab, a person behind the same address) is not
            // this view's; a lazy image of this page is, however late.
            Some(p) if !is_asset(p) => page_hash(p) == self.page,
            _ => now.saturating_sub(self.last_ns) <= VIEW_GAP_NS,
        }
    }
}

/// Whether `s`, with its counts decayed by `factor`, has the requests (`min_requests`) and
/// views a view candidate needs at the least (both decay alike, so this holds from one event
/// of the source to its next or not at all).
pub(super) fn may_view(s: &SourceState, factor: f64, min_requests: f64, min_views: f64) -> bool {
    s.requests * factor >= min_requests && (s.requests - s.assets) * factor >= min_views / 2.0
}

impl Detector {
    /// The view candidates at `now_ns` (see the module documentation), with `hot` pages as
    /// [`Detector::update_pages`] found them; sources already among `taken` (the request
    /// candidates) are left out.
    pub(super) fn view_candidates(
        &self,
        now_ns: u64,
        hot: &[bool],
        taken: &[Candidate],
    ) -> Vec<Candidate> {
        let tau = self.cfg.window.as_nanos() as f64;
        let taken: FxHashSet<IpAddr> = taken
            .iter()
            .filter(|c| !c.handshakes)
            .map(|c| c.addr)
            .collect();
        let mut cands = Vec::new();
        for (addr, s) in self
            .view_watch
            .iter()
            .filter_map(|a| Some((a, self.sources.get(a)?)))
        {
            let f = decay_factor(s.last_ns, now_ns, tau);
            let requests = s.requests * f;
            let views = (s.requests - s.assets) * f;
            let min_views = self.cfg.min_views;
            if requests < self.cfg.min_requests || views < min_views / 2.0 || taken.contains(addr) {
                continue;
            }
            // A member keeps its place while its views decay (blocked, it makes none): the
            // swarm stays a cluster that bots who cross the bar a little later can join.
            if views < min_views && !self.swarms.iter().any(|w| w.members.contains(addr)) {
                continue;
            }
            let Some(site) = s.site else { continue };
            let (pages, top) = s.pages.top(&self.pages, f, VIEW_MAX_PAGES);
            // Repeats of the pages it views now: a page seen once, long enough ago to have
            // decayed out of the list, must not count for those.
            let listed: f64 = pages.iter().map(|p| p.1).sum();
            if pages.is_empty()
                || top / views < self.cfg.concentration
                || s.pages.viewed(&self.pages, f, RECENT_VIEWS) > VIEW_MAX_PAGES
                || listed / (pages.len() as f64) < MIN_VIEW_REPEAT
                || !super::page_counts::any_hot(&pages, hot)
            {
                continue;
            }
            cands.push(Candidate {
                addr: *addr,
                site,
                pages: pages.iter().map(|p| p.0).collect(),
                requests,
                ua: s.user_agent,
                handshakes: false,
                views: true,
            });
        }
        cands
    }

    /// The evidence lines at `now` of a swarm whose `viewers` (of its `members`) are view
    /// candidates on `pages` of `sites`: how many views each made of which page, with how many assets.
    pub(super) fn view_evidence(
        &self,
        now: u64,
        viewers: &[IpAddr],
        members: usize,
        pages: &BTreeSet<u32>,
        sites: &[String],
    ) -> Vec<String> {
        let tau = self.cfg.window.as_nanos() as f64;
        let window = self.cfg.window.as_secs();
        // Per page by name (one site's page on its IPv4 and IPv6 addresses is one): the members
        // that viewed it, their views of it, and those views' assets.
        let mut per_page: BTreeMap<&str, (usize, f64, f64)> = BTreeMap::new();
        let (mut views_all, mut requests_all) = (0.0, 0.0);
        for s in viewers.iter().filter_map(|a| self.sources.get(a)) {
            let f = decay_factor(s.last_ns, now, tau);
            let views = (s.requests - s.assets) * f;
            let per_view = if views > 0.0 {
                s.view.assets * f / views
            } else {
                0.0
            };
            views_all += views;
            requests_all += s.requests * f;
            for (p, n) in s.pages.top(&self.pages, f, MAX_TRACKED_PAGES).0 {
                if pages.contains(&p) {
                    let path = self.pages[p as usize].page.path.as_str();
                    let e = per_page.entry(path).or_default();
                    e.0 += 1;
                    e.1 += n;
                    e.2 += n * per_view;
                }
            }
        }
        let k = viewers.len().max(1) as f64;
        let mut first = format!(
            "{} sources each loaded >= {:.0} views in the last {window}s of <= {VIEW_MAX_PAGES} pages of {} and no other page (mean {:.0} views, {:.0} requests), each view the page and the assets that follow it (Referer or timing), as a browser does",
            viewers.len(),
            self.cfg.min_views,
            sites.join(" and "),
            views_all / k,
            requests_all / k,
        );
        if members > viewers.len() {
            first.push_str(&format!(
                "; {} more fetch the pages alone",
                members - viewers.len()
            ));
        }
        let mut lines = vec![first];
        let mut by_views: Vec<(&str, (usize, f64, f64))> = per_page.into_iter().collect();
        by_views.sort_by(|a, b| b.1.1.total_cmp(&a.1.1));
        for (path, (who, views, assets)) in by_views {
            let per_view = if views > 0.0 { assets / views } else { 0.0 };
            lines.push(format!(
                "{:.0} views of {path} in {window} s, with its {per_view:.0} assets each (per member that views it; {who} do)",
                views / who.max(1) as f64
            ));
        }
        let per_view = if views_all > 0.0 {
            requests_all / views_all
        } else {
            1.0
        };
        lines.push(format!(
            "the assets do not hide them, they make it worse: each view costs the server {per_view:.0} requests"
        ));
        lines
    }
}

#[cfg(test)]
mod tests {
    use crate::{
        detect::{Detector, DetectorConfig, Swarm},
        l7::RequestEvent,
    };

    const WGET: &str = "Wget/1.21.3";
    const ROTATION: [&str; 5] = [
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4.1 Safari/605.1.15",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0",
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/123.0.0.0 Safari/537.36",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4.1 Mobile/15E148 Safari/604.1",
    ];

    fn req(ts_s: f64, src: &str, path: &str, ua: &str, referer: Option<&str>) -> RequestEvent {
        super::super::request(ts_s, src.parse().unwrap(), path, ua, referer)
    }

    /// One view at `t`: the page, then `assets` of its images within a fraction of a second,
    /// each with the page as `Referer` (`referer`) or none.
    fn view(
        evs: &mut Vec<RequestEvent>,
        t: f64,
        src: &str,
        page: &str,
        assets: impl IntoIterator<Item = usize>,
        ua: &str,
        referer: bool,
    ) {
        evs.push(req(t, src, page, ua, None));
        let url = format!("http://shop.example{page}");
        let name = page.trim_start_matches('/').replace('/', "-");
        for (k, a) in assets.into_iter().enumerate() {
            let at = t + 0.05 + k as f64 * 0.01;
            let r = referer.then_some(url.as_str());
            evs.push(req(at, src, &format!("/img/{name}-{a}.jpg"), ua, r));
        }
    }

    fn run(events: &mut [RequestEvent]) -> Detector {
        crate::detect::replay(DetectorConfig::default(), events)
    }

    /// 6 people browsing the shop: a page every 5-15 s, each a different one or a gallery
    /// seen twice, with its assets.
    fn people(evs: &mut Vec<RequestEvent>) {
        for p in 0..6 {
            let src = format!("198.51.100.{}", 10 + p);
            let mut t = 5.0 + p as f64;
            for k in 0..8 {
                let page = match k % 4 {
                    0 => "/gallery/1".to_owned(),
                    1 => format!("/product/{}", p * 8 + k),
                    2 => "/gallery/2".to_owned(),
                    _ => format!("/category/{k}"),
                };
                view(evs, t, &src, &page, 0..30, "Firefox/125.0", true);
                t += 5.0 + ((p * 7 + k * 3) % 10) as f64;
            }
        }
    }

    /// The user's case: `n` bots at 192.0.2.x run `wget -p` on /gallery/1 and /gallery/2 in a
    /// loop from t = 10 s for 40 s, a view every 1.5 s, each with all its 30 images.
    fn wget_bots(evs: &mut Vec<RequestEvent>, n: usize) {
        for b in 0..n {
            let src = format!("192.0.2.{}", b + 1);
            for k in 0..27 {
                let page = if k % 2 == 0 {
                    "/gallery/1"
                } else {
                    "/gallery/2"
                };
                let t = 10.0 + k as f64 * 1.5 + b as f64 * 0.013;
                view(evs, t, &src, page, 0..30, WGET, true);
            }
        }
    }

    /// The evidence line "N views of /gallery/1 in 30 s, …" of `s`, and its N.
    fn gallery_views(s: &Swarm) -> (&str, f64) {
        let line = s
            .evidence
            .iter()
            .find(|e| e.contains("views of /gallery/1 in 30 s"))
            .unwrap_or_else(|| panic!("{:#?}", s.evidence));
        let n = line.split(' ').next().unwrap().parse().unwrap();
        (line, n)
    }

    fn only(d: &Detector) -> &Swarm {
        let [s] = d.swarms() else {
            panic!("{:#?}", d.swarms())
        };
        s
    }

    #[test]
    fn bots_loading_the_galleries_with_all_their_images_are_a_swarm() {
        let mut evs = Vec::new();
        wget_bots(&mut evs, 40);
        people(&mut evs);
        // Visitors clicking through a small site at a view a second, as the lab's do: mostly
        // the two galleries, every tenth view another page. They view the galleries as often
        // as the bots, but not only them.
        for v in 0..12 {
            let src = format!("198.51.103.{}", v + 1);
            for k in 0..35 {
                let page = match (k + v) % 10 {
                    0 => "/about",
                    n if n % 2 == 0 => "/gallery/1",
                    _ => "/gallery/2",
                };
                let t = 9.0 + k as f64 * 1.1 + v as f64 * 0.07;
                view(&mut evs, t, &src, page, 0..30, "Firefox/128.0", true);
            }
        }
        // Read the evidence while the bots are at it (they stop at 49 s), between two views.
        evs.retain(|e| e.ts_ns <= 47_200_000_000);
        let d = run(&mut evs);
        let s = only(&d);
        assert_eq!(s.members.len(), 40, "{:?}", s.members);
        assert!(
            s.members
                .iter()
                .all(|m| m.to_string().starts_with("192.0.2.")),
            "{:?}",
            s.members
        );
        let mut paths: Vec<&str> = s.pages.iter().map(|p| p.path.as_str()).collect();
        paths.sort_unstable();
        assert_eq!(paths, ["/gallery/1", "/gallery/2"]);
        // "N views of /gallery/1 in 30 s, with its K assets each": a view of each page every
        // 3 s for 38 s is about 7 decayed views in a 30 s window; 30 images each.
        let (line, n) = gallery_views(s);
        assert!((5.0..=14.0).contains(&n), "{line}");
        assert!(line.contains("with its 30 assets each"), "{line}");
    }

    #[test]
    fn once_the_bots_stop_the_evidence_still_shows_the_attack_not_its_tail() {
        // The bots stop at 49 s, as when they are blocked; a visitor browses on until 90 s, so
        // the detector ticks on while the bots' counts decay.
        let mut evs = Vec::new();
        wget_bots(&mut evs, 40);
        for k in 0..80 {
            view(
                &mut evs,
                10.0 + k as f64,
                "198.51.103.1",
                "/about",
                0..3,
                "Firefox/128.0",
                true,
            );
        }
        let d = run(&mut evs);
        let s = only(&d);
        // Its last active tick saw the decayed tail.
        assert!(
            s.rate_rps < s.peak_rps / 2.0,
            "{} of {}",
            s.rate_rps,
            s.peak_rps
        );
        assert!(
            s.evidence[0].starts_with("40 sources in all; at its strongest tick 40 sources"),
            "{:#?}",
            s.evidence
        );
        let (line, n) = gallery_views(s);
        assert!(n >= 5.0, "{line}");
    }

    #[test]
    fn bots_reaching_the_bar_after_the_others_stopped_still_join_the_swarm() {
        // 27 bots view a gallery a second from 10 s; 3 more from 11.5 s. The first ones stop
        // (as when they are blocked) at 18 s, just past the bar; the late ones go on.
        let mut evs = Vec::new();
        for b in 0..30 {
            let src = format!("192.0.2.{}", b + 1);
            let (from, until) = if b < 27 { (10.0, 18.0) } else { (11.5, 40.0) };
            let mut t = from + b as f64 * 0.01;
            let mut k = 0;
            while t < until {
                let page = if k % 2 == 0 {
                    "/gallery/1"
                } else {
                    "/gallery/2"
                };
                view(&mut evs, t, &src, page, 0..30, WGET, true);
                t += 0.7;
                k += 1;
            }
        }
        let d = run(&mut evs);
        assert_eq!(only(&d).members.len(), 30, "{:?}", only(&d).members);
    }

    #[test]
    fn bots_rotating_user_agents_and_fetching_some_images_are_found() {
        let mut evs = Vec::new();
        let mut x: u64 = 7;
        let mut rand = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for b in 0..30 {
            let src = format!("192.0.2.{}", b + 1);
            for k in 0..20 {
                let page = if rand() % 2 == 0 {
                    "/gallery/1"
                } else {
                    "/gallery/2"
                };
                let t = 10.0 + k as f64 * 2.0 + b as f64 * 0.02;
                let ua = ROTATION[rand() as usize % ROTATION.len()];
                let subset: Vec<usize> = (0..30).filter(|_| rand() % 3 != 0).collect();
                // Half of them send no Referer: timing alone ties the images to the page.
                view(&mut evs, t, &src, page, subset, ua, b % 2 == 0);
            }
        }
        people(&mut evs);
        let d = run(&mut evs);
        let s = only(&d);
        assert_eq!(s.members.len(), 30, "{:?}", s.members);
        let line = s
            .evidence
            .iter()
            .find(|e| e.contains("views of /gallery/"))
            .unwrap_or_else(|| panic!("{:#?}", s.evidence));
        assert!(
            line.contains("with its 2"),
            "about 20 of 30 images each: {line}"
        );
    }

    #[test]
    fn people_a_flash_crowd_a_nat_and_a_crawler_are_not_swarms() {
        let mut evs = Vec::new();
        people(&mut evs);
        // A flash crowd: 600 new visitors load the launch page once, with its 30 images, some
        // a second page too.
        for v in 0..600u32 {
            let src = std::net::Ipv4Addr::from(0xc633_6400 + v).to_string();
            let t = 10.0 + f64::from(v) * 0.03;
            view(
                &mut evs,
                t,
                &src,
                "/launch",
                0..30,
                ROTATION[v as usize % 5],
                true,
            );
            if v % 3 == 0 {
                let page = format!("/product/{}", v % 7);
                view(
                    &mut evs,
                    t + 8.0,
                    &src,
                    &page,
                    0..6,
                    ROTATION[v as usize % 5],
                    true,
                );
            }
        }
        // NATs: 12 addresses, each many people (several browsers) viewing many pages with
        // their assets, as often as the bots do.
        for n in 0..12 {
            let src = format!("100.64.0.{}", n + 1);
            for k in 0..40 {
                let page = match k % 5 {
                    0 => "/gallery/1".to_owned(),
                    _ => format!("/product/{}", (k * 7 + n) % 21),
                };
                let t = 10.0 + k as f64 * 1.0 + n as f64 * 0.05;
                view(&mut evs, t, &src, &page, 0..12, ROTATION[k % 5], true);
            }
        }
        // A crawler: every page once, no assets.
        for k in 0..120 {
            let t = 10.0 + k as f64 * 0.4;
            evs.push(req(
                t,
                "198.51.100.200",
                &format!("/page/{k}"),
                "ExampleBot/2.1",
                None,
            ));
        }
        // People leafing twice through a gallery's three pages, one every 2 s, each page with
        // its images: many views of few pages, but each page seen twice.
        for p in 0..30 {
            let src = format!("198.51.102.{}", p + 1);
            for k in 0..6 {
                let t = 11.0 + p as f64 * 0.1 + k as f64 * 2.0;
                let page = format!("/gallery/{}", 1 + k % 3);
                view(&mut evs, t, &src, &page, 0..30, "Safari/605.1.15", true);
            }
        }
        // People reloading a gallery twice within the window, with its images.
        for p in 0..40 {
            let src = format!("198.51.101.{}", p + 1);
            for k in 0..2 {
                let t = 12.0 + p as f64 * 0.3 + k as f64 * 6.0;
                view(&mut evs, t, &src, "/gallery/1", 0..30, "Chrome/124", true);
            }
        }
        let d = run(&mut evs);
        assert!(d.swarms().is_empty(), "{:#?}", d.swarms());
    }
}
