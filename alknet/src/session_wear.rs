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
    open: AtomicUsize,
    closed_first: AtomicUsize,
    /// Woken whenever a channel ends.
    ended: Notify,
}

impl SessionWear {
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

    /// Channels whose streams are open.
    pub(crate) fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// Channels this side closed first, over the session's life.
    pub(crate) fn closed_first(&self) -> usize {
        self.closed_first.load(Ordering::Acquire)
    }

    /// Completes once `done` holds, checking each time a channel ends.
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
        assert_eq!((wear.open(), wear.closed_first()), (0, 2));
    }

    #[tokio::test]
    async fn a_condition_that_already_holds_does_not_wait() {
        let wear = SessionWear::default();
        tokio::time::timeout(Duration::from_secs(5), wear.until(|wear| wear.open() == 0))
            .await
            .expect("no channel is open");
    }
}
