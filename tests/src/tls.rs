//! Real TLS between namespaces: the [`crate::web`] site served over HTTPS with an nginx-style
//! access log, and its browsers and bot swarm speaking TLS — what the HTTPS lab and the live
//! HTTPS tests run.
//!
//! On an HTTPS site the kernel sees only each connection's ClientHello; the pages are in the web
//! server's access log. So the two ends here are built for exactly that:
//!
//! - [`TlsServer`]: the site of [`crate::web::WebServer`] (same pages, assets and per-source
//!   counts) behind rustls, with a throw-away self-signed certificate for the site's host name
//!   generated at start by rcgen, writing an access log in nginx's `combined` format, one
//!   `write(2)` per line as nginx does;
//! - [`browse`] and [`swarm`]: the clients of [`crate::web`] over TLS. A browser keeps one TLS
//!   connection alive for a page and its assets; a bot opens a new TLS connection per request,
//!   so every request is a ClientHello on the wire. They trust the server's certificate
//!   ([`TlsServer::certificate`]) and nothing else: verification is never switched off.
//! - [`Profile`]: what a client's ClientHello offers (versions, cipher suites, ALPN), chosen to
//!   give distinct, stable JA4 fingerprints: [`Profile::bot`], [`Profile::browsers`], and
//!   [`Profile::variants`] for one address rotating over many (a NAT, [`Rotation::PerConnection`]).
//!
//! Session resumption is off in every profile: a resumed TLS 1.3 hello carries a
//! `pre_shared_key` extension and would change the fingerprint from one connection to the next.
//!
//! ```no_run
//! use std::{sync::{Arc, atomic::AtomicBool}, time::Duration};
//! use swarmwall_integration::{
//!     netns::{NetNs, VethPair},
//!     tls::{Profile, Rotation, TlsClient, TlsServer, browse},
//!     web::Browsing,
//! };
//!
//! # fn main() -> anyhow::Result<()> {
//! let server_ns = NetNs::new("sws")?;
//! let client_ns = NetNs::new("swc")?;
//! let _link = VethPair::new(&server_ns, &client_ns, "198.51.100.1/24", "198.51.100.2/24")?;
//! let server = TlsServer::start(&server_ns, "198.51.100.1:443".parse()?, "shop.example", None)?;
//! let tls = Arc::new(TlsClient::new(
//!     server.certificate(),
//!     "shop.example",
//!     &Profile::browsers(),
//!     Rotation::PerClient,
//! )?);
//! let visitors = Browsing {
//!     server: server.local_addr(),
//!     host: "shop.example".into(),
//!     sources: vec!["198.51.100.2".parse()?],
//!     duration: Duration::from_secs(3),
//!     connect_timeout: Duration::from_secs(1),
//! };
//! let outcomes = browse(&client_ns, &visitors, &tls, &AtomicBool::new(false))?;
//! assert!(outcomes.iter().all(|o| o.result == Ok(200)));
//! # Ok(())
//! # }
//! ```

use std::{
    collections::HashMap,
    fmt::Write as _,
    fs::{File, OpenOptions},
    io::Write as _,
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::SystemTime,
};

use anyhow::{Context as _, Result, ensure};
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, body::Body as _, header};
use rustls::{
    ClientConfig, RootCertStore, ServerConfig, SupportedCipherSuite, SupportedProtocolVersion,
    client::Resumption,
    crypto::{CryptoProvider, ring},
    pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName},
};
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector, client::TlsStream};

use crate::{
    netns::NetNs,
    web::{self, Browsing, Failure, Outcome, Serving, Swarm, WebServer},
};

// ---------------------------------------------------------------------------------------------
// The server
// ---------------------------------------------------------------------------------------------

/// The lab site over HTTPS (HTTP/1.1 on TLS 1.2 or 1.3) from inside a namespace, with a
/// self-signed certificate for its host name made at start, an optional access log in nginx's
/// `combined` format, and [`WebServer`]'s per-source counts. Serves until dropped.
#[derive(Debug)]
pub struct TlsServer {
    web: WebServer,
    certificate: CertificateDer<'static>,
    access_log: Option<PathBuf>,
}

impl TlsServer {
    /// Serves HTTPS for `host` on `addr` inside `ns` (port 0 picks one), appending a line per
    /// response to `access_log` if given (the file is created if missing).
    pub fn start(
        ns: &NetNs,
        addr: SocketAddr,
        host: &str,
        access_log: Option<&Path>,
    ) -> Result<TlsServer> {
        let rcgen::CertifiedKey { cert, signing_key } =
            rcgen::generate_simple_self_signed(vec![host.to_owned()])
                .with_context(|| format!("making a self-signed certificate for {host:?}"))?;
        let certificate = cert.der().clone();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(signing_key.serialize_der()));
        let mut config = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .context("configuring the TLS server's versions")?
            .with_no_client_auth()
            .with_single_cert(vec![certificate.clone()], key)
            .context("configuring the TLS server's certificate")?;
        // nginx without `http2 on`: HTTP/1.1 is all it answers, whatever the client offers.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let log = access_log.map(AccessLog::open).transpose()?;
        let web = WebServer::start_serving(
            ns,
            addr,
            Serving {
                tls: Some(TlsAcceptor::from(Arc::new(config))),
                log,
            },
        )?;
        Ok(TlsServer {
            web,
            certificate,
            access_log: access_log.map(Path::to_path_buf),
        })
    }

    /// The certificate the server presents: what its clients must trust.
    pub fn certificate(&self) -> &CertificateDer<'static> {
        &self.certificate
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.web.local_addr()
    }

    /// The access log, if it writes one.
    pub fn access_log(&self) -> Option<&Path> {
        self.access_log.as_deref()
    }

    /// 2xx responses sent so far, per client address (see [`WebServer::served`]).
    pub fn served(&self) -> HashMap<IpAddr, u64> {
        self.web.served()
    }

    /// Total 2xx responses sent so far.
    pub fn served_total(&self) -> u64 {
        self.web.served_total()
    }

    /// TCP connections accepted so far, per client address (see [`WebServer::connections`]).
    pub fn connections(&self) -> HashMap<IpAddr, u64> {
        self.web.connections()
    }
}

/// An access log in nginx's `combined` format, appended to with one `write(2)` per line — as
/// nginx writes its own, so a reader tailing the file never sees half a line from it.
#[derive(Debug)]
pub(crate) struct AccessLog {
    file: File,
}

impl AccessLog {
    fn open(path: &Path) -> Result<AccessLog> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening the access log {}", path.display()))?;
        Ok(AccessLog { file })
    }

    /// Logs `response` to `request` from `src`. A failed write is dropped, as nginx drops a
    /// line it cannot write: the log is evidence, not a transaction.
    pub(crate) fn record<B>(
        &self,
        src: IpAddr,
        request: &Request<B>,
        response: &Response<Full<Bytes>>,
    ) {
        let header = |name| request.headers().get(name).map(|v| v.as_bytes());
        let line = combined_line(&Entry {
            remote_addr: src,
            time: SystemTime::now(),
            request: format!(
                "{} {} {:?}",
                request.method(),
                request.uri(),
                request.version()
            )
            .as_bytes(),
            status: response.status().as_u16(),
            body_bytes_sent: response.body().size_hint().exact().unwrap_or(0),
            referer: header(header::REFERER),
            user_agent: header(header::USER_AGENT),
        });
        let _ = (&self.file).write_all(line.as_bytes());
    }
}

/// One access-log entry: the fields of nginx's `combined` format.
#[derive(Clone, Debug)]
pub struct Entry<'a> {
    /// `$remote_addr`.
    pub remote_addr: IpAddr,
    /// `$time_local`, written in UTC (`+0000`).
    pub time: SystemTime,
    /// `$request`: the request line, `GET /path HTTP/1.1`.
    pub request: &'a [u8],
    /// `$status`.
    pub status: u16,
    /// `$body_bytes_sent`.
    pub body_bytes_sent: u64,
    /// `$http_referer`, if sent.
    pub referer: Option<&'a [u8]>,
    /// `$http_user_agent`, if sent.
    pub user_agent: Option<&'a [u8]>,
}

/// `entry` as a line (newline included) of nginx's `combined` format:
/// `$remote_addr - - [$time_local] "$request" $status $body_bytes_sent "$http_referer"
/// "$http_user_agent"`. Absent headers are `-`; `"`, `\` and bytes outside printable ASCII
/// are escaped as `\xHH`, as nginx's default `escape=default` does.
pub fn combined_line(entry: &Entry<'_>) -> String {
    let mut line = String::with_capacity(256);
    // Writing to a String cannot fail.
    let _ = write!(
        line,
        "{} - - [{}] \"",
        entry.remote_addr,
        time_local(entry.time)
    );
    escape_into(&mut line, entry.request);
    let _ = write!(line, "\" {} {} \"", entry.status, entry.body_bytes_sent);
    escape_into(&mut line, entry.referer.unwrap_or(b"-"));
    line.push_str("\" \"");
    escape_into(&mut line, entry.user_agent.unwrap_or(b"-"));
    line.push_str("\"\n");
    line
}

fn escape_into(out: &mut String, bytes: &[u8]) {
    for &b in bytes {
        if b == b'"' || b == b'\\' || !(0x20..0x7f).contains(&b) {
            let _ = write!(out, "\\x{b:02X}");
        } else {
            out.push(char::from(b));
        }
    }
}

/// `$time_local` in UTC: `02/Dec/2026:01:49:54 +0000`.
fn time_local(t: SystemTime) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    // `YYYY-MM-DDTHH:MM:SSZ`, rearranged.
    let iso = humantime::format_rfc3339_seconds(t).to_string();
    let field = |range: std::ops::Range<usize>| iso.get(range).unwrap_or("00");
    let month = field(5..7)
        .parse::<usize>()
        .ok()
        .and_then(|m| MONTHS.get(m.wrapping_sub(1)))
        .unwrap_or(&"Jan");
    format!(
        "{}/{month}/{}:{} +0000",
        field(8..10),
        field(0..4),
        field(11..19)
    )
}

// ---------------------------------------------------------------------------------------------
// Client profiles
// ---------------------------------------------------------------------------------------------

/// The TLS versions a profile offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Versions {
    /// TLS 1.3 only.
    Tls13,
    /// TLS 1.2 only (no `supported_versions` extension: JA4 `t12`).
    Tls12,
    /// TLS 1.3 and 1.2, as browsers offer.
    Both,
}

impl Versions {
    fn rustls(self) -> Vec<&'static SupportedProtocolVersion> {
        match self {
            Versions::Tls13 => vec![&rustls::version::TLS13],
            Versions::Tls12 => vec![&rustls::version::TLS12],
            Versions::Both => vec![&rustls::version::TLS13, &rustls::version::TLS12],
        }
    }
}

/// The cipher suites of rustls's *ring* provider, in the order browsers list them: what a
/// [`Profile::suites`] mask selects from.
pub fn suites() -> [SupportedCipherSuite; 9] {
    [
        ring::cipher_suite::TLS13_AES_128_GCM_SHA256,
        ring::cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
        ring::cipher_suite::TLS13_AES_256_GCM_SHA384,
        ring::cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        ring::cipher_suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        ring::cipher_suite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        ring::cipher_suite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
        ring::cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        ring::cipher_suite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    ]
}

/// Bit `i` of a suite mask selects `suites()[i]`.
const TLS13_SUITES: u16 = 0b000_000_111;
/// The TLS 1.2 suites that work with the server's ECDSA certificate.
const TLS12_ECDSA_SUITES: u16 = 0b010_101_000;
const ALL_SUITES: u16 = 0b111_111_111;

/// What a client's ClientHello offers — its JA4 fingerprint, in effect: versions (JA4's `t13`
/// or `t12`), cipher suites (their count and hash) and ALPN (`h2`, `h1` or `00`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Profile {
    /// A name for messages (`bot`, `firefox-like`, …).
    pub name: String,
    /// Versions offered.
    pub versions: Versions,
    /// Cipher suites offered: a mask over [`suites`] (bit `i` is `suites()[i]`).
    pub suites: u16,
    /// ALPN protocols offered, in order (empty: no ALPN extension).
    pub alpn: Vec<Vec<u8>>,
}

impl Profile {
    fn new(name: &str, versions: Versions, suites: u16, alpn: &[&[u8]]) -> Profile {
        Profile {
            name: name.to_owned(),
            versions,
            suites,
            alpn: alpn.iter().map(|p| p.to_vec()).collect(),
        }
    }

    /// A scripted client: TLS 1.3 only, one cipher suite, no ALPN — a plain TLS library used
    /// as it comes (JA4 `t13d01…00`).
    pub fn bot() -> Profile {
        Profile::new("bot", Versions::Tls13, 0b1, &[])
    }

    /// Four browser-like profiles, each with its own JA4: different suite lists and ALPN, one
    /// of them an old TLS 1.2-only client.
    pub fn browsers() -> Vec<Profile> {
        const H2_H1: &[&[u8]] = &[b"h2", b"http/1.1"];
        vec![
            Profile::new("firefox-like", Versions::Both, ALL_SUITES, H2_H1),
            Profile::new(
                "chrome-like",
                Versions::Both,
                TLS13_SUITES | 0b000_011_000 | 0b110_000_000,
                H2_H1,
            ),
            Profile::new(
                "safari-like",
                Versions::Both,
                TLS13_SUITES | TLS12_ECDSA_SUITES,
                &[b"http/1.1"],
            ),
            Profile::new(
                "legacy-tls12",
                Versions::Tls12,
                TLS12_ECDSA_SUITES | 0b000_010_000,
                &[b"http/1.1"],
            ),
        ]
    }

    /// `n` distinct browser-like profiles (at most [`MAX_VARIANTS`]): the users behind one NAT,
    /// each with a browser of its own. They differ in their cipher-suite lists (each keeps at
    /// least one TLS 1.3 suite) and alternate between `h2` and `h1` ALPN.
    pub fn variants(n: usize) -> Result<Vec<Profile>> {
        ensure!(
            n <= MAX_VARIANTS,
            "asked for {n} profile variants, at most {MAX_VARIANTS} are distinct"
        );
        Ok((1..=ALL_SUITES)
            .filter(|mask| mask & TLS13_SUITES != 0)
            .take(n)
            .enumerate()
            .map(|(i, mask)| {
                let alpn: &[&[u8]] = if i % 2 == 0 {
                    &[b"h2", b"http/1.1"]
                } else {
                    &[b"http/1.1"]
                };
                Profile::new(&format!("variant-{i}"), Versions::Both, mask, alpn)
            })
            .collect())
    }

    /// The cipher suites offered, in [`suites`] order.
    pub fn cipher_suites(&self) -> Vec<SupportedCipherSuite> {
        suites()
            .into_iter()
            .enumerate()
            .filter(|(i, _)| self.suites & (1 << i) != 0)
            .map(|(_, s)| s)
            .collect()
    }

    /// A rustls client configuration offering this profile and trusting `roots`.
    fn config(&self, roots: RootCertStore) -> Result<ClientConfig> {
        let provider = CryptoProvider {
            cipher_suites: self.cipher_suites(),
            ..ring::default_provider()
        };
        let mut config = ClientConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(&self.versions.rustls())
            .with_context(|| format!("TLS profile {:?} is not usable", self.name))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = self.alpn.clone();
        config.resumption = Resumption::disabled();
        Ok(config)
    }

    /// The first flight this profile sends to `host` — the TLS record(s) holding its
    /// ClientHello — made offline, with no server: for checking fingerprints.
    pub fn client_hello(&self, host: &str) -> Result<Vec<u8>> {
        let name = server_name(host)?;
        let mut conn =
            rustls::ClientConnection::new(Arc::new(self.config(RootCertStore::empty())?), name)
                .with_context(|| format!("starting a TLS client with profile {:?}", self.name))?;
        let mut out = Vec::new();
        while conn.wants_write() {
            conn.write_tls(&mut out)
                .context("writing the ClientHello to memory")?;
        }
        Ok(out)
    }
}

/// How many distinct [`Profile::variants`] there are: suite masks with a TLS 1.3 suite.
pub const MAX_VARIANTS: usize = (1 << 9) - (1 << 6);

fn server_name(host: &str) -> Result<ServerName<'static>> {
    ServerName::try_from(host.to_owned()).with_context(|| format!("{host:?} is not a server name"))
}

// ---------------------------------------------------------------------------------------------
// The clients
// ---------------------------------------------------------------------------------------------

/// Which profile a client's connection uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rotation {
    /// Client `i` of a run (a browser, a bot source) always uses profile `i % n`: one address,
    /// one fingerprint.
    PerClient,
    /// Every new connection takes the next profile, whoever opens it: one address with many
    /// fingerprints, as behind a NAT.
    PerConnection,
}

/// The TLS side of a client run: the profiles, the server's name and certificate (the only one
/// trusted), and how connections pick a profile.
#[derive(Debug)]
pub struct TlsClient {
    configs: Vec<Arc<ClientConfig>>,
    server_name: ServerName<'static>,
    rotation: Rotation,
    next: AtomicUsize,
}

impl TlsClient {
    /// Clients for `host` that trust `certificate` (see [`TlsServer::certificate`]), offering
    /// `profiles` as `rotation` says.
    pub fn new(
        certificate: &CertificateDer<'static>,
        host: &str,
        profiles: &[Profile],
        rotation: Rotation,
    ) -> Result<TlsClient> {
        ensure!(!profiles.is_empty(), "a TLS client needs a profile");
        let mut roots = RootCertStore::empty();
        roots
            .add(certificate.clone())
            .context("trusting the server's certificate")?;
        let configs = profiles
            .iter()
            .map(|p| Ok(Arc::new(p.config(roots.clone())?)))
            .collect::<Result<_>>()?;
        Ok(TlsClient {
            configs,
            server_name: server_name(host)?,
            rotation,
            next: AtomicUsize::new(0),
        })
    }

    /// The TLS handshake of client `index` on `stream`.
    pub(crate) async fn connect(
        &self,
        index: usize,
        stream: TcpStream,
    ) -> Result<TlsStream<TcpStream>, Failure> {
        let pick = match self.rotation {
            Rotation::PerClient => index,
            Rotation::PerConnection => self.next.fetch_add(1, Ordering::Relaxed),
        };
        let config = self
            .configs
            .get(pick % self.configs.len())
            .ok_or(Failure::Tls)?;
        TlsConnector::from(Arc::clone(config))
            .connect(self.server_name.clone(), stream)
            .await
            .map_err(|e| match e.kind() {
                // rustls reports its own failures (a certificate, a version) as InvalidData.
                std::io::ErrorKind::InvalidData => Failure::Tls,
                _ => Failure::Io,
            })
    }
}

/// [`web::browse`] over TLS: each browser keeps one TLS connection alive for its page views.
pub fn browse(
    ns: &NetNs,
    b: &Browsing,
    tls: &Arc<TlsClient>,
    stop: &AtomicBool,
) -> Result<Vec<Outcome>> {
    web::browse_over(ns, b, Some(Arc::clone(tls)), stop)
}

/// [`web::swarm`] over TLS: a new TLS connection — a ClientHello on the wire — per request.
pub fn swarm(
    ns: &NetNs,
    s: &Swarm,
    tls: &Arc<TlsClient>,
    stop: &AtomicBool,
) -> Result<Vec<Outcome>> {
    web::swarm_over(ns, s, Some(Arc::clone(tls)), stop)
}

#[cfg(test)]
mod tests {
    use std::{collections::HashSet, time::Duration};

    use super::*;

    #[test]
    fn combined_lines_look_like_nginx() {
        let entry = Entry {
            remote_addr: "192.0.2.7".parse().unwrap(),
            time: SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_176_194),
            request: b"GET /gallery/1 HTTP/1.1",
            status: 200,
            body_bytes_sent: 5123,
            referer: None,
            user_agent: Some(b"Mozilla/5.0 (\"quoted\")\\\x01"),
        };
        assert_eq!(
            combined_line(&entry),
            "192.0.2.7 - - [02/Dec/2026:01:49:54 +0000] \"GET /gallery/1 HTTP/1.1\" 200 5123 \
             \"-\" \"Mozilla/5.0 (\\x22quoted\\x22)\\x5C\\x01\"\n"
        );
        assert_eq!(
            time_local(SystemTime::UNIX_EPOCH),
            "01/Jan/1970:00:00:00 +0000"
        );
    }

    #[test]
    fn profiles_are_usable_and_variants_distinct() {
        let all: Vec<Profile> = std::iter::once(Profile::bot())
            .chain(Profile::browsers())
            .chain(Profile::variants(MAX_VARIANTS).unwrap())
            .collect();
        for p in &all {
            let hello = p.client_hello("shop.example").unwrap();
            assert_eq!(hello[0], 0x16, "{}: a handshake record", p.name);
        }
        let variants: HashSet<_> = all[5..]
            .iter()
            .map(|p| (p.suites, p.versions, &p.alpn))
            .collect();
        assert_eq!(variants.len(), MAX_VARIANTS);
        assert!(Profile::variants(MAX_VARIANTS + 1).is_err());
        assert!(Profile::bot().client_hello("not a name").is_err());
    }
}
