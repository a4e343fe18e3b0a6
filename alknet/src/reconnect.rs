//! A client that never gives up: whenever its SSH session ends, it opens a
//! new one (new transport connection, new handshake), backing off 1 s, 2 s,
//! 4 s … up to 30 s between failed attempts, forever.
//!
//! Only errors that retrying cannot fix end it: the server refusing our
//! key, presenting a host key other than the pinned one, or presenting a
//! TLS certificate we do not trust.
//!
//! A session that has seen many tunnels end is also replaced, without a
//! gap: see [`ConnectOptions::renew_after_tunnels`].

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use alknet_proxy::{BoxStream, ForwardTarget, OpenError, OpenErrorKind, StreamOpener, TargetAddr};
use alknet_transport::{Transport, TransportError};
use async_trait::async_trait;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::backoff::Backoff;
use crate::session_wear::SessionWear;
use crate::{Client, ConnectOptions, Error};

const FIRST_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(30);

/// Where a [`ReconnectingClient`] stands.
#[derive(Clone)]
#[non_exhaustive]
pub enum SessionState {
    /// No session right now; one is being set up.
    Connecting,
    /// A session is up.
    Connected(Arc<Client>),
    /// An error retrying cannot fix ended the client.
    Failed(Arc<Error>),
}

impl fmt::Debug for SessionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SessionState::Connecting => f.write_str("Connecting"),
            SessionState::Connected(client) => {
                write!(f, "Connected({})", client.server_fingerprint())
            }
            SessionState::Failed(error) => write!(f, "Failed({error})"),
        }
    }
}

/// An SSH session to one server, re-established whenever it ends.
///
/// Implements [`StreamOpener`]: while a session is up, streams open through
/// it; while not, opening fails at once with [`OpenErrorKind::TunnelDown`],
/// so listeners in front of it stay open and work again once it is back.
pub struct ReconnectingClient {
    state: watch::Receiver<SessionState>,
    stop: CancellationToken,
    transport: Arc<dyn Transport>,
}

impl ReconnectingClient {
    /// Starts connecting in the background. Needs a tokio runtime.
    pub fn start(transport: Arc<dyn Transport>, options: ConnectOptions) -> Self {
        let (state, receiver) = watch::channel(SessionState::Connecting);
        let stop = CancellationToken::new();
        tokio::spawn(keep_connected(
            transport.clone(),
            options,
            state,
            stop.clone(),
        ));
        Self {
            state: receiver,
            stop,
            transport,
        }
    }

    /// The current session, if one is up.
    pub fn current(&self) -> Option<Arc<Client>> {
        match &*self.state.borrow() {
            SessionState::Connected(client) if !client.is_closed() => Some(client.clone()),
            _ => None,
        }
    }

    /// A receiver that sees every state change, for code that must act on
    /// each new session (such as re-requesting remote forwards).
    pub fn states(&self) -> watch::Receiver<SessionState> {
        self.state.clone()
    }

    /// Completes with the error if the client gives up (see the module
    /// docs); never completes otherwise.
    pub async fn failed(&self) -> Arc<Error> {
        let mut state = self.state.clone();
        loop {
            if let SessionState::Failed(error) = &*state.borrow_and_update() {
                return error.clone();
            }
            if state.changed().await.is_err() {
                // The task ended without failing: it was stopped.
                std::future::pending::<()>().await;
            }
        }
    }

    /// Stops reconnecting and says goodbye to the server.
    pub async fn shutdown(&self) {
        self.stop.cancel();
        if let Some(client) = self.current() {
            client.disconnect().await;
        }
        // An iroh endpoint says goodbye to its peers.
        self.transport.close().await;
    }
}

impl Drop for ReconnectingClient {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[async_trait]
impl StreamOpener for ReconnectingClient {
    async fn open(&self, target: &TargetAddr) -> Result<BoxStream, OpenError> {
        match self.current() {
            Some(client) => client.open(target).await,
            None => Err(OpenError::new(OpenErrorKind::TunnelDown)),
        }
    }

    async fn open_unix(&self, path: &Path) -> Result<BoxStream, OpenError> {
        match self.current() {
            Some(client) => client.open_unix(path).await,
            None => Err(OpenError::new(OpenErrorKind::TunnelDown)),
        }
    }
}

/// Errors that a new attempt would only repeat.
fn is_permanent(error: &Error) -> bool {
    matches!(
        error,
        Error::AuthRejected { .. }
            | Error::CertificateRejected { .. }
            | Error::HostKeyMismatch { .. }
            | Error::HostKeyChanged(_)
            | Error::HostKeyRevoked { .. }
            | Error::HostKeyUnknown { .. }
            | Error::HostKeyChangedSinceStart { .. }
            | Error::InvalidFingerprint(_)
            | Error::Auth(_)
            | Error::Transport(TransportError::CertificateRejected { .. })
    )
}

/// After how many tunnels closed first a session is renewed, if ever.
fn renewal_threshold(options: &ConnectOptions) -> Option<usize> {
    let moves = options
        .remote_forwards
        .iter()
        .all(|spec| !matches!(spec.target, ForwardTarget::Udp(_)));
    (options.renew_after_tunnels > 0 && moves).then_some(options.renew_after_tunnels)
}

/// A fresh session to replace `worn`, its remote forwards taken over from
/// it: the fresh one is up before `worn` lets go of them.
async fn renew(
    transport: &dyn Transport,
    options: &ConnectOptions,
    worn: &Client,
) -> Result<Client, Error> {
    let mut without_forwards = options.clone();
    without_forwards.remote_forwards.clear();
    let fresh = Client::connect(transport, without_forwards).await?;
    if !options.remote_forwards.is_empty() {
        worn.cancel_remote_forwards().await;
        fresh
            .request_remote_forwards(&options.remote_forwards)
            .await;
    }
    Ok(fresh)
}

/// Ends a replaced session once its last channel has (and no open begun
/// just before the move is still waiting), or at once on stop.
async fn retire(worn: Arc<Client>, stop: CancellationToken) {
    tokio::select! {
        () = worn.wear().until(SessionWear::idle) => {}
        () = worn.closed() => return,
        () = stop.cancelled() => {}
    }
    worn.disconnect().await;
}

async fn keep_connected(
    transport: Arc<dyn Transport>,
    options: ConnectOptions,
    state: watch::Sender<SessionState>,
    stop: CancellationToken,
) {
    let mut backoff = Backoff::new(FIRST_RETRY, MAX_RETRY);
    let server = transport.describe();
    let mut options = options;
    loop {
        let attempt = tokio::select! {
            attempt = Client::connect(transport.as_ref(), options.clone()) => attempt,
            () = stop.cancelled() => return,
        };
        match attempt {
            Ok(client) => {
                backoff.reset();
                let mut client = Arc::new(client);
                info!(server = %server, host_key = %client.server_fingerprint(), "connected");
                // Every reconnection must meet the key of the first one.
                options
                    .session_pin
                    .get_or_insert_with(|| client.server_fingerprint().to_owned());
                state.send_replace(SessionState::Connected(client.clone()));
                let renew_after = renewal_threshold(&options);
                loop {
                    let worn_out = async {
                        match renew_after {
                            Some(limit) => {
                                client
                                    .wear()
                                    .until(|wear| wear.closed_first() >= limit)
                                    .await;
                            }
                            None => std::future::pending().await,
                        }
                    };
                    tokio::select! {
                        () = client.closed() => break,
                        () = stop.cancelled() => return,
                        () = worn_out => {}
                    }
                    let renewed = tokio::select! {
                        renewed = renew(transport.as_ref(), &options, &client) => renewed,
                        () = stop.cancelled() => return,
                    };
                    match renewed {
                        Ok(fresh) => {
                            let worn = std::mem::replace(&mut client, Arc::new(fresh));
                            state.send_replace(SessionState::Connected(client.clone()));
                            // A new session like any other (the worn one
                            // may even have died meanwhile).
                            info!(server = %server, host_key = %client.server_fingerprint(), "connected");
                            info!(server = %server, "moved to a fresh session");
                            tokio::spawn(retire(worn, stop.clone()));
                        }
                        Err(error) => {
                            warn!(server = %server, %error, "cannot open a fresh session; keeping this one");
                            tokio::select! {
                                () = client.closed() => break,
                                () = stop.cancelled() => return,
                                () = tokio::time::sleep(MAX_RETRY) => {}
                            }
                        }
                    }
                }
                state.send_replace(SessionState::Connecting);
                warn!(server = %server, "connection to the server lost");
            }
            Err(error) if is_permanent(&error) => {
                state.send_replace(SessionState::Failed(Arc::new(error)));
                return;
            }
            Err(error) => warn!(server = %server, %error, "cannot reach the server"),
        }
        let delay = backoff.next_delay(fastrand::f64());
        info!(
            retry_in = %format_args!("{:.1}s", delay.as_secs_f64()),
            "reconnecting"
        );
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = stop.cancelled() => return,
        }
    }
}
