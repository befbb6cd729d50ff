//! Per-device counters and health (shared between a bus owner and whoever watches).
//!
//! [`DeviceCounters`] are plain atomics, written by the bus owner only and read by anyone (logs,
//! a metrics endpoint, the status publisher). [`DeviceHealth`] is published through a
//! `tokio::sync::watch` channel so a status publisher (issue 5: device online/offline) can
//! await changes instead of polling; it changes only when the device goes online or offline or
//! its consecutive-failure count moves.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

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
}

impl Default for DeviceHealth {
    fn default() -> Self {
        DeviceHealth {
            online: true,
            consecutive_failures: 0,
            last_error: None,
        }
    }
}
