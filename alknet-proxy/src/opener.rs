use std::fmt;
use std::io;
use std::path::Path;

use alknet_transport::BoxStream;
use async_trait::async_trait;
use socks5_proto::Reply;

use crate::TargetAddr;

/// Opens a byte stream to `host:port` somewhere: through an SSH tunnel, a
/// plain TCP connect, or anything else. The SOCKS5 server and the forward
/// listeners reach the outside world only through this trait.
#[async_trait]
pub trait StreamOpener: Send + Sync + 'static {
    /// Opens one stream to `target`.
    async fn open(&self, target: &TargetAddr) -> Result<BoxStream, OpenError>;

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
    /// The target host could not be reached (or its name did not resolve).
    HostUnreachable,
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
    /// The SOCKS5 reply code that reports this failure (RFC 1928 §6).
    pub(crate) fn socks_reply(self) -> Reply {
        match self {
            OpenErrorKind::ConnectionRefused => Reply::ConnectionRefused,
            // A timeout means the host did not answer: what users and tools
            // (curl: "Host unreachable") understand best.
            OpenErrorKind::HostUnreachable | OpenErrorKind::TimedOut => Reply::HostUnreachable,
            OpenErrorKind::NetworkUnreachable => Reply::NetworkUnreachable,
            OpenErrorKind::NotAllowed => Reply::ConnectionNotAllowed,
            OpenErrorKind::TunnelDown | OpenErrorKind::Other => Reply::GeneralFailure,
        }
    }

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_map_to_distinct_socks_replies() {
        let reply = |kind| OpenError::from(io::Error::from(kind)).kind().socks_reply();
        assert_eq!(
            reply(io::ErrorKind::ConnectionRefused),
            Reply::ConnectionRefused
        );
        assert_eq!(
            reply(io::ErrorKind::HostUnreachable),
            Reply::HostUnreachable
        );
        assert_eq!(
            reply(io::ErrorKind::NetworkUnreachable),
            Reply::NetworkUnreachable
        );
        assert_eq!(reply(io::ErrorKind::TimedOut), Reply::HostUnreachable);
        assert_eq!(reply(io::ErrorKind::Other), Reply::GeneralFailure);
        assert_eq!(
            OpenErrorKind::NotAllowed.socks_reply(),
            Reply::ConnectionNotAllowed
        );
    }
}
