//! Proxies on both sides, with real proxies: microsocks (SOCKS5) and
//! tinyproxy (HTTP CONNECT). Each proxy's own log proves the traffic went
//! through it.

use xtask::{
    AlknetClient, AlknetServer, HttpTarget, UpstreamProxyProcess, Workdir, free_port,
    socks5_connect_reply, wait_until,
};

use crate::fetch;

fn proxies(dir: &Workdir) -> [UpstreamProxyProcess; 2] {
    [
        UpstreamProxyProcess::microsocks(dir).unwrap(),
        UpstreamProxyProcess::tinyproxy(dir).unwrap(),
    ]
}

/// Waits until the proxy's log mentions `needle` (logs are written
/// asynchronously).
fn assert_proxy_logged(proxy: &UpstreamProxyProcess, needle: &str) {
    let seen = wait_until(
        &format!("{} to log {needle}", proxy.url),
        std::time::Duration::from_secs(10),
        || proxy.log().contains(needle).then_some(()),
    );
    assert!(
        seen.is_ok(),
        "{} did not log {needle:?}:\n{}",
        proxy.url,
        proxy.log()
    );
}

#[test]
fn the_server_reaches_targets_through_an_outbound_proxy() {
    let dir = Workdir::new().unwrap();
    let target = HttpTarget::start("127.0.0.1:0").unwrap();
    let port = target.addr().port();
    for proxy in proxies(&dir) {
        let sub = Workdir::new().unwrap();
        let server = AlknetServer::start(&sub, &["--proxy", &proxy.url]).unwrap();
        let client = AlknetClient::start(&sub, server.port, &server.user_key, &[]).unwrap();
        let url = format!("http://localhost:{port}/100000");
        let body = fetch(client.socks_addr, &url, &sub.join("body")).unwrap();
        assert_eq!(body, HttpTarget::body(100_000), "via {}", proxy.url);
        assert_proxy_logged(&proxy, &format!("localhost:{port}"));

        // A refusal behind the proxy comes back as a failure, not a hang:
        // microsocks says "connection refused" (5) and alknet passes it on;
        // tinyproxy only says "500", a general failure (1).
        let closed = free_port().unwrap();
        let reply = socks5_connect_reply(client.socks_addr, "127.0.0.1", closed).unwrap();
        let expected = if proxy.url.starts_with("socks5") {
            5
        } else {
            1
        };
        assert_eq!(reply, expected, "via {}", proxy.url);
    }
}

#[test]
fn the_client_reaches_the_server_through_a_proxy() {
    let dir = Workdir::new().unwrap();
    let target = HttpTarget::start("127.0.0.1:0").unwrap();
    for proxy in proxies(&dir) {
        let sub = Workdir::new().unwrap();
        let server = AlknetServer::start(&sub, &[]).unwrap();
        let client = AlknetClient::start(
            &sub,
            server.port,
            &server.user_key,
            &["--proxy", &proxy.url],
        )
        .unwrap();
        let url = format!("http://127.0.0.1:{}/100000", target.addr().port());
        let body = fetch(client.socks_addr, &url, &sub.join("body")).unwrap();
        assert_eq!(body, HttpTarget::body(100_000), "via {}", proxy.url);
        assert_proxy_logged(&proxy, &format!("127.0.0.1:{}", server.port));
    }
}
