//! A minimal HTTP/1.1 server to tunnel to: `GET /<n>` answers with `n`
//! bytes of a fixed pattern ([`HttpTarget::body`]), so any size can be
//! served without holding it in memory and checked by hash.

use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

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
    // Skip the headers.
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header == "\r\n" || header == "\n" {
            break;
        }
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
    write!(
        writer,
        "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n"
    )?;
    // One period of the pattern is 251 bytes; send whole multiples of it.
    let chunk: Vec<u8> = (0..251 * 256).map(pattern_byte).collect();
    let mut left = length;
    while left > 0 {
        let n = left.min(chunk.len());
        writer.write_all(&chunk[..n])?;
        left -= n;
    }
    writer.flush()
}
