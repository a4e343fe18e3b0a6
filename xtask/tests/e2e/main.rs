//! Whole-program tests: the real `alknet` binary, driven by curl and
//! OpenSSH. Run them with `cargo xtask test` (or `cargo test -p xtask`,
//! which builds the binary first).

mod acme;
mod bad_input;
mod call;
mod certificates;
mod cli;
mod fallback;
mod forwards;
mod http_proxy;
mod install;
mod interop;
mod iroh;
mod known_hosts;
mod limits;
mod policy;
mod proxies;
mod reconnect;
mod security;
mod shutdown;
mod stealth;
mod tidy;
mod tls;
mod tokens;
mod tunnel;
mod udp;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output};

use std::path::PathBuf;

use xtask::BoundedOutput as _;
use xtask::{Result, XtaskError, require_tool};

/// The xtask crate's directory in the tree under test. Read at run time
/// (cargo test sets it) rather than baked in with `env!`: the build cache is
/// shared between clones, and a reused test binary must not read the files
/// of the clone that built it.
fn xtask_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
}

/// Fetches `url` through a SOCKS5 proxy with curl, letting the proxy
/// resolve names (socks5h), into `out`.
fn curl_via_socks(proxy: SocketAddr, url: &str, out: &Path) -> Result<Output> {
    require_tool("curl")?;
    Command::new("curl")
        .args(["--silent", "--show-error", "--fail", "--max-time", "120"])
        .arg("--socks5-hostname")
        .arg(proxy.to_string())
        .arg("--output")
        .arg(out)
        .arg(url)
        .bounded_output()
        .map_err(XtaskError::io("running curl"))
}

/// Fetches `url` through `proxy` and returns the body, failing on any error.
fn fetch(proxy: SocketAddr, url: &str, out: &Path) -> Result<Vec<u8>> {
    let output = curl_via_socks(proxy, url, out)?;
    if !output.status.success() {
        return Err(XtaskError::Failed(format!(
            "curl {url} via {proxy} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        )));
    }
    std::fs::read(out).map_err(XtaskError::io("reading curl's output"))
}

/// Asserts that no log mentions any of `secrets` (tunnel targets).
fn assert_logs_do_not_mention(logs: &[(&str, String)], secrets: &[String]) {
    for (name, log) in logs {
        assert!(
            !log.is_empty(),
            "the {name} log is empty: is logging broken?"
        );
        for secret in secrets {
            assert!(
                !log.contains(secret.as_str()),
                "the {name} log mentions the tunnel target {secret:?}:\n{log}"
            );
        }
    }
}
