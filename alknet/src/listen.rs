//! Listeners from `tcp://ADDR`, `tls://ADDR` and `iroh://ADDR` specs:
//! checked together (a stealth or TLS setting without a TLS listener is a
//! mistake, two iroh listeners are one too many) and bound, so that any
//! mistake or busy port is reported before anything is served.
//!
//! An iroh listener's endpoint id is derived from the host key: the same
//! key gives the same id on every start, with no state file to keep, and
//! the derivation (a labelled SHA-256) reveals nothing about the SSH key.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use alknet_auth::PrivateKey;
use alknet_stealth::StealthConfig;
use alknet_transport::{CertResolver, TcpAcceptor, TlsAcceptor, TransportAcceptor};

use crate::{Error, Listener, ListenerOptions};

/// Which transport a listener (or a client) uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum TransportChoice {
    /// Plain TCP.
    #[default]
    Tcp,
    /// TLS over TCP.
    Tls,
    /// iroh QUIC (a listen address is the UDP bind address).
    Iroh,
}

impl fmt::Display for TransportChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TransportChoice::Tcp => "tcp",
            TransportChoice::Tls => "tls",
            TransportChoice::Iroh => "iroh",
        })
    }
}

impl FromStr for TransportChoice {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text.to_ascii_lowercase().as_str() {
            "tcp" => Ok(TransportChoice::Tcp),
            "tls" => Ok(TransportChoice::Tls),
            "iroh" => Ok(TransportChoice::Iroh),
            _ => Err(format!("unknown transport {text:?}: use tcp, tls or iroh")),
        }
    }
}

/// One listen value: `tcp://host:port`, `tls://…`, `iroh://…`, or a bare
/// `host:port` of a default kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenSpec {
    /// The scheme given, if any.
    pub kind: Option<TransportChoice>,
    /// `host:port`.
    pub addr: String,
}

impl ListenSpec {
    /// The kind, with bare addresses taking `default`.
    pub fn kind_or(&self, default: TransportChoice) -> TransportChoice {
        self.kind.unwrap_or(default)
    }
}

impl FromStr for ListenSpec {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (kind, addr) = match text.split_once("://") {
            Some((scheme, addr)) => {
                let kind = scheme.parse::<TransportChoice>().map_err(|_| {
                    format!("unknown scheme {scheme:?}: use tcp://, tls:// or iroh://")
                })?;
                (Some(kind), addr)
            }
            None => (None, text),
        };
        if alknet_transport::split_host_port(addr).is_none() {
            return Err(format!(
                "expected host:port (IPv6 as [addr]:port), got {addr:?}"
            ));
        }
        Ok(ListenSpec {
            kind,
            addr: addr.to_owned(),
        })
    }
}

/// PEM data for a TLS listener: a file, or bytes already in memory.
#[derive(Clone, Debug)]
pub enum Pem {
    /// Read this file.
    File(PathBuf),
    /// These bytes.
    Bytes(Vec<u8>),
}

impl Pem {
    fn read(&self, what: &str) -> Result<(Vec<u8>, String), Error> {
        match self {
            Pem::File(path) => std::fs::read(path)
                .map(|bytes| (bytes, path.display().to_string()))
                .map_err(|error| {
                    Error::InvalidSetting(format!("cannot read {what} {}: {error}", path.display()))
                }),
            Pem::Bytes(bytes) => Ok((bytes.clone(), format!("the {what} given in memory"))),
        }
    }
}

/// What listeners share.
#[derive(Clone, Default)]
#[non_exhaustive]
pub struct ListenerSettings {
    /// The kind of bare addresses.
    pub default_kind: TransportChoice,
    /// The certificate chain of `tls://` listeners.
    pub tls_cert: Option<Pem>,
    /// Its private key.
    pub tls_key: Option<Pem>,
    /// Where `tls://` listeners get their certificate per handshake instead
    /// (ACME's resolver); excludes `tls_cert`/`tls_key`.
    pub tls_resolver: Option<Arc<dyn CertResolver>>,
    /// Stealth mode for `tls://` listeners (which then also offer ALPN
    /// `h2`, as nginx does).
    pub stealth: Option<StealthConfig>,
    /// With stealth: tunnels only after a knock with a token
    /// (`--stealth-require-token`).
    pub stealth_require_token: bool,
    /// For an iroh listener: `default`, `none` or a relay URL (`None`: default).
    pub iroh_relay: Option<String>,
}

impl fmt::Debug for ListenerSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ListenerSettings")
            .field("default_kind", &self.default_kind)
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .field("tls_resolver", &self.tls_resolver.is_some())
            .field("stealth", &self.stealth)
            .field("stealth_require_token", &self.stealth_require_token)
            .field("iroh_relay", &self.iroh_relay)
            .finish()
    }
}

/// Bound listeners, and what clients need to reach them.
pub struct BoundListeners {
    /// Each listener with its options, ready for
    /// [`Server::serve_on_every_core`](crate::Server::serve_on_every_core).
    pub listeners: Vec<Listener>,
    /// The iroh listener's endpoint id, if there is one.
    pub endpoint_id: Option<String>,
}

impl fmt::Debug for BoundListeners {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BoundListeners")
            .field(
                "listeners",
                &self
                    .listeners
                    .iter()
                    .map(|(acceptor, _)| acceptor.describe())
                    .collect::<Vec<_>>(),
            )
            .field("endpoint_id", &self.endpoint_id)
            .finish()
    }
}

fn usage(message: impl Into<String>) -> Error {
    Error::InvalidSetting(message.into())
}

/// Where TLS listeners' certificates come from.
enum TlsSource {
    Pem {
        cert: Vec<u8>,
        key: Vec<u8>,
        name: String,
    },
    Resolver(Arc<dyn CertResolver>),
}

/// Checks `specs` and `settings` together and binds every listener.
pub async fn bind_listeners(
    specs: &[ListenSpec],
    settings: &ListenerSettings,
    host_key: &PrivateKey,
) -> Result<BoundListeners, Error> {
    let kinds: Vec<TransportChoice> = specs
        .iter()
        .map(|spec| spec.kind_or(settings.default_kind))
        .collect();
    let any_tls = kinds.contains(&TransportChoice::Tls);
    if kinds
        .iter()
        .filter(|kind| **kind == TransportChoice::Iroh)
        .count()
        > 1
    {
        return Err(usage(
            "one iroh listener is enough: its endpoint id is the same whatever the address",
        ));
    }
    if settings.stealth_require_token && settings.stealth.is_none() {
        return Err(usage(
            "--stealth-require-token and --stealth-backend are stealth settings: add --stealth",
        ));
    }
    if settings.stealth.is_some() && !any_tls {
        return Err(usage(
            "--stealth needs a TLS listener (--listen tls://ADDR with --tls-cert and --tls-key): \
             without TLS, anyone watching sees the SSH handshake anyway",
        ));
    }
    let tls = if let Some(resolver) = &settings.tls_resolver {
        if settings.tls_cert.is_some() || settings.tls_key.is_some() {
            return Err(usage(
                "ACME certificates (--acme-domain, --acme-ip) and --tls-cert/--tls-key exclude each other: pick one",
            ));
        }
        if !any_tls {
            return Err(usage(
                "ACME certificates are for TLS listeners: add one with --listen tls://ADDR",
            ));
        }
        Some(TlsSource::Resolver(resolver.clone()))
    } else {
        match (&settings.tls_cert, &settings.tls_key) {
            (Some(cert), Some(key)) if any_tls => {
                let (cert, cert_name) = cert.read("certificate")?;
                let (key, key_name) = key.read("private key")?;
                Some(TlsSource::Pem {
                    cert,
                    key,
                    name: format!("certificate {cert_name} with key {key_name}"),
                })
            }
            (None, None) if !any_tls => None,
            _ if any_tls => {
                return Err(usage(
                    "a tls:// listener needs both --tls-cert and --tls-key (or ACME: --acme-domain, --acme-ip)",
                ));
            }
            _ => {
                return Err(usage(
                    "--tls-cert and --tls-key are only used by tls:// listeners; add one with --listen tls://ADDR",
                ));
            }
        }
    };
    let mut bound = BoundListeners {
        listeners: Vec::with_capacity(specs.len()),
        endpoint_id: None,
    };
    for (spec, kind) in specs.iter().zip(kinds) {
        match kind {
            TransportChoice::Iroh => {
                let (acceptor, id) = bind_iroh(&spec.addr, settings, host_key).await?;
                bound.endpoint_id = Some(id);
                bound.listeners.push((acceptor, ListenerOptions::default()));
            }
            TransportChoice::Tls => {
                let tcp = TcpAcceptor::bind(&spec.addr).await?;
                let acceptor = match &tls {
                    Some(TlsSource::Pem { cert, key, name }) => {
                        TlsAcceptor::from_pem(tcp, cert, key, name)?
                    }
                    Some(TlsSource::Resolver(resolver)) => {
                        TlsAcceptor::from_resolver(tcp, resolver.clone())?
                    }
                    None => unreachable!("checked above: a tls:// listener has its certificate"),
                };
                let (acceptor, options) = match settings.stealth.clone() {
                    Some(stealth) => {
                        let mut options = ListenerOptions::stealth(stealth);
                        options.require_token = settings.stealth_require_token;
                        (acceptor.like_nginx()?, options)
                    }
                    None => (acceptor, ListenerOptions::default()),
                };
                bound.listeners.push((Box::new(acceptor), options));
            }
            TransportChoice::Tcp => {
                let tcp = TcpAcceptor::bind(&spec.addr).await?;
                bound
                    .listeners
                    .push((Box::new(tcp), ListenerOptions::default()));
            }
        }
    }
    Ok(bound)
}

#[cfg(feature = "iroh")]
async fn bind_iroh(
    addr: &str,
    settings: &ListenerSettings,
    host_key: &PrivateKey,
) -> Result<(Box<dyn TransportAcceptor>, String), Error> {
    use alknet_transport::iroh::{IrohAcceptor, IrohOptions, derive_secret_key};
    let seed = host_key
        .key_data()
        .ed25519()
        .map(|pair| pair.private.to_bytes())
        .ok_or_else(|| usage("iroh needs an Ed25519 host key"))?;
    let bind: std::net::SocketAddr = addr.parse().map_err(|_| {
        usage(format!(
            "an iroh listener binds a UDP address: IP:PORT (such as 0.0.0.0:0), not {addr:?}"
        ))
    })?;
    let relay = settings.iroh_relay.as_deref().unwrap_or("default");
    let options = IrohOptions {
        relay: relay.parse()?,
        bind: Some(bind),
        proxy: None,
    };
    let acceptor = IrohAcceptor::bind(&options, derive_secret_key(&seed)).await?;
    let id = acceptor.endpoint_id().to_string();
    let direct: Vec<String> = acceptor
        .bound_sockets()
        .iter()
        .map(ToString::to_string)
        .collect();
    tracing::info!(
        endpoint_id = %id,
        udp = %direct.join(","),
        relay = %relay,
        "iroh endpoint ready"
    );
    Ok((Box::new(acceptor), id))
}

#[cfg(not(feature = "iroh"))]
async fn bind_iroh(
    _addr: &str,
    _settings: &ListenerSettings,
    _host_key: &PrivateKey,
) -> Result<(Box<dyn TransportAcceptor>, String), Error> {
    Err(usage(
        "this build has no iroh support (the `iroh` feature of the alknet crate)",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes_and_bare_addresses() {
        let tls: ListenSpec = "tls://0.0.0.0:443".parse().unwrap();
        assert_eq!(tls.kind, Some(TransportChoice::Tls));
        assert_eq!(tls.addr, "0.0.0.0:443");
        let bare: ListenSpec = "[::1]:22".parse().unwrap();
        assert_eq!(bare.kind_or(TransportChoice::Tls), TransportChoice::Tls);
        assert_eq!(
            "TCP://h:1".parse::<ListenSpec>().unwrap().kind,
            Some(TransportChoice::Tcp)
        );
        assert!(
            "udp://h:1"
                .parse::<ListenSpec>()
                .unwrap_err()
                .contains("unknown scheme")
        );
        assert!(
            "tls://h"
                .parse::<ListenSpec>()
                .unwrap_err()
                .contains("host:port")
        );
    }

    #[tokio::test]
    async fn settings_that_need_a_tls_listener_are_refused_before_binding() {
        let key = alknet_auth::generate_ed25519("host").unwrap();
        let tcp = vec!["tcp://127.0.0.1:0".parse().unwrap()];
        let stealth = ListenerSettings {
            stealth: Some(StealthConfig::default()),
            ..ListenerSettings::default()
        };
        let error = bind_listeners(&tcp, &stealth, &key).await.unwrap_err();
        assert!(
            error.to_string().contains("--stealth needs a TLS listener"),
            "{error}"
        );
        let tls = vec!["tls://127.0.0.1:0".parse().unwrap()];
        let error = bind_listeners(&tls, &ListenerSettings::default(), &key)
            .await
            .unwrap_err();
        assert!(error.to_string().contains("needs both"), "{error}");
        let bound = bind_listeners(&tcp, &ListenerSettings::default(), &key)
            .await
            .unwrap();
        assert_eq!(bound.listeners.len(), 1);
        assert!(bound.endpoint_id.is_none());
    }
}
