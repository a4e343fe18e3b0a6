//! UDP through the session: SOCKS5 UDP ASSOCIATE (a DNS query answered by
//! dnsmasq, and a thousand datagrams of mixed sizes), `-L …/udp`, and the
//! forwarding policy judging each datagram.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::process::Command;
use std::time::Duration;

use xtask::{
    AlknetClient, AlknetServer, Spawned, UdpEcho, VanishingLink, Workdir, free_tcp_and_udp_port,
    free_udp_port, require_tool,
};

use crate::client_behind;

const REPLY_WAIT: Duration = Duration::from_secs(5);

/// A SOCKS5 UDP association made by hand (RFC 1928 §7): the TCP connection
/// that holds it, and the relay's address.
struct SocksUdp {
    _control: TcpStream,
    relay: SocketAddr,
    socket: UdpSocket,
}

impl SocksUdp {
    fn associate(proxy: SocketAddr) -> Self {
        let mut control = TcpStream::connect(proxy).unwrap();
        control.set_read_timeout(Some(REPLY_WAIT)).unwrap();
        control.write_all(&[5, 1, 0]).unwrap();
        let mut chosen = [0u8; 2];
        control.read_exact(&mut chosen).unwrap();
        assert_eq!(chosen, [5, 0]);
        control.write_all(&[5, 3, 0, 1, 0, 0, 0, 0, 0, 0]).unwrap();
        let mut reply = [0u8; 10];
        control.read_exact(&mut reply).unwrap();
        assert_eq!(&reply[..4], &[5, 0, 0, 1], "UDP ASSOCIATE refused");
        let ip = Ipv4Addr::new(reply[4], reply[5], reply[6], reply[7]);
        let relay = SocketAddr::from((ip, u16::from_be_bytes([reply[8], reply[9]])));
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_read_timeout(Some(REPLY_WAIT)).unwrap();
        Self {
            _control: control,
            relay,
            socket,
        }
    }

    fn send(&self, to: SocketAddr, payload: &[u8]) {
        let SocketAddr::V4(to) = to else {
            panic!("IPv4 targets only here");
        };
        let mut packet = vec![0, 0, 0, 1];
        packet.extend_from_slice(&to.ip().octets());
        packet.extend_from_slice(&to.port().to_be_bytes());
        packet.extend_from_slice(payload);
        self.socket.send_to(&packet, self.relay).unwrap();
    }

    /// The next reply's source and payload, if one comes in time.
    fn receive(&self) -> Option<(SocketAddr, Vec<u8>)> {
        let mut buffer = vec![0u8; 65_536];
        let (len, from) = self.socket.recv_from(&mut buffer).ok()?;
        assert_eq!(from, self.relay);
        let packet = &buffer[..len];
        assert_eq!(&packet[..4], &[0, 0, 0, 1], "reply header");
        let ip = Ipv4Addr::new(packet[4], packet[5], packet[6], packet[7]);
        let source = SocketAddr::from((ip, u16::from_be_bytes([packet[8], packet[9]])));
        Some((source, packet[10..].to_vec()))
    }
}

/// A DNS query for `name`'s A record, with `id`.
fn dns_query(id: u16, name: &str) -> Vec<u8> {
    let mut query = id.to_be_bytes().to_vec();
    query.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        query.push(label.len() as u8);
        query.extend_from_slice(label.as_bytes());
    }
    query.extend_from_slice(&[0, 0, 1, 0, 1]);
    query
}

/// dnsmasq answering `tunnel.test` with 10.1.2.3, on a loopback port. It
/// listens on TCP as well as UDP; should another test take the port between
/// our check and dnsmasq's bind, it tries another (a few times).
fn dnsmasq(dir: &Workdir) -> (Spawned, SocketAddr) {
    require_tool("dnsmasq").unwrap();
    let mut last_log = String::new();
    for _ in 0..5 {
        let port = free_tcp_and_udp_port().unwrap();
        let mut command = Command::new("dnsmasq");
        command.args([
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            "--listen-address=127.0.0.1",
            "--address=/tunnel.test/10.1.2.3",
            "--user=root",
            "--pid-file=",
            "--log-facility=-",
        ]);
        command.arg(format!("--port={port}"));
        let process = Spawned::start("dnsmasq", dir.path(), command).unwrap();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        // Ready when it answers directly.
        let probe = UdpSocket::bind("127.0.0.1:0").unwrap();
        probe
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let ready = (0..50).any(|_| {
            let _ = probe.send_to(&dns_query(1, "tunnel.test"), addr);
            let mut answer = [0u8; 512];
            probe.recv_from(&mut answer).is_ok()
                || process.stderr().contains("Address already in use")
        });
        last_log = process.stderr();
        if ready && !last_log.contains("Address already in use") {
            return (process, addr);
        }
    }
    panic!("dnsmasq did not answer: {last_log}");
}

#[test]
fn a_dns_query_through_socks5_udp_is_answered_by_dnsmasq() {
    let dir = Workdir::new().unwrap();
    let (_dns, dns_addr) = dnsmasq(&dir);
    let server = AlknetServer::start(&dir, &[]).unwrap();
    let client = AlknetClient::start(&dir, server.port, &server.user_key, &[]).unwrap();
    let association = SocksUdp::associate(client.socks_addr);
    association.send(dns_addr, &dns_query(0x4a4b, "tunnel.test"));
    let (source, answer) = association
        .receive()
        .expect("no DNS answer through the tunnel");
    assert_eq!(source, dns_addr);
    assert_eq!(&answer[..2], &[0x4a, 0x4b], "the answer's id");
    assert_eq!(answer[3] & 0x0f, 0, "RCODE");
    assert_eq!(u16::from_be_bytes([answer[6], answer[7]]), 1, "one answer");
    assert!(answer.ends_with(&[10, 1, 2, 3]), "{answer:?}");
    // Nothing about it in the logs.
    for log in [server.log(), client.log()] {
        assert!(!log.contains("tunnel.test") && !log.contains(&dns_addr.port().to_string()));
    }
}

#[test]
fn a_thousand_datagrams_of_mixed_sizes_arrive_intact() {
    let dir = Workdir::new().unwrap();
    let echo = UdpEcho::start();
    let server = AlknetServer::start(&dir, &[]).unwrap();
    let forward = format!("127.0.0.1:0:127.0.0.1:{}/udp", echo.addr().port());
    let client =
        AlknetClient::start(&dir, server.port, &server.user_key, &["-L", &forward]).unwrap();
    let association = SocksUdp::associate(client.socks_addr);
    // SOCKS5's header takes 10 of IPv4's 65 507 bytes; -L …/udp carries
    // the largest payload whole.
    let sizes = |index: usize, largest: usize| match index % 5 {
        0 => 0,
        1 => 1,
        2 => 512 + index,
        3 => 1400 * (1 + index % 7),
        _ => largest - index % 3,
    };
    let mut corrupted = 0;
    let mut lost = 0;
    for index in 0..1000 {
        let size = sizes(index, 65_497);
        let payload: Vec<u8> = (0..size).map(|i| ((i + index) % 251) as u8).collect();
        association.send(echo.addr(), &payload);
        match association.receive() {
            Some((source, echoed)) => {
                assert_eq!(source, echo.addr());
                corrupted += usize::from(echoed != payload);
            }
            None => lost += 1,
        }
    }
    assert_eq!(corrupted, 0, "corrupted datagrams through SOCKS5");
    assert_eq!(
        lost, 0,
        "lost datagrams through SOCKS5 on loopback in lock-step"
    );

    let local = client.forward_addr(1).unwrap();
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(REPLY_WAIT)).unwrap();
    for index in 0..200 {
        let size = sizes(index, 65_507);
        let payload: Vec<u8> = (0..size).map(|i| ((i * 7 + index) % 253) as u8).collect();
        socket.send_to(&payload, local).unwrap();
        let mut buffer = vec![0u8; 65_536];
        let (len, from) = socket
            .recv_from(&mut buffer)
            .expect("no echo through -L …/udp");
        assert_eq!(from, local);
        assert!(
            buffer[..len] == payload[..],
            "datagram {index} of {size} bytes changed"
        );
    }
}

#[test]
fn the_policy_judges_every_datagram() {
    let dir = Workdir::new().unwrap();
    let allowed = UdpEcho::start();
    let denied = UdpEcho::start();
    let policy = dir.join("policy.toml");
    std::fs::write(
        &policy,
        format!(
            "default = \"allow\"\n[[rule]]\naction = \"deny\"\ncidr = \"127.0.0.0/8\"\nports = \"{}\"\n",
            denied.addr().port()
        ),
    )
    .unwrap();
    let policy = policy.display().to_string();
    let server = AlknetServer::start(&dir, &["--forward-policy", &policy]).unwrap();
    let client = AlknetClient::start(&dir, server.port, &server.user_key, &[]).unwrap();
    let association = SocksUdp::associate(client.socks_addr);
    association.send(denied.addr(), b"to the denied port");
    association.send(allowed.addr(), b"to the allowed port");
    let (source, payload) = association
        .receive()
        .expect("the allowed echo did not answer");
    assert_eq!(
        (source, payload.as_slice()),
        (allowed.addr(), &b"to the allowed port"[..])
    );
    association
        .socket
        .set_read_timeout(Some(Duration::from_millis(700)))
        .unwrap();
    assert!(
        association.receive().is_none(),
        "a datagram reached a denied target"
    );
}

#[test]
fn a_remote_udp_forward_reaches_a_target_on_the_client_side() {
    let dir = Workdir::new().unwrap();
    let echo = UdpEcho::start();
    let server = AlknetServer::start(&dir, &[]).unwrap();
    let forward = format!("127.0.0.1:0:127.0.0.1:{}/udp", echo.addr().port());
    let client =
        AlknetClient::start(&dir, server.port, &server.user_key, &["-R", &forward]).unwrap();
    let port = xtask::wait_until("the remote UDP forward", Duration::from_secs(20), || {
        client.remote_forward_port(1).ok()
    })
    .unwrap();
    let listening = SocketAddr::from(([127, 0, 0, 1], port));
    // Two senders on the server's side, each answered on its own.
    let senders: Vec<UdpSocket> = (0..2)
        .map(|_| {
            let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
            socket.set_read_timeout(Some(REPLY_WAIT)).unwrap();
            socket
        })
        .collect();
    for round in 0..20u8 {
        for (index, socket) in senders.iter().enumerate() {
            let payload = vec![round ^ index as u8; 100 + 1000 * usize::from(round)];
            socket.send_to(&payload, listening).unwrap();
            let mut buffer = vec![0u8; 65_536];
            let (len, from) = socket
                .recv_from(&mut buffer)
                .expect("no echo through -R …/udp");
            assert_eq!(from, listening);
            assert!(
                buffer[..len] == payload[..],
                "round {round}, sender {index}"
            );
        }
    }
}

/// Whether a datagram sent to `listening` comes back (from an echo).
fn echoes_through(listening: SocketAddr) -> bool {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    let payload = b"are you there";
    if socket.send_to(payload, listening).is_err() {
        return false;
    }
    let mut buffer = [0u8; 64];
    matches!(socket.recv_from(&mut buffer), Ok((len, _)) if buffer[..len] == payload[..])
}

#[test]
fn a_fixed_remote_udp_forward_comes_back_soon_after_the_network_vanished_under_it() {
    // As for TCP (see reconnect.rs): the old session, silent, holds the
    // port until the new session's request ends it.
    let dir = Workdir::new().unwrap();
    let echo = UdpEcho::start();
    let server = AlknetServer::start(&dir, &[]).unwrap();
    let link = VanishingLink::start(([127, 0, 0, 1], server.port).into()).unwrap();
    let port = free_udp_port().unwrap();
    let forward = format!("127.0.0.1:{port}:127.0.0.1:{}/udp", echo.addr().port());
    let client = client_behind(&dir, &server, &link, &forward);
    let listening = SocketAddr::from(([127, 0, 0, 1], port));
    let limit = Duration::from_secs(45);
    xtask::wait_until("the remote UDP forward", limit, || {
        echoes_through(listening).then_some(())
    })
    .unwrap();

    link.vanish();
    xtask::wait_until("a second session", limit, || {
        (client.log().matches(" connected server=").count() >= 2).then_some(())
    })
    .unwrap();
    // The server's own keepalives would take about two minutes.
    let back = xtask::wait_until("the -R …/udp port to echo again", limit, || {
        echoes_through(listening).then_some(())
    });
    back.unwrap_or_else(|e| panic!("{e}\nserver log:\n{}", server.log()));
    let log = server.log();
    assert!(log.contains("answers nothing: ending it"), "{log}");
}
