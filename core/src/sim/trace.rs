//! The event trace: readable lines and a 64-bit hash of all of them.
//!
//! Every observable step of a simulation is written as one line
//! (`t=12.345678 c1 e3 opened`). The lines are hashed with FNV-1a as they
//! are formatted, so a run that keeps no lines still has a fingerprint: the
//! same seed must give the same hash, byte for byte.

extern crate std;

use std::fmt::{self, Write as _};
use std::string::String;
use std::vec::Vec;

use crate::time::Instant;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a over everything written to it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Fnv(u64);

impl Fnv {
    fn new() -> Self {
        Fnv(FNV_OFFSET)
    }
    fn bytes(&mut self, b: &[u8]) {
        for &x in b {
            self.0 ^= u64::from(x);
            self.0 = self.0.wrapping_mul(FNV_PRIME);
        }
    }
}

/// Collects trace lines (optionally) and their hash.
#[derive(Debug)]
pub(crate) struct Trace {
    hash: Fnv,
    line: String,
    lines: Option<Vec<String>>,
    count: u64,
}

impl Trace {
    pub(crate) fn new(keep: bool) -> Self {
        Trace {
            hash: Fnv::new(),
            line: String::with_capacity(128),
            lines: keep.then(Vec::new),
            count: 0,
        }
    }

    /// Record one line: `t=<secs> <what>`.
    pub(crate) fn log(&mut self, now: Instant, what: fmt::Arguments<'_>) {
        self.line.clear();
        let n = now.as_nanos();
        let _ = write!(
            self.line,
            "t={}.{:06} {}",
            n / 1_000_000_000,
            (n % 1_000_000_000) / 1_000,
            what
        );
        self.hash.bytes(self.line.as_bytes());
        self.hash.bytes(b"\n");
        self.count += 1;
        if let Some(lines) = self.lines.as_mut() {
            lines.push(self.line.clone());
        }
    }

    pub(crate) fn hash(&self) -> u64 {
        self.hash.0
    }

    pub(crate) fn count(&self) -> u64 {
        self.count
    }

    pub(crate) fn take_lines(&mut self) -> Vec<String> {
        self.lines.take().unwrap_or_default()
    }
}

/// `format_args!` shorthand for [`Trace::log`].
macro_rules! tr {
    ($trace:expr, $now:expr, $($arg:tt)*) => {
        $trace.log($now, format_args!($($arg)*))
    };
}
pub(crate) use tr;
