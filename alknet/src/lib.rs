//! alknet: SSH tunnels over any byte pipe.
//!
//! This facade crate holds the SSH glue — a [`Server`] that authenticates
//! clients and hands their channels on, and a [`Client`] that opens such
//! channels — and re-exports the crates it ties together:
//!
//! - [`transport`]: the byte pipes SSH runs over (TCP, TLS, iroh), and the
//!   **connector** seam ([`proxy::StreamOpener`]: "open a byte stream to a
//!   target", implemented by a direct connect, an outbound proxy and the
//!   SSH [`Client`] alike);
//! - [`auth`]: keys, authorized_keys, certificates, logins, and
//!   **admission** — [`auth::AuthConfig::admit`] is the one function that
//!   decides every channel a session asks for;
//! - [`call`]: the call protocol served on the `alknet-control:0` channel;
//! - [`proxy`]: the SOCKS5 server, forwards, the dialer, proxies and the relay;
//! - [`stealth`]: telling SSH from web traffic on one port, and playing nginx.
//!
//! On the server a channel request travels one way:
//!
//! ```text
//!  russh callback ──► admission (auth) ──► ChannelSink ──► relay
//!                       allow | refusal       ├─ DialSink (default): Dialer, direct or via --proxy,
//!                                             │    each resolved address re-admitted
//!                                             ├─ the control channel: the call protocol
//!                                             └─ yours: ServeOptions::sink / ::route
//! ```
//!
//! A **channel sink** ([`ChannelSink`]) receives each admitted channel with
//! who opened it, where it asks to go, and over what
//! ([`IncomingChannel::info`]); it accepts it as a byte stream or rejects
//! it with a reason. `examples/echo_sink.rs` answers one target itself and
//! tunnels the rest.
//!
//! A [`Client`] is a [`proxy::StreamOpener`], so putting a SOCKS5 server in
//! front of it is one line. Every session also carries the call protocol:
//! the server answers `alknet-control:0` channels from its
//! [`call::OperationRegistry`] ([`Server::registry`]) and routes to spokes
//! through its [`call::Hub`] ([`Server::hub`]); [`Client::open_control`]
//! opens one as a [`call::Caller`]. A [`ReconnectingClient`] is the same
//! with a session that is re-established whenever it ends, which is what
//! `alknet connect` runs; [`Server::serve_on_every_core`] is what `alknet
//! serve` runs.
//!
//! # Example
//!
//! A server and a client in one process, tunnelling one connection:
//!
//! ```
//! use alknet::auth::{AuthorizedKeys, generate_ed25519};
//! use alknet::proxy::{StreamOpener, TargetAddr};
//! use alknet::transport::{TcpAcceptor, TcpTransport};
//! use alknet::{Client, ConnectOptions, ServeOptions, Server};
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let host_key = generate_ed25519("server")?;
//! let user_key = generate_ed25519("user")?;
//! let authorized = AuthorizedKeys::from_keys([user_key.public_key().clone()]);
//!
//! let acceptor = TcpAcceptor::bind("127.0.0.1:0").await?;
//! let transport = TcpTransport::new(acceptor.local_addr().to_string());
//! let server = Server::new(ServeOptions::new(host_key, authorized));
//! let pin = server.host_key_fingerprint();
//! tokio::spawn(async move { server.serve(&acceptor, std::future::pending()).await });
//!
//! // Something to tunnel to.
//! let target = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let target_addr = TargetAddr::Ip(target.local_addr()?);
//! tokio::spawn(async move {
//!     let (mut socket, _) = target.accept().await.unwrap();
//!     socket.write_all(b"hello through the tunnel").await.unwrap();
//! });
//!
//! let client = Client::connect(&transport, ConnectOptions::new(user_key, "me").with_host_key(pin)).await?;
//! let mut stream = client.open(&target_addr).await?;
//! let mut greeting = String::new();
//! stream.read_to_string(&mut greeting).await?;
//! assert_eq!(greeting, "hello through the tunnel");
//! # Ok(())
//! # }
//! ```

#![forbid(unsafe_code)]

mod backoff;
mod channel_failure;
mod client;
mod control;
mod error;
mod flow;
mod kill_switch;
mod listen;
mod policy_opener;
mod reconnect;
mod remote_forward;
mod server;
mod session_wear;
mod stealth_knock;
mod transport_spec;
mod tuning;
mod udp_remote_forward;

#[cfg(feature = "acme")]
pub use alknet_acme as acme;
pub use alknet_auth as auth;
pub use alknet_call as call;
pub use alknet_proxy as proxy;
pub use alknet_sched as sched;
pub use alknet_stealth as stealth;
pub use alknet_transport as transport;

pub use client::{Client, ConnectOptions, KnownHostsCheck};
pub use control::{CONTROL_HOST, CONTROL_PORT};
pub use error::{ChangedHostKey, Error};
pub use listen::{
    BoundListeners, ListenSpec, ListenerSettings, Pem, TransportChoice, bind_listeners,
};
pub use policy_opener::default_client_policy;
pub use reconnect::{ReconnectingClient, SessionState};
pub use remote_forward::RemoteForwardPort;
pub use server::{
    ChannelInfo, ChannelSink, ChannelTarget, DEFAULT_MAX_CHANNELS_PER_SESSION, DialSink,
    IncomingChannel, Listener, ListenerOptions, RESERVED_HOST_PREFIX, ServeOptions, Server,
};
pub use transport_spec::TransportSpec;
