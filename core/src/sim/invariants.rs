//! The invariants, checked on every step of every seed.
//!
//! Each check returns `Err(message)` on a violation; the simulation stops
//! there and reports the seed, the virtual time and the trace.
//!
//! | invariant | where |
//! |---|---|
//! | restarts never exceed the intensity in any window; escalation only when they would | `Restarts` |
//! | a dead peer is detected within `interval × threshold + timeout` of its last sign of life | `driver::check_client` |
//! | after every (re)open `Restored` comes once; the restored set (`Session::granted`) equals exactly what the server granted on that socket; every tracked channel is granted or reported (`SubscriptionRejected`), never silently dropped | `OpenSocket` |
//! | whenever a client is quiet (open, authenticated if it authenticates, no session request in flight, and nothing due: `OpenSocket::quiet`), the server's subscribed set for its socket equals `Session::granted`, which holds only tracked channels, and every tracked channel is granted or reported rejected: no channel the user unsubscribed stays subscribed (but one whose unsubscribe the server ignored); no feed on a channel after its unsubscribe answer; an unsubscribe names only let-go channels the server granted | `driver::check_quiet`, `OpenSocket` |
//! | restoration makes progress: not restored only while a session request is in flight or a retry / pacing / rate-limit wait is pending | `driver::check_client` |
//! | no channel is requested again where granted; public and private channels never share a request; `.raw` only once authenticated; subscribe only after cancel-on-disconnect was asked (if configured) | `server` |
//! | no private request (`private/*`, incl. `private/subscribe`) reaches the server on an expired token unless the server obstructed the refresh (ignored, late or refused auth, 10028) or the link stalled | `server` |
//! | no `Connect` before the credits refill after a 10028 reached the client | `driver` |
//! | no send is lost silently: each is delivered (in order, once), rejected with an error, or its socket's loss is reported (`Disconnected`, or the user's own close) | `Ledger` |
//! | every tracked request ends exactly once: resolved, timed out or failed; none is left at the end | `Ledger` |
//! | a user's close ends the client normally: no reconnect, no restart | `driver` |
//! | a fatal exit only follows a fatal cause (401, rejected credentials, oversized message); transient auth errors, refused refresh tokens and rate limits never fail a client | `driver` |
//! | input for a socket that is gone changes nothing | `driver::World::stale` |
//! | timers make progress (`poll_timeout() > now` after `handle_timeout(now)`) | `driver` |
//! | nothing is sent after our close frame; each `test_request` is answered at once | `driver` |
//! | no panic | [`run_seed`](super::run_seed) |

extern crate std;

use std::format;
use std::string::String;
use std::time::Duration;
use std::vec::Vec;

use crate::connection::Epoch;
use crate::time::Instant;

/// A check's verdict.
pub(crate) type Check = Result<(), String>;

/// The supervisor's restart history, checked against its intensity.
#[derive(Debug)]
pub(crate) struct Restarts {
    max: u32,
    window: Duration,
    at: Vec<Instant>,
}

impl Restarts {
    pub(crate) fn new(max: u32, window: Duration) -> Self {
        Restarts {
            max,
            window,
            at: Vec::new(),
        }
    }

    fn in_window(&self, now: Instant) -> u32 {
        self.at
            .iter()
            .filter(|&&t| now.saturating_since(t) <= self.window)
            .count() as u32
    }

    /// A restart was decided at `now`.
    pub(crate) fn restart(&mut self, now: Instant) -> Check {
        self.at.push(now);
        let n = self.in_window(now);
        if n > self.max {
            return Err(format!(
                "restart intensity exceeded: {n} restarts within {:?} (max {})",
                self.window, self.max
            ));
        }
        Ok(())
    }

    /// The supervisor escalated at `now`, claiming `restarts` in the window.
    pub(crate) fn escalate(&self, now: Instant, restarts: u32) -> Check {
        let n = self.in_window(now);
        if n != self.max || restarts != n {
            return Err(format!(
                "escalated with {n} restarts in the window (claimed {restarts}, max {})",
                self.max
            ));
        }
        Ok(())
    }
}

/// What one open socket's session did, as the sim sees it from the wire:
/// the channels the client asked for, what the server granted and removed
/// (recorded as the answers reach the client), what the client reported
/// rejected, and the session's own requests in flight (for the progress
/// and quiet bounds).
#[derive(Debug)]
pub(crate) struct OpenSocket {
    pub(crate) epoch: Epoch,
    pub(crate) opened_at: Instant,
    /// Channels sent in subscribe requests on this socket.
    pub(crate) requested: Vec<String>,
    /// Channels the server granted and did not remove, as its answers arrived.
    pub(crate) server_granted: Vec<String>,
    /// Channels reported with `SubscriptionRejected` (and not subscribed
    /// or unsubscribed by the user since).
    pub(crate) rejected: Vec<String>,
    /// The first `Restored` came.
    pub(crate) restored: bool,
    /// The session's requests on this socket not answered yet: (id, sent at).
    pub(crate) own: Vec<(u64, Instant)>,
    /// Subscribe requests not answered yet: id, sent at, channels.
    pub(crate) subs: Vec<(u64, Instant, Vec<String>)>,
    /// Unsubscribe requests not answered yet: id, sent at, channels.
    pub(crate) unsubs: Vec<(u64, Instant, Vec<String>)>,
    /// Channels whose unsubscribe answer reached the client (not granted
    /// since): no feed may follow it.
    left: Vec<String>,
    /// The last answer to one of them.
    last_answer: Instant,
    /// The last change the session must act on: the open, a session
    /// request sent or answered, a user subscribe / unsubscribe.
    changed: Instant,
    /// The last error answer to a session request, until the next one goes
    /// out (the session backs off up to its retry cap meanwhile).
    error_at: Option<Instant>,
    /// A session request was answered after its deadline (a stall): the
    /// client gave up on it while the server acted on it.
    pub(crate) late: bool,
}

impl OpenSocket {
    pub(crate) fn new(epoch: Epoch, now: Instant) -> Self {
        OpenSocket {
            epoch,
            opened_at: now,
            requested: Vec::new(),
            server_granted: Vec::new(),
            rejected: Vec::new(),
            restored: false,
            own: Vec::new(),
            subs: Vec::new(),
            unsubs: Vec::new(),
            left: Vec::new(),
            last_answer: now,
            changed: now,
            error_at: None,
            late: false,
        }
    }

    /// The session sent its request `id`.
    pub(crate) fn sent(&mut self, id: u64, now: Instant) {
        self.own.push((id, now));
        self.changed = now;
        self.error_at = None;
    }

    /// An answer to `id` reached the client (`error`: an error answer).
    pub(crate) fn answered(&mut self, id: u64, now: Instant, error: bool, timeout: Duration) {
        if let Some(k) = self.own.iter().position(|o| o.0 == id) {
            let (_, sent) = self.own.swap_remove(k);
            self.last_answer = self.last_answer.max(now);
            self.changed = now;
            self.late |= now >= sent + timeout;
            if error {
                self.error_at = Some(now);
            }
            self.subs.retain(|s| s.0 != id);
            self.unsubs.retain(|s| s.0 != id);
        }
    }

    /// The user subscribed or unsubscribed `name` while this socket is open.
    pub(crate) fn user_changed(&mut self, now: Instant, name: &str) {
        self.changed = now;
        // Subscribed again (asked again) or let go: an old rejection is moot.
        self.rejected.retain(|r| r != name);
    }

    /// `name` is in a subscribe request in flight (sent, unanswered, before
    /// its deadline).
    pub(crate) fn subscribing(&self, name: &str, now: Instant, timeout: Duration) -> bool {
        self.subs
            .iter()
            .any(|(_, sent, c)| *sent + timeout > now && c.iter().any(|c| c == name))
    }

    /// `name` is in an unsubscribe request in flight, or in a subscribe
    /// request in flight (then it was abandoned: the user let go meanwhile).
    pub(crate) fn leaving(&self, name: &str, now: Instant, timeout: Duration) -> bool {
        self.subscribing(name, now, timeout)
            || self
                .unsubs
                .iter()
                .any(|(_, sent, c)| *sent + timeout > now && c.iter().any(|c| c == name))
    }

    /// The server's grants reached the client.
    pub(crate) fn granted(&mut self, channels: &[String]) {
        for c in channels {
            self.left.retain(|l| l != c);
            if !self.server_granted.contains(c) {
                self.server_granted.push(c.clone());
            }
        }
    }

    /// The client asked for `channels` again: data on them may come
    /// before the answer does.
    pub(crate) fn asked(&mut self, channels: &[String]) {
        self.left.retain(|l| !channels.contains(l));
    }

    /// The server's unsubscribe answer reached the client.
    pub(crate) fn unsubscribed(&mut self, channels: &[String]) {
        for c in channels {
            self.server_granted.retain(|g| g != c);
            // Unless asked for again since (answers come in order: a
            // subscribe still unanswered was sent after the unsubscribe).
            if !self.subs.iter().any(|(_, _, s)| s.contains(c)) {
                self.left.push(c.clone());
            }
        }
    }

    /// A feed notification on `channel` reached the client.
    pub(crate) fn feed(&self, channel: &str) -> Check {
        if self.left.iter().any(|l| l == channel) {
            return Err(format!(
                "data on {channel} after its unsubscribe answer on e{}",
                self.epoch
            ));
        }
        Ok(())
    }

    /// The last moment the session made progress, with requests whose
    /// deadline passed counted as answered at their deadline. `None` while
    /// a request is still legitimately in flight.
    pub(crate) fn quiet_since(&self, now: Instant, request_timeout: Duration) -> Option<Instant> {
        let mut last = self.opened_at.max(self.last_answer);
        for &(_, sent) in &self.own {
            if sent + request_timeout > now {
                return None;
            }
            last = last.max(sent + request_timeout);
        }
        Some(last)
    }

    /// Quiet: no session request in flight (every one answered, or past
    /// its deadline), and since the last change (`changed`, or a deadline)
    /// at least `settle` passed — or `settle + retry_cap` after an error
    /// answer that no request followed yet. Anything the session had to
    /// send by then, it has sent: subscriptions are what they will stay.
    pub(crate) fn quiet(
        &self,
        now: Instant,
        request_timeout: Duration,
        settle: Duration,
        retry_cap: Duration,
    ) -> bool {
        let mut last = self.changed;
        for &(_, sent) in &self.own {
            if sent + request_timeout > now {
                return false;
            }
            last = last.max(sent + request_timeout);
        }
        now >= last + settle && self.error_at.is_none_or(|e| now >= e + retry_cap + settle)
    }

    /// `SubscriptionRejected` on this socket for tracked channel `name`;
    /// `excused`: the server may hold it without the client knowing.
    pub(crate) fn rejected(&mut self, name: &str, excused: bool) -> Check {
        if self.rejected.iter().any(|r| r == name) {
            return Err(format!("{name} reported rejected twice on e{}", self.epoch));
        }
        if !excused && !self.late && self.server_granted.iter().any(|g| g == name) {
            return Err(format!(
                "{name} reported rejected but the server granted it on e{}",
                self.epoch
            ));
        }
        self.rejected.push(String::from(name));
        Ok(())
    }

    /// The session reported `Restored { granted, rejected }` (after the
    /// open, and again after a runtime subscribe): `restored` is the
    /// client's granted set, `tracked` the user's channels, `excused`
    /// channels the server may hold without the client knowing. The
    /// restored set is what the server granted (but channels being let
    /// go), and every tracked channel is granted or was reported rejected.
    pub(crate) fn restored(
        &mut self,
        granted: usize,
        rejected: usize,
        restored: &[String],
        tracked: &[String],
        excused: &[String],
    ) -> Check {
        let e = self.epoch;
        self.restored = true;
        if !self.late {
            if let Some(c) = restored.iter().find(|c| !self.server_granted.contains(c)) {
                return Err(format!(
                    "Restored e{e}: {c} granted in the client, not by the server {:?}",
                    self.server_granted
                ));
            }
            if let Some(c) = self
                .server_granted
                .iter()
                .find(|c| !restored.contains(c) && tracked.contains(c) && !excused.contains(c))
            {
                return Err(format!(
                    "Restored e{e}: tracked {c} granted by the server, not in the client's {restored:?}"
                ));
            }
        }
        if granted != restored.len() || rejected != self.rejected.len() {
            return Err(format!(
                "Restored e{e} claims {granted} granted / {rejected} rejected, but {} granted / {} reported",
                restored.len(),
                self.rejected.len()
            ));
        }
        for name in tracked {
            let ok = restored.contains(name);
            let reported = self.rejected.contains(name);
            if ok == reported {
                return Err(format!(
                    "Restored e{e}: {name} granted: {ok}, reported rejected: {reported} (exactly one must hold)"
                ));
            }
        }
        Ok(())
    }
}

/// Where a user send stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Send {
    /// Written on the socket of this epoch, not yet at the server.
    InFlight(Epoch),
    /// Its socket is gone; the user has not been told yet.
    Orphaned(Epoch),
}

/// Per-client ledger of sends and requests.
#[derive(Debug, Default)]
pub(crate) struct Ledger {
    sends: Vec<(u64, Send)>,
    last_delivered: Option<u64>,
    requests: Vec<u64>,
    /// The session's own requests sent (their ids are in its reserved range).
    own_sent: u64,
    pub(crate) accepted: u64,
    pub(crate) delivered: u64,
    pub(crate) rejected: u64,
    pub(crate) failed: u64,
    pub(crate) resolved: u64,
    pub(crate) errored: u64,
    pub(crate) timed_out: u64,
    pub(crate) req_failed: u64,
}

impl Ledger {
    /// `handle_send` accepted message `seq`; it was written on `epoch`.
    pub(crate) fn accepted(&mut self, seq: u64, epoch: Epoch) {
        self.accepted += 1;
        self.sends.push((seq, Send::InFlight(epoch)));
    }

    /// The server received message `seq` on `epoch`: in order, exactly once.
    pub(crate) fn delivered(&mut self, seq: u64, epoch: Epoch) -> Check {
        let first = self
            .sends
            .iter()
            .position(|&(_, s)| s == Send::InFlight(epoch));
        match first {
            Some(i) if self.sends[i].0 == seq => {
                self.sends.remove(i);
            }
            _ => {
                return Err(format!(
                    "server got seq {seq} on e{epoch} out of order or twice (in flight: {:?})",
                    self.sends
                ))
            }
        }
        if self.last_delivered.is_some_and(|l| l >= seq) {
            return Err(format!(
                "seq {seq} delivered after {:?}",
                self.last_delivered
            ));
        }
        self.last_delivered = Some(seq);
        self.delivered += 1;
        Ok(())
    }

    /// The socket of `epoch` is gone: what was in flight on it is lost.
    pub(crate) fn socket_gone(&mut self, epoch: Epoch) {
        for (_, s) in &mut self.sends {
            if *s == Send::InFlight(epoch) {
                *s = Send::Orphaned(epoch);
            }
        }
    }

    /// The user was told that the socket of `epoch` (or, with `None`, the
    /// client) went away: its lost sends are accounted for.
    pub(crate) fn told(&mut self, epoch: Option<Epoch>) {
        let before = self.sends.len();
        self.sends.retain(|&(_, s)| match (s, epoch) {
            (Send::Orphaned(e), Some(t)) => e != t,
            (Send::Orphaned(_), None) => false,
            _ => true,
        });
        self.failed += (before - self.sends.len()) as u64;
    }

    /// Nothing may stay lost without the user having been told.
    pub(crate) fn check_told(&self) -> Check {
        match self
            .sends
            .iter()
            .find(|(_, s)| matches!(s, Send::Orphaned(_)))
        {
            Some((seq, s)) => Err(format!(
                "send seq {seq} silently lost: {s:?} and no Disconnected/Exited told the user"
            )),
            None => Ok(()),
        }
    }

    /// Everything settled (end of the run).
    pub(crate) fn check_settled(&self, session_pending: usize) -> Check {
        self.check_told()?;
        if let Some((seq, s)) = self.sends.first() {
            return Err(format!("send seq {seq} never settled: {s:?}"));
        }
        if !self.requests.is_empty() || session_pending != 0 {
            return Err(format!(
                "requests never settled: {:?} (session still tracks {session_pending})",
                self.requests
            ));
        }
        Ok(())
    }

    /// A send was refused with an error.
    pub(crate) fn rejected(&mut self) {
        self.rejected += 1;
    }

    /// A user request `id` is tracked.
    pub(crate) fn track(&mut self, id: u64) {
        self.requests.push(id);
    }

    /// The request was untracked again because its send failed.
    pub(crate) fn untrack(&mut self, id: u64) {
        self.requests.retain(|&r| r != id);
    }

    /// The session sent its own request `id`.
    pub(crate) fn own(&mut self, id: u64) {
        debug_assert!(id >= crate::session::SESSION_ID_BASE);
        self.own_sent += 1;
    }

    /// An outcome for request `id`: it must be pending, and settles it.
    pub(crate) fn outcome(&mut self, id: u64, what: &str) -> Check {
        let Some(i) = self.requests.iter().position(|&r| r == id) else {
            let whose = if id >= crate::session::SESSION_ID_BASE {
                "the session's own request"
            } else {
                "no pending request"
            };
            return Err(format!("{what} for id {id}: {whose}"));
        };
        self.requests.swap_remove(i);
        match what {
            "resolved" => self.resolved += 1,
            "error" => self.errored += 1,
            "timed out" => self.timed_out += 1,
            _ => self.req_failed += 1,
        }
        Ok(())
    }
}
