//! The channel sink: where the server hands every channel that admission
//! let through. The default sink dials the target (alknet-proxy's
//! [`Dialer`], directly or through `--proxy`); the control channel is a
//! sink of its own; embedders install theirs for every channel or for
//! chosen targets ([`ServeOptions::sink`](crate::ServeOptions::sink),
//! [`ServeOptions::route`](crate::ServeOptions::route)) — the Node addon's
//! `onConnection` is one.
//!
//! ```text
//!  russh callback ──► admission (alknet-auth) ──► ChannelSink::handle(IncomingChannel)
//!                                                    ├─ DialSink: dial, accept, relay
//!                                                    ├─ control: the call protocol
//!                                                    └─ yours: accept() → a byte stream
//! ```

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use alknet_auth::{AuthConfig, Identity, SessionGrant};
use alknet_proxy::{BoxStream, Dialer, OpenErrorKind, TargetAddr, relay_until};
use alknet_transport::TransportKind;
use async_trait::async_trait;
use russh::Channel;
use russh::server::{ChannelOpenHandle, Msg};
use tracing::debug;

use crate::channel_failure::failure_for;
use crate::flow::{Backlog, TunnelStream};

/// Takes the channels the server admitted. Each call runs on a task of
/// its own, which is dropped when the session ends.
#[async_trait]
pub trait ChannelSink: Send + Sync + 'static {
    /// Handles one channel: [`accept`](IncomingChannel::accept) it and
    /// carry its bytes, or [`reject`](IncomingChannel::reject) it with a
    /// reason. Dropping it unanswered rejects it as "administratively
    /// prohibited".
    async fn handle(&self, channel: IncomingChannel);
}

/// Where a channel asks to go.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChannelTarget {
    /// A TCP host and port (`direct-tcpip`), the name unresolved.
    Tcp(TargetAddr),
    /// A Unix-domain socket (`direct-streamlocal`).
    Unix(PathBuf),
}

/// What the server knows about an admitted channel. Its target is private
/// to the user: never log it.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ChannelInfo {
    /// Who opened it, as authenticated.
    pub identity: Identity,
    /// Where it asks to go.
    pub target: ChannelTarget,
    /// The client's address (none over iroh).
    pub remote_addr: Option<SocketAddr>,
    /// Which transport carries the session.
    pub transport: TransportKind,
}

/// One admitted channel, waiting to be accepted or rejected.
pub struct IncomingChannel {
    pub(crate) info: ChannelInfo,
    pub(crate) channel: Channel<Msg>,
    pub(crate) reply: ChannelOpenHandle,
    /// Whether the client is alknet (it then learns why a dial failed).
    pub(crate) alknet_peer: bool,
    pub(crate) grant: Arc<SessionGrant>,
    pub(crate) auth: Arc<AuthConfig>,
    pub(crate) backlog: Backlog,
}

impl fmt::Debug for IncomingChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IncomingChannel")
            .field("identity", &self.info.identity.id)
            .field("transport", &self.info.transport)
            .finish_non_exhaustive()
    }
}

impl IncomingChannel {
    /// What the channel is.
    pub fn info(&self) -> &ChannelInfo {
        &self.info
    }

    /// Whether the session may reach `addr`, by the admission check: a sink
    /// that resolves a name itself asks this for each address before it
    /// sends anything there.
    pub fn permits_address(&self, addr: SocketAddr) -> bool {
        self.auth.admit_address(&self.grant, addr).is_ok()
    }

    /// Accepts the channel; its bytes are the returned stream (shutting
    /// down its write side sends EOF; dropping it closes the channel).
    pub async fn accept(self) -> BoxStream {
        self.reply.accept().await;
        Box::new(TunnelStream::new(self.channel, self.backlog).chunked())
    }

    /// Refuses the channel. An alknet client learns the kind (refused,
    /// unreachable, timed out); others get SSH's standard codes.
    pub async fn reject(self, kind: OpenErrorKind) {
        self.reply.reject(failure_for(kind, self.alknet_peer)).await;
    }
}

/// The default sink: dials the target with a [`Dialer`] — each resolved
/// address checked by admission before anything is sent — then relays.
#[derive(Clone, Debug)]
pub struct DialSink {
    dialer: Dialer,
}

impl DialSink {
    /// A sink dialling through `dialer`.
    pub fn new(dialer: Dialer) -> Self {
        Self { dialer }
    }
}

#[async_trait]
impl ChannelSink for DialSink {
    async fn handle(&self, channel: IncomingChannel) {
        let opened = match &channel.info.target {
            ChannelTarget::Tcp(target) => {
                self.dialer
                    .dial(target, |addr| channel.permits_address(addr))
                    .await
            }
            ChannelTarget::Unix(path) => self.dialer.dial_unix(path).await,
        };
        match opened {
            Ok(mut outbound) => {
                let mut inbound = channel.accept().await;
                relay_until(&mut inbound, &mut outbound, std::future::pending()).await;
            }
            Err(error) => {
                debug!(%error, "tunnel target not reached");
                channel.reject(error.kind()).await;
            }
        }
    }
}

/// Which sink takes which channel.
#[derive(Clone)]
pub(crate) struct Sinks {
    routes: Vec<(String, u16, Arc<dyn ChannelSink>)>,
    default: Arc<dyn ChannelSink>,
}

impl Sinks {
    pub(crate) fn new(
        routes: Vec<(String, u16, Arc<dyn ChannelSink>)>,
        default: Arc<dyn ChannelSink>,
    ) -> Self {
        Self { routes, default }
    }

    pub(crate) fn for_target(&self, target: &ChannelTarget) -> Arc<dyn ChannelSink> {
        if let ChannelTarget::Tcp(target) = target {
            let host = target.host();
            if let Some((_, _, sink)) = self.routes.iter().find(|(route_host, port, _)| {
                *port == target.port() && route_host.eq_ignore_ascii_case(&host)
            }) {
                return sink.clone();
            }
        }
        self.default.clone()
    }
}
