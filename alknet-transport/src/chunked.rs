//! Streams that move owned chunks of bytes as well as copying slices.
//!
//! `AsyncRead`/`AsyncWrite` copy every byte through a caller's buffer. An
//! SSH channel already holds what it received as owned [`Bytes`], and
//! queues what it sends as owned [`Bytes`]: a relay that hands those over
//! whole skips a copy of every byte, in each direction. [`ChunkIo`] is that
//! second interface; [`ChunkedStream`] carries a `ChunkIo` through the
//! type erasure of a [`BoxStream`](crate::BoxStream), where
//! [`AsyncStream::chunked`](crate::AsyncStream::chunked) finds it again.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::AsyncStream;

/// A stream that can also read and write owned chunks without copying.
///
/// Both interfaces move the same bytes in the same order: a caller may mix
/// them, though a relay sticks to one per direction.
pub trait ChunkIo: AsyncStream {
    /// Reads the next chunk of at most `max` bytes (`max` > 0), as the
    /// stream holds it. An empty chunk means EOF.
    fn poll_read_chunk(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        max: usize,
    ) -> Poll<io::Result<Bytes>>;

    /// Writes from the start of `chunk` (not empty), keeping a reference
    /// rather than copying, and says how many bytes it took. As with
    /// `poll_write`, a call that returned `Pending` must be repeated with
    /// the same chunk.
    fn poll_write_chunk(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        chunk: &Bytes,
    ) -> Poll<io::Result<usize>>;
}

/// A [`ChunkIo`] stream, boxed so that it can travel as a
/// [`BoxStream`](crate::BoxStream) and still be found by
/// [`AsyncStream::chunked`](crate::AsyncStream::chunked).
///
/// ```
/// use alknet_transport::{AsyncStream, BoxStream, ChunkedStream};
/// # fn wrap(channel: impl alknet_transport::ChunkIo) {
/// let mut stream: BoxStream = Box::new(ChunkedStream::new(channel));
/// assert!(stream.chunked().is_some());
/// # }
/// ```
pub struct ChunkedStream {
    inner: Pin<Box<dyn ChunkIo>>,
}

impl ChunkedStream {
    /// Wraps `stream`.
    pub fn new(stream: impl ChunkIo) -> Self {
        Self {
            inner: Box::pin(stream),
        }
    }

    /// See [`ChunkIo::poll_read_chunk`].
    pub fn poll_read_chunk(&mut self, cx: &mut Context<'_>, max: usize) -> Poll<io::Result<Bytes>> {
        self.inner.as_mut().poll_read_chunk(cx, max)
    }

    /// See [`ChunkIo::poll_write_chunk`].
    pub fn poll_write_chunk(
        &mut self,
        cx: &mut Context<'_>,
        chunk: &Bytes,
    ) -> Poll<io::Result<usize>> {
        self.inner.as_mut().poll_write_chunk(cx, chunk)
    }
}

impl AsyncRead for ChunkedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.inner.as_mut().poll_read(cx, buf)
    }
}

impl AsyncWrite for ChunkedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.inner.as_mut().poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.inner.as_mut().poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.inner.as_mut().poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.inner.as_mut().poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BoxStream;

    /// An in-memory pipe end that also reads and writes chunks.
    struct ChunkPipe(tokio::io::DuplexStream);

    impl AsyncRead for ChunkPipe {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Pin::new(&mut self.0).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for ChunkPipe {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            Pin::new(&mut self.0).poll_write(cx, buf)
        }

        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.0).poll_flush(cx)
        }

        fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.0).poll_shutdown(cx)
        }
    }

    impl ChunkIo for ChunkPipe {
        fn poll_read_chunk(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            max: usize,
        ) -> Poll<io::Result<Bytes>> {
            let mut buf = vec![0; max];
            let mut read = ReadBuf::new(&mut buf);
            std::task::ready!(Pin::new(&mut self.0).poll_read(cx, &mut read))?;
            let n = read.filled().len();
            buf.truncate(n);
            Poll::Ready(Ok(buf.into()))
        }

        fn poll_write_chunk(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            chunk: &Bytes,
        ) -> Poll<io::Result<usize>> {
            Pin::new(&mut self.0).poll_write(cx, chunk)
        }
    }

    #[tokio::test]
    async fn a_boxed_chunked_stream_is_found_again_and_a_plain_one_is_not() {
        let (near, far) = tokio::io::duplex(64);
        let mut chunked: BoxStream = Box::new(ChunkedStream::new(ChunkPipe(near)));
        let mut plain: BoxStream = Box::new(far);
        assert!(chunked.chunked().is_some());
        assert!(plain.chunked().is_none());

        let sent = Bytes::from_static(b"owned");
        let wrote = std::future::poll_fn(|cx| {
            chunked
                .chunked()
                .expect("still chunked")
                .poll_write_chunk(cx, &sent)
        })
        .await
        .unwrap();
        assert_eq!(wrote, 5);
        let mut got = [0u8; 5];
        tokio::io::AsyncReadExt::read_exact(&mut plain, &mut got)
            .await
            .unwrap();
        assert_eq!(&got, b"owned");
    }
}
