//! `swarmwall block test` against the kernel: for a table of packets, the pure decision of
//! `swarmwall::verdict` (what the CLI shows) must match what the XDP program does with the same
//! rules under `BPF_PROG_TEST_RUN`: the action, the counter slot, and the rules whose hit
//! counters move. Needs root.

mod common;

use std::{
    collections::BTreeMap,
    net::IpAddr,
    thread::sleep,
    time::{Duration, SystemTime},
};

use common::{ip, small};
use swarmwall::{
    Action, Dataplane, Mode, Prog, Proto, RuleSpec, Scope, Target,
    store::RuleRecord,
    verdict::{Outcome, Probe, decide},
};
use swarmwall_integration::{packets::Frame, require_root};
use swarmwall_maps::Stat;

const XDP_DROP: u32 = 1;
const SITE: &str = "203.0.113.10";
const OTHER: &str = "203.0.113.20";

fn scope(dst: Option<&str>, proto: Option<Proto>, port: Option<u16>) -> Scope {
    Scope {
        dst: dst.map(ip),
        proto,
        port,
    }
}

fn record(
    id: u64,
    target: &str,
    action: Action,
    scope: Scope,
    ttl: Option<Duration>,
) -> RuleRecord {
    let now = SystemTime::now();
    RuleRecord {
        id,
        target: target.parse::<Target>().unwrap(),
        action,
        scope,
        expires_at: ttl.map(|t| now + t),
        created_at: now,
        actor: "uid 0".into(),
        reason: None,
    }
}

/// Rules that make the kernel's order matter: exact before prefix, longest prefix first with
/// the covering prefixes' rules behind it, drop before observe, scopes, an expired rule, and
/// rules of nested prefixes that match the same packet.
fn rules() -> Vec<RuleRecord> {
    use Action::{Drop, Observe};
    let any = Scope::default();
    let tcp443 = scope(Some(SITE), Some(Proto::Tcp), Some(443));
    let other = scope(Some(OTHER), None, None);
    let udp = scope(None, Some(Proto::Udp), None);
    let port = |p| scope(None, None, Some(p));
    let ssh = scope(None, Some(Proto::Tcp), Some(22));
    let table: [(u64, &str, Action, Scope); 13] = [
        (1, "192.0.2.7", Observe, any),
        (2, "192.0.2.0/24", Drop, tcp443),
        (3, "192.0.0.0/16", Drop, other),
        (4, "192.0.2.8", Drop, tcp443),
        (5, "192.0.2.8", Observe, udp),
        (6, "192.0.2.9", Drop, any),
        (7, "192.0.2.0/26", Observe, port(53)),
        (8, "2001:db8::/32", Drop, udp),
        (9, "2001:db8:1::/48", Observe, any),
        (10, "2001:db8:1::7", Drop, ssh),
        (11, "192.0.2.0/24", Observe, port(53)),
        (12, "192.0.0.0/16", Drop, port(8080)),
        (13, "192.0.2.0/24", Drop, port(8080)),
    ];
    table
        .into_iter()
        .map(|(id, target, action, scope)| {
            // Rule 6 lives one second: expired by the time the packets run.
            let ttl = (id == 6).then_some(Duration::from_secs(1));
            record(id, target, action, scope, ttl)
        })
        .collect()
}

const ALLOW: &str = "192.0.2.100";

/// (source, destination, protocol, port) of each packet.
fn packets() -> Vec<(&'static str, &'static str, Proto, u16)> {
    use Proto::{Tcp, Udp};
    vec![
        ("192.0.2.7", SITE, Tcp, 443),
        ("192.0.2.7", SITE, Tcp, 80),
        ("192.0.2.7", OTHER, Udp, 53),
        ("192.0.2.8", SITE, Tcp, 443),
        ("192.0.2.8", SITE, Udp, 443),
        ("192.0.2.8", SITE, Udp, 53),
        ("192.0.2.8", OTHER, Tcp, 22),
        ("192.0.2.9", SITE, Tcp, 443),
        ("192.0.2.9", SITE, Udp, 9),
        ("192.0.2.100", SITE, Tcp, 443),
        ("192.0.2.200", SITE, Udp, 53),
        ("192.0.2.200", OTHER, Udp, 53),
        ("192.0.3.1", OTHER, Tcp, 80),
        ("192.0.2.20", SITE, Udp, 53),
        ("192.0.2.20", SITE, Tcp, 8080),
        ("192.0.2.200", SITE, Tcp, 8080),
        ("192.0.3.1", SITE, Tcp, 8080),
        ("198.51.100.1", SITE, Tcp, 443),
        ("2001:db8:1::7", "2001:db8:f::1", Tcp, 22),
        ("2001:db8:1::7", "2001:db8:f::1", Tcp, 23),
        ("2001:db8:1::7", "2001:db8:f::1", Udp, 22),
        ("2001:db8:2::1", "2001:db8:f::1", Udp, 53),
        ("2001:db8:2::1", "2001:db8:f::1", Tcp, 53),
    ]
}

fn stat_of(o: Outcome) -> Stat {
    match o {
        Outcome::Allowed => Stat::Allowed,
        Outcome::DroppedExact => Stat::DroppedExact,
        Outcome::DroppedPrefix => Stat::DroppedPrefix,
        Outcome::Observed => Stat::Observed,
        Outcome::Passed => Stat::Passed,
    }
}

fn hits(dp: &Dataplane, ids: &[u64]) -> BTreeMap<u64, u64> {
    dp.rule_hits(ids.iter().copied())
        .unwrap()
        .into_iter()
        .map(|(id, h)| (id, h.packets))
        .collect()
}

#[test]
fn block_test_decides_as_the_kernel_does() {
    require_root!();
    let records = rules();
    let ids: Vec<u64> = records.iter().map(|r| r.id).collect();
    let allow: Vec<Target> = vec![ALLOW.parse().unwrap()];
    let mut dp = Dataplane::load(small()).expect("load");
    dp.allow(allow[0]).unwrap();
    // In id order, as the daemon loads a store.
    for r in &records {
        let spec = RuleSpec {
            target: r.target,
            action: r.action,
            scope: r.scope,
            // What is left of it; on a loaded machine loading may have taken it all, and the
            // kernel then gets the shortest TTL (the packets run after it in any case).
            ttl: r.expires_at.map(|t| {
                t.duration_since(SystemTime::now())
                    .unwrap_or(Duration::from_millis(1))
                    .max(Duration::from_millis(1))
            }),
        };
        dp.add_rule_as(r.id, spec).unwrap();
    }
    // Rule 6 expires in the kernel (its clock) and in the store's time alike.
    sleep(Duration::from_millis(1500));
    let mut checked = 0;
    for mode in [Mode::Enforce, Mode::Observe] {
        dp.set_mode(mode).unwrap();
        for (src, dst, proto, port) in packets() {
            let name = format!("{mode:?}: {src} -> {dst} {proto} port {port}");
            let (s, d): (IpAddr, IpAddr) = (ip(src), ip(dst));
            let frame = match proto {
                Proto::Tcp => Frame::tcp(s, d, 40000, port),
                _ => Frame::udp(s, d, 40000, port),
            }
            .build();
            let expect = decide(
                &records,
                &allow,
                mode,
                &Probe {
                    src: s,
                    dst: Some(d),
                    proto: Some(proto),
                    port: Some(port),
                },
                SystemTime::now(),
            );
            let stats_before = dp.stats().unwrap();
            let hits_before = hits(&dp, &ids);
            let run = dp.test_run(Prog::Main, &frame, 1).unwrap();
            let stats_after = dp.stats().unwrap();
            let hits_after = hits(&dp, &ids);
            assert_eq!(
                run.action == XDP_DROP,
                expect.outcome.drops(),
                "{name}: the kernel's action differs from {expect:?}"
            );
            let slot = stat_of(expect.outcome) as usize;
            assert_eq!(
                stats_after.counters[slot] - stats_before.counters[slot],
                1,
                "{name}: the kernel did not count it as {:?} ({expect:?})",
                expect.outcome
            );
            let mut moved: Vec<u64> = ids
                .iter()
                .copied()
                .filter(|id| hits_after[id] > hits_before[id])
                .collect();
            let mut counted = expect.counted.clone();
            moved.sort_unstable();
            counted.sort_unstable();
            assert_eq!(moved, counted, "{name}: rules credited ({expect:?})");
            if let Some((id, _)) = expect.rule {
                assert!(
                    moved.contains(&id),
                    "{name}: deciding rule {id} not credited"
                );
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 2 * packets().len());
}
