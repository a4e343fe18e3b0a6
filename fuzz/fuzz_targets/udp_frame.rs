//! `cargo xtask fuzz udp_frame`: arbitrary bytes read as a stream of
//! `alknet-udp:0` datagram frames must never panic, and every frame that
//! decodes must encode back to the same bytes and decode the same.
#![no_main]

use alknet_proxy::udp_frame::{decode_datagram, encode_datagram};
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut input = BytesMut::from(data);
    while let Ok(Some(datagram)) = {
        let before = input.clone();
        decode_datagram(&mut input).map(|decoded| decoded.map(|d| (before, d)))
    } {
        let (before, datagram) = datagram;
        let mut again = BytesMut::new();
        encode_datagram(&datagram.addr, &datagram.payload, &mut again)
            .expect("a decoded datagram re-encodes");
        let used = before.len() - input.len();
        // Names are canonical text; IP addresses re-encode byte for byte.
        assert_eq!(&again[..], &before[..used], "the frame re-encodes differently");
        let mut reread = again.clone();
        assert_eq!(decode_datagram(&mut reread), Ok(Some(datagram)));
    }
});
