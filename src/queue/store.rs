//! On-disk format: schema, pragmas, migrations, integrity check, quarantine, SQL and the row
//! codec.
//!
//! Everything that knows SQL lives here; the writer thread ([`super::writer`]) only sequences
//! calls into this module. The read-only [`QueueReader`] shares the codec so that tools and tests
//! decode rows exactly as the uplink sees them.

use std::ffi::OsString;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::types::ValueRef;
use rusqlite::{params, Connection, ErrorCode, OpenFlags, OptionalExtension, TransactionBehavior};

use super::recent::CommandKey;
use super::summary::{Contents, Group, InFlight, RowRef};
use super::{
    Delivery, Entry, Message, MessageKind, QueueError, QueueProgress, StoredRow, StoredSample,
};
use crate::config::{Qos, SyncMode};
use crate::sample::{Sample, Value};

/// File name of the queue inside the data directory.
pub const DB_FILE: &str = "queue.db";

/// Schema version this build writes (`PRAGMA user_version`). A database with a newer version is
/// refused rather than written to: an older binary must not corrupt a newer layout.
pub(super) const SCHEMA_VERSION: i64 = 2;

/// How long a statement waits for a lock held by another connection before failing with
/// `SQLITE_BUSY`. The writer is the only read-write connection, but read-only tools (and a
/// checkpoint or WAL recovery they trigger) can hold locks briefly; a few seconds rides over that
/// without turning a stuck peer into an unbounded stall of the writer.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Schema v2, as a new file gets it. The column order is the one a migrated v1 file ends up
/// with (`ALTER TABLE ADD COLUMN` appends), so both layouts are identical.
///
/// - `AUTOINCREMENT` (not a plain rowid) so that a `seq` is never reused, even after the newest
///   rows were deleted: consumers de-duplicate by `seq`.
/// - `kind` 0 is a sample (`body` = the value's JSON, the envelope with `seq` is rendered at
///   send time); other kinds carry their whole payload in `body` (see [`MessageKind`]).
/// - `state`/`pkid` are the MQTT session: 0 queued (pkid NULL), 1 PUBLISH sent with `pkid`,
///   2 PUBREC received and PUBREL due for `pkid`.
/// - `meta` holds small facts about the file, e.g. which broker session (`session_peer`) the
///   session states belong to.
/// - `messages_unsettled` finds the few rows with a session state at connect time without a
///   scan; `messages_expiry` finds expired rows of points with a `max_age`.
const SCHEMA_V2: &str = "CREATE TABLE messages (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    device     TEXT    NOT NULL,
    point      TEXT    NOT NULL,
    body       TEXT    NOT NULL,
    ts_ms      INTEGER NOT NULL,
    qos        INTEGER NOT NULL,
    retain     INTEGER NOT NULL,
    kind       INTEGER NOT NULL DEFAULT 0,
    expires_ms INTEGER,
    state      INTEGER NOT NULL DEFAULT 0,
    pkid       INTEGER
);
CREATE INDEX messages_unsettled ON messages(seq) WHERE state != 0;
CREATE INDEX messages_expiry ON messages(expires_ms) WHERE expires_ms IS NOT NULL;
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);";

/// v1 → v2. Schema-only statements (SQLite rewrites no row for a rename or an added column with
/// a constant default), so a backlog of any size upgrades in the time of the index scans, and
/// every v1 row stays with its `seq` (`sqlite_sequence` follows the rename). Old rows become
/// queued samples without expiry.
const MIGRATE_V1_TO_V2: &str = "ALTER TABLE samples RENAME TO messages;
ALTER TABLE messages RENAME COLUMN value TO body;
ALTER TABLE messages ADD COLUMN kind INTEGER NOT NULL DEFAULT 0;
ALTER TABLE messages ADD COLUMN expires_ms INTEGER;
ALTER TABLE messages ADD COLUMN state INTEGER NOT NULL DEFAULT 0;
ALTER TABLE messages ADD COLUMN pkid INTEGER;
CREATE INDEX messages_unsettled ON messages(seq) WHERE state != 0;
CREATE INDEX messages_expiry ON messages(expires_ms) WHERE expires_ms IS NOT NULL;
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);";

/// Schema v1 (contract v1 builds); kept to create v1 files in migration tests.
#[cfg(test)]
pub(super) const SCHEMA_V1: &str = "CREATE TABLE samples (
    seq    INTEGER PRIMARY KEY AUTOINCREMENT,
    device TEXT    NOT NULL,
    point  TEXT    NOT NULL,
    value  TEXT    NOT NULL,
    ts_ms  INTEGER NOT NULL,
    qos    INTEGER NOT NULL,
    retain INTEGER NOT NULL
)";

const COLUMNS: &str = "seq, device, point, body, ts_ms, qos, retain, kind, expires_ms, state, pkid";

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
const SQL_EVICT_OLDEST: &str = "DELETE FROM messages WHERE seq IN \
     (SELECT seq FROM messages WHERE state = 0 ORDER BY seq LIMIT ?1)";
/// The newest `seq` ever handed out. `sqlite_sequence` keeps it after the rows are deleted, which
/// `MAX(seq)` would not.
const SQL_LAST_SEQ: &str =
    "SELECT COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'messages'), 0)";
const SQL_DEPTH: &str = "SELECT COUNT(*) FROM messages";
/// The head of the queue: the rowid b-tree's first cell, a few page reads however long the queue.
const SQL_OLDEST_TS: &str = "SELECT ts_ms FROM messages ORDER BY seq LIMIT 1";

/// `<data_dir>/queue.db`.
pub fn db_path(data_dir: &Path) -> PathBuf {
    data_dir.join(DB_FILE)
}

/// Opens the read-write connection: pragmas first, then the schema migration.
pub(super) fn open_rw(
    path: &Path,
    sync: SyncMode,
    max_size: u64,
) -> Result<Connection, QueueError> {
    let mut conn = Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // WAL: readers never block the writer and a commit is one append + one fsync of the log.
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(QueueError::JournalMode(mode));
    }
    // FULL: the WAL is fsynced at every commit, so a committed row survives power loss. NORMAL:
    // fsync only at checkpoints, so a power cut may roll back the commits since the last one
    // (a process crash loses nothing either way).
    let sync = match sync {
        SyncMode::Full => "FULL",
        SyncMode::Normal => "NORMAL",
    };
    conn.pragma_update(None, "synchronous", sync)?;
    // The writer lowers the checkpoint threshold to what the disk can hold (`capacity::limits`);
    // the log file is never truncated below the budget, so the space it holds stays ours.
    let wal = super::capacity::wal_budget(max_size);
    let page_size: i64 = conn.pragma_query_value(None, "page_size", |r| r.get(0))?;
    let pages = (wal / u64::try_from(page_size.max(512)).unwrap_or(4096)).max(4);
    conn.pragma_update(
        None,
        "wal_autocheckpoint",
        i64::try_from(pages).unwrap_or(1000),
    )?;
    conn.pragma_update(None, "journal_size_limit", i64::try_from(wal).unwrap_or(-1))?;
    migrate(&mut conn)?;
    Ok(conn)
}

/// Checks, before SQLite touches anything, that the effective user may create files in
/// `data_dir` (SQLite creates `-wal` and `-shm` there, a quarantine renames there) and read and
/// write `queue.db` and its companions where they exist. SQLite would otherwise open a file it
/// cannot write read-only, leave a `-wal` and `-shm` beside it and only fail at the first write.
pub(super) fn check_writable(data_dir: &Path) -> Result<(), QueueError> {
    use nix::unistd::AccessFlags;
    let file = db_path(data_dir);
    let mut checks = vec![(
        data_dir.to_path_buf(),
        AccessFlags::W_OK | AccessFlags::X_OK,
    )];
    for suffix in ["", "-wal", "-shm"] {
        let mut path = file.clone().into_os_string();
        path.push(suffix);
        let path = PathBuf::from(path);
        if path.exists() {
            checks.push((path, AccessFlags::R_OK | AccessFlags::W_OK));
        }
    }
    for (path, mode) in checks {
        let Err(errno) = nix::unistd::eaccess(&path, mode) else {
            continue;
        };
        let uid = nix::unistd::Uid::effective();
        let user = nix::unistd::User::from_uid(uid)
            .ok()
            .flatten()
            .map_or_else(|| format!("uid {uid}"), |u| u.name);
        let fix = match errno {
            nix::errno::Errno::EROFS => "the file system is read-only: remount it read-write or \
                                         set gateway.data_dir to a writable directory"
                .to_owned(),
            _ => format!(
                "give the directory and its files to that user, e.g. `sudo chown -R {user}: {}`",
                data_dir.display()
            ),
        };
        return Err(QueueError::NotWritable(Box::new(super::NotWritable {
            path,
            user,
            reason: errno.desc().to_owned(),
            fix,
        })));
    }
    Ok(())
}

/// Whether a statement failed because the disk (or the file size limit) is full.
pub(super) fn is_disk_full(error: &rusqlite::Error) -> bool {
    error.sqlite_error_code() == Some(ErrorCode::DiskFull)
}

/// Copies the write-ahead log into the database as far as no reader needs it (`PASSIVE`: never
/// waits). A log copied completely is written from its start again by the next commit, reusing
/// the file's space.
pub(super) fn checkpoint(conn: &Connection) -> rusqlite::Result<()> {
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
}

/// Whether row `seq` is in the file.
pub(super) fn row_exists(conn: &Connection, seq: u64) -> rusqlite::Result<bool> {
    let Ok(seq) = i64::try_from(seq) else {
        return Ok(false);
    };
    conn.prepare_cached("SELECT 1 FROM messages WHERE seq = ?1")?
        .exists([seq])
}

/// Whether an error means "this file is not a sound SQLite database" (quarantine it) rather than
/// "something around it failed" (permissions, I/O, a newer schema: refuse to start, touch
/// nothing).
pub(super) fn is_corruption(error: &QueueError) -> bool {
    match error {
        QueueError::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => {
            matches!(e.code, ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase)
        }
        QueueError::Corrupt(_) => true,
        _ => false,
    }
}

/// `PRAGMA quick_check`: verifies every page and b-tree (without the cross-checks of indexes
/// against tables that `integrity_check` adds, which is O(N log N)). Reads the whole file once.
pub(super) fn quick_check(conn: &Connection) -> Result<(), QueueError> {
    let mut stmt = conn.prepare("PRAGMA quick_check(5)")?;
    let lines: Vec<String> = stmt
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<Result<_, _>>()?;
    if lines.len() == 1 && lines[0] == "ok" {
        Ok(())
    } else {
        Err(QueueError::Corrupt(lines.join("; ")))
    }
}

/// The newest `seq` a damaged file handed out, so that the new queue continues above it:
/// `sqlite_sequence` as the page walk ([`super::salvage`]) reads it — SQLite itself refuses a
/// file cut short as a whole — raised to the highest `seq` on any page. `None` when
/// `sqlite_sequence` cannot be read: the rows' highest `seq` is no bound then (the newest rows
/// may have been acknowledged, or sat in the lost part), and a `seq` handed out again would make
/// consumers that de-duplicate by `seq` drop new samples. Values above 2^53 are refused: a
/// damaged page can decode as any number, and a seq that large would break JSON consumers and
/// soon exhaust the id space.
pub(super) fn salvage_last_seq(path: &Path) -> Option<u64> {
    const PLAUSIBLE: u64 = 1 << 53;
    let salvage = super::salvage::Salvage::open(path).ok()?;
    let last = salvage.sequence()?.max(salvage.max_seq().unwrap_or(0));
    (last < PLAUSIBLE).then_some(last)
}

/// Makes the next `seq` of a new file larger than `floor`.
pub(super) fn seed_last_seq(conn: &Connection, floor: u64) -> Result<(), QueueError> {
    let floor = i64::try_from(floor).unwrap_or(i64::MAX / 2);
    conn.execute("DELETE FROM sqlite_sequence WHERE name = 'messages'", [])?;
    conn.execute(
        "INSERT INTO sqlite_sequence (name, seq) VALUES ('messages', ?1)",
        [floor],
    )?;
    Ok(())
}

/// Renames `queue.db` (and its `-wal`/`-shm` companions, so the copy still opens with its log)
/// to `queue.db.corrupt-<UTC timestamp>[-n]`. Never deletes anything. Returns the new name.
pub(super) fn quarantine(path: &Path, utc_stamp: &str) -> Result<PathBuf, std::io::Error> {
    let mut target = PathBuf::from(format!("{}.corrupt-{utc_stamp}", path.display()));
    let mut n = 1;
    while target.exists() {
        n += 1;
        target = PathBuf::from(format!("{}.corrupt-{utc_stamp}-{n}", path.display()));
    }
    std::fs::rename(path, &target)?;
    for suffix in ["-wal", "-shm"] {
        let from = PathBuf::from(format!("{}{suffix}", path.display()));
        if from.exists() {
            std::fs::rename(&from, format!("{}{suffix}", target.display()))?;
        }
    }
    // Make the renames durable before a new file takes the old name.
    if let Some(dir) = path.parent() {
        if let Ok(dir) = std::fs::File::open(dir) {
            let _ = dir.sync_all();
        }
    }
    Ok(target)
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
    match version {
        0 => tx.execute_batch(SCHEMA_V2)?,
        1 => tx.execute_batch(MIGRATE_V1_TO_V2)?,
        _ => {}
    }
    // Additive, so not a schema version of its own (see `recent.rs`).
    tx.execute_batch(super::recent::SCHEMA)?;
    tx.execute_batch(super::inbox::SCHEMA)?;
    // Written only when it changes: an open that writes nothing also works on a full disk.
    if version != SCHEMA_VERSION {
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    }
    tx.commit()?;
    Ok(())
}

/// Reads `last_seq` (from `sqlite_sequence`), `depth` (`COUNT(*)`), the bytes in use and the
/// oldest row's time.
pub(super) fn load_progress(conn: &Connection) -> Result<QueueProgress, QueueError> {
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
pub(super) fn oldest_ts(conn: &Connection) -> Result<Option<i64>, QueueError> {
    Ok(conn
        .prepare_cached(SQL_OLDEST_TS)?
        .query_row([], |r| r.get(0))
        .optional()?)
}

/// Takes and releases the write lock without writing anything (no fsync): `BEGIN IMMEDIATE`
/// waits up to [`BUSY_TIMEOUT`] for another connection's lock and then fails, so this fails
/// exactly when a commit could not start either.
pub(super) fn probe_write_lock(conn: &mut Connection) -> Result<(), QueueError> {
    conn.transaction_with_behavior(TransactionBehavior::Immediate)?
        .rollback()?;
    Ok(())
}

/// Bytes of `queue.db` holding data: pages in use (not on the free list) times the page size.
/// Cheap (two header reads); freed pages are reused by later inserts, so this is what
/// `store.max_size` bounds.
pub(super) fn used_bytes(conn: &Connection) -> Result<u64, QueueError> {
    let pages: i64 = conn.pragma_query_value(None, "page_count", |r| r.get(0))?;
    let free: i64 = conn.pragma_query_value(None, "freelist_count", |r| r.get(0))?;
    let size: i64 = conn.pragma_query_value(None, "page_size", |r| r.get(0))?;
    Ok(u64::try_from((pages - free).max(0) * size).unwrap_or(0))
}

/// One write applied by [`apply_writes`], in channel order.
#[derive(Debug, Clone, Copy)]
pub(super) enum Write<'a> {
    Insert {
        entry: &'a Entry,
        expires_ms: Option<i64>,
    },
    /// The broker acknowledged the row (PUBACK/PUBCOMP): delete it whatever its state.
    Ack(u64),
    /// The broker acknowledged every row of `seq` in this range (acknowledgements kept over a
    /// failed commit): delete them.
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
        request: &'a super::inbox::Request,
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
pub(super) struct Applied {
    /// `MarkPublished` rows that no longer exist (evicted or expired after they were fetched):
    /// their PUBLISH must not be written.
    pub unmarked: Vec<u64>,
    pub inserted: u64,
    /// Rows that existed and were deleted by an ack; an ack of an unknown `seq` counts 0.
    pub acked: u64,
    pub expired: u64,
    pub evicted: u64,
    /// `seq` of the last insert, if any.
    pub last_seq: Option<u64>,
}

impl Applied {
    pub fn removed(&self) -> u64 {
        self.acked + self.expired + self.evicted
    }
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
        // The hot statements are looked up once per transaction, not once per row.
        let mut insert = tx.prepare_cached(SQL_INSERT)?;
        let mut delete = tx.prepare_cached(SQL_DELETE)?;
        for write in writes {
            match write {
                Write::Insert { entry, expires_ms } => {
                    match entry {
                        Entry::Sample(s) => insert.execute(params![
                            &*s.device,
                            &*s.point,
                            s.value.to_json(),
                            s.ts_ms,
                            qos_to_i64(s.qos),
                            s.retain,
                            0i64,
                            expires_ms,
                        ])?,
                        Entry::Message(m) => insert.execute(params![
                            &*m.device,
                            &*m.point,
                            m.payload,
                            m.ts_ms,
                            qos_to_i64(m.qos),
                            m.retain,
                            m.kind.code(),
                            expires_ms,
                        ])?,
                    };
                    applied.inserted += 1;
                    applied.last_seq = u64::try_from(tx.last_insert_rowid()).ok();
                }
                Write::Ack(seq) => {
                    // A seq above i64::MAX was never handed out: nothing to delete.
                    if let Ok(seq) = i64::try_from(seq) {
                        applied.acked += delete.execute([seq])? as u64;
                    }
                }
                Write::AckRange(from, to) => {
                    let from = i64::try_from(from).unwrap_or(i64::MAX);
                    let to = i64::try_from(to).unwrap_or(i64::MAX);
                    applied.acked +=
                        tx.prepare_cached(SQL_DELETE_RANGE)?.execute([from, to])? as u64;
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
                    applied.expired +=
                        tx.prepare_cached(SQL_SWEEP_EXPIRED)?.execute([now_ms])? as u64;
                }
                Write::SetMeta { key, value } => {
                    tx.prepare_cached(
                        "INSERT INTO meta (key, value) VALUES (?1, ?2) \
                         ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                    )?
                    .execute([key, value])?;
                }
                Write::EvictOldest(n) => {
                    let n = i64::try_from(n).unwrap_or(i64::MAX);
                    applied.evicted += tx.prepare_cached(SQL_EVICT_OLDEST)?.execute([n])? as u64;
                }
                Write::CommandTaken { key, now_ms } => super::recent::begin(&tx, key, now_ms)?,
                Write::Inbox { request, now_ms } => super::inbox::apply(&tx, request, now_ms)?,
                Write::CommandAnswered {
                    key,
                    result,
                    message,
                    inbox,
                    now_ms,
                } => {
                    if let Some(row) = inbox {
                        super::inbox::delete(&tx, row)?;
                    }
                    if let Some(m) = message {
                        insert.execute(params![
                            &*m.device,
                            &*m.point,
                            m.payload,
                            m.ts_ms,
                            qos_to_i64(m.qos),
                            m.retain,
                            m.kind.code(),
                            None::<i64>,
                        ])?;
                        applied.inserted += 1;
                        applied.last_seq = u64::try_from(tx.last_insert_rowid()).ok();
                    }
                    if let Some(key) = key {
                        super::recent::answer(&tx, key, result, now_ms)?;
                    }
                }
            }
        }
    }
    tx.commit()?;
    Ok(applied)
}

/// A value of the `meta` table.
pub(super) fn get_meta(conn: &Connection, key: &str) -> Result<Option<String>, QueueError> {
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
pub(super) fn fetch_queued(
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
pub(super) struct Unsettled {
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
pub(super) fn unsettled_rows(conn: &Connection) -> Result<Unsettled, QueueError> {
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
fn fetch_all(conn: &Connection) -> Result<Vec<StoredRow>, QueueError> {
    let sql = format!("SELECT {COLUMNS} FROM messages WHERE seq > ?1 ORDER BY seq LIMIT ?2");
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query(params![-1i64, i64::MAX])?;
    collect_rows(rows, false)
}

/// Decodes rows. With `partial`, a decode error after at least one good row ends the page and
/// returns `Ok` (the next page starts at the bad row and reports it).
fn collect_rows(mut rows: rusqlite::Rows<'_>, partial: bool) -> Result<Vec<StoredRow>, QueueError> {
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
) -> Result<StoredRow, QueueError> {
    let mut fields = [ValueRef::Null; COLUMN_COUNT];
    for (i, field) in fields.iter_mut().enumerate() {
        *field = row.get_ref(i)?;
    }
    decode_fields(&fields, last_device, last_point)
}

/// Columns of a row in [`COLUMNS`] order.
pub(super) const COLUMN_COUNT: usize = 11;

/// Decodes a row from its values in [`COLUMNS`] order (`seq` first): the codec shared by the
/// queries and by the page walk of a damaged file (`salvage.rs`).
pub(super) fn decode_fields(
    fields: &[ValueRef<'_>; COLUMN_COUNT],
    last_device: &mut Option<Arc<str>>,
    last_point: &mut Option<Arc<str>>,
) -> Result<StoredRow, QueueError> {
    let seq = fields[0]
        .as_i64()
        .map_err(|e| decode_err(0, "seq", e.to_string()))?;
    let seq =
        u64::try_from(seq).map_err(|_| decode_err(0, "seq", format!("negative seq {seq}")))?;
    let text = |idx: usize, column: &'static str| -> Result<&str, QueueError> {
        fields[idx]
            .as_str()
            .map_err(|e| decode_err(seq, column, e.to_string()))
    };
    let int = |idx: usize, column: &'static str| -> Result<i64, QueueError> {
        fields[idx]
            .as_i64()
            .map_err(|e| decode_err(seq, column, e.to_string()))
    };
    let int_or_null = |idx: usize, column: &'static str| -> Result<Option<i64>, QueueError> {
        fields[idx]
            .as_i64_or_null()
            .map_err(|e| decode_err(seq, column, e.to_string()))
    };
    let device = intern(text(1, "device")?, last_device);
    let point = intern(text(2, "point")?, last_point);
    let body = text(3, "body")?;
    let ts_ms = int(4, "ts_ms")?;
    let qos_raw = int(5, "qos")?;
    let qos = qos_from_i64(qos_raw)
        .ok_or_else(|| decode_err(seq, "qos", format!("{qos_raw} is not 1 or 2")))?;
    let retain = match int(6, "retain")? {
        0 => false,
        1 => true,
        other => return Err(decode_err(seq, "retain", format!("{other} is not 0 or 1"))),
    };
    let kind_raw = int(7, "kind")?;
    let expires_ms = int_or_null(8, "expires_ms")?;
    let state = int(9, "state")?;
    let pkid = int_or_null(10, "pkid")?;
    let pkid = || {
        pkid.and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p != 0)
            .ok_or_else(|| decode_err(seq, "pkid", format!("{pkid:?} is not a packet id")))
    };
    let delivery = match state {
        0 => Delivery::Queued,
        1 => Delivery::Published { pkid: pkid()? },
        2 => Delivery::Received { pkid: pkid()? },
        other => {
            return Err(decode_err(
                seq,
                "state",
                format!("{other} is not 0, 1 or 2"),
            ))
        }
    };
    let entry = if kind_raw == 0 {
        let value = Value::from_json(body)
            .ok_or_else(|| decode_err(seq, "body", format!("{body:?} is not a value")))?;
        Entry::Sample(Sample {
            device,
            point,
            value,
            ts_ms,
            qos,
            retain,
        })
    } else {
        let kind = MessageKind::from_code(kind_raw)
            .ok_or_else(|| decode_err(seq, "kind", format!("{kind_raw} is not a known kind")))?;
        Entry::Message(Message {
            kind,
            device,
            point,
            payload: body.to_owned(),
            ts_ms,
            qos,
            retain,
        })
    };
    Ok(StoredRow {
        seq,
        entry,
        delivery,
        expires_ms,
    })
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
    pub fn recent_commands(&self, limit: usize) -> Result<Vec<super::CommandRecord>, QueueError> {
        super::recent::newest(&self.conn, limit)
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
        let session_peer = match self.layout {
            Layout::V2 => get_meta(&tx, super::SESSION_PEER)?,
            Layout::V1 => None,
        };
        Ok(Contents {
            last_seq: to_u64(last_seq),
            used_bytes: used_bytes(&tx)?,
            groups,
            in_flight,
            oldest,
            newest,
            session_peer,
        })
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
        mut visit: impl FnMut(Result<StoredRow, QueueError>) -> ControlFlow<()>,
    ) -> Result<usize, QueueError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM {} WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            self.layout.source()
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut rows = stmt.query(params![after_seq, limit])?;
        let (mut last_device, mut last_point) = (None, None);
        let mut seen = 0;
        while let Some(row) = rows.next()? {
            seen += 1;
            if visit(decode_row(row, &mut last_device, &mut last_point)).is_break() {
                break;
            }
        }
        Ok(seen)
    }
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
