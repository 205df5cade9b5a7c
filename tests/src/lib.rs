//! Test support for zenws: real servers on loopback, started by the tests.
//!
//! Every server binds `127.0.0.1:0`, reports its address, and stops (port
//! freed, connection threads ended) when dropped. All of it is std threads
//! and blocking sockets.
//!
//! - [`certs`]: a throwaway CA and server certificate ([`TestPki`]).
//! - [`echo`]: an echo server, plain or TLS, with kill/stop/restart/close controls.
//! - [`misbehaving`]: servers that fail in one specific way each.
//! - [`proxy`]: a TCP fault proxy with runtime-switchable modes.
//! - [`deribit`]: a Deribit-compatible JSON-RPC server (subset).
//! - [`blocking_client`]: a blocking tungstenite client with timeouts.
//! - [`acceptor`]: the listener machinery the servers share.
#![deny(missing_docs)]

pub mod acceptor;
pub mod blocking_client;
pub mod certs;
pub mod deribit;
pub mod echo;
pub mod misbehaving;
pub mod proxy;
mod ws_util;

pub use acceptor::wait_until;
pub use certs::TestPki;
pub use deribit::{DeribitOptions, DeribitServer, RateLimit, ReceivedRequest};
pub use echo::{EchoOptions, EchoServer, RecordedRequest};
pub use misbehaving::{Behavior, MisbehavingServer};
pub use proxy::{FaultProxy, ProxyMode};
pub use ws_util::{garbage_bytes, BoxStream, ReadWrite};
