//! Frames the core decides to send on its own (heartbeats, heartbeat replies).
//!
//! An [`Action::Send`](crate::Action::Send) carries a small [`Frame`] value,
//! not bytes: the bytes are rendered on demand with [`Frame::encode`] into a
//! stack buffer, so a connection's state stays small and allocation-free.

use crate::heartbeat::Dialect;

/// Largest payload of a core-generated frame (a control frame's limit is 125).
pub const MAX_ENCODED: usize = 128;

/// Reserved JSON-RPC id range for requests the core itself sends (Deribit
/// `public/set_heartbeat` and `public/test`). User ids must stay below it.
pub const CORE_ID_BASE: u64 = 9_000_000_000_000;

/// Start of the session's share of the reserved range (authentication,
/// subscribe, after-auth steps); the heartbeat uses `CORE_ID_BASE` up to here.
pub const SESSION_ID_BASE: u64 = CORE_ID_BASE + 500_000_000_000;

/// The WebSocket opcode a frame goes out with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameKind {
    /// A text data message.
    Text,
    /// A binary data message.
    Binary,
    /// A ping control frame.
    Ping,
}

/// A frame the core wants on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frame {
    /// A WebSocket ping whose 8-byte payload is `token` (big-endian), unique
    /// per connection so a late pong can't be mistaken for the current one.
    Ping {
        /// Unique per ping on this connection.
        token: u64,
    },
    /// An application heartbeat's setup request (Deribit:
    /// `public/set_heartbeat`), rendered by its [`Dialect`].
    AppSetup {
        /// JSON-RPC id (from the core's reserved range).
        id: u64,
        /// Interval in seconds.
        interval_secs: u32,
        /// The exchange's heartbeat dialect.
        dialect: &'static Dialect,
    },
    /// The answer to an application heartbeat's test request (Deribit:
    /// `public/test` for a `test_request`), rendered by its [`Dialect`].
    AppReply {
        /// JSON-RPC id (from the core's reserved range).
        id: u64,
        /// The exchange's heartbeat dialect.
        dialect: &'static Dialect,
    },
    /// The custom heartbeat strategy's ping, with the configured payload.
    Custom {
        /// The payload, from [`Strategy::Custom`](crate::heartbeat::Strategy::Custom).
        payload: &'static [u8],
        /// How it is sent.
        kind: FrameKind,
    },
}

/// A rendered frame: opcode plus up to [`MAX_ENCODED`] bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Encoded {
    /// Opcode to send with.
    pub kind: FrameKind,
    /// The payload bytes.
    pub bytes: heapless::Vec<u8, MAX_ENCODED>,
}

impl Frame {
    /// Render the frame's bytes.
    ///
    /// ```
    /// use zenws_core::frame::{Frame, FrameKind};
    /// let e = Frame::AppReply { id: 7, dialect: &zenws_core::exchange::deribit::DIALECT }.encode();
    /// assert_eq!(e.kind, FrameKind::Text);
    /// assert_eq!(&e.bytes[..], br#"{"jsonrpc":"2.0","id":7,"method":"public/test","params":{}}"#);
    /// ```
    pub fn encode(&self) -> Encoded {
        let mut text: heapless::String<MAX_ENCODED> = heapless::String::new();
        let kind = match *self {
            Frame::Ping { token } => {
                let mut bytes = heapless::Vec::new();
                // 8 bytes always fit in MAX_ENCODED.
                let _ = bytes.extend_from_slice(&token.to_be_bytes());
                return Encoded {
                    kind: FrameKind::Ping,
                    bytes,
                };
            }
            Frame::Custom { payload, kind } => {
                let n = payload.len().min(MAX_ENCODED);
                let mut bytes = heapless::Vec::new();
                let _ = bytes.extend_from_slice(&payload[..n]);
                return Encoded { kind, bytes };
            }
            // Fits: the longest u64/u32 render is well under 128 bytes.
            Frame::AppSetup {
                id,
                interval_secs,
                dialect,
            } => {
                let _ = (dialect.setup)(&mut text, id, interval_secs);
                FrameKind::Text
            }
            Frame::AppReply { id, dialect } => {
                let _ = (dialect.reply)(&mut text, id);
                FrameKind::Text
            }
        };
        let mut bytes = heapless::Vec::new();
        let _ = bytes.extend_from_slice(text.as_bytes());
        Encoded { kind, bytes }
    }

    /// The token of a ping payload produced by [`Frame::Ping`], if it is one.
    pub fn ping_token(payload: &[u8]) -> Option<u64> {
        let arr: [u8; 8] = payload.try_into().ok()?;
        Some(u64::from_be_bytes(arr))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_heartbeat_renders_valid_json() {
        let dialect = &crate::exchange::deribit::DIALECT;
        let e = Frame::AppSetup {
            id: CORE_ID_BASE + 1,
            interval_secs: 10,
            dialect,
        }
        .encode();
        assert_eq!(
            core::str::from_utf8(&e.bytes).unwrap(),
            r#"{"jsonrpc":"2.0","id":9000000000001,"method":"public/set_heartbeat","params":{"interval":10}}"#
        );
        let big = Frame::AppSetup {
            id: u64::MAX,
            interval_secs: u32::MAX,
            dialect,
        }
        .encode();
        assert!(big.bytes.ends_with(b"}}"));
    }

    #[test]
    fn ping_token_round_trips() {
        let e = Frame::Ping { token: 42 }.encode();
        assert_eq!(Frame::ping_token(&e.bytes), Some(42));
        assert_eq!(Frame::ping_token(b"short"), None);
    }
}
