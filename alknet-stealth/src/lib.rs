//! Peek-and-branch: one port for SSH and for everyone else.
//!
//! [`branch`] reads the first bytes a client sends. A client that speaks
//! SSH (`SSH-2.0-`, possibly split over several reads) gets back a stream
//! that replays those bytes, for the SSH server to run on. Anyone else —
//! a browser, a scanner, a censor's probe — is a [`WebVisit`]: passed on
//! to the real site behind the port ([`StealthConfig::backend`]), or
//! answered the way a stock nginx answers a site with nothing configured:
//! `404 Not Found` for well-formed HTTP (keep-alive honoured), `400 Bad
//! Request` for anything else, `413` for a body past 1 MiB, and silence
//! closed after a timeout. HTTP/2 visitors (ALPN `h2`) get the same over
//! HTTP/2.
//!
//! A listener can also require proof before it opens a tunnel
//! ([`StealthConfig::token_gate`]): then a bare `SSH-2.0-` is garbage like
//! any other, and only a [knock](mod@knock) — an HTTP/1.1 upgrade request
//! carrying a token the gate admits — is answered with `101` and becomes
//! SSH. A refused knock goes to the site, exactly as it arrived.
//!
//! Time and memory are bounded as nginx bounds them, so a slow client
//! cannot hold a connection forever: a whole request head must arrive
//! within [`StealthConfig::header_timeout`] (`client_header_timeout`), a
//! kept-alive connection may idle [`StealthConfig::idle_timeout`] between
//! requests (`keepalive_timeout`), heads are at most 8 KiB and bodies
//! [`StealthConfig::max_body`] (`client_max_body_size`).
//!
//! ```text
//!  client ──► branch() ──"SSH-2.0-" or a good knock──► Branch::Ssh(Replay) ──► SSH server
//!                  └──── anything else ──► Branch::Web ──► backend site, or nginx's 404 / 400
//! ```
//!
//! This crate works on any `AsyncRead + AsyncWrite` and depends on no TLS
//! crate: alknet runs it on the decrypted side of a TLS listener.
//!
//! # Example
//!
//! ```
//! use alknet_stealth::{Branch, StealthConfig, branch};
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! let (mut browser, server_side) = tokio::io::duplex(4096);
//! browser.write_all(b"GET / HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n").await?;
//! let Branch::Web(visitor) = branch(server_side, &StealthConfig::default()).await? else {
//!     unreachable!("a browser is not SSH");
//! };
//! visitor.serve().await;
//!
//! let mut answer = String::new();
//! browser.read_to_string(&mut answer).await?;
//! assert!(answer.starts_with("HTTP/1.1 404 Not Found\r\nServer: nginx\r\n"));
//! # Ok(())
//! # }
//! ```

#![forbid(unsafe_code)]

mod backend;
mod classify;
mod h2;
mod idle;
pub mod knock;
mod nginx;
mod replay;

use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

pub use crate::backend::{Backend, BackendParseError};
use crate::classify::{Decision, classify};
pub use crate::knock::{KnockError, knock};
pub use crate::replay::Replay;

/// Decides whether a knock's token opens the tunnel. alknet's server checks
/// it against its authorized keys, each token once.
pub trait TokenGate: Send + Sync + fmt::Debug {
    /// Whether `token` proves a key allowed in (and was not used before).
    fn admit(&self, token: &str) -> bool;
}

/// How the non-SSH side behaves.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct StealthConfig {
    /// How long a client may take to send a whole request head (or its
    /// SSH identification), counted from its first byte — from the
    /// connection's start for the first request; then it is closed without
    /// a word, as nginx does (`client_header_timeout`).
    pub header_timeout: Duration,
    /// How long a kept-alive connection may sit idle between requests, and
    /// between two reads of a request body (`keepalive_timeout`,
    /// `client_body_timeout`); with a backend, how long a passed-on
    /// connection may move no byte either way (`proxy_read_timeout`).
    pub idle_timeout: Duration,
    /// Requests served on one connection before it is closed
    /// (nginx's `keepalive_requests`).
    pub max_requests: usize,
    /// The largest request body read (and dropped); a larger one gets
    /// `413` and the connection is closed (`client_max_body_size`).
    pub max_body: usize,
    /// The real site: every connection that is not a tunnel is passed on to
    /// it. `None`: nginx's 404 for everyone.
    pub backend: Option<Backend>,
    /// When set, a bare `SSH-2.0-` opens nothing: only a [knock](mod@knock)
    /// whose token this gate admits does.
    pub token_gate: Option<Arc<dyn TokenGate>>,
}

impl Default for StealthConfig {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(60),
            max_requests: 1000,
            max_body: 1024 * 1024,
            backend: None,
            token_gate: None,
        }
    }
}

impl StealthConfig {
    /// `timeout` for both the request head and idling, as `alknet serve
    /// --stealth-timeout` sets them.
    pub fn with_timeout(timeout: Duration) -> Self {
        Self {
            header_timeout: timeout,
            idle_timeout: timeout,
            ..Self::default()
        }
    }

    /// Passes every connection that is not a tunnel on to `backend`.
    pub fn with_backend(mut self, backend: Backend) -> Self {
        self.backend = Some(backend);
        self
    }

    /// Opens tunnels only to knocks whose token `gate` admits.
    pub fn requiring_token(mut self, gate: Arc<dyn TokenGate>) -> Self {
        self.token_gate = Some(gate);
        self
    }
}

/// Where a connection went.
#[derive(Debug)]
pub enum Branch<S> {
    /// The client speaks SSH (or knocked with a good token); read from this
    /// stream to get everything it sent past the knock.
    Ssh(Replay<S>),
    /// A web visitor, to be served with [`WebVisit::serve`].
    Web(WebVisit<S>),
    /// Closed or silent before saying anything: closed without a word.
    Closed,
}

/// A connection that is not a tunnel, with what it sent so far.
#[derive(Debug)]
pub struct WebVisit<S> {
    stream: S,
    received: Vec<u8>,
    http2: bool,
    head_deadline: Instant,
    config: StealthConfig,
}

impl<S> WebVisit<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    /// Serves the visitor to the end: nginx's answers, or the backend's.
    pub async fn serve(self) {
        let WebVisit {
            mut stream,
            received,
            http2,
            head_deadline,
            config,
        } = self;
        if http2 {
            let stream = Replay::new(received, stream);
            h2::serve(stream, config.backend.clone(), config.idle_timeout).await;
            return;
        }
        match &config.backend {
            Some(backend) => {
                backend::pass_through(&mut stream, &received, backend, config.idle_timeout).await;
            }
            None => play_web_server(&mut stream, received, head_deadline, &config).await,
        }
        let _ = stream.shutdown().await;
    }
}

/// Reads until the client's protocol is clear: SSH (or, on a listener that
/// requires a token, a good knock — answered here with the upgrade), or a
/// web visitor to serve.
pub async fn branch<S>(mut stream: S, config: &StealthConfig) -> io::Result<Branch<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let head_deadline = Instant::now() + config.header_timeout;
    let mut received = Vec::with_capacity(512);
    let visit = |stream, received, http2| {
        Ok(Branch::Web(WebVisit {
            stream,
            received,
            http2,
            head_deadline,
            config: config.clone(),
        }))
    };
    loop {
        match classify(&received, config.token_gate.is_none()) {
            Decision::Ssh => return Ok(Branch::Ssh(Replay::new(received, stream))),
            Decision::Http2 => return visit(stream, received, true),
            Decision::Other => break,
            Decision::NeedMore => {
                if !read_some(&mut stream, &mut received, head_deadline).await? {
                    // Closed or silent before saying anything: a web server
                    // closes such connections without an answer.
                    let _ = stream.shutdown().await;
                    return Ok(Branch::Closed);
                }
            }
        }
    }
    let Some(gate) = &config.token_gate else {
        return visit(stream, received, false);
    };
    // A knock is a whole first request head. Anything that cannot become
    // one (a bad first line, an SSH banner, too much, too slow, gone) is
    // the decoy's to answer, exactly as it arrived.
    let head_len = loop {
        if let Some(end) = nginx::head_end(&received) {
            break end;
        }
        if received.len() > nginx::MAX_HEAD
            || nginx::bad_first_line(&received)
            || !read_some(&mut stream, &mut received, head_deadline).await?
        {
            return visit(stream, received, false);
        }
    };
    let Some(knock) = knock::parse_knock(&received[..head_len]) else {
        return visit(stream, received, false);
    };
    if !gate.admit(knock.token) {
        return visit(stream, received, false);
    }
    let upgrade = knock::switching_protocols(knock.websocket_key, SystemTime::now());
    stream.write_all(&upgrade).await?;
    stream.flush().await?;
    received.drain(..head_len);
    Ok(Branch::Ssh(Replay::new(received, stream)))
}

/// Appends what the stream has to `buffer`; `false` on EOF or when
/// `deadline` passes first.
async fn read_some<S>(stream: &mut S, buffer: &mut Vec<u8>, deadline: Instant) -> io::Result<bool>
where
    S: AsyncRead + Unpin,
{
    let mut chunk = [0u8; 2048];
    match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
        Ok(Ok(0)) | Err(_) => Ok(false),
        Ok(Ok(n)) => {
            buffer.extend_from_slice(&chunk[..n]);
            Ok(true)
        }
        // A reset is how many scanners leave; it ends the connection quietly.
        Ok(Err(error)) if error.kind() == io::ErrorKind::ConnectionReset => Ok(false),
        Ok(Err(error)) => Err(error),
    }
}

/// Answers requests on `stream` until the client closes, misbehaves, goes
/// quiet, or uses up its requests. `buffered` holds bytes already read;
/// the first request's head must be complete by `head_deadline`.
async fn play_web_server<S>(
    stream: &mut S,
    mut buffered: Vec<u8>,
    mut head_deadline: Instant,
    config: &StealthConfig,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    for _ in 0..config.max_requests {
        // Collect one request head, all of it before the deadline.
        let head_len = loop {
            if let Some(end) = nginx::head_end(&buffered) {
                break Some(end);
            }
            if buffered.len() > nginx::MAX_HEAD || nginx::bad_first_line(&buffered) {
                break None;
            }
            match read_some(stream, &mut buffered, head_deadline).await {
                Ok(true) => {}
                _ => return,
            }
        };
        let request = head_len.and_then(|end| nginx::parse(&buffered[..end]));
        let Some(request) = request else {
            let _ = stream
                .write_all(&nginx::bad_request(SystemTime::now()))
                .await;
            return;
        };
        buffered.drain(..head_len.unwrap_or(0));
        if request.body_len > config.max_body {
            let _ = stream.write_all(&nginx::too_large(SystemTime::now())).await;
            return;
        }
        // Read and drop the body, as nginx does before answering; each
        // read within the idle timeout.
        let mut body_left = request.body_len;
        loop {
            let taken = body_left.min(buffered.len());
            buffered.drain(..taken);
            body_left -= taken;
            if body_left == 0 {
                break;
            }
            let deadline = Instant::now() + config.idle_timeout;
            if !matches!(read_some(stream, &mut buffered, deadline).await, Ok(true)) {
                return;
            }
        }
        if stream
            .write_all(&nginx::not_found(&request, SystemTime::now()))
            .await
            .is_err()
            || !request.keep_alive
        {
            return;
        }
        let _ = stream.flush().await;
        if buffered.is_empty() {
            let idle_until = Instant::now() + config.idle_timeout;
            if !matches!(read_some(stream, &mut buffered, idle_until).await, Ok(true)) {
                return;
            }
        }
        // The next head is timed from its first byte.
        head_deadline = Instant::now() + config.header_timeout;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{DuplexStream, duplex};

    /// What the server does with a connection: branch, and serve a web
    /// visitor to the end. `Some` for a tunnel.
    async fn settle(stream: DuplexStream, config: &StealthConfig) -> Option<Replay<DuplexStream>> {
        match branch(stream, config).await.unwrap() {
            Branch::Ssh(replay) => Some(replay),
            Branch::Web(visitor) => {
                visitor.serve().await;
                None
            }
            Branch::Closed => None,
        }
    }

    async fn run(input: &[u8], config: StealthConfig) -> (bool, Vec<u8>) {
        let (mut client, server) = duplex(64 * 1024);
        client.write_all(input).await.unwrap();
        let task = tokio::spawn(async move {
            let config = config;
            settle(server, &config).await.is_some()
        });
        let mut answer = Vec::new();
        // The client half-closes only for the cases that expect an answer
        // and then the server's close; reading to the end is bounded.
        tokio::time::timeout(Duration::from_secs(10), client.read_to_end(&mut answer))
            .await
            .expect("the stealth side never closed")
            .unwrap();
        (task.await.unwrap(), answer)
    }

    fn quick() -> StealthConfig {
        StealthConfig::with_timeout(Duration::from_millis(200))
    }

    #[tokio::test]
    async fn ssh_split_across_reads_is_handed_back_with_every_byte() {
        let (mut client, server) = duplex(1024);
        let task = tokio::spawn(async move { settle(server, &StealthConfig::default()).await });
        for piece in [&b"SS"[..], b"H-2", b".0-OpenSSH_9.6\r\n"] {
            client.write_all(piece).await.unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let Some(mut replay) = task.await.unwrap() else {
            panic!("SSH was not recognised");
        };
        let mut line = vec![0u8; 21];
        replay.read_exact(&mut line).await.unwrap();
        assert_eq!(line, b"SSH-2.0-OpenSSH_9.6\r\n");
        // And it is a full duplex stream.
        replay.write_all(b"SSH-2.0-alknet\r\n").await.unwrap();
        let mut back = vec![0u8; 16];
        client.read_exact(&mut back).await.unwrap();
        assert_eq!(back, b"SSH-2.0-alknet\r\n");
    }

    #[tokio::test]
    async fn keep_alive_requests_each_get_a_404_until_the_client_asks_to_close() {
        let requests = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nHEAD /b HTTP/1.1\r\nHost: x\r\n\r\nGET /c HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
        let (ssh, answer) = run(requests, quick()).await;
        assert!(!ssh);
        let text = String::from_utf8(answer).unwrap();
        assert_eq!(
            text.matches("HTTP/1.1 404 Not Found\r\n").count(),
            3,
            "{text}"
        );
        assert_eq!(
            text.matches("<html>").count(),
            2,
            "HEAD has no body: {text}"
        );
        assert!(text.contains("Connection: close\r\n"));
    }

    #[tokio::test]
    async fn garbage_gets_400_and_silence_is_closed_without_a_word() {
        let (ssh, answer) = run(b"\x16\x03\x01\x02\x00garbage\r\n\r\n", quick()).await;
        assert!(!ssh);
        assert!(answer.starts_with(b"HTTP/1.1 400 Bad Request\r\n"));

        let (ssh, answer) = run(b"", quick()).await;
        assert!(!ssh);
        assert!(answer.is_empty());

        // An unfinished head is closed after the timeout, also silently.
        let (_, answer) = run(b"GET / HTTP/1.1\r\nHost:", quick()).await;
        assert!(answer.is_empty());
    }

    #[tokio::test]
    async fn a_bad_first_line_is_answered_at_once() {
        let (mut client, server) = duplex(1024);
        let task = tokio::spawn(async move { settle(server, &StealthConfig::default()).await });
        // Typed into openssl s_client: one line, then the client waits.
        client.write_all(b"hello there\n").await.unwrap();
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut answer))
            .await
            .expect("a bad line must be answered without waiting for more")
            .unwrap();
        assert!(answer.starts_with(b"HTTP/1.1 400 Bad Request\r\n"));
        assert!(task.await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_head_trickled_byte_by_byte_is_cut_off_at_the_header_deadline() {
        // One byte every 50 ms never lets a per-read timeout of 200 ms
        // fire; the head deadline (200 ms for all of it) does.
        let (mut client, server) = duplex(64 * 1024);
        let task = tokio::spawn(async move { settle(server, &quick()).await });
        let started = Instant::now();
        let trickle = async {
            for byte in b"GET / HTTP/1.1\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" {
                if client.write_all(&[*byte]).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(10), trickle).await;
        let outcome = tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("the trickling client was never cut off")
            .unwrap();
        assert!(outcome.is_none());
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn a_body_past_the_limit_gets_413_and_the_connection_closes() {
        let mut config = quick();
        config.max_body = 1000;
        let (_, answer) = run(
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1001\r\n\r\n",
            config.clone(),
        )
        .await;
        let text = String::from_utf8(answer).unwrap();
        assert!(
            text.starts_with("HTTP/1.1 413 Request Entity Too Large\r\nServer: nginx\r\n"),
            "{text}"
        );
        assert!(text.contains("Connection: close\r\n"));
        // At the limit, the body is read and the request answered.
        let mut request =
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\nConnection: close\r\n\r\n"
                .to_vec();
        request.extend(std::iter::repeat_n(b'b', 1000));
        let (_, answer) = run(&request, config).await;
        assert!(answer.starts_with(b"HTTP/1.1 404 Not Found\r\n"));
    }

    #[tokio::test]
    async fn an_oversized_head_is_refused() {
        let mut huge = b"GET / HTTP/1.1\r\nX: ".to_vec();
        huge.extend(std::iter::repeat_n(b'a', 10_000));
        let (_, answer) = run(&huge, quick()).await;
        assert!(answer.starts_with(b"HTTP/1.1 400 Bad Request\r\n"));
    }
}
