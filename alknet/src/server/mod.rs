//! The alknet SSH server: authenticates clients, admits their channels and
//! hands each admitted one to a sink.
//!
//! A channel request travels one way: russh callback (`handler.rs`) →
//! admission (alknet-auth, one function) → channel sink (`sink.rs`: the
//! dialer by default, the call protocol for the control channel, or an
//! embedder's) → relay. The files, in the order a connection meets them:
//!
//! - `accept.rs`: the accept loop, connection limits, shutdown;
//! - `connection.rs`: one connection's life, login deadline, stealth
//!   (`knock_tokens.rs`: the tokens a knock must carry, when required);
//! - `handler.rs`: russh's callbacks, each delegating;
//! - `login.rs`: keys and certificates to a session grant, fail2ban lines;
//! - `channels.rs`: channel requests through admission to a sink;
//! - `sink.rs`, `control.rs` and `udp.rs`: the sinks;
//! - `forwards.rs`: remote (`-R`) forwards;
//! - `runtime.rs`: one runtime per core.

mod accept;
mod channels;
mod connection;
mod control;
mod forwards;
mod handler;
mod knock_tokens;
mod login;
mod options;
mod peer;
mod runtime;
mod sink;
mod udp;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use alknet_auth::{
    AuthConfig, Certificate, ConfigReloadHandle, ConnectionLimiter, PrivateKey, fingerprint,
};
use alknet_call::{Hub, OperationRegistry};
use alknet_proxy::Dialer;
use alknet_transport::{BoxStream, TransportAcceptor, TransportInfo};
use tokio_util::sync::CancellationToken;

use crate::Error;
use crate::tuning::{ServerTuning, server_config};
use connection::Accepted;
use control::ControlSink;
use knock_tokens::KnockTokens;
use sink::Sinks;

pub use options::{DEFAULT_MAX_CHANNELS_PER_SESSION, ListenerOptions, ServeOptions};
pub use runtime::Listener;
pub use sink::{ChannelInfo, ChannelSink, ChannelTarget, DialSink, IncomingChannel};

/// Host names with this prefix are reserved for alknet's own services and
/// are never dialled.
pub const RESERVED_HOST_PREFIX: &str = alknet_auth::RESERVED_PREFIX;

/// An alknet SSH server. Cheap to clone; clones share configuration.
#[derive(Clone)]
pub struct Server {
    inner: Arc<ServerInner>,
}

/// Connections open now; a guard per connection.
#[derive(Default)]
struct OpenConnections(Arc<AtomicUsize>);

struct Open(Arc<AtomicUsize>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl OpenConnections {
    fn count(&self) -> Open {
        self.0.fetch_add(1, Ordering::Relaxed);
        Open(self.0.clone())
    }
}

struct ServerInner {
    /// russh's configuration, rebuilt when a reload changes the number of
    /// authentication attempts (which russh reads from it).
    config: std::sync::Mutex<Arc<russh::server::Config>>,
    host_key: PrivateKey,
    host_certificates: Vec<Certificate>,
    keepalive_interval: Duration,
    auth: ConfigReloadHandle,
    login_grace: Duration,
    shutdown_grace: Duration,
    gateway_ports: bool,
    limiter: ConnectionLimiter,
    hub: Hub,
    sinks: Sinks,
    control: Arc<ControlSink>,
    max_channels_per_session: usize,
    open_connections: OpenConnections,
    /// For stealth listeners that require a knock.
    knock_tokens: Arc<KnockTokens>,
    /// Which session listens on each remote-forward port.
    forward_holders: Arc<forwards::ForwardHolders>,
}

impl ServerInner {
    /// russh's configuration for a session under `auth`.
    fn russh_config(&self, auth: &AuthConfig) -> Arc<russh::server::Config> {
        let mut current = self
            .config
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let tuning = ServerTuning {
            max_auth_attempts: auth.max_auth_attempts,
            keepalive_interval: self.keepalive_interval,
        };
        if current.max_auth_attempts != tuning.russh_max_auth_attempts() {
            *current = Arc::new(server_config(
                self.host_key.clone(),
                &self.host_certificates,
                &tuning,
            ));
        }
        current.clone()
    }
}

impl Server {
    /// A server with the given options.
    pub fn new(options: ServeOptions) -> Self {
        let tuning = ServerTuning {
            max_auth_attempts: options.auth.max_auth_attempts,
            keepalive_interval: options.keepalive_interval,
        };
        let dialer = Dialer::new(options.proxy, options.dial_timeout);
        let default_sink = options
            .sink
            .unwrap_or_else(|| Arc::new(sink::DialSink::new(dialer)));
        let hub = Hub::new(options.registry);
        let auth = ConfigReloadHandle::new(options.auth);
        Self {
            inner: Arc::new(ServerInner {
                config: std::sync::Mutex::new(Arc::new(server_config(
                    options.host_key.clone(),
                    &options.host_certificates,
                    &tuning,
                ))),
                host_key: options.host_key,
                host_certificates: options.host_certificates,
                keepalive_interval: options.keepalive_interval,
                knock_tokens: Arc::new(KnockTokens::new(auth.clone())),
                auth,
                login_grace: options.login_grace,
                shutdown_grace: options.shutdown_grace,
                gateway_ports: options.gateway_ports,
                limiter: ConnectionLimiter::default(),
                control: Arc::new(ControlSink { hub: hub.clone() }),
                hub,
                sinks: Sinks::new(options.routes, default_sink),
                max_channels_per_session: options.max_channels_per_session,
                open_connections: OpenConnections::default(),
                forward_holders: Arc::default(),
            }),
        }
    }

    /// A handle to replace who may log in, what they may do and the
    /// connection limits while the server runs; sessions keep the
    /// configuration they started with.
    pub fn reload_handle(&self) -> ConfigReloadHandle {
        self.inner.auth.clone()
    }

    /// Resolves [`Identity`](alknet_auth::Identity)s from this server's
    /// current authorized keys (reloads included).
    pub fn identity_provider(&self) -> alknet_auth::ConfigIdentityProvider {
        alknet_auth::ConfigIdentityProvider::new(self.reload_handle())
    }

    /// The operations this server serves on `alknet-control:0` (a clone
    /// sharing the same registry: register more while it runs).
    pub fn registry(&self) -> OperationRegistry {
        self.inner.hub.registry().clone()
    }

    /// The hub around the registry: spokes registered by sessions, and
    /// who may register them.
    pub fn hub(&self) -> Hub {
        self.inner.hub.clone()
    }

    /// The host key's SHA256 fingerprint, for clients to pin.
    pub fn host_key_fingerprint(&self) -> String {
        fingerprint(self.inner.host_key.public_key())
    }

    /// Connections open right now (authenticated or not).
    pub fn open_connections(&self) -> usize {
        self.inner.open_connections.0.load(Ordering::Relaxed)
    }

    /// Accepts and serves connections until `shutdown` completes, then
    /// disconnects every client, gives them the shutdown grace to go, and
    /// cuts off the rest.
    pub async fn serve<A>(
        &self,
        acceptor: &A,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), Error>
    where
        A: TransportAcceptor + ?Sized,
    {
        self.serve_with(acceptor, &ListenerOptions::default(), shutdown)
            .await
    }

    /// Serves one already-accepted stream until the client leaves (the
    /// connection limits do not count it; the login deadline starts now).
    pub async fn serve_connection(&self, stream: BoxStream, info: TransportInfo) {
        let accepted = Accepted {
            stream,
            info,
            stealth: None,
            permit: None,
            at: tokio::time::Instant::now(),
        };
        self.serve_accepted(accepted, CancellationToken::new(), CancellationToken::new())
            .await;
    }
}
