//! What to ask an ACME server for, checked before anything is sent.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use crate::AcmeError;

/// Let's Encrypt's production directory, the default.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";
/// Let's Encrypt's staging directory (`--acme-staging`).
pub const LETS_ENCRYPT_STAGING: &str = "https://acme-staging-v02.api.letsencrypt.org/directory";

/// One name a certificate is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AcmeIdentifier {
    /// A DNS name.
    Dns(String),
    /// A bare IP address (RFC 8738).
    Ip(IpAddr),
}

impl AcmeIdentifier {
    /// A DNS name, refusing what is an IP address (use [`AcmeIdentifier::ip`]).
    pub fn dns(name: &str) -> Result<Self, AcmeError> {
        let name = name.trim().trim_end_matches('.').to_ascii_lowercase();
        if name.parse::<IpAddr>().is_ok() || name.trim_matches(['[', ']']).parse::<IpAddr>().is_ok()
        {
            return Err(AcmeError::Config(format!(
                "{name} is an IP address, not a domain name: use --acme-ip"
            )));
        }
        let valid_label = |label: &str| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'*')
        };
        if name.is_empty() || name.len() > 253 || !name.split('.').all(valid_label) {
            return Err(AcmeError::Config(format!("{name:?} is not a domain name")));
        }
        Ok(Self::Dns(name))
    }

    /// An IP address, refusing anything else.
    pub fn ip(text: &str) -> Result<Self, AcmeError> {
        text.trim()
            .trim_matches(['[', ']'])
            .parse::<IpAddr>()
            .map(Self::Ip)
            .map_err(|_| {
                AcmeError::Config(format!(
                    "{text:?} is not an IP address (names go in --acme-domain)"
                ))
            })
    }

    /// The TLS server name a TLS-ALPN-01 validator sends for it: the name
    /// itself, or for an address its reverse-DNS name (RFC 8738).
    pub fn challenge_server_name(&self) -> String {
        match self {
            Self::Dns(name) => name.clone(),
            Self::Ip(IpAddr::V4(v4)) => {
                let [a, b, c, d] = v4.octets();
                format!("{d}.{c}.{b}.{a}.in-addr.arpa")
            }
            Self::Ip(IpAddr::V6(v6)) => {
                let mut name = String::new();
                for byte in v6.octets().iter().rev() {
                    name.push_str(&format!("{:x}.{:x}.", byte & 0xf, byte >> 4));
                }
                name + "ip6.arpa"
            }
        }
    }

    /// As the certificate's subject alternative name.
    pub fn san(&self) -> String {
        match self {
            Self::Dns(name) => name.clone(),
            Self::Ip(ip) => ip.to_string(),
        }
    }
}

/// How the ACME server checks that we hold the names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Challenge {
    /// TLS-ALPN-01, answered by the TLS listener itself.
    TlsAlpn01,
    /// HTTP-01, answered by a small HTTP server on this address.
    Http01(SocketAddr),
}

/// Everything the certificate manager needs.
#[derive(Clone, Debug)]
pub struct AcmeConfig {
    /// The names and addresses; one certificate covers them all.
    pub identifiers: Vec<AcmeIdentifier>,
    /// The ACME directory URL.
    pub directory: String,
    /// A PEM file of roots to trust for the ACME server itself (a private
    /// CA such as Pebble's); the system's are used without it.
    pub directory_ca: Option<PathBuf>,
    /// Account key, certificate and key, kept across restarts.
    pub cache_dir: PathBuf,
    /// Contact address for the account.
    pub email: Option<String>,
    /// TLS-ALPN-01 or HTTP-01.
    pub challenge: Challenge,
    /// An ACME profile to order; by default `shortlived` for IP
    /// certificates when the server offers it.
    pub profile: Option<String>,
}

impl AcmeConfig {
    /// A configuration with the defaults: Let's Encrypt, TLS-ALPN-01.
    pub fn new(identifiers: Vec<AcmeIdentifier>, cache_dir: impl Into<PathBuf>) -> Self {
        Self {
            identifiers,
            directory: LETS_ENCRYPT.to_owned(),
            directory_ca: None,
            cache_dir: cache_dir.into(),
            email: None,
            challenge: Challenge::TlsAlpn01,
            profile: None,
        }
    }

    /// Refuses settings that cannot work.
    pub fn check(&self) -> Result<(), AcmeError> {
        if self.identifiers.is_empty() {
            return Err(AcmeError::Config(
                "name at least one --acme-domain or --acme-ip".into(),
            ));
        }
        if !self.directory.starts_with("https://") {
            return Err(AcmeError::Config(format!(
                "the directory {} must be an https:// URL",
                self.directory
            )));
        }
        Ok(())
    }
}
