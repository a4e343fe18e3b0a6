//! The main job: `alknet serve` + `alknet connect`, with curl through SOCKS5.

use std::process::{Command, Stdio};
use std::time::Duration;

use xtask::{AlknetClient, AlknetServer, HttpTarget, Workdir, require_tool, sha256_hex};

use crate::{assert_logs_do_not_mention, fetch};

const LIMIT: Duration = Duration::from_secs(30);

#[test]
fn curl_fetches_64_mib_by_name_through_the_tunnel_and_no_log_names_the_target() {
    let dir = Workdir::new().unwrap();
    let mut server = AlknetServer::start(&dir, &[]).unwrap();
    let pin = server.fingerprint.clone();
    let mut client =
        AlknetClient::start(&dir, server.port, &server.user_key, &["--host-key", &pin]).unwrap();
    let target = HttpTarget::start("127.0.0.1:0").unwrap();
    let port = target.addr().port();

    // "localhost" travels unresolved; the server looks it up.
    let size = 64 * 1024 * 1024;
    let body = fetch(
        client.socks_addr,
        &format!("http://localhost:{port}/{size}"),
        &dir.join("big"),
    )
    .unwrap();
    assert_eq!(body.len(), size);
    assert_eq!(
        sha256_hex(&body),
        sha256_hex(&HttpTarget::body(size)),
        "the body was corrupted in transit"
    );

    // Both ends stop cleanly on SIGTERM, and the server logs the goodbye.
    assert!(
        client.process.terminate(LIMIT).unwrap().success(),
        "connect did not exit 0 on SIGTERM"
    );
    server
        .process
        .wait_for_log("connection closed", LIMIT)
        .unwrap();
    assert!(
        server.process.terminate(LIMIT).unwrap().success(),
        "serve did not exit 0 on SIGTERM"
    );

    let server_log = server.log();
    assert!(
        server_log.contains("connection opened remote_addr=127.0.0.1:"),
        "{server_log}"
    );
    assert!(server_log.contains("transport=tcp"), "{server_log}");
    assert!(server_log.contains("result=accept"), "{server_log}");
    assert!(server_log.contains(" duration="), "{server_log}");
    assert_logs_do_not_mention(
        &[("server", server_log), ("client", client.log())],
        &[
            "localhost".into(),
            format!(":{port}"),
            format!("={port}"),
            format!(" {port}"),
            format!("{size}"),
        ],
    );
}

#[test]
fn an_ipv6_literal_target_works() {
    let dir = Workdir::new().unwrap();
    let server = AlknetServer::start(&dir, &[]).unwrap();
    let client = AlknetClient::start(&dir, server.port, &server.user_key, &[]).unwrap();
    let target = HttpTarget::start("[::1]:0").expect("IPv6 loopback (::1) must be available");
    let port = target.addr().port();

    let body = fetch(
        client.socks_addr,
        &format!("http://[::1]:{port}/100000"),
        &dir.join("v6"),
    )
    .unwrap();
    assert_eq!(body, HttpTarget::body(100_000));
    assert_logs_do_not_mention(
        &[("server", server.log()), ("client", client.log())],
        &["::1".into(), format!(":{port}"), format!("={port}")],
    );
}

#[test]
fn a_hundred_concurrent_socks_connections_all_succeed() {
    require_tool("curl").unwrap();
    let dir = Workdir::new().unwrap();
    let server = AlknetServer::start(&dir, &[]).unwrap();
    let client = AlknetClient::start(&dir, server.port, &server.user_key, &[]).unwrap();
    let target = HttpTarget::start("127.0.0.1:0").unwrap();
    let url = format!("http://127.0.0.1:{}/200000", target.addr().port());

    // A hundred real curl processes at once, each with its own output file.
    let curls: Vec<_> = (0..100)
        .map(|i| {
            Command::new("curl")
                .args([
                    "--silent",
                    "--show-error",
                    "--fail",
                    "--max-time",
                    "60",
                    "--socks5-hostname",
                ])
                .arg(client.socks_addr.to_string())
                .arg("--output")
                .arg(dir.join(&format!("out{i}")))
                .arg(&url)
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let expected = HttpTarget::body(200_000);
    let mut failures = Vec::new();
    for (i, curl) in curls.into_iter().enumerate() {
        let output = curl.wait_with_output().unwrap();
        let body = std::fs::read(dir.join(&format!("out{i}"))).unwrap_or_default();
        if !output.status.success() || body != expected {
            failures.push(format!(
                "#{i}: {} {}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of 100 failed: {failures:#?}",
        failures.len()
    );
}

/// Issue 17 item 4: a channel whose reader stops once stalled the whole
/// client session (the SOCKS5 transfer below timed out), because russh
/// grants window per session, not per channel. alknet peers now give each
/// channel its own credit (`alknet/src/flow.rs`), so the stalled channel
/// waits alone while the other one runs.
#[test]
fn a_reader_that_stops_slows_only_its_own_channel() {
    use std::io::Write as _;
    let dir = Workdir::new().unwrap();
    let target = HttpTarget::start("127.0.0.1:0").unwrap();
    let server = AlknetServer::start(&dir, &[]).unwrap();
    let forward = format!("127.0.0.1:0:127.0.0.1:{}", target.addr().port());
    let client =
        AlknetClient::start(&dir, server.port, &server.user_key, &["-L", &forward]).unwrap();
    // A program that asks for a gigabyte through -L and then reads nothing.
    let mut stalled = std::net::TcpStream::connect(client.forward_addr(1).unwrap()).unwrap();
    stalled
        .write_all(b"GET /1073741824 HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    std::thread::sleep(std::time::Duration::from_secs(2));
    // Meanwhile 64 MiB through SOCKS5 on the same session arrive whole.
    let url = format!("http://127.0.0.1:{}/67108864", target.addr().port());
    let started = std::time::Instant::now();
    let body = crate::fetch(client.socks_addr, &url, &dir.join("body")).unwrap();
    let took = started.elapsed();
    assert!(
        body == HttpTarget::body(64 * 1024 * 1024),
        "{} bytes",
        body.len()
    );
    assert!(took < std::time::Duration::from_secs(60), "{took:?}");
    drop(stalled);
}
