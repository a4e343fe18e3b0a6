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
//! # Per-channel credit
//!
//! Those brakes are session-wide: one channel whose reader stopped (a
//! program that stopped reading its `-L` port, a target that stopped
//! reading) held the session over its soft mark, and every other channel
//! waited with it. Between alknet peers each channel therefore also has a
//! credit window, the one russh cannot give us: the receiver grants the
//! sender its credit (from [`CHANNEL_CREDIT_START`]) beyond what its reader
//! has *read*, and grants again each time a quarter is used; the sender
//! sends no more than granted.
//! A grant is SSH extended data of type [`CREDIT_GRANT`] on the channel
//! (8 bytes, the new total), heard by the session's handler as it
//! arrives — not by the channel's reader, which may be the stuck one.
//!
//! What a channel under credit holds is bounded by its grants, so it is
//! *reserved*: left out of the soft mark (never out of the maximum). A
//! stalled channel then stalls alone, its sender waiting for credit, and
//! the session reads on.
//!
//! A channel's credit follows its link, as TCP's receive window does: it
//! starts small and doubles (up to [`CHANNEL_CREDIT_MAX`]) whenever the
//! sender ran out of credit that was already renewed — the renewal was
//! still on its way, so the credit is shorter than the round trip, not the
//! reader slower than the link. A sender that stops at our newest grant
//! waits for our reader, and a bigger credit would only hold more unread.
//! So idle and slow channels keep the starting credit, and a session's
//! channels grow only while their growth, summed, stays under
//! [`SESSION_CREDIT_CAP`]; a closed channel gives its growth back.
//!
//! It is negotiated so that other peers see plain SSH: a client announces
//! credit in its identification string's comment (`tuning::ssh_id`); a
//! server offers it only to such clients, granting on every channel from
//! its start ([`CreditMode::Offer`]); a client grants on a channel once
//! the server has ([`CreditMode::Answer`]). A peer that never grants is
//! left to the SSH window and the session-wide brakes above.
//!
//! Those first grants cost two packets on every tunnel's first round trip
//! (the server's, then the client's answer). Peers that both announce
//! `credit-open` as well skip them ([`CreditMode::AtOpen`]): each side takes
//! the other's first grant, [`CHANNEL_CREDIT_START`], as given when the
//! channel opens, and sends only renewals. A client learns the server's
//! announcement when the key exchange is done, before any channel.
//!
//! One more trap: each turn of russh's session loop writes *all* its
//! pending output before it reads again. When both peers have full socket
//! buffers in both directions (bulk both ways), both wait to write and
//! neither reads. So the transport's writes go through a [`WriteBehind`]:
//! queued (up to [`WRITE_BEHIND`] bytes) and written out whenever the loop
//! polls the transport, reading included.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{Context, Poll, Waker, ready};
use std::time::Duration;

use alknet_transport::{ChunkIo, ChunkedStream};
use bytes::Bytes;
use russh::{Channel, ChannelId, ChannelMsg, ChannelReadHalf};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::session_wear::SessionWear;
use crate::tuning::{
    CHANNEL_CREDIT_MAX, CHANNEL_CREDIT_START, CREDITED_WINDOW_SIZE, SESSION_BACKLOG_MAX,
    SESSION_BACKLOG_SOFT, SESSION_CREDIT_CAP, TRICKLE_WINDOW, WINDOW_SIZE,
};

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

/// How long a channel that ended both ways waits for the peer to close it
/// before closing it itself (see [`Backlog::let_peer_close`]).
const PEER_CLOSE_WAIT: Duration = Duration::from_secs(10);

/// How long a dropped channel's late data is still read and counted off
/// the backlog after the last message. Data the peer sent before it heard
/// of our close arrives within a round trip, or keeps coming without a
/// pause this long while a full window drains.
const DRAIN_QUIET: Duration = Duration::from_secs(10);

/// Bytes queued for the transport above which channel writers wait for
/// it to drain. The transport is then the bottleneck: what the session
/// queues beyond it only waits, held in memory and copied once more (in a
/// 1 GiB download to a slower client, ~10 % of the server's CPU and up to
/// 64 MiB resident). The session itself never waits for it (see
/// [`WriteBehind`]); only the channels' writers do, so nothing it must
/// read or answer is held up.
const OUTBOUND_THROTTLE: usize = 4 * 1024 * 1024;

/// Bytes a session may have queued for its transport before its writes
/// wait: more than the peer's windows normally let it send ahead.
pub(crate) const WRITE_BEHIND: usize = 64 * 1024 * 1024;

/// How long a session that is ending waits for its transport to take more
/// of what is queued. A live peer takes some well within this; one that
/// took nothing (frozen, killed without a word over QUIC, behind a dead
/// link) is given up on, so the session ends — and the client reconnects —
/// at the keepalive timeout, not when the peer thaws or the transport's
/// own timeout fires (QUIC's idle timeout, TCP's retransmissions).
const SHUTDOWN_STALL: Duration = Duration::from_secs(2);

/// Grants a channel remembers while its peer may still be sending up to
/// them: enough for the grants of one round trip at any credit.
const GRANTS_IN_FLIGHT: usize = 32;

/// The extended-data type code of a credit grant (see "Per-channel
/// credit" in the module docs): "AKCR". Its data is 8 bytes, big-endian:
/// the total bytes the peer may have sent on the channel.
pub(crate) const CREDIT_GRANT: u32 = 0x414b_4352;

/// Whether a session's channels grant credit (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CreditMode {
    /// The peer is not alknet: nothing is granted.
    Off = 0,
    /// A client: it grants on a channel once the server has granted there.
    Answer = 1,
    /// A server whose peer is alknet: every channel grants from its start.
    Offer = 2,
    /// Both peers announced credit at open: every channel starts as if each
    /// side had granted the other [`CHANNEL_CREDIT_START`]; only renewals
    /// are sent.
    AtOpen = 3,
}

/// The credit of each channel with a stream, by channel number, and the
/// grants that arrived before their channel's stream was made (a server
/// grants as it confirms the channel).
#[derive(Debug, Default)]
struct Credits {
    streams: HashMap<u32, Weak<Mutex<ChannelCredit>>>,
    early: HashMap<u32, Vec<u8>>,
}

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
    /// What channels under credit may hold unread: the sum over them of
    /// what they granted beyond what they read. Their peer sends no more,
    /// so that part of `waiting` needs no session-wide brake.
    reserved: AtomicUsize,
    /// How far channels' credit grew beyond the start, summed over them:
    /// growth stops at [`SESSION_CREDIT_CAP`].
    grown: AtomicUsize,
    /// A [`CreditMode`].
    credit: AtomicU8,
    /// The credit of each open channel, for the peer's grants.
    credits: Mutex<Credits>,
    /// Channel writers waiting now (for window, or for the session), and
    /// since when some have.
    writers: Mutex<WaitingWriters>,
    /// Bytes queued for the transport ([`WriteBehind`]).
    outbound: AtomicUsize,
    /// Channel writers waiting for `outbound` to drain below
    /// [`OUTBOUND_THROTTLE`].
    draining: Mutex<Vec<Waker>>,
    /// The gate's reader, to wake once the backlog shrank.
    gate: Mutex<Option<Waker>>,
    /// Whether a channel that ended both ways waits for the peer to close
    /// it (see [`Backlog::let_peer_close`]).
    peer_closes: AtomicBool,
    /// The session's open channels and those it closed first.
    wear: SessionWear,
    /// The session is over: its channels' writers fail instead of waiting.
    over: AtomicBool,
}

impl Backlog {
    /// A data message of `len` bytes arrived for `channel` (russh's `data`
    /// hook, called as it arrives).
    pub(crate) fn arrived(&self, channel: ChannelId, len: usize) {
        self.add_waiting(len);
        if let Some(credit) = self.credit_of(channel) {
            credit
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .received(len, self);
        }
    }

    fn add_waiting(&self, len: usize) {
        self.inner
            .waiting
            .fetch_add(len + MESSAGE_OVERHEAD, Ordering::AcqRel);
    }

    /// A reader finished with a data message of `len` bytes.
    fn consumed(&self, len: usize) {
        let before = self.unreserved();
        self.inner
            .waiting
            .fetch_sub(len + MESSAGE_OVERHEAD, Ordering::AcqRel);
        self.wake_if_below_soft(before);
    }

    /// Channels under credit may now hold `more` bytes more (or fewer).
    fn reserve(&self, more: isize) {
        let before = self.unreserved();
        if more >= 0 {
            self.inner
                .reserved
                .fetch_add(more.unsigned_abs(), Ordering::AcqRel);
        } else {
            self.inner
                .reserved
                .fetch_sub(more.unsigned_abs(), Ordering::AcqRel);
        }
        self.wake_if_below_soft(before);
    }

    fn wake_if_below_soft(&self, before: usize) {
        if before > SESSION_BACKLOG_SOFT && self.unreserved() <= SESSION_BACKLOG_SOFT {
            self.wake_gate();
        }
    }

    /// A channel that ended both ways (EOF sent and received) is left for
    /// the peer to close, for [`PEER_CLOSE_WAIT`] at most. russh 0.65
    /// forgets a channel whose peer closed it, but keeps one it closed
    /// itself until the session ends (its reply to our close is dropped
    /// unread): ~2.6 KiB per tunnel, without end, on whichever side closes
    /// first. A server lets its client close (its client and OpenSSH
    /// close a channel once both EOFs were sent), so the long-lived,
    /// shared side is the one that keeps nothing.
    pub(crate) fn let_peer_close(&self) {
        self.inner.peer_closes.store(true, Ordering::Release);
    }

    fn peer_closes(&self) -> bool {
        self.inner.peer_closes.load(Ordering::Acquire)
    }

    /// The session's channel counts (see [`SessionWear`]).
    pub(crate) fn wear(&self) -> &SessionWear {
        &self.inner.wear
    }

    /// The session ended. Its channels' writers may be waiting for credit,
    /// for russh's window or for the transport, none of which will come
    /// now — and russh does not tell them: they are woken to fail, so a
    /// relay ends (and closes its socket) instead of waiting for good.
    pub(crate) fn session_ended(&self) {
        self.inner.over.store(true, Ordering::SeqCst);
        let credits: Vec<SharedCredit> = self
            .credits()
            .streams
            .values()
            .filter_map(Weak::upgrade)
            .collect();
        for credit in credits {
            credit
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .close();
        }
        self.wake_draining();
    }

    /// The peer closed `channel`: its writer can send nothing more.
    pub(crate) fn channel_closed(&self, channel: ChannelId) {
        if let Some(credit) = self.credit_of(channel) {
            credit
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .close();
        }
    }

    fn session_is_over(&self) -> bool {
        self.inner.over.load(Ordering::SeqCst)
    }

    /// How the session's channels grant credit.
    pub(crate) fn set_credit_mode(&self, mode: CreditMode) {
        self.inner.credit.store(mode as u8, Ordering::Release);
    }

    /// The peer sent extended data on `channel`: a grant if `code` says so
    /// (russh's `extended_data` hook, called as it arrives).
    pub(crate) fn extended_data(&self, channel: ChannelId, code: u32, data: &[u8]) {
        if code != CREDIT_GRANT {
            return;
        }
        let credit = {
            let mut credits = self.credits();
            let credit = credits
                .streams
                .get(&channel.number())
                .and_then(Weak::upgrade);
            if credit.is_none() {
                let early = credits.early.entry(channel.number()).or_default();
                // Bounded: a peer sends one grant per half window.
                if early.len() < 1024 {
                    early.extend_from_slice(data);
                }
            }
            credit
        };
        if let Some(credit) = credit {
            credit
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .peer_granted(data, self);
        }
    }

    fn credits(&self) -> MutexGuard<'_, Credits> {
        self.inner
            .credits
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn credit_of(&self, channel: ChannelId) -> Option<SharedCredit> {
        self.credits()
            .streams
            .get(&channel.number())
            .and_then(Weak::upgrade)
    }

    fn track_credit(&self, channel: ChannelId, credit: &SharedCredit) {
        let early = {
            let mut credits = self.credits();
            credits
                .streams
                .insert(channel.number(), Arc::downgrade(credit));
            credits.early.remove(&channel.number())
        };
        if let Some(early) = early {
            credit
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .peer_granted(&early, self);
        }
    }

    fn untrack_credit(&self, channel: ChannelId) {
        let mut credits = self.credits();
        credits.streams.remove(&channel.number());
        credits.early.remove(&channel.number());
    }

    fn credit_mode(&self) -> CreditMode {
        match self.inner.credit.load(Ordering::Acquire) {
            1 => CreditMode::Answer,
            2 => CreditMode::Offer,
            3 => CreditMode::AtOpen,
            _ => CreditMode::Off,
        }
    }

    /// The window a server grants next (russh's `adjust_window` hook):
    /// the full window, or a trickle while readers are behind. An alknet
    /// peer gets the larger window: its channels' credit bounds what it
    /// sends ahead, and the window must not (see "Per-channel credit").
    pub(crate) fn next_window(&self) -> u32 {
        if self.unreserved() > SESSION_BACKLOG_SOFT {
            TRICKLE_WINDOW
        } else if self.credit_mode() == CreditMode::Off {
            WINDOW_SIZE
        } else {
            CREDITED_WINDOW_SIZE
        }
    }

    fn reserved_now(&self) -> usize {
        self.inner.reserved.load(Ordering::Acquire)
    }

    /// Takes `more` bytes of growth for a channel's credit if the
    /// session's channels have grown less than their cap.
    fn take_growth(&self, more: usize) -> bool {
        self.inner
            .grown
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |grown| {
                grown
                    .checked_add(more)
                    .filter(|after| *after <= SESSION_CREDIT_CAP)
            })
            .is_ok()
    }

    fn give_back_growth(&self, growth: usize) {
        self.inner.grown.fetch_sub(growth, Ordering::AcqRel);
    }

    fn waiting_now(&self) -> usize {
        self.inner.waiting.load(Ordering::Acquire)
    }

    /// What waits unread beyond what channels under credit may hold: the
    /// part the session-wide brakes answer for.
    fn unreserved(&self) -> usize {
        self.waiting_now().saturating_sub(self.reserved_now())
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
        let before = self.inner.outbound.swap(queued, Ordering::SeqCst);
        if before >= OUTBOUND_THROTTLE && queued < OUTBOUND_THROTTLE {
            self.wake_draining();
        }
    }

    /// Wakes the channel writers waiting for the transport's queue.
    fn wake_draining(&self) {
        let waiting = std::mem::take(
            &mut *self
                .inner
                .draining
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        waiting.into_iter().for_each(Waker::wake);
    }

    /// Whether a channel writer may send now: not while the transport's
    /// queue is over [`OUTBOUND_THROTTLE`] (it is woken once it drained).
    /// Ready at once when the session is over (the writer then fails).
    fn poll_outbound_room(&self, cx: &mut Context<'_>) -> Poll<()> {
        let room = || {
            self.inner.outbound.load(Ordering::SeqCst) < OUTBOUND_THROTTLE || self.session_is_over()
        };
        if room() {
            return Poll::Ready(());
        }
        {
            let mut draining = self
                .inner
                .draining
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if !draining.iter().any(|waker| waker.will_wake(cx.waker())) {
                draining.push(cx.waker().clone());
            }
        }
        // Looked at again once registered: it may have drained meanwhile.
        if room() {
            return Poll::Ready(());
        }
        Poll::Pending
    }

    /// A channel writer started waiting: a paused gate must read again.
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
        let open = |backlog: &Backlog| {
            let waiting = backlog.waiting_now();
            waiting <= SESSION_BACKLOG_MAX
                && (!self.pause_over_soft || backlog.unreserved() <= SESSION_BACKLOG_SOFT)
        };
        if open(&self.backlog) {
            // The transport's readiness wakes a reader; no need to park.
            self.timer = None;
            return true;
        }
        // Parked before looking again, so that a change in between still
        // wakes us.
        self.backlog.park(cx.waker());
        if open(&self.backlog) {
            self.timer = None;
            return true;
        }
        let mut due = self.last_read + LEAK_INTERVAL;
        if self.backlog.waiting_now() <= SESSION_BACKLOG_MAX {
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
    /// Armed by the first shutdown poll: when a transport that took
    /// nothing since is given up on ([`SHUTDOWN_STALL`]).
    shutdown_stall: Option<Pin<Box<Sleep>>>,
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
            shutdown_stall: None,
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

    /// Writes out the queue, then shuts the transport down — unless the
    /// transport takes nothing for [`SHUTDOWN_STALL`]: then what is left is
    /// dropped (it cannot reach the peer) and the shutdown counts as done,
    /// so russh reports why the session ended (such as its keepalives
    /// going unanswered) rather than a write error.
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let queued_before = this.queued;
        let shut = match this.poll_write_out(cx)? {
            Poll::Ready(()) => Pin::new(&mut this.inner).poll_shutdown(cx),
            Poll::Pending => Poll::Pending,
        };
        if shut.is_ready() {
            return shut;
        }
        let stall = this
            .shutdown_stall
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(SHUTDOWN_STALL)));
        if this.queued < queued_before {
            stall.as_mut().reset(Instant::now() + SHUTDOWN_STALL);
        }
        if stall.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        this.queue.clear();
        this.queued = 0;
        this.front_written = 0;
        this.backlog.set_outbound(0);
        Poll::Ready(Ok(()))
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

/// Sends one credit grant (a total) to the peer without waiting: handed to
/// the session at once when it can be, else from a task of its own.
type SendGrant = Box<dyn Fn(u64) + Send + Sync>;

/// One channel's credit (see "Per-channel credit" in the module docs),
/// shared by its stream and its session, whose handler hears the peer's
/// grants as they arrive — even while the channel's reader is stuck.
struct ChannelCredit {
    /// The total the peer lets us send; `None` until it grants (a peer
    /// that never does gets what russh's window allows).
    send_limit: Option<u64>,
    sent: u64,
    /// Whether we grant: from the start (a server whose peer is alknet),
    /// once the peer granted first (a client), or never.
    granting: bool,
    answers: bool,
    /// Whether the peer has granted, so honours ours: only then does what
    /// we granted count as reserved.
    peer_grants: bool,
    /// Bytes that arrived, were read by our reader, and the total we
    /// granted.
    received: u64,
    consumed: u64,
    granted: u64,
    /// What we grant beyond what our reader read: it grows with the link
    /// (see "Per-channel credit" in the module docs).
    credit: u64,
    /// The totals we granted that the peer may not have reached yet,
    /// oldest first: where it stops tells why it stopped.
    grants: VecDeque<u64>,
    /// Our share of the session's reserved bytes.
    reserved: usize,
    /// A grant arriving in pieces (russh splits extended data at the
    /// window's edge): the bytes so far.
    partial: Vec<u8>,
    send_grant: SendGrant,
    /// The writer waiting for a grant (or for russh's window).
    write_waker: Option<Waker>,
    /// The peer closed the channel, or the session ended.
    closed: bool,
}

type SharedCredit = Arc<Mutex<ChannelCredit>>;

impl ChannelCredit {
    fn new(mode: CreditMode, send_grant: SendGrant) -> Self {
        let mut credit = Self {
            send_limit: None,
            sent: 0,
            granting: false,
            answers: mode == CreditMode::Answer,
            // A server offers only to clients that announced credit.
            peer_grants: matches!(mode, CreditMode::Offer | CreditMode::AtOpen),
            received: 0,
            consumed: 0,
            granted: 0,
            credit: CHANNEL_CREDIT_START,
            grants: VecDeque::new(),
            reserved: 0,
            partial: Vec::new(),
            send_grant,
            write_waker: None,
            closed: false,
        };
        match mode {
            CreditMode::Offer => credit.start_granting(),
            CreditMode::AtOpen => {
                // Each side's first grant is taken as given: nothing sent.
                credit.granting = true;
                credit.record_grant();
                credit.send_limit = Some(CHANNEL_CREDIT_START);
            }
            CreditMode::Off | CreditMode::Answer => {}
        }
        credit
    }

    fn start_granting(&mut self) {
        self.granting = true;
        self.grant();
    }

    /// Grants the peer our credit beyond what our reader read.
    fn grant(&mut self) {
        self.record_grant();
        (self.send_grant)(self.granted);
    }

    fn record_grant(&mut self) {
        self.granted = self.consumed + self.credit;
        if self.grants.len() == GRANTS_IN_FLIGHT {
            self.grants.pop_front();
        }
        self.grants.push_back(self.granted);
    }

    /// Grant bytes from the peer: 8-byte totals, which may arrive split.
    fn peer_granted(&mut self, data: &[u8], backlog: &Backlog) {
        let mut newest = None;
        for byte in data {
            self.partial.push(*byte);
            if let Ok(total) = <[u8; 8]>::try_from(self.partial.as_slice()) {
                newest = Some(u64::from_be_bytes(total));
                self.partial.clear();
            }
        }
        let Some(total) = newest else {
            return;
        };
        self.send_limit = Some(self.send_limit.map_or(total, |limit| limit.max(total)));
        self.peer_grants = true;
        if !self.granting && self.answers {
            self.start_granting();
        }
        self.update_reserved(backlog);
        if let Some(writer) = self.write_waker.take() {
            writer.wake();
        }
    }

    /// Nothing more can be sent: a waiting writer is woken to find out.
    fn close(&mut self) {
        self.closed = true;
        if let Some(writer) = self.write_waker.take() {
            writer.wake();
        }
    }

    /// Our reader took `len` bytes: grant again once a quarter is used.
    fn consumed(&mut self, len: usize, backlog: &Backlog) {
        self.consumed += len as u64;
        if self.granting && self.granted.saturating_sub(self.consumed) <= self.credit / 4 * 3 {
            self.grant();
        }
        self.update_reserved(backlog);
    }

    /// `len` bytes arrived for this channel.
    fn received(&mut self, len: usize, backlog: &Backlog) {
        self.received += len as u64;
        let mut ran_out_of_renewed = false;
        while let Some(&total) = self.grants.front() {
            if total > self.received {
                break;
            }
            self.grants.pop_front();
            // The peer sent exactly up to a grant we had already renewed.
            ran_out_of_renewed |= total == self.received && total < self.granted;
        }
        if ran_out_of_renewed {
            self.grow(backlog);
        }
        self.update_reserved(backlog);
    }

    /// The credit was shorter than the round trip: double it, while the
    /// session's channels' growth stays under its cap.
    fn grow(&mut self, backlog: &Backlog) {
        let grown = (self.credit * 2).min(CHANNEL_CREDIT_MAX);
        let more = usize::try_from(grown - self.credit).unwrap_or(usize::MAX);
        if more == 0 || !backlog.take_growth(more) {
            return;
        }
        self.credit = grown;
        if self.granting {
            self.grant();
        }
    }

    /// Reserved: what the channel may hold once the peer honours our
    /// grants — what we granted, or what it holds if more came before
    /// the peer heard of our first grant (a race of one round trip).
    fn update_reserved(&mut self, backlog: &Backlog) {
        let now = if self.granting && self.peer_grants {
            let bound = self.granted.max(self.received);
            usize::try_from(bound.saturating_sub(self.consumed)).unwrap_or(usize::MAX)
        } else {
            0
        };
        if now != self.reserved {
            backlog.reserve(now.wrapping_sub(self.reserved).cast_signed());
            self.reserved = now;
        }
    }

    /// How much of `len` the peer lets us send now.
    fn room(&self, len: usize) -> usize {
        match self.send_limit {
            None => len,
            Some(limit) => {
                usize::try_from(limit.saturating_sub(self.sent)).map_or(len, |room| room.min(len))
            }
        }
    }
}

/// A send on the channel in flight: data, or EOF.
type Sending = Pin<Box<dyn Future<Output = Result<(), russh::Error>> + Send>>;

/// Starts sending one data message (`Some`) or EOF (`None`) on the channel.
type SendMessage = Box<dyn Fn(Option<Bytes>) -> Sending + Send + Sync>;

/// One channel as a byte stream whose reads are counted against the
/// session's backlog. Shutting down its write side sends EOF; dropping it
/// closes the channel, and what still arrives is read and counted off the
/// backlog until the channel is gone.
///
/// It also moves owned chunks ([`ChunkIo`]): what arrived is handed out as
/// russh holds it, and what is written whole is queued on the session as
/// it is (russh's `AsyncWrite` writer copied each byte into a fresh buffer).
pub(crate) struct TunnelStream {
    reading: Option<Reading>,
    /// The data message being read, and how far.
    current: Option<(Bytes, usize)>,
    send: SendMessage,
    /// The send in flight and its length (0 for EOF).
    sending: Option<(Sending, usize)>,
    eof_sent: bool,
    /// Whether the peer's close (or the session's end) was seen.
    peer_closed: bool,
    close: Close,
    backlog: Backlog,
    id: ChannelId,
    credit: SharedCredit,
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
        let id = channel.id();
        let (read, write) = channel.split();
        let write = Arc::new(write);
        let sender = write.clone();
        let send: SendMessage = Box::new(move |data| {
            let sender = sender.clone();
            Box::pin(async move {
                match data {
                    Some(data) => sender.data_bytes(data).await,
                    None => sender.eof().await,
                }
            })
        });
        let runtime = tokio::runtime::Handle::current();
        let granter = write.clone();
        let spawner = runtime.clone();
        let send_grant: SendGrant = Box::new(move |total: u64| {
            let granter = granter.clone();
            let mut sending = Box::pin(async move {
                let grant = Bytes::copy_from_slice(&total.to_be_bytes());
                let _ = granter.extended_data_bytes(CREDIT_GRANT, grant).await;
            });
            // Handed to the session at once when it can be, so it goes out
            // ahead of the data written next (a peer that hears of credit
            // only after a window of data may have paused before it);
            // otherwise from a task. Totals: later ones may overtake.
            let mut now = Context::from_waker(Waker::noop());
            if sending.as_mut().poll(&mut now).is_pending() {
                spawner.spawn(sending);
            }
        });
        let close = Box::pin(async move {
            let _ = write.close().await;
        });
        let credit = Arc::new(Mutex::new(ChannelCredit::new(
            backlog.credit_mode(),
            send_grant,
        )));
        backlog.track_credit(id, &credit);
        backlog.wear().opened();
        Self {
            reading: Some(Reading::Idle(read)),
            current: None,
            send,
            sending: None,
            eof_sent: false,
            peer_closed: false,
            close: Some(close),
            backlog,
            id,
            credit,
            write_blocked: false,
            runtime,
        }
    }

    /// This stream as a [`ChunkedStream`], which a relay finds through a
    /// `BoxStream` and moves owned chunks through.
    pub(crate) fn chunked(self) -> ChunkedStream {
        ChunkedStream::new(self)
    }

    fn credit(&self) -> MutexGuard<'_, ChannelCredit> {
        self.credit.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn consumed(&mut self, len: usize) {
        self.backlog.consumed(len);
        let backlog = self.backlog.clone();
        self.credit().consumed(len, &backlog);
    }

    /// Makes `current` the data message to read from; false at EOF.
    fn poll_message(&mut self, cx: &mut Context<'_>) -> Poll<bool> {
        loop {
            if self.current.is_some() {
                return Poll::Ready(true);
            }
            let mut waiting = match self.reading.take() {
                Some(Reading::Idle(half)) => wait(half),
                Some(Reading::Waiting(waiting)) => waiting,
                ended @ (Some(Reading::Ended(_)) | None) => {
                    self.reading = ended;
                    return Poll::Ready(false);
                }
            };
            match waiting.as_mut().poll(cx) {
                Poll::Pending => {
                    self.reading = Some(Reading::Waiting(waiting));
                    return Poll::Pending;
                }
                Poll::Ready((half, message)) => match message {
                    Some(ChannelMsg::Data { data }) => {
                        self.reading = Some(Reading::Idle(half));
                        if data.is_empty() {
                            self.backlog.consumed(0);
                        } else {
                            self.current = Some((data, 0));
                        }
                    }
                    Some(ChannelMsg::Eof) => self.reading = Some(Reading::Ended(Some(half))),
                    Some(ChannelMsg::Close) => {
                        self.peer_closed = true;
                        self.reading = Some(Reading::Ended(Some(half)));
                    }
                    None => {
                        self.peer_closed = true;
                        self.reading = Some(Reading::Ended(None));
                    }
                    // Window adjustments, credit grants (the session's
                    // handler took those), requests and the like.
                    Some(_) => self.reading = Some(Reading::Idle(half)),
                },
            }
        }
    }

    /// Up to `max` bytes of the current message, without a copy; the
    /// message counts as consumed once all of it was taken.
    fn take_current(&mut self, max: usize) -> Bytes {
        let Some((data, offset)) = &mut self.current else {
            return Bytes::new();
        };
        let n = (data.len() - *offset).min(max);
        let chunk = data.slice(*offset..*offset + n);
        *offset += n;
        if *offset == data.len() {
            let len = data.len();
            self.current = None;
            self.consumed(len);
        }
        chunk
    }

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

    /// Starts sending what the credit allows of `len` bytes, taken from
    /// `piece(room)`, unless a send is in flight; then drives the send.
    fn poll_send(
        &mut self,
        cx: &mut Context<'_>,
        len: usize,
        piece: impl FnOnce(usize) -> Bytes,
    ) -> Poll<io::Result<usize>> {
        if self.sending.is_none() {
            ready!(self.backlog.poll_outbound_room(cx));
            if self.backlog.session_is_over() {
                return Poll::Ready(Err(closed_channel_error()));
            }
            let room = {
                let mut credit = self.credit();
                if credit.closed {
                    return Poll::Ready(Err(closed_channel_error()));
                }
                let room = credit.room(len);
                if room == 0 {
                    // Woken by the session's handler when the peer grants.
                    credit.write_waker = Some(cx.waker().clone());
                }
                room
            };
            if room == 0 {
                // Counted as waiting: a paused client must read on to hear
                // the grant, as it does for a window adjustment.
                self.set_write_blocked(true);
                return Poll::Pending;
            }
            self.sending = Some(((self.send)(Some(piece(room))), room));
        }
        self.poll_sending(cx)
    }

    /// Drives the send in flight (ready at once when there is none) and
    /// says how many bytes it carried.
    fn poll_sending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let Some((sending, len)) = &mut self.sending else {
            return Poll::Ready(Ok(0));
        };
        let len = *len;
        let sent = sending.as_mut().poll(cx);
        if sent.is_pending() {
            // russh waits for window without hearing of the channel's or
            // the session's end: those wake us here instead.
            let mut credit = self.credit.lock().unwrap_or_else(PoisonError::into_inner);
            if credit.closed || self.backlog.session_is_over() {
                drop(credit);
                self.sending = None;
                self.set_write_blocked(false);
                return Poll::Ready(Err(closed_channel_error()));
            }
            credit.write_waker = Some(cx.waker().clone());
        }
        self.set_write_blocked(sent.is_pending());
        let sent = ready!(sent);
        self.sending = None;
        if sent.is_err() {
            return Poll::Ready(Err(closed_channel_error()));
        }
        self.credit().sent += len as u64;
        Poll::Ready(Ok(len))
    }
}

impl AsyncRead for TunnelStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if ready!(self.poll_message(cx)) {
            let chunk = self.take_current(buf.remaining());
            buf.put_slice(&chunk);
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for TunnelStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        self.poll_send(cx, data.len(), |room| Bytes::copy_from_slice(&data[..room]))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Sent is as good as flushed: the session writes it out.
        ready!(self.poll_sending(cx))?;
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_sending(cx))?;
        if !self.eof_sent {
            self.eof_sent = true;
            self.sending = Some(((self.send)(None), 0));
            ready!(self.poll_sending(cx))?;
        }
        Poll::Ready(Ok(()))
    }
}

impl ChunkIo for TunnelStream {
    fn poll_read_chunk(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        max: usize,
    ) -> Poll<io::Result<Bytes>> {
        if ready!(self.poll_message(cx)) {
            return Poll::Ready(Ok(self.take_current(max)));
        }
        Poll::Ready(Ok(Bytes::new()))
    }

    fn poll_write_chunk(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        chunk: &Bytes,
    ) -> Poll<io::Result<usize>> {
        self.poll_send(cx, chunk.len(), |room| chunk.slice(..room))
    }
}

impl Drop for TunnelStream {
    fn drop(&mut self) {
        self.set_write_blocked(false);
        if let Some((data, _)) = self.current.take() {
            self.backlog.consumed(data.len());
        }
        // Whatever still arrives is read off below, not held.
        self.backlog.untrack_credit(self.id);
        {
            let backlog = self.backlog.clone();
            let mut credit = self.credit();
            credit.granting = false;
            credit.update_reserved(&backlog);
            let growth = credit.credit - CHANNEL_CREDIT_START;
            credit.credit = CHANNEL_CREDIT_START;
            backlog.give_back_growth(usize::try_from(growth).unwrap_or(0));
        }
        let reading = self.reading.take();
        let close = self.close.take();
        let backlog = self.backlog.clone();
        match reading {
            // Both ways ended: the peer closes it, and russh then forgets
            // it on our side too.
            Some(Reading::Ended(Some(half))) if self.eof_sent && backlog.peer_closes() => {
                backlog.wear().ended(false);
                self.runtime
                    .spawn(wait_for_peer_close(half, close, backlog));
            }
            reading => {
                backlog.wear().ended(!self.peer_closed);
                self.runtime.spawn(close_and_drain(reading, close, backlog));
            }
        }
    }
}

type Close = Option<Pin<Box<dyn Future<Output = ()> + Send>>>;

/// What a write to a channel that can take no more data fails with.
fn closed_channel_error() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "the channel is closed")
}

/// Counts one message of a dropped channel off the backlog; false once the
/// channel is closed (its close, or russh forgot it).
fn count_off(message: Option<ChannelMsg>, backlog: &Backlog) -> bool {
    match message {
        Some(ChannelMsg::Data { data }) => {
            backlog.consumed(data.len());
            true
        }
        Some(ChannelMsg::Close) | None => false,
        Some(_) => true,
    }
}

/// Reads off what still comes until the peer closes the channel; closes it
/// after [`PEER_CLOSE_WAIT`] if the peer did not.
async fn wait_for_peer_close(mut half: ChannelReadHalf, close: Close, backlog: Backlog) {
    let closed = tokio::time::timeout(PEER_CLOSE_WAIT, async {
        while count_off(half.wait().await, &backlog) {}
    })
    .await;
    if closed.is_err()
        && let Some(close) = close
    {
        close.await;
    }
}

/// Closes the channel, then reads off whatever still comes so that the
/// backlog counts it as consumed: until the peer's close, or until the
/// channel has been quiet for [`DRAIN_QUIET`] (russh 0.65 never tells the
/// side that closed first of the peer's close; waiting for it would keep
/// this task for the session's life).
async fn close_and_drain(reading: Option<Reading>, close: Close, backlog: Backlog) {
    if let Some(close) = close {
        close.await;
    }
    let mut half = match reading {
        Some(Reading::Idle(half) | Reading::Ended(Some(half))) => half,
        Some(Reading::Waiting(waiting)) => {
            let Ok((half, message)) = tokio::time::timeout(DRAIN_QUIET, waiting).await else {
                return;
            };
            if !count_off(message, &backlog) {
                return;
            }
            half
        }
        Some(Reading::Ended(None)) | None => return,
    };
    while let Ok(message) = tokio::time::timeout(DRAIN_QUIET, half.wait()).await {
        if !count_off(message, &backlog) {
            return;
        }
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
        backlog.add_waiting(waiting);
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
    async fn shutdown_gives_up_on_a_peer_that_takes_nothing() {
        // Seen over iroh: keepalives ended the session, and the shutdown
        // that followed waited 30 s for a killed peer to take the queue.
        let (near, _far) = tokio::io::duplex(1024);
        let backlog = Backlog::default();
        let mut behind = WriteBehind::new(near, backlog.clone());
        behind.write_all(&vec![1u8; 1024 * 1024]).await.unwrap();
        let started = Instant::now();
        tokio::time::timeout(Duration::from_secs(60), behind.shutdown())
            .await
            .expect("shutdown waited for a peer that reads nothing")
            .unwrap();
        assert!(started.elapsed() >= SHUTDOWN_STALL);
        // Nothing counts as queued any more: no writer waits on it.
        tokio::time::timeout(
            Duration::from_secs(1),
            std::future::poll_fn(|cx| backlog.poll_outbound_room(cx)),
        )
        .await
        .expect("a writer still waits on the dropped queue");
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_waits_for_a_slow_peer_that_keeps_taking() {
        let (near, mut far) = tokio::io::duplex(1024);
        let mut behind = WriteBehind::new(near, Backlog::default());
        let sent = 32 * 1024;
        behind.write_all(&vec![2u8; sent]).await.unwrap();
        // A kilobyte now and then, each pause shorter than the stall.
        let reader = tokio::spawn(async move {
            let mut buffer = [0u8; 1024];
            let mut total = 0;
            loop {
                tokio::time::sleep(SHUTDOWN_STALL / 2).await;
                match far.read(&mut buffer).await.unwrap() {
                    0 => return total,
                    n => total += n,
                }
            }
        });
        behind.shutdown().await.unwrap();
        drop(behind);
        assert_eq!(reader.await.unwrap(), sent);
    }

    #[tokio::test]
    async fn channel_writers_wait_while_the_transport_queue_is_full_and_go_on_once_it_drains() {
        let (near, far) = tokio::io::duplex(64 * 1024);
        let backlog = Backlog::default();
        let mut behind = WriteBehind::new(near, backlog.clone());
        let room = |backlog: Backlog| async move {
            std::future::poll_fn(|cx| backlog.poll_outbound_room(cx)).await;
        };
        tokio::time::timeout(Duration::from_secs(1), room(backlog.clone()))
            .await
            .expect("a writer waited with nothing queued");

        // The peer reads nothing: the session's writes are queued, past
        // the mark, and a channel writer now waits.
        let queued = OUTBOUND_THROTTLE + 256 * 1024;
        behind.write_all(&vec![1u8; queued]).await.unwrap();
        let writer = tokio::spawn(room(backlog.clone()));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!writer.is_finished(), "wrote over a full transport queue");

        // Once the peer reads and the queue drains, the writer goes on.
        let reader = tokio::spawn(async move {
            let mut far = far;
            let mut all = Vec::new();
            far.read_to_end(&mut all).await.unwrap();
            all.len()
        });
        behind.shutdown().await.unwrap();
        tokio::time::timeout(Duration::from_secs(5), writer)
            .await
            .expect("the waiting writer was never woken")
            .unwrap();
        assert_eq!(reader.await.unwrap(), queued);
    }

    #[tokio::test]
    async fn a_writer_waiting_on_a_full_transport_queue_is_let_go_when_the_session_ends() {
        let (near, _far) = tokio::io::duplex(64 * 1024);
        let backlog = Backlog::default();
        let mut behind = WriteBehind::new(near, backlog.clone());
        behind
            .write_all(&vec![1u8; OUTBOUND_THROTTLE + 256 * 1024])
            .await
            .unwrap();
        let writer = tokio::spawn({
            let backlog = backlog.clone();
            async move { std::future::poll_fn(|cx| backlog.poll_outbound_room(cx)).await }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!writer.is_finished(), "wrote over a full transport queue");

        // The queue never drains: only the session's end can release it.
        backlog.session_ended();
        tokio::time::timeout(Duration::from_secs(5), writer)
            .await
            .expect("the waiting writer outlived its session")
            .unwrap();
        assert!(backlog.session_is_over());
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

    /// A channel's credit with the grants it sends recorded.
    fn recorded_credit(mode: CreditMode) -> (ChannelCredit, Arc<Mutex<Vec<u64>>>) {
        let sent = Arc::new(Mutex::new(Vec::new()));
        let granted = sent.clone();
        let send_grant: SendGrant = Box::new(move |total| granted.lock().unwrap().push(total));
        (ChannelCredit::new(mode, send_grant), sent)
    }

    fn bytes(count: u64) -> usize {
        usize::try_from(count).unwrap()
    }

    #[test]
    fn grants_split_at_the_windows_edge_are_put_back_together() {
        let backlog = Backlog::default();
        let (mut credit, sent) = recorded_credit(CreditMode::Answer);
        assert_eq!(credit.room(10), 10, "no grant yet: the SSH window rules");
        credit.peer_granted(&[0, 0, 0], &backlog);
        assert_eq!(credit.room(10), 10);
        credit.peer_granted(&[0, 0, 1, 0, 0, 0, 0], &backlog);
        assert_eq!(credit.send_limit, Some(0x1_0000));
        // Answering: it granted once the peer did, and holds that much.
        assert_eq!(*sent.lock().unwrap(), [CHANNEL_CREDIT_START]);
        assert_eq!(backlog.reserved_now(), bytes(CHANNEL_CREDIT_START));
        credit.sent = 0x1_0000 - 4;
        assert_eq!(credit.room(10), 4);
        // An older total never lowers the limit.
        credit.peer_granted(&5u64.to_be_bytes(), &backlog);
        assert_eq!(credit.room(10), 4);
        // Reading a quarter of it grants again.
        credit.consumed(bytes(CHANNEL_CREDIT_START / 4), &backlog);
        assert_eq!(
            *sent.lock().unwrap(),
            [CHANNEL_CREDIT_START, CHANNEL_CREDIT_START / 4 * 5]
        );
    }

    #[test]
    fn credit_doubles_when_the_peer_ran_out_of_credit_already_renewed() {
        let backlog = Backlog::default();
        let (mut credit, sent) = recorded_credit(CreditMode::Offer);
        let start = CHANNEL_CREDIT_START;
        // A quick reader: a quarter arrives and is read, so we renew.
        credit.received(bytes(start / 4), &backlog);
        credit.consumed(bytes(start / 4), &backlog);
        assert_eq!(*sent.lock().unwrap(), [start, start / 4 * 5]);
        // The peer stops at the first grant: our renewal had not reached
        // it, so the credit was shorter than the round trip.
        credit.received(bytes(start / 4 * 3), &backlog);
        assert_eq!(credit.credit, start * 2);
        assert_eq!(
            *sent.lock().unwrap(),
            [start, start / 4 * 5, start / 4 + start * 2]
        );
        assert_eq!(backlog.reserved_now(), bytes(start * 2));
    }

    #[test]
    fn with_credit_at_open_the_first_grants_are_taken_as_given_and_not_sent() {
        let backlog = Backlog::default();
        let (mut credit, sent) = recorded_credit(CreditMode::AtOpen);
        let start = CHANNEL_CREDIT_START;
        // Nothing goes out at the start, yet we may send the starting
        // credit and no more, as if the peer had granted it.
        assert!(sent.lock().unwrap().is_empty());
        assert_eq!(credit.room(bytes(start) + 1), bytes(start));
        // Renewals, and growth, go on as with a sent first grant.
        credit.received(bytes(start / 4), &backlog);
        credit.consumed(bytes(start / 4), &backlog);
        assert_eq!(*sent.lock().unwrap(), [start / 4 * 5]);
        credit.received(bytes(start / 4 * 3), &backlog);
        assert_eq!(credit.credit, start * 2);
        assert_eq!(backlog.reserved_now(), bytes(start * 2));
        // A grant from the peer raises what we may send.
        credit.peer_granted(&(start * 3).to_be_bytes(), &backlog);
        assert_eq!(credit.room(bytes(start * 4)), bytes(start * 3));
    }

    #[test]
    fn idle_channels_do_not_stop_another_from_growing() {
        let backlog = Backlog::default();
        // Fifty idle channels hold their starting credit.
        backlog.reserve(50 * isize::try_from(CHANNEL_CREDIT_START).unwrap());
        let (mut credit, _sent) = recorded_credit(CreditMode::Offer);
        let start = CHANNEL_CREDIT_START;
        credit.received(bytes(start / 4), &backlog);
        credit.consumed(bytes(start / 4), &backlog);
        credit.received(bytes(start / 4 * 3), &backlog);
        assert_eq!(credit.credit, start * 2);
    }

    #[test]
    fn a_slow_reader_keeps_its_credit_small() {
        let backlog = Backlog::default();
        let (mut credit, sent) = recorded_credit(CreditMode::Offer);
        // The peer sends all it may; our reader took nothing: it stopped
        // at our newest grant, waiting for the reader, not the link.
        credit.received(bytes(CHANNEL_CREDIT_START), &backlog);
        assert_eq!(credit.credit, CHANNEL_CREDIT_START);
        assert_eq!(*sent.lock().unwrap(), [CHANNEL_CREDIT_START]);
    }

    #[test]
    fn credit_grows_no_further_than_the_session_cap_and_the_maximum() {
        let backlog = Backlog::default();
        let (mut credit, _sent) = recorded_credit(CreditMode::Offer);
        let start = CHANNEL_CREDIT_START;
        let mut total = 0;
        // Each round: a quarter arrives and is read, then the peer stops
        // at the grant before — a link longer than the credit.
        for _ in 0..16 {
            let quarter = credit.credit / 4;
            let stop = credit.granted;
            credit.received(bytes(quarter), &backlog);
            credit.consumed(bytes(quarter), &backlog);
            total += quarter;
            credit.received(bytes(stop - total), &backlog);
            credit.consumed(bytes(stop - total), &backlog);
            total = stop;
        }
        assert_eq!(credit.credit, CHANNEL_CREDIT_MAX);
        // Other channels of the session grew (nearly) as far as the cap.
        let backlog = Backlog::default();
        assert!(backlog.take_growth(SESSION_CREDIT_CAP - bytes(start) + 1));
        let (mut credit, _sent) = recorded_credit(CreditMode::Offer);
        credit.received(bytes(start / 4), &backlog);
        credit.consumed(bytes(start / 4), &backlog);
        credit.received(bytes(start / 4 * 3), &backlog);
        assert_eq!(credit.credit, start, "grew past the session's cap");
    }

    #[tokio::test(start_paused = true)]
    async fn over_the_maximum_only_a_keepalive_read_every_few_seconds_passes() {
        let (backlog, _near, mut gated) = gate_holding(b"z", SESSION_BACKLOG_MAX, false).await;
        one_byte_waits_for_the_leak(&mut gated, "read at once over the maximum").await;
        assert!(backlog.waiting() > SESSION_BACKLOG_MAX);
    }
}
