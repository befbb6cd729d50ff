//! `kill -9` of the gateway in the middle of a fast backlog drain loses nothing.
//!
//! A queue file holding 20,000 committed QoS 1 rows (written through the queue itself, so every
//! `seq` in `1..=20000` is a committed sample) is drained by the `fieldrelay` binary into a real
//! mosquitto, with a persistent QoS 1 subscriber (rumqttc, a client we did not write). While the
//! window is full and acknowledgements are being committed in groups, the gateway is killed
//! three times, at about a quarter, a half and three quarters of the backlog; each run resumes
//! the broker session (`session_present = 1`) and sends every unacknowledged row again as new
//! (QoS 1 packet ids are not recorded, see `docs/specs/queue.md` §3.2). The oracle: once the queue is empty, every `seq`
//! reached the subscriber (duplicates are allowed and carry the same `seq`), and each kill
//! really happened mid-drain (rows left in the file, some already gone).
//!
//! It guards the durability rules a faster drain must keep (`src/queue/mod.rs` invariants 1-3,
//! `src/uplink/mod.rs` guarantees): a row is deleted only after its PUBACK, and packet ids
//! recorded late (QoS 1, with the next group) only ever cost a resend.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::{wait_until, Gateway, Mosquitto, Subscriber};
use fieldrelay::config::Qos;
use fieldrelay::queue::{Queue, QueueOptions, QueueReader};
use fieldrelay::sample::{Sample, Value};
use fieldrelay::simulator::{Registers, Simulator};
use tokio_util::sync::CancellationToken;

const ROWS: u64 = 20_000;
const TOPIC: &str = "fieldrelay/test-gw/boiler/temperature";

async fn fill(data: &std::path::Path) {
    let (queue, _live, writer) = Queue::open(data, QueueOptions::default()).expect("open queue");
    for i in 0..ROWS {
        let sample = Sample {
            device: Arc::from("boiler"),
            point: Arc::from("temperature"),
            value: Value::Float(20.0 + (i % 1000) as f64 / 8.0),
            ts_ms: 1_700_000_000_000 + i as i64,
            qos: Qos::AtLeastOnce,
            retain: false,
        };
        queue.push(sample).await.expect("push");
    }
    queue
        .progress()
        .wait_for(|p| p.last_seq >= ROWS)
        .await
        .expect("commit");
    writer.close().await.expect("close queue");
}

fn depth(data: &std::path::Path) -> u64 {
    QueueReader::open(data)
        .and_then(|r| r.progress())
        .map(|p| p.depth)
        .expect("read the queue file")
}

fn seqs(sub: &Subscriber) -> BTreeSet<u64> {
    sub.seen
        .iter()
        .filter(|m| m.topic == TOPIC)
        .filter_map(|m| m.payload["seq"].as_u64())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_in_the_middle_of_a_fast_drain_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    fill(&data).await;
    let broker = Mosquitto::start(dir.path());
    let mut sub = Subscriber::connect(broker.port, "drain-kill9", &["fieldrelay/test-gw/#"]).await;
    common::subscribed(&mut sub, broker.port, "fieldrelay/test-gw/probe").await;
    let regs = Registers::default();
    regs.set_holding(1, 0, &[1]);
    let sim = Simulator::bind(SocketAddr::from(([127, 0, 0, 1], 0)), regs)
        .await
        .unwrap();
    let device = sim.local_addr().port();
    let stop_sim = CancellationToken::new();
    tokio::spawn(sim.run(stop_sim.clone()));
    // A QoS 0 point only: the backlog is all the queue holds.
    let config = common::write_config(
        dir.path(),
        broker.port,
        device,
        "      - {name: idle, table: holding, address: 0, type: u16, qos: 0}\n",
    );
    let mut gateway = Gateway::start(&config);
    for quarter in 1..=3u64 {
        // The queue file, not the subscriber, says how far the drain is: the subscriber may lag
        // behind the broker by thousands of messages.
        let target = ROWS * (4 - quarter) / 4;
        let data_dir = data.clone();
        tokio::task::spawn_blocking(move || {
            wait_until(
                "a part of the backlog to drain",
                Duration::from_secs(120),
                || depth(&data_dir) <= target,
            )
        })
        .await
        .unwrap();
        gateway.kill9();
        let left = depth(&data);
        assert!(
            left > 0 && left <= target,
            "kill {quarter} was not mid-drain: {left} of {ROWS} rows left"
        );
        gateway = Gateway::start(&config);
    }
    let data_dir = data.clone();
    tokio::task::spawn_blocking(move || {
        wait_until("the queue to drain", Duration::from_secs(120), || {
            depth(&data_dir) == 0
        })
    })
    .await
    .unwrap();
    // The predicate runs once per message: it reads only what came since its last call.
    let mut distinct = BTreeSet::new();
    let mut read = 0;
    let all = sub
        .try_until(Duration::from_secs(60), |seen| {
            distinct.extend(
                seen[read..]
                    .iter()
                    .filter(|m| m.topic == TOPIC)
                    .filter_map(|m| m.payload["seq"].as_u64()),
            );
            read = seen.len();
            distinct.len() as u64 >= ROWS
        })
        .await;
    let seen = seqs(&sub);
    let missing: Vec<u64> = (1..=ROWS).filter(|s| !seen.contains(s)).collect();
    assert!(
        all && missing.is_empty(),
        "{} of {ROWS} committed rows never reached the subscriber: {:?}",
        missing.len(),
        &missing[..missing.len().min(20)]
    );
    stop_sim.cancel();
}
