//! alknet's call protocol, starting with its wire format.
//!
//! Every frame is a 4-byte big-endian length followed by that many bytes
//! of UTF-8 JSON: an [`EventEnvelope`] `{"type": …, "id": …, "payload": …}`.
//! The same framing as alknet's JavaScript peers use, so Rust and JS
//! interoperate byte for byte; `tests/vectors.json` pins exact bytes for
//! other implementations to check themselves against.
//!
//! [`EnvelopeCodec`] is a tokio-util codec: pure, bytes in and envelopes
//! out, with the maximum frame size enforced on the length prefix before
//! anything is allocated. This crate does no I/O of its own.
//!
//! ```
//! use alknet_call::{EnvelopeCodec, EventEnvelope, CALL_REQUESTED};
//! use bytes::BytesMut;
//! use serde_json::json;
//! use tokio_util::codec::{Decoder, Encoder};
//!
//! let mut codec = EnvelopeCodec::default();
//! let request = EventEnvelope::new(CALL_REQUESTED, "1", json!({"name": "/services/list", "input": null}));
//! let mut wire = BytesMut::new();
//! codec.encode(&request, &mut wire)?;
//! assert_eq!(&wire[..4], &(wire.len() as u32 - 4).to_be_bytes());
//! assert_eq!(codec.decode(&mut wire)?, Some(request));
//! # Ok::<(), alknet_call::CallError>(())
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
    CALL_ABORTED, CALL_COMPLETED, CALL_ERROR, CALL_REQUESTED, CALL_RESPONDED, EventEnvelope,
};
pub use error::CallError;
pub use failure::{ErrorCode, Failure};
pub use registry::{
    HUB_REGISTER, Handler, OperationRegistry, SERVICES_LIST, SERVICES_SCHEMA, SERVICES_WHOAMI,
};
pub use service::{CallContext, Emitter, IncomingCall, Reply, Service};
pub use spec::{AccessControl, OperationSpec, OperationType, ResourceAccess};
