//! A tiny seeded PRNG for jitter: SplitMix64.
//!
//! The core has no global randomness: whoever owns a state machine passes a
//! seed in, so the same seed always gives the same decisions (deterministic
//! simulation, reproducible bug reports).
//!
//! Why SplitMix64 (Steele, Lea, Flood 2014; the generator Java's
//! `SplittableRandom` uses): 8 bytes of state, one add and a three-step
//! finaliser per output, passes BigCrush, and *every* seed is valid — seed 0
//! and neighbouring seeds such as connection ids 1, 2, 3 give unrelated
//! streams, because each output goes through the finaliser. It is not
//! cryptographic, and jitter does not need it to be.

/// A SplitMix64 generator.
///
/// Deliberately not `Copy`: a silent copy would replay the same "random"
/// numbers twice. Clone it explicitly when that is what you want.
///
/// ```
/// use zenws_core::rng::Rng;
/// let mut a = Rng::new(42);
/// let mut b = Rng::new(42);
/// assert_eq!(a.next_u64(), b.next_u64()); // same seed, same stream
/// let roll = a.below(6);
/// assert!(roll < 6);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rng {
    state: u64,
}

/// The SplitMix64 increment: 2^64 / φ, odd, so the state visits all 2^64 values.
const GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

impl Rng {
    /// A generator seeded with `seed`. Any value is fine, including 0.
    pub const fn new(seed: u64) -> Self {
        Rng { state: seed }
    }

    /// The next 64 uniformly distributed bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GAMMA);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A uniformly distributed value in `0..n`, without modulo bias.
    ///
    /// Lemire's multiply-shift with rejection: the high half of `x * n` is the
    /// result; the few `x` that would over-represent some results are redrawn
    /// (fewer than `n / 2^64` of them, so almost never a second draw).
    ///
    /// `below(0)` is an empty range: it returns 0 and leaves the state alone,
    /// rather than panicking in a network stack.
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        let mut m = u128::from(self.next_u64()) * u128::from(n);
        if (m as u64) < n {
            // 2^64 mod n: the size of the biased zone at the bottom of each bucket.
            let threshold = n.wrapping_neg() % n;
            while (m as u64) < threshold {
                m = u128::from(self.next_u64()) * u128::from(n);
            }
        }
        (m >> 64) as u64
    }

    /// A uniformly distributed value in `lo..=hi` (`lo` if `hi < lo`).
    pub fn in_range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        match (hi - lo).checked_add(1) {
            Some(span) => lo + self.below(span),
            // The whole u64 range: every bit pattern is a valid answer.
            None => self.next_u64(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::{prop_assert, prop_assert_eq, proptest};

    #[test]
    fn reference_vector() {
        // First outputs of SplitMix64 seeded with 0, as published with the
        // reference C implementation (prng.di.unimi.it/splitmix64.c).
        let mut r = Rng::new(0);
        assert_eq!(r.next_u64(), 0xe220_a839_7b1d_cdaf);
        assert_eq!(r.next_u64(), 0x6e78_9e6a_a1b9_65f4);
        assert_eq!(r.next_u64(), 0x06c4_5d18_8009_454f);
    }

    #[test]
    fn below_edges() {
        let mut r = Rng::new(7);
        let before = r.clone();
        assert_eq!(r.below(0), 0);
        assert_eq!(r, before, "below(0) must not consume randomness");
        for _ in 0..100 {
            assert_eq!(r.below(1), 0);
        }
        assert_eq!(r.in_range(5, 5), 5);
        assert_eq!(r.in_range(9, 3), 9);
        let _ = r.in_range(0, u64::MAX);
    }

    #[test]
    fn below_is_roughly_uniform() {
        let mut r = Rng::new(1);
        let mut counts = [0u32; 6];
        for _ in 0..60_000 {
            counts[r.below(6) as usize] += 1;
        }
        for c in counts {
            assert!((9_000..11_000).contains(&c), "{counts:?}");
        }
    }

    #[test]
    fn size() {
        std::println!("size_of::<Rng>() = {}", core::mem::size_of::<Rng>());
        assert_eq!(core::mem::size_of::<Rng>(), 8);
    }

    proptest! {
        #[test]
        fn below_in_range(seed: u64, n in 1u64..) {
            let mut r = Rng::new(seed);
            for _ in 0..8 {
                prop_assert!(r.below(n) < n);
            }
        }

        #[test]
        fn in_range_inclusive(seed: u64, lo: u64, hi: u64) {
            let mut r = Rng::new(seed);
            let v = r.in_range(lo, hi);
            if hi <= lo {
                prop_assert_eq!(v, lo);
            } else {
                prop_assert!(lo <= v && v <= hi);
            }
        }

        #[test]
        fn deterministic(seed: u64) {
            let (mut a, mut b) = (Rng::new(seed), Rng::new(seed));
            for _ in 0..16 {
                prop_assert_eq!(a.next_u64(), b.next_u64());
            }
        }
    }
}
