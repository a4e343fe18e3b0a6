//! [`KeySource`]: key material from a file or from memory.

use std::path::{Path, PathBuf};

use crate::AuthError;

/// Where key material comes from: a file, or bytes already in memory.
///
/// Every loader in this crate takes `impl Into<KeySource>`, so a `&Path`,
/// `PathBuf`, `Vec<u8>` or `&[u8]` can be passed directly.
#[derive(Clone)]
pub enum KeySource {
    /// Read the key from this file.
    Path(PathBuf),
    /// The key's bytes, for example from an environment variable or a secret store.
    Bytes(Vec<u8>),
}

impl KeySource {
    /// A name for messages: the path, or `<memory>`.
    pub fn name(&self) -> String {
        match self {
            KeySource::Path(path) => path.display().to_string(),
            KeySource::Bytes(_) => "<memory>".to_owned(),
        }
    }

    /// Reads the source's bytes.
    pub(crate) fn read_bytes(&self) -> Result<Vec<u8>, AuthError> {
        match self {
            KeySource::Path(path) => std::fs::read(path).map_err(|error| AuthError::Read {
                source_name: self.name(),
                error,
            }),
            KeySource::Bytes(bytes) => Ok(bytes.clone()),
        }
    }

    /// Reads the source as UTF-8 text.
    pub(crate) fn read_text(&self) -> Result<String, AuthError> {
        let bytes = self.read_bytes()?;
        String::from_utf8(bytes).map_err(|_| AuthError::Malformed {
            source_name: self.name(),
            reason: "the data is not text (binary DER keys are not supported)".to_owned(),
        })
    }
}

// Bytes may be a secret key: never print them.
impl std::fmt::Debug for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeySource::Path(path) => f.debug_tuple("Path").field(path).finish(),
            KeySource::Bytes(bytes) => write!(f, "Bytes(<{} bytes>)", bytes.len()),
        }
    }
}

impl From<PathBuf> for KeySource {
    fn from(path: PathBuf) -> Self {
        KeySource::Path(path)
    }
}

impl From<&Path> for KeySource {
    fn from(path: &Path) -> Self {
        KeySource::Path(path.to_owned())
    }
}

impl From<Vec<u8>> for KeySource {
    fn from(bytes: Vec<u8>) -> Self {
        KeySource::Bytes(bytes)
    }
}

impl From<&[u8]> for KeySource {
    fn from(bytes: &[u8]) -> Self {
        KeySource::Bytes(bytes.to_vec())
    }
}
