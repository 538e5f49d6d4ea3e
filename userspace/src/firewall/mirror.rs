//! The mirror role: the host firewall holds a copy of what XDP enforces. A copy that fails is
//! reported, never fatal: the store and XDP go on, and [`Mirror::due`] says when to reconcile
//! again (after [`RETRY`] while it is unhealthy, every `[firewall] reconcile_every` to find
//! drift an admin's hand made).

use std::time::{Duration, Instant};

use crate::{
    api::types::FirewallView,
    backend::{Context, Desired, Health, Reconciled, RuleBackend as _},
    store::Op,
};

use super::{NftConfig, Nftables};

/// How soon an unhealthy mirror is reconciled again (sooner if `reconcile_every` is).
pub const RETRY: Duration = Duration::from_secs(10);

/// The firewall copy of the rules.
pub struct Mirror {
    nft: Nftables,
    last: Option<(Instant, Reconciled)>,
}

impl Mirror {
    /// A mirror in nftables; [`Mirror::reconcile`] before anything else.
    pub fn new(cfg: NftConfig) -> Self {
        Self {
            nft: Nftables::new(cfg),
            last: None,
        }
    }

    /// Mirrors one committed change; a failure is logged and left for the next reconcile.
    pub fn apply(&mut self, ops: &[Op], ctx: &Context<'_>) {
        if let Err(e) = self.nft.apply(ops, ctx) {
            tracing::error!("firewall mirror: {e}; XDP still enforces; retrying by reconcile");
        }
    }

    /// Makes the firewall hold `want`; a failure is logged and retried after [`RETRY`].
    pub fn reconcile(&mut self, want: &Desired<'_>) {
        match self.nft.reconcile(want) {
            Ok(done) => {
                if done != Reconciled::default() {
                    tracing::info!(
                        added = done.added,
                        removed = done.removed,
                        retimed = done.retimed,
                        "firewall mirror reconciled"
                    );
                }
                self.last = Some((Instant::now(), done));
            }
            Err(e) => {
                tracing::error!("firewall mirror: reconciling: {e}; XDP still enforces");
                self.last = Some((Instant::now(), Reconciled::default()));
            }
        }
    }

    /// Whether a reconcile is due at `now`.
    pub fn due(&self, now: Instant) -> bool {
        let healthy_every = self.nft.config().reconcile_every;
        let every = if self.nft.failure().is_some() {
            RETRY.min(healthy_every)
        } else {
            healthy_every
        };
        self.last
            .is_none_or(|(at, _)| now.duration_since(at) >= every)
    }

    /// Whether it holds rule `id` (as of the last change or reconcile).
    pub fn holds(&self, id: u64) -> bool {
        self.nft.holds(id)
    }

    /// Whether it holds what it should.
    pub fn healthy(&self) -> bool {
        matches!(self.nft.health(), Health::Ok(_))
    }

    /// What `status` shows of it.
    pub fn view(&self) -> FirewallView {
        let (healthy, detail) = match self.nft.health() {
            Health::Ok(d) => (true, d),
            Health::Degraded(d) => (false, d),
        };
        FirewallView {
            backend: "nftables".into(),
            role: "mirror".into(),
            table: format!("inet {}", self.nft.config().table),
            healthy,
            detail,
            elements: self.nft.elements(),
            drift: self.nft.drift(),
            reconciled_s_ago: self.last.map(|(at, _)| at.elapsed().as_secs()),
        }
    }
}
