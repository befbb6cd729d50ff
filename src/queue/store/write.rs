//! The writes of a group, applied in one transaction (one fsync for the whole group), and the
//! write lock and checkpoint around them.

use rusqlite::{params, CachedStatement, Connection, ErrorCode, Transaction, TransactionBehavior};

use super::codec::qos_to_i64;
use crate::queue::recent::CommandKey;
use crate::queue::{Entry, Message, QueueError};

const SQL_INSERT: &str = "INSERT INTO messages (device, point, body, ts_ms, qos, retain, kind, \
     expires_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)";
const SQL_DELETE: &str = "DELETE FROM messages WHERE seq = ?1";
const SQL_DELETE_RANGE: &str = "DELETE FROM messages WHERE seq BETWEEN ?1 AND ?2";
const SQL_EXPIRE: &str = "DELETE FROM messages WHERE seq = ?1 AND state = 0";
const SQL_MARK_PUBLISHED: &str = "UPDATE messages SET state = 1, pkid = ?2 WHERE seq = ?1";
const SQL_MARK_RECEIVED: &str = "UPDATE messages SET state = 2 WHERE seq = ?1 AND state != 0";
const SQL_RESET_SESSION: &str = "UPDATE messages SET state = 0, pkid = NULL WHERE state != 0";
const SQL_REQUEUE: &str =
    "UPDATE messages SET state = 0, pkid = NULL WHERE seq = ?1 AND state != 0";
const SQL_SWEEP_EXPIRED: &str = "DELETE FROM messages WHERE expires_ms <= ?1 AND state = 0";
const SQL_SET_META: &str = "INSERT INTO meta (key, value) VALUES (?1, ?2) \
     ON CONFLICT(key) DO UPDATE SET value = excluded.value";
const SQL_EVICT_OLDEST: &str = "DELETE FROM messages WHERE seq IN \
     (SELECT seq FROM messages WHERE state = 0 ORDER BY seq LIMIT ?1)";

/// Whether a statement failed because the disk (or the file size limit) is full.
pub(crate) fn is_disk_full(error: &rusqlite::Error) -> bool {
    error.sqlite_error_code() == Some(ErrorCode::DiskFull)
}

/// Copies the write-ahead log into the database as far as no reader needs it (`PASSIVE`: never
/// waits). A log copied completely is written from its start again by the next commit, reusing
/// the file's space.
pub(crate) fn checkpoint(conn: &Connection) -> rusqlite::Result<()> {
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
}

/// Takes and releases the write lock without writing anything (no fsync): `BEGIN IMMEDIATE`
/// waits up to [`BUSY_TIMEOUT`] for another connection's lock and then fails, so this fails
/// exactly when a commit could not start either.
pub(crate) fn probe_write_lock(conn: &mut Connection) -> Result<(), QueueError> {
    conn.transaction_with_behavior(TransactionBehavior::Immediate)?
        .rollback()?;
    Ok(())
}

/// One write applied by [`apply_writes`], in channel order.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Write<'a> {
    Insert {
        entry: &'a Entry,
        expires_ms: Option<i64>,
    },
    /// The broker acknowledged the row (PUBACK/PUBCOMP): delete it whatever its state.
    Ack(u64),
    /// The broker acknowledged every row of `seq` in this range (consecutive acknowledgements
    /// of a group, or those kept over a failed commit): delete them.
    AckRange(u64, u64),
    /// The row is past its `max_age`: delete it if it was never sent.
    Expire(u64),
    MarkPublished {
        seq: u64,
        pkid: u16,
    },
    MarkReceived(u64),
    /// The broker has no session for us: every row is queued again.
    ResetSession,
    /// The broker completed the packet id of an undecodable row whose PUBLISH it may never have
    /// had (see [`unsettled_rows`]): keep the row, queued again, instead of deleting it.
    Requeue(u64),
    /// Delete every never-sent row whose expiry is at or before this time.
    SweepExpired(i64),
    /// Delete this many of the oldest never-sent rows (capacity).
    EvictOldest(u64),
    /// Delete this many of the oldest rejected rows (capacity; before any queued row).
    EvictRejected(u64),
    /// The broker refused the row for good (a reason code): move it to the `rejected` table.
    Reject {
        seq: u64,
        reason: u8,
        now_ms: i64,
    },
    SetMeta {
        key: &'a str,
        value: &'a str,
    },
    /// A command was taken: its write is about to start (see `recent.rs`).
    CommandTaken {
        key: &'a CommandKey,
        now_ms: i64,
    },
    /// A command's answer: the result message's row (if it is published through the queue)
    /// and the recorded answer (if the command has an id), together.
    CommandAnswered {
        key: Option<&'a CommandKey>,
        result: &'a str,
        message: Option<&'a Message>,
        /// The command's inbox row, removed with its answer.
        inbox: Option<i64>,
        now_ms: i64,
    },
    /// A request of the command inbox (see `inbox.rs`).
    Inbox {
        request: &'a crate::queue::inbox::Request,
        now_ms: i64,
    },
}

impl Write<'_> {
    pub fn is_insert(&self) -> bool {
        matches!(
            self,
            Write::Insert { .. }
                | Write::CommandAnswered {
                    message: Some(_),
                    ..
                }
        ) || matches!(self, Write::Inbox { request, .. } if request.inserts())
    }
}

/// What a committed transaction did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Applied {
    /// `MarkPublished` rows that no longer exist (evicted or expired after they were fetched):
    /// their PUBLISH must not be written.
    pub unmarked: Vec<u64>,
    pub inserted: u64,
    /// Rows that existed and were deleted by an ack; an ack of an unknown `seq` counts 0.
    pub acked: u64,
    pub expired: u64,
    pub evicted: u64,
    /// Rows moved to `rejected`, per reason (a `seq` no longer in `messages` counts 0).
    pub rejected: crate::queue::rejected::ByReason,
    /// Rejected rows evicted (capacity), per reason.
    pub rejected_evicted: crate::queue::rejected::ByReason,
    /// `seq` of the last insert, if any.
    pub last_seq: Option<u64>,
}

impl Applied {
    pub fn removed(&self) -> u64 {
        self.acked + self.expired + self.evicted + crate::queue::rejected::total(&self.rejected)
    }
}

/// Applies `writes` in order in ONE transaction and commits it (one fsync for the whole group).
/// On error nothing is applied: the transaction is rolled back when dropped.
pub(crate) fn apply_writes<'a>(
    conn: &mut Connection,
    writes: impl IntoIterator<Item = Write<'a>>,
) -> rusqlite::Result<Applied> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut applied = Applied::default();
    {
        // The hot statements are looked up once per transaction, not once per row.
        let mut hot = Hot {
            insert: tx.prepare_cached(SQL_INSERT)?,
            delete: tx.prepare_cached(SQL_DELETE)?,
        };
        for write in writes {
            apply_write(&tx, &mut hot, write, &mut applied)?;
        }
    }
    tx.commit()?;
    Ok(applied)
}

/// The statements of every group: inserts and acks.
struct Hot<'tx> {
    insert: CachedStatement<'tx>,
    delete: CachedStatement<'tx>,
}

impl Hot<'_> {
    /// Inserts a row; books it in `applied` (`tx`: for the new row's `seq`).
    fn insert(
        &mut self,
        tx: &Transaction<'_>,
        entry: &Entry,
        expires_ms: Option<i64>,
        applied: &mut Applied,
    ) -> rusqlite::Result<()> {
        let s = match entry {
            Entry::Sample(s) => s,
            Entry::Message(m) => return self.insert_message(tx, m, expires_ms, applied),
        };
        self.insert.execute(params![
            &*s.device,
            &*s.point,
            s.value.to_json(),
            s.ts_ms,
            qos_to_i64(s.qos),
            s.retain,
            0i64,
            expires_ms,
        ])?;
        applied.inserted += 1;
        applied.last_seq = u64::try_from(tx.last_insert_rowid()).ok();
        Ok(())
    }

    fn insert_message(
        &mut self,
        tx: &Transaction<'_>,
        m: &Message,
        expires_ms: Option<i64>,
        applied: &mut Applied,
    ) -> rusqlite::Result<()> {
        self.insert.execute(params![
            &*m.device,
            &*m.point,
            m.payload,
            m.ts_ms,
            qos_to_i64(m.qos),
            m.retain,
            m.kind.code(),
            expires_ms,
        ])?;
        applied.inserted += 1;
        applied.last_seq = u64::try_from(tx.last_insert_rowid()).ok();
        Ok(())
    }
}

/// Applies one write inside the group's transaction; books what it did in `applied`.
fn apply_write(
    tx: &Transaction<'_>,
    hot: &mut Hot<'_>,
    write: Write<'_>,
    applied: &mut Applied,
) -> rusqlite::Result<()> {
    match write {
        Write::Insert { entry, expires_ms } => hot.insert(tx, entry, expires_ms, applied)?,
        Write::Ack(seq) => {
            // A seq above i64::MAX was never handed out: nothing to delete.
            if let Ok(seq) = i64::try_from(seq) {
                applied.acked += hot.delete.execute([seq])? as u64;
            }
        }
        Write::AckRange(from, to) => {
            let from = i64::try_from(from).unwrap_or(i64::MAX);
            let to = i64::try_from(to).unwrap_or(i64::MAX);
            applied.acked += tx.prepare_cached(SQL_DELETE_RANGE)?.execute([from, to])? as u64;
        }
        Write::Expire(seq) => {
            if let Ok(seq) = i64::try_from(seq) {
                applied.expired += tx.prepare_cached(SQL_EXPIRE)?.execute([seq])? as u64;
            }
        }
        Write::MarkPublished { seq, pkid } => {
            let marked = match i64::try_from(seq) {
                Ok(row) => tx
                    .prepare_cached(SQL_MARK_PUBLISHED)?
                    .execute(params![row, i64::from(pkid)])?,
                Err(_) => 0,
            };
            if marked == 0 {
                applied.unmarked.push(seq);
            }
        }
        Write::MarkReceived(seq) => {
            if let Ok(seq) = i64::try_from(seq) {
                tx.prepare_cached(SQL_MARK_RECEIVED)?.execute([seq])?;
            }
        }
        Write::ResetSession => {
            tx.prepare_cached(SQL_RESET_SESSION)?.execute([])?;
        }
        Write::Requeue(seq) => {
            if let Ok(seq) = i64::try_from(seq) {
                tx.prepare_cached(SQL_REQUEUE)?.execute([seq])?;
            }
        }
        Write::SweepExpired(now_ms) => {
            applied.expired += tx.prepare_cached(SQL_SWEEP_EXPIRED)?.execute([now_ms])? as u64;
        }
        Write::SetMeta { key, value } => {
            tx.prepare_cached(SQL_SET_META)?.execute([key, value])?;
        }
        Write::EvictOldest(n) => {
            let n = i64::try_from(n).unwrap_or(i64::MAX);
            applied.evicted += tx.prepare_cached(SQL_EVICT_OLDEST)?.execute([n])? as u64;
        }
        Write::EvictRejected(n) => {
            let evicted = crate::queue::rejected::evict_oldest(tx, n)?;
            crate::queue::rejected::add(&mut applied.rejected_evicted, &evicted);
        }
        Write::Reject {
            seq,
            reason,
            now_ms,
        } => {
            if crate::queue::rejected::reject(tx, seq, reason, now_ms)? {
                *applied.rejected.entry(reason).or_default() += 1;
            }
        }
        Write::CommandTaken { key, now_ms } => crate::queue::recent::begin(tx, key, now_ms)?,
        Write::Inbox { request, now_ms } => crate::queue::inbox::apply(tx, request, now_ms)?,
        Write::CommandAnswered {
            key,
            result,
            message,
            inbox,
            now_ms,
        } => {
            if let Some(row) = inbox {
                crate::queue::inbox::delete(tx, row)?;
            }
            if let Some(m) = message {
                hot.insert_message(tx, m, None, applied)?;
            }
            if let Some(key) = key {
                crate::queue::recent::answer(tx, key, result, now_ms)?;
            }
        }
    }
    Ok(())
}
