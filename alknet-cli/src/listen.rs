//! `--listen` values: `tcp://addr`, `tls://addr`, `iroh://addr`, or a bare
//! `addr` that takes the `--transport` kind.

use std::fmt;
use std::str::FromStr;

use clap::ValueEnum;

/// A transport kind, as `--transport` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum TransportName {
    /// Plain TCP.
    Tcp,
    /// TLS over TCP.
    Tls,
    /// iroh QUIC (a `--listen` address is the UDP bind address).
    Iroh,
}

impl fmt::Display for TransportName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TransportName::Tcp => "tcp",
            TransportName::Tls => "tls",
            TransportName::Iroh => "iroh",
        })
    }
}

/// One `--listen` value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ListenSpec {
    /// The scheme given, if any.
    pub(crate) kind: Option<TransportName>,
    /// `host:port`.
    pub(crate) addr: String,
}

impl ListenSpec {
    /// The kind, with bare addresses taking `default`.
    pub(crate) fn kind_or(&self, default: TransportName) -> TransportName {
        self.kind.unwrap_or(default)
    }
}

impl FromStr for ListenSpec {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (kind, addr) = match text.split_once("://") {
            Some((scheme, addr)) => {
                let kind = TransportName::from_str(scheme, true).map_err(|_| {
                    format!("unknown scheme {scheme:?}: use tcp://, tls:// or iroh://")
                })?;
                (Some(kind), addr)
            }
            None => (None, text),
        };
        if alknet::transport::split_host_port(addr).is_none() {
            return Err(format!(
                "expected host:port (IPv6 as [addr]:port), got {addr:?}"
            ));
        }
        Ok(ListenSpec {
            kind,
            addr: addr.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes_and_bare_addresses() {
        let tls: ListenSpec = "tls://0.0.0.0:443".parse().unwrap();
        assert_eq!(tls.kind, Some(TransportName::Tls));
        assert_eq!(tls.addr, "0.0.0.0:443");
        let bare: ListenSpec = "[::1]:22".parse().unwrap();
        assert_eq!(bare.kind_or(TransportName::Tls), TransportName::Tls);
        assert_eq!(
            "TCP://h:1".parse::<ListenSpec>().unwrap().kind,
            Some(TransportName::Tcp)
        );
        assert!(
            "udp://h:1"
                .parse::<ListenSpec>()
                .unwrap_err()
                .contains("unknown scheme")
        );
        assert!(
            "tls://h"
                .parse::<ListenSpec>()
                .unwrap_err()
                .contains("host:port")
        );
    }
}
