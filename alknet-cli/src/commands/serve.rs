//! `alknet serve`: the flags and the config file become an [`AuthConfig`]
//! (everything SIGHUP reloads) and [`ServeOptions`]; the facade serves
//! every listener on one runtime per core.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use alknet::auth::{
    AuthConfig, AuthorizedKeys, CertificateAuthorities, RevokedKeys, load_certificate,
    load_private_key,
};
use alknet::stealth::StealthConfig;
use alknet::{ListenerSettings, Pem, ServeOptions, Server, bind_listeners};
use tracing::{info, warn};

use crate::cli::ServeArgs;
use crate::config::ServeSettings;
use crate::error::CliError;
use crate::signals::shutdown_signal;

pub(crate) async fn run(args: ServeArgs) -> Result<(), CliError> {
    let args = ServeSettings::resolve(args)?;
    let host_key = load_private_key(args.key.as_path(), super::passphrase().as_deref())?;
    let auth = load_auth_config(&args)?;

    let shutdown = shutdown_signal()?;
    let mut settings = ListenerSettings::default();
    settings.default_kind = args.transport.into();
    settings.tls_cert = args.tls_cert.clone().map(Pem::File);
    settings.tls_key = args.tls_key.clone().map(Pem::File);
    if args.stealth {
        let mut stealth = StealthConfig::with_timeout(Duration::from_secs(args.stealth_timeout));
        if let Some(backend) = args.stealth_backend.clone() {
            stealth = stealth.with_backend(backend);
        }
        settings.stealth = Some(stealth);
    } else if args.stealth_backend.is_some() {
        return Err(CliError::Usage(
            "--stealth-backend is a stealth setting: add --stealth".into(),
        ));
    }
    settings.stealth_require_token = args.stealth_require_token;
    settings.iroh_relay = Some(args.iroh_relay.clone());
    if let Some(config) = args.acme.clone() {
        let certificates = alknet::acme::AcmeCertificates::start(config).await?;
        settings.tls_resolver = Some(certificates.resolver());
    }
    let mut bound = bind_listeners(&args.listen, &settings, &host_key).await?;
    if let Some(id) = &bound.endpoint_id {
        // On stdout, for scripts.
        println!("endpoint-id: {id}");
    }
    let listeners = std::mem::take(&mut bound.listeners);
    let mut options = ServeOptions::new(host_key, auth);
    if let Some(path) = &args.host_certificate {
        options = options.host_certificate(load_certificate(path.as_path())?)?;
    }
    let options = options
        .gateway_ports(args.gateway_ports)
        .proxy(args.proxy.clone())
        .login_grace(Duration::from_secs(args.login_grace_time))
        .keepalive_interval(Duration::from_secs(args.keepalive_interval))
        .max_channels_per_session(args.max_channels_per_session);
    let server = Server::new(options);
    reload_on_sighup(&server, Arc::new(args))?;
    for (acceptor, listener) in &listeners {
        info!(
            listen = %acceptor.describe(),
            stealth = listener.stealth.is_some(),
            knock = listener.require_token,
            "listening"
        );
    }
    info!(
        host_key = %server.host_key_fingerprint(),
        listeners = listeners.len(),
        "alknet server ready"
    );
    let this_host = whoami::fallible::hostname().unwrap_or_else(|_| "HOST".into());
    for (acceptor, _) in &listeners {
        let listener = acceptor.describe();
        if let Some(line) = client_line(
            &listener,
            bound.endpoint_id.as_deref(),
            &server.host_key_fingerprint(),
            &this_host,
        ) {
            info!("to connect: {line}");
        }
    }
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
                        let waiting = args.restart_needed();
                        if !waiting.is_empty() {
                            warn!(
                                settings = waiting.join(","),
                                "changed settings take effect only on restart"
                            );
                        }
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

/// The `alknet connect` line for a client of `listener` (as the server
/// describes it: `tcp://127.0.0.1:2222`), with the host key pinned. An
/// address of every interface is replaced by this machine's name.
fn client_line(
    listener: &str,
    endpoint_id: Option<&str>,
    fingerprint: &str,
    this_host: &str,
) -> Option<String> {
    let (scheme, addr) = listener.split_once("://")?;
    let destination = match scheme {
        "iroh" => return endpoint_id.map(|id| {
            format!("alknet connect --transport iroh --peer {id} --host-key {fingerprint} -i ~/.ssh/id_ed25519")
        }),
        "tcp" | "tls" => {
            let addr: std::net::SocketAddr = addr.parse().ok()?;
            match addr.ip() {
                ip if ip.is_unspecified() => format!("{this_host}:{}", addr.port()),
                std::net::IpAddr::V6(ip) => format!("[{ip}]:{}", addr.port()),
                std::net::IpAddr::V4(ip) => format!("{ip}:{}", addr.port()),
            }
        }
        _ => return None,
    };
    let transport = if scheme == "tls" {
        " --transport tls"
    } else {
        ""
    };
    Some(format!(
        "alknet connect {destination}{transport} --host-key {fingerprint} -i ~/.ssh/id_ed25519"
    ))
}

#[cfg(test)]
mod tests {
    use super::client_line;

    #[test]
    fn the_client_line_is_ready_to_paste() {
        let fp = "SHA256:abc";
        assert_eq!(
            client_line("tcp://127.0.0.1:2222", None, fp, "box").as_deref(),
            Some("alknet connect 127.0.0.1:2222 --host-key SHA256:abc -i ~/.ssh/id_ed25519")
        );
        assert_eq!(
            client_line("tls://0.0.0.0:443", None, fp, "box").as_deref(),
            Some(
                "alknet connect box:443 --transport tls --host-key SHA256:abc -i ~/.ssh/id_ed25519"
            )
        );
        assert_eq!(
            client_line("tcp://[::1]:22", None, fp, "box").as_deref(),
            Some("alknet connect [::1]:22 --host-key SHA256:abc -i ~/.ssh/id_ed25519")
        );
        assert_eq!(
            client_line("iroh://0.0.0.0:0", Some("ID"), fp, "box").as_deref(),
            Some(
                "alknet connect --transport iroh --peer ID --host-key SHA256:abc -i ~/.ssh/id_ed25519"
            )
        );
        assert_eq!(client_line("what", None, fp, "box"), None);
    }
}
