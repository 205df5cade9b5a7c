//! Per-client configuration: the core's decisions plus the transport's knobs.

use crate::tls::TlsRoots;
use std::fmt;
use std::sync::Arc;
use zenws_core::exchange::Protocol;
use zenws_core::retry::RetryPolicy;
use zenws_core::session::SessionConfig;
use zenws_core::supervisor::RestartType;
use zenws_core::{ConnectionConfig, HeartbeatConfig};

/// Everything about one client except its URL.
///
/// Defaults: connect timeout 5 s, 3 retries per outage starting at 1 s
/// (×2, capped at 30 s, ±20 % jitter, ladder reset after 10 s healthy),
/// ping heartbeat every 15 s with a 10 s pong timeout and a threshold of 2,
/// no idle timeout, 16 MiB max message, 4 MiB max pending writes, no rate
/// limit, restart type transient. Reads go through one 64 KiB buffer shared by
/// the thread's connections: an idle connection holds no read buffer; at
/// most 256 KiB are read per connection per loop turn, and at most 8 MiB of
/// received events wait per client (see [`ClientConfig::inbound_queue_limit`]).
///
/// Header values are secrets (tokens, API keys): `Debug` prints only names.
///
/// Built from [`Default`] with chainable methods (the struct is
/// `#[non_exhaustive]`: a field added later breaks nobody); the fields stay
/// public for reading and for changing one in place:
///
/// ```
/// use std::time::Duration;
/// use zenws_mio::core::retry::{RetryCount, RetryPolicy};
/// use zenws_mio::core::HeartbeatConfig;
/// use zenws_mio::ClientConfig;
///
/// let mut config = ClientConfig::default()
///     .with_heartbeat(HeartbeatConfig::ping(Duration::from_secs(5), Duration::from_secs(3)))
///     .with_retry(RetryPolicy::default().with_retry_count(RetryCount::Infinite))
///     .header("Authorization", "Bearer t0k3n")
///     .subscribe("trades.BTC-PERPETUAL.raw");
/// config.connection.connect_timeout = Duration::from_secs(2); // in place
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub struct ClientConfig {
    /// The core's lifecycle, retry, heartbeat, limits and rate limit.
    pub connection: ConnectionConfig,
    /// The session layer: subscription batches and pacing, request
    /// timeout, token refresh margin.
    pub session: SessionConfig,
    /// The exchange protocol of the session (authentication, subscribe,
    /// error classes), e.g.
    /// [`Deribit`](zenws_core::exchange::deribit::Deribit) or
    /// [`Binance`](zenws_core::exchange::binance::Binance); `None`: a plain
    /// WebSocket (subscriptions then cannot be sent and are reported
    /// rejected).
    pub protocol: Option<Arc<dyn Protocol + Send + Sync>>,
    /// Channels to subscribe to after every open (tracked and restored).
    pub subscriptions: Vec<String>,
    /// Extra headers on the upgrade request (e.g. `Authorization`).
    pub headers: Vec<(String, String)>,
    /// CA roots for `wss://`.
    pub tls: TlsRoots,
    /// Restart type under a supervisor.
    pub restart: RestartType,
    /// Bound on the bytes of this client's received events waiting in the
    /// supervisor's queue (each event counts its payload plus
    /// [`EVENT_OVERHEAD`](crate::supervisor::EVENT_OVERHEAD)). At or above
    /// it the socket is not read: TCP backpressure slows the peer, nothing
    /// is dropped, and reading resumes once the application has drained
    /// the client's queue to half the bound. A message is never refused
    /// once decoded, so the queue may exceed the bound by one message (a
    /// message larger than the bound is still delivered). While reading is
    /// paused this way on an open connection, the client's timers
    /// (heartbeat misses, idle and request timeouts) are held: its answers
    /// may be sitting unread. The supervisor has an overall bound too
    /// ([`ClientSupervisor::set_inbound_queue_limit`](crate::ClientSupervisor::set_inbound_queue_limit)).
    /// Default 8 MiB; 0 counts as 1.
    pub inbound_queue_limit: usize,
    /// Most bytes read from this client's socket per loop turn; the rest is
    /// read in the next turns (after every other ready client had its
    /// turn), so one flooding peer cannot starve the others nor fill memory
    /// in one go. Default 256 KiB.
    pub read_budget: usize,
}

/// [`ClientConfig::inbound_queue_limit`]'s default: 8 MiB.
pub const DEFAULT_INBOUND_QUEUE_LIMIT: usize = 8 << 20;
/// [`ClientConfig::read_budget`]'s default: 256 KiB.
pub const DEFAULT_READ_BUDGET: usize = 256 << 10;

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            connection: ConnectionConfig::default(),
            session: SessionConfig::default(),
            protocol: None,
            subscriptions: Vec::new(),
            headers: Vec::new(),
            tls: TlsRoots::default(),
            restart: RestartType::default(),
            inbound_queue_limit: DEFAULT_INBOUND_QUEUE_LIMIT,
            read_budget: DEFAULT_READ_BUDGET,
        }
    }
}

impl ClientConfig {
    /// Set the core's lifecycle, retry, heartbeat, limits and rate limit
    /// ([`connection`](Self::connection)).
    #[must_use]
    pub fn with_connection(mut self, connection: ConnectionConfig) -> Self {
        self.connection = connection;
        self
    }

    /// Set the heartbeat (`connection.heartbeat`).
    #[must_use]
    pub fn with_heartbeat(mut self, heartbeat: HeartbeatConfig) -> Self {
        self.connection.heartbeat = heartbeat;
        self
    }

    /// Set the reconnect policy (`connection.retry`).
    #[must_use]
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.connection.retry = retry;
        self
    }

    /// Set the session layer's configuration ([`session`](Self::session)).
    #[must_use]
    pub fn with_session(mut self, session: SessionConfig) -> Self {
        self.session = session;
        self
    }

    /// Set the CA roots for `wss://` ([`tls`](Self::tls)).
    #[must_use]
    pub fn with_tls(mut self, tls: TlsRoots) -> Self {
        self.tls = tls;
        self
    }

    /// Set the restart type under a supervisor ([`restart`](Self::restart)).
    #[must_use]
    pub fn with_restart(mut self, restart: RestartType) -> Self {
        self.restart = restart;
        self
    }

    /// Set [`inbound_queue_limit`](Self::inbound_queue_limit).
    #[must_use]
    pub fn with_inbound_queue_limit(mut self, bytes: usize) -> Self {
        self.inbound_queue_limit = bytes;
        self
    }

    /// Set [`read_budget`](Self::read_budget).
    #[must_use]
    pub fn with_read_budget(mut self, bytes: usize) -> Self {
        self.read_budget = bytes;
        self
    }

    /// Add an upgrade header.
    #[must_use]
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Run the session with this exchange protocol.
    #[must_use]
    pub fn protocol(mut self, protocol: impl Protocol + Send + Sync + 'static) -> Self {
        self.protocol = Some(Arc::new(protocol));
        self
    }

    /// Track `channel`: subscribed after every open.
    #[must_use]
    pub fn subscribe(mut self, channel: impl Into<String>) -> Self {
        self.subscriptions.push(channel.into());
        self
    }

    /// Trust the CA certificates in this PEM file for `wss://`.
    #[must_use]
    pub fn ca_file(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.tls = TlsRoots::CaFile(path.into());
        self
    }
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let headers: Vec<String> = self
            .headers
            .iter()
            .map(|(k, _)| format!("{k}: <redacted>"))
            .collect();
        f.debug_struct("ClientConfig")
            .field("connection", &self.connection)
            .field("session", &self.session)
            .field("protocol", &self.protocol.as_ref().map(|_| ".."))
            .field("subscriptions", &self.subscriptions)
            .field("headers", &headers)
            .field("tls", &self.tls)
            .field("restart", &self.restart)
            .field("inbound_queue_limit", &self.inbound_queue_limit)
            .field("read_budget", &self.read_budget)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_redacts_header_values() {
        let c = ClientConfig::default().header("Authorization", "Bearer s3cr3t");
        let s = format!("{c:?}");
        assert!(s.contains("Authorization"));
        assert!(!s.contains("s3cr3t"), "{s}");
    }
}
