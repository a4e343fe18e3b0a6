//! Building the `alknet` binary under test (and the call benchmark).

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use crate::{Result, XtaskError};

/// Which cargo profile to build.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    /// The dev profile (what `cargo test` uses).
    Dev,
    /// The release profile (what benchmarks use).
    Release,
}

/// The path of the `alknet` binary, built with `profile`.
///
/// For the dev profile, `ALKNET_BIN` (set by `cargo xtask test`) is used
/// when present, so the tests do not rebuild what the runner just built.
pub fn alknet_binary(profile: Profile) -> Result<PathBuf> {
    static DEV: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    if profile == Profile::Dev {
        if let Some(path) = std::env::var_os("ALKNET_BIN") {
            return Ok(PathBuf::from(path));
        }
        return DEV
            .get_or_init(|| build(profile).map_err(|e| e.to_string()))
            .clone()
            .map_err(XtaskError::Failed);
    }
    build(profile)
}

/// The path of the facade's `call_bench` example, release build.
pub fn call_bench_binary() -> Result<PathBuf> {
    release_example_binary("call_bench")
}

/// The path of one of the facade's examples, release build (for benchmarks).
pub fn release_example_binary(name: &str) -> Result<PathBuf> {
    build_target(Profile::Release, "alknet", "--example", name)
}

/// The path of one of the facade's examples, dev build.
pub fn example_binary(name: &str) -> Result<PathBuf> {
    build_target(Profile::Dev, "alknet", "--example", name)
}

fn build(profile: Profile) -> Result<PathBuf> {
    build_target(profile, "alknet-cli", "--bin", "alknet")
}

fn build_target(profile: Profile, package: &str, kind: &str, name: &str) -> Result<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut command = Command::new(cargo);
    command.args([
        "build",
        "--package",
        package,
        kind,
        name,
        "--message-format=json-render-diagnostics",
    ]);
    if profile == Profile::Release {
        command.arg("--release");
    }
    let output = command
        .stderr(Stdio::inherit())
        .output()
        .map_err(XtaskError::io("running cargo build"))?;
    if !output.status.success() {
        return Err(XtaskError::Failed(format!("cargo build of {name} failed")));
    }
    // The last "compiler-artifact" message with an executable is ours.
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter_map(|message| message.get("executable")?.as_str().map(PathBuf::from))
        .next_back()
        .ok_or_else(|| XtaskError::Failed(format!("cargo build reported no {name} executable")))
}
