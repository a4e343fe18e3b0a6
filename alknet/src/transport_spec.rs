//! A client transport from settings as a user gives them (`alknet connect`'s
//! flags, the Node addon's options): TCP, TLS or iroh, directly or through
//! a proxy, each combination checked for sense before anything connects.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use alknet_proxy::{Dialer, UpstreamProxy};
use alknet_transport::{
    FallbackTransport, TcpTransport, TlsClientOptions, TlsTransport, Transport,
};
use tracing::warn;

use crate::stealth_knock::KnockingTransport;
use crate::{Error, TransportChoice};
use alknet_auth::PrivateKey;

/// How to reach a server.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct TransportSpec {
    /// Which transport.
    pub kind: TransportChoice,
    /// TCP and TLS: `host:port`.
    pub server: Option<String>,
    /// TLS: the name sent as SNI and checked (default: the host of `server`).
    pub tls_server_name: Option<String>,
    /// TLS: extra CA certificates to trust (PEM files).
    pub tls_ca: Vec<PathBuf>,
    /// TLS: accept any certificate (the SSH host key still authenticates).
    pub insecure: bool,
    /// iroh: the server's endpoint id.
    pub peer: Option<String>,
    /// iroh: addresses to try directly.
    pub peer_addrs: Vec<SocketAddr>,
    /// iroh: `default`, `none` or a relay URL (`None`: default).
    pub iroh_relay: Option<String>,
    /// Reach the server through this proxy.
    pub proxy: Option<UpstreamProxy>,
    /// More ways in to the same server, tried in order after the one
    /// above, each after a head start
    /// ([`FALLBACK_HEAD_START`](alknet_transport::FALLBACK_HEAD_START)):
    /// `tcp://host:port`, `tls://host:port`, `iroh://ENDPOINT-ID`, or bare
    /// (of `kind`). The TLS settings apply to the `tls://` ones, the iroh
    /// settings to the `iroh://` ones.
    pub fallbacks: Vec<String>,
    /// TLS: knock with a token of this key before SSH, as a stealth
    /// listener with `--stealth-require-token` demands (`--stealth`).
    pub stealth_key: Option<Arc<PrivateKey>>,
}

fn usage(message: impl Into<String>) -> Error {
    Error::InvalidSetting(message.into())
}

impl TransportSpec {
    /// A TCP transport to `server` (`host:port`).
    pub fn tcp(server: impl Into<String>) -> Self {
        Self {
            server: Some(server.into()),
            ..Self::default()
        }
    }

    fn iroh_settings_given(&self) -> bool {
        self.peer.is_some()
            || !self.peer_addrs.is_empty()
            || self
                .iroh_relay
                .as_deref()
                .is_some_and(|relay| relay != "default")
    }

    fn tls_settings_given(&self) -> bool {
        self.tls_server_name.is_some() || !self.tls_ca.is_empty() || self.insecure
    }

    /// The transport these settings describe, or what is wrong with them.
    pub fn build(&self) -> Result<Arc<dyn Transport>, Error> {
        let has_scheme = self
            .server
            .as_deref()
            .is_some_and(|server| server.contains("://"));
        if self.fallbacks.is_empty() && !has_scheme {
            return self.build_one();
        }
        let mut entries = Vec::new();
        if self.kind == TransportChoice::Iroh && self.peer.is_some() {
            let mut primary = self.clone();
            primary.server = None;
            entries.push(primary);
        } else if let Some(server) = &self.server {
            entries.push(self.way_in(server)?);
        }
        for fallback in &self.fallbacks {
            entries.push(self.way_in(fallback)?);
        }
        let mut candidates = Vec::with_capacity(entries.len());
        for entry in &entries {
            candidates.push(if entries.len() == 1 {
                entry.build_one()?
            } else {
                entry.only_its_own_settings().build_one()?
            });
        }
        Ok(match candidates.len() {
            1 => candidates.remove(0),
            _ => Arc::new(FallbackTransport::new(candidates)),
        })
    }

    /// The host and port the server is recorded under in known_hosts: those
    /// of the first way in (a server has one host key however it is
    /// reached); for iroh, the endpoint id (port 22, which names leave out).
    pub fn known_hosts_host(&self) -> Option<(String, u16)> {
        let first = if self.kind == TransportChoice::Iroh && self.peer.is_some() {
            self.clone()
        } else {
            self.way_in(self.server.as_deref()?).ok()?
        };
        if first.kind == TransportChoice::Iroh {
            return first.peer.map(|id| (id, 22));
        }
        let server = first.server?;
        Some(match alknet_transport::split_host_port(&server) {
            Some((host, port)) => (host.to_owned(), port),
            None => (server.trim_matches(['[', ']']).to_owned(), 22),
        })
    }

    /// The settings for one `[scheme://]address` way in.
    fn way_in(&self, entry: &str) -> Result<Self, Error> {
        let (kind, address) = match entry.split_once("://") {
            Some(("tcp", address)) => (TransportChoice::Tcp, address),
            Some(("tls", address)) => (TransportChoice::Tls, address),
            Some(("iroh", address)) => (TransportChoice::Iroh, address),
            Some((other, _)) => {
                return Err(usage(format!(
                    "--server {entry:?}: unknown scheme {other:?} (tcp://, tls:// or iroh://)"
                )));
            }
            None => (self.kind, entry),
        };
        let mut spec = self.clone();
        spec.fallbacks = Vec::new();
        spec.kind = kind;
        if kind == TransportChoice::Iroh {
            spec.server = None;
            spec.peer = Some(address.to_owned());
        } else {
            spec.server = Some(address.to_owned());
        }
        Ok(spec)
    }

    /// Drops the settings of the other transports, which a list of ways in
    /// gives for its other members.
    fn only_its_own_settings(&self) -> Self {
        let mut spec = self.clone();
        if spec.kind != TransportChoice::Tls {
            spec.stealth_key = None;
            spec.tls_server_name = None;
            spec.tls_ca = Vec::new();
            spec.insecure = false;
        }
        if spec.kind != TransportChoice::Iroh {
            spec.peer = None;
            spec.peer_addrs = Vec::new();
            spec.iroh_relay = None;
        }
        spec
    }

    fn build_one(&self) -> Result<Arc<dyn Transport>, Error> {
        if self.kind == TransportChoice::Iroh && self.stealth_key.is_some() {
            return Err(usage(
                "--stealth needs --transport tls (or a tls:// server)",
            ));
        }
        if self.kind == TransportChoice::Iroh {
            return self.build_iroh();
        }
        if self.iroh_settings_given() {
            return Err(usage(
                "--peer, --peer-addr and --iroh-relay need --transport iroh",
            ));
        }
        let server = self.server.as_deref().ok_or_else(|| {
            usage("which server? pass --server HOST:PORT (or --transport iroh --peer ENDPOINT-ID)")
        })?;
        let server = with_default_port(server).ok_or_else(|| {
            usage(format!(
                "--server {server:?}: expected HOST, HOST:PORT or [IPv6]:PORT"
            ))
        })?;
        let mut tcp = TcpTransport::new(server.clone());
        if let Some(proxy) = &self.proxy {
            // The transport applies its own connect timeout.
            let dialer = Dialer::new(Some(proxy.clone()), Duration::from_secs(3600));
            tcp = tcp.with_connector(Arc::new(dialer));
        }
        match self.kind {
            TransportChoice::Tcp if self.tls_settings_given() || self.stealth_key.is_some() => Err(
                usage("--tls-server-name, --tls-ca, --insecure and --stealth need --transport tls"),
            ),
            TransportChoice::Tls => {
                let mut options = TlsClientOptions::default();
                options.server_name = self.tls_server_name.clone();
                options.extra_roots = self.tls_ca.clone();
                options.insecure = self.insecure;
                if self.insecure {
                    warn!(
                        "--insecure: the server's TLS certificate is NOT checked; only the SSH host key \
                         (--host-key) tells the real server from an impostor"
                    );
                }
                let tls = Arc::new(TlsTransport::new(tcp, &options)?);
                Ok(match &self.stealth_key {
                    Some(key) => Arc::new(KnockingTransport::new(
                        tls,
                        key.clone(),
                        knock_host(self.tls_server_name.as_deref(), &server),
                    )),
                    None => tls,
                })
            }
            _ => Ok(Arc::new(tcp)),
        }
    }

    #[cfg(feature = "iroh")]
    fn build_iroh(&self) -> Result<Arc<dyn Transport>, Error> {
        use alknet_transport::iroh::{IrohOptions, IrohRelay, IrohTransport, parse_endpoint_id};
        if self.server.is_some() {
            return Err(usage(
                "--server is for tcp and tls; with iroh, name the server by --peer ENDPOINT-ID \
                 (and --peer-addr IP:PORT)",
            ));
        }
        if self.tls_settings_given() {
            return Err(usage(
                "--tls-server-name, --tls-ca and --insecure need --transport tls (iroh is always \
                 encrypted and authenticated by the endpoint id)",
            ));
        }
        let peer = self.peer.as_deref().ok_or_else(|| {
            usage("--transport iroh needs --peer ENDPOINT-ID (the server prints it as `endpoint-id: …`)")
        })?;
        let proxy = match &self.proxy {
            None => None,
            Some(proxy @ UpstreamProxy::HttpConnect { .. }) => Some(proxy.to_string()),
            Some(_) => {
                return Err(usage(
                    "iroh reaches its relays only through an HTTP proxy (HTTP CONNECT), and QUIC \
                     itself is UDP, which proxies do not carry: use --proxy http://HOST:PORT or no proxy",
                ));
            }
        };
        let options = IrohOptions {
            relay: self.iroh_relay.as_deref().unwrap_or("default").parse()?,
            bind: None,
            proxy,
        };
        if options.relay == IrohRelay::Disabled && self.peer_addrs.is_empty() {
            return Err(usage(
                "with --iroh-relay none nothing can look the server up: give its address with \
                 --peer-addr IP:PORT",
            ));
        }
        Ok(Arc::new(IrohTransport::new(
            options,
            parse_endpoint_id(peer)?,
            &self.peer_addrs,
        )))
    }

    #[cfg(not(feature = "iroh"))]
    fn build_iroh(&self) -> Result<Arc<dyn Transport>, Error> {
        Err(usage(
            "this build has no iroh support (the `iroh` feature of the alknet crate)",
        ))
    }
}

/// `host` alone means port 22, as with ssh; `None` for what is no server
/// address at all.
/// The `Host` a knock names: the TLS server name (or the server's host),
/// with the port unless it is 443, as a browser writes it.
fn knock_host(server_name: Option<&str>, server: &str) -> String {
    let (host, port) = alknet_transport::split_host_port(server).unwrap_or((server, 443));
    let host = server_name.unwrap_or(host);
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_owned()
    };
    if port == 443 {
        host
    } else {
        format!("{host}:{port}")
    }
}

fn with_default_port(server: &str) -> Option<String> {
    let server = server.trim();
    let with_port = if alknet_transport::split_host_port(server).is_some() {
        server.to_owned()
    } else if let Ok(v6) = server.parse::<std::net::Ipv6Addr>() {
        format!("[{v6}]:22")
    } else if !server.is_empty() && !server.contains(':')
        || server.starts_with('[') && server.ends_with(']')
    {
        format!("{server}:22")
    } else {
        return None;
    };
    alknet_transport::split_host_port(&with_port)?;
    Some(with_port)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(spec: TransportSpec, why: &str) {
        let error = spec.build().err().expect("accepted");
        assert!(error.to_string().contains(why), "{error}");
    }

    #[test]
    fn known_hosts_names_come_from_the_first_way_in() {
        let mut spec = TransportSpec::tcp("tls://example.com:443");
        spec.fallbacks = vec!["example.com".into()];
        assert_eq!(spec.known_hosts_host(), Some(("example.com".into(), 443)));
        assert_eq!(
            TransportSpec::tcp("[::1]").known_hosts_host(),
            Some(("::1".into(), 22))
        );
        let id = "0".repeat(64);
        assert_eq!(
            TransportSpec::tcp(format!("iroh://{id}")).known_hosts_host(),
            Some((id, 22))
        );
        assert_eq!(TransportSpec::default().known_hosts_host(), None);
    }

    #[test]
    fn ways_in_are_read_by_scheme_and_raced_in_order() {
        let mut spec = TransportSpec::tcp("127.0.0.1:22");
        spec.fallbacks = vec!["tls://127.0.0.1:443".into(), "127.0.0.1:2222".into()];
        // A TLS setting belongs to the tls:// entry, not a misuse of tcp.
        spec.insecure = true;
        let transport = spec.build().unwrap();
        assert_eq!(
            transport.describe(),
            "tcp://127.0.0.1:22 or tls://127.0.0.1:443 or tcp://127.0.0.1:2222"
        );
        let mut spec = TransportSpec::tcp("127.0.0.1:22");
        spec.fallbacks = vec!["ftp://127.0.0.1:21".into()];
        refused(spec, "unknown scheme \"ftp\"");
    }

    #[test]
    fn a_server_without_a_port_means_port_22_as_with_ssh() {
        for (given, expected) in [
            ("example.com", Some("example.com:22")),
            ("127.0.0.1", Some("127.0.0.1:22")),
            ("::1", Some("[::1]:22")),
            ("[::1]", Some("[::1]:22")),
            ("example.com:2222", Some("example.com:2222")),
            ("[::1]:2222", Some("[::1]:2222")),
            ("example.com:", None),
            ("example.com:port", None),
            ("", None),
        ] {
            assert_eq!(with_default_port(given).as_deref(), expected, "{given:?}");
        }
    }

    #[test]
    fn settings_for_another_transport_are_refused_by_name() {
        refused(TransportSpec::default(), "which server?");
        refused(
            TransportSpec {
                insecure: true,
                ..TransportSpec::tcp("h:1")
            },
            "need --transport tls",
        );
        refused(
            TransportSpec {
                peer: Some("x".into()),
                ..TransportSpec::tcp("h:1")
            },
            "need --transport iroh",
        );
        assert_eq!(
            TransportSpec::tcp("example.com:22")
                .build()
                .unwrap()
                .describe(),
            "tcp://example.com:22"
        );
        let tls = TransportSpec {
            kind: TransportChoice::Tls,
            ..TransportSpec::tcp("example.com:443")
        };
        assert_eq!(tls.build().unwrap().describe(), "tls://example.com:443");
    }

    #[test]
    fn a_knock_names_the_host_as_a_browser_would() {
        assert_eq!(knock_host(None, "example.com:443"), "example.com");
        assert_eq!(knock_host(None, "example.com:8443"), "example.com:8443");
        assert_eq!(
            knock_host(Some("cdn.example"), "10.0.0.1:443"),
            "cdn.example"
        );
        assert_eq!(knock_host(None, "[::1]:8443"), "[::1]:8443");
    }
}
