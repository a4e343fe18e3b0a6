//! The message every call-protocol frame carries.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `call.requested`: caller → handler, payload `{"name": "/path", "input": …}`.
pub const CALL_REQUESTED: &str = "call.requested";
/// `call.responded`: one per call, one per item of a subscription.
pub const CALL_RESPONDED: &str = "call.responded";
/// `call.completed`: the end of a subscription.
pub const CALL_COMPLETED: &str = "call.completed";
/// `call.aborted`: either side cancels.
pub const CALL_ABORTED: &str = "call.aborted";
/// `call.error`: payload `{"code": …, "message": …, "retryable": bool}`.
pub const CALL_ERROR: &str = "call.error";

/// One frame's content: `{"type": …, "id": …, "payload": …}`. Fields are
/// serialised in that order, so encoders in any language that keep key
/// order produce the same bytes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EventEnvelope {
    /// The event type, such as [`CALL_REQUESTED`].
    #[serde(rename = "type")]
    pub kind: String,
    /// The request id, chosen by the caller; every event of one call carries it.
    pub id: String,
    /// The event's data (`null` when there is none).
    pub payload: Value,
}

impl EventEnvelope {
    /// An envelope of `kind` for request `id`.
    pub fn new(kind: impl Into<String>, id: impl Into<String>, payload: Value) -> Self {
        Self {
            kind: kind.into(),
            id: id.into(),
            payload,
        }
    }
}
