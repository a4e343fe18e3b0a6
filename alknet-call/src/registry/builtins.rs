//! The built-in operations, registered as ordinary handlers: discovery
//! (`/services/list`, `/services/schema`) and `/services/whoami`.
//!
//! Discovery lists what a *source* of specs holds: the registry itself,
//! or — once a [`Hub`](super::Hub) wraps it — the registry and every live
//! spoke's operations.

use std::sync::Arc;

use serde_json::{Value, json};

use super::{Handler, OperationRegistry};
use crate::service::CallContext;
use crate::{Failure, OperationSpec, OperationType};

/// `/services/list`: the operations the caller may call.
pub const SERVICES_LIST: &str = "/services/list";
/// `/services/schema`: one operation's spec, input `{"name": "/path"}`.
pub const SERVICES_SCHEMA: &str = "/services/schema";
/// `/services/whoami`: the caller's own identity as the server sees it
/// (`null` without one), for checking what scopes a key or certificate got.
pub const SERVICES_WHOAMI: &str = "/services/whoami";

/// Where discovery gets the specs it lists.
pub(crate) type SpecSource = Arc<dyn Fn() -> Vec<OperationSpec> + Send + Sync>;

/// Registers the built-ins on `registry`, listing the registry's own specs.
pub(super) fn install(registry: &OperationRegistry) {
    // Weak: the registry holds these handlers.
    let weak = Arc::downgrade(&registry.entries);
    let source: SpecSource = Arc::new(move || {
        weak.upgrade()
            .map(|entries| OperationRegistry { entries }.specs())
            .unwrap_or_default()
    });
    install_discovery(registry, source);
    registry.install(
        OperationSpec::new(SERVICES_WHOAMI, OperationType::Query)
            .description("the caller's identity: id, scopes, resources"),
        Handler::call(|context: CallContext, _| async move {
            Ok(context.identity().map_or(
                Value::Null,
                |who| json!({"id": who.id, "scopes": who.scopes, "resources": who.resources}),
            ))
        }),
    );
}

/// Registers (or re-registers) `/services/list` and `/services/schema`
/// over `source`.
pub(crate) fn install_discovery(registry: &OperationRegistry, source: SpecSource) {
    let listed = source.clone();
    registry.install(
        OperationSpec::new(SERVICES_LIST, OperationType::Query)
            .description("the operations the caller may call"),
        Handler::call(move |context, _| {
            let visible = list(&listed(), &context);
            async move { Ok(visible) }
        }),
    );
    registry.install(
        OperationSpec::new(SERVICES_SCHEMA, OperationType::Query)
            .input_schema(json!({
                "type": "object",
                "properties": {"name": {"type": "string"}},
                "required": ["name"]
            }))
            .description("one operation's spec"),
        Handler::call(move |context, input| {
            let found = schema(&source(), &context, &input);
            async move { found }
        }),
    );
}

fn list(specs: &[OperationSpec], context: &CallContext) -> Value {
    let visible: Vec<Value> = specs
        .iter()
        .filter(|spec| spec.access_control.permits(context.identity()))
        .map(|spec| {
            json!({
                "name": spec.name,
                "namespace": spec.namespace,
                "op_type": spec.op_type,
                "description": spec.description,
            })
        })
        .collect();
    Value::Array(visible)
}

fn schema(specs: &[OperationSpec], context: &CallContext, input: &Value) -> Result<Value, Failure> {
    let wanted = input["name"].as_str().unwrap_or_default();
    specs
        .iter()
        .find(|spec| spec.name == wanted && spec.access_control.permits(context.identity()))
        .map(|spec| serde_json::to_value(spec).unwrap_or(Value::Null))
        .ok_or_else(|| Failure::not_found(format!("no operation named {wanted}")))
}
