//! A server offering the subscription `/demo/ticks` (a number every 20 ms,
//! forever) on its control channel, for clients in other languages to
//! subscribe to and abort. Prints `listening PORT FINGERPRINT` when ready
//! and `ticks aborted` each time a subscriber leaves; stops on end of stdin.
//!
//! ```sh
//! cargo run -p alknet --example ticker -- AUTHORIZED_KEYS
//! ```

use std::time::Duration;

use alknet::auth::{AuthorizedKeys, generate_ed25519};
use alknet::call::{Handler, OperationSpec, OperationType};
use alknet::transport::TcpAcceptor;
use alknet::{ServeOptions, Server};
use serde_json::json;
use tokio::io::AsyncReadExt;

/// Says so when the subscription's handler is dropped before it finishes.
struct OnAbort;

impl Drop for OnAbort {
    fn drop(&mut self) {
        println!("ticks aborted");
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let keys = std::env::args()
        .nth(1)
        .ok_or("usage: ticker AUTHORIZED_KEYS")?;
    let authorized = AuthorizedKeys::load(std::path::Path::new(&keys))?;
    let server = Server::new(ServeOptions::new(generate_ed25519("ticker")?, authorized));
    server.registry().register(
        OperationSpec::new("/demo/ticks", OperationType::Subscription),
        Handler::subscription(|_, _, emitter| async move {
            let _watch = OnAbort;
            for tick in 0u64.. {
                emitter
                    .emit(json!(tick))
                    .await
                    .map_err(|_| alknet::call::Failure::unavailable("the subscriber went away"))?;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok(())
        }),
    )?;
    let acceptor = TcpAcceptor::bind("127.0.0.1:0").await?;
    println!(
        "listening {} {}",
        acceptor.local_addr().port(),
        server.host_key_fingerprint()
    );
    let stdin_closed = async {
        let mut sink = Vec::new();
        let _ = tokio::io::stdin().read_to_end(&mut sink).await;
    };
    server.serve(&acceptor, stdin_closed).await?;
    Ok(())
}
