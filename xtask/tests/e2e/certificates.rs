//! OpenSSH user certificates made by the real `ssh-keygen -s`: what
//! `alknet serve --cert-authority` accepts and refuses.

use std::path::{Path, PathBuf};
use std::process::Command;

use xtask::BoundedOutput as _;
use xtask::{
    AlknetClient, AlknetServer, HttpTarget, Profile, SshDynamicForward, Workdir, connect_command,
    socks5_connect_reply, ssh_keygen_ed25519,
};

use crate::fetch;

/// A fresh user key `name` with a certificate from the CA `ca`, signed
/// with the extra `ssh-keygen -s` arguments (principals, validity, options).
pub(crate) fn certified_key(dir: &Workdir, ca: &str, name: &str, args: &[&str]) -> PathBuf {
    let key = ssh_keygen_ed25519(dir, name).unwrap();
    let status = Command::new("ssh-keygen")
        .args(["-q", "-s"])
        .arg(dir.join(ca))
        .args(["-I", &format!("{name}-id")])
        .args(args)
        .arg(dir.join(&format!("{name}.pub")))
        .status()
        .unwrap();
    assert!(status.success(), "ssh-keygen -s for {name} failed");
    assert!(dir.join(&format!("{name}-cert.pub")).is_file());
    key
}

pub(crate) fn server_trusting_ca(dir: &Workdir) -> AlknetServer {
    ssh_keygen_ed25519(dir, "ca").unwrap();
    ssh_keygen_ed25519(dir, "other_ca").unwrap();
    let ca = dir.join("ca.pub").display().to_string();
    AlknetServer::start(dir, &["--cert-authority", &ca]).unwrap()
}

/// Runs `alknet connect` with `key` (its `-cert.pub` is picked up beside
/// it) and expects a refusal: a non-zero exit naming the certificate.
fn assert_refused(server: &AlknetServer, key: &Path, why: &str) {
    let output = connect_command(Profile::Dev, server.port, key, &["--user", "tester"])
        .unwrap()
        .bounded_output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "{why}: the certificate was accepted"
    );
    assert!(stderr.contains("refused certificate"), "{why}: {stderr}");
}

#[test]
fn a_valid_certificate_logs_in_and_tunnels() {
    let dir = Workdir::new().unwrap();
    let server = server_trusting_ca(&dir);
    let key = certified_key(
        &dir,
        "ca",
        "valid",
        &["-n", "tester,other", "-V", "-5m:+1h"],
    );
    let client = AlknetClient::start(&dir, server.port, &key, &["--user", "tester"]).unwrap();
    let target = HttpTarget::start("127.0.0.1:0").unwrap();
    let url = format!("http://127.0.0.1:{}/50000", target.addr().port());
    assert_eq!(
        fetch(client.socks_addr, &url, &dir.join("body")).unwrap(),
        HttpTarget::body(50_000)
    );
    assert!(server.log().contains("result=accept"), "{}", server.log());
}

#[test]
fn certificates_that_must_not_work_are_refused() {
    let dir = Workdir::new().unwrap();
    let server = server_trusting_ca(&dir);
    // (name, signing CA, ssh-keygen arguments, the server's reason; russh
    // itself refuses certificates outside their validity window.)
    let cases: [(&str, &str, Vec<&str>, Option<&str>); 6] = [
        (
            "expired",
            "ca",
            vec!["-n", "tester", "-V", "20200101:20200102"],
            None,
        ),
        ("future", "ca", vec!["-n", "tester", "-V", "+1d:+2d"], None),
        (
            "stranger",
            "ca",
            vec!["-n", "someone-else"],
            Some("not among its principals"),
        ),
        ("anyone", "ca", vec![], Some("lists no principals")),
        (
            "elsewhere",
            "ca",
            vec!["-n", "tester", "-O", "source-address=10.0.0.0/8"],
            Some("source-address does not allow this client"),
        ),
        (
            "forged",
            "other_ca",
            vec!["-n", "tester"],
            Some("not signed by a trusted certificate authority"),
        ),
    ];
    for (name, ca, args, reason) in cases {
        let key = certified_key(&dir, ca, name, &args);
        assert_refused(&server, &key, name);
        if let Some(reason) = reason {
            let log = server.log();
            assert!(
                log.contains(reason),
                "{name}: the server did not refuse it because {reason:?}:\n{log}"
            );
        }
    }
    assert!(!server.log().contains("result=accept"), "{}", server.log());
}

#[test]
fn a_certificate_without_port_forwarding_logs_in_but_opens_nothing() {
    let dir = Workdir::new().unwrap();
    let server = server_trusting_ca(&dir);
    let key = certified_key(
        &dir,
        "ca",
        "nofwd",
        &["-n", "tester", "-O", "no-port-forwarding"],
    );
    let client = AlknetClient::start(&dir, server.port, &key, &["--user", "tester"]).unwrap();
    let target = HttpTarget::start("127.0.0.1:0").unwrap();
    // 2 = "connection not allowed by ruleset".
    let reply = socks5_connect_reply(client.socks_addr, "127.0.0.1", target.addr().port()).unwrap();
    assert_eq!(reply, 2);
}

#[test]
fn openssh_logs_in_with_an_ssh_keygen_certificate() {
    let dir = Workdir::new().unwrap();
    let server = server_trusting_ca(&dir);
    let key = certified_key(&dir, "ca", "openssh", &["-n", "tester"]);
    let cert = format!("CertificateFile={}", dir.join("openssh-cert.pub").display());
    let ssh = SshDynamicForward::start(
        &dir,
        "ssh-cert",
        server.port,
        "tester",
        &key,
        None,
        &["-o", &cert],
    )
    .unwrap_or_else(|e| panic!("{e}\nserver log:\n{}", server.log()));
    let target = HttpTarget::start("127.0.0.1:0").unwrap();
    let url = format!("http://127.0.0.1:{}/50000", target.addr().port());
    assert_eq!(
        fetch(ssh.socks_addr, &url, &dir.join("body")).unwrap(),
        HttpTarget::body(50_000)
    );
}
