//! Broker profiles against a real mosquitto: the uplink drains a backlog no faster than the
//! profile's publishes per second allow (`uplink.broker: emqx_serverless`, 10/s: a drain at
//! 9/s), and every row still arrives, in order.
//!
//! The bound is one a token bucket cannot beat whatever the machine's speed: with a bucket of
//! one second's tokens, N rows need at least (N − 9) / 9 seconds from the first connect. A
//! generic broker drains the same backlog in milliseconds, so the assertion fails without the
//! cap; it is a lower bound, never a "fast enough" timing.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Mosquitto, Subscriber};
use fieldrelay::config::{Broker, Qos};
use fieldrelay::queue::{Queue, QueueOptions};
use fieldrelay::sample::{Sample, Value};
use tokio_util::sync::CancellationToken;

const ROWS: i64 = 27;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emqx_serverless_profile_paces_the_backlog_drain() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(dir.path());
    let mut sub = Subscriber::connect(broker.port, "profile-sub", &["fieldrelay/pace/#"]).await;
    // The uplink's settings as `check` resolves them from the file.
    let text = format!(
        "gateway: {{id: pace-gw, data_dir: /unused}}
uplink:
  url: mqtt://127.0.0.1:{port}
  topic_prefix: fieldrelay/pace
  broker: emqx_serverless
  reconnect_initial: 100ms
  reconnect_max: 500ms
buses: [{{name: plc1, type: tcp, host: h}}]
devices: [{{name: boiler, bus: plc1, points: [{{name: counter, table: holding, address: 0, type: u16}}]}}]
",
        port = broker.port
    );
    let config = fieldrelay::config::load_str(&text, "pace.yaml")
        .expect("a valid configuration")
        .uplink;
    assert_eq!(config.broker, Broker::EmqxServerless);
    assert_eq!(config.drain_rate(), Some(9));
    // The backlog is committed before the uplink exists.
    let (queue, _live, writer) =
        Queue::open(&dir.path().join("data"), QueueOptions::default()).expect("open the queue");
    let (device, point): (Arc<str>, Arc<str>) = ("boiler".into(), "counter".into());
    for i in 0..ROWS {
        let sample = Sample {
            device: device.clone(),
            point: point.clone(),
            value: Value::Int(i),
            ts_ms: fieldrelay::sample::now_ms(),
            qos: Qos::AtLeastOnce,
            retain: false,
        };
        queue.push(sample).await.unwrap();
    }
    let mut progress = queue.progress();
    progress
        .wait_for(|p| p.last_seq >= ROWS as u64)
        .await
        .unwrap();

    let cancel = CancellationToken::new();
    let (_unused, live) = tokio::sync::mpsc::channel(1);
    let started = Instant::now();
    let uplink = fieldrelay::uplink::Uplink {
        config: config.clone(),
        dialer: fieldrelay::uplink::dialer(&config).unwrap(),
        queue: queue.clone(),
        live: fieldrelay::queue::LiveReceiver { rx: live },
        inbound: None,
        presence: fieldrelay::uplink::Presence::fixed(fieldrelay::sample::now_ms()),
        state: tokio::sync::watch::channel(fieldrelay::uplink::LinkState::default()).0,
        stats: Default::default(),
    };
    let task = tokio::spawn(uplink.run(cancel.clone()));
    let topic = "fieldrelay/pace/boiler/counter";
    sub.until("the whole backlog", Duration::from_secs(30), |seen| {
        seen.iter().filter(|m| m.topic == topic).count() >= ROWS as usize
    })
    .await;
    let elapsed = started.elapsed();
    let values: Vec<i64> = sub
        .on(topic)
        .iter()
        .filter_map(|m| m.payload["value"].as_i64())
        .collect();
    assert_eq!(values, (0..ROWS).collect::<Vec<_>>(), "every row, in order");
    // 9 tokens at once, then 9 per second.
    let least = Duration::from_secs_f64((ROWS - 9) as f64 / 9.0);
    assert!(
        elapsed >= least,
        "{ROWS} rows drained in {elapsed:?}, faster than the profile's 9/s allow ({least:?})"
    );
    cancel.cancel();
    task.await.unwrap();
    writer.close().await.unwrap();
}
