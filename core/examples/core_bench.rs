//! Per-event cost of the core, against a baseline measured in the same run.
//!
//! ```sh
//! cargo run --release -p zenws-core --example core_bench
//! ```
//!
//! Each case runs a tight loop of one kind of input on virtual time (the
//! core itself never reads a clock; `std::time::Instant` only times the
//! loop), takes the best of several rounds, and prints
//! `core_bench <case>: <ns> ns/event (<ratio>x vs memcpy-64B)`. The baseline
//! copies the same 64-byte message into a buffer: the least any handler of
//! that message could do.

use core::time::Duration;
use std::hint::black_box;
use std::time::Instant as Wall;
use zenws_core::exchange::NoProtocol;
use zenws_core::frame::Frame;
use zenws_core::ratelimit::RateLimit;
use zenws_core::session::{Session, SessionConfig, SessionEvent};
use zenws_core::{Action, Connection, ConnectionConfig, Delivery, HeartbeatConfig, Instant};

const ROUNDS: usize = 7;

/// A 64-byte JSON text frame (a market-data notification).
const MSG: &[u8; 64] = br#"{"jsonrpc":"2.0","method":"subscription","params":{"d":[1,2,3]}}"#;

/// Best-of-`ROUNDS` nanoseconds per call of `f` (each round `n` calls).
fn measure(n: u64, mut f: impl FnMut(u64)) -> f64 {
    // Warm up.
    for i in 0..n / 10 {
        f(i);
    }
    let mut best = f64::INFINITY;
    for _ in 0..ROUNDS {
        let start = Wall::now();
        for i in 0..n {
            f(i);
        }
        let ns = start.elapsed().as_nanos() as f64 / n as f64;
        best = best.min(ns);
    }
    best
}

fn open(config: ConnectionConfig) -> Connection {
    let mut c = Connection::new(config);
    c.connect(Instant::ZERO);
    c.handle_open(Instant::ZERO, 1);
    while c.poll_action().is_some() {}
    while c.poll_event().is_some() {}
    c
}

fn no_heartbeat() -> ConnectionConfig {
    ConnectionConfig::default().with_heartbeat(HeartbeatConfig::none())
}

fn main() {
    assert_eq!(MSG.len(), 64);
    const N: u64 = 5_000_000;
    let mut results: Vec<(&str, f64)> = Vec::new();

    // Baseline: copy the 64-byte message into a buffer.
    let mut buf = [0u8; 64];
    let base = measure(N, |_| {
        buf.copy_from_slice(black_box(&MSG[..]));
        black_box(&mut buf);
    });

    // handle_message, 64-byte text, open connection, no heartbeat.
    let mut c = open(no_heartbeat());
    let ns = measure(N, |i| {
        let d = c.handle_message(Instant::from_nanos(i), black_box(1), black_box(&MSG[..]));
        debug_assert_eq!(d, Delivery::Deliver);
        black_box(d);
    });
    results.push(("handle_message_64B", ns));

    // The same with the Deribit heartbeat: every message is JSON-scanned.
    let mut c = open(ConnectionConfig::default().with_heartbeat(HeartbeatConfig::deribit(10)));
    let ns = measure(N, |i| {
        // Advance virtual time slowly (1 ns per message): no deadline fires.
        let d = c.handle_message(Instant::from_nanos(i), black_box(1), black_box(&MSG[..]));
        debug_assert_eq!(d, Delivery::Deliver);
        black_box(d);
    });
    results.push(("handle_message_64B_deribit", ns));

    // A heartbeat tick: the ping deadline fires, the ping goes out, its pong
    // comes back (handle_timeout + poll_action + handle_pong).
    let mut c = open(
        ConnectionConfig::default().with_heartbeat(HeartbeatConfig::ping(
            Duration::from_millis(100),
            Duration::from_millis(50),
        )),
    );
    let ns = measure(N / 2, |_| {
        let t = c.poll_timeout().unwrap();
        c.handle_timeout(t);
        if let Some(Action::Send {
            frame: Frame::Ping { token },
            ..
        }) = c.poll_action()
        {
            c.handle_pong(t, 1, &token.to_be_bytes());
        }
    });
    assert!(c.is_open());
    results.push(("heartbeat_tick", ns));

    // handle_send admission through a flat token bucket (never empty: 1 per µs refill).
    let mut c = open(no_heartbeat().with_rate_limit(Some(RateLimit::flat(1_000_000, 1_000))));
    let ns = measure(N, |i| {
        let r = c.handle_send(Instant::from_nanos(i * 1_000), black_box(&MSG[..]), 0);
        debug_assert!(r.is_ok());
        let _ = black_box(r);
    });
    results.push(("handle_send_ratelimited_flat", ns));

    // The same with Deribit's credit model (the cost function scans the JSON).
    let mut c = open(no_heartbeat().with_rate_limit(Some(RateLimit::deribit())));
    let ns = measure(N, |i| {
        // 50 ms per send: always within Deribit's 20 requests/s.
        let r = c.handle_send(Instant::from_millis(i * 50), black_box(&MSG[..]), 0);
        debug_assert!(r.is_ok());
        let _ = black_box(r);
    });
    results.push(("handle_send_ratelimited_deribit", ns));

    // Session: track a request, correlate its response, drain the event.
    let mut s: Session = Session::new(SessionConfig::default());
    let responses: Vec<(u64, Vec<u8>)> = (1..=1024u64)
        .map(|id| {
            let msg = format!(r#"{{"jsonrpc":"2.0","id":{id},"result":{{"ok":true}},"usIn":1}}"#);
            (id, msg.into_bytes())
        })
        .collect();
    let ns = measure(N, |i| {
        let (id, msg) = &responses[(i % 1024) as usize];
        let now = Instant::from_nanos(i);
        s.track_request(now, *id).unwrap();
        s.on_message(now, black_box(msg), &NoProtocol);
        let e = s.poll_event();
        debug_assert_eq!(e, Some(SessionEvent::RequestResolved { id: *id }));
        black_box(e);
    });
    results.push(("session_response_correlation", ns));

    println!("core_bench baseline memcpy-64B: {base:.2} ns/event");
    for (case, ns) in results {
        println!(
            "core_bench {case}: {ns:.2} ns/event ({:.1}x vs memcpy-64B)",
            ns / base
        );
    }
}
