//! Handshake swarms: an HTTPS site that no access log covers shows the detector only who opens
//! TLS connections to which name (the ClientHello's SNI) and with which client (its JA4), never
//! a path. Each handshake counts as a request to one pseudo-page per site and SNI
//! ([`Page::handshakes`]), so rates, baselines, hot pages, clustering and swarm bookkeeping are
//! the ones plain HTTP uses; what differs is who may be a candidate:
//!
//! - a source opened at least `min_handshakes` connections within the window, spread over at
//!   least `min_handshake_seconds` distinct seconds, most of them to one name: a bot that opens
//!   a connection per request keeps coming, while a browser opens its few connections in a
//!   burst when a visit starts and then reuses them (a flash crowd is many such bursts);
//! - it is not a shared address: one showing `shared_clients` or more different JA4s or
//!   User-Agents lately is many people behind a NAT or proxy, never blocked on handshakes alone;
//! - the site has no access log: where a log covers a site, its requests decide (the log knows
//!   the pages) and the handshakes only add their fingerprints as evidence.
//!
//! A cluster of such candidates is a swarm only when it is one program: the
//! [`HANDSHAKE_JA4S`] most common fingerprints cover `handshake_ja4_share` of its members.

use std::{collections::BTreeMap, net::IpAddr};

use super::{
    Detector, PageCounts, Recent, Site, candidates::Candidate, count_recent, decay_factor,
    note_recent,
};
use crate::l7::{RequestEvent, ja4::Fingerprint};

/// Fingerprints a handshake swarm may spread over.
pub const HANDSHAKE_JA4S: usize = 3;

/// One source's TLS handshakes to sites no log covers.
#[derive(Clone, Debug, Default)]
pub(super) struct TlsSource {
    last_ns: u64,
    /// Decayed handshake count.
    handshakes: f64,
    /// Decayed count of distinct seconds with a handshake, and the last such second.
    seconds: f64,
    last_second: u64,
    /// Handshakes per SNI page.
    names: PageCounts,
    /// Handshakes to names no longer tracked.
    other: f64,
    site: Option<Site>,
    /// When the neighbour record last noted it.
    neighbour_ns: u64,
    /// Distinct fingerprints lately.
    ja4s: Recent,
}

fn fp_hash(fp: &Fingerprint) -> u64 {
    super::fx(fp.as_str())
}

impl Detector {
    /// Whether an access log covers `site` at `now_ns`: configured, or named by a log line
    /// within the baseline window.
    pub(super) fn is_logged(&self, site: Site, now_ns: u64) -> bool {
        self.cfg.logged_sites.contains(&site)
            || self.logged.get(&site).is_some_and(|t| {
                now_ns.saturating_sub(*t) <= self.cfg.baseline_window.as_nanos() as u64
            })
    }

    /// Feeds one TLS ClientHello (its JA4 `fp`, if whole).
    pub(super) fn observe_handshake(&mut self, ev: &RequestEvent, fp: Option<Fingerprint>) {
        let now = ev.ts_ns;
        let site = (ev.dst, ev.dst_port);
        if self.is_logged(site, now) {
            return;
        }
        let tau = self.cfg.window.as_nanos() as f64;
        let page = self.handshake_page(site, ev.host.as_deref(), now);
        let ps = &mut self.pages[page as usize];
        super::decay(&mut ps.count, ps.last_ns, now, tau);
        ps.count += 1.0;
        ps.last_ns = ps.last_ns.max(now);
        let generation = ps.generation;
        let (s, new) = self.tls_sources.touch(ev.src, now);
        if new {
            s.last_ns = now;
            s.last_second = u64::MAX;
        }
        self.neighbours
            .note_due(ev.src, &mut s.neighbour_ns, new, now);
        s.names.forget_recycled(&self.pages);
        let factor = decay_factor(s.last_ns, now, tau);
        s.handshakes = s.handshakes * factor + 1.0;
        s.seconds *= factor;
        s.other *= factor;
        s.names.decay(factor);
        let second = now / 1_000_000_000;
        if second != s.last_second {
            s.seconds += 1.0;
            s.last_second = second;
        }
        s.last_ns = s.last_ns.max(now);
        s.site = Some(site);
        if let Some(fp) = fp {
            note_recent(&mut s.ja4s, fp_hash(&fp), now);
        }
        s.other += s.names.count(page, generation, now);
        if s.handshakes >= self.cfg.min_handshakes {
            self.tls_watch.insert(ev.src);
        }
    }

    /// Forgets, from the handshake watch list, the sources gone or under `min_handshakes`.
    pub(super) fn prune_tls_watch(&mut self, now_ns: u64) {
        let tau = self.cfg.window.as_nanos() as f64;
        let (tls, min) = (&self.tls_sources, self.cfg.min_handshakes);
        self.tls_watch.retain(|a| {
            tls.get(a)
                .is_some_and(|s| s.handshakes * decay_factor(s.last_ns, now_ns, tau) >= min)
        });
    }

    /// Sources tracked for their handshakes.
    pub fn tracked_handshake_sources(&self) -> usize {
        self.tls_sources.len()
    }

    /// Every source tracked for its handshakes, the site it last opened a connection to and
    /// its decayed handshake count.
    pub(super) fn handshake_sources(
        &self,
    ) -> impl Iterator<Item = (IpAddr, Option<Site>, f64)> + '_ {
        self.tls_sources
            .iter()
            .map(|(a, s)| (*a, s.site, s.handshakes))
    }

    /// Whether `src` looks like many clients behind one address at `now_ns`: several JA4s or
    /// User-Agents within the window.
    pub(super) fn is_shared(&self, src: &IpAddr, now_ns: u64) -> bool {
        let window = self.cfg.window.as_nanos() as u64;
        let ja4s = self
            .tls_sources
            .get(src)
            .map_or(0, |s| count_recent(&s.ja4s, now_ns, window));
        let agents = self
            .sources
            .get(src)
            .map_or(0, |s| count_recent(&s.agents, now_ns, window));
        ja4s.max(agents) >= self.cfg.shared_clients
    }

    /// The handshake candidates at `now_ns` (see the module documentation), with `hot` pages
    /// as [`Detector::update_pages`] found them.
    pub(super) fn handshake_candidates(&self, now_ns: u64, hot: &[bool]) -> Vec<Candidate> {
        let tau = self.cfg.window.as_nanos() as f64;
        let mut cands = Vec::new();
        for (addr, s) in self
            .tls_watch
            .iter()
            .filter_map(|a| Some((a, self.tls_sources.get(a)?)))
        {
            let f = decay_factor(s.last_ns, now_ns, tau);
            let handshakes = s.handshakes * f;
            if handshakes < self.cfg.min_handshakes
                || s.seconds * f < self.cfg.min_handshake_seconds
            {
                continue;
            }
            let Some(site) = s.site else { continue };
            if self.is_logged(site, now_ns) || self.is_shared(addr, now_ns) {
                continue;
            }
            let (names, top) = s.names.top(&self.pages, f, self.cfg.max_pages);
            if names.is_empty()
                || top / handshakes < self.cfg.concentration
                || top / (names.len() as f64) < self.cfg.min_repeat
                || !super::page_counts::any_hot(&names, hot)
            {
                continue;
            }
            cands.push(Candidate {
                addr: *addr,
                site,
                pages: names.iter().map(|n| n.0).collect(),
                requests: handshakes,
                ua: self.ja4_of(addr).map_or(0, |fp| fp_hash(&fp)),
                handshakes: true,
                views: false,
            });
        }
        cands
    }

    /// The earliest handshake of `addr` to one of `pages`.
    pub(super) fn first_handshake(
        &self,
        addr: &IpAddr,
        pages: &std::collections::BTreeSet<u32>,
    ) -> Option<u64> {
        self.tls_sources.get(addr)?.names.first_ns(pages)
    }

    /// Whether `members` run one program: the [`HANDSHAKE_JA4S`] most common fingerprints
    /// cover `handshake_ja4_share` of them (members whose hello was not whole count against);
    /// returns that share.
    pub(super) fn ja4_concentration<'a>(
        &self,
        members: impl IntoIterator<Item = &'a IpAddr>,
    ) -> f64 {
        let mut counts: BTreeMap<Fingerprint, usize> = BTreeMap::new();
        let mut all = 0usize;
        for m in members {
            all += 1;
            if let Some(fp) = self.ja4_of(m) {
                *counts.entry(fp).or_default() += 1;
            }
        }
        let mut top: Vec<usize> = counts.into_values().collect();
        top.sort_unstable_by(|a, b| b.cmp(a));
        top.iter().take(HANDSHAKE_JA4S).sum::<usize>() as f64 / all.max(1) as f64
    }

    /// Forgets the sites no log line named within the baseline window.
    pub(super) fn forget_logged(&mut self, now_ns: u64) {
        let keep = self.cfg.baseline_window.as_nanos() as u64;
        self.logged.retain(|_, t| now_ns.saturating_sub(*t) <= keep);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        detect::{Basis, DetectorConfig},
        l7::{Kind, Origin},
    };

    /// curl's hello (OpenSSL: 31 suites, 12 extensions).
    const CURL: &str = "t13d3112h2_e8f1e7e78f70_6bebaf5329ac";
    /// Browsers' hellos.
    const BROWSERS: [&str; 4] = [
        "t13d1516h2_8daaf6152771_e5627efa2ab1",
        "t13d1715h2_5b57614c22b0_3d5424432f57",
        "t13d2014h2_a09f3c656075_14788d8d241b",
        "t13d1516h2_8daaf6152771_02713d6af862",
    ];
    const SITE: &str = "203.0.113.10";

    fn hello(ts_s: f64, src: &str, ja4: &str) -> RequestEvent {
        RequestEvent {
            ts_ns: (ts_s * 1e9) as u64,
            src: src.parse().unwrap(),
            dst: SITE.parse().unwrap(),
            dst_port: 443,
            kind: Kind::TlsHello,
            host: Some("shop.example".into()),
            ja4: Some(ja4.into()),
            ..RequestEvent::default()
        }
    }

    fn run(cfg: DetectorConfig, events: &mut [RequestEvent]) -> Detector {
        crate::detect::replay(cfg, events)
    }

    /// `n` bots at 198.18.0.x, each opening 4 connections a second for 15 s from 10 s on.
    fn bots(n: usize, ja4: impl Fn(usize, usize) -> &'static str) -> Vec<RequestEvent> {
        let mut evs = Vec::new();
        for b in 0..n {
            for k in 0..60 {
                let t = 10.0 + k as f64 * 0.25 + b as f64 * 0.003;
                evs.push(hello(t, &format!("198.18.0.{b}"), ja4(b, k)));
            }
        }
        evs
    }

    /// `n` browsers at 198.51.100.x: a burst of six connections when a visit starts, and
    /// another visit 10 s later.
    fn browsers(n: usize) -> Vec<RequestEvent> {
        let mut evs = Vec::new();
        for v in 0..n {
            for visit in 0..2 {
                for c in 0..6 {
                    let t = 9.0 + v as f64 * 0.1 + visit as f64 * 10.0 + c as f64 * 0.01;
                    evs.push(hello(t, &format!("198.51.100.{v}"), BROWSERS[v % 4]));
                }
            }
        }
        evs
    }

    #[test]
    fn bots_opening_tls_to_one_name_are_a_handshake_swarm() {
        let mut evs = bots(30, |_, _| CURL);
        evs.extend(browsers(40));
        let d = run(DetectorConfig::default(), &mut evs);
        let [s] = d.swarms() else {
            panic!("{:#?}", d.swarms())
        };
        assert_eq!(s.basis, Basis::Handshakes);
        assert_eq!(s.members.len(), 30, "{:?}", s.members);
        assert!(
            s.members
                .iter()
                .all(|m| m.to_string().starts_with("198.18."))
        );
        assert_eq!(s.site, (SITE.parse().unwrap(), 443));
        let [p] = &s.pages[..] else {
            panic!("{:?}", s.pages)
        };
        assert!(p.handshakes && p.path.is_empty());
        assert_eq!(p.host.as_deref(), Some("shop.example"));
        assert!(
            s.evidence
                .iter()
                .any(|e| e.contains("TLS handshakes alone")),
            "{:?}",
            s.evidence
        );
        assert!(
            s.evidence.iter().any(|e| e.contains(CURL)),
            "{:?}",
            s.evidence
        );
        // Hellos are no requests: nothing is counted as one.
        assert_eq!(d.events(), 0);
        assert_eq!(d.tracked_handshake_sources(), 70);
    }

    #[test]
    fn a_logged_site_decides_and_its_handshakes_only_add_evidence() {
        let site = (SITE.parse().unwrap(), 443);
        // Configured as logged: the same handshakes make no swarm.
        let cfg = DetectorConfig {
            logged_sites: vec![site],
            ..DetectorConfig::default()
        };
        let d = run(cfg, &mut bots(30, |_, _| CURL));
        assert!(d.swarms().is_empty(), "{:#?}", d.swarms());
        assert_eq!(
            d.fingerprinted_sources(),
            30,
            "the fingerprints are still kept"
        );
        // Learnt from a log line naming the site.
        let mut evs = bots(30, |_, _| CURL);
        evs.push(RequestEvent {
            ts_ns: 1_000_000_000,
            src: "198.51.100.7".parse().unwrap(),
            dst: site.0,
            dst_port: 443,
            path: "/".into(),
            origin: Origin::Log,
            ..RequestEvent::default()
        });
        let d = run(DetectorConfig::default(), &mut evs);
        assert!(d.swarms().is_empty(), "{:#?}", d.swarms());
        // The log's requests decide, and the handshakes name the program.
        let mut evs = bots(30, |_, _| CURL);
        for b in 0..30 {
            for k in 0..60 {
                evs.push(RequestEvent {
                    ts_ns: ((10.0 + k as f64 * 0.25 + b as f64 * 0.003) * 1e9) as u64 + 1000,
                    src: format!("198.18.0.{b}").parse().unwrap(),
                    dst: site.0,
                    dst_port: 443,
                    host: Some("shop.example".into()),
                    path: format!("/gallery/{}", k % 2),
                    user_agent: Some("curl/8.5.0".into()),
                    status: Some(if k % 4 == 0 { 404 } else { 200 }),
                    bytes: Some(100_000),
                    origin: Origin::Log,
                    ..RequestEvent::default()
                });
            }
        }
        let d = run(DetectorConfig::default(), &mut evs);
        let [s] = d.swarms() else {
            panic!("{:#?}", d.swarms())
        };
        assert_eq!(s.basis, Basis::Log);
        assert!(s.pages.iter().all(|p| !p.handshakes));
        // What the log adds: what the server answered them.
        let served = s
            .evidence
            .iter()
            .find(|e| e.starts_with("from the web server's access log"))
            .unwrap_or_else(|| panic!("{:?}", s.evidence));
        let number = |after: &str| -> f64 {
            let rest = &served[served.find(after).unwrap() + after.len()..];
            rest.split(|c: char| c != '.' && !c.is_ascii_digit())
                .next()
                .unwrap()
                .parse()
                .unwrap()
        };
        // 30 members, about 4 requests a second each for 15 s, 100 kB each, in a 30 s window.
        assert!((50.0..180.0).contains(&number("members ")), "{served}");
        assert!((20.0..=30.0).contains(&number("answered ")), "{served}");
        assert_eq!(s.ja4_shares()[0].1, 1.0);
    }

    #[test]
    fn a_flash_crowd_of_browsers_is_not_a_swarm() {
        let mut evs = Vec::new();
        for v in 0..2000u32 {
            let src = std::net::Ipv4Addr::from(0xc633_6400 + v).to_string();
            let t = 10.0 + f64::from(v) * 0.005;
            evs.push(hello(t, &src, BROWSERS[v as usize % 4]));
            if v % 2 == 0 {
                evs.push(hello(t + 0.05, &src, BROWSERS[v as usize % 4]));
            }
        }
        evs.extend(browsers(40));
        let d = run(DetectorConfig::default(), &mut evs);
        assert!(d.swarms().is_empty(), "{:#?}", d.swarms());
    }

    #[test]
    fn a_shared_address_is_never_a_member_on_handshakes_alone() {
        // 12 addresses of a carrier NAT, each many users (five programs) opening connections
        // as often as the bots, beside 30 bots.
        let nat = |evs: &mut Vec<RequestEvent>| {
            for n in 0..12 {
                for k in 0..60 {
                    let t = 10.0 + k as f64 * 0.25 + n as f64 * 0.002;
                    let ja4 = if k % 5 == 4 { CURL } else { BROWSERS[k % 4] };
                    evs.push(hello(t, &format!("100.64.0.{n}"), ja4));
                }
            }
        };
        let mut evs = bots(30, |_, _| CURL);
        nat(&mut evs);
        let d = run(DetectorConfig::default(), &mut evs);
        let [s] = d.swarms() else {
            panic!("{:#?}", d.swarms())
        };
        assert_eq!(s.members.len(), 30);
        assert!(
            !s.members
                .iter()
                .any(|m| m.to_string().starts_with("100.64."))
        );
        // The NAT alone is no swarm.
        let mut evs = Vec::new();
        nat(&mut evs);
        let d = run(DetectorConfig::default(), &mut evs);
        assert!(d.swarms().is_empty(), "{:#?}", d.swarms());
        // Nor is an address whose users' browsers say who they are, one per request.
        let mut evs = bots(30, |_, _| CURL);
        for k in 0..60 {
            evs.push(RequestEvent {
                ts_ns: ((10.0 + k as f64 * 0.25) * 1e9) as u64,
                src: "198.18.0.1".parse().unwrap(),
                dst: "192.0.2.80".parse().unwrap(),
                dst_port: 80,
                path: format!("/p/{k}"),
                user_agent: Some(format!("Mozilla/5.0 user {}", k % 5)),
                ..RequestEvent::default()
            });
        }
        let d = run(DetectorConfig::default(), &mut evs);
        assert_eq!(
            d.swarms()[0].members.len(),
            29,
            "{:?}",
            d.swarms()[0].members
        );
    }

    #[test]
    fn many_programs_hammering_one_name_are_not_a_swarm() {
        const EACH: [&str; 6] = [
            "t13d3112h2_e8f1e7e78f70_6bebaf5329ac",
            "t13d1312h2_f57a46bbacb6_e7c285222651",
            "t13d0910h2_f91f431d341e_ec6e5c0c5f0c",
            "t12d4605h2_85626a9a5f7f_aaf95bb78ec9",
            "t13d5911h1_a33745022dd6_1f22a2ca17c4",
            "t13d1812h2_2a284e3b0c56_8a4d5c2a7b41",
        ];
        // 30 pollers, five each of six programs: no three cover 80 %.
        let d = run(DetectorConfig::default(), &mut bots(30, |b, _| EACH[b % 6]));
        assert!(d.swarms().is_empty(), "{:#?}", d.swarms());
        // Three programs do.
        let d = run(DetectorConfig::default(), &mut bots(30, |b, _| EACH[b % 3]));
        assert_eq!(d.swarms().len(), 1);
    }

    #[test]
    fn handshake_sources_are_bounded() {
        let cfg = DetectorConfig {
            max_sources: 500,
            max_pages_tracked: 100,
            ..DetectorConfig::default()
        };
        let mut d = Detector::new(cfg);
        for i in 0..20_000u32 {
            let mut e = hello(f64::from(i) * 0.001, "192.0.2.1", CURL);
            e.src = std::net::Ipv4Addr::from(0x0a00_0000 + i).into();
            e.host = Some(format!("n{}.example", i % 700));
            d.observe(&e);
            if i % 1000 == 0 {
                d.tick(e.ts_ns);
            }
        }
        assert!(d.tracked_handshake_sources() <= 500);
        assert!(d.pages.len() <= 100);
    }
}
