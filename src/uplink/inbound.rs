//! Incoming PUBLISHes (commands) with manual acknowledgement: the one intake path of every
//! connection that takes commands (the cloud uplink and the on-site broker's client).
//!
//! Each connection subscribes to [`Inbound::filters`] at QoS 1 and offers every incoming
//! PUBLISH to its [`Inflow`], which decides for both connections alike: QoS 0 has nothing to
//! acknowledge, a QoS 2 PUBLISH — which a broker never sends on a QoS 1 subscription — is
//! logged and left alone, an oversized one comes without its payload, and one that nothing
//! subscribed is acknowledged and dropped. The PUBLISHes of one read go to the command intake
//! as one batch ([`Inflow::hand_over`], [`Inbound::hand_over`]); the
//! intake commits them to the durable command inbox (`queue/inbox.rs`) and then calls
//! [`AckToken::ack`] on each, and only then is the PUBACK written. So a crash in between makes
//! the broker redeliver the command, and a command acknowledged to the broker is on disk.
//!
//! MQTT 3.1.1 §4.6 wants acknowledgements in the order the messages arrived, so [`AckOrder`]
//! (pure) releases a PUBACK only when every earlier message of the connection was acked too.
//! Tokens of an earlier connection are ignored: the broker redelivers those messages anyway.
//!
//! # A message that is never acknowledged
//! The intake acknowledges everything it can commit — including commands it refuses (a full
//! inbox: `busy`) — so nothing is left unacknowledged for being many or large. A commit that
//! fails (a full disk) does not give the commands up either: the intake holds their tokens and
//! tries again, so their PUBACKs only wait (`commands/intake.rs`). Only what the intake gives up
//! — beyond what it may hold, or when the queue is closed — stays unacknowledged for good, and
//! one message left unacknowledged holds back the PUBACK of every later one on its connection,
//! while a broker redelivers only on a new connection. So a token dropped without
//! [`AckToken::ack`] reports itself **abandoned** ([`Settlement`]), and [`AckOrder::settle`]
//! answers [`Settled::Jammed`] for one of the current connection: the connection's owner then
//! tears it down, and the broker redelivers the message on the next one (persistent session).
//! The redial goes through the owner's backoff, and a teardown for a jam does not count as a
//! healthy connection (the next CONNACK does not reset the backoff), so a failure that persists
//! redials at the backoff's ceiling rather than in a loop.
//!
//! Shutdown drops the tokens of the commands under way: the owner ignores abandonments once
//! its cancellation fired, and [`AckToken::leave`] gives a message up without a report (the
//! intake is gone, so a new connection would not help).

use std::collections::VecDeque;

use bytes::Bytes;
use rumqttc::mqttbytes::v4::{Packet, PubAck, Publish};
use rumqttc::mqttbytes::QoS;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use super::connection::Request;
pub use super::connection::MAX_INCOMING_PACKET;
use super::connection::{OversizedPublish, Received};
use super::UplinkError;

/// How many read batches may wait for the intake. The intake takes every waiting batch into one
/// commit, so this only fills while commits stall (a stuck disk); the connection then waits for
/// room instead of holding an unbounded backlog in memory.
pub const INTAKE_BACKLOG: usize = 64;

/// The intake side of the seam.
#[derive(Debug, Clone)]
pub struct Inbound {
    /// Topic filters subscribed at QoS 1 on every connection.
    pub filters: Vec<String>,
    /// Where the incoming PUBLISHes of each read go, as one batch.
    pub tx: mpsc::Sender<Vec<Incoming>>,
    /// Largest packet the connection reads whole ([`MAX_INCOMING_PACKET`] for commands); a
    /// longer PUBLISH comes without its payload.
    pub max_packet: usize,
}

impl Inbound {
    /// Hands the PUBLISHes of one read to the intake. Waits only while the intake is
    /// [`INTAKE_BACKLOG`] batches behind; returns `false` once the intake is gone (shutdown).
    /// A batch that cannot be handed over is dropped: its tokens report it abandoned, unless
    /// `cancel` fired (the broker redelivers it to the next start).
    pub async fn hand_over(&self, batch: Vec<Incoming>, cancel: &CancellationToken) -> bool {
        if batch.is_empty() {
            return true;
        }
        let sent = tokio::select! {
            sent = self.tx.send(batch) => sent.map_err(|e| e.0),
            () = cancel.cancelled() => return false,
        };
        match sent {
            Ok(()) => true,
            Err(batch) => {
                if !cancel.is_cancelled() {
                    tracing::error!(
                        commands = batch.len(),
                        "the command intake is gone; incoming commands left unacknowledged"
                    );
                }
                batch
                    .into_iter()
                    .filter_map(|i| i.ack)
                    .for_each(AckToken::leave);
                false
            }
        }
    }
}

/// One incoming PUBLISH.
#[derive(Debug)]
pub struct Incoming {
    pub topic: String,
    /// Empty when `oversized`.
    pub payload: Bytes,
    /// Whether the broker says it may have delivered this before (DUP).
    pub dup: bool,
    /// Delivered as a retained message (the broker sets it only for a retained message sent
    /// at subscribe, never for one forwarded live).
    pub retained: bool,
    /// Too large to read: the payload's length, discarded unread.
    pub oversized: Option<u64>,
    /// `None` for QoS 0 (nothing to acknowledge).
    pub ack: Option<AckToken>,
    /// MQTT 5: the PUBLISH's request properties (response topic, correlation, expiry).
    pub request: Option<Request>,
}

/// A connection owner's side of the seam: the intake it feeds (none when nothing is subscribed),
/// the order its PUBLISHes are acknowledged in, and the settlements of their tokens. The uplink
/// and the on-site broker's client offer every incoming PUBLISH here, so both decide alike.
#[derive(Debug)]
pub struct Inflow {
    inbound: Option<Inbound>,
    acks: AckOrder,
    /// Handed to the [`AckToken`]s; their settlements come back on `done_rx`.
    done_tx: mpsc::UnboundedSender<Settlement>,
    done_rx: mpsc::UnboundedReceiver<Settlement>,
    /// The commands of the read being handled, for [`Inflow::hand_over`].
    batch: Vec<Incoming>,
}

impl Inflow {
    pub fn new(inbound: Option<Inbound>) -> Inflow {
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        Inflow {
            inbound,
            acks: AckOrder::default(),
            done_tx,
            done_rx,
            batch: Vec::new(),
        }
    }

    /// Largest packet to read whole on this connection.
    pub fn max_packet(&self) -> usize {
        self.inbound
            .as_ref()
            .map_or(MAX_INCOMING_PACKET, |i| i.max_packet)
    }

    /// The topic filters to subscribe at every connect; empty when nothing takes commands.
    pub fn filters(&self) -> &[String] {
        self.inbound.as_ref().map_or(&[], |i| i.filters.as_slice())
    }

    /// A new connection (see [`AckOrder::on_connected`]): returns whether the previous one was
    /// given up for a jam, so the caller keeps its backoff growing.
    pub fn on_connected(&mut self) -> bool {
        self.acks.on_connected()
    }

    /// One incoming PUBLISH of the current read, whole or oversized; returns the packet to
    /// write at once, if any.
    /// - QoS 2: a broker never sends one on a QoS 1 subscription, and a new connection would
    ///   bring it back, so it is logged and left unacknowledged (answering PUBREC would start a
    ///   PUBREL exchange neither connection takes part in).
    /// - Nothing subscribed (a leftover of an earlier configuration's persistent session): QoS 1
    ///   is acknowledged at once and dropped, QoS 0 dropped.
    /// - Otherwise the command joins the read's batch ([`receive`]).
    pub fn offer(&mut self, publish: Result<Publish, OversizedPublish>) -> Option<Packet> {
        let (topic, qos, pkid) = match &publish {
            Ok(p) => (&p.topic, p.qos, p.pkid),
            Err(o) => (&o.topic, o.qos, o.pkid),
        };
        match (qos, &self.inbound) {
            (QoS::ExactlyOnce, _) => {
                tracing::warn!(%topic, "ignoring a qos 2 publish (commands are subscribed at qos 1)");
                None
            }
            (_, None) => {
                tracing::debug!(%topic, "ignoring unexpected incoming publish");
                (qos == QoS::AtLeastOnce).then(|| Packet::PubAck(PubAck::new(pkid)))
            }
            (_, Some(_)) => {
                self.batch
                    .push(receive(publish, &mut self.acks, &self.done_tx));
                None
            }
        }
    }

    /// Offers `received` when it is a PUBLISH (whole or oversized), adding what must be
    /// written at once to `out`; returns every other packet, for the connection's session.
    pub fn take(&mut self, received: Received, out: &mut Vec<Packet>) -> Option<Packet> {
        let publish = match received {
            Received::Packet(Packet::Publish(publish)) => Ok(publish),
            Received::Packet(other) => return Some(other),
            Received::Oversized(oversized) => Err(oversized),
            // The connection's owner settles refusals before offering packets here; one that
            // reaches the intake has nothing to do with commands.
            Received::Refused(refusal) => {
                tracing::debug!(?refusal, "a refusal is not a command");
                return None;
            }
            Received::Request(publish, request) => {
                let before = self.batch.len();
                out.extend(self.offer(Ok(publish)));
                if self.batch.len() > before {
                    if let Some(incoming) = self.batch.last_mut() {
                        incoming.request = Some(request);
                    }
                }
                return None;
            }
        };
        out.extend(self.offer(publish));
        None
    }

    /// Hands the commands of the current read to the intake as one batch
    /// ([`Inbound::hand_over`]).
    pub async fn hand_over(&mut self, cancel: &CancellationToken) {
        let batch = std::mem::take(&mut self.batch);
        if let Some(inbound) = &self.inbound {
            inbound.hand_over(batch, cancel).await;
        }
    }

    /// Waits for the next settlement of a token; returns the PUBACKs it releases, or
    /// [`UplinkError::Jammed`] when the connection must be renewed. Once `cancel` fired, an
    /// abandonment is shutdown dropping the tokens under way: nothing to do (the broker
    /// redelivers those messages to the next run).
    pub async fn settled(
        &mut self,
        cancel: &CancellationToken,
    ) -> Result<Vec<Packet>, UplinkError> {
        // Never `None`: `self` holds a sender.
        let Some(settlement) = self.done_rx.recv().await else {
            return Ok(Vec::new());
        };
        match self.acks.settle(settlement) {
            Settled::PubAck(pkids) => Ok(pubacks(pkids)),
            Settled::Jammed if cancel.is_cancelled() => Ok(Vec::new()),
            Settled::Jammed => Err(UplinkError::Jammed),
            Settled::Stale => Ok(Vec::new()),
        }
    }

    /// The PUBACKs released by the settlements already reported (on shutdown: commands the
    /// handler finished are acknowledged, so the broker does not redeliver them).
    pub fn settled_now(&mut self) -> Vec<Packet> {
        let mut packets = Vec::new();
        while let Ok(settlement) = self.done_rx.try_recv() {
            if let Settled::PubAck(pkids) = self.acks.settle(settlement) {
                packets.extend(pubacks(pkids));
            }
        }
        packets
    }
}

fn pubacks(pkids: Vec<u16>) -> Vec<Packet> {
    pkids
        .into_iter()
        .map(|pkid| Packet::PubAck(PubAck::new(pkid)))
        .collect()
}

/// A subscribed QoS 0 or QoS 1 PUBLISH, read whole or oversized, as the intake gets it (QoS 2
/// never gets here: [`Inflow::offer`]).
fn receive(
    publish: Result<Publish, OversizedPublish>,
    acks: &mut AckOrder,
    settlements: &mpsc::UnboundedSender<Settlement>,
) -> Incoming {
    let (topic, payload, qos, pkid, dup, retained, oversized) = match publish {
        Ok(p) => (p.topic, p.payload, p.qos, p.pkid, p.dup, p.retain, None),
        Err(o) => (
            o.topic,
            Bytes::new(),
            o.qos,
            o.pkid,
            o.dup,
            o.retain,
            Some(o.payload_len),
        ),
    };
    let ack =
        (qos != QoS::AtMostOnce).then(|| AckToken::new(settlements.clone(), acks.on_publish(pkid)));
    Incoming {
        topic,
        payload,
        dup,
        retained,
        oversized,
        ack,
        request: None,
    }
}

/// Acknowledges one incoming QoS 1 PUBLISH once its result is committed. Dropped without
/// [`AckToken::ack`], it reports the message abandoned (see the module doc).
#[derive(Debug)]
pub struct AckToken {
    tx: mpsc::UnboundedSender<Settlement>,
    completion: Completion,
    /// Whether a settlement was reported (or deliberately not): `Drop` then stays quiet.
    settled: bool,
}

/// Which message of which connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Completion {
    pub connection: u64,
    pub ticket: u64,
}

/// What became of one message, as its token reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settlement {
    /// Handled and its result committed: PUBACK it (in receive order).
    Acked(Completion),
    /// Dropped without an ack: it will never be acknowledged on this connection.
    Abandoned(Completion),
}

impl AckToken {
    /// A token for message `completion`, reported on `tx`.
    pub(crate) fn new(tx: mpsc::UnboundedSender<Settlement>, completion: Completion) -> AckToken {
        AckToken {
            tx,
            completion,
            settled: false,
        }
    }

    /// Reports the message handled and its result committed. If the uplink is gone or the
    /// connection changed meanwhile, the broker redelivers it instead.
    pub fn ack(mut self) {
        self.settled = true;
        let _ = self.tx.send(Settlement::Acked(self.completion));
    }

    /// Gives the message up without a report: it stays unacknowledged until its connection
    /// ends. Only for when no handler is left to take a redelivery (shutdown).
    pub fn leave(mut self) {
        self.settled = true;
    }
}

impl Drop for AckToken {
    fn drop(&mut self) {
        if !self.settled {
            // The owner may be gone (shutdown): then nobody needs to know.
            let _ = self.tx.send(Settlement::Abandoned(self.completion));
        }
    }
}

/// What the connection's owner must do after a [`Settlement`].
#[derive(Debug, PartialEq, Eq)]
pub enum Settled {
    /// PUBACK these packet ids now, in this order (none while an earlier message is handled).
    PubAck(Vec<u16>),
    /// A message of this connection was abandoned: every later PUBACK waits behind it, so
    /// the connection must be renewed for the broker to redeliver it.
    Jammed,
    /// Of an earlier connection (or unknown): nothing to do.
    Stale,
}

/// Where one message of the current connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Handling,
    Acked,
    Abandoned,
}

/// Receive-order acknowledgement bookkeeping of one connection (pure).
#[derive(Debug, Default)]
pub struct AckOrder {
    connection: u64,
    next_ticket: u64,
    /// (ticket, packet id, state) in receive order.
    pending: VecDeque<(u64, u16, State)>,
    /// Whether this connection answered [`Settled::Jammed`] (and so is being torn down).
    jammed: bool,
}

impl AckOrder {
    /// A new connection: everything pending belongs to the old one and is redelivered.
    /// Returns whether the previous connection was given up for a jam: then this one is no
    /// sign of recovery (the redelivered message may fail again), and the caller keeps its
    /// backoff growing instead of resetting it.
    pub fn on_connected(&mut self) -> bool {
        self.connection += 1;
        self.pending.clear();
        std::mem::take(&mut self.jammed)
    }

    /// Records a QoS 1 PUBLISH; its ticket goes into the [`AckToken`].
    pub fn on_publish(&mut self, pkid: u16) -> Completion {
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        self.pending.push_back((ticket, pkid, State::Handling));
        Completion {
            connection: self.connection,
            ticket,
        }
    }

    /// Records what a token reported; says what to do about it.
    pub fn settle(&mut self, settlement: Settlement) -> Settled {
        let (done, state) = match settlement {
            Settlement::Acked(done) => (done, State::Acked),
            Settlement::Abandoned(done) => (done, State::Abandoned),
        };
        if done.connection != self.connection {
            return Settled::Stale;
        }
        let Some(entry) = self.pending.iter_mut().find(|e| e.0 == done.ticket) else {
            return Settled::Stale;
        };
        entry.2 = state;
        if state == State::Abandoned {
            self.jammed = true;
            return Settled::Jammed;
        }
        let mut ready = Vec::new();
        while let Some(&(_, pkid, State::Acked)) = self.pending.front() {
            ready.push(pkid);
            self.pending.pop_front();
        }
        Settled::PubAck(ready)
    }

    /// Messages of this connection not yet PUBACKed.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }
}

/// One intake side for several (the cloud's commands and its configuration topics): the
/// returned [`Inbound`] subscribes every route's filters, and a task hands each PUBLISH to the
/// first route with a filter that matches its topic, keeping the order within each route. One
/// that matches none (it cannot, short of a broker bug) is acknowledged and dropped. The task
/// ends when the connection drops its side.
pub fn route(routes: Vec<Inbound>) -> (Inbound, tokio::task::JoinHandle<()>) {
    let (tx, mut rx) = mpsc::channel::<Vec<Incoming>>(INTAKE_BACKLOG);
    let filters = routes.iter().flat_map(|r| r.filters.clone()).collect();
    let max_packet = routes
        .iter()
        .map(|r| r.max_packet)
        .max()
        .unwrap_or(MAX_INCOMING_PACKET);
    let task = tokio::spawn(async move {
        while let Some(batch) = rx.recv().await {
            let mut split: Vec<Vec<Incoming>> = routes.iter().map(|_| Vec::new()).collect();
            for incoming in batch {
                let to = routes.iter().position(|r| {
                    r.filters
                        .iter()
                        .any(|filter| topic_matches(filter, &incoming.topic))
                });
                match to {
                    Some(index) => split[index].push(incoming),
                    None => incoming.ack.into_iter().for_each(AckToken::ack),
                }
            }
            for (route, batch) in routes.iter().zip(split) {
                if batch.is_empty() {
                    continue;
                }
                if let Err(gone) = route.tx.send(batch).await {
                    // Its intake is gone (shutdown): the broker redelivers to the next start.
                    gone.0
                        .into_iter()
                        .filter_map(|i| i.ack)
                        .for_each(AckToken::leave);
                }
            }
        }
    });
    let inbound = Inbound {
        filters,
        tx,
        max_packet,
    };
    (inbound, task)
}

/// Whether MQTT topic filter `filter` (`+` one level, `#` the rest) matches `topic`.
pub fn topic_matches(filter: &str, topic: &str) -> bool {
    let mut levels = topic.split('/');
    for part in filter.split('/') {
        match (part, levels.next()) {
            ("#", _) => return true,
            ("+", Some(_)) => {}
            (part, Some(level)) if part == level => {}
            _ => return false,
        }
    }
    levels.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acked(c: Completion) -> Settlement {
        Settlement::Acked(c)
    }

    #[test]
    fn acks_leave_in_receive_order() {
        let mut order = AckOrder::default();
        order.on_connected();
        let a = order.on_publish(10);
        let b = order.on_publish(11);
        let c = order.on_publish(12);
        assert_eq!(
            order.settle(acked(b)),
            Settled::PubAck(vec![]),
            "b waits for a"
        );
        assert_eq!(order.pending(), 3);
        assert_eq!(order.settle(acked(a)), Settled::PubAck(vec![10, 11]));
        assert_eq!(order.settle(acked(c)), Settled::PubAck(vec![12]));
        assert_eq!(order.pending(), 0);
    }

    #[test]
    fn completion_of_an_old_connection_is_stale() {
        let mut order = AckOrder::default();
        order.on_connected();
        let old = order.on_publish(1);
        order.on_connected();
        assert_eq!(
            order.pending(),
            0,
            "a new connection forgets the old one's messages"
        );
        let new = order.on_publish(1);
        assert_eq!(order.settle(acked(old)), Settled::Stale);
        assert_eq!(order.settle(acked(new)), Settled::PubAck(vec![1]));
    }

    #[test]
    fn an_abandoned_message_jams_the_connection_and_holds_back_later_acks() {
        let mut order = AckOrder::default();
        order.on_connected();
        let a = order.on_publish(1);
        let b = order.on_publish(2);
        assert_eq!(order.settle(Settlement::Abandoned(a)), Settled::Jammed);
        assert_eq!(
            order.settle(acked(b)),
            Settled::PubAck(vec![]),
            "nothing passes an abandoned message"
        );
        assert_eq!(order.pending(), 2);
    }

    #[test]
    fn an_abandoned_message_behind_acked_ones_lets_those_go_first() {
        let mut order = AckOrder::default();
        order.on_connected();
        let a = order.on_publish(1);
        let b = order.on_publish(2);
        assert_eq!(order.settle(acked(a)), Settled::PubAck(vec![1]));
        assert_eq!(order.settle(Settlement::Abandoned(b)), Settled::Jammed);
    }

    #[test]
    fn only_the_connection_after_a_jam_is_reported_as_such() {
        let mut order = AckOrder::default();
        assert!(!order.on_connected(), "the first connection");
        let a = order.on_publish(1);
        assert_eq!(order.settle(acked(a)), Settled::PubAck(vec![1]));
        assert!(
            !order.on_connected(),
            "after a connection lost for another reason"
        );
        let b = order.on_publish(2);
        assert_eq!(order.settle(Settlement::Abandoned(b)), Settled::Jammed);
        assert!(order.on_connected(), "after a jam");
        let c = order.on_publish(2);
        assert_eq!(order.settle(acked(c)), Settled::PubAck(vec![2]));
        assert!(!order.on_connected(), "the redelivery went through");
    }

    #[test]
    fn an_abandoned_message_of_an_old_connection_is_stale() {
        let mut order = AckOrder::default();
        order.on_connected();
        let old = order.on_publish(1);
        order.on_connected();
        let new = order.on_publish(1);
        assert_eq!(order.settle(Settlement::Abandoned(old)), Settled::Stale);
        assert_eq!(order.settle(acked(new)), Settled::PubAck(vec![1]));
    }

    fn publish(qos: QoS, pkid: u16) -> Result<Publish, OversizedPublish> {
        let mut p = Publish::new("p/d/x/set", qos, "1");
        p.pkid = pkid;
        Ok(p)
    }

    #[test]
    fn both_connections_decide_every_qos_alike() {
        let (tx, mut rx) = mpsc::channel(1);
        let mut taking = Inflow::new(Some(Inbound {
            filters: vec!["p/+/+/set".into()],
            tx,
            max_packet: MAX_INCOMING_PACKET,
        }));
        let mut leftover = Inflow::new(None);
        for inflow in [&mut taking, &mut leftover] {
            inflow.on_connected();
            assert_eq!(
                inflow.offer(publish(QoS::ExactlyOnce, 7)),
                None,
                "qos 2 is left unanswered, subscribed or not"
            );
        }
        assert_eq!(
            leftover.offer(publish(QoS::AtLeastOnce, 8)),
            Some(Packet::PubAck(PubAck::new(8))),
            "unsubscribed qos 1 is acknowledged at once"
        );
        assert_eq!(leftover.offer(publish(QoS::AtMostOnce, 0)), None);
        assert!(leftover.batch.is_empty() && leftover.filters().is_empty());

        assert_eq!(taking.offer(publish(QoS::AtLeastOnce, 9)), None);
        assert_eq!(taking.offer(publish(QoS::AtMostOnce, 0)), None);
        assert_eq!(
            taking.acks.pending(),
            1,
            "only the qos 1 command waits for its ack"
        );
        let batch: Vec<(bool, usize)> = taking
            .batch
            .iter()
            .map(|i| (i.ack.is_some(), i.payload.len()))
            .collect();
        assert_eq!(batch, vec![(true, 1), (false, 1)]);
        let cancel = CancellationToken::new();
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(async {
                taking.hand_over(&cancel).await;
                let mut handed = rx.recv().await.unwrap();
                handed.remove(0).ack.unwrap().ack();
                assert_eq!(
                    taking.settled(&cancel).await.unwrap(),
                    vec![Packet::PubAck(PubAck::new(9))]
                );
            });
    }

    #[test]
    fn a_token_reports_ack_abandonment_or_nothing() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let c = |ticket| Completion {
            connection: 1,
            ticket,
        };
        AckToken::new(tx.clone(), c(0)).ack();
        assert_eq!(rx.try_recv(), Ok(Settlement::Acked(c(0))));
        assert!(rx.try_recv().is_err(), "an acked token reports once");
        drop(AckToken::new(tx.clone(), c(1)));
        assert_eq!(rx.try_recv(), Ok(Settlement::Abandoned(c(1))));
        AckToken::new(tx.clone(), c(2)).leave();
        assert!(rx.try_recv().is_err(), "a left token reports nothing");
        drop(rx);
        // With the owner gone, neither ack nor drop panics.
        AckToken::new(tx.clone(), c(3)).ack();
        drop(AckToken::new(tx, c(4)));
    }

    #[test]
    fn topic_filters_match_by_level() {
        assert!(topic_matches("p/+/+/set", "p/boiler/sp/set"));
        assert!(!topic_matches("p/+/+/set", "p/config/set"));
        assert!(topic_matches("p/config/set", "p/config/set"));
        assert!(!topic_matches("p/config/set", "p/config/set/x"));
        assert!(topic_matches("p/#", "p/a/b"));
    }
}
