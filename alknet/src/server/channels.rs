//! Channel requests: each is judged by admission (alknet-auth), then handed
//! to the sink for its target on a task of its own, off the session loop —
//! a slow target must not stall the session or its other channels.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use alknet_auth::ChannelRequest;
use alknet_proxy::{OpenErrorKind, TargetAddr};
use russh::server::{ChannelOpenHandle, Msg, Session};
use russh::{Channel, ChannelOpenFailure};
use tracing::debug;

use super::handler::SessionHandler;
use super::sink::{ChannelInfo, ChannelSink, ChannelTarget, IncomingChannel};
use super::udp::UdpSink;
use crate::channel_failure::{failure_for, peer_is_alknet};
use crate::control::{CONTROL_HOST, CONTROL_PORT};
use alknet_proxy::udp_frame::{UDP_LISTEN_HOST, UDP_SERVICE_HOST, UDP_SERVICE_PORT};

/// Keeps a channel counted while its sink runs.
struct Counted(Arc<AtomicUsize>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl SessionHandler {
    /// `direct-tcpip`: the control channel, a UDP association, or a TCP
    /// target.
    pub(super) async fn open_tcp(
        &mut self,
        channel: Channel<Msg>,
        host: &str,
        port: u32,
        originator: &str,
        reply: ChannelOpenHandle,
        session: &mut Session,
    ) {
        let alknet_peer = peer_is_alknet(session.remote_sshid());
        let Ok(port) = u16::try_from(port) else {
            reply.reject(ChannelOpenFailure::ConnectFailed).await;
            return;
        };
        if host.eq_ignore_ascii_case(UDP_LISTEN_HOST) {
            let handle = session.handle();
            self.listen_udp(
                channel,
                originator,
                u32::from(port),
                reply,
                alknet_peer,
                handle,
            )
            .await;
            return;
        }
        let is_control = port == CONTROL_PORT && host.eq_ignore_ascii_case(CONTROL_HOST);
        let is_udp = port == UDP_SERVICE_PORT && host.eq_ignore_ascii_case(UDP_SERVICE_HOST);
        let request = if is_control || is_udp {
            ChannelRequest::Service { host, port }
        } else {
            ChannelRequest::Connect { host, port }
        };
        let target = ChannelTarget::Tcp(TargetAddr::from_host_port(host, port));
        let sink = if is_control {
            self.server.control.clone() as Arc<dyn ChannelSink>
        } else if is_udp {
            Arc::new(UdpSink)
        } else {
            self.server.sinks.for_target(&target)
        };
        self.dispatch(channel, reply, alknet_peer, &request, target, sink)
            .await;
    }

    /// `direct-streamlocal`: a Unix socket.
    pub(super) async fn open_unix(
        &mut self,
        channel: Channel<Msg>,
        path: &str,
        reply: ChannelOpenHandle,
        session: &mut Session,
    ) {
        let alknet_peer = peer_is_alknet(session.remote_sshid());
        let request = ChannelRequest::UnixSocket { path };
        let target = ChannelTarget::Unix(PathBuf::from(path));
        let sink = self.server.sinks.for_target(&target);
        self.dispatch(channel, reply, alknet_peer, &request, target, sink)
            .await;
    }

    /// Admission, the per-session channel limit, then the sink. Neither
    /// the target nor the decision's details are logged above debug, and
    /// the target never.
    async fn dispatch(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        alknet_peer: bool,
        request: &ChannelRequest<'_>,
        target: ChannelTarget,
        sink: Arc<dyn ChannelSink>,
    ) {
        let Some(grant) = self.grant.clone() else {
            reply
                .reject(ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return;
        };
        if let Err(refusal) = self.auth.admit(&grant, request) {
            debug!(remote_addr = %self.peer, reason = %refusal, "channel refused");
            reply
                .reject(failure_for(OpenErrorKind::NotAllowed, alknet_peer))
                .await;
            return;
        }
        let open = self.open_channels.fetch_add(1, Ordering::Relaxed);
        let counted = Counted(self.open_channels.clone());
        if open >= self.server.max_channels_per_session {
            debug!(remote_addr = %self.peer, "channel refused: too many open on this session");
            reply.reject(ChannelOpenFailure::ResourceShortage).await;
            return;
        }
        let incoming = IncomingChannel {
            info: ChannelInfo {
                identity: grant.identity().clone(),
                target,
                remote_addr: self.peer.addr,
                transport: self.transport.clone(),
            },
            channel,
            reply,
            alknet_peer,
            grant,
            auth: self.auth.clone(),
            backlog: self.backlog.clone(),
        };
        // Cancelled when the client closes the channel or the session ends.
        let closed = self.session_end.child_token();
        // Entries of channels that ended on our side wait for the client's
        // CLOSE; sweep them now and then, not on every open.
        if self.channel_closed.len() > 2 * open + 64 {
            self.channel_closed.retain(|_, token| !token.is_cancelled());
        }
        self.channel_closed
            .insert(incoming.channel.id(), closed.clone());
        tokio::spawn(async move {
            let _counted = counted;
            tokio::select! {
                () = sink.handle(incoming) => {}
                () = closed.cancelled() => {}
            }
            // Done on our side (target gone, or sink finished): forget it.
            closed.cancel();
        });
    }
}
