//! The Deribit example's session logic against the loopback DeribitServer:
//! auth → subscribe → heartbeat → reconnect → supervisor restart, each open
//! re-authenticating and re-subscribing exactly once; wrong credentials
//! fail fatally; the client-side credit bucket refuses before the server.

use std::time::{Duration, Instant};
use zenws_core::retry::RetryCount;
use zenws_core::supervisor::SupervisorConfig;
use zenws_core::{Error as Reason, ExitReason, HeartbeatConfig};
use zenws_examples::deribit_session::{DeribitApp, DeribitSetup};
use zenws_mio::{ClientConfig, ClientSupervisor, TlsRoots};
use zenws_tests::{DeribitOptions, DeribitServer, RateLimit, TestPki};

const AUTH: &str = "public/auth";
const PRIVATE_SUB: &str = "private/subscribe";

fn setup() -> DeribitSetup {
    DeribitSetup::with_credentials("test-client", "test-secret")
}

/// Fast retries: 3 per outage, 50 ms .. 200 ms.
fn fast(mut c: ClientConfig) -> ClientConfig {
    c.connection.retry.retry_delay = Duration::from_millis(50);
    c.connection.retry.max_backoff = Duration::from_millis(200);
    c.connection.retry.retry_count = RetryCount::Limited(3);
    c.connection.connect_timeout = Duration::from_secs(2);
    c
}

/// A server whose heartbeat "second" is 10 ms: `set_heartbeat(10)` makes it
/// send a test_request every 100 ms. (The client's own miss detection runs
/// on real seconds, ≥ 15 s, so it never fires in these tests.)
fn fast_heartbeat_server(tls: Option<&TestPki>) -> DeribitServer {
    DeribitServer::start(DeribitOptions {
        heartbeat_unit: Duration::from_millis(10),
        tls: tls.map(|p| p.server_config()),
        ..DeribitOptions::default()
    })
    .unwrap()
}

/// Run the loop, feeding events to `app` and letting it tick, until `cond`
/// holds or `secs` pass.
fn run_until(
    sup: &mut ClientSupervisor,
    app: &mut DeribitApp,
    secs: u64,
    what: &str,
    mut cond: impl FnMut(&DeribitApp) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        sup.run_once(Some(Duration::from_millis(10))).unwrap();
        while let Some(ev) = sup.poll_event() {
            app.on_event(&ev);
        }
        app.tick(sup);
        if cond(app) {
            return;
        }
    }
    panic!("{what}: not reached in {secs}s; {:#?}", app.stats);
}

fn count(app: &DeribitApp, ch: &str) -> u64 {
    app.stats.per_channel.get(ch).copied().unwrap_or(0)
}

/// Every channel got more notifications than in `before`.
fn all_advanced(app: &DeribitApp, channels: &[String], before: &[u64]) -> bool {
    channels.iter().zip(before).all(|(c, b)| count(app, c) > *b)
}

fn snapshot(app: &DeribitApp, channels: &[String]) -> Vec<u64> {
    channels.iter().map(|c| count(app, c)).collect()
}

/// Per connection: exactly one `set_heartbeat`; apart from heartbeat
/// traffic, `public/auth` then `private/subscribe` first, exactly once, and
/// only the app's `public/get_time` requests after them.
fn assert_session_per_connection(server: &DeribitServer) {
    let conns = server.connections_accepted();
    assert!(conns > 0);
    for conn in 0..conns {
        let methods = server.methods_on(conn);
        let hb = methods
            .iter()
            .filter(|m| *m == "public/set_heartbeat")
            .count();
        assert_eq!(hb, 1, "conn {conn}: {methods:?}");
        let session: Vec<&str> = methods
            .iter()
            .map(String::as_str)
            .filter(|m| !matches!(*m, "public/set_heartbeat" | "public/test"))
            .collect();
        assert!(session.len() >= 2, "conn {conn}: {methods:?}");
        assert_eq!(
            &session[..2],
            &[AUTH, PRIVATE_SUB],
            "conn {conn}: {methods:?}"
        );
        assert!(
            session[2..].iter().all(|m| *m == "public/get_time"),
            "conn {conn}: {methods:?}"
        );
    }
}

#[test]
fn auth_subscribe_heartbeat_reconnect_and_restart() {
    let server = fast_heartbeat_server(None);
    let setup = setup();
    let channels = setup.channels();
    assert_eq!(channels.len(), 3);
    let mut sup = ClientSupervisor::with_config(SupervisorConfig::default()).unwrap();
    let id = sup
        .start_client(&server.url(), fast(setup.client_config()))
        .unwrap();
    let mut app = DeribitApp::new(id);
    app.request_every = Some(Duration::from_millis(100));

    // 1. Auth, subscribe, all three channels flowing, the server's
    //    test_requests answered by the core, the app's requests resolved.
    let none = vec![0; channels.len()];
    run_until(&mut sup, &mut app, 10, "first session", |a| {
        a.stats.restored == 1
            && all_advanced(a, &channels, &none)
            && a.stats.requests_resolved >= 2
            && server.count_method("public/test") >= 2
    });
    assert_eq!(app.stats.authenticated, 1);
    let mut subs = server.subscriptions(0);
    subs.sort();
    let mut want = channels.clone();
    want.sort();
    assert_eq!(subs, want);
    assert_eq!(server.heartbeat_closes(), 0);
    assert_eq!(app.stats.rpc_errors, 0);

    // 2. The server drops the socket: reconnect, re-auth, re-subscribe.
    server.kill_connections();
    run_until(&mut sup, &mut app, 10, "reconnected", |a| {
        a.stats.restored == 2
    });
    let before = snapshot(&app, &channels);
    run_until(&mut sup, &mut app, 10, "data after reconnect", |a| {
        all_advanced(a, &channels, &before)
    });
    assert_eq!(app.stats.opens, 2);
    assert_eq!(app.stats.authenticated, 2);
    assert!(app.stats.reconnects >= 1);
    assert_eq!(app.stats.restarts, 0);

    // 3. The server goes away long enough to exhaust the client's retries:
    //    the supervisor restarts it; once the server is back, the restarted
    //    client authenticates and subscribes again.
    server.stop();
    run_until(&mut sup, &mut app, 10, "supervisor restart", |a| {
        a.stats.restarts >= 1
    });
    server.restart().unwrap();
    run_until(&mut sup, &mut app, 10, "restored after restart", |a| {
        a.stats.restored == 3
    });
    let before = snapshot(&app, &channels);
    run_until(&mut sup, &mut app, 10, "data after restart", |a| {
        all_advanced(a, &channels, &before) && a.stats.requests_resolved >= 4
    });
    let tests_before = server.count_method("public/test");
    run_until(&mut sup, &mut app, 10, "heartbeat after restart", |_| {
        server.count_method("public/test") > tests_before
    });

    assert_eq!(app.stats.opens, 3);
    assert_eq!(app.stats.authenticated, 3);
    assert!(app.stats.failed.is_none(), "{:?}", app.stats.failed);
    assert_eq!(server.heartbeat_closes(), 0, "every test_request answered");
    assert_eq!(app.stats.heartbeat_failed, 0);
    assert_eq!(app.stats.too_many_requests, 0);
    assert_eq!(server.connections_accepted(), 3);
    assert_session_per_connection(&server);

    sup.stop_client(id).unwrap();
    run_until(&mut sup, &mut app, 5, "stopped", |a| a.stats.stopped);
    let summary = app.summary();
    assert!(
        summary.contains("3 opened") && summary.contains("1 supervisor restarts"),
        "{summary}"
    );
}

#[test]
fn tls_session() {
    let pki = TestPki::generate();
    let server = fast_heartbeat_server(Some(&pki));
    let setup = setup();
    let channels = setup.channels();
    let mut cfg = fast(setup.client_config());
    cfg.tls = TlsRoots::CaPem(pki.ca_pem().into_bytes());
    let mut sup = ClientSupervisor::new().unwrap();
    let id = sup.start_client(&server.url(), cfg).unwrap();
    let mut app = DeribitApp::new(id);
    let none = vec![0; channels.len()];
    run_until(&mut sup, &mut app, 10, "TLS session", |a| {
        a.stats.restored == 1
            && all_advanced(a, &channels, &none)
            && server.count_method("public/test") >= 1
    });
    assert_eq!(app.stats.authenticated, 1);
    assert_session_per_connection(&server);
}

#[test]
fn public_only_session_skips_private_channel() {
    // The example subscribes `*.raw` public channels, which real Deribit (and
    // the loopback server by default) only grants to authorized connections.
    let server = DeribitServer::start(DeribitOptions {
        heartbeat_unit: Duration::from_millis(10),
        raw_requires_auth: false,
        ..DeribitOptions::default()
    })
    .unwrap();
    let setup = DeribitSetup::default();
    assert!(!setup.authenticated());
    let channels = setup.channels();
    assert_eq!(channels.len(), 2);
    let mut sup = ClientSupervisor::new().unwrap();
    let id = sup
        .start_client(&server.url(), fast(setup.client_config()))
        .unwrap();
    let mut app = DeribitApp::new(id);
    let none = vec![0; channels.len()];
    run_until(&mut sup, &mut app, 10, "public session", |a| {
        a.stats.restored == 1 && all_advanced(a, &channels, &none)
    });
    assert_eq!(app.stats.authenticated, 0);
    let methods = server.methods_on(0);
    assert!(!methods.iter().any(|m| m == AUTH), "{methods:?}");
    assert!(
        methods.iter().any(|m| m == "public/subscribe"),
        "{methods:?}"
    );
    assert_eq!(count(&app, &setup.private_channel()), 0);
}

#[test]
fn wrong_credentials_fail_fatally_without_restarts() {
    let server = fast_heartbeat_server(None);
    let setup = DeribitSetup::with_credentials("test-client", "wrong");
    let mut sup = ClientSupervisor::new().unwrap();
    let id = sup
        .start_client(&server.url(), fast(setup.client_config()))
        .unwrap();
    let mut app = DeribitApp::new(id);
    run_until(&mut sup, &mut app, 10, "failed", |a| a.is_done());
    let (reason, _) = app.stats.failed.clone().expect("failed, not stopped");
    assert_eq!(reason, ExitReason::Fatal(Reason::AuthRejected));
    assert!(sup.is_empty(), "removed, not restarted");
    assert_eq!(app.stats.restarts, 0);
    assert_eq!(app.stats.reconnects, 0);
    assert_eq!(app.stats.opens, 1);
    assert_eq!(server.connections_accepted(), 1);
    assert_eq!(server.count_method(AUTH), 1);
    assert_eq!(server.count_method(PRIVATE_SUB), 0);
}

#[test]
fn credit_bucket_refuses_before_the_server_does() {
    // The server's bucket is Deribit's default plus 10 requests of slack:
    // the session's own auth and subscribe are charged by the server but not
    // by the client's bucket, and loopback delivery jitters.
    let server = DeribitServer::start(DeribitOptions {
        rate_limit: RateLimit {
            cost: 500,
            max_credits: 55_000,
            refill_per_sec: 10_000,
        },
        ..DeribitOptions::default()
    })
    .unwrap();
    let burst = 120;
    let start = |sup: &mut ClientSupervisor, limited: bool| {
        let setup = DeribitSetup {
            rate_limit: limited,
            ..setup()
        };
        let mut cfg = fast(setup.client_config());
        // No heartbeat: its public/test would cost server credits too.
        cfg.connection.heartbeat = HeartbeatConfig::none();
        let mut app = DeribitApp::new(sup.start_client(&server.url(), cfg).unwrap());
        app.burst = burst;
        app
    };

    let mut sup = ClientSupervisor::new().unwrap();
    let mut app = start(&mut sup, true);
    run_until(&mut sup, &mut app, 15, "limited burst", |a| {
        a.burst == 0 && a.in_flight() == 0
    });
    assert!(app.stats.rate_limited > 0, "{:#?}", app.stats);
    assert_eq!(app.stats.too_many_requests, 0, "{:#?}", app.stats);
    assert_eq!(app.stats.rpc_errors, 0);
    assert_eq!(app.stats.requests_resolved, u64::from(burst));
    assert_eq!(server.count_method("public/test"), burst as usize);

    // Control: the same burst without the client-side bucket is refused by
    // the server.
    let mut sup = ClientSupervisor::new().unwrap();
    let mut app = start(&mut sup, false);
    run_until(&mut sup, &mut app, 15, "unlimited burst", |a| {
        a.burst == 0 && a.in_flight() == 0
    });
    assert_eq!(app.stats.rate_limited, 0);
    assert!(app.stats.too_many_requests > 0, "{:#?}", app.stats);
}

#[test]
fn requests_in_flight_fail_on_disconnect_none_lost() {
    let server = DeribitServer::plain().unwrap();
    let mut cfg = fast(setup().client_config());
    // No heartbeat: every public/test on the server is one of ours.
    cfg.connection.heartbeat = HeartbeatConfig::none();
    let mut sup = ClientSupervisor::new().unwrap();
    let mut app = DeribitApp::new(sup.start_client(&server.url(), cfg).unwrap());
    run_until(&mut sup, &mut app, 10, "session", |a| a.is_ready());
    // Far more requests in flight than the session's event queue holds.
    server.set_unresponsive(true);
    let n = 40;
    app.burst = n;
    run_until(&mut sup, &mut app, 10, "all requests at the server", |a| {
        a.burst == 0 && server.count_method("public/test") == n as usize
    });
    assert_eq!(app.in_flight(), n as usize);
    server.set_unresponsive(false);
    server.kill_connections();
    run_until(&mut sup, &mut app, 10, "every request failed", |a| {
        a.in_flight() == 0
    });
    assert_eq!(app.stats.requests_failed, u64::from(n), "{:#?}", app.stats);
    assert_eq!(app.stats.requests_resolved, 0);
    run_until(&mut sup, &mut app, 10, "restored", |a| {
        a.stats.restored == 2
    });
}
