//! SOCKS5, outbound dialing and relaying for alknet.
//!
//! The SOCKS5 server ([`Socks5Server`]) turns each CONNECT into a stream
//! opened through a [`StreamOpener`] — in alknet an SSH `direct-tcpip`
//! channel, in tests a plain TCP connect ([`DirectOpener`]) — and then
//! [`relay`]s bytes both ways with correct half-close.
//!
//! ```text
//!  SOCKS5 client ──► Socks5Server ──StreamOpener::open(target)──► tunnel ──► target
//!                         └──────────────── relay ─────────────────┘
//! ```
//!
//! Targets ([`TargetAddr`]) are user data: nothing in this crate logs them,
//! and no error message contains them.
//!
//! # Example
//!
//! A SOCKS5 proxy that connects directly, the way the alknet server does:
//!
//! ```no_run
//! use std::{sync::Arc, time::Duration};
//! use alknet_proxy::{DirectOpener, Socks5Server};
//!
//! # #[tokio::main] async fn main() -> std::io::Result<()> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:1080").await?;
//! let opener = Arc::new(DirectOpener::new(Duration::from_secs(10)));
//! Socks5Server::new(opener).serve(listener).await;
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]

mod dial;
mod error;
mod forward_spec;
mod local_forward;
mod opener;
mod relay;
mod socks5;
mod target;
mod upstream;

pub use dial::{DirectOpener, connect_direct, connect_direct_filtered, connect_unix};
pub use error::ProxyError;
pub use forward_spec::{ForwardSpec, ForwardTarget};
pub use local_forward::LocalForward;
pub use opener::{OpenError, OpenErrorKind, StreamOpener};
pub use relay::relay;
pub use socks5::{Socks5Config, Socks5Server};
pub use target::TargetAddr;
pub use upstream::{ProxiedOpener, UpstreamProxy};

/// The stream type openers return, re-exported from alknet-transport.
pub use alknet_transport::BoxStream;
