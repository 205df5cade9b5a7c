//! Round-trip-time statistics over the last `N` samples.
//!
//! [`RttWindow`] is a fixed ring of the most recent `N` samples (default 32),
//! each stored as whole microseconds in a `u32` (truncated to the
//! microsecond, saturating at `u32::MAX` µs ≈ 71.6 minutes). Percentiles copy
//! the samples into a stack array and sort it — `N` is small — and use the
//! **nearest-rank** definition: the `p`-th percentile of `n` samples is the
//! sample at 1-based rank `ceil(p × n / 100)` in ascending order (rank at
//! least 1). So `p50` of `[1, 2, 3, 4]` is 2 and `p99` of fewer than 100
//! samples is the maximum.
//!
//! ```
//! use zenws_core::rtt::RttWindow;
//! use core::time::Duration;
//!
//! let mut w: RttWindow = RttWindow::new();
//! for ms in [30, 10, 20, 40] {
//!     w.record(Duration::from_millis(ms));
//! }
//! assert_eq!(w.len(), 4);
//! assert_eq!(w.last(), Some(Duration::from_millis(40)));
//! assert_eq!(w.min(), Some(Duration::from_millis(10)));
//! assert_eq!(w.p50(), Some(Duration::from_millis(20)));
//! assert_eq!(w.p99(), Some(Duration::from_millis(40)));
//! ```

use core::time::Duration;

/// The most recent `N` round-trip times (default 32), with min and
/// nearest-rank percentiles. See the [module docs](self).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RttWindow<const N: usize = 32> {
    /// Samples in microseconds; the first `len` slots (in ring order) are valid.
    samples: [u32; N],
    /// Slot the next sample goes to.
    next: usize,
    /// Number of valid samples, at most `N`.
    len: usize,
}

impl<const N: usize> Default for RttWindow<N> {
    fn default() -> Self {
        Self::new()
    }
}

fn to_micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

fn from_micros(us: u32) -> Duration {
    Duration::from_micros(u64::from(us))
}

impl<const N: usize> RttWindow<N> {
    /// An empty window.
    pub const fn new() -> Self {
        RttWindow {
            samples: [0; N],
            next: 0,
            len: 0,
        }
    }

    /// Add a sample, evicting the oldest once `N` are held. A window with
    /// `N == 0` ignores samples.
    pub fn record(&mut self, rtt: Duration) {
        if let Some(slot) = self.samples.get_mut(self.next) {
            *slot = to_micros(rtt);
            self.next = if self.next + 1 >= N { 0 } else { self.next + 1 };
            if self.len < N {
                self.len += 1;
            }
        }
    }

    /// Number of samples held (at most `N`).
    pub const fn len(&self) -> usize {
        self.len
    }

    /// Whether no sample has been recorded.
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Forget all samples.
    pub fn clear(&mut self) {
        self.next = 0;
        self.len = 0;
    }

    /// The valid samples, in no particular order.
    fn valid(&self) -> &[u32] {
        self.samples.get(..self.len).unwrap_or_default()
    }

    /// The most recent sample (at microsecond resolution).
    pub fn last(&self) -> Option<Duration> {
        if self.len == 0 {
            return None;
        }
        let idx = if self.next == 0 {
            N.checked_sub(1)?
        } else {
            self.next - 1
        };
        self.samples.get(idx).copied().map(from_micros)
    }

    /// The smallest sample in the window.
    pub fn min(&self) -> Option<Duration> {
        self.valid().iter().copied().min().map(from_micros)
    }

    /// The largest sample in the window.
    pub fn max(&self) -> Option<Duration> {
        self.valid().iter().copied().max().map(from_micros)
    }

    /// The median by nearest rank (the lower median for an even count).
    pub fn p50(&self) -> Option<Duration> {
        self.percentile(50)
    }

    /// The 99th percentile by nearest rank (the maximum below 100 samples).
    pub fn p99(&self) -> Option<Duration> {
        self.percentile(99)
    }

    /// The `p`-th percentile by nearest rank: rank `max(1, ceil(p × len / 100))`
    /// of the ascending samples; `p` above 100 is treated as 100.
    ///
    /// ```
    /// use zenws_core::rtt::RttWindow;
    /// use core::time::Duration;
    /// let mut w = RttWindow::<8>::new();
    /// for us in 1..=5 {
    ///     w.record(Duration::from_micros(us));
    /// }
    /// assert_eq!(w.percentile(0), Some(Duration::from_micros(1)));
    /// assert_eq!(w.percentile(40), Some(Duration::from_micros(2)));
    /// assert_eq!(w.percentile(41), Some(Duration::from_micros(3)));
    /// assert_eq!(w.percentile(100), Some(Duration::from_micros(5)));
    /// ```
    pub fn percentile(&self, p: u8) -> Option<Duration> {
        let n = self.len;
        if n == 0 {
            return None;
        }
        let p = usize::from(p.min(100));
        let rank = (p * n).div_ceil(100).max(1);
        let mut sorted = self.samples;
        let valid = sorted.get_mut(..n)?;
        valid.sort_unstable();
        valid.get(rank - 1).copied().map(from_micros)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn empty() {
        let w: RttWindow = RttWindow::default();
        assert!(w.is_empty());
        assert_eq!(
            (w.last(), w.min(), w.max(), w.p50(), w.p99()),
            (None, None, None, None, None)
        );
        let mut z = RttWindow::<0>::new();
        z.record(Duration::from_millis(1));
        assert_eq!((z.len(), z.last(), z.p50()), (0, None, None));
    }

    #[test]
    fn ring_evicts_oldest_and_saturates() {
        let mut w = RttWindow::<3>::new();
        for ms in [5, 1, 9, 7] {
            w.record(Duration::from_millis(ms));
        }
        assert_eq!(w.len(), 3);
        assert_eq!(w.last(), Some(Duration::from_millis(7)));
        assert_eq!(w.min(), Some(Duration::from_millis(1)));
        assert_eq!(w.max(), Some(Duration::from_millis(9)));
        assert_eq!(w.p50(), Some(Duration::from_millis(7)));
        w.record(Duration::MAX);
        assert_eq!(w.last(), Some(Duration::from_micros(u64::from(u32::MAX))));
        w.record(Duration::from_nanos(1_999));
        assert_eq!(w.last(), Some(Duration::from_micros(1)));
        w.clear();
        assert!(w.is_empty() && w.last().is_none());
    }

    fn naive(samples: &[u32], p: usize) -> Option<u32> {
        let mut v = samples.to_vec();
        v.sort();
        if v.is_empty() {
            return None;
        }
        // Smallest value such that at least p% of samples are <= it.
        v.iter().copied().find(|&x| {
            let at_or_below = v.iter().filter(|&&y| y <= x).count();
            at_or_below * 100 >= p * v.len()
        })
    }

    proptest! {
        #[test]
        fn percentiles_match_naive(samples in proptest::collection::vec(0u64..5_000_000_000, 0..100)) {
            let mut w = RttWindow::<32>::new();
            for &us in &samples {
                w.record(Duration::from_micros(us));
            }
            let start = samples.len().saturating_sub(32);
            let tail: Vec<u32> = samples[start..]
                .iter()
                .map(|&us| u32::try_from(us).unwrap_or(u32::MAX))
                .collect();
            let d = |o: Option<u32>| o.map(from_micros);
            prop_assert_eq!(w.len(), tail.len());
            prop_assert_eq!(w.last(), d(tail.last().copied()));
            prop_assert_eq!(w.min(), d(tail.iter().copied().min()));
            prop_assert_eq!(w.max(), d(tail.iter().copied().max()));
            prop_assert_eq!(w.p50(), d(naive(&tail, 50)));
            prop_assert_eq!(w.p99(), d(naive(&tail, 99)));
            for p in [1usize, 10, 25, 75, 90, 100] {
                prop_assert_eq!(w.percentile(p as u8), d(naive(&tail, p)));
            }
        }
    }
}
