//! The writer thread: the only read-write connection, fed by one bounded command channel.
//!
//! Loop: block for the first command, drain what is already waiting (group commit), measure the
//! room on disk and plan the group against the capacity, apply every write of the group in one
//! transaction, commit (one fsync), publish the progress, answer the replies of the group.
//! Commands are applied in channel order.
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

use std::collections::{HashMap, HashSet};
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
use super::store::{self, Write};
use super::unwritten::Unwritten;
use super::{Entry, Message, QueueError, QueueProgress, StoredRow};
use crate::sample::now_ms;

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
    /// Per (device, point) `max_age`; empty when no point has one.
    pub max_age: HashMap<(String, String), Duration>,
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
    /// How often at most expired rows are swept (see [`super::QueueOptions::expiry_sweep`]).
    pub sweep_every: Duration,
    pub next_sweep_ms: i64,
    pub burst: DropBurst,
    /// Undecodable rows the last [`Command::Unsettled`] returned as placeholders whose PUBLISH
    /// the broker may never have had: their ack (the PUBCOMP of the PUBREL that released their
    /// packet id) queues them again instead of deleting them (see `store::unsettled_rows`).
    pub requeue_on_ack: HashSet<u64>,
}

/// One command's outcome, resolved after the commit.
enum Pending {
    Rows {
        after_seq: u64,
        limit: usize,
        reply: RowsReply,
    },
    Unsettled(RowsReply),
    Meta {
        key: &'static str,
        reply: oneshot::Sender<Result<Option<String>, QueueError>>,
    },
    Done(DoneReply),
    Marked {
        seqs: Vec<u64>,
        reply: MarkReply,
    },
    /// Liveness probe: the write lock is taken after the group's commit.
    Probe(oneshot::Sender<Result<(), QueueError>>),
    Recent {
        key: CommandKey,
        reply: oneshot::Sender<Result<Option<RecentCommand>, QueueError>>,
    },
    /// A command's answer: failed if its transaction failed, even when the group's other writes
    /// were then retried alone without it.
    Answered {
        reply: DoneReply,
        inserts: bool,
    },
    Inbox(inbox::Request),
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

    fn expires_ms(&self, entry: &Entry) -> Option<i64> {
        let Entry::Sample(s) = entry else {
            return None;
        };
        if self.max_age.is_empty() {
            return None;
        }
        let age = self
            .max_age
            .get(&(s.device.to_string(), s.point.to_string()))?;
        let age_ms = i64::try_from(age.as_millis()).unwrap_or(i64::MAX);
        Some(s.ts_ms.saturating_add(age_ms))
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
        let plan = self
            .capacity
            .plan(self.progress.bytes, self.progress.depth, inserts);
        let now = now_ms();
        let sweep = !self.max_age.is_empty() && now >= self.next_sweep_ms;
        if sweep {
            self.next_sweep_ms = now + i64::try_from(self.sweep_every.as_millis()).unwrap_or(1000);
        }

        // Kept acknowledgements first: nothing of this group may commit before them.
        let mut writes: Vec<Write<'_>> = self
            .unwritten
            .ack_ranges()
            .map(|(from, to)| Write::AckRange(from, to))
            .chain(self.unwritten.requeues().map(Write::Requeue))
            .collect();
        let carried = writes.len();
        let mut pending: Vec<Pending> = Vec::new();
        let mut rejected = 0usize;
        let mut admitted = 0usize;
        if sweep {
            writes.push(Write::SweepExpired(now));
        }
        if plan.evict > 0 {
            writes.push(Write::EvictOldest(plan.evict));
        }
        // Commands are moved out so replies can be resolved after the commit while the writes
        // borrow the entries.
        let commands: Vec<Command> = std::mem::take(group);
        for cmd in &commands {
            match cmd {
                Command::Insert(entry) => {
                    if admitted >= plan.admit {
                        rejected += 1;
                        continue;
                    }
                    admitted += 1;
                    writes.push(Write::Insert {
                        entry,
                        expires_ms: self.expires_ms(entry),
                    });
                }
                Command::Ack(seq) if self.requeue_on_ack.remove(seq) => {
                    writes.push(Write::Requeue(*seq))
                }
                Command::Ack(seq) => writes.push(Write::Ack(*seq)),
                Command::Expire(seqs) => writes.extend(seqs.iter().map(|s| Write::Expire(*s))),
                Command::SetMaxAge(ages) => self.max_age.clone_from(ages),
                Command::MarkPublished { rows, .. } => {
                    writes.extend(rows.iter().map(|(seq, pkid)| Write::MarkPublished {
                        seq: *seq,
                        pkid: *pkid,
                    }))
                }
                Command::MarkReceived { seqs, .. } => {
                    writes.extend(seqs.iter().map(|s| Write::MarkReceived(*s)))
                }
                Command::ResetSession { .. } => {
                    self.requeue_on_ack.clear();
                    writes.push(Write::ResetSession)
                }
                Command::SetMeta { key, value, .. } => writes.push(Write::SetMeta { key, value }),
                Command::Taken { key, .. } => writes.push(Write::CommandTaken { key, now_ms: now }),
                Command::Answered {
                    key,
                    result,
                    message,
                    inbox,
                    ..
                } => writes.push(Write::CommandAnswered {
                    key: key.as_ref(),
                    result,
                    message: message.as_ref(),
                    inbox: *inbox,
                    now_ms: now,
                }),
                Command::Inbox(request) => writes.push(Write::Inbox {
                    request,
                    now_ms: now,
                }),
                _ => {}
            }
        }

        let mut commit_error: Option<String> = None;
        let mut unmarked: Vec<u64> = Vec::new();
        let mut inserts_failed = false;
        if !writes.is_empty() {
            let committed = self.commit(&writes);
            inserts_failed = !committed.inserts_applied;
            let dropped = if committed.inserts_applied {
                0
            } else {
                admitted as u64
            };
            if dropped > 0 {
                self.counters
                    .commit_dropped
                    .fetch_add(dropped, Ordering::Relaxed);
            }
            let drops = Drops {
                capacity: rejected as u64,
                failed: dropped,
                failed_commits: u64::from(committed.first_failed),
                ..Drops::default()
            };
            match committed.result {
                Ok(applied) => {
                    unmarked = applied.unmarked.clone();
                    self.committed(&applied, drops);
                }
                Err(e) => {
                    self.keep_acknowledgements(&writes[carried..]);
                    self.failed(drops, &e);
                    commit_error = Some(e);
                }
            }
            let progress = self.progress;
            self.progress_tx.send_if_modified(|p| {
                let changed = *p != progress;
                *p = progress;
                changed
            });
        } else {
            self.burst.log(
                Drops {
                    capacity: rejected as u64,
                    ..Drops::default()
                },
                self.capacity.on_full,
                Instant::now(),
                None,
            );
        }
        if rejected > 0 {
            self.counters
                .capacity_dropped
                .fetch_add(rejected as u64, Ordering::Relaxed);
        }

        for cmd in commands {
            match cmd {
                Command::Fetch {
                    after_seq,
                    limit,
                    reply,
                } => pending.push(Pending::Rows {
                    after_seq,
                    limit,
                    reply,
                }),
                Command::Unsettled { reply } => pending.push(Pending::Unsettled(reply)),
                Command::MarkPublished { rows, reply } => pending.push(Pending::Marked {
                    seqs: rows.iter().map(|(seq, _)| *seq).collect(),
                    reply,
                }),
                Command::MarkReceived { reply, .. }
                | Command::ResetSession { reply }
                | Command::SetMeta { reply, .. }
                | Command::Taken { reply, .. } => pending.push(Pending::Done(reply)),
                Command::GetMeta { key, reply } => pending.push(Pending::Meta { key, reply }),
                Command::Probe(reply) => pending.push(Pending::Probe(reply)),
                Command::Recent { key, reply } => pending.push(Pending::Recent { key, reply }),
                Command::Answered { reply, message, .. } => pending.push(Pending::Answered {
                    reply,
                    inserts: message.is_some(),
                }),
                Command::Inbox(request) => pending.push(Pending::Inbox(request)),
                _ => {}
            }
        }
        self.answer(pending, commit_error, &unmarked, inserts_failed);
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
            match *write {
                Write::Ack(seq) if self.unwritten.ack(seq) => {
                    match store::row_exists(&self.conn, seq) {
                        Ok(true) => self.unwritten.existing += 1,
                        Ok(false) => {}
                        Err(e) => self.read_failed("cannot look up an acknowledged row", &e),
                    }
                }
                Write::Requeue(seq) => self.unwritten.requeue(seq),
                _ => {}
            }
        }
        self.counters
            .acks_backlogged
            .store(self.unwritten.backlogged(), Ordering::Relaxed);
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
            rows.extend(page.into_iter().filter(|r| !self.unwritten.is_acked(r.seq)));
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
    fn answer(
        &mut self,
        pending: Vec<Pending>,
        commit_error: Option<String>,
        unmarked: &[u64],
        inserts_failed: bool,
    ) {
        let failed = || QueueError::Commit(commit_error.clone().unwrap_or_default());
        for p in pending {
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
                    // The requester may have given up (dropped the future): nothing to do then.
                    let _ = reply.send(rows);
                }
                Pending::Unsettled(reply) => {
                    let rows = store::unsettled_rows(&self.conn).map(|found| {
                        // The broker settled these already: nothing is resent for them.
                        let unwritten = &self.unwritten;
                        self.requeue_on_ack = found
                            .requeue_on_ack
                            .into_iter()
                            .filter(|seq| !unwritten.is_settled(*seq))
                            .collect();
                        found
                            .rows
                            .into_iter()
                            .filter(|row| !unwritten.is_settled(row.seq))
                            .collect()
                    });
                    let _ = reply.send(rows);
                }
                Pending::Marked { seqs, reply } => {
                    let outcome = match &commit_error {
                        Some(_) => Err(failed()),
                        None => Ok(seqs
                            .into_iter()
                            .filter(|seq| unmarked.contains(seq))
                            .collect()),
                    };
                    let _ = reply.send(outcome);
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
                    let outcome = match &commit_error {
                        Some(_) => Err(failed()),
                        None if inserts && inserts_failed => Err(QueueError::Commit(
                            "the transaction holding the command's result failed".to_owned(),
                        )),
                        None => Ok(()),
                    };
                    let _ = reply.send(outcome);
                }
                Pending::Inbox(request) => {
                    // Like an answer: failed if its transaction failed, even when the group's
                    // other writes then went through without it.
                    let failed = match &commit_error {
                        Some(e) => Some(e.clone()),
                        None if request.inserts() && inserts_failed => {
                            Some("the transaction holding the commands failed".to_owned())
                        }
                        None => None,
                    };
                    request.resolve(&self.conn, failed.as_deref())
                }
                Pending::Done(reply) => {
                    let _ = reply.send(match &commit_error {
                        Some(_) => Err(failed()),
                        None => Ok(()),
                    });
                }
            }
        }
    }
}
