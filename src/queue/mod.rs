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

use tokio::sync::{mpsc, watch};

use crate::sample::Sample;

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
}

/// Handle to the queue; cheap to clone. Every clone talks to the same writer thread.
#[derive(Debug, Clone)]
pub struct Queue {}

/// Receiving end of the QoS 0 live channel; owned by the uplink.
#[derive(Debug)]
pub struct LiveReceiver {
    pub rx: mpsc::Receiver<Sample>,
}

/// Owner of the writer thread.
#[derive(Debug)]
pub struct QueueWriter {}

impl Queue {
    pub fn open(
        _data_dir: &Path,
        _options: QueueOptions,
    ) -> Result<(Queue, LiveReceiver, QueueWriter), QueueError> {
        Err(QueueError::Closed)
    }

    pub async fn push(&self, _sample: Sample) -> Result<(), QueueError> {
        Err(QueueError::Closed)
    }

    pub async fn fetch(
        &self,
        _after_seq: u64,
        _limit: usize,
    ) -> Result<Vec<StoredSample>, QueueError> {
        Err(QueueError::Closed)
    }

    pub async fn ack(&self, _seq: u64) -> Result<(), QueueError> {
        Err(QueueError::Closed)
    }

    pub fn progress(&self) -> watch::Receiver<QueueProgress> {
        watch::channel(QueueProgress::default()).1
    }
}

impl QueueWriter {
    /// Commits pending work, closes the database and joins the thread.
    pub async fn close(self) -> Result<(), QueueError> {
        Ok(())
    }
}
