//! Capacity planning (`store.max_size`, `store.on_full`) and the once-per-burst drop log. Pure:
//! the writer measures, this decides.
//!
//! The measure is SQLite's own: pages in use (not on the free list) × page size, read after
//! every commit. A group of inserts is projected with the average row size; when the projection
//! passes the data budget, `drop_oldest` deletes enough of the oldest *never sent* rows in the
//! same transaction, and `reject_new` admits only the inserts that fit. Rows with a session state
//! (sent, PUBREC received) are never evicted: the broker may hold their packet id. Deleting the
//! oldest rows frees the leftmost b-tree pages whole, so the measure follows within a page or
//! two.

use crate::config::OnFull;

/// Row size assumed while the queue is nearly empty (a sample row with its index share is about
/// 60-100 bytes; the bench reports the real figure).
pub const DEFAULT_ROW_BYTES: u64 = 128;
/// Pages an empty queue uses (schema, table and index roots); not part of the per-row average.
const BASE_PAGES: u64 = 6;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacity {
    /// Bytes of `queue.db` the rows may use: `max_size` minus the write-ahead log's budget.
    pub budget: u64,
    pub on_full: OnFull,
    pub page_size: u64,
}

/// What to do with one group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
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

    pub fn plan(&self, used: u64, depth: u64, inserts: usize) -> Plan {
        let row = self.row_bytes(used, depth);
        let projected = used.saturating_add(row.saturating_mul(inserts as u64));
        if projected <= self.budget {
            return Plan {
                evict: 0,
                admit: inserts,
            };
        }
        match self.on_full {
            OnFull::DropOldest => Plan {
                evict: (projected - self.budget).div_ceil(row),
                admit: inserts,
            },
            OnFull::RejectNew => {
                let room = self.budget.saturating_sub(used) / row;
                Plan {
                    evict: 0,
                    admit: inserts.min(usize::try_from(room).unwrap_or(usize::MAX)),
                }
            }
        }
    }
}

/// Drops of one group, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Drops {
    /// `store.max_size` reached: evicted (`drop_oldest`) or refused (`reject_new`).
    pub capacity: u64,
    /// Never sent within their point's `max_age`.
    pub expired: u64,
    /// The commit holding them failed (disk full, I/O error).
    pub failed: u64,
}

impl Drops {
    fn any(&self) -> bool {
        self.capacity + self.expired + self.failed > 0
    }
}

/// Logs drops once per burst: a warning when the first drop of a burst happens, and a summary
/// when the first group without drops ends it. Counters are exact in [`super::QueueStats`];
/// this only keeps the log readable when thousands of samples are dropped a second.
#[derive(Debug, Default)]
pub struct DropBurst {
    active: bool,
    total: Drops,
}

/// What [`DropBurst::record`] asks the caller to log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BurstEvent {
    Started(Drops),
    Ended(Drops),
}

impl DropBurst {
    pub fn record(&mut self, drops: Drops) -> Option<BurstEvent> {
        if drops.any() {
            self.total.capacity += drops.capacity;
            self.total.expired += drops.expired;
            self.total.failed += drops.failed;
            if !self.active {
                self.active = true;
                return Some(BurstEvent::Started(drops));
            }
            None
        } else if self.active {
            self.active = false;
            Some(BurstEvent::Ended(std::mem::take(&mut self.total)))
        } else {
            None
        }
    }

    /// [`DropBurst::record`], logging the event.
    pub fn log(&mut self, drops: Drops, on_full: OnFull) {
        let policy = match on_full {
            OnFull::DropOldest => "drop_oldest",
            OnFull::RejectNew => "reject_new",
        };
        match self.record(drops) {
            Some(BurstEvent::Started(d)) => tracing::warn!(
                capacity = d.capacity,
                expired = d.expired,
                failed = d.failed,
                on_full = policy,
                "queue started dropping samples (full, expired or failed commits); counting until it stops"
            ),
            Some(BurstEvent::Ended(d)) => tracing::warn!(
                capacity = d.capacity,
                expired = d.expired,
                failed = d.failed,
                on_full = policy,
                "queue stopped dropping samples; dropped in this burst"
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
            inserts in 0usize..2000,
        ) {
            for on_full in [OnFull::DropOldest, OnFull::RejectNew] {
                let c = Capacity { budget, on_full, page_size: 4096 };
                let row = c.row_bytes(used, depth);
                let p = c.plan(used, depth, inserts);
                let projected = used + row * inserts as u64;
                if projected <= budget {
                    prop_assert_eq!(p, Plan { evict: 0, admit: inserts });
                    continue;
                }
                match on_full {
                    OnFull::DropOldest => {
                        prop_assert_eq!(p.admit, inserts);
                        prop_assert!(projected - p.evict * row <= budget);
                    }
                    OnFull::RejectNew => {
                        prop_assert_eq!(p.evict, 0);
                        prop_assert!(
                            p.admit == 0 || used + row * p.admit as u64 <= budget
                        );
                    }
                }
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
        let p = cap(OnFull::DropOldest).plan(50_000, 300, 10);
        assert_eq!(
            p,
            Plan {
                evict: 0,
                admit: 10
            }
        );
    }

    #[test]
    fn drop_oldest_evicts_what_the_group_needs() {
        let c = cap(OnFull::DropOldest);
        // 100 rows of (100_000 - 24_576) / 100 = 754 bytes each; 10 more overshoot by 7_540.
        let row = c.row_bytes(100_000, 100);
        assert_eq!(row, 754);
        let p = c.plan(100_000, 100, 10);
        assert_eq!(p.admit, 10);
        assert_eq!(p.evict, 10);
    }

    #[test]
    fn reject_new_admits_what_fits() {
        let c = cap(OnFull::RejectNew);
        let row = c.row_bytes(96_000, 100);
        let p = c.plan(96_000, 100, 10);
        assert_eq!(p.evict, 0);
        assert_eq!(p.admit as u64, 4_000 / row);
        assert_eq!(c.plan(120_000, 100, 10).admit, 0);
    }

    #[test]
    fn a_burst_is_logged_once_at_start_and_once_at_end() {
        let mut b = DropBurst::default();
        let d = |capacity| Drops {
            capacity,
            ..Drops::default()
        };
        assert_eq!(b.record(d(0)), None);
        assert_eq!(b.record(d(3)), Some(BurstEvent::Started(d(3))));
        assert_eq!(b.record(d(4)), None);
        assert_eq!(b.record(d(0)), Some(BurstEvent::Ended(d(7))));
        assert_eq!(b.record(d(0)), None);
        assert_eq!(b.record(d(1)), Some(BurstEvent::Started(d(1))));
    }
}
