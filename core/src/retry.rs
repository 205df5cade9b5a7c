//! Reconnect policy: an exponential ladder with jitter, reset only by health.
//!
//! [`RetryPolicy`] is plain configuration, shared by any number of
//! connections. [`Backoff`] is the per-connection state (24 bytes): the
//! position on the ladder, when the current connection opened, and a seeded
//! [`Rng`] for jitter. Every method takes the policy and the time as
//! arguments, so the same seed and inputs always give the same delays.
//!
//! The ladder: attempt `n` (0-based) waits around
//! `min(retry_delay · multiplierⁿ, max_backoff)`, jittered per [`Jitter`],
//! and always within `[retry_delay, max_backoff]`.
//!
//! Resetting: a connection that opens and dies quickly (a flapping server,
//! a proxy that accepts then drops) does *not* earn a fresh ladder; only one
//! that stayed open for [`RetryPolicy::reset_after`] does. Otherwise a server
//! in a crash loop would be hammered at the shortest delay forever.

use crate::rng::Rng;
use crate::time::Instant;
use core::time::Duration;

/// How many retries an outage gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RetryCount {
    /// At most this many retries after the first failed attempt of an outage;
    /// `Limited(0)` never retries.
    Limited(u32),
    /// Retry forever (the delay stays capped at `max_backoff`).
    Infinite,
}

impl Default for RetryCount {
    fn default() -> Self {
        RetryCount::Limited(3)
    }
}

/// How the delay of each step is spread, so that many clients cut off at
/// once (server restart) do not reconnect in lockstep.
///
/// Each scheme picks a band around the un-jittered step `base`; the band is
/// then intersected with `[retry_delay, max_backoff]` and the delay is drawn
/// *uniformly* from what remains. Intersecting (rather than clamping a sample)
/// keeps the bounds without piling probability mass onto them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Jitter {
    /// Exactly `base`. Deterministic, but clients stay synchronised.
    None,
    /// "Full jitter" (AWS architecture blog): uniform in `[retry_delay, base]`.
    /// The widest spread; the first step (base = retry_delay) is not jittered.
    Full,
    /// "Equal jitter": uniform in `[base / 2, base]` (never below `retry_delay`).
    Equal,
    /// Uniform in `base · (1 ± permille / 1000)`; values above 1000 act as 1000.
    /// Every step is spread, including the first and the capped ones.
    Proportional {
        /// Half-width of the band in thousandths of `base` (200 = ±20 %).
        permille: u16,
    },
}

impl Default for Jitter {
    /// ±20 %: spreads even the first retry, and the capped steps stay near the cap.
    fn default() -> Self {
        Jitter::Proportional { permille: 200 }
    }
}

/// Reconnect configuration.
///
/// If `retry_delay > max_backoff`, `max_backoff` wins: every delay is exactly
/// `max_backoff` (it is the user's promise about the longest wait). A
/// `multiplier` of 0 or 1 gives a constant delay. Delays saturate at
/// `u64::MAX` nanoseconds (~584 years), the range of [`Instant`].
///
/// ```
/// use zenws_core::retry::{Jitter, RetryCount, RetryPolicy};
/// use core::time::Duration;
/// let p = RetryPolicy::default();
/// assert_eq!(p.retry_count, RetryCount::Limited(3));
/// assert_eq!(p.base_delay(0), Duration::from_secs(1));
/// assert_eq!(p.base_delay(3), Duration::from_secs(8));
/// assert_eq!(p.base_delay(10), Duration::from_secs(30)); // capped
/// let steady = p.with_jitter(Jitter::None).with_multiplier(1);
/// assert_eq!(steady.base_delay(10), Duration::from_secs(1));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// Retries per outage (default `Limited(3)`).
    pub retry_count: RetryCount,
    /// Delay before the first retry, and the floor of every delay (default 1 s).
    pub retry_delay: Duration,
    /// Growth factor per step (default 2).
    pub multiplier: u32,
    /// Ceiling of every delay (default 30 s).
    pub max_backoff: Duration,
    /// Spread of each delay (default ±20 %).
    pub jitter: Jitter,
    /// How long a connection must stay open before its close resets the
    /// ladder (default 10 s).
    pub reset_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl RetryPolicy {
    /// The defaults, usable in `const` context (same as [`Default`]).
    pub const DEFAULT: RetryPolicy = RetryPolicy {
        retry_count: RetryCount::Limited(3),
        retry_delay: Duration::from_millis(1000),
        multiplier: 2,
        max_backoff: Duration::from_secs(30),
        jitter: Jitter::Proportional { permille: 200 },
        reset_after: Duration::from_secs(10),
    };

    /// Set [`retry_count`](Self::retry_count).
    #[must_use]
    pub const fn with_retry_count(mut self, count: RetryCount) -> Self {
        self.retry_count = count;
        self
    }

    /// Set [`retry_delay`](Self::retry_delay).
    #[must_use]
    pub const fn with_retry_delay(mut self, delay: Duration) -> Self {
        self.retry_delay = delay;
        self
    }

    /// Set [`multiplier`](Self::multiplier).
    #[must_use]
    pub const fn with_multiplier(mut self, multiplier: u32) -> Self {
        self.multiplier = multiplier;
        self
    }

    /// Set [`max_backoff`](Self::max_backoff).
    #[must_use]
    pub const fn with_max_backoff(mut self, max: Duration) -> Self {
        self.max_backoff = max;
        self
    }

    /// Set [`jitter`](Self::jitter).
    #[must_use]
    pub const fn with_jitter(mut self, jitter: Jitter) -> Self {
        self.jitter = jitter;
        self
    }

    /// Set [`reset_after`](Self::reset_after).
    #[must_use]
    pub const fn with_reset_after(mut self, after: Duration) -> Self {
        self.reset_after = after;
        self
    }
}

/// Saturating `Duration` → nanoseconds, the unit all ladder arithmetic uses.
fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl RetryPolicy {
    /// The bounds every delay lies in, in nanoseconds: `(floor, ceiling)`.
    fn bounds(&self) -> (u64, u64) {
        let hi = nanos(self.max_backoff);
        (nanos(self.retry_delay).min(hi), hi)
    }

    /// The un-jittered delay of step `attempt` (0-based):
    /// `min(retry_delay · multiplier^attempt, max_backoff)`.
    pub fn base_delay(&self, attempt: u32) -> Duration {
        Duration::from_nanos(self.base_nanos(attempt))
    }

    fn base_nanos(&self, attempt: u32) -> u64 {
        let (lo, hi) = self.bounds();
        let growth = u64::from(self.multiplier.max(1))
            .checked_pow(attempt)
            .unwrap_or(u64::MAX);
        lo.saturating_mul(growth).min(hi)
    }

    /// `true` if a retry may follow `attempt` earlier retries in this outage.
    pub fn allows(&self, attempt: u32) -> bool {
        match self.retry_count {
            RetryCount::Limited(max) => attempt < max,
            RetryCount::Infinite => true,
        }
    }

    /// The jittered delay of step `attempt`, drawn from `rng`.
    fn delay(&self, attempt: u32, rng: &mut Rng) -> Duration {
        let (floor, ceil) = self.bounds();
        let base = self.base_nanos(attempt);
        let (lo, hi) = match self.jitter {
            Jitter::None => (base, base),
            Jitter::Full => (floor, base),
            Jitter::Equal => (base / 2, base),
            Jitter::Proportional { permille } => {
                let spread = (u128::from(base) * u128::from(permille.min(1000)) / 1000) as u64;
                (base - spread, base.saturating_add(spread))
            }
        };
        // floor ≤ base ≤ ceil, and every band contains base: the intersection is never empty.
        Duration::from_nanos(rng.in_range(lo.max(floor), hi.min(ceil)))
    }
}

/// "Not open": `opened_at` uses a sentinel rather than `Option` to keep
/// `Backoff` at 24 bytes instead of 32 (10 000 of them per core).
const NOT_OPEN: Instant = Instant::NEVER;

/// Per-connection reconnect state: where on the ladder we are.
///
/// Feed it the connection's life: [`on_open`](Backoff::on_open) when the
/// handshake completes, [`on_close`](Backoff::on_close) when an open
/// connection ends, [`on_failure`](Backoff::on_failure) for each failure
/// that wants a reconnect (a failed attempt, or the drop of an open one).
///
/// ```
/// use zenws_core::retry::{Backoff, Jitter, RetryPolicy};
/// use zenws_core::Instant;
/// use core::time::Duration;
/// let policy = RetryPolicy::default().with_jitter(Jitter::None);
/// let mut b = Backoff::new(7);
/// let t = Instant::from_millis(0);
/// assert_eq!(b.on_failure(t, &policy), Some(Duration::from_secs(1)));
/// assert_eq!(b.on_failure(t, &policy), Some(Duration::from_secs(2)));
/// assert_eq!(b.on_failure(t, &policy), Some(Duration::from_secs(4)));
/// assert_eq!(b.on_failure(t, &policy), None); // 3 retries used: give up
///
/// // A connection that stays up for `reset_after` earns a fresh ladder.
/// let mut b = Backoff::new(7);
/// b.on_failure(t, &policy);
/// b.on_open(t);
/// b.on_close(t + Duration::from_secs(60), &policy);
/// assert_eq!(b.attempt(), 0);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backoff {
    rng: Rng,
    /// When the current connection opened, or `NOT_OPEN`.
    opened_at: Instant,
    /// Retries scheduled since the ladder was last reset.
    attempt: u32,
}

impl Backoff {
    /// A fresh ladder whose jitter is drawn from `seed`.
    ///
    /// Give each connection its own seed (e.g. a base seed mixed with the
    /// connection id) or they will jitter in lockstep, defeating the purpose.
    pub const fn new(seed: u64) -> Self {
        Backoff {
            rng: Rng::new(seed),
            opened_at: NOT_OPEN,
            attempt: 0,
        }
    }

    /// A connection attempt failed, or an open connection dropped: the delay
    /// before the next attempt, or `None` if this outage has used up its
    /// retries (the client should then exit with
    /// [`ExitReason::RetriesExhausted`](crate::ExitReason::RetriesExhausted)).
    ///
    /// A failure while open implies [`on_close`](Backoff::on_close) at `now`,
    /// so a drop after a long healthy period starts a fresh ladder even if the
    /// caller did not report the close separately.
    pub fn on_failure(&mut self, now: Instant, policy: &RetryPolicy) -> Option<Duration> {
        self.on_close(now, policy);
        if !policy.allows(self.attempt) {
            return None;
        }
        let delay = policy.delay(self.attempt, &mut self.rng);
        self.attempt = self.attempt.saturating_add(1);
        Some(delay)
    }

    /// The connection opened at `now`. The ladder is *not* reset yet: that
    /// waits until the connection has proven healthy (see `on_close`).
    pub fn on_open(&mut self, now: Instant) {
        self.opened_at = now;
    }

    /// The open connection ended at `now`. If it had been open for at least
    /// `policy.reset_after`, the ladder resets; otherwise the next failure
    /// continues where the last outage left off. No-op if not open.
    pub fn on_close(&mut self, now: Instant, policy: &RetryPolicy) {
        if self.opened_at == NOT_OPEN {
            return;
        }
        if now.saturating_since(self.opened_at) >= policy.reset_after {
            self.attempt = 0;
        }
        self.opened_at = NOT_OPEN;
    }

    /// Retries scheduled since the ladder was last reset.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// `true` between `on_open` and the next `on_close`/`on_failure`.
    pub fn is_open(&self) -> bool {
        self.opened_at != NOT_OPEN
    }

    /// Start a fresh ladder now (e.g. the user asked to reconnect). Keeps
    /// the random stream, so a replay with the same inputs stays identical.
    pub fn reset(&mut self) {
        self.attempt = 0;
        self.opened_at = NOT_OPEN;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::{
        any, prop_assert, prop_assert_eq, prop_oneof, proptest, Just, Strategy,
    };

    const T0: Instant = Instant::from_millis(1_000);

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn no_jitter() -> RetryPolicy {
        RetryPolicy {
            jitter: Jitter::None,
            retry_count: RetryCount::Infinite,
            ..RetryPolicy::default()
        }
    }

    #[test]
    fn defaults() {
        let p = RetryPolicy::default();
        assert_eq!(p.retry_count, RetryCount::Limited(3));
        assert_eq!(p.retry_delay, Duration::from_millis(1000));
        assert_eq!(p.multiplier, 2);
        assert_eq!(p.max_backoff, secs(30));
        assert_eq!(p.jitter, Jitter::Proportional { permille: 200 });
        assert_eq!(p.reset_after, secs(10));
    }

    #[test]
    fn ladder_doubles_then_caps() {
        let p = no_jitter();
        let mut b = Backoff::new(1);
        let got: [u64; 8] = core::array::from_fn(|_| b.on_failure(T0, &p).unwrap().as_secs());
        assert_eq!(got, [1, 2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(b.attempt(), 8);
    }

    #[test]
    fn default_jitter_stays_in_band() {
        let p = RetryPolicy {
            retry_count: RetryCount::Infinite,
            ..RetryPolicy::default()
        };
        for seed in 0..200 {
            let mut b = Backoff::new(seed);
            for base in [1_000u64, 2_000, 4_000, 8_000, 16_000, 30_000, 30_000] {
                let d = b.on_failure(T0, &p).unwrap().as_millis() as u64;
                // ±20 % around base, cut to [1 s, 30 s].
                let lo = (base * 8 / 10).max(1_000);
                let hi = (base * 12 / 10).min(30_000);
                assert!(
                    (lo..=hi).contains(&d),
                    "seed {seed}: {d} ms not in {lo}..={hi}"
                );
            }
        }
    }

    #[test]
    fn jitter_actually_spreads() {
        let p = RetryPolicy::default();
        let first = |seed| Backoff::new(seed).on_failure(T0, &p).unwrap();
        assert!((0..10).any(|s| first(s) != first(0)));
    }

    #[test]
    fn full_and_equal_bands() {
        for (jitter, floor_of) in [
            (Jitter::Full, (|_| 1_000) as fn(u64) -> u64),
            (Jitter::Equal, |base| (base / 2).max(1_000)),
        ] {
            let p = RetryPolicy {
                jitter,
                ..no_jitter()
            };
            for seed in 0..100 {
                let mut b = Backoff::new(seed);
                for base in [1_000u64, 2_000, 4_000, 8_000, 16_000, 30_000] {
                    let d = b.on_failure(T0, &p).unwrap().as_millis() as u64;
                    assert!(
                        (floor_of(base)..=base).contains(&d),
                        "{jitter:?}: {d} vs {base}"
                    );
                }
            }
        }
    }

    #[test]
    fn limited_counts_retries_per_outage() {
        let p = RetryPolicy {
            retry_count: RetryCount::Limited(3),
            ..no_jitter()
        };
        let mut b = Backoff::new(0);
        assert!(b.on_failure(T0, &p).is_some());
        assert!(b.on_failure(T0, &p).is_some());
        assert!(b.on_failure(T0, &p).is_some());
        assert_eq!(b.on_failure(T0, &p), None);
        assert_eq!(b.on_failure(T0, &p), None, "stays exhausted");
        assert_eq!(b.attempt(), 3);
        b.reset();
        assert_eq!(b.on_failure(T0, &p), Some(secs(1)));
    }

    #[test]
    fn zero_means_never_retry() {
        let p = RetryPolicy {
            retry_count: RetryCount::Limited(0),
            ..RetryPolicy::default()
        };
        assert_eq!(Backoff::new(0).on_failure(T0, &p), None);
    }

    #[test]
    fn infinite_never_gives_up() {
        let p = RetryPolicy {
            retry_count: RetryCount::Infinite,
            ..RetryPolicy::default()
        };
        let mut b = Backoff::new(3);
        for _ in 0..10_000 {
            let d = b.on_failure(T0, &p).expect("infinite");
            assert!(d <= p.max_backoff);
        }
        // The counter saturates instead of wrapping back to the bottom of the ladder.
        b.attempt = u32::MAX - 1;
        assert!(b.on_failure(T0, &p).is_some());
        assert!(b.on_failure(T0, &p).is_some());
        assert_eq!(b.attempt(), u32::MAX);
        assert_eq!(p.base_delay(u32::MAX), p.max_backoff);
    }

    #[test]
    fn flapping_continues_the_ladder() {
        let p = no_jitter();
        let mut b = Backoff::new(0);
        let mut now = T0;
        let mut delays = [0u64; 5];
        for d in &mut delays {
            let delay = b.on_failure(now, &p).unwrap();
            *d = delay.as_secs();
            now = now + delay;
            b.on_open(now);
            // Accepted, then dropped after 2 s: shorter than reset_after (10 s).
            now = now + secs(2);
            b.on_close(now, &p);
        }
        assert_eq!(delays, [1, 2, 4, 8, 16]);
    }

    #[test]
    fn failure_while_open_implies_close() {
        let p = no_jitter();
        let mut b = Backoff::new(0);
        b.on_failure(T0, &p);
        b.on_failure(T0, &p);
        b.on_open(T0);
        assert!(b.is_open());
        // Short-lived: continues at step 2.
        assert_eq!(b.on_failure(T0 + secs(1), &p), Some(secs(4)));
        assert!(!b.is_open());
        b.on_open(T0 + secs(5));
        // Long-lived: fresh ladder even without an explicit on_close.
        assert_eq!(b.on_failure(T0 + secs(500), &p), Some(secs(1)));
    }

    #[test]
    fn healthy_connection_resets_exactly_at_reset_after() {
        let p = no_jitter();
        for (open_for, expect_attempt) in [(Duration::from_millis(9_999), 3), (secs(10), 0)] {
            let mut b = Backoff::new(0);
            for _ in 0..3 {
                b.on_failure(T0, &p);
            }
            b.on_open(T0);
            b.on_close(T0 + open_for, &p);
            assert_eq!(b.attempt(), expect_attempt, "open for {open_for:?}");
        }
    }

    #[test]
    fn close_without_open_is_a_noop() {
        let p = no_jitter();
        let mut b = Backoff::new(0);
        b.on_failure(T0, &p);
        b.on_close(T0 + secs(100), &p);
        assert_eq!(b.attempt(), 1);
    }

    #[test]
    fn retry_delay_above_max_backoff_clamps_to_max() {
        let p = RetryPolicy {
            retry_delay: secs(60),
            max_backoff: secs(30),
            ..RetryPolicy::default()
        };
        let mut b = Backoff::new(9);
        assert_eq!(b.on_failure(T0, &p), Some(secs(30)));
        assert_eq!(b.on_failure(T0, &p), Some(secs(30)));
    }

    #[test]
    fn sizes() {
        std::println!("size_of::<Backoff>() = {}", core::mem::size_of::<Backoff>());
        std::println!(
            "size_of::<RetryPolicy>() = {}",
            core::mem::size_of::<RetryPolicy>()
        );
        assert!(core::mem::size_of::<Backoff>() <= 24);
    }

    fn any_jitter() -> impl Strategy<Value = Jitter> {
        prop_oneof![
            Just(Jitter::None),
            Just(Jitter::Full),
            Just(Jitter::Equal),
            (0u16..=2000).prop_map(|permille| Jitter::Proportional { permille }),
        ]
    }

    /// Mostly realistic spans (up to 100 s), sometimes absurd ones up to the u64 limit.
    fn any_nanos() -> impl Strategy<Value = u64> {
        prop_oneof![3 => 0u64..100_000_000_000, 1 => 0u64..=u64::MAX]
    }

    fn any_policy() -> impl Strategy<Value = RetryPolicy> {
        (any_nanos(), any_nanos(), any::<u32>(), any_jitter()).prop_map(
            |(a, b, multiplier, jitter)| RetryPolicy {
                retry_count: RetryCount::Infinite,
                retry_delay: Duration::from_nanos(a.min(b)),
                max_backoff: Duration::from_nanos(a.max(b)),
                multiplier,
                jitter,
                reset_after: Duration::from_secs(10),
            },
        )
    }

    proptest! {
        #[test]
        fn delays_stay_within_bounds(policy in any_policy(), seed: u64, steps in 1usize..80) {
            let mut b = Backoff::new(seed);
            for _ in 0..steps {
                let d = b.on_failure(T0, &policy).unwrap();
                prop_assert!(policy.retry_delay <= d && d <= policy.max_backoff,
                    "{:?} not in [{:?}, {:?}]", d, policy.retry_delay, policy.max_backoff);
            }
        }

        #[test]
        fn same_seed_same_delays(policy in any_policy(), seed: u64) {
            let (mut a, mut b) = (Backoff::new(seed), Backoff::new(seed));
            for i in 0..40u64 {
                let now = T0 + Duration::from_secs(i);
                if i % 7 == 3 {
                    a.on_open(now);
                    b.on_open(now);
                }
                prop_assert_eq!(a.on_failure(now, &policy), b.on_failure(now, &policy));
            }
        }
    }
}
