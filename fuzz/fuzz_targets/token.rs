//! `cargo xtask fuzz token`: an alknet token as a client presents it,
//! verified against a known key.
#![no_main]

use alknet_auth::TokenVerifier;
use libfuzzer_sys::fuzz_target;

const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB4f6JMG7Up/NhQKwXd05RcNMGscSOm+FXTJHBp10SGI";

fuzz_target!(|text: &str| {
    let key = KEY.parse().unwrap();
    let verifier = TokenVerifier::new([key]);
    // The seed token was made at this time, so it verifies.
    let _ = verifier.verify(text.trim(), 1_796_075_300);
});
