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
/// What a web server on HTTP/2 announces (nginx with `http2 on`).
const ALPN_H2: &[u8] = b"h2";
/// ACME TLS-ALPN-01 validation (RFC 8737).
const ALPN_ACME_TLS: &[u8] = b"acme-tls/1";

/// How many bytes of encrypted records rustls may hold for the socket
/// (rustls's default is 64 KiB). An SSH session hands over its output in
/// batches of up to a few hundred KiB; with room for a whole batch, one
/// `writev` carries it instead of one per four records.
const TLS_SEND_BUFFER: usize = 256 * 1024;

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
            Ok(Ok(mut stream)) => {
                stream.get_mut().1.set_buffer_limit(Some(TLS_SEND_BUFFER));
                Ok(Box::new(stream))
            }
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
    let closed = matches!(
        error.kind(),
        io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
    );
    match rejected {
        Some(reason) => TransportError::CertificateRejected {
            server: server.to_owned(),
            reason,
        },
        // Not a protocol mismatch: the server hung up (a limit, or no
        // server behind the port).
        None if closed => TransportError::ClosedBeforeHandshake {
            server: server.to_owned(),
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
        let read = |path: &Path, what: &str| {
            std::fs::read(path).map_err(|error| TransportError::Tls {
                what: format!("{what} file {}", path.display()),
                reason: error.to_string(),
            })
        };
        let cert_pem = read(cert_chain, "certificate")?;
        let key_pem = read(key_file, "private key")?;
        Self::from_pem(
            tcp,
            &cert_pem,
            &key_pem,
            &format!(
                "certificate {} with key {}",
                cert_chain.display(),
                key_file.display()
            ),
        )
    }

    /// TLS on `tcp` with a certificate chain and private key in PEM held in
    /// memory; `name` says where they came from, for errors.
    pub fn from_pem(
        tcp: TcpAcceptor,
        cert_chain: &[u8],
        key: &[u8],
        name: &str,
    ) -> Result<Self, TransportError> {
        let certs = parse_certificates(cert_chain, &format!("certificate of {name}"))?;
        let key = PrivateKeyDer::from_pem_slice(key).map_err(|error| TransportError::Tls {
            what: format!("private key of {name}"),
            reason: pem_reason(&error),
        })?;
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(config_error("TLS server settings"))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(config_error(name))?;
        config.alpn_protocols = vec![ALPN_HTTP11.to_vec()];
        Ok(Self::from_config(tcp, Arc::new(config)))
    }

    /// TLS on `tcp` whose certificate comes from `resolver` at each
    /// handshake (a certificate that changes, such as ACME's). Handshakes
    /// that negotiate ALPN `acme-tls/1` are ACME validations: they get the
    /// resolver's challenge certificate and are then closed, never handed
    /// on to stealth or SSH.
    pub fn from_resolver(
        tcp: TcpAcceptor,
        resolver: Arc<dyn rustls::server::ResolvesServerCert>,
    ) -> Result<Self, TransportError> {
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(config_error("TLS server settings"))?
            .with_no_client_auth()
            .with_cert_resolver(resolver);
        config.alpn_protocols = vec![ALPN_HTTP11.to_vec(), ALPN_ACME_TLS.to_vec()];
        Ok(Self::from_config(tcp, Arc::new(config)))
    }

    /// TLS on `tcp` with a ready-made rustls configuration.
    pub fn from_config(tcp: TcpAcceptor, config: Arc<ServerConfig>) -> Self {
        Self {
            tcp,
            acceptor: tokio_rustls::TlsAcceptor::from(config),
        }
    }

    /// Makes the handshake more like nginx's (with OpenSSL), for a stealth
    /// listener: ALPN `h2` offered before `http/1.1` (the listener then
    /// serves HTTP/2 visitors too; SSH clients keep asking for `http/1.1`),
    /// and stateless resumption tickets, which nginx issues by default
    /// (`ssl_session_tickets on`) and which a TLS 1.2 ServerHello shows.
    pub fn like_nginx(self) -> Result<Self, TransportError> {
        let mut config = ServerConfig::clone(self.acceptor.config());
        if !config.alpn_protocols.iter().any(|alpn| alpn == ALPN_H2) {
            config.alpn_protocols.insert(0, ALPN_H2.to_vec());
        }
        config.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new()
            .map_err(config_error("TLS session tickets"))?;
        Ok(Self::from_config(self.tcp, Arc::new(config)))
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
                Poll::Ready(Ok(stream))
                    if stream.get_ref().1.alpn_protocol() == Some(ALPN_ACME_TLS) =>
                {
                    // An ACME validator has seen the challenge certificate,
                    // which is all it came for.
                    *self = LazyTlsStream::Failed;
                    drop(stream);
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        "ACME validation handshake answered",
                    )));
                }
                Poll::Ready(Ok(mut stream)) => {
                    stream.get_mut().1.set_buffer_limit(Some(TLS_SEND_BUFFER));
                    *self = LazyTlsStream::Ready(Box::new(stream));
                }
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
    let what = format!("certificate file {}", file.display());
    let pem = std::fs::read(file).map_err(|error| TransportError::Tls {
        what: what.clone(),
        reason: error.to_string(),
    })?;
    parse_certificates(&pem, &what)
}

fn parse_certificates(
    pem: &[u8],
    what: &str,
) -> Result<Vec<CertificateDer<'static>>, TransportError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| TransportError::Tls {
            what: what.to_owned(),
            reason: pem_reason(&error),
        })?;
    if certs.is_empty() {
        return Err(TransportError::Tls {
            what: what.to_owned(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const LIMIT: Duration = Duration::from_secs(10);

    /// A listener with a certificate for `localhost` made in-process; the
    /// certificate's PEM file is returned for clients to trust.
    async fn listener(dir: &Path) -> (TlsAcceptor, PathBuf) {
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let cert = dir.join("cert.pem");
        let key = dir.join("key.pem");
        std::fs::write(&cert, certified.cert.pem()).unwrap();
        std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
        let tcp = TcpAcceptor::bind("127.0.0.1:0").await.unwrap();
        (TlsAcceptor::new(tcp, &cert, &key).unwrap(), cert)
    }

    fn client(
        acceptor: &TlsAcceptor,
        options: TlsClientOptions,
    ) -> Result<TlsTransport, TransportError> {
        let tcp = TcpTransport::new(acceptor.local_addr().to_string());
        TlsTransport::new(tcp, &options)
    }

    /// Accepts one stream and echoes one line back.
    fn echo_once(acceptor: Arc<TlsAcceptor>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let (mut stream, info) = acceptor.accept().await.unwrap();
            assert_eq!(info.kind, TransportKind::Tls);
            let mut buffer = [0u8; 5];
            if stream.read_exact(&mut buffer).await.is_ok() {
                let _ = stream.write_all(&buffer).await;
                let _ = stream.flush().await;
            }
        })
    }

    async fn round_trip(transport: &TlsTransport) -> Result<Vec<u8>, TransportError> {
        let mut stream = tokio::time::timeout(LIMIT, transport.connect())
            .await
            .unwrap()?;
        stream.write_all(b"hello").await.unwrap();
        stream.flush().await.unwrap();
        let mut back = vec![0u8; 5];
        stream.read_exact(&mut back).await.unwrap();
        Ok(back)
    }

    #[tokio::test]
    async fn the_verifier_trusts_a_given_ca_checks_the_name_and_refuses_strangers() {
        let dir = tempfile::tempdir().unwrap();
        let (acceptor, cert) = listener(dir.path()).await;
        let acceptor = Arc::new(acceptor);

        // Trusted as a private CA, under the name it was made for.
        let trusted = TlsClientOptions {
            server_name: Some("localhost".into()),
            extra_roots: vec![cert.clone()],
            ..TlsClientOptions::default()
        };
        let server = echo_once(acceptor.clone());
        assert_eq!(
            round_trip(&client(&acceptor, trusted).unwrap())
                .await
                .unwrap(),
            b"hello"
        );
        server.await.unwrap();

        // Not trusted: a rejected certificate, which retrying will not fix.
        let server = echo_once(acceptor.clone());
        let stranger = TlsClientOptions {
            server_name: Some("localhost".into()),
            ..TlsClientOptions::default()
        };
        let error = round_trip(&client(&acceptor, stranger).unwrap())
            .await
            .unwrap_err();
        assert!(
            matches!(error, TransportError::CertificateRejected { .. }),
            "{error:?}"
        );
        assert!(error.to_string().contains("--tls-ca"), "{error}");
        server.abort();

        // Trusted CA, wrong name.
        let server = echo_once(acceptor.clone());
        let wrong_name = TlsClientOptions {
            server_name: Some("example.com".into()),
            extra_roots: vec![cert],
            ..TlsClientOptions::default()
        };
        let error = round_trip(&client(&acceptor, wrong_name).unwrap())
            .await
            .unwrap_err();
        assert!(
            matches!(error, TransportError::CertificateRejected { .. }),
            "{error:?}"
        );
        server.abort();

        // --insecure accepts it all (SSH's host key is then what authenticates).
        let server = echo_once(acceptor.clone());
        let insecure = TlsClientOptions {
            server_name: Some("example.com".into()),
            insecure: true,
            ..TlsClientOptions::default()
        };
        assert_eq!(
            round_trip(&client(&acceptor, insecure).unwrap())
                .await
                .unwrap(),
            b"hello"
        );
        server.await.unwrap();
    }

    #[tokio::test]
    async fn handshakes_run_lazily_so_a_silent_client_holds_up_nobody() {
        let dir = tempfile::tempdir().unwrap();
        let (acceptor, cert) = listener(dir.path()).await;
        let acceptor = Arc::new(acceptor);
        // A client that connects and says nothing is accepted at once…
        let _silent = tokio::net::TcpStream::connect(acceptor.local_addr())
            .await
            .unwrap();
        let (silent_stream, _) = tokio::time::timeout(LIMIT, acceptor.accept())
            .await
            .expect("accept waited for a handshake")
            .unwrap();
        // …and a real one behind it is served meanwhile.
        let server = echo_once(acceptor.clone());
        let trusted = TlsClientOptions {
            server_name: Some("localhost".into()),
            extra_roots: vec![cert],
            ..TlsClientOptions::default()
        };
        assert_eq!(
            round_trip(&client(&acceptor, trusted).unwrap())
                .await
                .unwrap(),
            b"hello"
        );
        server.await.unwrap();
        drop(silent_stream);
    }

    #[tokio::test]
    async fn a_failed_handshake_is_a_read_error_not_a_hang() {
        let dir = tempfile::tempdir().unwrap();
        let (acceptor, _) = listener(dir.path()).await;
        let mut plain = tokio::net::TcpStream::connect(acceptor.local_addr())
            .await
            .unwrap();
        plain.write_all(b"SSH-2.0-not-tls\r\n").await.unwrap();
        let (mut stream, _) = acceptor.accept().await.unwrap();
        let mut buffer = [0u8; 16];
        let read = tokio::time::timeout(LIMIT, stream.read(&mut buffer))
            .await
            .expect("a failed handshake hung");
        assert!(read.is_err(), "{read:?}");
        // And it stays failed.
        assert!(stream.write_all(b"x").await.is_err());
    }

    #[test]
    fn bad_certificate_files_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let error = read_certificates(&empty).unwrap_err().to_string();
        assert!(error.contains("empty.pem"), "{error}");
        let missing = read_certificates(&dir.path().join("missing.pem"))
            .unwrap_err()
            .to_string();
        assert!(missing.contains("missing.pem"), "{missing}");
    }
}
