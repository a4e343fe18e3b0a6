//! [`AuthError`]: everything that can go wrong loading key material and
//! policy, with messages that say what to do.

use std::io;

/// Everything that can go wrong while loading key material.
///
/// `source` fields name where the bytes came from: a file path, or
/// `<memory>` for keys handed over as bytes. Key material itself never
/// appears in a message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The key file could not be read.
    #[error("cannot read {source_name}: {error}")]
    Read {
        /// The path that was read.
        source_name: String,
        /// The operating system's error.
        #[source]
        error: io::Error,
    },

    /// The key file could not be written.
    #[error("cannot write {source_name}: {error}")]
    Write {
        /// The path that was written.
        source_name: String,
        /// The operating system's error.
        #[source]
        error: io::Error,
    },

    /// A PEM or PKCS#8 key was given where an OpenSSH key is required.
    #[error(
        "{source_name}: this is a {format} key, but alknet reads only OpenSSH keys \
         (-----BEGIN OPENSSH PRIVATE KEY-----); convert it with `ssh-keygen -p -f <file>` \
         or create a new one with `alknet keygen <file>`"
    )]
    NotOpenSsh {
        /// Where the key came from.
        source_name: String,
        /// The format that was recognised instead (for example `PKCS#8 (PEM)`).
        format: &'static str,
    },

    /// A public key was given where a private key is required.
    #[error(
        "{source_name}: this is a public key; pass the private key file \
         (usually the same name without `.pub`)"
    )]
    PublicKeyGiven {
        /// Where the key came from.
        source_name: String,
    },

    /// A private key was given where a public key is required.
    #[error(
        "{source_name}: this is a private key; pass the public key \
         (the `.pub` file, a line starting with `ssh-ed25519`)"
    )]
    PrivateKeyGiven {
        /// Where the key came from.
        source_name: String,
    },

    /// A private key file that others may read.
    #[error(
        "{source_name}: permissions {mode:04o} are too open: a private key must not be readable \
         by others; run `chmod 600 {source_name}`"
    )]
    PermissionsTooOpen {
        /// The key file.
        source_name: String,
        /// Its permission bits.
        mode: u32,
    },

    /// The key is valid but not Ed25519.
    #[error(
        "{source_name}: {algorithm} keys are not supported; alknet uses Ed25519 keys only \
         (create one with `alknet keygen <file>` or `ssh-keygen -t ed25519`)"
    )]
    NotEd25519 {
        /// Where the key came from.
        source_name: String,
        /// The algorithm the key uses.
        algorithm: String,
    },

    /// The private key is protected by a passphrase and none was given.
    #[error(
        "{source_name}: the key is encrypted with a passphrase; supply the passphrase \
         (ALKNET_PASSPHRASE for the alknet command) or remove it with `ssh-keygen -p -f <file>`"
    )]
    PassphraseRequired {
        /// Where the key came from.
        source_name: String,
    },

    /// The passphrase did not decrypt the key.
    #[error("{source_name}: wrong passphrase for the encrypted key")]
    WrongPassphrase {
        /// Where the key came from.
        source_name: String,
    },

    /// The bytes are not a well-formed OpenSSH key.
    #[error("{source_name}: not a valid OpenSSH key: {reason}")]
    Malformed {
        /// Where the key came from.
        source_name: String,
        /// What the parser objected to.
        reason: String,
    },

    /// One line of an `authorized_keys` file could not be parsed.
    #[error("{source_name} line {line}: {reason}")]
    AuthorizedKeysLine {
        /// Where the file came from.
        source_name: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong with the line.
        reason: String,
    },

    /// A forwarding policy could not be used.
    #[error("{source_name}: forwarding policy: {reason}")]
    Policy {
        /// Where the policy came from.
        source_name: String,
        /// What is wrong with it (names the rule and field).
        reason: String,
    },

    /// Generating a new key failed.
    #[error("cannot generate a key: {0}")]
    Generate(String),
}
