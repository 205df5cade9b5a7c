//! A Deribit-compatible JSON-RPC 2.0 WebSocket server (a subset), for
//! testing authenticated sessions, subscriptions, application heartbeats
//! and rate limits against something that behaves like the real API.
//!
//! Supported methods:
//!
//! | method | behaviour |
//! |---|---|
//! | `public/auth` | `grant_type` `client_credentials` (`client_id`, `client_secret` checked) or `refresh_token`; wrong → error 13004 `invalid_credentials` |
//! | `public/subscribe`, `private/subscribe` | `params.channels`; `private/*` and any `user.*` channel need auth on this connection (or `params.access_token`), else 13009 `unauthorized`; result: the channels |
//! | `public/unsubscribe`, `private/unsubscribe` | result: the channels removed |
//! | `public/unsubscribe_all`, `private/unsubscribe_all` | result `"ok"` |
//! | `public/set_heartbeat` | `params.interval` seconds, at least [`DeribitOptions::min_heartbeat_interval`] (else 11050 `bad_request`) |
//! | `public/disable_heartbeat` | result `"ok"` |
//! | `public/test` | result `{"version":"1.2.26"}`; answers a pending `test_request` |
//! | `public/get_time`, `public/hello` | server time in ms / version |
//! | anything else | -32601 `Method not found` (13009 first for unauthenticated `private/*`) |
//!
//! Every request costs credits ([`RateLimit`]); without enough, the answer is
//! error 10028 `too_many_requests`. Responses carry `jsonrpc`, the request
//! `id`, `usIn`, `usOut`, `usDiff` and `testnet: true`.
//!
//! After a subscribe, the server pushes `{"jsonrpc":"2.0","method":"subscription","params":{"channel":C,"data":...}}`
//! for every subscribed channel every [`DeribitOptions::notification_interval`].
//! Data looks like Deribit's for `book.*` (with `change_id`/`prev_change_id`),
//! `trades.*` (a list with `trade_seq`), `user.orders.*` (a list of orders)
//! and `ticker.*`; sequence numbers count per channel across the whole
//! server, so a reconnecting client sees a jump, not a restart at 1.
//! `user.orders.*` and `ticker.*` data carry `change_id` too (not a real
//! Deribit field there; handy for gap checks).
//!
//! After `public/set_heartbeat`, every `interval × heartbeat_unit` the server
//! sends `{"jsonrpc":"2.0","method":"heartbeat","params":{"type":"heartbeat"}}`
//! and then `{"jsonrpc":"2.0","method":"heartbeat","params":{"type":"test_request"}}`.
//! If a `test_request` has not been answered with `public/test` by the next
//! tick, the server closes the connection (close frame 1000,
//! `test_request not answered`).

use std::collections::{HashMap, HashSet};
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

/// The version string `public/test` and `public/hello` report.
pub const API_VERSION: &str = "1.2.26";

/// Credit-based rate limiter settings (per connection).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Credits each request costs (default 500).
    pub cost: u64,
    /// Bucket size, and the starting balance (default 50,000).
    pub max_credits: u64,
    /// Credits refilled per second (default 10,000).
    pub refill_per_sec: u64,
}

impl Default for RateLimit {
    fn default() -> Self {
        RateLimit {
            cost: 500,
            max_credits: 50_000,
            refill_per_sec: 10_000,
        }
    }
}

/// How a [`DeribitServer`] is set up.
#[derive(Clone)]
pub struct DeribitOptions {
    /// Accepted `client_id` (default `test-client`).
    pub client_id: String,
    /// Accepted `client_secret` (default `test-secret`).
    pub client_secret: String,
    /// Serve TLS with this config; `None` = plain.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Period of subscription notifications (default 20 ms).
    pub notification_interval: Duration,
    /// Real length of one second of `set_heartbeat`'s `interval` (default
    /// 1 s; e.g. 10 ms makes `interval: 10` tick every 100 ms).
    pub heartbeat_unit: Duration,
    /// Smallest `interval` accepted by `public/set_heartbeat` (default 10).
    pub min_heartbeat_interval: u64,
    /// Rate limiter settings.
    pub rate_limit: RateLimit,
    /// `expires_in` reported by `public/auth`, seconds (default 900).
    pub token_expires_in: u64,
}

impl Default for DeribitOptions {
    fn default() -> Self {
        DeribitOptions {
            client_id: "test-client".into(),
            client_secret: "test-secret".into(),
            tls: None,
            notification_interval: Duration::from_millis(20),
            heartbeat_unit: Duration::from_secs(1),
            min_heartbeat_interval: 10,
            rate_limit: RateLimit::default(),
            token_expires_in: 900,
        }
    }
}

impl std::fmt::Debug for DeribitOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeribitOptions")
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("tls", &self.tls.is_some())
            .field("notification_interval", &self.notification_interval)
            .field("heartbeat_unit", &self.heartbeat_unit)
            .field("min_heartbeat_interval", &self.min_heartbeat_interval)
            .field("rate_limit", &self.rate_limit)
            .field("token_expires_in", &self.token_expires_in)
            .finish()
    }
}

/// One request as received (parsed), in arrival order.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedRequest {
    /// Connection index (0-based accept order, across restarts).
    pub conn: usize,
    /// The request `id` (`null` if absent).
    pub id: Value,
    /// The method.
    pub method: String,
    /// The params (`{}` if absent).
    pub params: Value,
}

enum Command {
    Text(String),
    Close(u16, String),
}

type Mailbox = Arc<Mutex<Vec<Command>>>;

struct Shared {
    opts: DeribitOptions,
    log: Mutex<Vec<ReceivedRequest>>,
    access_tokens: Mutex<HashSet<String>>,
    refresh_tokens: Mutex<HashSet<String>>,
    token_counter: AtomicU64,
    seq: Mutex<HashMap<String, u64>>,
    subs: Mutex<HashMap<usize, Vec<String>>>,
    mailboxes: Mutex<HashMap<usize, Mailbox>>,
    ignore_subscriptions: AtomicBool,
    pause_notifications: AtomicBool,
    send_heartbeats: AtomicBool,
    enforce_test_requests: AtomicBool,
    unresponsive: AtomicBool,
    notifications_sent: AtomicU64,
    test_requests_sent: AtomicU64,
    heartbeat_closes: AtomicUsize,
}

impl Shared {
    fn next_seq(&self, channel: &str) -> u64 {
        let mut seq = lock(&self.seq);
        let n = seq.entry(channel.to_string()).or_insert(0);
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

/// The Deribit-compatible server (see the module docs). Stops when dropped.
pub struct DeribitServer {
    acceptor: Acceptor,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for DeribitServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeribitServer")
            .field("url", &self.url())
            .field("acceptor", &self.acceptor)
            .finish()
    }
}

impl DeribitServer {
    /// Bind `127.0.0.1:0` and start serving.
    pub fn start(opts: DeribitOptions) -> io::Result<DeribitServer> {
        let shared = Arc::new(Shared {
            opts,
            log: Mutex::new(Vec::new()),
            access_tokens: Mutex::new(HashSet::new()),
            refresh_tokens: Mutex::new(HashSet::new()),
            token_counter: AtomicU64::new(0),
            seq: Mutex::new(HashMap::new()),
            subs: Mutex::new(HashMap::new()),
            mailboxes: Mutex::new(HashMap::new()),
            ignore_subscriptions: AtomicBool::new(false),
            pause_notifications: AtomicBool::new(false),
            send_heartbeats: AtomicBool::new(true),
            enforce_test_requests: AtomicBool::new(true),
            unresponsive: AtomicBool::new(false),
            notifications_sent: AtomicU64::new(0),
            test_requests_sent: AtomicU64::new(0),
            heartbeat_closes: AtomicUsize::new(0),
        });
        let sh = shared.clone();
        let acceptor = Acceptor::start("deribit", move |tcp, conn| serve(tcp, conn, &sh))?;
        Ok(DeribitServer { acceptor, shared })
    }

    /// A plain server with default options.
    pub fn plain() -> io::Result<DeribitServer> {
        DeribitServer::start(DeribitOptions::default())
    }

    /// The options it runs with.
    pub fn options(&self) -> &DeribitOptions {
        &self.shared.opts
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> SocketAddr {
        self.acceptor.addr()
    }

    /// `ws://127.0.0.1:PORT/ws/api/v2`, or `wss://localhost:PORT/ws/api/v2`
    /// with TLS. (Any path is accepted.)
    pub fn url(&self) -> String {
        if self.shared.opts.tls.is_some() {
            format!("wss://localhost:{}/ws/api/v2", self.addr().port())
        } else {
            format!("ws://{}/ws/api/v2", self.addr())
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

    /// Every request received so far (all connections, arrival order).
    pub fn received(&self) -> Vec<ReceivedRequest> {
        lock(&self.shared.log).clone()
    }

    /// `(connection index, method)` of every request received so far.
    pub fn received_methods(&self) -> Vec<(usize, String)> {
        lock(&self.shared.log)
            .iter()
            .map(|r| (r.conn, r.method.clone()))
            .collect()
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

    /// Channels connection `conn` is subscribed to now (empty once closed).
    pub fn subscriptions(&self, conn: usize) -> Vec<String> {
        lock(&self.shared.subs)
            .get(&conn)
            .cloned()
            .unwrap_or_default()
    }

    /// Subscribe requests are logged but neither answered nor acted on.
    pub fn set_ignore_subscriptions(&self, on: bool) {
        self.shared.ignore_subscriptions.store(on, Ordering::SeqCst)
    }

    /// Stop (or resume) pushing subscription notifications.
    pub fn set_pause_notifications(&self, on: bool) {
        self.shared.pause_notifications.store(on, Ordering::SeqCst)
    }

    /// Whether heartbeat and test_request messages are sent (default true);
    /// off simulates a server whose heartbeats stop arriving.
    pub fn set_send_heartbeats(&self, on: bool) {
        self.shared.send_heartbeats.store(on, Ordering::SeqCst)
    }

    /// Whether an unanswered test_request closes the connection (default true).
    pub fn set_enforce_test_requests(&self, on: bool) {
        self.shared
            .enforce_test_requests
            .store(on, Ordering::SeqCst)
    }

    /// Log requests but answer nothing and push nothing (an application-level
    /// blackhole; WebSocket pings are still answered).
    pub fn set_unresponsive(&self, on: bool) {
        self.shared.unresponsive.store(on, Ordering::SeqCst)
    }

    /// Subscription notifications pushed so far.
    pub fn notifications_sent(&self) -> u64 {
        self.shared.notifications_sent.load(Ordering::SeqCst)
    }

    /// `test_request` heartbeats sent so far.
    pub fn test_requests_sent(&self) -> u64 {
        self.shared.test_requests_sent.load(Ordering::SeqCst)
    }

    /// Connections closed because a test_request went unanswered.
    pub fn heartbeat_closes(&self) -> usize {
        self.shared.heartbeat_closes.load(Ordering::SeqCst)
    }
}

struct Heartbeat {
    interval: Duration,
    next: Instant,
    awaiting: bool,
}

struct Session<'a> {
    sh: &'a Shared,
    conn: usize,
    authed: bool,
    subs: Vec<String>,
    hb: Option<Heartbeat>,
    credits: f64,
    refilled_at: Instant,
}

enum Reply {
    Result(Value),
    Error(i64, &'static str, Option<Value>),
    None,
}

impl Session<'_> {
    fn authorized(&self, params: &Value) -> bool {
        self.authed
            || params
                .get("access_token")
                .and_then(Value::as_str)
                .is_some_and(|t| lock(&self.sh.access_tokens).contains(t))
    }

    fn take_credit(&mut self) -> bool {
        let rl = self.sh.opts.rate_limit;
        let now = Instant::now();
        let dt = now.duration_since(self.refilled_at).as_secs_f64();
        self.refilled_at = now;
        self.credits = (self.credits + dt * rl.refill_per_sec as f64).min(rl.max_credits as f64);
        if self.credits >= rl.cost as f64 {
            self.credits -= rl.cost as f64;
            true
        } else {
            false
        }
    }

    fn publish_subs(&self) {
        lock(&self.sh.subs).insert(self.conn, self.subs.clone());
    }

    fn issue_tokens(&mut self) -> Value {
        let n = self.sh.token_counter.fetch_add(1, Ordering::SeqCst);
        let access = format!("dbt-access-{n}");
        let refresh = format!("dbt-refresh-{n}");
        lock(&self.sh.access_tokens).insert(access.clone());
        lock(&self.sh.refresh_tokens).insert(refresh.clone());
        self.authed = true;
        json!({
            "access_token": access,
            "refresh_token": refresh,
            "expires_in": self.sh.opts.token_expires_in,
            "scope": "connection mainaccount",
            "token_type": "bearer",
        })
    }

    fn dispatch(&mut self, method: &str, params: &Value) -> Reply {
        let opts = &self.sh.opts;
        let str_param = |k: &str| params.get(k).and_then(Value::as_str).unwrap_or("");
        match method {
            "public/auth" => match str_param("grant_type") {
                "client_credentials" => {
                    if str_param("client_id") == opts.client_id
                        && str_param("client_secret") == opts.client_secret
                    {
                        Reply::Result(self.issue_tokens())
                    } else {
                        Reply::Error(13004, "invalid_credentials", None)
                    }
                }
                "refresh_token" => {
                    if lock(&self.sh.refresh_tokens).contains(str_param("refresh_token")) {
                        Reply::Result(self.issue_tokens())
                    } else {
                        Reply::Error(13004, "invalid_credentials", None)
                    }
                }
                _ => Reply::Error(
                    -32602,
                    "Invalid params",
                    Some(json!({"reason": "unsupported grant_type", "param": "grant_type"})),
                ),
            },
            "public/subscribe" | "private/subscribe" => {
                let Some(channels) = channel_list(params) else {
                    return Reply::Error(
                        -32602,
                        "Invalid params",
                        Some(json!({"reason": "must be a list of strings", "param": "channels"})),
                    );
                };
                let needs_auth = method.starts_with("private/")
                    || channels.iter().any(|c| c.starts_with("user."));
                if needs_auth && !self.authorized(params) {
                    return Reply::Error(13009, "unauthorized", None);
                }
                if self.sh.ignore_subscriptions.load(Ordering::SeqCst) {
                    return Reply::None;
                }
                for c in &channels {
                    if !self.subs.contains(c) {
                        self.subs.push(c.clone());
                    }
                }
                self.publish_subs();
                Reply::Result(json!(channels))
            }
            "public/unsubscribe" | "private/unsubscribe" => {
                let Some(channels) = channel_list(params) else {
                    return Reply::Error(-32602, "Invalid params", None);
                };
                if method.starts_with("private/") && !self.authorized(params) {
                    return Reply::Error(13009, "unauthorized", None);
                }
                let removed: Vec<String> = channels
                    .into_iter()
                    .filter(|c| self.subs.contains(c))
                    .collect();
                self.subs.retain(|c| !removed.contains(c));
                self.publish_subs();
                Reply::Result(json!(removed))
            }
            "public/unsubscribe_all" | "private/unsubscribe_all" => {
                if method.starts_with("private/") && !self.authorized(params) {
                    return Reply::Error(13009, "unauthorized", None);
                }
                self.subs.clear();
                self.publish_subs();
                Reply::Result(json!("ok"))
            }
            "public/set_heartbeat" => {
                let interval = params.get("interval").and_then(Value::as_f64);
                match interval {
                    Some(i) if i >= opts.min_heartbeat_interval as f64 => {
                        let interval = opts.heartbeat_unit.mul_f64(i);
                        self.hb = Some(Heartbeat {
                            interval,
                            next: Instant::now() + interval,
                            awaiting: false,
                        });
                        Reply::Result(json!("ok"))
                    }
                    _ => Reply::Error(
                        11050,
                        "bad_request",
                        Some(json!({
                            "reason": format!("interval must be at least {}", opts.min_heartbeat_interval),
                            "param": "interval",
                        })),
                    ),
                }
            }
            "public/disable_heartbeat" => {
                self.hb = None;
                Reply::Result(json!("ok"))
            }
            "public/test" => {
                if let Some(hb) = self.hb.as_mut() {
                    hb.awaiting = false;
                }
                Reply::Result(json!({"version": API_VERSION}))
            }
            "public/hello" => Reply::Result(json!({"version": API_VERSION})),
            "public/get_time" => Reply::Result(json!(now_us() / 1000)),
            m if m.starts_with("private/") && !self.authorized(params) => {
                Reply::Error(13009, "unauthorized", None)
            }
            _ => Reply::Error(-32601, "Method not found", None),
        }
    }

    /// Handle one incoming text message; returns the response to send, if any.
    fn handle(&mut self, text: &str) -> Option<String> {
        let us_in = now_us();
        let respond = |id: Value, reply: Reply| -> Option<String> {
            let mut out = json!({"jsonrpc": "2.0", "id": id});
            match reply {
                Reply::None => return None,
                Reply::Result(r) => out["result"] = r,
                Reply::Error(code, message, data) => {
                    let mut e = json!({"code": code, "message": message});
                    if let Some(d) = data {
                        e["data"] = d;
                    }
                    out["error"] = e;
                }
            }
            let us_out = now_us();
            out["usIn"] = json!(us_in);
            out["usOut"] = json!(us_out);
            out["usDiff"] = json!(us_out.saturating_sub(us_in));
            out["testnet"] = json!(true);
            Some(out.to_string())
        };
        let v: Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(_) => return respond(Value::Null, Reply::Error(-32700, "Parse error", None)),
        };
        let id = v.get("id").cloned().unwrap_or(Value::Null);
        let Some(method) = v.get("method").and_then(Value::as_str) else {
            return respond(id, Reply::Error(-32600, "Invalid Request", None));
        };
        let params = v.get("params").cloned().unwrap_or_else(|| json!({}));
        lock(&self.sh.log).push(ReceivedRequest {
            conn: self.conn,
            id: id.clone(),
            method: method.to_string(),
            params: params.clone(),
        });
        if self.sh.unresponsive.load(Ordering::SeqCst) {
            return None;
        }
        if !self.take_credit() {
            return respond(id, Reply::Error(10028, "too_many_requests", None));
        }
        let reply = self.dispatch(method, &params);
        respond(id, reply)
    }
}

fn channel_list(params: &Value) -> Option<Vec<String>> {
    params
        .get("channels")?
        .as_array()?
        .iter()
        .map(|c| c.as_str().map(str::to_string))
        .collect()
}

/// Plausible notification data for `channel` with sequence number `seq`.
fn notification_data(channel: &str, seq: u64) -> Value {
    let ts = now_us() / 1000;
    let mut parts = channel.split('.');
    let kind = parts.next().unwrap_or("");
    let second = parts.next().unwrap_or("BTC-PERPETUAL");
    let wobble = (seq % 10) as f64 * 0.5;
    match kind {
        "book" => {
            let mut d = json!({
                "type": if seq == 1 { "snapshot" } else { "change" },
                "timestamp": ts,
                "instrument_name": second,
                "change_id": seq,
                "bids": [["new", 50_000.0 - wobble, 10.0]],
                "asks": [["new", 50_000.5 + wobble, 5.0]],
            });
            if seq > 1 {
                d["prev_change_id"] = json!(seq - 1);
            }
            d
        }
        "trades" => json!([{
            "trade_seq": seq,
            "trade_id": format!("{seq}"),
            "timestamp": ts,
            "tick_direction": (seq % 4),
            "price": 50_000.0 + wobble,
            "mark_price": 50_000.25,
            "index_price": 50_001.0,
            "instrument_name": second,
            "direction": if seq & 1 == 0 { "sell" } else { "buy" },
            "amount": 10.0,
        }]),
        "user" => {
            let instrument = parts.next().unwrap_or("BTC-PERPETUAL");
            json!([{
                "order_id": format!("{instrument}-{seq}"),
                "order_state": "open",
                "order_type": "limit",
                "instrument_name": instrument,
                "direction": "buy",
                "price": 49_000.0 + wobble,
                "amount": 10.0,
                "filled_amount": 0.0,
                "label": "",
                "creation_timestamp": ts,
                "last_update_timestamp": ts,
                "change_id": seq,
            }])
        }
        "ticker" => json!({
            "timestamp": ts,
            "instrument_name": second,
            "best_bid_price": 50_000.0 - wobble,
            "best_ask_price": 50_000.5 + wobble,
            "mark_price": 50_000.25,
            "index_price": 50_001.0,
            "change_id": seq,
        }),
        _ => json!({"timestamp": ts, "change_id": seq}),
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

fn serve(tcp: TcpStream, conn: Conn, sh: &Arc<Shared>) {
    let Ok(stream) = server_stream(tcp, sh.opts.tls.as_ref()) else {
        return;
    };
    let Some(mut ws) = accept_ws(stream, NoCallback, ws_config(16 << 20), &conn) else {
        return;
    };
    let index = conn.index();
    let mailbox: Mailbox = Arc::default();
    lock(&sh.mailboxes).insert(index, mailbox.clone());
    let _guard = ConnGuard { sh, conn: index };
    let mut s = Session {
        sh,
        conn: index,
        authed: false,
        subs: Vec::new(),
        hb: None,
        credits: sh.opts.rate_limit.max_credits as f64,
        refilled_at: Instant::now(),
    };
    let mut next_notify = Instant::now() + sh.opts.notification_interval;

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
        let quiet = sh.unresponsive.load(Ordering::SeqCst);
        if let Some(hb) = s.hb.as_mut() {
            if now >= hb.next {
                hb.next = now + hb.interval;
                if hb.awaiting && sh.enforce_test_requests.load(Ordering::SeqCst) {
                    log::debug!("deribit conn {index}: test_request not answered, closing");
                    sh.heartbeat_closes.fetch_add(1, Ordering::SeqCst);
                    close_gracefully(&mut ws, 1000, "test_request not answered");
                    return;
                }
                if sh.send_heartbeats.load(Ordering::SeqCst) && !quiet {
                    let beat = json!({"jsonrpc": "2.0", "method": "heartbeat", "params": {"type": "heartbeat"}});
                    let test = json!({"jsonrpc": "2.0", "method": "heartbeat", "params": {"type": "test_request"}});
                    if ws.send(Message::text(beat.to_string())).is_err()
                        || ws.send(Message::text(test.to_string())).is_err()
                    {
                        return;
                    }
                    hb.awaiting = true;
                    sh.test_requests_sent.fetch_add(1, Ordering::SeqCst);
                }
            }
        }
        if now >= next_notify {
            next_notify = now + sh.opts.notification_interval;
            if !quiet && !sh.pause_notifications.load(Ordering::SeqCst) {
                for channel in &s.subs {
                    let note = json!({
                        "jsonrpc": "2.0",
                        "method": "subscription",
                        "params": {"channel": channel, "data": notification_data(channel, sh.next_seq(channel))},
                    });
                    if ws.send(Message::text(note.to_string())).is_err() {
                        return;
                    }
                    sh.notifications_sent.fetch_add(1, Ordering::SeqCst);
                }
            }
        }
        match poll_read(&mut ws) {
            Ok(None) => {}
            Ok(Some(Message::Text(t))) => {
                if let Some(out) = s.handle(t.as_str()) {
                    if ws.send(Message::text(out)).is_err() {
                        return;
                    }
                }
            }
            Ok(Some(_)) => {}
            Err(e) => {
                log::debug!("deribit conn {index}: {e}");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blocking_client::{connect, read_text, BlockingWs};

    const T: Duration = Duration::from_secs(2);

    fn send(ws: &mut BlockingWs, id: u64, method: &str, params: Value) {
        let req = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        ws.send(Message::text(req.to_string())).unwrap();
    }

    /// Send a request and read until its response (skipping other messages).
    fn rpc(ws: &mut BlockingWs, id: u64, method: &str, params: Value) -> Value {
        send(ws, id, method, params);
        loop {
            let v: Value = serde_json::from_str(&read_text(ws).unwrap()).unwrap();
            if v.get("id").is_some() {
                assert_eq!(v["id"], json!(id), "unexpected response {v}");
                return v;
            }
        }
    }

    fn auth(ws: &mut BlockingWs, id: u64) -> Value {
        rpc(
            ws,
            id,
            "public/auth",
            json!({"grant_type": "client_credentials", "client_id": "test-client", "client_secret": "test-secret"}),
        )
    }

    #[test]
    fn auth_and_private_subscribe() {
        let srv = DeribitServer::plain().unwrap();
        let mut ws = connect(&srv.url(), None).unwrap();

        let bad = rpc(
            &mut ws,
            1,
            "public/auth",
            json!({"grant_type": "client_credentials", "client_id": "test-client", "client_secret": "nope"}),
        );
        assert_eq!(bad["error"]["code"], 13004);
        assert_eq!(bad["error"]["message"], "invalid_credentials");

        let r = rpc(
            &mut ws,
            2,
            "private/subscribe",
            json!({"channels": ["user.orders.BTC-PERPETUAL.raw"]}),
        );
        assert_eq!(r["error"]["code"], 13009);

        let ok = auth(&mut ws, 3);
        assert_eq!(ok["jsonrpc"], "2.0");
        assert_eq!(ok["testnet"], true);
        assert!(ok["usIn"].as_u64().unwrap() <= ok["usOut"].as_u64().unwrap());
        assert!(ok["usDiff"].is_u64());
        let result = &ok["result"];
        assert!(result["access_token"].is_string() && result["refresh_token"].is_string());
        assert_eq!(result["token_type"], "bearer");
        assert!(result["expires_in"].is_u64());

        let r = rpc(
            &mut ws,
            4,
            "private/subscribe",
            json!({"channels": ["user.orders.BTC-PERPETUAL.raw"]}),
        );
        assert_eq!(r["result"], json!(["user.orders.BTC-PERPETUAL.raw"]));
        let v: Value = serde_json::from_str(&read_text(&mut ws).unwrap()).unwrap();
        assert_eq!(v["method"], "subscription");
        assert_eq!(v["params"]["channel"], "user.orders.BTC-PERPETUAL.raw");
        assert!(v["params"]["data"][0]["order_id"].is_string());

        let refreshed = rpc(
            &mut ws,
            5,
            "public/auth",
            json!({"grant_type": "refresh_token", "refresh_token": result["refresh_token"]}),
        );
        assert!(refreshed["result"]["access_token"].is_string());
        assert_eq!(srv.subscriptions(0), vec!["user.orders.BTC-PERPETUAL.raw"]);
    }

    #[test]
    fn public_subscribe_notifications_and_unsubscribe() {
        let srv = DeribitServer::plain().unwrap();
        let mut ws = connect(&srv.url(), None).unwrap();
        let chans = ["book.BTC-PERPETUAL.100ms", "trades.BTC-PERPETUAL.100ms"];
        let r = rpc(&mut ws, 1, "public/subscribe", json!({"channels": chans}));
        assert_eq!(r["result"], json!(chans));
        let (mut last_change, mut last_trade) = (0, 0);
        let mut got = 0;
        while got < 6 {
            let v: Value = serde_json::from_str(&read_text(&mut ws).unwrap()).unwrap();
            assert_eq!(v["method"], "subscription");
            let data = &v["params"]["data"];
            match v["params"]["channel"].as_str().unwrap() {
                "book.BTC-PERPETUAL.100ms" => {
                    let c = data["change_id"].as_u64().unwrap();
                    assert!(c > last_change);
                    last_change = c;
                }
                "trades.BTC-PERPETUAL.100ms" => {
                    let s = data[0]["trade_seq"].as_u64().unwrap();
                    assert!(s > last_trade);
                    last_trade = s;
                }
                other => panic!("{other}"),
            }
            got += 1;
        }
        let r = rpc(&mut ws, 2, "public/unsubscribe", json!({"channels": chans}));
        assert_eq!(r["result"], json!(chans));
        assert!(srv.subscriptions(0).is_empty());
        let sent = srv.notifications_sent();
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(srv.notifications_sent(), sent);
    }

    #[test]
    fn heartbeat_test_request_flow_and_close() {
        let srv = DeribitServer::start(DeribitOptions {
            heartbeat_unit: Duration::from_millis(8),
            ..DeribitOptions::default()
        })
        .unwrap();
        let mut ws = connect(&srv.url(), None).unwrap();
        let r = rpc(&mut ws, 1, "public/set_heartbeat", json!({"interval": 5}));
        assert_eq!(r["error"]["code"], 11050);
        let r = rpc(&mut ws, 2, "public/set_heartbeat", json!({"interval": 10}));
        assert_eq!(r["result"], "ok");

        // Answer two test_requests; the connection stays up.
        let mut answered = 0;
        let mut saw_heartbeat = false;
        while answered < 2 {
            let v: Value = serde_json::from_str(&read_text(&mut ws).unwrap()).unwrap();
            if v["method"] == "heartbeat" {
                match v["params"]["type"].as_str().unwrap() {
                    "heartbeat" => saw_heartbeat = true,
                    "test_request" => {
                        let r = rpc(&mut ws, 10 + answered, "public/test", json!({}));
                        assert_eq!(r["result"]["version"], API_VERSION);
                        answered += 1;
                    }
                    other => panic!("{other}"),
                }
            }
        }
        assert!(saw_heartbeat);
        // Now ignore them: the server closes.
        let closed = loop {
            match ws.read() {
                Ok(Message::Close(f)) => break f,
                Ok(_) => continue,
                Err(e) => panic!("{e}"),
            }
        };
        assert_eq!(closed.unwrap().reason.as_str(), "test_request not answered");
        assert_eq!(srv.heartbeat_closes(), 1);
    }

    #[test]
    fn rate_limit_unknown_method_and_public_test() {
        let srv = DeribitServer::start(DeribitOptions {
            rate_limit: RateLimit {
                cost: 500,
                max_credits: 1500,
                refill_per_sec: 0,
            },
            ..DeribitOptions::default()
        })
        .unwrap();
        let mut ws = connect(&srv.url(), None).unwrap();
        assert_eq!(
            rpc(&mut ws, 1, "public/test", json!({}))["result"]["version"],
            API_VERSION
        );
        let r = rpc(&mut ws, 2, "public/nope", json!({}));
        assert_eq!(r["error"]["code"], -32601);
        assert_eq!(rpc(&mut ws, 3, "public/test", json!({}))["id"], 3);
        let r = rpc(&mut ws, 4, "public/test", json!({}));
        assert_eq!(r["error"]["code"], 10028);
        assert_eq!(r["error"]["message"], "too_many_requests");
    }

    #[test]
    fn request_log_across_reconnects() {
        let srv = DeribitServer::plain().unwrap();
        let auth_and_subscribe = || {
            let mut ws = connect(&srv.url(), None).unwrap();
            auth(&mut ws, 1);
            rpc(
                &mut ws,
                2,
                "public/subscribe",
                json!({"channels": ["ticker.BTC-PERPETUAL.raw"]}),
            );
            ws
        };
        let _first = auth_and_subscribe();
        srv.kill_connections();
        assert!(srv.wait_live_connections(0, T));
        srv.stop();
        srv.restart().unwrap();
        let _second = auth_and_subscribe();
        let expected: Vec<(usize, String)> = [
            (0, "public/auth"),
            (0, "public/subscribe"),
            (1, "public/auth"),
            (1, "public/subscribe"),
        ]
        .iter()
        .map(|(c, m)| (*c, m.to_string()))
        .collect();
        assert_eq!(srv.received_methods(), expected);
        assert_eq!(srv.methods_on(1), vec!["public/auth", "public/subscribe"]);
        assert!(srv.wait_for_method("public/subscribe", 2, T));
        assert_eq!(
            srv.received()[1].params["channels"][0],
            "ticker.BTC-PERPETUAL.raw"
        );
    }

    #[test]
    fn ignore_subscriptions_and_unresponsive() {
        let srv = DeribitServer::plain().unwrap();
        let mut ws = connect(&srv.url(), None).unwrap();
        srv.set_ignore_subscriptions(true);
        send(
            &mut ws,
            1,
            "public/subscribe",
            json!({"channels": ["book.BTC-PERPETUAL.raw"]}),
        );
        assert!(srv.wait_for_method("public/subscribe", 1, T));
        srv.set_unresponsive(true);
        send(&mut ws, 2, "public/test", json!({}));
        assert!(srv.wait_for_method("public/test", 1, T));
        srv.set_unresponsive(false);
        // The first answer is for id 3: neither the subscribe nor id 2 got one.
        let r = rpc(&mut ws, 3, "public/test", json!({}));
        assert_eq!(r["id"], 3);
        assert_eq!(srv.notifications_sent(), 0);
        assert!(srv.subscriptions(0).is_empty());
    }

    #[test]
    fn tls_deribit() {
        let pki = crate::TestPki::generate();
        let srv = DeribitServer::start(DeribitOptions {
            tls: Some(pki.server_config()),
            ..DeribitOptions::default()
        })
        .unwrap();
        assert!(srv.url().starts_with("wss://localhost:"));
        let mut ws = connect(&srv.url(), Some(pki.client_config())).unwrap();
        assert!(auth(&mut ws, 1)["result"]["access_token"].is_string());
    }
}
