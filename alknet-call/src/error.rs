/// What can go wrong with a call-protocol frame.
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
}

impl From<std::io::Error> for CallError {
    fn from(error: std::io::Error) -> Self {
        CallError::Io(error.to_string())
    }
}
