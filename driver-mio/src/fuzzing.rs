//! Internals for the fuzz targets (`driver-mio/fuzz`), behind the
//! `fuzzing` feature. Thin owned wrappers around the crate's private
//! frame decoder, UTF-8 validator, upgrade-response check and TLS session:
//! the production code paths, nothing re-implemented. Not a stable API.

#![allow(clippy::result_unit_err)] // the fuzz targets only compare outcomes

use std::io::{self, Read};
use std::sync::Arc;

use rustls::pki_types::ServerName;

use crate::transport::fuzz as transport;
use crate::url::Target;

/// A decoded message or control frame, owned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Msg {
    /// A text message (validated UTF-8).
    Text(String),
    /// A binary message.
    Binary(Vec<u8>),
    /// A ping's payload.
    Ping(Vec<u8>),
    /// A pong's payload.
    Pong(Vec<u8>),
    /// A close frame: code and reason, `None` when empty.
    Close(Option<(u16, String)>),
}

/// The frame decoder (`transport/codec.rs`).
#[derive(Debug)]
pub struct Decoder(transport::Decoder);

impl Decoder {
    /// A decoder with the given frame and message limits.
    pub fn new(max_frame: usize, max_message: usize) -> Decoder {
        Decoder(transport::Decoder::new(max_frame, max_message))
    }

    /// One `decode` call: bytes consumed and the completed frame, if any.
    /// The error is `(close code, message)`. Also reports whether the
    /// payload was borrowed from `input` (no copy).
    #[allow(clippy::type_complexity)]
    pub fn decode(&mut self, input: &[u8]) -> Result<(usize, Option<(Msg, bool)>), (u16, String)> {
        use transport::{Frame, Payload, Text};
        let (n, frame) = self
            .0
            .decode(input)
            .map_err(|e| (e.close_code(), e.to_string()))?;
        let payload = |p: Payload<'_>| match p {
            Payload::Borrowed(b) => (b.to_vec(), true),
            Payload::Owned(v) => (v, false),
        };
        let msg = frame.map(|f| match f {
            Frame::Text(Text::Borrowed(s)) => (Msg::Text(s.to_string()), true),
            Frame::Text(Text::Owned(s)) => (Msg::Text(s), false),
            Frame::Binary(p) => {
                let (v, b) = payload(p);
                (Msg::Binary(v), b)
            }
            Frame::Ping(p) => {
                let (v, b) = payload(p);
                (Msg::Ping(v), b)
            }
            Frame::Pong(p) => {
                let (v, b) = payload(p);
                (Msg::Pong(v), b)
            }
            Frame::Close(c) => (Msg::Close(c), false),
        });
        Ok((n, msg))
    }
}

/// The incremental UTF-8 validator (`transport/codec.rs`).
#[derive(Debug, Default)]
pub struct Utf8Validator(transport::Utf8Validator);

impl Utf8Validator {
    /// Validate the next piece, appending the text it completes to `out`.
    pub fn feed(&mut self, input: &[u8], out: &mut String) -> Result<(), ()> {
        self.0.feed(input, out).map_err(|_| ())
    }

    /// The text ended: a cut sequence left over is an error.
    pub fn finish(&mut self) -> Result<(), ()> {
        self.0.finish().map_err(|_| ())
    }
}

/// The client's upgrade request (`transport/handshake.rs`).
pub struct UpgradeRequest(transport::Request);

/// What [`UpgradeRequest::check_response`] found: the head's length and
/// the status (101).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Upgraded {
    /// Bytes of the response head (status line, headers, empty line).
    pub len: usize,
    /// The HTTP status.
    pub status: u16,
}

impl UpgradeRequest {
    /// Build the request for `target` with extra `headers`.
    pub fn new(target: &Target, headers: &[(String, String)]) -> Result<UpgradeRequest, String> {
        transport::build_request(target, headers).map(UpgradeRequest)
    }

    /// The request's bytes.
    pub fn bytes(&self) -> &[u8] {
        self.0.parts().0
    }

    /// The `Sec-WebSocket-Accept` value the server must answer with.
    pub fn accept(&self) -> &str {
        self.0.parts().1
    }

    /// Parse and verify the response read so far: `Ok(None)` while the
    /// head is incomplete.
    pub fn check_response(
        &self,
        response: &[u8],
    ) -> Result<Option<Upgraded>, (zenws_core::Error, String)> {
        transport::parse_response(response, &self.0).map(|u| {
            u.map(|u| Upgraded {
                len: u.len,
                status: u.status,
            })
        })
    }
}

/// The client TLS session on caller-owned buffers
/// (`transport/tls_session.rs`). Outgoing records are appended to `out`.
pub struct TlsClient(Box<transport::TlsSession>);

impl TlsClient {
    /// A client session for `name`; its ClientHello goes onto `out`.
    pub fn new(
        config: Arc<rustls::ClientConfig>,
        name: ServerName<'static>,
        out: &mut Vec<u8>,
    ) -> Result<TlsClient, rustls::Error> {
        transport::TlsSession::new(config, name, out).map(|s| TlsClient(Box::new(s)))
    }

    /// Plaintext into `buf`, reading ciphertext from `socket` as needed.
    pub fn read(
        &mut self,
        socket: &mut impl Read,
        out: &mut Vec<u8>,
        buf: &mut [u8],
    ) -> io::Result<usize> {
        self.0.read(socket, out, buf)
    }

    /// Encrypt `data` onto `out` (kept until the handshake allows it).
    pub fn write(&mut self, data: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
        self.0.write(data, out)
    }

    /// Queue close_notify onto `out`.
    pub fn close_notify(&mut self, out: &mut Vec<u8>) {
        self.0.close_notify(out)
    }

    /// Decrypted bytes wait for the next `read`.
    pub fn has_plaintext(&self) -> bool {
        self.0.has_plaintext()
    }
}
