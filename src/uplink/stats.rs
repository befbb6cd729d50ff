//! What the uplink counts, for the metrics endpoint ([`crate::metrics::UplinkCollector`]) and
//! the console.
//!
//! Plain atomics bumped by the link task — one relaxed add per batch of packets, never a lock —
//! and read at scrape time. Only a view: no decision of the link depends on them. Counters count
//! since the process started; the link state itself is the [`super::LinkState`] watch. The
//! last failure and the next attempt ([`Retrying`]) sit behind a mutex taken once per failed
//! connection, never per packet.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use crate::sample::now_ms;

/// Shared between the link task (writer) and the metrics collector (reader).
#[derive(Debug, Default)]
pub struct UplinkStats {
    connects: AtomicU64,
    connect_failures: AtomicU64,
    disconnects: AtomicU64,
    published: AtomicU64,
    resent: AtomicU64,
    acked: AtomicU64,
    inflight: AtomicU64,
    live_discarded: AtomicU64,
    skipped_rows: AtomicU64,
    alias_bytes_saved: AtomicU64,
    quota_pauses: AtomicU64,
    retrying: Mutex<Option<Retrying>>,
    /// MQTT 5: rows refused (by the broker's reason code, or locally: 0x95, 0x9A, 0x9B) per
    /// reason code; taken once per refusal, never per packet. The metrics export the queue's
    /// count of the same rows (`fieldrelay_queue_rejected_total`).
    refused: Mutex<BTreeMap<u8, u64>>,
}

/// Why the link is down and when it dials again; cleared by a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retrying {
    /// The last failure: a refused dial, a CONNACK refusal, a lost connection.
    pub error: String,
    /// Wall-clock ms of that failure.
    pub failed_ms: i64,
    /// Wall-clock ms of the next attempt; `None` until the backoff chose it.
    pub next_attempt_ms: Option<i64>,
    /// Failed attempts in a row, counted as the reconnect log lines' `attempt` counts them;
    /// 0 until the backoff chose the next attempt.
    pub attempt: u32,
}

/// [`UplinkStats`] at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UplinkSnapshot {
    /// Connections the broker accepted (CONNACK 0); each one after the first is a reconnect.
    pub connects: u64,
    /// Dial, TLS, CONNECT or CONNACK attempts that failed (each waits out a backoff).
    pub connect_failures: u64,
    /// Established connections lost (I/O error, broker closed, response timeout); not shutdown.
    pub disconnects: u64,
    /// PUBLISH packets of queue rows and QoS 0 samples written to the broker, first sends; a row
    /// sent again as new after the broker lost the session counts again.
    pub published: u64,
    /// Packets resent on a resumed session: PUBLISH with DUP=1, or PUBREL, for rows the broker
    /// had not acknowledged when the previous connection ended.
    pub resent: u64,
    /// Queue rows the broker acknowledged (PUBACK for QoS 1, PUBCOMP for QoS 2): deleted.
    pub acked: u64,
    /// Messages awaiting an acknowledgement on the current connection; 0 while disconnected.
    pub inflight: u64,
    /// QoS 0 samples that waited while the link was down, discarded at the next connect.
    pub live_discarded: u64,
    /// Queue rows that cannot be decoded, skipped (they stay in the file for inspection).
    pub skipped_rows: u64,
    /// MQTT 5: topic bytes not sent thanks to topic aliases (less the aliases' own bytes).
    pub alias_bytes_saved: u64,
    /// MQTT 5: messages the broker answered "quota exceeded" (0x97): kept and sent again after a
    /// pause.
    pub quota_pauses: u64,
}

fn add(counter: &AtomicU64, n: usize) {
    counter.fetch_add(u64::try_from(n).unwrap_or(u64::MAX), Ordering::Relaxed);
}

impl UplinkStats {
    pub fn snapshot(&self) -> UplinkSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        UplinkSnapshot {
            connects: get(&self.connects),
            connect_failures: get(&self.connect_failures),
            disconnects: get(&self.disconnects),
            published: get(&self.published),
            resent: get(&self.resent),
            acked: get(&self.acked),
            inflight: get(&self.inflight),
            live_discarded: get(&self.live_discarded),
            skipped_rows: get(&self.skipped_rows),
            alias_bytes_saved: get(&self.alias_bytes_saved),
            quota_pauses: get(&self.quota_pauses),
        }
    }

    /// MQTT 5: rows set aside as rejected, per reason code, since the process started.
    pub fn refused(&self) -> BTreeMap<u8, u64> {
        self.refused
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub(super) fn rejected(&self, code: u8, rows: usize) {
        *self
            .refused
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(code)
            .or_default() += u64::try_from(rows).unwrap_or(u64::MAX);
    }

    pub(super) fn quota_paused(&self) {
        add(&self.quota_pauses, 1);
    }

    pub(super) fn alias_saved(&self, bytes: u64) {
        self.alias_bytes_saved.fetch_add(bytes, Ordering::Relaxed);
    }

    pub(super) fn connected(&self) {
        add(&self.connects, 1);
        *self.retry_slot() = None;
    }

    /// The last failure and the next attempt while the link is down; `None` once connected
    /// (and before the first failure).
    pub fn retrying(&self) -> Option<Retrying> {
        self.retry_slot().clone()
    }

    /// Records why the connection failed or ended.
    pub(super) fn failed(&self, error: &dyn std::fmt::Display) {
        *self.retry_slot() = Some(Retrying {
            error: error.to_string(),
            failed_ms: now_ms(),
            next_attempt_ms: None,
            attempt: 0,
        });
    }

    /// Records when the link dials again, after `attempt` failures in a row.
    pub(super) fn redial_in(&self, delay: Duration, attempt: u32) {
        if let Some(retrying) = self.retry_slot().as_mut() {
            let delay = i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
            retrying.next_attempt_ms = Some(now_ms().saturating_add(delay));
            retrying.attempt = attempt;
        }
    }

    /// A poisoned lock only means a reader panicked mid-clone: the value is still whole.
    fn retry_slot(&self) -> std::sync::MutexGuard<'_, Option<Retrying>> {
        self.retrying
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(super) fn connect_failed(&self) {
        add(&self.connect_failures, 1);
    }

    pub(super) fn lost(&self) {
        add(&self.disconnects, 1);
        self.set_inflight(0);
    }

    pub(super) fn published(&self, n: usize) {
        add(&self.published, n);
    }

    pub(super) fn resent(&self, n: usize) {
        add(&self.resent, n);
    }

    pub(super) fn acked(&self, n: usize) {
        add(&self.acked, n);
    }

    pub(super) fn set_inflight(&self, n: usize) {
        self.inflight
            .store(u64::try_from(n).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    pub(super) fn live_discarded(&self, n: usize) {
        add(&self.live_discarded, n);
    }

    pub(super) fn skipped_row(&self) {
        add(&self.skipped_rows, 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_is_shown_until_the_next_connection() {
        let stats = UplinkStats::default();
        assert_eq!(stats.retrying(), None);
        stats.redial_in(Duration::from_secs(1), 1); // nothing failed: nothing to show
        assert_eq!(stats.retrying(), None);
        let before = now_ms();
        stats.failed(&"connection refused");
        let retrying = stats.retrying().unwrap();
        assert_eq!(retrying.error, "connection refused");
        assert!(retrying.failed_ms >= before);
        assert_eq!(retrying.next_attempt_ms, None);
        stats.redial_in(Duration::from_secs(5), 3);
        let next = stats.retrying().unwrap().next_attempt_ms.unwrap();
        assert!(next >= retrying.failed_ms + 5000, "{next}");
        assert_eq!(stats.retrying().unwrap().attempt, 3);
        stats.connected();
        assert_eq!(stats.retrying(), None);
    }
}
