//! Test certificates made by the real `openssl` command.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{Result, Workdir, XtaskError, require_tool};

/// PEM files for a TLS server.
#[derive(Debug)]
pub struct TlsFiles {
    /// The CA certificate that signed `cert` (the certificate itself when
    /// self-signed).
    pub ca: PathBuf,
    /// The server's certificate.
    pub cert: PathBuf,
    /// The server's private key.
    pub key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) -> Result<()> {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .map_err(XtaskError::io("running openssl"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(XtaskError::Failed(format!(
            "openssl {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        )))
    }
}

const EC_KEY: [&str; 4] = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
const NAMES: &str = "subjectAltName=DNS:localhost,IP:127.0.0.1";

/// A test CA and a server certificate for `localhost` and `127.0.0.1`
/// signed by it.
pub fn ca_signed_server_cert(dir: &Workdir) -> Result<TlsFiles> {
    require_tool("openssl")?;
    let d = dir.path();
    let ca_args = [
        &[
            "req",
            "-x509",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=alknet test CA",
        ][..],
        &EC_KEY,
        &["-keyout", "ca.key", "-out", "ca.pem"],
    ]
    .concat();
    openssl(d, &ca_args)?;
    let csr_args = [
        &["req", "-nodes", "-subj", "/CN=localhost"][..],
        &EC_KEY,
        &["-keyout", "server.key", "-out", "server.csr"],
    ]
    .concat();
    openssl(d, &csr_args)?;
    std::fs::write(
        dir.join("server.ext"),
        format!("{NAMES}\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n"),
    )
    .map_err(XtaskError::io("writing server.ext"))?;
    openssl(
        d,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "server.ext",
            "-out",
            "server.pem",
        ],
    )?;
    Ok(TlsFiles {
        ca: dir.join("ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
    })
}

/// A self-signed certificate for `localhost` and `127.0.0.1`.
pub fn self_signed_cert(dir: &Workdir) -> Result<TlsFiles> {
    require_tool("openssl")?;
    let args = [
        &[
            "req",
            "-x509",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            NAMES,
        ][..],
        &EC_KEY,
        &["-keyout", "self.key", "-out", "self.pem"],
    ]
    .concat();
    openssl(dir.path(), &args)?;
    Ok(TlsFiles {
        ca: dir.join("self.pem"),
        cert: dir.join("self.pem"),
        key: dir.join("self.key"),
    })
}
