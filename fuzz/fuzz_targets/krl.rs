//! `cargo xtask fuzz krl`: a revoked-keys file, either OpenSSH public keys
//! or a binary KRL made by `ssh-keygen -k`.
#![no_main]

use alknet_auth::RevokedKeys;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = RevokedKeys::parse(data, "revoked");
});
