//! A throwaway OpenSSH server on a loopback port, with its own config.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::{
    Result, Spawned, Workdir, XtaskError, free_port, require_tool, ssh_keygen_ed25519,
    ssh_public_key_fingerprint,
};

/// A running `sshd -D -e` that accepts the given authorized_keys.
#[derive(Debug)]
pub struct Sshd {
    /// The process; its stderr is sshd's log.
    pub process: Spawned,
    /// The loopback port it listens on.
    pub port: u16,
    /// Its host key fingerprint.
    pub fingerprint: String,
}

impl Sshd {
    /// Starts sshd with TCP forwarding allowed and public-key auth only.
    pub fn start(dir: &Workdir, authorized_keys: &Path) -> Result<Self> {
        Self::start_with_config(dir, authorized_keys, "")
    }

    /// Like [`Sshd::start`], with `extra` (sshd_config lines) appended.
    pub fn start_with_config(dir: &Workdir, authorized_keys: &Path, extra: &str) -> Result<Self> {
        require_tool("sshd")?;
        let sshd = ["/usr/sbin/sshd", "/usr/local/sbin/sshd", "/sbin/sshd"]
            .into_iter()
            .find(|path| Path::new(path).is_file())
            .ok_or_else(|| XtaskError::MissingTool {
                tool: "sshd".into(),
                hint: "apt-get install openssh-server".into(),
            })?;
        // sshd refuses to start as root without its privilege separation directory.
        let _ = std::fs::create_dir_all("/run/sshd");
        let host_key = ssh_keygen_ed25519(dir, "sshd_host")?;
        let fingerprint = ssh_public_key_fingerprint(&dir.join("sshd_host.pub"))?;

        // A free port can be taken between choosing and binding: retry.
        let mut last_error = None;
        for attempt in 0..3 {
            let port = free_port()?;
            let config = dir.join("sshd_config");
            let text = format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {host_key}\nAuthorizedKeysFile {authorized}\n\
                 PidFile {pid}\nStrictModes no\nUsePAM no\nPubkeyAuthentication yes\nPasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\nAllowTcpForwarding yes\n\
                 LogLevel VERBOSE\n{extra}",
                host_key = host_key.display(),
                authorized = authorized_keys.display(),
                pid = dir.join("sshd.pid").display(),
            );
            std::fs::write(&config, text).map_err(XtaskError::io("writing sshd_config"))?;
            let mut command = Command::new(sshd);
            command.args(["-D", "-e", "-f"]).arg(&config);
            let mut process = Spawned::start(&format!("sshd-{attempt}"), dir.path(), command)?;
            match process.wait_for_log("Server listening on", Duration::from_secs(15)) {
                Ok(_) => {
                    return Ok(Self {
                        process,
                        port,
                        fingerprint,
                    });
                }
                Err(error) => last_error = Some(error),
            }
        }
        Err(last_error.unwrap_or_else(|| XtaskError::Failed("sshd did not start".into())))
    }
}
