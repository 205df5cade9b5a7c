//! The session layer: what must be true after every (re)connect.
//!
//! After each open (first connect, reconnect, supervisor restart) the
//! session runs its on-open steps in order: authenticate (if configured) and
//! wait for the answer, then restore the tracked subscriptions in batches of
//! `batch_size`, `pacing` apart — exactly once per open, in insertion order.
//! The session only says *what* to do ([`Step`]); the caller renders the
//! message (e.g. Deribit's `public/auth`, `public/subscribe`) and sends it.
//!
//! It also correlates JSON-RPC requests: [`Session::track_request`] before
//! sending a request with an `id`, and each response resolves it; a deadline
//! (`request_timeout`) times it out; a disconnect fails every pending
//! request with [`SessionEvent::RequestFailed`] — none is left hanging.

use crate::connection::Epoch;
use crate::json;
use crate::requests::{Requests, TrackError};
use crate::time::{earliest, Instant};
use core::ops::Range;
use core::time::Duration;
use heapless::Deque;

/// How subscriptions come back after a reconnect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Restore {
    /// The session emits [`Step::Subscribe`] batches (default).
    Auto,
    /// Nothing is restored; the user handles `Opened` themselves.
    Off,
}

/// Session configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionConfig {
    /// Authenticate first after every open ([`Step::Authenticate`]).
    pub authenticate: bool,
    /// Subscription restoration policy.
    pub restore: Restore,
    /// Channels per subscribe request (default 20).
    pub batch_size: usize,
    /// Delay between subscribe batches (default 0).
    pub pacing: Duration,
    /// Deadline for a tracked request (default 30 s).
    pub request_timeout: Duration,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            authenticate: false,
            restore: Restore::Auto,
            batch_size: 20,
            pacing: Duration::ZERO,
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// Something to send now, rendered by the caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Send the authentication request with this JSON-RPC id.
    Authenticate {
        /// Socket it belongs to.
        epoch: Epoch,
        /// Id to put in the request; its response decides success.
        id: u64,
    },
    /// Subscribe to `channels[range]` (see [`Session::channels`]) with this id.
    Subscribe {
        /// Socket it belongs to.
        epoch: Epoch,
        /// Id to put in the request.
        id: u64,
        /// Which tracked channels, in order.
        range: Range<usize>,
    },
}

/// What the session tells the user.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionEvent {
    /// Authentication succeeded on this socket.
    Authenticated {
        /// Socket.
        epoch: Epoch,
    },
    /// The server rejected the credentials: the driver fails the client
    /// with [`Error::AuthRejected`](crate::Error::AuthRejected).
    AuthRejected {
        /// Socket.
        epoch: Epoch,
    },
    /// The authentication request got no answer within `request_timeout`
    /// (a stalled link, a busy server). Unlike [`SessionEvent::AuthRejected`]
    /// this is transient: the driver drops the socket and reports
    /// [`Error::ConnectTimeout`](crate::Error::ConnectTimeout), so the
    /// client reconnects instead of failing for good.
    AuthTimedOut {
        /// Socket.
        epoch: Epoch,
    },
    /// Every tracked channel was re-subscribed on this socket.
    Restored {
        /// Socket.
        epoch: Epoch,
        /// How many channels.
        channels: usize,
    },
    /// A tracked request got its response.
    RequestResolved {
        /// Its id.
        id: u64,
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

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Down,
    /// Must send auth (not before `at`); then wait for the answer to `id`.
    Auth {
        sent: bool,
        id: u64,
        at: Instant,
    },
    /// Next batch starts at channel `next`, not before `at`.
    Subscribing {
        next: usize,
        at: Instant,
    },
    Ready,
}

/// Session state: tracked subscriptions, restore progress, requests in flight.
/// `SUBS` channels of up to `CHAN` bytes each, `REQS` requests in flight.
///
/// ```
/// use zenws_core::session::{Session, SessionConfig, Step};
/// use zenws_core::Instant;
/// let mut s: Session = Session::new(SessionConfig::default());
/// s.subscribe("trades.BTC-PERPETUAL.raw").unwrap();
/// s.on_open(Instant::ZERO, 1);
/// let Some(Step::Subscribe { range, .. }) = s.poll_step(Instant::ZERO) else { panic!() };
/// assert_eq!(s.channel(range.start), Some("trades.BTC-PERPETUAL.raw"));
/// ```
#[derive(Debug)]
pub struct Session<const SUBS: usize = 16, const CHAN: usize = 64, const REQS: usize = 32> {
    config: SessionConfig,
    channels: heapless::Vec<heapless::String<CHAN>, SUBS>,
    phase: Phase,
    epoch: Epoch,
    next_id: u64,
    requests: Requests<REQS>,
    events: Deque<SessionEvent, 8>,
    /// Requests that ended without a response, waiting to be reported:
    /// `(id, timed_out)`. Up to `REQS` settle at once (a disconnect), more
    /// than `events` holds, so they are reported from here one by one and
    /// never dropped; `track_request` keeps in flight + settled ≤ `REQS`.
    settled: Deque<(u64, bool), REQS>,
}

impl<const SUBS: usize, const CHAN: usize, const REQS: usize> Session<SUBS, CHAN, REQS> {
    /// A session with no subscriptions.
    pub fn new(config: SessionConfig) -> Self {
        Session {
            config,
            channels: heapless::Vec::new(),
            phase: Phase::Down,
            epoch: 0,
            next_id: 1,
            requests: Requests::new(),
            events: Deque::new(),
            settled: Deque::new(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &SessionConfig {
        &self.config
    }

    /// A fresh JSON-RPC id for a user request (ids start at 1 and stay below
    /// [`CORE_ID_BASE`](crate::frame::CORE_ID_BASE)).
    pub fn next_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Track a channel for restoration (no-op if already tracked). Sending
    /// the subscribe request for the *current* connection is the caller's.
    pub fn subscribe(&mut self, channel: &str) -> Result<(), SubscribeError> {
        if self.channels.iter().any(|c| c.as_str() == channel) {
            return Ok(());
        }
        let mut name = heapless::String::new();
        name.push_str(channel)
            .map_err(|_| SubscribeError::NameTooLong)?;
        self.channels.push(name).map_err(|_| SubscribeError::Full)
    }

    /// Stop tracking a channel.
    pub fn unsubscribe(&mut self, channel: &str) -> bool {
        match self.channels.iter().position(|c| c.as_str() == channel) {
            Some(i) => {
                self.channels.remove(i);
                true
            }
            None => false,
        }
    }

    /// Tracked channels, in insertion (= restoration) order.
    pub fn channels(&self) -> impl Iterator<Item = &str> {
        self.channels.iter().map(|c| c.as_str())
    }

    /// Channel `i` in restoration order.
    pub fn channel(&self, i: usize) -> Option<&str> {
        self.channels.get(i).map(|c| c.as_str())
    }

    /// How many channels are tracked.
    pub fn channel_count(&self) -> usize {
        self.channels.len()
    }

    /// A socket opened: start the on-open steps.
    pub fn on_open(&mut self, now: Instant, epoch: Epoch) {
        self.epoch = epoch;
        self.phase = if self.config.authenticate {
            let id = self.next_id();
            Phase::Auth {
                sent: false,
                id,
                at: now,
            }
        } else {
            Phase::Subscribing { next: 0, at: now }
        };
    }

    /// The socket dropped: stop restoring, fail every pending request.
    pub fn on_disconnect(&mut self) {
        // The authentication request is the session's own: the user never
        // tracked it, so it is dropped, not reported as a failed request.
        let auth = match self.phase {
            Phase::Auth { sent: true, id, .. } => Some(id),
            _ => None,
        };
        self.phase = Phase::Down;
        while let Some(id) = self.requests.pop_any() {
            if Some(id) != auth {
                // Cannot overflow: in flight + settled ≤ REQS (see `track_request`).
                let _ = self.settled.push_back((id, false));
            }
        }
    }

    fn push_event(&mut self, e: SessionEvent) {
        if self.events.push_back(e).is_err() {
            log::warn!("zenws-core: session event queue full, dropping oldest");
            self.events.pop_front();
            let _ = self.events.push_back(e);
        }
    }

    /// The next on-open step due at `now`, if any.
    pub fn poll_step(&mut self, now: Instant) -> Option<Step> {
        match self.phase {
            Phase::Auth {
                sent: false,
                id,
                at,
            } if now >= at => {
                self.phase = Phase::Auth { sent: true, id, at };
                let _ = self.requests.track(now, id, self.config.request_timeout);
                Some(Step::Authenticate {
                    epoch: self.epoch,
                    id,
                })
            }
            Phase::Subscribing { next, at } if now >= at => {
                let total = self.channels.len();
                if self.config.restore == Restore::Off || next >= total {
                    self.phase = Phase::Ready;
                    if self.config.restore == Restore::Auto {
                        self.push_event(SessionEvent::Restored {
                            epoch: self.epoch,
                            channels: total,
                        });
                    }
                    return None;
                }
                let end = total.min(next + self.config.batch_size.max(1));
                // After the last batch, `Restored` is reported on the next
                // call, i.e. only once the caller did not hand the batch back
                // with `step_failed`.
                let at = if end >= total {
                    now
                } else {
                    now + self.config.pacing
                };
                self.phase = Phase::Subscribing { next: end, at };
                let id = self.next_id();
                Some(Step::Subscribe {
                    epoch: self.epoch,
                    id,
                    range: next..end,
                })
            }
            _ => None,
        }
    }

    /// The caller has nothing to authenticate with on this socket (e.g. no
    /// credentials configured): skip straight to restoring subscriptions,
    /// without an `Authenticated` event.
    pub fn skip_authentication(&mut self, now: Instant) {
        if let Phase::Auth { id, .. } = self.phase {
            self.requests.resolve(id);
            self.phase = Phase::Subscribing { next: 0, at: now };
        }
    }

    /// The caller could not send `step` (rate limited, write queue full):
    /// it comes back from [`Session::poll_step`] at `retry_at`, so no
    /// authentication or subscribe batch is lost.
    pub fn step_failed(&mut self, step: &Step, retry_at: Instant) {
        match *step {
            Step::Authenticate { epoch, id } if epoch == self.epoch => {
                if matches!(self.phase, Phase::Auth { id: a, .. } if a == id) {
                    self.requests.resolve(id);
                    self.phase = Phase::Auth {
                        sent: false,
                        id,
                        at: retry_at,
                    };
                }
            }
            Step::Subscribe {
                epoch, ref range, ..
            } if epoch == self.epoch => {
                if matches!(self.phase, Phase::Subscribing { .. }) {
                    self.phase = Phase::Subscribing {
                        next: range.start,
                        at: retry_at,
                    };
                }
            }
            _ => {}
        }
    }

    /// Track a user request with `id` (call before sending it).
    pub fn track_request(&mut self, now: Instant, id: u64) -> Result<(), TrackError> {
        if self.requests.len() + self.settled.len() >= REQS {
            return Err(TrackError::Full);
        }
        self.requests.track(now, id, self.config.request_timeout)
    }

    /// Forget a tracked request (its send failed).
    pub fn untrack_request(&mut self, id: u64) -> bool {
        self.requests.resolve(id)
    }

    /// An incoming data message: resolve requests, advance authentication.
    pub fn on_message(&mut self, now: Instant, data: &[u8]) {
        let Ok(view) = json::scan(data) else { return };
        let Some(id) = view.id else { return };
        if !self.requests.resolve(id) {
            return;
        }
        if let Phase::Auth {
            sent: true,
            id: auth_id,
            ..
        } = self.phase
        {
            if id == auth_id {
                if view.has_error {
                    self.phase = Phase::Down;
                    self.push_event(SessionEvent::AuthRejected { epoch: self.epoch });
                } else {
                    self.push_event(SessionEvent::Authenticated { epoch: self.epoch });
                    self.phase = Phase::Subscribing { next: 0, at: now };
                }
                return;
            }
        }
        self.push_event(SessionEvent::RequestResolved { id });
    }

    /// When [`Session::handle_timeout`] or [`Session::poll_step`] is due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let step = match self.phase {
            Phase::Subscribing { at, .. }
            | Phase::Auth {
                sent: false, at, ..
            } => Some(at),
            _ => None,
        };
        earliest(step, self.requests.poll_timeout())
    }

    /// Expire requests whose deadline passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(id) = self.requests.pop_expired(now) {
            if matches!(self.phase, Phase::Auth { id: a, .. } if a == id) {
                self.phase = Phase::Down;
                self.push_event(SessionEvent::AuthTimedOut { epoch: self.epoch });
            } else {
                let _ = self.settled.push_back((id, true));
            }
        }
    }

    /// Next event for the user.
    pub fn poll_event(&mut self) -> Option<SessionEvent> {
        self.events.pop_front().or_else(|| {
            self.settled
                .pop_front()
                .map(|(id, timed_out)| match timed_out {
                    true => SessionEvent::RequestTimedOut { id },
                    false => SessionEvent::RequestFailed { id },
                })
        })
    }

    /// Requests in flight.
    pub fn pending_requests(&self) -> usize {
        self.requests.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Instant {
        Instant::from_millis(n)
    }

    #[test]
    fn auth_then_paced_batches_in_order_every_open() {
        let cfg = SessionConfig {
            authenticate: true,
            batch_size: 2,
            pacing: Duration::from_millis(10),
            ..SessionConfig::default()
        };
        let mut s: Session<8, 16, 4> = Session::new(cfg);
        for c in ["a", "b", "c"] {
            s.subscribe(c).unwrap();
        }
        for epoch in 1..=2 {
            s.on_open(ms(0), epoch);
            let Some(Step::Authenticate { id, .. }) = s.poll_step(ms(0)) else {
                panic!()
            };
            assert_eq!(s.poll_step(ms(0)), None, "waits for the auth answer");
            let mut msg = heapless::String::<64>::new();
            core::fmt::write(&mut msg, format_args!(r#"{{"id":{id},"result":{{}}}}"#)).unwrap();
            s.on_message(ms(1), msg.as_bytes());
            assert_eq!(s.poll_event(), Some(SessionEvent::Authenticated { epoch }));
            let Some(Step::Subscribe { range, .. }) = s.poll_step(ms(1)) else {
                panic!()
            };
            assert_eq!(range, 0..2);
            assert_eq!(s.poll_step(ms(5)), None, "paced");
            assert_eq!(s.poll_timeout(), Some(ms(11)));
            let Some(Step::Subscribe { range, .. }) = s.poll_step(ms(11)) else {
                panic!()
            };
            assert_eq!(range, 2..3);
            // Restored once the caller comes back without handing the batch back.
            assert_eq!(s.poll_step(ms(11)), None);
            assert_eq!(
                s.poll_event(),
                Some(SessionEvent::Restored { epoch, channels: 3 })
            );
            assert_eq!(s.poll_step(ms(100)), None, "exactly once");
            s.on_disconnect();
        }
    }

    #[test]
    fn disconnect_fails_pending_and_auth_error_is_reported() {
        let mut s: Session<4, 16, 4> = Session::new(SessionConfig {
            authenticate: true,
            ..SessionConfig::default()
        });
        s.track_request(ms(0), 5).unwrap();
        assert_eq!(s.track_request(ms(0), 5), Err(TrackError::DuplicateId));
        s.on_disconnect();
        assert_eq!(s.poll_event(), Some(SessionEvent::RequestFailed { id: 5 }));
        s.on_open(ms(0), 3);
        let Some(Step::Authenticate { id, .. }) = s.poll_step(ms(0)) else {
            panic!()
        };
        let mut msg = heapless::String::<64>::new();
        core::fmt::write(
            &mut msg,
            format_args!(r#"{{"id":{id},"error":{{"code":13004}}}}"#),
        )
        .unwrap();
        s.on_message(ms(1), msg.as_bytes());
        assert_eq!(
            s.poll_event(),
            Some(SessionEvent::AuthRejected { epoch: 3 })
        );
    }

    #[test]
    fn requests_time_out() {
        let mut s: Session = Session::new(SessionConfig::default());
        s.track_request(ms(0), 9).unwrap();
        s.handle_timeout(ms(29_999));
        assert_eq!(s.poll_event(), None);
        s.handle_timeout(ms(30_000));
        assert_eq!(
            s.poll_event(),
            Some(SessionEvent::RequestTimedOut { id: 9 })
        );
    }

    #[test]
    fn subscription_set_limits() {
        let mut s: Session<1, 4, 1> = Session::new(SessionConfig::default());
        assert_eq!(s.subscribe("toolong"), Err(SubscribeError::NameTooLong));
        s.subscribe("ab").unwrap();
        s.subscribe("ab").unwrap();
        assert_eq!(s.subscribe("cd"), Err(SubscribeError::Full));
        assert!(s.unsubscribe("ab"));
        assert_eq!(s.channel_count(), 0);
    }
}

#[cfg(test)]
mod step_retry_tests {
    use super::*;

    #[test]
    fn a_refused_step_comes_back_and_restored_waits_for_it() {
        let cfg = SessionConfig {
            authenticate: true,
            batch_size: 1,
            ..SessionConfig::default()
        };
        let mut s: Session<4, 8, 4> = Session::new(cfg);
        s.subscribe("a").unwrap();
        let t0 = Instant::from_millis(0);
        s.on_open(t0, 1);
        let auth = s.poll_step(t0).unwrap();
        // Rate limited: the same authentication comes back at 50 ms, not before.
        s.step_failed(&auth, Instant::from_millis(50));
        assert_eq!(s.poll_step(Instant::from_millis(49)), None);
        assert_eq!(s.poll_timeout(), Some(Instant::from_millis(50)));
        let Some(Step::Authenticate { id, .. }) = s.poll_step(Instant::from_millis(50)) else {
            panic!()
        };
        let mut msg = heapless::String::<64>::new();
        core::fmt::write(&mut msg, format_args!(r#"{{"id":{id},"result":{{}}}}"#)).unwrap();
        s.on_message(Instant::from_millis(51), msg.as_bytes());
        assert_eq!(
            s.poll_event(),
            Some(SessionEvent::Authenticated { epoch: 1 })
        );
        let sub = s.poll_step(Instant::from_millis(51)).unwrap();
        s.step_failed(&sub, Instant::from_millis(60));
        assert_eq!(
            s.poll_event(),
            None,
            "not restored while the batch is refused"
        );
        assert!(matches!(
            s.poll_step(Instant::from_millis(60)),
            Some(Step::Subscribe { range, .. }) if range == (0..1)
        ));
        assert_eq!(s.poll_step(Instant::from_millis(60)), None);
        assert_eq!(
            s.poll_event(),
            Some(SessionEvent::Restored {
                epoch: 1,
                channels: 1
            })
        );
    }
}

#[cfg(test)]
mod skip_auth_tests {
    use super::*;

    #[test]
    fn skipped_authentication_goes_straight_to_restore() {
        let cfg = SessionConfig {
            authenticate: true,
            ..SessionConfig::default()
        };
        let mut s: Session<4, 8, 4> = Session::new(cfg);
        s.subscribe("a").unwrap();
        let t0 = Instant::from_millis(0);
        s.on_open(t0, 1);
        assert!(matches!(s.poll_step(t0), Some(Step::Authenticate { .. })));
        s.skip_authentication(t0);
        assert_eq!(s.pending_requests(), 0);
        assert!(matches!(s.poll_step(t0), Some(Step::Subscribe { .. })));
        assert_eq!(s.poll_step(t0), None);
        assert_eq!(
            s.poll_event(),
            Some(SessionEvent::Restored {
                epoch: 1,
                channels: 1
            })
        );
    }
}
