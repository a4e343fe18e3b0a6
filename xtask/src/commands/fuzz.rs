//! `cargo xtask fuzz [--seconds N] [TARGET]`: runs the cargo-fuzz targets
//! in `fuzz/` (every parser that reads the network or a file), each for N
//! seconds (default 60), starting from its seeds in `fuzz/corpus/<target>`.
//! `cargo xtask test` runs each briefly. A crash fails the run and leaves
//! its input in `fuzz/artifacts/<target>/`: make it a regression test.
//!
//! cargo-fuzz is installed from crates.io when missing; it needs nightly
//! (`cargo +nightly`), or stable with `RUSTC_BOOTSTRAP=1` where nightly is
//! not installed. Targets are built without a sanitizer: the code under
//! test forbids `unsafe`, so panics, hangs and runaway memory are what is
//! looked for.

use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};

use xtask::{Result, XtaskError};

/// Seconds per target in `cargo xtask test`.
pub(crate) const SMOKE_SECONDS: u64 = 5;

/// How the targets are compiled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Build {
    /// Optimised, for real fuzzing sessions.
    Release,
    /// Unoptimised: half the cold build time (3.7 against 6.9 minutes on
    /// two cores), for the short runs of `cargo xtask test`.
    Quick,
}

/// What a run of several targets came to.
#[derive(Debug, Default)]
pub(crate) struct FuzzOutcome {
    pub(crate) passed: u64,
    pub(crate) failed: u64,
}

pub(crate) fn run(args: &[String]) -> Result<ExitCode> {
    let mut seconds = 60;
    let mut only = None;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--seconds" => {
                seconds = args
                    .next()
                    .and_then(|value| value.parse().ok())
                    .filter(|value| *value > 0)
                    .ok_or_else(|| XtaskError::Failed("--seconds needs a number".into()))?;
            }
            target if !target.starts_with('-') && only.is_none() => only = Some(target.to_owned()),
            other => return Err(XtaskError::Failed(format!("unknown fuzz option {other}"))),
        }
    }
    let outcome = fuzz(only.as_deref(), seconds, Build::Release)?;
    println!(
        "\nfuzz: {} passed, {} failed",
        outcome.passed, outcome.failed
    );
    Ok(if outcome.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Runs `only` (or every target) for `seconds` each.
pub(crate) fn fuzz(only: Option<&str>, seconds: u64, build: Build) -> Result<FuzzOutcome> {
    let cargo_fuzz = CargoFuzz::find()?;
    let targets = cargo_fuzz.targets()?;
    let chosen: Vec<&String> = match only {
        Some(name) => {
            let found: Vec<&String> = targets.iter().filter(|t| *t == name).collect();
            if found.is_empty() {
                return Err(XtaskError::Failed(format!(
                    "no fuzz target {name:?}; there are: {}",
                    targets.join(", ")
                )));
            }
            found
        }
        None => targets.iter().collect(),
    };
    println!("fuzz: building {} targets…", targets.len());
    let profile: &[&str] = match build {
        Build::Release => &[],
        Build::Quick => &["--dev"],
    };
    cargo_fuzz.check(
        cargo_fuzz
            .command()
            .args(["build", "-s", "none"])
            .args(profile),
        "building the fuzz targets",
    )?;
    let mut outcome = FuzzOutcome::default();
    for target in chosen {
        let corpus = tempfile::tempdir().map_err(XtaskError::io("making a corpus directory"))?;
        let seeds = fuzz_dir().join("corpus").join(target);
        let output = cargo_fuzz
            .command()
            .args(["run", "-s", "none"])
            .args(profile)
            .arg(target)
            .arg(corpus.path())
            .arg(&seeds)
            .arg("--")
            .arg(format!("-max_total_time={seconds}"))
            // One input may take this long before it counts as a hang.
            .arg("-timeout=10")
            .arg("-rss_limit_mb=2048")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .map_err(XtaskError::io("running cargo fuzz"))?;
        let log = String::from_utf8_lossy(&output.stderr);
        let runs = log
            .lines()
            .rev()
            .find(|line| line.starts_with("Done "))
            .unwrap_or("");
        if output.status.success() {
            println!("test fuzz::{target} ... ok ({runs})");
            outcome.passed += 1;
        } else {
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            println!(
                "test fuzz::{target} ... FAILED; the input is under fuzz/artifacts/{target}/\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
            outcome.failed += 1;
        }
    }
    Ok(outcome)
}

fn fuzz_dir() -> PathBuf {
    super::workspace_root().join("fuzz")
}

/// How to call cargo-fuzz on this machine.
struct CargoFuzz {
    nightly: bool,
}

impl CargoFuzz {
    fn find() -> Result<Self> {
        let works = |command: &mut Command| {
            command
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|status| status.success())
        };
        if !works(Command::new("cargo").args(["fuzz", "--version"])) {
            println!("fuzz: installing cargo-fuzz from crates.io…");
            // A debug build of the tool: it only drives the compiler.
            let status = Command::new("cargo")
                .args(["install", "cargo-fuzz", "--locked", "--debug"])
                .status()
                .map_err(XtaskError::io("running cargo install cargo-fuzz"))?;
            if !status.success() {
                return Err(XtaskError::Failed("cargo install cargo-fuzz failed".into()));
            }
        }
        let nightly = works(Command::new("cargo").args(["+nightly", "--version"]));
        Ok(Self { nightly })
    }

    fn command(&self) -> Command {
        let mut command = Command::new("cargo");
        if self.nightly {
            command.arg("+nightly");
        } else {
            // Stable ships what libFuzzer builds need; this unlocks the flags.
            command.env("RUSTC_BOOTSTRAP", "1");
        }
        command.arg("fuzz").current_dir(fuzz_dir());
        // The main workspace's toolchain override must not leak in.
        command.env_remove("RUSTUP_TOOLCHAIN").env_remove("CARGO");
        command
    }

    fn targets(&self) -> Result<Vec<String>> {
        let output = self
            .command()
            .arg("list")
            .output()
            .map_err(XtaskError::io("running cargo fuzz list"))?;
        if !output.status.success() {
            return Err(XtaskError::Failed(format!(
                "cargo fuzz list failed: {}",
                String::from_utf8_lossy(&output.stderr)
            )));
        }
        Ok(String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty())
            .map(str::to_owned)
            .collect())
    }

    fn check(&self, command: &mut Command, what: &str) -> Result<()> {
        let status = command.status().map_err(XtaskError::io(what.to_owned()))?;
        if status.success() {
            Ok(())
        } else {
            Err(XtaskError::Failed(format!("{what} failed")))
        }
    }
}
