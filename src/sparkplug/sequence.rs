//! The two counters of a Sparkplug edge node: the message sequence number `seq` and the
//! birth/death sequence number `bdSeq` (pure; the caller persists `bdSeq`).
//!
//! **seq** orders one node's messages for the host, which detects a lost message by a gap and
//! asks for a rebirth:
//! - every NBIRTH carries `seq` 0 (`topics-nbirth-seq-num`; chapter 6 allows 0..=255, but 0 is
//!   what chapter 4 demands and what Tahu and pysparkplug send);
//! - every later DBIRTH, NDATA, DDATA and DDEATH of the node carries the previous value plus one,
//!   255 wrapping to 0 (`payloads-sequence-num-incrementing`); NCMD/DCMD are the host's and do
//!   not count;
//! - NDEATH carries none (`topics-ndeath-seq`, `payloads-ndeath-seq`).
//!
//! **bdSeq** pairs an NBIRTH with the NDEATH that ends it, so a host can drop a late NDEATH of an
//! older session instead of declaring a live node dead:
//! - it starts at 0 and grows by one on every MQTT CONNECT, 255 wrapping to 0
//!   (`topics-nbirth-bdseq-increment`, `message-flow-edge-node-birth-publish-will-message-payload-bdSeq`);
//! - the will (NDEATH) of a CONNECT and every NBIRTH of that connection — a rebirth included —
//!   carry the same value (`topics-nbirth-bdseq-matching`, `payloads-ndeath-bdseq`,
//!   `operational-behavior-data-commands-rebirth-action-3`);
//! - it is an `Int64` metric named `bdSeq` ([`crate::sparkplug::metric::BD_SEQ`]).
//!
//! "Across restarts" is the caller's part: it reads the last value used from durable storage,
//! takes [`BdSeq::for_connect`], **commits it before writing the CONNECT**, then uses it. A
//! crash after the commit only skips a value; a value written after the CONNECT could be reused
//! by the next run, and a host that still holds the old session's NDEATH would then kill the new
//! session with it (the race go-sparkplugb fixed in v0.3.2).

/// Produces the `seq` of a node's messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SeqCounter {
    next: u8,
}

impl SeqCounter {
    pub fn new() -> SeqCounter {
        SeqCounter::default()
    }

    /// The `seq` of an NBIRTH (always 0); the next message gets 1.
    pub fn nbirth(&mut self) -> u8 {
        self.next = 1;
        0
    }

    /// The `seq` of the next DBIRTH, NDATA, DDATA or DDEATH.
    pub fn next_seq(&mut self) -> u8 {
        let seq = self.next;
        self.next = seq.wrapping_add(1);
        seq
    }

    /// What [`SeqCounter::next_seq`] will return, without taking it.
    pub fn peek(&self) -> u8 {
        self.next
    }
}

/// A birth/death sequence number, 0..=255.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BdSeq(u8);

/// Why a stored bdSeq could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("stored bdSeq {0:?} is not a number from 0 to 255")]
pub struct BdSeqError(pub String);

impl BdSeq {
    /// The bdSeq of a node's very first CONNECT.
    pub const FIRST: BdSeq = BdSeq(0);

    pub fn new(value: u8) -> BdSeq {
        BdSeq(value)
    }

    pub fn value(self) -> u8 {
        self.0
    }

    /// The value after this one: +1, 255 → 0.
    pub fn next(self) -> BdSeq {
        BdSeq(self.0.wrapping_add(1))
    }

    /// The bdSeq of a new CONNECT, given the last one used (`None`: never connected, or the
    /// stored value is lost; then 0, as the spec starts).
    pub fn for_connect(last_used: Option<BdSeq>) -> BdSeq {
        last_used.map_or(BdSeq::FIRST, BdSeq::next)
    }

    /// Reads the stored form written by [`BdSeq::to_stored`] (decimal text).
    pub fn parse_stored(text: &str) -> Result<BdSeq, BdSeqError> {
        text.trim()
            .parse::<u8>()
            .map(BdSeq)
            .map_err(|_| BdSeqError(text.to_owned()))
    }

    pub fn to_stored(self) -> String {
        self.0.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn nbirth_is_zero_and_the_next_message_is_one() {
        let mut seq = SeqCounter::new();
        for _ in 0..300 {
            seq.next_seq();
        }
        assert_eq!(seq.nbirth(), 0);
        assert_eq!(seq.next_seq(), 1);
        assert_eq!(seq.next_seq(), 2);
    }

    #[test]
    fn seq_wraps_from_255_to_0() {
        let mut seq = SeqCounter::new();
        assert_eq!(seq.nbirth(), 0);
        let taken: Vec<u8> = (0..256).map(|_| seq.next_seq()).collect();
        assert_eq!(taken[254], 255);
        assert_eq!(taken[255], 0);
        assert_eq!(seq.peek(), 1);
    }

    #[test]
    fn bdseq_starts_at_zero_and_wraps() {
        assert_eq!(BdSeq::for_connect(None), BdSeq::new(0));
        assert_eq!(BdSeq::for_connect(Some(BdSeq::new(0))), BdSeq::new(1));
        assert_eq!(BdSeq::for_connect(Some(BdSeq::new(255))), BdSeq::new(0));
    }

    #[test]
    fn stored_bdseq_is_decimal_text() {
        assert_eq!(BdSeq::parse_stored("17"), Ok(BdSeq::new(17)));
        assert_eq!(BdSeq::parse_stored(" 255\n"), Ok(BdSeq::new(255)));
        assert!(BdSeq::parse_stored("256").is_err());
        assert!(BdSeq::parse_stored("-1").is_err());
        assert!(BdSeq::parse_stored("").is_err());
    }

    proptest! {
        /// Over any run of messages after an NBIRTH, consecutive seqs differ by one mod 256:
        /// what a host's gap detection checks.
        #[test]
        fn consecutive_seqs_differ_by_one_mod_256(before in 0usize..600, after in 1usize..600) {
            let mut seq = SeqCounter::new();
            for _ in 0..before {
                seq.next_seq();
            }
            let mut last = seq.nbirth();
            prop_assert_eq!(last, 0);
            for _ in 0..after {
                let now = seq.next_seq();
                prop_assert_eq!(now, last.wrapping_add(1));
                last = now;
            }
        }

        #[test]
        fn bdseq_round_trips_and_steps_by_one(value: u8) {
            let bd = BdSeq::new(value);
            prop_assert_eq!(BdSeq::parse_stored(&bd.to_stored()), Ok(bd));
            prop_assert_eq!(BdSeq::for_connect(Some(bd)).value(), value.wrapping_add(1));
        }
    }
}
