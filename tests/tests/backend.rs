//! The kernel data plane as the rule store's backend (`swarmwall::backend`), in the real kernel
//! with `BPF_PROG_TEST_RUN`: an update of a rule's expiry, applied or reconciled, keeps the rule
//! in force throughout and in its place. Needs root.

mod common;

use std::{
    thread::sleep,
    time::{Duration, SystemTime},
};

use common::{ip, small};
use swarmwall::{
    Action, Dataplane, Mode, Prog, Scope,
    backend::{Context, Desired, RuleBackend},
    store::{Op, RuleRecord},
};
use swarmwall_integration::{packets::Frame, require_root};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;

fn record(id: u64, target: &str, ttl: Duration, now: SystemTime) -> RuleRecord {
    RuleRecord {
        id,
        target: target.parse().unwrap(),
        action: Action::Drop,
        scope: Scope::default(),
        expires_at: Some(now + ttl),
        created_at: now,
        actor: "test".into(),
        reason: None,
    }
}

fn verdict(dp: &mut Dataplane, src: &str) -> u32 {
    let f = Frame::udp(ip(src), ip("203.0.113.10"), 40000, 53).build();
    dp.test_run(Prog::Main, &f, 1).unwrap().action
}

#[test]
fn an_update_is_applied_in_place_and_outlives_the_old_expiry() {
    require_root!();
    let mut dp = Dataplane::load(small()).unwrap();
    let now = SystemTime::now();
    let ctx = Context {
        config_allow: &[],
        now,
    };
    // Two rules on one address, so the updated one sits in the middle of a chain.
    let short = record(1, "192.0.2.7", Duration::from_millis(600), now);
    let mut other = record(2, "192.0.2.7", Duration::from_secs(3600), now);
    other.scope.port = Some(9);
    other.scope.proto = Some(swarmwall::Proto::Udp);
    dp.apply(&[Op::AddRule(short.clone()), Op::AddRule(other)], &ctx)
        .unwrap();
    let slot = dp.table().get(1).unwrap().slot;
    assert_eq!(verdict(&mut dp, "192.0.2.7"), XDP_DROP);

    // The store's update: remove + add of the same rule with a new expiry, in one change.
    let long = RuleRecord {
        expires_at: Some(now + Duration::from_secs(3600)),
        ..short.clone()
    };
    dp.apply(&[Op::RemoveRule(short), Op::AddRule(long)], &ctx)
        .unwrap();
    let e = dp.table().get(1).unwrap();
    assert_eq!(e.slot, slot, "updated in place");
    assert_eq!(dp.table().len(), 2);
    // Still first in its chain, as if never removed: a packet both rules match is rule 1's. (A
    // removal and re-add would have put it behind rule 2, after a moment with no rule 1.)
    let both = Frame::udp(ip("192.0.2.7"), ip("203.0.113.10"), 40000, 9).build();
    assert_eq!(dp.test_run(Prog::Main, &both, 1).unwrap().action, XDP_DROP);
    let hits = dp.rule_hits([1, 2]).unwrap();
    assert_eq!(
        hits.iter()
            .map(|(id, h)| (*id, h.packets))
            .collect::<Vec<_>>(),
        [(1, 2), (2, 0)],
        "{hits:?}"
    );
    sleep(Duration::from_millis(900));
    assert_eq!(
        verdict(&mut dp, "192.0.2.7"),
        XDP_DROP,
        "the new expiry is in force past the old one"
    );
}

#[test]
fn reconcile_gives_a_kept_rule_the_store_s_expiry() {
    require_root!();
    let mut dp = Dataplane::load(small()).unwrap();
    let now = SystemTime::now();
    let ctx = Context {
        config_allow: &[],
        now,
    };
    let short = record(1, "192.0.2.8", Duration::from_millis(600), now);
    dp.apply(&[Op::AddRule(short.clone())], &ctx).unwrap();
    // The store says the rule lives an hour (an update the kernel never saw, e.g. a journal
    // repaired or restored while the data plane kept running).
    let rules = [(
        1,
        RuleRecord {
            expires_at: Some(now + Duration::from_secs(3600)),
            ..short
        },
    )]
    .into_iter()
    .collect();
    let done = dp
        .reconcile(&Desired {
            rules: &rules,
            allow: vec![],
            mode: Mode::Enforce,
            now,
        })
        .unwrap();
    assert_eq!((done.added, done.removed, done.retimed), (0, 0, 1));
    sleep(Duration::from_millis(900));
    assert_eq!(verdict(&mut dp, "192.0.2.8"), XDP_DROP);
    // A second reconcile finds nothing to do.
    let again = dp
        .reconcile(&Desired {
            rules: &rules,
            allow: vec![],
            mode: Mode::Enforce,
            now: SystemTime::now(),
        })
        .unwrap();
    assert_eq!((again.added, again.removed, again.retimed), (0, 0, 0));
    assert_eq!(verdict(&mut dp, "192.0.2.9"), XDP_PASS);
}
