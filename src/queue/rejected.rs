//! Rejected rows: rows the broker refused for good (an MQTT 5 PUBACK or PUBREC reason code such
//! as 0x87 not authorized), or the uplink refused itself (0x95, larger than the broker's Maximum
//! Packet Size). Deleting such a row would lose it silently; sending it again would block the
//! queue behind a row the broker will never take. So [`super::Queue::reject`] moves it here,
//! with the reason, in the transaction of its group: it is never fetched, never in `unsettled`,
//! not in the depth nor the age of the queue, and it stays until an operator deals with it.
//!
//! # On-disk format
//!
//! A table beside `messages` in `queue.db`, created if missing at every open, like
//! `recent_commands`: additive, so the schema version stays 2. A build that does not know the
//! table ignores it (its rows are simply not sent, as with this build); a rejected `state` value
//! in `messages` instead would be a row an older build decodes as an error or resends.
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
//! Rejected rows are rows of `queue.db`: they count toward `store.max_size`.

use std::collections::BTreeMap;

use rusqlite::{params, Connection, Transaction};

/// Created at every open; idempotent.
pub(super) const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS rejected (
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
const SQL_HELD: &str = "SELECT reason, COUNT(*) FROM rejected GROUP BY reason";

/// Rows per reason code.
pub type ByReason = BTreeMap<u8, u64>;

/// A reason as stored; a value outside a byte (a file written by hand) counts as 0xff.
fn reason_of(stored: i64) -> u8 {
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
    let copied = tx
        .prepare_cached(SQL_COPY)?
        .execute(params![seq, i64::from(reason), now_ms])?;
    if copied == 0 {
        return Ok(false);
    }
    Ok(tx.prepare_cached(SQL_DELETE)?.execute([seq])? > 0)
}

/// Rows held per reason.
pub(crate) fn held(conn: &Connection) -> rusqlite::Result<ByReason> {
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
pub(super) fn add(into: &mut ByReason, more: &ByReason) {
    for (reason, n) in more {
        *into.entry(*reason).or_default() += n;
    }
}

/// Rows in a count.
pub(super) fn total(counts: &ByReason) -> u64 {
    counts.values().sum()
}

#[cfg(test)]
mod tests;
