//! Layer 7: what the sampled payloads say. The kernel copies the first bytes of TCP segments that
//! start an HTTP request (or a TLS ClientHello); [`http`] and [`tls`] turn those bytes into
//! [`HttpRequest`]s and SNI names, and [`RequestEvent`] is what the swarm detector consumes.
//!
//! Payloads are hostile input: every parser here is total (no panics, bounded work) and fuzzed.

use std::net::IpAddr;

pub mod http;
pub mod tls;

/// One HTTP request parsed from a payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpRequest {
    /// Method, as sent (`GET`, `POST`, ...).
    pub method: String,
    /// Request target, as sent (may carry a query).
    pub target: String,
    /// The page: the target's path, without query or fragment, percent-decoding left alone,
    /// repeated slashes collapsed; `*` or an absolute-form target reduced to its path.
    pub path: String,
    /// `Host` header, lower-cased, port removed.
    pub host: Option<String>,
    /// `User-Agent` header.
    pub user_agent: Option<String>,
    /// `Referer` header.
    pub referer: Option<String>,
}

/// What a request event carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A plain-HTTP request: page known.
    Http,
    /// A TLS ClientHello: only the site (SNI) is known, `path` is empty.
    TlsHello,
}

/// One request seen on the wire, as the detector consumes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestEvent {
    /// Capture or kernel time, ns (any monotonic base; only differences matter).
    pub ts_ns: u64,
    /// Source address.
    pub src: IpAddr,
    /// Destination address (the site's address on a multi-tenant host).
    pub dst: IpAddr,
    /// Destination port.
    pub dst_port: u16,
    /// HTTP or TLS.
    pub kind: Kind,
    /// `Host` (HTTP) or SNI (TLS), lower-cased.
    pub host: Option<String>,
    /// The page (see [`HttpRequest::path`]); empty for TLS.
    pub path: String,
    /// `User-Agent`, if any.
    pub user_agent: Option<String>,
    /// `Referer`, if any.
    pub referer: Option<String>,
}

/// The HTTP requests in a TCP payload from `src` to `dst`:`dst_port` (several when pipelined),
/// as request events; nothing if the bytes do not parse.
pub fn http_events(
    ts_ns: u64,
    src: IpAddr,
    dst: IpAddr,
    dst_port: u16,
    payload: &[u8],
) -> Vec<RequestEvent> {
    let Ok(reqs) = http::parse(payload) else {
        return Vec::new();
    };
    reqs.into_iter()
        .map(|r| RequestEvent {
            ts_ns,
            src,
            dst,
            dst_port,
            kind: Kind::Http,
            host: r.host,
            path: r.path,
            user_agent: r.user_agent,
            referer: r.referer,
        })
        .collect()
}

/// The request events in one kernel sample: the HTTP requests its bytes hold (a segment may
/// carry several pipelined ones), or the TLS hello's SNI. Bytes that do not parse give nothing.
/// A hello longer than one record is only whole after reassembly
/// ([`crate::sources::hello`]), whose output goes to [`from_payload`].
pub fn from_sample(ev: &swarmwall_maps::L7Event) -> Vec<RequestEvent> {
    let data = &ev.data[..(ev.len as usize).min(ev.data.len())];
    let src = crate::addr::from_key(&ev.src);
    let dst = crate::addr::from_key(&ev.dst);
    from_payload(ev.kind, ev.ts_ns, src, dst, ev.dst_port, data)
}

/// The request events in a payload of `kind` (`L7_HTTP` or `L7_TLS`): a kernel sample's bytes
/// or a reassembled hello.
pub fn from_payload(
    kind: u8,
    ts_ns: u64,
    src: IpAddr,
    dst: IpAddr,
    dst_port: u16,
    data: &[u8],
) -> Vec<RequestEvent> {
    match kind {
        swarmwall_maps::L7_HTTP => http_events(ts_ns, src, dst, dst_port, data),
        // A hello whose SNI lies beyond the copied bytes still tells who connected.
        swarmwall_maps::L7_TLS => vec![RequestEvent {
            ts_ns,
            src,
            dst,
            dst_port,
            kind: Kind::TlsHello,
            host: tls::sni(data).ok().flatten(),
            path: String::new(),
            user_agent: None,
            referer: None,
        }],
        _ => Vec::new(),
    }
}
