//! The accept loop of one listener: connection limits first (per address,
//! startups in all and per source), a task per admitted connection, a
//! file-descriptor shortage met with back-off instead of spinning, and a
//! graceful shutdown.

use std::future::Future;
use std::time::Duration;

use alknet_stealth::StealthConfig;
use alknet_transport::{TransportAcceptor, TransportError};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use super::connection::Accepted;
use super::peer::Peer;
use super::{ListenerOptions, Server};
use crate::Error;

/// How often "out of file descriptors" is logged while it lasts.
const FD_SHORTAGE_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Waits before accepting again after a failure: a little after a failed
/// handshake; doubling up to a second while file descriptors run short (a
/// tight loop would only burn the CPU the server needs to finish
/// connections and free some).
#[derive(Debug)]
struct AcceptBackoff {
    delay: Duration,
    last_logged: Option<Instant>,
}

impl AcceptBackoff {
    const FIRST: Duration = Duration::from_millis(10);
    const MAX: Duration = Duration::from_secs(1);

    fn new() -> Self {
        Self {
            delay: Self::FIRST,
            last_logged: None,
        }
    }

    fn succeeded(&mut self) {
        self.delay = Self::FIRST;
    }

    /// What to wait after `error`, logging it at most once per interval
    /// when it is a shortage of file descriptors.
    fn after(&mut self, error: &TransportError) -> Duration {
        if !is_fd_shortage(error) {
            warn!(%error, "accept failed");
            return Duration::from_millis(50);
        }
        let now = Instant::now();
        if self
            .last_logged
            .is_none_or(|at| now.duration_since(at) >= FD_SHORTAGE_LOG_INTERVAL)
        {
            warn!(%error, "out of file descriptors: accepting more slowly until some are free");
            self.last_logged = Some(now);
        }
        let delay = self.delay;
        self.delay = (self.delay * 2).min(Self::MAX);
        delay
    }
}

/// `EMFILE` or `ENFILE`: this process's or the system's file table is full.
fn is_fd_shortage(error: &TransportError) -> bool {
    const ENFILE: i32 = 23;
    const EMFILE: i32 = 24;
    matches!(error, TransportError::Accept(io)
        if cfg!(unix) && matches!(io.raw_os_error(), Some(EMFILE | ENFILE)))
}

impl Server {
    /// The stealth settings of `listener`'s connections, with the server's
    /// token gate when the listener requires a knock.
    fn stealth_of(&self, listener: &ListenerOptions) -> Option<StealthConfig> {
        let config = listener.stealth.clone()?;
        Some(if listener.require_token {
            config.requiring_token(self.inner.knock_tokens.clone())
        } else {
            config
        })
    }

    /// Like [`serve`](Server::serve), with per-listener options (such as
    /// stealth mode for a TLS listener).
    pub async fn serve_with<A>(
        &self,
        acceptor: &A,
        listener: &ListenerOptions,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), Error>
    where
        A: TransportAcceptor + ?Sized,
    {
        let shutdown = async {
            shutdown.await;
            info!(connections = self.open_connections(), "shutting down");
        };
        self.serve_listener(acceptor, listener, shutdown).await
    }

    /// Accepts until `shutdown`, then winds down this listener's
    /// connections (without logging the shutdown: the caller does, once).
    pub(crate) async fn serve_listener<A>(
        &self,
        acceptor: &A,
        listener: &ListenerOptions,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), Error>
    where
        A: TransportAcceptor + ?Sized,
    {
        let stop = CancellationToken::new();
        let kill = CancellationToken::new();
        let connections = TaskTracker::new();
        let mut backoff = AcceptBackoff::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                accepted = acceptor.accept() => match accepted {
                    Ok((stream, info)) => {
                        backoff.succeeded();
                        let at = Instant::now();
                        let peer = Peer::of(&info);
                        // The limits are read per connection, so a reload applies at once.
                        let auth = self.inner.auth.current();
                        let admitted = self.inner.limiter.admit(
                            peer.key(),
                            auth.max_connections_per_ip,
                            &auth.startups,
                            fastrand::u32(0..100),
                        );
                        let permit = match admitted {
                            Ok(permit) => permit,
                            Err(refusal) => {
                                info!(remote_addr = %peer, "connection refused: {refusal}");
                                continue;
                            }
                        };
                        let server = self.clone();
                        let (stop, kill) = (stop.child_token(), kill.child_token());
                        let accepted = Accepted {
                            stream,
                            info,
                            stealth: self.stealth_of(listener),
                            permit: Some(permit),
                            at,
                        };
                        connections.spawn(async move {
                            server.serve_accepted(accepted, stop, kill).await;
                        });
                    }
                    Err(error) => {
                        let delay = backoff.after(&error);
                        tokio::time::sleep(delay).await;
                    }
                },
            }
        }
        connections.close();
        stop.cancel();
        if tokio::time::timeout(self.inner.shutdown_grace, connections.wait())
            .await
            .is_err()
        {
            debug!("clients still connected after the grace period: cutting them off");
            kill.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(2), connections.wait()).await;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fd_shortages_back_off_to_a_second_and_reset_on_success() {
        let emfile = TransportError::Accept(std::io::Error::from_raw_os_error(24));
        let other = TransportError::Accept(std::io::Error::other("handshake"));
        assert!(is_fd_shortage(&emfile));
        assert!(!is_fd_shortage(&other));
        let mut backoff = AcceptBackoff::new();
        let delays: Vec<Duration> = (0..10).map(|_| backoff.after(&emfile)).collect();
        assert_eq!(delays[0], Duration::from_millis(10));
        assert_eq!(delays[1], Duration::from_millis(20));
        assert_eq!(*delays.last().unwrap(), Duration::from_secs(1));
        backoff.succeeded();
        assert_eq!(backoff.after(&emfile), Duration::from_millis(10));
        assert_eq!(backoff.after(&other), Duration::from_millis(50));
    }
}
