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

use crate::json;
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

/// How many credits sending one message costs.
pub type CostFn = fn(&[u8]) -> u32;

/// Every message costs 1 credit.
pub fn flat_cost(_: &[u8]) -> u32 {
    1
}

/// Deribit's published default for non-matching-engine requests: credits
/// per request.
pub const DERIBIT_REQUEST_COST: u32 = 500;
/// What [`deribit_cost`] charges a matching-engine request in the shared
/// bucket (see there: Deribit limits these separately, by volume tier).
pub const DERIBIT_MATCHING_ENGINE_COST: u32 = 500;
/// Deribit's published default maximum credits (burst of 100 requests).
pub const DERIBIT_CAPACITY: u32 = 50_000;
/// Deribit's published default refill rate in credits per second
/// (20 requests per second sustained).
pub const DERIBIT_REFILL_PER_SEC: u32 = 10_000;

/// Whether a Deribit method is a matching-engine request (order entry and
/// cancellation). Accepts the method with or without a leading `/api/v2/`.
///
/// ```
/// use zenws_core::ratelimit::is_deribit_matching_engine;
/// assert!(is_deribit_matching_engine("private/buy"));
/// assert!(is_deribit_matching_engine("private/cancel_all_by_currency"));
/// assert!(!is_deribit_matching_engine("public/get_order_book"));
/// ```
pub fn is_deribit_matching_engine(method: &str) -> bool {
    let m = method.strip_prefix("/api/v2/").unwrap_or(method);
    matches!(
        m,
        "private/buy"
            | "private/sell"
            | "private/close_position"
            | "private/verify_block_trade"
            | "private/execute_block_trade"
            | "private/mass_quote"
    ) || m.starts_with("private/edit")
        || m.starts_with("private/cancel")
}

/// The credit cost of one outbound Deribit JSON-RPC message.
///
/// Deribit's published defaults for the default account tier are used
/// ([`DERIBIT_REQUEST_COST`] = 500 credits per request against a bucket of
/// [`DERIBIT_CAPACITY`] = 50,000 credits refilled at
/// [`DERIBIT_REFILL_PER_SEC`] = 10,000 credits/s: 20 requests/s, burst 100).
///
/// Matching-engine methods ([`is_deribit_matching_engine`]: `private/buy`,
/// `private/sell`, `private/edit*`, `private/cancel*`, …) are limited by
/// Deribit in a separate, volume-tiered budget. This model charges them 500
/// credits in the same bucket: conservative for the shared budget, but it does
/// not enforce the tier's own limit; a user who needs that runs a second
/// [`TokenBucket`] for messages where `is_deribit_matching_engine` holds.
///
/// Every message costs, including `public/test` answers to heartbeats (Deribit
/// counts session-level messages too) and messages that do not parse (the
/// server still counts them). Keeping heartbeat answers from being starved by
/// bulk traffic is the driver's job (e.g. send them ahead of the queue).
///
/// ```
/// use zenws_core::ratelimit::deribit_cost;
/// assert_eq!(deribit_cost(br#"{"jsonrpc":"2.0","id":1,"method":"public/test"}"#), 500);
/// assert_eq!(deribit_cost(br#"{"jsonrpc":"2.0","id":2,"method":"private/buy","params":{}}"#), 500);
/// assert_eq!(deribit_cost(b"not json"), 500);
/// ```
pub fn deribit_cost(msg: &[u8]) -> u32 {
    match json::scan(msg) {
        Ok(view) => match view.method {
            Some(m) if is_deribit_matching_engine(m) => DERIBIT_MATCHING_ENGINE_COST,
            _ => DERIBIT_REQUEST_COST,
        },
        Err(_) => DERIBIT_REQUEST_COST,
    }
}

/// Rate-limit configuration for one connection's outbound messages:
/// a bucket shape plus a per-message cost function.
///
/// ```
/// use zenws_core::{ratelimit::RateLimit, Instant};
///
/// let limit = RateLimit::deribit();
/// let mut bucket = limit.bucket();
/// let msg = br#"{"jsonrpc":"2.0","id":1,"method":"public/get_time"}"#;
/// for _ in 0..100 {
///     assert!(bucket.try_acquire(Instant::ZERO, limit.cost_of(msg)).is_ok());
/// }
/// // The 101st request within the same instant waits 50 ms (500 credits at 10,000/s).
/// assert_eq!(
///     bucket.try_acquire(Instant::ZERO, limit.cost_of(msg)),
///     Err(core::time::Duration::from_millis(50)),
/// );
/// ```
#[derive(Clone, Copy, Debug)]
pub struct RateLimit {
    /// Maximum credits (burst).
    pub capacity: u32,
    /// Credits refilled per second.
    pub refill_per_sec: u32,
    /// Credits one message costs.
    pub cost: CostFn,
}

impl RateLimit {
    /// Deribit's published defaults for the default tier: 50,000 credits,
    /// 10,000 credits/s, [`deribit_cost`] (500 per request).
    pub fn deribit() -> Self {
        RateLimit {
            capacity: DERIBIT_CAPACITY,
            refill_per_sec: DERIBIT_REFILL_PER_SEC,
            cost: deribit_cost,
        }
    }

    /// `per_sec` messages per second sustained, `burst` at once, each
    /// message costing 1 ([`flat_cost`]).
    pub fn flat(per_sec: u32, burst: u32) -> Self {
        RateLimit {
            capacity: burst,
            refill_per_sec: per_sec,
            cost: flat_cost,
        }
    }

    /// A full bucket of this shape.
    pub fn bucket(&self) -> TokenBucket {
        TokenBucket::new(self.capacity, self.refill_per_sec)
    }

    /// The cost of sending `msg`.
    pub fn cost_of(&self, msg: &[u8]) -> u32 {
        (self.cost)(msg)
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
        assert_eq!(l.cost_of(br#"{"method":"private/cancel_all"}"#), 500);
        assert!(is_deribit_matching_engine("/api/v2/private/edit_by_label"));
        assert!(!is_deribit_matching_engine("private/get_positions"));
        let f = RateLimit::flat(20, 5);
        assert_eq!((f.capacity, f.refill_per_sec, f.cost_of(b"x")), (5, 20, 1));
        assert_eq!(f.bucket().available(ns(0)), 5);
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
