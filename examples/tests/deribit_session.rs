//! The Deribit example's session logic against the loopback DeribitServer:
//! auth → subscribe → heartbeat → reconnect → supervisor restart, each open
//! re-authenticating and re-subscribing exactly once; wrong credentials
//! fail fatally; the client-side credit bucket refuses before the server.
//! And the example binary itself with `--json --cancel-on-disconnect`: its
//! JSON event lines, and no secret or token on stdout/stderr.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use zenws_core::retry::RetryCount;
use zenws_core::session::Rejection;
use zenws_core::supervisor::SupervisorConfig;
use zenws_core::{Error as Reason, ExitReason, HeartbeatConfig};
use zenws_examples::deribit_session::{event_json, DeribitApp, DeribitSetup};
use zenws_mio::{ClientConfig, ClientEvent, ClientId, ClientSupervisor, TlsRoots};
use zenws_tests::serde_json::{self, Value};
use zenws_tests::{DeribitOptions, DeribitServer, RateLimit, TestPki};

const AUTH: &str = "public/auth";
const PUBLIC_SUB: &str = "public/subscribe";
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
/// traffic, `public/auth`, then the public channels in a `public/subscribe`
/// and the private one in a `private/subscribe` (never mixed), each once,
/// and only the app's `public/get_time` requests after them.
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
        assert!(session.len() >= 3, "conn {conn}: {methods:?}");
        assert_eq!(
            &session[..3],
            &[AUTH, PUBLIC_SUB, PRIVATE_SUB],
            "conn {conn}: {methods:?}"
        );
        assert!(
            session[3..].iter().all(|m| *m == "public/get_time"),
            "conn {conn}: {methods:?}"
        );
        // Public and private channels in separate requests.
        for r in server.received().iter().filter(|r| r.conn == conn) {
            let Some(chs) = r.params["channels"].as_array() else {
                continue;
            };
            let private = chs
                .iter()
                .filter(|c| c.as_str().unwrap().starts_with("user."))
                .count();
            match r.method.as_str() {
                PUBLIC_SUB => assert_eq!(private, 0, "{r:?}"),
                PRIVATE_SUB => assert_eq!(private, chs.len(), "{r:?}"),
                _ => {}
            }
        }
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
    // A server as strict as Deribit (`*.raw` needs authorization, the
    // default): public-only mode subscribes the `.100ms` feeds, all granted.
    let server = fast_heartbeat_server(None);
    assert!(server.options().raw_requires_auth);
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
    assert!(app.stats.rejected.is_empty(), "{:?}", app.stats.rejected);
    let mut granted = app.stats.granted.clone();
    granted.sort();
    let mut want = channels.clone();
    want.sort();
    assert_eq!(granted, want);
    let mut subs = server.subscriptions(0);
    subs.sort();
    assert_eq!(subs, want, "the server granted what the client reports");
    let methods = server.methods_on(0);
    assert!(!methods.iter().any(|m| m == AUTH), "{methods:?}");
    assert!(
        !methods.iter().any(|m| m.starts_with("private/")),
        "{methods:?}"
    );
    assert!(methods.iter().any(|m| m == PUBLIC_SUB), "{methods:?}");
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

// ---------------------------------------------------------------------------
// The example binary with --json
// ---------------------------------------------------------------------------

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// Build `examples/deribit.rs` (debug) and return the executable's path.
fn build_deribit_example() -> PathBuf {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(workspace_root())
        .args([
            "build",
            "--quiet",
            "-p",
            "zenws-examples",
            "--example",
            "deribit",
            "--message-format=json-render-diagnostics",
        ])
        .stderr(Stdio::inherit())
        .output()
        .expect("run cargo build");
    assert!(out.status.success(), "cargo build --example deribit failed");
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        if v["reason"] == "compiler-artifact" && v["target"]["name"] == "deribit" {
            if let Some(exe) = v["executable"].as_str() {
                return PathBuf::from(exe);
            }
        }
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| workspace_root().join("target"), PathBuf::from);
    let exe = target.join("debug").join("examples").join("deribit");
    assert!(exe.exists(), "{} not found after the build", exe.display());
    exe
}

fn collect(mut r: impl Read + Send + 'static) -> Arc<Mutex<String>> {
    let buf = Arc::new(Mutex::new(String::new()));
    let b = buf.clone();
    std::thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        while let Ok(n) = r.read(&mut chunk) {
            if n == 0 {
                break;
            }
            b.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&chunk[..n]));
        }
    });
    buf
}

/// The child, killed if the test panics.
struct Proc {
    child: Child,
    out: Arc<Mutex<String>>,
    err: Arc<Mutex<String>>,
}

impl Proc {
    fn stdout(&self) -> String {
        self.out.lock().unwrap().clone()
    }
    fn stderr(&self) -> String {
        self.err.lock().unwrap().clone()
    }
    fn report(&self) -> String {
        format!(
            "--- stdout:\n{}\n--- stderr:\n{}",
            self.stdout(),
            self.stderr()
        )
    }
    fn wait_for(&mut self, secs: u64, what: &str, cond: impl Fn(&[Value]) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !cond(&json_events(&self.stderr())) {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}\n{}",
                self.report()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    fn finish(&mut self, secs: u64) -> std::process::ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                std::thread::sleep(Duration::from_millis(100));
                return st;
            }
            assert!(
                Instant::now() < deadline,
                "no exit within {secs} s\n{}",
                self.report()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every stderr line parsed; panics on a line that is not a JSON object
/// with an `"event"` (with --json, stderr holds nothing else).
fn json_events(stderr: &str) -> Vec<Value> {
    stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
            assert!(v["event"].is_string(), "no \"event\": {l}");
            v
        })
        .collect()
}

fn named<'a>(events: &'a [Value], name: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["event"] == name).collect()
}

#[test]
fn example_binary_json_events_cancel_on_disconnect_and_no_secrets() {
    // Tokens live 2 s (the client refreshes after 1 s); the server refuses
    // the trades channel and the first set_heartbeat; heartbeats every 100 ms.
    let server = DeribitServer::start(DeribitOptions {
        heartbeat_unit: Duration::from_millis(10),
        token_lifetime: Some(Duration::from_secs(2)),
        client_secret: "s3cr3t-never-printed".into(),
        ..DeribitOptions::default()
    })
    .unwrap();
    server.reject_channels(&["trades.BTC-PERPETUAL.raw"]);
    server.fail_next_set_heartbeats(1, 11050);

    let exe = build_deribit_example();
    let url = server.url();
    let mut child = Command::new(exe)
        .args([
            url.as_str(),
            "--json",
            "--cancel-on-disconnect",
            "--duration",
            "5",
            "--every",
            "0.5",
        ])
        .env("DERIBIT_CLIENT_ID", "test-client")
        .env("DERIBIT_CLIENT_SECRET", "s3cr3t-never-printed")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the deribit example");
    let out = collect(child.stdout.take().unwrap());
    let err = collect(child.stderr.take().unwrap());
    let mut p = Proc { child, out, err };

    // First connection: authenticated, cancel-on-disconnect, subscribed,
    // the set_heartbeat refusal reported, then a refresh on the same socket.
    p.wait_for(10, "token refreshed", |ev| {
        !named(ev, "token_refreshed").is_empty()
    });
    assert_eq!(server.connections_accepted(), 1, "{}", p.report());
    assert!(server.cod_enabled_on(0));
    // The server drops the socket: reconnect, authenticate, cancel-on-disconnect again.
    server.kill_connections();
    p.wait_for(10, "second session", |ev| {
        named(ev, "cancel_on_disconnect").len() >= 2 && named(ev, "subscribed").len() >= 2
    });
    let status = p.finish(15);
    assert!(status.success(), "{status:?}\n{}", p.report());
    let (stdout, stderr) = (p.stdout(), p.stderr());
    let ev = json_events(&stderr);

    let first = |name: &str| -> &Value {
        named(&ev, name)
            .first()
            .copied()
            .unwrap_or_else(|| panic!("no {name} event\n{stderr}"))
    };
    let connecting = first("connecting");
    assert_eq!(connecting["mode"], "authenticated");
    assert_eq!(connecting["cancel_on_disconnect"], true);
    assert_eq!(connecting["url"], url.as_str());

    let auths = named(&ev, "authenticated");
    assert_eq!(auths.len(), 2, "one per connection\n{stderr}");
    for a in &auths {
        assert_eq!(a["grant"], "client_credentials");
        assert_eq!(a["expires_in_ms"], 2000);
    }
    assert!(first("token_refreshed")["expires_in_ms"].is_u64());

    let cod = named(&ev, "cancel_on_disconnect");
    assert_eq!(cod.len(), 2, "after every authentication\n{stderr}");
    assert!(cod.iter().all(|c| c["ok"] == true), "{stderr}");

    let subscribed = named(&ev, "subscribed");
    for s in &subscribed {
        assert_eq!(
            s["granted"],
            serde_json::json!(["book.BTC-PERPETUAL.raw", "user.orders.BTC-PERPETUAL.raw"]),
            "{stderr}"
        );
        assert_eq!(s["rejected"], 1);
    }
    let rejected = named(&ev, "subscription_rejected");
    assert_eq!(rejected.len(), 2, "once per connection\n{stderr}");
    for r in &rejected {
        assert_eq!(r["channel"], "trades.BTC-PERPETUAL.raw");
        assert_eq!(r["reason"], "refused");
    }
    assert_eq!(first("heartbeat_setup_failed")["code"], 11050);
    let rc = first("reconnecting");
    assert_eq!(rc["attempt"], 1);
    assert!(rc["reason"].is_string() && rc["delay_ms"].is_u64());
    assert_eq!(named(&ev, "stopped").len(), 1, "{stderr}");
    assert!(named(&ev, "failed").is_empty(), "{stderr}");
    assert!(named(&ev, "rate_limited").is_empty(), "{stderr}");

    // The server saw it all: the refresh grant, cancel-on-disconnect on
    // both connections, and the cancel when the first one was killed.
    let grants = server.auth_grants();
    assert!(
        grants.iter().any(|(c, g)| *c == 0 && g == "refresh_token"),
        "{grants:?}"
    );
    assert!(server.cod_enabled_on(0) && server.cod_enabled_on(1));
    assert!(
        server.cancel_events().iter().any(|(c, _)| *c == 0),
        "{:?}",
        server.cancel_events()
    );

    // Human lines on stdout.
    assert!(
        stdout.contains("authenticated (public/auth, client_credentials)"),
        "{stdout}"
    );
    assert!(stdout.contains("cancel-on-disconnect enabled"), "{stdout}");
    assert!(stdout.contains("--- summary"), "{stdout}");

    // Never the secret, never an issued token (the server names them
    // dbt-access-N / dbt-refresh-N).
    for (name, text) in [("stdout", &stdout), ("stderr", &stderr)] {
        for needle in [
            "s3cr3t-never-printed",
            "dbt-access-",
            "dbt-refresh-",
            "access_token",
            "\"refresh_token\":",
        ] {
            assert!(!text.contains(needle), "{needle} on {name}:\n{text}");
        }
    }
}

#[test]
fn event_json_lines() {
    let id = ClientId(7);
    let j = |e: ClientEvent| -> Value {
        let line = event_json(&e).expect("a JSON line");
        assert!(!line.contains('\n'));
        serde_json::from_str(&line).unwrap()
    };
    let v = j(ClientEvent::Authenticated {
        id,
        refresh: true,
        expires_in: None,
    });
    assert_eq!(
        v,
        serde_json::json!({"event": "authenticated", "grant": "refresh_token"})
    );
    let v = j(ClientEvent::TokenRefreshed {
        id,
        expires_in: Some(Duration::from_secs(900)),
    });
    assert_eq!(
        v,
        serde_json::json!({"event": "token_refreshed", "expires_in_ms": 900_000})
    );
    let v = j(ClientEvent::AfterAuth {
        id,
        step: 0,
        error: Some(Some(13009)),
    });
    assert_eq!(
        v,
        serde_json::json!({"event": "cancel_on_disconnect", "ok": false, "code": 13009})
    );
    let v = j(ClientEvent::AfterAuth {
        id,
        step: 0,
        error: Some(None),
    });
    assert_eq!(
        v,
        serde_json::json!({"event": "cancel_on_disconnect", "ok": false, "timed_out": true})
    );
    let v = j(ClientEvent::SubscriptionRejected {
        id,
        channel: "book.\"x\".raw".into(),
        reason: Rejection::Refused { code: Some(11050) },
    });
    assert_eq!(
        v,
        serde_json::json!({"event": "subscription_rejected", "channel": "book.\"x\".raw", "reason": "refused", "code": 11050})
    );
    let v = j(ClientEvent::SubscriptionRejected {
        id,
        channel: "trades.X.raw".into(),
        reason: Rejection::NeedsAuth,
    });
    assert_eq!(
        v,
        serde_json::json!({"event": "subscription_rejected", "channel": "trades.X.raw", "reason": "needs_auth"})
    );
    let v = j(ClientEvent::Restored {
        id,
        granted: vec!["a".into(), "b".into()],
        rejected: 0,
    });
    assert_eq!(
        v,
        serde_json::json!({"event": "subscribed", "granted": ["a", "b"], "rejected": 0})
    );
    let v = j(ClientEvent::HeartbeatSetupFailed { id, code: 11050 });
    assert_eq!(
        v,
        serde_json::json!({"event": "heartbeat_setup_failed", "code": 11050})
    );
    let v = j(ClientEvent::RateLimited { id, code: 10028 });
    assert_eq!(
        v,
        serde_json::json!({"event": "rate_limited", "code": 10028})
    );
    let v = j(ClientEvent::AuthRetrying {
        id,
        code: Some(13028),
        delay: Duration::from_millis(500),
    });
    assert_eq!(
        v,
        serde_json::json!({"event": "auth_retrying", "code": 13028, "delay_ms": 500})
    );
    let v = j(ClientEvent::RequestError {
        id,
        request: 4,
        code: -32601,
        message: "Method not found".into(),
    });
    assert_eq!(
        v,
        serde_json::json!({"event": "request_error", "request": 4, "code": -32601, "message": "Method not found"})
    );
    let v = j(ClientEvent::Reconnecting {
        id,
        attempt: 2,
        delay: Duration::from_millis(1500),
        reason: Reason::ConnectionReset,
        detail: String::new(),
    });
    assert_eq!(v["event"], "reconnecting");
    assert_eq!(v["attempt"], 2);
    assert_eq!(v["delay_ms"], 1500);
    assert_eq!(v["reason"], "connection_reset");
    let v = j(ClientEvent::Restarted {
        id,
        restarts: 1,
        reason: ExitReason::RetriesExhausted {
            last: Reason::ConnectionRefused,
        },
    });
    assert_eq!(v["event"], "restarted");
    assert_eq!(v["restarts"], 1);
    assert_eq!(v["exit"], "retries_exhausted");
    assert_eq!(v["reason"], "connection_refused");
    let v = j(ClientEvent::Failed {
        id,
        reason: ExitReason::Fatal(Reason::AuthRejected),
        detail: "authentication rejected (error 13004)".into(),
    });
    assert_eq!(v["event"], "failed");
    assert_eq!(v["exit"], "fatal");
    assert_eq!(v["reason"], "auth_rejected");
    assert_eq!(v["detail"], "authentication rejected (error 13004)");
    // Data and resolved requests: no JSON line (stdout has them).
    assert!(event_json(&ClientEvent::RequestResolved { id, request: 1 }).is_none());
}
