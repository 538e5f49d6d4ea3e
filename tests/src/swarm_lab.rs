//! The swarm lab: a small web host knocked about by a bot swarm, on one machine, with the real
//! `swarmwall` daemon defending it. Used by `cargo xtask lab` (the demo) and by the live test.
//!
//! Three network namespaces:
//! - *server*: an HTTP server ([`web::WebServer`]) on [`SERVER`]:80, the same site over HTTPS
//!   ([`tls::TlsServer`]) on [`SERVER`]:443 writing an nginx `combined` access log that the
//!   daemon tails ([`SwarmLab::daemon_config`]) and on [`SERVER`]:[`HANDSHAKE_PORT`] with no
//!   log at all, and the swarmwall daemon, its XDP program on both of the server's veths; a
//!   neighbour's site on [`NEIGHBOUR`]:80 (a multi-tenant host: the swarm's rules must leave it
//!   alone);
//! - *visitors*: legitimate browsers, [`VISITOR_NET`] `.10` onwards;
//! - *bots*: the swarm, [`BOT_NET`] `.10` onwards (made-up addresses that exist only here),
//!   and optionally IPv6 bots in [`BOT_NET6`]`/64`, which attack the site's IPv6 address
//!   [`SERVER6`]; the HTTPS acts' swarm, [`TLS_BOT_NET`] `.10` onwards (other attackers: the
//!   first act's are blocked by then).
//!
//! Three acts: [`SwarmLab::run_traffic`] over HTTP (the kernel samples the requests), and
//! [`SwarmLab::run_https_traffic`] over TLS, where the kernel sees only handshakes — on
//! [`HTTPS_PORT`] the pages are in the access log, on [`HANDSHAKE_PORT`] the handshakes are all
//! there is.
//!
//! Nothing has a default route and the server does not forward: the bots reach the server over
//! their own veth through a /24 route, and the server's replies to them end in the bots'
//! namespace — never on the host's network. The daemon's pins live on a BPF filesystem mounted
//! for the lab; state, socket, config and log in a directory under `/run`. Dropping the lab stops
//! the daemon (SIGTERM), removes its pins with `swarmwall down`, unmounts, and deletes the
//! namespaces, also when a test fails.

use std::{
    fs,
    net::{IpAddr, SocketAddr},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU32, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

use crate::{
    netns::{ChildGuard, NetNs, VethPair, add_addr},
    tls::{self, Profile, Rotation, TlsClient, TlsServer},
    web::{self, Browsing, Failure, Outcome, WebServer},
};

/// The web server's address (site `shop.example`).
pub const SERVER: &str = "198.51.100.1";
/// The neighbour's site on the same host (`blog.example`), which the swarm does not attack.
pub const NEIGHBOUR: &str = "198.51.100.3";
/// The neighbour's `Host`.
pub const NEIGHBOUR_HOST: &str = "blog.example";
/// The site's IPv6 address (on the visitors' side, like [`SERVER`]).
pub const SERVER6: &str = "2001:db8:5::1";
/// The server's IPv6 address on the bots' side.
pub const SERVER6_BOT_SIDE: &str = "2001:db8:b::1";
/// The IPv6 swarm's /64 (made-up sources inside the documentation prefix).
pub const BOT_NET6: &str = "2001:db8:bad::";
/// The server's address on the bots' side.
pub const SERVER_BOT_SIDE: &str = "203.0.113.1";
/// The visitors' network.
pub const VISITOR_NET: &str = "198.51.100";
/// The swarm's network (made-up sources, TEST-NET-3).
pub const BOT_NET: &str = "203.0.113";
/// The HTTPS acts' swarm network (made-up sources, TEST-NET-1), routed over the bots' veth.
pub const TLS_BOT_NET: &str = "192.0.2";
/// The site's HTTPS port, whose access log the daemon reads.
pub const HTTPS_PORT: u16 = 443;
/// The site's second HTTPS port, which no log covers: the daemon sees only its handshakes.
pub const HANDSHAKE_PORT: u16 = 8443;
/// The `Host` every client sends.
pub const HOST: &str = "shop.example";
/// The image-heavy pages the swarm hammers.
pub const SWARM_PAGES: [&str; 2] = ["/gallery/1", "/gallery/2"];
/// The swarm's User-Agent.
pub const BOT_AGENT: &str = "Mozilla/5.0 (compatible; GalleryFetcher/2.1)";

/// A daemon configuration for the lab: small maps (the lab needs few, and they load faster),
/// defaults otherwise.
pub const DAEMON_CONFIG: &str = "\
# written for the swarmwall lab
[maps]
sources = 65536
exact = 16384
prefix = 4096
allow = 1024
rules = 20480
cache = 4096
";

/// How much traffic, and when.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Legitimate visitors (at most 200).
    pub visitors: usize,
    /// Bots (at most 200).
    pub bots: usize,
    /// IPv6 bots (at most 200), attacking [`SERVER6`] like the others attack [`SERVER`].
    pub bots6: usize,
    /// Requests per second per bot (page views, with `bots_load_assets`).
    pub bot_rps: f64,
    /// The bots load each page with its assets, as `wget -p` does (see
    /// [`web::Swarm::load_assets`]).
    pub bots_load_assets: bool,
    /// When the swarm starts, after the visitors.
    pub bots_after: Duration,
    /// How long the swarm runs.
    pub bots_for: Duration,
    /// How long the visitors browse.
    pub browse_for: Duration,
}

impl Default for Plan {
    fn default() -> Self {
        Self {
            visitors: 6,
            bots: 40,
            bots6: 0,
            bot_rps: 4.0,
            bots_load_assets: false,
            bots_after: Duration::from_secs(2),
            bots_for: Duration::from_secs(10),
            browse_for: Duration::from_secs(14),
        }
    }
}

/// Every request the clients made.
#[derive(Debug, Default)]
pub struct Traffic {
    /// The visitors' requests.
    pub visitors: Vec<Outcome>,
    /// The bots' requests.
    pub bots: Vec<Outcome>,
    /// When the swarm started.
    pub bots_started: Option<Instant>,
}

impl Traffic {
    /// When the first bot request found the door shut (a SYN that XDP dropped).
    pub fn first_bot_drop(&self) -> Option<Instant> {
        self.bots
            .iter()
            .filter(|o| o.result == Err(Failure::ConnectTimeout))
            .map(|o| o.at)
            .min()
    }

    /// The bots' requests from `grace` after the first drop on (by then every member detected
    /// with the first ones should be blocked); `None` if no bot request was ever dropped.
    pub fn bots_after_block(&self, grace: Duration) -> Option<Tally> {
        let first = self.first_bot_drop()?;
        Some(Tally::of(&self.bots, Some(first + grace)))
    }

    /// The same traffic with only the bots whose address `keep` accepts (e.g. one address
    /// family, each blocked by rules of its own).
    pub fn bots_from(&self, keep: impl Fn(&IpAddr) -> bool) -> Traffic {
        Traffic {
            visitors: self.visitors.clone(),
            bots: self.bots.iter().filter(|o| keep(&o.src)).cloned().collect(),
            bots_started: self.bots_started,
        }
    }

    /// For a failure message: each bot served from `grace` after the first drop on, with how
    /// many requests were served then and how long after the first drop its own first drop
    /// came (`None`: never dropped).
    pub fn late_bots(&self, grace: Duration) -> Vec<(IpAddr, u64, Option<Duration>)> {
        let Some(first) = self.first_bot_drop() else {
            return Vec::new();
        };
        let mut by_src: std::collections::BTreeMap<IpAddr, (u64, Option<Instant>)> =
            std::collections::BTreeMap::new();
        for o in &self.bots {
            let e = by_src.entry(o.src).or_default();
            if o.at >= first + grace && o.succeeded() {
                e.0 += 1;
            }
            if o.result == Err(Failure::ConnectTimeout) {
                e.1 = Some(e.1.map_or(o.at, |t| t.min(o.at)));
            }
        }
        by_src
            .into_iter()
            .filter(|(_, (late, _))| *late > 0)
            .map(|(src, (late, drop))| {
                (src, late, drop.map(|d| d.saturating_duration_since(first)))
            })
            .collect()
    }
}

/// The lab. See the module documentation.
pub struct SwarmLab {
    daemon: Option<ChildGuard>,
    web: WebServer,
    /// Started once the lab's directory (where its access log goes) exists.
    https: Option<TlsServer>,
    /// On [`HANDSHAKE_PORT`], without a log.
    https_unlogged: Option<TlsServer>,
    web6: WebServer,
    neighbour: WebServer,
    links: [VethPair; 2],
    /// The server's namespace.
    pub server: NetNs,
    /// The visitors' namespace.
    pub visitors: NetNs,
    /// The bots' namespace.
    pub bots: NetNs,
    /// The visitors' addresses.
    pub visitor_addrs: Vec<IpAddr>,
    /// The bots' addresses, IPv4 then IPv6.
    pub bot_addrs: Vec<IpAddr>,
    /// The HTTPS acts' bots' addresses, as many as [`Plan::bots`], in [`TLS_BOT_NET`].
    pub tls_bot_addrs: Vec<IpAddr>,
    root: PathBuf,
    binary: PathBuf,
}

fn addrs(net: &str, n: usize) -> Vec<IpAddr> {
    (0..n)
        .filter_map(|i| format!("{net}.{}", 10 + i).parse().ok())
        .collect()
}

impl SwarmLab {
    /// Builds the namespaces, veths, addresses and routes, mounts a BPF filesystem for the pins
    /// and starts the web server. `prefix` starts every namespace name (`{prefix}srv-PID-N`, and
    /// `vis`, `bot`); `binary` is the `swarmwall` executable.
    pub fn new(prefix: &str, binary: &Path, plan: &Plan) -> Result<SwarmLab> {
        if plan.visitors > 200 || plan.bots > 200 || plan.bots6 > 200 {
            bail!(
                "the lab has room for 200 visitors and 200 bots of each family (asked for {}, {} \
                 and {})",
                plan.visitors,
                plan.bots,
                plan.bots6
            );
        }
        static N: AtomicU32 = AtomicU32::new(0);
        let root = PathBuf::from(format!(
            "/run/swarmwall-lab-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let server = NetNs::new(&format!("{prefix}srv"))?;
        let visitors = NetNs::new(&format!("{prefix}vis"))?;
        let bots = NetNs::new(&format!("{prefix}bot"))?;
        let to_visitors = VethPair::new(
            &server,
            &visitors,
            &format!("{SERVER}/24"),
            &format!("{VISITOR_NET}.2/24"),
        )?;
        let to_bots = VethPair::new(
            &server,
            &bots,
            &format!("{SERVER_BOT_SIDE}/24"),
            &format!("{BOT_NET}.2/24"),
        )?;
        let visitor_addrs = addrs(VISITOR_NET, plan.visitors);
        let mut bot_addrs = addrs(BOT_NET, plan.bots);
        for a in &visitor_addrs {
            add_addr(&visitors, &to_visitors.iface_b, &format!("{a}/24"))?;
        }
        for a in &bot_addrs {
            add_addr(&bots, &to_bots.iface_b, &format!("{a}/24"))?;
        }
        let tls_bot_addrs = addrs(TLS_BOT_NET, plan.bots);
        for a in &tls_bot_addrs {
            add_addr(&bots, &to_bots.iface_b, &format!("{a}/24"))?;
        }
        // The server's replies to them go back over the bots' veth, like the others'.
        server.run(&[
            "ip",
            "route",
            "add",
            &format!("{TLS_BOT_NET}.0/24"),
            "via",
            &format!("{BOT_NET}.2"),
        ])?;
        // IPv6: the site's address and the visitors' side on one /64, the bots' link on
        // another, the bots' own /64 routed over it (so the server sees a remote /64).
        add_addr(&server, &to_visitors.iface_a, &format!("{SERVER6}/64"))?;
        add_addr(&visitors, &to_visitors.iface_b, "2001:db8:5::2/64")?;
        add_addr(&server, &to_bots.iface_a, &format!("{SERVER6_BOT_SIDE}/64"))?;
        add_addr(&bots, &to_bots.iface_b, "2001:db8:b::2/64")?;
        for i in 0..plan.bots6 {
            let a: IpAddr = format!("{BOT_NET6}{:x}", 0x10 + i).parse()?;
            add_addr(&bots, &to_bots.iface_b, &format!("{a}/64"))?;
            bot_addrs.push(a);
        }
        server.run(&[
            "ip",
            "-6",
            "route",
            "add",
            &format!("{BOT_NET6}/64"),
            "via",
            "2001:db8:b::2",
        ])?;
        bots.run(&[
            "ip",
            "-6",
            "route",
            "add",
            "2001:db8:5::/64",
            "via",
            SERVER6_BOT_SIDE,
        ])?;
        bots.run(&[
            "ip",
            "route",
            "add",
            &format!("{VISITOR_NET}.0/24"),
            "via",
            SERVER_BOT_SIDE,
        ])?;
        add_addr(&server, &to_visitors.iface_a, &format!("{NEIGHBOUR}/24"))?;
        let web = WebServer::start(&server, SocketAddr::new(SERVER.parse()?, 80))?;
        let neighbour = WebServer::start(&server, SocketAddr::new(NEIGHBOUR.parse()?, 80))?;
        let web6 = WebServer::start(&server, SocketAddr::new(SERVER6.parse()?, 80))?;
        let mut lab = SwarmLab {
            daemon: None,
            web,
            https: None,
            https_unlogged: None,
            web6,
            neighbour,
            links: [to_visitors, to_bots],
            server,
            visitors,
            bots,
            visitor_addrs,
            bot_addrs,
            tls_bot_addrs,
            root,
            binary: binary.to_path_buf(),
        };
        // From here on a failure drops `lab`, which undoes all of this.
        fs::create_dir_all(lab.root.join("bpf"))
            .with_context(|| format!("creating {}", lab.root.display()))?;
        // Mounted before `ip netns exec` copies the mount table, so the daemon sees it (it
        // hides /sys/fs/bpf) and the lab can remove what the daemon pinned.
        let st = Command::new("mount")
            .args(["-t", "bpf", "bpf"])
            .arg(lab.root.join("bpf"))
            .status()
            .context("running mount")?;
        if !st.success() {
            bail!(
                "mounting a BPF filesystem on {}",
                lab.root.join("bpf").display()
            );
        }
        lab.https = Some(TlsServer::start(
            &lab.server,
            SocketAddr::new(SERVER.parse()?, HTTPS_PORT),
            HOST,
            Some(&lab.access_log_path()),
        )?);
        lab.https_unlogged = Some(TlsServer::start(
            &lab.server,
            SocketAddr::new(SERVER.parse()?, HANDSHAKE_PORT),
            HOST,
            None,
        )?);
        Ok(lab)
    }

    /// The HTTPS server's access log (nginx `combined`), which the daemon tails.
    pub fn access_log_path(&self) -> PathBuf {
        self.root.join("https-access.log")
    }

    /// The daemon's configuration: [`DAEMON_CONFIG`], ClientHellos sampled on both TLS ports,
    /// and the HTTPS site's access log as a log source for [`SERVER`]:[`HTTPS_PORT`] (none for
    /// [`HANDSHAKE_PORT`]).
    pub fn daemon_config(&self) -> String {
        format!(
            "{DAEMON_CONFIG}\n[l7]\ntls_ports = [{HTTPS_PORT}, {HANDSHAKE_PORT}]\n\n\
             # the HTTPS site's access log: its pages, which the kernel cannot see\n\
             [[sources.log]]\npath = {:?}\nformat = \"combined\"\nsite = [\"{SERVER}:{HTTPS_PORT}\"]\n",
            self.access_log_path().display().to_string()
        )
    }

    /// The HTTPS server on `port` ([`HTTPS_PORT`] or [`HANDSHAKE_PORT`]).
    pub fn https(&self, port: u16) -> Result<&TlsServer> {
        let server = match port {
            HTTPS_PORT => self.https.as_ref(),
            HANDSHAKE_PORT => self.https_unlogged.as_ref(),
            _ => {
                bail!("the lab serves HTTPS on ports {HTTPS_PORT} and {HANDSHAKE_PORT}, not {port}")
            }
        };
        server.with_context(|| format!("the lab's HTTPS server on port {port} is not running"))
    }

    /// The control socket.
    pub fn socket(&self) -> PathBuf {
        self.root.join("control.sock")
    }

    /// The daemon's log file.
    pub fn log_path(&self) -> PathBuf {
        self.root.join("daemon.log")
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The server's interfaces (XDP is attached to both).
    pub fn server_ifaces(&self) -> [&str; 2] {
        [&self.links[0].iface_a, &self.links[1].iface_a]
    }

    /// The web server.
    pub fn web(&self) -> &WebServer {
        &self.web
    }

    /// The web server on the site's IPv6 address.
    pub fn web6(&self) -> &WebServer {
        &self.web6
    }

    /// The neighbour's web server.
    pub fn neighbour(&self) -> &WebServer {
        &self.neighbour
    }

    /// One request for `path` from `src` (a visitor's or a bot's address) to `server`:80 with
    /// `Host: host` — what a single client sees, e.g. a blocked bot trying the neighbour's site.
    pub fn probe(&self, src: IpAddr, server: &str, host: &str, path: &str) -> Result<Outcome> {
        let ns = self.ns_of(src)?;
        let one = one_request(src, SocketAddr::new(server.parse()?, 80), host, path);
        web::swarm(ns, &one, &AtomicBool::new(false))?
            .into_iter()
            .next()
            .with_context(|| format!("no request went out from {src} to {server}"))
    }

    /// [`SwarmLab::probe`] over HTTPS: one request for `path` from `src` to the site on
    /// [`SERVER`]:`port`, on a TLS connection of its own with the bot profile.
    pub fn probe_https(&self, src: IpAddr, port: u16, path: &str) -> Result<Outcome> {
        let ns = self.ns_of(src)?;
        let server = SocketAddr::new(SERVER.parse()?, port);
        let one = one_request(src, server, HOST, path);
        let tls = self.tls_client(port, &[Profile::bot()], Rotation::PerClient)?;
        tls::swarm(ns, &one, &tls, &AtomicBool::new(false))?
            .into_iter()
            .next()
            .with_context(|| format!("no request went out from {src} to {server}"))
    }

    fn ns_of(&self, src: IpAddr) -> Result<&NetNs> {
        if self.bot_addrs.contains(&src) || self.tls_bot_addrs.contains(&src) {
            Ok(&self.bots)
        } else if self.visitor_addrs.contains(&src) {
            Ok(&self.visitors)
        } else {
            bail!("{src} is neither a visitor nor a bot of this lab");
        }
    }

    /// Clients trusting the certificate of the HTTPS server on `port`.
    fn tls_client(
        &self,
        port: u16,
        profiles: &[Profile],
        rotation: Rotation,
    ) -> Result<Arc<TlsClient>> {
        Ok(Arc::new(TlsClient::new(
            self.https(port)?.certificate(),
            HOST,
            profiles,
            rotation,
        )?))
    }
}

/// One request for `path` from `src` to `server` with `Host: host`, as a swarm of one.
fn one_request(src: IpAddr, server: SocketAddr, host: &str, path: &str) -> web::Swarm {
    web::Swarm {
        server,
        host: host.into(),
        sources: vec![src],
        pages: vec![path.into()],
        // One request: the first goes out at once, the next would be due after the run.
        per_source_rps: 1.0,
        duration: Duration::from_millis(900),
        connect_timeout: Duration::from_millis(500),
        user_agent: BOT_AGENT.into(),
        load_assets: false,
    }
}

impl SwarmLab {
    /// Starts the daemon in the server namespace with `config` (TOML) and returns once its
    /// control socket answers. It gets SIGTERM if this process dies without cleaning up.
    pub fn start_daemon(&mut self, config: &str) -> Result<()> {
        let config_path = self.root.join("config.toml");
        fs::write(&config_path, config)
            .with_context(|| format!("writing {}", config_path.display()))?;
        let log = fs::File::create(self.log_path()).context("creating the daemon log")?;
        let binary = self
            .binary
            .to_str()
            .context("the binary path is not UTF-8")?;
        let (socket, state, pins, cfg) = (
            self.socket(),
            self.root.join("state"),
            self.root.join("bpf/sw"),
            config_path,
        );
        let [if_v, if_b] = self.server_ifaces();
        let argv = [
            binary,
            "--socket",
            path_str(&socket)?,
            "daemon",
            "--config",
            path_str(&cfg)?,
            "-i",
            if_v,
            "-i",
            if_b,
            "--state-dir",
            path_str(&state)?,
            "--pin-dir",
            path_str(&pins)?,
        ];
        let mut cmd = self.server.command(&argv);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            // Its own process group: a Ctrl-C at the terminal reaches the lab, which then stops
            // the daemon in order.
            .process_group(0);
        // SAFETY: prctl is async-signal-safe and changes only the child's own state.
        unsafe {
            cmd.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM)
                    .map_err(std::io::Error::from)
            });
        }
        let child = cmd.spawn().context("starting the swarmwall daemon")?;
        self.daemon = Some(ChildGuard::new(child));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if std::os::unix::net::UnixStream::connect(&socket).is_ok() {
                return Ok(());
            }
            if let Some(d) = self.daemon.as_mut()
                && let Some(status) = d.try_wait()?
            {
                bail!("the daemon exited ({status}); its log:\n{}", self.log());
            }
            if Instant::now() > deadline {
                bail!(
                    "the daemon did not come up in 30 s; its log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs the `swarmwall` CLI against the lab's daemon.
    pub fn cli(&self, args: &[&str]) -> Result<Output> {
        Command::new(&self.binary)
            .arg("--socket")
            .arg(self.socket())
            .args(args)
            .env_remove("SWARMWALL_SOCKET")
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running swarmwall {}", args.join(" ")))
    }

    /// Runs the CLI and returns its stdout; fails with its stderr unless it succeeds.
    pub fn cli_ok(&self, args: &[&str]) -> Result<String> {
        let o = self.cli(args)?;
        if !o.status.success() {
            bail!(
                "swarmwall {} failed ({}): {}",
                args.join(" "),
                o.status,
                String::from_utf8_lossy(&o.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&o.stdout).into_owned())
    }

    /// Runs the CLI with `--json` and parses its answer.
    pub fn cli_json(&self, args: &[&str]) -> Result<Value> {
        let mut a = args.to_vec();
        a.push("--json");
        let out = self.cli_ok(&a)?;
        serde_json::from_str(&out).with_context(|| format!("parsing the JSON of {a:?}: {out}"))
    }

    /// Runs the visitors and (after `plan.bots_after`) the swarm, and meanwhile `during` on
    /// this thread; returns every request's outcome and what `during` returned. Bounded by the
    /// plan's durations; `stop` ends it early.
    pub fn run_traffic<T>(
        &self,
        plan: &Plan,
        stop: &AtomicBool,
        during: impl FnOnce() -> T,
    ) -> Result<(Traffic, T)> {
        self.run_act(plan, None, stop, during)
    }

    /// [`SwarmLab::run_traffic`] over HTTPS, to [`SERVER`]:`port` ([`HTTPS_PORT`] or
    /// [`HANDSHAKE_PORT`]): the visitors browse over TLS (browser profiles, one per visitor,
    /// [`Profile::browsers`] in turn) and the [`TLS_BOT_NET`] bots attack over TLS with the bot
    /// profile, a new handshake per request. IPv4 only.
    pub fn run_https_traffic<T>(
        &self,
        plan: &Plan,
        port: u16,
        stop: &AtomicBool,
        during: impl FnOnce() -> T,
    ) -> Result<(Traffic, T)> {
        self.run_act(plan, Some(port), stop, during)
    }

    /// One act: plain HTTP to port 80, or HTTPS to `https_port`.
    fn run_act<T>(
        &self,
        plan: &Plan,
        https_port: Option<u16>,
        stop: &AtomicBool,
        during: impl FnOnce() -> T,
    ) -> Result<(Traffic, T)> {
        let (port, visitor_tls, bot_tls) = match https_port {
            Some(port) => (
                port,
                Some(self.tls_client(port, &Profile::browsers(), Rotation::PerClient)?),
                Some(self.tls_client(port, &[Profile::bot()], Rotation::PerClient)?),
            ),
            None => (80, None, None),
        };
        let server = SocketAddr::new(SERVER.parse()?, port);
        let bot_addrs = if https_port.is_some() {
            &self.tls_bot_addrs
        } else {
            &self.bot_addrs
        };
        let browsing = Browsing {
            server,
            host: HOST.into(),
            sources: self.visitor_addrs.clone(),
            duration: plan.browse_for,
            connect_timeout: Duration::from_secs(1),
        };
        let swarm_on = |server: SocketAddr, v6: bool| web::Swarm {
            server,
            host: HOST.into(),
            sources: bot_addrs
                .iter()
                .filter(|a| a.is_ipv6() == v6)
                .copied()
                .collect(),
            pages: SWARM_PAGES.iter().map(|p| p.to_string()).collect(),
            per_source_rps: plan.bot_rps,
            duration: plan.bots_for,
            connect_timeout: Duration::from_millis(500),
            user_agent: BOT_AGENT.into(),
            load_assets: plan.bots_load_assets,
        };
        let swarms = [
            swarm_on(server, false),
            swarm_on(SocketAddr::new(SERVER6.parse()?, port), true),
        ];
        std::thread::scope(|scope| {
            let visitors = scope.spawn(|| match &visitor_tls {
                None => web::browse(&self.visitors, &browsing, stop),
                Some(t) => tls::browse(&self.visitors, &browsing, t, stop),
            });
            let bots = scope.spawn(|| -> Result<(Vec<Outcome>, Option<Instant>)> {
                let start = Instant::now() + plan.bots_after;
                while Instant::now() < start {
                    if stop.load(Ordering::Relaxed) {
                        return Ok((Vec::new(), None));
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                let started = Instant::now();
                // Each family's bots on its own thread, against the site's address in it.
                let mut all = Vec::new();
                std::thread::scope(|inner| -> Result<()> {
                    let handles: Vec<_> = swarms
                        .iter()
                        .filter(|s| !s.sources.is_empty())
                        .map(|s| {
                            inner.spawn(|| match &bot_tls {
                                None => web::swarm(&self.bots, s, stop),
                                Some(t) => tls::swarm(&self.bots, s, t, stop),
                            })
                        })
                        .collect();
                    for h in handles {
                        all.extend(
                            h.join()
                                .map_err(|_| anyhow::anyhow!("a bots' thread panicked"))??,
                        );
                    }
                    Ok(())
                })?;
                all.sort_by_key(|o| o.at);
                Ok((all, Some(started)))
            });
            let t = during();
            let visitors = visitors
                .join()
                .map_err(|_| anyhow::anyhow!("the visitors' thread panicked"))??;
            let (bots, bots_started) = bots
                .join()
                .map_err(|_| anyhow::anyhow!("the bots' thread panicked"))??;
            Ok((
                Traffic {
                    visitors,
                    bots,
                    bots_started,
                },
                t,
            ))
        })
    }

    /// Where the daemon pins its maps and links.
    pub fn pin_dir(&self) -> PathBuf {
        self.root.join("bpf/sw")
    }

    /// Rewrites the daemon's config file with `config` and sends the daemon SIGHUP. Returns
    /// once the daemon has logged the outcome of the reload (at most 10 s).
    pub fn reload_daemon(&self, config: &str) -> Result<()> {
        let d = self.daemon.as_ref().context("the daemon is not running")?;
        fs::write(self.root.join("config.toml"), config).context("rewriting the config")?;
        let before = self.log().matches("SIGHUP").count();
        let pid = i32::try_from(d.id()).context("daemon pid")?;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGHUP,
        )
        .context("sending SIGHUP")?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.log().matches("SIGHUP").count() == before {
            if Instant::now() > deadline {
                bail!(
                    "the daemon logged nothing about SIGHUP; its log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Stops the daemon with SIGTERM (it leaves the data plane pinned), waiting up to 10 s.
    pub fn stop_daemon(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            if let Ok(pid) = i32::try_from(d.id()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            while matches!(d.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            // Dropping the guard kills it if it is still running.
        }
    }
}

fn path_str(p: &Path) -> Result<&str> {
    p.to_str()
        .with_context(|| format!("{} is not UTF-8", p.display()))
}

impl Drop for SwarmLab {
    fn drop(&mut self) {
        self.stop_daemon();
        let _ = fs::remove_file(self.socket());
        let _ = Command::new(&self.binary)
            .arg("--socket")
            .arg(self.socket())
            .args(["down", "--pin-dir"])
            .arg(self.root.join("bpf/sw"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = Command::new("umount").arg(self.root.join("bpf")).status();
        let _ = fs::remove_dir_all(&self.root);
        // Then the fields: the web server stops, the veths and namespaces are deleted.
    }
}

/// What the clients saw, counted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Requests made.
    pub requests: u64,
    /// Answered with a 2xx.
    pub ok: u64,
    /// Connection attempts that got no answer (a SYN dropped by XDP).
    pub dropped: u64,
    /// Other failures (refused, reset, timeouts while reading, non-2xx).
    pub failed: u64,
}

impl Tally {
    /// Counts `outcomes`, optionally only those at or after `since`.
    pub fn of(outcomes: &[Outcome], since: Option<Instant>) -> Tally {
        let mut t = Tally::default();
        for o in outcomes.iter().filter(|o| since.is_none_or(|s| o.at >= s)) {
            t.requests += 1;
            if o.succeeded() {
                t.ok += 1;
            } else if o.result == Err(Failure::ConnectTimeout) {
                t.dropped += 1;
            } else {
                t.failed += 1;
            }
        }
        t
    }
}
