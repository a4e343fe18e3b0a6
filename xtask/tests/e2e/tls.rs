//! SSH over TLS, stealth mode, and several listeners in one server.

use std::io::Read;
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use xtask::BoundedOutput as _;
use xtask::{
    AlknetClient, AlknetServer, HttpTarget, Profile, Workdir, alknet_binary, ca_signed_server_cert,
    connect_command, listener_port, require_tool, self_signed_cert,
};

use crate::fetch;

const LIMIT: Duration = Duration::from_secs(30);

fn tls_args(files: &xtask::TlsFiles) -> Vec<String> {
    vec![
        "--tls-cert".into(),
        files.cert.display().to_string(),
        "--tls-key".into(),
        files.key.display().to_string(),
    ]
}

fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// A TLS client trusting `ca`, connected to `127.0.0.1:<port>`.
fn tls_client(
    dir: &Workdir,
    port: u16,
    key: &std::path::Path,
    ca: &str,
    extra: &[&str],
) -> AlknetClient {
    let mut args = vec!["--transport", "tls", "--tls-ca", ca];
    args.extend_from_slice(extra);
    AlknetClient::start(dir, port, key, &args).unwrap()
}

fn assert_tunnel_works(client: &AlknetClient, dir: &Workdir) {
    let target = HttpTarget::start("127.0.0.1:0").unwrap();
    let url = format!("http://localhost:{}/100000", target.addr().port());
    let body = fetch(client.socks_addr, &url, &dir.join("body")).unwrap();
    assert_eq!(body, HttpTarget::body(100_000));
}

#[test]
fn ssh_over_tls_verified_by_a_private_ca() {
    let dir = Workdir::new().unwrap();
    let files = ca_signed_server_cert(&dir).unwrap();
    let server =
        AlknetServer::start_listening(&dir, &["tls://127.0.0.1:0"], &strs(&tls_args(&files)))
            .unwrap();
    assert!(
        server.listeners[0].starts_with("tls://"),
        "{:?}",
        server.listeners
    );
    let ca = files.ca.display().to_string();
    // SNI and verification by IP address, then by name.
    for extra in [vec![], vec!["--tls-server-name", "localhost"]] {
        let mut args = vec![
            "--transport",
            "tls",
            "--tls-ca",
            &ca,
            "--host-key",
            &server.fingerprint,
        ];
        args.extend(extra);
        let client = AlknetClient::start(&dir, server.port, &server.user_key, &args).unwrap();
        assert_tunnel_works(&client, &dir);
    }
    assert!(server.log().contains("transport=tls"), "{}", server.log());
}

#[test]
fn a_self_signed_certificate_is_refused_unless_insecure() {
    let dir = Workdir::new().unwrap();
    let files = self_signed_cert(&dir).unwrap();
    let server =
        AlknetServer::start_listening(&dir, &["tls://127.0.0.1:0"], &strs(&tls_args(&files)))
            .unwrap();

    let refused = connect_command(
        Profile::Dev,
        server.port,
        &server.user_key,
        &["--transport", "tls"],
    )
    .unwrap()
    .bounded_output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success(),
        "an untrusted certificate was accepted:\n{stderr}"
    );
    assert!(
        stderr.contains("alknet: error:") && stderr.contains("--tls-ca"),
        "{stderr}"
    );

    let client = AlknetClient::start(
        &dir,
        server.port,
        &server.user_key,
        &[
            "--transport",
            "tls",
            "--insecure",
            "--host-key",
            &server.fingerprint,
        ],
    )
    .unwrap();
    assert!(
        client.log().contains("--insecure"),
        "no warning:\n{}",
        client.log()
    );
    assert_tunnel_works(&client, &dir);
}

#[test]
fn stealth_mode_passes_for_nginx_and_still_carries_ssh() {
    require_tool("curl").unwrap();
    require_tool("openssl").unwrap();
    let dir = Workdir::new().unwrap();
    let files = ca_signed_server_cert(&dir).unwrap();
    let mut args = tls_args(&files);
    args.extend(["--stealth".into(), "--stealth-timeout".into(), "2".into()]);
    let server = AlknetServer::start_listening(&dir, &["tls://127.0.0.1:0"], &strs(&args)).unwrap();
    let port = server.port;

    // A browser-like request gets nginx's 404, over HTTP/2 (ALPN h2, as
    // nginx offers) and over HTTP/1.1.
    let h2 = Command::new("curl")
        .args([
            "--silent",
            "--insecure",
            "--max-time",
            "20",
            "--include",
            "--http2",
        ])
        .arg(format!("https://127.0.0.1:{port}/anything"))
        .bounded_output()
        .unwrap();
    let h2_page = String::from_utf8_lossy(&h2.stdout);
    assert!(
        h2_page.starts_with("HTTP/2 404 \r\nserver: nginx\r\n"),
        "{h2_page}"
    );
    assert!(h2_page.contains("<center>nginx</center>"), "{h2_page}");
    let curl = Command::new("curl")
        .args([
            "--silent",
            "--insecure",
            "--max-time",
            "20",
            "--include",
            "--http1.1",
        ])
        .arg(format!("https://127.0.0.1:{port}/anything"))
        .bounded_output()
        .unwrap();
    let page = String::from_utf8_lossy(&curl.stdout);
    assert!(page.starts_with("HTTP/1.1 404 Not Found\r\n"), "{page}");
    assert!(page.contains("\r\nServer: nginx\r\n"), "{page}");
    assert!(page.contains("<center>nginx</center>"), "{page}");

    // Garbage typed into openssl s_client gets nginx's 400.
    let mut s_client = Command::new("openssl")
        .args(["s_client", "-quiet", "-ign_eof", "-connect"])
        .arg(format!("127.0.0.1:{port}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = s_client.stdin.take().unwrap();
        stdin.write_all(b"this is not http\n").unwrap();
    }
    let mut answer = String::new();
    s_client
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut answer)
        .unwrap();
    let _ = s_client.wait();
    assert!(answer.contains("HTTP/1.1 400 Bad Request"), "{answer}");

    // A client that says nothing is closed after the timeout.
    let mut silent = TcpStream::connect(("127.0.0.1", port)).unwrap();
    silent.set_read_timeout(Some(LIMIT)).unwrap();
    let mut rest = Vec::new();
    let closed = silent.read_to_end(&mut rest);
    assert!(
        closed.is_ok(),
        "the silent client was not closed: {closed:?}"
    );

    // SSH through the same port still works.
    let ca = files.ca.display().to_string();
    let client = tls_client(
        &dir,
        port,
        &server.user_key,
        &ca,
        &["--host-key", &server.fingerprint],
    );
    assert_tunnel_works(&client, &dir);
    assert!(!page.to_lowercase().contains("ssh") && !answer.to_lowercase().contains("ssh"));
}

#[test]
fn nmap_sees_a_web_server_not_ssh() {
    require_tool("nmap").unwrap();
    let dir = Workdir::new().unwrap();
    let files = ca_signed_server_cert(&dir).unwrap();
    let mut args = tls_args(&files);
    args.push("--stealth".into());
    let server = AlknetServer::start_listening(&dir, &["tls://127.0.0.1:0"], &strs(&args)).unwrap();
    let output = Command::new("nmap")
        .args(["-sV", "-Pn", "-n", "--host-timeout", "120s", "-p"])
        .arg(server.port.to_string())
        .arg("127.0.0.1")
        .bounded_output()
        .unwrap();
    let report = String::from_utf8_lossy(&output.stdout);
    let line = report
        .lines()
        .find(|line| line.starts_with(&format!("{}/tcp", server.port)))
        .unwrap_or_else(|| panic!("no line for the port:\n{report}"));
    assert!(line.contains("http"), "{line}");
    assert!(!line.to_lowercase().contains("ssh"), "{line}");
}

#[test]
fn one_server_serves_tcp_and_tls_together_and_sigterm_stops_both() {
    let dir = Workdir::new().unwrap();
    let files = ca_signed_server_cert(&dir).unwrap();
    let mut server = AlknetServer::start_listening(
        &dir,
        &["127.0.0.1:0", "tls://127.0.0.1:0"],
        &strs(&tls_args(&files)),
    )
    .unwrap();
    let tcp_port = listener_port(&server.listeners[0]).unwrap();
    let tls_port = listener_port(&server.listeners[1]).unwrap();
    let ca = files.ca.display().to_string();
    let over_tcp = AlknetClient::start(&dir, tcp_port, &server.user_key, &[]).unwrap();
    let over_tls = tls_client(&dir, tls_port, &server.user_key, &ca, &[]);
    assert_tunnel_works(&over_tcp, &dir);
    assert_tunnel_works(&over_tls, &dir);

    assert!(server.process.terminate(LIMIT).unwrap().success());
    for port in [tcp_port, tls_port] {
        assert!(
            TcpStream::connect(("127.0.0.1", port)).is_err(),
            "port {port} still open"
        );
    }
}

#[test]
fn tls_configuration_mistakes_are_one_line_errors() {
    let dir = Workdir::new().unwrap();
    let key = xtask::ssh_keygen_ed25519(&dir, "host").unwrap();
    let garbled = dir.join("garbled.pem");
    std::fs::write(
        &garbled,
        "-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let serve = |extra: &[&str]| {
        Command::new(alknet_binary(Profile::Dev).unwrap())
            .arg("serve")
            .arg("--key")
            .arg(&key)
            .arg("--authorized-keys")
            .arg(dir.join("host.pub"))
            .args(extra)
            .bounded_output()
            .unwrap()
    };
    let garbled_path = garbled.display().to_string();
    for (extra, expected) in [
        (
            vec!["--listen", "127.0.0.1:0", "--stealth"],
            "--stealth needs a TLS listener",
        ),
        (
            vec!["--listen", "tls://127.0.0.1:0"],
            "needs both --tls-cert and --tls-key",
        ),
        (
            vec![
                "--listen",
                "tls://127.0.0.1:0",
                "--tls-cert",
                "/nonexistent.pem",
                "--tls-key",
                "/nonexistent.key",
            ],
            "/nonexistent.pem",
        ),
        (
            vec![
                "--listen",
                "tls://127.0.0.1:0",
                "--tls-cert",
                &garbled_path,
                "--tls-key",
                &garbled_path,
            ],
            "garbled.pem",
        ),
    ] {
        let output = serve(&extra);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{extra:?} succeeded");
        assert!(!stderr.contains("panicked"), "{stderr}");
        let line = stderr
            .lines()
            .find(|l| l.starts_with("alknet: error:"))
            .unwrap_or_default();
        assert!(
            line.contains(expected),
            "{extra:?}: expected {expected:?} in {stderr}"
        );
    }
}

#[test]
fn a_tls_client_at_a_plain_tcp_listener_reports_it_and_keeps_trying() {
    let dir = Workdir::new().unwrap();
    let server = AlknetServer::start(&dir, &[]).unwrap();
    let command = connect_command(
        Profile::Dev,
        server.port,
        &server.user_key,
        &["--transport", "tls"],
    )
    .unwrap();
    let mut client = xtask::Spawned::start("tls-client", dir.path(), command).unwrap();
    let line = client.wait_for_log("TLS handshake", LIMIT).unwrap();
    assert!(line.contains("--transport tcp"), "{line}");
    assert!(client.terminate(LIMIT).unwrap().success());
}

#[test]
fn a_config_file_sets_up_the_listeners_and_flags_override_it() {
    let dir = Workdir::new().unwrap();
    let files = ca_signed_server_cert(&dir).unwrap();
    // Paths relative to the file; a TCP and a stealth TLS listener.
    std::fs::write(
        dir.join("alknet.toml"),
        "listen = [\"tcp://127.0.0.1:0\", \"tls://127.0.0.1:0\"]\ntls_cert = \"server.pem\"\ntls_key = \"server.key\"\n\
         stealth = true\nmax_auth_attempts = 3\n",
    )
    .unwrap();
    let config = dir.join("alknet.toml").display().to_string();
    let server = AlknetServer::start_listening(&dir, &[], &["--config", &config]).unwrap();
    assert_eq!(server.listeners.len(), 2, "{:?}", server.listeners);
    assert!(server.log().contains("stealth=true"), "{}", server.log());
    let tls_port = listener_port(&server.listeners[1]).unwrap();
    let ca = files.ca.display().to_string();
    let client = tls_client(&dir, tls_port, &server.user_key, &ca, &[]);
    assert_tunnel_works(&client, &dir);
    drop(server);

    // A flag replaces the file's listeners (stealth still needs TLS).
    let other = Workdir::new().unwrap();
    let server =
        AlknetServer::start_listening(&other, &["tls://127.0.0.1:0"], &["--config", &config])
            .unwrap();
    assert_eq!(server.listeners.len(), 1, "{:?}", server.listeners);
}

#[test]
fn a_tls_client_turned_away_by_a_limit_is_told_so() {
    let dir = Workdir::new().unwrap();
    let files = ca_signed_server_cert(&dir).unwrap();
    let mut args = tls_args(&files);
    args.extend(["--max-connections-per-ip".into(), "1".into()]);
    let server = AlknetServer::start_listening(&dir, &["tls://127.0.0.1:0"], &strs(&args)).unwrap();
    let ca = files.ca.display().to_string();
    let _first = tls_client(&dir, server.port, &server.user_key, &ca, &[]);
    let command = connect_command(
        Profile::Dev,
        server.port,
        &server.user_key,
        &["--transport", "tls", "--tls-ca", &ca],
    )
    .unwrap();
    let mut second = xtask::Spawned::start("alknet-connect", dir.path(), command).unwrap();
    let line = second
        .wait_for_log("closed the connection before the TLS handshake", LIMIT)
        .unwrap();
    assert!(line.contains("max-connections-per-ip"), "{line}");
    assert!(
        !second.stderr().contains("is it a TLS listener"),
        "{}",
        second.stderr()
    );
}
