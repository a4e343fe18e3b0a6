//! Starting `alknet serve` and `alknet connect` as a user would.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::{Profile, Result, Spawned, Workdir, XtaskError, alknet_binary, ssh_keygen_ed25519};

const STARTUP: Duration = Duration::from_secs(30);

/// The log filter the tests run alknet with: everything alknet logs, at
/// every level, so that checks for leaked destinations see all of it.
/// (Benchmarks run release builds at the default level users get.)
pub const TEST_LOG_FILTER: &str = "debug,russh=info";

/// Extracts `value` from a log line containing `name=value`.
fn field(line: &str, name: &str) -> Option<String> {
    let key = format!("{name}=");
    line.split_whitespace()
        .find_map(|word| word.strip_prefix(&key))
        .map(|value| value.trim_matches('"').to_owned())
}

/// An `alknet` command with the test environment applied.
pub fn alknet_command(profile: Profile) -> Result<Command> {
    let mut command = Command::new(alknet_binary(profile)?);
    match profile {
        Profile::Dev => command.env("RUST_LOG", TEST_LOG_FILTER),
        Profile::Release => command.env_remove("RUST_LOG"),
    };
    command
        .env_remove("ALKNET_SERVER")
        .env_remove("ALKNET_IDENTITY")
        .env_remove("ALKNET_PASSPHRASE")
        // Clients that pass no --host-key must not read or write the
        // user's known_hosts: each test server has a fresh key, and ports
        // come round again. Known-hosts tests pass --known-hosts.
        .env("ALKNET_KNOWN_HOSTS", "/dev/null");
    Ok(command)
}

/// `alknet connect` to `127.0.0.1:<port>` with `identity`, SOCKS5 on a
/// kernel-chosen port, and `extra_args`; ready to run.
pub fn connect_command(
    profile: Profile,
    port: u16,
    identity: &Path,
    extra_args: &[&str],
) -> Result<Command> {
    connect_command_to(
        profile,
        &["--server", &format!("127.0.0.1:{port}")],
        identity,
        extra_args,
    )
}

/// `alknet connect` to the server `server_args` name (`--server …`, or
/// `--transport iroh --peer …`), otherwise as [`connect_command`].
pub fn connect_command_to(
    profile: Profile,
    server_args: &[&str],
    identity: &Path,
    extra_args: &[&str],
) -> Result<Command> {
    let mut command = alknet_command(profile)?;
    command
        .arg("connect")
        .args(server_args)
        .arg("--identity")
        .arg(identity)
        .args(["--socks5", "127.0.0.1:0"])
        .args(extra_args);
    Ok(command)
}

/// A running `alknet serve` with keys made by ssh-keygen.
#[derive(Debug)]
pub struct AlknetServer {
    /// The process; its stderr is the server log.
    pub process: Spawned,
    /// The loopback port of its first TCP or TLS listener (0 if none).
    pub port: u16,
    /// Its iroh endpoint id, when it has an iroh listener (read from the
    /// `endpoint-id:` line on stdout).
    pub endpoint_id: Option<String>,
    /// Its host key fingerprint, as it logged it.
    pub fingerprint: String,
    /// The private key of a user listed in its authorized_keys.
    pub user_key: PathBuf,
    /// Its authorized_keys file.
    pub authorized_keys: PathBuf,
    /// Every listener, as logged: `tcp://127.0.0.1:PORT`, `tls://…`.
    pub listeners: Vec<String>,
    launch: Launch,
}

/// What it takes to start the same server again.
#[derive(Debug)]
struct Launch {
    dir: PathBuf,
    profile: Profile,
    host_key: PathBuf,
    authorized_keys: PathBuf,
    extra_args: Vec<String>,
    count: usize,
    /// The `--listen` values as first given (iroh ones are restarted as is).
    listens: Vec<String>,
}

/// The endpoint id a server printed on stdout, if any.
fn endpoint_id_of(process: &Spawned) -> Option<String> {
    process
        .stdout()
        .lines()
        .find_map(|line| line.strip_prefix("endpoint-id: "))
        .map(|id| id.trim().to_owned())
}

/// The port of a listener URL such as `tls://127.0.0.1:4433`.
pub fn listener_port(url: &str) -> Option<u16> {
    url.rsplit(':').next()?.parse().ok()
}

impl Launch {
    /// Starts `alknet serve` on `listens` (`--listen` values); returns the
    /// process, its listener URLs and its host key fingerprint.
    fn start(&mut self, listens: &[String]) -> Result<(Spawned, Vec<String>, String)> {
        let mut command = alknet_command(self.profile)?;
        command
            .arg("serve")
            .arg("--key")
            .arg(&self.host_key)
            .arg("--authorized-keys")
            .arg(&self.authorized_keys);
        for listen in listens {
            command.args(["--listen", listen]);
        }
        command.args(&self.extra_args);
        let name = match self.count {
            0 => "alknet-serve".to_owned(),
            n => format!("alknet-serve-{n}"),
        };
        self.count += 1;
        let mut process = Spawned::start(&name, &self.dir, command)?;
        let ready = process.wait_for_log("alknet server ready", STARTUP)?;
        let fingerprint = field(&ready, "host_key")
            .ok_or_else(|| XtaskError::Failed(format!("no host key in {ready:?}")))?;
        let listeners: Vec<String> = process
            .stderr()
            .lines()
            .filter(|line| line.contains(" listening listen="))
            .filter_map(|line| field(line, "listen"))
            .collect();
        if listeners.is_empty() {
            return Err(XtaskError::Failed(format!(
                "no listener logged:\n{}",
                process.stderr()
            )));
        }
        Ok((process, listeners, fingerprint))
    }
}

impl AlknetServer {
    /// Starts a debug-build server on a kernel-chosen loopback port.
    pub fn start(dir: &Workdir, extra_args: &[&str]) -> Result<Self> {
        Self::start_with(dir, Profile::Dev, extra_args)
    }

    /// Starts a debug-build server on the given `--listen` values (such as
    /// `tls://127.0.0.1:0`) instead of one TCP listener.
    pub fn start_listening(dir: &Workdir, listens: &[&str], extra_args: &[&str]) -> Result<Self> {
        Self::launch(dir, Profile::Dev, listens, extra_args)
    }

    /// Starts a server built with `profile` on the given `--listen` values.
    pub fn start_listening_with(
        dir: &Workdir,
        profile: Profile,
        listens: &[&str],
        extra_args: &[&str],
    ) -> Result<Self> {
        Self::launch(dir, profile, listens, extra_args)
    }

    /// Starts a server built with `profile`.
    pub fn start_with(dir: &Workdir, profile: Profile, extra_args: &[&str]) -> Result<Self> {
        Self::launch(dir, profile, &["127.0.0.1:0"], extra_args)
    }

    fn launch(
        dir: &Workdir,
        profile: Profile,
        listens: &[&str],
        extra_args: &[&str],
    ) -> Result<Self> {
        let host_key = ssh_keygen_ed25519(dir, "alknet_host")?;
        let user_key = ssh_keygen_ed25519(dir, "alknet_user")?;
        let authorized_keys = dir.join("authorized_keys");
        std::fs::copy(dir.join("alknet_user.pub"), &authorized_keys)
            .map_err(XtaskError::io("writing authorized_keys"))?;
        let mut launch = Launch {
            dir: dir.path().to_path_buf(),
            profile,
            host_key,
            authorized_keys: authorized_keys.clone(),
            extra_args: extra_args.iter().map(|arg| (*arg).to_owned()).collect(),
            count: 0,
            listens: listens.iter().map(|l| (*l).to_owned()).collect(),
        };
        let listens = launch.listens.clone();
        let (process, listeners, fingerprint) = launch.start(&listens)?;
        let port = listeners
            .iter()
            .find_map(|listener| listener_port(listener))
            .unwrap_or(0);
        let endpoint_id = endpoint_id_of(&process);
        Ok(Self {
            process,
            port,
            endpoint_id,
            fingerprint,
            user_key,
            authorized_keys,
            listeners,
            launch,
        })
    }

    /// Kills the server with SIGKILL (no goodbye to its clients) and starts
    /// it again on the same port with the same keys.
    pub fn kill_and_restart(&mut self) -> Result<()> {
        self.process.kill()?;
        // Kernel-chosen TCP ports are kept; iroh listeners restart as given.
        let listens: Vec<String> = self
            .listeners
            .iter()
            .zip(&self.launch.listens)
            .map(|(logged, given)| {
                if logged.starts_with("iroh://") {
                    given.clone()
                } else {
                    logged.clone()
                }
            })
            .collect();
        let (process, _, _) = self.launch.start(&listens)?;
        self.endpoint_id = endpoint_id_of(&process);
        self.process = process;
        Ok(())
    }

    /// Kills the server and starts it again on the same port with the
    /// same keys and `extra_args` added.
    pub fn restart_with_args(&mut self, extra_args: &[&str]) -> Result<()> {
        self.launch
            .extra_args
            .extend(extra_args.iter().map(|arg| (*arg).to_owned()));
        self.kill_and_restart()
    }

    /// The log of the current server process so far.
    pub fn log(&self) -> String {
        self.process.stderr()
    }

    /// Replaces the server's authorized_keys with `text`, sends SIGHUP and
    /// waits until the server says it reloaded.
    pub fn reload_authorized_keys(&self, text: &str) -> Result<()> {
        const RELOADED: &str = "configuration reloaded";
        let before = self.log().matches(RELOADED).count();
        std::fs::write(&self.authorized_keys, text)
            .map_err(XtaskError::io("writing authorized_keys"))?;
        self.process.hangup()?;
        crate::wait_until("the reload", STARTUP, || {
            (self.log().matches(RELOADED).count() > before).then_some(())
        })
    }

    /// The authorized_keys line of the user key, as the server got it.
    pub fn user_key_line(&self) -> Result<String> {
        let text = std::fs::read_to_string(self.launch.dir.join("alknet_user.pub"))
            .map_err(XtaskError::io("reading the user's public key"))?;
        Ok(text.trim().to_owned())
    }
}

/// A running `alknet connect` offering SOCKS5 on a kernel-chosen port.
#[derive(Debug)]
pub struct AlknetClient {
    /// The process; its stderr is the client log.
    pub process: Spawned,
    /// Where its SOCKS5 server listens.
    pub socks_addr: SocketAddr,
}

impl AlknetClient {
    /// Connects a debug-build client to `127.0.0.1:<port>`.
    pub fn start(dir: &Workdir, port: u16, identity: &Path, extra_args: &[&str]) -> Result<Self> {
        Self::start_with(dir, Profile::Dev, port, identity, extra_args)
    }

    /// Connects a client built with `profile`.
    pub fn start_with(
        dir: &Workdir,
        profile: Profile,
        port: u16,
        identity: &Path,
        extra_args: &[&str],
    ) -> Result<Self> {
        let server = format!("127.0.0.1:{port}");
        Self::start_to(dir, profile, &["--server", &server], identity, extra_args)
    }

    /// Connects a client to the server `server_args` name (such as
    /// `--transport iroh --peer ID --peer-addr 127.0.0.1:PORT`).
    pub fn start_to(
        dir: &Workdir,
        profile: Profile,
        server_args: &[&str],
        identity: &Path,
        extra_args: &[&str],
    ) -> Result<Self> {
        let command = connect_command_to(profile, server_args, identity, extra_args)?;
        let mut process = Spawned::start("alknet-connect", dir.path(), command)?;
        let listening = process.wait_for_log("SOCKS5 listening", STARTUP)?;
        let socks_addr = field(&listening, "socks5")
            .and_then(|addr| addr.parse().ok())
            .ok_or_else(|| XtaskError::Failed(format!("no SOCKS5 address in {listening:?}")))?;
        process.wait_for_log(" connected server=", STARTUP)?;
        Ok(Self {
            process,
            socks_addr,
        })
    }

    /// The client log so far.
    pub fn log(&self) -> String {
        self.process.stderr()
    }

    /// The server-side port of the `index`-th `--remote-forward` (1-based),
    /// from the most recent session's log line.
    pub fn remote_forward_port(&self, index: usize) -> Result<u16> {
        let tag = format!("remote={index} ");
        self.log()
            .lines()
            .filter(|line| {
                line.contains("remote forward listening on the server") && line.contains(&tag)
            })
            .filter_map(|line| field(line, "port")?.parse().ok())
            .next_back()
            .ok_or_else(|| XtaskError::Failed(format!("no server port for remote forward {index}")))
    }

    /// Where the `index`-th `--forward` (1-based, in the order given) listens.
    pub fn forward_addr(&self, index: usize) -> Result<SocketAddr> {
        let tag = format!("local={index} ");
        self.log()
            .lines()
            .filter(|line| line.contains("local forward listening") && line.contains(&tag))
            .find_map(|line| field(line, "listen")?.parse().ok())
            .ok_or_else(|| XtaskError::Failed(format!("no listen address for forward {index}")))
    }
}

/// `alknet call` to `127.0.0.1:<port>` with `identity`, pinned to
/// `host_key`: the operation `path` and its JSON `input`; ready to run.
pub fn call_command(
    port: u16,
    identity: &Path,
    host_key: &str,
    path: &str,
    input: Option<&str>,
) -> Result<Command> {
    let server = format!("127.0.0.1:{port}");
    call_command_to(&["--server", &server], identity, host_key, path, input)
}

/// `alknet call` to the server `server_args` name, otherwise as
/// [`call_command`].
pub fn call_command_to(
    server_args: &[&str],
    identity: &Path,
    host_key: &str,
    path: &str,
    input: Option<&str>,
) -> Result<Command> {
    let mut command = alknet_command(Profile::Dev)?;
    command
        .arg("call")
        .args(server_args)
        .arg("--identity")
        .arg(identity)
        .args(["--host-key", host_key, "--timeout", "30"])
        .arg(path)
        .args(input);
    Ok(command)
}

#[cfg(test)]
mod tests {
    use super::field;

    #[test]
    fn fields_are_read_from_log_lines() {
        let line = "2026-01-01T00:00:00Z  INFO alknet server ready listen=tcp://127.0.0.1:4242 host_key=SHA256:abc";
        assert_eq!(
            field(line, "listen").as_deref(),
            Some("tcp://127.0.0.1:4242")
        );
        assert_eq!(field(line, "host_key").as_deref(), Some("SHA256:abc"));
        assert_eq!(field(line, "missing"), None);
    }
}
