//! The iroh anchor row of `cargo xtask bench`: n0's `dumbpipe` (a raw
//! iroh QUIC pipe, no SSH) carrying the same download on the same machine,
//! so alknet-over-iroh is compared with iroh itself, not only with TCP.
//!
//! `dumbpipe` is taken from PATH, or installed from crates.io into the
//! bench's own folder (`<target dir>/bench-tools`, outside the clone) the
//! first time; when that cannot be done the row is skipped with a note.

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use xtask::{Result, Spawned, Workdir, XtaskError, free_port, tool_installed, wait_until};

/// The version measured (the one issue 16 quotes).
const VERSION: &str = "0.40.1";

/// How long the listener may take to print its ticket, and the connector
/// to open its port (without network, iroh gives up on relays first).
const STARTUP: Duration = Duration::from_secs(60);

/// Where the bench keeps tools it installs.
fn tools_folder() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| super::workspace_root().join("target"), PathBuf::from)
        .join("bench-tools")
}

/// The `dumbpipe` binary, installed when missing; `None` (with the reason
/// printed) when it cannot be.
fn binary() -> Option<PathBuf> {
    if tool_installed("dumbpipe") {
        return Some(PathBuf::from("dumbpipe"));
    }
    let folder = tools_folder();
    let installed = folder.join("bin").join("dumbpipe");
    if installed.is_file() {
        return Some(installed);
    }
    println!(
        "  installing dumbpipe {VERSION} from crates.io into {} …",
        folder.display()
    );
    let build = folder.join("build");
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()))
        .args([
            "install",
            "dumbpipe",
            "--locked",
            "--version",
            VERSION,
            "--root",
        ])
        .arg(&folder)
        .arg("--target-dir")
        .arg(&build)
        .stdout(Stdio::null())
        .status();
    // The build is large and only the binary is kept.
    let _ = std::fs::remove_dir_all(&build);
    match status {
        Ok(status) if status.success() && installed.is_file() => Some(installed),
        Ok(status) => {
            println!("  dumbpipe: skipped (cargo install failed: {status})");
            None
        }
        Err(error) => {
            println!("  dumbpipe: skipped (cannot run cargo install: {error})");
            None
        }
    }
}

/// Downloads `bytes` from `target` through a dumbpipe pair, best of
/// `runs`; bytes per second, or `None` when dumbpipe is not available.
pub(crate) fn speed(
    dir: &Workdir,
    target: SocketAddr,
    bytes: u64,
    runs: usize,
    download: impl Fn(SocketAddr, u64) -> Result<f64>,
) -> Result<Option<f64>> {
    println!(
        "\niroh anchor: {} MiB through n0's dumbpipe {VERSION} (raw iroh QUIC)",
        bytes >> 20
    );
    let Some(dumbpipe) = binary() else {
        return Ok(None);
    };
    let mut listen = Command::new(&dumbpipe);
    listen.args(["listen-tcp", "--host", &target.to_string()]);
    let listener = Spawned::start("dumbpipe-listen", dir.path(), listen)?;
    let ticket = wait_until("dumbpipe to print its ticket", STARTUP, || {
        [listener.stdout(), listener.stderr()]
            .iter()
            .flat_map(|text| {
                text.split_whitespace()
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .find(|word| word.starts_with("endpoint") && word.len() > 40)
    })?;
    let local = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let mut connect = Command::new(&dumbpipe);
    connect.args(["connect-tcp", "--addr", &local.to_string(), &ticket]);
    let connector = Spawned::start("dumbpipe-connect", dir.path(), connect)?;
    wait_until("dumbpipe connect-tcp to listen", STARTUP, || {
        TcpStream::connect(local).ok()
    })
    .map_err(|error| XtaskError::Failed(format!("{error}; its log:\n{}", connector.stderr())))?;
    let mut best = 0.0f64;
    for _ in 0..runs {
        best = best.max(download(local, bytes)?);
    }
    Ok(Some(best))
}
