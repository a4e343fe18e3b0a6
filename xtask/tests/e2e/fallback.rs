//! `--server` repeated: several ways in to one server, tried in order with
//! a head start each; the first that connects carries the session.

use xtask::{AlknetClient, AlknetServer, HttpTarget, Profile, Workdir, free_port, free_udp_port};

use crate::fetch;

#[test]
fn a_blocked_way_in_falls_back_to_the_next_one() {
    let dir = Workdir::new().unwrap();
    let server = AlknetServer::start(&dir, &[]).unwrap();
    // Nothing listens on the first two (TLS and iroh "blocked"); the
    // server is reached over plain TCP, third in the list.
    let blocked_tls = format!("tls://127.0.0.1:{}", free_port().unwrap());
    let blocked_iroh = format!("iroh://{}", "0".repeat(64));
    let open_tcp = format!("tcp://127.0.0.1:{}", server.port);
    // Where the "blocked" iroh endpoint would be: a UDP port nobody reads.
    let silent_udp = format!("127.0.0.1:{}", free_udp_port().unwrap());
    let client = AlknetClient::start_to(
        &dir,
        Profile::Dev,
        &[
            "--server",
            &blocked_tls,
            "--server",
            &blocked_iroh,
            "--server",
            &open_tcp,
            "--iroh-relay",
            "none",
            "--peer-addr",
            &silent_udp,
        ],
        &server.user_key,
        &["--host-key", &server.fingerprint],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let log = client.log();
    assert!(log.contains("connected by a fallback"), "{log}");
    let target = HttpTarget::start("127.0.0.1:0").unwrap();
    let url = format!("http://localhost:{}/65536", target.addr().port());
    assert!(fetch(client.socks_addr, &url, &dir.join("body")).unwrap() == HttpTarget::body(65536));
}
