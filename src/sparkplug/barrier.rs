//! The delete barrier (pure): when a queue row sent at QoS 0 may be deleted.
//!
//! Sparkplug sends DATA at QoS 0, so the broker acknowledges nothing. But it reads one
//! connection's packets in order: once it answers a packet written *after* a batch of PUBLISHes
//! — a PINGRESP to our PINGREQ, or the PUBACK of a QoS 1 PUBLISH (to a gateway-private topic) —
//! it has read every byte of that batch. This module tracks which rows each such *marker*
//! covers, and releases them when its answer arrives. The caller deletes released rows from the
//! queue; anything not released when the connection ends stays queued and goes out again, as
//! history, after the next birth.
//!
//! Rules, for the caller:
//! - Report every row's PUBLISH once written ([`Barrier::written`]), and **every** PINGREQ and
//!   marker PUBLISH once written ([`Barrier::marker_written`]), keep-alive PINGREQs included:
//!   PINGRESPs carry no id and are matched to PINGREQs first in, first out.
//! - An answer releases its marker's rows and those of every earlier marker (an answer to a
//!   later packet proves the earlier ones were read too).
//! - On a lost connection, call [`Barrier::on_connection_lost`] and resend from the queue.
//!
//! # What it guarantees, and what not
//! - A released row was **read by the broker** (on a broker that processes one connection's
//!   packets in order, as MQTT requires for PUBLISH and every broker we know does for all
//!   packets): it is in the broker's hands as any acknowledged QoS 1 message would be.
//! - It is **not** proof of delivery to the host: a QoS 0 message for a subscriber whose own
//!   link is down is dropped by the broker. Sparkplug's answer to that is the host's: it sees the
//!   `seq` gap and asks for a rebirth, and the gap's values are lost to it unless it reads them
//!   elsewhere. No edge node can close that window.
//! - Nothing sent before a drop is lost at the broker: unreleased rows are resent (a duplicate
//!   carries the same timestamp and is flagged historical).

use std::collections::VecDeque;

/// A packet whose answer proves the broker read everything written before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Marker {
    /// PINGREQ, answered by PINGRESP (matched first in, first out).
    Ping,
    /// A QoS 1 PUBLISH with this packet id, answered by its PUBACK.
    Publish { pkid: u16 },
}

/// Why an answer matched no marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BarrierError {
    #[error("PINGRESP without an outstanding PINGREQ")]
    UnexpectedPingResp,
    #[error("PUBACK for packet id {0}, which is not a barrier marker")]
    UnknownPuback(u16),
}

/// Rows between markers; see the module header.
#[derive(Debug, Clone, Default)]
pub struct Barrier {
    /// Rows written since the last marker.
    unmarked: Vec<u64>,
    /// Markers written and not answered, oldest first, with the rows written before each.
    awaiting: VecDeque<(Marker, Vec<u64>)>,
}

impl Barrier {
    pub fn new() -> Barrier {
        Barrier::default()
    }

    /// These rows' PUBLISHes were written to the connection.
    pub fn written(&mut self, seqs: impl IntoIterator<Item = u64>) {
        self.unmarked.extend(seqs);
    }

    /// Whether rows wait for a marker (the caller decides when to write one: after a batch,
    /// or when the link goes idle).
    pub fn needs_marker(&self) -> bool {
        !self.unmarked.is_empty()
    }

    /// Rows written and not yet released.
    pub fn unconfirmed(&self) -> usize {
        self.unmarked.len()
            + self
                .awaiting
                .iter()
                .map(|(_, rows)| rows.len())
                .sum::<usize>()
    }

    /// A marker was written (after the rows reported so far).
    pub fn marker_written(&mut self, marker: Marker) {
        let rows = std::mem::take(&mut self.unmarked);
        self.awaiting.push_back((marker, rows));
    }

    /// A PINGRESP arrived: the rows it releases, oldest first.
    pub fn on_pingresp(&mut self) -> Result<Vec<u64>, BarrierError> {
        let index = self
            .awaiting
            .iter()
            .position(|(marker, _)| *marker == Marker::Ping)
            .ok_or(BarrierError::UnexpectedPingResp)?;
        Ok(self.release_through(index))
    }

    /// A PUBACK arrived for a marker PUBLISH: the rows it releases, oldest first.
    pub fn on_puback(&mut self, pkid: u16) -> Result<Vec<u64>, BarrierError> {
        let index = self
            .awaiting
            .iter()
            .position(|(marker, _)| *marker == Marker::Publish { pkid })
            .ok_or(BarrierError::UnknownPuback(pkid))?;
        Ok(self.release_through(index))
    }

    fn release_through(&mut self, index: usize) -> Vec<u64> {
        self.awaiting
            .drain(..=index)
            .flat_map(|(_, rows)| rows)
            .collect()
    }

    /// The connection ended: nothing outstanding can be confirmed any more. Returns how many
    /// rows were unconfirmed (they stay queued and are resent).
    pub fn on_connection_lost(&mut self) -> usize {
        let lost = self.unconfirmed();
        self.unmarked.clear();
        self.awaiting.clear();
        lost
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rows_wait_for_the_answer_to_a_later_marker() {
        let mut b = Barrier::new();
        b.written([1, 2, 3]);
        assert!(b.needs_marker());
        b.marker_written(Marker::Ping);
        assert!(!b.needs_marker());
        b.written([4]);
        assert_eq!(b.unconfirmed(), 4);
        assert_eq!(b.on_pingresp(), Ok(vec![1, 2, 3]));
        assert_eq!(b.unconfirmed(), 1);
    }

    #[test]
    fn keep_alive_pings_keep_pingresps_aligned() {
        let mut b = Barrier::new();
        b.marker_written(Marker::Ping); // keep-alive, nothing before it
        b.written([1, 2]);
        b.marker_written(Marker::Ping);
        assert_eq!(b.on_pingresp(), Ok(vec![]));
        assert_eq!(b.on_pingresp(), Ok(vec![1, 2]));
        assert_eq!(b.on_pingresp(), Err(BarrierError::UnexpectedPingResp));
    }

    #[test]
    fn a_later_answer_releases_earlier_markers_too() {
        let mut b = Barrier::new();
        b.written([1]);
        b.marker_written(Marker::Ping);
        b.written([2]);
        b.marker_written(Marker::Publish { pkid: 7 });
        b.written([3]);
        b.marker_written(Marker::Ping);
        assert_eq!(b.on_puback(7), Ok(vec![1, 2]));
        assert_eq!(b.on_puback(7), Err(BarrierError::UnknownPuback(7)));
        assert_eq!(b.on_pingresp(), Ok(vec![3]));
    }

    #[test]
    fn a_lost_connection_confirms_nothing() {
        let mut b = Barrier::new();
        b.written([1, 2]);
        b.marker_written(Marker::Ping);
        b.written([3]);
        assert_eq!(b.on_connection_lost(), 3);
        assert_eq!(b.unconfirmed(), 0);
        assert_eq!(b.on_pingresp(), Err(BarrierError::UnexpectedPingResp));
    }

    #[derive(Debug, Clone)]
    enum Step {
        Write(u8),
        Ping,
        Publish,
        Answer,
        Lost,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (1u8..5).prop_map(Step::Write),
            Just(Step::Ping),
            Just(Step::Publish),
            Just(Step::Answer),
            Just(Step::Lost),
        ]
    }

    proptest! {
        /// Against a broker that answers markers in order: a row is released only after a
        /// marker written after it was answered, never twice, and at the end every row is
        /// either released or reported lost.
        #[test]
        fn releases_exactly_what_an_in_order_broker_proved(steps in proptest::collection::vec(step(), 0..60)) {
            let mut b = Barrier::new();
            let mut next_seq = 1u64;
            let mut next_pkid = 1u16;
            // The model: markers in write order, each with the last seq written before it.
            let mut outstanding: VecDeque<(Marker, u64)> = VecDeque::new();
            let mut released: Vec<u64> = Vec::new();
            let mut lost = 0usize;
            for step in steps {
                match step {
                    Step::Write(n) => {
                        let seqs: Vec<u64> = (next_seq..next_seq + u64::from(n)).collect();
                        next_seq += u64::from(n);
                        b.written(seqs);
                    }
                    Step::Ping => {
                        b.marker_written(Marker::Ping);
                        outstanding.push_back((Marker::Ping, next_seq - 1));
                    }
                    Step::Publish => {
                        let marker = Marker::Publish { pkid: next_pkid };
                        next_pkid += 1;
                        b.marker_written(marker);
                        outstanding.push_back((marker, next_seq - 1));
                    }
                    Step::Answer => {
                        let Some((marker, proven)) = outstanding.pop_front() else { continue };
                        let got = match marker {
                            Marker::Ping => b.on_pingresp(),
                            Marker::Publish { pkid } => b.on_puback(pkid),
                        };
                        let got = got.unwrap();
                        prop_assert!(got.iter().all(|s| *s <= proven));
                        released.extend(got);
                    }
                    Step::Lost => {
                        lost += b.on_connection_lost();
                        outstanding.clear();
                    }
                }
            }
            lost += b.on_connection_lost();
            let mut unique = released.clone();
            unique.sort_unstable();
            unique.dedup();
            prop_assert_eq!(unique.len(), released.len());
            prop_assert_eq!(released.len() + lost, (next_seq - 1) as usize);
        }
    }
}
