//! `alknet demo`: the whole tunnel in one process, with throwaway keys.

use std::sync::Arc;

use alknet::auth::{AuthorizedKeys, generate_ed25519};
use alknet::transport::{TcpAcceptor, TcpTransport};
use alknet::{Client, ConnectOptions, ServeOptions, Server};

use crate::cli::DemoArgs;
use crate::error::CliError;
use crate::signals::shutdown_signal;

pub(crate) async fn run(args: DemoArgs) -> Result<(), CliError> {
    let (listener, socks_addr) = super::bind_socks5(args.socks5).await?;
    let shutdown = shutdown_signal()?;

    let host_key = generate_ed25519("alknet-demo-server")?;
    let user_key = generate_ed25519("alknet-demo-user")?;
    let authorized = AuthorizedKeys::from_keys([user_key.public_key().clone()]);
    let server = Server::new(ServeOptions::new(host_key, authorized));
    let pin = server.host_key_fingerprint();
    let acceptor = TcpAcceptor::bind("127.0.0.1:0").await?;
    let transport = TcpTransport::new(acceptor.local_addr().to_string());
    let (stop_server, server_stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(async move {
        server
            .serve(&acceptor, async move {
                let _ = server_stopped.await;
            })
            .await
    });

    let options = ConnectOptions::new(user_key, "demo").with_host_key(pin);
    let client = Arc::new(Client::connect(&transport, options).await?);
    println!(
        "alknet demo: an SSH server on {} and a client connected to it.",
        transport.server()
    );
    println!("SOCKS5 is on {socks_addr}; every connection through it is tunnelled over SSH. Try:");
    println!();
    println!("    curl --socks5-hostname {socks_addr} https://example.com/");
    println!();
    println!("Press Ctrl-C to stop.");

    let result = super::serve_socks5(client, listener, shutdown).await;
    let _ = stop_server.send(());
    let _ = serving.await;
    result
}
