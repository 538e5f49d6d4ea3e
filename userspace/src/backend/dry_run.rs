//! A backend that enforces nothing: it records every call and models what a real backend would
//! then hold, so the producers of rules and the controller's bookkeeping are testable without
//! root, and `--dry-run` previews have something to run against.

use std::collections::{BTreeMap, BTreeSet};

use super::{
    BackendError, Context, Desired, Health, Hits, Reconciled, RuleBackend, same_rule, spec_of,
};
use crate::{Mode, RuleSpec, Target, store::Op};

/// See the [module docs](self).
#[derive(Debug)]
pub struct DryRun {
    /// Rules it would hold, by id.
    pub rules: BTreeMap<u64, RuleSpec>,
    /// Allow entries it would hold.
    pub allow: BTreeSet<Target>,
    /// The mode it would be in.
    pub mode: Mode,
    /// One line per call or op, in order: `add 3 192.0.2.7`, `remove 3`, `reconcile +2 -1`, …
    pub log: Vec<String>,
    /// Makes the next [`RuleBackend::apply`] fail with this message (to test callers' recovery).
    pub fail_next: Option<String>,
}

impl Default for DryRun {
    fn default() -> Self {
        Self {
            rules: BTreeMap::new(),
            allow: BTreeSet::new(),
            mode: Mode::Enforce,
            log: Vec::new(),
            fail_next: None,
        }
    }
}

impl RuleBackend for DryRun {
    fn name(&self) -> &'static str {
        "dry-run"
    }

    fn apply(&mut self, ops: &[Op], ctx: &Context<'_>) -> Result<(), BackendError> {
        if let Some(message) = self.fail_next.take() {
            return Err(BackendError::Failed {
                backend: self.name(),
                message,
            });
        }
        for op in ops {
            match op {
                Op::AddRule(r) => {
                    if let Some(spec) = spec_of(r, ctx.now) {
                        if self.rules.contains_key(&r.id) {
                            return Err(BackendError::Failed {
                                backend: self.name(),
                                message: format!("rule {} is already held", r.id),
                            });
                        }
                        self.log.push(format!("add {} {}", r.id, r.target));
                        self.rules.insert(r.id, spec);
                    }
                }
                Op::RemoveRule(r) => {
                    if self.rules.remove(&r.id).is_some() {
                        self.log.push(format!("remove {}", r.id));
                    }
                }
                Op::AddAllow(a) => {
                    if self.allow.insert(a.target) {
                        self.log.push(format!("allow {}", a.target));
                    }
                }
                Op::RemoveAllow(a) => {
                    if !ctx.config_allow.contains(&a.target) && self.allow.remove(&a.target) {
                        self.log.push(format!("disallow {}", a.target));
                    }
                }
                Op::SetMode { to, .. } => {
                    self.mode = *to;
                    self.log.push(format!("mode {to:?}"));
                }
                Op::Repair { .. } => {}
            }
        }
        Ok(())
    }

    fn reconcile(&mut self, want: &Desired<'_>) -> Result<Reconciled, BackendError> {
        let desired = want.specs();
        let mut done = Reconciled::default();
        self.rules.retain(|id, spec| {
            let keep = desired.get(id).is_some_and(|d| same_rule(d, spec));
            done.removed += usize::from(!keep);
            keep
        });
        for (id, spec) in desired {
            if let std::collections::btree_map::Entry::Vacant(e) = self.rules.entry(id) {
                e.insert(spec);
                done.added += 1;
            }
        }
        self.allow = want.allow.iter().copied().collect();
        self.mode = want.mode;
        self.log
            .push(format!("reconcile +{} -{}", done.added, done.removed));
        Ok(done)
    }

    fn health(&self) -> Health {
        Health::Ok("dry run: enforces nothing".into())
    }

    fn hits(&self, ids: &[u64]) -> Result<Vec<(u64, Hits)>, BackendError> {
        Ok(ids
            .iter()
            .filter(|id| self.rules.contains_key(id))
            .map(|id| (*id, Hits::default()))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use tempfile::TempDir;

    use super::*;
    use crate::{
        Action, Scope,
        store::{AllowRecord, RuleRecord, Store},
    };

    fn record(id: u64, target: &str, ttl: Option<u64>, now: SystemTime) -> RuleRecord {
        RuleRecord {
            id,
            target: target.parse().unwrap(),
            action: Action::Drop,
            scope: Scope::default(),
            expires_at: ttl.map(|s| now + Duration::from_secs(s)),
            created_at: now,
            actor: "test".into(),
            reason: None,
        }
    }

    /// Applying every committed change in turn and reconciling to the store's final state give
    /// the same backend state: the contract the controller relies on at start-up.
    #[test]
    fn applying_the_history_equals_reconciling_to_the_state() {
        let tmp = TempDir::new().unwrap();
        let (mut store, _) = Store::open(tmp.path()).unwrap();
        let now = SystemTime::now();
        let config_allow: Vec<Target> = vec!["10.0.0.0/8".parse().unwrap()];
        let ctx = Context {
            config_allow: &config_allow,
            now,
        };
        let mut applied = DryRun::default();
        applied.allow.insert(config_allow[0]);
        let commit = |store: &mut Store, applied: &mut DryRun, ops: Vec<Op>| {
            let c = store.commit("test", None, ops, None).unwrap();
            applied.apply(&c.ops, &ctx).unwrap();
        };
        commit(
            &mut store,
            &mut applied,
            vec![
                Op::AddRule(record(1, "192.0.2.1", None, now)),
                Op::AddRule(record(2, "192.0.2.0/24", Some(60), now)),
            ],
        );
        commit(
            &mut store,
            &mut applied,
            vec![Op::AddRule(record(3, "2001:db8::/64", None, now))],
        );
        commit(
            &mut store,
            &mut applied,
            vec![Op::AddAllow(AllowRecord {
                target: "10.0.0.0/8".parse().unwrap(),
                created_at: now,
                actor: "test".into(),
                reason: None,
            })],
        );
        let allow_rec = store.state().allow.values().next().unwrap().clone();
        commit(&mut store, &mut applied, vec![Op::RemoveAllow(allow_rec)]);
        let r1 = store.state().rules[&1].clone();
        commit(&mut store, &mut applied, vec![Op::RemoveRule(r1)]);
        commit(
            &mut store,
            &mut applied,
            vec![Op::SetMode {
                from: Mode::Enforce,
                to: Mode::Observe,
            }],
        );
        // The config file's allow entry outlives the store's removal of the same target.
        assert!(applied.allow.contains(&config_allow[0]));

        let mut reconciled = DryRun::default();
        reconciled
            .apply(&[Op::AddRule(record(1, "192.0.2.1", None, now))], &ctx)
            .unwrap();
        let mut allow = config_allow.clone();
        allow.extend(store.state().allow.keys().copied());
        let done = reconciled
            .reconcile(&Desired {
                rules: &store.state().rules,
                allow,
                mode: store.state().mode,
                now,
            })
            .unwrap();
        assert_eq!(
            done,
            Reconciled {
                added: 2,
                removed: 1,
                retimed: 0
            }
        );
        assert_eq!(reconciled.rules, applied.rules);
        assert_eq!(reconciled.allow, applied.allow);
        assert_eq!(reconciled.mode, Mode::Observe);
        assert_eq!(
            applied.log,
            [
                "add 1 192.0.2.1",
                "add 2 192.0.2.0/24",
                "add 3 2001:db8::/64",
                "remove 1",
                "mode Observe"
            ]
        );
    }

    #[test]
    fn expired_rules_are_left_out_and_a_failure_is_reported() {
        let now = SystemTime::now();
        let ctx = Context {
            config_allow: &[],
            now,
        };
        let mut b = DryRun::default();
        let mut gone = record(1, "192.0.2.1", Some(1), now);
        gone.expires_at = Some(now - Duration::from_secs(1));
        b.apply(&[Op::AddRule(gone)], &ctx).unwrap();
        assert!(b.rules.is_empty());
        b.fail_next = Some("table full".into());
        let e = b
            .apply(&[Op::AddRule(record(2, "192.0.2.2", None, now))], &ctx)
            .unwrap_err();
        assert_eq!(e.to_string(), "dry-run: table full");
        assert!(b.rules.is_empty(), "a failed apply holds nothing new");
        let e = {
            b.apply(&[Op::AddRule(record(2, "192.0.2.2", None, now))], &ctx)
                .unwrap();
            b.apply(&[Op::AddRule(record(2, "192.0.2.2", None, now))], &ctx)
                .unwrap_err()
        };
        assert!(e.to_string().contains("already held"), "{e}");
    }
}
