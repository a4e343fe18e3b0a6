//! Byte-pipe transports for alknet.
//!
//! A transport has exactly one job: produce a duplex byte stream. SSH runs
//! over that stream and never opens a socket itself, so the same SSH client
//! and server work over TCP, TLS or QUIC without changes.
//!
//! ```text
//!  client side                              server side
//!  Transport::connect() ──► BoxStream ═══► TransportAcceptor::accept()
//!                                           ──► (BoxStream, TransportInfo)
//! ```
//!
//! This crate holds the two traits, the [`TransportInfo`] that travels with
//! every accepted stream, and the implementations: TCP ([`TcpTransport`],
//! [`TcpAcceptor`]), TLS over TCP ([`TlsTransport`], [`TlsAcceptor`]) and,
//! with the `iroh` feature, iroh QUIC (`iroh::IrohTransport`,
//! `iroh::IrohAcceptor`: a server reached by its public key, through NATs).
//! It knows nothing about SSH.
//!
//! It also holds alknet's **connector** seam, [`StreamOpener`]: "open a
//! byte stream to [`TargetAddr`]", failing with an [`OpenError`] that says
//! why without naming the target. [`DirectConnector`] is the plain TCP
//! one (and [`connect_direct`] the one direct dialer behind it); the
//! outbound proxies (alknet-proxy), the SSH client (alknet) and a
//! transport going through a proxy ([`TcpTransport::with_connector`]) all
//! meet here. The trait lives in this permissively licensed crate so that
//! code implementing or consuming it links nothing GPL.
//!
//! ```text
//!  SOCKS5 / -L ──► StreamOpener ◄── DirectConnector | UpstreamProxy | ssh Client
//! ```
//!
//! # Example
//!
//! ```
//! use alknet_transport::{TcpAcceptor, TcpTransport, Transport, TransportAcceptor, TransportKind};
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), alknet_transport::TransportError> {
//! let acceptor = TcpAcceptor::bind("127.0.0.1:0").await?;
//! let transport = TcpTransport::new(acceptor.local_addr().to_string());
//!
//! let (mut client, (mut server, info)) = tokio::try_join!(transport.connect(), acceptor.accept())?;
//! assert_eq!(info.kind, TransportKind::Tcp);
//!
//! client.write_all(b"ping").await.unwrap();
//! let mut buf = [0u8; 4];
//! server.read_exact(&mut buf).await.unwrap();
//! assert_eq!(&buf, b"ping");
//! # Ok(())
//! # }
//! ```

#![forbid(unsafe_code)]

mod chunked;
mod connector;
mod direct;
mod error;
mod fallback;
#[cfg(feature = "iroh")]
pub mod iroh;
mod quick_ack;
mod target;
mod tcp;
mod tls;

use std::any::Any;
use std::fmt;
use std::net::SocketAddr;

use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncWrite};

pub use chunked::{ChunkIo, ChunkedStream};
pub use connector::{OpenError, OpenErrorKind, StreamOpener};
pub use direct::{DirectConnector, connect_direct, connect_direct_filtered, connect_unix};
pub use error::TransportError;
pub use fallback::{FALLBACK_HEAD_START, FallbackTransport};
/// What picks a TLS listener's certificate per handshake (rustls's trait).
pub use rustls::server::ResolvesServerCert as CertResolver;
pub use target::TargetAddr;
pub use tcp::{TcpAcceptor, TcpTransport, split_host_port};
pub use tls::{TlsAcceptor, TlsClientOptions, TlsTransport};

/// Any duplex byte stream a transport can hand out.
///
/// Blanket-implemented for every `AsyncRead + AsyncWrite + Unpin + Send`
/// type, so it never needs implementing by hand.
pub trait AsyncStream: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// The stream as a [`ChunkedStream`], when it is one (also inside a
    /// [`BoxStream`]): a relay then moves owned chunks through it rather
    /// than copying each byte.
    fn chunked(&mut self) -> Option<&mut ChunkedStream>;
}

impl<T> AsyncStream for T
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    fn chunked(&mut self) -> Option<&mut ChunkedStream> {
        let any: &mut dyn Any = self;
        if any.is::<ChunkedStream>() {
            return any.downcast_mut();
        }
        // A box's own blanket impl: look inside.
        any.downcast_mut::<BoxStream>()
            .and_then(|boxed| (**boxed).chunked())
    }
}

/// A type-erased duplex stream, as returned by every transport.
pub type BoxStream = Box<dyn AsyncStream>;

/// The client side of a transport: opens one stream to a fixed server.
#[async_trait]
pub trait Transport: Send + Sync + 'static {
    /// Opens a new stream to the server. Each call is a fresh connection.
    async fn connect(&self) -> Result<BoxStream, TransportError>;

    /// A short human-readable description, such as `tcp://example.com:22`.
    fn describe(&self) -> String;

    /// Releases what the transport holds between connections (an iroh
    /// endpoint says goodbye to its peers). Nothing for TCP and TLS.
    async fn close(&self) {}
}

/// The server side of a transport: hands out accepted streams.
#[async_trait]
pub trait TransportAcceptor: Send + Sync + 'static {
    /// Waits for the next incoming stream.
    ///
    /// An error concerns one incoming connection (or a transient condition
    /// such as running out of file descriptors); callers should log it and
    /// keep accepting.
    async fn accept(&self) -> Result<(BoxStream, TransportInfo), TransportError>;

    /// Where this acceptor listens, such as `tcp://0.0.0.0:22`.
    fn describe(&self) -> String;

    /// Stops listening gracefully, once no more connections are wanted.
    /// Nothing for TCP and TLS (dropping the listener is enough).
    async fn close(&self) {}

    /// Whether the streams this acceptor hands out are driven by tasks on
    /// the runtime it was bound on (an iroh endpoint's QUIC connections
    /// are), so that their sessions are best served on that runtime too:
    /// elsewhere, every packet wakes a thread across cores. False for
    /// TCP and TLS, whose sockets work from any runtime.
    fn driven_where_bound(&self) -> bool {
        false
    }
}

/// What is known about the far end of an accepted stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransportInfo {
    /// The peer's address, when the transport has one.
    pub remote_addr: Option<SocketAddr>,
    /// Which transport carried the stream.
    pub kind: TransportKind,
}

/// The kind of transport that produced a stream.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TransportKind {
    /// Plain TCP.
    Tcp,
    /// TLS over TCP.
    Tls,
    /// A QUIC stream from an iroh endpoint.
    Iroh {
        /// The peer's endpoint id.
        remote: String,
    },
}

impl fmt::Display for TransportKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransportKind::Tcp => f.write_str("tcp"),
            TransportKind::Tls => f.write_str("tls"),
            TransportKind::Iroh { .. } => f.write_str("iroh"),
        }
    }
}
