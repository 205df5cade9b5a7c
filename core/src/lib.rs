//! zenws-core (work in progress)
#![cfg_attr(not(test), no_std)]
#![deny(missing_docs)]

pub mod connection;
pub mod error;
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
pub mod supervisor;
pub mod time;

pub use connection::{Action, Connection, ConnectionConfig, Delivery, Epoch, Event, State};
pub use error::{Error, SendError};
pub use exit::ExitReason;
pub use health::{Health, HealthStatus, Metrics};
pub use heartbeat::HeartbeatConfig;
pub use time::Instant;
