//! What users type and write, garbled: a `--config` file and a destination
//! mutated thousands of ways (bytes flipped, inserted, dropped, lines
//! repeated, cut short) are answered with an error or a setting, never a
//! panic. A stable-Rust stand-in for cargo-fuzz targets, which would make
//! the fuzz build compile all of alknet-cli's dependencies (iroh, ACME).

use alknet_cli::fuzzing::{destination, serve_config};

const CONFIG: &str = include_str!("../../contrib/alknet.toml");

const DESTINATIONS: [&str; 6] = [
    "alice@tunnel.example.com:2222",
    "[2001:db8::1]:22",
    "bob@[::1]",
    "host",
    "k3n5tqmf3a2nbh7n6f3mb2ehhj5yxmsrtbgl4ovx6ap6ugu5ewza",
    "user@10.0.0.1:65535",
];

/// `seed` changed at a few random places.
fn mutate(seed: &str, rng: &mut fastrand::Rng) -> String {
    let mut bytes = seed.as_bytes().to_vec();
    for _ in 0..rng.usize(1..=4) {
        let at = rng.usize(0..=bytes.len());
        match rng.u8(0..6) {
            0 if at < bytes.len() => bytes[at] = rng.u8(..),
            1 => bytes.insert(
                at,
                *b"=[]\"'\\\n#:@0.,{}".get(rng.usize(..15)).unwrap_or(&b'x'),
            ),
            2 if at < bytes.len() => {
                bytes.remove(at);
            }
            3 => bytes.truncate(at),
            4 => {
                let line: Vec<u8> = seed
                    .lines()
                    .nth(rng.usize(0..seed.lines().count().max(1)))
                    .unwrap_or("")
                    .bytes()
                    .collect();
                bytes.splice(at..at, line.into_iter().chain([b'\n']));
            }
            _ => bytes.insert(at, rng.u8(..)),
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

#[test]
fn the_example_config_and_destinations_are_read() {
    serve_config(CONFIG).unwrap_or_else(|error| panic!("contrib/alknet.toml: {error}"));
    for text in DESTINATIONS {
        destination(text).unwrap_or_else(|error| panic!("{text}: {error}"));
    }
}

#[test]
fn garbled_configs_get_errors_not_panics() {
    let mut rng = fastrand::Rng::with_seed(0x5eed);
    let mut refused = 0;
    for _ in 0..4_000 {
        if let Err(error) = serve_config(&mutate(CONFIG, &mut rng)) {
            assert!(!error.is_empty());
            refused += 1;
        }
    }
    // The mutations do reach the checks.
    assert!(refused > 1_000, "{refused} of 4000 refused");
}

#[test]
fn garbled_destinations_get_errors_not_panics() {
    let mut rng = fastrand::Rng::with_seed(0xde57);
    let mut refused = 0;
    for _ in 0..20_000 {
        let seed = DESTINATIONS[rng.usize(..DESTINATIONS.len())];
        if let Err(error) = destination(&mutate(seed, &mut rng)) {
            assert!(!error.is_empty());
            refused += 1;
        }
    }
    assert!(refused > 1_000, "{refused} of 20000 refused");
}
