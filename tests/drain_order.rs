//! `uplink.drain` against a real mosquitto: with `live_first` a sample committed while a backlog
//! drains reaches a subscriber before the backlog is through; with `in_order` (the default, the
//! v1 contract) it arrives after every backlog row. Both lanes arrive in `seq` order.
//!
//! The uplink runs in process on a real queue file; the backlog is paced by `max_rate` so it
//! lasts about three seconds, and the fresh sample is committed once the first backlog row
//! arrived (so after the connection came up).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Mosquitto, Subscriber};
use fieldrelay::config::{DrainOrder, Qos, UplinkConfig};
use fieldrelay::queue::{Queue, QueueOptions};
use fieldrelay::sample::{now_ms, Sample, Value};
use tokio_util::sync::CancellationToken;

const BACKLOG: usize = 1500;
const PREFIX: &str = "fieldrelay/order";

fn sample(point: &str, i: i64) -> Sample {
    Sample {
        device: Arc::from("boiler"),
        point: Arc::from(point),
        value: Value::Int(i),
        ts_ms: now_ms(),
        qos: Qos::AtLeastOnce,
        retain: false,
    }
}

/// Drains a backlog with `drain`, commits one fresh sample once the drain started; returns the
/// topics in arrival order (without the status) and the `seq`s of the backlog rows.
async fn drain_with_a_fresh_sample(drain: DrainOrder) -> (Vec<String>, Vec<u64>) {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(dir.path());
    let backlog_topic = format!("{PREFIX}/boiler/backlog");
    let mut sub = Subscriber::connect(broker.port, "order-sub", &[&format!("{PREFIX}/#")]).await;
    // Probes until the subscription is live, so the subscriber sees the drain from its start.
    let probe = format!("{PREFIX}/probe");
    loop {
        let status = std::process::Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &broker.port.to_string()])
            .args(["-t", &probe, "-m", "{}"])
            .status()
            .unwrap();
        assert!(status.success());
        if sub
            .try_until(Duration::from_millis(200), |seen| !seen.is_empty())
            .await
        {
            break;
        }
    }
    let (queue, _live, writer) =
        Queue::open(&dir.path().join("data"), QueueOptions::default()).expect("open the queue");
    for i in 0..BACKLOG {
        queue.push(sample("backlog", i as i64)).await.unwrap();
    }
    queue
        .progress()
        .wait_for(|p| p.last_seq >= BACKLOG as u64)
        .await
        .unwrap();
    let config = UplinkConfig {
        keep_alive: Duration::from_secs(30),
        topic_prefix: PREFIX.into(),
        reconnect_initial: Duration::from_millis(100),
        reconnect_max: Duration::from_millis(500),
        response_timeout: Duration::from_secs(10),
        max_inflight: 8,
        max_rate: Some(500),
        drain,
        ..UplinkConfig::plain("127.0.0.1", broker.port, "order-gw")
    };
    let uplink = common::in_process_uplink(&config, &queue, Default::default());
    let cancel = CancellationToken::new();
    let task = tokio::spawn(uplink.run(cancel.clone()));
    // The subscription may go live after the first rows: the fresh sample is committed once a
    // backlog row arrived, and the count below waits for the rows seen from then on.
    sub.until("a first backlog row", Duration::from_secs(20), |seen| {
        seen.iter().any(|m| m.topic == backlog_topic)
    })
    .await;
    queue.push(sample("fresh", 1)).await.unwrap();
    let fresh_topic = format!("{PREFIX}/boiler/fresh");
    sub.until(
        "the fresh sample and the whole backlog",
        Duration::from_secs(60),
        |seen| {
            let last_seq = seen
                .iter()
                .filter(|m| m.topic == backlog_topic)
                .filter_map(|m| m.payload["seq"].as_u64())
                .max();
            seen.iter().any(|m| m.topic == fresh_topic) && last_seq == Some(BACKLOG as u64)
        },
    )
    .await;
    cancel.cancel();
    task.await.unwrap();
    writer.close().await.unwrap();
    let rows: Vec<&common::Message> = sub
        .seen
        .iter()
        .filter(|m| m.topic.ends_with("/backlog") || m.topic.ends_with("/fresh"))
        .collect();
    let topics = rows.iter().map(|m| m.topic.clone()).collect();
    let seqs = rows
        .iter()
        .filter(|m| m.topic == backlog_topic)
        .filter_map(|m| m.payload["seq"].as_u64())
        .collect();
    (topics, seqs)
}

/// Backlog rows that arrived after the fresh sample.
fn backlog_after_fresh(topics: &[String]) -> usize {
    let fresh = topics
        .iter()
        .position(|t| t.ends_with("/fresh"))
        .expect("the fresh sample arrived");
    topics[fresh..]
        .iter()
        .filter(|t| t.ends_with("/backlog"))
        .count()
}

fn in_seq_order(seqs: &[u64]) -> bool {
    seqs.windows(2).all(|w| w[0] < w[1])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_first_sends_a_fresh_sample_ahead_of_the_backlog() {
    let (topics, seqs) = drain_with_a_fresh_sample(DrainOrder::LiveFirst { live_share: 25 }).await;
    let after = backlog_after_fresh(&topics);
    assert!(
        after > BACKLOG / 4,
        "the fresh sample waited for the backlog: only {after} of {BACKLOG} rows after it"
    );
    assert!(in_seq_order(&seqs), "the backlog lane is in seq order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_order_keeps_a_fresh_sample_behind_the_backlog() {
    let (topics, seqs) = drain_with_a_fresh_sample(DrainOrder::InOrder).await;
    assert_eq!(
        backlog_after_fresh(&topics),
        0,
        "seq order: the backlog first"
    );
    assert!(in_seq_order(&seqs));
}
