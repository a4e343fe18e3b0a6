//! The iroh transport end to end, relays and lookup off: both ends on
//! loopback UDP, nothing leaves the machine.

use std::net::{Ipv6Addr, SocketAddr};
use std::time::Duration;

use xtask::BoundedOutput as _;
use xtask::{
    AlknetClient, AlknetServer, HttpTarget, LossBurst, Profile, UdpDelayProxy,
    UpstreamProxyProcess, Workdir, call_command_to, connect_command_to, free_udp_port,
    iroh_peer_args, iroh_peer_args_at, require_tool, wait_until,
};

use crate::{assert_logs_do_not_mention, fetch, upload_in_background, wait_for_lost_server};

/// `alknet serve` with one iroh listener on `port`, relays off.
fn iroh_server(dir: &Workdir, port: u16) -> AlknetServer {
    let listen = format!("iroh://127.0.0.1:{port}");
    AlknetServer::start_listening(dir, &[&listen], &["--iroh-relay", "none"]).unwrap()
}

fn as_strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// [`iroh_peer_args`] for a running server.
fn server_peer_args(server: &AlknetServer, port: u16) -> Vec<String> {
    let id = server
        .endpoint_id
        .as_deref()
        .expect("no endpoint-id line on stdout");
    iroh_peer_args(id, port)
}

fn iroh_client(dir: &Workdir, server: &AlknetServer, port: u16) -> AlknetClient {
    AlknetClient::start_to(
        dir,
        Profile::Dev,
        &as_strs(&server_peer_args(server, port)),
        &server.user_key,
        &[
            "--host-key",
            &server.fingerprint,
            "--keepalive-interval",
            "1",
        ],
    )
    .unwrap()
}

#[test]
fn a_socks5_tunnel_runs_over_iroh_without_relays() {
    let dir = Workdir::new().unwrap();
    let port = free_udp_port().unwrap();
    let server = iroh_server(&dir, port);
    let client = iroh_client(&dir, &server, port);
    let target = HttpTarget::start("127.0.0.1:0").unwrap();
    let url = format!("http://localhost:{}/3000000", target.addr().port());
    assert_eq!(
        fetch(client.socks_addr, &url, &dir.join("body")).unwrap(),
        HttpTarget::body(3_000_000)
    );
    assert!(
        server.log().contains("iroh endpoint ready"),
        "{}",
        server.log()
    );
    // Sessions are logged by the peer's endpoint id, there being no IP.
    assert!(
        server.log().contains("remote_addr=iroh:"),
        "{}",
        server.log()
    );
    assert_logs_do_not_mention(
        &[("server", server.log()), ("client", client.log())],
        &["localhost".into(), format!(":{}", target.addr().port())],
    );
}

/// A server on IPv6 loopback and a client reaching it only through a UDP
/// relay holding each datagram 25 ms each way (50 ms round trip), losing
/// toward the client as `loss` says. The relay must outlive the client.
fn long_iroh_path(
    dir: &Workdir,
    loss: Option<LossBurst>,
) -> (AlknetServer, UdpDelayProxy, AlknetClient) {
    let port = free_udp_port().unwrap();
    // IPv6: the IPv4-bound client has no path but the relay.
    let listen = format!("iroh://[::1]:{port}");
    let server = AlknetServer::start_listening(dir, &[&listen], &["--iroh-relay", "none"]).unwrap();
    let link = UdpDelayProxy::start_with_loss(
        SocketAddr::from((Ipv6Addr::LOCALHOST, port)),
        Duration::from_millis(25),
        loss,
    )
    .unwrap();
    let id = server.endpoint_id.as_deref().expect("no endpoint-id line");
    let client = AlknetClient::start_to(
        dir,
        Profile::Dev,
        &as_strs(&iroh_peer_args_at(id, link.addr())),
        &server.user_key,
        &["--host-key", &server.fingerprint],
    )
    .unwrap();
    (server, link, client)
}

/// What a side logs when it raises its connection's receive window.
const WINDOW_RAISED: &str = "the connection's receive window is raised";

/// A 50 ms path: QUIC's usual 1.25 MB window, one per round trip, is what
/// limits a transfer, so the receiving side's reader raises its
/// connection's window — the client's for a download, the server's for an
/// upload; the bytes arrive intact across the change.
#[test]
fn transfers_over_a_long_iroh_path_raise_the_receive_window_and_arrive_intact() {
    let dir = Workdir::new().unwrap();
    let (server, _link, client) = long_iroh_path(&dir, None);
    let target = HttpTarget::start("127.0.0.1:0").unwrap();
    let url = format!("http://localhost:{}/24000000", target.addr().port());
    assert_eq!(
        fetch(client.socks_addr, &url, &dir.join("body")).unwrap(),
        HttpTarget::body(24_000_000)
    );
    assert!(client.log().contains(WINDOW_RAISED), "{}", client.log());
    assert!(!server.log().contains(WINDOW_RAISED), "{}", server.log());

    let upload = dir.join("upload");
    std::fs::write(&upload, HttpTarget::body(24_000_000)).unwrap();
    let output = std::process::Command::new("curl")
        .args(["--silent", "--show-error", "--fail", "--socks5-hostname"])
        .arg(client.socks_addr.to_string())
        .arg("--upload-file")
        .arg(&upload)
        .arg(format!("http://localhost:{}/upload", target.addr().port()))
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    // The target answers with how many bytes it read.
    assert_eq!(String::from_utf8_lossy(&output.stdout), "24000000");
    assert!(server.log().contains(WINDOW_RAISED), "{}", server.log());
}

/// The raised window stays within what the receiving QUIC stack holds
/// under the worst loss: every other datagram toward the client lost for
/// 60 ms (over a round trip's worth), after about 7 MB passed. A window
/// much past 2.3 MB leaves more than 1024 gaps and the connection is
/// closed ("too many gaps in stream buffer"); this one recovers.
#[test]
fn a_long_iroh_path_losing_every_other_datagram_in_a_burst_keeps_its_connection() {
    let dir = Workdir::new().unwrap();
    let loss = LossBurst {
        after: 5_000,
        lasting: Duration::from_millis(60),
    };
    let (_server, _link, client) = long_iroh_path(&dir, Some(loss));
    let target = HttpTarget::start("127.0.0.1:0").unwrap();
    let url = format!("http://localhost:{}/12000000", target.addr().port());
    assert_eq!(
        fetch(client.socks_addr, &url, &dir.join("body")).unwrap(),
        HttpTarget::body(12_000_000)
    );
    let log = client.log();
    assert!(log.contains(WINDOW_RAISED), "{log}");
    assert!(!log.contains("connection to the server lost"), "{log}");
}

#[test]
fn a_restarted_server_keeps_its_endpoint_id_and_the_client_comes_back() {
    let dir = Workdir::new().unwrap();
    let port = free_udp_port().unwrap();
    let mut server = iroh_server(&dir, port);
    let first_id = server.endpoint_id.clone().unwrap();
    let client = iroh_client(&dir, &server, port);
    let target = HttpTarget::start("127.0.0.1:0").unwrap();
    let url = format!("http://127.0.0.1:{}/20000", target.addr().port());
    assert_eq!(
        fetch(client.socks_addr, &url, &dir.join("a")).unwrap(),
        HttpTarget::body(20_000)
    );

    server.kill_and_restart().unwrap();
    assert_eq!(server.endpoint_id.as_deref(), Some(first_id.as_str()));
    let back = wait_until(
        "the client to reconnect over iroh",
        Duration::from_secs(60),
        || {
            fetch(client.socks_addr, &url, &dir.join("b"))
                .ok()
                .filter(|body| *body == HttpTarget::body(20_000))
        },
    );
    assert!(back.is_ok(), "{}", client.log());
}

/// Seen in the soak: killed in the middle of an upload, an iroh server was
/// noticed only when QUIC's idle timeout (30 s) closed the connection —
/// keepalives had ended the session, but its stream still waited to write
/// out what was queued for the dead peer.
#[test]
fn a_client_uploading_when_its_iroh_server_is_killed_is_back_before_quic_times_out() {
    let dir = Workdir::new().unwrap();
    let port = free_udp_port().unwrap();
    let mut server = iroh_server(&dir, port);
    let client = iroh_client(&dir, &server, port);
    let upload = upload_in_background(client.socks_addr, Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(2));

    server.kill_and_restart().unwrap();
    wait_for_lost_server(&client, Duration::from_secs(15)).unwrap_or_else(|e| panic!("{e}"));
    assert!(upload.join().unwrap().is_err());
    let target = HttpTarget::start("127.0.0.1:0").unwrap();
    let url = format!("http://127.0.0.1:{}/20000", target.addr().port());
    let back = wait_until(
        "the client to reconnect over iroh",
        Duration::from_secs(60),
        || {
            fetch(client.socks_addr, &url, &dir.join("after"))
                .ok()
                .filter(|body| *body == HttpTarget::body(20_000))
        },
    );
    assert!(back.is_ok(), "{}", client.log());
}

#[test]
fn bad_or_unreachable_endpoint_ids_fail_clearly_or_retry() {
    let dir = Workdir::new().unwrap();
    let key = xtask::ssh_keygen_ed25519(&dir, "user").unwrap();
    // Not an endpoint id at all: a one-line error at once.
    let garbage = connect_command_to(
        Profile::Dev,
        &as_strs(&iroh_peer_args("not-an-id", 9)),
        &key,
        &[],
    )
    .unwrap()
    .bounded_output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&garbage.stderr);
    assert!(!garbage.status.success());
    assert!(stderr.contains("not an iroh endpoint id"), "{stderr}");

    // Flags that make no sense with iroh say so.
    let socks_proxy = connect_command_to(
        Profile::Dev,
        &[
            "--transport",
            "iroh",
            "--peer",
            "x",
            "--proxy",
            "socks5://127.0.0.1:1",
        ],
        &key,
        &[],
    )
    .unwrap()
    .bounded_output()
    .unwrap();
    assert!(String::from_utf8_lossy(&socks_proxy.stderr).contains("only through an HTTP proxy"));

    // A real id nobody answers for: the client keeps retrying, reporting
    // each failure, and exits cleanly when told to.
    let port = free_udp_port().unwrap();
    let mut gone = iroh_server(&dir, port);
    gone.process.terminate(Duration::from_secs(10)).unwrap();
    let command = connect_command_to(
        Profile::Dev,
        &as_strs(&server_peer_args(&gone, port)),
        &key,
        &[],
    )
    .unwrap();
    let mut client = xtask::Spawned::start("alknet-connect-nobody", dir.path(), command).unwrap();
    client
        .wait_for_log("cannot reach the server", Duration::from_secs(60))
        .unwrap();
    let status = client.terminate(Duration::from_secs(10)).unwrap();
    assert!(status.success(), "{}", client.stderr());
    assert!(!client.stderr().contains("panicked"));
}

#[test]
fn alknet_call_reaches_the_control_channel_over_iroh() {
    let dir = Workdir::new().unwrap();
    let port = free_udp_port().unwrap();
    let server = iroh_server(&dir, port);
    let output = call_command_to(
        &as_strs(&server_peer_args(&server, port)),
        &server.user_key,
        &server.fingerprint,
        "/services/whoami",
        None,
    )
    .unwrap()
    .bounded_output()
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("\"id\":\"SHA256:"), "{stdout}");
}

#[test]
fn relay_traffic_goes_through_an_http_proxy() {
    require_tool("tinyproxy").unwrap();
    let dir = Workdir::new().unwrap();
    let proxy = UpstreamProxyProcess::tinyproxy(&dir).unwrap();
    // A stand-in for a self-hosted relay on loopback: it accepts and says
    // nothing, which is enough to see who connects to it and how.
    let relay = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let relay_port = relay.local_addr().unwrap().port();
    let relay_url = format!("http://127.0.0.1:{relay_port}");
    let port = free_udp_port().unwrap();
    let server = iroh_server(&dir, port);
    let id = server.endpoint_id.clone().unwrap();
    let addr = format!("127.0.0.1:{port}");
    let client = AlknetClient::start_to(
        &dir,
        Profile::Dev,
        &["--transport", "iroh", "--peer", &id, "--peer-addr", &addr],
        &server.user_key,
        &["--iroh-relay", &relay_url, "--proxy", &proxy.url],
    )
    .unwrap();
    // The direct path carries the session...
    let target = HttpTarget::start("127.0.0.1:0").unwrap();
    let url = format!("http://127.0.0.1:{}/1000", target.addr().port());
    assert_eq!(
        fetch(client.socks_addr, &url, &dir.join("body")).unwrap(),
        HttpTarget::body(1000)
    );
    // ...and the relay is reached through the proxy.
    let needle = format!("127.0.0.1:{relay_port}");
    let seen = wait_until(
        "the proxy to carry relay traffic",
        Duration::from_secs(30),
        || proxy.log().contains(&needle).then_some(()),
    );
    assert!(
        seen.is_ok(),
        "tinyproxy never saw {needle}:\n{}\n{}",
        proxy.log(),
        client.log()
    );
    drop(relay);
}

#[test]
fn an_iroh_server_is_remembered_under_its_endpoint_id() {
    let dir = Workdir::new().unwrap();
    let port = free_udp_port().unwrap();
    let server = iroh_server(&dir, port);
    let known_hosts = dir.join("kh");
    let client = AlknetClient::start_to(
        &dir,
        Profile::Dev,
        &as_strs(&server_peer_args(&server, port)),
        &server.user_key,
        &["--known-hosts", known_hosts.to_str().unwrap()],
    )
    .unwrap();
    drop(client);
    let recorded = std::fs::read_to_string(&known_hosts).unwrap();
    let id = server.endpoint_id.as_deref().unwrap();
    assert!(
        recorded.starts_with(&format!("{id} ssh-ed25519 ")),
        "{recorded}"
    );
    // The second contact is checked against it, strictly.
    AlknetClient::start_to(
        &dir,
        Profile::Dev,
        &as_strs(&server_peer_args(&server, port)),
        &server.user_key,
        &[
            "--known-hosts",
            known_hosts.to_str().unwrap(),
            "--strict-host-keys",
        ],
    )
    .unwrap();
}
