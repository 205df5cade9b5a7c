//! Helpers shared by the driver integration tests (echo, failures, supervision,
//! fault injection): loop runners bounded by deadlines, event predicates, configs.
#![allow(dead_code)]

use std::net::TcpListener;
use std::time::{Duration, Instant};
use zenws_core::retry::RetryCount;
use zenws_core::{Error as Reason, ExitReason, HeartbeatConfig};
use zenws_mio::{ClientConfig, ClientEvent, ClientId, ClientSupervisor};

/// Run the loop until `cond` holds or `secs` pass (then panic); returns every event seen.
pub fn run_until(
    sup: &mut ClientSupervisor,
    secs: u64,
    mut cond: impl FnMut(&mut ClientSupervisor, &[ClientEvent]) -> bool,
) -> Vec<ClientEvent> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut seen = Vec::new();
    loop {
        sup.run_once(Some(Duration::from_millis(10))).unwrap();
        while let Some(ev) = sup.poll_event() {
            seen.push(ev);
        }
        if cond(sup, &seen) {
            return seen;
        }
        if Instant::now() >= deadline {
            panic!(
                "condition not met in {secs}s; last events: {:#?}",
                &seen[seen.len().saturating_sub(30)..]
            );
        }
    }
}

/// Run the loop for `d` (no condition); returns the events seen.
pub fn run_for(sup: &mut ClientSupervisor, d: Duration) -> Vec<ClientEvent> {
    let deadline = Instant::now() + d;
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        sup.run_once(Some(Duration::from_millis(10))).unwrap();
        while let Some(ev) = sup.poll_event() {
            seen.push(ev);
        }
    }
    seen
}

/// Run two supervisors on this thread, turn by turn, until `cond` holds
/// (panics after `secs`). Returns the events of each.
pub fn run_two_until(
    a: &mut ClientSupervisor,
    b: &mut ClientSupervisor,
    secs: u64,
    mut cond: impl FnMut(
        &mut ClientSupervisor,
        &[ClientEvent],
        &mut ClientSupervisor,
        &[ClientEvent],
    ) -> bool,
) -> (Vec<ClientEvent>, Vec<ClientEvent>) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let (mut ea, mut eb) = (Vec::new(), Vec::new());
    loop {
        a.run_once(Some(Duration::from_millis(5))).unwrap();
        b.run_once(Some(Duration::from_millis(5))).unwrap();
        while let Some(ev) = a.poll_event() {
            ea.push(ev);
        }
        while let Some(ev) = b.poll_event() {
            eb.push(ev);
        }
        if cond(a, &ea, b, &eb) {
            return (ea, eb);
        }
        if Instant::now() >= deadline {
            panic!(
                "condition not met in {secs}s; last events A: {:#?}\nB: {:#?}",
                &ea[ea.len().saturating_sub(20)..],
                &eb[eb.len().saturating_sub(20)..]
            );
        }
    }
}

pub fn opened(events: &[ClientEvent], id: ClientId) -> usize {
    events
        .iter()
        .filter(|e| matches!(e, ClientEvent::Opened { id: i } if *i == id))
        .count()
}

pub fn echoed(events: &[ClientEvent], id: ClientId, text: &str) -> bool {
    events.iter().any(
        |e| matches!(e, ClientEvent::Message { id: i, message } if *i == id && message.as_text() == Some(text)),
    )
}

pub fn messages(events: &[ClientEvent], id: ClientId) -> usize {
    events
        .iter()
        .filter(|e| matches!(e, ClientEvent::Message { id: i, .. } if *i == id))
        .count()
}

/// The exit event (`Stopped` / `Failed`) of `id`, if any.
pub fn exit_of(events: &[ClientEvent], id: ClientId) -> Option<&ClientEvent> {
    events.iter().find(|e| {
        matches!(e, ClientEvent::Stopped { id: i } | ClientEvent::Failed { id: i, .. } if *i == id)
    })
}

pub fn failed_with(events: &[ClientEvent], id: ClientId) -> Option<ExitReason> {
    events.iter().find_map(|e| match e {
        ClientEvent::Failed { id: i, reason, .. } if *i == id => Some(*reason),
        _ => None,
    })
}

pub fn reconnect_reasons(events: &[ClientEvent], id: ClientId) -> Vec<Reason> {
    events
        .iter()
        .filter_map(|e| match e {
            ClientEvent::Reconnecting { id: i, reason, .. } if *i == id => Some(*reason),
            _ => None,
        })
        .collect()
}

pub fn count(events: &[ClientEvent], pred: impl Fn(&ClientEvent) -> bool) -> usize {
    events.iter().filter(|e| pred(e)).count()
}

/// Where the (first) `BudgetExhausted` escalation is in `events`.
pub fn escalation_index(events: &[ClientEvent]) -> usize {
    events
        .iter()
        .position(|e| matches!(e, ClientEvent::BudgetExhausted { .. }))
        .expect("no BudgetExhausted event")
}

/// No heartbeat, default retries.
pub fn quiet() -> ClientConfig {
    let mut c = ClientConfig::default();
    c.connection.heartbeat = HeartbeatConfig::none();
    c
}

/// No heartbeat, quick retries (`n` per outage, 10..50 ms apart), short connect timeout.
pub fn fast(retries: RetryCount) -> ClientConfig {
    let mut c = quiet();
    c.connection.retry.retry_count = retries;
    c.connection.retry.retry_delay = Duration::from_millis(10);
    c.connection.retry.max_backoff = Duration::from_millis(50);
    c.connection.connect_timeout = Duration::from_secs(2);
    c
}

/// A loopback port nothing listens on (bound, then released).
pub fn refused_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}
