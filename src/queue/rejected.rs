//! Rejected rows: rows the broker refused for good (an MQTT 5 PUBACK or PUBREC reason code such
//! as 0x87 not authorized), or the uplink refused itself (0x95, larger than the broker's Maximum
//! Packet Size). Deleting such a row would lose it silently; sending it again would block the
//! queue behind a row the broker will never take. So [`super::Queue::reject`] moves it here,
//! with the reason, in the transaction of its group: it is never fetched, never in `unsettled`,
//! not in the depth nor the age of the queue, and it stays until an operator deals with it.
//!
//! # On-disk format
//!
//! A table beside `messages` in `queue.db`, created by the first rejection (a queue that never
//! had one keeps the layout of a build without it, page for page): additive, like
//! `recent_commands`, so the schema version stays 2. A build that does not know the table
//! ignores it (its rows are simply not sent, as with this build); a rejected `state` value in
//! `messages` instead would be a row an older build decodes as an error or resends. Every read
//! of it checks first that it exists.
//!
//! ```sql
//! CREATE TABLE rejected (
//!     seq         INTEGER PRIMARY KEY,  -- the row's seq in `messages`, kept
//!     device      TEXT    NOT NULL,     -- device .. expires_ms: as the row had them
//!     point       TEXT    NOT NULL,
//!     body        TEXT    NOT NULL,
//!     ts_ms       INTEGER NOT NULL,
//!     qos         INTEGER NOT NULL,
//!     retain      INTEGER NOT NULL,
//!     kind        INTEGER NOT NULL,
//!     expires_ms  INTEGER,
//!     reason      INTEGER NOT NULL,     -- the reason code (0x80..=0xff)
//!     rejected_ms INTEGER NOT NULL      -- when it was moved here, ms since the Unix epoch
//! ) WITHOUT ROWID;
//! ```
//!
//! `WITHOUT ROWID`: its pages are index b-tree pages, so the page walk of a damaged file
//! ([`super::salvage`], of this build or an older one) never takes a rejected row for a queued
//! one. `seq` is its key: consecutive, it is what a requeue gives back to `messages`, and
//! `sqlite_sequence` (the `seq` counter) is untouched by the move, so no `seq` is ever reused.
//!
//! # Capacity
//!
//! Rejected rows are rows of `queue.db`: they count toward `store.max_size`. When the queue is
//! full they are evicted first, oldest `seq` first, before any never-sent row (whatever
//! `store.on_full` says: with `reject_new` a pile of rejected rows would otherwise refuse every
//! new sample). Each eviction is counted per reason ([`super::RejectedStats::evicted`],
//! `fieldrelay_queue_dropped_total{reason="rejected_evicted"}`) and logged.

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use rusqlite::{params, Connection, OptionalExtension, Transaction};

use super::counters::Counters;
use super::store::visit_decoded;
use super::{reason, QueueError, StoredRow};

/// Created by the first rejection; idempotent.
const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS rejected (
    seq         INTEGER PRIMARY KEY,
    device      TEXT    NOT NULL,
    point       TEXT    NOT NULL,
    body        TEXT    NOT NULL,
    ts_ms       INTEGER NOT NULL,
    qos         INTEGER NOT NULL,
    retain      INTEGER NOT NULL,
    kind        INTEGER NOT NULL,
    expires_ms  INTEGER,
    reason      INTEGER NOT NULL,
    rejected_ms INTEGER NOT NULL
) WITHOUT ROWID;";

/// Copies the row into `rejected` (replacing a row of the same `seq`, should one be there); the
/// delete from `messages` that follows decides whether the row existed.
const SQL_COPY: &str = "INSERT OR REPLACE INTO rejected (seq, device, point, body, ts_ms, qos, \
     retain, kind, expires_ms, reason, rejected_ms) SELECT seq, device, point, body, ts_ms, qos, \
     retain, kind, expires_ms, ?2, ?3 FROM messages WHERE seq = ?1";
const SQL_DELETE: &str = "DELETE FROM messages WHERE seq = ?1";
const SQL_OLDEST_REASONS: &str = "SELECT reason, COUNT(*) FROM \
     (SELECT reason FROM rejected ORDER BY seq LIMIT ?1) GROUP BY reason";
const SQL_EVICT_OLDEST: &str = "DELETE FROM rejected WHERE seq IN \
     (SELECT seq FROM rejected ORDER BY seq LIMIT ?1)";
const SQL_HELD: &str = "SELECT reason, COUNT(*) FROM rejected GROUP BY reason";

/// Evicted rejected rows are logged at most this often (they may go a few per group).
const EVICTED_LOG_EVERY: Duration = Duration::from_secs(60);

/// What the writer books of the rejected rows after each commit: the counters and the log.
#[derive(Debug, Default)]
pub(super) struct Book {
    /// When evicted rows were last logged, and the counts logged up to then.
    evicted_log: (Option<Instant>, ByReason),
}

impl Book {
    /// Books the rows a commit moved here and the rows it evicted, per reason.
    pub fn book(&mut self, counters: &Counters, moved: &ByReason, evicted: &ByReason) {
        if !moved.is_empty() {
            Book::moved(counters, moved);
        }
        if !evicted.is_empty() {
            self.evicted(counters, evicted);
        }
    }

    /// Counted per reason. Logged at debug level only: the caller (the uplink) warns, with
    /// the topic and the broker's reason string the queue does not know.
    fn moved(counters: &Counters, moved: &ByReason) {
        counters.with_rejected(|r| {
            add(&mut r.rejected, moved);
            add(&mut r.held, moved);
        });
        for (code, rows) in moved {
            tracing::debug!(rows, reason = %reason::label(*code), "queued rows rejected");
        }
    }

    /// Counted per reason, logged at most once per [`EVICTED_LOG_EVERY`] with the count since
    /// the last line.
    fn evicted(&mut self, counters: &Counters, evicted: &ByReason) {
        let since_open = counters.with_rejected(|r| {
            sub(&mut r.held, evicted);
            add(&mut r.evicted, evicted);
            r.evicted.clone()
        });
        let now = Instant::now();
        let (last, logged) = &mut self.evicted_log;
        if last.is_some_and(|at| now.saturating_duration_since(at) < EVICTED_LOG_EVERY) {
            return;
        }
        let mut unlogged = since_open.clone();
        sub(&mut unlogged, logged);
        let reasons: Vec<String> = unlogged
            .iter()
            .map(|(code, rows)| format!("{rows} {}", reason::label(*code)))
            .collect();
        tracing::warn!(
            evicted = %reasons.join(", "),
            "the queue is full (store.max_size): rejected rows are evicted first, oldest first, \
             and are gone for good; export them with `fieldrelay queue export --rejected`"
        );
        *last = Some(now);
        *logged = since_open;
    }
}

/// Rows per reason code.
pub type ByReason = BTreeMap<u8, u64>;

/// A reason as stored; a value outside a byte (a file written by hand) counts as 0xff.
pub(super) fn reason_of(stored: i64) -> u8 {
    u8::try_from(stored).unwrap_or(u8::MAX)
}

/// Moves row `seq` from `messages` to `rejected` with `reason`; whether it existed (a row
/// acknowledged, expired or evicted meanwhile is gone: nothing happens).
pub(super) fn reject(
    tx: &Transaction<'_>,
    seq: u64,
    reason: u8,
    now_ms: i64,
) -> rusqlite::Result<bool> {
    let Ok(seq) = i64::try_from(seq) else {
        return Ok(false);
    };
    // Rejections are rare: checking the schema each time costs less than knowing it.
    tx.execute_batch(SCHEMA)?;
    let copied = tx
        .prepare_cached(SQL_COPY)?
        .execute(params![seq, i64::from(reason), now_ms])?;
    if copied == 0 {
        return Ok(false);
    }
    Ok(tx.prepare_cached(SQL_DELETE)?.execute([seq])? > 0)
}

/// Deletes the `n` oldest rejected rows (capacity); how many per reason.
pub(super) fn evict_oldest(tx: &Transaction<'_>, n: u64) -> rusqlite::Result<ByReason> {
    if !exists(tx)? {
        return Ok(ByReason::new());
    }
    let n = i64::try_from(n).unwrap_or(i64::MAX);
    let evicted = count_rows(tx, SQL_OLDEST_REASONS, [n])?;
    tx.prepare_cached(SQL_EVICT_OLDEST)?.execute([n])?;
    Ok(evicted)
}

/// Rows held per reason.
pub(crate) fn held(conn: &Connection) -> rusqlite::Result<ByReason> {
    if !exists(conn)? {
        return Ok(ByReason::new());
    }
    count_rows(conn, SQL_HELD, [])
}

fn count_rows(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> rusqlite::Result<ByReason> {
    let mut stmt = conn.prepare_cached(sql)?;
    let mut rows = stmt.query(params)?;
    let mut out = ByReason::new();
    while let Some(row) = rows.next()? {
        let n = u64::try_from(row.get::<_, i64>(1)?).unwrap_or(0);
        *out.entry(reason_of(row.get(0)?)).or_default() += n;
    }
    Ok(out)
}

/// Adds `more` to `into`, reason by reason.
pub(crate) fn add(into: &mut ByReason, more: &ByReason) {
    for (reason, n) in more {
        *into.entry(*reason).or_default() += n;
    }
}

/// Takes `less` from `from`, reason by reason, leaving out the reasons that reach 0.
fn sub(from: &mut ByReason, less: &ByReason) {
    for (reason, n) in less {
        if let Some(held) = from.get_mut(reason) {
            *held = held.saturating_sub(*n);
            if *held == 0 {
                from.remove(reason);
            }
        }
    }
}

/// Whether the file has the table (a file of an older build does not).
pub(super) fn exists(conn: &Connection) -> rusqlite::Result<bool> {
    Ok(conn
        .query_row(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'rejected'",
            [],
            |_| Ok(()),
        )
        .optional()?
        .is_some())
}

/// A rejected row as the export shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct RejectedRow {
    /// The row as it was queued (its delivery state is not kept: `Queued`).
    pub row: StoredRow,
    pub reason: u8,
    /// When it was moved out of the queue, ms since the Unix epoch.
    pub rejected_ms: i64,
}

/// Reads up to `limit` rejected rows with `seq > after_seq` in `seq` order and hands each to
/// `visit`, decoded or as the [`QueueError::Decode`] naming it; returns how many were handed.
pub(super) fn visit(
    conn: &Connection,
    after_seq: i64,
    limit: usize,
    visit: impl FnMut(Result<RejectedRow, QueueError>) -> ControlFlow<()>,
) -> Result<usize, QueueError> {
    if !exists(conn)? {
        return Ok(0);
    }
    // The queue's columns (`store::COLUMNS`, a rejected row has no session), then its own.
    let mut stmt = conn.prepare_cached(
        "SELECT seq, device, point, body, ts_ms, qos, retain, kind, expires_ms, 0, NULL, \
         reason, rejected_ms FROM rejected WHERE seq > ?1 ORDER BY seq LIMIT ?2",
    )?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = stmt.query(params![after_seq, limit])?;
    let then = |row: &rusqlite::Row<'_>, stored| {
        Ok(RejectedRow {
            row: stored,
            reason: reason_of(row.get(11)?),
            rejected_ms: row.get(12)?,
        })
    };
    visit_decoded(rows, then, visit)
}

/// Puts the rejected rows of `reason` (all of them with `None`) back into the queue as never
/// sent, with their `seq` (below `sqlite_sequence`, which stays as it is: no `seq` is reused);
/// how many per reason. A row whose `seq` is in the queue already (it cannot be, short of a
/// hand-edited file) stays rejected.
pub(super) fn requeue(tx: &Transaction<'_>, reason: Option<u8>) -> rusqlite::Result<ByReason> {
    if !exists(tx)? {
        return Ok(ByReason::new());
    }
    let reason = reason.map(i64::from);
    let of_reason = "(?1 IS NULL OR reason = ?1)";
    tx.execute(
        &format!(
            "INSERT OR IGNORE INTO messages (seq, device, point, body, ts_ms, qos, retain, kind, \
             expires_ms, state, pkid) SELECT seq, device, point, body, ts_ms, qos, retain, kind, \
             expires_ms, 0, NULL FROM rejected WHERE {of_reason} ORDER BY seq"
        ),
        [reason],
    )?;
    let counted = count_rows(
        tx,
        &format!(
            "SELECT reason, COUNT(*) FROM rejected WHERE {of_reason} AND seq IN \
             (SELECT seq FROM messages) GROUP BY reason"
        ),
        [reason],
    )?;
    tx.execute(
        &format!("DELETE FROM rejected WHERE {of_reason} AND seq IN (SELECT seq FROM messages)"),
        [reason],
    )?;
    Ok(counted)
}

/// Rows in a count.
pub fn total(counts: &ByReason) -> u64 {
    counts.values().sum()
}

#[cfg(test)]
mod tests;
