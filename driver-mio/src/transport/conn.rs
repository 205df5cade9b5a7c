//! The open connection: our stream plus the frame codec, in place of
//! tungstenite's `WebSocket` (same close-handshake states and the same
//! answers: pong for ping, the peer's close echoed, 1002 for a close code
//! that may not be used).
//!
//! Memory: reads go into ONE buffer per thread ([`with_read_buf`], 64 KiB,
//! allocated on first use and never zero-filled again), frames are decoded
//! straight from it, and only what a read leaves unfinished (a cut header,
//! a partial or fragmented message) stays with the connection, in the
//! decoder, freed when the message completes. An idle connection holds no
//! read buffer. Outgoing frames are built on the stack (payloads up to
//! `codec::SMALL_PAYLOAD`) or in a per-thread scratch `Vec` (header +
//! masked payload, the one copy) and handed to the stream, which writes
//! them straight to the socket or keeps what it does not take.
//!
//! Inbound bound: decoding stops between two frames once the sink is full
//! ([`EventSink::full`]); the rest of that read is kept ([`Conn::has_held`],
//! at most one read buffer, allocated only then) and decoded first next
//! time, so a read never hands out more than the sink has room for plus one
//! message, and nothing read is lost.

use std::fmt;
use std::io::{self, Write};

use tungstenite::protocol::frame::coding::CloseCode;
use zenws_core::Error;

use super::codec::{self, CodecError, Decoder, Frame, MaskRng};
use super::stream::{classify_io, Stream};
use super::thread_buf;
use super::{EventSink, TransportEvent};

/// The shared read buffer's size: the most one `read` asks for.
pub(super) const READ_BUF: usize = 64 << 10;
/// Run `f` with this thread's read buffer, [`READ_BUF`] bytes long.
pub(super) fn with_read_buf<R>(f: impl FnOnce(&mut [u8]) -> R) -> R {
    thread_buf::with(&thread_buf::READ, |buf| {
        if buf.len() < READ_BUF {
            buf.resize(READ_BUF, 0);
        }
        f(buf)
    })
}

/// Where the close handshake stands (tungstenite's states).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum WsState {
    Active,
    /// We sent a close frame; the peer's may still come (data too).
    ClosedByUs,
    /// The peer's close frame came first; we answered.
    ClosedByPeer,
    /// Both close frames exchanged, ours first.
    CloseAcknowledged,
}

impl WsState {
    /// Frames may still arrive.
    pub(super) fn can_read(self) -> bool {
        matches!(self, WsState::Active | WsState::ClosedByUs)
    }
}

/// Why the open connection ended.
#[derive(Debug)]
pub(super) enum WsError {
    Io(io::Error),
    Codec(CodecError),
    /// EOF after both close frames (or a reset once the peer had closed).
    Closed,
    /// EOF without a close frame.
    Reset,
}

impl WsError {
    /// (core error, close code worth sending to the peer).
    pub(super) fn classify(&self) -> (Error, Option<u16>) {
        match self {
            WsError::Io(io) => (classify_io(io), None),
            WsError::Codec(c @ CodecError::TooLarge { .. }) => {
                (Error::MessageTooLarge, Some(c.close_code()))
            }
            WsError::Codec(c) => (Error::Protocol, Some(c.close_code())),
            WsError::Closed | WsError::Reset => (Error::ConnectionReset, None),
        }
    }
}

impl fmt::Display for WsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WsError::Io(e) => write!(f, "IO error: {e}"),
            WsError::Codec(c) => c.fmt(f),
            WsError::Closed => f.write_str("Connection closed normally"),
            WsError::Reset => {
                f.write_str("WebSocket protocol error: Connection reset without closing handshake")
            }
        }
    }
}

/// What one batch of frames did to the close handshake.
#[derive(Default)]
pub(super) struct Ingested {
    /// A text or binary message was handed out.
    pub(super) data: bool,
    /// The peer's close frame: `(code, reason)` as the application sees it.
    pub(super) peer_close: Option<(Option<u16>, String)>,
}

pub(super) struct Conn {
    pub(super) stream: Stream,
    pub(super) ws: WsState,
    decoder: Decoder,
    rng: MaskRng,
    /// Bytes read but not decoded yet (`held[held_pos..]`): the sink was
    /// full. Empty (no allocation) otherwise.
    held: Vec<u8>,
    held_pos: usize,
}

impl fmt::Debug for Conn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Conn")
            .field("ws", &self.ws)
            .finish_non_exhaustive()
    }
}

fn ignore_would_block(r: io::Result<()>) -> io::Result<()> {
    match r {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
        r => r,
    }
}

impl Conn {
    pub(super) fn new(stream: Stream, max_frame: usize, max_message: usize) -> Conn {
        Conn {
            stream,
            ws: WsState::Active,
            decoder: Decoder::new(max_frame, max_message),
            rng: MaskRng::from_os(),
            held: Vec::new(),
            held_pos: 0,
        }
    }

    /// Read bytes wait to be decoded (the sink was full): decode them with
    /// [`Conn::ingest_held`] before reading the socket again.
    pub(super) fn has_held(&self) -> bool {
        self.held_pos < self.held.len()
    }

    /// Heap bytes the decoder holds for an unfinished frame or message.
    #[cfg(test)]
    pub(super) fn buffered(&self) -> usize {
        self.decoder.buffered()
    }

    /// Hand one frame to the stream (never blocks; `Err` = the socket is
    /// gone). Not flushed: see [`Conn::flush`].
    pub(super) fn send_frame(&mut self, op: u8, fin: bool, payload: &[u8]) -> io::Result<()> {
        let key = self.rng.next_key();
        if payload.len() <= codec::SMALL_PAYLOAD {
            // Small frames: built on the stack, one write.
            let mut buf = [0u8; codec::SMALL_FRAME];
            let n = codec::encode_into(&mut buf, op, fin, payload, key);
            return ignore_would_block(self.stream.write_all(&buf[..n]));
        }
        self.with_frame_buf(|buf| codec::encode(buf, op, fin, payload, key))
    }

    /// Our close frame (`None`: empty payload).
    pub(super) fn send_close(&mut self, code: Option<u16>, reason: &str) -> io::Result<()> {
        let key = self.rng.next_key();
        self.with_frame_buf(|buf| codec::encode_close(buf, code, reason, key))
    }

    /// Build one frame in this thread's frame buffer and write it.
    fn with_frame_buf(&mut self, build: impl FnOnce(&mut Vec<u8>)) -> io::Result<()> {
        thread_buf::with(&thread_buf::FRAME, |buf| {
            buf.clear();
            build(buf);
            ignore_would_block(self.stream.write_all(buf))
        })
    }

    /// Push buffered bytes to the socket; `WouldBlock` is not an error.
    pub(super) fn flush(&mut self) -> io::Result<()> {
        ignore_would_block(self.stream.flush())
    }

    /// Decode `input` (bytes read from the socket) into `out`, answering
    /// pings and the peer's close frame as they come. Stops between frames
    /// once `out` is full and keeps the rest for [`Conn::ingest_held`].
    pub(super) fn ingest(
        &mut self,
        input: &[u8],
        done: &mut Ingested,
        out: &mut dyn EventSink,
    ) -> Result<(), WsError> {
        debug_assert!(!self.has_held(), "held bytes must be decoded first");
        let mut pos = 0;
        let mut wrote = false;
        let r = self.ingest_frames(input, &mut pos, &mut wrote, done, out);
        if r.is_ok() && pos < input.len() {
            self.held.clear();
            self.held_pos = 0;
            self.held.extend_from_slice(&input[pos..]);
        }
        self.answered(wrote, r)
    }

    /// [`Conn::ingest`] for the bytes an earlier one kept back.
    pub(super) fn ingest_held(
        &mut self,
        done: &mut Ingested,
        out: &mut dyn EventSink,
    ) -> Result<(), WsError> {
        let held = std::mem::take(&mut self.held);
        let mut pos = self.held_pos;
        let mut wrote = false;
        let r = self.ingest_frames(&held, &mut pos, &mut wrote, done, out);
        if r.is_ok() && pos < held.len() {
            self.held = held; // still full: keep the rest (no copy)
            self.held_pos = pos;
        } else {
            self.held_pos = 0; // all decoded: the buffer is freed
        }
        self.answered(wrote, r)
    }

    fn answered(&mut self, wrote: bool, r: Result<(), WsError>) -> Result<(), WsError> {
        if wrote {
            // The answers go out now (or wait for WRITABLE).
            self.flush().map_err(WsError::Io)?;
        }
        r
    }

    fn ingest_frames(
        &mut self,
        input: &[u8],
        pos: &mut usize,
        wrote: &mut bool,
        done: &mut Ingested,
        out: &mut dyn EventSink,
    ) -> Result<(), WsError> {
        while *pos < input.len() {
            if out.full() {
                break; // the caller keeps `input[*pos..]`
            }
            let (n, frame) = self
                .decoder
                .decode(&input[*pos..])
                .map_err(WsError::Codec)?;
            *pos += n;
            let Some(frame) = frame else {
                break;
            };
            if !self.ws.can_read() {
                return Err(WsError::Codec(CodecError::Protocol(
                    "frame received after the close handshake",
                )));
            }
            match frame {
                Frame::Text(t) => {
                    done.data = true;
                    out.event(TransportEvent::Text(t.into_utf8_bytes()));
                }
                Frame::Binary(b) => {
                    done.data = true;
                    out.event(TransportEvent::Binary(b.into_bytes()));
                }
                Frame::Ping(p) => {
                    // No pong once we sent our close frame (as tungstenite),
                    // and only if the client's machine says so.
                    if self.ws == WsState::Active && out.ping(p.as_slice()) {
                        self.send_frame(codec::OP_PONG, true, p.as_slice())
                            .map_err(WsError::Io)?;
                        *wrote = true;
                    }
                    out.event(TransportEvent::Ping(p.into_bytes()));
                }
                Frame::Pong(p) => out.event(TransportEvent::Pong(p.into_bytes())),
                Frame::Close(close) => {
                    let info = match self.ws {
                        WsState::Active => {
                            self.ws = WsState::ClosedByPeer;
                            // A code that may not be used is answered (and
                            // reported) as 1002.
                            let close = close.map(|(code, reason)| {
                                if CloseCode::from(code).is_allowed() {
                                    (code, reason)
                                } else {
                                    (1002, "Protocol violation".to_string())
                                }
                            });
                            let (code, reason) = match &close {
                                Some((c, r)) => (Some(*c), r.as_str()),
                                None => (None, ""),
                            };
                            self.send_close(code, reason).map_err(WsError::Io)?;
                            *wrote = true;
                            close
                        }
                        // Our close frame's answer.
                        _ => {
                            self.ws = WsState::CloseAcknowledged;
                            close
                        }
                    };
                    if done.peer_close.is_none() {
                        done.peer_close = Some(match info {
                            Some((code, reason)) => (Some(code), reason),
                            None => (None, String::new()),
                        });
                    }
                }
            }
        }
        Ok(())
    }
}
