//! The client side of the HTTP/1.1 upgrade (RFC 6455 §4.1), non-blocking,
//! over our [`Stream`] (plain TCP or TLS).
//!
//! Ours rather than tungstenite's `ClientHandshake` for memory: tungstenite
//! reads the response through a `ReadBuffer<4096>` (a zeroed 4 KiB chunk plus
//! a 4 KiB `Vec`), and that `Vec` becomes the connection's permanent read
//! buffer, 4 KiB whatever `read_buffer_size` says. Here the response goes
//! into a small `Vec` (256 bytes to start, grown on demand, at most
//! [`MAX_RESPONSE`]) that is dropped once the upgrade is done; only the bytes
//! after the headers (a server that speaks first) are handed on, to be
//! decoded at once by the frame codec (`conn.rs`).
//!
//! Checks (as tungstenite's): status 101 (anything else is
//! [`Error::from_upgrade_status`]), HTTP/1.1, `Upgrade: websocket`,
//! `Connection: upgrade` (a token of the list), `Sec-WebSocket-Accept`, and
//! `Sec-WebSocket-Protocol` against what the request asked for. Header
//! values never appear in errors or logs.

use std::io::{self, Read, Write};

use tungstenite::handshake::client::generate_key;
use tungstenite::handshake::derive_accept_key;
use tungstenite::http::{HeaderName, HeaderValue};
use zenws_core::Error;

use super::stream::{classify_io, Stream};
use crate::url::Target;

/// First capacity of the response buffer: a typical 101 is 130-200 bytes.
const RESPONSE_START: usize = 256;
/// Largest response head (status line + headers) we accept.
pub(super) const MAX_RESPONSE: usize = 16 << 10;
/// Most header lines in the response (tungstenite's limit).
const MAX_HEADERS: usize = 124;

/// The upgrade request, built and validated before the TCP connect.
pub(crate) struct Request {
    bytes: Vec<u8>,
    /// The `Sec-WebSocket-Accept` the server must answer with.
    accept: String,
    /// Subprotocols asked for with a `Sec-WebSocket-Protocol` header.
    protocols: Option<Vec<String>>,
}

/// Build `GET path_and_query HTTP/1.1` with `Host`, the WebSocket headers
/// and `headers`. Errors name the offending header, never its value.
pub(crate) fn build_request(
    target: &Target,
    headers: &[(String, String)],
) -> Result<Request, String> {
    const RESERVED: [&str; 4] = [
        "connection",
        "upgrade",
        "sec-websocket-key",
        "sec-websocket-version",
    ];
    let mut host = None;
    let mut extra = Vec::with_capacity(headers.len());
    let mut protocols: Option<Vec<String>> = None;
    for (name, value) in headers {
        let key = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("invalid header name {name:?}"))?;
        if RESERVED.contains(&key.as_str()) {
            return Err(format!("header {name:?} is set by the WebSocket handshake"));
        }
        // Never echo the value: it may be a credential.
        HeaderValue::from_str(value).map_err(|_| format!("invalid value for header {name:?}"))?;
        if key == tungstenite::http::header::HOST {
            host = Some(value.as_str());
        } else {
            if key == tungstenite::http::header::SEC_WEBSOCKET_PROTOCOL {
                protocols.get_or_insert_with(Vec::new).extend(
                    value
                        .split(',')
                        .map(|p| p.trim().to_string())
                        .filter(|p| !p.is_empty()),
                );
            }
            extra.push((name.as_str(), value.as_str()));
        }
    }
    let key = generate_key();
    let authority;
    let host = match host {
        Some(h) => h,
        None => {
            authority = target.authority();
            &authority
        }
    };
    let mut bytes = Vec::with_capacity(
        160 + target.path_and_query.len()
            + host.len()
            + extra
                .iter()
                .map(|(n, v)| n.len() + v.len() + 4)
                .sum::<usize>(),
    );
    // Writing into a Vec cannot fail.
    let _ = write!(
        bytes,
        "GET {} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n",
        target.path_and_query
    );
    for (name, value) in extra {
        // The name as the user wrote it: some servers compare case-sensitively.
        bytes.extend_from_slice(name.as_bytes());
        bytes.extend_from_slice(b": ");
        bytes.extend_from_slice(value.as_bytes());
        bytes.extend_from_slice(b"\r\n");
    }
    bytes.extend_from_slice(b"\r\n");
    Ok(Request {
        accept: derive_accept_key(key.as_bytes()),
        bytes,
        protocols,
    })
}

/// One connection from TCP connect to upgrade.
pub(super) struct Handshake {
    stream: Stream,
    request: Request,
    /// Request bytes already handed to the stream.
    written: usize,
    /// The response so far (and whatever followed it in the same read).
    response: Vec<u8>,
}

/// The upgrade succeeded: the response head is `len` bytes long.
pub(crate) struct Upgraded {
    pub(crate) len: usize,
    /// The HTTP status (101).
    pub(crate) status: u16,
}

type Failure = (Error, String);

impl Handshake {
    pub(super) fn new(stream: Stream, request: Request) -> Handshake {
        Handshake {
            stream,
            request,
            written: 0,
            response: Vec::new(),
        }
    }

    pub(super) fn stream(&self) -> &Stream {
        &self.stream
    }

    pub(super) fn stream_mut(&mut self) -> &mut Stream {
        &mut self.stream
    }

    /// Once TCP is connected: send the request (TLS handshake included),
    /// read and check the response. `Ok(None)`: waiting for the socket.
    pub(super) fn advance(&mut self) -> Result<Option<Upgraded>, Failure> {
        self.send_request()?;
        loop {
            let len = self.response.len();
            if len >= MAX_RESPONSE {
                return Err((
                    Error::Protocol,
                    format!("handshake: response headers too large (over {MAX_RESPONSE} bytes)"),
                ));
            }
            if len == self.response.capacity() {
                let grow = len.max(RESPONSE_START).min(MAX_RESPONSE - len);
                self.response.reserve_exact(grow);
            }
            let cap = self.response.capacity().min(MAX_RESPONSE);
            self.response.resize(cap, 0);
            let read = self.stream.read(&mut self.response[len..]);
            let n = *read.as_ref().unwrap_or(&0);
            self.response.truncate(len + n);
            match read {
                Ok(0) => {
                    return Err((
                        Error::ConnectionReset,
                        "handshake: connection closed before the upgrade response".into(),
                    ))
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err((classify_io(&e), format!("handshake: {e}"))),
            }
            // The head ends with an empty line: no need to parse before a
            // new line arrived (keeps a byte-at-a-time peer cheap).
            if !self.response[len..].contains(&b'\n') {
                continue;
            }
            if let Some(done) = self.parse()? {
                return Ok(Some(done));
            }
        }
    }

    /// Hand the request to the stream (once) and push it out.
    fn send_request(&mut self) -> Result<(), Failure> {
        let fail = |e: io::Error| (classify_io(&e), format!("upgrade request: {e}"));
        let bytes = &self.request.bytes;
        while self.written < bytes.len() {
            match self.stream.write(&bytes[self.written..]) {
                Ok(0) => return Err(fail(io::ErrorKind::WriteZero.into())),
                Ok(n) => self.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(fail(e)),
            }
        }
        if !bytes.is_empty() {
            self.request.bytes = Vec::new();
            self.written = 0;
        }
        match self.stream.flush() {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            Err(e) => Err(fail(e)),
        }
    }

    /// `Ok(None)`: the head is not complete yet.
    fn parse(&self) -> Result<Option<Upgraded>, Failure> {
        parse_response(&self.response, &self.request)
    }

    /// The stream, with the bytes that followed the response head (a
    /// server that speaks first; usually empty, no allocation then).
    pub(super) fn into_parts(self, up: &Upgraded) -> (Stream, Vec<u8>) {
        let Handshake {
            stream, response, ..
        } = self;
        let tail = response.get(up.len..).unwrap_or_default().to_vec();
        (stream, tail)
    }
}

/// Parse `response` (the bytes read so far) and check it against `request`.
/// `Ok(None)`: the head is not complete yet.
pub(crate) fn parse_response(
    response: &[u8],
    request: &Request,
) -> Result<Option<Upgraded>, Failure> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(response) {
        Ok(httparse::Status::Partial) => return Ok(None),
        Ok(httparse::Status::Complete(len)) => len,
        Err(e) => {
            return Err((
                Error::Protocol,
                format!("handshake: malformed HTTP response: {e}"),
            ))
        }
    };
    let status = verify(&resp, request)?;
    Ok(Some(Upgraded { len, status }))
}

#[cfg(feature = "fuzzing")]
impl Request {
    /// The request's bytes (empty once sent) and the accept key it expects.
    pub(crate) fn parts(&self) -> (&[u8], &str) {
        (&self.bytes, &self.accept)
    }
}

fn protocol(detail: &str) -> Failure {
    (Error::Protocol, format!("handshake: {detail}"))
}

/// The values of header `name` (case-insensitive), in order.
fn values<'a>(
    resp: &'a httparse::Response<'_, '_>,
    name: &'a str,
) -> impl Iterator<Item = &'a [u8]> + 'a {
    resp.headers
        .iter()
        .filter(move |h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value.trim_ascii())
}

fn verify(resp: &httparse::Response<'_, '_>, req: &Request) -> Result<u16, Failure> {
    if resp.version.unwrap_or(0) < 1 {
        return Err(protocol("HTTP version below 1.1"));
    }
    let status = resp.code.unwrap_or(0);
    if status != 101 {
        return Err((
            Error::from_upgrade_status(status),
            format!("handshake: upgrade refused with HTTP {status}"),
        ));
    }
    // First value only, like tungstenite (`HeaderMap::get`).
    let upgrade = values(resp, "upgrade").next();
    if !upgrade.is_some_and(|v| v.eq_ignore_ascii_case(b"websocket")) {
        return Err(protocol("missing \"Upgrade: websocket\" in the response"));
    }
    let connection_upgrade = values(resp, "connection").any(|v| {
        v.split(|&b| b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"upgrade"))
    });
    if !connection_upgrade {
        return Err(protocol("missing \"Connection: upgrade\" in the response"));
    }
    let accept = values(resp, "sec-websocket-accept").next();
    if accept != Some(req.accept.as_bytes()) {
        return Err(protocol("Sec-WebSocket-Accept does not match the key"));
    }
    let chosen = values(resp, "sec-websocket-protocol").next();
    match (chosen, &req.protocols) {
        (None, None) => {}
        (None, Some(_)) => return Err(protocol("the server chose no subprotocol")),
        (Some(_), None) => {
            return Err(protocol(
                "the server chose a subprotocol none was asked for",
            ))
        }
        (Some(p), Some(asked)) => {
            if !asked.iter().any(|a| a.as_bytes() == p) {
                return Err(protocol("the server chose a subprotocol not asked for"));
            }
        }
    }
    Ok(status)
}
