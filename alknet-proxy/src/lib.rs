//! SOCKS5, outbound dialing and relaying for alknet.
//!
//! The SOCKS5 server ([`Socks5Server`]) turns each CONNECT into a stream
//! opened through a [`StreamOpener`] — in alknet an SSH `direct-tcpip`
//! channel, in tests a plain TCP connect ([`DirectConnector`]) — and then
//! [`relay`]s bytes both ways with correct half-close. The server side
//! reaches tunnel targets through a [`Dialer`]: directly, or through an
//! [`UpstreamProxy`].
//!
//! The connector seam itself ([`StreamOpener`], [`TargetAddr`],
//! [`OpenError`]) is defined in the permissively licensed
//! alknet-transport and re-exported here.
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
//! use alknet_proxy::{Dialer, Socks5Server};
//!
//! # #[tokio::main] async fn main() -> std::io::Result<()> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:1080").await?;
//! let opener = Arc::new(Dialer::direct(Duration::from_secs(10)));
//! Socks5Server::new(opener).serve(listener).await;
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]

mod accept_loop;
mod dialer;
mod error;
mod forward_spec;
mod http_proxy;
mod local_forward;
mod relay;
mod socks5;
pub mod udp_frame;
pub mod udp_relay;
mod upstream;

pub use dialer::Dialer;
pub use error::ProxyError;
pub use forward_spec::{ForwardSpec, ForwardTarget};
pub use http_proxy::HttpProxyServer;
pub use local_forward::LocalForward;
pub use relay::{relay, relay_until};
pub use socks5::{Socks5Config, Socks5Server};
pub use upstream::UpstreamProxy;

/// The connector seam, re-exported from alknet-transport so that users of
/// this crate need not name it.
#[doc(inline)]
pub use alknet_transport::{
    BoxStream, DirectConnector, OpenError, OpenErrorKind, StreamOpener, TargetAddr, connect_direct,
    connect_unix,
};
