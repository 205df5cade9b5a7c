//! A server must not be able to make the client drop heartbeat replies or
//! flood its log (issue 11, item 6): 1000 Deribit `test_request`s in one
//! burst are answered (coalesced: one `public/test` answers every
//! `test_request` that arrived before it went out) with no warning or error
//! logged, and the connection stays up.

use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};
use zenws_core::exchange::deribit::{self, Deribit};
use zenws_mio::{ClientConfig, ClientEvent, ClientSupervisor};
use zenws_tests::deribit::{DeribitOptions, DeribitServer, RateLimit};

fn captured() -> &'static Mutex<Vec<String>> {
    static LOG: OnceLock<Mutex<Vec<String>>> = OnceLock::new();
    LOG.get_or_init(|| Mutex::new(Vec::new()))
}

struct Capture;

impl log::Log for Capture {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.level() <= log::Level::Warn
    }
    fn log(&self, r: &log::Record<'_>) {
        if r.target().starts_with("zenws_mio") || r.target().starts_with("zenws_core") {
            captured()
                .lock()
                .unwrap()
                .push(format!("{} {}", r.level(), r.args()));
        }
    }
    fn flush(&self) {}
}

fn run_until(
    sup: &mut ClientSupervisor,
    secs: u64,
    mut done: impl FnMut(&ClientEvent) -> bool,
) -> bool {
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        sup.run_once(Some(Duration::from_millis(10))).unwrap();
        while let Some(ev) = sup.poll_event() {
            assert!(
                !matches!(
                    ev,
                    ClientEvent::Disconnected { .. } | ClientEvent::Failed { .. }
                ),
                "{ev:?}"
            );
            if done(&ev) {
                return true;
            }
        }
    }
    false
}

#[test]
fn a_burst_of_test_requests_is_answered_without_log_floods() {
    static LOGGER: Capture = Capture;
    log::set_logger(&LOGGER).unwrap();
    log::set_max_level(log::LevelFilter::Warn);

    // The server's credit limit is not under test here: every `public/test`
    // costs credits, and how many go out depends on how the burst is split
    // into reads.
    let server = DeribitServer::start(DeribitOptions {
        rate_limit: RateLimit {
            cost: 1,
            max_credits: 1_000_000,
            refill_per_sec: 1_000_000,
        },
        ..DeribitOptions::default()
    })
    .unwrap();
    let mut config = ClientConfig::default().protocol(Deribit::public());
    config.connection.heartbeat = deribit::heartbeat(10);
    let mut sup = ClientSupervisor::new().unwrap();
    sup.start_client(&server.url(), config).unwrap();
    assert!(run_until(&mut sup, 10, |e| matches!(
        e,
        ClientEvent::Opened { .. }
    )));
    assert!(server.wait_for_method("public/set_heartbeat", 1, Duration::from_secs(10)));

    const BURST: usize = 1000;
    let request = r#"{"jsonrpc":"2.0","method":"heartbeat","params":{"type":"test_request"}}"#;
    for _ in 0..BURST {
        assert_eq!(server.push_to_all(request), 1);
    }
    // Answered: at least one `public/test` after the burst began.
    let end = Instant::now() + Duration::from_secs(10);
    while server.count_method("public/test") == 0 && Instant::now() < end {
        run_until(&mut sup, 0, |_| false);
        sup.run_once(Some(Duration::from_millis(10))).unwrap();
    }
    // Let the rest of the burst arrive and be answered.
    run_until(&mut sup, 1, |_| false);
    let answers = server.count_method("public/test");
    assert!((1..=BURST).contains(&answers), "{answers} answers");
    assert_eq!(server.connections_accepted(), 1, "the connection stayed up");
    assert_eq!(server.heartbeat_closes(), 0);
    let logged = captured().lock().unwrap().clone();
    assert!(logged.is_empty(), "warnings/errors logged: {logged:#?}");
}
