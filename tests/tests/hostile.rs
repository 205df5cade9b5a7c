//! Issue 11: crossed wires and leaks, against real loopback servers.
//!
//! - A stale DNS answer never reaches another client (a stopped client's
//!   lookup answered after its slot was reused by a client to another port,
//!   with credentials).
//! - Pluggable resolution: a pinned address per host, TLS still verified
//!   against the host name; every address tried in turn.
//! - Secrets (URL query, userinfo, header values, message bodies) never
//!   reach logs, `Debug`, `Display` or errors.
//! - A client that fails inside `start_client` never leaves the loop
//!   waiting forever.
//!
//! Host names here never reach a real resolver: a test [`Resolve`] answers
//! them with 127.0.0.1.

mod common;

use common::*;
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};
use zenws_core::retry::RetryCount;
use zenws_mio::{ClientEvent, ClientSupervisor, Error, TlsRoots};
use zenws_mio::{PinnedResolver, Resolve};
use zenws_tests::{EchoOptions, EchoServer, TestPki};

/// Answers every name with 127.0.0.1, but only once the test released that
/// `host:port`; counts finished lookups.
#[derive(Default)]
struct GatedResolver {
    open: Mutex<Vec<u16>>,
    cv: Condvar,
    started: AtomicUsize,
    done: AtomicUsize,
}

impl GatedResolver {
    fn release(&self, port: u16) {
        self.open.lock().unwrap().push(port);
        self.cv.notify_all();
    }
    fn wait(counter: &AtomicUsize, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while counter.load(Ordering::SeqCst) < n {
            assert!(Instant::now() < deadline, "lookups did not get there");
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

impl Resolve for GatedResolver {
    fn lookup(&self, _host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
        self.started.fetch_add(1, Ordering::SeqCst);
        let mut open = self.open.lock().unwrap();
        while !open.contains(&port) {
            open = self.cv.wait(open).unwrap();
        }
        drop(open);
        self.done.fetch_add(1, Ordering::SeqCst);
        Ok(vec![SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port)])
    }
}

/// A listener that only records whether anyone connected (and what it sent).
fn tripwire() -> (u16, Arc<Mutex<Vec<String>>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    std::thread::spawn(move || {
        for mut c in l.incoming().flatten() {
            let _ = c.set_read_timeout(Some(Duration::from_secs(2)));
            let mut buf = vec![0u8; 4096];
            let n = c.read(&mut buf).unwrap_or(0);
            s.lock()
                .unwrap()
                .push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    });
    (port, seen)
}

#[test]
fn stale_dns_answer_never_reaches_another_client() {
    let (port_a, seen_a) = tripwire();
    let server_b = EchoServer::plain().unwrap();
    let port_b = server_b.addr().port();
    let gate = Arc::new(GatedResolver::default());
    let mut sup = ClientSupervisor::new().unwrap();
    sup.set_resolver(gate.clone());

    // X to port A: its lookup hangs.
    let x = sup
        .start_client(&format!("ws://feed.test:{port_a}/x"), quiet())
        .unwrap();
    GatedResolver::wait(&gate.started, 1); // X's lookup is running
    sup.stop_client(x).unwrap();
    let ev = run_until(&mut sup, 10, |_, ev| exit_of(ev, x).is_some());
    assert!(
        matches!(exit_of(&ev, x), Some(ClientEvent::Stopped { .. })),
        "{ev:#?}"
    );
    // Y reuses X's slot (same token, same first epoch), to port B, with a
    // credential; its lookup hangs too.
    let cfg = quiet().header("Authorization", "Bearer y-secret");
    let y = sup
        .start_client(&format!("ws://feed.test:{port_b}/y"), cfg)
        .unwrap();
    // X's answer arrives while Y waits for its own.
    gate.release(port_a);
    GatedResolver::wait(&gate.done, 1);
    let _ = run_for(&mut sup, Duration::from_millis(50));
    gate.release(port_b);
    let ev = run_until(&mut sup, 10, |_, ev| opened(ev, y) == 1);
    assert!(exit_of(&ev, y).is_none(), "{ev:#?}");
    assert_eq!(server_b.last_request_path().as_deref(), Some("/y"));
    assert_eq!(
        server_b.last_request_header("authorization").as_deref(),
        Some("Bearer y-secret")
    );
    sup.send_text(y, "still y").unwrap();
    run_until(&mut sup, 10, |_, ev| echoed(ev, y, "still y"));
    assert!(
        seen_a.lock().unwrap().is_empty(),
        "server A got a connection: {:?}",
        seen_a.lock().unwrap()
    );
}

#[test]
fn pinned_host_connects_to_its_address_and_tls_verifies_the_name() {
    let pki = TestPki::generate_for(&["feed.test"]);
    let server = EchoServer::start(EchoOptions::tls(pki.server_config())).unwrap();
    let mut sup = ClientSupervisor::new().unwrap();
    // The first pinned address refuses: the next one is tried in the same attempt.
    let refused = SocketAddr::new(Ipv4Addr::LOCALHOST.into(), refused_port());
    sup.set_resolver(Arc::new(
        PinnedResolver::new()
            .pin("feed.test", refused)
            .pin("feed.test", server.addr())
            .pin("wrong.test", server.addr()),
    ));
    let mut cfg = fast(RetryCount::Limited(0));
    cfg.tls = TlsRoots::CaPem(pki.ca_pem().into_bytes());
    // The URL's port is not the server's: the pin decides.
    let id = sup
        .start_client("wss://feed.test:1/ws?token=abc", cfg.clone())
        .unwrap();
    let ev = run_until(&mut sup, 10, |_, ev| opened(ev, id) == 1);
    assert!(
        !ev.iter()
            .any(|e| matches!(e, ClientEvent::Reconnecting { .. })),
        "the second address is tried within the first attempt: {ev:#?}"
    );
    assert_eq!(server.last_request_path().as_deref(), Some("/ws?token=abc"));
    assert_eq!(
        server.last_request_header("host").as_deref(),
        Some("feed.test:1")
    );
    // Same server, another name: the certificate does not match it.
    let bad = sup.start_client("wss://wrong.test/", cfg).unwrap();
    let ev = run_until(&mut sup, 10, |_, ev| exit_of(ev, bad).is_some());
    assert_eq!(
        failed_with(&ev, bad).and_then(|r| r.error()),
        Some(zenws_core::Error::TlsCertificate),
        "{ev:#?}"
    );
}

/// Every log record of this test binary, formatted.
fn captured() -> &'static Mutex<String> {
    static LOG: OnceLock<Mutex<String>> = OnceLock::new();
    LOG.get_or_init(|| Mutex::new(String::new()))
}

struct Capture;

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, r: &log::Record<'_>) {
        use std::fmt::Write;
        // The client's records only (the echo server logs what it echoes).
        if r.target().starts_with("zenws_mio") || r.target().starts_with("zenws_core") {
            let _ = writeln!(captured().lock().unwrap(), "{} {}", r.level(), r.args());
        }
    }
    fn flush(&self) {}
}

#[test]
fn secrets_never_reach_logs_debug_or_errors() {
    static LOGGER: Capture = Capture;
    log::set_logger(&LOGGER).unwrap();
    log::set_max_level(log::LevelFilter::Trace);

    let server = EchoServer::plain().unwrap();
    let mut sup = ClientSupervisor::new().unwrap();
    // Userinfo is refused, and the error does not repeat it or the query.
    let bad = "ws://user:pw-secret@127.0.0.1:1/p?token=url-secret";
    match sup.start_client(bad, quiet()) {
        Err(e @ Error::InvalidUrl(_)) => {
            let shown = format!("{e} {e:?}");
            assert!(
                !shown.contains("pw-secret") && !shown.contains("url-secret"),
                "{shown}"
            );
            assert!(shown.contains("127.0.0.1:1/p"), "{shown}");
        }
        other => panic!("expected InvalidUrl, got {other:?}"),
    }
    // A bad header value is named, never shown.
    match sup.start_client(&server.url(), quiet().header("X-Key", "hdr-secret\r\nX: 1")) {
        Err(e @ Error::InvalidConfig(_)) => {
            let shown = format!("{e} {e:?}");
            assert!(
                shown.contains("X-Key") && !shown.contains("hdr-secret"),
                "{shown}"
            );
        }
        other => panic!("expected InvalidConfig, got {other:?}"),
    }

    let url = format!("{}?token=url-secret", server.url_with_path("/feed"));
    let cfg = quiet().header("Authorization", "Bearer hdr-secret");
    let id = sup.start_client(&url, cfg).unwrap();
    run_until(&mut sup, 10, |_, ev| opened(ev, id) == 1);
    assert_eq!(
        server.last_request_path().as_deref(),
        Some("/feed?token=url-secret"),
        "the request itself carries the query"
    );
    sup.send_text(id, "body-secret").unwrap();
    run_until(&mut sup, 10, |_, ev| echoed(ev, id, "body-secret"));
    sup.stop_client(id).unwrap();
    run_until(&mut sup, 10, |_, ev| exit_of(ev, id).is_some());

    // (A refused send's Debug showing no body: the driver's unit test
    // `error::tests::a_refused_send_shows_no_body`, the type is internal.)

    let log = captured().lock().unwrap().clone();
    assert!(log.contains("/feed"), "debug logs were captured:\n{log}");
    for secret in ["url-secret", "pw-secret", "hdr-secret", "body-secret"] {
        assert!(
            !log.contains(secret),
            "{secret} leaked into the log:\n{log}"
        );
    }
}

#[test]
fn a_client_failing_inside_start_never_leaves_the_loop_waiting() {
    // Embedded: the loop's own poll must not block while an event waits.
    let poll = mio::Poll::new().unwrap();
    let mut sup = ClientSupervisor::embedded(
        poll.registry(),
        0,
        zenws_core::supervisor::SupervisorConfig::default(),
    )
    .unwrap();
    let id = sup
        .start_client(&format!("ws://127.0.0.1:{}/", refused_port()), quiet())
        .unwrap();
    sup.stop_client(id).unwrap();
    assert!(
        sup.is_empty(),
        "a stop while connecting ends the client at once"
    );
    assert_eq!(sup.poll_timeout(), Some(Duration::ZERO), "an event waits");
    assert!(matches!(
        sup.poll_event(),
        Some(ClientEvent::Stopped { .. })
    ));
    assert_ne!(sup.poll_timeout(), Some(Duration::ZERO), "no event waits");

    // Own poll: run_once(None) returns while an event waits.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut sup = ClientSupervisor::new().unwrap();
        let id = sup
            .start_client(&format!("ws://127.0.0.1:{}/", refused_port()), quiet())
            .unwrap();
        sup.stop_client(id).unwrap();
        sup.run_once(None).unwrap();
        let _ = tx.send(sup.poll_event().is_some());
    });
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(10)),
        Ok(true),
        "run_once(None) blocked with an event queued"
    );
}

#[test]
fn reserved_or_malformed_headers_are_refused_at_start() {
    let server = EchoServer::plain().unwrap();
    let mut sup = ClientSupervisor::new().unwrap();
    for (k, v) in [
        ("Sec-WebSocket-Key", "x"),
        ("Upgrade", "h2c"),
        ("X-Ctl", "a\u{1}b"),
        ("Bad Name", "v"),
        ("X-Nl", "a\nb"),
    ] {
        match sup.start_client(&server.url(), quiet().header(k, v)) {
            Err(Error::InvalidConfig(_)) => {}
            other => panic!("{k:?}: expected InvalidConfig, got {other:?}"),
        }
    }
    assert!(sup.is_empty());
    assert!(sup.poll_event().is_none());
}
