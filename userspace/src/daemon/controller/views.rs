//! The wire views of the rule model shared by the API operations.

use std::time::SystemTime;

use crate::{
    Mode, Scope,
    api::types::{RuleView, ScopeView},
    store::RuleRecord,
};

pub(super) fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

pub(super) fn mode_name(m: Mode) -> &'static str {
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

pub(super) fn rule_view(r: &RuleRecord, h: swarmwall_maps::RuleHits) -> RuleView {
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
        enforced_by: Vec::new(),
    }
}
