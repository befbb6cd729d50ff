//! What pushes came to, for the metrics endpoint: answers by status, and whether a push is on
//! trial now (an alert on `rolled_back` is the fleet's "a push failed somewhere").

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::payload::Status;

/// Counters the configuration task keeps.
#[derive(Debug, Default)]
pub struct PushStats {
    /// Per [`Status::ALL`] entry.
    answers: [AtomicU64; Status::ALL.len()],
    on_trial: AtomicBool,
}

/// A copy of [`PushStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PushSnapshot {
    pub answers: [u64; Status::ALL.len()],
    pub on_trial: bool,
}

impl PushStats {
    /// An answer with `status` was committed (a repeated id's answer counts again).
    pub fn answered(&self, status: Status) {
        if let Some(index) = Status::ALL.iter().position(|s| *s == status) {
            self.answers[index].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn set_on_trial(&self, on_trial: bool) {
        self.on_trial.store(on_trial, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> PushSnapshot {
        PushSnapshot {
            answers: std::array::from_fn(|i| self.answers[i].load(Ordering::Relaxed)),
            on_trial: self.on_trial.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_counted_by_status() {
        let stats = PushStats::default();
        stats.answered(Status::RolledBack);
        stats.answered(Status::RolledBack);
        stats.answered(Status::Applied);
        stats.set_on_trial(true);
        let snapshot = stats.snapshot();
        assert!(snapshot.on_trial);
        let count = |status| {
            let index = Status::ALL.iter().position(|s| *s == status).unwrap();
            snapshot.answers[index]
        };
        assert_eq!(
            (
                count(Status::RolledBack),
                count(Status::Applied),
                count(Status::Busy)
            ),
            (2, 1, 0)
        );
        assert_eq!(Status::RolledBack.label(), "rolled_back");
    }
}
