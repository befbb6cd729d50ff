//! Exponential backoff with full jitter (pure; the caller sleeps).
//!
//! Used by the uplink between reconnect attempts and by device pollers after failures. Full jitter
//! (a uniform delay in `[0, min(max, initial * 2^n)]`) spreads a fleet of gateways that lost the
//! same broker at the same moment, instead of having them all redial in lock step.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    /// Consecutive failures since the last success.
    failures: u32,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max: max.max(initial),
            failures: 0,
        }
    }

    /// The ceiling of the next delay: `initial * 2^failures`, capped at `max`.
    pub fn ceiling(&self) -> Duration {
        let factor = 1u32.checked_shl(self.failures.min(31)).unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// Records a failure and returns how long to wait before the next attempt, drawn uniformly
    /// from `[0, ceiling]` with `unit` in `[0, 1)` supplied by the caller (random in production,
    /// fixed in tests).
    pub fn next_delay_with(&mut self, unit: f64) -> Duration {
        let ceiling = self.ceiling();
        self.failures = self.failures.saturating_add(1);
        ceiling.mul_f64(unit.clamp(0.0, 1.0))
    }

    /// [`Backoff::next_delay_with`] with a random jitter.
    pub fn next_delay(&mut self) -> Duration {
        self.next_delay_with(fastrand::f64())
    }

    /// Consecutive failures recorded since the last [`Backoff::reset`].
    pub fn failures(&self) -> u32 {
        self.failures
    }

    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ceiling_doubles_then_caps() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
        let ceilings: Vec<_> = (0..5)
            .map(|_| {
                let c = b.ceiling();
                b.next_delay_with(1.0);
                c.as_millis()
            })
            .collect();
        assert_eq!(ceilings, vec![100, 200, 350, 350, 350]);
        b.reset();
        assert_eq!(b.ceiling(), Duration::from_millis(100));
    }

    proptest! {
        #[test]
        fn delay_never_exceeds_max(failures in 0u32..200, unit in 0.0f64..1.0) {
            let mut b = Backoff::new(Duration::from_millis(50), Duration::from_secs(30));
            for _ in 0..failures { b.next_delay_with(1.0); }
            prop_assert!(b.next_delay_with(unit) <= Duration::from_secs(30));
        }
    }
}
