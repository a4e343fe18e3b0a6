//! The forwarding policy as TOML: a file of its own (`alknet serve
//! --forward-policy`), the `[forwarding]` table of `--config`, or text any
//! embedder (the Node addon) hands over.
//!
//! ```toml
//! default = "allow"            # or "deny": for TCP targets and -R listening
//!
//! [[rule]]                     # first match wins
//! action = "deny"
//! host = "*.internal.example"  # or: cidr = "10.0.0.0/8", reserved = true (alknet-*),
//!                              #     path = "/run/app/*.sock" (Unix sockets)
//! ports = "1-1024"             # or a single port: ports = 22
//! principals = ["alice"]       # who it applies to (default: everyone)
//! listen = true                # about -R listening instead of connecting
//! ```
//!
//! `principals` are the names the server authenticated: a certificate's
//! principals, or the `principals=` word of an authorized_keys line's
//! comment — never the login name a client types.

use std::path::Path;

use serde::Deserialize;

use crate::{AuthError, ForwardRule, ForwardingPolicy, TargetMatch, Verdict, parse_port_range};

/// The policy's TOML shape, before it is checked. Deserialise it inside a
/// larger file (as `--config`'s `[forwarding]`), then [`into_policy`](Self::into_policy).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyTable {
    default: Option<String>,
    rule: Option<Vec<RuleTable>>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleTable {
    action: String,
    host: Option<String>,
    cidr: Option<String>,
    reserved: Option<bool>,
    path: Option<String>,
    ports: Option<Ports>,
    principals: Option<Vec<String>>,
    listen: Option<bool>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
enum Ports {
    One(u16),
    Range(String),
}

fn verdict(text: &str) -> Result<Verdict, String> {
    match text {
        "allow" => Ok(Verdict::Allow),
        "deny" => Ok(Verdict::Deny),
        other => Err(format!("{other:?} is neither \"allow\" nor \"deny\"")),
    }
}

impl PolicyTable {
    /// Checks and converts; errors name `source`, the rule (1-based) and
    /// the field.
    pub fn into_policy(self, source: &str) -> Result<ForwardingPolicy, AuthError> {
        let bad = |what: String| AuthError::Policy {
            source_name: source.to_owned(),
            reason: what,
        };
        let default = self
            .default
            .as_deref()
            .map(verdict)
            .transpose()
            .map_err(|why| bad(format!("default: {why}")))?
            .unwrap_or_default();
        let mut rules = Vec::new();
        for (index, rule) in self.rule.unwrap_or_default().into_iter().enumerate() {
            let n = index + 1;
            let listen = rule.listen.unwrap_or(false);
            let target = match (
                rule.host,
                rule.cidr,
                rule.reserved.unwrap_or(false),
                rule.path,
            ) {
                (None, None, false, None) => TargetMatch::Any,
                (Some(glob), None, false, None) => TargetMatch::HostGlob(glob),
                (None, Some(cidr), false, None) => {
                    TargetMatch::Cidr(cidr.parse().map_err(|_| {
                        bad(format!("rule {n}: cidr {cidr:?} is not an address range"))
                    })?)
                }
                (None, None, true, None) => TargetMatch::Reserved,
                (None, None, false, Some(path)) => {
                    if !path.starts_with('/') {
                        return Err(bad(format!(
                            "rule {n}: path {path:?} must be absolute (a glob such as /run/app/*.sock)"
                        )));
                    }
                    TargetMatch::SocketPath(path)
                }
                _ => {
                    return Err(bad(format!(
                        "rule {n}: use only one of host, cidr, reserved and path"
                    )));
                }
            };
            if listen && matches!(target, TargetMatch::Reserved | TargetMatch::SocketPath(_)) {
                return Err(bad(format!(
                    "rule {n}: a listen rule names ports (and optionally a host or cidr for the \
                     bind address), not reserved names or socket paths"
                )));
            }
            let ports = match rule.ports {
                None => None,
                Some(Ports::One(port)) => Some(port..=port),
                Some(Ports::Range(text)) => Some(
                    parse_port_range(&text)
                        .map_err(|why| bad(format!("rule {n}: ports: {why}")))?,
                ),
            };
            rules.push(ForwardRule {
                verdict: verdict(&rule.action)
                    .map_err(|why| bad(format!("rule {n}: action: {why}")))?,
                target,
                ports,
                principals: rule.principals,
                listen,
            });
        }
        Ok(ForwardingPolicy { rules, default })
    }
}

impl ForwardingPolicy {
    /// Parses the TOML text of a policy; `source` names it in errors.
    pub fn from_toml(text: &str, source: &str) -> Result<Self, AuthError> {
        let table: PolicyTable = toml::from_str(text).map_err(|error| AuthError::Policy {
            source_name: source.to_owned(),
            reason: error.message().to_owned(),
        })?;
        table.into_policy(source)
    }

    /// Reads a policy file.
    pub fn load(path: &Path) -> Result<Self, AuthError> {
        let text = std::fs::read_to_string(path).map_err(|error| AuthError::Read {
            source_name: path.display().to_string(),
            error,
        })?;
        Self::from_toml(&text, &path.display().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ForwardingPolicy, AuthError> {
        ForwardingPolicy::from_toml(text, "test.toml")
    }

    #[test]
    fn rules_in_order_with_every_kind_of_target() {
        let policy = parse(
            "default = \"deny\"\n\
             [[rule]]\naction = \"deny\"\nreserved = true\n\
             [[rule]]\naction = \"allow\"\nhost = \"*.example.com\"\nports = \"80-443\"\n\
             [[rule]]\naction = \"allow\"\ncidr = \"10.0.0.0/8\"\nports = 22\nprincipals = [\"ops\"]\n\
             [[rule]]\naction = \"allow\"\npath = \"/run/app/*.sock\"\n\
             [[rule]]\naction = \"allow\"\nlisten = true\nports = \"8000-8999\"\n",
        )
        .unwrap();
        let ops = vec!["ops".to_owned()];
        assert_eq!(policy.default, Verdict::Deny);
        assert_eq!(policy.rules.len(), 5);
        assert_eq!(
            policy.connect_verdict("www.example.com", 443, &[]),
            Verdict::Allow
        );
        assert_eq!(
            policy.connect_verdict("www.example.com", 22, &[]),
            Verdict::Deny
        );
        assert_eq!(policy.connect_verdict("10.1.1.1", 22, &ops), Verdict::Allow);
        assert_eq!(policy.connect_verdict("10.1.1.1", 22, &[]), Verdict::Deny);
        assert_eq!(
            policy.connect_verdict("alknet-control", 0, &ops),
            Verdict::Deny
        );
        assert_eq!(
            policy.socket_verdict("/run/app/web.sock", &[]),
            Verdict::Allow
        );
        assert_eq!(
            policy.listen_verdict("127.0.0.1", 8080, &[]),
            Verdict::Allow
        );
        assert_eq!(policy.listen_verdict("127.0.0.1", 9090, &[]), Verdict::Deny);
    }

    #[test]
    fn mistakes_name_the_rule_and_field() {
        for (text, expected) in [
            ("default = \"maybe\"\n", "default"),
            ("[[rule]]\naction = \"permit\"\n", "rule 1: action"),
            (
                "[[rule]]\naction = \"deny\"\nhost = \"a\"\ncidr = \"10.0.0.0/8\"\n",
                "only one of",
            ),
            (
                "[[rule]]\naction = \"deny\"\ncidr = \"ten\"\n",
                "rule 1: cidr",
            ),
            (
                "[[rule]]\naction = \"deny\"\nports = \"9-1\"\n",
                "rule 1: ports",
            ),
            ("[[rule]]\naction = \"deny\"\nport = 22\n", "port"),
            (
                "[[rule]]\naction = \"allow\"\npath = \"x.sock\"\n",
                "absolute",
            ),
            (
                "[[rule]]\naction = \"allow\"\nlisten = true\nreserved = true\n",
                "listen rule",
            ),
        ] {
            let error = parse(text).unwrap_err().to_string();
            assert!(error.contains(expected), "{text:?}: {error}");
            assert!(error.contains("test.toml"), "{error}");
        }
    }
}
