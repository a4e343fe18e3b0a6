//! [`CliError`]: why the `alknet` command stopped, printed as one line.

use std::io;

use alknet::auth::AuthError;
use alknet::transport::TransportError;

/// Why the `alknet` command stopped with a non-zero exit status. Printed
/// as a single line.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CliError {
    #[error(transparent)]
    Alknet(#[from] alknet::Error),

    #[error(transparent)]
    Session(std::sync::Arc<alknet::Error>),

    #[error(transparent)]
    Auth(#[from] AuthError),

    #[error(transparent)]
    Transport(#[from] TransportError),

    #[error(transparent)]
    Proxy(#[from] alknet::proxy::ProxyError),

    #[error(transparent)]
    Acme(#[from] alknet::acme::AcmeError),

    #[error("cannot listen for SOCKS5 on {addr} (--socks5; `--socks5 none` turns it off): {error}")]
    SocksBind { addr: String, error: io::Error },

    #[error("cannot listen for the HTTP proxy on {addr} (--http-proxy): {error}")]
    HttpProxyBind { addr: String, error: io::Error },

    #[error("{path}: no usable keys (an authorized_keys file needs at least one ssh-ed25519 line)")]
    NoAuthorizedKeys { path: String },

    #[error("{0}")]
    Usage(String),

    #[error(transparent)]
    Token(#[from] alknet::auth::TokenError),

    #[error("connection to the server was lost")]
    ConnectionLost,

    #[error("cannot start the async runtime: {0}")]
    Runtime(io::Error),

    #[error("cannot set up signal handling: {0}")]
    Signals(io::Error),

    #[error("cannot open the control channel: {0}")]
    Control(#[from] alknet::proxy::OpenError),

    /// A `call.error` prints as `call failed: <code>: <message>`.
    #[error("{0}")]
    Call(alknet::call::CallError),

    #[error("cannot write the output: {0}")]
    Output(io::Error),
}
