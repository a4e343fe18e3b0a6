//! One SSH channel as JavaScript sees it: `read`, `write`, `shutdown`,
//! `close`, each a promise. `lib/duplex.js` wraps it in a Node `Duplex`,
//! which calls `read` only when its consumer wants more — so an unread
//! stream stops taking data, the channel's SSH window closes, and memory
//! stays bounded — and waits for each `write` before accepting the next.

use std::sync::Arc;

use alknet::Client;
use alknet::transport::{BoxStream, Transport};
use napi::bindgen_prelude::Buffer;
use napi_derive::napi;
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::{Mutex, oneshot};
use tokio_util::sync::CancellationToken;

use crate::error::{Code, error};

/// The largest chunk one `read` returns. Each read is a JavaScript round
/// trip (a task spawned, a thread-safe call back, a promise), and a bulk
/// reader finds reads full: 1 GiB ×3 through one Duplex, reads of 256 KiB
/// averaged 247 KiB; at 1 MiB they average ~630 KiB and node's CPU fell
/// ~9 % (3.94 → 3.59 s, five runs each).
const MAX_READ: usize = 1024 * 1024;

/// What the channel lives in: its own client session (from `connect`), or
/// a server session (from `serve`), which is told when the channel is done.
pub(crate) enum Owner {
    Session {
        client: Arc<Client>,
        transport: Arc<dyn Transport>,
    },
    /// Dropped when the channel is closed or collected: the server then
    /// counts it as gone.
    Server { _done: oneshot::Sender<()> },
}

/// One SSH channel: a byte stream to its far end.
#[napi]
pub struct Channel {
    reader: Mutex<Option<ReadHalf<BoxStream>>>,
    writer: Mutex<Option<WriteHalf<BoxStream>>>,
    closed: CancellationToken,
    owner: std::sync::Mutex<Option<Owner>>,
}

impl Channel {
    pub(crate) fn new(stream: BoxStream, owner: Owner) -> Self {
        let (reader, writer) = tokio::io::split(stream);
        Self {
            reader: Mutex::new(Some(reader)),
            writer: Mutex::new(Some(writer)),
            closed: CancellationToken::new(),
            owner: std::sync::Mutex::new(Some(owner)),
        }
    }

    fn closed_error() -> napi::Error {
        error(Code::Closed, "the channel is closed")
    }
}

#[napi]
impl Channel {
    /// Up to `max` bytes (at most 1 MiB) as they arrive; `null` at the
    /// end of the stream (the far end sent EOF or closed).
    #[napi]
    pub async fn read(&self, max: u32) -> napi::Result<Option<Buffer>> {
        let mut reader = self.reader.lock().await;
        let Some(reader) = reader.as_mut() else {
            return Ok(None);
        };
        let size = usize::try_from(max).unwrap_or(MAX_READ).clamp(1, MAX_READ);
        // Read into spare capacity: zeroing the buffer first cost as much as
        // the read.
        let mut buffer = Vec::with_capacity(size);
        let read = tokio::select! {
            read = reader.read_buf(&mut buffer) => read,
            () = self.closed.cancelled() => return Ok(None),
        };
        match read {
            Ok(0) => return Ok(None),
            Ok(_) => {}
            Err(failure) => return Err(error(Code::Closed, failure)),
        }
        // Take whatever else has already arrived, without waiting: one
        // JavaScript round trip per SSH message was the cost (1 GiB through
        // one Duplex on loopback: 250 → 400 MiB/s).
        while buffer.len() < size {
            tokio::select! {
                biased;
                read = reader.read_buf(&mut buffer) => match read {
                    Ok(n) if n > 0 => {}
                    // EOF or an error shows on the next read.
                    _ => break,
                },
                () = std::future::ready(()) => break,
            }
        }
        // The Buffer keeps the allocation: not 1 MiB for a keystroke.
        if buffer.len() < buffer.capacity() / 2 {
            buffer.shrink_to_fit();
        }
        Ok(Some(buffer.into()))
    }

    /// Writes all of `data`; resolves once the channel took it (which
    /// waits while the SSH window is full).
    #[napi]
    pub async fn write(&self, data: Buffer) -> napi::Result<()> {
        let mut writer = self.writer.lock().await;
        let Some(writer) = writer.as_mut() else {
            return Err(Self::closed_error());
        };
        let written = tokio::select! {
            written = writer.write_all(&data) => written,
            () = self.closed.cancelled() => return Err(Self::closed_error()),
        };
        written.map_err(|failure| error(Code::Closed, failure))
    }

    /// Sends EOF: no more writes; reading goes on.
    #[napi]
    pub async fn shutdown(&self) -> napi::Result<()> {
        let mut writer = self.writer.lock().await;
        if let Some(mut half) = writer.take() {
            half.shutdown()
                .await
                .map_err(|failure| error(Code::Closed, failure))?;
        }
        Ok(())
    }

    /// Closes the channel (and, for `connect`, its session) at once.
    #[napi]
    pub async fn close(&self) -> napi::Result<()> {
        self.closed.cancel();
        self.reader.lock().await.take();
        self.writer.lock().await.take();
        let owner = self
            .owner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(Owner::Session { client, transport }) = owner {
            client.disconnect().await;
            transport.close().await;
        }
        Ok(())
    }
}
