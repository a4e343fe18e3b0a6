//! The alknet SSH server: authenticates clients against an authorized set
//! and turns their `direct-tcpip` channels into outbound TCP connections.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use alknet_auth::{
    AuthConfig, AuthorizedKeys, Certificate, CertificateAuthorities, ConfigReloadHandle,
    ForwardingPolicy, Identity, PrivateKey, Verdict, fingerprint, identity_of,
};
use alknet_call::{CallConnection, OperationRegistry};
use alknet_proxy::{
    OpenError, OpenErrorKind, TargetAddr, UpstreamProxy, connect_direct_filtered, connect_unix,
    relay,
};
use alknet_stealth::{Branch, StealthConfig, branch};
use alknet_transport::{BoxStream, TransportAcceptor, TransportInfo, TransportKind};
use russh::keys::PublicKey;
use russh::server::{Auth, ChannelOpenHandle, Msg, Session};
use russh::{Channel, ChannelOpenFailure, Disconnect, MethodKind, MethodSet};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::Error;
use crate::channel_failure::{failure_for, peer_is_alknet};
use crate::control::{CONTROL_HOST, CONTROL_PORT};
use crate::kill_switch::KillableStream;
use crate::remote_forward::{serve_on_server, server_bind_host};
use crate::tuning::{ServerTuning, server_config};

/// Host names with this prefix are reserved for alknet's own services and
/// are never dialled.
pub const RESERVED_HOST_PREFIX: &str = "alknet-";

/// How an alknet server behaves. Build with [`ServeOptions::new`] and
/// adjust the public fields.
#[derive(Clone)]
#[non_exhaustive]
pub struct ServeOptions {
    /// The server's host key (Ed25519).
    pub host_key: PrivateKey,
    /// Which client keys may log in.
    pub authorized_keys: AuthorizedKeys,
    /// Which certificate authorities' user certificates may log in
    /// (OpenSSH's `TrustedUserCAKeys`).
    pub cert_authorities: CertificateAuthorities,
    /// Where sessions may open channels to.
    pub forwarding: ForwardingPolicy,
    /// How long to try reaching a tunnel target before reporting failure.
    pub dial_timeout: Duration,
    /// Failed authentications allowed per connection before disconnecting
    /// (the starting value: a reload's `AuthConfig::max_auth_attempts`
    /// applies to new connections).
    pub max_auth_attempts: usize,
    /// Connections one IP address (over iroh: one endpoint id) may have
    /// open at once; 0 means no limit. Counted from accept, so clients
    /// that never get to SSH (stealth visitors, scanners) count too.
    pub max_connections_per_ip: usize,
    /// How long a client may take from connecting to being authenticated.
    pub login_grace: Duration,
    /// On shutdown, how long clients get to close before being cut off.
    pub shutdown_grace: Duration,
    /// Interval between keepalives to the client; three unanswered ones
    /// end the session.
    pub keepalive_interval: Duration,
    /// Whether remote (`-R`) forwards may listen on the address the client
    /// names. Off (OpenSSH's `GatewayPorts no`): they listen on loopback only.
    pub gateway_ports: bool,
    /// Reach tunnel targets through this proxy instead of directly
    /// (`alknet serve --proxy`). Unix-socket targets are always local.
    pub proxy: Option<UpstreamProxy>,
    /// The operations served to every `alknet-control:0` channel, with the
    /// session's identity; also the hub its spokes register with.
    pub registry: OperationRegistry,
}

impl ServeOptions {
    /// Options with alknet's defaults.
    pub fn new(host_key: PrivateKey, authorized_keys: AuthorizedKeys) -> Self {
        Self {
            host_key,
            authorized_keys,
            cert_authorities: CertificateAuthorities::default(),
            forwarding: ForwardingPolicy::default(),
            dial_timeout: Duration::from_secs(10),
            max_auth_attempts: 10,
            max_connections_per_ip: 0,
            login_grace: Duration::from_secs(60),
            shutdown_grace: Duration::from_secs(2),
            keepalive_interval: Duration::from_secs(30),
            gateway_ports: false,
            proxy: None,
            registry: OperationRegistry::new(),
        }
    }
}

impl fmt::Debug for ServeOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the host key.
        f.debug_struct("ServeOptions")
            .field("host_key", &fingerprint(self.host_key.public_key()))
            .field("authorized_keys", &self.authorized_keys.len())
            .field("cert_authorities", &self.cert_authorities.len())
            .field("dial_timeout", &self.dial_timeout)
            .field("max_auth_attempts", &self.max_auth_attempts)
            .field("max_connections_per_ip", &self.max_connections_per_ip)
            .field("login_grace", &self.login_grace)
            .field("shutdown_grace", &self.shutdown_grace)
            .field("keepalive_interval", &self.keepalive_interval)
            .field("gateway_ports", &self.gateway_ports)
            .field("proxy", &self.proxy)
            .finish()
    }
}

/// Per-listener settings for [`Server::serve_with`].
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct ListenerOptions {
    /// Stealth mode: clients that do not speak SSH are answered as nginx
    /// would answer them. Meant for TLS listeners, where it makes the port
    /// look like an ordinary HTTPS site.
    pub stealth: Option<StealthConfig>,
}

impl ListenerOptions {
    /// Options with stealth mode on.
    pub fn stealth(config: StealthConfig) -> Self {
        Self {
            stealth: Some(config),
        }
    }
}

/// An alknet SSH server. Cheap to clone; clones share configuration.
#[derive(Clone)]
pub struct Server {
    inner: Arc<ServerInner>,
}

struct ServerInner {
    /// russh's configuration, rebuilt when a reload changes the number of
    /// authentication attempts (which russh reads from it).
    config: std::sync::Mutex<Arc<russh::server::Config>>,
    host_key: PrivateKey,
    keepalive_interval: Duration,
    auth: ConfigReloadHandle,
    dial_timeout: Duration,
    login_grace: Duration,
    shutdown_grace: Duration,
    gateway_ports: bool,
    proxy: Option<UpstreamProxy>,
    per_ip: PerIpLimit,
    registry: OperationRegistry,
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
            *current = Arc::new(server_config(self.host_key.clone(), &tuning));
        }
        current.clone()
    }
}

impl Server {
    /// A server with the given options.
    pub fn new(options: ServeOptions) -> Self {
        let tuning = ServerTuning {
            max_auth_attempts: options.max_auth_attempts,
            keepalive_interval: options.keepalive_interval,
        };
        Self {
            inner: Arc::new(ServerInner {
                config: std::sync::Mutex::new(Arc::new(server_config(
                    options.host_key.clone(),
                    &tuning,
                ))),
                host_key: options.host_key,
                keepalive_interval: options.keepalive_interval,
                auth: ConfigReloadHandle::new({
                    let mut auth = AuthConfig::new(
                        options.authorized_keys,
                        options.cert_authorities,
                        options.forwarding,
                    );
                    auth.max_connections_per_ip = options.max_connections_per_ip;
                    auth.max_auth_attempts = options.max_auth_attempts;
                    auth
                }),
                dial_timeout: options.dial_timeout,
                login_grace: options.login_grace,
                shutdown_grace: options.shutdown_grace,
                gateway_ports: options.gateway_ports,
                proxy: options.proxy,
                per_ip: PerIpLimit::default(),
                registry: options.registry,
            }),
        }
    }

    /// A handle to replace who may log in and where they may forward while
    /// the server runs; sessions keep the configuration they started with.
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
        self.inner.registry.clone()
    }

    /// The host key's SHA256 fingerprint, for clients to pin.
    pub fn host_key_fingerprint(&self) -> String {
        fingerprint(self.inner.host_key.public_key())
    }

    /// Accepts and serves connections until `shutdown` completes, then
    /// disconnects every client, gives them [`ServeOptions::shutdown_grace`]
    /// to go, and cuts off the rest.
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
        let stop = CancellationToken::new();
        let kill = CancellationToken::new();
        let connections = TaskTracker::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                accepted = acceptor.accept() => match accepted {
                    Ok((stream, info)) => {
                        // The limit is read per connection, so a reload applies at once.
                        let limit = self.inner.auth.current().max_connections_per_ip;
                        let Some(permit) = self.inner.per_ip.admit(PeerKey::of(&info), limit) else {
                            info!(
                                remote_addr = %Peer::of(&info),
                                "connection refused: too many connections from this address"
                            );
                            continue;
                        };
                        let server = self.clone();
                        let (stop, kill) = (stop.child_token(), kill.child_token());
                        let stealth = listener.stealth.clone();
                        connections.spawn(async move {
                            server.serve_connection_until(stream, info, stealth, stop, kill).await;
                            drop(permit);
                        });
                    }
                    Err(error) => {
                        // Usually one failed handshake or a full fd table:
                        // keep serving, but do not spin.
                        warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
            }
        }
        info!(connections = connections.len(), "shutting down");
        connections.close();
        stop.cancel();
        if tokio::time::timeout(self.inner.shutdown_grace, connections.wait())
            .await
            .is_err()
        {
            kill.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(2), connections.wait()).await;
        }
        Ok(())
    }

    /// Serves one already-accepted stream until the client leaves.
    pub async fn serve_connection(&self, stream: BoxStream, info: TransportInfo) {
        self.serve_connection_until(
            stream,
            info,
            None,
            CancellationToken::new(),
            CancellationToken::new(),
        )
        .await;
    }

    async fn serve_connection_until(
        &self,
        stream: BoxStream,
        info: TransportInfo,
        stealth: Option<StealthConfig>,
        stop: CancellationToken,
        kill: CancellationToken,
    ) {
        let peer = Peer::of(&info);
        let started = Instant::now();
        info!(remote_addr = %peer, transport = %info.kind, "connection opened");
        self.run_connection(stream, peer.clone(), stealth, stop, kill)
            .await;
        info!(remote_addr = %peer, duration = ?started.elapsed(), "connection closed");
    }

    async fn run_connection(
        &self,
        stream: BoxStream,
        peer: Peer,
        stealth: Option<StealthConfig>,
        stop: CancellationToken,
        kill: CancellationToken,
    ) {
        // Every byte, from the first, goes through the kill switch.
        let stream = KillableStream::new(stream, kill.clone());
        let stream: BoxStream = match stealth {
            None => Box::new(stream),
            Some(config) => {
                let outcome = tokio::select! {
                    outcome = branch(stream, &config) => outcome.ok(),
                    () = stop.cancelled() => None,
                };
                match outcome {
                    Some(Branch::Ssh(replay)) => Box::new(replay),
                    _ => {
                        debug!(remote_addr = %peer, "not SSH: answered as a web server");
                        return;
                    }
                }
            }
        };
        let authenticated = CancellationToken::new();
        // The session keeps the configuration it started with.
        let auth = self.inner.auth.current();
        let config = self.inner.russh_config(&auth);
        let handler = SessionHandler {
            server: self.inner.clone(),
            auth,
            user: String::new(),
            peer: peer.clone(),
            authenticated: authenticated.clone(),
            channels: kill.clone(),
            remote_forwards: HashMap::new(),
            forwarding_allowed: true,
            identity: None,
        };
        let grace = self.inner.login_grace;

        // run_stream returns once the client's identification line is read.
        let session = tokio::select! {
            started = russh::server::run_stream(config, stream, handler) => started,
            () = tokio::time::sleep(grace) => Err(russh::Error::ConnectionTimeout),
            () = stop.cancelled() => Err(russh::Error::Disconnect),
        };
        match session {
            Ok(mut session) => {
                let handle = session.handle();
                let login_deadline = async {
                    tokio::select! {
                        () = authenticated.cancelled() => std::future::pending::<()>().await,
                        () = tokio::time::sleep(grace) => {}
                    }
                };
                let outcome = tokio::select! {
                    result = &mut session => Some(result),
                    () = login_deadline => {
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
                        // Give the client a moment to read the goodbye, then
                        // stop waiting for it.
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
            }
            Err(error) => debug!(remote_addr = %peer, %error, "no SSH session"),
        }
        // Any relay still running belongs to this connection only.
        kill.cancel();
    }
}

/// Counts open connections per IP address against a limit.
#[derive(Clone, Default)]
struct PerIpLimit {
    open: Arc<std::sync::Mutex<HashMap<PeerKey, usize>>>,
}

/// What the per-IP limit counts by: the IP address, or over iroh (where
/// there is none) the peer's endpoint id.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum PeerKey {
    Ip(IpAddr),
    Endpoint(String),
}

impl PeerKey {
    fn of(info: &TransportInfo) -> Option<Self> {
        match (&info.remote_addr, &info.kind) {
            (Some(addr), _) => Some(PeerKey::Ip(addr.ip())),
            (None, TransportKind::Iroh { remote }) => Some(PeerKey::Endpoint(remote.clone())),
            (None, _) => None,
        }
    }
}

/// One admitted connection; dropping it frees its place.
struct PerIpPermit {
    key: Option<PeerKey>,
    open: Arc<std::sync::Mutex<HashMap<PeerKey, usize>>>,
}

impl PerIpLimit {
    /// A permit, or `None` when the peer has `limit` connections open.
    /// Peers without an address (and a limit of 0) are always admitted.
    fn admit(&self, key: Option<PeerKey>, limit: usize) -> Option<PerIpPermit> {
        if let Some(key) = &key {
            let mut open = self
                .open
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let count = open.entry(key.clone()).or_insert(0);
            if limit > 0 && *count >= limit {
                return None;
            }
            *count += 1;
        }
        Some(PerIpPermit {
            key,
            open: self.open.clone(),
        })
    }
}

impl Drop for PerIpPermit {
    fn drop(&mut self) {
        let Some(key) = &self.key else { return };
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(count) = open.get_mut(key) {
            *count -= 1;
            if *count == 0 {
                open.remove(key);
            }
        }
    }
}

#[derive(Clone)]
/// Who is at the other end, for logs: an address, or (over iroh) the
/// peer's endpoint id, which identifies it as well as an IP would.
struct Peer(Option<SocketAddr>, Option<String>);

impl Peer {
    fn of(info: &TransportInfo) -> Self {
        let endpoint = match &info.kind {
            TransportKind::Iroh { remote } => Some(remote.clone()),
            _ => None,
        };
        Peer(info.remote_addr, endpoint)
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.0, &self.1) {
            (Some(addr), _) => addr.fmt(f),
            (None, Some(endpoint)) => write!(f, "iroh:{endpoint}"),
            (None, None) => f.write_str("unknown"),
        }
    }
}

/// russh's per-connection callbacks.
struct SessionHandler {
    server: Arc<ServerInner>,
    auth: Arc<AuthConfig>,
    /// The login name, once authenticated (what forwarding rules match).
    user: String,
    peer: Peer,
    authenticated: CancellationToken,
    /// Cancelled when the connection ends; stops this connection's relays.
    channels: CancellationToken,
    /// This session's remote forwards, by the (address, port) the client
    /// uses to cancel them.
    remote_forwards: HashMap<(String, u32), CancellationToken>,
    /// False for a certificate without `permit-port-forwarding`: such a
    /// session may log in but open nothing.
    forwarding_allowed: bool,
    /// Who authenticated, for the call protocol's access checks.
    identity: Option<Identity>,
}

impl SessionHandler {
    fn check_key(&self, user: &str, key: &PublicKey) -> Auth {
        let accepted = self.auth.authorized_keys.contains(key);
        self.log_attempt(user, key, accepted)
    }

    /// The fail2ban line (SPEC §2). `user` is client-chosen text, so it is
    /// logged quoted and escaped.
    fn log_attempt(&self, user: &str, key: &PublicKey, accepted: bool) -> Auth {
        info!(
            remote_addr = %self.peer,
            user = ?user,
            key_fingerprint = %fingerprint(key),
            result = %if accepted { "accept" } else { "reject" },
            "auth attempt"
        );
        if accepted { Auth::Accept } else { reject() }
    }

    /// Why a channel to `target:port` may not open, if it may not: the
    /// certificate forbids forwarding, the policy denies the target, or the
    /// name is reserved. The destination is not logged.
    fn refusal(&self, target: &str, port: u16, alknet_peer: bool) -> Option<ChannelOpenFailure> {
        if self.forwarding_refused() {
            return Some(ChannelOpenFailure::AdministrativelyProhibited);
        }
        let denied = self.auth.forwarding.decide(target, port, &self.user) == Verdict::Deny;
        if denied {
            debug!(remote_addr = %self.peer, "channel refused by the forwarding policy");
        }
        (denied || is_reserved(target)).then(|| failure_for(OpenErrorKind::NotAllowed, alknet_peer))
    }

    /// Refuses a channel when the session's certificate does not permit
    /// forwarding.
    fn forwarding_refused(&self) -> bool {
        if !self.forwarding_allowed {
            debug!(remote_addr = %self.peer, "channel refused: the certificate lacks permit-port-forwarding");
        }
        !self.forwarding_allowed
    }
}

fn reject() -> Auth {
    Auth::Reject {
        proceed_with_methods: Some(MethodSet::from(&[MethodKind::PublicKey][..])),
        partial_success: false,
    }
}

impl russh::server::Handler for SessionHandler {
    type Error = russh::Error;

    async fn auth_none(&mut self, _user: &str) -> Result<Auth, Self::Error> {
        // OpenSSH's opening probe: not an attempt worth logging.
        Ok(reject())
    }

    async fn auth_publickey_offered(
        &mut self,
        user: &str,
        offer: russh::server::PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        // Unknown keys are refused (and logged) here, before the client
        // signs anything; known ones are logged once verified, below. With
        // certificate authorities, the key may be a certificate's (russh
        // does not say which), so the decision waits for the signature.
        if self.auth.authorized_keys.contains(offer.public_key)
            || !self.auth.cert_authorities.is_empty()
        {
            Ok(Auth::Accept)
        } else {
            Ok(self.check_key(user, offer.public_key))
        }
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: russh::server::VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        let auth = self.check_key(user, key.public_key);
        if auth == Auth::Accept {
            self.user = user.to_owned();
            self.identity = self
                .auth
                .authorized_keys
                .find(key.public_key)
                .map(identity_of);
        }
        Ok(auth)
    }

    async fn auth_openssh_certificate(
        &mut self,
        user: &str,
        certificate: &Certificate,
    ) -> Result<Auth, Self::Error> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_secs());
        let key = PublicKey::new(certificate.public_key().clone(), "");
        match self
            .auth
            .cert_authorities
            .check(certificate, user, self.peer.0.map(|a| a.ip()), now)
        {
            Ok(grant) => {
                self.forwarding_allowed = grant.permit_port_forwarding;
                self.user = user.to_owned();
                self.identity = Some(grant.identity);
                Ok(self.log_attempt(user, &key, true))
            }
            Err(rejection) => {
                debug!(remote_addr = %self.peer, reason = %rejection, "certificate refused");
                Ok(self.log_attempt(user, &key, false))
            }
        }
    }

    async fn auth_succeeded(&mut self, _session: &mut Session) -> Result<(), Self::Error> {
        self.authenticated.cancel();
        Ok(())
    }

    async fn channel_open_direct_tcpip(
        &mut self,
        channel: Channel<Msg>,
        host: &str,
        port: u32,
        _originator_address: &str,
        _originator_port: u32,
        reply: ChannelOpenHandle,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let alknet_peer = peer_is_alknet(session.remote_sshid());
        let Ok(port) = u16::try_from(port) else {
            reply.reject(ChannelOpenFailure::ConnectFailed).await;
            return Ok(());
        };
        if port == CONTROL_PORT && host.eq_ignore_ascii_case(CONTROL_HOST) {
            self.open_control(channel, reply).await;
            return Ok(());
        }
        if let Some(failure) = self.refusal(host, port, alknet_peer) {
            reply.reject(failure).await;
            return Ok(());
        }
        let target = TargetAddr::from_host_port(host, port);
        let dial_timeout = self.server.dial_timeout;
        let server = self.server.clone();
        let (auth, user) = (self.auth.clone(), self.user.clone());
        let dial = async move {
            let stream = match &server.proxy {
                Some(proxy) => proxy.connect(&target, dial_timeout).await?,
                // Names are checked against the address-range rules once
                // resolved, before anything is sent.
                None => {
                    connect_direct_filtered(&target, dial_timeout, |addr| {
                        !auth
                            .forwarding
                            .refuses_address(addr.ip(), addr.port(), &user)
                    })
                    .await?
                }
            };
            Ok(Box::new(stream) as BoxStream)
        };
        self.spawn_channel(channel, reply, alknet_peer, dial);
        Ok(())
    }

    async fn channel_open_direct_streamlocal(
        &mut self,
        channel: Channel<Msg>,
        socket_path: &str,
        reply: ChannelOpenHandle,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let alknet_peer = peer_is_alknet(session.remote_sshid());
        if let Some(failure) = self.refusal(socket_path, 0, alknet_peer) {
            reply.reject(failure).await;
            return Ok(());
        }
        let path = PathBuf::from(socket_path);
        let dial_timeout = self.server.dial_timeout;
        self.spawn_channel(channel, reply, alknet_peer, async move {
            connect_unix(&path, dial_timeout).await
        });
        Ok(())
    }

    async fn tcpip_forward(
        &mut self,
        address: &str,
        port: &mut u32,
        session: &mut Session,
    ) -> Result<bool, Self::Error> {
        let Ok(requested) = u16::try_from(*port) else {
            return Ok(false);
        };
        if self.forwarding_refused() {
            return Ok(false);
        }
        let host = server_bind_host(address, self.server.gateway_ports);
        let listener = match TcpListener::bind((host, requested)).await {
            Ok(listener) => listener,
            Err(error) => {
                info!(remote_addr = %self.peer, port = requested, %error, "remote forward refused");
                return Ok(false);
            }
        };
        let Ok(bound) = listener.local_addr() else {
            return Ok(false);
        };
        *port = u32::from(bound.port());
        let stop = self.channels.child_token();
        self.remote_forwards
            .insert((address.to_owned(), *port), stop.clone());
        info!(remote_addr = %self.peer, listen = %bound, "remote forward listening");
        tokio::spawn(serve_on_server(
            listener,
            session.handle(),
            address.to_owned(),
            *port,
            stop,
        ));
        Ok(true)
    }

    async fn cancel_tcpip_forward(
        &mut self,
        address: &str,
        port: u32,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        match self.remote_forwards.remove(&(address.to_owned(), port)) {
            Some(stop) => {
                stop.cancel();
                info!(remote_addr = %self.peer, port, "remote forward closed");
                Ok(true)
            }
            None => Ok(false),
        }
    }
}

impl SessionHandler {
    /// Serves the registry on a control channel, unless the certificate or
    /// the forwarding policy forbids it (rules may name `alknet-control`
    /// or `alknet-*` like any host).
    async fn open_control(&self, channel: Channel<Msg>, reply: ChannelOpenHandle) {
        let denied = self.forwarding_refused()
            || self
                .auth
                .forwarding
                .decide(CONTROL_HOST, CONTROL_PORT, &self.user)
                == Verdict::Deny;
        if denied {
            debug!(remote_addr = %self.peer, "control channel refused by the forwarding policy");
            reply
                .reject(ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return;
        }
        let mut connection =
            CallConnection::new(channel.into_stream()).serve(self.server.registry.clone());
        if let Some(identity) = self.identity.clone() {
            connection = connection.peer_identity(identity);
        }
        let done = self.channels.clone();
        reply.accept().await;
        debug!(remote_addr = %self.peer, "control channel opened");
        let caller = connection.spawn();
        tokio::spawn(async move {
            tokio::select! {
                () = caller.closed() => {}
                () = done.cancelled() => caller.close(),
            }
        });
    }

    /// Dials off the session loop (a slow target must not stall the session
    /// or its other channels), then accepts the channel and relays, or
    /// rejects it with the reason.
    fn spawn_channel(
        &self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        alknet_peer: bool,
        dial: impl Future<Output = Result<BoxStream, OpenError>> + Send + 'static,
    ) {
        let done = self.channels.clone();
        tokio::spawn(async move {
            match dial.await {
                Ok(mut outbound) => {
                    reply.accept().await;
                    let mut inbound = channel.into_stream();
                    tokio::select! {
                        result = relay(&mut inbound, &mut outbound) => {
                            if let Err(error) = result {
                                debug!(%error, "relay ended with an error");
                            }
                        }
                        () = done.cancelled() => {}
                    }
                }
                Err(error) => {
                    debug!(%error, "tunnel target not reached");
                    reply.reject(failure_for(error.kind(), alknet_peer)).await;
                }
            }
        });
    }
}

fn is_reserved(host: &str) -> bool {
    host.get(..RESERVED_HOST_PREFIX.len())
        .is_some_and(|prefix| prefix.eq_ignore_ascii_case(RESERVED_HOST_PREFIX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_ip_limits_count_open_connections_and_free_them_on_drop() {
        let limit = PerIpLimit::default();
        let a = Some(PeerKey::Ip("192.0.2.1".parse().unwrap()));
        let b = Some(PeerKey::Ip("192.0.2.2".parse().unwrap()));
        let first = limit.admit(a.clone(), 2).unwrap();
        let _second = limit.admit(a.clone(), 2).unwrap();
        assert!(
            limit.admit(a.clone(), 2).is_none(),
            "a third from the same address"
        );
        assert!(
            limit.admit(b.clone(), 2).is_some(),
            "another address is not affected"
        );
        assert!(
            limit.admit(a.clone(), 3).is_some(),
            "a raised limit applies at once"
        );
        drop(first);
        assert!(limit.admit(a.clone(), 3).is_some(), "a place was freed");
        assert!(limit.admit(a.clone(), 0).is_some(), "0 means no limit");
        assert!(limit.admit(None, 1).is_some(), "no address, no limit");
        let endpoint = Some(PeerKey::Endpoint("5f3c".into()));
        let _iroh = limit.admit(endpoint.clone(), 1).unwrap();
        assert!(
            limit.admit(endpoint, 1).is_none(),
            "iroh peers count by endpoint id"
        );
    }

    #[test]
    fn reserved_prefix_is_matched_without_regard_to_case() {
        assert!(is_reserved("alknet-control"));
        assert!(is_reserved("ALKNET-Control"));
        assert!(!is_reserved("alknet.example.com"));
        assert!(!is_reserved("alk"));
        assert!(!is_reserved("ålknet-x"));
    }
}
