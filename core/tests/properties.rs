//! Property tests over the public API:
//!
//! 1. a supervisor's restarts never exceed its intensity within any window;
//! 2. every backoff delay lies in `[retry_delay, max_backoff]`;
//! 3. a silent peer is declared dead no later than
//!    `interval × failure_threshold + timeout` after its last sign of life
//!    (Ping, Deribit and Custom strategies), and never while it answers;
//! 4. the same seed and inputs give the identical action/transmit/event
//!    sequence from the whole per-client machine (`client::Client`).

use core::time::Duration;
use proptest::prelude::*;
use std::collections::BTreeMap;
use zenws_core::client::{Client, ClientEvent};
use zenws_core::exchange::deribit::Deribit;
use zenws_core::frame::{Frame, FrameKind};
use zenws_core::heartbeat::{HeartbeatConfig, Strategy as Hb};
use zenws_core::ratelimit::RateLimit;
use zenws_core::retry::{Jitter, RetryCount, RetryPolicy};
use zenws_core::session::{SessionConfig, Transmit};
use zenws_core::supervisor::{
    Decision, RestartIntensity, RestartType, Supervisor, SupervisorConfig,
};
use zenws_core::{Action, Connection, ConnectionConfig, Error, Event, Instant, State};

const T0: Instant = Instant::from_millis(1_000);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn jitter() -> impl Strategy<Value = Jitter> {
    prop_oneof![
        Just(Jitter::None),
        Just(Jitter::Full),
        Just(Jitter::Equal),
        (0u16..=1500).prop_map(|permille| Jitter::Proportional { permille }),
    ]
}

fn retry_policy() -> impl Strategy<Value = RetryPolicy> {
    (
        prop_oneof![
            (0u32..6).prop_map(RetryCount::Limited),
            Just(RetryCount::Infinite)
        ],
        0u64..5_000,
        0u32..5,
        0u64..60_000,
        jitter(),
        0u64..20_000,
    )
        .prop_map(|(retry_count, delay, multiplier, max, jitter, reset)| {
            RetryPolicy::default()
                .with_retry_count(retry_count)
                .with_retry_delay(ms(delay))
                .with_multiplier(multiplier)
                .with_max_backoff(ms(max))
                .with_jitter(jitter)
                .with_reset_after(ms(reset))
        })
}

fn drain(c: &mut Connection) -> (Vec<Action>, Vec<Event>) {
    (
        std::iter::from_fn(|| c.poll_action()).collect(),
        std::iter::from_fn(|| c.poll_event()).collect(),
    )
}

// ---------------------------------------------------------------- 1 --------

#[derive(Clone, Copy, Debug)]
enum ChildOp {
    Open,
    Transient,
    Fatal,
    UserClose,
    Timer,
}

fn child_op() -> impl Strategy<Value = ChildOp> {
    prop_oneof![
        Just(ChildOp::Open),
        Just(ChildOp::Transient),
        Just(ChildOp::Fatal),
        Just(ChildOp::UserClose),
        Just(ChildOp::Timer),
    ]
}

fn restart_type() -> impl Strategy<Value = RestartType> {
    prop_oneof![
        Just(RestartType::Permanent),
        Just(RestartType::Transient),
        Just(RestartType::Temporary)
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Three supervised connections failing in random ways: the restarts the
    /// supervisor grants never exceed `max_restarts` in any window of
    /// `max_seconds`, and after escalating it grants none.
    #[test]
    fn restarts_never_exceed_intensity(
        max_restarts in 0u32..=6,
        window_ms in 0u64..20_000,
        types in proptest::collection::vec(restart_type(), 3),
        ops in proptest::collection::vec((0usize..3, child_op(), 0u64..3_000), 0..300),
    ) {
        let window = ms(window_ms);
        let mut sup: Supervisor<16> = Supervisor::new(SupervisorConfig::default().with_intensity(RestartIntensity { max_restarts, max_seconds: window }).with_restart_delay(Duration::ZERO)).unwrap();
        let mut now = T0;
        let mut kids: Vec<Connection> = (0..3u64)
            .map(|i| {
                let mut c = Connection::new(ConnectionConfig::default().with_heartbeat(HeartbeatConfig::none()).with_retry(RetryPolicy::default().with_retry_count(RetryCount::Limited(1))).with_seed(i));
                c.connect(now);
                c
            })
            .collect();
        let mut restarts: Vec<Instant> = Vec::new();
        let mut escalated = false;
        for (i, op, gap) in ops {
            now = now + ms(gap);
            let c = &mut kids[i];
            let epoch = c.epoch();
            match op {
                ChildOp::Open => c.handle_open(now, epoch),
                ChildOp::Transient => c.handle_error(now, epoch, Error::ConnectionReset),
                ChildOp::Fatal => c.handle_error(now, epoch, Error::TlsCertificate),
                ChildOp::UserClose => c.close(now),
                ChildOp::Timer => {
                    if let Some(t) = c.poll_timeout() {
                        now = now.max(t);
                    }
                    c.handle_timeout(now);
                }
            }
            // The driver's part: react to every exit.
            let mut k = 0;
            while k < kids.len() {
                let (_, events) = drain(&mut kids[k]);
                for e in events {
                    let Event::Exited(reason) = e else { continue };
                    match sup.handle_exit(now, types[k], &reason) {
                        Decision::Restart { at } => {
                            prop_assert!(!escalated, "restart after escalation");
                            restarts.push(now);
                            kids[k].restart(now, at);
                        }
                        Decision::Escalate { restarts: n, .. } => {
                            prop_assert_eq!(n, max_restarts);
                            escalated = true;
                            for kid in kids.iter_mut() {
                                kid.close(now);
                            }
                        }
                        Decision::Terminated => prop_assert!(escalated),
                        Decision::Remove => prop_assert!(!types[k].wants_restart(&reason)),
                    }
                }
                k += 1;
            }
            prop_assert!(sup.restarts_in_window(now) <= max_restarts);
        }
        for (i, &start) in restarts.iter().enumerate() {
            let inside = restarts[i..].iter().take_while(|&&t| t - start <= window).count();
            prop_assert!(
                inside as u32 <= max_restarts,
                "{} restarts within {:?} from {:?} (max {})", inside, window, start, max_restarts
            );
        }
    }
}

// ---------------------------------------------------------------- 2 --------

#[derive(Clone, Copy, Debug)]
enum LinkOp {
    Open,
    Fail,
    Drop,
    Timer,
    Wait(u64),
}

fn link_op() -> impl Strategy<Value = LinkOp> {
    prop_oneof![
        Just(LinkOp::Open),
        Just(LinkOp::Fail),
        Just(LinkOp::Drop),
        Just(LinkOp::Timer),
        (0u64..30_000).prop_map(LinkOp::Wait),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Whatever the policy and however the link flaps, every announced
    /// delay lies in `[retry_delay, max_backoff]` (`max_backoff` wins if it
    /// is the smaller) and the next `Connect` comes exactly that much later.
    #[test]
    fn backoff_delays_stay_within_bounds(
        retry in retry_policy(),
        seed: u64,
        ops in proptest::collection::vec(link_op(), 0..200),
    ) {
        let hi = retry.max_backoff;
        let lo = retry.retry_delay.min(hi);
        let mut c = Connection::new(ConnectionConfig::default().with_heartbeat(HeartbeatConfig::none()).with_retry(retry).with_seed(seed));
        let mut now = T0;
        c.connect(now);
        drain(&mut c);
        for op in ops {
            let epoch = c.epoch();
            match op {
                LinkOp::Open => c.handle_open(now, epoch),
                LinkOp::Fail => c.handle_error(now, epoch, Error::ConnectionRefused),
                LinkOp::Drop => c.handle_closed(now, epoch, None),
                LinkOp::Timer => {
                    if let Some(t) = c.poll_timeout() {
                        now = now.max(t);
                    }
                    c.handle_timeout(now);
                }
                LinkOp::Wait(d) => now = now + ms(d),
            }
            let (_, events) = drain(&mut c);
            for e in events {
                if let Event::Reconnecting { delay, .. } = e {
                    prop_assert!(lo <= delay && delay <= hi, "{:?} not in [{:?}, {:?}]", delay, lo, hi);
                    prop_assert_eq!(c.state(), State::Backoff);
                    prop_assert_eq!(c.poll_timeout(), Some(now + delay));
                }
            }
            if c.is_terminated() {
                break;
            }
        }
    }
}

// ---------------------------------------------------------------- 3 --------

#[derive(Clone, Copy, Debug)]
enum Kind {
    Ping,
    Deribit,
    Custom,
}

fn is_pong(m: &[u8]) -> bool {
    m == b"pong"
}

fn heartbeat(kind: Kind, interval_ms: u64, timeout_ms: u64, threshold: u32) -> HeartbeatConfig {
    let (interval, timeout) = (ms(interval_ms), ms(timeout_ms));
    let strategy = match kind {
        Kind::Ping => Hb::Ping { interval, timeout },
        Kind::Deribit => Hb::Application {
            dialect: &zenws_core::exchange::deribit::DIALECT,
            interval_secs: (interval_ms / 1_000) as u32,
            grace: timeout,
        },
        Kind::Custom => Hb::Custom {
            interval,
            timeout,
            payload: b"ping",
            kind: FrameKind::Text,
            is_reply: is_pong,
        },
    };
    HeartbeatConfig::default()
        .with_strategy(strategy)
        .with_failure_threshold(threshold)
}

/// What the simulated peer delivers to the client.
#[derive(Clone, Copy, Debug)]
enum Delivery {
    Pong(u64),
    Reply,
    ServerHeartbeat { test_request: bool },
}

/// Drives one open connection against a peer that answers until `silent_at`,
/// then says nothing. Returns (time of `HeartbeatFailed`, last sign of life).
fn silent_peer(
    hb: HeartbeatConfig,
    rtts: &[u64],
    silent_after: u64,
    rtt_cap: u64,
) -> Result<(Instant, Instant), TestCaseError> {
    let mut c = Connection::new(ConnectionConfig::default().with_heartbeat(hb));
    let mut now = T0;
    c.connect(now);
    c.handle_open(now, 1);
    let silent_at = now + ms(silent_after);
    let mut last_life = now; // the open is the first sign of life
    let mut inbox: BTreeMap<(Instant, u64), Delivery> = BTreeMap::new();
    let mut seq = 0u64;
    let mut rtt = rtts.iter().copied().cycle();
    // Deribit: the server's own heartbeat cadence once asked.
    let mut server_next: Option<Instant> = None;
    let mut server_interval = Duration::ZERO;
    for _ in 0..100_000 {
        // Actions from the last input.
        while let Some(a) = c.poll_action() {
            match a {
                Action::Send { frame, .. } if now < silent_at => {
                    let delay = ms(rtt.next().unwrap_or(0).min(rtt_cap));
                    let answer = match frame {
                        Frame::Ping { token } => Some(Delivery::Pong(token)),
                        Frame::Custom { .. } => Some(Delivery::Reply),
                        Frame::AppSetup { interval_secs, .. } => {
                            server_interval = Duration::from_secs(u64::from(interval_secs));
                            server_next = Some(now + server_interval);
                            None
                        }
                        Frame::AppReply { .. } => None,
                    };
                    if let Some(d) = answer {
                        seq += 1;
                        inbox.insert((now + delay, seq), d);
                    }
                }
                Action::Abort { code, .. } => prop_assert_eq!(code, 1011),
                _ => {}
            }
        }
        while let Some(e) = c.poll_event() {
            match e {
                Event::HeartbeatFailed => return Ok((now, last_life)),
                Event::Disconnected { reason, .. } => {
                    prop_assert!(false, "lost for {:?} before the heartbeat failed", reason)
                }
                _ => {}
            }
        }
        // Deribit server heartbeats while alive (a test_request every third one).
        if let Some(t) = server_next {
            if t < silent_at {
                seq += 1;
                let delay = ms(rtt.next().unwrap_or(0).min(rtt_cap));
                inbox.insert(
                    (t + delay, seq),
                    Delivery::ServerHeartbeat {
                        test_request: seq.is_multiple_of(3),
                    },
                );
                server_next = Some(t + server_interval);
            } else {
                server_next = None;
            }
        }
        // The next thing to happen: a delivery or the client's timer.
        let timer = c.poll_timeout();
        let next_msg = inbox.keys().next().copied();
        match (timer, next_msg) {
            (Some(t), Some((m, _))) if t < m => {
                now = t;
                c.handle_timeout(now);
            }
            (_, Some(key)) => {
                let d = inbox.remove(&key).unwrap();
                now = key.0;
                match d {
                    Delivery::Pong(token) => c.handle_pong(now, 1, &token.to_be_bytes()),
                    Delivery::Reply => {
                        c.handle_message(now, 1, b"pong");
                    }
                    Delivery::ServerHeartbeat { test_request } => {
                        let msg = if test_request {
                            &br#"{"jsonrpc":"2.0","method":"heartbeat","params":{"type":"test_request"}}"#[..]
                        } else {
                            &br#"{"jsonrpc":"2.0","method":"heartbeat","params":{"type":"heartbeat"}}"#[..]
                        };
                        c.handle_message(now, 1, msg);
                    }
                }
                // Every delivery is a sign of life by construction (each arrives
                // within the strategy's timeout/grace).
                last_life = now;
            }
            (Some(t), None) => {
                now = t;
                c.handle_timeout(now);
            }
            (None, None) => prop_assert!(false, "no timer while open"),
        }
    }
    Err(TestCaseError::fail(
        "the silent peer was never declared dead",
    ))
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![Just(Kind::Ping), Just(Kind::Deribit), Just(Kind::Custom)]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn silent_peer_is_declared_dead_within_the_bound(
        kind in kind(),
        interval_ms in 10u64..5_000,
        deribit_secs in 10u64..40,
        timeout_ms in 1u64..5_000,
        threshold in 1u32..5,
        rtts in proptest::collection::vec(0u64..5_000, 1..16),
        silent_after in 0u64..120_000,
    ) {
        let interval_ms = match kind {
            Kind::Deribit => deribit_secs * 1_000,
            _ => interval_ms,
        };
        let hb = heartbeat(kind, interval_ms, timeout_ms, threshold);
        let bound = hb.detection_bound().unwrap();
        // Answers arrive strictly within the timeout (for Ping/Custom also
        // within the interval, as the timeout is clamped to it): the peer is
        // alive and must not be declared dead while it answers.
        let rtt_cap = match kind {
            Kind::Deribit => timeout_ms - 1,
            _ => timeout_ms.min(interval_ms) - 1,
        };
        let (failed_at, last_life) = silent_peer(hb, &rtts, silent_after, rtt_cap)?;
        prop_assert!(failed_at >= T0 + ms(silent_after), "declared dead while answering");
        prop_assert!(
            failed_at - last_life <= bound,
            "{:?}: dead {:?} after the last sign of life (bound {:?})",
            kind, failed_at - last_life, bound
        );
    }
}

// ---------------------------------------------------------------- 4 --------

#[derive(Clone, Debug)]
enum Input {
    Connect,
    Open(u8),
    Message(u8, usize),
    Pong(u8),
    Error(u8, usize),
    Closed(u8, Option<u16>),
    Send(u8),
    Close,
    Timer,
    Wait(u64),
    Restart(u64),
}

const MESSAGES: &[&[u8]] = &[
    br#"{"jsonrpc":"2.0","method":"heartbeat","params":{"type":"test_request"}}"#,
    br#"{"jsonrpc":"2.0","id":1,"result":"ok"}"#,
    b"pong",
    b"data",
    // Answers to the session's first requests (auth with a 1 s token and a
    // refresh token, then the subscribe batch), and a rate-limit error.
    br#"{"jsonrpc":"2.0","id":9500000000000,"result":{"access_token":"a","expires_in":1,"refresh_token":"r"}}"#,
    br#"{"jsonrpc":"2.0","id":9500000000001,"result":["trades"]}"#,
    br#"{"jsonrpc":"2.0","id":9500000000001,"error":{"code":10028,"message":"too_many_requests"}}"#,
];

const ERRORS: &[Error] = &[
    Error::ConnectionRefused,
    Error::ConnectionReset,
    Error::ConnectTimeout,
    Error::UpgradeUnavailable { status: 503 },
    Error::TlsCertificate,
];

fn input() -> impl Strategy<Value = Input> {
    let back = 0u8..3; // how many epochs back: 0 = current
    prop_oneof![
        Just(Input::Connect),
        back.clone().prop_map(Input::Open),
        (back.clone(), 0..MESSAGES.len()).prop_map(|(b, m)| Input::Message(b, m)),
        back.clone().prop_map(Input::Pong),
        (back.clone(), 0..ERRORS.len()).prop_map(|(b, e)| Input::Error(b, e)),
        (
            back,
            proptest::option::of(prop_oneof![Just(1000u16), Just(1001), Just(1011)])
        )
            .prop_map(|(b, c)| Input::Closed(b, c)),
        any::<u8>().prop_map(Input::Send),
        Just(Input::Close),
        Just(Input::Timer),
        (0u64..20_000).prop_map(Input::Wait),
        (0u64..5_000).prop_map(Input::Restart),
    ]
}

/// Everything observable, in order.
#[derive(Debug, PartialEq)]
enum Out {
    Action(Action),
    Event(ClientEvent),
    Transmit(Transmit, String),
    Send(Result<(), zenws_core::SendError>),
    Delivery(zenws_core::Delivery),
    Timeout(Option<Instant>),
}

/// The whole per-client machine (connection, session, Deribit protocol)
/// driven in the documented call order.
fn run(kind: Kind, seed: u64, inputs: &[Input]) -> Vec<Out> {
    let config = ConnectionConfig::default()
        .with_heartbeat(heartbeat(kind, 500, 200, 2))
        .with_retry(RetryPolicy::default().with_retry_count(RetryCount::Limited(4)))
        .with_idle_timeout(Some(ms(30_000)))
        .with_rate_limit(Some(RateLimit::flat(5, 3)))
        .with_seed(seed);
    let deribit = Deribit::with_credentials("id", "secret").unwrap();
    let mut c: Client<Deribit, 4, 16, 4> = Client::new(config, SessionConfig::default(), deribit);
    c.subscribe("trades").unwrap();
    let mut out = Vec::new();
    let mut now = T0;
    let mut token = 0u64;
    for i in inputs {
        let epoch =
            |c: &Client<Deribit, 4, 16, 4>, back: u8| c.epoch().wrapping_sub(u32::from(back));
        match *i {
            Input::Connect => c.connect(now),
            Input::Open(b) => c.handle_open(now, epoch(&c, b)),
            Input::Message(b, m) => {
                out.push(Out::Delivery(c.handle_message(
                    now,
                    epoch(&c, b),
                    MESSAGES[m],
                )));
            }
            Input::Pong(b) => c.handle_pong(now, epoch(&c, b), &token.to_be_bytes()),
            Input::Error(b, e) => c.handle_error(now, epoch(&c, b), ERRORS[e]),
            Input::Closed(b, code) => c.handle_closed(now, epoch(&c, b), code),
            Input::Send(n) => out.push(Out::Send(c.handle_send(
                now,
                &[0; 32][..usize::from(n % 32)],
                0,
            ))),
            Input::Close => c.close(now),
            Input::Timer => {
                if let Some(t) = c.poll_timeout() {
                    now = now.max(t);
                }
                c.handle_timeout(now);
            }
            Input::Wait(d) => now = now + ms(d),
            Input::Restart(d) => c.restart(now, now + ms(d)),
        }
        loop {
            let mut moved = false;
            while let Some(a) = c.poll_action() {
                moved = true;
                if let Action::Send {
                    frame: Frame::Ping { token: t },
                    ..
                } = a
                {
                    token = t;
                }
                out.push(Out::Action(a));
            }
            loop {
                let mut text = String::new();
                let Some(t) = c.poll_transmit(now, 0, &mut text) else {
                    break;
                };
                moved = true;
                out.push(Out::Transmit(t, text));
            }
            while let Some(e) = c.poll_event() {
                moved = true;
                out.push(Out::Event(e));
            }
            if !moved {
                break;
            }
        }
        out.push(Out::Timeout(c.poll_timeout()));
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn same_seed_same_inputs_same_actions(
        kind in kind(),
        seed: u64,
        inputs in proptest::collection::vec(input(), 0..200),
    ) {
        let a = run(kind, seed, &inputs);
        let b = run(kind, seed, &inputs);
        prop_assert_eq!(a, b);
    }
}

/// And the seed matters: a different one changes the jitter of the same run.
#[test]
fn different_seeds_jitter_differently() {
    let inputs: Vec<Input> = std::iter::once(Input::Connect)
        .chain((0..4).flat_map(|_| [Input::Error(0, 0), Input::Timer]))
        .collect();
    let runs: Vec<_> = (0..8).map(|seed| run(Kind::Ping, seed, &inputs)).collect();
    assert!(runs.iter().any(|r| *r != runs[0]));
}
