//! The certificate manager: loads the cache, orders when needed, renews
//! forever, and never lets a failure take the listener down.

use std::sync::{Arc, PoisonError};
use std::time::{Duration, SystemTime};

use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, CertificateIdentifier, ChallengeType,
    Identifier, NewAccount, NewOrder, OrderStatus, RetryPolicy,
};
use rcgen::{CertificateParams, CustomExtension, KeyPair};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::sync::watch;

use crate::cache::Cache;
use crate::http01::{self, Tokens};
use crate::resolver::{certified_key, certified_key_der};
use crate::schedule::{
    ari_recheck, ari_renewal_time, backoff, choose_profile, next_step, renewal_time,
};
use crate::{AcmeConfig, AcmeError, AcmeIdentifier, AcmeResolver, Challenge};

/// How long one order may take, challenges and issuance included.
const ORDER_TIMEOUT: Duration = Duration::from_secs(90);
/// How long asking for the renewal window may take before the plain
/// schedule is used.
const ARI_TIMEOUT: Duration = Duration::from_secs(30);

/// What is being served now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateInfo {
    /// Its subject alternative names.
    pub names: Vec<String>,
    /// Its serial number, in hex.
    pub serial: String,
    /// Valid from.
    pub not_before: SystemTime,
    /// Valid until.
    pub not_after: SystemTime,
}

/// Certificates from ACME for one set of names, renewed in the background
/// (on the Tokio runtime that started it) for as long as the process runs.
#[derive(Clone, Debug)]
pub struct AcmeCertificates {
    resolver: Arc<AcmeResolver>,
    current: watch::Receiver<Option<CertificateInfo>>,
}

impl AcmeCertificates {
    /// Checks `config`, serves a valid cached certificate at once, and
    /// starts ordering and renewing. Must be called within a Tokio runtime.
    pub async fn start(config: AcmeConfig) -> Result<Self, AcmeError> {
        config.check()?;
        let cache = Cache::open(&config.cache_dir)?;
        let resolver = Arc::new(AcmeResolver::default());
        let names = names_key(&config.identifiers);
        let mut first = None;
        if let Some((chain, key)) = cache.certificate(&names)? {
            match install(&resolver, &chain, &key) {
                Ok(info) if info.not_after > SystemTime::now() => first = Some(info),
                Ok(_) => tracing::info!("ACME: the cached certificate has expired"),
                Err(error) => tracing::warn!("ACME: ignoring the cached certificate: {error}"),
            }
        }
        let tokens = Tokens::default();
        if let Challenge::Http01(addr) = config.challenge {
            http01::serve(addr, tokens.clone()).await?;
        }
        let (publish, current) = watch::channel(first);
        let renewer = Renewer {
            config,
            cache,
            resolver: resolver.clone(),
            tokens,
            names,
            publish,
            replaces: None,
        };
        tokio::spawn(renewer.run());
        Ok(Self { resolver, current })
    }

    /// The resolver for TLS listeners.
    pub fn resolver(&self) -> Arc<AcmeResolver> {
        self.resolver.clone()
    }

    /// The certificate served now, if there is one yet.
    pub fn current(&self) -> Option<CertificateInfo> {
        self.current.borrow().clone()
    }

    /// Waits for a certificate (returns at once when one is served) or
    /// for the next one after `after`.
    pub async fn wait_for_change(&self, after: Option<&CertificateInfo>) -> CertificateInfo {
        let mut current = self.current.clone();
        loop {
            if let Some(info) = current.borrow_and_update().clone()
                && Some(&info) != after
            {
                return info;
            }
            if current.changed().await.is_err() {
                // The renewer never ends while the runtime lives.
                std::future::pending::<()>().await;
            }
        }
    }
}

struct Renewer {
    config: AcmeConfig,
    cache: Cache,
    resolver: Arc<AcmeResolver>,
    tokens: Tokens,
    names: String,
    publish: watch::Sender<Option<CertificateInfo>>,
    /// The certificate a renewal replaces, when the server speaks ARI.
    replaces: Option<CertificateIdentifier<'static>>,
}

/// When the current certificate is renewed, and from what.
struct RenewalPlan {
    due: SystemTime,
    /// When to ask the server's renewal window again (ARI only).
    recheck: Option<Duration>,
    source: &'static str,
}

impl Renewer {
    async fn run(mut self) {
        let mut failures = 0u32;
        loop {
            let current = self.publish.borrow().clone();
            if let Some(info) = &current {
                let plan = self.plan(info).await;
                let (wait, order_now) = next_step(SystemTime::now(), plan.due, plan.recheck);
                tracing::info!(
                    "ACME certificate valid until {}; renewal in {} s ({})",
                    httpdate(info.not_after),
                    plan.due
                        .duration_since(SystemTime::now())
                        .unwrap_or_default()
                        .as_secs(),
                    plan.source
                );
                tokio::time::sleep(wait).await;
                if !order_now {
                    continue;
                }
            } else {
                tracing::info!(
                    "ACME: ordering a certificate; TLS handshakes are refused until it arrives"
                );
            }
            match self.order().await {
                Ok(info) => {
                    failures = 0;
                    tracing::info!(
                        "ACME certificate obtained serial={} names={}",
                        info.serial,
                        info.names.join(",")
                    );
                    self.publish.send_replace(Some(info));
                }
                Err(error) => {
                    failures = failures.saturating_add(1);
                    let wait = backoff(failures);
                    tracing::warn!("{error}; next try in {} s", wait.as_secs());
                    tokio::time::sleep(wait).await;
                }
            }
            self.resolver.clear_challenges();
            self.tokens
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .clear();
        }
    }

    /// Asks the server for its renewal window (RFC 9773) when it offers
    /// one; otherwise, or when the server cannot be reached, renewal is at
    /// two thirds of the lifetime.
    async fn plan(&mut self, info: &CertificateInfo) -> RenewalPlan {
        let fallback = RenewalPlan {
            due: renewal_time(info.not_before, info.not_after),
            recheck: None,
            source: "two thirds of its lifetime",
        };
        let Some(id) = self.current_id() else {
            return fallback;
        };
        let asked = async {
            let account = self.account().await.ok()?;
            account
                .renewal_info(&id)
                .await
                .map_err(|error| {
                    if !matches!(error, instant_acme::Error::Unsupported(_)) {
                        tracing::debug!("ACME: no renewal window from the server: {error}");
                    }
                    error
                })
                .ok()
        };
        match tokio::time::timeout(ARI_TIMEOUT, asked).await {
            Ok(Some((window, retry_after))) => {
                self.replaces = Some(id);
                let to_system = |unix: i64| {
                    SystemTime::UNIX_EPOCH
                        + Duration::from_secs(u64::try_from(unix).unwrap_or_default())
                };
                RenewalPlan {
                    due: ari_renewal_time(
                        to_system(window.suggested_window.start.unix_timestamp()),
                        to_system(window.suggested_window.end.unix_timestamp()),
                        random_spread(),
                    ),
                    recheck: Some(ari_recheck(retry_after)),
                    source: "the server's renewal window",
                }
            }
            _ => {
                self.replaces = None;
                fallback
            }
        }
    }

    /// The RFC 9773 identifier of the certificate served now.
    fn current_id(&self) -> Option<CertificateIdentifier<'static>> {
        let leaf = self.resolver.current_leaf()?;
        CertificateIdentifier::try_from(&leaf)
            .ok()
            .map(CertificateIdentifier::into_owned)
    }

    fn server_error(&self, error: impl std::fmt::Display) -> AcmeError {
        AcmeError::Server {
            directory: self.config.directory.clone(),
            reason: error.to_string(),
        }
    }

    /// An instant-acme error with its causes ("client error (Connect):
    /// connection refused"); a server that no longer knows our account
    /// makes the cached one be forgotten, so the next try registers anew.
    fn acme_error(&self, error: instant_acme::Error) -> AcmeError {
        if let instant_acme::Error::Api(problem) = &error
            && problem
                .r#type
                .as_deref()
                .is_some_and(|kind| kind.ends_with(":accountDoesNotExist"))
        {
            self.cache.forget_account();
        }
        let mut reason = error.to_string();
        let mut source = std::error::Error::source(&error);
        while let Some(cause) = source {
            let text = cause.to_string();
            if !reason.contains(&text) {
                reason.push_str(": ");
                reason.push_str(&text);
            }
            source = cause.source();
        }
        self.server_error(reason)
    }

    async fn account(&self) -> Result<Account, AcmeError> {
        let builder = match &self.config.directory_ca {
            Some(ca) => Account::builder_with_root(ca),
            None => Account::builder(),
        }
        .map_err(|error| self.acme_error(error))?;
        if let Some(json) = self.cache.account()? {
            if let Ok(credentials) = serde_json::from_str::<AccountCredentials>(&json) {
                return builder
                    .from_credentials(credentials)
                    .await
                    .map_err(|error| self.acme_error(error));
            }
            tracing::warn!("ACME: the cached account is unreadable; creating a new one");
        }
        let contact = self
            .config
            .email
            .as_ref()
            .map(|email| format!("mailto:{email}"));
        let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
        let (account, credentials) = builder
            .create(
                &NewAccount {
                    contact: &contacts,
                    terms_of_service_agreed: true,
                    only_return_existing: false,
                },
                self.config.directory.clone(),
                None,
            )
            .await
            .map_err(|error| self.acme_error(error))?;
        let json = serde_json::to_string(&credentials)
            .map_err(|error| AcmeError::Certificate(error.to_string()))?;
        self.cache.save_account(&json)?;
        Ok(account)
    }

    /// One order, start to finish; the new certificate is served and cached.
    async fn order(&self) -> Result<CertificateInfo, AcmeError> {
        let account = self.account().await?;
        let identifiers: Vec<Identifier> = self
            .config
            .identifiers
            .iter()
            .map(|id| match id {
                AcmeIdentifier::Dns(name) => Identifier::Dns(name.clone()),
                AcmeIdentifier::Ip(ip) => Identifier::Ip(*ip),
            })
            .collect();
        let offered: Vec<&str> = account.profiles().map(|profile| profile.name).collect();
        let profile = choose_profile(
            self.config.profile.as_deref(),
            &offered,
            &self.config.identifiers,
        );
        let mut request = NewOrder::new(&identifiers);
        if let Some(replaces) = self.replaces.clone() {
            request = request.replaces(replaces);
        }
        if let Some(profile) = profile {
            request = request.profile(profile);
        }
        let mut order = account
            .new_order(&request)
            .await
            .map_err(|error| self.acme_error(error))?;

        let kind = match self.config.challenge {
            Challenge::TlsAlpn01 => ChallengeType::TlsAlpn01,
            Challenge::Http01(_) => ChallengeType::Http01,
        };
        let mut authorizations = order.authorizations();
        while let Some(authorization) = authorizations.next().await {
            let mut authorization = authorization.map_err(|error| self.acme_error(error))?;
            match authorization.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                other => {
                    return Err(self.server_error(format!("an authorization is {other:?}")));
                }
            }
            let name = authorization.identifier().to_string();
            let mut challenge = authorization.challenge(kind.clone()).ok_or_else(|| {
                self.server_error(format!("no {kind:?} challenge offered for {name}"))
            })?;
            let key_authorization = challenge.key_authorization();
            match self.config.challenge {
                Challenge::TlsAlpn01 => {
                    let identifier = match challenge.identifier().identifier {
                        Identifier::Ip(ip) => AcmeIdentifier::Ip(*ip),
                        _ => AcmeIdentifier::Dns(name.clone()),
                    };
                    let key = challenge_key(&identifier, key_authorization.digest().as_ref())?;
                    self.resolver
                        .add_challenge(identifier.challenge_server_name(), Arc::new(key));
                }
                Challenge::Http01(_) => {
                    self.tokens
                        .write()
                        .unwrap_or_else(PoisonError::into_inner)
                        .insert(
                            challenge.token.clone(),
                            key_authorization.as_str().to_owned(),
                        );
                }
            }
            challenge
                .set_ready()
                .await
                .map_err(|error| self.acme_error(error))?;
        }

        let retries = RetryPolicy::new()
            .initial_delay(Duration::from_millis(250))
            .timeout(ORDER_TIMEOUT);
        let status = order
            .poll_ready(&retries)
            .await
            .map_err(|error| self.acme_error(error))?;
        if status != OrderStatus::Ready {
            return Err(
                self.server_error(format!("the order ended {status:?} (the challenge failed)"))
            );
        }
        let key_pem = order
            .finalize()
            .await
            .map_err(|error| self.acme_error(error))?;
        let chain_pem = order
            .poll_certificate(&retries)
            .await
            .map_err(|error| self.acme_error(error))?;
        let info = install(&self.resolver, &chain_pem, &key_pem)?;
        self.cache
            .save_certificate(&self.names, &chain_pem, &key_pem)?;
        Ok(info)
    }
}

/// Parses and serves a chain and key; returns what it is.
fn install(resolver: &AcmeResolver, chain: &str, key: &str) -> Result<CertificateInfo, AcmeError> {
    let certified = certified_key(chain.as_bytes(), key.as_bytes())?;
    let info = describe(&certified.cert[0])?;
    resolver.set_current(Arc::new(certified));
    Ok(info)
}

fn describe(leaf: &CertificateDer<'_>) -> Result<CertificateInfo, AcmeError> {
    use x509_parser::prelude::{FromDer as _, GeneralName, X509Certificate};
    let (_, cert) = X509Certificate::from_der(leaf)
        .map_err(|error| AcmeError::Certificate(format!("unreadable certificate: {error}")))?;
    let time = |t: x509_parser::time::ASN1Time| {
        SystemTime::UNIX_EPOCH
            + Duration::from_secs(u64::try_from(t.timestamp()).unwrap_or_default())
    };
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(dns) => names.push((*dns).to_owned()),
                GeneralName::IPAddress(bytes) => {
                    if let Ok(v4) = <[u8; 4]>::try_from(*bytes) {
                        names.push(std::net::Ipv4Addr::from(v4).to_string());
                    } else if let Ok(v6) = <[u8; 16]>::try_from(*bytes) {
                        names.push(std::net::Ipv6Addr::from(v6).to_string());
                    }
                }
                _ => {}
            }
        }
    }
    Ok(CertificateInfo {
        names,
        serial: cert.raw_serial_as_string().replace(':', ""),
        not_before: time(cert.validity().not_before),
        not_after: time(cert.validity().not_after),
    })
}

/// The self-signed certificate a TLS-ALPN-01 validator must see (RFC 8737).
fn challenge_key(
    identifier: &AcmeIdentifier,
    digest: &[u8],
) -> Result<rustls::sign::CertifiedKey, AcmeError> {
    let failed = |error: rcgen::Error| AcmeError::Certificate(format!("challenge: {error}"));
    let mut params = CertificateParams::new(vec![identifier.san()]).map_err(failed)?;
    params.custom_extensions = vec![CustomExtension::new_acme_identifier(digest)];
    let key = KeyPair::generate().map_err(failed)?;
    let cert = params.self_signed(&key).map_err(failed)?;
    let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    certified_key_der(vec![cert.der().clone()], &key_der)
}

fn names_key(identifiers: &[AcmeIdentifier]) -> String {
    let mut names: Vec<String> = identifiers.iter().map(AcmeIdentifier::san).collect();
    names.sort();
    names.join("\n")
}

fn httpdate(time: SystemTime) -> String {
    httpdate::fmt_http_date(time)
}

/// A number in 0.0..1.0 that differs between processes and calls, to
/// spread renewals over the server's window (std's hasher keys are random).
fn random_spread() -> f64 {
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}
