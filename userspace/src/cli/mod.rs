//! The `swarmwall` command line: local commands (`check`, `run`), the daemon, and the client
//! commands that talk to a running daemon over its control socket.
//!
//! Exit codes: 0 ok; 1 the daemon (or a local command) failed; 2 usage error, or a destructive
//! command refused without `--yes`; 3 the daemon could not be reached.
//!
//! With `--json` anywhere on the command line, an error is one JSON object on standard error,
//! `{"error":{"code":"…","message":"…"}}` (the daemon's own shape), with the same exit code;
//! standard output then stays empty. The codes are the daemon's (`bad_request`, `not_found`,
//! `conflict`, `forbidden`, …) and the CLI's own: `usage`, `refused` (needs `--yes`),
//! `unreachable`, `timeout`, `transport`, `bad_response`, `error`.

mod config_cmd;
mod fmt;
mod local;
mod remote;
mod repair;
mod watch;

use std::{
    io::{self, Write as _},
    net::IpAddr,
    path::PathBuf,
    process::ExitCode,
    time::Duration,
};

use clap::{CommandFactory as _, Parser, Subcommand, ValueEnum};
use swarmwall::{
    Proto, Target,
    api::client::{Client, ClientError},
};

const EXAMPLES: &str = "\
Examples:
  swarmwall daemon -i eth0                     # run the daemon (as root)
  swarmwall status                             # is it running, what is it doing?
  swarmwall top --watch                        # the busiest sources, live
  swarmwall swarms                             # bot swarms detected, and what was blocked
  swarmwall swarms show 3                      # one swarm: pages, members, rules, evidence
  swarmwall block add 192.0.2.7 --ttl 10m --reason 'scraper'
  swarmwall block add 198.51.100.0/24 --dst 203.0.113.5 --port 443 --proto tcp
  swarmwall block list --target 192.0.2.7         # every rule that can match it
  swarmwall block test 192.0.2.7 --dst 203.0.113.5 --port 443   # which rule decides?
  swarmwall block del 192.0.2.7
  swarmwall swarms pardon 3 192.0.2.7          # unblock a swarm member for good
  swarmwall rules history                      # every change, who and why
  swarmwall rules undo 12                      # revert change 12
  swarmwall mode observe --reason 'testing'    # count, don't drop
  swarmwall check                              # does the XDP program load on this kernel?
  swarmwall run -i eth0 --duration 30s         # foreground run without a daemon";

/// swarmwall: count packets per source with XDP and drop listed sources at line rate.
///
/// `daemon`, `check` and `run` need root (or CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON) and Linux
/// 5.18 or newer; the other commands talk to a running daemon over its control socket.
#[derive(Parser)]
#[command(version, after_help = EXAMPLES)]
struct Cli {
    /// The daemon's control socket [default: the config file's `socket`, else
    /// /run/swarmwall/control.sock].
    #[arg(
        long,
        global = true,
        env = "SWARMWALL_SOCKET",
        value_name = "PATH",
        display_order = 900
    )]
    socket: Option<PathBuf>,
    /// Configuration file (TOML), read by the daemon and, for `socket`, `pin_dir` and
    /// `state_dir`, by the other commands. A file named here must exist; without it a missing
    /// /etc/swarmwall/config.toml means the defaults.
    #[arg(short, long, global = true, value_name = "FILE", display_order = 901)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon: attach XDP, serve the control socket, keep the rules.
    #[command(after_help = "Examples:\n  \
        swarmwall daemon -i eth0\n  \
        swarmwall --socket /tmp/sw.sock daemon -i eth0 -i eth1")]
    Daemon {
        #[command(flatten)]
        args: swarmwall::daemon::DaemonArgs,
    },
    /// Find bot swarms in a pcap capture or a web server's access log and show the rules
    /// swarmwall would have pushed, offline: the same parser, detector and policy as the daemon,
    /// on the file's timestamps. Needs no root and no daemon.
    #[command(after_help = "Examples:\n  \
        swarmwall analyze yesterday.pcap\n  \
        swarmwall analyze capture.pcap --json | jq '.rules | length'\n  \
        swarmwall analyze capture.pcap --allow 192.0.2.0/24    # never block the office\n  \
        swarmwall analyze /var/log/nginx/access.log --site 203.0.113.10:443\n\n\
        Capture web traffic with e.g.: tcpdump -i eth0 -w capture.pcap 'tcp dst port 80'")]
    Analyze {
        /// The capture (pcap, Ethernet link type) or access log; told apart by content.
        file: PathBuf,
        /// An access log's format: combined, common, json, or an nginx log_format string
        /// [default: whichever of combined, common and json reads the first lines].
        #[arg(long, value_name = "FORMAT")]
        format: Option<String>,
        /// The site an access log's requests went to (repeatable, one per address family)
        /// [default: the lines' $server_addr:$server_port].
        #[arg(long, value_name = "ADDR:PORT")]
        site: Vec<std::net::SocketAddr>,
        /// A reverse proxy or CDN (repeatable): its lines take the client from X-Forwarded-For.
        #[arg(long, value_name = "CIDR")]
        trusted_proxy: Vec<ipnet::IpNet>,
        /// Print one JSON object: {"swarms": [...], "rules": [...], ...}.
        #[arg(long)]
        json: bool,
        /// Never block these addresses or prefixes (repeatable).
        #[arg(long, value_name = "ADDR|PREFIX")]
        allow: Vec<swarmwall::Target>,
        /// The server's own addresses (repeatable): never blocked either.
        #[arg(long, value_name = "ADDR|PREFIX")]
        own: Vec<swarmwall::Target>,
    },
    /// Detach XDP everywhere and remove the pinned data plane (maps, counters, links), and the
    /// nftables table when the config's [firewall] backend is nftables. Stop the daemon first
    /// (it refuses while a daemon owns the pin directory); the rule journal is kept, so a new
    /// daemon starts with the same rules.
    #[command(after_help = "Examples:\n  \
        systemctl stop swarmwall && swarmwall down\n  \
        swarmwall down --pin-dir /sys/fs/bpf/swarmwall")]
    Down {
        /// The daemon's pin directory [default: the config file's `pin_dir`, else
        /// /sys/fs/bpf/swarmwall].
        #[arg(long, value_name = "DIR")]
        pin_dir: Option<PathBuf>,
    },
    /// Show the daemon's state: mode, interfaces, rule counts, counters.
    #[command(after_help = "Examples:\n  \
        swarmwall status\n  \
        swarmwall status --json | jq .stats")]
    Status {
        /// Print the API's JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Show the busiest sources (top talkers), by packet, bit or drop rate.
    #[command(after_help = "Examples:\n  \
        swarmwall top\n  \
        swarmwall top --by drops --window 1m --limit 50\n  \
        swarmwall top --watch                   # redraw every second; q quits")]
    Top(TopArgs),
    /// Bot swarms the daemon detected (many sources hammering the same few pages of one site)
    /// and what it did about them: in enforce mode each member is blocked, scoped to the attacked
    /// site, with a TTL; in observe mode the rules are only planned and shown.
    #[command(
        after_help = "Examples:\n  \
        swarmwall swarms\n  \
        swarmwall swarms show 3\n  \
        swarmwall swarms --json | jq '.swarms[] | {id, state, members: (.members | length)}'\n\n\
        `swarmwall swarms show ID` lists the changes that pushed a swarm's rules; \
        `swarmwall rules undo CHANGE` reverts one\n\
        (a pardon: the swarm does not push those rules again). Keep an address from ever \
        being blocked with `swarmwall allow add ADDR`.",
        args_conflicts_with_subcommands = true
    )]
    Swarms(SwarmsArgs),
    /// Add, import, remove and list block rules.
    #[command(subcommand)]
    Block(BlockCommand),
    /// Manage the allow list: sources that are never blocked.
    #[command(subcommand)]
    Allow(AllowCommand),
    /// Show or set the mode: `enforce` drops, `observe` only counts what would be dropped.
    #[command(after_help = "Examples:\n  \
        swarmwall mode\n  \
        swarmwall mode observe --reason 'checking a new list'\n  \
        swarmwall mode enforce")]
    Mode(ModeArgs),
    /// The change journal: list changes and undo them.
    #[command(subcommand)]
    Rules(RulesCommand),
    /// Check the configuration file.
    #[command(subcommand)]
    Config(config_cmd::ConfigCommand),
    /// Print a shell completion script.
    #[command(after_help = "Examples:\n  \
        swarmwall completions bash > /etc/bash_completion.d/swarmwall\n  \
        swarmwall completions zsh > \"${fpath[1]}/_swarmwall\"\n  \
        swarmwall completions fish > ~/.config/fish/completions/swarmwall.fish")]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Load and verify the XDP program without attaching it, and print its map capacities.
    #[command(after_help = "Examples:\n  \
        swarmwall check\n  \
        swarmwall check --json")]
    Check {
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Attach to interfaces in the foreground, without a daemon, apply rules, print per-source
    /// counters, and detach on exit (Ctrl-C, SIGTERM or --duration).
    #[command(after_help = "Examples:\n  \
        swarmwall run -i eth0 --duration 30s\n  \
        swarmwall run -i eth0 --block 192.0.2.7 --block 198.51.100.0/24 --port 80 --proto tcp\n  \
        swarmwall run -i eth0 --block 192.0.2.7 --observe --json")]
    Run(local::RunArgs),
}

/// `swarms`.
#[derive(clap::Args)]
struct SwarmsArgs {
    #[command(subcommand)]
    command: Option<SwarmsCommand>,
    /// Print the API's JSON (every swarm, with members and evidence) instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum SwarmsCommand {
    /// One swarm in full: pages, members, rules, evidence, what the guards refused.
    Show {
        /// Swarm id (the first column of `swarmwall swarms`).
        id: u64,
        /// Print the API's JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Pardon a swarm, or some of its members: remove their rules (one change, undoable) and
    /// never push rules for them again for this swarm. Without addresses, every member.
    #[command(after_help = "Examples:\n  \
        swarmwall swarms pardon 3                       # every member\n  \
        swarmwall swarms pardon 3 192.0.2.7 192.0.2.9 --reason 'our monitoring'\n\
        Keep an address from ever being blocked, by any swarm or rule: `swarmwall allow add ADDR`.")]
    Pardon {
        /// Swarm id (the first column of `swarmwall swarms`).
        id: u64,
        /// Members to pardon (addresses, or prefixes covering some); default every member.
        #[arg(value_name = "ADDR|PREFIX")]
        members: Vec<Target>,
        /// Why, recorded in the journal.
        #[arg(long, value_name = "TEXT", value_parser = parse_reason)]
        reason: Option<String>,
        /// Print the API's JSON answer.
        #[arg(long)]
        json: bool,
    },
}

/// `top`.
#[derive(clap::Args)]
struct TopArgs {
    /// Sort key.
    #[arg(long, value_enum, default_value_t = TopBy::Pps)]
    by: TopBy,
    /// Window the rates are computed over (e.g. 10s, 1m).
    #[arg(long, default_value = "10s", value_parser = parse_window)]
    window: Duration,
    /// How many sources to show.
    #[arg(long, default_value_t = 20)]
    limit: usize,
    /// Print the API's JSON instead of a table.
    #[arg(long, conflicts_with = "watch")]
    json: bool,
    /// Redraw every second until q or Ctrl-C (needs a terminal).
    #[arg(long)]
    watch: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum TopBy {
    /// Packets per second.
    Pps,
    /// Bits per second.
    Bps,
    /// Dropped packets per second.
    Drops,
}

impl TopBy {
    fn as_str(self) -> &'static str {
        match self {
            TopBy::Pps => "pps",
            TopBy::Bps => "bps",
            TopBy::Drops => "drops",
        }
    }
}

fn parse_window(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if d < Duration::from_secs(1) {
        return Err("the window must be at least 1s".into());
    }
    Ok(d)
}

/// A `--reason`: any text without control characters (they would break tables and logs).
fn parse_reason(s: &str) -> Result<String, String> {
    swarmwall::api::check_reason(Some(s)).map_err(|e| e.to_string())?;
    Ok(s.to_owned())
}

fn parse_ttl(s: &str) -> Result<Duration, String> {
    let range = format!(
        "expected 1s to {} (omit --ttl for the daemon's default)",
        humantime::format_duration(swarmwall::rules::MAX_TTL)
    );
    match humantime::parse_duration(s) {
        Ok(d) if (Duration::from_secs(1)..=swarmwall::rules::MAX_TTL).contains(&d) => Ok(d),
        Ok(_) | Err(humantime::DurationError::NumberOverflow) => Err(range),
        Err(e) => Err(format!("{e}; {range}")),
    }
}

#[derive(Subcommand)]
enum BlockCommand {
    /// Block source addresses or prefixes (one change: one undo reverts them all).
    #[command(after_help = "Examples:\n  \
        swarmwall block add 192.0.2.7\n  \
        swarmwall block add 192.0.2.7 --ttl 10m --reason 'login brute force'\n  \
        swarmwall block add 198.51.100.0/24 --dst 203.0.113.5 --port 443 --proto tcp\n  \
        swarmwall block add 2001:db8:bad::/48 --observe     # count what it would drop\n  \
        swarmwall block add 10.0.0.0/8 --force              # wider than the daemon's bound")]
    Add(BlockAdd),
    /// Block every address or prefix in a file: one per line, `#` comments and blank lines
    /// allowed. The whole file is one change.
    #[command(after_help = "Examples:\n  \
        swarmwall block import bad-hosts.txt --ttl 1d --reason 'abuse feed 2026-05-20'\n  \
        swarmwall block import bad-hosts.txt --ttl 1d --dry-run   # what would change\n  \
        curl -s https://example.invalid/list.txt | swarmwall block import -\n\
        Importing again is safe (like `ipset -exist`): rules already there with the same action \
        and scope\n\
        get the new expiry, or are counted unchanged; a refused line fails the whole import.")]
    Import(BlockImport),
    /// Remove rules by id or by target (an address or prefix removes every rule whose target is
    /// exactly that), or all of them. Removing more than one needs --yes.
    #[command(
        visible_alias = "rm",
        after_help = "Examples:\n  \
        swarmwall block del 7\n  \
        swarmwall block del 192.0.2.8                   # the rules for exactly 192.0.2.8\n  \
        swarmwall block del 7 8 9 --yes --reason 'false positive'\n  \
        swarmwall block del --all --yes\n\
        Undo a removal with `swarmwall rules undo <change-id>`."
    )]
    Del(BlockDel),
    /// List the rules, all or those matching every filter given.
    #[command(
        visible_alias = "ls",
        after_help = "Examples:\n  \
        swarmwall block list\n  \
        swarmwall block list --target 192.0.2.8         # every rule that can match it\n  \
        swarmwall block list --target 192.0.2.0/24      # ...and every rule inside the /24\n  \
        swarmwall block list --origin swarm             # the detector's rules\n  \
        swarmwall block list --actor 0                  # rules root added\n  \
        swarmwall block list --json | jq '.[] | select(.hits > 0)'"
    )]
    List(BlockList),
    /// Show which rule would decide a packet from ADDR, the way the kernel decides: the allow
    /// list first, then the address's own rules, then the prefixes covering it (longest first);
    /// the first live drop rule whose scope matches, else an observe rule, else pass.
    #[command(after_help = "Examples:\n  \
        swarmwall block test 192.0.2.8\n  \
        swarmwall block test 192.0.2.8 --dst 203.0.113.5 --port 443      # tcp assumed\n  \
        swarmwall block test 2001:db8::7 --proto icmpv6 --json\n\
        Leave out --dst, --port or --proto and rules scoped on them do not match (listed as \
        'other rules').")]
    Test(BlockTest),
}

/// `block list`.
#[derive(clap::Args)]
struct BlockList {
    /// Rules whose target overlaps this address or prefix: it, the prefixes covering it, and
    /// (for a prefix) the rules inside it.
    #[arg(long, value_name = "ADDR|PREFIX")]
    target: Option<Target>,
    /// Who made the rules: the swarm detector, or an admin through the API.
    #[arg(long, value_enum)]
    origin: Option<Origin>,
    /// The uid that added the rules (`0` for root), or an actor name as listed.
    #[arg(long, value_name = "UID|NAME")]
    actor: Option<String>,
    /// Print the API's JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum Origin {
    /// Pushed by the swarm detector (actor `swarmwall`).
    #[value(alias = "swarmwall")]
    Swarm,
    /// Added through the API (`block add`, `block import`).
    Admin,
}

/// `block test`.
#[derive(clap::Args)]
struct BlockTest {
    /// The packet's source address.
    #[arg(value_name = "ADDR")]
    src: IpAddr,
    /// Its destination address.
    #[arg(long, value_name = "ADDR")]
    dst: Option<IpAddr>,
    /// Its destination port (tcp unless --proto says udp).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    port: Option<u16>,
    /// Its protocol: tcp, udp, icmp or icmpv6.
    #[arg(long)]
    proto: Option<Proto>,
    /// Print the API's JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// Options shared by `block add` and `block import`.
#[derive(clap::Args)]
struct RuleOpts {
    /// Remove the rule after this long (e.g. 90s, 10m, 1d); enforced in the kernel even if the
    /// daemon stops. Default: the daemon's configured TTL.
    #[arg(long, value_parser = parse_ttl)]
    ttl: Option<Duration>,
    /// Only block traffic to this destination address (one site of several).
    #[arg(long, value_name = "ADDR")]
    dst: Option<IpAddr>,
    /// Only block traffic to this destination port.
    #[arg(long, value_name = "N")]
    port: Option<u16>,
    /// Only block this protocol: tcp, udp, icmp or icmpv6.
    #[arg(long)]
    proto: Option<Proto>,
    /// Only count what the rule would drop; pass the traffic.
    #[arg(long)]
    observe: bool,
    /// Why, recorded in the journal.
    #[arg(long, value_name = "TEXT", value_parser = parse_reason)]
    reason: Option<String>,
    /// Allow prefixes wider than the daemon's bound (never /0, never the allow list or the
    /// host's own addresses).
    #[arg(long)]
    force: bool,
    /// Print the API's JSON answer.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct BlockAdd {
    /// Source addresses or prefixes, e.g. 192.0.2.7, 198.51.100.0/24, 2001:db8::/32.
    #[arg(value_name = "ADDR|PREFIX", required = true)]
    targets: Vec<Target>,
    #[command(flatten)]
    opts: RuleOpts,
}

#[derive(clap::Args)]
struct BlockImport {
    /// The file, or `-` for standard input.
    #[arg(value_name = "FILE|-")]
    file: PathBuf,
    /// Show what the import would add, update, leave unchanged and refuse (with why); change
    /// nothing.
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    opts: RuleOpts,
}

#[derive(clap::Args)]
struct BlockDel {
    /// Rule ids (see `swarmwall block list`), or addresses and prefixes: every rule whose
    /// target is exactly that.
    #[arg(
        value_name = "ID|ADDR|PREFIX",
        required_unless_present = "all",
        conflicts_with = "all"
    )]
    ids: Vec<RuleRef>,
    /// Remove every rule.
    #[arg(long)]
    all: bool,
    /// Confirm removing more than one rule.
    #[arg(long, short = 'y')]
    yes: bool,
    /// Why, recorded in the journal.
    #[arg(long, value_name = "TEXT", value_parser = parse_reason)]
    reason: Option<String>,
    /// Print the API's JSON answer.
    #[arg(long)]
    json: bool,
}

/// A rule named on the command line: by id, or by its target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RuleRef {
    /// A rule id.
    Id(u64),
    /// Every rule whose target is exactly this.
    Target(Target),
}

impl std::str::FromStr for RuleRef {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if let Ok(id) = s.parse::<u64>() {
            return Ok(RuleRef::Id(id));
        }
        s.parse::<Target>()
            .map(RuleRef::Target)
            .map_err(|e| format!("'{s}' is neither a rule id nor an address or prefix ({e})"))
    }
}

#[derive(Subcommand)]
enum AllowCommand {
    /// Never block this address or prefix (wins over every rule, in the kernel).
    #[command(after_help = "Examples:\n  \
        swarmwall allow add 203.0.113.10 --reason 'monitoring'\n  \
        swarmwall allow add 2001:db8:1::/48")]
    Add(AllowArgs),
    /// Remove an entry from the allow list (entries from the config file stay).
    #[command(
        visible_alias = "rm",
        after_help = "Examples:\n  swarmwall allow del 203.0.113.10"
    )]
    Del(AllowArgs),
    /// List the allow list.
    #[command(
        visible_alias = "ls",
        after_help = "Examples:\n  swarmwall allow list\n  swarmwall allow list --json"
    )]
    List {
        /// Print the API's JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Args)]
struct AllowArgs {
    /// Address or prefix.
    #[arg(value_name = "ADDR|PREFIX")]
    target: Target,
    /// Why, recorded in the journal.
    #[arg(long, value_name = "TEXT", value_parser = parse_reason)]
    reason: Option<String>,
    /// Print the API's JSON answer.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct ModeArgs {
    /// The new mode; without it, print the current one.
    #[arg(value_enum)]
    mode: Option<ModeArg>,
    /// Why, recorded in the journal.
    #[arg(long, value_name = "TEXT", requires = "mode", value_parser = parse_reason)]
    reason: Option<String>,
    /// Print the API's JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum ModeArg {
    /// Drop what the rules match.
    Enforce,
    /// Count what the rules match, drop nothing.
    Observe,
}

#[derive(Subcommand)]
enum RulesCommand {
    /// List changes to rules, the allow list and the mode, newest first.
    #[command(after_help = "Examples:\n  \
        swarmwall rules history\n  \
        swarmwall rules history --limit 100 --json")]
    History {
        /// How many changes.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Print the API's JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revert a change (an undo is itself a change, and can be undone).
    #[command(after_help = "Examples:\n  \
        swarmwall rules undo 12")]
    Undo {
        /// The change id (see `swarmwall rules history`).
        #[arg(value_name = "CHANGE-ID")]
        change_id: u64,
        /// Print the API's JSON answer.
        #[arg(long)]
        json: bool,
    },
    /// Examine or mend a damaged rule journal, with the daemon stopped.
    ///
    /// The daemon refuses to start when the journal is damaged anywhere but its last line (a
    /// crash can only cut the last line short): dropping the rest would silently remove rules.
    /// Alone, this says what is damaged and what each way out keeps. `--drop-line N` drops just
    /// that line and keeps the changes after it; `--keep-valid-prefix --yes` keeps only the
    /// lines before the damage. Either keeps a copy of the journal as it was
    /// (journal.jsonl.damaged-<time>) and records the repair in the journal. Works on the files
    /// directly, so it refuses while a daemon has the store open. Exit status 1 when the
    /// daemon would refuse the store as it is.
    #[command(after_help = "Examples:\n  \
        swarmwall rules repair                        # what is wrong, what each way out keeps\n  \
        swarmwall rules repair --drop-line 10         # drop only line 10\n  \
        swarmwall rules repair --keep-valid-prefix --yes\n  \
        swarmwall rules repair --state-dir /srv/sw --json")]
    Repair(repair::RepairArgs),
}

/// A command refused before it did anything, like a usage error (exit 2): a destructive one
/// without `--yes`, `top --watch` without a terminal.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

/// Runs the command line; the process exit code.
pub fn main() -> ExitCode {
    // Decided before parsing, so a usage error is JSON too when --json was asked for.
    let json = std::env::args_os().skip(1).any(|a| a == "--json");
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if json && e.use_stderr() => {
            let message = e.render().to_string();
            let message = message.trim().trim_start_matches("error: ");
            eprintln!("{}", json_error("usage", message));
            return ExitCode::from(2);
        }
        Err(e) => e.exit(),
    };
    // The daemon sets up its own logging (its filter and journald-friendly format).
    if !matches!(cli.command, Command::Daemon { .. }) {
        tracing_subscriber::fmt()
            .with_writer(io::stderr)
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "info".into()),
            )
            .init();
    }
    match dispatch(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if json => {
            eprintln!("{}", json_error(error_code(&e), &format!("{e:#}")));
            exit_code(&e)
        }
        Err(e) => {
            eprintln!("swarmwall: {e:#}");
            exit_code(&e)
        }
    }
}

/// `{"error":{"code":…,"message":…}}`: the daemon's error shape, for `--json` callers.
fn json_error(code: &str, message: &str) -> String {
    serde_json::json!({ "error": { "code": code, "message": message } }).to_string()
}

/// The machine-readable code of a failed command (see the module docs).
fn error_code(e: &anyhow::Error) -> &str {
    if e.downcast_ref::<Refused>().is_some() {
        return "refused";
    }
    match e.downcast_ref::<ClientError>() {
        Some(ClientError::Api { code, .. }) => code,
        Some(ClientError::Connect { .. }) => "unreachable",
        Some(ClientError::Timeout { .. }) => "timeout",
        Some(ClientError::Transport { .. }) => "transport",
        Some(ClientError::BadResponse { .. }) => "bad_response",
        None => "error",
    }
}

fn exit_code(e: &anyhow::Error) -> ExitCode {
    if e.downcast_ref::<Refused>().is_some() {
        return ExitCode::from(2);
    }
    match e.downcast_ref::<ClientError>() {
        Some(c) if c.is_unreachable() => ExitCode::from(3),
        _ => ExitCode::FAILURE,
    }
}

fn dispatch(cli: Cli) -> anyhow::Result<()> {
    let file = config_cmd::ClientConfig::for_command(&cli)?;
    let socket = cli.socket;
    let config = cli.config;
    let client_socket = socket
        .clone()
        .or_else(|| file.as_ref().map(|f| f.socket.clone()));
    let client = || {
        Client::new(
            client_socket
                .clone()
                .unwrap_or_else(|| swarmwall::api::server::DEFAULT_SOCKET.into()),
        )
    };
    match cli.command {
        Command::Check { json } => local::check(json),
        Command::Run(args) => local::run(args),
        Command::Daemon { mut args } => {
            args.config = config;
            swarmwall::daemon::run(args, socket)
        }
        Command::Config(cmd) => config_cmd::run(cmd, config.as_deref()),
        Command::Analyze {
            file,
            format,
            site,
            trusted_proxy,
            json,
            allow,
            own,
        } => {
            let log = swarmwall::analyze::LogOptions {
                format,
                sites: site,
                trusted_proxies: trusted_proxy,
            };
            analyze(&file, json, allow, own, log)
        }
        Command::Down { pin_dir } => {
            let firewall = file.as_ref().and_then(|f| f.firewall.clone());
            let pin_dir = config_cmd::down_pin_dir(pin_dir, file.as_ref());
            local::down(&pin_dir, client().path(), firewall.as_ref())
        }
        Command::Completions { shell } => {
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "swarmwall", &mut out);
            emit(&String::from_utf8_lossy(&out))
        }
        Command::Status { json } => block_on(remote::status(&client(), json)),
        Command::Top(args) if args.watch => block_on(watch::top(&client(), args)),
        Command::Top(args) => block_on(remote::top(&client(), &args)),
        Command::Block(cmd) => block_on(remote::block(&client(), cmd)),
        Command::Allow(cmd) => block_on(remote::allow(&client(), cmd)),
        Command::Mode(args) => block_on(remote::mode(&client(), args)),
        Command::Rules(RulesCommand::Repair(args)) => repair::run(args, file.as_ref()),
        Command::Rules(cmd) => block_on(remote::rules(&client(), cmd)),
        Command::Swarms(args) => block_on(remote::swarms(&client(), args)),
    }
}

/// Runs a client command on a current-thread runtime.
fn block_on<F: Future<Output = anyhow::Result<()>>>(f: F) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("starting the async runtime: {e}"))?
        .block_on(f)
}

/// Writes to stdout; a closed pipe (`swarmwall block list | head`) is not an error.
fn emit(text: &str) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

fn analyze(
    file: &std::path::Path,
    json: bool,
    allow: Vec<swarmwall::Target>,
    own: Vec<swarmwall::Target>,
    log: swarmwall::analyze::LogOptions,
) -> anyhow::Result<()> {
    use swarmwall::analyze::{Options, analyze_file};
    let opts = Options {
        allow,
        own,
        log,
        ..Options::default()
    };
    let report = analyze_file(file, &opts)?;
    for w in &report.warnings {
        eprintln!("swarmwall: warning: {w}");
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    let read = if report.lines > 0 {
        format!("{} lines", report.lines)
    } else {
        format!("{} packets", report.packets)
    };
    let tls = if report.handshakes > 0 {
        format!(", {} TLS handshakes", report.handshakes)
    } else {
        String::new()
    };
    println!(
        "{}: {read}, {} HTTP requests{tls}, {} swarm(s), {} rule(s)",
        file.display(),
        report.requests,
        report.swarms.len(),
        report.rules.len()
    );
    for t in &report.tls {
        let top = |v: &[swarmwall::analyze::ShareOut]| {
            v.first().map_or("-".to_owned(), |x| {
                format!("{} ({:.0}%)", x.value, x.share * 100.0)
            })
        };
        println!(
            "  tls {}: {} handshakes from {} sources, ja4 {}, alpn {}",
            t.sni.as_deref().unwrap_or("(no SNI)"),
            t.handshakes,
            t.sources,
            top(&t.ja4),
            top(&t.alpn)
        );
    }
    for s in &report.swarms {
        let host = s
            .pages
            .first()
            .and_then(|p| p.host.clone())
            .unwrap_or_default();
        println!();
        println!(
            "swarm {} on {} {host}: {} members, onset {}, confidence {:.2}",
            s.id,
            s.sites.join(" and "),
            s.members.len(),
            s.onset,
            s.confidence
        );
        let pages: Vec<&str> = s.pages.iter().map(|p| p.path.as_str()).collect();
        println!("  pages:   {}", pages.join(", "));
        let shown: Vec<&str> = s.members.iter().take(8).map(String::as_str).collect();
        let more = s.members.len().saturating_sub(shown.len());
        println!(
            "  members: {}{}",
            shown.join(", "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            }
        );
        for j in &s.ja4 {
            println!(
                "  ja4:     {} ({:.0}% of members)",
                j.fingerprint,
                j.share * 100.0
            );
        }
        for e in &s.evidence {
            println!("  why:     {e}");
        }
    }
    if !report.rules.is_empty() {
        println!();
        println!(
            "{:<24} {:<24} {:>8} {:>6}",
            "WOULD BLOCK", "SCOPE", "TTL", "SWARM"
        );
        for r in &report.rules {
            println!(
                "{:<24} {:<24} {:>8} {:>6}",
                r.prefix,
                format!("{}:{}/{}", r.scope.dst, r.scope.port, r.scope.proto),
                humantime::format_duration(std::time::Duration::from_secs(r.ttl_s)).to_string(),
                r.swarm
            );
        }
    }
    for r in &report.refused {
        println!("refused: {}: {}", r.target, r.why);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn rules_are_named_by_id_or_target_and_reasons_have_no_control_characters() {
        let parse = |args: &[&str]| Cli::try_parse_from(args.iter().copied());
        let Ok(Cli {
            command: Command::Block(BlockCommand::Del(d)),
            ..
        }) = parse(&[
            "swarmwall",
            "block",
            "del",
            "7",
            "192.0.2.8",
            "2001:db8::/48",
        ])
        else {
            panic!("block del with an id and addresses must parse");
        };
        assert_eq!(
            d.ids,
            vec![
                RuleRef::Id(7),
                RuleRef::Target("192.0.2.8".parse().unwrap()),
                RuleRef::Target("2001:db8::/48".parse().unwrap()),
            ]
        );
        assert!(parse(&["swarmwall", "block", "del", "nonsense"]).is_err());
        for bad in ["a\nb", "tab\there", "esc\u{1b}[31m"] {
            let e = parse(&["swarmwall", "block", "add", "192.0.2.1", "--reason", bad])
                .err()
                .unwrap_or_else(|| panic!("reason {bad:?} must be refused"));
            assert!(e.to_string().contains("control character"), "{e}");
        }
        assert!(
            parse(&[
                "swarmwall",
                "block",
                "add",
                "192.0.2.1",
                "--reason",
                "ok: é"
            ])
            .is_ok()
        );
        assert!(parse(&["swarmwall", "block", "test", "192.0.2.1", "--port", "0"]).is_err());
        assert!(parse(&["swarmwall", "swarms", "pardon", "3", "192.0.2.7"]).is_ok());
    }

    #[test]
    fn del_needs_ids_or_all() {
        assert!(Cli::try_parse_from(["swarmwall", "block", "del"]).is_err());
        assert!(Cli::try_parse_from(["swarmwall", "block", "del", "1", "--all"]).is_err());
        assert!(Cli::try_parse_from(["swarmwall", "block", "del", "--all"]).is_ok());
        assert!(Cli::try_parse_from(["swarmwall", "block", "add", "0.0.0.0/0"]).is_err());
        assert!(Cli::try_parse_from(["swarmwall", "top", "--watch", "--json"]).is_err());
        assert!(Cli::try_parse_from(["swarmwall", "mode", "--reason", "x"]).is_err());
    }
}
