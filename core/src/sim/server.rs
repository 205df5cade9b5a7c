//! The simulated server behind each socket, and the account behind them all.
//!
//! It speaks the Deribit JSON-RPC API as far as the client's session uses
//! it, with Deribit's faults drawn from the seed:
//!
//! - WebSocket pings and the custom text ping (`"ping"` → `"pong"`);
//! - `public/set_heartbeat` (sometimes refused with an error), then
//!   `heartbeat` / `test_request` notifications; a `test_request` still
//!   unanswered at the next heartbeat **closes the connection**;
//! - `public/auth` with `client_credentials` or `refresh_token`: tokens
//!   that **expire** (`expires_in` drawn per seed); a refresh token that is
//!   sometimes **refused** (the client must fall back to its credentials);
//!   **transient errors** (13028 / 10040 / 11051); rejected credentials
//!   (13004, fatal); ignored and late answers;
//! - `private/enable_cancel_on_disconnect` (acknowledged, refused or ignored);
//! - `public/subscribe` / `private/subscribe`: the result lists the granted
//!   channels; some are **omitted** (partial rejection), `.raw` channels
//!   only on an authorised socket, `user.*` only with a valid token (else
//!   13009 for the whole request); sometimes an error for the whole request;
//! - `public/unsubscribe` / `private/unsubscribe`: the result lists the
//!   channels removed (no more feed on them); sometimes ignored or
//!   answered with a transient error (10040);
//! - `private/*` requests with an expired token: **13009**, and no `user.*`
//!   data once the token expired;
//! - one **credit bucket per account** across all connections: a request
//!   that finds it empty is answered **10028** and the connection is closed;
//! - a feed of notifications on the granted channels; the socket's [`Fault`].
//!
//! It also checks what it receives (see [`Out::Violation`]).

extern crate std;

use std::format;
use std::string::String;
use std::time::Duration;
use std::vec::Vec;

use crate::json;
use crate::ratelimit::{Buckets, RateLimit};
use crate::rng::Rng;
use crate::time::Instant;

use super::network::{between, chance, Fault};
use super::{FaultCounts, Faults};

/// A message on the wire, in either direction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Wire {
    /// A data message (text).
    Text(Vec<u8>),
    /// A ping control frame.
    Ping(Vec<u8>),
    /// A pong control frame.
    Pong(Vec<u8>),
    /// A close frame.
    Close(u16),
    /// EOF without a close frame (the server process died).
    Eof,
    /// TCP reset.
    Reset,
}

impl Wire {
    pub(crate) fn len(&self) -> usize {
        match self {
            Wire::Text(b) | Wire::Ping(b) | Wire::Pong(b) => b.len() + 2,
            Wire::Close(_) => 4,
            Wire::Eof | Wire::Reset => 0,
        }
    }
}

/// What the sim learns when a server message reaches the client (the
/// client itself only sees the bytes).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) enum Note {
    #[default]
    None,
    /// The answer to a subscribe request: these channels were granted.
    Granted(Vec<String>),
    /// A 10028 answer: the account's credits are exhausted.
    RateLimited,
    /// The answer to an unsubscribe request: these channels were removed.
    Unsubscribed(Vec<String>),
    /// A feed notification on this channel.
    Feed(String),
}

/// A timer the server set for itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Timer {
    /// Send the next Deribit heartbeat.
    Heartbeat,
    /// Send the next feed notification.
    Feed,
    /// Carry out the socket's fault.
    Fault(Fault),
}

/// What the server wants done.
#[derive(Debug)]
pub(crate) enum Out {
    /// Send to the client after `after`.
    Send(Duration, Wire, Note),
    /// Wake the server after `after`.
    Timer(Duration, Timer),
    /// The user data message with this sequence number arrived.
    Data(u64),
    /// The server rejected the client's credentials (a fatal cause).
    Fatal,
    /// A check failed.
    Violation(String),
}

/// The account all connections share: one credit bucket (Deribit counts
/// per account, not per connection) and the refresh tokens it issued.
#[derive(Debug)]
pub(crate) struct Account {
    pub(crate) limit: RateLimit,
    buckets: Buckets,
    /// Refresh tokens issued and not yet used (a refresh token is single-use).
    refresh_tokens: Vec<u64>,
    next_token: u64,
    /// Token lifetimes are drawn from this range (whole seconds).
    pub(crate) token_life: (u64, u64),
    pub(crate) counts: FaultCounts,
}

impl Account {
    pub(crate) fn new(limit: RateLimit, token_life: (u64, u64)) -> Self {
        Account {
            limit,
            buckets: limit.buckets(),
            refresh_tokens: Vec::new(),
            next_token: 1,
            token_life,
            counts: FaultCounts::default(),
        }
    }
}

/// The access token of one socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Token {
    issued: Instant,
    expires: Instant,
}

/// Per-socket server state.
#[derive(Debug)]
pub(crate) struct Server {
    /// Deribit heartbeat interval, once `set_heartbeat` arrived.
    heartbeat: Option<Duration>,
    /// A `test_request` sent and not answered yet.
    test_pending: bool,
    /// `test_request`s sent and `public/test` answers received.
    pub(crate) tests_sent: u32,
    pub(crate) tests_answered: u32,
    /// Stopped answering pings and sending heartbeats.
    silent: bool,
    /// Closed or crashed: ignores everything.
    pub(crate) closed: bool,
    /// The access token, once authenticated.
    token: Option<Token>,
    /// The client enables cancel-on-disconnect (checked: before any subscribe).
    cod_client: bool,
    cod_asked: bool,
    /// Channels granted on this socket.
    pub(crate) granted: Vec<String>,
    /// Channels still granted though the client cannot know: their
    /// unsubscribe was ignored (the client gives up at the deadline), or
    /// refused while the user had already taken them back, and that
    /// subscribe was then ignored or refused too.
    pub(crate) unsub_ignored: Vec<String>,
    /// Channels whose unsubscribe the server ignored or refused (and not
    /// granted or removed since): a subscribe for them while still granted
    /// is excused, and so is their staying granted if the user tracks
    /// them again (a refused subscribe then leaves them on the server).
    pub(crate) unsub_refused: Vec<String>,
    feeding: bool,
    feed_every: Duration,
    feed_seq: u64,
    feed_next: usize,
    max_message_size: usize,
    /// Last time the server did something that can delay a token refresh
    /// on this socket (ignored / late / refused authentication or
    /// cancel-on-disconnect, a rate limit).
    obstructed: Option<Instant>,
    /// The link's stall, if any: `[from, until)`.
    pub(crate) stall: Option<(Instant, Instant)>,
    /// When the last subscribe / unsubscribe answer goes out: they go out
    /// in the order the server acted on them.
    sub_answer_at: Instant,
}

fn result(id: u64, value: &str) -> Wire {
    Wire::Text(format!(r#"{{"jsonrpc":"2.0","id":{id},"result":{value}}}"#).into_bytes())
}

fn error(id: u64, code: i64, message: &str) -> Wire {
    Wire::Text(
        format!(r#"{{"jsonrpc":"2.0","id":{id},"error":{{"code":{code},"message":"{message}"}}}}"#)
            .into_bytes(),
    )
}

/// `"interval":N` in a set_heartbeat request.
fn interval_of(data: &str) -> Option<u64> {
    let rest = &data[data.find(r#""interval":"#)? + 11..];
    let end = rest.find(|c: char| !c.is_ascii_digit())?;
    rest[..end].parse().ok()
}

/// The channel names of a subscribe request (the sim's channel names need
/// no escaping).
pub(crate) fn channels_of(data: &str) -> Vec<&str> {
    let Some(start) = data.find(r#""channels":["#) else {
        return Vec::new();
    };
    let rest = &data[start + 12..];
    let Some(end) = rest.find(']') else {
        return Vec::new();
    };
    rest[..end]
        .split(',')
        .map(|c| c.trim_matches('"'))
        .filter(|c| !c.is_empty())
        .collect()
}

/// What a request needs from the socket's authorisation.
fn is_private(method: &str) -> bool {
    method.starts_with("private/")
}

impl Server {
    pub(crate) fn new(max_message_size: usize, cod_client: bool) -> Self {
        Server {
            heartbeat: None,
            test_pending: false,
            tests_sent: 0,
            tests_answered: 0,
            silent: false,
            closed: false,
            token: None,
            cod_client,
            cod_asked: false,
            granted: Vec::new(),
            unsub_ignored: Vec::new(),
            unsub_refused: Vec::new(),
            feeding: false,
            feed_every: Duration::ZERO,
            feed_seq: 0,
            feed_next: 0,
            max_message_size,
            obstructed: None,
            stall: None,
            sub_answer_at: Instant::ZERO,
        }
    }

    /// The delay of a subscription answer drawn as `quick`, but never
    /// before the previous one's: the client sees the changes in order.
    fn in_order(&mut self, now: Instant, quick: Duration) -> Duration {
        self.sub_answer_at = self.sub_answer_at.max(now + quick);
        self.sub_answer_at.saturating_since(now)
    }

    fn obstruct(&mut self, now: Instant) {
        self.obstructed = Some(now);
    }

    fn token_valid(&self, now: Instant) -> bool {
        self.token.is_some_and(|t| now < t.expires)
    }

    /// A private request arrives at `now`. Strict invariant: on an expired
    /// token only if something out of the client's hands (an obstruction
    /// by the server, a stalled link) could have kept its refresh from
    /// arriving in time. The link is in order, so a refresh the client sent
    /// on time arrives before any later request: no in-flight slack.
    fn check_private(
        &mut self,
        now: Instant,
        what: &str,
        out: &mut Vec<Out>,
        counts: &mut FaultCounts,
    ) {
        let Some(t) = self.token else {
            out.push(Out::Violation(format!(
                "{what} on a socket that never authenticated"
            )));
            return;
        };
        if now < t.expires {
            return;
        }
        counts.private_on_expired_token += 1;
        let obstructed = self.obstructed.is_some_and(|o| o >= t.issued)
            || self
                .stall
                .is_some_and(|(from, until)| from < now && until > t.issued);
        if !obstructed {
            out.push(Out::Violation(format!(
                "{what} on a token expired at {:?} (issued {:?}) while the server was reachable: the refresh was late",
                t.expires, t.issued
            )));
        }
    }

    /// A message from the client arrived at `now`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn on_wire(
        &mut self,
        now: Instant,
        rng: &mut Rng,
        f: &Faults,
        account: &mut Account,
        wire: Wire,
        out: &mut Vec<Out>,
    ) {
        if self.closed {
            return;
        }
        match wire {
            Wire::Ping(p) => {
                if !self.silent {
                    out.push(Out::Send(Duration::ZERO, Wire::Pong(p), Note::None));
                }
            }
            Wire::Close(code) => {
                self.closed = true;
                out.push(Out::Send(Duration::ZERO, Wire::Close(code), Note::None));
            }
            Wire::Text(data) => self.on_text(now, rng, f, account, &data, out),
            Wire::Pong(_) | Wire::Eof | Wire::Reset => {}
        }
    }

    fn on_text(
        &mut self,
        now: Instant,
        rng: &mut Rng,
        f: &Faults,
        account: &mut Account,
        data: &[u8],
        out: &mut Vec<Out>,
    ) {
        if data == b"ping" {
            if !self.silent {
                out.push(Out::Send(
                    Duration::ZERO,
                    Wire::Text(b"pong".to_vec()),
                    Note::None,
                ));
            }
            return;
        }
        let text = core::str::from_utf8(data).unwrap_or("");
        let Ok(view) = json::scan(data) else {
            out.push(Out::Violation(format!("server got invalid JSON: {text}")));
            return;
        };
        let Some(id) = view.id else {
            // Notifications: the user's data messages (not charged).
            match text
                .strip_prefix(r#"{"seq":"#)
                .and_then(|r| r.split(',').next())
                .and_then(|n| n.parse().ok())
            {
                Some(seq) => out.push(Out::Data(seq)),
                None => out.push(Out::Violation(format!("server got unknown message {text}"))),
            }
            return;
        };
        // Every request is charged to the account; an empty bucket is
        // answered 10028 and the session closed.
        if account
            .buckets
            .try_acquire(&account.limit, now, data)
            .is_err()
        {
            account.counts.rate_limited += 1;
            self.obstruct(now);
            self.closed = true;
            out.push(Out::Send(
                Duration::ZERO,
                error(id, 10028, "too_many_requests"),
                Note::RateLimited,
            ));
            out.push(Out::Send(Duration::ZERO, Wire::Close(1000), Note::None));
            return;
        }
        let quick = between(rng, Duration::ZERO, Duration::from_millis(50));
        let method = view.method.unwrap_or("");
        if is_private(method) {
            self.check_private(now, method, out, &mut account.counts);
        }
        match method {
            "public/set_heartbeat" => {
                if chance(rng, f.heartbeat_setup_error) {
                    account.counts.heartbeat_setup_errors += 1;
                    out.push(Out::Send(
                        Duration::ZERO,
                        error(id, 11050, "bad_request"),
                        Note::None,
                    ));
                    return;
                }
                let secs = interval_of(text).unwrap_or(10);
                let every = Duration::from_secs(secs);
                out.push(Out::Send(Duration::ZERO, result(id, r#""ok""#), Note::None));
                if self.heartbeat.replace(every).is_none() {
                    out.push(Out::Timer(every, Timer::Heartbeat));
                }
            }
            "public/test" => {
                self.tests_answered += 1;
                self.test_pending = false;
                out.push(Out::Send(
                    Duration::ZERO,
                    result(id, r#"{"version":"sim"}"#),
                    Note::None,
                ));
            }
            "public/auth" => self.auth(now, rng, f, account, id, data, quick, out),
            "private/enable_cancel_on_disconnect" => {
                self.cod_asked = true;
                if !self.cod_client {
                    out.push(Out::Violation(String::from(
                        "cancel-on-disconnect requested by a client that did not ask for it",
                    )));
                }
                if !self.token_valid(now) {
                    out.push(Out::Send(
                        quick,
                        error(id, 13009, "unauthorized"),
                        Note::None,
                    ));
                } else if chance(rng, f.ignore_request) {
                    account.counts.cod_ignored += 1;
                    self.obstruct(now);
                } else if chance(rng, f.cod_error) {
                    account.counts.cod_errors += 1;
                    out.push(Out::Send(quick, error(id, 10040, "retry"), Note::None));
                } else {
                    account.counts.cod_acks += 1;
                    out.push(Out::Send(quick, result(id, r#""ok""#), Note::None));
                }
            }
            "public/subscribe" | "private/subscribe" => {
                let quick = self.in_order(now, quick);
                self.subscribe(now, rng, f, account, id, method, text, quick, out)
            }
            "public/unsubscribe" | "private/unsubscribe" => {
                let quick = self.in_order(now, quick);
                self.unsubscribe(rng, f, account, id, method, text, quick, out)
            }
            "public/get_time" | "private/get_positions" => {
                if method == "private/get_positions" && !self.token_valid(now) {
                    out.push(Out::Send(
                        quick,
                        error(id, 13009, "unauthorized"),
                        Note::None,
                    ));
                } else if !chance(rng, f.ignore_request) {
                    let after = if chance(rng, f.slow_answer) {
                        between(rng, Duration::from_secs(1), Duration::from_secs(40))
                    } else {
                        quick
                    };
                    out.push(Out::Send(after, result(id, "1"), Note::None));
                }
            }
            _ => out.push(Out::Violation(format!("server got unknown request {text}"))),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn auth(
        &mut self,
        now: Instant,
        rng: &mut Rng,
        f: &Faults,
        account: &mut Account,
        id: u64,
        data: &[u8],
        quick: Duration,
        out: &mut Vec<Out>,
    ) {
        let params = json::member(data, "params").unwrap_or(b"{}");
        let grant = json::member(params, "grant_type").and_then(json::as_str);
        let refresh = match grant {
            Some("client_credentials") => None,
            Some("refresh_token") => Some(
                json::member(params, "refresh_token")
                    .and_then(json::as_str)
                    .and_then(|t| t.strip_prefix("rt"))
                    .and_then(|n| n.parse::<u64>().ok())
                    .unwrap_or(0),
            ),
            _ => {
                out.push(Out::Violation(format!("auth with grant {grant:?}")));
                return;
            }
        };
        if refresh.is_some() {
            account.counts.refreshes += 1;
            if self.token.is_none() {
                out.push(Out::Violation(String::from(
                    "refresh_token grant on a socket that never authenticated",
                )));
            }
        }
        if chance(rng, f.ignore_request) {
            account.counts.auth_ignored += 1;
            self.obstruct(now);
            return;
        }
        if chance(rng, f.auth_transient) {
            account.counts.auth_transient += 1;
            self.obstruct(now);
            let (code, msg) = [
                (13028, "temporarily_unavailable"),
                (10040, "retry"),
                (11051, "system_maintenance"),
            ][rng.below(3) as usize];
            out.push(Out::Send(quick, error(id, code, msg), Note::None));
            return;
        }
        match refresh {
            None if f.fatal && chance(rng, f.auth_reject) => {
                account.counts.auth_rejected += 1;
                self.obstruct(now);
                out.push(Out::Fatal);
                out.push(Out::Send(
                    quick,
                    error(id, 13004, "invalid_credentials"),
                    Note::None,
                ));
                return;
            }
            Some(token) => {
                let known = account.refresh_tokens.iter().position(|&t| t == token);
                if known.is_none() || chance(rng, f.refresh_refuse) {
                    account.counts.refresh_refused += 1;
                    self.obstruct(now);
                    out.push(Out::Send(
                        quick,
                        error(id, 13004, "invalid_credentials"),
                        Note::None,
                    ));
                    return;
                }
                if let Some(k) = known {
                    account.refresh_tokens.swap_remove(k);
                }
            }
            None => {}
        }
        let (lo, hi) = account.token_life;
        let life = rng.in_range(lo, hi);
        let n = account.next_token;
        account.next_token += 1;
        account.refresh_tokens.push(n);
        self.token = Some(Token {
            issued: now,
            expires: now + Duration::from_secs(life),
        });
        let after = if chance(rng, f.slow_answer) {
            account.counts.auth_slow += 1;
            self.obstruct(now);
            between(rng, Duration::from_secs(1), Duration::from_secs(40))
        } else {
            quick
        };
        out.push(Out::Send(
            after,
            result(
                id,
                &format!(
                    r#"{{"access_token":"at{n}","expires_in":{life},"refresh_token":"rt{n}","scope":"session:sim","token_type":"bearer"}}"#
                ),
            ),
            Note::None,
        ));
    }

    #[allow(clippy::too_many_arguments)]
    fn subscribe(
        &mut self,
        now: Instant,
        rng: &mut Rng,
        f: &Faults,
        account: &mut Account,
        id: u64,
        method: &str,
        text: &str,
        quick: Duration,
        out: &mut Vec<Out>,
    ) {
        let private = method == "private/subscribe";
        let names = channels_of(text);
        if names.is_empty() {
            out.push(Out::Violation(format!("empty subscribe request {text}")));
        }
        if self.cod_client && self.token.is_some() && !self.cod_asked {
            out.push(Out::Violation(String::from(
                "subscribe before cancel-on-disconnect was requested on an authenticated socket",
            )));
        }
        for name in &names {
            if name.starts_with("user.") != private {
                out.push(Out::Violation(format!(
                    "{name} in a {method} request: public and private channels mixed"
                )));
            }
            if name.ends_with(".raw") && self.token.is_none() {
                out.push(Out::Violation(format!(
                    "{name} requested on a socket that never authenticated"
                )));
            }
            // Excused only where the client cannot know it is still
            // granted: its unsubscribe was ignored or refused, or a stall
            // made a subscribe answer arrive after its deadline.
            let stalled = self.stall.is_some_and(|(from, _)| from <= now);
            if self.granted.iter().any(|g| g == name)
                && !stalled
                && !self.unsub_refused.iter().any(|g| g == name)
            {
                out.push(Out::Violation(format!(
                    "{name} requested again on a socket where it is granted"
                )));
            }
        }
        // Asked again after a refused unsubscribe: if this request is
        // ignored or refused, the client cannot know the server holds it.
        for name in &names {
            if self.unsub_refused.iter().any(|g| g == name)
                && !self.unsub_ignored.iter().any(|g| g == name)
            {
                self.unsub_ignored.push(String::from(*name));
            }
        }
        if chance(rng, f.ignore_subscribe) {
            account.counts.subscribe_ignored += 1;
            return;
        }
        if private && !self.token_valid(now) {
            account.counts.subscribe_unauthorized += 1;
            out.push(Out::Send(
                quick,
                error(id, 13009, "unauthorized"),
                Note::None,
            ));
            return;
        }
        if chance(rng, f.subscribe_error) {
            account.counts.subscribe_errors += 1;
            let (code, msg) = if rng.below(2) == 0 {
                (10040, "retry")
            } else {
                (11050, "bad_request")
            };
            out.push(Out::Send(quick, error(id, code, msg), Note::None));
            return;
        }
        let authorised = self.token_valid(now);
        let mut granted = Vec::new();
        for name in names {
            if self.granted.iter().any(|g| g == name) {
                // Subscribed already (an excused request, see above): listed.
                granted.push(String::from(name));
            } else if name.ends_with(".raw") && !authorised {
                account.counts.raw_unauthorized += 1;
            } else if chance(rng, f.subscribe_omit) {
                account.counts.channels_omitted += 1;
            } else {
                granted.push(String::from(name));
            }
        }
        let list: Vec<String> = granted.iter().map(|g| format!("\"{g}\"")).collect();
        out.push(Out::Send(
            quick,
            result(id, &format!("[{}]", list.join(","))),
            Note::Granted(granted.clone()),
        ));
        for g in granted {
            self.unsub_ignored.retain(|u| *u != g);
            self.unsub_refused.retain(|u| *u != g);
            if !self.granted.contains(&g) {
                self.granted.push(g);
            }
        }
        if !self.feeding && f.feed_every > Duration::ZERO && !self.granted.is_empty() {
            self.feeding = true;
            self.feed_every = f.feed_every;
            out.push(Out::Timer(f.feed_every, Timer::Feed));
        }
    }

    /// `public/unsubscribe` / `private/unsubscribe`: the answer lists the
    /// channels removed. Ignored (`ignore_request`) or refused with a
    /// transient 10040 (`subscribe_error`) sometimes.
    #[allow(clippy::too_many_arguments)]
    fn unsubscribe(
        &mut self,
        rng: &mut Rng,
        f: &Faults,
        account: &mut Account,
        id: u64,
        method: &str,
        text: &str,
        quick: Duration,
        out: &mut Vec<Out>,
    ) {
        let private = method == "private/unsubscribe";
        let names = channels_of(text);
        if names.is_empty() {
            out.push(Out::Violation(format!("empty unsubscribe request {text}")));
        }
        for name in &names {
            if name.starts_with("user.") != private {
                out.push(Out::Violation(format!(
                    "{name} in a {method} request: public and private channels mixed"
                )));
            }
        }
        if chance(rng, f.ignore_request) {
            account.counts.unsubscribe_ignored += 1;
            for name in &names {
                if self.granted.iter().any(|g| g == name) {
                    self.unsub_ignored.push(String::from(*name));
                    self.unsub_refused.push(String::from(*name));
                }
            }
            return;
        }
        if chance(rng, f.subscribe_error) {
            account.counts.unsubscribe_errors += 1;
            for name in &names {
                if self.granted.iter().any(|g| g == name) {
                    self.unsub_refused.push(String::from(*name));
                }
            }
            out.push(Out::Send(quick, error(id, 10040, "retry"), Note::None));
            return;
        }
        account.counts.unsubscribes += 1;
        let removed: Vec<String> = names
            .iter()
            .filter(|n| self.granted.iter().any(|g| g == *n))
            .map(|n| String::from(*n))
            .collect();
        self.granted.retain(|g| !removed.contains(g));
        self.unsub_ignored.retain(|g| !removed.contains(g));
        self.unsub_refused.retain(|g| !removed.contains(g));
        let list: Vec<String> = removed.iter().map(|g| format!("\"{g}\"")).collect();
        out.push(Out::Send(
            quick,
            result(id, &format!("[{}]", list.join(","))),
            Note::Unsubscribed(removed),
        ));
    }

    /// A server timer fired at `now`.
    pub(crate) fn on_timer(
        &mut self,
        now: Instant,
        rng: &mut Rng,
        account: &mut Account,
        timer: Timer,
        out: &mut Vec<Out>,
    ) {
        if self.closed {
            return;
        }
        match timer {
            Timer::Heartbeat => {
                let Some(every) = self.heartbeat else { return };
                if self.silent {
                    return;
                }
                if self.test_pending {
                    // Deribit closes a connection that leaves a
                    // test_request unanswered.
                    account.counts.test_request_closes += 1;
                    self.closed = true;
                    out.push(Out::Send(Duration::ZERO, Wire::Close(1000), Note::None));
                    return;
                }
                let kind = if rng.below(2) == 0 {
                    self.tests_sent += 1;
                    self.test_pending = true;
                    "test_request"
                } else {
                    "heartbeat"
                };
                out.push(Out::Send(
                    Duration::ZERO,
                    Wire::Text(
                        format!(
                            r#"{{"jsonrpc":"2.0","method":"heartbeat","params":{{"type":"{kind}"}}}}"#
                        )
                        .into_bytes(),
                    ),
                    Note::None,
                ));
                out.push(Out::Timer(every, Timer::Heartbeat));
            }
            Timer::Feed => {
                let every = between(rng, self.feed_every / 2, self.feed_every * 3 / 2);
                out.push(Out::Timer(every, Timer::Feed));
                let n = self.granted.len();
                if n == 0 {
                    return;
                }
                let channel = &self.granted[self.feed_next % n];
                self.feed_next += 1;
                // No account data once the token expired.
                if channel.starts_with("user.") && !self.token_valid(now) {
                    return;
                }
                self.feed_seq += 1;
                let msg = format!(
                    r#"{{"jsonrpc":"2.0","method":"subscription","params":{{"channel":"{channel}","data":{}}}}}"#,
                    self.feed_seq
                );
                let note = Note::Feed(channel.clone());
                out.push(Out::Send(
                    Duration::ZERO,
                    Wire::Text(msg.into_bytes()),
                    note,
                ));
            }
            Timer::Fault(fault) => match fault {
                Fault::Stall { .. } => {}
                Fault::Silence { .. } => self.silent = true,
                Fault::Reset { .. } => {
                    self.closed = true;
                    out.push(Out::Send(Duration::ZERO, Wire::Reset, Note::None));
                }
                Fault::Close { code, .. } => {
                    self.closed = true;
                    out.push(Out::Send(Duration::ZERO, Wire::Close(code), Note::None));
                }
                Fault::Crash { .. } => {
                    self.closed = true;
                    out.push(Out::Send(Duration::ZERO, Wire::Eof, Note::None));
                }
                Fault::Oversized { .. } => {
                    out.push(Out::Send(
                        Duration::ZERO,
                        Wire::Text(std::vec![b'x'; self.max_message_size + 1]),
                        Note::None,
                    ));
                }
            },
        }
    }
}
