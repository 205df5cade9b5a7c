//! Why a connection attempt or an open connection ended, and whether to retry.
//!
//! One enum for every way a connection can go wrong, split by
//! [`Error::is_transient`]: transient errors go through the retry ladder,
//! fatal ones end the client at once (no retry storm against a server that
//! rejected our certificate, credentials or frames). Variants carry only
//! `Copy` data so the core stays allocation-free; the driver logs the detail.

use core::fmt;
use core::time::Duration;

/// A connection failure, categorised for the retry decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Error {
    // ---- transient: retried by the ladder ----
    /// The peer refused the TCP connection.
    ConnectionRefused,
    /// The connection was reset or broke (EOF without a close frame, RST, EPIPE).
    ConnectionReset,
    /// TCP connect, TLS and upgrade did not finish within the connect timeout.
    ConnectTimeout,
    /// Name resolution failed (may be a passing resolver outage).
    Dns,
    /// No route to the host or network.
    Unreachable,
    /// Another I/O error on an established socket.
    Io,
    /// The peer closed with a code other than 1000/1001 (e.g. 1011 after a server crash).
    AbnormalClose {
        /// The close code the peer sent (1006 if there was no close frame).
        code: u16,
    },
    /// The peer sent 1001 "going away" (server restart, deploy): reconnect.
    GoingAway,
    /// The peer closed normally (1000) without being asked: a client that must
    /// stay connected reconnects.
    ClosedByPeer,
    /// `failure_threshold` heartbeats in a row went unanswered: the peer is dead.
    HeartbeatFailed,
    /// No data message arrived within the idle timeout although the transport lived.
    IdleTimeout,
    /// The upgrade got a 5xx, 408 or 429 answer: the server is overloaded or restarting.
    UpgradeUnavailable {
        /// HTTP status code of the answer.
        status: u16,
    },

    // ---- fatal: the client fails with this reason ----
    /// The URL could not be parsed or its scheme is not `ws`/`wss`.
    InvalidUrl,
    /// The server's certificate was rejected (unknown CA, name mismatch, expired).
    TlsCertificate,
    /// The TLS handshake failed for another reason (no common protocol, alert).
    Tls,
    /// The upgrade was refused with a 4xx other than 408/429 (401/403: credentials).
    UpgradeRejected {
        /// HTTP status code of the answer.
        status: u16,
    },
    /// The peer violated the WebSocket protocol (bad frame, bad UTF-8, bad handshake).
    Protocol,
    /// The peer sent a message or frame larger than the configured maximum.
    MessageTooLarge,
    /// The session's authentication request was answered with an error (bad credentials).
    AuthRejected,
}

impl Error {
    /// `true` if reconnecting may help; `false` if retrying would only repeat the failure.
    ///
    /// ```
    /// use zenws_core::Error;
    /// assert!(Error::ConnectionRefused.is_transient());
    /// assert!(!Error::TlsCertificate.is_transient());
    /// assert!(!Error::UpgradeRejected { status: 401 }.is_transient());
    /// ```
    pub fn is_transient(&self) -> bool {
        !matches!(
            self,
            Error::InvalidUrl
                | Error::TlsCertificate
                | Error::Tls
                | Error::UpgradeRejected { .. }
                | Error::Protocol
                | Error::MessageTooLarge
                | Error::AuthRejected
        )
    }

    /// Classify an HTTP status that answered the upgrade request instead of `101`.
    pub fn from_upgrade_status(status: u16) -> Error {
        match status {
            408 | 429 | 500..=599 => Error::UpgradeUnavailable { status },
            _ => Error::UpgradeRejected { status },
        }
    }

    /// Classify a close code the peer sent (1000 is a normal close, not an error).
    pub fn from_close_code(code: u16) -> Option<Error> {
        match code {
            1000 => None, // see Error::ClosedByPeer: the caller decides
            1001 => Some(Error::GoingAway),
            1002 | 1003 | 1007 | 1008 | 1010 => Some(Error::Protocol),
            1009 => Some(Error::MessageTooLarge),
            _ => Some(Error::AbnormalClose { code }),
        }
    }

    /// A short, stable, machine-friendly name (used in logs and JSON events).
    pub fn name(&self) -> &'static str {
        match self {
            Error::ConnectionRefused => "connection_refused",
            Error::ConnectionReset => "connection_reset",
            Error::ConnectTimeout => "connect_timeout",
            Error::Dns => "dns",
            Error::Unreachable => "unreachable",
            Error::Io => "io",
            Error::AbnormalClose { .. } => "abnormal_close",
            Error::GoingAway => "going_away",
            Error::ClosedByPeer => "closed_by_peer",
            Error::HeartbeatFailed => "heartbeat_failed",
            Error::IdleTimeout => "idle_timeout",
            Error::UpgradeUnavailable { .. } => "upgrade_unavailable",
            Error::InvalidUrl => "invalid_url",
            Error::TlsCertificate => "tls_certificate",
            Error::Tls => "tls",
            Error::UpgradeRejected { .. } => "upgrade_rejected",
            Error::Protocol => "protocol",
            Error::MessageTooLarge => "message_too_large",
            Error::AuthRejected => "auth_rejected",
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::ConnectionRefused => f.write_str("connection refused by peer"),
            Error::ConnectionReset => {
                f.write_str("connection reset or closed without a close frame")
            }
            Error::ConnectTimeout => f.write_str("connect/handshake did not finish in time"),
            Error::Dns => f.write_str("name resolution failed"),
            Error::Unreachable => f.write_str("host or network unreachable"),
            Error::Io => f.write_str("I/O error on the connection"),
            Error::AbnormalClose { code } => write!(f, "peer closed abnormally (code {code})"),
            Error::GoingAway => f.write_str("peer is going away (1001)"),
            Error::ClosedByPeer => f.write_str("peer closed the connection (1000)"),
            Error::HeartbeatFailed => f.write_str("heartbeat failed: peer stopped answering"),
            Error::IdleTimeout => f.write_str("no data received within the idle timeout"),
            Error::UpgradeUnavailable { status } => {
                write!(f, "upgrade answered HTTP {status} (server unavailable)")
            }
            Error::InvalidUrl => {
                f.write_str("invalid URL (expected ws:// or wss://host[:port]/path)")
            }
            Error::TlsCertificate => f.write_str("TLS certificate rejected"),
            Error::Tls => f.write_str("TLS handshake failed"),
            Error::UpgradeRejected { status } => write!(f, "upgrade refused with HTTP {status}"),
            Error::Protocol => f.write_str("WebSocket protocol violation by the peer"),
            Error::MessageTooLarge => f.write_str("message or frame exceeds the size limit"),
            Error::AuthRejected => f.write_str("authentication rejected by the server"),
        }
    }
}

#[cfg(feature = "std")]
extern crate std;
#[cfg(feature = "std")]
impl std::error::Error for Error {}

/// Why a send was not accepted. Nothing is queued or dropped silently: the
/// caller still owns the message and decides what to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SendError {
    /// The connection is not open (connecting, backing off, closing). Nothing
    /// is queued across a reconnect: retry after the next `Opened` event.
    NotConnected,
    /// The client was stopped or failed for good.
    Stopped,
    /// The bounded outbound queue is full (slow peer): back off and retry.
    QueueFull,
    /// The message exceeds `max_message_size`.
    MessageTooLarge,
    /// The rate limiter denies it now; it would be allowed after this long.
    RateLimited {
        /// Time until the token bucket holds enough credit.
        retry_after: Duration,
    },
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::NotConnected => f.write_str("not connected (message not sent, not queued)"),
            SendError::Stopped => f.write_str("client is stopped"),
            SendError::QueueFull => f.write_str("outbound queue is full"),
            SendError::MessageTooLarge => f.write_str("message exceeds max_message_size"),
            SendError::RateLimited { retry_after } => {
                write!(
                    f,
                    "rate limited, retry after {} ms",
                    retry_after.as_millis()
                )
            }
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for SendError {}

impl SendError {
    /// A short, stable, machine-friendly name.
    pub fn name(&self) -> &'static str {
        match self {
            SendError::NotConnected => "not_connected",
            SendError::Stopped => "stopped",
            SendError::QueueFull => "queue_full",
            SendError::MessageTooLarge => "message_too_large",
            SendError::RateLimited { .. } => "rate_limited",
        }
    }
}
