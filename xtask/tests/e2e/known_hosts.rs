//! Host keys as an OpenSSH user expects them: remembered on first contact,
//! a changed or revoked key refused for good, entries made by ssh-keyscan
//! and ssh-keygen -H honoured, one file shared with ssh, host certificates
//! through @cert-authority, and `user@host` destinations.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use xtask::BoundedOutput as _;
use xtask::{
    AlknetClient, AlknetServer, HttpTarget, Profile, Spawned, SshDynamicForward, Workdir,
    connect_command, free_port, require_tool, ssh_keygen_ed25519,
};

use crate::fetch;

const LIMIT: Duration = Duration::from_secs(30);

fn tunnels(client_socks: std::net::SocketAddr, dir: &Workdir) {
    let target = HttpTarget::start("127.0.0.1:0").unwrap();
    let url = format!("http://localhost:{}/4096", target.addr().port());
    let body = fetch(client_socks, &url, &dir.join("body")).unwrap();
    assert!(body == HttpTarget::body(4096), "body differs");
}

/// A client run to its end (it must give up on its own).
fn failed_connect(server: &AlknetServer, identity: &Path, extra: &[&str]) -> String {
    let output: Output = connect_command(Profile::Dev, server.port, identity, extra)
        .unwrap()
        .bounded_output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        !output.status.success(),
        "the client did not give up:\n{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

fn tool(name: &str, args: &[&str]) -> String {
    require_tool(name).unwrap();
    let output = Command::new(name).args(args).bounded_output().unwrap();
    assert!(
        output.status.success(),
        "{name} {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn first_contact_is_remembered_and_a_changed_key_is_refused_for_good() {
    let dir = Workdir::new().unwrap();
    let server = AlknetServer::start(&dir, &[]).unwrap();
    let known_hosts = dir.join("kh");
    let kh = known_hosts.to_str().unwrap();
    let client =
        AlknetClient::start(&dir, server.port, &server.user_key, &["--known-hosts", kh]).unwrap();
    assert!(
        client.log().contains("first contact: host key remembered"),
        "{}",
        client.log()
    );
    let recorded = std::fs::read_to_string(&known_hosts).unwrap();
    let host_pub = std::fs::read_to_string(dir.join("alknet_host.pub")).unwrap();
    let key_field = host_pub.split_whitespace().nth(1).unwrap();
    assert_eq!(
        recorded.trim(),
        format!("[127.0.0.1]:{} ssh-ed25519 {key_field}", server.port)
    );
    tunnels(client.socks_addr, &dir);

    // The same port now answers with another host key.
    let port = server.port;
    let mut client = client;
    drop(server);
    let other = Workdir::new().unwrap();
    let listen = format!("127.0.0.1:{port}");
    let impostor = AlknetServer::start_listening(&other, &[&listen], &[]).unwrap();
    // The running client met the first key: it stops instead of retrying.
    client
        .process
        .wait_for_log("this client first connected to", Duration::from_secs(60))
        .unwrap();
    let status = client.process.wait_exit(LIMIT).unwrap();
    assert!(!status.success());
    // A new client reads known_hosts and names the line to fix.
    let stderr = failed_connect(
        &impostor,
        &other.join("alknet_user"),
        &["--known-hosts", kh],
    );
    assert!(
        stderr.contains("REMOTE HOST IDENTIFICATION HAS CHANGED"),
        "{stderr}"
    );
    assert!(stderr.contains(&format!("{kh}:1")), "{stderr}");
    assert!(stderr.contains("ssh-keygen -R"), "{stderr}");
    assert_eq!(stderr.matches("connecting").count(), 0, "{stderr}");
}

#[test]
fn keyscanned_hashed_and_revoked_entries_are_read_as_ssh_reads_them() {
    let dir = Workdir::new().unwrap();
    let server = AlknetServer::start(&dir, &[]).unwrap();
    let known_hosts = dir.join("kh");
    let kh = known_hosts.to_str().unwrap();
    let strict = ["--known-hosts", kh, "--strict-host-keys"];

    // Unknown to a strict client: refused, nothing written.
    let stderr = failed_connect(&server, &server.user_key, &strict);
    assert!(
        stderr.contains("strict host key checking is on"),
        "{stderr}"
    );
    assert!(!known_hosts.exists());

    // ssh-keyscan's line is accepted.
    let port = server.port.to_string();
    let scanned = tool("ssh-keyscan", &["-p", &port, "-t", "ed25519", "127.0.0.1"]);
    std::fs::write(&known_hosts, &scanned).unwrap();
    let client = AlknetClient::start(&dir, server.port, &server.user_key, &strict).unwrap();
    drop(client);

    // So is the same line hashed by ssh-keygen -H.
    tool("ssh-keygen", &["-H", "-f", kh]);
    let hashed = std::fs::read_to_string(&known_hosts).unwrap();
    assert!(hashed.starts_with("|1|"), "{hashed}");
    let client = AlknetClient::start(&dir, server.port, &server.user_key, &strict).unwrap();
    tunnels(client.socks_addr, &dir);
    drop(client);

    // @revoked wins over the known line.
    let host_pub = std::fs::read_to_string(dir.join("alknet_host.pub")).unwrap();
    std::fs::write(&known_hosts, format!("{hashed}@revoked * {host_pub}")).unwrap();
    let stderr = failed_connect(&server, &server.user_key, &["--known-hosts", kh]);
    assert!(stderr.contains("is revoked by"), "{stderr}");
}

#[test]
fn openssh_reads_the_known_hosts_alknet_wrote() {
    let dir = Workdir::new().unwrap();
    let server = AlknetServer::start(&dir, &[]).unwrap();
    let known_hosts = dir.join("kh");
    let client = AlknetClient::start(
        &dir,
        server.port,
        &server.user_key,
        &["--known-hosts", known_hosts.to_str().unwrap()],
    )
    .unwrap();
    drop(client);
    // StrictHostKeyChecking=yes: ssh connects only if it accepts the line.
    let ssh = SshDynamicForward::start(
        &dir,
        "ssh",
        server.port,
        "tester",
        &server.user_key,
        Some(&known_hosts),
        &[],
    )
    .unwrap_or_else(|e| panic!("{e}\nserver log:\n{}", server.log()));
    tunnels(ssh.socks_addr, &dir);
}

#[test]
fn a_host_certificate_is_trusted_through_a_cert_authority_line() {
    let dir = Workdir::new().unwrap();
    let mut server = AlknetServer::start(&dir, &[]).unwrap();
    let ca = ssh_keygen_ed25519(&dir, "host_ca").unwrap();
    let host_pub = dir.join("alknet_host.pub");
    tool(
        "ssh-keygen",
        &[
            "-q",
            "-s",
            ca.to_str().unwrap(),
            "-I",
            "test-host",
            "-h",
            "-n",
            "127.0.0.1,localhost",
            host_pub.to_str().unwrap(),
        ],
    );
    let certificate = dir.join("alknet_host-cert.pub");
    server
        .restart_with_args(&["--host-certificate", certificate.to_str().unwrap()])
        .unwrap();
    let ca_pub = std::fs::read_to_string(dir.join("host_ca.pub")).unwrap();
    let known_hosts = dir.join("kh");
    std::fs::write(
        &known_hosts,
        format!("@cert-authority [127.0.0.1]:* {ca_pub}"),
    )
    .unwrap();
    let kh = known_hosts.to_str().unwrap();

    let client = AlknetClient::start(
        &dir,
        server.port,
        &server.user_key,
        &["--known-hosts", kh, "--strict-host-keys"],
    )
    .unwrap_or_else(|e| panic!("{e}\nserver log:\n{}", server.log()));
    tunnels(client.socks_addr, &dir);
    drop(client);
    // OpenSSH accepts the same certificate through the same line.
    let ssh = SshDynamicForward::start(
        &dir,
        "ssh",
        server.port,
        "tester",
        &server.user_key,
        Some(&known_hosts),
        &[],
    )
    .unwrap_or_else(|e| panic!("{e}\nserver log:\n{}", server.log()));
    tunnels(ssh.socks_addr, &dir);

    // A certificate for another host name is not enough (re-signed in
    // place, then served after a restart).
    tool(
        "ssh-keygen",
        &[
            "-q",
            "-s",
            ca.to_str().unwrap(),
            "-I",
            "x",
            "-h",
            "-n",
            "elsewhere",
            host_pub.to_str().unwrap(),
        ],
    );
    server.restart_with_args(&[]).unwrap();
    let stderr = failed_connect(
        &server,
        &server.user_key,
        &["--known-hosts", kh, "--strict-host-keys"],
    );
    assert!(
        stderr.contains("strict host key checking is on"),
        "{stderr}"
    );
}

#[test]
fn destinations_and_short_flags_read_as_ssh() {
    let dir = Workdir::new().unwrap();
    let server = AlknetServer::start(&dir, &[]).unwrap();
    let socks = free_port().unwrap();
    let mut command = xtask::alknet_command(Profile::Dev).unwrap();
    command
        .arg("connect")
        .arg(format!("me@127.0.0.1:{}", server.port))
        .arg("-i")
        .arg(&server.user_key)
        .args(["-D", &format!("127.0.0.1:{socks}")])
        .args(["--host-key", &server.fingerprint]);
    let mut client = Spawned::start("alknet-connect", dir.path(), command).unwrap();
    client.wait_for_log(" connected server=", LIMIT).unwrap();
    tunnels(format!("127.0.0.1:{socks}").parse().unwrap(), &dir);
    let log = server.log();
    assert!(log.contains("user=\"me\""), "{log}");

    // -l and -p with a bare host, and `call` with a destination.
    let output = xtask::alknet_command(Profile::Dev)
        .unwrap()
        .args([
            "call",
            "127.0.0.1",
            "-p",
            &server.port.to_string(),
            "-l",
            "you",
        ])
        .arg("-i")
        .arg(&server.user_key)
        .args(["--host-key", &server.fingerprint, "/services/list"])
        .bounded_output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(server.log().contains("user=\"you\""));

    // Contradictions are usage errors.
    let output = xtask::alknet_command(Profile::Dev)
        .unwrap()
        .args(["connect", "127.0.0.1:2222", "-p", "2223", "-i"])
        .arg(&server.user_key)
        .bounded_output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("the port is given twice"), "{stderr}");
}
