//! zenws-core (work in progress)
#![cfg_attr(not(test), no_std)]
#![deny(missing_docs)]

pub mod error;
pub mod exit;
pub mod json;
pub mod ratelimit;
pub mod retry;
pub mod rng;
pub mod rtt;
pub mod supervisor;
pub mod time;

pub use error::{Error, SendError};
pub use exit::ExitReason;
pub use time::Instant;
