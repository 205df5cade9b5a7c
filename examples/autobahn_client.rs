//! Autobahn|Testsuite client: runs every case of a fuzzing server against
//! zenws-mio's `ClientSupervisor`.
//!
//! ```sh
//! scripts/autobahn.sh            # installs wstest, builds this in release, runs, summarizes
//! AUTOBAHN_URL=ws://127.0.0.1:9001 cargo run --release --example autobahn_client
//! ```
//!
//! The standard loop: `/getCaseCount` → for each case `/runCase?case=K&agent=zenws`
//! echoing every text and binary message back until the connection ends →
//! `/updateReports?agent=zenws`. Each connection is a Temporary client with
//! no heartbeat and no retries, so a case that ends is never reconnected.
//! Messages are echoed from the loop as they are drained, with no copy (the
//! received `Bytes` go straight back out).
//!
//! Env: `AUTOBAHN_URL` (default `ws://127.0.0.1:9001`), `AUTOBAHN_AGENT`
//! (default `zenws`), `AUTOBAHN_CASE_TIMEOUT` seconds per case (default 120).

use std::time::{Duration, Instant};
use zenws_core::retry::RetryCount;
use zenws_core::supervisor::RestartType;
use zenws_core::HeartbeatConfig;
use zenws_mio::{ClientConfig, ClientEvent, ClientSupervisor, Error, Message};

/// Autobahn 9.* sends messages up to 16 MiB; leave room above that.
const MAX_MESSAGE: usize = 32 << 20;

fn config() -> ClientConfig {
    let mut c = ClientConfig::default();
    c.connection.heartbeat = HeartbeatConfig::none();
    c.connection.retry.retry_count = RetryCount::Limited(0);
    c.connection.connect_timeout = Duration::from_secs(60);
    c.connection.close_timeout = Duration::from_secs(10);
    c.connection.max_message_size = MAX_MESSAGE;
    // Echoing a burst of messages (9.7/9.8: 1000 messages back to back)
    // queues them all while the server still sends.
    c.connection.max_pending_bytes = 2 * MAX_MESSAGE;
    c.restart = RestartType::Temporary;
    // Bigger reads: the 9.* cases move hundreds of MiB.
    c
}

/// Run one connection to `url` until it ends. Every data message goes to
/// `on_message`, which may echo it. Returns how the connection ended.
fn run_connection(
    sup: &mut ClientSupervisor,
    url: &str,
    timeout: Duration,
    mut on_message: impl FnMut(&mut ClientSupervisor, zenws_mio::ClientId, Message),
) -> Result<String, String> {
    let id = sup
        .start_client(url, config())
        .map_err(|e| format!("start {url}: {e}"))?;
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            let _ = sup.stop_client(id);
            return Err(format!("{url}: no end after {timeout:?}"));
        }
        sup.run_once(Some(left.min(Duration::from_millis(500))))
            .map_err(|e| format!("event loop: {e}"))?;
        while let Some(ev) = sup.poll_event() {
            match ev {
                ClientEvent::Message { id: from, message } if from == id => {
                    on_message(sup, id, message)
                }
                ClientEvent::Stopped { id: from } if from == id => return Ok("stopped".into()),
                ClientEvent::Failed {
                    id: from,
                    reason,
                    detail,
                } if from == id => {
                    return Ok(if detail.is_empty() {
                        format!("{reason}")
                    } else {
                        format!("{reason} ({detail})")
                    });
                }
                _ => {}
            }
        }
    }
}

fn echo(sup: &mut ClientSupervisor, id: zenws_mio::ClientId, message: Message) {
    match sup.send_message(id, message) {
        Ok(()) => {}
        // The peer may already be closing, or the connection failed (and the
        // client is gone) with messages still queued: the case decides what
        // that means, nothing to do here.
        Err(Error::Send(_) | Error::UnknownClient(_)) => {}
        Err(e) => eprintln!("autobahn_client: echo failed: {e}"),
    }
}

fn main() {
    let base = std::env::var("AUTOBAHN_URL").unwrap_or_else(|_| "ws://127.0.0.1:9001".into());
    let base = base.trim_end_matches('/').to_string();
    let agent = std::env::var("AUTOBAHN_AGENT").unwrap_or_else(|_| "zenws".into());
    let case_timeout = Duration::from_secs(
        std::env::var("AUTOBAHN_CASE_TIMEOUT")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(120),
    );
    let mut sup = ClientSupervisor::new().expect("event loop");

    let mut count = None;
    let url = format!("{base}/getCaseCount");
    if let Err(e) = run_connection(&mut sup, &url, Duration::from_secs(60), |_, _, m| {
        count = m.as_text().and_then(|t| t.trim().parse::<u32>().ok());
    }) {
        eprintln!("autobahn_client: {e}");
        std::process::exit(1);
    }
    let Some(count) = count else {
        eprintln!("autobahn_client: no case count from {url}");
        std::process::exit(1);
    };
    eprintln!("autobahn_client: {count} cases at {base} as agent {agent:?}");

    let started = Instant::now();
    let mut errors = 0;
    for case in 1..=count {
        let url = format!("{base}/runCase?case={case}&agent={agent}");
        let t0 = Instant::now();
        match run_connection(&mut sup, &url, case_timeout, echo) {
            Ok(end) => log_case(case, count, t0, &end),
            Err(e) => {
                errors += 1;
                eprintln!("autobahn_client: case {case}: {e}");
            }
        }
    }
    eprintln!(
        "autobahn_client: {count} cases in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let url = format!("{base}/updateReports?agent={agent}");
    if let Err(e) = run_connection(&mut sup, &url, Duration::from_secs(120), |_, _, _| {}) {
        eprintln!("autobahn_client: {e}");
        std::process::exit(1);
    }
    if errors > 0 {
        eprintln!("autobahn_client: {errors} case(s) did not end in time");
        std::process::exit(1);
    }
}

fn log_case(case: u32, count: u32, t0: Instant, end: &str) {
    let ms = t0.elapsed().as_millis();
    // Keep the log short: slow cases and every 50th.
    if ms >= 1000 || case.is_multiple_of(50) || case == count {
        eprintln!("autobahn_client: case {case}/{count} ended in {ms} ms: {end}");
    }
}
