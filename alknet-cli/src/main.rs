//! The `alknet` command: `serve`, `connect`, `call`, `keygen`, `token`,
//! `demo`, and `completions` and `man` for installing it.
//!
//! Everything here is argument handling and wiring; the tunnel itself lives
//! in the `alknet` library crate.

#![forbid(unsafe_code)]

mod acme;
mod cli;
mod commands;
mod config;
mod destination;
mod error;
mod listen;
mod logging;
mod signals;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};
use crate::error::CliError;

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init();
    if matches!(cli.command, Command::Serve(_) | Command::Connect(_)) {
        raise_open_file_limit();
    }
    let result = match cli.command {
        Command::Serve(args) => block_on(commands::serve::run(*args)),
        Command::Connect(args) => block_on(commands::connect::run(args)),
        Command::Call(args) => block_on(commands::call::run(args)),
        Command::Keygen(args) => commands::keygen::run(args),
        Command::Token(args) => commands::token::run(args),
        Command::Demo(args) => block_on(commands::demo::run(args)),
        Command::Completions(args) => commands::completions::run(&args),
        Command::Man(args) => commands::man::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("alknet: error: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Every tunnel and every client is a file descriptor: raise the soft
/// limit to the hard one, as servers do, so a busy server or client is not
/// stopped by a default of 1024.
fn raise_open_file_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::debug!(limit, "open-file limit"),
        Err(error) => tracing::warn!(%error, "cannot raise the open-file limit"),
    }
}

/// Runs a command on a single-threaded runtime.
///
/// A client's session and its channels then live on one thread, so packets
/// pass between the SSH session task and the relays without cross-thread
/// wake-ups. Measured with `cargo xtask bench` on 2 cores: ~1110 MiB/s
/// against ~860 MiB/s on tokio's multi-threaded runtime. (`serve` spreads
/// connections over one such runtime per core.)
fn block_on(command: impl Future<Output = Result<(), CliError>>) -> Result<(), CliError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(CliError::Runtime)?
        .block_on(command)
}
