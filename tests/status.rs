//! Status certificates, device status and health reports (issue 5) with real parts: the
//! `fieldrelay` binary, a simulated Modbus TCP device (our simulator, in this process), a real
//! mosquitto with persistence and a real SQLite queue file.
//!
//! Every wait is for an observable event (a message at a subscriber, a row in the queue file);
//! deadlines are generous because other suites share the machine.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{config_head, start_simulator, wait_until, Gateway, Message, Mosquitto, Subscriber};
use fieldrelay::queue::{Entry, MessageKind, QueueReader};
use serde_json::Value;

const DEADLINE: Duration = Duration::from_secs(60);
const STATUS: &str = "fieldrelay/test-gw/status";
const DEVICE_STATUS: &str = "fieldrelay/test-gw/boiler/status";

/// One device `boiler` (unit 1) with `points`; `uplink_extra` is appended to the uplink section.
fn write_config(dir: &Path, broker: u16, device: u16, uplink_extra: &str, points: &str) -> PathBuf {
    let path = dir.join("gateway.yaml");
    let text = config_head(&dir.join("data"), broker, device, uplink_extra)
        + "devices:
  - name: boiler
    bus: plc1
    poll_interval: 50ms
    backoff_max: 500ms
    offline_after: 2
    points:
" + points;
    std::fs::write(&path, text).expect("write config");
    path
}

const POINTS: &str = "      - {name: temperature, table: input, address: 0, type: i16, unit: °C}
      - {name: setpoint, table: holding, address: 0, type: u16, writable: true, min: 5, max: 90}
";

fn births(seen: &[Message]) -> Vec<&Value> {
    seen.iter()
        .filter(|m| m.topic == STATUS && m.payload["status"] == "online")
        .map(|m| &m.payload)
        .collect()
}

/// The birth after every connect carries the device map and the start time; a broker restart
/// brings a new birth (new `ts`, same `started`); a reload that changes the map republishes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn birth_after_each_reconnect_and_after_a_reload() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Mosquitto::start(dir.path());
    let (_regs, device, _sim) = start_simulator().await;
    let config = write_config(dir.path(), broker.port, device, "", POINTS);
    let mut sub = Subscriber::connect(broker.port, "st-birth", &[STATUS]).await;
    let gateway = Gateway::start(&config);
    sub.until("the birth", DEADLINE, |seen| !births(seen).is_empty())
        .await;
    let first = births(&sub.seen)[0].clone();
    assert_eq!(first["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(
        first["devices"],
        serde_json::json!([{"name": "boiler", "bus": "plc1", "points": [
            {"name": "temperature", "type": "i16", "unit": "°C"},
            {"name": "setpoint", "type": "u16", "writable": true, "min": 5.0, "max": 90.0},
        ]}])
    );
    let started = first["started"].as_i64().unwrap();
    assert!(started <= first["ts"].as_i64().unwrap());

    broker.restart();
    let first_ts = first["ts"].as_i64();
    sub.until("a birth of the new connection", DEADLINE, |seen| {
        births(seen).iter().any(|b| b["ts"].as_i64() > first_ts)
    })
    .await;
    let second = births(&sub.seen)
        .into_iter()
        .find(|b| b["ts"].as_i64() > first_ts)
        .unwrap()
        .clone();
    assert_eq!(
        second["started"], first["started"],
        "a reconnect, not a restart"
    );

    let more = format!("{POINTS}      - {{name: run, table: coil, address: 0, type: bool}}\n");
    write_config(dir.path(), broker.port, device, "", &more);
    gateway.hangup();
    sub.until("a birth with the new point", DEADLINE, |seen| {
        births(seen).iter().any(|b| {
            b["devices"][0]["points"]
                .as_array()
                .is_some_and(|p| p.len() == 3)
        })
    })
    .await;
}

fn device_statuses(seen: &[Message]) -> Vec<&Value> {
    seen.iter()
        .filter(|m| m.topic == DEVICE_STATUS)
        .map(|m| &m.payload)
        .collect()
}

fn queued_offline(data_dir: &Path) -> bool {
    let Ok(rows) = QueueReader::open(data_dir).and_then(|r| r.entries()) else {
        return false;
    };
    rows.iter().any(|row| {
        matches!(&row.entry, Entry::Message(m)
            if m.kind == MessageKind::DeviceStatus && m.payload.contains("offline"))
    })
}

/// online at the first good poll; offline after `offline_after` failed polls, reported after a
/// WAN outage once the link returns (through the durable queue, retained); online again at the
/// first good poll. The health report follows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_offline_during_an_outage_is_reported_when_the_link_returns() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Mosquitto::start(dir.path());
    let (regs, device, _sim) = start_simulator().await;
    let config = write_config(
        dir.path(),
        broker.port,
        device,
        "  health_interval: 1s\n",
        POINTS,
    );
    let health = "fieldrelay/test-gw/health";
    // Rows a broker refused for good, kept from an earlier run: the report says so.
    common::queued::seed_rejected(&dir.path().join("data"), 2, 0x87).await;
    let mut sub = Subscriber::connect(broker.port, "st-device", &[DEVICE_STATUS, health]).await;
    let gateway = Gateway::start(&config);
    sub.until("online", DEADLINE, |seen| {
        device_statuses(seen)
            .iter()
            .any(|p| p["status"] == "online")
    })
    .await;
    // A report built before the status was reported says `null`; wait for one that knows.
    sub.until("a health report with the online device", DEADLINE, |seen| {
        seen.iter()
            .any(|m| m.topic == health && m.payload["devices"]["boiler"]["status"] == "online")
    })
    .await;
    let report = &sub.on(health).last().unwrap().payload;
    assert!(
        report["devices"]["boiler"]["polls"].as_u64() > Some(0),
        "{report}"
    );
    assert!(report["queue"]["depth"].is_u64(), "{report}");
    assert_eq!(report["queue"]["rejected"], 2, "{report}");
    assert_eq!(
        report["queue"]["rejected_reasons"],
        serde_json::json!({"not_authorized": 2}),
        "{report}"
    );
    assert!(
        report["uplink"]["connections"].as_u64() >= Some(1),
        "{report}"
    );

    broker.stop();
    regs.set_silent(1, true);
    let data = dir.path().join("data");
    tokio::task::spawn_blocking(move || {
        wait_until("the offline status committed", DEADLINE, || {
            queued_offline(&data)
        })
    })
    .await
    .unwrap();
    broker.restart();
    sub.until("offline after the outage", DEADLINE, |seen| {
        device_statuses(seen)
            .iter()
            .any(|p| p["status"] == "offline")
    })
    .await;
    let offline = device_statuses(&sub.seen)
        .into_iter()
        .find(|p| p["status"] == "offline")
        .unwrap()
        .clone();
    assert!(
        offline["error"]
            .as_str()
            .is_some_and(|e| e.contains("timed out")),
        "{offline}"
    );
    assert!(
        offline["seq"].as_u64() > Some(0),
        "queued: it carries its seq"
    );
    // The log line says the same in plain words: `error=timed out …`, not a Rust `Some("…")`.
    let log = gateway.log();
    let line = log
        .lines()
        .find(|l| l.contains("device status: offline"))
        .unwrap_or_else(|| panic!("no offline line in:\n{log}"));
    assert!(line.contains("error=timed out"), "{line}");
    assert!(!line.contains("Some("), "{line}");
    regs.set_silent(1, false);
    sub.until("online again", DEADLINE, |seen| {
        device_statuses(seen)
            .iter()
            .skip_while(|p| p["status"] != "offline")
            .any(|p| p["status"] == "online")
    })
    .await;
    // Retained: a late subscriber sees the current status at once.
    let mut late = Subscriber::connect(broker.port, "st-device-late", &[DEVICE_STATUS]).await;
    late.until("the retained status", DEADLINE, |seen| !seen.is_empty())
        .await;
    assert!(late.seen[0].retain);
    assert_eq!(late.seen[0].payload["status"], "online");
}

/// `uplink.status.offline: clear`: the Last Will of a `kill -9` is an empty retained message,
/// which deletes the retained status: a client connecting later finds none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clear_mode_last_will_deletes_the_retained_status() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(dir.path());
    let (_regs, device, _sim) = start_simulator().await;
    let config = write_config(
        dir.path(),
        broker.port,
        device,
        "  status: {offline: clear}\n",
        POINTS,
    );
    let mut sub = Subscriber::connect(broker.port, "st-clear", &[STATUS]).await;
    let mut gateway = Gateway::start(&config);
    sub.until("the birth", DEADLINE, |seen| !births(seen).is_empty())
        .await;
    gateway.kill9();
    sub.until("the empty Last Will", DEADLINE, |seen| {
        seen.iter()
            .any(|m| m.payload == Value::String(String::new()))
    })
    .await;

    // A late subscriber to everything gets every retained message at once, before a message
    // published after its subscription: the fence. No status may come before it.
    let fence = "fieldrelay/test-gw/fence";
    let mut late = Subscriber::connect(broker.port, "st-clear-late", &["fieldrelay/#"]).await;
    let publish_fence = || {
        std::process::Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &broker.port.to_string()])
            .args(["-q", "1", "-t", fence, "-m", "{}"])
            .status()
            .expect("run mosquitto_pub")
    };
    // The subscription may not be live yet: publish the fence until it arrives.
    while !late
        .try_until(Duration::from_millis(500), |seen| {
            seen.iter().any(|m| m.topic == fence)
        })
        .await
    {
        assert!(publish_fence().success());
    }
    assert!(
        late.on(STATUS).is_empty(),
        "a retained status survived: {:?}",
        late.on(STATUS)
    );
}
