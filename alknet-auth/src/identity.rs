//! Who a peer is once authenticated, whatever the transport: an
//! [`Identity`], resolved by an [`IdentityProvider`].
//!
//! Where scopes come from, with the default provider
//! ([`ConfigIdentityProvider`]): words of the form `scopes=a,b` and
//! `resources=x,y` in an authorized_keys line's comment, which OpenSSH
//! ignores, so the same file still works with sshd:
//!
//! ```text
//! ssh-ed25519 AAAAC3Nza… alice@laptop scopes=deploy,metrics resources=service:web
//! ```
//!
//! The identity's id is the key's `SHA256:` fingerprint. A certificate
//! session's identity comes from the certificate instead (its key id, and
//! the `scopes@alknet` / `resources@alknet` extensions the CA signed; see
//! [`identity_of_certificate`](crate::identity_of_certificate)). Other
//! providers (a database, a directory) implement the trait themselves.
//!
//! Resources are grants of the form `type:action` (`service:read`), with
//! `type:*` or `*` granting every action; the call protocol's access
//! control matches them.

use std::sync::Arc;
use std::time::Duration;

use alknet_identity::Identity;
use async_trait::async_trait;

use crate::authorized_keys::comment_list;
use crate::{
    AuthorizedKey, AuthorizedKeys, ConfigReloadHandle, DEFAULT_TOKEN_WINDOW, TokenError,
    TokenKeySource, TokenReplayCache, fingerprint,
};

/// Resolves identities from what a transport proves.
#[async_trait]
pub trait IdentityProvider: Send + Sync + 'static {
    /// The identity of an authenticated SSH key, by its `SHA256:` fingerprint.
    async fn resolve_from_fingerprint(&self, fingerprint: &str) -> Option<Identity>;

    /// The identity a token proves at `now` (Unix seconds).
    async fn resolve_from_token(&self, token: &str, now: u64) -> Result<Identity, TokenError>;
}

/// The default provider: the running server's authorized keys (read at
/// each call, so reloads apply) and their comments' scopes.
#[derive(Clone, Debug)]
pub struct ConfigIdentityProvider {
    config: ConfigReloadHandle,
    tokens: Arc<TokenKeySource>,
    window: Duration,
    replays: TokenReplayCache,
}

impl ConfigIdentityProvider {
    /// A provider over `config`, checking tokens against the same keys.
    pub fn new(config: ConfigReloadHandle) -> Self {
        Self {
            config,
            tokens: Arc::new(TokenKeySource::Shared),
            window: DEFAULT_TOKEN_WINDOW,
            replays: TokenReplayCache::default(),
        }
    }

    /// Checks tokens against `source` instead, within `window`.
    pub fn with_tokens(mut self, source: TokenKeySource, window: Duration) -> Self {
        self.tokens = Arc::new(source);
        self.window = window;
        self
    }
}

/// The identity an authorized_keys entry describes.
pub fn identity_of(entry: &AuthorizedKey) -> Identity {
    Identity {
        id: fingerprint(entry.public_key()),
        scopes: comment_list(entry.comment(), "scopes="),
        resources: comment_list(entry.comment(), "resources="),
    }
}

fn find_by_fingerprint<'a>(keys: &'a AuthorizedKeys, wanted: &str) -> Option<&'a AuthorizedKey> {
    keys.iter()
        .find(|entry| fingerprint(entry.public_key()) == wanted)
}

#[async_trait]
impl IdentityProvider for ConfigIdentityProvider {
    async fn resolve_from_fingerprint(&self, wanted: &str) -> Option<Identity> {
        let config = self.config.current();
        find_by_fingerprint(&config.authorized_keys, wanted).map(identity_of)
    }

    async fn resolve_from_token(&self, token: &str, now: u64) -> Result<Identity, TokenError> {
        let config = self.config.current();
        let keys = match self.tokens.as_ref() {
            TokenKeySource::Separate(keys) => keys,
            _ => &config.authorized_keys,
        };
        let verifier = self
            .tokens
            .verifier(&config.authorized_keys)
            .with_window(self.window)
            .with_replay_cache(self.replays.clone());
        let key = verifier.verify(token, now)?;
        find_by_fingerprint(keys, &fingerprint(key))
            .map(identity_of)
            .ok_or(TokenError::UnknownKey)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AuthConfig, generate_ed25519, mint_token};

    #[tokio::test]
    async fn scopes_come_from_the_authorized_keys_comment_and_tokens_resolve_too() {
        let alice = generate_ed25519("alice").unwrap();
        let line = format!(
            "{} alice@laptop scopes=deploy,metrics resources=service:web\n",
            alice.public_key().to_openssh().unwrap()
        );
        let keys = AuthorizedKeys::parse(&line).unwrap();
        let handle = ConfigReloadHandle::new(AuthConfig::new(keys));
        let provider = ConfigIdentityProvider::new(handle.clone());
        let expected = Identity {
            id: fingerprint(alice.public_key()),
            scopes: vec!["deploy".into(), "metrics".into()],
            resources: vec!["service:web".into()],
        };
        let id = fingerprint(alice.public_key());
        assert_eq!(
            provider.resolve_from_fingerprint(&id).await,
            Some(expected.clone())
        );
        let token = mint_token(&alice, 1_700_000_000).unwrap();
        assert_eq!(
            provider.resolve_from_token(&token, 1_700_000_010).await,
            Ok(expected)
        );
        assert_eq!(
            provider.resolve_from_token(&token, 1_700_000_011).await,
            Err(TokenError::Replayed),
            "a token is good for one use"
        );

        // After a reload without the key, neither path resolves it.
        handle.reload(AuthConfig::default());
        assert_eq!(provider.resolve_from_fingerprint(&id).await, None);
        let fresh = mint_token(&alice, 1_700_000_001).unwrap();
        assert_eq!(
            provider.resolve_from_token(&fresh, 1_700_000_010).await,
            Err(TokenError::UnknownKey)
        );
    }
}
