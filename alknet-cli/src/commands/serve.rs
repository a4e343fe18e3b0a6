//! `alknet serve`: the flags and the config file become an [`AuthConfig`]
//! (everything SIGHUP reloads) and [`ServeOptions`]; the facade serves
//! every listener on one runtime per core.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use alknet::auth::{
    AuthConfig, AuthorizedKeys, CertificateAuthorities, PrivateKey, RevokedKeys, load_private_key,
};
use alknet::stealth::StealthConfig;
use alknet::transport::iroh::{IrohAcceptor, IrohOptions, derive_secret_key};
use alknet::transport::{TcpAcceptor, TlsAcceptor};
use alknet::{Listener, ListenerOptions, ServeOptions, Server};
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
    let options = ServeOptions::new(host_key, auth)
        .gateway_ports(args.gateway_ports)
        .proxy(args.proxy.clone())
        .login_grace(Duration::from_secs(args.login_grace_time))
        .max_channels_per_session(args.max_channels_per_session);
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
    server.serve_on_every_core(listeners, shutdown).await?;
    info!("server stopped");
    Ok(())
}

/// Who may log in, what is revoked, where sessions may forward, and the
/// limits: read fresh from the files (for start and every SIGHUP).
fn load_auth_config(args: &ServeSettings) -> Result<AuthConfig, CliError> {
    let authorized_keys = match &args.authorized_keys {
        Some(path) => load_authorized_keys(path, args.cert_authorities.is_empty())?,
        None => AuthorizedKeys::default(),
    };
    let mut cert_authorities = CertificateAuthorities::default();
    for path in &args.cert_authorities {
        cert_authorities.load(path.as_path())?;
    }
    let revoked = match &args.revoked_keys {
        Some(path) => RevokedKeys::load(path.as_path())?,
        None => RevokedKeys::default(),
    };
    let limits = args.limits_now()?;
    Ok(AuthConfig::new(authorized_keys)
        .cert_authorities(cert_authorities)
        .revoked_keys(revoked)
        .forwarding(args.forwarding_policy()?)
        .max_connections_per_ip(limits.max_connections_per_ip)
        .max_auth_attempts(limits.max_auth_attempts)
        .startups(limits.startups)
        .max_remote_forwards(limits.max_remote_forwards))
}

/// On SIGHUP, re-reads the key, CA, revocation and policy files and the
/// limits; new connections get the new configuration, open sessions keep
/// theirs. A file that fails to load leaves the previous configuration in
/// place.
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
                            revoked_keys = config.revoked_keys.len(),
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
    let stealth = StealthConfig::with_timeout(Duration::from_secs(args.stealth_timeout));
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
