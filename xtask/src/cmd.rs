//! Running external commands in the open.
//!
//! Every command that changes something is echoed as `+ program args` before it runs, so a CI log
//! shows exactly what to re-run by hand, and every failure names the command that failed. Probes
//! (commands that only ask a question, like `bpf-linker --version`) run quietly: they change
//! nothing and their failure is an answer, not an error.

use std::{
    env,
    ffi::{OsStr, OsString},
    io::Write as _,
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Stdio},
};

use anyhow::{Context as _, Result, bail};

/// The workspace root, so commands behave the same whatever directory `cargo xtask` ran from.
pub fn workspace_root() -> &'static Path {
    // xtask/ sits directly under the root; a compile-time path needs no `cargo metadata` call.
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// A `cargo` command using the toolchain that runs xtask (stable, normally).
///
/// `$CARGO` is the cargo that invoked us; calling it directly skips a second rustup toolchain
/// resolution that could pick a different toolchain from a `rust-toolchain` file or override.
pub fn cargo() -> Command {
    let mut cmd = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(workspace_root());
    cmd
}

/// A `cargo +<toolchain>` command.
///
/// This needs rustup's `cargo` proxy from `PATH`: `$CARGO` points at one toolchain's real cargo,
/// which does not understand `+toolchain`.
pub fn cargo_with(toolchain: &str) -> Command {
    let mut cmd = Command::new("cargo");
    cmd.arg(format!("+{toolchain}"));
    cmd.current_dir(workspace_root());
    cmd
}

/// Renders a command as a shell user would type it, environment overrides first.
pub fn display(cmd: &Command) -> String {
    let mut words = Vec::new();
    for (key, value) in cmd.get_envs() {
        if let Some(value) = value {
            let mut pair = OsString::from(key);
            pair.push("=");
            pair.push(value);
            words.push(quote(&pair));
        }
    }
    words.push(quote(cmd.get_program()));
    words.extend(cmd.get_args().map(quote));
    words.join(" ")
}

/// Quotes a word only when a shell would otherwise split or expand it.
fn quote(word: &OsStr) -> String {
    let word = word.to_string_lossy();
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=+@,%".contains(c));
    if plain {
        word.into_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// Echoes `cmd`, runs it with inherited stdio and returns its exit status, whatever it is.
pub fn status(cmd: &mut Command) -> Result<ExitStatus> {
    let shown = display(cmd);
    println!("+ {shown}");
    // The child writes straight to the terminal/log; flush so our echo lands before its output.
    std::io::stdout().flush().ok();
    cmd.status()
        .with_context(|| format!("could not start `{shown}` (is it installed and on PATH?)"))
}

/// Echoes `cmd`, runs it and fails, naming the command, unless it exits successfully.
pub fn run(cmd: &mut Command) -> Result<()> {
    let status = status(cmd)?;
    if !status.success() {
        bail!("`{}` failed ({status})", display(cmd));
    }
    Ok(())
}

/// Runs a question-asking command quietly; its stdout if it ran and succeeded, `None` otherwise.
pub fn probe(cmd: &mut Command) -> Option<String> {
    let out = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Finds an executable on `PATH`, plus the sbin directories a non-root `PATH` often lacks
/// (`ip`, `nft` and `ipset` live there on Debian).
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH").unwrap_or_default();
    env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_quotes_only_what_a_shell_would_split() {
        let mut cmd = Command::new("cargo");
        cmd.args(["test", "--", "a b", "it's"]).env("CI", "true");
        assert_eq!(display(&cmd), r"CI=true cargo test -- 'a b' 'it'\''s'");
    }

    #[test]
    fn probe_reports_failure_as_none() {
        assert_eq!(probe(&mut Command::new("false")), None);
        assert_eq!(
            probe(Command::new("echo").arg("hi")).as_deref(),
            Some("hi\n")
        );
        assert_eq!(probe(&mut Command::new("/nonexistent/program")), None);
    }

    #[test]
    fn run_names_the_failing_command() {
        let err = run(Command::new("sh").args(["-c", "exit 3"])).unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("`sh -c 'exit 3'` failed"), "{msg}");
    }

    #[test]
    fn find_program_finds_sh() {
        assert!(find_program("sh").is_some());
        assert!(find_program("surely-not-a-program-xyz").is_none());
    }
}
