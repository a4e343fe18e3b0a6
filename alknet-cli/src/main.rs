//! The `alknet` command: `serve`, `connect`, `keygen` and `demo`.
//!
//! Everything here is argument handling and wiring; the tunnel itself lives
//! in the `alknet` library crate.

#![forbid(unsafe_code)]

mod cli;
mod commands;
mod error;
mod logging;
mod signals;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};
use crate::error::CliError;

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init();
    let result = match cli.command {
        Command::Serve(args) => block_on(Runtime::MultiThread, commands::serve::run(args)),
        Command::Connect(args) => block_on(Runtime::SingleThread, commands::connect::run(args)),
        Command::Keygen(args) => commands::keygen::run(args),
        Command::Demo(args) => block_on(Runtime::SingleThread, commands::demo::run(args)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("alknet: error: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Which tokio scheduler a command runs on.
enum Runtime {
    /// For the server: many clients, spread over every core.
    MultiThread,
    /// For the client: one session and its channels live on one thread, so
    /// packets pass between the SSH session task and the relays without
    /// cross-thread wake-ups. Measured with `cargo xtask bench` on 2 cores:
    /// ~1110 MiB/s single-threaded vs ~860 MiB/s multi-threaded.
    SingleThread,
}

fn block_on(runtime: Runtime, command: impl Future<Output = Result<(), CliError>>) -> Result<(), CliError> {
    let mut builder = match runtime {
        Runtime::MultiThread => tokio::runtime::Builder::new_multi_thread(),
        Runtime::SingleThread => tokio::runtime::Builder::new_current_thread(),
    };
    builder.enable_all().build().map_err(CliError::Runtime)?.block_on(command)
}
