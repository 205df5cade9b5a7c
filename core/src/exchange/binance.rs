//! Binance-style market streams: a second, very different protocol proving
//! the [`Protocol`] seam.
//!
//! Requests are `{"method":"SUBSCRIBE","params":["btcusdt@trade"],"id":1}`
//! (and `UNSUBSCRIBE`); success is `{"result":null,"id":1}` and grants every
//! stream of the request, an error `{"error":{"code":2,"msg":"..."},"id":1}`
//! refuses them all. No authentication. The server sends WebSocket pings
//! that must be answered with pongs carrying the same payload (the client
//! answers every ping), and closes connections that send more than
//! [`MESSAGES_PER_SEC`] messages per second ([`rate_limit`]).
//!
//! ```
//! use zenws_core::exchange::{binance::Binance, Protocol, Request};
//! let mut out = String::new();
//! Binance.render(3, &Request::Subscribe { channels: &["btcusdt@trade", "ethusdt@depth"], private: false }, &mut out).unwrap();
//! assert_eq!(out, r#"{"method":"SUBSCRIBE","params":["btcusdt@trade","ethusdt@depth"],"id":3}"#);
//! ```

use super::{write_list, ErrorClass, Protocol, Request};
use crate::heartbeat::HeartbeatConfig;
use crate::ratelimit::RateLimit;
use core::fmt;
use core::time::Duration;

/// Incoming messages a connection may send per second.
pub const MESSAGES_PER_SEC: u32 = 5;

/// The Binance market-stream protocol (public data, no credentials).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Binance;

impl Protocol for Binance {
    fn render(&self, id: u64, request: &Request<'_>, out: &mut dyn fmt::Write) -> fmt::Result {
        let (method, channels) = match *request {
            Request::Subscribe { channels, .. } => ("SUBSCRIBE", channels),
            Request::Unsubscribe { channels, .. } => ("UNSUBSCRIBE", channels),
            Request::Authenticate(_) | Request::AfterAuth(_) => return Err(fmt::Error),
        };
        write!(out, r#"{{"method":"{method}","params":["#)?;
        write_list(out, channels)?;
        write!(out, r#"],"id":{id}}}"#)
    }

    fn classify(&self, code: i64) -> ErrorClass {
        classify(code)
    }

    fn rate_limit(&self) -> Option<RateLimit> {
        Some(rate_limit())
    }
}

/// Binance's error classes: -1003 (too many requests) and 429 are rate
/// limits, -1001 (disconnected) and -1007 (timeout) transient, the rest
/// (0–3: bad requests) fatal.
pub fn classify(code: i64) -> ErrorClass {
    match code {
        -1003 | 429 => ErrorClass::RateLimited,
        -1001 | -1007 => ErrorClass::Transient,
        _ => ErrorClass::Fatal,
    }
}

/// The heartbeat: Binance pings the client (answered automatically) and
/// never expects client pings; a client that wants to detect a dead
/// server pings too (Binance answers pings). Default: every 30 s, 10 s timeout.
pub const fn heartbeat() -> HeartbeatConfig {
    HeartbeatConfig::ping(Duration::from_secs(30), Duration::from_secs(10))
}

/// At most [`MESSAGES_PER_SEC`] messages per second, burst of the same.
pub fn rate_limit() -> RateLimit {
    RateLimit::flat(MESSAGES_PER_SEC, MESSAGES_PER_SEC)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json;

    use crate::exchange::{ChannelKind, Grant, NoProtocol};
    use std::string::String;

    #[test]
    fn result_null_grants_all_error_refuses_all() {
        let ok = json::scan(br#"{"result":null,"id":1}"#).unwrap();
        assert!(Binance.granted(&ok, "btcusdt@trade"));
        assert_eq!(Binance.classify(2), ErrorClass::Fatal);
        assert_eq!(Binance.classify(-1003), ErrorClass::RateLimited);
        assert_eq!(Binance.classify(429), ErrorClass::RateLimited);
        assert_eq!(Binance.classify(-1001), ErrorClass::Transient);
        assert_eq!(Binance.classify(-1007), ErrorClass::Transient);
        assert_eq!(Binance.classify(0), ErrorClass::Fatal);
    }

    #[test]
    fn renders_only_stream_requests() {
        let mut out = String::new();
        Binance
            .render(
                9,
                &Request::Unsubscribe {
                    channels: &["btcusdt@trade"],
                    private: false,
                },
                &mut out,
            )
            .unwrap();
        assert_eq!(
            out,
            r#"{"method":"UNSUBSCRIBE","params":["btcusdt@trade"],"id":9}"#
        );
        assert!(Binance
            .render(1, &Request::Authenticate(Grant::Credentials), &mut out)
            .is_err());
        assert!(Binance.render(1, &Request::AfterAuth(0), &mut out).is_err());
        assert!(!Binance.authenticates());
        assert_eq!(Binance.after_auth_steps(), 0);
        assert_eq!(Binance.channel_kind("btcusdt@trade"), ChannelKind::Public);
        assert_eq!(Binance.auth_answer(b"{}").expires_in, None);
    }

    #[test]
    fn rate_limit_and_heartbeat() {
        let l = rate_limit();
        let mut b = l.buckets();
        let t0 = crate::Instant::ZERO;
        for _ in 0..MESSAGES_PER_SEC {
            b.try_acquire(&l, t0, b"{}").unwrap();
        }
        assert_eq!(
            b.try_acquire(&l, t0, b"{}"),
            Err(Duration::from_millis(200))
        );
        assert!(heartbeat().detection_bound().is_some());
    }

    #[test]
    fn optional_and_borrowed_protocols_delegate() {
        let none: Option<Binance> = None;
        let mut out = String::new();
        let req = Request::Subscribe {
            channels: &["a"],
            private: false,
        };
        assert!(none.render(1, &req, &mut out).is_err());
        assert!(NoProtocol.render(1, &req, &mut out).is_err());
        assert_eq!(none.classify(-1003), ErrorClass::Fatal);
        let some = Some(Binance);
        some.render(1, &req, &mut out).unwrap();
        assert_eq!(some.classify(-1003), ErrorClass::RateLimited);
        let by_ref = &Binance;
        assert_eq!(by_ref.classify(-1001), ErrorClass::Transient);
    }
}
