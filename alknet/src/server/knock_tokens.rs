//! The token gate of stealth listeners that require a knock: tokens of the
//! server's authorized keys (as they are after the last reload), each
//! accepted once.

use alknet_auth::{ConfigReloadHandle, TokenKeySource, TokenReplayCache, unix_now};
use alknet_stealth::TokenGate;
use tracing::debug;

/// Admits knocks whose token an authorized key made.
#[derive(Debug)]
pub(super) struct KnockTokens {
    auth: ConfigReloadHandle,
    /// Shared by every listener and kept across reloads: a token opens one
    /// tunnel, once.
    replays: TokenReplayCache,
}

impl KnockTokens {
    pub(super) fn new(auth: ConfigReloadHandle) -> Self {
        Self {
            auth,
            replays: TokenReplayCache::default(),
        }
    }
}

impl TokenGate for KnockTokens {
    fn admit(&self, token: &str) -> bool {
        let auth = self.auth.current();
        let verifier = TokenKeySource::Shared
            .verifier(&auth.authorized_keys)
            .with_replay_cache(self.replays.clone());
        match verifier.verify(token, unix_now()) {
            Ok(_) => true,
            Err(error) => {
                // Most refusals are probes; the reason helps an operator
                // whose own client is refused (a clock off, a key missing).
                debug!(%error, "stealth knock refused: answered as the web site");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alknet_auth::{AuthConfig, AuthorizedKeys, generate_ed25519, mint_token};

    #[test]
    fn an_authorized_key_s_token_opens_once_and_a_reload_removes_the_key() {
        let alice = generate_ed25519("alice").unwrap();
        let line = alice.public_key().to_openssh().unwrap();
        let handle =
            ConfigReloadHandle::new(AuthConfig::new(AuthorizedKeys::parse(&line).unwrap()));
        let gate = KnockTokens::new(handle.clone());
        let now = unix_now();
        let token = mint_token(&alice, now).unwrap();
        assert!(gate.admit(&token));
        assert!(!gate.admit(&token), "a replay was admitted");
        let stranger = generate_ed25519("mallory").unwrap();
        assert!(!gate.admit(&mint_token(&stranger, now).unwrap()));
        assert!(!gate.admit("not a token"));

        handle.reload(AuthConfig::new(AuthorizedKeys::parse("").unwrap()));
        assert!(!gate.admit(&mint_token(&alice, now + 1).unwrap()));
    }
}
