//! The scale rows of `cargo xtask bench`: many tunnels through one client
//! and one server, and many SSH sessions at once — alknet against OpenSSH
//! in the same run.
//!
//! - **Tunnels**: `N` SOCKS5 connections (default 10 000) opened through
//!   one client's SOCKS port and held, each proven open end to end by a
//!   byte the target sends first; the time to open them all, and the
//!   client's and server's resident memory growth (with sshd's forked
//!   children) divided by `N`.
//! - **Sessions**: 1000 SSH sessions started at once (key exchange and
//!   public-key login), by the facade's `session_bench` example against
//!   `alknet serve` and against `sshd`, both with their start-up limits
//!   raised so the measurement is of handshakes, not of refusals.
//!
//! The target of the tunnels runs in its own process (`cargo xtask
//! hold-target`, not listed in the help): the tunnels' two ends would not
//! fit in one process's open-file limit.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use xtask::BoundedOutput as _;
use xtask::{
    AlknetClient, AlknetServer, Profile, Result, SshDynamicForward, Sshd, Workdir, XtaskError,
    current_user, release_example_binary, socks5_connect,
};

use super::proc_stats::rss_kib;

/// Threads opening tunnels at once: enough to keep both ends busy.
const OPENERS: usize = 16;

/// The byte the hold target sends on every connection it accepts.
const HELLO: u8 = b'!';

/// How long memory is given to settle after the last tunnel opened.
const SETTLE: Duration = Duration::from_millis(500);

/// One row of the tunnels measurement.
pub(crate) struct TunnelsRow {
    pub(crate) name: &'static str,
    pub(crate) opened: usize,
    pub(crate) seconds: f64,
    /// Client + server resident memory growth per tunnel, KiB.
    pub(crate) kib_per_tunnel: f64,
}

/// One row of the sessions measurement.
pub(crate) struct SessionsRow {
    pub(crate) name: &'static str,
    pub(crate) sessions: u64,
    pub(crate) failed: u64,
    pub(crate) per_second: f64,
    pub(crate) p50_ms: f64,
}

/// `cargo xtask hold-target`: accepts connections on a free loopback port
/// (printed as `listening ADDR`), greets each with one byte and holds it
/// open until the process is killed.
pub(crate) fn hold_target() -> Result<ExitCode> {
    raise_open_file_limit();
    let listener = TcpListener::bind("127.0.0.1:0").map_err(XtaskError::io("binding"))?;
    let addr = listener.local_addr().map_err(XtaskError::io("binding"))?;
    println!("listening {addr}");
    std::io::stdout()
        .flush()
        .map_err(XtaskError::io("stdout"))?;
    let mut held = Vec::new();
    for stream in listener.incoming() {
        // Out of descriptors or a reset before accept: the opener sees its
        // tunnel fail and reports it; keep serving the others.
        let Ok(mut stream) = stream else { continue };
        if stream.write_all(&[HELLO]).is_ok() {
            held.push(stream);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Every tunnel end is a descriptor; the bench needs more than a default 1024.
fn raise_open_file_limit() {
    if let Err(error) = rlimit::increase_nofile_limit(u64::MAX) {
        eprintln!("warning: cannot raise the open-file limit: {error}");
    }
}

/// The tunnels rows: `count` tunnels through alknet, then through OpenSSH
/// (aes128-gcm, its fastest cipher here).
pub(crate) fn tunnels(count: usize) -> Result<Vec<TunnelsRow>> {
    raise_open_file_limit();
    let dir = Workdir::new()?;
    let channels = (count + 100).to_string();
    let server = AlknetServer::start_with(
        &dir,
        Profile::Release,
        &["--max-channels-per-session", &channels],
    )?;
    let client = AlknetClient::start_with(
        &dir,
        Profile::Release,
        server.port,
        &server.user_key,
        &["--host-key", &server.fingerprint],
    )?;
    let alknet = measure_tunnels(
        &dir,
        "alknet",
        client.socks_addr,
        &[client.process.pid(), server.process.pid()],
        count,
    )?;
    drop(client);
    drop(server);

    let sshd = Sshd::start(&dir, &dir.join("alknet_user.pub"))?;
    let user = current_user()?;
    let ssh = SshDynamicForward::start(
        &dir,
        "ssh-scale",
        sshd.port,
        &user,
        &dir.join("alknet_user"),
        None,
        &["-c", "aes128-gcm@openssh.com"],
    )?;
    let openssh = measure_tunnels(
        &dir,
        "OpenSSH aes128-gcm",
        ssh.socks_addr,
        &[ssh.process.pid(), sshd.process.pid()],
        count,
    )?;
    Ok(vec![alknet, openssh])
}

fn measure_tunnels(
    dir: &Workdir,
    name: &'static str,
    socks: SocketAddr,
    pids: &[u32],
    count: usize,
) -> Result<TunnelsRow> {
    // A fresh target per row: it never lets go of what it accepted.
    let (_target, target_addr) = super::own_process_target(dir, "hold-target")?;

    let before = rss_kib(pids);
    let started = Instant::now();
    let per_opener = count.div_ceil(OPENERS);
    let openers: Vec<_> = (0..OPENERS)
        .map(|index| {
            let share = per_opener.min(count.saturating_sub(index * per_opener));
            std::thread::spawn(move || open_tunnels(socks, target_addr, share))
        })
        .collect();
    let mut held = Vec::with_capacity(count);
    let mut first_error = None;
    for opener in openers {
        let (streams, error) = opener
            .join()
            .map_err(|_| XtaskError::Failed("a tunnel opener panicked".into()))?;
        held.extend(streams);
        if first_error.is_none() {
            first_error = error;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    std::thread::sleep(SETTLE);
    let after = rss_kib(pids);
    let opened = held.len();
    if let Some(error) = first_error {
        println!("  {name}: {opened} of {count} tunnels opened; the first failure: {error}");
    }
    drop(held);
    #[allow(clippy::cast_precision_loss)] // memory and counts far below 2^52
    let kib_per_tunnel = after.saturating_sub(before) as f64 / opened.max(1) as f64;
    Ok(TunnelsRow {
        name,
        opened,
        seconds,
        kib_per_tunnel,
    })
}

/// Opens `count` tunnels one after another; stops at the first failure.
fn open_tunnels(
    socks: SocketAddr,
    target: SocketAddr,
    count: usize,
) -> (Vec<TcpStream>, Option<String>) {
    let mut streams = Vec::with_capacity(count);
    for _ in 0..count {
        match open_tunnel(socks, target) {
            Ok(stream) => streams.push(stream),
            Err(error) => return (streams, Some(error.to_string())),
        }
    }
    (streams, None)
}

fn open_tunnel(socks: SocketAddr, target: SocketAddr) -> Result<TcpStream> {
    let (reply, mut stream) = socks5_connect(socks, &target.ip().to_string(), target.port())?;
    if reply != 0 {
        return Err(XtaskError::Failed(format!("SOCKS5 reply {reply}")));
    }
    let mut hello = [0u8; 1];
    stream
        .read_exact(&mut hello)
        .map_err(XtaskError::io("reading the target's first byte"))?;
    if hello[0] != HELLO {
        return Err(XtaskError::Failed(format!("the target sent {hello:?}")));
    }
    Ok(stream)
}

/// The sessions rows: `count` SSH sessions at once into `alknet serve` and
/// into `sshd`.
pub(crate) fn sessions(count: usize) -> Result<Vec<SessionsRow>> {
    raise_open_file_limit();
    let bench = release_example_binary("session_bench")?;
    let dir = Workdir::new()?;
    let startups = format!("{}:100:{}", count * 2, count * 2);
    let server = AlknetServer::start_with(
        &dir,
        Profile::Release,
        &[
            "--max-startups",
            &startups,
            "--max-startups-per-source",
            "0",
        ],
    )?;
    let user = current_user()?;
    let alknet = run_session_bench(
        &bench,
        "alknet serve",
        server.port,
        &server.user_key,
        &server.fingerprint,
        &user,
        count,
    )?;
    drop(server);
    let sshd = Sshd::start_with_config(
        &dir,
        &dir.join("alknet_user.pub"),
        &format!("MaxStartups {}\n", count * 2),
    )?;
    let openssh = run_session_bench(
        &bench,
        "OpenSSH sshd",
        sshd.port,
        &dir.join("alknet_user"),
        &sshd.fingerprint,
        &user,
        count,
    )?;
    Ok(vec![alknet, openssh])
}

fn run_session_bench(
    bench: &std::path::Path,
    name: &'static str,
    port: u16,
    identity: &std::path::Path,
    fingerprint: &str,
    user: &str,
    count: usize,
) -> Result<SessionsRow> {
    let output = Command::new(bench)
        .arg(format!("127.0.0.1:{port}"))
        .arg(identity)
        .arg(fingerprint)
        .arg(user)
        .arg(count.to_string())
        .bounded_output()
        .map_err(XtaskError::io("running session_bench"))?;
    if !output.status.success() {
        return Err(XtaskError::Failed(format!(
            "session_bench against {name} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        )));
    }
    let line = BufReader::new(output.stdout.as_slice())
        .lines()
        .map_while(std::io::Result::ok)
        .last()
        .unwrap_or_default();
    let report: serde_json::Value = serde_json::from_str(&line)
        .map_err(|error| XtaskError::Failed(format!("session_bench printed no JSON: {error}")))?;
    if let Some(failure) = report["first_failure"].as_str() {
        println!("  {name}: the first refused session: {failure}");
    }
    Ok(SessionsRow {
        name,
        sessions: report["sessions"].as_u64().unwrap_or(0),
        failed: report["failed"].as_u64().unwrap_or(0),
        per_second: report["per_s"].as_f64().unwrap_or(0.0),
        p50_ms: report["p50_ms"].as_f64().unwrap_or(0.0),
    })
}
