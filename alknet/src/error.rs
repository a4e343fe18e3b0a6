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

    /// known_hosts names this server with another key.
    #[error(
        "REMOTE HOST IDENTIFICATION HAS CHANGED: the host key of {name} is now {actual}, but \
         {line} records {known}. Someone could be eavesdropping on you right now \
         (man-in-the-middle attack), or the host key has just been changed. If the change is \
         expected, remove the old key with `ssh-keygen -R '{name}' -f {file}` and connect again",
        name = .0.name, actual = .0.actual, line = .0.line, known = .0.known, file = .0.file
    )]
    HostKeyChanged(Box<ChangedHostKey>),

    /// A `@revoked` line in known_hosts matches the server's key.
    #[error("the host key {actual} of {name} is revoked by {line}; refusing to connect")]
    HostKeyRevoked {
        /// The name the server is recorded under.
        name: String,
        /// The `@revoked` line.
        line: String,
        /// The key the server presented.
        actual: String,
    },

    /// `--strict-host-keys` and the server is not in known_hosts.
    #[error(
        "no host key of {name} is known and strict host key checking is on: if {actual} is \
         the server's key (check with its operator or `ssh-keygen -lf` on the server), \
         pass --host-key {actual} once, or add it to known_hosts"
    )]
    HostKeyUnknown {
        /// The name the server is recorded under.
        name: String,
        /// The key the server presented.
        actual: String,
    },

    /// A reconnection met another host key than the first connection.
    #[error(
        "the server's host key is now {actual}, but this client first connected to {expected}; \
         refusing to reconnect (someone may be intercepting the connection)"
    )]
    HostKeyChangedSinceStart {
        /// The key of the first connection.
        expected: String,
        /// The key presented now.
        actual: String,
    },

    /// The host certificate cannot be presented with this host key.
    #[error("cannot use the host certificate: {0}")]
    HostCertificate(String),

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

    /// A remote UDP forward could not be set up.
    #[error("remote UDP forward: {0}")]
    RemoteUdpForward(String),

    /// The server closed the connection before the SSH handshake got far
    /// enough to show its host key.
    #[error(
        "the server closed the connection before SSH began: a server limit (such as \
         --max-connections-per-ip or --max-startups) turned it away, the port is not an SSH server, \
         or it is a stealth port that wants a knock first (connect with --stealth)"
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

/// What [`Error::HostKeyChanged`] reports.
#[derive(Debug)]
#[non_exhaustive]
pub struct ChangedHostKey {
    /// The name the server is recorded under.
    pub name: String,
    /// The file and line with the old key (`path:line`).
    pub line: String,
    /// The file alone (for the command that fixes it).
    pub file: String,
    /// The old key's fingerprint.
    pub known: String,
    /// The key the server presented.
    pub actual: String,
}
