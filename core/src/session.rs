//! The session layer: what must be true after every (re)connect, for any
//! exchange.
//!
//! After each open the session runs its on-open steps in order:
//!
//! 1. **authenticate** (when the [`Protocol`] has credentials) and wait for
//!    the answer: success reads the token's lifetime and schedules a
//!    refresh `refresh_margin` before it expires; a transient error (busy,
//!    maintenance) is retried on the same socket with backoff; a rate limit
//!    waits for the credits; only a fatal error (bad credentials) fails the
//!    client;
//! 2. the **steps after authentication** ([`Protocol::after_auth_steps`],
//!    e.g. Deribit's cancel-on-disconnect), each answered;
//! 3. **restore subscriptions** in batches of `batch_size`, `pacing` apart,
//!    public and private channels in separate requests, channels that need
//!    authentication only when authenticated. Every channel is **confirmed
//!    from the answer**: [`SessionEvent::Restored`] comes when every
//!    requested channel was answered, with how many were granted and
//!    rejected, and every rejection is reported on its own
//!    ([`SessionEvent::SubscriptionRejected`]) — none is dropped silently.
//!
//! While open it refreshes the token on time (falling back to the
//! credentials when a refresh is refused) and correlates the user's JSON-RPC
//! requests: each answer resolves its request, typed (result or error code);
//! a deadline times it out; a disconnect fails every pending request.
//!
//! **Ids.** The user's request ids must stay below
//! [`CORE_ID_BASE`] ([`TrackError::Reserved`]
//! otherwise); the session's own requests use ids from [`SESSION_ID_BASE`]
//! and the heartbeat's from `CORE_ID_BASE`, so no answer is ever taken for
//! someone else's.
//!
//! The session renders its messages through the [`Protocol`] into a buffer
//! the caller owns ([`Session::poll_transmit`]); it never allocates. It is
//! normally driven by [`Client`](crate::client::Client), which also applies
//! the connection's admission (rate limit, queue bound) to every message.

use crate::connection::Epoch;
use crate::error::Error;
use crate::exchange::{ChannelKind, ErrorClass, Grant, Protocol, Request};
use crate::frame::CORE_ID_BASE;
use crate::json::{self, JsonRpcView};
use crate::requests::Requests;
pub use crate::requests::TrackError;
use crate::time::{earliest, Instant};
use core::fmt;
use core::time::Duration;
use heapless::Deque;

pub use crate::frame::SESSION_ID_BASE;

/// The soonest a token refresh is scheduled after an authentication answer.
pub const MIN_REFRESH_DELAY: Duration = Duration::from_secs(1);

/// Largest refresh token kept (longer ones are not stored: the session
/// re-authenticates with the credentials instead).
pub const REFRESH_TOKEN_CAP: usize = 512;

/// Longest error message kept from an answer (longer ones are cut at a
/// character boundary).
pub const ERROR_MESSAGE_CAP: usize = 64;

/// How subscriptions come back after a reconnect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Restore {
    /// The session subscribes the tracked channels after every open (default).
    Auto,
    /// Nothing is restored; the user handles `Opened` themselves.
    Off,
}

/// Session configuration: [`Default`] plus the chainable `with_*` methods
/// (`#[non_exhaustive]`: a field added later breaks nobody).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SessionConfig {
    /// Subscription restoration policy.
    pub restore: Restore,
    /// Channels per subscribe request (default 20).
    pub batch_size: usize,
    /// Delay between subscribe batches (default 0).
    pub pacing: Duration,
    /// Deadline for every request, the session's own and the user's (default 30 s).
    pub request_timeout: Duration,
    /// Refresh the token this long before it expires (default 60 s; at most
    /// half the token's lifetime).
    pub refresh_margin: Duration,
    /// First delay before retrying a transient failure of a session
    /// request (authentication, subscribe); doubles up to 30 s (default 500 ms).
    pub retry_delay: Duration,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl SessionConfig {
    /// The defaults, usable in `const` context (same as [`Default`]).
    pub const DEFAULT: SessionConfig = SessionConfig {
        restore: Restore::Auto,
        batch_size: 20,
        pacing: Duration::ZERO,
        request_timeout: Duration::from_secs(30),
        refresh_margin: Duration::from_secs(60),
        retry_delay: Duration::from_millis(500),
    };

    /// Set [`restore`](Self::restore).
    #[must_use]
    pub const fn with_restore(mut self, restore: Restore) -> Self {
        self.restore = restore;
        self
    }

    /// Set [`batch_size`](Self::batch_size).
    #[must_use]
    pub const fn with_batch_size(mut self, channels: usize) -> Self {
        self.batch_size = channels;
        self
    }

    /// Set [`pacing`](Self::pacing).
    #[must_use]
    pub const fn with_pacing(mut self, pacing: Duration) -> Self {
        self.pacing = pacing;
        self
    }

    /// Set [`request_timeout`](Self::request_timeout).
    #[must_use]
    pub const fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Set [`refresh_margin`](Self::refresh_margin).
    #[must_use]
    pub const fn with_refresh_margin(mut self, margin: Duration) -> Self {
        self.refresh_margin = margin;
        self
    }

    /// Set [`retry_delay`](Self::retry_delay).
    #[must_use]
    pub const fn with_retry_delay(mut self, delay: Duration) -> Self {
        self.retry_delay = delay;
        self
    }
}

/// Why a channel is not subscribed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// The server answered without granting it (`code` if it answered
    /// with an error).
    Refused {
        /// The JSON-RPC error code, if the answer was an error.
        code: Option<i64>,
    },
    /// It needs an authenticated connection and this one is not.
    NeedsAuth,
    /// The subscribe request got no answer within `request_timeout`.
    TimedOut,
    /// The protocol cannot render a subscribe request (no exchange protocol).
    Unsupported,
}

/// A JSON-RPC error as the answer carried it: code and (cut) message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RpcError {
    /// `error.code`.
    pub code: i64,
    /// `error.message` (or `msg`), raw, at most [`ERROR_MESSAGE_CAP`] bytes.
    pub message: heapless::String<ERROR_MESSAGE_CAP>,
    /// What the protocol says the code means.
    pub class: ErrorClass,
}

impl fmt::Display for RpcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "error {} {}", self.code, self.message)
    }
}

/// What the session tells the user.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SessionEvent {
    /// Authentication succeeded on this socket.
    Authenticated {
        /// Socket.
        epoch: Epoch,
        /// Which grant was used.
        refresh: bool,
        /// The token's lifetime, if the answer said.
        expires_in: Option<Duration>,
    },
    /// The token was refreshed on the open socket (no reconnect).
    TokenRefreshed {
        /// Socket.
        epoch: Epoch,
        /// The new token's lifetime.
        expires_in: Option<Duration>,
    },
    /// The server refused the credentials (a fatal error class): the
    /// client fails with [`Error::AuthRejected`].
    AuthRejected {
        /// Socket.
        epoch: Epoch,
        /// The error code.
        code: Option<i64>,
    },
    /// A transient authentication error: retried on this socket after `delay`.
    AuthRetrying {
        /// Socket.
        epoch: Epoch,
        /// The error code.
        code: Option<i64>,
        /// When the next attempt goes out.
        delay: Duration,
    },
    /// The authentication request got no answer within `request_timeout`:
    /// transient; the client drops the socket and reconnects.
    AuthTimedOut {
        /// Socket.
        epoch: Epoch,
    },
    /// An answer said the server's rate limit was hit (e.g. Deribit 10028):
    /// the client waits for its credits to refill before it sends or
    /// reconnects again.
    RateLimited {
        /// The error code.
        code: i64,
    },
    /// After-auth step `step` (e.g. cancel-on-disconnect) was answered:
    /// `error` is `None` on success.
    AfterAuth {
        /// Socket.
        epoch: Epoch,
        /// Which step ([`Protocol::after_auth_steps`]).
        step: u8,
        /// The error code if it failed (`Some(None)`: timed out).
        error: Option<Option<i64>>,
    },
    /// Channel `index` ([`Session::channel`]) is not subscribed, and why.
    SubscriptionRejected {
        /// Socket.
        epoch: Epoch,
        /// Index of the channel in the tracked set.
        index: usize,
        /// Why.
        reason: Rejection,
    },
    /// Every tracked channel was answered on this socket: `granted` are
    /// subscribed ([`Session::granted`]), `rejected` were reported.
    Restored {
        /// Socket.
        epoch: Epoch,
        /// Channels the server confirmed.
        granted: usize,
        /// Channels not subscribed (each reported with `SubscriptionRejected`).
        rejected: usize,
    },
    /// A tracked request got a result.
    RequestResolved {
        /// Its id.
        id: u64,
    },
    /// A tracked request got an error answer.
    RequestError {
        /// Its id.
        id: u64,
        /// The error.
        error: RpcError,
    },
    /// A tracked request got no response within `request_timeout`.
    RequestTimedOut {
        /// Its id.
        id: u64,
    },
    /// The connection dropped while the request was in flight.
    RequestFailed {
        /// Its id.
        id: u64,
    },
}

/// Why a channel could not be tracked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubscribeError {
    /// The subscription set is full.
    Full,
    /// The channel name is longer than the set's `CHAN` capacity.
    NameTooLong,
}

/// What a rendered message is, for the caller's logs and events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransmitKind {
    /// An authentication request (`refresh`: with the refresh token).
    Authenticate {
        /// Whether the refresh-token grant is used.
        refresh: bool,
    },
    /// After-auth step `n`.
    AfterAuth(u8),
    /// A subscribe request for this many channels.
    Subscribe(usize),
    /// An unsubscribe request.
    Unsubscribe(usize),
}

/// A message [`Session::poll_transmit`] rendered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// Socket it belongs to.
    pub epoch: Epoch,
    /// Its JSON-RPC id.
    pub id: u64,
    /// What it is.
    pub kind: TransmitKind,
}

/// What the session decided about the socket, for its owner
/// ([`Client`](crate::client::Client)) to carry out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// The server's rate limit was hit: hold sends and reconnects until
    /// the credits refill.
    Throttle,
    /// Drop the socket with this error (fatal: the client fails; transient:
    /// it reconnects).
    Drop(Error),
}

/// The refresh token: `Debug` never shows it (a session is logged with `{:?}`).
struct Secret(heapless::String<REFRESH_TOKEN_CAP>);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() {
            "None"
        } else {
            "<redacted>"
        })
    }
}

impl core::ops::Deref for Secret {
    type Target = heapless::String<REFRESH_TOKEN_CAP>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl core::ops::DerefMut for Secret {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

/// Own requests in flight at most (auth or after-auth, batches, unsubscribes).
const OWN: usize = 8;
/// Subscribe / unsubscribe requests in flight at most: the rest of [`OWN`]
/// stays free for authentication and its steps, so no request is ever
/// evicted from the table (its channels would never be confirmed).
const OWN_BATCHES: usize = OWN - 2;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ChanState {
    /// To be subscribed on this socket.
    Idle,
    /// In the subscribe request with this id.
    InFlight(u64),
    Granted,
    /// Not subscribed on this socket; `reported` once the event went out.
    Rejected {
        reason: Rejection,
        reported: bool,
    },
    /// Removed by the user while granted: unsubscribe request with this id
    /// (0 = not sent yet); dropped from the set when answered.
    Leaving(u64),
    /// Removed by the user while its subscribe request (this id) was in
    /// flight: if the answer grants it, it is unsubscribed; else dropped.
    Abandoned(u64),
}

#[derive(Clone, Debug)]
struct Chan<const CHAN: usize> {
    name: heapless::String<CHAN>,
    state: ChanState,
}

/// The session's own request in flight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Own {
    Auth { refresh: bool },
    AfterAuth(u8),
    Subscribe,
    Unsubscribe,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Down,
    /// Authenticate (not before `at`).
    Auth {
        at: Instant,
        refresh: bool,
    },
    /// Waiting for an answer (auth or after-auth).
    Waiting,
    /// After-auth step `n` (not before `at`).
    AfterAuth {
        n: u8,
        at: Instant,
    },
    /// Restoring / serving subscriptions; next batch not before `at`.
    Subscribing {
        at: Instant,
    },
}

/// Session state: tracked subscriptions, restore progress, token,
/// requests in flight. `SUBS` channels of up to `CHAN` bytes each, `REQS`
/// requests in flight.
///
/// ```
/// use zenws_core::exchange::deribit::Deribit;
/// use zenws_core::session::{Session, SessionConfig, TransmitKind};
/// use zenws_core::Instant;
///
/// let deribit = Deribit::public();
/// let mut s: Session = Session::new(SessionConfig::default());
/// s.subscribe("trades.BTC-PERPETUAL.100ms").unwrap();
/// s.on_open(Instant::ZERO, 1, &deribit);
/// let mut out = String::new();
/// let t = s.poll_transmit(Instant::ZERO, &deribit, &mut out).unwrap();
/// assert_eq!(t.kind, TransmitKind::Subscribe(1));
/// assert!(out.contains(r#""method":"public/subscribe""#));
/// // Confirmed from the answer, channel by channel.
/// let answer = format!(r#"{{"id":{},"result":["trades.BTC-PERPETUAL.100ms"]}}"#, t.id);
/// assert!(s.on_message(Instant::ZERO, answer.as_bytes(), &deribit));
/// assert_eq!(s.granted().count(), 1);
/// ```
#[derive(Debug)]
pub struct Session<const SUBS: usize = 16, const CHAN: usize = 64, const REQS: usize = 32> {
    config: SessionConfig,
    channels: heapless::Vec<Chan<CHAN>, SUBS>,
    phase: Phase,
    epoch: Epoch,
    authenticated: bool,
    /// Report `Restored` when nothing is idle or in flight any more.
    restoring: bool,
    next_id: u64,
    next_user_id: u64,
    /// User requests in flight.
    requests: Requests<REQS>,
    /// The session's own requests in flight: id, what, deadline.
    own: heapless::Vec<(u64, Own, Instant), OWN>,
    events: Deque<SessionEvent, 16>,
    /// Requests that ended without a response, waiting to be reported:
    /// `(id, timed_out)`. Up to `REQS` settle at once (a disconnect), more
    /// than `events` holds, so they are reported from here one by one and
    /// never dropped; `track_request` keeps in flight + settled ≤ `REQS`.
    settled: Deque<(u64, bool), REQS>,
    refresh_token: Secret,
    refresh_at: Option<Instant>,
    /// Current delay for retrying a transient failure.
    retry: Duration,
    /// `Restored` to report once every rejection has been.
    restored: Option<SessionEvent>,
    /// A channel may have a rejection not yet reported.
    unreported: bool,
    throttle: bool,
    drop: Option<Error>,
}

impl<const SUBS: usize, const CHAN: usize, const REQS: usize> Session<SUBS, CHAN, REQS> {
    /// A session with no subscriptions.
    pub fn new(config: SessionConfig) -> Self {
        Session {
            config,
            channels: heapless::Vec::new(),
            phase: Phase::Down,
            epoch: 0,
            authenticated: false,
            restoring: false,
            next_id: SESSION_ID_BASE,
            next_user_id: 1,
            requests: Requests::new(),
            own: heapless::Vec::new(),
            events: Deque::new(),
            settled: Deque::new(),
            refresh_token: Secret(heapless::String::new()),
            refresh_at: None,
            retry: config.retry_delay,
            restored: None,
            unreported: false,
            throttle: false,
            drop: None,
        }
    }

    /// Next decision about the socket for the owner to carry out.
    pub fn take_signal(&mut self) -> Option<Signal> {
        if core::mem::take(&mut self.throttle) {
            return Some(Signal::Throttle);
        }
        self.drop.take().map(Signal::Drop)
    }

    /// The configuration.
    pub fn config(&self) -> &SessionConfig {
        &self.config
    }

    /// A fresh id for a user request (below the reserved range, skipping
    /// ids in flight).
    pub fn next_id(&mut self) -> u64 {
        loop {
            let id = self.next_user_id;
            self.next_user_id = if id + 1 >= CORE_ID_BASE { 1 } else { id + 1 };
            if !self.requests.contains(id) {
                return id;
            }
        }
    }

    fn own_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(SESSION_ID_BASE);
        id
    }

    /// Track `channel` (restored after every open). While open and
    /// restored, it is subscribed at the next [`Session::poll_transmit`].
    pub fn subscribe(&mut self, channel: &str) -> Result<(), SubscribeError> {
        if let Some(c) = self.channels.iter_mut().find(|c| c.name == channel) {
            match c.state {
                // Subscribed again before the unsubscribe went out: it is
                // still subscribed on the server (asking again would be a
                // second subscribe, and a refused one would leave it there
                // unseen): keep it.
                ChanState::Leaving(0) => c.state = ChanState::Granted,
                // Subscribed again while the unsubscribe is in flight (the
                // server drops it first), or after it was refused: ask (again).
                ChanState::Leaving(_) | ChanState::Rejected { .. } => {
                    c.state = ChanState::Idle;
                    self.kick();
                }
                // Taken back before its subscribe was answered: confirmed
                // (or retried) from that answer, like any runtime subscribe.
                ChanState::Abandoned(id) => {
                    c.state = ChanState::InFlight(id);
                    self.kick();
                }
                _ => {}
            }
            return Ok(());
        }
        let mut name = heapless::String::new();
        name.push_str(channel)
            .map_err(|_| SubscribeError::NameTooLong)?;
        self.channels
            .push(Chan {
                name,
                state: ChanState::Idle,
            })
            .map_err(|_| SubscribeError::Full)?;
        self.kick();
        Ok(())
    }

    /// While open: make the next batch go out (a runtime subscribe).
    fn kick(&mut self) {
        if self.phase != Phase::Down {
            self.restoring = true;
        }
    }

    /// Stop tracking `channel`. If it is subscribed on the open socket, an
    /// unsubscribe request goes out at the next [`Session::poll_transmit`].
    pub fn unsubscribe(&mut self, channel: &str) -> bool {
        let Some(i) = self.channels.iter().position(|c| c.name == channel) else {
            return false;
        };
        match self.channels[i].state {
            ChanState::Granted if self.phase != Phase::Down => {
                self.channels[i].state = ChanState::Leaving(0);
            }
            ChanState::InFlight(id) if self.phase != Phase::Down => {
                self.channels[i].state = ChanState::Abandoned(id);
            }
            ChanState::Leaving(_) | ChanState::Abandoned(_) => return false,
            _ => {
                self.channels.remove(i);
            }
        }
        true
    }

    /// Tracked channels, in insertion (= restoration) order.
    pub fn channels(&self) -> impl Iterator<Item = &str> {
        self.channels
            .iter()
            .filter(|c| !matches!(c.state, ChanState::Leaving(_) | ChanState::Abandoned(_)))
            .map(|c| c.name.as_str())
    }

    /// Channels the server confirmed on the current socket.
    pub fn granted(&self) -> impl Iterator<Item = &str> {
        self.channels
            .iter()
            .filter(|c| c.state == ChanState::Granted)
            .map(|c| c.name.as_str())
    }

    /// Channel `i` of the tracked set (as in the events; valid until the
    /// next [`Session::unsubscribe`]).
    pub fn channel(&self, i: usize) -> Option<&str> {
        self.channels.get(i).map(|c| c.name.as_str())
    }

    /// How many channels are tracked.
    pub fn channel_count(&self) -> usize {
        self.channels().count()
    }

    /// Whether the current socket is authenticated.
    pub fn is_authenticated(&self) -> bool {
        self.authenticated
    }

    /// When the token will be refreshed, if scheduled.
    pub fn refresh_at(&self) -> Option<Instant> {
        self.refresh_at
    }

    /// A socket opened: start the on-open steps.
    pub fn on_open<P: Protocol + ?Sized>(&mut self, now: Instant, epoch: Epoch, protocol: &P) {
        if epoch == self.epoch && self.phase != Phase::Down {
            // This socket was already started (the session was created on
            // it before its `Opened` was seen): nothing to restart.
            return;
        }
        self.epoch = epoch;
        self.authenticated = false;
        self.refresh_at = None;
        self.retry = self.config.retry_delay;
        self.channels
            .retain(|c| !matches!(c.state, ChanState::Leaving(_) | ChanState::Abandoned(_)));
        for c in self.channels.iter_mut() {
            c.state = ChanState::Idle;
        }
        self.restoring = self.config.restore == Restore::Auto;
        self.restored = None;
        if self.config.restore == Restore::Off {
            // Not restored: nothing to report either.
            for c in self.channels.iter_mut() {
                c.state = ChanState::Rejected {
                    reason: Rejection::Unsupported,
                    reported: true,
                };
            }
        }
        self.phase = if protocol.authenticates() {
            Phase::Auth {
                at: now,
                refresh: false,
            }
        } else {
            Phase::Subscribing { at: now }
        };
    }

    /// The socket dropped: stop, fail every pending request.
    pub fn on_disconnect(&mut self) {
        self.phase = Phase::Down;
        self.authenticated = false;
        self.refresh_at = None;
        self.own.clear();
        self.restoring = false;
        while let Some(id) = self.requests.pop_any() {
            // Cannot overflow: in flight + settled ≤ REQS (see `track_request`).
            let _ = self.settled.push_back((id, false));
        }
    }

    fn push_event(&mut self, e: SessionEvent) {
        // Sized for the burst one input can cause; drained after every input.
        if self.events.push_back(e).is_err() {
            log::warn!("zenws-core: session event queue full, dropping oldest");
            self.events.pop_front();
        }
    }

    fn batches_in_flight(&self) -> usize {
        self.own
            .iter()
            .filter(|&&(_, what, _)| matches!(what, Own::Subscribe | Own::Unsubscribe))
            .count()
    }

    fn track_own(&mut self, now: Instant, id: u64, what: Own) {
        let deadline = now + self.config.request_timeout;
        if self.own.push((id, what, deadline)).is_err() {
            // Unreachable: at most one auth/after-auth plus `OWN_BATCHES`
            // batches are in flight. Should it happen, the oldest goes and
            // it is said.
            debug_assert!(false, "own-request table full");
            log::warn!("zenws-core: session request table full; forgetting the oldest");
            self.own.remove(0);
            let _ = self.own.push((id, what, deadline));
        }
    }

    /// Render the next session message due at `now` into `out` (appended),
    /// or `None` if nothing is due. After a `Some`, send the text appended
    /// to `out`; if it cannot be sent, hand it back with
    /// [`Session::transmit_failed`].
    pub fn poll_transmit<P, W>(
        &mut self,
        now: Instant,
        protocol: &P,
        out: &mut W,
    ) -> Option<Transmit>
    where
        P: Protocol + ?Sized,
        W: fmt::Write,
    {
        loop {
            match self.phase {
                Phase::Down | Phase::Waiting => return None,
                Phase::Auth { at, refresh } => {
                    if now < at {
                        return None;
                    }
                    let refresh = refresh && !self.refresh_token.is_empty();
                    let id = self.own_id();
                    let grant = if refresh {
                        Grant::Refresh(self.refresh_token.as_str())
                    } else {
                        Grant::Credentials
                    };
                    if protocol
                        .render(id, &Request::Authenticate(grant), out)
                        .is_err()
                    {
                        // Nothing to authenticate with: carry on without.
                        self.after_auth(now, protocol);
                        continue;
                    }
                    self.track_own(now, id, Own::Auth { refresh });
                    self.phase = if self.authenticated {
                        // A refresh on a working socket: subscriptions go on.
                        Phase::Subscribing { at: now }
                    } else {
                        Phase::Waiting
                    };
                    if self.authenticated {
                        self.refresh_at = None;
                    }
                    return Some(Transmit {
                        epoch: self.epoch,
                        id,
                        kind: TransmitKind::Authenticate { refresh },
                    });
                }
                Phase::AfterAuth { n, at } => {
                    if now < at {
                        return None;
                    }
                    if n >= protocol.after_auth_steps() {
                        self.phase = Phase::Subscribing { at: now };
                        continue;
                    }
                    let id = self.own_id();
                    if protocol.render(id, &Request::AfterAuth(n), out).is_err() {
                        self.phase = Phase::AfterAuth { n: n + 1, at: now };
                        continue;
                    }
                    self.track_own(now, id, Own::AfterAuth(n));
                    self.phase = Phase::Waiting;
                    return Some(Transmit {
                        epoch: self.epoch,
                        id,
                        kind: TransmitKind::AfterAuth(n),
                    });
                }
                Phase::Subscribing { at } => {
                    if self.refresh_at.is_some_and(|r| now >= r) {
                        self.phase = Phase::Auth {
                            at: now,
                            refresh: true,
                        };
                        continue;
                    }
                    if now < at {
                        return None;
                    }
                    if self.batches_in_flight() >= OWN_BATCHES {
                        // Wait for answers (an input) before sending more.
                        return None;
                    }
                    if let Some(t) = self.next_unsubscribe(now, protocol, out) {
                        return Some(t);
                    }
                    if !self.restoring {
                        return None;
                    }
                    match self.next_batch(now, protocol, out) {
                        Some(t) => return Some(t),
                        None => {
                            self.check_restored();
                            return None;
                        }
                    }
                }
            }
        }
    }

    fn next_unsubscribe<P, W>(
        &mut self,
        now: Instant,
        protocol: &P,
        out: &mut W,
    ) -> Option<Transmit>
    where
        P: Protocol + ?Sized,
        W: fmt::Write,
    {
        let i = self
            .channels
            .iter()
            .position(|c| c.state == ChanState::Leaving(0))?;
        let private = protocol.channel_kind(&self.channels[i].name) == ChannelKind::Private;
        let id = self.own_id();
        let name = [self.channels[i].name.as_str()];
        let ok = protocol
            .render(
                id,
                &Request::Unsubscribe {
                    channels: &name,
                    private,
                },
                out,
            )
            .is_ok();
        if !ok {
            self.channels.remove(i);
            return None;
        }
        self.channels[i].state = ChanState::Leaving(id);
        self.track_own(now, id, Own::Unsubscribe);
        Some(Transmit {
            epoch: self.epoch,
            id,
            kind: TransmitKind::Unsubscribe(1),
        })
    }

    /// The next subscribe batch: idle channels of one privacy, at most
    /// `batch_size`; channels that cannot be subscribed here are rejected.
    fn next_batch<P, W>(&mut self, now: Instant, protocol: &P, out: &mut W) -> Option<Transmit>
    where
        P: Protocol + ?Sized,
        W: fmt::Write,
    {
        let auth = self.authenticated;
        let mut private = None;
        for i in 0..self.channels.len() {
            if self.channels[i].state != ChanState::Idle {
                continue;
            }
            let kind = protocol.channel_kind(&self.channels[i].name);
            if kind != ChannelKind::Public && !auth {
                self.reject(i, Rejection::NeedsAuth);
                continue;
            }
            // Keep scanning: every channel that needs authentication is
            // rejected here, so none rides in the batch below.
            private.get_or_insert(kind == ChannelKind::Private);
        }
        let private = private?;
        let id = self.own_id();
        let batch = self.config.batch_size.max(1);
        let (n, ok) = {
            let mut names: heapless::Vec<&str, SUBS> = heapless::Vec::new();
            for c in self.channels.iter() {
                if names.len() >= batch {
                    break;
                }
                if c.state == ChanState::Idle
                    && (protocol.channel_kind(&c.name) == ChannelKind::Private) == private
                {
                    let _ = names.push(c.name.as_str());
                }
            }
            let request = Request::Subscribe {
                channels: &names,
                private,
            };
            (names.len(), protocol.render(id, &request, out).is_ok())
        };
        let mut left = n;
        for i in 0..self.channels.len() {
            if left == 0 {
                break;
            }
            let c = &self.channels[i];
            if c.state == ChanState::Idle
                && (protocol.channel_kind(&c.name) == ChannelKind::Private) == private
            {
                left -= 1;
                if ok {
                    self.channels[i].state = ChanState::InFlight(id);
                } else {
                    self.reject(i, Rejection::Unsupported);
                }
            }
        }
        if !ok {
            return None;
        }
        self.track_own(now, id, Own::Subscribe);
        self.phase = Phase::Subscribing {
            at: now + self.config.pacing,
        };
        Some(Transmit {
            epoch: self.epoch,
            id,
            kind: TransmitKind::Subscribe(n),
        })
    }

    /// Reported from [`Session::poll_event`], one by one: never dropped,
    /// however many channels are rejected at once.
    fn reject(&mut self, i: usize, reason: Rejection) {
        self.channels[i].state = ChanState::Rejected {
            reason,
            reported: false,
        };
        self.unreported = true;
    }

    fn check_restored(&mut self) {
        if !self.restoring
            || self
                .channels
                .iter()
                .any(|c| matches!(c.state, ChanState::Idle | ChanState::InFlight(_)))
        {
            return;
        }
        self.restoring = false;
        let granted = self.granted().count();
        let rejected = self
            .channels
            .iter()
            .filter(|c| matches!(c.state, ChanState::Rejected { .. }))
            .count();
        self.restored = Some(SessionEvent::Restored {
            epoch: self.epoch,
            granted,
            rejected,
        });
    }

    /// The caller could not send the message of `transmit` (rate limited,
    /// write queue full): it is rendered again at `retry_at`, so no
    /// authentication, step or subscribe batch is lost.
    pub fn transmit_failed(&mut self, transmit: &Transmit, retry_at: Instant) {
        if transmit.epoch != self.epoch || self.phase == Phase::Down {
            return;
        }
        self.own.retain(|&(id, _, _)| id != transmit.id);
        match transmit.kind {
            TransmitKind::Authenticate { refresh } => {
                self.phase = Phase::Auth {
                    at: retry_at,
                    refresh,
                };
            }
            TransmitKind::AfterAuth(n) => self.phase = Phase::AfterAuth { n, at: retry_at },
            TransmitKind::Subscribe(_) | TransmitKind::Unsubscribe(_) => {
                for c in self.channels.iter_mut() {
                    match c.state {
                        ChanState::InFlight(id) if id == transmit.id => c.state = ChanState::Idle,
                        // Never sent: nothing to undo on the server.
                        ChanState::Abandoned(id) if id == transmit.id => {
                            c.state = ChanState::Leaving(u64::MAX)
                        }
                        ChanState::Leaving(id) if id == transmit.id => {
                            c.state = ChanState::Leaving(0)
                        }
                        _ => {}
                    }
                }
                self.channels
                    .retain(|c| c.state != ChanState::Leaving(u64::MAX));
                if let Phase::Subscribing { .. } = self.phase {
                    self.phase = Phase::Subscribing { at: retry_at };
                }
            }
        }
    }

    /// Track a user request with `id` (call before sending it).
    pub fn track_request(&mut self, now: Instant, id: u64) -> Result<(), TrackError> {
        if id >= CORE_ID_BASE {
            return Err(TrackError::Reserved);
        }
        if self.requests.len() + self.settled.len() >= REQS {
            return Err(TrackError::Full);
        }
        self.requests.track(now, id, self.config.request_timeout)
    }

    /// Forget a tracked request (its send failed).
    pub fn untrack_request(&mut self, id: u64) -> bool {
        self.requests.resolve(id)
    }

    /// An incoming data message: resolve requests, read the session's own
    /// answers. Returns `true` if it was an answer to the session's own
    /// request (consumed: not for the application — it may carry tokens).
    pub fn on_message<P: Protocol + ?Sized>(
        &mut self,
        now: Instant,
        data: &[u8],
        protocol: &P,
    ) -> bool {
        let Ok(view) = json::scan(data) else {
            return false;
        };
        let Some(id) = view.id else { return false };
        if !(view.has_result || view.has_error) {
            return false;
        }
        let error = view.error_code.or(view.has_error.then_some(0));
        if let Some(code) = error {
            // One hold and one event per input, however many answers of a
            // read say so.
            if protocol.classify(code) == ErrorClass::RateLimited && !self.throttle {
                self.throttle = true;
                self.push_event(SessionEvent::RateLimited { code });
            }
        }
        if let Some(k) = self.own.iter().position(|&(o, _, _)| o == id) {
            let (_, what, _) = self.own.swap_remove(k);
            self.own_answer(now, id, what, &view, protocol);
            return true;
        }
        if id >= SESSION_ID_BASE {
            // A late or repeated answer to one of the session's own
            // requests (e.g. a refresh that timed out): it may carry
            // tokens, and no user request can have this id.
            return true;
        }
        if id >= CORE_ID_BASE || !self.requests.resolve(id) {
            return false;
        }
        let e = match view.error_code.or(view.has_error.then_some(0)) {
            None => SessionEvent::RequestResolved { id },
            Some(code) => SessionEvent::RequestError {
                id,
                error: rpc_error(&view, code, protocol),
            },
        };
        self.push_event(e);
        false
    }

    fn own_answer<P: Protocol + ?Sized>(
        &mut self,
        now: Instant,
        id: u64,
        what: Own,
        view: &JsonRpcView<'_>,
        protocol: &P,
    ) {
        let error = view.error_code.or(view.has_error.then_some(0));
        let epoch = self.epoch;
        match what {
            Own::Auth { refresh } => match error {
                None => {
                    let answer = protocol.auth_answer(view.result.unwrap_or(b"null"));
                    self.refresh_token.clear();
                    if let Some(t) = answer.refresh_token {
                        if self.refresh_token.push_str(t).is_err() {
                            self.refresh_token.clear();
                        }
                    }
                    // Never sooner than a second from now: a server that
                    // answers with a lifetime of 0 gets a refresh a second,
                    // not a storm of them.
                    self.refresh_at = answer.expires_in.map(|life| {
                        let early = self.config.refresh_margin.min(life / 2);
                        now + life.saturating_sub(early).max(MIN_REFRESH_DELAY)
                    });
                    self.retry = self.config.retry_delay;
                    let expires_in = answer.expires_in;
                    if self.authenticated {
                        self.push_event(SessionEvent::TokenRefreshed { epoch, expires_in });
                    } else {
                        self.authenticated = true;
                        self.push_event(SessionEvent::Authenticated {
                            epoch,
                            refresh,
                            expires_in,
                        });
                        self.after_auth(now, protocol);
                    }
                }
                Some(code) => match (protocol.classify(code), refresh) {
                    // A refused refresh token: fall back to the credentials.
                    (ErrorClass::Fatal, true) => {
                        self.refresh_token.clear();
                        self.phase = Phase::Auth {
                            at: now,
                            refresh: false,
                        };
                    }
                    (ErrorClass::Fatal, false) => {
                        self.phase = Phase::Down;
                        self.drop = Some(Error::AuthRejected);
                        self.push_event(SessionEvent::AuthRejected {
                            epoch,
                            code: Some(code),
                        });
                    }
                    // A rate limit also holds the client until the credits
                    // refill (the `RateLimited` event).
                    (_, _) => {
                        let delay = self.next_retry_delay();
                        self.phase = Phase::Auth {
                            at: now + delay,
                            refresh: refresh && self.authenticated,
                        };
                        self.push_event(SessionEvent::AuthRetrying {
                            epoch,
                            code: Some(code),
                            delay,
                        });
                    }
                },
            },
            Own::AfterAuth(n) => {
                self.push_event(SessionEvent::AfterAuth {
                    epoch,
                    step: n,
                    error: error.map(Some),
                });
                if self.phase == Phase::Waiting {
                    self.phase = Phase::AfterAuth { n: n + 1, at: now };
                }
            }
            Own::Subscribe => {
                let class = error.map(|c| protocol.classify(c));
                for i in 0..self.channels.len() {
                    if self.channels[i].state == ChanState::Abandoned(id) {
                        // The user let go while it was in flight: granted
                        // means subscribed on the server, so unsubscribe.
                        let granted =
                            class.is_none() && protocol.granted(view, &self.channels[i].name);
                        self.channels[i].state = if granted {
                            ChanState::Leaving(0)
                        } else {
                            ChanState::Leaving(u64::MAX)
                        };
                        continue;
                    }
                    if self.channels[i].state != ChanState::InFlight(id) {
                        continue;
                    }
                    match class {
                        None if protocol.granted(view, &self.channels[i].name) => {
                            self.channels[i].state = ChanState::Granted
                        }
                        None | Some(ErrorClass::Fatal) => {
                            self.reject(i, Rejection::Refused { code: error })
                        }
                        // Busy or rate limited: asked again after a delay.
                        Some(_) => self.channels[i].state = ChanState::Idle,
                    }
                }
                self.channels
                    .retain(|c| c.state != ChanState::Leaving(u64::MAX));
                if class.is_some_and(|c| c != ErrorClass::Fatal) {
                    self.defer_subscribing(now);
                }
                self.check_restored();
            }
            Own::Unsubscribe => match error.map(|c| protocol.classify(c)) {
                // Busy or rate limited: still subscribed on the server, so
                // the unsubscribe is asked again after a delay.
                Some(class) if class != ErrorClass::Fatal => {
                    for c in self.channels.iter_mut() {
                        if c.state == ChanState::Leaving(id) {
                            c.state = ChanState::Leaving(0);
                        }
                    }
                    self.defer_subscribing(now);
                }
                _ => self.channels.retain(|c| c.state != ChanState::Leaving(id)),
            },
        }
    }

    /// The delay before retrying a transient failure, doubling (at most
    /// 30 s) until an authentication succeeds.
    fn next_retry_delay(&mut self) -> Duration {
        let delay = self.retry;
        self.retry = self.retry.saturating_mul(2).min(Duration::from_secs(30));
        delay
    }

    /// A transient subscribe/unsubscribe failure: the next batch waits.
    fn defer_subscribing(&mut self, now: Instant) {
        let delay = self.next_retry_delay();
        if let Phase::Subscribing { at } = self.phase {
            self.phase = Phase::Subscribing {
                at: at.max(now + delay),
            };
        }
    }

    /// Authentication done (or skipped): the after-auth steps come next.
    fn after_auth<P: Protocol + ?Sized>(&mut self, now: Instant, protocol: &P) {
        self.phase = if protocol.after_auth_steps() > 0 && self.authenticated {
            Phase::AfterAuth { n: 0, at: now }
        } else {
            Phase::Subscribing { at: now }
        };
    }

    /// When [`Session::handle_timeout`] or [`Session::poll_transmit`] is due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let step = match self.phase {
            Phase::Auth { at, .. } | Phase::AfterAuth { at, .. } => Some(at),
            Phase::Subscribing { at } => {
                // Only when there is something to send: a past `at` while
                // waiting for answers would make the caller spin.
                let work = self.batches_in_flight() < OWN_BATCHES
                    && self.channels.iter().any(|c| {
                        (self.restoring && c.state == ChanState::Idle)
                            || c.state == ChanState::Leaving(0)
                    });
                earliest(work.then_some(at), self.refresh_at)
            }
            Phase::Down | Phase::Waiting => None,
        };
        let own = self.own.iter().map(|&(_, _, d)| d).min();
        earliest(step, earliest(own, self.requests.poll_timeout()))
    }

    /// Expire requests whose deadline passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(k) = self.own.iter().position(|&(_, _, d)| now >= d) {
            let (id, what, _) = self.own.swap_remove(k);
            let epoch = self.epoch;
            match what {
                Own::Auth { .. } if !self.authenticated => {
                    self.phase = Phase::Down;
                    // No answer is not a rejection: reconnect (transient).
                    self.drop = Some(Error::ConnectTimeout);
                    self.push_event(SessionEvent::AuthTimedOut { epoch });
                }
                // A refresh that got no answer: try again later.
                Own::Auth { .. } => self.refresh_at = Some(now + self.retry),
                Own::AfterAuth(n) => {
                    self.push_event(SessionEvent::AfterAuth {
                        epoch,
                        step: n,
                        error: Some(None),
                    });
                    if self.phase == Phase::Waiting {
                        self.phase = Phase::AfterAuth { n: n + 1, at: now };
                    }
                }
                Own::Subscribe => {
                    // Unanswered: what the server did is unknown; a channel
                    // the user let go of is dropped.
                    self.channels
                        .retain(|c| c.state != ChanState::Abandoned(id));
                    for i in 0..self.channels.len() {
                        if self.channels[i].state == ChanState::InFlight(id) {
                            self.reject(i, Rejection::TimedOut);
                        }
                    }
                    self.check_restored();
                }
                Own::Unsubscribe => self.channels.retain(|c| c.state != ChanState::Leaving(id)),
            }
        }
        while let Some(id) = self.requests.pop_expired(now) {
            let _ = self.settled.push_back((id, true));
        }
    }

    /// Next event for the user.
    pub fn poll_event(&mut self) -> Option<SessionEvent> {
        if let Some(e) = self.events.pop_front() {
            return Some(e);
        }
        // Scanned only while a rejection may be unreported: this runs after
        // every delivered message.
        for (index, c) in self
            .channels
            .iter_mut()
            .enumerate()
            .take(if self.unreported { SUBS } else { 0 })
        {
            if let ChanState::Rejected {
                reason,
                reported: false,
            } = c.state
            {
                c.state = ChanState::Rejected {
                    reason,
                    reported: true,
                };
                return Some(SessionEvent::SubscriptionRejected {
                    epoch: self.epoch,
                    index,
                    reason,
                });
            }
        }
        self.unreported = false;
        if let Some(e) = self.restored.take() {
            return Some(e);
        }
        self.events.pop_front().or_else(|| {
            self.settled
                .pop_front()
                .map(|(id, timed_out)| match timed_out {
                    true => SessionEvent::RequestTimedOut { id },
                    false => SessionEvent::RequestFailed { id },
                })
        })
    }

    /// User requests in flight.
    pub fn pending_requests(&self) -> usize {
        self.requests.len()
    }
}

fn rpc_error<P: Protocol + ?Sized>(view: &JsonRpcView<'_>, code: i64, protocol: &P) -> RpcError {
    let mut message = heapless::String::new();
    for ch in view.error_message.unwrap_or("").chars() {
        if message.push(ch).is_err() {
            break;
        }
    }
    RpcError {
        code,
        message,
        class: protocol.classify(code),
    }
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
