//! The swarm detector's side: pushing a swarm's rules ([`Enforcer`]) and the swarm views.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use super::{Daemon, Inner, OnRefusal, RuleRequest, SWARM_ACTOR, internal};
use crate::{
    Action, Mode, RuleSpec, Scope, Target,
    api::{
        Failure,
        types::{Ja4View, PageView, PlannedView, RefusedView, ScopeView, SwarmView},
    },
    daemon::swarms::{Book, Counters, Enforcer, PushOutcome, Pushed, Tracked},
    dataplane::monotonic_ns,
    detect::{Site, Swarm},
    guard::Guards,
    policy::PlannedRule,
    store::Op,
};

fn rfc3339_ms(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

fn site_name(site: Site) -> String {
    std::net::SocketAddr::from(site).to_string()
}

/// The journal reason of a swarm's rules: which swarm, how big, what it hammers.
fn swarm_reason(s: &Swarm) -> String {
    let names = s.page_names();
    let pages: Vec<String> = names
        .iter()
        .take(3)
        .map(|(host, path)| format!("{}{path}", host.unwrap_or("")))
        .collect();
    format!(
        "swarm {}: {} sources hammering {}{} on {} (confidence {:.2})",
        s.id,
        s.members.len(),
        pages.join(", "),
        if names.len() > 3 { ", ..." } else { "" },
        s.sites
            .iter()
            .map(|x| site_name(*x))
            .collect::<Vec<_>>()
            .join(" and "),
        s.confidence
    )
}

impl Inner {
    /// Commits a swarm's planned rules (and the removal of the single-address rules a prefix
    /// replaces) as one change by [`SWARM_ACTOR`], through the same guards as an admin's rules.
    pub fn push_swarm(
        &mut self,
        swarm: &Swarm,
        rules: &[PlannedRule],
        superseded: &[(Site, Target)],
    ) -> Result<PushOutcome, Failure> {
        let reason = swarm_reason(swarm);
        let mut ops = Vec::new();
        for (site, t) in superseded {
            if let Some(r) = self.store.state().rules.values().find(|r| {
                r.actor == SWARM_ACTOR
                    && r.target == *t
                    && r.scope.dst == Some(site.0)
                    && r.scope.port == Some(site.1)
            }) {
                ops.push(Op::RemoveRule(r.clone()));
            }
        }
        let requests: Vec<RuleRequest> = rules
            .iter()
            .map(|r| RuleRequest {
                spec: RuleSpec {
                    target: r.target,
                    action: Action::Drop,
                    scope: Scope {
                        dst: Some(r.site.0),
                        proto: Some(r.proto),
                        port: Some(r.site.1),
                    },
                    // Whole seconds, as the journal keeps them.
                    ttl: Some(Duration::from_secs(r.ttl.as_secs().max(1))),
                },
                force: false,
            })
            .collect();
        let done =
            self.commit_rules(SWARM_ACTOR, Some(&reason), &requests, ops, OnRefusal::Skip)?;
        let out = PushOutcome {
            landed: done
                .added
                .iter()
                .map(|(n, rec)| Pushed {
                    id: rec.id,
                    target: rules[*n].target,
                    site: rules[*n].site,
                    expires: rec.expires_at.unwrap_or(rec.created_at),
                })
                .collect(),
            refused: done
                .refused
                .into_iter()
                .map(|(n, e)| (rules[n].target.to_string(), e.to_string()))
                .collect(),
            change: done.change.as_ref().map(|c| c.id),
        };
        if let Some(change) = out.change {
            tracing::info!(
                swarm = swarm.id,
                change,
                rules = out.landed.len(),
                removed = superseded.len(),
                "swarm rules in the kernel"
            );
        }
        Ok(out)
    }
}

impl Enforcer for Daemon {
    fn mode(&self) -> Mode {
        self.with(|i| i.store.state().mode)
    }

    fn guards(&self) -> Guards {
        self.with(|i| i.guards())
    }

    fn push(
        &self,
        swarm: &Swarm,
        rules: &[PlannedRule],
        superseded: &[(Site, Target)],
    ) -> Result<PushOutcome, String> {
        self.with(|i| i.push_swarm(swarm, rules, superseded))
            .map_err(|e| e.to_string())
    }

    fn in_force(&self, ids: &[u64]) -> Vec<bool> {
        self.with(|i| {
            ids.iter()
                .map(|id| i.store.state().rules.contains_key(id))
                .collect()
        })
    }
}

impl Daemon {
    /// The swarm book and the pipeline counters, for the pipeline to fill.
    pub fn swarm_state(&self) -> (Arc<Mutex<Book>>, Arc<Counters>) {
        (Arc::clone(&self.book), Arc::clone(&self.counters))
    }

    pub(super) fn swarm_view(&self, t: &Tracked, hits: &BTreeMap<u64, u64>) -> SwarmView {
        let (now_mono, now) = (monotonic_ns(), SystemTime::now());
        let wall = |ns: u64| rfc3339_ms(now - Duration::from_nanos(now_mono.saturating_sub(ns)));
        let s = &t.swarm;
        let site_scope = |site: Site, proto: &str| ScopeView {
            dst: Some(site.0.to_string()),
            proto: Some(proto.into()),
            port: Some(site.1),
        };
        SwarmView {
            id: s.id,
            site: site_name(s.site),
            sites: s.sites.iter().map(|x| site_name(*x)).collect(),
            basis: s.basis.name().into(),
            state: t.state().into(),
            pages: s
                .page_names()
                .into_iter()
                .map(|(host, path)| PageView {
                    host: host.map(String::from),
                    path: path.into(),
                })
                .collect(),
            members: crate::daemon::swarms::member_strings(s),
            active: s.active.len(),
            onset: wall(s.onset_ns),
            detected: wall(s.detected_ns),
            blocked_at: t.blocked_ns.map(wall),
            time_to_block_ms: t
                .blocked_ns
                .map(|b| b.saturating_sub(s.detected_ns) / 1_000_000),
            onset_to_block_ms: t
                .blocked_ns
                .map(|b| b.saturating_sub(s.onset_ns) / 1_000_000),
            rate_rps: s.rate_rps,
            peak_rps: s.peak_rps,
            confidence: s.confidence,
            evidence: s.evidence.clone(),
            rules: t.rules.iter().map(|p| p.id).collect(),
            dropped: t.rules.iter().filter_map(|p| hits.get(&p.id)).sum(),
            planned: t
                .planned
                .iter()
                .map(|(r, _)| PlannedView {
                    target: r.target.to_string(),
                    scope: site_scope(r.site, &r.proto.to_string()),
                    ttl_s: r.ttl.as_secs(),
                })
                .collect(),
            refused: t
                .refused
                .iter()
                .map(|(target, why)| RefusedView {
                    target: target.clone(),
                    why: why.clone(),
                })
                .collect(),
            rules_pushed: t.pushed_total,
            changes: t.changes.clone(),
            impact: t.impact,
            ja4: s
                .ja4_shares()
                .into_iter()
                .map(|(fp, share)| Ja4View {
                    fingerprint: fp.to_string(),
                    share,
                })
                .collect(),
        }
    }

    /// Packets dropped by the rules in force of `swarms`, by rule id: only those rules are
    /// read (a big block list costs a lookup per rule).
    pub(super) fn dropped_by_rule<'a>(
        &self,
        swarms: impl IntoIterator<Item = &'a Tracked>,
    ) -> Result<BTreeMap<u64, u64>, Failure> {
        let ids: Vec<u64> = swarms
            .into_iter()
            .flat_map(|t| t.rules.iter().map(|p| p.id))
            .collect();
        self.with(|i| {
            Ok(i.dp
                .rule_hits(ids)
                .map_err(internal)?
                .into_iter()
                .map(|(id, h)| (id, h.dropped_packets))
                .collect())
        })
    }
}
