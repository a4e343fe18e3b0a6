// The tunnel tests, one body included once per transport (TCP, TLS, TLS
// with stealth, iroh) by tests/tunnel.rs: `BACKEND` says which.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use alknet::auth::{ForwardRule, ForwardingPolicy, TargetMatch, Verdict, generate_ed25519};
use alknet::proxy::{OpenErrorKind, StreamOpener, TargetAddr};
use alknet::{Client, ConnectOptions, Error};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::common::{LIMIT, TestServer};

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
    read_to_end_within_limit(opener.open(target).await.expect("open failed")).await
}

/// Everything a connection to a loopback port receives until EOF.
async fn read_all_from_port(port: u16) -> Vec<u8> {
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    read_to_end_within_limit(stream).await
}

async fn read_to_end_within_limit(mut stream: impl tokio::io::AsyncRead + Unpin) -> Vec<u8> {
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

#[tokio::test(flavor = "multi_thread")]
async fn failed_channels_do_not_harm_the_session() {
    let server = TestServer::start_on(BACKEND, |options| options).await;
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

#[tokio::test(flavor = "multi_thread")]
async fn many_channels_share_one_session() {
    let server = TestServer::start_on(BACKEND, |options| options).await;
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

#[tokio::test(flavor = "multi_thread")]
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
    let server = TestServer::start_on(BACKEND, |options| options).await;
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

/// A loopback echo that writes back as it reads, so that it stops reading
/// while its replies are not taken: both directions of a tunnel through
/// it depend on each other.
async fn streaming_echo() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut from, mut to) = socket.into_split();
                let _ = tokio::io::copy(&mut from, &mut to).await;
            });
        }
    });
    addr
}

/// Writes `mib` MiB into `stream` while reading its echo; returns the
/// bytes that came back. A stall fails the test with how far each
/// direction got, which tells a deadlock from a slow run.
async fn push_through_echo<S>(stream: S, mib: usize) -> usize
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite,
{
    use std::sync::atomic::{AtomicUsize, Ordering};
    let (mut reader, mut writer) = tokio::io::split(stream);
    let (sent, received) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let send = async {
        let block = vec![0x5a_u8; 1024 * 1024];
        for _ in 0..mib {
            writer.write_all(&block).await.unwrap();
            sent.fetch_add(block.len(), Ordering::Relaxed);
        }
        writer.shutdown().await.unwrap();
    };
    let receive = async {
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = reader.read(&mut buf).await.unwrap();
            if n == 0 {
                break received.load(Ordering::Relaxed);
            }
            assert!(buf[..n].iter().all(|byte| *byte == 0x5a), "echo corrupted");
            received.fetch_add(n, Ordering::Relaxed);
        }
    };
    let Ok((_, total)) = tokio::time::timeout(Duration::from_secs(120), async {
        tokio::join!(send, receive)
    })
    .await
    else {
        panic!(
            "bulk both ways through an echo deadlocked: {} of {mib} MiB written, {} bytes echoed",
            sent.load(Ordering::Relaxed) / (1024 * 1024),
            received.load(Ordering::Relaxed)
        );
    };
    total
}

/// Bulk both ways at once, through a target that couples them, once
/// deadlocked the session: russh's loop waited on a channel queue while
/// the window adjustment that would drain it sat unread behind data.
#[tokio::test(flavor = "multi_thread")]
async fn bulk_both_ways_through_a_streaming_echo_completes() {
    let echo = streaming_echo().await;
    let server = TestServer::start_on(BACKEND, |options| options).await;
    let client = server.client().await;
    let stream = client.open(&TargetAddr::Ip(echo)).await.unwrap();
    assert_eq!(push_through_echo(stream, 256).await, 256 * 1024 * 1024);
    server.shutdown().await;
}

/// The same through a remote forward, where the client side holds the
/// echo and the client's brake is the one tested.
#[tokio::test(flavor = "multi_thread")]
async fn bulk_both_ways_through_a_remote_forward_to_an_echo_completes() {
    let echo = streaming_echo().await;
    let server = TestServer::start_on(BACKEND, |options| options).await;
    let mut options = server.options();
    options.remote_forwards = vec![format!("0:127.0.0.1:{}", echo.port()).parse().unwrap()];
    let client = Client::connect(server.transport.as_ref(), options).await.unwrap();
    let [forward] = client.remote_forward_ports()[..] else {
        panic!("expected one remote forward")
    };
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", forward.port))
        .await
        .unwrap();
    assert_eq!(push_through_echo(stream, 256).await, 256 * 1024 * 1024);
    client.disconnect().await;
    server.shutdown().await;
}

/// A loopback target that writes to every connection without end,
/// counting what its sockets took.
async fn endless_source(written: Arc<AtomicU64>) -> TargetAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let written = written.clone();
            tokio::spawn(async move {
                let block = vec![0xa5_u8; 64 * 1024];
                while socket.write_all(&block).await.is_ok() {
                    written.fetch_add(block.len() as u64, Ordering::Relaxed);
                }
            });
        }
    });
    TargetAddr::Ip(addr)
}

/// A loopback target that takes connections and never reads from them.
async fn black_hole() -> TargetAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    TargetAddr::Ip(addr)
}

/// A loopback target that reads to the end, then answers with how many
/// bytes it read (8 bytes, big-endian).
async fn counting_sink() -> TargetAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 256 * 1024];
                let mut total = 0u64;
                while let Ok(n) = socket.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    total += n as u64;
                }
                let _ = socket.write_all(&total.to_be_bytes()).await;
            });
        }
    });
    TargetAddr::Ip(addr)
}

/// Waits (within [`LIMIT`]) until `counter` has moved and then stood
/// still for half a second: what feeds a stalled channel has filled it.
async fn until_full(counter: &AtomicU64, what: &str) {
    tokio::time::timeout(LIMIT, async {
        let mut last = 0;
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let now = counter.load(Ordering::Relaxed);
            if now > 0 && now == last {
                break;
            }
            last = now;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{what} never stopped"));
}

/// A program that stops reading one tunnel (a stalled `-L` or SOCKS
/// reader) once stalled every channel of the session: the client stopped
/// reading its transport. Its channel's credit now holds the data back at
/// the server, and the session reads on.
#[tokio::test(flavor = "multi_thread")]
async fn a_reader_that_stops_stalls_only_its_own_channel() {
    let written = Arc::new(AtomicU64::new(0));
    let source = endless_source(written.clone()).await;
    let server = TestServer::start_on(BACKEND, |options| options).await;
    let client = server.client().await;

    let mut stalled = client.open(&source).await.unwrap();
    until_full(&written, "the source").await;

    let mut bulk = vec![0u8; 32 * 1024 * 1024];
    let mut fast = tokio::time::timeout(LIMIT, async {
        let mut fast = client.open(&source).await.unwrap();
        fast.read_exact(&mut bulk).await.unwrap();
        fast
    })
    .await
    .expect("a channel waited behind another's stalled reader");
    assert!(bulk.iter().all(|byte| *byte == 0xa5));

    // The stalled channel lost nothing and goes on once read.
    let mut resumed = vec![0u8; 1024 * 1024];
    tokio::time::timeout(LIMIT, stalled.read_exact(&mut resumed))
        .await
        .expect("the stalled channel never resumed")
        .unwrap();
    assert!(resumed.iter().all(|byte| *byte == 0xa5));
    fast.shutdown().await.unwrap();
    drop((stalled, fast));
    client.disconnect().await;
    server.shutdown().await;
}

/// The server's side of the same: a target that stops reading once made
/// the server slow every channel of the session (it granted no window).
#[tokio::test(flavor = "multi_thread")]
async fn a_target_that_stops_reading_stalls_only_its_own_channel() {
    let hole = black_hole().await;
    let sink = counting_sink().await;
    let server = TestServer::start_on(BACKEND, |options| options).await;
    let client = server.client().await;

    let mut stalled = client.open(&hole).await.unwrap();
    let pushed = Arc::new(AtomicU64::new(0));
    let pushing = {
        let pushed = pushed.clone();
        tokio::spawn(async move {
            let block = vec![0x3c_u8; 64 * 1024];
            while stalled.write_all(&block).await.is_ok() {
                pushed.fetch_add(block.len() as u64, Ordering::Relaxed);
            }
        })
    };
    until_full(&pushed, "the push into the hole").await;

    let counted = tokio::time::timeout(LIMIT, async {
        let mut fast = client.open(&sink).await.unwrap();
        let block = vec![0x3c_u8; 1024 * 1024];
        for _ in 0..32 {
            fast.write_all(&block).await.unwrap();
        }
        fast.shutdown().await.unwrap();
        let mut count = [0u8; 8];
        fast.read_exact(&mut count).await.unwrap();
        u64::from_be_bytes(count)
    })
    .await
    .expect("a channel waited behind another's stalled target");
    assert_eq!(counted, 32 * 1024 * 1024);
    pushing.abort();
    client.disconnect().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_keys_are_refused_with_advice() {
    let server = TestServer::start_on(BACKEND, |options| options).await;
    let stranger = generate_ed25519("stranger").unwrap();
    let options = ConnectOptions::new(stranger, "tester");
    let error = Client::connect(server.transport.as_ref(), options)
        .await
        .err()
        .expect("stranger got in");
    assert!(matches!(error, Error::AuthRejected { .. }), "{error:?}");
    assert!(error.to_string().contains("authorized_keys"), "{error}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_host_key_pin_is_refused_naming_both_keys() {
    let server = TestServer::start_on(BACKEND, |options| options).await;
    let wrong = "SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU";
    let options = ConnectOptions::new(server.user_key.clone(), "tester").with_host_key(wrong);
    let error = Client::connect(server.transport.as_ref(), options)
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

#[tokio::test(flavor = "multi_thread")]
async fn without_a_pin_the_client_connects_and_reports_the_fingerprint() {
    let server = TestServer::start_on(BACKEND, |options| options).await;
    let options = ConnectOptions::new(server.user_key.clone(), "tester");
    let client = Client::connect(server.transport.as_ref(), options).await.unwrap();
    assert_eq!(client.server_fingerprint(), server.fingerprint);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn server_shutdown_ends_client_sessions() {
    let server = TestServer::start_on(BACKEND, |options| options).await;
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

#[tokio::test(flavor = "multi_thread")]
async fn unix_socket_targets_are_reached_with_direct_streamlocal() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("greeter.sock");
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        socket.write_all(b"hello over a unix socket").await.unwrap();
    });
    // Unix sockets are reached only where a rule names their path.
    let allowed_dir = format!("{}/*", dir.path().display());
    let server = TestServer::start_on(BACKEND, move |options| {
        let policy = ForwardingPolicy {
            rules: vec![ForwardRule::new(Verdict::Allow, TargetMatch::SocketPath(allowed_dir))],
            default: Verdict::Allow,
        };
        let auth = options.auth_config().clone().forwarding(policy);
        options.auth(auth)
    })
    .await;
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

#[tokio::test(flavor = "multi_thread")]
async fn remote_forwards_bring_server_side_connections_to_client_side_targets() {
    let TargetAddr::Ip(greeter_addr) = greeter(b"reached the client side").await else {
        unreachable!("greeter listens on an IP")
    };
    let server = TestServer::start_on(BACKEND, |options| options).await;
    let mut options = server.options();
    options.remote_forwards = vec![
        format!("0:127.0.0.1:{}", greeter_addr.port())
            .parse()
            .unwrap(),
    ];
    let client = Client::connect(server.transport.as_ref(), options).await.unwrap();
    let [forward] = client.remote_forward_ports()[..] else {
        panic!(
            "expected one remote forward, got {:?}",
            client.remote_forward_ports()
        )
    };
    assert_ne!(forward.port, 0, "the server's chosen port is reported");

    // A connection to the server-side port comes out at the greeter.
    let greeting = read_all_from_port(forward.port).await;
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

#[tokio::test(flavor = "multi_thread")]
async fn a_remote_forward_refused_for_a_port_in_use_is_granted_once_the_port_is_free() {
    let TargetAddr::Ip(greeter_addr) = greeter(b"the second session").await else {
        unreachable!("greeter listens on an IP")
    };
    let server = TestServer::start_on(BACKEND, |options| options).await;
    // The first session takes a port; the second asks for the same one.
    let first = {
        let mut options = server.options();
        options.remote_forwards = vec!["0:127.0.0.1:9".parse().unwrap()];
        Client::connect(server.transport.as_ref(), options).await.unwrap()
    };
    let [held] = first.remote_forward_ports()[..] else {
        panic!("the first session holds {:?}", first.remote_forward_ports())
    };
    let mut options = server.options();
    options.remote_forwards = vec![
        format!("{}:127.0.0.1:{}", held.port, greeter_addr.port())
            .parse()
            .unwrap(),
    ];
    let second = Client::connect(server.transport.as_ref(), options).await.unwrap();
    assert!(
        second.remote_forward_ports().is_empty(),
        "two sessions hold one port"
    );

    // Once the first lets go, the second is granted it without reconnecting.
    first.disconnect().await;
    tokio::time::timeout(LIMIT, first.closed()).await.unwrap();
    let granted = tokio::time::timeout(LIMIT, async {
        while second.remote_forward_ports().is_empty() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(granted.is_ok(), "the refused remote forward was never asked for again");
    assert_eq!(second.remote_forward_ports()[0].port, held.port);
    assert_eq!(read_all_from_port(held.port).await, b"the second session");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reload_refuses_new_logins_while_open_sessions_keep_working() {
    let server = TestServer::start_on(BACKEND, |options| options).await;
    let client = server.client().await;
    let target = greeter(b"still served").await;

    server.reload.reload(alknet::auth::AuthConfig::default());
    let refused = Client::connect(server.transport.as_ref(), server.options()).await;
    assert!(
        matches!(refused, Err(Error::AuthRejected { .. })),
        "a removed key still logs in"
    );
    assert_eq!(read_all(&client, &target).await, b"still served");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_forwarding_policy_decides_which_targets_open() {
    use alknet::auth::{ForwardRule, ForwardingPolicy, TargetMatch, Verdict};
    let allowed = greeter(b"allowed").await;
    let denied = greeter(b"denied").await;
    let denied_port = denied.port();
    let server = TestServer::start_on(BACKEND, |options| {
        let policy = ForwardingPolicy {
            rules: vec![
                ForwardRule::new(Verdict::Deny, TargetMatch::Cidr("127.0.0.0/8".parse().unwrap()))
                    .ports(denied_port..=denied_port),
            ],
            default: Verdict::Allow,
        };
        let auth = options.auth_config().clone().forwarding(policy);
        options.auth(auth)
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

/// A server whose policy is `rules` (default allow).
async fn server_with_policy(rules: Vec<ForwardRule>, default: Verdict) -> TestServer {
    TestServer::start_on(BACKEND, move |options| {
        let policy = ForwardingPolicy { rules, default };
        let auth = options.auth_config().clone().forwarding(policy);
        options.auth(auth)
    })
    .await
}

fn loopback_ranges() -> Vec<ForwardRule> {
    vec![
        ForwardRule::new(Verdict::Deny, TargetMatch::Cidr("127.0.0.0/8".parse().unwrap())),
        ForwardRule::new(Verdict::Deny, TargetMatch::Cidr("::1/128".parse().unwrap())),
    ]
}

async fn refused_kind(client: &Client, host: &str, port: u16) -> OpenErrorKind {
    match client.open(&TargetAddr::from_host_port(host, port)).await {
        Ok(_) => panic!("{host}:{port} opened"),
        Err(error) => error.kind(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn principal_rules_follow_what_the_server_authenticated_not_the_login_name() {
    let target = greeter(b"admins only").await;
    let mut rules = vec![
        ForwardRule::new(Verdict::Allow, TargetMatch::Cidr("127.0.0.0/8".parse().unwrap()))
            .principals(["admin"]),
    ];
    rules.extend(loopback_ranges());
    let server = server_with_policy(rules, Verdict::Allow).await;
    // A plain key typing "admin" as its login name is no admin.
    let options = ConnectOptions::new(server.user_key.clone(), "admin")
        .with_host_key(server.fingerprint.clone());
    let typed = Client::connect(server.transport.as_ref(), options).await.unwrap();
    assert_eq!(
        refused_kind(&typed, "127.0.0.1", target.port()).await,
        OpenErrorKind::NotAllowed
    );
    // The authorized_keys line names the principal: now whatever name is typed.
    let line = server.user_key.public_key().to_openssh().unwrap();
    let auth = alknet::auth::AuthConfig::new(
        alknet::auth::AuthorizedKeys::parse(&format!("{line} ops principals=admin")).unwrap(),
    )
    .forwarding(ForwardingPolicy {
        rules: {
            let mut rules = vec![
                ForwardRule::new(Verdict::Allow, TargetMatch::Cidr("127.0.0.0/8".parse().unwrap()))
                    .principals(["admin"]),
            ];
            rules.extend(loopback_ranges());
            rules
        },
        default: Verdict::Allow,
    });
    server.reload.reload(auth);
    let named = server.client().await;
    assert_eq!(read_all(&named, &target).await, b"admins only");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn every_spelling_of_a_denied_address_is_refused_and_unspecified_ones_never_dialled() {
    let target = greeter(b"loopback").await;
    let port = target.port();
    let open = TestServer::start_on(BACKEND, |options| options).await;
    let client = open.client().await;
    // Linux connects 0.0.0.0 to this host: never dialled, whatever the policy.
    for host in ["0.0.0.0", "0", "::", "[::]"] {
        assert_eq!(refused_kind(&client, host, port).await, OpenErrorKind::NotAllowed, "{host}");
    }
    open.shutdown().await;

    let server = server_with_policy(loopback_ranges(), Verdict::Allow).await;
    let client = server.client().await;
    for host in [
        "127.0.0.1",
        "2130706433",
        "0x7f.1",
        "0177.0.0.1",
        "127.1",
        "::ffff:127.0.0.1",
        "localhost",
        "::1",
    ] {
        assert_eq!(refused_kind(&client, host, port).await, OpenErrorKind::NotAllowed, "{host}");
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unix_sockets_need_a_rule_naming_their_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("private.sock");
    let _listener = tokio::net::UnixListener::bind(&path).unwrap();
    let server = TestServer::start_on(BACKEND, |options| options).await;
    let client = server.client().await;
    let refused = client.open_unix(&path).await.err().expect("socket opened");
    assert_eq!(refused.kind(), OpenErrorKind::NotAllowed);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn remote_forwards_follow_the_policy_and_the_per_session_cap() {
    let spec = |port: u16| format!("0:127.0.0.1:{port}").parse().unwrap();
    let denying = server_with_policy(Vec::new(), Verdict::Deny).await;
    let mut options = denying.options();
    options.remote_forwards = vec![spec(9)];
    let client = Client::connect(denying.transport.as_ref(), options).await.unwrap();
    assert!(
        client.remote_forward_ports().is_empty(),
        "default deny let a remote forward listen"
    );
    denying.shutdown().await;

    let capped = TestServer::start_on(BACKEND, |options| {
        let policy = ForwardingPolicy {
            rules: vec![ForwardRule::new(Verdict::Allow, TargetMatch::Any).for_listening()],
            default: Verdict::Deny,
        };
        let auth = options
            .auth_config()
            .clone()
            .forwarding(policy)
            .max_remote_forwards(2);
        options.auth(auth)
    })
    .await;
    let mut options = capped.options();
    options.remote_forwards = vec![spec(9), spec(10), spec(11)];
    let client = Client::connect(capped.transport.as_ref(), options).await.unwrap();
    assert_eq!(client.remote_forward_ports().len(), 2, "the cap is 2 per session");
    capped.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_routed_target_is_answered_by_its_own_sink() {
    use std::sync::Arc;
    struct Echo;
    #[async_trait::async_trait]
    impl alknet::ChannelSink for Echo {
        async fn handle(&self, channel: alknet::IncomingChannel) {
            let mut stream = channel.accept().await;
            let mut buffer = vec![0u8; 1024];
            while let Ok(n) = stream.read(&mut buffer).await {
                if n == 0 || stream.write_all(&buffer[..n]).await.is_err() {
                    break;
                }
            }
            let _ = stream.shutdown().await;
        }
    }
    let tunnelled = greeter(b"dialled as usual").await;
    let server = TestServer::start_on(BACKEND, |options| options.route("echo", 7, Arc::new(Echo))).await;
    let client = server.client().await;
    let mut echo = client
        .open(&TargetAddr::Domain("echo".into(), 7))
        .await
        .unwrap();
    echo.write_all(b"ping").await.unwrap();
    echo.shutdown().await.unwrap();
    let mut back = Vec::new();
    tokio::time::timeout(LIMIT, echo.read_to_end(&mut back))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(back, b"ping");
    assert_eq!(read_all(&client, &tunnelled).await, b"dialled as usual");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn channels_beyond_the_per_session_limit_are_refused() {
    let server =
        TestServer::start_on(BACKEND, |options| options.max_channels_per_session(2)).await;
    let client = server.client().await;
    let held = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = TargetAddr::Ip(held.local_addr().unwrap());
    let _first = client.open(&target).await.unwrap();
    let _second = client.open(&target).await.unwrap();
    assert!(client.open(&target).await.is_err(), "a third channel opened");
    drop(_first);
    // Closing one frees its place (once the server has seen the close).
    let reopened = tokio::time::timeout(LIMIT, async {
        loop {
            if client.open(&target).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(reopened.is_ok(), "a closed channel's place was never freed");
    server.shutdown().await;
}

/// russh forgets a channel its peer closed, but keeps one it closed itself
/// until the session ends. So a server leaves the closing of a tunnel that
/// ended both ways to its client, and tunnel after tunnel through one
/// session costs it nothing: here, its tasks come back to where they were
/// (a channel it closed itself would keep one, reading, for 10 s).
#[test]
fn a_server_keeps_nothing_of_tunnels_that_ended_both_ways() {
    let runtime = || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap()
    };
    let (server_runtime, client_runtime) = (runtime(), runtime());
    let server = server_runtime.block_on(TestServer::start_on(BACKEND, |options| options));
    let server_tasks = || server_runtime.metrics().num_alive_tasks();
    client_runtime.block_on(async {
        let echo = TargetAddr::Ip(streaming_echo().await);
        let client = server.client().await;
        let through_echo = || async {
            let mut stream = client.open(&echo).await.expect("open failed");
            stream.write_all(b"ping").await.unwrap();
            // Our EOF: the echo ends, and the server's side of the tunnel
            // ends both ways before ours.
            stream.shutdown().await.unwrap();
            let mut back = Vec::new();
            tokio::time::timeout(LIMIT, stream.read_to_end(&mut back))
                .await
                .expect("echo hung")
                .unwrap();
            assert_eq!(back, b"ping");
        };
        through_echo().await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let before = server_tasks();

        for _ in 0..20 {
            through_echo().await;
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while server_tasks() > before && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            server_tasks() <= before,
            "{} server tasks still held after 20 ended tunnels",
            server_tasks() - before
        );
        client.disconnect().await;
    });
    server_runtime.block_on(server.shutdown());
}

/// russh keeps each channel a side closed first until its session ends: a
/// reconnecting client moves to a fresh session after
/// `renew_after_tunnels` of them, its remote forward (same port) along
/// with it, while a tunnel still open finishes on the worn session, which
/// ends after it.
#[tokio::test(flavor = "multi_thread")]
async fn a_reconnecting_client_moves_to_a_fresh_session_and_the_worn_one_ends_after_its_last_tunnel()
 {
    let greeting = greeter(b"hello").await;
    let TargetAddr::Ip(greeter_addr) = greeting else {
        unreachable!("greeter listens on an IP")
    };
    let echo = TargetAddr::Ip(streaming_echo().await);
    let server = TestServer::start_on(BACKEND, |options| options).await;
    let remote_port = closed_port().port();
    let mut options = server.options();
    options.renew_after_tunnels = 5;
    options.remote_forwards = vec![
        format!("{remote_port}:127.0.0.1:{}", greeter_addr.port())
            .parse()
            .unwrap(),
    ];
    let client = alknet::ReconnectingClient::start(server.transport.clone(), options);
    let first = tokio::time::timeout(LIMIT, async {
        loop {
            if let Some(session) = client.current() {
                break session;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the first session never came up");

    let mut held = client.open(&echo).await.unwrap();
    held.write_all(b"ping").await.unwrap();
    let mut answer = [0u8; 4];
    held.read_exact(&mut answer).await.unwrap();
    for _ in 0..6 {
        assert_eq!(read_all(&client, &greeting).await, b"hello");
    }
    let fresh = tokio::time::timeout(LIMIT, async {
        loop {
            match client.current() {
                Some(session) if !Arc::ptr_eq(&session, &first) => break session,
                _ => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    })
    .await
    .expect("no fresh session after 6 finished tunnels");
    assert_eq!(fresh.server_fingerprint(), first.server_fingerprint());
    assert_eq!(read_all(&client, &greeting).await, b"hello");

    // The fresh session took over the remote forward's port.
    let [forward] = fresh.remote_forward_ports()[..] else {
        panic!("the fresh session holds {:?}", fresh.remote_forward_ports())
    };
    assert_eq!(forward.port, remote_port);
    let greeted = read_all_from_port(remote_port).await;
    assert_eq!(greeted, b"hello");

    // The tunnel opened before goes on, on the worn session, which ends
    // once that tunnel has.
    held.write_all(b"pong").await.unwrap();
    held.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"pong");
    assert!(!first.is_closed(), "the worn session ended under a tunnel");
    drop(held);
    tokio::time::timeout(LIMIT, first.closed())
        .await
        .expect("the worn session outlived its last tunnel");
    assert!(!fresh.is_closed());
    client.shutdown().await;
    server.shutdown().await;
}

/// `cancel-tcpip-forward` frees the port by its answer (a fresh session
/// can take it over at once) and, as with OpenSSH, leaves connections
/// already forwarded running.
#[tokio::test(flavor = "multi_thread")]
async fn a_cancelled_remote_forward_frees_its_port_at_once_and_keeps_its_connections() {
    let echo = streaming_echo().await;
    let server = TestServer::start_on(BACKEND, |options| options).await;
    let port = closed_port().port();
    let mut options = server.options();
    options.remote_forwards = vec![format!("{port}:{echo}").parse().unwrap()];
    let client = Client::connect(server.transport.as_ref(), options).await.unwrap();
    let mut forwarded = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let mut answer = [0u8; 4];
    forwarded.write_all(b"ping").await.unwrap();
    forwarded.read_exact(&mut answer).await.unwrap();

    client.cancel_remote_forward(0).await.unwrap();
    let rebound = TcpListener::bind(("127.0.0.1", port)).await;
    assert!(
        rebound.is_ok(),
        "the port was still taken after the cancel's answer: {rebound:?}"
    );
    forwarded.write_all(b"pong").await.unwrap();
    tokio::time::timeout(LIMIT, forwarded.read_exact(&mut answer))
        .await
        .expect("the forwarded connection stalled after the cancel")
        .unwrap();
    assert_eq!(&answer, b"pong");
    client.disconnect().await;
    server.shutdown().await;
}
