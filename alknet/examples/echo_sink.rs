//! A server whose own sink answers channels to `echo:7` (everything else is
//! tunnelled as usual), and a client that opens `echo:7` and checks the
//! echo. Exits 0 on success.
//!
//! ```sh
//! cargo run -p alknet --example echo_sink
//! ```

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use alknet::auth::{AuthorizedKeys, generate_ed25519};
use alknet::proxy::{StreamOpener, TargetAddr};
use alknet::transport::{TcpAcceptor, TcpTransport};
use alknet::{ChannelSink, Client, ConnectOptions, IncomingChannel, ServeOptions, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Answers each channel with what it receives, until the client's EOF.
struct Echo;

#[async_trait::async_trait]
impl ChannelSink for Echo {
    async fn handle(&self, channel: IncomingChannel) {
        // Who asked is known; where to is `echo:7` (a route, never logged).
        let who = channel.info().identity.id.clone();
        let mut stream = channel.accept().await;
        let mut buffer = vec![0u8; 16 * 1024];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if stream.write_all(&buffer[..n]).await.is_err() {
                        break;
                    }
                }
            }
        }
        let _ = stream.shutdown().await;
        eprintln!("echoed for {who}");
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => {
            println!("echo_sink: ok");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("echo_sink: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let host_key = generate_ed25519("server")?;
    let user_key = generate_ed25519("user")?;
    let authorized = AuthorizedKeys::from_keys([user_key.public_key().clone()]);
    let options = ServeOptions::new(host_key, authorized).route("echo", 7, Arc::new(Echo));
    let server = Server::new(options);
    let acceptor = TcpAcceptor::bind("127.0.0.1:0").await?;
    let transport = TcpTransport::new(acceptor.local_addr().to_string());
    let pin = server.host_key_fingerprint();
    tokio::spawn(async move { server.serve(&acceptor, std::future::pending()).await });

    let client = Client::connect(
        &transport,
        ConnectOptions::new(user_key, "me").with_host_key(pin),
    )
    .await?;
    let mut echo = client.open(&TargetAddr::Domain("echo".into(), 7)).await?;
    let message = b"hello, sink";
    echo.write_all(message).await?;
    echo.shutdown().await?;
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), echo.read_to_end(&mut answer)).await??;
    if answer != message {
        return Err(format!("the echo differs: {:?}", String::from_utf8_lossy(&answer)).into());
    }
    client.disconnect().await;
    Ok(())
}
