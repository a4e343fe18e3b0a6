//! The call protocol over a real SSH session: the server's registry on the
//! `alknet-control:0` channel, a client that is also a spoke.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use alknet::auth::{AuthorizedKeys, ForwardRule, ForwardingPolicy, TargetMatch, Verdict};
use alknet::call::{
    AccessControl, CallError, Caller, ErrorCode, Failure, Handler, OperationRegistry,
    OperationSpec, OperationType,
};
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::time::timeout;

mod common;

use common::{LIMIT, TestServer};

fn remote_code<T: std::fmt::Debug>(result: Result<T, CallError>) -> ErrorCode {
    match result {
        Err(CallError::Remote(failure)) => failure.code,
        other => panic!("expected a call.error, got {other:?}"),
    }
}

/// Operations the server (the hub) offers.
fn hub_operations(registry: &OperationRegistry, ticks: Arc<AtomicU64>, stopped: Arc<AtomicBool>) {
    registry
        .register(
            OperationSpec::new("/node/whoami", OperationType::Query),
            Handler::call(|context, _| async move {
                Ok(json!(context.identity().map(|who| who.id.clone())))
            }),
        )
        .unwrap();
    registry
        .register(
            OperationSpec::new("/node/ticks", OperationType::Subscription).input_schema(json!({
                "type": "object",
                "properties": {"count": {"type": "integer", "minimum": 1}},
                "required": ["count"]
            })),
            Handler::subscription(move |_, input, emitter| {
                let (ticks, stopped) = (ticks.clone(), stopped.clone());
                async move {
                    let _stopped = SetOnDrop(stopped);
                    let count = input["count"].as_u64().unwrap_or(1);
                    for n in 0..count {
                        emitter
                            .emit(json!(n))
                            .await
                            .map_err(|error| Failure::internal(error.to_string()))?;
                        ticks.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(())
                }
            }),
        )
        .unwrap();
    registry
        .register(
            OperationSpec::new("/node/admin", OperationType::Mutation).access_control(
                AccessControl {
                    required_scopes: vec!["admin".into()],
                    ..AccessControl::default()
                },
            ),
            Handler::call(|_, _| async { Ok(json!("done")) }),
        )
        .unwrap();
    registry
        .register(
            OperationSpec::new("/node/stall", OperationType::Query),
            Handler::call(|_, _| std::future::pending()),
        )
        .unwrap();
}

struct SetOnDrop(Arc<AtomicBool>);

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn hub_and_spoke_call_each_other_over_one_ssh_channel() {
    let server = TestServer::start().await;
    hub_operations(&server.registry, Arc::default(), Arc::default());

    // The client is a spoke: it serves /math/add on its control channel.
    let spoke = OperationRegistry::new();
    spoke
        .register(
            OperationSpec::new("/math/add", OperationType::Query)
                .input_schema(json!({"type": "array", "items": {"type": "number"}})),
            Handler::call(|_, input| async move {
                let sum: f64 = input
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_f64)
                    .sum();
                Ok(json!(sum))
            }),
        )
        .unwrap();
    let specs: Vec<Value> = spoke
        .specs()
        .into_iter()
        .filter(|spec| spec.name == "/math/add")
        .map(|spec| serde_json::to_value(spec).unwrap())
        .collect();
    let registration = json!({"spoke": "laptop", "operations": specs});

    // Registering a spoke needs the grant spoke:laptop:register.
    let ungranted = server.client().await.open_control().await.unwrap();
    assert_eq!(
        remote_code(
            ungranted
                .call("/hub/services/register", registration.clone())
                .await
        ),
        ErrorCode::Forbidden
    );
    let line = server.user_key.public_key().to_openssh().unwrap();
    server.reload.reload(alknet::auth::AuthConfig::new(
        alknet::auth::AuthorizedKeys::parse(&format!(
            "{line} tester resources=spoke:laptop:register"
        ))
        .unwrap(),
    ));
    let client = server.client().await;
    let to_hub = client
        .open_control_serving(Arc::new(spoke.clone()))
        .await
        .unwrap();

    // Spoke → hub, with the session's identity (the key's fingerprint).
    let fingerprint = alknet::auth::fingerprint(server.user_key.public_key());
    assert_eq!(
        to_hub.call("/node/whoami", Value::Null).await.unwrap(),
        json!(fingerprint)
    );

    to_hub
        .call("/hub/services/register", registration)
        .await
        .unwrap();

    // Hub → spoke: another session calls /laptop/math/add; the hub routes
    // it down the spoke's channel.
    let other = server.client().await.open_control().await.unwrap();
    assert_eq!(
        other
            .call("/laptop/math/add", json!([1, 2, 3.5]))
            .await
            .unwrap(),
        json!(6.5)
    );
    assert_eq!(
        remote_code(other.call("/laptop/math/add", json!("three")).await),
        ErrorCode::InvalidInput
    );

    // Dropping the spoke's session makes its operations unavailable.
    client.disconnect().await;
    timeout(LIMIT, async {
        while !server.server.hub().spokes().is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("hub kept a disconnected spoke");
    assert_eq!(
        remote_code(other.call("/laptop/math/add", json!([1])).await),
        ErrorCode::Unavailable
    );
    server.shutdown().await;
}

#[tokio::test]
async fn subscriptions_stream_in_order_and_stop_when_aborted() {
    let ticks = Arc::new(AtomicU64::new(0));
    let stopped = Arc::new(AtomicBool::new(false));
    let server = TestServer::start().await;
    hub_operations(&server.registry, ticks.clone(), stopped.clone());
    let control = server.client().await.open_control().await.unwrap();

    let items: Vec<Value> = timeout(
        LIMIT,
        control
            .subscribe("/node/ticks", json!({"count": 1000}))
            .await
            .unwrap()
            .map(Result::unwrap)
            .collect(),
    )
    .await
    .unwrap();
    assert_eq!(items, (0..1000).map(|n| json!(n)).collect::<Vec<_>>());

    stopped.store(false, Ordering::SeqCst);
    let mut endless = control
        .subscribe("/node/ticks", json!({"count": u64::MAX}))
        .await
        .unwrap();
    for expected in 0..5 {
        assert_eq!(endless.next().await.unwrap().unwrap(), json!(expected));
    }
    endless.abort();
    timeout(LIMIT, async {
        while !stopped.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the server's handler kept running after the abort");
    let at_stop = ticks.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(ticks.load(Ordering::SeqCst), at_stop);
    server.shutdown().await;
}

#[tokio::test]
async fn access_schema_and_time_limits_are_enforced() {
    let server = TestServer::start().await;
    hub_operations(&server.registry, Arc::default(), Arc::default());
    let control = server.client().await.open_control().await.unwrap();

    // The test key's authorized_keys entry grants no scopes.
    assert_eq!(
        remote_code(control.call("/node/admin", Value::Null).await),
        ErrorCode::Forbidden
    );
    let mut bad = control
        .subscribe("/node/ticks", json!({"count": 0}))
        .await
        .unwrap();
    assert!(
        matches!(bad.next().await, Some(Err(CallError::Remote(f))) if f.code == ErrorCode::InvalidInput)
    );
    assert_eq!(
        remote_code(control.call("/node/missing", Value::Null).await),
        ErrorCode::NotFound
    );
    assert_eq!(
        control
            .call_with_timeout("/node/stall", Value::Null, Some(Duration::from_millis(300)))
            .await,
        Err(CallError::Timeout)
    );
    server.shutdown().await;
}

#[tokio::test]
async fn scopes_from_authorized_keys_open_guarded_operations() {
    let server = TestServer::start().await;
    hub_operations(&server.registry, Arc::default(), Arc::default());
    let line = format!(
        "{} admin-key scopes=admin",
        server.user_key.public_key().to_openssh().unwrap()
    );
    let mut config = (*server.reload.current()).clone();
    config.authorized_keys = AuthorizedKeys::parse(&line).unwrap();
    server.reload.reload(config);
    let control = server.client().await.open_control().await.unwrap();
    assert_eq!(
        control.call("/node/admin", Value::Null).await.unwrap(),
        json!("done")
    );
    server.shutdown().await;
}

#[tokio::test]
async fn dropping_the_session_fails_pending_calls_promptly() {
    let server = TestServer::start().await;
    hub_operations(&server.registry, Arc::default(), Arc::default());
    let client = server.client().await;
    let control: Caller = client.open_control().await.unwrap();
    let pending = tokio::spawn({
        let control = control.clone();
        async move {
            control
                .call_with_timeout("/node/stall", Value::Null, None)
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    server.shutdown().await;
    let result = timeout(LIMIT, pending)
        .await
        .expect("pending call hung")
        .unwrap();
    assert_eq!(result, Err(CallError::Closed));
}

#[tokio::test]
async fn the_forwarding_policy_can_deny_the_control_channel() {
    let server = TestServer::start_with(|options| {
        let policy = ForwardingPolicy {
            rules: vec![ForwardRule::new(Verdict::Deny, TargetMatch::Reserved)],
            default: Verdict::Allow,
        };
        let auth = options.auth_config().clone().forwarding(policy);
        options.auth(auth)
    })
    .await;
    let client = server.client().await;
    let refused = client
        .open_control()
        .await
        .expect_err("control channel opened");
    assert_eq!(refused.kind(), alknet::proxy::OpenErrorKind::NotAllowed);
    server.shutdown().await;
}
