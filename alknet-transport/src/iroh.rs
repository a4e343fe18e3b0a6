//! iroh QUIC: reach a server by its endpoint id (a public key), through
//! NATs via hole punching, or via a relay when that fails.
//!
//! One endpoint serves every session: each bidirectional QUIC stream a peer
//! opens (ALPN [`ALPN`]) is one SSH connection. The server's endpoint id is
//! derived from a 32-byte secret the caller supplies (alknet uses its SSH
//! host key; see [`derive_secret_key`]), so it is stable across restarts.
//!
//! Logging: iroh opens an INFO span around every UDP send, so a program that
//! logs at INFO pays for formatting its fields on each packet (about 4 % of
//! a server's CPU in bulk). Hold the `iroh` and `noq` targets to WARN, as the
//! `alknet` CLI does.

use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use iroh::endpoint::{Connection, QuicTransportConfig, RecvStream, SendStream, VarInt, presets};
use iroh::{Endpoint, EndpointAddr, EndpointId, RelayMode, RelayUrl, SecretKey};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{Mutex, OnceCell, mpsc};
use tracing::debug;

use crate::{
    BoxStream, Transport, TransportAcceptor, TransportError, TransportInfo, TransportKind,
};

mod receive_window;

use receive_window::ReceiveWindowTuner;

/// How long reaching a peer may take before the attempt counts as failed.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The ALPN of alknet's SSH-over-QUIC streams.
pub const ALPN: &[u8] = b"alknet-ssh";

/// Which relays an endpoint uses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum IrohRelay {
    /// n0's public relays, and n0's address lookup (publishing and
    /// resolving endpoint ids), as iroh does by default.
    #[default]
    Default,
    /// A self-hosted relay, and no n0 service at all: the server is
    /// reachable at its relay by its id, and clients name that same relay,
    /// so no lookup is needed.
    Custom(RelayUrl),
    /// No relay and no address lookup: peers need direct addresses (LAN,
    /// air-gapped networks, tests). Nothing is sent anywhere but to peers.
    Disabled,
}

impl std::str::FromStr for IrohRelay {
    type Err = TransportError;

    /// `default`, `none`, or a relay URL such as `https://relay.example.com`.
    fn from_str(text: &str) -> Result<Self, TransportError> {
        match text {
            "default" => Ok(IrohRelay::Default),
            "none" | "off" | "disabled" => Ok(IrohRelay::Disabled),
            url => url
                .parse::<RelayUrl>()
                .map(IrohRelay::Custom)
                .map_err(|error| TransportError::InvalidAddress {
                    address: url.to_owned(),
                    reason: format!("not a relay URL (or `none` / `default`): {error}"),
                }),
        }
    }
}

/// How an iroh endpoint is set up, on either side.
#[derive(Clone, Debug, Default)]
pub struct IrohOptions {
    /// Which relays to use.
    pub relay: IrohRelay,
    /// The UDP address to bind [default: all interfaces, IPv4 and IPv6,
    /// any port]. An unspecified address (`0.0.0.0:PORT`) still binds the
    /// other family on any port; a specific one binds only itself.
    pub bind: Option<SocketAddr>,
    /// An HTTP proxy (`http://host:port`, CONNECT) for relay traffic.
    /// QUIC itself is UDP and never proxied.
    pub proxy: Option<String>,
}

impl IrohOptions {
    /// Starts an endpoint with these options.
    async fn start_endpoint(
        &self,
        secret: Option<SecretKey>,
        alpns: Vec<Vec<u8>>,
    ) -> Result<Endpoint, TransportError> {
        let mut builder = match &self.relay {
            IrohRelay::Disabled => Endpoint::builder(presets::Minimal),
            IrohRelay::Default => Endpoint::builder(presets::N0),
            IrohRelay::Custom(url) => {
                Endpoint::builder(presets::Minimal).relay_mode(RelayMode::custom([url.clone()]))
            }
        };
        builder = builder.alpns(alpns).transport_config(windows());
        if let Some(secret) = secret {
            builder = builder.secret_key(secret);
        }
        if let Some(addr) = self.bind {
            // A specific address binds just that. An unspecified one
            // (0.0.0.0 or [::]) replaces only iroh's default for its own
            // family, so the other family stays bound too (dual stack; that
            // second bind may fail quietly where the family is missing).
            if !addr.ip().is_unspecified() {
                builder = builder.clear_ip_transports();
            }
            builder = builder
                .bind_addr(addr)
                .map_err(|error| TransportError::InvalidAddress {
                    address: addr.to_string(),
                    reason: error.to_string(),
                })?;
        }
        if let Some(proxy) = &self.proxy {
            let url = url::Url::parse(proxy).map_err(|error| TransportError::InvalidAddress {
                address: proxy.clone(),
                reason: format!("not a proxy URL: {error}"),
            })?;
            builder = builder.proxy_url(url);
        }
        builder.bind().await.map_err(|error| TransportError::Iroh {
            what: "cannot start the iroh endpoint",
            reason: error.to_string(),
        })
    }
}

/// Flow-control windows: each stream may hold a long path's window, the
/// connection starts with QUIC's usual one and is raised by its stream's
/// reader (see `receive_window`).
fn windows() -> QuicTransportConfig {
    QuicTransportConfig::builder()
        .stream_receive_window(VarInt::from_u32(receive_window::LONG_PATH as u32))
        .receive_window(VarInt::from_u32(receive_window::START as u32))
        .build()
}

/// An iroh secret key derived from `seed` (such as an SSH host key's
/// private bytes): SHA-256 over a fixed label and the seed. The label keeps
/// the two keys distinct, so the iroh key reveals nothing usable about the
/// SSH key, while the same seed always gives the same endpoint id.
pub fn derive_secret_key(seed: &[u8]) -> SecretKey {
    let mut hash = Sha256::new();
    hash.update(b"alknet iroh endpoint key v1\0");
    hash.update(seed);
    SecretKey::from_bytes(&hash.finalize().into())
}

/// Parses an endpoint id (as printed by `alknet serve`).
pub fn parse_endpoint_id(text: &str) -> Result<EndpointId, TransportError> {
    text.trim()
        .parse()
        .map_err(|error| TransportError::InvalidAddress {
            address: text.to_owned(),
            reason: format!("not an iroh endpoint id: {error}"),
        })
}

/// A QUIC stream pair as one duplex stream; holds its connection so the
/// connection lives as long as the stream, and raises the connection's
/// window when its reader shows the path is long.
struct IrohStream {
    recv: RecvStream,
    send: SendStream,
    connection: Connection,
    window: ReceiveWindowTuner,
}

impl IrohStream {
    fn new(connection: Connection, (send, recv): (SendStream, RecvStream)) -> Self {
        IrohStream {
            recv,
            send,
            connection,
            window: ReceiveWindowTuner::default(),
        }
    }

    /// The round trip of the path the connection sends on now.
    fn current_rtt(connection: &Connection) -> Option<Duration> {
        connection
            .paths()
            .iter()
            .find(|path| path.is_selected())
            .map(|path| path.rtt())
    }
}

impl AsyncRead for IrohStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let stream = &mut *self;
        let poll = Pin::new(&mut stream.recv).poll_read(cx, buf);
        let read = buf.filled().len() - before;
        if read > 0 {
            let connection = &stream.connection;
            let raise = stream
                .window
                .on_read(read, Instant::now(), || Self::current_rtt(connection));
            if let Some(window) = raise.and_then(|window| VarInt::from_u64(window).ok()) {
                debug!("iroh: a long path; the connection's receive window is raised");
                connection.set_receive_window(window);
            }
        }
        poll
    }
}

impl AsyncWrite for IrohStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.send)
            .poll_write(cx, buf)
            .map_err(std::io::Error::other)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.send).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.send).poll_shutdown(cx)
    }
}

/// The server side: one endpoint, every incoming stream a session.
pub struct IrohAcceptor {
    endpoint: Endpoint,
    streams: Mutex<mpsc::Receiver<(BoxStream, TransportInfo)>>,
}

impl IrohAcceptor {
    /// Starts an endpoint with `secret` (see [`derive_secret_key`]).
    pub async fn bind(options: &IrohOptions, secret: SecretKey) -> Result<Self, TransportError> {
        let endpoint = options
            .start_endpoint(Some(secret), vec![ALPN.to_vec()])
            .await?;
        let (found, streams) = mpsc::channel(64);
        tokio::spawn(accept_connections(endpoint.clone(), found));
        Ok(Self {
            endpoint,
            streams: Mutex::new(streams),
        })
    }

    /// The endpoint id clients dial.
    pub fn endpoint_id(&self) -> EndpointId {
        self.endpoint.id()
    }

    /// The UDP sockets the endpoint is bound to (direct addresses for
    /// clients without relay or lookup).
    pub fn bound_sockets(&self) -> Vec<SocketAddr> {
        self.endpoint.bound_sockets()
    }
}

async fn accept_connections(endpoint: Endpoint, found: mpsc::Sender<(BoxStream, TransportInfo)>) {
    while let Some(incoming) = endpoint.accept().await {
        let found = found.clone();
        tokio::spawn(async move {
            let connection = match incoming.await {
                Ok(connection) => connection,
                Err(error) => {
                    debug!(%error, "iroh: handshake failed");
                    return;
                }
            };
            let remote = connection.remote_id();
            // Every stream the peer opens is a session of its own.
            while let Ok(pair) = connection.accept_bi().await {
                let stream = IrohStream::new(connection.clone(), pair);
                let info = TransportInfo {
                    remote_addr: None,
                    kind: TransportKind::Iroh {
                        remote: remote.to_string(),
                    },
                };
                if found.send((Box::new(stream), info)).await.is_err() {
                    return;
                }
            }
        });
    }
}

#[async_trait]
impl TransportAcceptor for IrohAcceptor {
    async fn accept(&self) -> Result<(BoxStream, TransportInfo), TransportError> {
        self.streams
            .lock()
            .await
            .recv()
            .await
            .ok_or(TransportError::Iroh {
                what: "the iroh endpoint closed",
                reason: "no more connections".into(),
            })
    }

    fn describe(&self) -> String {
        format!("iroh://{}", self.endpoint.id())
    }

    async fn close(&self) {
        self.endpoint.close().await;
    }

    /// The endpoint's socket and every connection's driver run on the
    /// runtime that bound it.
    fn driven_where_bound(&self) -> bool {
        true
    }
}

/// The client side: dials one endpoint id, one QUIC connection and stream
/// per SSH connection, from one endpoint.
pub struct IrohTransport {
    options: IrohOptions,
    peer: EndpointAddr,
    connect_timeout: Duration,
    endpoint: OnceCell<Endpoint>,
}

impl IrohTransport {
    /// A transport to `peer`, trying `direct_addrs` (needed when relays
    /// and lookup are off) besides whatever lookup finds. With relays off
    /// and only loopback addresses (of one family) to try, the endpoint
    /// binds loopback too.
    pub fn new(mut options: IrohOptions, peer: EndpointId, direct_addrs: &[SocketAddr]) -> Self {
        let loopback_only = options.relay == IrohRelay::Disabled
            && !direct_addrs.is_empty()
            && direct_addrs
                .iter()
                .all(|addr| addr.ip().is_loopback() && addr.is_ipv4() == direct_addrs[0].is_ipv4());
        if options.bind.is_none() && loopback_only {
            options.bind = Some(match direct_addrs[0] {
                SocketAddr::V4(_) => (std::net::Ipv4Addr::LOCALHOST, 0).into(),
                SocketAddr::V6(_) => (std::net::Ipv6Addr::LOCALHOST, 0).into(),
            });
        }
        let mut addr = EndpointAddr::new(peer);
        for direct in direct_addrs {
            addr = addr.with_ip_addr(*direct);
        }
        if let IrohRelay::Custom(url) = &options.relay {
            addr = addr.with_relay_url(url.clone());
        }
        Self {
            options,
            peer: addr,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            endpoint: OnceCell::new(),
        }
    }

    /// Gives up reaching the peer after `timeout` (default 10 s).
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    async fn endpoint(&self) -> Result<&Endpoint, TransportError> {
        self.endpoint
            .get_or_try_init(|| self.options.start_endpoint(None, Vec::new()))
            .await
    }

    /// A fresh QUIC connection. Not reused across SSH sessions: after a
    /// server restart the old one would look alive until QUIC's idle
    /// timeout, delaying the reconnection by that much.
    async fn connection(&self) -> Result<Connection, TransportError> {
        let endpoint = self.endpoint().await?;
        endpoint
            .connect(self.peer.clone(), ALPN)
            .await
            .map_err(|error| TransportError::Iroh {
                what: "cannot reach the iroh endpoint",
                reason: error.to_string(),
            })
    }
}

#[async_trait]
impl Transport for IrohTransport {
    async fn connect(&self) -> Result<BoxStream, TransportError> {
        let attempt = async {
            let connection = self.connection().await?;
            let pair = connection
                .open_bi()
                .await
                .map_err(|error| TransportError::Iroh {
                    what: "cannot open a stream to the iroh endpoint",
                    reason: error.to_string(),
                })?;
            Ok(Box::new(IrohStream::new(connection, pair)) as BoxStream)
        };
        tokio::time::timeout(self.connect_timeout, attempt)
            .await
            .unwrap_or_else(|_| {
                Err(TransportError::Timeout {
                    server: self.describe(),
                    after: self.connect_timeout,
                })
            })
    }

    fn describe(&self) -> String {
        format!("iroh://{}", self.peer.id)
    }

    async fn close(&self) {
        if let Some(endpoint) = self.endpoint.get() {
            endpoint.close().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_derived_key_is_stable_and_depends_on_the_seed() {
        let a = derive_secret_key(&[1; 32]);
        assert_eq!(a.public(), derive_secret_key(&[1; 32]).public());
        assert_ne!(a.public(), derive_secret_key(&[2; 32]).public());
        // Not the seed itself used as a key.
        assert_ne!(a.to_bytes(), [1; 32]);
    }

    #[test]
    fn relay_choices_parse() {
        assert_eq!("none".parse::<IrohRelay>().unwrap(), IrohRelay::Disabled);
        assert_eq!("default".parse::<IrohRelay>().unwrap(), IrohRelay::Default);
        assert!(matches!(
            "https://relay.example.com".parse::<IrohRelay>().unwrap(),
            IrohRelay::Custom(_)
        ));
        assert!("not a url".parse::<IrohRelay>().is_err());
    }

    #[test]
    fn endpoint_ids_round_trip_and_garbage_is_an_error() {
        let id = derive_secret_key(b"x").public();
        assert_eq!(parse_endpoint_id(&id.to_string()).unwrap(), id);
        assert!(parse_endpoint_id("nonsense").is_err());
        assert!(parse_endpoint_id("").is_err());
    }
}
