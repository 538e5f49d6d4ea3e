//! `swarmwall analyze` on the labelled scenario captures: precision >= 0.99 and recall >= 0.95 on
//! swarm members, no rule for a flash crowd, a NAT, a crawler or plain browsing, and rules scoped
//! to the attacked site only. No root needed.

use std::{collections::BTreeSet, net::IpAddr, path::PathBuf, process::Command};

use swarmwall::{
    Target,
    analyze::{Options, Report, analyze_pcap},
};
use swarmwall_integration::scenarios::{Labels, Scenario, write};

fn run(s: Scenario, seed: u64) -> (Report, Labels) {
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join(format!("{}.pcap", s.name()));
    let labels = write(s, seed, &pcap).unwrap();
    let report = analyze_pcap(&pcap, &Options::default()).unwrap();
    (report, labels)
}

/// Addresses the rules would block, expanded against the sources the scenario has.
fn blocked(report: &Report, everyone: &BTreeSet<IpAddr>) -> BTreeSet<IpAddr> {
    let targets: Vec<Target> = report
        .rules
        .iter()
        .map(|r| r.prefix.parse().unwrap())
        .collect();
    everyone
        .iter()
        .filter(|a| targets.iter().any(|t| t.contains(**a)))
        .copied()
        .collect()
}

fn check_swarm(s: Scenario) {
    for seed in [1, 2] {
        let (report, labels) = run(s, seed);
        let members: BTreeSet<IpAddr> = labels.swarm_members.iter().copied().collect();
        let everyone: BTreeSet<IpAddr> = members
            .iter()
            .chain(&labels.legitimate)
            .chain(&labels.nat)
            .chain(&labels.crawlers)
            .copied()
            .collect();
        let found: BTreeSet<IpAddr> = report
            .swarms
            .iter()
            .flat_map(|s| s.members.iter().map(|m| m.parse::<IpAddr>().unwrap()))
            .collect();
        let tp = found.intersection(&members).count() as f64;
        let precision = tp / found.len().max(1) as f64;
        let recall = tp / members.len() as f64;
        assert!(
            precision >= 0.99 && recall >= 0.95,
            "{} seed {seed}: precision {precision:.3} recall {recall:.3} ({} found, {} members; false: {:?})",
            s.name(),
            found.len(),
            members.len(),
            found.difference(&members).collect::<Vec<_>>()
        );
        // The rules: the same members, nobody else, each scoped to the attacked site.
        let blocked = blocked(&report, &everyone);
        let wrongly: Vec<_> = blocked.difference(&members).collect();
        assert!(
            wrongly.is_empty(),
            "{}: rules would block legitimate {wrongly:?}",
            s.name()
        );
        assert!(blocked.intersection(&members).count() as f64 / members.len() as f64 >= 0.95);
        assert!(
            labels.attacked_site.is_some(),
            "a swarm scenario names its site"
        );
        // A dual-stack site has two addresses; a rule may be scoped to either, never to another.
        let site_addrs = &labels.attacked_site_addrs;
        for r in &report.rules {
            let dst: IpAddr = r.scope.dst.parse().unwrap();
            assert!(
                site_addrs
                    .iter()
                    .any(|a| a.ip() == dst && a.port() == r.scope.port),
                "rule scoped outside the attacked site {site_addrs:?}: {r:?}"
            );
            assert_eq!(r.scope.proto, "tcp");
            assert!(r.ttl_s > 0);
        }
        // No rule is redundant: a single address inside a prefix rule of the same scope.
        let targets: Vec<(Target, &str, u16)> = report
            .rules
            .iter()
            .map(|r| {
                (
                    r.prefix.parse().unwrap(),
                    r.scope.dst.as_str(),
                    r.scope.port,
                )
            })
            .collect();
        for (t, dst, port) in &targets {
            if let Target::Addr(a) = t {
                assert!(
                    !targets.iter().any(|(o, d, p)| matches!(o, Target::Net(_))
                        && o.contains(*a)
                        && d == dst
                        && p == port),
                    "{}: {a} has a rule inside a prefix rule",
                    s.name()
                );
            }
        }
        // The pages reported are the attacked ones.
        let pages: BTreeSet<String> = report
            .swarms
            .iter()
            .flat_map(|s| s.pages.iter().map(|p| p.path.clone()))
            .collect();
        let attacked: BTreeSet<String> = labels.attacked_pages.iter().cloned().collect();
        assert!(
            pages.is_subset(&attacked) && !pages.is_empty(),
            "{pages:?} vs {attacked:?}"
        );
    }
}

fn check_quiet(s: Scenario) {
    for seed in [1, 2] {
        let (report, _) = run(s, seed);
        assert!(
            report.swarms.is_empty(),
            "{}: {:?}",
            s.name(),
            report.swarms
        );
        assert!(report.rules.is_empty(), "{}: {:?}", s.name(), report.rules);
        assert!(
            report.requests > 1000,
            "{} is too small to mean anything",
            s.name()
        );
    }
}

#[test]
fn swarm_members_are_found_and_blocked_surgically() {
    check_swarm(Scenario::Swarm);
}

#[test]
fn multi_tenant_swarm_is_scoped_to_the_attacked_site() {
    check_swarm(Scenario::MultiTenant);
}

#[test]
fn browsing_is_left_alone() {
    check_quiet(Scenario::Browsing);
}

#[test]
fn a_flash_crowd_is_not_a_swarm() {
    check_quiet(Scenario::FlashCrowd);
}

#[test]
fn a_nat_is_not_a_swarm() {
    check_quiet(Scenario::Nat);
}

#[test]
fn a_crawler_is_not_a_swarm() {
    check_quiet(Scenario::Crawler);
}

#[test]
fn the_cli_prints_the_promised_json_and_survives_a_truncated_capture() {
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("swarm.pcap");
    write(Scenario::Swarm, 3, &pcap).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_swarmwall"))
        .args(["analyze", "--json"])
        .arg(&pcap)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let s = &v["swarms"][0];
    for key in ["id", "pages", "members", "onset", "confidence"] {
        assert!(!s[key].is_null(), "swarm lacks {key}: {s}");
    }
    assert!(s["pages"][0]["host"].is_string() && s["pages"][0]["path"].is_string());
    let r = &v["rules"][0];
    for key in ["prefix", "scope", "ttl_s", "swarm"] {
        assert!(!r[key].is_null(), "rule lacks {key}: {r}");
    }
    for key in ["dst", "port", "proto"] {
        assert!(!r["scope"][key].is_null(), "scope lacks {key}: {r}");
    }

    // Cut the capture mid-packet: a warning, and the usable prefix analyzed.
    let bytes = std::fs::read(&pcap).unwrap();
    let cut = dir.path().join("cut.pcap");
    std::fs::write(&cut, &bytes[..bytes.len() * 2 / 3 + 7]).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_swarmwall"))
        .args(["analyze", "--json"])
        .arg(&cut)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("truncated"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Not a capture at all: a clear error naming the file, exit 1.
    let junk: PathBuf = dir.path().join("junk.pcap");
    std::fs::write(&junk, b"this is not a pcap file at all").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_swarmwall"))
        .arg("analyze")
        .arg(&junk)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("junk.pcap"));
}
