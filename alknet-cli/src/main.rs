//! The `alknet` command; see the `alknet_cli` library.

#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    alknet_cli::run()
}
