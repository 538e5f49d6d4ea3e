//! Policy: a swarm becomes block rules — each member, scoped to the attacked site, with a TTL
//! that grows on repeat offences; a whole /24 (IPv4) or /64 (IPv6) only when every source ever
//! seen from it is a member. Guards (the one [`Guards`] every producer of rules passes): the
//! allow list and the host's own addresses are never covered, nor is a prefix wider than the
//! bound; new rules per minute are capped, and an impact preview — the share of recent
//! requests from non-members to the site that the rules would have dropped — over a bound stops
//! the push (it is reported instead).
//!
//! A member is *covered* only once its rule is in the kernel ([`Policy::landed`]). A planned
//! rule is *pending* until then: not planned twice, and released by [`Policy::abandon`] when
//! its push fails or is refused, or its plan ages out, so the member is planned again.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque},
    net::IpAddr,
    time::Duration,
};

use ipnet::IpNet;

use crate::{
    Proto, Target,
    detect::{Detector, Site, Swarm},
    guard::Guards,
};

/// Tuning of the policy.
#[derive(Clone, Debug, PartialEq)]
pub struct PolicyConfig {
    /// TTL of a first offence.
    pub base_ttl: Duration,
    /// TTL cap (it doubles per repeat offence).
    pub max_ttl: Duration,
    /// New rules per minute, at most.
    pub max_rules_per_minute: usize,
    /// Largest acceptable share of non-member requests the rules would drop.
    pub max_impact: f64,
    /// Members a /24 or /64 needs before it is collapsed into one rule.
    pub collapse_min: usize,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            base_ttl: Duration::from_secs(600),
            max_ttl: Duration::from_secs(24 * 3600),
            max_rules_per_minute: 10_000,
            max_impact: 0.01,
            collapse_min: 2,
        }
    }
}

/// A rule the policy wants in the kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedRule {
    /// Source address or prefix.
    pub target: Target,
    /// The attacked site: destination address and port; protocol TCP.
    pub site: Site,
    /// Protocol of the scope.
    pub proto: Proto,
    /// Lifetime.
    pub ttl: Duration,
    /// The swarm that caused it.
    pub swarm: u64,
}

/// What the policy decided for one swarm.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    /// Rules to push.
    pub rules: Vec<PlannedRule>,
    /// Members or rules not pushed, with why.
    pub refused: Vec<(String, String)>,
    /// Earlier single-address rules (site, target) that a prefix rule of this plan replaces.
    pub superseded: Vec<(Site, Target)>,
    /// Share of non-member requests to the site that the rules cover (the impact preview).
    pub impact: f64,
}

/// The policy's memory: offences per source, rules in the kernel and planned, the rate limit.
pub struct Policy {
    cfg: PolicyConfig,
    /// Offences per source (rules of theirs that reached the kernel), and the event time of
    /// the last one.
    offences: HashMap<IpAddr, (u32, u64)>,
    /// Members whose rule is in the kernel, per site.
    covered: HashSet<(IpAddr, Site)>,
    /// Members whose rule is planned and not yet in the kernel, per site.
    pending: HashSet<(IpAddr, Site)>,
    /// Single-address rules in the kernel, per site: a later prefix rule replaces those inside.
    singles: HashMap<Site, Vec<IpAddr>>,
    /// Prefix rules in the kernel, per site: members inside them need no rule of their own.
    prefixes: HashMap<Site, Vec<IpNet>>,
    recent: VecDeque<u64>,
}

fn prefix_of(ip: IpAddr) -> IpNet {
    let len = if ip.is_ipv4() { 24 } else { 64 };
    IpNet::new(ip, len)
        .map(|n| n.trunc())
        .unwrap_or_else(|_| IpNet::from(ip))
}

impl Policy {
    /// A policy with `cfg`.
    pub fn new(cfg: PolicyConfig) -> Self {
        Self {
            cfg,
            offences: HashMap::new(),
            covered: HashSet::new(),
            pending: HashSet::new(),
            singles: HashMap::new(),
            prefixes: HashMap::new(),
            recent: VecDeque::new(),
        }
    }

    /// Plans rules for the active members of `swarm` neither covered nor pending; what
    /// `guards` refuses is reported, not planned. `now_ns` is event time (for the rate limit).
    /// Every planned rule must come back through [`Policy::landed`] or [`Policy::abandon`].
    pub fn plan(
        &mut self,
        swarm: &Swarm,
        detector: &Detector,
        guards: &Guards,
        now_ns: u64,
    ) -> Plan {
        let mut plan = Plan::default();
        let site_of = |m: &IpAddr| swarm.member_site.get(m).copied().unwrap_or(swarm.site);
        let mut fresh: Vec<(Site, IpAddr)> = Vec::new();
        for m in &swarm.active {
            let site = site_of(m);
            if self.covered.contains(&(*m, site)) || self.pending.contains(&(*m, site)) {
                continue;
            }
            if self
                .prefixes
                .get(&site)
                .is_some_and(|v| v.iter().any(|n| n.contains(m)))
            {
                self.covered.insert((*m, site));
                continue;
            }
            if let Err(e) = guards.check(&Target::Addr(*m), false) {
                plan.refused.push((m.to_string(), e.to_string()));
                continue;
            }
            fresh.push((site, *m));
        }
        if fresh.is_empty() {
            return plan;
        }
        // Who else lives in each /24 or /64: a prefix is collapsed only if all are members.
        // (seen, members); a source may come twice (requests and handshakes): count it once.
        let mut seen: BTreeMap<IpNet, (usize, usize)> = BTreeMap::new();
        // The detector's record of each prefix's residents counts too: the source table may
        // have evicted a quiet neighbour under a flood.
        let addrs: BTreeSet<IpAddr> = detector
            .sources()
            .map(|(a, _, _)| a)
            .chain(detector.neighbours())
            .collect();
        for addr in addrs {
            let e = seen.entry(prefix_of(addr)).or_default();
            e.0 += 1;
            if swarm.members.contains(&addr) {
                e.1 += 1;
            }
        }
        // Rules are scoped to the site each member attacks: group by site, then by prefix.
        let mut by_prefix: BTreeMap<(Site, IpNet), Vec<IpAddr>> = BTreeMap::new();
        for (site, m) in &fresh {
            by_prefix
                .entry((*site, prefix_of(*m)))
                .or_default()
                .push(*m);
        }
        let mut targets: Vec<(Site, Target, Vec<IpAddr>)> = Vec::new();
        for ((site, net), ms) in by_prefix {
            let (n_seen, n_members) = seen.get(&net).copied().unwrap_or((0, 0));
            // A prefix whose earlier members already have single rules can still collapse now
            // (every source seen in it turned out to be a member): count them in.
            let earlier = self
                .singles
                .get(&site)
                .map_or(0, |v| v.iter().filter(|a| net.contains(*a)).count());
            let safe = n_seen == n_members
                && n_members.max(ms.len() + earlier) >= self.cfg.collapse_min
                && guards.check(&Target::Net(net), false).is_ok();
            if safe {
                targets.push((site, Target::Net(net), ms));
            } else {
                targets.extend(ms.into_iter().map(|m| (site, Target::Addr(m), vec![m])));
            }
        }
        // Impact preview: requests from non-members to the attacked sites that the targets
        // would drop.
        let (mut covered_load, mut legit_load) = (0.0, 0.0);
        for (addr, site, load) in detector.sources() {
            let Some(site) = site else { continue };
            if !swarm.sites.contains(&site) || swarm.members.contains(&addr) {
                continue;
            }
            legit_load += load;
            if targets
                .iter()
                .any(|(s, t, _)| *s == site && t.contains(addr))
            {
                covered_load += load;
            }
        }
        plan.impact = if legit_load > 0.0 {
            covered_load / legit_load
        } else {
            0.0
        };
        if plan.impact > self.cfg.max_impact {
            plan.refused.push((
                format!("swarm {}", swarm.id),
                format!(
                    "the rules would drop {:.1}% of recent legitimate requests to the site (bound {:.1}%)",
                    plan.impact * 100.0,
                    self.cfg.max_impact * 100.0
                ),
            ));
            return plan;
        }
        // Rate limit over the last minute of event time.
        while self
            .recent
            .front()
            .is_some_and(|t| now_ns.saturating_sub(*t) > 60_000_000_000)
        {
            self.recent.pop_front();
        }
        for (site, target, members) in targets {
            if self.recent.len() >= self.cfg.max_rules_per_minute {
                plan.refused.push((
                    target.to_string(),
                    format!(
                        "more than {} new rules in a minute",
                        self.cfg.max_rules_per_minute
                    ),
                ));
                continue;
            }
            let offences = members
                .iter()
                .map(|m| self.offences.get(m).map_or(0, |o| o.0))
                .max()
                .unwrap_or(0);
            let ttl = self
                .cfg
                .base_ttl
                .saturating_mul(1u32 << offences.min(16))
                .min(self.cfg.max_ttl);
            for m in &members {
                self.pending.insert((*m, site));
            }
            // The single-address rules in the kernel that this prefix replaces (removed with
            // its push).
            if let Target::Net(net) = target
                && let Some(singles) = self.singles.get(&site)
            {
                plan.superseded.extend(
                    singles
                        .iter()
                        .filter(|a| net.contains(*a))
                        .map(|a| (site, Target::Addr(*a))),
                );
            }
            self.recent.push_back(now_ns);
            plan.rules.push(PlannedRule {
                target,
                site,
                proto: Proto::Tcp,
                ttl,
                swarm: swarm.id,
            });
        }
        plan
    }

    /// `rule` is in the kernel (event time `now_ns`): its members are covered and count an
    /// offence each; a prefix replaces the single-address rules inside it.
    pub fn landed(&mut self, rule: &PlannedRule, now_ns: u64) {
        let site = rule.site;
        let members: Vec<IpAddr> = self
            .pending
            .iter()
            .filter(|(a, s)| *s == site && rule.target.contains(*a))
            .map(|(a, _)| *a)
            .collect();
        for m in members {
            self.pending.remove(&(m, site));
            self.covered.insert((m, site));
            let o = self.offences.entry(m).or_default();
            *o = (o.0 + 1, now_ns);
        }
        let singles = self.singles.entry(site).or_default();
        match rule.target {
            Target::Addr(a) => singles.push(a),
            Target::Net(net) => {
                singles.retain(|a| !net.contains(a));
                self.prefixes.entry(site).or_default().push(net);
            }
        }
    }

    /// `rule` will not reach the kernel (its push failed or was refused, or its plan aged out):
    /// its members are planned again while they keep attacking.
    pub fn abandon(&mut self, rule: &PlannedRule) {
        self.pending
            .retain(|(a, s)| !(*s == rule.site && rule.target.contains(*a)));
    }

    /// Forgets offences older than twice the TTL cap (event time `now_ns`): a source that has
    /// behaved that long starts over. Keeps the policy's memory bounded by recent offenders.
    pub fn prune(&mut self, now_ns: u64) {
        let keep_ns = self.cfg.max_ttl.saturating_mul(2).as_nanos() as u64;
        self.offences
            .retain(|_, (_, last)| now_ns.saturating_sub(*last) <= keep_ns);
    }

    /// Sources with offences on record.
    pub fn offenders(&self) -> usize {
        self.offences.len()
    }

    /// Forgets that `target` is covered at `site` (its rule expired): a member inside it that
    /// resumes the attack is blocked again, for longer. Offence counts are kept.
    pub fn uncover(&mut self, site: Site, target: Target) {
        self.covered
            .retain(|(a, s)| !(*s == site && target.contains(*a)));
        if let Some(v) = self.singles.get_mut(&site) {
            v.retain(|a| !target.contains(*a));
        }
        if let Some(v) = self.prefixes.get_mut(&site) {
            v.retain(|n| *n != target.net());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn swarm(member: IpAddr) -> Swarm {
        Swarm {
            id: 1,
            basis: crate::detect::Basis::Requests,
            site: ("203.0.113.10".parse().unwrap(), 80),
            sites: vec![("203.0.113.10".parse().unwrap(), 80)],
            member_site: BTreeMap::new(),
            member_ja4: BTreeMap::new(),
            pages: vec![],
            members: [member].into(),
            active: [member].into(),
            onset_ns: 0,
            detected_ns: 0,
            last_active_ns: 0,
            rate_rps: 0.0,
            peak_rps: 0.0,
            confidence: 1.0,
            evidence: vec![],
        }
    }

    #[test]
    fn ttl_doubles_per_repeat_and_resets_once_offences_are_pruned() {
        let cfg = PolicyConfig::default();
        let (base, cap) = (cfg.base_ttl, cfg.max_ttl);
        let mut p = Policy::new(cfg);
        let det = Detector::new(crate::detect::DetectorConfig::default());
        let bot: IpAddr = "192.0.2.7".parse().unwrap();
        let s = swarm(bot);
        let mut ttls = Vec::new();
        let g = Guards::default();
        for round in 0..3u64 {
            let now = round * 1_000_000_000;
            let plan = p.plan(&s, &det, &g, now);
            ttls.push(plan.rules[0].ttl);
            // Pending until it lands, covered until its rule expires: nothing new is planned
            // meanwhile.
            assert!(p.plan(&s, &det, &g, now).rules.is_empty());
            p.landed(&plan.rules[0], now);
            assert!(p.plan(&s, &det, &g, now).rules.is_empty());
            p.uncover(s.site, Target::Addr(bot));
        }
        assert_eq!(ttls, vec![base, base * 2, base * 4]);
        assert_eq!(p.offenders(), 1);
        let much_later = cap.saturating_mul(3).as_nanos() as u64;
        p.prune(much_later);
        assert_eq!(p.offenders(), 0);
        assert_eq!(p.plan(&s, &det, &g, much_later).rules[0].ttl, base);
    }

    #[test]
    fn an_abandoned_rule_is_planned_again_with_the_same_ttl() {
        let mut p = Policy::new(PolicyConfig::default());
        let det = Detector::new(crate::detect::DetectorConfig::default());
        let s = swarm("192.0.2.7".parse().unwrap());
        let g = Guards::default();
        let first = p.plan(&s, &det, &g, 0);
        assert_eq!(first.rules.len(), 1);
        p.abandon(&first.rules[0]);
        let again = p.plan(&s, &det, &g, 1);
        assert_eq!(
            again.rules, first.rules,
            "no offence counted for a rule never pushed"
        );
    }

    #[test]
    fn a_prefix_is_not_collapsed_over_a_legitimate_neighbour_the_flood_evicted() {
        use crate::l7::RequestEvent;
        let cfg = crate::detect::DetectorConfig {
            max_sources: 300,
            ..crate::detect::DetectorConfig::default()
        };
        let mut det = Detector::new(cfg);
        let req = |ts_s: u64, src: IpAddr| RequestEvent {
            ts_ns: ts_s * 1_000_000_000,
            src,
            dst: "203.0.113.10".parse().unwrap(),
            dst_port: 80,
            host: Some("shop.example".into()),
            path: "/gallery/7".into(),
            ..RequestEvent::default()
        };
        let neighbours: [IpAddr; 2] = [
            "192.0.2.200".parse().unwrap(),
            "2001:db8:bad:1::ffff".parse().unwrap(),
        ];
        for n in neighbours {
            det.observe(&req(1, n));
        }
        let bots: Vec<IpAddr> = (1..=20u16)
            .flat_map(|h| {
                [
                    IpAddr::from([192, 0, 2, h as u8]),
                    IpAddr::from([0x2001, 0xdb8, 0xbad, 1, 0, 0, 0, h]),
                ]
            })
            .collect();
        for b in &bots {
            det.observe(&req(2, *b));
        }
        // A flood of one-off sources elsewhere pushes everyone out of the source table.
        for i in 0..3000u32 {
            det.observe(&req(3, IpAddr::V4(((10u32 << 24) | i).into())));
        }
        let tracked: BTreeSet<IpAddr> = det.sources().map(|(a, _, _)| a).collect();
        assert!(
            neighbours.iter().all(|n| !tracked.contains(n)),
            "the flood was meant to evict the neighbours"
        );
        let mut s = swarm(bots[0]);
        s.members = bots.iter().copied().collect();
        s.active = s.members.clone();
        let plan = Policy::new(PolicyConfig::default()).plan(&s, &det, &Guards::default(), 0);
        let nets: Vec<&PlannedRule> = plan
            .rules
            .iter()
            .filter(|r| matches!(r.target, Target::Net(_)))
            .collect();
        assert!(nets.is_empty(), "collapsed over a neighbour: {nets:?}");
        assert_eq!(plan.rules.len(), bots.len());
    }
}
