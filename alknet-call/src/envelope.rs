//! The message every call-protocol frame carries, and its event types.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
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

/// An envelope's `type`. Unknown types are kept (not refused): a newer
/// peer may send events this version ignores, and pubsub control
/// envelopes (`__subscribe`) share the framing.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// [`CALL_REQUESTED`].
    Requested,
    /// [`CALL_RESPONDED`].
    Responded,
    /// [`CALL_COMPLETED`].
    Completed,
    /// [`CALL_ABORTED`].
    Aborted,
    /// [`CALL_ERROR`].
    Error,
    /// Any other type, as sent.
    Other(String),
}

impl EventKind {
    /// The type as it travels.
    pub fn as_str(&self) -> &str {
        match self {
            EventKind::Requested => CALL_REQUESTED,
            EventKind::Responded => CALL_RESPONDED,
            EventKind::Completed => CALL_COMPLETED,
            EventKind::Aborted => CALL_ABORTED,
            EventKind::Error => CALL_ERROR,
            EventKind::Other(kind) => kind,
        }
    }
}

impl From<&str> for EventKind {
    fn from(kind: &str) -> Self {
        match kind {
            CALL_REQUESTED => EventKind::Requested,
            CALL_RESPONDED => EventKind::Responded,
            CALL_COMPLETED => EventKind::Completed,
            CALL_ABORTED => EventKind::Aborted,
            CALL_ERROR => EventKind::Error,
            other => EventKind::Other(other.to_owned()),
        }
    }
}

impl From<String> for EventKind {
    fn from(kind: String) -> Self {
        match EventKind::from(kind.as_str()) {
            EventKind::Other(_) => EventKind::Other(kind),
            known => known,
        }
    }
}

impl PartialEq<&str> for EventKind {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for EventKind {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for EventKind {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(EventKind::from)
    }
}

/// One frame's content: `{"type": …, "id": …, "payload": …}`. Fields are
/// serialised in that order, so encoders in any language that keep key
/// order produce the same bytes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EventEnvelope {
    /// The event type, such as [`EventKind::Requested`].
    #[serde(rename = "type")]
    pub kind: EventKind,
    /// The request id, chosen by the caller; every event of one call carries it.
    pub id: String,
    /// The event's data (`null` when there is none).
    pub payload: Value,
}

impl EventEnvelope {
    /// An envelope of `kind` for request `id`.
    pub fn new(kind: impl Into<EventKind>, id: impl Into<String>, payload: Value) -> Self {
        Self {
            kind: kind.into(),
            id: id.into(),
            payload,
        }
    }
}

/// What a `call.requested` asks for: `{"name": "/path", "input": …}`.
#[derive(Clone, Debug, PartialEq)]
pub struct CallRequest {
    /// The operation's path.
    pub name: String,
    /// Its input (`null` when none was sent).
    pub input: Value,
}

impl CallRequest {
    /// Reads a `call.requested` payload; the error says what is wrong with it.
    pub fn from_payload(payload: Value) -> Result<Self, &'static str> {
        let Value::Object(mut fields) = payload else {
            return Err("call.requested payload must be an object {\"name\", \"input\"}");
        };
        let Some(Value::String(name)) = fields.remove("name") else {
            return Err("call.requested payload needs a string \"name\"");
        };
        let input = fields.remove("input").unwrap_or(Value::Null);
        Ok(Self { name, input })
    }

    /// The payload that carries it.
    pub fn to_payload(&self) -> Value {
        serde_json::json!({"name": self.name, "input": self.input})
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn known_and_unknown_kinds_round_trip_as_strings() {
        for kind in [
            CALL_REQUESTED,
            CALL_RESPONDED,
            CALL_COMPLETED,
            CALL_ABORTED,
            CALL_ERROR,
            "__subscribe",
        ] {
            let envelope = EventEnvelope::new(kind, "1", Value::Null);
            let text = serde_json::to_string(&envelope).unwrap();
            assert_eq!(
                text,
                format!(r#"{{"type":"{kind}","id":"1","payload":null}}"#)
            );
            let back: EventEnvelope = serde_json::from_str(&text).unwrap();
            assert_eq!(back, envelope);
        }
        assert_eq!(
            EventKind::from("__subscribe"),
            EventKind::Other("__subscribe".into())
        );
        assert_eq!(EventKind::from(CALL_ERROR.to_owned()), EventKind::Error);
    }

    #[test]
    fn requests_are_read_from_their_payload() {
        let request = CallRequest::from_payload(json!({"name": "/a/b", "input": [1]})).unwrap();
        assert_eq!(request.name, "/a/b");
        assert_eq!(request.input, json!([1]));
        assert_eq!(
            CallRequest::from_payload(json!({"name": "/a/b"}))
                .unwrap()
                .input,
            Value::Null
        );
        assert!(CallRequest::from_payload(json!([])).is_err());
        assert!(CallRequest::from_payload(json!({"name": 5})).is_err());
        assert_eq!(
            CallRequest::from_payload(request.to_payload()).unwrap(),
            request
        );
    }
}
