//! [`TransportError`]: what can go wrong opening or accepting a stream.

use std::io;
use std::time::Duration;

/// Everything that can go wrong while opening or accepting a transport stream.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The listening socket could not be created.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address that was asked for.
        addr: String,
        /// Why the operating system refused.
        #[source]
        source: io::Error,
    },

    /// A fallback list with nothing in it.
    #[error("no way to reach the server was given")]
    NoTransport,

    /// The server could not be reached.
    #[error("cannot connect to {server}: {source}")]
    Connect {
        /// The server as given by the user.
        server: String,
        /// The last connection error.
        #[source]
        source: io::Error,
    },

    /// The server's name did not resolve to any address.
    #[error("cannot resolve {server}: {source}")]
    Resolve {
        /// The server as given by the user.
        server: String,
        /// The resolver's error.
        #[source]
        source: io::Error,
    },

    /// Connecting took longer than allowed.
    #[error("connecting to {server} timed out after {}s", after.as_secs())]
    Timeout {
        /// The server as given by the user.
        server: String,
        /// How long we waited.
        after: Duration,
    },

    /// TLS could not be set up: a certificate, key or name is unusable.
    #[error("{what}: {reason}")]
    Tls {
        /// What was being loaded or checked (names the file).
        what: String,
        /// What is wrong with it.
        reason: String,
    },

    /// The TLS handshake with the server failed (for example, its
    /// certificate is not trusted, or it does not speak TLS).
    #[error(
        "TLS handshake with {server} failed: {source} (is it a TLS listener? plain TCP needs --transport tcp)"
    )]
    Handshake {
        /// The server as given by the user.
        server: String,
        /// The TLS error.
        #[source]
        source: io::Error,
    },

    /// The server closed the connection before TLS (and so SSH) began.
    #[error(
        "{server} closed the connection before the TLS handshake finished: a server limit (such as \
         --max-connections-per-ip) turned it away, or the port is not an alknet or SSH server"
    )]
    ClosedBeforeHandshake {
        /// The server as given by the user.
        server: String,
    },

    /// The server's TLS certificate was not accepted.
    #[error(
        "the TLS certificate of {server} was rejected: {reason}; if a private CA signed it, \
         pass that CA with --tls-ca, or use --insecure and rely on --host-key"
    )]
    CertificateRejected {
        /// The server as given by the user.
        server: String,
        /// Why rustls refused it.
        reason: String,
    },

    /// A stealth listener did not answer the knock with an upgrade (or
    /// the answer was garbled).
    #[error("{server} did not open the tunnel: {reason}")]
    KnockRefused {
        /// The server as given by the user.
        server: String,
        /// What it answered, and what to check.
        reason: String,
    },

    /// Accepting one incoming connection failed.
    #[error("accepting a connection failed: {0}")]
    Accept(#[source] io::Error),

    /// An address, relay URL or endpoint id given by the user is unusable.
    #[error("invalid address {address:?}: {reason}")]
    InvalidAddress {
        /// The text as given.
        address: String,
        /// What is wrong with it.
        reason: String,
    },

    /// The iroh endpoint failed (binding, reaching the peer, a stream).
    #[error("{what}: {reason}")]
    Iroh {
        /// What was being done.
        what: &'static str,
        /// iroh's error.
        reason: String,
    },
}
