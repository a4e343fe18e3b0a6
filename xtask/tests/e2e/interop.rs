//! Interoperability with OpenSSH, in both directions.

use xtask::{
    AlknetClient, AlknetServer, HttpTarget, SshDynamicForward, Sshd, Workdir, free_port,
    socks5_connect_reply, ssh_keygen_ed25519,
};

use crate::fetch;

#[test]
fn openssh_ssh_dash_d_tunnels_through_alknet_serve() {
    let dir = Workdir::new().unwrap();
    let server = AlknetServer::start(&dir, &[]).unwrap();
    // OpenSSH checks alknet's host key strictly against a known_hosts entry.
    let host_pub = std::fs::read_to_string(dir.join("alknet_host.pub")).unwrap();
    let known_hosts = dir.join("known_hosts");
    std::fs::write(
        &known_hosts,
        format!("[127.0.0.1]:{} {host_pub}", server.port),
    )
    .unwrap();
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
    let socks = ssh.socks_addr;
    let target = HttpTarget::start("127.0.0.1:0").unwrap();
    let size = 4 * 1024 * 1024;
    let url = format!("http://localhost:{}/{size}", target.addr().port());
    let body = fetch(socks, &url, &dir.join("body")).unwrap();
    assert!(body == HttpTarget::body(size), "body differs");

    let log = server.log();
    assert!(log.contains("user=\"tester\""), "{log}");
    assert!(log.contains("result=accept"), "{log}");
}

#[test]
fn alknet_connect_tunnels_through_openssh_sshd() {
    let dir = Workdir::new().unwrap();
    let user_key = ssh_keygen_ed25519(&dir, "user").unwrap();
    let sshd = Sshd::start(&dir, &dir.join("user.pub")).unwrap();
    // No --user: like ssh, alknet logs in as the local user.
    let client = AlknetClient::start(
        &dir,
        sshd.port,
        &user_key,
        &["--host-key", &sshd.fingerprint],
    )
    .unwrap_or_else(|e| panic!("{e}\nsshd log:\n{}", sshd.process.stderr()));
    let target = HttpTarget::start("127.0.0.1:0").unwrap();
    let size = 4 * 1024 * 1024;
    let url = format!("http://localhost:{}/{size}", target.addr().port());
    let body = fetch(client.socks_addr, &url, &dir.join("body")).unwrap();
    assert!(body == HttpTarget::body(size), "body differs");

    // sshd reports a failed dial with a generic code; the session survives it.
    let closed = free_port().unwrap();
    let reply = socks5_connect_reply(client.socks_addr, "127.0.0.1", closed).unwrap();
    assert_ne!(reply, 0, "a closed port must not look reachable");
    let again = fetch(client.socks_addr, &url, &dir.join("again")).unwrap();
    assert_eq!(again.len(), size);
}
