//! Relaying bytes both ways between two streams, with correct half-close.
//!
//! Each direction copies through its own buffer, which starts small
//! ([`INITIAL_BUFFER`]), doubles while reads fill it (up to
//! [`MAX_BUFFER`]) and is given back while the direction waits after
//! small traffic: an idle tunnel holds no buffer, a bulk one 128 KiB per
//! direction. With a fixed 128 KiB per direction, idle tunnels through one
//! client cost it ~119 KiB each (`cargo xtask bench --scale-only`).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What a direction starts with: a keystroke, a request, a short answer fit.
const INITIAL_BUFFER: usize = 4 * 1024;

/// What a direction grows to. Larger reads mean fewer syscalls and fewer,
/// larger SSH channel messages. Measured with `cargo xtask bench` (one
/// stream through SSH on loopback): 64 KiB → ~850 MiB/s at 1.70 CPU-s/GiB,
/// 128 KiB → ~1100 MiB/s at 1.31 CPU-s/GiB, 256 KiB no better.
const MAX_BUFFER: usize = 128 * 1024;

/// A read this much smaller than the buffer counts as small traffic.
const SMALL_READ_RATIO: usize = 16;

/// Copies bytes both ways between `a` and `b` until both directions end.
///
/// Half-close is honoured: when one side reaches EOF, the other side's
/// write half is shut down (for an SSH channel that sends EOF) while the
/// opposite direction keeps flowing. Returns the bytes copied a→b and b→a;
/// callers must not log them.
pub async fn relay<A, B>(a: &mut A, b: &mut B) -> io::Result<(u64, u64)>
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let mut a_to_b = Direction::Copying(Copy::default());
    let mut b_to_a = Direction::Copying(Copy::default());
    std::future::poll_fn(|cx| {
        let forward = a_to_b.poll(cx, &mut *a, &mut *b)?;
        let backward = b_to_a.poll(cx, &mut *b, &mut *a)?;
        match (forward, backward) {
            (Poll::Ready(forward), Poll::Ready(backward)) => Poll::Ready(Ok((forward, backward))),
            _ => Poll::Pending,
        }
    })
    .await
}

/// One direction of a relay.
enum Direction {
    Copying(Copy),
    /// The reader ended and everything was written: shutting the writer.
    ShuttingDown(u64),
    Done(u64),
}

impl Direction {
    fn poll<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        reader: &mut R,
        writer: &mut W,
    ) -> Poll<io::Result<u64>>
    where
        R: AsyncRead + Unpin + ?Sized,
        W: AsyncWrite + Unpin + ?Sized,
    {
        loop {
            match self {
                Direction::Copying(copy) => {
                    let copied = ready!(copy.poll(cx, reader, writer))?;
                    *self = Direction::ShuttingDown(copied);
                }
                Direction::ShuttingDown(copied) => {
                    ready!(Pin::new(&mut *writer).poll_shutdown(cx))?;
                    *self = Direction::Done(*copied);
                }
                Direction::Done(copied) => return Poll::Ready(Ok(*copied)),
            }
        }
    }
}

/// Copies one reader to one writer through a buffer that adapts its size.
#[derive(Default)]
struct Copy {
    /// Allocated on the first read.
    buffer: Vec<u8>,
    /// Bytes of `buffer` read and not yet all written: `start..end`.
    start: usize,
    end: usize,
    /// The size of the last read.
    last_read: usize,
    reader_done: bool,
    /// Something was written since the writer was last flushed.
    unflushed: bool,
    copied: u64,
}

impl Copy {
    fn poll<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        reader: &mut R,
        writer: &mut W,
    ) -> Poll<io::Result<u64>>
    where
        R: AsyncRead + Unpin + ?Sized,
        W: AsyncWrite + Unpin + ?Sized,
    {
        loop {
            if self.start == self.end && !self.reader_done {
                self.start = 0;
                self.end = 0;
                self.fit_buffer();
                let mut read = ReadBuf::new(&mut self.buffer);
                match Pin::new(&mut *reader).poll_read(cx, &mut read) {
                    Poll::Ready(result) => result?,
                    Poll::Pending => {
                        // Nothing more to read for now: what was written must
                        // not sit in the writer's buffer meanwhile.
                        if self.unflushed {
                            ready!(Pin::new(&mut *writer).poll_flush(cx))?;
                            self.unflushed = false;
                        }
                        self.shrink_if_quiet();
                        return Poll::Pending;
                    }
                }
                let n = read.filled().len();
                self.last_read = n;
                if n == 0 {
                    self.reader_done = true;
                } else {
                    self.end = n;
                }
            }
            while self.start < self.end {
                let written = ready!(
                    Pin::new(&mut *writer).poll_write(cx, &self.buffer[self.start..self.end])
                )?;
                if written == 0 {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        "the other side accepted no more bytes",
                    )));
                }
                self.start += written;
                self.copied += written as u64;
                self.unflushed = true;
            }
            if self.reader_done {
                ready!(Pin::new(&mut *writer).poll_flush(cx))?;
                self.unflushed = false;
                return Poll::Ready(Ok(self.copied));
            }
        }
    }

    /// Allocates the buffer on first use, and doubles it after a read
    /// that filled it.
    fn fit_buffer(&mut self) {
        if self.buffer.is_empty() {
            self.buffer = vec![0; INITIAL_BUFFER];
        } else if self.last_read == self.buffer.len() && self.buffer.len() < MAX_BUFFER {
            self.buffer = vec![0; (self.buffer.len() * 2).min(MAX_BUFFER)];
        }
    }

    /// Waiting with nothing buffered after a small read (or none): give
    /// the buffer back, so an idle tunnel holds none and one that once
    /// carried bulk idles small. Bulk keeps its buffer: its last read was
    /// large. (Allocating 4 KiB again costs far less than the read.)
    fn shrink_if_quiet(&mut self) {
        if self.last_read < self.buffer.len() / SMALL_READ_RATIO {
            self.buffer = Vec::new();
        }
    }

    #[cfg(test)]
    fn buffer_len(&self) -> usize {
        self.buffer.len()
    }
}

/// [`relay`] until both directions end or `stop` completes, whichever is
/// first: how every tunnelled connection is carried (a server channel to
/// its target, a remote forward, a client's forwarded channel). An error
/// ends only this connection, so it is logged at debug level — without
/// the peers, which are private — and not returned.
pub async fn relay_until<A, B>(a: &mut A, b: &mut B, stop: impl Future<Output = ()>)
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    tokio::select! {
        result = relay(a, b) => {
            if let Err(error) = result {
                tracing::debug!(%error, "relayed connection ended with an error");
            }
        }
        () = stop => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

    #[tokio::test]
    async fn eof_in_one_direction_keeps_the_other_flowing() {
        // client <-> (relay) <-> server, each link an in-memory pipe.
        let (mut client, mut relay_left) = duplex(1024);
        let (mut relay_right, mut server) = duplex(1024);
        let relay_task =
            tokio::spawn(async move { relay(&mut relay_left, &mut relay_right).await });

        // The client sends a request and closes its sending side...
        client.write_all(b"request").await.unwrap();
        client.shutdown().await.unwrap();

        // ...the server sees the request followed by EOF...
        let mut request = Vec::new();
        server.read_to_end(&mut request).await.unwrap();
        assert_eq!(request, b"request");

        // ...and can still answer at length afterwards.
        // (Written and read concurrently: the answer is larger than the pipes.)
        let answer = vec![7u8; 100_000];
        let send = async {
            server.write_all(&answer).await.unwrap();
            server.shutdown().await.unwrap();
        };
        let mut received = Vec::new();
        let receive = client.read_to_end(&mut received);
        let finished = tokio::time::timeout(Duration::from_secs(10), async {
            tokio::join!(send, receive)
        });
        finished.await.expect("relay stalled").1.unwrap();
        assert_eq!(received, answer);

        let (up, down) = relay_task.await.unwrap().unwrap();
        assert_eq!((up, down), (7, 100_000));
    }

    /// Drives one direction until it finishes or waits.
    async fn step<R, W>(copy: &mut Copy, reader: &mut R, writer: &mut W) -> Poll<io::Result<u64>>
    where
        R: AsyncRead + Unpin + ?Sized,
        W: AsyncWrite + Unpin + ?Sized,
    {
        std::future::poll_fn(|cx| Poll::Ready(copy.poll(cx, reader, writer))).await
    }

    #[tokio::test]
    async fn bulk_grows_the_buffer_to_the_maximum_and_copies_every_byte() {
        let data: Vec<u8> = (0..3 * MAX_BUFFER).map(|i| (i % 251) as u8).collect();
        let mut copy = Copy::default();
        let mut out = Vec::new();
        let copied = step(&mut copy, &mut data.as_slice(), &mut out).await;
        assert!(matches!(copied, Poll::Ready(Ok(n)) if n == data.len() as u64));
        assert_eq!(out, data);
        assert_eq!(copy.buffer_len(), MAX_BUFFER);
    }

    #[tokio::test]
    async fn an_idle_direction_holds_no_buffer_and_a_quiet_one_gives_its_back() {
        let (mut writer_side, mut reader) = duplex(4 * MAX_BUFFER);
        let mut copy = Copy::default();
        let mut out = Vec::new();

        // Nothing to read yet: waiting costs no buffer.
        assert!(step(&mut copy, &mut reader, &mut out).await.is_pending());
        assert_eq!(copy.buffer_len(), 0);

        // Bulk grows it, doubling from 4 KiB while reads fill it; after a
        // full read the buffer stays while the direction waits.
        let bulk = 2 * MAX_BUFFER - INITIAL_BUFFER;
        writer_side.write_all(&vec![1u8; bulk]).await.unwrap();
        assert!(step(&mut copy, &mut reader, &mut out).await.is_pending());
        assert_eq!(out.len(), bulk);
        assert_eq!(copy.buffer_len(), MAX_BUFFER);

        // A keystroke, then quiet: the buffer is given back.
        writer_side.write_all(b"k").await.unwrap();
        assert!(step(&mut copy, &mut reader, &mut out).await.is_pending());
        assert_eq!(out.len(), bulk + 1);
        assert_eq!(copy.buffer_len(), 0);

        // And it ends cleanly with every byte counted.
        drop(writer_side);
        let copied = step(&mut copy, &mut reader, &mut out).await;
        assert!(matches!(copied, Poll::Ready(Ok(n)) if n == bulk as u64 + 1));
    }

    #[tokio::test]
    async fn a_writer_that_takes_nothing_is_an_error_not_a_spin() {
        let mut full = [0u8; 4];
        let mut writer = std::io::Cursor::new(&mut full[..]);
        let mut copy = Copy::default();
        let copied = step(&mut copy, &mut &b"more than four bytes"[..], &mut writer).await;
        assert!(
            matches!(copied, Poll::Ready(Err(ref e)) if e.kind() == io::ErrorKind::WriteZero),
            "{copied:?}"
        );
    }

    #[tokio::test]
    async fn relay_until_stops_when_told_even_if_both_sides_are_silent() {
        let (_client, mut left) = duplex(64);
        let (mut right, _server) = duplex(64);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let relaying = tokio::spawn(async move {
            relay_until(&mut left, &mut right, async {
                let _ = stopped.await;
            })
            .await;
        });
        stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), relaying)
            .await
            .expect("relay_until ignored its stop")
            .unwrap();
    }
}
