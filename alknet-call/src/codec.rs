//! Framing: a 4-byte big-endian length, then that many bytes of UTF-8 JSON.
//! Bytes in, envelopes out; no I/O (tokio-util's `Framed` adds that).

use bytes::{Buf, BufMut, Bytes, BytesMut};
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
        let json = serde_json::to_vec(envelope)
            .map_err(|error| CallError::InvalidJson(error.to_string()))?;
        if json.len() > self.max_frame {
            return Err(CallError::FrameTooLarge {
                length: json.len(),
                max: self.max_frame,
            });
        }
        let length = u32::try_from(json.len()).map_err(|_| CallError::FrameTooLarge {
            length: json.len(),
            max: self.max_frame,
        })?;
        dst.reserve(LENGTH_PREFIX + json.len());
        dst.put_u32(length);
        dst.put_slice(&json);
        Ok(())
    }
}

impl EnvelopeCodec {
    /// One whole frame (length prefix and JSON) for `envelope`, for senders
    /// that encode before queueing so the queue can be bounded in bytes.
    pub fn encode_frame(&self, envelope: &EventEnvelope) -> Result<Bytes, CallError> {
        let mut frame = BytesMut::new();
        Encoder::<&EventEnvelope>::encode(&mut self.clone(), envelope, &mut frame)?;
        Ok(frame.freeze())
    }
}

/// Checks one frame's JSON field by field, for errors that say what is wrong.
fn parse(frame: &[u8]) -> Result<EventEnvelope, CallError> {
    let text = std::str::from_utf8(frame).map_err(|_| CallError::InvalidUtf8)?;
    let value: Value =
        serde_json::from_str(text).map_err(|error| CallError::InvalidJson(error.to_string()))?;
    let Value::Object(mut fields) = value else {
        return Err(CallError::NotAnObject);
    };
    let mut string = |name: &'static str| match fields.remove(name) {
        Some(Value::String(text)) => Ok(text),
        Some(_) => Err(CallError::WrongType(name)),
        None => Err(CallError::MissingField(name)),
    };
    let kind = string("type")?.into();
    let id = string("id")?;
    let payload = fields
        .remove("payload")
        .ok_or(CallError::MissingField("payload"))?;
    Ok(EventEnvelope { kind, id, payload })
}

#[cfg(test)]
mod tests {
    use super::*;
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
