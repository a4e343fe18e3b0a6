//! The `alknet` command — `serve`, `connect`, `call`, `keygen`, `token`,
//! `demo`, and `completions` and `man` for installing it — as a library:
//! the binary is [`run`], and [`fuzzing`] lets the cargo-fuzz targets reach
//! the parsers of what users type and write (destinations, `--config`
//! files).
//!
//! Everything here is argument handling and wiring; the tunnel itself lives
//! in the `alknet` library crate.
//!
//! ```
//! // What `alknet serve --config FILE` makes of a file: refused with the
//! // line and the key, never a panic.
//! let error = alknet_cli::fuzzing::serve_config("listen = 5\n").unwrap_err();
//! assert!(error.contains("line 1"), "{error}");
//! ```

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

/// Runs the `alknet` command with this process's arguments; what `main`
/// does.
pub fn run() -> ExitCode {
    let cli = Cli::parse();
    logging::init();
    if matches!(cli.command, Command::Serve(_) | Command::Connect(_)) {
        raise_open_file_limit();
        keep_freed_buffers();
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

/// Largest buffer the allocator should keep rather than hand back to the
/// system at once (see [`keep_freed_buffers`]).
const KEPT_BUFFER: usize = 2 * 1024 * 1024;

/// glibc's malloc gives freed memory back to the system (and takes it
/// again, page fault by page fault) once more than its trim threshold is
/// free at the top of a heap, and serves blocks from 128 KiB up with mmap.
/// Both thresholds start low and rise only after a large mmapped block is
/// freed. Tunnel traffic allocates and frees 32–128 KiB message buffers
/// all the time: with the defaults ~10–25 % of a bulk transfer's CPU went
/// to page faults (`perf`, 1 GiB downloads). Freeing one 2 MiB block now
/// raises them to 2 MiB and 4 MiB, the way a long-running transfer would
/// eventually. Other allocators ignore it; it costs no resident memory
/// (the block is never touched).
fn keep_freed_buffers() {
    drop(std::hint::black_box(Vec::<u8>::with_capacity(KEPT_BUFFER)));
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

/// Ways in for the fuzz targets (`fuzz/fuzz_targets/cli_*.rs`): each runs
/// one parser on text as a user would give it, and says what it made of it.
#[doc(hidden)]
pub mod fuzzing {
    use clap::Parser;

    use crate::cli::{Cli, Command};
    use crate::config::ServeSettings;

    /// `alknet serve --key k --config FILE` with `text` as the file.
    pub fn serve_config(text: &str) -> Result<(), String> {
        let cli = Cli::try_parse_from(["alknet", "serve", "--config", "/fuzz/alknet.toml"])
            .map_err(|error| error.to_string())?;
        let Command::Serve(args) = cli.command else {
            return Err("not serve".into());
        };
        ServeSettings::resolve_text(*args, Some(text)).map_err(|e| e.to_string())?;
        Ok(())
    }

    /// `alknet connect DESTINATION` with `text` as the destination.
    pub fn destination(text: &str) -> Result<(), String> {
        text.parse::<crate::destination::Destination>().map(drop)
    }
}
