//! Which queued rows travel together in one message (`uplink.batch: per_device` and
//! `per_device_compact`): a pure decision over the read-ahead, apart from the link that renders
//! and sends it, and apart from the encoding, which it sees only through [`Measure`].
//!
//! # Rules
//! - A message holds rows of one *key* (one device at one QoS) or exactly one row when the row
//!   has no key (retained samples, QoS 2 samples, device statuses, command and config results
//!   go alone, as with `batch: none`).
//! - The rows of a message are in `seq` order; every row taken is in exactly one message.
//! - A message's bytes ([`Measure`]) fit its first row's `limit`; a row larger than its limit
//!   on its own still goes, alone (as it would without batching).
//! - At most `max_messages` messages (the free window slots and the rate limit). When they are
//!   all used, the open messages still take their keys' later rows up to their limit: under a
//!   rate limit one token buys a full message, even while other devices' rows interleave.
//! - The rows taken of each key are a prefix of that key's rows offered, so each device's
//!   samples still go out in `seq` order; a keyless row not taken ends the plan (nothing after
//!   it is taken). The rows left behind stay in the link's read-ahead, in `seq` order, for the
//!   next step: the session's cursor may pass them, never a row that is not in the read-ahead.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;

/// One row offered to the planner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item<K> {
    /// `None`: the row goes alone.
    pub key: Option<K>,
    /// Bytes a message opened by this row may take (as [`Measure`] counts them).
    pub limit: usize,
}

/// The bytes of a message as rows join it: the encoding's side of the plan. Rows are named by
/// their index in the items offered.
pub trait Measure {
    /// A message in the making.
    type Open;
    /// A message holding row `i` alone.
    fn open(&self, i: usize) -> Self::Open;
    /// Appends row `i` to `open` if the message stays within `limit` bytes; false (and `open`
    /// unchanged) if it would not.
    fn append_within(&self, open: &mut Self::Open, i: usize, limit: usize) -> bool;
}

/// The messages of the rows taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Indices into the rows offered, each message's in increasing order, messages in the
    /// order of their first row.
    pub messages: Vec<Vec<usize>>,
}

impl Plan {
    /// Every row taken, in increasing order.
    pub fn taken(&self) -> Vec<usize> {
        let mut taken: Vec<usize> = self.messages.iter().flatten().copied().collect();
        taken.sort_unstable();
        taken
    }
}

/// Groups rows of `items` into at most `max_messages` messages (see the module doc).
pub fn plan<K: Eq + Hash + Clone, M: Measure>(
    items: impl IntoIterator<Item = Item<K>>,
    max_messages: usize,
    measure: &M,
) -> Plan {
    let mut messages: Vec<Vec<usize>> = Vec::new();
    // The open message of each key: its index in `messages` and its bytes so far.
    let mut open: HashMap<K, (usize, M::Open)> = HashMap::new();
    // Keys with no room left in this plan: their later rows wait.
    let mut full: HashSet<K> = HashSet::new();
    for (i, item) in items.into_iter().enumerate() {
        let room = messages.len() < max_messages;
        let Some(key) = item.key else {
            if !room {
                break;
            }
            messages.push(vec![i]);
            continue;
        };
        if full.contains(&key) {
            continue;
        }
        if let Some((m, bytes)) = open.get_mut(&key) {
            if measure.append_within(bytes, i, item.limit) {
                messages[*m].push(i);
                continue;
            }
        }
        if room {
            open.insert(key, (messages.len(), measure.open(i)));
            messages.push(vec![i]);
        } else {
            open.remove(&key);
            full.insert(key);
            if open.is_empty() {
                break;
            }
        }
    }
    Plan { messages }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Elements of known sizes joined by commas (as `batch: per_device` counts them).
    struct Sizes(Vec<usize>);

    impl Measure for Sizes {
        type Open = usize;
        fn open(&self, i: usize) -> usize {
            self.0[i]
        }
        fn append_within(&self, open: &mut usize, i: usize, limit: usize) -> bool {
            let grown = *open + 1 + self.0[i];
            let fits = grown <= limit;
            if fits {
                *open = grown;
            }
            fits
        }
    }

    fn item(key: Option<u8>) -> Item<u8> {
        Item { key, limit: 100 }
    }

    /// Plans rows of (key, size).
    fn plan_of(rows: &[(Option<u8>, usize)], max_messages: usize) -> Plan {
        let sizes = Sizes(rows.iter().map(|r| r.1).collect());
        plan(rows.iter().map(|r| item(r.0)), max_messages, &sizes)
    }

    #[test]
    fn a_devices_rows_go_together_and_keyless_rows_alone() {
        let rows = [
            (Some(1), 10),
            (Some(2), 10),
            (Some(1), 10),
            (None, 10),
            (Some(2), 10),
        ];
        let plan = plan_of(&rows, 10);
        assert_eq!(plan.messages, vec![vec![0, 2], vec![1, 4], vec![3]]);
        assert_eq!(plan.taken(), [0, 1, 2, 3, 4]);
    }

    #[test]
    fn a_full_message_closes_and_the_window_bounds_the_messages() {
        // 30 + 1 + 30 + 1 + 30 = 92 fits 100; the fourth opens a new message.
        let rows: Vec<_> = (0..5).map(|_| (Some(1), 30)).collect();
        assert_eq!(plan_of(&rows, 10).messages, vec![vec![0, 1, 2], vec![3, 4]]);
        assert_eq!(plan_of(&rows, 1).messages, vec![vec![0, 1, 2]]);
        assert!(plan_of(&rows, 0).messages.is_empty());
        // Larger than the limit alone: still sent, alone.
        let big = [(Some(1), 500), (Some(1), 10)];
        assert_eq!(plan_of(&big, 10).messages, vec![vec![0], vec![1]]);
    }

    #[test]
    fn one_message_left_still_fills_past_other_devices_rows() {
        // Polls of two devices interleave; one token: device 1's message takes its rows from
        // every poll offered, device 2's wait.
        let rows: Vec<_> = (0..8).map(|i| (Some(i / 2 % 2), 10)).collect();
        let plan = plan_of(&rows, 1);
        assert_eq!(plan.messages, vec![vec![0, 1, 4, 5]]);
        // A keyless row that cannot go ends the plan.
        let mut barrier = rows.clone();
        barrier[3] = (None, 10);
        assert_eq!(plan_of(&barrier, 1).messages, vec![vec![0, 1]]);
    }

    proptest! {
        #[test]
        fn every_row_taken_is_in_one_fitting_message_and_each_key_keeps_its_order(
            rows in prop::collection::vec((prop::option::of(0u8..3), 1usize..60), 0..60),
            max_messages in 0usize..12,
        ) {
            let plan = plan_of(&rows, max_messages);
            prop_assert!(plan.messages.len() <= max_messages);
            let taken = plan.taken();
            prop_assert!(taken.windows(2).all(|w| w[0] < w[1]), "each row at most once");
            // Everything goes while there is room for it.
            prop_assert!(taken.len() == rows.len() || plan.messages.len() == max_messages);
            let first_left = (0..rows.len()).find(|i| !taken.contains(i));
            for (i, (key, _)) in rows.iter().enumerate() {
                let left = first_left.is_some_and(|f| f < i);
                match key {
                    // Per key a prefix of its rows; nothing after a keyless row left behind.
                    Some(k) if taken.contains(&i) => prop_assert!(
                        (0..i).all(|j| rows[j].0 != Some(*k) || taken.contains(&j))
                    ),
                    None if left => prop_assert!(!taken.contains(&i)),
                    _ => {}
                }
                if key.is_none() && !taken.contains(&i) {
                    prop_assert!(taken.iter().all(|&t| t < i));
                }
            }
            for message in &plan.messages {
                prop_assert!(message.windows(2).all(|w| w[0] < w[1]));
                let first = &rows[message[0]];
                if first.0.is_none() {
                    prop_assert_eq!(message.len(), 1);
                }
                prop_assert!(message.iter().all(|&i| rows[i].0 == first.0));
                let bytes: usize = message.iter().map(|&i| rows[i].1).sum::<usize>()
                    + message.len() - 1;
                prop_assert!(message.len() == 1 || bytes <= 100);
            }
            // Planning the rows taken again (as the link does once it has them) gives the
            // same messages.
            let again: Vec<_> = taken.iter().map(|&i| rows[i]).collect();
            let replanned = plan_of(&again, max_messages.max(1));
            let mapped: Vec<Vec<usize>> = replanned
                .messages
                .iter()
                .map(|m| m.iter().map(|&j| taken[j]).collect())
                .collect();
            prop_assert_eq!(mapped, plan.messages.clone());
        }
    }
}
