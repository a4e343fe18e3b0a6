//! The one direct dialer: resolve a target, try its addresses in turn
//! within one time budget, and say why it failed without naming it.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::{BoxStream, OpenError, OpenErrorKind, StreamOpener, TargetAddr};

/// Connects straight to `target` over TCP: names are resolved here, and
/// every resolved address is tried in turn within `timeout` overall.
///
/// Errors keep their kind (refused, unreachable, timed out, not resolved)
/// so that a SOCKS5 client or SSH peer learns why, but never name the
/// target.
pub async fn connect_direct(
    target: &TargetAddr,
    timeout: Duration,
) -> Result<TcpStream, OpenError> {
    connect_direct_filtered(target, timeout, |_| true).await
}

/// Like [`connect_direct`], but only to resolved addresses `allowed`
/// accepts: a policy over address ranges then also covers names that
/// resolve into them, and no packet is sent to a refused address.
pub async fn connect_direct_filtered(
    target: &TargetAddr,
    timeout: Duration,
    allowed: impl Fn(SocketAddr) -> bool,
) -> Result<TcpStream, OpenError> {
    let deadline = Instant::now() + timeout;
    let addrs: Vec<SocketAddr> = match target {
        TargetAddr::Ip(addr) => vec![*addr],
        TargetAddr::Domain(name, port) => {
            let lookup = tokio::net::lookup_host((name.as_str(), *port));
            match tokio::time::timeout_at(deadline, lookup).await {
                Ok(Ok(addrs)) => addrs.collect(),
                Ok(Err(_)) => return Err(OpenError::new(OpenErrorKind::NameNotResolved)),
                Err(_) => return Err(OpenError::new(OpenErrorKind::TimedOut)),
            }
        }
    };
    let resolved = addrs.len();
    let addrs: Vec<SocketAddr> = addrs.into_iter().filter(|addr| allowed(*addr)).collect();
    if addrs.is_empty() && resolved > 0 {
        return Err(OpenError::with_detail(
            OpenErrorKind::NotAllowed,
            "every address of the target is refused by policy",
        ));
    }
    let mut last_error = OpenError::new(OpenErrorKind::NameNotResolved);
    for (index, addr) in addrs.iter().enumerate() {
        // Share what is left of the budget among the remaining addresses, so
        // one black-holed address cannot use it all up.
        let remaining = deadline.saturating_duration_since(Instant::now());
        let share = remaining / u32::try_from(addrs.len() - index).unwrap_or(u32::MAX);
        match tokio::time::timeout(share, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Ok(Err(error)) => last_error = OpenError::from(error),
            Err(_) => last_error = OpenError::new(OpenErrorKind::TimedOut),
        }
    }
    Err(last_error)
}

/// Connects to a Unix-domain socket within `timeout`.
pub async fn connect_unix(path: &Path, timeout: Duration) -> Result<BoxStream, OpenError> {
    #[cfg(unix)]
    {
        match tokio::time::timeout(timeout, tokio::net::UnixStream::connect(path)).await {
            Ok(Ok(stream)) => Ok(Box::new(stream)),
            Ok(Err(error)) => Err(OpenError::from(error)),
            Err(_) => Err(OpenError::new(OpenErrorKind::TimedOut)),
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (path, timeout);
        Err(OpenError::with_detail(
            OpenErrorKind::NotAllowed,
            "Unix sockets exist only on Unix",
        ))
    }
}

/// A [`StreamOpener`] that connects directly with [`connect_direct`] (and
/// [`connect_unix`]): what a client does to reach its server, and a
/// stand-in for the tunnel in tests.
#[derive(Clone, Debug)]
pub struct DirectConnector {
    timeout: Duration,
}

impl DirectConnector {
    /// A connector whose connects give up after `timeout`.
    pub fn new(timeout: Duration) -> Self {
        Self { timeout }
    }
}

#[async_trait]
impl StreamOpener for DirectConnector {
    async fn open(&self, target: &TargetAddr) -> Result<BoxStream, OpenError> {
        Ok(Box::new(connect_direct(target, self.timeout).await?))
    }

    async fn open_unix(&self, path: &Path) -> Result<BoxStream, OpenError> {
        connect_unix(path, self.timeout).await
    }

    fn describe(&self) -> String {
        "direct".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn closed_port_is_refused() {
        let port = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let target = TargetAddr::from_host_port("127.0.0.1", port);
        let err = connect_direct(&target, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), OpenErrorKind::ConnectionRefused);
        assert!(!err.to_string().contains(&port.to_string()), "{err}");
    }

    #[tokio::test]
    async fn unresolvable_name_is_reported_as_such() {
        let target = TargetAddr::Domain("no-such-host.invalid".into(), 80);
        let err = connect_direct(&target, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), OpenErrorKind::NameNotResolved);
        assert!(!err.to_string().contains("no-such-host"), "{err}");
    }

    #[tokio::test]
    async fn localhost_tries_every_address() {
        // `localhost` resolves to ::1 and 127.0.0.1; only IPv4 listens here.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let target = TargetAddr::Domain("localhost".into(), port);
        let stream = connect_direct(&target, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(stream.peer_addr().unwrap().port(), port);
    }

    #[tokio::test]
    async fn refused_addresses_are_never_dialled() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = TargetAddr::Ip(listener.local_addr().unwrap());
        let err = connect_direct_filtered(&target, Duration::from_secs(5), |_| false)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), OpenErrorKind::NotAllowed);
    }
}
