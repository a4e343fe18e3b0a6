//! [`ServeOptions`] (the server as a whole) and [`ListenerOptions`] (one
//! listener), built with builder methods. Everything that may change while
//! the server runs lives in one [`AuthConfig`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use alknet_auth::{AuthConfig, Certificate, PrivateKey, fingerprint};
use alknet_call::OperationRegistry;
use alknet_proxy::UpstreamProxy;
use alknet_stealth::StealthConfig;
use russh::keys::ssh_key::certificate::CertType;

use super::sink::ChannelSink;
use crate::Error;

/// Channels one session may have open at once, by default. Each can hold
/// up to `CHANNEL_BUFFER` SSH messages (≈16 MiB) its target has not yet
/// taken (see `tuning.rs` and the README's "Limits"), so this is the
/// largest term of one session's memory bound.
pub const DEFAULT_MAX_CHANNELS_PER_SESSION: usize = 1024;

/// How an alknet server behaves: the host key, who may log in and what
/// they may do ([`AuthConfig`], the one reloadable part), and the
/// settings fixed at start.
///
/// ```
/// use std::time::Duration;
/// use alknet::auth::{AuthConfig, AuthorizedKeys, generate_ed25519};
/// use alknet::ServeOptions;
///
/// let options = ServeOptions::new(
///     generate_ed25519("host")?,
///     AuthConfig::new(AuthorizedKeys::default()).max_auth_attempts(3),
/// )
/// .login_grace(Duration::from_secs(30))
/// .gateway_ports(true);
/// # Ok::<(), alknet::auth::AuthError>(())
/// ```
#[derive(Clone)]
pub struct ServeOptions {
    pub(crate) host_key: PrivateKey,
    pub(crate) host_certificates: Vec<Certificate>,
    pub(crate) auth: AuthConfig,
    pub(crate) dial_timeout: Duration,
    pub(crate) login_grace: Duration,
    pub(crate) shutdown_grace: Duration,
    pub(crate) keepalive_interval: Duration,
    pub(crate) gateway_ports: bool,
    pub(crate) proxy: Option<UpstreamProxy>,
    pub(crate) registry: OperationRegistry,
    pub(crate) sink: Option<Arc<dyn ChannelSink>>,
    pub(crate) routes: Vec<(String, u16, Arc<dyn ChannelSink>)>,
    pub(crate) max_channels_per_session: usize,
}

impl ServeOptions {
    /// Options with alknet's defaults for everything else.
    pub fn new(host_key: PrivateKey, auth: impl Into<AuthConfig>) -> Self {
        Self {
            host_key,
            host_certificates: Vec::new(),
            auth: auth.into(),
            dial_timeout: Duration::from_secs(10),
            login_grace: Duration::from_secs(60),
            shutdown_grace: Duration::from_secs(2),
            keepalive_interval: Duration::from_secs(30),
            gateway_ports: false,
            proxy: None,
            registry: OperationRegistry::new(),
            sink: None,
            routes: Vec::new(),
            max_channels_per_session: DEFAULT_MAX_CHANNELS_PER_SESSION,
        }
    }

    /// Presents `certificate` (an OpenSSH host certificate for the host
    /// key, made by `ssh-keygen -h`) to clients that ask for one; they
    /// trust it through an `@cert-authority` line. Refused when it is not
    /// a host certificate or certifies another key.
    pub fn host_certificate(mut self, certificate: Certificate) -> Result<Self, Error> {
        if certificate.cert_type() != CertType::Host {
            return Err(Error::HostCertificate(
                "it is a user certificate; sign the host key with `ssh-keygen -h`".into(),
            ));
        }
        if certificate.public_key() != self.host_key.public_key().key_data() {
            return Err(Error::HostCertificate(format!(
                "it certifies {}, not the host key {}",
                fingerprint(&certificate.public_key().clone().into()),
                fingerprint(self.host_key.public_key())
            )));
        }
        self.host_certificates = vec![certificate];
        Ok(self)
    }

    /// Replaces who may log in and what they may do.
    pub fn auth(mut self, auth: AuthConfig) -> Self {
        self.auth = auth;
        self
    }

    /// How long to try reaching a tunnel target before reporting failure
    /// (10 s).
    pub fn dial_timeout(mut self, timeout: Duration) -> Self {
        self.dial_timeout = timeout;
        self
    }

    /// How long a client may take from being accepted (TCP, TLS or QUIC)
    /// to being authenticated, stealth phase and SSH handshake included
    /// (OpenSSH's `LoginGraceTime`; 60 s).
    pub fn login_grace(mut self, grace: Duration) -> Self {
        self.login_grace = grace;
        self
    }

    /// On shutdown, how long clients get to close before being cut off (2 s).
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.shutdown_grace = grace;
        self
    }

    /// Interval between keepalives to the client; three unanswered ones
    /// end the session, so a client whose network vanished is gone after
    /// about four intervals (30 s → about 2 minutes).
    pub fn keepalive_interval(mut self, interval: Duration) -> Self {
        self.keepalive_interval = interval;
        self
    }

    /// Whether remote (`-R`) forwards may listen on the address the client
    /// names (OpenSSH's `GatewayPorts clientspecified`). Off (`GatewayPorts
    /// no`): they listen on loopback only.
    pub fn gateway_ports(mut self, allowed: bool) -> Self {
        self.gateway_ports = allowed;
        self
    }

    /// Reaches tunnel targets through this proxy instead of directly
    /// (`alknet serve --proxy`). Unix-socket targets are always local.
    pub fn proxy(mut self, proxy: Option<UpstreamProxy>) -> Self {
        self.proxy = proxy;
        self
    }

    /// The operations served to every `alknet-control:0` channel, with the
    /// session's identity; spokes register with the hub around it.
    pub fn registry(mut self, registry: OperationRegistry) -> Self {
        self.registry = registry;
        self
    }

    /// Hands every admitted channel to `sink` instead of dialling it (the
    /// control channel excepted). See [`ChannelSink`].
    pub fn sink(mut self, sink: Arc<dyn ChannelSink>) -> Self {
        self.sink = Some(sink);
        self
    }

    /// Hands admitted channels to `host:port` (host compared without
    /// regard to case) to `sink`; the rest go to the default sink.
    pub fn route(mut self, host: impl Into<String>, port: u16, sink: Arc<dyn ChannelSink>) -> Self {
        self.routes.push((host.into(), port, sink));
        self
    }

    /// At most `channels` open channels per session
    /// ([`DEFAULT_MAX_CHANNELS_PER_SESSION`]); more are refused with
    /// "resource shortage".
    pub fn max_channels_per_session(mut self, channels: usize) -> Self {
        self.max_channels_per_session = channels;
        self
    }

    /// The configuration a reload would replace.
    pub fn auth_config(&self) -> &AuthConfig {
        &self.auth
    }
}

impl fmt::Debug for ServeOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the host key.
        f.debug_struct("ServeOptions")
            .field("host_key", &fingerprint(self.host_key.public_key()))
            .field("authorized_keys", &self.auth.authorized_keys.len())
            .field("cert_authorities", &self.auth.cert_authorities.len())
            .field("dial_timeout", &self.dial_timeout)
            .field("max_auth_attempts", &self.auth.max_auth_attempts)
            .field("max_connections_per_ip", &self.auth.max_connections_per_ip)
            .field("login_grace", &self.login_grace)
            .field("shutdown_grace", &self.shutdown_grace)
            .field("keepalive_interval", &self.keepalive_interval)
            .field("gateway_ports", &self.gateway_ports)
            .field("proxy", &self.proxy)
            .field("routes", &self.routes.len())
            .field("max_channels_per_session", &self.max_channels_per_session)
            .finish_non_exhaustive()
    }
}

/// Per-listener settings for [`Server::serve_with`](crate::Server::serve_with).
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct ListenerOptions {
    /// Stealth mode: clients that do not speak SSH are answered as nginx
    /// would answer them. Meant for TLS listeners, where it makes the port
    /// look like an ordinary HTTPS site.
    pub stealth: Option<StealthConfig>,
    /// With stealth: open a tunnel only after a knock carrying a token of
    /// an authorized key (`alknet connect --stealth`); a bare `SSH-2.0-`
    /// gets what any other visitor gets.
    pub require_token: bool,
}

impl ListenerOptions {
    /// Options with stealth mode on.
    pub fn stealth(config: StealthConfig) -> Self {
        Self {
            stealth: Some(config),
            require_token: false,
        }
    }

    /// Requires a knock with a token before SSH (see
    /// [`require_token`](Self::require_token)).
    pub fn requiring_token(mut self) -> Self {
        self.require_token = true;
        self
    }
}
