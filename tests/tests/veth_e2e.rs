//! End to end through a real veth pair: the data plane attached (native XDP) to the server end,
//! real sockets on both sides, blocked and unblocked sources over IPv4 and IPv6. Needs root.
//!
//! Counting exactly: every client address has a permanent neighbour entry on the server and the
//! server's addresses have one on the client, so no ARP or neighbour discovery crosses the veth
//! (ND is ICMPv6 from the very addresses under test, and XDP would count it — or, for a blocked
//! source, drop it and leave that source's datagrams stuck in the client's neighbour queue).
//! The only IP traffic from a test source is then what the test sends, so its UDP counts are
//! asserted exactly, and UDP is checked before any TCP from the same source.

mod common;

use common::{ip, small};
use std::{
    collections::HashMap,
    io,
    net::{IpAddr, TcpListener},
    sync::atomic::AtomicBool,
    time::{Duration, Instant},
};

use swarmwall::{
    Action, AttachMode, Dataplane, Proto, RuleSpec, Scope, Target, dataplane::SourceStats,
};
use swarmwall_integration::{
    netns::{NetNs, VethPair, add_addr, add_neigh, in_netns},
    require_root,
    traffic::{Flow, UdpSink, send_udp, tcp_connect_from, tcp_listen},
};
use swarmwall_maps::Stat;

const SERVER4: &str = "198.51.100.1";
const SERVER6: &str = "2001:db8:100::1";
/// Client addresses besides the veth's own (.2 and ::2).
const CLIENT_EXTRA: [&str; 6] = [
    "198.51.100.10",
    "198.51.100.11",
    "198.51.100.12",
    "2001:db8:100::10",
    "2001:db8:100::11",
    "2001:db8:100::12",
];
const DATAGRAMS: usize = 100;
/// Pacing for the UDP bursts: short, yet gentle enough that the veth's XDP ring never overflows.
const SEND_OVER: Duration = Duration::from_millis(300);
/// The sink stops once nothing has arrived for this long.
const QUIET: Duration = Duration::from_millis(300);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

fn target(s: &str) -> Target {
    s.parse().unwrap()
}

/// Two namespaces joined by a veth, dual stack, with permanent neighbour entries both ways.
/// Fields drop in order: the veth first, then the namespaces (which kill anything left inside).
struct Lab {
    link: VethPair,
    client: NetNs,
    server: NetNs,
}

impl Lab {
    fn new() -> Lab {
        let client = NetNs::new("swlc").unwrap();
        let server = NetNs::new("swls").unwrap();
        let link = VethPair::new(&client, &server, "198.51.100.2/24", "198.51.100.1/24").unwrap();
        add_addr(&server, &link.iface_b, "2001:db8:100::1/64").unwrap();
        add_addr(&client, &link.iface_a, "2001:db8:100::2/64").unwrap();
        for extra in CLIENT_EXTRA {
            let len = if extra.contains(':') { 64 } else { 24 };
            add_addr(&client, &link.iface_a, &format!("{extra}/{len}")).unwrap();
        }
        for server_addr in [SERVER4, SERVER6] {
            add_neigh(&client, &link.iface_a, ip(server_addr), link.mac_b).unwrap();
        }
        for client_addr in ["198.51.100.2", "2001:db8:100::2"]
            .into_iter()
            .chain(CLIENT_EXTRA)
        {
            add_neigh(&server, &link.iface_b, ip(client_addr), link.mac_a).unwrap();
        }
        Lab {
            link,
            client,
            server,
        }
    }

    /// Loads the data plane, adds `rules`, and attaches it to the server end of the veth from
    /// inside the server namespace (the interface name resolves in the caller's namespace).
    fn dataplane(&self, rules: Vec<RuleSpec>) -> Dataplane {
        let mut dp = Dataplane::load(small()).expect("loading the data plane");
        for rule in rules {
            dp.add_rule(rule).unwrap();
        }
        let iface = self.link.iface_b.clone();
        let (dp, mode) = in_netns(&self.server, move || {
            let mode = dp.attach(&iface, AttachMode::Auto);
            (dp, mode)
        })
        .unwrap();
        let mode = mode.expect("attaching to the server end of the veth");
        eprintln!("attached to {} in {mode:?} mode", self.link.iface_b);
        dp
    }

    /// Sends [`DATAGRAMS`] per flow from the client and returns what each sink received, per
    /// source, after asserting that every flow sent them all.
    fn udp(&self, flows: &[Flow], sinks: Vec<UdpSink>) -> Vec<HashMap<IpAddr, u64>> {
        let sent = send_udp(
            &self.client,
            flows,
            DATAGRAMS,
            SEND_OVER,
            &AtomicBool::new(false),
        )
        .unwrap();
        assert!(
            sent.iter().all(|&n| n == DATAGRAMS as u64),
            "the sender gave up early: {sent:?}"
        );
        sinks
            .into_iter()
            .map(|sink| sink.finish(QUIET, Duration::from_secs(5)).unwrap())
            .collect()
    }
}

fn sources(dp: &Dataplane) -> HashMap<IpAddr, SourceStats> {
    dp.sources()
        .unwrap()
        .into_iter()
        .filter_map(|s| Some((s.addr?, s)))
        .collect()
}

fn source(all: &HashMap<IpAddr, SourceStats>, addr: &str) -> SourceStats {
    all.get(&ip(addr))
        .copied()
        .unwrap_or_else(|| panic!("XDP has no counters for {addr}; it has {all:#?}"))
}

fn received(counts: &HashMap<IpAddr, u64>, addr: &str) -> u64 {
    counts.get(&ip(addr)).copied().unwrap_or(0)
}

/// Every connection waiting on `listener` (non-blocking), by peer address.
fn accepted(listener: &TcpListener) -> Vec<IpAddr> {
    listener.set_nonblocking(true).unwrap();
    let mut peers = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match listener.accept() {
            Ok((_, peer)) => peers.push(peer.ip()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("accept: {e}"),
        }
        assert!(Instant::now() < deadline, "accept loop did not end");
    }
    peers.sort();
    peers
}

#[test]
fn blocked_sources_are_dropped_and_others_delivered_over_a_veth() {
    require_root!();
    let lab = Lab::new();
    let (allowed4, blocked4) = ("198.51.100.10", "198.51.100.12");
    let (allowed6, blocked6) = ("2001:db8:100::10", "2001:db8:100::11");
    let dp = lab.dataplane(vec![
        RuleSpec::drop(target(blocked4)),
        RuleSpec::drop(target(blocked6)),
    ]);

    // UDP, first: nothing else has come from these sources yet, so the counts are exact.
    let sink4 = UdpSink::bind(&lab.server, format!("{SERVER4}:9000").parse().unwrap()).unwrap();
    let sink6 = UdpSink::bind(&lab.server, format!("[{SERVER6}]:9000").parse().unwrap()).unwrap();
    let flow = |src: &str, sink: &UdpSink| Flow {
        src: ip(src),
        dst: sink.local_addr(),
    };
    let flows = [
        flow(allowed4, &sink4),
        flow(blocked4, &sink4),
        flow(allowed6, &sink6),
        flow(blocked6, &sink6),
    ];
    let got = lab.udp(&flows, vec![sink4, sink6]);
    let (got4, got6) = (&got[0], &got[1]);
    let n = DATAGRAMS as u64;
    assert_eq!(received(got4, allowed4), n, "IPv4 datagrams lost: {got4:?}");
    assert_eq!(received(got6, allowed6), n, "IPv6 datagrams lost: {got6:?}");
    assert_eq!(
        received(got4, blocked4),
        0,
        "blocked IPv4 source got through"
    );
    assert_eq!(
        received(got6, blocked6),
        0,
        "blocked IPv6 source got through"
    );

    let seen = sources(&dp);
    for addr in [allowed4, allowed6] {
        let s = source(&seen, addr);
        assert_eq!((s.packets, s.dropped), (n, 0), "{addr}: {s:?}");
        assert!(s.bytes >= n * 28, "{addr}: {s:?}");
        assert!(
            s.first_seen_ns > 0 && s.last_seen_ns >= s.first_seen_ns,
            "{s:?}"
        );
    }
    for addr in [blocked4, blocked6] {
        let s = source(&seen, addr);
        assert_eq!((s.packets, s.dropped), (n, n), "{addr}: {s:?}");
        assert!(s.bytes >= n * 28, "{addr}: {s:?}");
    }
    let stats = dp.stats().unwrap().counters;
    assert_eq!(stats[Stat::DroppedExact as usize], 2 * n, "{stats:?}");
    assert_eq!(stats[Stat::DroppedPrefix as usize], 0, "{stats:?}");
    assert!(stats[Stat::Seen as usize] >= 4 * n, "{stats:?}");

    // TCP from the same sources: a blocked one's SYNs vanish (a timeout, not a reset); the others
    // connect, and the server sees each connection come from the address it was made from.
    let listen4 = tcp_listen(&lab.server, format!("{SERVER4}:9100").parse().unwrap()).unwrap();
    let listen6 = tcp_listen(&lab.server, format!("[{SERVER6}]:9100").parse().unwrap()).unwrap();
    let to4 = listen4.local_addr().unwrap();
    let to6 = listen6.local_addr().unwrap();
    let mut streams = Vec::new();
    for (src, to) in [(allowed4, to4), (allowed6, to6)] {
        let stream = tcp_connect_from(&lab.client, ip(src), to, CONNECT_TIMEOUT)
            .unwrap()
            .unwrap_or_else(|e| panic!("TCP from unblocked {src} to {to} failed: {e}"));
        assert_eq!(stream.local_addr().unwrap().ip(), ip(src));
        streams.push(stream);
    }
    for (src, to) in [(blocked4, to4), (blocked6, to6)] {
        match tcp_connect_from(&lab.client, ip(src), to, CONNECT_TIMEOUT).unwrap() {
            Ok(_) => panic!("TCP from blocked {src} to {to} connected"),
            Err(e) => assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{src} → {to}: {e}"),
        }
    }
    assert_eq!(accepted(&listen4), [ip(allowed4)]);
    assert_eq!(accepted(&listen6), [ip(allowed6)]);
    drop(streams);

    // Counters after TCP: at least the SYN (and, allowed, the handshake's ACK) on top of UDP.
    let seen = sources(&dp);
    for addr in [allowed4, allowed6] {
        let s = source(&seen, addr);
        assert!(s.packets >= n + 2 && s.dropped == 0, "{addr}: {s:?}");
    }
    let mut dropped = 0;
    for addr in [blocked4, blocked6] {
        let s = source(&seen, addr);
        assert!(s.packets > n && s.dropped == s.packets, "{addr}: {s:?}");
        dropped += s.dropped;
    }
    let stats = dp.stats().unwrap().counters;
    assert_eq!(stats[Stat::DroppedExact as usize], dropped, "{stats:?}");
    // Sources nobody blocked were never dropped, whatever else crossed the veth.
    for s in seen.values() {
        let addr = s.addr.unwrap();
        if addr != ip(blocked4) && addr != ip(blocked6) {
            assert_eq!(s.dropped, 0, "{s:?}");
        }
    }
}

#[test]
fn a_port_scoped_rule_drops_only_that_port() {
    require_root!();
    let lab = Lab::new();
    let scoped = |addr: &str| RuleSpec {
        target: target(addr),
        action: Action::Drop,
        scope: Scope {
            dst: None,
            proto: Some(Proto::Udp),
            port: Some(9001),
        },
        ttl: None,
    };
    let (scoped4, free4) = ("198.51.100.10", "198.51.100.11");
    let (scoped6, free6) = ("2001:db8:100::10", "2001:db8:100::11");
    let dp = lab.dataplane(vec![scoped(scoped4), scoped(scoped6)]);

    let bind = |addr: &str| UdpSink::bind(&lab.server, addr.parse().unwrap()).unwrap();
    let sinks = [
        bind(&format!("{SERVER4}:9001")),
        bind(&format!("{SERVER4}:9002")),
        bind(&format!("[{SERVER6}]:9001")),
        bind(&format!("[{SERVER6}]:9002")),
    ];
    let flows: Vec<Flow> = [(scoped4, free4, &sinks[..2]), (scoped6, free6, &sinks[2..])]
        .into_iter()
        .flat_map(|(a, b, sinks)| {
            [a, b].into_iter().flat_map(move |src| {
                sinks.iter().map(move |sink| Flow {
                    src: ip(src),
                    dst: sink.local_addr(),
                })
            })
        })
        .collect();
    assert_eq!(flows.len(), 8);
    let got = lab.udp(&flows, sinks.into());
    let n = DATAGRAMS as u64;
    for (family, scoped, free, to_9001, to_9002) in [
        ("IPv4", scoped4, free4, &got[0], &got[1]),
        ("IPv6", scoped6, free6, &got[2], &got[3]),
    ] {
        assert_eq!(received(to_9001, scoped), 0, "{family}: {to_9001:?}");
        assert_eq!(received(to_9002, scoped), n, "{family}: {to_9002:?}");
        assert_eq!(received(to_9001, free), n, "{family}: {to_9001:?}");
        assert_eq!(received(to_9002, free), n, "{family}: {to_9002:?}");
    }

    let seen = sources(&dp);
    for addr in [scoped4, scoped6] {
        let s = source(&seen, addr);
        assert_eq!((s.packets, s.dropped), (2 * n, n), "{addr}: {s:?}");
    }
    for addr in [free4, free6] {
        let s = source(&seen, addr);
        assert_eq!((s.packets, s.dropped), (2 * n, 0), "{addr}: {s:?}");
    }
    let rules = dp.rules().unwrap();
    assert_eq!(rules.len(), 2);
    for rule in &rules {
        assert_eq!(rule.hits.dropped_packets, n, "{rule:?}");
    }
    let stats = dp.stats().unwrap().counters;
    assert_eq!(stats[Stat::DroppedExact as usize], 2 * n, "{stats:?}");
}

/// A browser-sized ClientHello written on a real connection crosses the veth as two segments
/// (1500-byte MTU); the data plane follows the flow into the second, and the reader's
/// reassembly gives the parser the whole hello: the SNI past byte 1500 is found. IPv4 and IPv6.
#[test]
fn a_hello_over_two_segments_yields_its_sni_over_a_veth() {
    use std::io::{Read as _, Write as _};
    use swarmwall::{
        l7,
        sources::hello::{HelloAssembler, Limits},
    };
    use swarmwall_integration::hello::browser_client_hello;
    use swarmwall_maps::L7_FLAG_CONT;

    require_root!();
    let lab = Lab::new();
    let mut dp = lab.dataplane(Vec::new());
    let mut reader = dp.take_l7_reader().unwrap();
    let hello = browser_client_hello("late.lab.example");
    for (client, server) in [("198.51.100.10", SERVER4), ("2001:db8:100::10", SERVER6)] {
        let to = std::net::SocketAddr::new(ip(server), 443);
        let listener = tcp_listen(&lab.server, to).unwrap();
        let mut stream = tcp_connect_from(&lab.client, ip(client), to, CONNECT_TIMEOUT)
            .unwrap()
            .unwrap();
        stream.write_all(&hello).unwrap();
        let (mut conn, _) = listener.accept().unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut got = vec![0; hello.len()];
        conn.read_exact(&mut got).unwrap();
        assert_eq!(got, hello, "the server got the hello intact");

        let mut records = Vec::new();
        let mut hellos = Vec::new();
        let mut a = HelloAssembler::new(Limits::default());
        let deadline = Instant::now() + Duration::from_secs(3);
        while hellos.is_empty() && Instant::now() < deadline {
            while let Some(ev) = reader.next_event() {
                records.push((ev.offset, ev.len, ev.flags));
                a.push(&ev, 0, &mut |p| {
                    hellos.extend(l7::from_payload(
                        p.kind,
                        p.ts_ns,
                        swarmwall::addr::from_key(&p.src),
                        swarmwall::addr::from_key(&p.dst),
                        p.dst_port,
                        &p.data,
                    ))
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            records.iter().any(|&(_, _, f)| f & L7_FLAG_CONT != 0),
            "no continuation segment was sampled: {records:?}"
        );
        assert_eq!(hellos.len(), 1, "{hellos:?} from {records:?}");
        assert_eq!(hellos[0].src, ip(client));
        assert_eq!(hellos[0].dst_port, 443);
        assert_eq!(hellos[0].host.as_deref(), Some("late.lab.example"));
    }
    assert_eq!(dp.stat(Stat::L7HelloContinued).unwrap(), 2);
}
