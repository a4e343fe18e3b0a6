//! `cargo xtask fuzz authorized_keys`: an authorized_keys file with
//! options (`from=`, `permitopen=`, `expiry-time=`, quotes, escapes).
#![no_main]

use alknet_auth::AuthorizedKeys;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Ok(keys) = AuthorizedKeys::parse(text) {
        let _ = format!("{keys:?}");
    }
});
