//! L7 sampling in the real kernel: HTTP requests and TLS hellos to configured ports land in the
//! ring buffer with their first bytes; nothing else does; a blocked source's requests are not
//! sampled; the per-CPU budget caps events and counts what it skips. Needs root.

mod common;

use common::{ip, small};
use swarmwall::{Dataplane, Prog, RuleSpec, l7};
use swarmwall_integration::{packets::Frame, require_root};
use swarmwall_maps::{L7_HTTP, L7_SNAP, L7_TLS, Stat};

const REQUEST: &[u8] =
    b"GET /gallery/7?x=1 HTTP/1.1\r\nHost: Shop.Example\r\nUser-Agent: bot/1.0\r\n\r\n";

fn http(src: &str, port: u16, payload: &[u8]) -> Vec<u8> {
    Frame::tcp(ip(src), ip("203.0.113.10"), 40000, port)
        .tcp_flags(0x18)
        .payload(payload)
        .build()
}

fn drain(r: &mut swarmwall::dataplane::L7Reader) -> Vec<swarmwall_maps::L7Event> {
    std::iter::from_fn(|| r.next_event()).collect()
}

#[test]
fn http_requests_to_web_ports_are_sampled_and_parse() {
    require_root!();
    let mut dp = Dataplane::load(small()).unwrap();
    let mut reader = dp.take_l7_reader().unwrap();
    dp.test_run(Prog::Main, &http("192.0.2.1", 80, REQUEST), 1)
        .unwrap();
    let evs = drain(&mut reader);
    assert_eq!(evs.len(), 1);
    let e = &evs[0];
    assert_eq!((e.kind, e.src_port, e.dst_port), (L7_HTTP, 40000, 80));
    assert_eq!(&e.data[..e.len as usize], REQUEST);
    let reqs = l7::from_sample(e);
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].src, ip("192.0.2.1"));
    assert_eq!(reqs[0].dst, ip("203.0.113.10"));
    assert_eq!(reqs[0].path, "/gallery/7");
    assert_eq!(reqs[0].host.as_deref(), Some("shop.example"));
    assert_eq!(reqs[0].user_agent.as_deref(), Some("bot/1.0"));

    // IPv6, a long request cut at L7_SNAP bytes, the second configured port.
    let long = [REQUEST.to_vec(), vec![b'x'; 1000]].concat();
    let f = Frame::tcp(ip("2001:db8::1"), ip("2001:db8::10"), 40001, 8080)
        .tcp_flags(0x18)
        .payload(&long)
        .build();
    dp.test_run(Prog::Main, &f, 1).unwrap();
    let evs = drain(&mut reader);
    assert_eq!(evs.len(), 1);
    assert_eq!(evs[0].len as usize, L7_SNAP);
    assert_eq!(&evs[0].data[..], &long[..L7_SNAP]);
    assert_eq!(dp.stat(Stat::L7Sampled).unwrap(), 2);
}

#[test]
fn only_requests_that_pass_to_configured_ports_are_sampled() {
    require_root!();
    let mut dp = Dataplane::load(small()).unwrap();
    let mut reader = dp.take_l7_reader().unwrap();
    dp.add_rule(RuleSpec::drop("192.0.2.66".parse().unwrap()))
        .unwrap();
    for f in [
        http("192.0.2.1", 22, REQUEST),                    // not a web port
        http("192.0.2.1", 80, b"SSH-2.0-OpenSSH_9.2\r\n"), // not HTTP
        http("192.0.2.1", 80, b""),                        // no payload (a bare ACK)
        http("192.0.2.1", 80, b"GE"),                      // too short to tell
        http("192.0.2.66", 80, REQUEST),                   // blocked: never reaches the server
        Frame::udp(ip("192.0.2.1"), ip("203.0.113.10"), 40000, 80)
            .payload(REQUEST)
            .build(),
    ] {
        dp.test_run(Prog::Main, &f, 1).unwrap();
    }
    assert!(drain(&mut reader).is_empty());
    assert_eq!(dp.stat(Stat::L7Sampled).unwrap(), 0);

    // Sampling off, then other ports.
    dp.set_l7(&[8000], &[], 0).unwrap();
    dp.test_run(Prog::Main, &http("192.0.2.1", 8000, REQUEST), 1)
        .unwrap();
    assert!(drain(&mut reader).is_empty());
    dp.set_l7(&[8000], &[], 100).unwrap();
    dp.test_run(Prog::Main, &http("192.0.2.1", 80, REQUEST), 1)
        .unwrap();
    dp.test_run(Prog::Main, &http("192.0.2.1", 8000, REQUEST), 1)
        .unwrap();
    let evs = drain(&mut reader);
    assert_eq!(evs.len(), 1);
    assert_eq!(evs[0].dst_port, 8000);
}

#[test]
fn tls_client_hellos_are_sampled_on_tls_ports() {
    require_root!();
    let mut dp = Dataplane::load(small()).unwrap();
    let mut reader = dp.take_l7_reader().unwrap();
    // A record header (handshake, TLS 1.0 record version), then a ClientHello header.
    let mut hello = vec![
        0x16, 0x03, 0x01, 0x00, 0x40, 0x01, 0x00, 0x00, 0x3c, 0x03, 0x03,
    ];
    hello.resize(0x45, 0);
    dp.test_run(Prog::Main, &http("192.0.2.1", 443, &hello), 1)
        .unwrap();
    dp.test_run(Prog::Main, &http("192.0.2.1", 443, REQUEST), 1)
        .unwrap(); // not TLS
    let evs = drain(&mut reader);
    assert_eq!(evs.len(), 1);
    assert_eq!(evs[0].kind, L7_TLS);
    assert_eq!(l7::from_sample(&evs[0])[0].kind, l7::Kind::TlsHello);
}

#[test]
fn the_budget_caps_events_and_counts_the_rest() {
    require_root!();
    let mut dp = Dataplane::load(small()).unwrap();
    let mut reader = dp.take_l7_reader().unwrap();
    dp.set_l7(&[80], &[], 5).unwrap();
    // 40 requests within a few milliseconds: a burst of one second's worth (5) goes through.
    dp.test_run(Prog::Main, &http("192.0.2.1", 80, REQUEST), 40)
        .unwrap();
    let sampled = drain(&mut reader).len() as u64;
    assert!((5..=6).contains(&sampled), "{sampled}");
    assert_eq!(dp.stat(Stat::L7Sampled).unwrap(), sampled);
    assert_eq!(dp.stat(Stat::L7Skipped).unwrap(), 40 - sampled);
}
