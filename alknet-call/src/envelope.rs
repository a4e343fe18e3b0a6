//! The message every call-protocol frame carries, and its event types.
//!
//! # Flow control for subscriptions (`credit`)
//!
//! A subscriber that can be slower than its producer opts in by adding
//! `"credit": N` (a positive integer) to its `call.requested` payload: it
//! grants the producer `N` bytes. The producer then sends a `call.responded`
//! only while its credit is above zero, and takes each one's length off it —
//! the length of the frame's JSON text, without the 4-byte length prefix
//! (so one frame may overdraw it). The subscriber adds more as its
//! application takes items:
//!
//! ```text
//! {"type":"call.requested","id":"7","payload":{"credit":8388608,"input":null,"name":"/ticks"}}
//! {"type":"call.credit","id":"7","payload":{"bytes":4194350}}
//! ```
//!
//! A producer that does not know `credit` ignores the field, and every peer
//! ignores envelope types it does not know, so a peer without it gets
//! today's behaviour: items as fast as they come, and a subscriber that
//! cannot keep up fails with `Overflow` past its buffer (that guard stays,
//! whatever the peer claims to honour).

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
/// `call.credit`: subscriber → producer, payload `{"bytes": N}`: N more
/// bytes of items may be sent (see the module docs).
pub const CALL_CREDIT: &str = "call.credit";

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
    /// [`CALL_CREDIT`].
    Credit,
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
            EventKind::Credit => CALL_CREDIT,
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
            CALL_CREDIT => EventKind::Credit,
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

/// What a `call.requested` asks for: `{"name": "/path", "input": …}`,
/// and `"credit": N` from a subscriber that grants credit.
#[derive(Clone, Debug, PartialEq)]
pub struct CallRequest {
    /// The operation's path.
    pub name: String,
    /// Its input (`null` when none was sent).
    pub input: Value,
    /// The bytes of items granted at the start, when the caller speaks
    /// credit (see the module docs).
    pub credit: Option<u64>,
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
        // Anything but a positive integer is no grant: the caller then
        // gets items without flow control, as from a peer without it.
        let credit = fields
            .remove("credit")
            .and_then(|credit| credit.as_u64())
            .filter(|credit| *credit > 0);
        Ok(Self {
            name,
            input,
            credit,
        })
    }

    /// The payload that carries it.
    pub fn to_payload(&self) -> Value {
        match self.credit {
            Some(credit) => {
                serde_json::json!({"name": self.name, "input": self.input, "credit": credit})
            }
            None => serde_json::json!({"name": self.name, "input": self.input}),
        }
    }
}

/// A `call.requested` envelope that borrows its request, so that sending
/// one neither clones the input nor builds a map: it serialises to the same
/// bytes as the [`EventEnvelope`] of [`CallRequest::to_payload`] (payload
/// keys sorted, as every frame's are).
#[derive(Serialize)]
pub(crate) struct RequestFrame<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    id: &'a str,
    payload: RequestPayload<'a>,
}

#[derive(Serialize)]
struct RequestPayload<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    credit: Option<u64>,
    input: &'a Value,
    name: &'a str,
}

impl<'a> RequestFrame<'a> {
    pub(crate) fn new(id: &'a str, name: &'a str, input: &'a Value, credit: Option<u64>) -> Self {
        Self {
            kind: CALL_REQUESTED,
            id,
            payload: RequestPayload {
                credit,
                input,
                name,
            },
        }
    }
}

/// The bytes a `call.credit` payload grants (`{"bytes": N}`); `None` for
/// anything else.
pub fn credit_grant(payload: &Value) -> Option<u64> {
    payload.get("bytes")?.as_u64()
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
            CALL_CREDIT,
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
        let granted = CallRequest::from_payload(json!({"name": "/t", "credit": 4096})).unwrap();
        assert_eq!(granted.credit, Some(4096));
        assert_eq!(
            CallRequest::from_payload(granted.to_payload()).unwrap(),
            granted
        );
        for no_grant in [json!(0), json!(-1), json!("4096"), json!(1.5)] {
            let request = CallRequest::from_payload(json!({"name": "/t", "credit": no_grant}));
            assert_eq!(request.unwrap().credit, None);
        }
        assert_eq!(credit_grant(&json!({"bytes": 10})), Some(10));
        assert_eq!(credit_grant(&json!({"bytes": -1})), None);
        assert!(CallRequest::from_payload(json!([])).is_err());
        assert!(CallRequest::from_payload(json!({"name": 5})).is_err());
        assert_eq!(
            CallRequest::from_payload(request.to_payload()).unwrap(),
            request
        );
    }

    #[test]
    fn a_borrowed_request_serialises_like_its_envelope() {
        let input = json!({"z": [1, {"b": 2, "a": "\u{1}"}], "a": null});
        for credit in [None, Some(8_388_608)] {
            let request = CallRequest {
                name: "/a/\"b\"".into(),
                input: input.clone(),
                credit,
            };
            let envelope = EventEnvelope::new(CALL_REQUESTED, "x-7", request.to_payload());
            let borrowed = RequestFrame::new("x-7", &request.name, &request.input, credit);
            assert_eq!(
                serde_json::to_string(&borrowed).unwrap(),
                serde_json::to_string(&envelope).unwrap()
            );
        }
    }
}
