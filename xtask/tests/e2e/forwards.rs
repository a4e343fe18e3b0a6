//! `-L` local forwards, to TCP and to Unix-socket targets.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixListener;
use std::time::Duration;

use xtask::{AlknetClient, AlknetServer, HttpTarget, Workdir, require_tool};

use crate::assert_logs_do_not_mention;

#[test]
fn local_forwards_reach_an_http_server_and_a_unix_socket() {
    require_tool("curl").unwrap();
    let dir = Workdir::new().unwrap();
    let target = HttpTarget::start("127.0.0.1:0").unwrap();
    let http_port = target.addr().port();
    // A Unix-socket echo server on the server's side.
    let socket_path = dir.join("echo.sock");
    let echo = UnixListener::bind(&socket_path).unwrap();
    std::thread::spawn(move || {
        for mut stream in echo.incoming().flatten() {
            let mut data = Vec::new();
            let _ = stream.read_to_end(&mut data);
            let _ = stream.write_all(&data);
        }
    });

    let server = AlknetServer::start(&dir, &[]).unwrap();
    let http_forward = format!("127.0.0.1:0:localhost:{http_port}");
    let unix_forward = format!("0:{}", socket_path.display());
    let client = AlknetClient::start(
        &dir,
        server.port,
        &server.user_key,
        &["--forward", &http_forward, "-L", &unix_forward],
    )
    .unwrap();

    // -L to HTTP: curl talks to the local port, no proxy involved.
    let local = client.forward_addr(1).unwrap();
    let output = std::process::Command::new("curl")
        .args(["--silent", "--show-error", "--fail", "--max-time", "60"])
        .arg(format!("http://{local}/300000"))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.stdout == HttpTarget::body(300_000), "body differs");

    // -L to a Unix socket, with half-close: the echo answers after our EOF.
    let mut stream = TcpStream::connect(client.forward_addr(2).unwrap()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream.write_all(b"through a unix socket").unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    let mut echoed = Vec::new();
    stream.read_to_end(&mut echoed).unwrap();
    assert_eq!(echoed, b"through a unix socket");

    assert_logs_do_not_mention(
        &[("server", server.log()), ("client", client.log())],
        &[
            "localhost".into(),
            format!(":{http_port}"),
            "echo.sock".into(),
        ],
    );
}
