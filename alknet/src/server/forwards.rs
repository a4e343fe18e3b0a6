//! Remote (`-R`) forwards, server side: admission decides, the server
//! listens, and every connection that arrives becomes a `forwarded-tcpip`
//! channel back to the client, relayed until either side ends or the
//! forward is cancelled.

use std::time::Duration;

use alknet_auth::ChannelRequest;
use alknet_proxy::relay_until;
use russh::server::Session;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::handler::SessionHandler;
use crate::flow::{Backlog, TunnelStream};

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

impl SessionHandler {
    /// `tcpip-forward`: whether the server now listens for the client.
    pub(super) async fn listen(
        &mut self,
        address: &str,
        port: &mut u32,
        session: &mut Session,
    ) -> bool {
        let Ok(requested) = u16::try_from(*port) else {
            return false;
        };
        let Some(grant) = &self.grant else {
            return false;
        };
        let request = ChannelRequest::Listen {
            host: address,
            port: requested,
            active: self.remote_forwards.len(),
        };
        if let Err(refusal) = self.auth.admit(grant, &request) {
            info!(remote_addr = %self.peer, port = requested, reason = %refusal, "remote forward refused");
            return false;
        }
        let host = server_bind_host(address, self.server.gateway_ports);
        let listener = match TcpListener::bind((host, requested)).await {
            Ok(listener) => listener,
            Err(error) => {
                info!(remote_addr = %self.peer, port = requested, %error, "remote forward refused");
                return false;
            }
        };
        let Ok(bound) = listener.local_addr() else {
            return false;
        };
        *port = u32::from(bound.port());
        let stop = self.session_end.child_token();
        self.remote_forwards
            .insert((address.to_owned(), *port), stop.clone());
        info!(remote_addr = %self.peer, listen = %bound, "remote forward listening");
        tokio::spawn(accept_forwarded(
            listener,
            session.handle(),
            address.to_owned(),
            *port,
            stop,
            self.backlog.clone(),
        ));
        true
    }

    /// `cancel-tcpip-forward`: stops listening at once.
    pub(super) fn stop_listening(&mut self, address: &str, port: u32) -> bool {
        match self.remote_forwards.remove(&(address.to_owned(), port)) {
            Some(stop) => {
                stop.cancel();
                info!(remote_addr = %self.peer, port, "remote forward closed");
                true
            }
            None => false,
        }
    }
}

/// Accepts on `listener` until `stop`, opening a channel back to the
/// client for each connection. `address` and `port` are echoed so the
/// client can tell its forwards apart.
async fn accept_forwarded(
    listener: TcpListener,
    handle: russh::server::Handle,
    address: String,
    port: u32,
    stop: CancellationToken,
    backlog: Backlog,
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
        let (handle, address, stop, backlog) = (
            handle.clone(),
            address.clone(),
            stop.clone(),
            backlog.clone(),
        );
        // From a task of its own: awaiting a Handle inside a callback would
        // deadlock the session loop.
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
                    let mut channel = TunnelStream::new(channel, backlog);
                    relay_until(&mut inbound, &mut channel, stop.cancelled()).await;
                }
                Err(error) => debug!(%error, "the client refused a forwarded connection"),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_bind_loopback_unless_gateway_ports_allows_more() {
        assert_eq!(server_bind_host("0.0.0.0", false), "127.0.0.1");
        assert_eq!(server_bind_host("", false), "127.0.0.1");
        assert_eq!(server_bind_host("", true), "0.0.0.0");
        assert_eq!(server_bind_host("*", true), "0.0.0.0");
        assert_eq!(server_bind_host("localhost", true), "127.0.0.1");
        assert_eq!(server_bind_host("192.0.2.1", true), "192.0.2.1");
    }
}
