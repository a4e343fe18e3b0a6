//! The accept loop the SOCKS5 server, the HTTP proxy and local forwards
//! share: one task per connection, all of them ended with the loop.

use std::future::Future;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// Accepts on `listener` until the returned future is dropped, running
/// `serve` for each connection (Nagle off) in a task of its own; dropping
/// the future also ends every connection it started. `what` names the
/// listener in the warning logged when accepting fails.
pub(crate) async fn serve_each<F, Fut>(listener: &TcpListener, what: &'static str, serve: F)
where
    F: Fn(TcpStream) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    let _ = stream.set_nodelay(true);
                    // Boxed: a connection's future is large, and spawning
                    // it unboxed copied all of it three times (into the
                    // task, into its cell, and over it with the output).
                    connections.spawn(Box::pin(serve(stream)));
                }
                Err(error) => {
                    // Typically out of file descriptors: wait for some to free up.
                    tracing::warn!(%error, "{what} cannot accept");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}
