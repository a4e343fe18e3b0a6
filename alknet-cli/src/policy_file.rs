//! The forwarding policy as TOML: a file for `--forward-policy`, or the
//! `[forwarding]` table of `--config`.
//!
//! ```toml
//! default = "allow"            # or "deny"
//!
//! [[rule]]                     # first match wins
//! action = "deny"
//! host = "*.internal.example"  # or: cidr = "10.0.0.0/8", or: reserved = true (alknet-*)
//! ports = "1-1024"             # or a single port: ports = 22
//! principals = ["alice"]       # login names the rule applies to (default: everyone)
//! ```

use std::path::Path;

use alknet::auth::{ForwardRule, ForwardingPolicy, TargetMatch, Verdict, parse_port_range};
use serde::Deserialize;

use crate::error::CliError;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PolicyTable {
    default: Option<String>,
    rule: Option<Vec<RuleTable>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleTable {
    action: String,
    host: Option<String>,
    cidr: Option<String>,
    reserved: Option<bool>,
    ports: Option<Ports>,
    principals: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
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
    /// Checks and converts; errors name the rule (1-based) and field.
    pub(crate) fn into_policy(self, source: &str) -> Result<ForwardingPolicy, CliError> {
        let bad = |what: String| CliError::Usage(format!("{source}: forwarding policy: {what}"));
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
            let target = match (rule.host, rule.cidr, rule.reserved.unwrap_or(false)) {
                (None, None, false) => TargetMatch::Any,
                (Some(glob), None, false) => TargetMatch::HostGlob(glob),
                (None, Some(cidr), false) => TargetMatch::Cidr(cidr.parse().map_err(|_| {
                    bad(format!("rule {n}: cidr {cidr:?} is not an address range"))
                })?),
                (None, None, true) => TargetMatch::Reserved,
                _ => {
                    return Err(bad(format!(
                        "rule {n}: use only one of host, cidr and reserved"
                    )));
                }
            };
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
            });
        }
        Ok(ForwardingPolicy { rules, default })
    }
}

/// Reads a `--forward-policy` file.
pub(crate) fn load_policy(path: &Path) -> Result<ForwardingPolicy, CliError> {
    let source = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|error| CliError::Usage(format!("cannot read {source}: {error}")))?;
    let table: PolicyTable = toml::from_str(&text)
        .map_err(|error| CliError::Usage(format!("{source}: {}", error.message())))?;
    table.into_policy(&source)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ForwardingPolicy, CliError> {
        let table: PolicyTable =
            toml::from_str(text).map_err(|e| CliError::Usage(e.message().to_owned()))?;
        table.into_policy("test.toml")
    }

    #[test]
    fn rules_in_order_with_every_kind_of_target() {
        let policy = parse(
            "default = \"deny\"\n\
             [[rule]]\naction = \"deny\"\nreserved = true\n\
             [[rule]]\naction = \"allow\"\nhost = \"*.example.com\"\nports = \"80-443\"\n\
             [[rule]]\naction = \"allow\"\ncidr = \"10.0.0.0/8\"\nports = 22\nprincipals = [\"ops\"]\n",
        )
        .unwrap();
        assert_eq!(policy.default, Verdict::Deny);
        assert_eq!(policy.rules.len(), 3);
        assert_eq!(policy.decide("www.example.com", 443, "u"), Verdict::Allow);
        assert_eq!(policy.decide("www.example.com", 22, "u"), Verdict::Deny);
        assert_eq!(policy.decide("10.1.1.1", 22, "ops"), Verdict::Allow);
        assert_eq!(policy.decide("10.1.1.1", 22, "dev"), Verdict::Deny);
        assert_eq!(policy.decide("alknet-control", 0, "ops"), Verdict::Deny);
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
        ] {
            let error = parse(text).unwrap_err().to_string();
            assert!(error.contains(expected), "{text:?}: {error}");
        }
    }
}
