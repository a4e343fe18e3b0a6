//! The connector seam: [`StreamOpener`] opens a byte stream to a target,
//! and [`OpenError`] says why it could not, in terms every caller (a SOCKS5
//! client, an SSH peer, a user) understands.

use std::fmt;
use std::io;
use std::path::Path;

use async_trait::async_trait;

use crate::{BoxStream, TargetAddr};

/// Opens a byte stream to `host:port` somewhere: a plain TCP connect
/// ([`DirectConnector`](crate::DirectConnector)), an outbound proxy, an SSH
/// tunnel, or anything else.
///
/// It is the one seam between "where to" and "how": the SOCKS5 server and
/// forward listeners reach the world through it, the server's dialer is
/// one, and [`TcpTransport`](crate::TcpTransport) reaches its server
/// through one when told to go via a proxy.
#[async_trait]
pub trait StreamOpener: Send + Sync + 'static {
    /// Opens one stream to `target`.
    async fn open(&self, target: &TargetAddr) -> Result<BoxStream, OpenError>;

    /// A short description for logs and errors, such as
    /// `socks5://127.0.0.1:1080`. Never a target.
    fn describe(&self) -> String {
        "a stream opener".to_owned()
    }

    /// Opens one stream to a Unix-domain socket. Openers that cannot reach
    /// Unix sockets keep this default, which refuses.
    async fn open_unix(&self, path: &Path) -> Result<BoxStream, OpenError> {
        let _ = path;
        Err(OpenError::with_detail(
            OpenErrorKind::NotAllowed,
            "Unix-socket targets are not supported here",
        ))
    }
}

/// Why a stream could not be opened, in terms a SOCKS5 client understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum OpenErrorKind {
    /// The target host actively refused the connection.
    ConnectionRefused,
    /// The target host could not be reached.
    HostUnreachable,
    /// The target's name did not resolve.
    NameNotResolved,
    /// The target's network could not be reached.
    NetworkUnreachable,
    /// Connecting to the target took too long.
    TimedOut,
    /// Policy forbids this target.
    NotAllowed,
    /// The tunnel itself is down (no SSH session right now).
    TunnelDown,
    /// Anything else.
    Other,
}

impl OpenErrorKind {
    /// Classifies an operating-system connect error.
    pub fn from_io(error: &io::Error) -> Self {
        match error.kind() {
            io::ErrorKind::ConnectionRefused => OpenErrorKind::ConnectionRefused,
            io::ErrorKind::HostUnreachable => OpenErrorKind::HostUnreachable,
            io::ErrorKind::NetworkUnreachable => OpenErrorKind::NetworkUnreachable,
            io::ErrorKind::TimedOut => OpenErrorKind::TimedOut,
            io::ErrorKind::PermissionDenied => OpenErrorKind::NotAllowed,
            _ => OpenErrorKind::Other,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            OpenErrorKind::ConnectionRefused => "connection refused",
            OpenErrorKind::HostUnreachable => "host unreachable",
            OpenErrorKind::NameNotResolved => "name does not resolve",
            OpenErrorKind::NetworkUnreachable => "network unreachable",
            OpenErrorKind::TimedOut => "connection timed out",
            OpenErrorKind::NotAllowed => "not allowed",
            OpenErrorKind::TunnelDown => "tunnel is down",
            OpenErrorKind::Other => "connection failed",
        }
    }
}

/// A failed [`StreamOpener::open`]. The message never names the target.
#[derive(Debug)]
pub struct OpenError {
    kind: OpenErrorKind,
    detail: Option<String>,
}

impl OpenError {
    /// A failure of the given kind.
    pub fn new(kind: OpenErrorKind) -> Self {
        Self { kind, detail: None }
    }

    /// A failure with extra detail (which must not name the target).
    pub fn with_detail(kind: OpenErrorKind, detail: impl Into<String>) -> Self {
        Self {
            kind,
            detail: Some(detail.into()),
        }
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> OpenErrorKind {
        self.kind
    }
}

impl From<io::Error> for OpenError {
    fn from(error: io::Error) -> Self {
        OpenError::with_detail(OpenErrorKind::from_io(&error), error.to_string())
    }
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind.describe())?;
        if let Some(detail) = &self.detail {
            write!(f, " ({detail})")?;
        }
        Ok(())
    }
}

impl std::error::Error for OpenError {}

/// For callers that speak `io::Error` (a transport reaching its server):
/// the kind maps to the closest `io::ErrorKind`, the message is the detail.
impl From<OpenError> for io::Error {
    fn from(error: OpenError) -> Self {
        let kind = match error.kind {
            OpenErrorKind::ConnectionRefused => io::ErrorKind::ConnectionRefused,
            OpenErrorKind::HostUnreachable => io::ErrorKind::HostUnreachable,
            OpenErrorKind::NameNotResolved => io::ErrorKind::NotFound,
            OpenErrorKind::NetworkUnreachable => io::ErrorKind::NetworkUnreachable,
            OpenErrorKind::TimedOut => io::ErrorKind::TimedOut,
            OpenErrorKind::NotAllowed => io::ErrorKind::PermissionDenied,
            OpenErrorKind::TunnelDown => io::ErrorKind::NotConnected,
            OpenErrorKind::Other => io::ErrorKind::Other,
        };
        let message = error
            .detail
            .unwrap_or_else(|| error.kind.describe().to_owned());
        io::Error::new(kind, message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_keep_their_kind_and_messages_stay_generic() {
        let kind = |io_kind| OpenError::from(io::Error::from(io_kind)).kind();
        assert_eq!(
            kind(io::ErrorKind::ConnectionRefused),
            OpenErrorKind::ConnectionRefused
        );
        assert_eq!(
            kind(io::ErrorKind::HostUnreachable),
            OpenErrorKind::HostUnreachable
        );
        assert_eq!(
            kind(io::ErrorKind::NetworkUnreachable),
            OpenErrorKind::NetworkUnreachable
        );
        assert_eq!(kind(io::ErrorKind::TimedOut), OpenErrorKind::TimedOut);
        assert_eq!(
            kind(io::ErrorKind::PermissionDenied),
            OpenErrorKind::NotAllowed
        );
        assert_eq!(kind(io::ErrorKind::Other), OpenErrorKind::Other);
        assert_eq!(
            OpenError::with_detail(OpenErrorKind::NotAllowed, "by policy").to_string(),
            "not allowed (by policy)"
        );
    }
}
