//! Remote (`-R`) forwards, server side: admission decides, the server
//! listens, and every connection that arrives becomes a `forwarded-tcpip`
//! channel back to the client, relayed until either side ends or the
//! session does (cancelling the forward stops only its listener).

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use alknet_auth::ChannelRequest;
use alknet_proxy::relay_until;
use russh::server::{Handle, Session};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::handler::SessionHandler;
use crate::flow::{Backlog, TunnelStream};

/// How long the session holding a port may take to answer a probe before
/// a later session of the same identity, asking for that port, ends it.
const HOLDER_PROBE: Duration = Duration::from_secs(3);

/// How long the port of an ended holder may take to be free to bind.
const HOLDER_RELEASE: Duration = Duration::from_secs(2);

/// Who listens on each remote-forward port, server-wide. A client whose
/// network vanished reconnects before the server's keepalives end its old
/// session, which still holds its `-R` ports: when the new session of the
/// same identity asks for one, the holder is probed and, if it answers
/// nothing, ended, so the port moves to the session that is alive.
#[derive(Debug, Default)]
pub(super) struct ForwardHolders {
    by_port: Mutex<HashMap<HeldKey, Holder>>,
    next_id: AtomicU64,
}

/// A remote forward's port: its protocol, the host it is bound on, the
/// port.
pub(super) type HeldKey = (Protocol, String, u16);

/// What a remote forward listens with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum Protocol {
    Tcp,
    Udp,
}

#[derive(Clone, Debug)]
struct Holder {
    id: u64,
    identity: String,
    handle: Handle,
    session_end: CancellationToken,
}

/// A port's entry in [`ForwardHolders`], removed when dropped (with the
/// listener that holds the port).
struct HeldPort {
    holders: Arc<ForwardHolders>,
    key: HeldKey,
    id: u64,
}

impl ForwardHolders {
    fn hold(
        self: &Arc<Self>,
        key: HeldKey,
        identity: String,
        handle: Handle,
        session_end: CancellationToken,
    ) -> HeldPort {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let holder = Holder {
            id,
            identity,
            handle,
            session_end,
        };
        self.lock().insert(key.clone(), holder);
        HeldPort {
            holders: self.clone(),
            key,
            id,
        }
    }

    fn holder(&self, key: &HeldKey) -> Option<Holder> {
        self.lock().get(key).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<HeldKey, Holder>> {
        self.by_port.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for HeldPort {
    fn drop(&mut self) {
        let mut by_port = self.holders.lock();
        if by_port
            .get(&self.key)
            .is_some_and(|holder| holder.id == self.id)
        {
            by_port.remove(&self.key);
        }
    }
}

/// The address a server binds for a remote forward.
///
/// Like OpenSSH with `GatewayPorts no`, a forward listens on loopback only,
/// whatever the client asked, unless the server allows remote binds; then
/// the requested address is used (`""` or `*`: every interface of both
/// families, as `::`; `0.0.0.0`: every IPv4 interface).
pub(crate) fn server_bind_host(requested: &str, gateway_ports: bool) -> &str {
    if !gateway_ports {
        return "127.0.0.1";
    }
    match requested {
        "" | "*" => "::",
        "localhost" => "127.0.0.1",
        other => other,
    }
}

/// A listener a client asked for (`-R`), stopped by its cancel or the
/// session's end.
pub(crate) struct RemoteListener {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl RemoteListener {
    /// Runs `serve` until stopped; `serve` owns the listening socket.
    fn spawn(
        session_end: &CancellationToken,
        serve: impl Future<Output = ()> + Send + 'static,
    ) -> Self {
        let stop = session_end.child_token();
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            tokio::select! {
                () = serve => {}
                () = stopped.cancelled() => {}
            }
        });
        Self { stop, task }
    }

    /// Stops it; once this returns the socket is closed, so the port can
    /// be bound again (a fresh session taking the forward over does).
    async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

impl SessionHandler {
    /// `tcpip-forward`: whether the server now listens for the client.
    pub(super) async fn listen(
        &mut self,
        address: &str,
        port: &mut u32,
        session: &mut Session,
    ) -> bool {
        let Ok(requested) = u16::try_from(*port) else {
            return false;
        };
        let Some(grant) = &self.grant else {
            return false;
        };
        let request = ChannelRequest::Listen {
            host: address,
            port: requested,
            active: self.remote_forwards.len(),
        };
        if let Err(refusal) = self.auth.admit(grant, &request) {
            info!(remote_addr = %self.peer, port = requested, reason = %refusal, "remote forward refused");
            return false;
        }
        let host = server_bind_host(address, self.server.gateway_ports);
        let identity = grant.identity().id.clone();
        let key = (Protocol::Tcp, host.to_owned(), requested);
        let bound = self
            .bind_or_take_over(&key, &identity, || bind_forward(host, requested))
            .await;
        let listener = match bound {
            Ok(listener) => listener,
            Err(error) => {
                info!(remote_addr = %self.peer, port = requested, %error, "remote forward refused");
                return false;
            }
        };
        let Ok(bound) = listener.local_addr() else {
            return false;
        };
        *port = u32::from(bound.port());
        let accepting = accept_forwarded(
            listener,
            session.handle(),
            address.to_owned(),
            *port,
            self.session_end.clone(),
            self.backlog.clone(),
        );
        let listening = self.held_listener(
            (Protocol::Tcp, host.to_owned(), bound.port()),
            identity,
            session.handle(),
            accepting,
        );
        self.remote_forwards
            .insert((address.to_owned(), *port), listening);
        info!(remote_addr = %self.peer, listen = %bound, "remote forward listening");
        true
    }

    /// Runs `serve` (which owns the socket bound for `key`) until the
    /// session ends or the forward is cancelled, listed meanwhile as the
    /// port's holder, so that a later session of `identity` can probe it.
    pub(super) fn held_listener(
        &self,
        key: HeldKey,
        identity: String,
        handle: Handle,
        serve: impl Future<Output = ()> + Send + 'static,
    ) -> RemoteListener {
        let held =
            self.server
                .forward_holders
                .hold(key, identity, handle, self.session_end.clone());
        RemoteListener::spawn(&self.session_end, async move {
            let _held = held;
            serve.await;
        })
    }

    /// Binds `key`'s port with `bind`; when it is in use by an earlier
    /// session of `identity` that answers nothing, ends that session and
    /// binds once its listener let go. The error is the first bind's.
    pub(super) async fn bind_or_take_over<T, F, Bound>(
        &self,
        key: &HeldKey,
        identity: &str,
        mut bind: F,
    ) -> io::Result<T>
    where
        F: FnMut() -> Bound,
        Bound: Future<Output = io::Result<T>>,
    {
        let error = match bind().await {
            Ok(bound) => return Ok(bound),
            Err(error) => error,
        };
        if error.kind() != io::ErrorKind::AddrInUse
            || !self.end_a_silent_holder(key, identity).await
        {
            return Err(error);
        }
        let deadline = tokio::time::Instant::now() + HOLDER_RELEASE;
        loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            match bind().await {
                Ok(bound) => return Ok(bound),
                Err(_) if tokio::time::Instant::now() < deadline => {}
                Err(_) => return Err(error),
            }
        }
    }

    /// Whether the port of `key` was held by another session of `identity`
    /// that did not answer a probe (a request any live client answers, if
    /// only to refuse it) within [`HOLDER_PROBE`], and so was ended.
    async fn end_a_silent_holder(&self, key: &HeldKey, identity: &str) -> bool {
        let Some(holder) = self.server.forward_holders.holder(key) else {
            return false;
        };
        if holder.identity != identity || holder.session_end == self.session_end {
            return false;
        }
        let probe = holder
            .handle
            .cancel_forward_tcpip("alknet-liveness-probe".to_owned(), 0);
        if tokio::time::timeout(HOLDER_PROBE, probe).await.is_ok() {
            return false;
        }
        info!(remote_addr = %self.peer, port = key.2, "the session holding the remote forward's port answers nothing: ending it");
        holder.session_end.cancel();
        true
    }

    /// `cancel-tcpip-forward`: stops listening, the port free again by the
    /// answer; connections already forwarded go on (as with OpenSSH).
    pub(super) async fn stop_listening(&mut self, address: &str, port: u32) -> bool {
        match self.remote_forwards.remove(&(address.to_owned(), port)) {
            Some(listener) => {
                listener.stop().await;
                info!(remote_addr = %self.peer, port, "remote forward closed");
                true
            }
            None => false,
        }
    }
}

/// Binds a forward's listener. `::` (every interface) is one dual-stack
/// socket that takes IPv4 as well, whatever the system's `bindv6only`
/// default, as OpenSSH listens on both families; where IPv6 is off, it is
/// `0.0.0.0` alone.
async fn bind_forward(host: &str, port: u16) -> io::Result<TcpListener> {
    if host == "::" {
        match dual_stack_listener(SocketAddr::from((Ipv6Addr::UNSPECIFIED, port))) {
            Ok(listener) => return Ok(listener),
            Err(error) => debug!(%error, "no IPv6: the forward listens on IPv4 only"),
        }
        return TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).await;
    }
    TcpListener::bind((host, port)).await
}

/// An IPv6 listener with `IPV6_V6ONLY` off (Linux turns it back on when
/// the address is not `::`).
fn dual_stack_listener(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = dual_stack_socket()?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}

fn dual_stack_socket() -> io::Result<socket2::Socket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::IPV6, Type::STREAM, Some(Protocol::TCP))?;
    socket.set_only_v6(false)?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    Ok(socket)
}

/// Accepts on `listener` (until its [`RemoteListener`] stops), opening a
/// channel back to the client for each connection, relayed until it ends
/// or `session_end`. `address` and `port` are echoed so the client can
/// tell its forwards apart.
async fn accept_forwarded(
    listener: TcpListener,
    handle: russh::server::Handle,
    address: String,
    port: u32,
    session_end: CancellationToken,
    backlog: Backlog,
) {
    loop {
        let (mut inbound, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                debug!(%error, "remote forward cannot accept");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = inbound.set_nodelay(true);
        let (handle, address, session_end, backlog) = (
            handle.clone(),
            address.clone(),
            session_end.clone(),
            backlog.clone(),
        );
        // From a task of its own: awaiting a Handle inside a callback would
        // deadlock the session loop.
        tokio::spawn(async move {
            let opened = handle
                .channel_open_forwarded_tcpip(
                    address,
                    port,
                    // A dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d.
                    peer.ip().to_canonical().to_string(),
                    u32::from(peer.port()),
                )
                .await;
            match opened {
                Ok(channel) => {
                    let mut channel = TunnelStream::new(channel, backlog).chunked();
                    relay_until(&mut inbound, &mut channel, session_end.cancelled()).await;
                }
                Err(error) => debug!(%error, "the client refused a forwarded connection"),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_bind_loopback_unless_gateway_ports_allows_more() {
        assert_eq!(server_bind_host("0.0.0.0", false), "127.0.0.1");
        assert_eq!(server_bind_host("", false), "127.0.0.1");
        assert_eq!(server_bind_host("", true), "::");
        assert_eq!(server_bind_host("*", true), "::");
        assert_eq!(server_bind_host("0.0.0.0", true), "0.0.0.0");
        assert_eq!(server_bind_host("localhost", true), "127.0.0.1");
        assert_eq!(server_bind_host("192.0.2.1", true), "192.0.2.1");
    }

    // Tests may not listen on every interface, so the dual-stack socket's
    // option is read back before binding, and the listener is tried on
    // IPv6 loopback.
    #[tokio::test]
    async fn every_interface_is_one_socket_for_both_families() {
        assert!(!dual_stack_socket().unwrap().only_v6().unwrap());
        let listener = dual_stack_listener("[::1]:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let connect = tokio::net::TcpStream::connect(addr);
        let (accepted, connected) = tokio::join!(listener.accept(), connect);
        assert_eq!(
            accepted.unwrap().1.ip(),
            connected.unwrap().local_addr().unwrap().ip()
        );
    }
}
