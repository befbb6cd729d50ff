//! Queue files made through the queue's own API before the gateway starts: committed samples,
//! and rows the broker refused for good as an MQTT 5 broker's reason code leaves them (so a test
//! can check where an operator sees them without an MQTT 5 uplink).

use std::path::Path;
use std::sync::Arc;

use fieldrelay::config::Qos;
use fieldrelay::queue::{rejected, Queue, QueueOptions};
use fieldrelay::sample::{Sample, Value};

/// Pushes `n` QoS 1 samples of `boiler`/`counter` (values 1..=n).
pub async fn push_counter(queue: &Queue, n: i64) {
    for i in 1..=n {
        let sample = Sample {
            device: Arc::from("boiler"),
            point: Arc::from("counter"),
            value: Value::Int(i),
            ts_ms: 1_700_000_000_000 + i,
            qos: Qos::AtLeastOnce,
            retain: false,
        };
        queue.push(sample).await.expect("push");
    }
}

/// Queues `rows` samples ([`push_counter`]) in `data_dir` and moves them all to `rejected` with
/// `reason`.
pub async fn seed_rejected(data_dir: &Path, rows: i64, reason: u8) {
    let (queue, _live, writer) = Queue::open(data_dir, QueueOptions::default()).expect("open");
    push_counter(&queue, rows).await;
    let seqs = queue
        .fetch(0, 1000)
        .await
        .expect("fetch")
        .iter()
        .map(|row| row.seq)
        .collect();
    queue.reject(seqs, reason).await.expect("reject");
    writer.close().await.expect("close");
    let held = rejected::total(&queue.rejected().held);
    assert_eq!(held, u64::try_from(rows).unwrap_or(0), "rows rejected");
}
