//! How a client ended: what a supervisor sees.

use crate::error::Error;
use core::fmt;

/// Why a client's incarnation ended. The supervisor decides on restarts from this.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ExitReason {
    /// The user stopped or closed it: never restarted by a transient or temporary policy.
    Normal,
    /// Transient failures outlasted the retry ladder; `last` is the final error.
    RetriesExhausted {
        /// The error of the last failed attempt.
        last: Error,
    },
    /// A fatal error ended it without retrying (certificate, 401/403, protocol, ...).
    Fatal(Error),
}

impl ExitReason {
    /// `true` for everything except [`ExitReason::Normal`].
    pub fn is_abnormal(&self) -> bool {
        !matches!(self, ExitReason::Normal)
    }

    /// The error behind an abnormal exit.
    pub fn error(&self) -> Option<Error> {
        match self {
            ExitReason::Normal => None,
            ExitReason::RetriesExhausted { last } | ExitReason::Fatal(last) => Some(*last),
        }
    }
}

impl fmt::Display for ExitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitReason::Normal => f.write_str("stopped normally"),
            ExitReason::RetriesExhausted { last } => write!(f, "retries exhausted: {last}"),
            ExitReason::Fatal(e) => write!(f, "fatal: {e}"),
        }
    }
}
