//! The control API: HTTP/1.1 + JSON over a root-only unix socket.
//!
//! [`Control`] is what the daemon provides; the server ([`server`]) maps routes onto it after
//! checking the peer's credentials, and the client ([`client`]) is what the CLI uses.

pub mod auth;
pub mod client;
pub mod server;
pub mod types;

use types::{
    AddRules, AllowRequest, AllowView, ChangeResult, ChangeView, DeleteRules, ModeView, RuleView,
    Status, SwarmView, SwarmsView, TopQuery, TopView,
};
use types::{PardonRequest, PardonResult, RulesPreview, RulesQuery, VerdictQuery, VerdictView};

/// Who is asking, from the socket's peer credentials.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Actor {
    /// Peer uid.
    pub uid: u32,
    /// Peer pid, if known.
    pub pid: Option<i32>,
}

impl Actor {
    /// How the journal names this actor.
    pub fn name(&self) -> String {
        match self.pid {
            Some(pid) => format!("uid {} (pid {pid})", self.uid),
            None => format!("uid {}", self.uid),
        }
    }
}

/// Why a request failed; each maps to one HTTP status.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    /// 400: the request is malformed or names a bad value.
    #[error("{0}")]
    BadRequest(String),
    /// 403: the peer may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// 404: no such rule, change or entry.
    #[error("{0}")]
    NotFound(String),
    /// 409: conflicts with the current state (duplicate, guard refused, needs `yes`).
    #[error("{0}")]
    Conflict(String),
    /// 500: the daemon failed (map write, journal write).
    #[error("{0}")]
    Internal(String),
}

/// The daemon's operations, as the API exposes them. Mutations take the [`Actor`] for the
/// journal. Implementations serialize mutations themselves.
pub trait Control: Send + Sync + 'static {
    /// `GET /v1/status`.
    fn status(&self) -> Result<Status, Failure>;
    /// `GET /v1/top`.
    fn top(&self, query: &TopQuery) -> Result<TopView, Failure>;
    /// `GET /v1/rules`.
    fn rules(&self) -> Result<Vec<RuleView>, Failure>;
    /// `POST /v1/rules`: one change, however many rules.
    fn add_rules(&self, actor: &Actor, request: AddRules) -> Result<ChangeResult, Failure>;
    /// `POST /v1/rules/delete`.
    fn delete_rules(&self, actor: &Actor, request: DeleteRules) -> Result<ChangeResult, Failure>;
    /// `GET /v1/allow`.
    fn allow_list(&self) -> Result<Vec<AllowView>, Failure>;
    /// `POST /v1/allow`.
    fn allow_add(&self, actor: &Actor, request: AllowRequest) -> Result<ChangeResult, Failure>;
    /// `POST /v1/allow/delete`.
    fn allow_delete(&self, actor: &Actor, request: AllowRequest) -> Result<ChangeResult, Failure>;
    /// `GET /v1/mode`.
    fn mode(&self) -> Result<ModeView, Failure>;
    /// `PUT /v1/mode`.
    fn set_mode(&self, actor: &Actor, request: ModeView) -> Result<ChangeResult, Failure>;
    /// `GET /v1/history?limit=N`: newest first.
    fn history(&self, limit: Option<usize>) -> Result<Vec<ChangeView>, Failure>;
    /// `POST /v1/undo/{change_id}`.
    fn undo(&self, actor: &Actor, change_id: u64) -> Result<ChangeResult, Failure>;
    /// `GET /v1/swarms`.
    fn swarms(&self) -> Result<SwarmsView, Failure>;
    /// `GET /v1/swarms/{id}`.
    fn swarm(&self, id: u64) -> Result<SwarmView, Failure>;
    /// `GET /v1/rules?target=&origin=&actor=`: the rules that match every filter given. The
    /// default filters [`Control::rules`].
    fn rules_matching(&self, query: &RulesQuery) -> Result<Vec<RuleView>, Failure> {
        filter_rules(query, self.rules()?)
    }
    /// `POST /v1/rules/preview`: what [`Control::add_rules`] would do with `request`, changing
    /// nothing.
    fn preview_rules(&self, _request: AddRules) -> Result<RulesPreview, Failure> {
        Err(unsupported("rule previews"))
    }
    /// `GET /v1/verdict`: which rule would decide a packet, the way the kernel decides.
    fn verdict(&self, _query: &VerdictQuery) -> Result<VerdictView, Failure> {
        Err(unsupported("verdicts"))
    }
    /// `POST /v1/swarms/{id}/pardon`: removes a swarm's rules (all, or those of some members)
    /// as one change and keeps the swarm from pushing them again.
    fn pardon(
        &self,
        _actor: &Actor,
        _id: u64,
        _request: PardonRequest,
    ) -> Result<PardonResult, Failure> {
        Err(unsupported("pardons"))
    }
}

fn unsupported(what: &str) -> Failure {
    Failure::NotFound(format!("this daemon does not support {what}"))
}

/// Refuses a `reason` with control characters (newlines, tabs, escapes): it is shown in tables
/// and logs, which they would break or forge. The message names the first one and where.
pub fn check_reason(reason: Option<&str>) -> Result<(), Failure> {
    match reason.and_then(|r| r.char_indices().find(|(_, c)| c.is_control())) {
        Some((at, c)) => Err(Failure::BadRequest(format!(
            "reason: control character {:?} at byte {at} is not allowed (it would break tables \
             and logs)",
            c
        ))),
        None => Ok(()),
    }
}

/// The rules of `rules` that match every filter of `query`; a filter that can't be parsed is a
/// [`Failure::BadRequest`] naming it.
pub fn filter_rules(query: &RulesQuery, rules: Vec<RuleView>) -> Result<Vec<RuleView>, Failure> {
    let bad = |m: String| Failure::BadRequest(m);
    let target = match &query.target {
        Some(t) => Some(
            t.parse::<crate::Target>()
                .map_err(|e| bad(format!("target: {e}")))?
                .net(),
        ),
        None => None,
    };
    let origin = match query.origin.as_deref() {
        None => None,
        Some(o @ ("swarm" | "admin")) => Some(o),
        Some(o) => return Err(bad(format!("origin '{o}': expected swarm or admin"))),
    };
    let actor_matches = |actor: &str| match &query.actor {
        None => true,
        Some(want) if want.parse::<u32>().is_ok() => {
            let uid = format!("uid {want}");
            actor == uid || actor.starts_with(&format!("{uid} "))
        }
        Some(want) => actor == want,
    };
    Ok(rules
        .into_iter()
        .filter(|r| {
            let overlaps = target.is_none_or(|q| {
                r.target
                    .parse::<crate::Target>()
                    .is_ok_and(|t| t.net().contains(&q) || q.contains(&t.net()))
            });
            let origin_ok = origin.is_none_or(|o| o == r.origin());
            overlaps && origin_ok && actor_matches(&r.actor)
        })
        .collect())
}
