//! The xtask commands.

pub(crate) mod addon;
pub(crate) mod bench;
pub(crate) mod bench_report;
mod dumbpipe;
pub(crate) mod fuzz;
mod proc_stats;
pub(crate) mod scale;
pub(crate) mod setup;
pub(crate) mod soak;
pub(crate) mod test;

/// Prints each line of `child`'s (piped) stdout as it comes and hands it
/// to `each`, so a runner can total up results while the user watches.
fn echo_lines(child: &mut std::process::Child, mut each: impl FnMut(&str)) {
    use std::io::{BufRead as _, BufReader};
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout)
            .lines()
            .map_while(std::io::Result::ok)
        {
            println!("{line}");
            each(&line);
        }
    }
}

/// Starts `cargo xtask <command>` (a target that prints `listening ADDR`
/// and serves until killed) as a process of its own, and returns it with
/// that address. Stopped by its PID when the returned value is dropped.
fn own_process_target(
    dir: &xtask::Workdir,
    command: &str,
) -> xtask::Result<(xtask::Spawned, std::net::SocketAddr)> {
    use xtask::XtaskError;
    let exe = std::env::current_exe().map_err(XtaskError::io("finding xtask"))?;
    let mut process = std::process::Command::new(exe);
    process.arg(command);
    let mut target = xtask::Spawned::start(command, dir.path(), process)?;
    let line = target.wait_for_stdout("listening ", std::time::Duration::from_secs(10))?;
    let addr = line
        .trim_start_matches("listening ")
        .trim()
        .parse()
        .map_err(|_| XtaskError::Failed(format!("{command} printed {line:?}")))?;
    Ok((target, addr))
}

/// The workspace's root directory.
pub(crate) fn workspace_root() -> std::path::PathBuf {
    // At run time first: the build cache may be shared between clones.
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(
            || std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")),
            std::path::PathBuf::from,
        )
        .parent()
        .expect("xtask lives inside the workspace")
        .to_path_buf()
}
