//! A minimal HTTP/1.1 server to tunnel to: `GET /<n>` answers with `n`
//! bytes of a fixed pattern ([`HttpTarget::body`]), so any size can be
//! served without holding it in memory and checked by hash; `PUT` (or
//! `POST`) reads a body of its `Content-Length` and answers with how many
//! bytes came, so uploads can be timed the same way; to `PUT /sha256` it
//! also answers with their SHA-256 ([`HttpTarget::upload_answer`]), so an
//! upload can be checked as a download is.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::{Result, XtaskError};

/// A running HTTP target; stopped when dropped.
#[derive(Debug)]
pub struct HttpTarget {
    addr: SocketAddr,
    stopping: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl HttpTarget {
    /// Serves on `bind` (such as `127.0.0.1:0` or `[::1]:0`).
    pub fn start(bind: &str) -> Result<Self> {
        let listener = TcpListener::bind(bind)
            .map_err(XtaskError::io(format!("binding the HTTP target to {bind}")))?;
        let addr = listener
            .local_addr()
            .map_err(XtaskError::io("reading the HTTP target's address"))?;
        let stopping = Arc::new(AtomicBool::new(false));
        let flag = stopping.clone();
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if flag.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(stream) = stream {
                    std::thread::spawn(move || {
                        let _ = serve(stream);
                    });
                }
            }
        });
        Ok(Self {
            addr,
            stopping,
            thread: Some(thread),
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The first `len` bytes of the pattern every response carries.
    pub fn body(len: usize) -> Vec<u8> {
        (0..len).map(pattern_byte).collect()
    }

    /// What the target answers to `PUT /sha256` carrying `body`: its length
    /// and its SHA-256 in hex.
    pub fn upload_answer(body: &[u8]) -> String {
        answer(body.len() as u64, Some(Sha256::digest(body).into()))
    }
}

fn answer(received: u64, hash: Option<[u8; 32]>) -> String {
    match hash {
        Some(hash) => {
            let hex: String = hash.iter().map(|byte| format!("{byte:02x}")).collect();
            format!("{received} {hex}")
        }
        None => received.to_string(),
    }
}

impl Drop for HttpTarget {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn pattern_byte(index: usize) -> u8 {
    // 251 is prime, so the pattern does not line up with buffer sizes.
    (index % 251) as u8
}

fn serve(stream: TcpStream) -> io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    stream.set_nodelay(true)?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut content_length = None;
    let mut expects_continue = false;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header == "\r\n" || header == "\n" {
            break;
        }
        let Some((name, value)) = header.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            content_length = value.parse::<u64>().ok();
        } else if name.eq_ignore_ascii_case("expect") {
            expects_continue = value.eq_ignore_ascii_case("100-continue");
        }
    }
    if request_line.starts_with("PUT ") || request_line.starts_with("POST ") {
        let mut writer = stream;
        if expects_continue {
            writer.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
        }
        // Hashing costs CPU the bench's upload rows share with the tunnel,
        // so only the soak's checked uploads ask for it.
        let hashed = request_line.split_whitespace().nth(1) == Some("/sha256");
        let (received, hash) = discard(reader.take(content_length.unwrap_or(0)), hashed)?;
        let answer = answer(received, hash);
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
            answer.len()
        );
        writer.write_all(response.as_bytes())?;
        return writer.flush();
    }
    let mut writer = stream;
    let length = request_line
        .split_whitespace()
        .nth(1)
        .and_then(|path| path.trim_start_matches('/').parse::<usize>().ok());
    let Some(length) = length else {
        writer.write_all(
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )?;
        return Ok(());
    };
    // One write: `write!` straight to the socket would send the header in
    // pieces, a packet each, through the tunnel being timed.
    let header = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n"
    );
    writer.write_all(header.as_bytes())?;
    // One period of the pattern is 251 bytes; send whole multiples of it,
    // but make no more than the body needs (a latency probe asks for 1).
    let chunk: Vec<u8> = (0..length.min(251 * 256)).map(pattern_byte).collect();
    let mut left = length;
    while left > 0 {
        let n = left.min(chunk.len());
        writer.write_all(&chunk[..n])?;
        left -= n;
    }
    writer.flush()
}

/// Reads `body` to its end and counts it (and hashes it, if `hashed`), in
/// large reads: an upload's target should cost the machine it shares with
/// the tunnel little.
fn discard(mut body: impl Read, hashed: bool) -> io::Result<(u64, Option<[u8; 32]>)> {
    let mut buffer = vec![0u8; 256 * 1024];
    let mut hasher = hashed.then(Sha256::new);
    let mut total = 0;
    loop {
        match body.read(&mut buffer)? {
            0 => return Ok((total, hasher.map(|hasher| hasher.finalize().into()))),
            n => {
                total += n as u64;
                if let Some(hasher) = hasher.as_mut() {
                    hasher.update(&buffer[..n]);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_upload_is_read_whole_and_counted() {
        let target = HttpTarget::start("127.0.0.1:0").unwrap();
        let mut stream = TcpStream::connect(target.addr()).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let body = HttpTarget::body(100_000);
        write!(
            stream,
            "PUT /upload HTTP/1.1\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
            body.len()
        )
        .unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        assert_eq!(line, "HTTP/1.1 100 Continue\r\n");
        stream.write_all(&body).unwrap();
        let mut answer = String::new();
        reader.read_to_string(&mut answer).unwrap();
        assert!(answer.contains("HTTP/1.1 200 OK\r\n"), "{answer}");
        assert!(answer.ends_with("\r\n\r\n100000"), "{answer}");
    }

    #[test]
    fn an_upload_to_sha256_is_answered_with_its_length_and_hash() {
        let target = HttpTarget::start("127.0.0.1:0").unwrap();
        let mut stream = TcpStream::connect(target.addr()).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let body = b"abc";
        write!(stream, "PUT /sha256 HTTP/1.1\r\nContent-Length: 3\r\n\r\n").unwrap();
        stream.write_all(body).unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        // SHA-256("abc"), FIPS 180-2's first example.
        let expected = "3 ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(HttpTarget::upload_answer(body), expected);
        assert!(answer.ends_with(&format!("\r\n\r\n{expected}")), "{answer}");
    }

    fn get(target: &HttpTarget, length: usize) -> (String, Vec<u8>) {
        let mut stream = TcpStream::connect(target.addr()).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        write!(stream, "GET /{length} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut response = Vec::new();
        stream.read_to_end(&mut response).unwrap();
        let split = response
            .windows(4)
            .position(|window| window == b"\r\n\r\n")
            .expect("no end of header")
            + 4;
        let body = response.split_off(split);
        (String::from_utf8(response).unwrap(), body)
    }

    #[test]
    fn a_download_carries_exactly_the_pattern_asked_for() {
        let target = HttpTarget::start("127.0.0.1:0").unwrap();
        // Empty, one byte (a latency probe), and more than one write's worth.
        for length in [0, 1, 251 * 256 * 3 + 17] {
            let (header, body) = get(&target, length);
            assert!(header.starts_with("HTTP/1.1 200 OK\r\n"), "{header}");
            assert!(
                header.contains(&format!("Content-Length: {length}\r\n")),
                "{header}"
            );
            assert!(body == HttpTarget::body(length), "{length} bytes asked");
        }
    }
}
