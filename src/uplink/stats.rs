//! What the uplink counts, for the metrics endpoint ([`crate::metrics::UplinkCollector`]).
//!
//! Plain atomics bumped by the link task — one relaxed add per batch of packets, never a lock —
//! and read at scrape time. Only a view: no decision of the link depends on them. Counters count
//! since the process started; the link state itself is the [`super::LinkState`] watch.

use std::sync::atomic::{AtomicU64, Ordering};

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
        }
    }

    pub(super) fn connected(&self) {
        add(&self.connects, 1);
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
