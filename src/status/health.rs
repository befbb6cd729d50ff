//! The health report on `P/health` (pure): one JSON document every `uplink.health_interval`,
//! not retained, QoS 0 (a lost report is replaced by the next one; nothing to queue or resend).
//!
//! ```json
//! {"ts":1763850060000,"started":1763850000000,"uptime_s":60,
//!  "queue":{"depth":12,"bytes":53248,"oldest_age_ms":1500,
//!           "dropped":{"queue_full":0,"capacity":0,"expired":0,"commit_failed":0,
//!                      "live_channel_full":0},
//!           "rejected":3,"rejected_reasons":{"not_authorized":3}},
//!  "uplink":{"connections":3,"reconnects":2},
//!  "devices":{"boiler":{"status":"online","polls":59,"requests":118,"timeouts":0,
//!             "exceptions":0,"crc_errors":0,"errors":0,"stale_replies":0,"decode_errors":0,
//!             "last_success":1763850059800}},
//!  "config":{"hash":"3f9a…","id":"push-42"}}
//! ```
//!
//! - `queue.depth`, `queue.bytes`: rows committed and not yet acknowledged, and the bytes of
//!   `queue.db` in use. `oldest_age_ms`: age of the oldest of them (its sample time), `null`
//!   when the queue is empty. `dropped`: rows given up on since start, by reason (see
//!   `docs/specs/queue.md`). `rejected`: rows the broker refused for good (an MQTT 5 reason
//!   code), held in the queue file until an operator exports or requeues them (always there, 0
//!   when none); `rejected_reasons`: those rows per reason name (`crate::queue::reason`), only
//!   when there are some. A rejection, or an eviction of rejected rows, makes a report due.
//! - `uplink.connections`: broker connections made since start; `reconnects` those after the
//!   first.
//! - Sent when its [`HealthReport::signature`] changed, else every `uplink.health_heartbeat`
//!   (the monitor decides).
//! - `devices`: per configured device, its reported status (`null` before it was tried),
//!   successful `polls`, wire `requests` (reads and writes) and failures by kind, and the time
//!   of the last successful poll (`null`: never). Counters start at zero with the process, and
//!   for a bus restarted by a reload.
//! - `config`: the running configuration's hash and the push that set it, as in the birth.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;

use super::device::DeviceState;
use super::stamp::ConfigStamp;
use crate::modbus::CounterSnapshot;
use crate::queue::rejected::{self, ByReason};
use crate::queue::{reason, QueueProgress, QueueStats, RejectedStats};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HealthReport {
    pub ts: i64,
    pub started: i64,
    pub uptime_s: i64,
    pub queue: QueueHealth,
    pub uplink: UplinkHealth,
    pub devices: BTreeMap<String, DeviceReport>,
    /// Which configuration runs (as in the birth).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config: Option<ConfigStamp>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QueueHealth {
    pub depth: u64,
    pub bytes: u64,
    pub oldest_age_ms: Option<i64>,
    pub dropped: Dropped,
    /// Rows the broker refused for good, held in the queue file ([`HealthReport::with_rejected`]).
    pub rejected: u64,
    /// Those rows per reason name; left out when there are none.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub rejected_reasons: BTreeMap<String, u64>,
    /// Rows moved to `rejected` since open, per reason code: not in the payload, but a new
    /// rejection is news even when an eviction kept the rows held the same.
    #[serde(skip)]
    pub rejected_since_open: ByReason,
}

/// Per reason, named as the metric's `reason` label (`fieldrelay_queue_dropped_total`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Dropped {
    /// The metric's `queue_full`.
    pub queue_full: u64,
    /// The same count under its first name; kept because the payload is a public contract.
    pub capacity: u64,
    pub expired: u64,
    pub commit_failed: u64,
    pub live_channel_full: u64,
}

/// Whether a report of `signature` is to be sent, given what the last one sent said and how
/// long ago (`None`: nothing sent yet): when it says something new, or the heartbeat is due.
pub fn is_due(
    last: Option<(&Signature, Duration)>,
    signature: &Signature,
    heartbeat: Duration,
) -> bool {
    last.is_none_or(|(said, ago)| said != signature || ago >= heartbeat)
}

/// See [`HealthReport::signature`].
#[derive(Debug, Clone, PartialEq)]
pub struct Signature {
    devices: Vec<(String, Option<DeviceState>, [u64; 6])>,
    dropped: Dropped,
    /// Held and since open, per reason code.
    rejected: (BTreeMap<String, u64>, ByReason),
    connections: u64,
    config: Option<ConfigStamp>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UplinkHealth {
    pub connections: u64,
    pub reconnects: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeviceReport {
    pub status: Option<DeviceState>,
    pub polls: u64,
    pub requests: u64,
    pub timeouts: u64,
    pub exceptions: u64,
    pub crc_errors: u64,
    pub errors: u64,
    pub stale_replies: u64,
    pub decode_errors: u64,
    pub last_success: Option<i64>,
}

impl DeviceReport {
    /// From a device's counters, its successful poll count and its reported status.
    pub fn new(status: Option<DeviceState>, counters: &CounterSnapshot, polls: u64) -> Self {
        DeviceReport {
            status,
            polls,
            requests: counters.requests,
            timeouts: counters.timeouts,
            exceptions: counters.exceptions,
            crc_errors: counters.crc_errors,
            errors: counters.errors,
            stale_replies: counters.stale_replies,
            decode_errors: counters.decode_errors + counters.garbage_lines,
            last_success: (counters.last_success_ms > 0).then_some(counters.last_success_ms),
        }
    }
}

impl HealthReport {
    /// The report at `now_ms`.
    pub fn new(
        now_ms: i64,
        started_ms: i64,
        progress: QueueProgress,
        stats: QueueStats,
        connections: u64,
        devices: BTreeMap<String, DeviceReport>,
    ) -> Self {
        HealthReport {
            ts: now_ms,
            started: started_ms,
            uptime_s: (now_ms - started_ms).max(0) / 1000,
            queue: QueueHealth {
                depth: progress.depth,
                bytes: progress.bytes,
                oldest_age_ms: progress.oldest_ts_ms.map(|ts| (now_ms - ts).max(0)),
                dropped: Dropped {
                    queue_full: stats.capacity_dropped,
                    capacity: stats.capacity_dropped,
                    expired: stats.expired,
                    commit_failed: stats.commit_dropped,
                    live_channel_full: stats.live_dropped,
                },
                rejected: 0,
                rejected_reasons: BTreeMap::new(),
                rejected_since_open: ByReason::new(),
            },
            uplink: UplinkHealth {
                connections,
                reconnects: connections.saturating_sub(1),
            },
            devices,
            config: None,
        }
    }

    /// The report with the queue's rejected rows: held, per reason name, and since open.
    pub fn with_rejected(mut self, stats: &RejectedStats) -> Self {
        self.queue.rejected = rejected::total(&stats.held);
        self.queue.rejected_reasons = stats
            .held
            .iter()
            .filter(|(_, rows)| **rows > 0)
            .map(|(code, rows)| (reason::name(*code), *rows))
            .collect();
        self.queue.rejected_since_open = stats.rejected.clone();
        self
    }

    /// What the report says about problems: each device's status and failure counters, the
    /// rows dropped and rejected, the connections made; and which configuration runs (a pushed one is
    /// reported at once). Reports with the same signature differ only in what
    /// moves while all is well (time, polls, requests, queue depth): the monitor holds such a
    /// report back until the heartbeat.
    pub fn signature(&self) -> Signature {
        Signature {
            devices: self
                .devices
                .iter()
                .map(|(name, d)| {
                    let failures = [
                        d.timeouts,
                        d.exceptions,
                        d.crc_errors,
                        d.errors,
                        d.stale_replies,
                        d.decode_errors,
                    ];
                    (name.clone(), d.status, failures)
                })
                .collect(),
            dropped: self.queue.dropped.clone(),
            rejected: (
                self.queue.rejected_reasons.clone(),
                self.queue.rejected_since_open.clone(),
            ),
            connections: self.uplink.connections,
            config: self.config.clone(),
        }
    }

    pub fn payload(&self) -> Bytes {
        // Plain counters and names: serialising cannot fail; an empty report would be noticed.
        serde_json::to_vec(self)
            .map(Bytes::from)
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn report_is_the_contract() {
        let counters = CounterSnapshot {
            requests: 10,
            timeouts: 2,
            exceptions: 1,
            crc_errors: 0,
            errors: 3,
            stale_replies: 0,
            decode_errors: 1,
            garbage_lines: 1,
            last_success_ms: 9_000,
        };
        let devices = BTreeMap::from([
            (
                "boiler".to_owned(),
                DeviceReport::new(Some(DeviceState::Offline), &counters, 7),
            ),
            (
                "new".to_owned(),
                DeviceReport::new(None, &CounterSnapshot::default(), 0),
            ),
        ]);
        let report = HealthReport::new(
            10_000,
            4_000,
            QueueProgress {
                last_seq: 50,
                depth: 12,
                bytes: 4096,
                oldest_ts_ms: Some(8_500),
            },
            QueueStats {
                committed: 60,
                live_dropped: 1,
                commit_dropped: 2,
                capacity_dropped: 3,
                expired: 4,
            },
            3,
            devices,
        );
        let value: serde_json::Value = serde_json::from_slice(&report.payload()).unwrap();
        assert_eq!(
            value,
            json!({
                "ts": 10000, "started": 4000, "uptime_s": 6,
                "queue": {"depth": 12, "bytes": 4096, "oldest_age_ms": 1500,
                    "dropped": {"queue_full": 3, "capacity": 3, "expired": 4, "commit_failed": 2, "live_channel_full": 1},
                    "rejected": 0},
                "uplink": {"connections": 3, "reconnects": 2},
                "devices": {
                    "boiler": {"status": "offline", "polls": 7, "requests": 10, "timeouts": 2,
                        "exceptions": 1, "crc_errors": 0, "errors": 3, "stale_replies": 0,
                        "decode_errors": 2, "last_success": 9000},
                    "new": {"status": null, "polls": 0, "requests": 0, "timeouts": 0,
                        "exceptions": 0, "crc_errors": 0, "errors": 0, "stale_replies": 0,
                        "decode_errors": 0, "last_success": null}
                }
            })
        );
        let empty = HealthReport::new(
            1,
            1,
            QueueProgress::default(),
            QueueStats::default(),
            0,
            BTreeMap::new(),
        );
        let value: serde_json::Value = serde_json::from_slice(&empty.payload()).unwrap();
        assert_eq!(value["queue"]["oldest_age_ms"], serde_json::Value::Null);
        assert_eq!(value["uplink"]["reconnects"], 0);
    }

    #[test]
    fn only_problems_or_the_heartbeat_make_a_report_due() {
        let report = |polls: u64, timeouts: u64, connections: u64, now: i64| {
            let counters = CounterSnapshot {
                requests: polls,
                timeouts,
                last_success_ms: now,
                ..CounterSnapshot::default()
            };
            let device = DeviceReport::new(Some(DeviceState::Online), &counters, polls);
            let progress = QueueProgress {
                depth: polls % 7,
                ..QueueProgress::default()
            };
            let devices = BTreeMap::from([("boiler".to_owned(), device)]);
            HealthReport::new(
                now,
                0,
                progress,
                QueueStats::default(),
                connections,
                devices,
            )
            .signature()
        };
        let hour = Duration::from_secs(3600);
        let first = report(10, 0, 1, 1_000);
        assert!(is_due(None, &first, hour), "the first report");
        let minute = Duration::from_secs(60);
        // Polls, requests, time and queue depth moved: nothing new.
        let quiet = report(70, 0, 1, 61_000);
        assert!(!is_due(Some((&first, minute)), &quiet, hour));
        assert!(is_due(Some((&first, hour)), &quiet, hour), "the heartbeat");
        assert!(
            is_due(Some((&first, minute)), &report(70, 1, 1, 61_000), hour),
            "a timeout"
        );
        assert!(
            is_due(Some((&first, minute)), &report(70, 0, 2, 61_000), hour),
            "a reconnect"
        );
        // A heartbeat no longer than the interval sends every report.
        assert!(is_due(Some((&first, minute)), &quiet, minute));
    }

    fn with_rejected(held: &[(u8, u64)], since_open: &[(u8, u64)]) -> HealthReport {
        let stats = RejectedStats {
            held: held.iter().copied().collect(),
            rejected: since_open.iter().copied().collect(),
            evicted: ByReason::new(),
        };
        HealthReport::new(
            1_000,
            0,
            QueueProgress::default(),
            QueueStats::default(),
            1,
            BTreeMap::new(),
        )
        .with_rejected(&stats)
    }

    #[test]
    fn rejected_rows_are_reported_per_reason_name() {
        let report = with_rejected(&[(0x87, 2), (0x95, 1), (0xa5, 4)], &[(0x87, 2)]);
        let value: serde_json::Value = serde_json::from_slice(&report.payload()).unwrap();
        assert_eq!(value["queue"]["rejected"], 7);
        assert_eq!(
            value["queue"]["rejected_reasons"],
            json!({"not_authorized": 2, "packet_too_large": 1, "0xa5": 4})
        );
        assert!(value["queue"].get("rejected_since_open").is_none());
        let none = with_rejected(&[], &[]);
        let value: serde_json::Value = serde_json::from_slice(&none.payload()).unwrap();
        assert_eq!(value["queue"]["rejected"], 0);
        assert!(value["queue"].get("rejected_reasons").is_none(), "{value}");
    }

    #[test]
    fn a_rejection_or_an_eviction_makes_a_report_due() {
        let hour = Duration::from_secs(3600);
        let minute = Duration::from_secs(60);
        let first = with_rejected(&[(0x87, 2)], &[(0x87, 2)]).signature();
        let same = with_rejected(&[(0x87, 2)], &[(0x87, 2)]).signature();
        assert!(!is_due(Some((&first, minute)), &same, hour));
        for (what, later) in [
            ("one more", with_rejected(&[(0x87, 3)], &[(0x87, 3)])),
            (
                "another reason",
                with_rejected(&[(0x87, 2), (0x90, 1)], &[(0x87, 2), (0x90, 1)]),
            ),
            ("one evicted", with_rejected(&[(0x87, 1)], &[(0x87, 2)])),
            (
                "one rejected, one evicted",
                with_rejected(&[(0x87, 2)], &[(0x87, 3)]),
            ),
        ] {
            assert!(
                is_due(Some((&first, minute)), &later.signature(), hour),
                "{what}"
            );
        }
    }
}
