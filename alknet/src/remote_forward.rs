//! Remote (`-R`) forwards: the server listens on the client's behalf and
//! opens a `forwarded-tcpip` channel back for every connection; the client
//! connects each such channel to its local target.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use alknet_proxy::{BoxStream, ForwardTarget, OpenError, connect_direct, connect_unix, relay};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::debug;

/// The address a server binds for a remote forward.
///
/// Like OpenSSH with `GatewayPorts no`, a forward listens on loopback only,
/// whatever the client asked, unless the server allows remote binds; then
/// the requested address is used (`""`, `*` or `0.0.0.0`: every interface).
pub(crate) fn server_bind_host(requested: &str, gateway_ports: bool) -> &str {
    if !gateway_ports {
        return "127.0.0.1";
    }
    match requested {
        "" | "*" => "0.0.0.0",
        "localhost" => "127.0.0.1",
        other => other,
    }
}

/// Server side: accepts on `listener` until `stop`, opening a channel back
/// to the client for each connection. `address` and `port` are echoed so
/// the client can tell its forwards apart.
pub(crate) async fn serve_on_server(
    listener: TcpListener,
    handle: russh::server::Handle,
    address: String,
    port: u32,
    stop: CancellationToken,
) {
    loop {
        let (mut inbound, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    debug!(%error, "remote forward cannot accept");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = stop.cancelled() => return,
        };
        let _ = inbound.set_nodelay(true);
        let (handle, address, stop) = (handle.clone(), address.clone(), stop.clone());
        tokio::spawn(async move {
            let opened = handle
                .channel_open_forwarded_tcpip(
                    address,
                    port,
                    peer.ip().to_string(),
                    u32::from(peer.port()),
                )
                .await;
            match opened {
                Ok(channel) => {
                    let mut channel = channel.into_stream();
                    tokio::select! {
                        result = relay(&mut inbound, &mut channel) => {
                            if let Err(error) = result {
                                debug!(%error, "forwarded connection ended with an error");
                            }
                        }
                        () = stop.cancelled() => {}
                    }
                }
                Err(error) => debug!(%error, "the client refused a forwarded connection"),
            }
        });
    }
}

/// Client side: which local target each remote forward leads to, keyed
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

/// Client side: connects to a forward's local target.
pub(crate) async fn dial_local(
    target: &ForwardTarget,
    timeout: Duration,
) -> Result<BoxStream, OpenError> {
    match target {
        ForwardTarget::Tcp(addr) => Ok(Box::new(connect_direct(addr, timeout).await?)),
        ForwardTarget::Unix(path) => connect_unix(path, timeout).await,
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
    fn servers_bind_loopback_unless_gateway_ports_allows_more() {
        assert_eq!(server_bind_host("0.0.0.0", false), "127.0.0.1");
        assert_eq!(server_bind_host("", false), "127.0.0.1");
        assert_eq!(server_bind_host("", true), "0.0.0.0");
        assert_eq!(server_bind_host("*", true), "0.0.0.0");
        assert_eq!(server_bind_host("localhost", true), "127.0.0.1");
        assert_eq!(server_bind_host("192.0.2.1", true), "192.0.2.1");
    }

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
