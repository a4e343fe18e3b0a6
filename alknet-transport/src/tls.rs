//! TLS over TCP, with rustls on the aws-lc-rs provider (the one russh
//! already links; chosen explicitly, so a second provider linked later
//! cannot make rustls' builders panic).
//!
//! To an observer the handshake is an ordinary HTTPS one: ALPN `http/1.1`,
//! a normal SNI, a certificate a browser would accept.

use std::fmt;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use async_trait::async_trait;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::{
    BoxStream, TcpAcceptor, TcpTransport, Transport, TransportAcceptor, TransportError,
    TransportInfo, TransportKind, split_host_port,
};

/// What a web server on HTTP/1.1 announces.
const ALPN_HTTP11: &[u8] = b"http/1.1";

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn config_error(what: impl Into<String>) -> impl FnOnce(rustls::Error) -> TransportError {
    let what = what.into();
    move |error| TransportError::Tls {
        what,
        reason: error.to_string(),
    }
}

/// How a [`TlsTransport`] checks the server.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct TlsClientOptions {
    /// The name sent as SNI and checked against the certificate. Defaults
    /// to the host part of the server address.
    pub server_name: Option<String>,
    /// PEM files with extra CA certificates to trust besides the webpki roots.
    pub extra_roots: Vec<PathBuf>,
    /// Accept any certificate. The connection is still encrypted but no
    /// longer authenticated by TLS (SSH's host key check still is).
    pub insecure: bool,
}

/// Client side of TLS: a TCP connection (direct or through a proxy) with
/// TLS on top.
pub struct TlsTransport {
    tcp: TcpTransport,
    connector: tokio_rustls::TlsConnector,
    server_name: ServerName<'static>,
}

impl fmt::Debug for TlsTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsTransport")
            .field("tcp", &self.tcp)
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl TlsTransport {
    /// TLS over `tcp`.
    pub fn new(tcp: TcpTransport, options: &TlsClientOptions) -> Result<Self, TransportError> {
        let name = match &options.server_name {
            Some(name) => name.clone(),
            None => split_host_port(tcp.server())
                .map(|(host, _)| host.to_owned())
                .ok_or_else(|| TransportError::Tls {
                    what: format!("server address {}", tcp.server()),
                    reason: "expected host:port".to_owned(),
                })?,
        };
        let server_name = ServerName::try_from(name.clone()).map_err(|_| TransportError::Tls {
            what: format!("TLS server name {name:?}"),
            reason: "not a valid DNS name or IP address".to_owned(),
        })?;

        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(config_error("TLS client settings"))?;
        let mut config = if options.insecure {
            let algorithms = provider().signature_verification_algorithms;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate { algorithms }))
                .with_no_client_auth()
        } else {
            let mut roots = RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            };
            for file in &options.extra_roots {
                for cert in read_certificates(file)? {
                    roots
                        .add(cert)
                        .map_err(config_error(format!("CA certificate {}", file.display())))?;
                }
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        };
        config.alpn_protocols = vec![ALPN_HTTP11.to_vec()];
        Ok(Self {
            tcp,
            connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
            server_name,
        })
    }
}

#[async_trait]
impl Transport for TlsTransport {
    async fn connect(&self) -> Result<BoxStream, TransportError> {
        let tcp = self.tcp.connect_stream().await?;
        let handshake = self.connector.connect(self.server_name.clone(), tcp);
        let timeout = self.tcp.connect_timeout();
        match tokio::time::timeout(timeout, handshake).await {
            Ok(Ok(stream)) => Ok(Box::new(stream)),
            Ok(Err(error)) => Err(handshake_error(self.tcp.server(), error)),
            Err(_) => Err(TransportError::Timeout {
                server: self.tcp.server().to_owned(),
                after: timeout,
            }),
        }
    }

    fn describe(&self) -> String {
        self.tcp.describe().replacen("tcp://", "tls://", 1)
    }
}

/// Tells a rejected certificate (which retrying will not fix) from other
/// handshake failures.
fn handshake_error(server: &str, error: io::Error) -> TransportError {
    let rejected = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .filter(|tls| {
            matches!(
                tls,
                rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented
            )
        })
        .map(ToString::to_string);
    match rejected {
        Some(reason) => TransportError::CertificateRejected {
            server: server.to_owned(),
            reason,
        },
        None => TransportError::Handshake {
            server: server.to_owned(),
            source: error,
        },
    }
}

/// Server side of TLS: accepts TCP and hands out streams whose TLS
/// handshake runs on first use, in the connection's own task, so a slow
/// or silent client never holds up accepting the next one.
pub struct TlsAcceptor {
    tcp: TcpAcceptor,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl fmt::Debug for TlsAcceptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsAcceptor")
            .field("tcp", &self.tcp)
            .finish_non_exhaustive()
    }
}

impl TlsAcceptor {
    /// TLS on `tcp` with the certificate chain and private key in the
    /// given PEM files.
    pub fn new(
        tcp: TcpAcceptor,
        cert_chain: &Path,
        key_file: &Path,
    ) -> Result<Self, TransportError> {
        let certs = read_certificates(cert_chain)?;
        let key = PrivateKeyDer::from_pem_file(key_file).map_err(|error| TransportError::Tls {
            what: format!("private key file {}", key_file.display()),
            reason: pem_reason(&error),
        })?;
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(config_error("TLS server settings"))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(config_error(format!(
                "certificate {} with key {}",
                cert_chain.display(),
                key_file.display()
            )))?;
        config.alpn_protocols = vec![ALPN_HTTP11.to_vec()];
        Ok(Self::from_config(tcp, Arc::new(config)))
    }

    /// TLS on `tcp` with a ready-made rustls configuration.
    pub fn from_config(tcp: TcpAcceptor, config: Arc<ServerConfig>) -> Self {
        Self {
            tcp,
            acceptor: tokio_rustls::TlsAcceptor::from(config),
        }
    }

    /// The local address of the listening socket.
    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.tcp.local_addr()
    }
}

#[async_trait]
impl TransportAcceptor for TlsAcceptor {
    async fn accept(&self) -> Result<(BoxStream, TransportInfo), TransportError> {
        let (tcp, remote_addr) = self.tcp.accept_tcp().await?;
        let stream = LazyTlsStream::Handshaking(Box::new(self.acceptor.accept(tcp)));
        let info = TransportInfo {
            remote_addr: Some(remote_addr),
            kind: TransportKind::Tls,
        };
        Ok((Box::new(stream), info))
    }

    fn describe(&self) -> String {
        self.tcp.describe().replacen("tcp://", "tls://", 1)
    }
}

/// A server-side TLS stream that completes its handshake when first read
/// or written.
enum LazyTlsStream {
    Handshaking(Box<tokio_rustls::Accept<TcpStream>>),
    Ready(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    Failed,
}

impl LazyTlsStream {
    fn poll_ready(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<&mut tokio_rustls::server::TlsStream<TcpStream>>> {
        if let LazyTlsStream::Handshaking(accept) = self {
            match Pin::new(&mut **accept).poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(stream)) => *self = LazyTlsStream::Ready(Box::new(stream)),
                Poll::Ready(Err(error)) => {
                    *self = LazyTlsStream::Failed;
                    return Poll::Ready(Err(error));
                }
            }
        }
        match self {
            LazyTlsStream::Ready(stream) => Poll::Ready(Ok(stream)),
            _ => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "TLS handshake failed",
            ))),
        }
    }
}

impl AsyncRead for LazyTlsStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut().poll_ready(cx) {
            Poll::Ready(Ok(stream)) => Pin::new(stream).poll_read(cx, buf),
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncWrite for LazyTlsStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut().poll_ready(cx) {
            Poll::Ready(Ok(stream)) => Pin::new(stream).poll_write(cx, data),
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            LazyTlsStream::Ready(stream) => Pin::new(stream).poll_flush(cx),
            _ => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            LazyTlsStream::Ready(stream) => Pin::new(stream).poll_shutdown(cx),
            _ => Poll::Ready(Ok(())),
        }
    }
}

fn read_certificates(file: &Path) -> Result<Vec<CertificateDer<'static>>, TransportError> {
    let what = || format!("certificate file {}", file.display());
    let certs = CertificateDer::pem_file_iter(file)
        .map_err(|error| TransportError::Tls {
            what: what(),
            reason: pem_reason(&error),
        })?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| TransportError::Tls {
            what: what(),
            reason: pem_reason(&error),
        })?;
    if certs.is_empty() {
        return Err(TransportError::Tls {
            what: what(),
            reason: "no -----BEGIN CERTIFICATE----- block found".to_owned(),
        });
    }
    Ok(certs)
}

fn pem_reason(error: &rustls_pki_types::pem::Error) -> String {
    match error {
        rustls_pki_types::pem::Error::Io(io) => io.to_string(),
        rustls_pki_types::pem::Error::NoItemsFound => "no matching PEM block found".to_owned(),
        other => format!("not valid PEM ({other:?})"),
    }
}

/// `--insecure`: any certificate is accepted, but the handshake signatures
/// are still checked, so the peer must hold the key of the certificate it
/// sent.
#[derive(Debug)]
struct AnyCertificate {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
