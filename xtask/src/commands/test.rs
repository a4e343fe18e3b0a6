//! `cargo xtask test`: build the binary once, run `cargo test --workspace`,
//! then the Node addon's `node --test` suite with `ALKNET_BIN` pointing at
//! it, then every fuzz target for a few seconds, and total up the results.

use std::process::{Command, ExitCode, Stdio};

use xtask::{Profile, Result, XtaskError, alknet_binary};

/// How long `cargo xtask test` soaks.
const SOAK: std::time::Duration = std::time::Duration::from_secs(120);

pub(crate) fn run(extra_args: &[String]) -> Result<ExitCode> {
    super::setup::ensure_test_tools()?;
    let binary = alknet_binary(Profile::Dev)?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut child = Command::new(cargo)
        .args(["test", "--workspace"])
        .args(extra_args)
        .env("ALKNET_BIN", &binary)
        .stdout(Stdio::piped())
        .spawn()
        .map_err(XtaskError::io("running cargo test"))?;

    let mut totals = Totals::default();
    super::echo_lines(&mut child, |line| totals.add_line(line));
    let status = child
        .wait()
        .map_err(XtaskError::io("waiting for cargo test"))?;
    // Extra arguments narrow the Rust tests; the addon's run only without.
    if extra_args.is_empty() {
        let node = super::addon::run(&binary)?;
        totals.passed += node.passed;
        totals.failed += node.failed;
        totals.ignored += node.skipped;
        // Every fuzz target briefly, from its seeds: each counts as a test.
        let fuzzed =
            super::fuzz::fuzz(None, super::fuzz::SMOKE_SECONDS, super::fuzz::Build::Quick)?;
        totals.passed += fuzzed.passed;
        totals.failed += fuzzed.failed;
        // Two minutes of traffic under faults: one test.
        let soaked = super::soak::soak(SOAK, Profile::Dev)?;
        if soaked.passed() {
            totals.passed += 1;
        } else {
            totals.failed += 1;
        }
    }
    println!();
    println!(
        "{} passed, {} failed, {} ignored",
        totals.passed, totals.failed, totals.ignored
    );
    if status.success() && totals.failed == 0 {
        Ok(ExitCode::SUCCESS)
    } else {
        if totals.failed == 0 {
            println!("cargo test failed before every test ran (see above)");
        }
        Ok(ExitCode::FAILURE)
    }
}

/// Sums the `test result:` lines libtest prints per test binary.
#[derive(Debug, Default, PartialEq, Eq)]
struct Totals {
    passed: u64,
    failed: u64,
    ignored: u64,
}

impl Totals {
    fn add_line(&mut self, line: &str) {
        let Some(rest) = line.trim().strip_prefix("test result: ") else {
            return;
        };
        for part in rest.split([';', '.']) {
            let mut words = part.split_whitespace();
            let (Some(count), Some(label)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(count) = count.parse::<u64>() else {
                continue;
            };
            match label {
                "passed" => self.passed += count,
                "failed" => self.failed += count,
                "ignored" => self.ignored += count,
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Totals;

    #[test]
    fn sums_libtest_result_lines() {
        let mut totals = Totals::default();
        totals.add_line("test result: ok. 12 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.23s");
        totals.add_line("test result: FAILED. 3 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out; finished in 1.00s");
        totals.add_line("test something ... ok");
        assert_eq!(
            totals,
            Totals {
                passed: 15,
                failed: 2,
                ignored: 1
            }
        );
    }
}
