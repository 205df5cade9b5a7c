//! Outbound rate limiting: an exact integer token bucket and per-message
//! cost functions.
//!
//! [`TokenBucket`] holds credits in fixed point with nanocredit resolution
//! (1 credit = 10⁹ units). A refill rate of `r` credits per second is then
//! exactly `r` units per nanosecond, so refilling and the reported waits are
//! exact integer arithmetic (u128 intermediates): no rounding drift, no
//! floating point.
//!
//! - **cost > capacity** can never be granted: [`TokenBucket::try_acquire`]
//!   returns `Err(Duration::MAX)`, which is "never" — `now + Duration::MAX`
//!   saturates to [`Instant::NEVER`]. The same holds for a bucket with a
//!   refill rate of 0 that lacks the credits.
//! - **Time going backwards** neither panics nor mints credits: the bucket
//!   remembers the latest instant it has seen and refills only past it.
//!
//! ```
//! use zenws_core::{ratelimit::TokenBucket, Instant};
//! use core::time::Duration;
//!
//! let mut bucket = TokenBucket::new(2, 10); // burst 2, 10 per second
//! let t0 = Instant::from_millis(0);
//! assert!(bucket.try_acquire(t0, 1).is_ok());
//! assert!(bucket.try_acquire(t0, 1).is_ok());
//! // Empty: one credit refills in 100 ms.
//! assert_eq!(bucket.try_acquire(t0, 1), Err(Duration::from_millis(100)));
//! assert!(bucket.try_acquire(t0 + Duration::from_millis(100), 1).is_ok());
//! // More than the capacity can never be granted.
//! assert_eq!(bucket.try_acquire(t0, 3), Err(Duration::MAX));
//! ```

use core::time::Duration;

use crate::time::Instant;

/// Fixed-point units per credit (nanocredits).
const SCALE: u64 = 1_000_000_000;

/// An integer token bucket: `capacity` credits, refilled continuously at
/// `refill_per_sec` credits per second, starting full.
///
/// See the [module docs](self) for the arithmetic and edge cases.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TokenBucket {
    capacity: u32,
    refill_per_sec: u32,
    /// Current credits × [`SCALE`]; never exceeds `capacity × SCALE`
    /// (≤ 4.3 × 10¹⁸, fits u64).
    tokens: u64,
    /// The latest instant the bucket has been refilled to.
    last: Instant,
}

impl TokenBucket {
    /// A full bucket holding at most `capacity` credits, refilled at
    /// `refill_per_sec` credits per second. Its refill clock starts at
    /// [`Instant::ZERO`] (it is full, so that only matters for time going
    /// backwards).
    pub const fn new(capacity: u32, refill_per_sec: u32) -> Self {
        TokenBucket {
            capacity,
            refill_per_sec,
            tokens: capacity as u64 * SCALE,
            last: Instant::ZERO,
        }
    }

    /// Maximum credits (the burst size).
    pub const fn capacity(&self) -> u32 {
        self.capacity
    }

    /// Credits added per second.
    pub const fn refill_per_sec(&self) -> u32 {
        self.refill_per_sec
    }

    fn max_units(&self) -> u64 {
        u64::from(self.capacity) * SCALE
    }

    /// Units held at `now` (without mutating), and the instant they are
    /// counted at (`max(now, last)`).
    fn units_at(&self, now: Instant) -> (u64, Instant) {
        if now <= self.last {
            return (self.tokens, self.last);
        }
        let elapsed = u128::from(now.as_nanos() - self.last.as_nanos());
        let added = elapsed * u128::from(self.refill_per_sec);
        let total = u128::from(self.tokens) + added;
        let units = u64::try_from(total.min(u128::from(self.max_units()))).unwrap_or(u64::MAX);
        (units, now)
    }

    /// Whole credits available at `now` (rounded down).
    ///
    /// ```
    /// use zenws_core::{ratelimit::TokenBucket, Instant};
    /// let mut b = TokenBucket::new(10, 4);
    /// b.try_acquire(Instant::ZERO, 10).unwrap();
    /// assert_eq!(b.available(Instant::from_millis(499)), 1);
    /// assert_eq!(b.available(Instant::from_millis(500)), 2);
    /// assert_eq!(b.available(Instant::from_millis(60_000)), 10);
    /// ```
    pub fn available(&self, now: Instant) -> u32 {
        let (units, _) = self.units_at(now);
        u32::try_from(units / SCALE).unwrap_or(u32::MAX)
    }

    /// Take `cost` credits at `now`, or report how long until it would be
    /// allowed.
    ///
    /// `Err(wait)` is exact: with no other acquisitions in between, the same
    /// call succeeds at `now + wait` and fails at `now + wait - 1ns`.
    /// `Err(Duration::MAX)` means never (`cost > capacity`, or the refill rate
    /// is 0 and the credits are not there). A `cost` of 0 always succeeds.
    pub fn try_acquire(&mut self, now: Instant, cost: u32) -> Result<(), Duration> {
        let (units, at) = self.units_at(now);
        self.tokens = units;
        self.last = at;
        if cost > self.capacity {
            return Err(Duration::MAX);
        }
        let need = u64::from(cost) * SCALE;
        if units >= need {
            self.tokens = units - need;
            return Ok(());
        }
        if self.refill_per_sec == 0 {
            return Err(Duration::MAX);
        }
        let deficit = need - units;
        let rate = u64::from(self.refill_per_sec);
        // ceil(deficit / rate) nanoseconds after `at`, which may be later than `now`.
        let refill_ns = u128::from(deficit.div_ceil(rate));
        let behind_ns = u128::from(at.as_nanos() - now.as_nanos().min(at.as_nanos()));
        Err(nanos_to_duration(refill_ns + behind_ns))
    }
}

/// A `Duration` of `ns` nanoseconds (u128 → Duration without overflow for
/// anything below 2⁶⁴ seconds).
fn nanos_to_duration(ns: u128) -> Duration {
    let secs = u64::try_from(ns / u128::from(SCALE)).unwrap_or(u64::MAX);
    let sub = u32::try_from(ns % u128::from(SCALE)).unwrap_or(0);
    Duration::new(secs, sub)
}

/// What sending one message costs in each pool of a [`RateLimit`]:
/// `[shared, class 0, class 1]` (0: not charged there).
pub type Costs = [u32; 3];

/// How many credits sending one message costs, in each pool at once (one
/// look at the message, however many pools).
pub type CostFn = fn(&[u8]) -> Costs;

/// Every message costs 1 credit in the shared pool.
pub fn flat_cost(_: &[u8]) -> Costs {
    [1, 0, 0]
}

pub use crate::exchange::deribit::{
    cost as deribit_cost, is_matching_engine as is_deribit_matching_engine,
};

/// A pool of its own for one class of messages (e.g. order entry); what a
/// message costs in it comes from the [`RateLimit::cost`] function.
#[derive(Clone, Copy, Debug)]
pub struct LimitClass {
    /// Maximum credits (burst).
    pub capacity: u32,
    /// Credits refilled per second.
    pub refill_per_sec: u32,
}

/// Rate-limit configuration for one connection's outbound messages: a
/// shared pool plus up to two class pools (see
/// [`exchange::deribit::rate_limit`](crate::exchange::deribit::rate_limit)),
/// each with a per-message cost function. A message must fit every pool
/// that charges it.
///
/// ```
/// use zenws_core::{ratelimit::RateLimit, Instant};
///
/// let limit = RateLimit::deribit();
/// let mut buckets = limit.buckets();
/// let msg = br#"{"jsonrpc":"2.0","id":1,"method":"public/get_time"}"#;
/// for _ in 0..100 {
///     assert!(buckets.try_acquire(&limit, Instant::ZERO, msg).is_ok());
/// }
/// // The 101st request within the same instant waits 50 ms (500 credits at 10,000/s).
/// assert_eq!(
///     buckets.try_acquire(&limit, Instant::ZERO, msg),
///     Err(core::time::Duration::from_millis(50)),
/// );
/// ```
#[derive(Clone, Copy, Debug)]
pub struct RateLimit {
    /// Maximum credits (burst) of the shared pool.
    pub capacity: u32,
    /// Credits refilled per second.
    pub refill_per_sec: u32,
    /// What one message costs in every pool.
    pub cost: CostFn,
    /// Pools of their own for classes of messages.
    pub classes: [Option<LimitClass>; 2],
}

impl RateLimit {
    /// Deribit's published defaults for the default tier
    /// ([`exchange::deribit::rate_limit`](crate::exchange::deribit::rate_limit)).
    pub fn deribit() -> Self {
        crate::exchange::deribit::rate_limit()
    }

    /// `per_sec` messages per second sustained, `burst` at once, each
    /// message costing 1 ([`flat_cost`]).
    pub fn flat(per_sec: u32, burst: u32) -> Self {
        RateLimit {
            capacity: burst,
            refill_per_sec: per_sec,
            cost: flat_cost,
            classes: [None, None],
        }
    }

    /// No limit at all: every message costs nothing. For a client whose
    /// protocol has a published limit ([`Protocol::rate_limit`]) that it
    /// must not apply (`ConnectionConfig::rate_limit: None` means "the
    /// protocol's").
    ///
    /// [`Protocol::rate_limit`]: crate::exchange::Protocol::rate_limit
    pub fn unlimited() -> Self {
        fn free(_: &[u8]) -> Costs {
            [0, 0, 0]
        }
        RateLimit {
            capacity: 0,
            refill_per_sec: 0,
            cost: free,
            classes: [None, None],
        }
    }

    /// A full shared pool of this shape.
    pub fn bucket(&self) -> TokenBucket {
        TokenBucket::new(self.capacity, self.refill_per_sec)
    }

    /// Full pools of this shape.
    pub fn buckets(&self) -> Buckets {
        let class =
            |c: Option<LimitClass>| c.map(|c| TokenBucket::new(c.capacity, c.refill_per_sec));
        Buckets {
            shared: self.bucket(),
            classes: [class(self.classes[0]), class(self.classes[1])],
        }
    }

    /// The cost of sending `msg` in the shared pool.
    pub fn cost_of(&self, msg: &[u8]) -> u32 {
        (self.cost)(msg)[0]
    }
}

/// The pools of one [`RateLimit`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Buckets {
    shared: TokenBucket,
    classes: [Option<TokenBucket>; 2],
}

impl Buckets {
    /// Take what `msg` costs from every pool that charges it, or say how
    /// long until all of them can (then nothing is taken).
    pub fn try_acquire(
        &mut self,
        limit: &RateLimit,
        now: Instant,
        msg: &[u8],
    ) -> Result<(), Duration> {
        let costs = (limit.cost)(msg);
        // The common cases: one pool charges the message (no rollback).
        match costs {
            [c, 0, 0] => return self.shared.try_acquire(now, c),
            [0, c, 0] => {
                return self.classes[0]
                    .as_mut()
                    .map_or(Ok(()), |b| b.try_acquire(now, c))
            }
            [0, 0, c] => {
                return self.classes[1]
                    .as_mut()
                    .map_or(Ok(()), |b| b.try_acquire(now, c))
            }
            _ => {}
        }
        let before = *self;
        let mut wait = Duration::ZERO;
        for (k, cost) in costs.into_iter().enumerate() {
            if cost == 0 {
                continue;
            }
            let b = match k {
                0 => Some(&mut self.shared),
                k => self.classes[k - 1].as_mut(),
            };
            if let Some(b) = b {
                if let Err(w) = b.try_acquire(now, cost) {
                    wait = wait.max(w);
                }
            }
        }
        if wait > Duration::ZERO {
            *self = before;
            return Err(wait);
        }
        Ok(())
    }

    /// Take credits without ever refusing (the server charges the core's
    /// own messages too).
    pub fn charge(&mut self, limit: &RateLimit, now: Instant, msg: &[u8]) {
        if self.try_acquire(limit, now, msg).is_err() {
            let _ = self.shared.try_acquire(now, self.shared.available(now));
        }
    }

    /// The server said the limit was hit: we were out of step with it, so
    /// every pool is emptied. Returns how long until the shared pool is full
    /// again (what to wait before sending or reconnecting).
    pub fn drain(&mut self, now: Instant) -> Duration {
        let mut wait = Duration::ZERO;
        for b in core::iter::once(&mut self.shared).chain(self.classes.iter_mut().flatten()) {
            let avail = b.available(now);
            let _ = b.try_acquire(now, avail);
            let cap = b.capacity();
            let mut probe = *b;
            if let Err(w) = probe.try_acquire(now, cap) {
                if b.refill_per_sec() > 0 {
                    wait = wait.max(w);
                }
            }
        }
        wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ns(n: u64) -> Instant {
        Instant::from_nanos(n)
    }

    #[test]
    fn starts_full_and_refills() {
        let mut b = TokenBucket::new(5, 1);
        assert_eq!(b.available(Instant::ZERO), 5);
        assert!(b.try_acquire(ns(0), 5).is_ok());
        assert_eq!(b.available(ns(0)), 0);
        assert_eq!(b.try_acquire(ns(0), 2), Err(Duration::from_secs(2)));
        assert_eq!(
            b.try_acquire(ns(500_000_000), 2),
            Err(Duration::from_millis(1_500))
        );
        assert!(b.try_acquire(ns(2_000_000_000), 2).is_ok());
        // Never above capacity after a long idle period.
        assert_eq!(b.available(Instant::NEVER), 5);
    }

    #[test]
    fn cost_above_capacity_is_never() {
        let mut b = TokenBucket::new(3, 1000);
        assert_eq!(b.try_acquire(ns(0), 4), Err(Duration::MAX));
        assert_eq!(b.available(ns(0)), 3);
        assert_eq!(ns(0) + Duration::MAX, Instant::NEVER);
        let mut z = TokenBucket::new(0, 0);
        assert!(z.try_acquire(ns(0), 0).is_ok());
        assert_eq!(z.try_acquire(ns(0), 1), Err(Duration::MAX));
    }

    #[test]
    fn zero_refill_is_never_once_empty() {
        let mut b = TokenBucket::new(2, 0);
        assert!(b.try_acquire(ns(0), 2).is_ok());
        assert_eq!(b.try_acquire(Instant::NEVER, 1), Err(Duration::MAX));
    }

    #[test]
    fn time_backwards_mints_nothing() {
        let mut b = TokenBucket::new(10, 10);
        assert!(b.try_acquire(ns(10_000_000_000), 10).is_ok());
        // Back in time: nothing refilled; the wait counts from the later instant.
        assert_eq!(b.available(ns(0)), 0);
        assert_eq!(
            b.try_acquire(ns(9_000_000_000), 1),
            Err(Duration::from_millis(1_100))
        );
        // Forward again by 100 ms past the latest instant: exactly 1 credit.
        assert!(b.try_acquire(ns(10_100_000_000), 1).is_ok());
        assert_eq!(
            b.try_acquire(ns(10_100_000_000), 1),
            Err(Duration::from_millis(100))
        );
    }

    #[test]
    fn extreme_values() {
        let mut b = TokenBucket::new(u32::MAX, u32::MAX);
        assert!(b.try_acquire(ns(0), u32::MAX).is_ok());
        assert_eq!(b.try_acquire(ns(0), u32::MAX), Err(Duration::from_secs(1)));
        assert_eq!(b.available(Instant::NEVER), u32::MAX);
        let mut s = TokenBucket::new(u32::MAX, 1);
        assert!(s.try_acquire(Instant::NEVER, u32::MAX).is_ok());
        assert_eq!(s.try_acquire(ns(0), u32::MAX), {
            let behind = Duration::from_nanos(u64::MAX);
            Err(behind + Duration::from_secs(u64::from(u32::MAX)))
        });
    }

    #[test]
    fn deribit_defaults() {
        let l = RateLimit::deribit();
        assert_eq!((l.capacity, l.refill_per_sec), (50_000, 10_000));
        // Order entry (cancels included) has a pool of its own, not the shared one.
        assert_eq!(l.cost_of(br#"{"method":"private/cancel_all"}"#), 0);
        assert_eq!(l.cost_of(br#"{"method":"private/get_positions"}"#), 500);
        let mut b = l.buckets();
        for _ in 0..20 {
            b.try_acquire(&l, ns(0), br#"{"method":"private/cancel_all"}"#)
                .unwrap();
        }
        assert_eq!(
            b.try_acquire(&l, ns(0), br#"{"method":"private/cancel_all"}"#),
            Err(Duration::from_millis(200))
        );
        assert!(is_deribit_matching_engine("/api/v2/private/edit_by_label"));
        assert!(!is_deribit_matching_engine("private/get_positions"));
        let f = RateLimit::flat(20, 5);
        assert_eq!((f.capacity, f.refill_per_sec, f.cost_of(b"x")), (5, 20, 1));
        assert_eq!(f.bucket().available(ns(0)), 5);
    }

    const QUERY: &[u8] = br#"{"jsonrpc":"2.0","id":1,"method":"public/get_time"}"#;
    const ORDER: &[u8] = br#"{"jsonrpc":"2.0","id":2,"method":"private/buy","params":{}}"#;
    const SUB: &[u8] = br#"{"jsonrpc":"2.0","id":3,"method":"public/subscribe","params":{}}"#;

    #[test]
    fn drain_empties_every_pool_and_waits_for_the_shared_one() {
        let l = RateLimit::deribit();
        let mut b = l.buckets();
        let t0 = ns(1_000_000_000);
        // 50,000 credits at 10,000/s: full again in 5 s (orders 4 s, subscribes 3 s).
        assert_eq!(b.drain(t0), Duration::from_secs(5));
        assert_eq!(b.try_acquire(&l, t0, QUERY), Err(Duration::from_millis(50)));
        assert_eq!(
            b.try_acquire(&l, t0, ORDER),
            Err(Duration::from_millis(200))
        );
        assert_eq!(b.try_acquire(&l, t0, SUB), Err(Duration::from_millis(300)));
        // Draining twice at the same instant changes nothing.
        assert_eq!(b.drain(t0), Duration::from_secs(5));
        // Half-way, half the pool: 50 queries, not 51.
        let half = ns(3_500_000_000);
        for _ in 0..50 {
            b.try_acquire(&l, half, QUERY).unwrap();
        }
        assert!(b.try_acquire(&l, half, QUERY).is_err());
        // A drain later waits for what is missing at that time only.
        let mut c = l.buckets();
        for _ in 0..50 {
            c.try_acquire(&l, t0, QUERY).unwrap();
        }
        assert_eq!(
            c.drain(t0),
            Duration::from_secs(5),
            "drained means empty, whatever was left"
        );
        let full = t0 + Duration::from_secs(5);
        for _ in 0..100 {
            c.try_acquire(&l, full, QUERY).unwrap();
        }
        assert!(c.try_acquire(&l, full, QUERY).is_err());
    }

    #[test]
    fn drain_without_refill_never_waits_forever() {
        let l = RateLimit::flat(0, 5);
        let mut b = l.buckets();
        assert_eq!(
            b.drain(ns(0)),
            Duration::ZERO,
            "a pool that never refills is no reason to hold"
        );
        assert_eq!(b.try_acquire(&l, ns(0), b"x"), Err(Duration::MAX));
        let l = RateLimit::flat(10, 5);
        let mut b = l.buckets();
        assert_eq!(b.drain(ns(0)), Duration::from_millis(500));
    }

    fn two(_: &[u8]) -> Costs {
        [1, 2, 0]
    }

    #[test]
    fn a_message_takes_from_every_pool_or_from_none() {
        let l = RateLimit {
            capacity: 10,
            refill_per_sec: 1,
            cost: two,
            classes: [
                Some(LimitClass {
                    capacity: 3,
                    refill_per_sec: 1,
                }),
                None,
            ],
        };
        let mut b = l.buckets();
        b.try_acquire(&l, ns(0), b"m").unwrap();
        // The class pool has 1 of the 2 credits: refused, and the shared
        // pool keeps its 9.
        assert_eq!(b.try_acquire(&l, ns(0), b"m"), Err(Duration::from_secs(1)));
        assert_eq!(b.shared.available(ns(0)), 9);
        // Charging never refuses; when short, the shared pool is emptied.
        b.charge(&l, ns(0), b"m");
        assert_eq!(b.shared.available(ns(0)), 0);
    }

    #[derive(Clone, Debug)]
    enum Op {
        Acquire(u64, u32),
        Back(u64),
    }

    fn ops() -> impl Strategy<Value = Vec<Op>> {
        proptest::collection::vec(
            prop_oneof![
                4 => (0u64..3_000_000_000, 0u32..1_200).prop_map(|(dt, c)| Op::Acquire(dt, c)),
                1 => (0u64..3_000_000_000).prop_map(Op::Back),
            ],
            0..40,
        )
    }

    proptest! {
        #[test]
        fn tokens_never_exceed_capacity_and_waits_are_exact(
            cap in 0u32..1_000,
            rate in 0u32..100_000,
            start in 0u64..u64::MAX / 2,
            ops in ops(),
        ) {
            let mut b = TokenBucket::new(cap, rate);
            let mut now = start;
            for op in ops {
                match op {
                    Op::Acquire(dt, cost) => {
                        now = now.saturating_add(dt);
                        let t = ns(now);
                        let before = b;
                        let r = b.try_acquire(t, cost);
                        prop_assert!(b.available(t) <= cap);
                        prop_assert!(b.tokens <= u64::from(cap) * SCALE);
                        if let Err(wait) = r {
                            if cost > cap || (rate == 0) {
                                prop_assert_eq!(wait, Duration::MAX);
                            } else {
                                prop_assert!(wait > Duration::ZERO);
                                let wait_ns = u64::try_from(wait.as_nanos()).unwrap();
                                let mut at = before;
                                prop_assert!(at.try_acquire(ns(now + wait_ns), cost).is_ok());
                                let mut early = before;
                                prop_assert!(early.try_acquire(ns(now + wait_ns - 1), cost).is_err());
                            }
                        }
                    }
                    Op::Back(dt) => {
                        let before = b.available(ns(now));
                        now = now.saturating_sub(dt);
                        // Looking backwards never shows more credits.
                        prop_assert!(b.available(ns(now)) <= before);
                    }
                }
            }
        }
    }
}
