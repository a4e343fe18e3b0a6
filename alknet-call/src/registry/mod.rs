//! The operation registry: each operation's spec and handler under its
//! path, input validation and access checks, and the built-in discovery
//! operations (registered as ordinary handlers, in [`builtins`]).
//!
//! The hub that routes `/{spoke}/…` to other connections is a separate
//! [`Service`] wrapping a registry ([`Hub`], in `hub.rs`).

mod builtins;
mod hub;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use futures_util::future::BoxFuture;
use serde_json::Value;

use crate::service::{CallContext, Emitter, IncomingCall, Reply, Service};
use crate::spec::check_name;
use crate::{CallError, Failure, OperationSpec, OperationType};

pub use builtins::{SERVICES_LIST, SERVICES_SCHEMA, SERVICES_WHOAMI};
pub use hub::{HUB_REGISTER, Hub, SpokeRegistration};

type CallFn =
    dyn Fn(CallContext, Value) -> BoxFuture<'static, Result<Value, Failure>> + Send + Sync;
type SubscribeFn =
    dyn Fn(CallContext, Value, Emitter) -> BoxFuture<'static, Result<(), Failure>> + Send + Sync;

/// The code behind an operation, registered with (or apart from) its spec.
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

    /// Runs the handler for one call.
    pub(crate) async fn run(
        self,
        context: CallContext,
        input: Value,
        emitter: Emitter,
    ) -> Result<Reply, Failure> {
        match self {
            Handler::Call(function) => function(context, input).await.map(Reply::Value),
            Handler::Subscribe(function) => function(context, input, emitter)
                .await
                .map(|()| Reply::Completed),
        }
    }
}

/// A spec with its compiled input schema.
pub(crate) struct Operation {
    pub(crate) spec: OperationSpec,
    input: Option<Arc<jsonschema::Validator>>,
}

impl Operation {
    pub(crate) fn compile(spec: OperationSpec) -> Result<Self, CallError> {
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
    pub(crate) fn admit(&self, context: &CallContext, input: &Value) -> Result<(), Failure> {
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

/// One operation: its spec and, once registered, its handler.
struct Entry {
    operation: Operation,
    handler: Option<Handler>,
}

/// Path prefixes only the built-ins (and the hub) may use.
const RESERVED_PREFIXES: [&str; 2] = ["/services/", "/hub/"];

/// Operations by path, each a spec plus a handler, served over any number
/// of connections (it is a [`Service`]). Cheap to clone; clones share.
///
/// Built in: `/services/list`, `/services/schema`, `/services/whoami`.
/// Wrap it in a [`Hub`] to let spokes register their operations too.
#[derive(Clone)]
pub struct OperationRegistry {
    entries: Arc<RwLock<BTreeMap<String, Entry>>>,
}

impl std::fmt::Debug for OperationRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OperationRegistry")
            .field("operations", &self.read().keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Default for OperationRegistry {
    fn default() -> Self {
        Self::new()
    }
}

impl OperationRegistry {
    /// A registry holding only the built-in operations.
    pub fn new() -> Self {
        let registry = Self {
            entries: Arc::default(),
        };
        builtins::install(&registry);
        registry
    }

    fn read(&self) -> RwLockReadGuard<'_, BTreeMap<String, Entry>> {
        self.entries
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, BTreeMap<String, Entry>> {
        self.entries
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Registers `spec` and its `handler` together.
    pub fn register(&self, spec: OperationSpec, handler: Handler) -> Result<(), CallError> {
        refuse_reserved(&spec.name)?;
        self.insert(spec, Some(handler))
    }

    /// Registers a spec: its name must be a valid, unused path outside the
    /// built-in `/services/` and `/hub/`, its input schema must compile.
    /// Until a handler is registered too, calls get `unavailable`.
    pub fn register_spec(&self, spec: OperationSpec) -> Result<(), CallError> {
        refuse_reserved(&spec.name)?;
        self.insert(spec, None)
    }

    /// Registers an operation under a reserved prefix (built-ins, the hub).
    pub(crate) fn install(&self, spec: OperationSpec, handler: Handler) {
        let name = spec.name.clone();
        match Operation::compile(spec) {
            Ok(operation) => {
                self.write().insert(
                    name,
                    Entry {
                        operation,
                        handler: Some(handler),
                    },
                );
            }
            Err(error) => unreachable!("a built-in spec does not compile: {error}"),
        }
    }

    fn insert(&self, spec: OperationSpec, handler: Option<Handler>) -> Result<(), CallError> {
        if let Some(handler) = &handler
            && !handler.serves(spec.op_type)
        {
            return Err(CallError::HandlerMismatch {
                name: spec.name,
                op_type: spec.op_type,
            });
        }
        let operation = Operation::compile(spec)?;
        let mut entries = self.write();
        let name = &operation.spec.name;
        if entries.contains_key(name) {
            return Err(CallError::Duplicate(name.clone()));
        }
        entries.insert(name.clone(), Entry { operation, handler });
        Ok(())
    }

    /// Registers (or replaces) the handler of the operation `name`, whose
    /// spec was registered before. A handler of the wrong kind for the
    /// spec is refused.
    pub fn register_handler(&self, name: &str, handler: Handler) -> Result<(), CallError> {
        let mut entries = self.write();
        let Some(entry) = entries.get_mut(name) else {
            return Err(CallError::UnknownOperation(name.to_owned()));
        };
        if !handler.serves(entry.operation.spec.op_type) {
            return Err(CallError::HandlerMismatch {
                name: name.to_owned(),
                op_type: entry.operation.spec.op_type,
            });
        }
        entry.handler = Some(handler);
        Ok(())
    }

    /// Removes an operation (built-ins stay).
    pub fn unregister(&self, name: &str) -> Option<OperationSpec> {
        if refuse_reserved(name).is_err() {
            return None;
        }
        self.write().remove(name).map(|entry| entry.operation.spec)
    }

    /// Every spec, built-ins first, then by path.
    pub fn specs(&self) -> Vec<OperationSpec> {
        let entries = self.read();
        let (builtin, local): (Vec<&Entry>, Vec<&Entry>) = entries
            .values()
            .partition(|entry| refuse_reserved(&entry.operation.spec.name).is_err());
        builtin
            .into_iter()
            .chain(local)
            .map(|entry| entry.operation.spec.clone())
            .collect()
    }

    /// The handler for a call of `name`, after the access and input checks.
    fn handler_for(
        &self,
        name: &str,
        context: &CallContext,
        input: &Value,
    ) -> Result<Handler, Failure> {
        let entries = self.read();
        let Some(entry) = entries.get(name) else {
            return Err(Failure::not_found(format!("no operation named {name}")));
        };
        entry.operation.admit(context, input)?;
        entry
            .handler
            .clone()
            .ok_or_else(|| Failure::unavailable(format!("{name} has no handler yet")))
    }

    pub(crate) async fn dispatch(
        self,
        call: IncomingCall,
        emitter: Emitter,
    ) -> Result<Reply, Failure> {
        let IncomingCall {
            name,
            input,
            context,
        } = call;
        let handler = self.handler_for(&name, &context, &input)?;
        handler.run(context, input, emitter).await
    }
}

fn refuse_reserved(name: &str) -> Result<(), CallError> {
    if RESERVED_PREFIXES
        .iter()
        .any(|prefix| name.starts_with(prefix))
    {
        return Err(CallError::InvalidName {
            name: name.to_owned(),
            reason: "/services/ and /hub/ are built in",
        });
    }
    Ok(())
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
    use serde_json::json;

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
            [SERVICES_LIST, SERVICES_SCHEMA, SERVICES_WHOAMI, "/echo/say"]
        );
        assert_eq!(registry.unregister(SERVICES_LIST), None, "built-ins stay");
    }

    #[test]
    fn handlers_registered_apart_must_fit_their_spec() {
        let registry = OperationRegistry::new();
        registry
            .register_spec(OperationSpec::new(
                "/feed/items",
                OperationType::Subscription,
            ))
            .unwrap();
        assert!(matches!(
            registry.register_handler("/feed/items", Handler::call(|_, v| async move { Ok(v) })),
            Err(CallError::HandlerMismatch { .. })
        ));
        assert!(matches!(
            registry.register_handler("/feed/other", Handler::call(|_, v| async move { Ok(v) })),
            Err(CallError::UnknownOperation(_))
        ));
        registry
            .register_handler(
                "/feed/items",
                Handler::subscription(|_, _, _| async move { Ok(()) }),
            )
            .unwrap();
    }
}
