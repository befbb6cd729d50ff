//! The durable sample queue (design doc: to be completed by the queue implementation).
//!
//! API contract used by the rest of the gateway (do not change signatures without updating
//! callers):
//! - [`Queue::open`] opens/creates `<data_dir>/queue.db` and starts the writer thread.
//! - [`Queue::push`] routes a sample: QoS 0 goes to the live channel (never touches disk; dropped
//!   and counted when the channel is full), QoS 1/2 go to the writer, which commits them in groups.
//! - [`Queue::fetch`] returns committed rows with `seq > after_seq` in `seq` order.
//! - [`Queue::ack`] deletes a row; only the uplink calls it, and only on PUBACK/PUBCOMP.
//! - [`Queue::progress`] watches the newest committed `seq` and the depth.
//! - [`QueueWriter::close`] commits what is pending and stops the thread; it is the last step of
//!   shutdown.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot, watch};

use crate::config::Qos;
use crate::sample::{Sample, Value};

mod store;
mod writer;

pub use store::{db_path, read_only_rows, QueueReader, DB_FILE};

use writer::{Command, Writer};

/// A committed sample with its queue row id.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredSample {
    /// SQLite row id; unique per gateway, increasing in commit order, never reused.
    pub seq: u64,
    pub sample: Sample,
}

/// Observable queue state, published after every commit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueProgress {
    /// Newest committed `seq` (0 when nothing was ever committed).
    pub last_seq: u64,
    /// Rows committed and not yet acknowledged.
    pub depth: u64,
}

/// Samples the queue gave up on since it was opened (for metrics and status lines).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// QoS 0 samples dropped because the live channel was full or had no receiver.
    pub live_dropped: u64,
    /// QoS 1/2 samples dropped because the transaction holding them failed (disk full, I/O
    /// error). They were never committed, so no acknowledged sample is among them.
    pub commit_dropped: u64,
}

/// Counters shared by every handle and the writer thread; atomics because they are bumped on
/// hot paths from many tasks and only read for reporting.
#[derive(Debug, Default)]
struct Counters {
    live_dropped: AtomicU64,
    commit_dropped: AtomicU64,
}

#[derive(Debug, Clone)]
pub struct QueueOptions {
    /// Most rows committed in one transaction.
    pub max_batch: usize,
    /// Capacity of the QoS 0 live channel.
    pub live_capacity: usize,
}

impl Default for QueueOptions {
    fn default() -> Self {
        QueueOptions {
            max_batch: 1000,
            live_capacity: 1024,
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
    #[error("queue writer thread panicked")]
    WriterPanicked,
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

/// Owner of the writer thread.
#[derive(Debug)]
pub struct QueueWriter {
    /// Kept to send `Close`; also keeps the writer alive while every `Queue` clone is dropped.
    cmd_tx: mpsc::Sender<Command>,
    thread: JoinHandle<Result<(), QueueError>>,
}

impl Queue {
    /// Opens (creating the directory, the file and the schema as needed) `<data_dir>/queue.db`
    /// and starts the `queue-writer` thread. Blocking: call it before the runtime gets busy, or
    /// from `spawn_blocking`.
    pub fn open(
        data_dir: &Path,
        options: QueueOptions,
    ) -> Result<(Queue, LiveReceiver, QueueWriter), QueueError> {
        std::fs::create_dir_all(data_dir).map_err(|source| QueueError::CreateDir {
            path: data_dir.to_path_buf(),
            source,
        })?;
        let conn = store::open_rw(&db_path(data_dir))?;
        let progress = store::load_progress(&conn)?;

        let max_batch = options.max_batch.max(1);
        // Room for one full group being committed plus the next one filling up, so producers
        // rarely wait on a commit they are not part of.
        let capacity = max_batch.saturating_mul(2);
        let (cmd_tx, cmd_rx) = mpsc::channel(capacity);
        // `mpsc::channel(0)` panics: a zero capacity means "as small as possible".
        let (live_tx, live_rx) = mpsc::channel(options.live_capacity.max(1));
        let (progress_tx, progress_rx) = watch::channel(progress);
        let counters = Arc::new(Counters::default());

        let writer = Writer {
            conn,
            rx: cmd_rx,
            progress_tx,
            progress,
            counters: Arc::clone(&counters),
            max_batch,
            max_commands: capacity,
        };
        let thread = std::thread::Builder::new()
            .name("queue-writer".into())
            .spawn(move || writer.run())
            .map_err(QueueError::Spawn)?;
        tracing::info!(
            path = %db_path(data_dir).display(),
            last_seq = progress.last_seq,
            depth = progress.depth,
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
                    Ok(()) => {}
                    Err(TrySendError::Full(_) | TrySendError::Closed(_)) => {
                        self.counters.live_dropped.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Ok(())
            }
            Qos::AtLeastOnce | Qos::ExactlyOnce => self
                .cmd_tx
                .send(Command::Insert(sample))
                .await
                .map_err(|_| QueueError::Closed),
        }
    }

    /// Committed rows with `seq > after_seq`, in `seq` order, at most `limit`. Sees every
    /// `ack` and every commit of pushes sent before it.
    pub async fn fetch(
        &self,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<StoredSample>, QueueError> {
        let (reply, rx) = oneshot::channel();
        self.cmd_tx
            .send(Command::Fetch {
                after_seq,
                limit,
                reply,
            })
            .await
            .map_err(|_| QueueError::Closed)?;
        // A dropped reply sender means the writer died before answering.
        rx.await.map_err(|_| QueueError::Closed)?
    }

    /// Queues the deletion of row `seq` (committed with the next group). Unknown `seq`: no-op.
    pub async fn ack(&self, seq: u64) -> Result<(), QueueError> {
        self.cmd_tx
            .send(Command::Ack(seq))
            .await
            .map_err(|_| QueueError::Closed)
    }

    /// Newest committed `seq` and depth, updated after every commit. `changed()` fails once the
    /// writer is gone.
    pub fn progress(&self) -> watch::Receiver<QueueProgress> {
        self.progress_rx.clone()
    }

    /// Drop counters since open.
    pub fn stats(&self) -> QueueStats {
        QueueStats {
            live_dropped: self.counters.live_dropped.load(Ordering::Relaxed),
            commit_dropped: self.counters.commit_dropped.load(Ordering::Relaxed),
        }
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
