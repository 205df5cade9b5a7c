//! The zenws demo: supervised clients surviving a misbehaving world.
//!
//! ```text
//! cargo run --release --example supervised_echo
//! ```
//!
//! Needs nothing outside the repository: it starts an in-process echo server
//! on 127.0.0.1, then a `ClientSupervisor` with four clients (ping heartbeat,
//! short retry delays), and puts them through:
//!
//! 1. a message exchange and a health table (status, RTT p50/p99);
//! 2. the server killing every connection → each client reconnects;
//! 3. the server down for a second → retries until it is back;
//! 4. a fifth client on a flapping server → its retries run out, the
//!    supervisor restarts it (one-for-one: the others don't notice);
//! 5. a second supervisor with a budget of 3 restarts in 10 s whose flapping
//!    child exhausts it → the supervisor stops all its children;
//! 6. a final health table and a clean stop.
//!
//! It finishes by itself in a few seconds and exits 0 (1 if a step didn't
//! happen in time).

use std::collections::HashMap;
use std::time::{Duration, Instant};
use zenws_core::retry::{RetryCount, RetryPolicy};
use zenws_core::supervisor::{RestartIntensity, SupervisorConfig};
use zenws_core::{ExitReason, HeartbeatConfig};
use zenws_mio::{ClientConfig, ClientEvent, ClientId, ClientSupervisor};
use zenws_tests::{Behavior, EchoServer, MisbehavingServer};

/// One supervisor plus what the narrative needs.
struct Sup {
    tag: &'static str,
    sup: ClientSupervisor,
    names: HashMap<ClientId, &'static str>,
}

struct Demo {
    t0: Instant,
}

impl Demo {
    fn stamp(&self) -> String {
        format!("{:>6.2}s", self.t0.elapsed().as_secs_f64())
    }

    fn step(&self, title: &str) {
        println!("\n{} ── {title}", self.stamp());
    }

    fn say(&self, s: &Sup, id: Option<ClientId>, what: &str) {
        let who = id.map_or("supervisor", |id| s.names.get(&id).copied().unwrap_or("?"));
        println!("{}  {:<5} {:<8} {what}", self.stamp(), s.tag, who);
    }

    fn narrate(&self, s: &Sup, ev: &ClientEvent) {
        let what = match ev {
            ClientEvent::Opened { .. } => "connected".to_string(),
            ClientEvent::Message { message, .. } => {
                format!("got echo {:?}", message.as_text().unwrap_or("<binary>"))
            }
            ClientEvent::Disconnected { reason, .. } => format!("disconnected: {reason}"),
            ClientEvent::Reconnecting {
                attempt,
                delay,
                reason,
                ..
            } => {
                format!(
                    "retry #{attempt} in {} ms ({})",
                    delay.as_millis(),
                    reason.name()
                )
            }
            ClientEvent::Restarted {
                restarts, reason, ..
            } => {
                format!("RESTARTED by the supervisor (restart #{restarts}) after: {reason}")
            }
            ClientEvent::HeartbeatMissed { consecutive, .. } => {
                format!("heartbeat missed ({consecutive} in a row)")
            }
            ClientEvent::HeartbeatFailed { .. } => {
                "heartbeat failed: peer declared dead".to_string()
            }
            ClientEvent::Stopped { .. } => "stopped".to_string(),
            ClientEvent::Failed {
                reason: ExitReason::Normal,
                ..
            } => "ended".to_string(),
            ClientEvent::Failed { reason, .. } => format!("FAILED: {reason}"),
            ClientEvent::BudgetExhausted { restarts, window } => format!(
                "RESTART BUDGET EXHAUSTED ({restarts} restarts in {} s): stopping every child",
                window.as_secs()
            ),
            other => format!("{other:?}"),
        };
        self.say(s, ev.client(), &what);
    }

    /// Run `s`'s loop until `done` holds for the events seen so far (narrating
    /// each one), or fail the demo after `secs`.
    fn run_until(
        &self,
        s: &mut Sup,
        secs: u64,
        what: &str,
        mut done: impl FnMut(&ClientSupervisor, &[ClientEvent]) -> bool,
    ) -> Vec<ClientEvent> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        let mut seen = Vec::new();
        loop {
            s.sup
                .run_once(Some(Duration::from_millis(20)))
                .expect("event loop");
            while let Some(ev) = s.sup.poll_event() {
                self.narrate(s, &ev);
                seen.push(ev);
            }
            if done(&s.sup, &seen) {
                return seen;
            }
            if Instant::now() > deadline {
                eprintln!("demo: timed out after {secs} s waiting for: {what}");
                std::process::exit(1);
            }
        }
    }

    /// Keep the loop running for `d` (heartbeats, RTT samples).
    fn run_for(&self, s: &mut Sup, d: Duration) {
        let end = Instant::now() + d;
        self.run_until(s, d.as_secs() + 5, "time to pass", |_, _| {
            Instant::now() >= end
        });
    }

    fn health_table(&self, s: &Sup) {
        println!(
            "\n    {:<8} {:<10} {:<12} {:>9} {:>9} {:>5} {:>5} {:>10} {:>8}",
            "client",
            "state",
            "health",
            "rtt p50",
            "rtt p99",
            "in",
            "out",
            "reconnects",
            "restarts"
        );
        let us =
            |d: Option<Duration>| d.map_or("-".to_string(), |d| format!("{} µs", d.as_micros()));
        for id in s.sup.list_clients() {
            let (Some(h), Some(m), Some(st)) =
                (s.sup.health(id), s.sup.metrics(id), s.sup.state(id))
            else {
                continue;
            };
            println!(
                "    {:<8} {:<10} {:<12} {:>9} {:>9} {:>5} {:>5} {:>10} {:>8}",
                s.names[&id],
                format!("{st:?}"),
                format!("{:?}", h.status),
                us(h.rtt_p50),
                us(h.rtt_p99),
                m.messages_in,
                m.messages_out,
                m.reconnects,
                m.restarts
            );
        }
        println!();
    }
}

fn count(events: &[ClientEvent], pred: impl Fn(&ClientEvent) -> bool) -> usize {
    events.iter().filter(|e| pred(e)).count()
}

fn opened(events: &[ClientEvent]) -> usize {
    count(events, |e| matches!(e, ClientEvent::Opened { .. }))
}

fn echoes(events: &[ClientEvent]) -> usize {
    count(events, |e| matches!(e, ClientEvent::Message { .. }))
}

/// The clients' configuration: ping every 200 ms (150 ms pong timeout, dead
/// after 2 misses), retries from 100 ms doubling to 500 ms, at most 5 per
/// outage, the ladder reset after 300 ms of health.
fn client_config() -> ClientConfig {
    let mut c = ClientConfig::default();
    c.connection.heartbeat =
        HeartbeatConfig::ping(Duration::from_millis(200), Duration::from_millis(150));
    c.connection.retry = RetryPolicy::default()
        .with_retry_count(RetryCount::Limited(5))
        .with_retry_delay(Duration::from_millis(100))
        .with_max_backoff(Duration::from_millis(500))
        .with_reset_after(Duration::from_millis(300));
    c.connection.connect_timeout = Duration::from_secs(2);
    c
}

/// A client that gives up fast: `retries` retries, 50 ms apart.
fn impatient(retries: u32) -> ClientConfig {
    let mut c = client_config();
    c.connection.retry.retry_count = RetryCount::Limited(retries);
    c.connection.retry.retry_delay = Duration::from_millis(50);
    c.connection.retry.max_backoff = Duration::from_millis(50);
    c
}

fn send_all(demo: &Demo, s: &mut Sup, text: &str) {
    for id in s.sup.list_clients() {
        let msg = format!("{text} from {}", s.names[&id]);
        if let Err(e) = s.sup.send_text(id, msg) {
            demo.say(s, Some(id), &format!("send refused: {e}"));
        }
    }
}

fn main() {
    let demo = Demo { t0: Instant::now() };
    println!("zenws supervised echo demo: 4 clients, one echo server, a lot of bad luck.");

    // ── 1 ────────────────────────────────────────────────────────────────
    let server = EchoServer::plain().expect("start the echo server");
    demo.step(&format!(
        "echo server on {}; starting a supervisor with 4 clients",
        server.url()
    ));
    let mut main_sup = Sup {
        tag: "sup1",
        sup: ClientSupervisor::new().expect("supervisor"),
        names: HashMap::new(),
    };
    for name in ["alpha", "bravo", "charlie", "delta"] {
        let id = main_sup
            .sup
            .start_client(&server.url(), client_config())
            .expect("start client");
        main_sup.names.insert(id, name);
    }
    demo.run_until(&mut main_sup, 10, "4 clients connected", |_, ev| {
        opened(ev) == 4
    });
    send_all(&demo, &mut main_sup, "hello");
    demo.run_until(&mut main_sup, 10, "4 echoes", |_, ev| echoes(ev) == 4);
    demo.step("heartbeats running (ping every 200 ms) ...");
    demo.run_for(&mut main_sup, Duration::from_millis(700));
    demo.health_table(&main_sup);

    // ── 2 ────────────────────────────────────────────────────────────────
    demo.step("the server kills every connection (TCP FIN, no close frame)");
    server.kill_connections();
    demo.run_until(&mut main_sup, 10, "4 reconnects", |_, ev| opened(ev) == 4);
    demo.run_for(&mut main_sup, Duration::from_millis(400)); // healthy again: the retry ladder resets

    // ── 3 ────────────────────────────────────────────────────────────────
    demo.step("the server goes down for 1 s (connections refused)");
    server.stop();
    let down_until = Instant::now() + Duration::from_secs(1);
    demo.run_until(&mut main_sup, 5, "1 s to pass", |_, _| {
        Instant::now() >= down_until
    });
    server.restart().expect("restart the echo server");
    demo.step("the server is back on the same port");
    demo.run_until(&mut main_sup, 10, "4 reconnects", |_, ev| opened(ev) == 4);
    send_all(&demo, &mut main_sup, "still here");
    demo.run_until(&mut main_sup, 10, "4 echoes", |_, ev| echoes(ev) == 4);

    // ── 4 ────────────────────────────────────────────────────────────────
    let flapping =
        MisbehavingServer::start(Behavior::AcceptAndDrop).expect("start the flapping server");
    demo.step(&format!(
        "a 5th client, 'flappy' (1 retry per outage), joins against a flapping server on {}",
        flapping.url()
    ));
    let flappy = main_sup
        .sup
        .start_client(&flapping.url(), impatient(1))
        .expect("start flappy");
    main_sup.names.insert(flappy, "flappy");
    let is_flappy_restart =
        |e: &ClientEvent| matches!(e, ClientEvent::Restarted { id, .. } if *id == flappy);
    demo.run_until(&mut main_sup, 10, "3 restarts of flappy", |_, ev| {
        count(ev, is_flappy_restart) >= 3
    });
    demo.step("enough: stopping 'flappy' (a normal exit: not restarted); the others never noticed");
    main_sup.sup.stop_client(flappy).expect("stop flappy");
    demo.run_until(&mut main_sup, 10, "flappy stopped", |s, _| {
        s.state(flappy).is_none()
    });

    // ── 5 ────────────────────────────────────────────────────────────────
    demo.step(
        "a second supervisor, budget 3 restarts in 10 s: 'steady' (echo) + 'doomed' (flapping)",
    );
    let mut budget_sup = Sup {
        tag: "sup2",
        sup: ClientSupervisor::with_config(
            SupervisorConfig::default()
                .with_intensity(RestartIntensity {
                    max_restarts: 3,
                    max_seconds: Duration::from_secs(10),
                })
                .with_restart_delay(Duration::from_millis(50)),
        )
        .expect("supervisor"),
        names: HashMap::new(),
    };
    let steady = budget_sup
        .sup
        .start_client(&server.url(), client_config())
        .expect("start steady");
    budget_sup.names.insert(steady, "steady");
    demo.run_until(&mut budget_sup, 10, "steady connected", |_, ev| {
        opened(ev) == 1
    });
    let doomed = budget_sup
        .sup
        .start_client(&flapping.url(), impatient(0))
        .expect("start doomed");
    budget_sup.names.insert(doomed, "doomed");
    demo.run_until(
        &mut budget_sup,
        10,
        "budget exhausted, every child gone",
        |s, ev| {
            s.is_empty()
                && ev
                    .iter()
                    .any(|e| matches!(e, ClientEvent::BudgetExhausted { .. }))
        },
    );
    match budget_sup.sup.start_client(&server.url(), client_config()) {
        Err(e) => demo.say(
            &budget_sup,
            None,
            &format!("starting another child is refused: {e}"),
        ),
        Ok(_) => demo.say(&budget_sup, None, "unexpectedly accepted a new child"),
    }
    drop(flapping);

    // ── 6 ────────────────────────────────────────────────────────────────
    demo.step("meanwhile on sup1: four clients, still connected");
    send_all(&demo, &mut main_sup, "bye");
    demo.run_until(&mut main_sup, 10, "4 echoes", |_, ev| echoes(ev) == 4);
    demo.run_for(&mut main_sup, Duration::from_millis(500));
    demo.health_table(&main_sup);
    demo.step("stopping every client (close handshake, code 1000)");
    for id in main_sup.sup.list_clients() {
        main_sup.sup.stop_client(id).expect("stop");
    }
    demo.run_until(&mut main_sup, 10, "all stopped", |s, _| s.is_empty());
    println!(
        "\ndone in {:.1} s: {} connections accepted by the echo server, {} messages echoed.",
        demo.t0.elapsed().as_secs_f64(),
        server.connections_accepted(),
        server.messages_echoed()
    );
}
