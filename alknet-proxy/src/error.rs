//! [`ProxyError`]: why one proxied connection, forward or proxy URL failed.

use std::io;

use crate::OpenError;

/// Why one proxied connection ended abnormally. Messages never name the
/// connection's target.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyError {
    /// Reading from or writing to the client failed.
    #[error("connection error: {0}")]
    Io(#[from] io::Error),

    /// The client sent something that is not a valid SOCKS5 request.
    #[error("malformed SOCKS5 request: {0}")]
    Protocol(String),

    /// The client offered only authentication methods alknet does not support.
    #[error(
        "the SOCKS5 client offered no supported authentication method (alknet's SOCKS5 needs none)"
    )]
    NoAcceptableMethod,

    /// The client did not finish the SOCKS5 handshake in time.
    #[error("the SOCKS5 client did not finish its request in time")]
    HandshakeTimeout,

    /// An HTTP proxy client's connection failed at the HTTP level.
    #[error("HTTP proxy connection: {0}")]
    Http(String),

    /// A forward specification could not be parsed.
    #[error("invalid forward {spec:?}: {reason}")]
    InvalidForward {
        /// The specification as given.
        spec: String,
        /// What is wrong with it.
        reason: String,
    },

    /// An outbound proxy URL could not be parsed.
    #[error("invalid proxy {url:?}: {reason}")]
    InvalidProxy {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {error}")]
    Bind {
        /// The address.
        addr: String,
        /// The operating system's error.
        #[source]
        error: io::Error,
    },

    /// The target could not be reached through the tunnel.
    #[error("could not open a stream to the target: {0}")]
    Open(#[source] OpenError),
}

impl From<socks5_proto::Error> for ProxyError {
    fn from(error: socks5_proto::Error) -> Self {
        match error {
            socks5_proto::Error::Io(io) => ProxyError::Io(io),
            socks5_proto::Error::Protocol(protocol) => ProxyError::Protocol(protocol.to_string()),
        }
    }
}
