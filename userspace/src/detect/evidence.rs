//! Evidence: a cluster big enough is a swarm — its members, sites, pages, rate, onset,
//! confidence and the reasons, for humans — new, or merged into the swarm sharing a page.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::IpAddr,
};

use super::{Basis, Detector, Page, Site, Swarm, candidates::Candidate, sites_by_members};

/// What one cluster of candidates amounts to.
pub(super) struct Found {
    pub(super) basis: Basis,
    pub(super) members: BTreeSet<IpAddr>,
    pub(super) member_site: BTreeMap<IpAddr, Site>,
    pub(super) sites: Vec<Site>,
    pub(super) pages: Vec<Page>,
    pub(super) rate: f64,
    pub(super) onset: u64,
    pub(super) confidence: f64,
    pub(super) evidence: Vec<String>,
}

/// What every kind of cluster is made of, whatever its evidence: each member's site, the
/// sites by members (and their names), its pages, and the request rate to them.
pub(super) struct Parts {
    pub(super) member_site: BTreeMap<IpAddr, Site>,
    pub(super) sites: Vec<Site>,
    pub(super) names: Vec<String>,
    pub(super) page_ids: BTreeSet<u32>,
    pub(super) pages: Vec<Page>,
    pub(super) rate: f64,
}

/// The request rate to a cluster's pages and their baseline.
struct Load {
    rate: f64,
    baseline: f64,
    spike: f64,
}

impl Detector {
    /// The [`Parts`] of the cluster `idx` of `cands`.
    pub(super) fn parts(&self, cands: &[Candidate], idx: &[usize]) -> Parts {
        let member_site: BTreeMap<IpAddr, Site> = idx
            .iter()
            .map(|i| (cands[*i].addr, cands[*i].site))
            .collect();
        let sites = sites_by_members(&member_site);
        let names = sites
            .iter()
            .map(|s| std::net::SocketAddr::from(*s).to_string())
            .collect();
        let page_ids: BTreeSet<u32> = idx
            .iter()
            .flat_map(|i| cands[*i].pages.iter().copied())
            .collect();
        let pages = page_ids
            .iter()
            .map(|p| self.pages[*p as usize].page.clone())
            .collect();
        let rate = page_ids
            .iter()
            .map(|p| self.pages[*p as usize].count / self.cfg.window.as_secs_f64())
            .sum();
        Parts {
            member_site,
            sites,
            names,
            page_ids,
            pages,
            rate,
        }
    }

    /// The swarm the cluster `idx` of `cands` makes at `now_ns`; `None` with fewer than
    /// `min_members` sources.
    pub(super) fn evidence(
        &self,
        now_ns: u64,
        cands: &[Candidate],
        idx: &[usize],
    ) -> Option<Found> {
        let members: BTreeSet<IpAddr> = idx.iter().map(|i| cands[*i].addr).collect();
        if members.len() < self.cfg.min_members {
            return None;
        }
        let Parts {
            member_site,
            sites,
            names: names_of_sites,
            page_ids,
            pages,
            rate,
        } = self.parts(cands, idx);
        let baseline: f64 = page_ids
            .iter()
            .map(|p| self.pages[*p as usize].baseline_rps)
            .sum();
        // Clusters never mix the two kinds: their pages differ (see `clustering`).
        let handshakes = cands[idx[0]].handshakes;
        let onset = idx
            .iter()
            .filter_map(|i| {
                let addr = &cands[*i].addr;
                if handshakes {
                    return self.first_handshake(addr, &page_ids);
                }
                self.sources.get(addr)?.pages.first_ns(&page_ids)
            })
            .min()
            .unwrap_or(now_ns);
        let ja4_share = self.ja4_concentration(&members);
        if handshakes && ja4_share < self.cfg.handshake_ja4_share {
            // Many clients, each its own program: a crowd, or people behind one network.
            return None;
        }
        let mut uas: HashMap<u64, usize> = HashMap::new();
        for i in idx {
            *uas.entry(cands[*i].ua).or_default() += 1;
        }
        let top_ua = uas.values().copied().max().unwrap_or(0) as f64 / idx.len() as f64;
        let mean_req = idx.iter().map(|i| cands[*i].requests).sum::<f64>() / idx.len() as f64;
        let spike = if baseline > 0.0 {
            rate / baseline
        } else {
            f64::INFINITY
        };
        let pretender = self.pretenders(&members);
        let confidence = (0.55
            + 0.15 * (members.len() as f64 / (5.0 * self.cfg.min_members as f64)).min(1.0)
            + 0.15 * (spike / (2.0 * self.cfg.hot_factor)).min(1.0)
            + 0.15 * if handshakes { ja4_share } else { top_ua }
            + if pretender.is_some() { 0.1 } else { 0.0 })
        .clamp(0.0, 1.0);
        let basis = if handshakes {
            Basis::Handshakes
        } else if page_ids.iter().any(|p| self.pages[*p as usize].from_log) {
            Basis::Log
        } else {
            Basis::Requests
        };
        let mut evidence = if handshakes {
            let names: Vec<&str> = pages.iter().filter_map(|p| p.host.as_deref()).collect();
            let names = if names.is_empty() {
                "no name (hellos without SNI)".to_owned()
            } else {
                names.join(", ")
            };
            vec![
                format!(
                    "{} sources each opened >= {:.0} TLS connections in the last {}s (mean {:.0}), in >= {:.0} distinct seconds, to {names} on {}",
                    members.len(),
                    self.cfg.min_handshakes,
                    self.cfg.window.as_secs(),
                    mean_req,
                    self.cfg.min_handshake_seconds,
                    names_of_sites.join(" and ")
                ),
                format!(
                    "no access log covers {}: decided on TLS handshakes alone (which pages they fetch is not visible); no member shows >= {} fingerprints or User-Agents (a shared address)",
                    names_of_sites.join(" and "),
                    self.cfg.shared_clients
                ),
                if baseline > 0.0 {
                    format!(
                        "the site gets {rate:.1} handshakes/s, {spike:.0}x its baseline of {baseline:.2}/s"
                    )
                } else {
                    format!("the site gets {rate:.1} handshakes/s and had none before")
                },
                format!(
                    "their {} most common TLS fingerprints (JA4) cover {:.0}% of the members: one program, not a crowd of browsers",
                    super::HANDSHAKE_JA4S,
                    ja4_share * 100.0
                ),
            ]
        } else {
            let load = Load {
                rate,
                baseline,
                spike,
            };
            let mut lines =
                self.request_evidence(&members, mean_req, &names_of_sites, load, top_ua);
            let viewers: Vec<IpAddr> = idx
                .iter()
                .filter(|i| cands[**i].views)
                .map(|i| cands[*i].addr)
                .collect();
            if !viewers.is_empty() {
                // Members that load the pages with their assets: the request bars of the first
                // two lines are not what decided on them, their views are.
                let views =
                    self.view_evidence(now_ns, &viewers, idx.len(), &page_ids, &names_of_sites);
                lines.splice(0..2, views);
            }
            if basis == Basis::Log {
                lines.push(self.served_line(&members));
            }
            lines
        };
        evidence.extend(pretender);
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

    /// What the server answered the members, from its access log: errors and bytes sent.
    fn served_line(&self, members: &BTreeSet<IpAddr>) -> String {
        let (mut requests, mut errors, mut bytes) = (0.0, 0.0, 0.0);
        for s in members.iter().filter_map(|m| self.sources.get(m)) {
            requests += s.requests;
            errors += s.errors;
            bytes += s.bytes;
        }
        let share = if requests > 0.0 {
            errors / requests
        } else {
            0.0
        };
        format!(
            "from the web server's access log: it sent the members {:.1} MB in the last {}s and answered {:.0}% of their requests with an error status (4xx/5xx)",
            bytes / 1e6,
            self.cfg.window.as_secs(),
            share * 100.0
        )
    }

    /// The evidence lines of a request swarm.
    fn request_evidence(
        &self,
        members: &BTreeSet<IpAddr>,
        mean_req: f64,
        names: &[String],
        Load {
            rate,
            baseline,
            spike,
        }: Load,
        top_ua: f64,
    ) -> Vec<String> {
        vec![
            format!(
                "{} sources each sent >= {:.0} requests in the last {}s (mean {:.0}) to <= {} pages of {}",
                members.len(),
                self.cfg.min_requests,
                self.cfg.window.as_secs(),
                mean_req,
                self.cfg.max_pages,
                names.join(" and ")
            ),
            format!(
                ">= {:.0}% of each source's requests go to those pages, >= {:.0} repeats per page, <= {:.0}% sub-resource requests",
                self.cfg.concentration * 100.0,
                self.cfg.min_repeat,
                self.cfg.max_asset_ratio * 100.0
            ),
            if baseline > 0.0 {
                format!(
                    "the pages get {rate:.1} req/s, {spike:.0}x their baseline of {baseline:.2} req/s"
                )
            } else {
                format!("the pages get {rate:.1} req/s and had no traffic before")
            },
            format!(
                "{:.0}% of the members send the same User-Agent",
                top_ua * 100.0
            ),
        ]
    }

    /// Records `found`: merged into the swarm sharing a page with it, or a new swarm. Returns
    /// the swarm if it is new or gained members.
    pub(super) fn merge(&mut self, found: Found, now_ns: u64) -> Option<Swarm> {
        let Found {
            basis,
            members,
            member_site,
            sites,
            pages,
            rate,
            onset,
            confidence,
            evidence,
        } = found;
        // The fingerprints the members showed, as the detector knows them now.
        let member_ja4 = self.member_ja4(&members);
        let existing = self
            .swarms
            .iter()
            .position(|s| s.pages.iter().any(|p| pages.contains(p)));
        match existing {
            Some(k) => {
                let s = &mut self.swarms[k];
                let before = s.members.len();
                s.members.extend(members.iter().copied());
                s.active.extend(members.iter().copied());
                s.member_site.extend(member_site);
                s.member_ja4.extend(member_ja4);
                s.sites = sites_by_members(&s.member_site);
                if let Some(first) = s.sites.first() {
                    s.site = *first;
                }
                s.last_active_ns = now_ns;
                for p in pages {
                    if !s.pages.contains(&p) {
                        s.pages.push(p);
                    }
                }
                s.rate_rps = rate;
                s.confidence = s.confidence.max(confidence);
                // The evidence of the strongest tick stays: blocked members' counts decay, and
                // "2 views of /gallery/1" would belittle the attack that was. Its first line
                // speaks of that tick's cluster, after the count of every member.
                const TICK: &str = "at its strongest tick ";
                if rate >= s.peak_rps {
                    s.peak_rps = rate;
                    s.evidence = evidence;
                    s.evidence.extend(s.ja4_evidence());
                } else if let Some(first) = s.evidence.first_mut()
                    && let Some((_, tick)) = first.split_once(TICK)
                {
                    *first = tick.to_owned();
                }
                if let Some(first) = s.evidence.first_mut() {
                    *first = format!("{} sources in all; {TICK}{first}", s.members.len());
                }
                s.onset_ns = s.onset_ns.min(onset);
                (s.members.len() != before).then(|| s.clone())
            }
            None => {
                let mut s = Swarm {
                    id: self.next_swarm,
                    basis,
                    site: sites[0],
                    sites,
                    member_site,
                    member_ja4,
                    pages,
                    active: members.clone(),
                    members,
                    onset_ns: onset,
                    detected_ns: now_ns,
                    last_active_ns: now_ns,
                    rate_rps: rate,
                    peak_rps: rate,
                    confidence,
                    evidence,
                };
                s.evidence.extend(s.ja4_evidence());
                self.next_swarm += 1;
                self.swarms.push(s.clone());
                Some(s)
            }
        }
    }
}
