//! Where to connect, written as ssh takes it: `[user@]host[:port]`, and
//! `-D`'s `[bind:]port`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

/// `[user@]host[:port]`. An IPv6 address takes brackets when a port
/// follows (`[::1]:2222`); bare (`::1`) it means port 22. For iroh the
/// host is the server's endpoint id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Destination {
    pub(crate) user: Option<String>,
    /// Without brackets.
    pub(crate) host: String,
    pub(crate) port: Option<u16>,
}

impl FromStr for Destination {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (user, rest) = match text.rsplit_once('@') {
            Some((user, rest)) if !user.is_empty() => (Some(user.to_owned()), rest),
            Some(_) => return Err(format!("{text:?}: nothing before '@'")),
            None => (None, text),
        };
        let (host, port) = if let Some(inner) = rest.strip_prefix('[') {
            let (host, after) = inner
                .split_once(']')
                .ok_or_else(|| format!("{text:?}: '[' without ']'"))?;
            match after {
                "" => (host, None),
                _ => {
                    let port = after
                        .strip_prefix(':')
                        .ok_or_else(|| format!("{text:?}: expected :PORT after ']'"))?;
                    (host, Some(parse_port(port, text)?))
                }
            }
        } else if rest.parse::<Ipv6Addr>().is_ok() {
            (rest, None)
        } else {
            match rest.split_once(':') {
                Some((host, port)) => (host, Some(parse_port(port, text)?)),
                None => (rest, None),
            }
        };
        if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c == '/') {
            return Err(format!(
                "{text:?} is not a destination: expected [user@]host[:port]"
            ));
        }
        Ok(Self {
            user,
            host: host.to_owned(),
            port,
        })
    }
}

fn parse_port(port: &str, text: &str) -> Result<u16, String> {
    match port.parse::<u16>() {
        Ok(port) if port != 0 => Ok(port),
        _ => Err(format!("{text:?}: {port:?} is not a port number")),
    }
}

/// `host:port` for the transports, brackets around IPv6.
pub(crate) fn server_address(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// `--socks5` / `-D`: `[bind:]port` as ssh's `-D` (bind defaults to
/// 127.0.0.1; `*` is every IPv4 interface, `localhost` is 127.0.0.1), or
/// `none`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SocksListen(pub(crate) Option<SocketAddr>);

impl FromStr for SocksListen {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        if text.eq_ignore_ascii_case("none") {
            return Ok(Self(None));
        }
        let expected = || format!("expected [bind:]port (as ssh -D) or none, got {text:?}");
        if let Ok(addr) = text.parse::<SocketAddr>() {
            return Ok(Self(Some(addr)));
        }
        let (bind, port) = match text.rsplit_once(':') {
            Some((bind, port)) => (Some(bind), port),
            None => (None, text),
        };
        let port: u16 = port.parse().map_err(|_| expected())?;
        let ip = match bind {
            None | Some("localhost") => IpAddr::V4(Ipv4Addr::LOCALHOST),
            Some("*" | "") => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            Some(other) => other
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse()
                .map_err(|_| expected())?,
        };
        Ok(Self(Some(SocketAddr::new(ip, port))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dest(user: Option<&str>, host: &str, port: Option<u16>) -> Destination {
        Destination {
            user: user.map(str::to_owned),
            host: host.to_owned(),
            port,
        }
    }

    #[test]
    fn destinations_read_as_ssh_writes_them() {
        assert_eq!("h".parse(), Ok(dest(None, "h", None)));
        assert_eq!("me@h:2222".parse(), Ok(dest(Some("me"), "h", Some(2222))));
        assert_eq!(
            "me@127.0.0.1".parse(),
            Ok(dest(Some("me"), "127.0.0.1", None))
        );
        assert_eq!("[::1]:2222".parse(), Ok(dest(None, "::1", Some(2222))));
        assert_eq!("u@::1".parse(), Ok(dest(Some("u"), "::1", None)));
        assert_eq!("a@b@h".parse(), Ok(dest(Some("a@b"), "h", None)));
        for bad in [
            "", "@h", "h:port", "h:0", "[::1", "[::1]x", "h:70000", "a b",
        ] {
            assert!(bad.parse::<Destination>().is_err(), "{bad:?} accepted");
        }
        assert_eq!(server_address("::1", 22), "[::1]:22");
        assert_eq!(server_address("h", 2222), "h:2222");
    }

    #[test]
    fn socks_binds_read_as_ssh_dash_d() {
        let at = |text: &str| text.parse::<SocksListen>().map(|listen| listen.0);
        assert_eq!(at("1080"), Ok(Some("127.0.0.1:1080".parse().unwrap())));
        assert_eq!(
            at("localhost:1080"),
            Ok(Some("127.0.0.1:1080".parse().unwrap()))
        );
        assert_eq!(at("*:1080"), Ok(Some("0.0.0.0:1080".parse().unwrap())));
        assert_eq!(at("[::1]:1080"), Ok(Some("[::1]:1080".parse().unwrap())));
        assert_eq!(
            at("10.0.0.1:1080"),
            Ok(Some("10.0.0.1:1080".parse().unwrap()))
        );
        assert_eq!(at("NONE"), Ok(None));
        for bad in ["nowhere", "host.example:1080", "1080x", ":"] {
            assert!(at(bad).is_err(), "{bad:?} accepted");
        }
    }
}
