//! What the writer reads back on its connection: the progress, `meta` values, queued rows for
//! the uplink and the rows with a session state.

use std::sync::Arc;

use rusqlite::{params, Connection, OptionalExtension};

use super::codec::{collect_rows, decode_row};
use super::COLUMNS;
use crate::config::Qos;
use crate::queue::{Delivery, Entry, Message, MessageKind, QueueError, QueueProgress, StoredRow};

/// The newest `seq` ever handed out. `sqlite_sequence` keeps it after the rows are deleted, which
/// `MAX(seq)` would not.
const SQL_LAST_SEQ: &str =
    "SELECT COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'messages'), 0)";
const SQL_DEPTH: &str = "SELECT COUNT(*) FROM messages";
/// The head of the queue: the rowid b-tree's first cell, a few page reads however long the queue.
const SQL_OLDEST_TS: &str = "SELECT ts_ms FROM messages ORDER BY seq LIMIT 1";

/// Whether row `seq` is in the file.
pub(crate) fn row_exists(conn: &Connection, seq: u64) -> rusqlite::Result<bool> {
    let Ok(seq) = i64::try_from(seq) else {
        return Ok(false);
    };
    conn.prepare_cached("SELECT 1 FROM messages WHERE seq = ?1")?
        .exists([seq])
}

/// Reads `last_seq` (from `sqlite_sequence`), `depth` (`COUNT(*)`), the bytes in use and the
/// oldest row's time.
pub(crate) fn load_progress(conn: &Connection) -> Result<QueueProgress, QueueError> {
    let last_seq: i64 = conn.query_row(SQL_LAST_SEQ, [], |r| r.get(0))?;
    let depth: i64 = conn.query_row(SQL_DEPTH, [], |r| r.get(0))?;
    Ok(QueueProgress {
        last_seq: u64::try_from(last_seq).unwrap_or(0),
        depth: u64::try_from(depth).unwrap_or(0),
        bytes: used_bytes(conn)?,
        oldest_ts_ms: oldest_ts(conn)?,
    })
}

/// `ts_ms` of the row with the lowest `seq`; `None` when the queue is empty.
pub(crate) fn oldest_ts(conn: &Connection) -> Result<Option<i64>, QueueError> {
    Ok(conn
        .prepare_cached(SQL_OLDEST_TS)?
        .query_row([], |r| r.get(0))
        .optional()?)
}

/// Bytes of `queue.db` holding data: pages in use (not on the free list) times the page size.
/// Cheap (two header reads); freed pages are reused by later inserts, so this is what
/// `store.max_size` bounds.
pub(crate) fn used_bytes(conn: &Connection) -> Result<u64, QueueError> {
    let pages: i64 = conn.pragma_query_value(None, "page_count", |r| r.get(0))?;
    let free: i64 = conn.pragma_query_value(None, "freelist_count", |r| r.get(0))?;
    let size: i64 = conn.pragma_query_value(None, "page_size", |r| r.get(0))?;
    Ok(u64::try_from((pages - free).max(0) * size).unwrap_or(0))
}

/// A value of the `meta` table.
pub(crate) fn get_meta(conn: &Connection, key: &str) -> Result<Option<String>, QueueError> {
    match conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0)) {
        Ok(v) => Ok(Some(v)),
        Err(rusqlite::Error::QueryReturnedNoRows) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Queued (never sent, `state = 0`) rows with `seq > after_seq`, in `seq` order, at most
/// `limit`.
///
/// A row that cannot be decoded ends the page: if rows precede it they are returned (so the
/// consumer makes progress), otherwise the result is [`QueueError::Decode`] naming its `seq`.
pub(crate) fn fetch_queued(
    conn: &Connection,
    after_seq: u64,
    limit: usize,
) -> Result<Vec<StoredRow>, QueueError> {
    let Ok(after) = i64::try_from(after_seq) else {
        return Ok(Vec::new());
    };
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let sql = format!(
        "SELECT {COLUMNS} FROM messages WHERE seq > ?1 AND state = 0 ORDER BY seq LIMIT ?2"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query(params![after, limit])?;
    collect_rows(rows, true)
}

/// What [`unsettled_rows`] found.
#[derive(Debug, Default)]
pub(crate) struct Unsettled {
    pub rows: Vec<StoredRow>,
    /// Undecodable rows in state "PUBLISH sent", among `rows` as placeholders: when the broker
    /// completes their id they are queued again rather than deleted.
    pub requeue_on_ack: Vec<u64>,
}

/// Rows with a session state (PUBLISH sent or PUBREC received), in `seq` order. Uses the
/// `messages_unsettled` partial index, so it costs nothing like a scan of the backlog.
///
/// # A row that does not decode
/// Its packet id must still be reserved: the broker may hold it for a QoS 2 message, and a new
/// row sent under the same id would be taken for a duplicate and swallowed. Its PUBLISH cannot
/// be rendered, but a PUBREL needs only the id, and a broker answers every PUBREL with a PUBCOMP
/// (MQTT 3.1.1 §4.3.3), whether it holds the id (the message is then released, once) or not.
/// So such a row (when its `state` and `pkid` are readable) is returned as a placeholder QoS 2
/// row past PUBREC ([`Delivery::Received`], an empty message that is never rendered): the
/// uplink reserves its id, sends a PUBREL and acks the row on the PUBCOMP. Then:
/// - state "PUBREC received": the broker had the message, the PUBREL delivered it; the ack
///   deletes the row as usual.
/// - state "PUBLISH sent": the broker may never have had it; the ack requeues the row
///   ([`Unsettled::requeue_on_ack`]), which keeps it in the file for inspection like any
///   undecodable queued row (the uplink skips and counts it; a build that decodes it sends it,
///   same `seq`).
///
/// A row whose `state` or `pkid` itself is unreadable names no id to reserve: it is left alone
/// (logged).
pub(crate) fn unsettled_rows(conn: &Connection) -> Result<Unsettled, QueueError> {
    let sql = format!("SELECT {COLUMNS} FROM messages WHERE state != 0 ORDER BY seq");
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut rows = stmt.query([])?;
    let mut out = Unsettled::default();
    let (mut last_device, mut last_point) = (None, None);
    while let Some(row) = rows.next()? {
        let error = match decode_row(row, &mut last_device, &mut last_point) {
            Ok(r) => {
                out.rows.push(r);
                continue;
            }
            Err(error) => error,
        };
        match undecodable_session(row) {
            Some((seq, state, pkid)) => {
                tracing::error!(
                    %error,
                    seq,
                    pkid,
                    "unsettled queue row cannot be decoded: its packet id is released with a \
                     PUBREL, then the row is deleted if the broker had it, queued again otherwise"
                );
                if state == 1 {
                    out.requeue_on_ack.push(seq);
                }
                out.rows.push(placeholder(seq, pkid));
            }
            None => tracing::error!(
                %error,
                "unsettled queue row cannot be decoded and names no packet id; left in the file"
            ),
        }
    }
    Ok(out)
}

/// `seq`, `state` (1 or 2) and packet id of a row, read without its body.
fn undecodable_session(row: &rusqlite::Row<'_>) -> Option<(u64, i64, u16)> {
    let seq = u64::try_from(row.get_ref(0).ok()?.as_i64().ok()?).ok()?;
    let state = row.get_ref(9).ok()?.as_i64().ok()?;
    let pkid = u16::try_from(row.get_ref(10).ok()?.as_i64().ok()?).ok()?;
    ((state == 1 || state == 2) && pkid != 0).then_some((seq, state, pkid))
}

/// The stand-in for an undecodable row with packet id `pkid` (see [`unsettled_rows`]).
fn placeholder(seq: u64, pkid: u16) -> StoredRow {
    StoredRow {
        seq,
        entry: Entry::Message(Message {
            kind: MessageKind::DeviceStatus,
            device: Arc::from(""),
            point: Arc::from(""),
            payload: String::new(),
            ts_ms: 0,
            qos: Qos::ExactlyOnce,
            retain: false,
        }),
        delivery: Delivery::Received { pkid },
        expires_ms: None,
    }
}

/// Every row, in `seq` order (read-only helper).
pub(super) fn fetch_all(conn: &Connection) -> Result<Vec<StoredRow>, QueueError> {
    let sql = format!("SELECT {COLUMNS} FROM messages WHERE seq > ?1 ORDER BY seq LIMIT ?2");
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query(params![-1i64, i64::MAX])?;
    collect_rows(rows, false)
}
