//! The part of a server's configuration that may change while it runs:
//! who may log in, where they may forward, how many connections one
//! address may hold and how many keys a connection may try. Swapped
//! atomically; each
//! session keeps the snapshot it started with.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::{AuthorizedKeys, CertificateAuthorities, ForwardingPolicy};

/// Who may log in and where they may go.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct AuthConfig {
    /// Keys that may log in.
    pub authorized_keys: AuthorizedKeys,
    /// Authorities whose user certificates may log in.
    pub cert_authorities: CertificateAuthorities,
    /// Where sessions may open channels to.
    pub forwarding: ForwardingPolicy,
    /// Connections one IP address may have open at once; 0 means no limit.
    pub max_connections_per_ip: usize,
    /// Failed authentications a connection may make before it is
    /// disconnected (OpenSSH's `MaxAuthTries`).
    pub max_auth_attempts: usize,
}

/// OpenSSH's default `MaxAuthTries`.
pub const DEFAULT_MAX_AUTH_ATTEMPTS: usize = 10;

impl AuthConfig {
    /// A configuration from its parts.
    pub fn new(
        authorized_keys: AuthorizedKeys,
        cert_authorities: CertificateAuthorities,
        forwarding: ForwardingPolicy,
    ) -> Self {
        Self {
            authorized_keys,
            cert_authorities,
            forwarding,
            max_connections_per_ip: 0,
            max_auth_attempts: DEFAULT_MAX_AUTH_ATTEMPTS,
        }
    }
}

impl Default for AuthConfig {
    /// Nobody may log in; forwarding allowed; OpenSSH's limits.
    fn default() -> Self {
        Self::new(
            AuthorizedKeys::default(),
            CertificateAuthorities::default(),
            ForwardingPolicy::default(),
        )
    }
}

/// Replaces a running server's [`AuthConfig`]. Cheap to clone; every
/// clone reloads the same server. Lock-free for readers.
#[derive(Clone, Debug)]
pub struct ConfigReloadHandle {
    current: Arc<ArcSwap<AuthConfig>>,
}

impl ConfigReloadHandle {
    /// A handle holding `config`.
    pub fn new(config: AuthConfig) -> Self {
        Self {
            current: Arc::new(ArcSwap::from_pointee(config)),
        }
    }

    /// Makes `config` the one new connections see.
    pub fn reload(&self, config: AuthConfig) {
        self.current.store(Arc::new(config));
    }

    /// The configuration right now (a snapshot that does not change).
    pub fn current(&self) -> Arc<AuthConfig> {
        self.current.load_full()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generate_ed25519;

    #[test]
    fn snapshots_taken_before_a_reload_keep_the_old_config() {
        let key = generate_ed25519("k").unwrap();
        let handle = ConfigReloadHandle::new(AuthConfig::new(
            AuthorizedKeys::from_keys([key.public_key().clone()]),
            CertificateAuthorities::default(),
            ForwardingPolicy::default(),
        ));
        let before = handle.current();
        handle.clone().reload(AuthConfig::default());
        assert!(before.authorized_keys.contains(key.public_key()));
        assert!(!handle.current().authorized_keys.contains(key.public_key()));
    }
}
