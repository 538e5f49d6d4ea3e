//! `cargo xtask`: the project's developer tasks, in Rust so they run wherever cargo does.
//!
//! The eBPF half of swarmwall needs a pinned nightly with `rust-src` and a pinned `bpf-linker`,
//! which a fresh machine lacks; `setup` installs them and every other verb runs `setup` first.
//! That is why this crate must never depend on `swarmwall`: building `swarmwall` is what needs
//! the setup.

#![warn(missing_docs)]

pub mod cmd;
pub mod lab;
pub mod scenarios_cmd;
pub mod setup;

use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

pub use setup::{BPF_LINKER_VERSION, NIGHTLY};

use crate::cmd::{cargo, cargo_with, run, status};

/// The eBPF crate: built only for `bpfel-unknown-none`, so host-side workspace commands skip it.
pub const EBPF_PACKAGE: &str = "swarmwall-ebpf";

/// The eBPF target triple.
pub const EBPF_TARGET: &str = "bpfel-unknown-none";

/// Developer tasks for swarmwall.
///
/// Every task prints each command it runs (`+ cmd args`) so you can re-run a failing step by hand.
/// `build`, `test`, `bench` and `lint` run `setup` first; it is quick when there is nothing to do.
#[derive(Debug, Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    after_help = "\
Examples:
  cargo xtask setup              once on a new machine (as root it also apt-installs test tools)
  cargo xtask build --release    build target/release/swarmwall
  cargo xtask test               every test, as CI runs them (needs root for the kernel tests)
  cargo xtask test parse         only tests whose name contains \"parse\"
  cargo xtask lint               what to fix before sending a change
  sudo -E cargo xtask lab        see swarmwall stop a bot swarm in a throw-away lab
  cargo xtask scenarios          write labelled traffic pcaps to target/scenarios"
)]
pub struct Cli {
    /// The task to run.
    #[command(subcommand)]
    pub command: Commands,
}

/// The tasks.
#[derive(Debug, Subcommand)]
pub enum Commands {
    /// Install the pinned nightly (with rust-src), bpf-linker and the test tools, if missing.
    ///
    /// Installs `nightly-2026-05-20` with rust-src (the eBPF crate is built with
    /// `-Z build-std=core`), `bpf-linker` 0.9.14 via `cargo install`, and — as root with apt-get
    /// — the Debian packages that provide ip, nft, ipset, tcpdump and ping. Each is checked first
    /// and skipped when already present, so running it again is fast and harmless.
    Setup,

    /// Build the `swarmwall` daemon/CLI, with the eBPF object embedded.
    ///
    /// The userspace build script compiles the eBPF crate with the pinned nightly.
    Build {
        /// Build with the release profile (what you deploy and benchmark).
        #[arg(long)]
        release: bool,
    },

    /// Run every test in the workspace, one test thread at a time.
    ///
    /// Integration tests change shared kernel state (network namespaces, XDP attachments, bpffs
    /// pins, nftables), so they run single-threaded. Most need root; without it they print
    /// "skipping: needs root" (set SWARMWALL_REQUIRE_ROOT=1 to make that a failure instead).
    /// Exits with cargo's exit code.
    ///
    /// Example: `cargo xtask test netns` runs only tests whose name contains "netns".
    Test {
        /// Passed to the test binaries after `--test-threads=1`, e.g. a test name filter.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },

    /// Run the benchmarks (`cargo bench -p swarmwall-benches`).
    ///
    /// Example: `cargo xtask bench -- --bench xdp` passes `--bench xdp` on to cargo bench.
    Bench {
        /// Passed to `cargo bench` after the package selection.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },

    /// Check formatting and run clippy with warnings denied, host crates and eBPF crate apart.
    ///
    /// The eBPF crate is linted on its own, for its own target with the pinned nightly, because
    /// linting it together with the host crates would unify features across the two.
    Lint,

    /// See swarmwall stop a bot swarm on a small web host, in a throw-away lab. Needs root.
    ///
    /// Runs setup and builds swarmwall (release), then creates three network namespaces: a
    /// server (a real HTTP server on 198.51.100.1:80 and the swarmwall daemon, XDP on its two
    /// veths), legitimate visitors browsing pages with their assets, and a swarm of 40 bots
    /// (made-up addresses in 203.0.113.0/24) fetching the same two image-heavy pages over and
    /// over. It shows `swarmwall swarms` and `swarmwall swarms show` once the daemon has blocked
    /// the swarm, then a summary: requests served, bot requests dropped, time to block. The last
    /// line is "lab: OK", or what does not add up (and the exit code is non-zero).
    ///
    /// All traffic stays inside the three namespaces: documentation addresses, no default
    /// route, no uplink, no forwarding, bounded in requests and seconds. The namespaces, veths,
    /// pins and the daemon are removed on every way out, Ctrl-C included.
    Lab(lab::LabArgs),

    /// Write labelled traffic scenarios as pcaps and access logs, for `swarmwall analyze` and
    /// its tests.
    ///
    /// Writes browsing, swarm, flash-crowd, nat, crawler, multi-tenant and wide-swarm (or only the one
    /// `--only` names) as `<name>.pcap` (Ethernet, µs timestamps) and as the web server's
    /// `<name>.access.log` (nginx `combined` plus `$host $server_addr $server_port`), each with
    /// the ground truth — swarm members, attacked site and pages, legitimate sources — in
    /// `<file>.labels.json`; and the HTTPS scenarios https-browsing, https-swarm,
    /// https-flash-crowd and https-nat as pcaps of TLS ClientHellos (no log: what the kernel
    /// sees of an HTTPS site). Deterministic: the same `--seed` writes the same bytes. Needs no
    /// root and no eBPF toolchain; all addresses are documentation addresses (and, for
    /// wide-swarm's 2000 bots, RFC 2544 benchmarking addresses).
    ///
    /// Example: `cargo xtask scenarios --only swarm && swarmwall analyze target/scenarios/swarm.pcap`
    Scenarios(scenarios_cmd::ScenariosArgs),
}

/// Runs one task; the exit code is the task's (cargo's, for `test`).
pub fn run_cli(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Commands::Setup => setup::setup().map(|()| ExitCode::SUCCESS),
        Commands::Build { release } => build(release).map(|()| ExitCode::SUCCESS),
        Commands::Test { args } => test(&args),
        Commands::Bench { args } => bench(&args).map(|()| ExitCode::SUCCESS),
        Commands::Lint => lint().map(|()| ExitCode::SUCCESS),
        Commands::Lab(args) => lab::lab(&args),
        Commands::Scenarios(args) => scenarios_cmd::scenarios(&args).map(|()| ExitCode::SUCCESS),
    }
}

fn build(release: bool) -> Result<()> {
    setup::setup()?;
    let mut cmd = cargo();
    cmd.args(["build", "-p", "swarmwall"]);
    if release {
        cmd.arg("--release");
    }
    run(&mut cmd)
}

fn test(args: &[String]) -> Result<ExitCode> {
    setup::setup()?;
    let mut cmd = cargo();
    cmd.args([
        "test",
        "--workspace",
        "--exclude",
        EBPF_PACKAGE,
        "--no-fail-fast",
        "--",
        "--test-threads=1",
    ])
    .args(args);
    let status = status(&mut cmd)?;
    if !status.success() {
        eprintln!("error: `{}` failed ({status})", cmd::display(&cmd));
    }
    // Pass cargo's code through unchanged so CI sees test failures as test failures; a code
    // outside u8 (or death by signal) still has to read as failure.
    let code = status.code().map_or(1, |c| u8::try_from(c).unwrap_or(1));
    Ok(ExitCode::from(code))
}

fn bench(args: &[String]) -> Result<()> {
    setup::setup()?;
    run(cargo()
        .args(["bench", "-p", "swarmwall-benches"])
        .args(args))
}

fn lint() -> Result<()> {
    setup::setup()?;
    ensure_lint_components()?;
    let mut fmt = cargo();
    fmt.args(["fmt", "--all", "--", "--check"]);
    let mut host = cargo();
    host.args([
        "clippy",
        "--workspace",
        "--exclude",
        EBPF_PACKAGE,
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]);
    let mut ebpf = cargo_with(NIGHTLY);
    ebpf.args([
        "clippy",
        "-p",
        EBPF_PACKAGE,
        "--target",
        EBPF_TARGET,
        "-Z",
        "build-std=core",
        "--",
        "-D",
        "warnings",
    ]);
    // Run every check even after one fails, so one run shows all there is to fix.
    let mut failed = Vec::new();
    for (name, mut check) in [
        ("rustfmt", fmt),
        ("clippy (host crates)", host),
        ("clippy (eBPF crate)", ebpf),
    ] {
        if let Err(err) = run(&mut check) {
            eprintln!("lint: {name}: {err:#}");
            failed.push(name);
        }
    }
    if !failed.is_empty() {
        anyhow::bail!("lint failed: {}", failed.join(", "));
    }
    println!("lint: ok");
    Ok(())
}

/// rustfmt and clippy are not in the pinned nightly's minimal profile (and not in every stable
/// install either); add them only where missing.
fn ensure_lint_components() -> Result<()> {
    use std::process::Command;
    let stable_has = |sub: &str| cmd::probe(cargo().args([sub, "--version"])).is_some();
    for (component, sub) in [("rustfmt", "fmt"), ("clippy", "clippy")] {
        if !stable_has(sub) {
            println!("lint: {component} missing from the default toolchain; adding it");
            run(Command::new("rustup").args(["component", "add", component]))?;
        }
    }
    if cmd::probe(cargo_with(NIGHTLY).args(["clippy", "--version"])).is_none() {
        println!("lint: clippy missing from {NIGHTLY}; adding it");
        run(Command::new("rustup").args(["component", "add", "clippy", "--toolchain", NIGHTLY]))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn test_forwards_a_filter_and_flags() {
        let cli = Cli::try_parse_from(["cargo xtask", "test", "netns", "--nocapture"]).unwrap();
        match cli.command {
            Commands::Test { args } => assert_eq!(args, ["netns", "--nocapture"]),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn build_takes_release() {
        let cli = Cli::try_parse_from(["cargo xtask", "build", "--release"]).unwrap();
        assert!(matches!(cli.command, Commands::Build { release: true }));
    }

    #[test]
    fn lab_takes_bounded_options() {
        let cli = Cli::try_parse_from(["cargo xtask", "lab"]).unwrap();
        match cli.command {
            Commands::Lab(args) => {
                assert_eq!(
                    (args.bots, args.visitors, args.seconds, args.no_build),
                    (40, 6, 10, false)
                );
            }
            other => panic!("parsed as {other:?}"),
        }
        let cli = Cli::try_parse_from(["cargo xtask", "lab", "--bots", "50", "--no-build"]);
        assert!(matches!(
            cli.unwrap().command,
            Commands::Lab(lab::LabArgs {
                bots: 50,
                no_build: true,
                ..
            })
        ));
        for bad in [
            ["--bots", "0"],
            ["--bots", "100000"],
            ["--seconds", "600"],
            ["--rps", "0"],
        ] {
            let args = ["cargo xtask", "lab"].into_iter().chain(bad);
            assert!(Cli::try_parse_from(args).is_err(), "{bad:?} accepted");
        }
    }
}
