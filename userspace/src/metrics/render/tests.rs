use serde_json::json;

use super::*;
use crate::daemon::controller::SWARM_ACTOR;

fn snapshot() -> Snapshot {
    let status = serde_json::from_value(json!({
        "version": "0.1.0", "abi": 2, "uptime_s": 42, "mode": "enforce",
        "interfaces": [{"name": "eth0", "mode": "driver"}],
        "stats": {"seen": 100, "passed": 80, "allowed": 3, "observed": 2,
                  "dropped_exact": 10, "dropped_prefix": 5, "l7_sampled": 9, "l7_lost": 1},
        "rules": {"exact": 2, "prefix": 1}, "allow": 4, "pin_dir": "/sys/fs/bpf/sw",
        "adopted": false
    }))
    .unwrap();
    let swarms = serde_json::from_value(json!({
        "swarms": [],
        "pipeline": {"enabled": true, "samples": 9, "requests": 8, "unparsed": 1,
                     "queue_overflow": 0, "tracked_sources": 5, "kernel_skipped": 0,
                     "kernel_lost": 1,
                     "sources": [{"name": "/var/log/nginx/access.log", "read": 1000,
                                  "requests": 990, "rejected": 10, "queue_overflow": 0,
                                  "problem": "Permission denied", "behind_bytes": 512,
                                  "newest_line_age_ms": 1500}]}
    }))
    .unwrap();
    let rule = |id: u64, target: &str, action: &str, actor: &str, dropped: u64| {
        serde_json::from_value(json!({
            "id": id, "target": target, "action": action, "scope": {},
            "expires_at": null, "created_at": "2026-12-02T00:00:00Z", "actor": actor,
            "reason": null, "hits": dropped, "dropped": dropped, "dropped_bytes": dropped * 60
        }))
        .unwrap()
    };
    Snapshot {
        status,
        swarms,
        rules: vec![
            rule(1, "192.0.2.1", "drop", SWARM_ACTOR, 7),
            rule(2, "2001:db8::/64", "drop", SWARM_ACTOR, 3),
            rule(3, "198.51.100.0/24", "observe", "uid 0", 0),
        ],
    }
}

fn has(text: &str, line: &str) {
    assert!(
        text.lines().any(|l| l == line),
        "no line {line:?} in:\n{text}"
    );
}

#[test]
fn kernel_counters_become_counters_by_verdict_and_reason() {
    let t = render(&snapshot()).unwrap();
    has(
        &t,
        r#"swarmwall_packets_total{verdict="drop",reason="exact_rule"} 10"#,
    );
    has(
        &t,
        r#"swarmwall_packets_total{verdict="pass",reason="observe"} 2"#,
    );
    has(&t, "swarmwall_packets_seen_total 100");
    has(&t, r#"swarmwall_l7_samples_total{outcome="lost"} 1"#);
    has(&t, "# TYPE swarmwall_packets counter");
    has(&t, "swarmwall_uptime_seconds 42");
    has(
        &t,
        r#"swarmwall_interface_attached{interface="eth0",mode="driver"} 1"#,
    );
    assert_eq!(t.lines().last(), Some("# EOF"));
}

#[test]
fn rules_are_counted_by_origin_action_and_family_zeros_included() {
    let t = render(&snapshot()).unwrap();
    has(
        &t,
        r#"swarmwall_rules{origin="swarm",action="drop",family="ipv6"} 1"#,
    );
    has(
        &t,
        r#"swarmwall_rules{origin="admin",action="observe",family="ipv4"} 1"#,
    );
    has(
        &t,
        r#"swarmwall_rules{origin="admin",action="drop",family="ipv6"} 0"#,
    );
    has(&t, r#"swarmwall_rules_dropped_packets{origin="swarm"} 10"#);
    has(&t, r#"swarmwall_rules_dropped_bytes{origin="swarm"} 600"#);
}

#[test]
fn log_sources_show_their_lines_problem_and_lag() {
    let t = render(&snapshot()).unwrap();
    let src = r#"{source="/var/log/nginx/access.log"}"#;
    has(&t, &format!("swarmwall_log_lines_total{src} 1000"));
    has(&t, &format!("swarmwall_log_lines_rejected_total{src} 10"));
    has(&t, &format!("swarmwall_log_source_up{src} 0"));
    has(&t, &format!("swarmwall_log_behind_bytes{src} 512"));
    has(
        &t,
        &format!("swarmwall_log_newest_line_age_seconds{src} 1.5"),
    );
    has(&t, "swarmwall_detection_up 1");
}

#[test]
fn a_hostile_label_value_stays_one_label() {
    let mut s = snapshot();
    s.swarms.pipeline.sources[0].name = "/tmp/a\"b\\c\nd".into();
    let t = render(&s).unwrap();
    has(
        &t,
        r#"swarmwall_log_lines_total{source="/tmp/a\"b\\c\nd"} 1000"#,
    );
}

#[test]
fn the_classic_format_names_counter_families_with_their_total() {
    let om = render(&snapshot()).unwrap();
    let t = classic(&om);
    has(&t, "# TYPE swarmwall_packets_total counter");
    assert!(
        t.lines()
            .any(|l| l.starts_with("# HELP swarmwall_packets_total "))
    );
    has(&t, "# TYPE swarmwall_rules gauge");
    has(
        &t,
        r#"swarmwall_packets_total{verdict="drop",reason="exact_rule"} 10"#,
    );
    assert!(!t.contains("# EOF") && !t.contains("# UNIT"), "{t}");
    // Samples are the same lines in both.
    let samples = |s: &str| -> Vec<String> {
        s.lines()
            .filter(|l| !l.starts_with('#'))
            .map(String::from)
            .collect()
    };
    assert_eq!(samples(&om), samples(&t));
}

#[test]
fn the_firewall_mirror_shows_its_health_elements_and_drift_only_when_configured() {
    let t = render(&snapshot()).unwrap();
    assert!(!t.contains("swarmwall_firewall"), "{t}");
    let mut s = snapshot();
    s.status.firewall = Some(crate::api::types::FirewallView {
        backend: "nftables".into(),
        role: "mirror".into(),
        table: "inet swarmwall".into(),
        healthy: false,
        detail: "nft: not found".into(),
        elements: 12,
        drift: 2,
        reconciled_s_ago: Some(3),
    });
    let t = render(&s).unwrap();
    has(
        &t,
        "swarmwall_firewall_healthy{backend=\"nftables\",role=\"mirror\"} 0",
    );
    has(
        &t,
        "swarmwall_firewall_elements{backend=\"nftables\",role=\"mirror\"} 12",
    );
    has(
        &t,
        "swarmwall_firewall_reconcile_drift{backend=\"nftables\",role=\"mirror\"} 2",
    );
}
