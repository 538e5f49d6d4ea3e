//! The whole story, live: a real HTTP server behind the real daemon (XDP on its veths), real
//! visitors browsing it and a real bot swarm — real TCP connections from 20-odd made-up
//! addresses — hammering two pages (see `swarmwall_integration::swarm_lab`). The daemon must
//! sample the requests in the kernel, detect the swarm, block exactly its members scoped to the
//! site, within a second of the evidence, while every visitor keeps getting 200s. Needs root;
//! each test builds and removes its own lab.

use std::{
    collections::BTreeSet,
    net::IpAddr,
    sync::atomic::AtomicBool,
    time::{Duration, Instant},
};

use serde_json::Value;
use swarmwall_integration::{
    require_root,
    swarm_lab::{
        BOT_NET6, DAEMON_CONFIG, HANDSHAKE_PORT, HOST, HTTPS_PORT, NEIGHBOUR, NEIGHBOUR_HOST, Plan,
        SERVER, SERVER6, SWARM_PAGES, SwarmLab, Tally, Traffic,
    },
    tls::{self, Profile, Rotation, TlsClient},
    web::{self, Browsing, Failure},
};

const BIN: &str = env!("CARGO_BIN_EXE_swarmwall");

fn plan() -> Plan {
    Plan {
        visitors: 4,
        bots: 24,
        bots6: 0,
        bot_rps: 5.0,
        bots_load_assets: false,
        bots_after: Duration::from_secs(1),
        bots_for: Duration::from_secs(7),
        browse_for: Duration::from_secs(9),
    }
}

fn strings(v: &Value) -> BTreeSet<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// Polls `swarmwall swarms --json` until a swarm is in `state`, for up to `within`.
fn wait_for_state(lab: &SwarmLab, state: &str, within: Duration) -> Option<Value> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Ok(v) = lab.cli_json(&["swarms"])
            && let Some(s) = v["swarms"]
                .as_array()
                .and_then(|a| a.iter().find(|s| s["state"] == state))
        {
            return Some(s.clone());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

/// A lab for `plan` with the daemon running, and the traffic it saw (visitors and bots, to the
/// end of the plan).
fn run_lab(prefix: &str, plan: &Plan) -> (SwarmLab, Traffic) {
    let mut lab = SwarmLab::new(prefix, BIN.as_ref(), plan).unwrap();
    lab.start_daemon(DAEMON_CONFIG).unwrap();
    let (traffic, ()) = lab
        .run_traffic(plan, &AtomicBool::new(false), || ())
        .unwrap();
    (lab, traffic)
}

/// The one swarm the daemon reports (with its log if there is not exactly one).
fn the_swarm(lab: &SwarmLab) -> Value {
    let v = lab.cli_json(&["swarms"]).unwrap();
    let swarms = v["swarms"].as_array().unwrap();
    assert_eq!(swarms.len(), 1, "{v:#}\ndaemon log:\n{}", lab.log());
    swarms[0].clone()
}

fn check_visitors_served(t: &Tally, lab: &SwarmLab) {
    assert!(
        t.requests > 20,
        "the visitors made only {} requests",
        t.requests
    );
    assert_eq!(
        t.ok,
        t.requests,
        "a legitimate visitor was not served: {t:?}\ndaemon log:\n{}",
        lab.log()
    );
}

/// Blocked bots stay blocked: from 1.5 s after the first drop of `traffic`'s bots on, almost
/// none of their requests is served (`what` names them in the message). Returns when that
/// first drop was.
fn check_bots_blocked(traffic: &Traffic, lab: &SwarmLab, what: &str) -> std::time::Instant {
    let grace = Duration::from_millis(1500);
    let late = traffic
        .bots_after_block(grace)
        .unwrap_or_else(|| panic!("{what}: no bot request was ever dropped"));
    assert!(
        late.requests > 0,
        "{what}: the swarm stopped too early to tell"
    );
    assert!(
        late.ok * 50 <= late.requests,
        "{what}: bots still served after the block: {late:?}\nby bot (served late, own first \
         drop after the first): {:?}\nrules history: {:#}\ndaemon log:\n{}",
        traffic.late_bots(grace),
        lab.cli_json(&["rules", "history"]).unwrap_or_default(),
        lab.log()
    );
    traffic.first_bot_drop().unwrap()
}

/// The web server agrees with the visitors: it served each of them every request they made.
fn check_server_served_every_visitor(traffic: &Traffic, lab: &SwarmLab) {
    let served = lab.web().served();
    for v in &lab.visitor_addrs {
        let seen = traffic.visitors.iter().filter(|o| o.src == *v).count() as u64;
        assert_eq!(served.get(v).copied().unwrap_or(0), seen, "visitor {v}");
    }
}

#[test]
fn a_live_swarm_is_blocked_within_a_second_and_visitors_keep_getting_200s() {
    require_root!();
    let plan = plan();
    let (lab, traffic) = run_lab("swl-live-", &plan);

    let s = &the_swarm(&lab);
    assert_eq!(s["site"], format!("{SERVER}:80"));
    let pages: BTreeSet<String> = s["pages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["path"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(pages, ["/gallery/1", "/gallery/2"].map(String::from).into());

    // Precision and recall on the members: every bot, nothing else.
    let bots: BTreeSet<String> = lab.bot_addrs.iter().map(IpAddr::to_string).collect();
    let members = strings(&s["members"]);
    assert!(members.is_subset(&bots), "non-bots blocked: {members:?}");
    assert!(
        members.len() * 100 >= bots.len() * 95,
        "only {} of {} bots found",
        members.len(),
        bots.len()
    );

    // Surgical rules: one per member, scoped to the site, with a TTL, by swarmwall.
    let rules = lab.cli_json(&["block", "list"]).unwrap();
    let rules = rules.as_array().unwrap();
    assert_eq!(rules.len(), members.len(), "{rules:#?}");
    for r in rules {
        assert!(members.contains(r["target"].as_str().unwrap()), "{r}");
        assert_eq!(r["scope"]["dst"], SERVER, "{r}");
        assert_eq!(r["scope"]["port"], 80, "{r}");
        assert_eq!(r["scope"]["proto"], "tcp", "{r}");
        assert_eq!(r["actor"], "swarmwall", "{r}");
        assert!(r["expires_at"].is_string(), "{r}");
        assert!(r["reason"].as_str().unwrap().contains("swarm 1"), "{r}");
    }

    // Evidence to rules in the kernel: under a second.
    let ms = s["time_to_block_ms"]
        .as_u64()
        .expect("blocked, with a time");
    assert!(ms < 1000, "{ms} ms from evidence to rules in the kernel");
    assert!(s["dropped"].as_u64().unwrap() > 0, "{s:#}");

    // The clients' side: visitors always served; the bots' SYNs dropped once blocked.
    check_visitors_served(&Tally::of(&traffic.visitors, None), &lab);
    check_bots_blocked(&traffic, &lab, "bots");
    // Surgical: a blocked bot still reaches the neighbour's site on the same host, not this one.
    let bot = lab.bot_addrs[0];
    let other = lab.probe(bot, NEIGHBOUR, NEIGHBOUR_HOST, "/").unwrap();
    assert_eq!(
        other.result,
        Ok(200),
        "the neighbour's site was blocked too"
    );
    let this = lab.probe(bot, SERVER, HOST, "/").unwrap();
    assert_eq!(this.result, Err(Failure::ConnectTimeout), "{this:?}");
    // Journaled and reversible: undoing the swarm's changes removes its rules (a pardon).
    let changes: Vec<u64> = s["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_u64().unwrap())
        .collect();
    assert!(!changes.is_empty(), "{s:#}");
    let history = lab.cli_json(&["rules", "history"]).unwrap();
    for c in &changes {
        let entry = history
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["id"] == *c)
            .unwrap();
        assert_eq!(entry["actor"], "swarmwall", "{entry}");
        lab.cli_ok(&["rules", "undo", &c.to_string()]).unwrap();
    }
    let left = lab.cli_json(&["block", "list"]).unwrap();
    assert_eq!(left.as_array().map(Vec::len), Some(0), "{left:#}");
    // The web server agrees: no visitor missing, no bot served after the block.
    check_server_served_every_visitor(&traffic, &lab);
}

/// The user's case live: the bots load the galleries as `wget -p` does, each page and then all
/// its images and its stylesheet, on fresh connections with the page as Referer. Found by its
/// page views and blocked, scoped to the site, while every visitor (who also loads every asset)
/// keeps being served.
#[test]
fn a_live_swarm_loading_pages_with_their_assets_is_blocked_and_visitors_keep_every_request() {
    require_root!();
    let plan = Plan {
        bot_rps: 2.0,
        bots_load_assets: true,
        bots_for: Duration::from_secs(12),
        browse_for: Duration::from_secs(14),
        ..plan()
    };
    let (lab, traffic) = run_lab("swl-views-", &plan);

    let s = &the_swarm(&lab);
    assert_eq!(s["site"], format!("{SERVER}:80"));
    let bots: BTreeSet<String> = lab.bot_addrs.iter().map(IpAddr::to_string).collect();
    let members = strings(&s["members"]);
    assert!(members.is_subset(&bots), "non-bots blocked: {members:?}");
    let missed: Vec<(&String, usize)> = bots
        .difference(&members)
        .map(|b| {
            let sent = traffic.bots.iter().filter(|o| o.src.to_string() == *b);
            (b, sent.count())
        })
        .collect();
    assert!(
        members.len() * 100 >= bots.len() * 95,
        "only {} of {} bots found; missed (requests sent): {missed:?}\n{s:#}",
        members.len(),
        bots.len()
    );
    let evidence: Vec<&str> = s["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        evidence
            .iter()
            .any(|e| e.contains("views of /gallery/") && e.contains("assets each")),
        "{evidence:#?}"
    );
    // The bots did load the assets: most of their requests are not pages.
    let assets = traffic
        .bots
        .iter()
        .filter(|o| !SWARM_PAGES.contains(&o.path.as_str()))
        .count();
    assert!(
        assets * 2 > traffic.bots.len(),
        "{assets} of {}",
        traffic.bots.len()
    );
    check_visitors_served(&Tally::of(&traffic.visitors, None), &lab);
    check_bots_blocked(&traffic, &lab, "bots");
    check_server_served_every_visitor(&traffic, &lab);
}

#[test]
fn observe_mode_reports_the_swarm_and_enforce_then_pushes_its_plan() {
    require_root!();
    let plan = plan();
    let mut lab = SwarmLab::new("swl-obs-", BIN.as_ref(), &plan).unwrap();
    lab.start_daemon(DAEMON_CONFIG).unwrap();
    lab.cli_ok(&["mode", "observe", "--reason", "live test"])
        .unwrap();
    let (traffic, (reported, blocked, rules_while_observing)) = lab
        .run_traffic(&plan, &AtomicBool::new(false), || {
            let reported = wait_for_state(&lab, "reported", Duration::from_secs(6));
            let rules = lab.cli_json(&["block", "list"]).ok();
            lab.cli_ok(&["mode", "enforce"]).unwrap();
            let blocked = wait_for_state(&lab, "blocked", Duration::from_secs(3));
            (reported, blocked, rules)
        })
        .unwrap();
    let reported = reported.unwrap_or_else(|| panic!("no swarm reported; log:\n{}", lab.log()));
    assert!(reported["rules"].as_array().unwrap().is_empty());
    assert!(
        !reported["planned"].as_array().unwrap().is_empty(),
        "{reported:#}"
    );
    assert_eq!(
        rules_while_observing.unwrap().as_array().map(Vec::len),
        Some(0),
        "observe mode pushed rules"
    );
    let blocked = blocked.unwrap_or_else(|| panic!("not blocked on enforce; log:\n{}", lab.log()));
    assert!(!blocked["rules"].as_array().unwrap().is_empty());
    assert!(blocked["planned"].as_array().unwrap().is_empty());
    check_visitors_served(&Tally::of(&traffic.visitors, None), &lab);
}

#[test]
fn a_dual_stack_swarm_is_one_swarm_scoped_per_address_with_its_64_as_one_rule() {
    require_root!();
    // 12 bots attack the site's IPv4 address, 16 from one /64 its IPv6 address.
    let plan = Plan {
        bots: 12,
        bots6: 16,
        ..plan()
    };
    let (lab, traffic) = run_lab("swl-v6-", &plan);

    // One site (one Host) on two addresses: one swarm.
    let s = &the_swarm(&lab);
    assert_eq!(
        strings(&s["sites"]),
        [format!("{SERVER}:80"), format!("[{SERVER6}]:80")].into()
    );
    let bots: BTreeSet<String> = lab.bot_addrs.iter().map(IpAddr::to_string).collect();
    assert_eq!(strings(&s["members"]), bots);

    // Each member's rule is scoped to the address it attacked. Every source ever seen from
    // 2001:db8:bad::/64 is a member: one prefix rule, and any single-address rules pushed
    // before the last of them joined are gone. 203.0.113.0/24 holds the server's own address
    // on that link, so its bots stay single rules.
    let rules = lab.cli_json(&["block", "list"]).unwrap();
    let rules = rules.as_array().unwrap();
    let mut v6: Vec<&Value> = rules
        .iter()
        .filter(|r| r["scope"]["dst"] == SERVER6)
        .collect();
    assert_eq!(v6.len(), 1, "{rules:#?}");
    let net = v6.pop().unwrap();
    assert_eq!(net["target"], format!("{BOT_NET6}/64"));
    assert_eq!(net["scope"]["port"], 80);
    let v4: BTreeSet<String> = rules
        .iter()
        .filter(|r| r["scope"]["dst"] == SERVER)
        .map(|r| r["target"].as_str().unwrap().to_owned())
        .collect();
    let v4_bots: BTreeSet<String> = lab
        .bot_addrs
        .iter()
        .filter(|a| a.is_ipv4())
        .map(IpAddr::to_string)
        .collect();
    assert_eq!(v4, v4_bots);
    assert_eq!(rules.len(), 1 + v4_bots.len());

    check_visitors_served(&Tally::of(&traffic.visitors, None), &lab);
    // Each family's rules are their own (the /64 collapses once its last member joins), and
    // on a loaded machine one family's pages can turn hot a tick after the other's: each is
    // judged from its own first drop, and neither may lag the other by more than 3 s.
    let first_drops: Vec<_> = [
        ("IPv4 bots", traffic.bots_from(IpAddr::is_ipv4)),
        ("IPv6 bots", traffic.bots_from(IpAddr::is_ipv6)),
    ]
    .iter()
    .map(|(what, bots)| check_bots_blocked(bots, &lab, what))
    .collect();
    let lag = first_drops[0].max(first_drops[1]) - first_drops[0].min(first_drops[1]);
    assert!(
        lag <= Duration::from_secs(3),
        "one family was blocked {lag:?} after the other\nrules history: {:#}\ndaemon log:\n{}",
        lab.cli_json(&["rules", "history"]).unwrap_or_default(),
        lab.log()
    );
}

#[test]
fn a_crowd_of_new_visitors_loading_pages_with_their_assets_is_not_a_swarm() {
    require_root!();
    // A flash crowd: 60 new visitors at once, each loading the site's few pages (the same two
    // galleries the bots want, among them) with their images, styles and scripts.
    let plan = Plan {
        visitors: 60,
        bots: 0,
        bots6: 0,
        browse_for: Duration::from_secs(6),
        ..plan()
    };
    let (lab, traffic) = run_lab("swl-crowd-", &plan);
    // Let the detector see the end of it.
    std::thread::sleep(Duration::from_millis(600));
    let v = lab.cli_json(&["swarms"]).unwrap();
    assert!(
        v["pipeline"]["requests"].as_u64().unwrap() >= traffic.visitors.len() as u64 / 2,
        "the daemon saw too few of the crowd's requests to judge: {v:#}"
    );
    assert_eq!(v["swarms"].as_array().map(Vec::len), Some(0), "{v:#}");
    let rules = lab.cli_json(&["block", "list"]).unwrap();
    assert_eq!(rules.as_array().map(Vec::len), Some(0), "{rules:#}");
    check_visitors_served(&Tally::of(&traffic.visitors, None), &lab);
}

/// The kernel's L7 sampling knobs, read from the pinned config map: (HTTP ports, TLS ports,
/// rate).
fn kernel_l7(lab: &SwarmLab) -> ([u16; 4], [u16; 2], u32) {
    use swarmwall_maps::{Config, names};
    let data = aya::maps::MapData::from_pin(lab.pin_dir().join("maps").join(names::CONFIG))
        .expect("opening the pinned config map");
    let map: aya::maps::Array<_, Config> =
        aya::maps::Array::try_from(aya::maps::Map::Array(data)).unwrap();
    let c = map.get(&0, 0).unwrap();
    (c.http_ports, c.tls_ports, c.l7_rate)
}

#[test]
fn a_sighup_that_turns_swarm_detection_on_leaves_sampling_and_the_pipeline_in_agreement() {
    require_root!();
    let mut lab = SwarmLab::new("swl-hup-", BIN.as_ref(), &plan()).unwrap();
    let off = format!("{DAEMON_CONFIG}[swarm]\nenabled = false\n");
    lab.start_daemon(&off).unwrap();
    let pipeline = |lab: &SwarmLab| lab.cli_json(&["swarms"]).unwrap()["pipeline"].clone();
    assert_eq!(pipeline(&lab)["enabled"], false);
    assert_eq!(kernel_l7(&lab), ([0; 4], [0; 2], 0));
    lab.reload_daemon(&format!("{DAEMON_CONFIG}[swarm]\nenabled = true\n"))
        .unwrap();
    // The reader thread cannot be started on reload (the ring buffer is taken once, at
    // start-up): the change waits for a restart, the daemon says so, and the kernel keeps
    // sampling nothing — never samples with no reader.
    let p = pipeline(&lab);
    let (http, tls, rate) = kernel_l7(&lab);
    assert_eq!(
        p["enabled"].as_bool().unwrap(),
        rate > 0,
        "pipeline {p} but kernel sampling http {http:?} tls {tls:?} rate {rate}\nlog:\n{}",
        lab.log()
    );
    assert_eq!((http, tls, rate), ([0; 4], [0; 2], 0));
    assert!(
        lab.log().contains("[swarm] enabled") && lab.log().contains("restart"),
        "{}",
        lab.log()
    );
    // And a restart with the new file turns it on, reader and all.
    lab.stop_daemon();
    lab.start_daemon(&format!("{DAEMON_CONFIG}[swarm]\nenabled = true\n"))
        .unwrap();
    assert_eq!(pipeline(&lab)["enabled"], true);
    assert!(kernel_l7(&lab).2 > 0);
}

#[test]
fn a_pardon_removes_members_rules_in_one_change_and_the_swarm_does_not_push_them_again() {
    require_root!();
    let plan = plan();
    let mut lab = SwarmLab::new("swl-pardon-", BIN.as_ref(), &plan).unwrap();
    lab.start_daemon(DAEMON_CONFIG).unwrap();
    let targets = |lab: &SwarmLab| -> BTreeSet<String> {
        lab.cli_json(&["block", "list"])
            .unwrap()
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["target"].as_str().unwrap().to_owned())
            .collect()
    };
    let (_, (swarm, some, all, after_some, after_all)) = lab
        .run_traffic(&plan, &AtomicBool::new(false), || {
            let swarm = wait_for_state(&lab, "blocked", Duration::from_secs(6))
                .unwrap_or_else(|| panic!("no swarm blocked; log:\n{}", lab.log()));
            let id = swarm["id"].to_string();
            let members: Vec<String> = strings(&swarm["members"]).into_iter().take(2).collect();
            let mut args = vec!["swarms", "pardon", id.as_str()];
            args.extend(members.iter().map(String::as_str));
            args.extend(["--reason", "our monitoring"]);
            let some = lab.cli_json(&args).unwrap();
            // The bots keep attacking: the detector sees the pardoned members again.
            std::thread::sleep(Duration::from_secs(2));
            let after_some = targets(&lab);
            let all = lab.cli_json(&["swarms", "pardon", &id]).unwrap();
            std::thread::sleep(Duration::from_secs(2));
            (swarm, some, all, after_some, targets(&lab))
        })
        .unwrap();
    let pardoned = strings(&some["members"]);
    assert_eq!(pardoned.len(), 2, "{some:#}");
    assert_eq!(some["rules"].as_array().unwrap().len(), 2, "{some:#}");
    assert!(
        pardoned.is_disjoint(&after_some),
        "pardoned members blocked again: {after_some:?}\nlog:\n{}",
        lab.log()
    );
    assert!(
        after_some.len() + 2 >= strings(&swarm["members"]).len(),
        "the other members lost their rules: {after_some:?}"
    );
    // One journaled change, by the admin, with the reason, and undoable.
    let change = some["change_id"].as_u64().unwrap();
    let history = lab.cli_json(&["rules", "history"]).unwrap();
    let entry = history
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["id"] == change)
        .unwrap();
    assert_eq!(entry["ops"], 2, "{entry}");
    assert!(
        entry["reason"].as_str().unwrap().contains("our monitoring"),
        "{entry}"
    );
    assert!(all["change_id"].is_u64(), "{all:#}");
    assert!(
        after_all.is_empty(),
        "rules pushed after a full pardon: {after_all:?}"
    );
    let bot: IpAddr = pardoned.iter().next().unwrap().parse().unwrap();
    let this = lab.probe(bot, SERVER, HOST, "/").unwrap();
    assert_eq!(this.result, Ok(200), "a pardoned bot is still blocked");
    let (_, err) = {
        let o = lab.cli(&["swarms", "pardon", "999", "--json"]).unwrap();
        assert_eq!(o.status.code(), Some(1));
        (o.stdout, String::from_utf8_lossy(&o.stderr).into_owned())
    };
    assert!(err.contains("not_found"), "{err}");
}

/// The rules scoped to `port` cover every one of `members`, no visitor, and are the swarm's:
/// scoped to the site, with a TTL. One rule may be a cohort's prefix (all the sources seen in
/// it are members), so rules are checked by what they cover, not counted per member.
fn check_rules_cover(lab: &SwarmLab, port: u16, members: &BTreeSet<String>) {
    let rules = lab.cli_json(&["block", "list"]).unwrap();
    let nets: Vec<ipnet::IpNet> = rules
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["scope"]["port"] == port)
        .map(|r| {
            assert_eq!(r["scope"]["dst"], SERVER, "{r}");
            assert_eq!(r["scope"]["proto"], "tcp", "{r}");
            assert_eq!(r["actor"], "swarmwall", "{r}");
            assert!(r["expires_at"].is_string(), "{r}");
            let t = r["target"].as_str().unwrap();
            t.parse()
                .or_else(|_| t.parse::<IpAddr>().map(ipnet::IpNet::from))
                .unwrap()
        })
        .collect();
    assert!(!nets.is_empty() && nets.len() <= members.len(), "{rules:#}");
    for m in members {
        let m: IpAddr = m.parse().unwrap();
        assert!(
            nets.iter().any(|n| n.contains(&m)),
            "{m} not blocked: {rules:#}"
        );
    }
    for v in &lab.visitor_addrs {
        assert!(
            !nets.iter().any(|n| n.contains(v)),
            "visitor {v} blocked: {rules:#}"
        );
    }
}

#[test]
fn https_swarms_are_blocked_from_the_log_on_443_and_from_handshakes_alone_on_8443() {
    require_root!();
    let plan = plan();
    let mut lab = SwarmLab::new("swl-tls-", BIN.as_ref(), &plan).unwrap();
    // 443 has an access log the daemon tails; 8443 has none.
    let config = lab.daemon_config();
    lab.start_daemon(&config).unwrap();
    let bots: BTreeSet<String> = lab.tls_bot_addrs.iter().map(IpAddr::to_string).collect();
    for (port, basis) in [(HTTPS_PORT, "log"), (HANDSHAKE_PORT, "handshakes")] {
        let (traffic, ()) = lab
            .run_https_traffic(&plan, port, &AtomicBool::new(false), || ())
            .unwrap();
        let v = lab.cli_json(&["swarms"]).unwrap();
        let on_port: Vec<&Value> = v["swarms"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["site"] == format!("{SERVER}:{port}"))
            .collect();
        let [s] = on_port[..] else {
            panic!("port {port}: {v:#}\ndaemon log:\n{}", lab.log())
        };
        assert_eq!(s["basis"], basis, "{s:#}");
        let members = strings(&s["members"]);
        assert!(members.is_subset(&bots), "non-bots blocked: {members:?}");
        assert!(
            members.len() * 100 >= bots.len() * 95,
            "port {port}: only {} of {} bots found",
            members.len(),
            bots.len()
        );
        if basis == "handshakes" {
            // The name the bots dialled, and no path: TLS hides it.
            assert_eq!(s["pages"][0]["host"], HOST, "{s:#}");
            assert_eq!(s["pages"][0]["path"], "", "{s:#}");
            assert!(
                strings(&s["evidence"])
                    .iter()
                    .any(|e| e.contains("TLS handshakes alone")),
                "{s:#}"
            );
        } else {
            let pages: BTreeSet<&str> = s["pages"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|p| p["path"].as_str())
                .collect();
            assert_eq!(pages, SWARM_PAGES.into(), "{s:#}");
        }
        // Its one JA4, which the kernel saw in every bot's ClientHello.
        assert!(s["ja4"][0]["share"].as_f64().unwrap() >= 0.95, "{s:#}");
        check_rules_cover(&lab, port, &members);
        check_visitors_served(&Tally::of(&traffic.visitors, None), &lab);
        check_bots_blocked(&traffic, &lab, &format!("port {port}"));
    }
    // The log decided on 443: its handshakes made no second swarm there.
    let v = lab.cli_json(&["swarms"]).unwrap();
    assert_eq!(v["swarms"].as_array().map(Vec::len), Some(2), "{v:#}");
    // Scoped: a TLS bot blocked on both HTTPS ports still reaches the site over HTTP.
    let bot = lab.tls_bot_addrs[0];
    assert_eq!(lab.probe(bot, SERVER, HOST, "/").unwrap().result, Ok(200));
}

#[test]
fn an_https_flash_crowd_and_an_https_nat_make_no_rule() {
    require_root!();
    // 200 first-time visitors arrive at once, each with its own browser on one keep-alive
    // connection; 12 addresses of a carrier NAT carry many users each, who open connections as
    // often as the bots do, with five different browsers between them. No log covers the site.
    let plan = Plan {
        visitors: 200,
        bots: 12,
        ..plan()
    };
    let mut lab = SwarmLab::new("swl-tlsnat-", BIN.as_ref(), &plan).unwrap();
    let config = lab.daemon_config();
    lab.start_daemon(&config).unwrap();
    let server = std::net::SocketAddr::new(SERVER.parse().unwrap(), HANDSHAKE_PORT);
    let cert = lab.https(HANDSHAKE_PORT).unwrap().certificate().clone();
    let crowd = std::sync::Arc::new(
        TlsClient::new(&cert, HOST, &Profile::browsers(), Rotation::PerClient).unwrap(),
    );
    let nat = std::sync::Arc::new(
        TlsClient::new(
            &cert,
            HOST,
            &Profile::variants(5).unwrap(),
            Rotation::PerConnection,
        )
        .unwrap(),
    );
    let browsing = Browsing {
        server,
        host: HOST.into(),
        sources: lab.visitor_addrs.clone(),
        duration: Duration::from_secs(4),
        connect_timeout: Duration::from_secs(1),
    };
    let users = web::Swarm {
        server,
        host: HOST.into(),
        sources: lab.tls_bot_addrs.clone(),
        pages: SWARM_PAGES.iter().map(|p| p.to_string()).collect(),
        per_source_rps: plan.bot_rps,
        duration: plan.bots_for,
        connect_timeout: Duration::from_millis(500),
        user_agent: web::browser_user_agent(0),
        load_assets: false,
    };
    let stop = AtomicBool::new(false);
    let (crowd_out, nat_out) = std::thread::scope(|scope| {
        let c = scope.spawn(|| tls::browse(&lab.visitors, &browsing, &crowd, &stop));
        let n = scope.spawn(|| tls::swarm(&lab.bots, &users, &nat, &stop));
        (c.join().unwrap().unwrap(), n.join().unwrap().unwrap())
    });
    // Let the detector see the end of it.
    std::thread::sleep(Duration::from_millis(600));
    let handshakes: u64 = lab
        .https(HANDSHAKE_PORT)
        .unwrap()
        .connections()
        .values()
        .sum();
    let v = lab.cli_json(&["swarms"]).unwrap();
    assert!(
        handshakes >= 200 + 12 * 20,
        "too few connections to judge: {handshakes}"
    );
    assert!(
        v["pipeline"]["samples"].as_u64().unwrap() * 10 >= handshakes * 9,
        "the daemon saw too few of {handshakes} handshakes: {v:#}"
    );
    assert_eq!(
        v["swarms"].as_array().map(Vec::len),
        Some(0),
        "{v:#}\n{}",
        lab.log()
    );
    let rules = lab.cli_json(&["block", "list"]).unwrap();
    assert_eq!(rules.as_array().map(Vec::len), Some(0), "{rules:#}");
    check_visitors_served(&Tally::of(&crowd_out, None), &lab);
    let users = Tally::of(&nat_out, None);
    assert_eq!(
        users.ok, users.requests,
        "the NAT's users were not all served: {users:?}"
    );
}
