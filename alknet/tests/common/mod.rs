//! A server and its client keys on a free loopback port, over any of the
//! transports, shared by the facade's integration tests.

#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;
use std::time::Duration;

use alknet::auth::{AuthorizedKeys, PrivateKey, generate_ed25519};
use alknet::stealth::StealthConfig;
use alknet::transport::iroh::{
    IrohAcceptor, IrohOptions, IrohRelay, IrohTransport, derive_secret_key,
};
use alknet::transport::{
    TcpAcceptor, TcpTransport, TlsAcceptor, TlsClientOptions, TlsTransport, Transport,
    TransportAcceptor,
};
use alknet::{Client, ConnectOptions, ListenerOptions, ServeOptions, Server};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const LIMIT: Duration = Duration::from_secs(20);

/// Which transport a test runs over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Tcp,
    /// TLS with a certificate made in-process, trusted as a private CA.
    Tls,
    /// TLS with stealth mode on.
    TlsStealth,
    /// iroh QUIC on loopback, no relay.
    Iroh,
}

pub struct TestServer {
    pub transport: Arc<dyn Transport>,
    pub fingerprint: String,
    pub user_key: PrivateKey,
    pub reload: alknet::auth::ConfigReloadHandle,
    /// The operations served on control channels.
    pub registry: alknet::call::OperationRegistry,
    pub server: Server,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
    /// Holds the TLS test CA file while the server lives.
    _dir: tempfile::TempDir,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_on(Backend::Tcp, |options| options).await
    }

    pub async fn start_with(adjust: impl FnOnce(ServeOptions) -> ServeOptions) -> Self {
        Self::start_on(Backend::Tcp, adjust).await
    }

    pub async fn start_on(
        backend: Backend,
        adjust: impl FnOnce(ServeOptions) -> ServeOptions,
    ) -> Self {
        let user_key = generate_ed25519("user").unwrap();
        let authorized = AuthorizedKeys::from_keys([user_key.public_key().clone()]);
        let host_key = generate_ed25519("host").unwrap();
        let options =
            ServeOptions::new(host_key.clone(), authorized).dial_timeout(Duration::from_secs(2));
        let server = Server::new(adjust(options));
        let reload = server.reload_handle();
        let registry = server.registry();
        let fingerprint = server.host_key_fingerprint();
        let dir = tempfile::tempdir().unwrap();
        let (acceptor, transport, listener): (Box<dyn TransportAcceptor>, Arc<dyn Transport>, _) =
            match backend {
                Backend::Tcp => {
                    let acceptor = TcpAcceptor::bind("127.0.0.1:0").await.unwrap();
                    let transport = TcpTransport::new(acceptor.local_addr().to_string());
                    (
                        Box::new(acceptor),
                        Arc::new(transport),
                        ListenerOptions::default(),
                    )
                }
                Backend::Tls | Backend::TlsStealth => {
                    let (acceptor, transport) = tls_pair(dir.path()).await;
                    let listener = if backend == Backend::TlsStealth {
                        ListenerOptions::stealth(StealthConfig::default())
                    } else {
                        ListenerOptions::default()
                    };
                    (Box::new(acceptor), Arc::new(transport), listener)
                }
                Backend::Iroh => {
                    let options = IrohOptions {
                        relay: IrohRelay::Disabled,
                        bind: Some("127.0.0.1:0".parse().unwrap()),
                        proxy: None,
                    };
                    let acceptor = IrohAcceptor::bind(&options, derive_secret_key(b"test server"))
                        .await
                        .unwrap();
                    let transport = IrohTransport::new(
                        options,
                        acceptor.endpoint_id(),
                        &acceptor.bound_sockets(),
                    );
                    (
                        Box::new(acceptor),
                        Arc::new(transport),
                        ListenerOptions::default(),
                    )
                }
            };
        let (stop, stopped) = oneshot::channel::<()>();
        let serving = server.clone();
        let task = tokio::spawn(async move {
            serving
                .serve_with(acceptor.as_ref(), &listener, async move {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
            acceptor.close().await;
        });
        Self {
            transport,
            fingerprint,
            user_key,
            reload,
            registry,
            server,
            stop: Some(stop),
            task,
            _dir: dir,
        }
    }

    pub fn options(&self) -> ConnectOptions {
        ConnectOptions::new(self.user_key.clone(), "tester").with_host_key(self.fingerprint.clone())
    }

    pub async fn client(&self) -> Client {
        tokio::time::timeout(
            LIMIT,
            Client::connect(self.transport.as_ref(), self.options()),
        )
        .await
        .expect("connect hung")
        .expect("connect failed")
    }

    pub async fn shutdown(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(LIMIT, self.task)
            .await
            .expect("shutdown hung")
            .unwrap();
        self.transport.close().await;
    }
}

/// A TLS listener with a certificate for `localhost` made in-process, and
/// a client that trusts it as a private CA and checks the name.
async fn tls_pair(dir: &std::path::Path) -> (TlsAcceptor, TlsTransport) {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert_file = dir.join("cert.pem");
    let key_file = dir.join("key.pem");
    std::fs::write(&cert_file, certified.cert.pem()).unwrap();
    std::fs::write(&key_file, certified.signing_key.serialize_pem()).unwrap();
    let tcp = TcpAcceptor::bind("127.0.0.1:0").await.unwrap();
    let port = tcp.local_addr().port();
    let acceptor = TlsAcceptor::new(tcp, &cert_file, &key_file).unwrap();
    let mut client = TlsClientOptions::default();
    client.server_name = Some("localhost".to_owned());
    client.extra_roots = vec![cert_file];
    let transport =
        TlsTransport::new(TcpTransport::new(format!("127.0.0.1:{port}")), &client).unwrap();
    (acceptor, transport)
}
