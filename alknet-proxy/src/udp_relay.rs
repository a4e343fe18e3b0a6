//! UDP associations carried over a channel to `alknet-udp:0`: the pump
//! between a channel and datagram queues ([`carry_association`]), and the
//! client's two ways in: `-L …/udp` forwards ([`serve_udp_forward`]) and
//! SOCKS5 `UDP ASSOCIATE` (used by [`Socks5Server`](crate::Socks5Server)).
//!
//! Datagrams are never queued without bound: when the tunnel is slower
//! than the sender, they are dropped (UDP's own semantics) and the drops
//! are counted in a debug log that names no address.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::udp_frame::{
    Datagram, UDP_SERVICE_HOST, UDP_SERVICE_PORT, decode_datagram, encode_datagram,
};
use crate::{BoxStream, StreamOpener, TargetAddr};

/// Datagrams waiting to enter (or leave) one association's channel; more
/// are dropped.
pub const UDP_QUEUE: usize = 256;
/// An association that carries no datagram either way for this long ends.
pub const UDP_IDLE: Duration = Duration::from_secs(60);
/// How long opening an association's channel may take.
const OPEN_TIMEOUT: Duration = Duration::from_secs(30);

/// The channel target of an association.
pub fn udp_service() -> TargetAddr {
    TargetAddr::Domain(UDP_SERVICE_HOST.to_owned(), UDP_SERVICE_PORT)
}

/// Counts datagrams dropped for want of room, logging at powers of two.
#[derive(Debug, Default)]
pub struct DropCounter(AtomicU64);

impl DropCounter {
    /// Counts one drop; `why` says which queue (never an address).
    pub fn dropped(&self, why: &'static str) {
        let count = self.0.fetch_add(1, Ordering::Relaxed) + 1;
        if count.is_power_of_two() {
            tracing::debug!(dropped = count, why, "UDP datagrams dropped");
        }
    }
}

/// Offers `datagram` to `queue`, dropping it when the queue is full.
/// `false` once the queue's receiver is gone.
pub fn offer(queue: &mpsc::Sender<Datagram>, datagram: Datagram, drops: &DropCounter) -> bool {
    match queue.try_send(datagram) {
        Ok(()) => true,
        Err(mpsc::error::TrySendError::Full(_)) => {
            drops.dropped("queue full");
            true
        }
        Err(mpsc::error::TrySendError::Closed(_)) => false,
    }
}

/// Pumps one association: datagrams from `to_channel` are framed onto
/// `channel`, frames read from it are offered to `from_channel`. Returns
/// when the channel ends or breaks, when `to_channel` closes, or after
/// `idle` (usually [`UDP_IDLE`]) without a datagram either way.
pub async fn carry_association(
    channel: BoxStream,
    mut to_channel: mpsc::Receiver<Datagram>,
    from_channel: mpsc::Sender<Datagram>,
    drops: &DropCounter,
    idle: Option<Duration>,
) {
    let (mut reader, mut writer) = tokio::io::split(channel);
    let last = Mutex::new(Instant::now());
    let moved = || *last.lock().unwrap_or_else(PoisonError::into_inner) = Instant::now();
    let up = async {
        let mut frames = BytesMut::with_capacity(64 * 1024);
        while let Some(first) = to_channel.recv().await {
            // Whatever else is waiting goes in the same write: one SSH
            // message for many small datagrams.
            frames.clear();
            let mut next = Some(first);
            while let Some(datagram) = next.take() {
                if encode_datagram(&datagram.addr, &datagram.payload, &mut frames).is_err() {
                    drops.dropped("too large for a frame");
                }
                if frames.len() < 32 * 1024 {
                    next = to_channel.try_recv().ok();
                }
            }
            if writer.write_all(&frames).await.is_err() {
                return;
            }
            moved();
        }
        let _ = writer.shutdown().await;
    };
    let down = async {
        let mut buffer = BytesMut::with_capacity(64 * 1024);
        loop {
            match reader.read_buf(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            loop {
                match decode_datagram(&mut buffer) {
                    Ok(Some(datagram)) => {
                        moved();
                        if !offer(&from_channel, datagram, drops) {
                            return;
                        }
                    }
                    Ok(None) => break,
                    Err(error) => {
                        tracing::debug!(%error, "UDP association ended: a broken frame");
                        return;
                    }
                }
            }
        }
    };
    let idle = async {
        let Some(idle) = idle else {
            return std::future::pending().await;
        };
        loop {
            let quiet_until = *last.lock().unwrap_or_else(PoisonError::into_inner) + idle;
            if Instant::now() >= quiet_until {
                return;
            }
            tokio::time::sleep_until(quiet_until).await;
        }
    };
    tokio::select! {
        () = up => {}
        () = down => {}
        () = idle => tracing::debug!("UDP association idle: closed"),
    }
}

/// Opens an association's channel through `opener`.
pub async fn open_association(opener: &dyn StreamOpener) -> io::Result<BoxStream> {
    match tokio::time::timeout(OPEN_TIMEOUT, opener.open(&udp_service())).await {
        Ok(Ok(channel)) => Ok(channel),
        Ok(Err(error)) => Err(io::Error::other(error.to_string())),
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "opening the UDP channel timed out",
        )),
    }
}

/// Serves a `-L [bind:]port:host:hostport/udp` forward on `socket`: each
/// local sender (address and port) gets an association of its own, whose
/// datagrams all go to `target` and whose replies come back to it.
pub async fn serve_udp_forward(
    socket: UdpSocket,
    target: TargetAddr,
    opener: Arc<dyn StreamOpener>,
) {
    let socket = Arc::new(socket);
    let drops = Arc::new(DropCounter::default());
    let mut senders: HashMap<SocketAddr, mpsc::Sender<Datagram>> = HashMap::new();
    let mut buffer = vec![0u8; 65_536];
    loop {
        let Ok((len, sender)) = socket.recv_from(&mut buffer).await else {
            // An ICMP error for an earlier reply; the socket carries on.
            continue;
        };
        let datagram = Datagram {
            addr: target.clone(),
            payload: Bytes::copy_from_slice(&buffer[..len]),
        };
        let queue = match senders.get(&sender).filter(|queue| !queue.is_closed()) {
            Some(queue) => queue.clone(),
            None => {
                if senders.len() >= 1024 {
                    senders.retain(|_, queue| !queue.is_closed());
                }
                let queue = start_forward_association(sender, &socket, &opener, &drops);
                senders.insert(sender, queue.clone());
                queue
            }
        };
        offer(&queue, datagram, &drops);
    }
}

/// The association of one local sender of a UDP forward; returns its queue.
fn start_forward_association(
    sender: SocketAddr,
    socket: &Arc<UdpSocket>,
    opener: &Arc<dyn StreamOpener>,
    drops: &Arc<DropCounter>,
) -> mpsc::Sender<Datagram> {
    let (to_channel, to_channel_rx) = mpsc::channel(UDP_QUEUE);
    let (replies, mut replies_rx) = mpsc::channel::<Datagram>(UDP_QUEUE);
    let (socket, opener, drops) = (socket.clone(), opener.clone(), drops.clone());
    tokio::spawn(async move {
        let channel = match open_association(opener.as_ref()).await {
            Ok(channel) => channel,
            Err(error) => {
                tracing::debug!(%error, "UDP forward: no channel");
                return;
            }
        };
        let deliver = async {
            while let Some(reply) = replies_rx.recv().await {
                let _ = socket.send_to(&reply.payload, sender).await;
            }
        };
        tokio::select! {
            () = carry_association(channel, to_channel_rx, replies, &drops, Some(UDP_IDLE)) => {}
            () = deliver => {}
        }
    });
    to_channel
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{OpenError, OpenErrorKind};
    use async_trait::async_trait;

    /// Opens "channels" that are served by a loopback echo of datagrams:
    /// every frame comes back with its address unchanged.
    #[derive(Debug)]
    struct EchoAssociations;

    #[async_trait]
    impl StreamOpener for EchoAssociations {
        async fn open(&self, target: &TargetAddr) -> Result<BoxStream, OpenError> {
            if *target != udp_service() {
                return Err(OpenError::new(OpenErrorKind::NotAllowed));
            }
            let (near, far) = tokio::io::duplex(1 << 20);
            tokio::spawn(async move {
                let (to_rx_tx, to_rx) = mpsc::channel(UDP_QUEUE);
                let (from_tx, mut from_rx) = mpsc::channel(UDP_QUEUE);
                let echo = async {
                    while let Some(datagram) = from_rx.recv().await {
                        let _ = to_rx_tx.send(datagram).await;
                    }
                };
                let drops = DropCounter::default();
                tokio::select! {
                    () = carry_association(Box::new(far), to_rx, from_tx, &drops, None) => {}
                    () = echo => {}
                }
            });
            Ok(Box::new(near))
        }
    }

    #[tokio::test]
    async fn a_udp_forward_gives_each_sender_its_replies() {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let forward = socket.local_addr().unwrap();
        let target = TargetAddr::Domain("echo.example".into(), 7);
        tokio::spawn(serve_udp_forward(
            socket,
            target,
            Arc::new(EchoAssociations),
        ));
        let mut clients = Vec::new();
        for index in 0..3u8 {
            let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            client.send_to(&[index; 100], forward).await.unwrap();
            clients.push(client);
        }
        for (index, client) in clients.iter().enumerate() {
            let mut reply = [0u8; 200];
            let (len, from) =
                tokio::time::timeout(Duration::from_secs(5), client.recv_from(&mut reply))
                    .await
                    .expect("no reply")
                    .unwrap();
            assert_eq!(from, forward);
            assert_eq!(&reply[..len], &[index as u8; 100][..]);
        }
    }
}
