//! One connection from accept to close: the login deadline (from accept,
//! stealth phase and SSH handshake included), stealth's web-or-SSH branch,
//! the SSH session, and a disconnect that cannot be ignored.

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use alknet_auth::ConnectionPermit;
use alknet_stealth::{Branch, StealthConfig, branch};
use alknet_transport::{BoxStream, TransportInfo};
use russh::Disconnect;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::Server;
use super::handler::SessionHandler;
use super::peer::Peer;
use crate::flow::{Backlog, GatedStream, WriteBehind};
use crate::kill_switch::KillableStream;

/// How one connection is to be served.
pub(super) struct Accepted {
    pub(super) stream: BoxStream,
    pub(super) info: TransportInfo,
    pub(super) stealth: Option<StealthConfig>,
    /// Its place under the connection limits, if it was counted.
    pub(super) permit: Option<ConnectionPermit>,
    /// When it was accepted: the login deadline counts from here.
    pub(super) at: Instant,
}

impl Server {
    /// Serves one connection, logging its opening and closing.
    pub(super) async fn serve_accepted(
        &self,
        accepted: Accepted,
        stop: CancellationToken,
        kill: CancellationToken,
    ) {
        let peer = Peer::of(&accepted.info);
        let started = std::time::Instant::now();
        let _open = self.inner.open_connections.count();
        info!(remote_addr = %peer, transport = %accepted.info.kind, "connection opened");
        self.run_connection(accepted, peer.clone(), stop, kill)
            .await;
        info!(remote_addr = %peer, duration = ?started.elapsed(), "connection closed");
    }

    async fn run_connection(
        &self,
        accepted: Accepted,
        peer: Peer,
        stop: CancellationToken,
        kill: CancellationToken,
    ) {
        let Accepted {
            stream,
            info,
            stealth,
            mut permit,
            at,
        } = accepted;
        let deadline = at + self.inner.login_grace;
        // Every byte, from the first, goes through the kill switch.
        let stream = KillableStream::new(stream, kill.clone());
        let stream: BoxStream = match stealth {
            None => Box::new(stream),
            Some(config) => {
                let outcome = tokio::select! {
                    outcome = tokio::time::timeout_at(deadline, branch(stream, &config)) => {
                        outcome.ok().and_then(Result::ok)
                    }
                    () = stop.cancelled() => None,
                };
                match outcome {
                    Some(Branch::Ssh(replay)) => Box::new(replay),
                    Some(Branch::Web(visitor)) => {
                        debug!(remote_addr = %peer, "not a tunnel: served as the web site");
                        // A visitor is not logging in: its startup slot goes
                        // to the next client, and the login deadline does not
                        // cut off a long download.
                        if let Some(permit) = permit.as_mut() {
                            permit.authenticated();
                        }
                        tokio::select! {
                            () = visitor.serve() => {}
                            () = stop.cancelled() => {}
                        }
                        return;
                    }
                    _ => {
                        debug!(remote_addr = %peer, "closed before saying anything");
                        return;
                    }
                }
            }
        };
        // Reading pauses while the session's channels hold too much unread.
        let backlog = Backlog::default();
        backlog.let_peer_close();
        let stream = WriteBehind::new(
            GatedStream::server(stream, backlog.clone()),
            backlog.clone(),
        );
        let authenticated = CancellationToken::new();
        // The session keeps the configuration it started with.
        let auth = self.inner.auth.current();
        let config = self.inner.russh_config(&auth);
        let handler = SessionHandler {
            server: self.inner.clone(),
            auth,
            peer: peer.clone(),
            transport: info.kind.clone(),
            grant: None,
            authenticated: authenticated.clone(),
            session_end: kill.clone(),
            remote_forwards: Default::default(),
            open_channels: Arc::new(AtomicUsize::new(0)),
            channel_closed: Default::default(),
            backlog,
        };

        // run_stream returns once the client's identification line is read.
        let session = tokio::select! {
            started = russh::server::run_stream(config, stream, handler) => started,
            () = tokio::time::sleep_until(deadline) => Err(russh::Error::ConnectionTimeout),
            () = stop.cancelled() => Err(russh::Error::Disconnect),
        };
        let mut session = match session {
            Ok(session) => session,
            Err(error) => {
                debug!(remote_addr = %peer, %error, "no SSH session");
                kill.cancel();
                return;
            }
        };
        let handle = session.handle();
        let login = async {
            tokio::select! {
                () = authenticated.cancelled() => {
                    // No longer a startup: its slot goes to the next client.
                    if let Some(permit) = permit.as_mut() {
                        permit.authenticated();
                    }
                    std::future::pending::<()>().await;
                }
                () = tokio::time::sleep_until(deadline) => {}
            }
        };
        let outcome = tokio::select! {
            result = &mut session => Some(result),
            () = login => {
                let _ = handle.disconnect(Disconnect::ByApplication, "login grace time exceeded".into(), String::new()).await;
                None
            }
            () = stop.cancelled() => {
                let _ = handle.disconnect(Disconnect::ByApplication, "server shutting down".into(), String::new()).await;
                None
            }
        };
        let outcome = match outcome {
            Some(result) => result,
            None => {
                // Give the client a moment to read the goodbye, then stop
                // waiting for it.
                match tokio::time::timeout(Duration::from_secs(1), &mut session).await {
                    Ok(result) => result,
                    Err(_) => {
                        kill.cancel();
                        session.await
                    }
                }
            }
        };
        if let Err(error) = outcome {
            debug!(remote_addr = %peer, %error, "session ended with an error");
        }
        // Any relay still running belongs to this connection only.
        kill.cancel();
        drop(permit);
    }
}
