//! Issue 11, item 2: inbound is bounded. Against real loopback servers that
//! flood tiny numbered frames:
//!
//! - an application that does not drain its events keeps the queue under
//!   the per-client bound (the rest waits in the kernel: TCP backpressure)
//!   and the process RSS does not balloon; once it drains, every message
//!   arrives, in order, none lost;
//! - a flooding client does not starve another client on the same
//!   supervisor;
//! - the supervisor-wide bound holds over several clients;
//! - a client paused by our own backpressure is not declared dead by its
//!   heartbeat.
//!
//! No timing thresholds: loops are bounded by a generous deadline only so
//! that a regression fails instead of hanging.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};
use zenws_core::heartbeat::HeartbeatConfig;
use zenws_core::State;
use zenws_mio::supervisor::EVENT_OVERHEAD;
use zenws_mio::{ClientConfig, ClientEvent, ClientId, ClientSupervisor, Message};
use zenws_tests::EchoServer;

/// RSS is per process: these tests run one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

const PATIENCE: Duration = Duration::from_secs(60);

/// The flood of the issue: 8 MiB of 6-byte frames (binary, a 4-byte
/// big-endian sequence number each).
const FLOOD_BYTES: usize = 8 << 20;
const FRAME: usize = 6;

fn quiet() -> ClientConfig {
    let mut c = ClientConfig::default();
    c.connection.heartbeat = HeartbeatConfig::none();
    c
}

/// What one numbered message costs in the queue.
fn numbered_cost() -> usize {
    EVENT_OVERHEAD + 4
}

/// A one-connection WebSocket server on loopback: accepts, upgrades and
/// hands the socket to `script`. Returns the URL.
fn serve(script: impl FnOnce(TcpStream) + Send + 'static) -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    thread::spawn(move || {
        if let Ok((mut s, _)) = l.accept() {
            if upgrade(&mut s) {
                script(s);
            }
        }
    });
    format!("ws://127.0.0.1:{port}/")
}

fn upgrade(s: &mut TcpStream) -> bool {
    let mut req = Vec::new();
    let mut b = [0u8; 1024];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut b) {
            Ok(0) | Err(_) => return false,
            Ok(n) => req.extend_from_slice(&b[..n]),
        }
    }
    let text = String::from_utf8_lossy(&req);
    let key = text
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case("sec-websocket-key")
                .then(|| v.trim().to_string())
        })
        .expect("no key");
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    write!(
        s,
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    )
    .is_ok()
}

/// Write numbered frames `0..total` (`None`: until the client is gone), in
/// 64 KiB chunks of whole frames; `w` is locked per chunk.
fn flood(w: &Mutex<TcpStream>, total: Option<u32>) {
    let mut n: u32 = 0;
    let mut buf = Vec::with_capacity(64 << 10);
    loop {
        buf.clear();
        while buf.len() + FRAME <= 64 << 10 && total.is_none_or(|t| n < t) {
            buf.extend_from_slice(&[0x82, 4]);
            buf.extend_from_slice(&n.to_be_bytes());
            n += 1;
        }
        if buf.is_empty() || w.lock().unwrap().write_all(&buf).is_err() {
            return;
        }
    }
}

/// Read the client's (masked) frames until it goes away, answering pings.
fn answer_pings(mut r: TcpStream, w: &Mutex<TcpStream>) {
    let mut head = [0u8; 2];
    while r.read_exact(&mut head).is_ok() {
        let op = head[0] & 0x0f;
        let mut len = u64::from(head[1] & 0x7f);
        if len == 126 {
            let mut b = [0u8; 2];
            if r.read_exact(&mut b).is_err() {
                return;
            }
            len = u64::from(u16::from_be_bytes(b));
        } else if len == 127 {
            let mut b = [0u8; 8];
            if r.read_exact(&mut b).is_err() {
                return;
            }
            len = u64::from_be_bytes(b);
        }
        let mut mask = [0u8; 4];
        let mut payload = vec![0u8; len as usize];
        if r.read_exact(&mut mask).is_err() || r.read_exact(&mut payload).is_err() {
            return;
        }
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= mask[i % 4];
        }
        match op {
            0x9 if payload.len() < 126 => {
                let mut pong = vec![0x8a, payload.len() as u8];
                pong.extend_from_slice(&payload);
                if w.lock().unwrap().write_all(&pong).is_err() {
                    return;
                }
            }
            0x8 => return,
            _ => {}
        }
    }
}

/// A server flooding `total` numbered frames (`None`: forever), answering
/// pings meanwhile, then keeping the connection open.
fn flooder(total: Option<u32>) -> String {
    serve(move |s| {
        let r = s.try_clone().unwrap();
        let w = Arc::new(Mutex::new(s));
        let w2 = w.clone();
        let reader = thread::spawn(move || answer_pings(r, &w2));
        flood(&w, total);
        let _ = reader.join();
    })
}

/// Checks that numbered messages of each client arrive in order.
#[derive(Default)]
struct Seq {
    next: Vec<(ClientId, u32)>,
}

impl Seq {
    fn see(&mut self, id: ClientId, m: &Message) -> u32 {
        let b = m.as_bytes();
        assert_eq!(b.len(), 4, "{id}: unexpected message {m:?}");
        let n = u32::from_be_bytes(b.try_into().unwrap());
        let next = match self.next.iter_mut().find(|(i, _)| *i == id) {
            Some((_, next)) => next,
            None => {
                self.next.push((id, 0));
                &mut self.next.last_mut().unwrap().1
            }
        };
        assert_eq!(n, *next, "{id}: message lost or out of order");
        *next += 1;
        *next
    }

    fn count(&self, id: ClientId) -> u32 {
        self.next
            .iter()
            .find(|(i, _)| *i == id)
            .map_or(0, |(_, n)| *n)
    }
}

/// No message lost, and no sign of a dead connection.
fn check(ev: &ClientEvent, seq: &mut Seq) {
    match ev {
        ClientEvent::Message { id, message } => {
            seq.see(*id, message);
        }
        ClientEvent::Opened { .. } | ClientEvent::HeartbeatMissed { .. } => {}
        other => panic!("unexpected event {other:?}"),
    }
}

fn status_kb(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

fn wait_open(sup: &mut ClientSupervisor, ids: &[ClientId]) {
    let deadline = Instant::now() + PATIENCE;
    while !ids.iter().all(|id| sup.state(*id) == Some(State::Open)) {
        assert!(Instant::now() < deadline, "not open");
        sup.run_once(Some(Duration::from_millis(20))).unwrap();
    }
}

#[test]
fn an_undrained_flood_stays_under_the_bound_then_every_message_arrives() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let total = (FLOOD_BYTES / FRAME) as u32;
    let url = flooder(Some(total));
    let (rss0, hwm0) = (status_kb("VmRSS:"), status_kb("VmHWM:"));

    let mut sup = ClientSupervisor::new().unwrap();
    let config = quiet();
    let limit = config.inbound_queue_limit;
    let id = sup.start_client(&url, config).unwrap();
    let bound = limit + numbered_cost();

    // The application does not drain: the queue fills to the bound and
    // stays there, however many turns run.
    let deadline = Instant::now() + PATIENCE;
    let mut turns_at_bound = 0;
    while turns_at_bound < 200 {
        assert!(
            Instant::now() < deadline,
            "the queue never reached its bound"
        );
        sup.run_once(Some(Duration::from_millis(5))).unwrap();
        let q = sup.queued_inbound_bytes_of(id).unwrap();
        assert!(q <= bound, "queued {q} > bound {bound}");
        assert!(sup.queued_inbound_bytes() <= bound);
        if q >= limit {
            turns_at_bound += 1;
        }
    }
    let rss_paused = status_kb("VmRSS:");

    // Drain: every message, in order.
    let mut seq = Seq::default();
    let mut max_queued = 0;
    while seq.count(id) < total {
        assert!(
            Instant::now() < deadline,
            "only {} of {total} messages arrived",
            seq.count(id)
        );
        while let Some(ev) = sup.poll_event() {
            check(&ev, &mut seq);
        }
        sup.run_once(Some(Duration::from_millis(100))).unwrap();
        max_queued = max_queued.max(sup.queued_inbound_bytes());
    }
    assert!(max_queued <= bound, "queued {max_queued} > bound {bound}");
    let hwm = status_kb("VmHWM:");
    sup.stop_client(id).unwrap();

    // The issue measured ≈ 28× amplification (229 MB peak RSS for this
    // flood). Bounded, the queue holds 8 MiB of accounted bytes.
    let grew = |a: u64, b: u64| b.saturating_sub(a) / 1024;
    eprintln!(
        "RSS: +{} MiB while paused, peak +{} MiB (queue bound {} MiB)",
        grew(rss0, rss_paused),
        grew(hwm0, hwm),
        limit >> 20
    );
    if cfg!(target_os = "linux") {
        assert!(grew(rss0, rss_paused) < 64, "RSS ballooned while paused");
        assert!(grew(hwm0, hwm) < 96, "peak RSS ballooned");
    }
}

#[test]
fn a_flooding_client_does_not_starve_another() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let flood_url = flooder(None);
    let echo = EchoServer::plain().unwrap();
    let mut sup = ClientSupervisor::new().unwrap();
    let a = sup.start_client(&flood_url, quiet()).unwrap();
    let b = sup.start_client(&echo.url(), quiet()).unwrap();
    wait_open(&mut sup, &[a, b]);
    let limit = quiet().inbound_queue_limit;

    // Not draining: the flood stops at its client's bound, while the other
    // client's answers keep being read.
    const N: usize = 100;
    let body = "x".repeat(10 << 10);
    for i in 0..N {
        sup.send_text(b, format!("{i:04}{body}")).unwrap();
    }
    let b_full = EVENT_OVERHEAD + N * (EVENT_OVERHEAD + 4 + body.len());
    let deadline = Instant::now() + PATIENCE;
    loop {
        assert!(
            Instant::now() < deadline,
            "starved: a has {:?}, b has {:?} of {b_full} bytes queued",
            sup.queued_inbound_bytes_of(a),
            sup.queued_inbound_bytes_of(b)
        );
        sup.run_once(Some(Duration::from_millis(5))).unwrap();
        let qa = sup.queued_inbound_bytes_of(a).unwrap();
        let qb = sup.queued_inbound_bytes_of(b).unwrap();
        assert!(qa <= limit + numbered_cost(), "a: {qa}");
        assert!(qb <= b_full, "b: {qb}");
        if qa >= limit && qb == b_full {
            break;
        }
    }

    // Draining: both are read, in order; the flood goes on (it is endless)
    // and the echoes still come back, one round trip at a time.
    let mut seq = Seq::default();
    let mut echoes = 0;
    let handle = |ev: ClientEvent, seq: &mut Seq, echoes: &mut usize| match ev {
        ClientEvent::Message { id, message } if id == b => {
            let t = message.as_text().expect("text");
            assert_eq!(&t[..4], format!("{:04}", *echoes), "echo out of order");
            *echoes += 1;
        }
        ev => check(&ev, seq),
    };
    while echoes < N {
        assert!(Instant::now() < deadline, "echoes lost");
        while let Some(ev) = sup.poll_event() {
            handle(ev, &mut seq, &mut echoes);
        }
        sup.run_once(Some(Duration::from_millis(100))).unwrap();
    }
    let flooded = seq.count(a);
    for i in N..2 * N {
        sup.send_text(b, format!("{i:04}")).unwrap();
        while echoes <= i {
            assert!(Instant::now() < deadline, "b starved by a's flood");
            sup.run_once(Some(Duration::from_millis(100))).unwrap();
            while let Some(ev) = sup.poll_event() {
                handle(ev, &mut seq, &mut echoes);
            }
            assert!(sup.queued_inbound_bytes_of(a).unwrap() <= limit + numbered_cost());
        }
    }
    assert!(seq.count(a) > flooded, "a is not read any more");
}

#[test]
fn the_supervisor_wide_bound_holds_over_several_clients() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    const CLIENTS: usize = 3;
    let total = ((2 << 20) / FRAME) as u32;
    let mut sup = ClientSupervisor::new().unwrap();
    let overall = 1 << 20;
    sup.set_inbound_queue_limit(overall);
    assert_eq!(sup.inbound_queue_limit(), overall);
    let ids: Vec<ClientId> = (0..CLIENTS)
        .map(|_| sup.start_client(&flooder(Some(total)), quiet()).unwrap())
        .collect();
    // Lifecycle events (each client's `Opened`) are queued even at the bound.
    let bound = overall + numbered_cost() + CLIENTS * EVENT_OVERHEAD;

    let deadline = Instant::now() + PATIENCE;
    let mut turns_at_bound = 0;
    while turns_at_bound < 100 {
        assert!(Instant::now() < deadline, "never reached the bound");
        sup.run_once(Some(Duration::from_millis(5))).unwrap();
        let q = sup.queued_inbound_bytes();
        assert!(q <= bound, "queued {q} > {bound}");
        if q >= overall {
            turns_at_bound += 1;
        }
    }

    let mut seq = Seq::default();
    while ids.iter().any(|id| seq.count(*id) < total) {
        assert!(Instant::now() < deadline, "messages lost");
        while let Some(ev) = sup.poll_event() {
            check(&ev, &mut seq);
        }
        sup.run_once(Some(Duration::from_millis(100))).unwrap();
        assert!(sup.queued_inbound_bytes() <= bound);
    }
}

#[test]
fn a_client_paused_by_our_backpressure_is_not_declared_dead() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let total = ((512 << 10) / FRAME) as u32;
    let url = flooder(Some(total));
    let mut sup = ClientSupervisor::new().unwrap();
    let mut config = ClientConfig::default();
    // Misses would be counted every 400 ms, and two kill the connection.
    config.connection.heartbeat =
        HeartbeatConfig::ping(Duration::from_millis(300), Duration::from_millis(100));
    config.connection.heartbeat.failure_threshold = 2;
    config.inbound_queue_limit = 64 << 10;
    let id = sup.start_client(&url, config).unwrap();
    wait_open(&mut sup, &[id]);

    // Not draining for many heartbeat periods: reading is paused by our own
    // bound, so the heartbeat waits too.
    let paused_until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < paused_until {
        thread::sleep(Duration::from_millis(20));
        sup.run_once(Some(Duration::ZERO)).unwrap();
    }
    assert_eq!(sup.state(id), Some(State::Open));

    let mut seq = Seq::default();
    let deadline = Instant::now() + PATIENCE;
    while seq.count(id) < total {
        assert!(Instant::now() < deadline, "messages lost");
        while let Some(ev) = sup.poll_event() {
            check(&ev, &mut seq); // no Disconnected / HeartbeatFailed
        }
        sup.run_once(Some(Duration::from_millis(100))).unwrap();
    }
    // The heartbeat runs again once reading resumed: pongs are read.
    let rtts = |sup: &ClientSupervisor| sup.health(id).unwrap();
    let before = rtts(&sup).last_heartbeat;
    while rtts(&sup).last_heartbeat == before {
        assert!(Instant::now() < deadline, "no pong after the pause");
        sup.run_once(Some(Duration::from_millis(50))).unwrap();
        while let Some(ev) = sup.poll_event() {
            check(&ev, &mut seq);
        }
    }
    assert_eq!(sup.state(id), Some(State::Open));
}
