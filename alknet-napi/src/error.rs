//! Errors as they reach JavaScript: a stable code and a message that says
//! what to do. N-API async functions carry only a message, so the code
//! travels as a `[CODE] ` prefix that `lib/errors.js` turns into `err.code`.

use std::fmt;

use alknet::proxy::{OpenError, OpenErrorKind};
use alknet::transport::TransportError;

/// The codes JavaScript sees on `err.code`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Code {
    /// The server refused our key or certificate.
    AuthRejected,
    /// The server's host key is not the pinned one.
    HostKeyMismatch,
    /// The server (or a TLS listener's certificate) could not be reached or trusted.
    Unreachable,
    /// The server refused the channel (policy, target unreachable).
    ChannelRefused,
    /// Something took too long.
    Timeout,
    /// An option is unknown, missing or malformed.
    InvalidOption,
    /// The stream or server was closed.
    Closed,
    /// Anything else.
    Failed,
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Code::AuthRejected => "AUTH_REJECTED",
            Code::HostKeyMismatch => "HOST_KEY_MISMATCH",
            Code::Unreachable => "UNREACHABLE",
            Code::ChannelRefused => "CHANNEL_REFUSED",
            Code::Timeout => "TIMEOUT",
            Code::InvalidOption => "INVALID_OPTION",
            Code::Closed => "CLOSED",
            Code::Failed => "FAILED",
        })
    }
}

/// An error with `code` for JavaScript.
pub(crate) fn error(code: Code, message: impl fmt::Display) -> napi::Error {
    napi::Error::new(napi::Status::GenericFailure, format!("[{code}] {message}"))
}

/// An option that cannot be used.
pub(crate) fn invalid(message: impl fmt::Display) -> napi::Error {
    error(Code::InvalidOption, message)
}

/// What a facade error means to JavaScript.
pub(crate) fn from_alknet(failure: alknet::Error) -> napi::Error {
    use alknet::Error;
    let code = match &failure {
        Error::AuthRejected { .. } | Error::CertificateRejected { .. } => Code::AuthRejected,
        Error::HostKeyMismatch { .. } => Code::HostKeyMismatch,
        Error::InvalidFingerprint(_) | Error::InvalidSetting(_) | Error::Auth(_) => {
            Code::InvalidOption
        }
        Error::HandshakeTimeout(_) => Code::Timeout,
        Error::ClosedBeforeSsh => Code::Unreachable,
        Error::Transport(transport) => transport_code(transport),
        _ => Code::Failed,
    };
    error(code, failure)
}

pub(crate) fn transport_code(error: &TransportError) -> Code {
    match error {
        TransportError::Timeout { .. } => Code::Timeout,
        TransportError::Tls { .. } | TransportError::InvalidAddress { .. } => Code::InvalidOption,
        _ => Code::Unreachable,
    }
}

/// A channel that could not be opened.
pub(crate) fn from_open(failure: OpenError) -> napi::Error {
    let code = match failure.kind() {
        OpenErrorKind::TimedOut => Code::Timeout,
        OpenErrorKind::TunnelDown => Code::Closed,
        _ => Code::ChannelRefused,
    };
    error(code, failure)
}
