//! The connection lifecycle matrix: every state, every way out of it.

use super::*;
use crate::frame::{FrameKind, CORE_ID_BASE};
use crate::heartbeat::Strategy;
use crate::retry::{Jitter, RetryCount};
use std::vec::Vec;

fn ms(n: u64) -> Instant {
    Instant::from_millis(n)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// No heartbeat, no jitter, default ladder (3 retries: 1 s, 2 s, 4 s).
fn cfg() -> ConnectionConfig {
    ConnectionConfig {
        heartbeat: HeartbeatConfig::none(),
        retry: RetryPolicy {
            jitter: Jitter::None,
            ..RetryPolicy::default()
        },
        ..ConnectionConfig::default()
    }
}

fn actions(c: &mut Connection) -> Vec<Action> {
    core::iter::from_fn(|| c.poll_action()).collect()
}

fn events(c: &mut Connection) -> Vec<Event> {
    core::iter::from_fn(|| c.poll_event()).collect()
}

fn drain(c: &mut Connection) {
    actions(c);
    events(c);
}

/// Connect at `now` and open at once; returns the epoch.
fn open_at(c: &mut Connection, now: Instant) -> Epoch {
    c.connect(now);
    let epoch = c.epoch();
    c.handle_open(now, epoch);
    drain(c);
    epoch
}

/// From Backoff: fire the backoff timer and open the new socket.
fn reopen(c: &mut Connection) -> (Instant, Epoch) {
    let at = c.poll_timeout().expect("backoff deadline");
    c.handle_timeout(at);
    let epoch = c.epoch();
    assert_eq!(actions(c), [Action::Connect { epoch }]);
    c.handle_open(at, epoch);
    drain(c);
    (at, epoch)
}

fn reconnecting(attempt: u32, delay: Duration, reason: Error) -> Event {
    Event::Reconnecting {
        attempt,
        delay,
        reason,
    }
}

#[test]
fn sizes() {
    let conn = core::mem::size_of::<Connection>();
    std::println!("size_of::<Connection>() = {conn} bytes");
    std::println!(
        "size_of::<ConnectionConfig>() = {} bytes",
        core::mem::size_of::<ConnectionConfig>()
    );
    std::println!(
        "size_of::<Session>() (16 subs × 64 B, 32 requests) = {} bytes",
        core::mem::size_of::<crate::session::Session>()
    );
    std::println!(
        "size_of::<Supervisor>() (ring of 64) = {} bytes",
        core::mem::size_of::<crate::supervisor::Supervisor>()
    );
    std::println!(
        "size_of::<Action>() = {}, size_of::<Event>() = {}",
        core::mem::size_of::<Action>(),
        core::mem::size_of::<Event>()
    );
    std::println!(
        "size_of::<Heartbeat>() = {}, size_of::<Option<Buckets>>() = {}, size_of::<Option<RateLimit>>() = {}, size_of::<Backoff>() = {}, size_of::<Metrics>() = {}",
        core::mem::size_of::<Heartbeat>(),
        core::mem::size_of::<Option<Buckets>>(),
        core::mem::size_of::<Option<RateLimit>>(),
        core::mem::size_of::<Backoff>(),
        core::mem::size_of::<Metrics>(),
    );
    use crate::client::Client;
    use crate::exchange::{deribit::Deribit, NoProtocol};
    let plain = core::mem::size_of::<Client<NoProtocol>>();
    let deribit = core::mem::size_of::<Client<Deribit>>();
    std::println!("size_of::<Client<NoProtocol>>() = {plain} bytes");
    std::println!("size_of::<Client<Deribit>>() = {deribit} bytes");
    std::println!(
        "size_of::<Deribit>() = {} bytes (credentials inline)",
        core::mem::size_of::<Deribit>()
    );
    #[cfg(feature = "alloc")]
    {
        // The session is boxed and created only when used: a client is its
        // connection plus a pointer, the session config and the protocol.
        let session = core::mem::size_of::<crate::session::SessionConfig>();
        assert!(
            plain <= conn + session + 32,
            "Client<NoProtocol> ({plain} B) should be about its Connection ({conn} B)"
        );
        assert!(deribit <= plain + core::mem::size_of::<Deribit>() + 8);
    }
    // Was ≤ 1 KiB before issue 10 added the rate-limit class pools, the
    // rate-limit hold and the heartbeat setup retry (1128 B on x86_64).
    assert!(
        conn <= 1152,
        "Connection grew to {conn} bytes (budget 1152 B)"
    );
}

#[test]
fn idle_connecting_open_closing_stopped() {
    let mut c = Connection::new(cfg());
    assert_eq!(c.state(), State::Idle);
    assert_eq!(c.poll_timeout(), None);
    assert_eq!(c.epoch(), 0);
    assert_eq!(c.health().status, HealthStatus::Disconnected);

    c.connect(ms(0));
    assert_eq!(c.state(), State::Connecting);
    assert_eq!(actions(&mut c), [Action::Connect { epoch: 1 }]);
    assert_eq!(
        events(&mut c),
        [Event::Connecting {
            epoch: 1,
            attempt: 0
        }]
    );
    assert_eq!(c.poll_timeout(), Some(ms(5_000)), "connect timeout 5 s");
    c.connect(ms(1));
    assert!(
        actions(&mut c).is_empty(),
        "connect() only starts from Idle"
    );

    c.handle_open(ms(10), 1);
    assert_eq!(c.state(), State::Open);
    assert!(c.is_open());
    assert_eq!(events(&mut c), [Event::Opened { epoch: 1 }]);
    assert!(actions(&mut c).is_empty(), "no heartbeat, nothing to send");
    assert_eq!(c.poll_timeout(), None);
    assert_eq!(c.health().status, HealthStatus::Healthy);
    assert_eq!(c.handle_message(ms(11), 1, b"hi"), Delivery::Deliver);
    assert_eq!(c.metrics().messages_in, 1);

    c.close(ms(20));
    assert_eq!(c.state(), State::Closing);
    assert_eq!(
        actions(&mut c),
        [Action::Close {
            epoch: 1,
            code: 1000
        }]
    );
    assert_eq!(c.poll_timeout(), Some(ms(2_020)), "close timeout 2 s");
    assert_eq!(c.handle_send(ms(21), b"x", 0), Err(SendError::NotConnected));
    // The peer may still send data before its close frame.
    assert_eq!(c.handle_message(ms(21), 1, b"late"), Delivery::Deliver);

    c.handle_closed(ms(30), 1, Some(1000));
    assert_eq!(c.state(), State::Stopped);
    assert!(c.is_terminated());
    assert_eq!(events(&mut c), [Event::Exited(ExitReason::Normal)]);
    assert!(actions(&mut c).is_empty());
    assert_eq!(c.poll_timeout(), None);
    assert_eq!(c.health().status, HealthStatus::Stopped);
    assert_eq!(c.handle_send(ms(31), b"x", 0), Err(SendError::Stopped));
}

#[test]
fn close_handshake_timeout_aborts_and_stops_normally() {
    let mut c = Connection::new(cfg());
    open_at(&mut c, ms(0));
    c.close(ms(0));
    drain(&mut c);
    c.handle_timeout(ms(1_999));
    assert_eq!(c.state(), State::Closing);
    c.handle_timeout(ms(2_000));
    assert_eq!(
        actions(&mut c),
        [Action::Abort {
            epoch: 1,
            code: 1000
        }]
    );
    assert_eq!(events(&mut c), [Event::Exited(ExitReason::Normal)]);
    assert_eq!(c.state(), State::Stopped);
}

#[test]
fn connect_timeout_backs_off_then_retries() {
    let mut c = Connection::new(cfg());
    c.connect(ms(0));
    drain(&mut c);
    c.handle_timeout(ms(4_999));
    assert_eq!(c.state(), State::Connecting);
    c.handle_timeout(ms(5_000));
    assert_eq!(
        actions(&mut c),
        [Action::Abort {
            epoch: 1,
            code: 1001
        }]
    );
    assert_eq!(
        events(&mut c),
        [reconnecting(1, secs(1), Error::ConnectTimeout)]
    );
    assert_eq!(c.state(), State::Backoff);
    assert_eq!(c.poll_timeout(), Some(ms(6_000)));
    c.handle_timeout(ms(5_999));
    assert!(actions(&mut c).is_empty(), "not before the backoff ends");
    c.handle_timeout(ms(6_000));
    assert_eq!(actions(&mut c), [Action::Connect { epoch: 2 }]);
    assert_eq!(
        events(&mut c),
        [Event::Connecting {
            epoch: 2,
            attempt: 1
        }]
    );
    assert_eq!(c.metrics().reconnects, 1);
}

#[test]
fn refused_walks_the_ladder_then_exhausts() {
    let mut c = Connection::new(cfg());
    c.connect(ms(0));
    drain(&mut c);
    let mut now = ms(0);
    for (attempt, delay) in [(1, 1), (2, 2), (3, 4)] {
        c.handle_error(now, c.epoch(), Error::ConnectionRefused);
        assert_eq!(c.state(), State::Backoff);
        assert!(actions(&mut c).is_empty(), "the driver already dropped it");
        assert_eq!(
            events(&mut c),
            [reconnecting(attempt, secs(delay), Error::ConnectionRefused)]
        );
        assert_eq!(
            c.handle_send(now, b"x", 0),
            Err(SendError::NotConnected),
            "never queued across a reconnect"
        );
        now = c.poll_timeout().unwrap();
        assert_eq!(now, ms(0) + (now - ms(0)));
        c.handle_timeout(now);
        assert!(matches!(actions(&mut c)[..], [Action::Connect { .. }]));
        drain(&mut c);
    }
    assert_eq!(now, ms(7_000), "1 + 2 + 4 s");
    c.handle_error(now, c.epoch(), Error::ConnectionRefused);
    let exit = ExitReason::RetriesExhausted {
        last: Error::ConnectionRefused,
    };
    assert_eq!(events(&mut c), [Event::Exited(exit)]);
    assert_eq!(c.state(), State::Failed(exit));
    assert_eq!(c.health().status, HealthStatus::Failed);
    assert_eq!(c.poll_timeout(), None);
    for t in [now, now + secs(60)] {
        c.handle_timeout(t);
        c.connect(t);
    }
    assert!(actions(&mut c).is_empty(), "no Connect after exhaustion");
    assert_eq!(c.handle_send(now, b"x", 0), Err(SendError::Stopped));
}

#[test]
fn zero_retries_exits_on_first_failure() {
    let mut c = Connection::new(ConnectionConfig {
        retry: RetryPolicy {
            retry_count: RetryCount::Limited(0),
            ..cfg().retry
        },
        ..cfg()
    });
    c.connect(ms(0));
    drain(&mut c);
    c.handle_error(ms(1), 1, Error::Dns);
    assert_eq!(
        events(&mut c),
        [Event::Exited(ExitReason::RetriesExhausted {
            last: Error::Dns
        })]
    );
}

#[test]
fn fatal_errors_exit_without_retry() {
    for error in [
        Error::TlsCertificate,
        Error::from_upgrade_status(401),
        Error::from_upgrade_status(403),
        Error::InvalidUrl,
        Error::Tls,
    ] {
        assert!(!error.is_transient());
        let mut c = Connection::new(cfg());
        c.connect(ms(0));
        drain(&mut c);
        c.handle_error(ms(5), 1, error);
        assert_eq!(events(&mut c), [Event::Exited(ExitReason::Fatal(error))]);
        assert_eq!(c.state(), State::Failed(ExitReason::Fatal(error)));
        assert_eq!(c.poll_timeout(), None, "{error:?}: no retry timer");
        c.handle_timeout(ms(3_600_000));
        assert!(actions(&mut c).is_empty(), "{error:?}: no further Connect");
    }
    // 5xx, 408, 429 on the upgrade are transient: the server is restarting.
    for status in [408, 429, 500, 503] {
        let mut c = Connection::new(cfg());
        c.connect(ms(0));
        drain(&mut c);
        c.handle_error(ms(5), 1, Error::from_upgrade_status(status));
        assert_eq!(c.state(), State::Backoff, "HTTP {status}");
    }
}

#[test]
fn fatal_error_on_an_open_socket_reports_the_drop_then_exits() {
    let mut c = Connection::new(cfg());
    open_at(&mut c, ms(0));
    c.handle_error(ms(5), 1, Error::Protocol);
    assert_eq!(
        events(&mut c),
        [
            Event::Disconnected {
                epoch: 1,
                reason: Error::Protocol
            },
            Event::Exited(ExitReason::Fatal(Error::Protocol)),
        ]
    );
}

#[test]
fn peer_close_codes() {
    let table = [
        (Some(1000), Some(Error::ClosedByPeer)),
        (Some(1001), Some(Error::GoingAway)),
        (Some(1011), Some(Error::AbnormalClose { code: 1011 })),
        (Some(4000), Some(Error::AbnormalClose { code: 4000 })),
        (None, Some(Error::ConnectionReset)),
        // Protocol-level close codes are the peer saying we broke the rules: fatal.
        (Some(1002), None),
        (Some(1009), None),
    ];
    for (code, transient) in table {
        let mut c = Connection::new(cfg());
        open_at(&mut c, ms(0));
        c.handle_closed(ms(100), 1, code);
        let ev = events(&mut c);
        match transient {
            Some(reason) => {
                assert_eq!(
                    ev,
                    [
                        Event::Disconnected { epoch: 1, reason },
                        reconnecting(1, secs(1), reason)
                    ],
                    "{code:?}"
                );
                assert_eq!(c.state(), State::Backoff);
                reopen(&mut c);
                assert_eq!(c.epoch(), 2);
            }
            None => {
                assert!(
                    matches!(
                        ev[..],
                        [
                            Event::Disconnected { .. },
                            Event::Exited(ExitReason::Fatal(_))
                        ]
                    ),
                    "{code:?}: {ev:?}"
                );
            }
        }
        assert!(actions(&mut c).is_empty());
    }
}

fn ping_cfg(interval: u64, timeout: u64) -> ConnectionConfig {
    ConnectionConfig {
        heartbeat: HeartbeatConfig::ping(
            Duration::from_millis(interval),
            Duration::from_millis(timeout),
        ),
        ..cfg()
    }
}

#[test]
fn ping_heartbeat_dead_aborts_with_1011_and_reconnects() {
    let mut c = Connection::new(ping_cfg(100, 50));
    open_at(&mut c, ms(0));
    assert_eq!(c.poll_timeout(), Some(ms(100)));
    // A ping, answered: RTT recorded, healthy.
    c.handle_timeout(ms(100));
    let [Action::Send {
        epoch: 1,
        frame: Frame::Ping { token },
    }] = actions(&mut c)[..]
    else {
        panic!("expected a ping")
    };
    c.handle_pong(ms(104), 1, &token.to_be_bytes());
    assert_eq!(c.health().rtt_last, Some(Duration::from_millis(4)));
    assert_eq!(c.health().last_heartbeat, Some(ms(104)));
    // Two unanswered pings in a row.
    c.handle_timeout(ms(200));
    assert_eq!(actions(&mut c).len(), 1);
    c.handle_timeout(ms(250));
    assert_eq!(events(&mut c), [Event::HeartbeatMissed { consecutive: 1 }]);
    assert_eq!(c.health().status, HealthStatus::Degraded);
    c.handle_timeout(ms(300));
    assert_eq!(actions(&mut c).len(), 1);
    c.handle_timeout(ms(350));
    assert_eq!(
        actions(&mut c),
        [Action::Abort {
            epoch: 1,
            code: 1011
        }]
    );
    assert_eq!(
        events(&mut c),
        [
            Event::HeartbeatMissed { consecutive: 2 },
            Event::HeartbeatFailed,
            Event::Disconnected {
                epoch: 1,
                reason: Error::HeartbeatFailed
            },
            reconnecting(1, secs(1), Error::HeartbeatFailed),
        ]
    );
    assert!(ms(350) - ms(104) <= c.config().heartbeat.detection_bound().unwrap());
    // Reconnect: a late pong of the old socket is ignored, the new one is fresh.
    let (at, epoch) = reopen(&mut c);
    assert_eq!(epoch, 2);
    c.handle_pong(at, 1, &token.to_be_bytes());
    assert_eq!(c.health().consecutive_failures, 0);
    assert_eq!(c.poll_timeout(), Some(at + Duration::from_millis(100)));
}

#[test]
fn late_tick_does_not_spin() {
    // Regression: with timeout == interval and a tick that came late, the next
    // ping's slot passed while the pong was still due; poll_timeout used to
    // report that past slot, making a driver spin until the pong deadline.
    let mut c = Connection::new(ping_cfg(100, 100));
    open_at(&mut c, ms(0));
    c.handle_timeout(ms(105));
    assert_eq!(actions(&mut c).len(), 1);
    assert_eq!(c.poll_timeout(), Some(ms(205)), "the pong is due at 205");
    c.handle_timeout(ms(205));
    assert_eq!(events(&mut c), [Event::HeartbeatMissed { consecutive: 1 }]);
    assert_eq!(
        actions(&mut c).len(),
        1,
        "next ping at once (its slot passed)"
    );
    assert!(c.poll_timeout().unwrap() > ms(205));
}

fn deribit_heartbeat(kind: &str) -> std::string::String {
    std::format!(r#"{{"jsonrpc":"2.0","method":"heartbeat","params":{{"type":"{kind}"}}}}"#)
}

#[test]
fn deribit_heartbeat_dead_aborts_and_reconnects() {
    let mut c = Connection::new(ConnectionConfig {
        heartbeat: HeartbeatConfig::deribit(10),
        ..cfg()
    });
    c.connect(ms(0));
    drain(&mut c);
    c.handle_open(ms(0), 1);
    assert_eq!(events(&mut c), [Event::Opened { epoch: 1 }]);
    let [Action::Send {
        epoch: 1,
        frame:
            Frame::AppSetup {
                id,
                interval_secs: 10,
                ..
            },
    }] = actions(&mut c)[..]
    else {
        panic!("expected set_heartbeat")
    };
    assert!(id >= CORE_ID_BASE);
    // Its answer is the core's, not the user's.
    let answer = std::format!(r#"{{"jsonrpc":"2.0","id":{id},"result":"ok"}}"#);
    assert_eq!(
        c.handle_message(ms(5), 1, answer.as_bytes()),
        Delivery::Consumed
    );
    // test_request is answered at once with public/test and not delivered.
    let tr = deribit_heartbeat("test_request");
    assert_eq!(
        c.handle_message(ms(9_000), 1, tr.as_bytes()),
        Delivery::Consumed
    );
    assert!(matches!(
        actions(&mut c)[..],
        [Action::Send {
            epoch: 1,
            frame: Frame::AppReply { .. }
        }]
    ));
    let hb = deribit_heartbeat("heartbeat");
    assert_eq!(
        c.handle_message(ms(18_000), 1, hb.as_bytes()),
        Delivery::Consumed
    );
    assert!(
        actions(&mut c).is_empty(),
        "plain heartbeats need no answer"
    );
    assert_eq!(c.metrics().messages_in, 0);
    // Silence after 18 s: misses at 33 s and 43 s (interval 10 s, grace 5 s).
    assert_eq!(c.poll_timeout(), Some(ms(33_000)));
    c.handle_timeout(ms(33_000));
    assert_eq!(events(&mut c), [Event::HeartbeatMissed { consecutive: 1 }]);
    c.handle_timeout(ms(43_000));
    assert_eq!(
        actions(&mut c),
        [Action::Abort {
            epoch: 1,
            code: 1011
        }]
    );
    let ev = events(&mut c);
    assert_eq!(ev[1], Event::HeartbeatFailed);
    assert_eq!(ev[3], reconnecting(1, secs(1), Error::HeartbeatFailed));
    assert_eq!(
        ms(43_000) - ms(18_000),
        c.config().heartbeat.detection_bound().unwrap()
    );
    // The new socket asks for heartbeats again.
    let at = c.poll_timeout().unwrap();
    c.handle_timeout(at);
    drain(&mut c);
    c.handle_open(at, 2);
    assert!(matches!(
        actions(&mut c)[..],
        [Action::Send {
            epoch: 2,
            frame: Frame::AppSetup { .. }
        }]
    ));
}

#[test]
fn deribit_late_tick_counts_every_passed_slot() {
    let mut c = Connection::new(ConnectionConfig {
        heartbeat: HeartbeatConfig {
            failure_threshold: 5,
            ..HeartbeatConfig::deribit(10)
        },
        ..cfg()
    });
    open_at(&mut c, ms(0));
    // Due at 15 s, 25 s, 35 s: a tick at 36 s counts all three at once and
    // the next deadline is in the future.
    c.handle_timeout(ms(36_000));
    assert_eq!(events(&mut c), [Event::HeartbeatMissed { consecutive: 3 }]);
    assert_eq!(c.poll_timeout(), Some(ms(45_000)));
}

#[test]
fn custom_heartbeat_dead_aborts_and_reconnects() {
    let mut c = Connection::new(ConnectionConfig {
        heartbeat: HeartbeatConfig {
            strategy: Strategy::Custom {
                interval: Duration::from_millis(100),
                timeout: Duration::from_millis(30),
                payload: br#"{"op":"ping"}"#,
                kind: FrameKind::Text,
                is_reply: |m| m == br#"{"op":"pong"}"#,
            },
            failure_threshold: 2,
        },
        ..cfg()
    });
    open_at(&mut c, ms(0));
    c.handle_timeout(ms(100));
    assert!(matches!(
        actions(&mut c)[..],
        [Action::Send {
            frame: Frame::Custom {
                kind: FrameKind::Text,
                ..
            },
            ..
        }]
    ));
    assert_eq!(
        c.handle_message(ms(110), 1, br#"{"op":"pong"}"#),
        Delivery::Consumed
    );
    assert_eq!(c.health().rtt_last, Some(Duration::from_millis(10)));
    assert_eq!(c.handle_message(ms(111), 1, b"data"), Delivery::Deliver);
    for t in [200, 230, 300] {
        c.handle_timeout(ms(t));
    }
    drain(&mut c);
    c.handle_timeout(ms(330));
    assert_eq!(
        actions(&mut c),
        [Action::Abort {
            epoch: 1,
            code: 1011
        }]
    );
    assert!(events(&mut c).contains(&Event::HeartbeatFailed));
    assert_eq!(c.state(), State::Backoff);
    assert!(ms(330) - ms(110) <= c.config().heartbeat.detection_bound().unwrap());
}

#[test]
fn idle_timeout_is_refreshed_by_data_only() {
    let mut c = Connection::new(ConnectionConfig {
        heartbeat: HeartbeatConfig::deribit(10),
        idle_timeout: Some(secs(12)),
        ..cfg()
    });
    open_at(&mut c, ms(0));
    assert_eq!(c.poll_timeout(), Some(ms(12_000)), "idle before heartbeat");
    // Data at 8 s: the idle deadline moves to 20 s.
    assert_eq!(c.handle_message(ms(8_000), 1, b"{}"), Delivery::Deliver);
    // Server heartbeats keep the transport alive but are not data.
    let hb = deribit_heartbeat("heartbeat");
    for t in [9_000, 18_000] {
        assert_eq!(
            c.handle_message(ms(t), 1, hb.as_bytes()),
            Delivery::Consumed
        );
    }
    assert_eq!(c.poll_timeout(), Some(ms(20_000)));
    c.handle_timeout(ms(19_999));
    assert!(actions(&mut c).is_empty());
    c.handle_timeout(ms(20_000));
    assert_eq!(
        actions(&mut c),
        [Action::Abort {
            epoch: 1,
            code: 1011
        }]
    );
    assert_eq!(
        events(&mut c),
        [
            Event::Disconnected {
                epoch: 1,
                reason: Error::IdleTimeout
            },
            reconnecting(1, secs(1), Error::IdleTimeout),
        ]
    );
    assert_eq!(c.health().last_data, Some(ms(8_000)));
}

#[test]
fn idle_timeout_ignores_pongs() {
    let mut c = Connection::new(ConnectionConfig {
        idle_timeout: Some(Duration::from_millis(250)),
        ..ping_cfg(100, 50)
    });
    open_at(&mut c, ms(0));
    for t in [100, 200] {
        c.handle_timeout(ms(t));
        let [Action::Send {
            frame: Frame::Ping { token },
            ..
        }] = actions(&mut c)[..]
        else {
            panic!()
        };
        c.handle_pong(ms(t + 1), 1, &token.to_be_bytes());
    }
    assert_eq!(c.poll_timeout(), Some(ms(250)));
    c.handle_timeout(ms(250));
    assert!(events(&mut c).contains(&Event::Disconnected {
        epoch: 1,
        reason: Error::IdleTimeout
    }));
}

#[test]
fn user_close_never_restarts() {
    // From every non-terminal state.
    let mut idle = Connection::new(cfg());
    idle.close(ms(0));
    assert_eq!(events(&mut idle), [Event::Exited(ExitReason::Normal)]);
    assert!(actions(&mut idle).is_empty());

    let mut connecting = Connection::new(cfg());
    connecting.connect(ms(0));
    drain(&mut connecting);
    connecting.close(ms(1));
    assert_eq!(
        actions(&mut connecting),
        [Action::Abort {
            epoch: 1,
            code: 1001
        }]
    );
    assert_eq!(events(&mut connecting), [Event::Exited(ExitReason::Normal)]);
    connecting.handle_open(ms(2), 1);
    assert_eq!(connecting.state(), State::Stopped, "a late open is ignored");

    let mut backoff = Connection::new(cfg());
    backoff.connect(ms(0));
    backoff.handle_error(ms(0), 1, Error::ConnectionRefused);
    drain(&mut backoff);
    backoff.close(ms(1));
    assert_eq!(events(&mut backoff), [Event::Exited(ExitReason::Normal)]);
    backoff.handle_timeout(ms(60_000));
    assert!(
        actions(&mut backoff).is_empty(),
        "the backoff timer is gone"
    );

    // Open → Closing, then the socket breaks instead of closing cleanly:
    // still a normal exit, still no reconnect.
    let mut open = Connection::new(cfg());
    open_at(&mut open, ms(0));
    open.close(ms(1));
    drain(&mut open);
    open.handle_error(ms(2), 1, Error::ConnectionReset);
    assert_eq!(events(&mut open), [Event::Exited(ExitReason::Normal)]);
    open.handle_timeout(ms(60_000));
    assert!(actions(&mut open).is_empty());
    open.close(ms(60_001));
    assert!(events(&mut open).is_empty(), "closing twice is a no-op");
}

#[test]
fn closing_sends_no_heartbeat_replies() {
    // Regression: a Deribit test_request arriving after our close frame used
    // to produce a `public/test` data frame after Close (RFC 6455 §5.5.1).
    let mut c = Connection::new(ConnectionConfig {
        heartbeat: HeartbeatConfig::deribit(10),
        ..cfg()
    });
    open_at(&mut c, ms(0));
    c.close(ms(1));
    drain(&mut c);
    let tr = deribit_heartbeat("test_request");
    assert_eq!(
        c.handle_message(ms(2), 1, tr.as_bytes()),
        Delivery::Consumed
    );
    assert!(actions(&mut c).is_empty());
    assert_eq!(c.poll_timeout(), Some(ms(2_001)), "only the close deadline");
}

#[test]
fn too_large_while_closing_still_ends_normally() {
    let mut c = Connection::new(ConnectionConfig {
        max_message_size: 4,
        ..cfg()
    });
    open_at(&mut c, ms(0));
    c.close(ms(1));
    drain(&mut c);
    assert_eq!(c.handle_message(ms(2), 1, b"12345"), Delivery::Stale);
    assert_eq!(
        actions(&mut c),
        [Action::Abort {
            epoch: 1,
            code: 1009
        }]
    );
    assert_eq!(events(&mut c), [Event::Exited(ExitReason::Normal)]);
}

#[test]
fn inbound_message_too_large_is_fatal_1009() {
    let mut c = Connection::new(ConnectionConfig {
        max_message_size: 4,
        ..cfg()
    });
    open_at(&mut c, ms(0));
    assert_eq!(c.handle_message(ms(1), 1, b"1234"), Delivery::Deliver);
    assert_eq!(c.handle_message(ms(1), 1, b"12345"), Delivery::Stale);
    assert_eq!(
        actions(&mut c),
        [Action::Abort {
            epoch: 1,
            code: 1009
        }]
    );
    assert_eq!(
        events(&mut c).last(),
        Some(&Event::Exited(ExitReason::Fatal(Error::MessageTooLarge)))
    );
}

#[test]
fn stale_epoch_inputs_are_ignored() {
    let mut c = Connection::new(ping_cfg(100, 50));
    open_at(&mut c, ms(0));
    c.handle_timeout(ms(100));
    let [Action::Send {
        frame: Frame::Ping { token },
        ..
    }] = actions(&mut c)[..]
    else {
        panic!()
    };
    c.handle_closed(ms(120), 1, None);
    drain(&mut c);
    // Epoch 2 is connecting: nothing of epoch 1 (or a future epoch 3) may act.
    c.handle_timeout(ms(1_120));
    drain(&mut c);
    assert_eq!((c.state(), c.epoch()), (State::Connecting, 2));
    let check = |c: &mut Connection, state| {
        for epoch in [1, 3] {
            c.handle_open(ms(1_200), epoch);
            assert_eq!(c.handle_message(ms(1_200), epoch, b"x"), Delivery::Stale);
            c.handle_pong(ms(1_200), epoch, &token.to_be_bytes());
            assert!(!c.handle_ping(ms(1_200), epoch, b"p"));
            c.handle_error(ms(1_200), epoch, Error::TlsCertificate);
            c.handle_closed(ms(1_200), epoch, Some(1002));
            assert_eq!(c.state(), state);
            assert!(actions(c).is_empty(), "epoch {epoch} acted");
            assert!(events(c).is_empty(), "epoch {epoch} reported");
        }
    };
    check(&mut c, State::Connecting);
    c.handle_open(ms(1_300), 2);
    drain(&mut c);
    check(&mut c, State::Open);
    assert!(c.handle_ping(ms(1_300), 2, b"p"), "the live socket pongs");
    assert_eq!(c.health().consecutive_failures, 0);
    assert_eq!(c.metrics().messages_in, 0);
}

#[test]
fn send_policy() {
    let limit = crate::ratelimit::RateLimit::flat(1, 2);
    let mut c = Connection::new(ConnectionConfig {
        max_message_size: 8,
        max_pending_bytes: 16,
        rate_limit: Some(limit),
        ..cfg()
    });
    assert_eq!(c.handle_send(ms(0), b"x", 0), Err(SendError::NotConnected));
    c.connect(ms(0));
    assert_eq!(c.handle_send(ms(0), b"x", 0), Err(SendError::NotConnected));
    c.handle_error(ms(0), 1, Error::ConnectionRefused);
    drain(&mut c);
    assert_eq!(c.state(), State::Backoff);
    assert_eq!(c.handle_send(ms(0), b"x", 0), Err(SendError::NotConnected));
    reopen(&mut c);
    let t = ms(1_000);
    assert_eq!(
        c.handle_send(t, b"123456789", 0),
        Err(SendError::MessageTooLarge)
    );
    assert_eq!(c.handle_send(t, b"12345678", 9), Err(SendError::QueueFull));
    // A message alone may exceed the pending budget only if nothing is pending.
    assert_eq!(c.handle_send(t, b"1", 0), Ok(()));
    assert_eq!(c.handle_send(t, b"1", 15), Ok(()));
    assert_eq!(
        c.handle_send(t, b"1", 0),
        Err(SendError::RateLimited {
            retry_after: secs(1)
        })
    );
    assert_eq!(
        c.handle_send(t + Duration::from_millis(400), b"1", 0),
        Err(SendError::RateLimited {
            retry_after: Duration::from_millis(600)
        })
    );
    assert_eq!(c.handle_send(t + secs(1), b"1", 0), Ok(()));
    assert_eq!(c.metrics().messages_out, 3, "only accepted sends count");
    c.close(t + secs(1));
    assert_eq!(
        c.handle_send(t + secs(1), b"1", 0),
        Err(SendError::NotConnected)
    );
    c.handle_closed(t + secs(1), 2, Some(1000));
    assert_eq!(c.handle_send(t + secs(1), b"1", 0), Err(SendError::Stopped));

    let mut failed = Connection::new(cfg());
    failed.connect(ms(0));
    failed.handle_error(ms(0), 1, Error::TlsCertificate);
    assert_eq!(failed.handle_send(ms(0), b"x", 0), Err(SendError::Stopped));
}

#[test]
fn restart_continues_epochs_with_a_fresh_ladder() {
    let mut c = Connection::new(ConnectionConfig {
        retry: RetryPolicy {
            retry_count: RetryCount::Limited(1),
            ..cfg().retry
        },
        ..cfg()
    });
    c.connect(ms(0));
    c.handle_error(ms(0), 1, Error::ConnectionRefused);
    c.handle_timeout(ms(1_000));
    c.handle_error(ms(1_000), 2, Error::ConnectionRefused);
    drain(&mut c);
    assert!(c.is_terminated());

    // Supervisor says restart now.
    c.restart(ms(2_000), ms(2_000));
    assert_eq!(actions(&mut c), [Action::Connect { epoch: 3 }]);
    assert_eq!(
        events(&mut c),
        [Event::Connecting {
            epoch: 3,
            attempt: 0
        }]
    );
    assert_eq!(c.metrics().restarts, 1);
    c.handle_error(ms(2_000), 2, Error::TlsCertificate);
    assert_eq!(c.state(), State::Connecting, "old epoch ignored");
    c.handle_error(ms(2_000), 3, Error::ConnectionRefused);
    assert_eq!(
        events(&mut c),
        [reconnecting(1, secs(1), Error::ConnectionRefused)],
        "the new incarnation starts at the bottom of the ladder"
    );

    // Restart later: waits in Backoff until `at`.
    c.restart(ms(3_000), ms(3_500));
    assert_eq!(c.state(), State::Backoff);
    assert_eq!(c.poll_timeout(), Some(ms(3_500)));
    c.handle_timeout(ms(3_500));
    assert_eq!(actions(&mut c), [Action::Connect { epoch: 4 }]);

    // Restart of an open connection aborts its socket first.
    c.handle_open(ms(3_600), 4);
    drain(&mut c);
    c.restart(ms(3_700), ms(3_700));
    assert_eq!(
        actions(&mut c),
        [
            Action::Abort {
                epoch: 4,
                code: 1001
            },
            Action::Connect { epoch: 5 }
        ]
    );
    assert_eq!(c.handle_message(ms(3_701), 4, b"late"), Delivery::Stale);
}

#[test]
fn flapping_server_exhausts_the_ladder() {
    // Accepts, then drops after 2 s — less than reset_after (10 s): the
    // ladder continues across the brief opens instead of starting over.
    let mut c = Connection::new(cfg());
    c.connect(ms(0));
    drain(&mut c);
    let mut now = ms(0);
    let mut delays = Vec::new();
    loop {
        c.handle_open(now, c.epoch());
        drain(&mut c);
        now = now + secs(2);
        c.handle_closed(now, c.epoch(), None);
        let mut exited = None;
        for e in events(&mut c) {
            match e {
                Event::Reconnecting { delay, .. } => delays.push(delay.as_secs()),
                Event::Exited(r) => exited = Some(r),
                _ => {}
            }
        }
        if let Some(r) = exited {
            assert_eq!(
                r,
                ExitReason::RetriesExhausted {
                    last: Error::ConnectionReset
                }
            );
            break;
        }
        now = c.poll_timeout().unwrap();
        c.handle_timeout(now);
        drain(&mut c);
    }
    assert_eq!(delays, [1, 2, 4]);
    assert_eq!(c.metrics().opens, 4);

    // The same drops after a healthy 10 s get a fresh ladder every time.
    let mut c = Connection::new(cfg());
    open_at(&mut c, ms(0));
    let mut now = ms(0);
    for _ in 0..10 {
        now = now + secs(10);
        c.handle_closed(now, c.epoch(), None);
        let ev = events(&mut c);
        assert_eq!(ev[1], reconnecting(1, secs(1), Error::ConnectionReset));
        now = reopen(&mut c).0;
    }
}

#[test]
fn same_seed_same_jitter() {
    let run = |seed| {
        let mut c = Connection::new(ConnectionConfig {
            seed,
            retry: RetryPolicy {
                retry_count: RetryCount::Infinite,
                ..RetryPolicy::default()
            },
            ..cfg()
        });
        c.connect(ms(0));
        let mut out = Vec::new();
        for _ in 0..8 {
            c.handle_error(ms(0), c.epoch(), Error::ConnectionRefused);
            c.handle_timeout(c.poll_timeout().unwrap());
            out.extend(events(&mut c));
        }
        out
    };
    assert_eq!(run(7), run(7));
    assert_ne!(run(7), run(8));
}

#[test]
fn handle_ping_answers_only_the_live_socket() {
    let mut c = Connection::new(cfg());
    assert!(!c.handle_ping(ms(0), 0, b""));
    open_at(&mut c, ms(0));
    assert!(c.handle_ping(ms(0), 1, &[0; 125]));
    assert!(
        !c.handle_ping(ms(0), 1, &[0; 126]),
        "not a valid control frame"
    );
}

fn limited() -> ConnectionConfig {
    ConnectionConfig {
        rate_limit: Some(RateLimit::deribit()),
        ..cfg()
    }
}

const QUERY: &[u8] = br#"{"jsonrpc":"2.0","id":1,"method":"public/get_time"}"#;

#[test]
fn throttle_refuses_sends_and_holds_the_reconnect_until_the_pool_refills() {
    let mut c = Connection::new(limited());
    open_at(&mut c, ms(0));
    assert_eq!(c.throttle(ms(1_000)), secs(5));
    assert_eq!(
        c.handle_send(ms(1_000), QUERY, 0),
        Err(SendError::RateLimited {
            retry_after: Duration::from_millis(50)
        })
    );
    // The server closes the session right after its 10028.
    c.handle_closed(ms(1_100), 1, None);
    assert_eq!(
        events(&mut c),
        [
            Event::Disconnected {
                epoch: 1,
                reason: Error::ConnectionReset
            },
            reconnecting(1, Duration::from_millis(4_900), Error::ConnectionReset),
        ]
    );
    assert_eq!(c.poll_timeout(), Some(ms(6_000)));
    c.handle_timeout(ms(5_999));
    assert!(
        actions(&mut c).is_empty(),
        "not before the credits are back"
    );
    c.handle_timeout(ms(6_000));
    assert_eq!(actions(&mut c), [Action::Connect { epoch: 2 }]);
    c.handle_open(ms(6_000), 2);
    drain(&mut c);
    for _ in 0..100 {
        assert_eq!(c.handle_send(ms(6_000), QUERY, 0), Ok(()));
    }
}

#[test]
fn throttle_in_backoff_extends_it_and_a_short_hold_never_shortens_the_ladder() {
    let mut c = Connection::new(limited());
    open_at(&mut c, ms(0));
    c.handle_error(ms(0), 1, Error::ConnectionReset);
    drain(&mut c);
    assert_eq!(c.poll_timeout(), Some(ms(1_000)));
    // Rate-limited while waiting (e.g. reported late): the wait grows to the refill.
    assert_eq!(c.throttle(ms(500)), secs(5));
    assert_eq!(c.poll_timeout(), Some(ms(5_500)));
    c.handle_timeout(ms(1_000));
    assert!(actions(&mut c).is_empty());
    c.handle_timeout(ms(5_500));
    assert_eq!(actions(&mut c), [Action::Connect { epoch: 2 }]);
    // A hold that already passed does not shorten the next delays.
    c.handle_error(ms(20_000), 2, Error::ConnectionRefused);
    assert_eq!(
        c.poll_timeout(),
        Some(ms(22_000)),
        "the 2 s step of the ladder"
    );
}

#[test]
fn restart_honours_the_hold_and_keeps_the_pools() {
    let mut c = Connection::new(limited());
    open_at(&mut c, ms(0));
    c.throttle(ms(0));
    c.restart(ms(10), ms(10));
    let a = actions(&mut c);
    assert_eq!(
        a,
        [Action::Abort {
            epoch: 1,
            code: 1001
        }],
        "no Connect yet"
    );
    assert_eq!(c.state(), State::Backoff);
    assert_eq!(c.poll_timeout(), Some(ms(5_000)));
    c.handle_timeout(ms(5_000));
    assert_eq!(actions(&mut c), [Action::Connect { epoch: 2 }]);
}

#[test]
fn throttle_without_a_rate_limit_holds_nothing() {
    let mut c = Connection::new(cfg());
    open_at(&mut c, ms(0));
    assert_eq!(c.throttle(ms(0)), Duration::ZERO);
    assert_eq!(c.handle_send(ms(0), QUERY, 0), Ok(()));
    c.handle_closed(ms(0), 1, None);
    assert_eq!(c.poll_timeout(), Some(ms(1_000)));
}

#[test]
fn refused_set_heartbeat_surfaces_and_is_retried_without_false_failures() {
    let mut c = Connection::new(ConnectionConfig {
        heartbeat: HeartbeatConfig::deribit(10),
        ..cfg()
    });
    c.connect(ms(0));
    drain(&mut c);
    c.handle_open(ms(0), 1);
    assert_eq!(events(&mut c), [Event::Opened { epoch: 1 }]);
    drain_setup_refusals(&mut c, ms(0), 120_000);
}

/// Refuse every `set_heartbeat` for `span_ms`: each refusal is one
/// `HeartbeatSetupFailed`, each retry a new request on the socket, and no
/// heartbeat miss or failure is reported meanwhile.
fn drain_setup_refusals(c: &mut Connection, start: Instant, span_ms: u64) {
    let mut pending = None;
    for a in actions(c) {
        if let Action::Send {
            epoch: 1,
            frame: Frame::AppSetup { id, .. },
        } = a
        {
            pending = Some(id);
        }
    }
    let mut now = start;
    let mut refusals = 0;
    let end = start + Duration::from_millis(span_ms);
    while now < end {
        if let Some(id) = pending.take() {
            let answer = std::format!(
                r#"{{"jsonrpc":"2.0","id":{id},"error":{{"code":10028,"message":"x"}}}}"#
            );
            now = now + Duration::from_millis(20);
            assert_eq!(
                c.handle_message(now, 1, answer.as_bytes()),
                Delivery::Consumed
            );
            refusals += 1;
        }
        for e in events(c) {
            match e {
                Event::HeartbeatSetupFailed { code: 10028 } => {}
                e => panic!("unexpected {e:?} at {now:?}"),
            }
        }
        now = c.poll_timeout().expect("a retry is scheduled");
        c.handle_timeout(now);
        for a in actions(c) {
            match a {
                Action::Send {
                    epoch: 1,
                    frame: Frame::AppSetup { id, .. },
                } => pending = Some(id),
                a => panic!("unexpected {a:?}"),
            }
        }
        assert!(pending.is_some(), "every due timer was a retry");
    }
    assert!(refusals >= 12, "{refusals}");
    assert_eq!(c.state(), State::Open);
    assert_eq!(c.health().consecutive_failures, 0);
}
