//! The daemon's state and the [`Control`] operations on it.
//!
//! The rule store is the source of truth; the kernel maps are a cache of it. Every mutation is
//! first committed to the store's journal (fsync'd), then applied to the maps. If the kernel
//! refuses (a full map), the change is reverted with a compensating journal entry, so the store
//! never claims a rule the kernel does not have.

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
    sync::{Arc, Mutex, atomic::Ordering},
    time::{Duration, Instant, SystemTime},
};

use crate::{
    Action, Dataplane, Mode, Proto, RuleSpec, Scope, Target,
    api::{
        Actor, Control, Failure,
        types::{
            AddRules, AllowRequest, AllowView, ChangeResult, ChangeView, DeleteRules, IfaceView,
            ModeView, NewRule, PageView, PipelineView, PlannedView, RefusedView, RuleCounts,
            RuleView, ScopeView, Status, SwarmView, SwarmsView, TopQuery, TopView,
        },
        types::{
            PardonRequest, PardonResult, PreviewItem, RulesPreview, VerdictQuery, VerdictView,
        },
    },
    backend::{BackendError, Context, Desired, RuleBackend as _},
    daemon::{
        config::Checked,
        host_addrs::HostAddrs,
        swarms::{Book, Counters, Enforcer, PushOutcome, Pushed, Tracked},
        top::Top,
    },
    dataplane::monotonic_ns,
    detect::{Site, Swarm},
    guard::Guards,
    policy::PlannedRule,
    store::{AllowRecord, Change, Op, RuleRecord, Store, StoreError},
    verdict::{Probe, Stage},
};

/// The journal's actor for rules the swarm detector pushes.
pub const SWARM_ACTOR: &str = "swarmwall";

/// Everything the daemon owns, behind one lock: mutations are serialized, and a reader never
/// sees the store and the maps disagree.
pub struct Inner {
    /// The kernel side.
    pub dp: Dataplane,
    /// The source of truth.
    pub store: Store,
    /// The checked configuration.
    pub config: Checked,
    /// The addresses on the host's interfaces, kept current (own addresses when the config's
    /// `detect_own_addresses` is on).
    pub host: HostAddrs,
}

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

/// The running daemon.
pub struct Daemon {
    inner: Mutex<Inner>,
    started: Instant,
    top: Mutex<Top>,
    book: Arc<Mutex<Book>>,
    counters: Arc<Counters>,
    /// What start-up recovered from, shown by `status`.
    warnings: Mutex<Vec<String>>,
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

fn internal(e: impl std::fmt::Display) -> Failure {
    Failure::Internal(e.to_string())
}

fn store_failure(e: StoreError) -> Failure {
    match e {
        StoreError::Conflict(m) => Failure::Conflict(m),
        StoreError::NoSuchChange { id } => Failure::NotFound(format!("no change with id {id}")),
        e @ StoreError::NothingToUndo { .. } => Failure::Conflict(e.to_string()),
        e @ (StoreError::Invalid(_) | StoreError::Empty) => Failure::BadRequest(e.to_string()),
        e => Failure::Internal(e.to_string()),
    }
}

fn mode_name(m: Mode) -> &'static str {
    match m {
        Mode::Enforce => "enforce",
        Mode::Observe => "observe",
    }
}

fn scope_view(s: &Scope) -> ScopeView {
    ScopeView {
        dst: s.dst.map(|d| d.to_string()),
        proto: s.proto.map(|p| p.to_string()),
        port: s.port,
    }
}

impl Inner {
    /// Applies committed store operations to the kernel maps (the rule backend).
    fn apply(&mut self, ops: &[Op]) -> Result<(), BackendError> {
        let ctx = Context {
            config_allow: &self.config.allow,
            now: SystemTime::now(),
        };
        self.dp.apply(ops, &ctx)
    }

    /// Commits `ops` to the journal, then applies them; if the kernel refuses, commits their
    /// inverse and reports the kernel's error.
    fn commit_apply(
        &mut self,
        actor: &str,
        reason: Option<&str>,
        ops: Vec<Op>,
        undoes: Option<u64>,
    ) -> Result<Change, Failure> {
        let change = self
            .store
            .commit(actor, reason, ops, undoes)
            .map_err(store_failure)?;
        if let Err(e) = self.apply(&change.ops) {
            tracing::error!(
                change = change.id,
                "kernel refused change: {e}; reverting it"
            );
            if let Ok(inverse) = self.store.undo_ops(change.id) {
                let _ = self.store.commit(
                    "swarmwall",
                    Some(&format!(
                        "reverted: the kernel refused change {}: {e}",
                        change.id
                    )),
                    inverse.clone(),
                    Some(change.id),
                );
                let _ = self.apply(&inverse);
            }
            return Err(Failure::Conflict(format!(
                "the kernel refused the change: {e}"
            )));
        }
        Ok(change)
    }

    /// Makes the kernel maps match the store and the config (at start-up, after adopting pinned
    /// maps, and on reload). Returns (rules added, rules removed).
    pub fn reconcile(&mut self) -> Result<(usize, usize), BackendError> {
        let state = self.store.state();
        let mut allow = self.config.allow.clone();
        allow.extend(state.allow.keys().copied());
        let done = self.dp.reconcile(&Desired {
            rules: &state.rules,
            allow,
            mode: state.mode,
            now: SystemTime::now(),
        })?;
        Ok((done.added, done.removed))
    }

    /// Removes expired rules from the store (one journal change) and the maps.
    pub fn expire(&mut self) -> Result<usize, Failure> {
        match self
            .store
            .expire(SystemTime::now())
            .map_err(store_failure)?
        {
            Some(change) => {
                self.apply(&change.ops).map_err(internal)?;
                Ok(change.ops.len())
            }
            None => Ok(0),
        }
    }

    /// The guards every producer's rules pass, as they stand now: the allow list (config and
    /// store), the own addresses (config, and the host's interfaces if detected), the prefix
    /// bounds.
    pub fn guards(&self) -> Guards {
        let mut allow = self.config.allow.clone();
        allow.extend(self.store.state().allow.keys().copied());
        let g = Guards::new(allow, self.config.own.clone())
            .with_prefix_bounds(self.config.raw.max_prefix_v4, self.config.raw.max_prefix_v6);
        if self.config.raw.detect_own_addresses {
            g.with_host_addresses(self.host.current())
        } else {
            g
        }
    }

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
struct RulePlan {
    /// The ops to commit: additions, and remove + add under the same id for updates.
    ops: Vec<Op>,
    /// Ids of new rules.
    added: Vec<u64>,
    /// (old record, new expiry) of existing rules that get a new expiry.
    updated: Vec<(RuleRecord, Option<SystemTime>)>,
    /// (target, id) of rules already as asked, or asked for twice.
    unchanged: Vec<(Target, u64)>,
    /// New records, for the preview.
    new: Vec<RuleRecord>,
    /// (target as given, why) of rules the checks refuse.
    refused: Vec<(String, Failure)>,
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
    fn plan_rules(&self, req: &AddRules, actor: &str, now: SystemTime) -> RulePlan {
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

fn rule_view(r: &RuleRecord, h: swarmwall_maps::RuleHits) -> RuleView {
    RuleView {
        id: r.id,
        target: r.target.to_string(),
        action: r.action.to_string(),
        scope: scope_view(&r.scope),
        expires_at: r.expires_at.map(rfc3339),
        created_at: rfc3339(r.created_at),
        actor: r.actor.clone(),
        reason: r.reason.clone(),
        hits: h.packets,
        dropped: h.dropped_packets,
        dropped_bytes: h.dropped_bytes,
    }
}

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

fn result(change: &Change, rules: Vec<u64>) -> ChangeResult {
    ChangeResult {
        change_id: change.id,
        rules,
        summary: Store::summary(change),
        ..ChangeResult::default()
    }
}

impl Daemon {
    /// Wraps the daemon's state.
    pub fn new(inner: Inner) -> Self {
        Self {
            inner: Mutex::new(inner),
            started: Instant::now(),
            top: Mutex::new(Top::default()),
            book: Arc::default(),
            counters: Arc::default(),
            warnings: Mutex::default(),
        }
    }

    /// Records a warning for `status` (it is logged by the caller).
    pub fn add_warning(&self, w: String) {
        self.warnings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(w);
    }

    /// The swarm book and the pipeline counters, for the pipeline to fill.
    pub fn swarm_state(&self) -> (Arc<Mutex<Book>>, Arc<Counters>) {
        (Arc::clone(&self.book), Arc::clone(&self.counters))
    }

    fn swarm_view(&self, t: &Tracked, hits: &BTreeMap<u64, u64>) -> SwarmView {
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
        }
    }

    /// Packets dropped by the rules in force of `swarms`, by rule id: only those rules are
    /// read (a big block list costs a lookup per rule).
    fn dropped_by_rule<'a>(
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

    /// Runs `f` with the state locked. A poisoned lock (a panic while holding it) is recovered:
    /// the store and maps are only changed through operations that leave them consistent.
    pub fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut g)
    }

    /// Takes a counter sample for `top` (called periodically). Reads on handles of its own,
    /// outside the controller's lock: a million sources take seconds to read, and a mutation
    /// (a swarm push, an admin's `block add`) must not wait for that.
    pub fn sample(&self) -> Result<(), crate::DataplaneError> {
        let reader = self.with(|i| i.dp.counter_reader())?;
        let sources = reader.sources()?;
        self.top
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .update(Instant::now(), &sources);
        Ok(())
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
                .map(|r| rule_view(r, hits.get(&r.id).copied().unwrap_or_default()))
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
        let targets = req
            .targets
            .iter()
            .map(|t| {
                t.parse::<Target>()
                    .map_err(|e| Failure::BadRequest(format!("target: {e}")))
            })
            .collect::<Result<Vec<Target>, Failure>>()?;
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
        let asked = req
            .members
            .iter()
            .map(|m| {
                m.parse::<Target>()
                    .map_err(|e| Failure::BadRequest(format!("member: {e}")))
            })
            .collect::<Result<Vec<Target>, Failure>>()?;
        let overlaps =
            |a: &Target, b: &Target| a.net().contains(&b.net()) || b.net().contains(&a.net());
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
