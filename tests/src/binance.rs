//! A Binance-style market-stream WebSocket server (a subset of the Spot
//! "combined streams" API), a second exchange next to [`crate::deribit`]
//! with a different protocol shape: numeric ids, `result: null` answers,
//! whole-request errors, WebSocket-level (not application) keepalive, and an
//! incoming-message rate limit enforced by disconnecting.
//!
//! Requests (text frames, JSON):
//!
//! | request | answer |
//! |---|---|
//! | `{"method":"SUBSCRIBE","params":["btcusdt@trade",..],"id":N}` | `{"result":null,"id":N}`; subscribes every stream |
//! | `{"method":"UNSUBSCRIBE","params":[..],"id":N}` | `{"result":null,"id":N}`; unsubscribes those subscribed |
//! | `{"method":"LIST_SUBSCRIPTIONS","id":N}` | `{"result":["btcusdt@trade",..],"id":N}` |
//! | a stream name not `<lowercase symbol>@<trade\|aggTrade\|depth\|bookTicker\|kline_1m>`, or refused ([`BinanceServer::reject_streams`]) | `{"error":{"code":2,"msg":"Invalid request: invalid stream name 'X'"},"id":N}` — nothing in the request is applied |
//! | a SUBSCRIBE that would exceed [`BinanceOptions::max_streams`] | code 2, `Invalid request: too many streams (max M)` |
//! | unknown method, `id` not an unsigned integer, `params` not a list of strings | code 2, `Invalid request: ...` |
//! | text that is not JSON | `{"error":{"code":3,"msg":"Invalid JSON: ..."},"id":null}` |
//!
//! Every [`BinanceOptions::notification_interval`] the server pushes, for
//! each subscribed stream, `{"stream":"btcusdt@trade","data":{..}}` with
//! Binance-shaped data (`e`, `E` event time in ms, `s` upper-case symbol,
//! …). Each stream's sequence number (`t` for trades, `a` for aggTrade,
//! `U`/`u` for depth, `u` for bookTicker, `t` open time for klines) counts
//! per stream name across all connections, so a reconnecting client sees
//! a jump, not a restart at 1.
//!
//! **Keepalive.** Every [`BinanceOptions::ping_interval`] the server sends a
//! WebSocket Ping whose payload is a counter (`"1"`, `"2"`, …). A Pong
//! carrying the payload of an outstanding ping answers it (and every older
//! one). If the oldest unanswered ping is older than
//! [`BinanceOptions::pong_timeout`], the server closes the connection (close
//! code [`BinanceOptions::pong_timeout_close_code`], reason `pong timeout`).
//! Pongs with other payloads are allowed but answer nothing.
//!
//! **Rate limit.** Every incoming frame (text, binary, ping, pong) counts;
//! more than [`BinanceOptions::max_messages_per_sec`] in any one-second
//! window closes the connection (close code
//! [`BinanceOptions::rate_limit_close_code`], reason `too many messages`).
//! Tests with fast pings must raise the limit: a client's pongs count too.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tungstenite::handshake::server::NoCallback;
use tungstenite::Message;

use crate::acceptor::{lock, wait_until, Acceptor, Conn};
use crate::ws_util::{accept_ws, close_gracefully, now_us, poll_read, server_stream, ws_config};

/// Stream types the server knows (the part after `@`).
pub const STREAM_TYPES: [&str; 5] = ["trade", "aggTrade", "depth", "bookTicker", "kline_1m"];

/// Close reason after a missing pong.
pub const PONG_TIMEOUT_REASON: &str = "pong timeout";

/// Close reason after too many incoming messages.
pub const RATE_LIMIT_REASON: &str = "too many messages";

/// How a [`BinanceServer`] is set up.
#[derive(Clone)]
pub struct BinanceOptions {
    /// Serve TLS with this config; `None` = plain.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Period of stream data pushes (default 20 ms).
    pub notification_interval: Duration,
    /// Period of server Ping frames (default 20 s, as Binance; e.g. 50 ms
    /// in tests).
    pub ping_interval: Duration,
    /// How long a ping may stay unanswered before the server closes the
    /// connection (default 60 s, as Binance).
    pub pong_timeout: Duration,
    /// Incoming frames allowed per one-second window (default 5).
    pub max_messages_per_sec: usize,
    /// Streams one connection may subscribe to (default 1024).
    pub max_streams: usize,
    /// Close code after a pong timeout (default 1008).
    pub pong_timeout_close_code: u16,
    /// Close code after exceeding the message rate (default 1008).
    pub rate_limit_close_code: u16,
}

impl Default for BinanceOptions {
    fn default() -> Self {
        BinanceOptions {
            tls: None,
            notification_interval: Duration::from_millis(20),
            ping_interval: Duration::from_secs(20),
            pong_timeout: Duration::from_secs(60),
            max_messages_per_sec: 5,
            max_streams: 1024,
            pong_timeout_close_code: 1008,
            rate_limit_close_code: 1008,
        }
    }
}

impl std::fmt::Debug for BinanceOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BinanceOptions")
            .field("tls", &self.tls.is_some())
            .field("notification_interval", &self.notification_interval)
            .field("ping_interval", &self.ping_interval)
            .field("pong_timeout", &self.pong_timeout)
            .field("max_messages_per_sec", &self.max_messages_per_sec)
            .field("max_streams", &self.max_streams)
            .field("pong_timeout_close_code", &self.pong_timeout_close_code)
            .field("rate_limit_close_code", &self.rate_limit_close_code)
            .finish()
    }
}

/// One JSON request as received, in arrival order.
#[derive(Debug, Clone, PartialEq)]
pub struct BinanceRequest {
    /// Connection index (0-based accept order, across restarts).
    pub conn: usize,
    /// The request `id` (`null` if absent).
    pub id: Value,
    /// The method (`""` if absent or not a string).
    pub method: String,
    /// The params (`null` if absent).
    pub params: Value,
}

enum Command {
    Text(String),
    Close(u16, String),
}

type Mailbox = Arc<Mutex<Vec<Command>>>;

struct Shared {
    opts: BinanceOptions,
    log: Mutex<Vec<BinanceRequest>>,
    seq: Mutex<HashMap<String, u64>>,
    subs: Mutex<HashMap<usize, Vec<String>>>,
    mailboxes: Mutex<HashMap<usize, Mailbox>>,
    rejected: Mutex<HashSet<String>>,
    pause_notifications: AtomicBool,
    send_pings: AtomicBool,
    unresponsive: AtomicBool,
    notifications_sent: AtomicU64,
    pings_sent: AtomicU64,
    pongs_received: AtomicU64,
    malformed: AtomicUsize,
    pong_timeout_closes: AtomicUsize,
    rate_limit_closes: AtomicUsize,
}

impl Shared {
    fn next_seq(&self, stream: &str) -> u64 {
        let mut seq = lock(&self.seq);
        let n = seq.entry(stream.to_string()).or_insert(0);
        *n += 1;
        *n
    }

    fn send_all(&self, make: impl Fn() -> Command) -> usize {
        let boxes = lock(&self.mailboxes);
        for mb in boxes.values() {
            lock(mb).push(make());
        }
        boxes.len()
    }
}

/// The Binance-style server (see the module docs). Stops when dropped.
pub struct BinanceServer {
    acceptor: Acceptor,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for BinanceServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BinanceServer")
            .field("url", &self.url())
            .field("acceptor", &self.acceptor)
            .finish()
    }
}

impl BinanceServer {
    /// Bind `127.0.0.1:0` and start serving.
    pub fn start(opts: BinanceOptions) -> io::Result<BinanceServer> {
        let shared = Arc::new(Shared {
            opts,
            log: Mutex::new(Vec::new()),
            seq: Mutex::new(HashMap::new()),
            subs: Mutex::new(HashMap::new()),
            mailboxes: Mutex::new(HashMap::new()),
            rejected: Mutex::new(HashSet::new()),
            pause_notifications: AtomicBool::new(false),
            send_pings: AtomicBool::new(true),
            unresponsive: AtomicBool::new(false),
            notifications_sent: AtomicU64::new(0),
            pings_sent: AtomicU64::new(0),
            pongs_received: AtomicU64::new(0),
            malformed: AtomicUsize::new(0),
            pong_timeout_closes: AtomicUsize::new(0),
            rate_limit_closes: AtomicUsize::new(0),
        });
        let sh = shared.clone();
        let acceptor = Acceptor::start("binance", move |tcp, conn| serve(tcp, conn, &sh))?;
        Ok(BinanceServer { acceptor, shared })
    }

    /// A plain server with default options.
    pub fn plain() -> io::Result<BinanceServer> {
        BinanceServer::start(BinanceOptions::default())
    }

    /// The options it runs with.
    pub fn options(&self) -> &BinanceOptions {
        &self.shared.opts
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> SocketAddr {
        self.acceptor.addr()
    }

    /// `ws://127.0.0.1:PORT/stream`, or `wss://localhost:PORT/stream` with
    /// TLS. (Any path is accepted.)
    pub fn url(&self) -> String {
        if self.shared.opts.tls.is_some() {
            format!("wss://localhost:{}/stream", self.addr().port())
        } else {
            format!("ws://{}/stream", self.addr())
        }
    }

    /// Connections accepted so far.
    pub fn connections_accepted(&self) -> usize {
        self.acceptor.connections_accepted()
    }

    /// Connections currently open.
    pub fn live_connections(&self) -> usize {
        self.acceptor.live_connections()
    }

    /// Wait up to `timeout` until `n` connections are live.
    pub fn wait_live_connections(&self, n: usize, timeout: Duration) -> bool {
        wait_until(timeout, || self.live_connections() == n)
    }

    /// Shut down every live socket abruptly (FIN, no close frame); keep listening.
    pub fn kill_connections(&self) {
        self.acceptor.kill_connections()
    }

    /// Reset every live socket (RST); keep listening.
    pub fn reset_connections(&self) {
        self.acceptor.reset_connections()
    }

    /// Close-handshake every live connection with `code` and `reason`.
    pub fn close_all(&self, code: u16, reason: &str) -> usize {
        self.shared
            .send_all(|| Command::Close(code, reason.to_string()))
    }

    /// Push a raw text message to every live connection.
    pub fn push_to_all(&self, text: &str) -> usize {
        self.shared.send_all(|| Command::Text(text.to_string()))
    }

    /// Stop listening and kill every connection; the port is freed.
    pub fn stop(&self) {
        self.acceptor.stop()
    }

    /// Listen again on the same port.
    pub fn restart(&self) -> io::Result<()> {
        self.acceptor.restart()
    }

    /// Every JSON request received so far (all connections, arrival order).
    /// Text that is not JSON is not logged (see [`BinanceServer::malformed`]).
    pub fn received(&self) -> Vec<BinanceRequest> {
        lock(&self.shared.log).clone()
    }

    /// Methods received on connection `conn`, in order.
    pub fn methods_on(&self, conn: usize) -> Vec<String> {
        lock(&self.shared.log)
            .iter()
            .filter(|r| r.conn == conn)
            .map(|r| r.method.clone())
            .collect()
    }

    /// How many requests with `method` were received (all connections).
    pub fn count_method(&self, method: &str) -> usize {
        lock(&self.shared.log)
            .iter()
            .filter(|r| r.method == method)
            .count()
    }

    /// Wait up to `timeout` until at least `n` requests with `method` arrived.
    pub fn wait_for_method(&self, method: &str, n: usize, timeout: Duration) -> bool {
        wait_until(timeout, || self.count_method(method) >= n)
    }

    /// Forget the request log.
    pub fn clear_received(&self) {
        lock(&self.shared.log).clear()
    }

    /// Text messages that were not JSON (answered with code 3).
    pub fn malformed(&self) -> usize {
        self.shared.malformed.load(Ordering::SeqCst)
    }

    /// Streams connection `conn` is subscribed to now, in subscription
    /// order (empty once closed).
    pub fn subscriptions(&self, conn: usize) -> Vec<String> {
        lock(&self.shared.subs)
            .get(&conn)
            .cloned()
            .unwrap_or_default()
    }

    /// Refuse these streams from now on (replacing the previous set; `&[]`
    /// clears it): a request naming one fails with code 2.
    pub fn reject_streams(&self, streams: &[&str]) {
        *lock(&self.shared.rejected) = streams.iter().map(|s| s.to_string()).collect();
    }

    /// Stop (or resume) pushing stream data.
    pub fn set_pause_notifications(&self, on: bool) {
        self.shared.pause_notifications.store(on, Ordering::SeqCst)
    }

    /// Whether Ping frames are sent (default true). While off, no pong is
    /// awaited either.
    pub fn set_send_pings(&self, on: bool) {
        self.shared.send_pings.store(on, Ordering::SeqCst)
    }

    /// Log requests but answer nothing and push no data (pings, pong checks
    /// and the rate limit go on).
    pub fn set_unresponsive(&self, on: bool) {
        self.shared.unresponsive.store(on, Ordering::SeqCst)
    }

    /// Stream data messages pushed so far.
    pub fn notifications_sent(&self) -> u64 {
        self.shared.notifications_sent.load(Ordering::SeqCst)
    }

    /// Wait up to `timeout` until at least `n` data messages were pushed.
    pub fn wait_for_notifications(&self, n: u64, timeout: Duration) -> bool {
        wait_until(timeout, || self.notifications_sent() >= n)
    }

    /// Ping frames sent so far (all connections).
    pub fn pings_sent(&self) -> u64 {
        self.shared.pings_sent.load(Ordering::SeqCst)
    }

    /// Pongs received that answered an outstanding ping (all connections).
    pub fn pongs_received(&self) -> u64 {
        self.shared.pongs_received.load(Ordering::SeqCst)
    }

    /// Connections closed because a ping went unanswered.
    pub fn pong_timeout_closes(&self) -> usize {
        self.shared.pong_timeout_closes.load(Ordering::SeqCst)
    }

    /// Connections closed for exceeding the incoming message rate.
    pub fn rate_limit_closes(&self) -> usize {
        self.shared.rate_limit_closes.load(Ordering::SeqCst)
    }
}

/// Whether `stream` is `<lowercase alphanumeric symbol>@<known type>`.
pub fn valid_stream_name(stream: &str) -> bool {
    let Some((symbol, kind)) = stream.split_once('@') else {
        return false;
    };
    !symbol.is_empty()
        && symbol
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && STREAM_TYPES.contains(&kind)
}

fn bad_request(msg: String) -> (i64, String) {
    (2, format!("Invalid request: {msg}"))
}

struct Session<'a> {
    sh: &'a Shared,
    conn: usize,
    subs: Vec<String>,
}

impl Session<'_> {
    fn publish_subs(&self) {
        lock(&self.sh.subs).insert(self.conn, self.subs.clone());
    }

    /// The stream names in `params`, every one valid and not refused.
    fn streams(&self, params: &Value) -> Result<Vec<String>, (i64, String)> {
        let list = params
            .as_array()
            .ok_or_else(|| bad_request("params must be a list of stream names".into()))?;
        let rejected = lock(&self.sh.rejected);
        let mut out = Vec::with_capacity(list.len());
        for item in list {
            let s = item
                .as_str()
                .ok_or_else(|| bad_request("params must be a list of stream names".into()))?;
            if !valid_stream_name(s) || rejected.contains(s) {
                return Err(bad_request(format!("invalid stream name '{s}'")));
            }
            out.push(s.to_string());
        }
        Ok(out)
    }

    fn dispatch(&mut self, method: &str, params: &Value) -> Result<Value, (i64, String)> {
        match method {
            "SUBSCRIBE" => {
                let streams = self.streams(params)?;
                let new: HashSet<&String> =
                    streams.iter().filter(|s| !self.subs.contains(s)).collect();
                if self.subs.len() + new.len() > self.sh.opts.max_streams {
                    return Err(bad_request(format!(
                        "too many streams (max {})",
                        self.sh.opts.max_streams
                    )));
                }
                for s in streams {
                    if !self.subs.contains(&s) {
                        self.subs.push(s);
                    }
                }
                self.publish_subs();
                Ok(Value::Null)
            }
            "UNSUBSCRIBE" => {
                let streams = self.streams(params)?;
                self.subs.retain(|s| !streams.contains(s));
                self.publish_subs();
                Ok(Value::Null)
            }
            "LIST_SUBSCRIPTIONS" => Ok(json!(self.subs)),
            "" => Err(bad_request("missing method".into())),
            m => Err(bad_request(format!("unknown method '{m}'"))),
        }
    }

    /// Handle one text message; the answer to send, if any.
    fn handle(&mut self, text: &str) -> Option<String> {
        let v: Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(e) => {
                self.sh.malformed.fetch_add(1, Ordering::SeqCst);
                let error = json!({"code": 3, "msg": format!("Invalid JSON: {e}")});
                return Some(json!({"error": error, "id": null}).to_string());
            }
        };
        let id = v.get("id").cloned().unwrap_or(Value::Null);
        let method = v.get("method").and_then(Value::as_str).unwrap_or("");
        let params = v.get("params").cloned().unwrap_or(Value::Null);
        lock(&self.sh.log).push(BinanceRequest {
            conn: self.conn,
            id: id.clone(),
            method: method.to_string(),
            params: params.clone(),
        });
        if self.sh.unresponsive.load(Ordering::SeqCst) {
            return None;
        }
        let outcome = if !v.is_object() {
            Err(bad_request("not a JSON object".into()))
        } else if !id.is_u64() {
            Err(bad_request("request ID must be an unsigned integer".into()))
        } else {
            self.dispatch(method, &params)
        };
        let out = match outcome {
            Ok(result) => json!({"result": result, "id": id}),
            Err((code, msg)) => json!({"error": {"code": code, "msg": msg}, "id": id}),
        };
        Some(out.to_string())
    }
}

/// Binance-shaped data for `stream` with sequence number `seq`.
fn stream_data(stream: &str, seq: u64) -> Value {
    let ms = now_us() / 1000;
    let (symbol, kind) = stream.split_once('@').unwrap_or((stream, ""));
    let symbol = symbol.to_ascii_uppercase();
    let wobble = (seq % 10) as f64 * 0.5;
    let price = format!("{:.2}", 50_000.0 + wobble);
    match kind {
        "trade" => json!({
            "e": "trade", "E": ms, "s": symbol, "t": seq,
            "p": price, "q": "0.010", "T": ms, "m": seq & 1 == 0, "M": true,
        }),
        "aggTrade" => json!({
            "e": "aggTrade", "E": ms, "s": symbol, "a": seq,
            "p": price, "q": "0.010", "f": seq, "l": seq, "T": ms, "m": seq & 1 == 0, "M": true,
        }),
        "depth" => json!({
            "e": "depthUpdate", "E": ms, "s": symbol, "U": seq, "u": seq,
            "b": [[format!("{:.2}", 50_000.0 - wobble), "1.000"]],
            "a": [[format!("{:.2}", 50_000.5 + wobble), "0.500"]],
        }),
        "bookTicker" => json!({
            "u": seq, "s": symbol,
            "b": format!("{:.2}", 50_000.0 - wobble), "B": "1.000",
            "a": format!("{:.2}", 50_000.5 + wobble), "A": "0.500",
        }),
        _ => json!({
            "e": "kline", "E": ms, "s": symbol,
            "k": {
                "t": seq * 60_000, "T": seq * 60_000 + 59_999, "s": symbol, "i": "1m",
                "o": price, "c": price, "h": price, "l": price, "v": "1.000",
                "n": 1, "x": false,
            },
        }),
    }
}

struct ConnGuard<'a> {
    sh: &'a Shared,
    conn: usize,
}

impl Drop for ConnGuard<'_> {
    fn drop(&mut self) {
        lock(&self.sh.mailboxes).remove(&self.conn);
        lock(&self.sh.subs).remove(&self.conn);
    }
}

/// Pings sent and not yet answered, oldest first.
struct Keepalive {
    next_ping: Instant,
    counter: u64,
    outstanding: VecDeque<(Vec<u8>, Instant)>,
}

impl Keepalive {
    /// A pong arrived: true if it answered an outstanding ping.
    fn pong(&mut self, payload: &[u8]) -> bool {
        match self.outstanding.iter().position(|(p, _)| p == payload) {
            Some(i) => {
                self.outstanding.drain(..=i);
                true
            }
            None => false,
        }
    }
}

fn serve(tcp: TcpStream, conn: Conn, sh: &Arc<Shared>) {
    let opts = &sh.opts;
    let Ok(stream) = server_stream(tcp, opts.tls.as_ref()) else {
        return;
    };
    let Some(mut ws) = accept_ws(stream, NoCallback, ws_config(1 << 20), &conn) else {
        return;
    };
    let index = conn.index();
    let mailbox: Mailbox = Arc::default();
    lock(&sh.mailboxes).insert(index, mailbox.clone());
    let _guard = ConnGuard { sh, conn: index };
    let mut s = Session {
        sh,
        conn: index,
        subs: Vec::new(),
    };
    let start = Instant::now();
    let mut next_notify = start + opts.notification_interval;
    let mut ka = Keepalive {
        next_ping: start + opts.ping_interval,
        counter: 0,
        outstanding: VecDeque::new(),
    };
    let mut arrivals: VecDeque<Instant> = VecDeque::new();

    while !conn.is_killed() {
        let commands: Vec<Command> = std::mem::take(&mut *lock(&mailbox));
        for c in commands {
            match c {
                Command::Text(t) => {
                    if ws.send(Message::text(t)).is_err() {
                        return;
                    }
                }
                Command::Close(code, reason) => {
                    close_gracefully(&mut ws, code, &reason);
                    return;
                }
            }
        }
        let now = Instant::now();
        let pinging = sh.send_pings.load(Ordering::SeqCst);
        if !pinging {
            ka.outstanding.clear();
        }
        if let Some((_, sent)) = ka.outstanding.front() {
            if now.duration_since(*sent) >= opts.pong_timeout {
                log::debug!("binance conn {index}: pong timeout, closing");
                sh.pong_timeout_closes.fetch_add(1, Ordering::SeqCst);
                close_gracefully(&mut ws, opts.pong_timeout_close_code, PONG_TIMEOUT_REASON);
                return;
            }
        }
        if now >= ka.next_ping {
            ka.next_ping = now + opts.ping_interval;
            if pinging {
                ka.counter += 1;
                let payload = ka.counter.to_string().into_bytes();
                if ws.send(Message::Ping(payload.clone().into())).is_err() {
                    return;
                }
                ka.outstanding.push_back((payload, now));
                sh.pings_sent.fetch_add(1, Ordering::SeqCst);
            }
        }
        if now >= next_notify {
            next_notify = now + opts.notification_interval;
            let quiet = sh.unresponsive.load(Ordering::SeqCst)
                || sh.pause_notifications.load(Ordering::SeqCst);
            if !quiet {
                for stream in &s.subs {
                    let msg =
                        json!({"stream": stream, "data": stream_data(stream, sh.next_seq(stream))});
                    if ws.send(Message::text(msg.to_string())).is_err() {
                        return;
                    }
                    sh.notifications_sent.fetch_add(1, Ordering::SeqCst);
                }
            }
        }
        let msg = match poll_read(&mut ws) {
            Ok(None) => continue,
            Ok(Some(m)) => m,
            Err(e) => {
                log::debug!("binance conn {index}: {e}");
                return;
            }
        };
        if matches!(msg, Message::Close(_) | Message::Frame(_)) {
            continue;
        }
        let now = Instant::now();
        arrivals.push_back(now);
        while arrivals
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(1))
        {
            arrivals.pop_front();
        }
        if arrivals.len() > opts.max_messages_per_sec {
            log::debug!("binance conn {index}: too many messages, closing");
            sh.rate_limit_closes.fetch_add(1, Ordering::SeqCst);
            close_gracefully(&mut ws, opts.rate_limit_close_code, RATE_LIMIT_REASON);
            return;
        }
        match msg {
            Message::Text(t) => {
                if let Some(out) = s.handle(t.as_str()) {
                    if ws.send(Message::text(out)).is_err() {
                        return;
                    }
                }
            }
            Message::Pong(p) if ka.pong(&p) => {
                sh.pongs_received.fetch_add(1, Ordering::SeqCst);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blocking_client::{connect, is_timeout, read_text, BlockingWs};

    const T: Duration = Duration::from_secs(2);

    /// Options for fast tests: pings every 50 ms, a generous message rate
    /// (pongs count), a 300 ms pong timeout.
    fn fast() -> BinanceOptions {
        BinanceOptions {
            ping_interval: Duration::from_millis(50),
            pong_timeout: Duration::from_millis(300),
            max_messages_per_sec: 1000,
            ..BinanceOptions::default()
        }
    }

    fn send(ws: &mut BlockingWs, v: Value) {
        ws.send(Message::text(v.to_string())).unwrap();
    }

    /// Send a request and read until its answer (skipping stream data).
    fn request(ws: &mut BlockingWs, id: u64, method: &str, params: Value) -> Value {
        send(ws, json!({"method": method, "params": params, "id": id}));
        read_answer(ws)
    }

    fn read_answer(ws: &mut BlockingWs) -> Value {
        loop {
            let v: Value = serde_json::from_str(&read_text(ws).unwrap()).unwrap();
            if v.get("stream").is_none() {
                return v;
            }
        }
    }

    /// Read until a close frame; its code and reason.
    fn read_close(ws: &mut BlockingWs) -> (u16, String) {
        loop {
            match ws.read() {
                Ok(Message::Close(Some(f))) => return (f.code.into(), f.reason.to_string()),
                Ok(Message::Close(None)) => panic!("close without a frame"),
                Ok(_) => continue,
                Err(e) => panic!("{e}"),
            }
        }
    }

    #[test]
    fn subscribe_list_data_and_unsubscribe() {
        let srv = BinanceServer::start(fast()).unwrap();
        let mut ws = connect(&srv.url(), None).unwrap();
        let streams = ["btcusdt@trade", "ethusdt@depth"];
        let r = request(&mut ws, 1, "SUBSCRIBE", json!(streams));
        assert_eq!(r, json!({"result": null, "id": 1}));
        let r = request(&mut ws, 2, "LIST_SUBSCRIPTIONS", Value::Null);
        assert_eq!(r, json!({"result": streams, "id": 2}));
        assert_eq!(srv.subscriptions(0), streams);

        let (mut last_t, mut last_u) = (0, 0);
        let mut got = 0;
        while got < 6 {
            let v: Value = serde_json::from_str(&read_text(&mut ws).unwrap()).unwrap();
            let data = &v["data"];
            match v["stream"].as_str().unwrap() {
                "btcusdt@trade" => {
                    assert_eq!(data["e"], "trade");
                    assert_eq!(data["s"], "BTCUSDT");
                    assert!(data["E"].is_u64());
                    let t = data["t"].as_u64().unwrap();
                    assert_eq!(t, last_t + 1);
                    last_t = t;
                }
                "ethusdt@depth" => {
                    assert_eq!(data["e"], "depthUpdate");
                    let u = data["U"].as_u64().unwrap();
                    assert_eq!(u, last_u + 1);
                    last_u = data["u"].as_u64().unwrap();
                }
                other => panic!("{other}"),
            }
            got += 1;
        }
        let r = request(&mut ws, 3, "UNSUBSCRIBE", json!(["btcusdt@trade"]));
        assert_eq!(r["result"], Value::Null);
        assert_eq!(srv.subscriptions(0), vec!["ethusdt@depth"]);
        let r = request(&mut ws, 4, "LIST_SUBSCRIPTIONS", Value::Null);
        assert_eq!(r["result"], json!(["ethusdt@depth"]));

        // Sequences are global per stream: a second connection continues.
        let mut other = connect(&srv.url(), None).unwrap();
        request(&mut other, 1, "SUBSCRIBE", json!(["btcusdt@trade"]));
        let v = read_answer_stream(&mut other, "btcusdt@trade");
        assert!(v["data"]["t"].as_u64().unwrap() > last_t);
        assert_eq!(
            srv.methods_on(0),
            vec![
                "SUBSCRIBE",
                "LIST_SUBSCRIPTIONS",
                "UNSUBSCRIBE",
                "LIST_SUBSCRIPTIONS"
            ]
        );
    }

    fn read_answer_stream(ws: &mut BlockingWs, stream: &str) -> Value {
        loop {
            let v: Value = serde_json::from_str(&read_text(ws).unwrap()).unwrap();
            if v["stream"] == stream {
                return v;
            }
        }
    }

    #[test]
    fn invalid_refused_and_malformed_requests() {
        let srv = BinanceServer::start(BinanceOptions {
            max_streams: 2,
            ..fast()
        })
        .unwrap();
        srv.reject_streams(&["xrpusdt@trade"]);
        let mut ws = connect(&srv.url(), None).unwrap();
        for (i, bad) in [
            "BTCUSDT@trade",
            "btcusdt@nope",
            "btcusdt",
            "@trade",
            "xrpusdt@trade",
        ]
        .iter()
        .enumerate()
        {
            let id = i as u64 + 1;
            let r = request(&mut ws, id, "SUBSCRIBE", json!(["btcusdt@trade", bad]));
            assert_eq!(r["error"]["code"], 2, "{bad}: {r}");
            assert!(r["error"]["msg"]
                .as_str()
                .unwrap()
                .starts_with("Invalid request: "));
            assert_eq!(r["id"], id);
        }
        // Nothing of a refused request was applied.
        assert!(srv.subscriptions(0).is_empty());
        let r = request(
            &mut ws,
            10,
            "SUBSCRIBE",
            json!(["a@trade", "b@trade", "c@trade"]),
        );
        assert_eq!(
            r["error"]["msg"],
            "Invalid request: too many streams (max 2)"
        );
        let r = request(&mut ws, 11, "SUBSCRIBE", json!(["a@trade", "b@aggTrade"]));
        assert_eq!(r["result"], Value::Null);
        let r = request(&mut ws, 12, "SUBSCRIBE", json!(["a@trade"]));
        assert_eq!(
            r["result"],
            Value::Null,
            "already subscribed: no new stream"
        );
        let r = request(&mut ws, 13, "SUBSCRIBE", json!("a@trade"));
        assert_eq!(r["error"]["code"], 2);
        let r = request(&mut ws, 14, "FROBNICATE", json!([]));
        assert_eq!(r["error"]["code"], 2);
        send(&mut ws, json!({"method": "LIST_SUBSCRIPTIONS", "id": "x"}));
        assert_eq!(read_answer(&mut ws)["error"]["code"], 2);

        ws.send(Message::text("{not json")).unwrap();
        let r = read_answer(&mut ws);
        assert_eq!(r["error"]["code"], 3);
        assert!(r["error"]["msg"]
            .as_str()
            .unwrap()
            .starts_with("Invalid JSON"));
        assert_eq!(r["id"], Value::Null);
        assert_eq!(srv.malformed(), 1);
        ws.send(Message::text("[1,2]")).unwrap();
        assert_eq!(read_answer(&mut ws)["error"]["code"], 2);
        // Still alive and subscribed.
        let r = request(&mut ws, 20, "LIST_SUBSCRIPTIONS", Value::Null);
        assert_eq!(r["result"], json!(["a@trade", "b@aggTrade"]));
    }

    #[test]
    fn a_client_that_pongs_stays() {
        let srv = BinanceServer::start(fast()).unwrap();
        let mut ws = connect(&srv.url(), None).unwrap();
        // Reading makes tungstenite answer every ping with a matching pong.
        let mut pings = 0;
        while srv.pongs_received() < 10 {
            match ws.read() {
                Ok(Message::Ping(p)) => {
                    pings += 1;
                    assert_eq!(p.as_ref(), pings.to_string().as_bytes());
                }
                Ok(Message::Close(f)) => panic!("closed: {f:?}"),
                Ok(_) => {}
                Err(e) => panic!("{e}"),
            }
        }
        // Ten pings of 50 ms outlived several 300 ms timeouts' worth of time.
        assert!(srv.pings_sent() >= 10);
        assert_eq!(srv.pong_timeout_closes(), 0);
        assert_eq!(srv.live_connections(), 1);
    }

    #[test]
    fn a_client_that_never_pongs_is_closed() {
        let srv = BinanceServer::start(fast()).unwrap();
        let mut ws = connect(&srv.url(), None).unwrap();
        // Not reading means no automatic pongs; wrong ones answer nothing.
        assert!(wait_until(T, || srv.pings_sent() >= 1));
        ws.send(Message::Pong(b"nope".to_vec().into())).unwrap();
        assert!(wait_until(T, || srv.pong_timeout_closes() == 1));
        assert_eq!(srv.pongs_received(), 0);
        assert_eq!(read_close(&mut ws), (1008, PONG_TIMEOUT_REASON.to_string()));
        assert!(srv.wait_live_connections(0, T));
    }

    #[test]
    fn too_many_messages_close_the_connection() {
        let srv = BinanceServer::start(BinanceOptions {
            max_messages_per_sec: 5,
            ..BinanceOptions::default()
        })
        .unwrap();
        let mut ws = connect(&srv.url(), None).unwrap();
        // Within the limit, spread out: fine.
        assert_eq!(
            request(&mut ws, 1, "LIST_SUBSCRIPTIONS", Value::Null)["id"],
            1
        );
        // Ten at once: the sixth within one second closes the connection.
        for id in 2..12 {
            send(&mut ws, json!({"method": "LIST_SUBSCRIPTIONS", "id": id}));
        }
        assert_eq!(read_close(&mut ws), (1008, RATE_LIMIT_REASON.to_string()));
        assert!(wait_until(T, || srv.rate_limit_closes() == 1));
        assert!(srv.count_method("LIST_SUBSCRIPTIONS") <= 5);
    }

    #[test]
    fn kill_restart_pause_and_tls() {
        let pki = crate::TestPki::generate();
        let srv = BinanceServer::start(BinanceOptions {
            tls: Some(pki.server_config()),
            ..fast()
        })
        .unwrap();
        assert!(srv.url().starts_with("wss://localhost:"));
        let mut ws = connect(&srv.url(), Some(pki.client_config())).unwrap();
        request(
            &mut ws,
            1,
            "SUBSCRIBE",
            json!(["btcusdt@bookTicker", "btcusdt@kline_1m", "btcusdt@aggTrade"]),
        );
        let v = read_answer_stream(&mut ws, "btcusdt@kline_1m");
        assert_eq!(v["data"]["k"]["i"], "1m");
        srv.set_pause_notifications(true);
        srv.kill_connections();
        assert!(srv.wait_live_connections(0, T));
        assert!(srv.subscriptions(0).is_empty());
        srv.stop();
        srv.restart().unwrap();
        let mut ws = connect(&srv.url(), Some(pki.client_config())).unwrap();
        request(&mut ws, 1, "SUBSCRIBE", json!(["btcusdt@bookTicker"]));
        assert_eq!(srv.subscriptions(1), vec!["btcusdt@bookTicker"]);
        let sent = srv.notifications_sent();
        srv.set_pause_notifications(false);
        assert!(srv.wait_for_notifications(sent + 1, T));
        assert_eq!(srv.connections_accepted(), 2);
        assert_eq!(srv.push_to_all(r#"{"hello":1}"#), 1);
        let pushed = loop {
            match read_text(&mut ws) {
                Ok(t) if t.contains("hello") => break t,
                Ok(_) => {}
                Err(e) if is_timeout(&e) => panic!("no push"),
                Err(e) => panic!("{e}"),
            }
        };
        assert_eq!(pushed, r#"{"hello":1}"#);
        assert_eq!(srv.close_all(1001, "bye"), 1);
        assert_eq!(read_close(&mut ws), (1001, "bye".to_string()));
    }
}
