//! On-disk format: schema, pragmas, migrations, SQL and the row codec.
//!
//! Everything that knows SQL lives here; the writer thread ([`super::writer`]) only sequences
//! calls into this module. The read-only [`QueueReader`] shares the codec so that tools and tests
//! decode rows exactly as the uplink sees them.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{params, Connection, OpenFlags, TransactionBehavior};

use super::{QueueError, QueueProgress, StoredSample};
use crate::config::Qos;
use crate::sample::{Sample, Value};

/// File name of the queue inside the data directory.
pub const DB_FILE: &str = "queue.db";

/// Schema version this build writes (`PRAGMA user_version`). A database with a newer version is
/// refused rather than written to: an older binary must not corrupt a newer layout.
pub(super) const SCHEMA_VERSION: i64 = 1;

/// How long a statement waits for a lock held by another connection before failing with
/// `SQLITE_BUSY`. The writer is the only read-write connection, but read-only tools (and a
/// checkpoint or WAL recovery they trigger) can hold locks briefly; a few seconds rides over that
/// without turning a stuck peer into an unbounded stall of the writer.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Schema v1. `AUTOINCREMENT` (not a plain rowid) so that a `seq` is never reused, even after the
/// newest rows were deleted: consumers de-duplicate by `seq`. `value` holds the JSON text of the
/// [`Value`] (`true`, `42`, `21.5`), which is also what goes on the wire.
const SCHEMA_V1: &str = "CREATE TABLE samples (
    seq    INTEGER PRIMARY KEY AUTOINCREMENT,
    device TEXT    NOT NULL,
    point  TEXT    NOT NULL,
    value  TEXT    NOT NULL,
    ts_ms  INTEGER NOT NULL,
    qos    INTEGER NOT NULL,
    retain INTEGER NOT NULL
)";

const SQL_INSERT: &str =
    "INSERT INTO samples (device, point, value, ts_ms, qos, retain) VALUES (?1, ?2, ?3, ?4, ?5, ?6)";
const SQL_DELETE: &str = "DELETE FROM samples WHERE seq = ?1";
const SQL_FETCH: &str = "SELECT seq, device, point, value, ts_ms, qos, retain FROM samples \
     WHERE seq > ?1 ORDER BY seq LIMIT ?2";
/// The newest `seq` ever handed out. `sqlite_sequence` keeps it after the rows are deleted, which
/// `MAX(seq)` would not.
const SQL_LAST_SEQ: &str =
    "SELECT COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'samples'), 0)";
const SQL_DEPTH: &str = "SELECT COUNT(*) FROM samples";

/// `<data_dir>/queue.db`.
pub fn db_path(data_dir: &Path) -> PathBuf {
    data_dir.join(DB_FILE)
}

/// Opens the read-write connection: pragmas first, then the schema migration.
pub(super) fn open_rw(path: &Path) -> Result<Connection, QueueError> {
    let mut conn = Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // WAL: readers never block the writer and a commit is one append + one fsync of the log.
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(QueueError::JournalMode(mode));
    }
    // FULL: the WAL is fsynced at every commit, so a committed row survives power loss (NORMAL
    // would only survive process crashes).
    conn.pragma_update(None, "synchronous", "FULL")?;
    migrate(&mut conn)?;
    Ok(conn)
}

/// Brings the schema to [`SCHEMA_VERSION`] inside one transaction.
fn migrate(conn: &mut Connection) -> Result<(), QueueError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Exclusive)?;
    let version: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(QueueError::SchemaTooNew {
            found: version,
            supported: SCHEMA_VERSION,
        });
    }
    if version < 1 {
        tx.execute_batch(SCHEMA_V1)?;
    }
    // Future versions: `if version < 2 { ... }` here, in order.
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    tx.commit()?;
    Ok(())
}

/// Reads `last_seq` (from `sqlite_sequence`) and `depth` (`COUNT(*)`).
pub(super) fn load_progress(conn: &Connection) -> Result<QueueProgress, QueueError> {
    let last_seq: i64 = conn.query_row(SQL_LAST_SEQ, [], |r| r.get(0))?;
    let depth: i64 = conn.query_row(SQL_DEPTH, [], |r| r.get(0))?;
    Ok(QueueProgress {
        last_seq: u64::try_from(last_seq).unwrap_or(0),
        depth: u64::try_from(depth).unwrap_or(0),
    })
}

/// Takes and releases the write lock without writing anything (no fsync): `BEGIN IMMEDIATE`
/// waits up to [`BUSY_TIMEOUT`] for another connection's lock and then fails, so this fails
/// exactly when a commit could not start either.
pub(super) fn probe_write_lock(conn: &mut Connection) -> Result<(), QueueError> {
    conn.transaction_with_behavior(TransactionBehavior::Immediate)?
        .rollback()?;
    Ok(())
}

/// One write applied by [`apply_writes`], in channel order.
pub(super) enum Write<'a> {
    Insert(&'a Sample),
    Delete(u64),
}

/// What a committed transaction did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Applied {
    pub inserted: u64,
    /// Rows that existed and were deleted; an ack of an unknown `seq` counts 0.
    pub deleted: u64,
    /// `seq` of the last insert, if any.
    pub last_seq: Option<u64>,
}

/// Applies `writes` in order in ONE transaction and commits it (one fsync for the whole group).
/// On error nothing is applied: the transaction is rolled back when dropped.
pub(super) fn apply_writes<'a>(
    conn: &mut Connection,
    writes: impl IntoIterator<Item = Write<'a>>,
) -> rusqlite::Result<Applied> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut applied = Applied::default();
    {
        let mut insert = tx.prepare_cached(SQL_INSERT)?;
        let mut delete = tx.prepare_cached(SQL_DELETE)?;
        for write in writes {
            match write {
                Write::Insert(s) => {
                    insert.execute(params![
                        &*s.device,
                        &*s.point,
                        s.value.to_json(),
                        s.ts_ms,
                        qos_to_i64(s.qos),
                        s.retain,
                    ])?;
                    applied.inserted += 1;
                    applied.last_seq = u64::try_from(tx.last_insert_rowid()).ok();
                }
                Write::Delete(seq) => {
                    // A seq above i64::MAX was never handed out: nothing to delete.
                    if let Ok(seq) = i64::try_from(seq) {
                        applied.deleted += delete.execute([seq])? as u64;
                    }
                }
            }
        }
    }
    tx.commit()?;
    Ok(applied)
}

/// Committed rows with `seq > after_seq`, in `seq` order, at most `limit`.
///
/// A row that cannot be decoded ends the page: if rows precede it they are returned (so the
/// consumer makes progress), otherwise the result is [`QueueError::Decode`] naming its `seq`.
pub(super) fn fetch(
    conn: &Connection,
    after_seq: u64,
    limit: usize,
) -> Result<Vec<StoredSample>, QueueError> {
    let Ok(after) = i64::try_from(after_seq) else {
        return Ok(Vec::new());
    };
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut stmt = conn.prepare_cached(SQL_FETCH)?;
    let rows = stmt.query(params![after, limit])?;
    collect_rows(rows, true)
}

/// Every row, in `seq` order (read-only helper).
fn fetch_all(conn: &Connection) -> Result<Vec<StoredSample>, QueueError> {
    let mut stmt = conn.prepare_cached(SQL_FETCH)?;
    let rows = stmt.query(params![-1i64, i64::MAX])?;
    collect_rows(rows, false)
}

/// Decodes rows. With `partial`, a decode error after at least one good row ends the page and
/// returns `Ok` (the next page starts at the bad row and reports it).
fn collect_rows(
    mut rows: rusqlite::Rows<'_>,
    partial: bool,
) -> Result<Vec<StoredSample>, QueueError> {
    let mut out = Vec::new();
    // Consecutive rows mostly share device and point names: reuse the last Arc instead of
    // allocating one per row.
    let mut last_device: Option<Arc<str>> = None;
    let mut last_point: Option<Arc<str>> = None;
    while let Some(row) = rows.next()? {
        match decode_row(row, &mut last_device, &mut last_point) {
            Ok(s) => out.push(s),
            Err(e @ QueueError::Decode { .. }) if partial && !out.is_empty() => {
                tracing::debug!(error = %e, "fetch page ends before an undecodable row");
                break;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

fn decode_row(
    row: &rusqlite::Row<'_>,
    last_device: &mut Option<Arc<str>>,
    last_point: &mut Option<Arc<str>>,
) -> Result<StoredSample, QueueError> {
    let seq: i64 = row.get(0)?;
    let seq =
        u64::try_from(seq).map_err(|_| decode_err(0, "seq", format!("negative seq {seq}")))?;
    let device = intern(col_str(row, 1, seq, "device")?, last_device);
    let point = intern(col_str(row, 2, seq, "point")?, last_point);
    let value_text = col_str(row, 3, seq, "value")?;
    let value = Value::from_json(value_text).ok_or_else(|| {
        decode_err(
            seq,
            "value",
            format!("{value_text:?} is not a bool or finite number"),
        )
    })?;
    let ts_ms = col_i64(row, 4, seq, "ts_ms")?;
    let qos_raw = col_i64(row, 5, seq, "qos")?;
    let qos = qos_from_i64(qos_raw)
        .ok_or_else(|| decode_err(seq, "qos", format!("{qos_raw} is not 1 or 2")))?;
    let retain = match col_i64(row, 6, seq, "retain")? {
        0 => false,
        1 => true,
        other => return Err(decode_err(seq, "retain", format!("{other} is not 0 or 1"))),
    };
    Ok(StoredSample {
        seq,
        sample: Sample {
            device,
            point,
            value,
            ts_ms,
            qos,
            retain,
        },
    })
}

/// A TEXT column; a wrong type or invalid UTF-8 is a decode error of that row.
fn col_str<'r>(
    row: &'r rusqlite::Row<'_>,
    idx: usize,
    seq: u64,
    column: &'static str,
) -> Result<&'r str, QueueError> {
    row.get_ref(idx)?
        .as_str()
        .map_err(|e| decode_err(seq, column, e.to_string()))
}

/// An INTEGER column; a wrong type is a decode error of that row.
fn col_i64(
    row: &rusqlite::Row<'_>,
    idx: usize,
    seq: u64,
    column: &'static str,
) -> Result<i64, QueueError> {
    row.get_ref(idx)?
        .as_i64()
        .map_err(|e| decode_err(seq, column, e.to_string()))
}

fn decode_err(seq: u64, column: &'static str, reason: String) -> QueueError {
    QueueError::Decode {
        seq,
        column,
        reason,
    }
}

fn intern(s: &str, last: &mut Option<Arc<str>>) -> Arc<str> {
    match last {
        Some(a) if &**a == s => Arc::clone(a),
        _ => {
            let a: Arc<str> = Arc::from(s);
            *last = Some(Arc::clone(&a));
            a
        }
    }
}

fn qos_to_i64(qos: Qos) -> i64 {
    qos as i64
}

fn qos_from_i64(raw: i64) -> Option<Qos> {
    match raw {
        1 => Some(Qos::AtLeastOnce),
        2 => Some(Qos::ExactlyOnce),
        // QoS 0 is never stored: a 0 on disk is as corrupt as a 7.
        _ => None,
    }
}

/// A read-only view of a queue database, for tests and tools (for instance waiting until a value
/// has been committed while the gateway runs in another process).
///
/// It opens the file with `SQLITE_OPEN_READ_ONLY`: it never creates, migrates or writes, so it
/// cannot disturb the gateway's writer (WAL readers take no write lock).
#[derive(Debug)]
pub struct QueueReader {
    conn: Connection,
}

impl QueueReader {
    /// `path` is the data directory (then `queue.db` inside it is opened) or the database file.
    pub fn open(path: &Path) -> Result<QueueReader, QueueError> {
        let file = if path.is_dir() {
            db_path(path)
        } else {
            path.to_path_buf()
        };
        let conn = Connection::open_with_flags(
            file,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        Ok(QueueReader { conn })
    }

    /// Every committed, unacknowledged row in `seq` order. Fails with [`QueueError::Decode`] on
    /// the first undecodable row.
    pub fn rows(&self) -> Result<Vec<StoredSample>, QueueError> {
        fetch_all(&self.conn)
    }

    /// Committed `last_seq` and depth, as the writer would report them.
    pub fn progress(&self) -> Result<QueueProgress, QueueError> {
        load_progress(&self.conn)
    }
}

/// One-shot form of [`QueueReader::rows`]: `path` is the data directory or the database file.
pub fn read_only_rows(path: &Path) -> Result<Vec<StoredSample>, QueueError> {
    QueueReader::open(path)?.rows()
}
