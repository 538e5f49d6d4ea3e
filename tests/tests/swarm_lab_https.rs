//! The lab's HTTPS act from the lab's side, without the daemon: its TLS bots (a network of their
//! own) and visitors reach the HTTPS site through the lab's routes, every request is answered and
//! logged, the log reads back through swarmwall's `combined` parser, and the configuration the
//! lab gives the daemon is one the daemon accepts, pointing at that log. `cargo xtask lab` runs
//! the same act with the daemon. Needs root.

use std::{collections::HashMap, net::SocketAddr, path::Path, sync::atomic::AtomicBool};

use swarmwall::{
    daemon::config::Config,
    sources::log::{Format, LineParser},
};
use swarmwall_integration::{
    require_root,
    swarm_lab::{
        HANDSHAKE_PORT, HOST, HTTPS_PORT, Plan, SERVER, SWARM_PAGES, SwarmLab, TLS_BOT_NET, Tally,
    },
};

#[test]
fn the_labs_https_act_is_served_and_logged_where_the_daemon_reads() {
    require_root!();
    let plan = Plan {
        visitors: 3,
        bots: 10,
        bots6: 0,
        bot_rps: 4.0,
        bots_load_assets: false,
        bots_after: std::time::Duration::from_millis(500),
        bots_for: std::time::Duration::from_secs(2),
        browse_for: std::time::Duration::from_secs(3),
    };
    // No daemon is started: the lab only runs the binary to remove the daemon's pins on drop,
    // which finds nothing to do.
    let lab = SwarmLab::new("swlht", Path::new("/nonexistent/swarmwall"), &plan).unwrap();
    let config = lab.daemon_config();
    let checked = Config::parse(&config)
        .and_then(Config::check)
        .unwrap_or_else(|e| panic!("{e:#}\n{config}"));
    assert_eq!(checked.raw.l7.tls_ports, [HTTPS_PORT, HANDSHAKE_PORT]);
    let log = lab.access_log_path();
    assert!(
        config.contains(&format!("{:?}", log.to_str().unwrap())),
        "{config}"
    );
    assert!(
        config.contains(&format!("\"{SERVER}:{HTTPS_PORT}\"")),
        "{config}"
    );

    let (traffic, ()) = lab
        .run_https_traffic(&plan, HTTPS_PORT, &AtomicBool::new(false), || ())
        .unwrap();
    let (visitors, bots) = (
        Tally::of(&traffic.visitors, None),
        Tally::of(&traffic.bots, None),
    );
    assert!(visitors.requests >= 6, "{visitors:?}");
    assert!(bots.requests >= 10 * 7, "{bots:?}");
    assert_eq!(visitors.ok, visitors.requests, "{:?}", traffic.visitors);
    assert_eq!(bots.ok, bots.requests, "{:?}", traffic.bots);
    assert!(traffic.bots.iter().all(
        |o| o.src.to_string().starts_with(&format!("{TLS_BOT_NET}."))
            && SWARM_PAGES.contains(&o.path.as_str())
    ));
    let https = lab.https(HTTPS_PORT).unwrap();
    assert_eq!(https.served_total(), visitors.ok + bots.ok);
    assert_eq!(https.access_log(), Some(log.as_path()));

    let parser = LineParser::new(
        Format::parse("combined", None).unwrap(),
        vec![SocketAddr::new(SERVER.parse().unwrap(), HTTPS_PORT)],
        Vec::new(),
    );
    let text = std::fs::read_to_string(&log).unwrap();
    let mut per_source: HashMap<_, u64> = HashMap::new();
    for line in text.lines() {
        let e = parser
            .parse(line.as_bytes())
            .unwrap_or_else(|r| panic!("{r:?}: {line}"));
        *per_source.entry(e.src).or_default() += 1;
    }
    assert_eq!(per_source, https.served());

    // A TLS bot reaches each of the site's ports through the lab's routes; the second HTTPS
    // port keeps no log.
    let bot = lab.tls_bot_addrs[0];
    assert_eq!(
        lab.probe_https(bot, HTTPS_PORT, "/").unwrap().result,
        Ok(200)
    );
    assert_eq!(
        lab.probe_https(bot, HANDSHAKE_PORT, "/").unwrap().result,
        Ok(200)
    );
    assert_eq!(lab.probe(bot, SERVER, HOST, "/").unwrap().result, Ok(200));
    let unlogged = lab.https(HANDSHAKE_PORT).unwrap();
    assert_eq!(unlogged.access_log(), None);
    assert_eq!(unlogged.served_total(), 1);
    assert!(lab.https(4433).is_err());
}
