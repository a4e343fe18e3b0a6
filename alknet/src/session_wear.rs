//! How worn a session is: its open channels, and how many channels this
//! side closed before its peer did.
//!
//! russh 0.65 forgets a channel its peer closed, but keeps one it closed
//! itself (~2.6 KiB) until the session ends: the peer's answering close
//! finds it already gone from the protocol state and is dropped. A server
//! leaves closing to its clients (see `Backlog::let_peer_close`), so the
//! cost lands on the client, one per finished tunnel. A
//! [`ReconnectingClient`](crate::ReconnectingClient) counts it here and
//! moves to a fresh session after enough of them; the old one ends once
//! its last open channel has.

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;

/// Counters of one session's channels, shared by their streams.
#[derive(Debug, Default)]
pub(crate) struct SessionWear {
    /// Channel opens awaiting the peer's answer.
    opening: AtomicUsize,
    open: AtomicUsize,
    closed_first: AtomicUsize,
    /// Woken whenever a channel ends.
    ended: Notify,
}

impl SessionWear {
    /// Counts a channel open until the guard drops (after the channel's
    /// stream is made, or the open failed).
    pub(crate) fn opening(&self) -> Opening<'_> {
        self.opening.fetch_add(1, Ordering::AcqRel);
        Opening(self)
    }

    pub(crate) fn opened(&self) {
        self.open.fetch_add(1, Ordering::AcqRel);
    }

    /// A channel's stream is gone; `closed_first` if this side sent the
    /// close before hearing the peer's.
    pub(crate) fn ended(&self, closed_first: bool) {
        if closed_first {
            self.closed_first.fetch_add(1, Ordering::AcqRel);
        }
        self.open.fetch_sub(1, Ordering::AcqRel);
        self.ended.notify_waiters();
    }

    /// Whether no channel is open or being opened.
    pub(crate) fn idle(&self) -> bool {
        self.opening.load(Ordering::Acquire) == 0 && self.open.load(Ordering::Acquire) == 0
    }

    /// Channels this side closed first, over the session's life.
    pub(crate) fn closed_first(&self) -> usize {
        self.closed_first.load(Ordering::Acquire)
    }

    /// Completes once `done` holds, checking each time a channel ends or
    /// an open is answered.
    pub(crate) async fn until(&self, done: impl Fn(&Self) -> bool) {
        loop {
            let ended = self.ended.notified();
            tokio::pin!(ended);
            // Registered before the check, so no end slips in between.
            ended.as_mut().enable();
            if done(self) {
                return;
            }
            ended.await;
        }
    }
}

/// A channel open in flight (see [`SessionWear::opening`]).
pub(crate) struct Opening<'a>(&'a SessionWear);

impl Drop for Opening<'_> {
    fn drop(&mut self) {
        self.0.opening.fetch_sub(1, Ordering::AcqRel);
        self.0.ended.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn waiting_ends_when_the_condition_holds_after_a_channel_ends() {
        let wear = Arc::new(SessionWear::default());
        for _ in 0..3 {
            wear.opened();
        }
        let waiter = {
            let wear = wear.clone();
            tokio::spawn(async move { wear.until(|wear| wear.closed_first() >= 2).await })
        };
        wear.ended(true);
        wear.ended(false);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "only one channel was closed first");
        wear.ended(true);
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("the second close first ended the wait")
            .unwrap();
        assert!(wear.idle());
        assert_eq!(wear.closed_first(), 2);
    }

    #[tokio::test]
    async fn a_condition_that_already_holds_does_not_wait() {
        let wear = SessionWear::default();
        tokio::time::timeout(Duration::from_secs(5), wear.until(SessionWear::idle))
            .await
            .expect("no channel is open");
    }

    #[test]
    fn an_open_in_flight_keeps_a_session_busy_until_its_stream_is_made() {
        let wear = SessionWear::default();
        let opening = wear.opening();
        assert!(!wear.idle());
        wear.opened();
        drop(opening);
        assert!(!wear.idle(), "the opened channel counts now");
        wear.ended(true);
        assert!(wear.idle());
    }
}
