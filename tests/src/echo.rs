//! An echo WebSocket server, plain or TLS, with control knobs for tests.
//!
//! Echoes text and binary messages verbatim (one thread per connection).
//! A few text messages are commands instead of being echoed:
//!
//! | message               | effect                                                   |
//! |-----------------------|----------------------------------------------------------|
//! | `__close:CODE`        | close handshake with that code (`__close:CODE:REASON` too) |
//! | `__ping:PAYLOAD`      | send a ping with that payload, then keep echoing          |
//! | `__drop`              | drop the TCP connection without a close frame             |
//!
//! Every accepted upgrade's path (with query) and headers are recorded.

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tungstenite::handshake::server::{Request, Response};
use tungstenite::Message;

use crate::acceptor::{lock, wait_until, Acceptor, Conn};
use crate::ws_util::{accept_ws, close_gracefully, poll_read, server_stream, ws_config};

/// How an [`EchoServer`] is set up.
#[derive(Clone)]
pub struct EchoOptions {
    /// Serve TLS with this config (see [`crate::TestPki::server_config`]); `None` = plain.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Largest message and frame accepted (default 64 MiB, so 16 MiB echoes pass).
    pub max_message_size: usize,
    /// Send a server-initiated ping (payload `zenws-echo-ping`) this often.
    pub ping_interval: Option<Duration>,
}

impl Default for EchoOptions {
    fn default() -> Self {
        EchoOptions {
            tls: None,
            max_message_size: 64 << 20,
            ping_interval: None,
        }
    }
}

impl std::fmt::Debug for EchoOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EchoOptions")
            .field("tls", &self.tls.is_some())
            .field("max_message_size", &self.max_message_size)
            .field("ping_interval", &self.ping_interval)
            .finish()
    }
}

impl EchoOptions {
    /// Default options serving TLS with `cfg`.
    pub fn tls(cfg: Arc<rustls::ServerConfig>) -> EchoOptions {
        EchoOptions {
            tls: Some(cfg),
            ..EchoOptions::default()
        }
    }
}

/// One accepted upgrade request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    /// Connection index (0-based accept order).
    pub conn: usize,
    /// Request target: path plus `?query` if any.
    pub path: String,
    /// Headers in arrival order, names lower-case.
    pub headers: Vec<(String, String)>,
}

impl RecordedRequest {
    /// First value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

pub(crate) fn record_request(conn: usize, req: &Request) -> RecordedRequest {
    RecordedRequest {
        conn,
        path: req
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| req.uri().to_string()),
        headers: req
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
    }
}

enum Command {
    Close(u16, String),
    Ping(Vec<u8>),
    Text(String),
}

type Mailbox = Arc<Mutex<Vec<Command>>>;

struct State {
    opts: EchoOptions,
    requests: Mutex<Vec<RecordedRequest>>,
    mailboxes: Mutex<HashMap<usize, Mailbox>>,
    pings_sent: AtomicUsize,
    pongs_received: AtomicUsize,
    messages_echoed: AtomicUsize,
}

impl State {
    fn send_all(&self, make: impl Fn() -> Command) -> usize {
        let boxes = lock(&self.mailboxes);
        for mb in boxes.values() {
            lock(mb).push(make());
        }
        boxes.len()
    }
}

struct MailboxGuard<'a> {
    state: &'a State,
    index: usize,
}

impl Drop for MailboxGuard<'_> {
    fn drop(&mut self) {
        lock(&self.state.mailboxes).remove(&self.index);
    }
}

/// The echo server (see the module docs). Stops when dropped.
pub struct EchoServer {
    acceptor: Acceptor,
    state: Arc<State>,
}

impl std::fmt::Debug for EchoServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EchoServer")
            .field("url", &self.url())
            .field("acceptor", &self.acceptor)
            .finish()
    }
}

impl EchoServer {
    /// Bind `127.0.0.1:0` and start serving.
    pub fn start(opts: EchoOptions) -> io::Result<EchoServer> {
        let state = Arc::new(State {
            opts,
            requests: Mutex::new(Vec::new()),
            mailboxes: Mutex::new(HashMap::new()),
            pings_sent: AtomicUsize::new(0),
            pongs_received: AtomicUsize::new(0),
            messages_echoed: AtomicUsize::new(0),
        });
        let st = state.clone();
        let acceptor = Acceptor::start("echo", move |tcp, conn| serve(tcp, conn, &st))?;
        Ok(EchoServer { acceptor, state })
    }

    /// A plain server with default options.
    pub fn plain() -> io::Result<EchoServer> {
        EchoServer::start(EchoOptions::default())
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> SocketAddr {
        self.acceptor.addr()
    }

    /// Whether this server speaks TLS.
    pub fn is_tls(&self) -> bool {
        self.state.opts.tls.is_some()
    }

    /// `ws://127.0.0.1:PORT/`, or `wss://localhost:PORT/` for TLS (the
    /// certificate from [`crate::TestPki::generate`] also covers `127.0.0.1`).
    pub fn url(&self) -> String {
        self.url_with_path("/")
    }

    /// Like [`EchoServer::url`] with another path (and query), e.g. `/feed?x=1`.
    pub fn url_with_path(&self, path: &str) -> String {
        if self.is_tls() {
            format!("wss://localhost:{}{path}", self.addr().port())
        } else {
            format!("ws://{}{path}", self.addr())
        }
    }

    /// Connections accepted since start (TCP level, including failed upgrades).
    pub fn connections_accepted(&self) -> usize {
        self.acceptor.connections_accepted()
    }

    /// Connections currently open.
    pub fn live_connections(&self) -> usize {
        self.acceptor.live_connections()
    }

    /// Wait up to `timeout` until `n` connections are live; true if reached.
    pub fn wait_live_connections(&self, n: usize, timeout: Duration) -> bool {
        wait_until(timeout, || self.live_connections() == n)
    }

    /// Wait up to `timeout` until at least `n` connections were accepted in total.
    pub fn wait_connections_accepted(&self, n: usize, timeout: Duration) -> bool {
        wait_until(timeout, || self.connections_accepted() >= n)
    }

    /// Shut down every live socket abruptly (FIN, no close frame); keep listening.
    pub fn kill_connections(&self) {
        self.acceptor.kill_connections()
    }

    /// Reset every live socket (RST via SO_LINGER 0); keep listening.
    pub fn reset_connections(&self) {
        self.acceptor.reset_connections()
    }

    /// Stop listening and kill every connection; the port is freed.
    pub fn stop(&self) {
        self.acceptor.stop()
    }

    /// Listen again on the same port after [`EchoServer::stop`].
    pub fn restart(&self) -> io::Result<()> {
        self.acceptor.restart()
    }

    /// Close-handshake every live connection with `code` and `reason`.
    /// Returns how many connections were told.
    pub fn close_all(&self, code: u16, reason: &str) -> usize {
        self.state
            .send_all(|| Command::Close(code, reason.to_string()))
    }

    /// Send a ping with `payload` (at most 125 bytes) to every live connection.
    pub fn ping_all(&self, payload: &[u8]) -> usize {
        self.state.send_all(|| Command::Ping(payload.to_vec()))
    }

    /// Push a text message to every live connection.
    pub fn broadcast_text(&self, text: &str) -> usize {
        self.state.send_all(|| Command::Text(text.to_string()))
    }

    /// Every accepted upgrade request so far, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.state.requests).clone()
    }

    /// Headers of the last accepted upgrade (names lower-case); empty if none.
    pub fn last_request_headers(&self) -> Vec<(String, String)> {
        lock(&self.state.requests)
            .last()
            .map(|r| r.headers.clone())
            .unwrap_or_default()
    }

    /// A header of the last accepted upgrade (case-insensitive name).
    pub fn last_request_header(&self, name: &str) -> Option<String> {
        lock(&self.state.requests)
            .last()
            .and_then(|r| r.header(name).map(str::to_string))
    }

    /// Path and query of the last accepted upgrade, e.g. `/feed?x=1`.
    pub fn last_request_path(&self) -> Option<String> {
        lock(&self.state.requests).last().map(|r| r.path.clone())
    }

    /// Pings the server has sent (periodic and on command).
    pub fn pings_sent(&self) -> usize {
        self.state.pings_sent.load(Ordering::SeqCst)
    }

    /// Pongs the server has received.
    pub fn pongs_received(&self) -> usize {
        self.state.pongs_received.load(Ordering::SeqCst)
    }

    /// Data messages echoed back.
    pub fn messages_echoed(&self) -> usize {
        self.state.messages_echoed.load(Ordering::SeqCst)
    }
}

// The callback's error type is fixed by tungstenite.
#[allow(clippy::result_large_err)]
fn serve(tcp: TcpStream, conn: Conn, st: &Arc<State>) {
    let stream = match server_stream(tcp, st.opts.tls.as_ref()) {
        Ok(s) => s,
        Err(e) => {
            log::debug!("echo conn {}: {e}", conn.index());
            return;
        }
    };
    let index = conn.index();
    let st2 = st.clone();
    let callback = move |req: &Request, resp: Response| {
        lock(&st2.requests).push(record_request(index, req));
        Ok(resp)
    };
    let Some(mut ws) = accept_ws(stream, callback, ws_config(st.opts.max_message_size), &conn)
    else {
        return;
    };
    let mailbox: Mailbox = Arc::default();
    lock(&st.mailboxes).insert(index, mailbox.clone());
    let _guard = MailboxGuard { state: st, index };
    let mut next_ping = st.opts.ping_interval.map(|d| Instant::now() + d);

    while !conn.is_killed() {
        let commands: Vec<Command> = std::mem::take(&mut *lock(&mailbox));
        for c in commands {
            let sent = match c {
                Command::Close(code, reason) => {
                    close_gracefully(&mut ws, code, &reason);
                    return;
                }
                Command::Ping(p) => {
                    st.pings_sent.fetch_add(1, Ordering::SeqCst);
                    ws.send(Message::Ping(p.into()))
                }
                Command::Text(t) => ws.send(Message::text(t)),
            };
            if sent.is_err() {
                return;
            }
        }
        if let (Some(at), Some(every)) = (next_ping, st.opts.ping_interval) {
            if Instant::now() >= at {
                st.pings_sent.fetch_add(1, Ordering::SeqCst);
                if ws
                    .send(Message::Ping(b"zenws-echo-ping".to_vec().into()))
                    .is_err()
                {
                    return;
                }
                next_ping = Some(Instant::now() + every);
            }
        }
        let msg = match poll_read(&mut ws) {
            Ok(Some(m)) => m,
            Ok(None) => continue,
            Err(e) => {
                log::debug!("echo conn {index}: {e}");
                return;
            }
        };
        let sent = match msg {
            Message::Text(t) => {
                if let Some(rest) = t.strip_prefix("__close:") {
                    let (code, reason) = rest.split_once(':').unwrap_or((rest, ""));
                    close_gracefully(&mut ws, code.trim().parse().unwrap_or(1000), reason);
                    return;
                } else if let Some(payload) = t.strip_prefix("__ping:") {
                    st.pings_sent.fetch_add(1, Ordering::SeqCst);
                    ws.send(Message::Ping(payload.as_bytes().to_vec().into()))
                } else if t.as_str() == "__drop" {
                    return;
                } else {
                    st.messages_echoed.fetch_add(1, Ordering::SeqCst);
                    ws.send(Message::Text(t))
                }
            }
            Message::Binary(b) => {
                st.messages_echoed.fetch_add(1, Ordering::SeqCst);
                ws.send(Message::Binary(b))
            }
            Message::Pong(_) => {
                st.pongs_received.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
            // Pings are answered and closes replied to by tungstenite itself.
            Message::Ping(_) | Message::Close(_) | Message::Frame(_) => Ok(()),
        };
        if let Err(e) = sent {
            log::debug!("echo conn {index}: send: {e}");
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blocking_client::{connect, connect_with, read_data, read_text, DEFAULT_TIMEOUT};
    use crate::TestPki;
    use tungstenite::protocol::frame::coding::CloseCode;

    const T: Duration = Duration::from_secs(2);

    #[test]
    fn plain_echo_text_and_binary() {
        let srv = EchoServer::plain().unwrap();
        assert!(srv.url().starts_with("ws://127.0.0.1:"));
        let mut ws = connect(&srv.url(), None).unwrap();
        ws.send(Message::text("hello")).unwrap();
        assert_eq!(read_text(&mut ws).unwrap(), "hello");
        let big = vec![7u8; 1 << 20];
        ws.send(Message::binary(big.clone())).unwrap();
        assert_eq!(read_data(&mut ws).unwrap(), Message::binary(big));
        assert_eq!(srv.connections_accepted(), 1);
        assert!(srv.wait_live_connections(1, T));
        assert_eq!(srv.messages_echoed(), 2);
    }

    #[test]
    fn sixteen_mib_echo() {
        let srv = EchoServer::plain().unwrap();
        let mut ws = connect_with(&srv.url(), None, &[], Duration::from_secs(10)).unwrap();
        let big = vec![0x5Au8; 16 << 20];
        ws.send(Message::binary(big.clone())).unwrap();
        let back = read_data(&mut ws).unwrap();
        assert!(back == Message::binary(big), "16 MiB echo differs");
    }

    #[test]
    fn tls_echo_with_generated_ca() {
        let pki = TestPki::generate();
        let srv = EchoServer::start(EchoOptions::tls(pki.server_config())).unwrap();
        assert!(srv.url().starts_with("wss://localhost:"));
        let mut ws = connect(&srv.url(), Some(pki.client_config())).unwrap();
        ws.send(Message::text("over tls")).unwrap();
        assert_eq!(read_text(&mut ws).unwrap(), "over tls");
        // The certificate covers the IP too.
        let ip_url = format!("wss://{}/", srv.addr());
        let mut ws = connect(&ip_url, Some(pki.client_config())).unwrap();
        ws.send(Message::binary(vec![1, 2, 3])).unwrap();
        assert_eq!(read_data(&mut ws).unwrap(), Message::binary(vec![1, 2, 3]));
    }

    #[test]
    fn tls_rejects_unknown_ca_and_wrong_name() {
        let pki = TestPki::generate();
        let srv = EchoServer::start(EchoOptions::tls(pki.server_config())).unwrap();
        let other = TestPki::generate();
        assert!(connect(&srv.url(), Some(other.client_config())).is_err());

        let mismatched = TestPki::generate_for(&["not-localhost.test"]);
        let srv2 = EchoServer::start(EchoOptions::tls(mismatched.server_config())).unwrap();
        let err = connect(&srv2.url(), Some(mismatched.client_config())).unwrap_err();
        assert!(
            format!("{err}").to_lowercase().contains("certificate"),
            "{err}"
        );
    }

    #[test]
    fn records_path_query_and_headers() {
        let srv = EchoServer::plain().unwrap();
        let url = srv.url_with_path("/feed?token=abc&x=1");
        let _ws = connect_with(&url, None, &[("X-Api-Key", "k123")], DEFAULT_TIMEOUT).unwrap();
        assert_eq!(srv.last_request_path().unwrap(), "/feed?token=abc&x=1");
        assert_eq!(srv.last_request_header("x-api-key").unwrap(), "k123");
        assert!(srv
            .last_request_headers()
            .iter()
            .any(|(k, _)| k == "sec-websocket-key"));
        assert_eq!(srv.requests().len(), 1);
    }

    #[test]
    fn kill_then_stop_then_restart_same_port() {
        let srv = EchoServer::plain().unwrap();
        let addr = srv.addr();
        let mut ws = connect(&srv.url(), None).unwrap();
        assert!(srv.wait_live_connections(1, T));
        srv.kill_connections();
        assert!(ws.read().is_err());
        assert!(srv.wait_live_connections(0, T));

        let mut ws = connect(&srv.url(), None).unwrap();
        srv.stop();
        assert!(ws.read().is_err());
        assert!(TcpStream::connect(addr).is_err(), "port must be closed");
        srv.restart().unwrap();
        assert_eq!(srv.addr(), addr);
        let mut ws = connect(&srv.url(), None).unwrap();
        ws.send(Message::text("again")).unwrap();
        assert_eq!(read_text(&mut ws).unwrap(), "again");
        assert_eq!(srv.connections_accepted(), 3);
    }

    #[test]
    fn drop_frees_the_port() {
        let srv = EchoServer::plain().unwrap();
        let addr = srv.addr();
        let _ws = connect(&srv.url(), None).unwrap();
        drop(srv);
        assert!(TcpStream::connect(addr).is_err());
    }

    #[test]
    fn close_commands_and_close_all() {
        let srv = EchoServer::plain().unwrap();
        let mut ws = connect(&srv.url(), None).unwrap();
        ws.send(Message::text("__close:4001:bye")).unwrap();
        match read_data(&mut ws).unwrap() {
            Message::Close(Some(f)) => {
                assert_eq!(f.code, CloseCode::from(4001));
                assert_eq!(f.reason.as_str(), "bye");
            }
            other => panic!("{other:?}"),
        }

        let mut a = connect(&srv.url(), None).unwrap();
        let mut b = connect(&srv.url(), None).unwrap();
        assert!(srv.wait_live_connections(2, T));
        assert_eq!(srv.close_all(1001, "going away"), 2);
        for ws in [&mut a, &mut b] {
            match read_data(ws).unwrap() {
                Message::Close(Some(f)) => assert_eq!(f.code, CloseCode::Away),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn ping_command_and_periodic_pings() {
        let srv = EchoServer::start(EchoOptions {
            ping_interval: Some(Duration::from_millis(30)),
            ..EchoOptions::default()
        })
        .unwrap();
        let mut ws = connect(&srv.url(), None).unwrap();
        ws.send(Message::text("__ping:abc")).unwrap();
        let mut saw_abc = false;
        let mut periodic = 0;
        while !(saw_abc && periodic >= 2) {
            match ws.read().unwrap() {
                Message::Ping(p) if &p[..] == b"abc" => saw_abc = true,
                Message::Ping(p) if &p[..] == b"zenws-echo-ping" => periodic += 1,
                other => panic!("{other:?}"),
            }
        }
        // tungstenite answered with pongs; keep echoing afterwards.
        ws.send(Message::text("still here")).unwrap();
        assert_eq!(read_text(&mut ws).unwrap(), "still here");
        assert!(wait_until(T, || srv.pongs_received() >= 2));
    }

    #[test]
    fn drop_command_closes_without_close_frame() {
        let srv = EchoServer::plain().unwrap();
        let mut ws = connect(&srv.url(), None).unwrap();
        ws.send(Message::text("__drop")).unwrap();
        let err = ws.read().unwrap_err();
        assert!(
            matches!(
                err,
                tungstenite::Error::Protocol(_) | tungstenite::Error::Io(_)
            ),
            "{err:?}"
        );
    }
}
