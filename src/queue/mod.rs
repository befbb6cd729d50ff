//! The durable queue: every QoS 1/2 sample (and, from issue 5 on, every device status and command
//! result) lives here, in SQLite, from the moment it is committed until the broker acknowledged
//! it — together with the MQTT session state of the rows in flight. The contract is
//! `docs/specs/queue.md`; this header is the design.
//!
//! # Invariants
//!
//! 1. **Committed before published.** The uplink only ever sees rows through [`Queue::fetch`] /
//!    [`Queue::unsettled`], answered by the writer thread after the transaction holding them
//!    committed.
//! 2. **Deleted only on ack** — or by an explicit, counted drop policy: [`Queue::ack`] (PUBACK
//!    for QoS 1, PUBCOMP for QoS 2), `store.on_full: drop_oldest` eviction, a point's `max_age`.
//!    The two policies only ever delete rows that were never sent (`state = 0`); a row the broker
//!    may hold a packet id for is deleted by its acknowledgement alone.
//! 3. **QoS 2 session state is written ahead of the wire.** The uplink writes a QoS 2 PUBLISH
//!    only after [`Queue::mark_published`] committed its packet id, and a PUBREL only after
//!    [`Queue::mark_received`] committed the PUBREC. So after any crash the file tells, for every
//!    packet id the broker may hold, which row it belongs to and what to resend (MQTT 3.1.1
//!    §4.4). QoS 1 ids are recorded with the next group ([`Queue::record_published`]): a broker
//!    keeps no state for an incoming QoS 1 id, so a crash before that commit only means a resend
//!    under a new id (same `seq`). See "Session writes" in `writer.rs` for failed commits: a
//!    write that did not commit is refused, and the uplink holds what depends on it.
//! 4. **`seq` is never reused.** `seq` is the row id of an `INTEGER PRIMARY KEY AUTOINCREMENT`
//!    column: SQLite keeps the highest id ever handed out in `sqlite_sequence`, so after the
//!    newest rows were acked (or the queue drained, the process restarted, the file migrated)
//!    the next row still gets a larger id. A corrupt file that is quarantined hands its last
//!    `seq` (its `sqlite_sequence` as [`salvage`] reads it; if unreadable, a clock-derived
//!    floor) to the new file.
//! 5. **Order.** Commands are applied in channel order, so for one producer `seq` order is push
//!    order. A transaction is all or nothing. `fetch` returns queued rows in `seq` order.
//!
//! `push` returning `Ok` means *accepted by the writer*, not *committed*: whoever needs to know
//! that a row is on disk waits on [`Queue::progress`] (`last_seq`), or on a later `fetch`.
//!
//! # On-disk format
//!
//! One file, `<data_dir>/queue.db` (plus SQLite's `-wal` and `-shm`; the recent commands and the
//! command inbox have tables of their own, see [`recent`] and [`inbox`]), schema version 2 in
//! `PRAGMA user_version` (a newer version is refused with [`QueueError::SchemaTooNew`] and left
//! untouched; version 1 is migrated in place, keeping every row and its `seq`):
//!
//! ```sql
//! CREATE TABLE messages (
//!     seq        INTEGER PRIMARY KEY AUTOINCREMENT,  -- the row's seq
//!     device     TEXT    NOT NULL,
//!     point      TEXT    NOT NULL,  -- '' for device-level kinds
//!     body       TEXT    NOT NULL,  -- kind 0: the Value's JSON; other kinds: the whole payload
//!     ts_ms      INTEGER NOT NULL,  -- ms since the Unix epoch
//!     qos        INTEGER NOT NULL,  -- 1 or 2 (QoS 0 is never stored)
//!     retain     INTEGER NOT NULL,  -- 0 or 1
//!     kind       INTEGER NOT NULL DEFAULT 0,  -- 0 sample, 1 device status, 2 command result
//!     expires_ms INTEGER,           -- ts_ms + the point's max_age; NULL: never
//!     state      INTEGER NOT NULL DEFAULT 0,  -- 0 queued, 1 PUBLISH sent, 2 PUBREC received
//!     pkid       INTEGER            -- packet id while state != 0
//! );
//! ```
//!
//! **Why a `kind` column and not a free topic:** the topic is a function of the kind and the
//! names (`P/<device>/<point>`, `P/<device>/status`, `P/<device>/<point>/set/result`), so a
//! change of `topic_prefix` re-targets a backlog correctly, rows stay small, and the uplink
//! renders the sample envelope (with its `seq`, known only after the insert) at send time. A
//! kind this build does not know is a decode error of that row, never a guess.
//!
//! Pragmas: `journal_mode=WAL`; `synchronous=FULL` (default; the WAL is fsynced at every commit)
//! or `NORMAL` (`store.sync`); `wal_autocheckpoint`/`journal_size_limit` keep the log within a
//! quarter of `max_size` (at most 4 MiB; the writer lowers the checkpoint threshold to what the
//! disk holds, see [`capacity`]); 5 s busy timeout for read-only tools.
//!
//! # Start-up
//!
//! `PRAGMA quick_check` reads the whole file. A file that SQLite calls corrupt or not a database
//! is *quarantined*: renamed with its `-wal`/`-shm` to `queue.db.corrupt-<UTC time>` (never
//! deleted), and a new queue starts above the last `seq` the old file handed out. Any other open
//! error (permissions, I/O, newer schema) refuses to start and touches nothing. Permissions are
//! checked before SQLite opens the file ([`QueueError::NotWritable`], naming the file and the
//! user): SQLite itself would open a read-only file read-only and create its `-wal` and `-shm`
//! beside it before the first write failed.
//!
//! # Capacity, expiry, disk full
//!
//! See [`capacity`]: `store.max_size` bounds the pages in use of `queue.db` plus the WAL budget,
//! both lowered to what the disk holds (measured before every group), so that `on_full`, not
//! `ENOSPC`, decides; `on_full` evicts the oldest never-sent rows or refuses new ones; every drop
//! is counted in
//! [`QueueStats`] and logged once per burst (a burst ends after [`capacity::BURST_QUIET`]
//! without drops; QoS 0 samples the full live channel refuses in [`Queue::push`] are a burst
//! of their own). Rows of points with a `max_age` get an expiry;
//! never-sent expired rows are swept at most once a second by the writer and dropped by the
//! uplink when it meets them. A failed commit (disk full) is tried again after a checkpoint,
//! then drops that group's inserts (counted) and retries its other writes alone; acknowledgements
//! that still fail are kept in memory ([`unwritten`]) and written with the first commit that
//! succeeds, reads treating them as applied. The writer carries on and commits succeed again as
//! soon as space returns (see "A failed commit" in `writer.rs`). The failures of a burst are
//! logged with its drops: a handful of lines, not one per commit.
//!
//! # Crash semantics
//!
//! - **`kill -9` / panic / OOM kill**: every committed row and session state survives; pushes
//!   accepted but not yet committed (at most one group plus the channel's content) are lost.
//! - **Power loss** with `sync: full`, on a medium that honours flushes: the same. With
//!   `sync: normal`: the commits since the last checkpoint (at most the WAL budget) may be
//!   rolled back, samples and session state alike.
//! - **Acked but delete not yet committed** (a crash before the next group, or a disk still
//!   full at shutdown): the row is still there after a restart and is sent again with the *same*
//!   `seq` (QoS 1: a duplicate consumers drop; QoS 2 with a kept session: PUBREL again, no
//!   duplicate). Within one run an acknowledged row is never sent again.
//!
//! # Inspection
//!
//! [`QueueReader`] is a read-only connection for tools and tests: it never creates, migrates or
//! writes (no `-wal`/`-shm` either, for a file no writer has open). [`inspect`] builds
//! `fieldrelay queue stats|peek|export` on it ([`summary`] and [`record`] are their pure
//! output); `export` reads a damaged file past its first damaged page with [`salvage`], a walk
//! of its pages (a quarantine reads the old file's last `seq` with it too).
//!
//! # Threading model
//!
//! ```text
//! pollers ──push(QoS 1/2)──► bounded mpsc<Command> ──► queue-writer thread ──► queue.db
//! uplink ──fetch/mark/ack──►      (2 × max_batch)       (only rw connection)
//!    ▲                                                          │
//!    └──── watch<QueueProgress> ◄── after each commit ──────────┘
//! pollers ──push(QoS 0)──► bounded mpsc<Sample> (live) ──► uplink      (never on disk)
//! ```
//!
//! One dedicated `std::thread` (`queue-writer`) owns the only read-write connection: SQLite
//! allows one writer at a time anyway, blocking fsyncs must not stall tokio workers, and a single
//! owner needs no locks. It blocks for the first command, drains what is already waiting (up to
//! `max_batch` inserts), applies every write of that group in ONE transaction, commits,
//! publishes [`QueueProgress`], and only then answers the group's replies. `Close` refuses later
//! commands but still commits what is buffered; [`QueueWriter::close`] joins the thread. If the
//! thread is gone every call returns [`QueueError::Closed`]: nothing panics, nothing hangs.
//!
//! ## Why group commit
//!
//! With `synchronous=FULL` the cost of a commit is dominated by its fsync, not by the rows in
//! it. Grouping whatever is waiting makes the cost per row fall with load, with no added latency
//! when idle. `cargo bench --bench queue` measures it against a hand-batched rusqlite loop (the
//! figures are in `docs/specs/queue.md`).

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot, watch};

use crate::config::{OnFull, Qos, SyncMode};
use crate::sample::{Sample, Value};

pub mod capacity;
pub mod inbox;
pub mod inspect;
pub mod recent;
pub mod record;
pub mod salvage;
mod store;
pub mod summary;
pub mod unwritten;
mod writer;

pub use inbox::{InboxCommand, NewCommand, TakeReport, Taken};
pub use recent::{CommandKey, CommandRecord, RecentCommand};
pub use store::{db_path, read_only_rows, FileSchema, Layout, QueueReader, DB_FILE};

use capacity::{Capacity, DropBurst};
use writer::{Command, Writer};

/// A committed sample with its queue row id.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredSample {
    /// SQLite row id; unique per gateway, increasing in commit order, never reused.
    pub seq: u64,
    pub sample: Sample,
}

/// What a non-sample row is; decides its topic (see `uplink::message`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageKind {
    /// `P/<device>/status`, retained (issue 5). `point` is empty.
    DeviceStatus,
    /// `P/<device>/<point>/set/result` (issue 5).
    CommandResult,
}

impl MessageKind {
    /// The `kind` column; 0 is a sample.
    pub fn code(self) -> i64 {
        match self {
            MessageKind::DeviceStatus => 1,
            MessageKind::CommandResult => 2,
        }
    }

    pub fn from_code(code: i64) -> Option<MessageKind> {
        match code {
            1 => Some(MessageKind::DeviceStatus),
            2 => Some(MessageKind::CommandResult),
            _ => None,
        }
    }
}

/// A durable non-sample message: same commit-before-publish and delete-on-ack rule as samples.
/// `payload` is published as is (no `seq` is added).
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub kind: MessageKind,
    pub device: Arc<str>,
    /// Empty for device-level kinds.
    pub point: Arc<str>,
    pub payload: String,
    pub ts_ms: i64,
    /// 1 or 2; QoS 0 is refused at push (nothing durable about it).
    pub qos: Qos,
    pub retain: bool,
}

/// A row's content.
#[derive(Debug, Clone, PartialEq)]
pub enum Entry {
    Sample(Sample),
    Message(Message),
}

/// A row's MQTT session state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Never sent in the broker's current session.
    Queued,
    /// PUBLISH sent with this packet id; PUBACK (QoS 1) or PUBREC (QoS 2) outstanding.
    Published { pkid: u16 },
    /// QoS 2: PUBREC received, PUBREL due or sent; PUBCOMP outstanding.
    Received { pkid: u16 },
}

/// A committed row with its session state.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredRow {
    pub seq: u64,
    pub entry: Entry,
    pub delivery: Delivery,
    /// Never-sent rows past this wall-clock time (ms) are dropped; `None`: never.
    pub expires_ms: Option<i64>,
}

impl StoredRow {
    pub fn qos(&self) -> Qos {
        match &self.entry {
            Entry::Sample(s) => s.qos,
            Entry::Message(m) => m.qos,
        }
    }
}

/// Observable queue state, published after every commit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueProgress {
    /// Newest committed `seq` (0 when nothing was ever committed).
    pub last_seq: u64,
    /// Rows committed and not yet acknowledged (or dropped).
    pub depth: u64,
    /// Bytes of `queue.db` in use (what `store.max_size` bounds, besides the WAL budget).
    pub bytes: u64,
    /// `ts_ms` of the oldest row (lowest `seq`) not yet acknowledged; `None` when the queue is
    /// empty. Its age is the delay a backlog adds: what an operator alerts on.
    pub oldest_ts_ms: Option<i64>,
}

/// Counters since the queue was opened (for metrics and status lines): rows committed, and
/// samples the queue gave up on. A committed sample is only ever counted in `capacity_dropped` or
/// `expired`, by the configured policies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Rows (samples and messages) committed: the ingest rate is its derivative.
    pub committed: u64,
    /// QoS 0 samples dropped because the live channel was full or had no receiver.
    pub live_dropped: u64,
    /// QoS 1/2 samples dropped because the transaction holding them failed (disk full, I/O
    /// error). They were never committed.
    pub commit_dropped: u64,
    /// `store.max_size` reached: oldest never-sent rows evicted (`drop_oldest`) or new ones
    /// refused (`reject_new`).
    pub capacity_dropped: u64,
    /// Never-sent rows past their point's `max_age`.
    pub expired: u64,
}

/// Counters shared by every handle and the writer thread; atomics because they are bumped on
/// hot paths from many tasks and only read for reporting.
#[derive(Debug, Default)]
struct Counters {
    committed: AtomicU64,
    live_dropped: AtomicU64,
    commit_dropped: AtomicU64,
    capacity_dropped: AtomicU64,
    expired: AtomicU64,
    /// The once-per-burst log of `live_dropped`, shared by every producer.
    live_burst: LiveBurst,
    /// Bytes the rows may use before `on_full` applies, as the writer last derived it from
    /// `store.max_size` and the room on disk.
    capacity_bytes: AtomicU64,
    /// Whether the acknowledgements kept over failed commits reached their bound
    /// ([`unwritten::MAX_RANGES`]).
    acks_backlogged: AtomicBool,
}

/// [`DropBurst`] for QoS 0 drops, which happen in `push` on any producer's task. `open` mirrors
/// whether a burst is open, so a sample that goes through takes the lock only while a burst
/// waits for its end.
#[derive(Debug, Default)]
struct LiveBurst {
    open: AtomicBool,
    state: std::sync::Mutex<DropBurst>,
}

impl LiveBurst {
    fn record(&self, dropped: bool) {
        if !dropped && !self.open.load(Ordering::Relaxed) {
            return;
        }
        // A poisoned lock only means another producer panicked while logging: the state is
        // still a valid burst.
        let mut burst = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        burst.log_live(dropped, std::time::Instant::now());
        self.open.store(burst.is_open(), Ordering::Relaxed);
    }
}

#[derive(Debug, Clone)]
pub struct QueueOptions {
    /// Most rows committed in one transaction.
    pub max_batch: usize,
    /// Capacity of the QoS 0 live channel.
    pub live_capacity: usize,
    /// `store.max_size`: bytes of `queue.db` plus its WAL budget.
    pub max_size: u64,
    pub on_full: OnFull,
    pub sync: SyncMode,
    /// Per (device, point) `max_age`.
    pub max_age: HashMap<(String, String), Duration>,
    /// How often at most the writer deletes expired never-sent rows (when some point has a
    /// `max_age`). The sweep only keeps depth and size honest while nothing is sent; the uplink
    /// also drops expired rows when it meets them.
    pub expiry_sweep: Duration,
}

/// Default `store.max_size` (see the config).
pub const DEFAULT_MAX_SIZE: u64 = crate::config::DEFAULT_MAX_SIZE;
/// `meta` key of [`Queue::session_peer`].
const SESSION_PEER: &str = "session_peer";

impl Default for QueueOptions {
    fn default() -> Self {
        QueueOptions {
            max_batch: 1000,
            live_capacity: 1024,
            max_size: DEFAULT_MAX_SIZE,
            on_full: OnFull::DropOldest,
            sync: SyncMode::Full,
            max_age: HashMap::new(),
            expiry_sweep: Duration::from_secs(1),
        }
    }
}

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

/// Handle to the queue; cheap to clone. Every clone talks to the same writer thread.
#[derive(Debug, Clone)]
pub struct Queue {
    /// Commands to the writer thread. Bounded so that producers feel backpressure (`push`
    /// waits) instead of growing memory when the disk is slower than the pollers.
    cmd_tx: mpsc::Sender<Command>,
    /// QoS 0 samples straight to the uplink; `try_send` only, a full channel drops.
    live_tx: mpsc::Sender<Sample>,
    progress_rx: watch::Receiver<QueueProgress>,
    counters: Arc<Counters>,
}

/// Receiving end of the QoS 0 live channel; owned by the uplink.
#[derive(Debug)]
pub struct LiveReceiver {
    pub rx: mpsc::Receiver<Sample>,
}

/// An answer the writer has ([`Queue::send_answer`]), not necessarily committed yet.
#[derive(Debug)]
pub struct AnswerSent(oneshot::Receiver<Result<(), QueueError>>);

impl AnswerSent {
    /// Waits for the commit of the answer's transaction.
    pub async fn committed(self) -> Result<(), QueueError> {
        // A dropped reply sender means the writer died before answering.
        self.0.await.map_err(|_| QueueError::Closed)?
    }
}

/// Owner of the writer thread.
#[derive(Debug)]
pub struct QueueWriter {
    /// Kept to send `Close`; also keeps the writer alive while every `Queue` clone is dropped.
    cmd_tx: mpsc::Sender<Command>,
    thread: JoinHandle<Result<(), QueueError>>,
}

/// Opens the read-write connection with the integrity check, quarantining a corrupt file.
fn open_checked(path: &Path, options: &QueueOptions) -> Result<rusqlite::Connection, QueueError> {
    let attempt = |path: &Path| -> Result<rusqlite::Connection, QueueError> {
        let conn = store::open_rw(path, options.sync, options.max_size)?;
        store::quick_check(&conn)?;
        Ok(conn)
    };
    if !path.exists() {
        return store::open_rw(path, options.sync, options.max_size);
    }
    match attempt(path) {
        Ok(conn) => Ok(conn),
        Err(error) if store::is_corruption(&error) => {
            let floor = store::salvage_last_seq(path);
            let stamp = utc_stamp(crate::sample::now_ms() / 1000);
            let moved =
                store::quarantine(path, &stamp).map_err(|source| QueueError::Quarantine {
                    path: path.to_path_buf(),
                    source,
                })?;
            // Without a readable last seq, a clock-derived floor (ms × 1000, below 2^53 until
            // the year 2255) is above any seq a gateway can have handed out.
            let floor = floor.unwrap_or_else(|| {
                u64::try_from(crate::sample::now_ms())
                    .unwrap_or(0)
                    .saturating_mul(1000)
            });
            tracing::error!(
                %error,
                quarantined = %moved.display(),
                next_seq_above = floor,
                "queue file is corrupt: moved aside (not deleted), starting a new queue"
            );
            let conn = store::open_rw(path, options.sync, options.max_size)?;
            store::seed_last_seq(&conn, floor)?;
            Ok(conn)
        }
        Err(error) => Err(error),
    }
}

/// `YYYYMMDDTHHMMSSZ` for Unix seconds (civil-from-days, proleptic Gregorian).
fn utc_stamp(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

impl Queue {
    /// Opens (creating the directory, the file and the schema as needed, migrating a v1 file,
    /// quarantining a corrupt one) `<data_dir>/queue.db` and starts the `queue-writer` thread.
    /// Blocking: call it before the runtime gets busy, or from `spawn_blocking`.
    pub fn open(
        data_dir: &Path,
        options: QueueOptions,
    ) -> Result<(Queue, LiveReceiver, QueueWriter), QueueError> {
        std::fs::create_dir_all(data_dir).map_err(|source| QueueError::CreateDir {
            path: data_dir.to_path_buf(),
            source,
        })?;
        store::check_writable(data_dir)?;
        let conn = open_checked(&db_path(data_dir), &options)?;
        let progress = store::load_progress(&conn)?;
        let page_size: i64 = conn.pragma_query_value(None, "page_size", |r| r.get(0))?;

        let max_batch = options.max_batch.max(1);
        // Room for one full group being committed plus the next one filling up, so producers
        // rarely wait on a commit they are not part of.
        let capacity = max_batch.saturating_mul(2);
        let (cmd_tx, cmd_rx) = mpsc::channel(capacity);
        // `mpsc::channel(0)` panics: a zero capacity means "as small as possible".
        let (live_tx, live_rx) = mpsc::channel(options.live_capacity.max(1));
        let (progress_tx, progress_rx) = watch::channel(progress);
        let counters = Arc::new(Counters::default());
        let capacity_bytes = options
            .max_size
            .saturating_sub(capacity::wal_budget(options.max_size));
        counters
            .capacity_bytes
            .store(capacity_bytes, Ordering::Relaxed);

        let writer = Writer {
            conn,
            rx: cmd_rx,
            progress_tx,
            progress,
            counters: Arc::clone(&counters),
            max_batch,
            max_commands: capacity,
            capacity: Capacity {
                budget: capacity_bytes,
                on_full: options.on_full,
                page_size: u64::try_from(page_size).unwrap_or(4096),
            },
            max_age: options.max_age.clone(),
            max_size: options.max_size,
            room: writer::RoomMeter {
                db: db_path(data_dir),
            },
            checkpoint_pages: 0,
            unwritten: Default::default(),
            rows_in_file: progress.depth,
            retry: Default::default(),
            read_log: (None, 0),
            sweep_every: options.expiry_sweep,
            next_sweep_ms: 0,
            burst: DropBurst::default(),
            requeue_on_ack: Default::default(),
        };
        let thread = std::thread::Builder::new()
            .name("queue-writer".into())
            .spawn(move || writer.run())
            .map_err(QueueError::Spawn)?;
        tracing::info!(
            path = %db_path(data_dir).display(),
            last_seq = progress.last_seq,
            depth = progress.depth,
            bytes = progress.bytes,
            "queue opened"
        );

        Ok((
            Queue {
                cmd_tx: cmd_tx.clone(),
                live_tx,
                progress_rx,
                counters,
            },
            LiveReceiver { rx: live_rx },
            QueueWriter { cmd_tx, thread },
        ))
    }

    /// Routes a sample. QoS 0: offered to the live channel, dropped and counted if it is full or
    /// has no receiver (never written). QoS 1/2: handed to the writer, waiting while its channel
    /// is full. `Ok` means "accepted", not "committed": watch [`Queue::progress`] for commits.
    pub async fn push(&self, sample: Sample) -> Result<(), QueueError> {
        if self.cmd_tx.is_closed() {
            return Err(QueueError::Closed);
        }
        if matches!(sample.value, Value::Float(f) if !f.is_finite()) {
            return Err(QueueError::NonFiniteValue);
        }
        match sample.qos {
            Qos::AtMostOnce => {
                match self.live_tx.try_send(sample) {
                    Ok(()) => self.counters.live_burst.record(false),
                    Err(TrySendError::Full(_) | TrySendError::Closed(_)) => {
                        self.counters.live_dropped.fetch_add(1, Ordering::Relaxed);
                        self.counters.live_burst.record(true);
                    }
                }
                Ok(())
            }
            Qos::AtLeastOnce | Qos::ExactlyOnce => {
                self.send(Command::Insert(Entry::Sample(sample))).await
            }
        }
    }

    /// Queues a durable non-sample message (device status, command result): committed, then
    /// published by the uplink and deleted on its PUBACK/PUBCOMP, like a sample.
    pub async fn push_message(&self, message: Message) -> Result<(), QueueError> {
        if message.qos == Qos::AtMostOnce {
            return Err(QueueError::QosZero);
        }
        self.send(Command::Insert(Entry::Message(message))).await
    }

    async fn send(&self, cmd: Command) -> Result<(), QueueError> {
        self.cmd_tx.send(cmd).await.map_err(|_| QueueError::Closed)
    }

    async fn request<T>(
        &self,
        cmd: impl FnOnce(oneshot::Sender<Result<T, QueueError>>) -> Command,
    ) -> Result<T, QueueError> {
        let (reply, rx) = oneshot::channel();
        self.send(cmd(reply)).await?;
        // A dropped reply sender means the writer died before answering.
        rx.await.map_err(|_| QueueError::Closed)?
    }

    /// Committed, never-sent rows with `seq > after_seq`, in `seq` order, at most `limit`. Sees
    /// every write and every commit of pushes sent before it.
    pub async fn fetch(&self, after_seq: u64, limit: usize) -> Result<Vec<StoredRow>, QueueError> {
        self.request(|reply| Command::Fetch {
            after_seq,
            limit,
            reply,
        })
        .await
    }

    /// Queues the deletion of row `seq` (committed with the next group). Unknown `seq`: no-op.
    /// Only the uplink calls it, on PUBACK (QoS 1) or PUBCOMP (QoS 2). If that commit fails, the
    /// deletion is kept and committed with the first group that succeeds; meanwhile the row is
    /// treated as deleted (`fetch`, `unsettled` and the depth leave it out).
    pub async fn ack(&self, seq: u64) -> Result<(), QueueError> {
        self.send(Command::Ack(seq)).await
    }

    /// Queues the deletion of never-sent rows that passed their `max_age` (counted as expired).
    pub async fn expire(&self, seqs: Vec<u64>) -> Result<(), QueueError> {
        self.send(Command::Expire(seqs)).await
    }

    /// Records the packet ids PUBLISHes are about to be sent with; returns after the commit,
    /// with the rows that no longer exist (evicted or expired since they were fetched): their
    /// PUBLISH must not be sent, or the broker would hold an id the store does not know.
    /// [`QueueError::Commit`] when the commit failed: nothing was recorded, so the PUBLISHes must
    /// not be sent (their ids are free again).
    pub async fn mark_published(&self, rows: Vec<(u64, u16)>) -> Result<Vec<u64>, QueueError> {
        self.request(|reply| Command::MarkPublished { rows, reply })
            .await
    }

    /// Like [`Queue::mark_published`] without waiting for the commit: the ids go to disk with
    /// the next group. For QoS 1 rows only, where writing ahead is not needed: a crash before
    /// that commit resends the row as a new message (same `seq`), which QoS 1 allows, since a
    /// broker keeps no state for an incoming QoS 1 id.
    pub async fn record_published(&self, rows: Vec<(u64, u16)>) -> Result<(), QueueError> {
        let (reply, _) = oneshot::channel();
        self.send(Command::MarkPublished { rows, reply }).await
    }

    /// Records PUBRECs (QoS 2) before their PUBRELs are sent; returns after the commit.
    pub async fn mark_received(&self, seqs: Vec<u64>) -> Result<(), QueueError> {
        self.request(|reply| Command::MarkReceived { seqs, reply })
            .await
    }

    /// Rows with a session state, in `seq` order: what a resumed session must resend. A row
    /// that no longer decodes comes as a placeholder past PUBREC (its packet id, an empty
    /// message), so the session reserves the id and releases it with a PUBREL (see
    /// `store::unsettled_rows` for what its ack then does).
    pub async fn unsettled(&self) -> Result<Vec<StoredRow>, QueueError> {
        self.request(|reply| Command::Unsettled { reply }).await
    }

    /// The broker has no session for us: every row becomes queued again (resent as new with its
    /// `seq`). Returns after the commit.
    pub async fn reset_session(&self) -> Result<(), QueueError> {
        self.request(|reply| Command::ResetSession { reply }).await
    }

    /// Which broker session (`client_id@host:port`) the stored session states belong to; `None`
    /// for a new or quarantined file, or one written by contract v1 (always clean sessions).
    pub async fn session_peer(&self) -> Result<Option<String>, QueueError> {
        self.request(|reply| Command::GetMeta {
            key: SESSION_PEER,
            reply,
        })
        .await
    }

    /// Records the broker session the session states now belong to; returns after the commit.
    pub async fn set_session_peer(&self, peer: String) -> Result<(), QueueError> {
        self.request(|reply| Command::SetMeta {
            key: SESSION_PEER,
            value: peer,
            reply,
        })
        .await
    }

    /// Round trip through the writer thread, for the service watchdog: answered after every
    /// command queued before it, once the writer took and released SQLite's write lock. So it
    /// fails or hangs while the writer is stuck (a commit that does not finish, another process
    /// holding the database locked, a dead thread); callers bound the wait with a timeout.
    pub async fn probe(&self) -> Result<(), QueueError> {
        let (reply, rx) = oneshot::channel();
        self.cmd_tx
            .send(Command::Probe(reply))
            .await
            .map_err(|_| QueueError::Closed)?;
        rx.await.map_err(|_| QueueError::Closed)?
    }

    /// Replaces the per-(device, point) `max_age`s (a configuration reload). Rows committed
    /// from now on get their expiry from `ages`; rows already queued keep the expiry they were
    /// committed with, so a reload never silently drops a backlog it did not drop before.
    pub async fn set_max_age(
        &self,
        ages: HashMap<(String, String), Duration>,
    ) -> Result<(), QueueError> {
        self.cmd_tx
            .send(Command::SetMaxAge(ages))
            .await
            .map_err(|_| QueueError::Closed)
    }

    /// What is recorded of the command `key` (`recent.rs`): `None` if it was never taken.
    pub async fn recent_command(
        &self,
        key: CommandKey,
    ) -> Result<Option<RecentCommand>, QueueError> {
        self.request(|reply| Command::Recent { key, reply }).await
    }

    /// Records the command `key` as taken, before its write starts; returns after the commit.
    pub async fn command_taken(&self, key: CommandKey) -> Result<(), QueueError> {
        self.request(|reply| Command::Taken { key, reply }).await
    }

    /// Commits a command's answer in one transaction: `message` (its result, queued and then
    /// published like any row), for a command with an id the recorded `result`, and the removal
    /// of its `inbox` row. Returns after the commit. Not subject to `store.on_full:
    /// reject_new`: an answer is small and must not be lost.
    pub async fn answer_command(
        &self,
        key: Option<CommandKey>,
        result: String,
        message: Option<Message>,
        inbox: Option<i64>,
    ) -> Result<(), QueueError> {
        self.send_answer(key, result, message, inbox)
            .await?
            .committed()
            .await
    }

    /// [`Queue::answer_command`] without waiting for the commit: returns once the writer has
    /// the answer, so a handler can go on with the next command (its own reads see the answer)
    /// and learn of the commit later ([`AnswerSent::committed`]).
    pub async fn send_answer(
        &self,
        key: Option<CommandKey>,
        result: String,
        message: Option<Message>,
        inbox: Option<i64>,
    ) -> Result<AnswerSent, QueueError> {
        if message.as_ref().is_some_and(|m| m.qos == Qos::AtMostOnce) {
            return Err(QueueError::QosZero);
        }
        let (reply, rx) = oneshot::channel();
        self.send(Command::Answered {
            key,
            result,
            message,
            inbox,
            reply,
        })
        .await?;
        Ok(AnswerSent(rx))
    }

    /// Newest committed `seq`, depth and size, updated after every commit. `changed()` fails
    /// once the writer is gone.
    pub fn progress(&self) -> watch::Receiver<QueueProgress> {
        self.progress_rx.clone()
    }

    /// Commit and drop counters since open.
    pub fn stats(&self) -> QueueStats {
        QueueStats {
            committed: self.counters.committed.load(Ordering::Relaxed),
            live_dropped: self.counters.live_dropped.load(Ordering::Relaxed),
            commit_dropped: self.counters.commit_dropped.load(Ordering::Relaxed),
            capacity_dropped: self.counters.capacity_dropped.load(Ordering::Relaxed),
            expired: self.counters.expired.load(Ordering::Relaxed),
        }
    }

    /// Bytes of `queue.db` pages the rows may use before `store.on_full` applies
    /// (`store.max_size` less the write-ahead log's budget, or less when the disk holds less);
    /// compare with [`QueueProgress::bytes`].
    pub fn capacity_bytes(&self) -> u64 {
        self.counters.capacity_bytes.load(Ordering::Relaxed)
    }

    /// Whether the acknowledgements kept over failed commits reached their bound: the uplink then
    /// takes no new rows until a commit succeeds (see [`unwritten`]).
    pub fn acks_backlogged(&self) -> bool {
        self.counters.acks_backlogged.load(Ordering::Relaxed)
    }

    /// Whether the writer stopped (closed or died); every call then returns [`QueueError::Closed`].
    pub fn is_closed(&self) -> bool {
        self.cmd_tx.is_closed()
    }
}

impl QueueWriter {
    /// Commits pending work, closes the database and joins the thread.
    pub async fn close(self) -> Result<(), QueueError> {
        // Fails only if the thread is already gone; joining then reports how it ended.
        let _ = self.cmd_tx.send(Command::Close).await;
        drop(self.cmd_tx);
        let thread = self.thread;
        match tokio::task::spawn_blocking(move || thread.join()).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) | Err(_) => Err(QueueError::WriterPanicked),
        }
    }
}

#[cfg(test)]
mod tests;
