//! Queued samples as DDATA messages (pure): which rows are history, how they are cut into
//! messages, and whether history or live data goes first.
//!
//! Every sample is in the queue until the broker provably read it ([`super::barrier`]), so after
//! a (re)birth the queue holds two kinds of rows:
//! - **history**: committed before the births of this session (`seq <= boundary`, the queue's
//!   last `seq` when the births went out). They go out as DDATA with `is_historical: true` and
//!   their own sample timestamps: the host stores them and does not show them as current. Some
//!   may already have reached the host before a drop; a repeat is flagged historical and carries
//!   the same timestamp, which a historian de-duplicates.
//! - **live**: committed after the births, sent as ordinary DDATA.
//!
//! # Messages ([`plan`])
//! One device per message (a DDATA topic names one device), history and live never mixed, at
//! most `max_metrics` metrics (`flush_max_metrics`), rows kept in `seq` order within a message,
//! messages ordered by their oldest row: oldest first. Within one fetched window the rows of a
//! device are gathered, so all samples of one poll go in one DDATA, and interleaved devices do
//! not fragment each other into one-metric messages.
//!
//! Rows that are not samples (device status, command results: the JSON profile's kinds) and
//! samples of points the births did not declare (a device removed while its rows waited) cannot
//! be sent as Sparkplug metrics; they come back apart for the caller to settle.

use std::collections::HashMap;

use crate::queue::{Entry, StoredRow};
use crate::sample::Sample;

/// When live data is sent while history is still queued (`uplink.sparkplug.history`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HistoryOrder {
    /// History first, live after it (default): the host receives every point's values in time
    /// order, and its "current" values after an outage are current — but they lag by the time
    /// the backlog takes to flush.
    #[default]
    InOrder,
    /// Live data as it comes, history beside it when the link has room: the current values
    /// stay current during a long flush, and the host receives historical values older than
    /// values it already shows (a historian handles that; a plain trend may draw back in time).
    LiveFirst,
}

/// Where the next DDATA comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    History,
    Live,
}

impl HistoryOrder {
    /// The next source to send from, given which have rows waiting; `None`: nothing to send.
    pub fn next(self, history_waiting: bool, live_waiting: bool) -> Option<Source> {
        match (self, history_waiting, live_waiting) {
            (HistoryOrder::InOrder, true, _) | (HistoryOrder::LiveFirst, true, false) => {
                Some(Source::History)
            }
            (HistoryOrder::InOrder, false, true) | (HistoryOrder::LiveFirst, _, true) => {
                Some(Source::Live)
            }
            (_, false, false) => None,
        }
    }
}

/// One DDATA to send.
#[derive(Debug, Clone, PartialEq)]
pub struct Planned<'a> {
    pub device: &'a str,
    pub historical: bool,
    /// `(seq, sample)` in `seq` order.
    pub rows: Vec<(u64, &'a Sample)>,
}

/// A window of rows cut into messages.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Plan<'a> {
    pub messages: Vec<Planned<'a>>,
    /// Rows that are not samples.
    pub not_samples: Vec<u64>,
    /// Samples of points the births did not declare.
    pub undeclared: Vec<u64>,
}

/// Cuts `rows` (in `seq` order, as the queue fetches them) into DDATA messages; see the module
/// header. `boundary`: the last `seq` committed before this session's births. `declared(device,
/// point)`: whether the births declared that metric. A `max_metrics` of 0 is taken as 1.
pub fn plan<'a>(
    rows: &'a [StoredRow],
    boundary: u64,
    max_metrics: usize,
    declared: impl Fn(&str, &str) -> bool,
) -> Plan<'a> {
    let max_metrics = max_metrics.max(1);
    let mut plan = Plan::default();
    // The message each (device, historical) is filling, by index into `plan.messages`.
    let mut open: HashMap<(&str, bool), usize> = HashMap::new();
    for row in rows {
        let sample = match &row.entry {
            Entry::Sample(sample) => sample,
            Entry::Message(_) => {
                plan.not_samples.push(row.seq);
                continue;
            }
        };
        if !declared(&sample.device, &sample.point) {
            plan.undeclared.push(row.seq);
            continue;
        }
        let key = (&*sample.device, row.seq <= boundary);
        let index = match open.get(&key) {
            Some(&index) if plan.messages[index].rows.len() < max_metrics => index,
            _ => {
                plan.messages.push(Planned {
                    device: key.0,
                    historical: key.1,
                    rows: Vec::new(),
                });
                let index = plan.messages.len() - 1;
                open.insert(key, index);
                index
            }
        };
        plan.messages[index].rows.push((row.seq, sample));
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Qos;
    use crate::queue::{Delivery, Message, MessageKind};
    use crate::sample::Value;
    use proptest::prelude::*;
    use std::sync::Arc;

    fn row(seq: u64, device: &str, point: &str) -> StoredRow {
        StoredRow {
            seq,
            entry: Entry::Sample(Sample {
                device: Arc::from(device),
                point: Arc::from(point),
                value: Value::Int(seq as i64),
                ts_ms: seq as i64 * 10,
                qos: Qos::AtLeastOnce,
                retain: false,
            }),
            delivery: Delivery::Queued,
            expires_ms: None,
        }
    }

    fn seqs(p: &Planned<'_>) -> Vec<u64> {
        p.rows.iter().map(|(seq, _)| *seq).collect()
    }

    #[test]
    fn in_order_sends_history_before_live() {
        let order = HistoryOrder::InOrder;
        assert_eq!(order.next(true, true), Some(Source::History));
        assert_eq!(order.next(true, false), Some(Source::History));
        assert_eq!(order.next(false, true), Some(Source::Live));
        assert_eq!(order.next(false, false), None);
    }

    #[test]
    fn live_first_sends_live_whenever_there_is_some() {
        let order = HistoryOrder::LiveFirst;
        assert_eq!(order.next(true, true), Some(Source::Live));
        assert_eq!(order.next(true, false), Some(Source::History));
        assert_eq!(order.next(false, true), Some(Source::Live));
        assert_eq!(order.next(false, false), None);
    }

    #[test]
    fn one_device_per_message_split_at_the_boundary_and_the_limit() {
        let rows = [
            row(1, "a", "x"),
            row(2, "b", "x"),
            row(3, "a", "y"),
            row(4, "a", "x"),
            row(5, "a", "y"),
            row(6, "b", "x"),
            row(7, "a", "x"),
        ];
        let p = plan(&rows, 5, 2, |_, _| true);
        let shape: Vec<(&str, bool, Vec<u64>)> = p
            .messages
            .iter()
            .map(|m| (m.device, m.historical, seqs(m)))
            .collect();
        assert_eq!(
            shape,
            [
                ("a", true, vec![1, 3]),
                ("b", true, vec![2]),
                ("a", true, vec![4, 5]),
                ("b", false, vec![6]),
                ("a", false, vec![7]),
            ]
        );
    }

    #[test]
    fn foreign_and_undeclared_rows_come_back_apart() {
        let mut rows = vec![row(1, "a", "x"), row(2, "gone", "x")];
        rows.push(StoredRow {
            seq: 3,
            entry: Entry::Message(Message {
                kind: MessageKind::DeviceStatus,
                device: "a".into(),
                point: "".into(),
                payload: "{}".into(),
                ts_ms: 0,
                qos: Qos::AtLeastOnce,
                retain: true,
            }),
            delivery: Delivery::Queued,
            expires_ms: None,
        });
        let p = plan(&rows, 10, 0, |device, _| device != "gone");
        assert_eq!(p.messages.len(), 1);
        assert_eq!(p.undeclared, [2]);
        assert_eq!(p.not_samples, [3]);
    }

    proptest! {
        /// Every sample row lands in exactly one message; each message has one device, one
        /// kind, at most `max` rows in seq order; messages come oldest first.
        #[test]
        fn plan_covers_every_row_once(devices in proptest::collection::vec(0u8..4, 0..80), boundary in 0u64..90, max in 0usize..7) {
            let rows: Vec<StoredRow> = devices.iter().enumerate()
                .map(|(i, d)| row(i as u64 + 1, &format!("d{d}"), "p"))
                .collect();
            let p = plan(&rows, boundary, max, |_, _| true);
            let mut all: Vec<u64> = Vec::new();
            let mut firsts = Vec::new();
            for m in &p.messages {
                prop_assert!(!m.rows.is_empty() && m.rows.len() <= max.max(1));
                let s = seqs(m);
                prop_assert!(s.windows(2).all(|w| w[0] < w[1]));
                for (seq, sample) in &m.rows {
                    prop_assert_eq!(&*sample.device, m.device);
                    prop_assert_eq!(*seq <= boundary, m.historical);
                }
                firsts.push(s[0]);
                all.extend(s);
            }
            prop_assert!(firsts.windows(2).all(|w| w[0] < w[1]));
            all.sort_unstable();
            prop_assert_eq!(all, (1..=rows.len() as u64).collect::<Vec<_>>());
        }
    }
}
