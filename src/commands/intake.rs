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
//! # A commit that fails (disk full)
//! The commands are **held**, not given back: their tokens are kept, so their PUBACKs (and, as
//! MQTT wants them in order, every later one of the connection) wait, and the intake tries the
//! commit again after a pause that doubles from 0.25 s to 5 s (the uplink's own pause on a
//! full disk, `uplink::stall`). Batches that arrive meanwhile join the held ones, and the next
//! try commits them all, in receive order. The connection is neither stopped nor renewed: a
//! new one would not make the disk any emptier, would resend every unacknowledged command and
//! fail on them again, and the uplink must keep draining its queue (which is what frees the
//! disk) and its keep-alive. Held commands are stored as possible redeliveries (DUP): a COMMIT
//! that failed with an I/O error may have reached the disk all the same, and the inbox's
//! redelivery check keeps such a command from being stored twice — what a broker redelivery
//! after a reconnect would have done too.
//!
//! Holding is bounded ([`MAX_BATCH`] commands, [`HOLD_BYTES`] of payload): beyond that a new
//! batch is dropped, its tokens report themselves abandoned and the connection is renewed for
//! the broker to redeliver it, at the pace of its backoff (`uplink::inbound`), as is every batch
//! when the queue is closed or answers an error other than a failed commit, and the refused
//! commands whose `busy` answer cannot be committed. At shutdown commands not committed yet are
//! left to the broker's redelivery.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::answer::{Answer, Answers, Origin, Response};
use super::payload::CommandPayload;
use super::result::{self, ErrorCode, Outcome, Refusal};
use super::stats::CommandStats;
use super::topic;
use crate::queue::{inbox, NewCommand, Queue, QueueError, Taken};
use crate::sample::now_ms;
use crate::uplink::stall::{RETRY_FIRST, RETRY_MAX};
use crate::uplink::{AckToken, Incoming};

/// Most PUBLISHes committed in one request: bounds one transaction (and the wait of the
/// PUBACKs at its front) when a broker floods us; also the most commands held while commits
/// fail.
const MAX_BATCH: usize = 4096;
/// Most payload bytes held while commits fail: a full disk must not become a full memory
/// (commands are small: 4096 typical ones are a few hundred KiB).
const HOLD_BYTES: usize = 1024 * 1024;

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

/// Commands whose commit failed, waiting for the next try (see the module doc).
struct Held {
    delivered: Vec<Delivered>,
    bytes: usize,
    /// The first failure of the episode, and the failed tries since.
    since: Instant,
    failures: u64,
    /// When to try again, and the pause after the next failure.
    retry_at: Instant,
    delay: Duration,
    /// Whether a batch was dropped at the bound in this episode (logged once).
    overflowed: bool,
}

impl Held {
    fn new(delivered: Vec<Delivered>, now: Instant) -> Held {
        let mut held = Held {
            delivered: Vec::new(),
            bytes: 0,
            since: now,
            failures: 1,
            retry_at: now + RETRY_FIRST,
            delay: (RETRY_FIRST * 2).min(RETRY_MAX),
            overflowed: false,
        };
        held.push(delivered);
        held
    }

    /// Adds `delivered` after what is held, as possible redeliveries (see the module doc).
    fn push(&mut self, delivered: Vec<Delivered>) {
        for mut d in delivered {
            if let Some(command) = &mut d.command {
                command.dup = true;
                self.bytes += command.payload.len();
            }
            self.delivered.push(d);
        }
    }

    /// Whether `more` commands of `bytes` still fit.
    fn fits(&self, more: usize, bytes: usize) -> bool {
        self.delivered.len() + more <= MAX_BATCH && self.bytes + bytes <= HOLD_BYTES
    }

    /// Another try failed: `delivered` is what it tried, held again.
    fn failed(&mut self, delivered: Vec<Delivered>, now: Instant) {
        self.delivered.clear();
        self.bytes = 0;
        self.push(delivered);
        self.failures += 1;
        self.retry_at = now + self.delay;
        self.delay = (self.delay * 2).min(RETRY_MAX);
    }
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
        let mut held: Option<Held> = None;
        loop {
            let Some(paused) = &mut held else {
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
                let delivered = batch.into_iter().map(|i| self.classify(i)).collect();
                held = tokio::select! {
                    biased;
                    () = cancel.cancelled() => return,
                    failed = self.take(delivered) => failed.map(|(delivered, error)| {
                        warn!(origin = self.origin.name(), %error, commands = delivered.len(), "cannot store incoming commands (disk full?); their acknowledgements wait and the commit is tried again every 0.25-5 s");
                        Held::new(delivered, Instant::now())
                    }),
                };
                continue;
            };
            // Paused: what arrives joins the held commands until the next try.
            tokio::select! {
                biased;
                () = cancel.cancelled() => return,
                batch = rx.recv() => match batch {
                    Some(batch) => {
                        self.hold(paused, batch);
                        continue;
                    }
                    None => return,
                },
                () = tokio::time::sleep_until(paused.retry_at) => {}
            }
            let delivered = std::mem::take(&mut paused.delivered);
            let commands = delivered.len();
            let failed = tokio::select! {
                biased;
                () = cancel.cancelled() => return,
                failed = self.take(delivered) => failed,
            };
            match failed {
                Some((delivered, _)) => paused.failed(delivered, Instant::now()),
                None => {
                    info!(
                        origin = self.origin.name(),
                        commands,
                        paused_secs = paused.since.elapsed().as_secs(),
                        failed_tries = paused.failures,
                        "incoming commands stored again after a pause; acknowledged"
                    );
                    held = None;
                }
            }
        }
    }

    /// A batch that arrived while commits fail: held, or beyond the bound dropped (its tokens
    /// report it abandoned, so the connection is renewed and the broker redelivers it). Once
    /// one was dropped, so is every later one until the held commands are stored: a later
    /// command must not be stored before an earlier one the broker redelivers.
    fn hold(&self, held: &mut Held, batch: Vec<Incoming>) {
        let delivered: Vec<Delivered> = batch.into_iter().map(|i| self.classify(i)).collect();
        let bytes = delivered
            .iter()
            .filter_map(|d| d.command.as_ref())
            .map(|c| c.payload.len())
            .sum();
        if !held.overflowed && held.fits(delivered.len(), bytes) {
            held.push(delivered);
            return;
        }
        if !held.overflowed {
            held.overflowed = true;
            error!(
                origin = self.origin.name(),
                held = held.delivered.len(),
                dropped = delivered.len(),
                "too many incoming commands wait for a commit; newer ones are left unacknowledged for redelivery on a new connection"
            );
        }
    }

    /// Commits `delivered` to the inbox and acknowledges it. A failed commit gives the commands
    /// back, with the error, to be held; any other failure drops them (see the module doc).
    async fn take(&self, delivered: Vec<Delivered>) -> Option<(Vec<Delivered>, QueueError)> {
        let commands: Vec<NewCommand> =
            delivered.iter().filter_map(|d| d.command.clone()).collect();
        let received = commands.len();
        if commands.is_empty() {
            delivered.into_iter().for_each(acknowledge);
            return None;
        }
        let report = match self.queue.inbox_take(commands).await {
            Ok(report) => report,
            Err(error @ QueueError::Commit(_)) => return Some((delivered, error)),
            Err(error) => {
                // Dropping the tokens leaves the commands to the broker's redelivery.
                error!(origin = self.origin.name(), %error, commands = received, "cannot store incoming commands; left unacknowledged for redelivery");
                return None;
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
        None
    }

    /// What an incoming PUBLISH is, for the inbox (counted as received once, however often its
    /// commit is tried).
    fn classify(&self, incoming: Incoming) -> Delivered {
        let Incoming {
            topic,
            payload,
            dup,
            retained,
            oversized,
            ack,
            request,
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
        CommandStats::add(&self.stats.received, 1);
        let (request, invalid) = super::request::stored(request.as_ref(), now_ms());
        if let Some(invalid) = invalid {
            CommandStats::add(&self.stats.bad_response_topic, 1);
            warn!(%device, %point, reason = %invalid, "ignoring the command's MQTT 5 response topic; it is answered on its result topic only");
        }
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
            request,
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
                response: Response::of(&command.request),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn delivered(payload: &[u8]) -> Delivered {
        Delivered {
            ack: None,
            command: Some(NewCommand {
                origin: "cloud",
                device: "boiler".into(),
                point: "setpoint".into(),
                id: None,
                payload: payload.to_vec(),
                size: payload.len() as u64,
                dup: false,
                retained: false,
                request: Default::default(),
                oversized: false,
            }),
            id: None,
        }
    }

    /// Held commands are retried as possible redeliveries, after a pause that doubles from
    /// the first to the longest; the bound counts commands and payload bytes.
    #[test]
    fn held_commands_are_redeliveries_retried_with_a_growing_pause_within_a_bound() {
        let t0 = Instant::now();
        let mut held = Held::new(vec![delivered(b"1"), delivered(b"22")], t0);
        assert_eq!(held.retry_at, t0 + RETRY_FIRST);
        assert_eq!(held.bytes, 3);
        assert!(held
            .delivered
            .iter()
            .all(|d| d.command.as_ref().is_some_and(|c| c.dup)));
        let mut pauses = Vec::new();
        for _ in 0..6 {
            let again = std::mem::take(&mut held.delivered);
            held.failed(again, t0);
            pauses.push(held.retry_at - t0);
        }
        assert_eq!(
            pauses,
            [500, 1000, 2000, 4000, 5000, 5000].map(Duration::from_millis)
        );
        assert_eq!((held.delivered.len(), held.bytes, held.failures), (2, 3, 7));
        assert!(held.fits(MAX_BATCH - 2, HOLD_BYTES - 3));
        assert!(!held.fits(MAX_BATCH - 1, 0));
        assert!(!held.fits(1, HOLD_BYTES - 2));
    }
}
