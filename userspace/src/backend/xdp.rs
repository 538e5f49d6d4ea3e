//! The kernel data plane as a rule backend.

use super::{
    BackendError, Context, Desired, Health, Hits, Reconciled, RuleBackend, same_rule, spec_of,
};
use std::time::Duration;

use crate::{
    Dataplane, RuleSpec,
    dataplane::monotonic_ns,
    store::{Op, RuleRecord},
};

/// How far the kernel's expiry may be from the store's before the rule is replaced: the
/// wall-clock to monotonic conversion of two starts differs by a few milliseconds.
const EXPIRY_SLACK: Duration = Duration::from_secs(2);

/// True if `new` is `old` with another expiry: how the store writes an update.
fn is_update(old: &RuleRecord, new: &RuleRecord) -> bool {
    old.id == new.id
        && RuleRecord {
            expires_at: new.expires_at,
            ..old.clone()
        } == *new
}

/// True if a kernel expiry (`CLOCK_MONOTONIC` ns, 0 for never) is the store's `ttl` from now.
fn same_expiry(ttl: Option<Duration>, expires_ns: u64, now_ns: u64) -> bool {
    match ttl {
        None => expires_ns == 0,
        Some(ttl) => {
            let want = now_ns.saturating_add(u64::try_from(ttl.as_nanos()).unwrap_or(u64::MAX));
            expires_ns != 0 && want.abs_diff(expires_ns) <= EXPIRY_SLACK.as_nanos() as u64
        }
    }
}

impl RuleBackend for Dataplane {
    fn name(&self) -> &'static str {
        "xdp"
    }

    fn apply(&mut self, ops: &[Op], ctx: &Context<'_>) -> Result<(), BackendError> {
        let mut ops = ops.iter().peekable();
        while let Some(op) = ops.next() {
            // An update (the store's remove + add of one rule, new expiry only) is done in
            // place, so the source never passes in between.
            if let (Op::RemoveRule(old), Some(Op::AddRule(new))) = (op, ops.peek())
                && is_update(old, new)
                && self.table().get(old.id).is_some()
            {
                ops.next();
                match spec_of(new, ctx.now) {
                    Some(spec) => self.retime_rule(new.id, spec.ttl)?,
                    None => self.remove_rule(new.id)?,
                }
                continue;
            }
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
        let desired = want.specs();
        let actual: Vec<(u64, RuleSpec, u64)> = self
            .table()
            .rules()
            .map(|(id, e)| (id, e.spec.clone(), e.expires_ns))
            .collect();
        let mono_now = monotonic_ns();
        let mut done = Reconciled::default();
        for (id, spec, expires_ns) in &actual {
            let kept = desired.get(id).filter(|d| same_rule(d, spec));
            // The expiry counts too: a rule whose life the store changed (an update, a repaired
            // journal) would otherwise stop dropping in the kernel while the store still has it.
            if let Some(d) = kept {
                if !same_expiry(d.ttl, *expires_ns, mono_now) {
                    self.retime_rule(*id, d.ttl)?;
                    done.retimed += 1;
                }
                continue;
            }
            self.remove_rule(*id)?;
            done.removed += 1;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_matches_within_the_slack_only() {
        let now = 1_000_000_000_000;
        let hour = Duration::from_secs(3600);
        let at = |d: Duration| now + d.as_nanos() as u64;
        assert!(same_expiry(None, 0, now));
        assert!(!same_expiry(None, at(hour), now));
        assert!(!same_expiry(Some(hour), 0, now));
        assert!(same_expiry(Some(hour), at(hour), now));
        assert!(same_expiry(
            Some(hour),
            at(hour + Duration::from_secs(1)),
            now
        ));
        assert!(!same_expiry(Some(hour), at(Duration::from_secs(600)), now));
        assert!(same_expiry(Some(Duration::MAX), u64::MAX, now));
    }
}
