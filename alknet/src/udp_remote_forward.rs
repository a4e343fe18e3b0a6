//! Remote UDP forwards, client side (`-R [bind:]port:host:hostport/udp`):
//! a channel to `alknet-udp-listen:PORT` makes the server listen; each
//! datagram that arrives there comes framed with its sender, and is sent
//! to the target from a socket of that sender's own (so replies can be told
//! apart), whose replies go back framed with the same sender.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use alknet_proxy::TargetAddr;
use alknet_proxy::udp_frame::{Datagram, UDP_LISTEN_HOST, decode_datagram};
use alknet_proxy::udp_relay::{DropCounter, UDP_QUEUE, carry_association, offer};
use bytes::{Bytes, BytesMut};
use tokio::io::AsyncReadExt;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::debug;

use crate::Error;
use crate::flow::{Backlog, TunnelStream};

/// How long the server may take to say where it listens.
const ANNOUNCE_TIMEOUT: Duration = Duration::from_secs(30);
/// Senders served at once; past this, all their sockets are let go.
const MAX_SENDERS: usize = 1024;

/// Asks the server to listen for UDP on `bind_host:bind_port`; returns the
/// port it bound, and serves the forward to `target` until the session ends.
pub(crate) async fn start<H>(
    handle: &russh::client::Handle<H>,
    bind_host: &str,
    bind_port: u16,
    target: TargetAddr,
    backlog: Backlog,
) -> Result<u16, Error>
where
    H: russh::client::Handler,
{
    let channel = handle
        .channel_open_direct_tcpip(UDP_LISTEN_HOST, u32::from(bind_port), bind_host, 0)
        .await?;
    let mut stream = TunnelStream::new(channel, backlog);
    let mut received = BytesMut::new();
    let failed = |why: String| Error::RemoteUdpForward(why);
    let announced = tokio::time::timeout(ANNOUNCE_TIMEOUT, async {
        loop {
            match decode_datagram(&mut received) {
                Ok(Some(datagram)) => return Ok(datagram.addr.port()),
                Ok(None) => {}
                Err(error) => return Err(failed(error.to_string())),
            }
            match stream.read_buf(&mut received).await {
                Ok(0) => return Err(failed("the server closed it before listening".into())),
                Ok(_) => {}
                Err(error) => return Err(failed(error.to_string())),
            }
        }
    })
    .await
    .map_err(|_| failed("the server did not say where it listens".into()))??;
    let stream = alknet_stealth::Replay::new(received.to_vec(), stream);
    tokio::spawn(serve(Box::new(stream), target));
    Ok(announced)
}

/// Carries the forward: frames from the server go to `target` from each
/// sender's own socket; what the target answers goes back as that sender's.
async fn serve(stream: alknet_proxy::BoxStream, target: TargetAddr) {
    let drops = DropCounter::default();
    let (to_server, to_server_rx) = mpsc::channel(UDP_QUEUE);
    let (from_server, mut from_server_rx) = mpsc::channel::<Datagram>(UDP_QUEUE);
    let dispatch = async {
        let Some(target) = resolve(&target).await else {
            debug!("remote UDP forward: the target does not resolve");
            return;
        };
        let mut sockets: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
        let mut readers = JoinSet::new();
        while let Some(datagram) = from_server_rx.recv().await {
            let TargetAddr::Ip(sender) = datagram.addr else {
                continue;
            };
            let socket = match sockets.get(&sender) {
                Some(socket) => socket.clone(),
                None => {
                    if sockets.len() >= MAX_SENDERS {
                        sockets.clear();
                        readers.abort_all();
                    }
                    let Ok(socket) = sender_socket(target).await else {
                        drops.dropped("no local socket");
                        continue;
                    };
                    readers.spawn(answers(socket.clone(), sender, to_server.clone()));
                    sockets.insert(sender, socket.clone());
                    socket
                }
            };
            if socket.send(&datagram.payload).await.is_err() {
                drops.dropped("send to the target failed");
            }
        }
    };
    tokio::select! {
        () = carry_association(stream, to_server_rx, from_server, &drops, None) => {}
        () = dispatch => {}
    }
}

async fn resolve(target: &TargetAddr) -> Option<SocketAddr> {
    match target {
        TargetAddr::Ip(addr) => Some(*addr),
        TargetAddr::Domain(name, port) => tokio::net::lookup_host((name.as_str(), *port))
            .await
            .ok()?
            .next(),
    }
}

/// A socket connected to `target`, so only its answers arrive.
async fn sender_socket(target: SocketAddr) -> std::io::Result<Arc<UdpSocket>> {
    let any: SocketAddr = if target.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(any).await?;
    socket.connect(target).await?;
    Ok(Arc::new(socket))
}

/// Frames what the target answers on `socket` as `sender`'s.
async fn answers(socket: Arc<UdpSocket>, sender: SocketAddr, to_server: mpsc::Sender<Datagram>) {
    let drops = DropCounter::default();
    let mut buffer = vec![0u8; 65_536];
    loop {
        let len = match socket.recv(&mut buffer).await {
            Ok(len) => len,
            // An ICMP "port unreachable" arrives as an error on a connected
            // socket, once per message; the target may come up later.
            Err(_) => continue,
        };
        let datagram = Datagram {
            addr: TargetAddr::Ip(sender),
            payload: Bytes::copy_from_slice(&buffer[..len]),
        };
        if !offer(&to_server, datagram, &drops) {
            return;
        }
    }
}
