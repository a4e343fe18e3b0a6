//! Deciding, from the first bytes a client sends, whether it speaks SSH,
//! HTTP/2 or something else.

/// Every SSH-2.0 client starts with this (RFC 4253 §4.2).
pub(crate) const SSH_PREFIX: &[u8] = b"SSH-2.0-";

/// Every HTTP/2 client starts with this (RFC 9113 §3.4), right after a TLS
/// handshake that chose ALPN `h2`.
pub(crate) const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What the bytes received so far say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Still a prefix of `SSH-2.0-`: read more.
    NeedMore,
    /// The client speaks SSH.
    Ssh,
    /// The client speaks HTTP/2.
    Http2,
    /// Anything else (HTTP, a scanner, garbage).
    Other,
}

/// Where `received` stands against `prefix`: fully matched, still a
/// prefix of it, or not it.
fn against(received: &[u8], prefix: &[u8]) -> Option<bool> {
    let compared = received.len().min(prefix.len());
    (received[..compared] == prefix[..compared]).then_some(compared == prefix.len())
}

/// What `received` says; SSH is recognised only when `ssh_allowed` (on a
/// listener that requires a knock, a bare SSH banner is just more garbage).
pub(crate) fn classify(received: &[u8], ssh_allowed: bool) -> Decision {
    let ssh = if ssh_allowed {
        against(received, SSH_PREFIX)
    } else {
        None
    };
    match (ssh, against(received, H2_PREFACE)) {
        (Some(true), _) => Decision::Ssh,
        (_, Some(true)) => Decision::Http2,
        (Some(false), _) | (_, Some(false)) => Decision::NeedMore,
        (None, None) => Decision::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssh_is_recognised_even_one_byte_at_a_time() {
        let line = b"SSH-2.0-OpenSSH_9.6\r\n";
        for end in 0..SSH_PREFIX.len() {
            assert_eq!(classify(&line[..end], true), Decision::NeedMore, "{end}");
        }
        for end in SSH_PREFIX.len()..=line.len() {
            assert_eq!(classify(&line[..end], true), Decision::Ssh, "{end}");
        }
    }

    #[test]
    fn anything_else_is_decided_at_the_first_differing_byte() {
        assert_eq!(classify(b"G", true), Decision::Other);
        assert_eq!(classify(b"GET / HTTP/1.1\r\n", true), Decision::Other);
        assert_eq!(classify(b"SSH-1.99-old", true), Decision::Other);
        assert_eq!(classify(b"\x16\x03\x01", true), Decision::Other);
        assert_eq!(classify(b"ssh-2.0-", true), Decision::Other);
    }

    #[test]
    fn http2_is_recognised_by_its_preface_and_ssh_only_when_allowed() {
        for end in 0..H2_PREFACE.len() {
            assert_eq!(
                classify(&H2_PREFACE[..end], false),
                Decision::NeedMore,
                "{end}"
            );
        }
        assert_eq!(classify(H2_PREFACE, true), Decision::Http2);
        assert_eq!(classify(b"PRI * HTTP/1.1\r\n", true), Decision::Other);
        assert_eq!(classify(b"SSH-2.0-OpenSSH_9.2\r\n", false), Decision::Other);
        assert_eq!(classify(b"", false), Decision::NeedMore);
        assert_eq!(classify(b"GET", false), Decision::Other);
    }
}
