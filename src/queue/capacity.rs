//! Capacity planning (`store.max_size`, `store.on_full`, the room on disk) and the once-per-burst
//! drop log. Pure: the writer measures, this decides.
//!
//! The measure is SQLite's own: pages in use (not on the free list) × page size, read after
//! every commit. A group of inserts is projected with the average row size; when the projection
//! passes the data budget, `drop_oldest` deletes enough of the oldest *never sent* rows in the
//! same transaction, and `reject_new` admits only the inserts that fit. Rows with a session state
//! (sent, PUBREC received) are never evicted: the broker may hold their packet id. Rows the
//! broker refused for good (`rejected.rs`) count toward the budget and are evicted before any
//! of those, oldest first, under either policy (a group's own refusals count from the next
//! group on): they must not push out rows the broker takes, nor make `reject_new` refuse every
//! new sample. Deleting the
//! oldest rows frees the leftmost b-tree pages whole, so the measure follows within a page or
//! two.
//!
//! # The room on disk
//! `store.max_size` may be larger than the file system (or the file system may be shared and
//! fill up). So that the queue's own rules, not `ENOSPC`, decide what is dropped, the writer
//! measures the free space before every group ([`Room`]) and [`limits`] takes the smaller of the
//! configured budgets and what the disk can hold:
//! - the write-ahead log is checkpointed after a quarter of what *it* can still use (its own
//!   file plus the free space), at most its share of `max_size`: a log that could not be
//!   checkpointed before the disk filled would stop every commit (the log file is reused from
//!   its start after a checkpoint, so once it exists it needs no new space);
//! - the rows may use the database file plus the free space the log does not need (what it may
//!   still grow by: its threshold and one group). On a disk someone else filled, that is the
//!   database file: `drop_oldest` then evicts as many never-sent rows as a group inserts, and
//!   `reject_new` refuses the group, in place of failed commits.
//!
//! The log file is never truncated below its share of `max_size` (`journal_size_limit`): space it
//! holds stays the queue's when another program fills the disk.

use std::time::{Duration, Instant};

use crate::config::OnFull;

/// Row size assumed while the queue is nearly empty (a sample row with its index share is about
/// 60-100 bytes; the bench reports the real figure).
pub const DEFAULT_ROW_BYTES: u64 = 128;
/// Pages an empty queue uses (schema, table and index roots); not part of the per-row average.
const BASE_PAGES: u64 = 6;
/// The write-ahead log is never checkpointed more often than after this many bytes.
const MIN_CHECKPOINT: u64 = 16 * 1024;

/// How the write-ahead log is kept small: checkpoint after this many bytes of log and truncate
/// the log file back to it. Part of `max_size`: a quarter of it, at most 4 MiB.
pub fn wal_budget(max_size: u64) -> u64 {
    (max_size / 4).clamp(MIN_CHECKPOINT, 4 * 1024 * 1024)
}

/// What the disk holds for the queue, measured by the writer before a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Room {
    /// Bytes the file system still gives an unprivileged writer (`statvfs`: available blocks).
    pub free: u64,
    /// Size of `queue.db`.
    pub db_file: u64,
    /// Size of `queue.db-wal`.
    pub wal_file: u64,
}

/// The limits of the next group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of pages in use the rows may take before `on_full` applies.
    pub data: u64,
    /// Bytes of log after which a commit checkpoints (`wal_autocheckpoint`).
    pub checkpoint: u64,
}

/// The budgets of `max_size`, lowered to what `room` can hold (see the module doc). `margin`:
/// the most one group can add to the log.
pub fn limits(max_size: u64, room: Option<Room>, margin: u64) -> Limits {
    let wal = wal_budget(max_size);
    let data = max_size.saturating_sub(wal);
    let Some(room) = room else {
        return Limits {
            data,
            checkpoint: wal,
        };
    };
    let checkpoint = wal
        .min(room.wal_file.saturating_add(room.free) / 4)
        .max(MIN_CHECKPOINT);
    // What the log may still add to its file comes out of the free space; the rows get the
    // database file (its free pages included) and the rest of it. A group is projected by the
    // plan; the slack covers a page or two of projection error, which could not grow the file
    // on a disk that is full.
    let log_growth = checkpoint
        .saturating_add(margin)
        .saturating_sub(room.wal_file);
    let data_room = room
        .db_file
        .saturating_add(room.free.saturating_sub(log_growth))
        .saturating_sub(MIN_CHECKPOINT);
    Limits {
        data: data.min(data_room),
        checkpoint,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacity {
    /// Bytes of `queue.db` the rows may use: `max_size` minus the write-ahead log's budget.
    pub budget: u64,
    pub on_full: OnFull,
    pub page_size: u64,
}

/// What to do with one group.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Plan {
    /// Oldest rejected rows (`rejected.rs`) to delete first, whatever `on_full` says.
    pub evict_rejected: u64,
    /// Oldest never-sent rows to delete before the inserts.
    pub evict: u64,
    /// How many of the group's inserts to write (the first ones; the rest are dropped).
    pub admit: usize,
}

impl Capacity {
    /// Average bytes per row, from the measure; a default while the queue is nearly empty.
    pub fn row_bytes(&self, used: u64, depth: u64) -> u64 {
        let base = BASE_PAGES * self.page_size;
        if depth == 0 {
            return DEFAULT_ROW_BYTES;
        }
        (used.saturating_sub(base) / depth).max(DEFAULT_ROW_BYTES / 2)
    }

    /// The plan of a group of `inserts` into a file with `used` bytes in use, `depth` queued
    /// rows and `rejected` rejected ones. Rejected rows are evicted first, oldest first, under
    /// either policy: rows the broker refused must not push out rows it would take, nor make
    /// `reject_new` refuse every new sample.
    pub fn plan(&self, used: u64, depth: u64, rejected: u64, inserts: usize) -> Plan {
        let row = self.row_bytes(used, depth.saturating_add(rejected));
        let projected = used.saturating_add(row.saturating_mul(inserts as u64));
        if projected <= self.budget {
            return Plan {
                admit: inserts,
                ..Plan::default()
            };
        }
        let over = (projected - self.budget).div_ceil(row);
        let evict_rejected = over.min(rejected);
        match self.on_full {
            OnFull::DropOldest => Plan {
                evict_rejected,
                evict: over - evict_rejected,
                admit: inserts,
            },
            OnFull::RejectNew => {
                let freed = evict_rejected.saturating_mul(row);
                let room = self.budget.saturating_add(freed).saturating_sub(used) / row;
                Plan {
                    evict_rejected,
                    evict: 0,
                    admit: inserts.min(usize::try_from(room).unwrap_or(usize::MAX)),
                }
            }
        }
    }
}

/// Drops of one group (or of one QoS 0 sample), by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Drops {
    /// `store.max_size` reached: evicted (`drop_oldest`) or refused (`reject_new`).
    pub capacity: u64,
    /// Never sent within their point's `max_age`.
    pub expired: u64,
    /// The commit holding them failed (disk full, I/O error).
    pub failed: u64,
    /// QoS 0 samples the live channel could not take (never queued).
    pub live: u64,
    /// Transactions that failed (disk full, I/O error), with or without samples in them.
    pub failed_commits: u64,
}

impl Drops {
    fn any(&self) -> bool {
        self.capacity + self.expired + self.failed + self.live + self.failed_commits > 0
    }

    fn add(&mut self, other: Drops) {
        self.capacity += other.capacity;
        self.expired += other.expired;
        self.failed += other.failed;
        self.live += other.live;
        self.failed_commits += other.failed_commits;
    }
}

/// How long nothing must be dropped before a burst counts as over. Drops come in waves while a
/// queue is full and the uplink drains it (every ack frees a little room, the next group fills
/// it, a page boundary decides which group evicts), and expiry sweeps run once a second: a burst
/// that ended at the first group without drops would log a start/end pair per wave. Ten seconds
/// of silence spans those waves and still reports the end of an outage promptly.
pub const BURST_QUIET: Duration = Duration::from_secs(10);

/// Logs drops and failed commits once per burst: a warning when the first drop of a burst
/// happens, and a summary at the first group (or QoS 0 sample) without drops that comes
/// [`BURST_QUIET`] or more after the burst's last drop. Groups in between (acks, fetches, inserts
/// that happened to fit, a commit that went through between failing ones) neither end nor
/// restart it. The end is only noticed when something happens: if nothing arrives after the
/// last drop, the summary waits for the next group (the writer retries kept acknowledgements on
/// a timer, so a disk that frees up is noticed). Counters are exact in [`super::QueueStats`];
/// this only keeps the log readable when thousands of samples are dropped a second. The first
/// failed commit of a burst is logged with its error, once: at most three lines per burst.
#[derive(Debug, Default)]
pub struct DropBurst {
    /// When the open burst last dropped something; `None` while no burst is open.
    last_drop: Option<Instant>,
    total: Drops,
    /// Whether the open burst logged a commit error already.
    error_logged: bool,
}

/// What [`DropBurst::record`] asks the caller to log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BurstEvent {
    /// The first drops of a burst.
    Started(Drops),
    /// Everything the burst dropped.
    Ended(Drops),
}

impl DropBurst {
    /// Whether a burst is open (its end is still to be reported).
    pub fn is_open(&self) -> bool {
        self.last_drop.is_some()
    }

    pub fn record(&mut self, drops: Drops, now: Instant) -> Option<BurstEvent> {
        if drops.any() {
            self.total.add(drops);
            let started = self.last_drop.is_none();
            self.last_drop = Some(now);
            return started.then_some(BurstEvent::Started(drops));
        }
        match self.last_drop {
            Some(last) if now.saturating_duration_since(last) >= BURST_QUIET => {
                self.last_drop = None;
                Some(BurstEvent::Ended(std::mem::take(&mut self.total)))
            }
            _ => None,
        }
    }

    /// [`DropBurst::record`] for a writer group, logging the event. `error`: why the group's
    /// commit failed, if it did.
    pub fn log(&mut self, drops: Drops, on_full: OnFull, now: Instant, error: Option<&str>) {
        let policy = match on_full {
            OnFull::DropOldest => "drop_oldest",
            OnFull::RejectNew => "reject_new",
        };
        let event = self.record(drops, now);
        if !self.is_open() {
            self.error_logged = false;
        }
        match (event, error) {
            (Some(BurstEvent::Started(d)), Some(error)) => {
                self.error_logged = true;
                tracing::warn!(
                    %error,
                    failed = d.failed,
                    capacity = d.capacity,
                    on_full = policy,
                    "queue commits fail (disk full or i/o error): new samples are dropped and counted, \
                     acknowledgements are kept and written with the first commit that succeeds; \
                     counting until it stops"
                )
            }
            (Some(BurstEvent::Started(d)), None) => tracing::warn!(
                capacity = d.capacity,
                expired = d.expired,
                failed = d.failed,
                on_full = policy,
                "queue started dropping samples (full, expired or failed commits); counting until it stops"
            ),
            (Some(BurstEvent::Ended(d)), _) => tracing::warn!(
                capacity = d.capacity,
                expired = d.expired,
                failed = d.failed,
                failed_commits = d.failed_commits,
                on_full = policy,
                "queue stopped dropping samples; dropped in this burst"
            ),
            (None, Some(error)) if !self.error_logged => {
                self.error_logged = true;
                tracing::warn!(
                    %error,
                    "queue commits fail (disk full or i/o error) during this burst: new samples \
                     are dropped and counted, acknowledgements are kept until a commit succeeds"
                )
            }
            (None, _) => {}
        }
    }

    /// [`DropBurst::record`] for one QoS 0 sample offered to the live channel (`dropped`: it
    /// was full or had no receiver), logging the event.
    pub fn log_live(&mut self, dropped: bool, now: Instant) {
        let drops = Drops {
            live: u64::from(dropped),
            ..Drops::default()
        };
        match self.record(drops, now) {
            Some(BurstEvent::Started(_)) => tracing::warn!(
                "qos 0 samples dropped: the live channel to the uplink is full (link down or slow); counting until it stops"
            ),
            Some(BurstEvent::Ended(d)) => tracing::warn!(
                dropped = d.live,
                "qos 0 samples flow again; dropped in this burst"
            ),
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Under the budget everything is admitted and nothing evicted; over it, drop_oldest
        /// admits everything and evicts at least the overshoot, reject_new never admits past
        /// the budget.
        #[test]
        fn plans_respect_the_budget(
            budget in 100_000u64..10_000_000,
            used in 24_576u64..12_000_000,
            depth in 0u64..200_000,
            rejected in prop_oneof![Just(0u64), 0u64..5000],
            inserts in 0usize..2000,
        ) {
            for on_full in [OnFull::DropOldest, OnFull::RejectNew] {
                let c = Capacity { budget, on_full, page_size: 4096 };
                let row = c.row_bytes(used, depth + rejected);
                let p = c.plan(used, depth, rejected, inserts);
                let projected = used + row * inserts as u64;
                if projected <= budget {
                    prop_assert_eq!(p, Plan { admit: inserts, ..Plan::default() });
                    continue;
                }
                // Rejected rows go first: a queued row only once every rejected one is gone.
                prop_assert!(p.evict_rejected <= rejected);
                prop_assert!(p.evict == 0 || p.evict_rejected == rejected);
                let freed = (p.evict + p.evict_rejected) * row;
                match on_full {
                    OnFull::DropOldest => {
                        prop_assert_eq!(p.admit, inserts);
                        prop_assert!(projected - freed <= budget);
                    }
                    OnFull::RejectNew => {
                        prop_assert_eq!(p.evict, 0);
                        prop_assert!(
                            p.admit == 0 || used + row * p.admit as u64 <= budget + freed
                        );
                        prop_assert!(p.admit == inserts || p.evict_rejected == rejected);
                    }
                }
            }
        }
    }

    const MIB: u64 = 1024 * 1024;

    #[test]
    fn without_a_measure_or_with_room_to_spare_max_size_decides() {
        let configured = Limits {
            data: 60 * MIB,
            checkpoint: 4 * MIB,
        };
        assert_eq!(limits(64 * MIB, None, 100_000), configured);
        let roomy = Room {
            free: 10_000 * MIB,
            db_file: MIB,
            wal_file: 0,
        };
        assert_eq!(limits(64 * MIB, Some(roomy), 100_000), configured);
    }

    #[test]
    fn a_disk_smaller_than_max_size_lowers_both_limits() {
        // The case: a 3 MiB disk, max_size 64 MiB, an empty queue.
        let room = Room {
            free: 3 * MIB,
            db_file: 24 * 1024,
            wal_file: 0,
        };
        let margin = 64 * 1024;
        let l = limits(64 * MIB, Some(room), margin);
        assert_eq!(l.checkpoint, 3 * MIB / 4);
        // The log may grow to its threshold and one group; the rows get the rest.
        assert_eq!(
            l.data,
            3 * MIB + 24 * 1024 - (3 * MIB / 4 + margin) - MIN_CHECKPOINT
        );
    }

    #[test]
    fn a_disk_filled_by_someone_else_keeps_the_rows_in_their_file() {
        let room = Room {
            free: 0,
            db_file: 2 * MIB,
            wal_file: 512 * 1024,
        };
        let margin = 64 * 1024;
        let l = limits(64 * MIB, Some(room), margin);
        // The log checkpoints early enough to stay inside its own file...
        assert_eq!(l.checkpoint, 128 * 1024);
        assert!(l.checkpoint + margin <= room.wal_file);
        // ...and the rows keep their file: a group evicts (or is refused) what it would add.
        assert_eq!(l.data, 2 * MIB - MIN_CHECKPOINT);
    }

    proptest! {
        /// The limits never exceed what `max_size` allows, and the rows get no space the log
        /// may still need: the rows, a page or two of slack and the log's growth fit in the
        /// database file and the free space.
        #[test]
        fn limits_fit_the_disk(
            max_size in MIB..(2048 * MIB),
            free in 0u64..(4096 * MIB),
            db_file in 0u64..(1024 * MIB),
            wal_file in 0u64..(8 * MIB),
            margin in 4096u64..(1024 * 1024),
        ) {
            let room = Room { free, db_file, wal_file };
            let l = limits(max_size, Some(room), margin);
            let configured = limits(max_size, None, margin);
            prop_assert!(l.data <= configured.data);
            prop_assert!(l.checkpoint <= configured.checkpoint);
            prop_assert!(l.checkpoint >= MIN_CHECKPOINT);
            let log_growth = (l.checkpoint + margin).saturating_sub(wal_file);
            if l.data > 0 {
                prop_assert!(
                    l.data + MIN_CHECKPOINT + log_growth.min(free) <= db_file + free
                );
            }
        }
    }

    fn cap(on_full: OnFull) -> Capacity {
        Capacity {
            budget: 100_000,
            on_full,
            page_size: 4096,
        }
    }

    #[test]
    fn below_budget_admits_everything() {
        let p = cap(OnFull::DropOldest).plan(50_000, 300, 0, 10);
        assert_eq!(
            p,
            Plan {
                admit: 10,
                ..Plan::default()
            }
        );
    }

    #[test]
    fn drop_oldest_evicts_what_the_group_needs() {
        let c = cap(OnFull::DropOldest);
        // 100 rows of (100_000 - 24_576) / 100 = 754 bytes each; 10 more overshoot by 7_540.
        let row = c.row_bytes(100_000, 100);
        assert_eq!(row, 754);
        let p = c.plan(100_000, 100, 0, 10);
        assert_eq!(p.admit, 10);
        assert_eq!(p.evict, 10);
    }

    #[test]
    fn rejected_rows_are_evicted_first_under_either_policy() {
        // The same 100 rows as above, 4 of them rejected: those go first, then queued ones.
        let p = cap(OnFull::DropOldest).plan(100_000, 96, 4, 10);
        assert_eq!((p.evict_rejected, p.evict, p.admit), (4, 6, 10));
        let p = cap(OnFull::DropOldest).plan(100_000, 50, 50, 10);
        assert_eq!((p.evict_rejected, p.evict, p.admit), (10, 0, 10));
        // reject_new: rejected rows make room instead of refusing the new samples.
        let p = cap(OnFull::RejectNew).plan(100_000, 50, 50, 10);
        assert_eq!((p.evict_rejected, p.evict, p.admit), (10, 0, 10));
        let p = cap(OnFull::RejectNew).plan(100_000, 96, 4, 10);
        assert_eq!((p.evict_rejected, p.evict, p.admit), (4, 0, 4));
    }

    #[test]
    fn reject_new_admits_what_fits() {
        let c = cap(OnFull::RejectNew);
        let row = c.row_bytes(96_000, 100);
        let p = c.plan(96_000, 100, 0, 10);
        assert_eq!(p.evict, 0);
        assert_eq!(p.admit as u64, 4_000 / row);
        assert_eq!(c.plan(120_000, 100, 0, 10).admit, 0);
    }

    fn d(capacity: u64) -> Drops {
        Drops {
            capacity,
            ..Drops::default()
        }
    }

    #[test]
    fn a_burst_is_logged_once_at_start_and_once_at_end() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut b = DropBurst::default();
        assert_eq!(b.record(d(0), at(0)), None);
        assert_eq!(b.record(d(3), at(0)), Some(BurstEvent::Started(d(3))));
        assert!(b.is_open());
        assert_eq!(b.record(d(4), at(10)), None);
        // Quiet, but not long enough yet.
        assert_eq!(b.record(d(0), at(5_000)), None);
        let quiet = BURST_QUIET.as_millis() as u64;
        assert_eq!(
            b.record(d(0), at(10 + quiet)),
            Some(BurstEvent::Ended(d(7)))
        );
        assert!(!b.is_open());
        assert_eq!(b.record(d(0), at(20 + quiet)), None);
        assert_eq!(
            b.record(d(1), at(30 + quiet)),
            Some(BurstEvent::Started(d(1)))
        );
    }

    /// A full queue while the uplink drains it: groups that drop alternate with groups of acks
    /// and fetches (and inserts that happened to fit) that drop nothing. That is one burst: one
    /// start, and one end once the drops stop for good.
    #[test]
    fn drops_interleaved_with_groups_without_drops_are_one_burst() {
        let t0 = Instant::now();
        let mut b = DropBurst::default();
        let mut events = Vec::new();
        for i in 0..2_000u64 {
            let now = t0 + Duration::from_millis(i * 10);
            let drops = if i % 3 == 0 { d(2) } else { d(0) };
            events.extend(b.record(drops, now));
        }
        assert_eq!(events, [BurstEvent::Started(d(2))]);
        // The last drop was at 19.98 s; nothing dropped since.
        let end = t0 + Duration::from_millis(19_980) + BURST_QUIET;
        assert_eq!(b.record(d(0), end), Some(BurstEvent::Ended(d(2 * 667))));
    }

    #[test]
    fn live_drops_are_a_burst_of_their_own_kind() {
        let t0 = Instant::now();
        let mut b = DropBurst::default();
        let live = |live| Drops {
            live,
            ..Drops::default()
        };
        assert_eq!(b.record(live(1), t0), Some(BurstEvent::Started(live(1))));
        assert_eq!(b.record(live(1), t0), None);
        assert_eq!(
            b.record(live(0), t0 + BURST_QUIET),
            Some(BurstEvent::Ended(live(2)))
        );
    }
}
