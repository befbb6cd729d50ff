//! Pure MQTT 3.1.1 session state of the uplink: packet ids, the in-flight window, what each
//! acknowledgement releases, what a resumed session resends, and when an answer is overdue. No
//! I/O and no clock here (the split rumqttc makes between `state.rs` and `eventloop.rs`): the
//! link feeds packets and `now`, and writes what it gets back.
//!
//! # Invariants
//! - A packet id is in use by at most one in-flight message; ids cycle through `1..=65535` and
//!   the allocator skips ids in use, including those restored from the store.
//! - At most `max_inflight` queue rows are unacknowledged at once (status and subscribe packets
//!   may exceed it by a few, so a full window never blocks a birth certificate).
//! - A queue row is released ([`Released::Row`]) only by the PUBACK (QoS 1) or PUBCOMP (QoS 2)
//!   for the id it holds. A batch (several QoS 1 rows in one PUBLISH, [`Session::publish_rows`])
//!   holds one id and one window slot; its PUBACK releases all its rows ([`Released::Rows`]). A PUBREC never releases; it asks the link to persist the new stage
//!   ([`PubRecAction::Persist`]) before the PUBREL is written.
//! - Rows are handed out in increasing `seq`; [`Session::cursor`] is the newest handed out on
//!   this connection, so the link fetches the queue strictly after it.
//! - Every outstanding request (PUBLISH QoS > 0, PUBREL, SUBSCRIBE, PINGREQ) has a send time;
//!   [`Session::deadline`] is the oldest plus the response timeout. Past it, the link is
//!   half-open and is torn down ([`Session::overdue`]).
//! - A PUBREL whose "PUBREC received" could not be committed is *held* ([`Session::hold`]): it is
//!   not written, so nothing is awaited from the broker for it and it has no deadline. The row
//!   keeps its id and window slot until [`Session::release_held`] hands out the PUBREL (after the
//!   commit); the broker keeps the message meanwhile (MQTT 3.1.1 §4.3.3 sets no time limit).
//!
//! # Reconnects (MQTT 3.1.1 §4.4)
//! Every connection starts with [`Session::on_connected`] (nothing in flight, cursor 0). With
//! `session_present = 1` the link then feeds the rows the store holds with a session state (QoS 2
//! rows; QoS 1 ids are not recorded) to [`Session::restore`]: a row whose PUBLISH was sent is resent with its original id and DUP=1, a
//! row past PUBREC gets its PUBREL again. With `session_present = 0` the link resets those rows
//! in the store first and they are sent again as new messages (same `seq`).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use bytes::Bytes;
use rumqttc::mqttbytes::v4::{Packet, PubRel, Publish, Subscribe, SubscribeFilter};
use rumqttc::mqttbytes::QoS;
use tokio::time::Instant;

use crate::config::Qos;

/// What an in-flight packet id stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tracked {
    /// A queue row; its `seq`.
    Row(u64),
    /// A status certificate (birth or graceful death); not in the queue.
    Status,
    /// Our SUBSCRIBE (to the command topics).
    Subscribe,
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
    /// Nothing: PUBREC received, the PUBREL waits until "PUBREC received" is on disk.
    Held,
    /// Nothing: the broker refused the PUBLISH for now (MQTT 5 quota exceeded); it is sent
    /// again with the same id ([`Session::defer`], [`Session::resend_deferred`]). `qos2`: its
    /// answer is a PUBREC.
    Deferred { qos2: bool },
    /// SUBACK.
    SubAck,
}

#[derive(Debug, Clone, Copy)]
struct Inflight {
    tracked: Tracked,
    stage: Awaiting,
    /// When the packet that this stage answers was sent.
    since: Instant,
}

/// What an acknowledgement completed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Released {
    /// The broker owns this queue row now: delete it.
    Row(u64),
    /// The broker owns these queue rows (one batch) now: delete them all.
    Rows(Vec<u64>),
    /// A status certificate was acknowledged.
    Status,
}

/// What to do about a PUBREC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PubRecAction {
    /// First PUBREC of a row: commit "PUBREC received" for `seq`, then write `pubrel`.
    Persist { seq: u64, pubrel: Packet },
    /// Nothing to persist (a repeated PUBREC, or a message that is not a row): write `pubrel`.
    Send(Packet),
    /// A repeated PUBREC for a held PUBREL ([`Session::hold`]): it goes out once released.
    Wait,
}

/// What a restored row needs on a resumed session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Restored {
    /// Resend the PUBLISH with this id and DUP=1 (the link renders it: [`Session::republish`]).
    Republish { pkid: u16 },
    /// Resend this PUBREL.
    Release(Packet),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    #[error("broker acknowledged packet id {pkid} which is not in flight")]
    UnknownPacketId { pkid: u16 },
    #[error("broker sent {packet} for packet id {pkid} in the wrong handshake stage")]
    WrongStage { packet: &'static str, pkid: u16 },
    #[error("in-flight window is full")]
    WindowFull,
    /// Two stored rows claim the same packet id (only after a power cut with `sync: normal`).
    #[error("stored packet id {pkid} of row {seq} is already used by another row")]
    DuplicateStoredId { pkid: u16, seq: u64 },
    #[error("broker refused subscription {index} (return code {code})")]
    SubscribeRefused { index: usize, code: String },
}

#[derive(Debug)]
pub struct Session {
    max_inflight: usize,
    response_timeout: Duration,
    /// Last packet id handed out; the next search starts after it so ids are not reused while a
    /// late acknowledgement for them could still arrive.
    last_pkid: u16,
    inflight: BTreeMap<u16, Inflight>,
    /// Rows among `inflight`; the window counts these.
    rows: usize,
    cursor: u64,
    ping_sent: Option<Instant>,
    /// Every row of a batch in flight by its packet id (its `Tracked::Row` is the first).
    batches: HashMap<u16, Vec<u64>>,
}

impl Session {
    pub fn new(max_inflight: u16, response_timeout: Duration) -> Self {
        Session {
            // Capped well below the id space so status certificates always find a free id.
            max_inflight: usize::from(max_inflight.clamp(1, 65_000)),
            response_timeout,
            last_pkid: 0,
            inflight: BTreeMap::new(),
            rows: 0,
            cursor: 0,
            ping_sent: None,
            batches: HashMap::new(),
        }
    }

    /// A new connection: nothing is in flight on it yet and the queue is read from its start.
    /// What the broker kept is fed back by [`Session::restore`].
    pub fn on_connected(&mut self) {
        self.inflight.clear();
        self.batches.clear();
        self.rows = 0;
        self.cursor = 0;
        self.ping_sent = None;
    }

    /// Takes back a row the store says is in flight (resumed session). Its id is reserved
    /// before any new id is handed out.
    pub fn restore(
        &mut self,
        seq: u64,
        pkid: u16,
        qos: Qos,
        pubrec_received: bool,
        now: Instant,
    ) -> Result<Restored, SessionError> {
        if pkid == 0 || self.inflight.contains_key(&pkid) {
            return Err(SessionError::DuplicateStoredId { pkid, seq });
        }
        let stage = match (qos, pubrec_received) {
            (Qos::ExactlyOnce, true) => Awaiting::Complete,
            (Qos::ExactlyOnce, false) => Awaiting::Received,
            _ => Awaiting::Ack,
        };
        self.inflight.insert(
            pkid,
            Inflight {
                tracked: Tracked::Row(seq),
                stage,
                since: now,
            },
        );
        self.rows += 1;
        Ok(if stage == Awaiting::Complete {
            Restored::Release(Packet::PubRel(PubRel::new(pkid)))
        } else {
            Restored::Republish { pkid }
        })
    }

    /// The PUBLISH of a restored row: its original id, DUP=1.
    pub fn republish(
        &self,
        pkid: u16,
        topic: String,
        payload: Bytes,
        qos: Qos,
        retain: bool,
    ) -> Packet {
        let mut publish = Publish::from_bytes(topic, mqtt_qos(qos), payload);
        publish.retain = retain;
        publish.pkid = pkid;
        publish.dup = true;
        Packet::Publish(publish)
    }

    /// Free slots in the in-flight window.
    pub fn room(&self) -> usize {
        self.max_inflight.saturating_sub(self.rows)
    }

    /// Rows and other messages awaiting an acknowledgement.
    pub fn inflight(&self) -> usize {
        self.inflight.len()
    }

    /// The newest `seq` handed out on this connection.
    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    /// The queue holds nothing to send up to `seq`, so the cursor may move there.
    pub fn skip_to(&mut self, seq: u64) {
        self.cursor = self.cursor.max(seq);
    }

    /// Builds the PUBLISH for queue row `seq` with a new packet id, returned beside it: the link
    /// commits (`seq`, id) before it writes the packet. Rows must be offered in increasing
    /// `seq`.
    pub fn publish_row(
        &mut self,
        seq: u64,
        topic: String,
        payload: Bytes,
        qos: Qos,
        retain: bool,
        now: Instant,
    ) -> Result<(Packet, u16), SessionError> {
        debug_assert!(seq > self.cursor, "rows must be offered in seq order");
        let published = self.publish_fresh(seq, topic, payload, qos, retain, now)?;
        self.cursor = self.cursor.max(seq);
        Ok(published)
    }

    /// Like [`Session::publish_row`] for a row of the live lane (`uplink.drain: live_first`,
    /// see [`super::share`]): it is after the backlog, which the cursor follows, so the cursor
    /// stays where it is. The link keeps the live lane's own cursor.
    pub fn publish_fresh(
        &mut self,
        seq: u64,
        topic: String,
        payload: Bytes,
        qos: Qos,
        retain: bool,
        now: Instant,
    ) -> Result<(Packet, u16), SessionError> {
        if self.room() == 0 {
            return Err(SessionError::WindowFull);
        }
        let (packet, pkid) = self.publish(Tracked::Row(seq), topic, payload, qos, retain, now);
        self.rows += 1;
        Ok((packet, pkid))
    }

    /// Builds one QoS 1 PUBLISH for the queue rows `seqs` (a batch, in increasing `seq`) with a
    /// new packet id: one window slot, and its PUBACK releases every row
    /// ([`Released::Rows`]). QoS 2 rows are not batched (their ids are recorded per row). The
    /// cursor stays where it is: batches of several devices interleave in `seq`, so the link
    /// moves it ([`Session::skip_to`]) once every row of its step is handed out.
    pub fn publish_rows(
        &mut self,
        seqs: Vec<u64>,
        topic: String,
        payload: Bytes,
        now: Instant,
    ) -> Result<(Packet, u16), SessionError> {
        let Some(&first) = seqs.first() else {
            return Err(SessionError::WindowFull);
        };
        let (packet, pkid) =
            self.publish_fresh(first, topic, payload, Qos::AtLeastOnce, false, now)?;
        self.batches.insert(pkid, seqs);
        Ok((packet, pkid))
    }

    /// Builds the QoS 0 PUBLISH of a live sample: no packet id, nothing tracked, cursor untouched.
    pub fn publish_live(&self, topic: String, payload: Bytes, retain: bool) -> Packet {
        let mut publish = Publish::from_bytes(topic, QoS::AtMostOnce, payload);
        publish.retain = retain;
        Packet::Publish(publish)
    }

    /// Builds a retained QoS 1 status PUBLISH (birth or graceful death). Not counted in the
    /// window: a full window of rows must not keep the status from being sent.
    pub fn publish_status(&mut self, topic: String, payload: Bytes, now: Instant) -> Packet {
        self.publish(Tracked::Status, topic, payload, Qos::AtLeastOnce, true, now)
            .0
    }

    /// Builds a PUBLISH that is not a queue row and not counted in the window (the local
    /// broker's statuses and command results): acknowledged like a certificate, QoS 0 untracked.
    pub fn publish_other(
        &mut self,
        topic: String,
        payload: Bytes,
        qos: Qos,
        retain: bool,
        now: Instant,
    ) -> Packet {
        self.publish(Tracked::Status, topic, payload, qos, retain, now)
            .0
    }

    /// Builds a SUBSCRIBE of `filters` at QoS 1.
    pub fn subscribe(&mut self, filters: &[String], now: Instant) -> Packet {
        let pkid = self.allocate_pkid();
        self.inflight.insert(
            pkid,
            Inflight {
                tracked: Tracked::Subscribe,
                stage: Awaiting::SubAck,
                since: now,
            },
        );
        let filters = filters
            .iter()
            .map(|f| SubscribeFilter::new(f.clone(), QoS::AtLeastOnce));
        let mut subscribe = Subscribe::new_many(filters);
        subscribe.pkid = pkid;
        Packet::Subscribe(subscribe)
    }

    fn publish(
        &mut self,
        tracked: Tracked,
        topic: String,
        payload: Bytes,
        qos: Qos,
        retain: bool,
        now: Instant,
    ) -> (Packet, u16) {
        let mut publish = Publish::from_bytes(topic, mqtt_qos(qos), payload);
        publish.retain = retain;
        let stage = match qos {
            // Queue rows are never QoS 0 (the queue keeps those off disk).
            Qos::AtMostOnce => return (Packet::Publish(publish), 0),
            Qos::AtLeastOnce => Awaiting::Ack,
            Qos::ExactlyOnce => Awaiting::Received,
        };
        let pkid = self.allocate_pkid();
        publish.pkid = pkid;
        self.inflight.insert(
            pkid,
            Inflight {
                tracked,
                stage,
                since: now,
            },
        );
        (Packet::Publish(publish), pkid)
    }

    fn allocate_pkid(&mut self) -> u16 {
        // The window (at most 65 000 rows plus a few others) leaves free ids, so this ends.
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

    /// Takes back a row handed out by [`Session::publish_row`] whose PUBLISH will not be sent
    /// (the store dropped the row meanwhile): its id and window slot are free again.
    pub fn cancel_row(&mut self, pkid: u16) {
        if let Some(entry) = self.inflight.get(&pkid) {
            if matches!(entry.tracked, Tracked::Row(_)) {
                self.inflight.remove(&pkid);
                self.batches.remove(&pkid);
                self.rows -= 1;
            }
        }
    }

    /// Moves the handed-out rows after `cursor` back out of the session (their PUBLISHes were not
    /// written: the packet ids could not be committed): ids and slots are freed, and the rows
    /// are handed out again, from `cursor` on.
    pub fn unsend(&mut self, pkids: &[u16], cursor: u64) {
        for pkid in pkids {
            self.cancel_row(*pkid);
        }
        self.cursor = cursor;
    }

    /// Holds the PUBREL of a row past PUBREC whose "PUBREC received" could not be committed: no
    /// answer is awaited for it (no deadline) until [`Session::release_held`].
    pub fn hold(&mut self, pkid: u16) {
        if let Some(entry) = self.inflight.get_mut(&pkid) {
            if entry.stage == Awaiting::Complete {
                entry.stage = Awaiting::Held;
            }
        }
    }

    /// The PUBREL of a held row, now that its stage is on disk; its PUBCOMP is due from `now`.
    pub fn release_held(&mut self, pkid: u16, now: Instant) -> Option<Packet> {
        let entry = self.inflight.get_mut(&pkid)?;
        if entry.stage != Awaiting::Held {
            return None;
        }
        entry.stage = Awaiting::Complete;
        entry.since = now;
        Some(Packet::PubRel(PubRel::new(pkid)))
    }

    /// PUBACK for a QoS 1 message.
    pub fn on_puback(&mut self, pkid: u16) -> Result<Released, SessionError> {
        self.complete(pkid, Awaiting::Ack, "PUBACK")
    }

    /// PUBREC for a QoS 2 message. The message stays in flight, now awaiting PUBCOMP.
    pub fn on_pubrec(&mut self, pkid: u16, now: Instant) -> Result<PubRecAction, SessionError> {
        let entry = self
            .inflight
            .get_mut(&pkid)
            .ok_or(SessionError::UnknownPacketId { pkid })?;
        let pubrel = Packet::PubRel(PubRel::new(pkid));
        match entry.stage {
            Awaiting::Received => {
                entry.stage = Awaiting::Complete;
                entry.since = now;
                Ok(match entry.tracked {
                    Tracked::Row(seq) => PubRecAction::Persist { seq, pubrel },
                    Tracked::Status | Tracked::Subscribe => PubRecAction::Send(pubrel),
                })
            }
            // A repeated PUBREC (the broker did not see our PUBREL) is answered again.
            Awaiting::Complete => Ok(PubRecAction::Send(pubrel)),
            // Its PUBREL waits for the commit; the first PUBREC already asked for it.
            Awaiting::Held => Ok(PubRecAction::Wait),
            Awaiting::Ack | Awaiting::SubAck | Awaiting::Deferred { .. } => {
                Err(SessionError::WrongStage {
                    packet: "PUBREC",
                    pkid,
                })
            }
        }
    }

    /// An MQTT 5 PUBACK (`pubrec` false) or PUBREC refusing the message of `pkid`: its flow
    /// ends there (no PUBREL follows a refusing PUBREC), and what it carried is released for the
    /// link to set aside.
    pub fn on_refused(&mut self, pkid: u16, pubrec: bool) -> Result<Released, SessionError> {
        if pubrec {
            self.complete(pkid, Awaiting::Received, "PUBREC")
        } else {
            self.complete(pkid, Awaiting::Ack, "PUBACK")
        }
    }

    /// An MQTT 5 PUBACK or PUBREC said "quota exceeded" for the message of `pkid`: it keeps its
    /// id and window slot, awaits nothing (no deadline) and is sent again by
    /// [`Session::resend_deferred`].
    pub fn defer(&mut self, pkid: u16, pubrec: bool) -> Result<(), SessionError> {
        let (expected, packet) = if pubrec {
            (Awaiting::Received, "PUBREC")
        } else {
            (Awaiting::Ack, "PUBACK")
        };
        match self.inflight.get_mut(&pkid) {
            Some(entry) if entry.stage == expected => {
                entry.stage = Awaiting::Deferred { qos2: pubrec };
                Ok(())
            }
            Some(_) => Err(SessionError::WrongStage { packet, pkid }),
            None => Err(SessionError::UnknownPacketId { pkid }),
        }
    }

    /// The ids of every deferred message, now awaiting their answer again from `now`: the link
    /// writes their PUBLISHes again.
    pub fn resend_deferred(&mut self, now: Instant) -> Vec<u16> {
        let mut pkids = Vec::new();
        for (pkid, entry) in self.inflight.iter_mut() {
            if let Awaiting::Deferred { qos2 } = entry.stage {
                entry.stage = if qos2 {
                    Awaiting::Received
                } else {
                    Awaiting::Ack
                };
                entry.since = now;
                pkids.push(*pkid);
            }
        }
        pkids
    }

    /// Caps the window at `max_inflight` for this connection (the broker's Receive Maximum).
    pub fn set_window(&mut self, max_inflight: u16) {
        self.max_inflight = usize::from(max_inflight.clamp(1, 65_000));
    }

    /// PUBCOMP for a QoS 2 message.
    pub fn on_pubcomp(&mut self, pkid: u16) -> Result<Released, SessionError> {
        self.complete(pkid, Awaiting::Complete, "PUBCOMP")
    }

    /// SUBACK: checks every filter was granted.
    pub fn on_suback(&mut self, pkid: u16, codes: &[String]) -> Result<(), SessionError> {
        match self.inflight.get(&pkid) {
            Some(e) if e.stage == Awaiting::SubAck => {}
            Some(_) => {
                return Err(SessionError::WrongStage {
                    packet: "SUBACK",
                    pkid,
                })
            }
            None => return Err(SessionError::UnknownPacketId { pkid }),
        }
        self.inflight.remove(&pkid);
        match codes.iter().position(|c| c.contains("Failure")) {
            Some(index) => Err(SessionError::SubscribeRefused {
                index,
                code: codes[index].clone(),
            }),
            None => Ok(()),
        }
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
            Tracked::Row(seq) => {
                self.rows -= 1;
                match self.batches.remove(&pkid) {
                    Some(seqs) => Released::Rows(seqs),
                    None => Released::Row(seq),
                }
            }
            Tracked::Status | Tracked::Subscribe => Released::Status,
        })
    }

    /// A PINGREQ to send now, unless one is already outstanding.
    pub fn ping(&mut self, now: Instant) -> Option<Packet> {
        if self.ping_sent.is_some() {
            return None;
        }
        self.ping_sent = Some(now);
        Some(Packet::PingReq)
    }

    pub fn on_pingresp(&mut self) {
        self.ping_sent = None;
    }

    /// When the oldest outstanding request becomes overdue; `None` when nothing is outstanding.
    pub fn deadline(&self) -> Option<Instant> {
        let oldest = self
            .inflight
            .values()
            .filter(|e| !matches!(e.stage, Awaiting::Held | Awaiting::Deferred { .. }))
            .map(|e| e.since)
            .min();
        let oldest = match (oldest, self.ping_sent) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        oldest.map(|t| t + self.response_timeout)
    }

    /// What is overdue at `now`, if anything: the link is half-open then.
    pub fn overdue(&self, now: Instant) -> Option<&'static str> {
        let late = |since: Instant| now >= since + self.response_timeout;
        if self.ping_sent.is_some_and(late) {
            return Some("PINGRESP");
        }
        self.inflight
            .values()
            .filter(|e| late(e.since))
            .find_map(|e| match e.stage {
                Awaiting::Ack => Some("PUBACK"),
                Awaiting::Received => Some("PUBREC"),
                Awaiting::Complete => Some("PUBCOMP"),
                Awaiting::SubAck => Some("SUBACK"),
                Awaiting::Held | Awaiting::Deferred { .. } => None,
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

    const TIMEOUT: Duration = Duration::from_secs(10);

    fn new(window: u16) -> Session {
        Session::new(window, TIMEOUT)
    }

    fn pkid_of(packet: &Packet) -> u16 {
        match packet {
            Packet::Publish(p) => p.pkid,
            Packet::PubRel(p) => p.pkid,
            Packet::Subscribe(p) => p.pkid,
            other => panic!("unexpected packet {other:?}"),
        }
    }

    fn row(session: &mut Session, seq: u64, qos: Qos) -> u16 {
        let (packet, pkid) = session
            .publish_row(
                seq,
                format!("t/{seq}"),
                Bytes::from_static(b"{}"),
                qos,
                false,
                Instant::now(),
            )
            .unwrap();
        assert_eq!(pkid_of(&packet), pkid);
        pkid
    }

    #[test]
    fn publish_then_puback_releases_the_row() {
        let mut s = new(8);
        let pkid = row(&mut s, 7, Qos::AtLeastOnce);
        assert_eq!(s.inflight(), 1);
        assert_eq!(s.on_puback(pkid), Ok(Released::Row(7)));
        assert_eq!(s.inflight(), 0);
        assert_eq!(
            s.on_puback(pkid),
            Err(SessionError::UnknownPacketId { pkid })
        );
    }

    #[test]
    fn a_batch_takes_one_id_and_slot_and_its_puback_releases_every_row() {
        let mut s = new(2);
        let now = Instant::now();
        let (packet, pkid) = s
            .publish_rows(vec![3, 5, 9], "t/d".into(), Bytes::from_static(b"{}"), now)
            .unwrap();
        assert_eq!(pkid_of(&packet), pkid);
        assert_eq!((s.inflight(), s.room()), (1, 1));
        let single = row(&mut s, 10, Qos::AtLeastOnce);
        assert_eq!(s.on_puback(pkid), Ok(Released::Rows(vec![3, 5, 9])));
        assert_eq!(s.on_puback(single), Ok(Released::Row(10)));
        // A cancelled batch and a new connection forget their rows.
        let (_, cancelled) = s
            .publish_rows(vec![11, 12], "t/d".into(), Bytes::new(), now)
            .unwrap();
        s.cancel_row(cancelled);
        assert_eq!(s.room(), 2);
        let (_, lost) = s
            .publish_rows(vec![13, 14], "t/d".into(), Bytes::new(), now)
            .unwrap();
        s.on_connected();
        assert_eq!(
            s.on_puback(lost),
            Err(SessionError::UnknownPacketId { pkid: lost })
        );
    }

    #[test]
    fn publish_qos2_then_pubrec_asks_to_persist_then_pubcomp_releases() {
        let mut s = new(8);
        let pkid = row(&mut s, 3, Qos::ExactlyOnce);
        // PUBCOMP or PUBACK before PUBREC is a protocol violation and releases nothing.
        assert_eq!(
            s.on_pubcomp(pkid),
            Err(SessionError::WrongStage {
                packet: "PUBCOMP",
                pkid
            })
        );
        assert!(s.on_puback(pkid).is_err());
        let rel = Packet::PubRel(PubRel::new(pkid));
        assert_eq!(
            s.on_pubrec(pkid, Instant::now()).unwrap(),
            PubRecAction::Persist {
                seq: 3,
                pubrel: rel.clone()
            }
        );
        assert_eq!(s.inflight(), 1);
        assert_eq!(s.on_pubcomp(pkid), Ok(Released::Row(3)));
        assert_eq!(s.inflight(), 0);
    }

    #[test]
    fn repeated_pubrec_resends_pubrel_without_persisting_again() {
        let mut s = new(8);
        let pkid = row(&mut s, 3, Qos::ExactlyOnce);
        s.on_pubrec(pkid, Instant::now()).unwrap();
        assert_eq!(
            s.on_pubrec(pkid, Instant::now()).unwrap(),
            PubRecAction::Send(Packet::PubRel(PubRel::new(pkid)))
        );
    }

    #[test]
    fn pubrec_for_qos1_is_a_wrong_stage() {
        let mut s = new(8);
        let pkid = row(&mut s, 1, Qos::AtLeastOnce);
        assert!(matches!(
            s.on_pubrec(pkid, Instant::now()),
            Err(SessionError::WrongStage { .. })
        ));
    }

    #[test]
    fn window_full_refuses_rows_but_not_status() {
        let mut s = new(2);
        row(&mut s, 1, Qos::AtLeastOnce);
        row(&mut s, 2, Qos::AtLeastOnce);
        assert_eq!(s.room(), 0);
        assert_eq!(
            s.publish_row(
                3,
                "t".into(),
                Bytes::new(),
                Qos::AtLeastOnce,
                false,
                Instant::now()
            ),
            Err(SessionError::WindowFull)
        );
        assert_eq!(s.cursor(), 2);
        let status = s.publish_status("p/status".into(), Bytes::new(), Instant::now());
        assert!(s.status_pending());
        assert_eq!(s.on_puback(pkid_of(&status)), Ok(Released::Status));
        assert_eq!(s.room(), 0);
    }

    #[test]
    fn cancel_row_frees_its_id_and_slot() {
        let mut s = new(1);
        let pkid = row(&mut s, 1, Qos::ExactlyOnce);
        assert_eq!(s.room(), 0);
        s.cancel_row(pkid);
        assert_eq!((s.room(), s.inflight()), (1, 0));
        assert_eq!(
            s.on_pubrec(pkid, Instant::now()),
            Err(SessionError::UnknownPacketId { pkid })
        );
    }

    #[test]
    fn unsend_frees_ids_and_slots_and_hands_the_rows_out_again() {
        let mut s = new(3);
        row(&mut s, 4, Qos::AtLeastOnce);
        let b = row(&mut s, 6, Qos::ExactlyOnce);
        let c = row(&mut s, 7, Qos::ExactlyOnce);
        assert_eq!(s.room(), 0);
        s.unsend(&[b, c], 4);
        assert_eq!((s.room(), s.inflight(), s.cursor()), (2, 1, 4));
        assert!(s.on_pubrec(b, Instant::now()).is_err(), "id {b} is free");
        // The same rows can be handed out again, in seq order.
        row(&mut s, 6, Qos::ExactlyOnce);
        assert_eq!(s.cursor(), 6);
    }

    #[test]
    fn a_held_pubrel_has_no_deadline_until_released() {
        let mut s = new(4);
        let t0 = Instant::now();
        let (_, pkid) = s
            .publish_row(1, "t".into(), Bytes::new(), Qos::ExactlyOnce, false, t0)
            .unwrap();
        assert!(matches!(
            s.on_pubrec(pkid, t0),
            Ok(PubRecAction::Persist { seq: 1, .. })
        ));
        s.hold(pkid);
        assert_eq!(s.deadline(), None, "nothing is awaited from the broker");
        assert_eq!(s.overdue(t0 + TIMEOUT * 100), None);
        assert_eq!((s.inflight(), s.room()), (1, 3), "id and slot stay taken");
        // A repeated PUBREC neither persists again nor sends the PUBREL early.
        assert_eq!(s.on_pubrec(pkid, t0), Ok(PubRecAction::Wait));
        assert!(s.on_pubcomp(pkid).is_err(), "no PUBREL was sent");
        let t1 = t0 + Duration::from_secs(60);
        assert_eq!(
            s.release_held(pkid, t1),
            Some(Packet::PubRel(PubRel::new(pkid)))
        );
        assert_eq!(s.release_held(pkid, t1), None, "released once");
        assert_eq!(s.deadline(), Some(t1 + TIMEOUT));
        assert_eq!(s.on_pubcomp(pkid), Ok(Released::Row(1)));
    }

    #[test]
    fn connected_forgets_inflight_and_rewinds_cursor() {
        let mut s = new(4);
        let pkid = row(&mut s, 10, Qos::AtLeastOnce);
        s.on_connected();
        assert_eq!(s.cursor(), 0);
        assert_eq!(s.room(), 4);
        // An acknowledgement from the old connection can no longer release anything.
        assert!(s.on_puback(pkid).is_err());
    }

    #[test]
    fn restore_published_row_republishes_with_original_id_and_dup() {
        let mut s = new(4);
        s.on_connected();
        let r = s.restore(42, 17, Qos::ExactlyOnce, false, Instant::now());
        assert_eq!(r, Ok(Restored::Republish { pkid: 17 }));
        match s.republish(17, "t".into(), Bytes::new(), Qos::ExactlyOnce, false) {
            Packet::Publish(p) => {
                assert!(p.dup);
                assert_eq!(p.pkid, 17);
                assert_eq!(p.qos, QoS::ExactlyOnce);
            }
            other => panic!("{other:?}"),
        }
        // The restored row continues its handshake: PUBREC → persist → PUBCOMP releases it.
        assert!(matches!(
            s.on_pubrec(17, Instant::now()),
            Ok(PubRecAction::Persist { seq: 42, .. })
        ));
        assert_eq!(s.on_pubcomp(17), Ok(Released::Row(42)));
    }

    #[test]
    fn restore_received_row_resends_pubrel() {
        let mut s = new(4);
        let r = s.restore(5, 9, Qos::ExactlyOnce, true, Instant::now());
        assert_eq!(r, Ok(Restored::Release(Packet::PubRel(PubRel::new(9)))));
        assert_eq!(s.on_pubcomp(9), Ok(Released::Row(5)));
    }

    #[test]
    fn restore_reserves_ids_and_counts_in_the_window() {
        let mut s = new(2);
        s.last_pkid = 0;
        s.restore(1, 1, Qos::AtLeastOnce, false, Instant::now())
            .unwrap();
        assert_eq!(s.room(), 1);
        // Id 1 is taken by the restored row: a new row gets 2.
        assert_eq!(row(&mut s, 2, Qos::AtLeastOnce), 2);
        assert_eq!(
            s.restore(3, 2, Qos::AtLeastOnce, false, Instant::now()),
            Err(SessionError::DuplicateStoredId { pkid: 2, seq: 3 })
        );
    }

    #[test]
    fn packet_ids_wrap_and_skip_ids_in_use() {
        let mut s = new(3);
        s.last_pkid = u16::MAX - 1;
        let a = row(&mut s, 1, Qos::AtLeastOnce);
        let b = row(&mut s, 2, Qos::AtLeastOnce);
        assert_eq!((a, b), (u16::MAX, 1));
        s.on_puback(b).unwrap();
        s.last_pkid = u16::MAX - 1;
        // u16::MAX is still in flight, so the next id after wrapping is 1 again.
        assert_eq!(row(&mut s, 3, Qos::AtLeastOnce), 1);
    }

    #[test]
    fn ping_once_until_pingresp() {
        let mut s = new(1);
        let t0 = Instant::now();
        assert_eq!(s.ping(t0), Some(Packet::PingReq));
        assert_eq!(s.ping(t0), None);
        assert_eq!(s.deadline(), Some(t0 + TIMEOUT));
        s.on_pingresp();
        assert_eq!(s.deadline(), None);
    }

    #[test]
    fn overdue_names_the_missing_answer() {
        let mut s = new(4);
        let t0 = Instant::now();
        let (_, pkid) = s
            .publish_row(1, "t".into(), Bytes::new(), Qos::ExactlyOnce, false, t0)
            .unwrap();
        assert_eq!(s.deadline(), Some(t0 + TIMEOUT));
        assert_eq!(s.overdue(t0 + TIMEOUT - Duration::from_millis(1)), None);
        assert_eq!(s.overdue(t0 + TIMEOUT), Some("PUBREC"));
        // The PUBREC restarts the clock for the PUBCOMP.
        let t1 = t0 + Duration::from_secs(3);
        s.on_pubrec(pkid, t1).unwrap();
        assert_eq!(s.deadline(), Some(t1 + TIMEOUT));
        assert_eq!(s.overdue(t1 + TIMEOUT), Some("PUBCOMP"));
    }

    #[test]
    fn subscribe_then_suback_checks_every_filter() {
        let mut s = new(1);
        let p = s.subscribe(&["a/+/set".into(), "b".into()], Instant::now());
        let pkid = pkid_of(&p);
        assert_eq!(s.room(), 1, "a subscribe is not a row");
        let refused = ["Success(AtLeastOnce)".into(), "Failure".into()];
        assert!(matches!(
            s.on_suback(pkid, &refused),
            Err(SessionError::SubscribeRefused { index: 1, .. })
        ));
        let p = s.subscribe(&["a".into()], Instant::now());
        assert_eq!(
            s.on_suback(pkid_of(&p), &["Success(AtLeastOnce)".into()]),
            Ok(())
        );
        assert_eq!(s.inflight(), 0);
    }

    #[test]
    fn a_refusal_releases_the_rows_of_its_stage_and_a_deferral_keeps_them_without_a_deadline() {
        let mut s = new(4);
        let t0 = Instant::now();
        let a = row(&mut s, 1, Qos::AtLeastOnce);
        let b = row(&mut s, 2, Qos::ExactlyOnce);
        assert!(
            s.on_refused(a, true).is_err(),
            "a PUBREC cannot refuse a QoS 1 message"
        );
        assert_eq!(s.on_refused(a, false), Ok(Released::Row(1)));
        assert_eq!(s.on_refused(b, true), Ok(Released::Row(2)));
        assert_eq!((s.inflight(), s.room()), (0, 4));
        let (_, c) = s
            .publish_rows(vec![3, 4], "t/d".into(), Bytes::new(), t0)
            .unwrap();
        s.defer(c, false).unwrap();
        assert_eq!((s.deadline(), s.room()), (None, 3));
        assert!(s.on_puback(c).is_err(), "nothing is awaited while deferred");
        let t1 = t0 + Duration::from_secs(5);
        assert_eq!(s.resend_deferred(t1), vec![c]);
        assert_eq!(s.deadline(), Some(t1 + TIMEOUT));
        assert_eq!(s.on_puback(c), Ok(Released::Rows(vec![3, 4])));
    }

    #[test]
    fn set_window_caps_the_room() {
        let mut s = new(64);
        s.set_window(3);
        row(&mut s, 1, Qos::AtLeastOnce);
        assert_eq!(s.room(), 2);
    }

    proptest! {
        /// Whatever order acknowledgements arrive in, each row is released exactly once and
        /// in-flight packet ids are always distinct.
        #[test]
        fn every_row_released_exactly_once(
            window in 1u16..16,
            n in 1u64..200,
            order_seed in any::<u64>(),
        ) {
            let mut s = new(window);
            let mut rng = fastrand::Rng::with_seed(order_seed);
            let mut pending: Vec<u16> = Vec::new();
            let mut released = Vec::new();
            let mut next = 1u64;
            while released.len() < n as usize {
                if next <= n && s.room() > 0 {
                    let qos = if next % 3 == 0 { Qos::ExactlyOnce } else { Qos::AtLeastOnce };
                    let pkid = row(&mut s, next, qos);
                    prop_assert!(!pending.contains(&pkid));
                    pending.push(pkid);
                    next += 1;
                    continue;
                }
                let i = rng.usize(..pending.len());
                let pkid = pending[i];
                let result = match s.on_puback(pkid) {
                    Ok(r) => r,
                    Err(_) => {
                        s.on_pubrec(pkid, Instant::now()).unwrap();
                        s.on_pubcomp(pkid).unwrap()
                    }
                };
                pending.swap_remove(i);
                if let Released::Row(seq) = result { released.push(seq); }
            }
            released.sort_unstable();
            prop_assert_eq!(released, (1..=n).collect::<Vec<_>>());
            prop_assert_eq!(s.inflight(), 0);
        }
    }
}
