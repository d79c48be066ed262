//! `conclavectl`: the operator's command-line tool for a Conclave cluster.
//!
//! This file only wires things together: parse the command line, run the command on a small
//! tokio runtime, turn the outcome into an exit code. The work lives in `ctl::*`; talking to the
//! cluster lives in the `ops` library. Nothing here may panic on user input or print a Rust
//! debug dump.
#![allow(clippy::print_stdout)]

use std::process::ExitCode;

use clap::{CommandFactory as _, FromArgMatches as _};

mod ctl {
    pub(crate) mod args;
    pub(crate) mod backup;
    pub(crate) mod ca;
    pub(crate) mod chat;
    pub(crate) mod check;
    pub(crate) mod commands;
    pub(crate) mod failure;
    pub(crate) mod files;
    pub(crate) mod join_token;
    pub(crate) mod password;
    pub(crate) mod render;
    pub(crate) mod token_file;
}

#[path = "../../build-support/cli_docs.rs"]
mod generate;

use ctl::failure::Failure;

fn main() -> ExitCode {
    // Usage errors exit with clap's code 2; --help and --version exit with 0.
    let matches = generate::with_generate(ctl::args::Cli::command()).get_matches();
    if let Some(code) = generate::run(&matches, ctl::args::Cli::command()) {
        return code;
    }
    let cli = ctl::args::Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    // One thread is plenty for a CLI that waits on one request at a time.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            return ExitCode::from(
                Failure::local(format_args!("cannot start the async runtime: {e}")).report(),
            );
        }
    };
    let code = match runtime.block_on(ctl::commands::run(cli)) {
        Ok(code) => code,
        Err(failure) => failure.report(),
    };
    ExitCode::from(code)
}
