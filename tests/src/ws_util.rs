//! Small WebSocket helpers shared by the servers (crate-private).

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tungstenite::handshake::server::Callback;
use tungstenite::handshake::HandshakeError;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{CloseFrame, WebSocket, WebSocketConfig};
use tungstenite::Message;

use crate::acceptor::Conn;

/// A byte stream a WebSocket can run over: plain TCP or TLS.
pub trait ReadWrite: Read + Write + Send {}
impl<T: Read + Write + Send> ReadWrite for T {}

impl std::fmt::Debug for dyn ReadWrite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BoxStream")
    }
}

/// A boxed plain-or-TLS stream.
pub type BoxStream = Box<dyn ReadWrite>;

/// Server-side socket read timeout: how often connection loops wake up to
/// look at their control state.
pub(crate) const POLL: Duration = Duration::from_millis(5);

/// How long a server waits for a client to complete the upgrade.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Wrap an accepted socket in TLS if a config is given. Sets the poll read timeout.
pub(crate) fn server_stream(
    tcp: TcpStream,
    tls: Option<&Arc<rustls::ServerConfig>>,
) -> io::Result<BoxStream> {
    tcp.set_read_timeout(Some(POLL))?;
    Ok(match tls {
        None => Box::new(tcp),
        Some(cfg) => {
            let conn = rustls::ServerConnection::new(cfg.clone()).map_err(io::Error::other)?;
            Box::new(rustls::StreamOwned::new(conn, tcp))
        }
    })
}

/// Server WebSocket config allowing messages and frames up to `max` bytes.
pub(crate) fn ws_config(max: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(max))
        .max_frame_size(Some(max))
}

/// Run the server side of the upgrade over a stream with a short read
/// timeout, retrying while it would block, until done, failed, killed or
/// timed out.
pub(crate) fn accept_ws<C: Callback>(
    stream: BoxStream,
    callback: C,
    config: WebSocketConfig,
    conn: &Conn,
) -> Option<WebSocket<BoxStream>> {
    let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
    let mut round = tungstenite::accept_hdr_with_config(stream, callback, Some(config));
    loop {
        match round {
            Ok(ws) => return Some(ws),
            Err(HandshakeError::Interrupted(mid)) => {
                if conn.is_killed() || Instant::now() >= deadline {
                    log::debug!("conn {}: upgrade abandoned", conn.index());
                    return None;
                }
                round = mid.handshake();
            }
            Err(HandshakeError::Failure(e)) => {
                log::debug!("conn {}: upgrade failed: {e}", conn.index());
                return None;
            }
        }
    }
}

/// One read with the poll timeout: `Ok(None)` when nothing arrived.
pub(crate) fn poll_read(ws: &mut WebSocket<BoxStream>) -> tungstenite::Result<Option<Message>> {
    match ws.read() {
        Ok(m) => Ok(Some(m)),
        Err(tungstenite::Error::Io(e))
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Send a close frame and wait (bounded) for the peer's close reply.
pub(crate) fn close_gracefully(ws: &mut WebSocket<BoxStream>, code: u16, reason: &str) {
    let frame = CloseFrame {
        code: CloseCode::from(code),
        reason: reason.to_string().into(),
    };
    if ws.close(Some(frame)).is_err() {
        return;
    }
    let deadline = Instant::now() + Duration::from_millis(500);
    while Instant::now() < deadline {
        match poll_read(ws) {
            Ok(_) => {}
            Err(_) => return,
        }
    }
}

/// Bytes that are certainly not a valid WebSocket frame: the first byte has
/// all three RSV bits set and the reserved opcode 0xF. The rest is
/// pseudo-random (fixed seed, so runs are reproducible).
pub fn garbage_bytes(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len.max(1));
    out.push(0xFF);
    let mut x: u32 = 0x9E37_79B9;
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        out.push(x as u8);
    }
    out
}

/// Microseconds since the Unix epoch.
pub(crate) fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}
