//! `cargo xtask fuzz known_hosts`: a known_hosts file (hashed names,
//! patterns, markers) and a lookup in it.
#![no_main]

use std::path::Path;

use alknet_auth::{KnownHosts, PresentedHostKey, PublicKey};
use libfuzzer_sys::fuzz_target;

const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";

fuzz_target!(|text: &str| {
    let mut known = KnownHosts::default();
    known.add(text, Path::new("known_hosts"));
    let key: PublicKey = KEY.parse().unwrap();
    for name in ["example.com", "[127.0.0.1]:2222", "a.b.example.com"] {
        let _ = known.check(name, name, PresentedHostKey::Key(&key), 1_800_000_000);
    }
});
