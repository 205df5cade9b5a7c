//! A health snapshot: what `health(id)` returns.

use crate::time::Instant;
use core::time::Duration;

/// Coarse health of a client.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HealthStatus {
    /// Open and the last heartbeat was answered.
    Healthy,
    /// Open, but at least one heartbeat in a row went unanswered.
    Degraded,
    /// Connecting, backing off or closing.
    Disconnected,
    /// Ended normally.
    Stopped,
    /// Ended abnormally.
    Failed,
}

/// Health of one client at one instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Health {
    /// Coarse status.
    pub status: HealthStatus,
    /// Last sign of life from the heartbeat (pong, Deribit heartbeat, custom reply).
    pub last_heartbeat: Option<Instant>,
    /// Last data message received.
    pub last_data: Option<Instant>,
    /// Heartbeat misses in a row.
    pub consecutive_failures: u32,
    /// Heartbeat misses since the client was created.
    pub total_failures: u32,
    /// Most recent round-trip time.
    pub rtt_last: Option<Duration>,
    /// Smallest RTT in the window.
    pub rtt_min: Option<Duration>,
    /// Median RTT in the window.
    pub rtt_p50: Option<Duration>,
    /// 99th percentile RTT in the window.
    pub rtt_p99: Option<Duration>,
}

/// Counters over a client's life.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Metrics {
    /// Data messages delivered to the user.
    pub messages_in: u64,
    /// Data messages accepted for sending.
    pub messages_out: u64,
    /// Connection attempts after the first one (all incarnations).
    pub reconnects: u32,
    /// Successful opens (all incarnations).
    pub opens: u32,
    /// Restarts by a supervisor.
    pub restarts: u32,
    /// Median heartbeat round trip over the RTT window.
    pub rtt_p50: Option<Duration>,
    /// 99th percentile heartbeat round trip over the RTT window.
    pub rtt_p99: Option<Duration>,
}
