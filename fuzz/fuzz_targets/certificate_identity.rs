//! `cargo xtask fuzz certificate_identity`: an OpenSSH certificate (text
//! or binary) mapped to an identity (principals, extensions, critical
//! options such as `source-address`).
#![no_main]

use alknet_auth::{Certificate, identity_of_certificate};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let parsed = match std::str::from_utf8(data) {
        Ok(text) => Certificate::from_openssh(text).ok(),
        Err(_) => Certificate::from_bytes(data).ok(),
    };
    if let Some(certificate) = parsed {
        let identity = identity_of_certificate(&certificate);
        let _ = identity.has_resource("service", "read");
    }
});
