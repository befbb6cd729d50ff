//! The command intake of one origin (I/O): takes the PUBLISHes a connection read
//! (`uplink::inbound`), commits them to the command inbox (`queue/inbox.rs`) and only then
//! acknowledges them; the [handler](super::handler) works through the inbox.
//!
//! # One batch, step by step
//! 1. Every batch waiting in the channel is taken at once, so a burst is one commit (the writer
//!    groups it further with whatever else it has), not one per command.
//! 2. A topic that names no command (`P/<device>/<point>/set`) is acknowledged and dropped.
//!    Everything else becomes a [`NewCommand`]: device and point from the topic, the id from
//!    the payload when it has a readable one, the DUP and retain flags, and for an oversized
//!    PUBLISH only its size.
//! 3. [`Queue::inbox_take`] commits them and says what became of each ([`Taken`]): stored, a
//!    redelivery not stored again, or refused because the origin's inbox is full.
//! 4. A refused command is answered `busy` (committed like any answer, not recorded under its
//!    id, so the same id may be sent again); then every command of the batch is acknowledged.
//!    The connection writes the PUBACKs in receive order.
//! 5. The handler is woken.
//!
//! A failed commit (disk full, closed queue) leaves the batch unacknowledged: the tokens report
//! themselves abandoned and the connection is renewed for the broker to redeliver them, at the
//! pace of its backoff (`uplink::inbound`). At shutdown a batch not committed yet is left to
//! the broker's redelivery.

use std::sync::Arc;

use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::answer::{Answer, Answers, Origin};
use super::payload::CommandPayload;
use super::result::{self, ErrorCode, Outcome, Refusal};
use super::stats::CommandStats;
use super::topic;
use crate::queue::{inbox, NewCommand, Queue, Taken};
use crate::sample::now_ms;
use crate::uplink::{AckToken, Incoming};

/// Most PUBLISHes committed in one request: bounds one transaction (and the wait of the
/// PUBACKs at its front) when a broker floods us.
const MAX_BATCH: usize = 4096;

/// The intake of one origin.
pub struct Intake {
    pub origin: Origin,
    /// The topic prefix commands arrive under (`P` of `P/+/+/set`).
    pub prefix: String,
    pub queue: Queue,
    /// Woken after every commit that stored commands.
    pub handler: Arc<Notify>,
    pub stats: Arc<CommandStats>,
}

/// A delivered command on its way into the inbox.
struct Delivered {
    ack: Option<AckToken>,
    /// The command, `None` for a topic that names none.
    command: Option<NewCommand>,
    /// The id to echo in a `busy` answer.
    id: Option<super::CommandId>,
}

impl Intake {
    /// Takes batches from `rx` until `cancel` fires or every connection is gone.
    pub async fn run(self, mut rx: mpsc::Receiver<Vec<Incoming>>, cancel: CancellationToken) {
        loop {
            let mut batch = tokio::select! {
                biased;
                () = cancel.cancelled() => return,
                batch = rx.recv() => match batch {
                    Some(batch) => batch,
                    None => return,
                },
            };
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(more) => batch.extend(more),
                    Err(_) => break,
                }
            }
            tokio::select! {
                biased;
                () = cancel.cancelled() => return,
                () = self.take(batch) => {}
            }
        }
    }

    async fn take(&self, batch: Vec<Incoming>) {
        let delivered: Vec<Delivered> = batch.into_iter().map(|i| self.classify(i)).collect();
        let commands: Vec<NewCommand> =
            delivered.iter().filter_map(|d| d.command.clone()).collect();
        let received = commands.len();
        CommandStats::add(&self.stats.received, received);
        if commands.is_empty() {
            delivered.into_iter().for_each(acknowledge);
            return;
        }
        let report = match self.queue.inbox_take(commands).await {
            Ok(report) => report,
            Err(error) => {
                // Dropping the tokens leaves the commands to the broker's redelivery.
                error!(origin = self.origin.name(), %error, commands = received, "cannot store incoming commands; left unacknowledged for redelivery");
                return;
            }
        };
        self.stats
            .waiting
            .store(report.waiting, std::sync::atomic::Ordering::Relaxed);
        let mut taken = report.taken.into_iter();
        let mut refused = Vec::new();
        let mut acks = Vec::new();
        let mut counts = [0usize; 3];
        for d in delivered {
            let Some(command) = &d.command else {
                acks.push(d);
                continue;
            };
            match taken.next().unwrap_or(Taken::Full) {
                Taken::Stored => counts[0] += 1,
                Taken::Redelivered => {
                    counts[1] += 1;
                    if command.retained {
                        CommandStats::add(&self.stats.retained, 1);
                    }
                }
                Taken::Full => {
                    counts[2] += 1;
                    refused.push(d);
                    continue;
                }
            }
            acks.push(d);
        }
        let [stored, redelivered, full] = counts;
        CommandStats::add(&self.stats.stored, stored);
        CommandStats::add(&self.stats.redelivered, redelivered);
        if redelivered > 0 {
            debug!(
                origin = self.origin.name(),
                redelivered, "redelivered commands recognised; not stored again"
            );
        }
        acks.into_iter().for_each(acknowledge);
        if stored > 0 {
            self.handler.notify_one();
        }
        if full > 0 {
            CommandStats::add(&self.stats.busy, full);
            warn!(
                origin = self.origin.name(),
                refused = full,
                capacity = inbox::CAPACITY,
                "the command inbox is full; commands refused with busy"
            );
            self.refuse(refused).await;
        }
    }

    /// What an incoming PUBLISH is, for the inbox.
    fn classify(&self, incoming: Incoming) -> Delivered {
        let Incoming {
            topic,
            payload,
            dup,
            retained,
            oversized,
            ack,
        } = incoming;
        let Some((device, point)) = topic::parse(&self.prefix, &topic) else {
            CommandStats::add(&self.stats.ignored, 1);
            warn!(%topic, "ignoring a message that is not a command topic");
            return Delivered {
                ack,
                command: None,
                id: None,
            };
        };
        if let Some(size) = oversized {
            CommandStats::add(&self.stats.oversized, 1);
            info!(%device, %point, size, "oversized command discarded unread; it is answered bad_payload");
        }
        let id = match oversized {
            Some(_) => None,
            None => match CommandPayload::parse(&payload) {
                Ok(command) => command.id,
                Err(error) => error.id,
            },
        };
        let command = NewCommand {
            origin: self.origin.name(),
            device: device.to_owned(),
            point: point.to_owned(),
            id: id.as_ref().map(super::CommandId::key),
            size: oversized.unwrap_or(payload.len() as u64),
            payload: payload.to_vec(),
            dup,
            retained,
            oversized: oversized.is_some(),
        };
        Delivered {
            ack,
            command: Some(command),
            id,
        }
    }

    /// Answers `busy` for commands the full inbox refused, then acknowledges them.
    async fn refuse(&self, refused: Vec<Delivered>) {
        let refusal = Refusal::new(
            ErrorCode::Busy,
            format!(
                "the gateway holds {} commands of this broker already; nothing was written, send it again later",
                inbox::CAPACITY
            ),
        );
        let mut answers = Answers::new(&self.origin);
        for d in &refused {
            let Some(command) = &d.command else { continue };
            let payload =
                result::payload(d.id.as_ref(), &Outcome::Failed(refusal.clone()), now_ms());
            let answer = Answer {
                device: &command.device,
                point: &command.point,
                key: None,
                payload,
                inbox: None,
            };
            if let Err(error) = answers.send(&self.queue, answer).await {
                error!(%error, "cannot answer a refused command; left unacknowledged for redelivery");
                return;
            }
        }
        match answers.flush().await {
            Ok(()) => refused.into_iter().for_each(acknowledge),
            Err(error) => {
                error!(%error, "cannot answer refused commands; left unacknowledged for redelivery")
            }
        }
    }
}

fn acknowledge(delivered: Delivered) {
    if let Some(ack) = delivered.ack {
        ack.ack();
    }
}
