//! On-disk format: everything that knows SQL. The writer thread ([`super::writer`]) only
//! sequences calls into this module; the split follows vector's `disk_v2` (ledger, record,
//! reader, writer):
//!
//! - [`schema`]: the tables, pragmas and migrations of a read-write connection, and the
//!   permission check before SQLite opens anything;
//! - [`quarantine`]: the integrity check at open and what happens to a corrupt file;
//! - [`write`]: the writes of a group, applied in one transaction;
//! - [`query`]: what the writer reads back (progress, meta, queued and unsettled rows);
//! - [`codec`]: a row's columns to a [`super::StoredRow`] and back, shared by the queries, the
//!   read-only [`QueueReader`] and the page walk of a damaged file, so tools and tests decode
//!   rows exactly as the uplink sees them;
//! - [`reader`]: the read-only [`QueueReader`] for tools and tests.

use std::path::{Path, PathBuf};
use std::time::Duration;

mod codec;
mod quarantine;
mod query;
mod reader;
mod schema;
mod write;

pub(super) use codec::{decode_fields, visit_decoded, COLUMN_COUNT};
pub(super) use quarantine::open_checked;
#[cfg(test)]
pub(super) use quarantine::utc_stamp;
pub(super) use query::{
    fetch_queued, get_meta, load_progress, oldest_ts, row_exists, unsettled_rows, used_bytes,
};
pub use reader::{read_only_rows, FileSchema, Layout, QueueReader};
#[cfg(test)]
pub(super) use schema::SCHEMA_V1;
pub(super) use schema::{check_writable, open_rw, SCHEMA_VERSION};
pub(super) use write::{apply_writes, checkpoint, is_disk_full, probe_write_lock, Applied, Write};

/// File name of the queue inside the data directory.
pub const DB_FILE: &str = "queue.db";

/// `meta` key of the broker session the stored session states belong to
/// ([`super::Queue::session_peer`]).
pub(super) const SESSION_PEER: &str = "session_peer";
/// `meta` key of the Sparkplug `bdSeq` of the last CONNECT ([`super::Queue::bd_seq`]).
pub(super) const BD_SEQ: &str = "sparkplug_bd_seq";

/// How long a statement waits for a lock held by another connection before failing with
/// `SQLITE_BUSY`. The writer is the only read-write connection, but read-only tools (and a
/// checkpoint or WAL recovery they trigger) can hold locks briefly; a few seconds rides over that
/// without turning a stuck peer into an unbounded stall of the writer.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The columns of a row, in the order the codec reads them ([`codec::decode_fields`]).
const COLUMNS: &str = "seq, device, point, body, ts_ms, qos, retain, kind, expires_ms, state, pkid";

/// `<data_dir>/queue.db`.
pub fn db_path(data_dir: &Path) -> PathBuf {
    data_dir.join(DB_FILE)
}
