//! Per-device counters and health (shared between a bus owner and whoever watches).
//!
//! [`DeviceCounters`] are plain atomics, written by the bus owner only and read by anyone (logs,
//! a metrics endpoint, the status publisher). [`DeviceHealth`] is published through a
//! `tokio::sync::watch` channel so the status publisher (device online/offline) can
//! await changes instead of polling; it changes only when the device goes online or offline, its
//! consecutive-failure count moves, or it answers for the first time. [`PollDurations`] is a fixed-bucket histogram of the
//! same kind (atomics, one writer), so the bus owner never depends on a metrics library.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

/// Counters of one device since start.
#[derive(Debug, Default)]
pub struct DeviceCounters {
    /// Requests put on the wire (reads and writes).
    pub requests: AtomicU64,
    pub timeouts: AtomicU64,
    /// Modbus exception replies (the points of that read are bad; the device is up).
    pub exceptions: AtomicU64,
    /// Replies with a bad CRC (RTU).
    pub crc_errors: AtomicU64,
    /// Other transport or protocol failures (connection refused, reset, malformed reply).
    pub errors: AtomicU64,
    /// Late replies to earlier requests that were skipped (RTU).
    pub stale_replies: AtomicU64,
    /// Points whose registers could not be decoded (NaN, non-ASCII text, ...).
    pub decode_errors: AtomicU64,
    /// serial_line: lines that matched no point's regex, or whose capture did not parse.
    pub garbage_lines: AtomicU64,
    /// Wall-clock ms of the last fully successful poll; 0 = never.
    pub last_success_ms: AtomicI64,
    /// How long successful polls took (every read of the device, first request to last reply).
    pub poll_durations: PollDurations,
}

/// A copy of [`DeviceCounters`] at one moment.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CounterSnapshot {
    pub requests: u64,
    pub timeouts: u64,
    pub exceptions: u64,
    pub crc_errors: u64,
    pub errors: u64,
    pub stale_replies: u64,
    pub decode_errors: u64,
    pub garbage_lines: u64,
    pub last_success_ms: i64,
}

impl DeviceCounters {
    pub fn snapshot(&self) -> CounterSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CounterSnapshot {
            requests: get(&self.requests),
            timeouts: get(&self.timeouts),
            exceptions: get(&self.exceptions),
            crc_errors: get(&self.crc_errors),
            errors: get(&self.errors),
            stale_replies: get(&self.stale_replies),
            decode_errors: get(&self.decode_errors),
            garbage_lines: get(&self.garbage_lines),
            last_success_ms: self.last_success_ms.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Whether a device answers, for status publishing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceHealth {
    /// `true` after a successful poll, `false` after a failed one; `true` before the first poll
    /// (a device is not reported offline before it was tried).
    pub online: bool,
    /// Failed polls since the last successful one.
    pub consecutive_failures: u32,
    /// What the last failure was, lowercase (`timed out after 1s`, `crc error in the reply`).
    pub last_error: Option<String>,
    /// Whether a poll succeeded since the owner started: tells "online after a good poll" from
    /// "online because not tried yet" (the status publisher reports only the former).
    pub answered: bool,
}

impl Default for DeviceHealth {
    fn default() -> Self {
        DeviceHealth {
            online: true,
            consecutive_failures: 0,
            last_error: None,
            answered: false,
        }
    }
}

/// Upper bounds, in seconds, of the [`PollDurations`] buckets. A Modbus TCP poll on a LAN takes a
/// few milliseconds, an RTU poll at 9600 baud tens to hundreds, a device with many reads on a
/// slow line seconds; the buckets cover that range at roughly 2.5x steps.
pub const POLL_DURATION_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A histogram of poll durations with the fixed [`POLL_DURATION_BUCKETS`]: written by the bus
/// owner only, read at any time ([`PollDurations::snapshot`]).
#[derive(Debug, Default)]
pub struct PollDurations {
    /// Observations per bucket (not cumulative); the last slot counts those above every bound.
    buckets: [AtomicU64; POLL_DURATION_BUCKETS.len() + 1],
    /// Sum of all observations in microseconds (u64 microseconds last 584,000 years).
    sum_micros: AtomicU64,
}

/// A copy of [`PollDurations`] in the shape Prometheus wants.
#[derive(Debug, Clone, PartialEq)]
pub struct DurationSnapshot {
    /// `(upper bound in seconds, observations <= bound)`, cumulative, one per
    /// [`POLL_DURATION_BUCKETS`] entry.
    pub buckets: Vec<(f64, u64)>,
    /// All observations (the `+Inf` bucket).
    pub count: u64,
    pub sum_seconds: f64,
}

impl PollDurations {
    pub fn observe(&self, duration: Duration) {
        let seconds = duration.as_secs_f64();
        let slot = POLL_DURATION_BUCKETS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(POLL_DURATION_BUCKETS.len());
        self.buckets[slot].fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(duration.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// The count is the sum of the buckets read, so buckets and count always agree even while
    /// the owner observes concurrently; the sum may lag or lead by that one observation.
    pub fn snapshot(&self) -> DurationSnapshot {
        let mut cumulative = 0;
        let mut buckets = Vec::with_capacity(POLL_DURATION_BUCKETS.len());
        for (bound, slot) in POLL_DURATION_BUCKETS.iter().zip(&self.buckets) {
            cumulative += slot.load(Ordering::Relaxed);
            buckets.push((*bound, cumulative));
        }
        let overflow = self.buckets[POLL_DURATION_BUCKETS.len()].load(Ordering::Relaxed);
        DurationSnapshot {
            buckets,
            count: cumulative + overflow,
            sum_seconds: self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_land_in_cumulative_buckets() {
        let histogram = PollDurations::default();
        histogram.observe(Duration::from_micros(500)); // <= 1 ms
        histogram.observe(Duration::from_millis(10)); // exactly on a bound: that bucket
        histogram.observe(Duration::from_millis(11));
        histogram.observe(Duration::from_secs(60)); // above every bound
        let snapshot = histogram.snapshot();
        assert_eq!(snapshot.count, 4);
        let at = |bound: f64| {
            snapshot
                .buckets
                .iter()
                .find(|(b, _)| *b == bound)
                .map(|(_, n)| *n)
        };
        assert_eq!(at(0.001), Some(1));
        assert_eq!(at(0.005), Some(1));
        assert_eq!(at(0.01), Some(2));
        assert_eq!(at(0.025), Some(3));
        assert_eq!(at(10.0), Some(3));
        assert!((snapshot.sum_seconds - 60.0215).abs() < 1e-9);
        assert!(snapshot.buckets.windows(2).all(|w| w[0].1 <= w[1].1));
    }
}
