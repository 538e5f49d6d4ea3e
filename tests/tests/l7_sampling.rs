//! L7 sampling in the real kernel: HTTP requests and TLS hellos to configured ports land in the
//! ring buffer with their first bytes; nothing else does; a blocked source's requests are not
//! sampled; the per-CPU budget caps events and counts what it skips. Needs root.

mod common;

use std::time::Duration;

use common::{ip, small};
use swarmwall::{
    Dataplane, Prog, RuleSpec, l7,
    sources::hello::{HelloAssembler, Limits},
};
use swarmwall_integration::{
    hello::browser_client_hello,
    packets::{DEFAULT_SEQ, Frame},
    require_root,
};
use swarmwall_maps::{HELLO_TIMEOUT_NS, L7_FLAG_CONT, L7_FLAG_END, L7_HTTP, L7_SNAP, L7_TLS, Stat};

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

/// The records of one flow, reassembled as the daemon's reader does, parsed.
fn reassembled(evs: &[swarmwall_maps::L7Event]) -> Vec<l7::RequestEvent> {
    let mut a = HelloAssembler::new(Limits::default());
    let mut out = Vec::new();
    for e in evs {
        a.push(e, 0, &mut |p| {
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
    out
}

/// A browser-sized hello cut into the two segments a 1500-byte MTU makes of it.
fn hello_segments(src: &str, sport: u16, hello: &[u8]) -> [Vec<u8>; 2] {
    const MSS: usize = 1448;
    let seg = |seq: u32, payload: &[u8]| {
        Frame::tcp(ip(src), ip("203.0.113.10"), sport, 443)
            .tcp_flags(0x18)
            .tcp_seq(seq)
            .payload(payload)
            .build()
    };
    [
        seg(DEFAULT_SEQ, &hello[..MSS]),
        seg(DEFAULT_SEQ + MSS as u32, &hello[MSS..]),
    ]
}

#[test]
fn a_hello_over_two_segments_is_captured_whole() {
    require_root!();
    let mut dp = Dataplane::load(small()).unwrap();
    let mut reader = dp.take_l7_reader().unwrap();
    let hello = browser_client_hello("late.shop.example");
    let [first, second] = hello_segments("192.0.2.1", 40000, &hello);
    // A bare ACK and a retransmitted first segment in between change nothing.
    let ack = Frame::tcp(ip("192.0.2.1"), ip("203.0.113.10"), 40000, 443)
        .tcp_flags(0x10)
        .tcp_seq(DEFAULT_SEQ + 1448)
        .build();
    for f in [&first, &ack, &first, &second] {
        dp.test_run(Prog::Main, f, 1).unwrap();
    }
    let evs = drain(&mut reader);
    // The first segment's 1448 bytes in three records, the retransmission's again, the rest.
    assert_eq!(
        evs.len(),
        7,
        "{:?}",
        evs.iter()
            .map(|e| (e.offset, e.len, e.flags))
            .collect::<Vec<_>>()
    );
    let cont = evs.last().unwrap();
    assert_eq!(cont.flags, L7_FLAG_CONT | L7_FLAG_END);
    assert_eq!(
        (cont.offset as usize, cont.len as usize),
        (1448, hello.len() - 1448)
    );
    assert!(evs.iter().all(|e| e.total as usize == hello.len()));
    let reqs = reassembled(&evs);
    assert_eq!(reqs.len(), 1, "one hello, retransmission or not: {reqs:?}");
    assert_eq!(reqs[0].host.as_deref(), Some("late.shop.example"));
    assert_eq!(reqs[0].kind, l7::Kind::TlsHello);
    assert_eq!(dp.stat(Stat::L7HelloTracked).unwrap(), 2);
    assert_eq!(dp.stat(Stat::L7HelloContinued).unwrap(), 1);
    // Done: the flow is forgotten, a further segment is not sampled.
    dp.test_run(Prog::Main, &second, 1).unwrap();
    assert!(drain(&mut reader).is_empty());

    // The first 512 bytes of the first segment alone, as before, did not hold the name.
    assert_eq!(l7::from_sample(&evs[0])[0].host, None);

    // IPv6, the same.
    let seg6 = |seq: u32, payload: &[u8]| {
        Frame::tcp(ip("2001:db8::1"), ip("2001:db8::10"), 40002, 443)
            .tcp_flags(0x18)
            .tcp_seq(seq)
            .payload(payload)
            .build()
    };
    dp.test_run(Prog::Main, &seg6(9, &hello[..1400]), 1)
        .unwrap();
    dp.test_run(Prog::Main, &seg6(9 + 1400, &hello[1400..]), 1)
        .unwrap();
    let reqs = reassembled(&drain(&mut reader));
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].host.as_deref(), Some("late.shop.example"));
}

/// `hello`'s handshake message re-framed into TLS records of `chunk` bytes.
fn in_records(hello: &[u8], chunk: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for part in hello[5..].chunks(chunk) {
        out.extend_from_slice(&[0x16, 3, 1]);
        out.extend_from_slice(&(part.len() as u16).to_be_bytes());
        out.extend_from_slice(part);
    }
    out
}

#[test]
fn a_hello_split_over_tls_records_is_captured_to_its_end() {
    require_root!();
    let mut dp = Dataplane::load(small()).unwrap();
    let mut reader = dp.take_l7_reader().unwrap();
    let whole = browser_client_hello("split.shop.example");
    let want = l7::tls_event(0, ip("192.0.2.1"), ip("203.0.113.10"), 443, &whole);
    assert!(want.ja4.is_some());
    let seg = |sport: u16, seq: u32, payload: &[u8]| {
        Frame::tcp(ip("192.0.2.1"), ip("203.0.113.10"), sport, 443)
            .tcp_flags(0x18)
            .tcp_seq(seq)
            .payload(payload)
            .build()
    };
    // Records of 600 bytes across a 1448-byte segment boundary; and records each in its own
    // segment (as anti-censorship tools send them), so the second segment starts a record.
    let split = in_records(&whole, 600);
    let aligned = in_records(&whole, 1000);
    let cases = [
        (40100u16, vec![&split[..1448], &split[1448..]]),
        (40101, vec![&aligned[..1005], &aligned[1005..]]),
    ];
    for (sport, segments) in cases {
        let mut seq = DEFAULT_SEQ;
        for s in &segments {
            dp.test_run(Prog::Main, &seg(sport, seq, s), 1).unwrap();
            seq += s.len() as u32;
        }
        let reqs = reassembled(&drain(&mut reader));
        assert_eq!(reqs.len(), 1, "{sport}: {reqs:?}");
        assert_eq!(reqs[0].host, want.host, "{sport}");
        assert_eq!(reqs[0].ja4, want.ja4, "{sport}");
    }
}

#[test]
fn a_continuation_out_of_sequence_or_too_late_is_not_sampled() {
    require_root!();
    let mut dp = Dataplane::load(small()).unwrap();
    let mut reader = dp.take_l7_reader().unwrap();
    let hello = browser_client_hello("late.shop.example");
    let [first, _] = hello_segments("192.0.2.2", 40001, &hello);
    dp.test_run(Prog::Main, &first, 1).unwrap();
    assert_eq!(drain(&mut reader).len(), 3);
    // A segment past a lost one: not the next in sequence.
    let ahead = Frame::tcp(ip("192.0.2.2"), ip("203.0.113.10"), 40001, 443)
        .tcp_flags(0x18)
        .tcp_seq(DEFAULT_SEQ + 1448 + 100)
        .payload(&hello[1548..])
        .build();
    dp.test_run(Prog::Main, &ahead, 1).unwrap();
    assert!(drain(&mut reader).is_empty());
    // The right one, but after the kernel stopped waiting: dropped, and the entry with it.
    std::thread::sleep(Duration::from_nanos(HELLO_TIMEOUT_NS) + Duration::from_millis(100));
    let [_, second] = hello_segments("192.0.2.2", 40001, &hello);
    dp.test_run(Prog::Main, &second, 1).unwrap();
    assert!(drain(&mut reader).is_empty());
    assert_eq!(dp.stat(Stat::L7HelloContinued).unwrap(), 0);
    assert_eq!(dp.hello_flows().unwrap(), 0);
}

#[test]
fn a_flood_of_first_segments_cannot_grow_the_flow_map() {
    require_root!();
    let mut dp = Dataplane::load(small()).unwrap();
    let _reader = dp.take_l7_reader().unwrap();
    dp.set_l7(&[80], &[443], 1_000_000).unwrap();
    let hello = browser_client_hello("late.shop.example");
    let flows = swarmwall_maps::defaults::HELLO_FLOWS + 2000;
    for i in 0..flows {
        let [first, _] = hello_segments("192.0.2.3", (i % 60000) as u16, &hello);
        // Distinct flows: vary the source address too.
        let mut f = first;
        f[14 + 12 + 2] = (i >> 8) as u8;
        f[14 + 12 + 3] = i as u8;
        dp.test_run(Prog::Main, &f, 1).unwrap();
    }
    let held = dp.hello_flows().unwrap();
    assert!(
        held <= swarmwall_maps::defaults::HELLO_FLOWS as usize,
        "{held} flows remembered"
    );
}

/// The kernel wakes the ring's reader only once a backlog builds, so a lone request on a quiet
/// site must still reach a reader already asleep in a long poll, within the reader's own wait.
#[test]
fn a_lone_sample_reaches_a_sleeping_reader_promptly() {
    use std::{
        sync::mpsc,
        time::{Duration, Instant},
    };
    use swarmwall::sources::{EventSource, kernel::KernelRing};

    require_root!();
    let mut dp = Dataplane::load(small()).unwrap();
    let mut ring = KernelRing::new(dp.take_l7_reader().unwrap());
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let mut got = None;
            // As the daemon's reader asks: a long wait, to look at its stop flag now and then.
            ring.poll(Duration::from_secs(5), &mut |e| got = Some(e.path))
                .unwrap();
            if let Some(path) = got {
                tx.send((path, Instant::now())).unwrap();
                return;
            }
        }
    });
    // Let the reader fall asleep first.
    std::thread::sleep(Duration::from_millis(300));
    let sent = Instant::now();
    dp.test_run(Prog::Main, &http("192.0.2.1", 80, REQUEST), 1)
        .unwrap();
    let (path, at) = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the sample never reached the reader");
    assert_eq!(path, "/gallery/7");
    let waited = at - sent;
    assert!(
        waited < Duration::from_secs(1),
        "the sample waited {waited:?} in the ring"
    );
    reader.join().unwrap();
}
