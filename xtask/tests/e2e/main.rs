//! Whole-program tests: the real `alknet` binary, driven by curl and
//! OpenSSH. Run them with `cargo xtask test` (or `cargo test -p xtask`,
//! which builds the binary first).

mod acme;
mod bad_input;
mod call;
mod certificates;
mod cli;
mod fallback;
mod forwards;
mod http_proxy;
mod install;
mod interop;
mod iroh;
mod known_hosts;
mod limits;
mod policy;
mod proxies;
mod reconnect;
mod security;
mod shutdown;
mod stealth;
mod tidy;
mod tls;
mod tokens;
mod tunnel;
mod udp;

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use xtask::BoundedOutput as _;
use xtask::{Result, XtaskError, require_tool};

/// The xtask crate's directory in the tree under test. Read at run time
/// (cargo test sets it) rather than baked in with `env!`: the build cache is
/// shared between clones, and a reused test binary must not read the files
/// of the clone that built it.
fn xtask_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
}

/// Fetches `url` through a SOCKS5 proxy with curl, letting the proxy
/// resolve names (socks5h), into `out`.
fn curl_via_socks(proxy: SocketAddr, url: &str, out: &Path) -> Result<Output> {
    require_tool("curl")?;
    Command::new("curl")
        .args(["--silent", "--show-error", "--fail", "--max-time", "120"])
        .arg("--socks5-hostname")
        .arg(proxy.to_string())
        .arg("--output")
        .arg(out)
        .arg(url)
        .bounded_output()
        .map_err(XtaskError::io("running curl"))
}

/// Fetches `url` through `proxy` and returns the body, failing on any error.
fn fetch(proxy: SocketAddr, url: &str, out: &Path) -> Result<Vec<u8>> {
    let output = curl_via_socks(proxy, url, out)?;
    if !output.status.success() {
        return Err(XtaskError::Failed(format!(
            "curl {url} via {proxy} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        )));
    }
    std::fs::read(out).map_err(XtaskError::io("reading curl's output"))
}

/// Asserts that no log mentions any of `secrets` (tunnel targets).
fn assert_logs_do_not_mention(logs: &[(&str, String)], secrets: &[String]) {
    for (name, log) in logs {
        assert!(
            !log.is_empty(),
            "the {name} log is empty: is logging broken?"
        );
        for secret in secrets {
            assert!(
                !log.contains(secret.as_str()),
                "the {name} log mentions the tunnel target {secret:?}:\n{log}"
            );
        }
    }
}

/// Writes into `stream` for `limit`, as a program uploading would: a write
/// that times out means the tunnel is full (fine); any other error ends it.
fn keep_writing(mut stream: TcpStream, limit: Duration) -> std::io::Result<()> {
    stream
        .set_write_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let chunk = vec![7u8; 64 * 1024];
    let until = Instant::now() + limit;
    while Instant::now() < until {
        match stream.write(&chunk) {
            Ok(_) => {}
            Err(e) if timed_out(&e) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// An upload through the SOCKS5 proxy `socks` to a target that reads and
/// drops everything, kept up for `limit` (or until the tunnel fails) on a
/// thread of its own: the tunnel's whole path stays full, as in a long
/// upload. The thread's result is [`keep_writing`]'s.
fn upload_in_background(socks: SocketAddr, limit: Duration) -> JoinHandle<std::io::Result<()>> {
    let sink = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = sink.local_addr().unwrap().port();
    std::thread::spawn(move || {
        if let Ok((mut stream, _)) = sink.accept() {
            stream.set_read_timeout(Some(limit)).unwrap();
            let _ = std::io::copy(&mut stream, &mut std::io::sink());
        }
    });
    let (reply, upload) = xtask::socks5_connect(socks, "127.0.0.1", port).unwrap();
    assert_eq!(reply, 0, "SOCKS5 connect refused");
    std::thread::spawn(move || keep_writing(upload, limit))
}

/// A download through the SOCKS5 proxy `socks` of more than it can carry
/// in `limit`, read as fast as it comes (until `limit`, or the tunnel
/// fails) on a thread of its own: the tunnel's whole path stays full.
fn download_in_background(socks: SocketAddr, limit: Duration) -> JoinHandle<()> {
    let target = xtask::HttpTarget::start("127.0.0.1:0").unwrap();
    let (reply, mut download) =
        xtask::socks5_connect(socks, "127.0.0.1", target.addr().port()).unwrap();
    assert_eq!(reply, 0, "SOCKS5 connect refused");
    download
        .write_all(b"GET /1000000000000 HTTP/1.0\r\n\r\n")
        .unwrap();
    download
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    std::thread::spawn(move || {
        let _target = target;
        let mut buffer = vec![0u8; 256 * 1024];
        let until = Instant::now() + limit;
        while Instant::now() < until {
            match download.read(&mut buffer) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) if timed_out(&e) => {}
                Err(_) => return,
            }
        }
    })
}

/// Whether a socket read or write with a timeout ran out of it (which
/// platforms report as either kind).
fn timed_out(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

/// Waits up to `limit` for `client` to log that it lost its server; the
/// error says how long it waited and holds the client's log.
fn wait_for_lost_server(client: &xtask::AlknetClient, limit: Duration) -> Result<(), String> {
    let started = Instant::now();
    xtask::wait_until("the client to give up on its server", limit, || {
        client
            .log()
            .contains("connection to the server lost")
            .then_some(())
    })
    .map_err(|e| {
        format!(
            "{e} (after {:?})\nclient log:\n{}",
            started.elapsed(),
            client.log()
        )
    })
}

/// A client of `server` reaching it through `link` (which can vanish),
/// with the `-R` forward `remote` and keepalives a second apart, so it
/// notices a vanished path within seconds.
fn client_behind(
    dir: &xtask::Workdir,
    server: &xtask::AlknetServer,
    link: &xtask::VanishingLink,
    remote: &str,
) -> xtask::AlknetClient {
    xtask::AlknetClient::start(
        dir,
        link.addr().port(),
        &server.user_key,
        &[
            "--host-key",
            &server.fingerprint,
            "-R",
            remote,
            "--keepalive-interval",
            "1",
        ],
    )
    .unwrap()
}
