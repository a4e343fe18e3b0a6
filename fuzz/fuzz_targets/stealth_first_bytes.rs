//! `cargo xtask fuzz stealth_first_bytes`: whatever a visitor sends first
//! (HTTP requests, SSH banners, garbage) is classified and answered as
//! nginx would, or handed on as SSH with every byte replayed — never a
//! panic, and never a lost byte on the SSH path.
#![no_main]

use std::time::Duration;

use alknet_stealth::{Branch, StealthConfig, branch};
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fuzz_target!(|data: &[u8]| {
    alknet_fuzz::runtime().block_on(async {
        let (mut visitor, server) = tokio::io::duplex(64 * 1024);
        let _ = visitor.write_all(data).await;
        let _ = visitor.shutdown().await;
        let config = StealthConfig::with_timeout(Duration::from_millis(20));
        let decided =
            tokio::time::timeout(Duration::from_millis(200), branch(server, &config)).await;
        if let Ok(Ok(Branch::Ssh(mut replay))) = decided {
            let mut replayed = Vec::new();
            let _ =
                tokio::time::timeout(Duration::from_millis(50), replay.read_to_end(&mut replayed))
                    .await;
            assert!(
                data.starts_with(&replayed) || replayed == data,
                "the SSH path lost bytes"
            );
        }
    });
});
