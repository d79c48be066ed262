//! The pause between two failover attempts: capped exponential growth with jitter.
//!
//! Pure arithmetic: the random input is passed in so the policy can be tested exactly. This
//! module must never sleep or look at the clock itself.

use std::time::Duration;

/// Capped exponential backoff with "equal jitter": the delay for retry `n` is uniformly drawn
/// from `[c/2, c]` where `c = min(cap, first * 2^n)`.
///
/// Jitter matters here because every client of a cluster notices a leader failure at the same
/// moment; without it they would all hammer the surviving nodes in lockstep. Keeping the lower
/// half fixed still guarantees growth, so a dead cluster is not polled in a tight loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Backoff {
    pub first: Duration,
    pub cap: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        // 25 ms is below a typical LAN leader-election time, so the first retry on another node
        // is nearly free; 500 ms bounds how long a caller waits after the cluster recovers.
        Backoff {
            first: Duration::from_millis(25),
            cap: Duration::from_millis(500),
        }
    }
}

impl Backoff {
    /// The upper bound of the delay before retry number `retry` (0-based).
    pub(crate) fn ceiling(&self, retry: u32) -> Duration {
        // 2^20 * 25 ms is far past any sane cap; clamping the shift avoids overflow.
        let factor = 1u32 << retry.min(20);
        self.first.saturating_mul(factor).min(self.cap)
    }

    /// The delay before retry number `retry`, given `unit`, a random number in `[0, 1]`.
    pub(crate) fn delay(&self, retry: u32, unit: f64) -> Duration {
        let ceiling = self.ceiling(retry);
        let unit = if unit.is_finite() {
            unit.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let half = ceiling / 2;
        half + (ceiling - half).mul_f64(unit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_exponentially_then_caps() {
        let b = Backoff::default();
        let ms: Vec<u128> = (0..8).map(|n| b.ceiling(n).as_millis()).collect();
        assert_eq!(ms, vec![25, 50, 100, 200, 400, 500, 500, 500]);
        assert_eq!(b.ceiling(u32::MAX), Duration::from_millis(500));
    }

    #[test]
    fn jitter_stays_within_half_and_full_ceiling() {
        let b = Backoff::default();
        for retry in 0..10 {
            let c = b.ceiling(retry);
            assert_eq!(b.delay(retry, 0.0), c / 2);
            assert_eq!(b.delay(retry, 1.0), c);
            let mid = b.delay(retry, 0.5);
            assert!(mid >= c / 2 && mid <= c);
        }
    }

    #[test]
    fn out_of_range_random_input_is_clamped() {
        let b = Backoff::default();
        assert_eq!(b.delay(3, 7.0), b.ceiling(3));
        assert_eq!(b.delay(3, -1.0), b.ceiling(3) / 2);
        assert_eq!(b.delay(3, f64::NAN), b.ceiling(3) / 2);
    }
}
