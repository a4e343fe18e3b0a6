//! `alknet serve`.
//!
//! The server runs one single-threaded tokio runtime per core, each
//! accepting from the shared listener: a connection then lives its whole
//! life on one thread (like OpenSSH's process per connection), so packets
//! pass between its SSH session and its relays without cross-thread
//! wake-ups, while different connections still use every core. Measured
//! with `cargo xtask bench` on 2 cores: ~1200 MiB/s against ~1110 MiB/s
//! with one multi-threaded runtime.

use std::sync::Arc;
use std::thread;

use std::path::Path;
use std::time::Duration;

use alknet::auth::{
    AuthConfig, AuthorizedKeys, CertificateAuthorities, PrivateKey, load_private_key,
};
use alknet::stealth::StealthConfig;
use alknet::transport::iroh::{IrohAcceptor, IrohOptions, derive_secret_key};
use alknet::transport::{TcpAcceptor, TlsAcceptor, TransportAcceptor};
use alknet::{ListenerOptions, ServeOptions, Server};
use tokio::sync::{oneshot, watch};
use tracing::{info, warn};

use crate::cli::ServeArgs;
use crate::config::ServeSettings;
use crate::error::CliError;
use crate::listen::TransportName;
use crate::signals::shutdown_signal;

pub(crate) async fn run(args: ServeArgs) -> Result<(), CliError> {
    let args = ServeSettings::resolve(args)?;
    let host_key = load_private_key(args.key.as_path(), super::passphrase().as_deref())?;
    let auth = load_auth_config(&args)?;

    let shutdown = shutdown_signal()?;
    let listeners = bind_listeners(&args, &host_key).await?;
    let mut options = ServeOptions::new(host_key, auth.authorized_keys.clone());
    options.cert_authorities = auth.cert_authorities.clone();
    options.forwarding = auth.forwarding.clone();
    options.max_auth_attempts = auth.max_auth_attempts;
    options.max_connections_per_ip = auth.max_connections_per_ip;
    options.gateway_ports = args.gateway_ports;
    options.proxy = args.proxy.clone();
    let server = Server::new(options);
    reload_on_sighup(&server, Arc::new(args))?;
    for (acceptor, listener) in &listeners {
        info!(
            listen = %acceptor.describe(),
            stealth = listener.stealth.is_some(),
            "listening"
        );
    }
    info!(
        host_key = %server.host_key_fingerprint(),
        listeners = listeners.len(),
        "alknet server ready"
    );
    let listeners = Arc::new(listeners);

    let (stop, stopped) = watch::channel(false);
    let workers = thread::available_parallelism().map_or(1, usize::from);
    let mut finished = Vec::with_capacity(workers);
    for index in 0..workers {
        let (server, listeners, stopped) = (server.clone(), listeners.clone(), stopped.clone());
        let (done, done_rx) = oneshot::channel::<()>();
        finished.push(done_rx);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(CliError::Runtime)?;
        thread::Builder::new()
            .name(format!("alknet-serve-{index}"))
            .spawn(move || {
                runtime.block_on(async move {
                    let mut serving = tokio::task::JoinSet::new();
                    for index in 0..listeners.len() {
                        let (server, listeners, mut stopped) =
                            (server.clone(), listeners.clone(), stopped.clone());
                        serving.spawn(async move {
                            let (acceptor, options) = &listeners[index];
                            let shutdown = async move {
                                let _ = stopped.wait_for(|stop| *stop).await;
                            };
                            server
                                .serve_with(acceptor.as_ref(), options, shutdown)
                                .await
                        });
                    }
                    while let Some(result) = serving.join_next().await {
                        if let Ok(Err(error)) = result {
                            warn!(%error, "server worker stopped");
                        }
                    }
                });
                let _ = done.send(());
            })
            .map_err(CliError::Runtime)?;
    }

    // This runtime keeps driving the listener the workers accept from.
    shutdown.await;
    let _ = stop.send(true);
    for done in finished {
        let _ = done.await;
    }
    // iroh endpoints tell their peers goodbye instead of going silent.
    for (acceptor, _) in listeners.iter() {
        acceptor.close().await;
    }
    info!("server stopped");
    Ok(())
}

/// Who may log in and where they may forward, read fresh from the files.
fn load_auth_config(args: &ServeSettings) -> Result<AuthConfig, CliError> {
    let authorized_keys = match &args.authorized_keys {
        Some(path) => load_authorized_keys(path, args.cert_authorities.is_empty())?,
        None => AuthorizedKeys::default(),
    };
    let mut cert_authorities = CertificateAuthorities::default();
    for path in &args.cert_authorities {
        cert_authorities.load(path.as_path())?;
    }
    let mut config = AuthConfig::new(authorized_keys, cert_authorities, args.forwarding_policy()?);
    let limits = args.limits_now()?;
    config.max_connections_per_ip = limits.max_connections_per_ip;
    config.max_auth_attempts = limits.max_auth_attempts;
    Ok(config)
}

/// On SIGHUP, re-reads the key, CA and policy files; new connections get
/// the new configuration, open sessions keep theirs. A file that fails to
/// load leaves the previous configuration in place.
fn reload_on_sighup(server: &Server, args: Arc<ServeSettings>) -> Result<(), CliError> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangups = signal(SignalKind::hangup()).map_err(CliError::Signals)?;
        let reload = server.reload_handle();
        tokio::spawn(async move {
            while hangups.recv().await.is_some() {
                match load_auth_config(&args) {
                    Ok(config) => {
                        info!(
                            authorized_keys = config.authorized_keys.len(),
                            cert_authorities = config.cert_authorities.len(),
                            forwarding_rules = config.forwarding.rules.len(),
                            max_connections_per_ip = config.max_connections_per_ip,
                            max_auth_attempts = config.max_auth_attempts,
                            "configuration reloaded"
                        );
                        reload.reload(config);
                    }
                    Err(error) => {
                        warn!(%error, "configuration not reloaded; keeping the previous one")
                    }
                }
            }
        });
    }
    #[cfg(not(unix))]
    let _ = (server, args);
    Ok(())
}

/// Loads authorized_keys, warning about every line it cannot use. An empty
/// set is an error when it is the only way in.
fn load_authorized_keys(path: &Path, only_way_in: bool) -> Result<AuthorizedKeys, CliError> {
    let authorized_keys = AuthorizedKeys::load(path)?;
    for skipped in authorized_keys.skipped() {
        warn!(
            file = %path.display(),
            line = skipped.line,
            reason = %skipped.reason,
            "authorized_keys line ignored"
        );
    }
    if authorized_keys.is_empty() && only_way_in {
        return Err(CliError::NoAuthorizedKeys {
            path: path.display().to_string(),
        });
    }
    Ok(authorized_keys)
}

/// A bound listener and its options.
type Listener = (Box<dyn TransportAcceptor>, ListenerOptions);

/// Checks the listener flags together and binds every listener, so that a
/// mistake or a busy port is reported before anything is served.
async fn bind_listeners(
    args: &ServeSettings,
    host_key: &PrivateKey,
) -> Result<Vec<Listener>, CliError> {
    let kinds: Vec<TransportName> = args
        .listen
        .iter()
        .map(|l| l.kind_or(args.transport))
        .collect();
    let any_tls = kinds.contains(&TransportName::Tls);
    if kinds
        .iter()
        .filter(|kind| **kind == TransportName::Iroh)
        .count()
        > 1
    {
        return Err(CliError::Usage(
            "one iroh listener is enough: its endpoint id is the same whatever the address".into(),
        ));
    }
    if args.stealth && !any_tls {
        return Err(CliError::Usage(
            "--stealth needs a TLS listener (--listen tls://ADDR with --tls-cert and --tls-key): \
             without TLS, anyone watching sees the SSH handshake anyway"
                .into(),
        ));
    }
    let tls_files = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some((cert, key)),
        (None, None) if !any_tls => None,
        _ if any_tls => {
            return Err(CliError::Usage(
                "a tls:// listener needs both --tls-cert and --tls-key".into(),
            ));
        }
        _ => {
            return Err(CliError::Usage(
                "--tls-cert and --tls-key are only used by tls:// listeners; add one with --listen tls://ADDR"
                    .into(),
            ));
        }
    };
    let mut stealth = StealthConfig::default();
    stealth.idle_timeout = Duration::from_secs(args.stealth_timeout);
    let mut listeners: Vec<Listener> = Vec::with_capacity(args.listen.len());
    for (spec, kind) in args.listen.iter().zip(kinds) {
        if kind == TransportName::Iroh {
            listeners.push((
                Box::new(bind_iroh(args, &spec.addr, host_key).await?),
                ListenerOptions::default(),
            ));
            continue;
        }
        let tcp = TcpAcceptor::bind(&spec.addr).await?;
        match (kind, tls_files) {
            (TransportName::Tls, Some((cert, key))) => {
                let options = if args.stealth {
                    ListenerOptions::stealth(stealth.clone())
                } else {
                    ListenerOptions::default()
                };
                listeners.push((Box::new(TlsAcceptor::new(tcp, cert, key)?), options));
            }
            _ => listeners.push((Box::new(tcp), ListenerOptions::default())),
        }
    }
    Ok(listeners)
}

/// The iroh endpoint, its id derived from the host key: the same key gives
/// the same endpoint id on every start, with no state file to keep, and the
/// derivation (a labelled SHA-256) reveals nothing about the SSH key.
/// Replacing the host key changes the id, as it changes the fingerprint
/// clients pin anyway. The id goes to stdout for scripts.
async fn bind_iroh(
    args: &ServeSettings,
    addr: &str,
    host_key: &PrivateKey,
) -> Result<IrohAcceptor, CliError> {
    let seed = host_key
        .key_data()
        .ed25519()
        .map(|pair| pair.private.to_bytes())
        .ok_or_else(|| CliError::Usage("iroh needs an Ed25519 host key".into()))?;
    let bind: std::net::SocketAddr = addr.parse().map_err(|_| {
        CliError::Usage(format!(
            "an iroh listener binds a UDP address: IP:PORT (such as 0.0.0.0:0), not {addr:?}"
        ))
    })?;
    let options = IrohOptions {
        relay: args.iroh_relay.parse()?,
        bind: Some(bind),
        proxy: None,
    };
    let acceptor = IrohAcceptor::bind(&options, derive_secret_key(&seed)).await?;
    println!("endpoint-id: {}", acceptor.endpoint_id());
    let direct: Vec<String> = acceptor
        .bound_sockets()
        .iter()
        .map(ToString::to_string)
        .collect();
    info!(
        endpoint_id = %acceptor.endpoint_id(),
        udp = %direct.join(","),
        relay = %args.iroh_relay,
        "iroh endpoint ready"
    );
    Ok(acceptor)
}
