//! Deciding, from the first bytes a client sends, whether it speaks SSH.

/// Every SSH-2.0 client starts with this (RFC 4253 §4.2).
pub(crate) const SSH_PREFIX: &[u8] = b"SSH-2.0-";

/// What the bytes received so far say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Still a prefix of `SSH-2.0-`: read more.
    NeedMore,
    /// The client speaks SSH.
    Ssh,
    /// Anything else (HTTP, a scanner, garbage).
    Other,
}

pub(crate) fn classify(received: &[u8]) -> Decision {
    let compared = received.len().min(SSH_PREFIX.len());
    if received[..compared] != SSH_PREFIX[..compared] {
        Decision::Other
    } else if compared == SSH_PREFIX.len() {
        Decision::Ssh
    } else {
        Decision::NeedMore
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssh_is_recognised_even_one_byte_at_a_time() {
        let line = b"SSH-2.0-OpenSSH_9.6\r\n";
        for end in 0..SSH_PREFIX.len() {
            assert_eq!(classify(&line[..end]), Decision::NeedMore, "{end}");
        }
        for end in SSH_PREFIX.len()..=line.len() {
            assert_eq!(classify(&line[..end]), Decision::Ssh, "{end}");
        }
    }

    #[test]
    fn anything_else_is_decided_at_the_first_differing_byte() {
        assert_eq!(classify(b"G"), Decision::Other);
        assert_eq!(classify(b"GET / HTTP/1.1\r\n"), Decision::Other);
        assert_eq!(classify(b"SSH-1.99-old"), Decision::Other);
        assert_eq!(classify(b"\x16\x03\x01"), Decision::Other);
        assert_eq!(classify(b"ssh-2.0-"), Decision::Other);
    }
}
