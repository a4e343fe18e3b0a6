//! Inbound flow control for one SSH session, around russh.
//!
//! russh grants a channel more window as soon as data *arrives*, not once
//! it is consumed, and then queues the data for the channel's reader; when
//! a reader falls behind, the only brake left is that queue, and a full
//! queue stops the whole session loop — its reading and its writing. With
//! a target that couples both directions (an echo, rsync, a database) the
//! loop then waits for a reader that waits for a write the loop cannot
//! send: the session deadlocks (256 MiB through an echo did, before this).
//!
//! So the queue is made large enough never to fill (`CHANNEL_QUEUE` in
//! `tuning.rs`), and a [`Backlog`] counts what arrived on every channel of
//! a session and what its readers took ([`TunnelStream`]). Over the soft
//! mark (8 MiB) the session slows its peer:
//!
//! - a server stops granting window (russh's `adjust_window` hook; see
//!   [`Backlog::next_window`]) and never stops reading, so the peer's own
//!   window adjustments always reach it: the peer runs out of window after
//!   at most one window per channel, as with OpenSSH;
//! - a client cannot (russh's client ignores that hook), so its
//!   [`GatedStream`] pauses reading from the transport while it is over
//!   the soft mark — unless one of its channels' writers is waiting: that
//!   writer may wait for the server's window adjustment, which sits behind
//!   the server's data (an echo's reply does), so the client reads on.
//!
//! A paused reader still lets one read through every 5 s, so that the
//! peer's keepalives are answered; past [`SESSION_BACKLOG_MAX`] that is
//! all either side reads.
//!
//! One more trap: each turn of russh's session loop writes *all* its
//! pending output before it reads again. When both peers have full socket
//! buffers in both directions (bulk both ways), both wait to write and
//! neither reads. So the transport's writes go through a [`WriteBehind`]:
//! queued (up to [`WRITE_BEHIND`] bytes) and written out whenever the loop
//! polls the transport, reading included.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use russh::{Channel, ChannelId, ChannelMsg, ChannelReadHalf};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::tuning::{SESSION_BACKLOG_MAX, SESSION_BACKLOG_SOFT, TRICKLE_WINDOW, WINDOW_SIZE};

/// What one queued message costs besides its bytes (the message, its
/// `Bytes` handle, its queue slot): counted too, so a peer sending
/// one-byte packets cannot make a small backlog cost much memory.
const MESSAGE_OVERHEAD: usize = 128;

/// How often a session over the maximum still reads: often enough that
/// its peer's keepalives keep it alive.
const LEAK_INTERVAL: Duration = Duration::from_secs(5);

/// How long a channel writer of a paused client may wait before the
/// client reads on: longer than waiting for its turn at the session takes.
const WRITER_PATIENCE: Duration = Duration::from_millis(20);

/// Output queued below this counts as sent (see
/// [`Backlog::writers_need_reading`]).
const OUTBOUND_SENT: usize = 256 * 1024;

/// Bytes a session may have queued for its transport before its writes
/// wait: more than the peer's windows normally let it send ahead.
pub(crate) const WRITE_BEHIND: usize = 64 * 1024 * 1024;

/// Bytes received for one session's channels and not yet read by them.
#[derive(Clone, Debug, Default)]
pub(crate) struct Backlog {
    inner: Arc<BacklogInner>,
}

#[derive(Debug, Default)]
struct WaitingWriters {
    count: usize,
    since: Option<Instant>,
}

#[derive(Debug, Default)]
struct BacklogInner {
    waiting: AtomicUsize,
    /// Channel writers waiting now (for window, or for the session), and
    /// since when some have.
    writers: Mutex<WaitingWriters>,
    /// Bytes queued for the transport ([`WriteBehind`]).
    outbound: AtomicUsize,
    /// The gate's reader, to wake once the backlog shrank.
    gate: Mutex<Option<Waker>>,
}

impl Backlog {
    /// A data message of `len` bytes arrived for some channel.
    pub(crate) fn arrived(&self, len: usize) {
        self.inner
            .waiting
            .fetch_add(len + MESSAGE_OVERHEAD, Ordering::AcqRel);
    }

    /// A reader finished with a data message of `len` bytes.
    fn consumed(&self, len: usize) {
        let before = self
            .inner
            .waiting
            .fetch_sub(len + MESSAGE_OVERHEAD, Ordering::AcqRel);
        let after = before.saturating_sub(len + MESSAGE_OVERHEAD);
        if before > SESSION_BACKLOG_SOFT && after <= SESSION_BACKLOG_SOFT {
            self.wake_gate();
        }
    }

    /// The window a server grants next (russh's `adjust_window` hook):
    /// the full window, or a trickle while readers are behind.
    pub(crate) fn next_window(&self) -> u32 {
        if self.waiting_now() > SESSION_BACKLOG_SOFT {
            TRICKLE_WINDOW
        } else {
            WINDOW_SIZE
        }
    }

    fn waiting_now(&self) -> usize {
        self.inner.waiting.load(Ordering::Acquire)
    }

    /// Since when a channel writer has waited for what only reading can
    /// bring, if one does: the session's own output has left (while it is
    /// still queued, the peer has not seen it and has nothing to answer).
    fn writers_waiting_since(&self) -> Option<Instant> {
        if self.inner.outbound.load(Ordering::Acquire) > OUTBOUND_SENT {
            return None;
        }
        self.inner
            .writers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .since
    }

    fn set_outbound(&self, queued: usize) {
        self.inner.outbound.store(queued, Ordering::Release);
    }

    /// A channel writer started waiting: a paused gate must read again.
    /// A channel writer started waiting: a paused gate looks again.
    fn writer_blocked(&self) {
        {
            let mut writers = self
                .inner
                .writers
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            writers.count += 1;
            writers.since.get_or_insert_with(Instant::now);
        }
        self.wake_gate();
    }

    fn writer_unblocked(&self) {
        let mut writers = self
            .inner
            .writers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        writers.count = writers.count.saturating_sub(1);
        if writers.count == 0 {
            writers.since = None;
        }
    }

    fn wake_gate(&self) {
        let waker = self
            .inner
            .gate
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    fn park(&self, waker: &Waker) {
        *self
            .inner
            .gate
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(waker.clone());
    }

    /// Bytes waiting now (with per-message overhead), for tests.
    #[cfg(test)]
    pub(crate) fn waiting(&self) -> usize {
        self.inner.waiting.load(Ordering::Acquire)
    }
}

/// The transport under a session: reads pause while the session's backlog
/// is over its marks (see the module docs); writes pass.
pub(crate) struct GatedStream<S> {
    inner: S,
    backlog: Backlog,
    /// Whether reading pauses over the soft mark (a client's brake).
    pause_over_soft: bool,
    last_read: Instant,
    timer: Option<Pin<Box<Sleep>>>,
}

impl<S> GatedStream<S> {
    /// A server's transport: the window grants are its brake, so reading
    /// pauses only past the maximum.
    pub(crate) fn server(inner: S, backlog: Backlog) -> Self {
        Self::new(inner, backlog, false)
    }

    /// A client's transport: reading pauses over the soft mark while no
    /// channel writer waits.
    pub(crate) fn client(inner: S, backlog: Backlog) -> Self {
        Self::new(inner, backlog, true)
    }

    fn new(inner: S, backlog: Backlog, pause_over_soft: bool) -> Self {
        Self {
            inner,
            backlog,
            pause_over_soft,
            last_read: Instant::now(),
            timer: None,
        }
    }

    /// Whether a read may happen now; if not, a wake-up is arranged.
    fn may_read(&mut self, cx: &mut Context<'_>) -> bool {
        let open = |waiting: usize| {
            waiting <= SESSION_BACKLOG_SOFT
                || (!self.pause_over_soft && waiting <= SESSION_BACKLOG_MAX)
        };
        if open(self.backlog.waiting_now()) {
            // The transport's readiness wakes a reader; no need to park.
            self.timer = None;
            return true;
        }
        // Parked before looking again, so that a change in between still
        // wakes us.
        self.backlog.park(cx.waker());
        let waiting = self.backlog.waiting_now();
        if open(waiting) {
            self.timer = None;
            return true;
        }
        let mut due = self.last_read + LEAK_INTERVAL;
        if waiting <= SESSION_BACKLOG_MAX {
            // A writer that waits a while waits for window, not for its turn.
            if let Some(since) = self.backlog.writers_waiting_since() {
                due = due.min(since + WRITER_PATIENCE);
            }
        }
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
        if timer.deadline() != due {
            timer.as_mut().reset(due);
        }
        if timer.as_mut().poll(cx).is_ready() {
            self.timer = None;
            tracing::trace!("session reads past its backlog limit");
            return true;
        }
        false
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for GatedStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if !this.may_read(cx) {
            return Poll::Pending;
        }
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if polled.is_ready() {
            this.last_read = Instant::now();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for GatedStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// A stream whose writes are queued (up to [`WRITE_BEHIND`] bytes) and
/// written out whenever it is polled — for reading too — so that its user
/// never waits on a full socket buffer while it could be reading.
///
/// All of it runs in the task that polls it: a TLS stream split between
/// two tasks could lose a wake-up when either half drives the other's I/O.
pub(crate) struct WriteBehind<S> {
    inner: S,
    /// Told how much is queued.
    backlog: Backlog,
    queue: VecDeque<Bytes>,
    /// Bytes of the queue's front chunk already written.
    front_written: usize,
    queued: usize,
    /// Whether bytes were written since the last flush of `inner`.
    unflushed: bool,
}

impl<S: AsyncRead + AsyncWrite + Unpin> WriteBehind<S> {
    pub(crate) fn new(inner: S, backlog: Backlog) -> Self {
        Self {
            inner,
            backlog,
            queue: VecDeque::new(),
            front_written: 0,
            queued: 0,
            unflushed: false,
        }
    }

    /// Writes out what is queued until the transport would block; then
    /// flushes it. Ready once nothing is left (or on an error).
    fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = self.write_queued(cx);
        self.backlog.set_outbound(self.queued);
        polled
    }

    fn write_queued(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some(front) = self.queue.front() {
            let rest = &front[self.front_written..];
            match Pin::new(&mut self.inner).poll_write(cx, rest) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => {
                    self.unflushed = true;
                    self.queued -= n;
                    self.front_written += n;
                    if self.front_written == front.len() {
                        self.queue.pop_front();
                        self.front_written = 0;
                    }
                }
                Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                Poll::Pending => {
                    let _ = self.poll_flush_inner(cx)?;
                    return Poll::Pending;
                }
            }
        }
        if self.poll_flush_inner(cx)?.is_pending() {
            return Poll::Pending;
        }
        Poll::Ready(Ok(()))
    }

    fn poll_flush_inner(&mut self, cx: &mut Context<'_>) -> io::Result<Poll<()>> {
        if !self.unflushed {
            return Ok(Poll::Ready(()));
        }
        match Pin::new(&mut self.inner).poll_flush(cx) {
            Poll::Ready(Ok(())) => {
                self.unflushed = false;
                Ok(Poll::Ready(()))
            }
            Poll::Ready(Err(error)) => Err(error),
            Poll::Pending => Ok(Poll::Pending),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WriteBehind<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        // A write error shows up on the next write; reading goes on.
        let _ = self.poll_write_out(cx);
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WriteBehind<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        if let Poll::Ready(Err(error)) = self.poll_write_out(cx) {
            return Poll::Ready(Err(error));
        }
        if self.queued >= WRITE_BEHIND {
            // Still full after writing what the transport took: wait (the
            // transport's readiness wakes us).
            return Poll::Pending;
        }
        if self.queue.is_empty() {
            // The common case: the transport takes it now, with no copy.
            match Pin::new(&mut self.inner).poll_write(cx, data) {
                Poll::Ready(Ok(0)) if !data.is_empty() => {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                Poll::Ready(Ok(n)) => {
                    self.unflushed = true;
                    return Poll::Ready(Ok(n));
                }
                Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                Poll::Pending => {}
            }
        }
        self.queue.push_back(Bytes::copy_from_slice(data));
        self.queued += data.len();
        // The transport just said it is full (and will wake us): the queue
        // is written out on the next poll.
        self.backlog.set_outbound(self.queued);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Queued is as good as written: later polls write it out.
        match self.poll_write_out(cx) {
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            _ => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.poll_write_out(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

type Wait = Pin<Box<dyn Future<Output = (ChannelReadHalf, Option<ChannelMsg>)> + Send>>;

enum Reading {
    Idle(ChannelReadHalf),
    Waiting(Wait),
    /// EOF or close seen; the read half is kept to drain what follows.
    Ended(Option<ChannelReadHalf>),
}

fn wait(mut half: ChannelReadHalf) -> Wait {
    Box::pin(async move {
        let message = half.wait().await;
        (half, message)
    })
}

/// One channel as a byte stream whose reads are counted against the
/// session's backlog. Shutting down its write side sends EOF; dropping it
/// closes the channel, and what still arrives is read and counted off the
/// backlog until the channel is gone.
pub(crate) struct TunnelStream {
    reading: Option<Reading>,
    /// The data message being read, and how far.
    current: Option<(Bytes, usize)>,
    writer: Pin<Box<dyn AsyncWrite + Send>>,
    close: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    backlog: Backlog,
    /// Whether this stream's writer is counted as waiting.
    write_blocked: bool,
    runtime: tokio::runtime::Handle,
}

impl TunnelStream {
    /// The stream of `channel`, counted against `backlog`. Needs a tokio
    /// runtime (the draining after drop runs on it).
    pub(crate) fn new<S>(channel: Channel<S>, backlog: Backlog) -> Self
    where
        S: From<(ChannelId, ChannelMsg)> + Send + Sync + 'static,
    {
        let (read, write) = channel.split();
        let writer = Box::pin(write.make_writer());
        let close = Box::pin(async move {
            let _ = write.close().await;
        });
        Self {
            reading: Some(Reading::Idle(read)),
            current: None,
            writer,
            close: Some(close),
            backlog,
            write_blocked: false,
            runtime: tokio::runtime::Handle::current(),
        }
    }
}

impl AsyncRead for TunnelStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if let Some((data, offset)) = &mut this.current {
                let n = (data.len() - *offset).min(buf.remaining());
                buf.put_slice(&data[*offset..*offset + n]);
                *offset += n;
                if *offset == data.len() {
                    let len = data.len();
                    this.current = None;
                    this.backlog.consumed(len);
                }
                return Poll::Ready(Ok(()));
            }
            let waiting = match this.reading.take() {
                Some(Reading::Idle(half)) => wait(half),
                Some(Reading::Waiting(waiting)) => waiting,
                ended @ (Some(Reading::Ended(_)) | None) => {
                    this.reading = ended;
                    return Poll::Ready(Ok(()));
                }
            };
            let mut waiting = waiting;
            match waiting.as_mut().poll(cx) {
                Poll::Pending => {
                    this.reading = Some(Reading::Waiting(waiting));
                    return Poll::Pending;
                }
                Poll::Ready((half, message)) => match message {
                    Some(ChannelMsg::Data { data }) => {
                        this.reading = Some(Reading::Idle(half));
                        if data.is_empty() {
                            this.backlog.consumed(0);
                        } else {
                            this.current = Some((data, 0));
                        }
                    }
                    Some(ChannelMsg::Eof | ChannelMsg::Close) => {
                        this.reading = Some(Reading::Ended(Some(half)));
                    }
                    None => this.reading = Some(Reading::Ended(None)),
                    // Window adjustments, requests and the like.
                    Some(_) => this.reading = Some(Reading::Idle(half)),
                },
            }
        }
    }
}

impl TunnelStream {
    fn set_write_blocked(&mut self, blocked: bool) {
        if blocked != self.write_blocked {
            self.write_blocked = blocked;
            if blocked {
                self.backlog.writer_blocked();
            } else {
                self.backlog.writer_unblocked();
            }
        }
    }
}

impl AsyncWrite for TunnelStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = self.writer.as_mut().poll_write(cx, data);
        self.set_write_blocked(polled.is_pending());
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.writer.as_mut().poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.writer.as_mut().poll_shutdown(cx)
    }
}

impl Drop for TunnelStream {
    fn drop(&mut self) {
        self.set_write_blocked(false);
        if let Some((data, _)) = self.current.take() {
            self.backlog.consumed(data.len());
        }
        let reading = self.reading.take();
        let close = self.close.take();
        let backlog = self.backlog.clone();
        // Close the channel, then read off whatever still comes until
        // russh forgets it, so the backlog counts it as consumed.
        self.runtime.spawn(async move {
            if let Some(close) = close {
                close.await;
            }
            let mut half = match reading {
                Some(Reading::Idle(half) | Reading::Ended(Some(half))) => half,
                Some(Reading::Waiting(waiting)) => {
                    let (half, message) = waiting.await;
                    if let Some(ChannelMsg::Data { data }) = message {
                        backlog.consumed(data.len());
                    }
                    half
                }
                Some(Reading::Ended(None)) | None => return,
            };
            while let Some(message) = half.wait().await {
                if let ChannelMsg::Data { data } = message {
                    backlog.consumed(data.len());
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    /// A client's (or server's) gate over a pipe already holding `data`,
    /// with `waiting` bytes of backlog; the pipe's far end is kept open.
    async fn gate_holding(
        data: &[u8],
        waiting: usize,
        client: bool,
    ) -> (Backlog, DuplexStream, GatedStream<DuplexStream>) {
        let backlog = Backlog::default();
        backlog.arrived(waiting);
        let (mut near, far) = tokio::io::duplex(64);
        let gated = if client {
            GatedStream::client(far, backlog.clone())
        } else {
            GatedStream::server(far, backlog.clone())
        };
        near.write_all(data).await.unwrap();
        (backlog, near, gated)
    }

    /// Reads one byte in a task of its own.
    fn read_one(
        mut gated: GatedStream<DuplexStream>,
    ) -> tokio::task::JoinHandle<io::Result<[u8; 1]>> {
        tokio::spawn(async move {
            let mut byte = [0u8; 1];
            gated.read_exact(&mut byte).await.map(|_| byte)
        })
    }

    /// Asserts (on paused time) that one byte passes only after the leak
    /// interval.
    async fn one_byte_waits_for_the_leak(gated: &mut GatedStream<DuplexStream>, why: &str) {
        let mut byte = [0u8; 1];
        let started = Instant::now();
        gated.read_exact(&mut byte).await.unwrap();
        assert!(started.elapsed() >= LEAK_INTERVAL, "{why}");
    }

    #[tokio::test]
    async fn writes_never_wait_for_a_peer_that_is_not_reading_until_the_cap() {
        // The far end reads nothing; writes of several MiB still complete,
        // so a session can go back to reading.
        let (near, far) = tokio::io::duplex(1024);
        let mut behind = WriteBehind::new(near, Backlog::default());
        let block = vec![7u8; 1024 * 1024];
        for _ in 0..8 {
            tokio::time::timeout(Duration::from_secs(5), behind.write_all(&block))
                .await
                .expect("a write waited on the peer")
                .unwrap();
        }
        // Once the peer reads, everything arrives, in order, and shutdown
        // ends the stream after the last byte.
        let reader = tokio::spawn(async move {
            let mut far = far;
            let mut all = Vec::new();
            far.read_to_end(&mut all).await.unwrap();
            all
        });
        tokio::time::timeout(Duration::from_secs(10), behind.shutdown())
            .await
            .expect("shutdown never finished")
            .unwrap();
        let all = reader.await.unwrap();
        assert_eq!(all.len(), 8 * 1024 * 1024);
        assert!(all.iter().all(|byte| *byte == 7));
    }

    #[tokio::test(start_paused = true)]
    async fn over_the_soft_mark_a_client_reads_only_to_stay_alive() {
        let (backlog, _near, mut gated) = gate_holding(b"ab", SESSION_BACKLOG_SOFT, true).await;
        one_byte_waits_for_the_leak(&mut gated, "a paused client read at once").await;
        // Readers catching up reopens it at once.
        backlog.consumed(0);
        let mut byte = [0u8; 1];
        tokio::time::timeout(Duration::from_millis(1), gated.read_exact(&mut byte))
            .await
            .expect("the gate stayed shut under the soft mark")
            .unwrap();
    }

    #[tokio::test]
    async fn a_waiting_channel_writer_reopens_a_paused_client() {
        // The writer may wait for the server's window adjustment, which
        // comes behind the server's data: reading must go on.
        let (backlog, _near, gated) = gate_holding(b"w", SESSION_BACKLOG_SOFT, true).await;
        let reader = read_one(gated);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!reader.is_finished(), "read over the soft mark");
        backlog.set_outbound(OUTBOUND_SENT + 1);
        backlog.writer_blocked();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            !reader.is_finished(),
            "read while the session's own output was queued"
        );
        // Once it has left, a writer still waiting a while opens it.
        backlog.set_outbound(0);
        backlog.writer_unblocked();
        backlog.writer_blocked();
        let read = tokio::time::timeout(Duration::from_secs(2), reader)
            .await
            .expect("a waiting writer left the gate shut")
            .unwrap()
            .unwrap();
        assert_eq!(&read, b"w");
        backlog.writer_unblocked();
    }

    #[tokio::test]
    async fn a_server_reads_on_over_the_soft_mark_and_grants_a_trickle() {
        assert_eq!(Backlog::default().next_window(), WINDOW_SIZE);
        let (backlog, _near, mut gated) = gate_holding(b"s", SESSION_BACKLOG_SOFT, false).await;
        assert_eq!(backlog.next_window(), TRICKLE_WINDOW);
        let mut byte = [0u8; 1];
        tokio::time::timeout(Duration::from_secs(5), gated.read_exact(&mut byte))
            .await
            .expect("a server paused reading under the maximum")
            .unwrap();
        backlog.consumed(SESSION_BACKLOG_SOFT - MESSAGE_OVERHEAD);
        assert_eq!(backlog.next_window(), WINDOW_SIZE);
    }

    #[tokio::test]
    async fn going_below_the_soft_mark_reopens_at_once() {
        let (backlog, _near, gated) = gate_holding(b"y", SESSION_BACKLOG_MAX, true).await;
        let reader = read_one(gated);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!reader.is_finished(), "read over the maximum");
        backlog.consumed(SESSION_BACKLOG_MAX - SESSION_BACKLOG_SOFT + MESSAGE_OVERHEAD);
        let read = tokio::time::timeout(Duration::from_secs(5), reader)
            .await
            .expect("the gate never reopened")
            .unwrap()
            .unwrap();
        assert_eq!(&read, b"y");
    }

    #[tokio::test(start_paused = true)]
    async fn over_the_maximum_only_a_keepalive_read_every_few_seconds_passes() {
        let (backlog, _near, mut gated) = gate_holding(b"z", SESSION_BACKLOG_MAX, false).await;
        one_byte_waits_for_the_leak(&mut gated, "read at once over the maximum").await;
        assert!(backlog.waiting() > SESSION_BACKLOG_MAX);
    }
}
