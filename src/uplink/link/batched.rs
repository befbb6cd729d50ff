//! `uplink.batch: per_device` on a connection: the rows of one refill step grouped into
//! messages ([`crate::uplink::batch::plan`]) and a group rendered as one PUBLISH on
//! `P/<device>` (`{"ts":…,"samples":[{"point":…,"value":…,"ts":…,"seq":…},…]}`).
//!
//! Only non-retained QoS 1 samples are batched: QoS 2 packet ids are recorded per row before the
//! wire (a batch would need one id on several rows of the store), and retained samples and
//! messages (statuses, results) keep their own topics. A batch takes one window slot and one
//! publish of the rate limit; its rows are deleted together on its PUBACK. After a reconnect
//! its rows are fetched again and regrouped (QoS 1 ids are not recorded): a consumer may see a
//! sample twice, in two different batches, always with the same `seq`.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;

use super::Link;
use crate::config::Qos;
use crate::queue::{wire, Entry, StoredRow};
use crate::uplink::batch::{plan, Item};

/// MQTT bytes of a QoS 1 PUBLISH besides topic and payload: the fixed header (at most 5),
/// the topic's length (2) and the packet id (2).
const PUBLISH_OVERHEAD: usize = 9;

/// Rows of one message: alone, or a batch with each row's element.
pub(super) struct Unit {
    pub rows: Vec<StoredRow>,
    /// Each row's batch element; empty for a row that goes alone on its own topic.
    pub elements: Vec<Vec<u8>>,
}

impl Link {
    /// How many rows from the front of `ahead` the next `n` messages hold.
    pub(super) fn rows_for(&self, ahead: &mut VecDeque<StoredRow>, n: usize) -> usize {
        match self.batch_limit() {
            None => n.min(ahead.len()),
            Some(limit) => plan(self.items(ahead.make_contiguous(), limit), n).taken,
        }
    }

    /// `rows` (in `seq` order) as at most `max_messages` messages, and the rows after them.
    pub(super) fn group(
        &self,
        rows: Vec<StoredRow>,
        max_messages: usize,
        batching: bool,
    ) -> (Vec<Unit>, Vec<StoredRow>) {
        let limit = self.batch_limit().filter(|_| batching);
        let Some(limit) = limit else {
            let mut rows = rows;
            let rest = rows.split_off(max_messages.min(rows.len()));
            let units = rows
                .into_iter()
                .map(|row| Unit {
                    rows: vec![row],
                    elements: Vec::new(),
                })
                .collect();
            return (units, rest);
        };
        let plan = plan(self.items(&rows, limit), max_messages);
        let mut slots: Vec<Option<StoredRow>> = rows.into_iter().map(Some).collect();
        let rest = slots.split_off(plan.taken).into_iter().flatten().collect();
        let units = plan
            .messages
            .iter()
            .map(|message| {
                let rows: Vec<StoredRow> =
                    message.iter().filter_map(|&i| slots[i].take()).collect();
                // A batchable row alone is a batch of one: a device's samples all go on
                // `P/<device>`, whatever the window and the rate limit allowed this step.
                let elements = if rows.first().and_then(batch_key).is_some() {
                    rows.iter().filter_map(element).collect()
                } else {
                    Vec::new()
                };
                Unit { rows, elements }
            })
            .collect();
        (units, rest)
    }

    /// Topic and payload of a batch (`unit.elements` not empty).
    pub(super) fn render_batch(&self, unit: &Unit) -> (String, Bytes) {
        let (device, ts) = unit
            .rows
            .iter()
            .filter_map(|row| match &row.entry {
                Entry::Sample(sample) => Some((sample.device.clone(), sample.ts_ms)),
                Entry::Message(_) => None,
            })
            .fold((Arc::<str>::from(""), i64::MIN), |(_, newest), (d, ts)| {
                (d, newest.max(ts))
            });
        (
            wire::batch_topic(&self.config.topic_prefix, &device),
            wire::batch_payload(ts, &unit.elements),
        )
    }

    /// The planner's view of `rows`, sized lazily (the planner stops at its prefix).
    fn items<'r>(
        &self,
        rows: &'r [StoredRow],
        limit: u32,
    ) -> impl Iterator<Item = Item<Arc<str>>> + 'r {
        let prefix = self.config.topic_prefix.len();
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        rows.iter().map(move |row| match batch_key(row) {
            Some(device) => Item {
                size: element(row).map_or(0, |e| e.len()),
                limit: limit.saturating_sub(
                    prefix + 1 + device.len() + PUBLISH_OVERHEAD + wire::BATCH_ENVELOPE,
                ),
                key: Some(device),
            },
            None => Item {
                key: None,
                size: 0,
                limit: 0,
            },
        })
    }
}

/// The device of a row that may go in a batch: a non-retained QoS 1 sample.
fn batch_key(row: &StoredRow) -> Option<Arc<str>> {
    match &row.entry {
        Entry::Sample(s) if s.qos == Qos::AtLeastOnce && !s.retain => Some(s.device.clone()),
        _ => None,
    }
}

fn element(row: &StoredRow) -> Option<Vec<u8>> {
    match &row.entry {
        Entry::Sample(sample) => Some(wire::batch_element(sample, row.seq)),
        Entry::Message(_) => None,
    }
}
