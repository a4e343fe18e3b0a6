//! Framing: a 4-byte big-endian length, then that many bytes of UTF-8 JSON.
//! Bytes in, envelopes out; no I/O (tokio-util's `Framed` adds that).

use bytes::{Buf, Bytes, BytesMut};
use serde::Serialize;
use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use tokio_util::codec::{Decoder, Encoder};

use crate::{CallError, EventEnvelope};

/// The largest frame accepted or sent by default: 16 MiB.
pub const DEFAULT_MAX_FRAME: usize = 16 * 1024 * 1024;

const LENGTH_PREFIX: usize = 4;

/// Encodes and decodes [`EventEnvelope`] frames.
#[derive(Clone, Copy, Debug)]
pub struct EnvelopeCodec {
    max_frame: usize,
    last_frame: usize,
}

impl Default for EnvelopeCodec {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_FRAME)
    }
}

impl EnvelopeCodec {
    /// A codec refusing frames longer than `max_frame` bytes (the JSON part).
    pub fn new(max_frame: usize) -> Self {
        Self {
            max_frame,
            last_frame: 0,
        }
    }

    /// The largest frame this codec accepts.
    pub fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// The length of the last frame decoded (its JSON part), for callers
    /// that budget memory by bytes received.
    pub fn last_frame_len(&self) -> usize {
        self.last_frame
    }
}

impl Decoder for EnvelopeCodec {
    type Item = EventEnvelope;
    type Error = CallError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<EventEnvelope>, CallError> {
        let Some(prefix) = src.get(..LENGTH_PREFIX) else {
            return Ok(None);
        };
        let length = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
        // Checked before reserving anything: a hostile prefix costs nothing.
        if length > self.max_frame {
            return Err(CallError::FrameTooLarge {
                length,
                max: self.max_frame,
            });
        }
        if src.len() < LENGTH_PREFIX + length {
            src.reserve(LENGTH_PREFIX + length - src.len());
            return Ok(None);
        }
        src.advance(LENGTH_PREFIX);
        let frame = src.split_to(length);
        self.last_frame = length;
        parse(&frame).map(Some)
    }
}

impl Encoder<EventEnvelope> for EnvelopeCodec {
    type Error = CallError;

    fn encode(&mut self, envelope: EventEnvelope, dst: &mut BytesMut) -> Result<(), CallError> {
        self.encode(&envelope, dst)
    }
}

impl Encoder<&EventEnvelope> for EnvelopeCodec {
    type Error = CallError;

    fn encode(&mut self, envelope: &EventEnvelope, dst: &mut BytesMut) -> Result<(), CallError> {
        let mut frame = Vec::new();
        self.encode_into(envelope, &mut frame)?;
        dst.extend_from_slice(&frame);
        Ok(())
    }
}

impl EnvelopeCodec {
    /// One whole frame (length prefix and JSON) for `envelope`, for senders
    /// that encode before queueing so the queue can be bounded in bytes.
    pub fn encode_frame(&self, envelope: &EventEnvelope) -> Result<Bytes, CallError> {
        self.encode_frame_of(envelope)
    }

    /// One whole frame for anything that serialises as an envelope (a
    /// request borrowing its input, say).
    pub(crate) fn encode_frame_of(&self, envelope: &impl Serialize) -> Result<Bytes, CallError> {
        // Most frames fit: growing from nothing took a handful of copies.
        let mut frame = Vec::with_capacity(512);
        self.encode_into(envelope, &mut frame)?;
        Ok(Bytes::from(frame))
    }

    /// Appends one frame to `dst`. A `Vec` rather than a `BytesMut`:
    /// serde_json writes a string in many small pieces, and a `Vec` takes
    /// each for less.
    fn encode_into(&self, envelope: &impl Serialize, dst: &mut Vec<u8>) -> Result<(), CallError> {
        // The JSON is written after a placeholder prefix, then measured.
        let start = dst.len();
        dst.extend_from_slice(&[0; LENGTH_PREFIX]);
        if let Err(error) = serde_json::to_writer(&mut *dst, envelope) {
            dst.truncate(start);
            return Err(CallError::InvalidJson(error.to_string()));
        }
        let length = dst.len() - start - LENGTH_PREFIX;
        let prefix = u32::try_from(length)
            .ok()
            .filter(|_| length <= self.max_frame);
        let Some(prefix) = prefix else {
            dst.truncate(start);
            return Err(CallError::FrameTooLarge {
                length,
                max: self.max_frame,
            });
        };
        dst[start..start + LENGTH_PREFIX].copy_from_slice(&prefix.to_be_bytes());
        Ok(())
    }
}

/// Checks one frame's JSON field by field, for errors that say what is wrong.
fn parse(frame: &[u8]) -> Result<EventEnvelope, CallError> {
    let text = std::str::from_utf8(frame).map_err(|_| CallError::InvalidUtf8)?;
    let TopLevel::Object(fields) =
        serde_json::from_str(text).map_err(|error| CallError::InvalidJson(error.to_string()))?
    else {
        return Err(CallError::NotAnObject);
    };
    let string = |value: Option<Value>, name: &'static str| match value {
        Some(Value::String(text)) => Ok(text),
        Some(_) => Err(CallError::WrongType(name)),
        None => Err(CallError::MissingField(name)),
    };
    let kind = string(fields.kind, "type")?.into();
    let id = string(fields.id, "id")?;
    let payload = fields.payload.ok_or(CallError::MissingField("payload"))?;
    Ok(EventEnvelope { kind, id, payload })
}

/// A frame's JSON: the envelope's three fields when it is an object (the
/// last of a repeated key wins, other keys are skipped), without building
/// a map of the whole envelope first.
enum TopLevel {
    Object(EnvelopeFields),
    Other,
}

#[derive(Default)]
struct EnvelopeFields {
    kind: Option<Value>,
    id: Option<Value>,
    payload: Option<Value>,
}

impl<'de> Deserialize<'de> for TopLevel {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(TopLevelVisitor)
    }
}

/// An envelope key, read without allocating it.
enum Field {
    Kind,
    Id,
    Payload,
    Other,
}

impl<'de> Deserialize<'de> for Field {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_identifier(FieldVisitor)
    }
}

struct FieldVisitor;

impl Visitor<'_> for FieldVisitor {
    type Value = Field;

    fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("an envelope key")
    }

    fn visit_str<E>(self, key: &str) -> Result<Field, E> {
        Ok(match key {
            "type" => Field::Kind,
            "id" => Field::Id,
            "payload" => Field::Payload,
            _ => Field::Other,
        })
    }
}

struct TopLevelVisitor;

impl<'de> Visitor<'de> for TopLevelVisitor {
    type Value = TopLevel;

    fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<TopLevel, A::Error> {
        let mut fields = EnvelopeFields::default();
        while let Some(key) = map.next_key::<Field>()? {
            let slot = match key {
                Field::Kind => &mut fields.kind,
                Field::Id => &mut fields.id,
                Field::Payload => &mut fields.payload,
                Field::Other => {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            *slot = Some(map.next_value()?);
        }
        Ok(TopLevel::Object(fields))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<TopLevel, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(TopLevel::Other)
    }

    fn visit_bool<E>(self, _: bool) -> Result<TopLevel, E> {
        Ok(TopLevel::Other)
    }

    fn visit_i64<E>(self, _: i64) -> Result<TopLevel, E> {
        Ok(TopLevel::Other)
    }

    fn visit_u64<E>(self, _: u64) -> Result<TopLevel, E> {
        Ok(TopLevel::Other)
    }

    fn visit_f64<E>(self, _: f64) -> Result<TopLevel, E> {
        Ok(TopLevel::Other)
    }

    fn visit_str<E>(self, _: &str) -> Result<TopLevel, E> {
        Ok(TopLevel::Other)
    }

    fn visit_unit<E>(self) -> Result<TopLevel, E> {
        Ok(TopLevel::Other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BufMut;
    use serde_json::json;

    fn frame(json: &[u8]) -> BytesMut {
        let mut bytes = BytesMut::new();
        bytes.put_u32(json.len() as u32);
        bytes.put_slice(json);
        bytes
    }

    #[test]
    fn frames_arriving_in_pieces_are_decoded_once_complete() {
        let mut codec = EnvelopeCodec::default();
        let mut encoded = BytesMut::new();
        let envelope = EventEnvelope::new("call.responded", "7", json!({"n": 1}));
        codec.encode(&envelope, &mut encoded).unwrap();
        codec.encode(&envelope, &mut encoded).unwrap();
        let mut incoming = BytesMut::new();
        let mut decoded = Vec::new();
        for byte in encoded {
            incoming.put_u8(byte);
            while let Some(envelope) = codec.decode(&mut incoming).unwrap() {
                decoded.push(envelope);
            }
        }
        assert_eq!(decoded, [envelope.clone(), envelope]);
        assert!(incoming.is_empty());
    }

    #[test]
    fn an_oversized_length_prefix_is_refused_before_allocating() {
        let mut codec = EnvelopeCodec::new(1024);
        let mut hostile = BytesMut::from(&u32::MAX.to_be_bytes()[..]);
        let capacity = hostile.capacity();
        assert_eq!(
            codec.decode(&mut hostile),
            Err(CallError::FrameTooLarge {
                length: u32::MAX as usize,
                max: 1024
            })
        );
        assert_eq!(hostile.capacity(), capacity, "nothing was reserved");
        let big = EventEnvelope::new("call.responded", "1", json!("x".repeat(2000)));
        assert!(matches!(
            codec.encode(&big, &mut BytesMut::new()),
            Err(CallError::FrameTooLarge { .. })
        ));
    }

    #[test]
    fn malformed_frames_get_typed_errors() {
        let mut codec = EnvelopeCodec::default();
        let mut decode = |json: &[u8]| codec.decode(&mut frame(json));
        assert_eq!(decode(b"\xff\xfe"), Err(CallError::InvalidUtf8));
        assert!(matches!(
            decode(b"{not json"),
            Err(CallError::InvalidJson(_))
        ));
        assert_eq!(decode(b"[1,2]"), Err(CallError::NotAnObject));
        assert_eq!(
            decode(br#"{"id":"1","payload":null}"#),
            Err(CallError::MissingField("type"))
        );
        assert_eq!(
            decode(br#"{"type":"x","payload":null}"#),
            Err(CallError::MissingField("id"))
        );
        assert_eq!(
            decode(br#"{"type":"x","id":"1"}"#),
            Err(CallError::MissingField("payload"))
        );
        assert_eq!(
            decode(br#"{"type":1,"id":"1","payload":null}"#),
            Err(CallError::WrongType("type"))
        );
        assert_eq!(
            decode(br#"{"type":"call.completed","id":"1","payload":null,"extra":true}"#),
            Ok(Some(EventEnvelope::new("call.completed", "1", Value::Null))),
            "unknown fields are ignored, for forward compatibility"
        );
        assert_eq!(
            decode(br#"{"x":{"type":1},"payload":1,"id":"2","type":"a","payload":{"k":[1]}}"#),
            Ok(Some(EventEnvelope::new("a", "2", json!({"k": [1]})))),
            "keys in any order; the last of a repeated key wins, as in JSON.parse"
        );
        assert_eq!(
            decode(br#"{"type":"\u0061","id":"\"","payload":null}"#),
            Ok(Some(EventEnvelope::new("a", "\"", Value::Null))),
            "escaped strings"
        );
        for not_an_object in [&b"null"[..], b"true", b"-1", b"2", b"1.5", br#""s""#, b"[]"] {
            assert_eq!(decode(not_an_object), Err(CallError::NotAnObject));
        }
        assert!(matches!(
            decode(br#"{"type":"a","id":"1","payload":null} {}"#),
            Err(CallError::InvalidJson(_))
        ));
    }

    /// Random envelopes round-trip; random bytes never panic.
    #[test]
    fn randomised_round_trips_and_garbage() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut codec = EnvelopeCodec::default();
        for _ in 0..2000 {
            let text: String = (0..next() % 40)
                .map(|_| char::from_u32((next() % 0x2FF) as u32 + 1).unwrap_or('?'))
                .collect();
            let payload = match next() % 4 {
                0 => Value::Null,
                1 => json!(next()),
                2 => json!({"text": text, "list": [1, 2.5, false]}),
                _ => json!(text),
            };
            let envelope = EventEnvelope::new(text.clone(), format!("{}", next()), payload);
            let mut bytes = BytesMut::new();
            codec.encode(&envelope, &mut bytes).unwrap();
            assert_eq!(codec.decode(&mut bytes).unwrap(), Some(envelope));

            let garbage: Vec<u8> = (0..next() % 64).map(|_| next() as u8).collect();
            let mut garbage = BytesMut::from(&garbage[..]);
            while let Ok(Some(_)) = codec.decode(&mut garbage) {}
        }
    }
}
