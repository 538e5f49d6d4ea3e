//! `swarmwall config check [FILE]`, and where the client commands find the daemon: the
//! configuration file the daemon reads (its `socket` and `pin_dir`), unless the command line
//! says otherwise.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use swarmwall::daemon::config::{self, Config, DEFAULT_PATH};

/// `config` subcommands.
#[derive(clap::Subcommand)]
pub enum ConfigCommand {
    /// Load and check a configuration file as the daemon would, values too: exit 0 with one
    /// line if it is good, 1 with the line or key at fault and what it allows.
    #[command(after_help = "Examples:\n  \
        swarmwall config check\n  \
        swarmwall config check new.toml && cp new.toml /etc/swarmwall/config.toml && \
        systemctl reload swarmwall")]
    Check {
        /// The file [default: --config, else /etc/swarmwall/config.toml].
        file: Option<PathBuf>,
    },
}

/// Runs a `config` subcommand; `global` is the `--config` option.
pub fn run(cmd: ConfigCommand, global: Option<&Path>) -> Result<()> {
    match cmd {
        ConfigCommand::Check { file } => {
            let path = file
                .as_deref()
                .or(global)
                .unwrap_or(Path::new(DEFAULT_PATH));
            let checked = Config::load(path, true)?
                .check()
                .with_context(|| format!("in {}", path.display()))?;
            let missing = config::missing_interfaces(&checked.raw.interfaces);
            if !missing.is_empty() {
                anyhow::bail!(
                    "in {}: interfaces: no such interface on this host: {}",
                    path.display(),
                    missing.join(", ")
                );
            }
            let ifaces = &checked.raw.interfaces;
            let note = if ifaces.is_empty() {
                "no interfaces (the daemon needs -i IFACE)".to_string()
            } else {
                format!("interfaces {}", ifaces.join(", "))
            };
            println!("ok: {} is valid; {note}", path.display());
            Ok(())
        }
    }
}

/// What the client commands take from the configuration file.
pub struct ClientConfig {
    /// The daemon's control socket.
    pub socket: PathBuf,
    /// The daemon's pin directory.
    pub pin_dir: PathBuf,
    /// The daemon's rule store (for `rules repair`, which works on the files).
    pub state_dir: PathBuf,
    /// Its nftables table, if it mirrors rules there (for `down`).
    pub firewall: Option<swarmwall::firewall::NftConfig>,
}

impl ClientConfig {
    /// The file's settings if `cli`'s command needs them: a command that talks to the daemon
    /// without `--socket`, or `down` without `--pin-dir` or `--socket`. The daemon reads the
    /// file itself; the local commands don't need it.
    pub(super) fn for_command(cli: &super::Cli) -> Result<Option<Self>> {
        use super::Command as C;
        let needed = match &cli.command {
            C::Check { .. }
            | C::Run(_)
            | C::Daemon { .. }
            | C::Analyze { .. }
            | C::Completions { .. }
            | C::Config(_) => false,
            // Always: only the file says whether there is a firewall table to remove.
            C::Down { .. } => true,
            C::Rules(super::RulesCommand::Repair(a)) => a.state_dir.is_none(),
            _ => cli.socket.is_none(),
        };
        needed
            .then(|| Self::load(cli.config.as_deref()))
            .transpose()
    }

    /// Reads `path` (`--config`, which must exist and be valid) or else the default file, if it
    /// is there: a missing default file means the defaults, as for the daemon. Clients are
    /// often not root: a default file they may not read means the defaults too.
    pub fn load(path: Option<&Path>) -> Result<Self> {
        let c = match path {
            Some(p) => Config::load(p, true)?,
            None => match Config::load(Path::new(DEFAULT_PATH), false) {
                Err(e)
                    if e.downcast_ref::<std::io::Error>().map(|e| e.kind())
                        == Some(std::io::ErrorKind::PermissionDenied) =>
                {
                    tracing::debug!("{e:#}; using the default socket and pin directory");
                    Config::default()
                }
                r => r?,
            },
        };
        Ok(ClientConfig {
            firewall: c.firewall.check()?,
            socket: c.socket,
            pin_dir: c.pin_dir,
            state_dir: c.state_dir,
        })
    }
}

/// `down`'s pin directory: `--pin-dir`, else the config file's `pin_dir`, else the default.
pub fn down_pin_dir(given: Option<PathBuf>, file: Option<&ClientConfig>) -> PathBuf {
    given
        .or_else(|| file.map(|f| f.pin_dir.clone()))
        .unwrap_or_else(|| Config::default().pin_dir)
}
