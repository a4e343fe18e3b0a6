//! `cargo xtask fuzz upstream_proxy`: `--proxy` URLs.
#![no_main]

use alknet_proxy::UpstreamProxy;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let _ = text.parse::<UpstreamProxy>();
});
