//! `-L` local forwards (to TCP and Unix-socket targets) and `-R` remote
//! forwards, between alknet and OpenSSH in every combination.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixListener;
use std::time::Duration;

use xtask::BoundedOutput as _;
use xtask::{
    AlknetClient, AlknetServer, HttpTarget, Spawned, Sshd, Workdir, openssh_client, require_tool,
    ssh_keygen_ed25519, wait_until,
};

use crate::assert_logs_do_not_mention;

#[test]
fn local_forwards_reach_an_http_server_and_a_unix_socket() {
    require_tool("curl").unwrap();
    let dir = Workdir::new().unwrap();
    let target = HttpTarget::start("127.0.0.1:0").unwrap();
    let http_port = target.addr().port();
    // A Unix-socket echo server on the server's side.
    let socket_path = dir.join("echo.sock");
    let echo = UnixListener::bind(&socket_path).unwrap();
    std::thread::spawn(move || {
        for mut stream in echo.incoming().flatten() {
            let mut data = Vec::new();
            let _ = stream.read_to_end(&mut data);
            let _ = stream.write_all(&data);
        }
    });

    // Unix sockets are reached only where a rule names their path.
    let policy = dir.join("policy.toml");
    std::fs::write(
        &policy,
        format!(
            "[[rule]]\naction = \"allow\"\npath = \"{}/*.sock\"\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let policy_arg = policy.display().to_string();
    let server = AlknetServer::start(&dir, &["--forward-policy", &policy_arg]).unwrap();
    let http_forward = format!("127.0.0.1:0:localhost:{http_port}");
    let unix_forward = format!("0:{}", socket_path.display());
    let client = AlknetClient::start(
        &dir,
        server.port,
        &server.user_key,
        &["--forward", &http_forward, "-L", &unix_forward],
    )
    .unwrap();

    // -L to HTTP: curl talks to the local port, no proxy involved.
    let local = client.forward_addr(1).unwrap();
    assert!(
        curl_direct(local, 300_000) == HttpTarget::body(300_000),
        "body differs"
    );

    // -L to a Unix socket, with half-close: the echo answers after our EOF.
    let mut stream = TcpStream::connect(client.forward_addr(2).unwrap()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream.write_all(b"through a unix socket").unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    let mut echoed = Vec::new();
    stream.read_to_end(&mut echoed).unwrap();
    assert_eq!(echoed, b"through a unix socket");

    assert_logs_do_not_mention(
        &[("server", server.log()), ("client", client.log())],
        &[
            "localhost".into(),
            format!(":{http_port}"),
            "echo.sock".into(),
        ],
    );
}

/// Fetches `/len` from an HTTP target reachable at `addr`, no proxy.
fn curl_direct(addr: impl std::fmt::Display, len: usize) -> Vec<u8> {
    let output = std::process::Command::new("curl")
        .args(["--silent", "--show-error", "--fail", "--max-time", "60"])
        .arg(format!("http://{addr}/{len}"))
        .bounded_output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

#[test]
fn alknet_remote_forward_through_alknet_serve() {
    require_tool("curl").unwrap();
    let dir = Workdir::new().unwrap();
    let target = HttpTarget::start("127.0.0.1:0").unwrap();
    let server = AlknetServer::start(&dir, &[]).unwrap();
    let spec = format!("0:localhost:{}", target.addr().port());
    let client = AlknetClient::start(&dir, server.port, &server.user_key, &["-R", &spec]).unwrap();
    let port = wait_until("the remote forward", Duration::from_secs(30), || {
        client.remote_forward_port(1).ok()
    })
    .unwrap();
    assert_eq!(
        curl_direct(format!("127.0.0.1:{port}"), 200_000),
        HttpTarget::body(200_000)
    );
    assert!(
        server.log().contains("remote forward listening"),
        "{}",
        server.log()
    );
}

#[test]
fn openssh_ssh_dash_r_against_alknet_serve() {
    require_tool("curl").unwrap();
    let dir = Workdir::new().unwrap();
    let target = HttpTarget::start("127.0.0.1:0").unwrap();
    let server = AlknetServer::start(&dir, &[]).unwrap();
    let mut ssh = openssh_client(server.port, &server.user_key, None).unwrap();
    ssh.args(["-R", &format!("0:127.0.0.1:{}", target.addr().port())])
        .arg("tester@127.0.0.1");
    let mut ssh = Spawned::start("ssh-R", dir.path(), ssh).unwrap();
    // ssh reports the port the server chose: "Allocated port N for remote forward to …".
    let line = ssh
        .wait_for_log("Allocated port", Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e}\nserver log:\n{}", server.log()));
    let port: u16 = line
        .split_whitespace()
        .skip_while(|word| *word != "port")
        .nth(1)
        .and_then(|port| port.parse().ok())
        .unwrap_or_else(|| panic!("no port in {line:?}"));
    assert_eq!(
        curl_direct(format!("127.0.0.1:{port}"), 100_000),
        HttpTarget::body(100_000)
    );
}

#[test]
fn alknet_remote_forward_through_openssh_sshd() {
    require_tool("curl").unwrap();
    let dir = Workdir::new().unwrap();
    let target = HttpTarget::start("127.0.0.1:0").unwrap();
    let user_key = ssh_keygen_ed25519(&dir, "user").unwrap();
    let sshd = Sshd::start(&dir, &dir.join("user.pub")).unwrap();
    let spec = format!("0:127.0.0.1:{}", target.addr().port());
    let client = AlknetClient::start(
        &dir,
        sshd.port,
        &user_key,
        &["--host-key", &sshd.fingerprint, "-R", &spec],
    )
    .unwrap_or_else(|e| panic!("{e}\nsshd log:\n{}", sshd.process.stderr()));
    let port = wait_until("the remote forward", Duration::from_secs(30), || {
        client.remote_forward_port(1).ok()
    })
    .unwrap_or_else(|e| panic!("{e}\nclient log:\n{}", client.log()));
    assert_eq!(
        curl_direct(format!("127.0.0.1:{port}"), 100_000),
        HttpTarget::body(100_000)
    );
}

#[test]
fn a_client_without_socks5_only_forwards() {
    let dir = Workdir::new().unwrap();
    let server = AlknetServer::start(&dir, &[]).unwrap();
    let target = HttpTarget::start("127.0.0.1:0").unwrap();
    let binary = xtask::alknet_binary(xtask::Profile::Dev).unwrap();
    let forward = format!("127.0.0.1:0:127.0.0.1:{}", target.addr().port());
    let mut command = std::process::Command::new(&binary);
    command
        .args(["connect", "--server", &format!("127.0.0.1:{}", server.port)])
        .arg("--identity")
        .arg(&server.user_key)
        .args([
            "--host-key",
            &server.fingerprint,
            "--socks5",
            "none",
            "-L",
            &forward,
        ]);
    let mut client = Spawned::start("alknet-connect", dir.path(), command).unwrap();
    let listening = client
        .wait_for_log("local forward listening", Duration::from_secs(30))
        .unwrap();
    client
        .wait_for_log(" connected server=", Duration::from_secs(30))
        .unwrap();
    let addr = listening
        .split_whitespace()
        .find_map(|field| field.strip_prefix("listen="))
        .unwrap();
    assert_eq!(curl_direct(addr, 5000), HttpTarget::body(5000));
    assert!(
        !client.stderr().contains("SOCKS5 listening"),
        "{}",
        client.stderr()
    );

    // With nothing else to do, `none` is a usage error.
    let alone = std::process::Command::new(&binary)
        .args(["connect", "--server", "127.0.0.1:1", "--socks5", "none"])
        .arg("--identity")
        .arg(&server.user_key)
        .bounded_output()
        .unwrap();
    assert!(!alone.status.success());
    assert!(
        String::from_utf8_lossy(&alone.stderr).contains("--socks5 none leaves nothing to do"),
        "{}",
        String::from_utf8_lossy(&alone.stderr)
    );
}

#[test]
fn a_reverse_socks_forward_lends_the_clients_network_within_its_policy() {
    let dir = Workdir::new().unwrap();
    let server = AlknetServer::start(&dir, &[]).unwrap();
    let target = HttpTarget::start("127.0.0.1:0").unwrap();
    let url = format!("http://localhost:{}/100000", target.addr().port());
    let reverse_socks_port = |extra: &[&str]| {
        let mut args = vec!["--host-key", server.fingerprint.as_str(), "-R", "0"];
        args.extend_from_slice(extra);
        let client = AlknetClient::start(&dir, server.port, &server.user_key, &args).unwrap();
        let port = wait_until("the reverse SOCKS5 port", Duration::from_secs(30), || {
            client.remote_forward_port(1).ok()
        })
        .unwrap();
        (client, SocketAddr::from(([127, 0, 0, 1], port)))
    };

    // The test's targets are on loopback, which the default policy keeps
    // for the client's machine alone: this client allows everything.
    let policy = dir.join("client-policy.toml");
    std::fs::write(&policy, "default = \"allow\"\n").unwrap();
    let (_lending, socks) = reverse_socks_port(&["--forward-policy", policy.to_str().unwrap()]);
    // On the server's side that port speaks SOCKS5; the name is resolved
    // and dialled by the client.
    let body = crate::fetch(socks, &url, &dir.join("body")).unwrap();
    assert!(body == HttpTarget::body(100_000), "body differs");

    // Without --forward-policy, loopback (by name too) stays private.
    let (_guarded, socks) = reverse_socks_port(&[]);
    let refused = crate::curl_via_socks(socks, &url, &dir.join("refused")).unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("not allowed") || stderr.contains("(2)"),
        "{stderr}"
    );
}
