//! Property tests and corpus for the L7 parsers (`swarmwall::l7::{http, tls}`).
//!
//! - the parsers never panic, and their results keep their invariants, on arbitrary bytes, on
//!   HTTP-ish token soup, and on mutated corpus files;
//! - structured requests and ClientHellos survive a serialize → parse round trip, and every
//!   prefix of them parses to `Truncated` or to a prefix of the answer;
//! - every file in `tests/corpus/l7/` parses to what `expected.txt` says.
//!
//! Failing cases are saved by proptest in `tests/l7_fuzz.proptest-regressions` next to this file;
//! commit that file with the fix so the case is replayed first from then on.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use proptest::sample::{Index, select};
use swarmwall::l7::{HttpRequest, hello, http, ja4, tls};

// ---------------------------------------------------------------------------------------------
// Invariants that hold for any input.

/// Parses `payload` with both parsers and checks what any result must satisfy.
fn check_any(payload: &[u8]) {
    let parsed = http::parse(payload);
    if http::starts_request(payload) {
        assert_ne!(parsed, Err(http::ParseError::NotHttp), "{payload:?}");
    }
    if let Ok(reqs) = &parsed {
        assert!(!reqs.is_empty() && reqs.len() <= http::MAX_REQUESTS);
        for r in reqs {
            check_request(r);
        }
    }
    if let Ok(h) = hello::parse(payload) {
        // The whole hello agrees with the SNI walk, and always has a well-formed JA4.
        assert_eq!(tls::sni(payload), Ok(h.sni.clone()), "{payload:?}");
        assert!(!h.cipher_suites.is_empty() && h.alpn.len() <= hello::MAX_ALPN);
        let fp = ja4::ja4(&h);
        assert!(ja4::Fingerprint::parse(&fp).is_some(), "{fp}");
        assert_eq!(fp.as_bytes()[0], b't');
        assert_eq!(fp.as_bytes()[3] == b'd', h.has_extension(0), "{fp}");
        assert!(ja4::ja4_raw(&h).starts_with(&fp[..10]));
    }
    // The stream extent of a hello agrees with the parser: where parsing succeeds the extent
    // is whole, and the bytes up to it parse to the same hello.
    match tls::hello_extent(payload) {
        tls::Extent::Whole(n) => {
            assert!(n <= payload.len(), "{payload:?}");
            assert_eq!(
                hello::parse(&payload[..n]).ok(),
                hello::parse(payload).ok(),
                "{payload:?}"
            );
        }
        tls::Extent::More | tls::Extent::NotHello => {
            assert!(hello::parse(payload).is_err(), "{payload:?}");
        }
    }
    if let Ok(Some(name)) = tls::sni(payload) {
        assert!(!name.is_empty());
        assert!(
            !name
                .bytes()
                .any(|b| b.is_ascii_uppercase() || b <= b' ' || b == 0x7f)
        );
    }
}

fn check_request(r: &HttpRequest) {
    assert!(!r.method.is_empty() && r.method.len() <= 32, "{r:?}");
    assert!(
        r.method
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b == b'-' || b == b'_')
    );
    assert_ne!(r.method, "PRI");
    assert!(!r.target.is_empty());
    if r.method == "CONNECT" {
        assert!(r.path.is_empty(), "{r:?}");
    } else {
        assert!(r.path == "*" || r.path.starts_with('/'), "{r:?}");
        assert!(
            !r.path.contains("//") && !r.path.contains(['?', '#']),
            "{r:?}"
        );
    }
    if let Some(host) = &r.host {
        assert!(
            !host.is_empty() && !host.bytes().any(|b| b.is_ascii_uppercase()),
            "{r:?}"
        );
    }
    for v in [&r.host, &r.user_agent, &r.referer].into_iter().flatten() {
        assert!(!v.contains(['\0', '\r', '\n']), "{r:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// (a) No panics on arbitrary input.

/// Pieces that steer random input into the parsers' deeper states.
const HTTP_PIECES: &[&[u8]] = &[
    b"GET ",
    b"POST ",
    b"CONNECT ",
    b"get ",
    b"PRI ",
    b"/",
    b"//",
    b"/a",
    b"*",
    b"http://",
    b"[::1]",
    b":80",
    b"@",
    b"?q=1",
    b"#f",
    b" ",
    b"\t",
    b" HTTP/1.1",
    b" HTTP/1.0",
    b" HTTP/2",
    b"\r\n",
    b"\n",
    b"\r",
    b"\r\n\r\n",
    b"Host: ",
    b"HOST:",
    b"User-Agent: ",
    b"Referer: ",
    b"Content-Length: ",
    b"Transfer-Encoding: chunked",
    b"Transfer-Encoding: gzip",
    b"0",
    b"5",
    b"ff",
    b"99999999999999999999",
    b";ext",
    b"hello",
    b"X-A: b",
    b"\0",
    b"\xff",
    b"\xc3\xa9",
    b":",
];

fn http_soup() -> impl Strategy<Value = Vec<u8>> {
    vec(select(HTTP_PIECES), 0..80).prop_map(|pieces| {
        let mut out = pieces.concat();
        out.truncate(2048);
        out
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(10_000))]

    #[test]
    fn arbitrary_bytes_never_panic(data in vec(any::<u8>(), 0..=2048)) {
        check_any(&data);
    }

    #[test]
    fn http_soup_never_panics(data in http_soup()) {
        check_any(&data);
    }

    #[test]
    fn tls_headed_bytes_never_panic(
        record_len in any::<u16>(),
        hs_type in prop_oneof![Just(1u8), any::<u8>()],
        hs_len in 0u32..0x1_0000,
        rest in vec(any::<u8>(), 0..=2039),
    ) {
        let mut data = vec![22, 3, 1];
        data.extend_from_slice(&record_len.to_be_bytes());
        data.push(hs_type);
        data.extend_from_slice(&hs_len.to_be_bytes()[1..]);
        data.extend_from_slice(&rest);
        check_any(&data);
    }
}

// ---------------------------------------------------------------------------------------------
// (b) Round trips of structured requests.

#[derive(Clone, Debug)]
enum Body {
    None,
    Length(Vec<u8>),
    Chunked(Vec<Vec<u8>>),
}

/// A generated request and what parsing it must give.
#[derive(Clone, Debug)]
struct GenRequest {
    wire: Vec<u8>,
    expect: HttpRequest,
    /// The host named by an absolute-form target (seen before the Host header is).
    target_host: Option<String>,
}

fn method() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => select(&["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE"][..])
            .prop_map(str::to_owned),
        1 => "[A-Z][A-Z_-]{0,15}".prop_filter("special methods", |m| m != "PRI" && m != "CONNECT"),
    ]
}

/// `(as sent, lower-cased without port)`.
fn host() -> impl Strategy<Value = (String, String)> {
    let name = vec("[A-Za-z0-9]([A-Za-z0-9-]{0,8}[A-Za-z0-9])?", 1..4).prop_map(|l| l.join("."));
    let v4 = any::<[u8; 4]>().prop_map(|a| std::net::Ipv4Addr::from(a).to_string());
    let v6 = (any::<[u16; 8]>(), any::<bool>()).prop_map(|(a, upper)| {
        let s = format!("[{}]", std::net::Ipv6Addr::from(a));
        if upper { s.to_ascii_uppercase() } else { s }
    });
    (
        prop_oneof![3 => name, 1 => v4, 1 => v6],
        option::of(any::<u16>()),
    )
        .prop_map(|(h, port)| {
            let sent = match port {
                Some(p) => format!("{h}:{p}"),
                None => h.clone(),
            };
            (sent, h.to_ascii_lowercase())
        })
}

/// A header value as a client sends it (no leading/trailing whitespace).
fn value() -> impl Strategy<Value = String> {
    "[!-~é日本]([ -~é日本]{0,40}[!-~])?"
}

fn body() -> impl Strategy<Value = Body> {
    prop_oneof![
        2 => Just(Body::None),
        1 => vec(any::<u8>(), 0..64).prop_map(Body::Length),
        1 => vec(vec(any::<u8>(), 1..20), 0..4).prop_map(Body::Chunked),
    ]
}

prop_compose! {
    fn request()(
        method in method(),
        segments in vec(("[A-Za-z0-9._~!$&'()*+,;=:@%-]{1,10}", 1usize..=3), 0..5),
        trailing in option::of(1usize..=3),
        query in option::of("[A-Za-z0-9=&/?:@%+._-]{0,20}"),
        fragment in option::of("[A-Za-z0-9/?#]{0,10}"),
        host_header in option::of(host()),
        absolute in option::of(host()),
        ua in option::of(value()),
        referer in option::of(value()),
        extra in vec(("[A-Za-z][A-Za-z0-9-]{0,15}", "[ -~]{0,30}"), 0..6),
        name_case in 0usize..4,
        order in vec(any::<u8>(), 16),
        http10 in any::<bool>(),
        lf_only in any::<bool>(),
        body in body(),
    ) -> GenRequest {
        let eol = if lf_only { "\n" } else { "\r\n" };
        let mut path = String::new();
        let mut sent_path = String::new();
        for (seg, slashes) in &segments {
            path.push('/');
            path.push_str(seg);
            sent_path.push_str(&"/".repeat(*slashes));
            sent_path.push_str(seg);
        }
        match trailing {
            Some(n) => {
                path.push('/');
                sent_path.push_str(&"/".repeat(n));
            }
            None if segments.is_empty() => {
                path.push('/');
                sent_path.push('/');
            }
            None => {}
        }
        let mut target = sent_path;
        if let Some(q) = &query {
            let _ = write!(target, "?{q}");
        }
        if let Some(f) = &fragment {
            let _ = write!(target, "#{f}");
        }
        let target_host = absolute.as_ref().map(|(_, h)| h.clone());
        if let Some((sent, _)) = &absolute {
            target = format!("http://{sent}{target}");
        }

        let case = |canon: &str| match name_case {
            0 => canon.to_owned(),
            1 => canon.to_ascii_lowercase(),
            2 => canon.to_ascii_uppercase(),
            _ => canon
                .chars()
                .enumerate()
                .map(|(i, c)| if i % 2 == 0 { c.to_ascii_lowercase() } else { c.to_ascii_uppercase() })
                .collect(),
        };
        let mut lines = Vec::new();
        if let Some((sent, _)) = &host_header {
            lines.push(format!("{}: {sent}", case("Host")));
        }
        if let Some(v) = &ua {
            lines.push(format!("{}: {v}", case("User-Agent")));
        }
        if let Some(v) = &referer {
            lines.push(format!("{}:{v}", case("Referer")));
        }
        const RESERVED: [&str; 5] =
            ["host", "user-agent", "referer", "content-length", "transfer-encoding"];
        for (name, v) in &extra {
            if !RESERVED.iter().any(|r| name.eq_ignore_ascii_case(r)) {
                lines.push(format!("{name}: {v}"));
            }
        }
        // Shuffle by the generated keys (stable, so shrinking keeps it readable).
        let mut keyed: Vec<_> = lines.into_iter().enumerate().collect();
        keyed.sort_by_key(|(i, _)| order[*i % order.len()]);
        let mut lines: Vec<String> = keyed.into_iter().map(|(_, l)| l).collect();
        // Framing headers last, as most clients send them.
        match &body {
            Body::None => {}
            Body::Length(b) => lines.push(format!("Content-Length: {}", b.len())),
            Body::Chunked(_) => lines.push("Transfer-Encoding: chunked".to_owned()),
        }

        let version = if http10 { "HTTP/1.0" } else { "HTTP/1.1" };
        let mut wire = format!("{method} {target} {version}{eol}").into_bytes();
        for l in &lines {
            wire.extend_from_slice(l.as_bytes());
            wire.extend_from_slice(eol.as_bytes());
        }
        wire.extend_from_slice(eol.as_bytes());
        match &body {
            Body::None => {}
            Body::Length(b) => wire.extend_from_slice(b),
            Body::Chunked(chunks) => {
                for c in chunks {
                    wire.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
                    wire.extend_from_slice(c);
                    wire.extend_from_slice(b"\r\n");
                }
                wire.extend_from_slice(b"0\r\n\r\n");
            }
        }
        GenRequest {
            wire,
            expect: HttpRequest {
                method,
                target,
                path,
                host: host_header.map(|(_, h)| h).or_else(|| target_host.clone()),
                user_agent: ua,
                referer,
            },
            target_host,
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn http_round_trip(
        reqs in vec(request(), 1..=4),
        blank in vec(any::<bool>(), 4),
        cuts in vec(any::<Index>(), 8),
    ) {
        let mut wire = Vec::new();
        for (i, r) in reqs.iter().enumerate() {
            if i > 0 && blank[i % blank.len()] {
                wire.extend_from_slice(b"\r\n");
            }
            wire.extend_from_slice(&r.wire);
        }
        let expect: Vec<HttpRequest> = reqs.iter().map(|r| r.expect.clone()).collect();
        prop_assert_eq!(http::parse(&wire), Ok(expect.clone()));

        // Any prefix: Truncated (before the first line ends) or a prefix of the requests.
        let first_line = reqs[0].wire.iter().position(|&b| b == b'\n').unwrap_or(0);
        for cut in cuts {
            let cut = cut.index(wire.len());
            match http::parse(&wire[..cut]) {
                Err(e) => {
                    prop_assert_eq!(e, http::ParseError::Truncated);
                    prop_assert!(cut <= first_line);
                }
                Ok(got) => {
                    prop_assert!(got.len() <= expect.len());
                    for ((g, e), r) in got.iter().zip(&expect).zip(&reqs) {
                        prop_assert_eq!(&g.method, &e.method);
                        prop_assert_eq!(&g.target, &e.target);
                        prop_assert_eq!(&g.path, &e.path);
                        prop_assert!(g.host.is_none() || g.host == e.host || g.host == r.target_host);
                        prop_assert!(g.user_agent.is_none() || g.user_agent == e.user_agent);
                        prop_assert!(g.referer.is_none() || g.referer == e.referer);
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// (b') Round trips of structured ClientHellos.

/// A ClientHello in records of `chunk` bytes of handshake each.
fn client_hello(
    exts: &[(u16, Vec<u8>)],
    session_id: usize,
    suites: usize,
    chunk: usize,
) -> Vec<u8> {
    let mut body = vec![3, 3];
    body.extend_from_slice(&[7; 32]);
    body.push(session_id as u8);
    body.extend_from_slice(&vec![9; session_id]);
    body.extend_from_slice(&((suites * 2) as u16).to_be_bytes());
    for i in 0..suites {
        body.extend_from_slice(&(0x1301 + i as u16).to_be_bytes());
    }
    body.extend_from_slice(&[1, 0]);
    let mut block = Vec::new();
    for (ty, data) in exts {
        block.extend_from_slice(&ty.to_be_bytes());
        block.extend_from_slice(&(data.len() as u16).to_be_bytes());
        block.extend_from_slice(data);
    }
    body.extend_from_slice(&(block.len() as u16).to_be_bytes());
    body.extend_from_slice(&block);
    let mut msg = vec![1];
    msg.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    msg.extend_from_slice(&body);
    let mut out = Vec::new();
    for part in msg.chunks(chunk.max(1)) {
        out.extend_from_slice(&[22, 3, 1]);
        out.extend_from_slice(&(part.len() as u16).to_be_bytes());
        out.extend_from_slice(part);
    }
    out
}

fn server_name(host: &str) -> (u16, Vec<u8>) {
    let mut entry = vec![0];
    entry.extend_from_slice(&(host.len() as u16).to_be_bytes());
    entry.extend_from_slice(host.as_bytes());
    let mut data = (entry.len() as u16).to_be_bytes().to_vec();
    data.extend_from_slice(&entry);
    (0, data)
}

fn grease_or_other() -> impl Strategy<Value = u16> {
    prop_oneof![
        (0u16..16).prop_map(|g| (g << 12) | 0x0a00 | (g << 4) | 0x0a),
        1u16..=0xffff,
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn tls_round_trip(
        host in option::of("[A-Za-z0-9-]{1,20}(\\.[A-Za-z0-9-]{1,20}){0,3}"),
        others in vec((grease_or_other(), vec(any::<u8>(), 0..64)), 0..12),
        sni_at in any::<Index>(),
        session_id in 0usize..=32,
        suites in 1usize..20,
        chunk in prop_oneof![Just(1usize << 14), 1usize..300],
        cuts in vec(any::<Index>(), 8),
    ) {
        // Random data in an extension the whole-hello view decodes may well be malformed.
        let opaque = others.iter().all(|(t, _)| ![0x000a, 0x000d, 0x0010, 0x002b].contains(t));
        let mut exts = others;
        if let Some(h) = &host {
            exts.insert(sni_at.index(exts.len() + 1), server_name(h));
        }
        let payload = client_hello(&exts, session_id, suites, chunk);
        let expect = host.map(|h| h.to_ascii_lowercase());
        prop_assert_eq!(tls::sni(&payload), Ok(expect.clone()));
        let whole = hello::parse(&payload);
        if opaque {
            prop_assert_eq!(whole.as_ref().map(|h| h.sni.clone()), Ok(expect.clone()));
            prop_assert_eq!(whole.as_ref().map(|h| h.extensions.len()), Ok(exts.len()));
        }
        for cut in cuts {
            let cut = cut.index(payload.len());
            // Any strict prefix of a good hello lacks part of it.
            if whole.is_ok() {
                prop_assert_eq!(hello::parse(&payload[..cut]), Err(tls::ParseError::Truncated));
            }
            check_any(&payload[..cut]);
            let got = tls::sni(&payload[..cut]);
            match &expect {
                // A strict prefix cannot prove there is no name.
                None => prop_assert_eq!(got, Err(tls::ParseError::Truncated)),
                Some(_) => prop_assert!(
                    got == Err(tls::ParseError::Truncated) || got == Ok(expect.clone()),
                    "cut {}: {:?}", cut, got
                ),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// (c) The corpus.

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/l7")
}

/// Files that are not payloads.
const NOT_PAYLOADS: [&str; 3] = ["README.md", "expected.txt", "gen.py"];

fn corpus() -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    for entry in std::fs::read_dir(corpus_dir()).expect("corpus directory") {
        let entry = entry.expect("corpus entry");
        if entry.file_type().expect("file type").is_file() {
            let name = entry.file_name().to_string_lossy().into_owned();
            files.insert(name, std::fs::read(entry.path()).expect("corpus file"));
        }
    }
    files
}

fn http_outcome(payload: &[u8]) -> String {
    match http::parse(payload) {
        Ok(reqs) => {
            let r = &reqs[0];
            format!(
                "ok {} {} {} {}",
                reqs.len(),
                r.host.as_deref().unwrap_or("-"),
                if r.path.is_empty() { "-" } else { &r.path },
                if r.user_agent.is_some() { "ua" } else { "-" },
            )
        }
        Err(http::ParseError::Malformed(_)) => "err Malformed".to_owned(),
        Err(e) => format!("err {e:?}"),
    }
}

fn tls_outcome(payload: &[u8]) -> String {
    match tls::sni(payload) {
        Ok(Some(name)) => format!("some {name}"),
        Ok(None) => "none".to_owned(),
        Err(tls::ParseError::Malformed(_)) => "err Malformed".to_owned(),
        Err(e) => format!("err {e:?}"),
    }
}

#[test]
fn corpus_never_panics() {
    let files = corpus();
    assert!(files.len() >= 20, "corpus has {} files", files.len());
    let total: usize = files.values().map(Vec::len).sum();
    assert!(total < 100 * 1024, "corpus is {total} bytes");
    for (name, data) in &files {
        eprintln!(
            "{name}: http {} / tls {}",
            http_outcome(data),
            tls_outcome(data)
        );
        check_any(data);
        // And every prefix of it.
        for cut in 0..data.len().min(2048) {
            check_any(&data[..cut]);
        }
    }
}

#[test]
fn corpus_matches_expectations() {
    let files = corpus();
    let manifest =
        std::fs::read_to_string(corpus_dir().join("expected.txt")).expect("expected.txt");
    let mut covered = std::collections::BTreeSet::new();
    let mut failures = Vec::new();
    for line in manifest.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut words = line.split_whitespace();
        let (Some(file), Some(parser)) = (words.next(), words.next()) else {
            panic!("bad line in expected.txt: {line}");
        };
        let want = words.collect::<Vec<_>>().join(" ");
        let data = files
            .get(file)
            .unwrap_or_else(|| panic!("{file} listed but missing"));
        let got = match parser {
            "http" => http_outcome(data),
            "tls" => tls_outcome(data),
            other => panic!("unknown parser {other} in expected.txt"),
        };
        if got != want {
            failures.push(format!("{file} {parser}: want `{want}`, got `{got}`"));
        }
        covered.insert(file.to_owned());
    }
    for name in files.keys() {
        if !NOT_PAYLOADS.contains(&name.as_str()) && !covered.contains(name) {
            failures.push(format!("{name} has no line in expected.txt"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// ---------------------------------------------------------------------------------------------
// (d) Mutated corpus files.

proptest! {
    #![proptest_config(ProptestConfig::with_cases(5_000))]

    #[test]
    fn mutated_corpus_never_panics(
        seed in any::<Index>(),
        flips in vec((any::<Index>(), any::<u8>()), 0..8),
        inserts in vec((any::<Index>(), vec(any::<u8>(), 1..16)), 0..3),
        cut in option::of(any::<Index>()),
    ) {
        static FILES: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
        let files = FILES.get_or_init(|| corpus().into_values().collect());
        let mut data = files[seed.index(files.len())].clone();
        for (at, bytes) in inserts {
            let at = at.index(data.len() + 1);
            data.splice(at..at, bytes);
        }
        if !data.is_empty() {
            for (at, b) in flips {
                let at = at.index(data.len());
                data[at] = b;
            }
        }
        if let Some(cut) = cut {
            data.truncate(cut.index(data.len() + 1));
        }
        check_any(&data);
    }
}
