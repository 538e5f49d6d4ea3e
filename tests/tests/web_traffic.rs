//! Real HTTP between two namespaces through a veth: the lab site served by hyper, browsers and a
//! bot swarm side by side, what each client saw checked against what the server counted; the
//! failures a blocked client sees (refused, connect timed out); stop honoured promptly; and the
//! requests' bytes on the wire. Needs root; no XDP involved.
//!
//! Addresses: the server is 198.51.100.1; the browsers are extra addresses in its subnet, the
//! bots sit in a second subnet (203.0.113.0/24) on the same veth, routed on-link from the
//! server side. Nothing is sent anywhere but inside the two namespaces each test creates.

use std::{
    collections::HashMap,
    io::{ErrorKind, Read as _, Write as _},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use swarmwall_integration::{
    netns::{NetNs, VethPair, add_addr, add_neigh},
    require_root,
    traffic::tcp_listen,
    web::{
        Browsing, Failure, Outcome, PAGES, Swarm, WebServer, assets_of, browse, browser_user_agent,
        succeeded_by_source, swarm,
    },
};

const SERVER: &str = "198.51.100.1";
const HOST: &str = "lab.example";
const BROWSERS: [&str; 3] = ["198.51.100.10", "198.51.100.11", "198.51.100.12"];
const BOTS: [&str; 5] = [
    "203.0.113.10",
    "203.0.113.11",
    "203.0.113.12",
    "203.0.113.13",
    "203.0.113.14",
];
const BOT_UA: &str = "python-requests/2.31.0";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn ips(list: &[&str]) -> Vec<IpAddr> {
    list.iter().map(|s| ip(s)).collect()
}

fn at(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(self::ip(ip), port)
}

/// Server and client namespaces joined by a veth, the client holding the browsers' and the
/// bots' addresses. Fields drop in order: the veth first, then the namespaces.
struct Lab {
    link: VethPair,
    client: NetNs,
    server: NetNs,
}

fn lab() -> Lab {
    let server = NetNs::new("swws").unwrap();
    let client = NetNs::new("swwc").unwrap();
    let link = VethPair::new(&server, &client, &format!("{SERVER}/24"), "198.51.100.2/24").unwrap();
    for a in BROWSERS {
        add_addr(&client, &link.iface_b, &format!("{a}/24")).unwrap();
    }
    for a in BOTS {
        add_addr(&client, &link.iface_b, &format!("{a}/24")).unwrap();
    }
    server
        .run(&["ip", "route", "add", "203.0.113.0/24", "dev", &link.iface_a])
        .unwrap();
    Lab {
        link,
        client,
        server,
    }
}

fn swarm_pages() -> Vec<String> {
    vec!["/".into(), "/gallery/1".into()]
}

fn by_source(outcomes: &[Outcome]) -> HashMap<IpAddr, Vec<&Outcome>> {
    let mut map: HashMap<IpAddr, Vec<&Outcome>> = HashMap::new();
    for o in outcomes {
        map.entry(o.src).or_default().push(o);
    }
    map
}

#[test]
fn browsers_and_swarm_share_a_real_site() {
    require_root!();
    let lab = lab();
    let server = WebServer::start(&lab.server, at(SERVER, 80)).unwrap();
    let visitors = Browsing {
        server: server.local_addr(),
        host: HOST.into(),
        sources: ips(&BROWSERS),
        duration: Duration::from_secs(3),
        connect_timeout: CONNECT_TIMEOUT,
    };
    let attack = Swarm {
        server: server.local_addr(),
        host: HOST.into(),
        sources: ips(&BOTS),
        pages: swarm_pages(),
        per_source_rps: 5.0,
        duration: Duration::from_secs(2),
        connect_timeout: CONNECT_TIMEOUT,
        user_agent: BOT_UA.into(),
        load_assets: false,
    };
    let stop = AtomicBool::new(false);
    let started = Instant::now();
    let (visits, bots) = std::thread::scope(|s| {
        let visits = s.spawn(|| browse(&lab.client, &visitors, &stop));
        let bots = s.spawn(|| swarm(&lab.client, &attack, &stop));
        (visits.join().unwrap(), bots.join().unwrap())
    });
    let (visits, bots) = (visits.unwrap(), bots.unwrap());
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");

    // Browsers: everything succeeded, each saw at least one full page view, on one connection.
    for o in &visits {
        assert_eq!(o.result, Ok(200), "{o:?}");
    }
    let browsers = by_source(&visits);
    let connections = server.connections();
    for src in ips(&BROWSERS) {
        let seen = browsers
            .get(&src)
            .unwrap_or_else(|| panic!("{src} made no request"));
        let paths: Vec<&str> = seen.iter().map(|o| o.path.as_str()).collect();
        let full_view = paths.iter().enumerate().any(|(i, p)| {
            PAGES.contains(p) && paths.get(i + 1..i + 1 + assets_of(p).len()) == Some(assets_of(p))
        });
        assert!(
            full_view,
            "{src} never fetched a page and all its assets: {paths:?}"
        );
        assert_eq!(
            connections.get(&src),
            Some(&1),
            "{src} kept its connection alive"
        );
        assert!(seen.windows(2).all(|w| w[0].at <= w[1].at));
    }

    // Bots: ~rps × duration requests each, all answered, only the swarm's pages, a connection
    // per request.
    let pages = swarm_pages();
    let bot_requests = by_source(&bots);
    for src in ips(&BOTS) {
        let sent = bot_requests
            .get(&src)
            .unwrap_or_else(|| panic!("{src} sent nothing"));
        assert!(
            (8..=12).contains(&sent.len()),
            "{src} made {} requests, expected 10 ± 2",
            sent.len()
        );
        for o in sent {
            assert_eq!(o.result, Ok(200), "{o:?}");
            assert!(pages.contains(&o.path), "{o:?}");
        }
        assert_eq!(connections.get(&src), Some(&(sent.len() as u64)), "{src}");
    }

    // Both ends agree, per source.
    let mut expected = succeeded_by_source(&visits);
    expected.extend(succeeded_by_source(&bots));
    assert_eq!(server.served(), expected);
    assert_eq!(server.served_total(), (visits.len() + bots.len()) as u64);
}

#[test]
fn swarm_against_a_closed_port_is_refused() {
    require_root!();
    let lab = lab();
    let attack = Swarm {
        server: at(SERVER, 81),
        host: HOST.into(),
        sources: ips(&BOTS[..2]),
        pages: swarm_pages(),
        per_source_rps: 10.0,
        duration: Duration::from_millis(500),
        connect_timeout: CONNECT_TIMEOUT,
        user_agent: BOT_UA.into(),
        load_assets: false,
    };
    let outcomes = swarm(&lab.client, &attack, &AtomicBool::new(false)).unwrap();
    assert_eq!(outcomes.len(), 10, "{outcomes:?}");
    for o in &outcomes {
        assert_eq!(o.result, Err(Failure::Refused), "{o:?}");
    }
}

/// An on-link address whose neighbour entry points at a MAC nobody has: the SYNs leave, the
/// other end's stack discards them (not addressed to it), nothing ever answers — as if XDP
/// dropped them — and, the entry being permanent, no ARP failure turns it into "unreachable".
#[test]
fn swarm_against_a_silent_address_times_out() {
    require_root!();
    let lab = lab();
    let silent = "198.51.100.99";
    add_neigh(
        &lab.client,
        &lab.link.iface_b,
        ip(silent),
        [0x02, 0, 0, 0, 0, 0x99],
    )
    .unwrap();
    let connect_timeout = Duration::from_millis(300);
    let attack = Swarm {
        server: at(silent, 80),
        host: HOST.into(),
        sources: ips(&BOTS[..2]),
        pages: swarm_pages(),
        per_source_rps: 5.0,
        duration: Duration::from_secs(1),
        connect_timeout,
        user_agent: BOT_UA.into(),
        load_assets: false,
    };
    let started = Instant::now();
    let outcomes = swarm(&lab.client, &attack, &AtomicBool::new(false)).unwrap();
    let elapsed = started.elapsed();
    // The rate holds even though every connect hangs for longer than the interval.
    assert_eq!(outcomes.len(), 10, "{outcomes:?}");
    for o in &outcomes {
        assert_eq!(o.result, Err(Failure::ConnectTimeout), "{o:?}");
    }
    assert!(
        elapsed < Duration::from_secs(1) + connect_timeout + Duration::from_millis(500),
        "took {elapsed:?}"
    );

    // Browsers see the same thing, and keep trying after thinking rather than spinning.
    let visitors = Browsing {
        server: at(silent, 80),
        host: HOST.into(),
        sources: ips(&BROWSERS[..1]),
        duration: Duration::from_secs(1),
        connect_timeout,
    };
    let outcomes = browse(&lab.client, &visitors, &AtomicBool::new(false)).unwrap();
    assert!((1..=3).contains(&outcomes.len()), "{outcomes:?}");
    for o in &outcomes {
        assert_eq!(o.result, Err(Failure::ConnectTimeout), "{o:?}");
        assert!(
            PAGES.contains(&o.path.as_str()),
            "no assets after a failed page"
        );
    }
}

#[test]
fn stop_ends_browsing_and_swarm_promptly() {
    require_root!();
    let lab = lab();
    let server = WebServer::start(&lab.server, at(SERVER, 80)).unwrap();
    let visitors = Browsing {
        server: server.local_addr(),
        host: HOST.into(),
        sources: ips(&BROWSERS),
        duration: Duration::from_secs(60),
        connect_timeout: CONNECT_TIMEOUT,
    };
    let attack = Swarm {
        server: server.local_addr(),
        host: HOST.into(),
        sources: ips(&BOTS),
        pages: swarm_pages(),
        per_source_rps: 20.0,
        duration: Duration::from_secs(60),
        connect_timeout: CONNECT_TIMEOUT,
        user_agent: BOT_UA.into(),
        load_assets: false,
    };
    let stop = AtomicBool::new(false);
    let (visits, bots, stopped_after) = std::thread::scope(|s| {
        let visits = s.spawn(|| browse(&lab.client, &visitors, &stop));
        let bots = s.spawn(|| swarm(&lab.client, &attack, &stop));
        std::thread::sleep(Duration::from_millis(700));
        stop.store(true, Ordering::Relaxed);
        let stopped_at = Instant::now();
        let visits = visits.join().unwrap().unwrap();
        let bots = bots.join().unwrap().unwrap();
        (visits, bots, stopped_at.elapsed())
    });
    assert!(
        stopped_after < Duration::from_millis(300),
        "stop took {stopped_after:?}"
    );
    assert!(!visits.is_empty() && !bots.is_empty());
    assert!(visits.iter().chain(&bots).all(Outcome::succeeded));
    // 700 ms at 20 rps from each bot, give or take the stagger.
    assert!(
        (5 * 12..=5 * 15).contains(&bots.len()),
        "{} bot requests",
        bots.len()
    );
}

/// Serves `listener` until `done`, recording each connection's request heads (in order) and
/// answering each request with an empty 200 — closing after a request that asks for it.
fn record_heads(listener: &TcpListener, done: &AtomicBool) -> Vec<Vec<String>> {
    listener.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    std::thread::scope(|s| {
        let mut connections = Vec::new();
        while !done.load(Ordering::Relaxed) && Instant::now() < deadline {
            match listener.accept() {
                Ok((stream, _)) => connections.push(s.spawn(move || serve_heads(stream))),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err(e) => panic!("accept: {e}"),
            }
        }
        connections.into_iter().map(|c| c.join().unwrap()).collect()
    })
}

fn serve_heads(mut stream: TcpStream) -> Vec<String> {
    stream.set_nonblocking(false).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let (mut heads, mut buf) = (Vec::new(), Vec::new());
    loop {
        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8(buf.drain(..end + 4).collect()).unwrap();
            let close = head.contains("\r\nConnection: close\r\n");
            let answer: &[u8] = if close {
                b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            } else {
                b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
            };
            stream.write_all(answer).unwrap();
            heads.push(head);
            if close {
                return heads;
            }
        }
        let mut chunk = [0; 4096];
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return heads,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.split("\r\n")
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(": "))
}

#[test]
fn requests_are_plain_http_on_the_wire() {
    require_root!();
    let lab = lab();
    let listener = tcp_listen(&lab.server, at(SERVER, 8080)).unwrap();
    let server = listener.local_addr().unwrap();

    // One browser for a second: at least one page view (it arrives within 300 ms).
    let visitors = Browsing {
        server,
        host: HOST.into(),
        sources: ips(&BROWSERS[..1]),
        duration: Duration::from_secs(1),
        connect_timeout: CONNECT_TIMEOUT,
    };
    let done = AtomicBool::new(false);
    let (outcomes, connections) = std::thread::scope(|s| {
        let recorder = s.spawn(|| record_heads(&listener, &done));
        let outcomes = browse(&lab.client, &visitors, &AtomicBool::new(false));
        done.store(true, Ordering::Relaxed);
        (outcomes.unwrap(), recorder.join().unwrap())
    });
    assert!(outcomes.iter().all(|o| o.result == Ok(200)), "{outcomes:?}");
    assert_eq!(connections.len(), 1, "one keep-alive connection");
    let heads = &connections[0];
    assert_eq!(heads.len(), outcomes.len());
    let first = outcomes[0].path.as_str();
    assert!(PAGES.contains(&first));
    assert!(heads.len() > assets_of(first).len(), "{heads:?}");
    let agent = browser_user_agent(0);
    // The page the browser is on: the Referer of its assets and of the next page.
    let mut on_page: Option<&str> = None;
    for (head, outcome) in heads.iter().zip(&outcomes) {
        let path = outcome.path.as_str();
        assert!(
            head.starts_with(&format!("GET {path} HTTP/1.1\r\n")),
            "{head}"
        );
        assert_eq!(header(head, "Host"), Some(HOST), "{head}");
        assert_eq!(header(head, "User-Agent"), Some(agent.as_str()), "{head}");
        assert_eq!(header(head, "Connection"), None, "{head}");
        let referer = on_page.map(|page| format!("http://{HOST}{page}"));
        assert_eq!(header(head, "Referer"), referer.as_deref(), "{head}");
        if PAGES.contains(&path) {
            on_page = Some(path);
        } else {
            assert!(assets_of(on_page.unwrap()).contains(&path), "{path}");
        }
    }

    // Two bot requests: two connections, one request each, no Referer.
    let attack = Swarm {
        server,
        host: HOST.into(),
        sources: ips(&BOTS[..1]),
        pages: vec!["/gallery/2".into(), "/about?x=1".into()],
        per_source_rps: 4.0,
        duration: Duration::from_millis(500),
        connect_timeout: CONNECT_TIMEOUT,
        user_agent: BOT_UA.into(),
        load_assets: false,
    };
    done.store(false, Ordering::Relaxed);
    let (outcomes, mut connections) = std::thread::scope(|s| {
        let recorder = s.spawn(|| record_heads(&listener, &done));
        let outcomes = swarm(&lab.client, &attack, &AtomicBool::new(false));
        done.store(true, Ordering::Relaxed);
        (outcomes.unwrap(), recorder.join().unwrap())
    });
    assert_eq!(outcomes.len(), 2, "{outcomes:?}");
    assert!(outcomes.iter().all(|o| o.result == Ok(200)), "{outcomes:?}");
    connections.sort();
    assert_eq!(connections.len(), 2);
    for (heads, path) in connections.iter().zip(["/about?x=1", "/gallery/2"]) {
        assert_eq!(heads.len(), 1, "{heads:?}");
        let head = &heads[0];
        assert!(
            head.starts_with(&format!("GET {path} HTTP/1.1\r\n")),
            "{head}"
        );
        assert_eq!(header(head, "Host"), Some(HOST));
        assert_eq!(header(head, "User-Agent"), Some(BOT_UA));
        assert_eq!(header(head, "Connection"), Some("close"));
        assert_eq!(header(head, "Referer"), None);
    }
}

#[test]
fn ipv6_browsers_and_bots_work_too() {
    require_root!();
    let lab = lab();
    add_addr(&lab.server, &lab.link.iface_a, "2001:db8:100::1/64").unwrap();
    for a in ["2001:db8:100::10/64", "2001:db8:100::20/64"] {
        add_addr(&lab.client, &lab.link.iface_b, a).unwrap();
    }
    let server = WebServer::start(&lab.server, at("2001:db8:100::1", 80)).unwrap();
    let visitors = Browsing {
        server: server.local_addr(),
        host: "[2001:db8:100::1]".into(),
        sources: vec![ip("2001:db8:100::10")],
        duration: Duration::from_millis(800),
        connect_timeout: CONNECT_TIMEOUT,
    };
    let attack = Swarm {
        server: server.local_addr(),
        host: "[2001:db8:100::1]".into(),
        sources: vec![ip("2001:db8:100::20")],
        pages: swarm_pages(),
        per_source_rps: 5.0,
        duration: Duration::from_millis(600),
        connect_timeout: CONNECT_TIMEOUT,
        user_agent: BOT_UA.into(),
        load_assets: false,
    };
    let stop = AtomicBool::new(false);
    let (visits, bots) = std::thread::scope(|s| {
        let visits = s.spawn(|| browse(&lab.client, &visitors, &stop));
        let bots = s.spawn(|| swarm(&lab.client, &attack, &stop));
        (
            visits.join().unwrap().unwrap(),
            bots.join().unwrap().unwrap(),
        )
    });
    assert!(!visits.is_empty());
    assert_eq!(bots.len(), 3, "{bots:?}");
    assert!(visits.iter().chain(&bots).all(|o| o.result == Ok(200)));
    let mut expected = succeeded_by_source(&visits);
    expected.extend(succeeded_by_source(&bots));
    assert_eq!(server.served(), expected);
    assert_eq!(expected.len(), 2);
}
