//! `swarmwall daemon`: owns the pinned data plane and the rule store, serves the control API.
//!
//! Start-up: read the config, check that every interface exists, open the store (recovering a
//! damaged journal), open the pinned data plane (locking its directory for the daemon's life;
//! adopting one a previous daemon left running, or building a new one that appears only once
//! complete), reconcile the maps with the store, attach (or swap the new program into pinned
//! links), then serve the control socket. Both locks are waited for a few seconds, for a
//! predecessor still exiting; a start killed at any point leaves nothing the next one trips on.
//! SIGHUP re-reads the config; SIGTERM/SIGINT stop serving and leave the data plane pinned and
//! enforcing (or remove it with `--detach-on-exit`).

pub mod config;
pub mod controller;
pub mod host_addrs;
pub mod swarms;
pub mod top;

use std::{
    io::IsTerminal as _,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use tokio::signal::unix::{SignalKind, signal};

use crate::{
    Dataplane,
    api::{Control, auth::Auth, server},
    dataplane::remove_pins,
    store::Store,
};
use config::{Config, DEFAULT_PATH};
use controller::{Daemon, Inner};

/// Options of `swarmwall daemon`; each overrides the config file.
#[derive(Clone, Debug, clap::Args)]
pub struct DaemonArgs {
    /// Configuration file (TOML): the CLI's global `--config`. Without it a missing
    /// /etc/swarmwall/config.toml means defaults; a file named here must exist.
    #[arg(skip)]
    pub config: Option<PathBuf>,
    /// Interface to attach to (repeatable); adds to the config file's `interfaces`.
    #[arg(short, long = "iface", value_name = "IFACE")]
    pub ifaces: Vec<String>,
    /// Attach mode: auto tries native (driver) XDP and falls back to generic.
    #[arg(long, value_name = "auto|driver|generic")]
    pub attach: Option<String>,
    /// Rule journal and snapshots [config: state_dir].
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Where maps and links are pinned, on a BPF filesystem [config: pin_dir].
    #[arg(long, value_name = "DIR")]
    pub pin_dir: Option<PathBuf>,
    /// On exit, detach XDP and remove the pinned maps (default: leave them enforcing).
    #[arg(long)]
    pub detach_on_exit: bool,
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_env("SWARMWALL_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // Under systemd, journald adds time and unit; colour codes would end up in the journal.
    let _ = if std::io::stderr().is_terminal() {
        builder.try_init()
    } else {
        builder.with_ansi(false).without_time().try_init()
    };
}

fn load_config(args: &DaemonArgs, socket: Option<&PathBuf>) -> Result<config::Checked> {
    let (path, required) = match &args.config {
        Some(p) => (p.clone(), true),
        None => (PathBuf::from(DEFAULT_PATH), false),
    };
    let mut c = Config::load(&path, required)?;
    for i in &args.ifaces {
        if !c.interfaces.contains(i) {
            c.interfaces.push(i.clone());
        }
    }
    if let Some(a) = &args.attach {
        c.attach_mode = a.clone();
    }
    if let Some(d) = &args.state_dir {
        c.state_dir = d.clone();
    }
    if let Some(d) = &args.pin_dir {
        c.pin_dir = d.clone();
    }
    if let Some(s) = socket {
        c.socket = s.clone();
    }
    if c.interfaces.is_empty() {
        anyhow::bail!(
            "no interface to attach to: give one with -i IFACE or list them in {} (interfaces = [\"eth0\"])",
            path.display()
        );
    }
    c.check().with_context(|| format!("in {}", path.display()))
}

/// Runs the daemon until SIGTERM or SIGINT. `socket` overrides the config's socket path (the
/// CLI's global `--socket`).
pub fn run(args: DaemonArgs, socket: Option<PathBuf>) -> Result<()> {
    init_logging();
    let config = load_config(&args, socket.as_ref())?;
    // Before anything is created: a typo in an interface name must leave no state behind.
    for iface in &config.raw.interfaces {
        crate::dataplane::ifindex(iface).with_context(|| format!("checking interface {iface}"))?;
    }
    let (store, warnings) = Store::open(&config.raw.state_dir).with_context(|| {
        format!(
            "opening the rule store in {}",
            config.raw.state_dir.display()
        )
    })?;
    let mut startup_warnings = Vec::new();
    for w in warnings {
        tracing::warn!("rule store: {w}");
        startup_warnings.push(format!("rule store: {w}"));
    }
    let mut dp = Dataplane::open_pinned(config.sizes, &config.raw.pin_dir)
        .context("opening the data plane")?;
    for w in dp.take_warnings() {
        tracing::warn!("adopting pinned maps: {w}");
        startup_warnings.push(format!("adopting pinned maps: {w}"));
    }
    if dp.adopted() {
        tracing::info!(
            pin_dir = %config.raw.pin_dir.display(),
            rules = dp.table().len(),
            "adopted the data plane a previous daemon left running"
        );
    }
    let host = host_addrs::HostAddrs::open().context("following the host's addresses")?;
    let mirror = config.firewall.clone().map(crate::firewall::Mirror::new);
    let mut inner = Inner {
        dp,
        store,
        config,
        host,
        mirror,
        mirror_out: None,
    };
    inner.expire().map_err(|e| anyhow::anyhow!("{e}"))?;
    let (added, removed) = inner
        .reconcile()
        .context("reconciling the maps with the rule store")?;
    tracing::info!(
        added,
        removed,
        rules = inner.store.state().rules.len(),
        "maps match the rule store"
    );
    for iface in inner.config.raw.interfaces.clone() {
        let mode = inner
            .dp
            .attach(&iface, inner.config.attach)
            .with_context(|| format!("attaching to {iface}"))?;
        tracing::info!(iface, ?mode, "attached");
    }
    inner.dp.pin_links().context("pinning the XDP links")?;
    apply_l7(&mut inner)?;
    let reader = if inner.config.raw.swarm.enabled {
        Some(
            inner
                .dp
                .take_l7_reader()
                .context("opening the L7 ring buffer")?,
        )
    } else {
        None
    };
    let settings = swarms::Settings {
        detector: inner.config.detector.clone(),
        policy: inner.config.policy.clone(),
        ..swarms::Settings::default()
    };
    // Like [swarm], the log sources are read at start; a SIGHUP does not change them.
    let log_sources = inner.config.raw.sources.log.clone();

    let socket_path = inner.config.raw.socket.clone();
    let gid = inner.config.socket_gid;
    // Like the log sources, read at start.
    let metrics_at = inner.config.metrics;
    let detach = args.detach_on_exit;
    let pin_dir = inner.config.raw.pin_dir.clone();
    let daemon = Arc::new(Daemon::new(inner));
    for w in startup_warnings {
        daemon.add_warning(w);
    }
    let pipeline = match reader {
        Some(reader) => {
            let (book, counters) = daemon.swarm_state();
            let enforcer: Arc<dyn swarms::Enforcer> = daemon.clone();
            let mut sources: Vec<Box<dyn crate::sources::EventSource>> =
                vec![Box::new(crate::sources::kernel::KernelRing::new(reader))];
            for l in &log_sources {
                let tailed = crate::sources::tailed::TailedLog::new(l)
                    .with_context(|| format!("following the access log {}", l.path))?;
                tracing::info!(path = %l.path, format = %l.format, "following an access log");
                sources.push(Box::new(tailed));
            }
            let p = swarms::Pipeline::start(sources, enforcer, settings, book, counters)
                .context("starting the swarm detector threads")?;
            tracing::info!("swarm detection is on");
            Some(p)
        }
        None => {
            tracing::info!("swarm detection is off ([swarm] enabled = false)");
            None
        }
    };

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async {
        let listener = server::bind(&socket_path, gid)
            .with_context(|| format!("binding the control socket {}", socket_path.display()))?;
        tracing::info!(socket = %socket_path.display(), "serving the control API");
        let ticker = tokio::spawn(housekeeping(Arc::clone(&daemon)));
        let reloader = tokio::spawn(reload_on_hup(
            Arc::clone(&daemon),
            args.clone(),
            socket.clone(),
        ));
        let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
        let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
        let shutdown = async move {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
                _ = int.recv() => tracing::info!("SIGINT: shutting down"),
            }
        };
        let control: Arc<dyn Control> = daemon.clone();
        let metrics = match metrics_at {
            Some(addr) => serve_metrics(addr, &daemon, Arc::clone(&control)).await,
            None => None,
        };
        server::serve(listener, control, Auth { read_group: gid }, shutdown)
            .await
            .context("serving the control API")?;
        ticker.abort();
        reloader.abort();
        if let Some(m) = metrics {
            m.abort();
        }
        let _ = std::fs::remove_file(&socket_path);
        anyhow::Ok(())
    })?;
    drop(pipeline);
    if detach {
        daemon.with(|i| i.dp.detach_all()).context("detaching")?;
        remove_pins(&pin_dir).context("removing pins")?;
        tracing::info!("detached and removed the pinned data plane");
    } else {
        tracing::info!(pin_dir = %pin_dir.display(), "exiting; the data plane stays pinned and enforcing");
    }
    Ok(())
}

/// Starts the `/metrics` listener on `addr`. One that cannot bind (the port taken, an address
/// not on this host) is a warning in `swarmwall status`, not a reason to stop protecting.
async fn serve_metrics(
    addr: std::net::SocketAddr,
    daemon: &Daemon,
    control: Arc<dyn Control>,
) -> Option<tokio::task::JoinHandle<()>> {
    match tokio::net::TcpListener::bind(addr).await {
        Ok(listener) => {
            tracing::info!("serving Prometheus metrics at http://{addr}/metrics");
            Some(tokio::spawn(async move {
                if let Err(e) = crate::metrics::serve(listener, control).await {
                    tracing::error!("the metrics listener on {addr} failed: {e}");
                }
            }))
        }
        Err(e) => {
            let w = format!("[metrics] listen = \"{addr}\": cannot listen there: {e}; no metrics");
            tracing::warn!("{w}");
            daemon.add_warning(w);
            None
        }
    }
}

/// Tells the kernel which payloads to sample (`[l7]`), or none when swarm detection is off.
fn apply_l7(inner: &mut Inner) -> Result<()> {
    let c = &inner.config.raw;
    let r = if c.swarm.enabled {
        inner
            .dp
            .set_l7(&c.l7.http_ports, &c.l7.tls_ports, c.l7.sample_rate)
    } else {
        inner.dp.set_l7(&[], &[], 0)
    };
    r.context("configuring L7 sampling")
}

/// Once a second: expire rules, and sample counters for `top` (less often when a sample is slow,
/// so the sampler never takes more than half of a core).
async fn housekeeping(daemon: Arc<Daemon>) {
    let mut next_sample = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let d = Arc::clone(&daemon);
        let sample_now = Instant::now() >= next_sample;
        let r = tokio::task::spawn_blocking(move || {
            if let Err(e) = d.with(|i| i.expire()) {
                tracing::error!("expiring rules: {e}");
            }
            d.reconcile_mirror_if_due();
            if sample_now {
                let t = Instant::now();
                if let Err(e) = d.sample() {
                    tracing::error!("sampling counters: {e}");
                }
                return Some(t.elapsed());
            }
            None
        })
        .await;
        if let Ok(Some(took)) = r {
            next_sample = Instant::now() + took.max(Duration::from_secs(1));
        }
    }
}

/// SIGHUP: re-read the config file. The allow list, own addresses, default TTL, prefix
/// bounds and `[l7]` take effect at once; interfaces, sizes, paths, the socket and `[swarm]`
/// need a restart.
///
/// `[swarm]` waits for a restart because its reader owns the kernel's ring buffer, which the
/// daemon takes once, at start-up: turning detection on here would make the kernel sample into
/// a ring nobody reads, and off-then-on would need the ring back from a stopped reader. So the
/// running `[swarm]` settings (and with them the L7 sampling on or off) are kept, and the log
/// says what waits.
async fn reload_on_hup(daemon: Arc<Daemon>, args: DaemonArgs, socket: Option<PathBuf>) {
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::error!("cannot install the SIGHUP handler; config reload is off");
        return;
    };
    while hup.recv().await.is_some() {
        match load_config(&args, socket.as_ref()) {
            Ok(mut new) => {
                let r = daemon.with(|i| {
                    if new.raw.interfaces != i.config.raw.interfaces
                        || new.sizes != i.config.sizes
                        || new.raw.socket != i.config.raw.socket
                        || new.firewall != i.config.firewall
                    {
                        tracing::warn!(
                            "interfaces, map sizes, the socket and [firewall] change only on \
                             restart"
                        );
                    }
                    keep_running_swarm(&mut new, &i.config);
                    i.config = new;
                    i.reconcile()?;
                    apply_l7(i)
                });
                match r {
                    Ok(_) => tracing::info!("SIGHUP: configuration reloaded"),
                    Err(e) => {
                        tracing::error!("SIGHUP: applying the reloaded configuration: {e:#}")
                    }
                }
            }
            Err(e) => tracing::error!("SIGHUP: keeping the old configuration: {e:#}"),
        }
    }
}

/// Keeps the running `[swarm]` settings in a reloaded `new` config, warning if the file
/// changed them (they take effect on restart).
fn keep_running_swarm(new: &mut config::Checked, running: &config::Checked) {
    if new.raw.swarm == running.raw.swarm {
        return;
    }
    if new.raw.swarm.enabled != running.raw.swarm.enabled {
        tracing::warn!(
            "SIGHUP: [swarm] enabled = {} takes effect on restart; detection stays {} until then",
            new.raw.swarm.enabled,
            if running.raw.swarm.enabled {
                "on"
            } else {
                "off"
            }
        );
    } else {
        tracing::warn!("SIGHUP: [swarm] settings take effect on restart");
    }
    new.raw.swarm = running.raw.swarm.clone();
    new.detector = running.detector.clone();
    new.policy = running.policy.clone();
}
