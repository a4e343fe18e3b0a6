//! Measures the call protocol over one control channel to a running
//! `alknet serve`: sequential calls, then 64 in flight. `cargo xtask bench`
//! runs it (release build) and prints its numbers.
//!
//! ```text
//! call_bench <host:port> <identity> <host-key SHA256:…> <user> [calls]
//! ```
//!
//! Prints one JSON line: calls per second and p50/p99 latency for each
//! phase. Each call is `/services/whoami` (a built-in that reads only the
//! caller's identity, so the protocol and channel are what is measured).

use std::time::{Duration, Instant};

use alknet::auth::load_private_key;
use alknet::call::{Caller, SERVICES_WHOAMI};
use alknet::transport::TcpTransport;
use alknet::{Client, ConnectOptions};
use serde_json::{Value, json};

const IN_FLIGHT: usize = 64;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [server, identity, host_key, user, rest @ ..] = args.as_slice() else {
        return Err("usage: call_bench <host:port> <identity> <host-key> <user> [calls]".into());
    };
    let calls: usize = rest.first().map_or(Ok(20_000), |n| n.parse())?;
    // The same single-threaded runtime `alknet connect` uses.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let key = load_private_key(std::path::Path::new(identity), None)?;
        let options = ConnectOptions::new(key, user.clone()).with_host_key(host_key.clone());
        let client = Client::connect(&TcpTransport::new(server.clone()), options).await?;
        let control = client.open_control().await?;
        // Warm up: first calls pay for allocation and the schema cache.
        sequential(&control, 200).await?;
        let sequential = sequential(&control, calls).await?;
        // Five times as many: in flight they go much faster.
        let concurrent = concurrent(&control, calls * 5).await?;
        println!(
            "{}",
            json!({"sequential": sequential, "in_flight": IN_FLIGHT, "concurrent": concurrent})
        );
        client.disconnect().await;
        Ok(())
    })
}

async fn sequential(control: &Caller, calls: usize) -> Result<Value, Box<dyn std::error::Error>> {
    let mut latencies = Vec::with_capacity(calls);
    let started = Instant::now();
    for _ in 0..calls {
        let call = Instant::now();
        control.call(SERVICES_WHOAMI, Value::Null).await?;
        latencies.push(call.elapsed());
    }
    Ok(summary(latencies, started.elapsed()))
}

async fn concurrent(control: &Caller, calls: usize) -> Result<Value, Box<dyn std::error::Error>> {
    let per_worker = calls.div_ceil(IN_FLIGHT);
    let started = Instant::now();
    let workers = (0..IN_FLIGHT).map(|_| async move {
        let mut latencies = Vec::with_capacity(per_worker);
        for _ in 0..per_worker {
            let call = Instant::now();
            control.call(SERVICES_WHOAMI, Value::Null).await?;
            latencies.push(call.elapsed());
        }
        Ok::<_, alknet::call::CallError>(latencies)
    });
    let mut latencies = Vec::with_capacity(per_worker * IN_FLIGHT);
    for worker in futures_util::future::join_all(workers).await {
        latencies.extend(worker?);
    }
    Ok(summary(latencies, started.elapsed()))
}

fn summary(mut latencies: Vec<Duration>, elapsed: Duration) -> Value {
    latencies.sort();
    let at = |pct: usize| {
        let index = (latencies.len() * pct / 100).min(latencies.len().saturating_sub(1));
        latencies
            .get(index)
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    #[allow(clippy::cast_precision_loss)] // counts far below 2^52
    let rate = latencies.len() as f64 / elapsed.as_secs_f64();
    json!({"calls": latencies.len(), "calls_per_s": rate, "p50_ms": at(50), "p99_ms": at(99)})
}
