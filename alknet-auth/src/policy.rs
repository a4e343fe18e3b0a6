//! Forwarding policy: which targets a session may open channels to.
//!
//! Ordered rules, the first that matches decides; otherwise the default
//! does. A rule matches on the target (a host-name glob, an IP range, or
//! the reserved `alknet-` prefix), optionally a port range, and optionally
//! the login names it applies to. Pure data and matching; no I/O.

use std::net::IpAddr;
use std::ops::RangeInclusive;
use std::str::FromStr;

use ipnet::IpNet;

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
    /// Every target.
    Any,
    /// Host names (and IP literals as text) matching a glob; `*` matches
    /// any run of characters, case is ignored.
    HostGlob(String),
    /// IP-literal targets inside a range. Names are not resolved for this:
    /// a name pointing into the range is not caught by it.
    Cidr(IpNet),
    /// The reserved `alknet-` names.
    Reserved,
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
    /// Which login names it applies to (everyone when `None`).
    pub principals: Option<Vec<String>>,
}

/// An ordered list of rules and a default.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ForwardingPolicy {
    /// The rules, in order.
    pub rules: Vec<ForwardRule>,
    /// The verdict when no rule matches.
    pub default: Verdict,
}

impl ForwardingPolicy {
    /// Whether `principal` may open a channel to `host:port`.
    pub fn decide(&self, host: &str, port: u16, principal: &str) -> Verdict {
        self.rules
            .iter()
            .find(|rule| rule.matches(host, port, principal))
            .map_or(self.default, |rule| rule.verdict)
    }
}

impl ForwardingPolicy {
    /// Whether the address-range rules refuse a resolved address: the
    /// first range rule matching `ip`, `port` and `principal` decides, and
    /// when none matches the address is not refused (the name was already
    /// judged by [`decide`](Self::decide)).
    pub fn refuses_address(&self, ip: IpAddr, port: u16, principal: &str) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.rules
            .iter()
            .filter(|rule| matches!(rule.target, TargetMatch::Cidr(_)))
            .find(|rule| rule.matches(&ip.to_string(), port, principal))
            .is_some_and(|rule| rule.verdict == Verdict::Deny)
    }
}

impl ForwardRule {
    fn matches(&self, host: &str, port: u16, principal: &str) -> bool {
        let port_ok = self
            .ports
            .as_ref()
            .is_none_or(|ports| ports.contains(&port));
        let principal_ok = self
            .principals
            .as_ref()
            .is_none_or(|names| names.iter().any(|name| name == principal));
        port_ok && principal_ok && self.target.matches(host)
    }
}

impl TargetMatch {
    fn matches(&self, host: &str) -> bool {
        let bare = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        match self {
            TargetMatch::Any => true,
            TargetMatch::HostGlob(glob) => {
                glob_matches(&glob.to_ascii_lowercase(), &bare.to_ascii_lowercase())
            }
            TargetMatch::Cidr(net) => bare.parse::<IpAddr>().is_ok_and(|ip| net.contains(&ip)),
            TargetMatch::Reserved => bare.len() >= 7 && bare[..7].eq_ignore_ascii_case("alknet-"),
        }
    }
}

/// `*` matches any run of characters (including none); everything else
/// matches itself.
fn glob_matches(glob: &str, text: &str) -> bool {
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

    fn rule(verdict: Verdict, target: TargetMatch) -> ForwardRule {
        ForwardRule {
            verdict,
            target,
            ports: None,
            principals: None,
        }
    }

    #[test]
    fn the_first_matching_rule_decides_and_the_default_covers_the_rest() {
        let policy = ForwardingPolicy {
            rules: vec![
                ForwardRule {
                    ports: Some(22..=22),
                    ..rule(
                        Verdict::Allow,
                        TargetMatch::HostGlob("bastion.example.com".into()),
                    )
                },
                rule(Verdict::Deny, TargetMatch::HostGlob("*.example.com".into())),
                rule(
                    Verdict::Deny,
                    TargetMatch::Cidr("10.0.0.0/8".parse().unwrap()),
                ),
                rule(Verdict::Deny, TargetMatch::Reserved),
                ForwardRule {
                    principals: Some(vec!["admin".into()]),
                    ..rule(
                        Verdict::Allow,
                        TargetMatch::Cidr("192.168.0.0/16".parse().unwrap()),
                    )
                },
                rule(
                    Verdict::Deny,
                    TargetMatch::Cidr("192.168.0.0/16".parse().unwrap()),
                ),
            ],
            default: Verdict::Allow,
        };
        assert_eq!(
            policy.decide("bastion.example.com", 22, "u"),
            Verdict::Allow
        );
        assert_eq!(policy.decide("bastion.example.com", 80, "u"), Verdict::Deny);
        assert_eq!(policy.decide("WWW.Example.COM", 443, "u"), Verdict::Deny);
        assert_eq!(policy.decide("example.org", 443, "u"), Verdict::Allow);
        assert_eq!(policy.decide("10.1.2.3", 80, "u"), Verdict::Deny);
        assert_eq!(policy.decide("11.1.2.3", 80, "u"), Verdict::Allow);
        assert_eq!(policy.decide("alknet-control", 0, "u"), Verdict::Deny);
        assert_eq!(policy.decide("192.168.1.1", 80, "admin"), Verdict::Allow);
        assert_eq!(policy.decide("192.168.1.1", 80, "guest"), Verdict::Deny);
        assert_eq!(policy.decide("[::1]", 80, "u"), Verdict::Allow);
    }

    #[test]
    fn resolved_addresses_are_judged_by_the_range_rules_only() {
        let policy = ForwardingPolicy {
            rules: vec![
                rule(
                    Verdict::Allow,
                    TargetMatch::HostGlob("*.example.com".into()),
                ),
                rule(
                    Verdict::Deny,
                    TargetMatch::Cidr("10.0.0.0/8".parse().unwrap()),
                ),
                rule(
                    Verdict::Allow,
                    TargetMatch::Cidr("192.168.0.0/16".parse().unwrap()),
                ),
            ],
            default: Verdict::Deny,
        };
        let ip = |text: &str| text.parse::<IpAddr>().unwrap();
        assert!(policy.refuses_address(ip("10.1.2.3"), 80, "u"));
        assert!(policy.refuses_address(ip("::ffff:10.1.2.3"), 80, "u"));
        assert!(!policy.refuses_address(ip("192.168.1.1"), 80, "u"));
        assert!(
            !policy.refuses_address(ip("203.0.113.7"), 80, "u"),
            "no range rule: the name decided"
        );
    }

    #[test]
    fn deny_by_default_with_exceptions() {
        let policy = ForwardingPolicy {
            rules: vec![ForwardRule {
                ports: Some(80..=443),
                ..rule(Verdict::Allow, TargetMatch::Any)
            }],
            default: Verdict::Deny,
        };
        assert_eq!(policy.decide("anything", 80, "u"), Verdict::Allow);
        assert_eq!(policy.decide("anything", 443, "u"), Verdict::Allow);
        assert_eq!(policy.decide("anything", 22, "u"), Verdict::Deny);
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
