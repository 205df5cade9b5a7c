//! Heartbeats that act: detect a dead peer and say so.
//!
//! Three strategies, one contract: after `failure_threshold` consecutive
//! misses the peer is declared dead and the connection aborts and reconnects.
//! A silent peer is detected no later than
//! `interval × failure_threshold + timeout` after its last sign of life
//! (for Deribit, `timeout` is the grace period).
//!
//! - [`Strategy::Ping`]: WebSocket pings with unique 8-byte payloads on a
//!   fixed cadence; a pong carrying the outstanding token is the only sign
//!   of life (an unsolicited or stale pong is ignored). Measures RTT.
//! - [`Strategy::Application`]: on open, ask the server for heartbeats in
//!   the exchange's [`Dialect`] (Deribit: `public/set_heartbeat`); answer
//!   each test request (Deribit `test_request`: `public/test`) at once; every
//!   server heartbeat is a sign of life; none within `interval + grace` is a
//!   miss. A refused setup is asked again with backoff, and the silence
//!   meanwhile is not counted.
//! - [`Strategy::Custom`]: a fixed payload and a matcher recognising replies.
//!
//! Heartbeat state lives per socket: [`Heartbeat::on_open`] resets it, so a
//! heartbeat is never replayed onto a replacement connection.

use crate::frame::{Frame, FrameKind, CORE_ID_BASE, SESSION_ID_BASE};
use crate::json::{self, JsonRpcView};
use crate::rtt::RttWindow;
use crate::time::Instant;
use core::fmt;
use core::time::Duration;

/// How liveness is checked.
#[derive(Clone, Copy, Debug)]
pub enum Strategy {
    /// No heartbeat (the idle timeout may still apply).
    None,
    /// WebSocket ping every `interval`; a pong must come within `timeout`
    /// (clamped to `interval`: one ping outstanding at a time).
    Ping {
        /// Time between pings.
        interval: Duration,
        /// How long a ping may stay unanswered before it counts as a miss.
        timeout: Duration,
    },
    /// An application heartbeat the server sends after a setup request, in
    /// an exchange's dialect (Deribit's `public/set_heartbeat`:
    /// [`exchange::deribit::heartbeat`](crate::exchange::deribit::heartbeat)).
    Application {
        /// Seconds between server heartbeats (raised to the dialect's minimum).
        interval_secs: u32,
        /// Extra time after `interval` before a missing heartbeat counts as a miss.
        grace: Duration,
        /// How the exchange asks for, sends and expects answers to heartbeats.
        dialect: &'static Dialect,
    },
    /// A custom application ping.
    Custom {
        /// Time between pings.
        interval: Duration,
        /// How long a ping may stay unanswered.
        timeout: Duration,
        /// Payload of the ping.
        payload: &'static [u8],
        /// Sent as text, binary or a WebSocket ping.
        kind: FrameKind,
        /// Recognises the peer's reply among incoming data messages.
        is_reply: fn(&[u8]) -> bool,
    },
}

/// What an incoming message is to an application heartbeat.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Beat {
    /// Not heartbeat traffic.
    Other,
    /// A heartbeat: a sign of life.
    Alive,
    /// A heartbeat that must be answered at once ([`Dialect::reply`]).
    TestRequest,
}

/// An exchange's application-heartbeat dialect, defined in its
/// [`exchange`](crate::exchange) module (e.g.
/// [`deribit::DIALECT`](crate::exchange::deribit::DIALECT)): a new exchange
/// with such a heartbeat adds one of these in its own file.
#[derive(Clone, Copy)]
pub struct Dialect {
    /// For `Debug` and equality.
    pub name: &'static str,
    /// The smallest interval the server accepts (a smaller one is raised).
    pub min_interval_secs: u32,
    /// Render the request that starts the server's heartbeats, with id `id`.
    pub setup: fn(&mut dyn fmt::Write, u64, u32) -> fmt::Result,
    /// What an incoming message is.
    pub classify: fn(&JsonRpcView<'_>) -> Beat,
    /// Render the answer to a [`Beat::TestRequest`], with id `id`.
    pub reply: fn(&mut dyn fmt::Write, u64) -> fmt::Result,
}

impl fmt::Debug for Dialect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}

/// Dialects are equal by name (function pointers are not compared).
impl PartialEq for Dialect {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for Dialect {}

/// Heartbeat configuration: a [`Strategy`] and a failure threshold.
///
/// Built with [`HeartbeatConfig::ping`], [`deribit`](HeartbeatConfig::deribit),
/// [`none`](HeartbeatConfig::none) or [`new`](HeartbeatConfig::new) (any
/// strategy, e.g. [`Strategy::Custom`]), then
/// [`with_failure_threshold`](HeartbeatConfig::with_failure_threshold)
/// (`#[non_exhaustive]`: a field added later breaks nobody).
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct HeartbeatConfig {
    /// The strategy.
    pub strategy: Strategy,
    /// Consecutive misses that declare the peer dead (default 2, minimum 1).
    pub failure_threshold: u32,
}

impl Default for HeartbeatConfig {
    /// Ping every 15 s, 10 s pong timeout, dead after 2 misses.
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl HeartbeatConfig {
    /// The default (ping every 15 s, 10 s pong timeout, dead after 2
    /// misses), usable in `const` context.
    pub const DEFAULT: HeartbeatConfig =
        HeartbeatConfig::ping(Duration::from_secs(15), Duration::from_secs(10));

    /// This strategy, dead after 2 misses.
    pub const fn new(strategy: Strategy) -> Self {
        HeartbeatConfig {
            strategy,
            failure_threshold: 2,
        }
    }

    /// Set the strategy.
    #[must_use]
    pub const fn with_strategy(mut self, strategy: Strategy) -> Self {
        self.strategy = strategy;
        self
    }

    /// Set the consecutive misses that declare the peer dead (minimum 1).
    #[must_use]
    pub const fn with_failure_threshold(mut self, misses: u32) -> Self {
        self.failure_threshold = misses;
        self
    }

    /// No heartbeat.
    pub const fn none() -> Self {
        HeartbeatConfig {
            strategy: Strategy::None,
            failure_threshold: 2,
        }
    }
    /// WebSocket ping/pong.
    pub const fn ping(interval: Duration, timeout: Duration) -> Self {
        HeartbeatConfig {
            strategy: Strategy::Ping { interval, timeout },
            failure_threshold: 2,
        }
    }
    /// Deribit heartbeat with a grace of 5 s (the same as
    /// [`exchange::deribit::heartbeat`](crate::exchange::deribit::heartbeat)).
    pub const fn deribit(interval_secs: u32) -> Self {
        crate::exchange::deribit::heartbeat(interval_secs)
    }
    /// An application heartbeat in `dialect`, every `interval_secs`, a miss
    /// after `interval + grace` of silence.
    pub const fn application(
        interval_secs: u32,
        grace: Duration,
        dialect: &'static Dialect,
    ) -> Self {
        HeartbeatConfig {
            strategy: Strategy::Application {
                interval_secs,
                grace,
                dialect,
            },
            failure_threshold: 2,
        }
    }
    /// The worst-case time from the last sign of life to declaring the peer
    /// dead: `interval × threshold + timeout`. `None` without a heartbeat.
    pub fn detection_bound(&self) -> Option<Duration> {
        let th = self.failure_threshold.max(1);
        let (interval, timeout) = match self.strategy {
            Strategy::None => return None,
            Strategy::Ping { interval, timeout }
            | Strategy::Custom {
                interval, timeout, ..
            } => (interval, timeout.min(interval)),
            Strategy::Application {
                interval_secs,
                grace,
                dialect,
            } => (
                Duration::from_secs(u64::from(interval_secs.max(dialect.min_interval_secs))),
                grace,
            ),
        };
        Some(interval.saturating_mul(th).saturating_add(timeout))
    }
}

/// What a timer tick decided.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tick {
    /// A frame to send now.
    pub send: Option<Frame>,
    /// A miss was counted: this many in a row.
    pub missed: Option<u32>,
    /// The threshold was reached: abort the connection.
    pub dead: bool,
}

/// What an incoming data message meant to the heartbeat.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Inbound {
    /// Heartbeat traffic: don't deliver it to the user.
    pub consumed: bool,
    /// A reply to send at once (Deribit `public/test`).
    pub reply: Option<Frame>,
    /// The server refused the heartbeat setup (Deribit `set_heartbeat`)
    /// with this error code; it is asked again after a delay.
    pub setup_failed: Option<i64>,
}

/// Per-connection heartbeat state.
#[derive(Clone, Debug)]
pub struct Heartbeat {
    config: HeartbeatConfig,
    /// When the next ping goes out (Ping/Custom) or the next miss is due (Deribit).
    next: Option<Instant>,
    /// Outstanding ping: (token, sent at).
    outstanding: Option<(u64, Instant)>,
    next_token: u64,
    next_id: u64,
    consecutive: u32,
    total: u32,
    last_seen: Option<Instant>,
    rtt: RttWindow<16>,
    /// Deribit: the `set_heartbeat` request awaiting its answer.
    setup_id: Option<u64>,
    /// Deribit: ask again (after a refused setup) at this instant.
    setup_retry: Option<Instant>,
    /// Deribit: refused setups in a row (for the retry delay).
    setup_failures: u32,
}

impl Heartbeat {
    /// Fresh state for `config`.
    pub fn new(config: HeartbeatConfig) -> Self {
        Heartbeat {
            config,
            next: None,
            outstanding: None,
            next_token: 1,
            next_id: CORE_ID_BASE,
            consecutive: 0,
            total: 0,
            last_seen: None,
            rtt: RttWindow::new(),
            setup_id: None,
            setup_retry: None,
            setup_failures: 0,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &HeartbeatConfig {
        &self.config
    }

    fn threshold(&self) -> u32 {
        self.config.failure_threshold.max(1)
    }

    /// A new socket opened: start the schedule; may return a frame to send
    /// (Deribit's `set_heartbeat`). Anything outstanding from the previous
    /// socket is forgotten.
    pub fn on_open(&mut self, now: Instant) -> Option<Frame> {
        self.outstanding = None;
        self.consecutive = 0;
        self.last_seen = Some(now);
        self.setup_retry = None;
        self.setup_failures = 0;
        match self.config.strategy {
            Strategy::None => {
                self.next = None;
                None
            }
            Strategy::Ping { interval, .. } | Strategy::Custom { interval, .. } => {
                self.next = Some(now + interval);
                None
            }
            Strategy::Application {
                interval_secs,
                grace,
                dialect,
            } => {
                let secs = interval_secs.max(dialect.min_interval_secs);
                self.next = Some(now + Duration::from_secs(u64::from(secs)) + grace);
                Some(self.setup_frame(secs, dialect))
            }
        }
    }

    fn setup_frame(&mut self, interval_secs: u32, dialect: &'static Dialect) -> Frame {
        let id = self.take_id();
        self.setup_id = Some(id);
        Frame::AppSetup {
            id,
            interval_secs,
            dialect,
        }
    }

    /// The socket closed: stop all timers.
    pub fn on_close(&mut self) {
        self.next = None;
        self.outstanding = None;
        self.setup_id = None;
        self.setup_retry = None;
    }

    fn take_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        if self.next_id >= SESSION_ID_BASE {
            self.next_id = CORE_ID_BASE;
        }
        id
    }

    /// When [`Heartbeat::handle_timeout`] must run next.
    ///
    /// While a ping is outstanding nothing can happen before its pong is
    /// due (the next ping waits for it), so that is the deadline even if the
    /// next ping's slot has already passed (a late tick): reporting the past
    /// slot would make the caller spin until the pong is due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match (self.outstanding, self.config.strategy) {
            (Some((_, sent)), Strategy::Ping { timeout, interval })
            | (
                Some((_, sent)),
                Strategy::Custom {
                    timeout, interval, ..
                },
            ) => Some(sent + timeout.min(interval)),
            _ => crate::time::earliest(self.next, self.setup_retry),
        }
    }

    fn miss(&mut self, tick: &mut Tick) {
        self.consecutive = self.consecutive.saturating_add(1);
        self.total = self.total.saturating_add(1);
        tick.missed = Some(self.consecutive);
        if self.consecutive >= self.threshold() {
            tick.dead = true;
        }
    }

    /// Advance timers to `now`.
    pub fn handle_timeout(&mut self, now: Instant) -> Tick {
        let mut tick = Tick::default();
        match self.config.strategy {
            Strategy::None => {}
            Strategy::Ping { interval, timeout }
            | Strategy::Custom {
                interval, timeout, ..
            } => {
                if let Some((_, sent)) = self.outstanding {
                    if now >= sent + timeout.min(interval) {
                        self.outstanding = None;
                        self.miss(&mut tick);
                        if tick.dead {
                            self.next = None;
                            return tick;
                        }
                    }
                }
                if let Some(next) = self.next {
                    if now >= next && self.outstanding.is_none() {
                        let token = self.next_token;
                        self.next_token = self.next_token.wrapping_add(1);
                        self.outstanding = Some((token, now));
                        // Fixed cadence from the scheduled time keeps the detection bound.
                        self.next = Some(next + interval);
                        tick.send = Some(match self.config.strategy {
                            Strategy::Custom { payload, kind, .. } => {
                                Frame::Custom { payload, kind }
                            }
                            _ => Frame::Ping { token },
                        });
                    }
                }
            }
            Strategy::Application {
                interval_secs,
                dialect,
                ..
            } => {
                let interval_secs = interval_secs.max(dialect.min_interval_secs);
                if self.setup_retry.is_some_and(|t| now >= t) {
                    self.setup_retry = None;
                    tick.send = Some(self.setup_frame(interval_secs, dialect));
                }
                if let Some(next) = self.next {
                    if now >= next {
                        // A late tick counts every slot that has passed, so
                        // the next deadline is in the future (no catch-up storm
                        // of immediate timeouts).
                        let interval = Duration::from_secs(u64::from(interval_secs.max(1)));
                        let step = interval.as_nanos() as u64; // ≥ 1 s, fits
                        let slots = (now - next).as_nanos() as u64 / step + 1;
                        let slots = u32::try_from(slots).unwrap_or(u32::MAX);
                        self.consecutive = self.consecutive.saturating_add(slots - 1);
                        self.total = self.total.saturating_add(slots - 1);
                        self.miss(&mut tick);
                        self.next = if tick.dead {
                            None
                        } else {
                            Some(next + interval.saturating_mul(slots))
                        };
                    }
                }
            }
        }
        tick
    }

    fn alive(&mut self, now: Instant) {
        self.consecutive = 0;
        self.last_seen = Some(now);
    }

    /// A pong arrived. Only the outstanding token counts (Ping strategy), or
    /// any pong while a Custom ping of kind `Ping` is outstanding.
    pub fn on_pong(&mut self, now: Instant, payload: &[u8]) {
        let Some((token, sent)) = self.outstanding else {
            return;
        };
        let matches = match self.config.strategy {
            Strategy::Ping { .. } => Frame::ping_token(payload) == Some(token),
            Strategy::Custom {
                kind: FrameKind::Ping,
                ..
            } => true,
            _ => false,
        };
        if matches {
            self.outstanding = None;
            self.rtt.record(now - sent);
            self.alive(now);
        }
    }

    /// A data message arrived: is it heartbeat traffic, and must we answer?
    pub fn on_message(&mut self, now: Instant, data: &[u8]) -> Inbound {
        match self.config.strategy {
            Strategy::Application {
                interval_secs,
                grace,
                dialect,
            } => {
                let interval_secs = interval_secs.max(dialect.min_interval_secs);
                let Ok(view) = json::scan(data) else {
                    return Inbound::default();
                };
                let beat = (dialect.classify)(&view);
                if beat != Beat::Other {
                    self.alive(now);
                    let interval = Duration::from_secs(u64::from(interval_secs));
                    self.next = Some(now + interval + grace);
                    let reply = (beat == Beat::TestRequest).then(|| Frame::AppReply {
                        id: self.take_id(),
                        dialect,
                    });
                    return Inbound {
                        consumed: true,
                        reply,
                        setup_failed: None,
                    };
                }
                // Answers to our own set_heartbeat / public/test requests.
                let ours = view
                    .id
                    .is_some_and(|id| (CORE_ID_BASE..SESSION_ID_BASE).contains(&id));
                let mut setup_failed = None;
                if ours && view.id == self.setup_id {
                    self.setup_id = None;
                    if view.has_error {
                        // No heartbeats will come: ask again after a delay
                        // (1, 2, 4 … s, at most the interval) and don't count
                        // the silence as misses meanwhile.
                        let interval = Duration::from_secs(u64::from(interval_secs));
                        let delay =
                            Duration::from_secs(1u64 << self.setup_failures.min(5)).min(interval);
                        self.setup_failures = self.setup_failures.saturating_add(1);
                        self.setup_retry = Some(now + delay);
                        self.next = Some(now + delay + interval + grace);
                        setup_failed = Some(view.error_code.unwrap_or(0));
                    } else {
                        self.setup_failures = 0;
                    }
                }
                Inbound {
                    consumed: ours,
                    reply: None,
                    setup_failed,
                }
            }
            Strategy::Custom { is_reply, .. } => {
                if is_reply(data) {
                    if let Some((_, sent)) = self.outstanding.take() {
                        self.rtt.record(now - sent);
                    }
                    self.alive(now);
                    Inbound {
                        consumed: true,
                        ..Inbound::default()
                    }
                } else {
                    Inbound::default()
                }
            }
            _ => Inbound::default(),
        }
    }

    /// Consecutive misses right now.
    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive
    }
    /// Misses over the connection's life.
    pub fn total_failures(&self) -> u32 {
        self.total
    }
    /// Last sign of life from the peer.
    pub fn last_seen(&self) -> Option<Instant> {
        self.last_seen
    }
    /// Round-trip samples (Ping and Custom strategies).
    pub fn rtt(&self) -> &RttWindow<16> {
        &self.rtt
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Instant {
        Instant::from_millis(n)
    }

    #[test]
    fn ping_pong_measures_rtt_and_resets_failures() {
        let mut hb = Heartbeat::new(HeartbeatConfig::ping(
            Duration::from_millis(100),
            Duration::from_millis(50),
        ));
        assert_eq!(hb.on_open(ms(0)), None);
        assert_eq!(hb.poll_timeout(), Some(ms(100)));
        let t = hb.handle_timeout(ms(100));
        let Some(Frame::Ping { token }) = t.send else {
            panic!("{t:?}")
        };
        hb.on_pong(ms(103), &token.to_be_bytes());
        assert_eq!(hb.rtt().last(), Some(Duration::from_millis(3)));
        assert_eq!(hb.consecutive_failures(), 0);
    }

    #[test]
    fn stale_pong_is_ignored_and_two_misses_kill() {
        let mut hb = Heartbeat::new(HeartbeatConfig::ping(
            Duration::from_millis(100),
            Duration::from_millis(50),
        ));
        hb.on_open(ms(0));
        let t = hb.handle_timeout(ms(100));
        assert!(t.send.is_some());
        hb.on_pong(ms(110), &999u64.to_be_bytes()); // not ours
        let t = hb.handle_timeout(ms(150));
        assert_eq!(t.missed, Some(1));
        assert!(!t.dead);
        let t = hb.handle_timeout(ms(200));
        assert!(t.send.is_some());
        let t = hb.handle_timeout(ms(250));
        assert_eq!(t.missed, Some(2));
        assert!(t.dead);
        assert_eq!(hb.poll_timeout(), None);
        // detection bound: 100 × 2 + 50 = 250 after last sign of life at 0.
        assert_eq!(
            hb.config().detection_bound(),
            Some(Duration::from_millis(250))
        );
    }

    #[test]
    fn deribit_sets_heartbeat_answers_test_request_and_counts_misses() {
        let mut hb = Heartbeat::new(HeartbeatConfig::deribit(10));
        let Some(Frame::AppSetup {
            interval_secs: 10,
            id,
            ..
        }) = hb.on_open(ms(0))
        else {
            panic!()
        };
        assert!(id >= CORE_ID_BASE);
        let r = hb.on_message(
            ms(10_000),
            br#"{"jsonrpc":"2.0","method":"heartbeat","params":{"type":"test_request"}}"#,
        );
        assert!(r.consumed);
        assert!(matches!(r.reply, Some(Frame::AppReply { .. })));
        let r = hb.on_message(
            ms(10_001),
            br#"{"jsonrpc":"2.0","id":9000000000001,"result":"ok"}"#,
        );
        assert!(r.consumed);
        let r = hb.on_message(ms(10_002), br#"{"jsonrpc":"2.0","id":5,"result":"ok"}"#);
        assert!(!r.consumed);
        assert_eq!(hb.poll_timeout(), Some(ms(25_000)));
        assert_eq!(hb.handle_timeout(ms(25_000)).missed, Some(1));
        let t = hb.handle_timeout(ms(35_000));
        assert!(t.dead);
        // 10 s × 2 + 5 s after the last heartbeat at 10 s.
        assert_eq!(
            ms(35_000) - ms(10_000),
            hb.config().detection_bound().unwrap()
        );
    }

    fn refused(id: u64) -> std::string::String {
        std::format!(
            r#"{{"jsonrpc":"2.0","id":{id},"error":{{"code":11050,"message":"bad_request"}}}}"#
        )
    }

    fn setup_id(f: Option<Frame>) -> u64 {
        match f {
            Some(Frame::AppSetup {
                id,
                interval_secs: 10,
                ..
            }) => id,
            f => panic!("{f:?}"),
        }
    }

    #[test]
    fn refused_set_heartbeat_is_retried_with_growing_delay_and_never_counted_as_misses() {
        let mut hb = Heartbeat::new(HeartbeatConfig::deribit(10));
        let mut id = setup_id(hb.on_open(ms(0)));
        let mut now = ms(0);
        let mut delays = std::vec::Vec::new();
        for _ in 0..8 {
            now = now + Duration::from_millis(50);
            let r = hb.on_message(now, refused(id).as_bytes());
            assert_eq!(
                r,
                Inbound {
                    consumed: true,
                    reply: None,
                    setup_failed: Some(11050)
                }
            );
            let due = hb.poll_timeout().unwrap();
            delays.push(due - now);
            let early = hb.handle_timeout(Instant::from_nanos(due.as_nanos() - 1));
            assert_eq!(early, Tick::default());
            let tick = hb.handle_timeout(due);
            assert_eq!(
                tick.missed, None,
                "the silence of a refused setup is no miss"
            );
            assert!(!tick.dead);
            let next = setup_id(tick.send);
            assert!(next != id && (CORE_ID_BASE..SESSION_ID_BASE).contains(&next));
            id = next;
            now = due;
        }
        let s = Duration::from_secs;
        assert_eq!(delays, [s(1), s(2), s(4), s(8), s(10), s(10), s(10), s(10)]);
        assert_eq!((hb.consecutive_failures(), hb.total_failures()), (0, 0));
        // A new socket starts the ladder again.
        let id = setup_id(hb.on_open(ms(100_000)));
        hb.on_message(ms(100_000), refused(id).as_bytes());
        assert_eq!(hb.poll_timeout(), Some(ms(101_000)));
    }

    #[test]
    fn only_the_current_setup_answer_counts() {
        let mut hb = Heartbeat::new(HeartbeatConfig::deribit(10));
        let first = setup_id(hb.on_open(ms(0)));
        hb.on_message(ms(10), refused(first).as_bytes());
        let second = setup_id(hb.handle_timeout(ms(1_010)).send);
        // A repeated error for the first request: consumed, not a second failure.
        let r = hb.on_message(ms(1_020), refused(first).as_bytes());
        assert_eq!(
            r,
            Inbound {
                consumed: true,
                reply: None,
                setup_failed: None
            }
        );
        assert_eq!(
            hb.poll_timeout(),
            Some(ms(1_010 + 15_000)),
            "no retry scheduled"
        );
        // Success: heartbeats are expected from now on.
        let ok = std::format!(r#"{{"jsonrpc":"2.0","id":{second},"result":"ok"}}"#);
        assert_eq!(hb.on_message(ms(1_030), ok.as_bytes()).setup_failed, None);
    }

    #[test]
    fn an_unanswered_retry_is_counted_after_interval_and_grace() {
        let mut hb = Heartbeat::new(HeartbeatConfig::deribit(10));
        let id = setup_id(hb.on_open(ms(0)));
        hb.on_message(ms(50), refused(id).as_bytes());
        setup_id(hb.handle_timeout(ms(1_050)).send);
        // The server never answers, never sends a heartbeat.
        assert_eq!(hb.poll_timeout(), Some(ms(16_050)));
        assert_eq!(hb.handle_timeout(ms(16_050)).missed, Some(1));
        assert!(hb.handle_timeout(ms(26_050)).dead);
        // Closing forgets the retry.
        let mut hb = Heartbeat::new(HeartbeatConfig::deribit(10));
        let id = setup_id(hb.on_open(ms(0)));
        hb.on_message(ms(50), refused(id).as_bytes());
        hb.on_close();
        assert_eq!(hb.poll_timeout(), None);
    }

    #[test]
    fn custom_strategy_matches_replies() {
        let cfg = HeartbeatConfig {
            strategy: Strategy::Custom {
                interval: Duration::from_millis(100),
                timeout: Duration::from_millis(50),
                payload: b"ping",
                kind: FrameKind::Text,
                is_reply: |m| m == b"pong",
            },
            failure_threshold: 1,
        };
        let mut hb = Heartbeat::new(cfg);
        hb.on_open(ms(0));
        let t = hb.handle_timeout(ms(100));
        assert_eq!(
            t.send,
            Some(Frame::Custom {
                payload: b"ping",
                kind: FrameKind::Text
            })
        );
        assert!(hb.on_message(ms(120), b"pong").consumed);
        assert!(!hb.on_message(ms(120), b"data").consumed);
        assert_eq!(hb.rtt().last(), Some(Duration::from_millis(20)));
        hb.handle_timeout(ms(200));
        assert!(hb.handle_timeout(ms(250)).dead);
    }
}
