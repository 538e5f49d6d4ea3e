//! The control API server: HTTP/1.1 + JSON on a unix socket, routed onto a [`Control`].
//!
//! [`bind`] creates the socket safely (refusing to steal one another daemon is listening on);
//! [`serve`] runs the accept loop until its shutdown future completes. Each connection's peer
//! credentials are read once at accept time and decide what it may do ([`Auth`], [`permission`]);
//! the verdict travels with every request as an extension, so handlers never guess who is asking.
//!
//! Limits, all answered in JSON ([`ApiError`]) where HTTP allows an answer:
//! - at most [`MAX_CONNECTIONS`] connections are served at once, plus [`RESERVED_CONNECTIONS`]
//!   kept for root and the daemon's own uid, so that no other user can keep the admin out;
//!   a connection over that waits (in order) up to [`QUEUE_TIMEOUT`] for a slot, then gets 503;
//! - a peer uid other than those may hold at most [`MAX_PER_USER`] connections, served or
//!   waiting; more are answered 503 (or, in a flood, closed) at once: a read-only user can't
//!   take every slot;
//! - request headers must arrive within [`HEADER_TIMEOUT`] (also the keep-alive idle limit),
//!   else the connection is dropped: a stalled client frees its slot within seconds;
//! - a body must arrive within [`BODY_TIMEOUT`] (408) and fit in [`MAX_BODY`] (413; rule imports,
//!   `POST /v1/rules`, may be up to [`MAX_RULES_BODY`]);
//! - malformed JSON, wrong types, unknown fields and bad query strings are 400 with a message
//!   naming the problem and where it is (`rules[0].scope: unknown field `protocol``);
//!   unknown routes 404, wrong methods 405; bytes that aren't HTTP get hyper's 400.
//!
//! Every connection is accepted at once (peer credentials are only known after `accept`, and a
//! full listen backlog would stop root's connections too); what waits is the accepted
//! connection, for a slot. Only root, the daemon's uid and the read group can connect at all
//! (the socket's mode), so [`MAX_PER_USER`] per member bounds what waits.

use std::{
    collections::HashMap,
    convert::Infallible,
    fs,
    future::Future,
    io,
    os::unix::fs::{DirBuilderExt as _, FileTypeExt as _, PermissionsExt as _},
    path::Path,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use axum::{
    Extension, Router,
    body::Body,
    extract::{FromRequest, FromRequestParts, Path as UrlPath, Request, State},
    http::{HeaderValue, StatusCode, header, request::Parts},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use http_body_util::{BodyExt as _, LengthLimitError, Limited};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use tokio::{
    net::{UnixListener, UnixStream},
    sync::{OwnedSemaphorePermit, Semaphore, watch},
};

pub use super::auth::{Auth, PeerCreds, Perm, permission};
use super::{
    Actor, Control, Failure,
    types::{AddRules, AllowRequest, ApiError, DeleteRules, ErrorBody, ModeView, TopQuery},
};

/// Where the daemon listens and the CLI connects by default.
pub const DEFAULT_SOCKET: &str = "/run/swarmwall/control.sock";
/// Largest request body, except rule imports.
pub const MAX_BODY: usize = 1 << 20;
/// Largest `POST /v1/rules` body: a bulk import (about a million rules) is one change, so it
/// can't be split. Only peers allowed to write get this far.
pub const MAX_RULES_BODY: usize = 64 << 20;
/// Time a client has to send a request's headers (and how long an idle connection stays open:
/// the CLI opens one connection per request, and an idle connection only holds a slot).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(2);
/// Time a client has to send a request's body.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections served at once, from any peer.
pub const MAX_CONNECTIONS: usize = 64;
/// Connections served at once beyond [`MAX_CONNECTIONS`], for root and the daemon's own uid only.
pub const RESERVED_CONNECTIONS: usize = 8;
/// Connections (served or waiting) one peer uid other than root and the daemon's may hold.
pub const MAX_PER_USER: usize = 8;
/// How long an accepted connection waits for a free slot before it is answered 503.
pub const QUEUE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections over their user's limit being answered 503 at once; more are closed unanswered.
const MAX_REFUSING: usize = 16;
/// Time a connection over its user's limit has to send its request to be answered 503.
const REFUSAL_TIMEOUT: Duration = Duration::from_millis(500);
/// How long [`serve`] waits for requests in flight after shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The server's limits; [`Limits::default`] is what [`serve`] uses (the constants above).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Time to send a request's headers; also the idle keep-alive limit.
    pub header_timeout: Duration,
    /// Time to send a request's body (408 after).
    pub body_timeout: Duration,
    /// Largest request body (413 above).
    pub max_body: usize,
    /// Largest `POST /v1/rules` body.
    pub max_rules_body: usize,
    /// Connections served at once, from any peer; more wait for a slot.
    pub max_connections: usize,
    /// Further connections served at once for root and the daemon's uid only.
    pub reserved_connections: usize,
    /// Connections, served or waiting, that one other peer uid may hold; more get 503 at once.
    pub max_per_user: usize,
    /// How long a connection waits for a slot (503 after).
    pub queue_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_timeout: HEADER_TIMEOUT,
            body_timeout: BODY_TIMEOUT,
            max_body: MAX_BODY,
            max_rules_body: MAX_RULES_BODY,
            max_connections: MAX_CONNECTIONS,
            reserved_connections: RESERVED_CONNECTIONS,
            max_per_user: MAX_PER_USER,
            queue_timeout: QUEUE_TIMEOUT,
        }
    }
}

/// Creates the control socket at `path`, ready for [`serve`]. Must be called within a Tokio
/// runtime.
///
/// Creates the parent directory (mode 0755) if missing. A socket file left by a dead daemon is
/// removed; if a daemon still answers on it, or `path` is not a socket, this refuses. The socket
/// gets mode 0600 (owner only: the daemon's user, normally root) or, with `group`, 0660 owned by
/// that group (pair it with [`Auth::read_group`] for read-only access).
pub fn bind(path: &Path, group: Option<u32>) -> io::Result<UnixListener> {
    let ctx = |what: &str, e: io::Error| io::Error::new(e.kind(), format!("{what}: {e}"));
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.exists()
    {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .map_err(|e| ctx(&format!("creating {}", dir.display()), e))?;
    }
    match fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_socket() => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!(
                    "{} exists and is not a socket; refusing to replace it",
                    path.display()
                ),
            ));
        }
        Ok(_) => match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!(
                        "another swarmwall daemon is listening on {}; stop it first (or give \
                         this one another socket path)",
                        path.display()
                    ),
                ));
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                tracing::info!("removing stale socket {}", path.display());
                fs::remove_file(path)
                    .map_err(|e| ctx(&format!("removing stale socket {}", path.display()), e))?;
            }
            Err(e) => {
                return Err(ctx(
                    &format!(
                        "{} exists and can't be checked for a running daemon",
                        path.display()
                    ),
                    e,
                ));
            }
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(ctx(&format!("checking {}", path.display()), e)),
    }
    // The file is briefly created with the umask's mode; that grants nothing, since every
    // connection's credentials are checked again in `serve`.
    let std_listener = std::os::unix::net::UnixListener::bind(path)
        .map_err(|e| ctx(&format!("binding {}", path.display()), e))?;
    let mode = match group {
        Some(gid) => {
            nix::unistd::chown(path, None, Some(nix::unistd::Gid::from_raw(gid))).map_err(|e| {
                ctx(
                    &format!("chown {} to group {gid}", path.display()),
                    e.into(),
                )
            })?;
            0o660
        }
        None => 0o600,
    };
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|e| ctx(&format!("chmod {mode:o} {}", path.display()), e))?;
    std_listener.set_nonblocking(true)?;
    UnixListener::from_std(std_listener)
}

/// Serves the API on `listener` until `shutdown` completes, then lets requests in flight finish
/// (for a few seconds) and returns. Errors only if accepting fails for good (not for a transient
/// shortage of file descriptors or memory, which is logged and retried).
pub async fn serve(
    listener: UnixListener,
    control: Arc<dyn Control>,
    auth: Auth,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    serve_with(listener, control, auth, Limits::default(), shutdown).await
}

/// [`serve`] with other [`Limits`] (tests use short timeouts).
pub async fn serve_with(
    listener: UnixListener,
    control: Arc<dyn Control>,
    auth: Auth,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let service = TowerToHyperService::new(router(control));
    let slots = Arc::new(Slots::new(&limits));
    let users = Arc::new(Users {
        open: Mutex::new(HashMap::new()),
        max: limits.max_per_user.max(1),
    });
    let refusing = Arc::new(Semaphore::new(MAX_REFUSING));
    let refusals = Arc::new(Throttle::new(Duration::from_secs(10)));
    let (stop_tx, stop_rx) = watch::channel(false);
    let server_uid = nix::unistd::geteuid().as_raw();
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) if transient_accept_error(&e) => {
                    tracing::warn!("accepting a control connection: {e}; retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                Err(e) => return Err(e),
            },
        };
        let peer = Peer::of(&stream, auth, server_uid);
        // Root and the daemon's uid may change things; nobody may keep them out, so they are
        // not counted per user (and have slots of their own).
        let privileged = peer.perm == Perm::ReadWrite;
        let user = if privileged {
            None
        } else {
            match users.enter(peer.actor.uid) {
                Some(u) => Some(u),
                None => {
                    let message = format!(
                        "uid {} has {} connections to the daemon open, the most one user may \
                         have; close some and retry",
                        peer.actor.uid, users.max
                    );
                    if refusals.ready() {
                        tracing::warn!("control API: {message} (refusing more; logged every 10 s)");
                    }
                    // Answered while few are being refused, else closed unanswered: a flood
                    // of them (the same staller, usually) must cost nothing.
                    if let Ok(permit) = Arc::clone(&refusing).try_acquire_owned() {
                        let timeout = limits.header_timeout.min(REFUSAL_TIMEOUT);
                        tokio::spawn(async move {
                            refuse(stream, message, timeout).await;
                            drop(permit);
                        });
                    }
                    continue;
                }
            }
        };
        let service = service.clone();
        let slots = Arc::clone(&slots);
        let refusals = Arc::clone(&refusals);
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let waited = tokio::select! {
                w = tokio::time::timeout(limits.queue_timeout, slots.acquire(privileged)) => w,
                _ = stop.wait_for(|s| *s) => return,
            };
            let Some(slot) = waited.ok().flatten() else {
                let message = format!(
                    "the daemon is serving its most connections at once and none was free \
                     within {}; retry",
                    humantime::format_duration(limits.queue_timeout)
                );
                if refusals.ready() {
                    tracing::warn!(
                        "control API: {}: {message} (refusing more; logged every 10 s)",
                        peer.actor.name()
                    );
                }
                refuse(stream, message, limits.header_timeout).await;
                return;
            };
            let svc = hyper::service::service_fn(move |mut req: Request<hyper::body::Incoming>| {
                let peer = peer.clone();
                let service = service.clone();
                async move {
                    if !peer.perm.allows(req.method()) {
                        return Ok::<_, Infallible>(peer.denial(req.method()).into_response());
                    }
                    req.extensions_mut().insert(peer);
                    req.extensions_mut().insert(limits);
                    hyper::service::Service::call(&service, req).await
                }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                // `printf 'GET ...' | nc -NU sock` shuts its write side and waits: still answer.
                .half_close(true)
                .serve_connection(TokioIo::new(stream), svc);
            tokio::pin!(conn);
            let result = tokio::select! {
                r = conn.as_mut() => r,
                _ = async { stop.wait_for(|s| *s).await.map(|_| ()) } => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                tracing::debug!("control connection: {e}");
            }
            drop(slot);
            drop(user);
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    // Every connection holds a slot until it ends: all slots back means all connections done.
    if tokio::time::timeout(SHUTDOWN_GRACE, slots.all())
        .await
        .is_err()
    {
        tracing::warn!("control connections still open after shutdown; leaving them");
    }
    Ok(())
}

/// The slots connections are served in: shared ones, and ones only privileged peers may take.
struct Slots {
    shared: Arc<Semaphore>,
    reserved: Arc<Semaphore>,
    counts: (u32, u32),
}

impl Slots {
    fn new(limits: &Limits) -> Self {
        let count = |n: usize| u32::try_from(n.min(Semaphore::MAX_PERMITS)).unwrap_or(u32::MAX);
        let counts = (
            count(limits.max_connections.max(1)),
            count(limits.reserved_connections),
        );
        Slots {
            shared: Arc::new(Semaphore::new(counts.0 as usize)),
            reserved: Arc::new(Semaphore::new(counts.1 as usize)),
            counts,
        }
    }

    /// Waits for a slot, in arrival order; a privileged peer takes whichever kind frees first.
    /// `None` only if the slots were closed (they never are).
    async fn acquire(&self, privileged: bool) -> Option<OwnedSemaphorePermit> {
        let shared = || Arc::clone(&self.shared);
        let reserved = || Arc::clone(&self.reserved);
        if !privileged {
            return shared().acquire_owned().await.ok();
        }
        if let Ok(p) = shared()
            .try_acquire_owned()
            .or_else(|_| reserved().try_acquire_owned())
        {
            return Some(p);
        }
        tokio::select! {
            p = shared().acquire_owned() => p.ok(),
            p = reserved().acquire_owned() => p.ok(),
        }
    }

    /// Waits until every slot is free: every connection has ended.
    async fn all(&self) {
        let _ = tokio::join!(
            self.shared.acquire_many(self.counts.0),
            self.reserved.acquire_many(self.counts.1)
        );
    }
}

/// Connections open per peer uid (other than privileged ones).
struct Users {
    open: Mutex<HashMap<u32, usize>>,
    max: usize,
}

impl Users {
    /// Counts a connection of `uid`, unless it holds [`Users::max`] already.
    fn enter(self: &Arc<Self>, uid: u32) -> Option<UserSlot> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let n = open.entry(uid).or_default();
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(UserSlot {
            users: Arc::clone(self),
            uid,
        })
    }
}

/// One connection counted against its uid until dropped.
struct UserSlot {
    users: Arc<Users>,
    uid: u32,
}

impl Drop for UserSlot {
    fn drop(&mut self) {
        let mut open = self
            .users
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = open.get_mut(&self.uid) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.uid);
            }
        }
    }
}

/// Answers the connection's request 503 `busy` with `message`, and closes it.
async fn refuse(stream: UnixStream, message: String, header_timeout: Duration) {
    let svc = hyper::service::service_fn(move |_req: Request<hyper::body::Incoming>| {
        let fail = ApiFail::new(StatusCode::SERVICE_UNAVAILABLE, "busy", message.clone());
        async move { Ok::<_, Infallible>(fail.into_response()) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .keep_alive(false)
        .serve_connection(TokioIo::new(stream), svc);
    if let Err(e) = conn.await {
        tracing::debug!("refused control connection: {e}");
    }
}

/// Says yes at most once per period (for log lines that a flood would repeat).
struct Throttle {
    period: Duration,
    last: Mutex<Option<std::time::Instant>>,
}

impl Throttle {
    fn new(period: Duration) -> Self {
        Throttle {
            period,
            last: Mutex::new(None),
        }
    }

    fn ready(&self) -> bool {
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        let now = std::time::Instant::now();
        if last.is_some_and(|t| now.duration_since(t) < self.period) {
            return false;
        }
        *last = Some(now);
        true
    }
}

/// Accept errors that pass (a full fd table, an aborted handshake): retry after a pause
/// rather than stop serving.
pub(crate) fn transient_accept_error(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(
            libc::EMFILE
                | libc::ENFILE
                | libc::ENOBUFS
                | libc::ENOMEM
                | libc::ECONNABORTED
                | libc::EINTR
                | libc::EPROTO
        )
    ) || e.kind() == io::ErrorKind::Interrupted
}

/// The connection's peer, attached to each of its requests.
#[derive(Clone, Debug)]
struct Peer {
    actor: Actor,
    perm: Perm,
}

impl Peer {
    fn of(stream: &UnixStream, auth: Auth, server_uid: u32) -> Peer {
        match PeerCreds::of(stream) {
            Ok(c) => Peer {
                perm: permission(c.uid, c.gid, &c.groups, auth.read_group, server_uid),
                actor: Actor {
                    uid: c.uid,
                    pid: c.pid,
                },
            },
            Err(e) => {
                tracing::warn!("control connection without peer credentials ({e}); refusing");
                Peer {
                    // Unknown: never matched by anything, and `perm` denies everything anyway.
                    actor: Actor {
                        uid: u32::MAX,
                        pid: None,
                    },
                    perm: Perm::None,
                }
            }
        }
    }

    fn denial(&self, method: &hyper::Method) -> ApiFail {
        let who = self.actor.name();
        tracing::info!("control API: refused {method} from {who} ({:?})", self.perm);
        ApiFail::from(Failure::Forbidden(match self.perm {
            Perm::Read => format!(
                "{who} has read-only access: changes ({method}) are not allowed; they need root \
                 (try sudo)"
            ),
            _ => format!(
                "{who} is not allowed to use the swarmwall API; it needs root or the read group"
            ),
        }))
    }
}

/// The routes, over any [`Control`]. Each request must carry a `Peer` extension: the accept loop
/// adds it after the permission check, so a handler knows who asked.
fn router(control: Arc<dyn Control>) -> Router {
    Router::new()
        .route("/v1/status", get(status))
        .route("/v1/top", get(top))
        .route("/v1/rules", get(rules).post(add_rules))
        .route("/v1/rules/delete", post(delete_rules))
        .route("/v1/allow", get(allow_list).post(allow_add))
        .route("/v1/allow/delete", post(allow_delete))
        .route("/v1/mode", get(mode).put(set_mode))
        .route("/v1/history", get(history))
        .route("/v1/undo/{change_id}", post(undo))
        .route("/v1/swarms", get(swarms))
        .route("/v1/swarms/{id}", get(swarm))
        .route("/v1/rules/preview", post(preview_rules))
        .route("/v1/verdict", get(verdict))
        .route("/v1/swarms/{id}/pardon", post(pardon))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(control)
}

type Ctl = State<Arc<dyn Control>>;
type Answer<T> = Result<JsonOut<T>, ApiFail>;

/// Runs a (possibly blocking) control call off the async threads.
async fn blocking<T, F>(control: Arc<dyn Control>, f: F) -> Answer<T>
where
    T: Send + 'static,
    F: FnOnce(&dyn Control) -> Result<T, Failure> + Send + 'static,
{
    match tokio::task::spawn_blocking(move || f(&*control)).await {
        Ok(r) => r.map(JsonOut).map_err(ApiFail::from),
        Err(e) => {
            tracing::error!("control API handler failed: {e}");
            Err(ApiFail::from(Failure::Internal(
                "the daemon failed while handling the request (see its log)".into(),
            )))
        }
    }
}

async fn status(State(c): Ctl) -> Answer<super::types::Status> {
    blocking(c, |c| c.status()).await
}

async fn top(State(c): Ctl, QueryArg(q): QueryArg<TopQuery>) -> Answer<super::types::TopView> {
    blocking(c, move |c| c.top(&q)).await
}

async fn rules(
    State(c): Ctl,
    QueryArg(q): QueryArg<super::types::RulesQuery>,
) -> Answer<Vec<super::types::RuleView>> {
    blocking(c, move |c| c.rules_matching(&q)).await
}

async fn add_rules(
    State(c): Ctl,
    Extension(p): Extension<Peer>,
    JsonBody(r): JsonBody<AddRules, true>,
) -> Answer<super::types::ChangeResult> {
    blocking(c, move |c| c.add_rules(&p.actor, r)).await
}

async fn delete_rules(
    State(c): Ctl,
    Extension(p): Extension<Peer>,
    JsonBody(r): JsonBody<DeleteRules>,
) -> Answer<super::types::ChangeResult> {
    blocking(c, move |c| c.delete_rules(&p.actor, r)).await
}

async fn allow_list(State(c): Ctl) -> Answer<Vec<super::types::AllowView>> {
    blocking(c, |c| c.allow_list()).await
}

async fn allow_add(
    State(c): Ctl,
    Extension(p): Extension<Peer>,
    JsonBody(r): JsonBody<AllowRequest>,
) -> Answer<super::types::ChangeResult> {
    blocking(c, move |c| c.allow_add(&p.actor, r)).await
}

async fn allow_delete(
    State(c): Ctl,
    Extension(p): Extension<Peer>,
    JsonBody(r): JsonBody<AllowRequest>,
) -> Answer<super::types::ChangeResult> {
    blocking(c, move |c| c.allow_delete(&p.actor, r)).await
}

async fn mode(State(c): Ctl) -> Answer<ModeView> {
    blocking(c, |c| c.mode()).await
}

async fn set_mode(
    State(c): Ctl,
    Extension(p): Extension<Peer>,
    JsonBody(r): JsonBody<ModeView>,
) -> Answer<super::types::ChangeResult> {
    blocking(c, move |c| c.set_mode(&p.actor, r)).await
}

/// `GET /v1/history` query.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryQuery {
    limit: Option<usize>,
}

async fn history(
    State(c): Ctl,
    QueryArg(q): QueryArg<HistoryQuery>,
) -> Answer<Vec<super::types::ChangeView>> {
    blocking(c, move |c| c.history(q.limit)).await
}

async fn undo(
    State(c): Ctl,
    Extension(p): Extension<Peer>,
    PathArg(change_id): PathArg<u64>,
) -> Answer<super::types::ChangeResult> {
    blocking(c, move |c| c.undo(&p.actor, change_id)).await
}

async fn swarms(State(c): Ctl) -> Answer<super::types::SwarmsView> {
    blocking(c, |c| c.swarms()).await
}

async fn swarm(State(c): Ctl, PathArg(id): PathArg<u64>) -> Answer<super::types::SwarmView> {
    blocking(c, move |c| c.swarm(id)).await
}

async fn preview_rules(
    State(c): Ctl,
    JsonBody(r): JsonBody<AddRules, true>,
) -> Answer<super::types::RulesPreview> {
    blocking(c, move |c| c.preview_rules(r)).await
}

async fn verdict(
    State(c): Ctl,
    QueryArg(q): QueryArg<super::types::VerdictQuery>,
) -> Answer<super::types::VerdictView> {
    blocking(c, move |c| c.verdict(&q)).await
}

async fn pardon(
    State(c): Ctl,
    Extension(p): Extension<Peer>,
    PathArg(id): PathArg<u64>,
    JsonBody(r): JsonBody<super::types::PardonRequest>,
) -> Answer<super::types::PardonResult> {
    blocking(c, move |c| c.pardon(&p.actor, id, r)).await
}

async fn not_found(req: Request) -> ApiFail {
    ApiFail::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!(
            "no route {} {}; the API's routes are under /v1/ (status, top, rules, allow, \
             mode, history, undo, swarms, verdict)",
            req.method(),
            req.uri().path()
        ),
    )
}

async fn method_not_allowed(req: Request) -> ApiFail {
    ApiFail::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{} is not allowed on {}", req.method(), req.uri().path()),
    )
}

/// An error answer: a status and an [`ApiError`] body.
#[derive(Debug)]
struct ApiFail {
    status: StatusCode,
    body: ApiError,
}

impl ApiFail {
    fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        ApiFail {
            status,
            body: ApiError {
                error: ErrorBody {
                    code: code.into(),
                    message: message.into(),
                },
            },
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
}

impl From<Failure> for ApiFail {
    fn from(f: Failure) -> Self {
        let (status, code) = match &f {
            Failure::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            Failure::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            Failure::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            Failure::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            Failure::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        ApiFail::new(status, code, f.to_string())
    }
}

impl IntoResponse for ApiFail {
    fn into_response(self) -> Response {
        let mut r = JsonOut(self.body).into_response();
        *r.status_mut() = self.status;
        r
    }
}

/// A JSON answer, newline-terminated (for `curl`).
struct JsonOut<T>(T);

impl<T: Serialize> IntoResponse for JsonOut<T> {
    fn into_response(self) -> Response {
        match serde_json::to_vec(&self.0) {
            Ok(mut body) => {
                body.push(b'\n');
                let mut r = Response::new(Body::from(body));
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                r
            }
            Err(e) => {
                tracing::error!("serializing an API answer: {e}");
                let mut r = Response::new(Body::from(
                    "{\"error\":{\"code\":\"internal\",\"message\":\"could not serialize the \
                     answer\"}}\n",
                ));
                *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                r
            }
        }
    }
}

/// A JSON request body of at most [`Limits::max_body`] bytes ([`Limits::max_rules_body`] if
/// `BULK`), read within [`Limits::body_timeout`]; every failure is a JSON answer (400, 408, 413).
struct JsonBody<T, const BULK: bool = false>(T);

impl<S: Send + Sync, T: DeserializeOwned, const BULK: bool> FromRequest<S> for JsonBody<T, BULK> {
    type Rejection = ApiFail;

    async fn from_request(req: Request, _state: &S) -> Result<Self, ApiFail> {
        let limits = req
            .extensions()
            .get::<Limits>()
            .copied()
            .unwrap_or_default();
        let limit = if BULK {
            limits.max_rules_body
        } else {
            limits.max_body
        };
        let too_large = || {
            ApiFail::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("the request body is larger than {limit} bytes"),
            )
        };
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            return Err(too_large());
        }
        let read = Limited::new(req.into_body(), limit).collect();
        let bytes = match tokio::time::timeout(limits.body_timeout, read).await {
            Err(_) => {
                return Err(ApiFail::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "timeout",
                    format!(
                        "the request body did not arrive within {}",
                        humantime::format_duration(limits.body_timeout)
                    ),
                ));
            }
            Ok(Err(e)) if e.is::<LengthLimitError>() => return Err(too_large()),
            Ok(Err(e)) => {
                return Err(ApiFail::bad_request(format!(
                    "could not read the request body: {e}"
                )));
            }
            Ok(Ok(collected)) => collected.to_bytes(),
        };
        if bytes.is_empty() {
            return Err(ApiFail::bad_request(
                "the request needs a JSON body (none was sent)",
            ));
        }
        let mut de = serde_json::Deserializer::from_slice(&bytes);
        strict(&mut de)
            .and_then(|v| de.end().map(|()| v).map_err(|e| e.to_string()))
            .map(JsonBody)
            .map_err(|e| ApiFail::bad_request(format!("invalid JSON body: {e}")))
    }
}

/// Deserializes a request, refusing every field `T` does not know, at any depth: a typo in a
/// request must not be dropped silently (it would widen a rule). Errors name where they are,
/// e.g. `rules[0].scope: unknown field `protocol``.
///
/// Types only requests use also refuse unknown fields themselves (`deny_unknown_fields`, whose
/// message lists the known ones); this catches the rest: types answers share (tolerant there)
/// and any request type that forgets the attribute.
fn strict<'de, T, D>(de: D) -> Result<T, String>
where
    T: Deserialize<'de>,
    D: serde::Deserializer<'de>,
    D::Error: std::fmt::Display,
{
    let mut unknown = None;
    let value = {
        let mut note = |path: serde_ignored::Path<'_>| {
            unknown.get_or_insert_with(|| {
                let mut steps = Vec::new();
                ignored_steps(&path, &mut steps);
                match steps.pop() {
                    Some(Step::Key(key)) => located(&steps, &format!("unknown field `{key}`")),
                    // Not a field: an element of a sequence nobody reads.
                    last => {
                        steps.extend(last);
                        located(&steps, "unexpected value")
                    }
                }
            });
        };
        serde_path_to_error::deserialize(serde_ignored::Deserializer::new(de, &mut note))
    };
    match (value, unknown) {
        (Err(e), _) => {
            let message = e.inner().to_string();
            let mut steps: Vec<Step> = e
                .path()
                .iter()
                .map(|s| match s {
                    serde_path_to_error::Segment::Seq { index } => Step::Index(*index),
                    other => Step::Key(other.to_string()),
                })
                .collect();
            // An unknown field's own name ends the path; the message names it already.
            if let Some(Step::Key(key)) = steps.last()
                && message.starts_with(&format!("unknown field `{key}`"))
            {
                steps.pop();
            }
            Err(located(&steps, &message))
        }
        (Ok(_), Some(unknown)) => Err(unknown),
        (Ok(v), None) => Ok(v),
    }
}

/// One step into a request: an element of a sequence or a field.
enum Step {
    Index(usize),
    Key(String),
}

/// `message`, prefixed with where in the request it applies (`rules[0].scope: ...`).
fn located(steps: &[Step], message: &str) -> String {
    let mut at = String::new();
    for step in steps {
        match step {
            Step::Index(i) => at.push_str(&format!("[{i}]")),
            Step::Key(k) if at.is_empty() => at.push_str(k),
            Step::Key(k) => at.push_str(&format!(".{k}")),
        }
    }
    if at.is_empty() {
        message.to_string()
    } else {
        format!("{at}: {message}")
    }
}

/// The steps to a value `serde_ignored` reports, outermost first.
fn ignored_steps(path: &serde_ignored::Path<'_>, out: &mut Vec<Step>) {
    use serde_ignored::Path as P;
    match path {
        P::Root => {}
        P::Seq { parent, index } => {
            ignored_steps(parent, out);
            out.push(Step::Index(*index));
        }
        P::Map { parent, key } => {
            ignored_steps(parent, out);
            out.push(Step::Key(key.clone()));
        }
        P::Some { parent } | P::NewtypeStruct { parent } | P::NewtypeVariant { parent } => {
            ignored_steps(parent, out)
        }
    }
}

/// A query string, with a JSON 400 naming the bad parameter.
struct QueryArg<T>(T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for QueryArg<T> {
    type Rejection = ApiFail;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiFail> {
        let query = parts.uri.query().unwrap_or_default().as_bytes();
        strict(serde_urlencoded::Deserializer::new(form_urlencoded::parse(
            query,
        )))
        .map(QueryArg)
        .map_err(|e| ApiFail::bad_request(format!("invalid query string: {e}")))
    }
}

/// A path parameter, with a JSON 400 naming the bad value.
struct PathArg<T>(T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for PathArg<T> {
    type Rejection = ApiFail;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiFail> {
        UrlPath::<T>::from_request_parts(parts, state)
            .await
            .map(|UrlPath(v)| PathArg(v))
            .map_err(|e| ApiFail::bad_request(format!("invalid path: {}", e.body_text())))
    }
}
