//! The harness behind `cargo xtask test` and `cargo xtask bench`.
//!
//! Whole-program tests start the real `alknet` binary and drive it with
//! independent tools (curl, OpenSSH's `ssh`, `sshd` and `ssh-keygen`). This
//! library holds what they share: building the binary, starting processes
//! with their output captured to files, waiting for log lines, stopping
//! every process by its PID, a small HTTP target, a raw SOCKS5 client and
//! a throwaway `sshd`.
//!
//! Every server listens on a loopback port the kernel picks; every wait is
//! bounded in time.
//!
//! ```no_run
//! use xtask::{AlknetServer, Workdir};
//! let dir = Workdir::new()?;
//! let server = AlknetServer::start(&dir, &[])?;
//! println!("alknet serve on port {}", server.port);
//! # Ok::<(), xtask::XtaskError>(())
//! ```

#![forbid(unsafe_code)]

mod alknet;
mod cargo;
mod certs;
mod delay_proxy;
mod error;
mod http_target;
mod pebble;
mod process;
mod socks;
mod ssh_client;
mod sshd;
mod tools;
mod udp_delay_proxy;
mod udp_echo;
mod upstream_proxies;
mod vanishing_link;

pub use alknet::{
    AlknetClient, AlknetServer, TEST_LOG_FILTER, alknet_command, call_command, call_command_to,
    connect_command, connect_command_to, listener_port,
};
pub use cargo::{
    Profile, alknet_binary, call_bench_binary, example_binary, release_example_binary,
};
pub use certs::{TlsFiles, ca_signed_server_cert, self_signed_cert};
pub use delay_proxy::DelayProxy;
pub use error::XtaskError;
pub use http_target::HttpTarget;
pub use pebble::{Pebble, PebblePorts};
pub use process::{BoundedOutput, OUTPUT_LIMIT, Spawned, wait_until};
pub use socks::{socks5_connect, socks5_connect_reply};
pub use ssh_client::{SshDynamicForward, current_user, openssh_client};
pub use sshd::Sshd;
pub use tools::{
    Workdir, free_port, free_tcp_and_udp_port, free_udp_port, iroh_peer_args, iroh_peer_args_at,
    require_tool, sha256_hex, ssh_keygen_ed25519, ssh_public_key_fingerprint, tool_installed,
};
pub use udp_delay_proxy::{LossBurst, UdpDelayProxy};
pub use udp_echo::UdpEcho;
pub use upstream_proxies::UpstreamProxyProcess;
pub use vanishing_link::VanishingLink;

/// Results in this crate.
pub type Result<T, E = XtaskError> = std::result::Result<T, E>;
