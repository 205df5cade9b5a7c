//! A Deribit-compatible JSON-RPC 2.0 WebSocket server (a subset), for
//! testing authenticated sessions, subscriptions, application heartbeats
//! and rate limits against something that behaves like the real API.
//!
//! Supported methods:
//!
//! | method | behaviour |
//! |---|---|
//! | `public/auth` | `grant_type` `client_credentials` (`client_id`, `client_secret` checked) or `refresh_token` (a refresh token this server issued, unused and unexpired; refresh tokens rotate); wrong → error 13004 `invalid_credentials`; other grant types → -32602 `Invalid params`. Result: `access_token`, `refresh_token`, `expires_in`, `scope`, `token_type: "bearer"` |
//! | `public/subscribe` | `params.channels`; result: the channels actually subscribed — refused channels ([`DeribitServer::reject_channels`]), `user.*` channels, and `*.raw` channels on a connection without a valid token (unless [`DeribitOptions::raw_requires_auth`] is off) are left out |
//! | `private/subscribe` | as above but needs a valid token (else 13009 for the whole request); `user.*` allowed |
//! | `public/unsubscribe`, `private/unsubscribe` | result: the channels removed (same omissions as subscribe); private needs a token |
//! | `public/unsubscribe_all`, `private/unsubscribe_all` | result `"ok"` |
//! | `public/set_heartbeat` | `params.interval` seconds, at least [`DeribitOptions::min_heartbeat_interval`] (else 11050 `bad_request`); injectable errors: [`DeribitServer::fail_next_set_heartbeats`] |
//! | `public/disable_heartbeat` | result `"ok"` |
//! | `public/test` | result `{"version":"1.2.26"}`; answers a pending `test_request` |
//! | `public/get_time`, `public/hello` | server time in ms / version |
//! | `private/enable_cancel_on_disconnect`, `private/disable_cancel_on_disconnect` | `params.scope` `"connection"` (default) or `"account"`; result `"ok"` |
//! | `private/get_cancel_on_disconnect` | result `{"scope": S, "enabled": bool}` |
//! | `private/get_account_summary` | a stub account summary object |
//! | `private/buy`, `private/sell`, `private/edit`, `private/cancel`, `private/cancel_all`, `private/close_position` | stub results (`{"order": {"order_id": ..}, "trades": []}` for buy/sell) |
//! | other `private/*` | 13009 without a valid token, else -32601 |
//! | anything else | -32601 `Method not found` |
//!
//! **Authorization.** A connection is authorized while the access token it
//! last obtained with `public/auth` (or passed as `params.access_token`) is
//! unexpired. Tokens expire after [`DeribitOptions::token_lifetime`] (or
//! `token_expires_in` seconds) of real time; refresh tokens live
//! [`REFRESH_LIFETIME_FACTOR`] times as long. Without a valid token every
//! `private/*` method answers 13009 `unauthorized` — with
//! `data: {"reason": "token_expired"}` once the connection's token has
//! expired — and `user.*` notifications stop on that connection until it
//! authenticates again (its subscriptions stay).
//!
//! **Rate limit.** Every request costs credits ([`RateLimit`], per-method
//! overrides in [`DeribitOptions::method_costs`]), taken from one bucket per
//! account (`client_id`) once a connection has authenticated, and from one
//! shared bucket for all unauthenticated connections (everything here comes
//! from one loopback IP). A new connection does not get a fresh bucket.
//! With [`DeribitOptions::order_rate_limit`] set, matching-engine methods
//! ([`is_matching_engine`]) are charged to a separate per-account order
//! bucket instead. Without enough credits the answer is error 10028
//! `too_many_requests`, and then the server closes the WebSocket with close
//! code 1000, reason `too_many_requests` (unless
//! [`DeribitOptions::close_on_rate_limit`] is off).
//!
//! **Cancel on disconnect.** When a connection ends (client close, reset,
//! server kill or stop) with cancel-on-disconnect enabled for it (its own
//! `connection` scope, or the `account` scope of its account), the server
//! records a cancel event ([`DeribitServer::cancels_on_disconnect`]).
//!
//! Responses carry `jsonrpc`, the request `id`, `usIn`, `usOut`, `usDiff`
//! and `testnet: true`. Errors are `{"code": C, "message": M}` plus `data`
//! where noted; the messages per code are in [`error_message`].
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
//!
//! The request log ([`DeribitServer::received`]) keeps every request with
//! its params, except that a `client_secret` value is replaced by
//! `"<redacted>"`. Nothing here writes params to the `log` crate.

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

/// Refresh tokens live this many times as long as access tokens.
pub const REFRESH_LIFETIME_FACTOR: u32 = 10;

/// Close code the server uses after answering 10028 `too_many_requests`.
pub const RATE_LIMIT_CLOSE_CODE: u16 = 1000;

/// Close reason the server uses after answering 10028 `too_many_requests`.
pub const RATE_LIMIT_CLOSE_REASON: &str = "too_many_requests";

/// Credit-based rate limiter settings (one bucket per account, see the
/// module docs).
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

/// Whether `method` is a matching-engine method (charged to the order
/// bucket when [`DeribitOptions::order_rate_limit`] is set): `private/buy`,
/// `private/sell`, `private/edit`, `private/cancel*`,
/// `private/close_position`.
pub fn is_matching_engine(method: &str) -> bool {
    matches!(
        method,
        "private/buy" | "private/sell" | "private/edit" | "private/close_position"
    ) || method.starts_with("private/cancel")
}

/// The Deribit error message for `code`, as this server sends it:
/// 10028 `too_many_requests`, 10040 `retry`, 11050 `bad_request`,
/// 11051 `system_maintenance`, 13004 `invalid_credentials`,
/// 13009 `unauthorized`, 13028 `temporarily_unavailable`; any other code
/// `injected_error`.
pub fn error_message(code: i64) -> &'static str {
    match code {
        10028 => "too_many_requests",
        10040 => "retry",
        11050 => "bad_request",
        11051 => "system_maintenance",
        13004 => "invalid_credentials",
        13009 => "unauthorized",
        13028 => "temporarily_unavailable",
        _ => "injected_error",
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
    /// Rate limiter settings (per account; one shared bucket for
    /// unauthenticated connections).
    pub rate_limit: RateLimit,
    /// `expires_in` reported by `public/auth`, seconds (default 900); also
    /// the real access-token lifetime unless `token_lifetime` is set.
    pub token_expires_in: u64,
    /// Real access-token lifetime overriding `token_expires_in` (for fast
    /// tests); `expires_in` then reports it rounded up to whole seconds,
    /// at least 1. Default `None`.
    pub token_lifetime: Option<Duration>,
    /// Credits per method overriding [`RateLimit::cost`] (default empty).
    pub method_costs: HashMap<String, u64>,
    /// A separate per-account bucket for matching-engine methods
    /// ([`is_matching_engine`]); `None` (default) charges them to the
    /// account bucket like everything else.
    pub order_rate_limit: Option<RateLimit>,
    /// Close the WebSocket after answering 10028 (default true, as Deribit).
    pub close_on_rate_limit: bool,
    /// `*.raw` channels need a valid token (default true, as Deribit);
    /// false lets unauthenticated connections subscribe to them.
    pub raw_requires_auth: bool,
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
            token_lifetime: None,
            method_costs: HashMap::new(),
            order_rate_limit: None,
            close_on_rate_limit: true,
            raw_requires_auth: true,
        }
    }
}

impl DeribitOptions {
    /// The real access-token lifetime.
    pub fn access_lifetime(&self) -> Duration {
        self.token_lifetime
            .unwrap_or(Duration::from_secs(self.token_expires_in))
    }

    /// The `expires_in` value `public/auth` reports, whole seconds.
    pub fn reported_expires_in(&self) -> u64 {
        expires_in_secs(self.token_expires_in, self.token_lifetime)
    }

    fn cost_of(&self, method: &str) -> u64 {
        self.method_costs
            .get(method)
            .copied()
            .unwrap_or(self.rate_limit.cost)
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
            .field("token_lifetime", &self.token_lifetime)
            .field("method_costs", &self.method_costs)
            .field("order_rate_limit", &self.order_rate_limit)
            .field("close_on_rate_limit", &self.close_on_rate_limit)
            .field("raw_requires_auth", &self.raw_requires_auth)
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
    /// The params (`{}` if absent; a `client_secret` value is redacted).
    pub params: Value,
}

enum Command {
    Text(String),
    Close(u16, String),
}

type Mailbox = Arc<Mutex<Vec<Command>>>;

/// "Fail the next `remaining` calls with `code`".
#[derive(Default)]
struct Injected {
    remaining: usize,
    code: i64,
}

impl Injected {
    fn take(m: &Mutex<Injected>) -> Option<i64> {
        let mut i = lock(m);
        if i.remaining == 0 {
            return None;
        }
        i.remaining -= 1;
        Some(i.code)
    }
}

struct AccessGrant {
    account: String,
    expires: Instant,
}

struct RefreshGrant {
    account: String,
    expires: Instant,
    used: bool,
}

#[derive(Default)]
struct Tokens {
    access: HashMap<String, AccessGrant>,
    refresh: HashMap<String, RefreshGrant>,
}

struct Bucket {
    credits: f64,
    refilled_at: Instant,
}

/// Cancel-on-disconnect state of one connection.
#[derive(Default, Clone)]
struct Cod {
    connection: bool,
    account: Option<String>,
}

struct Shared {
    opts: DeribitOptions,
    log: Mutex<Vec<ReceivedRequest>>,
    tokens: Mutex<Tokens>,
    token_lifetime: Mutex<Option<Duration>>,
    token_counter: AtomicU64,
    order_counter: AtomicU64,
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
    auth_grants: Mutex<Vec<(usize, String)>>,
    refuse_refresh: AtomicBool,
    fail_auths: Mutex<Injected>,
    fail_heartbeats: Mutex<Injected>,
    rejected: Mutex<HashSet<String>>,
    buckets: Mutex<HashMap<String, Bucket>>,
    rate_limit_closes: AtomicUsize,
    cod: Mutex<HashMap<usize, Cod>>,
    cod_accounts: Mutex<HashSet<String>>,
    cancel_events: Mutex<Vec<(usize, String)>>,
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

    /// Take `cost` credits from bucket `key` (created full with `rl`).
    fn take_credits(&self, key: String, rl: RateLimit, cost: u64) -> bool {
        let now = Instant::now();
        let mut buckets = lock(&self.buckets);
        let b = buckets.entry(key).or_insert(Bucket {
            credits: rl.max_credits as f64,
            refilled_at: now,
        });
        let dt = now.duration_since(b.refilled_at).as_secs_f64();
        b.refilled_at = now;
        b.credits = (b.credits + dt * rl.refill_per_sec as f64).min(rl.max_credits as f64);
        if b.credits >= cost as f64 {
            b.credits -= cost as f64;
            true
        } else {
            false
        }
    }

    /// The cancel-on-disconnect scope in force for `conn`, if any.
    fn cod_scope(&self, conn: usize) -> Option<&'static str> {
        let cod = lock(&self.cod).get(&conn).cloned().unwrap_or_default();
        if cod.connection {
            return Some("connection");
        }
        let account = cod.account?;
        lock(&self.cod_accounts)
            .contains(&account)
            .then_some("account")
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
        let token_lifetime = Mutex::new(opts.token_lifetime);
        let shared = Arc::new(Shared {
            opts,
            log: Mutex::new(Vec::new()),
            token_lifetime,
            tokens: Mutex::new(Tokens::default()),
            token_counter: AtomicU64::new(0),
            order_counter: AtomicU64::new(0),
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
            auth_grants: Mutex::new(Vec::new()),
            refuse_refresh: AtomicBool::new(false),
            fail_auths: Mutex::new(Injected::default()),
            fail_heartbeats: Mutex::new(Injected::default()),
            rejected: Mutex::new(HashSet::new()),
            buckets: Mutex::new(HashMap::new()),
            rate_limit_closes: AtomicUsize::new(0),
            cod: Mutex::new(HashMap::new()),
            cod_accounts: Mutex::new(HashSet::new()),
            cancel_events: Mutex::new(Vec::new()),
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

    /// Wait up to `timeout` until at least `n` notifications were pushed.
    pub fn wait_for_notifications(&self, n: u64, timeout: Duration) -> bool {
        wait_until(timeout, || self.notifications_sent() >= n)
    }

    /// `test_request` heartbeats sent so far.
    pub fn test_requests_sent(&self) -> u64 {
        self.shared.test_requests_sent.load(Ordering::SeqCst)
    }

    /// Connections closed because a test_request went unanswered.
    pub fn heartbeat_closes(&self) -> usize {
        self.shared.heartbeat_closes.load(Ordering::SeqCst)
    }

    /// `(connection, grant_type)` of every `public/auth` request, in order,
    /// whether it succeeded or not (`""` if `grant_type` was missing).
    pub fn auth_grants(&self) -> Vec<(usize, String)> {
        lock(&self.shared.auth_grants).clone()
    }

    /// Access-token lifetime for tokens issued from now on (overrides
    /// [`DeribitOptions::token_lifetime`]; `None`: `token_expires_in`
    /// seconds). Tokens already issued keep their expiry.
    pub fn set_token_lifetime(&self, lifetime: Option<Duration>) {
        *lock(&self.shared.token_lifetime) = lifetime;
    }

    /// While on, every `refresh_token` grant fails with 13004
    /// `invalid_credentials` (default off).
    pub fn set_refuse_refresh(&self, on: bool) {
        self.shared.refuse_refresh.store(on, Ordering::SeqCst)
    }

    /// The next `n` `public/auth` requests (any grant, any connection) get
    /// error `code` with [`error_message`]`(code)`; replaces any count
    /// still pending.
    pub fn fail_next_auths(&self, n: usize, code: i64) {
        *lock(&self.shared.fail_auths) = Injected { remaining: n, code };
    }

    /// The next `n` `public/set_heartbeat` requests get error `code` with
    /// [`error_message`]`(code)`, and start no heartbeats; replaces any
    /// count still pending.
    pub fn fail_next_set_heartbeats(&self, n: usize, code: i64) {
        *lock(&self.shared.fail_heartbeats) = Injected { remaining: n, code };
    }

    /// Refuse these channels from now on (replacing the previous set; `&[]`
    /// clears it): subscribe results leave them out, as Deribit does.
    pub fn reject_channels(&self, channels: &[&str]) {
        *lock(&self.shared.rejected) = channels.iter().map(|c| c.to_string()).collect();
    }

    /// Connections closed after a 10028 `too_many_requests` answer.
    pub fn rate_limit_closes(&self) -> usize {
        self.shared.rate_limit_closes.load(Ordering::SeqCst)
    }

    /// Connections that ended with cancel-on-disconnect in force.
    pub fn cancels_on_disconnect(&self) -> usize {
        lock(&self.shared.cancel_events).len()
    }

    /// `(connection, scope)` of every cancel-on-disconnect event, in order.
    pub fn cancel_events(&self) -> Vec<(usize, String)> {
        lock(&self.shared.cancel_events).clone()
    }

    /// Whether cancel-on-disconnect is in force for connection `conn`
    /// (its own scope or its account's); for an ended connection, as it
    /// was when it ended.
    pub fn cod_enabled_on(&self, conn: usize) -> bool {
        self.shared.cod_scope(conn).is_some()
    }

    /// Credits left in the bucket of `account` (`None`: the shared
    /// unauthenticated bucket), without refill since its last use; `None`
    /// if that bucket was never used.
    pub fn credits(&self, account: Option<&str>) -> Option<u64> {
        let key = bucket_key(account, false);
        lock(&self.shared.buckets)
            .get(&key)
            .map(|b| b.credits as u64)
    }
}

/// `expires_in` for a lifetime override: whole seconds rounded up, at least 1.
fn expires_in_secs(default: u64, lifetime: Option<Duration>) -> u64 {
    match lifetime {
        None => default,
        Some(d) => (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1),
    }
}

fn bucket_key(account: Option<&str>, order: bool) -> String {
    match (account, order) {
        (None, _) => "anonymous".to_string(),
        (Some(a), false) => format!("account:{a}"),
        (Some(a), true) => format!("orders:{a}"),
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
    /// Expiry of the access token that authorized this connection last.
    token_expires: Option<Instant>,
    /// The account this connection authenticated as (kept after expiry).
    account: Option<String>,
    subs: Vec<String>,
    hb: Option<Heartbeat>,
}

enum Reply {
    Result(Value),
    Error(i64, &'static str, Option<Value>),
    None,
}

/// What [`Session::handle`] wants done.
struct Outcome {
    response: Option<String>,
    close: Option<(u16, &'static str)>,
}

enum Auth {
    Valid,
    Expired,
    Missing,
}

impl Session<'_> {
    /// Whether the connection's own token is valid now.
    fn session_authorized(&self) -> bool {
        self.token_expires.is_some_and(|t| Instant::now() < t)
    }

    /// Authorization for one request: the connection's token, or
    /// `params.access_token` (which then authorizes the connection too).
    fn auth_state(&mut self, params: &Value) -> Auth {
        if self.session_authorized() {
            return Auth::Valid;
        }
        if let Some(t) = params.get("access_token").and_then(Value::as_str) {
            let found = lock(&self.sh.tokens)
                .access
                .get(t)
                .map(|g| (g.account.clone(), g.expires));
            match found {
                Some((account, expires)) if Instant::now() < expires => {
                    self.set_authorized(account, expires);
                    return Auth::Valid;
                }
                Some(_) => return Auth::Expired,
                None => {}
            }
        }
        if self.token_expires.is_some() {
            Auth::Expired
        } else {
            Auth::Missing
        }
    }

    fn unauthorized(state: Auth) -> Reply {
        let data = match state {
            Auth::Expired => Some(json!({"reason": "token_expired"})),
            _ => None,
        };
        Reply::Error(13009, "unauthorized", data)
    }

    /// `Ok(())` if authorized, else the 13009 reply.
    fn require_auth(&mut self, params: &Value) -> Result<(), Reply> {
        match self.auth_state(params) {
            Auth::Valid => Ok(()),
            s => Err(Self::unauthorized(s)),
        }
    }

    fn set_authorized(&mut self, account: String, expires: Instant) {
        self.token_expires = Some(expires);
        lock(&self.sh.cod).entry(self.conn).or_default().account = Some(account.clone());
        self.account = Some(account);
    }

    fn charge(&self, method: &str) -> bool {
        let opts = &self.sh.opts;
        let cost = opts.cost_of(method);
        let account = self.account.as_deref();
        match opts.order_rate_limit {
            Some(rl) if account.is_some() && is_matching_engine(method) => {
                self.sh.take_credits(bucket_key(account, true), rl, cost)
            }
            _ => self
                .sh
                .take_credits(bucket_key(account, false), opts.rate_limit, cost),
        }
    }

    fn publish_subs(&self) {
        lock(&self.sh.subs).insert(self.conn, self.subs.clone());
    }

    fn issue_tokens(&mut self, account: String) -> Value {
        let opts = &self.sh.opts;
        let n = self.sh.token_counter.fetch_add(1, Ordering::SeqCst);
        let access = format!("dbt-access-{n}");
        let refresh = format!("dbt-refresh-{n}");
        let now = Instant::now();
        let override_ = *lock(&self.sh.token_lifetime);
        let lifetime = override_.unwrap_or(Duration::from_secs(opts.token_expires_in));
        let expires = now + lifetime;
        {
            let mut tokens = lock(&self.sh.tokens);
            tokens.access.insert(
                access.clone(),
                AccessGrant {
                    account: account.clone(),
                    expires,
                },
            );
            tokens.refresh.insert(
                refresh.clone(),
                RefreshGrant {
                    account: account.clone(),
                    expires: now + lifetime * REFRESH_LIFETIME_FACTOR,
                    used: false,
                },
            );
        }
        self.set_authorized(account, expires);
        json!({
            "access_token": access,
            "refresh_token": refresh,
            "expires_in": expires_in_secs(opts.token_expires_in, override_),
            "scope": "connection mainaccount",
            "token_type": "bearer",
        })
    }

    fn auth(&mut self, params: &Value) -> Reply {
        let opts = &self.sh.opts;
        let str_param = |k: &str| params.get(k).and_then(Value::as_str).unwrap_or("");
        let grant = str_param("grant_type");
        lock(&self.sh.auth_grants).push((self.conn, grant.to_string()));
        if let Some(code) = Injected::take(&self.sh.fail_auths) {
            return Reply::Error(code, error_message(code), None);
        }
        match grant {
            "client_credentials" => {
                if str_param("client_id") == opts.client_id
                    && str_param("client_secret") == opts.client_secret
                {
                    Reply::Result(self.issue_tokens(opts.client_id.clone()))
                } else {
                    Reply::Error(13004, "invalid_credentials", None)
                }
            }
            "refresh_token" => {
                if self.sh.refuse_refresh.load(Ordering::SeqCst) {
                    return Reply::Error(13004, "invalid_credentials", None);
                }
                let account = {
                    let mut tokens = lock(&self.sh.tokens);
                    match tokens.refresh.get_mut(str_param("refresh_token")) {
                        Some(g) if !g.used && Instant::now() < g.expires => {
                            g.used = true;
                            Some(g.account.clone())
                        }
                        _ => None,
                    }
                };
                match account {
                    Some(a) => Reply::Result(self.issue_tokens(a)),
                    None => Reply::Error(13004, "invalid_credentials", None),
                }
            }
            _ => Reply::Error(
                -32602,
                "Invalid params",
                Some(json!({"reason": "unsupported grant_type", "param": "grant_type"})),
            ),
        }
    }

    /// The channels of a (un)subscribe request this connection may have:
    /// refused, `user.*` on `public/*` and unauthorized `*.raw` ones are
    /// left out.
    fn allowed_channels(
        &self,
        private: bool,
        authorized: bool,
        channels: Vec<String>,
    ) -> Vec<String> {
        let rejected = lock(&self.sh.rejected);
        let authorized = authorized || !self.sh.opts.raw_requires_auth;
        channels
            .into_iter()
            .filter(|c| {
                !rejected.contains(c)
                    && (private || !c.starts_with("user."))
                    && (authorized || !c.ends_with(".raw"))
            })
            .collect()
    }

    fn set_cod(&mut self, params: &Value, on: bool) -> Reply {
        match params
            .get("scope")
            .and_then(Value::as_str)
            .unwrap_or("connection")
        {
            "connection" => {
                lock(&self.sh.cod).entry(self.conn).or_default().connection = on;
            }
            "account" => {
                let Some(account) = self.account.clone() else {
                    return Reply::Error(13009, "unauthorized", None);
                };
                let mut accounts = lock(&self.sh.cod_accounts);
                if on {
                    accounts.insert(account);
                } else {
                    accounts.remove(&account);
                }
            }
            _ => return invalid_param("scope", "must be connection or account"),
        }
        Reply::Result(json!("ok"))
    }

    fn get_cod(&self, params: &Value) -> Reply {
        let scope = params
            .get("scope")
            .and_then(Value::as_str)
            .unwrap_or("connection");
        let enabled = match scope {
            "connection" => lock(&self.sh.cod)
                .get(&self.conn)
                .is_some_and(|c| c.connection),
            "account" => self
                .account
                .as_ref()
                .is_some_and(|a| lock(&self.sh.cod_accounts).contains(a)),
            _ => return invalid_param("scope", "must be connection or account"),
        };
        Reply::Result(json!({"scope": scope, "enabled": enabled}))
    }

    fn order(&self, method: &str, params: &Value) -> Reply {
        let n = self.sh.order_counter.fetch_add(1, Ordering::SeqCst) + 1;
        let instrument = params
            .get("instrument_name")
            .and_then(Value::as_str)
            .unwrap_or("BTC-PERPETUAL");
        let amount = params.get("amount").and_then(Value::as_f64).unwrap_or(0.0);
        let direction = if method == "private/buy" {
            "buy"
        } else {
            "sell"
        };
        let ts = now_us() / 1000;
        Reply::Result(json!({
            "order": {
                "order_id": format!("ORD-{n}"),
                "order_state": "open",
                "order_type": params.get("type").and_then(Value::as_str).unwrap_or("limit"),
                "instrument_name": instrument,
                "direction": direction,
                "amount": amount,
                "filled_amount": 0.0,
                "price": params.get("price").cloned().unwrap_or(json!(50_000.0)),
                "label": params.get("label").and_then(Value::as_str).unwrap_or(""),
                "creation_timestamp": ts,
                "last_update_timestamp": ts,
            },
            "trades": [],
        }))
    }

    fn dispatch(&mut self, method: &str, params: &Value) -> Reply {
        let opts = &self.sh.opts;
        match method {
            "public/auth" => self.auth(params),
            "public/subscribe"
            | "private/subscribe"
            | "public/unsubscribe"
            | "private/unsubscribe" => {
                let private = method.starts_with("private/");
                let Some(channels) = channel_list(params) else {
                    return invalid_param("channels", "must be a list of strings");
                };
                let authorized = match self.auth_state(params) {
                    Auth::Valid => true,
                    s if private => return Self::unauthorized(s),
                    _ => false,
                };
                let subscribe = method.ends_with("/subscribe");
                if subscribe && self.sh.ignore_subscriptions.load(Ordering::SeqCst) {
                    return Reply::None;
                }
                let channels = self.allowed_channels(private, authorized, channels);
                let result = if subscribe {
                    for c in &channels {
                        if !self.subs.contains(c) {
                            self.subs.push(c.clone());
                        }
                    }
                    channels
                } else {
                    let removed: Vec<String> = channels
                        .into_iter()
                        .filter(|c| self.subs.contains(c))
                        .collect();
                    self.subs.retain(|c| !removed.contains(c));
                    removed
                };
                self.publish_subs();
                Reply::Result(json!(result))
            }
            "public/unsubscribe_all" | "private/unsubscribe_all" => {
                if method.starts_with("private/") {
                    if let Err(r) = self.require_auth(params) {
                        return r;
                    }
                }
                self.subs.clear();
                self.publish_subs();
                Reply::Result(json!("ok"))
            }
            "public/set_heartbeat" => {
                if let Some(code) = Injected::take(&self.sh.fail_heartbeats) {
                    return Reply::Error(code, error_message(code), None);
                }
                let interval = params.get("interval").and_then(Value::as_f64);
                match interval {
                    Some(i)
                        if i >= opts.min_heartbeat_interval as f64 && i.is_finite() && i < 1e6 =>
                    {
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
            m if m.starts_with("private/") => {
                if let Err(r) = self.require_auth(params) {
                    return r;
                }
                self.private(m, params)
            }
            _ => Reply::Error(-32601, "Method not found", None),
        }
    }

    /// An authorized `private/*` method other than (un)subscribe.
    fn private(&mut self, method: &str, params: &Value) -> Reply {
        match method {
            "private/enable_cancel_on_disconnect" => self.set_cod(params, true),
            "private/disable_cancel_on_disconnect" => self.set_cod(params, false),
            "private/get_cancel_on_disconnect" => self.get_cod(params),
            "private/get_account_summary" => Reply::Result(json!({
                "currency": params.get("currency").and_then(Value::as_str).unwrap_or("BTC"),
                "balance": 10.0,
                "equity": 10.0,
                "available_funds": 9.5,
                "margin_balance": 10.0,
                "initial_margin": 0.5,
                "maintenance_margin": 0.25,
                "username": self.account.as_deref().unwrap_or(""),
            })),
            "private/buy" | "private/sell" => self.order(method, params),
            "private/edit" | "private/cancel" | "private/close_position" => Reply::Result(
                json!({"order": {"order_id": params.get("order_id").cloned().unwrap_or(Value::Null), "order_state": if method == "private/edit" { "open" } else { "cancelled" }}, "trades": []}),
            ),
            m if m.starts_with("private/cancel_all") => Reply::Result(json!(0)),
            _ => Reply::Error(-32601, "Method not found", None),
        }
    }

    /// Handle one incoming text message.
    fn handle(&mut self, text: &str) -> Outcome {
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
        let just = |response| Outcome {
            response,
            close: None,
        };
        let v: Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(_) => {
                return just(respond(
                    Value::Null,
                    Reply::Error(-32700, "Parse error", None),
                ))
            }
        };
        let id = v.get("id").cloned().unwrap_or(Value::Null);
        let Some(method) = v.get("method").and_then(Value::as_str) else {
            return just(respond(id, Reply::Error(-32600, "Invalid Request", None)));
        };
        let params = v.get("params").cloned().unwrap_or_else(|| json!({}));
        let mut logged = params.clone();
        if let Some(secret) = logged.get_mut("client_secret") {
            *secret = json!("<redacted>");
        }
        lock(&self.sh.log).push(ReceivedRequest {
            conn: self.conn,
            id: id.clone(),
            method: method.to_string(),
            params: logged,
        });
        if self.sh.unresponsive.load(Ordering::SeqCst) {
            return just(None);
        }
        if !self.charge(method) {
            let close = self
                .sh
                .opts
                .close_on_rate_limit
                .then_some((RATE_LIMIT_CLOSE_CODE, RATE_LIMIT_CLOSE_REASON));
            return Outcome {
                response: respond(id, Reply::Error(10028, "too_many_requests", None)),
                close,
            };
        }
        let reply = self.dispatch(method, &params);
        just(respond(id, reply))
    }
}

fn invalid_param(param: &str, reason: &str) -> Reply {
    Reply::Error(
        -32602,
        "Invalid params",
        Some(json!({"reason": reason, "param": param})),
    )
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
        if let Some(scope) = self.sh.cod_scope(self.conn) {
            log::debug!("deribit conn {}: cancel on disconnect ({scope})", self.conn);
            lock(&self.sh.cancel_events).push((self.conn, scope.to_string()));
        }
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
        token_expires: None,
        account: None,
        subs: Vec::new(),
        hb: None,
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
                let authorized = s.session_authorized();
                for channel in &s.subs {
                    if !authorized && channel.starts_with("user.") {
                        continue;
                    }
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
                let out = s.handle(t.as_str());
                if let Some(text) = out.response {
                    if ws.send(Message::text(text)).is_err() {
                        return;
                    }
                }
                if let Some((code, reason)) = out.close {
                    log::debug!("deribit conn {index}: out of credits, closing");
                    sh.rate_limit_closes.fetch_add(1, Ordering::SeqCst);
                    close_gracefully(&mut ws, code, reason);
                    return;
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

    fn refresh(ws: &mut BlockingWs, id: u64, token: &Value) -> Value {
        rpc(
            ws,
            id,
            "public/auth",
            json!({"grant_type": "refresh_token", "refresh_token": token}),
        )
    }

    /// Read until a close frame (skipping everything else); its code and reason.
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

    fn opts_with(rate_limit: RateLimit) -> DeribitOptions {
        DeribitOptions {
            rate_limit,
            ..DeribitOptions::default()
        }
    }

    const ORDERS: &str = "user.orders.BTC-PERPETUAL.raw";

    #[test]
    fn token_expiry_stops_private_calls_and_user_notifications_until_reauth() {
        let srv = DeribitServer::plain().unwrap();
        let mut ws = connect(&srv.url(), None).unwrap();
        let r = auth(&mut ws, 1);
        assert_eq!(r["result"]["expires_in"], 900);
        assert_eq!(r["result"]["scope"], "connection mainaccount");
        let r = rpc(
            &mut ws,
            2,
            "private/subscribe",
            json!({"channels": [ORDERS]}),
        );
        assert_eq!(r["result"], json!([ORDERS]));
        assert!(srv.wait_for_notifications(1, T));

        // Tokens issued from now on live 30 ms (reported as 1 s).
        srv.set_token_lifetime(Some(Duration::from_millis(30)));
        assert_eq!(auth(&mut ws, 3)["result"]["expires_in"], 1);
        let mut id = 4;
        let expired = wait_until(T, || {
            id += 1;
            let r = rpc(&mut ws, id, "private/get_account_summary", json!({}));
            r.get("error").is_some()
        });
        assert!(expired);
        let r = rpc(&mut ws, 100, "private/buy", json!({"amount": 10}));
        assert_eq!(r["error"]["code"], 13009);
        assert_eq!(r["error"]["message"], "unauthorized");
        assert_eq!(r["error"]["data"]["reason"], "token_expired");
        // No more user.* notifications, but the subscription stays.
        let sent = srv.notifications_sent();
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(srv.notifications_sent(), sent);
        assert_eq!(srv.subscriptions(0), vec![ORDERS]);

        // Re-auth on the same connection revives both.
        srv.set_token_lifetime(None);
        assert!(auth(&mut ws, 101)["result"]["access_token"].is_string());
        let r = rpc(&mut ws, 102, "private/get_account_summary", json!({}));
        assert!(r["result"].is_object(), "{r}");
        assert!(srv.wait_for_notifications(sent + 1, T));
    }

    #[test]
    fn refresh_tokens_rotate_expire_and_can_be_refused() {
        let srv = DeribitServer::plain().unwrap();
        let mut ws = connect(&srv.url(), None).unwrap();
        let r1 = auth(&mut ws, 1)["result"]["refresh_token"].clone();
        let r2 = refresh(&mut ws, 2, &r1);
        assert_eq!(r2["result"]["token_type"], "bearer");
        let r2 = r2["result"]["refresh_token"].clone();
        assert_ne!(r1, r2);
        // A used refresh token is dead.
        let again = refresh(&mut ws, 3, &r1);
        assert_eq!(again["error"]["code"], 13004);
        assert_eq!(again["error"]["message"], "invalid_credentials");
        let unknown = refresh(&mut ws, 4, &json!("dbt-refresh-999"));
        assert_eq!(unknown["error"]["code"], 13004);
        let r3 = refresh(&mut ws, 5, &r2)["result"]["refresh_token"].clone();
        assert!(r3.is_string());

        // Refused on demand: the client falls back to client_credentials.
        srv.set_refuse_refresh(true);
        assert_eq!(refresh(&mut ws, 6, &r3)["error"]["code"], 13004);
        assert!(auth(&mut ws, 7)["result"]["access_token"].is_string());
        srv.set_refuse_refresh(false);
        // r3 was not consumed by the refused attempt.
        assert!(refresh(&mut ws, 8, &r3)["result"]["access_token"].is_string());

        // Refresh tokens expire (10 × the access lifetime: 200 ms here).
        srv.set_token_lifetime(Some(Duration::from_millis(20)));
        let short = auth(&mut ws, 9)["result"]["refresh_token"].clone();
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(refresh(&mut ws, 10, &short)["error"]["code"], 13004);

        let grants: Vec<(usize, String)> = [
            "client_credentials",
            "refresh_token",
            "refresh_token",
            "refresh_token",
            "refresh_token",
            "refresh_token",
            "client_credentials",
            "refresh_token",
            "client_credentials",
            "refresh_token",
        ]
        .iter()
        .map(|g| (0, g.to_string()))
        .collect();
        assert_eq!(srv.auth_grants(), grants);
        // The log keeps the params, but never the secret.
        let log = srv.received();
        assert_eq!(log[0].params["client_secret"], "<redacted>");
        assert_eq!(log[0].params["client_id"], "test-client");
        assert_eq!(log[1].params["refresh_token"], r1);
    }

    #[test]
    fn injected_auth_errors() {
        let srv = DeribitServer::plain().unwrap();
        let mut ws = connect(&srv.url(), None).unwrap();
        srv.fail_next_auths(2, 13028);
        for id in 1..=2 {
            let r = auth(&mut ws, id);
            assert_eq!(r["error"]["code"], 13028);
            assert_eq!(r["error"]["message"], "temporarily_unavailable");
        }
        assert!(auth(&mut ws, 3)["result"]["access_token"].is_string());
        let codes = [
            (10028, "too_many_requests"),
            (10040, "retry"),
            (11051, "system_maintenance"),
            (12345, "injected_error"),
        ];
        for (i, (code, message)) in codes.iter().enumerate() {
            srv.fail_next_auths(1, *code);
            let r = refresh(&mut ws, 10 + i as u64, &json!("whatever"));
            assert_eq!(r["error"]["code"], *code);
            assert_eq!(r["error"]["message"], *message);
        }
        // An injected 10028 does not close the connection.
        assert_eq!(rpc(&mut ws, 20, "public/test", json!({}))["id"], 20);
        assert_eq!(srv.rate_limit_closes(), 0);
        assert_eq!(srv.auth_grants().len(), 7);
    }

    #[test]
    fn subscribe_results_leave_out_refused_and_unauthorized_channels() {
        let srv = DeribitServer::plain().unwrap();
        srv.reject_channels(&["ticker.BTC-PERPETUAL.100ms"]);
        let mut ws = connect(&srv.url(), None).unwrap();
        let asked = json!({"channels": [
            "book.BTC-PERPETUAL.raw",
            "book.BTC-PERPETUAL.100ms",
            ORDERS,
            "ticker.BTC-PERPETUAL.100ms",
        ]});
        let r = rpc(&mut ws, 1, "public/subscribe", asked.clone());
        assert_eq!(r["result"], json!(["book.BTC-PERPETUAL.100ms"]));
        let r = rpc(
            &mut ws,
            2,
            "private/subscribe",
            json!({"channels": [ORDERS]}),
        );
        assert_eq!(r["error"]["code"], 13009);
        assert!(r["error"].get("data").is_none());
        let r = rpc(
            &mut ws,
            3,
            "private/unsubscribe",
            json!({"channels": [ORDERS]}),
        );
        assert_eq!(r["error"]["code"], 13009);

        auth(&mut ws, 4);
        let r = rpc(&mut ws, 5, "public/subscribe", asked.clone());
        assert_eq!(
            r["result"],
            json!(["book.BTC-PERPETUAL.raw", "book.BTC-PERPETUAL.100ms"])
        );
        let r = rpc(&mut ws, 6, "private/subscribe", asked);
        assert_eq!(
            r["result"],
            json!(["book.BTC-PERPETUAL.raw", "book.BTC-PERPETUAL.100ms", ORDERS])
        );
        assert_eq!(
            srv.subscriptions(0),
            vec!["book.BTC-PERPETUAL.100ms", "book.BTC-PERPETUAL.raw", ORDERS]
        );
        // Unsubscribe mirrors it: public/* cannot touch user.* channels.
        let both = json!({"channels": [ORDERS, "book.BTC-PERPETUAL.raw"]});
        let r = rpc(&mut ws, 7, "public/unsubscribe", both.clone());
        assert_eq!(r["result"], json!(["book.BTC-PERPETUAL.raw"]));
        let r = rpc(&mut ws, 8, "private/unsubscribe", both);
        assert_eq!(r["result"], json!([ORDERS]));
        assert_eq!(srv.subscriptions(0), vec!["book.BTC-PERPETUAL.100ms"]);
        srv.reject_channels(&[]);
        let r = rpc(
            &mut ws,
            9,
            "public/subscribe",
            json!({"channels": ["ticker.BTC-PERPETUAL.100ms"]}),
        );
        assert_eq!(r["result"], json!(["ticker.BTC-PERPETUAL.100ms"]));

        // Raw feeds without a token, where the server allows it.
        let srv = DeribitServer::start(DeribitOptions {
            raw_requires_auth: false,
            ..DeribitOptions::default()
        })
        .unwrap();
        let mut ws = connect(&srv.url(), None).unwrap();
        let r = rpc(
            &mut ws,
            1,
            "public/subscribe",
            json!({"channels": ["book.BTC-PERPETUAL.raw", ORDERS]}),
        );
        assert_eq!(r["result"], json!(["book.BTC-PERPETUAL.raw"]));
    }

    #[test]
    fn out_of_credits_answers_10028_then_closes() {
        let srv = DeribitServer::start(opts_with(RateLimit {
            cost: 500,
            max_credits: 1000,
            refill_per_sec: 0,
        }))
        .unwrap();
        let mut ws = connect(&srv.url(), None).unwrap();
        rpc(&mut ws, 1, "public/test", json!({}));
        rpc(&mut ws, 2, "public/test", json!({}));
        let r = rpc(&mut ws, 3, "public/test", json!({}));
        assert_eq!(r["error"]["code"], 10028);
        assert_eq!(
            read_close(&mut ws),
            (RATE_LIMIT_CLOSE_CODE, RATE_LIMIT_CLOSE_REASON.to_string())
        );
        assert!(wait_until(T, || srv.rate_limit_closes() == 1));
        assert_eq!(srv.credits(None), Some(0));
    }

    #[test]
    fn credits_are_per_account_and_shared_across_connections() {
        let mut opts = opts_with(RateLimit {
            cost: 500,
            max_credits: 1000,
            refill_per_sec: 0,
        });
        opts.method_costs.insert("public/auth".into(), 0);
        let srv = DeribitServer::start(opts).unwrap();
        // Unauthenticated connections share one bucket.
        let mut a = connect(&srv.url(), None).unwrap();
        rpc(&mut a, 1, "public/test", json!({}));
        let mut b = connect(&srv.url(), None).unwrap();
        rpc(&mut b, 1, "public/test", json!({}));
        assert_eq!(
            rpc(&mut b, 2, "public/test", json!({}))["error"]["code"],
            10028
        );
        // An authenticated connection uses its account's bucket ...
        let mut c = connect(&srv.url(), None).unwrap();
        auth(&mut c, 1);
        rpc(&mut c, 2, "public/test", json!({}));
        rpc(&mut c, 3, "private/get_account_summary", json!({}));
        // ... which a new connection of the same account does not refill.
        let mut d = connect(&srv.url(), None).unwrap();
        auth(&mut d, 1);
        assert_eq!(
            rpc(&mut d, 2, "public/test", json!({}))["error"]["code"],
            10028
        );
        assert!(wait_until(T, || srv.rate_limit_closes() == 2));
        assert_eq!(srv.credits(Some("test-client")), Some(0));
    }

    #[test]
    fn order_bucket_is_separate_and_close_is_optional() {
        let opts = DeribitOptions {
            order_rate_limit: Some(RateLimit {
                cost: 500,
                max_credits: 1000,
                refill_per_sec: 0,
            }),
            close_on_rate_limit: false,
            ..DeribitOptions::default()
        };
        let srv = DeribitServer::start(opts).unwrap();
        let mut ws = connect(&srv.url(), None).unwrap();
        let r = rpc(&mut ws, 1, "private/buy", json!({"amount": 10}));
        assert_eq!(r["error"]["code"], 13009);
        auth(&mut ws, 2);
        let r = rpc(
            &mut ws,
            3,
            "private/buy",
            json!({"instrument_name": "BTC-PERPETUAL", "amount": 10}),
        );
        assert!(r["result"]["order"]["order_id"].is_string(), "{r}");
        assert_eq!(r["result"]["order"]["direction"], "buy");
        let r = rpc(&mut ws, 4, "private/sell", json!({"amount": 10}));
        assert_eq!(r["result"]["order"]["direction"], "sell");
        let r = rpc(&mut ws, 5, "private/cancel", json!({"order_id": "ORD-1"}));
        assert_eq!(r["error"]["code"], 10028);
        // The account bucket is untouched and the connection stays open.
        let r = rpc(&mut ws, 6, "private/get_account_summary", json!({}));
        assert_eq!(r["result"]["currency"], "BTC");
        assert_eq!(srv.rate_limit_closes(), 0);
        assert!(is_matching_engine("private/cancel_all_by_currency"));
        assert!(!is_matching_engine("private/get_positions"));
    }

    #[test]
    fn cancel_on_disconnect_on_every_kind_of_end() {
        let srv = DeribitServer::plain().unwrap();
        let url = srv.url();
        let cod = |ws: &mut BlockingWs, method: &str, scope: &str| {
            rpc(ws, 9, method, json!({"scope": scope}))
        };
        // conn 0: needs auth; enabled, then closed by the client.
        let mut ws = connect(&url, None).unwrap();
        let r = cod(&mut ws, "private/enable_cancel_on_disconnect", "connection");
        assert_eq!(r["error"]["code"], 13009);
        auth(&mut ws, 1);
        let r = cod(&mut ws, "private/get_cancel_on_disconnect", "connection");
        assert_eq!(
            r["result"],
            json!({"scope": "connection", "enabled": false})
        );
        let r = rpc(&mut ws, 2, "private/enable_cancel_on_disconnect", json!({}));
        assert_eq!(r["result"], "ok");
        let r = cod(&mut ws, "private/get_cancel_on_disconnect", "connection");
        assert_eq!(r["result"], json!({"scope": "connection", "enabled": true}));
        assert!(srv.cod_enabled_on(0));
        ws.close(None).unwrap();
        assert!(wait_until(T, || srv.cancels_on_disconnect() == 1));

        // conn 1: enabled then disabled; killed by the server: no event.
        let mut ws = connect(&url, None).unwrap();
        auth(&mut ws, 1);
        cod(&mut ws, "private/enable_cancel_on_disconnect", "connection");
        cod(
            &mut ws,
            "private/disable_cancel_on_disconnect",
            "connection",
        );
        assert!(!srv.cod_enabled_on(1));
        srv.kill_connections();
        assert!(srv.wait_live_connections(0, T));
        assert_eq!(srv.cancels_on_disconnect(), 1);

        // conn 2: account scope, reset by the server.
        let mut ws = connect(&url, None).unwrap();
        auth(&mut ws, 1);
        let r = cod(&mut ws, "private/enable_cancel_on_disconnect", "account");
        assert_eq!(r["result"], "ok");
        let r = cod(&mut ws, "private/get_cancel_on_disconnect", "account");
        assert_eq!(r["result"], json!({"scope": "account", "enabled": true}));
        srv.reset_connections();
        assert!(wait_until(T, || srv.cancels_on_disconnect() == 2));

        // conn 3: connection scope, server killed (stop).
        let mut ws = connect(&url, None).unwrap();
        auth(&mut ws, 1);
        cod(&mut ws, "private/disable_cancel_on_disconnect", "account");
        cod(&mut ws, "private/enable_cancel_on_disconnect", "connection");
        srv.stop();
        assert!(wait_until(T, || srv.cancels_on_disconnect() == 3));
        let events: Vec<(usize, String)> = [(0, "connection"), (2, "account"), (3, "connection")]
            .iter()
            .map(|(c, s)| (*c, s.to_string()))
            .collect();
        assert_eq!(srv.cancel_events(), events);
        assert!(srv.cod_enabled_on(3) && !srv.cod_enabled_on(1));
    }

    #[test]
    fn injected_set_heartbeat_errors_start_no_heartbeats() {
        let srv = DeribitServer::start(DeribitOptions {
            heartbeat_unit: Duration::from_millis(1),
            ..DeribitOptions::default()
        })
        .unwrap();
        srv.set_enforce_test_requests(false);
        let mut ws = connect(&srv.url(), None).unwrap();
        srv.fail_next_set_heartbeats(2, 11050);
        let r = rpc(&mut ws, 1, "public/set_heartbeat", json!({"interval": 10}));
        assert_eq!(r["error"]["code"], 11050);
        assert_eq!(r["error"]["message"], "bad_request");
        srv.fail_next_set_heartbeats(1, 13028);
        let r = rpc(&mut ws, 2, "public/set_heartbeat", json!({"interval": 10}));
        assert_eq!(r["error"]["message"], "temporarily_unavailable");
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(srv.test_requests_sent(), 0);
        let r = rpc(&mut ws, 3, "public/set_heartbeat", json!({"interval": 10}));
        assert_eq!(r["result"], "ok");
        assert!(wait_until(T, || srv.test_requests_sent() > 0));
        // Absurd intervals are refused, not a panic.
        let r = rpc(
            &mut ws,
            4,
            "public/set_heartbeat",
            json!({"interval": 1e300}),
        );
        assert_eq!(r["error"]["code"], 11050);
    }
}
