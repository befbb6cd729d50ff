//! The writer thread: the only read-write connection, fed by one bounded command channel.
//!
//! Loop: block for the first command, drain what is already waiting (group commit), apply every
//! insert and delete of the group in one transaction, commit (one fsync), publish the progress,
//! answer the fetches of the group. Commands are applied in channel order.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot, watch};

use super::store::{self, Write};
use super::{Counters, QueueError, QueueProgress, StoredSample};
use crate::sample::Sample;

/// Reply to a fetch: the rows, or why they could not be read.
pub(super) type FetchReply = oneshot::Sender<Result<Vec<StoredSample>, QueueError>>;

/// A request to the writer thread.
#[derive(Debug)]
pub(super) enum Command {
    /// Commit a QoS 1/2 sample.
    Insert(Sample),
    /// Read committed rows with `seq > after_seq`; answered after the group's commit.
    Fetch {
        after_seq: u64,
        limit: usize,
        reply: FetchReply,
    },
    /// Delete a row (broker acknowledged it). Unknown `seq`: no-op.
    Ack(u64),
    /// Stop accepting commands, commit what is already queued, then exit.
    Close,
    /// Liveness probe ([`super::Queue::probe`]): answered after the group's commit, once the
    /// write lock could be taken.
    Probe(oneshot::Sender<Result<(), QueueError>>),
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
    /// Most inserts per transaction: bounds the transaction (and the latency of the fetches
    /// waiting behind it) when producers outrun the disk.
    pub max_batch: usize,
    /// Most commands per group, inserts or not; bounds the memory of one group when acks or
    /// fetches flood in.
    pub max_commands: usize,
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
            Command::Fetch { .. } | Command::Ack(_) | Command::Probe(_) => group.push(cmd),
        }
    }

    /// Commits the writes of `group`, publishes the progress, answers the fetches. Empties
    /// `group`.
    fn apply(&mut self, group: &mut Vec<Command>, inserts: usize) {
        let has_writes = group
            .iter()
            .any(|c| matches!(c, Command::Insert(_) | Command::Ack(_)));
        if has_writes {
            let writes = group.iter().filter_map(|c| match c {
                Command::Insert(s) => Some(Write::Insert(s)),
                Command::Ack(seq) => Some(Write::Delete(*seq)),
                _ => None,
            });
            match store::apply_writes(&mut self.conn, writes) {
                Ok(applied) => {
                    self.progress.depth =
                        (self.progress.depth + applied.inserted).saturating_sub(applied.deleted);
                    if let Some(seq) = applied.last_seq {
                        self.progress.last_seq = self.progress.last_seq.max(seq);
                    }
                }
                Err(e) => {
                    // Nothing of this group was applied (rolled back). The inserts are dropped
                    // and counted, not retried: a retry loop here would hide a full or failing
                    // disk. Acks are lost too, so those rows are resent later with the same seq
                    // (a duplicate consumers drop). Rows committed earlier are untouched.
                    self.counters
                        .commit_dropped
                        .fetch_add(inserts as u64, Ordering::Relaxed);
                    tracing::error!(error = %e, dropped = inserts, "queue commit failed; samples of this group dropped");
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
        }
        // Fetches are answered after the commit (and after the watch update), so a fetch never
        // sees uncommitted rows, sees every ack sent before it, and whoever gets a reply also
        // sees a progress at least as new as that reply.
        for cmd in group.drain(..) {
            match cmd {
                Command::Fetch {
                    after_seq,
                    limit,
                    reply,
                } => {
                    let rows = store::fetch(&self.conn, after_seq, limit);
                    if let Err(e) = &rows {
                        tracing::error!(error = %e, after_seq, "queue fetch failed");
                    }
                    // The requester may have given up (dropped the future): nothing to do then.
                    let _ = reply.send(rows);
                }
                Command::Probe(reply) => {
                    let _ = reply.send(store::probe_write_lock(&mut self.conn));
                }
                Command::Insert(_) | Command::Ack(_) | Command::Close => {}
            }
        }
    }
}
