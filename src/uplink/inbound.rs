//! Incoming PUBLISHes (cloud commands, issue 5) with manual acknowledgement.
//!
//! The uplink subscribes to [`Inbound::filters`] at QoS 1 on every connection and hands each
//! incoming PUBLISH to the handler through [`Inbound::tx`] as an [`Incoming`]. The PUBACK is not
//! sent on receipt: the handler calls [`AckToken::ack`] once its result is committed (written,
//! answered and the answer in the queue), and only then is the PUBACK written. So a crash in
//! between makes the broker redeliver the command (persistent session).
//!
//! MQTT 3.1.1 §4.6 wants acknowledgements in the order the messages arrived, so [`AckOrder`]
//! (pure) releases a PUBACK only when every earlier message of the connection was acked too.
//! Tokens of an earlier connection are ignored: the broker redelivers those messages anyway.

use std::collections::VecDeque;

use bytes::Bytes;
use tokio::sync::mpsc;

/// The handler side of the seam.
#[derive(Debug, Clone)]
pub struct Inbound {
    /// Topic filters subscribed at QoS 1 on every connection.
    pub filters: Vec<String>,
    /// Where incoming PUBLISHes go. When it is full the link waits (the broker holds the rest).
    pub tx: mpsc::Sender<Incoming>,
}

/// One incoming PUBLISH.
#[derive(Debug)]
pub struct Incoming {
    pub topic: String,
    pub payload: Bytes,
    /// Whether the broker says it may have delivered this before.
    pub dup: bool,
    /// `None` for QoS 0 (nothing to acknowledge).
    pub ack: Option<AckToken>,
}

/// Acknowledges one incoming QoS 1 PUBLISH once its result is committed.
#[derive(Debug)]
pub struct AckToken {
    pub(super) tx: mpsc::UnboundedSender<Completion>,
    pub(super) completion: Completion,
}

/// Which message of which connection was completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Completion {
    pub connection: u64,
    pub ticket: u64,
}

impl AckToken {
    /// A token for message `completion`, reported on `tx` (for connections other than the
    /// uplink's that take commands, such as the local broker client).
    pub(crate) fn new(tx: mpsc::UnboundedSender<Completion>, completion: Completion) -> AckToken {
        AckToken { tx, completion }
    }

    /// Reports the message handled and its result committed. If the uplink is gone or the
    /// connection changed meanwhile, the broker redelivers it instead.
    pub fn ack(self) {
        let _ = self.tx.send(self.completion);
    }
}

/// Receive-order acknowledgement bookkeeping of one connection (pure).
#[derive(Debug, Default)]
pub struct AckOrder {
    connection: u64,
    next_ticket: u64,
    /// (ticket, packet id, handler done) in receive order.
    pending: VecDeque<(u64, u16, bool)>,
}

impl AckOrder {
    /// A new connection: everything pending belongs to the old one and is redelivered.
    pub fn on_connected(&mut self) {
        self.connection += 1;
        self.pending.clear();
    }

    /// Records a QoS 1 PUBLISH; its ticket goes into the [`AckToken`].
    pub fn on_publish(&mut self, pkid: u16) -> Completion {
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        self.pending.push_back((ticket, pkid, false));
        Completion {
            connection: self.connection,
            ticket,
        }
    }

    /// Marks a message done; returns the packet ids to PUBACK now, in receive order.
    pub fn complete(&mut self, done: Completion) -> Vec<u16> {
        if done.connection != self.connection {
            return Vec::new();
        }
        if let Some(entry) = self.pending.iter_mut().find(|e| e.0 == done.ticket) {
            entry.2 = true;
        }
        let mut ready = Vec::new();
        while let Some(&(_, pkid, true)) = self.pending.front() {
            ready.push(pkid);
            self.pending.pop_front();
        }
        ready
    }

    pub fn pending(&self) -> usize {
        self.pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_leave_in_receive_order() {
        let mut order = AckOrder::default();
        order.on_connected();
        let a = order.on_publish(10);
        let b = order.on_publish(11);
        let c = order.on_publish(12);
        assert_eq!(order.complete(b), Vec::<u16>::new(), "b waits for a");
        assert_eq!(order.complete(a), vec![10, 11]);
        assert_eq!(order.complete(c), vec![12]);
        assert_eq!(order.pending(), 0);
    }

    #[test]
    fn completion_of_an_old_connection_is_ignored() {
        let mut order = AckOrder::default();
        order.on_connected();
        let old = order.on_publish(1);
        order.on_connected();
        let new = order.on_publish(1);
        assert_eq!(order.complete(old), Vec::<u16>::new());
        assert_eq!(order.complete(new), vec![1]);
    }
}
