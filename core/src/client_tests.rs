//! The per-client machine driven as a driver would (the documented call
//! order): what the session decides reaches the socket, and what the
//! socket does reaches the session.

use super::*;
use crate::exchange::binance::Binance;
use crate::exchange::deribit::Deribit;
use crate::exchange::ErrorClass;
use crate::exchange::NoProtocol;
use crate::exit::ExitReason;
use crate::frame::{Frame, CORE_ID_BASE, SESSION_ID_BASE};
use crate::heartbeat::HeartbeatConfig;
use crate::ratelimit::RateLimit;
use crate::retry::{Jitter, RetryPolicy};
use crate::session::{Rejection, RpcError, TransmitKind};
use std::format;
use std::string::String;
use std::vec::Vec;

fn t(ms: u64) -> Instant {
    Instant::from_millis(ms)
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// No heartbeat, no jitter (retry delays 1 s, 2 s, 4 s).
fn config() -> ConnectionConfig {
    ConnectionConfig {
        heartbeat: HeartbeatConfig::none(),
        retry: RetryPolicy {
            jitter: Jitter::None,
            ..RetryPolicy::default()
        },
        ..ConnectionConfig::default()
    }
}

fn creds() -> Deribit {
    Deribit::with_credentials("client-id", "SECRET-xyz").unwrap()
}

const TOKENS: &str =
    r#"{"access_token":"ACCESS-tok","refresh_token":"REFRESH-tok","expires_in":900}"#;

fn ok(id: u64, result: &str) -> String {
    format!(r#"{{"jsonrpc":"2.0","id":{id},"result":{result}}}"#)
}

fn err(id: u64, code: i64) -> String {
    format!(r#"{{"jsonrpc":"2.0","id":{id},"error":{{"code":{code},"message":"m"}}}}"#)
}

/// Everything one round of the call order produced.
#[derive(Debug, Default)]
struct Out {
    actions: Vec<Action>,
    sent: Vec<(Transmit, String)>,
    events: Vec<ClientEvent>,
}

impl Out {
    fn session(&self) -> Vec<SessionEvent> {
        self.events
            .iter()
            .filter_map(|e| match e {
                ClientEvent::Session(s) => Some(s.clone()),
                _ => None,
            })
            .collect()
    }
    fn connection(&self) -> Vec<Event> {
        self.events
            .iter()
            .filter_map(|e| match e {
                ClientEvent::Connection(c) => Some(*c),
                _ => None,
            })
            .collect()
    }
    fn kinds(&self) -> Vec<TransmitKind> {
        self.sent.iter().map(|(t, _)| t.kind).collect()
    }
}

/// Drain actions, transmits and events until all three are empty.
fn pump<P: Protocol>(c: &mut Client<P>, now: Instant) -> Out {
    let mut out = Out::default();
    loop {
        let mut moved = false;
        while let Some(a) = c.poll_action() {
            moved = true;
            out.actions.push(a);
        }
        loop {
            let mut text = String::new();
            let Some(t) = c.poll_transmit(now, 0, &mut text) else {
                break;
            };
            moved = true;
            out.sent.push((t, text));
        }
        while let Some(e) = c.poll_event() {
            moved = true;
            out.events.push(e);
        }
        if !moved {
            return out;
        }
    }
}

/// Connect and open at `now`: the epoch and what the open produced.
fn open<P: Protocol>(c: &mut Client<P>, now: Instant) -> (Epoch, Out) {
    c.connect(now);
    let first = pump(c, now);
    let Some(&Action::Connect { epoch }) = first.actions.last() else {
        panic!("{first:?}")
    };
    c.handle_open(now, epoch);
    (epoch, pump(c, now))
}

/// Fire timers up to and including `until`, pumping after each.
fn run_until<P: Protocol>(c: &mut Client<P>, until: Instant) -> Out {
    let mut all = Out::default();
    let mut last = None;
    while let Some(next) = c.poll_timeout() {
        if next > until {
            break;
        }
        assert!(
            last.is_none_or(|l| next > l),
            "poll_timeout did not advance: {next:?}"
        );
        last = Some(next);
        c.handle_timeout(next);
        let o = pump(c, next);
        all.actions.extend(o.actions);
        all.sent.extend(o.sent);
        all.events.extend(o.events);
    }
    all
}

fn answer<P: Protocol>(
    c: &mut Client<P>,
    now: Instant,
    epoch: Epoch,
    text: &str,
) -> (Delivery, Out) {
    let d = c.handle_message(now, epoch, text.as_bytes());
    (d, pump(c, now))
}

fn grant(c: &mut Client<Deribit>, now: Instant, epoch: Epoch, sent: &(Transmit, String)) -> Out {
    let text = &sent.1;
    let list = &text[text.find('[').unwrap()..=text.find(']').unwrap()];
    let (d, o) = answer(c, now, epoch, &ok(sent.0.id, list));
    assert_eq!(d, Delivery::Consumed);
    o
}

#[test]
fn deribit_open_auth_cancel_on_disconnect_subscribe() {
    let mut c: Client<Deribit> = Client::new(
        config(),
        SessionConfig::default(),
        creds().cancel_on_disconnect(true),
    );
    c.subscribe("book.BTC-PERPETUAL.100ms").unwrap();
    c.subscribe("user.orders.any.any.raw").unwrap();
    let (epoch, o) = open(&mut c, t(0));
    assert_eq!(o.connection(), [Event::Opened { epoch }]);
    assert_eq!(
        o.kinds(),
        [TransmitKind::Authenticate { refresh: false }],
        "auth first, alone"
    );
    let auth = o.sent[0].0;
    assert_eq!(auth.epoch, epoch);

    // The answer carries tokens: consumed, never delivered.
    let (d, o) = answer(&mut c, t(10), epoch, &ok(auth.id, TOKENS));
    assert_eq!(d, Delivery::Consumed);
    assert_eq!(
        o.session(),
        [SessionEvent::Authenticated {
            epoch,
            refresh: false,
            expires_in: Some(secs(900))
        }]
    );
    assert_eq!(
        o.kinds(),
        [TransmitKind::AfterAuth(0)],
        "cancel-on-disconnect before any subscribe"
    );
    assert!(o.sent[0].1.contains("private/enable_cancel_on_disconnect"));

    let (d, o) = answer(&mut c, t(20), epoch, &ok(o.sent[0].0.id, r#""ok""#));
    assert_eq!(d, Delivery::Consumed);
    assert_eq!(
        o.session(),
        [SessionEvent::AfterAuth {
            epoch,
            step: 0,
            error: None
        }]
    );
    assert_eq!(
        o.kinds(),
        [TransmitKind::Subscribe(1), TransmitKind::Subscribe(1)]
    );
    assert!(o.sent[0].1.contains("public/subscribe") && o.sent[1].1.contains("private/subscribe"));
    let batches = o.sent;
    let o = grant(&mut c, t(30), epoch, &batches[0]);
    assert!(
        o.session().is_empty(),
        "restored only when every batch is answered"
    );
    let o = grant(&mut c, t(30), epoch, &batches[1]);
    assert_eq!(
        o.session(),
        [SessionEvent::Restored {
            epoch,
            granted: 2,
            rejected: 0
        }]
    );

    // Data is the application's.
    let (d, _) = answer(
        &mut c,
        t(40),
        epoch,
        r#"{"jsonrpc":"2.0","method":"subscription","params":{"channel":"book.BTC-PERPETUAL.100ms","data":{}}}"#,
    );
    assert_eq!(d, Delivery::Deliver);
    // Nothing else pending but the token refresh.
    assert_eq!(c.poll_timeout(), Some(t(10) + secs(840)));
}

#[test]
fn refused_credentials_abort_the_socket_and_fail_the_client() {
    let mut c: Client<Deribit> = Client::new(config(), SessionConfig::default(), creds());
    let (epoch, o) = open(&mut c, t(0));
    let (d, o) = answer(&mut c, t(5), epoch, &err(o.sent[0].0.id, 13004));
    assert_eq!(d, Delivery::Consumed);
    assert_eq!(
        o.actions,
        [Action::Abort { epoch, code: 1008 }],
        "no Connect: fatal"
    );
    assert_eq!(
        o.session(),
        [SessionEvent::AuthRejected {
            epoch,
            code: Some(13004)
        }]
    );
    assert_eq!(
        o.connection(),
        [
            Event::Disconnected {
                epoch,
                reason: Error::AuthRejected
            },
            Event::Exited(ExitReason::Fatal(Error::AuthRejected)),
        ]
    );
    assert_eq!(
        c.state(),
        State::Failed(ExitReason::Fatal(Error::AuthRejected))
    );
    assert!(c.is_terminated());
    assert_eq!(c.poll_timeout(), None);
    assert_eq!(c.handle_send(t(6), b"{}", 0), Err(SendError::Stopped));
    let later = run_until(&mut c, t(600_000));
    assert!(later.actions.is_empty() && later.sent.is_empty());
}

#[test]
fn transient_auth_error_retries_on_the_same_socket() {
    let mut c: Client<Deribit> = Client::new(config(), SessionConfig::default(), creds());
    let (epoch, o) = open(&mut c, t(0));
    let (_, o) = answer(&mut c, t(0), epoch, &err(o.sent[0].0.id, 13028));
    assert!(o.actions.is_empty(), "no abort, no reconnect: {o:?}");
    assert!(o.sent.is_empty(), "not at once");
    assert_eq!(
        o.session(),
        [SessionEvent::AuthRetrying {
            epoch,
            code: Some(13028),
            delay: ms(500)
        }]
    );
    assert_eq!(c.poll_timeout(), Some(t(500)));
    let o = run_until(&mut c, t(500));
    assert_eq!(o.kinds(), [TransmitKind::Authenticate { refresh: false }]);
    assert_eq!(o.sent[0].0.epoch, epoch);
    let (_, o) = answer(&mut c, t(600), epoch, &err(o.sent[0].0.id, 13028));
    assert_eq!(
        o.session(),
        [SessionEvent::AuthRetrying {
            epoch,
            code: Some(13028),
            delay: ms(1_000)
        }]
    );
    let o = run_until(&mut c, t(1_600));
    assert_eq!(o.kinds(), [TransmitKind::Authenticate { refresh: false }]);
    let (_, o) = answer(&mut c, t(1_700), epoch, &ok(o.sent[0].0.id, TOKENS));
    assert!(matches!(
        o.session()[..],
        [SessionEvent::Authenticated { .. }, ..]
    ));
    assert_eq!(c.state(), State::Open);
    assert_eq!(c.epoch(), epoch);
}

#[test]
fn unanswered_auth_drops_the_socket_and_reconnects() {
    let session = SessionConfig {
        request_timeout: secs(5),
        ..SessionConfig::default()
    };
    let mut c: Client<Deribit> = Client::new(config(), session, creds());
    let (epoch, _) = open(&mut c, t(0));
    assert_eq!(c.poll_timeout(), Some(t(5_000)));
    let o = run_until(&mut c, t(5_000));
    assert_eq!(o.actions, [Action::Abort { epoch, code: 1011 }]);
    assert_eq!(o.session(), [SessionEvent::AuthTimedOut { epoch }]);
    assert!(o.connection().contains(&Event::Reconnecting {
        attempt: 1,
        delay: secs(1),
        reason: Error::ConnectTimeout
    }));
    assert_eq!(c.state(), State::Backoff);
    let o = run_until(&mut c, t(6_000));
    assert_eq!(o.actions, [Action::Connect { epoch: epoch + 1 }]);
    c.handle_open(t(6_100), epoch + 1);
    let o = pump(&mut c, t(6_100));
    assert_eq!(o.kinds(), [TransmitKind::Authenticate { refresh: false }]);
    assert_eq!(o.sent[0].0.epoch, epoch + 1);
}

#[test]
fn token_refreshed_on_the_same_socket_without_reconnecting() {
    let mut c: Client<Deribit> = Client::new(config(), SessionConfig::default(), creds());
    let (epoch, o) = open(&mut c, t(0));
    answer(&mut c, t(1_000), epoch, &ok(o.sent[0].0.id, TOKENS));
    assert_eq!(c.poll_timeout(), Some(t(841_000)));
    let o = run_until(&mut c, t(841_000));
    assert!(o.actions.is_empty(), "{o:?}");
    assert_eq!(o.kinds(), [TransmitKind::Authenticate { refresh: true }]);
    assert_eq!(o.sent[0].0.epoch, epoch);
    assert!(o.sent[0].1.contains(r#""refresh_token":"REFRESH-tok""#));
    let (d, o) = answer(&mut c, t(841_100), epoch, &ok(o.sent[0].0.id, TOKENS));
    assert_eq!(d, Delivery::Consumed);
    assert_eq!(
        o.session(),
        [SessionEvent::TokenRefreshed {
            epoch,
            expires_in: Some(secs(900))
        }]
    );
    assert_eq!(c.poll_timeout(), Some(t(841_100 + 840_000)));
}

#[test]
fn rate_limit_answer_holds_sends_and_the_reconnect_until_the_pool_refills() {
    let cfg = ConnectionConfig {
        rate_limit: Some(RateLimit::deribit()),
        ..config()
    };
    let mut c: Client<Deribit> = Client::new(cfg, SessionConfig::default(), Deribit::public());
    c.subscribe("book.BTC.100ms").unwrap();
    let (epoch, o) = open(&mut c, t(0));
    assert_eq!(o.kinds(), [TransmitKind::Subscribe(1)]);
    grant(&mut c, t(0), epoch, &o.sent[0]);
    let query = br#"{"jsonrpc":"2.0","id":7,"method":"public/get_time"}"#;
    let id = c.next_request_id();
    assert_eq!(id, 1);
    c.track_request(t(0), 7).unwrap();
    assert_eq!(c.handle_send(t(0), query, 0), Ok(()));
    // The server says 10028 (and then closes the session).
    let (d, o) = answer(&mut c, t(1_000), epoch, &err(7, 10028));
    assert_eq!(d, Delivery::Deliver, "the user's own answer");
    assert_eq!(
        o.session(),
        [
            SessionEvent::RateLimited { code: 10028 },
            SessionEvent::RequestError {
                id: 7,
                error: RpcError {
                    code: 10028,
                    message: "m".try_into().unwrap(),
                    class: ErrorClass::RateLimited
                }
            },
        ]
    );
    // Every pool is empty: the next request waits for 500 credits (50 ms).
    assert_eq!(
        c.handle_send(t(1_000), query, 0),
        Err(SendError::RateLimited {
            retry_after: ms(50)
        })
    );
    c.handle_closed(t(1_010), epoch, Some(1000));
    let o = pump(&mut c, t(1_010));
    // Not the 1 s retry delay: the 50,000-credit pool refills in 5 s.
    assert!(
        o.connection().contains(&Event::Reconnecting {
            attempt: 1,
            delay: ms(4_990),
            reason: Error::ClosedByPeer
        }),
        "{o:?}"
    );
    let o = run_until(&mut c, Instant::from_nanos(t(6_000).as_nanos() - 1));
    assert!(
        o.actions.is_empty(),
        "no reconnect before the credits are back: {o:?}"
    );
    let o = run_until(&mut c, t(6_000));
    assert_eq!(o.actions, [Action::Connect { epoch: epoch + 1 }]);
    c.handle_open(t(6_000), epoch + 1);
    pump(&mut c, t(6_000));
    for _ in 0..100 {
        assert_eq!(c.handle_send(t(6_000), query, 0), Ok(()), "full again");
    }
}

#[test]
fn without_a_configured_rate_limit_the_protocols_applies_and_a_10028_holds_the_reconnect() {
    let mut c: Client<Deribit> = Client::new(config(), SessionConfig::default(), Deribit::public());
    let (epoch, _) = open(&mut c, t(0));
    c.track_request(t(0), 3).unwrap();
    let (_, o) = answer(&mut c, t(0), epoch, &err(3, 10028));
    assert!(o
        .session()
        .contains(&SessionEvent::RateLimited { code: 10028 }));
    assert!(o.actions.is_empty(), "the server closes, not us");
    c.handle_closed(t(0), epoch, None);
    let o = pump(&mut c, t(0));
    // Deribit's published pool (50,000 credits at 10,000/s) refills in 5 s,
    // longer than the 1 s retry delay.
    assert!(
        o.connection().contains(&Event::Reconnecting {
            attempt: 1,
            delay: secs(5),
            reason: Error::ConnectionReset
        }),
        "{o:?}"
    );
}

#[test]
fn session_messages_refused_by_the_rate_limit_go_out_when_credits_return() {
    let cfg = ConnectionConfig {
        rate_limit: Some(RateLimit::deribit()),
        ..config()
    };
    let mut c: Client<Deribit> = Client::new(cfg, SessionConfig::default(), Deribit::public());
    let (epoch, _) = open(&mut c, t(0));
    c.track_request(t(0), 3).unwrap();
    answer(&mut c, t(0), epoch, &err(3, 10028));
    // A subscribe while the pools are empty: 3,000 credits at 10,000/s.
    c.subscribe("book.BTC.100ms").unwrap();
    let o = pump(&mut c, t(0));
    assert!(o.sent.is_empty(), "refused by the rate limit: {o:?}");
    assert_eq!(c.poll_timeout(), Some(t(300)));
    let o = run_until(&mut c, t(300));
    assert_eq!(o.kinds(), [TransmitKind::Subscribe(1)]);
}

#[test]
fn partial_grant_via_the_client() {
    let mut c: Client<Deribit> = Client::new(config(), SessionConfig::default(), Deribit::public());
    for ch in ["a.1.100ms", "b.2.100ms", "c.3.100ms", "trades.BTC.raw"] {
        c.subscribe(ch).unwrap();
    }
    let (epoch, o) = open(&mut c, t(0));
    assert_eq!(o.kinds(), [TransmitKind::Subscribe(3)]);
    let mut events = o.session();
    let (_, o) = answer(&mut c, t(1), epoch, &ok(o.sent[0].0.id, r#"["a.1.100ms"]"#));
    events.extend(o.session());
    let s = c.session().unwrap();
    let rejected: Vec<(&str, Rejection)> = events
        .iter()
        .filter_map(|e| match *e {
            SessionEvent::SubscriptionRejected { index, reason, .. } => {
                Some((s.channel(index).unwrap(), reason))
            }
            _ => None,
        })
        .collect();
    let mut rejected = rejected;
    rejected.sort_by_key(|r| r.0);
    assert_eq!(
        rejected,
        [
            ("b.2.100ms", Rejection::Refused { code: None }),
            ("c.3.100ms", Rejection::Refused { code: None }),
            ("trades.BTC.raw", Rejection::NeedsAuth),
        ]
    );
    assert_eq!(
        o.session().last(),
        Some(&SessionEvent::Restored {
            epoch,
            granted: 1,
            rejected: 3
        })
    );
}

#[test]
fn reserved_request_ids_refused_and_answers_correlated() {
    let mut c: Client<NoProtocol> = Client::new(config(), SessionConfig::default(), NoProtocol);
    assert!(c.session().is_none(), "no session until one is needed");
    let (epoch, _) = open(&mut c, t(0));
    assert_eq!(
        c.track_request(t(0), CORE_ID_BASE),
        Err(TrackError::Reserved)
    );
    assert_eq!(
        c.track_request(t(0), SESSION_ID_BASE + 1),
        Err(TrackError::Reserved)
    );
    let id = c.next_request_id();
    assert!(id < CORE_ID_BASE);
    c.track_request(t(0), id).unwrap();
    let (d, o) = answer(&mut c, t(1), epoch, &ok(id, "true"));
    assert_eq!(d, Delivery::Deliver);
    assert_eq!(o.session()[0], SessionEvent::RequestResolved { id });
    assert!(!c.untrack_request(id), "resolved already");
    // The session was created on the open socket: a subscription goes out on it.
    let mut b: Client<Binance> = Client::new(config(), SessionConfig::default(), Binance);
    let (be, _) = open(&mut b, t(0));
    assert!(b.session().is_none());
    b.subscribe("btcusdt@trade").unwrap();
    let o = pump(&mut b, t(1));
    assert_eq!(o.kinds(), [TransmitKind::Subscribe(1)]);
    assert_eq!(o.sent[0].0.epoch, be);
    // A dropped socket fails what is in flight.
    c.track_request(t(2), 77).unwrap();
    c.handle_error(t(3), epoch, Error::ConnectionReset);
    let o = pump(&mut c, t(3));
    assert!(
        o.session()
            .contains(&SessionEvent::RequestFailed { id: 77 }),
        "{o:?}"
    );
}

#[test]
fn no_protocol_client_reports_subscriptions_unsupported() {
    let mut c: Client<NoProtocol> = Client::new(config(), SessionConfig::default(), NoProtocol);
    c.subscribe("anything").unwrap();
    let (epoch, o) = open(&mut c, t(0));
    assert!(o.sent.is_empty());
    assert_eq!(
        o.session(),
        [
            SessionEvent::SubscriptionRejected {
                epoch,
                index: 0,
                reason: Rejection::Unsupported
            },
            SessionEvent::Restored {
                epoch,
                granted: 0,
                rejected: 1
            },
        ]
    );
}

#[test]
fn binance_pings_answered_while_live_and_subscriptions_confirmed() {
    let mut c: Client<Binance> = Client::new(config(), SessionConfig::default(), Binance);
    assert!(!c.handle_ping(t(0), 0, b"x"), "nothing open yet");
    c.subscribe("btcusdt@trade").unwrap();
    c.subscribe("ethusdt@depth").unwrap();
    let (epoch, o) = open(&mut c, t(0));
    assert!(c.handle_ping(t(1), epoch, b"1700000000000"));
    assert!(!c.handle_ping(t(1), epoch + 1, b"x"), "not this socket");
    assert!(!c.handle_ping(t(1), epoch - 1, b"x"), "an old socket");
    assert_eq!(o.kinds(), [TransmitKind::Subscribe(2)]);
    assert!(o.sent[0]
        .1
        .starts_with(r#"{"method":"SUBSCRIBE","params":["btcusdt@trade","ethusdt@depth"]"#));
    let (d, o) = answer(
        &mut c,
        t(2),
        epoch,
        &format!(r#"{{"result":null,"id":{}}}"#, o.sent[0].0.id),
    );
    assert_eq!(d, Delivery::Consumed);
    assert_eq!(
        o.session(),
        [SessionEvent::Restored {
            epoch,
            granted: 2,
            rejected: 0
        }]
    );
    // A runtime subscribe refused with an error code.
    c.subscribe("bad@stream").unwrap();
    let o = pump(&mut c, t(3));
    assert_eq!(o.kinds(), [TransmitKind::Subscribe(1)]);
    let (_, o) = answer(
        &mut c,
        t(4),
        epoch,
        &format!(
            r#"{{"error":{{"code":2,"msg":"Invalid request"}},"id":{}}}"#,
            o.sent[0].0.id
        ),
    );
    assert_eq!(
        o.session(),
        [
            SessionEvent::SubscriptionRejected {
                epoch,
                index: 2,
                reason: Rejection::Refused { code: Some(2) }
            },
            SessionEvent::Restored {
                epoch,
                granted: 2,
                rejected: 1
            },
        ]
    );
    // Unsubscribe a granted stream.
    assert!(c.unsubscribe("btcusdt@trade"));
    let o = pump(&mut c, t(5));
    assert_eq!(o.kinds(), [TransmitKind::Unsubscribe(1)]);
    assert!(o.sent[0]
        .1
        .starts_with(r#"{"method":"UNSUBSCRIBE","params":["btcusdt@trade"]"#));
    let (d, _) = answer(
        &mut c,
        t(6),
        epoch,
        &format!(r#"{{"result":null,"id":{}}}"#, o.sent[0].0.id),
    );
    assert_eq!(d, Delivery::Consumed);
    assert_eq!(
        c.session().unwrap().channels().collect::<Vec<_>>(),
        ["ethusdt@depth", "bad@stream"]
    );
    // Closed for good: no pong.
    c.close(t(7));
    pump(&mut c, t(7));
    c.handle_closed(t(8), epoch, Some(1000));
    pump(&mut c, t(8));
    assert_eq!(c.state(), State::Stopped);
    assert!(!c.handle_ping(t(9), epoch, b"x"));
}

#[test]
fn closing_with_session_work_pending_does_not_spin() {
    let session = SessionConfig {
        batch_size: 1,
        pacing: secs(1),
        ..SessionConfig::default()
    };
    let mut c: Client<Deribit> = Client::new(config(), session, Deribit::public());
    for ch in ["a.1.100ms", "b.2.100ms", "c.3.100ms"] {
        c.subscribe(ch).unwrap();
    }
    let (_, o) = open(&mut c, t(0));
    assert_eq!(o.sent.len(), 1);
    c.close(t(10));
    pump(&mut c, t(10));
    // The peer never answers the close: the close deadline ends it, and
    // every deadline on the way is in the future when it is reported.
    let mut now = t(10);
    let mut steps = 0;
    while let Some(next) = c.poll_timeout() {
        assert!(
            next > now,
            "deadline {next:?} not after {now:?}: the caller would spin"
        );
        now = next;
        c.handle_timeout(now);
        pump(&mut c, now);
        steps += 1;
        assert!(steps < 10);
    }
    assert_eq!(c.state(), State::Stopped);
}

#[test]
fn input_from_an_old_socket_never_reaches_the_session() {
    let session = SessionConfig {
        request_timeout: secs(1),
        ..SessionConfig::default()
    };
    let mut c: Client<Deribit> = Client::new(config(), session, creds());
    let (old, o) = open(&mut c, t(0));
    let auth = o.sent[0].0;
    run_until(&mut c, t(1_000)); // auth times out: reconnect
    let o = run_until(&mut c, t(2_000));
    assert_eq!(o.actions, [Action::Connect { epoch: old + 1 }]);
    c.handle_open(t(2_000), old + 1);
    pump(&mut c, t(2_000));
    // The late answer on the old socket: stale, and the new socket is not authenticated by it.
    let (d, o) = answer(&mut c, t(2_001), old, &ok(auth.id, TOKENS));
    assert_eq!(d, Delivery::Stale);
    assert!(o.session().is_empty());
    assert!(!c.session().unwrap().is_authenticated());
}

#[test]
fn deribit_heartbeat_setup_failure_surfaces_and_is_retried() {
    let cfg = ConnectionConfig {
        heartbeat: HeartbeatConfig::deribit(10),
        ..config()
    };
    let mut c: Client<Deribit> = Client::new(cfg, SessionConfig::default(), Deribit::public());
    let (epoch, o) = open(&mut c, t(0));
    let [Action::Send {
        frame:
            Frame::AppSetup {
                id,
                interval_secs: 10,
                ..
            },
        ..
    }] = o.actions[..]
    else {
        panic!("{o:?}")
    };
    let (d, o) = answer(&mut c, t(100), epoch, &err(id, 11050));
    assert_eq!(d, Delivery::Consumed);
    assert_eq!(
        o.connection(),
        [Event::HeartbeatSetupFailed { code: 11050 }]
    );
    assert!(
        o.session().is_empty(),
        "the heartbeat's answer is not the session's"
    );
    let o = run_until(&mut c, t(1_100));
    let [Action::Send {
        frame: Frame::AppSetup { id: id2, .. },
        ..
    }] = o.actions[..]
    else {
        panic!("{o:?}")
    };
    assert_ne!(id, id2);
}

#[test]
fn debug_shows_no_secret() {
    let mut c: Client<Deribit> = Client::new(config(), SessionConfig::default(), creds());
    let (epoch, o) = open(&mut c, t(0));
    answer(&mut c, t(0), epoch, &ok(o.sent[0].0.id, TOKENS));
    let shown = format!("{c:?} {:?} {:?}", c.protocol(), c.session().unwrap());
    for secret in ["SECRET-xyz", "REFRESH-tok", "ACCESS-tok"] {
        assert!(!shown.contains(secret), "{shown}");
    }
}

#[test]
fn rate_limit_answer_to_the_heartbeat_setup_throttles_too() {
    let cfg = ConnectionConfig {
        heartbeat: HeartbeatConfig::deribit(10),
        rate_limit: Some(RateLimit::deribit()),
        ..config()
    };
    for with_session in [false, true] {
        let mut c: Client<Deribit> = Client::new(cfg, SessionConfig::default(), Deribit::public());
        if with_session {
            c.subscribe("book.BTC.100ms").unwrap();
        }
        let (epoch, o) = open(&mut c, t(0));
        assert_eq!(c.session().is_some(), with_session);
        let Some(&Action::Send {
            frame: Frame::AppSetup { id, .. },
            ..
        }) = o.actions.first()
        else {
            panic!("{o:?}")
        };
        let query = br#"{"jsonrpc":"2.0","id":7,"method":"public/get_time"}"#;
        assert_eq!(c.handle_send(t(0), query, 0), Ok(()));
        let (d, o) = answer(&mut c, t(10), epoch, &err(id, 10028));
        assert_eq!(d, Delivery::Consumed, "the heartbeat's answer");
        assert!(o
            .connection()
            .contains(&Event::HeartbeatSetupFailed { code: 10028 }));
        assert_eq!(
            c.handle_send(t(10), query, 0),
            Err(SendError::RateLimited {
                retry_after: ms(50)
            }),
            "with_session = {with_session}"
        );
    }
}

// ------------------------------------------------- review regressions ----

#[test]
fn a_rate_limit_answer_without_a_session_holds_the_client_too() {
    // A public client with no subscriptions has no session until it needs
    // one: a 10028 answering a raw request still holds it and is reported.
    let mut c: Client<Deribit> = Client::new(config(), SessionConfig::default(), Deribit::public());
    let (epoch, _) = open(&mut c, t(0));
    assert!(c.session().is_none());
    let (_, o) = answer(&mut c, t(0), epoch, &err(7, 10028));
    assert!(
        o.session()
            .contains(&SessionEvent::RateLimited { code: 10028 }),
        "{o:?}"
    );
    let query = br#"{"jsonrpc":"2.0","id":8,"method":"public/get_time"}"#;
    assert!(matches!(
        c.handle_send(t(0), query, 0),
        Err(SendError::RateLimited { .. })
    ));
}

#[test]
fn restart_on_a_live_socket_fails_its_requests_and_forgets_its_auth() {
    let session = SessionConfig {
        request_timeout: secs(5),
        ..SessionConfig::default()
    };
    let mut c: Client<Deribit> = Client::new(config(), session, creds());
    let (epoch, _) = open(&mut c, t(0));
    c.track_request(t(0), 42).unwrap();
    c.restart(t(100), t(100));
    let o = pump(&mut c, t(100));
    assert!(
        o.session()
            .contains(&SessionEvent::RequestFailed { id: 42 }),
        "{o:?}"
    );
    // The old socket's auth deadline (5 s) never fires on the new one.
    let Some(Action::Connect { epoch: e2 }) = o
        .actions
        .iter()
        .copied()
        .find(|a| matches!(a, Action::Connect { .. }))
    else {
        panic!("{o:?}")
    };
    assert!(e2 > epoch);
    c.handle_open(t(200), e2);
    let o = pump(&mut c, t(200));
    let auth = o.sent.first().expect("auth on the new socket").0.id;
    let (_, _) = answer(&mut c, t(300), e2, &ok(auth, TOKENS));
    let o = run_until(&mut c, t(6_000));
    assert!(
        !o.session()
            .iter()
            .any(|e| matches!(e, SessionEvent::AuthTimedOut { .. })),
        "{o:?}"
    );
    assert_eq!(c.state(), State::Open);
}
