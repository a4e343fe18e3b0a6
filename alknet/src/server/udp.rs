//! UDP over the session, server side. Associations as a sink: each
//! admitted `alknet-udp:0` channel carries
//! datagrams (`alknet_proxy::udp_frame`). Every datagram's target is judged
//! as a TCP target would be — the name or address by admission, each
//! resolved address by the address rules — and sent from this
//! association's own sockets; replies are taken only from addresses the
//! association has sent to, and framed back with their source. And remote
//! UDP forwards: an `alknet-udp-listen:PORT` channel binds a socket whose
//! datagrams travel to the client.

use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};

use alknet_auth::{AuthConfig, ChannelRequest, SessionGrant};
use alknet_proxy::udp_frame::{Datagram, encode_datagram};
use alknet_proxy::udp_relay::{DropCounter, UDP_IDLE, UDP_QUEUE, carry_association, offer};
use alknet_proxy::{OpenErrorKind, TargetAddr};
use async_trait::async_trait;
use bytes::Bytes;
use russh::server::{ChannelOpenHandle, Msg};
use russh::{Channel, ChannelOpenFailure};
use tokio::io::AsyncWriteExt;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tracing::{debug, info};

use super::forwards::{Protocol, server_bind_host};
use super::handler::SessionHandler;
use super::sink::{ChannelSink, IncomingChannel};
use crate::channel_failure::failure_for;
use crate::flow::TunnelStream;

/// Targets (and the address each resolved to) an association remembers;
/// past this the memory is cleared and names are looked up again.
const REMEMBERED_TARGETS: usize = 256;
/// Peers an association takes replies from; past this, the oldest
/// permission is forgotten with the rest.
const REMEMBERED_PEERS: usize = 4096;

/// The sink of `alknet-udp:0` channels.
#[derive(Debug, Default)]
pub(super) struct UdpSink;

#[async_trait]
impl ChannelSink for UdpSink {
    async fn handle(&self, channel: IncomingChannel) {
        let judge = Judge {
            auth: channel.auth.clone(),
            grant: channel.grant.clone(),
            decided: HashMap::new(),
        };
        let v4 = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).await.ok();
        let v6 = UdpSocket::bind((Ipv6Addr::UNSPECIFIED, 0)).await.ok();
        if v4.is_none() && v6.is_none() {
            channel.reject(OpenErrorKind::Other).await;
            return;
        }
        let stream = channel.accept().await;
        associate(stream, judge, v4, v6).await;
    }
}

/// Decides where a datagram may go, remembering each target's verdict.
struct Judge {
    auth: Arc<AuthConfig>,
    grant: Arc<SessionGrant>,
    decided: HashMap<TargetAddr, Option<SocketAddr>>,
}

impl Judge {
    /// The address to send to, if the target is allowed and resolves to
    /// an allowed address.
    async fn address(&mut self, target: &TargetAddr) -> Option<SocketAddr> {
        if let Some(decided) = self.decided.get(target) {
            return *decided;
        }
        let decided = self.decide(target).await;
        if self.decided.len() >= REMEMBERED_TARGETS {
            self.decided.clear();
        }
        self.decided.insert(target.clone(), decided);
        decided
    }

    async fn decide(&self, target: &TargetAddr) -> Option<SocketAddr> {
        let host = target.host();
        let request = ChannelRequest::Connect {
            host: &host,
            port: target.port(),
        };
        if let Err(refusal) = self.auth.admit(&self.grant, &request) {
            debug!(reason = %refusal, "UDP datagram refused");
            return None;
        }
        let allowed = |addr: &SocketAddr| self.auth.admit_address(&self.grant, *addr).is_ok();
        match target {
            TargetAddr::Ip(addr) => Some(*addr).filter(allowed),
            TargetAddr::Domain(name, port) => tokio::net::lookup_host((name.as_str(), *port))
                .await
                .ok()?
                .find(allowed),
        }
    }
}

async fn associate(
    stream: alknet_proxy::BoxStream,
    mut judge: Judge,
    v4: Option<UdpSocket>,
    v6: Option<UdpSocket>,
) {
    let drops = DropCounter::default();
    let sent_to: Mutex<HashSet<SocketAddr>> = Mutex::new(HashSet::new());
    let (to_client, to_client_rx) = mpsc::channel(UDP_QUEUE);
    let (from_client, mut from_client_rx) = mpsc::channel::<Datagram>(UDP_QUEUE);
    let outbound = async {
        while let Some(datagram) = from_client_rx.recv().await {
            let Some(addr) = judge.address(&datagram.addr).await else {
                drops.dropped("target refused or not resolved");
                continue;
            };
            let socket = if addr.is_ipv4() { &v4 } else { &v6 };
            let Some(socket) = socket else {
                drops.dropped("no socket of the target's family");
                continue;
            };
            {
                let mut peers = sent_to.lock().unwrap_or_else(PoisonError::into_inner);
                if peers.len() >= REMEMBERED_PEERS {
                    peers.clear();
                }
                peers.insert(addr);
            }
            if socket.send_to(&datagram.payload, addr).await.is_err() {
                drops.dropped("send failed");
            }
        }
    };
    tokio::select! {
        () = carry_association(stream, to_client_rx, from_client, &drops, Some(UDP_IDLE)) => {}
        () = outbound => {}
        () = take_replies(v4.as_ref(), &sent_to, &to_client, &drops) => {}
        () = take_replies(v6.as_ref(), &sent_to, &to_client, &drops) => {}
    }
}

/// Frames back what arrives on `socket` from a peer the association sent
/// to; everything else is dropped unseen.
async fn take_replies(
    socket: Option<&UdpSocket>,
    sent_to: &Mutex<HashSet<SocketAddr>>,
    to_client: &mpsc::Sender<Datagram>,
    drops: &DropCounter,
) {
    let Some(socket) = socket else {
        return std::future::pending().await;
    };
    let mut buffer = vec![0u8; 65_536];
    loop {
        let Ok((len, from)) = socket.recv_from(&mut buffer).await else {
            continue;
        };
        let known = sent_to
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(&from);
        if !known {
            continue;
        }
        let reply = Datagram {
            addr: TargetAddr::Ip(from),
            payload: Bytes::copy_from_slice(&buffer[..len]),
        };
        if !offer(to_client, reply, drops) {
            return;
        }
    }
}

impl SessionHandler {
    /// A remote UDP forward: a channel to `alknet-udp-listen:PORT` whose
    /// originator address is the address to bind. Judged and bound as a
    /// `tcpip-forward` is (loopback only without `--gateway-ports`, the
    /// policy's listen rules, the session's remote-forward limit).
    pub(super) async fn listen_udp(
        &mut self,
        channel: Channel<Msg>,
        bind: &str,
        port: u32,
        reply: ChannelOpenHandle,
        alknet_peer: bool,
        handle: russh::server::Handle,
    ) {
        let (Ok(requested), Some(grant)) = (u16::try_from(port), &self.grant) else {
            reply
                .reject(ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return;
        };
        let request = ChannelRequest::Listen {
            host: bind,
            port: requested,
            active: self.remote_forwards.len(),
        };
        if let Err(refusal) = self.auth.admit(grant, &request) {
            info!(remote_addr = %self.peer, port = requested, reason = %refusal, "remote UDP forward refused");
            reply
                .reject(failure_for(OpenErrorKind::NotAllowed, alknet_peer))
                .await;
            return;
        }
        let host = server_bind_host(bind, self.server.gateway_ports);
        let identity = grant.identity().id.clone();
        // As for TCP: an earlier session of this identity that answers
        // nothing gives the port up.
        let key = (Protocol::Udp, host.to_owned(), requested);
        let bound = self
            .bind_or_take_over(&key, &identity, || bind_udp(host, requested))
            .await;
        let socket = match bound {
            Ok(socket) => socket,
            Err(error) => {
                info!(remote_addr = %self.peer, port = requested, %error, "remote UDP forward refused");
                reply.reject(ChannelOpenFailure::ConnectFailed).await;
                return;
            }
        };
        let Ok(bound) = socket.local_addr() else {
            reply.reject(ChannelOpenFailure::ConnectFailed).await;
            return;
        };
        reply.accept().await;
        let stream = TunnelStream::new(channel, self.backlog.clone());
        let listening = self.held_listener(
            (Protocol::Udp, host.to_owned(), bound.port()),
            identity,
            handle,
            serve_udp_listener(Box::new(stream), socket, bound),
        );
        self.remote_forwards
            .insert((format!("udp/{bind}"), u32::from(bound.port())), listening);
        info!(remote_addr = %self.peer, listen = %bound, "remote UDP forward listening");
    }
}

/// Binds a remote UDP forward's socket; `::` is one dual-stack socket, as
/// for TCP forwards.
async fn bind_udp(host: &str, port: u16) -> std::io::Result<UdpSocket> {
    if host == "::" {
        match dual_stack_udp(port) {
            Ok(socket) => return Ok(socket),
            Err(error) => debug!(%error, "no IPv6: the UDP forward listens on IPv4 only"),
        }
        return UdpSocket::bind((Ipv4Addr::UNSPECIFIED, port)).await;
    }
    UdpSocket::bind((host, port)).await
}

fn dual_stack_udp(port: u16) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_only_v6(false)?;
    socket.set_nonblocking(true)?;
    socket.bind(&SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)).into())?;
    UdpSocket::from_std(socket.into())
}

/// Serves a remote UDP forward's listener over `stream`: the bound address
/// first, then every datagram that arrives, framed with its sender; frames
/// from the client go back to the senders they name, if those sent first.
async fn serve_udp_listener(
    mut stream: alknet_proxy::BoxStream,
    socket: UdpSocket,
    bound: SocketAddr,
) {
    let mut announcement = bytes::BytesMut::new();
    let bound = TargetAddr::Ip(bound);
    if encode_datagram(&bound, b"", &mut announcement).is_err()
        || stream.write_all(&announcement).await.is_err()
    {
        return;
    }
    let drops = DropCounter::default();
    let senders: Mutex<HashSet<SocketAddr>> = Mutex::new(HashSet::new());
    let (to_client, to_client_rx) = mpsc::channel(UDP_QUEUE);
    let (from_client, mut from_client_rx) = mpsc::channel::<Datagram>(UDP_QUEUE);
    let arriving = async {
        let mut buffer = vec![0u8; 65_536];
        loop {
            let Ok((len, from)) = socket.recv_from(&mut buffer).await else {
                continue;
            };
            {
                let mut known = senders.lock().unwrap_or_else(PoisonError::into_inner);
                if known.len() >= REMEMBERED_PEERS {
                    known.clear();
                }
                known.insert(from);
            }
            let datagram = Datagram {
                addr: TargetAddr::Ip(from),
                payload: Bytes::copy_from_slice(&buffer[..len]),
            };
            if !offer(&to_client, datagram, &drops) {
                return;
            }
        }
    };
    let answering = async {
        while let Some(answer) = from_client_rx.recv().await {
            let TargetAddr::Ip(to) = answer.addr else {
                continue;
            };
            let known = senders
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .contains(&to);
            if known {
                let _ = socket.send_to(&answer.payload, to).await;
            }
        }
    };
    tokio::select! {
        () = carry_association(stream, to_client_rx, from_client, &drops, None) => {}
        () = arriving => {}
        () = answering => {}
    }
}
