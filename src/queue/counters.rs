//! What the queue reports: its progress after every commit, and counters since it was opened,
//! shared by every handle and the writer thread.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::capacity::DropBurst;
use super::rejected::ByReason;

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

/// Rows the broker refused for good and the queue keeps in its `rejected` table
/// ([`super::Queue::reject`]), per reason code.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RejectedStats {
    /// Rows in the table now (read at open, kept after every commit): what waits for an
    /// operator.
    pub held: ByReason,
    /// Rows moved to the table since open.
    pub rejected: ByReason,
    /// Rejected rows evicted at `store.max_size` since open (gone for good, logged).
    pub evicted: ByReason,
}

/// Counters shared by every handle and the writer thread; atomics because they are bumped on
/// hot paths from many tasks and only read for reporting.
#[derive(Debug, Default)]
pub(super) struct Counters {
    pub committed: AtomicU64,
    pub live_dropped: AtomicU64,
    pub commit_dropped: AtomicU64,
    pub capacity_dropped: AtomicU64,
    pub expired: AtomicU64,
    /// The once-per-burst log of `live_dropped`, shared by every producer.
    pub live_burst: LiveBurst,
    /// Bytes the rows may use before `on_full` applies, as the writer last derived it from
    /// `store.max_size` and the room on disk.
    pub capacity_bytes: AtomicU64,
    /// Whether the acknowledgements kept over failed commits reached their bound
    /// ([`unwritten::MAX_RANGES`]).
    pub acks_backlogged: AtomicBool,
    /// Written by the writer after a commit, read by metrics and status: a lock taken rarely
    /// and briefly, never on a hot path.
    pub rejected: std::sync::Mutex<RejectedStats>,
}

impl Counters {
    /// Applies `f` to the rejected rows' counters.
    pub(super) fn with_rejected<T>(&self, f: impl FnOnce(&mut RejectedStats) -> T) -> T {
        // A poisoned lock only means a reader panicked: the counts are still valid.
        let mut stats = self
            .rejected
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut stats)
    }
}

/// [`DropBurst`] for QoS 0 drops, which happen in `push` on any producer's task. `open` mirrors
/// whether a burst is open, so a sample that goes through takes the lock only while a burst
/// waits for its end.
#[derive(Debug, Default)]
pub(super) struct LiveBurst {
    open: AtomicBool,
    state: std::sync::Mutex<DropBurst>,
}

impl LiveBurst {
    pub(super) fn record(&self, dropped: bool) {
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
