//! `cargo xtask fuzz envelope_decode`: arbitrary bytes
//! into the frame decoder must never panic, hang or allocate more than
//! the frame limit, and whatever decodes must encode back to a frame that
//! decodes to the same envelope.
#![no_main]

use alknet_call::EnvelopeCodec;
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::{Decoder, Encoder};

fuzz_target!(|data: &[u8]| {
    let mut codec = EnvelopeCodec::new(64 * 1024);
    let mut input = BytesMut::from(data);
    while let Ok(Some(envelope)) = codec.decode(&mut input) {
        let mut again = BytesMut::new();
        codec
            .encode(&envelope, &mut again)
            .expect("a decoded envelope re-encodes");
        assert_eq!(
            codec.decode(&mut again).expect("re-decodes"),
            Some(envelope)
        );
    }
});
