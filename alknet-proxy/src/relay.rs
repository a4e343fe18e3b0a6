//! Relaying bytes both ways between two streams, with correct half-close.

use std::future::Future;

use tokio::io::{AsyncRead, AsyncWrite};

/// Per-direction copy buffer. Larger reads mean fewer syscalls and fewer,
/// larger SSH channel messages. Measured with `cargo xtask bench` (one
/// stream through SSH on loopback): 64 KiB → ~850 MiB/s at 1.70 CPU-s/GiB,
/// 128 KiB → ~1100 MiB/s at 1.31 CPU-s/GiB, 256 KiB no better; each
/// connection holds two of these.
const RELAY_BUFFER: usize = 128 * 1024;

/// Copies bytes both ways between `a` and `b` until both directions end.
///
/// Half-close is honoured: when one side reaches EOF, the other side's
/// write half is shut down (for an SSH channel that sends EOF) while the
/// opposite direction keeps flowing. Returns the bytes copied a→b and b→a;
/// callers must not log them.
pub async fn relay<A, B>(a: &mut A, b: &mut B) -> std::io::Result<(u64, u64)>
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    tokio::io::copy_bidirectional_with_sizes(a, b, RELAY_BUFFER, RELAY_BUFFER).await
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
