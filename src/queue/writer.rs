//! The writer thread: the only read-write connection, fed by one bounded command channel.
//!
//! Loop: block for the first command, drain what is already waiting (group commit), plan the
//! group against the capacity, apply every write of the group in one transaction, commit (one
//! fsync), publish the progress, answer the replies of the group. Commands are applied in channel
//! order.
//!
//! # Session writes and the poison flag
//! Writes the MQTT session depends on (acks, `MarkPublished`, `MarkReceived`, `ResetSession`) are
//! replied to after their commit, and the uplink writes to the socket only after an `Ok`. If a
//! group holding such writes fails, an ack may be lost while the session already reused its
//! packet id: a later `MarkPublished` with that id would then leave two rows with the same id on
//! disk. So after such a failure the writer is *poisoned*: it refuses `MarkPublished` and
//! `MarkReceived` (replying [`QueueError::SessionLost`]) until the uplink reloads the session from
//! disk ([`Command::Unsettled`]) or resets it, which it does on its next connection.
//!
//! # A failed commit
//! If a group with inserts fails (disk full, I/O error), its other writes are retried alone in a
//! second transaction: on a nearly full disk, updates and deletes may still fit (they reuse
//! pages and the preallocated log) where inserts do not, so the uplink keeps draining. New
//! samples are dropped and counted; a lost ack only means its row is sent again (same `seq`).
//! Nothing is retried behind the caller's back beyond that; commits succeed again by themselves
//! once space returns.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot, watch};

use super::capacity::{Capacity, DropBurst, Drops};
use super::inbox;
use super::recent::{self, CommandKey, RecentCommand};
use super::store::{self, Write};
use super::{Counters, Entry, Message, QueueError, QueueProgress, StoredRow};
use crate::sample::now_ms;

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
    /// Read the rows with a session state; clears the poison flag.
    Unsettled {
        reply: RowsReply,
    },
    /// Every row back to queued (the broker lost our session); clears the poison flag.
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

impl Command {
    fn is_session_write(&self) -> bool {
        matches!(
            self,
            Command::Ack(_)
                | Command::MarkPublished { .. }
                | Command::MarkReceived { .. }
                | Command::ResetSession { .. }
        )
    }
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
    pub poisoned: bool,
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
    Done {
        reply: DoneReply,
        refused: bool,
        clears_poison: bool,
    },
    Marked {
        seqs: Vec<u64>,
        reply: MarkReply,
        refused: bool,
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

impl Writer {
    /// Runs until the channel is closed (by [`Command::Close`] or by every sender being dropped)
    /// and drained. Returns the error of closing the database, if any.
    pub fn run(mut self) -> Result<(), QueueError> {
        let mut group: Vec<Command> = Vec::with_capacity(self.max_commands);
        while let Some(first) = self.rx.blocking_recv() {
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
        tracing::debug!(progress = ?self.progress, "queue writer stopping");
        self.conn.close().map_err(|(_, e)| QueueError::Sqlite(e))
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

    /// Commits the writes of `group`, publishes the progress, answers the replies. Empties
    /// `group`.
    fn apply(&mut self, group: &mut Vec<Command>, inserts: usize) {
        let plan = self
            .capacity
            .plan(self.progress.bytes, self.progress.depth, inserts);
        let now = now_ms();
        let sweep = !self.max_age.is_empty() && now >= self.next_sweep_ms;
        if sweep {
            self.next_sweep_ms = now + i64::try_from(self.sweep_every.as_millis()).unwrap_or(1000);
        }

        let mut writes: Vec<Write<'_>> = Vec::with_capacity(group.len() + 2);
        let mut pending: Vec<Pending> = Vec::new();
        let mut session_writes = false;
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
            session_writes |= cmd.is_session_write();
        }
        let poisoned = self.poisoned;
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
                Command::MarkPublished { rows, .. } if !poisoned => {
                    writes.extend(rows.iter().map(|(seq, pkid)| Write::MarkPublished {
                        seq: *seq,
                        pkid: *pkid,
                    }))
                }
                Command::MarkReceived { seqs, .. } if !poisoned => {
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
        let mut first_failed = false;
        if !writes.is_empty() {
            let mut result = store::apply_writes(&mut self.conn, writes.iter().copied());
            first_failed = result.is_err();
            let mut dropped_inserts = 0u64;
            if let Err(e) = &result {
                dropped_inserts = admitted as u64;
                tracing::error!(error = %e, dropped = admitted, "queue commit failed; samples of this group dropped");
                if admitted > 0 && writes.iter().any(|w| !w.is_insert()) {
                    // Retry what keeps the session and the disk usage moving, without the
                    // inserts that most likely caused the failure.
                    result = store::apply_writes(
                        &mut self.conn,
                        writes.iter().copied().filter(|w| !w.is_insert()),
                    );
                    if let Err(e) = &result {
                        tracing::error!(error = %e, "queue commit failed again without the inserts");
                    }
                }
            }
            if dropped_inserts > 0 {
                self.counters
                    .commit_dropped
                    .fetch_add(dropped_inserts, Ordering::Relaxed);
            }
            match result {
                Ok(applied) => {
                    unmarked = applied.unmarked.clone();
                    self.progress.depth =
                        (self.progress.depth + applied.inserted).saturating_sub(applied.removed());
                    if let Some(seq) = applied.last_seq {
                        self.progress.last_seq = self.progress.last_seq.max(seq);
                    }
                    self.counters
                        .committed
                        .fetch_add(applied.inserted, Ordering::Relaxed);
                    // The head only moves when rows left, or when the first row arrived.
                    if applied.removed() > 0
                        || (self.progress.oldest_ts_ms.is_none() && applied.inserted > 0)
                    {
                        match store::oldest_ts(&self.conn) {
                            Ok(ts) => self.progress.oldest_ts_ms = ts,
                            Err(e) => tracing::warn!(error = %e, "cannot read the oldest row"),
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
                        Err(e) => tracing::warn!(error = %e, "cannot measure the queue size"),
                    }
                    self.burst.log(
                        Drops {
                            capacity: applied.evicted + rejected as u64,
                            expired: applied.expired,
                            failed: dropped_inserts,
                            live: 0,
                        },
                        self.capacity.on_full,
                        Instant::now(),
                    );
                }
                Err(e) => {
                    if session_writes {
                        self.poisoned = true;
                    }
                    commit_error = Some(e.to_string());
                    self.burst.log(
                        Drops {
                            capacity: rejected as u64,
                            expired: 0,
                            failed: dropped_inserts,
                            live: 0,
                        },
                        self.capacity.on_full,
                        Instant::now(),
                    );
                    // Re-read the truth: after an I/O error the outcome of COMMIT is the disk's
                    // word, not our counter's.
                    match store::load_progress(&self.conn) {
                        Ok(p) => self.progress = p,
                        Err(e) => tracing::error!(error = %e, "cannot re-read queue progress"),
                    }
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
                    refused: poisoned,
                }),
                Command::MarkReceived { reply, .. } => pending.push(Pending::Done {
                    reply,
                    refused: poisoned,
                    clears_poison: false,
                }),
                Command::ResetSession { reply } => pending.push(Pending::Done {
                    reply,
                    refused: false,
                    clears_poison: true,
                }),
                Command::SetMeta { reply, .. } => pending.push(Pending::Done {
                    reply,
                    refused: false,
                    clears_poison: false,
                }),
                Command::GetMeta { key, reply } => pending.push(Pending::Meta { key, reply }),
                Command::Probe(reply) => pending.push(Pending::Probe(reply)),
                Command::Recent { key, reply } => pending.push(Pending::Recent { key, reply }),
                Command::Taken { reply, .. } => pending.push(Pending::Done {
                    reply,
                    refused: false,
                    clears_poison: false,
                }),
                Command::Answered { reply, message, .. } => pending.push(Pending::Answered {
                    reply,
                    inserts: message.is_some(),
                }),
                Command::Inbox(request) => pending.push(Pending::Inbox(request)),
                _ => {}
            }
        }
        // Replies go out after the commit (and after the watch update), so a read never sees
        // uncommitted rows, sees every write sent before it, and whoever gets a reply also sees
        // a progress at least as new as that reply.
        for p in pending {
            match p {
                Pending::Rows {
                    after_seq,
                    limit,
                    reply,
                } => {
                    let rows = store::fetch_queued(&self.conn, after_seq, limit);
                    if let Err(e) = &rows {
                        tracing::error!(error = %e, after_seq, "queue fetch failed");
                    }
                    // The requester may have given up (dropped the future): nothing to do then.
                    let _ = reply.send(rows);
                }
                Pending::Unsettled(reply) => {
                    let rows = store::unsettled_rows(&self.conn).map(|found| {
                        self.poisoned = false;
                        self.requeue_on_ack = found.requeue_on_ack.into_iter().collect();
                        found.rows
                    });
                    let _ = reply.send(rows);
                }
                Pending::Marked {
                    seqs,
                    reply,
                    refused,
                } => {
                    let outcome = match (&commit_error, refused) {
                        (Some(e), _) => Err(QueueError::Commit(e.clone())),
                        (None, true) => Err(QueueError::SessionLost),
                        (None, false) => Ok(seqs
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
                        Some(e) => Err(QueueError::Commit(e.clone())),
                        None if inserts && first_failed => Err(QueueError::Commit(
                            "the transaction holding the command's result failed".to_owned(),
                        )),
                        None => Ok(()),
                    };
                    let _ = reply.send(outcome);
                }
                Pending::Inbox(request) => {
                    // Like an answer: failed if its transaction failed, even when the group's
                    // other writes were then retried alone without it.
                    let failed = match &commit_error {
                        Some(e) => Some(e.clone()),
                        None if first_failed && request.inserts() => {
                            Some("the transaction holding the commands failed".to_owned())
                        }
                        None => None,
                    };
                    request.resolve(&self.conn, failed.as_deref())
                }
                Pending::Done {
                    reply,
                    refused,
                    clears_poison,
                } => {
                    let outcome = match (&commit_error, refused) {
                        (Some(e), _) => Err(QueueError::Commit(e.clone())),
                        (None, true) => Err(QueueError::SessionLost),
                        (None, false) => {
                            if clears_poison {
                                self.poisoned = false;
                            }
                            Ok(())
                        }
                    };
                    let _ = reply.send(outcome);
                }
            }
        }
    }
}
