//! The operation registry: specs and handlers by path, input validation,
//! access checks, discovery, and hub routing to spokes.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::{Arc, LazyLock, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};

use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::service::{CallContext, Emitter, IncomingCall, Reply, Service};
use crate::spec::check_name;
use crate::{AccessControl, CallError, Caller, Failure, OperationSpec, OperationType};

/// `/services/list`: the operations the caller may call.
pub const SERVICES_LIST: &str = "/services/list";
/// `/services/schema`: one operation's spec, input `{"name": "/path"}`.
pub const SERVICES_SCHEMA: &str = "/services/schema";
/// `/services/whoami`: the caller's own identity as the server sees it
/// (`null` without one), for checking what scopes a key or certificate got.
pub const SERVICES_WHOAMI: &str = "/services/whoami";
/// `/hub/services/register`: a spoke offers its operations, input
/// `{"spoke": "name", "operations": [OperationSpec…]}`.
pub const HUB_REGISTER: &str = "/hub/services/register";

type CallFn =
    dyn Fn(CallContext, Value) -> BoxFuture<'static, Result<Value, Failure>> + Send + Sync;
type SubscribeFn =
    dyn Fn(CallContext, Value, Emitter) -> BoxFuture<'static, Result<(), Failure>> + Send + Sync;

/// The code behind an operation, registered apart from its spec.
#[derive(Clone)]
pub enum Handler {
    /// Answers once (queries and mutations).
    Call(Arc<CallFn>),
    /// Emits items, then completes (subscriptions).
    Subscribe(Arc<SubscribeFn>),
}

impl std::fmt::Debug for Handler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Handler::Call(_) => "Handler::Call",
            Handler::Subscribe(_) => "Handler::Subscribe",
        })
    }
}

impl Handler {
    /// Whether this handler can serve an operation of `op_type`.
    pub fn serves(&self, op_type: OperationType) -> bool {
        matches!(
            (self, op_type),
            (
                Handler::Call(_),
                OperationType::Query | OperationType::Mutation
            ) | (Handler::Subscribe(_), OperationType::Subscription)
        )
    }

    /// A handler answering once with what `function` returns.
    pub fn call<F, Fut>(function: F) -> Self
    where
        F: Fn(CallContext, Value) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Value, Failure>> + Send + 'static,
    {
        Handler::Call(Arc::new(move |context, input| {
            Box::pin(function(context, input))
        }))
    }

    /// A subscription handler: emits items, and its `Ok` completes it.
    pub fn subscription<F, Fut>(function: F) -> Self
    where
        F: Fn(CallContext, Value, Emitter) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), Failure>> + Send + 'static,
    {
        Handler::Subscribe(Arc::new(move |context, input, emitter| {
            Box::pin(function(context, input, emitter))
        }))
    }
}

/// A spec with its compiled input schema.
struct Operation {
    spec: OperationSpec,
    input: Option<Arc<jsonschema::Validator>>,
}

impl Operation {
    fn compile(spec: OperationSpec) -> Result<Self, CallError> {
        check_name(&spec.name)?;
        let input = match &spec.input_schema {
            None => None,
            Some(schema) => Some(Arc::new(jsonschema::validator_for(schema).map_err(
                |error| CallError::InvalidSchema {
                    name: spec.name.clone(),
                    reason: error.to_string(),
                },
            )?)),
        };
        Ok(Self { spec, input })
    }

    /// Access, then input: the caller learns nothing about the schema of an
    /// operation it may not call.
    fn admit(&self, context: &CallContext, input: &Value) -> Result<(), Failure> {
        if !self.spec.access_control.permits(context.identity()) {
            return Err(Failure::forbidden(format!(
                "not allowed to call {}",
                self.spec.name
            )));
        }
        if let Some(validator) = &self.input
            && let Some(error) = validator.iter_errors(input).next()
        {
            let path = error.instance_path().to_string();
            let at = if path.is_empty() {
                "input".to_owned()
            } else {
                format!("input{path}")
            };
            return Err(Failure::invalid_input(format!("{at}: {error}")));
        }
        Ok(())
    }
}

enum Spoke {
    Live {
        caller: Caller,
        operations: BTreeMap<String, Operation>,
    },
    /// Registered once, disconnected since: calls get `unavailable`.
    Gone,
}

#[derive(Default)]
struct State {
    operations: BTreeMap<String, Operation>,
    handlers: HashMap<String, Handler>,
    spokes: BTreeMap<String, Spoke>,
    /// Who may register spokes (open by default).
    hub_access: AccessControl,
}

/// Operations by path, each a spec plus a handler, served over any number
/// of connections (it is a [`Service`]). Cheap to clone; clones share.
///
/// Built in: `/services/list`, `/services/schema`, `/services/whoami`, and the hub's
/// `/hub/services/register`. A spoke that registers is routed to as
/// `/{spoke}/…` (prefix stripped) until its connection closes.
#[derive(Clone, Default)]
pub struct OperationRegistry {
    state: Arc<RwLock<State>>,
}

impl std::fmt::Debug for OperationRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.read();
        f.debug_struct("OperationRegistry")
            .field("operations", &state.operations.keys().collect::<Vec<_>>())
            .field("spokes", &state.spokes.keys().collect::<Vec<_>>())
            .finish()
    }
}

const BUILTIN_PREFIXES: [&str; 2] = ["/services/", "/hub/"];

/// The built-in operations, compiled once (a unit test checks they all
/// compile).
static BUILTINS: LazyLock<Vec<Operation>> = LazyLock::new(|| {
    builtin_specs()
        .into_iter()
        .filter_map(|spec| Operation::compile(spec).ok())
        .collect()
});

fn builtin_specs() -> Vec<OperationSpec> {
    vec![
        OperationSpec::new(SERVICES_LIST, OperationType::Query)
            .description("the operations the caller may call"),
        OperationSpec::new(SERVICES_SCHEMA, OperationType::Query)
            .input_schema(json!({
                "type": "object",
                "properties": {"name": {"type": "string"}},
                "required": ["name"]
            }))
            .description("one operation's spec"),
        OperationSpec::new(SERVICES_WHOAMI, OperationType::Query)
            .description("the caller's identity: id, scopes, resources"),
        OperationSpec::new(HUB_REGISTER, OperationType::Mutation)
            .input_schema(json!({
                "type": "object",
                "properties": {
                    "spoke": {"type": "string", "pattern": "^[A-Za-z0-9_.-]+$"},
                    "operations": {"type": "array", "items": {"type": "object"}}
                },
                "required": ["spoke", "operations"]
            }))
            .description("a spoke offers its operations through this hub"),
    ]
}

impl OperationRegistry {
    /// An empty registry (the built-in operations are always there).
    pub fn new() -> Self {
        Self::default()
    }

    fn read(&self) -> RwLockReadGuard<'_, State> {
        self.state
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Registers `spec` and its `handler` together.
    pub fn register(&self, spec: OperationSpec, handler: Handler) -> Result<(), CallError> {
        if !handler.serves(spec.op_type) {
            return Err(CallError::HandlerMismatch {
                name: spec.name,
                op_type: spec.op_type,
            });
        }
        let name = spec.name.clone();
        self.register_spec(spec)?;
        self.register_handler(&name, handler);
        Ok(())
    }

    /// Registers a spec: its name must be a valid, unused path outside the
    /// built-in `/services/` and `/hub/`, its input schema must compile.
    /// Until a handler is registered too, calls get `unavailable`.
    pub fn register_spec(&self, spec: OperationSpec) -> Result<(), CallError> {
        if BUILTIN_PREFIXES
            .iter()
            .any(|prefix| spec.name.starts_with(prefix))
        {
            return Err(CallError::InvalidName {
                name: spec.name,
                reason: "/services/ and /hub/ are built in",
            });
        }
        let operation = Operation::compile(spec)?;
        let mut state = self.write();
        let name = &operation.spec.name;
        if state.operations.contains_key(name) {
            return Err(CallError::Duplicate(name.clone()));
        }
        state.operations.insert(name.clone(), operation);
        Ok(())
    }

    /// Limits who may register as a spoke (by default anyone who can open a
    /// connection may). A spoke receives other callers' inputs, so a hub
    /// shared by mutually distrusting users should require a scope here.
    pub fn set_hub_access(&self, access: AccessControl) {
        self.write().hub_access = access;
    }

    /// Registers (or replaces) the handler for `name`.
    pub fn register_handler(&self, name: &str, handler: Handler) {
        self.write().handlers.insert(name.to_owned(), handler);
    }

    /// Removes an operation's spec and handler.
    pub fn unregister(&self, name: &str) -> Option<OperationSpec> {
        let mut state = self.write();
        state.handlers.remove(name);
        state
            .operations
            .remove(name)
            .map(|operation| operation.spec)
    }

    /// Every spec: built-in, local, then each live spoke's (prefixed).
    pub fn specs(&self) -> Vec<OperationSpec> {
        let state = self.read();
        let mut specs: Vec<OperationSpec> = BUILTINS.iter().map(|op| op.spec.clone()).collect();
        specs.extend(state.operations.values().map(|op| op.spec.clone()));
        for (spoke, entry) in &state.spokes {
            if let Spoke::Live { operations, .. } = entry {
                specs.extend(operations.values().map(|op| prefixed(spoke, &op.spec)));
            }
        }
        specs
    }

    /// The spoke names currently connected.
    pub fn spokes(&self) -> Vec<String> {
        self.read()
            .spokes
            .iter()
            .filter(|(_, entry)| matches!(entry, Spoke::Live { .. }))
            .map(|(name, _)| name.clone())
            .collect()
    }

    async fn dispatch(self, call: IncomingCall, emitter: Emitter) -> Result<Reply, Failure> {
        let IncomingCall {
            name,
            input,
            context,
        } = call;
        if let Some(builtin) = BUILTINS.iter().find(|op| op.spec.name == name) {
            builtin.admit(&context, &input)?;
            return match name.as_str() {
                SERVICES_LIST => Ok(Reply::Value(self.list(&context))),
                SERVICES_SCHEMA => self.schema(&context, &input).map(Reply::Value),
                SERVICES_WHOAMI => Ok(Reply::Value(context.identity().map_or(
                    Value::Null,
                    |who| json!({"id": who.id, "scopes": who.scopes, "resources": who.resources}),
                ))),
                _ => self.register_spoke(&context, input).map(Reply::Value),
            };
        }
        if let Some(route) = self.spoke_route(&name, &context, &input)? {
            return route.forward(input, emitter).await;
        }
        let handler = {
            let state = self.read();
            let Some(operation) = state.operations.get(&name) else {
                return Err(Failure::not_found(format!("no operation named {name}")));
            };
            operation.admit(&context, &input)?;
            let Some(handler) = state.handlers.get(&name) else {
                return Err(Failure::unavailable(format!("{name} has no handler yet")));
            };
            // Registered apart, they may disagree: answering anyway would
            // leave a subscriber waiting for a completion that never comes.
            if !handler.serves(operation.spec.op_type) {
                return Err(Failure::internal(
                    CallError::HandlerMismatch {
                        name: name.clone(),
                        op_type: operation.spec.op_type,
                    }
                    .to_string(),
                ));
            }
            handler.clone()
        };
        match handler {
            Handler::Call(function) => function(context, input).await.map(Reply::Value),
            Handler::Subscribe(function) => function(context, input, emitter)
                .await
                .map(|()| Reply::Completed),
        }
    }

    fn list(&self, context: &CallContext) -> Value {
        let visible: Vec<Value> = self
            .specs()
            .into_iter()
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

    fn schema(&self, context: &CallContext, input: &Value) -> Result<Value, Failure> {
        let wanted = input["name"].as_str().unwrap_or_default();
        self.specs()
            .into_iter()
            .find(|spec| spec.name == wanted && spec.access_control.permits(context.identity()))
            .map(|spec| serde_json::to_value(spec).unwrap_or(Value::Null))
            .ok_or_else(|| Failure::not_found(format!("no operation named {wanted}")))
    }

    fn register_spoke(&self, context: &CallContext, input: Value) -> Result<Value, Failure> {
        #[derive(Deserialize)]
        struct Registration {
            spoke: String,
            operations: Vec<OperationSpec>,
        }
        if !self.read().hub_access.permits(context.identity()) {
            return Err(Failure::forbidden(
                "not allowed to register spokes with this hub",
            ));
        }
        let registration: Registration = serde_json::from_value(input)
            .map_err(|error| Failure::invalid_input(format!("registration: {error}")))?;
        let spoke = registration.spoke;
        let mut operations = BTreeMap::new();
        for spec in registration.operations {
            let operation = Operation::compile(spec)
                .map_err(|error| Failure::invalid_input(error.to_string()))?;
            operations.insert(operation.spec.name.clone(), operation);
        }
        let count = operations.len();
        let caller = context.peer().clone();
        {
            let mut state = self.write();
            let prefix = format!("/{spoke}/");
            let taken_locally = state
                .operations
                .keys()
                .any(|name| name.starts_with(&prefix))
                || BUILTIN_PREFIXES.contains(&prefix.as_str());
            if taken_locally {
                return Err(Failure::invalid_input(format!(
                    "spoke name {spoke:?} is used by this hub's own operations"
                )));
            }
            if let Some(Spoke::Live { caller: holder, .. }) = state.spokes.get(&spoke)
                && !holder.is_closed()
                && !holder.same_connection(&caller)
            {
                return Err(Failure::forbidden(format!(
                    "spoke {spoke:?} is registered by another connection"
                )));
            }
            state.spokes.insert(
                spoke.clone(),
                Spoke::Live {
                    caller: caller.clone(),
                    operations,
                },
            );
        }
        tokio::spawn(forget_when_closed(
            Arc::downgrade(&self.state),
            spoke.clone(),
            caller,
        ));
        Ok(json!({"spoke": spoke, "registered": count}))
    }

    /// Where a `/{spoke}/…` call goes, after access and input checks;
    /// `None` when `name` names no spoke.
    fn spoke_route(
        &self,
        name: &str,
        context: &CallContext,
        input: &Value,
    ) -> Result<Option<SpokeRoute>, Failure> {
        let Some((spoke, rest)) = name.strip_prefix('/').and_then(|path| path.split_once('/'))
        else {
            return Ok(None);
        };
        let state = self.read();
        match state.spokes.get(spoke) {
            None => Ok(None),
            Some(Spoke::Gone) => Err(Failure::unavailable(format!(
                "spoke {spoke:?} is not connected"
            ))),
            Some(Spoke::Live { caller, operations }) => {
                let inner = format!("/{rest}");
                let Some(operation) = operations.get(&inner) else {
                    return Err(Failure::not_found(format!("no operation named {name}")));
                };
                operation.admit(context, input)?;
                Ok(Some(SpokeRoute {
                    caller: caller.clone(),
                    name: inner,
                    op_type: operation.spec.op_type,
                }))
            }
        }
    }
}

fn prefixed(spoke: &str, spec: &OperationSpec) -> OperationSpec {
    let mut spec = spec.clone();
    spec.name = format!("/{spoke}{}", spec.name);
    spec
}

async fn forget_when_closed(state: Weak<RwLock<State>>, spoke: String, caller: Caller) {
    caller.closed().await;
    let Some(state) = state.upgrade() else {
        return;
    };
    let mut state = state
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(Spoke::Live { caller: holder, .. }) = state.spokes.get(&spoke)
        && holder.same_connection(&caller)
    {
        state.spokes.insert(spoke, Spoke::Gone);
    }
}

/// A call on its way to a spoke.
struct SpokeRoute {
    caller: Caller,
    name: String,
    op_type: OperationType,
}

impl SpokeRoute {
    /// Relays the call and its answer. If our caller aborts, this future is
    /// dropped, which aborts the call to the spoke in turn.
    async fn forward(self, input: Value, emitter: Emitter) -> Result<Reply, Failure> {
        if self.op_type != OperationType::Subscription {
            return match self.caller.call_with_timeout(&self.name, input, None).await {
                Ok(value) => Ok(Reply::Value(value)),
                Err(error) => relay_error(error),
            };
        }
        let mut items = match self.caller.subscribe(&self.name, input).await {
            Ok(items) => items,
            Err(error) => return relay_error(error),
        };
        while let Some(item) = items.next().await {
            match item {
                Ok(value) => emitter
                    .emit(value)
                    .await
                    .map_err(|_| Failure::unavailable("the caller's connection closed"))?,
                Err(error) => return relay_error(error),
            }
        }
        Ok(Reply::Completed)
    }
}

fn relay_error(error: CallError) -> Result<Reply, Failure> {
    match error {
        CallError::Remote(failure) => Err(failure),
        CallError::Aborted(reason) => Ok(Reply::Aborted(reason)),
        CallError::Timeout => Err(Failure::timeout("the spoke did not answer in time")),
        CallError::Closed => Err(Failure::unavailable("the spoke disconnected")),
        other => Err(Failure::internal(other.to_string())),
    }
}

impl Service for OperationRegistry {
    fn serve(
        &self,
        call: IncomingCall,
        emitter: Emitter,
    ) -> BoxFuture<'static, Result<Reply, Failure>> {
        Box::pin(self.clone().dispatch(call, emitter))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_compiles() {
        assert_eq!(BUILTINS.len(), builtin_specs().len());
    }

    #[test]
    fn registration_refuses_bad_names_schemas_and_duplicates() {
        let registry = OperationRegistry::new();
        let echo = || Handler::call(|_, input| async move { Ok(input) });
        registry
            .register(
                OperationSpec::new("/echo/say", OperationType::Query),
                echo(),
            )
            .unwrap();
        assert_eq!(
            registry.register(
                OperationSpec::new("/echo/say", OperationType::Query),
                echo()
            ),
            Err(CallError::Duplicate("/echo/say".into()))
        );
        assert!(matches!(
            registry.register(
                OperationSpec::new("/services/mine", OperationType::Query),
                echo()
            ),
            Err(CallError::InvalidName { .. })
        ));
        assert!(matches!(
            registry.register(OperationSpec::new("echo", OperationType::Query), echo()),
            Err(CallError::InvalidName { .. })
        ));
        assert!(matches!(
            registry.register(
                OperationSpec::new("/echo/stream", OperationType::Subscription),
                echo()
            ),
            Err(CallError::HandlerMismatch { .. })
        ));
        let bad_schema = OperationSpec::new("/echo/typed", OperationType::Query)
            .input_schema(json!({"type": "no-such-type"}));
        assert!(matches!(
            registry.register(bad_schema, echo()),
            Err(CallError::InvalidSchema { .. })
        ));
        let names: Vec<String> = registry.specs().into_iter().map(|spec| spec.name).collect();
        assert_eq!(
            names,
            [
                SERVICES_LIST,
                SERVICES_SCHEMA,
                SERVICES_WHOAMI,
                HUB_REGISTER,
                "/echo/say"
            ]
        );
    }
}
