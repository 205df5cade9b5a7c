//! JSON-RPC request correlation: ids in flight, each with a real deadline.

use crate::time::Instant;
use core::time::Duration;

/// Why a request could not be tracked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrackError {
    /// A request with this id is still in flight.
    DuplicateId,
    /// The table is full (`N` requests in flight).
    Full,
    /// The id is in the core's reserved range (at or above
    /// [`CORE_ID_BASE`](crate::frame::CORE_ID_BASE)): the session's and the
    /// heartbeat's own requests use it, so an answer could be taken for theirs.
    Reserved,
}

impl core::fmt::Display for TrackError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            TrackError::DuplicateId => "a request with this id is already in flight",
            TrackError::Full => "too many requests in flight",
            TrackError::Reserved => "request id in the reserved range (>= 9,000,000,000,000)",
        })
    }
}

/// Up to `N` requests in flight. Linear scans: `N` is small (default 32)
/// and a scan of 32 ids is cheaper than any map.
///
/// ```
/// use zenws_core::requests::Requests;
/// use zenws_core::Instant;
/// use core::time::Duration;
/// let mut r: Requests<4> = Requests::new();
/// r.track(Instant::ZERO, 7, Duration::from_secs(30)).unwrap();
/// assert!(r.track(Instant::ZERO, 7, Duration::from_secs(30)).is_err());
/// assert!(r.resolve(7));
/// assert!(!r.resolve(7));
/// ```
#[derive(Clone, Debug, Default)]
pub struct Requests<const N: usize = 32> {
    pending: heapless::Vec<(u64, Instant), N>,
}

impl<const N: usize> Requests<N> {
    /// Empty table.
    pub const fn new() -> Self {
        Requests {
            pending: heapless::Vec::new(),
        }
    }

    /// Start tracking `id`, due `timeout` after `now`.
    pub fn track(&mut self, now: Instant, id: u64, timeout: Duration) -> Result<(), TrackError> {
        if self.pending.iter().any(|&(p, _)| p == id) {
            return Err(TrackError::DuplicateId);
        }
        self.pending
            .push((id, now + timeout))
            .map_err(|_| TrackError::Full)
    }

    /// A response with `id` arrived: `true` if it was in flight.
    pub fn resolve(&mut self, id: u64) -> bool {
        match self.pending.iter().position(|&(p, _)| p == id) {
            Some(i) => {
                self.pending.swap_remove(i);
                true
            }
            None => false,
        }
    }

    /// Is `id` in flight?
    pub fn contains(&self, id: u64) -> bool {
        self.pending.iter().any(|&(p, _)| p == id)
    }

    /// Requests in flight.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// No requests in flight.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// The earliest deadline.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.pending.iter().map(|&(_, d)| d).min()
    }

    /// Remove and return one request whose deadline has passed.
    pub fn pop_expired(&mut self, now: Instant) -> Option<u64> {
        let i = self.pending.iter().position(|&(_, d)| now >= d)?;
        Some(self.pending.swap_remove(i).0)
    }

    /// Remove and return any one request (to fail them all on disconnect).
    pub fn pop_any(&mut self) -> Option<u64> {
        self.pending.pop().map(|(id, _)| id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_and_capacity() {
        let mut r: Requests<2> = Requests::new();
        let t0 = Instant::from_millis(0);
        r.track(t0, 1, Duration::from_millis(10)).unwrap();
        r.track(t0, 2, Duration::from_millis(20)).unwrap();
        assert_eq!(
            r.track(t0, 3, Duration::from_millis(20)),
            Err(TrackError::Full)
        );
        assert_eq!(r.poll_timeout(), Some(Instant::from_millis(10)));
        assert_eq!(r.pop_expired(Instant::from_millis(9)), None);
        assert_eq!(r.pop_expired(Instant::from_millis(10)), Some(1));
        assert_eq!(r.pop_any(), Some(2));
        assert!(r.is_empty());
    }
}
