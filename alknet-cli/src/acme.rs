//! `alknet serve`'s ACME flags (and the `[acme]` table of `--config`),
//! checked and turned into the library's [`AcmeConfig`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use alknet::acme::{AcmeConfig, AcmeIdentifier, Challenge, LETS_ENCRYPT, LETS_ENCRYPT_STAGING};
use clap::Args;
use serde::Deserialize;

use crate::error::CliError;

/// Certificates from ACME for tls:// listeners.
#[derive(Args, Debug, Default)]
pub(crate) struct AcmeArgs {
    /// Get the TLS listeners' certificate from ACME for this domain name.
    /// Repeatable; one certificate covers every name and address.
    #[arg(long, value_name = "NAME")]
    pub(crate) acme_domain: Vec<String>,

    /// Get the TLS listeners' certificate from ACME for this IP address
    /// (short-lived certificates, RFC 8738). Repeatable.
    #[arg(long, value_name = "ADDR")]
    pub(crate) acme_ip: Vec<String>,

    /// The ACME directory URL. [default: Let's Encrypt production]
    #[arg(long, value_name = "URL")]
    pub(crate) acme_directory: Option<String>,

    /// Use Let's Encrypt's staging directory (untrusted certificates, for trials).
    #[arg(long)]
    pub(crate) acme_staging: bool,

    /// Trust this CA (PEM) for the ACME server itself, such as a private
    /// ACME server's.
    #[arg(long, value_name = "PEM")]
    pub(crate) acme_ca: Option<PathBuf>,

    /// Where the ACME account, certificate and key are kept (created 0700).
    /// [default: acme/ beside the host key]
    #[arg(long, value_name = "DIR")]
    pub(crate) acme_cache: Option<PathBuf>,

    /// Contact address for the ACME account.
    #[arg(long, value_name = "ADDRESS")]
    pub(crate) acme_email: Option<String>,

    /// Answer HTTP-01 challenges on this address (port 80 for public CAs)
    /// instead of TLS-ALPN-01 on the TLS listener.
    #[arg(long, value_name = "ADDR")]
    pub(crate) acme_http01: Option<SocketAddr>,

    /// Order this ACME profile. [default: shortlived for IP certificates
    /// when the server offers it, else none]
    #[arg(long, value_name = "NAME")]
    pub(crate) acme_profile: Option<String>,
}

/// The `[acme]` table of a config file: the flags' names without `acme_`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AcmeTable {
    domain: Option<Vec<String>>,
    ip: Option<Vec<String>>,
    directory: Option<String>,
    staging: Option<bool>,
    ca: Option<PathBuf>,
    cache: Option<PathBuf>,
    email: Option<String>,
    http01: Option<SocketAddr>,
    profile: Option<String>,
}

impl AcmeArgs {
    /// The ACME configuration, if any name or address asks for one. `base`
    /// is the config file's directory, `key` the host key (the cache's
    /// default home).
    pub(crate) fn resolve(
        self,
        table: Option<AcmeTable>,
        base: &Path,
        key: &Path,
    ) -> Result<Option<AcmeConfig>, CliError> {
        let table = table.unwrap_or_default();
        let usage = |message: String| CliError::Usage(message);
        let domains = if self.acme_domain.is_empty() {
            table.domain.unwrap_or_default()
        } else {
            self.acme_domain
        };
        let ips = if self.acme_ip.is_empty() {
            table.ip.unwrap_or_default()
        } else {
            self.acme_ip
        };
        let mut identifiers = Vec::new();
        for name in &domains {
            identifiers.push(
                AcmeIdentifier::dns(name)
                    .map_err(|error| usage(format!("--acme-domain: {error}")))?,
            );
        }
        for ip in &ips {
            identifiers.push(
                AcmeIdentifier::ip(ip).map_err(|error| usage(format!("--acme-ip: {error}")))?,
            );
        }
        let staging = self.acme_staging || table.staging.unwrap_or(false);
        let directory = self.acme_directory.or(table.directory);
        let other_settings = staging
            || directory.is_some()
            || self.acme_ca.is_some()
            || table.ca.is_some()
            || self.acme_cache.is_some()
            || table.cache.is_some()
            || self.acme_http01.is_some()
            || table.http01.is_some()
            || self.acme_profile.is_some()
            || table.profile.is_some();
        if identifiers.is_empty() {
            if other_settings {
                return Err(usage(
                    "ACME settings without a name: add --acme-domain NAME or --acme-ip ADDR".into(),
                ));
            }
            return Ok(None);
        }
        let directory = match (directory, staging) {
            (Some(_), true) => {
                return Err(usage(
                    "--acme-staging and --acme-directory exclude each other".into(),
                ));
            }
            (Some(url), false) => url,
            (None, true) => LETS_ENCRYPT_STAGING.to_owned(),
            (None, false) => LETS_ENCRYPT.to_owned(),
        };
        let cache = self
            .acme_cache
            .or_else(|| table.cache.map(|dir| base.join(dir)))
            .unwrap_or_else(|| key.parent().unwrap_or(Path::new(".")).join("acme"));
        let mut config = AcmeConfig::new(identifiers, cache);
        config.directory = directory;
        config.directory_ca = self.acme_ca.or_else(|| table.ca.map(|ca| base.join(ca)));
        config.email = self.acme_email.or(table.email);
        config.profile = self.acme_profile.or(table.profile);
        if let Some(addr) = self.acme_http01.or(table.http01) {
            config.challenge = Challenge::Http01(addr);
        }
        config.check().map_err(|error| usage(error.to_string()))?;
        Ok(Some(config))
    }
}
