//! [`TargetAddr`]: where a connection should go, as a name or an address.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

/// Where a tunnelled connection should go: an IP address or a name that the
/// far side resolves (socks5h semantics: the client never looks names up).
///
/// `Display` prints `host:port` (`[v6]:port` for IPv6). Targets are private
/// to the user: never log them.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum TargetAddr {
    /// A literal socket address.
    Ip(SocketAddr),
    /// A host name, resolved by whoever finally dials it.
    Domain(String, u16),
}

impl TargetAddr {
    /// Builds a target from a host string and port as they travel in SSH
    /// (`direct-tcpip` carries IP literals as text, IPv6 possibly bracketed).
    pub fn from_host_port(host: &str, port: u16) -> Self {
        let bare = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        match bare.parse::<IpAddr>() {
            Ok(ip) => TargetAddr::Ip(SocketAddr::new(ip, port)),
            Err(_) => TargetAddr::Domain(host.to_owned(), port),
        }
    }

    /// The host part as SSH expects it: an IP literal without brackets, or the name.
    pub fn host(&self) -> String {
        match self {
            TargetAddr::Ip(addr) => addr.ip().to_string(),
            TargetAddr::Domain(name, _) => name.clone(),
        }
    }

    /// The port.
    pub fn port(&self) -> u16 {
        match self {
            TargetAddr::Ip(addr) => addr.port(),
            TargetAddr::Domain(_, port) => *port,
        }
    }
}

impl fmt::Display for TargetAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TargetAddr::Ip(addr) => addr.fmt(f),
            TargetAddr::Domain(name, port) => write!(f, "{name}:{port}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_become_ip_targets() {
        assert_eq!(
            TargetAddr::from_host_port("127.0.0.1", 80),
            TargetAddr::Ip("127.0.0.1:80".parse().unwrap())
        );
        for v6 in ["::1", "[::1]"] {
            let target = TargetAddr::from_host_port(v6, 443);
            assert_eq!(target, TargetAddr::Ip("[::1]:443".parse().unwrap()));
            assert_eq!(target.host(), "::1");
            assert_eq!(target.to_string(), "[::1]:443");
        }
    }

    #[test]
    fn names_stay_unresolved() {
        let target = TargetAddr::from_host_port("example.com", 8080);
        assert_eq!(target, TargetAddr::Domain("example.com".into(), 8080));
        assert_eq!(target.host(), "example.com");
        assert_eq!(target.port(), 8080);
        assert_eq!(target.to_string(), "example.com:8080");
    }
}
