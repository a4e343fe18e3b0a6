//! The authentication callbacks: each asks alknet-auth whether the key or
//! certificate logs in ([`AuthConfig::login_with_key`](alknet_auth::AuthConfig::login_with_key)),
//! keeps the resulting grant, and writes the fail2ban line (SPEC §2).

use std::sync::Arc;

use alknet_auth::{
    Certificate, LoginRefusal, MAX_USER_NAME_BYTES, PublicKey, SessionGrant, fingerprint, unix_now,
    user_for_log,
};
use russh::server::Auth;
use russh::{MethodKind, MethodSet};
use tracing::{debug, info};

use super::handler::SessionHandler;

/// Another key may be tried.
pub(super) fn reject() -> Auth {
    Auth::Reject {
        proceed_with_methods: Some(MethodSet::from(&[MethodKind::PublicKey][..])),
        partial_success: false,
    }
}

impl SessionHandler {
    /// The fail2ban line. `user` is client-chosen text: logged quoted,
    /// escaped and cut to a bounded length.
    fn log_attempt(&self, user: &str, key: &PublicKey, accepted: bool) -> Auth {
        info!(
            remote_addr = %self.peer,
            user = ?user_for_log(user),
            key_fingerprint = %fingerprint(key),
            result = %if accepted { "accept" } else { "reject" },
            "auth attempt"
        );
        if accepted { Auth::Accept } else { reject() }
    }

    /// Before the client signs: unknown keys are refused (and logged) here;
    /// known ones are logged once verified. While certificates can log in,
    /// the key may be a certificate's (russh does not say which), so the
    /// decision waits for the signature.
    pub(super) fn key_offered(&self, user: &str, key: &PublicKey) -> Auth {
        if user.len() > MAX_USER_NAME_BYTES {
            return self.log_attempt(user, key, false);
        }
        if self.auth.may_offer(key) {
            Auth::Accept
        } else {
            self.log_attempt(user, key, false)
        }
    }

    /// A plain key, signature verified.
    pub(super) fn login_with_key(&mut self, user: &str, key: &PublicKey) -> Auth {
        let login = self
            .auth
            .login_with_key(user, key, self.peer.addr.map(|a| a.ip()), unix_now());
        self.conclude(user, key, login)
    }

    /// A certificate, signature verified against the key it certifies.
    pub(super) fn login_with_certificate(&mut self, user: &str, certificate: &Certificate) -> Auth {
        let key = PublicKey::new(certificate.public_key().clone(), "");
        let login = self.auth.login_with_certificate(
            user,
            certificate,
            self.peer.addr.map(|a| a.ip()),
            unix_now(),
        );
        self.conclude(user, &key, login)
    }

    fn conclude(
        &mut self,
        user: &str,
        key: &PublicKey,
        login: Result<SessionGrant, LoginRefusal>,
    ) -> Auth {
        match login {
            Ok(grant) => {
                self.grant = Some(Arc::new(grant));
                self.log_attempt(user, key, true)
            }
            Err(refusal) => {
                debug!(remote_addr = %self.peer, reason = %refusal, "login refused");
                self.log_attempt(user, key, false)
            }
        }
    }
}
