//! The SSH client and server together on loopback.

use std::time::Duration;

use alknet::auth::{AuthorizedKeys, generate_ed25519};
use alknet::proxy::{OpenErrorKind, StreamOpener, TargetAddr};
use alknet::transport::TcpAcceptor;
use alknet::{Client, ConnectOptions, Error, ServeOptions, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

mod common;

use common::{LIMIT, TestServer};

/// A loopback target that answers every connection with `greeting`.
async fn greeter(greeting: &'static [u8]) -> TargetAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = socket.write_all(greeting).await;
            });
        }
    });
    TargetAddr::Ip(addr)
}

async fn read_all(opener: &dyn StreamOpener, target: &TargetAddr) -> Vec<u8> {
    let mut stream = opener.open(target).await.expect("open failed");
    let mut data = Vec::new();
    tokio::time::timeout(LIMIT, stream.read_to_end(&mut data))
        .await
        .expect("read hung")
        .unwrap();
    data
}

fn closed_port() -> TargetAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    TargetAddr::Ip(listener.local_addr().unwrap())
}

#[tokio::test]
async fn failed_channels_do_not_harm_the_session() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let target = greeter(b"still here").await;

    let refused = client
        .open(&closed_port())
        .await
        .err()
        .expect("closed port opened");
    assert_eq!(refused.kind(), OpenErrorKind::ConnectionRefused);

    // Reserved names are never dialled; only alknet-control:0 opens.
    for reserved in [("alknet-other", 0), ("alknet-control", 80)] {
        let reserved = TargetAddr::Domain(reserved.0.into(), reserved.1);
        let prohibited = client
            .open(&reserved)
            .await
            .err()
            .expect("reserved host opened");
        assert_eq!(prohibited.kind(), OpenErrorKind::NotAllowed);
    }

    let unresolvable = TargetAddr::Domain("no-such-host.invalid".into(), 80);
    let unreachable = client
        .open(&unresolvable)
        .await
        .err()
        .expect("bad name opened");
    assert_eq!(unreachable.kind(), OpenErrorKind::HostUnreachable);

    assert_eq!(read_all(&client, &target).await, b"still here");
    server.shutdown().await;
}

#[tokio::test]
async fn many_channels_share_one_session() {
    let server = TestServer::start().await;
    let client = std::sync::Arc::new(server.client().await);
    let target = greeter(b"hello").await;
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let (client, target) = (client.clone(), target.clone());
        tasks.push(tokio::spawn(async move {
            read_all(client.as_ref(), &target).await
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap(), b"hello");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn bulk_data_survives_the_round_trip_with_half_close() {
    // An echo server that answers only after the request is complete.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = TargetAddr::Ip(listener.local_addr().unwrap());
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut request = Vec::new();
        socket.read_to_end(&mut request).await.unwrap();
        socket.write_all(&request).await.unwrap();
    });
    let server = TestServer::start().await;
    let client = server.client().await;

    let payload: Vec<u8> = (0..8 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let stream = client.open(&target).await.unwrap();
    let (mut reader, mut writer) = tokio::io::split(stream);
    let send = async {
        writer.write_all(&payload).await.unwrap();
        writer.shutdown().await.unwrap();
    };
    let mut echoed = Vec::new();
    let receive = reader.read_to_end(&mut echoed);
    let (_, received) = tokio::time::timeout(LIMIT, async { tokio::join!(send, receive) })
        .await
        .expect("echo hung");
    received.unwrap();
    assert!(echoed == payload, "echo differs from what was sent");
    server.shutdown().await;
}

#[tokio::test]
async fn unknown_keys_are_refused_with_advice() {
    let server = TestServer::start().await;
    let stranger = generate_ed25519("stranger").unwrap();
    let options = ConnectOptions::new(stranger, "tester");
    let error = Client::connect(&server.transport, options)
        .await
        .err()
        .expect("stranger got in");
    assert!(matches!(error, Error::AuthRejected { .. }), "{error:?}");
    assert!(error.to_string().contains("authorized_keys"), "{error}");
    server.shutdown().await;
}

#[tokio::test]
async fn a_wrong_host_key_pin_is_refused_naming_both_keys() {
    let server = TestServer::start().await;
    let wrong = "SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU";
    let options = ConnectOptions::new(server.user_key.clone(), "tester").with_host_key(wrong);
    let error = Client::connect(&server.transport, options)
        .await
        .err()
        .expect("wrong pin accepted");
    match &error {
        Error::HostKeyMismatch { expected, actual } => {
            assert_eq!(expected, wrong);
            assert_eq!(actual, &server.fingerprint);
        }
        other => panic!("expected a host key mismatch, got {other:?}"),
    }
    server.shutdown().await;
}

#[tokio::test]
async fn without_a_pin_the_client_connects_and_reports_the_fingerprint() {
    let server = TestServer::start().await;
    let options = ConnectOptions::new(server.user_key.clone(), "tester");
    let client = Client::connect(&server.transport, options).await.unwrap();
    assert_eq!(client.server_fingerprint(), server.fingerprint);
    server.shutdown().await;
}

#[tokio::test]
async fn server_shutdown_ends_client_sessions() {
    let server = TestServer::start().await;
    let client = server.client().await;
    server.shutdown().await;
    tokio::time::timeout(LIMIT, client.closed())
        .await
        .expect("client never noticed");
    let error = client
        .open(&closed_port())
        .await
        .err()
        .expect("opened on a dead session");
    assert_eq!(error.kind(), OpenErrorKind::TunnelDown);
}

#[tokio::test]
async fn a_client_that_never_speaks_is_dropped_after_the_login_grace() {
    let user_key = generate_ed25519("user").unwrap();
    let mut options = ServeOptions::new(
        generate_ed25519("host").unwrap(),
        AuthorizedKeys::from_keys([user_key.public_key().clone()]),
    );
    options.login_grace = Duration::from_millis(300);
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

#[tokio::test]
async fn unix_socket_targets_are_reached_with_direct_streamlocal() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("greeter.sock");
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        socket.write_all(b"hello over a unix socket").await.unwrap();
    });
    let server = TestServer::start().await;
    let client = server.client().await;

    let mut stream = client
        .open_unix(&path)
        .await
        .expect("streamlocal open failed");
    let mut greeting = Vec::new();
    tokio::time::timeout(LIMIT, stream.read_to_end(&mut greeting))
        .await
        .expect("read hung")
        .unwrap();
    assert_eq!(greeting, b"hello over a unix socket");

    let missing = client.open_unix(&dir.path().join("missing.sock")).await;
    assert!(missing.is_err(), "a missing socket must fail the open");
    server.shutdown().await;
}

#[tokio::test]
async fn remote_forwards_bring_server_side_connections_to_client_side_targets() {
    let TargetAddr::Ip(greeter_addr) = greeter(b"reached the client side").await else {
        unreachable!("greeter listens on an IP")
    };
    let server = TestServer::start().await;
    let mut options = server.options();
    options.remote_forwards = vec![
        format!("0:127.0.0.1:{}", greeter_addr.port())
            .parse()
            .unwrap(),
    ];
    let client = Client::connect(&server.transport, options).await.unwrap();
    let [forward] = client.remote_forward_ports() else {
        panic!(
            "expected one remote forward, got {:?}",
            client.remote_forward_ports()
        )
    };
    assert_ne!(forward.port, 0, "the server's chosen port is reported");

    // A connection to the server-side port comes out at the greeter.
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", forward.port))
        .await
        .unwrap();
    let mut greeting = Vec::new();
    tokio::time::timeout(LIMIT, stream.read_to_end(&mut greeting))
        .await
        .expect("read hung")
        .unwrap();
    assert_eq!(greeting, b"reached the client side");

    // The server stops listening when the session ends.
    client.disconnect().await;
    tokio::time::timeout(LIMIT, client.closed()).await.unwrap();
    let gone =
        alknet::proxy::TargetAddr::Ip(std::net::SocketAddr::from(([127, 0, 0, 1], forward.port)));
    let refused = tokio::time::timeout(LIMIT, async {
        loop {
            if tokio::net::TcpStream::connect(gone.to_string())
                .await
                .is_err()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(
        refused.is_ok(),
        "the forward's port stayed open after the session ended"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_reload_refuses_new_logins_while_open_sessions_keep_working() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let target = greeter(b"still served").await;

    server.reload.reload(alknet::auth::AuthConfig::default());
    let refused = Client::connect(&server.transport, server.options()).await;
    assert!(
        matches!(refused, Err(Error::AuthRejected { .. })),
        "a removed key still logs in"
    );
    assert_eq!(read_all(&client, &target).await, b"still served");
    server.shutdown().await;
}

#[tokio::test]
async fn the_forwarding_policy_decides_which_targets_open() {
    use alknet::auth::{ForwardRule, ForwardingPolicy, TargetMatch, Verdict};
    let allowed = greeter(b"allowed").await;
    let denied = greeter(b"denied").await;
    let denied_port = denied.port();
    let server = TestServer::start_with(|options| {
        options.forwarding = ForwardingPolicy {
            rules: vec![ForwardRule {
                verdict: Verdict::Deny,
                target: TargetMatch::Cidr("127.0.0.0/8".parse().unwrap()),
                ports: Some(denied_port..=denied_port),
                principals: None,
            }],
            default: Verdict::Allow,
        };
    })
    .await;
    let client = server.client().await;
    assert_eq!(read_all(&client, &allowed).await, b"allowed");
    let refused = client
        .open(&denied)
        .await
        .err()
        .expect("a denied target opened");
    assert_eq!(refused.kind(), OpenErrorKind::NotAllowed);
    server.shutdown().await;
}
