//! `alknet connect`.

use std::sync::Arc;

use alknet::auth::load_private_key;
use alknet::transport::{TcpTransport, Transport};
use alknet::{Client, ConnectOptions};
use tracing::info;

use crate::cli::ConnectArgs;
use crate::error::CliError;
use crate::signals::shutdown_signal;

pub(crate) async fn run(args: ConnectArgs) -> Result<(), CliError> {
    let identity = load_private_key(args.identity.as_path(), super::passphrase().as_deref())?;
    let user = args.user.unwrap_or_else(whoami::username);
    // Claim the local port first: if it is taken, say so before touching the network.
    let (listener, socks_addr) = super::bind_socks5(args.socks5).await?;
    let shutdown = shutdown_signal()?;
    tokio::pin!(shutdown);

    let transport = TcpTransport::new(args.server);
    let mut options = ConnectOptions::new(identity, user);
    options.host_key = args.host_key;
    let client = tokio::select! {
        client = Client::connect(&transport, options) => Arc::new(client?),
        () = &mut shutdown => return Ok(()),
    };
    info!(
        server = %transport.describe(),
        host_key = %client.server_fingerprint(),
        socks5 = %socks_addr,
        "connected; SOCKS5 ready"
    );

    super::serve_socks5(client, listener, shutdown).await?;
    info!("disconnected");
    Ok(())
}
