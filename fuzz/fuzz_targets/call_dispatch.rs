//! `cargo xtask fuzz call_dispatch`: envelopes with arbitrary contents
//! (ids, paths, inputs, event types), sent to a call connection serving
//! the hub's registry (services/list, schema, whoami, spoke registration)
//! must never panic it; answers are read until it goes quiet.
#![no_main]

use std::time::Duration;

use alknet_call::{CallConnection, EnvelopeCodec, EventEnvelope, Hub, OperationRegistry};
use alknet_identity::Identity;
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::codec::Encoder;

fuzz_target!(|data: &[u8]| {
    // Each 0xFF-separated piece is one envelope's JSON: the fuzzer finds
    // valid envelopes fast, and invalid ones are skipped before sending.
    let mut frames = BytesMut::new();
    let mut codec = EnvelopeCodec::new(64 * 1024);
    for piece in data.split(|byte| *byte == 0xFF) {
        if let Ok(envelope) = serde_json::from_slice::<EventEnvelope>(piece) {
            let _ = codec.encode(envelope, &mut frames);
        }
    }
    if frames.is_empty() {
        return;
    }
    alknet_fuzz::runtime().block_on(async {
        let (ours, theirs) = tokio::io::duplex(256 * 1024);
        let identity = Identity {
            id: "SHA256:fuzz".into(),
            scopes: vec!["admin".into()],
            resources: vec!["*".into()],
        };
        let _caller = CallConnection::new(theirs)
            .serve(Hub::new(OperationRegistry::new()))
            .peer_identity(identity)
            .spawn();
        let (mut read, mut write) = tokio::io::split(ours);
        let _ = write.write_all(&frames).await;
        // End of input: the connection answers what it can and closes, so
        // the read below ends without waiting out its limit.
        let _ = write.shutdown().await;
        let mut answers = Vec::new();
        let _ =
            tokio::time::timeout(Duration::from_millis(10), read.read_to_end(&mut answers)).await;
    });
});
