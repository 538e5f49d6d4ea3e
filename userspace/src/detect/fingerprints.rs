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

impl Detector {
    /// Remembers `fp` as the JA4 of `src` at `now_ns`.
    pub(super) fn note_ja4(&mut self, src: IpAddr, fp: Fingerprint, now_ns: u64) {
        if self.fingerprints.len() >= self.cfg.max_sources && !self.fingerprints.contains_key(&src)
        {
            // Forget the least recently seen tenth in one go (amortized O(1) per new source).
            let mut by_age: Vec<(u64, IpAddr)> = self
                .fingerprints
                .iter()
                .map(|(a, (_, t))| (*t, *a))
                .collect();
            let n = (self.cfg.max_sources / 10).max(1).min(by_age.len());
            if n > 0 {
                by_age.select_nth_unstable(n - 1);
            }
            for (_, a) in by_age.into_iter().take(n) {
                self.fingerprints.remove(&a);
            }
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
        evs.sort_by_key(|e| e.ts_ns);
        let mut d = Detector::new(DetectorConfig::default());
        let mut next = 0u64;
        for e in &evs {
            while e.ts_ns >= next {
                d.tick(next);
                next += 1_000_000_000;
            }
            d.observe(e);
        }
        d.tick(next);
        d
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
