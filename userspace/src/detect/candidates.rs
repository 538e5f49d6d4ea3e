//! Candidates: sources that, within the window, hammer a few hot pages like a bot would.

use std::net::IpAddr;

use super::{Detector, Site, decay_factor, page_counts::any_hot};

/// A source that behaves like a swarm member at this tick.
pub(super) struct Candidate {
    pub(super) addr: IpAddr,
    pub(super) site: Site,
    /// The pages it concentrates on, most requested first (never empty).
    pub(super) pages: Vec<u32>,
    /// Its decayed request count.
    pub(super) requests: f64,
    /// Hash of its User-Agent (of its JA4 for a handshake candidate).
    pub(super) ua: u64,
    /// A candidate on its TLS handshakes alone (see `handshakes`): `pages` are handshake pages.
    pub(super) handshakes: bool,
    /// A candidate on its page views (see `views`): it loads the pages with their assets.
    pub(super) views: bool,
}

impl Detector {
    /// Forgets, from the watch lists, the sources gone from their tables or whose decayed
    /// counts fell below the bar by `now_ns`.
    pub(super) fn prune_watch(&mut self, now_ns: u64) {
        let tau = self.cfg.window.as_nanos() as f64;
        let (sources, min) = (&self.sources, self.cfg.min_requests);
        self.watch.retain(|a| {
            sources
                .get(a)
                .is_some_and(|s| s.requests * decay_factor(s.last_ns, now_ns, tau) >= min)
        });
        let (sources, min_views) = (&self.sources, self.cfg.min_views);
        self.view_watch.retain(|a| {
            sources.get(a).is_some_and(|s| {
                super::views::may_view(s, decay_factor(s.last_ns, now_ns, tau), min, min_views)
            })
        });
        self.prune_tls_watch(now_ns);
    }

    /// The sources that at `now_ns` made at least `min_requests` requests, at least
    /// `concentration` of them to at most `max_pages` pages, at least `min_repeat` per page,
    /// almost no asset requests, and hit at least one `hot` page.
    pub(super) fn candidates(&self, now_ns: u64, hot: &[bool]) -> Vec<Candidate> {
        let tau = self.cfg.window.as_nanos() as f64;
        let mut cands: Vec<Candidate> = Vec::new();
        for (addr, s) in self
            .watch
            .iter()
            .filter_map(|a| Some((a, self.sources.get(a)?)))
        {
            let f = decay_factor(s.last_ns, now_ns, tau);
            let requests = s.requests * f;
            if requests < self.cfg.min_requests {
                continue;
            }
            // The cheap test first: most sources that browse load assets.
            if s.assets * f / requests > self.cfg.max_asset_ratio {
                continue;
            }
            let (pages, top) = s.pages.top(&self.pages, f, self.cfg.max_pages);
            if pages.is_empty() {
                continue;
            }
            let concentration = top / requests;
            let repeat = top / pages.len() as f64;
            if concentration >= self.cfg.concentration
                && repeat >= self.cfg.min_repeat
                && any_hot(&pages, hot)
                && let Some(site) = s.site
            {
                cands.push(Candidate {
                    addr: *addr,
                    site,
                    pages: pages.iter().map(|p| p.0).collect(),
                    requests,
                    ua: s.user_agent,
                    handshakes: false,
                    views: false,
                });
            }
        }
        cands
    }
}
