//! A spoke that keeps itself registered: connects to `alknet serve` (the
//! hub), registers as the spoke `soak` with one subscription,
//! `/soak/count {"to": N}` (the numbers 0 … N-1, then done), serves it on
//! its control channel, and when the session ends — the server killed,
//! stopped, restarted — connects and registers again. Prints `registered`
//! each time. `cargo xtask soak` runs it, so subscriptions cross the hub
//! while the server fails.
//!
//! ```text
//! count_spoke <host:port> <identity> <host-key SHA256:…> <user>
//! ```
//!
//! The key needs the grant `resources=spoke:soak:register` in the
//! server's authorized_keys. Runs until killed.

use std::sync::Arc;
use std::time::Duration;

use alknet::auth::load_private_key;
use alknet::call::{
    Failure, HUB_REGISTER, Handler, OperationRegistry, OperationSpec, OperationType,
};
use alknet::transport::TcpTransport;
use alknet::{Client, ConnectOptions};
use serde_json::{Value, json};

/// The most items one subscription may ask for.
const MAX_COUNT: u64 = 100_000;

/// How long to wait before connecting again.
const RETRY: Duration = Duration::from_millis(500);

fn count_spec() -> OperationSpec {
    OperationSpec::new("/count", OperationType::Subscription).input_schema(json!({
        "type": "object",
        "properties": {"to": {"type": "integer", "minimum": 0, "maximum": MAX_COUNT}},
        "required": ["to"]
    }))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [server, identity, host_key, user] = args.as_slice() else {
        return Err("usage: count_spoke <host:port> <identity> <host-key> <user>".into());
    };
    let key = load_private_key(std::path::Path::new(identity), None)?;
    let options = ConnectOptions::new(key, user.clone()).with_host_key(host_key.clone());
    let transport = TcpTransport::new(server.clone());

    let registry = Arc::new(OperationRegistry::new());
    registry.register(
        count_spec(),
        Handler::subscription(|_, input: Value, emitter| async move {
            let to = input["to"].as_u64().unwrap_or(0).min(MAX_COUNT);
            for n in 0..to {
                emitter
                    .emit(json!(n))
                    .await
                    .map_err(|_| Failure::unavailable("the subscriber went away"))?;
            }
            Ok(())
        }),
    )?;

    loop {
        let session = async {
            let client = Client::connect(&transport, options.clone()).await?;
            let control = client.open_control_serving(registry.clone()).await?;
            let spec = serde_json::to_value(count_spec())?;
            control
                .call(HUB_REGISTER, json!({"spoke": "soak", "operations": [spec]}))
                .await?;
            println!("registered");
            client.closed().await;
            Ok::<_, Box<dyn std::error::Error>>(())
        };
        if let Err(error) = session.await {
            eprintln!("count_spoke: {error}; connecting again");
        }
        tokio::time::sleep(RETRY).await;
    }
}
