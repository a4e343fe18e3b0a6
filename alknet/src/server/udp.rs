//! UDP associations as a sink: each admitted `alknet-udp:0` channel carries
//! datagrams (`alknet_proxy::udp_frame`). Every datagram's target is judged
//! as a TCP target would be — the name or address by admission, each
//! resolved address by the address rules — and sent from this
//! association's own sockets; replies are taken only from addresses the
//! association has sent to, and framed back with their source.

use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};

use alknet_auth::{AuthConfig, ChannelRequest, SessionGrant};
use alknet_proxy::TargetAddr;
use alknet_proxy::udp_frame::Datagram;
use alknet_proxy::udp_relay::{DropCounter, UDP_QUEUE, carry_association, offer};
use async_trait::async_trait;
use bytes::Bytes;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tracing::debug;

use super::sink::{ChannelSink, IncomingChannel};

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
            channel.reject(alknet_proxy::OpenErrorKind::Other).await;
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
        () = carry_association(stream, to_client_rx, from_client, &drops) => {}
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
