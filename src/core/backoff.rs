//! Reconnect delays and the core's deterministic random source.

/// A small deterministic PRNG (SplitMix64). The core never asks the platform for randomness: the
/// shell seeds it from `crypto.getRandomValues` and tests seed it with a constant.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A random value that is never zero (session ids use zero as "none").
    pub fn next_nonzero(&mut self) -> u64 {
        loop {
            let v = self.next_u64();
            if v != 0 {
                return v;
            }
        }
    }
}

/// Exponential backoff with "equal jitter": the `failures`-th consecutive failure (1-based) waits
/// `b/2 + r mod (b/2 + 1)` where `b = min(max, initial * 2^(failures-1))` and `r` is a random value.
/// So the delay is always within `[b/2, b]`: it grows geometrically and clients that lost the same
/// node do not come back in lockstep.
pub fn backoff_delay(failures: u32, initial_ms: u64, max_ms: u64, random: u64) -> u64 {
    if failures == 0 {
        return 0;
    }
    let shift = (failures - 1).min(32);
    let base = initial_ms.saturating_mul(1u64 << shift).min(max_ms);
    let half = base / 2;
    half + random % (base - half + 1)
}

#[cfg(test)]
mod tests {
    use std::vec::Vec;

    use super::*;

    #[test]
    fn given_consecutive_failures_then_the_delay_doubles_up_to_the_cap_with_bounded_jitter() {
        let mut rng = Rng::new(7);
        let bounds =
            [(1, 250), (2, 500), (3, 1000), (4, 2000), (5, 4000), (6, 8000), (7, 10_000), (30, 10_000)];
        for (failures, base) in bounds {
            for _ in 0..200 {
                let d = backoff_delay(failures, 250, 10_000, rng.next_u64());
                assert!(d >= base / 2 && d <= base, "failure {failures}: {d} not in [{}, {base}]", base / 2);
            }
        }
        assert_eq!(backoff_delay(0, 250, 10_000, 99), 0);
        // The jitter comes from the injected value only.
        assert_eq!(backoff_delay(3, 250, 10_000, 0), 500);
        assert_eq!(backoff_delay(3, 250, 10_000, 500), 1000);
        assert_eq!(backoff_delay(u32::MAX, 250, 10_000, 0), 5000);
    }

    #[test]
    fn rng_is_deterministic_per_seed() {
        let a: Vec<u64> = (0..4).scan(Rng::new(1), |r, _| Some(r.next_u64())).collect();
        let b: Vec<u64> = (0..4).scan(Rng::new(1), |r, _| Some(r.next_u64())).collect();
        let c: Vec<u64> = (0..4).scan(Rng::new(2), |r, _| Some(r.next_u64())).collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }
}
