//! Ctrl-C and SIGTERM, the two ways an operator asks alknet to stop.

use crate::error::CliError;

/// A future that completes on the first SIGINT or SIGTERM. Handlers are
/// installed before this returns, so a signal arriving early is not lost.
pub(crate) fn shutdown_signal() -> Result<impl Future<Output = ()> + Send + 'static, CliError> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut interrupt = signal(SignalKind::interrupt()).map_err(CliError::Signals)?;
        let mut terminate = signal(SignalKind::terminate()).map_err(CliError::Signals)?;
        Ok(async move {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
        })
    }
}
