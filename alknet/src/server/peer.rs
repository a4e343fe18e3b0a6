//! Who is at the other end, for logs and limits: an address, or (over
//! iroh) the peer's endpoint id, which identifies it as well as an IP would.

use std::fmt;
use std::net::SocketAddr;

use alknet_auth::PeerKey;
use alknet_transport::{TransportInfo, TransportKind};

/// The far end of a connection, as logs name it (`remote_addr=…`).
#[derive(Clone, Debug)]
pub(crate) struct Peer {
    pub(crate) addr: Option<SocketAddr>,
    endpoint: Option<String>,
}

impl Peer {
    pub(crate) fn of(info: &TransportInfo) -> Self {
        let endpoint = match &info.kind {
            TransportKind::Iroh { remote } => Some(remote.clone()),
            _ => None,
        };
        Peer {
            addr: info.remote_addr,
            endpoint,
        }
    }

    /// What connection limits count it by.
    pub(crate) fn key(&self) -> Option<PeerKey> {
        match (&self.addr, &self.endpoint) {
            (Some(addr), _) => Some(PeerKey::ip(addr.ip())),
            (None, Some(endpoint)) => Some(PeerKey::Endpoint(endpoint.clone())),
            (None, None) => None,
        }
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.addr, &self.endpoint) {
            (Some(addr), _) => addr.fmt(f),
            (None, Some(endpoint)) => write!(f, "iroh:{endpoint}"),
            (None, None) => f.write_str("unknown"),
        }
    }
}
