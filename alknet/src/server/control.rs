//! The control channel as a sink: each admitted `alknet-control:0`
//! channel runs the call protocol against the server's hub, with the
//! session's identity and the limits for an untrusted peer.

use alknet_call::{CallConnection, ConnectionOptions, Hub};
use async_trait::async_trait;
use tracing::debug;

use super::sink::{ChannelSink, IncomingChannel};

/// Serves the hub on control channels.
pub(crate) struct ControlSink {
    pub(crate) hub: Hub,
}

#[async_trait]
impl ChannelSink for ControlSink {
    async fn handle(&self, channel: IncomingChannel) {
        let identity = channel.info().identity.clone();
        let stream = channel.accept().await;
        debug!("control channel opened");
        let caller = CallConnection::new(stream)
            .serve(self.hub.clone())
            .peer_identity(identity)
            .options(ConnectionOptions::untrusted_peer())
            .spawn();
        // The connection ends with the channel, or — when the session ends
        // and this future is dropped — with the session.
        struct CloseOnDrop(alknet_call::Caller);
        impl Drop for CloseOnDrop {
            fn drop(&mut self) {
                self.0.close();
            }
        }
        let caller = CloseOnDrop(caller);
        caller.0.closed().await;
    }
}
