//! A long-distance link on loopback: a TCP relay that holds every chunk
//! for a fixed one-way delay in each direction (kernel `netem` is not
//! available on the machines this runs on). Both ends of a tunnel — alknet
//! or OpenSSH — connect through it alike.
//!
//! Each direction is a reader thread stamping chunks with the time they
//! may leave and a writer thread that waits for that time; the queue
//! between them is bounded, so a stalled receiver stalls the sender as a
//! full path would.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::{Result, XtaskError};

/// Chunks in flight per direction at most (each up to [`CHUNK`] bytes):
/// 8192 × 64 KiB = 512 MiB, beyond any bandwidth-delay product measured
/// here, so the queue never limits throughput before the tunnel does.
const QUEUE_CHUNKS: usize = 8192;
const CHUNK: usize = 64 * 1024;

/// A running delay relay to one upstream address; stopped when dropped.
#[derive(Debug)]
pub struct DelayProxy {
    addr: SocketAddr,
    stopping: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl DelayProxy {
    /// Listens on a free loopback port and relays every connection to
    /// `upstream`, each byte arriving `one_way` later than it was sent, in
    /// both directions (round trip: twice that).
    pub fn start(upstream: SocketAddr, one_way: Duration) -> Result<Self> {
        let listener =
            TcpListener::bind("127.0.0.1:0").map_err(XtaskError::io("binding the delay proxy"))?;
        let addr = listener
            .local_addr()
            .map_err(XtaskError::io("reading the delay proxy's address"))?;
        let stopping = Arc::new(AtomicBool::new(false));
        let flag = stopping.clone();
        let thread = std::thread::spawn(move || {
            for inbound in listener.incoming() {
                if flag.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(inbound) = inbound else { continue };
                let Ok(outbound) = TcpStream::connect(upstream) else {
                    continue;
                };
                let _ = relay(inbound, outbound, one_way);
            }
        });
        Ok(Self {
            addr,
            stopping,
            thread: Some(thread),
        })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for DelayProxy {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn relay(a: TcpStream, b: TcpStream, delay: Duration) -> std::io::Result<()> {
    for stream in [&a, &b] {
        stream.set_nodelay(true)?;
    }
    one_direction(a.try_clone()?, b.try_clone()?, delay);
    one_direction(b, a, delay);
    Ok(())
}

fn one_direction(from: TcpStream, to: TcpStream, delay: Duration) {
    let (chunks, queue) = sync_channel::<(Instant, Vec<u8>)>(QUEUE_CHUNKS);
    std::thread::spawn(move || read_side(from, &chunks, delay));
    std::thread::spawn(move || write_side(to, &queue));
}

fn read_side(mut from: TcpStream, chunks: &SyncSender<(Instant, Vec<u8>)>, delay: Duration) {
    let mut buffer = vec![0u8; CHUNK];
    loop {
        match from.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if chunks
                    .send((Instant::now() + delay, buffer[..n].to_vec()))
                    .is_err()
                {
                    break;
                }
            }
        }
    }
    // Dropping the sender tells the writer: the end, after the delay.
}

fn write_side(mut to: TcpStream, queue: &Receiver<(Instant, Vec<u8>)>) {
    while let Ok((due, chunk)) = queue.recv() {
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        if to.write_all(&chunk).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_arrive_whole_and_a_round_trip_takes_twice_the_delay() {
        let echo = TcpListener::bind("127.0.0.1:0").unwrap();
        let upstream = echo.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut stream, _) = echo.accept().unwrap();
            let mut buffer = [0u8; 4096];
            while let Ok(n) = stream.read(&mut buffer) {
                if n == 0 || stream.write_all(&buffer[..n]).is_err() {
                    break;
                }
            }
        });
        let delay = Duration::from_millis(40);
        let proxy = DelayProxy::start(upstream, delay).unwrap();
        let mut client = TcpStream::connect(proxy.addr()).unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let message: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let started = Instant::now();
        client.write_all(&message).unwrap();
        let mut back = vec![0u8; message.len()];
        client.read_exact(&mut back).unwrap();
        assert!(started.elapsed() >= delay * 2, "{:?}", started.elapsed());
        assert!(back == message, "the echo differs");
    }
}
