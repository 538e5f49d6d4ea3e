//! Real TLS through a veth: the HTTPS site of `swarmwall_integration::tls`, its browsers and bots,
//! and what swarmwall sees of them — the access log through swarmwall's own log parser, the
//! ClientHellos through the kernel sampler and swarmwall's JA4. The profile test needs nothing;
//! the traffic test needs root.

mod common;

use std::{
    collections::{HashMap, HashSet},
    net::{IpAddr, SocketAddr},
    sync::{Arc, atomic::AtomicBool},
    time::{Duration, Instant},
};

use common::{ip, small};
use swarmwall::{
    AttachMode, Dataplane,
    l7::{self, hello, ja4},
    sources::{
        hello::{HelloAssembler, Limits},
        log::{Format, LineParser},
    },
};
use swarmwall_integration::{
    netns::{NetNs, VethPair, add_addr, in_netns},
    require_root,
    tls::{self, Profile, Rotation, TlsClient, TlsServer},
    web::{Browsing, Failure, Outcome, Swarm},
};

const HOST: &str = "shop.example";
const SERVER: &str = "198.51.100.1";
const BOTS: [&str; 3] = ["198.51.100.20", "198.51.100.21", "198.51.100.22"];
const BROWSERS: [&str; 2] = ["198.51.100.10", "198.51.100.11"];
/// One address, many users: a new profile per connection.
const NAT: &str = "198.51.100.30";
const BOT_AGENT: &str = "GalleryFetcher/2.1";

/// The JA4 of `profile`'s ClientHello to [`HOST`], through swarmwall's parser.
fn ja4_of(profile: &Profile) -> String {
    let records = profile.client_hello(HOST).unwrap();
    let parsed = hello::parse(&records).unwrap_or_else(|e| panic!("{}: {e:?}", profile.name));
    assert_eq!(parsed.sni.as_deref(), Some(HOST), "{}", profile.name);
    ja4::ja4(&parsed)
}

#[test]
fn tls_profiles_have_distinct_stable_ja4_fingerprints() {
    let bot = Profile::bot();
    let browsers = Profile::browsers();
    let variants = Profile::variants(64).unwrap();
    let all: Vec<&Profile> = std::iter::once(&bot)
        .chain(&browsers)
        .chain(&variants)
        .collect();
    let mut seen = HashMap::new();
    for p in &all {
        let fp = ja4_of(p);
        // A new hello has a new random, session id and key share; the fingerprint stays.
        assert_eq!(ja4_of(p), fp, "{}: unstable fingerprint", p.name);
        if let Some(other) = seen.insert(fp.clone(), p.name.clone()) {
            panic!("{} and {other} share {fp}", p.name);
        }
    }
    let fp = |p: &Profile| ja4_of(p);
    assert!(fp(&bot).starts_with("t13d01"), "{}", fp(&bot));
    assert!(fp(&bot)[..10].ends_with("00"), "no ALPN: {}", fp(&bot));
    let by_name: HashMap<&str, String> =
        browsers.iter().map(|p| (p.name.as_str(), fp(p))).collect();
    // Every suite rustls's ring provider has, and the renegotiation SCSV rustls adds.
    assert!(by_name["firefox-like"].starts_with("t13d10"), "{by_name:?}");
    assert_eq!(&by_name["firefox-like"][8..10], "h2");
    assert_eq!(&by_name["safari-like"][8..10], "h1");
    assert!(by_name["legacy-tls12"].starts_with("t12d"), "{by_name:?}");
}

/// Every TLS hello the kernel sampled so far, reassembled and parsed as the daemon does.
fn hellos(
    reader: &mut swarmwall::dataplane::L7Reader,
    assembler: &mut HelloAssembler,
) -> Vec<l7::RequestEvent> {
    let mut out = Vec::new();
    while let Some(ev) = reader.next_event() {
        assembler.push(&ev, 0, &mut |p| {
            out.extend(l7::from_payload(
                p.kind,
                p.ts_ns,
                swarmwall::addr::from_key(&p.src),
                swarmwall::addr::from_key(&p.dst),
                p.dst_port,
                &p.data,
            ))
        });
    }
    out.retain(|e| e.kind == l7::Kind::TlsHello);
    out
}

/// A TLS bot swarm (a new connection per request) and two TLS browsers (keep-alive, pages with
/// their assets) against the HTTPS server through a veth with swarmwall's XDP program on the
/// server's end: every request gets a 200, the access log has one `combined` line per request
/// that swarmwall's log parser reads back (client, page, User-Agent, status), and the kernel
/// sampler hands swarmwall every bot handshake with its SNI and the bot profile's JA4.
#[test]
fn tls_bots_and_browsers_are_served_logged_and_their_hellos_seen() {
    require_root!();
    let server_ns = NetNs::new("swtls").unwrap();
    let client_ns = NetNs::new("swtlc").unwrap();
    let link = VethPair::new(
        &server_ns,
        &client_ns,
        &format!("{SERVER}/24"),
        "198.51.100.2/24",
    )
    .unwrap();
    for a in BOTS.iter().chain(&BROWSERS).chain(&[NAT]) {
        add_addr(&client_ns, &link.iface_b, &format!("{a}/24")).unwrap();
    }
    let mut dp = Dataplane::load(small()).unwrap();
    let iface = link.iface_a.clone();
    let (mut dp, mode) = in_netns(&server_ns, move || {
        let mode = dp.attach(&iface, AttachMode::Auto);
        (dp, mode)
    })
    .unwrap();
    mode.expect("attaching to the server end of the veth");
    let mut reader = dp.take_l7_reader().unwrap();

    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let server = TlsServer::start(
        &server_ns,
        SocketAddr::new(ip(SERVER), 443),
        HOST,
        Some(&log),
    )
    .unwrap();
    assert_eq!(server.access_log(), Some(log.as_path()));
    let bot_tls = Arc::new(
        TlsClient::new(
            server.certificate(),
            HOST,
            &[Profile::bot()],
            Rotation::PerClient,
        )
        .unwrap(),
    );
    let browser_tls = Arc::new(
        TlsClient::new(
            server.certificate(),
            HOST,
            &Profile::browsers(),
            Rotation::PerClient,
        )
        .unwrap(),
    );
    let variants = Profile::variants(5).unwrap();
    let nat_tls = Arc::new(
        TlsClient::new(
            server.certificate(),
            HOST,
            &variants,
            Rotation::PerConnection,
        )
        .unwrap(),
    );
    let stop = AtomicBool::new(false);
    let bots = Swarm {
        server: server.local_addr(),
        host: HOST.into(),
        sources: BOTS.iter().map(|a| ip(a)).collect(),
        pages: vec!["/gallery/1".into(), "/gallery/2".into()],
        per_source_rps: 4.0,
        duration: Duration::from_secs(2),
        connect_timeout: Duration::from_secs(1),
        user_agent: BOT_AGENT.into(),
        load_assets: false,
    };
    let visitors = Browsing {
        server: server.local_addr(),
        host: HOST.into(),
        sources: BROWSERS.iter().map(|a| ip(a)).collect(),
        duration: Duration::from_secs(3),
        connect_timeout: Duration::from_secs(1),
    };
    // The NAT's users, as seen from outside: one address, a new connection (and browser) per
    // request.
    let nat = Swarm {
        sources: vec![ip(NAT)],
        per_source_rps: 5.0,
        user_agent: "Mozilla/5.0 behind a NAT".into(),
        ..bots.clone()
    };
    let (bot_outcomes, browser_outcomes, nat_outcomes) = std::thread::scope(|s| {
        let b = s.spawn(|| tls::swarm(&client_ns, &bots, &bot_tls, &stop));
        let v = s.spawn(|| tls::browse(&client_ns, &visitors, &browser_tls, &stop));
        let n = s.spawn(|| tls::swarm(&client_ns, &nat, &nat_tls, &stop));
        (
            b.join().unwrap().unwrap(),
            v.join().unwrap().unwrap(),
            n.join().unwrap().unwrap(),
        )
    });
    assert!(nat_outcomes.len() >= variants.len(), "{nat_outcomes:?}");

    // Verification is on: a server with another certificate for the same name gets no request
    // (on a port of its own, which the sampler does not watch).
    let other = TlsServer::start(&server_ns, SocketAddr::new(ip(SERVER), 0), HOST, None).unwrap();
    let one = Swarm {
        server: other.local_addr(),
        sources: vec![ip(NAT)],
        per_source_rps: 1.0,
        duration: Duration::from_millis(500),
        ..bots.clone()
    };
    let refused = tls::swarm(&client_ns, &one, &bot_tls, &stop).unwrap();
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0].result, Err(Failure::Tls));
    assert_eq!(other.served_total(), 0);
    drop(other);
    assert!(bot_outcomes.len() >= 3 * 8, "{}", bot_outcomes.len());
    assert!(
        browser_outcomes.len() >= 2 * 4,
        "{}",
        browser_outcomes.len()
    );
    for o in bot_outcomes
        .iter()
        .chain(&browser_outcomes)
        .chain(&nat_outcomes)
    {
        assert_eq!(o.result, Ok(200), "{o:?}");
    }
    let all: Vec<&Outcome> = bot_outcomes
        .iter()
        .chain(&browser_outcomes)
        .chain(&nat_outcomes)
        .collect();
    assert_eq!(server.served_total(), all.len() as u64);
    // One TLS connection per bot request; one per browser.
    let conns = server.connections();
    for b in BOTS {
        let n = bot_outcomes.iter().filter(|o| o.src == ip(b)).count() as u64;
        assert_eq!(conns[&ip(b)], n, "{b}");
    }
    for v in BROWSERS {
        assert_eq!(conns[&ip(v)], 1, "{v}");
    }

    // The access log, through swarmwall's parser for `[[sources.log]] format = "combined"`.
    let parser = LineParser::new(
        Format::parse("combined", None).unwrap(),
        vec![SocketAddr::new(ip(SERVER), 443)],
        Vec::new(),
    );
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), all.len(), "one line per request:\n{text}");
    let mut logged: HashMap<(IpAddr, String), usize> = HashMap::new();
    for line in &lines {
        let e = parser
            .parse(line.as_bytes())
            .unwrap_or_else(|r| panic!("{r:?}: {line}"));
        assert_eq!((e.dst, e.dst_port), (ip(SERVER), 443), "{line}");
        assert_eq!(e.status, Some(200), "{line}");
        assert!(e.bytes.is_some_and(|b| b > 1000), "{line}");
        if BOTS.contains(&e.src.to_string().as_str()) {
            assert_eq!(e.user_agent.as_deref(), Some(BOT_AGENT), "{line}");
            assert_eq!(e.referer, None, "{line}");
        } else if e.path != "/" && !e.path.starts_with("/gallery") && e.path != "/about" {
            // An asset: fetched from the page it is on.
            let referer = e.referer.as_deref().unwrap_or_default();
            assert!(referer.starts_with("https://shop.example/"), "{line}");
        }
        *logged.entry((e.src, e.path)).or_default() += 1;
    }
    let mut fetched: HashMap<(IpAddr, String), usize> = HashMap::new();
    for o in &all {
        *fetched.entry((o.src, o.path.clone())).or_default() += 1;
    }
    assert_eq!(logged, fetched);

    // The kernel saw every bot handshake, with the SNI and the bot profile's fingerprint.
    let mut assembler = HelloAssembler::new(Limits::default());
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(3);
    let connections = bot_outcomes.len() + BROWSERS.len() + nat_outcomes.len();
    while seen.len() < connections && Instant::now() < deadline {
        seen.extend(hellos(&mut reader, &mut assembler));
        std::thread::sleep(Duration::from_millis(20));
    }
    seen.extend(hellos(&mut reader, &mut assembler));
    let bot_ja4 = ja4_of(&Profile::bot());
    let from_bots: Vec<&l7::RequestEvent> = seen
        .iter()
        .filter(|e| BOTS.contains(&e.src.to_string().as_str()))
        .collect();
    assert_eq!(
        from_bots.len(),
        bot_outcomes.len(),
        "a hello per bot request"
    );
    for e in &seen {
        assert_eq!(e.host.as_deref(), Some(HOST), "{e:?}");
        assert_eq!((e.dst, e.dst_port), (ip(SERVER), 443), "{e:?}");
    }
    assert!(
        from_bots
            .iter()
            .all(|e| e.ja4.as_deref() == Some(bot_ja4.as_str()))
    );
    // Each browser's own fingerprint (profile i for browser i).
    let browsers = Profile::browsers();
    let browser_ja4s: HashSet<Option<&str>> = seen
        .iter()
        .filter(|e| BROWSERS.contains(&e.src.to_string().as_str()))
        .map(|e| e.ja4.as_deref())
        .collect();
    let expected: HashSet<String> = browsers[..BROWSERS.len()].iter().map(ja4_of).collect();
    assert_eq!(
        browser_ja4s,
        expected.iter().map(|s| Some(s.as_str())).collect(),
    );
    // The NAT's address shows every one of its users' fingerprints, in turn.
    let nat_ja4s: Vec<Option<&str>> = seen
        .iter()
        .filter(|e| e.src == ip(NAT))
        .map(|e| e.ja4.as_deref())
        .collect();
    assert_eq!(nat_ja4s.len(), nat_outcomes.len());
    let rotated: HashSet<String> = variants.iter().map(ja4_of).collect();
    assert_eq!(rotated.len(), variants.len());
    assert_eq!(
        nat_ja4s.iter().copied().collect::<HashSet<_>>(),
        rotated.iter().map(|s| Some(s.as_str())).collect(),
    );
}
