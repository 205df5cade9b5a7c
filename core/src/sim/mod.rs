//! Deterministic simulation of the core (feature `sim`, implies `std`).
//!
//! One `u64` seed drives everything: a virtual clock, a simulated network
//! with a simulated server behind every socket, a supervisor with `N`
//! clients ([`Connection`](crate::Connection) +
//! [`Session`](crate::session::Session) each), a user workload that sends
//! messages and requests and sometimes closes a client, and the faults:
//!
//! - **network** ([`Faults`]): latency and jitter with in-order delivery
//!   (TCP never reorders), connection refused, black-holed connects, stalls
//!   (half-open: nothing flows either way, no close), resets, server
//!   outages over time windows;
//! - **server**: closes normally, going away or abnormally, crashes (EOF),
//!   crashes during the handshake, answers 503/401 to the upgrade, stops
//!   answering pings or sending heartbeats, sends Deribit `heartbeat` and
//!   `test_request`, answers or ignores auth, subscriptions and requests,
//!   answers late, streams a feed, sends an oversized message.
//!
//! The driver loop: the next instant is the earliest of every core's
//! `poll_timeout()` (woken up to `timer_slack` late, as a real event loop
//! is) and the next network delivery; the clock jumps there, timers fire,
//! one delivery is fed in, every action and event is drained and carried
//! out, and the [`invariants`] are checked. The same seed
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
    /// Each seed tracks 0 to this many channels (default 6, at most 16).
    pub max_channels: usize,
    /// Fault rates.
    pub faults: Faults,
    /// A timer wake-up is up to this late (default 2 ms; zero: exact).
    pub timer_slack: Duration,
    /// Chance (‰) that the user closes a client during the run (default 150).
    pub user_close: u16,
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
    /// The readable trace, if [`SimConfig::keep_trace`].
    pub trace: Vec<String>,
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
    format!("SEED={seed} cargo run --release -p zenws-core --example sim_seeds")
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
