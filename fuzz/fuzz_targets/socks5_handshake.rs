//! `cargo xtask fuzz socks5_handshake`: arbitrary bytes from a SOCKS5
//! client (greeting, request, addresses of every type) must get a reply
//! or a closed connection, never a panic. Every target is refused, so
//! nothing is dialled.
#![no_main]

use std::sync::Arc;
use std::time::Duration;

use alknet_proxy::{BoxStream, OpenError, OpenErrorKind, Socks5Server, StreamOpener, TargetAddr};
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct RefuseAll;

#[async_trait::async_trait]
impl StreamOpener for RefuseAll {
    async fn open(&self, _target: &TargetAddr) -> Result<BoxStream, OpenError> {
        Err(OpenError::new(OpenErrorKind::NotAllowed))
    }
}

fuzz_target!(|data: &[u8]| {
    alknet_fuzz::runtime().block_on(async {
        let (mut ours, theirs) = tokio::io::duplex(64 * 1024);
        let server = Socks5Server::new(Arc::new(RefuseAll));
        let serving = tokio::spawn(async move { server.handle(theirs).await });
        let _ = ours.write_all(data).await;
        let _ = ours.shutdown().await;
        let mut answer = Vec::new();
        let _ =
            tokio::time::timeout(Duration::from_millis(50), ours.read_to_end(&mut answer)).await;
        drop(ours);
        let _ = tokio::time::timeout(Duration::from_millis(50), serving).await;
    });
});
