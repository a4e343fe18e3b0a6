//! A stream wrapper that fails every read and write once a token is
//! cancelled.
//!
//! russh runs each session on its own task and offers no way to abort it;
//! its session only ends when the stream does. The server wraps every
//! transport stream in this so that a session that will not say goodbye
//! (a slow login, a peer ignoring our disconnect at shutdown) can still be
//! ended.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

pub(crate) struct KillableStream<S> {
    inner: S,
    killed: Pin<Box<WaitForCancellationFutureOwned>>,
}

impl<S> KillableStream<S> {
    pub(crate) fn new(inner: S, kill: CancellationToken) -> Self {
        Self {
            inner,
            killed: Box::pin(kill.cancelled_owned()),
        }
    }

    fn check(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        match self.killed.as_mut().poll(cx) {
            Poll::Ready(()) => Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "connection closed by the server",
            )),
            Poll::Pending => Ok(()),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for KillableStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.check(cx)?;
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for KillableStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.check(cx)?;
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.check(cx)?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

    #[tokio::test]
    async fn passes_data_until_killed_then_wakes_a_pending_read() {
        let (near, mut far) = duplex(64);
        let kill = CancellationToken::new();
        let mut stream = KillableStream::new(near, kill.clone());

        far.write_all(b"hi").await.unwrap();
        let mut buf = [0u8; 2];
        stream.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"hi");

        // A read with nothing to read is parked until the kill wakes it.
        let pending_read = tokio::spawn(async move {
            let mut buf = [0u8; 1];
            stream.read(&mut buf).await
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        kill.cancel();
        let result = tokio::time::timeout(Duration::from_secs(5), pending_read)
            .await
            .expect("killed read never woke")
            .unwrap();
        assert_eq!(result.unwrap_err().kind(), io::ErrorKind::ConnectionAborted);
    }
}
