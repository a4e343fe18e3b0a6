//! Copying between two streams until both are done or neither has moved a
//! byte for a while.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// Copies `a` ↔ `b` (half-closes passed on) until both directions end, or
/// until no byte has moved either way for `idle`.
pub(crate) async fn copy_both_ways<A, B>(a: &mut A, b: &mut B, idle: Duration) -> io::Result<()>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let activity = Activity::new();
    let (mut a, mut b) = (activity.watch(a), activity.watch(b));
    tokio::select! {
        copied = tokio::io::copy_bidirectional(&mut a, &mut b) => copied.map(drop),
        () = activity.quiet_for(idle) => Err(io::Error::new(io::ErrorKind::TimedOut, "idle")),
    }
}

/// When any of the streams it watches last moved a byte.
#[derive(Clone, Debug)]
pub(crate) struct Activity {
    start: Instant,
    /// Milliseconds from `start` to the last byte moved.
    last: Arc<AtomicU64>,
}

impl Activity {
    pub(crate) fn new() -> Self {
        Self {
            start: Instant::now(),
            last: Arc::new(AtomicU64::new(0)),
        }
    }

    /// `stream`, its reads and writes counted as activity.
    pub(crate) fn watch<S>(&self, stream: S) -> Watched<S> {
        Watched {
            inner: stream,
            activity: self.clone(),
        }
    }

    fn moved(&self) {
        let millis = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(millis, Ordering::Relaxed);
    }

    /// Returns once nothing has moved for `idle`.
    pub(crate) async fn quiet_for(&self, idle: Duration) {
        loop {
            let moved = Duration::from_millis(self.last.load(Ordering::Relaxed));
            let quiet_until = self.start + moved + idle;
            if Instant::now() >= quiet_until {
                return;
            }
            tokio::time::sleep_until(quiet_until).await;
        }
    }
}

/// A stream that notes when it last read or wrote anything.
#[derive(Debug)]
pub(crate) struct Watched<S> {
    inner: S,
    activity: Activity,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.moved();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, data);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.moved();
        }
        polled
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

    #[tokio::test(start_paused = true)]
    async fn traffic_keeps_it_open_and_silence_ends_it() {
        let (mut near, mut a) = duplex(1024);
        let (mut b, mut far) = duplex(1024);
        let copy =
            tokio::spawn(
                async move { copy_both_ways(&mut a, &mut b, Duration::from_secs(10)).await },
            );
        // Talk every 6 s for 30 s: never idle for 10.
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_secs(6)).await;
            near.write_all(b"ping").await.unwrap();
            let mut got = [0u8; 4];
            far.read_exact(&mut got).await.unwrap();
            assert_eq!(&got, b"ping");
        }
        assert!(!copy.is_finished());
        tokio::time::sleep(Duration::from_secs(11)).await;
        let outcome = copy.await.unwrap();
        assert_eq!(outcome.unwrap_err().kind(), io::ErrorKind::TimedOut);
    }
}
