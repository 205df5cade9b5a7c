//! What the driver tells the user.

use crate::id::ClientId;
use crate::message::Message;
use std::time::Duration;
use zenws_core::session::Rejection;
use zenws_core::{Error as Reason, ExitReason};

/// Lifecycle and data events, drained with
/// [`ClientSupervisor::poll_event`](crate::ClientSupervisor::poll_event) or
/// delivered to a [`Handler`](crate::Handler).
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
    /// The server refused the heartbeat setup (Deribit `set_heartbeat`):
    /// asked again after a delay; the silence meanwhile is not a failure.
    HeartbeatSetupFailed {
        /// Which client.
        id: ClientId,
        /// The JSON-RPC error code.
        code: i64,
    },
    /// Authentication succeeded on the new socket (session layer). The
    /// answer (tokens) is never handed over as a message.
    Authenticated {
        /// Which client.
        id: ClientId,
        /// `true` if the refresh-token grant was used, else the credentials.
        refresh: bool,
        /// The token's lifetime, if the server said.
        expires_in: Option<Duration>,
    },
    /// The token was refreshed on the open socket (before it expired).
    TokenRefreshed {
        /// Which client.
        id: ClientId,
        /// The new token's lifetime.
        expires_in: Option<Duration>,
    },
    /// A transient authentication error (busy, maintenance, rate limit):
    /// retried on the same socket after `delay`.
    AuthRetrying {
        /// Which client.
        id: ClientId,
        /// The JSON-RPC error code.
        code: Option<i64>,
        /// Until the next attempt.
        delay: Duration,
    },
    /// The server said its rate limit was hit (e.g. Deribit 10028): sends
    /// are refused (`RateLimited`) and reconnects held until the client's
    /// credits have refilled.
    RateLimited {
        /// Which client.
        id: ClientId,
        /// The JSON-RPC error code.
        code: i64,
    },
    /// A step after authentication was answered (for Deribit with
    /// cancel-on-disconnect, step 0 is `enable_cancel_on_disconnect`).
    AfterAuth {
        /// Which client.
        id: ClientId,
        /// Which step.
        step: u8,
        /// `None`: done; `Some(Some(code))`: refused; `Some(None)`: no answer in time.
        error: Option<Option<i64>>,
    },
    /// A tracked channel is not subscribed on this socket, and why.
    SubscriptionRejected {
        /// Which client.
        id: ClientId,
        /// The channel.
        channel: String,
        /// Why (refused with a code, needs authentication, no answer).
        reason: Rejection,
    },
    /// Every tracked channel was answered after an open (or a runtime
    /// subscribe): `granted` are confirmed by the server; `rejected` were
    /// each reported with [`ClientEvent::SubscriptionRejected`].
    Restored {
        /// Which client.
        id: ClientId,
        /// The channels the server confirmed.
        granted: Vec<String>,
        /// How many were not subscribed.
        rejected: usize,
    },
    /// A tracked JSON-RPC request got a result (the response itself
    /// arrives as a [`ClientEvent::Message`] just before).
    RequestResolved {
        /// Which client.
        id: ClientId,
        /// The request id.
        request: u64,
    },
    /// A tracked JSON-RPC request got an error answer (the response itself
    /// arrives as a [`ClientEvent::Message`] just before).
    RequestError {
        /// Which client.
        id: ClientId,
        /// The request id.
        request: u64,
        /// `error.code`.
        code: i64,
        /// `error.message`, at most 64 bytes.
        message: String,
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
            | HeartbeatSetupFailed { id, .. }
            | Authenticated { id, .. }
            | TokenRefreshed { id, .. }
            | AuthRetrying { id, .. }
            | RateLimited { id, .. }
            | AfterAuth { id, .. }
            | SubscriptionRejected { id, .. }
            | Restored { id, .. }
            | RequestResolved { id, .. }
            | RequestError { id, .. }
            | RequestTimedOut { id, .. }
            | RequestFailed { id, .. }
            | Stopped { id }
            | Failed { id, .. } => Some(*id),
            BudgetExhausted { .. } => None,
        }
    }
}
