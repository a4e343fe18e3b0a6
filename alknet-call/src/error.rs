//! [`CallError`]: why a call, a frame or a registration failed.

use crate::Failure;

/// What can go wrong with a frame, a call or a registration.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// The length prefix (or an envelope to send) exceeds the maximum.
    #[error("frame of {length} bytes exceeds the maximum of {max} bytes")]
    FrameTooLarge {
        /// The frame's length.
        length: usize,
        /// The configured maximum.
        max: usize,
    },
    /// The frame is not UTF-8.
    #[error("frame is not valid UTF-8")]
    InvalidUtf8,
    /// The frame is not JSON.
    #[error("frame is not valid JSON: {0}")]
    InvalidJson(String),
    /// The JSON is not an object.
    #[error("frame is not a JSON object")]
    NotAnObject,
    /// A required field is absent.
    #[error("frame has no {0:?} field")]
    MissingField(&'static str),
    /// A field has the wrong JSON type.
    #[error("frame's {0:?} field must be a string")]
    WrongType(&'static str),
    /// Reading or writing the underlying stream failed.
    #[error("connection error: {0}")]
    Io(String),
    /// The peer answered the call with `call.error`.
    #[error("call failed: {0}")]
    Remote(Failure),
    /// No answer came within the call's time limit.
    #[error("call failed: timeout: no answer within the time limit")]
    Timeout,
    /// The peer's handler cancelled the call (`call.aborted`).
    #[error("call aborted by the peer{}", reason_suffix(.0))]
    Aborted(Option<String>),
    /// The connection closed before the call finished (or before it began).
    #[error("the call connection is closed")]
    Closed,
    /// A subscription's unread items passed the connection's buffer limit
    /// (`ConnectionOptions::subscription_buffer`); it was aborted.
    #[error(
        "the subscription fell more than {limit} bytes behind and was aborted; read its items \
         faster or raise the subscription buffer"
    )]
    Overflow {
        /// The limit, in bytes of JSON.
        limit: usize,
    },
    /// The peer ended a call that expects one response without sending any.
    #[error("the peer completed the call without a response")]
    NoResponse,
    /// An operation name is not of the form `/segment/…`, or is reserved.
    #[error("invalid operation name {name:?}: {reason}")]
    InvalidName {
        /// The name as given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A subscription spec got a call handler, or a query or mutation a
    /// subscription handler.
    #[error("operation {name:?} is a {op_type:?}, but its handler is not of that kind")]
    HandlerMismatch {
        /// The operation.
        name: String,
        /// What its spec says it is.
        op_type: crate::OperationType,
    },
    /// An operation of that name is already registered.
    #[error("operation {0:?} is already registered")]
    Duplicate(String),
    /// A handler was registered for an operation whose spec is not.
    #[error("operation {0:?} has no spec: register the spec first")]
    UnknownOperation(String),
    /// An operation's input schema is not a valid JSON Schema.
    #[error("the input schema of {name:?} is not a valid JSON Schema: {reason}")]
    InvalidSchema {
        /// The operation.
        name: String,
        /// The schema compiler's complaint.
        reason: String,
    },
    /// A binary payload is not base64, or not the expected postcard value.
    #[error("binary payload cannot be decoded: {0}")]
    Binary(String),
}

fn reason_suffix(reason: &Option<String>) -> String {
    reason
        .as_deref()
        .map(|reason| format!(": {reason}"))
        .unwrap_or_default()
}

impl From<std::io::Error> for CallError {
    fn from(error: std::io::Error) -> Self {
        CallError::Io(error.to_string())
    }
}
