//! [`Error`]: what can go wrong setting up or running a client or server.

use std::time::Duration;

use alknet_auth::AuthError;
use alknet_transport::TransportError;

/// Everything that can go wrong setting up or running an alknet client or
/// server. Messages say what to do about it, and never contain a tunnel
/// destination or a secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reaching the server (or listening for clients) failed.
    #[error(transparent)]
    Transport(#[from] TransportError),

    /// A key or authorized_keys file could not be used.
    #[error(transparent)]
    Auth(#[from] AuthError),

    /// The server's host key is not the one pinned with `--host-key`.
    #[error(
        "the server's host key is {actual}, but {expected} was expected; \
         if the server's key was changed on purpose, update --host-key, \
         otherwise someone may be intercepting the connection"
    )]
    HostKeyMismatch {
        /// The pinned fingerprint.
        expected: String,
        /// The fingerprint the server presented.
        actual: String,
    },

    /// The `--host-key` value is not a `SHA256:` fingerprint.
    #[error(
        "invalid host key fingerprint {0:?}: expected the form SHA256:<base64>, as printed by `ssh-keygen -lf`"
    )]
    InvalidFingerprint(String),

    /// The server refused our key.
    #[error(
        "the server refused key {fingerprint} for user {user:?}: add the public key to the \
         server's authorized_keys file"
    )]
    AuthRejected {
        /// The user name we logged in as.
        user: String,
        /// Our key's fingerprint.
        fingerprint: String,
    },

    /// The server refused our certificate.
    #[error(
        "the server refused certificate {key_id:?} for user {user:?}: check that the server trusts its CA \
         (--cert-authority), that {user:?} is one of its principals, and that it is valid now"
    )]
    CertificateRejected {
        /// The user name we logged in as.
        user: String,
        /// The certificate's key id.
        key_id: String,
    },

    /// The SSH handshake did not finish in time.
    #[error("the SSH handshake did not complete within {0:?}; is the server an SSH server?")]
    HandshakeTimeout(Duration),

    /// There is no granted remote forward with this index.
    #[error("remote forward #{0} was not requested or the server refused it")]
    NoSuchRemoteForward(usize),

    /// The server closed the connection before the SSH handshake got far
    /// enough to show its host key.
    #[error(
        "the server closed the connection before SSH began: a server limit (such as \
         --max-connections-per-ip or --max-startups) turned it away, or the port is not an SSH server"
    )]
    ClosedBeforeSsh,

    /// An SSH protocol error.
    #[error("SSH: {0}")]
    Ssh(#[from] russh::Error),

    /// Settings that do not fit together (a stealth listener without TLS,
    /// an iroh option for a TCP server…); the message says what to change.
    #[error("{0}")]
    InvalidSetting(String),

    /// A runtime or thread for serving could not be started.
    #[error("cannot start a server thread: {0}")]
    Runtime(#[source] std::io::Error),
}
