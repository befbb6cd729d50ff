//! `uplink.batch: per_device` and `per_device_compact` on a connection: the rows of one refill
//! step grouped into messages ([`crate::uplink::batch::plan`]) and a group rendered as one
//! PUBLISH on `P/<device>`: `{"ts":…,"samples":[{"point":…,"value":…,"ts":…,"seq":…},…]}`, or
//! the compact shape of [`crate::uplink::compact`].
//!
//! Only non-retained QoS 1 samples are batched: QoS 2 packet ids are recorded per row before the
//! wire (a batch would need one id on several rows of the store), and retained samples and
//! messages (statuses, results) keep their own topics. A batch takes one window slot and one
//! publish of the rate limit; its rows are deleted together on its PUBACK. After a reconnect
//! its rows are fetched again and regrouped (QoS 1 ids are not recorded): a consumer may see a
//! sample twice, in two different batches, always with the same `seq`.
//!
//! A step may take a device's rows from past other devices' rows (see the planner's rules): the
//! rows left behind stay in the read-ahead in `seq` order ([`put_back`]).

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;

use super::Link;
use crate::config::{Batching, Qos};
use crate::queue::{wire, Entry, StoredRow};
use crate::uplink::batch::{plan, Item, Measure, Plan};
use crate::uplink::compact::{Encoder, Row};

/// MQTT bytes of a QoS 1 PUBLISH besides topic and payload: the fixed header (at most 5),
/// the topic's length (2) and the packet id (2).
const PUBLISH_OVERHEAD: usize = 9;

/// Rows of one message: alone on its own topic, or a batch on `P/<device>`.
pub(super) struct Unit {
    pub rows: Vec<StoredRow>,
    pub batched: bool,
}

impl Link {
    /// Takes out of `ahead` the rows the next `n` messages hold; the rest stay, in order.
    pub(super) fn take_rows(&self, ahead: &mut VecDeque<StoredRow>, n: usize) -> Vec<StoredRow> {
        if self.batch_limit().is_none() {
            return ahead.drain(..n.min(ahead.len())).collect();
        }
        let taken = self.plan(ahead.make_contiguous(), n).taken();
        if taken.iter().enumerate().all(|(i, &t)| i == t) {
            return ahead.drain(..taken.len()).collect();
        }
        let mut rows = Vec::with_capacity(taken.len());
        let mut left = VecDeque::with_capacity(ahead.len() - taken.len());
        let mut next = taken.into_iter().peekable();
        for (i, row) in ahead.drain(..).enumerate() {
            if next.next_if_eq(&i).is_some() {
                rows.push(row);
            } else {
                left.push_back(row);
            }
        }
        *ahead = left;
        rows
    }

    /// `rows` (in `seq` order) as at most `max_messages` messages, and the rows not in them.
    pub(super) fn group(
        &self,
        rows: Vec<StoredRow>,
        max_messages: usize,
        batching: bool,
    ) -> (Vec<Unit>, Vec<StoredRow>) {
        if !batching || self.batch_limit().is_none() {
            let mut rows = rows;
            let rest = rows.split_off(max_messages.min(rows.len()));
            let units = rows
                .into_iter()
                .map(|row| Unit {
                    rows: vec![row],
                    batched: false,
                })
                .collect();
            return (units, rest);
        }
        let plan = self.plan(&rows, max_messages);
        let mut slots: Vec<Option<StoredRow>> = rows.into_iter().map(Some).collect();
        let units = plan
            .messages
            .iter()
            .map(|message| {
                let rows: Vec<StoredRow> =
                    message.iter().filter_map(|&i| slots[i].take()).collect();
                // A batchable row alone is a batch of one: a device's samples all go on
                // `P/<device>`, whatever the window and the rate limit allowed this step.
                let batched = rows.first().and_then(batch_key).is_some();
                Unit { rows, batched }
            })
            .collect();
        (units, slots.into_iter().flatten().collect())
    }

    /// Topic and payload of a batch (`unit.batched`).
    pub(super) fn render_batch(&self, unit: &Unit) -> (String, Bytes) {
        let samples = || {
            unit.rows.iter().filter_map(|row| match &row.entry {
                Entry::Sample(sample) => Some((sample, row.seq)),
                Entry::Message(_) => None,
            })
        };
        let device = samples()
            .next()
            .map_or_else(|| Arc::from(""), |(s, _)| s.device.clone());
        let topic = wire::batch_topic(&self.config.topic_prefix, &device);
        let payload = match self.config.batch {
            Batching::PerDeviceCompact { .. } => {
                let mut encoder = Encoder::new();
                for (sample, seq) in samples() {
                    encoder.push(&compact_row(sample, seq));
                }
                Bytes::from(encoder.finish())
            }
            _ => {
                let ts = samples().map(|(s, _)| s.ts_ms).max().unwrap_or(i64::MIN);
                let elements: Vec<Vec<u8>> = samples()
                    .map(|(sample, seq)| wire::batch_element(sample, seq))
                    .collect();
                wire::batch_payload(ts, &elements)
            }
        };
        (topic, payload)
    }

    /// The planner's messages over `rows`, with the configured encoding's sizes.
    fn plan(&self, rows: &[StoredRow], n: usize) -> Plan {
        let Some(limit) = self.batch_limit() else {
            return Plan {
                messages: (0..n.min(rows.len())).map(|i| vec![i]).collect(),
            };
        };
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        let compact = matches!(self.config.batch, Batching::PerDeviceCompact { .. });
        // What a message's payload may take: the limit less the PUBLISH's other bytes (and,
        // per_device, the envelope around its elements).
        let envelope = if compact { 0 } else { wire::BATCH_ENVELOPE };
        let fixed = self.config.topic_prefix.len() + 1 + PUBLISH_OVERHEAD + envelope;
        let items = rows.iter().map(|row| match batch_key(row) {
            Some(device) => Item {
                limit: limit.saturating_sub(fixed + device.len()),
                key: Some(device),
            },
            None => Item {
                key: None,
                limit: 0,
            },
        });
        if compact {
            plan(items, n, &Compact(rows))
        } else {
            plan(items, n, &Elements(rows))
        }
    }
}

/// Puts rows not sent back into `ahead`, keeping it in `seq` order.
pub(super) fn put_back(ahead: &mut VecDeque<StoredRow>, rows: Vec<StoredRow>) {
    if rows.is_empty() {
        return;
    }
    let in_front = ahead
        .front()
        .is_none_or(|first| rows.iter().all(|row| row.seq < first.seq));
    for row in rows.into_iter().rev() {
        ahead.push_front(row);
    }
    if !in_front {
        ahead.make_contiguous().sort_by_key(|row| row.seq);
    }
}

/// `per_device` sizes: each row's element, rendered as the planner reaches it (the rows left
/// behind are never rendered), joined by commas.
struct Elements<'r>(&'r [StoredRow]);

impl Elements<'_> {
    fn size(&self, i: usize) -> usize {
        self.0
            .get(i)
            .and_then(batch_element)
            .map_or(0, |element| element.len())
    }
}

impl Measure for Elements<'_> {
    type Open = usize;
    fn open(&self, i: usize) -> usize {
        self.size(i)
    }
    fn append_within(&self, open: &mut usize, i: usize, limit: usize) -> bool {
        let grown = *open + 1 + self.size(i);
        let fits = grown <= limit;
        if fits {
            *open = grown;
        }
        fits
    }
}

/// Compact payload sizes: exact, from the encoder itself.
struct Compact<'r>(&'r [StoredRow]);

impl Compact<'_> {
    fn row(&self, i: usize) -> Option<Row<'_>> {
        match &self.0.get(i)?.entry {
            Entry::Sample(sample) => Some(compact_row(sample, self.0[i].seq)),
            Entry::Message(_) => None,
        }
    }
}

impl Measure for Compact<'_> {
    type Open = Encoder;
    fn open(&self, i: usize) -> Encoder {
        let mut encoder = Encoder::new();
        if let Some(row) = self.row(i) {
            encoder.push(&row);
        }
        encoder
    }
    fn append_within(&self, open: &mut Encoder, i: usize, limit: usize) -> bool {
        self.row(i).is_some_and(|row| open.push_within(&row, limit))
    }
}

fn compact_row(sample: &crate::sample::Sample, seq: u64) -> Row<'_> {
    Row {
        point: &sample.point,
        value: &sample.value,
        ts_ms: sample.ts_ms,
        seq,
    }
}

/// The device of a row that may go in a batch: a non-retained QoS 1 sample.
fn batch_key(row: &StoredRow) -> Option<Arc<str>> {
    match &row.entry {
        Entry::Sample(s) if s.qos == Qos::AtLeastOnce && !s.retain => Some(s.device.clone()),
        _ => None,
    }
}

fn batch_element(row: &StoredRow) -> Option<Vec<u8>> {
    match &row.entry {
        Entry::Sample(sample) => Some(wire::batch_element(sample, row.seq)),
        Entry::Message(_) => None,
    }
}
