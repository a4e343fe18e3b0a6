//! The long-distance link for QUIC: a UDP relay on loopback that holds
//! every datagram for a fixed one-way delay in each direction (kernel
//! `netem` is not available on the machines this runs on).
//!
//! Clients send to [`UdpDelayProxy::addr`]; the relay sends on to the
//! upstream from a socket of its own, and the upstream's datagrams back to
//! the client that sent last. Each direction is a reader thread stamping
//! datagrams with the time they may leave and a writer thread that waits
//! for that time. The upstream may be IPv6 while clients use IPv4, so that
//! an iroh client bound to IPv4 cannot find a direct path around the relay.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use socket2::SockRef;

use crate::{Result, XtaskError};

/// Socket buffers large enough that a burst of a fast sender waits in the
/// kernel rather than being dropped before the reader thread runs.
const SOCKET_BUFFER: usize = 32 * 1024 * 1024;

/// How often an idle reader looks whether the relay is stopping.
const STOP_POLL: Duration = Duration::from_millis(100);

/// A running UDP delay relay to one upstream address; stopped when dropped.
#[derive(Debug)]
pub struct UdpDelayProxy {
    addr: SocketAddr,
    stopping: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl UdpDelayProxy {
    /// Listens on a free IPv4 loopback port and relays to `upstream`, each
    /// datagram arriving `one_way` later than it was sent, both ways.
    pub fn start(upstream: SocketAddr, one_way: Duration) -> Result<Self> {
        let front = bound_socket("127.0.0.1:0".parse().expect("a loopback address"))?;
        let back_local = if upstream.is_ipv4() {
            "127.0.0.1:0"
        } else {
            "[::1]:0"
        };
        let back = bound_socket(back_local.parse().expect("a loopback address"))?;
        let addr = front
            .local_addr()
            .map_err(XtaskError::io("reading the UDP delay proxy's address"))?;
        let stopping = Arc::new(AtomicBool::new(false));
        let client = Arc::new(Mutex::new(None::<SocketAddr>));
        let clone = |socket: &UdpSocket| {
            socket
                .try_clone()
                .map_err(XtaskError::io("sharing the UDP delay proxy's socket"))
        };
        let (toward_upstream, toward_client) = (channel(), channel());
        let threads = vec![
            read_side(
                clone(&front)?,
                toward_upstream.0,
                one_way,
                &stopping,
                Some(client.clone()),
            ),
            write_side(
                clone(&back)?,
                toward_upstream.1,
                Destination::Fixed(upstream),
            ),
            read_side(clone(&back)?, toward_client.0, one_way, &stopping, None),
            write_side(front, toward_client.1, Destination::LatestClient(client)),
        ];
        Ok(Self {
            addr,
            stopping,
            threads,
        })
    }

    /// Where clients send.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for UdpDelayProxy {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

fn bound_socket(addr: SocketAddr) -> Result<UdpSocket> {
    let socket = UdpSocket::bind(addr).map_err(XtaskError::io("binding the UDP delay proxy"))?;
    let sock = SockRef::from(&socket);
    // Best effort: the kernel caps these at its own maximum.
    let _ = sock.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = sock.set_send_buffer_size(SOCKET_BUFFER);
    socket
        .set_read_timeout(Some(STOP_POLL))
        .map_err(XtaskError::io("setting the UDP delay proxy's timeout"))?;
    Ok(socket)
}

enum Destination {
    Fixed(SocketAddr),
    /// The client that sent last (noted by the other direction's reader).
    LatestClient(Arc<Mutex<Option<SocketAddr>>>),
}

fn read_side(
    socket: UdpSocket,
    datagrams: Sender<(Instant, Vec<u8>)>,
    delay: Duration,
    stopping: &Arc<AtomicBool>,
    note_sender: Option<Arc<Mutex<Option<SocketAddr>>>>,
) -> JoinHandle<()> {
    let stopping = stopping.clone();
    std::thread::spawn(move || {
        let mut buffer = vec![0u8; 65_536];
        while !stopping.load(Ordering::SeqCst) {
            let Ok((n, from)) = socket.recv_from(&mut buffer) else {
                continue; // the stop poll's timeout, or a transient error
            };
            if let Some(client) = &note_sender {
                *client.lock().unwrap_or_else(PoisonError::into_inner) = Some(from);
            }
            if datagrams
                .send((Instant::now() + delay, buffer[..n].to_vec()))
                .is_err()
            {
                break;
            }
        }
        // Dropping the sender ends the writer.
    })
}

fn write_side(
    socket: UdpSocket,
    datagrams: Receiver<(Instant, Vec<u8>)>,
    destination: Destination,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        while let Ok((due, datagram)) = datagrams.recv() {
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            let to = match &destination {
                Destination::Fixed(addr) => Some(*addr),
                Destination::LatestClient(client) => {
                    *client.lock().unwrap_or_else(PoisonError::into_inner)
                }
            };
            if let Some(to) = to {
                // A full buffer drops the datagram, as a congested link would.
                let _ = socket.send_to(&datagram, to);
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagrams_cross_both_ways_and_a_round_trip_takes_twice_the_delay() {
        let echo = UdpSocket::bind("[::1]:0").unwrap();
        let upstream = echo.local_addr().unwrap();
        std::thread::spawn(move || {
            let mut buffer = [0u8; 2048];
            while let Ok((n, from)) = echo.recv_from(&mut buffer) {
                let _ = echo.send_to(&buffer[..n], from);
            }
        });
        let delay = Duration::from_millis(40);
        let proxy = UdpDelayProxy::start(upstream, delay).unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        for round in 0..3u8 {
            let message = [round; 1200];
            let started = Instant::now();
            client.send_to(&message, proxy.addr()).unwrap();
            let mut back = [0u8; 2048];
            let (n, from) = client.recv_from(&mut back).unwrap();
            assert!(started.elapsed() >= delay * 2, "{:?}", started.elapsed());
            assert_eq!(from, proxy.addr());
            assert_eq!(&back[..n], &message[..]);
        }
    }
}
