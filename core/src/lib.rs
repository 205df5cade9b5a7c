//! zenws-core (work in progress)
#![cfg_attr(not(test), no_std)]
#![deny(missing_docs)]

pub mod error;
pub mod time;

pub use error::{Error, SendError};
pub use time::Instant;
