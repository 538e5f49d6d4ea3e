//! Rule backends: where the rule store's committed changes are enforced.
//!
//! The store is the source of truth; a backend is a cache of it that enforces. The kernel data
//! plane ([`Dataplane`](crate::Dataplane), in [`xdp`]) is the one backend today; the nftables and
//! ipset mirrors are the next. The shape is that of CrowdSec's firewall bouncer (`pkg/backend`):
//! apply a batch of committed operations, reconcile to a whole desired state, report health and
//! per-rule counters — plus a [`DryRun`] backend that records what it was asked and models the
//! result, so producers of rules can be tested without root.

mod dry_run;
mod xdp;

use std::{
    collections::BTreeMap,
    time::{Duration, SystemTime},
};

pub use dry_run::DryRun;

use crate::{
    Mode, RuleSpec, Target,
    store::{Op, RuleRecord},
};

/// Errors of a backend.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The kernel data plane refused.
    #[error(transparent)]
    Kernel(#[from] crate::DataplaneError),
    /// Another backend failed.
    #[error("{backend}: {message}")]
    Failed {
        /// The backend's [`RuleBackend::name`].
        backend: &'static str,
        /// What went wrong.
        message: String,
    },
}

/// What the caller knows besides the ops.
#[derive(Clone, Copy, Debug)]
pub struct Context<'a> {
    /// Allow entries the config file lists: they stay enforced when the store removes its own
    /// entry for the same target.
    pub config_allow: &'a [Target],
    /// Now, to turn expiry times into what is left of a rule's life.
    pub now: SystemTime,
}

/// The whole state a backend must hold after [`RuleBackend::reconcile`].
#[derive(Clone, Debug)]
pub struct Desired<'a> {
    /// The store's rules by id (expired ones are left out by the backend).
    pub rules: &'a BTreeMap<u64, RuleRecord>,
    /// Allow entries: the config file's and the store's.
    pub allow: Vec<Target>,
    /// The global mode.
    pub mode: Mode,
    /// Now.
    pub now: SystemTime,
}

impl Desired<'_> {
    /// The kernel rules the store's records come to now, by id: expired ones left out.
    pub fn specs(&self) -> BTreeMap<u64, RuleSpec> {
        self.rules
            .values()
            .filter_map(|r| spec_of(r, self.now).map(|s| (r.id, s)))
            .collect()
    }
}

/// True if two rules match the same packets the same way (their lifetimes aside).
pub fn same_rule(a: &RuleSpec, b: &RuleSpec) -> bool {
    a.target == b.target && a.action == b.action && a.scope == b.scope
}

/// What a reconcile changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reconciled {
    /// Rules added.
    pub added: usize,
    /// Rules removed.
    pub removed: usize,
    /// Rules kept, with their expiry set to the store's.
    pub retimed: usize,
}

/// Whether a backend enforces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Health {
    /// It enforces; what it enforces on.
    Ok(String),
    /// It holds the rules but does not enforce them everywhere it should.
    Degraded(String),
}

/// Per-rule counters, where a backend has them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Hits {
    /// Packets the rule decided.
    pub packets: u64,
    /// Packets it dropped.
    pub dropped: u64,
    /// Bytes it dropped.
    pub dropped_bytes: u64,
}

/// A place where rules are enforced. Every producer of rules goes through the store
/// ([`crate::store::Store::commit`]); the controller hands each committed change to
/// [`RuleBackend::apply`] and, at start-up and on reload, the whole state to
/// [`RuleBackend::reconcile`].
pub trait RuleBackend: Send {
    /// Short name for logs and status: `xdp`, `nftables`, `dry-run`.
    fn name(&self) -> &'static str;

    /// Applies one committed change's ops, in order: an added rule that has expired by `now` is
    /// left out, removing a rule it does not hold is a no-op, and so is adding an allow entry it
    /// has. On an error the caller reverts the change in the store and applies the inverse.
    fn apply(&mut self, ops: &[Op], ctx: &Context<'_>) -> Result<(), BackendError>;

    /// Makes the backend hold exactly `want`: rules it holds that the store lacks (or holds
    /// otherwise) are removed, missing ones added.
    fn reconcile(&mut self, want: &Desired<'_>) -> Result<Reconciled, BackendError>;

    /// Whether it enforces.
    fn health(&self) -> Health;

    /// The counters of the rules among `ids` that it holds.
    fn hits(&self, ids: &[u64]) -> Result<Vec<(u64, Hits)>, BackendError>;
}

/// The kernel rule for a store record, with its expiry turned into a TTL from `now`. `None` if
/// it has already expired.
pub fn spec_of(r: &RuleRecord, now: SystemTime) -> Option<RuleSpec> {
    let ttl: Option<Duration> = match r.expires_at {
        Some(t) => Some(t.duration_since(now).ok().filter(|d| !d.is_zero())?),
        None => None,
    };
    Some(RuleSpec {
        target: r.target,
        action: r.action,
        scope: r.scope,
        ttl,
    })
}
