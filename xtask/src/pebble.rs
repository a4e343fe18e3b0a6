//! Pebble (Let's Encrypt's test ACME server) and pebble-challtestsrv (its
//! DNS, answering every A query with 127.0.0.1) on free loopback ports,
//! with Pebble's own HTTPS certificate made by openssl.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::{
    BoundedOutput as _, Result, Spawned, Workdir, XtaskError, ca_signed_server_cert, free_port,
    free_tcp_and_udp_port, require_tool, wait_until,
};

/// A running Pebble with its DNS server; both stop (by PID) when dropped.
#[derive(Debug)]
pub struct Pebble {
    /// Pebble itself; its log is on stdout.
    pub process: Spawned,
    _dns: Spawned,
    /// The ACME directory URL.
    pub directory: String,
    /// The CA of Pebble's HTTPS certificate (for `--acme-ca`).
    pub https_ca: PathBuf,
    management: u16,
    dir: PathBuf,
    config: PathBuf,
    dns_port: u16,
}

/// Where Pebble validates challenges and how long its certificates live.
#[derive(Clone, Copy, Debug)]
pub struct PebblePorts {
    /// TLS-ALPN-01 is checked on this port (the alknet TLS listener's).
    pub tls: u16,
    /// HTTP-01 is checked on this port.
    pub http: u16,
    /// Certificate lifetime in seconds.
    pub validity_secs: u64,
}

impl Pebble {
    /// Starts Pebble and its DNS server, waiting until the directory answers.
    pub fn start(dir: &Workdir, ports: PebblePorts) -> Result<Self> {
        for tool in ["pebble", "pebble-challtestsrv", "curl"] {
            require_tool(tool)?;
        }
        let https = ca_signed_server_cert(dir)?;
        let dns_port = free_tcp_and_udp_port()?;
        let mut dns = Command::new("pebble-challtestsrv");
        dns.args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args(["-dns01", &format!("127.0.0.1:{dns_port}")])
            .args(["-management", &format!("127.0.0.1:{}", free_port()?)])
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""]);
        let dns = Spawned::start("challtestsrv", dir.path(), dns)?;
        let (listen, management) = (free_port()?, free_port()?);
        let config = serde_json::json!({ "pebble": {
            "listenAddress": format!("127.0.0.1:{listen}"),
            "managementListenAddress": format!("127.0.0.1:{management}"),
            "certificate": https.cert,
            "privateKey": https.key,
            "httpPort": ports.http,
            "tlsPort": ports.tls,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
            "certificateValidityPeriod": ports.validity_secs,
        }});
        let config_path = dir.join("pebble.json");
        std::fs::write(&config_path, config.to_string())
            .map_err(XtaskError::io("writing pebble.json"))?;
        let process = launch(dir.path(), &config_path, dns_port)?;
        Ok(Self {
            process,
            _dns: dns,
            directory: format!("https://127.0.0.1:{listen}/dir"),
            https_ca: https.ca,
            management,
            dir: dir.path().to_path_buf(),
            config: config_path,
            dns_port,
        })
    }

    /// Stops Pebble (by PID), as an outage would.
    pub fn stop(&mut self) -> Result<()> {
        self.process.kill()
    }

    /// Starts Pebble again on the same ports. Like a real CA after a
    /// disaster it has a new root and knows no accounts.
    pub fn restart(&mut self) -> Result<()> {
        self.process = launch(&self.dir, &self.config, self.dns_port)?;
        Ok(())
    }

    /// The root that signs what Pebble issues (it makes a new one on every
    /// start), saved to a file for `--tls-ca`.
    pub fn issuing_root(&self) -> Result<PathBuf> {
        let path = self.dir.join("pebble-root.pem");
        let output = Command::new("curl")
            .args(["--silent", "--fail", "--max-time", "10", "--cacert"])
            .arg(&self.https_ca)
            .arg(format!("https://127.0.0.1:{}/roots/0", self.management))
            .arg("--output")
            .arg(&path)
            .bounded_output()
            .map_err(XtaskError::io("running curl"))?;
        if !output.status.success() {
            return Err(XtaskError::Failed(format!(
                "cannot fetch Pebble's root: {}",
                String::from_utf8_lossy(&output.stderr)
            )));
        }
        Ok(path)
    }

    /// How many certificates Pebble has issued so far (from its log).
    pub fn issued(&self) -> usize {
        self.process
            .stdout()
            .matches("Issued certificate serial")
            .count()
    }

    /// Waits until Pebble has issued `count` certificates.
    pub fn wait_for_issued(&self, count: usize, limit: Duration) -> Result<()> {
        wait_until("Pebble to issue", limit, || {
            (self.issued() >= count).then_some(())
        })
        .map_err(|_| {
            XtaskError::Failed(format!(
                "Pebble issued {} of {count} certificates within {limit:?}:\n{}",
                self.issued(),
                self.process.stdout()
            ))
        })
    }
}

fn launch(dir: &std::path::Path, config: &std::path::Path, dns_port: u16) -> Result<Spawned> {
    let mut pebble = Command::new("pebble");
    pebble
        .arg("-config")
        .arg(config)
        .args(["-dnsserver", &format!("127.0.0.1:{dns_port}")])
        .env("PEBBLE_VA_NOSLEEP", "1")
        .env("PEBBLE_WFE_NONCEREJECT", "0")
        // Every order gets fresh authorizations, so each one is validated.
        .env("PEBBLE_AUTHZREUSE", "0");
    let mut process = Spawned::start("pebble", dir, pebble)?;
    process.wait_for_stdout("ACME directory available", Duration::from_secs(30))?;
    Ok(process)
}
