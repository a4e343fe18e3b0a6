//! The payload of `call.error`: `{"code": …, "message": …, "retryable": bool}`.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Why a call failed, as its `code` string says. Codes this crate does not
/// know are kept as [`ErrorCode::Other`], so they survive a round trip.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum ErrorCode {
    /// No operation has that name (`not_found`).
    NotFound,
    /// The caller's identity may not call it (`forbidden`).
    Forbidden,
    /// The input does not match the operation's schema (`invalid_input`).
    InvalidInput,
    /// No answer within the call's time limit (`timeout`).
    Timeout,
    /// The handler failed (`internal`).
    Internal,
    /// The operation exists but cannot be reached now, e.g. its spoke is
    /// gone (`unavailable`).
    Unavailable,
    /// Any other code a peer sent.
    Other(String),
}

impl ErrorCode {
    /// The code as it travels on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            ErrorCode::NotFound => "not_found",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::InvalidInput => "invalid_input",
            ErrorCode::Timeout => "timeout",
            ErrorCode::Internal => "internal",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Other(code) => code,
        }
    }
}

impl From<String> for ErrorCode {
    fn from(code: String) -> Self {
        match code.as_str() {
            "not_found" => ErrorCode::NotFound,
            "forbidden" => ErrorCode::Forbidden,
            "invalid_input" => ErrorCode::InvalidInput,
            "timeout" => ErrorCode::Timeout,
            "internal" => ErrorCode::Internal,
            "unavailable" => ErrorCode::Unavailable,
            _ => ErrorCode::Other(code),
        }
    }
}

impl From<ErrorCode> for String {
    fn from(code: ErrorCode) -> Self {
        code.as_str().to_owned()
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed call, as handlers return it and callers receive it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code}: {message}")]
pub struct Failure {
    /// What kind of failure.
    pub code: ErrorCode,
    /// Human-readable detail.
    pub message: String,
    /// Whether the same call may succeed if tried again later.
    #[serde(default)]
    pub retryable: bool,
}

impl Failure {
    /// A failure with `code` and `message`; retryable for `timeout` and
    /// `unavailable`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        let retryable = matches!(code, ErrorCode::Timeout | ErrorCode::Unavailable);
        Self {
            code,
            message: message.into(),
            retryable,
        }
    }

    /// `not_found`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }

    /// `forbidden`.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden, message)
    }

    /// `invalid_input`.
    pub fn invalid_input(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidInput, message)
    }

    /// `internal`.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Internal, message)
    }

    /// `unavailable`.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unavailable, message)
    }

    /// `timeout`.
    pub fn timeout(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Timeout, message)
    }

    /// The `call.error` payload.
    pub fn to_payload(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// Reads a `call.error` payload; a malformed one still yields a failure
    /// (code `internal`) rather than losing the error.
    pub fn from_payload(payload: Value) -> Self {
        serde_json::from_value(payload.clone()).unwrap_or_else(|_| Failure {
            code: ErrorCode::Internal,
            message: format!("peer sent a malformed call.error payload: {payload}"),
            retryable: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn codes_round_trip_including_unknown_ones() {
        for code in [
            "not_found",
            "forbidden",
            "invalid_input",
            "timeout",
            "internal",
            "unavailable",
            "rate_limited",
        ] {
            let failure =
                Failure::from_payload(json!({"code": code, "message": "m", "retryable": true}));
            assert_eq!(failure.code.as_str(), code);
            assert_eq!(failure.to_payload()["code"], code);
        }
        assert_eq!(
            Failure::from_payload(json!({"code": "not_found", "message": "x"})).code,
            ErrorCode::NotFound
        );
    }

    #[test]
    fn a_malformed_error_payload_is_still_an_error() {
        let failure = Failure::from_payload(json!("oops"));
        assert_eq!(failure.code, ErrorCode::Internal);
        assert!(failure.message.contains("oops"));
    }

    #[test]
    fn retryable_by_default_only_when_waiting_may_help() {
        assert!(Failure::unavailable("gone").retryable);
        assert!(Failure::timeout("slow").retryable);
        assert!(!Failure::forbidden("no").retryable);
        assert_eq!(
            Failure::forbidden("no").to_payload(),
            json!({"code": "forbidden", "message": "no", "retryable": false})
        );
    }
}
