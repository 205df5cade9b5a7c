//! Test support for zenws: real servers on loopback, started by the tests.
//!
//! Every server binds `127.0.0.1:0`, reports its address (`addr()`, `url()`),
//! and stops when dropped: the port is freed and connection threads end.
//! `stop()` / `restart()` free and retake the *same* port. Everything is std
//! threads and blocking sockets; nothing here depends on zenws itself.
//!
//! - [`certs`]: a throwaway CA and server certificate ([`TestPki`]).
//! - [`echo`]: an echo server, plain or TLS, with kill/stop/restart/close controls.
//! - [`misbehaving`]: servers that fail in one specific way each.
//! - [`proxy`]: a TCP fault proxy with runtime-switchable modes.
//! - [`deribit`]: a Deribit-compatible JSON-RPC server (subset).
//! - [`binance`]: a Binance-style market-stream server (subset).
//! - [`blocking_client`]: a blocking tungstenite client with timeouts.
//! - [`acceptor`]: the listener machinery the servers share.
//!
//! TLS URLs are spelled `wss://localhost:PORT/...` (the certificate from
//! [`TestPki::generate`] covers `localhost` and `127.0.0.1`, so
//! `wss://127.0.0.1:PORT/` works too). Servers listen on IPv4 only: a client
//! resolving `localhost` must try `127.0.0.1`. Trust comes only from the
//! test CA: [`TestPki::ca_pem`], [`TestPki::write_ca_file`],
//! [`TestPki::root_store`] or [`TestPki::client_config`].
//!
//! ```
//! use zenws_tests::{blocking_client, EchoOptions, EchoServer, TestPki};
//! use tungstenite::Message;
//!
//! let pki = TestPki::generate();
//! let server = EchoServer::start(EchoOptions::tls(pki.server_config())).unwrap();
//! let mut ws = blocking_client::connect(&server.url(), Some(pki.client_config())).unwrap();
//! ws.send(Message::text("hi")).unwrap();
//! assert_eq!(blocking_client::read_text(&mut ws).unwrap(), "hi");
//! ```
#![deny(missing_docs)]

pub mod acceptor;
pub mod binance;
pub mod blocking_client;
pub mod certs;
pub mod deribit;
pub mod echo;
pub mod misbehaving;
pub mod proxy;
mod ws_util;

pub use acceptor::wait_until;
pub use binance::{BinanceOptions, BinanceRequest, BinanceServer};
pub use certs::TestPki;
pub use deribit::{DeribitOptions, DeribitServer, RateLimit, ReceivedRequest};
pub use echo::{EchoOptions, EchoServer, RecordedRequest};
pub use misbehaving::{Behavior, MisbehavingServer};
pub use proxy::{FaultProxy, ProxyMode};
pub use ws_util::{garbage_bytes, BoxStream, ReadWrite};

/// Re-exported so tests use the same versions as these servers.
pub use serde_json;
/// Re-exported so tests use the same versions as these servers.
pub use tungstenite;
