//! What the driver tells the user.

use crate::error::ClientId;
use std::time::Duration;
use zenws_core::{Error as Reason, ExitReason};

/// A data message received from the peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// A text message (valid UTF-8).
    Text(tungstenite::Utf8Bytes),
    /// A binary message.
    Binary(tungstenite::Bytes),
}

impl Message {
    /// The payload bytes.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Message::Text(t) => t.as_bytes(),
            Message::Binary(b) => b,
        }
    }

    /// The text, if this is a text message.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Message::Text(t) => Some(t.as_str()),
            Message::Binary(_) => None,
        }
    }
}

/// Lifecycle and data events, drained with
/// [`ClientSupervisor::poll_event`](crate::ClientSupervisor::poll_event) or
/// delivered to a [`Handler`].
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum ClientEvent {
    /// The WebSocket is open; sends are accepted.
    Opened {
        /// Which client.
        id: ClientId,
    },
    /// A data message arrived.
    Message {
        /// Which client.
        id: ClientId,
        /// The message.
        message: Message,
    },
    /// An open connection was lost.
    Disconnected {
        /// Which client.
        id: ClientId,
        /// Why.
        reason: Reason,
        /// Detail from the transport (OS error text, TLS alert, ...).
        detail: String,
    },
    /// A connection attempt failed or the connection dropped; the next attempt follows after `delay`.
    Reconnecting {
        /// Which client.
        id: ClientId,
        /// Attempt number within this outage (1-based).
        attempt: u32,
        /// Backoff before it.
        delay: Duration,
        /// Why.
        reason: Reason,
        /// Detail from the transport.
        detail: String,
    },
    /// The supervisor restarted the client after an abnormal exit.
    Restarted {
        /// Which client.
        id: ClientId,
        /// Restarts of this client so far.
        restarts: u32,
        /// Why it had exited.
        reason: ExitReason,
    },
    /// A heartbeat went unanswered.
    HeartbeatMissed {
        /// Which client.
        id: ClientId,
        /// Misses in a row.
        consecutive: u32,
    },
    /// The heartbeat declared the peer dead; the socket was aborted and a reconnect follows.
    HeartbeatFailed {
        /// Which client.
        id: ClientId,
    },
    /// Authentication succeeded (session layer).
    Authenticated {
        /// Which client.
        id: ClientId,
    },
    /// All tracked subscriptions were re-sent after an open.
    Restored {
        /// Which client.
        id: ClientId,
        /// How many channels.
        channels: usize,
    },
    /// A tracked JSON-RPC request got its response (the response itself
    /// arrives as a [`ClientEvent::Message`] just before).
    RequestResolved {
        /// Which client.
        id: ClientId,
        /// The request id.
        request: u64,
    },
    /// A tracked request got no response in time.
    RequestTimedOut {
        /// Which client.
        id: ClientId,
        /// The request id.
        request: u64,
    },
    /// The connection dropped while a tracked request was in flight.
    RequestFailed {
        /// Which client.
        id: ClientId,
        /// The request id.
        request: u64,
    },
    /// The client stopped normally (user stop or close); it is removed.
    Stopped {
        /// Which client.
        id: ClientId,
    },
    /// The client ended abnormally and is not restarted; it is removed.
    Failed {
        /// Which client.
        id: ClientId,
        /// Why.
        reason: ExitReason,
        /// Detail from the transport.
        detail: String,
    },
    /// The supervisor exceeded its restart intensity: it stopped every child.
    BudgetExhausted {
        /// Restarts in the window when it gave up.
        restarts: u32,
        /// The window.
        window: Duration,
    },
}

impl ClientEvent {
    /// The client the event is about (`None` for supervisor-wide events).
    pub fn client(&self) -> Option<ClientId> {
        use ClientEvent::*;
        match self {
            Opened { id }
            | Message { id, .. }
            | Disconnected { id, .. }
            | Reconnecting { id, .. }
            | Restarted { id, .. }
            | HeartbeatMissed { id, .. }
            | HeartbeatFailed { id }
            | Authenticated { id }
            | Restored { id, .. }
            | RequestResolved { id, .. }
            | RequestTimedOut { id, .. }
            | RequestFailed { id, .. }
            | Stopped { id }
            | Failed { id, .. } => Some(*id),
            BudgetExhausted { .. } => None,
        }
    }
}

/// Receives events as they happen, with the supervisor at hand to react
/// (send, stop, start). Used by [`ClientSupervisor::run`](crate::ClientSupervisor::run).
pub trait Handler {
    /// One event.
    fn on_event(&mut self, sup: &mut crate::ClientSupervisor, event: ClientEvent);
}

impl<F: FnMut(&mut crate::ClientSupervisor, ClientEvent)> Handler for F {
    fn on_event(&mut self, sup: &mut crate::ClientSupervisor, event: ClientEvent) {
        self(sup, event)
    }
}
