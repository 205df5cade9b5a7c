//! A `Send + Clone` handle for other threads: commands go through a channel
//! and a `mio::Waker` wakes the loop. Results come back as events.

use crate::config::ClientConfig;
use crate::error::Error;
use crate::id::ClientId;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};

pub(crate) enum Command {
    Start {
        id: ClientId,
        url: String,
        config: Box<ClientConfig>,
    },
    Stop(ClientId),
    SendText(ClientId, String),
    SendBinary(ClientId, bytes::Bytes),
}

/// Talk to a [`ClientSupervisor`](crate::ClientSupervisor) from another
/// thread. Each call enqueues a command and wakes the loop; failures
/// (unknown client, not connected) are logged by the loop and surface as the
/// usual events, since the caller is not on the loop's thread.
#[derive(Clone)]
pub struct Handle {
    tx: mpsc::Sender<Command>,
    waker: Arc<mio::Waker>,
    next_id: Arc<AtomicU64>,
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handle").finish_non_exhaustive()
    }
}

impl Handle {
    pub(crate) fn new(
        tx: mpsc::Sender<Command>,
        waker: Arc<mio::Waker>,
        next_id: Arc<AtomicU64>,
    ) -> Self {
        Handle { tx, waker, next_id }
    }

    fn submit(&self, cmd: Command) -> Result<(), Error> {
        self.tx
            .send(cmd)
            .map_err(|_| Error::Io(std::io::Error::other("event loop is gone")))?;
        self.waker.wake().map_err(Error::Io)
    }

    /// Start a client; its id is returned at once, the client starts on the loop.
    pub fn start_client(&self, url: &str, config: ClientConfig) -> Result<ClientId, Error> {
        let id = ClientId(self.next_id.fetch_add(1, Ordering::Relaxed));
        self.submit(Command::Start {
            id,
            url: url.to_string(),
            config: Box::new(config),
        })?;
        Ok(id)
    }

    /// Stop a client (normal exit, no restart).
    pub fn stop_client(&self, id: ClientId) -> Result<(), Error> {
        self.submit(Command::Stop(id))
    }

    /// Send a text message from another thread.
    pub fn send_text(&self, id: ClientId, text: impl Into<String>) -> Result<(), Error> {
        self.submit(Command::SendText(id, text.into()))
    }

    /// Send a binary message from another thread.
    pub fn send_binary(&self, id: ClientId, data: impl Into<bytes::Bytes>) -> Result<(), Error> {
        self.submit(Command::SendBinary(id, data.into()))
    }
}
