//! `alknet serve`.
//!
//! The server runs one single-threaded tokio runtime per core, each
//! accepting from the shared listener: a connection then lives its whole
//! life on one thread (like OpenSSH's process per connection), so packets
//! pass between its SSH session and its relays without cross-thread
//! wake-ups, while different connections still use every core. Measured
//! with `cargo xtask bench` on 2 cores: ~1200 MiB/s against ~1110 MiB/s
//! with one multi-threaded runtime.

use std::sync::Arc;
use std::thread;

use alknet::auth::{AuthorizedKeys, load_private_key};
use alknet::transport::{TcpAcceptor, TransportAcceptor};
use alknet::{ServeOptions, Server};
use tokio::sync::{oneshot, watch};
use tracing::{info, warn};

use crate::cli::ServeArgs;
use crate::error::CliError;
use crate::signals::shutdown_signal;

pub(crate) async fn run(args: ServeArgs) -> Result<(), CliError> {
    let host_key = load_private_key(args.key.as_path(), super::passphrase().as_deref())?;
    let authorized_keys = AuthorizedKeys::load(args.authorized_keys.as_path())?;
    for skipped in authorized_keys.skipped() {
        warn!(
            file = %args.authorized_keys.display(),
            line = skipped.line,
            reason = %skipped.reason,
            "authorized_keys line ignored"
        );
    }
    if authorized_keys.is_empty() {
        return Err(CliError::NoAuthorizedKeys {
            path: args.authorized_keys.display().to_string(),
        });
    }

    let shutdown = shutdown_signal()?;
    let acceptor = Arc::new(TcpAcceptor::bind(&args.listen).await?);
    let mut options = ServeOptions::new(host_key, authorized_keys);
    options.max_auth_attempts = args.max_auth_attempts;
    options.gateway_ports = args.gateway_ports;
    options.proxy = args.proxy;
    let server = Server::new(options);
    info!(
        listen = %acceptor.describe(),
        host_key = %server.host_key_fingerprint(),
        "alknet server ready"
    );

    let (stop, stopped) = watch::channel(false);
    let workers = thread::available_parallelism().map_or(1, usize::from);
    let mut finished = Vec::with_capacity(workers);
    for index in 0..workers {
        let (server, acceptor, mut stopped) = (server.clone(), acceptor.clone(), stopped.clone());
        let (done, done_rx) = oneshot::channel::<()>();
        finished.push(done_rx);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(CliError::Runtime)?;
        thread::Builder::new()
            .name(format!("alknet-serve-{index}"))
            .spawn(move || {
                runtime.block_on(async move {
                    let shutdown = async move {
                        let _ = stopped.wait_for(|stop| *stop).await;
                    };
                    if let Err(error) = server.serve(acceptor.as_ref(), shutdown).await {
                        warn!(%error, "server worker stopped");
                    }
                });
                let _ = done.send(());
            })
            .map_err(CliError::Runtime)?;
    }

    // This runtime keeps driving the listener the workers accept from.
    shutdown.await;
    let _ = stop.send(true);
    for done in finished {
        let _ = done.await;
    }
    info!("server stopped");
    Ok(())
}
