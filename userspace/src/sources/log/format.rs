//! Access-log line formats and the total parser of one line into a [`RequestEvent`].
//!
//! `combined` and `common` are nginx `log_format` strings like any other: every text format is
//! compiled once into literal and variable steps, and a line is matched against them left to
//! right, borrowing slices of the line until the event is built. `json` reads one object per
//! line with configurable key names.

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;
use serde::Deserialize;

use crate::l7::{Kind, RequestEvent, http};

/// nginx's and Apache's default format.
pub const COMBINED: &str = r#"$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent""#;
/// The Common Log Format (no Referer, no User-Agent).
pub const COMMON: &str =
    r#"$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent"#;

/// A variable of an nginx `log_format` that the parser uses; any other is skipped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Var {
    RemoteAddr,
    TimeLocal,
    TimeIso8601,
    Msec,
    Request,
    Method,
    Uri,
    Status,
    BodyBytes,
    Referer,
    UserAgent,
    Host,
    HttpHost,
    ServerAddr,
    ServerPort,
    ForwardedFor,
    Skip,
}

impl Var {
    fn from_name(name: &str) -> Self {
        match name {
            "remote_addr" => Self::RemoteAddr,
            "time_local" => Self::TimeLocal,
            "time_iso8601" => Self::TimeIso8601,
            "msec" => Self::Msec,
            "request" => Self::Request,
            "request_method" => Self::Method,
            "request_uri" => Self::Uri,
            "status" => Self::Status,
            "body_bytes_sent" | "bytes_sent" => Self::BodyBytes,
            "http_referer" => Self::Referer,
            "http_user_agent" => Self::UserAgent,
            "host" => Self::Host,
            "http_host" => Self::HttpHost,
            "server_addr" => Self::ServerAddr,
            "server_port" => Self::ServerPort,
            "http_x_forwarded_for" => Self::ForwardedFor,
            _ => Self::Skip,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Step {
    Literal(Vec<u8>),
    Var(Var),
}

/// Key names of a `json` log's fields (nginx variable names by default, as in the usual
/// `log_format json escape=json '{"remote_addr":"$remote_addr",...}'`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JsonFields {
    /// Client address.
    pub remote_addr: String,
    /// Time: RFC 3339 / ISO 8601, `$time_local` form, or Unix seconds (number or string).
    pub time: String,
    /// The request line (`GET /path HTTP/1.1`); when absent, `method` and `uri` are used.
    pub request: String,
    /// Method, used when there is no request line.
    pub method: String,
    /// Request target, used when there is no request line.
    pub uri: String,
    /// Status code.
    pub status: String,
    /// Response body bytes.
    pub body_bytes_sent: String,
    /// `Referer`.
    pub referer: String,
    /// `User-Agent`.
    pub user_agent: String,
    /// `Host` (or `$host`).
    pub host: String,
    /// The server's address (the site).
    pub server_addr: String,
    /// The server's port (the site).
    pub server_port: String,
    /// `X-Forwarded-For`.
    pub forwarded_for: String,
}

impl Default for JsonFields {
    fn default() -> Self {
        let s = |v: &str| v.to_owned();
        Self {
            remote_addr: s("remote_addr"),
            time: s("time_local"),
            request: s("request"),
            method: s("request_method"),
            uri: s("request_uri"),
            status: s("status"),
            body_bytes_sent: s("body_bytes_sent"),
            referer: s("http_referer"),
            user_agent: s("http_user_agent"),
            host: s("host"),
            server_addr: s("server_addr"),
            server_port: s("server_port"),
            forwarded_for: s("http_x_forwarded_for"),
        }
    }
}

/// A compiled line format.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Format(Inner);

#[derive(Clone, Debug, PartialEq, Eq)]
enum Inner {
    /// An nginx `log_format` (the named text formats compile to one too).
    Text(Vec<Step>),
    /// One JSON object per line.
    Json(Box<JsonFields>),
}

/// A format that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FormatError {
    /// Two variables with nothing between them cannot be told apart in a line.
    #[error("log_format {format:?}: ${first} and ${second} are not separated by any text")]
    Adjacent {
        /// The format.
        format: String,
        /// The first variable.
        first: String,
        /// The second.
        second: String,
    },
    /// A `${` without its `}`.
    #[error("log_format {format:?}: unclosed ${{ at byte {at}")]
    Unclosed {
        /// The format.
        format: String,
        /// Where.
        at: usize,
    },
    /// Nothing in the format says who made the request or what they asked for.
    #[error(
        "log_format {format:?} has no {missing}: swarmwall needs $remote_addr, a time ($time_local, $time_iso8601 or $msec) and $request (or $request_method and $request_uri)"
    )]
    Missing {
        /// The format.
        format: String,
        /// What is missing.
        missing: &'static str,
    },
}

impl Format {
    /// `combined`, `common`, `json` (with `fields`), or an nginx `log_format` string.
    pub fn parse(spec: &str, fields: Option<JsonFields>) -> Result<Self, FormatError> {
        match spec.trim() {
            "combined" => Self::compile(COMBINED),
            "common" => Self::compile(COMMON),
            "json" => Ok(Self(Inner::Json(Box::new(fields.unwrap_or_default())))),
            other => Self::compile(other),
        }
    }

    /// Compiles an nginx `log_format` string: `$name` and `${name}` are variables (names of
    /// letters, digits and `_`), everything else is literal text.
    pub fn compile(format: &str) -> Result<Self, FormatError> {
        let b = format.as_bytes();
        let mut steps: Vec<Step> = Vec::new();
        let mut lit = Vec::new();
        let mut names: Vec<String> = Vec::new();
        let mut i = 0;
        let is_name = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
        while i < b.len() {
            let (name, next) = if b[i] == b'$' && b.get(i + 1) == Some(&b'{') {
                let Some(end) = b[i + 2..].iter().position(|&c| c == b'}') else {
                    return Err(FormatError::Unclosed {
                        format: format.into(),
                        at: i,
                    });
                };
                (&format[i + 2..i + 2 + end], i + 3 + end)
            } else if b[i] == b'$' && b.get(i + 1).is_some_and(|&c| is_name(c)) {
                let len = b[i + 1..].iter().take_while(|&&c| is_name(c)).count();
                (&format[i + 1..i + 1 + len], i + 1 + len)
            } else {
                lit.push(b[i]);
                i += 1;
                continue;
            };
            if !lit.is_empty() {
                steps.push(Step::Literal(std::mem::take(&mut lit)));
            } else if let Some(Step::Var(_)) = steps.last() {
                return Err(FormatError::Adjacent {
                    format: format.into(),
                    first: names.last().cloned().unwrap_or_default(),
                    second: name.into(),
                });
            }
            names.push(name.into());
            steps.push(Step::Var(Var::from_name(name)));
            i = next;
        }
        if !lit.is_empty() {
            steps.push(Step::Literal(lit));
        }
        let has = |v: Var| steps.contains(&Step::Var(v));
        let missing = if !has(Var::RemoteAddr) {
            Some("$remote_addr")
        } else if !(has(Var::TimeLocal) || has(Var::TimeIso8601) || has(Var::Msec)) {
            Some("time")
        } else if !(has(Var::Request) || (has(Var::Method) && has(Var::Uri))) {
            Some("$request")
        } else {
            None
        };
        if let Some(missing) = missing {
            return Err(FormatError::Missing {
                format: format.into(),
                missing,
            });
        }
        Ok(Self(Inner::Text(steps)))
    }

    /// Whether each line names the site (`$server_addr`), so no `site` needs configuring.
    pub fn has_server_addr(&self) -> bool {
        match &self.0 {
            Inner::Text(steps) => steps.contains(&Step::Var(Var::ServerAddr)),
            // A JSON line may or may not carry it: sites are the fallback.
            Inner::Json(_) => false,
        }
    }

    /// Whether this is the `json` format.
    pub fn is_json(&self) -> bool {
        matches!(self.0, Inner::Json(_))
    }
}

/// Why a line gave no event. [`Reject::ALL`] lists them for counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reject {
    /// Longer than the line limit.
    Oversize,
    /// Does not have the format's layout (a literal is missing).
    Layout,
    /// Not a JSON object, or a field of the wrong type.
    Json,
    /// The client address is missing or not an IP address.
    Client,
    /// The time is missing or unreadable.
    Time,
    /// The request line is missing or not `METHOD target [HTTP/x]` (e.g. TLS bytes sent to a
    /// plain-HTTP port, which nginx logs as the request).
    Request,
    /// The status is not a number.
    Status,
    /// `$server_addr`/`$server_port` unreadable and no configured site to fall back on.
    Site,
}

impl Reject {
    /// Every reason, in counter order.
    pub const ALL: [Reject; 8] = [
        Self::Oversize,
        Self::Layout,
        Self::Json,
        Self::Client,
        Self::Time,
        Self::Request,
        Self::Status,
        Self::Site,
    ];

    /// The reason's name in counters and status.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Oversize => "oversize",
            Self::Layout => "layout",
            Self::Json => "json",
            Self::Client => "client",
            Self::Time => "time",
            Self::Request => "request",
            Self::Status => "status",
            Self::Site => "site",
        }
    }

    /// Its index in [`Reject::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// The values a line gave, borrowed from it.
#[derive(Default)]
struct Fields<'a> {
    remote_addr: Option<&'a [u8]>,
    time: Option<(TimeForm, &'a [u8])>,
    request: Option<&'a [u8]>,
    method: Option<&'a [u8]>,
    uri: Option<&'a [u8]>,
    status: Option<&'a [u8]>,
    bytes: Option<&'a [u8]>,
    referer: Option<&'a [u8]>,
    user_agent: Option<&'a [u8]>,
    host: Option<&'a [u8]>,
    server_addr: Option<&'a [u8]>,
    server_port: Option<&'a [u8]>,
    forwarded_for: Option<&'a [u8]>,
}

#[derive(Clone, Copy)]
enum TimeForm {
    Local,
    Iso,
    Epoch,
    /// JSON: whichever of the three it looks like.
    Any,
}

/// Turns lines of one format into request events: the format, where lines go when they do not
/// name their site, and which clients are proxies whose `X-Forwarded-For` is believed.
#[derive(Clone, Debug)]
pub struct LineParser {
    format: Format,
    sites: Vec<SocketAddr>,
    trusted: Vec<IpNet>,
    /// The last `$time_local` text and its value: consecutive lines mostly share the second.
    time_cache: std::cell::Cell<([u8; 32], usize, u64)>,
}

impl LineParser {
    /// A parser for `format`. Lines without `$server_addr` go to the first site in `sites` of
    /// the client's address family (a dual-stack site is listed as both addresses), else the
    /// first site; with no site at all they are rejected ([`Reject::Site`]).
    pub fn new(format: Format, sites: Vec<SocketAddr>, trusted: Vec<IpNet>) -> Self {
        Self {
            format,
            sites,
            trusted,
            time_cache: std::cell::Cell::new(([0; 32], usize::MAX, 0)),
        }
    }

    /// The format.
    pub fn format(&self) -> &Format {
        &self.format
    }

    /// One line (without its newline) as a request event. Total: any bytes give an event or a
    /// reason.
    pub fn parse(&self, line: &[u8]) -> Result<RequestEvent, Reject> {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        match &self.format.0 {
            Inner::Text(steps) => {
                let fields = match_steps(steps, line)?;
                self.build(&fields)
            }
            Inner::Json(names) => self.parse_json(names, line),
        }
    }

    fn parse_json(&self, names: &JsonFields, line: &[u8]) -> Result<RequestEvent, Reject> {
        let obj: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(line).map_err(|_| Reject::Json)?;
        // Numbers are rendered to text so one builder serves both kinds of format.
        let mut owned: Vec<(usize, String)> = Vec::new();
        let keys = [
            &names.remote_addr,
            &names.time,
            &names.request,
            &names.method,
            &names.uri,
            &names.status,
            &names.body_bytes_sent,
            &names.referer,
            &names.user_agent,
            &names.host,
            &names.server_addr,
            &names.server_port,
            &names.forwarded_for,
        ];
        for (i, k) in keys.iter().enumerate() {
            match obj.get(k.as_str()) {
                None | Some(serde_json::Value::Null) => {}
                Some(serde_json::Value::String(s)) => owned.push((i, s.clone())),
                Some(serde_json::Value::Number(n)) => owned.push((i, n.to_string())),
                Some(_) => return Err(Reject::Json),
            }
        }
        let mut f = Fields::default();
        for (i, v) in &owned {
            let v = Some(v.as_bytes());
            match i {
                0 => f.remote_addr = v,
                1 => f.time = v.map(|v| (TimeForm::Any, v)),
                2 => f.request = v,
                3 => f.method = v,
                4 => f.uri = v,
                5 => f.status = v,
                6 => f.bytes = v,
                7 => f.referer = v,
                8 => f.user_agent = v,
                9 => f.host = v,
                10 => f.server_addr = v,
                11 => f.server_port = v,
                _ => f.forwarded_for = v,
            }
        }
        self.build(&f)
    }

    fn build(&self, f: &Fields<'_>) -> Result<RequestEvent, Reject> {
        let client = f.remote_addr.and_then(parse_ip).ok_or(Reject::Client)?;
        let ts_ns = match f.time {
            Some((TimeForm::Local, t)) => self.time_local(t),
            Some((TimeForm::Iso, t)) => parse_iso8601(t),
            Some((TimeForm::Epoch, t)) => parse_epoch(t),
            Some((TimeForm::Any, t)) => parse_epoch(t)
                .or_else(|| parse_iso8601(t))
                .or_else(|| parse_time_local(t)),
            None => None,
        }
        .ok_or(Reject::Time)?;
        let (method, target) = match (f.request, f.method, f.uri) {
            (Some(r), _, _) => split_request(r)?,
            (None, Some(m), Some(u)) if is_method(m) && !u.is_empty() => (m, u),
            _ => return Err(Reject::Request),
        };
        let method = std::str::from_utf8(method).map_err(|_| Reject::Request)?;
        let (path, authority) = http::split_target(method, target).map_err(|_| Reject::Request)?;
        let status = match f.status.and_then(dash) {
            None => None,
            Some(s) => Some(
                parse_u64(s)
                    .and_then(|v| u16::try_from(v).ok())
                    .ok_or(Reject::Status)?,
            ),
        };
        let bytes = f.bytes.and_then(dash).and_then(parse_u64);
        let host = f
            .host
            .and_then(dash)
            .and_then(http::normalize_host)
            .or(authority);
        let src = self.client(client, f.forwarded_for);
        let (dst, dst_port) = self.site(src, f.server_addr, f.server_port)?;
        Ok(RequestEvent {
            ts_ns,
            src,
            dst,
            dst_port,
            kind: Kind::Http,
            host,
            path,
            user_agent: f.user_agent.and_then(dash).map(lossy),
            referer: f.referer.and_then(dash).map(lossy),
            status,
            bytes,
            ja4: None,
            origin: crate::l7::Origin::Log,
            alpn: None,
        })
    }

    /// The client: the line's address, or behind a trusted proxy the right-most address of
    /// `X-Forwarded-For` that is not itself a trusted proxy (nginx's `real_ip_recursive on`).
    /// An unreadable entry ends the walk: what lies left of it cannot be believed, so the
    /// address reached so far stands.
    fn client(&self, client: IpAddr, xff: Option<&[u8]>) -> IpAddr {
        if self.trusted.is_empty() || !self.is_trusted(client) {
            return client;
        }
        let Some(xff) = xff.and_then(dash) else {
            return client;
        };
        let mut current = client;
        for entry in xff.rsplit(|&b| b == b',') {
            let Some(ip) = parse_ip(entry.trim_ascii()) else {
                return current;
            };
            current = ip;
            if !self.is_trusted(ip) {
                return ip;
            }
        }
        current
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|n| n.contains(&ip))
    }

    fn site(
        &self,
        client: IpAddr,
        addr: Option<&[u8]>,
        port: Option<&[u8]>,
    ) -> Result<(IpAddr, u16), Reject> {
        let port = port.and_then(parse_u64).and_then(|p| u16::try_from(p).ok());
        if let Some(ip) = addr.and_then(parse_ip) {
            let port = port
                .or_else(|| self.sites.first().map(SocketAddr::port))
                .unwrap_or(80);
            return Ok((ip, port));
        }
        let site = self
            .sites
            .iter()
            .find(|s| s.is_ipv4() == client.is_ipv4())
            .or(self.sites.first())
            .ok_or(Reject::Site)?;
        Ok((site.ip(), site.port()))
    }

    fn time_local(&self, t: &[u8]) -> Option<u64> {
        let (mut buf, len, val) = self.time_cache.get();
        if len == t.len() && buf.get(..t.len()) == Some(t) {
            return Some(val);
        }
        let v = parse_time_local(t)?;
        if let Some(dst) = buf.get_mut(..t.len()) {
            dst.copy_from_slice(t);
            self.time_cache.set((buf, t.len(), v));
        }
        Some(v)
    }
}

/// Matches a line against the steps; a variable's value runs to the next literal (or the end
/// of the line). Bytes after the last step are ignored, so `combined` also reads nginx's
/// `main` format and lines with fields appended.
fn match_steps<'a>(steps: &[Step], line: &'a [u8]) -> Result<Fields<'a>, Reject> {
    let mut f = Fields::default();
    let mut rest = line;
    let mut i = 0;
    while let Some(step) = steps.get(i) {
        match step {
            Step::Literal(lit) => {
                rest = rest.strip_prefix(lit.as_slice()).ok_or(Reject::Layout)?;
            }
            Step::Var(var) => {
                let end = match steps.get(i + 1) {
                    Some(Step::Literal(lit)) => find_literal(rest, lit).ok_or(Reject::Layout)?,
                    _ => rest.len(),
                };
                let (value, after) = rest.split_at(end);
                set(&mut f, *var, value);
                rest = after;
            }
        }
        i += 1;
    }
    Ok(f)
}

/// Where `lit` next starts in `hay`. A literal opening with `"` ends a quoted value, so a `"`
/// escaped with a backslash (Apache writes `\"`) is not it.
fn find_literal(hay: &[u8], lit: &[u8]) -> Option<usize> {
    let first = *lit.first()?;
    let mut from = 0;
    while let Some(off) = memchr::memchr(first, hay.get(from..)?) {
        let at = from + off;
        let escaped =
            first == b'"' && hay[..at].iter().rev().take_while(|&&b| b == b'\\').count() % 2 == 1;
        if !escaped && hay[at..].starts_with(lit) {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

fn set<'a>(f: &mut Fields<'a>, var: Var, v: &'a [u8]) {
    let v = Some(v);
    match var {
        Var::RemoteAddr => f.remote_addr = v,
        Var::TimeLocal => f.time = v.map(|v| (TimeForm::Local, v)),
        Var::TimeIso8601 => f.time = v.map(|v| (TimeForm::Iso, v)),
        Var::Msec => f.time = v.map(|v| (TimeForm::Epoch, v)),
        Var::Request => f.request = v,
        Var::Method => f.method = v,
        Var::Uri => f.uri = v,
        Var::Status => f.status = v,
        Var::BodyBytes => f.bytes = v,
        Var::Referer => f.referer = v,
        Var::UserAgent => f.user_agent = v,
        // `$host` wins over the raw header: nginx has already normalised it.
        Var::Host => f.host = v,
        Var::HttpHost => f.host = f.host.or(v),
        Var::ServerAddr => f.server_addr = v,
        Var::ServerPort => f.server_port = v,
        Var::ForwardedFor => f.forwarded_for = v,
        Var::Skip => {}
    }
}

/// `METHOD SP target [SP HTTP/x.y]`.
fn split_request(r: &[u8]) -> Result<(&[u8], &[u8]), Reject> {
    let sp = memchr::memchr(b' ', r).ok_or(Reject::Request)?;
    let (method, rest) = (&r[..sp], &r[sp + 1..]);
    let target = match memchr::memrchr(b' ', rest) {
        Some(i) if rest[i + 1..].starts_with(b"HTTP/") => &rest[..i],
        Some(_) => return Err(Reject::Request),
        None => rest,
    };
    if !is_method(method) || target.is_empty() || target.contains(&b' ') {
        return Err(Reject::Request);
    }
    Ok((method, target))
}

fn is_method(m: &[u8]) -> bool {
    !m.is_empty()
        && m.len() <= 16
        && m.iter()
            .all(|&b| b.is_ascii_uppercase() || b == b'-' || b == b'_')
}

/// `None` for nginx's and Apache's "no value" (`-`) and for empty values.
fn dash(v: &[u8]) -> Option<&[u8]> {
    (v != b"-" && !v.is_empty()).then_some(v)
}

fn lossy(v: &[u8]) -> String {
    String::from_utf8_lossy(v).into_owned()
}

fn parse_ip(v: &[u8]) -> Option<IpAddr> {
    let s = std::str::from_utf8(v).ok()?;
    // Brackets appear around IPv6 addresses in some formats (`[::1]`).
    let s = s
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .unwrap_or(s);
    // A dual-stack socket logs IPv4 clients as `::ffff:a.b.c.d`: the same client.
    s.parse::<IpAddr>().ok().map(|ip| ip.to_canonical())
}

fn parse_u64(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(
        v.iter()
            .fold(0u64, |acc, &d| acc * 10 + u64::from(d - b'0')),
    )
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: u64, d: u64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Unix ns of a civil date `(y, mo, d)` and time `(h, mi, s)` at `off_s` seconds east of UTC.
fn to_ns(
    (y, mo, d): (u64, u64, u64),
    (h, mi, s): (u64, u64, u64),
    frac_ns: u64,
    off_s: i64,
) -> Option<u64> {
    if !(1970..=9999).contains(&y)
        || !(1..=12).contains(&mo)
        || !(1..=31).contains(&d)
        || h > 23
        || mi > 59
        || s > 60
    {
        return None;
    }
    let days = days_from_civil(y as i64, mo, d);
    let secs = days * 86_400 + (h * 3600 + mi * 60 + s) as i64 - off_s;
    u64::try_from(secs)
        .ok()?
        .checked_mul(1_000_000_000)?
        .checked_add(frac_ns)
}

/// `+hhmm`, `+hh:mm`, `Z`, in seconds east of UTC.
fn parse_offset(v: &[u8]) -> Option<i64> {
    if v == b"Z" || v == b"z" {
        return Some(0);
    }
    let (sign, rest) = match v.split_first()? {
        (b'+', r) => (1, r),
        (b'-', r) => (-1, r),
        _ => return None,
    };
    let (h, m) = match rest.len() {
        4 => (&rest[..2], &rest[2..]),
        5 if rest[2] == b':' => (&rest[..2], &rest[3..]),
        _ => return None,
    };
    let (h, m) = (parse_u64(h)?, parse_u64(m)?);
    (h <= 23 && m <= 59).then(|| sign * (h * 3600 + m * 60) as i64)
}

/// `$time_local`: `01/May/2024:12:00:00 +0000`.
fn parse_time_local(v: &[u8]) -> Option<u64> {
    if v.len() != 26
        || v[2] != b'/'
        || v[6] != b'/'
        || v[11] != b':'
        || v[14] != b':'
        || v[17] != b':'
        || v[20] != b' '
    {
        return None;
    }
    const MONTHS: [&[u8]; 12] = [
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
        b"Dec",
    ];
    let mo = MONTHS.iter().position(|m| *m == &v[3..6])? as u64 + 1;
    to_ns(
        (parse_u64(&v[7..11])?, mo, parse_u64(&v[..2])?),
        (
            parse_u64(&v[12..14])?,
            parse_u64(&v[15..17])?,
            parse_u64(&v[18..20])?,
        ),
        0,
        parse_offset(&v[21..])?,
    )
}

/// `$time_iso8601` / RFC 3339: `2024-05-01T12:00:00+00:00`, fractions and `Z` allowed.
fn parse_iso8601(v: &[u8]) -> Option<u64> {
    if v.len() < 20
        || v[4] != b'-'
        || v[7] != b'-'
        || !matches!(v[10], b'T' | b't' | b' ')
        || v[13] != b':'
        || v[16] != b':'
    {
        return None;
    }
    let mut rest = &v[19..];
    let mut frac_ns = 0;
    if let Some(r) = rest.strip_prefix(b".") {
        let n = r.iter().take_while(|b| b.is_ascii_digit()).count();
        if n == 0 {
            return None;
        }
        let kept = &r[..n.min(9)];
        frac_ns = parse_u64(kept)? * 10u64.pow(9 - kept.len() as u32);
        rest = &r[n..];
    }
    to_ns(
        (
            parse_u64(&v[..4])?,
            parse_u64(&v[5..7])?,
            parse_u64(&v[8..10])?,
        ),
        (
            parse_u64(&v[11..13])?,
            parse_u64(&v[14..16])?,
            parse_u64(&v[17..19])?,
        ),
        frac_ns,
        parse_offset(rest)?,
    )
}

/// `$msec`: Unix seconds with an optional fraction (`1714564800.123`).
fn parse_epoch(v: &[u8]) -> Option<u64> {
    let (int, frac) = match memchr::memchr(b'.', v) {
        Some(i) => (&v[..i], &v[i + 1..]),
        None => (v, &b""[..]),
    };
    let secs = parse_u64(int)?;
    let frac_ns = if frac.is_empty() {
        0
    } else {
        let kept = &frac[..frac.len().min(9)];
        if !frac.iter().all(u8::is_ascii_digit) {
            return None;
        }
        parse_u64(kept)? * 10u64.pow(9 - kept.len() as u32)
    };
    secs.checked_mul(1_000_000_000)?.checked_add(frac_ns)
}
