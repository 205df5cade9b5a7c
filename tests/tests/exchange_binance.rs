//! The second exchange protocol (Binance-style market streams) through the
//! mio driver, against the loopback `BinanceServer`: streams subscribed and
//! confirmed (`result: null` grants the whole request), an invalid stream
//! refusing its whole batch with code 2, server pings answered with pongs,
//! subscriptions restored after the server drops the connection.

use std::time::{Duration, Instant};
use zenws_core::exchange::binance::{self, Binance};
use zenws_core::session::Rejection;
use zenws_mio::{ClientConfig, ClientEvent, ClientId, ClientSupervisor};
use zenws_tests::{BinanceOptions, BinanceServer};

const TRADE: &str = "btcusdt@trade";
const DEPTH: &str = "ethusdt@depth";

fn config(streams: &[&str]) -> ClientConfig {
    let mut c = ClientConfig::default().protocol(Binance);
    for s in streams {
        c = c.subscribe(*s);
    }
    c.connection.heartbeat = binance::heartbeat();
    c.connection.rate_limit = Some(binance::rate_limit());
    c.connection.retry.retry_delay = Duration::from_millis(50);
    c.connection.retry.max_backoff = Duration::from_millis(200);
    c.connection.connect_timeout = Duration::from_secs(2);
    c
}

struct Run {
    sup: ClientSupervisor,
    #[allow(dead_code)]
    id: ClientId,
    events: Vec<ClientEvent>,
}

impl Run {
    fn start(server: &BinanceServer, config: ClientConfig) -> Run {
        let mut sup = ClientSupervisor::new().unwrap();
        let id = sup.start_client(&server.url(), config).unwrap();
        Run {
            sup,
            id,
            events: Vec::new(),
        }
    }

    fn turn(&mut self) {
        self.sup.run_once(Some(Duration::from_millis(5))).unwrap();
        while let Some(ev) = self.sup.poll_event() {
            self.events.push(ev);
        }
    }

    fn until(&mut self, secs: u64, what: &str, mut cond: impl FnMut(&Run) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            self.turn();
            if cond(self) {
                return;
            }
            if Instant::now() >= deadline {
                let tail = &self.events[self.events.len().saturating_sub(30)..];
                panic!("{what}: not reached in {secs} s; last events: {tail:#?}");
            }
        }
    }

    fn run_for(&mut self, d: Duration) {
        let end = Instant::now() + d;
        while Instant::now() < end {
            self.turn();
        }
    }

    fn restored(&self) -> Vec<(Vec<String>, usize)> {
        self.events
            .iter()
            .filter_map(|e| match e {
                ClientEvent::Restored {
                    granted, rejected, ..
                } => Some((sorted(granted.clone()), *rejected)),
                _ => None,
            })
            .collect()
    }

    fn rejected(&self) -> Vec<(String, Rejection)> {
        self.events
            .iter()
            .filter_map(|e| match e {
                ClientEvent::SubscriptionRejected {
                    channel, reason, ..
                } => Some((channel.clone(), *reason)),
                _ => None,
            })
            .collect()
    }

    /// Data messages for `stream` seen from event index `from` on.
    fn data(&self, stream: &str, from: usize) -> usize {
        let tag = format!(r#""stream":"{stream}""#);
        self.events[from..]
            .iter()
            .filter(|e| {
                matches!(e, ClientEvent::Message { message, .. }
                if message.as_text().is_some_and(|t| t.contains(&tag)))
            })
            .count()
    }

    fn lost(&self) -> usize {
        self.events
            .iter()
            .filter(|e| {
                matches!(
                    e,
                    ClientEvent::Disconnected { .. }
                        | ClientEvent::Reconnecting { .. }
                        | ClientEvent::Failed { .. }
                )
            })
            .count()
    }
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

fn strings(v: &[&str]) -> Vec<String> {
    sorted(v.iter().map(|s| s.to_string()).collect())
}

#[test]
fn streams_subscribed_and_all_granted() {
    let server = BinanceServer::plain().unwrap();
    let mut run = Run::start(&server, config(&[TRADE, DEPTH]));
    run.until(10, "restored", |r| !r.restored().is_empty());
    assert_eq!(run.restored(), vec![(strings(&[TRADE, DEPTH]), 0)]);
    assert!(run.rejected().is_empty());
    assert_eq!(sorted(server.subscriptions(0)), strings(&[TRADE, DEPTH]));
    // One SUBSCRIBE with an integer id, both streams in it.
    let reqs = server.received();
    assert_eq!(reqs.len(), 1, "{reqs:?}");
    assert_eq!(reqs[0].method, "SUBSCRIBE");
    assert!(reqs[0].id.is_u64(), "{:?}", reqs[0].id);
    assert_eq!(
        reqs[0].params,
        zenws_tests::serde_json::json!([TRADE, DEPTH])
    );
    // The answer (`result: null`) is the session's: not delivered.
    assert!(!run
        .events
        .iter()
        .any(|e| matches!(e, ClientEvent::Message { message, .. }
        if message.as_text().is_some_and(|t| t.contains("\"result\"")))));
    let from = run.events.len();
    run.until(5, "data on both streams", |r| {
        r.data(TRADE, from) >= 3 && r.data(DEPTH, from) >= 3
    });
    assert_eq!(server.malformed(), 0);
    assert_eq!(run.lost(), 0);
}

#[test]
fn an_invalid_stream_refuses_the_whole_batch_with_code_2() {
    let server = BinanceServer::plain().unwrap();
    // Upper case is not a valid stream name: the server refuses the
    // request, and nothing in it is applied.
    let bad = "BTCUSDT@trade";
    let mut run = Run::start(&server, config(&[TRADE, bad]));
    run.until(10, "restored", |r| !r.restored().is_empty());
    let refused = Rejection::Refused { code: Some(2) };
    let mut rejected = run.rejected();
    rejected.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        rejected,
        vec![(bad.to_string(), refused), (TRADE.to_string(), refused)]
    );
    assert_eq!(run.restored(), vec![(vec![], 2)]);
    assert!(server.subscriptions(0).is_empty());
    // A refused subscription does not cost the connection.
    run.run_for(Duration::from_millis(200));
    assert_eq!(run.lost(), 0);
    assert_eq!(server.connections_accepted(), 1);
    assert_eq!(server.count_method("SUBSCRIBE"), 1, "not retried");
}

#[test]
fn server_pings_are_answered_with_pongs() {
    let server = BinanceServer::start(BinanceOptions {
        ping_interval: Duration::from_millis(50),
        pong_timeout: Duration::from_millis(400),
        // Our pongs count as incoming messages.
        max_messages_per_sec: 100,
        ..BinanceOptions::default()
    })
    .unwrap();
    let mut run = Run::start(&server, config(&[TRADE]));
    run.until(10, "restored", |r| !r.restored().is_empty());
    let pongs = server.pongs_received();
    run.until(10, "pongs", |_| server.pongs_received() >= pongs + 15);
    assert_eq!(server.pong_timeout_closes(), 0);
    assert_eq!(server.rate_limit_closes(), 0);
    assert_eq!(server.connections_accepted(), 1);
    assert_eq!(server.live_connections(), 1);
    assert_eq!(
        run.lost(),
        0,
        "{:#?}",
        run.events
            .iter()
            .filter(|e| !matches!(e, ClientEvent::Message { .. }))
            .collect::<Vec<_>>()
    );
}

#[test]
fn subscriptions_restored_after_the_server_drops_the_connection() {
    let server = BinanceServer::plain().unwrap();
    let mut run = Run::start(&server, config(&[TRADE, DEPTH]));
    run.until(10, "restored", |r| !r.restored().is_empty());
    server.kill_connections();
    run.until(10, "restored again", |r| r.restored().len() == 2);
    assert_eq!(run.restored()[1], (strings(&[TRADE, DEPTH]), 0));
    assert_eq!(server.connections_accepted(), 2);
    assert_eq!(sorted(server.subscriptions(1)), strings(&[TRADE, DEPTH]));
    assert_eq!(server.methods_on(1), ["SUBSCRIBE"]);
    let from = run.events.len();
    run.until(5, "data after the reconnect", |r| {
        r.data(TRADE, from) >= 3 && r.data(DEPTH, from) >= 3
    });
    assert!(run
        .events
        .iter()
        .any(|e| matches!(e, ClientEvent::Reconnecting { .. })));
    assert!(!run
        .events
        .iter()
        .any(|e| matches!(e, ClientEvent::Failed { .. })));
}
