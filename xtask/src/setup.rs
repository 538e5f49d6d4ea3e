//! `cargo xtask setup`: install what building and testing swarmwall needs, and nothing twice.
//!
//! Each step asks first (a quiet probe taking milliseconds) and installs only what is missing, so
//! every other verb can call [`setup`] unconditionally.

use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use crate::cmd::{cargo, find_program, probe, run};

/// The pinned nightly that builds the eBPF crate.
///
/// Pinned together with [`BPF_LINKER_VERSION`] and aya: bpf-linker reads the nightly's bitcode
/// with the nightly's own LLVM, and a nightly on a newer LLVM breaks it.
pub const NIGHTLY: &str = "nightly-2026-05-20";

/// The bpf-linker release that links the eBPF crate. 0.13+ needs a system LLVM that Debian
/// bookworm lacks; 0.9.x loads LLVM from the rust toolchain.
pub const BPF_LINKER_VERSION: &str = "0.9.14";

/// Programs the integration tests and the lab shell out to, and the Debian package of each.
pub const APT_TOOLS: &[(&str, &str)] = &[
    ("ip", "iproute2"),
    ("nft", "nftables"),
    ("ipset", "ipset"),
    ("tcpdump", "tcpdump"),
    ("ping", "iputils-ping"),
];

/// Runs every setup step; prints what it finds and what it does.
pub fn setup() -> Result<()> {
    println!("setup: checking toolchain {NIGHTLY}, bpf-linker {BPF_LINKER_VERSION}, test tools");
    nightly()?;
    bpf_linker()?;
    apt_tools()?;
    promtool()?;
    Ok(())
}

/// Where [`promtool`] puts the binary.
const PROMTOOL: &str = "/usr/local/bin/promtool";

/// `promtool`, which the metrics test validates the exposition with. Debian ships it in the
/// `prometheus` package, whose installation would also start a Prometheus server; only the
/// binary is taken out of the package instead.
fn promtool() -> Result<()> {
    if find_program("promtool").is_some() {
        println!("setup: ok: promtool present");
        return Ok(());
    }
    if !is_root() || find_program("apt-get").is_none() {
        println!(
            "setup: promtool missing (the metrics test needs it); e.g. apt-get download \
             prometheus && dpkg-deb -x prometheus_*.deb x && cp x/usr/bin/promtool {PROMTOOL}"
        );
        return Ok(());
    }
    println!("setup: taking promtool out of Debian's prometheus package");
    let dir = env::temp_dir().join(format!("swarmwall-promtool-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let result = (|| -> Result<()> {
        // `apt-get download` needs the lists; a fresh container has none.
        if probe(Command::new("apt-cache").args(["show", "prometheus"])).is_none() {
            run(apt_get().args(["update", "-qq"]))?;
        }
        run(apt_get()
            .args(["download", "-qq", "prometheus"])
            .current_dir(&dir))?;
        let deb = std::fs::read_dir(&dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.extension().is_some_and(|x| x == "deb"))
            .context("apt-get download prometheus left no .deb")?;
        run(Command::new("dpkg-deb")
            .arg("-x")
            .arg(&deb)
            .arg(dir.join("x")))?;
        std::fs::copy(dir.join("x/usr/bin/promtool"), PROMTOOL)
            .with_context(|| format!("copying promtool to {PROMTOOL}"))?;
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result.context("installing promtool")
}

/// An `apt-get` command that asks no questions.
fn apt_get() -> Command {
    let mut cmd = Command::new("apt-get");
    cmd.env("DEBIAN_FRONTEND", "noninteractive");
    cmd
}

/// A `rustup` command that never installs a toolchain as a side effect of a question.
fn rustup() -> Command {
    let mut cmd = Command::new("rustup");
    cmd.env("RUSTUP_AUTO_INSTALL", "0");
    cmd
}

fn nightly() -> Result<()> {
    let version = probe(rustup().args(["run", NIGHTLY, "rustc", "--version"]));
    // `-Z build-std=core` compiles core from this source tree; without it the build fails late
    // and obscurely, so check for the tree itself rather than trust the component list.
    let has_src = version.is_some()
        && probe(rustup().args(["run", NIGHTLY, "rustc", "--print", "sysroot"])).is_some_and(
            |sysroot| {
                Path::new(sysroot.trim())
                    .join("lib/rustlib/src/rust/library/core/Cargo.toml")
                    .is_file()
            },
        );
    match version {
        Some(version) if has_src => {
            println!("setup: ok: {NIGHTLY} ({}) with rust-src", version.trim());
            Ok(())
        }
        _ => {
            println!("setup: {NIGHTLY} or its rust-src is missing; installing");
            run(rustup().args([
                "toolchain",
                "install",
                NIGHTLY,
                "--profile",
                "minimal",
                "--component",
                "rust-src",
            ]))
        }
    }
}

/// Where `cargo install` puts binaries.
fn cargo_bin_dir() -> Option<PathBuf> {
    env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|home| Path::new(&home).join(".cargo")))
        .map(|home| home.join("bin"))
}

/// The version `bpf-linker --version` reports, if it runs at all.
fn bpf_linker_version(program: &Path) -> Option<String> {
    let out = probe(Command::new(program).arg("--version"))?;
    parse_version(&out).map(str::to_owned)
}

/// The version word of a `name X.Y.Z` banner, as bpf-linker prints it.
fn parse_version(banner: &str) -> Option<&str> {
    let mut words = banner.split_whitespace();
    words.next()?;
    words.next()
}

fn bpf_linker() -> Result<()> {
    let program = find_program("bpf-linker")
        .or_else(|| cargo_bin_dir().map(|dir| dir.join("bpf-linker")))
        .unwrap_or_else(|| "bpf-linker".into());
    match bpf_linker_version(&program) {
        Some(v) if v == BPF_LINKER_VERSION => {
            println!("setup: ok: bpf-linker {v} ({})", program.display());
        }
        found => {
            let found = found.map_or_else(|| "not found".to_owned(), |v| format!("found {v}"));
            println!("setup: bpf-linker {BPF_LINKER_VERSION} needed, {found}; installing");
            run(cargo().args([
                "install",
                &format!("bpf-linker@{BPF_LINKER_VERSION}"),
                "--locked",
            ]))?;
            // rustc runs the first `bpf-linker` on PATH; an older one ahead of cargo's bin
            // directory would still be the one used.
            let used = find_program("bpf-linker").unwrap_or_else(|| "bpf-linker".into());
            let now = bpf_linker_version(&used);
            if now.as_deref() != Some(BPF_LINKER_VERSION) {
                bail!(
                    "installed bpf-linker {BPF_LINKER_VERSION}, but the one on PATH ({}) reports \
                     {}; put cargo's bin directory first on PATH or remove the other one",
                    used.display(),
                    now.as_deref().unwrap_or("no version")
                );
            }
        }
    }
    Ok(())
}

/// Makes `cargo install`'s bin directory reachable for our children: rustc runs `bpf-linker` by
/// name, and a CI shell that never sourced `~/.cargo/env` would otherwise not find it.
///
/// Must run before any thread is spawned (it changes the process environment).
pub fn put_cargo_bin_on_path() {
    let Some(bin) = cargo_bin_dir() else { return };
    let path = env::var_os("PATH").unwrap_or_default();
    if env::split_paths(&path).any(|dir| dir == bin) {
        return;
    }
    let joined = env::join_paths(std::iter::once(bin).chain(env::split_paths(&path)));
    if let Ok(joined) = joined {
        // SAFETY: called first thing in `main`, before xtask starts any thread, so no other
        // thread can be reading the environment concurrently.
        unsafe { env::set_var("PATH", joined) };
    }
}

pub(crate) fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn apt_tools() -> Result<()> {
    let missing: Vec<_> = APT_TOOLS
        .iter()
        .filter(|(program, _)| find_program(program).is_none())
        .collect();
    if missing.is_empty() {
        let names: Vec<_> = APT_TOOLS.iter().map(|(program, _)| *program).collect();
        println!("setup: ok: {} present", names.join(", "));
        return Ok(());
    }
    let programs: Vec<_> = missing.iter().map(|(program, _)| *program).collect();
    let packages: Vec<_> = missing.iter().map(|(_, package)| *package).collect();
    println!(
        "setup: missing {}; the integration tests need them",
        programs.join(", ")
    );
    if !is_root() || find_program("apt-get").is_none() {
        // Not fatal: building works without them, and root-only tests skip when not root.
        println!(
            "setup: not root or no apt-get; install them yourself, e.g.: sudo apt-get install {}",
            packages.join(" ")
        );
        return Ok(());
    }
    run(apt_get().args(["update", "-qq"]))?;
    run(apt_get()
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&packages))
    .context("installing the test tools")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_is_the_second_word_of_the_banner() {
        assert_eq!(parse_version("bpf-linker 0.9.14\n"), Some("0.9.14"));
        assert_eq!(parse_version("bpf-linker\n"), None);
        assert_eq!(parse_version(""), None);
    }

    #[test]
    fn a_missing_bpf_linker_has_no_version() {
        assert_eq!(
            bpf_linker_version(Path::new("/nonexistent/bpf-linker")),
            None
        );
    }

    #[test]
    fn every_apt_tool_names_a_package() {
        assert!(
            APT_TOOLS
                .iter()
                .all(|(p, pkg)| !p.is_empty() && !pkg.is_empty())
        );
    }
}
