//! The SSH client and server together on loopback: every tunnel test over
//! every transport, and what is specific to one.

use std::time::Duration;

use alknet::auth::{AuthorizedKeys, generate_ed25519};
use alknet::transport::TcpAcceptor;
use alknet::{ServeOptions, Server};
use tokio::io::AsyncReadExt;

mod common;

use common::{Backend, LIMIT};

mod tcp {
    const BACKEND: crate::Backend = crate::Backend::Tcp;
    include!("body/tunnel.rs");
}

mod tls {
    const BACKEND: crate::Backend = crate::Backend::Tls;
    include!("body/tunnel.rs");
}

mod tls_stealth {
    const BACKEND: crate::Backend = crate::Backend::TlsStealth;
    include!("body/tunnel.rs");
}

mod iroh {
    const BACKEND: crate::Backend = crate::Backend::Iroh;
    include!("body/tunnel.rs");
}

#[tokio::test]
async fn a_client_that_never_speaks_is_dropped_after_the_login_grace() {
    let user_key = generate_ed25519("user").unwrap();
    let options = ServeOptions::new(
        generate_ed25519("host").unwrap(),
        AuthorizedKeys::from_keys([user_key.public_key().clone()]),
    )
    .login_grace(Duration::from_millis(300));
    let acceptor = TcpAcceptor::bind("127.0.0.1:0").await.unwrap();
    let addr = acceptor.local_addr();
    let server = Server::new(options);
    let serving =
        tokio::spawn(async move { server.serve(&acceptor, std::future::pending()).await });

    let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut received = Vec::new();
    tokio::time::timeout(LIMIT, silent.read_to_end(&mut received))
        .await
        .expect("silent client was never dropped")
        .ok();
    assert!(
        received.starts_with(b"SSH-2.0-alknet"),
        "server sent its banner first"
    );
    serving.abort();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_login_grace_covers_the_stealth_phase_too() {
    // A client that trickles the SSH prefix one byte a second would hold a
    // stealth connection for as long as it likes if only each read were
    // timed; the login grace, counted from accept, ends it.
    let server = common::TestServer::start_on(Backend::TlsStealth, |options| {
        options.login_grace(Duration::from_secs(2))
    })
    .await;
    let mut stream = tokio::time::timeout(LIMIT, server.transport.connect())
        .await
        .unwrap()
        .unwrap();
    let started = tokio::time::Instant::now();
    let mut closed = false;
    for byte in b"SSH-2.0-" {
        use tokio::io::AsyncWriteExt;
        if stream.write_all(&[*byte]).await.is_err() || stream.flush().await.is_err() {
            closed = true;
            break;
        }
        let mut probe = [0u8; 1];
        if let Ok(read) =
            tokio::time::timeout(Duration::from_secs(1), stream.read(&mut probe)).await
            && !matches!(read, Ok(n) if n > 0)
        {
            closed = true;
            break;
        }
    }
    assert!(closed, "the trickling client was never cut off");
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );
    server.shutdown().await;
}
