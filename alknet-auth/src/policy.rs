//! Forwarding policy: which targets a session may open channels to, which
//! Unix sockets it may reach, and where it may ask the server to listen.
//!
//! Ordered rules, the first that matches decides; otherwise the default
//! does. A rule matches on the target (a host-name glob, an IP range, the
//! reserved `alknet-` prefix, or a Unix-socket path glob), optionally a
//! port range, optionally the principals it applies to, and whether it is
//! about connecting (the default) or listening (`-R`).
//!
//! Three things hold whatever the rules say:
//! - hosts are judged as the resolver reads them ([`JudgedHost`]): a rule
//!   denying `127.0.0.0/8` also denies `2130706433` and `0x7f.1`;
//! - Unix sockets are reached only where a rule names their path: the
//!   default covers TCP only;
//! - a listen port below 1024 needs an allowing listen rule whose `ports`
//!   include it; the default never grants one.
//!
//! Pure data and matching; no I/O. [`AuthConfig::admit`](crate::AuthConfig::admit)
//! combines this with what the session's login granted.

use std::net::IpAddr;
use std::ops::RangeInclusive;
use std::str::FromStr;

use ipnet::IpNet;

use crate::address::{JudgedHost, canonical};

/// Allow or deny.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Verdict {
    /// The channel may be opened.
    #[default]
    Allow,
    /// It is refused (administratively prohibited).
    Deny,
}

/// What a rule's target part matches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TargetMatch {
    /// Every TCP target (or, in a listen rule, every bind address).
    Any,
    /// Host names matching a glob; `*` matches any run of characters, case
    /// is ignored. Numeric hosts are matched in their canonical form
    /// (`127.0.0.1`, whatever spelling was sent).
    HostGlob(String),
    /// IP addresses inside a range: literal targets, and for connect rules
    /// also the addresses a name resolves to (judged before dialling).
    Cidr(IpNet),
    /// The reserved `alknet-` names.
    Reserved,
    /// Unix-socket paths matching a glob (`*` matches any run of
    /// characters, `/` included).
    SocketPath(String),
}

/// One rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForwardRule {
    /// What happens when it matches.
    pub verdict: Verdict,
    /// Which targets it matches.
    pub target: TargetMatch,
    /// Which ports it matches (all when `None`).
    pub ports: Option<RangeInclusive<u16>>,
    /// Which principals it applies to (everyone when `None`): the names the
    /// server authenticated, never the login name a client typed.
    pub principals: Option<Vec<String>>,
    /// Whether it is about listening (`-R`) rather than connecting.
    pub listen: bool,
}

impl ForwardRule {
    /// A rule for every principal and port, about connecting.
    pub fn new(verdict: Verdict, target: TargetMatch) -> Self {
        Self {
            verdict,
            target,
            ports: None,
            principals: None,
            listen: false,
        }
    }

    /// Only for these ports.
    pub fn ports(mut self, ports: RangeInclusive<u16>) -> Self {
        self.ports = Some(ports);
        self
    }

    /// Only for sessions holding one of these principals.
    pub fn principals(mut self, names: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.principals = Some(names.into_iter().map(Into::into).collect());
        self
    }

    /// About listening (`-R`) instead of connecting.
    pub fn for_listening(mut self) -> Self {
        self.listen = true;
        self
    }

    fn applies_to(&self, principals: &[String]) -> bool {
        self.principals
            .as_ref()
            .is_none_or(|names| names.iter().any(|name| principals.contains(name)))
    }

    fn port_matches(&self, port: u16) -> bool {
        self.ports
            .as_ref()
            .is_none_or(|ports| ports.contains(&port))
    }
}

/// An ordered list of rules and a default.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ForwardingPolicy {
    /// The rules, in order.
    pub rules: Vec<ForwardRule>,
    /// The verdict when no rule matches (for TCP targets and listening;
    /// Unix sockets are denied unless a rule allows them).
    pub default: Verdict,
}

/// Port numbers below this need a rule that names them to be listened on.
const FIRST_UNPRIVILEGED_PORT: u16 = 1024;

impl ForwardingPolicy {
    fn connect_rules(&self) -> impl Iterator<Item = &ForwardRule> {
        self.rules.iter().filter(|rule| !rule.listen)
    }

    /// Whether a session holding `principals` may open a channel to
    /// `host:port`, the host judged as the resolver will read it.
    pub fn connect_verdict(&self, host: &str, port: u16, principals: &[String]) -> Verdict {
        let host = JudgedHost::parse(host);
        self.connect_rules()
            .filter(|rule| !matches!(rule.target, TargetMatch::SocketPath(_)))
            .find(|rule| {
                rule.applies_to(principals) && rule.port_matches(port) && host_matches(rule, &host)
            })
            .map_or(self.default, |rule| rule.verdict)
    }

    /// The verdict of the first address-range rule matching a resolved
    /// address, or `None` when none does (the name already decided).
    pub fn address_verdict(&self, ip: IpAddr, port: u16, principals: &[String]) -> Option<Verdict> {
        let ip = canonical(ip);
        self.connect_rules()
            .find(|rule| {
                matches!(&rule.target, TargetMatch::Cidr(net) if net.contains(&ip))
                    && rule.applies_to(principals)
                    && rule.port_matches(port)
            })
            .map(|rule| rule.verdict)
    }

    /// Whether a session may reach the Unix socket at `path`: only when a
    /// path rule allows it.
    pub fn socket_verdict(&self, path: &str, principals: &[String]) -> Verdict {
        self.connect_rules()
            .find(|rule| {
                matches!(&rule.target, TargetMatch::SocketPath(glob) if glob_matches(glob, path))
                    && rule.applies_to(principals)
            })
            .map_or(Verdict::Deny, |rule| rule.verdict)
    }

    /// Whether a session may have the server listen on `host:port` for it
    /// (port 0: a port the server picks). Below 1024 only an allowing
    /// listen rule whose ports include the port grants it.
    pub fn listen_verdict(&self, host: &str, port: u16, principals: &[String]) -> Verdict {
        let host = JudgedHost::parse(host);
        let rule = self.rules.iter().filter(|rule| rule.listen).find(|rule| {
            let port_ok = match (&rule.ports, port) {
                (None, _) => true,
                // "Any port" is matched only by rules about any port.
                (Some(_), 0) => false,
                (Some(ports), port) => ports.contains(&port),
            };
            port_ok && rule.applies_to(principals) && host_matches(rule, &host)
        });
        match rule {
            Some(rule) if rule.verdict == Verdict::Allow => {
                if port != 0 && port < FIRST_UNPRIVILEGED_PORT && rule.ports.is_none() {
                    Verdict::Deny
                } else {
                    Verdict::Allow
                }
            }
            Some(rule) => rule.verdict,
            None if port != 0 && port < FIRST_UNPRIVILEGED_PORT => Verdict::Deny,
            None => self.default,
        }
    }
}

fn host_matches(rule: &ForwardRule, host: &JudgedHost) -> bool {
    match &rule.target {
        TargetMatch::Any => true,
        TargetMatch::HostGlob(glob) => glob_matches(&glob.to_ascii_lowercase(), &host.text()),
        TargetMatch::Cidr(net) => matches!(host, JudgedHost::Ip(ip) if net.contains(ip)),
        TargetMatch::Reserved => {
            matches!(host, JudgedHost::Name(name) if name.starts_with(crate::RESERVED_PREFIX))
        }
        TargetMatch::SocketPath(_) => false,
    }
}

/// `*` matches any run of characters (including none); everything else
/// matches itself.
pub(crate) fn glob_matches(glob: &str, text: &str) -> bool {
    let mut parts = glob.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// Parses `22` or `1000-2000`.
pub fn parse_port_range(text: &str) -> Result<RangeInclusive<u16>, String> {
    let parse = |part: &str| {
        u16::from_str(part.trim()).map_err(|_| format!("{part:?} is not a port number"))
    };
    match text.split_once('-') {
        Some((low, high)) => {
            let (low, high) = (parse(low)?, parse(high)?);
            if low > high {
                return Err(format!("port range {text:?} is empty"));
            }
            Ok(low..=high)
        }
        None => parse(text).map(|port| port..=port),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn glob(text: &str) -> TargetMatch {
        TargetMatch::HostGlob(text.into())
    }

    fn cidr(text: &str) -> TargetMatch {
        TargetMatch::Cidr(text.parse().unwrap())
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|name| (*name).to_owned()).collect()
    }

    #[test]
    fn the_first_matching_rule_decides_and_the_default_covers_the_rest() {
        let policy = ForwardingPolicy {
            rules: vec![
                ForwardRule::new(Verdict::Allow, glob("bastion.example.com")).ports(22..=22),
                ForwardRule::new(Verdict::Deny, glob("*.example.com")),
                ForwardRule::new(Verdict::Deny, cidr("10.0.0.0/8")),
                ForwardRule::new(Verdict::Deny, TargetMatch::Reserved),
                ForwardRule::new(Verdict::Allow, cidr("192.168.0.0/16")).principals(["admin"]),
                ForwardRule::new(Verdict::Deny, cidr("192.168.0.0/16")),
            ],
            default: Verdict::Allow,
        };
        let u = names(&["u"]);
        assert_eq!(
            policy.connect_verdict("bastion.example.com", 22, &u),
            Verdict::Allow
        );
        assert_eq!(
            policy.connect_verdict("bastion.example.com", 80, &u),
            Verdict::Deny
        );
        assert_eq!(
            policy.connect_verdict("WWW.Example.COM", 443, &u),
            Verdict::Deny
        );
        assert_eq!(
            policy.connect_verdict("www.example.com.", 443, &u),
            Verdict::Deny
        );
        assert_eq!(
            policy.connect_verdict("example.org", 443, &u),
            Verdict::Allow
        );
        assert_eq!(policy.connect_verdict("10.1.2.3", 80, &u), Verdict::Deny);
        assert_eq!(policy.connect_verdict("167837955", 80, &u), Verdict::Deny);
        assert_eq!(policy.connect_verdict("11.1.2.3", 80, &u), Verdict::Allow);
        assert_eq!(
            policy.connect_verdict("alknet-control", 0, &u),
            Verdict::Deny
        );
        assert_eq!(policy.connect_verdict("ALKNET-x", 0, &u), Verdict::Deny);
        let admin = names(&["someone", "admin"]);
        assert_eq!(
            policy.connect_verdict("192.168.1.1", 80, &admin),
            Verdict::Allow
        );
        assert_eq!(policy.connect_verdict("192.168.1.1", 80, &u), Verdict::Deny);
        assert_eq!(
            policy.connect_verdict("192.168.1.1", 80, &[]),
            Verdict::Deny
        );
        assert_eq!(policy.connect_verdict("[::1]", 80, &u), Verdict::Allow);
    }

    #[test]
    fn numeric_spellings_are_judged_as_the_address_they_become() {
        let policy = ForwardingPolicy {
            rules: vec![
                ForwardRule::new(Verdict::Deny, cidr("127.0.0.0/8")),
                ForwardRule::new(Verdict::Deny, glob("10.9.8.7")),
            ],
            default: Verdict::Allow,
        };
        for host in [
            "2130706433",
            "0x7f.1",
            "0177.0.0.1",
            "127.1",
            "::ffff:127.0.0.1",
        ] {
            assert_eq!(
                policy.connect_verdict(host, 80, &[]),
                Verdict::Deny,
                "{host}"
            );
        }
        assert_eq!(policy.connect_verdict("0x0a090807", 80, &[]), Verdict::Deny);
    }

    #[test]
    fn resolved_addresses_are_judged_by_the_range_rules_only() {
        let policy = ForwardingPolicy {
            rules: vec![
                ForwardRule::new(Verdict::Allow, glob("*.example.com")),
                ForwardRule::new(Verdict::Deny, cidr("10.0.0.0/8")),
                ForwardRule::new(Verdict::Allow, cidr("192.168.0.0/16")),
            ],
            default: Verdict::Deny,
        };
        let ip = |text: &str| text.parse::<IpAddr>().unwrap();
        assert_eq!(
            policy.address_verdict(ip("10.1.2.3"), 80, &[]),
            Some(Verdict::Deny)
        );
        assert_eq!(
            policy.address_verdict(ip("::ffff:10.1.2.3"), 80, &[]),
            Some(Verdict::Deny)
        );
        assert_eq!(
            policy.address_verdict(ip("192.168.1.1"), 80, &[]),
            Some(Verdict::Allow)
        );
        assert_eq!(policy.address_verdict(ip("203.0.113.7"), 80, &[]), None);
    }

    #[test]
    fn unix_sockets_need_a_rule_naming_their_path() {
        let mut policy = ForwardingPolicy::default();
        assert_eq!(policy.socket_verdict("/run/app.sock", &[]), Verdict::Deny);
        policy.rules = vec![
            ForwardRule::new(
                Verdict::Deny,
                TargetMatch::SocketPath("/run/app/secret*".into()),
            ),
            ForwardRule::new(Verdict::Allow, TargetMatch::SocketPath("/run/app/*".into())),
            ForwardRule::new(Verdict::Allow, TargetMatch::Any),
        ];
        assert_eq!(
            policy.socket_verdict("/run/app/web.sock", &[]),
            Verdict::Allow
        );
        assert_eq!(
            policy.socket_verdict("/run/app/sub/db.sock", &[]),
            Verdict::Allow
        );
        assert_eq!(
            policy.socket_verdict("/run/app/secret.sock", &[]),
            Verdict::Deny
        );
        assert_eq!(policy.socket_verdict("/root/x.sock", &[]), Verdict::Deny);
        assert_eq!(
            policy.connect_verdict("/run/app/web.sock", 0, &[]),
            Verdict::Allow,
            "path rules are not host rules"
        );
    }

    #[test]
    fn listening_follows_listen_rules_and_privileged_ports_need_naming() {
        let open = ForwardingPolicy::default();
        assert_eq!(open.listen_verdict("127.0.0.1", 8080, &[]), Verdict::Allow);
        assert_eq!(open.listen_verdict("127.0.0.1", 0, &[]), Verdict::Allow);
        assert_eq!(open.listen_verdict("127.0.0.1", 80, &[]), Verdict::Deny);

        let closed = ForwardingPolicy {
            rules: vec![
                ForwardRule::new(Verdict::Allow, TargetMatch::Any)
                    .for_listening()
                    .ports(8000..=8999)
                    .principals(["web"]),
                ForwardRule::new(Verdict::Allow, TargetMatch::Any)
                    .for_listening()
                    .ports(80..=80),
                ForwardRule::new(Verdict::Allow, TargetMatch::Any).for_listening(),
                // A connect rule never grants listening.
                ForwardRule::new(Verdict::Allow, TargetMatch::Any).ports(1..=65535),
            ],
            default: Verdict::Deny,
        };
        let web = names(&["web"]);
        assert_eq!(
            closed.listen_verdict("127.0.0.1", 8080, &web),
            Verdict::Allow
        );
        assert_eq!(closed.listen_verdict("127.0.0.1", 80, &[]), Verdict::Allow);
        assert_eq!(closed.listen_verdict("127.0.0.1", 443, &[]), Verdict::Deny);
        assert_eq!(
            closed.listen_verdict("127.0.0.1", 9000, &[]),
            Verdict::Allow
        );

        let deny_by_default = ForwardingPolicy {
            rules: vec![ForwardRule::new(Verdict::Allow, TargetMatch::Any)],
            default: Verdict::Deny,
        };
        assert_eq!(
            deny_by_default.listen_verdict("127.0.0.1", 9000, &[]),
            Verdict::Deny
        );
        assert_eq!(
            deny_by_default.listen_verdict("127.0.0.1", 0, &[]),
            Verdict::Deny
        );
    }

    #[test]
    fn non_ascii_hosts_never_panic() {
        let policy = ForwardingPolicy {
            rules: vec![ForwardRule::new(Verdict::Deny, TargetMatch::Reserved)],
            default: Verdict::Allow,
        };
        for host in [
            "ålknet-x",
            "алкнет-",
            "日本語のホスト",
            "a\u{301}lknet-",
            "é",
        ] {
            assert_eq!(
                policy.connect_verdict(host, 80, &[]),
                Verdict::Allow,
                "{host}"
            );
        }
    }

    #[test]
    fn globs() {
        assert!(glob_matches("*", "anything"));
        assert!(glob_matches("*.example.com", "a.b.example.com"));
        assert!(!glob_matches("*.example.com", "example.com"));
        assert!(glob_matches("db-*-prod", "db-eu-prod"));
        assert!(!glob_matches("db-*-prod", "db-eu-prod2"));
        assert!(glob_matches("exact", "exact"));
        assert!(!glob_matches("exact", "exactly"));
        assert!(glob_matches("a*a", "aa"));
        assert!(!glob_matches("a*a", "a"));
    }

    #[test]
    fn port_ranges() {
        assert_eq!(parse_port_range("22"), Ok(22..=22));
        assert_eq!(parse_port_range("1000-2000"), Ok(1000..=2000));
        assert!(parse_port_range("2000-1000").is_err());
        assert!(parse_port_range("http").is_err());
        assert!(parse_port_range("70000").is_err());
    }
}
