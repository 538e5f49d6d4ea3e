//! HTTP/1.x request heads from a sampled, possibly truncated payload.
//!
//! The kernel copies only the first few hundred bytes of a segment that starts with a method, so
//! the parser is built for prefixes: the request line must be complete, the header block is read
//! as far as complete lines go, and pipelined requests are followed only while the framing of the
//! one before them is certain. It is hand-written rather than built on `httparse` because it needs
//! what `httparse` does not give: the headers seen before a partial line, HTTP/0.9-style request
//! lines, and its own limits.
//!
//! Total and bounded: no panics on any input, every loop advances through the input, at most
//! [`MAX_REQUESTS`] requests and [`MAX_HEADERS`] headers per request are looked at.

use memchr::{memchr, memchr2};

use super::HttpRequest;

/// Most requests returned from one payload; the rest is ignored.
pub const MAX_REQUESTS: usize = 16;
/// Longest request line (without its line ending), in bytes.
pub const MAX_REQUEST_LINE: usize = 8 * 1024;
/// Longest header line (without its line ending), in bytes.
pub const MAX_HEADER_LINE: usize = 8 * 1024;
/// Most header lines in one request.
pub const MAX_HEADERS: usize = 100;
/// Longest method token; anything longer is not HTTP.
const MAX_METHOD: usize = 32;

/// The methods [`starts_request`] knows.
const METHODS: [&[u8]; 9] = [
    b"GET ",
    b"HEAD ",
    b"POST ",
    b"PUT ",
    b"DELETE ",
    b"OPTIONS ",
    b"PATCH ",
    b"CONNECT ",
    b"TRACE ",
];

/// Why a payload gave no request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The payload does not start with a request line (or is the HTTP/2 preface).
    #[error("not an HTTP/1 request")]
    NotHttp,
    /// The payload ends before the first request line does.
    #[error("truncated before the end of the request line")]
    Truncated,
    /// A request line or header that no conforming client sends.
    #[error("malformed HTTP request: {0}")]
    Malformed(&'static str),
    /// A request line, header line or header count over the limits.
    #[error("HTTP request over the size limits")]
    TooLarge,
}

/// Whether `payload` starts with a known method and a space (the HTTP/2 preface `PRI * ...` is
/// not a request).
pub fn starts_request(payload: &[u8]) -> bool {
    METHODS.iter().any(|m| payload.starts_with(m))
}

/// Parses the pipelined request heads at the start of `payload`.
///
/// The first request decides the result: its request line must be complete (else
/// [`ParseError::Truncated`]) and well-formed, and its complete header lines must be too. A
/// truncated header block is not an error: the request is returned with what was seen. After a
/// complete head the next request is parsed only when the body in between is known to be fully
/// present (none, `Content-Length`, or a complete chunked body); a later request that is
/// truncated or malformed ends the list without failing the ones before it.
pub fn parse(payload: &[u8]) -> Result<Vec<HttpRequest>, ParseError> {
    let mut out = Vec::new();
    let mut rest = payload;
    while out.len() < MAX_REQUESTS {
        if !out.is_empty() {
            // Tolerate blank lines between requests (RFC 9112 §2.2), e.g. a CRLF after a body.
            rest = skip_blank_lines(rest);
            if rest.is_empty() {
                break;
            }
        }
        match parse_one(rest) {
            Ok((req, next)) => {
                out.push(req);
                match next {
                    Some(next) => rest = next,
                    None => break,
                }
            }
            Err(e) if out.is_empty() => return Err(e),
            Err(_) => break,
        }
    }
    Ok(out)
}

/// Which tracked header a line was, for obs-fold continuations.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Field {
    Host,
    UserAgent,
    Referer,
    Other,
}

/// How the body after a head is delimited.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// No body, or `Content-Length: n` bytes.
    Length(u64),
    /// `Transfer-Encoding: ...chunked`.
    Chunked,
    /// Cannot tell (other transfer codings, both headers, a bad length): stop after this request.
    Unknown,
}

/// Parses one request head; returns it and where the next request starts, if that is known.
fn parse_one(buf: &[u8]) -> Result<(HttpRequest, Option<&[u8]>), ParseError> {
    let method = method_token(buf)?;
    let (line, mut rest) = match split_line(buf) {
        Some(split) => split,
        None if buf.len() > MAX_REQUEST_LINE => return Err(ParseError::TooLarge),
        None => return Err(ParseError::Truncated),
    };
    if line.len() > MAX_REQUEST_LINE {
        return Err(ParseError::TooLarge);
    }
    if memchr2(0, b'\r', line).is_some() {
        return Err(ParseError::Malformed("control byte in request line"));
    }
    // `line` starts with `method` and a space (checked by `method_token`).
    let after_method = line.get(method.len() + 1..).unwrap_or_default();
    let (target, version) = match memchr(b' ', after_method) {
        Some(i) => (&after_method[..i], Some(&after_method[i + 1..])),
        None => (after_method, None),
    };
    if target.is_empty() {
        return Err(ParseError::Malformed("empty request target"));
    }
    if target.iter().any(|&b| b < 0x21 || b == 0x7f) {
        return Err(ParseError::Malformed("control byte in request target"));
    }
    let http09 = match version {
        Some(b"HTTP/1.0" | b"HTTP/1.1") => false,
        Some(_) => return Err(ParseError::Malformed("unsupported HTTP version")),
        None => true,
    };

    let method = lossy(method);
    let (path, target_host) = split_target(&method, target)?;
    let mut req = HttpRequest {
        method,
        target: lossy(target),
        path,
        host: None,
        user_agent: None,
        referer: None,
    };
    if http09 {
        // No headers, no pipelining: the request is the line.
        req.host = target_host;
        return Ok((req, None));
    }

    let mut headers = 0usize;
    let mut last = None;
    let mut content_length = None;
    let mut chunked = None;
    let mut unknown_framing = false;
    let complete = loop {
        let Some((line, next)) = split_line(rest) else {
            if rest.len() > MAX_HEADER_LINE {
                return Err(ParseError::TooLarge);
            }
            break false;
        };
        rest = next;
        if line.is_empty() {
            break true;
        }
        if line.len() > MAX_HEADER_LINE {
            return Err(ParseError::TooLarge);
        }
        headers += 1;
        if headers > MAX_HEADERS {
            return Err(ParseError::TooLarge);
        }
        if memchr2(0, b'\r', line).is_some() {
            return Err(ParseError::Malformed("NUL or CR in header"));
        }
        if matches!(line.first(), Some(b' ' | b'\t')) {
            // obs-fold: a continuation of the previous value, which becomes one space.
            let Some(field) = last else {
                return Err(ParseError::Malformed("continuation line before any header"));
            };
            let extra = lossy(trim_ows(line));
            let slot = match field {
                Field::Host => return Err(ParseError::Malformed("folded Host header")),
                Field::UserAgent => req.user_agent.as_mut(),
                Field::Referer => req.referer.as_mut(),
                Field::Other => None,
            };
            if let Some(value) = slot.filter(|_| !extra.is_empty()) {
                value.push(' ');
                value.push_str(&extra);
            }
            continue;
        }
        let Some(colon) = memchr(b':', line) else {
            return Err(ParseError::Malformed("header line without colon"));
        };
        let (name, value) = (&line[..colon], trim_ows(&line[colon + 1..]));
        if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
            return Err(ParseError::Malformed("invalid header name"));
        }
        last = Some(Field::Other);
        if name.eq_ignore_ascii_case(b"host") {
            if req.host.is_some() {
                return Err(ParseError::Malformed("duplicate Host header"));
            }
            // An empty Host is legal (no authority); it then counts as absent.
            req.host = normalize_host(value);
            last = Some(Field::Host);
        } else if name.eq_ignore_ascii_case(b"user-agent") {
            // The first one wins; a repeat is ignored (and so is its folding).
            if req.user_agent.is_none() {
                req.user_agent = Some(lossy(value));
                last = Some(Field::UserAgent);
            }
        } else if name.eq_ignore_ascii_case(b"referer") {
            if req.referer.is_none() {
                req.referer = Some(lossy(value));
                last = Some(Field::Referer);
            }
        } else if name.eq_ignore_ascii_case(b"content-length") {
            match (parse_content_length(value), content_length) {
                (Some(n), None) => content_length = Some(n),
                (Some(n), Some(m)) if n == m => {}
                _ => unknown_framing = true,
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            // Only the last coding matters; several headers form one list.
            chunked = Some(last_coding_is_chunked(value));
        }
    };
    if req.host.is_none() {
        req.host = target_host;
    }
    if !complete {
        return Ok((req, None));
    }
    let framing = match (content_length, chunked) {
        _ if unknown_framing => Framing::Unknown,
        (None, None) => Framing::Length(0),
        (Some(n), None) => Framing::Length(n),
        (None, Some(true)) => Framing::Chunked,
        // A non-chunked transfer coding, or both headers (a smuggling shape): not guessing.
        _ => Framing::Unknown,
    };
    let next = match framing {
        Framing::Length(n) => usize::try_from(n).ok().and_then(|n| rest.get(n..)),
        Framing::Chunked => skip_chunked(rest),
        Framing::Unknown => None,
    };
    Ok((req, next))
}

/// The method at the start of `buf`: an upper-case token followed by a space.
fn method_token(buf: &[u8]) -> Result<&[u8], ParseError> {
    let end = buf.iter().position(|&b| !is_tchar(b)).unwrap_or(buf.len());
    let method = &buf[..end];
    if method.len() > MAX_METHOD {
        return Err(ParseError::NotHttp);
    }
    match buf.get(end) {
        // Still inside the method (or nothing at all): only a longer copy could tell.
        None => Err(ParseError::Truncated),
        Some(b' ') if !method.is_empty() => {
            if method == b"PRI" {
                Err(ParseError::NotHttp)
            } else if method.first().is_some_and(u8::is_ascii_uppercase)
                && method
                    .iter()
                    .all(|&b| b.is_ascii_uppercase() || b == b'-' || b == b'_')
            {
                Ok(method)
            } else {
                Err(ParseError::Malformed("method is not an upper-case token"))
            }
        }
        Some(_) => Err(ParseError::NotHttp),
    }
}

/// The path and (authority) host of a request target (access logs reuse it).
pub(crate) fn split_target(
    method: &str,
    target: &[u8],
) -> Result<(String, Option<String>), ParseError> {
    if method == "CONNECT" {
        // authority-form: host:port, no path.
        if target.contains(&b'/') || target.contains(&b'@') {
            return Err(ParseError::Malformed("CONNECT target is not host:port"));
        }
        return Ok((String::new(), normalize_host(target)));
    }
    if target.first() == Some(&b'/') {
        return Ok((normalize_path(target), None));
    }
    if target == b"*" {
        return Ok(("*".to_owned(), None));
    }
    // absolute-form: scheme "://" authority path-abempty [ "?" query ]
    let Some(sep) = target.windows(3).position(|w| w == b"://") else {
        return Err(ParseError::Malformed("unrecognized request target"));
    };
    let scheme = &target[..sep];
    if !scheme.first().is_some_and(u8::is_ascii_alphabetic)
        || !scheme
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
    {
        return Err(ParseError::Malformed("invalid scheme in request target"));
    }
    let after = &target[sep + 3..];
    let auth_end = after
        .iter()
        .position(|&b| matches!(b, b'/' | b'?' | b'#'))
        .unwrap_or(after.len());
    let authority = &after[..auth_end];
    // Drop userinfo (`user:pass@host`).
    let hostport = match authority.iter().rposition(|&b| b == b'@') {
        Some(at) => &authority[at + 1..],
        None => authority,
    };
    let path = normalize_path(&after[auth_end..]);
    let path = if path.is_empty() {
        "/".to_owned()
    } else {
        path
    };
    Ok((path, normalize_host(hostport)))
}

/// The page of an origin-form path: query and fragment dropped, repeated slashes collapsed,
/// nothing else touched (case, percent-encoding, dot segments).
fn normalize_path(target: &[u8]) -> String {
    let end = target
        .iter()
        .position(|&b| b == b'?' || b == b'#')
        .unwrap_or(target.len());
    let target = &target[..end];
    if memchr::memmem::find(target, b"//").is_none() {
        return lossy(target);
    }
    let mut path = Vec::with_capacity(end);
    for &b in target {
        if !(b == b'/' && path.last() == Some(&b'/')) {
            path.push(b);
        }
    }
    lossy(&path)
}

/// `bytes` as a string, invalid UTF-8 replaced by U+FFFD (checked fast, as it is rarely needed).
fn lossy(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_owned(),
        Err(_) => String::from_utf8_lossy(bytes).into_owned(),
    }
}

/// A `Host` value (or an authority) lower-cased, without its port; `None` when empty.
pub(crate) fn normalize_host(raw: &[u8]) -> Option<String> {
    let raw = trim_ows(raw);
    let host = if raw.first() == Some(&b'[') {
        // IP literal: keep the brackets, drop what follows `]` (the port).
        match raw.iter().position(|&b| b == b']') {
            Some(end) => &raw[..=end],
            None => raw,
        }
    } else {
        match raw.iter().filter(|&&b| b == b':').count() {
            // A bare IPv6 address (not valid here, but seen): leave it whole.
            0 | 2.. => raw,
            1 => raw.split(|&b| b == b':').next().unwrap_or(raw),
        }
    };
    if host.is_empty() {
        return None;
    }
    let mut host = lossy(host);
    host.make_ascii_lowercase();
    Some(host)
}

/// Splits off the first line; the line excludes its `\n` (a `\r` before it stays). `None` when
/// there is no `\n`.
fn split_line(buf: &[u8]) -> Option<(&[u8], &[u8])> {
    let i = memchr(b'\n', buf)?;
    let line = &buf[..i];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    Some((line, &buf[i + 1..]))
}

/// Drops leading empty lines (`\r\n` or `\n`).
fn skip_blank_lines(mut buf: &[u8]) -> &[u8] {
    loop {
        if let Some(rest) = buf.strip_prefix(b"\r\n") {
            buf = rest;
        } else if let Some(rest) = buf.strip_prefix(b"\n") {
            buf = rest;
        } else {
            return buf;
        }
    }
}

/// Strips optional whitespace (SP, HTAB) at both ends.
fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

/// RFC 9110 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// `1*DIGIT` that fits in a `u64`.
fn parse_content_length(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    v.iter().try_fold(0u64, |n, &d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

/// Whether the last transfer coding of a `Transfer-Encoding` value is `chunked`.
fn last_coding_is_chunked(v: &[u8]) -> bool {
    let last = v.rsplit(|&b| b == b',').next().unwrap_or_default();
    trim_ows(last).eq_ignore_ascii_case(b"chunked")
}

/// Skips a chunked body (and its trailer section); `None` if it is not complete in `buf` or is
/// malformed. Each step consumes at least one line, so the loop is bounded by `buf`.
fn skip_chunked(mut buf: &[u8]) -> Option<&[u8]> {
    loop {
        let (line, rest) = split_line(buf)?;
        let size = line
            .split(|&b| b == b';')
            .next()
            .map(trim_ows)
            .unwrap_or_default();
        if size.is_empty() || size.len() > 15 || !size.iter().all(u8::is_ascii_hexdigit) {
            return None;
        }
        let size = usize::from_str_radix(std::str::from_utf8(size).ok()?, 16).ok()?;
        if size == 0 {
            // Trailer fields, then an empty line.
            let mut rest = rest;
            loop {
                let (line, next) = split_line(rest)?;
                if line.is_empty() {
                    return Some(next);
                }
                rest = next;
            }
        }
        let after = rest.get(size..)?;
        buf = after
            .strip_prefix(b"\r\n")
            .or_else(|| after.strip_prefix(b"\n"))?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(payload: &[u8]) -> HttpRequest {
        let mut reqs = parse(payload).expect("parses");
        assert_eq!(reqs.len(), 1, "{reqs:?}");
        reqs.remove(0)
    }

    const SAMPLE: &[u8] = b"GET /shop//cart/?item=42#top HTTP/1.1\r\n\
        Host: Shop.Example.COM:8080\r\n\
        User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n\
        Accept: text/html,application/xhtml+xml\r\n\
        Referer: https://shop.example.com/\r\n\
        Connection: keep-alive\r\n\r\n";

    #[test]
    fn starts_request_knows_methods() {
        for m in [
            "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "CONNECT", "TRACE",
        ] {
            assert!(
                starts_request(format!("{m} / HTTP/1.1\r\n").as_bytes()),
                "{m}"
            );
        }
        assert!(!starts_request(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"));
        assert!(!starts_request(b"get / HTTP/1.1\r\n"));
        assert!(!starts_request(b"GET"));
        assert!(!starts_request(b"GETX / HTTP/1.1"));
        assert!(!starts_request(b"\x16\x03\x01"));
        assert!(!starts_request(b""));
    }

    #[test]
    fn parses_a_browser_request() {
        let r = one(SAMPLE);
        assert_eq!(r.method, "GET");
        assert_eq!(r.target, "/shop//cart/?item=42#top");
        assert_eq!(r.path, "/shop/cart/");
        assert_eq!(r.host.as_deref(), Some("shop.example.com"));
        assert_eq!(
            r.user_agent.as_deref(),
            Some("Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0")
        );
        assert_eq!(r.referer.as_deref(), Some("https://shop.example.com/"));
    }

    #[test]
    fn path_normalization() {
        let cases: [(&[u8], &str); 7] = [
            (b"/a//b/?q=1#f", "/a/b/"),
            (b"/", "/"),
            (b"//", "/"),
            (b"/A/%2F%2f/B", "/A/%2F%2f/B"),
            (b"/./../x", "/./../x"),
            (b"/x#frag?notquery", "/x"),
            (b"/?only=query", "/"),
        ];
        for (target, path) in cases {
            let mut req = b"GET ".to_vec();
            req.extend_from_slice(target);
            req.extend_from_slice(b" HTTP/1.1\r\n\r\n");
            assert_eq!(one(&req).path, path, "{}", String::from_utf8_lossy(target));
        }
    }

    #[test]
    fn bare_lf_line_endings() {
        let r = one(b"GET /a HTTP/1.0\nHost: a.example\nUser-Agent: x\n\n");
        assert_eq!(r.host.as_deref(), Some("a.example"));
        assert_eq!(r.user_agent.as_deref(), Some("x"));
    }

    #[test]
    fn header_names_are_case_insensitive_and_values_trimmed() {
        let r = one(b"GET / HTTP/1.1\r\nhOsT:\t a.Example \r\nUSER-AGENT:  curl/8.5.0 \r\nreferer:x\r\n\r\n");
        assert_eq!(r.host.as_deref(), Some("a.example"));
        assert_eq!(r.user_agent.as_deref(), Some("curl/8.5.0"));
        assert_eq!(r.referer.as_deref(), Some("x"));
    }

    #[test]
    fn absolute_form() {
        let r = one(b"GET http://Example.com:8080/x?y HTTP/1.1\r\n\r\n");
        assert_eq!(r.path, "/x");
        assert_eq!(r.target, "http://Example.com:8080/x?y");
        assert_eq!(r.host.as_deref(), Some("example.com"));

        let r = one(b"GET http://user:pw@Example.com HTTP/1.1\r\n\r\n");
        assert_eq!(r.path, "/");
        assert_eq!(r.host.as_deref(), Some("example.com"));

        let r = one(b"GET https://[2001:DB8::1]:443//a//b?c HTTP/1.1\r\n\r\n");
        assert_eq!(r.path, "/a/b");
        assert_eq!(r.host.as_deref(), Some("[2001:db8::1]"));

        // A Host header takes precedence.
        let r = one(b"GET http://a.example/x HTTP/1.1\r\nHost: b.example\r\n\r\n");
        assert_eq!(r.host.as_deref(), Some("b.example"));

        assert_eq!(
            parse(b"GET 1http://a/ HTTP/1.1\r\n\r\n"),
            Err(ParseError::Malformed("invalid scheme in request target"))
        );
        assert_eq!(
            parse(b"GET a.example/x HTTP/1.1\r\n\r\n"),
            Err(ParseError::Malformed("unrecognized request target"))
        );
    }

    #[test]
    fn asterisk_and_authority_form() {
        let r = one(b"OPTIONS * HTTP/1.1\r\nHost: a.example\r\n\r\n");
        assert_eq!(r.path, "*");
        assert_eq!(r.target, "*");

        let r = one(b"CONNECT Example.com:443 HTTP/1.1\r\nUser-Agent: x\r\n\r\n");
        assert_eq!(r.method, "CONNECT");
        assert_eq!(r.path, "");
        assert_eq!(r.host.as_deref(), Some("example.com"));

        let r = one(b"CONNECT [::1]:443 HTTP/1.1\r\n\r\n");
        assert_eq!(r.host.as_deref(), Some("[::1]"));

        assert!(matches!(
            parse(b"CONNECT http://a/ HTTP/1.1\r\n\r\n"),
            Err(ParseError::Malformed(_))
        ));
    }

    #[test]
    fn ipv6_and_odd_hosts() {
        let host = |h: &str| one(format!("GET / HTTP/1.1\r\nHost: {h}\r\n\r\n").as_bytes()).host;
        assert_eq!(host("[2001:DB8::1]:80").as_deref(), Some("[2001:db8::1]"));
        assert_eq!(host("[2001:db8::1]").as_deref(), Some("[2001:db8::1]"));
        assert_eq!(host("2001:db8::1").as_deref(), Some("2001:db8::1"));
        assert_eq!(host("192.0.2.1:8080").as_deref(), Some("192.0.2.1"));
        assert_eq!(host("EXAMPLE.com.").as_deref(), Some("example.com."));
        assert_eq!(host(":80"), None);
        assert_eq!(host(""), None);
        let r = one(b"GET / HTTP/1.1\r\nHost: b\xffd.example\r\n\r\n");
        assert_eq!(r.host.as_deref(), Some("b\u{fffd}d.example"));
    }

    #[test]
    fn http09_request_line() {
        let r = one(b"GET /index.html\r\n");
        assert_eq!(r.path, "/index.html");
        assert_eq!(r.host, None);
        // Nothing after an HTTP/0.9 line is read.
        assert_eq!(
            parse(b"GET /a\r\nGET /b HTTP/1.1\r\n\r\n").map(|v| v.len()),
            Ok(1)
        );
    }

    #[test]
    fn versions() {
        assert!(parse(b"GET / HTTP/1.0\r\n\r\n").is_ok());
        for bad in [
            &b"GET / HTTP/2.0\r\n\r\n"[..],
            b"GET / HTTP/1.1 \r\n\r\n",
            b"GET / http/1.1\r\n\r\n",
            b"GET / HTTP/1.12\r\n\r\n",
            b"GET  / HTTP/1.1\r\n\r\n",
        ] {
            assert!(
                matches!(parse(bad), Err(ParseError::Malformed(_))),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn methods() {
        assert_eq!(
            parse(b"get / HTTP/1.1\r\n\r\n"),
            Err(ParseError::Malformed("method is not an upper-case token"))
        );
        assert_eq!(
            parse(b"Get / HTTP/1.1\r\n\r\n"),
            Err(ParseError::Malformed("method is not an upper-case token"))
        );
        assert_eq!(one(b"PROPFIND /dav HTTP/1.1\r\n\r\n").method, "PROPFIND");
        assert_eq!(
            one(b"VERSION-CONTROL / HTTP/1.1\r\n\r\n").method,
            "VERSION-CONTROL"
        );
        assert_eq!(
            parse(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
            Err(ParseError::NotHttp)
        );
        assert_eq!(parse(b" GET / HTTP/1.1\r\n\r\n"), Err(ParseError::NotHttp));
        assert_eq!(parse(b"GET\t/ HTTP/1.1\r\n\r\n"), Err(ParseError::NotHttp));
        let long = format!("{} / HTTP/1.1\r\n\r\n", "A".repeat(40));
        assert_eq!(parse(long.as_bytes()), Err(ParseError::NotHttp));
    }

    #[test]
    fn garbage_is_not_http() {
        for g in [
            &b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"[..],
            b"SSH-2.0-OpenSSH_9.6\r\n",
            b"\x00\x00\x00\x00",
            b"\r\n\r\n",
            b"{\"json\":1}",
        ] {
            assert_eq!(parse(g), Err(ParseError::NotHttp), "{g:?}");
        }
    }

    #[test]
    fn pipelined_requests() {
        let reqs = parse(
            b"GET /a HTTP/1.1\r\nHost: x.example\r\n\r\n\
              HEAD /b?z HTTP/1.1\r\nHost: y.example\r\nUser-Agent: ua\r\n\r\n\
              GET /c HTTP/1.1\r\nHost: x.example\r\n\r\n",
        )
        .unwrap();
        let got: Vec<_> = reqs
            .iter()
            .map(|r| (r.method.as_str(), r.path.as_str(), r.host.as_deref()))
            .collect();
        assert_eq!(
            got,
            [
                ("GET", "/a", Some("x.example")),
                ("HEAD", "/b", Some("y.example")),
                ("GET", "/c", Some("x.example")),
            ]
        );
        assert_eq!(reqs[1].user_agent.as_deref(), Some("ua"));
        assert_eq!(reqs[2].user_agent, None);
    }

    #[test]
    fn pipelining_is_capped() {
        let payload = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n".repeat(MAX_REQUESTS + 5);
        assert_eq!(parse(&payload).map(|v| v.len()), Ok(MAX_REQUESTS));
    }

    #[test]
    fn bad_later_request_keeps_the_earlier_ones() {
        let reqs = parse(b"GET /a HTTP/1.1\r\n\r\nget /b HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!(reqs.len(), 1);
        let reqs = parse(b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\nHost: \0\r\n\r\n").unwrap();
        assert_eq!(reqs.len(), 1);
        let reqs = parse(b"GET /a HTTP/1.1\r\n\r\n\x16\x03\x01").unwrap();
        assert_eq!(reqs.len(), 1);
        let reqs = parse(b"GET /a HTTP/1.1\r\n\r\nGET /b HT").unwrap();
        assert_eq!(reqs.len(), 1);
    }

    #[test]
    fn bodies() {
        // A complete Content-Length body is skipped, then the next request (after a stray CRLF).
        let reqs = parse(
            b"POST /form HTTP/1.1\r\nContent-Length: 7\r\n\r\na=1&b=2\r\nGET /next HTTP/1.1\r\n\r\n",
        )
        .unwrap();
        assert_eq!(reqs.len(), 2);
        assert_eq!(reqs[1].path, "/next");

        // A body that is not all there stops the list.
        let reqs = parse(
            b"POST /form HTTP/1.1\r\nContent-Length: 100\r\n\r\na=1&b=2GET / HTTP/1.1\r\n\r\n",
        )
        .unwrap();
        assert_eq!(reqs.len(), 1);

        // Content-Length: 0 is no body.
        let reqs =
            parse(b"POST /a HTTP/1.1\r\ncontent-length: 0\r\n\r\nGET /b HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!(reqs.len(), 2);

        // A complete chunked body is skipped, an incomplete one stops.
        let reqs = parse(
            b"POST /c HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n\
              4;ext=1\r\nwiki\r\n5\r\npedia\r\n0\r\nX-Trailer: 1\r\n\r\n\
              GET /after HTTP/1.1\r\n\r\n",
        )
        .unwrap();
        assert_eq!(reqs.len(), 2);
        assert_eq!(reqs[1].path, "/after");
        let reqs = parse(
            b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nshort\r\nGET / HTTP/1.1\r\n\r\n",
        )
        .unwrap();
        assert_eq!(reqs.len(), 1);

        // Ambiguous framing: stop after the request, do not fail it.
        for head in [
            &b"POST /a HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
            b"POST /a HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"POST /a HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            b"POST /a HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n",
            b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
        ] {
            let mut payload = head.to_vec();
            payload.extend_from_slice(b"0\r\n\r\nGET / HTTP/1.1\r\n\r\n");
            assert_eq!(
                parse(&payload).map(|v| v.len()),
                Ok(1),
                "{}",
                String::from_utf8_lossy(head)
            );
        }
        // Identical repeated lengths are fine.
        let reqs = parse(
            b"POST /a HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nxGET / HTTP/1.1\r\n\r\n",
        )
        .unwrap();
        assert_eq!(reqs.len(), 2);
    }

    #[test]
    fn truncated_headers_return_what_was_seen() {
        let r = one(b"GET /a HTTP/1.1\r\nHost: a.example\r\nUser-Agent: Mozilla/5.0 (Win");
        assert_eq!(r.host.as_deref(), Some("a.example"));
        assert_eq!(r.user_agent, None);
        // Header block complete but nothing more: fine, no second request.
        let r = one(b"GET /a HTTP/1.1\r\nHost: a.example\r\n");
        assert_eq!(r.host.as_deref(), Some("a.example"));
    }

    #[test]
    fn truncated_at_every_offset() {
        // Every prefix is Truncated or a prefix of the full result, and never panics.
        let mut payload = SAMPLE.to_vec();
        payload.extend_from_slice(
            b"POST /api/v1/items HTTP/1.1\r\nHost: api.example\r\nContent-Length: 5\r\n\r\nhello",
        );
        payload.extend_from_slice(SAMPLE);
        let full = parse(&payload).unwrap();
        assert_eq!(full.len(), 3);
        let line_end = payload.iter().position(|&b| b == b'\n').unwrap();
        for cut in 0..payload.len() {
            match parse(&payload[..cut]) {
                Err(ParseError::Truncated) => assert!(cut <= line_end, "cut {cut}"),
                Err(e) => panic!("cut {cut}: {e}"),
                Ok(got) => {
                    assert!(cut > line_end, "cut {cut}");
                    assert!(!got.is_empty() && got.len() <= full.len(), "cut {cut}");
                    for (i, (g, f)) in got.iter().zip(&full).enumerate() {
                        assert_eq!(g.method, f.method, "cut {cut} req {i}");
                        assert_eq!(g.path, f.path, "cut {cut} req {i}");
                        assert_eq!(g.target, f.target, "cut {cut} req {i}");
                        // A header is either seen whole or not at all.
                        for (a, b) in [
                            (&g.host, &f.host),
                            (&g.user_agent, &f.user_agent),
                            (&g.referer, &f.referer),
                        ] {
                            assert!(a.is_none() || a == b, "cut {cut} req {i}: {a:?} vs {b:?}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn limits() {
        let long = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(MAX_REQUEST_LINE));
        assert_eq!(parse(long.as_bytes()), Err(ParseError::TooLarge));
        // Unterminated and already too long.
        let long = format!("GET /{}", "a".repeat(MAX_REQUEST_LINE + 10));
        assert_eq!(parse(long.as_bytes()), Err(ParseError::TooLarge));
        // Just under the limit.
        let ok = format!(
            "GET /{} HTTP/1.1\r\n\r\n",
            "a".repeat(MAX_REQUEST_LINE - 20)
        );
        assert!(parse(ok.as_bytes()).is_ok());

        let header = format!(
            "GET / HTTP/1.1\r\nX-Big: {}\r\n\r\n",
            "b".repeat(MAX_HEADER_LINE)
        );
        assert_eq!(parse(header.as_bytes()), Err(ParseError::TooLarge));
        let header = format!(
            "GET / HTTP/1.1\r\nX-Big: {}",
            "b".repeat(MAX_HEADER_LINE + 10)
        );
        assert_eq!(parse(header.as_bytes()), Err(ParseError::TooLarge));

        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..MAX_HEADERS {
            many.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        let mut ok = many.clone();
        ok.extend_from_slice(b"\r\n");
        assert!(parse(&ok).is_ok());
        many.extend_from_slice(b"X-Last: v\r\n\r\n");
        assert_eq!(parse(&many), Err(ParseError::TooLarge));
    }

    #[test]
    fn nuls_and_controls() {
        for bad in [
            &b"GET /a\0b HTTP/1.1\r\n\r\n"[..],
            b"GET / HTTP/1.1\0\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\0.example\r\n\r\n",
            b"GET / HTTP/1.1\r\nUser-Agent: x\ry\r\n\r\n",
            b"GET / HTTP/1.1\r\nX-Other: \0\r\n\r\n",
            b"GET / HTTP/1.1\rHost: a\r\n\r\n",
            b"GET /a\x7f HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost : x\r\n\r\n",
            b"GET / HTTP/1.1\r\nNoColon\r\n\r\n",
            b"GET / HTTP/1.1\r\n: empty-name\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        ] {
            assert!(
                matches!(parse(bad), Err(ParseError::Malformed(_))),
                "{:?} -> {:?}",
                String::from_utf8_lossy(bad),
                parse(bad)
            );
        }
        // A NUL in a line that was cut off is never looked at.
        let r = one(b"GET / HTTP/1.1\r\nHost: a\r\nX: \0");
        assert_eq!(r.host.as_deref(), Some("a"));
    }

    #[test]
    fn invalid_utf8_is_lossy() {
        let r =
            one(b"GET /caf\xe9/\xff HTTP/1.1\r\nUser-Agent: bot\xc3\x28\r\nReferer: \xfe\r\n\r\n");
        assert_eq!(r.path, "/caf\u{fffd}/\u{fffd}");
        assert_eq!(r.user_agent.as_deref(), Some("bot\u{fffd}("));
        assert_eq!(r.referer.as_deref(), Some("\u{fffd}"));
        let r = one("GET /ünï HTTP/1.1\r\nUser-Agent: 日本\r\n\r\n".as_bytes());
        assert_eq!(r.path, "/ünï");
        assert_eq!(r.user_agent.as_deref(), Some("日本"));
    }

    #[test]
    fn obs_fold() {
        let r = one(b"GET / HTTP/1.1\r\nUser-Agent: a\r\n  b\r\n\tc\r\nX-Y: 1\r\n more\r\n\r\n");
        assert_eq!(r.user_agent.as_deref(), Some("a b c"));
        assert!(matches!(
            parse(b"GET / HTTP/1.1\r\n folded\r\n\r\n"),
            Err(ParseError::Malformed(_))
        ));
        assert!(matches!(
            parse(b"GET / HTTP/1.1\r\nHost: a\r\n .example\r\n\r\n"),
            Err(ParseError::Malformed(_))
        ));
    }

    #[test]
    fn duplicate_ua_and_referer_keep_the_first() {
        let r = one(b"GET / HTTP/1.1\r\nUser-Agent: one\r\nUser-Agent: two\r\n  fold\r\nReferer: r1\r\nReferer: r2\r\n\r\n");
        assert_eq!(r.user_agent.as_deref(), Some("one"));
        assert_eq!(r.referer.as_deref(), Some("r1"));
    }

    #[test]
    fn empty_and_tiny_inputs() {
        assert_eq!(parse(b""), Err(ParseError::Truncated));
        assert_eq!(parse(b"GET"), Err(ParseError::Truncated));
        assert_eq!(parse(b"GET "), Err(ParseError::Truncated));
        assert_eq!(parse(b"GET /"), Err(ParseError::Truncated));
        assert_eq!(parse(b"GET / HTTP/1.1\r"), Err(ParseError::Truncated));
        assert!(matches!(parse(b"GET \r\n"), Err(ParseError::Malformed(_))));
        assert!(matches!(
            parse(b"GET  HTTP/1.1\r\n"),
            Err(ParseError::Malformed(_))
        ));
    }

    #[test]
    fn error_display() {
        assert_eq!(
            ParseError::Malformed("x").to_string(),
            "malformed HTTP request: x"
        );
        assert_eq!(
            ParseError::TooLarge.to_string(),
            "HTTP request over the size limits"
        );
    }

    /// `cargo test -p swarmwall --release --lib l7::http::tests::throughput -- --ignored --nocapture`
    #[test]
    #[ignore = "timing, run by hand in release"]
    fn throughput() {
        let payload: &[u8] = b"GET /products/shoes/running?color=blue&size=42 HTTP/1.1\r\n\
            Host: www.shop-example.com\r\n\
            User-Agent: Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36\r\n\
            Accept: text/html,application/xhtml+xml\r\n\
            Referer: https://www.shop-example.com/\r\n\r\n";
        const N: u32 = 1_000_000;
        let start = std::time::Instant::now();
        let mut paths = 0usize;
        for _ in 0..N {
            let reqs = parse(std::hint::black_box(payload)).unwrap();
            paths += reqs[0].path.len();
        }
        let elapsed = start.elapsed();
        println!(
            "http::parse: {} bytes, {:.0} ns/request ({paths})",
            payload.len(),
            elapsed.as_nanos() as f64 / f64::from(N)
        );
    }
}
