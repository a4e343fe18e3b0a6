//! Outbound proxies: reaching a target through a SOCKS5 proxy or an HTTP
//! proxy's CONNECT method instead of directly.
//!
//! The server uses this for `alknet serve --proxy` (its tunnel targets go
//! through the proxy); the client uses it, inside a
//! [`Dialer`](crate::Dialer), as its transport's connector for
//! `alknet connect --proxy` (its connection to the server goes through the
//! proxy).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use alknet_transport::{OpenError, OpenErrorKind, TargetAddr, connect_direct};
use socks5_proto::handshake::{self, Method};
use socks5_proto::{Address, Command, Reply, Request, Response};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::ProxyError;

/// The longest HTTP response head we read from a proxy.
const MAX_HTTP_HEAD: usize = 16 * 1024;

/// An outbound proxy, parsed from `socks5://host:port`,
/// `socks5h://host:port` or `http://host:port`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UpstreamProxy {
    /// A SOCKS5 proxy without authentication. Names are passed to it
    /// unresolved, so the proxy resolves them.
    Socks5 {
        /// The proxy's host.
        host: String,
        /// The proxy's port.
        port: u16,
    },
    /// An HTTP proxy that supports `CONNECT`.
    HttpConnect {
        /// The proxy's host.
        host: String,
        /// The proxy's port.
        port: u16,
    },
}

impl UpstreamProxy {
    fn address(&self) -> TargetAddr {
        match self {
            UpstreamProxy::Socks5 { host, port } | UpstreamProxy::HttpConnect { host, port } => {
                TargetAddr::from_host_port(host, *port)
            }
        }
    }

    /// Connects to `target` through the proxy, within `timeout` overall.
    pub async fn connect(
        &self,
        target: &TargetAddr,
        timeout: Duration,
    ) -> Result<TcpStream, OpenError> {
        let attempt = async {
            let mut stream = connect_direct(&self.address(), timeout)
                .await
                .map_err(|error| {
                    OpenError::with_detail(
                        error.kind(),
                        format!("the proxy {self} cannot be reached: {error}"),
                    )
                })?;
            match self {
                UpstreamProxy::Socks5 { .. } => socks5_connect(&mut stream, target).await?,
                UpstreamProxy::HttpConnect { .. } => http_connect(&mut stream, target).await?,
            }
            Ok(stream)
        };
        tokio::time::timeout(timeout, attempt)
            .await
            .unwrap_or_else(|_| {
                Err(OpenError::with_detail(
                    OpenErrorKind::TimedOut,
                    "through the proxy",
                ))
            })
    }
}

impl fmt::Display for UpstreamProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (scheme, host, port) = match self {
            UpstreamProxy::Socks5 { host, port } => ("socks5", host, port),
            UpstreamProxy::HttpConnect { host, port } => ("http", host, port),
        };
        if host.contains(':') {
            write!(f, "{scheme}://[{host}]:{port}")
        } else {
            write!(f, "{scheme}://{host}:{port}")
        }
    }
}

impl FromStr for UpstreamProxy {
    type Err = ProxyError;

    fn from_str(url: &str) -> Result<Self, Self::Err> {
        let invalid = |reason: &str| ProxyError::InvalidProxy {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| invalid("expected socks5://host:port or http://host:port"))?;
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.contains('@') {
            return Err(invalid("proxy authentication is not supported"));
        }
        let (host, port) = alknet_transport::split_host_port(authority)
            .ok_or_else(|| invalid("expected host:port after the scheme"))?;
        let host = host.to_owned();
        match scheme.to_ascii_lowercase().as_str() {
            "socks5" | "socks5h" => Ok(UpstreamProxy::Socks5 { host, port }),
            "http" => Ok(UpstreamProxy::HttpConnect { host, port }),
            _ => Err(invalid("the scheme must be socks5, socks5h or http")),
        }
    }
}

async fn socks5_connect(stream: &mut TcpStream, target: &TargetAddr) -> Result<(), OpenError> {
    let protocol = |error: socks5_proto::Error| {
        OpenError::with_detail(OpenErrorKind::Other, format!("SOCKS5 proxy: {error}"))
    };
    handshake::Request::new(vec![Method::NONE])
        .write_to(stream)
        .await
        .map_err(OpenError::from)?;
    let chosen = handshake::Response::read_from(stream)
        .await
        .map_err(protocol)?;
    if chosen.method != Method::NONE {
        return Err(OpenError::with_detail(
            OpenErrorKind::NotAllowed,
            "the SOCKS5 proxy requires authentication",
        ));
    }
    let address = match target {
        TargetAddr::Ip(addr) => Address::SocketAddress(*addr),
        TargetAddr::Domain(name, port) => Address::DomainAddress(name.clone().into_bytes(), *port),
    };
    Request::new(Command::Connect, address)
        .write_to(stream)
        .await
        .map_err(OpenError::from)?;
    let response = Response::read_from(stream).await.map_err(protocol)?;
    match socks_reply_kind(response.reply) {
        None => Ok(()),
        Some(kind) => Err(OpenError::with_detail(kind, "reported by the SOCKS5 proxy")),
    }
}

/// What a SOCKS5 reply means, `None` for success.
fn socks_reply_kind(reply: Reply) -> Option<OpenErrorKind> {
    Some(match reply {
        Reply::Succeeded => return None,
        Reply::ConnectionRefused => OpenErrorKind::ConnectionRefused,
        Reply::HostUnreachable => OpenErrorKind::HostUnreachable,
        Reply::NetworkUnreachable => OpenErrorKind::NetworkUnreachable,
        Reply::TtlExpired => OpenErrorKind::TimedOut,
        Reply::ConnectionNotAllowed => OpenErrorKind::NotAllowed,
        _ => OpenErrorKind::Other,
    })
}

async fn http_connect(stream: &mut TcpStream, target: &TargetAddr) -> Result<(), OpenError> {
    let authority = target.to_string();
    let request = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    // Read the head byte by byte through a small buffer that we then drop:
    // anything after the blank line already belongs to the tunnel, and a
    // proxy sends nothing more before we speak.
    let mut reader = BufReader::with_capacity(1, &mut *stream);
    let mut status_line = String::new();
    reader.read_line(&mut status_line).await?;
    let mut head_len = status_line.len();
    loop {
        let mut header = String::new();
        let n = reader.read_line(&mut header).await?;
        head_len += n;
        if n == 0 || header == "\r\n" || header == "\n" {
            break;
        }
        if head_len > MAX_HTTP_HEAD {
            return Err(OpenError::with_detail(
                OpenErrorKind::Other,
                "HTTP proxy response too long",
            ));
        }
    }
    match http_status_kind(&status_line) {
        None => Ok(()),
        Some(kind) => Err(OpenError::with_detail(
            kind,
            // Only the status code: a proxy's reason phrase may name the target.
            format!(
                "HTTP proxy answered {}",
                status_line
                    .split_whitespace()
                    .nth(1)
                    .unwrap_or("something that is not HTTP")
            ),
        )),
    }
}

/// What an HTTP proxy's status line means for a CONNECT, `None` for success.
fn http_status_kind(status_line: &str) -> Option<OpenErrorKind> {
    let mut words = status_line.split_whitespace();
    let version_ok = words.next().is_some_and(|v| v.starts_with("HTTP/1."));
    let code = words.next().and_then(|code| code.parse::<u16>().ok());
    match (version_ok, code) {
        (true, Some(200..=299)) => None,
        (true, Some(403 | 407)) => Some(OpenErrorKind::NotAllowed),
        (true, Some(504)) => Some(OpenErrorKind::TimedOut),
        (true, Some(502 | 503)) => Some(OpenErrorKind::HostUnreachable),
        _ => Some(OpenErrorKind::Other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_urls() {
        assert_eq!(
            "socks5://127.0.0.1:1080".parse::<UpstreamProxy>().unwrap(),
            UpstreamProxy::Socks5 {
                host: "127.0.0.1".into(),
                port: 1080
            }
        );
        assert_eq!(
            "socks5h://[::1]:1080/"
                .parse::<UpstreamProxy>()
                .unwrap()
                .to_string(),
            "socks5://[::1]:1080"
        );
        assert_eq!(
            "HTTP://proxy.example:3128"
                .parse::<UpstreamProxy>()
                .unwrap(),
            UpstreamProxy::HttpConnect {
                host: "proxy.example".into(),
                port: 3128
            }
        );
        for (bad, why) in [
            ("127.0.0.1:1080", "expected socks5://"),
            ("ftp://h:21", "scheme"),
            ("socks5://h", "host:port"),
            ("http://user:pw@h:3128", "authentication"),
        ] {
            let error = bad.parse::<UpstreamProxy>().unwrap_err().to_string();
            assert!(error.contains(why), "{bad}: {error}");
        }
    }

    #[test]
    fn http_status_lines() {
        assert_eq!(
            http_status_kind("HTTP/1.1 200 Connection established\r\n"),
            None
        );
        assert_eq!(http_status_kind("HTTP/1.0 200 OK\r\n"), None);
        assert_eq!(
            http_status_kind("HTTP/1.1 403 Forbidden\r\n"),
            Some(OpenErrorKind::NotAllowed)
        );
        assert_eq!(
            http_status_kind("HTTP/1.1 504 Gateway Timeout\r\n"),
            Some(OpenErrorKind::TimedOut)
        );
        assert_eq!(
            http_status_kind("HTTP/1.1 500 Unable to connect\r\n"),
            Some(OpenErrorKind::Other)
        );
        assert_eq!(
            http_status_kind("SSH-2.0-OpenSSH\r\n"),
            Some(OpenErrorKind::Other)
        );
        assert_eq!(http_status_kind(""), Some(OpenErrorKind::Other));
    }

    #[test]
    fn socks_replies() {
        assert_eq!(socks_reply_kind(Reply::Succeeded), None);
        assert_eq!(
            socks_reply_kind(Reply::ConnectionRefused),
            Some(OpenErrorKind::ConnectionRefused)
        );
        assert_eq!(
            socks_reply_kind(Reply::GeneralFailure),
            Some(OpenErrorKind::Other)
        );
    }

    /// Our own SOCKS5 server (over a direct opener) as the upstream proxy.
    #[tokio::test]
    async fn connects_through_a_socks5_proxy_and_reports_refusals() {
        use std::sync::Arc;
        use tokio::io::AsyncReadExt;

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy_port = listener.local_addr().unwrap().port();
        let socks = crate::Socks5Server::new(Arc::new(alknet_transport::DirectConnector::new(
            Duration::from_secs(5),
        )));
        tokio::spawn(async move { socks.serve(listener).await });
        let target = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target_addr = TargetAddr::Ip(target.local_addr().unwrap());
        tokio::spawn(async move {
            let (mut socket, _) = target.accept().await.unwrap();
            socket.write_all(b"via the proxy").await.unwrap();
        });

        let proxy: UpstreamProxy = format!("socks5://127.0.0.1:{proxy_port}").parse().unwrap();
        let mut stream = proxy
            .connect(&target_addr, Duration::from_secs(10))
            .await
            .unwrap();
        let mut text = String::new();
        stream.read_to_string(&mut text).await.unwrap();
        assert_eq!(text, "via the proxy");

        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let error = proxy
            .connect(&TargetAddr::Ip(closed), Duration::from_secs(10))
            .await
            .unwrap_err();
        assert_eq!(error.kind(), OpenErrorKind::ConnectionRefused);
    }
}
