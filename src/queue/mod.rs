//! The durable queue: every QoS 1/2 sample (and every device status and command result) lives
//! here, in SQLite, from the moment it is committed until the broker acknowledged it — together
//! with the MQTT session state of the rows in flight. The contract is `docs/specs/queue.md`; this
//! header is the design.
//!
//! # Invariants
//!
//! 1. **Committed before published.** The uplink only ever sees rows through [`Queue::fetch`] /
//!    [`Queue::unsettled`], answered by the writer thread after the transaction holding them
//!    committed.
//! 2. **Deleted only on ack** — or by an explicit, counted drop policy: [`Queue::ack`] (PUBACK
//!    for QoS 1, PUBCOMP for QoS 2), `store.on_full: drop_oldest` eviction, a point's `max_age`.
//!    The two policies only ever delete rows that were never sent (`state = 0`); a row the broker
//!    may hold a packet id for is deleted by its acknowledgement alone. A third way out is not a
//!    deletion: a row the broker refused for good (an MQTT 5 reason code) is *moved* by
//!    [`Queue::reject`] to the `rejected` table ([`rejected`]), keeping its `seq` and fields, in
//!    the transaction of its group; it is never sent again by itself, nor does it block the rows
//!    behind it.
//! 3. **QoS 2 session state is written ahead of the wire.** The uplink writes a QoS 2 PUBLISH
//!    only after [`Queue::mark_published`] committed its packet id, and a PUBREL only after
//!    [`Queue::mark_received`] committed the PUBREC. So after any crash the file tells, for every
//!    packet id the broker may hold, which row it belongs to and what to resend (MQTT 3.1.1
//!    §4.4). QoS 1 ids are not recorded: a broker keeps no state for an incoming QoS 1 id once
//!    it sent the PUBACK (§4.3.2), so a QoS 1 row stays queued until its PUBACK deletes it and
//!    every new connection sends it again under a fresh id (same `seq`): a duplicate, as a
//!    resend under its original id would be (`docs/specs/queue.md` §3.2 has the review for
//!    persistent and clean sessions). See "Session writes" in `writer/mod.rs` for failed
//!    commits: a write that did not commit is refused, and the uplink holds what depends on it.
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
//! One file, `<data_dir>/queue.db` (plus SQLite's `-wal` and `-shm`; the recent commands, the
//! command inbox and the rejected rows have tables of their own, see [`recent`], [`inbox`] and
//! [`rejected`]), schema version 2 in
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
//!     kind       INTEGER NOT NULL DEFAULT 0,  -- 0 sample, 1 device status, 2 command result, 3/4 config, 5 command response ([`request`])
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
//! `ENOSPC`, decides; `on_full` evicts the oldest never-sent rows or refuses new ones (rejected
//! rows are evicted first, oldest first, under either policy); every drop
//! is counted in
//! [`QueueStats`] and logged once per burst (a burst ends after [`capacity::BURST_QUIET`]
//! without drops; QoS 0 samples the full live channel refuses in [`Queue::push`] are a burst
//! of their own). Rows of points with a `max_age` get an expiry;
//! never-sent expired rows are swept at most once a second by the writer and dropped by the
//! uplink when it meets them. A failed commit (disk full) is tried again after a checkpoint,
//! then drops that group's inserts (counted) and retries its other writes alone; acknowledgements
//! that still fail are kept in memory ([`unwritten`]) and written with the first commit that
//! succeeds, reads treating them as applied. The writer carries on and commits succeed again as
//! soon as space returns (see "A failed commit" in `writer/mod.rs`). The failures of a burst are
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
//! [`requeue`] (`fieldrelay queue requeue-rejected`) is the one tool that writes: only while no
//! gateway runs, which the writer's shared lock on the data directory tells ([`lock`]).
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
//! Which writes a group makes, which replies wait for its commit and what each of them gets
//! when the commit fails are decided without I/O (`writer/plan.rs`, unit-tested without
//! SQLite); everything that knows SQL is in `store/` (schema and quarantine, writes, queries,
//! the row codec, the read-only reader).
//!
//! ## Why group commit
//!
//! With `synchronous=FULL` the cost of a commit is dominated by its fsync, not by the rows in
//! it. Grouping whatever is waiting makes the cost per row fall with load, with no added latency
//! when idle. `cargo bench --bench queue` measures it against a hand-batched rusqlite loop (the
//! figures are in `docs/specs/queue.md`).

pub mod capacity;
mod counters;
mod error;
mod handle;
pub mod inbox;
pub mod inspect;
pub mod lock;
mod options;
pub mod reason;
pub mod recent;
pub mod record;
pub mod rejected;
pub mod request;
pub mod requeue;
mod row;
pub mod salvage;
mod store;
pub mod summary;
pub mod unwritten;
pub mod wire;
mod writer;

pub use counters::{QueueProgress, QueueStats, RejectedStats};
pub use error::{NotWritable, QueueError};
pub use handle::{AnswerSent, LiveReceiver, Queue, QueueWriter};
pub use inbox::{InboxCommand, NewCommand, TakeReport, Taken};
pub use options::{max_ages, QueueOptions, DEFAULT_MAX_SIZE};
pub use recent::{CommandKey, CommandRecord, RecentCommand};
pub use request::CommandRequest;
pub use row::{Delivery, Entry, Message, MessageKind, StoredRow, StoredSample};
pub use store::{db_path, read_only_rows, FileSchema, Layout, QueueReader, DB_FILE};

#[cfg(test)]
mod tests;
