//! Logging in: from a verified key or certificate, the login name and the
//! client's address, to a [`SessionGrant`] — or the reason not.
//!
//! Plain keys log in through an `authorized_keys` line (its `from=`,
//! `expiry-time=` and forwarding options apply). Certificates log in when
//! signed by a CA trusted with `--cert-authority` (the login name must be
//! one of their principals, as sshd's `TrustedUserCAKeys`) or by a CA on a
//! `cert-authority` line (its `principals=` names, else the login name,
//! must be among the certificate's; the line's options apply). Revoked
//! keys, certificates and CAs never log in.
//!
//! Which principals forwarding rules see: a certificate's principals; for a
//! plain key, the `principals=` word of its line's comment — never the
//! login name, which the client chooses.
//!
//! The caller has verified the signature (russh does); this decides
//! everything else. No I/O: the time and the address are parameters.

use std::borrow::Cow;
use std::fmt;
use std::net::IpAddr;

use ssh_key::{Certificate, HashAlg, PublicKey};

use crate::certificate::{permits_forwarding, require_principal, verify_user_certificate};
use crate::key_options::KeyOptions;
use crate::{AuthConfig, CertificateRejection, SessionGrant, identity_of, identity_of_certificate};

/// The longest login name accepted, in bytes. A name is only a label to
/// alknet; the cap keeps hostile ones out of memory and logs.
pub const MAX_USER_NAME_BYTES: usize = 256;

/// How much of a login name the log shows.
const LOGGED_USER_CHARS: usize = 64;

/// Why a login was refused. Says nothing a client could not know already.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LoginRefusal {
    /// The login name is longer than [`MAX_USER_NAME_BYTES`].
    UserNameTooLong,
    /// The key is not in authorized_keys.
    UnknownKey,
    /// The key is revoked (`--revoked-keys`).
    Revoked,
    /// The line's `from=` does not include the client's address.
    SourceNotAllowed,
    /// The line's `expiry-time=` has passed.
    Expired,
    /// The certificate is not acceptable.
    Certificate(CertificateRejection),
}

impl fmt::Display for LoginRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoginRefusal::UserNameTooLong => write!(
                f,
                "the user name is longer than {MAX_USER_NAME_BYTES} bytes"
            ),
            LoginRefusal::UnknownKey => f.write_str("the key is not authorized"),
            LoginRefusal::Revoked => f.write_str("the key is revoked"),
            LoginRefusal::SourceNotAllowed => {
                f.write_str("from= on the key's line does not include this client")
            }
            LoginRefusal::Expired => f.write_str("expiry-time on the key's line has passed"),
            LoginRefusal::Certificate(rejection) => write!(f, "certificate: {rejection}"),
        }
    }
}

/// A login name as it may be logged: at most 64 characters, longer ones
/// cut with their length noted. (Quoting and escaping is the logger's.)
pub fn user_for_log(user: &str) -> Cow<'_, str> {
    match user.char_indices().nth(LOGGED_USER_CHARS) {
        None => Cow::Borrowed(user),
        Some((cut, _)) => Cow::Owned(format!("{}…({} bytes)", &user[..cut], user.len())),
    }
}

impl AuthConfig {
    /// Whether to let a client prove it holds `key` (before it signs): a
    /// login key that is not revoked — or any key while certificates can
    /// log in, since the key may be a certificate's.
    pub fn may_offer(&self, key: &PublicKey) -> bool {
        let known = self.authorized_keys.contains(key) && !self.revoked_keys.is_key_revoked(key);
        known || self.accepts_certificates()
    }

    /// Whether any CA can sign a certificate that logs in.
    pub fn accepts_certificates(&self) -> bool {
        !self.cert_authorities.is_empty() || self.authorized_keys.has_authorities()
    }

    /// Logs `user` in with a plain key the client proved it holds, from
    /// `peer` (none over iroh) at `now` (Unix seconds).
    pub fn login_with_key(
        &self,
        user: &str,
        key: &PublicKey,
        peer: Option<IpAddr>,
        now: u64,
    ) -> Result<SessionGrant, LoginRefusal> {
        if user.len() > MAX_USER_NAME_BYTES {
            return Err(LoginRefusal::UserNameTooLong);
        }
        let entry = self
            .authorized_keys
            .find(key)
            .ok_or(LoginRefusal::UnknownKey)?;
        if self.revoked_keys.is_key_revoked(key) {
            return Err(LoginRefusal::Revoked);
        }
        check_line(entry.options(), peer, now)?;
        let grant = SessionGrant::new(identity_of(entry)).with_principals(entry.principals());
        Ok(restrict(grant, entry.options(), true))
    }

    /// Logs `user` in with a certificate whose key the client proved it
    /// holds, from `peer` at `now`.
    pub fn login_with_certificate(
        &self,
        user: &str,
        certificate: &Certificate,
        peer: Option<IpAddr>,
        now: u64,
    ) -> Result<SessionGrant, LoginRefusal> {
        if user.len() > MAX_USER_NAME_BYTES {
            return Err(LoginRefusal::UserNameTooLong);
        }
        if self.revoked_keys.is_certificate_revoked(certificate) {
            return Err(LoginRefusal::Certificate(CertificateRejection::Revoked));
        }
        let rejected = LoginRefusal::Certificate;
        let ca_key = PublicKey::from(certificate.signature_key().clone());
        let ca = ca_key.fingerprint(HashAlg::Sha256);
        let principals = certificate.valid_principals().to_vec();
        let identity = identity_of_certificate(certificate);
        let forwarding = permits_forwarding(certificate);
        if self.cert_authorities.trusts(&ca) {
            verify_user_certificate(certificate, &ca, peer, now).map_err(rejected)?;
            require_principal(certificate, user).map_err(rejected)?;
            let grant = SessionGrant::new(identity).with_principals(principals);
            return Ok(if forwarding {
                grant
            } else {
                grant.without_forwarding()
            });
        }
        let Some(line) = self.authorized_keys.authority(&ca_key) else {
            return Err(rejected(CertificateRejection::UntrustedAuthority));
        };
        verify_user_certificate(certificate, &ca, peer, now).map_err(rejected)?;
        match &line.options().principals {
            Some(allowed) => {
                if !principals
                    .iter()
                    .any(|principal| allowed.contains(principal))
                {
                    return Err(rejected(CertificateRejection::WrongPrincipal));
                }
            }
            None => require_principal(certificate, user).map_err(rejected)?,
        }
        check_line(line.options(), peer, now)?;
        let grant = SessionGrant::new(identity).with_principals(principals);
        Ok(restrict(grant, line.options(), forwarding))
    }
}

/// `from=` and `expiry-time=` of an authorized_keys line.
fn check_line(options: &KeyOptions, peer: Option<IpAddr>, now: u64) -> Result<(), LoginRefusal> {
    if let Some(from) = &options.from
        && !from.allows(peer)
    {
        return Err(LoginRefusal::SourceNotAllowed);
    }
    if options.expires_at.is_some_and(|expiry| now >= expiry) {
        return Err(LoginRefusal::Expired);
    }
    Ok(())
}

/// What the line's options (and, for a certificate, its extensions) leave
/// of forwarding.
fn restrict(grant: SessionGrant, options: &KeyOptions, forwarding: bool) -> SessionGrant {
    let grant = grant.restricted_to(options.permit_open.clone(), options.permit_listen.clone());
    if forwarding && options.port_forwarding {
        grant
    } else {
        grant.without_forwarding()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AuthorizedKeys, generate_ed25519};

    const NOW: u64 = 1_900_000_000;

    fn config_with(line: &str) -> AuthConfig {
        AuthConfig::new(AuthorizedKeys::parse(line).unwrap())
    }

    fn local() -> Option<IpAddr> {
        Some("127.0.0.1".parse().unwrap())
    }

    #[test]
    fn from_and_expiry_time_are_honoured() {
        let key = generate_ed25519("").unwrap();
        let text = key.public_key().to_openssh().unwrap();
        let config = config_with(&format!("from=\"10.0.0.0/8\" {text}"));
        assert_eq!(
            config.login_with_key("me", key.public_key(), local(), NOW),
            Err(LoginRefusal::SourceNotAllowed)
        );
        assert!(
            config
                .login_with_key(
                    "me",
                    key.public_key(),
                    Some("10.1.1.1".parse().unwrap()),
                    NOW
                )
                .is_ok()
        );
        let config = config_with(&format!("expiry-time=\"20300101Z\" {text}"));
        assert_eq!(
            config.login_with_key("me", key.public_key(), local(), NOW),
            Err(LoginRefusal::Expired)
        );
        assert!(
            config
                .login_with_key("me", key.public_key(), local(), 1_800_000_000)
                .is_ok()
        );
    }

    #[test]
    fn principals_come_from_the_line_never_the_login_name() {
        let key = generate_ed25519("").unwrap();
        let text = key.public_key().to_openssh().unwrap();
        let plain = config_with(&text);
        let grant = plain
            .login_with_key("admin", key.public_key(), local(), NOW)
            .unwrap();
        assert!(
            grant.principals().is_empty(),
            "the typed name is not a principal"
        );
        let named = config_with(&format!("{text} alice principals=admin"));
        let grant = named
            .login_with_key("bob", key.public_key(), local(), NOW)
            .unwrap();
        assert_eq!(grant.principals(), ["admin".to_owned()]);
    }

    #[test]
    fn restrict_removes_forwarding_and_revoked_keys_stay_out() {
        let key = generate_ed25519("").unwrap();
        let text = key.public_key().to_openssh().unwrap();
        let config = config_with(&format!("restrict {text}"));
        let grant = config
            .login_with_key("me", key.public_key(), local(), NOW)
            .unwrap();
        assert!(!grant.may_forward());

        let mut revoked = config_with(&text);
        revoked.revoked_keys.revoke_key(key.public_key());
        assert!(!revoked.may_offer(key.public_key()));
        assert_eq!(
            revoked.login_with_key("me", key.public_key(), local(), NOW),
            Err(LoginRefusal::Revoked)
        );
    }

    #[test]
    fn long_user_names_are_refused_and_cut_for_logs() {
        let key = generate_ed25519("").unwrap();
        let config = config_with(&key.public_key().to_openssh().unwrap());
        let long = "x".repeat(100_000);
        assert_eq!(
            config.login_with_key(&long, key.public_key(), local(), NOW),
            Err(LoginRefusal::UserNameTooLong)
        );
        let logged = user_for_log(&long);
        assert!(logged.len() < 100, "{logged}");
        assert!(logged.contains("100000 bytes"));
        assert_eq!(user_for_log("alice"), "alice");
        assert_eq!(
            user_for_log(&"é".repeat(70)).chars().count(),
            64 + "…(140 bytes)".chars().count()
        );
    }
}
