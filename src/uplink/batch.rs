//! Which queued rows travel together in one message (`uplink.batch: per_device`): a pure
//! decision over the read-ahead, apart from the link that renders and sends it.
//!
//! # Rules
//! - A message holds rows of one *key* (one device at one QoS) or exactly one row when the row
//!   has no key (retained samples, QoS 2 samples, device statuses, command and config results
//!   go alone, as with `batch: none`).
//! - The rows of a message are in `seq` order; every row taken is in exactly one message.
//! - A message's elements fit its row's `limit` (bytes); a row larger than its limit on its own
//!   still goes, alone (as it would without batching).
//! - At most `max_messages` messages (the free window slots and the rate limit): the rows taken
//!   are a *prefix* of the rows offered, so the session's cursor stays a plain `seq`.
//! - While a key's message is open, rows of other keys may go into their own messages: rows of
//!   several devices committed together (one poll) interleave in the queue, and each device's
//!   rows of the prefix still go together.

use std::collections::HashMap;
use std::hash::Hash;

/// One row offered to the planner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item<K> {
    /// `None`: the row goes alone.
    pub key: Option<K>,
    /// Bytes of the row's element in a batch.
    pub size: usize,
    /// Bytes the elements of a message may take, separators included.
    pub limit: usize,
}

/// The messages of a prefix of the rows offered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Indices into the rows offered, each message's in increasing order, messages in the
    /// order of their first row.
    pub messages: Vec<Vec<usize>>,
    /// How many rows (from the front) the messages hold.
    pub taken: usize,
}

/// Groups a prefix of `items` into at most `max_messages` messages (see the module doc). Reads
/// `items` only as far as the prefix goes, so a caller may size rows lazily.
pub fn plan<K: Eq + Hash + Clone>(
    items: impl IntoIterator<Item = Item<K>>,
    max_messages: usize,
) -> Plan {
    let mut messages: Vec<Vec<usize>> = Vec::new();
    // The open message of each key: its index in `messages` and the bytes its elements take.
    let mut open: HashMap<K, (usize, usize)> = HashMap::new();
    let mut taken = 0;
    for (i, item) in items.into_iter().enumerate() {
        let Some(key) = &item.key else {
            if messages.len() == max_messages {
                break;
            }
            messages.push(vec![i]);
            taken = i + 1;
            continue;
        };
        match open.get_mut(key) {
            Some((m, bytes)) if *bytes + 1 + item.size <= item.limit => {
                messages[*m].push(i);
                *bytes += 1 + item.size;
            }
            _ => {
                if messages.len() == max_messages {
                    break;
                }
                open.insert(key.clone(), (messages.len(), item.size));
                messages.push(vec![i]);
            }
        }
        taken = i + 1;
    }
    Plan { messages, taken }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn item(key: Option<u8>, size: usize) -> Item<u8> {
        Item {
            key,
            size,
            limit: 100,
        }
    }

    #[test]
    fn a_devices_rows_go_together_and_keyless_rows_alone() {
        let items = [
            item(Some(1), 10),
            item(Some(2), 10),
            item(Some(1), 10),
            item(None, 10),
            item(Some(2), 10),
        ];
        let plan = plan(items, 10);
        assert_eq!(plan.messages, vec![vec![0, 2], vec![1, 4], vec![3]]);
        assert_eq!(plan.taken, 5);
    }

    #[test]
    fn a_full_message_closes_and_the_window_bounds_the_prefix() {
        // 30 + 1 + 30 + 1 + 30 = 92 fits 100; the fourth opens a new message.
        let items: Vec<_> = (0..5).map(|_| item(Some(1), 30)).collect();
        assert_eq!(
            plan(items.clone(), 10).messages,
            vec![vec![0, 1, 2], vec![3, 4]]
        );
        let one = plan(items.clone(), 1);
        assert_eq!((one.messages, one.taken), (vec![vec![0, 1, 2]], 3));
        assert_eq!(plan(items, 0).taken, 0);
        // Larger than the limit alone: still sent, alone.
        let big = [item(Some(1), 500), item(Some(1), 10)];
        assert_eq!(plan(big, 10).messages, vec![vec![0], vec![1]]);
    }

    proptest! {
        #[test]
        fn every_row_of_the_prefix_is_in_exactly_one_fitting_message_of_one_key(
            rows in prop::collection::vec((prop::option::of(0u8..3), 1usize..60), 0..60),
            max_messages in 0usize..12,
        ) {
            let items: Vec<_> = rows.iter().map(|(k, s)| item(*k, *s)).collect();
            let plan = plan(items.clone(), max_messages);
            prop_assert!(plan.messages.len() <= max_messages);
            let mut seen: Vec<usize> = plan.messages.iter().flatten().copied().collect();
            seen.sort_unstable();
            prop_assert_eq!(seen, (0..plan.taken).collect::<Vec<_>>());
            // A prefix stops only for the window.
            prop_assert!(plan.taken == items.len() || plan.messages.len() == max_messages);
            for message in &plan.messages {
                prop_assert!(message.windows(2).all(|w| w[0] < w[1]));
                let first = &items[message[0]];
                if first.key.is_none() {
                    prop_assert_eq!(message.len(), 1);
                }
                prop_assert!(message.iter().all(|&i| items[i].key == first.key));
                let bytes: usize = message.iter().map(|&i| items[i].size).sum::<usize>()
                    + message.len() - 1;
                prop_assert!(message.len() == 1 || bytes <= first.limit);
            }
        }
    }
}
