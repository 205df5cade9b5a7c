//! The mio driver against every bad input and failing server (issue 3):
//! each failure gets the error table's answer (fatal = no retry, transient =
//! retry ladder), API misuse gets a typed error, and the loop and every
//! other client keep running throughout.

mod common;

use common::*;
use std::time::{Duration, Instant};
use zenws_core::retry::RetryCount;
use zenws_core::supervisor::RestartType;
use zenws_core::{Error as Reason, ExitReason, HealthStatus, HeartbeatConfig, SendError, State};
use zenws_mio::{Client, ClientEvent, ClientId, ClientSupervisor, Error};
use zenws_tests::{Behavior, EchoOptions, EchoServer, MisbehavingServer, TestPki};

#[test]
fn invalid_urls_are_rejected_at_start() {
    let mut sup = ClientSupervisor::new().unwrap();
    for url in [
        "http://127.0.0.1:1/",
        "ftp://example.com/",
        "not a url",
        "",
        "ws://",
        "wss:///path",
        "ws://127.0.0.1:99999/",
    ] {
        match sup.start_client(url, quiet()) {
            Err(Error::InvalidUrl(u)) => assert_eq!(u, url),
            other => panic!("{url:?}: expected InvalidUrl, got {other:?}"),
        }
    }
    assert!(sup.is_empty());
    assert!(sup.poll_event().is_none());
    // The supervisor is still usable.
    let server = EchoServer::plain().unwrap();
    let id = sup.start_client(&server.url(), quiet()).unwrap();
    run_until(&mut sup, 10, |_, ev| opened(ev, id) == 1);
}

#[test]
fn refused_port_retries_then_fails() {
    let port = refused_port();
    let mut sup = ClientSupervisor::new().unwrap();
    let mut cfg = fast(RetryCount::Limited(2));
    cfg.restart = RestartType::Temporary;
    let id = sup
        .start_client(&format!("ws://127.0.0.1:{port}/"), cfg)
        .unwrap();
    let ev = run_until(&mut sup, 10, |_, ev| exit_of(ev, id).is_some());
    assert_eq!(
        reconnect_reasons(&ev, id),
        vec![Reason::ConnectionRefused, Reason::ConnectionRefused],
        "{ev:#?}"
    );
    let attempts: Vec<u32> = ev
        .iter()
        .filter_map(|e| match e {
            ClientEvent::Reconnecting { attempt, .. } => Some(*attempt),
            _ => None,
        })
        .collect();
    assert_eq!(attempts, vec![1, 2]);
    assert_eq!(
        failed_with(&ev, id),
        Some(ExitReason::RetriesExhausted {
            last: Reason::ConnectionRefused
        })
    );
    assert!(sup.is_empty());
    assert!(matches!(
        sup.send_text(id, "x"),
        Err(Error::UnknownClient(i)) if i == id
    ));
}

#[test]
fn upgrade_401_and_403_are_fatal_503_is_transient() {
    for status in [401u16, 403] {
        let srv = MisbehavingServer::start(Behavior::HttpStatus(status)).unwrap();
        let mut sup = ClientSupervisor::new().unwrap();
        // Default restart type (transient) and retries: still no retry.
        let id = sup.start_client(&srv.url(), quiet()).unwrap();
        let ev = run_until(&mut sup, 10, |_, ev| exit_of(ev, id).is_some());
        assert_eq!(
            failed_with(&ev, id),
            Some(ExitReason::Fatal(Reason::UpgradeRejected { status })),
            "{ev:#?}"
        );
        assert!(reconnect_reasons(&ev, id).is_empty());
        assert!(!ev
            .iter()
            .any(|e| matches!(e, ClientEvent::Restarted { .. })));
        run_for(&mut sup, Duration::from_millis(100));
        assert_eq!(srv.connections_accepted(), 1, "{status}: retried");
        assert!(!sup.is_terminated());
    }

    let srv = MisbehavingServer::start(Behavior::HttpStatus(503)).unwrap();
    let mut sup = ClientSupervisor::new().unwrap();
    let mut cfg = fast(RetryCount::Limited(2));
    cfg.restart = RestartType::Temporary;
    let id = sup.start_client(&srv.url(), cfg).unwrap();
    let ev = run_until(&mut sup, 10, |_, ev| exit_of(ev, id).is_some());
    let unavailable = Reason::UpgradeUnavailable { status: 503 };
    assert_eq!(reconnect_reasons(&ev, id), vec![unavailable, unavailable]);
    assert_eq!(
        failed_with(&ev, id),
        Some(ExitReason::RetriesExhausted { last: unavailable })
    );
    assert_eq!(srv.connections_accepted(), 3);
}

/// A client with generous retries and the default (transient) restart type
/// against a TLS `server` it must not trust (trusting `ca`): a certificate
/// error, fatal, after exactly one attempt — never retried or restarted.
fn certificate_error_after_one_attempt(server: &EchoServer, ca: &std::path::Path) {
    let mut sup = ClientSupervisor::new().unwrap();
    let id = sup
        .start_client(&server.url(), fast(RetryCount::Infinite).ca_file(ca))
        .unwrap();
    let ev = run_until(&mut sup, 10, |_, ev| exit_of(ev, id).is_some());
    assert_eq!(
        failed_with(&ev, id),
        Some(ExitReason::Fatal(Reason::TlsCertificate)),
        "{ev:#?}"
    );
    assert!(reconnect_reasons(&ev, id).is_empty());
    run_for(&mut sup, Duration::from_millis(150));
    assert_eq!(server.connections_accepted(), 1);
}

#[test]
fn tls_unknown_ca_is_fatal_with_exactly_one_attempt() {
    let server_pki = TestPki::generate();
    let other_pki = TestPki::generate();
    let server = EchoServer::start(EchoOptions::tls(server_pki.server_config())).unwrap();
    let wrong_ca = other_pki.write_ca_temp_file().unwrap();
    certificate_error_after_one_attempt(&server, &wrong_ca);
    let _ = std::fs::remove_file(wrong_ca);
}

#[test]
fn tls_name_mismatch_is_fatal() {
    let pki = TestPki::generate_for(&["other.example"]);
    let server = EchoServer::start(EchoOptions::tls(pki.server_config())).unwrap();
    let ca = pki.write_ca_temp_file().unwrap();
    certificate_error_after_one_attempt(&server, &ca);
    let _ = std::fs::remove_file(ca);
}

/// Bad servers of every kind in one supervisor next to a healthy echo
/// client: each bad client ends with the error table's answer, the healthy
/// one keeps echoing the whole time, and the supervisor never escalates.
#[test]
fn bad_servers_fail_only_their_client_while_the_loop_keeps_echoing() {
    let echo = EchoServer::plain().unwrap();
    let oversize = MisbehavingServer::start(Behavior::OversizeFrame(1 << 40)).unwrap();
    let utf8 = MisbehavingServer::start(Behavior::InvalidUtf8).unwrap();
    let garbage = MisbehavingServer::start(Behavior::Garbage).unwrap();
    let forbidden = MisbehavingServer::start(Behavior::HttpStatus(403)).unwrap();
    let refused = refused_port();

    let mut sup = ClientSupervisor::new().unwrap();
    let good = sup.start_client(&echo.url(), quiet()).unwrap();
    run_until(&mut sup, 10, |_, ev| opened(ev, good) == 1);

    let mut tmp = fast(RetryCount::Limited(3));
    tmp.restart = RestartType::Temporary;
    let bad = [
        (
            sup.start_client(&oversize.url(), quiet()).unwrap(),
            ExitReason::Fatal(Reason::MessageTooLarge),
        ),
        (
            sup.start_client(&utf8.url(), quiet()).unwrap(),
            ExitReason::Fatal(Reason::Protocol),
        ),
        (
            sup.start_client(&garbage.url(), quiet()).unwrap(),
            ExitReason::Fatal(Reason::Protocol),
        ),
        (
            sup.start_client(&forbidden.url(), quiet()).unwrap(),
            ExitReason::Fatal(Reason::UpgradeRejected { status: 403 }),
        ),
        (
            sup.start_client(&format!("ws://127.0.0.1:{refused}/"), tmp)
                .unwrap(),
            ExitReason::RetriesExhausted {
                last: Reason::ConnectionRefused,
            },
        ),
    ];

    let mut sent = 0u32;
    let mut echoes = 0u32;
    sup.send_text(good, format!("ping{sent}")).unwrap();
    let ev = run_until(&mut sup, 15, |s, ev| {
        // Keep the healthy client busy: one message in flight at a time.
        if echoed(ev, good, &format!("ping{sent}")) {
            echoes += 1;
            sent += 1;
            s.send_text(good, format!("ping{sent}")).unwrap();
        }
        bad.iter().all(|(id, _)| exit_of(ev, *id).is_some()) && echoes >= 5
    });
    for (id, want) in &bad {
        assert_eq!(failed_with(&ev, *id), Some(*want), "{id}: {ev:#?}");
    }
    // The servers that broke the protocol after the upgrade saw one
    // connection each: fatal means no retry.
    for srv in [&oversize, &utf8, &garbage, &forbidden] {
        assert_eq!(srv.connections_accepted(), 1, "{srv:?}");
    }
    assert!(!sup.is_terminated());
    assert_eq!(sup.list_clients(), vec![good]);
    assert_eq!(sup.state(good), Some(State::Open));
    assert!(!ev
        .iter()
        .any(|e| e.client() == Some(good) && !matches!(e, ClientEvent::Message { .. })));
    // Still echoing after all of it.
    sup.send_text(good, "after").unwrap();
    run_until(&mut sup, 10, |_, ev| echoed(ev, good, "after"));
}

#[test]
fn send_errors_are_typed() {
    let mut sup = ClientSupervisor::new().unwrap();
    // Unknown id.
    assert!(matches!(
        sup.send_text(ClientId(777), "x"),
        Err(Error::UnknownClient(ClientId(777)))
    ));
    assert!(matches!(
        sup.stop_client(ClientId(777)),
        Err(Error::UnknownClient(_))
    ));
    assert!(sup.health(ClientId(777)).is_none());

    // Disconnected: the upgrade is never answered (state Connecting).
    let silent = MisbehavingServer::start(Behavior::SilentTcp).unwrap();
    let id = sup.start_client(&silent.url(), quiet()).unwrap();
    assert!(silent.wait_connections_accepted(1, Duration::from_secs(5)));
    run_for(&mut sup, Duration::from_millis(30));
    assert_eq!(sup.state(id), Some(State::Connecting));
    assert!(matches!(
        sup.send_text(id, "x"),
        Err(Error::Send(SendError::NotConnected))
    ));
    assert!(matches!(
        sup.send_binary(id, vec![1u8]),
        Err(Error::Send(SendError::NotConnected))
    ));

    // Disconnected: backing off between refused attempts.
    let mut cfg = fast(RetryCount::Infinite);
    cfg.connection.retry.retry_delay = Duration::from_secs(30);
    cfg.connection.retry.max_backoff = Duration::from_secs(30);
    let backoff = sup
        .start_client(&format!("ws://127.0.0.1:{}/", refused_port()), cfg)
        .unwrap();
    run_until(&mut sup, 10, |s, _| {
        s.state(backoff) == Some(State::Backoff)
    });
    assert!(matches!(
        sup.send_text(backoff, "x"),
        Err(Error::Send(SendError::NotConnected))
    ));

    // Stopped: the id is gone.
    let echo = EchoServer::plain().unwrap();
    let open = sup.start_client(&echo.url(), quiet()).unwrap();
    run_until(&mut sup, 10, |_, ev| opened(ev, open) == 1);
    // Too large for the configured maximum: refused, nothing queued.
    let big = "x".repeat(17 << 20);
    assert!(matches!(
        sup.send_text(open, big),
        Err(Error::Send(SendError::MessageTooLarge))
    ));
    sup.stop_client(open).unwrap();
    run_until(&mut sup, 10, |_, ev| exit_of(ev, open).is_some());
    assert!(matches!(
        sup.send_text(open, "x"),
        Err(Error::UnknownClient(i)) if i == open
    ));
    assert!(matches!(
        sup.stop_client(open),
        Err(Error::UnknownClient(_))
    ));
    sup.stop_client(id).unwrap();
    sup.stop_client(backoff).unwrap();
    run_until(&mut sup, 10, |s, _| s.is_empty());
}

/// A server that never reads: sends are accepted until the bounded queue
/// is full, then refused with `QueueFull` (the message stays with the
/// caller); the queue never grows past its bound.
#[test]
fn full_outbound_queue_is_refused_and_bounded() {
    let silent = MisbehavingServer::start(Behavior::Silent).unwrap();
    let echo = EchoServer::plain().unwrap();
    let mut sup = ClientSupervisor::new().unwrap();
    let mut cfg = quiet();
    cfg.connection.max_pending_bytes = 256 << 10;
    let id = sup.start_client(&silent.url(), cfg).unwrap();
    let good = sup.start_client(&echo.url(), quiet()).unwrap();
    run_until(&mut sup, 10, |_, ev| {
        opened(ev, id) == 1 && opened(ev, good) == 1
    });

    let chunk = vec![7u8; 64 << 10];
    let mut accepted: u64 = 0;
    let mut full = 0;
    // The kernel buffers take a few MiB first; 4096 × 64 KiB = 256 MiB is
    // far beyond them: QueueFull must come long before.
    for _ in 0..4096 {
        match sup.send_binary(id, chunk.clone()) {
            Ok(()) => accepted += chunk.len() as u64,
            Err(Error::Send(SendError::QueueFull)) => {
                full += 1;
                if full == 20 {
                    break;
                }
            }
            Err(e) => panic!("unexpected {e:?}"),
        }
        sup.run_once(Some(Duration::from_millis(1))).unwrap();
    }
    assert_eq!(full, 20, "never QueueFull after {accepted} bytes");
    // Bounded: once full, it stays full while the peer reads nothing,
    // however long the loop runs and however often we try.
    for _ in 0..50 {
        sup.run_once(Some(Duration::from_millis(2))).unwrap();
        assert!(matches!(
            sup.send_binary(id, chunk.clone()),
            Err(Error::Send(SendError::QueueFull))
        ));
    }
    assert!(accepted < 128 << 20, "{accepted} bytes accepted");
    // Small messages still fit only if they fit the bound; the client stays open.
    assert_eq!(sup.state(id), Some(State::Open));
    // The neighbour is unaffected.
    sup.send_text(good, "still here").unwrap();
    run_until(&mut sup, 10, |_, ev| echoed(ev, good, "still here"));
    while let Some(ev) = sup.poll_event() {
        assert_ne!(ev.client(), Some(id), "{ev:?}");
    }
}

#[test]
fn static_children_and_duplicate_ids() {
    let echo = EchoServer::plain().unwrap();
    let mut sup = ClientSupervisor::new().unwrap();
    sup.start_child(ClientId(42), &echo.url(), quiet()).unwrap();
    assert!(matches!(
        sup.start_child(ClientId(42), &echo.url(), quiet()),
        Err(Error::DuplicateClient(ClientId(42)))
    ));
    // Generated ids stay clear of the static one.
    let dynamic = sup.start_client(&echo.url(), quiet()).unwrap();
    assert!(dynamic.0 > 42, "{dynamic:?}");
    assert_eq!(sup.list_clients(), vec![ClientId(42), dynamic]);
    run_until(&mut sup, 10, |_, ev| {
        opened(ev, ClientId(42)) == 1 && opened(ev, dynamic) == 1
    });
    sup.send_text(ClientId(42), "static").unwrap();
    run_until(&mut sup, 10, |_, ev| echoed(ev, ClientId(42), "static"));
    // A stopped static id can be reused.
    sup.stop_client(ClientId(42)).unwrap();
    run_until(&mut sup, 10, |_, ev| exit_of(ev, ClientId(42)).is_some());
    sup.start_child(ClientId(42), &echo.url(), quiet()).unwrap();
    run_until(&mut sup, 10, |_, ev| opened(ev, ClientId(42)) == 1);
}

#[test]
fn stop_client_never_restarts_even_permanent() {
    let echo = EchoServer::plain().unwrap();
    let mut sup = ClientSupervisor::new().unwrap();
    let mut cfg = quiet();
    cfg.restart = RestartType::Permanent;
    let id = sup.start_client(&echo.url(), cfg.clone()).unwrap();
    // Also stop one that is still connecting / backing off.
    let mut backing = fast(RetryCount::Infinite);
    backing.restart = RestartType::Permanent;
    let other = sup
        .start_client(&format!("ws://127.0.0.1:{}/", refused_port()), backing)
        .unwrap();
    run_until(&mut sup, 10, |_, ev| {
        opened(ev, id) == 1 && !reconnect_reasons(ev, other).is_empty()
    });
    sup.stop_client(id).unwrap();
    sup.stop_client(other).unwrap();
    let mut ev = run_until(&mut sup, 10, |s, _| s.is_empty());
    ev.extend(run_for(&mut sup, Duration::from_millis(100)));
    assert!(
        matches!(exit_of(&ev, id), Some(ClientEvent::Stopped { .. })),
        "{ev:#?}"
    );
    assert!(
        matches!(exit_of(&ev, other), Some(ClientEvent::Stopped { .. })),
        "{ev:#?}"
    );
    assert!(!ev
        .iter()
        .any(|e| matches!(e, ClientEvent::Restarted { .. })));
    assert!(!ev.iter().any(|e| matches!(e, ClientEvent::Opened { .. })));
    assert!(sup.list_clients().is_empty());
    assert_eq!(sup.state(id), None);
    assert!(echo.wait_live_connections(0, Duration::from_secs(5)));
    assert_eq!(echo.connections_accepted(), 1);
}

#[test]
fn handle_from_another_thread_wakes_the_loop() {
    let echo = EchoServer::plain().unwrap();
    let mut sup = ClientSupervisor::new().unwrap();
    let id = sup.start_client(&echo.url(), quiet()).unwrap();
    run_until(&mut sup, 10, |_, ev| opened(ev, id) == 1);
    let handle = sup.handle();
    let url = echo.url();
    let worker = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        handle.send_text(id, "from a thread").unwrap();
        let started = handle.start_client(&url, quiet()).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        handle.stop_client(id).unwrap();
        started
    });
    // No timers are armed (no heartbeat): only the waker can end these waits.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut ev = Vec::new();
    while exit_of(&ev, id).is_none() {
        assert!(
            Instant::now() < deadline,
            "the handle did not wake the loop: {ev:#?}"
        );
        sup.run_once(Some(Duration::from_secs(5))).unwrap();
        ev.extend(std::iter::from_fn(|| sup.poll_event()));
    }
    let started = worker.join().unwrap();
    assert!(echoed(&ev, id, "from a thread"), "{ev:#?}");
    assert!(matches!(
        exit_of(&ev, id),
        Some(ClientEvent::Stopped { .. })
    ));
    run_until(&mut sup, 10, |s, ev| {
        opened(ev, started) == 1 || s.state(started) == Some(State::Open)
    });
    assert_eq!(sup.list_clients(), vec![started]);
}

/// One user-owned `mio::Poll` with its own waker and two embedded
/// supervisors sharing it (`embedded_with_waker`): both echo, and a
/// `Handle` used from another thread wakes the user's loop.
#[test]
fn embedded_mode_in_a_user_owned_poll() {
    use mio::{Events, Poll, Token, Waker};
    use std::sync::Arc;
    use zenws_mio::supervisor::TOKEN_SPAN;
    let echo = EchoServer::plain().unwrap();
    let mut poll = Poll::new().unwrap();
    const USER: Token = Token(7);
    let waker = Arc::new(Waker::new(poll.registry(), USER).unwrap());
    let mut sups = [
        ClientSupervisor::embedded_with_waker(
            poll.registry(),
            1000,
            Default::default(),
            waker.clone(),
        )
        .unwrap(),
        ClientSupervisor::embedded_with_waker(
            poll.registry(),
            1000 + TOKEN_SPAN + 1,
            Default::default(),
            waker.clone(),
        )
        .unwrap(),
    ];
    assert!(!sups[0].owns_token(USER) && !sups[1].owns_token(USER));
    let mut cfg = quiet();
    cfg.connection.heartbeat =
        HeartbeatConfig::ping(Duration::from_millis(20), Duration::from_millis(500));
    let ids = [
        sups[0].start_client(&echo.url(), cfg.clone()).unwrap(),
        sups[1].start_client(&echo.url(), cfg).unwrap(),
    ];
    let handle = sups[1].handle();
    let mut events = Events::with_capacity(64);
    let mut seen: [Vec<ClientEvent>; 2] = [Vec::new(), Vec::new()];
    let mut user_wakes = 0;
    let mut sent = false;
    let mut thread = None;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let done = echoed(&seen[0], ids[0], "embedded 0")
            && echoed(&seen[1], ids[1], "from a thread")
            && sups
                .iter()
                .zip(ids)
                .all(|(s, id)| s.health(id).is_some_and(|h| h.rtt_last.is_some()));
        if done {
            break;
        }
        assert!(Instant::now() < deadline, "{seen:#?}");
        let wait = sups
            .iter()
            .filter_map(|s| s.poll_timeout())
            .fold(Duration::from_millis(50), Duration::min);
        poll.poll(&mut events, Some(wait)).unwrap();
        for ev in events.iter() {
            let mine = sups.iter_mut().any(|s| s.handle_mio_event(ev));
            if !mine {
                assert_eq!(ev.token(), USER);
                user_wakes += 1;
            }
        }
        for (s, seen) in sups.iter_mut().zip(seen.iter_mut()) {
            s.process();
            seen.extend(std::iter::from_fn(|| s.poll_event()));
        }
        if !sent && opened(&seen[0], ids[0]) == 1 && opened(&seen[1], ids[1]) == 1 {
            sups[0].send_text(ids[0], "embedded 0").unwrap();
            let (h, id) = (handle.clone(), ids[1]);
            thread = Some(std::thread::spawn(move || {
                h.send_text(id, "from a thread").unwrap()
            }));
            sent = true;
        }
    }
    thread.unwrap().join().unwrap();
    assert!(user_wakes >= 1);
    for (s, id) in sups.iter().zip(ids) {
        assert_eq!(s.health(id).unwrap().status, HealthStatus::Healthy);
    }
}

#[test]
fn blocking_client_api() {
    let echo = EchoServer::plain().unwrap();
    let mut cfg = quiet();
    cfg.connection.heartbeat =
        HeartbeatConfig::ping(Duration::from_millis(20), Duration::from_millis(500));
    let mut client = Client::connect(&echo.url(), cfg).unwrap();
    assert_eq!(client.state(), Some(State::Open));
    client.send_text("one").unwrap();
    client.send_binary(vec![1u8, 2, 3]).unwrap();
    let m = client
        .recv_message(Duration::from_secs(10))
        .unwrap()
        .unwrap();
    assert_eq!(m.as_text(), Some("one"));
    let m = client
        .recv_message(Duration::from_secs(10))
        .unwrap()
        .unwrap();
    assert_eq!(m.as_bytes(), &[1, 2, 3]);
    // Nothing more: a timeout is Ok(None), not an error. Pings flow meanwhile.
    let deadline = Instant::now() + Duration::from_secs(10);
    while client.health().unwrap().rtt_last.is_none() {
        assert!(Instant::now() < deadline);
        assert!(client
            .recv_message(Duration::from_millis(30))
            .unwrap()
            .is_none());
    }
    let h = client.health().unwrap();
    assert_eq!(h.status, HealthStatus::Healthy);
    assert!(h.last_heartbeat.is_some());
    client.close().unwrap();
    assert!(echo.wait_live_connections(0, Duration::from_secs(5)));

    // A client that cannot connect fails for good instead of hanging.
    let mut cfg = fast(RetryCount::Limited(1));
    cfg.connection.retry.retry_delay = Duration::from_millis(5);
    match Client::connect(&format!("ws://127.0.0.1:{}/", refused_port()), cfg) {
        Err(Error::Failed(
            ExitReason::RetriesExhausted {
                last: Reason::ConnectionRefused,
            },
            _,
        )) => {}
        Err(e) => panic!("{e:?}"),
        Ok(_) => panic!("connected to a refused port"),
    }
    assert!(matches!(
        Client::connect("http://127.0.0.1/", quiet()),
        Err(Error::InvalidUrl(_))
    ));
}

#[test]
fn health_and_metrics_after_pings_and_messages() {
    let echo = EchoServer::plain().unwrap();
    let mut sup = ClientSupervisor::new().unwrap();
    let mut cfg = quiet();
    cfg.connection.heartbeat =
        HeartbeatConfig::ping(Duration::from_millis(20), Duration::from_millis(500));
    let id = sup.start_client(&echo.url(), cfg).unwrap();
    run_until(&mut sup, 10, |_, ev| opened(ev, id) == 1);
    for i in 0..5 {
        sup.send_text(id, format!("m{i}")).unwrap();
    }
    run_until(&mut sup, 10, |s, ev| {
        messages(ev, id) == 5 && s.health(id).unwrap().rtt_last.is_some()
    });
    let h = sup.health(id).unwrap();
    assert_eq!(h.status, HealthStatus::Healthy);
    assert_eq!(h.consecutive_failures, 0);
    assert!(h.rtt_min.is_some() && h.rtt_p50.is_some());
    assert!(h.last_data.is_some() && h.last_heartbeat.is_some());
    let m = sup.metrics(id).unwrap();
    assert_eq!(m.messages_out, 5);
    assert_eq!(m.messages_in, 5, "pongs are not data messages");
    assert_eq!(m.opens, 1);
    assert_eq!(m.reconnects, 0);
    assert_eq!(m.restarts, 0);
}
