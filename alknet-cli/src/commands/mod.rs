//! One module per subcommand, and what the client-side ones share.

pub(crate) mod call;
pub(crate) mod completions;
pub(crate) mod connect;
pub(crate) mod demo;
pub(crate) mod keygen;
pub(crate) mod man;
pub(crate) mod serve;
pub(crate) mod session;
pub(crate) mod token;

use std::net::SocketAddr;
use std::sync::Arc;

use alknet::Client;
use alknet::proxy::Socks5Server;
use tokio::net::TcpListener;

use crate::error::CliError;

/// The passphrase for encrypted keys, from the environment (never a flag:
/// flags show up in `ps`).
fn passphrase() -> Option<String> {
    std::env::var("ALKNET_PASSPHRASE").ok()
}

/// Claims the local SOCKS5 port; returns the listener and the address it
/// actually got (port 0 means "any").
async fn bind_socks5(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), CliError> {
    let bind_error = |error| CliError::SocksBind {
        addr: addr.to_string(),
        error,
    };
    let listener = TcpListener::bind(addr).await.map_err(bind_error)?;
    let local = listener.local_addr().map_err(bind_error)?;
    Ok((listener, local))
}

/// Serves SOCKS5 through `client` until the session ends (an error) or
/// `shutdown` completes (a clean stop).
async fn serve_socks5(
    client: Arc<Client>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), CliError> {
    let socks = Socks5Server::new(client.clone());
    let result = tokio::select! {
        () = socks.serve(listener) => Ok(()),
        () = client.closed() => Err(CliError::ConnectionLost),
        () = shutdown => Ok(()),
    };
    client.disconnect().await;
    result
}
