//! Bad input: wrong keys, unreachable targets, garbage. Each gets a clear
//! answer and harms nobody else.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use xtask::BoundedOutput as _;
use xtask::{
    AlknetClient, AlknetServer, HttpTarget, Profile, Workdir, alknet_binary, free_port,
    socks5_connect_reply, ssh_keygen_ed25519, ssh_public_key_fingerprint,
};

use crate::fetch;

/// Fetches a small body through `socks`, proving the session is healthy.
fn assert_tunnel_still_works(socks: std::net::SocketAddr, dir: &Workdir) {
    let target = HttpTarget::start("127.0.0.1:0").unwrap();
    let url = format!("http://127.0.0.1:{}/1000", target.addr().port());
    let body = fetch(socks, &url, &dir.join("after")).unwrap();
    assert_eq!(body, HttpTarget::body(1000));
}

const LIMIT: Duration = Duration::from_secs(30);

fn alknet() -> Command {
    let mut command = Command::new(alknet_binary(Profile::Dev).unwrap());
    command
        .env_remove("ALKNET_SERVER")
        .env_remove("ALKNET_IDENTITY");
    command
}

/// Asserts a failed run printed one clear line and did not panic.
fn assert_clean_failure(output: &std::process::Output, expected: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "should have failed:\n{stderr}");
    assert!(!stderr.contains("panicked"), "panicked:\n{stderr}");
    let error_line = stderr
        .lines()
        .find(|line| line.starts_with("alknet: error:"))
        .unwrap_or_else(|| panic!("no error line in:\n{stderr}"));
    assert!(
        error_line.contains(expected),
        "expected {expected:?} in {error_line:?}"
    );
}

#[test]
fn a_key_missing_from_authorized_keys_is_refused_and_logged_for_fail2ban() {
    let dir = Workdir::new().unwrap();
    let mut server = AlknetServer::start(&dir, &[]).unwrap();
    let stranger = ssh_keygen_ed25519(&dir, "stranger").unwrap();
    let stranger_fingerprint = ssh_public_key_fingerprint(&dir.join("stranger.pub")).unwrap();

    let output = alknet()
        .args([
            "connect",
            "--server",
            &format!("127.0.0.1:{}", server.port),
            "--socks5",
            "127.0.0.1:0",
            "--identity",
        ])
        .arg(&stranger)
        .bounded_output()
        .unwrap();
    assert_clean_failure(&output, "authorized_keys");

    let line = server.process.wait_for_log("result=reject", LIMIT).unwrap();
    assert!(
        line.contains("auth attempt remote_addr=127.0.0.1:"),
        "{line}"
    );
    assert!(
        line.contains(&format!("key_fingerprint={stranger_fingerprint}")),
        "{line}"
    );
}

#[test]
fn a_closed_port_gets_connection_refused_and_the_session_lives_on() {
    let dir = Workdir::new().unwrap();
    let server = AlknetServer::start(&dir, &[]).unwrap();
    let client = AlknetClient::start(&dir, server.port, &server.user_key, &[]).unwrap();
    let closed = free_port().unwrap();

    assert_eq!(
        socks5_connect_reply(client.socks_addr, "127.0.0.1", closed).unwrap(),
        5,
        "expected 'connection refused'"
    );
    assert_eq!(
        socks5_connect_reply(client.socks_addr, "localhost", closed).unwrap(),
        5,
        "expected 'connection refused'"
    );
    // Reserved names are never dialled: "connection not allowed". Only
    // alknet-control:0 opens (the control channel).
    for (host, port) in [("alknet-other", 0), ("alknet-control", 80)] {
        assert_eq!(
            socks5_connect_reply(client.socks_addr, host, port).unwrap(),
            2
        );
    }

    assert_tunnel_still_works(client.socks_addr, &dir);
}

#[test]
fn garbage_on_the_socks_port_closes_only_that_connection() {
    let dir = Workdir::new().unwrap();
    let server = AlknetServer::start(&dir, &[]).unwrap();
    let client = AlknetClient::start(&dir, server.port, &server.user_key, &[]).unwrap();

    let mut garbage = TcpStream::connect(client.socks_addr).unwrap();
    garbage.set_read_timeout(Some(LIMIT)).unwrap();
    garbage
        .write_all(b"GET / HTTP/1.1\r\nHost: example\r\n\r\n")
        .unwrap();
    let mut rest = Vec::new();
    // Closed (EOF or reset) rather than left hanging.
    let ended = garbage.read_to_end(&mut rest);
    assert!(
        ended.is_ok()
            || ended
                .as_ref()
                .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
        "{ended:?}"
    );

    assert_tunnel_still_works(client.socks_addr, &dir);
}

#[test]
fn a_pem_identity_is_refused_with_advice() {
    let dir = Workdir::new().unwrap();
    let pem = dir.join("rsa_pem");
    let made = Command::new("ssh-keygen")
        .args(["-q", "-t", "rsa", "-b", "2048", "-m", "PEM", "-N", "", "-f"])
        .arg(&pem)
        .status()
        .unwrap();
    assert!(made.success());
    let output = alknet()
        .args([
            "connect",
            "--server",
            "127.0.0.1:1",
            "--socks5",
            "127.0.0.1:0",
            "--identity",
        ])
        .arg(&pem)
        .bounded_output()
        .unwrap();
    assert_clean_failure(&output, "OpenSSH");
}

#[test]
fn unreadable_keys_and_busy_ports_are_one_line_errors() {
    let dir = Workdir::new().unwrap();
    let missing = alknet()
        .args([
            "serve",
            "--key",
            "/nonexistent/key",
            "--authorized-keys",
            "/nonexistent/ak",
            "--listen",
            "127.0.0.1:0",
        ])
        .bounded_output()
        .unwrap();
    assert_clean_failure(&missing, "/nonexistent/key");

    let key = ssh_keygen_ed25519(&dir, "host").unwrap();
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_addr = busy.local_addr().unwrap().to_string();
    let in_use = alknet()
        .arg("serve")
        .arg("--key")
        .arg(&key)
        .arg("--authorized-keys")
        .arg(dir.join("host.pub"))
        .args(["--listen", &busy_addr])
        .bounded_output()
        .unwrap();
    assert_clean_failure(&in_use, &busy_addr);

    let socks_in_use = alknet()
        .args([
            "connect",
            "--server",
            "127.0.0.1:1",
            "--socks5",
            &busy_addr,
            "--identity",
        ])
        .arg(&key)
        .bounded_output()
        .unwrap();
    assert_clean_failure(&socks_in_use, &busy_addr);
}

#[test]
fn bad_flags_exit_non_zero_without_panicking() {
    for args in [
        &["serve", "--bogus"][..],
        &[
            "connect",
            "--socks5",
            "not-an-address",
            "--server",
            "x:1",
            "--identity",
            "k",
        ],
        &["connect"],
        &["no-such-command"],
    ] {
        let output = alknet().args(args).bounded_output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?} succeeded");
        assert!(stderr.contains("error:"), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

#[test]
fn a_malformed_server_or_host_key_is_refused_before_anything_listens() {
    let dir = Workdir::new().unwrap();
    let key = ssh_keygen_ed25519(&dir, "user").unwrap();
    let key = key.display().to_string();
    let socks = format!("127.0.0.1:{}", free_port().unwrap());
    for (extra, expected) in [
        (
            &[
                "--server",
                "127.0.0.1:",
                "--host-key",
                "SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU",
            ][..],
            "expected HOST, HOST:PORT",
        ),
        (
            &["--server", "127.0.0.1:22", "--host-key", "garbage"],
            "invalid host key fingerprint",
        ),
    ] {
        let output = alknet()
            .args(["connect", "--identity", &key, "--socks5", &socks])
            .args(extra)
            .bounded_output()
            .unwrap();
        assert_clean_failure(&output, expected);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!stderr.contains("SOCKS5 listening"), "{stderr}");
    }
}

#[test]
fn a_client_turned_away_before_ssh_began_is_told_why() {
    let dir = Workdir::new().unwrap();
    let server = AlknetServer::start(&dir, &["--max-connections-per-ip", "1"]).unwrap();
    let pin = ["--host-key", server.fingerprint.as_str()];
    let _first = AlknetClient::start(&dir, server.port, &server.user_key, &pin).unwrap();
    let command =
        xtask::connect_command(Profile::Dev, server.port, &server.user_key, &pin).unwrap();
    let mut second = xtask::Spawned::start("alknet-connect", dir.path(), command).unwrap();
    let line = second
        .wait_for_log("closed the connection before SSH began", LIMIT)
        .unwrap();
    assert!(line.contains("--max-connections-per-ip"), "{line}");
}
