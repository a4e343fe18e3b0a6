//! `cargo xtask fuzz forward_spec`: `-L`/`-R` specifications as typed on a
//! command line or in a config; what parses must print back to itself.
#![no_main]

use alknet_proxy::ForwardSpec;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Ok(spec) = text.parse::<ForwardSpec>() {
        let again = spec.to_string();
        assert_eq!(again.parse::<ForwardSpec>().ok(), Some(spec), "{again}");
    }
});
