//! Commands (issue 5) with real parts: commands sent with `mosquitto_pub` (a client we did not
//! write) through a real mosquitto with persistence to the `fieldrelay` binary, written to our
//! simulator, answered on `P/<device>/<point>/set/result`; the queue is a real SQLite file.
//!
//! The simulator counts the write requests each unit receives, so "written once" is checked at
//! the device, not inferred from the answers.
//!
//! `kill -9` between the write and the answer: the test holds SQLite's write lock on the queue
//! file from the moment the write reaches the simulator (its write hook runs before the reply
//! leaves), so the gateway cannot commit the answer before it is killed. That is a real
//! condition (a slow or locked disk), not a test-only code path in the gateway.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{config_head, connects_of, start_simulator, Gateway, Message, Mosquitto, Subscriber};
use fieldrelay::sample::now_ms;
use fieldrelay::simulator::Registers;
use serde_json::{json, Value};
use tokio_modbus::ExceptionCode;
use tokio_util::sync::CancellationToken;

const DEADLINE: Duration = Duration::from_secs(60);
const P: &str = "fieldrelay/test-gw";

/// boiler (unit 1, writable points), deaf (unit 2: acknowledges writes it ignores), gone
/// (unit 3: silent).
fn write_config(dir: &Path, broker: u16, device: u16) -> PathBuf {
    let path = dir.join("gateway.yaml");
    let text = config_head(&dir.join("data"), broker, device, "")
        + "devices:
  - name: boiler
    bus: plc1
    unit_id: 1
    poll_interval: 50ms
    points:
      - {name: setpoint, table: holding, address: 0, type: f32, writable: true, min: 5, max: 90}
      - {name: mode, table: holding, address: 2, type: u16, writable: true, verify: true}
      - {name: run, table: coil, address: 0, type: bool, writable: true}
      - {name: temperature, table: input, address: 0, type: i16, publish: every_poll}
  - name: deaf
    bus: plc1
    unit_id: 2
    poll_interval: 200ms
    points:
      - {name: v, table: holding, address: 0, type: u16, writable: true, verify: true}
  - name: gone
    bus: plc1
    unit_id: 3
    poll_interval: 200ms
    backoff_max: 1s
    offline_after: 1
    points:
      - {name: v, table: holding, address: 0, type: u16, writable: true}
";
    std::fs::write(&path, text).expect("write config");
    path
}

/// QoS 1 through `mosquitto_pub`, which returns after the broker's PUBACK.
fn publish(port: u16, topic: &str, payload: &str) {
    let status = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1"])
        .args(["-t", &format!("{P}/{topic}"), "-m", payload])
        .status()
        .expect("run mosquitto_pub (mosquitto-clients)");
    assert!(status.success());
}

fn results(seen: &[Message]) -> impl Iterator<Item = &Message> {
    seen.iter().filter(|m| m.topic.ends_with("/set/result"))
}

/// Waits for the result of command `id` and returns it.
async fn result_of(sub: &mut Subscriber, id: &str) -> Value {
    let wanted = json!(id);
    sub.until(&format!("the result of {id}"), DEADLINE, |seen| {
        results(seen).any(|m| m.payload["id"] == wanted)
    })
    .await;
    results(&sub.seen)
        .find(|m| m.payload["id"] == wanted)
        .map(|m| m.payload.clone())
        .unwrap()
}

fn f32_of(words: &[u16]) -> f32 {
    f32::from_bits((u32::from(words[0]) << 16) | u32::from(words[1]))
}

struct Rig {
    dir: tempfile::TempDir,
    broker: Mosquitto,
    regs: Registers,
    config: PathBuf,
    sub: Subscriber,
    _sim: CancellationToken,
}

impl Rig {
    /// Broker, device and subscriber; the gateway is not started yet.
    async fn prepare(name: &str) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let broker = Mosquitto::start(dir.path());
        let (regs, device, sim) = start_simulator().await;
        regs.set_silent(3, true);
        regs.set_ignore_writes(2, true);
        let config = write_config(dir.path(), broker.port, device);
        let sub = Subscriber::connect(
            broker.port,
            name,
            &[
                &format!("{P}/+/+/set/result"),
                &format!("{P}/+/status"),
                &format!("{P}/status"),
            ],
        )
        .await;
        Rig {
            dir,
            broker,
            regs,
            config,
            sub,
            _sim: sim,
        }
    }

    async fn start(name: &str) -> (Rig, Gateway) {
        let mut rig = Rig::prepare(name).await;
        let gateway = Gateway::start(&rig.config);
        // The gateway subscribes at every connect; a command sent before its first one is not
        // queued for it. Probe until a command is answered. A probe is refused (`not_writable`)
        // before it reaches the device, so one answered only after the loop ended (a loaded
        // machine) writes nothing: it cannot change the tests' write counts or fire a write
        // hook.
        let mut n = 0;
        loop {
            n += 1;
            let id = format!("probe{n}");
            rig.command(
                "boiler/temperature/set",
                &format!(r#"{{"id":"{id}","value":1}}"#),
            );
            let answered = rig
                .sub
                .try_until(Duration::from_millis(500), |seen| {
                    results(seen).any(|m| m.payload["id"] == json!(id))
                })
                .await;
            if answered {
                break;
            }
            assert!(n < 120, "the gateway never answered a command");
        }
        // And the boiler answers its polls, so commands to it reach it.
        rig.sub
            .until("the boiler online", DEADLINE, |seen| {
                seen.iter().any(|m| {
                    m.topic == format!("{P}/boiler/status") && m.payload["status"] == "online"
                })
            })
            .await;
        (rig, gateway)
    }

    fn command(&self, topic: &str, payload: &str) {
        publish(self.broker.port, topic, payload);
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }
}

/// Every class of bad input gets its error result, nothing is written for it, and the gateway
/// keeps polling; a good command (object or bare scalar) is written and answered with the value
/// the point now holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_bad_input_gets_its_error_and_polling_goes_on() {
    let (mut rig, _gateway) = Rig::start("cmd-errors").await;
    rig.sub
        .until("gone offline", DEADLINE, |seen| {
            seen.iter()
                .any(|m| m.topic == format!("{P}/gone/status") && m.payload["status"] == "offline")
        })
        .await;
    rig.regs.set_holding(1, 0, &[0x41A0, 0]); // 20.0
    let writes_before = rig.regs.write_count(1);
    let now = now_ms();
    let cases = [
        (
            "boiler/setpoint/set",
            r#"{"id":"e1","value":"hot"}"#,
            "bad_payload",
        ),
        (
            "boiler/setpoint/set",
            r#"{"id":"e2","value":21,"tss":5}"#,
            "bad_payload",
        ),
        ("boiler/run/set", r#"{"id":"e3","value":1}"#, "bad_payload"),
        (
            "boiler/nope/set",
            r#"{"id":"e4","value":1}"#,
            "unknown_point",
        ),
        (
            "nodevice/x/set",
            r#"{"id":"e5","value":1}"#,
            "unknown_point",
        ),
        (
            "boiler/temperature/set",
            r#"{"id":"e6","value":1}"#,
            "not_writable",
        ),
        (
            "boiler/setpoint/set",
            r#"{"id":"e7","value":95}"#,
            "out_of_range",
        ),
        (
            "boiler/mode/set",
            r#"{"id":"e8","value":70000}"#,
            "out_of_range",
        ),
        ("gone/v/set", r#"{"id":"e9","value":1}"#, "device_offline"),
        ("deaf/v/set", r#"{"id":"e10","value":7}"#, "verify_failed"),
    ];
    for (topic, payload, _) in &cases {
        rig.command(topic, payload);
    }
    let expired = format!(r#"{{"id":"old","value":30,"ts":{}}}"#, now - 120_000);
    rig.command("boiler/setpoint/set", &expired);
    for (topic, payload, code) in &cases {
        let id = serde_json::from_str::<Value>(payload).unwrap()["id"].clone();
        let result = result_of(&mut rig.sub, id.as_str().unwrap()).await;
        assert_eq!(result["ok"], false, "{topic}: {result}");
        assert_eq!(result["error"], *code, "{topic}: {result}");
        assert!(result["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let old = result_of(&mut rig.sub, "old").await;
    assert_eq!(old["error"], "expired", "{old}");
    // Malformed JSON has no id: its result says null, on the command's own topic.
    rig.command("boiler/mode/set", "{not json");
    rig.sub
        .until("the malformed command's result", DEADLINE, |seen| {
            results(seen).any(|m| {
                m.topic == format!("{P}/boiler/mode/set/result") && m.payload["id"].is_null()
            })
        })
        .await;
    let malformed = results(&rig.sub.seen)
        .find(|m| m.topic == format!("{P}/boiler/mode/set/result") && m.payload["id"].is_null())
        .unwrap();
    assert_eq!(malformed.payload["error"], "bad_payload");
    // Nothing was written to the boiler for any of them; the setpoint is untouched.
    assert_eq!(rig.regs.write_count(1), writes_before);
    assert_eq!(f32_of(&rig.regs.holding(1, 0, 2)), 20.0);
    // The deaf device got its write (and ignored it): verify caught that.
    assert_eq!(rig.regs.write_count(2), 1);

    // Good commands: an object with a fresh ts, and a bare scalar.
    let good = format!(r#"{{"id":"g1","value":21.5,"ts":{}}}"#, now_ms());
    rig.command("boiler/setpoint/set", &good);
    let done = result_of(&mut rig.sub, "g1").await;
    assert_eq!(done["ok"], true, "{done}");
    assert_eq!(done["value"], 21.5);
    assert!(
        done["seq"].as_u64() > Some(0),
        "queued results carry a seq: {done}"
    );
    assert_eq!(f32_of(&rig.regs.holding(1, 0, 2)), 21.5);
    rig.command("boiler/run/set", "true");
    rig.sub
        .until("the bare command's result", DEADLINE, |seen| {
            results(seen).any(|m| {
                m.topic == format!("{P}/boiler/run/set/result") && m.payload["id"].is_null()
            })
        })
        .await;
    assert_eq!(rig.regs.coils(1, 0, 1), [true]);

    // Polling goes on: a changed input register is published.
    let temperature = format!("{P}/boiler/temperature");
    let mut values =
        Subscriber::connect(rig.broker.port, "cmd-errors-values", &[&temperature]).await;
    rig.regs.set_input(1, 0, &[321]);
    values
        .until("the new temperature", DEADLINE, |seen| {
            seen.iter().any(|m| m.payload["value"] == 321)
        })
        .await;
}

/// A device that answers the write with a Modbus exception: `device_error`, nothing applied,
/// the device stays online and polled, and the next command is written (the refused one was
/// answered and acknowledged, so nothing holds the commands behind it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_refused_with_an_exception_is_a_device_error_and_polling_goes_on() {
    let (mut rig, _gateway) = Rig::start("cmd-exception").await;
    rig.regs.set_holding(1, 2, &[3]);
    rig.regs
        .set_write_exception(1, Some(ExceptionCode::IllegalDataValue));
    let before = rig.regs.write_count(1);
    rig.command("boiler/mode/set", r#"{"id":"x1","value":9}"#);
    let refused = result_of(&mut rig.sub, "x1").await;
    assert_eq!(refused["ok"], false, "{refused}");
    assert_eq!(refused["error"], "device_error", "{refused}");
    assert!(
        refused["message"]
            .as_str()
            .is_some_and(|m| m.contains("refused the write")),
        "{refused}"
    );
    assert_eq!(
        rig.regs.write_count(1),
        before + 1,
        "the write reached the device"
    );
    assert_eq!(rig.regs.holding(1, 2, 1), [3], "and was not applied");

    // Polling goes on: a changed input register is published.
    let temperature = format!("{P}/boiler/temperature");
    let mut values =
        Subscriber::connect(rig.broker.port, "cmd-exception-values", &[&temperature]).await;
    rig.regs.set_input(1, 0, &[-7i16 as u16]);
    values
        .until("the new temperature", DEADLINE, |seen| {
            seen.iter().any(|m| m.payload["value"] == -7)
        })
        .await;

    // The device accepts writes again: the next command is carried out.
    rig.regs.set_write_exception(1, None);
    rig.command("boiler/mode/set", r#"{"id":"x2","value":9}"#);
    let done = result_of(&mut rig.sub, "x2").await;
    assert_eq!(done["ok"], true, "{done}");
    assert_eq!(rig.regs.holding(1, 2, 1), [9]);
    // An exception is an answer: the device was never reported offline.
    assert!(
        !rig.sub
            .on(&format!("{P}/boiler/status"))
            .iter()
            .any(|m| m.payload["status"] == "offline"),
        "the boiler was reported offline"
    );
}

/// The same id twice (a sender repeating itself): one write, the same answer twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_command_id_twice_writes_once() {
    let (mut rig, _gateway) = Rig::start("cmd-dup").await;
    let before = rig.regs.write_count(1);
    rig.command("boiler/mode/set", r#"{"id":"twice","value":7}"#);
    let first = result_of(&mut rig.sub, "twice").await;
    assert_eq!(first["ok"], true, "{first}");
    assert_eq!(first["value"], 7);
    assert_eq!(rig.regs.write_count(1), before + 1);
    // Meanwhile someone else changed the register; the repeated command must not undo that.
    rig.regs.set_holding(1, 2, &[8]);
    rig.command("boiler/mode/set", r#"{"id":"twice","value":7}"#);
    rig.sub
        .until("the second answer", DEADLINE, |seen| {
            results(seen).filter(|m| m.payload["id"] == "twice").count() >= 2
        })
        .await;
    let answers: Vec<&Message> = results(&rig.sub.seen)
        .filter(|m| m.payload["id"] == "twice")
        .collect();
    let strip_seq = |v: &Value| {
        let mut v = v.clone();
        v.as_object_mut().unwrap().remove("seq");
        v
    };
    assert_eq!(
        strip_seq(&answers[0].payload),
        strip_seq(&answers[1].payload),
        "the same answer"
    );
    assert_eq!(rig.regs.write_count(1), before + 1, "written once");
    assert_eq!(rig.regs.holding(1, 2, 1), [8]);
}

/// A command published while the gateway is down waits in its persistent session and is
/// written and answered after it reconnects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_sent_while_the_gateway_is_down_is_written_after_it_reconnects() {
    let (mut rig, mut gateway) = Rig::start("cmd-late").await;
    let exit = tokio::task::spawn_blocking(move || gateway.terminate(Duration::from_secs(20)))
        .await
        .unwrap();
    assert!(exit.success(), "{exit:?}");
    let payload = format!(r#"{{"id":"late","value":42,"ts":{}}}"#, now_ms());
    rig.command("boiler/mode/set", &payload);
    assert_eq!(rig.regs.holding(1, 2, 1), [0], "not written while down");
    let _gateway = Gateway::start(&rig.config);
    let result = result_of(&mut rig.sub, "late").await;
    assert_eq!(result["ok"], true, "{result}");
    assert_eq!(result["value"], 42);
    assert_eq!(rig.regs.holding(1, 2, 1), [42]);
}

/// `kill -9` after the write reached the device and before the answer was committed: the
/// command was acknowledged to the broker when it entered the command inbox, so the broker does
/// not redeliver it; the restarted gateway finds it in the inbox, does not write it again and
/// answers from a read-back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_between_write_and_answer_redelivers_and_writes_once() {
    let (mut rig, mut gateway) = Rig::start("cmd-kill").await;
    let db = rig.data_dir().join("queue.db");
    let lock: Arc<Mutex<Option<rusqlite::Connection>>> = Arc::default();
    let (taken_tx, taken_rx) = std::sync::mpsc::channel();
    let hook_lock = lock.clone();
    rig.regs.set_write_hook(Some(Arc::new(move |unit| {
        if unit != 1 {
            return;
        }
        let conn = rusqlite::Connection::open(&db).expect("open the queue file");
        conn.busy_timeout(Duration::from_secs(30)).unwrap();
        conn.execute_batch("BEGIN IMMEDIATE")
            .expect("take the write lock");
        *hook_lock.lock().unwrap() = Some(conn);
        let _ = taken_tx.send(());
    })));
    let before = rig.regs.write_count(1);
    rig.command("boiler/mode/set", r#"{"id":"k9","value":55}"#);
    tokio::task::spawn_blocking(move || taken_rx.recv_timeout(DEADLINE))
        .await
        .unwrap()
        .expect("the write reached the device");
    rig.regs.set_write_hook(None);
    gateway.kill9();
    if let Some(conn) = lock.lock().unwrap().take() {
        conn.execute_batch("ROLLBACK").unwrap();
    }
    assert_eq!(rig.regs.holding(1, 2, 1), [55], "the write happened");
    // The broker publishes the Last Will once it has read the dead connection to its end, so
    // anything the gateway published before the kill reaches us before the will does.
    rig.sub
        .until("the Last Will", DEADLINE, |seen| {
            seen.iter().any(|m| {
                m.topic == format!("{P}/status") && m.payload["reason"] == "connection_lost"
            })
        })
        .await;
    assert!(
        !results(&rig.sub.seen).any(|m| m.payload["id"] == "k9"),
        "answered before the kill"
    );

    let _gateway = Gateway::start(&rig.config);
    let result = result_of(&mut rig.sub, "k9").await;
    assert_eq!(result["ok"], true, "{result}");
    assert_eq!(result["value"], 55);
    assert!(
        result["message"]
            .as_str()
            .is_some_and(|m| m.contains("does not write it twice")),
        "{result}"
    );
    assert_eq!(rig.regs.write_count(1), before + 1, "written once");
}

/// A command far over the packet limit (the issue's 1.1 MB) is read past unread: answered
/// `bad_payload` on its topic (no id: its payload was never read), acknowledged, and the
/// command behind it is carried out, all on the same connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_command_is_answered_and_read_past_without_a_reconnect() {
    let (mut rig, gateway) = Rig::start("cmd-oversize").await;
    let connects = connects_of(rig.dir.path(), "test-gw");
    let before = rig.regs.write_count(1);
    let big = rig.dir.path().join("big.json");
    let value = "1".repeat(1_100_000);
    std::fs::write(&big, format!(r#"{{"id":"big","value":{value}}}"#)).unwrap();
    let status = Command::new("mosquitto_pub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &rig.broker.port.to_string(),
            "-q",
            "1",
        ])
        .args(["-t", &format!("{P}/boiler/mode/set"), "-f"])
        .arg(&big)
        .status()
        .expect("run mosquitto_pub");
    assert!(status.success());
    rig.command("boiler/mode/set", r#"{"id":"after-big","value":5}"#);
    let after = result_of(&mut rig.sub, "after-big").await;
    assert_eq!(after["ok"], true, "{after}");
    let topic = format!("{P}/boiler/mode/set/result");
    let refused = results(&rig.sub.seen)
        .find(|m| m.topic == topic && m.payload["id"].is_null())
        .map(|m| m.payload.clone())
        .expect("the oversized command was answered before the next one");
    assert_eq!(refused["error"], "bad_payload", "{refused}");
    assert!(
        refused["message"]
            .as_str()
            .is_some_and(|m| m.contains("discarded unread")),
        "{refused}"
    );
    assert_eq!(
        rig.regs.write_count(1),
        before + 1,
        "only the small one written"
    );
    assert_eq!(
        connects_of(rig.dir.path(), "test-gw"),
        connects,
        "reconnected"
    );
    assert!(!gateway.log().contains("uplink connection lost"));
}

/// A retained command (here published before the gateway ever subscribed, so the broker hands
/// it over at subscribe with the retain flag) is never carried out: answered `retained`. With an
/// id it is answered once, and its copy at every later connect is dropped; a bare one (no id)
/// is answered at each connect. Nothing is written either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retained_command_is_refused_and_never_written() {
    let mut rig = Rig::prepare("cmd-retained").await;
    for (topic, payload) in [
        ("boiler/mode/set", r#"{"id":"r1","value":77}"#),
        ("boiler/setpoint/set", "66"),
    ] {
        let status = Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &rig.broker.port.to_string()])
            .args([
                "-q",
                "1",
                "-r",
                "-t",
                &format!("{P}/{topic}"),
                "-m",
                payload,
            ])
            .status()
            .expect("run mosquitto_pub");
        assert!(status.success());
    }
    let setpoint_results = format!("{P}/boiler/setpoint/set/result");
    let bare_answers = |seen: &[Message]| {
        results(seen)
            .filter(|m| m.topic == setpoint_results && m.payload["id"].is_null())
            .count()
    };
    for connect in 1..=2 {
        let mut gateway = Gateway::start(&rig.config);
        rig.sub
            .until("the bare retained command's answer", DEADLINE, |seen| {
                bare_answers(seen) >= connect
            })
            .await;
        let r1 = result_of(&mut rig.sub, "r1").await;
        assert_eq!(r1["error"], "retained", "{r1}");
        if connect == 2 {
            // The copy of r1 delivered at this connect was recognised (and not answered).
            let log = |gateway: &Gateway| gateway.log().contains("redelivered commands recognised");
            common::wait_until("r1's copy recognised", DEADLINE, || log(&gateway));
        }
        assert_eq!(
            results(&rig.sub.seen)
                .find(|m| m.topic == setpoint_results)
                .map(|m| m.payload["error"].clone()),
            Some(json!("retained"))
        );
        let exit = tokio::task::spawn_blocking(move || gateway.terminate(DEADLINE))
            .await
            .unwrap();
        assert!(exit.success(), "{exit:?}");
    }
    assert_eq!(
        results(&rig.sub.seen)
            .filter(|m| m.payload["id"] == "r1")
            .count(),
        1,
        "answered once per id"
    );
    assert_eq!(rig.regs.write_count(1), 0, "nothing written");
    assert_eq!(rig.regs.holding(1, 2, 1), [0]);
    assert_eq!(f32_of(&rig.regs.holding(1, 0, 2)), 0.0);
}
