//! The session's rules, one by one, against the Deribit and Binance
//! protocols: on-open order, token refresh, auth error classes, rate limits,
//! confirmed subscriptions, lossless rejection reporting, request ids.

use super::*;
use crate::exchange::binance::Binance;
use crate::exchange::deribit::Deribit;
use crate::exchange::NoProtocol;
use std::format;
use std::string::{String, ToString};
use std::vec::Vec;

type S = Session<64, 64, 8>;

fn t(ms: u64) -> Instant {
    Instant::from_millis(ms)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn creds() -> Deribit {
    Deribit::with_credentials("client-id", "SECRET-xyz").unwrap()
}

fn cod() -> Deribit {
    creds().cancel_on_disconnect(true)
}

/// The next rendered message, if any.
fn tx<P: Protocol, const A: usize, const B: usize, const C: usize>(
    s: &mut Session<A, B, C>,
    now: Instant,
    p: &P,
) -> Option<(Transmit, String)> {
    let mut out = String::new();
    let t = s.poll_transmit(now, p, &mut out)?;
    Some((t, out))
}

/// Every message due at `now`.
fn all_tx<P: Protocol, const A: usize, const B: usize, const C: usize>(
    s: &mut Session<A, B, C>,
    now: Instant,
    p: &P,
) -> Vec<(Transmit, String)> {
    core::iter::from_fn(|| tx(s, now, p)).collect()
}

fn events<const A: usize, const B: usize, const C: usize>(
    s: &mut Session<A, B, C>,
) -> Vec<SessionEvent> {
    core::iter::from_fn(|| s.poll_event()).collect()
}

fn signals<const A: usize, const B: usize, const C: usize>(
    s: &mut Session<A, B, C>,
) -> Vec<Signal> {
    core::iter::from_fn(|| s.take_signal()).collect()
}

fn ok(id: u64, result: &str) -> String {
    format!(r#"{{"jsonrpc":"2.0","id":{id},"result":{result}}}"#)
}

fn err(id: u64, code: i64) -> String {
    format!(r#"{{"jsonrpc":"2.0","id":{id},"error":{{"code":{code},"message":"m{code}"}}}}"#)
}

const TOKENS: &str = r#"{"access_token":"ACCESS-tok","refresh_token":"REFRESH-tok","expires_in":900,"token_type":"bearer"}"#;

/// Open on epoch 1 at `now` and answer the authentication with [`TOKENS`].
fn open_authenticated<P: Protocol>(s: &mut S, now: Instant, p: &P) {
    s.on_open(now, 1, p);
    let (a, _) = tx(s, now, p).expect("auth");
    assert_eq!(a.kind, TransmitKind::Authenticate { refresh: false });
    assert!(s.on_message(now, ok(a.id, TOKENS).as_bytes(), p));
    assert!(s.is_authenticated());
}

/// Answer a subscribe request granting every channel it named.
fn grant_all(s: &mut S, now: Instant, p: &impl Protocol, t: &Transmit, text: &str) {
    let start = text.find('[').unwrap();
    let end = text.find(']').unwrap();
    let answer = ok(t.id, &text[start..=end]);
    assert!(s.on_message(now, answer.as_bytes(), p));
}

fn rejected_names(s: &mut S) -> Vec<(String, Rejection)> {
    let mut out = Vec::new();
    for e in events(s) {
        if let SessionEvent::SubscriptionRejected { index, reason, .. } = e {
            out.push((s.channel(index).unwrap().to_string(), reason));
        }
    }
    out
}

// ---- on-open order ----

#[test]
fn auth_then_cancel_on_disconnect_then_public_then_private_batches() {
    let d = cod();
    let mut s = S::new(SessionConfig::default());
    for c in [
        "book.BTC.100ms",
        "user.orders.BTC.raw",
        "trades.BTC.raw",
        "ticker.ETH.100ms",
    ] {
        s.subscribe(c).unwrap();
    }
    s.on_open(t(0), 1, &d);
    let (a, text) = tx(&mut s, t(0), &d).unwrap();
    assert_eq!(
        a,
        Transmit {
            epoch: 1,
            id: SESSION_ID_BASE,
            kind: TransmitKind::Authenticate { refresh: false }
        }
    );
    assert!(
        text.contains(r#""method":"public/auth""#) && text.contains("client_credentials"),
        "{text}"
    );
    // Nothing else before the answer: not the after-auth step, not a subscribe.
    assert!(tx(&mut s, t(10), &d).is_none());
    assert_eq!(s.poll_timeout(), Some(t(30_000)), "only the auth deadline");
    assert!(
        s.on_message(t(10), ok(a.id, TOKENS).as_bytes(), &d),
        "tokens are consumed"
    );
    assert_eq!(
        events(&mut s),
        [SessionEvent::Authenticated {
            epoch: 1,
            refresh: false,
            expires_in: Some(secs(900))
        }]
    );
    let (c, text) = tx(&mut s, t(10), &d).unwrap();
    assert_eq!(c.kind, TransmitKind::AfterAuth(0));
    assert!(
        text.contains("private/enable_cancel_on_disconnect"),
        "{text}"
    );
    assert!(
        tx(&mut s, t(20), &d).is_none(),
        "subscribe waits for the step's answer"
    );
    assert!(s.on_message(t(20), ok(c.id, r#""ok""#).as_bytes(), &d));
    assert_eq!(
        events(&mut s),
        [SessionEvent::AfterAuth {
            epoch: 1,
            step: 0,
            error: None
        }]
    );
    let sent = all_tx(&mut s, t(20), &d);
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert_eq!(sent[0].0.kind, TransmitKind::Subscribe(3));
    assert!(sent[0].1.contains(r#""method":"public/subscribe""#));
    assert!(
        sent[0]
            .1
            .contains(r#"["book.BTC.100ms","trades.BTC.raw","ticker.ETH.100ms"]"#),
        "{}",
        sent[0].1
    );
    assert_eq!(sent[1].0.kind, TransmitKind::Subscribe(1));
    assert!(sent[1]
        .1
        .contains(r#""method":"private/subscribe","params":{"channels":["user.orders.BTC.raw"]}"#));
    // Every id distinct and in the session's range.
    let ids = [a.id, c.id, sent[0].0.id, sent[1].0.id];
    assert!(ids.iter().all(|&i| i >= SESSION_ID_BASE));
    assert!(ids.windows(2).all(|w| w[0] != w[1]));
    // Sent is not restored: only answers confirm.
    assert!(events(&mut s).is_empty());
    grant_all(&mut s, t(30), &d, &sent[1].0, &sent[1].1);
    assert!(events(&mut s).is_empty(), "one batch is still unanswered");
    grant_all(&mut s, t(30), &d, &sent[0].0, &sent[0].1);
    assert_eq!(
        events(&mut s),
        [SessionEvent::Restored {
            epoch: 1,
            granted: 4,
            rejected: 0
        }]
    );
    assert_eq!(s.granted().count(), 4);
}

#[test]
fn failed_or_silent_after_auth_step_is_reported_and_subscriptions_go_on() {
    let d = cod();
    let mut s = S::new(SessionConfig::default());
    s.subscribe("book.BTC.100ms").unwrap();
    open_authenticated(&mut s, t(0), &d);
    events(&mut s);
    let (c, _) = tx(&mut s, t(0), &d).unwrap();
    assert!(s.on_message(t(5), err(c.id, 11050).as_bytes(), &d));
    assert_eq!(
        events(&mut s),
        [SessionEvent::AfterAuth {
            epoch: 1,
            step: 0,
            error: Some(Some(11050))
        }]
    );
    assert_eq!(
        tx(&mut s, t(5), &d).unwrap().0.kind,
        TransmitKind::Subscribe(1)
    );
    assert!(
        signals(&mut s).is_empty(),
        "a failed step does not drop the socket"
    );

    // Second socket: the step times out.
    s.on_disconnect();
    open_authenticated(&mut s, t(100), &d);
    events(&mut s);
    let (c2, _) = tx(&mut s, t(100), &d).unwrap();
    assert_eq!(c2.kind, TransmitKind::AfterAuth(0));
    assert_eq!(s.poll_timeout(), Some(t(30_100)));
    s.handle_timeout(t(30_099));
    assert!(events(&mut s).is_empty());
    s.handle_timeout(t(30_100));
    assert_eq!(
        events(&mut s),
        [SessionEvent::AfterAuth {
            epoch: 1,
            step: 0,
            error: Some(None)
        }]
    );
    assert_eq!(
        tx(&mut s, t(30_100), &d).unwrap().0.kind,
        TransmitKind::Subscribe(1)
    );
}

#[test]
fn without_credentials_no_auth_and_no_after_auth_step() {
    let d = Deribit::public().cancel_on_disconnect(true);
    let mut s = S::new(SessionConfig::default());
    s.subscribe("book.BTC.100ms").unwrap();
    s.on_open(t(0), 3, &d);
    let (b, text) = tx(&mut s, t(0), &d).unwrap();
    assert_eq!(b.kind, TransmitKind::Subscribe(1));
    assert_eq!(b.epoch, 3);
    assert!(
        !text.contains("auth") && !text.contains("cancel_on_disconnect"),
        "{text}"
    );
    assert!(!s.is_authenticated());
}

// ---- token refresh ----

#[test]
fn refresh_at_expiry_minus_margin_on_the_same_socket() {
    let d = creds();
    let mut s = S::new(SessionConfig::default());
    s.subscribe("book.BTC.100ms").unwrap();
    open_authenticated(&mut s, t(1_000), &d);
    // 900 s token, 60 s margin, answered at 1 s.
    assert_eq!(s.refresh_at(), Some(t(841_000)));
    let (b, text) = tx(&mut s, t(1_000), &d).unwrap();
    grant_all(&mut s, t(1_000), &d, &b, &text);
    events(&mut s);
    assert_eq!(s.poll_timeout(), Some(t(841_000)));
    assert!(
        tx(&mut s, t(840_999), &d).is_none(),
        "not a nanosecond early"
    );
    let (r, text) = tx(&mut s, t(841_000), &d).unwrap();
    assert_eq!(r.kind, TransmitKind::Authenticate { refresh: true });
    assert_eq!(r.epoch, 1, "same socket");
    assert!(
        text.contains(r#""grant_type":"refresh_token","refresh_token":"REFRESH-tok""#),
        "{text}"
    );
    assert!(!text.contains("SECRET"), "{text}");
    assert!(tx(&mut s, t(841_000), &d).is_none(), "one refresh, not two");
    assert_eq!(s.refresh_at(), None);
    let answer = ok(
        r.id,
        r#"{"access_token":"A2","refresh_token":"R2","expires_in":600}"#,
    );
    assert!(s.on_message(t(841_500), answer.as_bytes(), &d));
    assert_eq!(
        events(&mut s),
        [SessionEvent::TokenRefreshed {
            epoch: 1,
            expires_in: Some(secs(600))
        }]
    );
    assert!(signals(&mut s).is_empty());
    // The subscriptions were not touched.
    assert_eq!(s.granted().count(), 1);
    // Rescheduled from the new answer, with the new token.
    assert_eq!(s.refresh_at(), Some(t(841_500 + 540_000)));
    let (r2, text) = tx(&mut s, t(841_500 + 540_000), &d).unwrap();
    assert_eq!(r2.kind, TransmitKind::Authenticate { refresh: true });
    assert!(text.contains(r#""refresh_token":"R2""#), "{text}");
}

#[test]
fn short_tokens_refresh_at_half_life() {
    let d = creds();
    let mut s = S::new(SessionConfig {
        refresh_margin: secs(60),
        ..SessionConfig::default()
    });
    s.on_open(t(0), 1, &d);
    let (a, _) = tx(&mut s, t(0), &d).unwrap();
    s.on_message(
        t(0),
        ok(a.id, r#"{"refresh_token":"r","expires_in":100}"#).as_bytes(),
        &d,
    );
    // min(60, 100/2) = 50 s before expiry.
    assert_eq!(s.refresh_at(), Some(t(50_000)));
    // No lifetime in the answer: nothing scheduled.
    s.on_disconnect();
    s.on_open(t(0), 2, &d);
    let (a, _) = tx(&mut s, t(0), &d).unwrap();
    s.on_message(t(0), ok(a.id, r#"{"access_token":"x"}"#).as_bytes(), &d);
    assert!(s.is_authenticated());
    assert_eq!(s.refresh_at(), None);
}

#[test]
fn refused_refresh_falls_back_to_the_credentials() {
    let d = creds();
    let mut s = S::new(SessionConfig::default());
    open_authenticated(&mut s, t(0), &d);
    events(&mut s);
    let at = s.refresh_at().unwrap();
    assert!(tx(&mut s, at, &d)
        .is_some_and(|(r, _)| r.kind == TransmitKind::Authenticate { refresh: true }));
    let r = SESSION_ID_BASE + 1;
    assert!(s.on_message(at, err(r, 13004).as_bytes(), &d));
    assert!(
        signals(&mut s).is_empty(),
        "a refused refresh is not a refused client"
    );
    assert!(!events(&mut s)
        .iter()
        .any(|e| matches!(e, SessionEvent::AuthRejected { .. })));
    let (c, text) = tx(&mut s, at, &d).expect("credentials at once");
    assert_eq!(c.kind, TransmitKind::Authenticate { refresh: false });
    assert_eq!(c.epoch, 1);
    assert!(
        text.contains("client_credentials") && text.contains("SECRET-xyz"),
        "{text}"
    );
    assert!(!text.contains("REFRESH-tok"));
    assert!(s.on_message(at, ok(c.id, TOKENS).as_bytes(), &d));
    assert_eq!(
        events(&mut s),
        [SessionEvent::TokenRefreshed {
            epoch: 1,
            expires_in: Some(secs(900))
        }]
    );
    assert!(s.is_authenticated());
}

#[test]
fn refused_credentials_after_a_refused_refresh_fail_the_client() {
    let d = creds();
    let mut s = S::new(SessionConfig::default());
    open_authenticated(&mut s, t(0), &d);
    events(&mut s);
    let at = s.refresh_at().unwrap();
    let (r, _) = tx(&mut s, at, &d).unwrap();
    s.on_message(at, err(r.id, 13009).as_bytes(), &d);
    let (c, _) = tx(&mut s, at, &d).unwrap();
    s.on_message(at, err(c.id, 13004).as_bytes(), &d);
    assert_eq!(signals(&mut s), [Signal::Drop(Error::AuthRejected)]);
    assert_eq!(
        events(&mut s),
        [SessionEvent::AuthRejected {
            epoch: 1,
            code: Some(13004)
        }]
    );
}

#[test]
fn transient_refresh_error_retried_with_the_refresh_token() {
    let d = creds();
    let mut s = S::new(SessionConfig::default());
    open_authenticated(&mut s, t(0), &d);
    events(&mut s);
    let at = s.refresh_at().unwrap();
    let (r, _) = tx(&mut s, at, &d).unwrap();
    assert!(s.on_message(at, err(r.id, 13028).as_bytes(), &d));
    assert_eq!(
        events(&mut s),
        [SessionEvent::AuthRetrying {
            epoch: 1,
            code: Some(13028),
            delay: ms(500)
        }]
    );
    assert!(signals(&mut s).is_empty());
    assert_eq!(s.poll_timeout(), Some(at + ms(500)));
    assert!(tx(&mut s, at + ms(499), &d).is_none());
    let (r2, text) = tx(&mut s, at + ms(500), &d).unwrap();
    assert_eq!(r2.kind, TransmitKind::Authenticate { refresh: true });
    assert!(text.contains("REFRESH-tok"), "{text}");
}

#[test]
fn unanswered_refresh_is_tried_again_without_dropping_the_socket() {
    let d = creds();
    let mut s = S::new(SessionConfig::default());
    open_authenticated(&mut s, t(0), &d);
    events(&mut s);
    let at = s.refresh_at().unwrap();
    tx(&mut s, at, &d).unwrap();
    let deadline = at + secs(30);
    assert_eq!(s.poll_timeout(), Some(deadline));
    s.handle_timeout(deadline);
    assert!(
        signals(&mut s).is_empty(),
        "still authenticated: no reconnect"
    );
    assert!(events(&mut s).is_empty());
    assert_eq!(s.refresh_at(), Some(deadline + ms(500)));
    let (r, _) = tx(&mut s, deadline + ms(500), &d).unwrap();
    assert_eq!(r.kind, TransmitKind::Authenticate { refresh: true });
    // A late answer to the timed-out refresh is still the session's: it
    // carries tokens and must never reach the application.
    assert!(s.on_message(
        deadline + ms(600),
        ok(SESSION_ID_BASE + 1, TOKENS).as_bytes(),
        &d
    ));
}

#[test]
fn refresh_is_not_carried_to_a_new_socket() {
    let d = creds();
    let mut s = S::new(SessionConfig::default());
    open_authenticated(&mut s, t(0), &d);
    s.on_disconnect();
    assert_eq!(s.refresh_at(), None);
    assert!(!s.is_authenticated());
    s.on_open(t(5_000), 2, &d);
    let (a, text) = tx(&mut s, t(5_000), &d).unwrap();
    // A new connection authenticates from scratch, with the credentials.
    assert_eq!(a.kind, TransmitKind::Authenticate { refresh: false });
    assert_eq!(a.epoch, 2);
    assert!(text.contains("client_credentials"));
}

// ---- auth error classes ----

#[test]
fn transient_auth_errors_retry_with_doubling_delay_never_rejected() {
    let d = creds();
    let mut s = S::new(SessionConfig::default());
    s.on_open(t(0), 1, &d);
    let mut now = t(0);
    let mut delays = Vec::new();
    for _ in 0..8 {
        let (a, _) = tx(&mut s, now, &d).expect("retried");
        assert_eq!(a.kind, TransmitKind::Authenticate { refresh: false });
        assert_eq!(a.epoch, 1, "same socket");
        assert!(s.on_message(now, err(a.id, 13028).as_bytes(), &d));
        assert!(
            signals(&mut s).is_empty(),
            "transient: never dropped, never fatal"
        );
        let ev = events(&mut s);
        let [SessionEvent::AuthRetrying {
            epoch: 1,
            code: Some(13028),
            delay,
        }] = ev[..]
        else {
            panic!("{ev:?}")
        };
        assert_eq!(s.poll_timeout(), Some(now + delay));
        assert!(tx(
            &mut s,
            Instant::from_nanos((now + delay).as_nanos() - 1),
            &d
        )
        .is_none());
        delays.push(delay);
        now = now + delay;
    }
    assert_eq!(
        delays,
        [
            ms(500),
            ms(1_000),
            ms(2_000),
            ms(4_000),
            ms(8_000),
            ms(16_000),
            secs(30),
            secs(30)
        ]
    );
    // Success resets the ladder; the next socket starts at 500 ms again.
    let (a, _) = tx(&mut s, now, &d).unwrap();
    s.on_message(now, ok(a.id, TOKENS).as_bytes(), &d);
    assert!(s.is_authenticated());
    s.on_disconnect();
    s.on_open(now, 2, &d);
    let (a, _) = tx(&mut s, now, &d).unwrap();
    s.on_message(now, err(a.id, 10040).as_bytes(), &d);
    assert!(events(&mut s)
        .iter()
        .any(|e| matches!(e, SessionEvent::AuthRetrying { delay, .. } if *delay == ms(500))));
}

#[test]
fn fatal_auth_error_drops_with_auth_rejected() {
    let d = creds();
    let mut s = S::new(SessionConfig::default());
    s.subscribe("book.BTC.100ms").unwrap();
    s.on_open(t(0), 4, &d);
    let (a, _) = tx(&mut s, t(0), &d).unwrap();
    assert!(s.on_message(t(1), err(a.id, 13004).as_bytes(), &d));
    assert_eq!(signals(&mut s), [Signal::Drop(Error::AuthRejected)]);
    assert!(signals(&mut s).is_empty(), "taken once");
    assert_eq!(
        events(&mut s),
        [SessionEvent::AuthRejected {
            epoch: 4,
            code: Some(13004)
        }]
    );
    assert!(
        tx(&mut s, t(10_000), &d).is_none(),
        "nothing more on this socket"
    );
    assert_eq!(s.poll_timeout(), None);
}

#[test]
fn unanswered_authentication_is_a_transient_drop() {
    let d = creds();
    let mut s = S::new(SessionConfig {
        request_timeout: secs(5),
        ..SessionConfig::default()
    });
    s.on_open(t(0), 2, &d);
    tx(&mut s, t(0), &d).unwrap();
    assert_eq!(s.poll_timeout(), Some(t(5_000)));
    s.handle_timeout(t(4_999));
    assert!(signals(&mut s).is_empty());
    s.handle_timeout(t(5_000));
    let sig = signals(&mut s);
    assert_eq!(sig, [Signal::Drop(Error::ConnectTimeout)]);
    let Signal::Drop(e) = sig[0] else {
        unreachable!()
    };
    assert!(e.is_transient());
    assert_eq!(events(&mut s), [SessionEvent::AuthTimedOut { epoch: 2 }]);
}

// ---- rate limits ----

#[test]
fn rate_limit_on_auth_throttles_and_retries() {
    let d = creds();
    let mut s = S::new(SessionConfig::default());
    s.on_open(t(0), 1, &d);
    let (a, _) = tx(&mut s, t(0), &d).unwrap();
    assert!(s.on_message(t(0), err(a.id, 10028).as_bytes(), &d));
    assert_eq!(signals(&mut s), [Signal::Throttle]);
    assert_eq!(
        events(&mut s),
        [
            SessionEvent::RateLimited { code: 10028 },
            SessionEvent::AuthRetrying {
                epoch: 1,
                code: Some(10028),
                delay: ms(500)
            }
        ]
    );
}

#[test]
fn rate_limit_on_any_answer_throttles() {
    let d = Deribit::public();
    let mut s = S::new(SessionConfig::default());
    s.subscribe("book.BTC.100ms").unwrap();
    s.on_open(t(0), 1, &d);
    // A user request answered with 10028: typed error, delivered, and a throttle.
    s.track_request(t(0), 7).unwrap();
    assert!(
        !s.on_message(t(0), err(7, 10028).as_bytes(), &d),
        "the user's answer is delivered"
    );
    assert_eq!(signals(&mut s), [Signal::Throttle]);
    let ev = events(&mut s);
    assert_eq!(ev[0], SessionEvent::RateLimited { code: 10028 });
    let SessionEvent::RequestError { id: 7, error } = &ev[1] else {
        panic!("{ev:?}")
    };
    assert_eq!(error.class, ErrorClass::RateLimited);
    // Even an answer nobody tracks.
    assert!(!s.on_message(t(0), err(12345, 10028).as_bytes(), &d));
    assert_eq!(signals(&mut s), [Signal::Throttle]);
    assert_eq!(events(&mut s), [SessionEvent::RateLimited { code: 10028 }]);
    // A subscribe answered with 10028: asked again later, not rejected.
    let (b, _) = tx(&mut s, t(0), &d).unwrap();
    assert!(s.on_message(t(10), err(b.id, 10028).as_bytes(), &d));
    assert_eq!(signals(&mut s), [Signal::Throttle]);
    assert_eq!(events(&mut s), [SessionEvent::RateLimited { code: 10028 }]);
    assert!(tx(&mut s, t(10), &d).is_none(), "not at once");
    assert_eq!(s.poll_timeout(), Some(t(510)));
    let (b2, text) = tx(&mut s, t(510), &d).unwrap();
    assert_eq!(b2.kind, TransmitKind::Subscribe(1));
    assert!(text.contains("book.BTC.100ms"));
    grant_all(&mut s, t(520), &d, &b2, &text);
    assert_eq!(
        events(&mut s),
        [SessionEvent::Restored {
            epoch: 1,
            granted: 1,
            rejected: 0
        }]
    );
}

#[test]
fn transient_subscribe_error_retries_the_batch() {
    let d = Deribit::public();
    let mut s = S::new(SessionConfig::default());
    s.subscribe("book.BTC.100ms").unwrap();
    s.subscribe("ticker.BTC.100ms").unwrap();
    s.on_open(t(0), 1, &d);
    let (b, _) = tx(&mut s, t(0), &d).unwrap();
    assert!(s.on_message(t(0), err(b.id, 11051).as_bytes(), &d));
    assert!(signals(&mut s).is_empty(), "transient is not a rate limit");
    assert!(
        events(&mut s).is_empty(),
        "nothing rejected, nothing restored"
    );
    assert_eq!(s.poll_timeout(), Some(t(500)));
    let (b2, _) = tx(&mut s, t(500), &d).unwrap();
    assert_eq!(b2.kind, TransmitKind::Subscribe(2));
    assert_ne!(b2.id, b.id);
}

// ---- confirmed subscriptions ----

#[test]
fn partial_grant_reports_exactly_the_missing_channels() {
    let d = Deribit::public();
    let mut s = S::new(SessionConfig::default());
    for c in ["a.1.100ms", "b.2.100ms", "c.3.100ms", "d.4.100ms"] {
        s.subscribe(c).unwrap();
    }
    s.on_open(t(0), 1, &d);
    let (b, _) = tx(&mut s, t(0), &d).unwrap();
    assert_eq!(b.kind, TransmitKind::Subscribe(4));
    assert!(s.on_message(
        t(1),
        ok(b.id, r#"["c.3.100ms","a.1.100ms","unrequested.x"]"#).as_bytes(),
        &d
    ));
    let ev = events(&mut s);
    assert_eq!(
        ev,
        [
            SessionEvent::SubscriptionRejected {
                epoch: 1,
                index: 1,
                reason: Rejection::Refused { code: None }
            },
            SessionEvent::SubscriptionRejected {
                epoch: 1,
                index: 3,
                reason: Rejection::Refused { code: None }
            },
            SessionEvent::Restored {
                epoch: 1,
                granted: 2,
                rejected: 2
            },
        ]
    );
    assert_eq!(s.granted().collect::<Vec<_>>(), ["a.1.100ms", "c.3.100ms"]);
    // Still tracked: tried again on the next socket.
    assert_eq!(s.channel_count(), 4);
    s.on_disconnect();
    s.on_open(t(100), 2, &d);
    assert_eq!(
        tx(&mut s, t(100), &d).unwrap().0.kind,
        TransmitKind::Subscribe(4)
    );
}

#[test]
fn fatal_subscribe_error_refuses_the_whole_batch_with_its_code() {
    let d = Deribit::public();
    let mut s = S::new(SessionConfig {
        batch_size: 2,
        ..SessionConfig::default()
    });
    for c in ["a.1.100ms", "b.2.100ms", "c.3.100ms"] {
        s.subscribe(c).unwrap();
    }
    s.on_open(t(0), 1, &d);
    let sent = all_tx(&mut s, t(0), &d);
    assert_eq!(sent.len(), 2);
    assert!(s.on_message(t(1), err(sent[0].0.id, 11050).as_bytes(), &d));
    assert_eq!(
        events(&mut s),
        [
            SessionEvent::SubscriptionRejected {
                epoch: 1,
                index: 0,
                reason: Rejection::Refused { code: Some(11050) }
            },
            SessionEvent::SubscriptionRejected {
                epoch: 1,
                index: 1,
                reason: Rejection::Refused { code: Some(11050) }
            },
        ],
        "not restored while the second batch is unanswered"
    );
    grant_all(&mut s, t(2), &d, &sent[1].0, &sent[1].1);
    assert_eq!(
        events(&mut s),
        [SessionEvent::Restored {
            epoch: 1,
            granted: 1,
            rejected: 2
        }]
    );
}

#[test]
fn unanswered_subscribe_is_reported_timed_out() {
    let d = Deribit::public();
    let mut s = S::new(SessionConfig {
        request_timeout: secs(2),
        ..SessionConfig::default()
    });
    s.subscribe("a.1.100ms").unwrap();
    s.subscribe("b.2.100ms").unwrap();
    s.on_open(t(0), 1, &d);
    tx(&mut s, t(0), &d).unwrap();
    assert_eq!(s.poll_timeout(), Some(t(2_000)));
    s.handle_timeout(t(2_000));
    assert_eq!(
        events(&mut s),
        [
            SessionEvent::SubscriptionRejected {
                epoch: 1,
                index: 0,
                reason: Rejection::TimedOut
            },
            SessionEvent::SubscriptionRejected {
                epoch: 1,
                index: 1,
                reason: Rejection::TimedOut
            },
            SessionEvent::Restored {
                epoch: 1,
                granted: 0,
                rejected: 2
            },
        ]
    );
}

#[test]
fn waiting_for_a_subscribe_answer_does_not_spin() {
    let d = Deribit::public();
    let mut s = S::new(SessionConfig::default());
    s.subscribe("a.1.100ms").unwrap();
    s.on_open(t(0), 1, &d);
    tx(&mut s, t(0), &d).unwrap();
    // Nothing to do until the answer or its deadline.
    let next = s.poll_timeout().unwrap();
    assert_eq!(
        next,
        t(30_000),
        "a deadline in the past would make the caller spin"
    );
}

#[test]
fn more_rejections_at_once_than_the_event_queue_all_reported() {
    let d = Deribit::public();
    let mut s = S::new(SessionConfig::default());
    for i in 0..40 {
        s.subscribe(&format!("trades.I{i}.raw")).unwrap();
    }
    s.subscribe("book.BTC.100ms").unwrap();
    s.on_open(t(0), 1, &d);
    let (b, text) = tx(&mut s, t(0), &d).unwrap();
    assert_eq!(b.kind, TransmitKind::Subscribe(1));
    assert!(!text.contains(".raw"), "{text}");
    grant_all(&mut s, t(1), &d, &b, &text);
    let ev = events(&mut s);
    assert_eq!(ev.len(), 41, "{ev:?}");
    let mut indices: Vec<usize> = ev[..40]
        .iter()
        .map(|e| match e {
            SessionEvent::SubscriptionRejected {
                epoch: 1,
                index,
                reason: Rejection::NeedsAuth,
            } => *index,
            e => panic!("{e:?}"),
        })
        .collect();
    indices.sort_unstable();
    indices.dedup();
    assert_eq!(indices, (0..40).collect::<Vec<_>>());
    assert_eq!(
        ev[40],
        SessionEvent::Restored {
            epoch: 1,
            granted: 1,
            rejected: 40
        }
    );
    assert!(s.poll_event().is_none());
}

#[test]
fn needs_auth_channels_never_ride_in_an_unauthenticated_batch() {
    let d = Deribit::public();
    let mut s = S::new(SessionConfig::default());
    for c in [
        "book.BTC.100ms",
        "trades.BTC.raw",
        "ticker.ETH.100ms",
        "user.trades.any.raw",
        "book.ETH.raw",
    ] {
        s.subscribe(c).unwrap();
    }
    s.on_open(t(0), 1, &d);
    let sent = all_tx(&mut s, t(0), &d);
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].0.kind, TransmitKind::Subscribe(2));
    assert!(
        sent[0]
            .1
            .contains(r#"["book.BTC.100ms","ticker.ETH.100ms"]"#),
        "{}",
        sent[0].1
    );
    let mut r = rejected_names(&mut s);
    r.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        r,
        [
            ("book.ETH.raw".to_string(), Rejection::NeedsAuth),
            ("trades.BTC.raw".to_string(), Rejection::NeedsAuth),
            ("user.trades.any.raw".to_string(), Rejection::NeedsAuth),
        ]
    );
}

#[test]
fn public_and_private_batches_never_mixed() {
    let d = creds();
    let mut s = S::new(SessionConfig {
        batch_size: 3,
        ..SessionConfig::default()
    });
    let names: Vec<String> = (0..20)
        .map(|i| match i % 3 {
            0 => format!("user.orders.I{i}.raw"),
            1 => format!("book.I{i}.100ms"),
            _ => format!("trades.I{i}.raw"),
        })
        .collect();
    for n in &names {
        s.subscribe(n).unwrap();
    }
    open_authenticated(&mut s, t(0), &d);
    events(&mut s);
    let mut sent = Vec::new();
    for round in 0..10 {
        let now = t(round);
        let batch = all_tx(&mut s, now, &d);
        for (b, text) in &batch {
            grant_all(&mut s, now, &d, b, text);
        }
        sent.extend(batch);
    }
    assert!(events(&mut s).contains(&SessionEvent::Restored {
        epoch: 1,
        granted: 20,
        rejected: 0
    }));
    let mut seen = Vec::new();
    for (b, text) in &sent {
        let TransmitKind::Subscribe(n) = b.kind else {
            panic!("{b:?}")
        };
        assert!(n <= 3);
        let private = text.contains("private/subscribe");
        assert!(private || text.contains("public/subscribe"));
        let start = text.find('[').unwrap();
        let list = &text[start + 1..text.find(']').unwrap()];
        let chans: Vec<&str> = list.split(',').map(|c| c.trim_matches('"')).collect();
        assert_eq!(chans.len(), n);
        for c in chans {
            assert_eq!(c.starts_with("user."), private, "{text}");
            seen.push(c.to_string());
        }
    }
    seen.sort();
    let mut all = names.clone();
    all.sort();
    assert_eq!(seen, all, "each channel exactly once");
}

#[test]
fn batches_are_paced() {
    let d = Deribit::public();
    let mut s = S::new(SessionConfig {
        batch_size: 2,
        pacing: ms(100),
        ..SessionConfig::default()
    });
    for i in 0..5 {
        s.subscribe(&format!("book.I{i}.100ms")).unwrap();
    }
    s.on_open(t(0), 1, &d);
    assert_eq!(all_tx(&mut s, t(0), &d).len(), 1);
    assert_eq!(s.poll_timeout(), Some(t(100)));
    assert!(tx(&mut s, t(99), &d).is_none());
    assert_eq!(all_tx(&mut s, t(100), &d).len(), 1);
    let last = all_tx(&mut s, t(200), &d);
    assert_eq!(last.len(), 1);
    assert_eq!(last[0].0.kind, TransmitKind::Subscribe(1));
}

#[test]
fn many_small_batches_are_all_confirmed() {
    // More batches than the session's own-request table holds at once: none
    // may be forgotten (its channels would never be confirmed or reported).
    let d = Deribit::public();
    let mut s = S::new(SessionConfig {
        batch_size: 1,
        ..SessionConfig::default()
    });
    for i in 0..12 {
        s.subscribe(&format!("book.I{i}.100ms")).unwrap();
    }
    s.on_open(t(0), 1, &d);
    let mut now = t(0);
    let mut rounds = 0;
    loop {
        let sent = all_tx(&mut s, now, &d);
        if sent.is_empty() {
            break;
        }
        for (b, text) in &sent {
            grant_all(&mut s, now, &d, b, text);
        }
        now = now + ms(1);
        rounds += 1;
        assert!(rounds < 20);
    }
    let ev = events(&mut s);
    assert_eq!(
        ev,
        [SessionEvent::Restored {
            epoch: 1,
            granted: 12,
            rejected: 0
        }]
    );
}

#[test]
fn runtime_subscribe_sends_one_batch_for_the_new_channel() {
    let d = Deribit::public();
    let mut s = S::new(SessionConfig::default());
    s.subscribe("book.BTC.100ms").unwrap();
    s.on_open(t(0), 1, &d);
    let (b, text) = tx(&mut s, t(0), &d).unwrap();
    grant_all(&mut s, t(0), &d, &b, &text);
    events(&mut s);
    assert!(tx(&mut s, t(1), &d).is_none());
    assert_eq!(s.poll_timeout(), None, "restored, no token: nothing due");
    s.subscribe("ticker.ETH.100ms").unwrap();
    s.subscribe("book.BTC.100ms").unwrap(); // already tracked: no-op
    let sent = all_tx(&mut s, t(5), &d);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].0.kind, TransmitKind::Subscribe(1));
    assert!(
        sent[0].1.contains(r#"["ticker.ETH.100ms"]"#),
        "{}",
        sent[0].1
    );
    grant_all(&mut s, t(6), &d, &sent[0].0, &sent[0].1);
    assert_eq!(
        events(&mut s),
        [SessionEvent::Restored {
            epoch: 1,
            granted: 2,
            rejected: 0
        }]
    );
}

#[test]
fn subscribe_while_down_waits_for_the_open() {
    let d = Deribit::public();
    let mut s = S::new(SessionConfig::default());
    s.subscribe("book.BTC.100ms").unwrap();
    assert!(tx(&mut s, t(0), &d).is_none());
    assert_eq!(s.poll_timeout(), None);
    assert_eq!(
        s.subscribe(&"x".repeat(65)),
        Err(SubscribeError::NameTooLong)
    );
    let mut small: Session<1, 64, 1> = Session::new(SessionConfig::default());
    small.subscribe("a").unwrap();
    assert_eq!(small.subscribe("b"), Err(SubscribeError::Full));
    assert_eq!(small.subscribe("a"), Ok(()));
}

#[test]
fn unsubscribe_granted_channel_sends_unsubscribe_and_drops_it_on_answer() {
    let d = creds();
    let mut s = S::new(SessionConfig::default());
    s.subscribe("book.BTC.100ms").unwrap();
    s.subscribe("user.orders.any.any.raw").unwrap();
    open_authenticated(&mut s, t(0), &d);
    events(&mut s);
    for (b, text) in all_tx(&mut s, t(0), &d) {
        grant_all(&mut s, t(0), &d, &b, &text);
    }
    events(&mut s);
    assert!(s.unsubscribe("user.orders.any.any.raw"));
    assert!(!s.unsubscribe("user.orders.any.any.raw"), "already leaving");
    assert!(!s.unsubscribe("never.tracked"));
    assert_eq!(s.channels().collect::<Vec<_>>(), ["book.BTC.100ms"]);
    assert_eq!(s.granted().collect::<Vec<_>>(), ["book.BTC.100ms"]);
    let (u, text) = tx(&mut s, t(1), &d).expect("unsubscribe");
    assert_eq!(u.kind, TransmitKind::Unsubscribe(1));
    assert!(
        text.contains(
            r#""method":"private/unsubscribe","params":{"channels":["user.orders.any.any.raw"]}"#
        ),
        "{text}"
    );
    assert!(tx(&mut s, t(1), &d).is_none(), "sent once");
    assert!(s.on_message(
        t(2),
        ok(u.id, r#"["user.orders.any.any.raw"]"#).as_bytes(),
        &d
    ));
    assert!(events(&mut s).is_empty());
    assert_eq!(s.channel_count(), 1);
    assert_eq!(s.channel(1), None, "gone from the set");
    // The next socket does not subscribe it again.
    s.on_disconnect();
    open_authenticated(&mut s, t(10), &d);
    let sent = all_tx(&mut s, t(10), &d);
    assert_eq!(sent.len(), 1);
    assert!(!sent[0].1.contains("user."), "{}", sent[0].1);
}

#[test]
fn unsubscribe_while_down_is_immediate_and_resubscribe_while_leaving_keeps_it() {
    let d = Deribit::public();
    let mut s = S::new(SessionConfig::default());
    s.subscribe("a.1.100ms").unwrap();
    s.subscribe("b.2.100ms").unwrap();
    assert!(s.unsubscribe("a.1.100ms"));
    assert_eq!(s.channels().collect::<Vec<_>>(), ["b.2.100ms"]);
    s.on_open(t(0), 1, &d);
    let (b, text) = tx(&mut s, t(0), &d).unwrap();
    grant_all(&mut s, t(0), &d, &b, &text);
    events(&mut s);
    // Leave, then change one's mind before the unsubscribe goes out: it
    // is still subscribed on the server, so nothing is sent at all.
    assert!(s.unsubscribe("b.2.100ms"));
    s.subscribe("b.2.100ms").unwrap();
    assert!(
        all_tx(&mut s, t(1), &d).is_empty(),
        "neither unsubscribed nor asked again"
    );
    assert_eq!(s.channels().collect::<Vec<_>>(), ["b.2.100ms"]);
    assert_eq!(s.granted().collect::<Vec<_>>(), ["b.2.100ms"]);
}

#[test]
fn restore_off_subscribes_nothing_on_open() {
    let d = Deribit::public();
    let mut s = S::new(SessionConfig {
        restore: Restore::Off,
        ..SessionConfig::default()
    });
    s.subscribe("a.1.100ms").unwrap();
    s.on_open(t(0), 1, &d);
    assert!(tx(&mut s, t(0), &d).is_none());
    assert!(
        events(&mut s).is_empty(),
        "nothing restored, nothing to report"
    );
}

#[test]
fn no_protocol_reports_subscriptions_unsupported() {
    let mut s = S::new(SessionConfig::default());
    s.subscribe("a").unwrap();
    s.on_open(t(0), 1, &NoProtocol);
    assert!(tx(&mut s, t(0), &NoProtocol).is_none());
    assert_eq!(
        events(&mut s),
        [
            SessionEvent::SubscriptionRejected {
                epoch: 1,
                index: 0,
                reason: Rejection::Unsupported
            },
            SessionEvent::Restored {
                epoch: 1,
                granted: 0,
                rejected: 1
            },
        ]
    );
}

// ---- requests and ids ----

#[test]
fn user_ids_in_the_reserved_range_are_refused() {
    let mut s = S::new(SessionConfig::default());
    assert_eq!(
        s.track_request(t(0), CORE_ID_BASE),
        Err(TrackError::Reserved)
    );
    assert_eq!(
        s.track_request(t(0), SESSION_ID_BASE),
        Err(TrackError::Reserved)
    );
    assert_eq!(s.track_request(t(0), u64::MAX), Err(TrackError::Reserved));
    assert_eq!(s.track_request(t(0), CORE_ID_BASE - 1), Ok(()));
    assert_eq!(
        s.track_request(t(0), CORE_ID_BASE - 1),
        Err(TrackError::DuplicateId)
    );
    assert_eq!(s.pending_requests(), 1);
}

#[test]
fn next_id_skips_ids_in_flight_and_stays_below_the_reserved_range() {
    let mut s = S::new(SessionConfig::default());
    s.track_request(t(0), 1).unwrap();
    s.track_request(t(0), 2).unwrap();
    assert_eq!(s.next_id(), 3);
    s.next_user_id = CORE_ID_BASE - 1;
    assert_eq!(s.next_id(), CORE_ID_BASE - 1);
    // Wraps to 1, skipping 1 and 2 (in flight).
    assert_eq!(s.next_id(), 3);
}

#[test]
fn user_answers_and_session_answers_are_never_confused() {
    let d = creds();
    let mut s = S::new(SessionConfig::default());
    s.on_open(t(0), 1, &d);
    let (a, _) = tx(&mut s, t(0), &d).unwrap();
    // The user's request with the low digits of the session's id.
    let user = a.id - SESSION_ID_BASE;
    s.track_request(t(0), user).unwrap();
    assert!(
        !s.on_message(t(1), ok(user, "42").as_bytes(), &d),
        "delivered"
    );
    assert_eq!(events(&mut s), [SessionEvent::RequestResolved { id: user }]);
    assert!(!s.is_authenticated(), "not taken for the auth answer");
    assert!(s.on_message(t(2), ok(a.id, TOKENS).as_bytes(), &d));
    assert!(s.is_authenticated());
    assert_eq!(s.pending_requests(), 0);
    // A duplicate answer to the session's id is still consumed, never delivered.
    assert!(s.on_message(t(3), ok(a.id, TOKENS).as_bytes(), &d));
    // An untracked user-range answer is just delivered, without an event.
    assert!(!s.on_message(t(3), ok(99, "1").as_bytes(), &d));
    assert!(events(&mut s)
        .iter()
        .all(|e| !matches!(e, SessionEvent::RequestResolved { .. })));
}

#[test]
fn request_error_is_typed_with_code_message_and_class() {
    let d = Deribit::public();
    let mut s = S::new(SessionConfig::default());
    s.on_open(t(0), 1, &d);
    for (id, code) in [(1u64, 13009i64), (2, 13028), (3, 10028)] {
        s.track_request(t(0), id).unwrap();
        s.on_message(t(0), err(id, code).as_bytes(), &d);
    }
    let errors: Vec<_> = events(&mut s)
        .into_iter()
        .filter_map(|e| match e {
            SessionEvent::RequestError { id, error } => Some((id, error)),
            _ => None,
        })
        .collect();
    assert_eq!(errors.len(), 3);
    assert_eq!(errors[0].0, 1);
    assert_eq!(errors[0].1.code, 13009);
    assert_eq!(errors[0].1.message.as_str(), "m13009");
    assert_eq!(errors[0].1.class, ErrorClass::Fatal);
    assert_eq!(errors[1].1.class, ErrorClass::Transient);
    assert_eq!(errors[2].1.class, ErrorClass::RateLimited);
    assert_eq!(errors[0].1.to_string(), "error 13009 m13009");

    // A result resolves; an error without a code is code 0; long messages are cut at a char boundary.
    s.track_request(t(0), 4).unwrap();
    s.track_request(t(0), 5).unwrap();
    s.on_message(t(0), br#"{"id":4,"error":"nope"}"#, &d);
    let long = "€".repeat(40);
    s.on_message(
        t(0),
        format!(r#"{{"id":5,"error":{{"code":-1,"msg":"{long}"}}}}"#).as_bytes(),
        &d,
    );
    let ev = events(&mut s);
    let SessionEvent::RequestError { id: 4, error } = &ev[0] else {
        panic!("{ev:?}")
    };
    assert_eq!((error.code, error.message.as_str()), (0, ""));
    let SessionEvent::RequestError { id: 5, error } = &ev[1] else {
        panic!("{ev:?}")
    };
    assert_eq!(error.message.as_str(), "€".repeat(ERROR_MESSAGE_CAP / 3));
}

#[test]
fn requests_time_out_and_fail_on_disconnect_all_reported() {
    let d = Deribit::public();
    let mut s: Session<4, 16, 32> = Session::new(SessionConfig {
        request_timeout: secs(1),
        ..SessionConfig::default()
    });
    s.on_open(t(0), 1, &d);
    s.track_request(t(0), 1).unwrap();
    for id in 2..=32 {
        s.track_request(t(500), id).unwrap();
    }
    assert_eq!(s.track_request(t(500), 33), Err(TrackError::Full));
    assert_eq!(s.poll_timeout(), Some(t(1_000)));
    s.handle_timeout(t(1_000));
    assert_eq!(events(&mut s), [SessionEvent::RequestTimedOut { id: 1 }]);
    s.on_disconnect();
    // 31 settle at once: more than the event queue holds; none lost.
    assert_eq!(s.track_request(t(600), 40), Ok(()));
    assert_eq!(
        s.track_request(t(600), 41),
        Err(TrackError::Full),
        "settled but unreported count"
    );
    let mut failed: Vec<u64> = events(&mut s)
        .into_iter()
        .map(|e| match e {
            SessionEvent::RequestFailed { id } => id,
            e => panic!("{e:?}"),
        })
        .collect();
    failed.sort_unstable();
    assert_eq!(failed, (2..=32).collect::<Vec<_>>());
    assert_eq!(s.track_request(t(600), 41), Ok(()));
}

#[test]
fn session_answers_are_consumed() {
    let d = cod();
    let mut s = S::new(SessionConfig::default());
    s.subscribe("book.BTC.100ms").unwrap();
    s.on_open(t(0), 1, &d);
    let (a, _) = tx(&mut s, t(0), &d).unwrap();
    assert!(s.on_message(t(0), ok(a.id, TOKENS).as_bytes(), &d));
    let (c, _) = tx(&mut s, t(0), &d).unwrap();
    assert!(s.on_message(t(0), ok(c.id, r#""ok""#).as_bytes(), &d));
    let (b, text) = tx(&mut s, t(0), &d).unwrap();
    grant_all(&mut s, t(0), &d, &b, &text);
    // Notifications and unparsable data are not the session's.
    assert!(!s.on_message(
        t(0),
        br#"{"method":"subscription","params":{"channel":"book.BTC.100ms"}}"#,
        &d
    ));
    assert!(!s.on_message(t(0), b"not json", &d));
    assert!(
        !s.on_message(t(0), format!(r#"{{"id":{}}}"#, a.id).as_bytes(), &d),
        "no result, no error: not an answer"
    );
}

#[test]
fn transmit_failed_renders_the_same_step_again_later() {
    let d = creds();
    let mut s = S::new(SessionConfig::default());
    s.subscribe("book.BTC.100ms").unwrap();
    s.on_open(t(0), 1, &d);
    let (a, _) = tx(&mut s, t(0), &d).unwrap();
    s.transmit_failed(&a, t(50));
    assert_eq!(s.poll_timeout(), Some(t(50)));
    assert!(tx(&mut s, t(49), &d).is_none());
    let (a2, _) = tx(&mut s, t(50), &d).unwrap();
    assert_eq!(a2.kind, TransmitKind::Authenticate { refresh: false });
    // The first attempt's id is no longer the session's request.
    s.on_message(t(50), ok(a2.id, TOKENS).as_bytes(), &d);
    events(&mut s);
    let (b, _) = tx(&mut s, t(50), &d).unwrap();
    s.transmit_failed(&b, t(80));
    assert!(tx(&mut s, t(79), &d).is_none());
    let (b2, text) = tx(&mut s, t(80), &d).unwrap();
    assert_eq!(b2.kind, TransmitKind::Subscribe(1));
    grant_all(&mut s, t(80), &d, &b2, &text);
    assert_eq!(
        events(&mut s),
        [SessionEvent::Restored {
            epoch: 1,
            granted: 1,
            rejected: 0
        }]
    );
    // A stale transmit (old epoch) changes nothing.
    s.transmit_failed(&Transmit { epoch: 0, ..b2 }, t(1_000));
    assert!(tx(&mut s, t(80), &d).is_none());
}

#[test]
fn binance_result_null_grants_all_error_refuses_all() {
    let p = Binance;
    let mut s = S::new(SessionConfig::default());
    s.subscribe("btcusdt@trade").unwrap();
    s.subscribe("ethusdt@depth").unwrap();
    s.on_open(t(0), 1, &p);
    let (b, text) = tx(&mut s, t(0), &p).unwrap();
    assert_eq!(
        text,
        format!(
            r#"{{"method":"SUBSCRIBE","params":["btcusdt@trade","ethusdt@depth"],"id":{}}}"#,
            b.id
        )
    );
    assert!(s.on_message(
        t(1),
        format!(r#"{{"result":null,"id":{}}}"#, b.id).as_bytes(),
        &p
    ));
    assert_eq!(
        events(&mut s),
        [SessionEvent::Restored {
            epoch: 1,
            granted: 2,
            rejected: 0
        }]
    );

    s.on_disconnect();
    s.on_open(t(10), 2, &p);
    let (b, _) = tx(&mut s, t(10), &p).unwrap();
    let answer = format!(
        r#"{{"error":{{"code":2,"msg":"Invalid request"}},"id":{}}}"#,
        b.id
    );
    assert!(s.on_message(t(11), answer.as_bytes(), &p));
    assert_eq!(
        events(&mut s),
        [
            SessionEvent::SubscriptionRejected {
                epoch: 2,
                index: 0,
                reason: Rejection::Refused { code: Some(2) }
            },
            SessionEvent::SubscriptionRejected {
                epoch: 2,
                index: 1,
                reason: Rejection::Refused { code: Some(2) }
            },
            SessionEvent::Restored {
                epoch: 2,
                granted: 0,
                rejected: 2
            },
        ]
    );
}

#[test]
fn debug_never_shows_tokens() {
    let d = creds();
    let mut s = S::new(SessionConfig::default());
    open_authenticated(&mut s, t(0), &d);
    let shown = format!("{s:?}");
    assert!(!shown.contains("REFRESH-tok"), "{shown}");
    assert!(!shown.contains("ACCESS-tok"), "{shown}");
}

// ------------------------------------------------- review regressions ----

#[test]
fn unsubscribing_while_the_subscribe_is_in_flight_unsubscribes_if_granted() {
    let d = Deribit::public();
    let mut s: S = Session::new(SessionConfig::default());
    s.subscribe("a.100ms").unwrap();
    s.subscribe("b.100ms").unwrap();
    s.on_open(t(0), 1, &d);
    let (sub, _) = tx(&mut s, t(0), &d).expect("subscribe");
    assert!(s.unsubscribe("a.100ms"));
    assert!(!s.unsubscribe("a.100ms"), "already let go");
    assert_eq!(s.channels().collect::<Vec<_>>(), ["b.100ms"]);
    // The server grants both: `a` must be unsubscribed, `b` kept.
    assert!(s.on_message(t(1), ok(sub.id, r#"["a.100ms","b.100ms"]"#).as_bytes(), &d));
    let out = all_tx(&mut s, t(1), &d);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].0.kind, TransmitKind::Unsubscribe(1));
    assert!(
        out[0]
            .1
            .contains(r#""public/unsubscribe","params":{"channels":["a.100ms"]}"#),
        "{}",
        out[0].1
    );
    assert_eq!(s.granted().collect::<Vec<_>>(), ["b.100ms"]);
    assert!(s.on_message(t(2), ok(out[0].0.id, r#"["a.100ms"]"#).as_bytes(), &d));
    assert_eq!(s.channels().collect::<Vec<_>>(), ["b.100ms"]);
    assert!(all_tx(&mut s, t(3), &d).is_empty());
}

#[test]
fn unsubscribing_while_in_flight_and_refused_just_drops_it() {
    let d = Deribit::public();
    let mut s: S = Session::new(SessionConfig::default());
    s.subscribe("a.100ms").unwrap();
    s.on_open(t(0), 1, &d);
    let (sub, _) = tx(&mut s, t(0), &d).expect("subscribe");
    assert!(s.unsubscribe("a.100ms"));
    assert!(s.on_message(t(1), ok(sub.id, "[]").as_bytes(), &d));
    assert!(
        all_tx(&mut s, t(1), &d).is_empty(),
        "nothing to unsubscribe"
    );
    assert_eq!(s.channel_count(), 0);
    // Taken back before the answer: it stays, and is confirmed.
    s.subscribe("c.100ms").unwrap();
    let (sub, _) = tx(&mut s, t(2), &d).expect("subscribe c");
    assert!(s.unsubscribe("c.100ms"));
    s.subscribe("c.100ms").unwrap();
    assert!(s.on_message(t(3), ok(sub.id, r#"["c.100ms"]"#).as_bytes(), &d));
    assert_eq!(s.granted().collect::<Vec<_>>(), ["c.100ms"]);
    assert!(all_tx(&mut s, t(3), &d).is_empty());
}

#[test]
fn a_rejected_channel_subscribed_again_is_asked_again() {
    let d = Deribit::public();
    let mut s: S = Session::new(SessionConfig::default());
    s.subscribe("a.100ms").unwrap();
    s.on_open(t(0), 1, &d);
    let (sub, _) = tx(&mut s, t(0), &d).unwrap();
    s.on_message(t(1), ok(sub.id, "[]").as_bytes(), &d);
    events(&mut s);
    s.subscribe("a.100ms").unwrap();
    let out = all_tx(&mut s, t(2), &d);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].0.kind, TransmitKind::Subscribe(1));
}

#[test]
fn many_rate_limit_answers_in_one_input_make_one_event_and_one_hold() {
    let d = Deribit::public();
    let mut s: S = Session::new(SessionConfig::default());
    s.on_open(t(0), 1, &d);
    for k in 0..40 {
        s.on_message(t(0), err(SESSION_ID_BASE + 100 + k, 10028).as_bytes(), &d);
    }
    assert_eq!(signals(&mut s), [Signal::Throttle]);
    let e = events(&mut s);
    assert_eq!(
        e.iter()
            .filter(|e| matches!(e, SessionEvent::RateLimited { .. }))
            .count(),
        1,
        "{e:?}"
    );
}

#[test]
fn a_zero_token_lifetime_does_not_make_a_refresh_storm() {
    let p = creds();
    let mut s: S = Session::new(SessionConfig::default());
    s.on_open(t(0), 1, &p);
    let (a, _) = tx(&mut s, t(0), &p).unwrap();
    s.on_message(
        t(0),
        ok(a.id, r#"{"refresh_token":"R","expires_in":0}"#).as_bytes(),
        &p,
    );
    assert_eq!(s.refresh_at(), Some(t(0) + MIN_REFRESH_DELAY));
    let mut refreshes = 0;
    let mut now = t(0);
    while now < t(10_000) {
        for (r, _) in all_tx(&mut s, now, &p) {
            if matches!(r.kind, TransmitKind::Authenticate { .. }) {
                refreshes += 1;
                s.on_message(
                    now,
                    ok(r.id, r#"{"refresh_token":"R","expires_in":0}"#).as_bytes(),
                    &p,
                );
            }
        }
        now = now + ms(100);
    }
    assert!(
        (9..=11).contains(&refreshes),
        "{refreshes} refreshes in 10 s"
    );
}

/// Found by the simulation (runtime subscribe / unsubscribe): a channel
/// let go while its subscribe was in flight, granted by the answer (so an
/// unsubscribe is due), then subscribed again before that unsubscribe went
/// out was asked for again — a second subscribe for a channel the server
/// still had (and, refused, it would have stayed there unseen). It is
/// simply kept: granted, nothing sent.
#[test]
fn taken_back_before_its_unsubscribe_goes_out_stays_granted_without_a_request() {
    let d = Deribit::public();
    let mut s: S = Session::new(SessionConfig {
        pacing: ms(100),
        ..SessionConfig::default()
    });
    s.subscribe("a.100ms").unwrap();
    s.on_open(t(0), 1, &d);
    let (sub, _) = tx(&mut s, t(0), &d).expect("subscribe");
    assert!(s.unsubscribe("a.100ms"), "let go while in flight");
    assert!(s.on_message(t(10), ok(sub.id, r#"["a.100ms"]"#).as_bytes(), &d));
    events(&mut s);
    // The unsubscribe waits for the pacing; the user takes it back first.
    assert!(tx(&mut s, t(20), &d).is_none(), "paced");
    s.subscribe("a.100ms").unwrap();
    assert!(
        all_tx(&mut s, t(200), &d).is_empty(),
        "no request either way"
    );
    assert_eq!(s.granted().collect::<Vec<_>>(), ["a.100ms"]);
    assert_eq!(s.channels().collect::<Vec<_>>(), ["a.100ms"]);
    // And it can still be let go normally.
    assert!(s.unsubscribe("a.100ms"));
    let (u, text) = tx(&mut s, t(300), &d).expect("unsubscribe");
    assert_eq!(u.kind, TransmitKind::Unsubscribe(1));
    assert!(text.contains(r#"["a.100ms"]"#), "{text}");
}

/// Found by the simulation: an unsubscribe answered with a transient error
/// (Deribit 10040 "retry") dropped the channel from the set although the
/// server still had it subscribed (and kept streaming it). It is asked
/// again after the retry delay; a fatal error still drops it.
#[test]
fn transient_unsubscribe_error_is_retried_not_dropped() {
    let d = Deribit::public();
    let mut s: S = Session::new(SessionConfig {
        retry_delay: ms(500),
        ..SessionConfig::default()
    });
    s.subscribe("a.100ms").unwrap();
    s.subscribe("b.100ms").unwrap();
    s.on_open(t(0), 1, &d);
    let (sub, text) = tx(&mut s, t(0), &d).unwrap();
    grant_all(&mut s, t(0), &d, &sub, &text);
    events(&mut s);
    assert!(s.unsubscribe("a.100ms"));
    let (u, _) = tx(&mut s, t(10), &d).expect("unsubscribe");
    assert!(s.on_message(t(20), err(u.id, 10040).as_bytes(), &d));
    assert!(events(&mut s).is_empty());
    assert_eq!(s.channel(0), Some("a.100ms"), "still being let go");
    assert!(
        tx(&mut s, t(100), &d).is_none(),
        "not before the retry delay"
    );
    assert_eq!(s.poll_timeout(), Some(t(520)));
    let (u2, text) = tx(&mut s, t(520), &d).expect("asked again");
    assert_eq!(u2.kind, TransmitKind::Unsubscribe(1));
    assert!(text.contains(r#"["a.100ms"]"#), "{text}");
    assert!(s.on_message(t(530), ok(u2.id, r#"["a.100ms"]"#).as_bytes(), &d));
    assert_eq!(s.channels().collect::<Vec<_>>(), ["b.100ms"]);
    assert_eq!(s.channel(1), None, "gone once answered");
    // A fatal error: nothing more to do, it is dropped.
    assert!(s.unsubscribe("b.100ms"));
    let (u3, _) = tx(&mut s, t(600), &d).expect("unsubscribe b");
    assert!(s.on_message(t(610), err(u3.id, 11050).as_bytes(), &d));
    assert_eq!(s.channel(0), None);
    assert!(all_tx(&mut s, t(60_000), &d).is_empty());
}

/// Found by the simulation: after `Restored`, a channel let go while its
/// subscribe was in flight and taken back before the answer did not
/// re-arm the restoration, so a transient error on that subscribe left it
/// idle for good (never asked again, never reported). It is retried and
/// confirmed like any runtime subscribe.
#[test]
fn taken_back_while_in_flight_then_busy_is_asked_again() {
    let d = Deribit::public();
    let mut s: S = Session::new(SessionConfig {
        retry_delay: ms(500),
        ..SessionConfig::default()
    });
    s.on_open(t(0), 1, &d);
    assert!(tx(&mut s, t(0), &d).is_none());
    events(&mut s);
    s.subscribe("a.100ms").unwrap();
    let (sub, _) = tx(&mut s, t(1), &d).expect("subscribe");
    assert!(s.unsubscribe("a.100ms"));
    // Nothing else to restore: `Restored` is reported meanwhile.
    assert!(tx(&mut s, t(2), &d).is_none());
    assert!(matches!(
        events(&mut s)[..],
        [SessionEvent::Restored { granted: 0, .. }]
    ));
    s.subscribe("a.100ms").unwrap();
    assert!(s.on_message(t(10), err(sub.id, 10040).as_bytes(), &d));
    assert!(
        tx(&mut s, t(100), &d).is_none(),
        "not before the retry delay"
    );
    let (again, text) = tx(&mut s, t(510), &d).expect("asked again");
    assert_eq!(again.kind, TransmitKind::Subscribe(1));
    grant_all(&mut s, t(520), &d, &again, &text);
    assert_eq!(s.granted().collect::<Vec<_>>(), ["a.100ms"]);
    assert_eq!(
        events(&mut s),
        [SessionEvent::Restored {
            epoch: 1,
            granted: 1,
            rejected: 0
        }]
    );
}
