//! Reaching and logging in to a server from the flags `connect` and `call`
//! share ([`SessionArgs`]).

use std::sync::Arc;
use std::time::Duration;

use alknet::ConnectOptions;
use alknet::auth::{certificate_path, load_certificate, load_private_key};
use alknet::proxy::{Dialer, UpstreamProxy};
use alknet::transport::iroh::{IrohOptions, IrohRelay, IrohTransport, parse_endpoint_id};
use alknet::transport::{TcpTransport, TlsClientOptions, TlsTransport, Transport};
use tracing::warn;

use crate::cli::SessionArgs;
use crate::error::CliError;
use crate::listen::TransportName;

/// The transport `--transport`, `--proxy` and the TLS and iroh flags describe.
pub(crate) fn transport(args: &SessionArgs) -> Result<Arc<dyn Transport>, CliError> {
    if args.transport == TransportName::Iroh {
        return iroh_transport(args);
    }
    let iroh_flags =
        args.peer.is_some() || !args.peer_addr.is_empty() || args.iroh_relay != "default";
    if iroh_flags {
        return Err(CliError::Usage(
            "--peer, --peer-addr and --iroh-relay need --transport iroh".into(),
        ));
    }
    let server = args.server.clone().ok_or_else(|| {
        CliError::Usage(
            "which server? pass --server HOST:PORT (or --transport iroh --peer ENDPOINT-ID)".into(),
        )
    })?;
    let mut tcp = TcpTransport::new(server);
    if let Some(proxy) = &args.proxy {
        // The transport applies its own connect timeout.
        let dialer = Dialer::new(Some(proxy.clone()), Duration::from_secs(3600));
        tcp = tcp.with_connector(Arc::new(dialer));
    }
    let tls_flags = args.tls_server_name.is_some() || !args.tls_ca.is_empty() || args.insecure;
    match args.transport {
        TransportName::Tcp if tls_flags => Err(CliError::Usage(
            "--tls-server-name, --tls-ca and --insecure need --transport tls".into(),
        )),
        TransportName::Tcp => Ok(Arc::new(tcp)),
        TransportName::Tls => {
            let mut options = TlsClientOptions::default();
            options.server_name = args.tls_server_name.clone();
            options.extra_roots = args.tls_ca.clone();
            options.insecure = args.insecure;
            if args.insecure {
                warn!(
                    "--insecure: the server's TLS certificate is NOT checked; only the SSH host key \
                     (--host-key) tells the real server from an impostor"
                );
            }
            Ok(Arc::new(TlsTransport::new(tcp, &options)?))
        }
        TransportName::Iroh => iroh_transport(args),
    }
}

/// `--transport iroh --peer ID [--peer-addr IP:PORT]… [--iroh-relay …]`.
fn iroh_transport(args: &SessionArgs) -> Result<Arc<dyn Transport>, CliError> {
    if args.server.is_some() {
        return Err(CliError::Usage(
            "--server is for tcp and tls; with iroh, name the server by --peer ENDPOINT-ID \
             (and --peer-addr IP:PORT)"
                .into(),
        ));
    }
    if args.tls_server_name.is_some() || !args.tls_ca.is_empty() || args.insecure {
        return Err(CliError::Usage(
            "--tls-server-name, --tls-ca and --insecure need --transport tls (iroh is always encrypted \
             and authenticated by the endpoint id)"
                .into(),
        ));
    }
    let peer = args.peer.as_deref().ok_or_else(|| {
        CliError::Usage(
            "--transport iroh needs --peer ENDPOINT-ID (the server prints it as `endpoint-id: …`)"
                .into(),
        )
    })?;
    let proxy = match &args.proxy {
        None => None,
        Some(proxy @ UpstreamProxy::HttpConnect { .. }) => Some(proxy.to_string()),
        Some(_) => {
            return Err(CliError::Usage(
                "iroh reaches its relays only through an HTTP proxy (HTTP CONNECT), and QUIC itself \
                 is UDP, which proxies do not carry: use --proxy http://HOST:PORT or no proxy"
                    .into(),
            ));
        }
    };
    let options = IrohOptions {
        relay: args.iroh_relay.parse()?,
        bind: None,
        proxy,
    };
    if options.relay == IrohRelay::Disabled && args.peer_addr.is_empty() {
        return Err(CliError::Usage(
            "with --iroh-relay none nothing can look the server up: give its address with \
             --peer-addr IP:PORT"
                .into(),
        ));
    }
    Ok(Arc::new(IrohTransport::new(
        options,
        parse_endpoint_id(peer)?,
        &args.peer_addr,
    )))
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
    Ok(options)
}
