//! Remote (`-R`) forwards, client side: the server listens on the
//! client's behalf and opens a `forwarded-tcpip` channel back for every
//! connection; the client connects each such channel to its local target.
//! (The server side is `server/forwards.rs`.)

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use alknet_proxy::ForwardTarget;

/// Which local target each remote forward leads to, keyed
/// by the (address, port) the server echoes in `forwarded-tcpip`.
#[derive(Clone, Debug, Default)]
pub(crate) struct RemoteForwardTable {
    targets: Arc<Mutex<HashMap<(String, u32), ForwardTarget>>>,
}

impl RemoteForwardTable {
    pub(crate) fn insert(&self, address: &str, port: u32, target: ForwardTarget) {
        if let Ok(mut targets) = self.targets.lock() {
            targets.insert((address.to_owned(), port), target);
        }
    }

    /// The target for a forwarded channel. Falls back to the port alone,
    /// for servers that echo a different spelling of the address.
    pub(crate) fn lookup(&self, address: &str, port: u32) -> Option<ForwardTarget> {
        let targets = self.targets.lock().ok()?;
        targets
            .get(&(address.to_owned(), port))
            .cloned()
            .or_else(|| {
                let mut by_port = targets.iter().filter(|((_, p), _)| *p == port);
                match (by_port.next(), by_port.next()) {
                    (Some((_, target)), None) => Some(target.clone()),
                    _ => None,
                }
            })
    }
}

/// The remote forwards a session holds: where each listens, and the
/// address it was requested with (needed to cancel it). Shared with the
/// task asking again for the ones the server refused.
#[derive(Clone, Debug, Default)]
pub(crate) struct GrantedForwards {
    granted: Arc<Mutex<Vec<(RemoteForwardPort, String)>>>,
}

impl GrantedForwards {
    pub(crate) fn add(&self, index: usize, port: u16, bind_host: &str) {
        if let Ok(mut granted) = self.granted.lock() {
            granted.push((RemoteForwardPort { index, port }, bind_host.to_owned()));
            granted.sort_by_key(|(forward, _)| forward.index);
        }
    }

    /// Where each granted forward listens, in the order they were given.
    pub(crate) fn ports(&self) -> Vec<RemoteForwardPort> {
        self.granted
            .lock()
            .map(|granted| granted.iter().map(|(forward, _)| *forward).collect())
            .unwrap_or_default()
    }

    /// The forward at `index` and the address it was requested with.
    pub(crate) fn get(&self, index: usize) -> Option<(RemoteForwardPort, String)> {
        let granted = self.granted.lock().ok()?;
        granted
            .iter()
            .find(|(forward, _)| forward.index == index)
            .cloned()
    }
}

/// Where a remote forward ended up listening, for logs and callers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RemoteForwardPort {
    /// The forward's position among [`ConnectOptions::remote_forwards`](crate::ConnectOptions::remote_forwards), from 0.
    pub index: usize,
    /// The port the server listens on (the one it chose, if 0 was asked).
    pub port: u16,
}

#[cfg(test)]
mod tests {
    use super::*;
    use alknet_proxy::TargetAddr;

    #[test]
    fn forwarded_channels_find_their_target() {
        let table = RemoteForwardTable::default();
        let web = ForwardTarget::Tcp(TargetAddr::from_host_port("localhost", 80));
        let db = ForwardTarget::Unix("/run/db.sock".into());
        table.insert("127.0.0.1", 8080, web.clone());
        table.insert("127.0.0.1", 5432, db.clone());
        assert_eq!(table.lookup("127.0.0.1", 8080), Some(web.clone()));
        assert_eq!(table.lookup("localhost", 5432), Some(db));
        assert_eq!(table.lookup("127.0.0.1", 9999), None);
        // Two forwards on one port (different addresses): no guessing.
        table.insert("::1", 8080, web);
        assert_eq!(table.lookup("other", 8080), None);
    }
}
