//! The driver's error type: what a call on the public API can fail with.

use crate::id::ClientId;
use std::fmt;
use zenws_core::SendError;

/// A call on the driver failed. The loop and every other client keep running.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The URL is not a valid `ws://` or `wss://` URL. It is kept
    /// [redacted](crate::redact_url): no userinfo, no query.
    InvalidUrl(String),
    /// The TLS configuration could not be built (unreadable or empty CA file).
    TlsSetup(crate::TlsSetupError),
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
        }
    }
}

impl std::error::Error for Error {
    /// The wrapped error: the I/O error, the TLS setup error (which has the
    /// file's I/O error or rustls's error as its own source), the refused send.
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::TlsSetup(e) => Some(e),
            Error::Io(e) => Some(e),
            Error::Send(e) => Some(e),
            _ => None,
        }
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn source_is_the_wrapped_error() {
        let e = Error::from(std::io::Error::other("boom"));
        assert_eq!(e.source().unwrap().to_string(), "boom");
        let e = Error::from(SendError::QueueFull);
        assert_eq!(
            e.source().unwrap().to_string(),
            SendError::QueueFull.to_string()
        );
        let e = Error::TlsSetup(crate::TlsSetupError::ReadCaFile {
            path: "/x/ca.pem".into(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        });
        let tls = e.source().expect("the TLS setup error");
        assert!(tls.to_string().contains("/x/ca.pem"), "{tls}");
        assert!(tls.source().is_some(), "and its I/O error below it");
        assert!(Error::UnknownClient(ClientId(1)).source().is_none());
    }

    #[test]
    fn a_refused_send_shows_no_body() {
        // A refused send hands the message back; its Debug shows no body.
        let t = crate::transport::SendFailure::NotOpen(tungstenite::Message::text(
            r#"{"params":{"client_secret":"body-secret"}}"#,
        ));
        let shown = format!("{t:?} {t}");
        assert!(!shown.contains("body-secret"), "{shown}");
        assert!(shown.contains("NotOpen"), "{shown}");
    }
}
