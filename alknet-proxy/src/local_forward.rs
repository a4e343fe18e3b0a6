//! `-L`-style local forwards: a listener whose every connection is sent
//! through a [`StreamOpener`] to one fixed target, or (`…/udp`) a UDP
//! socket whose every sender gets an association to one fixed target.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream, UdpSocket};

use crate::{ForwardSpec, ForwardTarget, ProxyError, StreamOpener, relay_until};

/// How long opening the far end of one forwarded connection may take.
const OPEN_TIMEOUT: Duration = Duration::from_secs(30);

/// A bound local forward, ready to [`serve`](LocalForward::serve).
#[derive(Debug)]
pub struct LocalForward {
    listener: Listener,
    target: ForwardTarget,
}

#[derive(Debug)]
enum Listener {
    Tcp(TcpListener),
    Udp(UdpSocket),
}

impl LocalForward {
    /// Binds the listening side of `spec`.
    pub async fn bind(spec: &ForwardSpec) -> Result<Self, ProxyError> {
        if spec.target == ForwardTarget::Socks {
            return Err(ProxyError::InvalidForward {
                spec: spec.to_string(),
                reason: "a local forward needs a target (port:host:hostport or \
                         port:/socket/path); for SOCKS5 use -D"
                    .into(),
            });
        }
        let addr = spec.bind_addr();
        let listener = match spec.target {
            ForwardTarget::Udp(_) => UdpSocket::bind(&addr).await.map(Listener::Udp),
            _ => TcpListener::bind(&addr).await.map(Listener::Tcp),
        }
        .map_err(|error| ProxyError::Bind { addr, error })?;
        Ok(Self {
            listener,
            target: spec.target.clone(),
        })
    }

    /// Where it listens.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        match &self.listener {
            Listener::Tcp(listener) => listener.local_addr(),
            Listener::Udp(socket) => socket.local_addr(),
        }
    }

    /// Forwards connections until the returned future is dropped. A
    /// connection whose target cannot be opened is closed; the listener
    /// carries on.
    pub async fn serve(self, opener: Arc<dyn StreamOpener>) {
        let listener = match (self.listener, self.target) {
            (Listener::Udp(socket), ForwardTarget::Udp(target)) => {
                return crate::udp_relay::serve_udp_forward(socket, target, opener).await;
            }
            (Listener::Tcp(listener), target) => (listener, target),
            // Bound by kind of target in `bind`.
            (Listener::Udp(_), _) => return,
        };
        let (listener, target) = listener;
        let target = Arc::new(target);
        crate::accept_loop::serve_each(&listener, "local forward", |stream| {
            let (opener, target) = (opener.clone(), target.clone());
            async move { forward(stream, opener.as_ref(), &target).await }
        })
        .await;
    }
}

async fn forward(mut local: TcpStream, opener: &dyn StreamOpener, target: &ForwardTarget) {
    let open = async {
        match target {
            ForwardTarget::Tcp(addr) => opener.open(addr).await,
            ForwardTarget::Unix(path) => opener.open_unix(path).await,
            // Refused by `bind`, or served as UDP.
            ForwardTarget::Socks | ForwardTarget::Udp(_) => {
                Err(crate::OpenError::new(crate::OpenErrorKind::Other))
            }
        }
    };
    match tokio::time::timeout(OPEN_TIMEOUT, open).await {
        Ok(Ok(mut remote)) => relay_until(&mut local, &mut remote, std::future::pending()).await,
        Ok(Err(error)) => tracing::debug!(%error, "forward target not reached"),
        Err(_) => tracing::debug!("forward target not reached in time"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DirectConnector;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn forwards_tcp_and_unix_targets_and_survives_a_dead_one() {
        // A TCP echo target and a Unix echo target.
        let tcp_target = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tcp_port = tcp_target.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = tcp_target.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = socket.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        let dir = tempfile::tempdir().unwrap();
        let socket_path = dir.path().join("echo.sock");
        let unix_target = tokio::net::UnixListener::bind(&socket_path).unwrap();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = unix_target.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = socket.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        let opener: Arc<dyn StreamOpener> = Arc::new(DirectConnector::new(Duration::from_secs(5)));

        for spec in [
            format!("0:127.0.0.1:{tcp_port}"),
            format!("0:{}", socket_path.display()),
        ] {
            let forward = LocalForward::bind(&spec.parse().unwrap()).await.unwrap();
            let addr = forward.local_addr().unwrap();
            tokio::spawn(forward.serve(opener.clone()));
            let mut client = TcpStream::connect(addr).await.unwrap();
            client.write_all(b"ping").await.unwrap();
            client.shutdown().await.unwrap();
            let mut echoed = Vec::new();
            tokio::time::timeout(Duration::from_secs(10), client.read_to_end(&mut echoed))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(echoed, b"ping", "{spec}");
        }

        // A target that is gone: that connection closes, the listener stays.
        let gone = dir.path().join("gone.sock");
        let forward = LocalForward::bind(&format!("0:{}", gone.display()).parse().unwrap())
            .await
            .unwrap();
        let addr = forward.local_addr().unwrap();
        tokio::spawn(forward.serve(opener));
        for _ in 0..2 {
            let mut client = TcpStream::connect(addr).await.unwrap();
            let mut rest = Vec::new();
            let read =
                tokio::time::timeout(Duration::from_secs(10), client.read_to_end(&mut rest)).await;
            assert!(
                read.is_ok(),
                "a dead target must close the connection, not hang"
            );
        }
    }
}
