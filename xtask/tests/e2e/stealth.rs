//! Stealth that survives active probing: a real site behind the port
//! (`--stealth-backend`), and tunnels only after a knock with a token
//! (`--stealth-require-token`, `alknet connect --stealth`). Probes are made
//! with openssl, curl, OpenSSH and nmap.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use xtask::BoundedOutput as _;
use xtask::{
    AlknetClient, AlknetServer, HttpTarget, Profile, TlsFiles, Workdir, alknet_binary,
    ca_signed_server_cert, require_tool,
};

const LIMIT: Duration = Duration::from_secs(30);
const WEBSOCKET_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const SITE_SERVER: &str = "Apache/2.4.62 (Debian)";

fn stealth_server(dir: &Workdir, files: &TlsFiles, extra: &[&str]) -> AlknetServer {
    let (cert, key) = (
        files.cert.display().to_string(),
        files.key.display().to_string(),
    );
    let mut args = vec!["--tls-cert", &cert, "--tls-key", &key, "--stealth"];
    args.extend_from_slice(extra);
    AlknetServer::start_listening(dir, &["tls://127.0.0.1:0"], &args).unwrap()
}

/// A TLS connection made by `openssl s_client`, written and read raw.
struct TlsPipe {
    child: Child,
    received: Arc<Mutex<Vec<u8>>>,
}

impl TlsPipe {
    fn open(port: u16) -> Self {
        let mut child = Command::new("openssl")
            .args([
                "s_client",
                "-quiet",
                "-ign_eof",
                "-servername",
                "localhost",
                "-connect",
            ])
            .arg(format!("127.0.0.1:{port}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let sink = received.clone();
        let mut stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            while let Ok(n @ 1..) = stdout.read(&mut chunk) {
                sink.lock().unwrap().extend_from_slice(&chunk[..n]);
            }
        });
        Self { child, received }
    }

    fn send(&mut self, bytes: &[u8]) {
        let stdin = self.child.stdin.as_mut().unwrap();
        stdin.write_all(bytes).unwrap();
        stdin.flush().unwrap();
    }

    /// Waits until what was received contains `needle`; returns all of it.
    fn wait_for(&self, needle: &[u8]) -> Vec<u8> {
        let started = Instant::now();
        loop {
            let received = self.received.lock().unwrap().clone();
            if received
                .windows(needle.len())
                .any(|window| window == needle)
                || started.elapsed() > LIMIT
            {
                return received;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for TlsPipe {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn knock_with(token: &str) -> String {
    alknet_stealth::knock::knock_request("localhost", token, WEBSOCKET_KEY)
}

fn mint_token(key: &std::path::Path) -> String {
    let minted = Command::new(alknet_binary(Profile::Dev).unwrap())
        .arg("token")
        .arg("--identity")
        .arg(key)
        .bounded_output()
        .unwrap();
    assert!(minted.status.success(), "{}", text(&minted.stderr));
    text(&minted.stdout).trim().to_owned()
}

#[test]
fn with_a_token_required_probes_find_a_web_server_and_the_knock_opens_once() {
    require_tool("openssl").unwrap();
    require_tool("ssh").unwrap();
    let dir = Workdir::new().unwrap();
    let files = ca_signed_server_cert(&dir).unwrap();
    let server = stealth_server(&dir, &files, &["--stealth-require-token"]);
    let port = server.port;

    // The handshake offers what nginx offers: h2, and resumption tickets.
    let hello = Command::new("openssl")
        .args(["s_client", "-tls1_2", "-alpn", "h2,http/1.1", "-connect"])
        .arg(format!("127.0.0.1:{port}"))
        .stdin(Stdio::null())
        .bounded_output()
        .unwrap();
    let hello = text(&hello.stdout);
    assert!(hello.contains("ALPN protocol: h2"), "{hello}");
    assert!(
        hello.contains("TLS session ticket lifetime hint"),
        "{hello}"
    );

    // An SSH banner after TLS: an HTTP answer, never an SSH one.
    let mut probe = TlsPipe::open(port);
    probe.send(b"SSH-2.0-OpenSSH_9.2\r\n");
    let answer = text(&probe.wait_for(b"</html>"));
    assert!(
        answer.starts_with("HTTP/1.1 400 Bad Request\r\nServer: nginx\r\n"),
        "{answer}"
    );
    assert!(!answer.contains("SSH-"), "{answer}");

    // OpenSSH itself, through a TLS pipe: no banner, no key exchange.
    let ssh = Command::new("ssh")
        .args([
            "-F",
            "/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=no",
        ])
        .args([
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "ConnectTimeout=20",
        ])
        .arg("-o")
        .arg(format!(
            "ProxyCommand=openssl s_client -quiet -servername localhost -connect 127.0.0.1:{port}"
        ))
        .arg("-i")
        .arg(&server.user_key)
        .args(["probe@stealth.example", "true"])
        .stdin(Stdio::null())
        .bounded_output()
        .unwrap();
    let said = text(&ssh.stderr);
    assert!(!ssh.status.success(), "{said}");
    assert!(
        !said.contains("Permanently added") && !said.contains("Permission denied"),
        "ssh got as far as a host key: {said}"
    );

    // A knock with a good token opens; the same token again gets the decoy,
    // byte for byte what a GET without any token gets (Date aside).
    let token = mint_token(&server.user_key);
    let mut first = TlsPipe::open(port);
    first.send(knock_with(&token).as_bytes());
    let opened = text(&first.wait_for(b"SSH-2.0-"));
    assert!(
        opened.starts_with("HTTP/1.1 101 Switching Protocols\r\n"),
        "{opened}"
    );
    assert!(
        opened.contains("\r\n\r\nSSH-2.0-"),
        "no SSH banner after the upgrade: {opened}"
    );
    let without_date = |answer: &str| {
        answer
            .lines()
            .filter(|line| !line.starts_with("Date: "))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let mut replay = TlsPipe::open(port);
    replay.send(knock_with(&token).as_bytes());
    let replayed = text(&replay.wait_for(b"</html>"));
    let mut plain = TlsPipe::open(port);
    plain.send(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
    let visitor = text(&plain.wait_for(b"</html>"));
    assert!(
        replayed.starts_with("HTTP/1.1 404 Not Found\r\n"),
        "{replayed}"
    );
    assert_eq!(without_date(&replayed), without_date(&visitor));

    // And alknet's own client tunnels with --stealth.
    let ca = files.ca.display().to_string();
    let client = AlknetClient::start(
        &dir,
        port,
        &server.user_key,
        &["--transport", "tls", "--tls-ca", &ca, "--stealth"],
    )
    .unwrap();
    let target = HttpTarget::start("127.0.0.1:0").unwrap();
    let url = format!("http://127.0.0.1:{}/100000", target.addr().port());
    let body = crate::fetch(client.socks_addr, &url, &dir.join("body")).unwrap();
    assert_eq!(body, HttpTarget::body(100_000));
}

#[test]
fn a_client_without_the_knock_is_told_what_it_met() {
    let dir = Workdir::new().unwrap();
    let files = ca_signed_server_cert(&dir).unwrap();
    let server = stealth_server(&dir, &files, &["--stealth-require-token"]);
    let ca = files.ca.display().to_string();
    let address = format!("127.0.0.1:{}", server.port);
    let output = xtask::call_command_to(
        &["--server", &address, "--transport", "tls", "--tls-ca", &ca],
        &server.user_key,
        &server.fingerprint,
        "/alknet/ping",
        None,
    )
    .unwrap()
    .bounded_output()
    .unwrap();
    assert!(!output.status.success());
    let said = text(&output.stderr);
    assert!(!said.contains("panicked"), "{said}");
    assert!(said.contains("connect with --stealth"), "{said}");
}

/// A stand-in for the real site: `GET /<n>` answers `n` bytes of
/// [`HttpTarget::body`]'s pattern, `GET /ws` echoes one WebSocket message,
/// anything else is a 404; every answer names the server as Apache does.
struct Site {
    addr: SocketAddr,
    stopping: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Site {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stopping = Arc::new(AtomicBool::new(false));
        let flag = stopping.clone();
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if flag.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(stream) = stream {
                    std::thread::spawn(move || site_answer(stream));
                }
            }
        });
        Self {
            addr,
            stopping,
            thread: Some(thread),
        }
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn site_answer(stream: TcpStream) -> std::io::Result<()> {
    stream.set_read_timeout(Some(LIMIT))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut websocket_key = None;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':')
            && name.eq_ignore_ascii_case("sec-websocket-key")
        {
            websocket_key = Some(value.trim().to_owned());
        }
    }
    let path = request_line.split_whitespace().nth(1).unwrap_or_default();
    if let ("/ws", Some(key)) = (path, websocket_key) {
        let accept = alknet_stealth::knock::websocket_accept(&key);
        write!(
            writer,
            "HTTP/1.1 101 Switching Protocols\r\nServer: {SITE_SERVER}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
        )?;
        // One masked client frame of < 126 bytes, echoed unmasked.
        let mut head = [0u8; 6];
        reader.read_exact(&mut head)?;
        let len = usize::from(head[1] & 0x7f);
        let mut payload = vec![0u8; len];
        reader.read_exact(&mut payload)?;
        for (index, byte) in payload.iter_mut().enumerate() {
            *byte ^= head[2 + index % 4];
        }
        writer.write_all(&[head[0], head[1] & 0x7f])?;
        writer.write_all(&payload)?;
        return writer.flush();
    }
    match path.trim_start_matches('/').parse::<usize>() {
        Ok(length) => {
            write!(
                writer,
                "HTTP/1.1 200 OK\r\nServer: {SITE_SERVER}\r\nContent-Type: application/octet-stream\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n"
            )?;
            writer.write_all(&HttpTarget::body(length))?;
        }
        Err(_) => {
            let body = "<html><body>Not here</body></html>";
            write!(
                writer,
                "HTTP/1.1 404 Not Found\r\nServer: {SITE_SERVER}\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )?;
        }
    }
    writer.flush()
}

fn curl(args: &[&str], url: &str, out: &std::path::Path) -> (String, Vec<u8>) {
    let output = Command::new("curl")
        .args([
            "--silent",
            "--show-error",
            "--insecure",
            "--max-time",
            "120",
            "--dump-header",
            "-",
        ])
        .args(args)
        .arg("--output")
        .arg(out)
        .arg(url)
        .bounded_output()
        .unwrap();
    assert!(
        output.status.success(),
        "curl {url}: {}",
        text(&output.stderr)
    );
    (text(&output.stdout), std::fs::read(out).unwrap())
}

#[test]
fn a_backend_site_is_what_visitors_and_scanners_see() {
    require_tool("curl").unwrap();
    require_tool("openssl").unwrap();
    require_tool("nmap").unwrap();
    let dir = Workdir::new().unwrap();
    let files = ca_signed_server_cert(&dir).unwrap();
    let site = Site::start();
    let backend = format!("http://{}", site.addr);
    let server = stealth_server(
        &dir,
        &files,
        &["--stealth-backend", &backend, "--stealth-require-token"],
    );
    let port = server.port;
    let out = dir.join("page");

    // The same bytes as from the site itself, over HTTP/1.1 and HTTP/2.
    let (_, direct) = curl(&[], &format!("http://{}/100000", site.addr), &out);
    let (headers, over_h1) = curl(
        &["--http1.1"],
        &format!("https://127.0.0.1:{port}/100000"),
        &out,
    );
    assert!(headers.starts_with("HTTP/1.1 200 OK\r\n"), "{headers}");
    assert!(
        headers.contains(&format!("Server: {SITE_SERVER}\r\n")),
        "{headers}"
    );
    let (headers, over_h2) = curl(
        &["--http2"],
        &format!("https://127.0.0.1:{port}/100000"),
        &out,
    );
    assert!(headers.starts_with("HTTP/2 200"), "{headers}");
    assert_eq!(over_h1, direct);
    assert_eq!(over_h2, direct);
    let (headers, _) = curl(&[], &format!("https://127.0.0.1:{port}/missing"), &out);
    assert!(headers.starts_with("HTTP/2 404"), "{headers}");

    // 50 MiB, both ways of asking.
    let size = 50 * 1024 * 1024;
    for version in ["--http1.1", "--http2"] {
        let (_, body) = curl(
            &[version],
            &format!("https://127.0.0.1:{port}/{size}"),
            &out,
        );
        assert!(
            body == HttpTarget::body(size),
            "{version}: {} bytes, not the site's",
            body.len()
        );
    }

    // A WebSocket upgrade and one message each way.
    let mut socket = TlsPipe::open(port);
    socket.send(
        format!(
            "GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {WEBSOCKET_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        .as_bytes(),
    );
    let upgraded = text(&socket.wait_for(b"\r\n\r\n"));
    assert!(
        upgraded.starts_with("HTTP/1.1 101 Switching Protocols\r\n"),
        "{upgraded}"
    );
    let message = b"hello through stealth";
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    let mut frame = vec![0x81, 0x80 | message.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(
        message
            .iter()
            .enumerate()
            .map(|(i, byte)| byte ^ mask[i % 4]),
    );
    socket.send(&frame);
    let mut echoed = vec![0x81, message.len() as u8];
    echoed.extend_from_slice(message);
    let received = socket.wait_for(&echoed);
    assert!(
        received
            .windows(echoed.len())
            .any(|window| window == echoed),
        "no echo: {}",
        text(&received)
    );

    // A scanner reports the site's server.
    let output = Command::new("nmap")
        .args(["-sV", "-Pn", "-n", "--host-timeout", "120s", "-p"])
        .arg(port.to_string())
        .arg("127.0.0.1")
        .bounded_output()
        .unwrap();
    let report = text(&output.stdout);
    let line = report
        .lines()
        .find(|line| line.starts_with(&format!("{port}/tcp")))
        .unwrap_or_else(|| panic!("no line for the port:\n{report}"));
    assert!(line.contains("Apache"), "{line}");
    assert!(!line.to_lowercase().contains("ssh"), "{line}");
}
