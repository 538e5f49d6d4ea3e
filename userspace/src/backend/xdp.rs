//! The kernel data plane as a rule backend.

use std::collections::BTreeMap;

use super::{BackendError, Context, Desired, Health, Hits, Reconciled, RuleBackend, spec_of};
use crate::{Dataplane, RuleSpec, store::Op};

impl RuleBackend for Dataplane {
    fn name(&self) -> &'static str {
        "xdp"
    }

    fn apply(&mut self, ops: &[Op], ctx: &Context<'_>) -> Result<(), BackendError> {
        for op in ops {
            match op {
                Op::AddRule(r) => {
                    if let Some(spec) = spec_of(r, ctx.now) {
                        self.add_rule_as(r.id, spec)?;
                    }
                }
                Op::RemoveRule(r) => {
                    if self.table().get(r.id).is_some() {
                        self.remove_rule(r.id)?;
                    }
                }
                Op::AddAllow(a) => {
                    if !self.allowed().contains(&a.target) {
                        self.allow(a.target)?;
                    }
                }
                Op::RemoveAllow(a) => {
                    // An entry the config file also lists stays in the kernel.
                    if !ctx.config_allow.contains(&a.target) && self.allowed().contains(&a.target) {
                        self.disallow(a.target)?;
                    }
                }
                Op::SetMode { to, .. } => self.set_mode(*to)?,
                Op::Repair { .. } => {}
            }
        }
        Ok(())
    }

    fn reconcile(&mut self, want: &Desired<'_>) -> Result<Reconciled, BackendError> {
        let desired: BTreeMap<u64, RuleSpec> = want
            .rules
            .values()
            .filter_map(|r| spec_of(r, want.now).map(|s| (r.id, s)))
            .collect();
        let actual: Vec<(u64, RuleSpec)> = self
            .table()
            .rules()
            .map(|(id, e)| (id, e.spec.clone()))
            .collect();
        let mut done = Reconciled::default();
        for (id, spec) in &actual {
            let keep = desired.get(id).is_some_and(|d| {
                d.target == spec.target && d.action == spec.action && d.scope == spec.scope
            });
            if !keep {
                self.remove_rule(*id)?;
                done.removed += 1;
            }
        }
        for (id, spec) in desired {
            if self.table().get(id).is_none() {
                self.add_rule_as(id, spec)?;
                done.added += 1;
            }
        }
        for t in self.allowed() {
            if !want.allow.contains(&t) {
                self.disallow(t)?;
            }
        }
        for t in &want.allow {
            if !self.allowed().contains(t) {
                self.allow(*t)?;
            }
        }
        self.set_mode(want.mode)?;
        Ok(done)
    }

    fn health(&self) -> Health {
        let ifaces: Vec<String> = self
            .attachments()
            .map(|(name, mode)| format!("{name} ({mode:?})"))
            .collect();
        if ifaces.is_empty() {
            Health::Degraded("attached to no interface".into())
        } else {
            Health::Ok(format!("attached to {}", ifaces.join(", ")))
        }
    }

    fn hits(&self, ids: &[u64]) -> Result<Vec<(u64, Hits)>, BackendError> {
        Ok(self
            .rule_hits(ids.iter().copied())?
            .into_iter()
            .map(|(id, h)| {
                (
                    id,
                    Hits {
                        packets: h.packets,
                        dropped: h.dropped_packets,
                        dropped_bytes: h.dropped_bytes,
                    },
                )
            })
            .collect())
    }
}
