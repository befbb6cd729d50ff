//! The schema (v2, migrated from v1 in place), the pragmas of the read-write connection, and
//! the permission check made before SQLite opens anything.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, TransactionBehavior};

use super::{db_path, BUSY_TIMEOUT};
use crate::config::SyncMode;
use crate::queue::{NotWritable, QueueError};

/// Schema version this build writes (`PRAGMA user_version`). A database with a newer version is
/// refused rather than written to: an older binary must not corrupt a newer layout.
pub(crate) const SCHEMA_VERSION: i64 = 2;

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
pub(crate) const SCHEMA_V1: &str = "CREATE TABLE samples (
    seq    INTEGER PRIMARY KEY AUTOINCREMENT,
    device TEXT    NOT NULL,
    point  TEXT    NOT NULL,
    value  TEXT    NOT NULL,
    ts_ms  INTEGER NOT NULL,
    qos    INTEGER NOT NULL,
    retain INTEGER NOT NULL
)";

/// Opens the read-write connection: pragmas first, then the schema migration.
pub(crate) fn open_rw(
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
    let wal = crate::queue::capacity::wal_budget(max_size);
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
pub(crate) fn check_writable(data_dir: &Path) -> Result<(), QueueError> {
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
        return Err(QueueError::NotWritable(Box::new(NotWritable {
            path,
            user,
            reason: errno.desc().to_owned(),
            fix,
        })));
    }
    Ok(())
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
    tx.execute_batch(crate::queue::recent::SCHEMA)?;
    tx.execute_batch(crate::queue::inbox::SCHEMA)?;
    crate::queue::request::migrate(&tx)?;
    // Written only when it changes: an open that writes nothing also works on a full disk.
    if version != SCHEMA_VERSION {
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    }
    tx.commit()?;
    Ok(())
}
