//! One client's lifecycle: the state machine every other piece plugs into.
//!
//! ```text
//!          connect()            handle_open()
//!   Idle ─────────────► Connecting ─────────► Open ──close()──► Closing ──► Stopped
//!                         ▲   │ error/timeout   │ error, peer close,          (normal)
//!                         │   ▼                 │ heartbeat dead, idle
//!                         └─ Backoff ◄──────────┘
//!                              │ retries exhausted / fatal error
//!                              ▼
//!                            Failed (abnormal, with the reason)
//! ```
//!
//! Input goes in through `handle_*` and [`Connection::handle_timeout`];
//! decisions come out of [`Connection::poll_action`] (socket work for the
//! driver) and [`Connection::poll_event`] (what to tell the user). Every
//! socket gets an *epoch*; input tagged with an old epoch is ignored, so a
//! late frame or timer of a previous socket never acts on the current one.

use crate::error::{Error, SendError};
use crate::exit::ExitReason;
use crate::frame::Frame;
use crate::health::{Health, HealthStatus, Metrics};
use crate::heartbeat::{Heartbeat, HeartbeatConfig};
use crate::ratelimit::{Buckets, RateLimit};
use crate::retry::{Backoff, RetryPolicy};
use crate::time::{earliest, Instant};
use core::time::Duration;
use heapless::Deque;

/// Identifies one socket of a connection; bumps on every attempt.
pub type Epoch = u32;

/// Everything one connection's decisions depend on.
///
/// Built from [`Default`] with the chainable `with_*` methods (the struct is
/// `#[non_exhaustive]`: a field added later breaks nobody); the fields stay
/// public for reading and for changing one in place.
///
/// ```
/// use core::time::Duration;
/// use zenws_core::retry::{RetryCount, RetryPolicy};
/// use zenws_core::{ConnectionConfig, HeartbeatConfig};
///
/// const CONFIG: ConnectionConfig = ConnectionConfig::DEFAULT
///     .with_heartbeat(HeartbeatConfig::ping(Duration::from_secs(5), Duration::from_secs(3)))
///     .with_retry(RetryPolicy::DEFAULT.with_retry_count(RetryCount::Infinite))
///     .with_idle_timeout(Some(Duration::from_secs(30)));
/// let mut config = ConnectionConfig::default().with_connect_timeout(Duration::from_secs(2));
/// config.seed = 7; // or set a field in place
/// # let _ = (CONFIG, config);
/// ```
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct ConnectionConfig {
    /// TCP + TLS + upgrade must finish within this (default 5 s).
    pub connect_timeout: Duration,
    /// Our close frame must be answered within this (default 2 s).
    pub close_timeout: Duration,
    /// Reconnect policy.
    pub retry: RetryPolicy,
    /// Liveness checks.
    pub heartbeat: HeartbeatConfig,
    /// Reconnect if no *data* message arrives for this long (heartbeat traffic
    /// does not count). Catches a feed that went quiet on a live transport.
    pub idle_timeout: Option<Duration>,
    /// Largest message accepted in either direction (default 16 MiB).
    pub max_message_size: usize,
    /// Bound on bytes waiting to be written; a send beyond it is
    /// [`SendError::QueueFull`] (default 4 MiB).
    pub max_pending_bytes: usize,
    /// Optional token bucket consulted before each user send.
    pub rate_limit: Option<RateLimit>,
    /// Seed for retry jitter: same seed, same delays.
    pub seed: u64,
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl ConnectionConfig {
    /// The defaults, usable in `const` context (same as [`Default`]).
    pub const DEFAULT: ConnectionConfig = ConnectionConfig {
        connect_timeout: Duration::from_secs(5),
        close_timeout: Duration::from_secs(2),
        retry: RetryPolicy::DEFAULT,
        heartbeat: HeartbeatConfig::DEFAULT,
        idle_timeout: None,
        max_message_size: 16 << 20,
        max_pending_bytes: 4 << 20,
        rate_limit: None,
        seed: 0x5eed,
    };

    /// Set [`connect_timeout`](Self::connect_timeout).
    #[must_use]
    pub const fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Set [`close_timeout`](Self::close_timeout).
    #[must_use]
    pub const fn with_close_timeout(mut self, timeout: Duration) -> Self {
        self.close_timeout = timeout;
        self
    }

    /// Set the reconnect policy ([`retry`](Self::retry)).
    #[must_use]
    pub const fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Set the liveness checks ([`heartbeat`](Self::heartbeat)).
    #[must_use]
    pub const fn with_heartbeat(mut self, heartbeat: HeartbeatConfig) -> Self {
        self.heartbeat = heartbeat;
        self
    }

    /// Set [`idle_timeout`](Self::idle_timeout) (`None`: off).
    #[must_use]
    pub const fn with_idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// Set [`max_message_size`](Self::max_message_size).
    #[must_use]
    pub const fn with_max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }

    /// Set [`max_pending_bytes`](Self::max_pending_bytes).
    #[must_use]
    pub const fn with_max_pending_bytes(mut self, bytes: usize) -> Self {
        self.max_pending_bytes = bytes;
        self
    }

    /// Set the outbound rate limit ([`rate_limit`](Self::rate_limit); `None`: off).
    #[must_use]
    pub const fn with_rate_limit(mut self, limit: Option<RateLimit>) -> Self {
        self.rate_limit = limit;
        self
    }

    /// Set the jitter [`seed`](Self::seed).
    #[must_use]
    pub const fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }
}

/// Socket work for the driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Action {
    /// Open a new socket (resolve, TCP, TLS, upgrade) for this epoch, then
    /// report [`Connection::handle_open`] or [`Connection::handle_error`].
    Connect {
        /// The new socket's epoch.
        epoch: Epoch,
    },
    /// Write a core-generated frame on the socket of `epoch`.
    Send {
        /// Target socket.
        epoch: Epoch,
        /// What to send; render with [`Frame::encode`].
        frame: Frame,
    },
    /// Start the close handshake with `code`; report completion with
    /// [`Connection::handle_closed`].
    Close {
        /// Target socket.
        epoch: Epoch,
        /// Close code (1000 for a user close).
        code: u16,
    },
    /// Drop the socket now: try one close frame with `code` if the transport
    /// is writable, but never wait on a dead peer.
    Abort {
        /// Target socket.
        epoch: Epoch,
        /// Close code for the best-effort close frame (1011 heartbeat/idle, 1001 user stop).
        code: u16,
    },
}

/// What to tell the user.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A connection attempt started.
    Connecting {
        /// The socket's epoch.
        epoch: Epoch,
        /// 0 for the first attempt of an outage, then 1, 2, ...
        attempt: u32,
    },
    /// The WebSocket is open; sends are accepted.
    Opened {
        /// The socket's epoch.
        epoch: Epoch,
    },
    /// An open connection was lost.
    Disconnected {
        /// The socket's epoch.
        epoch: Epoch,
        /// Why.
        reason: Error,
    },
    /// The next attempt starts after `delay`.
    Reconnecting {
        /// Attempt number within this outage (1-based).
        attempt: u32,
        /// Backoff before it.
        delay: Duration,
        /// The failure that caused it.
        reason: Error,
    },
    /// A heartbeat went unanswered.
    HeartbeatMissed {
        /// Misses in a row.
        consecutive: u32,
    },
    /// The heartbeat threshold was reached; the socket is aborted.
    HeartbeatFailed,
    /// The server refused the heartbeat setup (Deribit `set_heartbeat`)
    /// with this error code: asked again after a delay, and the silence
    /// meanwhile is not counted as missed heartbeats.
    HeartbeatSetupFailed {
        /// The JSON-RPC error code.
        code: i64,
    },
    /// This incarnation ended: what a supervisor reacts to.
    Exited(ExitReason),
}

/// What to do with an incoming data message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// Hand it to the user.
    Deliver,
    /// Heartbeat traffic, handled by the core.
    Consumed,
    /// From an old socket or a connection that is not open: drop it.
    Stale,
}

/// The lifecycle state (see the module diagram).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum State {
    /// Not started.
    Idle,
    /// A socket is being opened.
    Connecting,
    /// Open.
    Open,
    /// Waiting for the peer's close frame after a user close.
    Closing,
    /// Waiting before the next attempt.
    Backoff,
    /// Ended normally.
    Stopped,
    /// Ended abnormally.
    Failed(ExitReason),
}

#[derive(Clone, Copy, Debug)]
enum Phase {
    Idle,
    Connecting { deadline: Instant },
    Open { idle_deadline: Option<Instant> },
    Closing { deadline: Instant },
    Backoff { until: Instant },
    Stopped,
    Failed(ExitReason),
}

/// Pending actions. One input emits at most two (restart: `Abort` +
/// `Connect`) and the driver drains after every input, so 4 leaves room for
/// a driver that drains every other input. Kept small: it is the largest
/// part of a [`Connection`] (4 × 32 bytes).
const ACTIONS: usize = 4;
/// Pending events. One input emits at most four (heartbeat dead:
/// `HeartbeatMissed`, `HeartbeatFailed`, `Disconnected`, `Reconnecting`).
const EVENTS: usize = 8;

/// One client's decision core. See the [module docs](self).
///
/// What a `Client` does with it: connect, answer the heartbeat, report
/// health, give up on a dead peer, reconnect, and close on request. The
/// caller plays the driver (sockets and clock are its business):
///
/// ```
/// use core::time::Duration;
/// use zenws_core::frame::Frame;
/// use zenws_core::{
///     Action, Connection, ConnectionConfig, Error, Event, ExitReason, HealthStatus,
///     HeartbeatConfig, Instant, State,
/// };
///
/// let ms = Duration::from_millis;
/// // ping every 100 ms, 50 ms to answer, dead after 2 misses in a row
/// let mut conn = Connection::new(
///     ConnectionConfig::default().with_heartbeat(HeartbeatConfig::ping(ms(100), ms(50))),
/// );
/// let t0 = Instant::from_millis(1_000);
/// conn.connect(t0);
/// assert_eq!(conn.poll_action(), Some(Action::Connect { epoch: 1 }));
/// conn.handle_open(t0, 1);
///
/// // The first ping is due 100 ms after the open; the peer answers in 3 ms.
/// let tick = conn.poll_timeout().unwrap();
/// assert_eq!(tick, t0 + ms(100));
/// conn.handle_timeout(tick);
/// let Some(Action::Send { epoch: 1, frame: Frame::Ping { token } }) = conn.poll_action() else {
///     panic!("expected a ping")
/// };
/// // The driver writes `frame.encode()` as a ping; the pong echoes the payload.
/// conn.handle_pong(tick + ms(3), 1, &token.to_be_bytes());
/// let health = conn.health();
/// assert_eq!(health.status, HealthStatus::Healthy);
/// assert_eq!(health.rtt_last, Some(ms(3)));
///
/// // Then the peer goes silent: the driver just keeps firing the deadlines.
/// let mut now = tick;
/// while conn.state() == State::Open {
///     now = conn.poll_timeout().unwrap();
///     conn.handle_timeout(now);
/// }
/// // Two misses: aborted with 1011 and queued for a reconnect, 350 ms after
/// // the open (the bound is interval × 2 + timeout after the last pong).
/// assert_eq!(now, t0 + ms(350));
/// let actions: Vec<_> = std::iter::from_fn(|| conn.poll_action()).collect();
/// assert!(actions.contains(&Action::Abort { epoch: 1, code: 1011 }));
/// let events: Vec<_> = std::iter::from_fn(|| conn.poll_event()).collect();
/// assert!(events.contains(&Event::HeartbeatFailed));
/// assert!(matches!(events.last(), Some(Event::Reconnecting { reason: Error::HeartbeatFailed, .. })));
/// assert_eq!(conn.state(), State::Backoff);
///
/// // The user closes the client: a normal exit, never restarted.
/// conn.close(now);
/// assert_eq!(conn.poll_event(), Some(Event::Exited(ExitReason::Normal)));
/// assert!(conn.is_terminated());
/// ```
#[derive(Debug)]
pub struct Connection {
    config: ConnectionConfig,
    phase: Phase,
    epoch: Epoch,
    attempt: u32,
    backoff: Backoff,
    heartbeat: Heartbeat,
    /// Rate-limit pools; kept across reconnects and restarts (servers
    /// count per account, not per socket).
    buckets: Option<Buckets>,
    /// No connection attempt before this (the server's rate limit was hit).
    hold_until: Option<Instant>,
    last_data: Option<Instant>,
    metrics: Metrics,
    actions: Deque<Action, ACTIONS>,
    events: Deque<Event, EVENTS>,
}

impl Connection {
    /// A connection in [`State::Idle`]; call [`Connection::connect`] to start.
    pub fn new(config: ConnectionConfig) -> Self {
        Connection {
            phase: Phase::Idle,
            epoch: 0,
            attempt: 0,
            backoff: Backoff::new(config.seed),
            heartbeat: Heartbeat::new(config.heartbeat),
            buckets: config.rate_limit.map(|r| r.buckets()),
            hold_until: None,
            last_data: None,
            metrics: Metrics::default(),
            actions: Deque::new(),
            events: Deque::new(),
            config,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &ConnectionConfig {
        &self.config
    }

    /// The current socket's epoch.
    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    /// The lifecycle state.
    pub fn state(&self) -> State {
        match self.phase {
            Phase::Idle => State::Idle,
            Phase::Connecting { .. } => State::Connecting,
            Phase::Open { .. } => State::Open,
            Phase::Closing { .. } => State::Closing,
            Phase::Backoff { .. } => State::Backoff,
            Phase::Stopped => State::Stopped,
            Phase::Failed(r) => State::Failed(r),
        }
    }

    /// `true` once stopped or failed: no more actions will come.
    pub fn is_terminated(&self) -> bool {
        matches!(self.phase, Phase::Stopped | Phase::Failed(_))
    }

    /// `true` while sends are accepted.
    pub fn is_open(&self) -> bool {
        matches!(self.phase, Phase::Open { .. })
    }

    fn push_action(&mut self, a: Action) {
        // Each input emits at most a few actions and the driver drains after
        // every input, so this never fills; if it did, keep the newest.
        if self.actions.push_back(a).is_err() {
            log::error!("zenws-core: action queue overflow, dropping oldest");
            self.actions.pop_front();
            let _ = self.actions.push_back(a);
        }
    }

    fn push_event(&mut self, e: Event) {
        if self.events.push_back(e).is_err() {
            log::warn!("zenws-core: event queue full, dropping oldest event");
            self.events.pop_front();
            let _ = self.events.push_back(e);
        }
    }

    /// Next socket action for the driver.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// Next event for the user.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Connection::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.phase {
            Phase::Connecting { deadline } | Phase::Closing { deadline } => Some(deadline),
            Phase::Backoff { until } => Some(until),
            Phase::Open { idle_deadline } => earliest(idle_deadline, self.heartbeat.poll_timeout()),
            Phase::Idle | Phase::Stopped | Phase::Failed(_) => None,
        }
    }

    /// Start connecting (from [`State::Idle`]; ignored otherwise).
    pub fn connect(&mut self, now: Instant) {
        if matches!(self.phase, Phase::Idle) {
            self.start_attempt(now);
        }
    }

    fn start_attempt(&mut self, now: Instant) {
        self.epoch = self.epoch.wrapping_add(1);
        if self.metrics.opens > 0 || self.attempt > 0 {
            self.metrics.reconnects = self.metrics.reconnects.saturating_add(1);
        }
        self.phase = Phase::Connecting {
            deadline: now + self.config.connect_timeout,
        };
        self.push_action(Action::Connect { epoch: self.epoch });
        self.push_event(Event::Connecting {
            epoch: self.epoch,
            attempt: self.attempt,
        });
    }

    fn live(&self, epoch: Epoch) -> bool {
        epoch == self.epoch
            && matches!(
                self.phase,
                Phase::Connecting { .. } | Phase::Open { .. } | Phase::Closing { .. }
            )
    }

    /// The socket of `epoch` finished its WebSocket handshake.
    pub fn handle_open(&mut self, now: Instant, epoch: Epoch) {
        if epoch != self.epoch || !matches!(self.phase, Phase::Connecting { .. }) {
            return;
        }
        self.attempt = 0;
        self.metrics.opens = self.metrics.opens.saturating_add(1);
        self.backoff.on_open(now);
        self.last_data = Some(now);
        self.phase = Phase::Open {
            idle_deadline: self.config.idle_timeout.map(|d| now + d),
        };
        self.push_event(Event::Opened { epoch });
        if let Some(frame) = self.heartbeat.on_open(now) {
            self.charge(now, &frame);
            self.push_action(Action::Send { epoch, frame });
        }
    }

    /// Count a core-generated frame against the rate limit without ever
    /// refusing it: heartbeats must not starve, but the server charges them
    /// (Deribit bills `public/test`), so user sends see the real budget.
    fn charge(&mut self, now: Instant, frame: &Frame) {
        if let (Some(b), Some(limit)) = (self.buckets.as_mut(), self.config.rate_limit.as_ref()) {
            b.charge(limit, now, &frame.encode().bytes);
        }
    }

    /// The server said its rate limit was hit (e.g. Deribit 10028, after
    /// which it closes the session): empty the rate-limit pools, so sends
    /// wait for the credits to refill, and hold any reconnect until then.
    /// Returns the wait (zero without a configured rate limit: then a
    /// reconnect waits at least the retry delay, as for any failure).
    pub fn throttle(&mut self, now: Instant) -> Duration {
        let wait = self
            .buckets
            .as_mut()
            .map_or(Duration::ZERO, |b| b.drain(now));
        if wait > Duration::ZERO {
            let until = now + wait;
            self.hold_until = Some(self.hold_until.map_or(until, |h| h.max(until)));
            if let Phase::Backoff { until: u } = self.phase {
                self.phase = Phase::Backoff {
                    until: u.max(until),
                };
            }
        }
        wait
    }

    /// The socket of `epoch` failed (connect refused, TLS rejected, reset, ...).
    /// The driver has already dropped it.
    pub fn handle_error(&mut self, now: Instant, epoch: Epoch, error: Error) {
        if !self.live(epoch) {
            return;
        }
        if matches!(self.phase, Phase::Closing { .. }) {
            // We were closing anyway: the user asked for it, so it ends normally.
            return self.finish(ExitReason::Normal);
        }
        self.lost(now, error);
    }

    /// The socket of `epoch` closed: the peer's close frame (`Some(code)`) or
    /// EOF without one (`None`). The driver has already dropped it.
    pub fn handle_closed(&mut self, now: Instant, epoch: Epoch, code: Option<u16>) {
        if !self.live(epoch) {
            return;
        }
        if matches!(self.phase, Phase::Closing { .. }) {
            return self.finish(ExitReason::Normal);
        }
        let error = match code {
            None => Error::ConnectionReset,
            Some(c) => Error::from_close_code(c).unwrap_or(Error::ClosedByPeer),
        };
        self.lost(now, error);
    }

    /// A socket is gone (or must go, `abort` = true) because of `error`:
    /// decide between backoff and exit.
    fn lost(&mut self, now: Instant, error: Error) {
        let was_open = matches!(self.phase, Phase::Open { .. });
        self.heartbeat.on_close();
        if was_open {
            self.backoff.on_close(now, &self.config.retry);
            self.push_event(Event::Disconnected {
                epoch: self.epoch,
                reason: error,
            });
        }
        if !error.is_transient() {
            return self.finish(ExitReason::Fatal(error));
        }
        match self.backoff.on_failure(now, &self.config.retry) {
            Some(delay) => {
                self.attempt = self.attempt.saturating_add(1);
                // Never before the server's rate limit lets us back in.
                let hold = self.hold_until.filter(|&h| h > now + delay);
                let delay = hold.map_or(delay, |h| h - now);
                self.phase = Phase::Backoff { until: now + delay };
                self.push_event(Event::Reconnecting {
                    attempt: self.attempt,
                    delay,
                    reason: error,
                });
            }
            None => self.finish(ExitReason::RetriesExhausted { last: error }),
        }
    }

    /// Drop the open (or connecting) socket of `epoch` because of `error`,
    /// decided above the connection (e.g. the session's authentication was
    /// refused): an [`Action::Abort`] with `code`, then backoff or exit as
    /// for any failure ([`Error::is_transient`]).
    pub fn abort(&mut self, now: Instant, epoch: Epoch, error: Error, code: u16) {
        if self.live(epoch) && !matches!(self.phase, Phase::Closing { .. }) {
            self.abort_and_lose(now, error, code);
        }
    }

    fn abort_and_lose(&mut self, now: Instant, error: Error, code: u16) {
        self.push_action(Action::Abort {
            epoch: self.epoch,
            code,
        });
        self.lost(now, error);
    }

    fn finish(&mut self, reason: ExitReason) {
        self.heartbeat.on_close();
        self.phase = match reason {
            ExitReason::Normal => Phase::Stopped,
            r => Phase::Failed(r),
        };
        self.push_event(Event::Exited(reason));
    }

    /// A data message arrived on `epoch`. Returns what to do with it.
    pub fn handle_message(&mut self, now: Instant, epoch: Epoch, data: &[u8]) -> Delivery {
        if epoch != self.epoch || !matches!(self.phase, Phase::Open { .. } | Phase::Closing { .. })
        {
            return Delivery::Stale;
        }
        let closing = matches!(self.phase, Phase::Closing { .. });
        if data.len() > self.config.max_message_size {
            if closing {
                // The user is closing anyway: drop the socket, end normally.
                self.push_action(Action::Abort { epoch, code: 1009 });
                self.finish(ExitReason::Normal);
            } else {
                self.abort_and_lose(now, Error::MessageTooLarge, 1009);
            }
            return Delivery::Stale;
        }
        let inbound = self.heartbeat.on_message(now, data);
        if let Some(code) = inbound.setup_failed {
            self.push_event(Event::HeartbeatSetupFailed { code });
        }
        if let Some(frame) = inbound.reply {
            // Once our close frame is out, no more data frames (RFC 6455
            // §5.5.1): a heartbeat reply while closing is dropped. Replies
            // not yet carried out are coalesced: one `public/test` answers
            // every `test_request` that arrived before it went out, so a
            // burst of them (one read can hold thousands) neither floods the
            // queue nor the server.
            let queued = self.actions.iter().any(|a| {
                matches!(a, Action::Send { epoch: e, frame: f } if *e == epoch
                    && core::mem::discriminant(f) == core::mem::discriminant(&frame))
            });
            if !closing && !queued {
                self.charge(now, &frame);
                self.push_action(Action::Send { epoch, frame });
            }
        }
        if inbound.consumed {
            return Delivery::Consumed;
        }
        self.last_data = Some(now);
        if let Phase::Open {
            idle_deadline: Some(_),
        } = self.phase
        {
            self.phase = Phase::Open {
                idle_deadline: self.config.idle_timeout.map(|d| now + d),
            };
        }
        self.metrics.messages_in = self.metrics.messages_in.saturating_add(1);
        Delivery::Deliver
    }

    /// A pong arrived on `epoch`.
    pub fn handle_pong(&mut self, now: Instant, epoch: Epoch, payload: &[u8]) {
        if epoch == self.epoch && matches!(self.phase, Phase::Open { .. }) {
            self.heartbeat.on_pong(now, payload);
        }
    }

    /// A ping arrived on `epoch`: returns `true` if a pong with the same
    /// payload must be sent now (the driver sends it; tungstenite does this
    /// on its own, in which case the answer is informational).
    pub fn handle_ping(&mut self, _now: Instant, epoch: Epoch, payload: &[u8]) -> bool {
        self.live(epoch) && payload.len() <= 125
    }

    /// May the user send `data` now? `pending_bytes` is what the socket
    /// still has to write. On `Ok` the driver writes it; on `Err` the caller
    /// still owns the message: nothing is queued or dropped silently.
    pub fn handle_send(
        &mut self,
        now: Instant,
        data: &[u8],
        pending_bytes: usize,
    ) -> Result<(), SendError> {
        match self.phase {
            Phase::Open { .. } => {}
            Phase::Stopped | Phase::Failed(_) => return Err(SendError::Stopped),
            _ => return Err(SendError::NotConnected),
        }
        if data.len() > self.config.max_message_size {
            return Err(SendError::MessageTooLarge);
        }
        if pending_bytes > 0
            && pending_bytes.saturating_add(data.len()) > self.config.max_pending_bytes
        {
            return Err(SendError::QueueFull);
        }
        if let (Some(b), Some(limit)) = (self.buckets.as_mut(), self.config.rate_limit.as_ref()) {
            b.try_acquire(limit, now, data)
                .map_err(|retry_after| SendError::RateLimited { retry_after })?;
        }
        self.metrics.messages_out = self.metrics.messages_out.saturating_add(1);
        Ok(())
    }

    /// The user closes the client: a normal exit, never restarted by a
    /// transient policy. Open → close handshake (1000); otherwise at once.
    pub fn close(&mut self, now: Instant) {
        match self.phase {
            Phase::Open { .. } => {
                self.heartbeat.on_close();
                self.phase = Phase::Closing {
                    deadline: now + self.config.close_timeout,
                };
                self.push_action(Action::Close {
                    epoch: self.epoch,
                    code: 1000,
                });
            }
            Phase::Connecting { .. } => {
                self.push_action(Action::Abort {
                    epoch: self.epoch,
                    code: 1001,
                });
                self.finish(ExitReason::Normal);
            }
            Phase::Idle | Phase::Backoff { .. } => self.finish(ExitReason::Normal),
            Phase::Closing { .. } | Phase::Stopped | Phase::Failed(_) => {}
        }
    }

    /// Timers: connect/close deadlines, backoff expiry, heartbeat, idle.
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.phase {
            Phase::Connecting { deadline } if now >= deadline => {
                self.abort_and_lose(now, Error::ConnectTimeout, 1001)
            }
            Phase::Backoff { until } if now >= until => self.start_attempt(now),
            Phase::Closing { deadline } if now >= deadline => {
                self.push_action(Action::Abort {
                    epoch: self.epoch,
                    code: 1000,
                });
                self.finish(ExitReason::Normal);
            }
            Phase::Open { idle_deadline } => {
                if idle_deadline.is_some_and(|d| now >= d) {
                    return self.abort_and_lose(now, Error::IdleTimeout, 1011);
                }
                let tick = self.heartbeat.handle_timeout(now);
                if let Some(consecutive) = tick.missed {
                    self.push_event(Event::HeartbeatMissed { consecutive });
                }
                if tick.dead {
                    self.push_event(Event::HeartbeatFailed);
                    return self.abort_and_lose(now, Error::HeartbeatFailed, 1011);
                }
                if let Some(frame) = tick.send {
                    // A retried `set_heartbeat` is a request the server
                    // charges, like the first one (pings are not).
                    if matches!(frame, Frame::AppSetup { .. }) {
                        self.charge(now, &frame);
                    }
                    self.push_action(Action::Send {
                        epoch: self.epoch,
                        frame,
                    });
                }
            }
            _ => {}
        }
    }

    /// Begin a fresh incarnation (a supervisor restart): new retry ladder
    /// and heartbeat state; the epoch keeps counting so nothing from an old
    /// socket can act on the new one. The rate-limit pools carry over (the
    /// server counts per account). Connects at `at`, or when a rate-limit
    /// hold ends if that is later.
    pub fn restart(&mut self, now: Instant, at: Instant) {
        if self.live(self.epoch) {
            self.push_action(Action::Abort {
                epoch: self.epoch,
                code: 1001,
            });
        }
        self.backoff = Backoff::new(self.config.seed ^ u64::from(self.metrics.restarts + 1));
        self.heartbeat = Heartbeat::new(self.config.heartbeat);
        self.attempt = 0;
        self.metrics.restarts = self.metrics.restarts.saturating_add(1);
        let at = self.hold_until.map_or(at, |h| h.max(at));
        if at <= now {
            self.start_attempt(now);
        } else {
            self.phase = Phase::Backoff { until: at };
        }
    }

    /// Health snapshot.
    pub fn health(&self) -> Health {
        let status = match self.phase {
            Phase::Open { .. } if self.heartbeat.consecutive_failures() > 0 => {
                HealthStatus::Degraded
            }
            Phase::Open { .. } => HealthStatus::Healthy,
            Phase::Stopped => HealthStatus::Stopped,
            Phase::Failed(_) => HealthStatus::Failed,
            _ => HealthStatus::Disconnected,
        };
        let rtt = self.heartbeat.rtt();
        Health {
            status,
            last_heartbeat: self.heartbeat.last_seen(),
            last_data: self.last_data,
            consecutive_failures: self.heartbeat.consecutive_failures(),
            total_failures: self.heartbeat.total_failures(),
            rtt_last: rtt.last(),
            rtt_min: rtt.min(),
            rtt_p50: rtt.p50(),
            rtt_p99: rtt.p99(),
        }
    }

    /// Counters.
    pub fn metrics(&self) -> Metrics {
        Metrics {
            rtt_p50: self.heartbeat.rtt().p50(),
            rtt_p99: self.heartbeat.rtt().p99(),
            ..self.metrics
        }
    }
}

#[cfg(test)]
#[path = "connection_tests.rs"]
mod tests;
