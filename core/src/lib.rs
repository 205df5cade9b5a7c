//! The sans-IO decision core of zenws: every decision a supervised
//! WebSocket client makes, as small deterministic state machines with no
//! I/O, no clock and no allocator.
//!
//! A driver (the `zenws-mio` crate, a simulation harness, your own event
//! loop) owns the sockets and the clock. It feeds what happened into the
//! core and carries out what the core decides: when to connect, what to
//! send on its own (heartbeats, heartbeat replies), when to close or abort,
//! when to reconnect, when to give up, and what to tell the user. The same
//! inputs always produce the same outputs, so a whole client's life can be
//! replayed on virtual time.
//!
//! # The pieces
//!
//! - [`client`]: **the per-client machine** — one [`Connection`], its
//!   [`session::Session`] and an exchange [`exchange::Protocol`]; what a driver
//!   (the mio driver, the simulator, your own loop) runs per connection. Start there.
//! - [`exchange`]: one module per exchange (`deribit`, `binance`): how its session
//!   requests are rendered and answered, its error classes, rate limit and heartbeat.
//! - [`connection`]: one client's lifecycle (`Idle → Connecting → Open →
//!   Closing → Backoff → …`, ending `Stopped` or `Failed`), the hub the others plug into.
//! - [`retry`]: the reconnect ladder: count, delay, multiplier, cap, seeded jitter, reset only after a healthy stretch.
//! - [`error`]: one [`Error`] enum for every failure, split by [`Error::is_transient`]; [`SendError`] for refused sends.
//! - [`exit`]: [`ExitReason`], how an incarnation ended: what a supervisor sees.
//! - [`heartbeat`]: liveness strategies (WebSocket ping, an exchange's application heartbeat, custom) that declare a silent peer dead.
//! - [`health`]: the [`Health`] snapshot (status, last heartbeat/data, failures, RTT) and [`Metrics`] counters.
//! - [`rtt`]: a fixed window of round-trip times with min / p50 / p99.
//! - [`supervisor`]: one-for-one OTP restart decisions with a restart intensity ("at most N in T").
//! - [`session`]: on-open steps (authenticate, token refresh, after-auth steps, subscriptions confirmed per channel) and JSON-RPC request correlation.
//! - [`requests`]: the fixed table of JSON-RPC ids in flight with their deadlines.
//! - [`ratelimit`]: exact integer token buckets (a shared pool and class pools) charged by a cost function.
//! - [`frame`]: the frames the core sends on its own, rendered into a stack buffer.
//! - [`json`]: an allocation-free, never-panicking JSON-RPC scanner (`id`, `method`, `params.type`, …).
//! - [`rng`]: SplitMix64, the seeded PRNG behind the jitter (no global randomness).
//! - [`time`]: [`Instant`], time as a value the caller passes in.
//!
//! # The API shape
//!
//! In the style of `quinn-proto` and `str0m` (shown here on the
//! [`Connection`]; [`client::Client`] adds `poll_transmit` for session
//! messages and documents the full call order):
//!
//! - `handle_*(now, epoch, …)` feeds an input in: the socket opened, a
//!   message / pong / ping arrived, the socket failed or closed;
//!   [`Connection::handle_send`] asks whether the user may send now.
//! - [`Connection::poll_action`] drains what the driver must do
//!   ([`Action::Connect`], [`Action::Send`], [`Action::Close`],
//!   [`Action::Abort`]); [`Connection::poll_event`] drains what to tell the
//!   user ([`Event`]).
//! - [`Connection::poll_timeout`] says when to call
//!   [`Connection::handle_timeout`] next; that is the only way time passes.
//!
//! Every connection attempt gets an **epoch** ([`Epoch`]), carried by every
//! action and required on every socket input. Input from any other epoch is
//! ignored, so a late frame, pong or error of a replaced socket can never act
//! on the current one, and a restart keeps counting epochs.
//!
//! # Guarantees
//!
//! - `#![no_std]`: builds for `thumbv7em-none-eabihf` with
//!   `--no-default-features`.
//! - **No clock**: time is an [`Instant`] (u64 nanoseconds since an epoch
//!   you choose) passed into every call; spans are [`core::time::Duration`].
//! - **No allocation**: fixed capacities (`heapless`, const generics). One
//!   [`Connection`] is at most 1 KiB (checked by a test that prints the sizes:
//!   `cargo test -p zenws-core sizes -- --nocapture`).
//! - **Deterministic**: jitter comes from a seeded PRNG; the same seed and
//!   inputs give the identical action sequence (a property test checks it).
//! - **Never panics on input**: the input handlers and the JSON scanner are
//!   fuzzed (`core/fuzz`).
//!
//! # Feature flags
//!
//! - `std` (default): `std::error::Error` impls for the error types; implies
//!   `alloc`. Nothing else changes: the core reads no clock and does no I/O
//!   either way.
//! - `alloc` (on with `std`): a client's session state is boxed and created
//!   only when used, so a plain client stays small (see [`client::Client`]).
//! - `sim` (off by default): the deterministic simulator, `zenws_core::sim`
//!   (virtual clock, simulated network, seeded faults). It allocates, so it
//!   implies `std`.
//!
//! # Example: one connection on virtual time
//!
//! The test plays the driver: it matches on [`Action`]s, pretends to open
//! sockets, and moves a virtual clock to each deadline. Connect → open →
//! message → drop → backoff → reconnect:
//!
//! ```
//! use core::time::Duration;
//! use zenws_core::retry::{Jitter, RetryPolicy};
//! use zenws_core::{
//!     Action, Connection, ConnectionConfig, Delivery, Error, Event, HeartbeatConfig, Instant,
//!     SendError, State,
//! };
//!
//! let mut conn = Connection::new(
//!     ConnectionConfig::default()
//!         .with_heartbeat(HeartbeatConfig::none())
//!         .with_retry(RetryPolicy::default().with_jitter(Jitter::None)),
//! );
//! let mut now = Instant::ZERO; // virtual time: nothing reads a clock
//!
//! // The driver's half: carry out actions. Here "opening a socket" succeeds
//! // after 20 ms of virtual time; a real driver would report
//! // `handle_open` / `handle_error` when its socket does.
//! fn drive(conn: &mut Connection, now: &mut Instant) -> Vec<Event> {
//!     while let Some(action) = conn.poll_action() {
//!         match action {
//!             Action::Connect { epoch } => {
//!                 *now = *now + Duration::from_millis(20);
//!                 conn.handle_open(*now, epoch);
//!             }
//!             Action::Send { frame, .. } => drop(frame.encode()), // write it
//!             Action::Close { .. } | Action::Abort { .. } => {}   // close the socket
//!             _ => {} // `Action` is non_exhaustive: a newer core may ask for more
//!         }
//!     }
//!     std::iter::from_fn(|| conn.poll_event()).collect()
//! }
//!
//! // connect → open
//! conn.connect(now);
//! assert_eq!(
//!     drive(&mut conn, &mut now),
//!     [Event::Connecting { epoch: 1, attempt: 0 }, Event::Opened { epoch: 1 }]
//! );
//! assert_eq!(conn.state(), State::Open);
//!
//! // message in, message out
//! assert_eq!(conn.handle_message(now, 1, br#"{"price":1}"#), Delivery::Deliver);
//! assert_eq!(conn.handle_send(now, br#"{"op":"buy"}"#, 0), Ok(()));
//!
//! // the server drops the TCP connection: back off 1 s
//! now = now + Duration::from_secs(3);
//! conn.handle_closed(now, 1, None);
//! assert_eq!(
//!     drive(&mut conn, &mut now),
//!     [
//!         Event::Disconnected { epoch: 1, reason: Error::ConnectionReset },
//!         Event::Reconnecting { attempt: 1, delay: Duration::from_secs(1), reason: Error::ConnectionReset },
//!     ]
//! );
//! assert_eq!(conn.state(), State::Backoff);
//! // Sends are refused, never silently queued across a reconnect.
//! assert_eq!(conn.handle_send(now, b"x", 0), Err(SendError::NotConnected));
//!
//! // sleep until the deadline (virtually), then reconnect on epoch 2
//! let wake = conn.poll_timeout().expect("a backoff deadline");
//! assert_eq!(wake - now, Duration::from_secs(1));
//! now = wake;
//! conn.handle_timeout(now);
//! assert_eq!(
//!     drive(&mut conn, &mut now),
//!     [Event::Connecting { epoch: 2, attempt: 1 }, Event::Opened { epoch: 2 }]
//! );
//!
//! // A late frame from the old socket can't reach the new one.
//! assert_eq!(conn.handle_message(now, 1, b"late"), Delivery::Stale);
//! assert_eq!(conn.handle_message(now, 2, b"fresh"), Delivery::Deliver);
//! assert_eq!(conn.metrics().reconnects, 1);
//! ```
#![cfg_attr(not(test), no_std)]
#![deny(missing_docs)]

pub mod client;
pub mod connection;
pub mod error;
pub mod exchange;
pub mod exit;
pub mod frame;
pub mod health;
pub mod heartbeat;
pub mod json;
pub mod ratelimit;
pub mod requests;
pub mod retry;
pub mod rng;
pub mod rtt;
pub mod session;
#[cfg(feature = "sim")]
pub mod sim;
pub mod supervisor;
pub mod time;

pub use connection::{Action, Connection, ConnectionConfig, Delivery, Epoch, Event, State};
pub use error::{Error, SendError};
pub use exit::ExitReason;
pub use health::{Health, HealthStatus, Metrics};
pub use heartbeat::HeartbeatConfig;
pub use time::Instant;
