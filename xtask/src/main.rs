//! `cargo xtask <command>`: the workspace's own tasks.
//!
//! - `cargo xtask test`: every test in the workspace, including the
//!   end-to-end tests that run the real `alknet` binary against curl and
//!   OpenSSH, then a `N passed, N failed` summary.
//! - `cargo xtask bench`: throughput and latency of alknet against OpenSSH,
//!   measured in the same run on loopback, reported as ratios;
//!   `cargo xtask bench-report` writes `BENCHMARKS.md` from its `--json`.
//! - `cargo xtask fuzz [--seconds N] [TARGET]`: the cargo-fuzz targets.

#![forbid(unsafe_code)]

mod commands;

use std::process::ExitCode;

const USAGE: &str = "usage: cargo xtask <command>

commands:
  test     run every test (unit, integration, end-to-end) and print a summary
  bench    compare alknet with OpenSSH: bulk throughput and connect latency
  bench-report  write BENCHMARKS.md's tables from a bench --json report
           ([JSON] [MARKDOWN], default bench/latest.json BENCHMARKS.md)
  fuzz     run the cargo-fuzz targets in fuzz/ ([--seconds N] [TARGET])
  soak     traffic through every transport while the server is killed,
           stopped and reloaded; checks nothing is lost or leaked ([--minutes N])";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("test") => commands::test::run(&args[1..]),
        Some("bench") => commands::bench::run(&args[1..]),
        Some("bench-report") => commands::bench_report::run(&args[1..]),
        Some("fuzz") => commands::fuzz::run(&args[1..]),
        Some("soak") => commands::soak::run(&args[1..]),
        // The bench's many-connection target (see commands/scale.rs).
        Some("hold-target") => commands::scale::hold_target(),
        // The bench's latency target (see commands/bench.rs).
        Some("http-target") => commands::bench::http_target(),
        Some("help" | "--help" | "-h") | None => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Some(other) => {
            eprintln!("xtask: unknown command {other:?}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("xtask: error: {error}");
            ExitCode::FAILURE
        }
    }
}
