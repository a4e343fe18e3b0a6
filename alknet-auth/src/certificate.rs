//! OpenSSH user certificates and the authorities that sign them.
//!
//! russh checks a certificate's signature and validity window against the
//! CA key *embedded in the certificate* — which anyone can make. Everything
//! that makes a certificate trustworthy is checked here: the signing CA is
//! one we trust (by fingerprint), it is a user certificate, the login name
//! is among its principals, its critical options hold (an option or a
//! `source-address` entry alknet cannot read refuses it), and it is valid
//! now.

use std::fmt;
use std::net::IpAddr;

use ssh_key::certificate::CertType;
use ssh_key::{Certificate, Fingerprint, HashAlg, PublicKey};

use crate::{AuthError, Identity, KeySource};

/// Critical options alknet understands. `force-command` restricts shells,
/// which alknet never offers, so it cannot be violated.
const KNOWN_CRITICAL_OPTIONS: [&str; 2] = ["source-address", "force-command"];

/// The extension that allows any forwarding (every alknet channel is one).
const PERMIT_PORT_FORWARDING: &str = "permit-port-forwarding";

/// The certificate authorities whose user certificates are accepted.
#[derive(Clone, Debug, Default)]
pub struct CertificateAuthorities {
    fingerprints: Vec<Fingerprint>,
}

/// What an accepted certificate grants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateGrant {
    /// The certificate's key id (chosen by whoever signed it; for logs).
    pub key_id: String,
    /// Whether it carries `permit-port-forwarding`. Without it, the
    /// session may authenticate but open no channel.
    pub permit_port_forwarding: bool,
    /// Who the session is, for the call protocol's access checks (see
    /// [`identity_of_certificate`]).
    pub identity: Identity,
}

/// The certificate extension listing the holder's scopes, comma-separated
/// (`ssh-keygen -O extension:scopes@alknet=deploy,metrics`).
pub const SCOPES_EXTENSION: &str = "scopes@alknet";
/// The certificate extension listing the holder's resource grants
/// (`type:action`), comma-separated.
pub const RESOURCES_EXTENSION: &str = "resources@alknet";

/// The identity a certificate carries: its key id (or, when empty, the
/// certified key's fingerprint), and scopes and resources from the
/// [`SCOPES_EXTENSION`] and [`RESOURCES_EXTENSION`] extensions, which the
/// CA signed — so a holder cannot grant itself more.
pub fn identity_of_certificate(certificate: &Certificate) -> Identity {
    let list = |extension: &str| -> Vec<String> {
        certificate
            .extensions()
            .get(extension)
            .map(|items| {
                items
                    .split(',')
                    .map(str::trim)
                    .filter(|item| !item.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    };
    let id = if certificate.key_id().is_empty() {
        PublicKey::new(certificate.public_key().clone(), "")
            .fingerprint(HashAlg::Sha256)
            .to_string()
    } else {
        certificate.key_id().to_owned()
    };
    Identity {
        id,
        scopes: list(SCOPES_EXTENSION),
        resources: list(RESOURCES_EXTENSION),
    }
}

/// Why a certificate was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CertificateRejection {
    /// Not signed by a trusted CA, or the signature does not verify.
    UntrustedAuthority,
    /// A host certificate offered for user login.
    NotAUserCertificate,
    /// Outside its validity window.
    NotValidNow,
    /// The certificate lists no principals (sshd refuses these too).
    NoPrincipals,
    /// The login name is not among the principals.
    WrongPrincipal,
    /// `source-address` does not include the client's address.
    SourceAddress,
    /// A critical option alknet does not understand.
    UnknownCriticalOption(String),
    /// `source-address` holds an entry that is not an address or range.
    MalformedSourceAddress,
    /// The certificate, its key or its CA is revoked.
    Revoked,
}

impl fmt::Display for CertificateRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UntrustedAuthority => {
                f.write_str("not signed by a trusted certificate authority")
            }
            Self::NotAUserCertificate => f.write_str("not a user certificate"),
            Self::NotValidNow => f.write_str("expired or not yet valid"),
            Self::NoPrincipals => f.write_str("lists no principals"),
            Self::WrongPrincipal => f.write_str("the user name is not among its principals"),
            Self::SourceAddress => f.write_str("source-address does not allow this client"),
            Self::UnknownCriticalOption(name) => write!(f, "unknown critical option {name:?}"),
            Self::MalformedSourceAddress => {
                f.write_str("source-address holds something that is not an address or range")
            }
            Self::Revoked => f.write_str("revoked"),
        }
    }
}

impl CertificateAuthorities {
    /// Trusts the given CA public keys.
    pub fn from_keys(keys: impl IntoIterator<Item = PublicKey>) -> Self {
        Self {
            fingerprints: keys
                .into_iter()
                .map(|key| key.fingerprint(HashAlg::Sha256))
                .collect(),
        }
    }

    /// Adds the CA keys in an OpenSSH public-key file (one per line, `#`
    /// comments and blank lines ignored), as `TrustedUserCAKeys` reads.
    pub fn load(&mut self, source: impl Into<KeySource>) -> Result<(), AuthError> {
        let source = source.into();
        let text = source.read_text()?;
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let key =
                PublicKey::from_openssh(line).map_err(|error| AuthError::AuthorizedKeysLine {
                    source_name: source.name(),
                    line: index + 1,
                    reason: format!("not an OpenSSH CA public key: {error}"),
                })?;
            self.fingerprints.push(key.fingerprint(HashAlg::Sha256));
        }
        Ok(())
    }

    /// Whether no CA is trusted.
    pub fn is_empty(&self) -> bool {
        self.fingerprints.is_empty()
    }

    /// How many CAs are trusted.
    pub fn len(&self) -> usize {
        self.fingerprints.len()
    }

    /// Whether the CA key with this fingerprint is trusted.
    pub fn trusts(&self, ca: &Fingerprint) -> bool {
        self.fingerprints.contains(ca)
    }

    /// Decides whether `certificate` lets `user` log in from `peer` at
    /// `now` (Unix seconds), as `TrustedUserCAKeys` does: signed by a
    /// trusted CA, and `user` among its principals. The certificate's own
    /// signature is checked here too, so this does not rely on the caller
    /// having done it.
    pub fn check(
        &self,
        certificate: &Certificate,
        user: &str,
        peer: Option<IpAddr>,
        now: u64,
    ) -> Result<CertificateGrant, CertificateRejection> {
        let ca = certificate.signature_key().fingerprint(HashAlg::Sha256);
        if !self.trusts(&ca) {
            return Err(CertificateRejection::UntrustedAuthority);
        }
        verify_user_certificate(certificate, &ca, peer, now)?;
        require_principal(certificate, user)?;
        Ok(CertificateGrant {
            key_id: certificate.key_id().to_owned(),
            permit_port_forwarding: certificate
                .extensions()
                .contains_key(PERMIT_PORT_FORWARDING),
            identity: identity_of_certificate(certificate),
        })
    }
}

/// Whether the certificate grants forwarding (`permit-port-forwarding`).
pub(crate) fn permits_forwarding(certificate: &Certificate) -> bool {
    certificate
        .extensions()
        .contains_key(PERMIT_PORT_FORWARDING)
}

/// Everything but the principals: signed (and verifying) by `ca`, a user
/// certificate, valid at `now`, every critical option understood and
/// holding for `peer`.
pub(crate) fn verify_user_certificate(
    certificate: &Certificate,
    ca: &Fingerprint,
    peer: Option<IpAddr>,
    now: u64,
) -> Result<(), CertificateRejection> {
    if certificate.verify_signature().is_err() {
        return Err(CertificateRejection::UntrustedAuthority);
    }
    if certificate.cert_type() != CertType::User {
        return Err(CertificateRejection::NotAUserCertificate);
    }
    if certificate.validate_at(now, [ca]).is_err() {
        return Err(CertificateRejection::NotValidNow);
    }
    if certificate.valid_principals().is_empty() {
        return Err(CertificateRejection::NoPrincipals);
    }
    for (name, value) in certificate.critical_options().iter() {
        match name.as_str() {
            "source-address" => match source_address_allows(value, peer) {
                Some(true) => {}
                Some(false) => return Err(CertificateRejection::SourceAddress),
                None => return Err(CertificateRejection::MalformedSourceAddress),
            },
            known if KNOWN_CRITICAL_OPTIONS.contains(&known) => {}
            unknown => {
                return Err(CertificateRejection::UnknownCriticalOption(
                    unknown.to_owned(),
                ));
            }
        }
    }
    Ok(())
}

/// `user` must be one of the certificate's principals.
pub(crate) fn require_principal(
    certificate: &Certificate,
    user: &str,
) -> Result<(), CertificateRejection> {
    if certificate
        .valid_principals()
        .iter()
        .any(|principal| principal == user)
    {
        Ok(())
    } else {
        Err(CertificateRejection::WrongPrincipal)
    }
}

/// `source-address` is a comma-separated list of addresses and CIDR
/// ranges; a peer without an IP address (iroh, say) never matches. `None`
/// when an entry is neither: the certificate is then refused, as sshd
/// refuses it, rather than the entry skipped.
fn source_address_allows(list: &str, peer: Option<IpAddr>) -> Option<bool> {
    let mut allowed = false;
    for entry in list.split(',').map(str::trim) {
        let net: ipnet::IpNet = match entry.parse::<ipnet::IpNet>() {
            Ok(net) => net,
            Err(_) => entry.parse::<IpAddr>().ok()?.into(),
        };
        if let Some(peer) = peer {
            allowed |= net.contains(&crate::address::canonical(peer));
        }
    }
    Some(allowed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_address_lists() {
        let local = Some("127.0.0.1".parse().unwrap());
        assert_eq!(source_address_allows("127.0.0.1", local), Some(true));
        assert_eq!(
            source_address_allows("10.0.0.0/8, 127.0.0.0/8", local),
            Some(true)
        );
        assert_eq!(source_address_allows("10.0.0.0/8", local), Some(false));
        assert_eq!(
            source_address_allows("::1/128", Some("::1".parse().unwrap())),
            Some(true)
        );
        assert_eq!(
            source_address_allows("127.0.0.1/32", Some("::ffff:127.0.0.1".parse().unwrap())),
            Some(true)
        );
        assert_eq!(source_address_allows("127.0.0.1", None), Some(false));
    }

    #[test]
    fn a_malformed_source_address_refuses_rather_than_skips() {
        let local = Some("127.0.0.1".parse().unwrap());
        assert_eq!(source_address_allows("garbage", local), None);
        assert_eq!(source_address_allows("127.0.0.1,garbage", local), None);
        assert_eq!(source_address_allows("10.0.0.0/33", local), None);
    }
}
