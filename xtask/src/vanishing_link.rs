//! A network path that can vanish: a TCP relay on loopback whose
//! connections, after [`VanishingLink::vanish`], go silent both ways — no
//! FIN, no RST, nothing delivered or read — as when a laptop changes
//! networks or a NAT forgets its mapping. Connections made afterwards pass
//! as usual, as a new network would carry them.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::{Result, XtaskError};

/// How often a relay thread looks at the flags while its socket is quiet.
const TICK: Duration = Duration::from_millis(50);

/// A running relay to one upstream address; stopped (its connections
/// closed) when dropped.
#[derive(Debug)]
pub struct VanishingLink {
    addr: SocketAddr,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Debug, Default)]
struct Shared {
    stopping: AtomicBool,
    /// Bumped by each vanishing: connections of an older generation are
    /// silent.
    generation: AtomicUsize,
}

impl VanishingLink {
    /// Listens on a free loopback port and relays every connection to
    /// `upstream`.
    pub fn start(upstream: SocketAddr) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .map_err(XtaskError::io("binding the vanishing link"))?;
        let addr = listener
            .local_addr()
            .map_err(XtaskError::io("reading the vanishing link's address"))?;
        let shared = Arc::new(Shared::default());
        let accepting = shared.clone();
        let thread = std::thread::spawn(move || {
            for inbound in listener.incoming() {
                if accepting.stopping.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(inbound) = inbound else { continue };
                let Ok(outbound) = TcpStream::connect(upstream) else {
                    continue;
                };
                let born = accepting.generation.load(Ordering::SeqCst);
                let _ = relay(inbound, outbound, born, &accepting);
            }
        });
        Ok(Self {
            addr,
            shared,
            thread: Some(thread),
        })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Makes every connection relayed so far go silent, for good.
    pub fn vanish(&self) {
        self.shared.generation.fetch_add(1, Ordering::SeqCst);
    }
}

impl Drop for VanishingLink {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn relay(a: TcpStream, b: TcpStream, born: usize, shared: &Arc<Shared>) -> std::io::Result<()> {
    for stream in [&a, &b] {
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(TICK))?;
    }
    let (a2, b2) = (a.try_clone()?, b.try_clone()?);
    let one = shared.clone();
    std::thread::spawn(move || pump(a, b, born, &one));
    let other = shared.clone();
    std::thread::spawn(move || pump(b2, a2, born, &other));
    Ok(())
}

/// Copies `from` to `to` until either ends; once the link vanished it
/// neither reads nor writes (what it was reading is dropped), and holds
/// both open until the relay stops.
fn pump(mut from: TcpStream, mut to: TcpStream, born: usize, shared: &Shared) {
    let mut buffer = vec![0u8; 64 * 1024];
    while !shared.stopping.load(Ordering::SeqCst) {
        if shared.generation.load(Ordering::SeqCst) != born {
            std::thread::sleep(TICK);
            continue;
        }
        match from.read(&mut buffer) {
            Ok(0) => break,
            // Read just as the link vanished: lost with it.
            Ok(_) if shared.generation.load(Ordering::SeqCst) != born => {}
            Ok(n) => {
                if to.write_all(&buffer[..n]).is_err() {
                    break;
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_pass_until_the_link_vanishes_and_new_ones_pass_after() {
        let echo = TcpListener::bind("127.0.0.1:0").unwrap();
        let upstream = echo.local_addr().unwrap();
        std::thread::spawn(move || {
            for stream in echo.incoming() {
                let Ok(mut stream) = stream else { continue };
                std::thread::spawn(move || {
                    let mut buffer = [0u8; 4096];
                    while let Ok(n) = stream.read(&mut buffer) {
                        if n == 0 || stream.write_all(&buffer[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        let link = VanishingLink::start(upstream).unwrap();
        let echoes = |stream: &mut TcpStream| {
            stream
                .set_read_timeout(Some(Duration::from_millis(500)))
                .unwrap();
            stream.write_all(b"ping").unwrap();
            let mut answer = [0u8; 4];
            stream.read_exact(&mut answer).is_ok() && &answer == b"ping"
        };
        let mut old = TcpStream::connect(link.addr()).unwrap();
        assert!(echoes(&mut old));

        link.vanish();
        assert!(
            !echoes(&mut old),
            "a vanished connection still carried bytes"
        );
        let mut new = TcpStream::connect(link.addr()).unwrap();
        assert!(echoes(&mut new));
    }
}
