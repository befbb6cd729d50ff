//! The queue's handles: [`Queue`] (cheap to clone, one per task that pushes, fetches or acks),
//! the uplink's [`LiveReceiver`] and the [`QueueWriter`] that owns the writer thread. Every call
//! is a command to the writer thread (see "Threading model" in the module doc).

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot, watch};

use super::capacity::{self, Capacity, DropBurst};
use super::counters::Counters;
use super::store::{self, db_path, BD_SEQ, SESSION_PEER};
use super::writer::{self, Command, Writer};
use super::{
    CommandKey, Entry, Message, QueueError, QueueOptions, QueueProgress, QueueStats, RecentCommand,
    RejectedStats, StoredRow,
};
use crate::config::Qos;
use crate::sample::{Sample, SampleSink, Value};

/// Handle to the queue; cheap to clone. Every clone talks to the same writer thread.
#[derive(Debug, Clone)]
pub struct Queue {
    /// Commands to the writer thread. Bounded so that producers feel backpressure (`push`
    /// waits) instead of growing memory when the disk is slower than the pollers.
    cmd_tx: mpsc::Sender<Command>,
    /// QoS 0 samples straight to the uplink; `try_send` only, a full channel drops.
    live_tx: mpsc::Sender<Sample>,
    progress_rx: watch::Receiver<QueueProgress>,
    counters: Arc<Counters>,
}

/// Receiving end of the QoS 0 live channel; owned by the uplink.
#[derive(Debug)]
pub struct LiveReceiver {
    pub rx: mpsc::Receiver<Sample>,
}

/// An answer the writer has ([`Queue::send_answer`]), not necessarily committed yet.
#[derive(Debug)]
pub struct AnswerSent(oneshot::Receiver<Result<(), QueueError>>);

impl AnswerSent {
    /// Waits for the commit of the answer's transaction.
    pub async fn committed(self) -> Result<(), QueueError> {
        // A dropped reply sender means the writer died before answering.
        self.0.await.map_err(|_| QueueError::Closed)?
    }
}

/// Owner of the writer thread.
#[derive(Debug)]
pub struct QueueWriter {
    /// Kept to send `Close`; also keeps the writer alive while every `Queue` clone is dropped.
    cmd_tx: mpsc::Sender<Command>,
    thread: JoinHandle<Result<(), QueueError>>,
}

impl Queue {
    /// Opens (creating the directory, the file and the schema as needed, migrating a v1 file,
    /// quarantining a corrupt one) `<data_dir>/queue.db` and starts the `queue-writer` thread.
    /// Blocking: call it before the runtime gets busy, or from `spawn_blocking`.
    pub fn open(
        data_dir: &Path,
        options: QueueOptions,
    ) -> Result<(Queue, LiveReceiver, QueueWriter), QueueError> {
        std::fs::create_dir_all(data_dir).map_err(|source| QueueError::CreateDir {
            path: data_dir.to_path_buf(),
            source,
        })?;
        store::check_writable(data_dir)?;
        let dir_lock = super::lock::shared(data_dir);
        let conn = store::open_checked(&db_path(data_dir), &options)?;
        let progress = store::load_progress(&conn)?;
        let page_size: i64 = conn.pragma_query_value(None, "page_size", |r| r.get(0))?;

        let max_batch = options.max_batch.max(1);
        // Room for one full group being committed plus the next one filling up, so producers
        // rarely wait on a commit they are not part of.
        let capacity = max_batch.saturating_mul(2);
        let (cmd_tx, cmd_rx) = mpsc::channel(capacity);
        // `mpsc::channel(0)` panics: a zero capacity means "as small as possible".
        let (live_tx, live_rx) = mpsc::channel(options.live_capacity.max(1));
        let (progress_tx, progress_rx) = watch::channel(progress);
        let counters = Arc::new(Counters::default());
        let held = super::rejected::held(&conn)?;
        counters.with_rejected(|r| r.held = held);
        let capacity_bytes = options
            .max_size
            .saturating_sub(capacity::wal_budget(options.max_size));
        counters
            .capacity_bytes
            .store(capacity_bytes, Ordering::Relaxed);

        let writer = Writer {
            conn,
            rx: cmd_rx,
            progress_tx,
            progress,
            counters: Arc::clone(&counters),
            max_batch,
            max_commands: capacity,
            capacity: Capacity {
                budget: capacity_bytes,
                on_full: options.on_full,
                page_size: u64::try_from(page_size).unwrap_or(4096),
            },
            max_size: options.max_size,
            room: writer::RoomMeter {
                db: db_path(data_dir),
            },
            checkpoint_pages: 0,
            unwritten: Default::default(),
            rows_in_file: progress.depth,
            retry: Default::default(),
            read_log: (None, 0),
            burst: DropBurst::default(),
            rejected: Default::default(),
            _dir_lock: dir_lock,
            planner: writer::Planner {
                max_age: options.max_age.clone(),
                sweep_every: options.expiry_sweep,
                ..Default::default()
            },
        };
        let thread = std::thread::Builder::new()
            .name("queue-writer".into())
            .spawn(move || writer.run())
            .map_err(QueueError::Spawn)?;
        tracing::info!(
            path = %db_path(data_dir).display(),
            last_seq = progress.last_seq,
            depth = progress.depth,
            bytes = progress.bytes,
            "queue opened"
        );

        Ok((
            Queue {
                cmd_tx: cmd_tx.clone(),
                live_tx,
                progress_rx,
                counters,
            },
            LiveReceiver { rx: live_rx },
            QueueWriter { cmd_tx, thread },
        ))
    }

    /// Routes a sample. QoS 0: offered to the live channel, dropped and counted if it is full or
    /// has no receiver (never written). QoS 1/2: handed to the writer, waiting while its channel
    /// is full. `Ok` means "accepted", not "committed": watch [`Queue::progress`] for commits.
    pub async fn push(&self, sample: Sample) -> Result<(), QueueError> {
        if self.cmd_tx.is_closed() {
            return Err(QueueError::Closed);
        }
        if matches!(sample.value, Value::Float(f) if !f.is_finite()) {
            return Err(QueueError::NonFiniteValue);
        }
        match sample.qos {
            Qos::AtMostOnce => {
                match self.live_tx.try_send(sample) {
                    Ok(()) => self.counters.live_burst.record(false),
                    Err(TrySendError::Full(_) | TrySendError::Closed(_)) => {
                        self.counters.live_dropped.fetch_add(1, Ordering::Relaxed);
                        self.counters.live_burst.record(true);
                    }
                }
                Ok(())
            }
            Qos::AtLeastOnce | Qos::ExactlyOnce => {
                self.send(Command::Insert(Entry::Sample(sample))).await
            }
        }
    }

    /// Queues a durable non-sample message (device status, command result): committed, then
    /// published by the uplink and deleted on its PUBACK/PUBCOMP, like a sample.
    pub async fn push_message(&self, message: Message) -> Result<(), QueueError> {
        if message.qos == Qos::AtMostOnce {
            return Err(QueueError::QosZero);
        }
        self.send(Command::Insert(Entry::Message(message))).await
    }

    pub(super) async fn send(&self, cmd: Command) -> Result<(), QueueError> {
        self.cmd_tx.send(cmd).await.map_err(|_| QueueError::Closed)
    }

    pub(super) async fn request<T>(
        &self,
        cmd: impl FnOnce(oneshot::Sender<Result<T, QueueError>>) -> Command,
    ) -> Result<T, QueueError> {
        let (reply, rx) = oneshot::channel();
        self.send(cmd(reply)).await?;
        // A dropped reply sender means the writer died before answering.
        rx.await.map_err(|_| QueueError::Closed)?
    }

    /// Committed, never-sent rows with `seq > after_seq`, in `seq` order, at most `limit`. Sees
    /// every write and every commit of pushes sent before it.
    pub async fn fetch(&self, after_seq: u64, limit: usize) -> Result<Vec<StoredRow>, QueueError> {
        self.request(|reply| Command::Fetch {
            after_seq,
            limit,
            reply,
        })
        .await
    }

    /// Queues the deletion of row `seq` (committed with the next group). Unknown `seq`: no-op.
    /// Only the uplink calls it, on PUBACK (QoS 1) or PUBCOMP (QoS 2). If that commit fails, the
    /// deletion is kept and committed with the first group that succeeds; meanwhile the row is
    /// treated as deleted (`fetch`, `unsettled` and the depth leave it out).
    pub async fn ack(&self, seq: u64) -> Result<(), QueueError> {
        self.send(Command::Ack(seq)).await
    }

    /// Queues the move of rows the broker refused for good (an MQTT 5 reason code such as 0x87
    /// not authorized, or the uplink's own 0x95 for a row larger than the broker's Maximum
    /// Packet Size) out of the queue into its `rejected` table, with `reason`; committed with
    /// the next group, like [`Queue::ack`], and kept over a failed commit the same way. From
    /// then on the rows are never fetched, not in [`Queue::unsettled`], not in the depth or the
    /// age, and they survive restarts until an operator puts them back or the capacity evicts
    /// them ([`rejected`](super::rejected)). A `seq` that no longer exists is a no-op. Counted per
    /// reason in [`Queue::rejected`].
    pub async fn reject(&self, seqs: Vec<u64>, reason: u8) -> Result<(), QueueError> {
        if seqs.is_empty() {
            return Ok(());
        }
        self.send(Command::Reject { seqs, reason }).await
    }

    /// Queues the deletion of never-sent rows that passed their `max_age` (counted as expired).
    pub async fn expire(&self, seqs: Vec<u64>) -> Result<(), QueueError> {
        self.send(Command::Expire(seqs)).await
    }

    /// Records the packet ids PUBLISHes are about to be sent with; returns after the commit,
    /// with the rows that no longer exist (evicted or expired since they were fetched): their
    /// PUBLISH must not be sent, or the broker would hold an id the store does not know.
    /// [`QueueError::Commit`] when the commit failed: nothing was recorded, so the PUBLISHes must
    /// not be sent (their ids are free again).
    pub async fn mark_published(&self, rows: Vec<(u64, u16)>) -> Result<Vec<u64>, QueueError> {
        self.request(|reply| Command::MarkPublished { rows, reply })
            .await
    }

    /// Records PUBRECs (QoS 2) before their PUBRELs are sent; returns after the commit.
    pub async fn mark_received(&self, seqs: Vec<u64>) -> Result<(), QueueError> {
        self.request(|reply| Command::MarkReceived { seqs, reply })
            .await
    }

    /// Rows with a session state, in `seq` order: what a resumed session must resend. A row
    /// that no longer decodes comes as a placeholder past PUBREC (its packet id, an empty
    /// message), so the session reserves the id and releases it with a PUBREL (see
    /// `store::unsettled_rows` for what its ack then does).
    pub async fn unsettled(&self) -> Result<Vec<StoredRow>, QueueError> {
        self.request(|reply| Command::Unsettled { reply }).await
    }

    /// The broker has no session for us: every row becomes queued again (resent as new with its
    /// `seq`). Returns after the commit.
    pub async fn reset_session(&self) -> Result<(), QueueError> {
        self.request(|reply| Command::ResetSession { reply }).await
    }

    /// Which broker session (`client_id@host:port`) the stored session states belong to; `None`
    /// for a new or quarantined file, or one written by contract v1 (always clean sessions).
    pub async fn session_peer(&self) -> Result<Option<String>, QueueError> {
        self.request(|reply| Command::GetMeta {
            key: SESSION_PEER,
            reply,
        })
        .await
    }

    /// Records the broker session the session states now belong to; returns after the commit.
    pub async fn set_session_peer(&self, peer: String) -> Result<(), QueueError> {
        self.request(|reply| Command::SetMeta {
            key: SESSION_PEER,
            value: peer,
            reply,
        })
        .await
    }

    /// The Sparkplug `bdSeq` the last CONNECT used, as stored text; `None` before the first.
    pub async fn bd_seq(&self) -> Result<Option<String>, QueueError> {
        self.request(|reply| Command::GetMeta { key: BD_SEQ, reply })
            .await
    }

    /// Records the `bdSeq` of the CONNECT about to be written; returns after the commit, so a
    /// `kill -9` after the CONNECT never reuses it.
    pub async fn set_bd_seq(&self, value: String) -> Result<(), QueueError> {
        self.request(|reply| Command::SetMeta {
            key: BD_SEQ,
            value,
            reply,
        })
        .await
    }

    /// Round trip through the writer thread, for the service watchdog: answered after every
    /// command queued before it, once the writer took and released SQLite's write lock. So it
    /// fails or hangs while the writer is stuck (a commit that does not finish, another process
    /// holding the database locked, a dead thread); callers bound the wait with a timeout.
    pub async fn probe(&self) -> Result<(), QueueError> {
        let (reply, rx) = oneshot::channel();
        self.cmd_tx
            .send(Command::Probe(reply))
            .await
            .map_err(|_| QueueError::Closed)?;
        rx.await.map_err(|_| QueueError::Closed)?
    }

    /// Replaces the per-(device, point) `max_age`s (a configuration reload). Rows committed
    /// from now on get their expiry from `ages`; rows already queued keep the expiry they were
    /// committed with, so a reload never silently drops a backlog it did not drop before.
    pub async fn set_max_age(
        &self,
        ages: HashMap<(String, String), Duration>,
    ) -> Result<(), QueueError> {
        self.cmd_tx
            .send(Command::SetMaxAge(ages))
            .await
            .map_err(|_| QueueError::Closed)
    }

    /// What is recorded of the command `key` (`recent.rs`): `None` if it was never taken.
    pub async fn recent_command(
        &self,
        key: CommandKey,
    ) -> Result<Option<RecentCommand>, QueueError> {
        self.request(|reply| Command::Recent { key, reply }).await
    }

    /// Records the command `key` as taken, before its write starts; returns after the commit.
    pub async fn command_taken(&self, key: CommandKey) -> Result<(), QueueError> {
        self.request(|reply| Command::Taken { key, reply }).await
    }

    /// Commits a command's answer in one transaction: `message` (its result, queued and then
    /// published like any row), for a command with an id the recorded `result`, and the removal
    /// of its `inbox` row. Returns after the commit. Not subject to `store.on_full:
    /// reject_new`: an answer is small and must not be lost.
    pub async fn answer_command(
        &self,
        key: Option<CommandKey>,
        result: String,
        message: Option<Message>,
        inbox: Option<i64>,
    ) -> Result<(), QueueError> {
        self.send_answer(key, result, message, inbox)
            .await?
            .committed()
            .await
    }

    /// [`Queue::answer_command`] without waiting for the commit: returns once the writer has
    /// the answer, so a handler can go on with the next command (its own reads see the answer)
    /// and learn of the commit later ([`AnswerSent::committed`]).
    pub async fn send_answer(
        &self,
        key: Option<CommandKey>,
        result: String,
        message: Option<Message>,
        inbox: Option<i64>,
    ) -> Result<AnswerSent, QueueError> {
        if message.as_ref().is_some_and(|m| m.qos == Qos::AtMostOnce) {
            return Err(QueueError::QosZero);
        }
        let (reply, rx) = oneshot::channel();
        self.send(Command::Answered {
            key,
            result,
            message,
            inbox,
            reply,
        })
        .await?;
        Ok(AnswerSent(rx))
    }

    /// Newest committed `seq`, depth and size, updated after every commit. `changed()` fails
    /// once the writer is gone.
    pub fn progress(&self) -> watch::Receiver<QueueProgress> {
        self.progress_rx.clone()
    }

    /// Commit and drop counters since open.
    pub fn stats(&self) -> QueueStats {
        QueueStats {
            committed: self.counters.committed.load(Ordering::Relaxed),
            live_dropped: self.counters.live_dropped.load(Ordering::Relaxed),
            commit_dropped: self.counters.commit_dropped.load(Ordering::Relaxed),
            capacity_dropped: self.counters.capacity_dropped.load(Ordering::Relaxed),
            expired: self.counters.expired.load(Ordering::Relaxed),
        }
    }

    /// The rejected rows: held now and counted since open, per reason code.
    pub fn rejected(&self) -> RejectedStats {
        self.counters.with_rejected(|r| r.clone())
    }

    /// Bytes of `queue.db` pages the rows may use before `store.on_full` applies
    /// (`store.max_size` less the write-ahead log's budget, or less when the disk holds less);
    /// compare with [`QueueProgress::bytes`].
    pub fn capacity_bytes(&self) -> u64 {
        self.counters.capacity_bytes.load(Ordering::Relaxed)
    }

    /// Whether the acknowledgements kept over failed commits reached their bound: the uplink then
    /// takes no new rows until a commit succeeds (see [`unwritten`]).
    pub fn acks_backlogged(&self) -> bool {
        self.counters.acks_backlogged.load(Ordering::Relaxed)
    }

    /// Whether the writer stopped (closed or died); every call then returns [`QueueError::Closed`].
    pub fn is_closed(&self) -> bool {
        self.cmd_tx.is_closed()
    }
}

/// The pollers' sink when nothing else wants the samples: a push that fails (a closed queue, a
/// non-finite value) is logged, the poller carries on.
impl SampleSink for Queue {
    async fn push(&self, sample: Sample) {
        if let Err(error) = Queue::push(self, sample).await {
            tracing::warn!(%error, "cannot queue sample");
        }
    }
}

impl QueueWriter {
    /// Commits pending work, closes the database and joins the thread.
    pub async fn close(self) -> Result<(), QueueError> {
        // Fails only if the thread is already gone; joining then reports how it ended.
        let _ = self.cmd_tx.send(Command::Close).await;
        drop(self.cmd_tx);
        let thread = self.thread;
        match tokio::task::spawn_blocking(move || thread.join()).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) | Err(_) => Err(QueueError::WriterPanicked),
        }
    }
}
