//! Exponential backoff with full jitter (pure; the caller sleeps), and the rate limit of the
//! log lines that report failed attempts.
//!
//! Used by the uplink between reconnect attempts and by device pollers after failures. Full jitter
//! (a uniform delay in `[0, min(max, initial * 2^n)]`) spreads a fleet of gateways that lost the
//! same broker at the same moment, instead of having them all redial in lock step.
//!
//! [`FailureLog`] decides which failed reconnects are logged: every one would flood the journal
//! with a short backoff, none leaves an operator guessing why the uplink stays down. So the first
//! failure after a connection is logged at once, later ones at most once per
//! [`FailureLog::EVERY`], each line with the number of attempts it stands for.

use std::time::Duration;

use tokio::time::Instant;

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

/// Which failed attempts to log (pure: the caller passes the time and logs).
#[derive(Debug, Clone, Default)]
pub struct FailureLog {
    last_logged: Option<Instant>,
    /// Failures since the last logged one.
    unlogged: u32,
}

impl FailureLog {
    /// At most one line per this long: a few lines a minute while a broker stays down.
    pub const EVERY: Duration = Duration::from_secs(10);

    /// A failure at `now`: `Some(n)` when it is to be logged, `n` being the failures before it
    /// that were not; `None` when it is only counted.
    pub fn failed(&mut self, now: Instant) -> Option<u32> {
        let due = self
            .last_logged
            .is_none_or(|last| now.duration_since(last) >= Self::EVERY);
        if due {
            self.last_logged = Some(now);
            Some(std::mem::take(&mut self.unlogged))
        } else {
            self.unlogged = self.unlogged.saturating_add(1);
            None
        }
    }

    /// After a success: the next failure is logged at once.
    pub fn reset(&mut self) {
        *self = FailureLog::default();
    }
}

/// `" (3 more failed attempts since the last report)"`, or nothing.
pub fn unlogged_suffix(unlogged: u32) -> String {
    match unlogged {
        0 => String::new(),
        1 => " (1 more failed attempt since the last report)".to_owned(),
        n => format!(" ({n} more failed attempts since the last report)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn failures_are_logged_first_then_once_per_interval() {
        let start = Instant::now();
        let at = |ms| start + Duration::from_millis(ms);
        let mut log = FailureLog::default();
        assert_eq!(log.failed(at(0)), Some(0));
        assert_eq!(log.failed(at(1_000)), None);
        assert_eq!(log.failed(at(3_000)), None);
        assert_eq!(log.failed(at(10_000)), Some(2));
        assert_eq!(log.failed(at(19_999)), None);
        assert_eq!(log.failed(at(40_000)), Some(1));
        log.reset();
        assert_eq!(log.failed(at(40_100)), Some(0));
        assert_eq!(unlogged_suffix(0), "");
        assert_eq!(
            unlogged_suffix(2),
            " (2 more failed attempts since the last report)"
        );
    }

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
