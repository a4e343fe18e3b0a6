//! Real proxies to chain through: microsocks (SOCKS5) and tinyproxy (HTTP
//! CONNECT), each on a loopback port with its log captured.

use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

use crate::{Result, Spawned, Workdir, XtaskError, free_port, require_tool, wait_until};

/// A running upstream proxy.
#[derive(Debug)]
pub struct UpstreamProxyProcess {
    /// The process.
    pub process: Spawned,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its URL for `--proxy`.
    pub url: String,
    log_file: Option<std::path::PathBuf>,
}

impl UpstreamProxyProcess {
    /// Starts microsocks, which logs every connection it makes to stderr.
    pub fn microsocks(dir: &Workdir) -> Result<Self> {
        require_tool("microsocks")?;
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let mut command = Command::new("microsocks");
        command.args(["-i", "127.0.0.1", "-p", &addr.port().to_string()]);
        let process = Spawned::start("microsocks", dir.path(), command)?;
        Self::ready(process, addr, format!("socks5://{addr}"), None)
    }

    /// Starts tinyproxy in the foreground with its own config, logging
    /// every CONNECT to a file.
    pub fn tinyproxy(dir: &Workdir) -> Result<Self> {
        require_tool("tinyproxy")?;
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let log_file = dir.join("tinyproxy.log");
        let config = dir.join("tinyproxy.conf");
        // No ConnectPort lines: CONNECT is allowed to every port.
        let text = format!(
            "Port {}\nListen 127.0.0.1\nTimeout 60\nLogFile \"{}\"\nLogLevel Connect\nMaxClients 100\nAllow 127.0.0.1\n",
            addr.port(),
            log_file.display()
        );
        std::fs::write(&config, text).map_err(XtaskError::io("writing tinyproxy.conf"))?;
        let mut command = Command::new("tinyproxy");
        command.arg("-d").arg("-c").arg(&config);
        let process = Spawned::start("tinyproxy", dir.path(), command)?;
        Self::ready(process, addr, format!("http://{addr}"), Some(log_file))
    }

    fn ready(
        process: Spawned,
        addr: SocketAddr,
        url: String,
        log_file: Option<std::path::PathBuf>,
    ) -> Result<Self> {
        let listening = wait_until("the proxy to listen", Duration::from_secs(15), || {
            TcpStream::connect(addr).ok()
        });
        if let Err(error) = listening {
            return Err(XtaskError::Failed(format!(
                "{error}; its log:\n{}",
                process.stderr()
            )));
        }
        Ok(Self {
            process,
            addr,
            url,
            log_file,
        })
    }

    /// Everything the proxy logged so far.
    pub fn log(&self) -> String {
        match &self.log_file {
            Some(file) => std::fs::read_to_string(file).unwrap_or_default(),
            None => self.process.stderr(),
        }
    }
}
