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
}
