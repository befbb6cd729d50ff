//! Validation of the `store` section and of the points' `max_age` keys (both are the durable
//! queue's business, so they are resolved together into [`StoreConfig`]).
//!
//! Rules:
//! - `max_size` is at least [`MIN_MAX_SIZE`]: below that the write-ahead log's share and a
//!   single group commit would not fit.
//! - `on_full` is `drop_oldest` (default) or `reject_new`; `sync` is `full` (default) or
//!   `normal`. No booleans: each value names its trade-off (see [`OnFull`], [`SyncMode`]).
//! - A point's `max_age` is greater than 0. It only applies to QoS 1/2 points (QoS 0 samples are
//!   never queued); on a QoS 0 point it is refused rather than silently ignored.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::decode::{Decoded, Keys, List, SizeValue};
use super::device::RawDeviceEntry;
use super::error::Issue;
use super::rules::{choice, optional, positive, Choice};
use super::units::format_duration;

/// 1 GiB: a day and a half of 100 points sampled every second (about 80 bytes per row on
/// disk), small against the SD card or eMMC a gateway boots from.
pub const DEFAULT_MAX_SIZE: u64 = 1 << 30;
/// 1 MiB: room for the write-ahead log's share and a few thousand rows.
pub const MIN_MAX_SIZE: u64 = 1 << 20;

/// The durable queue's limits (`store` section).
#[derive(Debug, Clone, PartialEq)]
pub struct StoreConfig {
    /// Bytes of `queue.db` and its write-ahead log together.
    pub max_size: u64,
    pub on_full: OnFull,
    pub sync: SyncMode,
    /// Resolved from the points' `max_age` keys: (device, point) → age. The queue applies it,
    /// so it is kept here rather than in [`super::point::PointConfig`].
    pub max_age: BTreeMap<(String, String), Duration>,
}

/// What the queue does when `max_size` is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFull {
    /// Delete the oldest never-sent rows to make room (default): the newest data survives a
    /// long outage, the oldest is lost (counted).
    DropOldest,
    /// Refuse new samples until the backlog drains: the history of the start of the outage
    /// survives, the newest data is lost (counted).
    RejectNew,
}

/// When a commit is flushed to the medium.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncMode {
    /// fsync at every group commit (default): a power cut loses nothing committed, at the cost
    /// of one flush per group (slow on SD cards).
    Full,
    /// fsync only at checkpoints: survives process crashes; a power cut may roll back the
    /// commits since the last checkpoint (at most the WAL budget), and with them QoS 2
    /// session state.
    Normal,
}

impl Choice for OnFull {
    const WHAT: &'static str = "on_full policy";
    const WORDS: &'static [(&'static str, Self)] = &[
        ("drop_oldest", OnFull::DropOldest),
        ("reject_new", OnFull::RejectNew),
    ];
}

impl Choice for SyncMode {
    const WHAT: &'static str = "sync mode";
    const WORDS: &'static [(&'static str, Self)] =
        &[("full", SyncMode::Full), ("normal", SyncMode::Normal)];
}

/// `store`: the durable queue's limits.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawStore {
    pub max_size: Option<SizeValue>,
    pub on_full: Option<String>,
    pub sync: Option<String>,
}

/// Builds the store configuration; `raw` is `None` when the section is not written. `devices`
/// holds the points whose `max_age` keys are resolved here.
pub(crate) fn validate_store(
    raw: Option<&Decoded<RawStore>>,
    root: &Keys,
    devices: Option<&List<RawDeviceEntry>>,
    issues: &mut Vec<Issue>,
) -> Option<StoreConfig> {
    let max_age = point_max_ages(devices, issues);
    let Some(store) = raw else {
        // Not written (or not a mapping, already reported): defaults, unless rejected.
        if root.rejected.contains("store") {
            return None;
        }
        return Some(StoreConfig {
            max_size: DEFAULT_MAX_SIZE,
            on_full: OnFull::DropOldest,
            sync: SyncMode::Full,
            max_age: max_age?,
        });
    };
    let (raw, keys) = (&store.value, &store.keys);
    let max_size = optional(
        keys,
        "max_size",
        raw.max_size.map(|s| s.0),
        DEFAULT_MAX_SIZE,
    )
    .and_then(|size| {
        if size < MIN_MAX_SIZE {
            issues.push(Issue::value(
                keys.path_of("max_size"),
                format!("must be at least 1MiB ({MIN_MAX_SIZE} bytes), got {size}"),
            ));
            None
        } else {
            Some(size)
        }
    });
    let on_full = choice(keys, "on_full", &raw.on_full, OnFull::DropOldest, issues);
    let sync = choice(keys, "sync", &raw.sync, SyncMode::Full, issues);
    Some(StoreConfig {
        max_size: max_size?,
        on_full: on_full?,
        sync: sync?,
        max_age: max_age?,
    })
}

/// Every point's `max_age`, keyed by (device, point). Points whose names are invalid are
/// skipped here (their own errors are reported by the point rules).
fn point_max_ages(
    devices: Option<&List<RawDeviceEntry>>,
    issues: &mut Vec<Issue>,
) -> Option<BTreeMap<(String, String), Duration>> {
    let mut ages = BTreeMap::new();
    let mut ok = true;
    for entry in devices.iter().flat_map(|list| &list.items) {
        let device = entry.device.value.name.clone().unwrap_or_default();
        for point in entry.points.iter().flat_map(|list| &list.items) {
            let (raw, keys) = (&point.value, &point.keys);
            let Some(age) = raw.max_age.map(|a| a.0) else {
                continue;
            };
            if positive(keys, "max_age", age, issues).is_none() {
                ok = false;
                continue;
            }
            if raw.qos == Some(0) {
                issues.push(Issue::value(
                    keys.path_of("max_age"),
                    format!(
                        "max_age ({}) only applies to queued samples, but this point has qos 0",
                        format_duration(age)
                    ),
                ));
                ok = false;
                continue;
            }
            let name = raw.name.clone().unwrap_or_default();
            ages.insert((device.clone(), name), age);
        }
    }
    ok.then_some(ages)
}
