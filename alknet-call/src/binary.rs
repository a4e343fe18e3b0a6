//! Binary payloads: a serde value encoded with postcard, carried as a
//! standard (padded) base64 string inside the JSON `payload` — what a
//! browser's `btoa` produces and `atob` reads.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::CallError;

/// Encodes `value` as a postcard-in-base64 JSON string.
pub fn to_binary_payload<T: Serialize>(value: &T) -> Result<Value, CallError> {
    let bytes =
        postcard::to_allocvec(value).map_err(|error| CallError::Binary(error.to_string()))?;
    Ok(Value::String(STANDARD.encode(bytes)))
}

/// Decodes a payload made by [`to_binary_payload`].
pub fn from_binary_payload<T: DeserializeOwned>(payload: &Value) -> Result<T, CallError> {
    let text = payload
        .as_str()
        .ok_or_else(|| CallError::Binary("expected a base64 string".into()))?;
    let bytes = STANDARD
        .decode(text)
        .map_err(|error| CallError::Binary(format!("not base64: {error}")))?;
    postcard::from_bytes(&bytes).map_err(|error| CallError::Binary(error.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Sample {
        port: u16,
        name: String,
        blob: Vec<u8>,
    }

    #[test]
    fn round_trips_and_pins_the_encoding() {
        let sample = Sample {
            port: 443,
            name: "a".into(),
            blob: vec![0, 255],
        };
        let payload = to_binary_payload(&sample).unwrap();
        // postcard: varint 443 = bb 03, then length-prefixed string and bytes.
        assert_eq!(payload, Value::String("uwMBYQIA/w==".into()));
        assert_eq!(from_binary_payload::<Sample>(&payload).unwrap(), sample);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bad in [
            Value::Null,
            Value::String("***".into()),
            Value::String("AA==".into()),
        ] {
            assert!(matches!(
                from_binary_payload::<Sample>(&bad),
                Err(CallError::Binary(_))
            ));
        }
    }
}
