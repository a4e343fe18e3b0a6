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
//!
//! Optionally the relay loses datagrams toward the client in one burst
//! ([`LossBurst`]): every other one, as a bottleneck's queue does when a
//! slow start overshoots it — the pattern that leaves a receiver the most
//! gaps to hold.

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

/// Every other datagram toward the client dropped for `lasting`, starting
/// at the datagram after the first `after`. A burst bounded in time, not in
/// datagrams, as a queue overflows: a sender that slows down does not
/// stretch it.
#[derive(Clone, Copy, Debug)]
pub struct LossBurst {
    /// Datagrams passed on before the burst.
    pub after: u64,
    /// How long the burst lasts.
    pub lasting: Duration,
}

/// Where a relay direction is in its [`LossBurst`].
#[derive(Debug)]
struct LossState {
    burst: LossBurst,
    seen: u64,
    started: Option<Instant>,
}

impl LossState {
    fn new(burst: LossBurst) -> Self {
        Self {
            burst,
            seen: 0,
            started: None,
        }
    }

    /// Whether the next datagram, arriving at `now`, is lost.
    fn drops_next(&mut self, now: Instant) -> bool {
        let index = self.seen;
        self.seen += 1;
        let Some(into) = index.checked_sub(self.burst.after) else {
            return false;
        };
        let started = *self.started.get_or_insert(now);
        now.duration_since(started) < self.burst.lasting && into % 2 == 1
    }
}

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
        Self::start_with_loss(upstream, one_way, None)
    }

    /// As [`UdpDelayProxy::start`], losing datagrams toward the client in
    /// `loss`, if given.
    pub fn start_with_loss(
        upstream: SocketAddr,
        one_way: Duration,
        loss: Option<LossBurst>,
    ) -> Result<Self> {
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
                ReadRole::FromClient(client.clone()),
            ),
            write_side(
                clone(&back)?,
                toward_upstream.1,
                Destination::Fixed(upstream),
            ),
            read_side(
                clone(&back)?,
                toward_client.0,
                one_way,
                &stopping,
                ReadRole::ToClient(loss.map(LossState::new)),
            ),
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

/// What a reader does besides passing datagrams on.
enum ReadRole {
    /// Notes the client that sent last, for the other direction's writer.
    FromClient(Arc<Mutex<Option<SocketAddr>>>),
    /// Loses datagrams in a burst, if any.
    ToClient(Option<LossState>),
}

fn read_side(
    socket: UdpSocket,
    datagrams: Sender<(Instant, Vec<u8>)>,
    delay: Duration,
    stopping: &Arc<AtomicBool>,
    mut role: ReadRole,
) -> JoinHandle<()> {
    let stopping = stopping.clone();
    std::thread::spawn(move || {
        let mut buffer = vec![0u8; 65_536];
        while !stopping.load(Ordering::SeqCst) {
            let Ok((n, from)) = socket.recv_from(&mut buffer) else {
                continue; // the stop poll's timeout, or a transient error
            };
            match &mut role {
                ReadRole::FromClient(client) => {
                    *client.lock().unwrap_or_else(PoisonError::into_inner) = Some(from);
                }
                ReadRole::ToClient(loss) => {
                    if loss
                        .as_mut()
                        .is_some_and(|loss| loss.drops_next(Instant::now()))
                    {
                        continue;
                    }
                }
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

    /// An IPv6 loopback UDP echo; its address.
    fn echo() -> SocketAddr {
        let echo = UdpSocket::bind("[::1]:0").unwrap();
        let upstream = echo.local_addr().unwrap();
        std::thread::spawn(move || {
            let mut buffer = [0u8; 2048];
            while let Ok((n, from)) = echo.recv_from(&mut buffer) {
                let _ = echo.send_to(&buffer[..n], from);
            }
        });
        upstream
    }

    #[test]
    fn datagrams_cross_both_ways_and_a_round_trip_takes_twice_the_delay() {
        let upstream = echo();
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

    #[test]
    fn a_loss_burst_drops_every_other_datagram_while_it_lasts() {
        let mut loss = LossState::new(LossBurst {
            after: 2,
            lasting: Duration::from_millis(100),
        });
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let lost: Vec<bool> = [0, 1, 10, 20, 30, 40, 50, 120, 130, 140]
            .into_iter()
            .map(|ms| loss.drops_next(at(ms)))
            .collect();
        // The burst starts at the third datagram (10 ms) and ends at 110 ms.
        let expected = [
            false, false, false, true, false, true, false, false, false, false,
        ];
        assert_eq!(lost, expected);
    }

    #[test]
    fn the_relay_loses_only_toward_the_client() {
        let loss = LossBurst {
            after: 2,
            lasting: Duration::from_secs(60),
        };
        let proxy =
            UdpDelayProxy::start_with_loss(echo(), Duration::from_millis(1), Some(loss)).unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let mut echoed = Vec::new();
        for index in 0..6u8 {
            client.send_to(&[index], proxy.addr()).unwrap();
            let mut back = [0u8; 16];
            if let Ok((1, _)) = client.recv_from(&mut back) {
                echoed.push(back[0]);
            }
        }
        // Every datagram reached the echo (its count goes on); every
        // other echo after the second was lost on the way back.
        assert_eq!(echoed, [0, 1, 2, 4]);
    }
}
