//! The Node addon's tests (`alknet-napi/test`, run by `node --test`): its
//! npm dev dependencies installed when missing, the addon built, then the
//! suite run against the same `alknet` binary as the Rust tests.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use xtask::{Result, XtaskError, example_binary, require_tool};

/// The whole suite's bound; each suite in it bounds itself more tightly.
const SUITE_LIMIT: Duration = Duration::from_secs(15 * 60);

/// What `node --test` reported.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct NodeTotals {
    pub(crate) passed: u64,
    pub(crate) failed: u64,
    pub(crate) skipped: u64,
}

impl NodeTotals {
    /// Reads the summary lines of the TAP reporter (`# pass 17`).
    fn add_line(&mut self, line: &str) {
        let mut words = line.split_whitespace();
        let (Some("#"), Some(label), Some(count), None) =
            (words.next(), words.next(), words.next(), words.next())
        else {
            return;
        };
        let Ok(count) = count.parse::<u64>() else {
            return;
        };
        match label {
            "pass" => self.passed += count,
            "fail" | "cancelled" => self.failed += count,
            "skipped" | "todo" => self.skipped += count,
            _ => {}
        }
    }
}

/// Installs the npm dev dependencies when missing and builds the addon
/// (release or debug); returns the package's directory.
pub(crate) fn build(release: bool) -> Result<PathBuf> {
    for tool in ["node", "npm"] {
        require_tool(tool)?;
    }
    let addon = super::workspace_root().join("alknet-napi");
    if !addon.join("node_modules/@napi-rs/cli").is_dir() {
        println!("installing the addon's npm dev dependencies (npm ci)…");
        status(
            Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund"])
                .current_dir(&addon),
            "npm ci",
        )?;
    }
    println!("building the Node addon…");
    let mut command = Command::new("node");
    command.arg("scripts/build.mjs").current_dir(&addon);
    if release {
        command.arg("--release");
    }
    status(&mut command, "building the addon (node scripts/build.mjs)")?;
    Ok(addon)
}

pub(crate) fn run(alknet_bin: &Path) -> Result<NodeTotals> {
    let addon = build(false)?;
    let ticker = example_binary("ticker")?;

    println!("running the Node addon's tests (node --test)…");
    let mut child = Command::new("node")
        .args([
            "--test",
            "--test-reporter=tap",
            "--test-concurrency=1",
            "test/",
        ])
        .current_dir(&addon)
        .env("ALKNET_BIN", alknet_bin)
        .env("ALKNET_TICKER", ticker)
        .stdout(Stdio::piped())
        .spawn()
        .map_err(XtaskError::io("running node --test"))?;
    let watchdog = kill_after(&child, SUITE_LIMIT);
    let mut totals = NodeTotals::default();
    super::echo_lines(&mut child, |line| totals.add_line(line));
    let exit = child
        .wait()
        .map_err(XtaskError::io("waiting for node --test"))?;
    drop(watchdog);
    if !exit.success() && totals.failed == 0 {
        // It died before reporting (or was stopped by the watchdog).
        totals.failed += 1;
        println!("node --test ended with {exit} before reporting a failure");
    }
    Ok(totals)
}

/// Stops `child` by its PID once `limit` has passed, unless the returned
/// sender is dropped first.
fn kill_after(child: &Child, limit: Duration) -> mpsc::Sender<()> {
    let pid = child.id();
    let (cancel, cancelled) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        if let Err(mpsc::RecvTimeoutError::Timeout) = cancelled.recv_timeout(limit) {
            println!("node --test ran past {limit:?}: stopping it");
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    });
    cancel
}

fn status(command: &mut Command, what: &str) -> Result<()> {
    let exit = command.status().map_err(XtaskError::io(what))?;
    if exit.success() {
        Ok(())
    } else {
        Err(XtaskError::Failed(format!("{what} failed ({exit})")))
    }
}

#[cfg(test)]
mod tests {
    use super::NodeTotals;

    #[test]
    fn reads_the_tap_summary() {
        let mut totals = NodeTotals::default();
        for line in [
            "# Subtest: connect",
            "    ok 1 - carries 256 MiB both ways",
            "# tests 17",
            "# pass 15",
            "# fail 1",
            "# cancelled 1",
            "# skipped 0",
            "# todo 0",
            "# duration_ms 20931.7",
        ] {
            totals.add_line(line);
        }
        assert_eq!(
            totals,
            NodeTotals {
                passed: 15,
                failed: 2,
                skipped: 0
            }
        );
    }
}
