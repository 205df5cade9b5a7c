//! One connection's byte path, all non-blocking:
//! mio TCP → optional rustls client → our HTTP upgrade (`handshake.rs`) →
//! our RFC 6455 frame codec (`codec.rs`, driven by `conn.rs`; tungstenite
//! only lends its `Message`/`Bytes`/`Utf8Bytes` types and handshake helpers).
//!
//! # How a driver uses it
//!
//! 1. [`Transport::connect`] starts a TCP connect and registers the socket
//!    under the given token (READABLE | WRITABLE until the connect finishes).
//! 2. For every mio event of that token call [`Transport::handle_event`];
//!    it finishes the connect, drives TLS and the HTTP upgrade, reads until
//!    `WouldBlock` or until [`TransportConfig::read_budget`] bytes were
//!    read, flushes, and pushes [`TransportEvent`]s. Pass `readable =
//!    ev.is_readable() || ev.is_read_closed() || ev.is_error()` and
//!    `writable = ev.is_writable() || ev.is_write_closed() || ev.is_error()`.
//!    mio is edge-triggered: if [`Transport::has_unread`] is `true`
//!    afterwards, data is left that no new event will announce — call
//!    `handle_event(registry, false, false, out)` again (next loop turn,
//!    after the other connections had theirs), without waiting for one.
//! 3. [`Transport::send`], [`Transport::close`], [`Transport::abort`] as the
//!    core decides. `send`/`close` may end the connection (a write error,
//!    or `close` before the upgrade finished); the resulting
//!    `Failed`/`Closed` event is handed out by the next `handle_event` call.
//!    Rule: after `send` or `close`, if [`Transport::is_finished`] is
//!    `true`, call `handle_event(registry, false, false, out)` at once.
//! 4. After `Closed` or `Failed` the transport has deregistered and shut its
//!    socket; [`Transport::is_finished`] is `true`; drop it.
//!
//! Interest: READABLE always once connected, WRITABLE only while bytes wait
//! for the socket; the registration changes only when that changes.
//! Timeouts (connect, handshake, close) are the caller's: on expiry call
//! [`Transport::abort`].

mod codec;
mod conn;
mod handshake;
mod stream;
#[cfg(test)]
mod tests;
mod thread_buf;
mod tls_session;

// The internals the fuzz targets drive (`crate::fuzzing`, driver-mio/fuzz).
#[cfg(feature = "fuzzing")]
pub(crate) mod fuzz {
    pub(crate) use super::codec::{Decoder, Frame, Payload, Text, Utf8Validator};
    pub(crate) use super::handshake::{build_request, parse_response, Request};
    pub(crate) use super::tls_session::TlsSession;
}

use std::fmt;
use std::mem;
use std::net::SocketAddr;
use std::sync::Arc;

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::{Bytes, Message, Utf8Bytes};
use zenws_core::frame::FrameKind;
use zenws_core::Error;

use crate::tls::{self, TlsRoots};
use crate::url::Target;
use conn::{with_read_buf, Conn, Ingested, WsError, WsState};
use handshake::{build_request, Handshake};
use stream::{classify_io, Stream};
use tls_session::classify_tls;

/// Limits, buffers and request details for one connection.
#[derive(Clone)]
pub struct TransportConfig {
    /// Largest incoming message (all fragments). Default 16 MiB.
    pub max_message_size: usize,
    /// Largest incoming frame payload. Default 16 MiB.
    pub max_frame_size: usize,
    /// Capacity of the outgoing buffer kept after it drains; anything larger
    /// (after a burst or a big message) is released. Default 0: the buffer
    /// only exists while bytes wait for a slow socket (or while a TLS
    /// handshake is in flight), so an idle connection owns none; the price
    /// is one allocation per backpressure episode.
    pub write_buffer_size: usize,
    /// Backpressure threshold: while this many bytes (or more) wait for the
    /// socket, [`Transport::send`] refuses with [`SendFailure::Backpressure`]
    /// and reading pauses (so a peer that floods us with pings but does not
    /// read cannot grow our buffer). A send is accepted while the backlog is
    /// below the threshold, so the backlog is bounded by this plus one
    /// message (plus the pongs for the pings of one read, at most ≈ 3× the
    /// 64 KiB read buffer: reading pauses between reads). Default 1 MiB.
    pub max_write_buffer_size: usize,
    /// Most bytes read from the socket per [`Transport::handle_event`] call
    /// (one readiness event): what is left waits for the next call
    /// ([`Transport::has_unread`]), so one busy connection cannot hold the
    /// loop. Reads go in chunks of up to 64 KiB; at least one is made.
    /// Default 256 KiB.
    pub read_budget: usize,
    /// Extra headers on the upgrade request (e.g. `Authorization`). Values
    /// are treated as secrets: never logged, never in `Debug`. A `Host`
    /// header replaces the one derived from the URL; `Connection`,
    /// `Upgrade`, `Sec-WebSocket-Key` and `Sec-WebSocket-Version` are
    /// reserved.
    pub headers: Vec<(String, String)>,
    /// TLS configuration for `wss://` ([`crate::tls::client_config`]);
    /// `None` uses the cached WebPKI roots. Ignored for `ws://`.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl Default for TransportConfig {
    fn default() -> Self {
        TransportConfig {
            max_message_size: 16 << 20,
            max_frame_size: 16 << 20,
            write_buffer_size: 0,
            max_write_buffer_size: 1 << 20,
            read_budget: 256 << 10,
            headers: Vec::new(),
            tls: None,
        }
    }
}

impl fmt::Debug for TransportConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<(&str, &str)> = self
            .headers
            .iter()
            .map(|(k, _)| (k.as_str(), "<redacted>"))
            .collect();
        f.debug_struct("TransportConfig")
            .field("max_message_size", &self.max_message_size)
            .field("max_frame_size", &self.max_frame_size)
            .field("write_buffer_size", &self.write_buffer_size)
            .field("max_write_buffer_size", &self.max_write_buffer_size)
            .field("read_budget", &self.read_budget)
            .field("headers", &names)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

/// What happened on a connection, in order.
#[derive(Clone, Debug, PartialEq)]
pub enum TransportEvent {
    /// The upgrade succeeded: messages may be sent now.
    Open,
    /// A text message.
    Text(Utf8Bytes),
    /// A binary message.
    Binary(Bytes),
    /// A ping (answered with a pong if the sink's `ping` said so).
    Ping(Bytes),
    /// A pong.
    Pong(Bytes),
    /// The close handshake finished, or the peer closed. `code` is the
    /// peer's close code (`None` if its close frame had none, or if the peer
    /// dropped TCP after we had started closing). The transport is finished.
    Closed {
        /// The peer's close code.
        code: Option<u16>,
        /// The peer's close reason (may be empty).
        reason: String,
    },
    /// The connection failed (connect, TLS, upgrade, protocol, I/O). The
    /// transport is finished.
    Failed {
        /// The classified reason.
        error: Error,
        /// Human-readable detail for logs (no secrets).
        detail: String,
    },
}

/// Where decoded events go, one at a time, in order.
pub(crate) trait EventSink {
    /// The next event.
    fn event(&mut self, ev: TransportEvent);
    /// A ping arrived (its [`TransportEvent::Ping`] follows): answer it
    /// with a pong carrying the same payload? The per-client machine
    /// decides (`Client::handle_ping`); a bare sink always answers.
    fn ping(&mut self, payload: &[u8]) -> bool {
        let _ = payload;
        true
    }
    /// No room for more: decoding stops before the next frame and reading
    /// stops, the rest waits in the transport and the kernel (the peer feels
    /// TCP backpressure) until a later `handle_event` finds room
    /// ([`Transport::has_unread`] says so). Checked between frames, so a
    /// frame already decoded is always handed out. A bare sink is never full.
    fn full(&self) -> bool {
        false
    }
}

impl EventSink for Vec<TransportEvent> {
    fn event(&mut self, ev: TransportEvent) {
        self.push(ev);
    }
}

/// Check that `headers` can go on `target`'s upgrade request (valid names
/// and values, no CR/LF, no header the handshake sets itself), without
/// connecting. The error names the header, never its value.
pub fn check_headers(target: &Target, headers: &[(String, String)]) -> Result<(), String> {
    build_request(target, headers).map(|_| ())
}

/// Why [`Transport::send`] did not take a message.
///
/// `Debug` shows the variant and the message's kind and length, never its
/// body (a deferred auth step carries credentials).
pub enum SendFailure {
    /// The connection is not open (connecting, closing, or finished). The
    /// message is handed back.
    NotOpen(Message),
    /// At least `max_write_buffer_size` bytes already wait for a slow peer.
    /// The message is handed back; retry after the backlog shrinks
    /// ([`Transport::pending_write_bytes`]).
    Backpressure(Message),
    /// Writing failed: the connection is gone. A `Failed` (or `Closed`)
    /// event is pending: collect it with `handle_event(registry, false,
    /// false, out)`.
    Failed,
}

/// Why a frame was not sent: [`SendFailure`] without the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    NotOpen,
    Backpressure,
    Failed,
}

impl SendFailure {
    /// The message, if it was handed back.
    pub fn into_message(self) -> Option<Message> {
        match self {
            SendFailure::NotOpen(m) | SendFailure::Backpressure(m) => Some(m),
            SendFailure::Failed => None,
        }
    }
}

impl fmt::Debug for SendFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (name, m) = match self {
            SendFailure::NotOpen(m) => ("NotOpen", m),
            SendFailure::Backpressure(m) => ("Backpressure", m),
            SendFailure::Failed => return f.write_str("Failed"),
        };
        let kind = match m {
            Message::Text(_) => "text",
            Message::Binary(_) => "binary",
            Message::Ping(_) => "ping",
            Message::Pong(_) => "pong",
            Message::Close(_) => "close",
            Message::Frame(_) => "frame",
        };
        write!(f, "{name}(<{kind} message, {} bytes>)", m.len())
    }
}

impl fmt::Display for SendFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendFailure::NotOpen(_) => f.write_str("connection is not open"),
            SendFailure::Backpressure(_) => f.write_str("write buffer full (slow peer)"),
            SendFailure::Failed => f.write_str("connection failed while writing"),
        }
    }
}

impl std::error::Error for SendFailure {}

// `Open` is the steady state and stays inline (no extra indirection per
// event); the rarely used, larger-or-short-lived states are boxed.
#[allow(clippy::large_enum_variant)]
enum State {
    /// TCP connect in flight (boxed: rarely used, holds the request).
    Connecting(Box<Handshake>),
    /// TLS and HTTP upgrade in flight.
    Handshaking(Box<Handshake>),
    Open(Conn),
    Done,
}

/// One WebSocket connection's transport. See the [module docs](self).
pub struct Transport {
    state: State,
    token: Token,
    /// The TCP connection was established (a failure before it is the
    /// address's: the caller may try the host's next address).
    tcp_up: bool,
    /// What the socket is registered for now (`None` once deregistered).
    interest: Option<Interest>,
    /// A final event produced outside `handle_event`, handed out by it.
    deferred: Option<Box<TransportEvent>>,
    /// The peer's close frame, once received: `(code, reason)`.
    peer_close: Option<Box<(Option<u16>, String)>>,
    /// We sent (or queued) our close frame.
    local_close: bool,
    /// Reading stopped because the write backlog is over the limit.
    read_paused: bool,
    /// Reading stopped before `WouldBlock` (read budget used up, or the
    /// sink full): bytes may wait that no readiness event will announce.
    unread: bool,
    read_budget: usize,
    /// A protocol error found after data messages in the same read turn.
    /// Those messages reach the application first, so it can still answer
    /// them (as with a blocking client); the error is acted on at the next
    /// `handle_event`, which WRITABLE interest makes come at once.
    held_error: Option<Box<WsError>>,
    max_pending: usize,
    max_frame: usize,
    max_message: usize,
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Connecting(_) => "connecting",
            State::Handshaking(_) => "handshaking",
            State::Open(_) => "open",
            State::Done => "done",
        };
        f.debug_struct("Transport")
            .field("state", &state)
            .field("token", &self.token)
            .field("pending_write_bytes", &self.pending_write_bytes())
            .finish_non_exhaustive()
    }
}

/// Connection error → (core error, close code worth sending to the peer).
fn classify_ws(e: &WsError) -> (Error, Option<u16>) {
    e.classify()
}

/// A close code we may put on the wire (1005/1006/1015 and unassigned
/// ranges may not be sent): anything else becomes 1000.
fn sendable_close_code(code: u16) -> CloseCode {
    let c = CloseCode::from(code);
    if c.is_allowed() && (1000..=4999).contains(&code) {
        c
    } else {
        log::warn!("close code {code} may not be sent; using 1000");
        CloseCode::Normal
    }
}

/// Close reasons are limited to 123 bytes (control frame payload 125).
fn truncate_reason(reason: &str) -> &str {
    if reason.len() <= 123 {
        return reason;
    }
    let mut end = 123;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

impl Transport {
    /// Start connecting to `addr` (one of `target`'s resolved addresses) and
    /// register the socket under `token`. Fails at once for a bad request
    /// (header names/values: `InvalidUrl`), TLS setup errors, or an
    /// immediate connect error (e.g. `Unreachable`).
    pub fn connect(
        registry: &Registry,
        token: Token,
        target: &Target,
        addr: SocketAddr,
        cfg: &TransportConfig,
    ) -> Result<Transport, (Error, String)> {
        let request = build_request(target, &cfg.headers).map_err(|d| (Error::InvalidUrl, d))?;
        let tls = if target.secure {
            let config = match &cfg.tls {
                Some(c) => c.clone(),
                None => tls::client_config(&TlsRoots::WebPki)
                    .map_err(|e| (Error::Tls, e.to_string()))?,
            };
            let name = tls::server_name(&target.host).ok_or_else(|| {
                (
                    Error::InvalidUrl,
                    format!("{:?} is not a valid TLS server name", target.host),
                )
            })?;
            Some((config, name))
        } else {
            None
        };
        let tcp = TcpStream::connect(addr)
            .map_err(|e| (classify_io(&e), format!("connect to {addr}: {e}")))?;
        let mut stream = Stream::new(tcp, tls, cfg.write_buffer_size)
            .map_err(|e| (classify_tls(&e), format!("TLS setup: {e}")))?;
        let interest = Interest::READABLE | Interest::WRITABLE;
        registry
            .register(stream.tcp_mut(), token, interest)
            .map_err(|e| (Error::Io, format!("register socket: {e}")))?;
        log::debug!("{token:?}: connecting to {target} at {addr}");
        Ok(Transport {
            state: State::Connecting(Box::new(Handshake::new(stream, request))),
            token,
            tcp_up: false,
            interest: Some(interest),
            deferred: None,
            peer_close: None,
            local_close: false,
            read_paused: false,
            unread: false,
            read_budget: cfg.read_budget.max(1),
            held_error: None,
            max_pending: cfg.max_write_buffer_size.max(1),
            max_frame: cfg.max_frame_size,
            max_message: cfg.max_message_size,
        })
    }

    /// Reading stopped early (read budget used up, or the sink was full):
    /// received bytes may be waiting in the transport or the socket, and
    /// mio (edge-triggered) will not announce them again. Call
    /// `handle_event(registry, false, false, out)` once there is room (the
    /// supervisor keeps such connections on a ready list).
    pub fn has_unread(&self) -> bool {
        self.unread
    }

    /// Whether the TCP connection was established (it stays `true` after a
    /// later failure). A failure while this is `false` is specific to the
    /// address connected to: another address of the host may work.
    pub fn tcp_established(&self) -> bool {
        self.tcp_up
    }

    /// Before [`Transport::handle_event`] for a mio event: whether it had
    /// read-closed or error readiness. Lets the transport skip the read that
    /// would only return `WouldBlock` after a short read.
    pub(crate) fn read_hint(&mut self, read_closed: bool) {
        if let Some(s) = self.stream_mut() {
            s.read_hint(read_closed);
        }
    }

    /// Handle a readiness event for this transport's token (or call with
    /// `false, false` to collect an event left by `send`/`close`). Drains
    /// reads until `WouldBlock`, advances the connect/TLS/upgrade, flushes.
    pub fn handle_event(
        &mut self,
        registry: &Registry,
        readable: bool,
        writable: bool,
        out: &mut Vec<TransportEvent>,
    ) {
        self.handle_event_into(registry, readable, writable, out);
    }

    /// [`Transport::handle_event`] handing each event to `out` as it is
    /// decoded (the loop delivers messages without an intermediate `Vec`).
    pub(crate) fn handle_event_into(
        &mut self,
        registry: &Registry,
        readable: bool,
        writable: bool,
        out: &mut dyn EventSink,
    ) {
        if readable {
            if let Some(s) = self.stream_mut() {
                s.set_readable();
            }
        }
        match &self.state {
            State::Done => {}
            State::Connecting(_) => self.on_connecting(registry, out),
            State::Handshaking(_) => self.advance_handshake(registry, out),
            State::Open(_) => self.on_open(registry, readable, writable, out),
        }
        self.update_interest(registry);
        if let Some(ev) = self.deferred.take() {
            out.event(*ev);
        }
    }

    /// Queue `msg` and try to write it now. `Ok` means our buffer owns it (a
    /// socket that would block is not an error: WRITABLE interest is
    /// added). `Message::Close` is [`Transport::close`].
    pub fn send(&mut self, registry: &Registry, msg: Message) -> Result<(), SendFailure> {
        if let Message::Close(frame) = msg {
            let (code, reason) = match &frame {
                Some(f) => (u16::from(f.code), f.reason.as_str()),
                None => (1000, ""),
            };
            let reason = reason.to_string();
            self.close(registry, code, &reason);
            return Ok(());
        }
        let (op, fin, payload): (u8, bool, &[u8]) = match &msg {
            Message::Text(t) => (codec::OP_TEXT, true, t.as_bytes()),
            Message::Binary(b) => (codec::OP_BINARY, true, b),
            Message::Ping(p) => (codec::OP_PING, true, p),
            Message::Pong(p) => (codec::OP_PONG, true, p),
            Message::Frame(f) => (
                u8::from(f.header().opcode),
                f.header().is_final,
                f.payload(),
            ),
            Message::Close(_) => return Ok(()),
        };
        match self.send_frame(registry, op, fin, payload) {
            Ok(()) => Ok(()),
            Err(Refusal::NotOpen) => Err(SendFailure::NotOpen(msg)),
            Err(Refusal::Backpressure) => Err(SendFailure::Backpressure(msg)),
            Err(Refusal::Failed) => Err(SendFailure::Failed),
        }
    }

    /// A frame the core built (a heartbeat ping, a Deribit reply), sent from
    /// its bytes: no `Message` (and no allocation) for it. A refusal only
    /// says why; the core sends the next one when its time comes.
    pub(crate) fn send_core_frame(
        &mut self,
        registry: &Registry,
        kind: FrameKind,
        payload: &[u8],
    ) -> Result<(), Refusal> {
        let op = match kind {
            FrameKind::Ping => codec::OP_PING,
            FrameKind::Text if std::str::from_utf8(payload).is_ok() => codec::OP_TEXT,
            FrameKind::Text | FrameKind::Binary => codec::OP_BINARY,
        };
        self.send_frame(registry, op, true, payload)
    }

    /// [`Transport::send`] once it has the frame's bytes.
    fn send_frame(
        &mut self,
        registry: &Registry,
        op: u8,
        fin: bool,
        payload: &[u8],
    ) -> Result<(), Refusal> {
        let State::Open(c) = &mut self.state else {
            return Err(Refusal::NotOpen);
        };
        if c.ws != WsState::Active || self.local_close || self.peer_close.is_some() {
            return Err(Refusal::NotOpen);
        }
        if c.stream.pending() >= self.max_pending {
            // The writable event may simply not have been handled yet.
            let _ = c.flush();
            if c.stream.pending() >= self.max_pending {
                return Err(Refusal::Backpressure);
            }
        }
        if let Err(e) = c.send_frame(op, fin, payload).and_then(|()| c.flush()) {
            self.on_ws_error(registry, WsError::Io(e));
            return Err(Refusal::Failed);
        }
        self.update_interest(registry);
        if self.is_finished() {
            return Err(Refusal::Failed);
        }
        Ok(())
    }

    /// Start the close handshake with `code` (a code that may not be sent,
    /// like 1005/1006, becomes 1000) and `reason` (cut to 123 bytes).
    /// `Closed` follows when the peer answers; bound the wait with a timer
    /// and [`Transport::abort`]. Before the connection is open this ends it
    /// at once: the `Closed { code: None }` event comes from the next
    /// `handle_event`. Idempotent.
    pub fn close(&mut self, registry: &Registry, code: u16, reason: &str) {
        match &mut self.state {
            State::Done => {}
            State::Connecting(_) | State::Handshaking(_) => {
                self.finish(
                    registry,
                    TransportEvent::Closed {
                        code: None,
                        reason: String::new(),
                    },
                );
            }
            State::Open(c) => {
                if self.local_close || self.peer_close.is_some() || c.ws != WsState::Active {
                    return;
                }
                self.local_close = true;
                c.ws = WsState::ClosedByUs;
                let code = u16::from(sendable_close_code(code));
                let sent = c
                    .send_close(Some(code), truncate_reason(reason))
                    .and_then(|()| c.flush());
                if let Err(e) = sent {
                    self.on_ws_error(registry, WsError::Io(e));
                    return;
                }
                self.update_interest(registry);
            }
        }
    }

    /// End now: best-effort close frame (1001 "going away") if the
    /// connection is open and no close was sent yet, TLS close_notify, one
    /// write attempt, deregister, shut the socket. No event follows.
    /// Idempotent.
    pub fn abort(&mut self, registry: &Registry) {
        if let State::Open(c) = &mut self.state {
            if c.ws == WsState::Active && !self.local_close {
                self.local_close = true;
                c.ws = WsState::ClosedByUs;
                let _ = c.send_close(Some(u16::from(CloseCode::Away)), "");
            }
            let _ = c.flush();
        }
        self.teardown(registry);
        self.deferred = None;
    }

    /// `true` while messages can be sent: upgraded, not closing, not failed.
    pub fn is_open(&self) -> bool {
        match &self.state {
            State::Open(c) => {
                c.ws == WsState::Active && !self.local_close && self.peer_close.is_none()
            }
            _ => false,
        }
    }

    /// `true` once the transport has ended (after `Closed`/`Failed`, an
    /// `abort`, or with such an event still to be collected).
    pub fn is_finished(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// Bytes accepted but not yet handed to the kernel (wire bytes,
    /// including TLS overhead).
    pub fn pending_write_bytes(&self) -> usize {
        self.stream().map_or(0, Stream::pending)
    }

    fn stream(&self) -> Option<&Stream> {
        match &self.state {
            State::Connecting(h) | State::Handshaking(h) => Some(h.stream()),
            State::Open(c) => Some(&c.stream),
            State::Done => None,
        }
    }

    fn stream_mut(&mut self) -> Option<&mut Stream> {
        match &mut self.state {
            State::Connecting(h) | State::Handshaking(h) => Some(h.stream_mut()),
            State::Open(c) => Some(&mut c.stream),
            State::Done => None,
        }
    }

    fn on_connecting(&mut self, registry: &Registry, out: &mut dyn EventSink) {
        let State::Connecting(c) = &self.state else {
            return;
        };
        let tcp = c.stream().tcp();
        match tcp.take_error() {
            Ok(None) => {}
            Ok(Some(e)) | Err(e) => {
                return self.fail(registry, classify_io(&e), format!("connect: {e}"));
            }
        }
        match tcp.peer_addr() {
            Ok(_) => {}
            // Not connected yet (spurious wake-up): wait for the next event.
            Err(e) if e.kind() == std::io::ErrorKind::NotConnected => return,
            Err(e) => return self.fail(registry, classify_io(&e), format!("connect: {e}")),
        }
        if let Err(e) = tcp.set_nodelay(true) {
            log::warn!("{:?}: TCP_NODELAY: {e}", self.token);
        }
        log::debug!("{:?}: TCP connected", self.token);
        self.tcp_up = true;
        if let State::Connecting(h) = mem::replace(&mut self.state, State::Done) {
            self.state = State::Handshaking(h);
            self.advance_handshake(registry, out);
        }
    }

    /// Drive TLS + upgrade (state `Handshaking`).
    fn advance_handshake(&mut self, registry: &Registry, out: &mut dyn EventSink) {
        let State::Handshaking(h) = &mut self.state else {
            return;
        };
        match h.advance() {
            Ok(None) => {}
            Ok(Some(up)) => {
                let State::Handshaking(h) = mem::replace(&mut self.state, State::Done) else {
                    return;
                };
                log::debug!("{:?}: upgraded (HTTP {})", self.token, up.status);
                let (stream, tail) = (*h).into_parts(&up);
                self.state = State::Open(Conn::new(stream, self.max_frame, self.max_message));
                out.event(TransportEvent::Open);
                // Frames that came in the same segment as the 101.
                let mut done = Ingested::default();
                if !tail.is_empty() && !self.ingest(registry, Some(&tail), &mut done, out) {
                    return;
                }
                drop(tail);
                // More may already sit in our buffers or the socket, and no
                // new edge will announce them: read now.
                self.on_open_after(registry, true, true, done.data, out);
            }
            Err((error, detail)) => {
                log::debug!("{:?}: {detail}", self.token);
                self.fail(registry, error, detail);
            }
        }
    }

    fn on_open(
        &mut self,
        registry: &Registry,
        readable: bool,
        writable: bool,
        out: &mut dyn EventSink,
    ) {
        self.on_open_after(registry, readable, writable, false, out);
    }

    /// `data`: messages were already handed out in this turn (for
    /// `held_error`).
    fn on_open_after(
        &mut self,
        registry: &Registry,
        readable: bool,
        writable: bool,
        data: bool,
        out: &mut dyn EventSink,
    ) {
        let State::Open(c) = &mut self.state else {
            return;
        };
        if let Some(e) = self.held_error.take() {
            // Push out what the application sent since, then fail.
            let _ = c.flush();
            return self.on_ws_error(registry, *e);
        }
        if writable || c.stream.pending() > 0 {
            if let Err(e) = c.flush() {
                return self.on_ws_error(registry, WsError::Io(e));
            }
        }
        if readable || self.read_paused || self.unread {
            let early = with_read_buf(|buf| self.read_loop(registry, buf, data, out));
            self.unread = match &self.state {
                State::Open(c) => early || c.has_held(),
                _ => false,
            };
        }
        // Peer's close frame seen: finished once our reply (or our own close
        // frame) is out of our buffers.
        if self.peer_close.is_some() {
            if let State::Open(c) = &mut self.state {
                match std::io::Write::flush(&mut c.stream) {
                    Ok(()) => self.finish_closed(registry),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(_) => self.finish_closed(registry),
                }
            }
        }
    }

    /// Read into the thread's shared buffer until `WouldBlock`, decoding as
    /// we go; at most `read_budget` bytes, and nothing while the sink is
    /// full. Returns `true` if it stopped early (more may be waiting).
    fn read_loop(
        &mut self,
        registry: &Registry,
        buf: &mut [u8],
        data: bool,
        out: &mut dyn EventSink,
    ) -> bool {
        let mut done = Ingested {
            data,
            peer_close: None,
        };
        let mut budget = self.read_budget;
        loop {
            let State::Open(c) = &mut self.state else {
                return false;
            };
            if c.stream.pending() >= self.max_pending {
                // Stop reading (the peer feels it as TCP backpressure) until
                // our backlog drains; `on_open` resumes on the next event.
                self.read_paused = true;
                return false;
            }
            self.read_paused = false;
            if out.full() {
                // No room for what we would read: it waits in the kernel
                // (TCP backpressure) and in `held`.
                return true;
            }
            if c.has_held() {
                // What a full sink left of an earlier read comes first.
                if !self.ingest(registry, None, &mut done, out) {
                    return false;
                }
                continue;
            }
            if budget == 0 {
                return true;
            }
            let want = budget.min(buf.len());
            let n = match std::io::Read::read(&mut c.stream, &mut buf[..want]) {
                Ok(0) => {
                    let e = if c.ws.can_read() {
                        WsError::Reset
                    } else {
                        WsError::Closed
                    };
                    self.on_ws_error(registry, e);
                    return false;
                }
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // A reset once the peer has closed is the end we expected.
                    let e = if !c.ws.can_read() && e.kind() == std::io::ErrorKind::ConnectionReset {
                        WsError::Closed
                    } else {
                        WsError::Io(e)
                    };
                    self.on_ws_error(registry, e);
                    return false;
                }
            };
            budget -= n;
            if !self.ingest(registry, Some(&buf[..n]), &mut done, out) {
                return false;
            }
            // A short read emptied the socket: the next read would only say
            // `WouldBlock` (without a syscall), so stop here.
            if let State::Open(c) = &self.state {
                if c.stream.known_drained() {
                    return false;
                }
            }
            // Keep going after the peer's close: the next read may see EOF.
        }
    }

    /// Decode `input` (`None`: the bytes a full sink left earlier) into
    /// `out`. `false`: stop reading (the connection failed, or an error is
    /// held until the messages before it are seen).
    fn ingest(
        &mut self,
        registry: &Registry,
        input: Option<&[u8]>,
        done: &mut Ingested,
        out: &mut dyn EventSink,
    ) -> bool {
        let State::Open(c) = &mut self.state else {
            return false;
        };
        let r = match input {
            Some(input) => c.ingest(input, done, out),
            None => c.ingest_held(done, out),
        };
        if let Some(info) = done.peer_close.take() {
            if self.peer_close.is_none() {
                log::debug!("{:?}: peer close {:?}", self.token, info.0);
                self.peer_close = Some(Box::new(info));
            }
        }
        match r {
            Ok(()) => true,
            Err(e) if done.data && classify_ws(&e).1.is_some() => {
                self.held_error = Some(Box::new(e));
                false
            }
            Err(e) => {
                self.on_ws_error(registry, e);
                false
            }
        }
    }

    fn on_ws_error(&mut self, registry: &Registry, e: WsError) {
        let (error, close_code) = classify_ws(&e);
        let closing = self.peer_close.is_some() || self.local_close;
        let clean = matches!(e, WsError::Closed);
        if clean || (closing && error == Error::ConnectionReset) {
            return self.finish_closed(registry);
        }
        if let (Some(code), State::Open(c)) = (close_code, &mut self.state) {
            // Tell the peer why, best effort (1002 / 1007 / 1009).
            if c.ws == WsState::Active {
                self.local_close = true;
                c.ws = WsState::ClosedByUs;
                let _ = c.send_close(Some(code), "");
                let _ = c.flush();
            }
        }
        log::debug!("{:?}: failed: {e}", self.token);
        self.fail(registry, error, e.to_string());
    }

    fn fail(&mut self, registry: &Registry, error: Error, detail: String) {
        self.finish(registry, TransportEvent::Failed { error, detail });
    }

    fn finish_closed(&mut self, registry: &Registry) {
        let (code, reason) = match self.peer_close.take() {
            Some(b) => *b,
            None => (None, String::new()),
        };
        self.finish(registry, TransportEvent::Closed { code, reason });
    }

    /// Tear down and leave `event` for the next `handle_event` to hand out.
    fn finish(&mut self, registry: &Registry, event: TransportEvent) {
        self.teardown(registry);
        if self.deferred.is_none() {
            self.deferred = Some(Box::new(event));
        }
    }

    fn teardown(&mut self, registry: &Registry) {
        let registered = self.interest.take().is_some();
        if let Some(stream) = self.stream_mut() {
            stream.shutdown();
            if registered {
                if let Err(e) = registry.deregister(stream.tcp_mut()) {
                    log::debug!("deregister: {e}");
                }
            }
        }
        self.state = State::Done;
        self.read_paused = false;
        self.unread = false;
        self.held_error = None;
    }

    fn update_interest(&mut self, registry: &Registry) {
        // The steady state, checked first: open, nothing queued, READABLE.
        if let State::Open(c) = &self.state {
            if c.stream.pending() == 0
                && self.held_error.is_none()
                && self.interest == Some(Interest::READABLE)
            {
                return;
            }
        }
        let want = match self.stream() {
            None => return,
            Some(s) => match &self.state {
                State::Connecting(_) => Interest::READABLE | Interest::WRITABLE,
                _ if s.pending() > 0 || self.held_error.is_some() => {
                    Interest::READABLE | Interest::WRITABLE
                }
                _ => Interest::READABLE,
            },
        };
        if self.interest == Some(want) {
            return;
        }
        let token = self.token;
        let Some(stream) = self.stream_mut() else {
            return;
        };
        match registry.reregister(stream.tcp_mut(), token, want) {
            Ok(()) => self.interest = Some(want),
            Err(e) => self.fail(registry, Error::Io, format!("reregister socket: {e}")),
        }
    }
}
