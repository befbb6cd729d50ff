//! Why a queue call failed.

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("cannot create data directory {path}: {source}")]
    CreateDir {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("sqlite error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("queue is closed")]
    Closed,
    /// A stored row does not decode. `seq` names it so that an operator (or the uplink, by
    /// acking it) can get rid of it; rows before it are still returned by `fetch`.
    #[error("queue row {seq} cannot be decoded: column {column}: {reason}")]
    Decode {
        seq: u64,
        column: &'static str,
        reason: String,
    },
    #[error("queue schema version {found} is newer than the supported version {supported}")]
    SchemaTooNew { found: i64, supported: i64 },
    /// SQLite refused WAL (e.g. a file system without shared memory support).
    #[error("cannot enable WAL journal mode (got {0:?})")]
    JournalMode(String),
    #[error("cannot start the queue writer thread: {0}")]
    Spawn(std::io::Error),
    /// Refused at `push` so that no undecodable row reaches the disk.
    #[error("sample value is not finite")]
    NonFiniteValue,
    #[error("a qos 0 message cannot be queued")]
    QosZero,
    #[error("queue writer thread panicked")]
    WriterPanicked,
    #[error("queue file failed its integrity check: {0}")]
    Corrupt(String),
    #[error("cannot quarantine the corrupt queue file {path}: {source}")]
    Quarantine {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    /// The transaction holding this write failed (disk full, I/O error); nothing of it applied.
    #[error("queue commit failed: {0}")]
    Commit(String),
    /// Checked before SQLite opens anything, so nothing (no `-wal`, no `-shm`) is left behind.
    #[error(transparent)]
    NotWritable(Box<NotWritable>),
}

/// A queue file or directory the gateway's user cannot write ([`QueueError::NotWritable`]).
#[derive(Debug, thiserror::Error)]
#[error("{path} is not writable by user {user}: {reason}; {fix}")]
pub struct NotWritable {
    pub path: std::path::PathBuf,
    /// Name (or uid) of the effective user.
    pub user: String,
    pub reason: String,
    /// What to run.
    pub fix: String,
}
