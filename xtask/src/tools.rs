//! Temporary directories, keys made by the real ssh-keygen, ports, hashes.

use std::fmt::Write as _;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::{Result, XtaskError};

/// Whether `tool` is on the PATH (or in an sbin directory, where sshd and
/// dnsmasq live but a user's PATH may not reach).
pub fn tool_installed(tool: &str) -> bool {
    let on_path = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(tool).is_file()))
        .unwrap_or(false);
    on_path
        || ["/usr/sbin", "/usr/local/sbin", "/sbin"]
            .iter()
            .any(|dir| Path::new(dir).join(tool).is_file())
}

/// Fails with install advice unless `tool` is installed.
pub fn require_tool(tool: &str) -> Result<()> {
    if tool_installed(tool) {
        Ok(())
    } else {
        let package = match tool {
            "ssh" | "ssh-keygen" => "openssh-client",
            "sshd" => "openssh-server",
            other => other,
        };
        Err(XtaskError::MissingTool {
            tool: tool.to_owned(),
            hint: format!("apt-get install {package}; `cargo xtask test` does this"),
        })
    }
}

/// A temporary directory that is removed when dropped — unless
/// `ALKNET_KEEP_WORKDIR` is set, so the logs of a bench or soak run (each
/// process's `.out`/`.err`) can be read after it.
#[derive(Debug)]
pub struct Workdir {
    dir: tempfile::TempDir,
}

impl Workdir {
    /// A fresh, empty directory.
    pub fn new() -> Result<Self> {
        let mut dir = tempfile::Builder::new()
            .prefix("alknet-xtask-")
            .tempdir()
            .map_err(XtaskError::io("creating a temporary directory"))?;
        if std::env::var_os("ALKNET_KEEP_WORKDIR").is_some() {
            dir.disable_cleanup(true);
            eprintln!("keeping {} (ALKNET_KEEP_WORKDIR)", dir.path().display());
        }
        Ok(Self { dir })
    }

    /// The directory's path.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A path inside the directory.
    pub fn join(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// Makes an unencrypted Ed25519 key pair with `ssh-keygen` at `<dir>/<name>`
/// (and `.pub`), returning the private key's path.
pub fn ssh_keygen_ed25519(dir: &Workdir, name: &str) -> Result<PathBuf> {
    require_tool("ssh-keygen")?;
    let path = dir.join(name);
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
        .arg(&path)
        .status()
        .map_err(XtaskError::io("running ssh-keygen"))?;
    if !status.success() {
        return Err(XtaskError::Failed(format!("ssh-keygen for {name} failed")));
    }
    Ok(path)
}

/// The `SHA256:…` fingerprint of a public key file, as ssh-keygen prints it.
pub fn ssh_public_key_fingerprint(public_key: &Path) -> Result<String> {
    let output = Command::new("ssh-keygen")
        .args(["-l", "-E", "sha256", "-f"])
        .arg(public_key)
        .output()
        .map_err(XtaskError::io("running ssh-keygen -l"))?;
    let text = String::from_utf8_lossy(&output.stdout);
    text.split_whitespace()
        .find(|word| word.starts_with("SHA256:"))
        .map(str::to_owned)
        .ok_or_else(|| XtaskError::Failed(format!("ssh-keygen -l printed no fingerprint: {text}")))
}

/// A loopback port that was free a moment ago, for programs (ssh -D, sshd)
/// that cannot be told to pick one themselves.
pub fn free_port() -> Result<u16> {
    let listener =
        TcpListener::bind("127.0.0.1:0").map_err(XtaskError::io("finding a free port"))?;
    let port = listener
        .local_addr()
        .map_err(XtaskError::io("finding a free port"))?
        .port();
    Ok(port)
}

/// A loopback UDP port that was free a moment ago, for iroh listeners.
pub fn free_udp_port() -> Result<u16> {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0")
        .map_err(XtaskError::io("finding a free UDP port"))?;
    let port = socket
        .local_addr()
        .map_err(XtaskError::io("finding a free UDP port"))?
        .port();
    Ok(port)
}

/// A loopback port that was free for both TCP and UDP a moment ago, for DNS
/// servers (dnsmasq, pebble-challtestsrv), which listen on both. A port free
/// for UDP can be in use for TCP by another test's outgoing connection.
pub fn free_tcp_and_udp_port() -> Result<u16> {
    for _ in 0..64 {
        let listener = TcpListener::bind("127.0.0.1:0")
            .map_err(XtaskError::io("finding a free TCP and UDP port"))?;
        let port = listener
            .local_addr()
            .map_err(XtaskError::io("finding a free TCP and UDP port"))?
            .port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    Err(XtaskError::Failed(
        "no loopback port was free for both TCP and UDP in 64 tries".into(),
    ))
}

/// The `connect`/`call` flags naming iroh endpoint `id` at loopback UDP
/// `port`, relays off.
pub fn iroh_peer_args(id: &str, port: u16) -> Vec<String> {
    iroh_peer_args_at(id, SocketAddr::from(([127, 0, 0, 1], port)))
}

/// The `connect`/`call` flags naming iroh endpoint `id` at `addr`, relays
/// off.
pub fn iroh_peer_args_at(id: &str, addr: SocketAddr) -> Vec<String> {
    let addr = addr.to_string();
    [
        "--transport",
        "iroh",
        "--peer",
        id,
        "--peer-addr",
        &addr,
        "--iroh-relay",
        "none",
    ]
    .map(str::to_owned)
    .to_vec()
}

/// Lower-case hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .fold(String::new(), |mut hex, byte| {
            let _ = write!(hex, "{byte:02x}");
            hex
        })
}
