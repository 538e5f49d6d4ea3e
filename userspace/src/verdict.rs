//! Which rule would decide a packet: the kernel's decision (`ebpf/src/main.rs`, `decide` →
//! `rules_verdict` → `walk`), as a pure function over the store's rules and the allow list.
//!
//! The kernel's order, mirrored here:
//! 1. an allow-list entry covering the source passes the packet, whatever the rules say;
//! 2. the source's exact-address rules, then the rules of every prefix covering it, longest
//!    prefix first (the kernel's LPM lookup finds the longest prefix with rules, and its chain
//!    continues into the chains of the covering prefixes);
//! 3. in each of the two chains, the first live drop rule whose scope matches decides, else the
//!    first live observe rule whose scope matches;
//! 4. a drop in the exact chain drops; else a drop in the prefix chain drops; else an observe
//!    rule (exact first) passes the packet counted as would-have-dropped; else it passes.
//!
//! In observe mode nothing drops: the first hit (exact, then prefix) is counted as observed.
//!
//! Within one chain the kernel walks rules in the order they were linked; this module uses rule
//! id order, which is the same after a daemon start (rules are loaded by id) and for rules added
//! since. The two can differ only when two rules of one key both match, were linked out of id
//! order (an updated rule is relinked at the end of its chain) and have the same action: the
//! verdict is then the same, the rule credited may differ.

use std::{net::IpAddr, time::SystemTime};

use crate::{Action, Mode, Proto, RuleId, Scope, Target, addr::to_key, store::RuleRecord};

/// A packet to decide, as far as the rules look at it. Fields left `None` match no rule scoped
/// on them (a packet without ports matches no port scope, as in the kernel).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Probe {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: Option<IpAddr>,
    /// IP protocol.
    pub proto: Option<Proto>,
    /// Destination port (only TCP and UDP packets carry one).
    pub port: Option<u16>,
}

/// Which lookup found the deciding rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// The exact-address map.
    Exact,
    /// The prefix trie (the longest prefix and those covering it).
    Prefix,
}

/// The global counter slot the kernel would count the packet in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// An allow-list entry passed it.
    Allowed,
    /// An exact-address rule dropped it.
    DroppedExact,
    /// A prefix rule dropped it.
    DroppedPrefix,
    /// A rule matched but did not drop (an observe rule, or observe mode): passed, counted.
    Observed,
    /// No rule matched: passed.
    Passed,
}

impl Outcome {
    /// True if the kernel drops the packet.
    pub fn drops(self) -> bool {
        matches!(self, Outcome::DroppedExact | Outcome::DroppedPrefix)
    }

    /// The name of the kernel's counter slot (`swarmwall status` shows the same names).
    pub fn stat_name(self) -> &'static str {
        match self {
            Outcome::Allowed => "allowed",
            Outcome::DroppedExact => "dropped_exact",
            Outcome::DroppedPrefix => "dropped_prefix",
            Outcome::Observed => "observed",
            Outcome::Passed => "passed",
        }
    }
}

/// What the kernel would do with a [`Probe`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// Where the packet is counted, and whether it is dropped.
    pub outcome: Outcome,
    /// The allow entry that passed it.
    pub allowed_by: Option<Target>,
    /// The deciding rule and where it was found.
    pub rule: Option<(RuleId, Stage)>,
    /// Every rule whose hit counters the packet moves, deciding rule first (an exact observe
    /// rule is counted even when a prefix drop rule then drops the packet).
    pub counted: Vec<RuleId>,
    /// Live rules on the source's chains whose scope did not match this packet: what would
    /// decide other packets from this source.
    pub unmatched: Vec<RuleId>,
}

/// A rule hit in one chain.
#[derive(Clone, Copy)]
struct Hit {
    id: RuleId,
    drop: bool,
}

fn key_eq(a: IpAddr, b: IpAddr) -> bool {
    to_key(a) == to_key(b)
}

/// True if `scope` matches the packet, the way the kernel's `scope_matches` does.
pub fn scope_matches(scope: &Scope, p: &Probe) -> bool {
    if let Some(proto) = scope.proto
        && p.proto != Some(proto)
    {
        return false;
    }
    if let Some(port) = scope.port {
        let has_port = matches!(p.proto, Some(Proto::Tcp | Proto::Udp));
        if !has_port || p.port != Some(port) {
            return false;
        }
    }
    if let Some(dst) = scope.dst
        && !p.dst.is_some_and(|d| key_eq(d, dst))
    {
        return false;
    }
    true
}

/// The kernel's `walk` over one chain: the first matching drop rule, else the first matching
/// observe rule. Rules that do not match are noted in `unmatched`.
fn walk(chain: &[&RuleRecord], p: &Probe, unmatched: &mut Vec<RuleId>) -> Option<Hit> {
    let mut observe = None;
    let mut found = None;
    for r in chain {
        if !scope_matches(&r.scope, p) {
            unmatched.push(r.id);
            continue;
        }
        if found.is_some() {
            continue;
        }
        match r.action {
            Action::Drop => {
                found = Some(Hit {
                    id: r.id,
                    drop: true,
                });
            }
            Action::Observe => {
                if observe.is_none() {
                    observe = Some(Hit {
                        id: r.id,
                        drop: false,
                    });
                }
            }
        }
    }
    found.or(observe)
}

/// Decides `probe` against `rules` (the store's, in any order) and the allow list, in `mode`,
/// at wall-clock time `now` (rules with `expires_at <= now` are dead, as in the kernel).
pub fn decide<'a>(
    rules: impl IntoIterator<Item = &'a RuleRecord>,
    allow: impl IntoIterator<Item = &'a Target>,
    mode: Mode,
    probe: &Probe,
    now: SystemTime,
) -> Verdict {
    let src = probe.src;
    let mut verdict = Verdict {
        outcome: Outcome::Passed,
        allowed_by: None,
        rule: None,
        counted: Vec::new(),
        unmatched: Vec::new(),
    };
    if let Some(a) = allow
        .into_iter()
        .filter(|a| a.contains(src))
        .max_by_key(|a| a.prefix_len())
    {
        verdict.outcome = Outcome::Allowed;
        verdict.allowed_by = Some(*a);
        return verdict;
    }
    let live = |r: &&RuleRecord| r.expires_at.is_none_or(|t| t > now);
    let mut exact: Vec<&RuleRecord> = Vec::new();
    let mut prefix: Vec<&RuleRecord> = Vec::new();
    for r in rules.into_iter().filter(live) {
        match r.target {
            Target::Addr(a) if key_eq(a, src) => exact.push(r),
            Target::Net(n) if n.contains(&src) => prefix.push(r),
            _ => {}
        }
    }
    exact.sort_by_key(|r| r.id);
    // Longest prefix first; rules of one prefix in chain (id) order.
    prefix.sort_by_key(|r| (std::cmp::Reverse(r.target.prefix_len()), r.id));
    let e = walk(&exact, probe, &mut verdict.unmatched);
    let p = walk(&prefix, probe, &mut verdict.unmatched);
    let enforce = mode == Mode::Enforce;
    let decided = match (e, p) {
        (Some(e), _) if e.drop && enforce => {
            verdict.counted.push(e.id);
            Some((e.id, Stage::Exact, Outcome::DroppedExact))
        }
        (e, Some(p)) if p.drop && enforce => {
            verdict.counted.push(p.id);
            verdict.counted.extend(e.map(|e| e.id));
            Some((p.id, Stage::Prefix, Outcome::DroppedPrefix))
        }
        (Some(e), p) => {
            verdict.counted.push(e.id);
            // A prefix drop rule is counted even behind an exact observe hit (observe mode).
            verdict.counted.extend(p.filter(|p| p.drop).map(|p| p.id));
            Some((e.id, Stage::Exact, Outcome::Observed))
        }
        (None, Some(p)) => {
            verdict.counted.push(p.id);
            Some((p.id, Stage::Prefix, Outcome::Observed))
        }
        (None, None) => None,
    };
    if let Some((id, stage, outcome)) = decided {
        verdict.rule = Some((id, stage));
        verdict.outcome = outcome;
    }
    verdict
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn rec(id: RuleId, target: &str, action: Action, scope: Scope) -> RuleRecord {
        RuleRecord {
            id,
            target: target.parse().unwrap(),
            action,
            scope,
            expires_at: None,
            created_at: SystemTime::UNIX_EPOCH,
            actor: "uid 0".into(),
            reason: None,
        }
    }

    fn probe(src: &str, dst: &str, proto: Proto, port: u16) -> Probe {
        Probe {
            src: src.parse().unwrap(),
            dst: Some(dst.parse().unwrap()),
            proto: Some(proto),
            port: Some(port),
        }
    }

    #[test]
    fn the_kernel_order() {
        let site = Scope {
            dst: Some("203.0.113.10".parse().unwrap()),
            proto: Some(Proto::Tcp),
            port: Some(443),
        };
        let now = SystemTime::now();
        let mut expired = rec(9, "192.0.2.9", Action::Drop, Scope::default());
        expired.expires_at = Some(now - Duration::from_secs(1));
        let rules = [
            rec(1, "192.0.2.7", Action::Observe, Scope::default()),
            rec(2, "192.0.2.0/24", Action::Drop, site),
            rec(3, "192.0.0.0/16", Action::Drop, Scope::default()),
            rec(4, "192.0.2.8", Action::Drop, site),
            expired,
        ];
        let allow: Vec<Target> = vec!["192.0.2.100".parse().unwrap()];
        let d = |p: Probe, m: Mode| decide(&rules, &allow, m, &p, now);
        let v = d(
            probe("192.0.2.7", "203.0.113.10", Proto::Tcp, 443),
            Mode::Enforce,
        );
        assert_eq!(v.outcome, Outcome::DroppedPrefix);
        assert_eq!(v.rule, Some((2, Stage::Prefix)));
        assert_eq!(v.counted, vec![2, 1]);
        let v = d(
            probe("192.0.2.7", "203.0.113.10", Proto::Tcp, 443),
            Mode::Observe,
        );
        assert_eq!(
            (v.outcome, v.rule, v.counted),
            (Outcome::Observed, Some((1, Stage::Exact)), vec![1, 2])
        );
        // Another site: the /24's scope misses, the covering /16 still drops.
        let v = d(
            probe("192.0.2.8", "203.0.113.99", Proto::Udp, 53),
            Mode::Enforce,
        );
        assert_eq!(v.rule, Some((3, Stage::Prefix)));
        assert_eq!(v.unmatched, vec![4, 2]);
        let v = d(
            probe("192.0.2.8", "203.0.113.10", Proto::Tcp, 443),
            Mode::Enforce,
        );
        assert_eq!(
            (v.outcome, v.rule),
            (Outcome::DroppedExact, Some((4, Stage::Exact)))
        );
        let v = d(
            probe("192.0.2.100", "203.0.113.10", Proto::Tcp, 443),
            Mode::Enforce,
        );
        assert_eq!(v.outcome, Outcome::Allowed);
        // Expired: the covering /16 decides.
        let v = d(
            probe("192.0.2.9", "203.0.113.1", Proto::Udp, 53),
            Mode::Enforce,
        );
        assert_eq!(v.rule, Some((3, Stage::Prefix)));
        let v = d(
            probe("198.51.100.1", "203.0.113.1", Proto::Udp, 53),
            Mode::Enforce,
        );
        assert_eq!((v.outcome, v.rule), (Outcome::Passed, None));
        // No port: a port scope does not match (an ICMP packet).
        let p = Probe {
            proto: Some(Proto::Icmp),
            port: None,
            ..probe("192.0.2.8", "203.0.113.10", Proto::Tcp, 443)
        };
        assert_eq!(d(p, Mode::Enforce).rule, Some((3, Stage::Prefix)));
    }
}
