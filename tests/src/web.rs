//! Real HTTP between namespaces: a small image-heavy web site served by hyper, the visitors it is
//! built for, and a bot swarm hammering it — the lab demo's traffic and the live tests'.
//!
//! Why real HTTP on top of the pcaps in [`crate::scenarios`]: the data plane samples live TCP
//! segments that start an HTTP request, and the demo has to show an actual site staying usable
//! for its visitors while a swarm's SYNs are dropped. The two kinds of client differ in exactly
//! what swarmwall looks at:
//!
//! | | browsers ([`browse`]) | swarm ([`swarm`]) |
//! |---|---|---|
//! | connections | one keep-alive connection each, reused | a new connection per request |
//! | requests | a page, then every asset it references | the same few HTML pages, no assets |
//! | headers | a distinct `User-Agent` each, `Referer` | one shared `User-Agent`, no `Referer` |
//! | pacing | 300–1200 ms of think time between pages | a fixed rate per source address |
//!
//! Every request is kept as an [`Outcome`] — what the client saw, including a connect that timed
//! out, which is what a source whose SYNs XDP drops sees — and the [`WebServer`] counts what it
//! served per source, so a test can check that both ends agree and the lab can show who got
//! through.
//!
//! Clients run inside a namespace on a current-thread tokio runtime (so every socket is created
//! there), one task per source address. Everything is bounded: by the run's duration, by a stop
//! flag observed within [`STOP_POLL`], by a request cap per source, and by per-request timeouts.
//! Requests go only to the server address the caller gives, as plain HTTP/1.1 (each starts with
//! `GET `, which is what the kernel sampler looks for) — or, through [`crate::tls`], the same
//! clients and site over TLS.
//!
//! ```no_run
//! use std::{sync::atomic::AtomicBool, time::Duration};
//! use swarmwall_integration::{
//!     netns::{NetNs, VethPair},
//!     web::{Browsing, WebServer, browse},
//! };
//!
//! # fn main() -> anyhow::Result<()> {
//! let server_ns = NetNs::new("sws")?;
//! let client_ns = NetNs::new("swc")?;
//! let _link = VethPair::new(&server_ns, &client_ns, "198.51.100.1/24", "198.51.100.2/24")?;
//! let server = WebServer::start(&server_ns, "198.51.100.1:80".parse()?)?;
//! let visitors = Browsing {
//!     server: server.local_addr(),
//!     host: "lab.example".into(),
//!     sources: vec!["198.51.100.2".parse()?],
//!     duration: Duration::from_secs(3),
//!     connect_timeout: Duration::from_secs(1),
//! };
//! let outcomes = browse(&client_ns, &visitors, &AtomicBool::new(false))?;
//! assert!(outcomes.iter().all(|o| o.result == Ok(200)));
//! assert_eq!(server.served_total(), outcomes.len() as u64);
//! # Ok(())
//! # }
//! ```

use std::{
    collections::HashMap,
    convert::Infallible,
    fmt::{self, Write as _},
    net::{IpAddr, SocketAddr},
    sync::{
        Arc, Mutex, OnceLock, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow, ensure};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty, Full};
use hyper::{
    Method, Request, Response, StatusCode, Uri,
    body::Incoming,
    client::conn::http1::SendRequest,
    header::{self, HeaderValue},
    service::service_fn,
};
use hyper_util::rt::TokioIo;
use tokio::{
    net::{TcpSocket, TcpStream},
    sync::{oneshot, watch},
    task::{JoinError, JoinSet},
    time::timeout,
};

use crate::{
    netns::{NetNs, in_netns},
    tls::TlsClient,
    traffic::tcp_listen,
};

// ---------------------------------------------------------------------------------------------
// The site
// ---------------------------------------------------------------------------------------------

/// The lab site's HTML pages. Each references the assets [`assets_of`] lists and links to all
/// the others; anything else the site serves is an asset, and any other path is a 404.
pub const PAGES: &[&str] = &["/", "/gallery/1", "/gallery/2", "/about"];

const HOME_ASSETS: &[&str] = &["/style.css", "/app.js", "/img/logo.png"];
const GALLERY_1_ASSETS: &[&str] = &[
    "/style.css",
    "/img/g1-1.jpg",
    "/img/g1-2.jpg",
    "/img/g1-3.jpg",
    "/img/g1-4.jpg",
    "/img/g1-5.jpg",
    "/img/g1-6.jpg",
];
const GALLERY_2_ASSETS: &[&str] = &[
    "/style.css",
    "/img/g2-1.jpg",
    "/img/g2-2.jpg",
    "/img/g2-3.jpg",
    "/img/g2-4.jpg",
    "/img/g2-5.jpg",
    "/img/g2-6.jpg",
];
const ABOUT_ASSETS: &[&str] = &["/style.css", "/img/logo.png", "/img/team.jpg"];

/// Images are between these sizes (bytes; the upper bound exclusive): big enough that a page
/// view is mostly asset bytes, as on a real image-heavy site.
const IMAGE_SIZE: (usize, usize) = (32 * 1024, 64 * 1024);
/// HTML pages are filled with prose up to a per-page size in this range (bytes), then closed.
const HTML_FILL: (usize, usize) = (2500, 7000);
/// The stylesheet and the script are filled up to these sizes (bytes).
const CSS_SIZE: usize = 3000;
const JS_SIZE: usize = 4500;

/// The sub-resources (stylesheet, script, images) a browser fetches after `page`, in document
/// order; empty for anything not in [`PAGES`].
pub fn assets_of(page: &str) -> &'static [&'static str] {
    match page {
        "/" => HOME_ASSETS,
        "/gallery/1" => GALLERY_1_ASSETS,
        "/gallery/2" => GALLERY_2_ASSETS,
        "/about" => ABOUT_ASSETS,
        _ => &[],
    }
}

/// One thing the site serves.
#[derive(Clone, Debug)]
struct Resource {
    content_type: &'static str,
    body: Bytes,
}

/// Everything the site serves, by path: generated once per process (deterministically), then
/// shared — a response body is a reference-counted [`Bytes`], not a copy.
#[derive(Debug)]
struct Site {
    resources: HashMap<&'static str, Resource>,
}

fn site() -> &'static Site {
    static SITE: OnceLock<Site> = OnceLock::new();
    SITE.get_or_init(build_site)
}

fn build_site() -> Site {
    let mut resources = HashMap::new();
    for &page in PAGES {
        resources.insert(
            page,
            Resource {
                content_type: "text/html; charset=utf-8",
                body: Bytes::from(page_html(page)),
            },
        );
        for &asset in assets_of(page) {
            resources
                .entry(asset)
                .or_insert_with(|| asset_resource(asset));
        }
    }
    Site { resources }
}

fn is_image(path: &str) -> bool {
    path.ends_with(".png") || path.ends_with(".jpg")
}

fn asset_resource(path: &str) -> Resource {
    if path.ends_with(".css") {
        Resource {
            content_type: "text/css; charset=utf-8",
            body: Bytes::from(stylesheet()),
        }
    } else if path.ends_with(".js") {
        Resource {
            content_type: "text/javascript; charset=utf-8",
            body: Bytes::from(script()),
        }
    } else if path.ends_with(".png") {
        Resource {
            content_type: "image/png",
            body: Bytes::from(image(path)),
        }
    } else {
        Resource {
            content_type: "image/jpeg",
            body: Bytes::from(image(path)),
        }
    }
}

fn page_title(page: &str) -> &'static str {
    match page {
        "/" => "Home",
        "/gallery/1" => "Gallery: the harbour",
        "/gallery/2" => "Gallery: the mountains",
        "/about" => "About us",
        _ => "Not found",
    }
}

/// The prose filling the pages is drawn from these.
const WORDS: &str = "harbour light morning boats quiet water stone path ridge snow valley evening window \
    market bridge river colour shadow street summer winter north coast cloud photograph \
    camera lens frame walk hill garden old town square wind sail rope net fisher lamp the a \
    of and in over under with from we";

/// A page's HTML: stylesheet and script in the head, navigation to every page, a figure per
/// image, then deterministic prose up to the page's size.
fn page_html(page: &str) -> String {
    let seed = fnv1a(page.as_bytes());
    let fill = HTML_FILL.0 + (seed % (HTML_FILL.1 - HTML_FILL.0) as u64) as usize;
    let title = page_title(page);
    let assets = assets_of(page);
    let mut html = String::with_capacity(fill + 1024);
    // Writing to a String cannot fail.
    let _ = write!(
        html,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{title} - Swarmwall lab</title>\n"
    );
    for asset in assets {
        if asset.ends_with(".css") {
            let _ = writeln!(html, "<link rel=\"stylesheet\" href=\"{asset}\">");
        } else if asset.ends_with(".js") {
            let _ = writeln!(html, "<script src=\"{asset}\" defer></script>");
        }
    }
    html.push_str("</head>\n<body>\n<header>\n<nav>\n");
    for other in PAGES {
        let _ = writeln!(html, "<a href=\"{other}\">{}</a>", page_title(other));
    }
    let _ = write!(html, "</nav>\n</header>\n<main>\n<h1>{title}</h1>\n");
    for (n, image) in assets.iter().filter(|a| is_image(a)).enumerate() {
        let _ = writeln!(
            html,
            "<figure><img src=\"{image}\" alt=\"Picture {n}\" width=\"640\" height=\"480\">\
             <figcaption>Picture {n} of {title}</figcaption></figure>",
            n = n + 1
        );
    }
    let words: Vec<&str> = WORDS.split_whitespace().collect();
    let mut rng = XorShift::new(seed);
    while html.len() < fill {
        html.push_str("<p>");
        let count = 40 + rng.below(40);
        for w in 0..count {
            let word = words.get(rng.below(words.len())).copied().unwrap_or("lab");
            if w > 0 {
                html.push(' ');
            }
            html.push_str(word);
            if w + 1 < count && rng.below(12) == 0 {
                html.push(',');
            }
        }
        html.push_str(".</p>\n");
    }
    html.push_str(
        "</main>\n<footer><p>Swarmwall lab site: nothing here is real.</p></footer>\n\
         </body>\n</html>\n",
    );
    html
}

fn stylesheet() -> String {
    let mut css = String::from(
        "body { margin: 0; font: 16px/1.5 system-ui, sans-serif; color: #222; }\n\
         header { background: #123; padding: 0.5rem 1rem; }\n\
         nav a { color: #fff; margin-right: 1rem; text-decoration: none; }\n\
         main { max-width: 60rem; margin: 0 auto; padding: 1rem; }\n\
         figure { display: inline-block; margin: 0.5rem; }\n\
         figure img { max-width: 100%; height: auto; border-radius: 4px; }\n\
         footer { color: #666; font-size: 0.8rem; text-align: center; }\n",
    );
    let mut i = 0;
    while css.len() < CSS_SIZE {
        let _ = writeln!(
            css,
            ".thumb-{i} {{ margin: {}px; border-radius: {}px; opacity: 0.{}; }}",
            i % 7,
            i % 5,
            9 - i % 4
        );
        i += 1;
    }
    css
}

fn script() -> String {
    let mut js = String::from(
        "'use strict';\n\
         document.addEventListener('DOMContentLoaded', function () {\n  \
           document.querySelectorAll('figure img').forEach(function (img, i) {\n    \
             img.addEventListener('click', function () { openLightbox(i); });\n  \
           });\n\
         });\n",
    );
    let mut i = 0;
    while js.len() < JS_SIZE {
        let _ = writeln!(
            js,
            "function step{i}(state) {{ \
             return {{ index: (state.index + {}) % {}, zoom: state.zoom * 1.{} }}; }}",
            i % 3 + 1,
            i % 9 + 2,
            i % 10
        );
        i += 1;
    }
    js.push_str(
        "function openLightbox(i) { console.log('lightbox', step0({ index: i, zoom: 1 })); }\n",
    );
    js
}

/// An image's bytes: the format's magic number, deterministic noise, the format's trailer; its
/// size depends on the path. Not decodable — only the sizes and the first bytes are realistic.
fn image(path: &str) -> Vec<u8> {
    let seed = fnv1a(path.as_bytes());
    let len = IMAGE_SIZE.0 + (seed % (IMAGE_SIZE.1 - IMAGE_SIZE.0) as u64) as usize;
    let (magic, trailer): (&[u8], &[u8]) = if path.ends_with(".png") {
        (b"\x89PNG\r\n\x1a\n", b"IEND\xaeB`\x82")
    } else {
        (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00", b"\xff\xd9")
    };
    let mut rng = XorShift::new(seed);
    let mut body = Vec::with_capacity(len + 8);
    body.extend_from_slice(magic);
    while body.len() < len - trailer.len() {
        body.extend_from_slice(&rng.next_u64().to_le_bytes());
    }
    body.truncate(len - trailer.len());
    body.extend_from_slice(trailer);
    body
}

/// The site's answer to `method path` (the path without its query): GET and HEAD of a known path
/// are 200, unknown paths 404, other methods 405. Every response carries Content-Length; a HEAD
/// response carries the GET's length and no body.
fn respond(method: &Method, path: &str) -> Response<Full<Bytes>> {
    let head = method == Method::HEAD;
    if method != Method::GET && !head {
        let mut response = response(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            Bytes::from_static(b"method not allowed\n"),
            false,
        );
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    match site().resources.get(path) {
        Some(r) => response(StatusCode::OK, r.content_type, r.body.clone(), head),
        None => response(
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            Bytes::from_static(b"not found\n"),
            head,
        ),
    }
}

fn response(
    status: StatusCode,
    content_type: &'static str,
    body: Bytes,
    head: bool,
) -> Response<Full<Bytes>> {
    let len = body.len();
    let mut response = Response::new(Full::new(if head { Bytes::new() } else { body }));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    response
}

// ---------------------------------------------------------------------------------------------
// The server
// ---------------------------------------------------------------------------------------------

/// How long dropping a [`WebServer`] waits for its thread before leaving it detached.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause after a failed `accept` (out of file descriptors, a connection reset while queued)
/// before accepting again, so a persistent error does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);

/// What a [`WebServer`] has seen from one source address.
#[derive(Clone, Copy, Debug, Default)]
struct SourceCounts {
    connections: u64,
    served: u64,
}

#[derive(Debug, Default)]
struct Counts(Mutex<HashMap<IpAddr, SourceCounts>>);

impl Counts {
    fn update(&self, src: IpAddr, f: impl FnOnce(&mut SourceCounts)) {
        // A panic elsewhere while holding the lock leaves plain counters: still usable.
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        f(map.entry(src).or_default());
    }

    fn get(&self, field: fn(&SourceCounts) -> u64) -> HashMap<IpAddr, u64> {
        let map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        map.iter()
            .map(|(src, counts)| (*src, field(counts)))
            .filter(|(_, n)| *n > 0)
            .collect()
    }
}

/// The lab site served over HTTP/1.1 with keep-alive from inside a namespace, counting
/// connections and 2xx responses per client address. Serves until dropped; dropping it stops
/// the server and joins its thread (waiting at most a couple of seconds).
#[derive(Debug)]
pub struct WebServer {
    local: SocketAddr,
    counts: Arc<Counts>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl WebServer {
    /// Serves HTTP/1.1 (keep-alive) on `addr` inside `ns` (port 0 picks one: see
    /// [`WebServer::local_addr`]).
    ///
    /// The listener is bound inside the namespace, then served by a dedicated thread running a
    /// current-thread tokio runtime with hyper's `server::conn::http1`, one task per connection.
    pub fn start(ns: &NetNs, addr: SocketAddr) -> Result<WebServer> {
        WebServer::start_serving(ns, addr, Serving::default())
    }

    /// [`WebServer::start`], with TLS under HTTP and an access log if `serving` says so (the
    /// HTTPS server of [`crate::tls`]).
    pub(crate) fn start_serving(
        ns: &NetNs,
        addr: SocketAddr,
        serving: Serving,
    ) -> Result<WebServer> {
        let listener = tcp_listen(ns, addr)?;
        let local = listener
            .local_addr()
            .with_context(|| format!("reading the address of the listener on {addr}"))?;
        listener
            .set_nonblocking(true)
            .with_context(|| format!("making the listener on {local} non-blocking"))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("building the web server's tokio runtime")?;
        let listener = {
            let _entered = runtime.enter();
            tokio::net::TcpListener::from_std(listener)
        }
        .with_context(|| format!("registering the listener on {local} with tokio"))?;
        let counts = Arc::new(Counts::default());
        let (shutdown, shutdown_rx) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name(format!("web-{}", local.port()))
            .spawn({
                let counts = Arc::clone(&counts);
                // Dropping the runtime when the accept loop ends cancels every connection task
                // and closes its socket.
                move || runtime.block_on(serve(listener, shutdown_rx, counts, Arc::new(serving)))
            })
            .with_context(|| format!("starting the web server thread for {local}"))?;
        Ok(WebServer {
            local,
            counts,
            shutdown: Some(shutdown),
            thread: Some(thread),
        })
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// 2xx responses sent so far, per client address (sources with none are absent).
    ///
    /// A response is counted when it is handed to hyper, before it is written: a client that
    /// gives up at that very moment (its request timed out, or its run was stopped) has been
    /// counted here without recording the response itself.
    pub fn served(&self) -> HashMap<IpAddr, u64> {
        self.counts.get(|c| c.served)
    }

    /// Total 2xx responses sent so far.
    pub fn served_total(&self) -> u64 {
        self.served().values().sum()
    }

    /// TCP connections accepted so far, per client address: one per browser while its
    /// keep-alive connection lasts, one per request for the swarm.
    pub fn connections(&self) -> HashMap<IpAddr, u64> {
        self.counts.get(|c| c.connections)
    }
}

impl Drop for WebServer {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let deadline = Instant::now() + SHUTDOWN_TIMEOUT;
            while !thread.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(2));
            }
            // A thread still running past the deadline is left detached: it holds nothing but
            // its own sockets, and joining it could hang the caller.
            if thread.is_finished() {
                let _ = thread.join();
            }
        }
    }
}

/// What a [`WebServer`] does besides plain HTTP/1.1: a TLS handshake first, an access log.
#[derive(Default)]
pub(crate) struct Serving {
    /// Accepts TLS on every connection before HTTP.
    pub(crate) tls: Option<tokio_rustls::TlsAcceptor>,
    /// Where every response is logged, one line each.
    pub(crate) log: Option<crate::tls::AccessLog>,
}

/// How long a TLS client has for its handshake before the server drops the connection.
const TLS_ACCEPT_TIMEOUT: Duration = Duration::from_secs(5);

/// Accepts connections until `shutdown` fires (or its sender is dropped), serving each on its
/// own task.
async fn serve(
    listener: tokio::net::TcpListener,
    mut shutdown: oneshot::Receiver<()>,
    counts: Arc<Counts>,
    serving: Arc<Serving>,
) {
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(_) => {
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        // A dual-stack listener sees IPv4 clients as v4-mapped IPv6 addresses.
        let src = peer.ip().to_canonical();
        counts.update(src, |c| c.connections += 1);
        let _ = stream.set_nodelay(true);
        let counts = Arc::clone(&counts);
        let serving = Arc::clone(&serving);
        tokio::spawn(async move {
            let service = {
                let serving = Arc::clone(&serving);
                service_fn(move |request: Request<Incoming>| {
                    let response = respond(request.method(), request.uri().path());
                    if response.status().is_success() {
                        counts.update(src, |c| c.served += 1);
                    }
                    if let Some(log) = &serving.log {
                        log.record(src, &request, &response);
                    }
                    std::future::ready(Ok::<_, Infallible>(response))
                })
            };
            // A client resetting or vanishing mid-request (or mid-handshake) ends its
            // connection, nothing more.
            let http = hyper::server::conn::http1::Builder::new();
            match &serving.tls {
                None => {
                    let _ = http.serve_connection(TokioIo::new(stream), service).await;
                }
                Some(acceptor) => {
                    if let Ok(Ok(stream)) =
                        timeout(TLS_ACCEPT_TIMEOUT, acceptor.accept(stream)).await
                    {
                        let _ = http.serve_connection(TokioIo::new(stream), service).await;
                    }
                }
            }
        });
    }
}

// ---------------------------------------------------------------------------------------------
// The clients
// ---------------------------------------------------------------------------------------------

/// Longest a request may take once its connection is up: sending it, the response head and
/// the whole body. Past it the request is an [`Failure::Io`].
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// How often a run checks its `stop` flag (and its hard deadline): the bound on how late it
/// notices.
pub const STOP_POLL: Duration = Duration::from_millis(50);
/// Most requests one browser makes in a run, whatever its duration.
pub const MAX_REQUESTS_PER_BROWSER: usize = 10_000;
/// Shortest think time of a browser between two page views.
pub const THINK_MIN: Duration = Duration::from_millis(300);
/// Longest think time of a browser between two page views.
pub const THINK_MAX: Duration = Duration::from_millis(1200);
/// Highest request rate [`swarm`] accepts per source address.
pub const MAX_SOURCE_RPS: f64 = 1000.0;
/// Longest connect timeout a run accepts.
pub const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(60);

/// Browsers arrive spread over this much time at the start of a run, not in lockstep.
const ARRIVAL_SPREAD: Duration = Duration::from_millis(300);
/// Extra time past `duration` + connect timeout + [`REQUEST_TIMEOUT`] after which a run stops
/// itself as if `stop` had been set: the bound that holds whatever happens on the wire.
const OVERRUN_SLACK: Duration = Duration::from_secs(1);
/// Seeds the browsers' choices (mixed with each browser's index).
const VISITOR_SEED: u64 = 0x5357_4152_4d57_414c;

const PAGE_ACCEPT: &str = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
const CSS_ACCEPT: &str = "text/css,*/*;q=0.1";
const IMAGE_ACCEPT: &str = "image/avif,image/webp,image/png,image/svg+xml,image/*;q=0.8,*/*;q=0.5";
const ANY_ACCEPT: &str = "*/*";

/// Why a request got no response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// Nothing answered the SYN within the connect timeout: what a source whose SYNs are
    /// dropped (by XDP, or on the way) sees.
    ConnectTimeout,
    /// The connect was answered with a reset: nothing listens there.
    Refused,
    /// Anything else: a reset or [`REQUEST_TIMEOUT`] while the request was under way, an
    /// unreachable destination, a malformed response, a local socket error.
    Io,
    /// The TLS handshake failed: the server's certificate was not trusted, or client and
    /// server had no version or cipher suite in common.
    Tls,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Failure::ConnectTimeout => "connect timed out",
            Failure::Refused => "connection refused",
            Failure::Io => "I/O error",
            Failure::Tls => "TLS handshake failed",
        })
    }
}

/// One request's outcome, as a client saw it.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// When the request started (for one that needed a new connection: when the connect
    /// started).
    pub at: Instant,
    /// The source address it was sent from.
    pub src: IpAddr,
    /// The path requested.
    pub path: String,
    /// The response's status code, or why there was none.
    pub result: Result<u16, Failure>,
}

impl Outcome {
    /// Whether the request got a 2xx response — what [`WebServer::served`] counts.
    pub fn succeeded(&self) -> bool {
        is_success(self.result)
    }
}

fn is_success(result: Result<u16, Failure>) -> bool {
    matches!(result, Ok(status) if (200..300).contains(&status))
}

/// 2xx responses per source among `outcomes` (sources with none are absent): the client-side
/// counterpart of [`WebServer::served`].
pub fn succeeded_by_source(outcomes: &[Outcome]) -> HashMap<IpAddr, u64> {
    let mut counts = HashMap::new();
    for outcome in outcomes.iter().filter(|o| o.succeeded()) {
        *counts.entry(outcome.src).or_insert(0) += 1;
    }
    counts
}

/// The `User-Agent` of browser `index` in a [`browse`] run: a real Firefox string, tagged so
/// each visitor's is distinct.
pub fn browser_user_agent(index: usize) -> String {
    format!(
        "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0 lab-visitor-{index}"
    )
}

/// Legitimate visitors: one browser per source address, reading pages of the lab site.
///
/// Each browser keeps one keep-alive connection (reopened if it fails), picks a page
/// pseudo-randomly (deterministic per browser), fetches it and then every one of its
/// [`assets_of`] with `Referer` set to the page, and thinks for [`THINK_MIN`]–[`THINK_MAX`]
/// before the next one. It caches nothing: every page view is a first visit.
#[derive(Clone, Debug)]
pub struct Browsing {
    /// The web server's address.
    pub server: SocketAddr,
    /// The `Host` header (and the host in `Referer`), e.g. `lab.example`.
    pub host: String,
    /// One browser per address; each must be an address of the namespace the run is in, of the
    /// server's family.
    pub sources: Vec<IpAddr>,
    /// How long to browse: no request starts after it.
    pub duration: Duration,
    /// How long a connect may wait for the SYN-ACK.
    pub connect_timeout: Duration,
}

/// A bot swarm: many source addresses, each requesting the same few pages at a fixed rate,
/// a new connection per request (`Connection: close`), no assets, no `Referer`, one shared
/// `User-Agent`.
///
/// Each source fires on a fixed schedule whatever happens to earlier requests (a connect that
/// times out does not delay the next one), walking `pages` round-robin; the sources' schedules
/// are staggered evenly over one interval. At most `ceil(per_source_rps × duration) + 1`
/// requests per source.
#[derive(Clone, Debug)]
pub struct Swarm {
    /// The web server's address.
    pub server: SocketAddr,
    /// The `Host` header, e.g. `lab.example`.
    pub host: String,
    /// The bots' addresses; each must be an address of the namespace the run is in, of the
    /// server's family.
    pub sources: Vec<IpAddr>,
    /// The paths to request, round-robin (each must start with `/`).
    pub pages: Vec<String>,
    /// Requests per second from each source, at most [`MAX_SOURCE_RPS`].
    pub per_source_rps: f64,
    /// How long to attack: no request starts after it.
    pub duration: Duration,
    /// How long a connect may wait for the SYN-ACK.
    pub connect_timeout: Duration,
    /// The `User-Agent` every bot sends.
    pub user_agent: String,
    /// Load each page as `wget -p` does: once the page is served, every one of its
    /// [`assets_of`], one after the other, each on a fresh connection with the page as
    /// `Referer`. `per_source_rps` then counts page views.
    pub load_assets: bool,
}

/// Runs the browsers inside `ns` until `duration` passes or `stop` is set, and returns every
/// request's outcome, ordered by start time.
///
/// Blocks: run it on a thread to overlap it with a [`swarm`]. A request under way when the
/// duration ends completes (within its timeouts); one under way when `stop` is set is abandoned
/// and not recorded. Fails only if the run could not be set up (a source that is not an address
/// of `ns`, a bad host).
pub fn browse(ns: &NetNs, b: &Browsing, stop: &AtomicBool) -> Result<Vec<Outcome>> {
    browse_over(ns, b, None, stop)
}

/// [`browse`], over TLS when `tls` is given (the `Referer`s are then `https://` ones).
pub(crate) fn browse_over(
    ns: &NetNs,
    b: &Browsing,
    tls: Option<Arc<TlsClient>>,
    stop: &AtomicBool,
) -> Result<Vec<Outcome>> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut target = Target::new(b.server, &b.host, &b.sources, b.duration, b.connect_timeout)?;
    target.tls = tls;
    let target = Arc::new(target);
    let pages = Arc::new(site_pages(&b.host, scheme)?);
    run_clients(ns, "browser", &b.sources, stop, &target, |i, src, stop| {
        visitor(Arc::clone(&target), Arc::clone(&pages), i, src, stop)
    })
}

/// Runs the swarm inside `ns` until `duration` passes or `stop` is set, and returns every
/// request's outcome, ordered by start time.
///
/// Blocks: run it on a thread to overlap it with [`browse`]. A request under way when the
/// duration ends completes (within its timeouts); requests under way when `stop` is set are
/// abandoned and not recorded. Fails only if the run could not be set up (a source that is not an
/// address of `ns`, a bad page, host or user agent, a rate out of range).
pub fn swarm(ns: &NetNs, s: &Swarm, stop: &AtomicBool) -> Result<Vec<Outcome>> {
    swarm_over(ns, s, None, stop)
}

/// [`swarm`], over TLS when `tls` is given: every request is then a new TLS handshake.
pub(crate) fn swarm_over(
    ns: &NetNs,
    s: &Swarm,
    tls: Option<Arc<TlsClient>>,
    stop: &AtomicBool,
) -> Result<Vec<Outcome>> {
    let plan = Arc::new(BotPlan::new(s)?);
    let mut target = Target::new(s.server, &s.host, &s.sources, s.duration, s.connect_timeout)?;
    target.tls = tls;
    let target = Arc::new(target);
    run_clients(ns, "bot", &s.sources, stop, &target, |i, src, stop| {
        bot(Arc::clone(&target), Arc::clone(&plan), i, src, stop)
    })
}

/// Where a run's requests go and when it ends: shared by all its tasks.
#[derive(Debug)]
struct Target {
    server: SocketAddr,
    host: HeaderValue,
    connect_timeout: Duration,
    start: Instant,
    end: Instant,
    /// Past this the run stops itself as if `stop` had been set.
    hard_end: Instant,
    /// TLS under HTTP, if the run is over HTTPS.
    tls: Option<Arc<TlsClient>>,
}

impl Target {
    fn new(
        server: SocketAddr,
        host: &str,
        sources: &[IpAddr],
        duration: Duration,
        connect_timeout: Duration,
    ) -> Result<Target> {
        let host_header = HeaderValue::from_str(host)
            .with_context(|| format!("{host:?} is not a valid Host header"))?;
        ensure!(
            !connect_timeout.is_zero() && connect_timeout <= MAX_CONNECT_TIMEOUT,
            "connect timeout {connect_timeout:?} is not in (0, {MAX_CONNECT_TIMEOUT:?}]"
        );
        for src in sources {
            ensure!(
                src.is_ipv4() == server.is_ipv4(),
                "source {src} and server {server} are of different address families"
            );
        }
        let start = Instant::now();
        let end = start
            .checked_add(duration)
            .with_context(|| format!("duration {duration:?} is too long"))?;
        let hard_end = end
            .checked_add(connect_timeout + REQUEST_TIMEOUT + OVERRUN_SLACK)
            .with_context(|| format!("duration {duration:?} is too long"))?;
        Ok(Target {
            server,
            host: host_header,
            connect_timeout,
            start,
            end,
            hard_end,
            tls: None,
        })
    }
}

/// Runs one task per source inside `ns` on a current-thread runtime, relays `stop` (polled every
/// [`STOP_POLL`], and set by the run itself at `target.hard_end`) to the tasks, and returns all
/// their outcomes ordered by start time.
fn run_clients<F, Fut>(
    ns: &NetNs,
    what: &str,
    sources: &[IpAddr],
    stop: &AtomicBool,
    target: &Target,
    task: F,
) -> Result<Vec<Outcome>>
where
    F: Fn(usize, IpAddr, watch::Receiver<bool>) -> Fut + Sync,
    Fut: Future<Output = Result<Vec<Outcome>>> + Send + 'static,
{
    in_netns(ns, || -> Result<Vec<Outcome>> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .with_context(|| format!("building the {what}s' tokio runtime"))?;
        runtime.block_on(async {
            for src in sources {
                check_source(*src)
                    .with_context(|| format!("{what} source {src} in netns {}", ns.name()))?;
            }
            let (stop_tx, stop_rx) = watch::channel(false);
            let mut tasks = JoinSet::new();
            for (i, src) in sources.iter().enumerate() {
                tasks.spawn(task(i, *src, stop_rx.clone()));
            }
            let mut poll = tokio::time::interval(STOP_POLL);
            let mut outcomes = Vec::new();
            loop {
                tokio::select! {
                    joined = tasks.join_next() => match joined {
                        None => break,
                        Some(Ok(done)) => outcomes.extend(done?),
                        Some(Err(e)) => return Err(anyhow!("a {what} task failed: {e}")),
                    },
                    _ = poll.tick() => {
                        if stop.load(Ordering::Relaxed) || Instant::now() >= target.hard_end {
                            stop_tx.send_replace(true);
                        }
                    }
                }
            }
            outcomes.sort_by_key(|o| o.at);
            Ok(outcomes)
        })
    })?
}

/// Fails unless a TCP socket can be bound to `src` — that is, unless `src` is an address of the
/// current namespace.
fn check_source(src: IpAddr) -> Result<()> {
    let socket = new_socket(src).context("creating a TCP socket")?;
    socket
        .bind(SocketAddr::new(src, 0))
        .context("binding to it failed: is it an address of this namespace?")
}

fn new_socket(src: IpAddr) -> std::io::Result<TcpSocket> {
    if src.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
}

/// Waits until the run is stopped (or its coordinator is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}

/// Runs `work` unless the run is stopped first.
async fn until_stopped<T>(
    stop: &mut watch::Receiver<bool>,
    work: impl Future<Output = T>,
) -> Option<T> {
    tokio::select! {
        done = work => Some(done),
        () = stopped(stop) => None,
    }
}

/// Sleeps for `pause`, cut short at `end`; returns whether the run goes on (neither stopped nor
/// past `end`).
async fn pause(pause: Duration, end: Instant, stop: &mut watch::Receiver<bool>) -> bool {
    let wake = Instant::now()
        .checked_add(pause)
        .map_or(end, |wake| wake.min(end));
    tokio::select! {
        () = tokio::time::sleep_until(wake.into()) => Instant::now() < end,
        () = stopped(stop) => false,
    }
}

/// Opens a TCP connection from `src` (port chosen by the kernel) to `server`.
async fn connect(
    src: IpAddr,
    server: SocketAddr,
    connect_timeout: Duration,
) -> Result<TcpStream, Failure> {
    let socket = new_socket(src).map_err(|_| Failure::Io)?;
    socket
        .bind(SocketAddr::new(src, 0))
        .map_err(|_| Failure::Io)?;
    match timeout(connect_timeout, socket.connect(server)).await {
        Err(_elapsed) => Err(Failure::ConnectTimeout),
        Ok(Err(e)) => Err(match e.kind() {
            std::io::ErrorKind::ConnectionRefused => Failure::Refused,
            std::io::ErrorKind::TimedOut => Failure::ConnectTimeout,
            _ => Failure::Io,
        }),
        Ok(Ok(stream)) => {
            let _ = stream.set_nodelay(true);
            Ok(stream)
        }
    }
}

/// Connects from `src` (client `index` of the run) to the target and starts HTTP/1.1 on the
/// connection, over TLS if the run is, within [`REQUEST_TIMEOUT`] once connected.
async fn open(
    src: IpAddr,
    index: usize,
    target: &Target,
) -> Result<SendRequest<Empty<Bytes>>, Failure> {
    let stream = connect(src, target.server, target.connect_timeout).await?;
    timeout(REQUEST_TIMEOUT, establish(stream, index, target))
        .await
        .unwrap_or(Err(Failure::Io))
}

/// Starts HTTP/1.1 on a connection of client `index`, after a TLS handshake if the run is over
/// TLS.
async fn establish(
    stream: TcpStream,
    index: usize,
    target: &Target,
) -> Result<SendRequest<Empty<Bytes>>, Failure> {
    match &target.tls {
        None => handshake(stream).await,
        Some(tls) => handshake(tls.connect(index, stream).await?).await,
    }
}

/// Starts HTTP/1.1 on `stream` (title-case header names, as browsers send them); the
/// connection is driven by its own task until the last sender is dropped.
async fn handshake<S>(stream: S) -> Result<SendRequest<Empty<Bytes>>, Failure>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = hyper::client::conn::http1::Builder::new()
        .title_case_headers(true)
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|_| Failure::Io)?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

/// Sends `request` and reads the whole response; returns its status.
async fn exchange(
    sender: &mut SendRequest<Empty<Bytes>>,
    request: Request<Empty<Bytes>>,
) -> Result<u16, Failure> {
    sender.ready().await.map_err(|_| Failure::Io)?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|_| Failure::Io)?;
    let status = response.status().as_u16();
    response
        .into_body()
        .collect()
        .await
        .map_err(|_| Failure::Io)?;
    Ok(status)
}

/// A GET of `uri` with the headers every client sends, in this order: `Host`, `User-Agent`,
/// `Accept`.
fn get(
    uri: &Uri,
    host: &HeaderValue,
    user_agent: &HeaderValue,
    accept: &'static str,
) -> Request<Empty<Bytes>> {
    let mut request = Request::new(Empty::new());
    *request.uri_mut() = uri.clone();
    let headers = request.headers_mut();
    headers.insert(header::HOST, host.clone());
    headers.insert(header::USER_AGENT, user_agent.clone());
    headers.insert(header::ACCEPT, HeaderValue::from_static(accept));
    request
}

// --- browsers ---

/// A page of the site as the browsers request it.
#[derive(Debug)]
struct Page {
    path: &'static str,
    uri: Uri,
    /// `http://{host}{path}` (`https://` over TLS): the `Referer` of its assets and of the next
    /// page.
    referer: HeaderValue,
    assets: Vec<(&'static str, Uri)>,
}

fn site_pages(host: &str, scheme: &str) -> Result<Vec<Page>> {
    let uri = |path: &str| {
        path.parse::<Uri>()
            .with_context(|| format!("{path:?} is not a valid request target"))
    };
    PAGES
        .iter()
        .map(|&path| {
            let referer = format!("{scheme}://{host}{path}");
            Ok(Page {
                path,
                uri: uri(path)?,
                referer: HeaderValue::from_str(&referer)
                    .with_context(|| format!("{referer:?} is not a valid Referer header"))?,
                assets: assets_of(path)
                    .iter()
                    .map(|&asset| Ok((asset, uri(asset)?)))
                    .collect::<Result<_>>()?,
            })
        })
        .collect()
}

fn accept_for(path: &str) -> &'static str {
    if path.ends_with(".css") {
        CSS_ACCEPT
    } else if is_image(path) {
        IMAGE_ACCEPT
    } else {
        ANY_ACCEPT
    }
}

/// One browser: page views with think time until the run ends.
async fn visitor(
    target: Arc<Target>,
    pages: Arc<Vec<Page>>,
    index: usize,
    src: IpAddr,
    mut stop: watch::Receiver<bool>,
) -> Result<Vec<Outcome>> {
    let agent = browser_user_agent(index);
    let user_agent = HeaderValue::from_str(&agent)
        .with_context(|| format!("{agent:?} is not a valid User-Agent header"))?;
    let mut rng = XorShift::new(VISITOR_SEED ^ index as u64);
    let mut outcomes = Vec::new();
    let mut connection = None;
    // The page the visitor is on: the `Referer` of the next page it opens.
    let mut on_page: Option<HeaderValue> = None;
    if !pause(
        rng.duration(Duration::ZERO, ARRIVAL_SPREAD),
        target.end,
        &mut stop,
    )
    .await
    {
        return Ok(outcomes);
    }
    'views: while let Some(page) = pages.get(rng.below(pages.len())) {
        let requests = std::iter::once((page.path, &page.uri, PAGE_ACCEPT, on_page.clone())).chain(
            page.assets
                .iter()
                .map(|(path, uri)| (*path, uri, accept_for(path), Some(page.referer.clone()))),
        );
        for (path, uri, accept, referer) in requests {
            if outcomes.len() >= MAX_REQUESTS_PER_BROWSER
                || Instant::now() >= target.end
                || *stop.borrow()
            {
                break 'views;
            }
            let mut request = get(uri, &target.host, &user_agent, accept);
            let headers = request.headers_mut();
            headers.insert(
                header::ACCEPT_LANGUAGE,
                HeaderValue::from_static("en-US,en;q=0.5"),
            );
            if let Some(referer) = referer {
                headers.insert(header::REFERER, referer);
            }
            let at = Instant::now();
            let Some(result) = until_stopped(
                &mut stop,
                fetch(&mut connection, src, index, &target, request),
            )
            .await
            else {
                break 'views;
            };
            outcomes.push(Outcome {
                at,
                src,
                path: path.to_owned(),
                result,
            });
            if !is_success(result) {
                // A real browser would show an error; this one gives up on the page view.
                break;
            }
            if path == page.path {
                on_page = Some(page.referer.clone());
            }
        }
        if !pause(rng.duration(THINK_MIN, THINK_MAX), target.end, &mut stop).await {
            break;
        }
    }
    Ok(outcomes)
}

/// Sends `request` on the browser's keep-alive connection, (re)opening it if needed; drops the
/// connection after a failure, so the next request opens a fresh one.
async fn fetch(
    connection: &mut Option<SendRequest<Empty<Bytes>>>,
    src: IpAddr,
    index: usize,
    target: &Target,
    request: Request<Empty<Bytes>>,
) -> Result<u16, Failure> {
    if connection.as_ref().is_some_and(SendRequest::is_closed) {
        *connection = None;
    }
    if connection.is_none() {
        *connection = Some(open(src, index, target).await?);
    }
    let Some(sender) = connection.as_mut() else {
        return Err(Failure::Io);
    };
    let result = timeout(REQUEST_TIMEOUT, exchange(sender, request))
        .await
        .unwrap_or(Err(Failure::Io));
    if result.is_err() {
        *connection = None;
    }
    result
}

// --- bots ---

/// A swarm's validated parameters, shared by its tasks.
#[derive(Debug)]
struct BotPlan {
    pages: Vec<(String, Uri)>,
    /// Per page, the assets a bot loads after it (empty unless `load_assets`).
    assets: Vec<Vec<(&'static str, Uri)>>,
    user_agent: HeaderValue,
    interval: Duration,
    per_source_cap: usize,
    sources: usize,
}

impl BotPlan {
    fn new(s: &Swarm) -> Result<BotPlan> {
        ensure!(
            s.per_source_rps.is_finite()
                && s.per_source_rps > 0.0
                && s.per_source_rps <= MAX_SOURCE_RPS,
            "per-source rate {} is not in (0, {MAX_SOURCE_RPS}] requests per second",
            s.per_source_rps
        );
        ensure!(!s.pages.is_empty(), "the swarm has no pages to request");
        let pages = s
            .pages
            .iter()
            .map(|page| {
                ensure!(
                    page.starts_with('/'),
                    "swarm page {page:?} does not start with /"
                );
                let uri = page.parse::<Uri>().with_context(|| {
                    format!("swarm page {page:?} is not a valid request target")
                })?;
                Ok((page.clone(), uri))
            })
            .collect::<Result<_>>()?;
        let assets = s
            .pages
            .iter()
            .map(|page| {
                let listed = if s.load_assets { assets_of(page) } else { &[] };
                listed
                    .iter()
                    .map(|a| Ok((*a, a.parse::<Uri>()?)))
                    .collect::<Result<Vec<_>, hyper::http::uri::InvalidUri>>()
                    .with_context(|| format!("an asset of {page:?} is not a valid target"))
            })
            .collect::<Result<_>>()?;
        let user_agent = HeaderValue::from_str(&s.user_agent)
            .with_context(|| format!("{:?} is not a valid User-Agent header", s.user_agent))?;
        // `as` saturates: an absurd duration gives a huge cap, never a wrap.
        let per_source_cap =
            ((s.per_source_rps * s.duration.as_secs_f64()).ceil() as usize).saturating_add(1);
        Ok(BotPlan {
            pages,
            assets,
            user_agent,
            interval: Duration::from_secs_f64(1.0 / s.per_source_rps),
            per_source_cap,
            sources: s.sources.len(),
        })
    }
}

/// One bot source: a request every `plan.interval`, each on its own task and connection, until
/// the run ends; then waits for those still under way.
async fn bot(
    target: Arc<Target>,
    plan: Arc<BotPlan>,
    index: usize,
    src: IpAddr,
    mut stop: watch::Receiver<bool>,
) -> Result<Vec<Outcome>> {
    let mut outcomes = Vec::new();
    // Dropping the set (on stop) aborts the requests still under way.
    let mut in_flight = JoinSet::new();
    let joined = |done: Result<Vec<Outcome>, JoinError>| {
        done.map_err(|e| anyhow!("a request from bot {src} failed to complete: {e}"))
    };
    // The sources' schedules are spread evenly over one interval.
    let offset = plan
        .interval
        .mul_f64(index as f64 / plan.sources.max(1) as f64);
    for k in 0..plan.per_source_cap {
        let Some(due) = target
            .start
            .checked_add(offset + plan.interval.mul_f64(k as f64))
        else {
            break;
        };
        if due >= target.end {
            break;
        }
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(due.into()) => break,
                Some(done) = in_flight.join_next() => outcomes.extend(joined(done)?),
                () = stopped(&mut stop) => return Ok(outcomes),
            }
        }
        let Some((path, uri)) = plan.pages.get(k % plan.pages.len()) else {
            break;
        };
        let mut request = get(uri, &target.host, &plan.user_agent, ANY_ACCEPT);
        // The server closes first, so TIME_WAIT lands on its side and a source can keep up a
        // high rate without running out of ports.
        request
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        let (path, target) = (path.clone(), Arc::clone(&target));
        let assets = plan.assets.get(k % plan.pages.len()).cloned();
        let user_agent = plan.user_agent.clone();
        in_flight.spawn(async move {
            let at = Instant::now();
            let result = one_shot(src, index, &target, request).await;
            let served = result.is_ok();
            let scheme = if target.tls.is_some() {
                "https"
            } else {
                "http"
            };
            let host = target.host.to_str().unwrap_or_default();
            let referer = HeaderValue::from_str(&format!("{scheme}://{host}{path}")).ok();
            let mut done = vec![Outcome {
                at,
                src,
                path,
                result,
            }];
            // A page that did not come has no assets to load.
            for (asset, uri) in assets.into_iter().flatten().filter(|_| served) {
                let mut request = get(&uri, &target.host, &user_agent, ANY_ACCEPT);
                let headers = request.headers_mut();
                headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
                if let Some(r) = &referer {
                    headers.insert(header::REFERER, r.clone());
                }
                let at = Instant::now();
                let result = one_shot(src, index, &target, request).await;
                done.push(Outcome {
                    at,
                    src,
                    path: asset.to_owned(),
                    result,
                });
            }
            done
        });
    }
    loop {
        tokio::select! {
            done = in_flight.join_next() => match done {
                Some(done) => outcomes.extend(joined(done)?),
                None => break,
            },
            () = stopped(&mut stop) => break,
        }
    }
    Ok(outcomes)
}

/// One request on a connection of its own.
async fn one_shot(
    src: IpAddr,
    index: usize,
    target: &Target,
    request: Request<Empty<Bytes>>,
) -> Result<u16, Failure> {
    let stream = connect(src, target.server, target.connect_timeout).await?;
    timeout(REQUEST_TIMEOUT, async {
        let mut sender = establish(stream, index, target).await?;
        exchange(&mut sender, request).await
    })
    .await
    .unwrap_or(Err(Failure::Io))
}

// ---------------------------------------------------------------------------------------------
// Determinism
// ---------------------------------------------------------------------------------------------

/// xorshift64*: a tiny deterministic generator, so the site's bytes and a browser's choices
/// repeat from their seeds.
#[derive(Clone, Debug)]
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> XorShift {
        // splitmix64 spreads similar seeds apart; the state must never be zero.
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        XorShift((z ^ (z >> 31)) | 1)
    }

    fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        (self.next_u64() % n as u64) as usize
    }

    /// Uniform in `min..=max`, to the millisecond.
    fn duration(&mut self, min: Duration, max: Duration) -> Duration {
        let span = max.saturating_sub(min).as_millis();
        let extra = u64::try_from(span).map_or(0, |span| self.next_u64() % span.saturating_add(1));
        min + Duration::from_millis(extra)
    }
}

/// FNV-1a: a stable hash of a path, for per-path sizes and seeds.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use hyper::body::Body as _;

    use super::*;

    /// The values of every `src="…"` and `href="…"` attribute, in document order.
    fn references(html: &str) -> Vec<&str> {
        let mut found = Vec::new();
        let mut rest = html;
        while let Some(at) = rest.find("=\"") {
            let attribute_start = rest[..at].rfind(' ').map_or(0, |i| i + 1);
            let name = &rest[attribute_start..at];
            let value_start = at + 2;
            let len = rest[value_start..].find('"').unwrap();
            if name == "src" || name == "href" {
                found.push(&rest[value_start..value_start + len]);
            }
            rest = &rest[value_start + len + 1..];
        }
        found
    }

    fn body(path: &str) -> &'static Bytes {
        &site().resources.get(path).unwrap().body
    }

    #[test]
    fn assets_of_lists_each_pages_subresources() {
        assert_eq!(assets_of("/"), ["/style.css", "/app.js", "/img/logo.png"]);
        assert_eq!(assets_of("/gallery/1").len(), 7);
        assert_eq!(assets_of("/gallery/1")[0], "/style.css");
        assert_eq!(assets_of("/gallery/1")[6], "/img/g1-6.jpg");
        assert_eq!(assets_of("/gallery/2")[1], "/img/g2-1.jpg");
        assert_eq!(
            assets_of("/about"),
            ["/style.css", "/img/logo.png", "/img/team.jpg"]
        );
        assert!(assets_of("/nope").is_empty());
        assert!(assets_of("/style.css").is_empty(), "assets have no assets");
        for page in PAGES {
            assert!(!assets_of(page).is_empty(), "{page}");
            assert!(!PAGES.contains(&assets_of(page)[0]), "{page}");
        }
    }

    #[test]
    fn pages_are_html_referencing_exactly_their_assets() {
        for &page in PAGES {
            let html = std::str::from_utf8(body(page)).unwrap();
            assert!(
                (2048..=8192).contains(&html.len()),
                "{page} is {} bytes",
                html.len()
            );
            assert!(html.starts_with("<!DOCTYPE html>") && html.ends_with("</html>\n"));
            let refs = references(html);
            let assets: Vec<&str> = refs
                .iter()
                .copied()
                .filter(|r| !PAGES.contains(r))
                .collect();
            assert_eq!(assets, assets_of(page), "{page}");
            let links: HashSet<&str> = refs.iter().copied().filter(|r| PAGES.contains(r)).collect();
            assert_eq!(
                links,
                PAGES.iter().copied().collect(),
                "{page} links every page"
            );
        }
    }

    #[test]
    fn everything_referenced_is_served_with_the_right_type_and_size() {
        for &page in PAGES {
            for &path in std::iter::once(&page).chain(assets_of(page)) {
                let response = respond(&Method::GET, path);
                assert_eq!(response.status(), StatusCode::OK, "{path}");
                let headers = response.headers();
                let len: usize = headers[header::CONTENT_LENGTH]
                    .to_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                assert_eq!(len, body(path).len(), "{path}");
                assert_eq!(response.body().size_hint().exact(), Some(len as u64));
                let content_type = headers[header::CONTENT_TYPE].to_str().unwrap();
                let (expected, sizes) = if PAGES.contains(&path) {
                    ("text/html", 2048..=8192)
                } else if path.ends_with(".css") {
                    ("text/css", 1024..=8192)
                } else if path.ends_with(".js") {
                    ("text/javascript", 1024..=8192)
                } else if path.ends_with(".png") {
                    ("image/png", IMAGE_SIZE.0..=IMAGE_SIZE.1 - 1)
                } else {
                    ("image/jpeg", IMAGE_SIZE.0..=IMAGE_SIZE.1 - 1)
                };
                assert!(content_type.starts_with(expected), "{path}: {content_type}");
                assert!(sizes.contains(&len), "{path}: {len} bytes");
            }
        }
        assert!(body("/img/logo.png").starts_with(b"\x89PNG\r\n\x1a\n"));
        assert!(body("/img/g1-1.jpg").starts_with(b"\xff\xd8\xff"));
        assert!(body("/img/g1-1.jpg").ends_with(b"\xff\xd9"));
        assert_ne!(body("/img/g1-1.jpg"), body("/img/g1-2.jpg"));
    }

    #[test]
    fn site_is_deterministic() {
        let again = build_site();
        assert_eq!(again.resources.len(), site().resources.len());
        for (path, resource) in &again.resources {
            assert_eq!(resource.body, *body(path), "{path}");
        }
        // 4 pages, style, script, logo, 12 gallery images, team.
        assert_eq!(again.resources.len(), 4 + 2 + 1 + 12 + 1);
    }

    #[test]
    fn head_404_and_405() {
        let head = respond(&Method::HEAD, "/img/logo.png");
        assert_eq!(head.status(), StatusCode::OK);
        assert_eq!(
            head.headers()[header::CONTENT_LENGTH],
            body("/img/logo.png").len().to_string()
        );
        assert_eq!(head.body().size_hint().exact(), Some(0));

        let missing = respond(&Method::GET, "/wp-login.php");
        assert_eq!(missing.status(), StatusCode::NOT_FOUND);
        assert_eq!(missing.headers()[header::CONTENT_LENGTH], "10");

        let post = respond(&Method::POST, "/");
        assert_eq!(post.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(post.headers()[header::ALLOW], "GET, HEAD");
        assert!(post.headers().contains_key(header::CONTENT_LENGTH));
    }

    #[test]
    fn xorshift_is_deterministic_and_in_range() {
        let (mut a, mut b) = (XorShift::new(7), XorShift::new(7));
        let first: Vec<u64> = (0..8).map(|_| a.next_u64()).collect();
        assert_eq!(first, (0..8).map(|_| b.next_u64()).collect::<Vec<_>>());
        assert_ne!(XorShift::new(0).next_u64(), XorShift::new(1).next_u64());
        let mut r = XorShift::new(3);
        let mut seen = HashSet::new();
        for _ in 0..1000 {
            let n = r.below(4);
            assert!(n < 4);
            seen.insert(n);
            let d = r.duration(THINK_MIN, THINK_MAX);
            assert!((THINK_MIN..=THINK_MAX).contains(&d), "{d:?}");
        }
        assert_eq!(seen.len(), 4, "every page gets picked");
        assert_eq!(r.below(0), 0);
        assert_eq!(r.duration(THINK_MAX, THINK_MAX), THINK_MAX);
    }

    #[test]
    fn browser_user_agents_are_distinct_firefoxes() {
        assert_ne!(browser_user_agent(0), browser_user_agent(1));
        assert!(browser_user_agent(3).starts_with("Mozilla/5.0 (X11; Linux x86_64; rv:128.0)"));
        assert!(browser_user_agent(3).ends_with(" lab-visitor-3"));
    }

    fn swarm_spec() -> Swarm {
        Swarm {
            server: "198.51.100.1:80".parse().unwrap(),
            host: "lab.example".into(),
            sources: vec!["203.0.113.10".parse().unwrap()],
            pages: vec!["/".into(), "/gallery/1".into()],
            per_source_rps: 5.0,
            duration: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(1),
            user_agent: "bot/1.0".into(),
            load_assets: false,
        }
    }

    #[test]
    fn swarm_plan_caps_requests_and_rejects_bad_parameters() {
        let plan = BotPlan::new(&swarm_spec()).unwrap();
        assert_eq!(plan.per_source_cap, 11);
        assert_eq!(plan.interval, Duration::from_millis(200));
        assert!(
            plan.assets.iter().all(Vec::is_empty),
            "no assets unless asked"
        );
        // Loading assets: each page's, in document order.
        let plan = BotPlan::new(&Swarm {
            load_assets: true,
            ..swarm_spec()
        })
        .unwrap();
        let listed: Vec<Vec<&str>> = plan
            .assets
            .iter()
            .map(|a| a.iter().map(|(path, _)| *path).collect())
            .collect();
        assert_eq!(listed, [assets_of("/"), assets_of("/gallery/1")]);

        let with = |change: fn(&mut Swarm)| {
            let mut spec = swarm_spec();
            change(&mut spec);
            spec
        };
        for (what, spec) in [
            ("rate 0", with(|s| s.per_source_rps = 0.0)),
            ("rate NaN", with(|s| s.per_source_rps = f64::NAN)),
            ("rate too high", with(|s| s.per_source_rps = 1e6)),
            ("no pages", with(|s| s.pages.clear())),
            (
                "relative page",
                with(|s| s.pages = vec!["index.html".into()]),
            ),
            ("bad UA", with(|s| s.user_agent = "bot\r\nX-Evil: 1".into())),
        ] {
            assert!(BotPlan::new(&spec).is_err(), "{what} accepted");
        }
        let s = swarm_spec();
        let six: IpAddr = "2001:db8::1".parse().unwrap();
        let err = Target::new(s.server, &s.host, &[six], s.duration, s.connect_timeout)
            .unwrap_err()
            .to_string();
        assert!(err.contains("2001:db8::1"), "{err}");
        assert!(Target::new(s.server, "a\nb", &s.sources, s.duration, s.connect_timeout).is_err());
        assert!(Target::new(s.server, &s.host, &s.sources, s.duration, Duration::ZERO).is_err());
        assert!(
            Target::new(
                s.server,
                &s.host,
                &s.sources,
                Duration::MAX,
                s.connect_timeout
            )
            .is_err()
        );
    }

    #[test]
    fn succeeded_counts_2xx_per_source() {
        let at = Instant::now();
        let outcome = |src: &str, result| Outcome {
            at,
            src: src.parse().unwrap(),
            path: "/".into(),
            result,
        };
        let outcomes = [
            outcome("198.51.100.10", Ok(200)),
            outcome("198.51.100.10", Ok(204)),
            outcome("198.51.100.10", Ok(404)),
            outcome("198.51.100.11", Err(Failure::ConnectTimeout)),
            outcome("198.51.100.12", Ok(200)),
        ];
        let counts = succeeded_by_source(&outcomes);
        assert_eq!(counts.len(), 2);
        assert_eq!(counts[&"198.51.100.10".parse::<IpAddr>().unwrap()], 2);
        assert_eq!(counts[&"198.51.100.12".parse::<IpAddr>().unwrap()], 1);
        assert!(!outcomes[3].succeeded());
    }

    #[test]
    fn site_pages_carry_referers_for_the_host() {
        let pages = site_pages("lab.example", "http").unwrap();
        assert_eq!(pages.len(), PAGES.len());
        assert_eq!(pages[1].referer, "http://lab.example/gallery/1");
        assert_eq!(pages[1].assets.len(), assets_of("/gallery/1").len());
        assert!(site_pages("bad\nhost", "http").is_err());
        let secure = site_pages("lab.example", "https").unwrap();
        assert_eq!(secure[1].referer, "https://lab.example/gallery/1");
    }
}
