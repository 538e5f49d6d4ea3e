//! The XDP program in the real kernel, driven by `BPF_PROG_TEST_RUN`: packet bytes in, action and
//! map deltas out. Needs root.

mod common;

use common::{ip, small};
use std::{thread::sleep, time::Duration};

use swarmwall::{Action, Dataplane, Mode, Prog, Proto, RuleSpec, Scope, Sizes, Target};
use swarmwall_integration::{
    packets::{Frame, arp_request, truncate},
    require_root,
};
use swarmwall_maps::{STAT_COUNT, Stat};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const VICTIM: &str = "203.0.113.10";
const OTHER_SITE: &str = "203.0.113.20";

fn rule(target: &str, action: Action, scope: Scope) -> RuleSpec {
    RuleSpec {
        target: target.parse::<Target>().unwrap(),
        action,
        scope,
        ttl: None,
    }
}

fn site(dst: &str, proto: Option<Proto>, port: Option<u16>) -> Scope {
    Scope {
        dst: Some(ip(dst)),
        proto,
        port,
    }
}

/// The data plane with the rule set every table case runs against.
fn loaded() -> Dataplane {
    let mut dp = Dataplane::load(small()).expect("load");
    let any = Scope::default();
    dp.allow("198.51.100.5".parse().unwrap()).unwrap();
    for spec in [
        rule("192.0.2.66", Action::Drop, any),
        rule("198.51.100.0/24", Action::Drop, any),
        rule(
            "192.0.2.80",
            Action::Drop,
            site(VICTIM, Some(Proto::Tcp), Some(80)),
        ),
        rule("192.0.2.80", Action::Drop, site(OTHER_SITE, None, None)),
        rule("192.0.2.77", Action::Observe, any),
        rule("2001:db8::66", Action::Drop, any),
        rule("2001:db8:bad::/48", Action::Drop, any),
        rule(
            "2001:db8::80",
            Action::Drop,
            Scope {
                port: Some(443),
                ..any
            },
        ),
        // Nested prefixes: the /16 rule scoped to one site must still apply inside the /24,
        // whose own rule is only observing.
        rule("100.64.0.0/16", Action::Drop, site(VICTIM, None, None)),
        rule("100.64.7.0/24", Action::Observe, any),
    ] {
        dp.add_rule(spec).unwrap();
    }
    dp
}

fn udp(src: &str, dst: &str, dport: u16) -> Frame {
    Frame::udp(ip(src), ip(dst), 40000, dport)
}

fn tcp(src: &str, dst: &str, dport: u16) -> Frame {
    Frame::tcp(ip(src), ip(dst), 40000, dport)
}

struct Case {
    name: &'static str,
    frame: Vec<u8>,
    action: u32,
    /// The verdict slot the packet must land in.
    stat: Stat,
    /// A detail slot that must also move by one.
    extra: Option<Stat>,
}

fn case(name: &'static str, frame: Vec<u8>, action: u32, stat: Stat) -> Case {
    Case {
        name,
        frame,
        action,
        stat,
        extra: None,
    }
}

fn with_extra(mut c: Case, extra: Stat) -> Case {
    c.extra = Some(extra);
    c
}

fn cases() -> Vec<Case> {
    let mut garbage = vec![0xa5u8; 60];
    garbage[12] = 0x12;
    garbage[13] = 0x34;
    let mut bad_version = udp("192.0.2.66", VICTIM, 53).build();
    bad_version[14] = 0x55;
    let full_tcp = tcp("192.0.2.66", VICTIM, 80).build();
    let scoped_tcp = tcp("192.0.2.80", VICTIM, 80).build();
    vec![
        case(
            "unknown source passes",
            udp("192.0.2.1", VICTIM, 53).build(),
            XDP_PASS,
            Stat::Passed,
        ),
        case(
            "exact rule drops",
            udp("192.0.2.66", VICTIM, 53).build(),
            XDP_DROP,
            Stat::DroppedExact,
        ),
        case(
            "prefix rule drops",
            udp("198.51.100.9", VICTIM, 53).build(),
            XDP_DROP,
            Stat::DroppedPrefix,
        ),
        case(
            "allow list beats prefix",
            udp("198.51.100.5", VICTIM, 53).build(),
            XDP_PASS,
            Stat::Allowed,
        ),
        case(
            "neighbour of prefix passes",
            udp("198.51.101.9", VICTIM, 53).build(),
            XDP_PASS,
            Stat::Passed,
        ),
        case(
            "scoped rule matches",
            scoped_tcp.clone(),
            XDP_DROP,
            Stat::DroppedExact,
        ),
        case(
            "scoped rule: other port",
            tcp("192.0.2.80", VICTIM, 443).build(),
            XDP_PASS,
            Stat::Passed,
        ),
        case(
            "scoped rule: other proto",
            udp("192.0.2.80", VICTIM, 80).build(),
            XDP_PASS,
            Stat::Passed,
        ),
        case(
            "scoped rule: other site",
            tcp("192.0.2.80", "203.0.113.30", 80).build(),
            XDP_PASS,
            Stat::Passed,
        ),
        case(
            "second scoped rule, same source",
            udp("192.0.2.80", OTHER_SITE, 9).build(),
            XDP_DROP,
            Stat::DroppedExact,
        ),
        case(
            "observe-only rule passes",
            udp("192.0.2.77", VICTIM, 53).build(),
            XDP_PASS,
            Stat::Observed,
        ),
        case(
            "802.1Q tag",
            udp("192.0.2.66", VICTIM, 53).vlan(0x8100, 7).build(),
            XDP_DROP,
            Stat::DroppedExact,
        ),
        case(
            "QinQ tags, scoped port behind them",
            tcp("192.0.2.80", VICTIM, 80)
                .vlan(0x88a8, 100)
                .vlan(0x8100, 7)
                .build(),
            XDP_DROP,
            Stat::DroppedExact,
        ),
        case(
            "IPv4 options skipped to reach the port",
            tcp("192.0.2.80", VICTIM, 80)
                .ipv4_options(&[1, 1, 1, 1, 0x94, 4, 0, 0])
                .build(),
            XDP_DROP,
            Stat::DroppedExact,
        ),
        case(
            "first fragment has ports",
            tcp("192.0.2.80", VICTIM, 80).ipv4_fragment(0, true).build(),
            XDP_DROP,
            Stat::DroppedExact,
        ),
        with_extra(
            case(
                "non-first fragment: no ports, port rule can't match",
                tcp("192.0.2.80", VICTIM, 80)
                    .ipv4_fragment(185, false)
                    .payload(&[0; 16])
                    .build(),
                XDP_PASS,
                Stat::Passed,
            ),
            Stat::Fragment,
        ),
        with_extra(
            case(
                "non-first fragment of a blocked source still drops",
                udp("192.0.2.66", VICTIM, 53)
                    .ipv4_fragment(185, false)
                    .payload(&[0; 16])
                    .build(),
                XDP_DROP,
                Stat::DroppedExact,
            ),
            Stat::Fragment,
        ),
        case(
            "IPv6 exact",
            udp("2001:db8::66", "2001:db8:1::1", 53).build(),
            XDP_DROP,
            Stat::DroppedExact,
        ),
        case(
            "IPv6 prefix",
            udp("2001:db8:bad:1::9", "2001:db8:1::1", 53).build(),
            XDP_DROP,
            Stat::DroppedPrefix,
        ),
        case(
            "IPv6 unknown",
            udp("2001:db8:beef::9", "2001:db8:1::1", 53).build(),
            XDP_PASS,
            Stat::Passed,
        ),
        case(
            "IPv6 extension headers skipped to reach the port",
            tcp("2001:db8::80", "2001:db8:1::1", 443)
                .ipv6_ext(0, 8)
                .ipv6_ext(43, 24)
                .ipv6_ext(60, 16)
                .build(),
            XDP_DROP,
            Stat::DroppedExact,
        ),
        case(
            "IPv6 first fragment has ports",
            tcp("2001:db8::80", "2001:db8:1::1", 443)
                .ipv6_ext(0, 8)
                .ipv6_fragment(0, true)
                .build(),
            XDP_DROP,
            Stat::DroppedExact,
        ),
        with_extra(
            case(
                "IPv6 non-first fragment",
                tcp("2001:db8::80", "2001:db8:1::1", 443)
                    .ipv6_fragment(100, false)
                    .payload(&[0; 16])
                    .build(),
                XDP_PASS,
                Stat::Passed,
            ),
            Stat::Fragment,
        ),
        case(
            "nested prefix inherits covering scoped drop",
            udp("100.64.7.7", VICTIM, 53).build(),
            XDP_DROP,
            Stat::DroppedPrefix,
        ),
        case(
            "nested prefix, other site: only the observe rule",
            udp("100.64.7.7", OTHER_SITE, 53).build(),
            XDP_PASS,
            Stat::Observed,
        ),
        case("ARP is not IP", arp_request(), XDP_PASS, Stat::NotIp),
        case("unknown ethertype", garbage, XDP_PASS, Stat::NotIp),
        case(
            "IPv4 ethertype, version 5",
            bad_version,
            XDP_PASS,
            Stat::ParseFailed,
        ),
        case(
            "Ethernet header only",
            truncate(&full_tcp, 14),
            XDP_PASS,
            Stat::ParseFailed,
        ),
        case(
            "truncated in the VLAN tag",
            truncate(&udp("192.0.2.66", VICTIM, 53).vlan(0x8100, 7).build(), 16),
            XDP_PASS,
            Stat::ParseFailed,
        ),
        case(
            "truncated in the IPv4 header",
            truncate(&full_tcp, 14 + 19),
            XDP_PASS,
            Stat::ParseFailed,
        ),
        case(
            "truncated in the IPv6 header",
            truncate(&udp("2001:db8::66", "2001:db8:1::1", 53).build(), 14 + 39),
            XDP_PASS,
            Stat::ParseFailed,
        ),
        with_extra(
            case(
                "truncated TCP header: source rule still applies",
                truncate(&full_tcp, 14 + 20 + 10),
                XDP_DROP,
                Stat::DroppedExact,
            ),
            Stat::L4Truncated,
        ),
        with_extra(
            case(
                "truncated TCP header: port-scoped rule cannot match",
                truncate(&scoped_tcp, 14 + 20 + 10),
                XDP_PASS,
                Stat::Passed,
            ),
            Stat::L4Truncated,
        ),
    ]
}

fn snapshot(dp: &Dataplane) -> [u64; STAT_COUNT] {
    dp.stats().unwrap().counters
}

#[test]
fn every_case_gets_its_action_and_exactly_its_counters() {
    require_root!();
    let mut dp = loaded();
    let mut failures = Vec::new();
    for c in cases() {
        let before = snapshot(&dp);
        let r = dp.test_run(Prog::Main, &c.frame, 1).unwrap();
        let after = snapshot(&dp);
        let mut expect = before;
        expect[Stat::Seen as usize] += 1;
        expect[c.stat as usize] += 1;
        if let Some(x) = c.extra {
            expect[x as usize] += 1;
        }
        // Source counting is not a verdict; ignore it here (it has its own test).
        expect[Stat::SourceInsertFailed as usize] = after[Stat::SourceInsertFailed as usize];
        if r.action != c.action || after != expect {
            let diff: Vec<String> = Stat::ALL
                .iter()
                .filter(|s| after[**s as usize] != before[**s as usize])
                .map(|s| format!("{}+{}", s.name(), after[*s as usize] - before[*s as usize]))
                .collect();
            failures.push(format!(
                "{}: action {} (want {}), moved [{}] (want {:?}{})",
                c.name,
                r.action,
                c.action,
                diff.join(" "),
                c.stat,
                c.extra.map_or(String::new(), |x| format!(" + {x:?}"))
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} case(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn counters_and_hits_are_exact() {
    require_root!();
    let mut dp = loaded();
    const N: u32 = 1000;
    let passed = udp("192.0.2.1", VICTIM, 53).build();
    let exact = udp("192.0.2.66", VICTIM, 53).payload(&[0; 100]).build();
    let prefix = udp("198.51.100.9", VICTIM, 53).build();
    for f in [&passed, &exact, &prefix] {
        dp.test_run(Prog::Main, f, N).unwrap();
    }
    let sources = dp.sources().unwrap();
    let get = |a: &str| {
        *sources
            .iter()
            .find(|s| s.addr == Some(ip(a)))
            .unwrap_or_else(|| panic!("{a} not among sources: {sources:?}"))
    };
    let n = N as u64;
    let p = get("192.0.2.1");
    assert_eq!(
        (p.packets, p.bytes, p.dropped),
        (n, n * passed.len() as u64, 0)
    );
    assert!(
        p.first_seen_ns > 0 && p.first_seen_ns <= p.last_seen_ns,
        "{p:?}"
    );
    let e = get("192.0.2.66");
    assert_eq!(
        (e.packets, e.bytes, e.dropped),
        (n, n * exact.len() as u64, n)
    );
    let x = get("198.51.100.9");
    assert_eq!(
        (x.packets, x.bytes, x.dropped),
        (n, n * prefix.len() as u64, n)
    );
    assert_eq!(sources.len(), 3, "{sources:?}");

    let rules = dp.rules().unwrap();
    let hits = |t: &str| {
        let t: Target = t.parse().unwrap();
        rules
            .iter()
            .find(|r| r.entry.spec.target == t)
            .unwrap()
            .hits
    };
    assert_eq!(hits("192.0.2.66").packets, n);
    assert_eq!(hits("192.0.2.66").dropped_bytes, n * exact.len() as u64);
    assert_eq!(hits("198.51.100.0/24").dropped_packets, n);
    assert_eq!(hits("192.0.2.77").packets, 0);
    let stats = dp.stats().unwrap().counters;
    assert_eq!(stats[Stat::Seen as usize], 3 * n);
    assert_eq!(stats[Stat::DroppedExact as usize], n);
}

#[test]
fn observe_mode_passes_everything_and_counts_would_drops() {
    require_root!();
    let mut dp = loaded();
    dp.set_mode(Mode::Observe).unwrap();
    assert_eq!(dp.mode().unwrap(), Mode::Observe);
    let f = udp("192.0.2.66", VICTIM, 53).build();
    assert_eq!(dp.test_run(Prog::Main, &f, 10).unwrap().action, XDP_PASS);
    let g = udp("198.51.100.9", VICTIM, 53).build();
    assert_eq!(dp.test_run(Prog::Main, &g, 10).unwrap().action, XDP_PASS);
    let stats = dp.stats().unwrap().counters;
    assert_eq!(stats[Stat::Observed as usize], 20);
    assert_eq!(
        stats[Stat::DroppedExact as usize] + stats[Stat::DroppedPrefix as usize],
        0
    );
    let rules = dp.rules().unwrap();
    let r = rules
        .iter()
        .find(|r| r.entry.spec.target == "192.0.2.66".parse().unwrap())
        .unwrap();
    assert_eq!((r.hits.packets, r.hits.dropped_packets), (10, 0));
    // Back to enforcing, live: the same packet drops.
    dp.set_mode(Mode::Enforce).unwrap();
    assert_eq!(dp.test_run(Prog::Main, &f, 1).unwrap().action, XDP_DROP);
}

#[test]
fn expired_rule_stops_dropping_in_the_kernel() {
    require_root!();
    let mut dp = Dataplane::load(small()).unwrap();
    let mut spec = rule("192.0.2.99", Action::Drop, Scope::default());
    spec.ttl = Some(Duration::from_millis(300));
    dp.add_rule(spec).unwrap();
    let f = udp("192.0.2.99", VICTIM, 53).build();
    assert_eq!(dp.test_run(Prog::Main, &f, 1).unwrap().action, XDP_DROP);
    // The kernel's coarse clock ticks every few ms; wait well past the expiry.
    sleep(Duration::from_millis(400));
    assert_eq!(dp.test_run(Prog::Main, &f, 1).unwrap().action, XDP_PASS);
    // Userspace then clears it out of the maps.
    assert_eq!(dp.remove_expired().unwrap().len(), 1);
    assert!(dp.rules().unwrap().is_empty());
}

#[test]
fn removing_rules_restores_passing_and_allow_can_be_withdrawn() {
    require_root!();
    let mut dp = loaded();
    let allowed = udp("198.51.100.5", VICTIM, 53).build();
    assert_eq!(
        dp.test_run(Prog::Main, &allowed, 1).unwrap().action,
        XDP_PASS
    );
    dp.disallow("198.51.100.5".parse().unwrap()).unwrap();
    assert_eq!(
        dp.test_run(Prog::Main, &allowed, 1).unwrap().action,
        XDP_DROP
    );
    let ids: Vec<_> = dp.rules().unwrap().into_iter().map(|r| r.id).collect();
    for id in ids {
        dp.remove_rule(id).unwrap();
    }
    for f in [
        allowed,
        udp("192.0.2.66", VICTIM, 53).build(),
        udp("2001:db8:bad::1", "2001:db8::1", 1).build(),
    ] {
        assert_eq!(dp.test_run(Prog::Main, &f, 1).unwrap().action, XDP_PASS);
    }
}

#[test]
fn allow_overlap_is_reported_for_callers_to_refuse() {
    require_root!();
    let dp = loaded();
    assert!(dp.covers_allowed(&"198.51.0.0/16".parse().unwrap()));
    assert!(!dp.covers_allowed(&"198.52.0.0/16".parse().unwrap()));
}

/// The source cache only caches: with a 2-slot cache, interleaved sources evict each other on
/// nearly every packet, a rule added mid-stream must take effect at once, and every count must
/// still come out exact (the LRU totals plus what the slots still hold).
#[test]
fn source_cache_evictions_and_rule_changes_keep_counts_exact() {
    require_root!();
    let mut dp = Dataplane::load(Sizes {
        cache: 2,
        ..small()
    })
    .unwrap();
    let sources: Vec<String> = (1..=6).map(|i| format!("192.0.2.{i}")).collect();
    let frames: Vec<Vec<u8>> = sources.iter().map(|s| udp(s, VICTIM, 53).build()).collect();
    for round in 0..40u64 {
        if round == 20 {
            // Source 3 was cached as "no rule"; from now on it must drop.
            dp.add_rule(rule("192.0.2.3", Action::Drop, Scope::default()))
                .unwrap();
        }
        for (i, f) in frames.iter().enumerate() {
            let want = if i == 2 && round >= 20 {
                XDP_DROP
            } else {
                XDP_PASS
            };
            assert_eq!(
                dp.test_run(Prog::Main, f, 1 + i as u32).unwrap().action,
                want,
                "round {round}, source {i}"
            );
        }
    }
    let got = dp.sources().unwrap();
    for (i, s) in sources.iter().enumerate() {
        let st = got
            .iter()
            .find(|x| x.addr == Some(ip(s)))
            .unwrap_or_else(|| panic!("{s} missing"));
        let per_round = 1 + i as u64;
        assert_eq!(st.packets, 40 * per_round, "{s}");
        assert_eq!(st.bytes, 40 * per_round * frames[i].len() as u64, "{s}");
        assert_eq!(st.dropped, if i == 2 { 20 * per_round } else { 0 }, "{s}");
        assert!(
            st.first_seen_ns > 0 && st.first_seen_ns <= st.last_seen_ns,
            "{st:?}"
        );
    }
    // The same with the cache bypassed: every packet takes the cold path.
    dp.set_cache_bypass(true).unwrap();
    dp.test_run(Prog::Main, &frames[0], 10).unwrap();
    let st = dp
        .sources()
        .unwrap()
        .into_iter()
        .find(|x| x.addr == Some(ip(&sources[0])))
        .unwrap();
    assert_eq!(st.packets, 50);
}
