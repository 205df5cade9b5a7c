//! Deribit (JSON-RPC 2.0 over WebSocket): everything specific to it in one
//! place — the session protocol ([`Deribit`]), its error classes, its
//! credit-based rate limit ([`rate_limit`], [`cost`]) and its application
//! heartbeat ([`heartbeat`], [`render_set_heartbeat`], [`render_test`]).
//!
//! | session request | method |
//! |---|---|
//! | authenticate | `public/auth`, `grant_type` `client_credentials` or `refresh_token` |
//! | after auth (optional) | `private/enable_cancel_on_disconnect` (`scope: connection`) |
//! | subscribe | `public/subscribe`, or `private/subscribe` for `user.*` channels (never mixed) |
//! | unsubscribe | `public/unsubscribe` / `private/unsubscribe` |
//!
//! Subscriptions are confirmed from the answer: the `result` array lists the
//! channels granted; a requested channel missing from it was refused.
//! `.raw` channels need an authenticated connection ([`ChannelKind::NeedsAuth`]).
//!
//! Error codes: 10028 `too_many_requests` is a rate limit (Deribit then
//! closes the session: wait for the credits before reconnecting); 10040
//! `retry`, 10041 `settlement_in_progress`, 10047 `matching_engine_queue_full`,
//! 11051 `system_maintenance`, 11094 `internal_server_error`, 13028
//! `temporarily_unavailable`, 13888 `timed_out` and -32000 are transient;
//! everything else (13004 `invalid_credentials`, 13009 `unauthorized`, 11050
//! `bad_request`, ...) is fatal.

use super::{result_lists, write_escaped, write_list, AuthAnswer, ChannelKind, ErrorClass, Grant};
use super::{Protocol, Request};
use crate::heartbeat::{Beat, Dialect, HeartbeatConfig};
use crate::json::{self, JsonRpcView};
use crate::ratelimit::{Costs, LimitClass, RateLimit};
use core::fmt;
use core::time::Duration;

/// Longest client id / secret kept.
pub const CREDENTIAL_CAP: usize = 128;

/// The Deribit session protocol: credentials (optional) and whether to
/// enable cancel-on-disconnect after every authentication. `Debug` never
/// shows the credentials.
///
/// ```
/// use zenws_core::exchange::{deribit::Deribit, ErrorClass, Protocol, Request};
/// let d = Deribit::with_credentials("id", "secret").unwrap().cancel_on_disconnect(true);
/// assert!(d.authenticates());
/// assert_eq!(d.after_auth_steps(), 1);
/// assert_eq!(d.classify(10028), ErrorClass::RateLimited);
/// assert_eq!(d.classify(13028), ErrorClass::Transient);
/// assert_eq!(d.classify(13004), ErrorClass::Fatal);
/// assert!(!format!("{d:?}").contains("secret"));
/// let mut out = String::new();
/// d.render(5, &Request::Subscribe { channels: &["user.orders.any.any.raw"], private: true }, &mut out).unwrap();
/// assert_eq!(out, r#"{"jsonrpc":"2.0","id":5,"method":"private/subscribe","params":{"channels":["user.orders.any.any.raw"]}}"#);
/// ```
#[derive(Clone, Default)]
pub struct Deribit {
    credentials: Option<(
        heapless::String<CREDENTIAL_CAP>,
        heapless::String<CREDENTIAL_CAP>,
    )>,
    cancel_on_disconnect: bool,
}

impl fmt::Debug for Deribit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Deribit")
            .field(
                "credentials",
                &self.credentials.as_ref().map(|_| "<redacted>"),
            )
            .field("cancel_on_disconnect", &self.cancel_on_disconnect)
            .finish()
    }
}

/// A credential longer than [`CREDENTIAL_CAP`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CredentialTooLong;

impl Deribit {
    /// Public data only: no authentication (`.raw` and `user.*` channels
    /// are reported rejected, [`Rejection::NeedsAuth`](crate::session::Rejection::NeedsAuth)).
    pub fn public() -> Self {
        Deribit::default()
    }

    /// Authenticate every connection with `client_credentials`, then keep
    /// the token fresh with `refresh_token`.
    pub fn with_credentials(
        client_id: &str,
        client_secret: &str,
    ) -> Result<Self, CredentialTooLong> {
        let mut id = heapless::String::new();
        let mut secret = heapless::String::new();
        id.push_str(client_id).map_err(|_| CredentialTooLong)?;
        secret
            .push_str(client_secret)
            .map_err(|_| CredentialTooLong)?;
        Ok(Deribit {
            credentials: Some((id, secret)),
            cancel_on_disconnect: false,
        })
    }

    /// Enable cancel-on-disconnect (scope `connection`) after every
    /// authentication, on every connection: if the socket drops, Deribit
    /// cancels this connection's orders.
    pub fn cancel_on_disconnect(mut self, on: bool) -> Self {
        self.cancel_on_disconnect = on;
        self
    }

    /// Whether cancel-on-disconnect is requested (after-auth step 0).
    pub fn cancels_on_disconnect(&self) -> bool {
        self.cancel_on_disconnect
    }
}

fn header(out: &mut dyn fmt::Write, id: u64, method: &str) -> fmt::Result {
    write!(
        out,
        r#"{{"jsonrpc":"2.0","id":{id},"method":"{method}","params":"#
    )
}

impl Protocol for Deribit {
    fn render(&self, id: u64, request: &Request<'_>, out: &mut dyn fmt::Write) -> fmt::Result {
        match *request {
            Request::Authenticate(grant) => {
                header(out, id, "public/auth")?;
                match grant {
                    Grant::Credentials => {
                        let (cid, secret) = self.credentials.as_ref().ok_or(fmt::Error)?;
                        out.write_str(r#"{"grant_type":"client_credentials","client_id":""#)?;
                        write_escaped(out, cid)?;
                        out.write_str(r#"","client_secret":""#)?;
                        write_escaped(out, secret)?;
                    }
                    Grant::Refresh(token) => {
                        out.write_str(r#"{"grant_type":"refresh_token","refresh_token":""#)?;
                        write_escaped(out, token)?;
                    }
                }
                out.write_str("\"}}")
            }
            Request::AfterAuth(0) if self.cancel_on_disconnect => {
                header(out, id, "private/enable_cancel_on_disconnect")?;
                out.write_str(r#"{"scope":"connection"}}"#)
            }
            Request::AfterAuth(_) => Err(fmt::Error),
            Request::Subscribe { channels, private }
            | Request::Unsubscribe { channels, private } => {
                let verb = match request {
                    Request::Subscribe { .. } => "subscribe",
                    _ => "unsubscribe",
                };
                let scope = if private { "private" } else { "public" };
                write!(
                    out,
                    r#"{{"jsonrpc":"2.0","id":{id},"method":"{scope}/{verb}","params":{{"channels":["#
                )?;
                write_list(out, channels)?;
                out.write_str("]}}")
            }
        }
    }

    fn authenticates(&self) -> bool {
        self.credentials.is_some()
    }

    fn after_auth_steps(&self) -> u8 {
        u8::from(self.cancel_on_disconnect)
    }

    fn auth_answer<'a>(&self, result: &'a [u8]) -> AuthAnswer<'a> {
        AuthAnswer {
            expires_in: json::member(result, "expires_in")
                .and_then(json::as_u64)
                .map(Duration::from_secs),
            refresh_token: json::member(result, "refresh_token").and_then(json::as_str),
        }
    }

    fn granted(&self, answer: &JsonRpcView<'_>, channel: &str) -> bool {
        result_lists(answer, channel)
    }

    fn classify(&self, code: i64) -> ErrorClass {
        classify(code)
    }

    fn rate_limit(&self) -> Option<RateLimit> {
        Some(rate_limit())
    }

    fn channel_kind(&self, channel: &str) -> ChannelKind {
        if channel.starts_with("user.") {
            ChannelKind::Private
        } else if channel.ends_with(".raw") {
            ChannelKind::NeedsAuth
        } else {
            ChannelKind::Public
        }
    }
}

/// Deribit's error classes (see the module docs).
pub fn classify(code: i64) -> ErrorClass {
    match code {
        10028 => ErrorClass::RateLimited,
        10040 | 10041 | 10047 | 11051 | 11094 | 13028 | 13888 | -32000 => ErrorClass::Transient,
        _ => ErrorClass::Fatal,
    }
}

/// Deribit's application-heartbeat dialect: `public/set_heartbeat`,
/// `heartbeat` notifications, `public/test` for each `test_request`.
pub static DIALECT: Dialect = Dialect {
    name: "deribit",
    min_interval_secs: 10,
    setup: render_set_heartbeat,
    classify: classify_heartbeat,
    reply: render_test,
};

/// The application heartbeat Deribit expects: `public/set_heartbeat` with
/// `interval_secs` (minimum 10) after every open, `public/test` for every
/// `test_request`; a miss after `interval + 5 s` of silence.
pub const fn heartbeat(interval_secs: u32) -> HeartbeatConfig {
    HeartbeatConfig::application(interval_secs, Duration::from_secs(5), &DIALECT)
}

fn classify_heartbeat(view: &JsonRpcView<'_>) -> Beat {
    if is_test_request(view) {
        Beat::TestRequest
    } else if is_heartbeat(view) {
        Beat::Alive
    } else {
        Beat::Other
    }
}

/// Whether a message is Deribit's `heartbeat` notification (either type).
pub fn is_heartbeat(view: &JsonRpcView<'_>) -> bool {
    view.method == Some("heartbeat")
}

/// Whether a message is a `test_request` heartbeat (answer with `public/test`).
pub fn is_test_request(view: &JsonRpcView<'_>) -> bool {
    is_heartbeat(view) && view.params_type == Some("test_request")
}

/// `public/set_heartbeat` with id `id`.
pub fn render_set_heartbeat(out: &mut dyn fmt::Write, id: u64, interval_secs: u32) -> fmt::Result {
    header(out, id, "public/set_heartbeat")?;
    write!(out, r#"{{"interval":{interval_secs}}}}}"#)
}

/// `public/test` with id `id` (the answer to a `test_request`).
pub fn render_test(out: &mut dyn fmt::Write, id: u64) -> fmt::Result {
    header(out, id, "public/test")?;
    out.write_str("{}}")
}

/// Deribit's published default credits for a non-matching-engine request.
pub const REQUEST_COST: u32 = 500;
/// Default credit pool (burst of 100 requests).
pub const CAPACITY: u32 = 50_000;
/// Default refill, credits per second (20 requests per second sustained).
pub const REFILL_PER_SEC: u32 = 10_000;
/// Matching-engine requests (order entry): burst 20, 5 per second.
pub const ORDER_BURST: u32 = 20;
/// Matching-engine requests per second sustained.
pub const ORDERS_PER_SEC: u32 = 5;
/// Subscribe requests: 3,000 credits each from a pool of 30,000 refilled
/// at 10,000 per second (burst 10, about 3.3 per second).
pub const SUBSCRIBE_COST: u32 = 3_000;
/// The subscribe pool.
pub const SUBSCRIBE_CAPACITY: u32 = 30_000;

/// Whether a Deribit method is a matching-engine request (order entry and
/// cancellation). Accepts the method with or without a leading `/api/v2/`.
///
/// ```
/// use zenws_core::exchange::deribit::is_matching_engine;
/// assert!(is_matching_engine("private/buy"));
/// assert!(is_matching_engine("private/cancel_all_by_currency"));
/// assert!(!is_matching_engine("public/get_order_book"));
/// ```
pub fn is_matching_engine(method: &str) -> bool {
    let m = method.strip_prefix("/api/v2/").unwrap_or(method);
    matches!(
        m,
        "private/buy"
            | "private/sell"
            | "private/close_position"
            | "private/verify_block_trade"
            | "private/execute_block_trade"
            | "private/mass_quote"
    ) || m.starts_with("private/edit")
        || m.starts_with("private/cancel")
}

fn method_of(msg: &[u8]) -> Option<&str> {
    json::scan(msg).ok().and_then(|v| v.method)
}

fn is_subscribe(m: &str) -> bool {
    matches!(m, "public/subscribe" | "private/subscribe")
}

/// Credits one outbound message costs in each pool (one scan of the
/// message): `[shared, orders, subscribe]` — 500 in the shared pool for
/// every request but order entry (1 in the order pool) and subscribe (3,000
/// in the subscribe pool); a message that does not parse costs 500 too (the
/// server still counts it).
///
/// ```
/// use zenws_core::exchange::deribit::cost;
/// assert_eq!(cost(br#"{"jsonrpc":"2.0","id":1,"method":"public/test"}"#), [500, 0, 0]);
/// assert_eq!(cost(br#"{"id":2,"method":"private/buy","params":{}}"#), [0, 1, 0]);
/// assert_eq!(cost(br#"{"id":3,"method":"public/subscribe","params":{}}"#), [0, 0, 3_000]);
/// assert_eq!(cost(b"not json"), [500, 0, 0]);
/// ```
pub fn cost(msg: &[u8]) -> Costs {
    match method_of(msg) {
        Some(m) if is_matching_engine(m) => [0, 1, 0],
        Some(m) if is_subscribe(m) => [0, 0, SUBSCRIBE_COST],
        _ => [REQUEST_COST, 0, 0],
    }
}

/// Deribit's default-tier limits as three pools: requests (50,000 credits,
/// 10,000/s, 500 each), order entry (burst 20, 5/s) and subscribe (30,000
/// credits, 10,000/s, 3,000 each). The pools persist across reconnects and
/// restarts of a client, as Deribit's do (they are per account).
///
/// ```
/// use zenws_core::exchange::deribit::rate_limit;
/// use zenws_core::Instant;
/// let limit = rate_limit();
/// let mut buckets = limit.buckets();
/// let order = br#"{"jsonrpc":"2.0","id":1,"method":"private/buy","params":{}}"#;
/// for _ in 0..20 {
///     assert!(buckets.try_acquire(&limit, Instant::ZERO, order).is_ok());
/// }
/// assert!(buckets.try_acquire(&limit, Instant::ZERO, order).is_err()); // the 21st order waits
/// let query = br#"{"jsonrpc":"2.0","id":2,"method":"public/get_time"}"#;
/// assert!(buckets.try_acquire(&limit, Instant::ZERO, query).is_ok()); // other requests don't
/// ```
pub fn rate_limit() -> RateLimit {
    RateLimit {
        capacity: CAPACITY,
        refill_per_sec: REFILL_PER_SEC,
        cost,
        classes: [
            Some(LimitClass {
                capacity: ORDER_BURST,
                refill_per_sec: ORDERS_PER_SEC,
            }),
            Some(LimitClass {
                capacity: SUBSCRIBE_CAPACITY,
                refill_per_sec: REFILL_PER_SEC,
            }),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::{Rejection, Session, SessionConfig, SessionEvent, TransmitKind};
    use crate::Instant;
    extern crate std;
    use std::format;
    use std::string::String;

    fn t(ms: u64) -> Instant {
        Instant::from_millis(ms)
    }

    #[test]
    fn renders_both_grants_and_cod() {
        let d = Deribit::with_credentials("i\"d", "s")
            .unwrap()
            .cancel_on_disconnect(true);
        let mut out = String::new();
        d.render(1, &Request::Authenticate(Grant::Credentials), &mut out)
            .unwrap();
        assert_eq!(
            out,
            r#"{"jsonrpc":"2.0","id":1,"method":"public/auth","params":{"grant_type":"client_credentials","client_id":"i\"d","client_secret":"s"}}"#
        );
        out.clear();
        d.render(2, &Request::Authenticate(Grant::Refresh("rt")), &mut out)
            .unwrap();
        assert_eq!(
            out,
            r#"{"jsonrpc":"2.0","id":2,"method":"public/auth","params":{"grant_type":"refresh_token","refresh_token":"rt"}}"#
        );
        out.clear();
        d.render(3, &Request::AfterAuth(0), &mut out).unwrap();
        assert!(out.contains("private/enable_cancel_on_disconnect"), "{out}");
        assert!(Deribit::public()
            .render(4, &Request::AfterAuth(0), &mut out)
            .is_err());
        assert!(Deribit::public()
            .render(
                4,
                &Request::Authenticate(Grant::Credentials),
                &mut String::new()
            )
            .is_err());
    }

    #[test]
    fn public_and_private_apart_raw_only_when_authenticated() {
        let d = Deribit::public();
        let mut s: Session<8, 64, 4> = Session::new(SessionConfig::default());
        for c in [
            "book.BTC.100ms",
            "trades.BTC.raw",
            "user.orders.any.any.raw",
            "ticker.ETH.100ms",
        ] {
            s.subscribe(c).unwrap();
        }
        s.on_open(t(0), 1, &d);
        let mut out = String::new();
        let tx = s.poll_transmit(t(0), &d, &mut out).unwrap();
        assert_eq!(tx.kind, TransmitKind::Subscribe(2));
        assert!(
            out.contains(r#"["book.BTC.100ms","ticker.ETH.100ms"]"#),
            "{out}"
        );
        let mut rejected = std::vec::Vec::new();
        while let Some(e) = s.poll_event() {
            if let SessionEvent::SubscriptionRejected { index, reason, .. } = e {
                rejected.push((s.channel(index).unwrap().to_string(), reason));
            }
        }
        use std::string::ToString;
        assert_eq!(
            rejected,
            [
                ("trades.BTC.raw".to_string(), Rejection::NeedsAuth),
                ("user.orders.any.any.raw".to_string(), Rejection::NeedsAuth)
            ]
        );
        // The server grants one of the two: the other is reported.
        let answer = format!(r#"{{"id":{},"result":["book.BTC.100ms"]}}"#, tx.id);
        assert!(s.on_message(t(1), answer.as_bytes(), &d));
        let events: std::vec::Vec<_> = core::iter::from_fn(|| s.poll_event()).collect();
        assert_eq!(
            events,
            [
                SessionEvent::SubscriptionRejected {
                    epoch: 1,
                    index: 3,
                    reason: Rejection::Refused { code: None }
                },
                SessionEvent::Restored {
                    epoch: 1,
                    granted: 1,
                    rejected: 3
                }
            ]
        );
    }

    #[test]
    fn debug_never_shows_credentials_or_tokens() {
        let d = Deribit::with_credentials("my-client-id", "my-secret").unwrap();
        let shown = format!("{d:?} {:?}", d.clone().cancel_on_disconnect(true));
        assert!(
            !shown.contains("my-secret") && !shown.contains("my-client-id"),
            "{shown}"
        );
        assert!(shown.contains("<redacted>"), "{shown}");
        assert!(format!("{:?}", Deribit::public()).contains("credentials: None"));
        let g = Grant::Refresh("refresh-secret");
        assert_eq!(format!("{g:?}"), "refresh_token");
        assert_eq!(format!("{:?}", Grant::Credentials), "client_credentials");
        let r = Request::Authenticate(g);
        assert!(!format!("{r:?}").contains("refresh-secret"), "{r:?}");
        let a = AuthAnswer {
            expires_in: Some(Duration::from_secs(1)),
            refresh_token: Some("tok-secret"),
        };
        assert!(!format!("{a:?}").contains("tok-secret"), "{a:?}");
    }

    #[test]
    fn credentials_are_bounded_and_escaped() {
        assert_eq!(
            Deribit::with_credentials(&"x".repeat(CREDENTIAL_CAP + 1), "s").unwrap_err(),
            CredentialTooLong
        );
        assert_eq!(
            Deribit::with_credentials("i", &"x".repeat(CREDENTIAL_CAP + 1)).unwrap_err(),
            CredentialTooLong
        );
        assert!(Deribit::with_credentials(&"x".repeat(CREDENTIAL_CAP), "s").is_ok());
        let d = Deribit::with_credentials("a\\b", "c\nd").unwrap();
        let mut out = String::new();
        d.render(1, &Request::Authenticate(Grant::Credentials), &mut out)
            .unwrap();
        assert!(json::scan(out.as_bytes()).is_ok(), "{out}");
        assert!(
            out.contains(r#""client_id":"a\\b","client_secret":"c\u000ad""#),
            "{out}"
        );
        // Channel names are escaped too.
        out.clear();
        d.render(
            2,
            &Request::Unsubscribe {
                channels: &["a\"b", "c"],
                private: false,
            },
            &mut out,
        )
        .unwrap();
        assert_eq!(
            out,
            r#"{"jsonrpc":"2.0","id":2,"method":"public/unsubscribe","params":{"channels":["a\"b","c"]}}"#
        );
    }

    #[test]
    fn error_classes_and_channel_kinds() {
        for code in [10040, 10041, 10047, 11051, 11094, 13028, 13888, -32000] {
            assert_eq!(classify(code), ErrorClass::Transient, "{code}");
        }
        assert_eq!(classify(10028), ErrorClass::RateLimited);
        for code in [13004, 13009, 11050, 0, -32602, 10029] {
            assert_eq!(classify(code), ErrorClass::Fatal, "{code}");
        }
        let d = Deribit::public();
        assert_eq!(
            d.channel_kind("user.orders.any.any.raw"),
            ChannelKind::Private
        );
        assert_eq!(d.channel_kind("user.portfolio.btc"), ChannelKind::Private);
        assert_eq!(
            d.channel_kind("trades.BTC-PERPETUAL.raw"),
            ChannelKind::NeedsAuth
        );
        assert_eq!(
            d.channel_kind("book.BTC-PERPETUAL.100ms"),
            ChannelKind::Public
        );
        assert_eq!(
            d.channel_kind("deribit_price_index.btc_usd"),
            ChannelKind::Public
        );
        assert!(!d.authenticates());
        assert_eq!(d.after_auth_steps(), 0);
        assert!(d.cancel_on_disconnect(true).cancels_on_disconnect());
    }

    #[test]
    fn granted_only_when_listed() {
        let d = Deribit::public();
        let v = json::scan(br#"{"id":1,"result":["a.1","b.2"]}"#).unwrap();
        assert!(d.granted(&v, "a.1") && d.granted(&v, "b.2"));
        assert!(!d.granted(&v, "a"), "no prefix match");
        assert!(!d.granted(&json::scan(br#"{"id":1,"result":[]}"#).unwrap(), "a.1"));
        assert!(!d.granted(&json::scan(br#"{"id":1,"result":null}"#).unwrap(), "a.1"));
    }

    #[test]
    fn subscribe_costs_its_own_pool_not_the_shared_one() {
        assert_eq!(
            cost(br#"{"id":1,"method":"public/subscribe","params":{}}"#),
            [0, 0, SUBSCRIBE_COST]
        );
        assert_eq!(
            cost(br#"{"id":1,"method":"private/subscribe","params":{}}"#),
            [0, 0, SUBSCRIBE_COST]
        );
        assert_eq!(
            cost(br#"{"id":1,"method":"public/unsubscribe","params":{}}"#),
            [REQUEST_COST, 0, 0]
        );
        assert_eq!(cost(br#"{"id":1,"method":"private/edit"}"#), [0, 1, 0]);
    }

    #[test]
    fn auth_answer_reads_lifetime_and_refresh_token() {
        let d = Deribit::public();
        let a = d.auth_answer(
            br#"{"access_token":"a","expires_in":900,"refresh_token":"r","scope":"x"}"#,
        );
        assert_eq!(a.expires_in, Some(Duration::from_secs(900)));
        assert_eq!(a.refresh_token, Some("r"));
        assert!(!format!("{a:?}").contains("\"r\""));
    }
}
