//! TLS fingerprints (JA4) of sources and swarms: which client software the members run.
//!
//! A source's JA4 comes from its TLS ClientHello events, its pages from HTTP events (the wire
//! or an access log), so the two meet here by address: the detector remembers the last JA4 of
//! each source (bounded like the sources), and a swarm the JA4 of each member. Many members on
//! one fingerprint is one program, which is evidence for the humans; it does not change what
//! makes a swarm.

use std::{collections::BTreeMap, net::IpAddr};

use super::{Detector, Swarm};
use crate::l7::ja4::Fingerprint;

/// Fingerprints a swarm shows (the most common first).
pub const JA4_TOP: usize = 5;

/// Share of members on one fingerprint from which it is named in the evidence.
pub const JA4_EVIDENCE_SHARE: f64 = 0.8;

/// Share of the members with a claimed browser and a known JA4 that must contradict it for
/// the swarm to be called out as pretending.
pub const PRETENDER_SHARE: f64 = 0.5;

/// The client family a `User-Agent` claims, as far as its TLS should tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    /// Chrome, Edge, Opera and the other Chromium browsers.
    Chromium,
    /// Firefox.
    Firefox,
    /// Safari.
    Safari,
    /// A command-line tool or an HTTP library (curl, Wget, python-requests, Go, ...).
    Script,
}

impl Family {
    /// The family `ua` claims; `None` for what names no known family (including bots that
    /// say what they are).
    pub fn of(ua: &str) -> Option<Family> {
        const SCRIPTS: [&str; 10] = [
            "curl/",
            "wget/",
            "python-requests/",
            "python-urllib",
            "go-http-client/",
            "okhttp/",
            "libwww-perl/",
            "java/",
            "axios/",
            "node-fetch",
        ];
        // Lower-cased on the stack: this runs for every new source, and a flood of them must
        // not cost an allocation each. What a browser says is in its first 512 bytes.
        let mut buf = [0u8; 512];
        let n = ua.len().min(buf.len());
        buf[..n].copy_from_slice(&ua.as_bytes()[..n]);
        buf[..n].make_ascii_lowercase();
        let lower = &buf[..n];
        let has = |needle: &str| memchr::memmem::find(lower, needle.as_bytes()).is_some();
        if SCRIPTS.iter().any(|s| lower.starts_with(s.as_bytes())) {
            return Some(Family::Script);
        }
        if !lower.starts_with(b"mozilla/5.0") || has("compatible;") {
            return None;
        }
        if has("firefox/") {
            Some(Family::Firefox)
        } else if has("chrome/") || has("chromium/") || has("edg/") {
            Some(Family::Chromium)
        } else if has("safari/") && has("version/") {
            Some(Family::Safari)
        } else {
            None
        }
    }

    /// Whether the family is a browser.
    pub fn is_browser(self) -> bool {
        !matches!(self, Family::Script)
    }
}

/// User-Agents [`FamilyCache`] remembers: a flood of new sources sends few distinct ones.
const FAMILY_CACHE: usize = 256;

/// The families of recently seen User-Agents, direct-mapped by the caller's hash of the
/// string and checked against the string itself (the hash is not keyed, so a crafted
/// User-Agent could share one): [`Family::of`] runs several substring searches, once per new
/// source, and under a flood every source is new.
pub(super) struct FamilyCache(Vec<(String, Option<Family>)>);

impl Default for FamilyCache {
    fn default() -> Self {
        Self(vec![(String::new(), None); FAMILY_CACHE])
    }
}

impl FamilyCache {
    /// [`Family::of`] `ua`, whose hash is `hash`.
    pub(super) fn of(&mut self, ua: &str, hash: u64) -> Option<Family> {
        // The empty string is every slot's initial key; its family is None, as Family::of says.
        let slot = &mut self.0[hash as usize % FAMILY_CACHE];
        if slot.0 != ua {
            slot.0.clear();
            slot.0.push_str(ua);
            slot.1 = Family::of(ua);
        }
        slot.1
    }
}

/// Whether `fp` has the shape every current browser's hello has: TLS 1.3 with a name, HTTP/2
/// offered, 8 to 20 cipher suites and at least 13 extensions (Chrome `t13d1516h2`, Firefox
/// `t13d1715h2`, Safari `t13d2014h2`), where curl offers 30 suites and Go, Python and rustls
/// a dozen extensions or fewer.
pub fn browser_like(fp: &Fingerprint) -> bool {
    let a = fp.as_str().as_bytes();
    let num = |i: usize| -> Option<u32> {
        let s = std::str::from_utf8(a.get(i..i + 2)?).ok()?;
        s.parse().ok()
    };
    a.starts_with(b"t13d")
        && a.get(8..10) == Some(b"h2".as_slice())
        && num(4).is_some_and(|c| (8..=20).contains(&c))
        && num(6).is_some_and(|e| e >= 13)
}

impl Detector {
    /// The evidence line when at least [`PRETENDER_SHARE`] of the `members` whose
    /// User-Agent claims a browser open TLS in a way no browser does.
    pub(super) fn pretenders(
        &self,
        members: &std::collections::BTreeSet<IpAddr>,
    ) -> Option<String> {
        let mut claimed = 0usize;
        let mut contradicted = 0usize;
        for m in members {
            let Some(family) = self.sources.get(m).and_then(|s| s.family) else {
                continue;
            };
            let Some(fp) = self.ja4_of(m) else { continue };
            if family.is_browser() {
                claimed += 1;
                if !browser_like(&fp) {
                    contradicted += 1;
                }
            }
        }
        (claimed > 0 && contradicted as f64 >= PRETENDER_SHARE * claimed as f64).then(|| {
            format!(
                "{contradicted} of the {claimed} members whose User-Agent claims a browser open TLS the way no browser does (JA4 inconsistent with the User-Agent)"
            )
        })
    }

    /// Remembers `fp` as the JA4 of `src` at `now_ns`.
    pub(super) fn note_ja4(&mut self, src: IpAddr, fp: Fingerprint, now_ns: u64) {
        if self.fingerprints.len() >= self.cfg.max_sources && !self.fingerprints.contains_key(&src)
        {
            super::evict_oldest(
                &mut self.fingerprints,
                self.cfg.max_sources,
                |(_, t)| *t,
                &mut self.scratch,
            );
        }
        self.fingerprints.insert(src, (fp, now_ns));
    }

    /// The last JA4 seen from `src`.
    pub fn ja4_of(&self, src: &IpAddr) -> Option<Fingerprint> {
        self.fingerprints.get(src).map(|(fp, _)| *fp)
    }

    /// Sources with a known JA4.
    pub fn fingerprinted_sources(&self) -> usize {
        self.fingerprints.len()
    }

    /// The JA4 of each of `members` that has one.
    pub(super) fn member_ja4<'a>(
        &self,
        members: impl IntoIterator<Item = &'a IpAddr>,
    ) -> BTreeMap<IpAddr, Fingerprint> {
        members
            .into_iter()
            .filter_map(|a| Some((*a, self.ja4_of(a)?)))
            .collect()
    }
}

impl Swarm {
    /// The [`JA4_TOP`] most common member fingerprints, each with the share of all members
    /// (members whose hello was not seen count in the whole, so the shares may sum below 1).
    /// Ties: the lower fingerprint first.
    pub fn ja4_shares(&self) -> Vec<(Fingerprint, f64)> {
        let mut counts: BTreeMap<Fingerprint, usize> = BTreeMap::new();
        for fp in self.member_ja4.values() {
            *counts.entry(*fp).or_default() += 1;
        }
        let mut top: Vec<(Fingerprint, usize)> = counts.into_iter().collect();
        top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let all = self.members.len().max(1) as f64;
        top.into_iter()
            .take(JA4_TOP)
            .map(|(fp, n)| (fp, n as f64 / all))
            .collect()
    }

    /// The evidence line naming the fingerprint at least [`JA4_EVIDENCE_SHARE`] of the members
    /// send, if there is one.
    pub(super) fn ja4_evidence(&self) -> Option<String> {
        let (fp, share) = self.ja4_shares().into_iter().next()?;
        (share >= JA4_EVIDENCE_SHARE).then(|| {
            format!(
                "{:.0}% of the members ({} of {}) open TLS with the same ClientHello, JA4 {fp}",
                share * 100.0,
                self.member_ja4.values().filter(|f| **f == fp).count(),
                self.members.len()
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        detect::DetectorConfig,
        l7::{Kind, RequestEvent},
    };

    const A: &str = "t13d1516h2_8daaf6152771_e5627efa2ab1";
    const B: &str = "t12d4605h2_85626a9a5f7f_aaf95bb78ec9";

    fn event(ts_s: f64, src: &str, kind: Kind, path: &str, ja4: Option<&str>) -> RequestEvent {
        RequestEvent {
            ts_ns: (ts_s * 1e9) as u64,
            src: src.parse().unwrap(),
            dst: "203.0.113.10".parse().unwrap(),
            dst_port: 443,
            kind,
            host: Some("shop.example".into()),
            ja4: ja4.map(String::from),
            path: path.into(),
            user_agent: Some("bot/1.0".into()),
            ..RequestEvent::default()
        }
    }

    /// 30 bots hammer two pages over HTTPS: each opens TLS with `ja4(bot)` (the kernel's
    /// hello event), and its requests come from the access log (no JA4 on them).
    fn https_swarm(ja4: impl Fn(usize) -> Option<&'static str>) -> Detector {
        let mut evs = Vec::new();
        for b in 0..30 {
            let src = format!("192.0.2.{b}");
            evs.push(event(
                9.0 + b as f64 * 0.01,
                &src,
                Kind::TlsHello,
                "",
                ja4(b),
            ));
            for k in 0..60 {
                let page = if k % 2 == 0 {
                    "/gallery/7"
                } else {
                    "/gallery/8"
                };
                let t = 10.0 + k as f64 * 0.5 + b as f64 * 0.01;
                evs.push(event(t, &src, Kind::Http, page, None));
            }
        }
        crate::detect::replay(DetectorConfig::default(), &mut evs)
    }

    fn fp(s: &str) -> Fingerprint {
        Fingerprint::parse(s).unwrap()
    }

    #[test]
    fn members_ja4_counted_with_shares_and_evidence() {
        let d = https_swarm(|b| Some(if b < 27 { A } else { B }));
        let [s] = d.swarms() else {
            panic!("{:?}", d.swarms())
        };
        assert_eq!(s.members.len(), 30);
        assert_eq!(s.member_ja4.len(), 30);
        assert_eq!(s.ja4_shares(), vec![(fp(A), 0.9), (fp(B), 0.1)]);
        let line = s.evidence.iter().find(|e| e.contains("JA4")).unwrap();
        assert_eq!(
            line,
            &format!("90% of the members (27 of 30) open TLS with the same ClientHello, JA4 {A}")
        );
        // A TLS event is no request: the counts that make a swarm are the plain ones.
        assert_eq!(d.events(), 30 * 60);
        assert_eq!(d.fingerprinted_sources(), 30);
    }

    #[test]
    fn no_evidence_line_below_80_percent_or_without_tls() {
        let d = https_swarm(|b| Some(if b < 21 { A } else { B }));
        let s = &d.swarms()[0];
        assert_eq!(s.ja4_shares()[0], (fp(A), 0.7));
        assert!(
            !s.evidence.iter().any(|e| e.contains("JA4")),
            "{:?}",
            s.evidence
        );
        // Half the hellos unseen: shares are of all members.
        let d = https_swarm(|b| (b % 2 == 0).then_some(A));
        assert_eq!(d.swarms()[0].ja4_shares(), vec![(fp(A), 0.5)]);
        // Plain HTTP, or hellos too short for a JA4: the same swarm, no fingerprint.
        let plain = https_swarm(|_| None);
        let s = &plain.swarms()[0];
        assert!(s.ja4_shares().is_empty() && s.member_ja4.is_empty());
        assert_eq!(s.members, d.swarms()[0].members);
        assert_eq!(s.evidence.len(), 4);
        let junk = https_swarm(|_| Some("not a ja4"));
        assert!(junk.swarms()[0].member_ja4.is_empty());
    }

    #[test]
    fn top_five_most_common_first() {
        const MANY: [&str; 7] = [
            "t13d1516h2_000000000001_e5627efa2ab1",
            "t13d1516h2_000000000002_e5627efa2ab1",
            "t13d1516h2_000000000003_e5627efa2ab1",
            "t13d1516h2_000000000004_e5627efa2ab1",
            "t13d1516h2_000000000005_e5627efa2ab1",
            "t13d1516h2_000000000006_e5627efa2ab1",
            "t13d1516h2_000000000007_e5627efa2ab1",
        ];
        // Bots 0..9 on the last one, the others spread over the rest.
        let d = https_swarm(|b| Some(if b < 9 { MANY[6] } else { MANY[b % 6] }));
        let shares = d.swarms()[0].ja4_shares();
        assert_eq!(shares.len(), JA4_TOP);
        assert_eq!(shares[0], (fp(MANY[6]), 0.3));
        // Bots 9..29 over six prints: 4 each on the 4th to 6th, 3 each on the 1st to 3rd
        // (ties: the lower print first).
        let rest: Vec<_> = shares[1..].iter().map(|(f, _)| f.to_string()).collect();
        assert_eq!(rest, [MANY[3], MANY[4], MANY[5], MANY[0]]);
        assert!(shares.windows(2).all(|w| w[0].1 >= w[1].1));
    }

    #[test]
    fn user_agent_families_and_browser_shaped_hellos() {
        let cases = [
            (
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
                Some(Family::Chromium),
            ),
            (
                "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
                Some(Family::Firefox),
            ),
            (
                "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15",
                Some(Family::Safari),
            ),
            ("curl/8.5.0", Some(Family::Script)),
            ("python-requests/2.32.3", Some(Family::Script)),
            ("Mozilla/5.0 (compatible; GalleryFetcher/2.1)", None),
            ("", None),
        ];
        for (ua, family) in cases {
            assert_eq!(Family::of(ua), family, "{ua}");
        }
        // The cache says the same, whatever the hashes: every User-Agent in one slot (a
        // crafted collision), then each in its own, twice.
        let mut cache = FamilyCache::default();
        for round in 0..2 {
            for (i, (ua, family)) in cases.iter().enumerate() {
                assert_eq!(cache.of(ua, 7), *family, "{ua} sharing a slot");
                assert_eq!(cache.of(ua, i as u64 + round), *family, "{ua}");
            }
        }
        for browser in [
            A,
            "t13d1715h2_5b57614c22b0_3d5424432f57",
            "t13d2014h2_a09f3c656075_14788d8d241b",
        ] {
            assert!(browser_like(&fp(browser)), "{browser}");
        }
        // curl (30 suites), Go (12 extensions), Python (no HTTP/2), TLS 1.2 only.
        for script in [
            "t13d3112h2_e8f1e7e78f70_6bebaf5329ac",
            "t13d1312h2_f57a46bbacb6_e7c285222651",
            "t13d5911h1_a33745022dd6_1f22a2ca17c4",
            B,
        ] {
            assert!(!browser_like(&fp(script)), "{script}");
        }
    }

    #[test]
    fn members_claiming_a_browser_with_a_scripts_hello_are_named() {
        const CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
        let run = |ja4: &'static str, ua: &str| {
            let mut evs = Vec::new();
            for b in 0..30 {
                let src = format!("192.0.2.{b}");
                let mut hello = event(9.0, &src, Kind::TlsHello, "", Some(ja4));
                hello.user_agent = None;
                evs.push(hello);
                for k in 0..60 {
                    let mut e = event(10.0 + k as f64 * 0.5, &src, Kind::Http, "/gallery/7", None);
                    e.user_agent = Some(ua.into());
                    evs.push(e);
                }
            }
            crate::detect::replay(DetectorConfig::default(), &mut evs).swarms()[0].clone()
        };
        let pretending = run("t13d3112h2_e8f1e7e78f70_6bebaf5329ac", CHROME);
        let line = pretending
            .evidence
            .iter()
            .find(|e| e.contains("inconsistent"))
            .unwrap_or_else(|| panic!("{:?}", pretending.evidence));
        assert!(line.starts_with("30 of the 30 members"), "{line}");
        // The same bots with Chrome's hello, or saying they are curl: nothing to call out.
        let honest = run(A, CHROME);
        assert!(!honest.evidence.iter().any(|e| e.contains("inconsistent")));
        let curl = run("t13d3112h2_e8f1e7e78f70_6bebaf5329ac", "curl/8.5.0");
        assert!(!curl.evidence.iter().any(|e| e.contains("inconsistent")));
        assert!(pretending.confidence > curl.confidence);
    }

    #[test]
    fn last_ja4_per_source_and_bounded() {
        let cfg = DetectorConfig {
            max_sources: 100,
            ..DetectorConfig::default()
        };
        let mut d = Detector::new(cfg);
        for i in 0..1000u32 {
            let src = std::net::Ipv4Addr::from(0xc000_0200 + i).to_string();
            d.observe(&event(
                f64::from(i) * 0.01,
                &src,
                Kind::TlsHello,
                "",
                Some(A),
            ));
            assert!(d.fingerprinted_sources() <= 100);
        }
        // The most recent sources are the ones kept.
        let last: IpAddr = std::net::Ipv4Addr::from(0xc000_0200 + 999).into();
        assert_eq!(d.ja4_of(&last), Some(fp(A)));
        d.observe(&event(20.0, &last.to_string(), Kind::TlsHello, "", Some(B)));
        assert_eq!(d.ja4_of(&last), Some(fp(B)));
        assert_eq!(d.tracked_sources(), 0, "hellos alone track no source");
    }
}
