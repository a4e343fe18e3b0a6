//! The SOCKS5 server driven by a client speaking the wire protocol, with
//! the tunnel replaced by a direct TCP connect or a scripted opener.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use alknet_proxy::{
    BoxStream, DirectConnector, OpenError, OpenErrorKind, Socks5Config, Socks5Server, StreamOpener,
    TargetAddr,
};
use async_trait::async_trait;
use socks5_proto::handshake::{self, Method};
use socks5_proto::{Address, Command, Reply, Request, Response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// An opener that records what it was asked for and answers from a script.
struct ScriptedOpener {
    seen: Mutex<Vec<TargetAddr>>,
    outcome: Outcome,
}

#[derive(Clone, Copy)]
enum Outcome {
    Fail(OpenErrorKind),
    Hang,
    /// Succeed with an in-memory stream whose far end echoes.
    Echo,
}

#[async_trait]
impl StreamOpener for ScriptedOpener {
    async fn open(&self, target: &TargetAddr) -> Result<BoxStream, OpenError> {
        self.seen.lock().unwrap().push(target.clone());
        match self.outcome {
            Outcome::Fail(kind) => Err(OpenError::new(kind)),
            Outcome::Hang => std::future::pending().await,
            Outcome::Echo => {
                let (near, mut far) = tokio::io::duplex(4096);
                tokio::spawn(async move {
                    let (mut r, mut w) = tokio::io::split(&mut far);
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
                Ok(Box::new(near))
            }
        }
    }
}

fn scripted(outcome: Outcome) -> Arc<ScriptedOpener> {
    Arc::new(ScriptedOpener {
        seen: Mutex::new(Vec::new()),
        outcome,
    })
}

/// Starts a SOCKS5 server on a free loopback port; it stops with the test's runtime.
async fn start(opener: Arc<dyn StreamOpener>, config: Socks5Config) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = Socks5Server::with_config(opener, config);
    tokio::spawn(async move { server.serve(listener).await });
    addr
}

fn quick_config() -> Socks5Config {
    let mut config = Socks5Config::default();
    config.handshake_timeout = Duration::from_millis(500);
    config.open_timeout = Duration::from_millis(500);
    config
}

async fn greet(stream: &mut TcpStream) {
    handshake::Request::new(vec![Method::NONE])
        .write_to(stream)
        .await
        .unwrap();
    let response = handshake::Response::read_from(stream).await.unwrap();
    assert_eq!(response.method, Method::NONE);
}

/// Greets, sends one request, and returns the server's reply.
async fn request(proxy: SocketAddr, command: Command, address: Address) -> (TcpStream, Reply) {
    let mut stream = TcpStream::connect(proxy).await.unwrap();
    greet(&mut stream).await;
    Request::new(command, address)
        .write_to(&mut stream)
        .await
        .unwrap();
    let response = Response::read_from(&mut stream).await.unwrap();
    (stream, response.reply)
}

async fn echo_server(bind: &str) -> SocketAddr {
    let listener = TcpListener::bind(bind).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = stream.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

fn direct() -> Arc<dyn StreamOpener> {
    Arc::new(DirectConnector::new(Duration::from_secs(5)))
}

#[tokio::test]
async fn connect_to_ipv4_and_ipv6_targets() {
    let proxy = start(direct(), Socks5Config::default()).await;
    for bind in ["127.0.0.1:0", "[::1]:0"] {
        let target = echo_server(bind).await;
        let (mut stream, reply) =
            request(proxy, Command::Connect, Address::SocketAddress(target)).await;
        assert_eq!(reply, Reply::Succeeded, "{bind}");
        stream.write_all(b"hello through socks").await.unwrap();
        let mut buf = [0u8; 19];
        stream.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"hello through socks");
    }
}

#[tokio::test]
async fn domain_targets_reach_the_opener_unresolved() {
    let opener = scripted(Outcome::Echo);
    let proxy = start(opener.clone(), Socks5Config::default()).await;
    let name = b"service.internal.example".to_vec();
    let (mut stream, reply) =
        request(proxy, Command::Connect, Address::DomainAddress(name, 8443)).await;
    assert_eq!(reply, Reply::Succeeded);
    stream.write_all(b"x").await.unwrap();
    let mut one = [0u8; 1];
    stream.read_exact(&mut one).await.unwrap();
    assert_eq!(
        opener.seen.lock().unwrap().as_slice(),
        &[TargetAddr::Domain("service.internal.example".into(), 8443)]
    );
}

#[tokio::test]
async fn each_failure_kind_gets_its_reply_code_quickly() {
    let cases = [
        (OpenErrorKind::ConnectionRefused, Reply::ConnectionRefused),
        (OpenErrorKind::HostUnreachable, Reply::HostUnreachable),
        (OpenErrorKind::NetworkUnreachable, Reply::NetworkUnreachable),
        (OpenErrorKind::NotAllowed, Reply::ConnectionNotAllowed),
        (OpenErrorKind::TunnelDown, Reply::GeneralFailure),
        (OpenErrorKind::Other, Reply::GeneralFailure),
    ];
    for (kind, expected) in cases {
        let proxy = start(scripted(Outcome::Fail(kind)), Socks5Config::default()).await;
        let target = Address::SocketAddress("192.0.2.1:80".parse().unwrap());
        let (mut stream, reply) = request(proxy, Command::Connect, target).await;
        assert_eq!(reply, expected, "{kind:?}");
        // The server closes the connection after a failure reply.
        let mut rest = Vec::new();
        stream.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
    }
}

#[tokio::test]
async fn closed_port_is_connection_refused_via_direct_dial() {
    let closed = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let proxy = start(direct(), Socks5Config::default()).await;
    let (_stream, reply) = request(proxy, Command::Connect, Address::SocketAddress(closed)).await;
    assert_eq!(reply, Reply::ConnectionRefused);
}

#[tokio::test]
async fn a_hanging_open_is_answered_after_the_open_timeout() {
    let proxy = start(scripted(Outcome::Hang), quick_config()).await;
    let started = Instant::now();
    let target = Address::DomainAddress(b"blackhole.example".to_vec(), 80);
    let (_stream, reply) = request(proxy, Command::Connect, target).await;
    assert_eq!(reply, Reply::HostUnreachable);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn bind_is_not_supported() {
    let opener = scripted(Outcome::Echo);
    let proxy = start(opener.clone(), Socks5Config::default()).await;
    let (_stream, reply) = request(proxy, Command::Bind, Address::unspecified()).await;
    assert_eq!(reply, Reply::CommandNotSupported);
    assert!(opener.seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn udp_associate_relays_whole_datagrams_through_one_association_channel() {
    // The scripted channel echoes its bytes, so each framed datagram comes
    // back as a reply from the address it was sent to.
    let opener = scripted(Outcome::Echo);
    let proxy = start(opener.clone(), Socks5Config::default()).await;
    let mut control = TcpStream::connect(proxy).await.unwrap();
    greet(&mut control).await;
    Request::new(Command::Associate, Address::unspecified())
        .write_to(&mut control)
        .await
        .unwrap();
    let response = Response::read_from(&mut control).await.unwrap();
    assert_eq!(response.reply, Reply::Succeeded);
    let Address::SocketAddress(relay) = response.address else {
        panic!("the relay address is not an IP address");
    };
    assert_eq!(relay.ip(), proxy.ip());
    assert_eq!(
        opener.seen.lock().unwrap().as_slice(),
        [TargetAddr::Domain("alknet-udp".into(), 0)]
    );

    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let datagram = |frag: u8, payload: &[u8]| {
        let mut packet = vec![0, 0, frag, 3, 11];
        packet.extend_from_slice(b"dns.example");
        packet.extend_from_slice(&53u16.to_be_bytes());
        packet.extend_from_slice(payload);
        packet
    };
    // A fragment is dropped; whole datagrams of every size come back.
    socket
        .send_to(&datagram(1, b"fragment"), relay)
        .await
        .unwrap();
    for size in [0usize, 1, 1400, 65_000] {
        let payload: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        socket.send_to(&datagram(0, &payload), relay).await.unwrap();
        let mut reply = vec![0u8; 70_000];
        let (len, from) =
            tokio::time::timeout(Duration::from_secs(5), socket.recv_from(&mut reply))
                .await
                .expect("no reply")
                .unwrap();
        assert_eq!(from, relay);
        assert_eq!(&reply[..len], &datagram(0, &payload)[..], "size {size}");
    }
    // Closing the TCP connection ends the association.
    drop(control);
    tokio::time::sleep(Duration::from_millis(200)).await;
    socket.send_to(&datagram(0, b"late"), relay).await.unwrap();
    let mut reply = [0u8; 64];
    let late = tokio::time::timeout(Duration::from_millis(500), socket.recv_from(&mut reply)).await;
    assert!(late.is_err(), "the association outlived its TCP connection");
}

#[tokio::test]
async fn unknown_command_byte_is_not_supported() {
    let proxy = start(direct(), Socks5Config::default()).await;
    let mut stream = TcpStream::connect(proxy).await.unwrap();
    greet(&mut stream).await;
    stream
        .write_all(&[5, 0x09, 0, 1, 127, 0, 0, 1, 0, 80])
        .await
        .unwrap();
    let response = Response::read_from(&mut stream).await.unwrap();
    assert_eq!(response.reply, Reply::CommandNotSupported);
}

#[tokio::test]
async fn password_only_clients_are_told_no_method_is_acceptable() {
    let proxy = start(direct(), Socks5Config::default()).await;
    let mut stream = TcpStream::connect(proxy).await.unwrap();
    handshake::Request::new(vec![Method::PASSWORD])
        .write_to(&mut stream)
        .await
        .unwrap();
    let response = handshake::Response::read_from(&mut stream).await.unwrap();
    assert_eq!(response.method, Method::UNACCEPTABLE);
}

#[tokio::test]
async fn garbage_closes_only_that_connection() {
    let target = echo_server("127.0.0.1:0").await;
    let proxy = start(direct(), quick_config()).await;

    let mut garbage = TcpStream::connect(proxy).await.unwrap();
    garbage
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), garbage.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "garbage connection must be closed");

    let (_stream, reply) = request(proxy, Command::Connect, Address::SocketAddress(target)).await;
    assert_eq!(reply, Reply::Succeeded);
}

#[tokio::test]
async fn silent_clients_are_dropped_after_the_handshake_timeout() {
    let proxy = start(direct(), quick_config()).await;
    let mut silent = TcpStream::connect(proxy).await.unwrap();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), silent.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "silent client must be disconnected");
}

#[tokio::test]
async fn half_close_passes_through_the_proxy() {
    // A server that reads the whole request, then answers.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut request = Vec::new();
        stream.read_to_end(&mut request).await.unwrap();
        stream
            .write_all(format!("got {} bytes", request.len()).as_bytes())
            .await
            .unwrap();
    });
    let proxy = start(direct(), Socks5Config::default()).await;
    let (mut stream, reply) =
        request(proxy, Command::Connect, Address::SocketAddress(target)).await;
    assert_eq!(reply, Reply::Succeeded);
    stream.write_all(&[1u8; 5000]).await.unwrap();
    stream.shutdown().await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    assert_eq!(answer, "got 5000 bytes");
}

/// Optimistic clients send their first bytes right behind the request,
/// before the reply: none of them may be lost to the handshake's buffer.
#[tokio::test]
async fn data_sent_before_the_reply_reaches_the_target() {
    let proxy = start(direct(), Socks5Config::default()).await;
    let target = echo_server("127.0.0.1:0").await;
    let mut stream = TcpStream::connect(proxy).await.unwrap();
    let mut opening = Vec::new();
    handshake::Request::new(vec![Method::NONE])
        .write_to(&mut opening)
        .await
        .unwrap();
    Request::new(Command::Connect, Address::SocketAddress(target))
        .write_to(&mut opening)
        .await
        .unwrap();
    let early: Vec<u8> = (0..2000u32).map(|i| (i % 251) as u8).collect();
    opening.extend_from_slice(&early);
    // Greeting, request and data in one write, as one segment.
    stream.write_all(&opening).await.unwrap();

    let method = handshake::Response::read_from(&mut stream).await.unwrap();
    assert_eq!(method.method, Method::NONE);
    let response = Response::read_from(&mut stream).await.unwrap();
    assert_eq!(response.reply, Reply::Succeeded);
    let mut echoed = vec![0u8; early.len()];
    tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut echoed))
        .await
        .expect("the early bytes never came back")
        .unwrap();
    assert_eq!(echoed, early);
}
