//! The russh settings alknet runs with, in one place.
//!
//! russh's defaults are tuned for interactive shells; a tunnel moves bulk
//! data over many channels. Each value here has its reason beside it, and
//! `cargo xtask bench` measures the result against OpenSSH.

use std::borrow::Cow;
use std::time::Duration;

use russh::keys::{Certificate, PrivateKey};
use russh::{MethodKind, MethodSet, Preferred, SshId, cipher};

/// The window a server grants per channel to peers without per-channel
/// credit (OpenSSH and older alknet clients), and at first to all. It is
/// what such a peer may send ahead on a channel whose reader stalled, and
/// it bounds an upload's speed over a long link (window / round trip).
pub(crate) const WINDOW_SIZE: u32 = 16 * 1024 * 1024;

/// The window a server grants per channel to an alknet client, whose
/// channels' credit bounds what it sends ahead (see "Per-channel credit"
/// in `flow.rs`): twice the largest credit, so the window — which russh
/// renews only once half is used — is never what a channel waits for.
pub(crate) const CREDITED_WINDOW_SIZE: u32 = 128 * 1024 * 1024;

/// The window a client grants the server per channel. Against an alknet
/// server it only has to stay out of the credit's way (twice the largest
/// credit, as [`CREDITED_WINDOW_SIZE`]); what other servers may send ahead
/// is bounded by the session backlog marks below.
///
/// Per-channel credit is what made a large one safe: at 32 MiB without it
/// the remote-forward echo test (bulk both ways, a slow reader behind the
/// server) deadlocked every time — the client, reading on to reach a window
/// adjustment, took in the server's data without bound.
pub(crate) const CLIENT_WINDOW_SIZE: u32 = 128 * 1024 * 1024;

/// The credit a channel starts with (see "Per-channel credit" in
/// `flow.rs`): what an idle or slow channel may hold unread while its
/// reader is stalled — OpenSSH's channel window.
pub(crate) const CHANNEL_CREDIT_START: u64 = 2 * 1024 * 1024;

/// The most a channel's credit grows to while its link is what limits it:
/// a channel's speed over a long link is at most its credit per round
/// trip. 64 MiB carried ~240 MiB/s at 100 ms in `cargo xtask bench
/// --wan-only` (32 MiB ~170, OpenSSH's 2 MiB window ~18.5); at 50 ms this
/// machine's CPU, not the credit, was the limit (~340 MiB/s).
pub(crate) const CHANNEL_CREDIT_MAX: u64 = 64 * 1024 * 1024;

/// How far a session's channels' credit may grow beyond the start, summed
/// over them: room for one channel at the largest credit and another at
/// half of it. Stalled channels then hold at most this plus the starting
/// credit each; idle channels take none of it.
pub(crate) const SESSION_CREDIT_CAP: usize = 96 * 1024 * 1024;

/// Largest channel data packet we accept. Fewer, larger packets mean fewer
/// MACs and syscalls per byte; russh warns above 65535.
pub(crate) const MAX_PACKET_SIZE: u32 = 65535;

/// Messages russh may queue per channel. russh's session loop stops —
/// reading *and* writing — when one channel's queue is full, which can
/// deadlock a session whose target couples both directions (see
/// `flow.rs`); so the queue is made large enough never to fill, and memory
/// is bounded per session instead (see the marks below). A queue slot is
/// allocated only when used.
const CHANNEL_QUEUE: usize = 1 << 20;

/// Bytes one session may hold received but unread, over all its channels
/// (each message also counts 128 bytes of overhead), before it slows its
/// peer: a server grants no more window; a client pauses reading while its
/// readers drain. See `flow.rs`.
pub(crate) const SESSION_BACKLOG_SOFT: usize = 8 * 1024 * 1024;

/// The window a server grants while its session is over the soft mark:
/// just enough that the peer's next byte brings the next grant (and the
/// full window back once readers caught up). russh only grants when a
/// channel's window is below half of this, so it must be at least 2.
pub(crate) const TRICKLE_WINDOW: u32 = 2;

/// Past this, a session reads from its transport only to stay alive (one
/// read every 5 s): the last bound on a session's channel memory, reached
/// only when many channels' readers are stuck with full windows.
pub(crate) const SESSION_BACKLOG_MAX: usize = 128 * 1024 * 1024;

/// The comment in our identification string that says this peer grants
/// and honours per-channel credit (see `flow.rs`): an alknet server offers
/// credit to clients that announce it, so an older alknet client is left
/// to the SSH window.
pub(crate) const CREDIT_ID_COMMENT: &str = "credit";

/// The comment that says this peer takes each channel's first grant as
/// given when the channel opens, so neither side sends it: two packets
/// fewer on every tunnel's first round trip. Only used when both peers
/// announce it; with older alknet peers the first grants are sent.
pub(crate) const CREDIT_AT_OPEN_ID_COMMENT: &str = "credit-open";

pub(crate) fn ssh_id() -> SshId {
    SshId::Standard(Cow::Owned(format!(
        "SSH-2.0-alknet_{} {CREDIT_ID_COMMENT} {CREDIT_AT_OPEN_ID_COMMENT}",
        env!("CARGO_PKG_VERSION")
    )))
}

/// Algorithm preferences: russh's safe defaults, but with AES-GCM first
/// when the CPU has AES instructions (several times faster than
/// ChaCha20-Poly1305 there), as OpenSSH itself would pick.
pub(crate) fn preferred() -> Preferred {
    let cipher: &'static [cipher::Name] = if cpu_has_aes() {
        &[
            cipher::AES_128_GCM,
            cipher::AES_256_GCM,
            cipher::CHACHA20_POLY1305,
            cipher::AES_256_CTR,
            cipher::AES_128_CTR,
        ]
    } else {
        &[
            cipher::CHACHA20_POLY1305,
            cipher::AES_128_GCM,
            cipher::AES_256_GCM,
            cipher::AES_256_CTR,
            cipher::AES_128_CTR,
        ]
    };
    Preferred {
        cipher: Cow::Borrowed(cipher),
        // Ask for a host certificate first (checked through known_hosts'
        // @cert-authority lines; without one, its key is checked as a
        // plain key).
        host_key_certificates: Cow::Borrowed(&[russh::keys::Algorithm::Ed25519]),
        ..Preferred::default()
    }
}

fn cpu_has_aes() -> bool {
    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
    {
        std::arch::is_x86_feature_detected!("aes")
            && std::arch::is_x86_feature_detected!("pclmulqdq")
    }
    #[cfg(target_arch = "aarch64")]
    {
        std::arch::is_aarch64_feature_detected!("aes")
    }
    #[cfg(not(any(target_arch = "x86", target_arch = "x86_64", target_arch = "aarch64")))]
    {
        false
    }
}

/// Server settings that are not tunnel-specific policy.
pub(crate) struct ServerTuning {
    pub(crate) max_auth_attempts: usize,
    pub(crate) keepalive_interval: Duration,
}

impl ServerTuning {
    /// russh counts OpenSSH's opening "none" probe as an attempt; users
    /// count keys tried.
    pub(crate) fn russh_max_auth_attempts(&self) -> usize {
        self.max_auth_attempts.saturating_add(1)
    }
}

pub(crate) fn server_config(
    host_key: PrivateKey,
    certificates: &[Certificate],
    tuning: &ServerTuning,
) -> russh::server::Config {
    russh::server::Config {
        server_id: ssh_id(),
        methods: MethodSet::from(&[MethodKind::PublicKey][..]),
        // OpenSSH probes with "none" first; delaying that answer would add
        // a second to every connect. Real rejections stay slow.
        auth_rejection_time_initial: Some(Duration::ZERO),
        auth_rejection_time: Duration::from_millis(500),
        keys: vec![host_key],
        certificates: certificates.to_vec(),
        window_size: WINDOW_SIZE,
        maximum_packet_size: MAX_PACKET_SIZE,
        channel_buffer_size: CHANNEL_QUEUE,
        preferred: preferred(),
        max_auth_attempts: tuning.russh_max_auth_attempts(),
        // Idle tunnels are normal; dead peers are found by keepalives.
        inactivity_timeout: None,
        keepalive_interval: Some(tuning.keepalive_interval),
        keepalive_max: 3,
        nodelay: true,
        ..Default::default()
    }
}

pub(crate) fn client_config(keepalive_interval: Duration) -> russh::client::Config {
    russh::client::Config {
        client_id: ssh_id(),
        window_size: CLIENT_WINDOW_SIZE,
        maximum_packet_size: MAX_PACKET_SIZE,
        channel_buffer_size: CHANNEL_QUEUE,
        preferred: preferred(),
        inactivity_timeout: None,
        keepalive_interval: Some(keepalive_interval),
        keepalive_max: 3,
        nodelay: true,
        ..Default::default()
    }
}
