//! The driver's error type: what a call on the public API can fail with.

use std::fmt;
use zenws_core::SendError;

/// Identifies a client of a [`ClientSupervisor`](crate::ClientSupervisor).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId(pub u64);

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "client#{}", self.0)
    }
}

/// A call on the driver failed. The loop and every other client keep running.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The URL is not a valid `ws://` or `wss://` URL. It is kept
    /// [redacted](crate::url::redact): no userinfo, no query.
    InvalidUrl(String),
    /// The TLS configuration could not be built (unreadable or empty CA file).
    TlsSetup(crate::tls::TlsSetupError),
    /// No client with this id (never started, or already stopped and removed).
    UnknownClient(ClientId),
    /// A client with this id already exists (static children).
    DuplicateClient(ClientId),
    /// The send was refused; the message was not queued.
    Send(SendError),
    /// A request was not tracked (duplicate id in flight, too many in flight, no `id`).
    Request(&'static str),
    /// The supervisor exhausted its restart budget and stopped its children.
    SupervisorTerminated,
    /// The client failed to connect for good (the [`Client`](crate::Client) API).
    Failed(zenws_core::ExitReason, String),
    /// A configuration value is out of range.
    InvalidConfig(String),
    /// An OS error setting up the event loop.
    Io(std::io::Error),
    /// Waiting for an event timed out (the [`Client`](crate::Client) API).
    Timeout,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidUrl(u) => write!(
                f,
                "invalid URL {u:?}: expected ws://host[:port]/path or wss://..."
            ),
            Error::TlsSetup(e) => write!(f, "TLS setup: {e}"),
            Error::UnknownClient(id) => write!(f, "no such client: {id}"),
            Error::DuplicateClient(id) => write!(f, "client id already in use: {id}"),
            Error::Send(e) => write!(f, "send refused: {e}"),
            Error::Request(why) => write!(f, "request not tracked: {why}"),
            Error::SupervisorTerminated => {
                f.write_str("supervisor terminated: restart budget exhausted")
            }
            Error::Failed(reason, detail) if detail.is_empty() => {
                write!(f, "client failed: {reason}")
            }
            Error::Failed(reason, detail) => write!(f, "client failed: {reason} ({detail})"),
            Error::InvalidConfig(why) => write!(f, "invalid configuration: {why}"),
            Error::Io(e) => write!(f, "event loop I/O: {e}"),
            Error::Timeout => f.write_str("timed out"),
        }
    }
}

impl std::error::Error for Error {}

impl From<SendError> for Error {
    fn from(e: SendError) -> Self {
        Error::Send(e)
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Io(e)
    }
}
