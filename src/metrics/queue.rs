//! Queue metrics, from what the queue already publishes: the progress watch
//! ([`Queue::progress`], updated after every commit) and the counters ([`Queue::stats`]).
//! Reading them takes no lock the writer thread uses and never waits on it, so a scrape cannot
//! slow down a commit, and a wedged writer still gets scraped (its depth simply stops moving).
//!
//! Per-point depth is not here: it needs a scan of the table, which `fieldrelay queue stats`
//! does on demand instead of at every scrape.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;

use super::encode::{counter, family, gauge};
use crate::queue::Queue;
use crate::sample::now_ms;

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
        gauge(
            &mut encoder,
            "fieldrelay_queue_bytes",
            "Bytes of queue.db pages holding rows (what store.max_size bounds, with the WAL budget)",
            progress.bytes,
        )?;
        gauge(
            &mut encoder,
            "fieldrelay_queue_capacity_bytes",
            "Bytes the rows may use before store.on_full applies (store.max_size less the WAL budget)",
            self.queue.capacity_bytes(),
        )?;
        // A clock step backwards must not make an age negative.
        let age_ms = progress
            .oldest_ts_ms
            .map_or(0, |ts| now_ms().saturating_sub(ts).max(0));
        gauge(
            &mut encoder,
            "fieldrelay_queue_oldest_age_seconds",
            "Age of the oldest row the broker has not acknowledged (by its sample time); 0 when \
             the queue is empty",
            age_ms as f64 / 1000.0,
        )?;
        let stats = self.queue.stats();
        let rejected = self.queue.rejected();
        let mut committed = encoder.encode_descriptor(
            "fieldrelay_queue_committed",
            "Rows (QoS 1/2 samples and messages) committed to the queue since start",
            None,
            MetricType::Counter,
        )?;
        counter(&mut committed, stats.committed)?;
        let drops = [
            ([("reason", "live_channel_full")], stats.live_dropped),
            ([("reason", "commit_failed")], stats.commit_dropped),
            ([("reason", "queue_full")], stats.capacity_dropped),
            ([("reason", "expired")], stats.expired),
            (
                [("reason", "rejected_evicted")],
                crate::queue::rejected::total(&rejected.evicted),
            ),
        ];
        family(
            &mut encoder,
            "fieldrelay_queue_dropped",
            "Samples given up on since start: QoS 0 samples the live channel could not take \
             (live_channel_full); QoS 1/2 samples whose transaction failed, never committed \
             (commit_failed); rows evicted or refused at store.max_size (queue_full); never-sent \
             rows past their point's max_age (expired); rows the broker refused, evicted at \
             store.max_size (rejected_evicted)",
            MetricType::Counter,
            &drops,
            |m, value| counter(m, *value),
        )?;
        encode_rejected(&mut encoder, &rejected)
    }
}

/// Rows refused by the broker, per reason name: every reason a row can be rejected with (0
/// until it happens, so that rates and alerts work from the start) and any other code seen.
fn encode_rejected(
    encoder: &mut DescriptorEncoder,
    rejected: &crate::queue::RejectedStats,
) -> Result<(), std::fmt::Error> {
    use crate::queue::reason;
    let mut codes: Vec<u8> = reason::ROW_CODES.to_vec();
    codes.extend(rejected.held.keys().chain(rejected.rejected.keys()));
    codes.sort_unstable();
    codes.dedup();
    let rows = |counts: &crate::queue::rejected::ByReason| -> Vec<([(&str, String); 1], u64)> {
        codes
            .iter()
            .map(|code| {
                let n = counts.get(code).copied().unwrap_or(0);
                ([("reason", reason::name(*code))], n)
            })
            .collect()
    };
    family(
        encoder,
        "fieldrelay_queue_rejected",
        "Rows the broker refused for good (MQTT 5 reason code, or 0x95 packet_too_large from the \
         gateway itself) and moved to the queue's rejected table since start, per reason",
        MetricType::Counter,
        &rows(&rejected.rejected),
        |m, value| counter(m, *value),
    )?;
    family(
        encoder,
        "fieldrelay_queue_rejected_rows",
        "Rejected rows held in queue.db, per reason: never sent again by themselves; see \
         `fieldrelay queue stats` and `fieldrelay queue export --rejected`",
        MetricType::Gauge,
        &rows(&rejected.held),
        |m, value| m.encode_gauge(value),
    )
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::config::Qos;
    use crate::metrics::Metrics;
    use crate::queue::QueueOptions;
    use crate::sample::{Sample, Value};

    fn value(text: &str, sample: &str) -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' '))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {sample} in\n{text}"))
    }

    #[tokio::test]
    async fn scrape_shows_size_age_commits_and_every_drop_reason() {
        let dir = tempfile::tempdir().unwrap();
        let (queue, _live, writer) = Queue::open(dir.path(), QueueOptions::default()).unwrap();
        let mut metrics = Metrics::new();
        metrics.add(QueueCollector::new(queue.clone()));
        let text = metrics.render().unwrap();
        assert_eq!(value(&text, "fieldrelay_queue_oldest_age_seconds"), 0.0);
        assert_eq!(value(&text, "fieldrelay_queue_committed_total"), 0.0);

        let ten_minutes_ago = now_ms() - 600_000;
        for i in 0..2 {
            let sample = Sample {
                device: Arc::from("d"),
                point: Arc::from("p"),
                value: Value::Int(i),
                ts_ms: ten_minutes_ago + i,
                qos: Qos::AtLeastOnce,
                retain: false,
            };
            queue.push(sample).await.unwrap();
        }
        queue.progress().wait_for(|p| p.depth == 2).await.unwrap();
        let text = metrics.render().unwrap();
        assert_eq!(value(&text, "fieldrelay_queue_committed_total"), 2.0);
        let age = value(&text, "fieldrelay_queue_oldest_age_seconds");
        assert!((600.0..3600.0).contains(&age), "{age}");
        assert!(value(&text, "fieldrelay_queue_bytes") >= 4096.0);
        assert_eq!(
            value(&text, "fieldrelay_queue_capacity_bytes"),
            queue.capacity_bytes() as f64
        );
        for reason in [
            "live_channel_full",
            "commit_failed",
            "queue_full",
            "expired",
            "rejected_evicted",
        ] {
            let sample = format!("fieldrelay_queue_dropped_total{{reason=\"{reason}\"}}");
            assert_eq!(value(&text, &sample), 0.0, "{reason}");
        }
        let rejected = |text: &str, reason: &str| {
            let total = format!("fieldrelay_queue_rejected_total{{reason=\"{reason}\"}}");
            let held = format!("fieldrelay_queue_rejected_rows{{reason=\"{reason}\"}}");
            (value(text, &total), value(text, &held))
        };
        assert_eq!(rejected(&text, "not_authorized"), (0.0, 0.0));
        queue.reject(vec![1], 0x87).await.unwrap();
        queue.reject(vec![2], 0xa5).await.unwrap();
        queue.progress().wait_for(|p| p.depth == 0).await.unwrap();
        let text = metrics.render().unwrap();
        assert_eq!(rejected(&text, "not_authorized"), (1.0, 1.0));
        assert_eq!(rejected(&text, "0xa5"), (1.0, 1.0));
        assert_eq!(rejected(&text, "payload_format_invalid"), (0.0, 0.0));
        assert_eq!(value(&text, "fieldrelay_queue_depth"), 0.0);
        writer.close().await.unwrap();
    }
}
