//! The simulated driver: plays the role `zenws-mio` plays for real.
//!
//! It owns a [`Supervisor`] and `N` clients (a [`Connection`] and a
//! [`Session`] each), executes their actions on the simulated network,
//! delivers what arrives, renders session steps, runs the user workload,
//! carries out supervisor decisions, and checks the invariants after every
//! step.

extern crate std;

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::format;
use std::string::String;
use std::time::Duration;
use std::vec::Vec;

use crate::connection::{Action, Connection, ConnectionConfig, Delivery, Epoch, Event};
use crate::error::Error;
use crate::exit::ExitReason;
use crate::frame::{Frame, FrameKind};
use crate::heartbeat::{HeartbeatConfig, Strategy};
use crate::json;
use crate::retry::{Jitter, RetryCount, RetryPolicy};
use crate::rng::Rng;
use crate::session::{Restore, Session, SessionConfig, SessionEvent, Step};
use crate::supervisor::{Decision, RestartIntensity, RestartType, Supervisor, SupervisorConfig};
use crate::time::{earliest, Instant};

use super::invariants::{Check, Ledger, OpenSocket, Restarts};
use super::network::{
    between, chance, connect_outcome, draw_fault, ConnectOutcome, Dir, Fault, Link,
};
use super::server::{Out, Server, Timer, Wire};
use super::trace::{tr, Trace};
use super::{SimConfig, SimReport, Violation};

/// Largest message either side accepts in the simulation.
const MAX_MESSAGE: usize = 4096;

fn is_pong(data: &[u8]) -> bool {
    data == b"pong"
}

/// How a connection attempt ends, as the driver reports it.
#[derive(Clone, Copy, Debug)]
enum Handshake {
    Open,
    Error(Error),
    Eof,
}

#[derive(Debug)]
enum Kind {
    Handshake(Handshake),
    ToClient(Wire),
    ToServer(Wire),
    /// The server sends this now (a delayed answer).
    ServerSend(Wire),
    ServerTimer(Timer),
    User,
}

#[derive(Debug)]
struct Item {
    at: Instant,
    seq: u64,
    client: usize,
    epoch: Epoch,
    kind: Kind,
}

impl PartialEq for Item {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Item {}
impl PartialOrd for Item {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Item {
    fn cmp(&self, o: &Self) -> Ordering {
        (self.at, self.seq).cmp(&(o.at, o.seq))
    }
}

/// Future deliveries, in time order; ties in insertion order.
#[derive(Debug, Default)]
struct Queue {
    heap: BinaryHeap<Reverse<Item>>,
    seq: u64,
}

impl Queue {
    fn push(&mut self, at: Instant, client: usize, epoch: Epoch, kind: Kind) {
        self.seq += 1;
        self.heap.push(Reverse(Item {
            at,
            seq: self.seq,
            client,
            epoch,
            kind,
        }));
    }
    fn next_at(&self) -> Option<Instant> {
        self.heap.peek().map(|r| r.0.at)
    }
    fn pop_due(&mut self, now: Instant) -> Option<Item> {
        if self.next_at()? <= now {
            self.heap.pop().map(|r| r.0)
        } else {
            None
        }
    }
}

#[derive(Debug)]
struct Socket {
    epoch: Epoch,
    link: Link,
    server: Server,
    opened: bool,
    close_sent: bool,
}

#[derive(Debug)]
struct Client {
    conn: Connection,
    session: Session<16, 32, 64>,
    restart: RestartType,
    bound: Option<Duration>,
    latency: Duration,
    jitter: Duration,
    socket: Option<Socket>,
    open: Option<OpenSocket>,
    session_up: bool,
    ledger: Ledger,
    user_closed: bool,
    sup_stopped: bool,
    close_at: Option<Instant>,
    /// The epoch when the user or the supervisor closed the client.
    closed_epoch: Option<Epoch>,
    next_seq: u64,
    fatal_cause: bool,
    /// Last sign of life the simulated peer gave on the open socket.
    life: Instant,
    expect_test_reply: bool,
}

#[derive(Debug, Default)]
struct Stats {
    steps: u64,
    opens: u64,
    reconnects: u64,
    restarts: u64,
    escalations: u64,
    heartbeat_failures: u64,
}

/// The whole simulated world of one seed.
#[derive(Debug)]
pub(crate) struct World {
    seed: u64,
    cfg: SimConfig,
    rng: Rng,
    now: Instant,
    end: Instant,
    teardown: bool,
    queue: Queue,
    clients: Vec<Client>,
    sup: Supervisor<64>,
    restarts: Restarts,
    escalated: bool,
    session_cfg: SessionConfig,
    channels: Vec<String>,
    outages: Vec<(Instant, Instant, bool)>,
    trace: Trace,
    stats: Stats,
    out: Vec<Out>,
    /// The verdict of the first settle at time zero.
    start: Check,
}

fn draw_heartbeat(rng: &mut Rng) -> HeartbeatConfig {
    let strategy = match rng.below(100) {
        0..=9 => Strategy::None,
        10..=54 | 85..=99 => {
            let interval = between(rng, Duration::from_millis(500), Duration::from_secs(10));
            let timeout = if chance(rng, 300) {
                interval
            } else {
                between(
                    rng,
                    Duration::from_millis(200),
                    interval.max(Duration::from_millis(200)),
                )
            };
            if rng.below(100) < 70 {
                Strategy::Ping { interval, timeout }
            } else {
                Strategy::Custom {
                    interval,
                    timeout,
                    payload: b"ping",
                    kind: FrameKind::Text,
                    is_reply: is_pong,
                }
            }
        }
        _ => Strategy::Deribit {
            interval_secs: rng.in_range(10, 30) as u32,
            grace: between(rng, Duration::from_secs(1), Duration::from_secs(5)),
        },
    };
    HeartbeatConfig {
        strategy,
        failure_threshold: rng.in_range(1, 3) as u32,
    }
}

fn draw_retry(rng: &mut Rng) -> RetryPolicy {
    let retry_delay = between(rng, Duration::from_millis(100), Duration::from_secs(2));
    RetryPolicy {
        retry_count: if chance(rng, 200) {
            RetryCount::Infinite
        } else {
            RetryCount::Limited(rng.in_range(0, 4) as u32)
        },
        retry_delay,
        multiplier: rng.in_range(1, 3) as u32,
        max_backoff: between(rng, retry_delay, Duration::from_secs(30)),
        jitter: match rng.below(4) {
            0 => Jitter::None,
            1 => Jitter::Full,
            2 => Jitter::Equal,
            _ => Jitter::Proportional {
                permille: rng.in_range(0, 1000) as u16,
            },
        },
        reset_after: between(rng, Duration::from_secs(1), Duration::from_secs(20)),
    }
}

impl World {
    pub(crate) fn new(seed: u64, cfg: &SimConfig) -> Self {
        let mut rng = Rng::new(seed);
        let now = Instant::ZERO;
        let end = now + cfg.duration;
        let f = &cfg.faults;
        let nchan = rng.in_range(0, cfg.max_channels.min(16) as u64) as usize;
        let channels: Vec<String> = (0..nchan).map(|k| format!("ch.{k}.raw")).collect();
        let session_cfg = SessionConfig {
            authenticate: chance(&mut rng, 300),
            restore: Restore::Auto,
            batch_size: rng.in_range(1, 4) as usize,
            pacing: if chance(&mut rng, 500) {
                Duration::ZERO
            } else {
                between(
                    &mut rng,
                    Duration::from_millis(1),
                    Duration::from_millis(300),
                )
            },
            request_timeout: between(&mut rng, Duration::from_secs(2), Duration::from_secs(30)),
        };
        let intensity = RestartIntensity {
            max_restarts: rng.in_range(0, 6) as u32,
            max_seconds: between(&mut rng, Duration::from_secs(5), Duration::from_secs(120)),
        };
        let sup_cfg = SupervisorConfig {
            intensity,
            restart_delay: if chance(&mut rng, 500) {
                Duration::ZERO
            } else {
                between(&mut rng, Duration::from_millis(10), Duration::from_secs(2))
            },
        };
        let outages = (0..rng.in_range(0, u64::from(f.max_outages)))
            .map(|_| {
                let at = now + between(&mut rng, Duration::ZERO, cfg.duration);
                let len = between(&mut rng, Duration::from_secs(1), Duration::from_secs(60));
                (at, at + len, chance(&mut rng, 300))
            })
            .collect();
        let mut queue = Queue::default();
        let mut clients = Vec::new();
        for i in 0..cfg.clients {
            let heartbeat = draw_heartbeat(&mut rng);
            let config = ConnectionConfig {
                connect_timeout: between(
                    &mut rng,
                    Duration::from_millis(500),
                    Duration::from_secs(5),
                ),
                close_timeout: between(
                    &mut rng,
                    Duration::from_millis(200),
                    Duration::from_secs(2),
                ),
                retry: draw_retry(&mut rng),
                heartbeat,
                idle_timeout: (nchan > 0 && f.feed_every > Duration::ZERO && chance(&mut rng, 300))
                    .then(|| {
                        f.feed_every * 3
                            + between(&mut rng, Duration::ZERO, Duration::from_secs(30))
                    }),
                max_message_size: MAX_MESSAGE,
                max_pending_bytes: if chance(&mut rng, 300) {
                    rng.in_range(1024, 8192) as usize
                } else {
                    4 << 20
                },
                rate_limit: None,
                seed: rng.next_u64(),
            };
            let restart = match rng.below(100) {
                0..=59 => RestartType::Transient,
                60..=84 => RestartType::Permanent,
                _ => RestartType::Temporary,
            };
            let close_at = chance(&mut rng, cfg.user_close)
                .then(|| now + between(&mut rng, Duration::ZERO, cfg.duration));
            let mut session = Session::new(session_cfg);
            for c in &channels {
                let _ = session.subscribe(c);
            }
            let latency = between(
                &mut rng,
                Duration::from_millis(1),
                Duration::from_millis(50),
            );
            let jitter = between(&mut rng, Duration::ZERO, Duration::from_millis(20));
            queue.push(
                now + between(&mut rng, Duration::from_millis(100), Duration::from_secs(3)),
                i,
                0,
                Kind::User,
            );
            clients.push(Client {
                conn: Connection::new(config),
                session,
                restart,
                bound: heartbeat.detection_bound(),
                latency,
                jitter,
                socket: None,
                open: None,
                session_up: false,
                ledger: Ledger::default(),
                user_closed: false,
                sup_stopped: false,
                close_at,
                closed_epoch: None,
                next_seq: 0,
                fatal_cause: false,
                life: now,
                expect_test_reply: false,
            });
        }
        let mut trace = Trace::new(cfg.keep_trace);
        tr!(
            trace,
            now,
            "seed {seed}: {} clients, {nchan} channels, {session_cfg:?}, {sup_cfg:?}, outages {outages:?}",
            cfg.clients
        );
        for (i, c) in clients.iter().enumerate() {
            tr!(
                trace,
                now,
                "c{i} {:?} {:?} latency {:?}±{:?} close_at {:?}",
                c.restart,
                c.conn.config(),
                c.latency,
                c.jitter,
                c.close_at
            );
        }
        let mut w = World {
            seed,
            cfg: cfg.clone(),
            rng,
            now,
            end,
            teardown: false,
            queue,
            clients,
            sup: Supervisor::new(sup_cfg).expect("max_restarts <= 6 fits"),
            restarts: Restarts::new(intensity.max_restarts, intensity.max_seconds),
            escalated: false,
            session_cfg,
            channels,
            outages,
            trace,
            stats: Stats::default(),
            out: Vec::new(),
            start: Ok(()),
        };
        for c in &mut w.clients {
            c.conn.connect(now);
        }
        w.start = w.settle();
        w
    }

    pub(crate) fn now(&self) -> Instant {
        self.now
    }

    pub(crate) fn violation(&mut self, message: String) -> Violation {
        tr!(self.trace, self.now, "VIOLATION: {message}");
        Violation {
            seed: self.seed,
            at: self.now,
            message,
            trace: self.trace.take_lines(),
        }
    }

    pub(crate) fn report(&mut self) -> SimReport {
        let mut r = SimReport {
            seed: self.seed,
            trace_hash: self.trace.hash(),
            trace_lines: self.trace.count(),
            steps: self.stats.steps,
            virtual_time: self.now.saturating_since(Instant::ZERO),
            opens: self.stats.opens,
            reconnects: self.stats.reconnects,
            restarts: self.stats.restarts,
            escalations: self.stats.escalations,
            heartbeat_failures: self.stats.heartbeat_failures,
            trace: self.trace.take_lines(),
            ..SimReport::default()
        };
        for c in &self.clients {
            let l = &c.ledger;
            r.sends_accepted += l.accepted;
            r.sends_delivered += l.delivered;
            r.sends_rejected += l.rejected;
            r.sends_failed += l.failed;
            r.requests_resolved += l.resolved;
            r.requests_timed_out += l.timed_out;
            r.requests_failed += l.req_failed;
        }
        r
    }

    /// One step; `Ok(false)` when the run is over.
    pub(crate) fn step(&mut self) -> Result<bool, String> {
        core::mem::replace(&mut self.start, Ok(()))?;
        let t_core = self
            .clients
            .iter()
            .filter_map(|c| earliest(c.conn.poll_timeout(), c.session.poll_timeout()))
            .min();
        let slack = self.cfg.timer_slack.as_nanos() as u64;
        let t_core =
            t_core.map(|t| t.max(self.now) + Duration::from_nanos(self.rng.in_range(0, slack)));
        let Some(next) = earliest(self.queue.next_at(), t_core) else {
            return self.finish();
        };
        if !self.teardown && next > self.end {
            self.now = self.end;
            self.teardown = true;
            tr!(
                self.trace,
                self.now,
                "end of run: the user stops every client"
            );
            for i in 0..self.clients.len() {
                if !self.clients[i].user_closed {
                    self.user_close(i);
                }
            }
            return self.settle().map(|()| true);
        }
        if self.teardown && next > self.end + Duration::from_secs(300) {
            return self.finish();
        }
        self.now = self.now.max(next);
        self.stats.steps += 1;
        for i in 0..self.clients.len() {
            let now = self.now;
            let c = &mut self.clients[i];
            if c.conn.poll_timeout().is_some_and(|t| t <= now) {
                c.conn.handle_timeout(now);
                // Input may legitimately leave a deadline in the past ("call
                // me now"), but a timer that fired must move on.
                if let Some(t) = c.conn.poll_timeout().filter(|&t| t <= now) {
                    return Err(format!(
                        "c{i}: poll_timeout {t:?} still due after handle_timeout in {:?}: a busy loop",
                        c.conn.state()
                    ));
                }
            }
            if c.session.poll_timeout().is_some_and(|t| t <= now) {
                c.session.handle_timeout(now);
            }
        }
        // Carry out what the timers decided (an abort drops the socket)
        // before anything else arrives, as a real driver does.
        self.settle()?;
        if let Some(item) = self.queue.pop_due(self.now) {
            self.deliver(item)?;
        }
        self.settle().map(|()| true)
    }

    /// Drain every client until nothing moves, then check the invariants.
    fn settle(&mut self) -> Check {
        loop {
            let mut moved = false;
            for i in 0..self.clients.len() {
                moved |= self.drain(i)?;
            }
            if !moved {
                break;
            }
        }
        for i in 0..self.clients.len() {
            self.check_client(i)?;
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<bool, String> {
        tr!(self.trace, self.now, "run over");
        for (i, c) in self.clients.iter().enumerate() {
            if !c.conn.is_terminated() {
                return Err(format!(
                    "c{i} still {:?} after the user stopped it",
                    c.conn.state()
                ));
            }
            if let Some(s) = &c.socket {
                return Err(format!("c{i} socket e{} never closed", s.epoch));
            }
            c.ledger
                .check_settled(c.session.pending_requests())
                .map_err(|m| format!("c{i}: {m}"))?;
        }
        Ok(false)
    }

    fn check_client(&mut self, i: usize) -> Check {
        let now = self.now;
        let slack = self.cfg.timer_slack;
        let c = &mut self.clients[i];
        c.ledger.check_told().map_err(|m| format!("c{i}: {m}"))?;
        if c.expect_test_reply {
            return Err(format!(
                "c{i}: test_request not answered with public/test at once"
            ));
        }
        if c.session.poll_timeout().is_some_and(|t| t <= now) {
            return Err(format!("c{i}: session poll_timeout not after now"));
        }
        if !c.conn.is_open() {
            return Ok(());
        }
        if let Some(bound) = c.bound {
            let seen = c.conn.health().last_heartbeat.unwrap_or(Instant::ZERO);
            if seen > c.life {
                return Err(format!(
                    "c{i}: core saw a sign of life at {seen:?} the peer never gave (last {:?})",
                    c.life
                ));
            }
            if now.saturating_since(seen) > bound + slack * 2 {
                return Err(format!(
                    "c{i}: dead peer not detected: last sign of life {seen:?}, bound {bound:?}"
                ));
            }
        }
        if let Some(o) = &c.open {
            let cfg = &self.session_cfg;
            let n = self.channels.len();
            let batches = n.div_ceil(cfg.batch_size.max(1)) as u32;
            let auth = if cfg.authenticate {
                cfg.request_timeout
            } else {
                Duration::ZERO
            };
            let due = o.opened_at
                + auth
                + (cfg.pacing + slack) * (batches + 1)
                + Duration::from_millis(1);
            if !o.restored && now > due {
                return Err(format!(
                    "c{i}: e{} open since {:?} but subscriptions not restored ({} of {n} sent)",
                    o.epoch, o.opened_at, o.sent
                ));
            }
        }
        Ok(())
    }

    fn drain(&mut self, i: usize) -> Result<bool, String> {
        let mut moved = false;
        loop {
            let c = &mut self.clients[i];
            if let Some(a) = c.conn.poll_action() {
                moved = true;
                self.action(i, a)?;
                continue;
            }
            if let Some(e) = c.conn.poll_event() {
                moved = true;
                self.event(i, e)?;
                continue;
            }
            if c.conn.is_open() && c.session_up {
                if let Some(step) = c.session.poll_step(self.now) {
                    moved = true;
                    self.session_step(i, step)?;
                    continue;
                }
            }
            if let Some(e) = c.session.poll_event() {
                moved = true;
                self.session_event(i, e)?;
                continue;
            }
            return Ok(moved);
        }
    }

    fn outage(&self) -> Option<bool> {
        self.outages
            .iter()
            .find(|&&(from, until, _)| self.now >= from && self.now < until)
            .map(|&(_, _, blackhole)| blackhole)
    }

    fn action(&mut self, i: usize, a: Action) -> Check {
        let now = self.now;
        tr!(self.trace, now, "c{i} action {a:?}");
        match a {
            Action::Connect { epoch } => {
                let outage = self.outage();
                let c = &mut self.clients[i];
                // A Connect already queued when the close came is carried out
                // (and aborted right after); a new attempt is a violation.
                if c.closed_epoch.is_some_and(|e| epoch > e) {
                    return Err(format!("c{i}: Connect after the client was closed"));
                }
                if let Some(s) = &c.socket {
                    return Err(format!(
                        "c{i}: Connect e{epoch} while socket e{} is live",
                        s.epoch
                    ));
                }
                let lat = c.latency;
                let outcome = connect_outcome(
                    &mut self.rng,
                    &self.cfg.faults,
                    lat,
                    c.conn.config().connect_timeout,
                    outage,
                );
                c.socket = Some(Socket {
                    epoch,
                    link: Link::new(lat, c.jitter),
                    server: Server::new(MAX_MESSAGE),
                    opened: false,
                    close_sent: false,
                });
                tr!(self.trace, now, "c{i} e{epoch} net {outcome:?}");
                let (after, h) = match outcome {
                    ConnectOutcome::Open(d) => (d, Handshake::Open),
                    ConnectOutcome::Refuse => (lat, Handshake::Error(Error::ConnectionRefused)),
                    ConnectOutcome::Blackhole => return Ok(()),
                    ConnectOutcome::HandshakeCrash(true) => {
                        (lat * 2, Handshake::Error(Error::ConnectionReset))
                    }
                    ConnectOutcome::HandshakeCrash(false) => (lat * 2, Handshake::Eof),
                    ConnectOutcome::Upgrade(status) => {
                        if !self.cfg.faults.fatal && status == 401 {
                            (lat * 2, Handshake::Open)
                        } else {
                            (
                                lat * 2,
                                Handshake::Error(Error::from_upgrade_status(status)),
                            )
                        }
                    }
                };
                self.queue.push(now + after, i, epoch, Kind::Handshake(h));
            }
            Action::Send { epoch, frame } => {
                let c = &mut self.clients[i];
                if !c
                    .socket
                    .as_ref()
                    .is_some_and(|s| s.epoch == epoch && s.opened && !s.close_sent)
                {
                    return Err(format!(
                        "c{i}: Send on e{epoch}, which is not open or already closing"
                    ));
                }
                if matches!(frame, Frame::DeribitTest { .. }) {
                    c.expect_test_reply = false;
                }
                let e = frame.encode();
                let wire = match e.kind {
                    FrameKind::Ping => Wire::Ping(e.bytes.to_vec()),
                    FrameKind::Text | FrameKind::Binary => Wire::Text(e.bytes.to_vec()),
                };
                self.send_to_server(i, wire);
            }
            Action::Close { epoch, code } => {
                let c = &mut self.clients[i];
                match c.socket.as_mut() {
                    Some(s) if s.epoch == epoch && s.opened && !s.close_sent => s.close_sent = true,
                    _ => return Err(format!("c{i}: Close on e{epoch}, which is not open")),
                }
                self.send_to_server(i, Wire::Close(code));
            }
            Action::Abort { epoch, .. } => {
                if self.clients[i]
                    .socket
                    .as_ref()
                    .is_some_and(|s| s.epoch == epoch)
                {
                    self.drop_socket(i);
                }
            }
        }
        Ok(())
    }

    fn send_to_server(&mut self, i: usize, wire: Wire) {
        let now = self.now;
        let Some(s) = self.clients[i].socket.as_mut() else {
            return;
        };
        if let Some(at) = s
            .link
            .delivery(&mut self.rng, now, Dir::ToServer, wire.len())
        {
            self.queue.push(at, i, s.epoch, Kind::ToServer(wire));
        }
    }

    fn send_to_client(&mut self, i: usize, wire: Wire) {
        let now = self.now;
        let Some(s) = self.clients[i].socket.as_mut() else {
            return;
        };
        if let Some(at) = s
            .link
            .delivery(&mut self.rng, now, Dir::ToClient, wire.len())
        {
            self.queue.push(at, i, s.epoch, Kind::ToClient(wire));
        }
    }

    fn drop_socket(&mut self, i: usize) {
        let c = &mut self.clients[i];
        if let Some(s) = c.socket.take() {
            c.ledger.socket_gone(s.epoch);
            tr!(self.trace, self.now, "c{i} e{} socket gone", s.epoch);
        }
    }

    fn session_down(&mut self, i: usize) {
        let c = &mut self.clients[i];
        if c.session_up {
            c.session_up = false;
            c.session.on_disconnect();
        }
        c.open = None;
    }

    fn event(&mut self, i: usize, e: Event) -> Check {
        let now = self.now;
        tr!(self.trace, now, "c{i} event {e:?}");
        match e {
            Event::Connecting { attempt, .. } => {
                if attempt > 0 {
                    self.stats.reconnects += 1;
                }
            }
            Event::Opened { epoch } => {
                self.stats.opens += 1;
                let c = &mut self.clients[i];
                c.open = Some(OpenSocket::new(epoch, now));
                c.session.on_open(now, epoch);
                c.session_up = true;
                c.life = now;
            }
            Event::Disconnected { epoch, .. } => {
                self.clients[i].ledger.told(Some(epoch));
                self.session_down(i);
            }
            Event::HeartbeatFailed => self.stats.heartbeat_failures += 1,
            Event::Reconnecting { .. } | Event::HeartbeatMissed { .. } => {}
            Event::Exited(reason) => {
                self.session_down(i);
                let c = &mut self.clients[i];
                c.ledger.told(None);
                if (c.user_closed || c.sup_stopped) && reason != ExitReason::Normal {
                    return Err(format!("c{i}: closed by the user but exited {reason:?}"));
                }
                if let ExitReason::Fatal(e) = reason {
                    if !c.fatal_cause {
                        return Err(format!(
                            "c{i}: fatal exit ({e}) although nothing fatal happened: a transient fault killed the client for good"
                        ));
                    }
                }
                self.supervise(i, reason)?;
            }
        }
        Ok(())
    }

    fn supervise(&mut self, i: usize, reason: ExitReason) -> Check {
        let now = self.now;
        let c = &self.clients[i];
        if c.user_closed && c.restart == RestartType::Permanent && !self.escalated {
            tr!(self.trace, now, "c{i} stopped by the user: terminate_child");
            return Ok(());
        }
        let d = self.sup.handle_exit(now, c.restart, &reason);
        tr!(self.trace, now, "c{i} supervisor {d:?}");
        match d {
            Decision::Restart { at } => {
                let c = &mut self.clients[i];
                if c.user_closed || c.sup_stopped {
                    return Err(format!("c{i}: restarted after the user closed it"));
                }
                self.restarts.restart(now)?;
                self.stats.restarts += 1;
                c.fatal_cause = false;
                c.conn.restart(now, at);
            }
            Decision::Remove => {}
            Decision::Escalate { restarts, .. } => {
                self.restarts.escalate(now, restarts)?;
                self.stats.escalations += 1;
                self.escalated = true;
                for j in 0..self.clients.len() {
                    let c = &mut self.clients[j];
                    c.sup_stopped = true;
                    c.closed_epoch.get_or_insert(c.conn.epoch());
                    if !c.conn.is_terminated() {
                        let was_open = c.conn.is_open();
                        c.conn.close(now);
                        if was_open {
                            self.session_down(j);
                        }
                    }
                }
            }
            Decision::Terminated => {
                if !self.escalated {
                    return Err(format!("c{i}: supervisor terminated without escalating"));
                }
            }
        }
        Ok(())
    }

    fn session_step(&mut self, i: usize, step: Step) -> Check {
        let now = self.now;
        tr!(self.trace, now, "c{i} step {step:?}");
        let c = &mut self.clients[i];
        let bytes = match step {
            Step::Authenticate { epoch, id } => {
                c.ledger.auth(id);
                if epoch != c.conn.epoch() {
                    return Err(format!(
                        "c{i}: auth step for e{epoch} on e{}",
                        c.conn.epoch()
                    ));
                }
                format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"public/auth","params":{{}}}}"#)
            }
            Step::Subscribe { epoch, id, range } => {
                let o = c
                    .open
                    .as_mut()
                    .ok_or_else(|| format!("c{i}: subscribe step while not open"))?;
                o.subscribe(epoch, range.start, range.end)
                    .map_err(|m| format!("c{i}: {m}"))?;
                let names: Vec<String> = range
                    .map(|k| format!("\"{}\"", c.session.channel(k).unwrap_or("?")))
                    .collect();
                format!(
                    r#"{{"jsonrpc":"2.0","id":{id},"method":"public/subscribe","params":{{"channels":[{}]}}}}"#,
                    names.join(",")
                )
            }
        };
        c.conn
            .handle_send(now, bytes.as_bytes(), 0)
            .map_err(|e| format!("c{i}: session step could not be sent: {e}"))?;
        self.send_to_server(i, Wire::Text(bytes.into_bytes()));
        Ok(())
    }

    fn session_event(&mut self, i: usize, e: SessionEvent) -> Check {
        let now = self.now;
        tr!(self.trace, now, "c{i} session {e:?}");
        let tracked = self.channels.len();
        let c = &mut self.clients[i];
        let r = match e {
            SessionEvent::Authenticated { .. } => Ok(()),
            SessionEvent::AuthRejected { epoch } | SessionEvent::AuthTimedOut { epoch } => {
                let error = match e {
                    SessionEvent::AuthRejected { .. } => Error::AuthRejected,
                    _ => Error::ConnectTimeout,
                };
                if c.socket.as_ref().is_some_and(|s| s.epoch == epoch) && c.conn.is_open() {
                    self.drop_socket(i);
                    self.clients[i].conn.handle_error(now, epoch, error);
                }
                Ok(())
            }
            SessionEvent::Restored { epoch, channels } => match c.open.as_mut() {
                Some(o) => o.restored(epoch, channels, tracked),
                None => Err(format!("Restored e{epoch} while not open")),
            },
            SessionEvent::RequestResolved { id } => c.ledger.outcome(id, "resolved"),
            SessionEvent::RequestTimedOut { id } => c.ledger.outcome(id, "timed out"),
            SessionEvent::RequestFailed { id } => c.ledger.outcome(id, "failed"),
        };
        r.map_err(|m| format!("c{i}: {m}"))
    }

    fn user_close(&mut self, i: usize) {
        let now = self.now;
        tr!(self.trace, now, "c{i} user close");
        let c = &mut self.clients[i];
        c.user_closed = true;
        c.closed_epoch.get_or_insert(c.conn.epoch());
        let was_open = c.conn.is_open();
        c.conn.close(now);
        if was_open {
            self.session_down(i);
        }
    }

    fn user_tick(&mut self, i: usize) -> Check {
        let now = self.now;
        let c = &self.clients[i];
        if c.user_closed || c.sup_stopped {
            return Ok(());
        }
        if c.close_at.is_some_and(|t| t <= now) {
            self.user_close(i);
            return Ok(());
        }
        let next = now
            + between(
                &mut self.rng,
                Duration::from_millis(100),
                Duration::from_secs(3),
            );
        self.queue.push(next, i, 0, Kind::User);
        let roll = self.rng.below(100);
        let c = &mut self.clients[i];
        let (bytes, request) = if roll < 60 {
            let seq = c.next_seq;
            c.next_seq += 1;
            let pad = if self.rng.below(100) == 0 {
                MAX_MESSAGE + 1
            } else {
                self.rng.below(200) as usize
            };
            (
                format!(r#"{{"seq":{seq},"pad":"{}"}}"#, "a".repeat(pad)),
                None,
            )
        } else if roll < 95 {
            let id = c.session.next_id();
            if let Err(e) = c.session.track_request(now, id) {
                tr!(self.trace, now, "c{i} request {id} not tracked: {e}");
                return Ok(());
            }
            c.ledger.track(id);
            (
                format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"public/get_time"}}"#),
                Some(id),
            )
        } else {
            return Ok(());
        };
        let pending = match c.socket.as_mut() {
            Some(s) if s.opened => s.link.pending_bytes(now),
            _ => 0,
        };
        match c.conn.handle_send(now, bytes.as_bytes(), pending) {
            Ok(()) => {
                let epoch = c.conn.epoch();
                if !c
                    .socket
                    .as_ref()
                    .is_some_and(|s| s.epoch == epoch && s.opened && !s.close_sent)
                {
                    return Err(format!("c{i}: send accepted without an open socket"));
                }
                if request.is_none() {
                    c.ledger.accepted(c.next_seq - 1, epoch);
                }
                tr!(
                    self.trace,
                    now,
                    "c{i} e{epoch} user send {} bytes",
                    bytes.len()
                );
                self.send_to_server(i, Wire::Text(bytes.into_bytes()));
            }
            Err(e) => {
                if let Some(id) = request {
                    c.session.untrack_request(id);
                    c.ledger.untrack(id);
                }
                c.ledger.rejected();
                tr!(self.trace, now, "c{i} user send rejected: {e}");
            }
        }
        Ok(())
    }

    fn live(&self, i: usize, epoch: Epoch) -> bool {
        self.clients[i]
            .socket
            .as_ref()
            .is_some_and(|s| s.epoch == epoch)
    }

    fn deliver(&mut self, item: Item) -> Check {
        let Item {
            client: i,
            epoch,
            kind,
            ..
        } = item;
        match kind {
            Kind::User => self.user_tick(i),
            Kind::ToServer(wire) => {
                if !self.live(i, epoch) {
                    return Ok(());
                }
                let mut out = core::mem::take(&mut self.out);
                let s = self.clients[i].socket.as_mut().expect("live");
                s.server.on_wire(
                    &mut self.rng,
                    &self.cfg.faults,
                    &self.channels,
                    wire,
                    &mut out,
                );
                self.server_out(i, epoch, &mut out)
            }
            Kind::ServerTimer(t) => {
                if !self.live(i, epoch) {
                    return Ok(());
                }
                let mut out = core::mem::take(&mut self.out);
                let s = self.clients[i].socket.as_mut().expect("live");
                s.server.on_timer(&mut self.rng, t, &mut out);
                self.server_out(i, epoch, &mut out)
            }
            Kind::ServerSend(wire) => {
                if self.live(i, epoch)
                    && !self.clients[i].socket.as_ref().expect("live").server.closed
                {
                    self.send_to_client(i, wire);
                }
                Ok(())
            }
            Kind::ToClient(wire) => {
                if self.live(i, epoch) {
                    self.receive(i, epoch, wire)
                } else {
                    self.stale(i, epoch, |conn, now| match wire {
                        Wire::Text(d) => {
                            let _ = conn.handle_message(now, epoch, &d);
                        }
                        Wire::Pong(p) => conn.handle_pong(now, epoch, &p),
                        Wire::Ping(_) => {}
                        Wire::Close(code) => conn.handle_closed(now, epoch, Some(code)),
                        Wire::Eof => conn.handle_closed(now, epoch, None),
                        Wire::Reset => conn.handle_error(now, epoch, Error::ConnectionReset),
                    })
                }
            }
            Kind::Handshake(h) => {
                if !self.live(i, epoch) {
                    return self.stale(i, epoch, |conn, now| match h {
                        Handshake::Open => conn.handle_open(now, epoch),
                        Handshake::Error(e) => conn.handle_error(now, epoch, e),
                        Handshake::Eof => conn.handle_closed(now, epoch, None),
                    });
                }
                self.handshake(i, epoch, h)
            }
        }
    }

    /// Input for a socket the driver already dropped must change nothing.
    fn stale(&mut self, i: usize, epoch: Epoch, f: impl FnOnce(&mut Connection, Instant)) -> Check {
        let c = &mut self.clients[i];
        let before = c.conn.state();
        f(&mut c.conn, self.now);
        let action = c.conn.poll_action();
        let event = c.conn.poll_event();
        if before != c.conn.state() || action.is_some() || event.is_some() {
            return Err(format!(
                "c{i}: late input for dropped socket e{epoch} changed the connection: {before:?} -> {:?}, {action:?}, {event:?}",
                c.conn.state()
            ));
        }
        Ok(())
    }

    fn handshake(&mut self, i: usize, epoch: Epoch, h: Handshake) -> Check {
        let now = self.now;
        tr!(self.trace, now, "c{i} e{epoch} handshake {h:?}");
        match h {
            Handshake::Open => {
                let fault = draw_fault(&mut self.rng, &self.cfg.faults, now);
                let c = &mut self.clients[i];
                let s = c.socket.as_mut().expect("live");
                s.opened = true;
                match fault {
                    Some(Fault::Stall { at, until }) => s.link.stall(at, until),
                    Some(f) => {
                        self.queue
                            .push(f.at(), i, epoch, Kind::ServerTimer(Timer::Fault(f)))
                    }
                    None => {}
                }
                tr!(self.trace, now, "c{i} e{epoch} fault {fault:?}");
                c.conn.handle_open(now, epoch);
                if !c.conn.is_open() {
                    return Err(format!("c{i}: handshake of live socket e{epoch} ignored"));
                }
            }
            Handshake::Error(e) => {
                if matches!(e, Error::UpgradeRejected { .. }) {
                    self.clients[i].fatal_cause = true;
                }
                self.drop_socket(i);
                self.clients[i].conn.handle_error(now, epoch, e);
            }
            Handshake::Eof => {
                self.drop_socket(i);
                self.clients[i].conn.handle_closed(now, epoch, None);
            }
        }
        Ok(())
    }

    fn receive(&mut self, i: usize, epoch: Epoch, wire: Wire) -> Check {
        let now = self.now;
        let c = &mut self.clients[i];
        match wire {
            Wire::Text(data) => {
                let view = json::scan(&data).ok();
                let heartbeat = view.is_some_and(|v| v.is_deribit_heartbeat());
                let test = view.is_some_and(|v| v.is_deribit_test_request());
                if data.len() > MAX_MESSAGE || view.is_some_and(|v| v.error_code == Some(13004)) {
                    c.fatal_cause = true;
                }
                if heartbeat || is_pong(&data) {
                    c.life = now;
                }
                let was_open = c.conn.is_open();
                let d = c.conn.handle_message(now, epoch, &data);
                tr!(
                    self.trace,
                    now,
                    "c{i} e{epoch} recv {} bytes -> {d:?}",
                    data.len()
                );
                match d {
                    Delivery::Deliver => c.session.on_message(now, &data),
                    // No data frame may follow our close frame: only answered while open.
                    Delivery::Consumed => c.expect_test_reply |= test && was_open,
                    Delivery::Stale if data.len() <= MAX_MESSAGE => {
                        return Err(format!(
                            "c{i}: message on live socket e{epoch} reported stale"
                        ));
                    }
                    Delivery::Stale => {}
                }
            }
            Wire::Pong(p) => {
                c.life = now;
                tr!(self.trace, now, "c{i} e{epoch} recv pong");
                c.conn.handle_pong(now, epoch, &p);
            }
            Wire::Ping(p) => {
                if c.conn.handle_ping(now, epoch, &p) {
                    self.send_to_server(i, Wire::Pong(p));
                }
            }
            Wire::Close(code) => {
                tr!(self.trace, now, "c{i} e{epoch} recv close {code}");
                self.drop_socket(i);
                self.clients[i].conn.handle_closed(now, epoch, Some(code));
            }
            Wire::Eof => {
                tr!(self.trace, now, "c{i} e{epoch} recv EOF");
                self.drop_socket(i);
                self.clients[i].conn.handle_closed(now, epoch, None);
            }
            Wire::Reset => {
                tr!(self.trace, now, "c{i} e{epoch} recv RST");
                self.drop_socket(i);
                self.clients[i]
                    .conn
                    .handle_error(now, epoch, Error::ConnectionReset);
            }
        }
        Ok(())
    }

    fn server_out(&mut self, i: usize, epoch: Epoch, out: &mut Vec<Out>) -> Check {
        let now = self.now;
        let mut r = Ok(());
        for o in out.drain(..) {
            match o {
                Out::Send(after, wire) if after == Duration::ZERO => self.send_to_client(i, wire),
                Out::Send(after, wire) => {
                    self.queue
                        .push(now + after, i, epoch, Kind::ServerSend(wire))
                }
                Out::Timer(after, t) => {
                    self.queue.push(now + after, i, epoch, Kind::ServerTimer(t))
                }
                Out::Data(seq) => {
                    if r.is_ok() {
                        r = self.clients[i].ledger.delivered(seq, epoch);
                    }
                }
                Out::Violation(m) => {
                    if r.is_ok() {
                        r = Err(m);
                    }
                }
            }
        }
        self.out = core::mem::take(out);
        r.map_err(|m| format!("c{i}: {m}"))
    }
}
