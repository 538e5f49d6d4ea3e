//! A typed client for the control API, over the daemon's unix socket (what the CLI uses).
//!
//! One connection per request: the CLI makes one or a few calls, and a fresh connection never
//! meets the server's idle timeout.

use std::{
    io,
    path::{Path, PathBuf},
    time::Duration,
};

use http_body_util::{BodyExt as _, Full};
use hyper::{
    Method, Request, StatusCode,
    body::Bytes,
    header::{ACCEPT, CONTENT_TYPE, HOST},
};
use hyper_util::rt::TokioIo;
use serde::{Serialize, de::DeserializeOwned};
use tokio::net::UnixStream;

use super::types::{
    AddRules, AllowRequest, AllowView, ApiError, ChangeResult, ChangeView, DeleteRules, ModeView,
    RuleView, Status, SwarmView, SwarmsView, TopQuery, TopView,
};

/// How long a call may take, connect to answer, unless [`Client::with_timeout`] says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket could not be connected to: no daemon, or no permission.
    #[error("cannot connect to the daemon at {}: {cause}; {}", path.display(), connect_advice(cause))]
    Connect {
        /// The socket path.
        path: PathBuf,
        /// The connect error.
        cause: io::Error,
    },
    /// Connected, but the exchange broke off (the daemon died or closed the connection).
    #[error(
        "the connection to the daemon broke off: {detail} (a change may or may not have been \
         applied; `swarmwall rules history` tells)"
    )]
    Transport {
        /// What went wrong.
        detail: String,
    },
    /// No answer in time.
    #[error(
        "the daemon did not answer within {} (a change may or may not have been applied; \
         `swarmwall rules history` tells)", humantime::format_duration(*timeout)
    )]
    Timeout {
        /// The limit.
        timeout: Duration,
    },
    /// The daemon answered with an error.
    #[error("{message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// Machine-readable code (`bad_request`, `not_found`, `conflict`, ...).
        code: String,
        /// For humans.
        message: String,
    },
    /// The daemon's answer could not be understood.
    #[error("bad response from the daemon: {detail}")]
    BadResponse {
        /// What was wrong with it.
        detail: String,
    },
}

impl ClientError {
    /// True if the daemon could not be reached or didn't answer (as opposed to answering with an
    /// error).
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            ClientError::Connect { .. }
                | ClientError::Transport { .. }
                | ClientError::Timeout { .. }
        )
    }
}

fn connect_advice(e: &io::Error) -> &'static str {
    match e.kind() {
        io::ErrorKind::PermissionDenied => {
            "the control socket needs root or the swarmwall group (try sudo)"
        }
        _ => {
            "is the daemon running? start it with `swarmwall daemon -i IFACE` (or point \
             --socket / SWARMWALL_SOCKET at its socket)"
        }
    }
}

/// A control API client.
#[derive(Clone, Debug)]
pub struct Client {
    path: PathBuf,
    timeout: Duration,
}

impl Client {
    /// A client for the daemon listening on `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Client {
            path: path.into(),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Sets how long one call may take.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `GET /v1/status`.
    pub async fn status(&self) -> Result<Status, ClientError> {
        self.get("/v1/status").await
    }

    /// `GET /v1/top`.
    pub async fn top(&self, query: &TopQuery) -> Result<TopView, ClientError> {
        self.get(&top_path(query)).await
    }

    /// `GET /v1/rules`.
    pub async fn rules(&self) -> Result<Vec<RuleView>, ClientError> {
        self.get("/v1/rules").await
    }

    /// `POST /v1/rules`.
    pub async fn add_rules(&self, request: &AddRules) -> Result<ChangeResult, ClientError> {
        self.send(Method::POST, "/v1/rules", request).await
    }

    /// `POST /v1/rules/delete`.
    pub async fn delete_rules(&self, request: &DeleteRules) -> Result<ChangeResult, ClientError> {
        self.send(Method::POST, "/v1/rules/delete", request).await
    }

    /// `GET /v1/allow`.
    pub async fn allow_list(&self) -> Result<Vec<AllowView>, ClientError> {
        self.get("/v1/allow").await
    }

    /// `POST /v1/allow`.
    pub async fn allow_add(&self, request: &AllowRequest) -> Result<ChangeResult, ClientError> {
        self.send(Method::POST, "/v1/allow", request).await
    }

    /// `POST /v1/allow/delete`.
    pub async fn allow_delete(&self, request: &AllowRequest) -> Result<ChangeResult, ClientError> {
        self.send(Method::POST, "/v1/allow/delete", request).await
    }

    /// `GET /v1/mode`.
    pub async fn mode(&self) -> Result<ModeView, ClientError> {
        self.get("/v1/mode").await
    }

    /// `PUT /v1/mode`.
    pub async fn set_mode(&self, request: &ModeView) -> Result<ChangeResult, ClientError> {
        self.send(Method::PUT, "/v1/mode", request).await
    }

    /// `GET /v1/history`: newest first.
    pub async fn history(&self, limit: Option<usize>) -> Result<Vec<ChangeView>, ClientError> {
        self.get(&history_path(limit)).await
    }

    /// `POST /v1/undo/{change_id}`.
    pub async fn undo(&self, change_id: u64) -> Result<ChangeResult, ClientError> {
        self.call(Method::POST, &format!("/v1/undo/{change_id}"), None)
            .await
    }

    /// `GET /v1/swarms`.
    pub async fn swarms(&self) -> Result<SwarmsView, ClientError> {
        self.get("/v1/swarms").await
    }

    /// `GET /v1/swarms/{id}`.
    pub async fn swarm(&self, id: u64) -> Result<SwarmView, ClientError> {
        self.get(&format!("/v1/swarms/{id}")).await
    }

    /// `GET` any route, decoding the answer as `T` (`serde_json::Value` for the raw wire JSON).
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.call(Method::GET, path, None).await
    }

    /// Sends `body` as JSON to any route, decoding the answer as `T`.
    pub async fn send<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let body = serde_json::to_vec(body).map_err(|e| ClientError::BadResponse {
            detail: format!("could not encode the request: {e}"),
        })?;
        self.call(method, path, Some(body)).await
    }

    /// One request on a fresh connection.
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T, ClientError> {
        let exchange = self.exchange(method, path, body);
        let (status, bytes) = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| ClientError::Timeout {
                timeout: self.timeout,
            })??;
        if !status.is_success() {
            return Err(match serde_json::from_slice::<ApiError>(&bytes) {
                Ok(e) => ClientError::Api {
                    status: status.as_u16(),
                    code: e.error.code,
                    message: e.error.message,
                },
                Err(_) => ClientError::Api {
                    status: status.as_u16(),
                    code: format!("http_{}", status.as_u16()),
                    message: format!("the daemon answered {status}: {}", snippet(&bytes)),
                },
            });
        }
        serde_json::from_slice(&bytes).map_err(|e| ClientError::BadResponse {
            detail: format!("{e} in {}", snippet(&bytes)),
        })
    }

    async fn exchange(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let stream =
            UnixStream::connect(&self.path)
                .await
                .map_err(|cause| ClientError::Connect {
                    path: self.path.clone(),
                    cause,
                })?;
        let transport = |e: hyper::Error| ClientError::Transport {
            detail: e.to_string(),
        };
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(transport)?;
        let conn = tokio::spawn(conn);
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, "swarmwall")
            .header(ACCEPT, "application/json");
        if body.is_some() {
            req = req.header(CONTENT_TYPE, "application/json");
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| ClientError::BadResponse {
                detail: format!("could not build the request for {path}: {e}"),
            })?;
        let res = sender.send_request(req).await.map_err(transport)?;
        let status = res.status();
        let bytes = res
            .into_body()
            .collect()
            .await
            .map_err(transport)?
            .to_bytes();
        drop(sender);
        // The connection ends once the sender is gone; its errors after a full answer don't matter.
        let _ = conn.await;
        Ok((status, bytes))
    }
}

/// The path and query of `GET /v1/top`.
pub fn top_path(query: &TopQuery) -> String {
    let mut params = Vec::new();
    if let Some(by) = &query.by {
        params.push(format!("by={}", encode(by)));
    }
    if let Some(w) = query.window_s {
        params.push(format!("window_s={w}"));
    }
    if let Some(l) = query.limit {
        params.push(format!("limit={l}"));
    }
    with_query("/v1/top", &params)
}

/// The path and query of `GET /v1/history`.
pub fn history_path(limit: Option<usize>) -> String {
    let params: Vec<String> = limit.map(|l| format!("limit={l}")).into_iter().collect();
    with_query("/v1/history", &params)
}

fn with_query(path: &str, params: &[String]) -> String {
    if params.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{}", params.join("&"))
    }
}

/// Percent-encodes everything but unreserved characters.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The start of a body, for error messages.
fn snippet(bytes: &[u8]) -> String {
    if bytes.is_empty() {
        return "(empty body)".into();
    }
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(200)]);
    let text = text.trim();
    if bytes.len() > 200 {
        format!("{text}...")
    } else {
        text.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings() {
        assert_eq!(top_path(&TopQuery::default()), "/v1/top");
        let q = TopQuery {
            by: Some("b ps&x".into()),
            window_s: Some(10),
            limit: Some(5),
        };
        assert_eq!(top_path(&q), "/v1/top?by=b%20ps%26x&window_s=10&limit=5");
        assert_eq!(history_path(None), "/v1/history");
        assert_eq!(history_path(Some(3)), "/v1/history?limit=3");
    }

    #[test]
    fn advice() {
        let e = ClientError::Connect {
            path: "/run/x.sock".into(),
            cause: io::Error::from(io::ErrorKind::NotFound),
        };
        assert!(e.to_string().contains("swarmwall daemon -i IFACE"), "{e}");
        assert!(e.is_unreachable());
        let e = ClientError::Connect {
            path: "/run/x.sock".into(),
            cause: io::Error::from(io::ErrorKind::PermissionDenied),
        };
        assert!(e.to_string().contains("root or the swarmwall group"), "{e}");
    }
}
