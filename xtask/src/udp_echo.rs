//! A UDP echo server on loopback, for the UDP tests and the bench.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

/// A UDP echo server on loopback; stopped when dropped.
#[derive(Debug)]
pub struct UdpEcho {
    addr: SocketAddr,
    stopping: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl UdpEcho {
    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Echoes on a free port of 127.0.0.1.
    pub fn start() -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = socket.local_addr().unwrap();
        let stopping = Arc::new(AtomicBool::new(false));
        let flag = stopping.clone();
        let thread = std::thread::spawn(move || {
            let mut buffer = vec![0u8; 65_536];
            while let Ok((len, from)) = socket.recv_from(&mut buffer) {
                if flag.load(Ordering::SeqCst) {
                    return;
                }
                let _ = socket.send_to(&buffer[..len], from);
            }
        });
        Self {
            addr,
            stopping,
            thread: Some(thread),
        }
    }
}

impl Drop for UdpEcho {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        if let Ok(waker) = UdpSocket::bind("127.0.0.1:0") {
            let _ = waker.send_to(b"stop", self.addr);
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
