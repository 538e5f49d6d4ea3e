//! Property tests for the access-log parser (`swarmwall::sources::log`): whatever the bytes —
//! random, token soup, or real lines of every format mutated — a line gives an event whose
//! fields keep their invariants or a reason, never a panic; the line splitter hands out the
//! same lines however the stream is chunked, none longer than the limit.
//!
//! Failing cases are saved by proptest in `tests/log_fuzz.proptest-regressions`; commit that
//! file with the fix so the case is replayed first from then on.

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use swarmwall::sources::log::{Format, JsonFields, LineParser, LineSplitter, Reject};

const FORMATS: [&str; 4] = [
    "combined",
    "common",
    "json",
    r#"$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent" "$host" $server_addr $server_port "$http_x_forwarded_for""#,
];

const REAL: [&[u8]; 5] = [
    br#"198.51.100.7 - - [01/May/2024:12:00:05 +0000] "GET /gallery/7?utm=x HTTP/1.1" 200 5123 "http://shop.example/" "Mozilla/5.0 (X11; Linux x86_64) Firefox/126.0""#,
    br#"2001:db8::7 - frank [10/Oct/2000:13:55:36 -0700] "GET /apache_pb.gif HTTP/1.0" 304 -"#,
    br#"{"remote_addr":"198.51.100.7","time_local":"01/May/2024:12:00:05 +0000","request":"POST /cart/add HTTP/2.0","status":303,"body_bytes_sent":"0","http_user_agent":"curl/8.5.0"}"#,
    br#"10.1.2.3 - - [01/May/2024:12:00:05 +0000] "GET http://Shop.Example:8080//a//b#f HTTP/1.1" 404 12 "-" "x \"y\" z" "shop.example" 203.0.113.20 443 "192.0.2.55, 10.9.9.9""#,
    br#"198.51.100.7 - - [01/May/2024:12:00:05 +0000] "\x16\x03\x01\x02\x00\x01" 400 157 "-" "-""#,
];

fn parsers() -> Vec<LineParser> {
    FORMATS
        .iter()
        .map(|f| {
            let fields = (*f == "json").then(JsonFields::default);
            LineParser::new(
                Format::parse(f, fields).unwrap(),
                vec!["203.0.113.10:80".parse().unwrap()],
                vec!["10.0.0.0/8".parse().unwrap()],
            )
        })
        .collect()
}

fn check_any(line: &[u8]) {
    for p in parsers() {
        match p.parse(line) {
            Ok(ev) => {
                assert!(ev.path == "*" || ev.path.starts_with('/'), "{ev:?}");
                assert!(!ev.path.contains('?') && !ev.path.contains('#'), "{ev:?}");
                assert!(!ev.path.contains("//"), "{ev:?}");
                if let Some(h) = &ev.host {
                    assert!(!h.is_empty() && !h.bytes().any(|b| b.is_ascii_uppercase()));
                }
                assert!(ev.user_agent.as_deref() != Some("-"));
                assert!(ev.referer.as_deref() != Some("-"));
            }
            Err(r) => assert_ne!(r, Reject::Oversize, "the parser does not judge length"),
        }
    }
}

fn soup() -> impl Strategy<Value = Vec<u8>> {
    let tokens: Vec<&'static [u8]> = vec![
        b" ",
        b"-",
        b"\"",
        b"\\\"",
        b"[",
        b"]",
        b"/",
        b":",
        b"+0000",
        b"01/May/2024:12:00:05",
        b"GET ",
        b"POST",
        b" HTTP/1.1",
        b"198.51.100.7",
        b"::1",
        b"10.0.0.1",
        b"200",
        b"99999",
        b"{",
        b"}",
        b"\"remote_addr\":",
        b",",
        b"\xff",
        b"\x00",
        b"?",
        b"#",
        b"//",
        b"\r",
        b"http://",
        b"1714564805.5",
        b"2024-05-01T12:00:05Z",
    ];
    vec(select(tokens), 0..48).prop_map(|t| t.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(line in vec(any::<u8>(), 0..600)) {
        check_any(&line);
    }

    #[test]
    fn token_soup_never_panics(line in soup()) {
        check_any(&line);
    }

    #[test]
    fn mutated_real_lines_never_panic(
        which in 0..REAL.len(),
        edits in vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..8),
    ) {
        let mut line = REAL[which].to_vec();
        for (at, byte, op) in edits {
            let i = if line.is_empty() { 0 } else { at.index(line.len()) };
            match op {
                0 if !line.is_empty() => line[i] = byte,
                1 => line.insert(i, byte),
                _ if !line.is_empty() => { line.remove(i); }
                _ => {}
            }
        }
        check_any(&line);
    }

    #[test]
    fn splitting_does_not_depend_on_chunking(
        data in vec(select(vec![b'a', b'b', b'\n', b'\r']), 0..400),
        cuts in vec(any::<prop::sample::Index>(), 0..6),
        max in 1usize..40,
    ) {
        let run = |chunks: &[&[u8]]| {
            let mut s = LineSplitter::new(max);
            let mut out: Vec<Result<Vec<u8>, Reject>> = Vec::new();
            for c in chunks {
                s.push(c, |l| out.push(l.map(<[u8]>::to_vec)));
            }
            s.finish(|l| out.push(l.map(<[u8]>::to_vec)));
            out
        };
        let whole = run(&[&data]);
        let mut points: Vec<usize> = cuts.iter().map(|c| c.index(data.len() + 1)).collect();
        points.sort_unstable();
        let mut chunks = Vec::new();
        let mut last = 0;
        for p in points {
            chunks.push(&data[last..p]);
            last = p;
        }
        chunks.push(&data[last..]);
        prop_assert_eq!(&run(&chunks), &whole);
        let expect: Vec<&[u8]> = data.split(|&b| b == b'\n').collect();
        let expect = if data.last() == Some(&b'\n') || data.is_empty() { &expect[..expect.len() - 1] } else { &expect[..] };
        prop_assert_eq!(whole.len(), expect.len());
        for (got, want) in whole.iter().zip(expect) {
            match got {
                Ok(l) => prop_assert_eq!(l.as_slice(), *want),
                Err(_) => prop_assert!(want.len() > max),
            }
        }
    }
}

#[test]
fn the_real_lines_parse() {
    let ps = parsers();
    for (line, format) in REAL.iter().zip([0, 1, 2, 3]) {
        ps[format].parse(line).unwrap();
    }
    assert_eq!(ps[0].parse(REAL[4]).unwrap_err(), Reject::Request);
}
