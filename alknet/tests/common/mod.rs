//! A server and its client keys on a free loopback port, shared by the
//! facade's integration tests.

#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use alknet::auth::{AuthorizedKeys, PrivateKey, generate_ed25519};
use alknet::transport::{TcpAcceptor, TcpTransport};
use alknet::{Client, ConnectOptions, ServeOptions, Server};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const LIMIT: Duration = Duration::from_secs(20);

pub struct TestServer {
    pub transport: TcpTransport,
    pub fingerprint: String,
    pub user_key: PrivateKey,
    pub reload: alknet::auth::ConfigReloadHandle,
    /// The operations served on control channels.
    pub registry: alknet::call::OperationRegistry,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(adjust: impl FnOnce(&mut ServeOptions)) -> Self {
        let user_key = generate_ed25519("user").unwrap();
        let authorized = AuthorizedKeys::from_keys([user_key.public_key().clone()]);
        let mut options = ServeOptions::new(generate_ed25519("host").unwrap(), authorized);
        options.dial_timeout = Duration::from_secs(2);
        adjust(&mut options);
        let server = Server::new(options);
        let reload = server.reload_handle();
        let registry = server.registry();
        let acceptor = TcpAcceptor::bind("127.0.0.1:0").await.unwrap();
        let transport = TcpTransport::new(acceptor.local_addr().to_string());
        let fingerprint = server.host_key_fingerprint();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            server
                .serve(&acceptor, async move {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        Self {
            transport,
            fingerprint,
            user_key,
            reload,
            registry,
            stop: Some(stop),
            task,
        }
    }

    pub fn options(&self) -> ConnectOptions {
        ConnectOptions::new(self.user_key.clone(), "tester").with_host_key(self.fingerprint.clone())
    }

    pub async fn client(&self) -> Client {
        tokio::time::timeout(LIMIT, Client::connect(&self.transport, self.options()))
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
    }
}
