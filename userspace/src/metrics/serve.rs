//! The `/metrics` listener: plain HTTP/1.1 on TCP, read-only, few connections, short header
//! timeout (a stalled scraper cannot pile up connections).

use std::{convert::Infallible, io, sync::Arc, time::Duration};

use http_body_util::Full;
use hyper::{
    Method, Request, Response, StatusCode,
    body::{Bytes, Incoming},
    header::{ALLOW, CONTENT_TYPE as CONTENT_TYPE_HEADER},
};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{net::TcpListener, sync::Semaphore};

use super::{Snapshot, render};
use crate::api::Control;

/// The OpenMetrics text format, which `prometheus-client` writes; Prometheus asks for it.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The classic Prometheus text format, for every other client.
pub const CLASSIC_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Connections served at once; more wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 8;
/// A request's headers must arrive within this.
const HEADER_TIMEOUT: Duration = Duration::from_secs(2);

/// Serves `GET /metrics` from `control` until the task is dropped.
pub async fn serve(listener: TcpListener, control: Arc<dyn Control>) -> io::Result<()> {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = Arc::clone(&slots)
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) if crate::api::server::transient_accept_error(&e) => {
                tracing::warn!("accepting a metrics connection: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        let control = Arc::clone(&control);
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let control = Arc::clone(&control);
                async move { Ok::<_, Infallible>(answer(&req, control).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), svc);
            if let Err(e) = conn.await {
                tracing::debug!("metrics connection: {e}");
            }
            drop(permit);
        });
    }
}

async fn answer(req: &Request<Incoming>, control: Arc<dyn Control>) -> Response<Full<Bytes>> {
    if req.uri().path() != "/metrics" {
        return text(
            StatusCode::NOT_FOUND,
            format!("no {}; metrics are at /metrics\n", req.uri().path()),
        );
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = text(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{} is not allowed on /metrics\n", req.method()),
        );
        r.headers_mut()
            .insert(ALLOW, hyper::header::HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let openmetrics = req
        .headers()
        .get_all(hyper::header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    // The views take the controller's lock and read the kernel's maps: off the async threads.
    let rendered = tokio::task::spawn_blocking(move || {
        let snapshot = Snapshot {
            status: control.status()?,
            swarms: control.swarms()?,
            rules: control.rules()?,
        };
        render(&snapshot)
            .map_err(|_| crate::api::Failure::Internal("rendering the metrics failed".into()))
    })
    .await;
    match rendered {
        Ok(Ok(body)) => {
            let (body, ctype) = if openmetrics {
                (body, OPENMETRICS_CONTENT_TYPE)
            } else {
                (super::classic(&body), CLASSIC_CONTENT_TYPE)
            };
            response(StatusCode::OK, ctype, body)
        }
        Ok(Err(e)) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the daemon could not collect its metrics: {e}\n"),
        ),
        Err(e) => {
            tracing::error!("metrics handler failed: {e}");
            text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the daemon failed while collecting its metrics (see its log)\n".into(),
            )
        }
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    response(status, "text/plain; charset=utf-8", body)
}

fn response(status: StatusCode, ctype: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE_HEADER,
        hyper::header::HeaderValue::from_static(ctype),
    );
    r
}
