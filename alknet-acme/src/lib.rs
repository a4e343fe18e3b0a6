//! Certificates from ACME for alknet's TLS listeners, with no certbot:
//! domain names and bare IP addresses (RFC 8738, short-lived profile when
//! offered), TLS-ALPN-01 answered by the listener itself or HTTP-01 on a
//! port of its own, an on-disk cache, and renewal forever.
//!
//! [`AcmeCertificates::start`] loads the cache and starts a background
//! task; its [`AcmeResolver`] goes into a rustls `ServerConfig`. A renewed
//! certificate is served to new handshakes at once; open connections keep
//! theirs. Failures are logged and retried with backoff (capped at an
//! hour) while the current certificate stays in service. This crate knows
//! nothing of SSH.
//!
//! ```no_run
//! use alknet_acme::{AcmeCertificates, AcmeConfig, AcmeIdentifier};
//!
//! # async fn run() -> Result<(), alknet_acme::AcmeError> {
//! let names = vec![AcmeIdentifier::dns("tunnel.example.com")?];
//! let certificates = AcmeCertificates::start(AcmeConfig::new(names, "/var/lib/alknet/acme")).await?;
//! let tls = rustls::ServerConfig::builder()
//!     .with_no_client_auth()
//!     .with_cert_resolver(certificates.resolver());
//! let first = certificates.wait_for_change(None).await;
//! println!("serving {} until {:?}", first.names.join(", "), first.not_after);
//! # drop(tls);
//! # Ok(())
//! # }
//! ```

mod cache;
mod config;
mod error;
mod http01;
mod manager;
mod resolver;
mod schedule;

pub use config::{AcmeConfig, AcmeIdentifier, Challenge, LETS_ENCRYPT, LETS_ENCRYPT_STAGING};
pub use error::AcmeError;
pub use manager::{AcmeCertificates, CertificateInfo};
pub use resolver::{ACME_TLS_ALPN, AcmeResolver};
pub use schedule::{
    ARI_RECHECK_MAX, ARI_RECHECK_MIN, FIRST_BACKOFF, MAX_BACKOFF, ari_recheck, ari_renewal_time,
    backoff, choose_profile, next_step, renewal_time,
};
