//! The writer thread: the only read-write connection, fed by one bounded command channel.
//!
//! Loop: block for the first command, drain what is already waiting (group commit), measure the
//! room on disk and plan the group against the capacity, apply every write of the group in one
//! transaction, commit (one fsync), publish the progress, answer the replies of the group.
//! Commands are applied in channel order. Which commands become which writes, which replies
//! wait, and what a failed commit means for each of them is decided without I/O in [`plan`];
//! this module measures, commits, reads and books around it.
//!
//! # Session writes
//! Writes the MQTT session depends on (`MarkPublished`, `MarkReceived`, `ResetSession`) are
//! replied to after their commit, and the uplink writes to the socket only after an `Ok`: a
//! failed one is refused ([`QueueError::Commit`]) and the uplink holds the packets that depend on
//! it, and tries again later. Acknowledgements (`Ack`) have no reply: one whose commit fails is
//! kept ([`Unwritten`]) and written at the head of every later transaction until one commits. So
//! no packet id the session reuses after an acknowledgement can reach the disk before that
//! acknowledgement's delete, and reads (`Fetch`, `Unsettled`, the depth) answer as if it were
//! applied: a row the broker acknowledged is never sent again by this process.
//!
//! # A failed commit
//! 1. A log that is full of frames already copied to the database is reused from its start, so
//!    on `SQLITE_FULL` the writer checkpoints (`PASSIVE`: it never waits for a reader) and tries
//!    the group again: a commit that fits in the existing log file needs no new disk space.
//! 2. If a group with inserts still fails (disk full, I/O error), its other writes are tried
//!    alone: on a nearly full disk, updates and deletes may fit (they reuse pages) where inserts
//!    do not. New samples are dropped and counted. Command results and commands taken into the
//!    inbox are inserts too: their replies fail whenever their own transaction did, so a
//!    command is acknowledged to its broker only once it is on disk.
//! 3. If that fails too, the acknowledgements are kept (see above), the writer carries on and
//!    commits succeed again by themselves once space returns. While acknowledgements are kept
//!    and nothing else arrives, the writer tries them again on a timer (250 ms doubling to 5 s),
//!    and once more when it closes.
//!
//! Failed commits are logged once per burst with the drops ([`DropBurst`]); reads that fail on
//! every group (an I/O error) at most once a minute.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot, watch};

use super::capacity::{self, Capacity, DropBurst, Drops, Room};
use super::counters::Counters;
use super::inbox;
use super::recent::{self, CommandKey, RecentCommand};
use super::rejected;
use super::store::{self, Write};
use super::unwritten::Unwritten;
use super::{Entry, Message, QueueError, QueueProgress, StoredRow};
use crate::sample::now_ms;
pub(super) use plan::Planner;
use plan::{GroupPlan, Outcome, Pending};

mod plan;

/// First wait before kept acknowledgements are tried again while nothing else arrives.
const RETRY_FIRST: Duration = Duration::from_millis(250);
/// Longest wait between those tries.
const RETRY_MAX: Duration = Duration::from_secs(5);
/// Reads that fail on every group are logged at most this often.
const READ_LOG_EVERY: Duration = Duration::from_secs(60);

/// Reply to a read: the rows, or why they could not be read.
pub(super) type RowsReply = oneshot::Sender<Result<Vec<StoredRow>, QueueError>>;
/// Reply to a session write, sent after its commit.
pub(super) type DoneReply = oneshot::Sender<Result<(), QueueError>>;
/// Reply to `MarkPublished`: the rows that no longer exist (their PUBLISH must not be sent).
pub(super) type MarkReply = oneshot::Sender<Result<Vec<u64>, QueueError>>;

/// A request to the writer thread.
#[derive(Debug)]
pub(super) enum Command {
    /// Commit a QoS 1/2 sample or message.
    Insert(Entry),
    /// Read queued rows with `seq > after_seq`; answered after the group's commit.
    Fetch {
        after_seq: u64,
        limit: usize,
        reply: RowsReply,
    },
    /// Delete a row (broker acknowledged it). Unknown `seq`: no-op.
    Ack(u64),
    /// Delete never-sent rows past their `max_age` (counted as expired).
    Expire(Vec<u64>),
    /// Move rows the broker refused for good to the `rejected` table. Unknown `seq`: no-op.
    Reject {
        seqs: Vec<u64>,
        reason: u8,
    },
    /// New per-point `max_age`s (a reload): rows inserted after it in the same group and later
    /// get expiries from it; rows already committed keep theirs.
    SetMaxAge(HashMap<(String, String), Duration>),
    MarkPublished {
        rows: Vec<(u64, u16)>,
        reply: MarkReply,
    },
    MarkReceived {
        seqs: Vec<u64>,
        reply: DoneReply,
    },
    /// Read the rows with a session state.
    Unsettled {
        reply: RowsReply,
    },
    /// Every row back to queued (the broker lost our session).
    ResetSession {
        reply: DoneReply,
    },
    /// Read a `meta` value; answered after the group's commit.
    GetMeta {
        key: &'static str,
        reply: oneshot::Sender<Result<Option<String>, QueueError>>,
    },
    /// Write a `meta` value; replied after the commit.
    SetMeta {
        key: &'static str,
        value: String,
        reply: DoneReply,
    },
    /// Stop accepting commands, commit what is already queued, then exit.
    Close,
    /// Liveness probe ([`super::Queue::probe`]): answered after the group's commit, once the
    /// write lock could be taken.
    Probe(oneshot::Sender<Result<(), QueueError>>),
    /// What is recorded of a command (`recent.rs`); answered after the group's commit.
    Recent {
        key: CommandKey,
        reply: oneshot::Sender<Result<Option<RecentCommand>, QueueError>>,
    },
    /// Record a command as taken; replied after the commit.
    Taken {
        key: CommandKey,
        reply: DoneReply,
    },
    /// Commit a command's answer (its result row and/or its record); replied after the commit.
    /// Not counted against `max_batch` or the capacity plan: an answer is small and losing it
    /// would leave a command unanswered.
    Answered {
        key: Option<CommandKey>,
        result: String,
        message: Option<Message>,
        /// The command's inbox row, removed in the same transaction.
        inbox: Option<i64>,
        reply: DoneReply,
    },
    /// The command inbox (`inbox.rs`).
    Inbox(inbox::Request),
}

/// State owned by the writer thread.
pub(super) struct Writer {
    /// The only read-write connection to the queue; never shared, so no lock contention between
    /// writers and no `SQLITE_BUSY` from ourselves.
    pub conn: Connection,
    pub rx: mpsc::Receiver<Command>,
    /// Published after every commit that changed something; the uplink waits on it for new rows.
    pub progress_tx: watch::Sender<QueueProgress>,
    /// The writer's own copy of the progress: the counter is authoritative here, the watch is a
    /// view of it.
    pub progress: QueueProgress,
    pub counters: Arc<Counters>,
    /// Most inserts per transaction: bounds the transaction (and the latency of the replies
    /// waiting behind it) when producers outrun the disk.
    pub max_batch: usize,
    /// Most commands per group, inserts or not; bounds the memory of one group when acks or
    /// fetches flood in.
    pub max_commands: usize,
    pub capacity: Capacity,
    /// `store.max_size`; the limits of each group are derived from it and the room on disk.
    pub max_size: u64,
    /// Where the room on disk is measured ([`RoomMeter`]).
    pub room: RoomMeter,
    /// The `wal_autocheckpoint` in force, in pages.
    pub checkpoint_pages: i64,
    /// Acknowledgements whose delete did not commit yet.
    pub unwritten: Unwritten,
    /// Rows in the file (the depth counts those of them not acknowledged).
    pub rows_in_file: u64,
    /// Waits for commands while acknowledgements are kept.
    pub retry: Retry,
    /// When a failing read was last logged, and how many failures were not logged since.
    pub read_log: (Option<Instant>, u64),
    pub burst: DropBurst,
    /// The counters and the log of rejected rows.
    pub rejected: rejected::Book,
    /// The state the planning of a group reads and updates ([`plan`]).
    pub planner: Planner,
    /// Held for as long as the writer runs: tools that write the file refuse meanwhile.
    pub _dir_lock: Option<super::lock::DirLock>,
}

/// Measures the room on disk for [`capacity::limits`].
#[derive(Debug)]
pub(super) struct RoomMeter {
    /// `queue.db`; its `-wal` beside it, and the file system it is on.
    pub db: PathBuf,
}

impl RoomMeter {
    /// `None` when the file system cannot tell (then only `store.max_size` applies).
    fn measure(&self) -> Option<Room> {
        let dir = self.db.parent()?;
        let fs = nix::sys::statvfs::statvfs(dir).ok()?;
        // Both are `c_ulong`-sized on 32-bit ARM and u64 here: widen on every target.
        #[allow(clippy::useless_conversion)]
        let free = u64::from(fs.blocks_available()).saturating_mul(u64::from(fs.fragment_size()));
        let size = |path: &std::path::Path| std::fs::metadata(path).map_or(0, |m| m.len());
        let mut wal = self.db.clone().into_os_string();
        wal.push("-wal");
        Some(Room {
            free,
            db_file: size(&self.db),
            wal_file: size(std::path::Path::new(&wal)),
        })
    }
}

/// Waiting for a command with a deadline, for the writer's retries (a tokio receiver can only be
/// awaited with a timeout inside a runtime; this small one is built at the first need).
#[derive(Debug, Default)]
pub(super) struct Retry {
    runtime: Option<tokio::runtime::Runtime>,
    delay: Option<Duration>,
}

/// What [`Retry::recv`] got. A return value moved once, never stored: boxing the command
/// would cost an allocation per command for nothing.
#[allow(clippy::large_enum_variant)]
enum Waited {
    Command(Command),
    Closed,
    Elapsed,
}

impl Retry {
    fn recv(&mut self, rx: &mut mpsc::Receiver<Command>) -> Waited {
        let delay = self.delay.unwrap_or(RETRY_FIRST);
        self.delay = Some((delay * 2).min(RETRY_MAX));
        if self.runtime.is_none() {
            self.runtime = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .ok();
        }
        let got = match &self.runtime {
            Some(rt) => rt.block_on(async { tokio::time::timeout(delay, rx.recv()).await }),
            // Without a timer the retries wait for the next command.
            None => Ok(rx.blocking_recv()),
        };
        match got {
            Ok(Some(cmd)) => Waited::Command(cmd),
            Ok(None) => Waited::Closed,
            Err(_) => Waited::Elapsed,
        }
    }

    fn reset(&mut self) {
        self.delay = None;
    }
}

/// How a group's transaction went (see "A failed commit" in the module doc).
struct Committed {
    /// What the transaction that went through did; `Err`: why none did.
    result: Result<store::Applied, String>,
    /// Whether the inserts were in the transaction that went through.
    inserts_applied: bool,
    /// Whether the first try failed.
    first_failed: bool,
}

impl Writer {
    /// Runs until the channel is closed (by [`Command::Close`] or by every sender being dropped)
    /// and drained. Returns the error of closing the database, if any.
    pub fn run(mut self) -> Result<(), QueueError> {
        let mut group: Vec<Command> = Vec::with_capacity(self.max_commands);
        while let Some(first) = self.next_command() {
            let mut inserts = 0usize;
            self.accept(first, &mut group, &mut inserts);
            while inserts < self.max_batch && group.len() < self.max_commands {
                match self.rx.try_recv() {
                    Ok(cmd) => self.accept(cmd, &mut group, &mut inserts),
                    Err(_) => break,
                }
            }
            self.apply(&mut group, inserts);
        }
        if !self.unwritten.is_empty() {
            // Last chance for the kept acknowledgements (see `unwritten.rs`).
            self.apply(&mut Vec::new(), 0);
        }
        if !self.unwritten.is_empty() {
            tracing::warn!(
                acknowledged = self.unwritten.acked(),
                "the queue closes with acknowledged rows it could not delete (disk full?): \
                 they are sent again after the restart, same seq"
            );
        }
        tracing::debug!(progress = ?self.progress, "queue writer stopping");
        self.conn.close().map_err(|(_, e)| QueueError::Sqlite(e))
    }

    /// The next command; while acknowledgements are kept, tries them again whenever nothing
    /// arrives for a while. `None` once the channel is closed and drained.
    fn next_command(&mut self) -> Option<Command> {
        loop {
            if self.unwritten.is_empty() {
                self.retry.reset();
                return self.rx.blocking_recv();
            }
            match self.retry.recv(&mut self.rx) {
                Waited::Command(cmd) => return Some(cmd),
                Waited::Closed => return None,
                Waited::Elapsed => self.apply(&mut Vec::new(), 0),
            }
        }
    }

    fn accept(&mut self, cmd: Command, group: &mut Vec<Command>, inserts: &mut usize) {
        match cmd {
            // Closing the receiver refuses later sends (they get `Closed`) while what is already
            // buffered is still drained and committed by the loop, so a push that returned `Ok`
            // before the close is never silently thrown away.
            Command::Close => self.rx.close(),
            Command::Insert(_) => {
                *inserts += 1;
                group.push(cmd);
            }

            _ => group.push(cmd),
        }
    }

    /// The limits of the next group from `store.max_size` and the room on disk; keeps SQLite's
    /// checkpoint threshold and the published capacity in step.
    fn limits(&mut self, inserts: usize) {
        // The average is far off while the queue holds a few rows (the schema's pages count
        // in it): a group's log is bounded by a few times the usual row instead.
        let row = self
            .capacity
            .row_bytes(self.progress.bytes, self.progress.depth)
            .min(4 * capacity::DEFAULT_ROW_BYTES);
        let group = u64::try_from(inserts.max(self.max_batch)).unwrap_or(u64::MAX);
        let margin = row
            .saturating_mul(group)
            .saturating_add(16 * self.capacity.page_size);
        let limits = capacity::limits(self.max_size, self.room.measure(), margin);
        self.capacity.budget = limits.data;
        self.counters
            .capacity_bytes
            .store(limits.data, Ordering::Relaxed);
        let pages = i64::try_from(limits.checkpoint / self.capacity.page_size.max(512))
            .unwrap_or(i64::MAX)
            .max(4);
        if pages != self.checkpoint_pages {
            match self.conn.pragma_update(None, "wal_autocheckpoint", pages) {
                Ok(()) => self.checkpoint_pages = pages,
                Err(e) => self.read_failed("cannot set the checkpoint threshold", &e),
            }
        }
    }

    /// Commits the writes of `group`, publishes the progress, answers the replies. Empties
    /// `group`.
    fn apply(&mut self, group: &mut Vec<Command>, inserts: usize) {
        self.limits(inserts);
        let rejected = self.counters.with_rejected(|r| rejected::total(&r.held));
        let capacity =
            self.capacity
                .plan(self.progress.bytes, self.progress.depth, rejected, inserts);
        // Commands are moved out so replies can be resolved after the commit while the writes
        // borrow the entries.
        let commands: Vec<Command> = std::mem::take(group);
        let plan = self
            .planner
            .plan(&commands, &self.unwritten, capacity, now_ms());
        let outcome = self.execute(&plan);
        drop(plan);
        self.answer(plan::pending(commands), &outcome);
    }

    /// Commits the writes of `plan`, books what they did and publishes the progress.
    fn execute(&mut self, plan: &GroupPlan<'_>) -> Outcome {
        let outcome = if plan.writes.is_empty() {
            self.burst.log(
                plan.drops(true, false),
                self.capacity.on_full,
                Instant::now(),
                None,
            );
            Outcome::Committed {
                unmarked: Vec::new(),
            }
        } else {
            let committed = self.commit(&plan.writes);
            let drops = plan.drops(committed.inserts_applied, committed.first_failed);
            if drops.failed > 0 {
                self.counters
                    .commit_dropped
                    .fetch_add(drops.failed, Ordering::Relaxed);
            }
            let outcome = match committed.result {
                Ok(applied) => {
                    self.committed(&applied, drops);
                    Outcome::applied(applied.unmarked, committed.inserts_applied)
                }
                Err(e) => {
                    self.keep_acknowledgements(plan.fresh());
                    self.failed(drops, &e);
                    Outcome::Failed(e)
                }
            };
            let progress = self.progress;
            self.progress_tx.send_if_modified(|p| {
                let changed = *p != progress;
                *p = progress;
                changed
            });
            outcome
        };
        if plan.rejected > 0 {
            self.counters
                .capacity_dropped
                .fetch_add(plan.rejected as u64, Ordering::Relaxed);
        }
        outcome
    }

    /// Tries the group's transaction, then (see the module doc) again after a checkpoint when
    /// the disk is full, then without the inserts.
    fn commit(&mut self, writes: &[Write<'_>]) -> Committed {
        let mut result = store::apply_writes(&mut self.conn, writes.iter().copied());
        let first_failed = result.is_err();
        if result.as_ref().is_err_and(store::is_disk_full) {
            if let Err(e) = store::checkpoint(&self.conn) {
                self.read_failed("cannot checkpoint the write-ahead log", &e);
            }
            result = store::apply_writes(&mut self.conn, writes.iter().copied());
        }
        let mut inserts_applied = result.is_ok();
        if result.is_err()
            && writes.iter().any(Write::is_insert)
            && writes.iter().any(|w| !w.is_insert())
        {
            // What keeps the session and the disk usage moving, without the inserts that most
            // likely caused the failure.
            result = store::apply_writes(
                &mut self.conn,
                writes.iter().copied().filter(|w| !w.is_insert()),
            );
            inserts_applied = false;
        }
        Committed {
            result: result.map_err(|e| e.to_string()),
            inserts_applied,
            first_failed,
        }
    }

    /// Books a transaction that went through: progress, counters, the burst log.
    fn committed(&mut self, applied: &store::Applied, drops: Drops) {
        self.unwritten.clear();
        self.counters
            .acks_backlogged
            .store(false, Ordering::Relaxed);
        self.rows_in_file =
            (self.rows_in_file + applied.inserted).saturating_sub(applied.removed());
        self.progress.depth = self.rows_in_file;
        if let Some(seq) = applied.last_seq {
            self.progress.last_seq = self.progress.last_seq.max(seq);
        }
        self.counters
            .committed
            .fetch_add(applied.inserted, Ordering::Relaxed);
        // The head only moves when rows left, or when the first row arrived.
        if applied.removed() > 0 || (self.progress.oldest_ts_ms.is_none() && applied.inserted > 0) {
            match store::oldest_ts(&self.conn) {
                Ok(ts) => self.progress.oldest_ts_ms = ts,
                Err(e) => self.read_failed("cannot read the oldest row", &e),
            }
        }
        self.counters
            .expired
            .fetch_add(applied.expired, Ordering::Relaxed);
        self.rejected
            .book(&self.counters, &applied.rejected, &applied.rejected_evicted);
        self.counters
            .capacity_dropped
            .fetch_add(applied.evicted, Ordering::Relaxed);
        match store::used_bytes(&self.conn) {
            Ok(bytes) => self.progress.bytes = bytes,
            Err(e) => self.read_failed("cannot measure the queue size", &e),
        }
        let drops = Drops {
            capacity: drops.capacity + applied.evicted,
            expired: applied.expired,
            ..drops
        };
        self.burst
            .log(drops, self.capacity.on_full, Instant::now(), None);
    }

    /// Books a group none of whose transactions went through.
    fn failed(&mut self, drops: Drops, error: &str) {
        self.burst
            .log(drops, self.capacity.on_full, Instant::now(), Some(error));
        // Re-read the truth: after an I/O error the outcome of COMMIT is the disk's word, not
        // our counter's.
        match store::load_progress(&self.conn) {
            Ok(p) => {
                self.progress = p;
                self.rows_in_file = p.depth;
            }
            Err(e) => self.read_failed("cannot re-read queue progress", &e),
        }
        self.progress.depth = self.rows_in_file.saturating_sub(self.unwritten.existing);
    }

    /// Keeps the acknowledgements among `writes` (a group whose commit failed).
    fn keep_acknowledgements(&mut self, writes: &[Write<'_>]) {
        for write in writes {
            let acked = match *write {
                Write::Ack(seq) => seq..=seq,
                Write::AckRange(from, to) => from..=to,
                Write::Requeue(seq) => {
                    self.unwritten.requeue(seq);
                    continue;
                }
                Write::Reject { seq, reason, .. } => {
                    if self.unwritten.reject(seq, reason) {
                        self.count_existing(seq);
                    }
                    continue;
                }
                _ => continue,
            };
            for seq in acked {
                if self.unwritten.ack(seq) {
                    self.count_existing(seq);
                }
            }
        }
        self.counters
            .acks_backlogged
            .store(self.unwritten.backlogged(), Ordering::Relaxed);
    }

    /// Counts a kept acknowledgement or refusal whose row is still in the file (the depth leaves
    /// it out).
    fn count_existing(&mut self, seq: u64) {
        match store::row_exists(&self.conn, seq) {
            Ok(true) => self.unwritten.existing += 1,
            Ok(false) => {}
            Err(e) => self.read_failed("cannot look up an acknowledged row", &e),
        }
    }

    /// Logs a failed read at most once per [`READ_LOG_EVERY`]: it fails on every group while
    /// the disk does.
    fn read_failed(&mut self, what: &str, error: &dyn std::fmt::Display) {
        let now = Instant::now();
        let (last, suppressed) = &mut self.read_log;
        if last.is_some_and(|at| now.saturating_duration_since(at) < READ_LOG_EVERY) {
            *suppressed += 1;
            return;
        }
        tracing::error!(%error, suppressed = *suppressed, "{what}");
        *last = Some(now);
        *suppressed = 0;
    }

    /// Committed, never-sent rows after `after_seq`, without the acknowledged ones kept in
    /// memory: a full page when there are enough (a short page would make the uplink skip to
    /// the newest row).
    fn fetch(&self, after_seq: u64, limit: usize) -> Result<Vec<StoredRow>, QueueError> {
        if self.unwritten.is_empty() {
            return store::fetch_queued(&self.conn, after_seq, limit);
        }
        let mut rows: Vec<StoredRow> = Vec::new();
        let mut cursor = after_seq;
        while rows.len() < limit {
            let want = limit - rows.len();
            let page = match store::fetch_queued(&self.conn, cursor, want) {
                Ok(page) => page,
                // An undecodable row after good ones: hand those over first.
                Err(QueueError::Decode { .. }) if !rows.is_empty() => break,
                Err(e) => return Err(e),
            };
            let Some(last) = page.last().map(|r| r.seq) else {
                break;
            };
            let full = page.len() == want;
            rows.extend(page.into_iter().filter(|r| !self.unwritten.is_gone(r.seq)));
            if !full {
                break;
            }
            cursor = last;
        }
        Ok(rows)
    }

    /// Answers the replies of a group, after its commit (and after the watch update), so a read
    /// never sees uncommitted rows, sees every write sent before it, and whoever gets a reply
    /// also sees a progress at least as new as that reply.
    fn answer(&mut self, pending: Vec<Pending>, outcome: &Outcome) {
        for p in pending {
            // The requester may have given up (dropped the future): nothing to do then.
            match p {
                Pending::Rows {
                    after_seq,
                    limit,
                    reply,
                } => {
                    let rows = self.fetch(after_seq, limit);
                    if let Err(e) = &rows {
                        self.read_failed("queue fetch failed", e);
                    }
                    let _ = reply.send(rows);
                }
                Pending::Unsettled(reply) => {
                    let _ = reply.send(self.unsettled());
                }
                Pending::Marked { seqs, reply } => {
                    let _ = reply.send(outcome.marked(seqs));
                }
                Pending::Meta { key, reply } => {
                    let _ = reply.send(store::get_meta(&self.conn, key));
                }
                Pending::Probe(reply) => {
                    let _ = reply.send(store::probe_write_lock(&mut self.conn));
                }
                Pending::Recent { key, reply } => {
                    let _ = reply.send(recent::lookup(&self.conn, &key));
                }
                Pending::Answered { reply, inserts } => {
                    let _ = reply.send(outcome.answered(inserts));
                }
                Pending::Inbox(request) => {
                    let failed = outcome.inbox_error(request.inserts());
                    request.resolve(&self.conn, failed.as_deref())
                }
                Pending::Done(reply) => {
                    let _ = reply.send(outcome.done());
                }
            }
        }
    }

    /// The rows with a session state, without those the broker settled already (nothing is
    /// resent for them); remembers which of them are undecodable placeholders.
    fn unsettled(&mut self) -> Result<Vec<StoredRow>, QueueError> {
        let found = store::unsettled_rows(&self.conn)?;
        let unwritten = &self.unwritten;
        self.planner.requeue_on_ack = found
            .requeue_on_ack
            .into_iter()
            .filter(|seq| !unwritten.is_settled(*seq))
            .collect();
        Ok(found
            .rows
            .into_iter()
            .filter(|row| !unwritten.is_settled(row.seq))
            .collect())
    }
}
