//! Opens many SSH sessions at once to a running server — `alknet serve` or
//! OpenSSH's `sshd` — and measures how fast it lets them in (key exchange
//! plus public-key authentication). `cargo xtask bench` runs it (release
//! build) against both, in the same run.
//!
//! ```text
//! session_bench <host:port> <identity> <host-key SHA256:…> <user> [sessions]
//! ```
//!
//! Every session is started at once and held until the last one is in, so
//! the server has them all open together; then all disconnect. Prints one
//! JSON line: sessions, seconds from the first connect to the last
//! authentication, sessions per second, p50/p99 of each session's time.

use std::time::{Duration, Instant};

use alknet::auth::load_private_key;
use alknet::transport::TcpTransport;
use alknet::{Client, ConnectOptions};
use serde_json::json;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [server, identity, host_key, user, rest @ ..] = args.as_slice() else {
        return Err(
            "usage: session_bench <host:port> <identity> <host-key> <user> [sessions]".into(),
        );
    };
    let sessions: usize = rest.first().map_or(Ok(1000), |n| n.parse())?;
    // One thread per core: the client's handshakes must not be what limits.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let key = load_private_key(std::path::Path::new(identity), None)?;
        let transport = TcpTransport::new(server.clone());
        let started = Instant::now();
        let attempts = (0..sessions).map(|_| {
            let options =
                ConnectOptions::new(key.clone(), user.clone()).with_host_key(host_key.clone());
            let transport = transport.clone();
            tokio::spawn(async move {
                let began = Instant::now();
                let client = Client::connect(&transport, options).await?;
                Ok::<_, alknet::Error>((client, began.elapsed()))
            })
        });
        let attempts: Vec<_> = attempts.collect();
        let mut clients = Vec::with_capacity(sessions);
        let mut times = Vec::with_capacity(sessions);
        let mut failures = 0usize;
        let mut first_failure = None;
        for attempt in attempts {
            match attempt.await? {
                Ok((client, took)) => {
                    clients.push(client);
                    times.push(took);
                }
                Err(error) => {
                    failures += 1;
                    first_failure.get_or_insert_with(|| error.to_string());
                }
            }
        }
        let elapsed = started.elapsed();
        for client in &clients {
            client.disconnect().await;
        }
        times.sort();
        println!(
            "{}",
            json!({
                "sessions": times.len(),
                "failed": failures,
                "first_failure": first_failure,
                "seconds": elapsed.as_secs_f64(),
                "per_s": rate(times.len(), elapsed),
                "p50_ms": percentile_ms(&times, 50),
                "p99_ms": percentile_ms(&times, 99),
            })
        );
        Ok(())
    })
}

fn rate(count: usize, elapsed: Duration) -> f64 {
    #[allow(clippy::cast_precision_loss)] // counts far below 2^52
    let count = count as f64;
    count / elapsed.as_secs_f64()
}

fn percentile_ms(sorted: &[Duration], pct: usize) -> f64 {
    let index = (sorted.len() * pct / 100).min(sorted.len().saturating_sub(1));
    sorted.get(index).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}
