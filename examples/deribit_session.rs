//! The reusable part of the Deribit example: how the client is configured
//! and what the application does on each event. `examples/deribit.rs` runs
//! it against a real (or any Deribit-compatible) endpoint; the integration
//! test `examples/tests/deribit_session.rs` runs it against the loopback
//! `DeribitServer`.
//!
//! The session layer does the protocol chores after *every* open (first
//! connect, reconnect, supervisor restart): `public/auth` with client
//! credentials, then one subscribe request for the tracked channels. The
//! core answers Deribit's `test_request` heartbeats with `public/test` and
//! charges every user send to Deribit's credit bucket
//! ([`RateLimit::deribit`]). What is left to the application is below:
//! count data per channel, correlate its own JSON-RPC requests, and wait
//! `retry_after` when a send is rate limited.
//!
//! [`event_json`] is the `--json` view of the same events: one JSON object
//! per event with an `"event"` field (the CLI's style), pure so tests can
//! call it. It never carries a token or a secret: the auth answer is
//! consumed by the client and never reaches the application.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use zenws_core::exchange::deribit::Deribit;
use zenws_core::json;
use zenws_core::ratelimit::RateLimit;
use zenws_core::session::Rejection;
use zenws_core::{ExitReason, HeartbeatConfig, SendError};
use zenws_mio::{ClientConfig, ClientEvent, ClientId, ClientSupervisor, Error};

/// Deribit's error code for an exhausted credit balance.
pub const TOO_MANY_REQUESTS: i64 = 10028;

/// What to connect with. `Debug` never shows the secret.
#[derive(Clone)]
pub struct DeribitSetup {
    /// `client_id`; with `client_secret`, enables `public/auth` and the private channel.
    pub client_id: Option<String>,
    /// `client_secret`.
    pub client_secret: Option<String>,
    /// Instrument of the channels (default `BTC-PERPETUAL`).
    pub instrument: String,
    /// `public/set_heartbeat` interval in seconds (Deribit's minimum is 10).
    pub heartbeat_secs: u32,
    /// Charge user sends to Deribit's credit bucket (default on).
    pub rate_limit: bool,
    /// Enable cancel-on-disconnect after every authentication.
    pub cancel_on_disconnect: bool,
}

impl std::fmt::Debug for DeribitSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeribitSetup")
            .field("client_id", &self.client_id)
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("instrument", &self.instrument)
            .field("heartbeat_secs", &self.heartbeat_secs)
            .field("rate_limit", &self.rate_limit)
            .field("cancel_on_disconnect", &self.cancel_on_disconnect)
            .finish()
    }
}

impl Default for DeribitSetup {
    fn default() -> Self {
        DeribitSetup {
            client_id: None,
            client_secret: None,
            instrument: "BTC-PERPETUAL".into(),
            heartbeat_secs: 10,
            rate_limit: true,
            cancel_on_disconnect: false,
        }
    }
}

impl DeribitSetup {
    /// Credentials from `DERIBIT_CLIENT_ID` / `DERIBIT_CLIENT_SECRET` (both
    /// must be set and non-empty, else public-only).
    pub fn from_env() -> Self {
        let var = |k| std::env::var(k).ok().filter(|v: &String| !v.is_empty());
        match (var("DERIBIT_CLIENT_ID"), var("DERIBIT_CLIENT_SECRET")) {
            (Some(id), Some(secret)) => DeribitSetup::with_credentials(id, secret),
            _ => DeribitSetup::default(),
        }
    }

    /// An authenticated setup.
    pub fn with_credentials(
        client_id: impl Into<String>,
        client_secret: impl Into<String>,
    ) -> Self {
        DeribitSetup {
            client_id: Some(client_id.into()),
            client_secret: Some(client_secret.into()),
            ..DeribitSetup::default()
        }
    }

    /// Whether `public/auth` is sent after every open.
    pub fn authenticated(&self) -> bool {
        self.client_id.is_some() && self.client_secret.is_some()
    }

    /// The private channel, subscribed only when authenticated.
    pub fn private_channel(&self) -> String {
        format!("user.orders.{}.raw", self.instrument)
    }

    /// Authenticated: `book.*.raw`, `trades.*.raw` and `user.orders.*.raw`;
    /// public-only: `book.*.100ms` and `trades.*.100ms` (Deribit serves
    /// `.raw` feeds to authenticated connections only).
    pub fn channels(&self) -> Vec<String> {
        let feed = if self.authenticated() { "raw" } else { "100ms" };
        let mut v = vec![
            format!("book.{}.{feed}", self.instrument),
            format!("trades.{}.{feed}", self.instrument),
        ];
        if self.authenticated() {
            v.push(self.private_channel());
        }
        v
    }

    /// The exchange protocol: credentials (if any), cancel-on-disconnect.
    pub fn protocol(&self) -> Deribit {
        match (&self.client_id, &self.client_secret) {
            (Some(id), Some(secret)) => Deribit::with_credentials(id, secret)
                .unwrap_or_else(|_| panic!("DERIBIT_CLIENT_ID / _SECRET longer than 128 bytes"))
                .cancel_on_disconnect(self.cancel_on_disconnect),
            _ => Deribit::public(),
        }
    }

    /// The client configuration: Deribit heartbeat, session hooks with
    /// authentication and the channels (restored after every reconnect and
    /// restart), Deribit's credit limit. Retry, TLS roots and the rest keep
    /// their defaults; adjust the returned value as needed.
    pub fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::default()
            .protocol(self.protocol())
            .with_heartbeat(HeartbeatConfig::deribit(self.heartbeat_secs));
        c.subscriptions = self.channels();
        // `None` would mean "the protocol's" (Deribit's published limits).
        c.connection.rate_limit = Some(if self.rate_limit {
            RateLimit::deribit()
        } else {
            RateLimit::unlimited()
        });
        c
    }
}

/// Counters for the summary (and the test's assertions).
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// `Opened` events.
    pub opens: u32,
    /// `Disconnected` events.
    pub disconnects: u32,
    /// `Reconnecting` events (scheduled retries).
    pub reconnects: u32,
    /// Supervisor restarts.
    pub restarts: u32,
    /// Successful authentications (one per open when authenticated).
    pub authenticated: u32,
    /// ... of which with the refresh-token grant.
    pub authenticated_by_refresh: u32,
    /// Tokens refreshed on an open connection.
    pub token_refreshes: u32,
    /// Transient authentication errors retried (`AuthRetrying`).
    pub auth_retries: u32,
    /// Cancel-on-disconnect enabled (after an authentication).
    pub cancel_on_disconnect: u32,
    /// Cancel-on-disconnect refused or unanswered.
    pub cancel_on_disconnect_failed: u32,
    /// Channels the server granted at the last restore.
    pub granted: Vec<String>,
    /// Every `SubscriptionRejected`: channel and why.
    pub rejected: Vec<(String, Rejection)>,
    /// `public/set_heartbeat` refused (retried by the client).
    pub heartbeat_setup_failed: u32,
    /// The server said its rate limit was hit (`RateLimited`, e.g. 10028).
    pub server_rate_limited: u32,
    /// Subscription restorations (one per open).
    pub restored: u32,
    /// `HeartbeatMissed` events.
    pub heartbeat_missed: u32,
    /// `HeartbeatFailed` events.
    pub heartbeat_failed: u32,
    /// Subscription notifications per channel.
    pub per_channel: BTreeMap<String, u64>,
    /// Requests this application sent (tracked).
    pub requests_sent: u64,
    /// ... answered.
    pub requests_resolved: u64,
    /// ... not answered in time.
    pub requests_timed_out: u64,
    /// ... lost with their connection.
    pub requests_failed: u64,
    /// Sends the client-side credit bucket refused (each followed by a wait).
    pub rate_limited: u64,
    /// Sends put off because the write queue was full or too many
    /// requests were in flight.
    pub deferred: u64,
    /// ... answered with a JSON-RPC error (`RequestError`).
    pub requests_errored: u64,
    /// JSON-RPC error responses (any request).
    pub rpc_errors: u64,
    /// ... of which Deribit's `too_many_requests` (10028).
    pub too_many_requests: u64,
    /// The client ended for good: why, and the detail.
    pub failed: Option<(ExitReason, String)>,
    /// The client stopped normally.
    pub stopped: bool,
}

impl Stats {
    /// Total subscription notifications.
    pub fn notifications(&self) -> u64 {
        self.per_channel.values().sum()
    }
}

struct InFlight {
    method: &'static str,
    sent: Instant,
}

/// The application: reacts to events, sends its periodic request and an
/// optional burst, counts everything in [`Stats`].
pub struct DeribitApp {
    /// The client (set after `start_client`).
    pub client: ClientId,
    /// Counters.
    pub stats: Stats,
    /// Send `public/get_time` this often while ready (`None`: never).
    pub request_every: Option<Duration>,
    /// Requests still to send as fast as the credit bucket allows
    /// (`public/test`), starting once the session is ready.
    pub burst: u32,
    ready: bool,
    next_request: Option<Instant>,
    retry_at: Option<Instant>,
    waiting_logged: bool,
    inflight: HashMap<u64, InFlight>,
    first_seen: BTreeSet<String>,
    started: Instant,
}

impl DeribitApp {
    /// An application for `client`.
    pub fn new(client: ClientId) -> Self {
        DeribitApp {
            client,
            stats: Stats::default(),
            request_every: None,
            burst: 0,
            ready: false,
            next_request: None,
            retry_at: None,
            waiting_logged: false,
            inflight: HashMap::new(),
            first_seen: BTreeSet::new(),
            started: Instant::now(),
        }
    }

    /// Authenticated (if configured) and subscribed on the current connection.
    pub fn is_ready(&self) -> bool {
        self.ready
    }

    /// Requests in flight.
    pub fn in_flight(&self) -> usize {
        self.inflight.len()
    }

    /// The client ended (stopped or failed).
    pub fn is_done(&self) -> bool {
        self.stats.stopped || self.stats.failed.is_some()
    }

    fn not_ready(&mut self) {
        self.ready = false;
        self.first_seen.clear();
    }

    /// Handle one event; returns a log line worth printing, if any.
    pub fn on_event(&mut self, event: &ClientEvent) -> Option<String> {
        if event.client().is_some_and(|c| c != self.client) {
            return None;
        }
        match event {
            ClientEvent::Opened { .. } => {
                self.stats.opens += 1;
                self.not_ready();
                Some(format!(
                    "open #{} (auth + subscribe follow)",
                    self.stats.opens
                ))
            }
            ClientEvent::Authenticated {
                refresh,
                expires_in,
                ..
            } => {
                self.stats.authenticated += 1;
                self.stats.authenticated_by_refresh += u32::from(*refresh);
                Some(format!(
                    "authenticated (public/auth, {}){}",
                    grant_name(*refresh),
                    expires(*expires_in)
                ))
            }
            ClientEvent::TokenRefreshed { expires_in, .. } => {
                self.stats.token_refreshes += 1;
                Some(format!("token refreshed{}", expires(*expires_in)))
            }
            ClientEvent::AuthRetrying { code, delay, .. } => {
                self.stats.auth_retries += 1;
                Some(format!(
                    "authentication refused for now ({}), retrying in {delay:.1?}",
                    code.map_or("no code".into(), |c| format!("error {c}"))
                ))
            }
            ClientEvent::AfterAuth { step, error, .. } => {
                // Deribit's only step after auth is cancel-on-disconnect.
                let what = if *step == 0 {
                    "cancel-on-disconnect".to_string()
                } else {
                    format!("after-auth step {step}")
                };
                Some(match error {
                    None => {
                        self.stats.cancel_on_disconnect += 1;
                        format!("{what} enabled")
                    }
                    Some(Some(code)) => {
                        self.stats.cancel_on_disconnect_failed += 1;
                        format!("{what} refused: error {code}")
                    }
                    Some(None) => {
                        self.stats.cancel_on_disconnect_failed += 1;
                        format!("{what}: no answer in time")
                    }
                })
            }
            ClientEvent::SubscriptionRejected {
                channel, reason, ..
            } => {
                self.stats.rejected.push((channel.clone(), *reason));
                Some(format!(
                    "subscription rejected: {channel} ({})",
                    rejection_text(reason)
                ))
            }
            ClientEvent::Restored {
                granted, rejected, ..
            } => {
                self.stats.restored += 1;
                self.stats.granted = granted.clone();
                self.ready = true;
                Some(format!(
                    "subscribed: {} channel(s) granted, {rejected} rejected",
                    granted.len()
                ))
            }
            ClientEvent::HeartbeatSetupFailed { code, .. } => {
                self.stats.heartbeat_setup_failed += 1;
                Some(format!(
                    "public/set_heartbeat refused (error {code}): asking again shortly"
                ))
            }
            ClientEvent::RateLimited { code, .. } => {
                self.stats.server_rate_limited += 1;
                Some(format!(
                    "server rate limit hit (error {code}): holding sends and reconnects until the credits refill"
                ))
            }
            ClientEvent::Message { message, .. } => self.on_message(message.as_bytes()),
            ClientEvent::Disconnected { reason, detail, .. } => {
                self.stats.disconnects += 1;
                self.not_ready();
                Some(format!("disconnected: {reason}{}", paren(detail)))
            }
            ClientEvent::Reconnecting {
                attempt,
                delay,
                reason,
                ..
            } => {
                self.stats.reconnects += 1;
                Some(format!(
                    "reconnect #{attempt} in {delay:.1?} after {reason}"
                ))
            }
            ClientEvent::Restarted {
                restarts, reason, ..
            } => {
                self.stats.restarts += 1;
                self.not_ready();
                Some(format!("supervisor restart #{restarts} after {reason}"))
            }
            ClientEvent::HeartbeatMissed { consecutive, .. } => {
                self.stats.heartbeat_missed += 1;
                Some(format!("heartbeat missed ({consecutive} in a row)"))
            }
            ClientEvent::HeartbeatFailed { .. } => {
                self.stats.heartbeat_failed += 1;
                Some("heartbeat failed: server presumed dead, reconnecting".into())
            }
            ClientEvent::RequestResolved { request, .. } => {
                self.stats.requests_resolved += 1;
                let f = self.inflight.remove(request)?;
                let rtt = f.sent.elapsed();
                // The periodic request is worth a line; a burst is summarised.
                (f.method == "public/get_time")
                    .then(|| format!("request {request} {} resolved in {rtt:.1?}", f.method))
            }
            ClientEvent::RequestError {
                request,
                code,
                message,
                ..
            } => {
                self.stats.requests_errored += 1;
                let f = self.inflight.remove(request)?;
                let rtt = f.sent.elapsed();
                Some(format!(
                    "request {request} {} answered error {code} {message:?} in {rtt:.1?}",
                    f.method
                ))
            }
            ClientEvent::RequestTimedOut { request, .. } => {
                self.stats.requests_timed_out += 1;
                let f = self.inflight.remove(request);
                Some(format!(
                    "request {request} {} timed out",
                    f.map_or("?", |f| f.method)
                ))
            }
            ClientEvent::RequestFailed { request, .. } => {
                self.stats.requests_failed += 1;
                self.inflight.remove(request);
                Some(format!("request {request} failed: connection lost"))
            }
            ClientEvent::Stopped { .. } => {
                self.stats.stopped = true;
                self.not_ready();
                Some("stopped".into())
            }
            ClientEvent::Failed { reason, detail, .. } => {
                self.stats.failed = Some((*reason, detail.clone()));
                self.not_ready();
                Some(format!("FAILED for good: {reason}{}", paren(detail)))
            }
            ClientEvent::BudgetExhausted { restarts, window } => Some(format!(
                "supervisor gave up: {restarts} restarts in {window:?}"
            )),
            _ => None,
        }
    }

    fn on_message(&mut self, data: &[u8]) -> Option<String> {
        let Ok(v) = json::scan(data) else { return None };
        if v.is_deribit_subscription() {
            let ch = v.params_channel?;
            *self.stats.per_channel.entry(ch.to_string()).or_default() += 1;
            if self.first_seen.insert(ch.to_string()) {
                return Some(format!("first data on {ch}"));
            }
            return None;
        }
        if v.has_error {
            self.stats.rpc_errors += 1;
            let code = v.error_code.unwrap_or(0);
            if code == TOO_MANY_REQUESTS {
                self.stats.too_many_requests += 1;
            }
            // Ours: `RequestError` follows with the code and message. The
            // session's own answers (auth, subscribe) never arrive here.
            // Never print the body (it could echo a request's params).
            if !v.id.is_some_and(|id| self.inflight.contains_key(&id)) {
                return Some(format!("error response {code} to id {:?}", v.id));
            }
        }
        None
    }

    fn send(
        &mut self,
        sup: &mut ClientSupervisor,
        method: &'static str,
        now: Instant,
    ) -> Result<u64, Error> {
        let id = sup.next_request_id(self.client)?;
        let text = format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"{method}","params":{{}}}}"#);
        let rid = sup.request(self.client, text)?;
        self.stats.requests_sent += 1;
        self.inflight.insert(rid, InFlight { method, sent: now });
        Ok(rid)
    }

    /// Time-driven work: the periodic request and the burst. Sends only
    /// while ready; a rate-limited send waits `retry_after` and is retried.
    /// Returns log lines.
    pub fn tick(&mut self, sup: &mut ClientSupervisor) -> Vec<String> {
        let mut out = Vec::new();
        let now = Instant::now();
        if !self.ready || self.retry_at.is_some_and(|t| now < t) {
            return out;
        }
        self.retry_at = None;
        let periodic_due =
            self.request_every.is_some() && !matches!(self.next_request, Some(t) if now < t);
        if periodic_due {
            match self.send(sup, "public/get_time", now) {
                Ok(_) => self.next_request = self.request_every.map(|d| now + d),
                Err(e) => {
                    self.on_send_error(e, now, &mut out);
                    return out;
                }
            }
        }
        while self.burst > 0 {
            match self.send(sup, "public/test", now) {
                Ok(_) => {
                    self.burst -= 1;
                    if self.burst == 0 && self.waiting_logged {
                        self.waiting_logged = false;
                        out.push(format!(
                            "burst sent; {} rate-limited send(s) waited retry_after",
                            self.stats.rate_limited
                        ));
                    }
                }
                Err(e) => {
                    self.on_send_error(e, now, &mut out);
                    break;
                }
            }
        }
        out
    }

    fn on_send_error(&mut self, e: Error, now: Instant, out: &mut Vec<String>) {
        match e {
            Error::Send(SendError::RateLimited { retry_after }) => {
                self.stats.rate_limited += 1;
                self.retry_at = Some(now + retry_after);
                if !self.waiting_logged {
                    self.waiting_logged = true;
                    out.push(format!(
                        "rate limited client-side after {} requests: waiting {retry_after:.1?} (then one per refill)",
                        self.stats.requests_sent
                    ));
                }
            }
            // Not open right now: the next Restored makes us ready again.
            Error::Send(SendError::NotConnected) => self.not_ready(),
            // Write queue full, or too many requests in flight: let
            // responses drain, try again shortly.
            Error::Send(SendError::QueueFull) | Error::Request(_) => {
                self.stats.deferred += 1;
                self.retry_at = Some(now + Duration::from_millis(5));
            }
            e => out.push(format!("request not sent: {e}")),
        }
    }

    /// When `tick` has work next (for the loop's wait), if ready.
    pub fn next_wakeup(&self) -> Option<Instant> {
        if !self.ready {
            return None;
        }
        if let Some(t) = self.retry_at {
            return Some(t);
        }
        if self.burst > 0 {
            return Some(Instant::now());
        }
        self.request_every
            .map(|_| self.next_request.unwrap_or_else(Instant::now))
    }

    /// `[  1.234s] line`.
    pub fn stamp(&self, line: &str) -> String {
        format!("[{:8.3}s] {line}", self.started.elapsed().as_secs_f64())
    }

    /// The multi-line summary.
    pub fn summary(&self) -> String {
        let s = &self.stats;
        let mut out = String::new();
        let _ = writeln!(out, "--- summary after {:.1?} ---", self.started.elapsed());
        let _ = writeln!(
            out,
            "connections: {} opened, {} lost, {} reconnect attempts, {} supervisor restarts",
            s.opens, s.disconnects, s.reconnects, s.restarts
        );
        let _ = writeln!(
            out,
            "session: {} authentications ({} by refresh token), {} token refreshes, {} auth retries, {} subscription restores",
            s.authenticated, s.authenticated_by_refresh, s.token_refreshes, s.auth_retries, s.restored
        );
        if s.cancel_on_disconnect + s.cancel_on_disconnect_failed > 0 {
            let _ = writeln!(
                out,
                "cancel-on-disconnect: enabled {} time(s), {} failed",
                s.cancel_on_disconnect, s.cancel_on_disconnect_failed
            );
        }
        if !s.rejected.is_empty() {
            let _ = writeln!(out, "subscriptions rejected:");
            for (ch, why) in &s.rejected {
                let _ = writeln!(out, "  {ch:<32} {}", rejection_text(why));
            }
        }
        let _ = writeln!(out, "messages per channel ({} total):", s.notifications());
        if s.per_channel.is_empty() {
            let _ = writeln!(out, "  (none)");
        }
        for (ch, n) in &s.per_channel {
            let _ = writeln!(out, "  {ch:<32} {n}");
        }
        let _ = writeln!(
            out,
            "requests: {} sent, {} resolved, {} answered with an error, {} timed out, {} failed; {} error responses ({} too_many_requests)",
            s.requests_sent, s.requests_resolved, s.requests_errored, s.requests_timed_out, s.requests_failed, s.rpc_errors, s.too_many_requests
        );
        let _ = writeln!(
            out,
            "rate limited: {} time(s) client-side, {} time(s) by the server",
            s.rate_limited, s.server_rate_limited
        );
        let _ = writeln!(
            out,
            "heartbeat: {} missed, {} failed, {} setup refusals",
            s.heartbeat_missed, s.heartbeat_failed, s.heartbeat_setup_failed
        );
        match &s.failed {
            Some((r, d)) => {
                let _ = writeln!(out, "end: failed: {r}{}", paren(d));
            }
            None if s.stopped => {
                let _ = writeln!(out, "end: stopped normally");
            }
            None => {
                let _ = writeln!(out, "end: still running");
            }
        }
        out
    }
}

fn paren(detail: &str) -> String {
    if detail.is_empty() {
        String::new()
    } else {
        format!(" ({detail})")
    }
}

fn grant_name(refresh: bool) -> &'static str {
    if refresh {
        "refresh_token"
    } else {
        "client_credentials"
    }
}

fn expires(expires_in: Option<Duration>) -> String {
    expires_in.map_or(String::new(), |d| format!(", token valid {d:.0?}"))
}

/// `refused (error 11050)`, `needs authentication`, ...
fn rejection_text(r: &Rejection) -> String {
    match r {
        Rejection::Refused { code: Some(c) } => format!("refused, error {c}"),
        Rejection::Refused { code: None } => "refused: not in the server's answer".into(),
        Rejection::NeedsAuth => "needs an authenticated connection".into(),
        Rejection::TimedOut => "no answer in time".into(),
        Rejection::Unsupported => "cannot be subscribed".into(),
    }
}

/// The machine-friendly name of a [`Rejection`] (`"reason"` in JSON).
pub fn rejection_name(r: &Rejection) -> &'static str {
    match r {
        Rejection::Refused { .. } => "refused",
        Rejection::NeedsAuth => "needs_auth",
        Rejection::TimedOut => "timed_out",
        Rejection::Unsupported => "unsupported",
    }
}

/// One JSON object, built field by field (the CLI's `--json` style).
struct JsonLine(String);

impl JsonLine {
    fn new(event: &str) -> Self {
        let mut s = String::from("{\"event\":");
        push_json_str(&mut s, event);
        JsonLine(s)
    }
    fn key(&mut self, k: &str) {
        self.0.push(',');
        push_json_str(&mut self.0, k);
        self.0.push(':');
    }
    fn str(mut self, k: &str, v: &str) -> Self {
        self.key(k);
        push_json_str(&mut self.0, v);
        self
    }
    fn num(mut self, k: &str, v: impl std::fmt::Display) -> Self {
        self.key(k);
        let _ = write!(self.0, "{v}");
        self
    }
    fn bool(self, k: &str, v: bool) -> Self {
        self.num(k, v)
    }
    fn list(mut self, k: &str, items: &[String]) -> Self {
        self.key(k);
        self.0.push('[');
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                self.0.push(',');
            }
            push_json_str(&mut self.0, item);
        }
        self.0.push(']');
        self
    }
    fn opt_num(self, k: &str, v: Option<i64>) -> Self {
        match v {
            Some(v) => self.num(k, v),
            None => self,
        }
    }
    fn detail(self, d: &str) -> Self {
        if d.is_empty() {
            self
        } else {
            self.str("detail", d)
        }
    }
    fn reason(self, e: &zenws_core::Error) -> Self {
        self.str("reason", e.name()).str("message", &e.to_string())
    }
    fn exit_reason(self, r: &ExitReason) -> Self {
        let s = match r.error() {
            Some(e) => self.str("reason", e.name()),
            None => self.str("reason", "normal"),
        };
        let kind = match r {
            ExitReason::Normal => "normal",
            ExitReason::RetriesExhausted { .. } => "retries_exhausted",
            ExitReason::Fatal(_) => "fatal",
        };
        s.str("exit", kind).str("message", &r.to_string())
    }
    fn done(mut self) -> String {
        self.0.push('}');
        self.0
    }
}

fn push_json_str(out: &mut String, s: &str) {
    out.push('"');
    out.push_str(&crate::json_escape(s));
    out.push('"');
}

/// The `--json` line announcing the session: `connecting` with the URL as
/// given (pass it through [`zenws_mio::redact_url`]), the mode
/// (`authenticated` / `public`), the channels and whether
/// cancel-on-disconnect is asked for. Never the credentials.
pub fn connecting_json(shown_url: &str, setup: &DeribitSetup) -> String {
    JsonLine::new("connecting")
        .str("url", shown_url)
        .str(
            "mode",
            if setup.authenticated() {
                "authenticated"
            } else {
                "public"
            },
        )
        .list("channels", &setup.channels())
        .bool(
            "cancel_on_disconnect",
            setup.authenticated() && setup.cancel_on_disconnect,
        )
        .done()
}

/// The `--json` line (one JSON object, no newline) for `event`, or `None`
/// for events that get none (data messages, resolved requests: their
/// content stays on stdout as human lines).
///
/// | event | fields |
/// |---|---|
/// | `connected` | |
/// | `authenticated` | `grant` (`client_credentials` / `refresh_token`), `expires_in_ms` |
/// | `token_refreshed` | `expires_in_ms` |
/// | `auth_retrying` | `code`, `delay_ms` |
/// | `cancel_on_disconnect` | `ok`, and `code` (refused) or `timed_out` |
/// | `subscribed` | `granted` (the channels the server confirmed), `rejected` (count) |
/// | `subscription_rejected` | `channel`, `reason` (`refused` / `needs_auth` / `timed_out` / `unsupported`), `code` if the server answered with one |
/// | `heartbeat_setup_failed` | `code` |
/// | `rate_limited` | `code` (the server's; sends and reconnects wait for the credits) |
/// | `request_error` | `request`, `code`, `message` |
/// | `request_timed_out`, `request_failed` | `request` |
/// | `disconnected` | `reason`, `message`, `detail` |
/// | `reconnecting` | `attempt`, `delay_ms`, `reason`, `message`, `detail` |
/// | `restarted` | `restarts`, `reason`, `exit`, `message` |
/// | `heartbeat_missed` | `consecutive` |
/// | `heartbeat_failed`, `stopped` | |
/// | `failed` | `reason`, `exit`, `message`, `detail` |
/// | `budget_exhausted` | `restarts`, `window_ms` |
///
/// No field ever holds a token or a secret: the events carry none (the
/// auth answer is consumed by the client, never delivered).
///
/// ```
/// use std::time::Duration;
/// use zenws_examples::deribit_session::event_json;
/// use zenws_mio::{ClientEvent, ClientId};
/// let ev = ClientEvent::Authenticated { id: ClientId(1), refresh: false, expires_in: Some(Duration::from_secs(900)) };
/// assert_eq!(
///     event_json(&ev).unwrap(),
///     r#"{"event":"authenticated","grant":"client_credentials","expires_in_ms":900000}"#
/// );
/// ```
pub fn event_json(event: &ClientEvent) -> Option<String> {
    let ms = |d: &Duration| d.as_millis();
    let line = match event {
        ClientEvent::Opened { .. } => JsonLine::new("connected"),
        ClientEvent::Authenticated {
            refresh,
            expires_in,
            ..
        } => {
            let j = JsonLine::new("authenticated").str("grant", grant_name(*refresh));
            match expires_in {
                Some(d) => j.num("expires_in_ms", ms(d)),
                None => j,
            }
        }
        ClientEvent::TokenRefreshed { expires_in, .. } => {
            let j = JsonLine::new("token_refreshed");
            match expires_in {
                Some(d) => j.num("expires_in_ms", ms(d)),
                None => j,
            }
        }
        ClientEvent::AuthRetrying { code, delay, .. } => JsonLine::new("auth_retrying")
            .opt_num("code", *code)
            .num("delay_ms", ms(delay)),
        ClientEvent::AfterAuth { step, error, .. } => {
            let j = if *step == 0 {
                JsonLine::new("cancel_on_disconnect")
            } else {
                JsonLine::new("after_auth").num("step", step)
            };
            match error {
                None => j.bool("ok", true),
                Some(Some(code)) => j.bool("ok", false).num("code", code),
                Some(None) => j.bool("ok", false).bool("timed_out", true),
            }
        }
        ClientEvent::Restored {
            granted, rejected, ..
        } => JsonLine::new("subscribed")
            .list("granted", granted)
            .num("rejected", rejected),
        ClientEvent::SubscriptionRejected {
            channel, reason, ..
        } => {
            let j = JsonLine::new("subscription_rejected")
                .str("channel", channel)
                .str("reason", rejection_name(reason));
            match reason {
                Rejection::Refused { code } => j.opt_num("code", *code),
                _ => j,
            }
        }
        ClientEvent::HeartbeatSetupFailed { code, .. } => {
            JsonLine::new("heartbeat_setup_failed").num("code", code)
        }
        ClientEvent::RateLimited { code, .. } => JsonLine::new("rate_limited").num("code", code),
        ClientEvent::RequestError {
            request,
            code,
            message,
            ..
        } => JsonLine::new("request_error")
            .num("request", request)
            .num("code", code)
            .str("message", message),
        ClientEvent::RequestTimedOut { request, .. } => {
            JsonLine::new("request_timed_out").num("request", request)
        }
        ClientEvent::RequestFailed { request, .. } => {
            JsonLine::new("request_failed").num("request", request)
        }
        ClientEvent::Disconnected { reason, detail, .. } => {
            JsonLine::new("disconnected").reason(reason).detail(detail)
        }
        ClientEvent::Reconnecting {
            attempt,
            delay,
            reason,
            detail,
            ..
        } => JsonLine::new("reconnecting")
            .num("attempt", attempt)
            .num("delay_ms", ms(delay))
            .reason(reason)
            .detail(detail),
        ClientEvent::Restarted {
            restarts, reason, ..
        } => JsonLine::new("restarted")
            .num("restarts", restarts)
            .exit_reason(reason),
        ClientEvent::HeartbeatMissed { consecutive, .. } => {
            JsonLine::new("heartbeat_missed").num("consecutive", consecutive)
        }
        ClientEvent::HeartbeatFailed { .. } => {
            JsonLine::new("heartbeat_failed").reason(&zenws_core::Error::HeartbeatFailed)
        }
        ClientEvent::Stopped { .. } => JsonLine::new("stopped"),
        ClientEvent::Failed { reason, detail, .. } => {
            JsonLine::new("failed").exit_reason(reason).detail(detail)
        }
        ClientEvent::BudgetExhausted { restarts, window } => JsonLine::new("budget_exhausted")
            .num("restarts", restarts)
            .num("window_ms", ms(window))
            .str("reason", "restart_budget_exhausted"),
        ClientEvent::Message { .. } | ClientEvent::RequestResolved { .. } => return None,
        _ => return None,
    };
    Some(line.done())
}
