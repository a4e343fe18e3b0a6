//! Plain TCP: the client transport (direct or through a [`StreamOpener`]
//! such as an outbound proxy) and the listening acceptor.

use crate::quick_ack::QuickAckStream;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::BufReader;
use tokio::net::{TcpListener, TcpStream};

use crate::{
    BoxStream, OpenErrorKind, StreamOpener, TargetAddr, Transport, TransportAcceptor,
    TransportError, TransportInfo, TransportKind, connect_direct,
};

/// How long [`TcpTransport`] waits for a server by default.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Read-ahead on a session's socket. SSH reads each packet's 4-byte length
/// and then its rest: without it, two `recvfrom` per packet (and a
/// quick-ACK each on the client), when the small packets of opening a
/// tunnel arrive together. Reads larger than this skip it, so bulk data
/// is copied no more than before but for the packet's first 2 KiB.
const SMALL_READS: usize = 2048;

/// Client side of plain TCP: connects to `host:port`.
///
/// Every resolved address is tried in turn; the stream has `TCP_NODELAY`
/// set, because SSH packets are latency-sensitive and already coalesced.
#[derive(Clone)]
pub struct TcpTransport {
    server: String,
    connect_timeout: Duration,
    connector: Option<Arc<dyn StreamOpener>>,
}

impl fmt::Debug for TcpTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpTransport")
            .field("server", &self.server)
            .field("connect_timeout", &self.connect_timeout)
            .field("via", &self.connector.as_ref().map(|c| c.describe()))
            .finish()
    }
}

impl TcpTransport {
    /// A transport to `server`, given as `host:port` (`[v6]:port` for IPv6).
    pub fn new(server: impl Into<String>) -> Self {
        Self {
            server: server.into(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            connector: None,
        }
    }

    /// Makes the connection through `connector` (a proxy, say) instead of
    /// connecting directly.
    pub fn with_connector(mut self, connector: Arc<dyn StreamOpener>) -> Self {
        self.connector = Some(connector);
        self
    }

    /// Sets how long one [`connect`](Transport::connect) may take in total.
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The server this transport connects to.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The stream to the server: direct (with quick ACKs), or whatever the
    /// connector opens.
    async fn connect_any(&self) -> Result<BoxStream, TransportError> {
        let (host, port) =
            split_host_port(&self.server).ok_or_else(|| TransportError::Connect {
                server: self.server.clone(),
                source: io::Error::new(io::ErrorKind::InvalidInput, "expected host:port"),
            })?;
        let target = TargetAddr::from_host_port(host, port);
        if let Some(connector) = &self.connector {
            return connector
                .open(&target)
                .await
                .map_err(|error| TransportError::Connect {
                    server: format!("{} via {}", self.server, connector.describe()),
                    source: error.into(),
                });
        }
        match connect_direct(&target, self.connect_timeout).await {
            Ok(stream) => Ok(Box::new(BufReader::with_capacity(
                SMALL_READS,
                QuickAckStream::new(stream),
            ))),
            Err(error) => Err(match error.kind() {
                OpenErrorKind::NameNotResolved => TransportError::Resolve {
                    server: self.server.clone(),
                    source: error.into(),
                },
                OpenErrorKind::TimedOut => TransportError::Timeout {
                    server: self.server.clone(),
                    after: self.connect_timeout,
                },
                _ => TransportError::Connect {
                    server: self.server.clone(),
                    source: error.into(),
                },
            }),
        }
    }
}

impl TcpTransport {
    /// How long one connect may take.
    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// Connects and returns the stream to the server (for transports
    /// layered on top, such as TLS), within the connect timeout.
    pub async fn connect_stream(&self) -> Result<BoxStream, TransportError> {
        tokio::time::timeout(self.connect_timeout, self.connect_any())
            .await
            .map_err(|_| TransportError::Timeout {
                server: self.server.clone(),
                after: self.connect_timeout,
            })?
    }
}

#[async_trait]
impl Transport for TcpTransport {
    async fn connect(&self) -> Result<BoxStream, TransportError> {
        self.connect_stream().await
    }

    fn describe(&self) -> String {
        match &self.connector {
            Some(connector) => format!("tcp://{} via {}", self.server, connector.describe()),
            None => format!("tcp://{}", self.server),
        }
    }
}

/// Splits `host:port` (`[v6]:port` for IPv6) into its parts, without brackets.
pub fn split_host_port(server: &str) -> Option<(&str, u16)> {
    let (host, port) = server.rsplit_once(':')?;
    let port = port.parse().ok()?;
    let host = match host.strip_prefix('[') {
        Some(rest) => rest.strip_suffix(']')?,
        None if host.contains(':') => return None,
        None => host,
    };
    (!host.is_empty()).then_some((host, port))
}

/// Server side of plain TCP: a listening socket.
#[derive(Debug)]
pub struct TcpAcceptor {
    listener: TcpListener,
    local_addr: SocketAddr,
}

impl TcpAcceptor {
    /// Listens on `addr` (`ip:port`; port 0 picks a free port).
    pub async fn bind(addr: &str) -> Result<Self, TransportError> {
        let bind_error = |source| TransportError::Bind {
            addr: addr.to_owned(),
            source,
        };
        let listener = TcpListener::bind(addr).await.map_err(bind_error)?;
        Self::from_listener(listener).map_err(bind_error)
    }

    /// Wraps a listener the caller already bound.
    pub fn from_listener(listener: TcpListener) -> io::Result<Self> {
        let local_addr = listener.local_addr()?;
        Ok(Self {
            listener,
            local_addr,
        })
    }

    /// The address actually bound (useful after binding port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
}

impl TcpAcceptor {
    /// Accepts the next bare TCP stream (for acceptors layered on top, such
    /// as TLS), with `TCP_NODELAY` set.
    pub async fn accept_tcp(&self) -> Result<(TcpStream, SocketAddr), TransportError> {
        let (stream, remote_addr) = self
            .listener
            .accept()
            .await
            .map_err(TransportError::Accept)?;
        let _ = stream.set_nodelay(true);
        Ok((stream, remote_addr))
    }
}

#[async_trait]
impl TransportAcceptor for TcpAcceptor {
    async fn accept(&self) -> Result<(BoxStream, TransportInfo), TransportError> {
        let (stream, remote_addr) = self.accept_tcp().await?;
        let info = TransportInfo {
            remote_addr: Some(remote_addr),
            kind: TransportKind::Tcp,
        };
        Ok((
            Box::new(BufReader::with_capacity(SMALL_READS, stream)),
            info,
        ))
    }

    fn describe(&self) -> String {
        format!("tcp://{}", self.local_addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_and_port_are_split_with_ipv6_brackets() {
        assert_eq!(split_host_port("example.com:22"), Some(("example.com", 22)));
        assert_eq!(split_host_port("[::1]:2222"), Some(("::1", 2222)));
        assert_eq!(split_host_port("::1:22"), None);
        assert_eq!(split_host_port("example.com"), None);
        assert_eq!(split_host_port(":22"), None);
        assert_eq!(split_host_port("h:99999"), None);
    }

    #[tokio::test]
    async fn connect_to_closed_port_names_the_server() {
        // Bind then drop, so the port is (almost certainly) closed.
        let port = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let transport = TcpTransport::new(format!("127.0.0.1:{port}"));
        let err = transport
            .connect()
            .await
            .err()
            .expect("closed port must fail");
        let message = err.to_string();
        assert!(message.contains(&format!("127.0.0.1:{port}")), "{message}");
        assert!(matches!(err, TransportError::Connect { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn unresolvable_name_is_a_resolve_error() {
        let transport = TcpTransport::new("no-such-host.invalid:22");
        let err = transport.connect().await.err().expect("must fail");
        assert!(matches!(err, TransportError::Resolve { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn missing_port_is_an_error_not_a_panic() {
        let err = TcpTransport::new("127.0.0.1").connect().await.err();
        assert!(err.is_some());
    }

    #[tokio::test]
    async fn bind_conflict_names_the_address() {
        let first = TcpAcceptor::bind("127.0.0.1:0").await.unwrap();
        let addr = first.local_addr().to_string();
        let err = TcpAcceptor::bind(&addr).await.expect_err("port is taken");
        assert!(err.to_string().contains(&addr), "{err}");
    }

    #[tokio::test]
    async fn accepted_stream_reports_peer_and_kind() {
        let acceptor = TcpAcceptor::bind("127.0.0.1:0").await.unwrap();
        let transport = TcpTransport::new(acceptor.local_addr().to_string());
        let (_client, (_server, info)) =
            tokio::try_join!(transport.connect(), acceptor.accept()).unwrap();
        assert_eq!(info.kind, TransportKind::Tcp);
        assert_eq!(info.remote_addr.unwrap().ip(), acceptor.local_addr().ip());
        assert_eq!(
            transport.describe(),
            format!("tcp://{}", acceptor.local_addr())
        );
    }
}
