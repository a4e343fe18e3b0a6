//! Reading a target host the way the resolver will.
//!
//! `getaddrinfo` accepts far more numeric spellings than Rust's `IpAddr`
//! parser: `0` and `2130706433` are addresses, so are `0x7f.1` and
//! `0177.0.0.1` (inet_aton's one to four parts, each decimal, octal or
//! hex). A policy that compared only the text would let `2130706433`
//! through a rule denying `127.0.0.1`. Every decision is therefore taken on
//! the address a numeric host *becomes*. Pure string handling.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A host as the policy judges it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JudgedHost {
    /// A numeric host, in the one form it stands for (IPv4-mapped IPv6
    /// addresses become IPv4).
    Ip(IpAddr),
    /// A name, lower-cased, without brackets or a trailing dot.
    Name(String),
}

impl JudgedHost {
    /// Reads `host` as it travels in SSH or SOCKS5.
    pub fn parse(host: &str) -> Self {
        let bare = host
            .strip_prefix('[')
            .and_then(|inner| inner.strip_suffix(']'))
            .unwrap_or(host);
        match numeric_host(bare) {
            Some(ip) => JudgedHost::Ip(ip),
            None => {
                let name = bare.strip_suffix('.').unwrap_or(bare);
                JudgedHost::Name(name.to_ascii_lowercase())
            }
        }
    }

    /// The text host-name globs are matched against.
    pub fn text(&self) -> String {
        match self {
            JudgedHost::Ip(ip) => ip.to_string(),
            JudgedHost::Name(name) => name.clone(),
        }
    }
}

/// The address `text` stands for when the resolver reads it as a number,
/// if it does. IPv6 zone ids (`fe80::1%eth0`) are dropped, IPv4-mapped
/// IPv6 becomes IPv4.
pub fn numeric_host(text: &str) -> Option<IpAddr> {
    let text = text.strip_suffix('.').unwrap_or(text);
    if let Some(v4) = inet_aton(text) {
        return Some(IpAddr::V4(v4));
    }
    let without_zone = text.split_once('%').map_or(text, |(address, _)| address);
    let v6: Ipv6Addr = without_zone.parse().ok()?;
    Some(canonical(IpAddr::V6(v6)))
}

/// IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) as the IPv4 address they
/// reach; everything else unchanged.
pub(crate) fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// inet_aton: `a`, `a.b`, `a.b.c` or `a.b.c.d`; every part decimal, octal
/// (leading `0`) or hex (`0x`); the last part fills the remaining bytes.
fn inet_aton(text: &str) -> Option<Ipv4Addr> {
    let parts: Vec<&str> = text.split('.').collect();
    if parts.is_empty() || parts.len() > 4 {
        return None;
    }
    let mut values = Vec::with_capacity(parts.len());
    for part in &parts {
        values.push(parse_part(part)?);
    }
    let (last, leading) = values.split_last()?;
    let mut address: u32 = 0;
    for (index, value) in leading.iter().enumerate() {
        if *value > 0xff {
            return None;
        }
        address |= value << (24 - 8 * index);
    }
    let remaining_bits = 32 - 8 * leading.len();
    if remaining_bits < 32 && u64::from(*last) >= 1u64 << remaining_bits {
        return None;
    }
    Some(Ipv4Addr::from(address | last))
}

fn parse_part(part: &str) -> Option<u32> {
    if part.is_empty() {
        return None;
    }
    let (digits, radix) =
        if let Some(hex) = part.strip_prefix("0x").or_else(|| part.strip_prefix("0X")) {
            // A bare `0x` is zero to inet_aton.
            if hex.is_empty() {
                return Some(0);
            }
            (hex, 16)
        } else if part.len() > 1 && part.starts_with('0') {
            (&part[1..], 8)
        } else {
            (part, 10)
        };
    if !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    u32::from_str_radix(digits, radix).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(text: &str) -> Option<IpAddr> {
        numeric_host(text)
    }

    #[test]
    fn every_spelling_of_loopback_is_loopback() {
        let loopback = Some(IpAddr::V4(Ipv4Addr::LOCALHOST));
        for spelling in [
            "127.0.0.1",
            "2130706433",
            "0x7f.1",
            "0x7F000001",
            "0177.0.0.1",
            "127.1",
            "127.0.1",
            "0x7f.0.0.0x1",
            "127.0.0.1.",
            "::ffff:127.0.0.1",
            "::ffff:7f00:1",
        ] {
            assert_eq!(v4(spelling), loopback, "{spelling}");
        }
        assert_eq!(v4("0"), Some(IpAddr::V4(Ipv4Addr::UNSPECIFIED)));
        assert_eq!(v4("0.0.0.0"), Some(IpAddr::V4(Ipv4Addr::UNSPECIFIED)));
        assert_eq!(v4("::"), Some(IpAddr::V6(Ipv6Addr::UNSPECIFIED)));
        assert_eq!(v4("fe80::1%lo"), Some("fe80::1".parse().unwrap()));
    }

    #[test]
    fn names_and_out_of_range_numbers_are_not_addresses() {
        for name in [
            "example.com",
            "localhost",
            "0x",
            "1.2.3.4.5",
            "256.1.1.1",
            "1.2.3.256",
            "1.2.65536",
            "4294967296",
            "08",
            "1..2",
            "",
            "x1",
            "ālknet",
        ] {
            if name == "0x" {
                assert_eq!(v4(name), Some(IpAddr::V4(Ipv4Addr::UNSPECIFIED)));
                continue;
            }
            assert_eq!(v4(name), None, "{name}");
        }
        assert_eq!(v4("1.2.65535"), Some("1.2.255.255".parse().unwrap()));
        assert_eq!(v4("4294967295"), Some("255.255.255.255".parse().unwrap()));
    }

    #[test]
    fn judged_hosts_lose_brackets_case_and_trailing_dots() {
        assert_eq!(
            JudgedHost::parse("[::ffff:10.0.0.1]"),
            JudgedHost::Ip("10.0.0.1".parse().unwrap())
        );
        assert_eq!(
            JudgedHost::parse("WWW.Example.COM."),
            JudgedHost::Name("www.example.com".into())
        );
        assert_eq!(JudgedHost::parse("2130706433").text(), "127.0.0.1");
    }
}
