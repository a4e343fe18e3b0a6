//! `cargo xtask fuzz stealth_first_bytes`: whatever a visitor sends first
//! (HTTP/1 and HTTP/2 requests, knocks, SSH banners, garbage) is classified
//! and answered as nginx would, or handed on as SSH with every byte
//! replayed — never a panic, and never a lost byte on the SSH path. The
//! first byte picks whether the listener requires a knock (whose gate
//! admits the token `T`).
#![no_main]

use std::sync::Arc;
use std::time::Duration;

use alknet_stealth::{Branch, StealthConfig, TokenGate, branch};
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Debug)]
struct AdmitsT;

impl TokenGate for AdmitsT {
    fn admit(&self, token: &str) -> bool {
        token == "T"
    }
}

fuzz_target!(|input: &[u8]| {
    let Some((&mode, data)) = input.split_first() else {
        return;
    };
    alknet_fuzz::runtime().block_on(async {
        let (mut visitor, server) = tokio::io::duplex(64 * 1024);
        let _ = visitor.write_all(data).await;
        let _ = visitor.shutdown().await;
        let mut config = StealthConfig::with_timeout(Duration::from_millis(20));
        let gated = mode & 1 == 1;
        if gated {
            config = config.requiring_token(Arc::new(AdmitsT));
        }
        let decided =
            tokio::time::timeout(Duration::from_millis(200), branch(server, &config)).await;
        match decided {
            Ok(Ok(Branch::Ssh(mut replay))) => {
                let mut replayed = Vec::new();
                let _ = tokio::time::timeout(
                    Duration::from_millis(50),
                    replay.read_to_end(&mut replayed),
                )
                .await;
                // Open: all of it; after a knock: what followed the knock.
                assert!(data.ends_with(&replayed), "the SSH path lost bytes");
                assert!(gated || replayed == data, "the SSH path lost bytes");
            }
            Ok(Ok(Branch::Web(visit))) => {
                let _ = tokio::time::timeout(Duration::from_millis(200), visit.serve()).await;
            }
            _ => {}
        }
    });
});
