//! The `alknet` command; see the `alknet_cli` library.

#![forbid(unsafe_code)]

/// mimalloc instead of the system allocator: many small, short-lived
/// allocations per call and per tunnel are where glibc's malloc showed in
/// profiles (`cargo xtask bench`'s call protocol row).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    alknet_cli::run()
}
