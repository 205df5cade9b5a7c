//! The per-client machine: one [`Connection`], its [`Session`] and an
//! exchange [`Protocol`], owned together.
//!
//! This is the one thing a driver drives per connection. `zenws-mio`, the
//! simulator (`zenws_core::sim`) and a user's own event loop all use this
//! type, so every session rule — when to authenticate, what a refused
//! authentication or a rate limit does to the socket, which answers are the
//! session's own — is written once, here and in [`session`](crate::session).
//!
//! # Call order
//!
//! Like `quinn_proto::Connection`, a [`Client`] never does I/O and never
//! reads a clock. After **every** input (`handle_*`, [`Client::connect`],
//! [`Client::close`], a user send) the caller drains, in this order:
//!
//! 1. [`Client::poll_action`] until `None`: socket work ([`Action::Connect`],
//!    [`Action::Send`] of a core frame such as a ping or a heartbeat
//!    answer, [`Action::Close`], [`Action::Abort`]);
//! 2. [`Client::poll_transmit`] until `None`: session messages
//!    (authentication, after-auth steps, subscribe / unsubscribe batches),
//!    rendered into the caller's buffer and already admitted (rate limit,
//!    queue bound); send each as a text message, or hand it back with
//!    [`Client::transmit_failed`];
//! 3. [`Client::poll_event`] until `None`: what to tell the application
//!    (the session sees the lifecycle events as they are polled: an
//!    `Opened` starts authentication, so poll events before expecting
//!    the session's first transmit);
//! 4. repeat 1–3 until all three are empty, then [`Client::poll_timeout`]:
//!    when to call [`Client::handle_timeout`].
//!
//! Socket inputs carry the [`Epoch`] of the socket they came from
//! ([`Action::Connect`] says which); input from any other epoch is ignored.
//! Incoming pings: [`Client::handle_ping`] says whether to answer with a
//! pong carrying the same payload — the caller sends it (the client is the
//! one component that decides about pongs; the transport never answers on
//! its own).
//!
//! ```
//! use core::time::Duration;
//! use zenws_core::client::{Client, ClientEvent};
//! use zenws_core::exchange::deribit::Deribit;
//! use zenws_core::session::{SessionConfig, SessionEvent};
//! use zenws_core::{Action, ConnectionConfig, Delivery, HeartbeatConfig, Instant};
//!
//! let config = ConnectionConfig::default().with_heartbeat(HeartbeatConfig::none());
//! let deribit = Deribit::with_credentials("id", "secret").unwrap();
//! let mut client: Client<Deribit> = Client::new(config, SessionConfig::default(), deribit);
//! client.subscribe("trades.BTC-PERPETUAL.raw").unwrap();
//! let t = Instant::ZERO;
//! client.connect(t);
//! let Some(Action::Connect { epoch }) = client.poll_action() else { panic!() };
//! client.handle_open(t, epoch); // the socket opened
//! while client.poll_event().is_some() {} // Connecting, Opened: the session starts
//!
//! // 1. authenticate
//! let mut out = String::new();
//! let auth = client.poll_transmit(t, 0, &mut out).expect("auth goes first");
//! assert!(out.contains("client_credentials"));
//! assert!(client.poll_transmit(t, 0, &mut String::new()).is_none(), "waits for the answer");
//! let answer = format!(r#"{{"id":{},"result":{{"access_token":"a","refresh_token":"r","expires_in":900}}}}"#, auth.id);
//! // The answer carries tokens: consumed, never delivered.
//! assert_eq!(client.handle_message(t, epoch, answer.as_bytes()), Delivery::Consumed);
//!
//! // 2. subscribe (a `.raw` channel: only now that we are authenticated)
//! out.clear();
//! let sub = client.poll_transmit(t, 0, &mut out).unwrap();
//! assert!(out.contains("public/subscribe"));
//! let answer = format!(r#"{{"id":{},"result":["trades.BTC-PERPETUAL.raw"]}}"#, sub.id);
//! client.handle_message(t, epoch, answer.as_bytes());
//! let events: Vec<_> = std::iter::from_fn(|| client.poll_event()).collect();
//! // (`Restored` counts what the answer granted)
//! assert!(events.contains(&ClientEvent::Session(SessionEvent::Restored { epoch, granted: 1, rejected: 0 })));
//!
//! // 3. the token is refreshed 60 s before it expires, on the same socket
//! let due = client.poll_timeout().unwrap();
//! assert_eq!(due, t + Duration::from_secs(840));
//! client.handle_timeout(due);
//! out.clear();
//! client.poll_transmit(due, 0, &mut out).unwrap();
//! assert!(out.contains(r#""grant_type":"refresh_token","refresh_token":"r""#));
//! ```

#[cfg(feature = "alloc")]
extern crate alloc;

use crate::connection::{Action, Connection, ConnectionConfig, Delivery, Epoch, Event, State};
use crate::error::{Error, SendError};
use crate::exchange::Protocol;
use crate::health::{Health, Metrics};
use crate::session::{
    Session, SessionConfig, SessionEvent, Signal, SubscribeError, TrackError, Transmit,
};
use crate::time::{earliest, Instant};
use core::fmt;
use core::time::Duration;

#[cfg(feature = "alloc")]
type Stored<T> = alloc::boxed::Box<T>;
#[cfg(not(feature = "alloc"))]
type Stored<T> = Inline<T>;
type Store<T> = Option<Stored<T>>;

/// The session kept inline (no allocator).
#[cfg(not(feature = "alloc"))]
#[derive(Debug)]
struct Inline<T>(T);

#[cfg(not(feature = "alloc"))]
impl<T> core::ops::Deref for Inline<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

#[cfg(not(feature = "alloc"))]
impl<T> core::ops::DerefMut for Inline<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.0
    }
}

fn stored<T>(t: T) -> Stored<T> {
    #[cfg(feature = "alloc")]
    return alloc::boxed::Box::new(t);
    #[cfg(not(feature = "alloc"))]
    Inline(t)
}

/// What a [`Client`] tells the application: the connection's lifecycle
/// events and the session's.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientEvent {
    /// Lifecycle: connecting, opened, disconnected, reconnecting,
    /// heartbeat, exited.
    Connection(Event),
    /// Session: authenticated, token refreshed, restored, rejected
    /// channels, request answers, rate limits.
    Session(SessionEvent),
}

/// Delay before a session message refused by a full write queue is tried again.
const QUEUE_RETRY: Duration = Duration::from_millis(20);

/// One supervised client's whole state machine (see the [module docs](self)
/// for the call order). `P` is the exchange protocol; the session holds up
/// to `SUBS` channels of `CHAN` bytes and `REQS` requests in flight. With
/// the `alloc` feature the session is boxed and created only when used
/// (authentication, a subscription or a request), so a plain client stays
/// about the size of its [`Connection`].
pub struct Client<P, const SUBS: usize = 16, const CHAN: usize = 64, const REQS: usize = 32> {
    conn: Connection,
    protocol: P,
    session_config: SessionConfig,
    session: Store<Session<SUBS, CHAN, REQS>>,
    /// The time of the latest input: lifecycle events are seen by the
    /// session when the caller polls them (no second event queue).
    last_now: Instant,
}

impl<P, const SUBS: usize, const CHAN: usize, const REQS: usize> fmt::Debug
    for Client<P, SUBS, CHAN, REQS>
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("state", &self.conn.state())
            .field("epoch", &self.conn.epoch())
            .field("session", &self.session.is_some())
            .finish_non_exhaustive()
    }
}

impl<P: Protocol, const SUBS: usize, const CHAN: usize, const REQS: usize>
    Client<P, SUBS, CHAN, REQS>
{
    /// A client in [`State::Idle`]; call [`Client::connect`] to start.
    ///
    /// Without a rate limit in `config`, the protocol's published one
    /// ([`Protocol::rate_limit`]) applies.
    pub fn new(mut config: ConnectionConfig, session: SessionConfig, protocol: P) -> Self {
        if config.rate_limit.is_none() {
            config.rate_limit = protocol.rate_limit();
        }
        let mut c = Client {
            conn: Connection::new(config),
            protocol,
            session_config: session,
            session: None,
            last_now: Instant::ZERO,
        };
        if c.protocol.authenticates() {
            c.session_mut();
        }
        c
    }

    /// The connection (lifecycle, health, metrics).
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// The protocol.
    pub fn protocol(&self) -> &P {
        &self.protocol
    }

    /// The session, if it has been created (authentication, a
    /// subscription or a request).
    pub fn session(&self) -> Option<&Session<SUBS, CHAN, REQS>> {
        self.session.as_deref()
    }

    fn session_mut(&mut self) -> &mut Session<SUBS, CHAN, REQS> {
        if self.session.is_none() {
            let mut s = Session::new(self.session_config);
            if self.conn.is_open() {
                // Created on an open socket (a first subscription or
                // request): it starts on it, not at the next reconnect.
                s.on_open(self.last_now, self.conn.epoch(), &self.protocol);
            }
            self.session = Some(stored(s));
        }
        match self.session.as_deref_mut() {
            Some(s) => s,
            None => unreachable!("created above"),
        }
    }

    /// The current socket's epoch.
    pub fn epoch(&self) -> Epoch {
        self.conn.epoch()
    }

    /// The lifecycle state.
    pub fn state(&self) -> State {
        self.conn.state()
    }

    /// `true` while sends are accepted.
    pub fn is_open(&self) -> bool {
        self.conn.is_open()
    }

    /// `true` once stopped or failed.
    pub fn is_terminated(&self) -> bool {
        self.conn.is_terminated()
    }

    /// Health snapshot.
    pub fn health(&self) -> Health {
        self.conn.health()
    }

    /// Counters.
    pub fn metrics(&self) -> Metrics {
        self.conn.metrics()
    }

    /// Start connecting.
    pub fn connect(&mut self, now: Instant) {
        self.conn.connect(now);
        self.settle(now);
    }

    /// The user closes the client (a normal exit).
    pub fn close(&mut self, now: Instant) {
        self.conn.close(now);
        self.settle(now);
    }

    /// A supervisor restart: a fresh incarnation connecting at `at`.
    pub fn restart(&mut self, now: Instant, at: Instant) {
        // The socket (if any) is dropped: the session forgets its requests
        // on it and fails the user's (`RequestFailed`).
        if let Some(s) = self.session.as_deref_mut() {
            s.on_disconnect();
        }
        self.conn.restart(now, at);
        self.settle(now);
    }

    /// Track `channel`: subscribed now if open, and after every open.
    pub fn subscribe(&mut self, channel: &str) -> Result<(), SubscribeError> {
        self.session_mut().subscribe(channel)
    }

    /// Stop tracking `channel` (unsubscribed on the open socket if it was
    /// granted). `false` if it was not tracked.
    pub fn unsubscribe(&mut self, channel: &str) -> bool {
        self.session
            .as_deref_mut()
            .is_some_and(|s| s.unsubscribe(channel))
    }

    /// A fresh id for a user request (below the reserved range).
    pub fn next_request_id(&mut self) -> u64 {
        self.session_mut().next_id()
    }

    /// Track a user request with `id` before sending it; its answer comes
    /// back as [`SessionEvent::RequestResolved`] or
    /// [`SessionEvent::RequestError`].
    pub fn track_request(&mut self, now: Instant, id: u64) -> Result<(), TrackError> {
        self.session_mut().track_request(now, id)
    }

    /// Forget a tracked request (its send failed).
    pub fn untrack_request(&mut self, id: u64) -> bool {
        self.session
            .as_deref_mut()
            .is_some_and(|s| s.untrack_request(id))
    }

    /// May the user send `data` now? `pending_bytes` is what the socket
    /// still has to write. On `Err` the caller still owns the message.
    pub fn handle_send(
        &mut self,
        now: Instant,
        data: &[u8],
        pending_bytes: usize,
    ) -> Result<(), SendError> {
        self.conn.handle_send(now, data, pending_bytes)
    }

    /// The socket of `epoch` finished its WebSocket handshake.
    pub fn handle_open(&mut self, now: Instant, epoch: Epoch) {
        self.conn.handle_open(now, epoch);
        self.settle(now);
    }

    /// The socket of `epoch` failed; the caller has dropped it.
    pub fn handle_error(&mut self, now: Instant, epoch: Epoch, error: Error) {
        self.conn.handle_error(now, epoch, error);
        self.settle(now);
    }

    /// The socket of `epoch` closed (`Some(code)`: the peer's close frame;
    /// `None`: EOF); the caller has dropped it.
    pub fn handle_closed(&mut self, now: Instant, epoch: Epoch, code: Option<u16>) {
        self.conn.handle_closed(now, epoch, code);
        self.settle(now);
    }

    /// A data message arrived on `epoch`: deliver it to the application
    /// only on [`Delivery::Deliver`]. Heartbeat traffic and answers to the
    /// session's own requests are [`Delivery::Consumed`].
    pub fn handle_message(&mut self, now: Instant, epoch: Epoch, data: &[u8]) -> Delivery {
        let mut d = self.conn.handle_message(now, epoch, data);
        if d == Delivery::Stale {
            return d;
        }
        // A rate-limit answer holds the client whoever asked (a raw request,
        // the heartbeat's own): without a session yet, one is made to read
        // it, so the hold and the `RateLimited` event are the same as with
        // one. Only clients with a rate limit look (a plain WebSocket never
        // scans its data for errors).
        if self.session.is_none()
            && self.conn.config().rate_limit.is_some()
            && self.rate_limit_answer(data)
        {
            self.session_mut();
        }
        if let Some(s) = self.session.as_deref_mut() {
            // Answers to the session's own requests are consumed (they may
            // carry tokens); heartbeat answers were consumed already.
            if s.on_message(now, data, &self.protocol) && d == Delivery::Deliver {
                d = Delivery::Consumed;
            }
        }
        self.settle(now);
        d
    }

    fn rate_limit_answer(&self, data: &[u8]) -> bool {
        data.windows(7).any(|w| w == b"\"error\"")
            && crate::json::scan(data)
                .ok()
                .and_then(|v| v.error_code)
                .is_some_and(|c| {
                    self.protocol.classify(c) == crate::exchange::ErrorClass::RateLimited
                })
    }

    /// A pong arrived on `epoch`.
    pub fn handle_pong(&mut self, now: Instant, epoch: Epoch, payload: &[u8]) {
        self.conn.handle_pong(now, epoch, payload);
    }

    /// A ping arrived on `epoch`: `true` if the caller must answer now with
    /// a pong carrying the same payload.
    pub fn handle_ping(&mut self, now: Instant, epoch: Epoch, payload: &[u8]) -> bool {
        self.conn.handle_ping(now, epoch, payload)
    }

    /// Timers: connection deadlines, heartbeats, backoff, request deadlines,
    /// token refresh. Call at (or after) [`Client::poll_timeout`].
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.conn.poll_timeout().is_some_and(|t| t <= now) {
            self.conn.handle_timeout(now);
        }
        // As in `poll_timeout`: the session's deadlines only run on an open
        // socket. One that is closing, or ended this very tick (close or
        // heartbeat timeout), reports nothing more after its
        // `Disconnected` / `Exited` (its requests fail with it).
        if let Some(s) = self.session.as_deref_mut().filter(|_| self.conn.is_open()) {
            s.handle_timeout(now);
        }
        self.settle(now);
    }

    /// Next socket action.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.conn.poll_action()
    }

    /// Render the next session message due at `now` into `out` (appended),
    /// already admitted against the rate limit and `pending_bytes` (what
    /// the socket still has to write). Send the appended text on the socket
    /// of [`Transmit::epoch`]. `None`: nothing to send now (then anything
    /// appended to `out` is to be discarded).
    pub fn poll_transmit<W>(
        &mut self,
        now: Instant,
        pending_bytes: usize,
        out: &mut W,
    ) -> Option<Transmit>
    where
        W: fmt::Write + AsRef<str>,
    {
        if !self.conn.is_open() {
            return None;
        }
        let s = self.session.as_deref_mut()?;
        let start = out.as_ref().len();
        let t = s.poll_transmit(now, &self.protocol, out)?;
        let text = out.as_ref().get(start..).unwrap_or_default();
        match self.conn.handle_send(now, text.as_bytes(), pending_bytes) {
            Ok(()) => Some(t),
            Err(e) => {
                let retry = match e {
                    SendError::RateLimited { retry_after } => retry_after,
                    _ => QUEUE_RETRY,
                };
                s.transmit_failed(&t, now + retry);
                None
            }
        }
    }

    /// The message of `transmit` could not be written after all: it is
    /// rendered again at `retry_at`.
    pub fn transmit_failed(&mut self, transmit: &Transmit, retry_at: Instant) {
        if let Some(s) = self.session.as_deref_mut() {
            s.transmit_failed(transmit, retry_at);
        }
    }

    /// Next event for the application.
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        if let Some(e) = self.conn.poll_event() {
            self.observe(e);
            return Some(ClientEvent::Connection(e));
        }
        self.session
            .as_deref_mut()
            .and_then(|s| s.poll_event())
            .map(ClientEvent::Session)
    }

    /// When [`Client::handle_timeout`] (or [`Client::poll_transmit`]) is due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        // The session only acts on an open socket; while closing, its due
        // steps would be reported forever (the close ends them anyway).
        let s = self
            .session
            .as_deref()
            .filter(|_| self.conn.is_open())
            .and_then(|s| s.poll_timeout());
        earliest(self.conn.poll_timeout(), s)
    }

    /// Carry out what the session decided about the socket.
    fn settle(&mut self, now: Instant) {
        self.last_now = self.last_now.max(now);
        let Some(s) = self.session.as_deref_mut() else {
            return;
        };
        while let Some(signal) = s.take_signal() {
            match signal {
                Signal::Throttle => {
                    let wait = self.conn.throttle(now);
                    log::debug!("zenws-core: rate limited by the server, holding {wait:?}");
                }
                Signal::Drop(error) => {
                    // 1008 (policy violation): refused credentials; 1011:
                    // the session could not proceed (no answer in time).
                    let code = if error.is_transient() { 1011 } else { 1008 };
                    self.conn.abort(now, self.conn.epoch(), error, code);
                }
            }
        }
    }

    /// The session sees the connection's lifecycle as the caller polls it.
    fn observe(&mut self, e: Event) {
        match e {
            Event::Opened { epoch } if self.session.is_some() || self.protocol.authenticates() => {
                let now = self.last_now;
                // `on_open` ignores a second call for the same socket (a
                // session just created here has started on it already).
                self.session_mut();
                if let Some(s) = self.session.as_deref_mut() {
                    s.on_open(now, epoch, &self.protocol);
                }
            }
            Event::Disconnected { .. } | Event::Exited(_) => {
                if let Some(s) = self.session.as_deref_mut() {
                    s.on_disconnect();
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
#[path = "client_tests.rs"]
mod tests;
