//! The SOCKS5 server (RFC 1928, via socks5-proto): CONNECT only, every
//! target opened through a [`StreamOpener`].

use std::sync::Arc;
use std::time::Duration;

use socks5_proto::handshake::{self, Method};
use socks5_proto::{Address, Command, ProtocolError, Reply, Request, Response};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::{OpenErrorKind, ProxyError, StreamOpener, TargetAddr, relay};

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
/// Only the "no authentication" method and the CONNECT command are offered;
/// BIND and UDP ASSOCIATE are answered "command not supported". Domain
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
                if let Err(error) = server.handle(stream).await {
                    tracing::debug!(%error, "SOCKS5 connection ended");
                }
            }
        })
        .await;
    }

    /// Serves one client connection from greeting to close.
    pub async fn handle<S>(&self, mut client: S) -> Result<(), ProxyError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let target = match tokio::time::timeout(
            self.config.handshake_timeout,
            read_connect_request(&mut client),
        )
        .await
        {
            Ok(Ok(Some(target))) => target,
            Ok(Ok(None)) => return Ok(()),
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
}

/// Runs the greeting and request. `Ok(None)` means the request was answered
/// already (an unsupported command) and the connection is done.
async fn read_connect_request<S>(client: &mut S) -> Result<Option<TargetAddr>, ProxyError>
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
    if request.command != Command::Connect {
        send_reply(client, Reply::CommandNotSupported).await?;
        return Ok(None);
    }
    match request.address {
        Address::SocketAddress(addr) => Ok(Some(TargetAddr::Ip(addr))),
        Address::DomainAddress(name, port) => match String::from_utf8(name) {
            Ok(name) if !name.is_empty() => Ok(Some(TargetAddr::from_host_port(&name, port))),
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
