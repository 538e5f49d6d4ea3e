//! The daemon's state and the [`Control`](crate::api::Control) operations on it.
//!
//! The rule store is the source of truth; the kernel maps are a cache of it. Every mutation is
//! first committed to the store's journal (fsync'd), then applied to the maps. If the kernel
//! refuses (a full map), the change is reverted with a compensating journal entry, so the store
//! never claims a rule the kernel does not have.
//!
//! Here: the state ([`Inner`], [`Daemon`]) and the store-to-kernel core. Turning requests into
//! rules is in `rules`, the swarm detector's side in `swarm`, the API operations in `control`,
//! the wire views they share in `views`.

mod control;
mod rules;
mod swarm;
mod views;

use std::{
    sync::{Arc, Mutex},
    time::{Instant, SystemTime},
};

use crate::{
    Dataplane,
    api::Failure,
    backend::{BackendError, Context, Desired, RuleBackend as _},
    daemon::{
        config::Checked,
        host_addrs::HostAddrs,
        swarms::{Book, Counters},
        top::Top,
    },
    firewall::Mirror,
    guard::Guards,
    store::{Change, Op, Store, StoreError},
};

pub use rules::{Committed, OnRefusal, RuleRequest};

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
    /// The host firewall's copy of the rules (`[firewall]`); `None` too while a periodic
    /// reconcile has it out (see [`Daemon::reconcile_mirror_if_due`]).
    pub mirror: Option<Mirror>,
    /// While the mirror is out: the changes committed meanwhile, for it to apply when it
    /// comes back, and what `status` shows of it.
    pub mirror_out: Option<(Vec<Vec<Op>>, crate::api::types::FirewallView)>,
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

impl Inner {
    /// Applies committed store operations to the kernel maps (the rule backend), then to the
    /// firewall's copy, whose failure is its own (see [`Mirror`]).
    fn apply(&mut self, ops: &[Op]) -> Result<(), BackendError> {
        let ctx = Context {
            config_allow: &self.config.allow,
            now: SystemTime::now(),
        };
        self.dp.apply(ops, &ctx)?;
        if let Some(m) = &mut self.mirror {
            m.apply(ops, &ctx);
        } else if let Some((pending, _)) = &mut self.mirror_out {
            pending.push(ops.to_vec());
        }
        Ok(())
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
        let want = Desired {
            rules: &state.rules,
            allow,
            mode: state.mode,
            now: SystemTime::now(),
        };
        let done = self.dp.reconcile(&want)?;
        if let Some(m) = &mut self.mirror {
            m.reconcile(&want);
        }
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
            .with_prefix_bounds(self.config.raw.max_prefix_v4, self.config.raw.max_prefix_v6)
            .with_trusted_proxies(self.config.trusted_proxies.iter().copied());
        if self.config.raw.detect_own_addresses {
            g.with_host_addresses(self.host.current())
        } else {
            g
        }
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

    /// Runs `f` with the state locked. A poisoned lock (a panic while holding it) is recovered:
    /// the store and maps are only changed through operations that leave them consistent.
    pub fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut g)
    }

    /// Reconciles the firewall's copy if that is due (see [`Mirror::due`]), without holding
    /// the controller's lock while nft lists and diffs the table (seconds at 100,000 rules):
    /// the mirror is taken out with a copy of the store's state, and the changes committed
    /// meanwhile are applied to it when it comes back, in order.
    pub fn reconcile_mirror_if_due(&self) {
        let job = self.with(|i| {
            if !i.mirror.as_ref()?.due(Instant::now()) {
                return None;
            }
            let mirror = i.mirror.take()?;
            i.mirror_out = Some((Vec::new(), mirror.view()));
            let state = i.store.state();
            let mut allow = i.config.allow.clone();
            allow.extend(state.allow.keys().copied());
            Some((mirror, state.rules.clone(), allow, state.mode))
        });
        let Some((mut mirror, rules, allow, mode)) = job else {
            return;
        };
        mirror.reconcile(&Desired {
            rules: &rules,
            allow,
            mode,
            now: SystemTime::now(),
        });
        self.with(|i| {
            let ctx = Context {
                config_allow: &i.config.allow,
                now: SystemTime::now(),
            };
            let pending = i.mirror_out.take().map(|(p, _)| p).unwrap_or_default();
            for ops in pending {
                mirror.apply(&ops, &ctx);
            }
            i.mirror = Some(mirror);
        });
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
