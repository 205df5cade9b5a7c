//! A minimal blocking tungstenite client with socket timeouts, for checking
//! that the servers in this crate do what they say (and for any test that
//! needs a reference client next to the one under test).
//!
//! `ws://` and `wss://` URLs are accepted; `localhost` resolves to IPv4
//! first, since every server here listens on `127.0.0.1` only.

use std::io;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use tungstenite::client::IntoClientRequest;
use tungstenite::handshake::HandshakeError;
use tungstenite::http::HeaderValue;
use tungstenite::protocol::WebSocket;
use tungstenite::Message;

use crate::ws_util::BoxStream;

/// A connected blocking client.
pub type BlockingWs = WebSocket<BoxStream>;

/// Socket read and write timeout used by [`connect`].
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

/// Why a blocking connect failed.
#[derive(Debug)]
pub enum ClientError {
    /// Bad URL, DNS, TCP connect or socket setup.
    Io(io::Error),
    /// TLS setup (e.g. an invalid server name).
    Tls(String),
    /// The WebSocket upgrade failed; `tungstenite::Error::Http(resp)` carries
    /// a non-101 response, `tungstenite::Error::Io` wraps TLS failures.
    Ws(tungstenite::Error),
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::Io(e) => write!(f, "io: {e}"),
            ClientError::Tls(e) => write!(f, "tls: {e}"),
            ClientError::Ws(e) => write!(f, "websocket: {e}"),
        }
    }
}

impl std::error::Error for ClientError {}

impl ClientError {
    /// The HTTP status if the server answered the upgrade with a non-101 status.
    pub fn http_status(&self) -> Option<u16> {
        match self {
            ClientError::Ws(tungstenite::Error::Http(resp)) => Some(resp.status().as_u16()),
            _ => None,
        }
    }
}

/// Connect with [`DEFAULT_TIMEOUT`]; `tls` is required for `wss://`.
pub fn connect(
    url: &str,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> Result<BlockingWs, ClientError> {
    connect_with(url, tls, &[], DEFAULT_TIMEOUT)
}

/// Connect sending extra request `headers`, with socket `timeout` for
/// connect, reads and writes.
pub fn connect_with(
    url: &str,
    tls: Option<Arc<rustls::ClientConfig>>,
    headers: &[(&str, &str)],
    timeout: Duration,
) -> Result<BlockingWs, ClientError> {
    let mut request = url.into_client_request().map_err(ClientError::Ws)?;
    for (k, v) in headers {
        let name = tungstenite::http::HeaderName::from_bytes(k.as_bytes())
            .map_err(|e| ClientError::Io(io::Error::other(e)))?;
        let value = HeaderValue::from_str(v).map_err(|e| ClientError::Io(io::Error::other(e)))?;
        request.headers_mut().append(name, value);
    }
    let uri = request.uri().clone();
    let secure = uri.scheme_str() == Some("wss");
    let host = uri
        .host()
        .ok_or_else(|| ClientError::Io(io::Error::other("URL has no host")))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
    let mut addrs: Vec<SocketAddr> = (host.as_str(), port)
        .to_socket_addrs()
        .map_err(ClientError::Io)?
        .collect();
    addrs.sort_by_key(|a| !a.is_ipv4());
    let mut last = io::Error::other("no address");
    let mut tcp = None;
    for a in addrs {
        match TcpStream::connect_timeout(&a, timeout) {
            Ok(s) => {
                tcp = Some(s);
                break;
            }
            Err(e) => last = e,
        }
    }
    let tcp = tcp.ok_or(ClientError::Io(last))?;
    tcp.set_read_timeout(Some(timeout))
        .map_err(ClientError::Io)?;
    tcp.set_write_timeout(Some(timeout))
        .map_err(ClientError::Io)?;
    let _ = tcp.set_nodelay(true);
    let stream: BoxStream = if secure {
        let cfg = tls.ok_or_else(|| ClientError::Tls("wss:// needs a ClientConfig".into()))?;
        let name = rustls::pki_types::ServerName::try_from(host.clone())
            .map_err(|e| ClientError::Tls(e.to_string()))?;
        let conn = rustls::ClientConnection::new(cfg, name)
            .map_err(|e| ClientError::Tls(e.to_string()))?;
        Box::new(rustls::StreamOwned::new(conn, tcp))
    } else {
        Box::new(tcp)
    };
    match tungstenite::client::client(request, stream) {
        Ok((ws, _resp)) => Ok(ws),
        Err(HandshakeError::Failure(e)) => Err(ClientError::Ws(e)),
        Err(HandshakeError::Interrupted(_)) => Err(ClientError::Io(io::Error::new(
            io::ErrorKind::TimedOut,
            "upgrade timed out",
        ))),
    }
}

/// Read the next data message (text or binary), skipping pings and pongs.
pub fn read_data(ws: &mut BlockingWs) -> tungstenite::Result<Message> {
    loop {
        match ws.read()? {
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
            m => return Ok(m),
        }
    }
}

/// Read the next text message (skipping control frames); errors on binary.
pub fn read_text(ws: &mut BlockingWs) -> tungstenite::Result<String> {
    match read_data(ws)? {
        Message::Text(t) => Ok(t.as_str().to_string()),
        Message::Close(c) => Err(tungstenite::Error::Io(io::Error::other(format!(
            "expected text, got close {c:?}"
        )))),
        other => Err(tungstenite::Error::Io(io::Error::other(format!(
            "expected text, got {other:?}"
        )))),
    }
}

/// True if `e` is a socket timeout (nothing arrived within the timeout).
pub fn is_timeout(e: &tungstenite::Error) -> bool {
    matches!(e, tungstenite::Error::Io(io) if matches!(io.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut))
}
