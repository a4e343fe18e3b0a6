//! `alknet connect`.

use std::sync::Arc;

use alknet::ReconnectingClient;
use alknet::auth::ForwardingPolicy;
use alknet::proxy::{HttpProxyServer, LocalForward, Socks5Server};
use tracing::info;

use crate::cli::ConnectArgs;
use crate::commands::session::{connect_options, resolve_destination, transport};
use crate::error::CliError;
use crate::signals::shutdown_signal;

pub(crate) async fn run(mut args: ConnectArgs) -> Result<(), CliError> {
    resolve_destination(&mut args.session)?;
    let mut options = connect_options(&args.session)?;
    let transport = transport(&args.session, &options)?;
    options.remote_forwards = args.remote_forwards;
    if let Some(tunnels) = args.renew_after_tunnels {
        options.renew_after_tunnels = tunnels;
    }
    if let Some(path) = &args.forward_policy {
        options.forward_policy = Some(Arc::new(ForwardingPolicy::load(path)?));
    }
    let http_proxy = args.http_proxy.and_then(|listen| listen.0);
    if args.socks5.0.is_none()
        && http_proxy.is_none()
        && args.forwards.is_empty()
        && options.remote_forwards.is_empty()
    {
        return Err(CliError::Usage(
            "--socks5 none leaves nothing to do: add -L or -R forwards or --http-proxy".into(),
        ));
    }
    // Claim the local port first: if it is taken, say so before touching the
    // network. It stays open while the session comes and goes.
    let listener = match args.socks5.0 {
        Some(addr) => {
            let (listener, socks_addr) = super::bind_socks5(addr).await?;
            info!(socks5 = %socks_addr, "SOCKS5 listening");
            Some(listener)
        }
        None => None,
    };
    let http_listener = match http_proxy {
        Some(addr) => {
            let bind_error = |error| CliError::HttpProxyBind {
                addr: addr.to_string(),
                error,
            };
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(bind_error)?;
            let local = listener.local_addr().map_err(bind_error)?;
            info!(http_proxy = %local, "HTTP proxy listening");
            Some(listener)
        }
        None => None,
    };
    let mut forwards = Vec::with_capacity(args.forwards.len());
    for (index, spec) in args.forwards.iter().enumerate() {
        let forward = LocalForward::bind(spec).await?;
        // The index, not the target: destinations are never logged.
        if let Ok(addr) = forward.local_addr() {
            info!(local = index + 1, listen = %addr, "local forward listening");
        }
        forwards.push(forward);
    }
    let shutdown = shutdown_signal()?;

    let tunnel = Arc::new(ReconnectingClient::start(transport, options));
    let mut forwarding = tokio::task::JoinSet::new();
    for forward in forwards {
        forwarding.spawn(forward.serve(tunnel.clone()));
    }
    if let Some(listener) = http_listener {
        let proxy = HttpProxyServer::new(tunnel.clone());
        forwarding.spawn(async move { proxy.serve(listener).await });
    }
    let socks = Socks5Server::new(tunnel.clone());
    let serve_socks = async {
        match listener {
            Some(listener) => socks.serve(listener).await,
            None => std::future::pending().await,
        }
    };
    let result = tokio::select! {
        () = serve_socks => Ok(()),
        error = tunnel.failed() => Err(CliError::Session(error)),
        () = shutdown => Ok(()),
    };
    tunnel.shutdown().await;
    info!("disconnected");
    result
}
