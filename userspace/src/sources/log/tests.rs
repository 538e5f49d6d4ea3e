use std::net::{IpAddr, SocketAddr};

use super::*;

const SHOP: &str = "203.0.113.10:80";
const SHOP6: &str = "[2001:db8::10]:80";

fn parser(spec: &str) -> LineParser {
    LineParser::new(
        Format::parse(spec, None).unwrap(),
        vec![SHOP.parse().unwrap(), SHOP6.parse().unwrap()],
        Vec::new(),
    )
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

const LINE: &[u8] = br#"198.51.100.7 - - [01/May/2024:12:00:05 +0000] "GET /gallery/7?utm=x&b=1 HTTP/1.1" 200 5123 "http://shop.example/" "Mozilla/5.0 (X11; Linux x86_64) Firefox/126.0""#;

#[test]
fn combined_gives_every_field() {
    let ev = parser("combined").parse(LINE).unwrap();
    assert_eq!(ev.src, ip("198.51.100.7"));
    assert_eq!((ev.dst, ev.dst_port), (ip("203.0.113.10"), 80));
    // 2024-05-01T12:00:05Z
    assert_eq!(ev.ts_ns, 1_714_564_805_000_000_000);
    assert_eq!(ev.path, "/gallery/7", "query stripped as on the wire");
    assert_eq!(ev.host, None);
    assert_eq!(ev.referer.as_deref(), Some("http://shop.example/"));
    assert_eq!(
        ev.user_agent.as_deref(),
        Some("Mozilla/5.0 (X11; Linux x86_64) Firefox/126.0")
    );
    assert_eq!((ev.status, ev.bytes), (Some(200), Some(5123)));
    assert_eq!(ev.kind, crate::l7::Kind::Http);
}

#[test]
fn paths_are_normalised_like_the_wire_parser() {
    let p = parser("combined");
    for (target, host, path) in [
        ("//a//b?q#f", None, "/a/b"),
        ("http://Shop.Example:8080/x?y", Some("shop.example"), "/x"),
        ("*", None, "*"),
    ] {
        let line = format!(
            r#"198.51.100.7 - - [01/May/2024:12:00:05 +0000] "OPTIONS {target} HTTP/1.1" 200 0 "-" "-""#
        );
        let ev = p.parse(line.as_bytes()).unwrap();
        let wire = crate::l7::http::parse(format!("OPTIONS {target} HTTP/1.1\r\n\r\n").as_bytes())
            .unwrap();
        assert_eq!(ev.path, wire[0].path, "{target}");
        assert_eq!(ev.host.as_deref(), host, "{target}");
        assert_eq!(ev.path, path);
        assert_eq!((ev.referer, ev.user_agent), (None, None), "- is no value");
    }
}

#[test]
fn common_and_dashes_and_timezones() {
    let p = parser("common");
    let ev = p
        .parse(br#"2001:db8::7 - frank [10/Oct/2000:13:55:36 -0700] "GET /apache_pb.gif HTTP/1.0" 304 -"#)
        .unwrap();
    assert_eq!(ev.src, ip("2001:db8::7"));
    assert_eq!(
        ev.dst,
        ip("2001:db8::10"),
        "IPv6 clients go to the site's IPv6 address"
    );
    // 2000-10-10T20:55:36Z
    assert_eq!(ev.ts_ns, 971_211_336_000_000_000);
    assert_eq!((ev.status, ev.bytes), (Some(304), None));
    assert_eq!((ev.user_agent, ev.referer), (None, None));
    // A dual-stack socket's IPv4-mapped address is the IPv4 client.
    let ev = p
        .parse(br#"::ffff:198.51.100.9 - - [10/Oct/2000:13:55:36 +0000] "GET / HTTP/1.1" 200 1"#)
        .unwrap();
    assert_eq!(ev.src, ip("198.51.100.9"));
    assert_eq!(ev.dst, ip("203.0.113.10"));
}

#[test]
fn quoted_values_keep_escaped_quotes() {
    let ev = parser("combined")
        .parse(br#"198.51.100.7 - - [01/May/2024:12:00:05 +0000] "GET / HTTP/1.1" 200 1 "-" "evil \"quoted\" agent""#)
        .unwrap();
    assert_eq!(ev.user_agent.as_deref(), Some(r#"evil \"quoted\" agent"#));
}

#[test]
fn an_nginx_log_format_with_the_server_and_host() {
    let f = r#"$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent" rt=$request_time host=$host srv=$server_addr:$server_port xff="$http_x_forwarded_for""#;
    let format = Format::parse(f, None).unwrap();
    assert!(format.has_server_addr());
    let p = LineParser::new(format, Vec::new(), vec!["10.0.0.0/8".parse().unwrap()]);
    let line = br#"10.1.2.3 - - [01/May/2024:12:00:05 +0000] "POST /cart/add HTTP/2.0" 303 0 "-" "curl/8.5.0" rt=0.004 host=Blog.Example srv=203.0.113.20:443 xff="192.0.2.55, 10.9.9.9""#;
    let ev = p.parse(line).unwrap();
    assert_eq!((ev.dst, ev.dst_port), (ip("203.0.113.20"), 443));
    assert_eq!(ev.host.as_deref(), Some("blog.example"));
    assert_eq!(ev.path, "/cart/add");
    assert_eq!(
        ev.src,
        ip("192.0.2.55"),
        "right-most untrusted X-Forwarded-For entry"
    );
    assert_eq!(ev.status, Some(303));
}

#[test]
fn trusted_proxies_semantics() {
    let f = r#"$remote_addr [$time_local] "$request" "$http_x_forwarded_for""#;
    let mk = |trusted: &[&str]| {
        LineParser::new(
            Format::parse(f, None).unwrap(),
            vec![SHOP.parse().unwrap()],
            trusted.iter().map(|t| t.parse().unwrap()).collect(),
        )
    };
    let line = |client: &str, xff: &str| {
        format!(r#"{client} [01/May/2024:12:00:05 +0000] "GET / HTTP/1.1" "{xff}""#)
    };
    let src = |p: &LineParser, c: &str, x: &str| p.parse(line(c, x).as_bytes()).unwrap().src;
    let none = mk(&[]);
    assert_eq!(
        src(&none, "10.0.0.1", "192.0.2.1"),
        ip("10.0.0.1"),
        "no trusted proxies: XFF ignored"
    );
    let p = mk(&["10.0.0.0/8", "2001:db8:ffff::/48"]);
    assert_eq!(
        src(&p, "198.51.100.1", "192.0.2.1"),
        ip("198.51.100.1"),
        "an untrusted client cannot forge XFF"
    );
    assert_eq!(src(&p, "10.0.0.1", "192.0.2.1"), ip("192.0.2.1"));
    assert_eq!(
        src(&p, "10.0.0.1", "6.6.6.6, 192.0.2.1, 10.0.0.2"),
        ip("192.0.2.1"),
        "forged left entries are ignored"
    );
    assert_eq!(
        src(&p, "10.0.0.1", "10.0.0.3, 10.0.0.2"),
        ip("10.0.0.3"),
        "all trusted: the left-most"
    );
    assert_eq!(
        src(&p, "10.0.0.1", "-"),
        ip("10.0.0.1"),
        "no XFF: the proxy itself"
    );
    assert_eq!(
        src(&p, "10.0.0.1", "junk, 10.0.0.2"),
        ip("10.0.0.2"),
        "unreadable entry ends the walk"
    );
    assert_eq!(
        src(&p, "2001:db8:ffff::1", "2001:db8::77"),
        ip("2001:db8::77")
    );
}

#[test]
fn json_with_configured_fields_and_time_forms() {
    let fields = JsonFields {
        remote_addr: "client".into(),
        time: "ts".into(),
        ..JsonFields::default()
    };
    let p = LineParser::new(
        Format::parse("json", Some(fields)).unwrap(),
        vec![SHOP.parse().unwrap()],
        Vec::new(),
    );
    for ts in [
        r#""2024-05-01T12:00:05+00:00""#,
        r#""2024-05-01T14:00:05.000+02:00""#,
        r#""01/May/2024:12:00:05 +0000""#,
        "1714564805",
        r#""1714564805.000""#,
    ] {
        let line = format!(
            r#"{{"client":"198.51.100.7","ts":{ts},"request":"GET /a?b HTTP/1.1","status":404,"body_bytes_sent":"12","http_user_agent":"x","server_addr":"203.0.113.20","server_port":"8080","host":"blog.example"}}"#
        );
        let ev = p.parse(line.as_bytes()).unwrap();
        assert_eq!(ev.ts_ns, 1_714_564_805_000_000_000, "{ts}");
        assert_eq!(ev.src, ip("198.51.100.7"));
        assert_eq!((ev.dst, ev.dst_port), (ip("203.0.113.20"), 8080));
        assert_eq!((ev.status, ev.bytes), (Some(404), Some(12)));
        assert_eq!(ev.path, "/a");
        assert_eq!(ev.host.as_deref(), Some("blog.example"));
    }
    // Method and URI fields instead of a request line.
    let ev = p
        .parse(br#"{"client":"198.51.100.7","ts":1714564805,"request_method":"GET","request_uri":"/m?x"}"#)
        .unwrap();
    assert_eq!((ev.path.as_str(), ev.dst_port), ("/m", 80));
    assert_eq!(p.parse(b"[1,2]"), Err(Reject::Json));
    assert_eq!(p.parse(br#"{"client":["x"]}"#), Err(Reject::Json));
    assert_eq!(p.parse(br#"{"client":"198.51.100.7"}"#), Err(Reject::Time));
}

#[test]
fn rejects_name_their_reason() {
    let p = parser("combined");
    let cases: [(&[u8], Reject); 7] = [
        (b"garbage", Reject::Layout),
        (br#"shop.example - - [01/May/2024:12:00:05 +0000] "GET / HTTP/1.1" 200 1 "-" "-""#, Reject::Client),
        (br#"198.51.100.7 - - [31/Foo/2024:12:00:05 +0000] "GET / HTTP/1.1" 200 1 "-" "-""#, Reject::Time),
        // What nginx logs when TLS reaches a plain-HTTP port.
        (br#"198.51.100.7 - - [01/May/2024:12:00:05 +0000] "\x16\x03\x01\x02\x00\x01" 400 157 "-" "-""#, Reject::Request),
        (br#"198.51.100.7 - - [01/May/2024:12:00:05 +0000] "-" 400 0 "-" "-""#, Reject::Request),
        (br#"198.51.100.7 - - [01/May/2024:12:00:05 +0000] "GET / HTTP/1.1" 2x0 1 "-" "-""#, Reject::Status),
        (br#"198.51.100.7 - - [01/May/2024:12:00:05 +0000] "GET / HTTP/1.1 200 1"#, Reject::Layout),
    ];
    for (line, why) in cases {
        assert_eq!(
            p.parse(line).map(|_| ()),
            Err(why),
            "{}",
            String::from_utf8_lossy(line)
        );
    }
    let nosite = LineParser::new(
        Format::parse("combined", None).unwrap(),
        Vec::new(),
        Vec::new(),
    );
    assert_eq!(nosite.parse(LINE).map(|_| ()), Err(Reject::Site));
}

#[test]
fn formats_that_cannot_work_are_refused() {
    assert!(matches!(
        Format::parse("$remote_addr$time_local $request", None),
        Err(FormatError::Adjacent { .. })
    ));
    assert!(matches!(
        Format::parse("${remote_addr", None),
        Err(FormatError::Unclosed { .. })
    ));
    assert!(matches!(
        Format::parse("$remote_addr [$time_local]", None),
        Err(FormatError::Missing {
            missing: "$request",
            ..
        })
    ));
    // Unknown variables are skipped; `${name}` works.
    let p = LineParser::new(
        Format::parse(
            r#"${remote_addr} $pipe [$time_iso8601] "$request" $upstream_addr"#,
            None,
        )
        .unwrap(),
        vec![SHOP.parse::<SocketAddr>().unwrap()],
        Vec::new(),
    );
    let ev = p
        .parse(br#"198.51.100.7 p [2024-05-01T12:00:05Z] "GET /x HTTP/1.1" 10.0.0.5:8080"#)
        .unwrap();
    assert_eq!(
        (ev.ts_ns, ev.path.as_str()),
        (1_714_564_805_000_000_000, "/x")
    );
}

#[test]
fn the_splitter_bounds_lines() {
    let mut s = LineSplitter::new(10);
    let mut got: Vec<Result<Vec<u8>, Reject>> = Vec::new();
    let push = |s: &mut LineSplitter, chunk: &[u8], got: &mut Vec<_>| {
        s.push(chunk, |l| got.push(l.map(<[u8]>::to_vec)));
    };
    push(&mut s, b"one\ntw", &mut got);
    push(&mut s, b"o\r\n0123456789abc", &mut got);
    push(&mut s, b"defghijklmnopqrstuvwxyz", &mut got);
    push(&mut s, b"\nshort\n0123456789\nend", &mut got);
    s.finish(|l| got.push(l.map(<[u8]>::to_vec)));
    assert_eq!(
        got,
        vec![
            Ok(b"one".to_vec()),
            Ok(b"two\r".to_vec()),
            Err(Reject::Oversize),
            Ok(b"short".to_vec()),
            Ok(b"0123456789".to_vec()),
            Ok(b"end".to_vec()),
        ]
    );
    // An oversize line still streaming at the end is reported once.
    let mut s = LineSplitter::new(4);
    let mut n = 0;
    s.push(b"abcdefgh", |_| n += 1);
    s.push(b"ijkl", |_| n += 1);
    s.finish(|l| {
        assert_eq!(l, Err(Reject::Oversize));
        n += 1;
    });
    assert_eq!(n, 1);
}

#[test]
fn the_file_source_counts_and_warns() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    let mut text = Vec::new();
    for _ in 0..3 {
        text.extend_from_slice(LINE);
        text.push(b'\n');
    }
    text.extend_from_slice(b"\n\x00\xff garbage\n");
    text.extend_from_slice(&[b'a'; MAX_LINE + 1]);
    text.push(b'\n');
    text.extend_from_slice(&LINE[..40]);
    std::fs::write(&path, &text).unwrap();
    let mut src = LogSource::open(&path, parser("combined")).unwrap();
    let mut evs = Vec::new();
    while src.poll(Duration::ZERO, &mut |e| evs.push(e)).unwrap() == Polled::More {}
    assert_eq!(evs.len(), 3);
    let c = src.log_counters();
    assert_eq!((c.lines, c.events, c.rejected_total()), (7, 3, 3));
    assert_eq!(
        c.reasons().collect::<Vec<_>>(),
        vec![("oversize", 1), ("layout", 2)]
    );
    assert_eq!(src.first_reject(), Some((5, Reject::Layout)));
    let w = src.take_warnings();
    assert!(
        w[0].contains("3 of 7 lines rejected (oversize 1, layout 2); first at line 5"),
        "{w:?}"
    );
    assert!(w[1].contains("does not end with a newline"), "{w:?}");
    assert!(src.take_warnings().is_empty());
}
