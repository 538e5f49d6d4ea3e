//! Layer 7: what the sampled payloads say. The kernel copies the first bytes of TCP segments that
//! start an HTTP request (or a TLS ClientHello); [`http`] and [`tls`] turn those bytes into
//! [`HttpRequest`]s and SNI names, [`hello`] and [`ja4`] a whole ClientHello into its JA4
//! fingerprint, and [`RequestEvent`] is what the swarm detector consumes.
//!
//! Payloads are hostile input: every parser here is total (no panics, bounded work) and fuzzed.

use std::net::IpAddr;

pub mod hello;
pub mod http;
pub mod ja4;
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

/// Where a request event was seen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Origin {
    /// On the wire: a kernel sample or a captured packet.
    #[default]
    Wire,
    /// In a web server's access log: the server answered it, so it is a request the server
    /// saw (decrypted, behind TLS) rather than bytes on the wire.
    Log,
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
    /// JA4 fingerprint of the client's TLS ClientHello, when the whole hello was seen.
    pub ja4: Option<String>,
    /// The ALPN protocols the client's TLS ClientHello offers, in its order, joined with `,`
    /// (`h2,http/1.1`), when the whole hello was seen and offers any.
    pub alpn: Option<String>,
    /// The page (see [`HttpRequest::path`]); empty for TLS.
    pub path: String,
    /// `User-Agent`, if any.
    pub user_agent: Option<String>,
    /// `Referer`, if any.
    pub referer: Option<String>,
    /// The status the server answered with; only access logs know it.
    pub status: Option<u16>,
    /// Response body bytes sent; only access logs know it.
    pub bytes: Option<u64>,
    /// Wire or access log.
    pub origin: Origin,
}

/// Unspecified addresses, port 0, an empty path and no optional field: lets constructors name
/// only what they know (`..RequestEvent::default()`), so adding a field breaks none of them.
impl Default for RequestEvent {
    fn default() -> Self {
        Self {
            ts_ns: 0,
            src: IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
            dst: IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
            dst_port: 0,
            kind: Kind::Http,
            host: None,
            ja4: None,
            alpn: None,
            path: String::new(),
            user_agent: None,
            referer: None,
            status: None,
            bytes: None,
            origin: Origin::Wire,
        }
    }
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
            ja4: None,
            path: r.path,
            user_agent: r.user_agent,
            referer: r.referer,
            ..RequestEvent::default()
        })
        .collect()
}

/// The request events in one kernel sample: the HTTP requests its bytes hold (a segment may
/// carry several pipelined ones), or the TLS hello's SNI and JA4 (see [`tls_event`]). HTTP
/// bytes that do not parse give nothing. A hello longer than one record is only whole after
/// reassembly ([`crate::sources::hello`]), whose output goes to [`from_payload`].
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
        // A hello cut short (its rest lost) still tells who connected, and often its SNI.
        swarmwall_maps::L7_TLS => vec![tls_event(ts_ns, src, dst, dst_port, data)],
        _ => Vec::new(),
    }
}

/// The request event of a TLS ClientHello from `src` to `dst`:`dst_port`: the SNI and, when the
/// whole hello is in `payload`, its JA4. A hello cut before its end still gives the SNI if the
/// name came first, and in any case tells who connected.
pub fn tls_event(
    ts_ns: u64,
    src: IpAddr,
    dst: IpAddr,
    dst_port: u16,
    payload: &[u8],
) -> RequestEvent {
    let (host, ja4, alpn) = match hello::parse(payload) {
        Ok(h) => {
            let ja4 = ja4::ja4(&h);
            (h.sni.clone(), Some(ja4), alpn_list(&h))
        }
        Err(_) => (tls::sni(payload).ok().flatten(), None, None),
    };
    RequestEvent {
        ts_ns,
        src,
        dst,
        dst_port,
        kind: Kind::TlsHello,
        host,
        ja4,
        alpn,
        ..RequestEvent::default()
    }
}

/// The hello's ALPN protocols joined with `,`; `None` when it offers none. A name that is not
/// printable ASCII (RFC 7301 allows any bytes; no registered one is) is shown as hex, so the
/// list stays one readable, unambiguous string.
fn alpn_list(h: &hello::ClientHello) -> Option<String> {
    if h.alpn.is_empty() {
        return None;
    }
    let names: Vec<String> = h
        .alpn
        .iter()
        .map(|p| {
            if !p.is_empty() && p.iter().all(|b| b.is_ascii_graphic() && *b != b',') {
                String::from_utf8_lossy(p).into_owned()
            } else {
                format!(
                    "0x{}",
                    p.iter().map(|b| format!("{b:02x}")).collect::<String>()
                )
            }
        })
        .collect();
    Some(names.join(","))
}

#[cfg(test)]
mod tests {
    use super::{hello::build::*, *};

    fn event(hello: &[u8]) -> RequestEvent {
        let a = "192.0.2.1".parse().unwrap();
        let b = "203.0.113.10".parse().unwrap();
        tls_event(1, a, b, 443, hello)
    }

    #[test]
    fn a_whole_hello_gives_its_alpn_in_order() {
        let ev = event(&browser("shop.example"));
        assert_eq!(ev.alpn.as_deref(), Some("h2,http/1.1"));
        assert_eq!(ev.host.as_deref(), Some("shop.example"));
        assert!(ev.ja4.is_some());
    }

    #[test]
    fn no_alpn_offered_cut_short_or_odd_names() {
        let none = message(0x0303, &[0x1301], Some(&[sni("a.example")]));
        assert_eq!(event(&records(&none, 1 << 14)).alpn, None);
        // Cut before its end: no JA4 and no ALPN, though the name may still be known.
        let whole = browser("shop.example");
        assert_eq!(event(&whole[..1400]).alpn, None);
        let odd = message(
            0x0303,
            &[0x1301],
            Some(&[alpn(&[b"h2", b"a,b", b"\x00\xff"])]),
        );
        assert_eq!(
            event(&records(&odd, 1 << 14)).alpn.as_deref(),
            Some("h2,0x612c62,0x00ff")
        );
    }
}
