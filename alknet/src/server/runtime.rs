//! Serving on every core: one single-threaded tokio runtime per core, each
//! accepting from every listener. A connection then lives its whole life
//! on one thread (like OpenSSH's process per connection), so packets pass
//! between its SSH session and its relays without cross-thread wake-ups,
//! while different connections still use every core. Measured with `cargo
//! xtask bench` on 2 cores: ~1200 MiB/s against ~1110 MiB/s with one
//! multi-threaded runtime.
//!
//! Every serving thread (the calling one too) asks the kernel for short
//! scheduling slices (see [`alknet_sched`]): with the target on the same
//! machine, a tunnel's dial woke the target's `accept`, which then took the
//! server's CPU before it could confirm the channel. SOCKS5 connect → first
//! byte through alknet to a local HTTP target (a thread per connection),
//! with a client that waits for the greeting's answer as curl does, p50
//! over 400 connections, binaries without and with the slices side by side
//! (four runs, ports swapped every run): 0.52–0.54 → 0.43–0.45 ms; ssh →
//! sshd in the same harness 0.43–0.44 ms.
//!
//! An iroh listener is the exception: its endpoint's socket and its QUIC
//! connections are driven on the runtime that bound it
//! ([`driven_where_bound`](alknet_transport::TransportAcceptor::driven_where_bound)),
//! so its sessions are served there too. On a worker, each session woke the
//! binding thread on every write and was woken by it on every ack: a
//! 512 MiB download took ~24 000 futex calls, ran at 323–357 MiB/s and cost
//! 2.44–2.64 s of server CPU per GiB; on one thread 388–426 MiB/s and
//! 2.32–2.56 s (old and new binaries alternating, same session).

use std::future::Future;
use std::sync::Arc;
use std::thread;

use alknet_transport::TransportAcceptor;
use tokio::sync::{oneshot, watch};
use tracing::{debug, info, warn};

use super::{ListenerOptions, Server};
use crate::Error;

/// A bound listener and how to serve it.
pub type Listener = (Box<dyn TransportAcceptor>, ListenerOptions);

impl Server {
    /// Serves `listeners` on one runtime per core until `shutdown`
    /// completes (the calling thread and every serving thread ask for
    /// short scheduling slices, see the module docs), then disconnects
    /// every client (see [`serve`](Server::serve)), closes the listeners
    /// (an iroh endpoint says goodbye to its peers) and returns.
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
                    ask_for_short_slices();
                    runtime.block_on(server.serve_listeners(&listeners, &stopped, false));
                    let _ = done.send(());
                })
                .map_err(Error::Runtime)?;
        }
        // Listeners driven on this runtime (iroh) are served here.
        ask_for_short_slices();
        let here = tokio::spawn({
            let (server, listeners, stopped) = (self.clone(), listeners.clone(), stopped.clone());
            async move {
                server.serve_listeners(&listeners, &stopped, true).await;
            }
        });
        shutdown.await;
        info!(connections = self.open_connections(), "shutting down");
        let _ = stop.send(true);
        for done in finished {
            let _ = done.await;
        }
        let _ = here.await;
        for (acceptor, _) in listeners.iter() {
            acceptor.close().await;
        }
        Ok(())
    }

    /// Serves, on the calling runtime until `stopped` turns true, those of
    /// `listeners` that are (or are not) driven where they were bound.
    async fn serve_listeners(
        &self,
        listeners: &Arc<Vec<Listener>>,
        stopped: &watch::Receiver<bool>,
        driven_where_bound: bool,
    ) {
        let mut serving = tokio::task::JoinSet::new();
        for (index, (acceptor, _)) in listeners.iter().enumerate() {
            if acceptor.driven_where_bound() != driven_where_bound {
                continue;
            }
            let (server, listeners, mut stopped) =
                (self.clone(), listeners.clone(), stopped.clone());
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
    }
}

/// Asks the kernel to run the calling thread in the shortest slices it
/// grants; a server works without them, so failure is only noted.
fn ask_for_short_slices() {
    match alknet_sched::request_short_slices(alknet_sched::MIN_SLICE) {
        Ok(outcome) => debug!(?outcome, "scheduling slices"),
        Err(error) => debug!(%error, "cannot ask for short scheduling slices"),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use alknet_auth::{AuthorizedKeys, generate_ed25519};
    use alknet_transport::{BoxStream, TransportError, TransportInfo};
    use async_trait::async_trait;
    use tokio::sync::Notify;

    use super::*;
    use crate::{ListenerOptions, ServeOptions};

    /// A thread's name and the scheduling slice it runs in.
    type Noted = (String, Option<Duration>);

    /// Notes the thread of every `accept` call and its slice, then waits
    /// forever.
    struct NotingAcceptor {
        driven_where_bound: bool,
        threads: Arc<Mutex<Vec<Noted>>>,
        noted: Arc<Notify>,
    }

    #[async_trait]
    impl TransportAcceptor for NotingAcceptor {
        async fn accept(&self) -> Result<(BoxStream, TransportInfo), TransportError> {
            let thread = thread::current().name().unwrap_or_default().to_owned();
            let slice = alknet_sched::current_slice().unwrap();
            self.threads.lock().unwrap().push((thread, slice));
            self.noted.notify_one();
            std::future::pending().await
        }

        fn describe(&self) -> String {
            format!("noting://{}", self.driven_where_bound)
        }

        fn driven_where_bound(&self) -> bool {
            self.driven_where_bound
        }
    }

    #[test]
    fn listeners_are_served_where_bound_or_on_every_core_in_short_slices() {
        let noted = Arc::new(Notify::new());
        let (bound, anywhere) = (Arc::default(), Arc::default());
        let acceptor = |driven_where_bound, threads: &Arc<Mutex<Vec<_>>>| -> Listener {
            let acceptor = NotingAcceptor {
                driven_where_bound,
                threads: threads.clone(),
                noted: noted.clone(),
            };
            (Box::new(acceptor), ListenerOptions::default())
        };
        let listeners = vec![acceptor(true, &bound), acceptor(false, &anywhere)];
        let workers = thread::available_parallelism().map_or(1, usize::from);
        let all_accepting = {
            let (bound, anywhere) = (bound.clone(), anywhere.clone());
            async move {
                let accepting = || {
                    bound.lock().unwrap().len() == 1 && anywhere.lock().unwrap().len() == workers
                };
                let waiting = async {
                    while !accepting() {
                        noted.notified().await;
                    }
                };
                tokio::time::timeout(Duration::from_secs(20), waiting)
                    .await
                    .expect("every runtime began accepting");
            }
        };
        let server = Server::new(ServeOptions::new(
            generate_ed25519("host").unwrap(),
            AuthorizedKeys::from_keys([]),
        ));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        thread::Builder::new()
            .name("calling-runtime".into())
            .spawn(move || {
                runtime
                    .block_on(server.serve_on_every_core(listeners, all_accepting))
                    .unwrap();
            })
            .unwrap()
            .join()
            .unwrap();

        let bound = bound.lock().unwrap().clone();
        let mut anywhere = anywhere.lock().unwrap().clone();
        anywhere.sort();
        let names = |noted: &[Noted]| -> Vec<String> {
            noted.iter().map(|(name, _)| name.clone()).collect()
        };
        assert_eq!(names(&bound), ["calling-runtime"]);
        let every_core: Vec<String> = (0..workers).map(|i| format!("alknet-serve-{i}")).collect();
        assert_eq!(names(&anywhere), every_core);
        // Where the kernel keeps custom slices (Linux 6.12 and later), every
        // serving thread runs in the shortest.
        let supported =
            thread::spawn(|| alknet_sched::request_short_slices(alknet_sched::MIN_SLICE))
                .join()
                .unwrap()
                .unwrap();
        if let alknet_sched::SliceOutcome::Applied(_) = supported {
            for (name, slice) in bound.iter().chain(&anywhere) {
                assert_eq!(*slice, Some(alknet_sched::MIN_SLICE), "{name}");
            }
        }
    }
}
