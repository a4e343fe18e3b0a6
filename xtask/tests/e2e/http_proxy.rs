//! The client's HTTP proxy port, driven by curl as programs that read
//! `http_proxy`/`HTTPS_PROXY` use it: absolute-form requests and CONNECT
//! tunnels, names resolved by the server.

use std::process::Command;

use xtask::BoundedOutput as _;
use xtask::{AlknetClient, AlknetServer, HttpTarget, Workdir, free_port, require_tool};

fn curl(args: &[&str], env: Option<(&str, &str)>) -> (bool, Vec<u8>, String) {
    require_tool("curl").unwrap();
    let mut command = Command::new("curl");
    command
        .args(["--silent", "--show-error", "--max-time", "60"])
        .args(args);
    if let Some((name, value)) = env {
        command.env(name, value);
    }
    let output = command.bounded_output().unwrap();
    (
        output.status.success(),
        output.stdout,
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn curl_reaches_targets_through_the_http_proxy_port() {
    let dir = Workdir::new().unwrap();
    let server = AlknetServer::start(&dir, &[]).unwrap();
    let port = free_port().unwrap();
    let proxy = format!("http://127.0.0.1:{port}");
    let client = AlknetClient::start(
        &dir,
        server.port,
        &server.user_key,
        &[
            "--host-key",
            &server.fingerprint,
            "--http-proxy",
            &port.to_string(),
        ],
    )
    .unwrap();
    assert!(
        client.log().contains("HTTP proxy listening"),
        "{}",
        client.log()
    );
    let target = HttpTarget::start("127.0.0.1:0").unwrap();
    let size = 2 * 1024 * 1024;
    // `localhost` is resolved on the server's side.
    let url = format!("http://localhost:{}/{size}", target.addr().port());

    // Absolute form, as `curl -x` and `http_proxy=` send plain HTTP.
    let (ok, body, stderr) = curl(&["-x", &proxy, &url], None);
    assert!(ok, "{stderr}");
    assert!(body == HttpTarget::body(size), "the body differs");
    let (ok, body, stderr) = curl(&[&url], Some(("http_proxy", &proxy)));
    assert!(ok, "{stderr}");
    assert!(body == HttpTarget::body(size), "the body differs");

    // CONNECT, as HTTPS clients use it (--proxytunnel forces it here).
    let (ok, body, stderr) = curl(&["--proxytunnel", "-x", &proxy, &url], None);
    assert!(ok, "{stderr}");
    assert!(body == HttpTarget::body(size), "the body differs");

    // A target nobody listens on: a gateway error, the proxy lives on.
    let closed = format!("http://127.0.0.1:{}/1", free_port().unwrap());
    let (_, _, stderr) = curl(&["--fail", "-x", &proxy, &closed], None);
    assert!(stderr.contains("502"), "{stderr}");
    let (_, _, stderr) = curl(&["--proxytunnel", "-x", &proxy, &closed], None);
    assert!(stderr.contains("502"), "{stderr}");
    let (ok, _, stderr) = curl(&["-x", &proxy, &url], None);
    assert!(ok, "{stderr}");
}
