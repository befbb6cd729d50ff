//! The drain rate limit (`uplink.max_rate`): a token bucket, pure (the caller passes `now`).
//!
//! After an outage a long backlog would otherwise be sent as fast as the in-flight window
//! allows; a limit spreads it so the cloud side is not flooded. The bucket holds at most one
//! second's worth of tokens (at least one), so an idle link may send a short burst and then
//! settles at the rate.

use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug, Clone)]
pub struct RateLimit {
    /// Tokens per second; `None`: unlimited.
    rate: Option<f64>,
    capacity: f64,
    tokens: f64,
    last: Instant,
}

impl RateLimit {
    pub fn new(rate: Option<u32>, now: Instant) -> RateLimit {
        let rate = rate.map(|r| f64::from(r.max(1)));
        let capacity = rate.unwrap_or(0.0).max(1.0);
        RateLimit {
            rate,
            capacity,
            tokens: capacity,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        if let Some(rate) = self.rate {
            let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
            self.tokens = (self.tokens + elapsed * rate).min(self.capacity);
        }
        self.last = now;
    }

    /// How many messages may be sent now.
    pub fn available(&mut self, now: Instant) -> usize {
        self.refill(now);
        match self.rate {
            None => usize::MAX,
            Some(_) => self.tokens.floor() as usize,
        }
    }

    /// Records `n` messages sent now.
    pub fn take(&mut self, n: usize, now: Instant) {
        self.refill(now);
        if self.rate.is_some() {
            self.tokens -= n as f64;
        }
    }

    /// When the next message may be sent, if it may not be sent now.
    pub fn next_ready(&mut self, now: Instant) -> Option<Instant> {
        let rate = self.rate?;
        self.refill(now);
        if self.tokens >= 1.0 {
            return None;
        }
        Some(now + Duration::from_secs_f64((1.0 - self.tokens) / rate))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unlimited_never_waits() {
        let now = Instant::now();
        let mut r = RateLimit::new(None, now);
        assert_eq!(r.available(now), usize::MAX);
        r.take(1_000_000, now);
        assert_eq!(r.next_ready(now), None);
    }

    #[test]
    fn burst_of_one_second_then_the_rate() {
        let t0 = Instant::now();
        let mut r = RateLimit::new(Some(10), t0);
        assert_eq!(r.available(t0), 10);
        r.take(10, t0);
        assert_eq!(r.available(t0), 0);
        assert_eq!(r.next_ready(t0), Some(t0 + Duration::from_millis(100)));
        assert_eq!(r.available(t0 + Duration::from_millis(250)), 2);
        // Never more than the bucket holds, however long the pause.
        assert_eq!(r.available(t0 + Duration::from_secs(60)), 10);
    }

    #[test]
    fn sends_over_a_minute_match_the_rate() {
        let t0 = Instant::now();
        let mut r = RateLimit::new(Some(50), t0);
        let mut sent = 0;
        for ms in (0..60_000).step_by(7) {
            let now = t0 + Duration::from_millis(ms);
            let n = r.available(now).min(3);
            r.take(n, now);
            sent += n;
        }
        // 50/s for 60 s plus the initial burst of 50.
        assert!((2990..=3050).contains(&sent), "{sent}");
    }
}
