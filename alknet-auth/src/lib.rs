//! Authentication for alknet: who may log in, as whom, and where to.
//!
//! - keys and `authorized_keys` ([`load_private_key`], [`AuthorizedKeys`]),
//! - OpenSSH user certificates ([`CertificateAuthorities`]),
//! - tokens for transports that are not SSH ([`mint_token`], [`TokenVerifier`]),
//! - revoked keys and OpenSSH KRLs ([`RevokedKeys`]),
//! - the forwarding policy and its TOML format ([`ForwardingPolicy`]),
//! - identities and their scopes ([`Identity`], [`IdentityProvider`]),
//! - **logging in** — a verified key or certificate becomes a
//!   [`SessionGrant`] ([`AuthConfig::login_with_key`],
//!   [`AuthConfig::login_with_certificate`]),
//! - **admission** — one function decides every channel a session asks
//!   for ([`AuthConfig::admit`], [`ChannelRequest`], [`Refusal`]),
//! - connection limits before authentication ([`ConnectionLimiter`],
//!   [`StartupLimits`]),
//! - the part of all this a running server may reload ([`AuthConfig`],
//!   [`ConfigReloadHandle`]).
//!
//! ```text
//!  key / certificate ──login──► SessionGrant ──admit(request)──► allow | Refusal
//!                                    │                 ▲
//!                                    └── principals, permitopen, permit-port-forwarding
//!                                                      │
//!                                 ForwardingPolicy + reserved names
//! ```
//!
//! alknet authenticates with Ed25519 keys in OpenSSH's formats only, so
//! keys made by `ssh-keygen -t ed25519` and `alknet keygen` are
//! interchangeable. Every loader takes a file path or bytes already in
//! memory ([`KeySource`]) and fails with an [`AuthError`] that says what
//! was wrong and what to do: a PEM/PKCS#8 key, a non-Ed25519 key, an
//! encrypted key without a passphrase, an unreadable file, or a malformed
//! `authorized_keys` line (with its line number).
//!
//! This crate does no I/O beyond reading and writing key files, and knows
//! nothing about SSH sessions or sockets: its checks are functions of their
//! inputs (a certificate, a login name, a peer address, the time, a
//! random roll).
//!
//! # Example
//!
//! ```
//! use alknet_auth::{AuthorizedKeys, fingerprint, generate_ed25519};
//!
//! let key = generate_ed25519("alice@laptop")?;
//! let line = key.public_key().to_openssh().unwrap();
//!
//! let authorized = AuthorizedKeys::parse(&format!("# team keys\n{line}\n"))?;
//! assert!(authorized.contains(key.public_key()));
//! assert!(fingerprint(key.public_key()).starts_with("SHA256:"));
//!
//! let err = alknet_auth::load_private_key(&b"-----BEGIN PRIVATE KEY-----\n"[..], None).unwrap_err();
//! assert!(err.to_string().contains("OpenSSH"));
//! # Ok::<(), alknet_auth::AuthError>(())
//! ```

#![forbid(unsafe_code)]

mod address;
mod admission;
mod authorized_keys;
mod certificate;
mod error;
mod identity;
mod key_options;
mod keys;
mod known_hosts;
mod limits;
mod login;
mod policy;
mod policy_file;
mod reload;
mod revocation;
mod source;
mod token;

pub use address::{JudgedHost, numeric_host};
pub use admission::{ChannelRequest, RESERVED_PREFIX, Refusal, SessionGrant, is_reserved};
pub use alknet_identity::Identity;
pub use authorized_keys::{AuthorizedKey, AuthorizedKeys, SkippedLine};
pub use certificate::{
    CertificateAuthorities, CertificateGrant, CertificateRejection, RESOURCES_EXTENSION,
    SCOPES_EXTENSION, identity_of_certificate,
};
pub use error::AuthError;
pub use identity::{ConfigIdentityProvider, IdentityProvider, identity_of};
pub use key_options::{FromPatterns, HostPort, KeyOptions};
pub use keys::{
    certificate_path, fingerprint, generate_ed25519, load_certificate, load_private_key,
    load_public_key, public_key_path, write_key_pair, write_key_pair_encrypted,
};
pub use known_hosts::{
    HostKeyStatus, KnownHosts, KnownHostsLine, PresentedHostKey, known_hosts_name,
    remember_host_key,
};
pub use limits::{ConnectionLimiter, ConnectionPermit, LimitRefusal, PeerKey, StartupLimits};
pub use login::{LoginRefusal, MAX_USER_NAME_BYTES, user_for_log};
pub use policy::{ForwardRule, ForwardingPolicy, TargetMatch, Verdict, parse_port_range};
pub use policy_file::PolicyTable;
pub use reload::{
    AuthConfig, ConfigReloadHandle, DEFAULT_MAX_AUTH_ATTEMPTS, DEFAULT_MAX_REMOTE_FORWARDS,
};
pub use revocation::RevokedKeys;
pub use source::KeySource;
pub use token::{
    DEFAULT_TOKEN_WINDOW, TOKEN_BYTES, TokenError, TokenKeySource, TokenReplayCache, TokenVerifier,
    mint_token, token_key_id, unix_now,
};

/// The key types this crate hands out, re-exported so callers need not
/// depend on `ssh-key` (and cannot pick a mismatching version of it).
pub use ssh_key::{Certificate, PrivateKey, PublicKey};
