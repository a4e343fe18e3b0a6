//! Serving on every core: one single-threaded tokio runtime per core, each
//! accepting from every listener. A connection then lives its whole life
//! on one thread (like OpenSSH's process per connection), so packets pass
//! between its SSH session and its relays without cross-thread wake-ups,
//! while different connections still use every core. Measured with `cargo
//! xtask bench` on 2 cores: ~1200 MiB/s against ~1110 MiB/s with one
//! multi-threaded runtime.

use std::future::Future;
use std::sync::Arc;
use std::thread;

use alknet_transport::TransportAcceptor;
use tokio::sync::{oneshot, watch};
use tracing::{info, warn};

use super::{ListenerOptions, Server};
use crate::Error;

/// A bound listener and how to serve it.
pub type Listener = (Box<dyn TransportAcceptor>, ListenerOptions);

impl Server {
    /// Serves `listeners` on one runtime per core until `shutdown`
    /// completes, then disconnects every client (see
    /// [`serve`](Server::serve)), closes the listeners (an iroh endpoint
    /// says goodbye to its peers) and returns.
    ///
    /// Call it from inside a tokio runtime: that runtime keeps driving the
    /// listeners' sockets, which were registered with it when bound.
    pub async fn serve_on_every_core(
        &self,
        listeners: Vec<Listener>,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), Error> {
        let listeners = Arc::new(listeners);
        let (stop, stopped) = watch::channel(false);
        let workers = thread::available_parallelism().map_or(1, usize::from);
        let mut finished = Vec::with_capacity(workers);
        for index in 0..workers {
            let (server, listeners, stopped) = (self.clone(), listeners.clone(), stopped.clone());
            let (done, done_rx) = oneshot::channel::<()>();
            finished.push(done_rx);
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(Error::Runtime)?;
            thread::Builder::new()
                .name(format!("alknet-serve-{index}"))
                .spawn(move || {
                    runtime.block_on(async move {
                        let mut serving = tokio::task::JoinSet::new();
                        for index in 0..listeners.len() {
                            let (server, listeners, mut stopped) =
                                (server.clone(), listeners.clone(), stopped.clone());
                            serving.spawn(async move {
                                let (acceptor, options) = &listeners[index];
                                let shutdown = async move {
                                    let _ = stopped.wait_for(|stop| *stop).await;
                                };
                                server
                                    .serve_listener(acceptor.as_ref(), options, shutdown)
                                    .await
                            });
                        }
                        while let Some(result) = serving.join_next().await {
                            if let Ok(Err(error)) = result {
                                warn!(%error, "server worker stopped");
                            }
                        }
                    });
                    let _ = done.send(());
                })
                .map_err(Error::Runtime)?;
        }
        shutdown.await;
        info!(connections = self.open_connections(), "shutting down");
        let _ = stop.send(true);
        for done in finished {
            let _ = done.await;
        }
        for (acceptor, _) in listeners.iter() {
            acceptor.close().await;
        }
        Ok(())
    }
}
