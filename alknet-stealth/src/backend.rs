//! The real site behind a stealth port: where every connection that is not
//! a tunnel goes.
//!
//! HTTP/1.x visitors are passed through at the byte level: what they sent
//! so far, then both directions copied as they come. The backend's answers
//! reach them byte for byte (status line, header order and case, chunking),
//! keep-alive, large bodies and WebSocket upgrades included, with nothing
//! parsed in between that could make a probe's answer differ from the
//! site's own. HTTP/2 visitors are translated by [`crate::h2`].

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::str::FromStr;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpStream, UnixStream};

use crate::nginx;

/// How long connecting to the backend may take (nginx's
/// `proxy_connect_timeout`).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(60);

/// A web server to pass visitors on to.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Backend {
    /// `http://HOST:PORT`: plain HTTP over TCP.
    Tcp {
        /// `HOST:PORT`, as dialled.
        address: String,
    },
    /// `unix:/PATH`: plain HTTP over a Unix socket.
    Unix {
        /// The socket's path.
        path: PathBuf,
    },
}

/// A `--stealth-backend` that cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "stealth backend {given:?}: {reason} (expected http://HOST:PORT, e.g. \
     http://127.0.0.1:8080, or unix:/PATH/TO/SOCKET)"
)]
pub struct BackendParseError {
    given: String,
    reason: &'static str,
}

impl FromStr for Backend {
    type Err = BackendParseError;

    fn from_str(given: &str) -> Result<Self, Self::Err> {
        let error = |reason| BackendParseError {
            given: given.to_owned(),
            reason,
        };
        if let Some(path) = given.strip_prefix("unix:") {
            let path = path.strip_prefix("//").unwrap_or(path);
            if !path.starts_with('/') {
                return Err(error("a Unix socket needs an absolute path"));
            }
            return Ok(Backend::Unix { path: path.into() });
        }
        let Some(rest) = given.strip_prefix("http://") else {
            return Err(if given.starts_with("https://") {
                error("the backend is spoken to in plain HTTP, not HTTPS")
            } else {
                error("unknown scheme")
            });
        };
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.contains('/') {
            return Err(error("a path is not supported; requests keep their own"));
        }
        let port_given = authority
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        let address = if port_given {
            authority.to_owned()
        } else if !authority.is_empty() && !authority.ends_with(':') {
            format!("{authority}:80")
        } else {
            return Err(error("no host"));
        };
        Ok(Backend::Tcp { address })
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Backend::Tcp { address } => write!(f, "http://{address}"),
            Backend::Unix { path } => write!(f, "unix:{}", path.display()),
        }
    }
}

impl Backend {
    /// A new connection to the backend.
    pub(crate) async fn connect(&self) -> io::Result<BackendStream> {
        let connect = async {
            Ok(match self {
                Backend::Tcp { address } => {
                    let stream = TcpStream::connect(address.as_str()).await?;
                    stream.set_nodelay(true)?;
                    BackendStream::Tcp(stream)
                }
                Backend::Unix { path } => BackendStream::Unix(UnixStream::connect(path).await?),
            })
        };
        tokio::time::timeout(CONNECT_TIMEOUT, connect)
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "backend connect timed out"))?
    }
}

/// A connection to the backend, over TCP or a Unix socket.
#[derive(Debug)]
pub(crate) enum BackendStream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl AsyncRead for BackendStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            BackendStream::Tcp(stream) => Pin::new(stream).poll_read(cx, buf),
            BackendStream::Unix(stream) => Pin::new(stream).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for BackendStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            BackendStream::Tcp(stream) => Pin::new(stream).poll_write(cx, data),
            BackendStream::Unix(stream) => Pin::new(stream).poll_write(cx, data),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            BackendStream::Tcp(stream) => Pin::new(stream).poll_flush(cx),
            BackendStream::Unix(stream) => Pin::new(stream).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            BackendStream::Tcp(stream) => Pin::new(stream).poll_shutdown(cx),
            BackendStream::Unix(stream) => Pin::new(stream).poll_shutdown(cx),
        }
    }
}

/// Passes an HTTP/1.x visitor through to `backend`: `received` first, then
/// both directions, until both sides close or nothing moves either way for
/// `idle_timeout` (nginx's `proxy_read_timeout`). A backend that cannot be
/// reached gets the visitor nginx's `502 Bad Gateway`.
pub(crate) async fn pass_through<S>(
    visitor: &mut S,
    received: &[u8],
    backend: &Backend,
    idle_timeout: Duration,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut site = match backend.connect().await {
        Ok(site) => site,
        Err(_) => {
            let _ = visitor
                .write_all(&nginx::bad_gateway(SystemTime::now()))
                .await;
            return;
        }
    };
    if site.write_all(received).await.is_err() {
        return;
    }
    let _ = crate::idle::copy_both_ways(visitor, &mut site, idle_timeout).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backends_parse_as_users_write_them() {
        let tcp = |address: &str| Backend::Tcp {
            address: address.to_owned(),
        };
        assert_eq!("http://127.0.0.1:8080".parse(), Ok(tcp("127.0.0.1:8080")));
        assert_eq!("http://127.0.0.1:8080/".parse(), Ok(tcp("127.0.0.1:8080")));
        assert_eq!("http://[::1]:81".parse(), Ok(tcp("[::1]:81")));
        assert_eq!("http://localhost".parse(), Ok(tcp("localhost:80")));
        assert_eq!(
            "unix:/run/site.sock".parse(),
            Ok(Backend::Unix {
                path: "/run/site.sock".into()
            })
        );
        for bad in [
            "https://x:1",
            "ftp://x",
            "127.0.0.1:8080",
            "http://",
            "http://x:1/app",
            "unix:relative.sock",
        ] {
            let error = bad.parse::<Backend>().unwrap_err().to_string();
            assert!(
                error.contains("expected http://HOST:PORT"),
                "{bad}: {error}"
            );
        }
        assert_eq!(tcp("a:1").to_string(), "http://a:1");
    }
}
