//! One deadline per connection in a binary heap, invalidated lazily: the
//! loop pops only what is due instead of scanning every connection.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use zenws_core::Instant;

/// Deadlines keyed by slot; stale entries are skipped when popped.
#[derive(Debug, Default)]
pub(crate) struct Timers {
    heap: BinaryHeap<Reverse<(Instant, usize)>>,
}

impl Timers {
    /// Schedule `key` at `at` (the caller remembers `at` as the key's current deadline).
    pub(crate) fn schedule(&mut self, at: Instant, key: usize) {
        self.heap.push(Reverse((at, key)));
    }

    /// Earliest entry (possibly stale).
    pub(crate) fn peek(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    /// Pop one entry due at `now`.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<(Instant, usize)> {
        match self.heap.peek() {
            Some(Reverse((at, _))) if *at <= now => self.heap.pop().map(|Reverse(e)| e),
            _ => None,
        }
    }

    /// Drop stale entries once the heap grows far beyond the live count.
    pub(crate) fn compact(&mut self, live: usize, current: impl Fn(usize) -> Option<Instant>) {
        if self.heap.len() > 4 * live + 64 {
            self.heap
                .retain(|Reverse((at, key))| current(*key) == Some(*at));
        }
    }
}
