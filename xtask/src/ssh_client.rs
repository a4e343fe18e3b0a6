//! OpenSSH's `ssh -N -D`: a SOCKS5 proxy through an SSH server.

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::{Result, Spawned, Workdir, XtaskError, free_port, require_tool, wait_until};

/// A running `ssh -N -D 127.0.0.1:<port>`.
#[derive(Debug)]
pub struct SshDynamicForward {
    /// The ssh process; its stderr is ssh's log.
    pub process: Spawned,
    /// Where ssh's SOCKS5 server listens.
    pub socks_addr: SocketAddr,
}

impl SshDynamicForward {
    /// Connects as `user` to `127.0.0.1:<server_port>` with `key`.
    ///
    /// With `known_hosts`, the server's key is checked strictly against it;
    /// without, any host key is accepted. `extra_args` go before the
    /// destination (for example `-c aes128-gcm@openssh.com`).
    pub fn start(
        dir: &Workdir,
        name: &str,
        server_port: u16,
        user: &str,
        key: &Path,
        known_hosts: Option<&Path>,
        extra_args: &[&str],
    ) -> Result<Self> {
        // The port was free a moment ago; if ssh loses the race for it,
        // it exits (ExitOnForwardFailure) and we try another.
        let mut last_error = None;
        for attempt in 0..3 {
            let socks_addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
            let mut command = openssh_client(server_port, key, known_hosts)?;
            command
                .args(["-D", &socks_addr.to_string()])
                .args(extra_args)
                .arg(format!("{user}@127.0.0.1"));
            let mut process = Spawned::start(&format!("{name}-{attempt}"), dir.path(), command)?;
            let mut exited = false;
            let listening = wait_until(
                &format!("{name} to listen"),
                Duration::from_secs(30),
                || {
                    if TcpStream::connect(socks_addr).is_ok() {
                        return Some(true);
                    }
                    exited = process.wait_exit(Duration::ZERO).is_ok();
                    exited.then_some(false)
                },
            );
            match listening {
                Ok(true) => {
                    return Ok(Self {
                        process,
                        socks_addr,
                    });
                }
                _ => {
                    last_error = Some(XtaskError::Failed(format!(
                        "{name} did not start listening; ssh's log:\n{}",
                        process.stderr()
                    )));
                    if !exited {
                        break;
                    }
                }
            }
        }
        Err(last_error.unwrap_or_else(|| XtaskError::Failed(format!("{name} did not start"))))
    }
}

/// `ssh -N` to `127.0.0.1:<server_port>` with `key` and no user config,
/// ready for forwarding flags and then the destination.
///
/// With `known_hosts`, the server's key is checked strictly against it;
/// without, any host key is accepted.
pub fn openssh_client(server_port: u16, key: &Path, known_hosts: Option<&Path>) -> Result<Command> {
    require_tool("ssh")?;
    let mut command = Command::new("ssh");
    command
        .args([
            "-F",
            "/dev/null",
            "-N",
            "-p",
            &server_port.to_string(),
            "-i",
        ])
        .arg(key)
        .args(["-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes"])
        .args(["-o", "ExitOnForwardFailure=yes"]);
    match known_hosts {
        Some(file) => command
            .args(["-o", "StrictHostKeyChecking=yes", "-o"])
            .arg(format!("UserKnownHostsFile={}", file.display())),
        None => command.args([
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
        ]),
    };
    Ok(command)
}

/// The name of the user running the tests, as sshd sees it.
pub fn current_user() -> Result<String> {
    let output = Command::new("id")
        .arg("-un")
        .output()
        .map_err(XtaskError::io("running id -un"))?;
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}
