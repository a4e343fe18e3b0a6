//! russh's per-connection callbacks. Each translates the event and
//! delegates: authentication to `login.rs`, channels to `channels.rs`,
//! remote forwards to `forwards.rs`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use alknet_auth::{AuthConfig, SessionGrant};
use alknet_transport::TransportKind;
use russh::server::{Auth, ChannelOpenHandle, Msg, Session};
use russh::{Channel, ChannelId};
use tokio_util::sync::CancellationToken;

use super::ServerInner;
use super::forwards::RemoteListener;
use super::login::reject;
use super::peer::Peer;
use crate::channel_failure::{peer_grants_at_open, peer_speaks_credit};
use crate::flow::{Backlog, CreditMode};

/// One session's state, from the first callback to the last.
pub(super) struct SessionHandler {
    pub(super) server: Arc<ServerInner>,
    /// The configuration the session started with (reloads apply to new
    /// sessions only).
    pub(super) auth: Arc<AuthConfig>,
    pub(super) peer: Peer,
    pub(super) transport: TransportKind,
    /// What the login established; `None` until authenticated.
    pub(super) grant: Option<Arc<SessionGrant>>,
    /// Cancelled once authenticated (ends the login deadline).
    pub(super) authenticated: CancellationToken,
    /// Cancelled when the connection ends; stops its channels and relays.
    pub(super) session_end: CancellationToken,
    /// This session's remote forwards, by the (address, port) the client
    /// uses to cancel them.
    pub(super) remote_forwards: HashMap<(String, u32), RemoteListener>,
    /// Channels open now, against the per-session limit.
    pub(super) open_channels: Arc<AtomicUsize>,
    /// Each channel's sink task stops when the client closes the channel
    /// (SSH `CLOSE`, not just `EOF`): the target is then let go at once,
    /// as sshd does, even if it never closes its side.
    pub(super) channel_closed: HashMap<ChannelId, CancellationToken>,
    /// What the session's channels received and have not read yet.
    pub(super) backlog: Backlog,
}

/// russh drops the handler when the session ends: channel writers still
/// waiting on it are told (see `Backlog::session_ended`).
impl Drop for SessionHandler {
    fn drop(&mut self) {
        self.backlog.session_ended();
    }
}

impl russh::server::Handler for SessionHandler {
    type Error = russh::Error;

    async fn auth_none(&mut self, _user: &str) -> Result<Auth, Self::Error> {
        // OpenSSH's opening probe: not an attempt worth logging.
        Ok(reject())
    }

    async fn auth_publickey_offered(
        &mut self,
        user: &str,
        offer: russh::server::PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        Ok(self.key_offered(user, offer.public_key))
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: russh::server::VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        Ok(self.login_with_key(user, key.public_key))
    }

    async fn auth_openssh_certificate(
        &mut self,
        user: &str,
        certificate: &alknet_auth::Certificate,
    ) -> Result<Auth, Self::Error> {
        Ok(self.login_with_certificate(user, certificate))
    }

    async fn auth_succeeded(&mut self, session: &mut Session) -> Result<(), Self::Error> {
        self.authenticated.cancel();
        // An alknet client that announces credit honours our grants (see
        // flow.rs); others are left to the SSH window.
        let client = session.remote_sshid();
        self.backlog
            .set_credit_mode(if peer_grants_at_open(client) {
                CreditMode::AtOpen
            } else if peer_speaks_credit(client) {
                CreditMode::Offer
            } else {
                CreditMode::Off
            });
        Ok(())
    }

    async fn channel_open_direct_tcpip(
        &mut self,
        channel: Channel<Msg>,
        host: &str,
        port: u32,
        originator_address: &str,
        _originator_port: u32,
        reply: ChannelOpenHandle,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.open_tcp(channel, host, port, originator_address, reply, session)
            .await;
        Ok(())
    }

    async fn channel_open_direct_streamlocal(
        &mut self,
        channel: Channel<Msg>,
        socket_path: &str,
        reply: ChannelOpenHandle,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.open_unix(channel, socket_path, reply, session).await;
        Ok(())
    }

    async fn tcpip_forward(
        &mut self,
        address: &str,
        port: &mut u32,
        session: &mut Session,
    ) -> Result<bool, Self::Error> {
        Ok(self.listen(address, port, session).await)
    }

    async fn data(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.backlog.arrived(channel, data.len());
        Ok(())
    }

    async fn extended_data(
        &mut self,
        channel: ChannelId,
        code: u32,
        data: &[u8],
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.backlog.extended_data(channel, code, data);
        Ok(())
    }

    fn adjust_window(&mut self, _channel: ChannelId, _current: u32) -> u32 {
        // Grant on consumption, as far as russh lets us: see `flow.rs`.
        self.backlog.next_window()
    }

    async fn channel_close(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.backlog.channel_closed(channel);
        if let Some(closed) = self.channel_closed.remove(&channel) {
            closed.cancel();
        }
        Ok(())
    }

    async fn cancel_tcpip_forward(
        &mut self,
        address: &str,
        port: u32,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        Ok(self.stop_listening(address, port).await)
    }
}
