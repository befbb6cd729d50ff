//! `uplink.batch: per_device` against a real mosquitto, driven through the `fieldrelay` binary.
//!
//! A queue file holds a backlog of committed QoS 1 rows of two devices, twenty rows per device
//! and poll, the devices' polls interleaved (as a gateway commits them). The gateway drains it
//! with `max_packet: 4096` into a persistent QoS 1 subscriber (rumqttc, a client we did not
//! write):
//! - the backlog goes as few messages on `P/<device>`, each carrying only its device's samples
//!   in `seq` order with their own point, value, `ts` and `seq`; every `seq` arrives exactly
//!   once; no message is larger than `max_packet`;
//! - `kill -9` three times mid-drain loses no sample: once the queue is empty, every `seq`
//!   reached the subscriber (duplicates allowed, same `seq`: the consumer's de-duplication rule).
//!
//! `per_device_compact`: a backlog of mixed values (floats, integers, bools, unicode strings and
//! point names), each row its own `ts`, each device's `seq`s with gaps, is decoded by a consumer
//! we did not write — `mosquitto_sub` piped into the Python reference decoder of
//! docs/interface.md, run as written there — which sees every `seq` exactly once with its own
//! point, value and `ts`.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::{wait_until, Gateway, Mosquitto, Subscriber};
use fieldrelay::config::Qos;
use fieldrelay::queue::{Queue, QueueOptions, QueueReader};
use fieldrelay::sample::{Sample, Value};
use tokio_util::sync::CancellationToken;

const PREFIX: &str = "fieldrelay/test-gw";
const DEVICES: [&str; 2] = ["boiler", "pump"];
const POINTS_PER_POLL: u64 = 20;
const TS0: i64 = 1_700_000_000_000;

/// Row `i` (seq `i + 1`): device and point by its place in the interleaved polls.
fn row(i: u64) -> Sample {
    let poll = i / POINTS_PER_POLL;
    Sample {
        device: Arc::from(DEVICES[(poll % 2) as usize]),
        point: Arc::from(format!("p{}", i % POINTS_PER_POLL).as_str()),
        value: Value::Float((i % 1000) as f64 / 8.0),
        ts_ms: TS0 + i as i64,
        qos: Qos::AtLeastOnce,
        retain: false,
    }
}

async fn fill(data: &Path, rows: u64, row: fn(u64) -> Sample) {
    let (queue, _live, writer) = Queue::open(data, QueueOptions::default()).expect("open queue");
    for i in 0..rows {
        queue.push(row(i)).await.expect("push");
    }
    queue
        .progress()
        .wait_for(|p| p.last_seq >= rows)
        .await
        .expect("commit");
    writer.close().await.expect("close queue");
}

fn depth(data: &Path) -> u64 {
    QueueReader::open(data)
        .and_then(|r| r.progress())
        .map(|p| p.depth)
        .expect("read the queue file")
}

async fn wait_empty(data: &Path) {
    let data = data.to_owned();
    tokio::task::spawn_blocking(move || {
        wait_until("the queue to drain", Duration::from_secs(120), || {
            depth(&data) == 0
        })
    })
    .await
    .unwrap();
}

struct Rig {
    _dir: tempfile::TempDir,
    data: PathBuf,
    config: PathBuf,
    broker: Mosquitto,
    sub: Subscriber,
    stop_sim: CancellationToken,
}

async fn rig(name: &str, rows: u64, uplink_keys: &str) -> Rig {
    rig_of(name, rows, row, uplink_keys).await
}

async fn rig_of(name: &str, rows: u64, row: fn(u64) -> Sample, uplink_keys: &str) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    fill(&data, rows, row).await;
    let broker = Mosquitto::start(dir.path());
    let mut sub = Subscriber::connect(broker.port, name, &[&format!("{PREFIX}/#")]).await;
    common::subscribed(&mut sub, broker.port, &format!("{PREFIX}/probe")).await;
    let (_regs, device, stop_sim) = common::start_simulator().await;
    // A QoS 0 point only: the backlog is all the queue holds.
    let config = common::write_config(
        dir.path(),
        broker.port,
        device,
        "      - {name: idle, table: holding, address: 0, type: u16, qos: 0}\n",
    );
    let text = std::fs::read_to_string(&config).unwrap();
    let text = text.replacen(
        "  reconnect_max: 500ms\n",
        &format!("  reconnect_max: 500ms\n{uplink_keys}"),
        1,
    );
    std::fs::write(&config, text).unwrap();
    Rig {
        _dir: dir,
        data,
        config,
        broker,
        sub,
        stop_sim,
    }
}

/// Every batch message seen: (device, its samples' `seq`s in message order).
fn batches(sub: &Subscriber) -> Vec<(String, Vec<u64>)> {
    sub.seen
        .iter()
        .filter_map(|m| {
            let device = m.topic.strip_prefix(&format!("{PREFIX}/"))?;
            if !DEVICES.contains(&device) {
                return None;
            }
            let samples = m.payload["samples"].as_array()?;
            let seqs = samples.iter().filter_map(|s| s["seq"].as_u64()).collect();
            Some((device.to_owned(), seqs))
        })
        .collect()
}

/// Reads what arrives until `rows` distinct `seq`s were seen (or a minute passed).
async fn all_seqs(sub: &mut Subscriber, rows: u64) -> BTreeSet<u64> {
    let mut distinct = BTreeSet::new();
    let mut read = 0;
    sub.try_until(Duration::from_secs(60), |seen| {
        for m in &seen[read..] {
            if let Some(samples) = m.payload["samples"].as_array() {
                distinct.extend(samples.iter().filter_map(|s| s["seq"].as_u64()));
            }
        }
        read = seen.len();
        distinct.len() as u64 >= rows
    })
    .await;
    distinct
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_of_two_devices_drains_as_few_messages_each_with_its_rows_seqs() {
    const ROWS: u64 = 2_000;
    const MAX_PACKET: usize = 4096;
    let mut rig = rig(
        "batch-backlog",
        ROWS,
        &format!("  batch: per_device\n  max_packet: {MAX_PACKET}\n"),
    )
    .await;
    let mut gateway = Gateway::start(&rig.config);
    wait_empty(&rig.data).await;
    let distinct = all_seqs(&mut rig.sub, ROWS).await;
    gateway.kill9();
    assert_eq!(distinct, (1..=ROWS).collect(), "every seq arrived");

    let batches = batches(&rig.sub);
    let total: usize = batches.iter().map(|(_, seqs)| seqs.len()).sum();
    assert_eq!(
        total as u64, ROWS,
        "every seq exactly once (no reconnect here)"
    );
    // ~70-byte samples in 4 KiB: dozens per message, against one message per sample.
    assert!(
        batches.len() as u64 <= ROWS / 20,
        "{} messages for {ROWS} samples",
        batches.len()
    );
    for (device, seqs) in &batches {
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "seq order: {seqs:?}");
        for seq in seqs {
            assert_eq!(
                *row(seq - 1).device,
                **device,
                "seq {seq} in {device}'s batch"
            );
        }
    }
    for m in rig
        .sub
        .seen
        .iter()
        .filter(|m| m.payload["samples"].is_array())
    {
        let bytes = m.topic.len() + m.payload.to_string().len() + 9;
        assert!(bytes <= MAX_PACKET, "a {bytes}-byte PUBLISH on {}", m.topic);
        for s in m.payload["samples"].as_array().unwrap() {
            let seq = s["seq"].as_u64().unwrap();
            let want = row(seq - 1);
            assert_eq!(s["ts"].as_i64(), Some(want.ts_ms), "ts of seq {seq}");
            assert_eq!(
                s["point"].as_str(),
                Some(&*want.point),
                "point of seq {seq}"
            );
            assert_eq!(s["value"].as_f64(), Some((seq - 1) as f64 % 1000.0 / 8.0));
        }
        assert_eq!(
            m.payload["ts"].as_i64(),
            m.payload["samples"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|s| s["ts"].as_i64())
                .max(),
            "the message's ts is its newest sample's"
        );
    }
    // No queued sample went on a per-point topic (the live QoS 0 `idle` point does, unbatched).
    let single =
        |m: &&common::Message| m.payload.get("seq").is_some() && m.payload.get("value").is_some();
    assert!(!rig.sub.seen.iter().any(|m| single(&m)));
    drop(rig.broker);
    rig.stop_sim.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_in_the_middle_of_a_batched_drain_loses_no_sample() {
    const ROWS: u64 = 10_000;
    // ~27 samples per message, 50 messages/s: a drain of several seconds to kill three times.
    let mut rig = rig(
        "batch-kill9",
        ROWS,
        "  batch: per_device\n  max_packet: 2048\n  max_rate: 50\n",
    )
    .await;
    let mut gateway = Gateway::start(&rig.config);
    for quarter in 1..=3u64 {
        let target = ROWS * (4 - quarter) / 4;
        let data = rig.data.clone();
        tokio::task::spawn_blocking(move || {
            wait_until(
                "a part of the backlog to drain",
                Duration::from_secs(120),
                || depth(&data) <= target,
            )
        })
        .await
        .unwrap();
        gateway.kill9();
        let left = depth(&rig.data);
        assert!(
            left > 0 && left <= target,
            "kill {quarter} was not mid-drain: {left} of {ROWS} rows left"
        );
        gateway = Gateway::start(&rig.config);
    }
    wait_empty(&rig.data).await;
    let distinct = all_seqs(&mut rig.sub, ROWS).await;
    gateway.kill9();
    let missing: Vec<u64> = (1..=ROWS).filter(|s| !distinct.contains(s)).collect();
    assert!(
        missing.is_empty(),
        "{} of {ROWS} committed rows never reached the subscriber: {:?}",
        missing.len(),
        &missing[..missing.len().min(20)]
    );
    let batches = batches(&rig.sub);
    assert!(
        batches.len() as u64 <= ROWS / 10,
        "{} messages for {ROWS} samples and their resends",
        batches.len()
    );
    rig.stop_sim.cancel();
}

/// Row `i` of the compact backlog: two devices' polls interleaved as in [`row`], the values
/// of every type and the point names not all ASCII.
fn mixed_row(i: u64) -> Sample {
    let value = match i % 4 {
        0 => Value::Float((i % 1000) as f64 / 8.0 - 3.0),
        1 => Value::Int(i as i64 * 7 - 500),
        2 => Value::Bool(i % 8 == 2),
        _ => Value::Str(format!("état \"{i}\" ✓").as_str().into()),
    };
    Sample {
        point: Arc::from(format!("température_{}", i % POINTS_PER_POLL).as_str()),
        value,
        ..row(i)
    }
}

/// The Python reference decoder of docs/interface.md, as written there.
fn documented_decoder() -> String {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/interface.md"))
        .expect("docs/interface.md");
    let start = doc
        .find("```python\ndef decode_compact")
        .expect("the reference decoder in docs/interface.md")
        + "```python\n".len();
    let len = doc[start..]
        .find("```")
        .expect("the end of the python block");
    doc[start..start + len].to_owned()
}

/// A consumer: `mosquitto_sub` (persistent session `client_id`, already subscribed) piped
/// into the documented decoder, de-duplicating by `seq` until `rows` distinct ones; prints
/// each sample as a JSON `[seq, point, value, ts]` line.
const CONSUMER: &str = r#"
import json, subprocess, sys
want, command = int(sys.argv[1]), sys.argv[2:]
sub = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, encoding="utf-8")
seen = {}
for line in sub.stdout:
    for point, value, ts, seq in decode_compact(json.loads(line)):
        seen.setdefault(seq, (point, value, ts))
    if len(seen) >= want:
        break
sub.kill()
for seq in sorted(seen):
    print(json.dumps([seq, *seen[seq]], ensure_ascii=False))
"#;

fn mosquitto_sub(port: u16, client_id: &str, exit_once_subscribed: bool) -> Vec<String> {
    let mut args: Vec<String> = ["mosquitto_sub", "-h", "127.0.0.1", "-p", &port.to_string()]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(["-q", "1", "-c", "-i", client_id].map(String::from));
    for device in DEVICES {
        args.extend(["-t".to_owned(), format!("{PREFIX}/{device}")]);
    }
    if exit_once_subscribed {
        args.push("-E".into());
    }
    args
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compact_backlog_decodes_with_the_documented_decoder_every_seq_once() {
    const ROWS: u64 = 2_000;
    const MAX_PACKET: usize = 4096;
    let mut rig = rig_of(
        "batch-compact",
        ROWS,
        mixed_row,
        &format!("  batch: per_device_compact\n  max_packet: {MAX_PACKET}\n"),
    )
    .await;
    // The consumer's persistent session exists before the gateway sends anything.
    let subscribe = mosquitto_sub(rig.broker.port, "compact-consumer", true);
    let status = std::process::Command::new(&subscribe[0])
        .args(&subscribe[1..])
        .status()
        .expect("mosquitto_sub");
    assert!(status.success(), "mosquitto_sub -E: {status}");
    let mut gateway = Gateway::start(&rig.config);
    wait_empty(&rig.data).await;

    let python = common::python::find("import json", "python3");
    let script = format!("{}\n{CONSUMER}", documented_decoder());
    let consume = mosquitto_sub(rig.broker.port, "compact-consumer", false);
    // `timeout`: a consumer that never sees every seq fails the test instead of hanging it.
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("timeout")
            .arg("60")
            .arg(python)
            .args(["-c", &script, &ROWS.to_string()])
            .args(&consume)
            .output()
            .expect("python3")
    })
    .await
    .unwrap();
    gateway.kill9();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .expect("utf-8")
        .lines()
        .map(|line| serde_json::from_str(line).expect("a decoded sample"))
        .collect();
    assert_eq!(lines.len() as u64, ROWS, "every seq once");
    for (line, seq) in lines.iter().zip(1..) {
        let want = mixed_row(seq - 1);
        let expected: serde_json::Value =
            serde_json::from_str(&want.value.to_json()).expect("value json");
        assert_eq!(line[0].as_u64(), Some(seq));
        assert_eq!(line[1].as_str(), Some(&*want.point), "point of seq {seq}");
        assert_eq!(line[2], expected, "value of seq {seq}");
        assert_eq!(line[3].as_i64(), Some(want.ts_ms), "ts of seq {seq}");
    }
    // Our own subscriber saw the same messages: each within max_packet (the planner sizes
    // them with the encoder), together far fewer than the samples.
    let mut decoded = 0;
    let mut read = 0;
    let mut sizes = Vec::new();
    rig.sub
        .try_until(Duration::from_secs(30), |seen| {
            for m in &seen[read..] {
                if m.payload.get("points").is_some() {
                    let payload = m.payload.to_string();
                    let samples = fieldrelay::uplink::compact::decode(payload.as_bytes());
                    decoded += samples.map_or(0, |s| s.len());
                    sizes.push(m.topic.len() + payload.len() + 9);
                }
            }
            read = seen.len();
            decoded >= ROWS as usize
        })
        .await;
    assert_eq!(decoded, ROWS as usize);
    assert!(sizes.iter().all(|&b| b <= MAX_PACKET), "{sizes:?}");
    assert!(sizes.len() as u64 <= ROWS / 100, "{} messages", sizes.len());
    rig.stop_sim.cancel();
}
