//! The SOCKS5 server (RFC 1928, via socks5-proto): CONNECT, and UDP
//! ASSOCIATE on TCP listeners; every target reached through a
//! [`StreamOpener`].

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use socks5_proto::handshake::{self, Method};
use socks5_proto::{Address, Command, ProtocolError, Reply, Request, Response, UdpHeader};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;

use crate::udp_frame::Datagram;
use crate::udp_relay::{
    DropCounter, UDP_IDLE, UDP_QUEUE, carry_association, offer, open_association,
};
use crate::{OpenErrorKind, ProxyError, StreamOpener, TargetAddr, relay};

/// Room for a whole greeting and request (at most 3 + 262 bytes), with
/// some of what a client may send right after.
const HANDSHAKE_BUFFER: usize = 512;

/// The SOCKS5 reply code that reports an open failure (RFC 1928 §6).
fn socks_reply(kind: OpenErrorKind) -> Reply {
    match kind {
        OpenErrorKind::ConnectionRefused => Reply::ConnectionRefused,
        // A timeout means the host did not answer: what users and tools
        // (curl: "Host unreachable") understand best; a name that does not
        // resolve is a host that cannot be reached.
        OpenErrorKind::HostUnreachable
        | OpenErrorKind::NameNotResolved
        | OpenErrorKind::TimedOut => Reply::HostUnreachable,
        OpenErrorKind::NetworkUnreachable => Reply::NetworkUnreachable,
        OpenErrorKind::NotAllowed => Reply::ConnectionNotAllowed,
        _ => Reply::GeneralFailure,
    }
}

/// Timeouts of a [`Socks5Server`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Socks5Config {
    /// How long a client may take to send its greeting and request.
    pub handshake_timeout: Duration,
    /// How long opening the stream to the target may take before the client
    /// is told the host is unreachable.
    pub open_timeout: Duration,
}

impl Default for Socks5Config {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(10),
            open_timeout: Duration::from_secs(30),
        }
    }
}

/// A SOCKS5 server (RFC 1928) that sends every CONNECT through a
/// [`StreamOpener`].
///
/// Only the "no authentication" method is offered. CONNECT is served
/// everywhere; UDP ASSOCIATE (RFC 1928 §7) on connections accepted by
/// [`serve`](Self::serve): a UDP socket on the listener's address relays
/// the client's datagrams (fragments dropped) through one association
/// channel, for as long as the TCP connection stays open. BIND is answered
/// "command not supported". Domain
/// targets are handed to the opener unresolved. Failures to reach the target
/// are reported with the matching reply code (refused, host unreachable, …).
#[derive(Clone)]
pub struct Socks5Server {
    opener: Arc<dyn StreamOpener>,
    config: Socks5Config,
}

impl Socks5Server {
    /// A server with default timeouts.
    pub fn new(opener: Arc<dyn StreamOpener>) -> Self {
        Self::with_config(opener, Socks5Config::default())
    }

    /// A server with the given timeouts.
    pub fn with_config(opener: Arc<dyn StreamOpener>, config: Socks5Config) -> Self {
        Self { opener, config }
    }

    /// Accepts and serves clients until the returned future is dropped;
    /// dropping it also ends every connection it started.
    pub async fn serve(&self, listener: TcpListener) {
        crate::accept_loop::serve_each(&listener, "SOCKS5 listener", |stream| {
            let server = self.clone();
            async move {
                if let Err(error) = server.handle_tcp(stream).await {
                    tracing::debug!(%error, "SOCKS5 connection ended");
                }
            }
        })
        .await;
    }

    /// Serves one client connection from greeting to close (CONNECT only:
    /// a stream that is not a TCP connection has no address for UDP).
    pub async fn handle<S>(&self, client: S) -> Result<(), ProxyError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        self.serve_client(client, None).await
    }

    /// Serves one TCP client, UDP ASSOCIATE included.
    pub async fn handle_tcp(&self, client: TcpStream) -> Result<(), ProxyError> {
        let addresses = match (client.local_addr(), client.peer_addr()) {
            (Ok(local), Ok(peer)) => Some((local.ip(), peer.ip())),
            _ => None,
        };
        self.serve_client(client, addresses).await
    }

    /// `udp`: the listener's and the client's IP addresses, when UDP
    /// ASSOCIATE can be offered.
    async fn serve_client<S>(
        &self,
        client: S,
        udp: Option<(IpAddr, IpAddr)>,
    ) -> Result<(), ProxyError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        // socks5-proto reads the handshake a field at a time: buffered, it
        // costs one read instead of eight. Bytes a client sends early
        // (after its request, before our reply) stay in the buffer and are
        // relayed first; larger reads bypass the buffer once it is empty.
        let mut client = BufReader::with_capacity(HANDSHAKE_BUFFER, client);
        let asked = tokio::time::timeout(
            self.config.handshake_timeout,
            read_request(&mut client, udp.is_some()),
        )
        .await;
        let target = match asked {
            Ok(Ok(Asked::Connect(target))) => target,
            Ok(Ok(Asked::UdpAssociate)) => {
                let Some((local, peer)) = udp else {
                    return Ok(());
                };
                return self.udp_associate(client, local, peer).await;
            }
            Ok(Ok(Asked::Answered)) => return Ok(()),
            Ok(Err(error)) => return Err(error),
            Err(_) => return Err(ProxyError::HandshakeTimeout),
        };

        let opened =
            tokio::time::timeout(self.config.open_timeout, self.opener.open(&target)).await;
        let mut remote = match opened {
            Ok(Ok(remote)) => remote,
            Ok(Err(error)) => {
                send_reply(&mut client, socks_reply(error.kind())).await?;
                return Err(ProxyError::Open(error));
            }
            Err(_) => {
                let error = crate::OpenError::new(OpenErrorKind::TimedOut);
                send_reply(&mut client, socks_reply(error.kind())).await?;
                return Err(ProxyError::Open(error));
            }
        };
        send_reply(&mut client, Reply::Succeeded).await?;
        relay(&mut client, &mut remote).await?;
        Ok(())
    }

    /// RFC 1928 §7: a UDP socket beside the listener, one association
    /// channel, until the client's TCP connection closes (or the
    /// association idles out). Only datagrams from the client's IP address
    /// are taken; replies go to where its last datagram came from.
    async fn udp_associate<S>(
        &self,
        mut client: S,
        local: IpAddr,
        peer: IpAddr,
    ) -> Result<(), ProxyError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let socket = match UdpSocket::bind(SocketAddr::new(local, 0)).await {
            Ok(socket) => socket,
            Err(error) => {
                send_reply(&mut client, Reply::GeneralFailure).await?;
                return Err(ProxyError::Io(error));
            }
        };
        let bound = socket.local_addr()?;
        let channel = match open_association(self.opener.as_ref()).await {
            Ok(channel) => channel,
            Err(error) => {
                send_reply(&mut client, Reply::GeneralFailure).await?;
                return Err(ProxyError::Io(error));
            }
        };
        Response::new(Reply::Succeeded, Address::SocketAddress(bound))
            .write_to(&mut client)
            .await?;
        client.flush().await?;

        let peer = peer.to_canonical();
        let sender: Mutex<Option<SocketAddr>> = Mutex::new(None);
        let drops = DropCounter::default();
        let (to_channel, to_channel_rx) = mpsc::channel(UDP_QUEUE);
        let (replies, mut replies_rx) = mpsc::channel::<Datagram>(UDP_QUEUE);
        let from_client = async {
            let mut buffer = vec![0u8; 65_536];
            loop {
                let Ok((len, from)) = socket.recv_from(&mut buffer).await else {
                    continue;
                };
                if from.ip().to_canonical() != peer {
                    continue;
                }
                *sender.lock().unwrap_or_else(PoisonError::into_inner) = Some(from);
                match socks_datagram(&buffer[..len]).await {
                    Some(datagram) => {
                        if !offer(&to_channel, datagram, &drops) {
                            return;
                        }
                    }
                    None => drops.dropped("fragmented or malformed SOCKS5 datagram"),
                }
            }
        };
        let to_client = async {
            let mut packet = BytesMut::with_capacity(2048);
            while let Some(reply) = replies_rx.recv().await {
                let Some(to) = *sender.lock().unwrap_or_else(PoisonError::into_inner) else {
                    continue;
                };
                packet.clear();
                UdpHeader::new(0, socks_address(reply.addr)).write_to_buf(&mut packet);
                packet.extend_from_slice(&reply.payload);
                let _ = socket.send_to(&packet, to).await;
            }
        };
        let control_open = async {
            let mut ignored = [0u8; 256];
            while let Ok(1..) = client.read(&mut ignored).await {}
        };
        tokio::select! {
            () = carry_association(channel, to_channel_rx, replies, &drops, Some(UDP_IDLE)) => {}
            () = from_client => {}
            () = to_client => {}
            () = control_open => {}
        }
        Ok(())
    }
}

/// A SOCKS5 UDP request (RFC 1928 §7) as a datagram; `None` for a fragment
/// or a malformed header.
async fn socks_datagram(packet: &[u8]) -> Option<Datagram> {
    let mut rest = packet;
    let header = UdpHeader::read_from(&mut rest).await.ok()?;
    if header.frag != 0 {
        return None;
    }
    let addr = match header.address {
        Address::SocketAddress(addr) => TargetAddr::Ip(addr),
        Address::DomainAddress(name, port) => TargetAddr::Domain(
            String::from_utf8(name).ok().filter(|n| !n.is_empty())?,
            port,
        ),
    };
    Some(Datagram {
        addr,
        payload: Bytes::copy_from_slice(rest),
    })
}

fn socks_address(addr: TargetAddr) -> Address {
    match addr {
        TargetAddr::Ip(addr) => Address::SocketAddress(addr),
        TargetAddr::Domain(name, port) => Address::DomainAddress(name.into_bytes(), port),
    }
}

/// What a client asked for.
enum Asked {
    Connect(TargetAddr),
    UdpAssociate,
    /// Answered already (an unsupported command): the connection is done.
    Answered,
}

/// Runs the greeting and request; UDP ASSOCIATE only when `udp_offered`.
async fn read_request<S>(client: &mut S, udp_offered: bool) -> Result<Asked, ProxyError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let greeting = handshake::Request::read_from(client).await?;
    if !greeting.methods.contains(&Method::NONE) {
        handshake::Response::new(Method::UNACCEPTABLE)
            .write_to(client)
            .await?;
        client.flush().await?;
        return Err(ProxyError::NoAcceptableMethod);
    }
    handshake::Response::new(Method::NONE)
        .write_to(client)
        .await?;
    client.flush().await?;

    let request = match Request::read_from(client).await {
        Ok(request) => request,
        Err(socks5_proto::Error::Protocol(error)) => {
            let reply = match error {
                ProtocolError::InvalidCommand { .. } => Some(Reply::CommandNotSupported),
                ProtocolError::InvalidAddressTypeInRequest { .. } => {
                    Some(Reply::AddressTypeNotSupported)
                }
                _ => None,
            };
            if let Some(reply) = reply {
                send_reply(client, reply).await?;
            }
            return Err(ProxyError::Protocol(error.to_string()));
        }
        Err(error) => return Err(error.into()),
    };
    match request.command {
        Command::Connect => {}
        // The address it names is where it will send from, often 0.0.0.0:0;
        // datagrams are taken from the client's IP address whatever it says.
        Command::Associate if udp_offered => return Ok(Asked::UdpAssociate),
        _ => {
            send_reply(client, Reply::CommandNotSupported).await?;
            return Ok(Asked::Answered);
        }
    }
    match request.address {
        Address::SocketAddress(addr) => Ok(Asked::Connect(TargetAddr::Ip(addr))),
        Address::DomainAddress(name, port) => match String::from_utf8(name) {
            Ok(name) if !name.is_empty() => {
                Ok(Asked::Connect(TargetAddr::from_host_port(&name, port)))
            }
            _ => {
                send_reply(client, Reply::AddressTypeNotSupported).await?;
                Err(ProxyError::Protocol(
                    "the domain name is not valid text".to_owned(),
                ))
            }
        },
    }
}

async fn send_reply<S>(client: &mut S, reply: Reply) -> Result<(), ProxyError>
where
    S: AsyncWrite + Unpin,
{
    // The far side's bound address is unknown (and private): report 0.0.0.0:0.
    Response::new(reply, Address::unspecified())
        .write_to(client)
        .await?;
    client.flush().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_failures_map_to_distinct_socks_replies() {
        assert_eq!(
            socks_reply(OpenErrorKind::ConnectionRefused),
            Reply::ConnectionRefused
        );
        assert_eq!(
            socks_reply(OpenErrorKind::HostUnreachable),
            Reply::HostUnreachable
        );
        assert_eq!(
            socks_reply(OpenErrorKind::NameNotResolved),
            Reply::HostUnreachable
        );
        assert_eq!(socks_reply(OpenErrorKind::TimedOut), Reply::HostUnreachable);
        assert_eq!(
            socks_reply(OpenErrorKind::NetworkUnreachable),
            Reply::NetworkUnreachable
        );
        assert_eq!(
            socks_reply(OpenErrorKind::NotAllowed),
            Reply::ConnectionNotAllowed
        );
        assert_eq!(
            socks_reply(OpenErrorKind::TunnelDown),
            Reply::GeneralFailure
        );
        assert_eq!(socks_reply(OpenErrorKind::Other), Reply::GeneralFailure);
    }
}
