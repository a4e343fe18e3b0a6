//! What can go wrong getting certificates, said so an operator can act.

use std::path::PathBuf;

/// An ACME configuration or issuance failure.
#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    /// A setting cannot work (caught before any network traffic).
    #[error("ACME: {0}")]
    Config(String),
    /// The certificate cache directory could not be used.
    #[error("ACME cache {path}: {reason}")]
    Cache {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The ACME server refused or could not be reached.
    #[error("ACME server {directory}: {reason}")]
    Server {
        /// The directory URL.
        directory: String,
        /// What it said (or why it could not be asked).
        reason: String,
    },
    /// What the ACME server issued is unusable.
    #[error("ACME certificate: {0}")]
    Certificate(String),
}
