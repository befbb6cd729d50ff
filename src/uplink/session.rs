//! Pure MQTT 3.1.1 publish-side session state: packet ids, the in-flight window and what each
//! acknowledgement releases. No I/O happens here (the split rumqttc makes between `state.rs` and
//! `eventloop.rs`); the link task feeds it packets and writes what it returns.
//!
//! # Invariants
//! - A packet id is in use by at most one in-flight message; ids cycle through `1..=65535`.
//! - At most `max_inflight` QoS 1/2 messages are unacknowledged at once.
//! - A queued sample is released ([`Released::Sample`]) only by the PUBACK (QoS 1) or PUBCOMP
//!   (QoS 2) whose packet id was assigned to it on *this* connection. A PUBREC never releases.
//! - Samples are handed out in increasing `seq`; [`Session::cursor`] is the newest `seq` handed
//!   out on this connection, so the link fetches the queue strictly after it.
//!
//! # Reconnects
//! Contract v1 connects with `clean_session = true`, so the broker keeps nothing of an earlier
//! connection (`session_present = 0`) and MQTT §4.4 requires nothing to be resent with its old
//! packet id. [`Session::on_connected`] therefore forgets every in-flight entry and rewinds the
//! cursor to 0: everything still in the queue (i.e. not acknowledged) is sent again as new
//! messages, with the same `seq` in the payload so consumers can drop duplicates. The durable
//! session issue replaces this with persisted packet ids and DUP=1 resends.

use std::collections::BTreeMap;

use bytes::Bytes;
use rumqttc::mqttbytes::v4::{Packet, PubRel, Publish};
use rumqttc::mqttbytes::QoS;

use crate::config::Qos;

/// What an in-flight packet id stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tracked {
    /// A queue row; its `seq`.
    Sample(u64),
    /// A status certificate (birth or graceful death); not in the queue.
    Status,
}

/// Which acknowledgement an in-flight message waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Awaiting {
    /// PUBACK (QoS 1 sent).
    Ack,
    /// PUBREC, "publish received" (QoS 2 sent).
    Received,
    /// PUBCOMP, "publish complete" (QoS 2 PUBREL sent).
    Complete,
}

#[derive(Debug, Clone, Copy)]
struct Inflight {
    tracked: Tracked,
    stage: Awaiting,
}

/// What an acknowledgement completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Released {
    /// The broker owns this queue row now: delete it.
    Sample(u64),
    /// A status certificate was acknowledged.
    Status,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    #[error("broker acknowledged packet id {pkid} which is not in flight")]
    UnknownPacketId { pkid: u16 },
    #[error("broker sent {packet} for packet id {pkid} in the wrong handshake stage")]
    WrongStage { packet: &'static str, pkid: u16 },
    #[error("in-flight window is full")]
    WindowFull,
}

#[derive(Debug)]
pub struct Session {
    max_inflight: usize,
    /// Last packet id handed out; the next search starts after it so ids are not reused while a
    /// late acknowledgement for them could still arrive.
    last_pkid: u16,
    inflight: BTreeMap<u16, Inflight>,
    cursor: u64,
}

impl Session {
    pub fn new(max_inflight: u16) -> Self {
        Session {
            // Capped well below the id space so status certificates always find a free id.
            max_inflight: usize::from(max_inflight.clamp(1, 60_000)),
            last_pkid: 0,
            inflight: BTreeMap::new(),
            cursor: 0,
        }
    }

    /// A new connection was accepted with a clean session: nothing is in flight any more and
    /// every unacknowledged queue row must be sent again from the start.
    pub fn on_connected(&mut self) {
        self.inflight.clear();
        self.cursor = 0;
    }

    /// Free slots in the in-flight window.
    pub fn room(&self) -> usize {
        self.max_inflight.saturating_sub(self.inflight.len())
    }

    pub fn inflight(&self) -> usize {
        self.inflight.len()
    }

    /// The newest `seq` handed out on this connection.
    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    /// The queue holds nothing after `seq`, so the cursor may move up to it without sending.
    pub fn skip_to(&mut self, seq: u64) {
        self.cursor = self.cursor.max(seq);
    }

    /// Builds the PUBLISH for queue row `seq`. Rows must be offered in increasing `seq`.
    pub fn publish_sample(
        &mut self,
        seq: u64,
        topic: String,
        payload: Bytes,
        qos: Qos,
        retain: bool,
    ) -> Result<Packet, SessionError> {
        debug_assert!(seq > self.cursor, "rows must be offered in seq order");
        let packet = self.publish(Tracked::Sample(seq), topic, payload, qos, retain)?;
        self.cursor = self.cursor.max(seq);
        Ok(packet)
    }

    /// Builds the QoS 0 PUBLISH of a live sample: no packet id, nothing tracked, cursor untouched.
    pub fn publish_live(&self, topic: String, payload: Bytes, retain: bool) -> Packet {
        let mut publish = Publish::from_bytes(topic, QoS::AtMostOnce, payload);
        publish.retain = retain;
        Packet::Publish(publish)
    }

    /// Builds a retained QoS 1 status PUBLISH (birth or graceful death).
    pub fn publish_status(
        &mut self,
        topic: String,
        payload: Bytes,
    ) -> Result<Packet, SessionError> {
        self.publish(Tracked::Status, topic, payload, Qos::AtLeastOnce, true)
    }

    fn publish(
        &mut self,
        tracked: Tracked,
        topic: String,
        payload: Bytes,
        qos: Qos,
        retain: bool,
    ) -> Result<Packet, SessionError> {
        let mut publish = Publish::from_bytes(topic, mqtt_qos(qos), payload);
        publish.retain = retain;
        let stage = match qos {
            // A QoS 0 message has no acknowledgement; nothing to track. Queue rows are never QoS 0
            // (the queue keeps those off disk), so this is only reached by the live path.
            Qos::AtMostOnce => return Ok(Packet::Publish(publish)),
            Qos::AtLeastOnce => Awaiting::Ack,
            Qos::ExactlyOnce => Awaiting::Received,
        };
        // Status certificates may exceed the window by one: a full window of samples must not
        // keep the birth or the graceful death from being sent.
        if matches!(tracked, Tracked::Sample(_)) && self.room() == 0 {
            return Err(SessionError::WindowFull);
        }
        let pkid = self.allocate_pkid();
        publish.pkid = pkid;
        self.inflight.insert(pkid, Inflight { tracked, stage });
        Ok(Packet::Publish(publish))
    }

    fn allocate_pkid(&mut self) -> u16 {
        // The window (at most u16::MAX entries, plus status) is far smaller than the id space in
        // practice, so this finds a free id in a few steps.
        let mut candidate = self.last_pkid;
        loop {
            candidate = if candidate == u16::MAX {
                1
            } else {
                candidate + 1
            };
            if !self.inflight.contains_key(&candidate) {
                self.last_pkid = candidate;
                return candidate;
            }
        }
    }

    /// PUBACK for a QoS 1 message.
    pub fn on_puback(&mut self, pkid: u16) -> Result<Released, SessionError> {
        self.complete(pkid, Awaiting::Ack, "PUBACK")
    }

    /// PUBREC for a QoS 2 message: returns the PUBREL to send. The message stays in flight.
    pub fn on_pubrec(&mut self, pkid: u16) -> Result<Packet, SessionError> {
        let entry = self
            .inflight
            .get_mut(&pkid)
            .ok_or(SessionError::UnknownPacketId { pkid })?;
        match entry.stage {
            Awaiting::Received => {
                entry.stage = Awaiting::Complete;
                Ok(Packet::PubRel(PubRel::new(pkid)))
            }
            // A repeated PUBREC (the broker did not see our PUBREL) is answered again.
            Awaiting::Complete => Ok(Packet::PubRel(PubRel::new(pkid))),
            Awaiting::Ack => Err(SessionError::WrongStage {
                packet: "PUBREC",
                pkid,
            }),
        }
    }

    /// PUBCOMP for a QoS 2 message.
    pub fn on_pubcomp(&mut self, pkid: u16) -> Result<Released, SessionError> {
        self.complete(pkid, Awaiting::Complete, "PUBCOMP")
    }

    fn complete(
        &mut self,
        pkid: u16,
        expected: Awaiting,
        packet: &'static str,
    ) -> Result<Released, SessionError> {
        let entry = self
            .inflight
            .get(&pkid)
            .ok_or(SessionError::UnknownPacketId { pkid })?;
        if entry.stage != expected {
            return Err(SessionError::WrongStage { packet, pkid });
        }
        let tracked = entry.tracked;
        self.inflight.remove(&pkid);
        Ok(match tracked {
            Tracked::Sample(seq) => Released::Sample(seq),
            Tracked::Status => Released::Status,
        })
    }

    /// Whether a status certificate is still waiting for its acknowledgement.
    pub fn status_pending(&self) -> bool {
        self.inflight
            .values()
            .any(|entry| entry.tracked == Tracked::Status)
    }
}

pub fn mqtt_qos(qos: Qos) -> QoS {
    match qos {
        Qos::AtMostOnce => QoS::AtMostOnce,
        Qos::AtLeastOnce => QoS::AtLeastOnce,
        Qos::ExactlyOnce => QoS::ExactlyOnce,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pkid_of(packet: &Packet) -> u16 {
        match packet {
            Packet::Publish(p) => p.pkid,
            Packet::PubRel(p) => p.pkid,
            other => panic!("unexpected packet {other:?}"),
        }
    }

    fn sample(session: &mut Session, seq: u64, qos: Qos) -> Packet {
        session
            .publish_sample(
                seq,
                format!("t/{seq}"),
                Bytes::from_static(b"{}"),
                qos,
                false,
            )
            .unwrap()
    }

    #[test]
    fn qos1_sample_is_released_only_by_its_puback() {
        let mut s = Session::new(8);
        let p = sample(&mut s, 7, Qos::AtLeastOnce);
        let pkid = pkid_of(&p);
        assert_eq!(s.inflight(), 1);
        assert_eq!(s.on_puback(pkid), Ok(Released::Sample(7)));
        assert_eq!(s.inflight(), 0);
        assert_eq!(
            s.on_puback(pkid),
            Err(SessionError::UnknownPacketId { pkid })
        );
    }

    #[test]
    fn qos2_sample_needs_pubrec_then_pubcomp() {
        let mut s = Session::new(8);
        let pkid = pkid_of(&sample(&mut s, 3, Qos::ExactlyOnce));
        // PUBCOMP before PUBREC is a protocol violation and releases nothing.
        assert_eq!(
            s.on_pubcomp(pkid),
            Err(SessionError::WrongStage {
                packet: "PUBCOMP",
                pkid
            })
        );
        assert!(s.on_puback(pkid).is_err());
        let rel = s.on_pubrec(pkid).unwrap();
        assert_eq!(rel, Packet::PubRel(PubRel::new(pkid)));
        // A repeated PUBREC is answered with PUBREL again, still not released.
        assert_eq!(s.on_pubrec(pkid).unwrap(), rel);
        assert_eq!(s.inflight(), 1);
        assert_eq!(s.on_pubcomp(pkid), Ok(Released::Sample(3)));
        assert_eq!(s.inflight(), 0);
    }

    #[test]
    fn qos0_is_not_tracked() {
        let mut s = Session::new(1);
        let p = sample(&mut s, 1, Qos::AtMostOnce);
        assert_eq!(pkid_of(&p), 0);
        assert_eq!(s.room(), 1);
    }

    #[test]
    fn window_limits_inflight() {
        let mut s = Session::new(2);
        sample(&mut s, 1, Qos::AtLeastOnce);
        sample(&mut s, 2, Qos::AtLeastOnce);
        assert_eq!(s.room(), 0);
        assert_eq!(
            s.publish_sample(3, "t".into(), Bytes::new(), Qos::AtLeastOnce, false),
            Err(SessionError::WindowFull)
        );
        assert_eq!(s.cursor(), 2);
    }

    #[test]
    fn status_is_sent_even_when_the_window_is_full() {
        let mut s = Session::new(1);
        sample(&mut s, 1, Qos::AtLeastOnce);
        assert!(s.publish_status("p/status".into(), Bytes::new()).is_ok());
        assert_eq!(s.inflight(), 2);
    }

    #[test]
    fn status_is_tracked_but_releases_no_row() {
        let mut s = Session::new(4);
        let p = s
            .publish_status("p/status".into(), Bytes::from_static(b"{}"))
            .unwrap();
        match &p {
            Packet::Publish(publish) => {
                assert!(publish.retain);
                assert_eq!(publish.qos, QoS::AtLeastOnce);
            }
            other => panic!("{other:?}"),
        }
        assert!(s.status_pending());
        assert_eq!(s.on_puback(pkid_of(&p)), Ok(Released::Status));
        assert!(!s.status_pending());
    }

    #[test]
    fn reconnect_forgets_inflight_and_rewinds_cursor() {
        let mut s = Session::new(4);
        let pkid = pkid_of(&sample(&mut s, 10, Qos::AtLeastOnce));
        s.on_connected();
        assert_eq!(s.cursor(), 0);
        assert_eq!(s.room(), 4);
        // An acknowledgement from the old connection can no longer release anything.
        assert!(s.on_puback(pkid).is_err());
    }

    #[test]
    fn packet_ids_wrap_and_skip_ids_in_use() {
        let mut s = Session::new(3);
        s.last_pkid = u16::MAX - 1;
        let a = pkid_of(&sample(&mut s, 1, Qos::AtLeastOnce));
        let b = pkid_of(&sample(&mut s, 2, Qos::AtLeastOnce));
        assert_eq!((a, b), (u16::MAX, 1));
        s.on_puback(b).unwrap();
        s.last_pkid = u16::MAX - 1;
        // u16::MAX is still in flight, so the next id after wrapping is 1 again.
        assert_eq!(pkid_of(&sample(&mut s, 3, Qos::AtLeastOnce)), 1);
    }

    proptest! {
        /// Whatever order acknowledgements arrive in, each sample is released exactly once and
        /// in-flight packet ids are always distinct.
        #[test]
        fn every_sample_released_exactly_once(
            window in 1u16..16,
            n in 1u64..200,
            order_seed in any::<u64>(),
        ) {
            let mut s = Session::new(window);
            let mut rng = fastrand::Rng::with_seed(order_seed);
            let mut pending: Vec<u16> = Vec::new();
            let mut released = Vec::new();
            let mut next = 1u64;
            while released.len() < n as usize {
                if next <= n && s.room() > 0 {
                    let qos = if next % 3 == 0 { Qos::ExactlyOnce } else { Qos::AtLeastOnce };
                    let pkid = pkid_of(&sample(&mut s, next, qos));
                    prop_assert!(!pending.contains(&pkid));
                    pending.push(pkid);
                    next += 1;
                    continue;
                }
                let i = rng.usize(..pending.len());
                let pkid = pending[i];
                let result = match s.on_puback(pkid) {
                    Ok(r) => Some(r),
                    Err(_) => {
                        s.on_pubrec(pkid).unwrap();
                        Some(s.on_pubcomp(pkid).unwrap())
                    }
                };
                pending.swap_remove(i);
                if let Some(Released::Sample(seq)) = result { released.push(seq); }
            }
            released.sort_unstable();
            prop_assert_eq!(released, (1..=n).collect::<Vec<_>>());
            prop_assert_eq!(s.inflight(), 0);
        }
    }
}
