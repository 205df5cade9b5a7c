//! Client-side RFC 6455 frame codec, sans-IO (no extensions).
//!
//! [`Decoder::decode`] parses server frames out of whatever byte slice the
//! caller has (one socket read, in the loop's shared read buffer). A
//! complete unfragmented message or control frame that lies whole in the
//! slice is handed back *borrowed* from it ([`Payload::Borrowed`]): no
//! allocation and no copy until the transport makes the application's
//! `Bytes` from it. Everything else (a header cut by the end of a read, a
//! payload that spans reads, fragmented messages) is kept in the decoder:
//! up to 13 header bytes inline, the message so far in a `Vec` that is
//! handed over (no copy) when the message completes, so an idle connection
//! holds no buffer at all.
//!
//! Checks, all at the earliest byte that shows the violation (a peer that
//! trickles a bad frame is failed before the frame ends):
//! RSV1-3 must be 0 (no extension is negotiated), reserved opcodes, server
//! frames must not be masked, control frames ≤ 125 bytes and FIN, a
//! continuation needs a message to continue and a new data frame may not
//! interrupt one ([`CodecError::Protocol`], close code 1002); frame payload
//! over `max_frame` or message over `max_message`
//! ([`CodecError::TooLarge`], 1009); text and close reasons must be UTF-8,
//! validated incrementally across fragments and across reads, failing at
//! the first byte that cannot start or continue a valid sequence
//! ([`CodecError::Utf8`], 1007); a close payload of 1 byte is a protocol
//! error. Lengths need not be minimally encoded (RFC 6455 §5.2 asks the
//! sender for it, receivers commonly accept both). Close *codes* are
//! returned as received; the transport decides what to answer.
//!
//! The encoder ([`encode`]) writes one masked client frame (header, 4-byte
//! key, masked payload) into a caller's `Vec` in one pass over the payload.
//! Masking keys come from [`MaskRng`]: a cryptographically secure
//! generator, as RFC 6455 §5.3/§10.3 ask ("a strong source of entropy"):
//! `rand`'s `StdRng` (ChaCha12), one per thread, seeded once from the OS
//! (`getrandom`). It buffers a 256-byte ChaCha block, so a key is a copy
//! most of the time. `rand` is the rust-random project's crate (the same
//! generator behind `rand::rng()`, which tungstenite uses), already built
//! for tungstenite: no new crate. Reading the OS for every 4 KiB of keys
//! instead was measured at ≈ 10 ns per key here (a system call per 1,024
//! keys). Cost against the previous per-connection wyrand:
//! `cargo test --release -p zenws-mio --lib -- --ignored mask_key_cost
//! --nocapture` (see `codec_tests.rs`).

use std::fmt;
use std::str;

use tungstenite::{Bytes, Utf8Bytes};

/// Opcodes (RFC 6455 §5.2).
pub(crate) const OP_CONT: u8 = 0x0;
pub(crate) const OP_TEXT: u8 = 0x1;
pub(crate) const OP_BINARY: u8 = 0x2;
pub(crate) const OP_CLOSE: u8 = 0x8;
pub(crate) const OP_PING: u8 = 0x9;
pub(crate) const OP_PONG: u8 = 0xA;

/// Longest server frame header: 2 + 8 bytes of length (no mask).
const MAX_HEADER: usize = 10;
/// Most a partial frame's buffer is reserved for up front (the rest grows
/// as bytes arrive: a peer announcing a huge frame does not get it
/// allocated before it sends it).
const RESERVE_CAP: u64 = 1 << 20;

/// Why the peer's bytes were refused; [`CodecError::close_code`] is what we
/// tell the peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum CodecError {
    /// An RFC 6455 violation (1002).
    Protocol(&'static str),
    /// Invalid UTF-8 in a text message or close reason (1007).
    Utf8,
    /// A frame or message over the configured limit (1009).
    TooLarge {
        /// The frame's or message's size so far, with this frame.
        size: u64,
        /// The limit.
        max: u64,
    },
}

impl CodecError {
    pub(crate) fn close_code(&self) -> u16 {
        match self {
            CodecError::Protocol(_) => 1002,
            CodecError::Utf8 => 1007,
            CodecError::TooLarge { .. } => 1009,
        }
    }
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CodecError::Protocol(what) => write!(f, "WebSocket protocol error: {what}"),
            CodecError::Utf8 => f.write_str("invalid UTF-8 in a text message or close reason"),
            CodecError::TooLarge { size, max } => {
                write!(f, "message too large: {size} bytes (limit {max})")
            }
        }
    }
}

/// A payload: borrowed from the decoded slice, or assembled by the decoder.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Payload<'a> {
    Borrowed(&'a [u8]),
    Owned(Vec<u8>),
}

impl Payload<'_> {
    pub(crate) fn as_slice(&self) -> &[u8] {
        match self {
            Payload::Borrowed(b) => b,
            Payload::Owned(v) => v,
        }
    }

    /// The application's copy: one copy for a borrowed payload, none for an
    /// assembled one.
    pub(crate) fn into_bytes(self) -> Bytes {
        match self {
            Payload::Borrowed(b) => Bytes::copy_from_slice(b),
            Payload::Owned(v) => Bytes::from(v),
        }
    }
}

/// A text payload, already validated.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Text<'a> {
    Borrowed(&'a str),
    Owned(String),
}

impl Text<'_> {
    #[cfg(test)]
    pub(crate) fn as_str(&self) -> &str {
        match self {
            Text::Borrowed(s) => s,
            Text::Owned(s) => s,
        }
    }

    pub(crate) fn into_utf8_bytes(self) -> Utf8Bytes {
        match self {
            Text::Borrowed(s) => Utf8Bytes::from(s),
            Text::Owned(s) => Utf8Bytes::from(s),
        }
    }
}

/// One complete message or control frame.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Frame<'a> {
    Text(Text<'a>),
    Binary(Payload<'a>),
    Ping(Payload<'a>),
    Pong(Payload<'a>),
    /// `(code, reason)`, `None` for an empty close frame. The code is as
    /// received (not checked against the registry); the reason is UTF-8.
    Close(Option<(u16, String)>),
}

/// The frame whose payload is arriving.
#[derive(Clone, Copy, Debug)]
struct Current {
    op: u8,
    fin: bool,
    remaining: u64,
}

/// Incremental UTF-8 validation: feed any split of the bytes; fails at the
/// first byte that no valid continuation could fix.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Utf8Validator {
    /// An incomplete (so far valid) sequence at the end of the last chunk.
    carry: [u8; 4],
    len: u8,
}

impl Utf8Validator {
    /// Validate the next piece and append the text it completes to `out`
    /// (a sequence cut at the end waits in the validator). Each byte is
    /// validated once: the piece is split before its last lead byte, the
    /// head checked with one `from_utf8`, the ≤ 4-byte tail on its own.
    pub(crate) fn feed(&mut self, mut input: &[u8], out: &mut String) -> Result<(), CodecError> {
        if self.len > 0 {
            let have = usize::from(self.len);
            let width = match self.carry[0] {
                0xC0..=0xDF => 2,
                0xE0..=0xEF => 3,
                _ => 4,
            };
            let take = (width - have).min(input.len());
            self.carry[have..have + take].copy_from_slice(&input[..take]);
            let now = have + take;
            match str::from_utf8(&self.carry[..now]) {
                Ok(s) => {
                    out.push_str(s);
                    self.len = 0;
                }
                // Still a valid prefix (and `input` is used up).
                Err(e) if e.error_len().is_none() => {
                    self.len = now as u8;
                    return Ok(());
                }
                Err(_) => return Err(CodecError::Utf8),
            }
            input = &input[take..];
        }
        // The last byte that is not a continuation byte (within 4 of the
        // end): everything before it ends on a character boundary if valid.
        let split = input
            .iter()
            .rev()
            .take(4)
            .position(|&b| b & 0xC0 != 0x80)
            .map_or(0, |back| input.len() - 1 - back);
        let (head, tail) = input.split_at(split);
        // `head` is followed by a lead byte (or nothing), so a sequence it
        // leaves cut can never be completed: any error is final.
        out.push_str(str::from_utf8(head).map_err(|_| CodecError::Utf8)?);
        match str::from_utf8(tail) {
            Ok(t) => {
                out.push_str(t);
                Ok(())
            }
            // std reports `None` only for a valid but cut sequence (≤ 3 bytes).
            Err(e) if e.error_len().is_none() => {
                let cut = &tail[e.valid_up_to()..];
                // Only a complete prefix of `tail` can be valid before it
                // (`tail` starts with its single lead byte).
                if e.valid_up_to() > 0 {
                    return Err(CodecError::Utf8);
                }
                self.carry[..cut.len()].copy_from_slice(cut);
                self.len = cut.len() as u8;
                Ok(())
            }
            Err(_) => Err(CodecError::Utf8),
        }
    }

    /// The text ended: a cut sequence left over is an error.
    pub(crate) fn finish(&mut self) -> Result<(), CodecError> {
        let cut = self.len != 0;
        self.len = 0;
        if cut {
            Err(CodecError::Utf8)
        } else {
            Ok(())
        }
    }
}

/// Parses server frames (see the [module docs](self)).
#[derive(Debug)]
pub(crate) struct Decoder {
    max_frame: u64,
    max_message: u64,
    /// A header cut by the end of the input.
    hdr: [u8; MAX_HEADER],
    hdr_len: u8,
    /// Opcode of the data message being assembled (`OP_TEXT`/`OP_BINARY`),
    /// 0 when none: set from the first frame of a message whose payload does
    /// not arrive whole, cleared when its final frame is complete.
    msg_op: u8,
    cur: Option<Current>,
    /// The binary message so far (freed when handed over).
    msg: Vec<u8>,
    /// The text message so far, validated as it arrives (freed when handed
    /// over; no second UTF-8 pass).
    text: String,
    /// A control frame's payload that spans reads (≤ 125 bytes).
    ctrl: Vec<u8>,
    utf8: Utf8Validator,
}

/// Check what the available header bytes already show, and return the
/// header once complete: `(opcode, fin, payload length, header length)`.
fn parse_head(b: &[u8]) -> Result<Option<(u8, bool, u64, usize)>, CodecError> {
    let Some(&b0) = b.first() else {
        return Ok(None);
    };
    if b0 & 0x70 != 0 {
        return Err(CodecError::Protocol(
            "reserved bits set (no extension negotiated)",
        ));
    }
    let fin = b0 & 0x80 != 0;
    let op = b0 & 0x0F;
    match op {
        OP_CONT | OP_TEXT | OP_BINARY => {}
        OP_CLOSE | OP_PING | OP_PONG => {
            if !fin {
                return Err(CodecError::Protocol("fragmented control frame"));
            }
        }
        _ => return Err(CodecError::Protocol("reserved opcode")),
    }
    let Some(&b1) = b.get(1) else {
        return Ok(None);
    };
    if b1 & 0x80 != 0 {
        return Err(CodecError::Protocol("masked frame from the server"));
    }
    let head = match b1 & 0x7F {
        126 => b
            .get(2..4)
            .map(|l| (op, fin, u64::from(u16::from_be_bytes([l[0], l[1]])), 4)),
        127 => b.get(2..10).map(|l| {
            let mut n = [0u8; 8];
            n.copy_from_slice(l);
            (op, fin, u64::from_be_bytes(n), 10)
        }),
        n => Some((op, fin, u64::from(n), 2)),
    };
    // The payload length, not the length field: a non-minimal 16-bit
    // length under 126 is fine (as tungstenite).
    if let Some((op, _, len, _)) = head {
        if op & 0x8 != 0 && len > 125 {
            return Err(CodecError::Protocol("control frame payload over 125 bytes"));
        }
    }
    Ok(head)
}

/// A complete control frame's payload → the frame.
fn control(op: u8, payload: Payload<'_>) -> Result<Frame<'_>, CodecError> {
    Ok(match op {
        OP_PING => Frame::Ping(payload),
        OP_PONG => Frame::Pong(payload),
        _ => {
            let p = payload.as_slice();
            match p.len() {
                0 => Frame::Close(None),
                1 => return Err(CodecError::Protocol("close frame with a 1-byte payload")),
                _ => {
                    let code = u16::from_be_bytes([p[0], p[1]]);
                    let reason = str::from_utf8(&p[2..]).map_err(|_| CodecError::Utf8)?;
                    Frame::Close(Some((code, reason.to_string())))
                }
            }
        }
    })
}

impl Decoder {
    pub(crate) fn new(max_frame: usize, max_message: usize) -> Decoder {
        Decoder {
            max_frame: max_frame as u64,
            max_message: max_message as u64,
            hdr: [0; MAX_HEADER],
            hdr_len: 0,
            msg_op: 0,
            cur: None,
            msg: Vec::new(),
            text: String::new(),
            ctrl: Vec::new(),
            utf8: Utf8Validator::default(),
        }
    }

    /// Heap bytes held for a partial frame or message (0 when between
    /// messages).
    #[cfg(test)]
    pub(crate) fn buffered(&self) -> usize {
        self.msg.capacity() + self.text.capacity() + self.ctrl.capacity()
    }

    /// Parse from `input` until one message or control frame is complete
    /// (`(consumed, Some(frame))`; call again with the rest) or `input` is
    /// used up (`(input.len(), None)`: what was partial is kept). After an
    /// error the decoder must not be used again.
    pub(crate) fn decode<'a>(
        &mut self,
        input: &'a [u8],
    ) -> Result<(usize, Option<Frame<'a>>), CodecError> {
        // Fast path, the common frame: a whole, final, unmasked text or
        // binary frame with a 7-bit length, no extension bits, nothing in
        // progress, within the limits. Anything else (including every error)
        // takes the general path below, which accepts the same frames.
        if let [b0, b1, rest @ ..] = input {
            let len = usize::from(*b1);
            if self.cur.is_none()
                && self.hdr_len == 0
                && self.msg_op == 0
                && len < 126
                && len <= rest.len()
                && len as u64 <= self.max_frame
                && len as u64 <= self.max_message
            {
                let p = &rest[..len];
                match *b0 {
                    0x81 => {
                        let t = str::from_utf8(p).map_err(|_| CodecError::Utf8)?;
                        return Ok((2 + len, Some(Frame::Text(Text::Borrowed(t)))));
                    }
                    0x82 => return Ok((2 + len, Some(Frame::Binary(Payload::Borrowed(p))))),
                    _ => {}
                }
            }
        }
        let mut pos = 0;
        loop {
            if self.cur.is_none() {
                // `hlen`: the header bytes taken from `input`.
                let (op, fin, len, hlen) = if self.hdr_len == 0 {
                    match parse_head(&input[pos..])? {
                        Some(h) => h,
                        None => {
                            let rest = &input[pos..];
                            self.hdr[..rest.len()].copy_from_slice(rest);
                            self.hdr_len = rest.len() as u8;
                            return Ok((input.len(), None));
                        }
                    }
                } else {
                    let have = usize::from(self.hdr_len);
                    let take = (MAX_HEADER - have).min(input.len() - pos);
                    self.hdr[have..have + take].copy_from_slice(&input[pos..pos + take]);
                    match parse_head(&self.hdr[..have + take])? {
                        Some((op, fin, len, hlen)) => {
                            self.hdr_len = 0;
                            // Only the header's own bytes come out of `input`.
                            (op, fin, len, hlen - have)
                        }
                        None => {
                            self.hdr_len = (have + take) as u8;
                            return Ok((input.len(), None));
                        }
                    }
                };
                pos += hlen;
                self.begin(op, len)?;
                let avail = (input.len() - pos) as u64;
                // Fast path: a whole control frame or unfragmented message.
                if len <= avail && (op & 0x8 != 0 || (fin && op != OP_CONT)) {
                    let p = &input[pos..pos + len as usize];
                    pos += len as usize;
                    let frame = match op {
                        OP_TEXT => Frame::Text(Text::Borrowed(
                            str::from_utf8(p).map_err(|_| CodecError::Utf8)?,
                        )),
                        OP_BINARY => Frame::Binary(Payload::Borrowed(p)),
                        _ => control(op, Payload::Borrowed(p))?,
                    };
                    return Ok((pos, Some(frame)));
                }
                if op & 0x8 == 0 {
                    if op != OP_CONT {
                        self.msg_op = op;
                    }
                    let (have, cap) = if self.msg_op == OP_TEXT {
                        (self.text.len(), self.text.capacity())
                    } else {
                        (self.msg.len(), self.msg.capacity())
                    };
                    let want = (have as u64).saturating_add(len.min(RESERVE_CAP));
                    if want > cap as u64 {
                        let more = want as usize - have;
                        if self.msg_op == OP_TEXT {
                            self.text.reserve_exact(more);
                        } else {
                            self.msg.reserve_exact(more);
                        }
                    }
                }
                self.cur = Some(Current {
                    op,
                    fin,
                    remaining: len,
                });
            }
            let Some(cur) = self.cur.as_mut() else {
                continue;
            };
            let take = cur.remaining.min((input.len() - pos) as u64) as usize;
            let chunk = &input[pos..pos + take];
            pos += take;
            cur.remaining -= take as u64;
            let cur = *cur;
            if cur.op & 0x8 != 0 {
                self.ctrl.extend_from_slice(chunk);
            } else {
                if self.msg_op == OP_TEXT {
                    self.utf8.feed(chunk, &mut self.text)?;
                } else {
                    self.msg.extend_from_slice(chunk);
                }
            }
            if cur.remaining == 0 {
                self.cur = None;
                if cur.op & 0x8 != 0 {
                    let p = std::mem::take(&mut self.ctrl);
                    return Ok((pos, Some(control(cur.op, Payload::Owned(p))?)));
                }
                if cur.fin {
                    let op = std::mem::replace(&mut self.msg_op, 0);
                    let frame = if op == OP_TEXT {
                        self.utf8.finish()?;
                        Frame::Text(Text::Owned(std::mem::take(&mut self.text)))
                    } else {
                        Frame::Binary(Payload::Owned(std::mem::take(&mut self.msg)))
                    };
                    return Ok((pos, Some(frame)));
                }
            }
            if pos == input.len() {
                return Ok((pos, None));
            }
        }
    }

    /// Checks that need the whole header and the message state.
    fn begin(&mut self, op: u8, len: u64) -> Result<(), CodecError> {
        if len > self.max_frame {
            return Err(CodecError::TooLarge {
                size: len,
                max: self.max_frame,
            });
        }
        if op & 0x8 != 0 {
            return Ok(());
        }
        if op == OP_CONT {
            if self.msg_op == 0 {
                return Err(CodecError::Protocol(
                    "continuation frame without a message to continue",
                ));
            }
        } else if self.msg_op != 0 {
            return Err(CodecError::Protocol(
                "new data frame while a fragmented message is unfinished",
            ));
        }
        // Bytes of the message so far (a cut UTF-8 sequence waits in the
        // validator).
        let so_far = self.msg.len() + self.text.len() + usize::from(self.utf8.len);
        let size = (so_far as u64).saturating_add(len);
        if size > self.max_message {
            return Err(CodecError::TooLarge {
                size,
                max: self.max_message,
            });
        }
        Ok(())
    }
}

/// A connection's masking-key source (see the [module docs](self)): a
/// handle on the thread's generator, so it costs nothing per connection.
#[derive(Debug)]
pub(crate) struct MaskRng(());

thread_local! {
    /// The thread's ChaCha12 stream, seeded from the OS on first use.
    static KEYS: std::cell::RefCell<Option<rand::rngs::StdRng>> =
        const { std::cell::RefCell::new(None) };
}

fn seeded() -> rand::rngs::StdRng {
    use rand::SeedableRng;
    let mut seed = [0u8; 32];
    if let Err(e) = getrandom::fill(&mut seed) {
        // No OS entropy (essentially impossible where mio runs): std's
        // randomly keyed SipHash and the clock, so that frames still go
        // out; said loudly.
        log::error!("masking keys: OS random source failed ({e}); using a weaker seed");
        use std::hash::{BuildHasher, Hasher};
        let state = std::collections::hash_map::RandomState::new();
        for (i, chunk) in seed.chunks_mut(8).enumerate() {
            let mut h = state.build_hasher();
            h.write_usize(i);
            if let Ok(d) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
                h.write_u128(d.as_nanos());
            }
            chunk.copy_from_slice(&h.finish().to_ne_bytes());
        }
    }
    rand::rngs::StdRng::from_seed(seed)
}

impl MaskRng {
    /// The handle; the thread's generator is seeded on first use.
    pub(crate) fn from_os() -> MaskRng {
        MaskRng(())
    }

    /// The next 4 bytes of the thread's ChaCha12 stream.
    #[inline]
    pub(crate) fn next_key(&mut self) -> [u8; 4] {
        use rand::Rng;
        KEYS.with(|k| {
            k.borrow_mut()
                .get_or_insert_with(seeded)
                .next_u32()
                .to_ne_bytes()
        })
    }
}

/// XOR `buf` with `key` (RFC 6455 §5.3), `buf[0]` with `key[0]`.
pub(crate) fn apply_mask(buf: &mut [u8], key: [u8; 4]) {
    let wide = u64::from_ne_bytes([
        key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3],
    ]);
    let mut chunks = buf.chunks_exact_mut(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        c.copy_from_slice(&(u64::from_ne_bytes(w) ^ wide).to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= key[i & 3];
    }
}

/// Payloads up to this size are framed on the stack ([`encode_into`] into a
/// [`SMALL_FRAME`]-byte array) and written with one call.
pub(crate) const SMALL_PAYLOAD: usize = SMALL_FRAME - 14;
/// See [`SMALL_PAYLOAD`].
pub(crate) const SMALL_FRAME: usize = 256;

/// A masked client frame's header and key into `h`; returns its length
/// (6, 8 or 14).
fn header(h: &mut [u8; 14], op: u8, fin: bool, len: usize, key: [u8; 4]) -> usize {
    h[0] = if fin { 0x80 } else { 0 } | (op & 0x0F);
    let n = if len < 126 {
        h[1] = 0x80 | len as u8;
        2
    } else if len <= 0xFFFF {
        h[1] = 0x80 | 126;
        h[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        4
    } else {
        h[1] = 0x80 | 127;
        h[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    };
    h[n..n + 4].copy_from_slice(&key);
    n + 4
}

/// `dst = src` XOR `key` (RFC 6455 §5.3), 8 bytes at a time; equal lengths.
fn mask_copy(dst: &mut [u8], src: &[u8], key: [u8; 4]) {
    let wide = u64::from_ne_bytes([
        key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3],
    ]);
    let mut d = dst.chunks_exact_mut(8);
    let mut s = src.chunks_exact(8);
    for (d, s) in (&mut d).zip(&mut s) {
        let mut w = [0u8; 8];
        w.copy_from_slice(s);
        d.copy_from_slice(&(u64::from_ne_bytes(w) ^ wide).to_ne_bytes());
    }
    for (i, (d, s)) in d.into_remainder().iter_mut().zip(s.remainder()).enumerate() {
        *d = s ^ key[i & 3];
    }
}

/// Write one masked client frame into `buf` (header, key, and the payload
/// masked as it is copied: one pass); returns the frame's length. `buf`
/// must hold 14 + `payload.len()` bytes.
pub(crate) fn encode_into(
    buf: &mut [u8],
    op: u8,
    fin: bool,
    payload: &[u8],
    key: [u8; 4],
) -> usize {
    let mut h = [0u8; 14];
    let n = header(&mut h, op, fin, payload.len(), key);
    buf[..n].copy_from_slice(&h[..n]);
    let end = n + payload.len();
    mask_copy(&mut buf[n..end], payload, key);
    end
}

/// Append one masked client frame to `out`.
pub(crate) fn encode(out: &mut Vec<u8>, op: u8, fin: bool, payload: &[u8], key: [u8; 4]) {
    let mut h = [0u8; 14];
    let n = header(&mut h, op, fin, payload.len(), key);
    out.reserve(n + payload.len());
    out.extend_from_slice(&h[..n]);
    let start = out.len();
    out.extend_from_slice(payload);
    apply_mask(&mut out[start..], key);
}

/// Append a masked close frame: `code` (if any) and `reason` (the caller
/// keeps it ≤ 123 bytes).
pub(crate) fn encode_close(out: &mut Vec<u8>, code: Option<u16>, reason: &str, key: [u8; 4]) {
    let mut p = [0u8; 125];
    let n = match code {
        None => 0,
        Some(c) => {
            let r = &reason.as_bytes()[..reason.len().min(123)];
            p[..2].copy_from_slice(&c.to_be_bytes());
            p[2..2 + r.len()].copy_from_slice(r);
            2 + r.len()
        }
    };
    encode(out, OP_CLOSE, true, &p[..n], key);
}

#[cfg(test)]
#[path = "codec_tests.rs"]
mod tests;
