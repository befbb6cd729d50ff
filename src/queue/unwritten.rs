//! Acknowledgements whose delete could not be committed (a full disk, an I/O error): kept in
//! memory by the writer and written first in every later transaction, until one commits. Pure:
//! the writer applies them, this keeps them.
//!
//! # Why they are kept rather than dropped
//! A PUBACK or PUBCOMP is the broker's word that it owns a row. Dropping the delete would leave
//! the row in the file, to be sent again after the next reconnect or restart: every row drained
//! while the disk is full would be delivered twice. Kept, the row is never sent again by this
//! process, and the delete lands with the first commit that succeeds.
//!
//! # Invariants
//! - A `seq` is here only because the broker acknowledged or refused it in this process.
//! - The writer puts these writes at the head of every transaction, so nothing committed later
//!   (a packet id reused by `MarkPublished`) can reach the disk before them: the file never holds
//!   two rows with one packet id.
//! - The writes are idempotent and commute with each other: a delete of a row already gone
//!   deletes nothing, a requeue of a queued row changes nothing.
//! - Reads answer as if they were applied: `fetch` and `unsettled` skip these rows and the depth
//!   leaves them out ([`Unwritten::existing`]).
//! - A refusal ([`Unwritten::reject`], a reason code from the broker) ends the packet id's flow
//!   like an acknowledgement, so it is kept the same way: its move to the `rejected` table comes
//!   before any later write that could reuse the id.
//!
//! # Bound
//! Acknowledgements arrive mostly in `seq` order, so they are kept as ranges of consecutive
//! `seq`s: a drain of a million rows is one range. Past [`MAX_RANGES`] ranges the queue reports
//! [`Unwritten::backlogged`] and the uplink stops taking new rows, which bounds what can still
//! arrive by its in-flight window. What is here is bounded by the rows in the file anyway: a
//! full disk commits no new ones.
//!
//! # Shutdown
//! The writer tries once more when it closes. If that commit fails too, the rows stay in the
//! file and the next run sends them again (same `seq`, a duplicate consumers drop): nothing on
//! a full disk can record the acknowledgements instead.

use std::collections::{BTreeMap, BTreeSet};

/// Ranges kept before the uplink is asked to stop taking rows ([`Unwritten::backlogged`]). A
/// range costs about 40 bytes.
pub const MAX_RANGES: usize = 16_384;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Unwritten {
    /// Acknowledged `seq`s to delete: start → end (inclusive); disjoint and never adjacent.
    acks: BTreeMap<u64, u64>,
    /// Rows to queue again instead of deleting (an undecodable row's packet id released, see
    /// `store::unsettled_rows`).
    requeues: BTreeSet<u64>,
    /// Rows the broker refused: `seq` → reason code, to move to the `rejected` table.
    rejects: BTreeMap<u64, u8>,
    /// How many of the acknowledged `seq`s still have a row in the file (counted by the writer
    /// when it kept them): the depth leaves them out.
    pub existing: u64,
}

impl Unwritten {
    pub fn is_empty(&self) -> bool {
        self.acks.is_empty() && self.requeues.is_empty() && self.rejects.is_empty()
    }

    /// Keeps an acknowledgement; `false` if it was already kept (or kept as refused).
    pub fn ack(&mut self, seq: u64) -> bool {
        if self.is_gone(seq) {
            return false;
        }
        let joins_left = seq
            .checked_sub(1)
            .and_then(|before| self.containing(before))
            .map(|(start, _)| start);
        let right_end = seq
            .checked_add(1)
            .and_then(|after| self.acks.remove_entry(&after))
            .map(|(_, end)| end);
        let start = joins_left.unwrap_or(seq);
        self.acks.insert(start, right_end.unwrap_or(seq));
        true
    }

    /// Keeps a requeue.
    pub fn requeue(&mut self, seq: u64) {
        self.requeues.insert(seq);
    }

    /// Keeps a refusal (the row moves to `rejected`); `false` if `seq` was already kept as
    /// acknowledged or refused.
    pub fn reject(&mut self, seq: u64, reason: u8) -> bool {
        if self.is_gone(seq) {
            return false;
        }
        self.rejects.insert(seq, reason);
        true
    }

    /// Whether the row of `seq` is as good as gone from the queue: acknowledged, or refused and
    /// moved to `rejected`.
    pub fn is_gone(&self, seq: u64) -> bool {
        self.is_acked(seq) || self.rejects.contains_key(&seq)
    }

    /// Whether the broker acknowledged `seq` (its row is as good as deleted).
    pub fn is_acked(&self, seq: u64) -> bool {
        self.containing(seq).is_some()
    }

    /// Whether `seq` is kept at all (acknowledged, or to be queued again): its session state is
    /// settled and must not be resent.
    pub fn is_settled(&self, seq: u64) -> bool {
        self.is_gone(seq) || self.requeues.contains(&seq)
    }

    fn containing(&self, seq: u64) -> Option<(u64, u64)> {
        self.acks
            .range(..=seq)
            .next_back()
            .filter(|(_, end)| **end >= seq)
            .map(|(s, e)| (*s, *e))
    }

    /// The acknowledged ranges, in `seq` order.
    pub fn ack_ranges(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.acks.iter().map(|(s, e)| (*s, *e))
    }

    pub fn requeues(&self) -> impl Iterator<Item = u64> + '_ {
        self.requeues.iter().copied()
    }

    /// The refusals, in `seq` order, with their reason codes.
    pub fn rejects(&self) -> impl Iterator<Item = (u64, u8)> + '_ {
        self.rejects.iter().map(|(s, r)| (*s, *r))
    }

    /// Acknowledged `seq`s kept.
    pub fn acked(&self) -> u64 {
        self.acks.iter().map(|(s, e)| e - s + 1).sum()
    }

    /// Whether the uplink should stop taking new rows until a commit succeeds.
    pub fn backlogged(&self) -> bool {
        self.acks.len() + self.requeues.len() + self.rejects.len() >= MAX_RANGES
    }

    /// Everything was committed.
    pub fn clear(&mut self) {
        *self = Unwritten::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn consecutive_acks_are_one_range() {
        let mut u = Unwritten::default();
        for seq in [5, 7, 6, 4, 10] {
            assert!(u.ack(seq));
        }
        assert!(!u.ack(6), "kept once");
        assert_eq!(u.ack_ranges().collect::<Vec<_>>(), [(4, 7), (10, 10)]);
        assert_eq!(u.acked(), 5);
        assert!(u.is_acked(4) && u.is_acked(7) && u.is_acked(10));
        assert!(!u.is_acked(3) && !u.is_acked(8) && !u.is_acked(9));
        u.requeue(9);
        assert!(u.is_settled(9) && !u.is_acked(9));
        assert!(u.reject(12, 0x87));
        assert!(!u.reject(12, 0x90) && !u.reject(5, 0x87) && !u.ack(12));
        assert!(u.is_gone(12) && u.is_settled(12) && !u.is_acked(12));
        assert_eq!(u.rejects().collect::<Vec<_>>(), [(12, 0x87)]);
        u.clear();
        assert!(u.is_empty());
    }

    #[test]
    fn the_ends_of_the_seq_space_do_not_overflow() {
        let mut u = Unwritten::default();
        assert!(u.ack(0));
        assert!(u.ack(u64::MAX));
        assert!(u.ack(u64::MAX - 1));
        assert_eq!(
            u.ack_ranges().collect::<Vec<_>>(),
            [(0, 0), (u64::MAX - 1, u64::MAX)]
        );
    }

    #[test]
    fn backlogged_past_max_ranges() {
        let mut u = Unwritten::default();
        for i in 0..MAX_RANGES as u64 - 1 {
            u.ack(i * 2);
        }
        assert!(!u.backlogged());
        u.ack(u64::MAX);
        assert!(u.backlogged());
    }

    proptest! {
        /// Whatever the order, the ranges hold exactly the acknowledged seqs, disjoint and not
        /// adjacent (so the count of ranges is minimal).
        #[test]
        fn ranges_hold_exactly_the_acks(seqs in proptest::collection::vec(0u64..200, 0..300)) {
            let mut u = Unwritten::default();
            let mut want = BTreeSet::new();
            for seq in seqs {
                prop_assert_eq!(u.ack(seq), want.insert(seq));
            }
            let ranges: Vec<(u64, u64)> = u.ack_ranges().collect();
            let got: BTreeSet<u64> = ranges.iter().flat_map(|(s, e)| *s..=*e).collect();
            prop_assert_eq!(&got, &want);
            for pair in ranges.windows(2) {
                prop_assert!(pair[0].1 + 1 < pair[1].0, "{:?}", pair);
            }
            for seq in 0..200 {
                prop_assert_eq!(u.is_acked(seq), want.contains(&seq));
            }
            prop_assert_eq!(u.acked(), want.len() as u64);
        }
    }
}
