//! Two iroh endpoints on loopback, no relay, no lookup: nothing leaves
//! the machine.
#![cfg(feature = "iroh")]

use std::time::Duration;

use alknet_transport::iroh::{
    IrohAcceptor, IrohOptions, IrohRelay, IrohTransport, derive_secret_key,
};
use alknet_transport::{Transport, TransportAcceptor, TransportKind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn loopback() -> IrohOptions {
    IrohOptions {
        relay: IrohRelay::Disabled,
        bind: Some("127.0.0.1:0".parse().unwrap()),
        proxy: None,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn streams_cross_between_endpoints_and_each_is_a_session() {
    let server = IrohAcceptor::bind(&loopback(), derive_secret_key(b"server"))
        .await
        .unwrap();
    assert_eq!(server.endpoint_id(), derive_secret_key(b"server").public());
    assert!(
        server.driven_where_bound(),
        "its connections run where it was bound, so its sessions should too"
    );
    let client = IrohTransport::new(loopback(), server.endpoint_id(), &server.bound_sockets());

    let echo = tokio::spawn(async move {
        for _ in 0..2 {
            let (mut stream, info) = server.accept().await.unwrap();
            assert!(matches!(info.kind, TransportKind::Iroh { .. }));
            tokio::spawn(async move {
                let mut data = Vec::new();
                stream.read_to_end(&mut data).await.unwrap();
                stream.write_all(&data).await.unwrap();
                stream.shutdown().await.unwrap();
            });
        }
        server
    });
    for message in [&b"first session"[..], &vec![7u8; 300_000][..]] {
        let mut stream = tokio::time::timeout(Duration::from_secs(20), client.connect())
            .await
            .expect("connect hung")
            .unwrap();
        stream.write_all(message).await.unwrap();
        stream.shutdown().await.unwrap();
        let mut back = Vec::new();
        tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut back))
            .await
            .expect("echo hung")
            .unwrap();
        assert_eq!(back, message);
    }
    let server = echo.await.unwrap();
    client.close().await;
    server.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_peer_fails_within_the_connect_timeout() {
    let nobody = derive_secret_key(b"nobody").public();
    // A loopback UDP port nobody listens on.
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let silent = socket.local_addr().unwrap();
    drop(socket);
    let client = IrohTransport::new(loopback(), nobody, &[silent])
        .with_connect_timeout(Duration::from_secs(2));
    let started = std::time::Instant::now();
    let error = client.connect().await.err().expect("connected to nobody");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert!(!error.to_string().is_empty());
    client.close().await;
}
