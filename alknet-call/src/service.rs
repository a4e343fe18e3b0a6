//! The serving side: what a connection hands its [`Service`] for each
//! incoming `call.requested`, and what the service answers.

use std::sync::Arc;

use alknet_identity::Identity;
use futures_util::future::BoxFuture;
use serde_json::Value;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

use crate::connection::{Credit, Outgoing};
use crate::envelope::EventKind;
use crate::{CallError, Caller, EventEnvelope, Failure};

/// Answers the peer's calls. [`OperationRegistry`](crate::OperationRegistry)
/// is the usual one; implement it directly to route calls elsewhere.
pub trait Service: Send + Sync + 'static {
    /// Handles one call. Items of a subscription go out through `emitter`
    /// as they are produced; the returned [`Reply`] ends the call. When the
    /// caller aborts or the connection closes, the future is dropped.
    fn serve(
        &self,
        call: IncomingCall,
        emitter: Emitter,
    ) -> BoxFuture<'static, Result<Reply, Failure>>;
}

/// How a handled call ends.
#[derive(Clone, Debug, PartialEq)]
pub enum Reply {
    /// The one response of a call (`call.responded`).
    Value(Value),
    /// The end of a subscription whose items were emitted (`call.completed`).
    Completed,
    /// The handler gives up without an error (`call.aborted`).
    Aborted(Option<String>),
}

/// One call from the peer.
#[derive(Debug)]
pub struct IncomingCall {
    /// The operation's path, such as `/services/list`.
    pub name: String,
    /// The input (`null` when the caller sent none).
    pub input: Value,
    /// Who is calling, over what, and whether they still want the answer.
    pub context: CallContext,
}

/// What a handler knows about the call besides its input.
#[derive(Clone, Debug)]
pub struct CallContext {
    identity: Option<Arc<Identity>>,
    peer: Caller,
    cancelled: CancellationToken,
}

impl CallContext {
    pub(crate) fn new(
        identity: Option<Arc<Identity>>,
        peer: Caller,
        cancelled: CancellationToken,
    ) -> Self {
        Self {
            identity,
            peer,
            cancelled,
        }
    }

    /// The caller's identity, when the transport established one.
    pub fn identity(&self) -> Option<&Identity> {
        self.identity.as_deref()
    }

    /// The connection the call came in on, for calling the peer back.
    pub fn peer(&self) -> &Caller {
        &self.peer
    }

    /// Resolves when the caller aborts or the connection closes; for work
    /// a handler spawned outside its own future.
    pub fn cancelled(&self) -> WaitForCancellationFuture<'_> {
        self.cancelled.cancelled()
    }

    /// Whether the call has been cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.is_cancelled()
    }
}

/// Sends the items of one subscription, in order.
#[derive(Clone)]
pub struct Emitter {
    id: String,
    outgoing: Outgoing,
    /// The caller's credit, when it speaks credit.
    credit: Option<Arc<Credit>>,
}

impl std::fmt::Debug for Emitter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Emitter").field("id", &self.id).finish()
    }
}

impl Emitter {
    pub(crate) fn new(id: String, outgoing: Outgoing, credit: Option<Arc<Credit>>) -> Self {
        Self {
            id,
            outgoing,
            credit,
        }
    }

    /// Sends one item (`call.responded`), waiting while the caller's
    /// credit is used up (when it grants credit) or the connection's send
    /// buffer is full: a slow subscriber slows its producer.
    pub async fn emit(&self, item: Value) -> Result<(), CallError> {
        if let Some(credit) = &self.credit {
            credit.wait().await;
        }
        let envelope = EventEnvelope::new(EventKind::Responded, self.id.clone(), item);
        let sent = self.outgoing.send_counted(&envelope).await?;
        if let Some(credit) = &self.credit {
            credit.spend(sent);
        }
        Ok(())
    }
}
