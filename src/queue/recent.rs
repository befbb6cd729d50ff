//! Recent commands (issue 5): which commands with an `id` the gateway took, so that one delivered
//! again (a broker redelivery after a crash, or the sender repeating itself) is answered again
//! without being written twice.
//!
//! # On-disk format
//!
//! A table beside `messages` in `queue.db`, created if missing at every open (`CREATE TABLE IF
//! NOT EXISTS`), so the schema version stays 2: the table is additive, a build that does not know
//! it ignores it, and a downgrade keeps the queue (a version bump would make the older build
//! refuse the whole file).
//!
//! ```sql
//! CREATE TABLE recent_commands (
//!     origin TEXT    NOT NULL,  -- 'cloud' (uplink) or 'local' (on-site broker)
//!     device TEXT    NOT NULL,  -- from the command's topic
//!     point  TEXT    NOT NULL,
//!     id     TEXT    NOT NULL,  -- the command's id as JSON text ("a1" or 17)
//!     state  INTEGER NOT NULL,  -- 1 writing: taken, write under way; 2 answered
//!     result TEXT,              -- state 2: the result payload as published
//!     ts_ms  INTEGER NOT NULL,  -- when the command was first taken (for pruning)
//!     PRIMARY KEY (origin, device, point, id)
//! ) WITHOUT ROWID;
//! ```
//!
//! # The two commits of a command
//!
//! 1. **Writing** is committed *before* the write goes to the device. A command found in this
//!    state was interrupted (crash, `kill -9`, power cut) between its write and its answer: the
//!    gateway does not know whether the device got the write, so it must not write again.
//! 2. **Answered** is committed in the same transaction as the result message's queue row and
//!    the removal of the command from the inbox ([`super::Queue::answer_command`], `inbox.rs`).
//!    So a command handled again after a crash always finds itself, and its answer is either
//!    in the queue or known.
//!
//! Commands without an `id` are not recorded: nothing identifies a redelivery of them.
//!
//! # Pruning
//!
//! Rows older than [`RETENTION`] are deleted, and at most [`MAX_ROWS`] are kept (oldest first
//! out), in the transaction that records a new command. A week covers any redelivery a broker
//! makes after an outage; an id repeated later than that is a new command.

use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, Transaction};

use super::QueueError;

/// Created at every open; idempotent.
pub(super) const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS recent_commands (
    origin TEXT    NOT NULL,
    device TEXT    NOT NULL,
    point  TEXT    NOT NULL,
    id     TEXT    NOT NULL,
    state  INTEGER NOT NULL,
    result TEXT,
    ts_ms  INTEGER NOT NULL,
    PRIMARY KEY (origin, device, point, id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS recent_commands_age ON recent_commands(ts_ms);";

/// How long a command id is remembered.
pub const RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
/// Most ids remembered: about a megabyte of the queue's budget at worst.
pub const MAX_ROWS: i64 = 10_000;

/// What identifies a command: where it came from, the point it writes, and its id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CommandKey {
    /// `cloud` or `local`: the same id from two brokers is two commands.
    pub origin: &'static str,
    pub device: String,
    pub point: String,
    /// The id as JSON text, so `"17"` and `17` stay different ids.
    pub id: String,
}

/// What the gateway remembers of a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecentCommand {
    /// Taken and its write started; no answer was committed (the gateway stopped in between).
    Writing,
    /// Answered with this result payload.
    Answered(String),
}

const STATE_WRITING: i64 = 1;
const STATE_ANSWERED: i64 = 2;

pub(super) fn lookup(
    conn: &Connection,
    key: &CommandKey,
) -> Result<Option<RecentCommand>, QueueError> {
    Ok(state(conn, key)?)
}

/// [`lookup`] inside a transaction (the inbox asks it while it stores commands).
pub(super) fn state(
    conn: &Connection,
    key: &CommandKey,
) -> rusqlite::Result<Option<RecentCommand>> {
    let row: Option<(i64, Option<String>)> = conn
        .prepare_cached(
            "SELECT state, result FROM recent_commands \
             WHERE origin = ?1 AND device = ?2 AND point = ?3 AND id = ?4",
        )?
        .query_row(params![key.origin, key.device, key.point, key.id], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()?;
    Ok(match row {
        None => None,
        Some((STATE_ANSWERED, Some(result))) => Some(RecentCommand::Answered(result)),
        // A damaged or unknown state is treated as the cautious one: never written again.
        Some(_) => Some(RecentCommand::Writing),
    })
}

/// Records `key` as taken, write under way; prunes old rows.
pub(super) fn begin(tx: &Transaction<'_>, key: &CommandKey, now_ms: i64) -> rusqlite::Result<()> {
    prune(tx, now_ms)?;
    tx.prepare_cached(
        "INSERT INTO recent_commands (origin, device, point, id, state, result, ts_ms) \
         VALUES (?1, ?2, ?3, ?4, ?5, NULL, ?6) \
         ON CONFLICT DO UPDATE SET state = excluded.state, result = NULL",
    )?
    .execute(params![
        key.origin,
        key.device,
        key.point,
        key.id,
        STATE_WRITING,
        now_ms
    ])?;
    Ok(())
}

/// Records the answer of `key`; keeps the time it was first taken.
pub(super) fn answer(
    tx: &Transaction<'_>,
    key: &CommandKey,
    result: &str,
    now_ms: i64,
) -> rusqlite::Result<()> {
    prune(tx, now_ms)?;
    tx.prepare_cached(
        "INSERT INTO recent_commands (origin, device, point, id, state, result, ts_ms) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
         ON CONFLICT DO UPDATE SET state = excluded.state, result = excluded.result",
    )?
    .execute(params![
        key.origin,
        key.device,
        key.point,
        key.id,
        STATE_ANSWERED,
        result,
        now_ms
    ])?;
    Ok(())
}

/// A remembered command, as the console lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandRecord {
    pub origin: String,
    pub device: String,
    pub point: String,
    /// As JSON text (`"a1"`, `17`).
    pub id: String,
    /// The result payload as published; `None` while (or if interrupted) writing.
    pub result: Option<String>,
    /// When the command was first taken.
    pub ts_ms: i64,
}

/// The `limit` newest remembered commands, newest first. A file without the table (written by
/// an older build, opened read-only) has none.
pub(super) fn newest(conn: &Connection, limit: usize) -> Result<Vec<CommandRecord>, QueueError> {
    let exists: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'recent_commands')",
        [],
        |r| r.get(0),
    )?;
    if !exists {
        return Ok(Vec::new());
    }
    let mut stmt = conn.prepare(
        "SELECT origin, device, point, id, state, result, ts_ms FROM recent_commands \
         ORDER BY ts_ms DESC LIMIT ?1",
    )?;
    let rows = stmt
        .query_map([i64::try_from(limit).unwrap_or(i64::MAX)], |r| {
            let state: i64 = r.get(4)?;
            Ok(CommandRecord {
                origin: r.get(0)?,
                device: r.get(1)?,
                point: r.get(2)?,
                id: r.get(3)?,
                result: if state == STATE_ANSWERED {
                    r.get(5)?
                } else {
                    None
                },
                ts_ms: r.get(6)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

fn prune(tx: &Transaction<'_>, now_ms: i64) -> rusqlite::Result<()> {
    let retention = i64::try_from(RETENTION.as_millis()).unwrap_or(i64::MAX);
    tx.prepare_cached("DELETE FROM recent_commands WHERE ts_ms < ?1")?
        .execute([now_ms.saturating_sub(retention)])?;
    // Keep the newest MAX_ROWS - 1, making room for the one being recorded.
    tx.prepare_cached(
        "DELETE FROM recent_commands WHERE ts_ms <= \
         (SELECT ts_ms FROM recent_commands ORDER BY ts_ms DESC LIMIT 1 OFFSET ?1)",
    )?
    .execute([MAX_ROWS - 1])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Qos;
    use crate::queue::{Entry, Message, MessageKind, Queue, QueueOptions, QueueReader};

    fn key(id: &str) -> CommandKey {
        CommandKey {
            origin: "cloud",
            device: "boiler".into(),
            point: "setpoint".into(),
            id: format!("{id:?}"),
        }
    }

    fn conn() -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(SCHEMA).unwrap();
        conn.execute_batch(SCHEMA).unwrap(); // idempotent
        conn
    }

    #[test]
    fn a_command_is_writing_then_answered() {
        let mut conn = conn();
        assert_eq!(lookup(&conn, &key("a")).unwrap(), None);
        let tx = conn.transaction().unwrap();
        begin(&tx, &key("a"), 1_000).unwrap();
        tx.commit().unwrap();
        assert_eq!(
            lookup(&conn, &key("a")).unwrap(),
            Some(RecentCommand::Writing)
        );
        let tx = conn.transaction().unwrap();
        answer(&tx, &key("a"), r#"{"ok":true}"#, 2_000).unwrap();
        tx.commit().unwrap();
        assert_eq!(
            lookup(&conn, &key("a")).unwrap(),
            Some(RecentCommand::Answered(r#"{"ok":true}"#.into()))
        );
        // Another origin or point with the same id is another command.
        let mut other = key("a");
        other.origin = "local";
        assert_eq!(lookup(&conn, &other).unwrap(), None);
        let ts: i64 = conn
            .query_row("SELECT ts_ms FROM recent_commands", [], |r| r.get(0))
            .unwrap();
        assert_eq!(ts, 1_000, "the first sighting is kept");
    }

    #[test]
    fn the_newest_commands_are_listed_first() {
        assert_eq!(
            newest(&Connection::open_in_memory().unwrap(), 10).unwrap(),
            [],
            "a file without the table"
        );
        let mut conn = conn();
        let tx = conn.transaction().unwrap();
        begin(&tx, &key("a"), 1_000).unwrap();
        answer(&tx, &key("a"), r#"{"id":"a","ok":true}"#, 1_500).unwrap();
        begin(&tx, &key("b"), 2_000).unwrap();
        begin(&tx, &key("c"), 3_000).unwrap();
        tx.commit().unwrap();
        let listed = newest(&conn, 2).unwrap();
        let ids: Vec<_> = listed.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, [r#""c""#, r#""b""#]);
        assert_eq!(listed[0].result, None, "still writing");
        let all = newest(&conn, 10).unwrap();
        assert_eq!(all[2].result.as_deref(), Some(r#"{"id":"a","ok":true}"#));
        assert_eq!((all[2].ts_ms, all[2].device.as_str()), (1_000, "boiler"));
    }

    #[test]
    fn old_and_surplus_rows_are_pruned() {
        let mut conn = conn();
        let week = i64::try_from(RETENTION.as_millis()).unwrap();
        let tx = conn.transaction().unwrap();
        answer(&tx, &key("old"), "{}", 0).unwrap();
        answer(&tx, &key("new"), "{}", week + 10).unwrap();
        tx.commit().unwrap();
        assert_eq!(lookup(&conn, &key("old")).unwrap(), None);
        assert!(lookup(&conn, &key("new")).unwrap().is_some());

        conn.execute(
            "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < ?1) \
             INSERT INTO recent_commands SELECT 'cloud', 'boiler', 'setpoint', i, 2, '{}', ?2 + i \
             FROM n",
            [MAX_ROWS + 5, week + 100],
        )
        .unwrap();
        let tx = conn.transaction().unwrap();
        answer(&tx, &key("last"), "{}", week + 100 + MAX_ROWS + 10).unwrap();
        tx.commit().unwrap();
        let rows: i64 = conn
            .query_row("SELECT COUNT(*) FROM recent_commands", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, MAX_ROWS);
        let oldest: i64 = conn
            .query_row("SELECT MIN(ts_ms) FROM recent_commands", [], |r| r.get(0))
            .unwrap();
        assert_eq!(oldest, week + 100 + 7, "the oldest rows made room");
        assert!(lookup(&conn, &key("last")).unwrap().is_some());
    }

    fn result_message(payload: &str) -> Message {
        Message {
            kind: MessageKind::CommandResult,
            device: "boiler".into(),
            point: "setpoint".into(),
            payload: payload.into(),
            ts_ms: 5,
            qos: Qos::AtLeastOnce,
            retain: false,
        }
    }

    /// Through the writer thread: taken, then answered with its result row in one commit; both
    /// survive a reopen, and the oldest row's time is reported.
    #[tokio::test]
    async fn the_queue_records_commands_and_their_answers() {
        let dir = tempfile::tempdir().unwrap();
        let (queue, _live, writer) = Queue::open(dir.path(), QueueOptions::default()).unwrap();
        assert_eq!(queue.progress().borrow().oldest_ts_ms, None);
        assert_eq!(queue.recent_command(key("a")).await.unwrap(), None);
        queue.command_taken(key("a")).await.unwrap();
        assert_eq!(
            queue.recent_command(key("a")).await.unwrap(),
            Some(RecentCommand::Writing)
        );
        let result = r#"{"id":"a","ok":true}"#;
        queue
            .answer_command(
                Some(key("a")),
                result.into(),
                Some(result_message(result)),
                None,
            )
            .await
            .unwrap();
        // Without an id: only the result row.
        queue
            .answer_command(None, "{}".into(), Some(result_message("{}")), None)
            .await
            .unwrap();
        assert_eq!(queue.progress().borrow().depth, 2);
        assert_eq!(queue.progress().borrow().oldest_ts_ms, Some(5));
        let mut qos0 = result_message("{}");
        qos0.qos = Qos::AtMostOnce;
        assert!(queue
            .answer_command(None, "{}".into(), Some(qos0), None)
            .await
            .is_err());
        writer.close().await.unwrap();

        let (queue, _live, writer) = Queue::open(dir.path(), QueueOptions::default()).unwrap();
        assert_eq!(
            queue.recent_command(key("a")).await.unwrap(),
            Some(RecentCommand::Answered(result.into()))
        );
        writer.close().await.unwrap();
        let rows = QueueReader::open(dir.path()).unwrap().entries().unwrap();
        let payloads: Vec<_> = rows
            .iter()
            .map(|row| match &row.entry {
                Entry::Message(m) => (m.kind, m.payload.as_str()),
                Entry::Sample(s) => panic!("{s:?}"),
            })
            .collect();
        assert_eq!(
            payloads,
            [
                (MessageKind::CommandResult, result),
                (MessageKind::CommandResult, "{}")
            ]
        );
    }
}
