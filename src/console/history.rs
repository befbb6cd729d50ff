//! The last hour of the queue, for the overview's chart: depth and delivery rate every
//! [`PERIOD`], in a ring of [`SLOTS`] (about 10 KiB). Kept only with a console configured, by one
//! task that reads what the queue and the uplink already publish (the progress watch, the
//! uplink's acknowledgement counter); nothing on the pipeline's path changes.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::queue::Queue;
use crate::sample::now_ms;
use crate::uplink::UplinkStats;

/// Time between two points of the chart.
pub const PERIOD: Duration = Duration::from_secs(10);
/// One hour of points.
pub const SLOTS: usize = 360;

/// One point of the chart.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    pub ts_ms: i64,
    /// Rows waiting in the queue.
    pub depth: u64,
    /// Rows the broker acknowledged (PUBACK/PUBCOMP) per second since the previous point;
    /// QoS 0 samples have no acknowledgement and are not counted.
    pub delivered_per_s: f64,
}

/// The ring (pure).
#[derive(Debug, Default)]
pub struct QueueHistory {
    points: VecDeque<Point>,
    /// The acknowledgement counter and its time at the previous point.
    last: Option<(i64, u64)>,
}

impl QueueHistory {
    /// Adds a point at `ts_ms`, with the queue's `depth` and the uplink's total `acked`.
    pub fn record(&mut self, ts_ms: i64, depth: u64, acked: u64) {
        let delivered_per_s = match self.last {
            Some((then, before)) if ts_ms > then => {
                acked.saturating_sub(before) as f64 * 1000.0 / (ts_ms - then) as f64
            }
            _ => 0.0,
        };
        self.last = Some((ts_ms, acked));
        if self.points.len() == SLOTS {
            self.points.pop_front();
        }
        self.points.push_back(Point {
            ts_ms,
            depth,
            delivered_per_s,
        });
    }

    /// Oldest first.
    pub fn points(&self) -> Vec<Point> {
        self.points.iter().copied().collect()
    }

    /// Time of the newest point: a new one means the chart changed.
    pub fn newest(&self) -> Option<i64> {
        self.points.back().map(|p| p.ts_ms)
    }
}

/// The ring, shared by its task and the pages.
pub type SharedHistory = Arc<Mutex<QueueHistory>>;

/// Reads the ring (a poisoned lock still holds whole points).
pub fn read<T>(history: &SharedHistory, f: impl FnOnce(&QueueHistory) -> T) -> T {
    f(&history.lock().unwrap_or_else(PoisonError::into_inner))
}

/// Adds a point now and every [`PERIOD`] until `cancel` fires.
pub async fn sample(
    history: SharedHistory,
    queue: Queue,
    uplink: Arc<UplinkStats>,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval(PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let depth = queue.progress().borrow().depth;
        let acked = uplink.snapshot().acked;
        history
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .record(now_ms(), depth, acked);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_from_the_counter_and_an_hour_kept() {
        let mut history = QueueHistory::default();
        history.record(0, 5, 100);
        history.record(10_000, 7, 150);
        history.record(10_000, 7, 150); // same instant: no rate, no division by zero
        let points = history.points();
        assert_eq!(points[0].delivered_per_s, 0.0);
        assert_eq!(points[1].delivered_per_s, 5.0);
        assert_eq!(points[2].delivered_per_s, 0.0);
        for i in 0..SLOTS as i64 {
            history.record(20_000 + i * 10_000, 1, 150);
        }
        assert_eq!(history.points().len(), SLOTS);
        assert_eq!(history.points()[0].ts_ms, 20_000);
        assert_eq!(history.newest(), Some(20_000 + (SLOTS as i64 - 1) * 10_000));
    }
}
