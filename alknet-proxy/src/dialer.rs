//! The dialer: how tunnel targets are reached — directly, or through an
//! upstream SOCKS5 / HTTP CONNECT proxy — with the resolved addresses
//! judged before anything is sent to them.

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use alknet_transport::{
    BoxStream, OpenError, StreamOpener, TargetAddr, connect_direct_filtered, connect_unix,
};
use async_trait::async_trait;

use crate::UpstreamProxy;

/// Reaches targets directly or through an [`UpstreamProxy`], within a
/// time limit. Unix-socket targets are always local.
///
/// `alknet serve` dials every tunnelled channel through one (its default
/// channel sink); `alknet connect --proxy` reaches its server through one.
#[derive(Clone)]
pub struct Dialer {
    upstream: Option<UpstreamProxy>,
    timeout: Duration,
}

impl fmt::Debug for Dialer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dialer")
            .field("via", &self.describe())
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Dialer {
    /// Connects directly, giving up after `timeout`.
    pub fn direct(timeout: Duration) -> Self {
        Self {
            upstream: None,
            timeout,
        }
    }

    /// Connects through `proxy` (or directly when `None`), giving up after
    /// `timeout`.
    pub fn new(proxy: Option<UpstreamProxy>, timeout: Duration) -> Self {
        Self {
            upstream: proxy,
            timeout,
        }
    }

    /// The upstream proxy, if targets are reached through one.
    pub fn upstream(&self) -> Option<&UpstreamProxy> {
        self.upstream.as_ref()
    }

    /// Opens a stream to `target`. Directly, a name is resolved here and
    /// only the addresses `allowed` accepts are dialled (a policy over
    /// address ranges then covers names too); through a proxy, the proxy
    /// resolves names and `allowed` sees only literal addresses.
    pub async fn dial(
        &self,
        target: &TargetAddr,
        allowed: impl Fn(SocketAddr) -> bool,
    ) -> Result<BoxStream, OpenError> {
        match &self.upstream {
            Some(proxy) => {
                if let TargetAddr::Ip(addr) = target
                    && !allowed(*addr)
                {
                    return Err(OpenError::with_detail(
                        alknet_transport::OpenErrorKind::NotAllowed,
                        "the address is refused by policy",
                    ));
                }
                Ok(Box::new(proxy.connect(target, self.timeout).await?))
            }
            None => Ok(Box::new(
                connect_direct_filtered(target, self.timeout, allowed).await?,
            )),
        }
    }

    /// Opens a stream to a local Unix-domain socket.
    pub async fn dial_unix(&self, path: &Path) -> Result<BoxStream, OpenError> {
        connect_unix(path, self.timeout).await
    }
}

#[async_trait]
impl StreamOpener for Dialer {
    async fn open(&self, target: &TargetAddr) -> Result<BoxStream, OpenError> {
        self.dial(target, |_| true).await
    }

    async fn open_unix(&self, path: &Path) -> Result<BoxStream, OpenError> {
        self.dial_unix(path).await
    }

    fn describe(&self) -> String {
        self.upstream
            .as_ref()
            .map_or_else(|| "direct".to_owned(), ToString::to_string)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alknet_transport::OpenErrorKind;

    #[tokio::test]
    async fn literal_addresses_are_judged_even_through_a_proxy() {
        // The proxy is never contacted: the refusal comes first.
        let proxy: UpstreamProxy = "socks5://127.0.0.1:9".parse().unwrap();
        let dialer = Dialer::new(Some(proxy), Duration::from_secs(5));
        let target = TargetAddr::from_host_port("10.0.0.1", 80);
        let Err(error) = dialer.dial(&target, |_| false).await else {
            panic!("a refused address was dialled");
        };
        assert_eq!(error.kind(), OpenErrorKind::NotAllowed);
        assert_eq!(dialer.describe(), "socks5://127.0.0.1:9");
        assert_eq!(Dialer::direct(Duration::from_secs(1)).describe(), "direct");
    }
}
