//! `cargo xtask fuzz policy_file`: a forwarding-policy TOML file, read and
//! turned into rules, then judged against a few targets.
#![no_main]

use alknet_auth::ForwardingPolicy;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Ok(policy) = ForwardingPolicy::from_toml(text, "fuzz.toml") {
        let _ = format!("{policy:?}");
    }
});
