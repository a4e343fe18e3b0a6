//! Who an authenticated alknet peer is, whatever carried it: an
//! [`Identity`] with an id, scopes and resource grants.
//!
//! This crate exists so that layers which only *consume* identities — the
//! call protocol's access checks (alknet-call), an embedder's own handlers —
//! need not link the parts that *establish* them (alknet-auth: key
//! parsing, certificates, every curve of ssh-key). It has no dependencies
//! and does nothing but hold and compare data.
//!
//! Grants in [`Identity::resources`] are `type:action` (`service:read`),
//! with `type:*` or `*` granting every action of a type or of everything.
//! A type may itself contain colons (`spoke:metrics:register` is type
//! `spoke:metrics`, action `register`): the action is what follows the
//! last colon.
//!
//! # Example
//!
//! ```
//! use alknet_identity::Identity;
//!
//! let alice = Identity {
//!     id: "SHA256:…".into(),
//!     scopes: vec!["deploy".into()],
//!     resources: vec!["service:read".into(), "spoke:*:register".into()],
//! };
//! assert!(alice.has_scope("deploy"));
//! assert!(alice.has_resource("service", "read"));
//! assert!(!alice.has_resource("service", "write"));
//! assert!(alice.has_resource("spoke:metrics", "register"));
//! ```

#![forbid(unsafe_code)]

/// An authenticated peer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Identity {
    /// A stable identifier (alknet's default provider uses the key
    /// fingerprint, or a certificate's key id).
    pub id: String,
    /// What it may do, for access checks (all-of / any-of).
    pub scopes: Vec<String>,
    /// Which resources it may act on, as `type:action` grants.
    pub resources: Vec<String>,
}

impl Identity {
    /// Whether the identity holds `scope`.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|held| held == scope)
    }

    /// Whether a grant in [`resources`](Self::resources) covers `action` on
    /// `resource_type`. `*` covers everything; a grant's type may end in
    /// `*` segments (`spoke:*`) to cover every type with that prefix.
    pub fn has_resource(&self, resource_type: &str, action: &str) -> bool {
        self.resources
            .iter()
            .any(|grant| grant_covers(grant, resource_type, action))
    }
}

/// `grant` is `*`, or `type:action` where the action after the last colon
/// may be `*`, and each colon-separated segment of the type may be `*`.
fn grant_covers(grant: &str, resource_type: &str, action: &str) -> bool {
    if grant == "*" {
        return true;
    }
    let Some((granted_type, granted_action)) = grant.rsplit_once(':') else {
        return false;
    };
    let action_ok = granted_action == "*" || granted_action == action;
    let mut granted = granted_type.split(':');
    let mut wanted = resource_type.split(':');
    let type_ok = loop {
        match (granted.next(), wanted.next()) {
            (None, None) => break true,
            (Some(g), Some(w)) if g == "*" || g == w => {}
            _ => break false,
        }
    };
    action_ok && type_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holding(grants: &[&str]) -> Identity {
        Identity {
            resources: grants.iter().map(|g| (*g).to_owned()).collect(),
            ..Identity::default()
        }
    }

    #[test]
    fn grants_match_by_type_and_action_with_wildcards() {
        let id = holding(&["service:read", "db:*"]);
        assert!(id.has_resource("service", "read"));
        assert!(!id.has_resource("service", "write"));
        assert!(id.has_resource("db", "drop"));
        assert!(!id.has_resource("dbx", "drop"));
        assert!(holding(&["*"]).has_resource("anything", "at-all"));
        assert!(!holding(&[]).has_resource("service", "read"));
        assert!(!holding(&["service"]).has_resource("service", "read"));
    }

    #[test]
    fn types_with_colons_match_segment_by_segment() {
        let named = holding(&["spoke:metrics:register"]);
        assert!(named.has_resource("spoke:metrics", "register"));
        assert!(!named.has_resource("spoke:billing", "register"));
        assert!(!named.has_resource("spoke", "metrics:register"));
        let any_spoke = holding(&["spoke:*:register"]);
        assert!(any_spoke.has_resource("spoke:billing", "register"));
        assert!(!any_spoke.has_resource("spoke:billing", "delete"));
        assert!(!any_spoke.has_resource("other:billing", "register"));
    }
}
