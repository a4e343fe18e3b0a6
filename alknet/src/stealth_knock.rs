//! The client's side of a stealth listener that requires a token: after
//! the TLS handshake, knock with a fresh token of the client's key
//! ([`alknet_stealth::knock`]), then run SSH on the upgraded stream.

use std::sync::Arc;
use std::time::Duration;

use alknet_auth::{PrivateKey, mint_token, unix_now};
use alknet_transport::{BoxStream, Transport, TransportError};
use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// How long the server may take to answer the knock.
const KNOCK_TIMEOUT: Duration = Duration::from_secs(30);

/// A TLS transport whose connections knock before they are used.
pub(crate) struct KnockingTransport {
    tls: Arc<dyn Transport>,
    key: Arc<PrivateKey>,
    /// The `Host` header: the TLS server name, with `:port` unless 443.
    host: String,
}

impl KnockingTransport {
    pub(crate) fn new(tls: Arc<dyn Transport>, key: Arc<PrivateKey>, host: String) -> Self {
        Self { tls, key, host }
    }

    fn refused(&self, reason: impl Into<String>) -> TransportError {
        TransportError::KnockRefused {
            server: self.tls.describe(),
            reason: reason.into(),
        }
    }
}

#[async_trait]
impl Transport for KnockingTransport {
    async fn connect(&self) -> Result<BoxStream, TransportError> {
        let stream = self.tls.connect().await?;
        let token = mint_token(&self.key, unix_now())
            .map_err(|error| self.refused(format!("--stealth needs an Ed25519 key ({error})")))?;
        let websocket_key = STANDARD.encode(fastrand::u128(..).to_be_bytes());
        let knocked = tokio::time::timeout(
            KNOCK_TIMEOUT,
            alknet_stealth::knock(stream, &self.host, &token, &websocket_key),
        )
        .await
        .map_err(|_| self.refused("no answer to the knock within 30 s"))?;
        match knocked {
            Ok(stream) => Ok(Box::new(stream)),
            Err(error) => Err(self.refused(error.to_string())),
        }
    }

    fn describe(&self) -> String {
        self.tls.describe()
    }

    async fn close(&self) {
        self.tls.close().await;
    }
}
