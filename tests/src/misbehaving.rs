//! Servers that fail in one specific way each, for testing how a client
//! copes: flapping, HTTP errors, blackholes, garbage, oversize frames,
//! invalid UTF-8, resets.
//!
//! One type, [`MisbehavingServer`], driven by a [`Behavior`] that can be
//! switched at runtime ([`MisbehavingServer::set_behavior`]); the behavior in
//! force when a connection is accepted is the one it gets.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use tungstenite::handshake::server::NoCallback;

use crate::acceptor::{lock, wait_until, Acceptor, Conn};
use crate::ws_util::{accept_ws, garbage_bytes, server_stream, ws_config, BoxStream};

/// How a [`MisbehavingServer`] treats each connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Behavior {
    /// Accept the TCP connection and close it at once (a flapping server).
    /// The client sees EOF (or a reset if its request had already arrived).
    AcceptAndDrop,
    /// Complete the WebSocket upgrade, then close TCP without a close frame.
    HandshakeThenDrop,
    /// Answer the upgrade with this HTTP status (e.g. 401, 403, 503) and a
    /// short text body, then close. 429 and 503 carry `Retry-After: 1`.
    HttpStatus(u16),
    /// Complete the upgrade, then never read or write again; the socket
    /// stays open (a blackhole: pings go unanswered).
    Silent,
    /// Accept TCP and never answer (nor read) the HTTP upgrade.
    SilentTcp,
    /// Complete the upgrade, then write 64 bytes that are not WebSocket
    /// frames (first byte 0xFF: RSV bits and a reserved opcode); stay open.
    Garbage,
    /// Complete the upgrade, then send one binary frame header declaring this
    /// payload length (plus up to 4 KiB of it); stay open.
    OversizeFrame(u64),
    /// Complete the upgrade, then send a text frame whose payload is invalid
    /// UTF-8; stay open.
    InvalidUtf8,
    /// Complete the upgrade, then reset the connection (RST via SO_LINGER 0).
    Reset,
}

struct State {
    behavior: Mutex<Behavior>,
    tls: Option<Arc<rustls::ServerConfig>>,
    upgrades: AtomicUsize,
}

/// A server that misbehaves as told (see [`Behavior`]). Stops when dropped.
pub struct MisbehavingServer {
    acceptor: Acceptor,
    state: Arc<State>,
}

impl std::fmt::Debug for MisbehavingServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MisbehavingServer")
            .field("behavior", &self.behavior())
            .field("acceptor", &self.acceptor)
            .finish()
    }
}

impl MisbehavingServer {
    /// Start a plain server on `127.0.0.1:0`.
    pub fn start(behavior: Behavior) -> io::Result<MisbehavingServer> {
        MisbehavingServer::start_with_tls(behavior, None)
    }

    /// Start a server, TLS if `tls` is given (the TLS handshake itself is
    /// well-behaved; the misbehaviour comes after it). [`Behavior::AcceptAndDrop`]
    /// and [`Behavior::SilentTcp`] happen before any TLS.
    pub fn start_with_tls(
        behavior: Behavior,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> io::Result<MisbehavingServer> {
        let state = Arc::new(State {
            behavior: Mutex::new(behavior),
            tls,
            upgrades: AtomicUsize::new(0),
        });
        let st = state.clone();
        let acceptor = Acceptor::start("misbehaving", move |tcp, conn| serve(tcp, conn, &st))?;
        Ok(MisbehavingServer { acceptor, state })
    }

    /// The behavior new connections get.
    pub fn behavior(&self) -> Behavior {
        lock(&self.state.behavior).clone()
    }

    /// Change the behavior for connections accepted from now on.
    pub fn set_behavior(&self, behavior: Behavior) {
        *lock(&self.state.behavior) = behavior;
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> SocketAddr {
        self.acceptor.addr()
    }

    /// `ws://127.0.0.1:PORT/`, or `wss://localhost:PORT/` with TLS.
    pub fn url(&self) -> String {
        if self.state.tls.is_some() {
            format!("wss://localhost:{}/", self.addr().port())
        } else {
            format!("ws://{}/", self.addr())
        }
    }

    /// TCP connections accepted so far.
    pub fn connections_accepted(&self) -> usize {
        self.acceptor.connections_accepted()
    }

    /// Wait up to `timeout` until at least `n` connections were accepted.
    pub fn wait_connections_accepted(&self, n: usize, timeout: Duration) -> bool {
        wait_until(timeout, || self.connections_accepted() >= n)
    }

    /// WebSocket upgrades completed so far.
    pub fn upgrades_completed(&self) -> usize {
        self.state.upgrades.load(Ordering::SeqCst)
    }

    /// Connections currently held open.
    pub fn live_connections(&self) -> usize {
        self.acceptor.live_connections()
    }

    /// Shut down every held connection (FIN); keep listening.
    pub fn kill_connections(&self) {
        self.acceptor.kill_connections()
    }

    /// Stop listening and kill every connection; the port is freed.
    pub fn stop(&self) {
        self.acceptor.stop()
    }

    /// Listen again on the same port.
    pub fn restart(&self) -> io::Result<()> {
        self.acceptor.restart()
    }
}

/// Keep the connection open, doing nothing, until killed.
fn hold(conn: &Conn) {
    while !conn.is_killed() {
        thread::sleep(Duration::from_millis(5));
    }
}

fn reason_phrase(code: u16) -> &'static str {
    tungstenite::http::StatusCode::from_u16(code)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Unknown")
}

/// Read the HTTP request head (bounded by size and time).
fn read_request_head(stream: &mut BoxStream, conn: &Conn) {
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !conn.is_killed() && Instant::now() < deadline && buf.len() < 16 * 1024 {
        match stream.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                if buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    return;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
    }
}

fn frame_header(opcode: u8, len: u64) -> Vec<u8> {
    let mut h = vec![0x80 | opcode];
    if len < 126 {
        h.push(len as u8);
    } else if len <= u16::MAX as u64 {
        h.push(126);
        h.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        h.push(127);
        h.extend_from_slice(&len.to_be_bytes());
    }
    h
}

fn serve(tcp: TcpStream, conn: Conn, st: &State) {
    let behavior = lock(&st.behavior).clone();
    match behavior {
        Behavior::AcceptAndDrop => return,
        Behavior::SilentTcp => {
            hold(&conn);
            return;
        }
        _ => {}
    }
    let raw = tcp.try_clone();
    let mut stream = match server_stream(tcp, st.tls.as_ref()) {
        Ok(s) => s,
        Err(_) => return,
    };
    if let Behavior::HttpStatus(code) = behavior {
        read_request_head(&mut stream, &conn);
        let body = format!("misbehaving server: status {code}\n");
        let retry = if code == 429 || code == 503 {
            "Retry-After: 1\r\n"
        } else {
            ""
        };
        let resp = format!(
            "HTTP/1.1 {code} {}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n{retry}Connection: close\r\n\r\n{body}",
            reason_phrase(code),
            body.len()
        );
        let _ = stream.write_all(resp.as_bytes());
        let _ = stream.flush();
        return;
    }
    let Some(mut ws) = accept_ws(stream, NoCallback, ws_config(64 << 20), &conn) else {
        return;
    };
    st.upgrades.fetch_add(1, Ordering::SeqCst);
    let raw_write = |ws: &mut tungstenite::WebSocket<BoxStream>, bytes: &[u8]| {
        let s = ws.get_mut();
        let _ = s.write_all(bytes).and_then(|_| s.flush());
    };
    match behavior {
        Behavior::HandshakeThenDrop => {}
        Behavior::Silent => hold(&conn),
        Behavior::Garbage => {
            raw_write(&mut ws, &garbage_bytes(64));
            hold(&conn);
        }
        Behavior::OversizeFrame(n) => {
            let mut bytes = frame_header(0x2, n);
            bytes.resize(bytes.len() + n.min(4096) as usize, 0xAB);
            raw_write(&mut ws, &bytes);
            hold(&conn);
        }
        Behavior::InvalidUtf8 => {
            let payload = [0xC3, 0x28, 0xA0, 0xA1, 0xFF];
            let mut bytes = frame_header(0x1, payload.len() as u64);
            bytes.extend_from_slice(&payload);
            raw_write(&mut ws, &bytes);
            hold(&conn);
        }
        Behavior::Reset => {
            if let Ok(raw) = raw {
                let _ = socket2::SockRef::from(&raw).set_linger(Some(Duration::ZERO));
            }
        }
        Behavior::AcceptAndDrop | Behavior::SilentTcp | Behavior::HttpStatus(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blocking_client::{connect, connect_with, is_timeout, ClientError};
    use crate::TestPki;
    use tungstenite::error::{CapacityError, ProtocolError};
    use tungstenite::Error;

    const T: Duration = Duration::from_secs(2);
    const SHORT: Duration = Duration::from_millis(200);

    #[test]
    fn accept_and_drop_counts_connections() {
        let srv = MisbehavingServer::start(Behavior::AcceptAndDrop).unwrap();
        for _ in 0..3 {
            assert!(connect(&srv.url(), None).is_err());
        }
        assert_eq!(srv.connections_accepted(), 3);
        assert_eq!(srv.upgrades_completed(), 0);
    }

    #[test]
    fn handshake_then_drop() {
        let srv = MisbehavingServer::start(Behavior::HandshakeThenDrop).unwrap();
        let mut ws = connect(&srv.url(), None).unwrap();
        let err = ws.read().unwrap_err();
        assert!(
            matches!(
                err,
                Error::Protocol(ProtocolError::ResetWithoutClosingHandshake) | Error::Io(_)
            ),
            "{err:?}"
        );
        assert_eq!(srv.upgrades_completed(), 1);
    }

    #[test]
    fn http_status_answers() {
        let srv = MisbehavingServer::start(Behavior::HttpStatus(401)).unwrap();
        assert_eq!(
            connect(&srv.url(), None).unwrap_err().http_status(),
            Some(401)
        );
        srv.set_behavior(Behavior::HttpStatus(503));
        assert_eq!(
            connect(&srv.url(), None).unwrap_err().http_status(),
            Some(503)
        );
        srv.set_behavior(Behavior::HttpStatus(403));
        assert_eq!(
            connect(&srv.url(), None).unwrap_err().http_status(),
            Some(403)
        );
    }

    #[test]
    fn http_status_over_tls() {
        let pki = TestPki::generate();
        let srv =
            MisbehavingServer::start_with_tls(Behavior::HttpStatus(403), Some(pki.server_config()))
                .unwrap();
        let err = connect(&srv.url(), Some(pki.client_config())).unwrap_err();
        assert_eq!(err.http_status(), Some(403));
    }

    #[test]
    fn silent_after_handshake_is_a_blackhole() {
        let srv = MisbehavingServer::start(Behavior::Silent).unwrap();
        let mut ws = connect_with(&srv.url(), None, &[], SHORT).unwrap();
        ws.send(tungstenite::Message::Ping(b"x".to_vec().into()))
            .unwrap();
        let err = ws.read().unwrap_err();
        assert!(is_timeout(&err), "{err:?}");
        assert_eq!(srv.live_connections(), 1);
        srv.kill_connections();
        assert!(wait_until(T, || srv.live_connections() == 0));
    }

    #[test]
    fn silent_tcp_never_answers_upgrade() {
        let srv = MisbehavingServer::start(Behavior::SilentTcp).unwrap();
        let err = connect_with(&srv.url(), None, &[], SHORT).unwrap_err();
        assert!(
            matches!(&err, ClientError::Io(e) if e.kind() == io::ErrorKind::TimedOut),
            "{err:?}"
        );
        assert_eq!(srv.connections_accepted(), 1);
    }

    #[test]
    fn garbage_is_a_protocol_error() {
        let srv = MisbehavingServer::start(Behavior::Garbage).unwrap();
        let mut ws = connect(&srv.url(), None).unwrap();
        let err = ws.read().unwrap_err();
        assert!(matches!(err, Error::Protocol(_)), "{err:?}");
    }

    #[test]
    fn oversize_frame_is_rejected_by_size_limit() {
        let srv = MisbehavingServer::start(Behavior::OversizeFrame(1 << 40)).unwrap();
        let mut ws = connect(&srv.url(), None).unwrap();
        let err = ws.read().unwrap_err();
        assert!(
            matches!(err, Error::Capacity(CapacityError::MessageTooLong { .. })),
            "{err:?}"
        );
    }

    #[test]
    fn invalid_utf8_text_frame() {
        let srv = MisbehavingServer::start(Behavior::InvalidUtf8).unwrap();
        let mut ws = connect(&srv.url(), None).unwrap();
        let err = ws.read().unwrap_err();
        assert!(matches!(err, Error::Utf8(_)), "{err:?}");
    }

    #[test]
    fn reset_after_handshake() {
        let srv = MisbehavingServer::start(Behavior::Reset).unwrap();
        // The RST may overtake the 101 response; either way it is a reset.
        let kind = match connect(&srv.url(), None) {
            Ok(mut ws) => match ws.read().unwrap_err() {
                Error::Io(e) => e.kind(),
                other => panic!("{other:?}"),
            },
            Err(ClientError::Io(e)) | Err(ClientError::Ws(Error::Io(e))) => e.kind(),
            Err(other) => panic!("{other:?}"),
        };
        assert_eq!(kind, io::ErrorKind::ConnectionReset);
    }
}
