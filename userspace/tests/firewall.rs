//! The nftables backend against the real `nft` and kernel, in namespaces each test creates
//! (the table lives and dies with its namespace, so a failed test leaves nothing behind).
//! Root only.

use std::{
    collections::BTreeMap,
    net::{SocketAddr, UdpSocket},
    time::{Duration, SystemTime},
};

use swarmwall::{
    Action, Mode, Proto, Scope,
    addr::Target,
    backend::{Context, Desired, Health, RuleBackend as _},
    firewall::{NftConfig, Nftables, nft},
    store::{AllowRecord, Op, RuleRecord},
};
use swarmwall_integration::{
    netns::{NetNs, VethPair, in_netns},
    require_root,
};

const HOST: &str = "10.77.0.1";
const CLIENT: &str = "10.77.0.2";

fn rule(id: u64, target: &str, scope: Scope, ttl: Option<Duration>) -> RuleRecord {
    let now = SystemTime::now();
    RuleRecord {
        id,
        target: target.parse().unwrap(),
        action: Action::Drop,
        scope,
        expires_at: ttl.map(|t| now + t),
        created_at: now,
        actor: "test".into(),
        reason: None,
    }
}

fn udp_port(port: u16) -> Scope {
    Scope {
        dst: Some(HOST.parse().unwrap()),
        proto: Some(Proto::Udp),
        port: Some(port),
    }
}

fn ctx() -> Context<'static> {
    Context {
        config_allow: &[],
        now: SystemTime::now(),
    }
}

/// The table as `nft list` prints it, for assertions and for failure messages.
fn ruleset(ns: &NetNs) -> String {
    ns.run(&["nft", "list", "ruleset"]).unwrap_or_default()
}

fn listing(ns: &NetNs) -> nft::listing::Listing {
    in_netns(ns, || nft::list(&NftConfig::default()))
        .unwrap()
        .unwrap()
        .expect("the table exists")
}

/// Whether a datagram from the client to `port` on the host arrives.
fn arrives(host: &NetNs, client: &NetNs, port: u16) -> bool {
    let rx = in_netns(host, || UdpSocket::bind((HOST, port)).unwrap()).unwrap();
    rx.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let to: SocketAddr = format!("{HOST}:{port}").parse().unwrap();
    in_netns(client, || {
        let tx = UdpSocket::bind((CLIENT, 0)).unwrap();
        for _ in 0..3 {
            tx.send_to(b"x", to).unwrap();
        }
    })
    .unwrap();
    let mut buf = [0u8; 8];
    rx.recv_from(&mut buf).is_ok()
}

fn pair() -> (NetNs, NetNs, VethPair) {
    let host = NetNs::new("swfw-h").unwrap();
    let client = NetNs::new("swfw-c").unwrap();
    let veth = VethPair::new(
        &host,
        &client,
        &format!("{HOST}/24"),
        &format!("{CLIENT}/24"),
    )
    .unwrap();
    (host, client, veth)
}

#[test]
fn a_scoped_rule_becomes_an_element_with_its_timeout_and_drops_only_on_its_port() {
    require_root!();
    let (host, client, _veth) = pair();
    assert!(arrives(&host, &client, 5353) && arrives(&host, &client, 5354));
    let mut fw = Nftables::new(NftConfig::default());
    let r = rule(1, CLIENT, udp_port(5353), Some(Duration::from_secs(600)));
    in_netns(&host, || fw.apply(&[Op::AddRule(r)], &ctx()))
        .unwrap()
        .unwrap();
    let l = listing(&host);
    let (e, held) = l.elems.iter().next().expect("one element");
    assert_eq!(
        e.shape.set_name(),
        "drop_v4_32_dst_proto_port",
        "{}",
        ruleset(&host)
    );
    assert_eq!(e.to_string(), format!("{CLIENT} . {HOST} . 17 . 5353"));
    let left = held.expires_s.expect("a timeout");
    assert!((595..=600).contains(&left), "expires in {left}s");
    assert!(!arrives(&host, &client, 5353), "the rule's port is dropped");
    assert!(
        arrives(&host, &client, 5354),
        "another port is not:\n{}",
        ruleset(&host)
    );
    let hits = in_netns(&host, || fw.hits(&[1])).unwrap().unwrap();
    assert!(hits[0].1.dropped >= 3, "{hits:?}");
    assert!(matches!(fw.health(), Health::Ok(_)));
}

#[test]
fn global_observe_mode_counts_and_the_allow_list_accepts_first() {
    require_root!();
    let (host, client, _veth) = pair();
    let mut fw = Nftables::new(NftConfig::default());
    let block = rule(1, "10.77.0.0/24", Scope::default(), None);
    in_netns(&host, || fw.apply(&[Op::AddRule(block)], &ctx()))
        .unwrap()
        .unwrap();
    assert!(!arrives(&host, &client, 7000), "the /24 drops the client");
    let allow = AllowRecord {
        target: CLIENT.parse().unwrap(),
        created_at: SystemTime::now(),
        actor: "test".into(),
        reason: None,
    };
    in_netns(&host, || fw.apply(&[Op::AddAllow(allow.clone())], &ctx()))
        .unwrap()
        .unwrap();
    assert!(
        arrives(&host, &client, 7000),
        "allowed first:\n{}",
        ruleset(&host)
    );
    in_netns(&host, || fw.apply(&[Op::RemoveAllow(allow)], &ctx()))
        .unwrap()
        .unwrap();
    assert!(!arrives(&host, &client, 7000));
    let to_observe = Op::SetMode {
        from: Mode::Enforce,
        to: Mode::Observe,
    };
    in_netns(&host, || fw.apply(&[to_observe], &ctx()))
        .unwrap()
        .unwrap();
    assert!(arrives(&host, &client, 7000), "observe mode never drops");
    let hits = in_netns(&host, || fw.hits(&[1])).unwrap().unwrap();
    assert!(hits[0].1.packets >= 6 && hits[0].1.dropped == 0, "{hits:?}");
}

#[test]
fn reconcile_restores_a_deleted_element_removes_a_stray_one_and_never_flushes() {
    require_root!();
    let host = NetNs::new("swfw-r").unwrap();
    let mut fw = Nftables::new(NftConfig::default());
    let mut rules = BTreeMap::new();
    for (id, t) in [(1, "192.0.2.1"), (2, "192.0.2.2"), (3, "198.51.100.0/24")] {
        rules.insert(
            id,
            rule(id, t, Scope::default(), Some(Duration::from_secs(3600))),
        );
    }
    let want = Desired {
        rules: &rules,
        allow: vec!["10.0.0.0/8".parse::<Target>().unwrap()],
        mode: Mode::Enforce,
        now: SystemTime::now(),
    };
    let first = in_netns(&host, || fw.reconcile(&want)).unwrap().unwrap();
    assert_eq!(first.added, 4);
    // By hand: one of swarmwall's elements deleted, a stranger added to its set.
    host.run(&[
        "nft",
        "delete",
        "element",
        "inet",
        "swarmwall",
        "drop_v4_32",
        "{ 192.0.2.1 }",
    ])
    .unwrap();
    host.run(&[
        "nft",
        "add",
        "element",
        "inet",
        "swarmwall",
        "drop_v4_32",
        "{ 203.0.113.9 }",
    ])
    .unwrap();
    let mut fresh = Nftables::new(NftConfig::default());
    let second = in_netns(&host, || fresh.reconcile(&want)).unwrap().unwrap();
    assert_eq!(
        (second.added, second.removed, second.retimed),
        (1, 1, 0),
        "{second:?}"
    );
    assert_eq!(fresh.drift(), 2);
    let mut held: Vec<String> = listing(&host).elems.keys().map(|e| e.to_string()).collect();
    held.sort();
    assert_eq!(held, ["10.0.0.0", "192.0.2.1", "192.0.2.2", "198.51.100.0"]);
    // Nothing to do the third time.
    let third = in_netns(&host, || fresh.reconcile(&want)).unwrap().unwrap();
    assert_eq!(fresh.drift(), 0, "{third:?}");
}

#[test]
fn the_kernel_expires_an_element_by_itself_and_removing_it_afterwards_still_works() {
    require_root!();
    let host = NetNs::new("swfw-e").unwrap();
    let mut fw = Nftables::new(NftConfig::default());
    let r = rule(
        1,
        "192.0.2.7",
        Scope::default(),
        Some(Duration::from_secs(1)),
    );
    in_netns(&host, || fw.apply(&[Op::AddRule(r.clone())], &ctx()))
        .unwrap()
        .unwrap();
    assert_eq!(listing(&host).elems.len(), 1);
    std::thread::sleep(Duration::from_millis(2500));
    assert!(listing(&host).elems.is_empty(), "{}", ruleset(&host));
    // The store's own expiry comes later: deleting the missing element must not fail.
    in_netns(&host, || fw.apply(&[Op::RemoveRule(r)], &ctx()))
        .unwrap()
        .unwrap();
    assert!(
        in_netns(&host, || nft::remove_table(&NftConfig::default()))
            .unwrap()
            .unwrap()
    );
    assert!(!ruleset(&host).contains("swarmwall"));
    assert!(
        !in_netns(&host, || nft::remove_table(&NftConfig::default()))
            .unwrap()
            .unwrap()
    );
}

#[test]
fn a_missing_nft_binary_is_a_clear_error_and_an_unhealthy_backend() {
    require_root!();
    let mut fw = Nftables::new(NftConfig {
        nft: "/nonexistent/nft".into(),
        ..NftConfig::default()
    });
    let r = rule(1, "192.0.2.7", Scope::default(), None);
    let e = fw.apply(&[Op::AddRule(r)], &ctx()).unwrap_err().to_string();
    assert!(
        e.contains("/nonexistent/nft") && e.contains("apt install nftables"),
        "{e}"
    );
    match fw.health() {
        Health::Degraded(why) => assert!(why.contains("/nonexistent/nft"), "{why}"),
        h => panic!("{h:?}"),
    }
    assert_eq!(fw.elements(), 0, "a failed change holds nothing");
}
