//! `alknet serve`.

use alknet::auth::{AuthorizedKeys, load_private_key};
use alknet::transport::{TcpAcceptor, TransportAcceptor};
use alknet::{ServeOptions, Server};
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
    let acceptor = TcpAcceptor::bind(&args.listen).await?;
    let mut options = ServeOptions::new(host_key, authorized_keys);
    options.max_auth_attempts = args.max_auth_attempts;
    let server = Server::new(options);
    info!(
        listen = %acceptor.describe(),
        host_key = %server.host_key_fingerprint(),
        "alknet server ready"
    );
    server.serve(&acceptor, shutdown).await?;
    info!("server stopped");
    Ok(())
}
