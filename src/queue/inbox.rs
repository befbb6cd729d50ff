//! The command inbox: every command a broker delivers is committed here before its PUBACK is
//! written, and taken from here, in arrival order, by the command handler of its origin.
//!
//! # Why an inbox
//! A broker delivers commands as fast as it likes (mosquitto 2.0.11 ignores its in-flight limit
//! towards a subscriber, mosquitto #2301, and sends hundreds of unacknowledged messages at
//! once), while carrying a command out takes a device round trip. Holding the PUBACK until the
//! command is answered ties the broker's pace to the device's, and a message that could not be
//! held in memory had to go back to the broker by renewing the connection. Committing the
//! command first decouples the two: the PUBACK goes out once the command is on disk (group
//! committed with whatever else the writer has, so a burst costs a few fsyncs, not one per
//! command), and the handler works through the inbox at the devices' pace. A crash between
//! the commit and the answer is recovered from the inbox at the next start, not from a broker
//! redelivery (which a clean session, or a broker restart without persistence, would not make).
//!
//! # On-disk format
//! A table beside `messages`, created if missing at every open like `recent_commands`, so the
//! schema version stays 2 (a build that does not know it ignores it):
//!
//! ```sql
//! CREATE TABLE command_inbox (
//!     id          INTEGER PRIMARY KEY AUTOINCREMENT,  -- arrival order, never reused
//!     origin      TEXT    NOT NULL,  -- 'cloud' or 'local': each has its own handler and bound
//!     device      TEXT    NOT NULL,  -- from the command's topic
//!     point       TEXT    NOT NULL,
//!     cmd_id      TEXT,              -- the command's id as JSON text; NULL without (or unreadable)
//!     payload     BLOB    NOT NULL,  -- as received; empty for an oversized one (never read)
//!     flags       INTEGER NOT NULL,  -- 1: delivered as retained; 2: oversized, discarded unread
//!     size        INTEGER NOT NULL,  -- payload bytes as received
//!     received_ms INTEGER NOT NULL
//!     -- and, added by `request.rs`: response_topic, correlation, expires_ms (MQTT 5)
//! );
//! ```
//!
//! # Guarantees
//! 1. **Committed before acknowledged.** [`super::Queue::inbox_take`] returns after the commit;
//!    only then does the intake let the connection write the PUBACKs (in receive order).
//! 2. **Arrival order.** `id` grows in commit order and the intake of one origin commits its
//!    batches in receive order; [`super::Queue::inbox_next`] reads in `id` order.
//! 3. **Answered and removed together.** A row leaves the inbox in the transaction that
//!    commits its answer ([`super::Queue::send_answer`] with the row's id), or, for a redelivery
//!    that needs no answer, alone ([`super::Queue::inbox_done`]). Until then it is handled again
//!    after a restart; the recent-commands table (`recent.rs`) keeps that from writing twice.
//! 4. **Redeliveries are recognised.** A PUBLISH the broker marks as a redelivery (DUP), or a
//!    retained copy delivered at subscribe, whose command is already in the inbox (same origin,
//!    device, point and id, or the same payload for one without an id) or whose id was already
//!    taken (`recent_commands`) is not stored again ([`Taken::Redelivered`]): it was or will be
//!    answered once. A PUBLISH without DUP is always a new delivery, so a sender repeating an
//!    id gets the stored answer again (one result per delivery), never a second write.
//! 5. **Bounded.** At most [`CAPACITY`] rows per origin; a command beyond that is
//!    [`Taken::Full`] (the intake answers `busy` and acknowledges it: the connection is never
//!    renewed and never stops being read for it).

use std::cell::RefCell;

use rusqlite::{params, Connection, OptionalExtension, Transaction};
use tokio::sync::oneshot;

use super::recent::{self, CommandKey, RecentCommand};
use super::request::{self, CommandRequest};
use super::writer::Command;
use super::{Queue, QueueError};

/// Created at every open; idempotent.
pub(super) const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS command_inbox (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    origin      TEXT    NOT NULL,
    device      TEXT    NOT NULL,
    point       TEXT    NOT NULL,
    cmd_id      TEXT,
    payload     BLOB    NOT NULL,
    flags       INTEGER NOT NULL,
    size        INTEGER NOT NULL,
    received_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS command_inbox_key ON command_inbox(origin, device, point, cmd_id);";

/// Most commands waiting per origin. Ten thousand is two orders of magnitude above a burst a
/// plant's operators make (a recipe download is tens of writes) and ten times mosquitto's
/// default `max_queued_messages` (1000, what the broker keeps for us while we are away), so a
/// full inbox means a runaway sender, not a busy shift. At the size of a typical command
/// (~100 bytes with its row) that is about a megabyte of `queue.db`; a command is at most
/// 16 KiB (larger ones are stored empty, as oversized), so 160 MiB at the very worst. It is
/// also what the recent-commands table remembers (`recent::MAX_ROWS`), so every id of a full
/// inbox can still be recognised when it is carried out.
pub const CAPACITY: i64 = 10_000;

const FLAG_RETAINED: i64 = 1;
const FLAG_OVERSIZED: i64 = 2;

/// A command as a connection delivered it, for [`Queue::inbox_take`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewCommand {
    /// `cloud` or `local`.
    pub origin: &'static str,
    pub device: String,
    pub point: String,
    /// The command's id as JSON text (`CommandId::key`), when its payload has a readable one.
    pub id: Option<String>,
    /// Empty for an oversized command.
    pub payload: Vec<u8>,
    /// Payload bytes as received (more than `payload.len()` for an oversized command).
    pub size: u64,
    /// The broker marked it as a redelivery (DUP).
    pub dup: bool,
    /// Delivered as a retained message (at subscribe).
    pub retained: bool,
    /// Too large to read: discarded as it arrived.
    pub oversized: bool,
    /// MQTT 5 request properties, stored beside it (`request.rs`).
    pub request: CommandRequest,
}

/// What became of one delivered command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    /// Committed to the inbox.
    Stored,
    /// A redelivery (DUP, or a retained copy) of a command the inbox holds or whose id was
    /// taken already: not stored again; acknowledged without an answer of its own.
    Redelivered,
    /// The origin's inbox holds [`CAPACITY`] commands: not stored.
    Full,
}

/// What [`Queue::inbox_take`] did with a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TakeReport {
    /// One per command, in the order given.
    pub taken: Vec<Taken>,
    /// Commands of that origin waiting in the inbox after the commit.
    pub waiting: u64,
}

/// A command waiting in the inbox.
#[derive(Debug, Clone, PartialEq)]
pub struct InboxCommand {
    /// Its row: the arrival order, and what [`Queue::send_answer`] removes.
    pub row: i64,
    pub device: String,
    pub point: String,
    pub id: Option<String>,
    pub payload: Vec<u8>,
    pub size: u64,
    pub retained: bool,
    pub oversized: bool,
    pub received_ms: i64,
    /// What the recent-commands table knew of its id when it was read.
    pub recent: Option<RecentCommand>,
    /// Its MQTT 5 request properties (empty without).
    pub request: CommandRequest,
}

/// The inbox's requests to the writer thread (one [`Command::Inbox`] each).
#[derive(Debug)]
pub(super) enum Request {
    /// Store delivered commands; replied after the commit.
    Take {
        commands: Vec<NewCommand>,
        /// Filled in by the transaction (see [`apply`]); read after its commit.
        taken: RefCell<Vec<Taken>>,
        reply: oneshot::Sender<Result<TakeReport, QueueError>>,
    },
    /// The next commands of `origin` after row `after`; answered after the group's commit.
    Next {
        origin: &'static str,
        after: i64,
        limit: usize,
        reply: oneshot::Sender<Result<Vec<InboxCommand>, QueueError>>,
    },
    /// Remove a row that needs no answer (a redelivery found while it waited).
    Done(i64),
}

impl Request {
    /// Whether the write adds rows (dropped, with the group's other inserts, when a commit
    /// fails; see `writer/plan.rs`).
    pub(super) fn inserts(&self) -> bool {
        matches!(self, Request::Take { .. })
    }

    /// Answers the request once its group committed (`commit_error`: it did not).
    pub(super) fn resolve(self, conn: &Connection, commit_error: Option<&str>) {
        let failed = || QueueError::Commit(commit_error.unwrap_or_default().to_owned());
        match self {
            Request::Take {
                commands,
                taken,
                reply,
            } => {
                let outcome = match commit_error {
                    Some(_) => Err(failed()),
                    None => {
                        let origin = commands.first().map_or("", |c| c.origin);
                        waiting(conn, origin).map(|waiting| TakeReport {
                            taken: taken.into_inner(),
                            waiting,
                        })
                    }
                };
                let _ = reply.send(outcome);
            }
            Request::Next {
                origin,
                after,
                limit,
                reply,
            } => {
                let _ = reply.send(next(conn, origin, after, limit));
            }
            Request::Done(_) => {}
        }
    }
}

/// Applies `request` inside the group's transaction.
pub(super) fn apply(tx: &Transaction<'_>, request: &Request, now_ms: i64) -> rusqlite::Result<()> {
    match request {
        Request::Take {
            commands, taken, ..
        } => {
            let mut outcomes = Vec::with_capacity(commands.len());
            // Counted once per origin and request, not per command: a burst must not cost a
            // scan of the inbox per command.
            let mut waiting: Vec<(&str, i64)> = Vec::new();
            for command in commands {
                let count = match waiting.iter_mut().find(|(o, _)| *o == command.origin) {
                    Some((_, count)) => count,
                    None => {
                        waiting.push((command.origin, count(tx, command.origin)?));
                        &mut waiting.last_mut().expect("just pushed").1
                    }
                };
                let outcome = take(tx, command, *count, now_ms)?;
                if outcome == Taken::Stored {
                    *count += 1;
                }
                outcomes.push(outcome);
            }
            *taken.borrow_mut() = outcomes;
        }
        Request::Done(row) => delete(tx, *row)?,
        Request::Next { .. } => {}
    }
    Ok(())
}

/// Stores `command` unless it is a known redelivery or `waiting` fills its origin's inbox.
fn take(
    tx: &Transaction<'_>,
    command: &NewCommand,
    waiting: i64,
    now_ms: i64,
) -> rusqlite::Result<Taken> {
    if (command.dup || command.retained) && is_known(tx, command)? {
        return Ok(Taken::Redelivered);
    }
    if waiting >= CAPACITY {
        return Ok(Taken::Full);
    }
    let flags = if command.retained { FLAG_RETAINED } else { 0 }
        | if command.oversized { FLAG_OVERSIZED } else { 0 };
    tx.prepare_cached(
        "INSERT INTO command_inbox (origin, device, point, cmd_id, payload, flags, size, \
         received_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        command.origin,
        command.device,
        command.point,
        command.id,
        command.payload,
        flags,
        i64::try_from(command.size).unwrap_or(i64::MAX),
        now_ms,
    ])?;
    request::insert(tx, tx.last_insert_rowid(), &command.request)?;
    Ok(Taken::Stored)
}

/// Whether the inbox holds this command, or (with an id) it was taken before.
fn is_known(tx: &Transaction<'_>, command: &NewCommand) -> rusqlite::Result<bool> {
    let waiting = match &command.id {
        Some(id) => tx
            .prepare_cached(
                "SELECT 1 FROM command_inbox WHERE origin = ?1 AND device = ?2 AND point = ?3 \
                 AND cmd_id = ?4",
            )?
            .query_row(
                params![command.origin, command.device, command.point, id],
                |_| Ok(()),
            )
            .optional()?,
        None if command.oversized => None,
        None => tx
            .prepare_cached(
                "SELECT 1 FROM command_inbox WHERE origin = ?1 AND device = ?2 AND point = ?3 \
                 AND cmd_id IS NULL AND payload = ?4",
            )?
            .query_row(
                params![
                    command.origin,
                    command.device,
                    command.point,
                    command.payload
                ],
                |_| Ok(()),
            )
            .optional()?,
    };
    if waiting.is_some() {
        return Ok(true);
    }
    let Some(id) = &command.id else {
        return Ok(false);
    };
    let key = CommandKey {
        origin: command.origin,
        device: command.device.clone(),
        point: command.point.clone(),
        id: id.clone(),
    };
    Ok(recent::state(tx, &key)?.is_some())
}

/// Removes a command from the inbox (with its answer, or alone).
pub(super) fn delete(tx: &Transaction<'_>, row: i64) -> rusqlite::Result<()> {
    tx.prepare_cached("DELETE FROM command_inbox WHERE id = ?1")?
        .execute([row])?;
    Ok(())
}

/// Commands of `origin` in the inbox.
fn count(conn: &Connection, origin: &str) -> rusqlite::Result<i64> {
    conn.prepare_cached("SELECT COUNT(*) FROM command_inbox WHERE origin = ?1")?
        .query_row([origin], |r| r.get(0))
}

fn waiting(conn: &Connection, origin: &str) -> Result<u64, QueueError> {
    Ok(u64::try_from(count(conn, origin)?).unwrap_or(0))
}

fn next(
    conn: &Connection,
    origin: &'static str,
    after: i64,
    limit: usize,
) -> Result<Vec<InboxCommand>, QueueError> {
    let mut statement = conn.prepare_cached(
        "SELECT id, device, point, cmd_id, payload, flags, size, received_ms FROM command_inbox \
         WHERE origin = ?1 AND id > ?2 ORDER BY id LIMIT ?3",
    )?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = statement.query_map(params![origin, after, limit], |r| {
        let flags: i64 = r.get(5)?;
        Ok(InboxCommand {
            row: r.get(0)?,
            device: r.get(1)?,
            point: r.get(2)?,
            id: r.get(3)?,
            payload: r.get(4)?,
            size: u64::try_from(r.get::<_, i64>(6)?).unwrap_or(0),
            retained: flags & FLAG_RETAINED != 0,
            oversized: flags & FLAG_OVERSIZED != 0,
            received_ms: r.get(7)?,
            recent: None,
            request: CommandRequest::default(),
        })
    })?;
    let mut commands = rows.collect::<Result<Vec<_>, _>>()?;
    for command in &mut commands {
        command.request = request::lookup(conn, command.row)?;
        if let Some(id) = &command.id {
            let key = CommandKey {
                origin,
                device: command.device.clone(),
                point: command.point.clone(),
                id: id.clone(),
            };
            command.recent = recent::lookup(conn, &key)?;
        }
    }
    Ok(commands)
}

impl Queue {
    /// Commits delivered commands to the inbox (one request, group-committed with whatever
    /// else the writer has); returns after the commit, saying what became of each. Not subject
    /// to `store.on_full`: the inbox has its own bound ([`CAPACITY`]).
    pub async fn inbox_take(&self, commands: Vec<NewCommand>) -> Result<TakeReport, QueueError> {
        self.request(|reply| {
            Command::Inbox(Request::Take {
                commands,
                taken: RefCell::default(),
                reply,
            })
        })
        .await
    }

    /// Up to `limit` commands of `origin` after row `after`, in arrival order, each with what
    /// the recent-commands table knows of its id. Sees every commit made before it.
    pub async fn inbox_next(
        &self,
        origin: &'static str,
        after: i64,
        limit: usize,
    ) -> Result<Vec<InboxCommand>, QueueError> {
        self.request(|reply| {
            Command::Inbox(Request::Next {
                origin,
                after,
                limit,
                reply,
            })
        })
        .await
    }

    /// Removes a command that needs no answer (committed with the next group).
    pub async fn inbox_done(&self, row: i64) -> Result<(), QueueError> {
        self.send(Command::Inbox(Request::Done(row))).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::{Entry, Message, MessageKind, QueueOptions};

    fn command(id: Option<&str>, payload: &str) -> NewCommand {
        NewCommand {
            origin: "cloud",
            device: "boiler".into(),
            point: "setpoint".into(),
            id: id.map(|id| format!("{id:?}")),
            payload: payload.as_bytes().to_vec(),
            size: payload.len() as u64,
            dup: false,
            retained: false,
            oversized: false,
            request: CommandRequest::default(),
        }
    }

    fn result(payload: &str) -> Message {
        Message {
            kind: MessageKind::CommandResult,
            device: "boiler".into(),
            point: "setpoint".into(),
            payload: payload.into(),
            ts_ms: 1,
            qos: crate::config::Qos::AtLeastOnce,
            retain: false,
        }
    }

    /// Commits the result `{}` of the inbox row `row`, removing it.
    async fn answered(queue: &Queue, key: Option<CommandKey>, row: i64) {
        queue
            .send_answer(key, "{}".into(), Some(result("{}")), Some(row))
            .await
            .unwrap()
            .committed()
            .await
            .unwrap();
    }

    /// Stored in arrival order; a DUP of a waiting command is not stored again, a repeat
    /// without DUP is; answering removes the row with the answer; everything survives a reopen.
    #[tokio::test]
    async fn commands_wait_in_arrival_order_and_leave_with_their_answer() {
        let dir = tempfile::tempdir().unwrap();
        let (queue, _live, writer) = Queue::open(dir.path(), QueueOptions::default()).unwrap();
        let mut dup = command(Some("a"), "{}");
        dup.dup = true;
        let mut bare_dup = command(None, "7");
        bare_dup.dup = true;
        let report = queue
            .inbox_take(vec![
                command(Some("a"), "{}"),
                command(None, "7"),
                dup,
                bare_dup,
                command(Some("a"), "{}"),
            ])
            .await
            .unwrap();
        use Taken::*;
        assert_eq!(
            report.taken,
            [Stored, Stored, Redelivered, Redelivered, Stored]
        );
        assert_eq!(report.waiting, 3);
        let waiting = queue.inbox_next("cloud", 0, 10).await.unwrap();
        assert_eq!(waiting.len(), 3);
        assert!(waiting.windows(2).all(|w| w[0].row < w[1].row));
        assert_eq!(waiting[0].id.as_deref(), Some("\"a\""));
        assert_eq!(waiting[1].payload, b"7");
        assert!(queue.inbox_next("local", 0, 10).await.unwrap().is_empty());

        // The first is answered: its row leaves with the answer, and its id is now known.
        let key = CommandKey {
            origin: "cloud",
            device: "boiler".into(),
            point: "setpoint".into(),
            id: "\"a\"".into(),
        };
        answered(&queue, Some(key), waiting[0].row).await;
        writer.close().await.unwrap();

        let (queue, _live, writer) = Queue::open(dir.path(), QueueOptions::default()).unwrap();
        let left = queue.inbox_next("cloud", 0, 10).await.unwrap();
        assert_eq!(
            left.iter().map(|c| c.row).collect::<Vec<_>>(),
            [waiting[1].row, waiting[2].row]
        );
        assert_eq!(
            left[1].recent,
            Some(RecentCommand::Answered("{}".into())),
            "the repeat sees the answer of the first"
        );
        // A retained copy of an answered id is a redelivery; one of an unknown id is stored.
        let mut retained = command(Some("a"), "{}");
        retained.retained = true;
        let mut fresh = command(Some("b"), "{}");
        fresh.retained = true;
        let report = queue.inbox_take(vec![retained, fresh]).await.unwrap();
        assert_eq!(report.taken, [Redelivered, Stored]);
        queue.inbox_done(left[0].row).await.unwrap();
        let left = queue.inbox_next("cloud", 0, 10).await.unwrap();
        assert_eq!(left.len(), 2);
        assert!(left[1].retained);
        writer.close().await.unwrap();
    }

    /// A command's MQTT 5 request survives a reopen with it, and leaves the file with it.
    #[tokio::test]
    async fn a_request_is_kept_with_its_command_and_leaves_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let (queue, _live, writer) = Queue::open(dir.path(), QueueOptions::default()).unwrap();
        let request = CommandRequest {
            response_topic: Some("reply/here".into()),
            correlation: Some(vec![0, 1, 255]),
            expires_ms: Some(99),
        };
        let mut asked = command(Some("r"), "{}");
        asked.request = request.clone();
        queue
            .inbox_take(vec![asked, command(None, "1")])
            .await
            .unwrap();
        writer.close().await.unwrap();

        let (queue, _live, writer) = Queue::open(dir.path(), QueueOptions::default()).unwrap();
        let waiting = queue.inbox_next("cloud", 0, 10).await.unwrap();
        assert_eq!(waiting[0].request, request);
        assert!(waiting[1].request.is_empty());
        let response = Message {
            kind: MessageKind::CommandResponse,
            device: "reply/here".into(),
            point: request::to_hex(&[0, 1, 255]).into(),
            ..result("{}")
        };
        queue
            .send_answer(None, String::new(), Some(response), None)
            .await
            .unwrap();
        answered(&queue, None, waiting[0].row).await;
        writer.close().await.unwrap();
        let conn = Connection::open(dir.path().join(crate::queue::DB_FILE)).unwrap();
        let left: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM command_inbox WHERE response_topic IS NOT NULL",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(left, 0);
        drop(conn);

        // The answer on the response topic is a queued row like the result, after a reopen.
        let (queue, _live, writer) = Queue::open(dir.path(), QueueOptions::default()).unwrap();
        let rows = queue.fetch(0, 10).await.unwrap();
        let Entry::Message(answer) = &rows[0].entry else {
            panic!("a message row");
        };
        assert_eq!(answer.kind, MessageKind::CommandResponse);
        assert_eq!(
            crate::queue::wire::row_topic("p", &rows[0].entry),
            "reply/here"
        );
        assert_eq!(request::from_hex(&answer.point), Some(vec![0, 1, 255]));
        writer.close().await.unwrap();
    }

    #[test]
    fn a_full_inbox_refuses_more() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(SCHEMA).unwrap();
        conn.execute_batch(recent::SCHEMA).unwrap();
        request::migrate(&conn).unwrap();
        conn.execute(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?1) \
             INSERT INTO command_inbox (origin, device, point, payload, flags, size, received_ms) \
             SELECT 'cloud', 'd', 'p', '1', 0, 1, i FROM n",
            [CAPACITY],
        )
        .unwrap();
        let tx = conn.transaction().unwrap();
        let full = count(&tx, "cloud").unwrap();
        assert_eq!(full, CAPACITY);
        assert_eq!(
            take(&tx, &command(None, "1"), full, 0).unwrap(),
            Taken::Full
        );
        assert_eq!(
            take(&tx, &command(None, "1"), full - 1, 0).unwrap(),
            Taken::Stored
        );
        let mut local = command(None, "1");
        local.origin = "local";
        let request = Request::Take {
            commands: vec![local.clone(), command(None, "1"), local],
            taken: RefCell::default(),
            reply: oneshot::channel().0,
        };
        apply(&tx, &request, 0).unwrap();
        let Request::Take { taken, .. } = request else {
            unreachable!()
        };
        assert_eq!(
            taken.into_inner(),
            [Taken::Stored, Taken::Full, Taken::Stored],
            "the bound is per origin"
        );
    }
}
