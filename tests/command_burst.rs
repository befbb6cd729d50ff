//! A burst of commands against real parts: a publisher (rumqttc, a client we did not write)
//! sends thousands of QoS 1 commands as fast as a real mosquitto takes them; the `fieldrelay`
//! binary commits them to its command inbox, carries them out on our Modbus simulator and
//! answers each on `…/set/result`. mosquitto 2.0.11 sends a subscriber hundreds of
//! unacknowledged messages at once (mosquitto #2301), which is what the inbox is for.
//!
//! What is checked where it happens: every result on the broker, every write at the device
//! (the simulator's register write log), every connection in the broker's log.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{connects_of, publish_burst, start_simulator, Gateway, Mosquitto, Subscriber};
use fieldrelay::sample::now_ms;
use serde_json::{json, Value};

const P: &str = "fieldrelay/test-gw";
const DEADLINE: Duration = Duration::from_secs(180);
/// Writable one-register points at holding addresses 0..POINTS.
const POINTS: u16 = 4;

/// The common test gateway, with [`POINTS`] writable registers, a point with a maximum, and a
/// command age limit no loaded machine reaches.
fn write_config(dir: &Path, broker: u16, device: u16) -> PathBuf {
    let points: String = (0..POINTS)
        .map(|i| {
            format!(
                "      - {{name: p{i}, table: holding, address: {i}, type: u16, writable: true}}\n"
            )
        })
        .collect();
    let points = format!(
        "{points}      - {{name: limited, table: holding, address: 10, type: u16, writable: true, max: 90}}\n"
    );
    let path = common::write_config(dir, broker, device, &points);
    let mut text = std::fs::read_to_string(&path).expect("read the config");
    text.push_str("commands:\n  max_age: 1h\n");
    std::fs::write(&path, text).expect("write the config");
    path
}

/// One command of the burst and the result code it must get.
struct Sent {
    topic: String,
    payload: String,
    id: String,
    code: &'static str,
}

/// A mixed burst: valid writes (each point's values increasing in send order), values out of
/// range, wrong types, unknown points, expired ones, and repeats of earlier ids.
fn mixed_burst(n: usize) -> Vec<Sent> {
    let now = now_ms();
    let mut next_value = [0u16; POINTS as usize];
    let mut sent: Vec<Sent> = Vec::with_capacity(n);
    for i in 0..n {
        let id = format!("c{i}");
        let point = (i / 10) % usize::from(POINTS);
        let (topic, payload, code) = match i % 10 {
            0..=4 => {
                next_value[point] += 1;
                let value = next_value[point];
                (
                    format!("boiler/p{point}/set"),
                    format!(r#"{{"id":"{id}","value":{value},"ts":{now}}}"#),
                    "ok",
                )
            }
            5 => (
                "boiler/limited/set".to_owned(),
                format!(r#"{{"id":"{id}","value":{},"ts":{now}}}"#, 100 + i),
                "out_of_range",
            ),
            6 => (
                format!("boiler/p{point}/set"),
                format!(r#"{{"id":"{id}","value":"warm","ts":{now}}}"#),
                "bad_payload",
            ),
            7 => (
                format!("boiler/nope{i}/set"),
                format!(r#"{{"id":"{id}","value":1,"ts":{now}}}"#),
                "unknown_point",
            ),
            8 => (
                format!("boiler/p{point}/set"),
                format!(r#"{{"id":"{id}","value":1,"ts":{}}}"#, now - 2 * 3_600_000),
                "expired",
            ),
            _ => {
                // A sender repeating an earlier command (same topic, payload and id).
                let earlier = &sent[i - 9];
                let (topic, payload, id) = (
                    earlier.topic.clone(),
                    earlier.payload.clone(),
                    earlier.id.clone(),
                );
                sent.push(Sent {
                    topic,
                    payload,
                    id,
                    code: "ok",
                });
                continue;
            }
        };
        sent.push(Sent {
            topic: format!("{P}/{topic}"),
            payload,
            id,
            code,
        });
    }
    sent
}

/// Results per id (de-duplicated by `seq`: a result resent by the queue is the same result).
fn results_by_id(seen: &[common::Message]) -> HashMap<String, Vec<Value>> {
    let mut by_id: HashMap<String, BTreeMap<u64, Value>> = HashMap::new();
    for m in seen.iter().filter(|m| m.topic.ends_with("/set/result")) {
        if let (Some(id), Some(seq)) = (m.payload["id"].as_str(), m.payload["seq"].as_u64()) {
            by_id
                .entry(id.to_owned())
                .or_default()
                .insert(seq, m.payload.clone());
        }
    }
    by_id
        .into_iter()
        .map(|(id, results)| (id, results.into_values().collect()))
        .collect()
}

/// The values written to each point's register, in the order they reached the device.
fn writes_per_point(regs: &fieldrelay::simulator::Registers) -> BTreeMap<u16, Vec<u16>> {
    let mut per_point: BTreeMap<u16, Vec<u16>> = BTreeMap::new();
    for (address, words) in regs.register_writes(1) {
        per_point.entry(address).or_default().extend(words);
    }
    per_point
}

/// Each point got exactly the values of the commands answered `ok`, each once, in the order
/// they were sent.
fn assert_written_once_in_order(
    regs: &fieldrelay::simulator::Registers,
    sent: &[Sent],
    results: &HashMap<String, Vec<Value>>,
) {
    let mut expected: BTreeMap<u16, Vec<u16>> = BTreeMap::new();
    let mut seen_ids = std::collections::HashSet::new();
    for s in sent.iter().filter(|s| results[&s.id][0]["ok"] == true) {
        if !seen_ids.insert(&s.id) {
            continue; // a repeat: not written again
        }
        let point: u16 = s.topic.rsplit('/').nth(1).unwrap()[1..].parse().unwrap();
        let value: Value = serde_json::from_str(&s.payload).unwrap();
        expected
            .entry(point)
            .or_default()
            .push(value["value"].as_u64().unwrap() as u16);
    }
    assert_eq!(
        writes_per_point(regs),
        expected,
        "each point must get its values once each, in send order"
    );
}

async fn start(name: &str) -> (tempfile::TempDir, Mosquitto, PathBuf, Subscriber) {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(dir.path());
    let sub = Subscriber::connect(broker.port, name, &[&format!("{P}/+/+/set/result")]).await;
    (dir, broker, PathBuf::new(), sub)
}

/// Waits until the gateway answers a probe (its subscription is live).
async fn until_subscribed(broker: u16, sub: &mut Subscriber) {
    for n in 0.. {
        let id = format!("probe{n}");
        publish_burst(
            broker,
            "prober",
            vec![(
                format!("{P}/boiler/temperature/set"),
                format!(r#"{{"id":"{id}","value":1}}"#),
            )],
        )
        .await;
        let answered = sub
            .try_until(Duration::from_millis(500), |seen| {
                seen.iter().any(|m| m.payload["id"] == json!(id))
            })
            .await;
        if answered {
            return;
        }
        assert!(n < 120, "the gateway never answered a command");
    }
}

/// The Done-when of the inbox: 5,000 mixed QoS 1 commands in one burst. Every command gets
/// exactly one result with its code (a repeated id: the same answer again, once per delivery),
/// every write reaches the device once and in send order per point, and the gateway keeps one
/// connection throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_mixed_commands_is_answered_once_each_in_order_on_one_connection() {
    let (dir, broker, _, mut sub) = start("burst-results").await;
    let (regs, device, _sim) = start_simulator().await;
    let config = write_config(dir.path(), broker.port, device);
    let gateway = Gateway::start(&config);
    until_subscribed(broker.port, &mut sub).await;
    let connects = connects_of(dir.path(), "test-gw");

    let sent = mixed_burst(5000);
    let messages = sent
        .iter()
        .map(|s| (s.topic.clone(), s.payload.clone()))
        .collect();
    publish_burst(broker.port, "burst", messages).await;
    let mut per_id: HashMap<&str, usize> = HashMap::new();
    for s in &sent {
        *per_id.entry(&s.id).or_default() += 1;
    }
    // Counted as they come (rebuilding the map per message would be quadratic).
    let mut counted = 0;
    let mut results = 0;
    sub.until("a result for every command", DEADLINE, |seen| {
        results += seen[counted..]
            .iter()
            .filter(|m| {
                m.payload["id"]
                    .as_str()
                    .is_some_and(|id| id.starts_with('c'))
            })
            .count();
        counted = seen.len();
        results >= sent.len()
    })
    .await;

    let got = results_by_id(&sub.seen);
    for s in &sent {
        let results = &got[&s.id];
        assert_eq!(
            results.len(),
            per_id[s.id.as_str()],
            "{}: one result per delivery, got {results:?}",
            s.id
        );
        for result in results {
            let code = if result["ok"] == true {
                "ok"
            } else {
                result["error"].as_str().unwrap_or("?")
            };
            assert_eq!(code, s.code, "{} ({}): {result}", s.id, s.payload);
        }
        if results.len() > 1 {
            let strip = |v: &Value| {
                let mut v = v.clone();
                v.as_object_mut().unwrap().remove("seq");
                v
            };
            assert_eq!(
                strip(&results[0]),
                strip(&results[1]),
                "the same answer again"
            );
        }
    }
    assert_written_once_in_order(&regs, &sent, &got);
    assert_eq!(
        connects_of(dir.path(), "test-gw"),
        connects,
        "the gateway reconnected during the burst"
    );
    assert!(
        !gateway.log().contains("uplink connection lost"),
        "{}",
        gateway.log()
    );
}

/// `kill -9` in the middle of a burst: every command the gateway had acknowledged to the broker
/// is in its inbox and is carried out after the restart; those it had not are redelivered by
/// the broker and recognised. Nothing is lost, nothing written twice, every id answered once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_during_a_burst_loses_no_acknowledged_command() {
    let (dir, broker, _, mut sub) = start("burst-kill").await;
    let (regs, device, _sim) = start_simulator().await;
    let config = write_config(dir.path(), broker.port, device);
    let mut gateway = Gateway::start(&config);
    until_subscribed(broker.port, &mut sub).await;

    let now = now_ms();
    let sent: Vec<Sent> = (0..2000)
        .map(|i| {
            let point = i % usize::from(POINTS);
            let value = i / usize::from(POINTS) + 1;
            Sent {
                topic: format!("{P}/boiler/p{point}/set"),
                payload: format!(r#"{{"id":"k{i}","value":{value},"ts":{now}}}"#),
                id: format!("k{i}"),
                code: "ok",
            }
        })
        .collect();
    let messages = sent
        .iter()
        .map(|s| (s.topic.clone(), s.payload.clone()))
        .collect();
    publish_burst(broker.port, "burst", messages).await;
    // Killed while the burst streams in: some commands are in the inbox, some on their way.
    gateway.restart_after_kill9();
    let mut answered = std::collections::HashSet::new();
    let mut counted = 0;
    sub.until("a result for every command", DEADLINE, |seen| {
        for m in &seen[counted..] {
            if let Some(id) = m.payload["id"].as_str().filter(|id| id.starts_with('k')) {
                answered.insert(id.to_owned());
            }
        }
        counted = seen.len();
        answered.len() >= sent.len()
    })
    .await;

    // Every command is answered once: `ok`, or — for the one whose write was under way at the
    // kill and had not reached the device — `device_error`, never written again.
    let got = results_by_id(&sub.seen);
    let mut interrupted = Vec::new();
    for s in &sent {
        let results = &got[&s.id];
        assert_eq!(results.len(), 1, "{}: {results:?}", s.id);
        if results[0]["ok"] != true {
            assert_eq!(results[0]["error"], "device_error", "{}", results[0]);
            assert!(
                results[0]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("does not write it twice")),
                "{}",
                results[0]
            );
            interrupted.push(&s.id);
        }
    }
    assert!(interrupted.len() <= 1, "interrupted: {interrupted:?}");
    assert_written_once_in_order(&regs, &sent, &got);
    assert!(
        connects_of(dir.path(), "test-gw") >= 2,
        "the restart reconnected"
    );
}
