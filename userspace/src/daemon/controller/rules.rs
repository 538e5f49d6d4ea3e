//! Turning requests into rules: an API request or a producer's typed request is parsed,
//! checked against the guards, planned against the rules in force and committed.

use std::{
    collections::HashMap,
    net::IpAddr,
    time::{Duration, SystemTime},
};

use super::Inner;
use crate::{
    Action, Proto, RuleSpec, Scope, Target,
    api::{
        Failure,
        types::{AddRules, NewRule},
    },
    guard::Guards,
    store::{Change, Op, RuleRecord},
};

/// A rule a producer asks for, in the rule model's types: what the API's wire `NewRule`
/// becomes, and what the swarm policy, imports and CrowdSec hand over directly.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleRequest {
    /// The rule; its TTL is final (the API applies `default_ttl` when it parses a request).
    pub spec: RuleSpec,
    /// Lifts the prefix-width bound (and nothing else).
    pub force: bool,
}

/// What [`Inner::commit_rules`] does with a rule a guard (or the duplicate check) refuses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnRefusal {
    /// Refuse the whole batch, naming the rule (an admin's request: all or nothing).
    Abort,
    /// Commit the others and report the refused ones (the swarm policy).
    Skip,
}

/// What [`Inner::commit_rules`] did.
#[derive(Debug, Default)]
pub struct Committed {
    /// The journal change, if anything changed.
    pub change: Option<Change>,
    /// The rules added: the index of their request, and the record.
    pub added: Vec<(usize, RuleRecord)>,
    /// The requests refused (only with [`OnRefusal::Skip`]): index and why.
    pub refused: Vec<(usize, Failure)>,
}

impl Inner {
    /// Parses an API rule into a typed request (applying `default_ttl`).
    fn rule_request(&self, req: &NewRule, force: bool) -> Result<RuleRequest, Failure> {
        let bad = |m: String| Failure::BadRequest(m);
        let target: Target = req
            .target
            .parse()
            .map_err(|e: crate::AddrError| bad(e.to_string()))?;
        let action = match req.action.as_deref() {
            None | Some("drop") => Action::Drop,
            Some("observe") => Action::Observe,
            Some(other) => return Err(bad(format!("action '{other}': expected drop or observe"))),
        };
        let scope = Scope {
            dst: match &req.scope.dst {
                Some(d) => Some(
                    d.parse::<IpAddr>()
                        .map_err(|_| bad(format!("scope dst '{d}' is not an IP address")))?,
                ),
                None => None,
            },
            proto: match &req.scope.proto {
                Some(p) => Some(p.parse::<Proto>().map_err(|e| bad(e.to_string()))?),
                None => None,
            },
            port: req.scope.port,
        };
        let ttl = match req.ttl_s {
            Some(0) => {
                return Err(bad(
                    "ttl_s of 0 would expire at once; omit it for a permanent rule".into(),
                ));
            }
            Some(s) if Duration::from_secs(s) > crate::rules::MAX_TTL => {
                return Err(bad(format!(
                    "ttl_s {s} is longer than the longest TTL, {} ({} s); omit it for a \
                     permanent rule",
                    humantime::format_duration(crate::rules::MAX_TTL),
                    crate::rules::MAX_TTL.as_secs()
                )));
            }
            Some(s) => Some(Duration::from_secs(s)),
            None => self.config.default_ttl,
        };
        Ok(RuleRequest {
            spec: RuleSpec {
                target,
                action,
                scope,
                ttl,
            },
            force,
        })
    }

    /// Checks a typed request against `guards` and turns it into a record. Whether an identical
    /// rule exists is the caller's business: an admin's re-add updates it
    /// ([`Inner::plan_rules`]), a swarm never stacks one ([`Inner::refuse_identical`]).
    fn new_record(
        &self,
        id: u64,
        req: &RuleRequest,
        guards: &Guards,
        actor: &str,
        reason: Option<&str>,
        now: SystemTime,
    ) -> Result<RuleRecord, Failure> {
        let RuleSpec {
            target,
            action,
            scope,
            ttl,
        } = req.spec;
        req.spec
            .validate()
            .map_err(|e| Failure::BadRequest(e.to_string()))?;
        guards
            .check(&target, req.force)
            .map_err(|e| Failure::Conflict(e.to_string()))?;
        Ok(RuleRecord {
            id,
            target,
            action,
            scope,
            expires_at: ttl.map(|t| now + t),
            created_at: now,
            actor: actor.to_owned(),
            reason: reason.map(str::to_owned),
        })
    }

    /// The one way rules get in: checks every request against the guards (built once for the
    /// batch), then commits them — with `ops` first, e.g. the removal of rules they replace —
    /// as one journaled change, and applies it. The swarm policy comes through here with its
    /// requests; the API handler with the ops [`Inner::plan_rules`] made (additions and updates,
    /// already checked against the same guards).
    pub fn commit_rules(
        &mut self,
        actor: &str,
        reason: Option<&str>,
        requests: &[RuleRequest],
        mut ops: Vec<Op>,
        on_refusal: OnRefusal,
    ) -> Result<Committed, Failure> {
        let now = SystemTime::now();
        let guards = self.guards();
        let mut id = self.store.next_rule_id();
        let mut out = Committed::default();
        for (n, req) in requests.iter().enumerate() {
            let record = self
                .new_record(id, req, &guards, actor, reason, now)
                .and_then(|rec| self.refuse_identical(rec));
            match record {
                Ok(rec) => {
                    out.added.push((n, rec.clone()));
                    ops.push(Op::AddRule(rec));
                    id += 1;
                }
                Err(e) if on_refusal == OnRefusal::Skip => out.refused.push((n, e)),
                Err(e) if requests.len() == 1 => return Err(e),
                Err(Failure::BadRequest(m)) => {
                    return Err(Failure::BadRequest(format!(
                        "rule {} ({}): {m}",
                        n + 1,
                        req.spec.target
                    )));
                }
                Err(Failure::Conflict(m)) => {
                    return Err(Failure::Conflict(format!(
                        "rule {} ({}): {m}",
                        n + 1,
                        req.spec.target
                    )));
                }
                Err(e) => return Err(e),
            }
        }
        if !ops.is_empty() {
            out.change = Some(self.commit_apply(actor, reason, ops, None)?);
        }
        Ok(out)
    }
}

/// What an [`AddRules`] request comes to against the current state.
#[derive(Default)]
pub(super) struct RulePlan {
    /// The ops to commit: additions, and remove + add under the same id for updates.
    pub(super) ops: Vec<Op>,
    /// Ids of new rules.
    pub(super) added: Vec<u64>,
    /// (old record, new expiry) of existing rules that get a new expiry.
    pub(super) updated: Vec<(RuleRecord, Option<SystemTime>)>,
    /// (target, id) of rules already as asked, or asked for twice.
    pub(super) unchanged: Vec<(Target, u64)>,
    /// New records, for the preview.
    pub(super) new: Vec<RuleRecord>,
    /// (target as given, why) of rules the checks refuse.
    pub(super) refused: Vec<(String, Failure)>,
}

/// Expiries closer than this are the same: a request repeated within a second changes nothing.
const SAME_EXPIRY: Duration = Duration::from_secs(1);

fn same_expiry(a: Option<SystemTime>, b: Option<SystemTime>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => {
            a.duration_since(b)
                .or_else(|_| b.duration_since(a))
                .unwrap_or_default()
                < SAME_EXPIRY
        }
        _ => false,
    }
}

impl Inner {
    /// `rec` unless a rule with its target, action and scope exists: a swarm never stacks a
    /// second rule on one (an admin's re-add updates it instead, see [`Inner::plan_rules`]).
    fn refuse_identical(&self, rec: RuleRecord) -> Result<RuleRecord, Failure> {
        match self
            .store
            .state()
            .rules
            .values()
            .find(|r| r.target == rec.target && r.action == rec.action && r.scope == rec.scope)
        {
            Some(dup) => Err(Failure::Conflict(format!(
                "an identical rule already exists (id {})",
                dup.id
            ))),
            None => Ok(rec),
        }
    }

    /// Plans `req`: each rule is new, an update of the existing rule with the same target,
    /// action and scope (a new expiry: longer or shorter), unchanged, or refused by the checks.
    pub(super) fn plan_rules(&self, req: &AddRules, actor: &str, now: SystemTime) -> RulePlan {
        let mut plan = RulePlan::default();
        let existing: HashMap<(Target, Action, Scope), &RuleRecord> = self
            .store
            .state()
            .rules
            .values()
            .map(|r| ((r.target, r.action, r.scope), r))
            .collect();
        let mut seen: HashMap<(Target, Action, Scope), u64> = HashMap::new();
        let mut next = self.store.next_rule_id();
        let guards = self.guards();
        for (n, r) in req.rules.iter().enumerate() {
            let record = self.rule_request(r, req.force).and_then(|request| {
                self.new_record(next, &request, &guards, actor, req.reason.as_deref(), now)
            });
            let rec = match record {
                Ok(rec) => rec,
                Err(e) => {
                    let e = match e {
                        Failure::BadRequest(m) if req.rules.len() > 1 => {
                            Failure::BadRequest(format!("rule {} ({}): {m}", n + 1, r.target))
                        }
                        Failure::Conflict(m) if req.rules.len() > 1 => {
                            Failure::Conflict(format!("rule {} ({}): {m}", n + 1, r.target))
                        }
                        e => e,
                    };
                    plan.refused.push((r.target.clone(), e));
                    continue;
                }
            };
            let key = (rec.target, rec.action, rec.scope);
            if let Some(&id) = seen.get(&key) {
                plan.unchanged.push((rec.target, id));
                continue;
            }
            match existing.get(&key) {
                Some(old) if same_expiry(old.expires_at, rec.expires_at) => {
                    plan.unchanged.push((rec.target, old.id));
                    seen.insert(key, old.id);
                }
                Some(old) => {
                    // Only the expiry changes: the rule keeps its id, origin and counters'
                    // meaning; the journal change says who updated it and why.
                    let new = RuleRecord {
                        expires_at: rec.expires_at,
                        ..(*old).clone()
                    };
                    plan.ops.push(Op::RemoveRule((*old).clone()));
                    plan.ops.push(Op::AddRule(new));
                    plan.updated.push(((*old).clone(), rec.expires_at));
                    seen.insert(key, old.id);
                }
                None => {
                    seen.insert(key, next);
                    plan.added.push(next);
                    plan.new.push(rec.clone());
                    plan.ops.push(Op::AddRule(rec));
                    next += 1;
                }
            }
        }
        plan
    }
}
