//! The part of a server's configuration that may change while it runs:
//! who may log in, what is revoked, where sessions may forward, and the
//! connection limits. Swapped atomically; each session keeps the snapshot
//! it started with.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::{AuthorizedKeys, CertificateAuthorities, ForwardingPolicy, RevokedKeys, StartupLimits};

/// Who may log in and what they may do, plus the limits that protect the
/// server. Build with [`AuthConfig::new`] and the builder methods.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct AuthConfig {
    /// Keys that may log in (and `cert-authority` lines).
    pub authorized_keys: AuthorizedKeys,
    /// Authorities whose user certificates may log in.
    pub cert_authorities: CertificateAuthorities,
    /// Keys, certificates and CAs that may never log in.
    pub revoked_keys: RevokedKeys,
    /// Where sessions may open channels to and listen on.
    pub forwarding: ForwardingPolicy,
    /// Connections one IP address may have open at once; 0 means no limit.
    pub max_connections_per_ip: usize,
    /// Failed authentications a connection may make before it is
    /// disconnected (OpenSSH's `MaxAuthTries`).
    pub max_auth_attempts: usize,
    /// Connections not yet authenticated, in all and per source address
    /// (OpenSSH's `MaxStartups` and `PerSourceMaxStartups`).
    pub startups: StartupLimits,
    /// Remote forwards one session may hold at once.
    pub max_remote_forwards: usize,
}

/// OpenSSH's default `MaxAuthTries`.
pub const DEFAULT_MAX_AUTH_ATTEMPTS: usize = 10;

/// Remote forwards per session by default: plenty for people, a bound for
/// a session trying to hold every port.
pub const DEFAULT_MAX_REMOTE_FORWARDS: usize = 16;

impl AuthConfig {
    /// Who may log in: `authorized_keys`; no CA, nothing revoked,
    /// forwarding allowed, OpenSSH's limits.
    pub fn new(authorized_keys: AuthorizedKeys) -> Self {
        Self {
            authorized_keys,
            cert_authorities: CertificateAuthorities::default(),
            revoked_keys: RevokedKeys::default(),
            forwarding: ForwardingPolicy::default(),
            max_connections_per_ip: 0,
            max_auth_attempts: DEFAULT_MAX_AUTH_ATTEMPTS,
            startups: StartupLimits::default(),
            max_remote_forwards: DEFAULT_MAX_REMOTE_FORWARDS,
        }
    }

    /// Also accepts user certificates signed by these CAs.
    pub fn cert_authorities(mut self, authorities: CertificateAuthorities) -> Self {
        self.cert_authorities = authorities;
        self
    }

    /// Never lets these keys, certificates or CAs in.
    pub fn revoked_keys(mut self, revoked: RevokedKeys) -> Self {
        self.revoked_keys = revoked;
        self
    }

    /// Judges channels by this policy.
    pub fn forwarding(mut self, policy: ForwardingPolicy) -> Self {
        self.forwarding = policy;
        self
    }

    /// At most `limit` open connections per address (0: no limit).
    pub fn max_connections_per_ip(mut self, limit: usize) -> Self {
        self.max_connections_per_ip = limit;
        self
    }

    /// At most `attempts` failed authentications per connection.
    pub fn max_auth_attempts(mut self, attempts: usize) -> Self {
        self.max_auth_attempts = attempts;
        self
    }

    /// These limits on connections not yet authenticated.
    pub fn startups(mut self, limits: StartupLimits) -> Self {
        self.startups = limits;
        self
    }

    /// At most `forwards` remote forwards per session.
    pub fn max_remote_forwards(mut self, forwards: usize) -> Self {
        self.max_remote_forwards = forwards;
        self
    }
}

impl Default for AuthConfig {
    /// Nobody may log in; forwarding allowed; OpenSSH's limits.
    fn default() -> Self {
        Self::new(AuthorizedKeys::default())
    }
}

impl From<AuthorizedKeys> for AuthConfig {
    fn from(keys: AuthorizedKeys) -> Self {
        Self::new(keys)
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
        let handle = ConfigReloadHandle::new(AuthConfig::new(AuthorizedKeys::from_keys([key
            .public_key()
            .clone()])));
        let before = handle.current();
        handle.clone().reload(AuthConfig::default());
        assert!(before.authorized_keys.contains(key.public_key()));
        assert!(!handle.current().authorized_keys.contains(key.public_key()));
    }
}
