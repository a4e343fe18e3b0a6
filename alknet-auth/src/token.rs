//! Tokens for transports that are not SSH (a browser, an HTTP client):
//! proof of holding an Ed25519 key, without a handshake.
//!
//! ```text
//! token = base64url_nopad( key_id[32] || timestamp[8] || signature[64] )
//! key_id    = SHA-256 of the raw 32-byte Ed25519 public key
//!             (what WebCrypto's exportKey("raw") gives a browser)
//! timestamp = Unix seconds, big-endian u64
//! signature = Ed25519 over key_id || timestamp
//! ```
//!
//! Pure functions over bytes and a clock value the caller passes in. A
//! verifier accepts each token once: a token seen again within its window
//! is a replay ([`TokenError::Replayed`]).

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use signature::{Signer, Verifier};
use ssh_key::sha2::{Digest, Sha256};
use ssh_key::{Algorithm, PrivateKey, PublicKey, Signature};

use crate::AuthorizedKeys;

const KEY_ID_LEN: usize = 32;
const TIMESTAMP_LEN: usize = 8;
const SIGNATURE_LEN: usize = 64;
/// Length of a decoded token.
pub const TOKEN_BYTES: usize = KEY_ID_LEN + TIMESTAMP_LEN + SIGNATURE_LEN;

/// How far a token's timestamp may be from the verifier's clock by default.
pub const DEFAULT_TOKEN_WINDOW: Duration = Duration::from_secs(300);

/// Why a token was refused. Messages never include the token.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// Not base64url without padding.
    #[error("the token is not base64url (without padding)")]
    NotBase64,
    /// Decoded to the wrong number of bytes.
    #[error("the token is {0} bytes long; a token is {TOKEN_BYTES}")]
    WrongLength(usize),
    /// Its key is not one we know.
    #[error("the token's key is not authorized")]
    UnknownKey,
    /// Its timestamp is outside the accepted window.
    #[error(
        "the token's time is {skew_secs} s away from ours; tokens are accepted within {window_secs} s"
    )]
    OutsideWindow {
        /// How far off the timestamp is.
        skew_secs: u64,
        /// The accepted distance.
        window_secs: u64,
    },
    /// The signature does not verify.
    #[error("the token's signature is not valid")]
    BadSignature,
    /// Tokens are made with Ed25519 keys only.
    #[error("tokens need an Ed25519 key")]
    NotEd25519,
    /// This token was accepted before: each is good for one use.
    #[error("the token was already used; make a fresh one (`alknet token`)")]
    Replayed,
    /// So many tokens were accepted within one window that no more can be
    /// remembered; new ones are refused until old ones expire.
    #[error("too many tokens in use right now; retry in a few minutes")]
    TooManyTokens,
}

/// The most accepted tokens remembered at once (64 bytes each): a bound on
/// memory that only keys in the authorized set can fill.
const MAX_REMEMBERED_TOKENS: usize = 1 << 20;

/// Tokens already accepted, by signature, until their window closes.
/// Cheap to clone; clones share, so every verifier built over one cache
/// refuses the others' tokens too.
#[derive(Clone, Debug, Default)]
pub struct TokenReplayCache {
    seen: Arc<Mutex<SeenTokens>>,
}

#[derive(Debug, Default)]
struct SeenTokens {
    /// Signature → the Unix second after which the token is stale anyway.
    expires: HashMap<[u8; SIGNATURE_LEN], u64>,
    /// Prune when the map grows past this.
    prune_at: usize,
}

impl TokenReplayCache {
    /// Records `signature` until `expires`; refuses one already recorded.
    fn accept(
        &self,
        signature: [u8; SIGNATURE_LEN],
        expires: u64,
        now: u64,
    ) -> Result<(), TokenError> {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        if seen.expires.len() >= seen.prune_at {
            seen.expires.retain(|_, expiry| *expiry >= now);
            seen.prune_at = (seen.expires.len() * 2).max(1024);
        }
        if seen
            .expires
            .get(&signature)
            .is_some_and(|expiry| *expiry >= now)
        {
            return Err(TokenError::Replayed);
        }
        if seen.expires.len() >= MAX_REMEMBERED_TOKENS {
            return Err(TokenError::TooManyTokens);
        }
        seen.expires.insert(signature, expires);
        Ok(())
    }
}

/// Seconds since the Unix epoch by the system clock (0 for a clock set
/// before 1970): the `now` that logins and token checks take.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

/// The token key id of an Ed25519 public key.
pub fn token_key_id(key: &PublicKey) -> Option<[u8; KEY_ID_LEN]> {
    let raw = key.key_data().ed25519()?;
    Some(Sha256::digest(raw.0).into())
}

/// Makes a token for `key` at `unix_time`.
pub fn mint_token(key: &PrivateKey, unix_time: u64) -> Result<String, TokenError> {
    let key_id = token_key_id(key.public_key()).ok_or(TokenError::NotEd25519)?;
    let mut bytes = Vec::with_capacity(TOKEN_BYTES);
    bytes.extend_from_slice(&key_id);
    bytes.extend_from_slice(&unix_time.to_be_bytes());
    let signature: Signature = key.try_sign(&bytes).map_err(|_| TokenError::NotEd25519)?;
    bytes.extend_from_slice(signature.as_bytes());
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// Which keys a server checks tokens against.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub enum TokenKeySource {
    /// The same authorized keys as SSH logins.
    #[default]
    Shared,
    /// A separate set, for tokens only.
    Separate(AuthorizedKeys),
}

impl TokenKeySource {
    /// A verifier over this source, given the SSH authorized keys.
    pub fn verifier(&self, ssh_keys: &AuthorizedKeys) -> TokenVerifier {
        let keys = match self {
            TokenKeySource::Shared => ssh_keys,
            TokenKeySource::Separate(keys) => keys,
        };
        TokenVerifier::new(keys.iter().map(|entry| entry.public_key().clone()))
    }
}

/// Checks tokens against a set of Ed25519 keys, accepting each once.
#[derive(Clone)]
pub struct TokenVerifier {
    keys: Vec<([u8; KEY_ID_LEN], PublicKey)>,
    window: Duration,
    replays: TokenReplayCache,
}

impl fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenVerifier")
            .field("keys", &self.keys.len())
            .field("window", &self.window)
            .finish()
    }
}

impl TokenVerifier {
    /// A verifier accepting tokens of these keys (non-Ed25519 keys are
    /// ignored), within [`DEFAULT_TOKEN_WINDOW`].
    pub fn new(keys: impl IntoIterator<Item = PublicKey>) -> Self {
        Self {
            keys: keys
                .into_iter()
                .filter_map(|key| Some((token_key_id(&key)?, key)))
                .collect(),
            window: DEFAULT_TOKEN_WINDOW,
            replays: TokenReplayCache::default(),
        }
    }

    /// Shares `cache` with other verifiers (a verifier rebuilt on every
    /// reload must still refuse tokens its predecessor accepted).
    pub fn with_replay_cache(mut self, cache: TokenReplayCache) -> Self {
        self.replays = cache;
        self
    }

    /// Sets how far a timestamp may be from `now`, either way.
    pub fn with_window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// Checks `token` at `now` (Unix seconds); returns the key it proves.
    /// A token is accepted once.
    pub fn verify(&self, token: &str, now: u64) -> Result<&PublicKey, TokenError> {
        let bytes = URL_SAFE_NO_PAD
            .decode(token.trim())
            .map_err(|_| TokenError::NotBase64)?;
        if bytes.len() != TOKEN_BYTES {
            return Err(TokenError::WrongLength(bytes.len()));
        }
        let (signed, signature) = bytes.split_at(KEY_ID_LEN + TIMESTAMP_LEN);
        let (key_id, timestamp) = signed.split_at(KEY_ID_LEN);
        let key = self
            .keys
            .iter()
            .find(|(id, _)| id.as_slice() == key_id)
            .map(|(_, key)| key)
            .ok_or(TokenError::UnknownKey)?;
        let mut stamp = [0u8; TIMESTAMP_LEN];
        stamp.copy_from_slice(timestamp);
        let stamped = u64::from_be_bytes(stamp);
        let skew_secs = stamped.abs_diff(now);
        if skew_secs > self.window.as_secs() {
            return Err(TokenError::OutsideWindow {
                skew_secs,
                window_secs: self.window.as_secs(),
            });
        }
        let signature = Signature::new(Algorithm::Ed25519, signature.to_vec())
            .map_err(|_| TokenError::BadSignature)?;
        Verifier::verify(key, signed, &signature).map_err(|_| TokenError::BadSignature)?;
        let mut seen = [0u8; SIGNATURE_LEN];
        seen.copy_from_slice(signature.as_bytes());
        let stale_after = stamped.saturating_add(self.window.as_secs());
        self.replays.accept(seen, stale_after, now)?;
        Ok(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generate_ed25519;

    const NOW: u64 = 1_700_000_000;

    #[test]
    fn round_trip_and_every_rejection() {
        let key = generate_ed25519("token").unwrap();
        let other = generate_ed25519("other").unwrap();
        let verifier = TokenVerifier::new([key.public_key().clone()]);
        let token = mint_token(&key, NOW).unwrap();
        assert_eq!(token.len(), 139);
        assert_eq!(
            verifier.verify(&token, NOW + 299).unwrap(),
            key.public_key()
        );
        let early = mint_token(&key, NOW + 300).unwrap();
        assert_eq!(verifier.verify(&early, NOW).unwrap(), key.public_key());

        assert!(matches!(
            verifier.verify(&token, NOW + 301),
            Err(TokenError::OutsideWindow { skew_secs: 301, .. })
        ));
        let short =
            TokenVerifier::new([key.public_key().clone()]).with_window(Duration::from_secs(10));
        assert!(matches!(
            short.verify(&token, NOW + 11),
            Err(TokenError::OutsideWindow { .. })
        ));
        assert_eq!(
            verifier.verify(&mint_token(&other, NOW).unwrap(), NOW),
            Err(TokenError::UnknownKey)
        );
        assert_eq!(
            verifier.verify("not base64!", NOW),
            Err(TokenError::NotBase64)
        );
        assert_eq!(
            verifier.verify(&format!("{token}="), NOW),
            Err(TokenError::NotBase64)
        );
        assert_eq!(
            verifier.verify(&token[..100], NOW),
            Err(TokenError::WrongLength(75))
        );
        assert_eq!(verifier.verify("", NOW), Err(TokenError::WrongLength(0)));

        // Any flipped bit in the timestamp or signature is caught.
        let bytes = URL_SAFE_NO_PAD.decode(&token).unwrap();
        for index in [KEY_ID_LEN, KEY_ID_LEN + 7, KEY_ID_LEN + 8, TOKEN_BYTES - 1] {
            let mut tampered = bytes.clone();
            tampered[index] ^= 0x01;
            let result = verifier.verify(&URL_SAFE_NO_PAD.encode(&tampered), NOW);
            assert!(
                matches!(
                    result,
                    Err(TokenError::BadSignature | TokenError::OutsideWindow { .. })
                ),
                "byte {index}: {result:?}"
            );
        }
    }

    #[test]
    fn each_token_is_accepted_once_even_across_verifiers_sharing_a_cache() {
        let key = generate_ed25519("token").unwrap();
        let cache = TokenReplayCache::default();
        let verifier =
            TokenVerifier::new([key.public_key().clone()]).with_replay_cache(cache.clone());
        let token = mint_token(&key, NOW).unwrap();
        assert!(verifier.verify(&token, NOW).is_ok());
        assert_eq!(verifier.verify(&token, NOW + 1), Err(TokenError::Replayed));
        let rebuilt = TokenVerifier::new([key.public_key().clone()]).with_replay_cache(cache);
        assert_eq!(rebuilt.verify(&token, NOW + 2), Err(TokenError::Replayed));
        // A fresh token from the same key in the same second is fine.
        let other = mint_token(&key, NOW + 1).unwrap();
        assert!(rebuilt.verify(&other, NOW + 2).is_ok());
        // Past its window a replay is refused as stale, not remembered forever.
        assert!(matches!(
            rebuilt.verify(&token, NOW + 301),
            Err(TokenError::OutsideWindow { .. })
        ));
    }

    #[test]
    fn random_input_never_panics() {
        let key = generate_ed25519("token").unwrap();
        let verifier = TokenVerifier::new([key.public_key().clone()]);
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for length in 0..300 {
            let text: String = (0..length)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    const ALPHABET: &[u8] = b"ABCxyz019-_=+/ !\n\xff";
                    char::from(ALPHABET[(state % ALPHABET.len() as u64) as usize])
                })
                .collect();
            let _ = verifier.verify(&text, NOW);
        }
    }

    #[test]
    fn the_key_id_is_sha256_of_the_raw_public_key() {
        let key = generate_ed25519("token").unwrap();
        let raw = key.public_key().key_data().ed25519().unwrap().0;
        assert_eq!(
            token_key_id(key.public_key()).unwrap(),
            <[u8; 32]>::from(Sha256::digest(raw))
        );
    }
}
