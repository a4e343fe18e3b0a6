//! Reaching and logging in to a server from the flags `connect` and `call`
//! share ([`SessionArgs`]).

use std::sync::Arc;
use std::time::Duration;

use alknet::ConnectOptions;
use alknet::TransportSpec;
use alknet::auth::{certificate_path, load_certificate, load_private_key};
use alknet::transport::Transport;

use crate::cli::SessionArgs;
use crate::error::CliError;

/// The transport `--transport`, `--proxy` and the TLS and iroh flags describe.
pub(crate) fn transport(args: &SessionArgs) -> Result<Arc<dyn Transport>, CliError> {
    let mut spec = TransportSpec::default();
    spec.kind = args.transport.into();
    spec.server = args.server.clone();
    spec.tls_server_name = args.tls_server_name.clone();
    spec.tls_ca = args.tls_ca.clone();
    spec.insecure = args.insecure;
    spec.peer = args.peer.clone();
    spec.peer_addrs = args.peer_addr.clone();
    spec.iroh_relay = Some(args.iroh_relay.clone());
    spec.proxy = args.proxy.clone();
    Ok(spec.build()?)
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
    options.keepalive_interval = Duration::from_secs(args.keepalive_interval);
    options.check()?;
    Ok(options)
}
