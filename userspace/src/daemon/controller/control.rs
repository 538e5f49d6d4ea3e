//! The API operations: [`Control`] for the daemon.

use std::{collections::BTreeMap, net::IpAddr, sync::atomic::Ordering, time::SystemTime};

use super::{
    Daemon, OnRefusal, internal, store_failure,
    views::{mode_name, rfc3339, rule_view},
};
use crate::{
    Mode, Proto, Target,
    api::{
        Actor, Control, Failure,
        types::{
            AddRules, AllowRequest, AllowView, ChangeResult, ChangeView, DeleteRules, IfaceView,
            ModeView, PipelineView, RefusedView, RuleCounts, RuleView, SourceView, Status,
            SwarmView, SwarmsView, TopQuery, TopView,
        },
        types::{
            PardonRequest, PardonResult, PreviewItem, RulesPreview, VerdictQuery, VerdictView,
        },
    },
    store::{AllowRecord, Change, Op, RuleRecord, Store},
    verdict::{Probe, Stage},
};

fn result(change: &Change, rules: Vec<u64>) -> ChangeResult {
    ChangeResult {
        change_id: change.id,
        rules,
        summary: Store::summary(change),
        ..ChangeResult::default()
    }
}

impl Control for Daemon {
    fn status(&self) -> Result<Status, Failure> {
        self.with(|i| {
            let stats = i.dp.stats().map_err(internal)?;
            let stats = swarmwall_maps::Stat::ALL
                .iter()
                .map(|s| (s.name().to_string(), stats.counters[*s as usize]))
                .collect();
            let rules = i.store.state().rules.values();
            let exact = rules
                .clone()
                .filter(|r| matches!(r.target, Target::Addr(_)))
                .count();
            Ok(Status {
                version: env!("CARGO_PKG_VERSION").into(),
                abi: swarmwall_maps::ABI_VERSION,
                uptime_s: self.started.elapsed().as_secs(),
                mode: mode_name(i.store.state().mode).into(),
                interfaces: i
                    .dp
                    .attachments()
                    .map(|(name, m)| IfaceView {
                        name: name.into(),
                        mode: if m == aya::programs::XdpMode::Skb {
                            "generic"
                        } else {
                            "driver"
                        }
                        .into(),
                    })
                    .collect(),
                stats,
                rules: RuleCounts {
                    exact,
                    prefix: i.store.state().rules.len() - exact,
                },
                allow: i.config.allow.len() + i.store.state().allow.len(),
                pin_dir: i
                    .dp
                    .pin_dir()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
                adopted: i.dp.adopted(),
                warnings: self
                    .warnings
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone(),
                firewall: i
                    .mirror
                    .as_ref()
                    .map(|m| m.view())
                    .or_else(|| i.mirror_out.as_ref().map(|(_, v)| v.clone())),
            })
        })
    }

    fn top(&self, q: &TopQuery) -> Result<TopView, Failure> {
        let by = q.by.as_deref().unwrap_or("pps");
        if !matches!(by, "pps" | "bps" | "drops") {
            return Err(Failure::BadRequest(format!(
                "by '{by}': expected pps, bps or drops"
            )));
        }
        let window = q.window_s.unwrap_or(10);
        if window == 0 || window > 3600 {
            return Err(Failure::BadRequest(format!(
                "window_s {window}: expected 1 to 3600"
            )));
        }
        let limit = q.limit.unwrap_or(20).min(10_000);
        let mut view =
            self.top
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .view(by, window as f64, limit);
        self.with(|i| {
            for t in &mut view.sources {
                if let Ok(ip) = t.addr.parse::<IpAddr>() {
                    t.rules = i.dp.table().rules_covering(ip);
                }
            }
        });
        Ok(view)
    }

    fn rules(&self) -> Result<Vec<RuleView>, Failure> {
        self.with(|i| {
            let hits: BTreeMap<u64, swarmwall_maps::RuleHits> =
                i.dp.rules()
                    .map_err(internal)?
                    .into_iter()
                    .map(|r| (r.id, r.hits))
                    .collect();
            Ok(i.store
                .state()
                .rules
                .values()
                .map(|r| {
                    let mut v = rule_view(r, hits.get(&r.id).copied().unwrap_or_default());
                    if hits.contains_key(&r.id) {
                        v.enforced_by.push("xdp".into());
                    }
                    if i.mirror.as_ref().is_some_and(|m| m.holds(r.id)) {
                        v.enforced_by.push("nftables".into());
                    }
                    v
                })
                .collect())
        })
    }

    fn add_rules(&self, actor: &Actor, req: AddRules) -> Result<ChangeResult, Failure> {
        if req.rules.is_empty() {
            return Err(Failure::BadRequest("no rules given".into()));
        }
        crate::api::check_reason(req.reason.as_deref())?;
        self.with(|i| {
            let who = actor.name();
            let mut plan = i.plan_rules(&req, &who, SystemTime::now());
            if !plan.refused.is_empty() {
                let n = plan.refused.len();
                let (_, first) = plan.refused.swap_remove(0);
                if n == 1 {
                    return Err(first);
                }
                let more = format!(
                    " (and {} more refused; `swarmwall block import --dry-run` lists them all)",
                    n - 1
                );
                return Err(match first {
                    Failure::BadRequest(m) => Failure::BadRequest(m + &more),
                    Failure::Conflict(m) => Failure::Conflict(m + &more),
                    e => e,
                });
            }
            let updated: Vec<u64> = plan.updated.iter().map(|(r, _)| r.id).collect();
            let unchanged: Vec<u64> = plan.unchanged.iter().map(|(_, id)| *id).collect();
            if plan.ops.is_empty() {
                return Ok(ChangeResult {
                    change_id: 0,
                    rules: vec![],
                    summary: format!(
                        "nothing to change: {} already in force as asked",
                        if unchanged.len() == 1 {
                            format!("the rule (id {}) is", unchanged[0])
                        } else {
                            format!("{} rules are", unchanged.len())
                        }
                    ),
                    updated,
                    unchanged,
                });
            }
            let change = i
                .commit_rules(&who, req.reason.as_deref(), &[], plan.ops, OnRefusal::Abort)?
                .change
                .ok_or_else(|| Failure::Internal("no change committed".into()))?;
            let mut r = result(&change, plan.added);
            if !unchanged.is_empty() {
                r.summary
                    .push_str(&format!("; {} unchanged", unchanged.len()));
            }
            r.updated = updated;
            r.unchanged = unchanged;
            Ok(r)
        })
    }

    fn delete_rules(&self, actor: &Actor, req: DeleteRules) -> Result<ChangeResult, Failure> {
        crate::api::check_reason(req.reason.as_deref())?;
        let targets = parse_targets("target", &req.targets)?;
        self.with(|i| {
            let rules = &i.store.state().rules;
            let victims: Vec<RuleRecord> = if req.all {
                rules.values().cloned().collect()
            } else {
                let mut v: BTreeMap<u64, RuleRecord> = BTreeMap::new();
                for id in &req.ids {
                    let r = rules
                        .get(id)
                        .ok_or_else(|| Failure::NotFound(format!("no rule with id {id}")))?;
                    v.insert(r.id, r.clone());
                }
                for t in &targets {
                    let mut found = false;
                    for r in rules.values().filter(|r| r.target == *t) {
                        found = true;
                        v.insert(r.id, r.clone());
                    }
                    if !found {
                        return Err(Failure::NotFound(format!(
                            "no rule has the target {t} (`swarmwall block list --target {t}` \
                             shows the rules that cover it)"
                        )));
                    }
                }
                v.into_values().collect()
            };
            if victims.is_empty() {
                return Err(Failure::BadRequest("no rules to remove".into()));
            }
            if victims.len() > 1 && !req.yes {
                return Err(Failure::Conflict(format!(
                    "this would remove {} rules; confirm with yes (it stays undoable with `swarmwall rules undo`)",
                    victims.len()
                )));
            }
            let ids = victims.iter().map(|r| r.id).collect();
            let ops = victims.into_iter().map(Op::RemoveRule).collect();
            let change = i.commit_apply(&actor.name(), req.reason.as_deref(), ops, None)?;
            Ok(result(&change, ids))
        })
    }

    fn allow_list(&self) -> Result<Vec<AllowView>, Failure> {
        self.with(|i| {
            let mut v: Vec<AllowView> = i
                .config
                .allow
                .iter()
                .map(|t| AllowView {
                    target: t.to_string(),
                    created_at: rfc3339(SystemTime::UNIX_EPOCH),
                    actor: "config".into(),
                    reason: None,
                    from_config: true,
                })
                .collect();
            v.extend(i.store.state().allow.values().map(|a| AllowView {
                target: a.target.to_string(),
                created_at: rfc3339(a.created_at),
                actor: a.actor.clone(),
                reason: a.reason.clone(),
                from_config: false,
            }));
            Ok(v)
        })
    }

    fn allow_add(&self, actor: &Actor, req: AllowRequest) -> Result<ChangeResult, Failure> {
        crate::api::check_reason(req.reason.as_deref())?;
        let target: Target = req
            .target
            .parse()
            .map_err(|e: crate::AddrError| Failure::BadRequest(e.to_string()))?;
        self.with(|i| {
            if i.config.allow.contains(&target) {
                return Err(Failure::Conflict(format!(
                    "{target} is already allowed by the config file"
                )));
            }
            let rec = AllowRecord {
                target,
                created_at: SystemTime::now(),
                actor: actor.name(),
                reason: req.reason.clone(),
            };
            let change = i.commit_apply(
                &actor.name(),
                req.reason.as_deref(),
                vec![Op::AddAllow(rec)],
                None,
            )?;
            Ok(result(&change, vec![]))
        })
    }

    fn allow_delete(&self, actor: &Actor, req: AllowRequest) -> Result<ChangeResult, Failure> {
        crate::api::check_reason(req.reason.as_deref())?;
        let target: Target = req
            .target
            .parse()
            .map_err(|e: crate::AddrError| Failure::BadRequest(e.to_string()))?;
        self.with(|i| {
            let Some(rec) = i.store.state().allow.get(&target).cloned() else {
                return Err(if i.config.allow.contains(&target) {
                    Failure::Conflict(format!(
                        "{target} comes from the config file; remove it there"
                    ))
                } else {
                    Failure::NotFound(format!("{target} is not on the allow list"))
                });
            };
            let change = i.commit_apply(
                &actor.name(),
                req.reason.as_deref(),
                vec![Op::RemoveAllow(rec)],
                None,
            )?;
            Ok(result(&change, vec![]))
        })
    }

    fn mode(&self) -> Result<ModeView, Failure> {
        self.with(|i| {
            Ok(ModeView {
                mode: mode_name(i.store.state().mode).into(),
                reason: None,
            })
        })
    }

    fn set_mode(&self, actor: &Actor, req: ModeView) -> Result<ChangeResult, Failure> {
        crate::api::check_reason(req.reason.as_deref())?;
        let to = match req.mode.as_str() {
            "enforce" => Mode::Enforce,
            "observe" => Mode::Observe,
            m => {
                return Err(Failure::BadRequest(format!(
                    "mode '{m}': expected enforce or observe"
                )));
            }
        };
        self.with(|i| {
            let from = i.store.state().mode;
            if from == to {
                return Err(Failure::Conflict(format!(
                    "already in {} mode",
                    mode_name(to)
                )));
            }
            let change = i.commit_apply(
                &actor.name(),
                req.reason.as_deref(),
                vec![Op::SetMode { from, to }],
                None,
            )?;
            Ok(result(&change, vec![]))
        })
    }

    fn history(&self, limit: Option<usize>) -> Result<Vec<ChangeView>, Failure> {
        self.with(|i| {
            let n = limit.unwrap_or(50);
            Ok(i.store
                .changes()
                .iter()
                .rev()
                .take(n)
                .map(|c| ChangeView {
                    id: c.id,
                    time: rfc3339(c.at),
                    actor: c.actor.clone(),
                    reason: c.reason.clone(),
                    summary: Store::summary(c),
                    ops: c.ops.len(),
                    undoes: c.undoes,
                    undone_by: i.store.undone_by(c.id),
                })
                .collect())
        })
    }

    fn undo(&self, actor: &Actor, change_id: u64) -> Result<ChangeResult, Failure> {
        self.with(|i| {
            let ops = i.store.undo_ops(change_id).map_err(store_failure)?;
            let ids = ops
                .iter()
                .filter_map(|o| match o {
                    Op::AddRule(r) | Op::RemoveRule(r) => Some(r.id),
                    _ => None,
                })
                .collect();
            let reason = format!("undo change {change_id}");
            let change = i.commit_apply(&actor.name(), Some(&reason), ops, Some(change_id))?;
            Ok(result(&change, ids))
        })
    }

    fn swarms(&self) -> Result<SwarmsView, Failure> {
        let stats = self.with(|i| i.dp.stats()).map_err(internal)?;
        // Book, then daemon state: the order the detector thread takes them in.
        let book = self.book.lock().unwrap_or_else(|p| p.into_inner());
        let hits = self.dropped_by_rule(book.swarms.values())?;
        let c = &self.counters;
        Ok(SwarmsView {
            swarms: book
                .swarms
                .values()
                .map(|t| self.swarm_view(t, &hits))
                .collect(),
            pipeline: PipelineView {
                enabled: book.enabled,
                error: book.error.clone(),
                samples: c.samples.load(Ordering::Relaxed),
                requests: c.requests.load(Ordering::Relaxed),
                unparsed: c.unparsed.load(Ordering::Relaxed),
                queue_overflow: c.overflow.load(Ordering::Relaxed),
                tracked_sources: book.tracked_sources as u64,
                kernel_skipped: stats.counters[swarmwall_maps::Stat::L7Skipped as usize],
                kernel_lost: stats.counters[swarmwall_maps::Stat::L7Lost as usize],
                hellos_reassembled: c.hellos_reassembled.load(Ordering::Relaxed),
                hellos_timed_out: c.hellos_timed_out.load(Ordering::Relaxed),
                hellos_dropped: c.hellos_dropped.load(Ordering::Relaxed),
                sources: c
                    .others
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .iter()
                    .map(|s| SourceView {
                        name: s.name.clone(),
                        read: s.counters.read,
                        requests: s.counters.requests,
                        rejected: s.counters.unparsed,
                        queue_overflow: s.overflow,
                        problem: s.problem.clone(),
                        behind_bytes: s.lag.map(|l| l.behind_bytes),
                        newest_line_age_ms: s
                            .lag
                            .and_then(|l| l.newest_line_ns)
                            .map(|t| age_ms(t, std::time::SystemTime::now())),
                    })
                    .collect(),
            },
        })
    }

    fn swarm(&self, id: u64) -> Result<SwarmView, Failure> {
        let book = self.book.lock().unwrap_or_else(|p| p.into_inner());
        let t = book
            .swarms
            .get(&id)
            .ok_or_else(|| Failure::NotFound(format!("no swarm with id {id}")))?;
        let hits = self.dropped_by_rule([t])?;
        Ok(self.swarm_view(t, &hits))
    }

    fn preview_rules(&self, req: AddRules) -> Result<RulesPreview, Failure> {
        if req.rules.is_empty() {
            return Err(Failure::BadRequest("no rules given".into()));
        }
        self.with(|i| {
            let plan = i.plan_rules(&req, "preview", SystemTime::now());
            let expiry = |t: Option<SystemTime>| t.map(rfc3339);
            let by_id = &i.store.state().rules;
            Ok(RulesPreview {
                added: plan
                    .new
                    .iter()
                    .map(|r| PreviewItem {
                        target: r.target.to_string(),
                        id: None,
                        expires_at: expiry(r.expires_at),
                        previous_expires_at: None,
                    })
                    .collect(),
                updated: plan
                    .updated
                    .iter()
                    .map(|(old, new)| PreviewItem {
                        target: old.target.to_string(),
                        id: Some(old.id),
                        expires_at: expiry(*new),
                        previous_expires_at: expiry(old.expires_at),
                    })
                    .collect(),
                unchanged: plan
                    .unchanged
                    .iter()
                    .map(|(t, id)| PreviewItem {
                        target: t.to_string(),
                        id: by_id.contains_key(id).then_some(*id),
                        expires_at: by_id.get(id).and_then(|r| expiry(r.expires_at)),
                        previous_expires_at: None,
                    })
                    .collect(),
                refused: plan
                    .refused
                    .into_iter()
                    .map(|(target, why)| RefusedView {
                        target,
                        why: why.to_string(),
                    })
                    .collect(),
            })
        })
    }

    fn verdict(&self, q: &VerdictQuery) -> Result<VerdictView, Failure> {
        let bad = |m: String| Failure::BadRequest(m);
        let src: IpAddr = q
            .src
            .parse()
            .map_err(|_| bad(format!("src '{}' is not an IP address", q.src)))?;
        let dst = match &q.dst {
            Some(d) => Some(
                d.parse::<IpAddr>()
                    .map_err(|_| bad(format!("dst '{d}' is not an IP address")))?,
            ),
            None => None,
        };
        if dst.is_some_and(|d| d.is_ipv4() != src.is_ipv4()) {
            return Err(bad(format!(
                "src {src} and dst {} are of different address families",
                q.dst.as_deref().unwrap_or_default()
            )));
        }
        let proto = match &q.proto {
            Some(p) => Some(p.parse::<Proto>().map_err(|e| bad(e.to_string()))?),
            None => None,
        };
        if q.port == Some(0) {
            return Err(bad("port 0 is not a destination port".into()));
        }
        let probe = Probe {
            src,
            dst,
            proto,
            port: q.port,
        };
        self.with(|i| {
            let now = SystemTime::now();
            let state = i.store.state();
            let allow: Vec<Target> = i
                .config
                .allow
                .iter()
                .chain(state.allow.keys())
                .copied()
                .collect();
            let v = crate::verdict::decide(state.rules.values(), &allow, state.mode, &probe, now);
            let mut ids: Vec<u64> = v.rule.iter().map(|(id, _)| *id).collect();
            ids.extend(&v.unmatched);
            let hits: BTreeMap<u64, swarmwall_maps::RuleHits> =
                i.dp.rule_hits(ids).map_err(internal)?.into_iter().collect();
            let view = |id: &u64| {
                state
                    .rules
                    .get(id)
                    .map(|r| rule_view(r, hits.get(id).copied().unwrap_or_default()))
            };
            let in_enforce_mode = (state.mode == Mode::Observe).then(|| {
                let e = crate::verdict::decide(
                    state.rules.values(),
                    &allow,
                    Mode::Enforce,
                    &probe,
                    now,
                );
                if e.outcome.drops() { "drop" } else { "pass" }.to_owned()
            });
            Ok(VerdictView {
                action: if v.outcome.drops() { "drop" } else { "pass" }.into(),
                outcome: v.outcome.stat_name().into(),
                mode: mode_name(state.mode).into(),
                allowed_by: v.allowed_by.map(|a| a.to_string()),
                rule: v.rule.and_then(|(id, _)| view(&id)),
                stage: v.rule.map(|(_, st)| {
                    match st {
                        Stage::Exact => "exact",
                        Stage::Prefix => "prefix",
                    }
                    .to_owned()
                }),
                counted: v.counted,
                in_enforce_mode,
                unmatched: v.unmatched.iter().filter_map(view).collect(),
            })
        })
    }

    fn pardon(&self, actor: &Actor, id: u64, req: PardonRequest) -> Result<PardonResult, Failure> {
        crate::api::check_reason(req.reason.as_deref())?;
        let asked = parse_targets("member", &req.members)?;
        use crate::guard::overlaps;
        // Book, then daemon state: the order the detector thread takes them in.
        let mut book = self.book.lock().unwrap_or_else(|p| p.into_inner());
        let t = book
            .swarms
            .get_mut(&id)
            .ok_or_else(|| Failure::NotFound(format!("no swarm with id {id}")))?;
        let members: Vec<Target> = t.swarm.members.iter().map(|m| Target::Addr(*m)).collect();
        for a in &asked {
            let known = members.iter().any(|m| overlaps(m, a))
                || t.rules.iter().any(|p| overlaps(&p.target, a));
            if !known {
                return Err(Failure::NotFound(format!(
                    "{a} is not a member of swarm {id} (`swarmwall swarms show {id}` lists them)"
                )));
            }
        }
        let pardoned: Vec<Target> = if asked.is_empty() {
            members
        } else {
            members
                .into_iter()
                .filter(|m| asked.iter().any(|a| overlaps(m, a)))
                .chain(
                    asked
                        .iter()
                        .copied()
                        .filter(|a| matches!(a, Target::Net(_))),
                )
                .collect()
        };
        let hit = |target: &Target| pardoned.iter().any(|p| overlaps(p, target));
        let victims: Vec<u64> = t
            .rules
            .iter()
            .filter(|p| hit(&p.target))
            .map(|p| p.id)
            .collect();
        let reason = match &req.reason {
            Some(r) => format!("pardon of swarm {id}: {r}"),
            None => format!("pardon of swarm {id}"),
        };
        let change = self.with(|i| {
            let ops: Vec<Op> = victims
                .iter()
                .filter_map(|rid| i.store.state().rules.get(rid).cloned())
                .map(Op::RemoveRule)
                .collect();
            if ops.is_empty() {
                return Ok(None);
            }
            i.commit_apply(&actor.name(), Some(&reason), ops, None)
                .map(Some)
        })?;
        // Counted as pardoned here, not by the detector's next look at the store: a rule close
        // to its expiry would otherwise pass for expired and its member be blocked again.
        let removed: Vec<u64> = change
            .iter()
            .flat_map(|c| c.ops.iter())
            .filter_map(|op| match op {
                Op::RemoveRule(r) => Some(r.id),
                _ => None,
            })
            .collect();
        t.rules.retain(|p| !victims.contains(&p.id));
        t.pardoned += removed.len();
        let (dropped, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut t.planned)
            .into_iter()
            .partition(|(r, _)| hit(&r.target));
        t.planned = kept;
        // A pardoned member's own rule is gone already; the single-address rules a dropped
        // prefix would have replaced stay in force.
        t.superseded.retain(|(_, target)| {
            !hit(target)
                && !dropped
                    .iter()
                    .any(|(d, _)| d.target.net().contains(&target.net()))
        });
        let planned_dropped = dropped.len();
        for p in &pardoned {
            if !t.pardons.contains(p) {
                t.pardons.push(*p);
            }
        }
        let names: Vec<String> = pardoned.iter().map(Target::to_string).collect();
        let summary = format!(
            "pardoned {} member{} of swarm {id}: removed {} rule{}{}{}",
            names.len(),
            if names.len() == 1 { "" } else { "s" },
            removed.len(),
            if removed.len() == 1 { "" } else { "s" },
            if planned_dropped > 0 {
                format!(", dropped {planned_dropped} planned")
            } else {
                String::new()
            },
            "; the swarm will not block them again"
        );
        tracing::info!(swarm = id, rules = removed.len(), "{summary}");
        Ok(PardonResult {
            swarm: id,
            change_id: change.map(|c| c.id),
            rules: removed,
            members: names,
            planned_dropped,
            summary,
        })
    }
}

/// Each of `list` as an address or prefix; a bad one is a 400 naming `field` and the value.
fn parse_targets(field: &str, list: &[String]) -> Result<Vec<Target>, Failure> {
    list.iter()
        .map(|t| {
            t.parse::<Target>()
                .map_err(|e| Failure::BadRequest(format!("{field}: {e}")))
        })
        .collect()
}

/// Milliseconds from `unix_ns` to `now`; 0 for a time in the future (a log written with a
/// clock ahead of ours).
fn age_ms(unix_ns: u64, now: std::time::SystemTime) -> u64 {
    let now = now
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    now.saturating_sub(unix_ns) / 1_000_000
}
