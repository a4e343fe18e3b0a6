//! `--transport` as clap sees it: the facade's [`TransportChoice`] with
//! help text for each value. (`--listen` values are the facade's
//! [`ListenSpec`](alknet::ListenSpec).)

use std::fmt;

use alknet::TransportChoice;
use clap::ValueEnum;

/// A transport kind, as `--transport` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum TransportName {
    /// Plain TCP.
    Tcp,
    /// TLS over TCP.
    Tls,
    /// iroh QUIC: a server by its endpoint id (--peer); `serve` binds the
    /// UDP address of an iroh:// listener.
    Iroh,
}

impl fmt::Display for TransportName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        TransportChoice::from(*self).fmt(f)
    }
}

impl From<TransportName> for TransportChoice {
    fn from(name: TransportName) -> Self {
        match name {
            TransportName::Tcp => TransportChoice::Tcp,
            TransportName::Tls => TransportChoice::Tls,
            TransportName::Iroh => TransportChoice::Iroh,
        }
    }
}
