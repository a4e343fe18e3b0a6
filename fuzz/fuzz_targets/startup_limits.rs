//! `cargo xtask fuzz startup_limits`: `--max-startups START:RATE:FULL`.
#![no_main]

use alknet_auth::StartupLimits;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let _ = text.parse::<StartupLimits>();
});
