//! alknet's call protocol: calls and subscriptions in both directions
//! over any byte stream, and a registry of operations to answer them.
//!
//! **Wire format.** Every frame is a 4-byte big-endian length followed by
//! that many bytes of UTF-8 JSON: an [`EventEnvelope`]
//! `{"type": …, "id": …, "payload": …}` — the same framing as alknet's
//! JavaScript peers, so Rust and JS interoperate byte for byte
//! (`tests/vectors.json` pins exact bytes). [`EnvelopeCodec`] is the pure
//! tokio-util codec; the maximum frame size is enforced on the length
//! prefix before anything is allocated.
//!
//! **Protocol.** [`CallConnection`] runs one connection: a [`Caller`] makes
//! calls ([`Caller::call`], one answer, with a time limit) and
//! subscriptions ([`Caller::subscribe`], a stream until `call.completed`;
//! dropping it sends `call.aborted`), while a [`Service`] answers the
//! peer's calls on the same connection. When the connection closes, every
//! pending call fails with [`CallError::Closed`] and every handler is
//! dropped.
//!
//! **Registry.** An [`OperationRegistry`] holds [`OperationSpec`]s and
//! their [`Handler`]s (registered separately if need be), validates input
//! against each spec's JSON Schema (`invalid_input`), checks
//! [`AccessControl`] against the caller's identity (`forbidden`), and
//! answers the built-in discovery operations (`/services/list`,
//! `/services/schema`, `/services/whoami`, ordinary handlers themselves).
//! A [`Hub`] wraps a registry: a spoke that calls `/hub/services/register`
//! (holding the grant `spoke:NAME:register`, by default) is reachable as
//! `/{spoke}/…` until it disconnects.
//!
//! **Identities** come from alknet-identity, a crate with no dependencies:
//! this crate checks access against an [`Identity`](alknet_identity::Identity)
//! without linking what establishes one (alknet-auth's key and certificate
//! parsing), so it works over any byte pipe, authenticated however the
//! embedder likes.
//!
//! ```
//! use alknet_call::{CallConnection, Handler, OperationRegistry, OperationSpec, OperationType};
//! use serde_json::json;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), alknet_call::CallError> {
//! let registry = OperationRegistry::new();
//! registry.register(
//!     OperationSpec::new("/math/double", OperationType::Query)
//!         .input_schema(json!({"type": "number"})),
//!     Handler::call(|_context, input| async move { Ok(json!(input.as_f64().unwrap_or(0.0) * 2.0)) }),
//! )?;
//!
//! // Any byte stream will do: a TCP socket, an SSH channel, or memory.
//! let (client_side, server_side) = tokio::io::duplex(64 * 1024);
//! CallConnection::new(server_side).serve(registry).spawn();
//! let server = CallConnection::new(client_side).spawn();
//!
//! assert_eq!(server.call("/math/double", json!(21)).await?, json!(42.0));
//! # Ok(())
//! # }
//! ```

#![forbid(unsafe_code)]

mod binary;
mod codec;
mod connection;
mod envelope;
mod error;
mod failure;
mod registry;
mod service;
mod spec;

pub use binary::{from_binary_payload, to_binary_payload};
pub use codec::{DEFAULT_MAX_FRAME, EnvelopeCodec};
pub use connection::{CallConnection, Caller, ConnectionOptions, Subscription};
pub use envelope::{
    CALL_ABORTED, CALL_COMPLETED, CALL_CREDIT, CALL_ERROR, CALL_REQUESTED, CALL_RESPONDED,
    CallRequest, EventEnvelope, EventKind, credit_grant,
};
pub use error::CallError;
pub use failure::{ErrorCode, Failure};
pub use registry::{
    HUB_REGISTER, Handler, Hub, OperationRegistry, SERVICES_LIST, SERVICES_SCHEMA, SERVICES_WHOAMI,
    SpokeRegistration,
};
pub use service::{CallContext, Emitter, IncomingCall, Reply, Service};
pub use spec::{AccessControl, OperationSpec, OperationType, ResourceAccess};
