//! Fault injection (issue 4, part 2): a `FaultProxy` between real driver
//! clients and a real server, plain and TLS. Server restart under load,
//! half-open connections (ping and Deribit heartbeats), a flapping server
//! and the restart budget, a slow server and backpressure, garbage and
//! truncated frames.

mod common;

use common::*;
use std::time::Duration;
use zenws_core::heartbeat::Strategy;
use zenws_core::retry::RetryCount;
use zenws_core::supervisor::{RestartIntensity, RestartType, SupervisorConfig};
use zenws_core::{Error as Reason, ExitReason, HeartbeatConfig, SendError, State};
use zenws_mio::{ClientConfig, ClientEvent, ClientId, ClientSupervisor, Error, ManualClock};
use zenws_tests::{
    DeribitOptions, DeribitServer, EchoOptions, EchoServer, FaultProxy, ProxyMode, TestPki,
};

/// An echo server (plain or TLS) behind a fault proxy, and the client
/// config that trusts it.
struct Setup {
    echo: EchoServer,
    proxy: FaultProxy,
    url: String,
    cfg: ClientConfig,
    _ca: Option<CaFile>,
}

struct CaFile(std::path::PathBuf);
impl Drop for CaFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn setup(tls: bool, cfg: ClientConfig) -> Setup {
    if tls {
        let pki = TestPki::generate();
        let echo = EchoServer::start(EchoOptions::tls(pki.server_config())).unwrap();
        let proxy = FaultProxy::start(echo.addr()).unwrap();
        let ca = CaFile(pki.write_ca_temp_file().unwrap());
        Setup {
            url: proxy.tls_url("/"),
            cfg: cfg.ca_file(&ca.0),
            echo,
            proxy,
            _ca: Some(ca),
        }
    } else {
        let echo = EchoServer::plain().unwrap();
        let proxy = FaultProxy::start(echo.addr()).unwrap();
        Setup {
            url: proxy.url("/"),
            cfg,
            echo,
            proxy,
            _ca: None,
        }
    }
}

/// Reconnect forever, quickly (10..100 ms apart, jittered).
fn resilient() -> ClientConfig {
    let mut c = fast(RetryCount::Infinite);
    c.connection.retry.max_backoff = Duration::from_millis(100);
    c
}

fn restart_under_load(tls: bool, n: usize) {
    let s = setup(tls, resilient());
    let mut sup = ClientSupervisor::new().unwrap();
    let ids: Vec<ClientId> = (0..n)
        .map(|_| sup.start_client(&s.url, s.cfg.clone()).unwrap())
        .collect();
    run_until(&mut sup, 20, |_, ev| {
        ids.iter().all(|&id| opened(ev, id) == 1)
    });
    // Load: every client always has a message in flight; each echo
    // triggers the next one. Sends during the outage are refused.
    let mut seq = vec![0u32; ids.len()];
    let mut refused = 0usize;
    for &id in &ids {
        sup.send_text(id, format!("{}:0", id.0)).unwrap();
    }
    let pump =
        |sup: &mut ClientSupervisor, ev: &[ClientEvent], seq: &mut [u32], refused: &mut usize| {
            for e in ev {
                let ClientEvent::Message { id, message } = e else {
                    continue;
                };
                let i = ids.iter().position(|x| x == id).unwrap();
                if message.as_text() == Some(&format!("{}:{}", id.0, seq[i])) {
                    seq[i] += 1;
                    match sup.send_text(*id, format!("{}:{}", id.0, seq[i])) {
                        Ok(()) => {}
                        Err(Error::Send(SendError::NotConnected)) => *refused += 1,
                        Err(e) => panic!("{e:?}"),
                    }
                }
            }
        };
    let mut seen = 0;
    run_until(&mut sup, 20, |sup, ev| {
        pump(sup, &ev[seen..], &mut seq, &mut refused);
        seen = ev.len();
        seq.iter().all(|&k| k >= 3)
    });

    s.echo.stop();
    let mut seen = 0;
    run_until(&mut sup, 20, |sup, ev| {
        pump(sup, &ev[seen..], &mut seq, &mut refused);
        seen = ev.len();
        ids.iter().all(|&id| {
            ev.iter()
                .any(|e| matches!(e, ClientEvent::Disconnected { id: i, .. } if *i == id))
        })
    });
    s.echo.restart().unwrap();
    let ev = run_until(&mut sup, 30, |_, ev| {
        ids.iter().all(|&id| opened(ev, id) >= 1)
    });
    assert!(!ev.iter().any(|e| matches!(
        e,
        ClientEvent::Failed { .. } | ClientEvent::Stopped { .. } | ClientEvent::Restarted { .. }
    )));
    // Every client resumes: a fresh message echoes on each.
    for &id in &ids {
        sup.send_text(id, format!("again{}", id.0)).unwrap();
    }
    run_until(&mut sup, 20, |_, ev| {
        ids.iter()
            .all(|&id| echoed(ev, id, &format!("again{}", id.0)))
    });
    assert_eq!(sup.len(), n);
    assert!(s.proxy.live_connections() >= n);
    for &id in &ids {
        assert_eq!(sup.metrics(id).unwrap().opens, 2);
    }
}

#[test]
fn server_restart_under_load_200_clients_plain() {
    restart_under_load(false, 200);
}

#[test]
fn server_restart_under_load_tls() {
    restart_under_load(true, 40);
}

/// The path goes silent both ways while both sockets stay open (proxy
/// blackhole): only the ping heartbeat can tell. It declares the peer dead,
/// reconnects (attempts time out while the blackhole lasts) and recovers
/// when the path does. A client on a healthy path keeps echoing.
fn half_open_by_ping(tls: bool) {
    let mut cfg = resilient();
    cfg.connection.heartbeat =
        HeartbeatConfig::ping(Duration::from_millis(50), Duration::from_millis(50));
    cfg.connection.connect_timeout = Duration::from_millis(300);
    let s = setup(tls, cfg);
    let direct = EchoServer::plain().unwrap();
    let mut sup = ClientSupervisor::new().unwrap();
    let id = sup.start_client(&s.url, s.cfg.clone()).unwrap();
    let good = sup.start_client(&direct.url(), quiet()).unwrap();
    run_until(&mut sup, 10, |s, ev| {
        opened(ev, id) == 1 && opened(ev, good) == 1 && s.health(id).unwrap().rtt_last.is_some()
    });

    s.proxy.set_mode(ProxyMode::Blackhole);
    let mut n = 0;
    sup.send_text(good, "g0").unwrap();
    let ev = run_until(&mut sup, 10, |sup, ev| {
        if echoed(ev, good, &format!("g{n}")) {
            n += 1;
            sup.send_text(good, format!("g{n}")).unwrap();
        }
        reconnect_reasons(ev, id).contains(&Reason::ConnectTimeout)
    });
    let mine: Vec<&ClientEvent> = ev.iter().filter(|e| e.client() == Some(id)).collect();
    let failed_at = mine
        .iter()
        .position(|e| matches!(e, ClientEvent::HeartbeatFailed { .. }))
        .unwrap_or_else(|| panic!("{mine:#?}"));
    assert!(
        matches!(
            mine[..failed_at],
            [
                ..,
                ClientEvent::HeartbeatMissed { consecutive: 1, .. },
                ClientEvent::HeartbeatMissed { consecutive: 2, .. }
            ]
        ),
        "{mine:#?}"
    );
    assert!(matches!(
        mine[failed_at + 1..],
        [
            ClientEvent::Disconnected {
                reason: Reason::HeartbeatFailed,
                ..
            },
            ClientEvent::Reconnecting {
                reason: Reason::HeartbeatFailed,
                ..
            },
            ..
        ]
    ));

    s.proxy.set_mode(ProxyMode::PassThrough);
    run_until(&mut sup, 10, |_, ev| opened(ev, id) == 1);
    sup.send_text(id, "through again").unwrap();
    let ev = run_until(&mut sup, 10, |s, ev| {
        echoed(ev, id, "through again") && s.health(id).unwrap().rtt_last.is_some()
    });
    assert!(echoed(&ev, id, "through again"));
    assert!(n >= 1, "the healthy client stalled");
    assert_eq!(sup.state(good), Some(State::Open));
    assert_eq!(sup.metrics(good).unwrap().opens, 1);
    drop(s.echo);
}

#[test]
fn half_open_detected_by_ping_plain() {
    half_open_by_ping(false);
}

#[test]
fn half_open_detected_by_ping_tls() {
    half_open_by_ping(true);
}

/// Deribit's application heartbeat against a Deribit-compatible server
/// behind the proxy.
///
/// Deribit's `set_heartbeat` interval is in whole seconds, at least 10, so
/// detection takes ≥ 20 s of real time. The server compresses its seconds
/// (`heartbeat_unit` 10 ms: a heartbeat + test_request every 100 ms), and
/// the client's supervisor runs on a `ManualClock` that the test advances
/// by tens of seconds at once; the sockets run in real time. The test only
/// advances the clock while the client is open (a connect timeout is
/// never due), and waits for real traffic between steps.
#[test]
fn half_open_detected_by_deribit_heartbeat() {
    let server = DeribitServer::start(DeribitOptions {
        heartbeat_unit: Duration::from_millis(10),
        ..DeribitOptions::default()
    })
    .unwrap();
    let proxy = FaultProxy::start(server.addr()).unwrap();
    let clock = ManualClock::new();
    let mut sup = ClientSupervisor::new().unwrap();
    sup.set_clock(Box::new(clock.clone()));
    let mut cfg = resilient();
    cfg.connection.heartbeat = HeartbeatConfig::default()
        .with_strategy(Strategy::Application {
            dialect: &zenws_core::exchange::deribit::DIALECT,
            interval_secs: 10,
            grace: Duration::from_secs(1),
        })
        .with_failure_threshold(2);
    let id = sup.start_client(&proxy.url("/ws/api/v2"), cfg).unwrap();
    run_until(&mut sup, 10, |_, ev| opened(ev, id) == 1);
    let tests_answered = |n: usize| server.count_method("public/test") >= n;
    run_until(&mut sup, 10, |_, _| tests_answered(2));
    assert_eq!(server.count_method("public/set_heartbeat"), 1);

    // Heartbeats keep it alive: 3 × 8 s of virtual time, each step < the
    // 11 s deadline, with a real heartbeat (answered) after each.
    for _ in 0..3 {
        let answered = server.count_method("public/test");
        clock.advance(Duration::from_secs(8));
        run_until(&mut sup, 10, |_, _| tests_answered(answered + 1));
    }
    let ev = run_for(&mut sup, Duration::from_millis(50));
    assert!(!ev.iter().any(|e| matches!(
        e,
        ClientEvent::HeartbeatMissed { .. } | ClientEvent::Disconnected { .. }
    )));
    assert_eq!(sup.state(id), Some(State::Open));

    // Half-open: nothing passes any more, both sockets stay open.
    proxy.set_mode(ProxyMode::Blackhole);
    run_for(&mut sup, Duration::from_millis(300));
    clock.advance(Duration::from_secs(10));
    let ev = run_for(&mut sup, Duration::from_millis(50));
    assert!(
        !ev.iter()
            .any(|e| matches!(e, ClientEvent::HeartbeatFailed { .. })),
        "{ev:#?}"
    );
    clock.advance(Duration::from_secs(15));
    let ev = run_until(&mut sup, 10, |_, ev| !reconnect_reasons(ev, id).is_empty());
    assert!(ev
        .iter()
        .any(|e| matches!(e, ClientEvent::HeartbeatFailed { .. })));
    assert_eq!(reconnect_reasons(&ev, id), vec![Reason::HeartbeatFailed]);

    // The path heals: the next attempt (due in virtual time) opens and asks
    // for heartbeats again on the new connection.
    proxy.set_mode(ProxyMode::PassThrough);
    clock.advance(Duration::from_secs(1));
    run_until(&mut sup, 10, |_, ev| opened(ev, id) == 1);
    run_until(&mut sup, 10, |_, _| {
        server.count_method("public/set_heartbeat") == 2
    });

    // The server stops its heartbeats on a healthy transport (pings would
    // still be answered): the Deribit heartbeat notices that too.
    run_until(&mut sup, 10, |_, _| {
        server
            .methods_on(server.connections_accepted() - 1)
            .iter()
            .any(|m| m == "public/test")
    });
    server.set_send_heartbeats(false);
    run_for(&mut sup, Duration::from_millis(300));
    clock.advance(Duration::from_secs(25));
    let ev = run_until(&mut sup, 10, |_, ev| !reconnect_reasons(ev, id).is_empty());
    assert_eq!(reconnect_reasons(&ev, id), vec![Reason::HeartbeatFailed]);
    clock.advance(Duration::from_secs(1));
    run_until(&mut sup, 10, |_, ev| opened(ev, id) == 1);
    assert_eq!(sup.metrics(id).unwrap().opens, 3);
}

fn budget(max_restarts: u32) -> SupervisorConfig {
    SupervisorConfig::default()
        .with_intensity(RestartIntensity {
            max_restarts,
            max_seconds: Duration::from_secs(60),
        })
        .with_restart_delay(Duration::ZERO)
}

/// A flapping path (the proxy accepts and closes every connection) in front
/// of a healthy server. Supervisor A holds two flapping clients and a
/// healthy sibling on a direct path; supervisor B one client on another
/// healthy proxy. A's budget (3 restarts / 60 s) runs out: reported once;
/// before that the sibling is untouched (one-for-one), after it every A
/// child is stopped (escalation). B, in the same thread, never notices.
#[test]
fn flapping_path_exhausts_the_budget_once_other_supervisor_unaffected() {
    let echo = EchoServer::plain().unwrap();
    let flapping = FaultProxy::start(echo.addr()).unwrap();
    flapping.set_mode(ProxyMode::Close);
    let healthy = FaultProxy::start(echo.addr()).unwrap();
    let mut a = ClientSupervisor::with_config(budget(3)).unwrap();
    let mut b = ClientSupervisor::new().unwrap();
    let sibling = a.start_client(&echo.url(), quiet()).unwrap();
    let other = b.start_client(&healthy.url("/"), quiet()).unwrap();
    run_two_until(&mut a, &mut b, 10, |_, ea, _, eb| {
        opened(ea, sibling) == 1 && opened(eb, other) == 1
    });
    let flappers: Vec<ClientId> = (0..2)
        .map(|_| {
            a.start_client(&flapping.url("/"), fast(RetryCount::Limited(2)))
                .unwrap()
        })
        .collect();
    let (mut sa, mut sb) = (0u32, 0u32);
    a.send_text(sibling, "a0").unwrap();
    b.send_text(other, "b0").unwrap();
    let (ea, eb) = run_two_until(&mut a, &mut b, 20, |a, ea, b, eb| {
        if !a.is_terminated() && echoed(ea, sibling, &format!("a{sa}")) {
            sa += 1;
            a.send_text(sibling, format!("a{sa}")).unwrap();
        }
        if echoed(eb, other, &format!("b{sb}")) {
            sb += 1;
            b.send_text(other, format!("b{sb}")).unwrap();
        }
        a.is_terminated() && a.is_empty() && sb >= 3
    });
    assert_eq!(
        count(&ea, |e| matches!(e, ClientEvent::BudgetExhausted { .. })),
        1
    );
    assert_eq!(
        count(&ea, |e| matches!(e, ClientEvent::Restarted { .. })),
        3
    );
    let escalation = escalation_index(&ea);
    // Before: the sibling only echoed.
    assert!(ea[..escalation]
        .iter()
        .filter(|e| e.client() == Some(sibling))
        .all(|e| matches!(e, ClientEvent::Opened { .. } | ClientEvent::Message { .. })));
    for id in flappers.iter().copied().chain([sibling]) {
        assert!(exit_of(&ea, id).is_some(), "{id}");
    }
    assert!(flapping.connections() >= 4);
    // B saw nothing but its own echoes.
    assert!(eb
        .iter()
        .all(|e| matches!(e, ClientEvent::Opened { .. } | ClientEvent::Message { .. })));
    assert!(matches!(
        a.start_client(&echo.url(), quiet()),
        Err(Error::SupervisorTerminated)
    ));
    // A's loop stays healthy (and silent); B keeps going.
    let before = sb;
    let (ea, _) = run_two_until(&mut a, &mut b, 10, |_, _, b, eb| {
        if echoed(eb, other, &format!("b{sb}")) {
            sb += 1;
            b.send_text(other, format!("b{sb}")).unwrap();
        }
        sb >= before + 3
    });
    assert!(ea.is_empty());
}

/// A slow server (the proxy throttles server→client to 64 KB/s): the echo
/// server blocks on its writes, stops reading, and the pressure reaches
/// the client, whose sends are then refused with `QueueFull` — and keep
/// being refused (the queue does not grow) until the path speeds up again.
/// Heartbeats are off: a pong stuck behind the throttle is not the point.
#[test]
fn slow_server_backpressure_is_bounded() {
    let mut cfg = resilient();
    cfg.connection.max_pending_bytes = 256 << 10;
    let s = setup(false, cfg);
    let mut sup = ClientSupervisor::new().unwrap();
    let id = sup.start_client(&s.url, s.cfg.clone()).unwrap();
    run_until(&mut sup, 10, |_, ev| opened(ev, id) == 1);
    s.proxy.set_mode(ProxyMode::Throttle(64_000));

    let chunk = vec![3u8; 64 << 10];
    let mut accepted = 0usize;
    let mut full = 0;
    let mut received = 0usize;
    for _ in 0..4096 {
        match sup.send_binary(id, chunk.clone()) {
            Ok(()) => accepted += 1,
            Err(Error::Send(SendError::QueueFull)) => {
                full += 1;
                if full == 20 {
                    break;
                }
            }
            Err(e) => panic!("{e:?}"),
        }
        sup.run_once(Some(Duration::from_millis(1))).unwrap();
        received += std::iter::from_fn(|| sup.poll_event())
            .filter(|e| matches!(e, ClientEvent::Message { .. }))
            .count();
    }
    assert_eq!(full, 20, "no backpressure after {accepted} messages");
    assert!(
        accepted * chunk.len() < 128 << 20,
        "{accepted} messages accepted"
    );
    // Under the throttle the queue drains slowly, so a send fits now and
    // then. Stall the path completely: once the last free space is taken,
    // every send is refused however often we try (the queue is bounded).
    s.proxy.set_mode(ProxyMode::Blackhole);
    let mut refused_in_a_row = 0;
    for _ in 0..4096 {
        sup.run_once(Some(Duration::from_millis(1))).unwrap();
        received += std::iter::from_fn(|| sup.poll_event())
            .filter(|e| matches!(e, ClientEvent::Message { .. }))
            .count();
        match sup.send_binary(id, chunk.clone()) {
            Ok(()) => {
                accepted += 1;
                refused_in_a_row = 0;
            }
            Err(Error::Send(SendError::QueueFull)) => {
                refused_in_a_row += 1;
                if refused_in_a_row == 100 {
                    break;
                }
            }
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(refused_in_a_row, 100);
    assert!(
        accepted * chunk.len() < 128 << 20,
        "{accepted} messages accepted"
    );
    assert_eq!(sup.state(id), Some(State::Open));

    // The path speeds up: the backlog drains, every accepted message is
    // echoed, in full, and sends are accepted again.
    s.proxy.set_mode(ProxyMode::PassThrough);
    let ev = run_until(&mut sup, 20, |_, ev| {
        received + messages(ev, id) == accepted
    });
    assert!(ev.iter().all(|e| match e {
        ClientEvent::Message { message, .. } => message.as_bytes().len() == chunk.len(),
        other => panic!("{other:?}"),
    }));
    sup.send_text(id, "fast again").unwrap();
    run_until(&mut sup, 10, |_, ev| echoed(ev, id, "fast again"));
    assert_eq!(sup.metrics(id).unwrap().opens, 1);
}

/// Garbage in the middle of a stream is a protocol violation: fatal per the
/// error table (plain: `Protocol`; under TLS the record layer rejects it
/// first: `Tls`). A transient client fails for good without retrying; a
/// permanent one is restarted by the supervisor and recovers once the
/// path is clean.
fn garbage(tls: bool) {
    let s = setup(tls, resilient());
    let cfg = budget(10).with_restart_delay(Duration::from_millis(100));
    let mut sup = ClientSupervisor::with_config(cfg).unwrap();
    let transient = sup.start_client(&s.url, s.cfg.clone()).unwrap();
    let mut perm = s.cfg.clone();
    perm.restart = RestartType::Permanent;
    let permanent = sup.start_client(&s.url, perm).unwrap();
    run_until(&mut sup, 10, |_, ev| {
        opened(ev, transient) == 1 && opened(ev, permanent) == 1
    });
    s.proxy.set_mode(ProxyMode::InjectGarbage);
    let ev = run_until(&mut sup, 10, |_, ev| {
        [transient, permanent].iter().all(|&id| {
            ev.iter()
                .any(|e| matches!(e, ClientEvent::Disconnected { id: i, .. } if *i == id))
        })
    });
    s.proxy.set_mode(ProxyMode::PassThrough);
    let want = if tls { Reason::Tls } else { Reason::Protocol };
    for id in [transient, permanent] {
        assert!(
            ev.iter().any(|e| matches!(e, ClientEvent::Disconnected { id: i, reason, .. } if *i == id && *reason == want)),
            "{ev:#?}"
        );
        assert!(reconnect_reasons(&ev, id).is_empty(), "fatal: no retry");
    }
    let mut ev = ev;
    ev.extend(run_until(&mut sup, 10, |_, ev| opened(ev, permanent) >= 1));
    assert_eq!(failed_with(&ev, transient), Some(ExitReason::Fatal(want)));
    assert!(ev.iter().any(|e| matches!(
        e,
        ClientEvent::Restarted { id, reason: ExitReason::Fatal(r), .. } if *id == permanent && *r == want
    )));
    sup.send_text(permanent, "clean").unwrap();
    run_until(&mut sup, 10, |_, ev| echoed(ev, permanent, "clean"));
    assert_eq!(sup.list_clients(), vec![permanent]);
    assert!(!sup.is_terminated());
}

#[test]
fn garbage_is_a_protocol_error_plain() {
    garbage(false);
}

#[test]
fn garbage_is_a_fatal_error_tls() {
    garbage(true);
}

/// A frame cut in half (the proxy forwards 100 more bytes, then closes
/// both sides) is a connection lost without a close frame: transient
/// (`ConnectionReset`), so the client reconnects; while the proxy keeps
/// cutting (the upgrade response is cut too), attempts keep failing
/// transiently; once it stops, the client is back.
fn truncated(tls: bool) {
    let s = setup(tls, resilient());
    let mut sup = ClientSupervisor::new().unwrap();
    let id = sup.start_client(&s.url, s.cfg.clone()).unwrap();
    run_until(&mut sup, 10, |_, ev| opened(ev, id) == 1);
    s.proxy.set_mode(ProxyMode::TruncateAfter(100));
    std::thread::sleep(Duration::from_millis(50));
    sup.send_binary(id, vec![9u8; 10_000]).unwrap();
    let ev = run_until(&mut sup, 10, |_, ev| reconnect_reasons(ev, id).len() >= 3);
    assert!(
        ev.iter().any(|e| matches!(
            e,
            ClientEvent::Disconnected { id: i, reason: Reason::ConnectionReset, .. } if *i == id
        )),
        "{ev:#?}"
    );
    assert!(reconnect_reasons(&ev, id)
        .iter()
        .all(|r| *r == Reason::ConnectionReset));
    assert_eq!(messages(&ev, id), 0, "a cut frame was delivered");
    s.proxy.set_mode(ProxyMode::PassThrough);
    run_until(&mut sup, 10, |_, ev| opened(ev, id) == 1);
    sup.send_binary(id, vec![9u8; 10_000]).unwrap();
    run_until(&mut sup, 10, |_, ev| messages(ev, id) == 1);
}

#[test]
fn truncated_frames_reconnect_plain() {
    truncated(false);
}

#[test]
fn truncated_frames_reconnect_tls() {
    truncated(true);
}
