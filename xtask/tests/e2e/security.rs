//! What an attacker tried against `alknet serve`, each through the real
//! binary on loopback (issue "Security"): authorization bypasses, denials
//! of service, and the gaps against sshd. Each test fails on the server
//! as it was before the fix.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use xtask::BoundedOutput as _;
use xtask::{
    AlknetClient, AlknetServer, HttpTarget, Profile, Spawned, Workdir, call_command,
    connect_command, socks5_connect_reply, ssh_keygen_ed25519, wait_until,
};

use crate::certificates::certified_key;
use crate::fetch;

const LIMIT: Duration = Duration::from_secs(30);
/// SOCKS5 "connection not allowed by ruleset".
const NOT_ALLOWED: u8 = 2;

fn policy(dir: &Workdir, text: &str) -> String {
    let path = dir.join("policy.toml");
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// Runs `alknet connect` expecting it to give up; returns its stderr.
fn refused_login(server: &AlknetServer, key: &Path, extra: &[&str]) -> String {
    let output = connect_command(Profile::Dev, server.port, key, extra)
        .unwrap()
        .bounded_output()
        .unwrap();
    assert!(!output.status.success(), "the login was accepted");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn principal_rules_follow_the_authenticated_principals_not_the_typed_login_name() {
    let dir = Workdir::new().unwrap();
    let target = HttpTarget::start("127.0.0.1:0").unwrap();
    let rules = policy(
        &dir,
        "[[rule]]\naction = \"allow\"\ncidr = \"127.0.0.0/8\"\nprincipals = [\"admin\"]\n\
         [[rule]]\naction = \"deny\"\ncidr = \"127.0.0.0/8\"\n",
    );
    let server = AlknetServer::start(&dir, &["--forward-policy", &rules]).unwrap();
    let port = target.addr().port();
    let typed =
        AlknetClient::start(&dir, server.port, &server.user_key, &["--user", "admin"]).unwrap();
    assert_eq!(
        socks5_connect_reply(typed.socks_addr, "127.0.0.1", port).unwrap(),
        NOT_ALLOWED,
        "typing --user admin made a plain key an admin"
    );
    // The authorized_keys line names the principal: any login name works.
    let line = server.user_key_line().unwrap();
    server
        .reload_authorized_keys(&format!("{line} ops principals=admin\n"))
        .unwrap();
    let named =
        AlknetClient::start(&dir, server.port, &server.user_key, &["--user", "bob"]).unwrap();
    let url = format!("http://127.0.0.1:{port}/100");
    assert_eq!(
        fetch(named.socks_addr, &url, &dir.join("body")).unwrap(),
        HttpTarget::body(100)
    );
}

#[test]
fn denied_ranges_stay_denied_in_every_spelling_and_unspecified_addresses_are_never_dialled() {
    let dir = Workdir::new().unwrap();
    let target = HttpTarget::start("127.0.0.1:0").unwrap();
    let port = target.addr().port();
    let rules = policy(
        &dir,
        "[[rule]]\naction = \"deny\"\ncidr = \"127.0.0.0/8\"\n\
         [[rule]]\naction = \"deny\"\ncidr = \"::1/128\"\n",
    );
    let server = AlknetServer::start(&dir, &["--forward-policy", &rules]).unwrap();
    let client = AlknetClient::start(&dir, server.port, &server.user_key, &[]).unwrap();
    for host in [
        "0.0.0.0",
        "0",
        "::",
        "2130706433",
        "0x7f.1",
        "0177.0.0.1",
        "127.1",
        "::ffff:127.0.0.1",
    ] {
        assert_eq!(
            socks5_connect_reply(client.socks_addr, host, port).unwrap(),
            NOT_ALLOWED,
            "{host} reached a denied loopback listener"
        );
    }
    // Without any policy, 0.0.0.0 is still never dialled.
    let open_dir = Workdir::new().unwrap();
    let open = AlknetServer::start(&open_dir, &[]).unwrap();
    let client = AlknetClient::start(&open_dir, open.port, &open.user_key, &[]).unwrap();
    assert_eq!(
        socks5_connect_reply(client.socks_addr, "0.0.0.0", port).unwrap(),
        NOT_ALLOWED
    );
}

#[test]
fn remote_forwards_obey_the_policy_and_the_per_session_cap() {
    let dir = Workdir::new().unwrap();
    let rules = policy(&dir, "default = \"deny\"\n");
    let server = AlknetServer::start(&dir, &["--forward-policy", &rules]).unwrap();
    let client = AlknetClient::start(
        &dir,
        server.port,
        &server.user_key,
        &["-R", "0:127.0.0.1:9"],
    )
    .unwrap();
    wait_until("the refusal", LIMIT, || {
        client
            .log()
            .contains("the server refused a remote forward")
            .then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", client.log()));
    assert!(!server.log().contains("remote forward listening"));

    let dir = Workdir::new().unwrap();
    let capped = AlknetServer::start(&dir, &["--max-remote-forwards", "1"]).unwrap();
    let client = AlknetClient::start(
        &dir,
        capped.port,
        &capped.user_key,
        &["-R", "0:127.0.0.1:9", "-R", "0:127.0.0.1:10"],
    )
    .unwrap();
    wait_until("one forward granted and one refused", LIMIT, || {
        let log = client.log();
        (log.contains("remote forward listening on the server")
            && log.contains("the server refused a remote forward"))
        .then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", client.log()));
}

#[test]
fn unix_socket_targets_need_a_rule_naming_their_path() {
    let dir = Workdir::new().unwrap();
    let socket = dir.join("root-only.sock");
    let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    listener.set_nonblocking(true).unwrap();
    let server = AlknetServer::start(&dir, &[]).unwrap();
    let forward = format!("0:{}", socket.display());
    let client =
        AlknetClient::start(&dir, server.port, &server.user_key, &["-L", &forward]).unwrap();
    let mut stream = TcpStream::connect(client.forward_addr(1).unwrap()).unwrap();
    stream.set_read_timeout(Some(LIMIT)).unwrap();
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest);
    assert!(rest.is_empty());
    assert!(
        listener.accept().is_err(),
        "the socket was reached without a rule naming it"
    );
}

#[test]
fn registering_a_spoke_needs_a_grant() {
    let dir = Workdir::new().unwrap();
    let server = AlknetServer::start(&dir, &[]).unwrap();
    let output = call_command(
        server.port,
        &server.user_key,
        &server.fingerprint,
        "/hub/services/register",
        Some(r#"{"spoke": "billing", "operations": []}"#),
    )
    .unwrap()
    .bounded_output()
    .unwrap();
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("call failed: forbidden:"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A TCP connection from `source` (any loopback address) to `to`.
fn connect_from(source: &str, to: SocketAddr) -> std::io::Result<TcpStream> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    let source: SocketAddr = format!("{source}:0").parse().unwrap();
    socket.bind(&source.into())?;
    socket.connect_timeout(&to.into(), Duration::from_secs(5))?;
    Ok(socket.into())
}

#[test]
fn a_flood_from_one_address_cannot_lock_others_out() {
    let dir = Workdir::new().unwrap();
    // The server starts with a low file limit (soft and hard 256): without
    // the per-source startup cap, 500 held connections would exhaust it.
    ssh_keygen_ed25519(&dir, "alknet_host").unwrap();
    let user = ssh_keygen_ed25519(&dir, "alknet_user").unwrap();
    let authorized = dir.join("authorized_keys");
    std::fs::copy(dir.join("alknet_user.pub"), &authorized).unwrap();
    let binary = xtask::alknet_binary(Profile::Dev).unwrap();
    let mut command = Command::new("sh");
    command
        .args(["-c", "ulimit -n 256 && exec \"$0\" \"$@\""])
        .arg(&binary)
        .arg("serve")
        .arg("--key")
        .arg(dir.join("alknet_host"))
        .arg("--authorized-keys")
        .arg(&authorized)
        .args(["--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "info");
    let mut server = Spawned::start("flooded-serve", dir.path(), command).unwrap();
    let ready = server.wait_for_log("alknet server ready", LIMIT).unwrap();
    let _ = ready;
    let listening = server.wait_for_log(" listening listen=", LIMIT).unwrap();
    let port: u16 = xtask::listener_port(
        listening
            .split_whitespace()
            .find_map(|word| word.strip_prefix("listen="))
            .unwrap(),
    )
    .unwrap();
    let to: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut flood = Vec::new();
    for _ in 0..500 {
        match connect_from("127.0.0.2", to) {
            Ok(stream) => flood.push(stream),
            Err(error) => panic!("the flood itself failed: {error}"),
        }
    }
    // The authorized client from 127.0.0.1 still gets in promptly.
    let started = Instant::now();
    let mut client = Spawned::start(
        "flood-client",
        dir.path(),
        connect_command(Profile::Dev, port, &user, &[]).unwrap(),
    )
    .unwrap();
    client
        .wait_for_log(" connected server=", Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}\n{}\n{}", client.stderr(), server.stderr()));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "it took {:?} to get in past the flood",
        started.elapsed()
    );
    assert!(
        server
            .stderr()
            .contains("too many unauthenticated connections from this address"),
        "{}",
        server.stderr()
    );
    assert!(!server.stderr().contains("Too many open files"));
    drop(flood);
}

#[test]
fn the_login_grace_counts_from_accept_not_from_the_identification_line() {
    let dir = Workdir::new().unwrap();
    let server = AlknetServer::start(&dir, &["--login-grace-time", "3"]).unwrap();
    let mut stream = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    stream.set_read_timeout(Some(LIMIT)).unwrap();
    let started = Instant::now();
    // The identification line arrives late; the deadline does not restart.
    std::thread::sleep(Duration::from_millis(2500));
    let _ = stream.write_all(b"SSH-2.0-slow\r\n");
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest);
    assert!(
        started.elapsed() < Duration::from_millis(5000),
        "closed only after {:?}: the deadline restarted",
        started.elapsed()
    );
}

#[test]
fn a_huge_user_name_costs_the_log_a_few_dozen_bytes() {
    let dir = Workdir::new().unwrap();
    let server = AlknetServer::start(&dir, &[]).unwrap();
    let before = server.log().len();
    let stranger = ssh_keygen_ed25519(&dir, "stranger").unwrap();
    let huge = "x".repeat(100_000);
    let _ = refused_login(&server, &stranger, &["--user", &huge]);
    wait_until("the attempt in the log", LIMIT, || {
        server.log().contains("result=reject").then_some(())
    })
    .unwrap();
    let grown = server.log().len() - before;
    assert!(grown < 4000, "one attempt added {grown} bytes to the log");
}

#[test]
fn a_non_ascii_host_with_a_reserved_rule_is_refused_not_a_panic() {
    let dir = Workdir::new().unwrap();
    let rules = policy(&dir, "[[rule]]\naction = \"deny\"\nreserved = true\n");
    let server = AlknetServer::start(&dir, &["--forward-policy", &rules]).unwrap();
    let client = AlknetClient::start(&dir, server.port, &server.user_key, &[]).unwrap();
    let reply = socks5_connect_reply(client.socks_addr, "日本語のホスト", 80).unwrap();
    assert_ne!(reply, 0);
    assert!(!server.log().contains("panicked"), "{}", server.log());
    // The session is still there.
    let target = HttpTarget::start("127.0.0.1:0").unwrap();
    let url = format!("http://127.0.0.1:{}/10", target.addr().port());
    assert_eq!(
        fetch(client.socks_addr, &url, &dir.join("body")).unwrap(),
        HttpTarget::body(10)
    );
}

#[test]
fn authorized_keys_options_are_honoured_as_sshd_does() {
    let dir = Workdir::new().unwrap();
    let target = HttpTarget::start("127.0.0.1:0").unwrap();
    let other = HttpTarget::start("127.0.0.1:0").unwrap();
    let server = AlknetServer::start(&dir, &[]).unwrap();
    let line = server.user_key_line().unwrap();

    // from= that excludes loopback: refused.
    server
        .reload_authorized_keys(&format!("from=\"10.0.0.0/8\" {line}\n"))
        .unwrap();
    refused_login(&server, &server.user_key, &[]);

    // permitopen: only that target.
    let port = target.addr().port();
    server
        .reload_authorized_keys(&format!("permitopen=\"127.0.0.1:{port}\" {line}\n"))
        .unwrap();
    let client = AlknetClient::start(&dir, server.port, &server.user_key, &[]).unwrap();
    let url = format!("http://127.0.0.1:{port}/10");
    assert_eq!(
        fetch(client.socks_addr, &url, &dir.join("ok")).unwrap(),
        HttpTarget::body(10)
    );
    assert_eq!(
        socks5_connect_reply(client.socks_addr, "127.0.0.1", other.addr().port()).unwrap(),
        NOT_ALLOWED
    );
    drop(client);

    // restrict: logs in, forwards nothing.
    server
        .reload_authorized_keys(&format!("restrict {line}\n"))
        .unwrap();
    let client = AlknetClient::start(&dir, server.port, &server.user_key, &[]).unwrap();
    assert_eq!(
        socks5_connect_reply(client.socks_addr, "127.0.0.1", port).unwrap(),
        NOT_ALLOWED
    );
    drop(client);

    // An option alknet does not know refuses the line, with the reason logged.
    server
        .reload_authorized_keys(&format!("no-such-option {line}\n{line}\n"))
        .unwrap();
    assert!(server.log().contains("no-such-option"), "{}", server.log());
}

#[test]
fn revoked_keys_and_krl_entries_are_refused_and_reloaded_on_sighup() {
    let dir = Workdir::new().unwrap();
    ssh_keygen_ed25519(&dir, "ca").unwrap();
    let revoked_file = dir.join("revoked");
    std::fs::write(&revoked_file, "").unwrap();
    let ca = dir.join("ca.pub").display().to_string();
    let revoked_arg = revoked_file.display().to_string();
    let server = AlknetServer::start(
        &dir,
        &["--cert-authority", &ca, "--revoked-keys", &revoked_arg],
    )
    .unwrap();
    let serial_7 = certified_key(
        &dir,
        "ca",
        "serial7",
        &["-n", "tester", "-z", "7", "-O", "permit-port-forwarding"],
    );
    let by_id = certified_key(
        &dir,
        "ca",
        "fired",
        &["-n", "tester", "-z", "8", "-O", "permit-port-forwarding"],
    );
    // All three get in before the KRL names them.
    for key in [&server.user_key, &serial_7, &by_id] {
        let client = AlknetClient::start(&dir, server.port, key, &["--user", "tester"]);
        assert!(client.is_ok(), "{client:?}");
    }
    // A KRL by ssh-keygen: the plain key, serial 7, and key id "fired-id".
    let krl = dir.join("krl");
    let spec = dir.join("krl-spec");
    std::fs::write(&spec, "serial: 7\nid: fired-id\n").unwrap();
    let status = Command::new("ssh-keygen")
        .args(["-q", "-k", "-f"])
        .arg(&krl)
        .arg(dir.join("alknet_user.pub"))
        .status()
        .unwrap();
    assert!(status.success());
    let status = Command::new("ssh-keygen")
        .args(["-q", "-k", "-u", "-f"])
        .arg(&krl)
        .arg("-s")
        .arg(dir.join("ca.pub"))
        .arg(&spec)
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::copy(&krl, &revoked_file).unwrap();
    let reloads = server.log().matches("configuration reloaded").count();
    server.process.hangup().unwrap();
    wait_until("the reload", LIMIT, || {
        (server.log().matches("configuration reloaded").count() > reloads).then_some(())
    })
    .unwrap();
    refused_login(&server, &server.user_key, &[]);
    refused_login(&server, &serial_7, &["--user", "tester"]);
    refused_login(&server, &by_id, &["--user", "tester"]);
}

#[test]
fn a_certificate_with_a_malformed_source_address_is_refused() {
    use ssh_key::certificate::{Builder, CertType};
    let dir = Workdir::new().unwrap();
    let server = crate::certificates::server_trusting_ca(&dir);
    // ssh-keygen refuses to sign this; an attacker's CA tooling need not.
    let ca = alknet_auth::load_private_key(dir.join("ca").as_path(), None).unwrap();
    let user = ssh_keygen_ed25519(&dir, "forged").unwrap();
    let user_key = alknet_auth::load_private_key(user.as_path(), None).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut builder = Builder::new_with_random_nonce(
        &mut ssh_key::rand_core::UnwrapErr(ssh_key::getrandom::SysRng),
        user_key.public_key().key_data().clone(),
        now - 60,
        now + 3600,
    )
    .unwrap();
    builder.cert_type(CertType::User).unwrap();
    builder.key_id("forged-id").unwrap();
    builder.valid_principal("tester").unwrap();
    builder
        .critical_option("source-address", "127.0.0.1,not-an-address")
        .unwrap();
    builder.extension("permit-port-forwarding", "").unwrap();
    let certificate = builder.sign(&ca).unwrap();
    std::fs::write(
        dir.join("forged-cert.pub"),
        certificate.to_openssh().unwrap(),
    )
    .unwrap();
    let stderr = refused_login(&server, &user, &["--user", "tester"]);
    assert!(stderr.contains("refused certificate"), "{stderr}");
}

#[test]
fn private_keys_readable_by_others_are_refused_and_keygen_encrypts() {
    use std::os::unix::fs::PermissionsExt;
    let dir = Workdir::new().unwrap();
    let host = ssh_keygen_ed25519(&dir, "host").unwrap();
    std::fs::set_permissions(&host, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::copy(dir.join("host.pub"), dir.join("ak")).unwrap();
    let output = Command::new(xtask::alknet_binary(Profile::Dev).unwrap())
        .arg("serve")
        .arg("--key")
        .arg(&host)
        .arg("--authorized-keys")
        .arg(dir.join("ak"))
        .args(["--listen", "127.0.0.1:0"])
        .bounded_output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("chmod 600"), "{stderr}");

    // keygen --passphrase-env writes a key ssh-keygen opens with it.
    let key = dir.join("encrypted");
    let output = Command::new(xtask::alknet_binary(Profile::Dev).unwrap())
        .arg("keygen")
        .arg(&key)
        .args(["--passphrase-env", "SECRET_FOR_TEST"])
        .env("SECRET_FOR_TEST", "correct horse")
        .bounded_output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let wrong = Command::new("ssh-keygen")
        .args(["-y", "-P", "wrong", "-f"])
        .arg(&key)
        .bounded_output()
        .unwrap();
    assert!(!wrong.status.success(), "the key is not encrypted");
    let right = Command::new("ssh-keygen")
        .args(["-y", "-P", "correct horse", "-f"])
        .arg(&key)
        .bounded_output()
        .unwrap();
    assert!(
        right.status.success(),
        "{}",
        String::from_utf8_lossy(&right.stderr)
    );
}
