//! Log output: tracing to stderr, INFO unless `RUST_LOG` says otherwise.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// russh logs through the `log` crate; its INFO lines are protocol chatter,
/// so it is held to warnings unless RUST_LOG asks for more. iroh and its
/// QUIC stack (noq) are held to warnings too: iroh opens an INFO span around
/// every UDP send, whose fields (the path's addresses) were formatted each
/// time — about 4 % of the server's CPU over iroh.
const DEFAULT_FILTER: &str = "info,russh=warn,iroh=warn,noq=warn";

pub(crate) fn init() {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        // Colour codes would break log parsers such as fail2ban.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn by_default_iroh_and_quic_spans_are_not_built_but_alknet_lines_are() {
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(EnvFilter::new(DEFAULT_FILTER))
            .with_writer(std::io::sink)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            // What iroh opens around every UDP send, and noq per packet.
            let per_send = tracing::info_span!(target: "iroh::socket::transports", "poll_send");
            assert!(per_send.is_disabled());
            assert!(tracing::info_span!(target: "noq_proto::connection", "send").is_disabled());
            assert!(tracing::enabled!(target: "iroh::socket", tracing::Level::WARN));
            assert!(!tracing::enabled!(target: "russh::server", tracing::Level::INFO));
            assert!(tracing::enabled!(target: "alknet::server", tracing::Level::INFO));
        });
    }
}
