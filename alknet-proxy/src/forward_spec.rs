//! Parsing `-L`-style forward specifications, as OpenSSH writes them:
//! `[bind:]port:host:hostport` or `[bind:]port:/path/to/unix.sock`, with
//! IPv6 addresses in brackets, and alknet's `[bind:]port:host:hostport/udp`
//! for datagrams. Pure string handling; no sockets.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use crate::{ProxyError, TargetAddr};

/// Where a forwarded connection goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ForwardTarget {
    /// A TCP host and port, resolved by the far side.
    Tcp(TargetAddr),
    /// A Unix-domain socket on the far side.
    Unix(PathBuf),
    /// No fixed target: each connection speaks SOCKS5 and names its own
    /// (`-R [bind:]port` alone, OpenSSH's reverse dynamic forward).
    Socks,
    /// UDP datagrams to a host and port (`…:host:hostport/udp`), carried
    /// over the session's UDP associations.
    Udp(TargetAddr),
}

/// One local forward: listen on `bind_host:bind_port`, send each accepted
/// connection to `target`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForwardSpec {
    /// The local address to listen on (default `127.0.0.1`; `*` means all
    /// interfaces), without brackets.
    pub bind_host: String,
    /// The local port (0: any free port).
    pub bind_port: u16,
    /// Where connections go.
    pub target: ForwardTarget,
}

impl ForwardSpec {
    /// The listen address in a form `TcpListener::bind` accepts.
    pub fn bind_addr(&self) -> String {
        if self.bind_host.contains(':') {
            format!("[{}]:{}", self.bind_host, self.bind_port)
        } else {
            format!("{}:{}", self.bind_host, self.bind_port)
        }
    }
}

impl FromStr for ForwardSpec {
    type Err = ProxyError;

    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let invalid = |why: &str| ProxyError::InvalidForward {
            spec: spec.to_owned(),
            reason: why.to_owned(),
        };
        // `/udp` ends a host:port target; a socket path may end so too.
        let (spec_text, udp) = match spec.strip_suffix("/udp") {
            Some(rest) if !spec.contains(":/") => (rest, true),
            _ => (spec, false),
        };
        // A Unix-socket target is everything from the first ":/" on.
        let (listen_part, unix_path) = match spec_text.find(":/") {
            Some(at) => (&spec_text[..at], Some(&spec_text[at + 1..])),
            None => (spec_text, None),
        };
        let mut fields = split_fields(listen_part).map_err(|why| invalid(&why))?;
        if udp && fields.len() <= 2 {
            return Err(invalid(
                "/udp needs a host and port: [bind:]port:host:hostport/udp",
            ));
        }
        let target = match unix_path {
            Some(path) => ForwardTarget::Unix(PathBuf::from(path)),
            // `[bind:]port` alone: a reverse dynamic (SOCKS5) forward.
            None if fields.len() <= 2 && !listen_part.is_empty() => ForwardTarget::Socks,
            None => {
                if !(3..=4).contains(&fields.len()) {
                    return Err(invalid(
                        "expected [bind:]port:host:hostport or [bind:]port:/socket/path",
                    ));
                }
                let port = fields.pop().unwrap_or_default();
                let host = fields.pop().unwrap_or_default();
                let port = parse_port(&port).map_err(|why| invalid(&why))?;
                if host.is_empty() {
                    return Err(invalid("the target host is empty"));
                }
                let target = TargetAddr::from_host_port(&host, port);
                if udp {
                    ForwardTarget::Udp(target)
                } else {
                    ForwardTarget::Tcp(target)
                }
            }
        };
        let (bind_host, bind_port) = match fields.as_slice() {
            [port] => ("127.0.0.1".to_owned(), port),
            [host, port] => {
                let host = match host.as_str() {
                    "*" | "" => "0.0.0.0".to_owned(),
                    other => other.to_owned(),
                };
                (host, port)
            }
            _ => {
                return Err(invalid(
                    "expected [bind:]port:host:hostport or [bind:]port:/socket/path",
                ));
            }
        };
        let bind_port = parse_port(bind_port).map_err(|why| invalid(&why))?;
        Ok(ForwardSpec {
            bind_host,
            bind_port,
            target,
        })
    }
}

impl fmt::Display for ForwardSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Used in error messages the user typed themselves; never logged.
        f.write_str(&self.bind_addr())?;
        match &self.target {
            ForwardTarget::Tcp(target) => write!(f, ":{target}"),
            ForwardTarget::Unix(path) => write!(f, ":{}", path.display()),
            ForwardTarget::Socks => Ok(()),
            ForwardTarget::Udp(target) => write!(f, ":{target}/udp"),
        }
    }
}

/// Splits on ':' outside brackets, removing the brackets. A bracketed
/// field is a whole field, and one with a ':' inside must be an IPv6
/// address (so that it prints back the way it was read).
fn split_fields(text: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut current = String::new();
    let mut in_brackets = false;
    let mut closed = false;
    for c in text.chars() {
        match c {
            ':' if !in_brackets => {
                fields.push(std::mem::take(&mut current));
                closed = false;
            }
            _ if closed => return Err("unexpected text after ']'".to_owned()),
            '[' if !in_brackets && current.is_empty() => in_brackets = true,
            ']' if in_brackets => {
                if current.contains(':') && current.parse::<std::net::Ipv6Addr>().is_err() {
                    return Err(format!("[{current}] is not an IPv6 address"));
                }
                in_brackets = false;
                closed = true;
            }
            // A '/' only starts a socket path (split off before).
            '[' | ']' | '/' => return Err(format!("unexpected '{c}'")),
            other => current.push(other),
        }
    }
    if in_brackets {
        return Err("unclosed '['".to_owned());
    }
    fields.push(current);
    Ok(fields)
}

fn parse_port(text: &str) -> Result<u16, String> {
    text.parse::<u16>()
        .map_err(|_| format!("{text:?} is not a port number (0-65535)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(spec: &str) -> ForwardSpec {
        spec.parse().unwrap_or_else(|e| panic!("{spec}: {e}"))
    }

    fn tcp(host: &str, port: u16) -> ForwardTarget {
        ForwardTarget::Tcp(TargetAddr::from_host_port(host, port))
    }

    #[test]
    fn port_host_port_binds_loopback() {
        let spec = parse("8080:example.com:80");
        assert_eq!(spec.bind_addr(), "127.0.0.1:8080");
        assert_eq!(spec.target, tcp("example.com", 80));
    }

    #[test]
    fn explicit_and_wildcard_binds() {
        assert_eq!(parse("0.0.0.0:1:h:2").bind_addr(), "0.0.0.0:1");
        assert_eq!(parse("*:1:h:2").bind_addr(), "0.0.0.0:1");
        assert_eq!(parse("localhost:1:h:2").bind_addr(), "localhost:1");
    }

    #[test]
    fn ipv6_in_brackets_on_either_side() {
        let spec = parse("[::1]:8080:[2001:db8::1]:443");
        assert_eq!(spec.bind_addr(), "[::1]:8080");
        assert_eq!(spec.target, tcp("2001:db8::1", 443));
        assert_eq!(parse("0:[::1]:22").target, tcp("::1", 22));
    }

    #[test]
    fn unix_socket_targets() {
        let spec = parse("5432:/run/postgresql/.s.PGSQL.5432");
        assert_eq!(spec.bind_addr(), "127.0.0.1:5432");
        assert_eq!(
            spec.target,
            ForwardTarget::Unix("/run/postgresql/.s.PGSQL.5432".into())
        );
        let spec = parse("[::1]:0:/tmp/a:b.sock");
        assert_eq!(spec.bind_addr(), "[::1]:0");
        assert_eq!(spec.target, ForwardTarget::Unix("/tmp/a:b.sock".into()));
    }

    #[test]
    fn udp_targets_end_in_slash_udp() {
        let spec = parse("5353:dns.example:53/udp");
        assert_eq!(spec.bind_addr(), "127.0.0.1:5353");
        assert_eq!(
            spec.target,
            ForwardTarget::Udp(TargetAddr::from_host_port("dns.example", 53))
        );
        assert_eq!(spec.to_string(), "127.0.0.1:5353:dns.example:53/udp");
        assert_eq!(spec.to_string().parse::<ForwardSpec>().unwrap(), spec);
        let spec = parse("[::1]:0:[2001:db8::1]:443/udp");
        assert_eq!(
            spec.target,
            ForwardTarget::Udp(TargetAddr::from_host_port("2001:db8::1", 443))
        );
        // A socket path may end in /udp.
        assert_eq!(
            parse("0:/run/udp").target,
            ForwardTarget::Unix("/run/udp".into())
        );
        for bad in ["53/udp", "*:53/udp", "1:h:x/udp", "1:h:53/tcp"] {
            assert!(bad.parse::<ForwardSpec>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_port_alone_is_a_reverse_socks_forward() {
        let spec = parse("1080");
        assert_eq!(
            (spec.bind_addr().as_str(), &spec.target),
            ("127.0.0.1:1080", &ForwardTarget::Socks)
        );
        let spec = parse("*:1080");
        assert_eq!(spec.bind_addr(), "0.0.0.0:1080");
        assert_eq!(spec.to_string().parse::<ForwardSpec>().unwrap(), spec);
    }

    #[test]
    fn malformed_specs_name_the_problem() {
        for (spec, expected) in [
            ("8080:host", "not a port number"),
            ("a:b:c:d:e", "expected [bind:]port"),
            ("99999:h:80", "not a port number"),
            ("80:h:http", "not a port number"),
            ("80::80", "host is empty"),
            ("[::1:80:h:80", "unclosed"),
            ("", "expected [bind:]port"),
            // Found by the forward_spec fuzz target: it read as a host
            // "::1]" that printed back as something else.
            ("0:[::]1]:22", "after ']'"),
            ("0:[a:b]:22", "not an IPv6 address"),
            ("0:h]:22", "unexpected ']'"),
            // Also found by fuzzing: a host "/D0" printed as a socket path.
            ("1:[/D0]:5", "unexpected '/'"),
        ] {
            let error = spec.parse::<ForwardSpec>().unwrap_err().to_string();
            assert!(error.contains(expected), "{spec:?}: {error}");
            assert!(error.contains(&format!("{spec:?}")), "{spec:?}: {error}");
        }
    }
}
