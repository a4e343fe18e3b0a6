//! `serve(options)`: an alknet server in the Node process. Admitted
//! channels are tunnelled as by `alknet serve`, until JavaScript installs a
//! handler (`onConnection`): from then on each one is handed over through
//! [`Server::next_connection`] (the JS layer pulls them in a loop, which
//! keeps Node alive exactly while a handler is installed).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use alknet::auth::{
    AuthConfig, AuthorizedKeys, CertificateAuthorities, ForwardingPolicy, PolicyTable,
    load_private_key,
};
use alknet::proxy::Dialer;
use alknet::stealth::{Backend, StealthConfig};
use alknet::{
    ChannelInfo, ChannelSink, ChannelTarget, DialSink, IncomingChannel, ListenSpec,
    ListenerSettings, Pem, ServeOptions as FacadeOptions, Server as FacadeServer, bind_listeners,
};
use napi::Either;
use napi::bindgen_prelude::Buffer;
use napi_derive::napi;
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::channel::{Channel, Owner};
use crate::connect::key_source;
use crate::error::{Code, error, from_alknet, invalid};

/// Channels waiting for JavaScript to take them; past this, new ones wait.
const HANDOVER_QUEUE: usize = 64;

/// How `serve` listens and whom it lets in (the CLI's flags, in camelCase).
#[napi(object)]
pub struct ServeOptions {
    /// `tcp://IP:PORT`, `tls://IP:PORT`, `iroh://IP:PORT` (port 0: any).
    pub listen: Vec<String>,
    /// The host key (OpenSSH Ed25519 private key): a path or its bytes.
    pub host_key: Either<String, Buffer>,
    /// The passphrase of an encrypted host key.
    pub passphrase: Option<String>,
    /// Who may log in: an authorized_keys path or its bytes.
    pub authorized_keys: Option<Either<String, Buffer>>,
    /// CA public keys whose user certificates may log in.
    pub cert_authority: Option<Vec<Either<String, Buffer>>>,
    /// The forwarding policy.
    pub forward_policy: Option<PolicyInput>,
    /// The TLS certificate chain (PEM) of `tls://` listeners.
    pub tls_cert: Option<Either<String, Buffer>>,
    /// Its private key (PEM).
    pub tls_key: Option<Either<String, Buffer>>,
    /// Make `tls://` listeners pass for nginx.
    pub stealth: Option<bool>,
    /// With `stealth`: the real site behind the port (`http://HOST:PORT`
    /// or `unix:/PATH`).
    pub stealth_backend: Option<String>,
    /// With `stealth`: tunnels only after a knock with a token.
    pub stealth_require_token: Option<bool>,
    /// Open connections per address (0: no limit).
    pub max_connections_per_ip: Option<u32>,
    /// Failed authentications per connection.
    pub max_auth_attempts: Option<u32>,
    /// For an iroh listener: `default`, `none` or a relay URL.
    pub iroh_relay: Option<String>,
}

/// A forwarding policy as JavaScript hands it over (`lib/options.js` fills
/// one of these from a path, a Buffer of TOML, or an object).
#[napi(object)]
pub struct PolicyInput {
    /// A TOML file.
    pub path: Option<String>,
    /// TOML text.
    pub toml: Option<Buffer>,
    /// The policy's object form as JSON (same keys as the TOML).
    pub json: Option<String>,
}

/// Who may log in, for `reloadAuth`.
#[napi(object)]
pub struct AuthReload {
    /// An authorized_keys path or its bytes.
    pub authorized_keys: Option<Either<String, Buffer>>,
    /// CA public keys.
    pub cert_authority: Option<Vec<Either<String, Buffer>>>,
}

/// Who opened a channel.
#[napi(object)]
pub struct IdentityInfo {
    /// The key's fingerprint, or the certificate's key id.
    pub id: String,
    /// Its scopes.
    pub scopes: Vec<String>,
    /// Its resource grants (`type:action`).
    pub resources: Vec<String>,
}

/// Where a channel asks to go.
#[napi(object)]
pub struct TargetInfo {
    /// A TCP target's host, as the client sent it.
    pub host: Option<String>,
    /// A TCP target's port.
    pub port: Option<u32>,
    /// A Unix-socket target's path.
    pub path: Option<String>,
}

fn pem(input: &Either<String, Buffer>) -> Pem {
    match input {
        Either::A(path) => Pem::File(path.into()),
        Either::B(bytes) => Pem::Bytes(bytes.to_vec()),
    }
}

fn load_keys(
    authorized: Option<&Either<String, Buffer>>,
    authorities: Option<&Vec<Either<String, Buffer>>>,
) -> napi::Result<(AuthorizedKeys, CertificateAuthorities)> {
    let keys = match authorized {
        Some(source) => AuthorizedKeys::load(key_source(source)).map_err(invalid)?,
        None => AuthorizedKeys::default(),
    };
    let mut cas = CertificateAuthorities::default();
    for source in authorities.into_iter().flatten() {
        cas.load(key_source(source)).map_err(invalid)?;
    }
    if keys.is_empty() && cas.is_empty() {
        return Err(invalid(
            "nobody could log in: give authorizedKeys (with at least one ssh-ed25519 line) or certAuthority",
        ));
    }
    Ok((keys, cas))
}

fn load_policy(source: &PolicyInput) -> napi::Result<ForwardingPolicy> {
    match (&source.path, &source.toml, &source.json) {
        (Some(path), None, None) => {
            ForwardingPolicy::load(std::path::Path::new(path)).map_err(invalid)
        }
        (None, Some(bytes), None) => {
            let text = std::str::from_utf8(bytes)
                .map_err(|_| invalid("forwardPolicy: the bytes are not UTF-8 TOML"))?;
            ForwardingPolicy::from_toml(text, "forwardPolicy").map_err(invalid)
        }
        (None, None, Some(json)) => {
            let table: PolicyTable = serde_json::from_str(json)
                .map_err(|failure| invalid(format!("forwardPolicy: {failure}")))?;
            table.into_policy("forwardPolicy").map_err(invalid)
        }
        _ => Err(invalid(
            "forwardPolicy: give a TOML file's path, a Buffer of TOML, or an object",
        )),
    }
}

/// A channel on its way to JavaScript.
struct Handover {
    channel: IncomingChannel,
    /// Dropped when JavaScript is done with the channel.
    done: oneshot::Sender<()>,
}

/// Tunnels channels, or hands them to JavaScript once it asked for them.
struct JsSink {
    handled: Arc<AtomicBool>,
    queue: mpsc::Sender<Handover>,
    dial: DialSink,
}

#[async_trait::async_trait]
impl ChannelSink for JsSink {
    async fn handle(&self, channel: IncomingChannel) {
        if !self.handled.load(Ordering::Acquire) {
            return self.dial.handle(channel).await;
        }
        let (done, finished) = oneshot::channel();
        if self.queue.send(Handover { channel, done }).await.is_ok() {
            // The channel counts against the session until JavaScript is done.
            let _ = finished.await;
        }
    }
}

/// An admitted channel, for JavaScript to accept.
#[napi]
pub struct Incoming {
    handover: Mutex<Option<Handover>>,
    info: ChannelInfo,
}

#[napi]
impl Incoming {
    /// Who opened it.
    #[napi(getter)]
    pub fn identity(&self) -> IdentityInfo {
        let who = &self.info.identity;
        IdentityInfo {
            id: who.id.clone(),
            scopes: who.scopes.clone(),
            resources: who.resources.clone(),
        }
    }

    /// Where it asks to go.
    #[napi(getter)]
    pub fn target(&self) -> TargetInfo {
        match &self.info.target {
            ChannelTarget::Tcp(target) => TargetInfo {
                host: Some(target.host()),
                port: Some(u32::from(target.port())),
                path: None,
            },
            ChannelTarget::Unix(path) => TargetInfo {
                host: None,
                port: None,
                path: Some(path.display().to_string()),
            },
            _ => TargetInfo {
                host: None,
                port: None,
                path: None,
            },
        }
    }

    /// The client's address (`null` over iroh).
    #[napi(getter)]
    pub fn remote_address(&self) -> Option<String> {
        self.info.remote_addr.map(|addr| addr.to_string())
    }

    /// `tcp`, `tls` or `iroh`.
    #[napi(getter)]
    pub fn transport(&self) -> String {
        self.info.transport.to_string()
    }

    /// Accepts the channel: its bytes are the returned channel's.
    #[napi]
    pub async fn accept(&self) -> napi::Result<Channel> {
        let Some(Handover { channel, done }) = self.handover.lock().await.take() else {
            return Err(error(
                Code::Closed,
                "the channel was accepted or rejected already",
            ));
        };
        let stream = channel.accept().await;
        Ok(Channel::new(stream, Owner::Server { _done: done }))
    }

    /// Refuses the channel (the client sees "administratively prohibited").
    #[napi]
    pub async fn reject(&self) {
        self.handover.lock().await.take();
    }
}

/// A running server.
#[napi]
pub struct Server {
    server: FacadeServer,
    handled: Arc<AtomicBool>,
    incoming: Mutex<mpsc::Receiver<Handover>>,
    stop: CancellationToken,
    serving: Mutex<JoinSet<()>>,
    addresses: Vec<String>,
    endpoint_id: Option<String>,
}

/// Starts a server listening where `options.listen` says.
#[napi]
pub async fn serve(options: ServeOptions) -> napi::Result<Server> {
    let host_key = load_private_key(key_source(&options.host_key), options.passphrase.as_deref())
        .map_err(invalid)?;
    let (keys, cas) = load_keys(
        options.authorized_keys.as_ref(),
        options.cert_authority.as_ref(),
    )?;
    let mut auth = AuthConfig::new(keys).cert_authorities(cas);
    if let Some(policy) = &options.forward_policy {
        auth = auth.forwarding(load_policy(policy)?);
    }
    if let Some(limit) = options.max_connections_per_ip {
        auth = auth.max_connections_per_ip(limit as usize);
    }
    if let Some(attempts) = options.max_auth_attempts {
        auth = auth.max_auth_attempts(attempts as usize);
    }
    let specs = options
        .listen
        .iter()
        .map(|text| {
            text.parse::<ListenSpec>()
                .map_err(|why| invalid(format!("listen {text:?}: {why}")))
        })
        .collect::<napi::Result<Vec<_>>>()?;
    if specs.is_empty() {
        return Err(invalid(
            "listen is empty: give at least one tcp://, tls:// or iroh:// address",
        ));
    }
    let mut settings = ListenerSettings::default();
    settings.tls_cert = options.tls_cert.as_ref().map(pem);
    settings.tls_key = options.tls_key.as_ref().map(pem);
    let backend = options
        .stealth_backend
        .as_deref()
        .map(|url| url.parse::<Backend>().map_err(invalid))
        .transpose()?;
    settings.stealth = match (options.stealth.unwrap_or(false), backend) {
        (true, Some(backend)) => Some(StealthConfig::default().with_backend(backend)),
        (true, None) => Some(StealthConfig::default()),
        (false, Some(_)) => return Err(invalid("stealthBackend needs stealth: true")),
        (false, None) => None,
    };
    settings.stealth_require_token = options.stealth_require_token.unwrap_or(false);
    settings.iroh_relay = options.iroh_relay.clone();
    let bound = bind_listeners(&specs, &settings, &host_key)
        .await
        .map_err(from_alknet)?;

    let handled = Arc::new(AtomicBool::new(false));
    let (queue, incoming) = mpsc::channel(HANDOVER_QUEUE);
    let sink = JsSink {
        handled: handled.clone(),
        queue,
        dial: DialSink::new(Dialer::direct(Duration::from_secs(10))),
    };
    let server = FacadeServer::new(FacadeOptions::new(host_key, auth).sink(Arc::new(sink)));
    let stop = CancellationToken::new();
    let mut serving = JoinSet::new();
    let mut addresses = Vec::new();
    for (acceptor, listener) in bound.listeners {
        addresses.push(acceptor.describe());
        let (server, stop) = (server.clone(), stop.clone());
        serving.spawn(async move {
            let _ = server
                .serve_with(acceptor.as_ref(), &listener, stop.cancelled())
                .await;
            acceptor.close().await;
        });
    }
    Ok(Server {
        server,
        handled,
        incoming: Mutex::new(incoming),
        stop,
        serving: Mutex::new(serving),
        addresses,
        endpoint_id: bound.endpoint_id,
    })
}

#[napi]
impl Server {
    /// Where it listens: `tcp://127.0.0.1:4242`, `iroh://…`.
    #[napi(getter)]
    pub fn addresses(&self) -> Vec<String> {
        self.addresses.clone()
    }

    /// The iroh endpoint id, when it listens on iroh.
    #[napi(getter)]
    pub fn endpoint_id(&self) -> Option<String> {
        self.endpoint_id.clone()
    }

    /// The host key's `SHA256:` fingerprint, for clients to pin.
    #[napi(getter)]
    pub fn host_key_fingerprint(&self) -> String {
        self.server.host_key_fingerprint()
    }

    /// From now on, hand admitted channels to `nextConnection`
    /// instead of tunnelling them.
    #[napi]
    pub fn take_connections(&self) {
        self.handled.store(true, Ordering::Release);
    }

    /// The next admitted channel; `null` once the server is closed.
    #[napi]
    pub async fn next_connection(&self) -> Option<Incoming> {
        let mut incoming = self.incoming.lock().await;
        let handover = tokio::select! {
            handover = incoming.recv() => handover?,
            () = self.stop.cancelled() => return None,
        };
        let info = handover.channel.info().clone();
        Some(Incoming {
            handover: Mutex::new(Some(handover)),
            info,
        })
    }

    /// Replaces who may log in; new sessions see it at once, open ones keep
    /// theirs. Bad input rejects and changes nothing.
    #[napi]
    pub async fn reload_auth(&self, reload: AuthReload) -> napi::Result<()> {
        let (keys, cas) = load_keys(
            reload.authorized_keys.as_ref(),
            reload.cert_authority.as_ref(),
        )?;
        let handle = self.server.reload_handle();
        let mut config = (*handle.current()).clone();
        config.authorized_keys = keys;
        config.cert_authorities = cas;
        handle.reload(config);
        Ok(())
    }

    /// Replaces the forwarding policy.
    #[napi]
    pub async fn reload_forwarding(&self, policy: PolicyInput) -> napi::Result<()> {
        let policy = load_policy(&policy)?;
        let handle = self.server.reload_handle();
        let config = (*handle.current()).clone().forwarding(policy);
        handle.reload(config);
        Ok(())
    }

    /// Stops listening, tells every client goodbye, and resolves once all
    /// are gone.
    #[napi]
    pub async fn close(&self) {
        self.stop.cancel();
        self.incoming.lock().await.close();
        let mut serving = self.serving.lock().await;
        while serving.join_next().await.is_some() {}
    }
}
