//! The call protocol between two peers over an in-memory byte stream.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use alknet_call::{
    AccessControl, CALL_ABORTED, CALL_REQUESTED, CALL_RESPONDED, CallConnection, CallError, Caller,
    EnvelopeCodec, ErrorCode, EventEnvelope, Handler, Hub, OperationRegistry, OperationSpec,
    OperationType, Service, SpokeRegistration,
};
use alknet_identity::Identity;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::time::timeout;
use tokio_util::codec::Framed;

const BOUND: Duration = Duration::from_secs(10);

/// Two connected peers, each serving its own registry (or hub).
fn pair(a: &(impl Service + Clone), b: &(impl Service + Clone)) -> (Caller, Caller) {
    let (left, right) = tokio::io::duplex(64 * 1024);
    let a_calls_b = CallConnection::new(left).serve(a.clone()).spawn();
    let b_calls_a = CallConnection::new(right).serve(b.clone()).spawn();
    (a_calls_b, b_calls_a)
}

/// Like [`pair`], with `b` knowing `a` as `identity`.
fn pair_as(
    identity: Identity,
    a: &(impl Service + Clone),
    b: &(impl Service + Clone),
) -> (Caller, Caller) {
    let (left, right) = tokio::io::duplex(64 * 1024);
    let a_calls_b = CallConnection::new(left).serve(a.clone()).spawn();
    let b_calls_a = CallConnection::new(right)
        .serve(b.clone())
        .peer_identity(identity)
        .spawn();
    (a_calls_b, b_calls_a)
}

fn holder_of(id: &str, grants: &[&str]) -> Identity {
    Identity {
        id: id.into(),
        resources: grants.iter().map(|grant| (*grant).to_owned()).collect(),
        ..Identity::default()
    }
}

fn remote_code(result: Result<Value, CallError>) -> ErrorCode {
    match result {
        Err(CallError::Remote(failure)) => failure.code,
        other => panic!("expected a call.error, got {other:?}"),
    }
}

fn echo_registry(name: &str) -> OperationRegistry {
    let registry = OperationRegistry::new();
    let tag = name.to_owned();
    registry
        .register(
            OperationSpec::new(format!("/{name}/echo"), OperationType::Query),
            Handler::call(move |_, input| {
                let tag = tag.clone();
                async move { Ok(json!({"from": tag, "input": input})) }
            }),
        )
        .unwrap();
    registry
}

/// A subscription emitting 0..count, counting what it emitted and noting
/// when its future is dropped before finishing.
fn counting_registry(emitted: Arc<AtomicUsize>, stopped: Arc<AtomicBool>) -> OperationRegistry {
    let registry = OperationRegistry::new();
    registry
        .register(
            OperationSpec::new("/numbers/count", OperationType::Subscription).input_schema(json!({
                "type": "object",
                "properties": {"to": {"type": "integer", "minimum": 0}},
                "required": ["to"]
            })),
            Handler::subscription(move |_, input, emitter| {
                let (emitted, stopped) = (emitted.clone(), stopped.clone());
                async move {
                    struct Stopped(Arc<AtomicBool>, bool);
                    impl Drop for Stopped {
                        fn drop(&mut self) {
                            if !self.1 {
                                self.0.store(true, Ordering::SeqCst);
                            }
                        }
                    }
                    let mut guard = Stopped(stopped, false);
                    let to = input["to"].as_u64().unwrap_or(0);
                    for n in 0..to {
                        emitter
                            .emit(json!(n))
                            .await
                            .map_err(|e| alknet_call::Failure::internal(e.to_string()))?;
                        emitted.fetch_add(1, Ordering::SeqCst);
                        if n % 16 == 0 {
                            tokio::task::yield_now().await;
                        }
                    }
                    guard.1 = true;
                    Ok(())
                }
            }),
        )
        .unwrap();
    registry
}

/// A registry whose `/slow/never` never answers.
fn never_answering() -> OperationRegistry {
    let registry = OperationRegistry::new();
    registry
        .register(
            OperationSpec::new("/slow/never", OperationType::Query),
            Handler::call(|_, _| std::future::pending()),
        )
        .unwrap();
    registry
}

/// Resolves once `flag` is set.
async fn raised(flag: &AtomicBool) {
    while !flag.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn both_peers_call_and_serve_on_one_connection() {
    let (a_calls_b, b_calls_a) = pair(&echo_registry("a"), &echo_registry("b"));
    let (to_b, to_a) = tokio::join!(
        a_calls_b.call("/b/echo", json!(1)),
        b_calls_a.call("/a/echo", json!(2)),
    );
    assert_eq!(to_b.unwrap(), json!({"from": "b", "input": 1}));
    assert_eq!(to_a.unwrap(), json!({"from": "a", "input": 2}));
    // Many at once, answered to the right callers.
    let calls = (0..64).map(|n| a_calls_b.call("/b/echo", json!(n)));
    let answers = futures_util::future::join_all(calls).await;
    for (n, answer) in answers.into_iter().enumerate() {
        assert_eq!(answer.unwrap()["input"], json!(n));
    }
    assert_eq!(a_calls_b.pending_calls(), 0);
}

#[tokio::test]
async fn a_thousand_item_subscription_arrives_complete_and_in_order() {
    let server = counting_registry(Arc::default(), Arc::default());
    let (caller, _) = pair(&OperationRegistry::new(), &server);
    let items = caller
        .subscribe("/numbers/count", json!({"to": 1000}))
        .await
        .unwrap();
    let items: Vec<Value> = timeout(BOUND, items.map(Result::unwrap).collect())
        .await
        .unwrap();
    assert_eq!(items, (0..1000).map(|n| json!(n)).collect::<Vec<_>>());
    assert_eq!(caller.pending_calls(), 0);
}

#[tokio::test]
async fn aborting_a_subscription_stops_its_handler() {
    let emitted = Arc::new(AtomicUsize::new(0));
    let stopped = Arc::new(AtomicBool::new(false));
    let server = counting_registry(emitted.clone(), stopped.clone());
    let (caller, _) = pair(&OperationRegistry::new(), &server);
    let mut items = caller
        .subscribe("/numbers/count", json!({"to": u32::MAX}))
        .await
        .unwrap();
    for expected in 0..10 {
        assert_eq!(items.next().await.unwrap().unwrap(), json!(expected));
    }
    items.abort();
    timeout(BOUND, raised(&stopped))
        .await
        .expect("the handler was not stopped");
    let at_stop = emitted.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(emitted.load(Ordering::SeqCst), at_stop);
    assert!(at_stop < u32::MAX as usize);
}

#[tokio::test]
async fn a_call_that_times_out_fails_and_stops_the_handler() {
    let stopped = Arc::new(AtomicBool::new(false));
    let server = OperationRegistry::new();
    let flag = stopped.clone();
    server
        .register(
            OperationSpec::new("/slow/never", OperationType::Query),
            Handler::call(move |context, _| {
                let flag = flag.clone();
                async move {
                    context.cancelled().await;
                    flag.store(true, Ordering::SeqCst);
                    Ok(Value::Null)
                }
            }),
        )
        .unwrap();
    let (caller, _) = pair(&OperationRegistry::new(), &server);
    let started = tokio::time::Instant::now();
    let result = caller
        .call_with_timeout("/slow/never", Value::Null, Some(Duration::from_millis(200)))
        .await;
    assert_eq!(result, Err(CallError::Timeout));
    assert!(started.elapsed() < BOUND);
    assert_eq!(caller.pending_calls(), 0);
    // The handler's future is dropped on abort, so it never sets the flag.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!stopped.load(Ordering::SeqCst));
}

#[tokio::test]
async fn access_control_checks_the_callers_identity() {
    let server = OperationRegistry::new();
    server
        .register(
            OperationSpec::new("/deploy/run", OperationType::Mutation).access_control(
                AccessControl {
                    required_scopes: vec!["deploy".into()],
                    ..AccessControl::default()
                },
            ),
            Handler::call(|context, _| async move {
                Ok(json!(context.identity().map(|who| who.id.clone())))
            }),
        )
        .unwrap();
    let connect = |identity: Identity| {
        let (left, right) = tokio::io::duplex(4096);
        CallConnection::new(right)
            .serve(server.clone())
            .peer_identity(identity)
            .spawn();
        CallConnection::new(left).spawn()
    };
    let deployer = connect(Identity {
        id: "alice".into(),
        scopes: vec!["deploy".into()],
        resources: vec![],
    });
    let visitor = connect(Identity {
        id: "bob".into(),
        ..Identity::default()
    });
    assert_eq!(
        deployer.call("/deploy/run", Value::Null).await.unwrap(),
        json!("alice")
    );
    assert_eq!(
        remote_code(visitor.call("/deploy/run", Value::Null).await),
        ErrorCode::Forbidden
    );
    // Discovery shows each caller only what it may call.
    let listed = |list: Value| -> Vec<String> {
        list.as_array()
            .unwrap()
            .iter()
            .map(|op| op["name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert!(
        listed(deployer.call("/services/list", Value::Null).await.unwrap())
            .contains(&"/deploy/run".to_owned())
    );
    assert!(
        !listed(visitor.call("/services/list", Value::Null).await.unwrap())
            .contains(&"/deploy/run".to_owned())
    );
}

#[tokio::test]
async fn bad_input_unknown_names_and_schema_lookups() {
    let server = counting_registry(Arc::default(), Arc::default());
    let (caller, _) = pair(&OperationRegistry::new(), &server);
    let mut items = caller
        .subscribe("/numbers/count", json!({"to": -1}))
        .await
        .unwrap();
    match items.next().await {
        Some(Err(CallError::Remote(failure))) => {
            assert_eq!(failure.code, ErrorCode::InvalidInput);
            assert!(failure.message.contains("/to"), "{}", failure.message);
        }
        other => panic!("expected invalid_input, got {other:?}"),
    }
    assert_eq!(
        remote_code(caller.call("/no/such", Value::Null).await),
        ErrorCode::NotFound
    );
    let schema = caller
        .call("/services/schema", json!({"name": "/numbers/count"}))
        .await
        .unwrap();
    assert_eq!(schema["op_type"], "subscription");
    assert_eq!(schema["input_schema"]["required"], json!(["to"]));
    assert_eq!(
        remote_code(
            caller
                .call("/services/schema", json!({"name": "/x/y"}))
                .await
        ),
        ErrorCode::NotFound
    );
    assert_eq!(
        remote_code(
            caller
                .call("/services/schema", json!("not an object"))
                .await
        ),
        ErrorCode::InvalidInput
    );
}

/// A raw peer: frames in and out by hand, as another implementation would.
async fn raw_peer(server: &OperationRegistry) -> Framed<tokio::io::DuplexStream, EnvelopeCodec> {
    let (left, right) = tokio::io::duplex(64 * 1024);
    CallConnection::new(right).serve(server.clone()).spawn();
    Framed::new(left, EnvelopeCodec::default())
}

#[tokio::test]
async fn an_abort_for_an_unknown_id_is_ignored() {
    let mut peer = raw_peer(&echo_registry("s")).await;
    peer.send(EventEnvelope::new(CALL_ABORTED, "never-sent", Value::Null))
        .await
        .unwrap();
    peer.send(EventEnvelope::new(
        CALL_REQUESTED,
        "7",
        json!({"name": "/s/echo", "input": 3}),
    ))
    .await
    .unwrap();
    let answer = timeout(BOUND, peer.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(
        answer,
        EventEnvelope::new(CALL_RESPONDED, "7", json!({"from": "s", "input": 3}))
    );
}

#[tokio::test]
async fn a_malformed_request_gets_an_error_and_the_connection_survives() {
    let mut peer = raw_peer(&echo_registry("s")).await;
    peer.send(EventEnvelope::new(CALL_REQUESTED, "1", json!({"input": 3})))
        .await
        .unwrap();
    let answer = timeout(BOUND, peer.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(answer.kind, "call.error");
    assert_eq!(answer.payload["code"], "invalid_input");
    peer.send(EventEnvelope::new(
        CALL_REQUESTED,
        "2",
        json!({"name": "/s/echo"}),
    ))
    .await
    .unwrap();
    let answer = timeout(BOUND, peer.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(answer.payload, json!({"from": "s", "input": null}));
}

#[tokio::test]
async fn pending_calls_fail_promptly_when_the_connection_drops() {
    let server = never_answering();
    let (caller, server_side) = pair(&OperationRegistry::new(), &server);
    let pending = tokio::spawn({
        let caller = caller.clone();
        async move {
            caller
                .call_with_timeout("/slow/never", Value::Null, None)
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    server_side.close();
    let result = timeout(BOUND, pending)
        .await
        .expect("pending call hung")
        .unwrap();
    assert_eq!(result, Err(CallError::Closed));
    timeout(BOUND, caller.closed()).await.unwrap();
    assert_eq!(
        caller.call("/slow/never", Value::Null).await,
        Err(CallError::Closed)
    );
}

#[tokio::test]
async fn garbage_on_the_stream_closes_the_connection_and_fails_callers() {
    use tokio::io::AsyncWriteExt;
    let (left, mut right) = tokio::io::duplex(4096);
    let caller = CallConnection::new(left).spawn();
    let pending = tokio::spawn({
        let caller = caller.clone();
        async move { caller.call_with_timeout("/x/y", Value::Null, None).await }
    });
    right
        .write_all(&[0, 0, 0, 5, b'h', b'e', b'l', b'l', b'o'])
        .await
        .unwrap();
    let result = timeout(BOUND, pending).await.expect("call hung").unwrap();
    assert_eq!(result, Err(CallError::Closed));
}

#[tokio::test]
async fn a_hub_routes_to_its_spokes_and_forgets_them() {
    let hub = Hub::new(OperationRegistry::new());
    hub.set_registration(SpokeRegistration::Open);
    // The spoke serves /tools/echo and /numbers/count on its hub connection.
    let spoke_ops = counting_registry(Arc::default(), Arc::default());
    spoke_ops
        .register(
            OperationSpec::new("/tools/echo", OperationType::Query),
            Handler::call(|_, input| async move { Ok(input) }),
        )
        .unwrap();
    let (spoke_calls_hub, hub_calls_spoke) = pair(&spoke_ops, &hub);
    let operations: Vec<Value> = spoke_ops
        .specs()
        .into_iter()
        .filter(|spec| !spec.name.starts_with("/services/") && !spec.name.starts_with("/hub/"))
        .map(|spec| serde_json::to_value(spec).unwrap())
        .collect();
    let registered = spoke_calls_hub
        .call(
            "/hub/services/register",
            json!({"spoke": "edge1", "operations": operations}),
        )
        .await
        .unwrap();
    assert_eq!(registered, json!({"spoke": "edge1", "registered": 2}));

    // The hub calls the spoke on the connection the spoke called it on.
    assert_eq!(
        hub_calls_spoke
            .call("/tools/echo", json!("direct"))
            .await
            .unwrap(),
        json!("direct")
    );

    // A third party reaches the spoke through the hub, prefix stripped.
    let (client, _) = pair(&OperationRegistry::new(), &hub);
    assert_eq!(
        client
            .call("/edge1/tools/echo", json!({"k": 1}))
            .await
            .unwrap(),
        json!({"k": 1})
    );
    let items: Vec<Value> = client
        .subscribe("/edge1/numbers/count", json!({"to": 100}))
        .await
        .unwrap()
        .map(Result::unwrap)
        .collect()
        .await;
    assert_eq!(items.len(), 100);
    assert_eq!(items[99], json!(99));
    // The hub checks the spoke's schemas before forwarding.
    let mut rejected = client
        .subscribe("/edge1/numbers/count", json!({"to": "many"}))
        .await
        .unwrap();
    assert!(
        matches!(rejected.next().await, Some(Err(CallError::Remote(f))) if f.code == ErrorCode::InvalidInput)
    );
    let listed = client.call("/services/list", Value::Null).await.unwrap();
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|op| op["name"] == "/edge1/tools/echo")
    );
    assert_eq!(hub.spokes(), ["edge1"]);

    // Another connection may not take the name while the spoke is live.
    assert_eq!(
        remote_code(
            client
                .call(
                    "/hub/services/register",
                    json!({"spoke": "edge1", "operations": []})
                )
                .await
        ),
        ErrorCode::Forbidden
    );

    spoke_calls_hub.close();
    timeout(BOUND, async {
        while !hub.spokes().is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the hub never forgot the spoke");
    match client.call("/edge1/tools/echo", json!(1)).await {
        Err(CallError::Remote(failure)) => {
            assert_eq!(failure.code, ErrorCode::Unavailable);
            assert!(failure.retryable);
        }
        other => panic!("expected unavailable, got {other:?}"),
    }
    let listed = client.call("/services/list", Value::Null).await.unwrap();
    assert!(
        !listed
            .as_array()
            .unwrap()
            .iter()
            .any(|op| op["name"] == "/edge1/tools/echo")
    );
}

/// A service whose handler gives up on every call.
struct GivesUp;

impl alknet_call::Service for GivesUp {
    fn serve(
        &self,
        _call: alknet_call::IncomingCall,
        _emitter: alknet_call::Emitter,
    ) -> futures_util::future::BoxFuture<'static, Result<alknet_call::Reply, alknet_call::Failure>>
    {
        Box::pin(async { Ok(alknet_call::Reply::Aborted(Some("shutting down".into()))) })
    }
}

#[tokio::test]
async fn a_handler_may_abort_and_the_caller_learns_why() {
    let (left, right) = tokio::io::duplex(4096);
    CallConnection::new(right).serve(GivesUp).spawn();
    let caller = CallConnection::new(left).spawn();
    assert_eq!(
        caller.call("/any/thing", Value::Null).await,
        Err(CallError::Aborted(Some("shutting down".into())))
    );
    let mut items = caller.subscribe("/any/stream", Value::Null).await.unwrap();
    assert!(matches!(
        items.next().await,
        Some(Err(CallError::Aborted(_)))
    ));
    assert!(items.next().await.is_none());
}

#[tokio::test]
async fn a_hub_can_require_a_scope_to_register_spokes() {
    let hub = Hub::new(OperationRegistry::new());
    hub.set_registration(SpokeRegistration::Access(AccessControl {
        required_scopes: vec!["spoke".into()],
        ..AccessControl::default()
    }));
    let (anyone, _) = pair(&OperationRegistry::new(), &hub);
    assert_eq!(
        remote_code(
            anyone
                .call(
                    "/hub/services/register",
                    json!({"spoke": "x", "operations": []})
                )
                .await
        ),
        ErrorCode::Forbidden
    );
    assert!(hub.spokes().is_empty());
}

fn register(spoke: &str) -> Value {
    json!({"spoke": spoke, "operations": []})
}

#[tokio::test]
async fn by_default_a_spoke_name_needs_a_grant_and_stays_with_its_holder_for_a_while() {
    let hub = Hub::new(OperationRegistry::new());
    let nobody = OperationRegistry::new();
    // Without a grant (or without any identity), nothing can be registered.
    let (anonymous, _) = pair(&nobody, &hub);
    assert_eq!(
        remote_code(
            anonymous
                .call("/hub/services/register", register("metrics"))
                .await
        ),
        ErrorCode::Forbidden
    );
    let (other_name, _) = pair_as(holder_of("eve", &["spoke:billing:register"]), &nobody, &hub);
    assert_eq!(
        remote_code(
            other_name
                .call("/hub/services/register", register("metrics"))
                .await
        ),
        ErrorCode::Forbidden
    );
    // The grant for the name (or for any name) lets it in.
    let (alice, _) = pair_as(
        holder_of("alice", &["spoke:metrics:register"]),
        &nobody,
        &hub,
    );
    alice
        .call("/hub/services/register", register("metrics"))
        .await
        .unwrap();
    assert_eq!(hub.spokes(), ["metrics"]);

    // Freed by a disconnect, the name is kept for alice, not for mallory.
    alice.close();
    timeout(BOUND, async {
        while !hub.spokes().is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the hub never noticed the disconnect");
    let (mallory, _) = pair_as(holder_of("mallory", &["spoke:*:register"]), &nobody, &hub);
    assert_eq!(
        remote_code(
            mallory
                .call("/hub/services/register", register("metrics"))
                .await
        ),
        ErrorCode::Forbidden
    );
    let (alice_again, _) = pair_as(
        holder_of("alice", &["spoke:metrics:register"]),
        &nobody,
        &hub,
    );
    alice_again
        .call("/hub/services/register", register("metrics"))
        .await
        .unwrap();
    // After the grace period anyone with a grant may take a freed name.
    hub.set_reclaim_grace(Duration::ZERO);
    alice_again.close();
    timeout(BOUND, async {
        while !hub.spokes().is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap();
    mallory
        .call("/hub/services/register", register("metrics"))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_panicking_handler_answers_internal_instead_of_hanging() {
    let server = OperationRegistry::new();
    server
        .register(
            OperationSpec::new("/bug/panic", OperationType::Query),
            Handler::call(|_, input| async move {
                if input.is_null() {
                    panic!("a bug in a handler");
                }
                Ok(input)
            }),
        )
        .unwrap();
    let (caller, _) = pair(&OperationRegistry::new(), &server);
    let result = timeout(
        BOUND,
        caller.call_with_timeout("/bug/panic", Value::Null, None),
    )
    .await
    .expect("the caller was left waiting");
    assert_eq!(remote_code(result), ErrorCode::Internal);
    // The connection is still good.
    assert_eq!(caller.call("/bug/panic", json!(1)).await.unwrap(), json!(1));
}

#[tokio::test]
async fn calls_beyond_the_concurrency_limit_are_refused_not_queued() {
    let server = never_answering();
    let (left, right) = tokio::io::duplex(64 * 1024);
    let mut options = alknet_call::ConnectionOptions::default();
    options.max_concurrent_calls = 4;
    CallConnection::new(right)
        .serve(server)
        .options(options)
        .spawn();
    let caller = CallConnection::new(left).spawn();
    let stuck: Vec<_> = (0..4)
        .map(|_| {
            let caller = caller.clone();
            tokio::spawn(async move {
                caller
                    .call_with_timeout("/slow/never", Value::Null, None)
                    .await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    match caller.call("/slow/never", Value::Null).await {
        Err(CallError::Remote(failure)) => {
            assert_eq!(failure.code, ErrorCode::Unavailable);
            assert!(failure.retryable);
        }
        other => panic!("expected unavailable, got {other:?}"),
    }
    // Aborting the stuck calls frees their places.
    for call in stuck {
        call.abort();
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        caller
            .call_with_timeout("/slow/never", Value::Null, Some(Duration::from_millis(200)))
            .await,
        Err(CallError::Timeout)
    );
}

#[tokio::test]
async fn a_slow_subscriber_slows_its_producer_and_loses_nothing() {
    let emitted = Arc::new(AtomicUsize::new(0));
    let stopped = Arc::new(AtomicBool::new(false));
    let server = counting_registry(emitted.clone(), stopped.clone());
    let (left, right) = tokio::io::duplex(64 * 1024);
    CallConnection::new(right).serve(server).spawn();
    let mut options = alknet_call::ConnectionOptions::default();
    // 5 000 bytes of credit: about 90 items of ~57 bytes.
    options.subscription_buffer = 10_000;
    let caller = CallConnection::new(left).options(options).spawn();
    let total = 3_000u64;
    let mut items = caller
        .subscribe("/numbers/count", json!({ "to": total }))
        .await
        .unwrap();
    // Not reading: the producer stops at the credit, not at the end.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ahead = emitted.load(Ordering::SeqCst);
    assert!((80..=100).contains(&ahead), "{ahead} items sent unread");
    // Reading slowly, every item arrives, in order, without Overflow.
    let mut read = 0u64;
    while let Some(item) = timeout(BOUND, items.next()).await.expect("stalled") {
        assert_eq!(item.unwrap(), json!(read));
        read += 1;
        if read.is_multiple_of(500) {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let ahead = emitted.load(Ordering::SeqCst) as u64 - read;
            assert!(ahead <= 100, "{ahead} items ahead of the reader");
        }
    }
    assert_eq!(read, total);
    assert!(!stopped.load(Ordering::SeqCst), "the producer was cut off");
}

#[tokio::test]
async fn a_producer_without_credit_still_meets_the_overflow_guard() {
    // A peer from before credit: it ignores the grant and sends on.
    let (left, right) = tokio::io::duplex(64 * 1024);
    let mut options = alknet_call::ConnectionOptions::default();
    options.subscription_buffer = 10_000;
    let caller = CallConnection::new(left).options(options).spawn();
    let mut peer = Framed::new(right, EnvelopeCodec::default());
    let mut items = caller
        .subscribe("/numbers/count", json!({"to": 1_000_000}))
        .await
        .unwrap();
    let request = timeout(BOUND, peer.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(request.kind, CALL_REQUESTED);
    assert_eq!(request.payload["credit"], json!(5_000));
    let id = request.id.clone();
    let blast = tokio::spawn(async move {
        for n in 0..1_000u32 {
            let item = EventEnvelope::new(CALL_RESPONDED, id.clone(), json!(n));
            if peer.send(item).await.is_err() {
                break;
            }
        }
        // Then wait to be told to stop.
        loop {
            match timeout(BOUND, peer.next()).await {
                Ok(Some(Ok(envelope))) if envelope.kind == CALL_ABORTED => return true,
                Ok(Some(Ok(_))) => {}
                _ => return false,
            }
        }
    });
    assert!(blast.await.unwrap(), "the producer was never told to stop");
    let mut read = 0u64;
    let outcome = loop {
        match items.next().await {
            Some(Ok(value)) => {
                assert_eq!(value, json!(read));
                read += 1;
            }
            other => break other,
        }
    };
    assert!(
        matches!(outcome, Some(Err(CallError::Overflow { limit: 10_000 }))),
        "{outcome:?}"
    );
    // Each frame is ~50 bytes of JSON: about 10 000 bytes' worth were kept.
    assert!((150..220).contains(&read), "{read} items buffered");
    assert!(items.next().await.is_none());
}

/// Writes `frames` raw frames to `stream` and reports whether all of them
/// were taken within `within` (a connection that stopped reading leaves the
/// writer waiting).
async fn all_frames_taken(
    stream: &mut tokio::io::DuplexStream,
    frame: &[u8],
    frames: usize,
    within: Duration,
) -> bool {
    use tokio::io::AsyncWriteExt;
    timeout(within, async {
        for _ in 0..frames {
            stream.write_all(frame).await.unwrap();
        }
    })
    .await
    .is_ok()
}

fn raw_frame(envelope: &EventEnvelope) -> Vec<u8> {
    EnvelopeCodec::default()
        .encode_frame(envelope)
        .unwrap()
        .to_vec()
}

/// The raw frame of request `id` for operation `name`.
fn request_frame(id: usize, name: &str, input: &Value) -> Vec<u8> {
    raw_frame(&EventEnvelope::new(
        CALL_REQUESTED,
        id.to_string(),
        json!({"name": name, "input": input}),
    ))
}

#[tokio::test]
async fn a_peer_that_never_reads_its_answers_stops_being_read() {
    // Every malformed request is answered with call.error; the peer reads
    // none of them. Our answers wait in a 4 KiB send buffer, then the
    // connection must stop reading instead of queueing (or spawning) more.
    let (mut peer, ours) = tokio::io::duplex(4096);
    let mut options = alknet_call::ConnectionOptions::default();
    options.send_buffer = 4096;
    let caller = CallConnection::new(ours)
        .serve(OperationRegistry::new())
        .options(options)
        .spawn();
    let malformed = raw_frame(&EventEnvelope::new(
        CALL_REQUESTED,
        "x",
        json!("not an object"),
    ));
    let taken = all_frames_taken(&mut peer, &malformed, 100_000, Duration::from_secs(2)).await;
    assert!(!taken, "100 000 unanswerable requests were all read");
    assert!(!caller.is_closed(), "backpressure, not a disconnect");

    // Once the peer reads, everything flows again.
    use tokio::io::AsyncReadExt;
    let mut sink = vec![0u8; 64 * 1024];
    let drain =
        tokio::spawn(async move { while peer.read(&mut sink).await.is_ok_and(|n| n > 0) {} });
    caller.close();
    let _ = timeout(BOUND, drain).await;
}

#[tokio::test]
async fn requests_in_hand_are_bounded_in_bytes_and_reading_waits_for_room() {
    // Handlers that never answer hold their requests; past 64 KiB of them
    // the connection stops reading.
    let (mut peer, ours) = tokio::io::duplex(4096);
    let mut options = alknet_call::ConnectionOptions::default();
    options.max_request_bytes = 64 * 1024;
    CallConnection::new(ours)
        .serve(never_answering())
        .options(options)
        .spawn();
    let big_input = "x".repeat(8 * 1024);
    let big_input = json!(big_input);
    let frames: Vec<Vec<u8>> = (0..100)
        .map(|id| request_frame(id, "/slow/never", &big_input))
        .collect();
    let taken = timeout(Duration::from_secs(2), async {
        use tokio::io::AsyncWriteExt;
        for frame in &frames {
            peer.write_all(frame).await.unwrap();
        }
    })
    .await
    .is_ok();
    assert!(
        !taken,
        "800 KiB of requests were taken into handlers at once"
    );
}

/// A random envelope: known and unknown types, ids that collide with live
/// ones, payloads of every JSON shape.
fn random_envelope(rng: &mut fastrand::Rng) -> EventEnvelope {
    const KINDS: [&str; 7] = [
        "call.requested",
        "call.responded",
        "call.completed",
        "call.aborted",
        "call.error",
        "call.unknown",
        "",
    ];
    let payload = match rng.u8(0..8) {
        0 => Value::Null,
        1 => json!(rng.i64(..)),
        2 => json!("text"),
        3 => json!({"name": "/numbers/count", "input": {"to": rng.u8(0..20)}}),
        4 => json!({"name": "/numbers/count", "input": "bad"}),
        5 => json!({"name": 7}),
        6 => json!({"code": "weird", "message": 1}),
        _ => json!([1, {"a": null}]),
    };
    EventEnvelope::new(
        KINDS[rng.usize(..KINDS.len())],
        rng.u8(0..6).to_string(),
        payload,
    )
}

#[tokio::test]
async fn random_envelopes_never_break_a_connection() {
    let server = counting_registry(Arc::default(), Arc::default());
    let mut peer = raw_peer(&server).await;
    let mut rng = fastrand::Rng::with_seed(7);
    for _ in 0..2000 {
        peer.send(random_envelope(&mut rng)).await.unwrap();
    }
    // Still serving: a fresh id gets its answer (after whatever the random
    // requests produced).
    peer.send(EventEnvelope::new(
        CALL_REQUESTED,
        "final",
        json!({"name": "/numbers/count", "input": {"to": 1}}),
    ))
    .await
    .unwrap();
    let answered = timeout(BOUND, async {
        while let Some(Ok(envelope)) = peer.next().await {
            if envelope.id == "final" && envelope.kind == "call.completed" {
                return true;
            }
        }
        false
    })
    .await
    .expect("the connection stopped answering");
    assert!(answered);
}

/// A stream that counts the bytes its connection has written.
struct CountingWrites {
    inner: tokio::io::DuplexStream,
    written: Arc<AtomicUsize>,
}

impl tokio::io::AsyncRead for CountingWrites {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for CountingWrites {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = polled {
            self.written.fetch_add(n, Ordering::SeqCst);
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Answers at once, noting how many bytes of answers had gone out when
/// each call came in.
struct NotesWritten {
    written: Arc<AtomicUsize>,
    seen: Arc<std::sync::Mutex<Vec<usize>>>,
}

impl Service for NotesWritten {
    fn serve(
        &self,
        _call: alknet_call::IncomingCall,
        _emitter: alknet_call::Emitter,
    ) -> futures_util::future::BoxFuture<'static, Result<alknet_call::Reply, alknet_call::Failure>>
    {
        let written = self.written.load(Ordering::SeqCst);
        self.seen.lock().unwrap().push(written);
        Box::pin(async { Ok(alknet_call::Reply::Value(Value::Null)) })
    }
}

#[tokio::test]
async fn answers_go_out_while_a_batch_of_requests_is_still_being_read() {
    // 64 requests in one write, as a busy peer's batch arrives: the first
    // answers must not wait until the last request is routed, or the two
    // peers take turns instead of working at once.
    let (left, right) = tokio::io::duplex(1024 * 1024);
    let written = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let server = CountingWrites {
        inner: right,
        written: written.clone(),
    };
    CallConnection::new(server)
        .serve(NotesWritten {
            written: written.clone(),
            seen: seen.clone(),
        })
        .spawn();
    let batch: Vec<u8> = (0..64)
        .flat_map(|id| request_frame(id, "/any", &Value::Null))
        .collect();
    let mut peer = Framed::new(left, EnvelopeCodec::default());
    tokio::io::AsyncWriteExt::write_all(peer.get_mut(), &batch)
        .await
        .unwrap();
    for _ in 0..64 {
        let answer = timeout(BOUND, peer.next()).await.unwrap().unwrap().unwrap();
        assert_eq!(answer.kind, "call.responded");
    }
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 64);
    assert_eq!(seen[0], 0, "nothing was answered before the first request");
    assert!(
        seen[63] > 0,
        "all 64 requests were routed before any answer was written"
    );
}
