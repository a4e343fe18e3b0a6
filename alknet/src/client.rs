//! The alknet SSH client: one authenticated session over any transport,
//! opening a `direct-tcpip` channel per tunnelled connection.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::Duration;

use alknet_auth::{
    Certificate, ForwardingPolicy, HostKeyStatus, KnownHosts, PresentedHostKey, PrivateKey,
    fingerprint, known_hosts_name,
};
use alknet_proxy::{
    BoxStream, Dialer, ForwardSpec, ForwardTarget, OpenError, OpenErrorKind, Socks5Server,
    StreamOpener, TargetAddr, relay_until,
};
use alknet_transport::Transport;
use async_trait::async_trait;
use russh::client::{AuthResult, Handle};
use russh::keys::{PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use russh::{ChannelOpenFailure, Disconnect};
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::{debug, info, warn};

use crate::Error;
use crate::backoff::Backoff;
use crate::channel_failure::{open_error_for, peer_grants_at_open};
use crate::error::ChangedHostKey;
use crate::flow::{Backlog, CreditMode, GatedStream, TunnelStream, WriteBehind};
use crate::policy_opener::{PolicyOpener, default_client_policy};
use crate::remote_forward::{GrantedForwards, RemoteForwardPort, RemoteForwardTable};
use crate::session_wear::SessionWear;
use crate::tuning::client_config;

/// How long connecting a remote forward's local target may take.
const FORWARD_DIAL_TIMEOUT: Duration = Duration::from_secs(10);

/// How soon, and at most how long apart, a refused remote forward is asked
/// for again: each ask is one small request, and the port is wanted back
/// soon after the server lets go of it.
const FORWARD_RETRY_FIRST: Duration = Duration::from_secs(1);
const FORWARD_RETRY_MAX: Duration = Duration::from_secs(10);

/// How long a session keeps asking for a refused remote forward: past the
/// time a server takes to drop a session whose network vanished (about
/// four of its keepalives: 2 min with alknet's default of 30 s), without
/// filling the server's log for good when its policy refuses the forward.
const FORWARD_RETRY_FOR: Duration = Duration::from_secs(10 * 60);

/// How an alknet client connects. Build with [`ConnectOptions::new`] and
/// adjust the public fields.
#[derive(Clone)]
#[non_exhaustive]
pub struct ConnectOptions {
    /// The client's private key (Ed25519).
    pub identity: Arc<PrivateKey>,
    /// The user name to log in as.
    pub user: String,
    /// An OpenSSH user certificate for `identity`, offered instead of the
    /// bare key (as `ssh` does with `<identity>-cert.pub`).
    pub certificate: Option<Certificate>,
    /// The server's expected host key fingerprint (`SHA256:…`). Overrides
    /// `known_hosts`. Without either, any host key is accepted and its
    /// fingerprint logged.
    pub host_key: Option<String>,
    /// Check the host key against known_hosts files, as ssh does.
    pub known_hosts: Option<KnownHostsCheck>,
    /// How long the SSH handshake and authentication may take.
    pub handshake_timeout: Duration,
    /// Interval between keepalives; three unanswered ones end the session.
    pub keepalive_interval: Duration,
    /// Remote (`-R`) forwards, requested on every new session: the server
    /// listens on `bind_host:bind_port` and connections reach `target` on
    /// this side.
    pub remote_forwards: Vec<ForwardSpec>,
    /// What reverse SOCKS5 forwards (`-R [bind:]port` alone) may dial from
    /// this side; `None`: everything but loopback
    /// ([`default_client_policy`](crate::default_client_policy)).
    pub forward_policy: Option<Arc<ForwardingPolicy>>,
    /// A [`ReconnectingClient`](crate::ReconnectingClient) moves to a fresh
    /// session once this many tunnels have ended on the current one (0:
    /// never). russh 0.65 keeps ~2.6 KiB of each finished tunnel until its
    /// session ends; open tunnels finish on the old session, which ends
    /// after its last. Remote forwards move with it (a connection to one
    /// in the moment between is refused); with a UDP remote forward, which
    /// cannot be moved, the session is never renewed.
    pub renew_after_tunnels: usize,
    /// The key met on a reconnecting client's first connection.
    pub(crate) session_pin: Option<String>,
}

/// Host keys remembered in OpenSSH's known_hosts format: a known key is
/// accepted, a host met for the first time is remembered (or refused when
/// `strict`), a changed or revoked key is refused.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct KnownHostsCheck {
    /// The files read, in order (a missing file is empty).
    pub files: Vec<PathBuf>,
    /// Where a first contact is written.
    pub remember_in: PathBuf,
    /// The host as given: for `[host]:port` names and certificate
    /// principals. For iroh, the endpoint id.
    pub host: String,
    /// The port (22 is left out of recorded names, as ssh does).
    pub port: u16,
    /// Refuse hosts that are not known instead of remembering them.
    pub strict: bool,
}

impl KnownHostsCheck {
    /// Reads and writes `file` alone for `host` on `port`.
    pub fn new(file: impl Into<PathBuf>, host: impl Into<String>, port: u16) -> Self {
        let file = file.into();
        Self {
            files: vec![file.clone()],
            remember_in: file,
            host: host.into(),
            port,
            strict: false,
        }
    }

    /// The name the host is recorded under.
    pub fn name(&self) -> String {
        known_hosts_name(&self.host, self.port)
    }

    /// Judges the key `presented`, remembering it on first contact.
    fn judge(&self, presented: PresentedHostKey<'_>, actual: &str) -> Result<(), Error> {
        let name = self.name();
        let known = KnownHosts::load(&self.files)?;
        for skipped in known.skipped() {
            debug!(line = %skipped, "known_hosts: skipping a line alknet cannot read");
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let bare_host = self.host.trim_start_matches('[').trim_end_matches(']');
        match known.check(&name, bare_host, presented, now) {
            HostKeyStatus::Known(line) => {
                debug!(%line, "host key known");
                Ok(())
            }
            HostKeyStatus::Certified(line) => {
                debug!(%line, "host certificate signed by a known authority");
                Ok(())
            }
            HostKeyStatus::Unknown if self.strict => Err(Error::HostKeyUnknown {
                name,
                actual: actual.to_owned(),
            }),
            HostKeyStatus::Unknown => {
                alknet_auth::remember_host_key(&self.remember_in, &name, &presented.public_key())?;
                info!(
                    host_key = %actual,
                    file = %self.remember_in.display(),
                    "first contact: host key remembered"
                );
                Ok(())
            }
            HostKeyStatus::Changed { line, known } => {
                Err(Error::HostKeyChanged(Box::new(ChangedHostKey {
                    name,
                    file: line.file.display().to_string(),
                    line: line.to_string(),
                    known,
                    actual: actual.to_owned(),
                })))
            }
            HostKeyStatus::Revoked(line) => Err(Error::HostKeyRevoked {
                name,
                line: line.to_string(),
                actual: actual.to_owned(),
            }),
        }
    }
}

impl ConnectOptions {
    /// Options with alknet's defaults: no host key pin, 30 s handshake
    /// timeout, keepalive every 15 s.
    pub fn new(identity: PrivateKey, user: impl Into<String>) -> Self {
        Self {
            identity: Arc::new(identity),
            user: user.into(),
            certificate: None,
            host_key: None,
            known_hosts: None,
            session_pin: None,
            handshake_timeout: Duration::from_secs(30),
            keepalive_interval: Duration::from_secs(15),
            remote_forwards: Vec::new(),
            forward_policy: None,
            renew_after_tunnels: 10_000,
        }
    }

    /// Pins the server's host key to this `SHA256:` fingerprint.
    pub fn with_host_key(mut self, fingerprint: impl Into<String>) -> Self {
        self.host_key = Some(fingerprint.into());
        self
    }
}

impl fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the private key.
        f.debug_struct("ConnectOptions")
            .field("identity", &fingerprint(self.identity.public_key()))
            .field("user", &self.user)
            .field(
                "certificate",
                &self.certificate.as_ref().map(|c| c.key_id().to_owned()),
            )
            .field("host_key", &self.host_key)
            .field("known_hosts", &self.known_hosts)
            .field("handshake_timeout", &self.handshake_timeout)
            .field("keepalive_interval", &self.keepalive_interval)
            // Targets are private; only how many.
            .field("remote_forwards", &self.remote_forwards.len())
            .field("forward_policy", &self.forward_policy.is_some())
            .field("renew_after_tunnels", &self.renew_after_tunnels)
            .finish()
    }
}

/// An authenticated SSH session to an alknet (or OpenSSH) server.
///
/// Implements [`StreamOpener`], so a [`Socks5Server`](alknet_proxy::Socks5Server)
/// can tunnel through it.
pub struct Client {
    handle: Arc<Handle<ClientHandler>>,
    /// What the session's channels received and have not read yet.
    backlog: Backlog,
    closed: CancellationToken,
    server_fingerprint: String,
    granted_forwards: GrantedForwards,
    /// Where the handler finds the target of each TCP remote forward.
    remote_forward_table: RemoteForwardTable,
    /// Stops asking again for refused remote forwards (a child of `closed`).
    forward_retries: CancellationToken,
}

/// What requesting a remote forward needs besides the session's handle
/// (which the task asking again holds only weakly, so that dropping the
/// [`Client`] still ends the session).
struct ForwardRequester {
    table: RemoteForwardTable,
    backlog: Backlog,
    granted: GrantedForwards,
}

impl ForwardRequester {
    async fn request(
        &self,
        handle: &Handle<ClientHandler>,
        spec: &ForwardSpec,
    ) -> Result<u16, Error> {
        match &spec.target {
            ForwardTarget::Udp(target) => {
                crate::udp_remote_forward::start(
                    handle,
                    &spec.bind_host,
                    spec.bind_port,
                    target.clone(),
                    self.backlog.clone(),
                )
                .await
            }
            _ => tcp_remote_forward(handle, &self.table, spec).await,
        }
    }

    fn granted(&self, index: usize, port: u16, spec: &ForwardSpec) {
        info!(
            remote = index + 1,
            port, "remote forward listening on the server"
        );
        self.granted.add(index, port, &spec.bind_host);
    }
}

impl ConnectOptions {
    /// Refuses settings that can never work (a malformed `host_key`), so a
    /// program can report them before it listens or dials.
    pub fn check(&self) -> Result<(), Error> {
        match &self.host_key {
            Some(pin) => validate_fingerprint(pin),
            None => Ok(()),
        }
    }
}

impl Client {
    /// Connects over `transport`, checks the server's host key and
    /// authenticates.
    pub async fn connect<T>(transport: &T, options: ConnectOptions) -> Result<Self, Error>
    where
        T: Transport + ?Sized,
    {
        if let Some(pin) = &options.host_key {
            validate_fingerprint(pin)?;
        }
        let stream = transport.connect().await?;
        let timeout = options.handshake_timeout;
        tokio::time::timeout(timeout, Self::handshake(stream, options))
            .await
            .map_err(|_| Error::HandshakeTimeout(timeout))?
    }

    async fn handshake(stream: BoxStream, options: ConnectOptions) -> Result<Self, Error> {
        let closed = CancellationToken::new();
        let remote_forwards = RemoteForwardTable::default();
        let backlog = Backlog::default();
        // Channels grant credit once the server shows it does (see flow.rs).
        backlog.set_credit_mode(CreditMode::Answer);
        let handler = ClientHandler {
            host_key: options.host_key.clone(),
            known_hosts: options.known_hosts.clone(),
            session_pin: options.session_pin.clone(),
            seen_host_key: Arc::default(),
            remote_forwards: remote_forwards.clone(),
            reverse_socks: Arc::new(PolicyOpener::new(
                options
                    .forward_policy
                    .clone()
                    .unwrap_or_else(|| Arc::new(default_client_policy())),
                FORWARD_DIAL_TIMEOUT,
            )),
            backlog: backlog.clone(),
            _session_alive: closed.clone().drop_guard(),
        };
        let seen_host_key = handler.seen_host_key.clone();
        let config = Arc::new(client_config(options.keepalive_interval));
        // Reading pauses while the session's channels hold too much unread.
        let stream = WriteBehind::new(
            GatedStream::client(stream, backlog.clone()),
            backlog.clone(),
        );
        let mut handle = russh::client::connect_stream(config, stream, handler)
            .await
            .map_err(|error| {
                // Hung up on before any host key arrived: turned away by a
                // limit, or no SSH server behind the port.
                let hung_up = matches!(&error, Error::Ssh(russh::Error::Disconnect))
                    || matches!(&error, Error::Ssh(russh::Error::IO(io)) if matches!(
                        io.kind(),
                        std::io::ErrorKind::UnexpectedEof
                            | std::io::ErrorKind::ConnectionReset
                            | std::io::ErrorKind::BrokenPipe
                    ));
                let no_key_yet = seen_host_key.lock().map(|f| f.is_empty()).unwrap_or(true);
                if hung_up && no_key_yet {
                    Error::ClosedBeforeSsh
                } else {
                    error
                }
            })?;

        let result = match options.certificate.clone() {
            Some(certificate) => {
                handle
                    .authenticate_openssh_cert(
                        options.user.clone(),
                        options.identity.clone(),
                        certificate,
                    )
                    .await?
            }
            None => {
                let key = PrivateKeyWithHashAlg::new(options.identity.clone(), None);
                handle
                    .authenticate_publickey(options.user.clone(), key)
                    .await?
            }
        };
        match result {
            AuthResult::Success => {}
            AuthResult::Failure { .. } => {
                return Err(match &options.certificate {
                    Some(certificate) => Error::CertificateRejected {
                        user: options.user,
                        key_id: certificate.key_id().to_owned(),
                    },
                    None => Error::AuthRejected {
                        user: options.user,
                        fingerprint: fingerprint(options.identity.public_key()),
                    },
                });
            }
        }
        let server_fingerprint = seen_host_key.lock().map(|f| f.clone()).unwrap_or_default();
        let forward_retries = closed.child_token();
        let client = Self {
            handle: Arc::new(handle),
            backlog,
            closed,
            server_fingerprint,
            granted_forwards: GrantedForwards::default(),
            remote_forward_table: remote_forwards,
            forward_retries,
        };
        client
            .request_remote_forwards(&options.remote_forwards)
            .await;
        Ok(client)
    }

    /// Asks the server for each remote forward. Refused ones are left out
    /// of [`Client::remote_forward_ports`] and asked for again, with
    /// backoff, until granted, the session ends or [`FORWARD_RETRY_FOR`]
    /// has passed: the usual refusal is a port an older session of ours
    /// still holds, until the server notices (by its keepalives) that the
    /// network under it vanished.
    pub(crate) async fn request_remote_forwards(&self, specs: &[ForwardSpec]) {
        let requester = self.forward_requester();
        let mut refused = Vec::new();
        for (index, spec) in specs.iter().enumerate() {
            match requester.request(&self.handle, spec).await {
                Ok(port) => requester.granted(index, port, spec),
                Err(error) => {
                    warn!(remote = index + 1, %error, "the server refused a remote forward; asking again");
                    refused.push((index, spec.clone()));
                }
            }
        }
        if !refused.is_empty() {
            tokio::spawn(Self::ask_again(
                Arc::downgrade(&self.handle),
                requester,
                refused,
                self.forward_retries.clone(),
            ));
        }
    }

    /// Asks again for `refused` forwards until each is granted, the session
    /// ends or is dropped, `stop` (its forwards being handed over), or
    /// [`FORWARD_RETRY_FOR`] has passed.
    async fn ask_again(
        handle: Weak<Handle<ClientHandler>>,
        requester: ForwardRequester,
        mut refused: Vec<(usize, ForwardSpec)>,
        stop: CancellationToken,
    ) {
        let mut backoff = Backoff::new(FORWARD_RETRY_FIRST, FORWARD_RETRY_MAX);
        let until = tokio::time::Instant::now() + FORWARD_RETRY_FOR;
        while !refused.is_empty() {
            if tokio::time::Instant::now() >= until {
                for (index, _) in &refused {
                    warn!(
                        remote = index + 1,
                        "the server still refuses a remote forward; not asking again on this session"
                    );
                }
                return;
            }
            tokio::select! {
                () = tokio::time::sleep(backoff.next_delay(fastrand::f64())) => {}
                () = stop.cancelled() => return,
            }
            let Some(handle) = handle.upgrade() else {
                return;
            };
            let mut still = Vec::new();
            for (index, spec) in refused {
                let asked = tokio::select! {
                    asked = requester.request(&handle, &spec) => asked,
                    () = stop.cancelled() => return,
                };
                match asked {
                    Ok(port) => requester.granted(index, port, &spec),
                    Err(error) => {
                        debug!(remote = index + 1, %error, "the server refused a remote forward again");
                        still.push((index, spec));
                    }
                }
            }
            refused = still;
        }
    }

    fn forward_requester(&self) -> ForwardRequester {
        ForwardRequester {
            table: self.remote_forward_table.clone(),
            backlog: self.backlog.clone(),
            granted: self.granted_forwards.clone(),
        }
    }

    /// Asks the server to stop listening for every remote forward of this
    /// session (for a fresh session to take them over), and stops asking
    /// for refused ones.
    pub(crate) async fn cancel_remote_forwards(&self) {
        self.forward_retries.cancel();
        for forward in self.granted_forwards.ports() {
            if let Err(error) = self.cancel_remote_forward(forward.index).await {
                warn!(remote = forward.index + 1, %error, "cannot cancel a remote forward");
            }
        }
    }

    /// The session's channel counts.
    pub(crate) fn wear(&self) -> &SessionWear {
        self.backlog.wear()
    }

    /// Where this session's remote forwards listen on the server, in the
    /// order given (refused ones are missing until granted).
    pub fn remote_forward_ports(&self) -> Vec<RemoteForwardPort> {
        self.granted_forwards.ports()
    }

    /// Asks the server to stop listening for the remote forward at
    /// `index` (its position in [`ConnectOptions::remote_forwards`]).
    pub async fn cancel_remote_forward(&self, index: usize) -> Result<(), Error> {
        let Some((forward, host)) = self.granted_forwards.get(index) else {
            return Err(Error::NoSuchRemoteForward(index));
        };
        self.handle
            .cancel_tcpip_forward(host, u32::from(forward.port))
            .await?;
        Ok(())
    }

    /// The fingerprint of the host key the server presented.
    pub fn server_fingerprint(&self) -> &str {
        &self.server_fingerprint
    }

    /// Whether the session has ended.
    pub fn is_closed(&self) -> bool {
        self.closed.is_cancelled() || self.handle.is_closed()
    }

    /// Completes when the session ends, for whatever reason.
    pub async fn closed(&self) {
        self.closed.cancelled().await;
    }

    /// Says goodbye to the server and ends the session.
    pub async fn disconnect(&self) {
        let _ = self
            .handle
            .disconnect(Disconnect::ByApplication, "client closing", "")
            .await;
    }
}

impl Client {
    /// Opens a `direct-tcpip` channel to `host:port` as the server sees it
    /// (the reserved `alknet-*` names included).
    pub(crate) async fn open_direct(&self, host: &str, port: u16) -> Result<BoxStream, OpenError> {
        if self.is_closed() {
            return Err(OpenError::new(OpenErrorKind::TunnelDown));
        }
        let _opening = self.wear().opening();
        // The originator is not meaningful through SOCKS; OpenSSH's -D
        // sends the SOCKS client's address, which would only leak it.
        let opened = self
            .handle
            .channel_open_direct_tcpip(host, u32::from(port), "127.0.0.1", 0)
            .await;
        channel_stream(opened, &self.backlog)
    }
}

#[async_trait]
impl StreamOpener for Client {
    async fn open(&self, target: &TargetAddr) -> Result<BoxStream, OpenError> {
        self.open_direct(&target.host(), target.port()).await
    }

    async fn open_unix(&self, path: &Path) -> Result<BoxStream, OpenError> {
        if self.is_closed() {
            return Err(OpenError::new(OpenErrorKind::TunnelDown));
        }
        let path = path.to_str().ok_or_else(|| {
            OpenError::with_detail(OpenErrorKind::Other, "the socket path is not UTF-8")
        })?;
        let _opening = self.wear().opening();
        channel_stream(
            self.handle.channel_open_direct_streamlocal(path).await,
            &self.backlog,
        )
    }
}

fn channel_stream(
    opened: Result<russh::Channel<russh::client::Msg>, russh::Error>,
    backlog: &Backlog,
) -> Result<BoxStream, OpenError> {
    match opened {
        Ok(channel) => Ok(Box::new(
            TunnelStream::new(channel, backlog.clone()).chunked(),
        )),
        Err(russh::Error::ChannelOpenFailure(failure)) => Err(open_error_for(&failure)),
        Err(_) => Err(OpenError::new(OpenErrorKind::TunnelDown)),
    }
}

fn validate_fingerprint(pin: &str) -> Result<(), Error> {
    let valid = pin.strip_prefix("SHA256:").is_some_and(|b64| {
        // 32 bytes of SHA-256 in unpadded base64 are 43 characters.
        b64.len() == 43
            && b64
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
    });
    if valid {
        Ok(())
    } else {
        Err(Error::InvalidFingerprint(pin.to_owned()))
    }
}

/// Asks the server for a TCP remote forward (`tcpip-forward`); returns the
/// port it listens on. A known port is registered before the request, so
/// a connection arriving the moment the server listens finds its target.
async fn tcp_remote_forward(
    handle: &russh::client::Handle<ClientHandler>,
    table: &RemoteForwardTable,
    spec: &ForwardSpec,
) -> Result<u16, Error> {
    let requested = u32::from(spec.bind_port);
    if requested != 0 {
        table.insert(&spec.bind_host, requested, spec.target.clone());
    }
    let granted = handle
        .tcpip_forward(spec.bind_host.clone(), requested)
        .await?;
    let port = if requested == 0 { granted } else { requested };
    table.insert(&spec.bind_host, port, spec.target.clone());
    Ok(u16::try_from(port).unwrap_or_default())
}

/// russh's client callbacks: host key checking, and noticing the end of
/// the session (russh drops the handler when its session task ends).
struct ClientHandler {
    host_key: Option<String>,
    known_hosts: Option<KnownHostsCheck>,
    session_pin: Option<String>,
    seen_host_key: Arc<std::sync::Mutex<String>>,
    remote_forwards: RemoteForwardTable,
    reverse_socks: Arc<PolicyOpener>,
    backlog: Backlog,
    _session_alive: DropGuard,
}

/// russh drops the handler when the session ends: channel writers still
/// waiting on it are told (see `Backlog::session_ended`).
impl Drop for ClientHandler {
    fn drop(&mut self) {
        self.backlog.session_ended();
    }
}

impl russh::client::Handler for ClientHandler {
    type Error = Error;

    async fn server_channel_open_forwarded_tcpip(
        &mut self,
        channel: russh::Channel<russh::client::Msg>,
        connected_address: &str,
        connected_port: u32,
        _originator_address: &str,
        _originator_port: u32,
        reply: russh::client::ChannelOpenHandle,
        _session: &mut russh::client::Session,
    ) -> Result<(), Self::Error> {
        let Some(target) = self
            .remote_forwards
            .lookup(connected_address, connected_port)
        else {
            reply
                .reject(ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return Ok(());
        };
        // Dial off the session loop, as the server does.
        let backlog = self.backlog.clone();
        if target == ForwardTarget::Socks {
            let socks = Socks5Server::new(self.reverse_socks.clone());
            tokio::spawn(async move {
                reply.accept().await;
                let channel = TunnelStream::new(channel, backlog);
                if let Err(error) = socks.handle(channel).await {
                    debug!(%error, "reverse SOCKS5 connection ended");
                }
            });
            return Ok(());
        }
        tokio::spawn(async move {
            let dialer = Dialer::direct(FORWARD_DIAL_TIMEOUT);
            let local = match &target {
                ForwardTarget::Tcp(addr) => dialer.open(addr).await,
                ForwardTarget::Unix(path) => dialer.open_unix(path).await,
                ForwardTarget::Socks => unreachable!("served above"),
                // UDP forwards are served on channels the client opens.
                ForwardTarget::Udp(_) => Err(OpenError::new(OpenErrorKind::NotAllowed)),
            };
            match local {
                Ok(mut local) => {
                    reply.accept().await;
                    let mut channel = TunnelStream::new(channel, backlog).chunked();
                    relay_until(&mut channel, &mut local, std::future::pending()).await;
                }
                Err(error) => {
                    debug!(%error, "remote forward target not reached");
                    reply.reject(ChannelOpenFailure::ConnectFailed).await;
                }
            }
        });
        Ok(())
    }

    async fn data(
        &mut self,
        channel: russh::ChannelId,
        data: &[u8],
        _session: &mut russh::client::Session,
    ) -> Result<(), Self::Error> {
        self.backlog.arrived(channel, data.len());
        Ok(())
    }

    async fn channel_close(
        &mut self,
        channel: russh::ChannelId,
        _session: &mut russh::client::Session,
    ) -> Result<(), Self::Error> {
        self.backlog.channel_closed(channel);
        Ok(())
    }

    async fn extended_data(
        &mut self,
        channel: russh::ChannelId,
        code: u32,
        data: &[u8],
        _session: &mut russh::client::Session,
    ) -> Result<(), Self::Error> {
        self.backlog.extended_data(channel, code, data);
        Ok(())
    }

    /// The server's identification string is known once keys are
    /// exchanged, before any channel: an alknet server that takes first
    /// grants as given lets this session skip them (see flow.rs).
    async fn kex_done(
        &mut self,
        _shared_secret: Option<&[u8]>,
        _names: &russh::Names,
        session: &mut russh::client::Session,
    ) -> Result<(), Self::Error> {
        if peer_grants_at_open(session.remote_sshid()) {
            self.backlog.set_credit_mode(CreditMode::AtOpen);
        }
        Ok(())
    }

    async fn check_server_key(
        &mut self,
        server_key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let (actual, presented) = match server_key {
            PublicKeyOrCertificate::PublicKey { key, .. } => {
                (fingerprint(key), PresentedHostKey::Key(key))
            }
            PublicKeyOrCertificate::Certificate(cert) => (
                fingerprint(&cert.public_key().clone().into()),
                PresentedHostKey::Certificate(cert),
            ),
        };
        if let Ok(mut seen) = self.seen_host_key.lock() {
            seen.clone_from(&actual);
        }
        if let Some(expected) = &self.host_key {
            return if *expected == actual {
                Ok(true)
            } else {
                Err(Error::HostKeyMismatch {
                    expected: expected.clone(),
                    actual,
                })
            };
        }
        if let Some(expected) = &self.session_pin {
            return if *expected == actual {
                Ok(true)
            } else {
                Err(Error::HostKeyChangedSinceStart {
                    expected: expected.clone(),
                    actual,
                })
            };
        }
        match &self.known_hosts {
            Some(check) => check.judge(presented, &actual).map(|()| true),
            None => {
                warn!(
                    host_key = %actual,
                    "server host key not checked; pass --host-key {actual} to verify it next time"
                );
                Ok(true)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_must_look_like_ssh_keygen_output() {
        assert!(validate_fingerprint("SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU").is_ok());
        for bad in [
            "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU",
            "MD5:aa:bb",
            "SHA256:short",
            "SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuF=",
        ] {
            assert!(
                matches!(validate_fingerprint(bad), Err(Error::InvalidFingerprint(_))),
                "{bad}"
            );
        }
    }
}
