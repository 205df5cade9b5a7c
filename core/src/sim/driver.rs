//! The simulated driver: plays the role `zenws-mio` plays for real.
//!
//! It owns a [`Supervisor`] and `N` [`Client<Deribit>`](crate::client::Client)s
//! and drives each exactly as its module docs say: after every input it
//! drains actions (carried out on the simulated network), transmits (sent as
//! text on their socket) and events, and sleeps until the earliest
//! `poll_timeout`. It answers pings when `handle_ping` says so. It never
//! touches a `Session`, renders no session message and decides nothing
//! about authentication, subscriptions or rate limits: it only plays the
//! network, the server, the user and the supervisor's executor, and checks
//! the invariants after every step.

extern crate std;

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::format;
use std::string::String;
use std::time::Duration;
use std::vec::Vec;

use crate::client::{Client, ClientEvent};
use crate::connection::{Action, ConnectionConfig, Delivery, Epoch, Event};
use crate::error::Error;
use crate::exchange::deribit::Deribit;
use crate::exchange::{ChannelKind, Protocol};
use crate::exit::ExitReason;
use crate::frame::{Frame, FrameKind};
use crate::heartbeat::{HeartbeatConfig, Strategy};
use crate::json;
use crate::ratelimit::RateLimit;
use crate::retry::{Jitter, RetryCount, RetryPolicy};
use crate::rng::Rng;
use crate::session::{Rejection, Restore, SessionConfig, SessionEvent, TransmitKind};
use crate::supervisor::{Decision, RestartIntensity, RestartType, Supervisor, SupervisorConfig};
use crate::time::{earliest, Instant};

use super::invariants::{Check, Ledger, OpenSocket, Restarts};
use super::network::{
    between, chance, connect_outcome, draw_fault, ConnectOutcome, Dir, Fault, Link,
};
use super::server::{channels_of, Account, Note, Out, Server, Timer, Wire};
use super::trace::{tr, Trace};
use super::{ActionCounts, SimConfig, SimReport, Violation};

/// Largest message either side accepts in the simulation.
const MAX_MESSAGE: usize = 4096;

/// Longest retry delay of the session (its backoff cap).
const SESSION_RETRY_CAP: Duration = Duration::from_secs(30);

/// The per-client machine under test: Deribit, 16 channels of up to 32
/// bytes, 64 requests in flight.
type Machine = Client<Deribit, 16, 32, 64>;

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
    ToClient(Wire, Note),
    ToServer(Wire),
    /// The server sends this now (a delayed answer).
    ServerSend(Wire, Note),
    ServerTimer(Timer),
    User,
    /// The user subscribes (`true`) or unsubscribes this channel.
    UserChannel(String, bool),
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

impl Socket {
    /// The link stalled at some point up to `now`: from then on the
    /// server may hold what the client gave up on (a request that never
    /// arrived, an answer after its deadline).
    fn stalled_since(&self, now: Instant) -> bool {
        self.server.stall.is_some_and(|(from, _)| from <= now)
    }
}

#[derive(Debug)]
struct Sim {
    client: Machine,
    /// The channels the user tracks (subscribed and not unsubscribed).
    channels: Vec<String>,
    /// The names the user subscribes from at runtime (including `channels`).
    pool: Vec<String>,
    /// Channels the user unsubscribed at some point.
    dropped: Vec<String>,
    authenticates: bool,
    restart: RestartType,
    bound: Option<Duration>,
    /// Deribit heartbeat interval, if that is the strategy.
    deribit_interval: Option<Duration>,
    latency: Duration,
    jitter: Duration,
    socket: Option<Socket>,
    open: Option<OpenSocket>,
    /// The session existed when the socket opened: `Restored` is due.
    expect_restore: bool,
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
    /// The socket the user saw `Authenticated` on (private requests only then).
    authed: Option<Epoch>,
    /// No connection attempt before this: a 10028 reached the client.
    hold_until: Option<Instant>,
    /// The last `HeartbeatSetupFailed`.
    setup_failed_at: Option<Instant>,
}

#[derive(Debug, Default)]
struct Stats {
    steps: u64,
    opens: u64,
    reconnects: u64,
    restarts: u64,
    escalations: u64,
    heartbeat_failures: u64,
    restores: u64,
    channels_granted: u64,
    channels_rejected: u64,
    authentications: u64,
    token_refreshes: u64,
    auth_retries: u64,
    heartbeat_setup_failures: u64,
    rate_limit_holds: u64,
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
    clients: Vec<Sim>,
    sup: Supervisor<64>,
    restarts: Restarts,
    escalated: bool,
    session_cfg: SessionConfig,
    account: Account,
    /// After a 10028 the client waits at least this (its pools refill
    /// from less than one credit to full).
    refill_hold: Duration,
    /// Longest wait for one credit, plus margin (the progress bound).
    admission: Duration,
    outages: Vec<(Instant, Instant, bool)>,
    trace: Trace,
    stats: Stats,
    actions: ActionCounts,
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
        _ => Strategy::Application {
            dialect: &crate::exchange::deribit::DIALECT,
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

/// Channel `k` of a drawn kind: public (`x.N.100ms`), public but only
/// with authorisation (`x.N.raw`), private (`user.x.N`).
fn draw_channel(rng: &mut Rng, k: usize) -> String {
    match rng.below(3) {
        0 => format!("x.{k}.100ms"),
        1 => format!("x.{k}.raw"),
        _ => format!("user.x.{k}"),
    }
}

/// The channels a client tracks from the start.
fn draw_channels(rng: &mut Rng, max: usize) -> Vec<String> {
    let n = rng.in_range(0, max.min(16) as u64) as usize;
    (0..n).map(|k| draw_channel(rng, k)).collect()
}

/// The user's pool: the initial channels and 1–3 more (16 at most: the
/// session never runs out of room, a channel being let go included).
fn draw_pool(rng: &mut Rng, channels: &[String]) -> Vec<String> {
    let n = channels.len();
    let extra = rng.in_range(1, 3).min(16 - n as u64) as usize;
    let mut pool = channels.to_vec();
    pool.extend((n..n + extra).map(|k| draw_channel(rng, k)));
    pool
}

impl World {
    pub(crate) fn new(seed: u64, cfg: &SimConfig) -> Self {
        let mut rng = Rng::new(seed);
        let now = Instant::ZERO;
        let end = now + cfg.duration;
        let f = &cfg.faults;
        let session_cfg = SessionConfig {
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
            // Capped by the session at half the token's life (≥ 2.5 s here):
            // room for the answer's transit, the timer slack, one credit of
            // rate-limit wait and the refresh's transit.
            refresh_margin: between(&mut rng, Duration::from_secs(3), Duration::from_secs(10)),
            retry_delay: between(&mut rng, Duration::from_millis(100), Duration::from_secs(1)),
        };
        let burst = rng.in_range(u64::from(f.account_burst.0), u64::from(f.account_burst.1)) as u32;
        let refill =
            rng.in_range(u64::from(f.account_refill.0), u64::from(f.account_refill.1)) as u32;
        let limit = RateLimit::flat(refill.max(1), burst.max(1));
        let refill_hold = Duration::from_nanos(
            u64::from(burst.saturating_sub(1)) * 1_000_000_000 / u64::from(refill.max(1)),
        );
        let admission = Duration::from_nanos(
            u64::from(burst.max(1)) * 1_000_000_000 / u64::from(refill.max(1)),
        ) + Duration::from_secs(1);
        let account = Account::new(limit, f.token_life);
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
            let channels = draw_channels(&mut rng, cfg.max_channels);
            let pool = draw_pool(&mut rng, &channels);
            let authenticates = chance(&mut rng, 600);
            let cod = authenticates && chance(&mut rng, 500);
            let protocol = if authenticates {
                Deribit::with_credentials("sim-client", "sim-secret")
                    .expect("short credentials")
                    .cancel_on_disconnect(cod)
            } else {
                Deribit::public()
            };
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
                idle_timeout: (!channels.is_empty()
                    && f.feed_every > Duration::ZERO
                    && chance(&mut rng, 300))
                .then(|| {
                    f.feed_every * 3 * channels.len() as u32
                        + between(&mut rng, Duration::ZERO, Duration::from_secs(30))
                }),
                max_message_size: MAX_MESSAGE,
                max_pending_bytes: if chance(&mut rng, 300) {
                    rng.in_range(1024, 8192) as usize
                } else {
                    4 << 20
                },
                // The server's bucket shape (its bucket is shared by all
                // clients; each client's is its own).
                rate_limit: Some(limit),
                seed: rng.next_u64(),
            };
            let restart = match rng.below(100) {
                0..=59 => RestartType::Transient,
                60..=84 => RestartType::Permanent,
                _ => RestartType::Temporary,
            };
            let close_at = chance(&mut rng, cfg.user_close)
                .then(|| now + between(&mut rng, Duration::ZERO, cfg.duration));
            let mut client: Machine = Client::new(config, session_cfg, protocol);
            for c in &channels {
                client
                    .subscribe(c)
                    .expect("16 channels of at most 32 bytes fit");
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
            let deribit_interval = match heartbeat.strategy {
                Strategy::Application { interval_secs, .. } => {
                    Some(Duration::from_secs(u64::from(interval_secs.max(10))))
                }
                _ => None,
            };
            clients.push(Sim {
                client,
                channels,
                pool,
                dropped: Vec::new(),
                authenticates,
                restart,
                bound: heartbeat.detection_bound(),
                deribit_interval,
                latency,
                jitter,
                socket: None,
                open: None,
                expect_restore: false,
                ledger: Ledger::default(),
                user_closed: false,
                sup_stopped: false,
                close_at,
                closed_epoch: None,
                next_seq: 0,
                fatal_cause: false,
                life: now,
                expect_test_reply: false,
                authed: None,
                hold_until: None,
                setup_failed_at: None,
            });
        }
        let mut trace = Trace::new(cfg.keep_trace);
        tr!(
            trace,
            now,
            "seed {seed}: {} clients, {session_cfg:?}, account burst {burst} refill {refill}/s, {sup_cfg:?}, outages {outages:?}",
            cfg.clients
        );
        for (i, c) in clients.iter().enumerate() {
            tr!(
                trace,
                now,
                "c{i} {:?} {:?} {:?} channels {:?} pool {:?} latency {:?}±{:?} close_at {:?}",
                c.restart,
                c.client.protocol(),
                c.client.connection().config(),
                c.channels,
                c.pool,
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
            account,
            refill_hold,
            admission,
            outages,
            trace,
            stats: Stats::default(),
            actions: ActionCounts::default(),
            out: Vec::new(),
            start: Ok(()),
        };
        for c in &mut w.clients {
            c.client.connect(now);
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
        let s = &self.stats;
        let mut r = SimReport {
            seed: self.seed,
            trace_hash: self.trace.hash(),
            trace_lines: self.trace.count(),
            steps: s.steps,
            virtual_time: self.now.saturating_since(Instant::ZERO),
            opens: s.opens,
            reconnects: s.reconnects,
            restarts: s.restarts,
            escalations: s.escalations,
            heartbeat_failures: s.heartbeat_failures,
            restores: s.restores,
            channels_granted: s.channels_granted,
            channels_rejected: s.channels_rejected,
            authentications: s.authentications,
            token_refreshes: s.token_refreshes,
            auth_retries: s.auth_retries,
            heartbeat_setup_failures: s.heartbeat_setup_failures,
            rate_limit_holds: s.rate_limit_holds,
            faults: self.account.counts,
            actions: self.actions,
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
            r.requests_errored += l.errored;
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
            .filter_map(|c| c.client.poll_timeout())
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
        let now = self.now;
        for c in &mut self.clients {
            if c.client.poll_timeout().is_some_and(|t| t <= now) {
                c.client.handle_timeout(now);
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
            if !c.client.is_terminated() {
                return Err(format!(
                    "c{i} still {:?} after the user stopped it",
                    c.client.state()
                ));
            }
            if let Some(s) = &c.socket {
                return Err(format!("c{i} socket e{} never closed", s.epoch));
            }
            let pending = c.client.session().map_or(0, |s| s.pending_requests());
            c.ledger
                .check_settled(pending)
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
        // Drained: a deadline now or earlier would make the driver spin.
        if let Some(t) = c.client.poll_timeout().filter(|&t| t <= now) {
            return Err(format!(
                "c{i}: poll_timeout {t:?} not after now once drained ({:?}): a busy loop",
                c.client.state()
            ));
        }
        if !c.client.is_open() {
            return Ok(());
        }
        if let Some(bound) = c.bound {
            let seen = c.client.health().last_heartbeat.unwrap_or(Instant::ZERO);
            if seen > c.life {
                return Err(format!(
                    "c{i}: core saw a sign of life at {seen:?} the peer never gave (last {:?})",
                    c.life
                ));
            }
            // A refused set_heartbeat (an answer: the peer is alive) is
            // asked again within one interval; the silence meanwhile is
            // not a miss.
            let from = match (c.setup_failed_at, c.deribit_interval) {
                (Some(t), Some(interval)) => seen.max(t + interval),
                _ => seen,
            };
            if now.saturating_since(from) > bound + slack * 2 {
                return Err(format!(
                    "c{i}: dead peer not detected: last sign of life {seen:?}, bound {bound:?}"
                ));
            }
        }
        let stalled = c.socket.as_ref().is_some_and(|s| {
            s.server
                .stall
                .is_some_and(|(from, until)| from <= now && now < until + c.latency * 2)
        });
        if let Some(o) = &c.open {
            let cfg = &self.session_cfg;
            if c.expect_restore && !o.restored && !stalled {
                // Restoration makes progress: a session request in flight,
                // or the next one within the longest retry delay, pacing and
                // rate-limit wait of the last answer (or deadline).
                if let Some(quiet) = o.quiet_since(now, cfg.request_timeout + slack) {
                    let due = quiet + SESSION_RETRY_CAP + cfg.pacing + self.admission + slack * 4;
                    if now > due {
                        return Err(format!(
                            "c{i}: e{} open since {:?}, quiet since {quiet:?}, but subscriptions not restored ({} requested)",
                            o.epoch,
                            o.opened_at,
                            o.requested.len()
                        ));
                    }
                }
            }
        }
        self.check_quiet(i)
    }

    /// Whenever the client is quiet — open on a live socket the server has
    /// not closed, authenticated if it authenticates, no session request in
    /// flight and nothing due ([`OpenSocket::quiet`]) — its granted set is
    /// exactly what the server has subscribed on that socket, it holds
    /// only channels the user tracks, every tracked channel is granted or
    /// was reported rejected, and no channel the user let go stays
    /// subscribed. Excused: a stalled link (from the stall on, for the
    /// socket's life) and a session answer after its deadline (the client
    /// gave up on what the server did); a channel whose unsubscribe the
    /// server ignored (the client gave up at the deadline), or refused
    /// while the user tracks it again (a refused subscribe leaves it on
    /// the server).
    fn check_quiet(&mut self, i: usize) -> Check {
        let now = self.now;
        let cfg = &self.session_cfg;
        // After the last change the session sends what is due within its
        // pacing and one rate-limit wait (plus the timer slack).
        let settle = cfg.pacing + self.admission + self.cfg.timer_slack * 4;
        let c = &self.clients[i];
        let (Some(o), Some(s)) = (&c.open, &c.socket) else {
            return Ok(());
        };
        if s.epoch != o.epoch || !s.opened || s.close_sent || s.server.closed || o.late {
            return Ok(());
        }
        if s.stalled_since(now) {
            return Ok(());
        }
        let session = c.client.session();
        if c.authenticates && !session.is_some_and(|s| s.is_authenticated()) {
            return Ok(());
        }
        if !o.quiet(now, cfg.request_timeout, settle, SESSION_RETRY_CAP) {
            return Ok(());
        }
        let client: Vec<&str> = session.map(|s| s.granted().collect()).unwrap_or_default();
        let server = &s.server;
        let e = o.epoch;
        let r = (|| {
            for g in &client {
                if !c.channels.iter().any(|t| t == g) {
                    return Err(format!("quiet on e{e}: {g} granted but the user let it go"));
                }
                if !server.granted.iter().any(|x| x == g) {
                    return Err(format!(
                        "quiet on e{e}: {g} granted in the client, not subscribed on the server {:?}",
                        server.granted
                    ));
                }
            }
            for g in &server.granted {
                if client.contains(&g.as_str()) {
                    continue;
                }
                let tracked = c.channels.contains(g);
                let excused = server.unsub_ignored.contains(g)
                    || (tracked && server.unsub_refused.contains(g));
                if excused {
                    continue;
                }
                return Err(if tracked {
                    format!(
                        "quiet on e{e}: tracked {g} subscribed on the server but not granted in the client {client:?}"
                    )
                } else {
                    format!(
                        "quiet on e{e}: {g} unsubscribed by the user but still subscribed on the server"
                    )
                });
            }
            for t in &c.channels {
                if !client.contains(&t.as_str()) && !o.rejected.contains(t) {
                    return Err(format!(
                        "quiet on e{e}: tracked {t} neither granted ({client:?}) nor reported rejected ({:?})",
                        o.rejected
                    ));
                }
            }
            Ok(())
        })();
        self.actions.quiet_checks += 1;
        r.map_err(|m| format!("c{i}: {m}"))
    }

    fn drain(&mut self, i: usize) -> Result<bool, String> {
        let mut moved = false;
        let mut text = String::new();
        loop {
            let now = self.now;
            let c = &mut self.clients[i];
            if let Some(a) = c.client.poll_action() {
                moved = true;
                self.action(i, a)?;
                continue;
            }
            if c.client.is_open() {
                let pending = match c.socket.as_mut() {
                    Some(s) if s.opened => s.link.pending_bytes(now),
                    _ => 0,
                };
                text.clear();
                if let Some(t) = c.client.poll_transmit(now, pending, &mut text) {
                    moved = true;
                    self.transmit(i, t, &text)?;
                    continue;
                }
            }
            if let Some(e) = self.clients[i].client.poll_event() {
                moved = true;
                match e {
                    ClientEvent::Connection(e) => self.event(i, e)?,
                    ClientEvent::Session(e) => self.session_event(i, e)?,
                }
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
                if let Some(h) = c.hold_until.filter(|&h| now < h) {
                    return Err(format!(
                        "c{i}: Connect e{epoch} before the credits refill after a 10028 (not before {h:?})"
                    ));
                }
                let lat = c.latency;
                let outcome = connect_outcome(
                    &mut self.rng,
                    &self.cfg.faults,
                    lat,
                    c.client.connection().config().connect_timeout,
                    outage,
                );
                let cod = c.client.protocol().cancels_on_disconnect();
                c.socket = Some(Socket {
                    epoch,
                    link: Link::new(lat, c.jitter),
                    server: Server::new(MAX_MESSAGE, cod),
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
                if matches!(frame, Frame::AppReply { .. }) {
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

    /// A session message the client rendered and admitted: written on its
    /// socket as text, as a driver does. The sim only reads it to keep
    /// its books (ids in flight, channels requested).
    fn transmit(&mut self, i: usize, t: crate::session::Transmit, text: &str) -> Check {
        let now = self.now;
        let c = &mut self.clients[i];
        tr!(self.trace, now, "c{i} transmit {t:?} {} bytes", text.len());
        if !c
            .socket
            .as_ref()
            .is_some_and(|s| s.epoch == t.epoch && s.opened && !s.close_sent)
        {
            return Err(format!(
                "c{i}: transmit {t:?} for a socket that is not open (socket {:?})",
                c.socket.as_ref().map(|s| s.epoch)
            ));
        }
        c.ledger.own(t.id);
        let o = c
            .open
            .as_mut()
            .ok_or_else(|| format!("c{i}: transmit while not open"))?;
        o.sent(t.id, now);
        if let TransmitKind::Subscribe(n) | TransmitKind::Unsubscribe(n) = t.kind {
            let subscribe = matches!(t.kind, TransmitKind::Subscribe(_));
            let names: Vec<String> = channels_of(text).into_iter().map(String::from).collect();
            if names.len() != n {
                return Err(format!(
                    "c{i}: {:?} carries {} channels",
                    t.kind,
                    names.len()
                ));
            }
            for name in &names {
                let tracked = c.channels.iter().any(|t| t == name);
                if subscribe && !tracked {
                    return Err(format!("c{i}: subscribe to untracked {name}"));
                }
                if !subscribe && tracked {
                    return Err(format!("c{i}: unsubscribe of tracked {name}"));
                }
                if !subscribe && !o.late && !o.server_granted.contains(name) {
                    return Err(format!(
                        "c{i}: unsubscribe of {name}, which the server did not grant on e{}",
                        o.epoch
                    ));
                }
            }
            if subscribe {
                o.requested.extend(names.iter().cloned());
                o.asked(&names);
                // Sometimes the user lets one go right away: while the
                // request is in flight (the answer takes two latencies).
                if chance(&mut self.rng, 200) {
                    let k = self.rng.below(names.len() as u64) as usize;
                    let after = between(
                        &mut self.rng,
                        Duration::ZERO,
                        c.latency * 2 + Duration::from_millis(60),
                    );
                    self.queue.push(
                        now + after,
                        i,
                        0,
                        Kind::UserChannel(names[k].clone(), false),
                    );
                }
                o.subs.push((t.id, now, names));
            } else {
                o.unsubs.push((t.id, now, names));
            }
        }
        if let TransmitKind::Authenticate { .. } = t.kind {
            if !c.authenticates {
                return Err(format!("c{i}: a client without credentials authenticates"));
            }
        }
        self.send_to_server(i, Wire::Text(text.as_bytes().to_vec()));
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

    fn send_to_client(&mut self, i: usize, wire: Wire, note: Note) {
        let now = self.now;
        let Some(s) = self.clients[i].socket.as_mut() else {
            return;
        };
        if let Some(at) = s
            .link
            .delivery(&mut self.rng, now, Dir::ToClient, wire.len())
        {
            self.queue.push(at, i, s.epoch, Kind::ToClient(wire, note));
        }
    }

    fn drop_socket(&mut self, i: usize) {
        let c = &mut self.clients[i];
        if let Some(s) = c.socket.take() {
            c.ledger.socket_gone(s.epoch);
            tr!(self.trace, self.now, "c{i} e{} socket gone", s.epoch);
        }
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
                c.expect_restore = c.client.session().is_some();
                c.life = now;
                c.authed = None;
                c.setup_failed_at = None;
            }
            Event::Disconnected { epoch, .. } => {
                let c = &mut self.clients[i];
                c.ledger.told(Some(epoch));
                c.open = None;
                c.authed = None;
            }
            Event::HeartbeatFailed => self.stats.heartbeat_failures += 1,
            Event::HeartbeatSetupFailed { .. } => {
                self.stats.heartbeat_setup_failures += 1;
                let c = &mut self.clients[i];
                if c.deribit_interval.is_none() {
                    return Err(format!(
                        "c{i}: HeartbeatSetupFailed without a Deribit heartbeat"
                    ));
                }
                c.setup_failed_at = Some(now);
            }
            Event::Reconnecting { .. } | Event::HeartbeatMissed { .. } => {}
            Event::Exited(reason) => {
                let c = &mut self.clients[i];
                c.open = None;
                c.authed = None;
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
                c.client.restart(now, at);
            }
            Decision::Remove => {}
            Decision::Escalate { restarts, .. } => {
                self.restarts.escalate(now, restarts)?;
                self.stats.escalations += 1;
                self.escalated = true;
                for c in &mut self.clients {
                    c.sup_stopped = true;
                    c.closed_epoch.get_or_insert(c.client.epoch());
                    if !c.client.is_terminated() {
                        c.client.close(now);
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

    fn session_event(&mut self, i: usize, e: SessionEvent) -> Check {
        let now = self.now;
        tr!(self.trace, now, "c{i} session {e:?}");
        let c = &mut self.clients[i];
        let epoch_now = c.client.epoch();
        let r = match e {
            SessionEvent::Authenticated { epoch, .. } => {
                self.stats.authentications += 1;
                if epoch != epoch_now || !c.authenticates {
                    Err(format!("Authenticated e{epoch} on e{epoch_now}"))
                } else {
                    c.authed = Some(epoch);
                    Ok(())
                }
            }
            SessionEvent::TokenRefreshed { epoch, .. } => {
                self.stats.token_refreshes += 1;
                match c.authed {
                    Some(a) if a == epoch => Ok(()),
                    _ => Err(format!(
                        "TokenRefreshed e{epoch} on a socket not authenticated"
                    )),
                }
            }
            SessionEvent::AuthRetrying { .. } => {
                self.stats.auth_retries += 1;
                Ok(())
            }
            SessionEvent::AuthRejected { .. }
            | SessionEvent::AuthTimedOut { .. }
            | SessionEvent::RateLimited { .. } => Ok(()),
            SessionEvent::AfterAuth { epoch, step, .. } => {
                if !c.client.protocol().cancels_on_disconnect()
                    || step != 0
                    || c.authed != Some(epoch)
                {
                    Err(format!(
                        "AfterAuth step {step} on e{epoch} (authenticated on {:?})",
                        c.authed
                    ))
                } else {
                    Ok(())
                }
            }
            SessionEvent::SubscriptionRejected {
                epoch,
                index,
                reason,
            } => {
                self.stats.channels_rejected += 1;
                let name = c
                    .client
                    .session()
                    .and_then(|s| s.channel(index))
                    .map(String::from)
                    .unwrap_or_default();
                let excused = c.socket.as_ref().is_some_and(|s| {
                    s.server.unsub_refused.contains(&name) || s.stalled_since(now)
                });
                let kind = c.client.protocol().channel_kind(&name);
                match c.open.as_mut() {
                    _ if name.is_empty() => Err(format!("SubscriptionRejected for index {index}")),
                    _ if reason == Rejection::NeedsAuth
                        && (kind == ChannelKind::Public || c.authed == Some(epoch)) =>
                    {
                        Err(format!(
                            "{name} rejected NeedsAuth on e{epoch} (authenticated: {:?})",
                            c.authed
                        ))
                    }
                    _ if !c.channels.contains(&name) => {
                        Err(format!("{name} reported rejected but not tracked"))
                    }
                    Some(o) if o.epoch == epoch => o.rejected(&name, excused),
                    _ => Err(format!(
                        "SubscriptionRejected e{epoch} while not open on it"
                    )),
                }
            }
            SessionEvent::Restored {
                epoch,
                granted,
                rejected,
            } => {
                self.stats.restores += 1;
                self.stats.channels_granted += granted as u64;
                let restored: Vec<String> = c
                    .client
                    .session()
                    .map(|s| s.granted().map(String::from).collect())
                    .unwrap_or_default();
                // A stalled link: the server may hold anything.
                let excused = match c.socket.as_ref() {
                    Some(s) if s.stalled_since(now) => c.channels.clone(),
                    Some(s) => s.server.unsub_refused.clone(),
                    None => Vec::new(),
                };
                match c.open.as_mut() {
                    Some(o) if o.epoch == epoch => {
                        o.restored(granted, rejected, &restored, &c.channels, &excused)
                    }
                    _ => Err(format!("Restored e{epoch} while not open on it")),
                }
            }
            SessionEvent::RequestResolved { id } => c.ledger.outcome(id, "resolved"),
            SessionEvent::RequestError { id, .. } => c.ledger.outcome(id, "error"),
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
        c.closed_epoch.get_or_insert(c.client.epoch());
        c.client.close(now);
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
        if chance(&mut self.rng, self.cfg.user_subscribe) {
            let c = &self.clients[i];
            let untracked: Vec<&String> =
                c.pool.iter().filter(|p| !c.channels.contains(p)).collect();
            let subscribe =
                !untracked.is_empty() && (c.channels.is_empty() || self.rng.below(2) == 0);
            let name = if subscribe {
                untracked[self.rng.below(untracked.len() as u64) as usize].clone()
            } else if !c.channels.is_empty() {
                c.channels[self.rng.below(c.channels.len() as u64) as usize].clone()
            } else {
                return Ok(());
            };
            return self.user_channel(i, name, subscribe);
        }
        let roll = self.rng.below(100);
        let burst = if roll >= 97 {
            self.rng.in_range(2, 8)
        } else {
            1
        };
        for _ in 0..burst {
            self.user_send(i, roll)?;
        }
        Ok(())
    }

    /// The user subscribes or unsubscribes `name` (a no-op if it is
    /// tracked already, or not tracked).
    fn user_channel(&mut self, i: usize, name: String, subscribe: bool) -> Check {
        let now = self.now;
        let timeout = self.session_cfg.request_timeout;
        let c = &mut self.clients[i];
        if c.user_closed || c.sup_stopped {
            return Ok(());
        }
        let tracked = c.channels.iter().position(|n| *n == name);
        let a = &mut self.actions;
        if subscribe {
            if tracked.is_some() {
                return Ok(());
            }
            let leaving = c.open.as_ref().is_some_and(|o| {
                o.leaving(&name, now, timeout) || o.server_granted.contains(&name)
            });
            c.client
                .subscribe(&name)
                .map_err(|e| format!("c{i}: subscribe {name}: {e:?}"))?;
            c.channels.push(name.clone());
            a.subscribes += 1;
            a.resubscribes += u64::from(c.dropped.contains(&name));
            a.resubscribes_leaving += u64::from(leaving);
            tr!(
                self.trace,
                now,
                "c{i} user subscribe {name} (leaving: {leaving})"
            );
        } else {
            let Some(k) = tracked else { return Ok(()) };
            let in_flight = c
                .open
                .as_ref()
                .is_some_and(|o| o.subscribing(&name, now, timeout));
            let granted = c.open.is_some()
                && c.client
                    .session()
                    .is_some_and(|s| s.granted().any(|g| g == name));
            if !c.client.unsubscribe(&name) {
                return Err(format!("c{i}: unsubscribe of tracked {name} refused"));
            }
            c.channels.remove(k);
            if !c.dropped.contains(&name) {
                c.dropped.push(name.clone());
            }
            a.unsubscribes += 1;
            a.unsubscribes_in_flight += u64::from(in_flight);
            a.unsubscribes_granted += u64::from(granted);
            tr!(
                self.trace,
                now,
                "c{i} user unsubscribe {name} (in flight: {in_flight}, granted: {granted})"
            );
            // Sometimes the user takes it back at once (the unsubscribe, or
            // the subscribe it abandons, still in flight).
            if chance(&mut self.rng, 300) {
                let after = between(
                    &mut self.rng,
                    Duration::ZERO,
                    c.latency * 2 + Duration::from_millis(60),
                );
                self.queue
                    .push(now + after, i, 0, Kind::UserChannel(name.clone(), true));
            }
        }
        if let Some(o) = self.clients[i].open.as_mut() {
            o.user_changed(now, &name);
        }
        Ok(())
    }

    fn user_send(&mut self, i: usize, roll: u64) -> Check {
        let now = self.now;
        let c = &mut self.clients[i];
        let authed = c
            .authed
            .is_some_and(|e| e == c.client.epoch() && c.client.is_open());
        let (bytes, request) = if roll < 55 {
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
            let id = c.client.next_request_id();
            if let Err(e) = c.client.track_request(now, id) {
                tr!(self.trace, now, "c{i} request {id} not tracked: {e:?}");
                return Ok(());
            }
            c.ledger.track(id);
            // Private requests only on a socket the user saw authenticated.
            let method = if roll >= 80 && authed {
                "private/get_positions"
            } else {
                "public/get_time"
            };
            (
                format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"{method}"}}"#),
                Some(id),
            )
        } else if roll >= 97 {
            let id = c.client.next_request_id();
            if c.client.track_request(now, id).is_err() {
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
        match c.client.handle_send(now, bytes.as_bytes(), pending) {
            Ok(()) => {
                let epoch = c.client.epoch();
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
                    c.client.untrack_request(id);
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
        let now = self.now;
        match kind {
            Kind::User => self.user_tick(i),
            Kind::UserChannel(name, subscribe) => self.user_channel(i, name, subscribe),
            Kind::ToServer(wire) => {
                if !self.live(i, epoch) {
                    return Ok(());
                }
                let mut out = core::mem::take(&mut self.out);
                let s = self.clients[i].socket.as_mut().expect("live");
                s.server.on_wire(
                    now,
                    &mut self.rng,
                    &self.cfg.faults,
                    &mut self.account,
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
                s.server
                    .on_timer(now, &mut self.rng, &mut self.account, t, &mut out);
                self.server_out(i, epoch, &mut out)
            }
            Kind::ServerSend(wire, note) => {
                if self.live(i, epoch)
                    && !self.clients[i].socket.as_ref().expect("live").server.closed
                {
                    self.send_to_client(i, wire, note);
                }
                Ok(())
            }
            Kind::ToClient(wire, note) => {
                if self.live(i, epoch) {
                    self.receive(i, epoch, wire, note)
                } else {
                    self.stale(i, epoch, |client, now| match wire {
                        Wire::Text(d) => {
                            let _ = client.handle_message(now, epoch, &d);
                        }
                        Wire::Pong(p) => client.handle_pong(now, epoch, &p),
                        Wire::Ping(p) => {
                            let _ = client.handle_ping(now, epoch, &p);
                        }
                        Wire::Close(code) => client.handle_closed(now, epoch, Some(code)),
                        Wire::Eof => client.handle_closed(now, epoch, None),
                        Wire::Reset => client.handle_error(now, epoch, Error::ConnectionReset),
                    })
                }
            }
            Kind::Handshake(h) => {
                if !self.live(i, epoch) {
                    return self.stale(i, epoch, |client, now| match h {
                        Handshake::Open => client.handle_open(now, epoch),
                        Handshake::Error(e) => client.handle_error(now, epoch, e),
                        Handshake::Eof => client.handle_closed(now, epoch, None),
                    });
                }
                self.handshake(i, epoch, h)
            }
        }
    }

    /// Input for a socket the driver already dropped must change nothing.
    fn stale(&mut self, i: usize, epoch: Epoch, f: impl FnOnce(&mut Machine, Instant)) -> Check {
        let c = &mut self.clients[i];
        let before = c.client.state();
        f(&mut c.client, self.now);
        let action = c.client.poll_action();
        let event = c.client.poll_event();
        if before != c.client.state() || action.is_some() || event.is_some() {
            return Err(format!(
                "c{i}: late input for dropped socket e{epoch} changed the client: {before:?} -> {:?}, {action:?}, {event:?}",
                c.client.state()
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
                    Some(Fault::Stall { at, until }) => {
                        s.link.stall(at, until);
                        s.server.stall = Some((at, until));
                    }
                    Some(f) => {
                        self.queue
                            .push(f.at(), i, epoch, Kind::ServerTimer(Timer::Fault(f)))
                    }
                    None => {}
                }
                tr!(self.trace, now, "c{i} e{epoch} fault {fault:?}");
                c.client.handle_open(now, epoch);
                if !c.client.is_open() && !c.client.is_terminated() && c.socket.is_some() {
                    return Err(format!("c{i}: handshake of live socket e{epoch} ignored"));
                }
            }
            Handshake::Error(e) => {
                if matches!(e, Error::UpgradeRejected { .. }) {
                    self.clients[i].fatal_cause = true;
                }
                self.drop_socket(i);
                self.clients[i].client.handle_error(now, epoch, e);
            }
            Handshake::Eof => {
                self.drop_socket(i);
                self.clients[i].client.handle_closed(now, epoch, None);
            }
        }
        Ok(())
    }

    fn receive(&mut self, i: usize, epoch: Epoch, wire: Wire, note: Note) -> Check {
        let now = self.now;
        let c = &mut self.clients[i];
        match wire {
            Wire::Text(data) => {
                let view = json::scan(&data).ok();
                let heartbeat = view.is_some_and(|v| v.is_deribit_heartbeat());
                let test = view.is_some_and(|v| v.is_deribit_test_request());
                let answer = view.and_then(|v| v.id);
                let error = view.is_some_and(|v| v.has_error);
                if data.len() > MAX_MESSAGE {
                    c.fatal_cause = true;
                }
                if heartbeat || is_pong(&data) {
                    c.life = now;
                }
                let was_open = c.client.is_open();
                let d = c.client.handle_message(now, epoch, &data);
                tr!(
                    self.trace,
                    now,
                    "c{i} e{epoch} recv {} bytes -> {d:?} {note:?}",
                    data.len()
                );
                if d != Delivery::Stale {
                    let timeout = self.session_cfg.request_timeout;
                    if let (Some(o), Some(id)) = (c.open.as_mut(), answer) {
                        o.answered(id, now, error, timeout);
                    }
                    match note {
                        Note::Granted(channels) => {
                            if let Some(o) = c.open.as_mut() {
                                o.granted(&channels);
                            }
                        }
                        Note::Unsubscribed(channels) => {
                            if let Some(o) = c.open.as_mut() {
                                o.unsubscribed(&channels);
                            }
                        }
                        Note::Feed(channel) => {
                            if let Some(o) = c.open.as_ref() {
                                o.feed(&channel).map_err(|m| format!("c{i}: {m}"))?;
                            }
                        }
                        Note::RateLimited => {
                            // The client's pools refill from (almost) empty.
                            let h = now + self.refill_hold;
                            c.hold_until = Some(c.hold_until.map_or(h, |x| x.max(h)));
                            self.stats.rate_limit_holds += 1;
                        }
                        Note::None => {}
                    }
                }
                match d {
                    Delivery::Deliver => {}
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
                c.client.handle_pong(now, epoch, &p);
            }
            Wire::Ping(p) => {
                if c.client.handle_ping(now, epoch, &p) {
                    self.send_to_server(i, Wire::Pong(p));
                }
            }
            Wire::Close(code) => {
                tr!(self.trace, now, "c{i} e{epoch} recv close {code}");
                self.drop_socket(i);
                self.clients[i].client.handle_closed(now, epoch, Some(code));
            }
            Wire::Eof => {
                tr!(self.trace, now, "c{i} e{epoch} recv EOF");
                self.drop_socket(i);
                self.clients[i].client.handle_closed(now, epoch, None);
            }
            Wire::Reset => {
                tr!(self.trace, now, "c{i} e{epoch} recv RST");
                self.drop_socket(i);
                self.clients[i]
                    .client
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
                Out::Send(after, wire, note) if after == Duration::ZERO => {
                    self.send_to_client(i, wire, note)
                }
                Out::Send(after, wire, note) => {
                    self.queue
                        .push(now + after, i, epoch, Kind::ServerSend(wire, note))
                }
                Out::Timer(after, t) => {
                    self.queue.push(now + after, i, epoch, Kind::ServerTimer(t))
                }
                Out::Data(seq) => {
                    if r.is_ok() {
                        r = self.clients[i].ledger.delivered(seq, epoch);
                    }
                }
                Out::Fatal => self.clients[i].fatal_cause = true,
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
