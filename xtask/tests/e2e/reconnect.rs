//! A client that never gives up: the same `alknet connect` process keeps
//! serving SOCKS5, and its `-R` forwards come back, across server crashes
//! and freezes.

use std::io::{Read, Write};
use std::time::Duration;
use std::time::Instant;

use xtask::{
    AlknetClient, AlknetServer, HttpTarget, VanishingLink, Workdir, free_port, wait_until,
};

use crate::{
    assert_logs_do_not_mention, client_behind, download_in_background, fetch, keep_writing,
    upload_in_background, wait_for_lost_server,
};

const LIMIT: Duration = Duration::from_secs(60);

/// Waits until the client has logged its `count`-th new session.
fn wait_for_session(client: &AlknetClient, count: usize) {
    let sessions = || client.log().matches(" connected server=").count();
    wait_until(&format!("session #{count}"), LIMIT, || {
        (sessions() >= count).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\nclient log:\n{}", client.log()));
}

/// Whether `GET /1000` to the server-side port of a `-R` forward (to an
/// [`HttpTarget`]) comes back whole.
fn answers_through(forward_port: u16) -> bool {
    let mut via_forward = std::net::TcpStream::connect(("127.0.0.1", forward_port)).unwrap();
    via_forward.set_read_timeout(Some(LIMIT)).unwrap();
    via_forward
        .write_all(b"GET /1000 HTTP/1.0\r\n\r\n")
        .unwrap();
    let mut response = Vec::new();
    via_forward.read_to_end(&mut response).unwrap();
    response.ends_with(&HttpTarget::body(1000))
}

#[test]
fn the_same_client_serves_again_after_the_server_is_killed_and_restarted() {
    let dir = Workdir::new().unwrap();
    let mut server = AlknetServer::start(&dir, &[]).unwrap();
    let target = HttpTarget::start("127.0.0.1:0").unwrap();
    let port = target.addr().port();
    // A remote forward on a fixed server port, to see it come back.
    let forward_port = free_port().unwrap();
    let remote = format!("{forward_port}:localhost:{port}");
    let client =
        AlknetClient::start(&dir, server.port, &server.user_key, &["-R", &remote]).unwrap();
    let url = format!("http://localhost:{port}/100000");
    assert_eq!(
        fetch(client.socks_addr, &url, &dir.join("before")).unwrap(),
        HttpTarget::body(100_000)
    );

    server.kill_and_restart().unwrap();
    wait_for_session(&client, 2);
    assert_eq!(
        fetch(client.socks_addr, &url, &dir.join("after")).unwrap(),
        HttpTarget::body(100_000)
    );
    // The -R forward was requested again on the new session.
    assert!(
        answers_through(forward_port),
        "no answer through the -R port after reconnecting"
    );

    let log = client.log();
    assert!(log.contains("connection to the server lost"), "{log}");
    assert!(log.contains("reconnecting retry_in="), "{log}");
    assert_logs_do_not_mention(
        &[("client", log)],
        &["localhost".into(), format!(":{port}")],
    );
}

#[test]
fn a_frozen_server_is_detected_by_keepalives_and_the_client_returns_when_it_thaws() {
    let dir = Workdir::new().unwrap();
    let server = AlknetServer::start(&dir, &[]).unwrap();
    let client = AlknetClient::start(
        &dir,
        server.port,
        &server.user_key,
        &["--keepalive-interval", "1"],
    )
    .unwrap();

    // SIGSTOP keeps the server's sockets open: only keepalives can tell.
    server.process.freeze().unwrap();
    let lost = wait_for_lost_server(&client, LIMIT);
    server.process.thaw().unwrap();
    lost.unwrap_or_else(|e| panic!("{e}"));

    wait_for_session(&client, 2);
    let target = HttpTarget::start("127.0.0.1:0").unwrap();
    let url = format!("http://127.0.0.1:{}/1000", target.addr().port());
    assert_eq!(
        fetch(client.socks_addr, &url, &dir.join("after")).unwrap(),
        HttpTarget::body(1000)
    );
}

/// How long a server with keepalives a second apart takes to free the
/// `-R` port of a client that froze (while downloading through it, if
/// `downloading`), and the server's log.
fn time_to_free_the_remote_forward_of_a_frozen_client(downloading: bool) -> (Duration, String) {
    let dir = Workdir::new().unwrap();
    let server = AlknetServer::start(&dir, &["--keepalive-interval", "1"]).unwrap();
    let target = HttpTarget::start("127.0.0.1:0").unwrap();
    let forward = format!("127.0.0.1:0:127.0.0.1:{}", target.addr().port());
    let client = AlknetClient::start(
        &dir,
        server.port,
        &server.user_key,
        &["-R", &forward, "--keepalive-interval", "3600"],
    )
    .unwrap();
    let port = wait_until("the remote forward", LIMIT, || {
        client.remote_forward_port(1).ok()
    })
    .unwrap();
    let listening = ("127.0.0.1", port);
    assert!(std::net::TcpStream::connect(listening).is_ok());
    let download = downloading.then(|| {
        let download = download_in_background(client.socks_addr, LIMIT);
        // Under way: the path from the server is full.
        std::thread::sleep(Duration::from_secs(2));
        download
    });

    // SIGSTOP keeps the client's socket open and silent, as a network that
    // vanished without a FIN: only the server's keepalives can tell.
    let frozen_at = Instant::now();
    client.process.freeze().unwrap();
    let freed = wait_until("the server to drop the silent client", LIMIT, || {
        std::net::TcpStream::connect(listening)
            .is_err()
            .then_some(frozen_at.elapsed())
    });
    client.process.thaw().unwrap();
    let freed = freed.unwrap_or_else(|e| panic!("{e}\nserver log:\n{}", server.log()));
    if let Some(download) = download {
        download.join().unwrap();
    }
    (freed, server.log())
}

#[test]
fn a_client_that_vanishes_is_dropped_by_keepalives_with_its_remote_forward() {
    let (freed, log) = time_to_free_the_remote_forward_of_a_frozen_client(false);
    // Three unanswered keepalives, a second apart, and the next tick.
    assert!(freed < Duration::from_secs(10), "{freed:?}");
    assert!(log.contains("connection closed"), "{log}");
}

#[test]
fn a_client_that_vanishes_mid_download_is_dropped_as_soon_with_its_remote_forward() {
    // With the path to the client full, the session's end must not wait
    // to write out what is queued for it (as a client's did, see
    // a_client_uploading_to_a_frozen_server_gives_it_up_at_the_keepalive_timeout).
    let (freed, log) = time_to_free_the_remote_forward_of_a_frozen_client(true);
    // The keepalives, and a moment for the stream to give up writing.
    assert!(freed < Duration::from_secs(15), "{freed:?}");
    assert!(log.contains("connection closed"), "{log}");
}

#[test]
fn after_its_renewal_count_of_tunnels_the_client_moves_to_a_fresh_session_with_its_remote_forward()
{
    let dir = Workdir::new().unwrap();
    let server = AlknetServer::start(&dir, &[]).unwrap();
    let target = HttpTarget::start("127.0.0.1:0").unwrap();
    let port = target.addr().port();
    let forward_port = free_port().unwrap();
    let remote = format!("{forward_port}:localhost:{port}");
    let mut client = AlknetClient::start(
        &dir,
        server.port,
        &server.user_key,
        &["--renew-after-tunnels", "3", "-R", &remote],
    )
    .unwrap();
    let url = format!("http://localhost:{port}/1000");
    for round in 0..4 {
        assert_eq!(
            fetch(
                client.socks_addr,
                &url,
                &dir.join(&format!("fetch-{round}"))
            )
            .unwrap(),
            HttpTarget::body(1000)
        );
    }
    client
        .process
        .wait_for_log("moved to a fresh session", LIMIT)
        .unwrap_or_else(|e| panic!("{e}"));
    // Still one client, no lost session in between; the -R port answers.
    let log = client.log();
    assert!(!log.contains("connection to the server lost"), "{log}");
    assert!(
        answers_through(forward_port),
        "no answer through the -R port after the renewal"
    );
    assert_logs_do_not_mention(
        &[("client", client.log())],
        &["localhost".into(), format!(":{port}")],
    );
}

#[test]
fn an_upload_waiting_on_a_server_that_dies_is_closed_not_left_hanging() {
    // Seen in a 15-minute soak: each tunnel whose writer was waiting for
    // the server's credit when the session was lost stayed open for good —
    // the program never heard, and the client kept its socket.
    let dir = Workdir::new().unwrap();
    let mut server = AlknetServer::start(&dir, &[]).unwrap();
    let client = AlknetClient::start(&dir, server.port, &server.user_key, &[]).unwrap();
    // A target that takes the connection and never reads from it.
    let target = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let target_port = target.local_addr().unwrap().port();
    let (held_tx, held_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        if let Ok((stream, _)) = target.accept() {
            let _ = held_tx.send(stream);
        }
    });
    let (reply, upload) =
        xtask::socks5_connect(client.socks_addr, "127.0.0.1", target_port).unwrap();
    assert_eq!(reply, 0, "SOCKS5 connect refused");
    let _held = held_rx.recv_timeout(LIMIT).unwrap();
    // Fill the path: the client's writer ends up waiting for credit.
    let writer = upload.try_clone().unwrap();
    assert!(keep_writing(writer, Duration::from_secs(3)).is_ok());

    server.process.kill().unwrap();
    let outcome = keep_writing(upload, LIMIT);
    let error = outcome.expect_err("the tunnel's writes still hang a minute after the server died");
    assert!(
        matches!(
            error.kind(),
            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
        ),
        "{error}"
    );
}

#[test]
fn a_client_uploading_to_a_frozen_server_gives_it_up_at_the_keepalive_timeout() {
    // Keepalives ended the session in time, but russh then shuts its
    // stream down, and the stream waited to write out what was queued for
    // a server that took nothing: the session ended only when the server
    // thawed (on a dead link, at TCP's retransmission timeout).
    let dir = Workdir::new().unwrap();
    let server = AlknetServer::start(&dir, &[]).unwrap();
    let client = AlknetClient::start(
        &dir,
        server.port,
        &server.user_key,
        &["--keepalive-interval", "1"],
    )
    .unwrap();
    let upload = upload_in_background(client.socks_addr, LIMIT);
    // Under way: the path to the server is full.
    std::thread::sleep(Duration::from_secs(2));

    server.process.freeze().unwrap();
    // Three keepalives a second apart go unanswered, then a moment for
    // the stream to give up writing.
    let lost = wait_for_lost_server(&client, Duration::from_secs(15));
    server.process.thaw().unwrap();
    lost.unwrap_or_else(|e| panic!("{e}"));
    // The upload was told: its tunnel broke.
    assert!(upload.join().unwrap().is_err());
    wait_for_session(&client, 2);
}

#[test]
fn a_fixed_remote_forward_comes_back_soon_after_the_network_vanished_under_it() {
    // A client whose network vanishes finds out (by its keepalives) and
    // reconnects long before the server would drop the old session (by its
    // own keepalives, 30 s apart by default: ~2 min), which still holds the
    // -R port when the new session asks for it. That refusal used to be
    // final; now the server probes the holder, an earlier session of the
    // same key, and ends it when it answers nothing.
    let dir = Workdir::new().unwrap();
    let server = AlknetServer::start(&dir, &[]).unwrap();
    let link = VanishingLink::start(([127, 0, 0, 1], server.port).into()).unwrap();
    let target = HttpTarget::start("127.0.0.1:0").unwrap();
    let forward_port = free_port().unwrap();
    let remote = format!("{forward_port}:127.0.0.1:{}", target.addr().port());
    let client = client_behind(&dir, &server, &link, &remote);
    wait_until("the remote forward", LIMIT, || {
        client.remote_forward_port(1).ok()
    })
    .unwrap();
    assert!(answers_through(forward_port));

    link.vanish();
    let vanished_at = Instant::now();
    wait_for_session(&client, 2);
    let back = wait_until("the -R port to answer again", LIMIT, || {
        answers_within(forward_port, Duration::from_secs(2)).then_some(())
    });
    back.unwrap_or_else(|e| {
        panic!(
            "{e}\nclient log:\n{}\nserver log:\n{}",
            client.log(),
            server.log()
        )
    });
    // The client's keepalives, then the probe: well before the server's
    // own keepalives would have ended the old session.
    let took = vanished_at.elapsed();
    assert!(took < Duration::from_secs(45), "{took:?}");
    let log = server.log();
    assert!(log.contains("answers nothing: ending it"), "{log}");
}

/// Whether `GET /1000` through the `-R` port comes back whole within
/// `limit` (an old session's listener may take the connection and never
/// answer).
fn answers_within(forward_port: u16, limit: Duration) -> bool {
    let Ok(mut via_forward) = std::net::TcpStream::connect(("127.0.0.1", forward_port)) else {
        return false;
    };
    via_forward.set_read_timeout(Some(limit)).unwrap();
    if via_forward
        .write_all(b"GET /1000 HTTP/1.0\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut response = Vec::new();
    via_forward.read_to_end(&mut response).is_ok() && response.ends_with(&HttpTarget::body(1000))
}
