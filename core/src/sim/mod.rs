//! Deterministic simulation of the core (feature `sim`, implies `std`).
//!
//! One `u64` seed drives everything: a virtual clock, a simulated network
//! with a simulated Deribit server behind every socket (one account, one
//! credit bucket, for all of them), a supervisor with `N` clients — each
//! exactly the [`Client<Deribit>`](crate::client::Client) users run, with
//! or without credentials and cancel-on-disconnect, tracking a drawn mix
//! of public, `.raw` and `user.*` channels — a user workload that sends
//! messages, public and private requests, subscribes and unsubscribes
//! channels at runtime (sometimes while the subscribe is in flight, and
//! back again at once) and sometimes closes a client,
//! and the faults:
//!
//! - **network** ([`Faults`]): latency and jitter with in-order delivery
//!   (TCP never reorders), connection refused, black-holed connects, stalls
//!   (half-open: nothing flows either way, no close), resets, server
//!   outages over time windows;
//! - **server**: closes normally, going away or abnormally, crashes (EOF),
//!   crashes during the handshake, answers 503/401 to the upgrade, stops
//!   answering pings or sending heartbeats, sends Deribit `heartbeat` and
//!   `test_request` (and closes a connection that leaves one unanswered),
//!   answers or ignores auth, subscriptions and requests, answers late,
//!   streams a feed, sends an oversized message;
//! - **Deribit session** (`server`): tokens that expire (then 13009 on
//!   private requests and no `user.*` data), refresh tokens sometimes
//!   refused, transient auth errors (13028 / 10040 / 11051), rejected
//!   credentials, channels omitted from a subscribe result, `.raw` channels
//!   refused without authorisation, subscribe errors, `set_heartbeat`
//!   errors, cancel-on-disconnect acknowledged / refused / ignored, and
//!   10028 (then the connection is closed) when the account's bucket is empty.
//!
//! The simulator plays only the network, the server and the user: it
//! renders no session message and decides nothing about the session. The
//! driver loop: the next instant is the earliest of every client's
//! `poll_timeout()` (woken up to `timer_slack` late, as a real event loop
//! is) and the next network delivery; the clock jumps there, timers fire,
//! one delivery is fed in, and every client is drained in the documented
//! call order (actions, transmits, events) and its output carried out, as
//! `zenws-mio` does; then the [`invariants`] are checked. The same seed
//! gives a byte-identical trace; [`SimReport::trace_hash`] fingerprints it.
//!
//! ```
//! use zenws_core::sim::{run_seed, SimConfig};
//! let cfg = SimConfig { duration: core::time::Duration::from_secs(60), ..SimConfig::default() };
//! let a = run_seed(7, &cfg).unwrap();
//! let b = run_seed(7, &cfg).unwrap();
//! assert_eq!(a.trace_hash, b.trace_hash);
//! assert!(a.virtual_time >= cfg.duration);
//! ```
//!
//! A failing seed is a [`Violation`]; its `Display` names the broken
//! invariant, the virtual time, the tail of the trace (with
//! [`SimConfig::keep_trace`]) and the command that replays it.

extern crate std;

mod driver;
pub mod invariants;
mod network;
mod server;
mod trace;

use std::fmt;
use std::format;
use std::string::String;
use std::time::Duration;
use std::vec::Vec;

use crate::time::Instant;

/// Fault rates. Probabilities are in permille (‰) unless stated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Faults {
    /// A connection attempt is refused (default 60 ‰).
    pub refuse: u16,
    /// A connection attempt gets no answer at all (default 20 ‰).
    pub blackhole: u16,
    /// The server crashes during the handshake (default 30 ‰).
    pub handshake_crash: u16,
    /// The upgrade is answered 503 (default 20 ‰).
    pub upgrade_unavailable: u16,
    /// The upgrade is answered 401, a fatal error (default 3 ‰; needs `fatal`).
    pub upgrade_rejected: u16,
    /// The handshake takes between ½ and 1½ connect timeouts (default 20 ‰).
    pub slow_handshake: u16,
    /// An open socket suffers one fault (stall, reset, close, crash,
    /// silence, oversized message) (default 500 ‰) ...
    pub socket_fault: u16,
    /// ... at a uniformly drawn time within this after opening (default 120 s).
    pub fault_within: Duration,
    /// Up to this many server outages per seed, each 1–60 s of refused or
    /// black-holed connects (default 2).
    pub max_outages: u32,
    /// The server ignores a request or an auth request (default 30 ‰).
    pub ignore_request: u16,
    /// The server ignores a subscribe request (default 100 ‰).
    pub ignore_subscribe: u16,
    /// The server rejects the credentials, a fatal error (default 10 ‰; needs `fatal`).
    pub auth_reject: u16,
    /// An auth request is answered with a transient error: 13028, 10040
    /// or 11051 (default 60 ‰).
    pub auth_transient: u16,
    /// A refresh token is refused (default 150 ‰): the client must fall
    /// back to its credentials.
    pub refresh_refuse: u16,
    /// Access tokens live this many seconds, drawn per token (default 5–60).
    pub token_life: (u64, u64),
    /// A channel is left out of a subscribe result (default 60 ‰).
    pub subscribe_omit: u16,
    /// A subscribe request is answered with an error, transient (10040) or
    /// not (11050) (default 30 ‰).
    pub subscribe_error: u16,
    /// `public/set_heartbeat` is answered with an error (default 150 ‰).
    pub heartbeat_setup_error: u16,
    /// `enable_cancel_on_disconnect` is answered with an error (default 50 ‰).
    pub cod_error: u16,
    /// The account's credit bucket: burst, in requests (drawn per seed in
    /// this range; default 4–12) ...
    pub account_burst: (u32, u32),
    /// ... and refill, requests per second (default 2–8). Each client's
    /// rate limit has the same shape; the server's bucket is shared.
    pub account_refill: (u32, u32),
    /// The server answers a request 1–40 s late (default 50 ‰).
    pub slow_answer: u16,
    /// Mean gap between feed notifications on a subscribed socket
    /// (default 1 s; zero: no feed).
    pub feed_every: Duration,
    /// Include the fatal faults (401, rejected credentials, oversized
    /// messages) (default true).
    pub fatal: bool,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            refuse: 60,
            blackhole: 20,
            handshake_crash: 30,
            upgrade_unavailable: 20,
            upgrade_rejected: 3,
            slow_handshake: 20,
            socket_fault: 500,
            fault_within: Duration::from_secs(120),
            max_outages: 2,
            ignore_request: 30,
            ignore_subscribe: 100,
            auth_reject: 10,
            auth_transient: 60,
            refresh_refuse: 150,
            token_life: (5, 60),
            subscribe_omit: 60,
            subscribe_error: 30,
            heartbeat_setup_error: 150,
            cod_error: 50,
            account_burst: (4, 12),
            account_refill: (2, 8),
            slow_answer: 50,
            feed_every: Duration::from_secs(1),
            fatal: true,
        }
    }
}

/// What to simulate. Everything else (heartbeat strategies, retry and
/// restart policies, latencies, session settings) is drawn from the seed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimConfig {
    /// Clients under the one supervisor (default 3).
    pub clients: usize,
    /// Virtual time before the user stops every client (default 10 min).
    pub duration: Duration,
    /// Each client tracks 0 to this many channels, a drawn mix of public
    /// (`x.N.100ms`), `.raw` and `user.*` ones (default 6, at most 16).
    pub max_channels: usize,
    /// Fault rates.
    pub faults: Faults,
    /// A timer wake-up is up to this late (default 2 ms; zero: exact).
    pub timer_slack: Duration,
    /// Chance (‰) that the user closes a client during the run (default 150).
    pub user_close: u16,
    /// Chance (‰) that a user action subscribes a channel from the
    /// client's pool or unsubscribes a tracked one instead of sending
    /// (default 150). After a subscribe request goes out the user sometimes
    /// lets one of its channels go while it is in flight, and after an
    /// unsubscribe sometimes takes it back at once.
    pub user_subscribe: u16,
    /// Keep the readable trace in the report (default false: hash only).
    pub keep_trace: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            clients: 3,
            duration: Duration::from_secs(600),
            max_channels: 6,
            faults: Faults::default(),
            timer_slack: Duration::from_millis(2),
            user_close: 150,
            user_subscribe: 150,
            keep_trace: false,
        }
    }
}

/// What one seed did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SimReport {
    /// The seed.
    pub seed: u64,
    /// FNV-1a hash of the whole trace: equal seeds give equal hashes.
    pub trace_hash: u64,
    /// Lines in the trace.
    pub trace_lines: u64,
    /// Driver steps (clock advances).
    pub steps: u64,
    /// Virtual time simulated.
    pub virtual_time: Duration,
    /// Successful WebSocket opens.
    pub opens: u64,
    /// Connection attempts that were retries.
    pub reconnects: u64,
    /// Supervisor restarts.
    pub restarts: u64,
    /// Supervisor escalations (restart budget exhausted).
    pub escalations: u64,
    /// `HeartbeatFailed` events (dead peers detected).
    pub heartbeat_failures: u64,
    /// User sends accepted by the core.
    pub sends_accepted: u64,
    /// Accepted sends that reached the server.
    pub sends_delivered: u64,
    /// Sends refused with a [`SendError`](crate::SendError).
    pub sends_rejected: u64,
    /// Accepted sends lost with their socket, and reported as such.
    pub sends_failed: u64,
    /// Requests answered.
    pub requests_resolved: u64,
    /// Requests that timed out.
    pub requests_timed_out: u64,
    /// Requests failed by a disconnect.
    pub requests_failed: u64,
    /// Requests answered with a JSON-RPC error.
    pub requests_errored: u64,
    /// Restores completed (`Restored`), with channels granted / rejected.
    pub restores: u64,
    /// Channels granted over all restores.
    pub channels_granted: u64,
    /// Channels reported rejected (`SubscriptionRejected`).
    pub channels_rejected: u64,
    /// `Authenticated` / `TokenRefreshed` events.
    pub authentications: u64,
    /// `TokenRefreshed` events.
    pub token_refreshes: u64,
    /// `AuthRetrying` events.
    pub auth_retries: u64,
    /// `HeartbeatSetupFailed` events.
    pub heartbeat_setup_failures: u64,
    /// Connects held back by a rate limit (a 10028 reached the client).
    pub rate_limit_holds: u64,
    /// How often each server fault was drawn.
    pub faults: FaultCounts,
    /// The user's runtime subscription changes.
    pub actions: ActionCounts,
    /// The readable trace, if [`SimConfig::keep_trace`].
    pub trace: Vec<String>,
}

/// The user's runtime subscription changes in a seed (each client draws
/// them from a small pool of channel names).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ActionCounts {
    /// `Client::subscribe` calls.
    pub subscribes: u64,
    /// ... of a channel the client unsubscribed before.
    pub resubscribes: u64,
    /// ... while its unsubscribe (or the subscribe it abandoned) was
    /// still unanswered on the open socket.
    pub resubscribes_leaving: u64,
    /// `Client::unsubscribe` calls that let go of a tracked channel.
    pub unsubscribes: u64,
    /// ... while the channel's subscribe request was in flight on the open
    /// socket (sent, not answered).
    pub unsubscribes_in_flight: u64,
    /// ... of a channel granted on the open socket.
    pub unsubscribes_granted: u64,
    /// Steps at which a client was quiet and its subscriptions were
    /// compared with the server's.
    pub quiet_checks: u64,
}

impl ActionCounts {
    /// `(name, count)` for every counter.
    pub fn named(&self) -> [(&'static str, u64); 7] {
        [
            ("subscribes", self.subscribes),
            ("resubscribes", self.resubscribes),
            ("resubscribes_leaving", self.resubscribes_leaving),
            ("unsubscribes", self.unsubscribes),
            ("unsubscribes_in_flight", self.unsubscribes_in_flight),
            ("unsubscribes_granted", self.unsubscribes_granted),
            ("quiet_checks", self.quiet_checks),
        ]
    }
}

/// How many times each Deribit fault was drawn in a seed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultCounts {
    /// Refresh-token grants received.
    pub refreshes: u64,
    /// Refresh tokens refused.
    pub refresh_refused: u64,
    /// Auth requests answered with a transient error.
    pub auth_transient: u64,
    /// Auth requests ignored.
    pub auth_ignored: u64,
    /// Auth answers sent late.
    pub auth_slow: u64,
    /// Credentials rejected (fatal).
    pub auth_rejected: u64,
    /// Private requests that reached the server on an expired token (each
    /// excused by an obstruction, or a violation).
    pub private_on_expired_token: u64,
    /// Requests answered 10028 (the connection was then closed).
    pub rate_limited: u64,
    /// Channels left out of a subscribe result.
    pub channels_omitted: u64,
    /// `.raw` channels refused for want of authorisation.
    pub raw_unauthorized: u64,
    /// Subscribe requests answered with an error.
    pub subscribe_errors: u64,
    /// `private/subscribe` refused with 13009 (expired token).
    pub subscribe_unauthorized: u64,
    /// Subscribe requests ignored.
    pub subscribe_ignored: u64,
    /// `set_heartbeat` answered with an error.
    pub heartbeat_setup_errors: u64,
    /// Cancel-on-disconnect acknowledged.
    pub cod_acks: u64,
    /// Cancel-on-disconnect answered with an error.
    pub cod_errors: u64,
    /// Cancel-on-disconnect requests ignored.
    pub cod_ignored: u64,
    /// Connections closed because a `test_request` went unanswered.
    pub test_request_closes: u64,
    /// Unsubscribe requests answered (the channels removed).
    pub unsubscribes: u64,
    /// Unsubscribe requests ignored (the channels stay subscribed; excused).
    pub unsubscribe_ignored: u64,
    /// Unsubscribe requests answered with a transient error (10040).
    pub unsubscribe_errors: u64,
}

impl FaultCounts {
    /// `(name, count)` for every counter.
    pub fn named(&self) -> [(&'static str, u64); 21] {
        [
            ("refreshes", self.refreshes),
            ("refresh_refused", self.refresh_refused),
            ("auth_transient", self.auth_transient),
            ("auth_ignored", self.auth_ignored),
            ("auth_slow", self.auth_slow),
            ("auth_rejected", self.auth_rejected),
            ("private_on_expired_token", self.private_on_expired_token),
            ("rate_limited_10028", self.rate_limited),
            ("channels_omitted", self.channels_omitted),
            ("raw_unauthorized", self.raw_unauthorized),
            ("subscribe_errors", self.subscribe_errors),
            ("subscribe_unauthorized_13009", self.subscribe_unauthorized),
            ("subscribe_ignored", self.subscribe_ignored),
            ("heartbeat_setup_errors", self.heartbeat_setup_errors),
            ("cod_acks", self.cod_acks),
            ("cod_errors", self.cod_errors),
            ("cod_ignored", self.cod_ignored),
            ("test_request_closes", self.test_request_closes),
            ("unsubscribes", self.unsubscribes),
            ("unsubscribe_ignored", self.unsubscribe_ignored),
            ("unsubscribe_errors", self.unsubscribe_errors),
        ]
    }
}

/// A broken invariant (or a panic) in one seed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The seed.
    pub seed: u64,
    /// Virtual time of the violation.
    pub at: Instant,
    /// What broke.
    pub message: String,
    /// The trace up to the violation, if [`SimConfig::keep_trace`].
    pub trace: Vec<String>,
}

impl Violation {
    /// The shell command that replays this seed with its full trace.
    pub fn replay_command(&self) -> String {
        replay_command(self.seed)
    }
}

/// The shell command that replays `seed` with its full trace.
pub fn replay_command(seed: u64) -> String {
    format!("SEED={seed} cargo run --release -p zenws-core --features sim --example sim_seeds")
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.at.as_nanos();
        writeln!(
            f,
            "seed {} violated an invariant at t={}.{:06}: {}",
            self.seed,
            n / 1_000_000_000,
            n % 1_000_000_000 / 1_000,
            self.message
        )?;
        let tail = self.trace.len().saturating_sub(40);
        if tail > 0 {
            writeln!(f, "  ... {tail} earlier trace lines")?;
        }
        for line in &self.trace[tail..] {
            writeln!(f, "  {line}")?;
        }
        write!(f, "replay: {}", self.replay_command())
    }
}

impl std::error::Error for Violation {}

/// A simulation in progress: step it yourself, or [`run`](Simulation::run) it.
#[derive(Debug)]
pub struct Simulation {
    world: driver::World,
}

impl Simulation {
    /// Set up the world for `seed`.
    pub fn new(seed: u64, config: &SimConfig) -> Self {
        Simulation {
            world: driver::World::new(seed, config),
        }
    }

    /// The virtual clock.
    pub fn now(&self) -> Instant {
        self.world.now()
    }

    /// Advance to the next instant something happens and check every
    /// invariant. `Ok(false)` once the run is over (after the final checks).
    pub fn step(&mut self) -> Result<bool, Violation> {
        self.world.step().map_err(|m| self.world.violation(m))
    }

    /// Run to the end.
    pub fn run(mut self) -> Result<SimReport, Violation> {
        while self.step()? {}
        Ok(self.world.report())
    }
}

/// Simulate `seed` to the end. A panic inside the core is reported as a
/// [`Violation`] too.
pub fn run_seed(seed: u64, config: &SimConfig) -> Result<SimReport, Violation> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        Simulation::new(seed, config).run()
    }))
    .unwrap_or_else(|panic| {
        let message = panic
            .downcast_ref::<&str>()
            .map(|s| String::from(*s))
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        Err(Violation {
            seed,
            at: Instant::ZERO,
            message: format!("panic: {message}"),
            trace: Vec::new(),
        })
    })
}
