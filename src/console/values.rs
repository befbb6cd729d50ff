//! The last value of every point and a few before it (for the sparkline), as the console shows
//! them.
//!
//! # Cost
//! [`Tapped`] is the bus owners' sink. Without a console it holds no table and hands each
//! sample straight on (one `Option` check). With one, each sample costs one uncontended lock,
//! two hash lookups and a copy of its value ([`LatestValues::record`]): about 3% of what
//! queueing the same sample costs (`cargo bench --bench console`: 64 ns against 2.1 µs).
//! Watching browsers add nothing to it: their event streams read the table on their own timer
//! ([`LatestValues::changed_since`]), so a slow or stalled browser never holds up a bus owner;
//! it just gets the newest values when it reads again (older ones are coalesced).
//!
//! Why always, and not only while a browser watches: a technician opening the page must see
//! every point's value at once, including an `on_change` point that has not moved for hours.
//!
//! Memory: one entry per point published since start (a point removed by a reload keeps its
//! entry until restart), each about 200 bytes with its [`HISTORY`] values.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::modbus::SampleSink;
use crate::sample::{Sample, Value};

/// Values kept per point for its sparkline.
pub const HISTORY: usize = 32;

/// What the console knows of a point.
#[derive(Debug, Clone, PartialEq)]
pub struct PointValue {
    pub value: Value,
    pub ts_ms: i64,
    /// The table's version when this value was recorded.
    pub version: u64,
    /// Numeric values, oldest first, at most [`HISTORY`] (strings have none).
    pub history: Vec<f32>,
}

/// A value that changed since a version, for an event stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Update {
    pub device: Arc<str>,
    pub point: Arc<str>,
    pub value: Value,
    pub ts_ms: i64,
}

#[derive(Debug, Default)]
struct Slot {
    value: Option<(Value, i64)>,
    version: u64,
    /// Ring of the last [`HISTORY`] numeric values; `next` is the oldest once full.
    ring: Vec<f32>,
    next: usize,
}

#[derive(Debug, Default)]
struct Table {
    version: u64,
    devices: HashMap<Arc<str>, HashMap<Arc<str>, Slot>>,
}

/// The table, shared by the sink and the console.
#[derive(Debug, Default)]
pub struct LatestValues {
    table: Mutex<Table>,
}

impl LatestValues {
    /// Records `sample` as its point's latest value.
    pub fn record(&self, sample: &Sample) {
        let mut table = self.lock();
        table.version += 1;
        let version = table.version;
        let points = match table.devices.get_mut(&*sample.device) {
            Some(points) => points,
            None => table.devices.entry(sample.device.clone()).or_default(),
        };
        let slot = match points.get_mut(&*sample.point) {
            Some(slot) => slot,
            None => points.entry(sample.point.clone()).or_default(),
        };
        slot.value = Some((sample.value.clone(), sample.ts_ms));
        slot.version = version;
        if let Some(number) = sample.value.as_f64() {
            let number = number as f32;
            if slot.ring.len() < HISTORY {
                slot.ring.push(number);
            } else {
                slot.ring[slot.next] = number;
                slot.next = (slot.next + 1) % HISTORY;
            }
        }
    }

    /// The latest version: every recorded value has one at most this.
    pub fn version(&self) -> u64 {
        self.lock().version
    }

    /// The point's latest value and history, if it published since start.
    pub fn get(&self, device: &str, point: &str) -> Option<PointValue> {
        let table = self.lock();
        let slot = table.devices.get(device)?.get(point)?;
        let (value, ts_ms) = slot.value.clone()?;
        let mut history = Vec::with_capacity(slot.ring.len());
        history.extend_from_slice(&slot.ring[slot.next..]);
        history.extend_from_slice(&slot.ring[..slot.next]);
        Some(PointValue {
            value,
            ts_ms,
            version: slot.version,
            history,
        })
    }

    /// The values recorded after `version`, and the version to ask from next time.
    pub fn changed_since(&self, version: u64) -> (u64, Vec<Update>) {
        let table = self.lock();
        if table.version == version {
            return (version, Vec::new());
        }
        let mut updates = Vec::new();
        for (device, points) in &table.devices {
            for (point, slot) in points {
                if slot.version > version {
                    if let Some((value, ts_ms)) = &slot.value {
                        updates.push(Update {
                            device: device.clone(),
                            point: point.clone(),
                            value: value.clone(),
                            ts_ms: *ts_ms,
                        });
                    }
                }
            }
        }
        (table.version, updates)
    }

    /// A panic while the lock was held cannot leave a slot half-written in a way that matters
    /// (each field is whole): go on with it.
    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The bus owners' sink with the console's table beside it: records, then hands the sample on.
#[derive(Debug, Clone)]
pub struct Tapped<S> {
    pub inner: S,
    /// `None` without a console: the sample goes straight on.
    pub values: Option<Arc<LatestValues>>,
}

impl<S: SampleSink + Clone> SampleSink for Tapped<S> {
    async fn push(&self, sample: Sample) {
        if let Some(values) = &self.values {
            values.record(&sample);
        }
        self.inner.push(sample).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Qos;
    use proptest::prelude::*;

    fn sample(device: &str, point: &str, value: Value, ts_ms: i64) -> Sample {
        Sample {
            device: device.into(),
            point: point.into(),
            value,
            ts_ms,
            qos: Qos::AtLeastOnce,
            retain: false,
        }
    }

    #[test]
    fn keeps_the_latest_value_and_reports_changes_once() {
        let values = LatestValues::default();
        assert_eq!(values.get("boiler", "temp"), None);
        assert_eq!(values.changed_since(0), (0, vec![]));
        values.record(&sample("boiler", "temp", Value::Float(20.5), 1));
        values.record(&sample("boiler", "mode", Value::Str("auto".into()), 2));
        values.record(&sample("boiler", "temp", Value::Float(21.0), 3));
        let temp = values.get("boiler", "temp").unwrap();
        assert_eq!(
            (temp.value, temp.ts_ms, temp.history),
            (Value::Float(21.0), 3, vec![20.5, 21.0])
        );
        assert_eq!(
            values.get("boiler", "mode").unwrap().history,
            Vec::<f32>::new()
        );
        let (version, mut updates) = values.changed_since(0);
        updates.sort_by(|a, b| a.point.cmp(&b.point));
        assert_eq!(version, 3);
        assert_eq!(
            updates.len(),
            2,
            "one update per point, the newest: {updates:?}"
        );
        assert_eq!(updates[1].value, Value::Float(21.0));
        assert_eq!(values.changed_since(version), (3, vec![]));
        values.record(&sample("chiller", "flow", Value::Int(7), 4));
        let (_, updates) = values.changed_since(version);
        assert_eq!(updates.len(), 1);
        assert_eq!(&*updates[0].device, "chiller");
    }

    proptest! {
        /// The history is the last HISTORY numbers in order, whatever the count.
        #[test]
        fn history_is_the_newest_values_in_order(n in 0usize..100) {
            let values = LatestValues::default();
            for i in 0..n {
                values.record(&sample("d", "p", Value::Int(i as i64), i as i64));
            }
            let expected: Vec<f32> = (n.saturating_sub(HISTORY)..n).map(|i| i as f32).collect();
            let got = values.get("d", "p").map(|p| p.history).unwrap_or_default();
            prop_assert_eq!(got, expected);
        }
    }

    #[tokio::test]
    async fn the_tap_records_and_hands_the_sample_on() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let values = Arc::new(LatestValues::default());
        let tapped = Tapped {
            inner: tx,
            values: Some(values.clone()),
        };
        tapped.push(sample("d", "p", Value::Bool(true), 9)).await;
        assert_eq!(values.get("d", "p").unwrap().value, Value::Bool(true));
        assert_eq!(rx.recv().await.unwrap().1.ts_ms, 9);
    }
}
