//! SIGTERM during a transfer: both ends stop promptly and exit 0.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use xtask::{AlknetClient, AlknetServer, HttpTarget, Workdir, require_tool, wait_until};

/// The bound is 3 s; the extra second absorbs a busy CI machine.
const PROMPT_EXIT: Duration = Duration::from_secs(4);

/// Starts a slow, long curl download through `socks`, and waits until
/// bytes are flowing.
fn start_transfer(
    dir: &Workdir,
    socks: std::net::SocketAddr,
    target: &HttpTarget,
    name: &str,
) -> std::process::Child {
    require_tool("curl").unwrap();
    let out = dir.join(name);
    let child = Command::new("curl")
        .args([
            "--silent",
            "--limit-rate",
            "2M",
            "--max-time",
            "60",
            "--socks5-hostname",
        ])
        .arg(socks.to_string())
        .arg("--output")
        .arg(&out)
        .arg(format!("http://{}/{}", target.addr(), 1u64 << 30))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("the transfer to start", Duration::from_secs(30), || {
        std::fs::metadata(&out)
            .ok()
            .filter(|m| m.len() > 0)
            .map(|_| ())
    })
    .unwrap();
    child
}

#[test]
fn sigterm_mid_transfer_stops_client_and_server_promptly_with_status_zero() {
    let dir = Workdir::new().unwrap();
    let target = HttpTarget::start("127.0.0.1:0").unwrap();
    let mut server = AlknetServer::start(&dir, &[]).unwrap();

    let mut client = AlknetClient::start(&dir, server.port, &server.user_key, &[]).unwrap();
    let mut curl = start_transfer(&dir, client.socks_addr, &target, "one");
    let asked = Instant::now();
    let status = client.process.terminate(Duration::from_secs(30)).unwrap();
    let took = asked.elapsed();
    assert!(status.success(), "connect exited with {status}");
    assert!(took < PROMPT_EXIT, "connect took {took:?} to stop");
    let _ = curl.kill();
    let _ = curl.wait();

    let client = AlknetClient::start(&dir, server.port, &server.user_key, &[]).unwrap();
    let mut curl = start_transfer(&dir, client.socks_addr, &target, "two");
    let asked = Instant::now();
    let status = server.process.terminate(Duration::from_secs(30)).unwrap();
    let took = asked.elapsed();
    assert!(status.success(), "serve exited with {status}");
    assert!(took < PROMPT_EXIT, "serve took {took:?} to stop");
    assert!(
        server.log().contains("connection closed"),
        "{}",
        server.log()
    );
    let _ = curl.kill();
    let _ = curl.wait();
}
