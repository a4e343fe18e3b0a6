//! The control channel: the call protocol over an SSH `direct-tcpip`
//! channel to the reserved target `alknet-control:0`.
//!
//! The server bridges each such channel into its
//! [`OperationRegistry`](alknet_call::OperationRegistry) with the session's
//! identity; a client opens one with [`Client::open_control`]. Because it is
//! an ordinary channel, `alknet connect -L 127.0.0.1:PORT:alknet-control:0`
//! hands the protocol to any local program too.

use std::sync::Arc;

use alknet_call::{CallConnection, Caller, ConnectionOptions, Service};
use alknet_proxy::OpenError;

use crate::Client;

/// The reserved host name of the control channel.
pub const CONTROL_HOST: &str = "alknet-control";
/// The port of the control channel.
pub const CONTROL_PORT: u16 = 0;

impl Client {
    /// Opens a control channel for calling the server's operations. Calls
    /// the server makes back on it get `not_found`; use
    /// [`open_control_serving`](Self::open_control_serving) to answer them.
    pub async fn open_control(&self) -> Result<Caller, OpenError> {
        self.open_control_with(None, ConnectionOptions::default())
            .await
    }

    /// Opens a control channel on which this client also serves `service`
    /// to the server (a spoke registering with its hub, for instance).
    pub async fn open_control_serving(
        &self,
        service: Arc<dyn Service>,
    ) -> Result<Caller, OpenError> {
        self.open_control_with(Some(service), ConnectionOptions::default())
            .await
    }

    /// [`open_control_serving`](Self::open_control_serving) with explicit
    /// connection options (time limits, frame size).
    pub async fn open_control_with(
        &self,
        service: Option<Arc<dyn Service>>,
        options: ConnectionOptions,
    ) -> Result<Caller, OpenError> {
        let stream = self.open_direct(CONTROL_HOST, CONTROL_PORT).await?;
        let mut connection = CallConnection::new(stream).options(options);
        if let Some(service) = service {
            connection = connection.serve_shared(service);
        }
        Ok(connection.spawn())
    }
}
