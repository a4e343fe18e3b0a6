//! `connect(options)`: one SSH session with one channel (the seed's
//! ADR-007: no SSH multiplexing in JavaScript; many calls share one stream
//! through the envelope ids). By default the channel goes to the control
//! channel, `alknet-control:0`.

use std::sync::Arc;
use std::time::Duration;

use alknet::auth::{KeySource, load_certificate, load_private_key};
use alknet::proxy::{StreamOpener, TargetAddr, UpstreamProxy};
use alknet::transport::split_host_port;
use alknet::{
    CONTROL_HOST, CONTROL_PORT, Client, ConnectOptions as SessionOptions, KnownHostsCheck,
    TransportSpec,
};
use napi::Either;
use napi::bindgen_prelude::Buffer;
use napi_derive::napi;

use crate::channel::{Channel, Owner};
use crate::error::{from_alknet, from_open, invalid};

/// A key or certificate: a file path, or its bytes.
pub(crate) fn key_source(input: &Either<String, Buffer>) -> KeySource {
    match input {
        Either::A(path) => KeySource::Path(path.into()),
        Either::B(bytes) => KeySource::Bytes(bytes.to_vec()),
    }
}

/// How `connect` reaches and logs in to a server (the CLI's flags, in
/// camelCase).
#[napi(object)]
pub struct ConnectOptions {
    /// `host:port` (tcp, tls), or several ways in to one server, tried in
    /// order with a head start each (`tcp://`, `tls://`, `iroh://ID`).
    pub server: Option<Vec<String>>,
    /// `tcp` (default), `tls` or `iroh`.
    pub transport: Option<String>,
    /// Your OpenSSH Ed25519 private key: a path or its bytes.
    pub identity: Either<String, Buffer>,
    /// The passphrase of an encrypted identity.
    pub passphrase: Option<String>,
    /// An OpenSSH user certificate for the identity: a path or its bytes.
    pub certificate: Option<Either<String, Buffer>>,
    /// The login name (default `alknet`).
    pub user: Option<String>,
    /// The server's host key fingerprint, `SHA256:…`.
    pub host_key: Option<String>,
    /// A known_hosts file (OpenSSH format) to check the host key against
    /// and to remember a first contact in; only read when given.
    pub known_hosts: Option<String>,
    /// With `knownHosts`: refuse a server that is not in it.
    pub strict_host_keys: Option<bool>,
    /// TLS: the SNI name and the name checked.
    pub tls_server_name: Option<String>,
    /// TLS: extra CA certificate files (PEM).
    pub tls_ca: Option<Vec<String>>,
    /// TLS: accept any certificate (the host key still authenticates).
    pub insecure: Option<bool>,
    /// TLS: knock with a token of the identity before SSH, for a server
    /// with `stealthRequireToken`.
    pub stealth: Option<bool>,
    /// iroh: the server's endpoint id.
    pub peer: Option<String>,
    /// iroh: the server's UDP addresses, tried directly.
    pub peer_addr: Option<Vec<String>>,
    /// iroh: `default`, `none` or a relay URL.
    pub iroh_relay: Option<String>,
    /// Reach the server through `socks5://…` or `http://…`.
    pub proxy: Option<String>,
    /// Seconds between keepalives (default 15).
    pub keepalive_interval: Option<u32>,
    /// Where the channel goes: `host:port` (default `alknet-control:0`).
    pub target: Option<String>,
}

fn transport_spec(options: &ConnectOptions) -> napi::Result<TransportSpec> {
    let mut spec = TransportSpec::default();
    if let Some(kind) = &options.transport {
        spec.kind = kind.parse().map_err(invalid)?;
    }
    let servers = options.server.clone().unwrap_or_default();
    if spec.kind == alknet::TransportChoice::Iroh && options.peer.is_some() {
        // The peer comes first; every server is a further way in.
        spec.fallbacks = servers;
    } else {
        spec.server = servers.first().cloned();
        spec.fallbacks = servers.into_iter().skip(1).collect();
    }
    spec.tls_server_name = options.tls_server_name.clone();
    spec.tls_ca = options.tls_ca.iter().flatten().map(Into::into).collect();
    spec.insecure = options.insecure.unwrap_or(false);
    spec.peer = options.peer.clone();
    spec.peer_addrs = options
        .peer_addr
        .iter()
        .flatten()
        .map(|addr| {
            addr.parse()
                .map_err(|_| invalid(format!("peerAddr {addr:?} is not IP:PORT")))
        })
        .collect::<napi::Result<_>>()?;
    spec.iroh_relay = options.iroh_relay.clone();
    spec.proxy = options
        .proxy
        .as_deref()
        .map(|url| url.parse::<UpstreamProxy>().map_err(invalid))
        .transpose()?;
    Ok(spec)
}

fn session_options(options: &ConnectOptions) -> napi::Result<SessionOptions> {
    let identity = load_private_key(key_source(&options.identity), options.passphrase.as_deref())
        .map_err(invalid)?;
    let user = options.user.clone().unwrap_or_else(|| "alknet".to_owned());
    let mut session = SessionOptions::new(identity, user);
    if let Some(certificate) = &options.certificate {
        session.certificate = Some(load_certificate(key_source(certificate)).map_err(invalid)?);
    }
    session.host_key = options.host_key.clone();
    if let Some(file) = &options.known_hosts {
        let (host, port) = transport_spec(options)?
            .known_hosts_host()
            .ok_or_else(|| invalid("knownHosts needs `server` (or `peer` with iroh)"))?;
        let mut check = KnownHostsCheck::new(file, host, port);
        check.strict = options.strict_host_keys.unwrap_or(false);
        session.known_hosts = Some(check);
    }
    if let Some(seconds) = options.keepalive_interval {
        session.keepalive_interval = Duration::from_secs(u64::from(seconds.max(1)));
    }
    Ok(session)
}

fn target(options: &ConnectOptions) -> napi::Result<TargetAddr> {
    match &options.target {
        None => Ok(TargetAddr::Domain(CONTROL_HOST.to_owned(), CONTROL_PORT)),
        Some(text) => {
            let (host, port) = split_host_port(text)
                .ok_or_else(|| invalid(format!("target {text:?} is not host:port")))?;
            Ok(TargetAddr::from_host_port(host, port))
        }
    }
}

/// Opens one SSH session and one channel in it.
#[napi]
pub async fn connect(options: ConnectOptions) -> napi::Result<Channel> {
    let session = session_options(&options)?;
    let mut spec = transport_spec(&options)?;
    if options.stealth.unwrap_or(false) {
        spec.stealth_key = Some(session.identity.clone());
    }
    let transport = spec.build().map_err(from_alknet)?;
    let target = target(&options)?;
    let client = Arc::new(
        Client::connect(transport.as_ref(), session)
            .await
            .map_err(from_alknet)?,
    );
    match client.open(&target).await {
        Ok(stream) => Ok(Channel::new(stream, Owner::Session { client, transport })),
        Err(failure) => {
            client.disconnect().await;
            transport.close().await;
            Err(from_open(failure))
        }
    }
}
