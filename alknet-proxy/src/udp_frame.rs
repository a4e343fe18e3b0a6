//! Datagrams over a byte stream: the framing of a channel to the reserved
//! target `alknet-udp:0`. Pure byte handling; no sockets.
//!
//! Each datagram is one frame:
//!
//! ```text
//! frame   = length:u16be || atyp:u8 || address || port:u16be || payload
//! length  = the number of bytes after the length field
//! atyp    = 1: IPv4, address is 4 bytes
//!           3: a name, address is len:u8 || len bytes of UTF-8 (1..=255)
//!           4: IPv6, address is 16 bytes
//! ```
//!
//! The address is written as in a SOCKS5 request (RFC 1928 §5). From the
//! client, it is where the datagram goes; from the server, where the reply
//! came from. A payload is at most [`MAX_PAYLOAD`] bytes (IPv4's largest
//! UDP payload), and a frame at most 65 535 bytes after its length, so a
//! largest payload fits with an IP address but not with a long name.
//!
//! A stream whose frames cannot be read (an unknown address type, a length
//! too short for its address) is broken: the association ends.
//!
//! **Remote UDP forwards** (`-R [bind:]port:host:hostport/udp`) use the same
//! frames on a `direct-tcpip` channel the client opens to
//! [`UDP_LISTEN_HOST`], with the port to listen on as the target port and
//! the bind address as the originator address. The server judges it as a
//! `tcpip-forward` request, binds, and sends first a frame naming the
//! address it bound (empty payload). Then each datagram that arrives there
//! is framed to the client with its sender's address, and each frame the
//! client sends back goes from the bound socket to the sender it names —
//! only to senders that have sent to it.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::TargetAddr;

/// The reserved channel target that carries datagrams.
pub const UDP_SERVICE_HOST: &str = "alknet-udp";
/// Its port.
pub const UDP_SERVICE_PORT: u16 = 0;
/// The reserved channel target of a remote UDP forward's listener.
pub const UDP_LISTEN_HOST: &str = "alknet-udp-listen";
/// The largest datagram payload carried (65 535 − 8 − 20).
pub const MAX_PAYLOAD: usize = 65_507;

const ATYP_IPV4: u8 = 1;
const ATYP_NAME: u8 = 3;
const ATYP_IPV6: u8 = 4;

/// One datagram and its far-end address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Datagram {
    /// Where it goes (client → server) or where it came from (server →
    /// client).
    pub addr: TargetAddr,
    /// Its bytes.
    pub payload: Bytes,
}

/// Why a datagram cannot be framed, or a frame read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UdpFrameError {
    /// The payload, with its address, does not fit in one frame.
    #[error("a datagram of {0} bytes does not fit in one frame")]
    TooLarge(usize),
    /// A name that is empty, longer than 255 bytes, or not UTF-8.
    #[error("the datagram's host name is empty, longer than 255 bytes or not UTF-8")]
    BadName,
    /// An address type other than 1, 3 or 4.
    #[error("unknown address type {0} in a datagram frame")]
    AddressType(u8),
    /// The frame's length leaves no room for its address.
    #[error("a datagram frame is shorter than its address")]
    Truncated,
}

/// Appends the frame of `payload` for `addr` to `out`.
pub fn encode_datagram(
    addr: &TargetAddr,
    payload: &[u8],
    out: &mut BytesMut,
) -> Result<(), UdpFrameError> {
    if payload.len() > MAX_PAYLOAD {
        return Err(UdpFrameError::TooLarge(payload.len()));
    }
    let address_len = match addr {
        TargetAddr::Ip(SocketAddr::V4(_)) => 1 + 4,
        TargetAddr::Ip(SocketAddr::V6(_)) => 1 + 16,
        TargetAddr::Domain(name, _) => {
            if name.is_empty() || name.len() > 255 {
                return Err(UdpFrameError::BadName);
            }
            1 + 1 + name.len()
        }
    };
    let length = address_len + 2 + payload.len();
    let length = u16::try_from(length).map_err(|_| UdpFrameError::TooLarge(payload.len()))?;
    out.reserve(2 + usize::from(length));
    out.put_u16(length);
    match addr {
        TargetAddr::Ip(SocketAddr::V4(v4)) => {
            out.put_u8(ATYP_IPV4);
            out.put_slice(&v4.ip().octets());
        }
        TargetAddr::Ip(SocketAddr::V6(v6)) => {
            out.put_u8(ATYP_IPV6);
            out.put_slice(&v6.ip().octets());
        }
        TargetAddr::Domain(name, _) => {
            out.put_u8(ATYP_NAME);
            // Checked above: 1..=255 bytes.
            out.put_u8(name.len() as u8);
            out.put_slice(name.as_bytes());
        }
    }
    out.put_u16(addr.port());
    out.put_slice(payload);
    Ok(())
}

/// Takes the next whole frame from the front of `buffer`: `Ok(None)` until
/// one has fully arrived.
pub fn decode_datagram(buffer: &mut BytesMut) -> Result<Option<Datagram>, UdpFrameError> {
    if buffer.len() < 2 {
        return Ok(None);
    }
    let length = usize::from(u16::from_be_bytes([buffer[0], buffer[1]]));
    if buffer.len() < 2 + length {
        buffer.reserve(2 + length - buffer.len());
        return Ok(None);
    }
    buffer.advance(2);
    let mut frame = buffer.split_to(length).freeze();
    let (addr, used) = parse_address(&frame)?;
    frame.advance(used);
    Ok(Some(Datagram {
        addr,
        payload: frame,
    }))
}

/// Reads `atyp || address || port` from the front of `bytes`; returns it
/// and the bytes it took.
fn parse_address(bytes: &[u8]) -> Result<(TargetAddr, usize), UdpFrameError> {
    let (&atyp, rest) = bytes.split_first().ok_or(UdpFrameError::Truncated)?;
    let (addr_len, name_prefix) = match atyp {
        ATYP_IPV4 => (4, 0),
        ATYP_IPV6 => (16, 0),
        ATYP_NAME => (
            usize::from(*rest.first().ok_or(UdpFrameError::Truncated)?),
            1,
        ),
        other => return Err(UdpFrameError::AddressType(other)),
    };
    let end = name_prefix + addr_len;
    if rest.len() < end + 2 {
        return Err(UdpFrameError::Truncated);
    }
    let port = u16::from_be_bytes([rest[end], rest[end + 1]]);
    let raw = &rest[name_prefix..end];
    let addr = match atyp {
        ATYP_IPV4 => {
            let octets: [u8; 4] = raw.try_into().map_err(|_| UdpFrameError::Truncated)?;
            TargetAddr::Ip(SocketAddr::new(Ipv4Addr::from(octets).into(), port))
        }
        ATYP_IPV6 => {
            let octets: [u8; 16] = raw.try_into().map_err(|_| UdpFrameError::Truncated)?;
            TargetAddr::Ip(SocketAddr::new(Ipv6Addr::from(octets).into(), port))
        }
        _ => {
            let name = std::str::from_utf8(raw).map_err(|_| UdpFrameError::BadName)?;
            if name.is_empty() {
                return Err(UdpFrameError::BadName);
            }
            TargetAddr::Domain(name.to_owned(), port)
        }
    };
    Ok((addr, 1 + end + 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(addr: &TargetAddr, payload: &[u8]) -> Vec<u8> {
        let mut out = BytesMut::new();
        encode_datagram(addr, payload, &mut out).unwrap();
        out.to_vec()
    }

    #[test]
    fn test_vectors() {
        let v4 = TargetAddr::Ip("192.0.2.1:53".parse().unwrap());
        assert_eq!(
            frame(&v4, b"hi"),
            [0, 9, 1, 192, 0, 2, 1, 0, 53, b'h', b'i']
        );
        let v6 = TargetAddr::Ip("[2001:db8::1]:443".parse().unwrap());
        assert_eq!(
            frame(&v6, b""),
            [
                0, 19, 4, 0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0x01, 0xbb
            ]
        );
        let name = TargetAddr::Domain("dns.example".into(), 53);
        let mut expected = vec![0, 16, 3, 11];
        expected.extend_from_slice(b"dns.example");
        expected.extend_from_slice(&[0, 53, b'q']);
        assert_eq!(frame(&name, b"q"), expected);
    }

    #[test]
    fn frames_split_anywhere_decode_whole_and_in_order() {
        let addrs = [
            TargetAddr::Ip("127.0.0.1:9".parse().unwrap()),
            TargetAddr::Ip("[::1]:9".parse().unwrap()),
            TargetAddr::Domain("x".into(), 65535),
        ];
        let payloads: Vec<Vec<u8>> = vec![vec![], vec![7; 1], vec![0xab; MAX_PAYLOAD]];
        let mut stream = Vec::new();
        for (addr, payload) in addrs.iter().zip(&payloads) {
            stream.extend(frame(addr, payload));
        }
        for step in [1, 3, 1000, stream.len()] {
            let mut buffer = BytesMut::new();
            let mut seen = Vec::new();
            for piece in stream.chunks(step) {
                buffer.extend_from_slice(piece);
                while let Some(datagram) = decode_datagram(&mut buffer).unwrap() {
                    seen.push(datagram);
                }
            }
            assert_eq!(seen.len(), 3, "step {step}");
            for ((datagram, addr), payload) in seen.iter().zip(&addrs).zip(&payloads) {
                assert_eq!(&datagram.addr, addr);
                assert_eq!(&datagram.payload[..], &payload[..]);
            }
            assert!(buffer.is_empty());
        }
    }

    #[test]
    fn what_does_not_fit_or_parse_is_an_error() {
        let v4 = TargetAddr::Ip("127.0.0.1:9".parse().unwrap());
        let mut out = BytesMut::new();
        assert_eq!(
            encode_datagram(&v4, &vec![0; MAX_PAYLOAD + 1], &mut out),
            Err(UdpFrameError::TooLarge(MAX_PAYLOAD + 1))
        );
        let long = TargetAddr::Domain("n".repeat(255), 9);
        assert_eq!(
            encode_datagram(&long, &vec![0; MAX_PAYLOAD], &mut out),
            Err(UdpFrameError::TooLarge(MAX_PAYLOAD))
        );
        let too_long = TargetAddr::Domain("n".repeat(256), 9);
        assert_eq!(
            encode_datagram(&too_long, b"", &mut out),
            Err(UdpFrameError::BadName)
        );
        assert!(out.is_empty());
        for bad in [
            &[0u8, 1, 9][..],
            &[0, 3, 1, 127, 0],
            &[0, 4, 3, 0, 0, 9],
            &[0, 5, 3, 2, 0xff, 0xfe, 0],
        ] {
            let mut buffer = BytesMut::from(bad);
            assert!(decode_datagram(&mut buffer).is_err(), "{bad:?}");
        }
        let mut partial = BytesMut::from(&[0u8, 9, 1][..]);
        assert_eq!(decode_datagram(&mut partial), Ok(None));
    }
}
