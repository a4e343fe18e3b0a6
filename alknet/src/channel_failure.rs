//! How a failed `direct-tcpip` open is reported across the SSH session.
//!
//! SSH has one code for every dial failure (`SSH_OPEN_CONNECT_FAILED`), and
//! russh hands the client only the code, not the text. SOCKS5 clients need
//! to know *why* (refused vs. unreachable vs. timed out), so alknet servers
//! use codes from RFC 4250's private range (0xFE000000 and up) when they
//! know the client is alknet; everyone else gets the standard codes.

use alknet_proxy::{OpenError, OpenErrorKind};
use russh::ChannelOpenFailure;

const PRIVATE_BASE: u32 = 0xFE00_0000;
const REFUSED: u32 = PRIVATE_BASE + 1;
const HOST_UNREACHABLE: u32 = PRIVATE_BASE + 2;
const NETWORK_UNREACHABLE: u32 = PRIVATE_BASE + 3;
const TIMED_OUT: u32 = PRIVATE_BASE + 4;

/// The prefix of every alknet client's SSH identification string.
pub(crate) const ALKNET_ID_PREFIX: &[u8] = b"SSH-2.0-alknet";

/// Whether the peer's identification string says it is an alknet client.
pub(crate) fn peer_is_alknet(remote_sshid: &[u8]) -> bool {
    remote_sshid.starts_with(ALKNET_ID_PREFIX)
}

/// Whether the peer's identification string says it is an alknet peer
/// that honours per-channel credit (a comment after its version).
pub(crate) fn peer_speaks_credit(remote_sshid: &[u8]) -> bool {
    peer_announces(remote_sshid, crate::tuning::CREDIT_ID_COMMENT)
}

/// Whether the peer is an alknet peer that takes each channel's first
/// grant as given at the channel's start (see "Per-channel credit" in
/// `flow.rs`).
pub(crate) fn peer_grants_at_open(remote_sshid: &[u8]) -> bool {
    peer_announces(remote_sshid, crate::tuning::CREDIT_AT_OPEN_ID_COMMENT)
}

fn peer_announces(remote_sshid: &[u8], comment: &str) -> bool {
    peer_is_alknet(remote_sshid)
        && remote_sshid
            .split(|byte| *byte == b' ')
            .skip(1)
            .any(|word| word == comment.as_bytes())
}

/// The channel-open failure a server sends for a dial error.
pub(crate) fn failure_for(kind: OpenErrorKind, peer_is_alknet: bool) -> ChannelOpenFailure {
    let private = |code: u32, reason: &str| {
        if peer_is_alknet {
            ChannelOpenFailure::Other {
                code,
                reason: reason.to_owned(),
            }
        } else {
            ChannelOpenFailure::ConnectFailed
        }
    };
    match kind {
        OpenErrorKind::ConnectionRefused => private(REFUSED, "Connection refused"),
        OpenErrorKind::HostUnreachable | OpenErrorKind::NameNotResolved => {
            private(HOST_UNREACHABLE, "Host unreachable")
        }
        OpenErrorKind::NetworkUnreachable => private(NETWORK_UNREACHABLE, "Network unreachable"),
        OpenErrorKind::TimedOut => private(TIMED_OUT, "Connection timed out"),
        OpenErrorKind::NotAllowed => ChannelOpenFailure::AdministrativelyProhibited,
        _ => ChannelOpenFailure::ConnectFailed,
    }
}

/// What a client makes of a channel-open failure it received.
pub(crate) fn open_error_for(failure: &ChannelOpenFailure) -> OpenError {
    let kind = match failure.code() {
        REFUSED => OpenErrorKind::ConnectionRefused,
        HOST_UNREACHABLE => OpenErrorKind::HostUnreachable,
        NETWORK_UNREACHABLE => OpenErrorKind::NetworkUnreachable,
        TIMED_OUT => OpenErrorKind::TimedOut,
        _ if *failure == ChannelOpenFailure::AdministrativelyProhibited => {
            OpenErrorKind::NotAllowed
        }
        _ => OpenErrorKind::Other,
    };
    OpenError::with_detail(
        kind,
        format!("server refused the channel (code {})", failure.code()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL_KINDS: [OpenErrorKind; 8] = [
        OpenErrorKind::ConnectionRefused,
        OpenErrorKind::HostUnreachable,
        OpenErrorKind::NameNotResolved,
        OpenErrorKind::NetworkUnreachable,
        OpenErrorKind::TimedOut,
        OpenErrorKind::NotAllowed,
        OpenErrorKind::TunnelDown,
        OpenErrorKind::Other,
    ];

    #[test]
    fn alknet_peers_get_every_dial_failure_back_intact() {
        for kind in ALL_KINDS {
            let received = open_error_for(&failure_for(kind, true)).kind();
            let expected = match kind {
                // A server never reports its own tunnel as down.
                OpenErrorKind::TunnelDown => OpenErrorKind::Other,
                // SOCKS5 has no code for it: an unknown name is an
                // unreachable host there too.
                OpenErrorKind::NameNotResolved => OpenErrorKind::HostUnreachable,
                other => other,
            };
            assert_eq!(received, expected, "{kind:?}");
        }
    }

    #[test]
    fn other_peers_only_see_standard_codes() {
        for kind in ALL_KINDS {
            let code = failure_for(kind, false).code();
            assert!((1..=4).contains(&code), "{kind:?} gave code {code:#x}");
        }
        assert_eq!(
            failure_for(OpenErrorKind::ConnectionRefused, false),
            ChannelOpenFailure::ConnectFailed
        );
    }

    #[test]
    fn standard_codes_from_openssh_servers_are_understood() {
        let kind = |f: ChannelOpenFailure| open_error_for(&f).kind();
        assert_eq!(
            kind(ChannelOpenFailure::ConnectFailed),
            OpenErrorKind::Other
        );
        assert_eq!(
            kind(ChannelOpenFailure::AdministrativelyProhibited),
            OpenErrorKind::NotAllowed
        );
        assert_eq!(
            kind(ChannelOpenFailure::ResourceShortage),
            OpenErrorKind::Other
        );
    }

    #[test]
    fn identification_strings() {
        assert!(peer_is_alknet(b"SSH-2.0-alknet_0.1.0"));
        assert!(!peer_is_alknet(b"SSH-2.0-OpenSSH_9.6"));
        assert!(!peer_is_alknet(b""));
        assert!(peer_speaks_credit(b"SSH-2.0-alknet_0.2.0 credit"));
        assert!(peer_speaks_credit(b"SSH-2.0-alknet_0.2.0 other credit"));
        assert!(!peer_speaks_credit(b"SSH-2.0-alknet_0.1.0"));
        assert!(!peer_speaks_credit(b"SSH-2.0-alknet_0.2.0 credits"));
        assert!(peer_grants_at_open(
            b"SSH-2.0-alknet_0.2.0 credit credit-open"
        ));
        assert!(!peer_grants_at_open(b"SSH-2.0-alknet_0.2.0 credit"));
        assert!(!peer_grants_at_open(b"SSH-2.0-OpenSSH_9.6 credit-open"));
        assert!(!peer_speaks_credit(b"SSH-2.0-OpenSSH_9.6 credit"));
        let ours = match crate::tuning::ssh_id() {
            russh::SshId::Standard(id) => id.into_owned(),
            other => panic!("unexpected {other:?}"),
        };
        assert!(peer_speaks_credit(ours.as_bytes()), "{ours}");
        assert!(peer_grants_at_open(ours.as_bytes()), "{ours}");
    }
}
