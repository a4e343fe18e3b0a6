//! What a probe, a visitor and a knocking client each get from a stealth
//! listener, over in-memory streams and a loopback backend.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use alknet_stealth::{Backend, Branch, Replay, StealthConfig, TokenGate, branch, knock};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, duplex};
use tokio::net::TcpListener;

/// Admits each token it was given, once.
#[derive(Debug)]
struct OneUse(Mutex<HashSet<String>>);

impl OneUse {
    fn new(tokens: &[&str]) -> Arc<Self> {
        Arc::new(Self(Mutex::new(
            tokens.iter().map(|&token| token.to_owned()).collect(),
        )))
    }
}

impl TokenGate for OneUse {
    fn admit(&self, token: &str) -> bool {
        self.0.lock().unwrap().remove(token)
    }
}

/// The server's side: branch, serve visitors, and hand back tunnels.
fn server(
    config: StealthConfig,
) -> (
    DuplexStream,
    tokio::task::JoinHandle<Option<Replay<DuplexStream>>>,
) {
    let (client, server) = duplex(1 << 20);
    let task = tokio::spawn(async move {
        match branch(server, &config).await.unwrap() {
            Branch::Ssh(replay) => Some(replay),
            Branch::Web(visitor) => {
                visitor.serve().await;
                None
            }
            Branch::Closed => None,
        }
    });
    (client, task)
}

async fn exchange(config: StealthConfig, request: &[u8]) -> Vec<u8> {
    let (mut client, task) = server(config);
    client.write_all(request).await.unwrap();
    client.shutdown().await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), client.read_to_end(&mut answer))
        .await
        .expect("no answer")
        .unwrap();
    assert!(task.await.unwrap().is_none(), "a probe got a tunnel");
    answer
}

fn quick() -> StealthConfig {
    StealthConfig::with_timeout(Duration::from_millis(500))
}

/// Everything but the Date header, which moves with the clock.
fn without_date(answer: &[u8]) -> String {
    String::from_utf8_lossy(answer)
        .lines()
        .filter(|line| !line.starts_with("Date: "))
        .collect::<Vec<_>>()
        .join("\n")
}

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

#[tokio::test]
async fn with_a_token_required_an_ssh_banner_is_just_a_bad_request() {
    let gated = quick().requiring_token(OneUse::new(&["good"]));
    let probe = exchange(gated.clone(), b"SSH-2.0-OpenSSH_9.2\r\n").await;
    assert!(probe.starts_with(b"HTTP/1.1 400 Bad Request\r\nServer: nginx\r\n"));
    // Byte for byte what the same probe gets where no token is required
    // and the banner is not SSH either.
    let plain = exchange(quick(), b"SSH-1.99-OpenSSH_9.2\r\n").await;
    assert_eq!(without_date(&probe), without_date(&plain));
}

#[tokio::test]
async fn a_good_knock_opens_once_and_its_replay_gets_the_decoy() {
    let gated = quick().requiring_token(OneUse::new(&["good"]));
    let (client, task) = server(gated.clone());
    let serve = async { task.await.unwrap().expect("the knock was refused") };
    let knocking = knock(client, "example.com", "good", KEY);
    let (mut tunnel_client, mut tunnel_server) =
        tokio::join!(async { knocking.await.unwrap() }, serve);
    tunnel_client
        .write_all(b"SSH-2.0-alknet\r\n")
        .await
        .unwrap();
    let mut banner = [0u8; 16];
    tunnel_server.read_exact(&mut banner).await.unwrap();
    assert_eq!(&banner, b"SSH-2.0-alknet\r\n");

    // The same request again: answered as nginx answers any GET.
    let request = knock::knock_request("example.com", "good", KEY);
    let replayed = exchange(gated.clone(), request.as_bytes()).await;
    assert!(
        replayed.starts_with(b"HTTP/1.1 404 Not Found\r\nServer: nginx\r\n"),
        "{}",
        String::from_utf8_lossy(&replayed)
    );
    let stranger = knock::knock_request("example.com", "unknown", KEY);
    let unknown = exchange(gated, stranger.as_bytes()).await;
    assert_eq!(without_date(&replayed), without_date(&unknown));
}

/// A backend that answers every connection with a fixed response naming
/// what it was sent, then closes.
async fn echoing_backend() -> (Backend, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        for _ in 0..4 {
            let Ok((mut visitor, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n")
                    && visitor.read(&mut byte).await.unwrap_or(0) == 1
                {
                    head.push(byte[0]);
                }
                let first = String::from_utf8_lossy(&head)
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .to_owned();
                let body = format!("site saw: {first}");
                let answer = format!(
                    "HTTP/1.1 200 OK\r\nserver: Apache/2.4.62 (Debian)\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = visitor.write_all(answer.as_bytes()).await;
            });
        }
    });
    (format!("http://{address}").parse().unwrap(), task)
}

#[tokio::test]
async fn a_backend_answers_visitors_and_refused_knocks_byte_for_byte() {
    let (backend, site) = echoing_backend().await;
    let config = quick()
        .with_backend(backend)
        .requiring_token(OneUse::new(&["good"]));
    let page = exchange(config.clone(), b"GET /page HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(
        String::from_utf8(page).unwrap(),
        "HTTP/1.1 200 OK\r\nserver: Apache/2.4.62 (Debian)\r\nContent-Length: 28\r\nConnection: close\r\n\r\nsite saw: GET /page HTTP/1.1"
    );
    let probe = exchange(config.clone(), b"SSH-2.0-OpenSSH_9.2\r\n\r\n").await;
    let probe = String::from_utf8(probe).unwrap();
    assert!(probe.ends_with("site saw: SSH-2.0-OpenSSH_9.2"), "{probe}");
    let request = knock::knock_request("x", "bad", KEY);
    let refused = exchange(config, request.as_bytes()).await;
    assert!(
        String::from_utf8(refused)
            .unwrap()
            .ends_with("site saw: GET / HTTP/1.1")
    );
    site.abort();
}

#[tokio::test]
async fn an_unreachable_backend_is_nginx_s_502() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let config = quick().with_backend(format!("http://127.0.0.1:{port}").parse().unwrap());
    let answer = exchange(config, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(answer.starts_with(b"HTTP/1.1 502 Bad Gateway\r\nServer: nginx\r\n"));
}

async fn h2_get(config: StealthConfig, path: &str) -> (hyper::http::response::Parts, Bytes) {
    let (client, task) = server(config);
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(client),
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    let request = hyper::Request::get(format!("https://example.com{path}"))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let (parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    drop(sender);
    task.abort();
    (parts, body)
}

#[tokio::test]
async fn http2_visitors_get_nginx_or_the_backend() {
    let (parts, body) = h2_get(quick(), "/").await;
    assert_eq!(parts.status, 404);
    assert_eq!(parts.headers["server"], "nginx");
    assert!(String::from_utf8_lossy(&body).contains("<center>nginx</center>"));

    let (backend, site) = echoing_backend().await;
    let (parts, body) = h2_get(quick().with_backend(backend), "/page?q=1").await;
    assert_eq!(parts.status, 200);
    assert_eq!(parts.headers["server"], "Apache/2.4.62 (Debian)");
    assert!(!parts.headers.contains_key("connection"));
    assert_eq!(&body[..], b"site saw: GET /page?q=1 HTTP/1.1");
    site.abort();
}

#[tokio::test]
async fn a_unix_socket_backend_is_passed_visitors_too() {
    let dir = std::env::temp_dir().join(format!("alknet-stealth-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("site.sock");
    let _ = std::fs::remove_file(&path);
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    let site = tokio::spawn(async move {
        let (mut visitor, _) = listener.accept().await.unwrap();
        let mut head = vec![0u8; 64];
        let n = visitor.read(&mut head).await.unwrap();
        assert!(head[..n].starts_with(b"GET /over-unix "));
        visitor
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nConnection: close\r\n\r\nunix")
            .await
            .unwrap();
    });
    let backend: Backend = format!("unix:{}", path.display()).parse().unwrap();
    let answer = exchange(
        quick().with_backend(backend),
        b"GET /over-unix HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await;
    assert!(
        answer.ends_with(b"\r\n\r\nunix"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    site.await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
