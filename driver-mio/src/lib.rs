//! # zenws-mio: many supervised WebSocket clients on one thread
//!
//! The I/O half of zenws. The [`zenws_core`] state machines decide
//! everything (when to connect, retry, ping, give up, restart); this crate
//! does the I/O for thousands of connections on one thread: one
//! `mio::Poll`, a `slab` of clients keyed by `Token`, non-blocking TCP →
//! rustls (for `wss://`) → our own RFC 6455 codec, one timer heap fed by
//! the cores' deadlines.
//!
//! - [`Client`]: one connection, blocking calls, reconnects and heartbeats
//!   but no supervisor restarts.
//! - [`ClientSupervisor`]: many clients, one-for-one restarts (permanent /
//!   transient / temporary) with a restart budget (default 10 in 60 s);
//!   events drained with [`ClientSupervisor::poll_event`] or given to a
//!   [`Handler`] as they arise ([`ClientSupervisor::run_turn`]); static children with your own ids
//!   ([`ClientSupervisor::start_child`]).
//! - [`Handle`]: other threads send and start/stop clients (channel +
//!   `mio::Waker`).
//! - Your own loop: [`ClientSupervisor::embedded`] registers into your
//!   `mio::Registry`; forward events with
//!   [`ClientSupervisor::handle_mio_event`], call
//!   [`ClientSupervisor::process`] each turn, sleep at most
//!   [`ClientSupervisor::poll_timeout`].
//!
//! Sends are never queued across a reconnect: while a client is not open,
//! a send fails with `SendError::NotConnected` and the caller keeps the
//! message. Certificate errors, 401/403 and protocol violations are fatal
//! (no retry storm); network errors are transient and go through the retry
//! ladder. Header values, URL queries, userinfo and message bodies never
//! appear in logs, `Debug`, `Display`, errors or events.
//! DNS runs on a small pool of background threads (IP literals, `localhost`
//! and pinned hosts resolve inline), so the loop never blocks on a resolver;
//! the resolved addresses are raced as Happy Eyeballs does (RFC 8305:
//! families interleaved, the next address started beside the others when
//! one has not connected within 250 ms; [`Resolve`] and
//! [`ClientSupervisor::set_resolver`] plug in your own resolution, e.g. a
//! [`PinnedResolver`]).
//!
//! ```
//! use std::time::Duration;
//! use zenws_mio::{Client, ClientConfig};
//! # // A loopback echo server for this example (tungstenite's server handshake).
//! # let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
//! # let url = format!("ws://{}/", listener.local_addr().unwrap());
//! # std::thread::spawn(move || {
//! #     let (tcp, _) = listener.accept().unwrap();
//! #     let mut ws = tungstenite::accept(tcp).unwrap();
//! #     while let Ok(msg) = ws.read() {
//! #         if (msg.is_text() || msg.is_binary()) && ws.send(msg).is_err() {
//! #             break;
//! #         }
//! #     }
//! # });
//! let mut client = Client::connect(&url, ClientConfig::default())?;
//! client.send_text("hello")?;
//! let reply = client.recv_message(Duration::from_secs(5))?.expect("echo");
//! assert_eq!(reply.as_text(), Some("hello"));
//! client.close()?;
//! # Ok::<(), zenws_mio::Error>(())
//! ```
#![deny(missing_docs)]

pub mod client;
pub mod clock;
pub mod config;
mod dial;
pub mod error;
pub mod event;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod handle;
mod id;
mod message;
mod resolve;
mod slot;
pub mod supervisor;
mod timers;
// `Transport::handle_event` serves its own tests only and
// `SendFailure::into_message` nothing yet, now that the module is private.
#[allow(dead_code)]
mod transport;
// Internals. The fuzz targets (driver-mio/fuzz, feature `fuzzing`, not a
// stable API) reach `tls` and `url` directly; everything a user needs is
// re-exported below.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod tls;
#[cfg(not(feature = "fuzzing"))]
mod tls;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod url;
#[cfg(not(feature = "fuzzing"))]
mod url;

pub use client::Client;
pub use clock::{Clock, ManualClock, MonotonicClock};
pub use config::ClientConfig;
pub use error::Error;
pub use event::ClientEvent;
pub use handle::Handle;
pub use id::ClientId;
pub use message::{Message, Text};
pub use resolve::{PinnedResolver, Resolve, SystemResolver};
pub use supervisor::{ClientSupervisor, Handler};
pub use tls::{TlsRoots, TlsSetupError};
pub use url::redact as redact_url;
pub use zenws_core as core;
