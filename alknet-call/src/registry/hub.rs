//! The hub: a [`Service`] wrapping an [`OperationRegistry`] that also
//! routes calls to *spokes* — peers that registered their operations with
//! `/hub/services/register {"spoke": NAME, "operations": […]}` — as
//! `/NAME/…`, prefix stripped, until their connection closes.
//!
//! A spoke receives other callers' inputs and answers them, so who may
//! register which name matters ([`SpokeRegistration`]): by default a
//! caller needs the resource grant `spoke:NAME:register` (or
//! `spoke:*:register`), and a name freed by a disconnect can be taken
//! again only by the same identity until a grace period has passed.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::builtins::{SpecSource, install_discovery};
use super::{Handler, Operation, OperationRegistry, RESERVED_PREFIXES};
use crate::service::{CallContext, Emitter, IncomingCall, Reply, Service};
use crate::{AccessControl, CallError, Caller, Failure, OperationSpec, OperationType};

/// `/hub/services/register`: a spoke offers its operations, input
/// `{"spoke": "name", "operations": [OperationSpec…]}`.
pub const HUB_REGISTER: &str = "/hub/services/register";

/// How long a name freed by a disconnect stays reserved for the identity
/// that held it (a spoke reconnecting after a network blip gets it back;
/// nobody else can grab it in between).
const DEFAULT_RECLAIM_GRACE: Duration = Duration::from_secs(60);

/// How long a call forwarded to a spoke may take before the caller is told
/// `timeout` (a subscription has no limit).
const DEFAULT_SPOKE_TIMEOUT: Duration = Duration::from_secs(30);

/// Who may register a spoke.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SpokeRegistration {
    /// Whoever can open a connection, any free name: only for a hub whose
    /// every peer is trusted.
    Open,
    /// An identity holding the grant `spoke:NAME:register` (or
    /// `spoke:*:register`, or `*`) for the name it registers. The default.
    Granted,
    /// Callers this access control admits, any free name.
    Access(AccessControl),
}

impl SpokeRegistration {
    fn permits(&self, context: &CallContext, spoke: &str) -> bool {
        match self {
            SpokeRegistration::Open => true,
            SpokeRegistration::Granted => context
                .identity()
                .is_some_and(|who| who.has_resource(&format!("spoke:{spoke}"), "register")),
            SpokeRegistration::Access(access) => access.permits(context.identity()),
        }
    }
}

enum Spoke {
    Live {
        caller: Caller,
        identity: Option<String>,
        operations: BTreeMap<String, Operation>,
    },
    /// Registered once, disconnected since: calls get `unavailable`.
    Gone {
        identity: Option<String>,
        since: Instant,
    },
}

struct HubState {
    spokes: BTreeMap<String, Spoke>,
    registration: SpokeRegistration,
    reclaim_grace: Duration,
    spoke_timeout: Duration,
}

/// An [`OperationRegistry`] plus the spokes registered with it. Cheap to
/// clone; clones share.
#[derive(Clone)]
pub struct Hub {
    registry: OperationRegistry,
    state: Arc<RwLock<HubState>>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("registry", &self.registry)
            .field("spokes", &self.spokes())
            .finish()
    }
}

impl Hub {
    /// A hub over `registry`, which gains `/hub/services/register`, and
    /// whose discovery operations list the live spokes' operations too.
    pub fn new(registry: OperationRegistry) -> Self {
        let hub = Self {
            registry,
            state: Arc::new(RwLock::new(HubState {
                spokes: BTreeMap::new(),
                registration: SpokeRegistration::Granted,
                reclaim_grace: DEFAULT_RECLAIM_GRACE,
                spoke_timeout: DEFAULT_SPOKE_TIMEOUT,
            })),
        };
        let (state, entries) = (
            Arc::downgrade(&hub.state),
            Arc::downgrade(&hub.registry.entries),
        );
        let source: SpecSource = Arc::new(move || {
            let mut specs = entries
                .upgrade()
                .map(|entries| OperationRegistry { entries }.specs())
                .unwrap_or_default();
            if let Some(state) = state.upgrade() {
                specs.extend(spoke_specs(&read(&state)));
            }
            specs
        });
        install_discovery(&hub.registry, source);
        let state = Arc::downgrade(&hub.state);
        hub.registry.install(
            OperationSpec::new(HUB_REGISTER, OperationType::Mutation)
                .input_schema(json!({
                    "type": "object",
                    "properties": {
                        "spoke": {"type": "string", "pattern": "^[A-Za-z0-9_.-]{1,64}$"},
                        "operations": {"type": "array", "items": {"type": "object"}}
                    },
                    "required": ["spoke", "operations"]
                }))
                .description("a spoke offers its operations through this hub"),
            Handler::call(move |context, input| {
                let registered = register(&state, &context, input);
                async move { registered }
            }),
        );
        hub
    }

    /// Sets who may register spokes (by default, holders of
    /// `spoke:NAME:register`).
    pub fn set_registration(&self, registration: SpokeRegistration) {
        write(&self.state).registration = registration;
    }

    /// Sets how long a freed name stays reserved for its last holder.
    pub fn set_reclaim_grace(&self, grace: Duration) {
        write(&self.state).reclaim_grace = grace;
    }

    /// Sets how long a forwarded call may wait for a spoke's answer.
    pub fn set_spoke_timeout(&self, timeout: Duration) {
        write(&self.state).spoke_timeout = timeout;
    }

    /// The registry the hub serves besides its spokes.
    pub fn registry(&self) -> &OperationRegistry {
        &self.registry
    }

    /// The spoke names currently connected.
    pub fn spokes(&self) -> Vec<String> {
        read(&self.state)
            .spokes
            .iter()
            .filter(|(_, entry)| matches!(entry, Spoke::Live { .. }))
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// Every spec: the registry's, then each live spoke's (prefixed).
    pub fn specs(&self) -> Vec<OperationSpec> {
        let mut specs = self.registry.specs();
        specs.extend(spoke_specs(&read(&self.state)));
        specs
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
        let state = read(&self.state);
        match state.spokes.get(spoke) {
            None => Ok(None),
            Some(Spoke::Gone { .. }) => Err(Failure::unavailable(format!(
                "spoke {spoke:?} is not connected"
            ))),
            Some(Spoke::Live {
                caller, operations, ..
            }) => {
                let inner = format!("/{rest}");
                let Some(operation) = operations.get(&inner) else {
                    return Err(Failure::not_found(format!("no operation named {name}")));
                };
                operation.admit(context, input)?;
                Ok(Some(SpokeRoute {
                    caller: caller.clone(),
                    name: inner,
                    op_type: operation.spec.op_type,
                    timeout: state.spoke_timeout,
                }))
            }
        }
    }

    async fn dispatch(self, call: IncomingCall, emitter: Emitter) -> Result<Reply, Failure> {
        if let Some(route) = self.spoke_route(&call.name, &call.context, &call.input)? {
            return route.forward(call.input, emitter).await;
        }
        self.registry.dispatch(call, emitter).await
    }
}

impl Service for Hub {
    fn serve(
        &self,
        call: IncomingCall,
        emitter: Emitter,
    ) -> BoxFuture<'static, Result<Reply, Failure>> {
        Box::pin(self.clone().dispatch(call, emitter))
    }
}

fn read(state: &RwLock<HubState>) -> RwLockReadGuard<'_, HubState> {
    state
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn write(state: &RwLock<HubState>) -> RwLockWriteGuard<'_, HubState> {
    state
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn spoke_specs(state: &HubState) -> Vec<OperationSpec> {
    let mut specs = Vec::new();
    for (spoke, entry) in &state.spokes {
        if let Spoke::Live { operations, .. } = entry {
            specs.extend(operations.values().map(|op| {
                let mut spec = op.spec.clone();
                spec.name = format!("/{spoke}{}", spec.name);
                spec
            }));
        }
    }
    specs
}

/// `/hub/services/register`.
fn register(
    state: &Weak<RwLock<HubState>>,
    context: &CallContext,
    input: Value,
) -> Result<Value, Failure> {
    #[derive(Deserialize)]
    struct Registration {
        spoke: String,
        operations: Vec<OperationSpec>,
    }
    let Some(state) = state.upgrade() else {
        return Err(Failure::unavailable("the hub is shutting down"));
    };
    let registration: Registration = serde_json::from_value(input)
        .map_err(|error| Failure::invalid_input(format!("registration: {error}")))?;
    let spoke = registration.spoke;
    if !read(&state).registration.permits(context, &spoke) {
        return Err(Failure::forbidden(format!(
            "not allowed to register spoke {spoke:?} (needs the grant spoke:{spoke}:register)"
        )));
    }
    let prefix = format!("/{spoke}/");
    if RESERVED_PREFIXES.contains(&prefix.as_str()) {
        return Err(Failure::invalid_input(format!(
            "spoke name {spoke:?} is used by this hub's own operations"
        )));
    }
    let mut operations = BTreeMap::new();
    for spec in registration.operations {
        let operation =
            Operation::compile(spec).map_err(|error| Failure::invalid_input(error.to_string()))?;
        operations.insert(operation.spec.name.clone(), operation);
    }
    let count = operations.len();
    let caller = context.peer().clone();
    let identity = context.identity().map(|who| who.id.clone());
    {
        let mut state = write(&state);
        let grace = state.reclaim_grace;
        match state.spokes.get(&spoke) {
            Some(Spoke::Live { caller: holder, .. })
                if !holder.is_closed() && !holder.same_connection(&caller) =>
            {
                return Err(Failure::forbidden(format!(
                    "spoke {spoke:?} is registered by another connection"
                )));
            }
            Some(Spoke::Gone {
                identity: holder,
                since,
            }) if since.elapsed() < grace && *holder != identity => {
                return Err(Failure::forbidden(format!(
                    "spoke {spoke:?} is kept for its last holder for {} s after it disconnected",
                    grace.as_secs()
                )));
            }
            _ => {}
        }
        state.spokes.insert(
            spoke.clone(),
            Spoke::Live {
                caller: caller.clone(),
                identity: identity.clone(),
                operations,
            },
        );
    }
    tokio::spawn(forget_when_closed(
        Arc::downgrade(&state),
        spoke.clone(),
        caller,
    ));
    Ok(json!({"spoke": spoke, "registered": count}))
}

async fn forget_when_closed(state: Weak<RwLock<HubState>>, spoke: String, caller: Caller) {
    caller.closed().await;
    let Some(state) = state.upgrade() else {
        return;
    };
    let mut state = write(&state);
    let identity = match state.spokes.get(&spoke) {
        Some(Spoke::Live {
            caller: holder,
            identity,
            ..
        }) if holder.same_connection(&caller) => identity.clone(),
        _ => return,
    };
    state.spokes.insert(
        spoke,
        Spoke::Gone {
            identity,
            since: Instant::now(),
        },
    );
}

/// A call on its way to a spoke.
struct SpokeRoute {
    caller: Caller,
    name: String,
    op_type: OperationType,
    timeout: Duration,
}

impl SpokeRoute {
    /// Relays the call and its answer. If our caller aborts, this future is
    /// dropped, which aborts the call to the spoke in turn.
    async fn forward(self, input: Value, emitter: Emitter) -> Result<Reply, Failure> {
        if self.op_type != OperationType::Subscription {
            return match self
                .caller
                .call_with_timeout(&self.name, input, Some(self.timeout))
                .await
            {
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
