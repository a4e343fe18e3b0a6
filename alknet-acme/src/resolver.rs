//! The rustls certificate resolver TLS listeners use: the current
//! certificate for everyone, and during TLS-ALPN-01 the challenge
//! certificate for handshakes that offer `acme-tls/1`.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::AcmeError;

/// The ALPN protocol of TLS-ALPN-01 validation handshakes (RFC 8737).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// Serves the current certificate, or a challenge certificate to an ACME
/// validator. Until a first certificate exists, other handshakes are
/// refused.
#[derive(Default)]
pub struct AcmeResolver {
    current: RwLock<Option<Arc<CertifiedKey>>>,
    /// Challenge certificates by the server name the validator sends.
    challenges: RwLock<HashMap<String, Arc<CertifiedKey>>>,
}

impl fmt::Debug for AcmeResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AcmeResolver")
            .field("has_certificate", &self.has_certificate())
            .finish_non_exhaustive()
    }
}

impl AcmeResolver {
    /// Whether a certificate is there to serve.
    pub fn has_certificate(&self) -> bool {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
    }

    /// The leaf certificate served now.
    pub(crate) fn current_leaf(&self) -> Option<CertificateDer<'static>> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .and_then(|key| key.cert.first().cloned())
    }

    pub(crate) fn set_current(&self, key: Arc<CertifiedKey>) {
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Some(key);
    }

    pub(crate) fn add_challenge(&self, server_name: String, key: Arc<CertifiedKey>) {
        self.challenges
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(server_name, key);
    }

    pub(crate) fn clear_challenges(&self) {
        self.challenges
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }
}

impl ResolvesServerCert for AcmeResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let validating = hello
            .alpn()
            .is_some_and(|mut offered| offered.any(|protocol| protocol == ACME_TLS_ALPN));
        if !validating {
            return self
                .current
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
        }
        let challenges = self
            .challenges
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        match hello.server_name() {
            Some(name) => challenges.get(&name.to_ascii_lowercase()).cloned(),
            // Without a name only an unambiguous challenge is answered.
            None if challenges.len() == 1 => challenges.values().next().cloned(),
            None => None,
        }
    }
}

/// A rustls signing key and chain from PEM.
pub(crate) fn certified_key(chain_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey, AcmeError> {
    let chain = CertificateDer::pem_slice_iter(chain_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| AcmeError::Certificate(format!("certificate chain: {error:?}")))?;
    if chain.is_empty() {
        return Err(AcmeError::Certificate("no certificate in the chain".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|error| AcmeError::Certificate(format!("private key: {error:?}")))?;
    certified_key_der(chain, &key)
}

pub(crate) fn certified_key_der(
    chain: Vec<CertificateDer<'static>>,
    key: &PrivateKeyDer<'_>,
) -> Result<CertifiedKey, AcmeError> {
    let signing = rustls::crypto::aws_lc_rs::default_provider()
        .key_provider
        .load_private_key(key.clone_key())
        .map_err(|error| AcmeError::Certificate(format!("private key: {error}")))?;
    Ok(CertifiedKey::new(chain, signing))
}
