//! The read-only [`QueueReader`] for tools and tests: never creates, migrates or writes.

use std::ffi::OsString;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

use super::codec::visit_decoded;
use super::query::{fetch_all, get_meta, load_progress, used_bytes};
use super::{db_path, BUSY_TIMEOUT, COLUMNS, SESSION_PEER};
use crate::queue::summary::{Contents, Group, InFlight, RejectedGroup, RowRef};
use crate::queue::{CommandRecord, Entry, QueueError, QueueProgress, StoredRow, StoredSample};

/// Where a file keeps its rows. Schema v1 (a contract v1 build's file, or one quarantined before
/// its migration) has `samples` with a `value` column and no session; v2 has `messages`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    V1,
    V2,
}

impl Layout {
    /// A row source with the v2 columns ([`COLUMNS`]), for `SELECT … FROM {source}`. The v1
    /// subquery is flattened by SQLite, so `seq` conditions still seek the rowid b-tree.
    fn source(self) -> &'static str {
        match self {
            Layout::V2 => "messages",
            Layout::V1 => {
                "(SELECT seq, device, point, value AS body, ts_ms, qos, retain, 0 AS kind, \
                 NULL AS expires_ms, 0 AS state, NULL AS pkid FROM samples)"
            }
        }
    }
}

/// What a file says about itself before any row is read: `PRAGMA user_version` and its tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSchema {
    pub version: i64,
    pub tables: Vec<String>,
}

/// A read-only view of a queue database, for tests and tools (for instance waiting until a value
/// has been committed while the gateway runs in another process, or `fieldrelay queue`).
///
/// It never creates, migrates or writes, so it cannot disturb the gateway's writer (WAL readers
/// take no write lock and do not block commits; a long read only keeps the log from being
/// checkpointed past its snapshot until it ends):
/// - with a `-wal` file beside the database (a writer is active, or left a log behind) it reads
///   through the log, sharing the writer's `-shm` index;
/// - without one, no writer is active and the file is complete: it is opened `immutable`. A
///   plain read-only connection to a WAL database would create `-wal` and `-shm` files (owned by
///   whoever runs the tool: root's would lock the service user out of its own queue) and could
///   not delete them again.
///
/// It reads schema v2 unless told otherwise ([`QueueReader::with_layout`]).
#[derive(Debug)]
pub struct QueueReader {
    conn: Connection,
    layout: Layout,
}

/// `file:` URI of `path` with `immutable=1`; every byte outside the unreserved set is
/// percent-encoded, so `?`, `#` and `%` in a path cannot be taken for URI syntax.
fn immutable_uri(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut uri = String::from("file:");
    for &byte in path.as_os_str().as_bytes() {
        if byte.is_ascii_alphanumeric() || b"/._~-".contains(&byte) {
            uri.push(char::from(byte));
        } else {
            uri.push_str(&format!("%{byte:02X}"));
        }
    }
    uri.push_str("?immutable=1");
    uri
}

/// `<file>-wal`, as SQLite names it.
fn wal_path(file: &Path) -> PathBuf {
    let mut wal = OsString::from(file.as_os_str());
    wal.push("-wal");
    PathBuf::from(wal)
}

/// Text of a column whatever SQLite stored in it (tools show what is there rather than fail).
fn lossy_text(value: rusqlite::types::ValueRef<'_>) -> String {
    use rusqlite::types::ValueRef;
    match value {
        ValueRef::Null => String::new(),
        ValueRef::Integer(i) => i.to_string(),
        ValueRef::Real(f) => f.to_string(),
        ValueRef::Text(t) | ValueRef::Blob(t) => String::from_utf8_lossy(t).into_owned(),
    }
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

impl QueueReader {
    /// `path` is the data directory (then `queue.db` inside it is opened) or the database file.
    pub fn open(path: &Path) -> Result<QueueReader, QueueError> {
        let file = if path.is_dir() {
            db_path(path)
        } else {
            path.to_path_buf()
        };
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = if wal_path(&file).exists() {
            Connection::open_with_flags(&file, flags)?
        } else {
            Connection::open_with_flags(immutable_uri(&file), flags | OpenFlags::SQLITE_OPEN_URI)?
        };
        conn.busy_timeout(BUSY_TIMEOUT)?;
        Ok(QueueReader {
            conn,
            layout: Layout::V2,
        })
    }

    /// Reads a damaged file as far as SQLite can (`PRAGMA writable_schema`, a connection flag that
    /// writes nothing): a file cut short opens, with the pages it still has, instead of being
    /// refused as a whole because its header counts more pages.
    pub fn tolerate_damage(self) -> Result<QueueReader, QueueError> {
        self.conn.pragma_update(None, "writable_schema", true)?;
        Ok(self)
    }

    /// Reads rows from where `layout` keeps them.
    pub fn with_layout(self, layout: Layout) -> QueueReader {
        QueueReader { layout, ..self }
    }

    /// The schema version and the tables of the file. The first read of the file: a file that
    /// is not a database fails here ([`ErrorCode::NotADatabase`]).
    pub fn schema(&self) -> Result<FileSchema, QueueError> {
        let version: i64 = self
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))?;
        let mut stmt = self
            .conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")?;
        let tables = stmt
            .query_map([], |r| r.get::<_, String>(0))?
            .collect::<Result<_, _>>()?;
        Ok(FileSchema { version, tables })
    }

    /// Every committed, unacknowledged row of every kind in `seq` order, with its delivery state.
    /// Fails with [`QueueError::Decode`] on the first undecodable row.
    pub fn entries(&self) -> Result<Vec<StoredRow>, QueueError> {
        fetch_all(&self.conn)
    }

    /// The sample rows of [`QueueReader::entries`].
    pub fn rows(&self) -> Result<Vec<StoredSample>, QueueError> {
        Ok(self
            .entries()?
            .into_iter()
            .filter_map(|row| match row.entry {
                Entry::Sample(sample) => Some(StoredSample {
                    seq: row.seq,
                    sample,
                }),
                Entry::Message(_) => None,
            })
            .collect())
    }

    /// The `limit` newest commands the gateway remembers (ids, results), newest first.
    pub fn recent_commands(&self, limit: usize) -> Result<Vec<CommandRecord>, QueueError> {
        crate::queue::recent::newest(&self.conn, limit)
    }

    /// Committed `last_seq`, depth and bytes in use, as the writer would report them.
    pub fn progress(&self) -> Result<QueueProgress, QueueError> {
        load_progress(&self.conn)
    }

    /// What `fieldrelay queue stats` shows of the rows, read in one snapshot (so the per-point
    /// counts add up to the total even while the gateway commits). Scans the table once.
    pub fn contents(&self) -> Result<Contents, QueueError> {
        let tx = self.conn.unchecked_transaction()?;
        let source = self.layout.source();
        let last_seq: i64 = tx.query_row(
            "SELECT COALESCE((SELECT MAX(seq) FROM sqlite_sequence \
             WHERE name IN ('messages', 'samples')), 0)",
            [],
            |r| r.get(0),
        )?;
        let mut stmt = tx.prepare(&format!(
            "SELECT device, point, kind, COUNT(*), SUM(state != 0), MIN(seq), MAX(seq), \
             MIN(ts_ms) FROM {source} GROUP BY device, point, kind ORDER BY device, point, kind"
        ))?;
        let groups = stmt
            .query_map([], |r| {
                Ok(Group {
                    device: lossy_text(r.get_ref(0)?),
                    point: lossy_text(r.get_ref(1)?),
                    kind: r.get(2)?,
                    rows: to_u64(r.get(3)?),
                    in_flight: to_u64(r.get(4)?),
                    first_seq: to_u64(r.get(5)?),
                    last_seq: to_u64(r.get(6)?),
                    oldest_ts_ms: r.get_ref(7)?.as_i64().unwrap_or(0),
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let mut stmt = tx.prepare(&format!(
            "SELECT seq, device, point, kind, state, pkid FROM {source} WHERE state != 0 \
             ORDER BY seq"
        ))?;
        let in_flight = stmt
            .query_map([], |r| {
                Ok(InFlight {
                    seq: to_u64(r.get(0)?),
                    device: lossy_text(r.get_ref(1)?),
                    point: lossy_text(r.get_ref(2)?),
                    kind: r.get(3)?,
                    state: r.get(4)?,
                    pkid: r.get_ref(5)?.as_i64_or_null().unwrap_or(None),
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let end = |order: &str| -> Result<Option<RowRef>, QueueError> {
            Ok(tx
                .query_row(
                    &format!("SELECT seq, ts_ms FROM {source} ORDER BY seq {order} LIMIT 1"),
                    [],
                    |r| {
                        Ok(RowRef {
                            seq: to_u64(r.get(0)?),
                            ts_ms: r.get_ref(1)?.as_i64().unwrap_or(0),
                        })
                    },
                )
                .optional()?)
        };
        let (oldest, newest) = (end("ASC")?, end("DESC")?);
        let (session_peer, rejected) = match self.layout {
            Layout::V2 => (get_meta(&tx, SESSION_PEER)?, rejected_groups(&tx)?),
            Layout::V1 => (None, Vec::new()),
        };
        Ok(Contents {
            last_seq: to_u64(last_seq),
            used_bytes: used_bytes(&tx)?,
            groups,
            in_flight,
            oldest,
            newest,
            session_peer,
            rejected,
        })
    }

    /// Reads up to `limit` rejected rows with `seq > after_seq` (`rejected.rs`), as
    /// [`QueueReader::visit_rows`] reads queued ones; none in a file without the table.
    pub fn visit_rejected(
        &self,
        after_seq: i64,
        limit: usize,
        visit: impl FnMut(Result<crate::queue::rejected::RejectedRow, QueueError>) -> ControlFlow<()>,
    ) -> Result<usize, QueueError> {
        match self.layout {
            Layout::V2 => crate::queue::rejected::visit(&self.conn, after_seq, limit, visit),
            Layout::V1 => Ok(0),
        }
    }

    /// Rows in the table (a scan); for progress bars.
    pub fn count(&self) -> Result<u64, QueueError> {
        let sql = format!("SELECT COUNT(*) FROM {}", self.layout.source());
        Ok(to_u64(self.conn.query_row(&sql, [], |r| r.get(0))?))
    }

    /// The newest `seq` the file handed out (`sqlite_sequence`), if it can be read.
    pub fn last_seq(&self) -> Option<u64> {
        self.conn
            .query_row(
                "SELECT MAX(seq) FROM sqlite_sequence WHERE name IN ('messages', 'samples')",
                [],
                |r| r.get::<_, Option<i64>>(0),
            )
            .ok()
            .flatten()
            .and_then(|v| u64::try_from(v).ok())
    }

    /// Reads up to `limit` rows with `seq > after_seq` in `seq` order and hands each to `visit`,
    /// decoded or as the [`QueueError::Decode`] naming it; `visit` may stop early. Returns how
    /// many rows were handed over. An error stepping through the table (a damaged page, an I/O
    /// error) ends the call with that error, after the rows before it were handed over: a tool
    /// recovering a damaged file keeps everything up to the damage.
    pub fn visit_rows(
        &self,
        after_seq: i64,
        limit: usize,
        visit: impl FnMut(Result<StoredRow, QueueError>) -> ControlFlow<()>,
    ) -> Result<usize, QueueError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM {} WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            self.layout.source()
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = stmt.query(params![after_seq, limit])?;
        visit_decoded(rows, |_, row| Ok(row), visit)
    }
}

/// The rejected rows per reason, device, point and kind, for `fieldrelay queue stats`.
fn rejected_groups(conn: &Connection) -> Result<Vec<RejectedGroup>, QueueError> {
    if !crate::queue::rejected::exists(conn)? {
        return Ok(Vec::new());
    }
    let mut stmt = conn.prepare(
        "SELECT reason, device, point, kind, COUNT(*), MIN(seq), MAX(seq), MAX(rejected_ms) \
         FROM rejected GROUP BY reason, device, point, kind ORDER BY reason, device, point, kind",
    )?;
    let groups = stmt
        .query_map([], |r| {
            Ok(RejectedGroup {
                reason: crate::queue::rejected::reason_of(r.get(0)?),
                device: lossy_text(r.get_ref(1)?),
                point: lossy_text(r.get_ref(2)?),
                kind: r.get_ref(3)?.as_i64().unwrap_or(-1),
                rows: to_u64(r.get(4)?),
                first_seq: to_u64(r.get(5)?),
                last_seq: to_u64(r.get(6)?),
                last_rejected_ms: r.get_ref(7)?.as_i64().unwrap_or(0),
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(groups)
}

/// One-shot form of [`QueueReader::rows`]: `path` is the data directory or the database file.
pub fn read_only_rows(path: &Path) -> Result<Vec<StoredSample>, QueueError> {
    QueueReader::open(path)?.rows()
}

#[cfg(test)]
mod reader_tests {
    use super::*;

    #[test]
    fn immutable_uri_escapes_what_uri_syntax_would_take() {
        assert_eq!(
            immutable_uri(Path::new("/var/lib/fieldrelay/queue.db")),
            "file:/var/lib/fieldrelay/queue.db?immutable=1"
        );
        assert_eq!(
            immutable_uri(Path::new("/tmp/a b?c#d%e/q.db")),
            "file:/tmp/a%20b%3Fc%23d%25e/q.db?immutable=1"
        );
    }
}
