//! Reaching and logging in to a server from the flags `connect` and `call`
//! share ([`SessionArgs`]).

use std::sync::Arc;
use std::time::Duration;

use std::path::PathBuf;

use alknet::TransportSpec;
use alknet::auth::{certificate_path, load_certificate, load_private_key};
use alknet::transport::Transport;
use alknet::{ConnectOptions, KnownHostsCheck};

use crate::cli::SessionArgs;
use crate::destination::{Destination, server_address};
use crate::error::CliError;
use crate::listen::TransportName;

/// Folds DESTINATION (`[user@]host[:port]`) and `-p` into `--server`,
/// `--user` and (for iroh) `--peer`, refusing contradictions.
pub(crate) fn resolve_destination(args: &mut SessionArgs) -> Result<(), CliError> {
    if let Some(text) = args.destination.take() {
        let destination: Destination = text.parse().map_err(CliError::Usage)?;
        if !args.server.is_empty() || args.peer.is_some() {
            return Err(CliError::Usage(format!(
                "the server is given twice: as {text:?} and with --server/--peer; give one"
            )));
        }
        if let (Some(user), Some(flag)) = (&destination.user, &args.user)
            && user != flag
        {
            return Err(CliError::Usage(format!(
                "the user is given twice: {user:?} in {text:?} and {flag:?} with -l/--user"
            )));
        }
        args.user = args.user.take().or(destination.user);
        if matches!(args.transport, TransportName::Iroh) {
            args.peer = Some(destination.host);
        } else {
            let port = match (destination.port, args.port) {
                (Some(a), Some(b)) if a != b => {
                    return Err(CliError::Usage(format!(
                        "the port is given twice: {a} in {text:?} and {b} with -p"
                    )));
                }
                (port, flag) => port.or(flag).unwrap_or(22),
            };
            args.server = vec![server_address(&destination.host, port)];
        }
    } else if let (Some(port), Some(server)) = (args.port, args.server.first_mut()) {
        match alknet::transport::split_host_port(server) {
            Some((_, given)) if given != port => {
                return Err(CliError::Usage(format!(
                    "the port is given twice: {given} in --server and {port} with -p"
                )));
            }
            Some(_) => {}
            None => *server = server_address(server.trim_matches(['[', ']']), port),
        }
    }
    Ok(())
}

/// The transport `--transport`, `--proxy` and the TLS and iroh flags
/// describe; `--stealth` knocks with `options`' key.
pub(crate) fn transport(
    args: &SessionArgs,
    options: &ConnectOptions,
) -> Result<Arc<dyn Transport>, CliError> {
    let mut spec = transport_spec(args);
    if args.stealth {
        spec.stealth_key = Some(options.identity.clone());
    }
    Ok(spec.build()?)
}

/// The settings behind [`transport`], unchecked.
fn transport_spec(args: &SessionArgs) -> TransportSpec {
    let mut spec = TransportSpec::default();
    spec.kind = args.transport.into();
    spec.server = args.server.first().cloned();
    spec.fallbacks = args.server.iter().skip(1).cloned().collect();
    if spec.kind == alknet::TransportChoice::Iroh && args.peer.is_some() {
        // The peer comes first; every --server is a further way in.
        spec.server = None;
        spec.fallbacks = args.server.clone();
    }
    spec.tls_server_name = args.tls_server_name.clone();
    spec.tls_ca = args.tls_ca.clone();
    spec.insecure = args.insecure;
    spec.peer = args.peer.clone();
    spec.peer_addrs = args.peer_addr.clone();
    spec.iroh_relay = Some(args.iroh_relay.clone());
    spec.proxy = args.proxy.clone();
    spec
}

/// The session `--identity`, `--certificate`, `--user`, `--host-key` and
/// `--keepalive-interval` describe.
pub(crate) fn connect_options(args: &SessionArgs) -> Result<ConnectOptions, CliError> {
    let identity = load_private_key(args.identity.as_path(), super::passphrase().as_deref())?;
    let user = args.user.clone().unwrap_or_else(whoami::username);
    let mut options = ConnectOptions::new(identity, user);
    // As ssh does: an explicit certificate, or <identity>-cert.pub if present.
    let certificate = match &args.certificate {
        Some(path) => Some(load_certificate(path.as_path())?),
        None => {
            let beside = certificate_path(&args.identity);
            if beside.is_file() {
                Some(load_certificate(beside.as_path())?)
            } else {
                None
            }
        }
    };
    options.certificate = certificate;
    options.host_key = args.host_key.clone();
    if options.host_key.is_none() {
        options.known_hosts = known_hosts(args)?;
    }
    options.keepalive_interval = Duration::from_secs(args.keepalive_interval);
    options.check()?;
    Ok(options)
}

/// Where host keys are remembered, for the server the arguments name:
/// `--known-hosts` alone, or ssh's two files and alknet's own.
fn known_hosts(args: &SessionArgs) -> Result<Option<KnownHostsCheck>, CliError> {
    // Nothing to check against: building the transport reports why.
    let Some((host, port)) = transport_spec(args).known_hosts_host() else {
        return Ok(None);
    };
    let mut check = match &args.known_hosts {
        Some(file) => KnownHostsCheck::new(file.clone(), host, port),
        None => {
            let home = std::env::var_os("HOME")
                .filter(|home| !home.is_empty())
                .ok_or_else(|| {
                    CliError::Usage(
                        "HOME is not set: pass --known-hosts FILE (or --host-key) to check the \
                     server's host key"
                            .into(),
                    )
                })?;
            let home = PathBuf::from(home);
            let config = std::env::var_os("XDG_CONFIG_HOME")
                .filter(|dir| !dir.is_empty())
                .map_or_else(|| home.join(".config"), PathBuf::from);
            let own = config.join("alknet").join("known_hosts");
            let mut check = KnownHostsCheck::new(own.clone(), host, port);
            check.files = vec![
                home.join(".ssh").join("known_hosts"),
                home.join(".ssh").join("known_hosts2"),
                own,
            ];
            check
        }
    };
    check.strict = args.strict_host_keys;
    Ok(Some(check))
}
