//! What an operation is: its name, kind, schemas and who may call it.

use alknet_identity::Identity;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::CallError;

/// Whether an operation reads, changes, or streams.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OperationType {
    /// Reads; one response.
    Query,
    /// Changes something; one response.
    Mutation,
    /// Many responses, then `call.completed`.
    Subscription,
}

/// A resource grant an operation needs: `type:action`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceAccess {
    /// The kind of resource, such as `service`.
    #[serde(rename = "type")]
    pub resource_type: String,
    /// What is done to it, such as `read`.
    pub action: String,
}

/// Who may call an operation, checked against the caller's [`Identity`].
/// Empty (the default) lets anyone call, even without an identity.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AccessControl {
    /// Scopes the caller must all have.
    pub required_scopes: Vec<String>,
    /// When not empty, the caller must have at least one of these.
    pub any_scopes: Vec<String>,
    /// A resource grant the caller must hold.
    pub resource: Option<ResourceAccess>,
}

impl AccessControl {
    /// Whether nothing is required.
    pub fn is_open(&self) -> bool {
        self.required_scopes.is_empty() && self.any_scopes.is_empty() && self.resource.is_none()
    }

    /// Whether `identity` may call. A grant of `type:action`, `type:*` or
    /// `*` in [`Identity::resources`] satisfies a resource requirement.
    pub fn permits(&self, identity: Option<&Identity>) -> bool {
        if self.is_open() {
            return true;
        }
        let Some(identity) = identity else {
            return false;
        };
        let has = |scope: &String| identity.has_scope(scope);
        let all_of = self.required_scopes.iter().all(has);
        let any_of = self.any_scopes.is_empty() || self.any_scopes.iter().any(has);
        let resource = self
            .resource
            .as_ref()
            .is_none_or(|wanted| identity.has_resource(&wanted.resource_type, &wanted.action));
        all_of && any_of && resource
    }
}

/// Describes one operation; registered with a handler in an
/// [`OperationRegistry`](crate::OperationRegistry).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OperationSpec {
    /// Its path, `/{service}/{op}` (a hub shows a spoke's as
    /// `/{spoke}/{service}/{op}`).
    pub name: String,
    /// The group it belongs to, for listings.
    #[serde(default)]
    pub namespace: String,
    /// Query, mutation or subscription.
    pub op_type: OperationType,
    /// A JSON Schema the input must match (`None`: anything).
    #[serde(default)]
    pub input_schema: Option<Value>,
    /// A JSON Schema describing the output, for callers (not enforced).
    #[serde(default)]
    pub output_schema: Option<Value>,
    /// Who may call it.
    #[serde(default)]
    pub access_control: AccessControl,
    /// One line on what it does.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
}

impl OperationSpec {
    /// A spec named `name`, in the namespace its first segment names, open
    /// to anyone and accepting any input.
    pub fn new(name: impl Into<String>, op_type: OperationType) -> Self {
        let name = name.into();
        let namespace = name
            .trim_start_matches('/')
            .split('/')
            .next()
            .unwrap_or_default()
            .to_owned();
        Self {
            name,
            namespace,
            op_type,
            input_schema: None,
            output_schema: None,
            access_control: AccessControl::default(),
            description: String::new(),
        }
    }

    /// Sets the input schema.
    pub fn input_schema(mut self, schema: Value) -> Self {
        self.input_schema = Some(schema);
        self
    }

    /// Sets the output schema.
    pub fn output_schema(mut self, schema: Value) -> Self {
        self.output_schema = Some(schema);
        self
    }

    /// Sets who may call it.
    pub fn access_control(mut self, access: AccessControl) -> Self {
        self.access_control = access;
        self
    }

    /// Sets the description.
    pub fn description(mut self, text: impl Into<String>) -> Self {
        self.description = text.into();
        self
    }
}

/// Checks that `name` is `/segment(/segment)*` with printable, slash-free
/// segments.
pub(crate) fn check_name(name: &str) -> Result<(), CallError> {
    let invalid = |reason| CallError::InvalidName {
        name: name.to_owned(),
        reason,
    };
    let Some(rest) = name.strip_prefix('/') else {
        return Err(invalid("must start with '/'"));
    };
    if rest.is_empty() || rest.split('/').any(str::is_empty) {
        return Err(invalid("has an empty segment"));
    }
    if name.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(invalid("contains whitespace or control characters"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn identity(scopes: &[&str], resources: &[&str]) -> Identity {
        Identity {
            id: "test".into(),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            resources: resources.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn open_access_needs_no_identity() {
        assert!(AccessControl::default().permits(None));
    }

    #[test]
    fn scopes_all_of_and_any_of() {
        let access = AccessControl {
            required_scopes: vec!["deploy".into(), "metrics".into()],
            any_scopes: vec!["eu".into(), "us".into()],
            resource: None,
        };
        assert!(access.permits(Some(&identity(&["deploy", "metrics", "us"], &[]))));
        assert!(!access.permits(Some(&identity(&["deploy", "us"], &[]))));
        assert!(!access.permits(Some(&identity(&["deploy", "metrics"], &[]))));
        assert!(!access.permits(None));
    }

    #[test]
    fn resource_grants_match_type_and_action() {
        let access = AccessControl {
            resource: Some(ResourceAccess {
                resource_type: "service".into(),
                action: "read".into(),
            }),
            ..AccessControl::default()
        };
        assert!(access.permits(Some(&identity(&[], &["service:read"]))));
        assert!(access.permits(Some(&identity(&[], &["service:*"]))));
        assert!(access.permits(Some(&identity(&[], &["*"]))));
        assert!(!access.permits(Some(&identity(&[], &["service:write"]))));
        assert!(!access.permits(Some(&identity(&[], &["host:read"]))));
    }

    #[test]
    fn specs_serialise_with_snake_case_fields() {
        let spec = OperationSpec::new("/math/add", OperationType::Query)
            .input_schema(json!({"type": "array"}));
        let value = serde_json::to_value(&spec).unwrap();
        assert_eq!(value["namespace"], "math");
        assert_eq!(value["op_type"], "query");
        assert_eq!(value["access_control"]["required_scopes"], json!([]));
        let back: OperationSpec =
            serde_json::from_value(json!({"name": "/x/y", "op_type": "subscription"})).unwrap();
        assert_eq!(back.op_type, OperationType::Subscription);
        assert!(back.access_control.is_open());
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("/a/b").is_ok());
        for bad in ["", "/", "a/b", "/a//b", "/a/", "/a b"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }
}
