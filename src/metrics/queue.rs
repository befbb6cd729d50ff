//! Queue metrics, from what the queue already publishes: the progress watch
//! ([`Queue::progress`], updated after every commit) and the drop counters ([`Queue::stats`]).
//! Reading them takes no lock the writer thread uses and never waits on it, so a scrape cannot
//! slow down a commit, and a wedged writer still gets scraped (its depth simply stops moving).

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;

use super::encode::{counter, family, gauge};
use crate::queue::Queue;

#[derive(Debug)]
pub struct QueueCollector {
    queue: Queue,
}

impl QueueCollector {
    pub fn new(queue: Queue) -> QueueCollector {
        QueueCollector { queue }
    }
}

impl Collector for QueueCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let progress = *self.queue.progress().borrow();
        gauge(
            &mut encoder,
            "fieldrelay_queue_depth",
            "Rows committed to the queue and not yet acknowledged by the broker",
            progress.depth,
        )?;
        gauge(
            &mut encoder,
            "fieldrelay_queue_last_seq",
            "Seq of the newest committed row; grows by one per committed sample, never reused",
            progress.last_seq,
        )?;
        let stats = self.queue.stats();
        let drops = [
            ([("reason", "live_channel_full")], stats.live_dropped),
            ([("reason", "commit_failed")], stats.commit_dropped),
        ];
        family(
            &mut encoder,
            "fieldrelay_queue_dropped",
            "Samples given up on since start: QoS 0 samples the live channel could not take \
             (live_channel_full), QoS 1/2 samples whose transaction failed, never committed \
             (commit_failed)",
            MetricType::Counter,
            &drops,
            |m, value| counter(m, *value),
        )
    }
}
