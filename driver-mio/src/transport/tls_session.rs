//! TLS on the loop's buffers: rustls's *unbuffered* client connection.
//!
//! rustls's buffered `ClientConnection` keeps a receive buffer of at least
//! 4 KiB per connection for as long as the connection lives; on an idle
//! `wss://` connection that was a third of its memory. The unbuffered API
//! lets the caller own the bytes, so:
//!
//! * ciphertext is read into one scratch buffer per thread and handed to
//!   rustls there; only bytes rustls could not consume yet (a record that
//!   arrived in part, or a handshake message spread over records) are copied
//!   into `carry`, the next reads append to them there, and they are passed
//!   again, in front of the new bytes, as the API requires (rustls remembers
//!   a partial handshake message as offsets into them). Appending in place
//!   keeps a peer that trickles a record byte by byte at O(n) copying.
//!   `carry` is empty, and owns no memory, between records;
//! * plaintext is copied into the caller's buffer; what does not fit (only
//!   when a caller reads with a small buffer, as the HTTP upgrade does) waits
//!   in `plain`;
//! * outgoing records are encoded straight onto the end of the stream's
//!   `out` buffer; plaintext written before the handshake has finished (the
//!   HTTP upgrade request) waits in `early` and is encrypted as soon as
//!   rustls allows.
//!
//! Every `process_tls_records` call goes through [`TlsSession::step`], which
//! handles the state it returns before anything else happens, as the API
//! demands.

use std::fmt;
use std::io::{self, Read};
use std::mem;
use std::sync::Arc;

use rustls::client::{ClientConnectionData, UnbufferedClientConnection};
use rustls::pki_types::ServerName;
use rustls::unbuffered::{
    ConnectionState, EncodeError, EncodeTlsData, EncryptError, UnbufferedStatus, WriteTraffic,
};
use zenws_core::Error;

use super::thread_buf;

/// Size of the per-thread ciphertext buffer (one socket read asks for at
/// most this much).
const SCRATCH: usize = 64 << 10;
/// More unconsumed ciphertext than this for one connection is not TLS
/// rustls would accept (records are ≤ 16 KiB + 2 KiB, handshake messages
/// ≤ 64 KiB).
const MAX_CARRY: usize = 128 << 10;
/// A read that delivers this much plaintext marks the connection busy: its
/// carry buffer is kept for the next partial record (see [`Carry::settle`]).
const BUSY_READ: usize = 16 << 10;
/// Room to read into onto a partial record: the largest record (16 KiB of
/// plaintext + 2 KiB of expansion), so the rest of it comes in one read.
const RECORD_ROOM: usize = (16 << 10) + (2 << 10);
/// Room asked for per 16 KiB record when encrypting: header + tag + type
/// byte are 22 bytes in TLS 1.3, 29 in TLS 1.2; rustls tells us the exact
/// size if it needs more.
const RECORD_OVERHEAD: usize = 64;

/// One client TLS connection whose buffers the caller owns.
pub(crate) struct TlsSession {
    conn: UnbufferedClientConnection,
    /// Ciphertext rustls has not consumed yet (see module docs).
    carry: Carry,
    /// Decrypted bytes the caller's buffer had no room for.
    plain: Vec<u8>,
    /// Plaintext written before rustls allowed application data.
    early: Vec<u8>,
    /// The peer sent close_notify (rustls reports `PeerClosed` only once).
    peer_closed: bool,
    /// Both sides sent close_notify: nothing more can be written.
    closed: bool,
    /// The socket returned EOF.
    eof: bool,
    /// The connection failed; every later call reports it again.
    failed: Option<rustls::Error>,
}

/// A connection's unconsumed ciphertext: `buf[..len]`. The rest of `buf`
/// is room already initialised, so reading onto the bytes again does not
/// zero-fill it again; the buffer is freed once nothing is carried (after
/// bulk data: at the next small read).
#[derive(Default)]
struct Carry {
    buf: Vec<u8>,
    len: usize,
}

impl Carry {
    fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Carry a copy of `bytes` (nothing was carried).
    fn set(&mut self, bytes: &[u8]) {
        debug_assert!(self.is_empty());
        if !bytes.is_empty() {
            self.buf.clear();
            self.buf.extend_from_slice(bytes);
            self.len = bytes.len();
        }
    }

    /// The buffer and how many bytes at its front are carried; put it back
    /// with [`Carry::keep`].
    fn take(&mut self) -> (Vec<u8>, usize) {
        let len = mem::take(&mut self.len);
        (mem::take(&mut self.buf), len)
    }

    /// Carry `buf[start..end]` (moved to the front).
    fn keep(&mut self, mut buf: Vec<u8>, start: usize, end: usize) {
        buf.copy_within(start..end, 0);
        self.buf = buf;
        self.len = end - start;
    }

    /// After a read: with nothing carried, free the buffer unless the
    /// connection is `busy` (bulk data keeps arriving in partial records;
    /// freeing and reallocating tens of KiB per record made the allocator
    /// give pages back to the OS and fault them in again). An idle
    /// connection's next small read frees it.
    fn settle(&mut self, busy: bool) {
        if self.len == 0 && !busy {
            self.buf = Vec::new();
        }
    }
}

/// Something to put on the wire once rustls allows application data.
enum Send<'d> {
    Data(&'d [u8]),
    CloseNotify,
}

/// Why [`TlsSession::read_into`] stopped short.
enum ReadError {
    /// rustls failed (the session fails with it).
    Tls(rustls::Error),
    /// The socket failed, or closed without close_notify.
    Io(io::Error),
}

/// What the state a [`TlsSession::step`] handled asks for next.
enum Next {
    /// Call `process_tls_records` again.
    Again,
    /// Nothing more until more ciphertext arrives.
    Blocked,
    /// Both sides sent close_notify.
    Closed,
}

/// The caller's plaintext buffer and how much of it is filled.
struct Sink<'b> {
    buf: &'b mut [u8],
    filled: usize,
}

impl Sink<'_> {
    /// Copy `data` in; what does not fit goes to `overflow`, which also
    /// takes everything once it holds anything (the order is kept).
    fn put(&mut self, data: &[u8], overflow: &mut Vec<u8>) {
        let n = if overflow.is_empty() {
            data.len().min(self.buf.len() - self.filled)
        } else {
            0
        };
        self.buf[self.filled..self.filled + n].copy_from_slice(&data[..n]);
        self.filled += n;
        overflow.extend_from_slice(&data[n..]);
    }
}

impl TlsSession {
    /// A client connection to `name`; its ClientHello goes onto `out`.
    pub(crate) fn new(
        config: Arc<rustls::ClientConfig>,
        name: ServerName<'static>,
        out: &mut impl RecordOut,
    ) -> Result<TlsSession, rustls::Error> {
        let mut session = TlsSession {
            conn: UnbufferedClientConnection::new(config, name)?,
            carry: Carry::default(),
            plain: Vec::new(),
            early: Vec::new(),
            peer_closed: false,
            closed: false,
            eof: false,
            failed: None,
        };
        session.drive(None, out)?;
        Ok(session)
    }

    /// Decrypted bytes wait for the next `read` (only after a read with a
    /// buffer too small for what arrived).
    pub(crate) fn has_plaintext(&self) -> bool {
        !self.plain.is_empty()
    }

    /// Plaintext into `buf`, reading ciphertext from `socket` as needed.
    /// Handshake messages and alerts rustls wants to send go onto `out`
    /// (the caller flushes it). `Ok(0)` once the peer has sent close_notify;
    /// `UnexpectedEof` if the socket closed without one; `WouldBlock` when
    /// the socket has nothing more.
    pub(crate) fn read(
        &mut self,
        socket: &mut impl Read,
        out: &mut impl RecordOut,
        buf: &mut [u8],
    ) -> io::Result<usize> {
        if !self.plain.is_empty() {
            let n = self.plain.len().min(buf.len());
            buf[..n].copy_from_slice(&self.plain[..n]);
            self.plain.drain(..n);
            if self.plain.is_empty() {
                self.plain = Vec::new();
            }
            return Ok(n);
        }
        if let Some(e) = &self.failed {
            return Err(tls_io_error(e.clone()));
        }
        let mut sink = Sink { buf, filled: 0 };
        let r = if self.carry.is_empty() {
            thread_buf::with(&thread_buf::CIPHER, |scratch| {
                let (r, start, end) = self.read_into(socket, out, &mut sink, scratch, 0, SCRATCH);
                // What rustls has not consumed stays with this connection.
                self.carry.set(&scratch[start..end]);
                r
            })
        } else {
            // Bytes wait for the rest of their record (or handshake
            // message): read onto them where they are. Copying them into
            // the scratch buffer on every read would cost O(n²) against a
            // peer that trickles a record byte by byte.
            let (mut work, end) = self.carry.take();
            let room = end.max(RECORD_ROOM);
            let (r, start, end) = self.read_into(socket, out, &mut sink, &mut work, end, room);
            self.carry.keep(work, start, end);
            r
        };
        self.carry.settle(sink.filled >= BUSY_READ);
        let r = r.map_err(|e| match e {
            ReadError::Tls(e) => self.fail(e, out),
            ReadError::Io(e) => e,
        });
        match r {
            // Data first; an error that came after it is reported next time.
            Ok(()) => Ok(sink.filled),
            Err(_) if sink.filled > 0 => Ok(sink.filled),
            Err(e) => Err(e),
        }
    }

    /// Feed rustls `work[..end]` (the unconsumed bytes) and whatever the
    /// socket adds after them, until plaintext comes out, the peer closes, or
    /// the socket has nothing more. Returns the outcome and `start..end`, the
    /// bytes rustls has not consumed. `room`: how much to read at a time.
    fn read_into(
        &mut self,
        socket: &mut impl Read,
        out: &mut impl RecordOut,
        sink: &mut Sink<'_>,
        work: &mut Vec<u8>,
        end: usize,
        room: usize,
    ) -> (Result<(), ReadError>, usize, usize) {
        let (mut start, mut end) = (0, end);
        if work.len() < end + room {
            work.resize(end + room, 0);
        }
        loop {
            match self.step(&mut work[start..end], out, sink, &mut None) {
                Ok((discard, next)) => {
                    start += discard;
                    match next {
                        Next::Again => continue,
                        Next::Closed => return (Ok(()), start, end),
                        Next::Blocked => {}
                    }
                }
                Err(e) => return (Err(ReadError::Tls(e)), start, end),
            }
            if sink.filled > 0 || !self.plain.is_empty() || self.peer_closed {
                return (Ok(()), start, end);
            }
            if self.eof {
                // The socket closed without close_notify: a truncation
                // attack or a crashed peer; either way not a clean end.
                let eof = io::ErrorKind::UnexpectedEof.into();
                return (Err(ReadError::Io(eof)), start, end);
            }
            if end == work.len() {
                // Out of room: drop what rustls consumed, then grow.
                if start > 0 {
                    work.copy_within(start..end, 0);
                    end -= start;
                    start = 0;
                }
                if end >= MAX_CARRY {
                    let e = rustls::Error::General(format!(
                        "more than {MAX_CARRY} bytes of ciphertext without a complete message"
                    ));
                    return (Err(ReadError::Tls(e)), start, end);
                }
                if end == work.len() {
                    work.resize(end + room.max(end), 0);
                }
            }
            match socket.read(&mut work[end..]) {
                Ok(0) => self.eof = true,
                Ok(n) => end += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return (Err(ReadError::Io(e)), start, end),
            }
        }
    }

    /// Encrypt `data` onto `out` (or keep it until the handshake allows
    /// application data).
    pub(crate) fn write(&mut self, data: &[u8], out: &mut impl RecordOut) -> io::Result<()> {
        if let Some(e) = &self.failed {
            return Err(tls_io_error(e.clone()));
        }
        match self.drive(Some(Send::Data(data)), out) {
            Ok(Some(_)) if self.closed => Err(io::ErrorKind::BrokenPipe.into()),
            Ok(Some(_)) => {
                self.early.extend_from_slice(data);
                Ok(())
            }
            Ok(None) => Ok(()),
            Err(e) => Err(self.fail(e, out)),
        }
    }

    /// Queue close_notify onto `out` (best effort: not before the handshake
    /// has finished, nothing after a failure).
    pub(crate) fn close_notify(&mut self, out: &mut impl RecordOut) {
        if self.failed.is_none() {
            if let Err(e) = self.drive(Some(Send::CloseNotify), out) {
                log::debug!("tls: close_notify: {e}");
            }
        }
    }

    /// Step rustls with the carried ciphertext until it waits for input,
    /// sending `send` when it allows; returns `send` if it could not go yet.
    fn drive<'d>(
        &mut self,
        send: Option<Send<'d>>,
        out: &mut impl RecordOut,
    ) -> Result<Option<Send<'d>>, rustls::Error> {
        let mut send = send;
        let (mut work, mut end) = self.carry.take();
        let mut sink = Sink {
            buf: &mut [],
            filled: 0,
        };
        let r = loop {
            match self.step(&mut work[..end], out, &mut sink, &mut send) {
                Ok((discard, next)) => {
                    work.copy_within(discard..end, 0);
                    end -= discard;
                    if !matches!(next, Next::Again) {
                        break Ok(());
                    }
                }
                Err(e) => break Err(e),
            }
        };
        self.carry.keep(work, 0, end);
        r.map(|()| send)
    }

    /// One `process_tls_records` over `input`, with the state it returns
    /// handled: plaintext to `sink`, records onto `out`, `send` (and
    /// `early`) encrypted if application data may go. Returns how many bytes
    /// at the front of `input` are consumed.
    fn step(
        &mut self,
        input: &mut [u8],
        out: &mut impl RecordOut,
        sink: &mut Sink<'_>,
        send: &mut Option<Send<'_>>,
    ) -> Result<(usize, Next), rustls::Error> {
        let UnbufferedStatus { mut discard, state } = self.conn.process_tls_records(input);
        let next = match state? {
            ConnectionState::ReadTraffic(mut traffic) => {
                while let Some(record) = traffic.next_record() {
                    let record = record?;
                    discard += record.discard;
                    sink.put(record.payload, &mut self.plain);
                }
                Next::Again
            }
            ConnectionState::EncodeTlsData(mut encode) => {
                encode_onto(&mut encode, out)?;
                Next::Again
            }
            ConnectionState::TransmitTlsData(mut transmit) => {
                // Bytes on `out` are as good as sent: the stream flushes it.
                if let Some(mut traffic) = transmit.may_encrypt_app_data() {
                    send_app_data(&mut traffic, &mut self.early, send, out)?;
                }
                transmit.done();
                Next::Again
            }
            ConnectionState::WriteTraffic(mut traffic) => {
                send_app_data(&mut traffic, &mut self.early, send, out)?;
                Next::Blocked
            }
            ConnectionState::PeerClosed => {
                self.peer_closed = true;
                Next::Again
            }
            ConnectionState::Closed => {
                self.peer_closed = true;
                self.closed = true;
                Next::Closed
            }
            // BlockedHandshake, and server-only states.
            _ => Next::Blocked,
        };
        Ok((discard, next))
    }

    /// Remember the failure, put the alert rustls queued for it onto `out`
    /// (best effort), and turn it into the error the stream reports.
    fn fail(&mut self, e: rustls::Error, out: &mut impl RecordOut) -> io::Error {
        log::debug!("tls: {e}");
        self.failed = Some(e.clone());
        // rustls hands out a queued record before it looks at the input
        // again, and queues at most one fatal alert: one call. (A second
        // call would parse the failed bytes again.)
        let (mut work, end) = self.carry.take();
        let UnbufferedStatus { state, .. } = self.conn.process_tls_records(&mut work[..end]);
        if let Ok(ConnectionState::EncodeTlsData(mut encode)) = state {
            let _ = encode_onto(&mut encode, out);
        }
        self.carry.keep(work, 0, end);
        tls_io_error(e)
    }
}

/// Put the handshake record (or alert) rustls has ready onto `out`.
fn encode_onto(
    encode: &mut EncodeTlsData<'_, ClientConnectionData>,
    out: &mut impl RecordOut,
) -> Result<(), rustls::Error> {
    out.put_with(512, |b| {
        encode.encode(b).map_err(|e| match e {
            EncodeError::InsufficientSize(s) => Some(s.required_size),
            _ => None,
        })
    })
    .map_err(|()| rustls::Error::General("TLS record encoded twice".into()))
}

/// Encrypt the early plaintext, then `send`, onto `out`.
fn send_app_data(
    traffic: &mut WriteTraffic<'_, ClientConnectionData>,
    early: &mut Vec<u8>,
    send: &mut Option<Send<'_>>,
    out: &mut impl RecordOut,
) -> Result<(), rustls::Error> {
    if !early.is_empty() {
        encrypt(traffic, early, out)?;
        *early = Vec::new();
    }
    match send.take() {
        Some(Send::Data(data)) => encrypt(traffic, data, out),
        Some(Send::CloseNotify) => out
            .put_with(64, |b| {
                traffic.queue_close_notify(b).map_err(|e| match e {
                    EncryptError::InsufficientSize(s) => Some(s.required_size),
                    _ => None,
                })
            })
            .map_err(|()| rustls::Error::EncryptError),
        None => Ok(()),
    }
}

fn encrypt(
    traffic: &mut WriteTraffic<'_, ClientConnectionData>,
    data: &[u8],
    out: &mut impl RecordOut,
) -> Result<(), rustls::Error> {
    let room = data.len() + (data.len() / (16 << 10) + 1) * RECORD_OVERHEAD;
    out.put_with(room, |b| {
        traffic.encrypt(data, b).map_err(|e| match e {
            EncryptError::InsufficientSize(s) => Some(s.required_size),
            _ => None,
        })
    })
    .map_err(|()| rustls::Error::EncryptError)
}

/// Where TLS records go: onto the end of a buffer.
pub(crate) trait RecordOut {
    /// Let `fill` write onto the end, into `room` bytes; when it answers
    /// `Err(Some(n))` (too small, `n` needed) try once more with `n`.
    fn put_with(
        &mut self,
        room: usize,
        fill: impl FnMut(&mut [u8]) -> Result<usize, Option<usize>>,
    ) -> Result<(), ()>;
}

/// A connection's outgoing bytes: records are appended.
impl RecordOut for Vec<u8> {
    fn put_with(
        &mut self,
        room: usize,
        fill: impl FnMut(&mut [u8]) -> Result<usize, Option<usize>>,
    ) -> Result<(), ()> {
        let mut sealed = Sealed::new(self);
        sealed.len = sealed.buf.len();
        let r = sealed.put_with(room, fill);
        let len = sealed.len;
        self.truncate(len);
        r
    }
}

/// Records written from the front of a reused buffer whose bytes past
/// `len` are already initialised: growing it zero-fills only new memory,
/// not the whole room again for every message (which cost 100 KB of memset
/// per 100 KB message).
pub(crate) struct Sealed<'b> {
    buf: &'b mut Vec<u8>,
    len: usize,
}

impl<'b> Sealed<'b> {
    /// Start writing at the front of `buf` (its contents are scratch).
    pub(crate) fn new(buf: &'b mut Vec<u8>) -> Sealed<'b> {
        Sealed { buf, len: 0 }
    }

    /// The records written so far.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl RecordOut for Sealed<'_> {
    fn put_with(
        &mut self,
        room: usize,
        mut fill: impl FnMut(&mut [u8]) -> Result<usize, Option<usize>>,
    ) -> Result<(), ()> {
        let mut room = room;
        loop {
            if self.buf.len() < self.len + room {
                self.buf.resize(self.len + room, 0);
            }
            match fill(&mut self.buf[self.len..self.len + room]) {
                Ok(n) => {
                    self.len += n;
                    return Ok(());
                }
                Err(Some(needed)) if needed > room => room = needed,
                Err(_) => return Err(()),
            }
        }
    }
}

/// The rustls error, carried inside the `io::Error` the stream returns so
/// that [`classify_io`](super::stream::classify_io) can recover it.
#[derive(Debug)]
pub(crate) struct TlsFailure(pub(crate) rustls::Error);

impl fmt::Display for TlsFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TLS: {}", self.0)
    }
}

impl std::error::Error for TlsFailure {}

fn tls_io_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, TlsFailure(e))
}

/// Certificate problems are fatal and distinct; everything else is `Tls`.
pub(crate) fn classify_tls(e: &rustls::Error) -> Error {
    match e {
        rustls::Error::InvalidCertificate(_) => Error::TlsCertificate,
        _ => Error::Tls,
    }
}
