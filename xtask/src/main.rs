//! `cargo xtask` entry point; the tasks live in the library (see `cargo xtask --help`).

use std::process::ExitCode;

use clap::Parser as _;
use xtask::{Cli, run_cli, setup::put_cargo_bin_on_path};

fn main() -> ExitCode {
    // Before anything else: it edits the environment, which is only sound while single-threaded.
    put_cargo_bin_on_path();
    let cli = Cli::parse();
    match run_cli(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
