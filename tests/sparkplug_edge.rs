//! The `sparkplug` uplink profile against a real mosquitto, refereed by a host application we
//! did not write the codec of (tests/peers/sparkplug_host.py on pysparkplug 0.6.1): the real
//! `fieldrelay` binary reads our Modbus simulator and is a Sparkplug B 3.0 edge node. Checks
//! name the Sparkplug TCK assertion ids.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::sparkplug::{decode_with_tahu_js, hex_decode, is_event, start_host, LinePeer};
use common::{config_head, start_simulator, wait_until, Gateway, Mosquitto};
use fieldrelay::simulator::Registers;
use fieldrelay::sparkplug::proto::Payload;
use prost::Message as _;
use serde_json::{json, Value as Json};

const WAIT: Duration = Duration::from_secs(20);
const GROUP: &str = "plant1";
const EDGE: &str = "gw01";

/// A gateway config: the `sparkplug` profile with `sparkplug` extra keys (indented by four),
/// device `boiler` (unit 1: `counter` u16 at holding 0, `temp` u16 scaled at holding 2 with a
/// unit, `valve` a writable coil, `setpoint` a writable u16 with a range) and device `pump`
/// (unit 2: `speed` u16 at holding 0, `max_age: 1s`).
fn write_config(dir: &Path, broker: u16, device: u16, sparkplug: &str) -> std::path::PathBuf {
    let uplink = format!(
        "  profile: sparkplug\n  sparkplug:\n    group_id: {GROUP}\n    edge_node_id: {EDGE}\n{sparkplug}"
    );
    let text = config_head(&dir.join("data"), broker, device, &uplink)
        + "devices:
  - name: boiler
    bus: plc1
    unit_id: 1
    poll_interval: 50ms
    offline_after: 2
    points:
      - {name: counter, table: holding, address: 0, type: u16, qos: 1, publish: on_change}
      - {name: temp, table: holding, address: 2, type: u16, scale: 0.5, unit: degC, qos: 1, publish: on_change}
      - {name: valve, table: coil, address: 0, type: bool, qos: 1, publish: on_change, writable: true}
      - {name: setpoint, table: holding, address: 4, type: u16, qos: 1, publish: on_change, writable: true, min: 0, max: 100}
  - name: pump
    bus: plc1
    unit_id: 2
    poll_interval: 50ms
    offline_after: 2
    points:
      - {name: speed, table: holding, address: 0, type: u16, qos: 1, publish: on_change, max_age: 1s}
";
    let path = dir.join("gateway.yaml");
    std::fs::write(&path, text).expect("write config");
    path
}

fn message<'a>(record: &'a Json, kind: &str) -> Option<&'a Json> {
    is_event(record, "message", &[("type", json!(kind))]).then_some(record)
}

/// The raw protobuf of a recorded message.
fn raw(record: &Json) -> Payload {
    Payload::decode(hex_decode(record["raw"].as_str().expect("raw")).as_slice())
        .expect("a protobuf payload")
}

/// The metric named `name` of a decoded (by pysparkplug) message.
fn metric<'a>(record: &'a Json, name: &str) -> &'a Json {
    record["decoded"]["metrics"]
        .as_array()
        .and_then(|metrics| metrics.iter().find(|m| m["name"] == name))
        .unwrap_or_else(|| panic!("no metric {name} in {record}"))
}

/// Waits for a DDATA of `device` whose `point` has `value`; returns it.
fn ddata_with(host: &mut LinePeer, from: usize, device: &str, point: &str, value: Json) -> Json {
    host.wait_from(
        from,
        &format!("DDATA {device}/{point} = {value}"),
        WAIT,
        |r| {
            message(r, "DDATA").is_some()
                && r["device"] == device
                && r["decoded"]["metrics"]
                    .as_array()
                    .is_some_and(|ms| ms.iter().any(|m| m["name"] == point && m["value"] == value))
        },
    )
}

fn no_violations(host: &mut LinePeer) {
    let bad = host.count(|r| {
        matches!(
            r["event"].as_str(),
            Some("violation" | "error" | "gap" | "out_of_session")
        )
    });
    assert_eq!(bad, 0, "host saw violations:\n{:#?}", host.seen);
}

fn mosquitto_log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("mosquitto.log")).unwrap_or_default()
}

async fn simulator() -> (Registers, u16, tokio_util::sync::CancellationToken) {
    let (regs, port, cancel) = start_simulator().await;
    regs.set_holding(1, 0, &[0]);
    regs.set_holding(1, 2, &[40]);
    regs.set_coil(1, 0, &[false]);
    regs.set_holding(2, 0, &[7]);
    (regs, port, cancel)
}

/// A running set-up: mosquitto, the simulator, the host `scada1`, the gateway on the sparkplug
/// profile (with `extra` sparkplug keys) after the host saw its node come online.
struct Rig {
    dir: tempfile::TempDir,
    data: std::path::PathBuf,
    broker: Mosquitto,
    regs: Registers,
    _sim: tokio_util::sync::CancellationToken,
    host: LinePeer,
    config: std::path::PathBuf,
    gateway: Gateway,
}

async fn rig(extra: &str) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(dir.path());
    let (regs, device, sim) = simulator().await;
    let mut host = start_host(broker.port, "scada1");
    let config = write_config(dir.path(), broker.port, device, extra);
    let gateway = Gateway::start(&config);
    host.wait_for("node online", WAIT, |r| r["event"] == "node_online");
    Rig {
        data: dir.path().join("data"),
        dir,
        broker,
        regs,
        _sim: sim,
        host,
        config,
        gateway,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_node_session_births_data_deaths_and_bdseq_across_restarts() {
    let Rig {
        dir,
        regs,
        mut host,
        config,
        mut gateway,
        data: _data,
        broker: _broker,
        _sim,
    } = rig("").await;

    // 1. Clean session, will = NDEATH QoS 1 not retained
    // (principles-persistence-clean-session-311, message-flow-edge-node-birth-publish-will-message-qos,
    // ...-will-message-will-retained).
    let online = host.wait_for("node online", WAIT, |r| r["event"] == "node_online");
    assert_eq!(online["bd_seq"], 0, "first CONNECT has bdSeq 0");
    let log = mosquitto_log(dir.path());
    assert!(
        log.contains(" as test-gw (p2, c1, k5)"),
        "clean session:\n{log}"
    );
    assert!(
        log.contains("Will message specified") && log.contains("(r0, q1)"),
        "will QoS 1, not retained:\n{log}"
    );
    assert!(
        log.contains(&format!("spBv1.0/{GROUP}/NDEATH/{EDGE}")),
        "will topic:\n{log}"
    );

    // 3. NCMD and DCMD/+ subscribed at QoS 1 before the NBIRTH (message-flow-edge-node-ncmd-subscribe).
    let subscribe = log
        .find("Received SUBSCRIBE from test-gw")
        .expect("a SUBSCRIBE");
    let nbirth_at = log
        .find(&format!("'spBv1.0/{GROUP}/NBIRTH/{EDGE}'"))
        .expect("an NBIRTH");
    assert!(subscribe < nbirth_at, "SUBSCRIBE before NBIRTH");
    assert!(
        log.contains(&format!("spBv1.0/{GROUP}/NCMD/{EDGE} (QoS 1)")),
        "{log}"
    );
    assert!(
        log.contains(&format!("spBv1.0/{GROUP}/DCMD/{EDGE}/+ (QoS 1)")),
        "{log}"
    );

    // 4. NBIRTH first, QoS 0, not retained, seq 0, timestamped, node metrics and Rebirth false
    // (topics-nbirth-seq-num, payloads-nbirth-rebirth-req, topics-nbirth-bdseq-matching).
    let nbirth = host
        .wait_for("NBIRTH", WAIT, |r| message(r, "NBIRTH").is_some())
        .clone();
    assert_eq!(
        (nbirth["qos"].as_u64(), nbirth["retain"].as_bool()),
        (Some(0), Some(false))
    );
    assert_eq!(nbirth["decoded"]["seq"], 0);
    assert!(nbirth["decoded"]["timestamp"].as_u64().is_some());
    assert_eq!(metric(&nbirth, "bdSeq")["value"], 0);
    assert_eq!(metric(&nbirth, "Node Control/Rebirth")["value"], false);
    assert!(metric(&nbirth, "Node Control/Rebirth")["alias"].is_null());
    for name in [
        "Queue/Depth",
        "Queue/Oldest Age",
        "Uplink/Connects",
        "Properties/Software Version",
    ] {
        assert!(
            metric(&nbirth, name)["datatype"].as_u64().is_some(),
            "{name} has a datatype"
        );
    }
    assert!(
        nbirth["decoded"]["payload_error"].is_null(),
        "pysparkplug reads the NBIRTH"
    );

    // 5. A DBIRTH per device before any data, every metric with name, alias, datatype, value
    // (payloads-dbirth-order).
    let first_data = host.seen.iter().position(|r| message(r, "DDATA").is_some());
    let boiler = host
        .wait_for("DBIRTH boiler", WAIT, |r| {
            message(r, "DBIRTH").is_some() && r["device"] == "boiler"
        })
        .clone();
    let pump = host
        .wait_for("DBIRTH pump", WAIT, |r| {
            message(r, "DBIRTH").is_some() && r["device"] == "pump"
        })
        .clone();
    let births_at = host
        .seen
        .iter()
        .rposition(|r| message(r, "DBIRTH").is_some())
        .unwrap();
    assert!(
        first_data.is_none_or(|at| at > births_at),
        "no DDATA before the DBIRTHs"
    );
    for m in boiler["decoded"]["metrics"].as_array().unwrap() {
        assert!(
            m["alias"].as_u64().is_some() && m["datatype"].as_u64().is_some(),
            "{m}"
        );
    }
    assert_eq!(
        metric(&boiler, "temp")["properties"]["engUnit"]["value"],
        "degC"
    );
    assert_eq!(
        metric(&boiler, "valve")["properties"]["readOnly"]["value"],
        false
    );
    assert_eq!(
        metric(&boiler, "counter")["properties"]["readOnly"]["value"],
        true
    );
    assert!(metric(&pump, "speed")["alias"].as_u64().is_some());

    // 7. DDATA: QoS 0, not retained, changed metrics only, alias only, timestamps, no datatype.
    let mark = host.seen.len();
    for value in 1..=5u16 {
        regs.set_holding(1, 0, &[value]);
        let data = ddata_with(&mut host, mark, "boiler", "counter", json!(value));
        assert_eq!(
            (data["qos"].as_u64(), data["retain"].as_bool()),
            (Some(0), Some(false))
        );
        let payload = raw(&data);
        assert_eq!(payload.metrics.len(), 1, "only the changed metric");
        let m = &payload.metrics[0];
        assert!(m.name.is_none() && m.alias.is_some(), "alias only: {m:?}");
        assert!(m.datatype.is_none() && m.timestamp.is_some(), "{m:?}");
    }

    // A second decoder we did not write (npm sparkplug-payload, Tahu's JavaScript codec)
    // reads the wire bytes of the births and the data alike.
    let last = host
        .seen
        .iter()
        .rev()
        .find(|r| message(r, "DDATA").is_some() && r["device"] == "boiler")
        .cloned()
        .expect("a DDATA");
    let replies = decode_with_tahu_js(&[
        json!({"type": "NBIRTH", "payload": nbirth["raw"]}),
        json!({"type": "DBIRTH", "payload": boiler["raw"]}),
        json!({"type": "DDATA", "payload": last["raw"], "birth": boiler["raw"]}),
    ]);
    for reply in &replies {
        assert_eq!(reply["ok"], true, "{reply}");
    }
    let js_names: Vec<&Json> = replies[1]["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| &m["name"])
        .collect();
    assert_eq!(
        js_names,
        [
            &json!("counter"),
            &json!("temp"),
            &json!("valve"),
            &json!("setpoint")
        ]
    );
    assert_eq!(replies[2]["metrics"][0]["value"], 5);

    // 8. A device that stops answering gets a DDEATH; back, a DBIRTH with current values
    // before its next DDATA.
    regs.set_silent(2, true);
    let mark = host.seen.len();
    host.wait_from(mark, "DDEATH pump", WAIT, |r| {
        message(r, "DDEATH").is_some() && r["device"] == "pump"
    });
    regs.set_holding(2, 0, &[9]);
    regs.set_silent(2, false);
    let rebirth = host
        .wait_from(mark, "DBIRTH pump again", WAIT, |r| {
            message(r, "DBIRTH").is_some() && r["device"] == "pump"
        })
        .clone();
    let speed = metric(&rebirth, "speed")["value"].clone();
    assert!(
        speed == 7 || speed == 9,
        "current value in the DBIRTH: {speed}"
    );
    ddata_with(&mut host, mark, "pump", "speed", json!(9));

    // 6. seq +1 over every message: the host reports any gap.
    no_violations(&mut host);

    // 12. Graceful stop: NDEATH (QoS 1, bdSeq only, no seq) before DISCONNECT
    // (operational-behavior-edge-node-intentional-disconnect-ndeath).
    let status = gateway.terminate(Duration::from_secs(10));
    assert!(status.success(), "{status:?}");
    let dead = host.wait_for("node offline", WAIT, |r| r["event"] == "node_offline");
    assert_eq!(dead["bd_seq"], 0);
    let ndeath = host
        .wait_for("NDEATH", WAIT, |r| message(r, "NDEATH").is_some())
        .clone();
    assert_eq!(
        (ndeath["qos"].as_u64(), ndeath["retain"].as_bool()),
        (Some(1), Some(false))
    );
    let payload = raw(&ndeath);
    assert!(payload.seq.is_none(), "NDEATH carries no seq");
    assert_eq!(payload.metrics.len(), 1);
    assert_eq!(payload.metrics[0].name.as_deref(), Some("bdSeq"));
    let log = mosquitto_log(dir.path());
    let ndeath_at = log
        .rfind(&format!(
            "Received PUBLISH from test-gw (d0, q1, r0, m2, 'spBv1.0/{GROUP}/NDEATH/{EDGE}'"
        ))
        .expect("NDEATH published");
    let disconnect_at = log
        .rfind("Received DISCONNECT from test-gw")
        .expect("DISCONNECT");
    assert!(ndeath_at < disconnect_at);

    // 2. bdSeq +1 per CONNECT across a restart and a kill -9 (topics-nbirth-bdseq-increment);
    // the will of each connection carries its NBIRTH's bdSeq.
    let mut gateway = Gateway::start(&config);
    let mark = host.seen.len();
    let online = host.wait_from(mark, "node online again", WAIT, |r| {
        r["event"] == "node_online"
    });
    assert_eq!(online["bd_seq"], 1);
    gateway.kill9();
    let dead = host.wait_from(mark, "the will", WAIT, |r| r["event"] == "node_offline");
    assert_eq!(dead["bd_seq"], 1, "the will carries the NBIRTH's bdSeq");
    let mut gateway = Gateway::start(&config);
    let online = host.wait_from(mark, "node online after kill -9", WAIT, |r| {
        r["event"] == "node_online" && r["bd_seq"] != 1
    });
    assert_eq!(online["bd_seq"], 2);
    no_violations(&mut host);
    gateway.terminate(Duration::from_secs(10));
}

/// Every `counter` value the hosts received: (value, metric timestamp, is_historical).
fn counter_values(hosts: &mut [&mut LinePeer]) -> Vec<(u64, u64, bool)> {
    let mut values = Vec::new();
    for host in hosts.iter_mut() {
        host.count(|_| false);
        for record in &host.seen {
            if message(record, "DDATA").is_none() || record["device"] != "boiler" {
                continue;
            }
            for m in record["decoded"]["metrics"]
                .as_array()
                .into_iter()
                .flatten()
            {
                if m["name"] == "counter" {
                    values.push((
                        m["value"].as_u64().expect("a counter value"),
                        m["timestamp"].as_u64().expect("a timestamp"),
                        m["is_historical"].as_bool().unwrap_or(false),
                    ));
                }
            }
        }
    }
    values
}

/// Every value 1..=`last` arrived; one arrival of each may be live, any repeat is historical
/// with the same timestamp (a historian stores it once).
fn assert_every_value_once(values: &[(u64, u64, bool)], last: u64) {
    for value in 1..=last {
        let arrivals: Vec<_> = values.iter().filter(|(v, _, _)| *v == value).collect();
        assert!(
            !arrivals.is_empty(),
            "value {value} never reached a host: {values:?}"
        );
        let live = arrivals
            .iter()
            .filter(|(_, _, historical)| !historical)
            .count();
        assert!(live <= 1, "value {value} arrived live twice: {arrivals:?}");
        assert!(
            arrivals.iter().all(|(_, ts, _)| *ts == arrivals[0].1),
            "repeats of {value} carry the same timestamp: {arrivals:?}"
        );
    }
}

/// Values of `counter` committed in the queue file now (read-only, beside the gateway).
fn committed(data_dir: &Path) -> Vec<i64> {
    let Ok(rows) = fieldrelay::queue::read_only_rows(data_dir) else {
        return Vec::new();
    };
    rows.into_iter()
        .filter(|row| &*row.sample.point == "counter")
        .filter_map(|row| match row.sample.value {
            fieldrelay::sample::Value::Int(v) => Some(v),
            _ => None,
        })
        .collect()
}

/// Sets the counter to each of `values`, waiting until each is committed to the queue file.
fn commit_each(regs: &Registers, data_dir: &Path, values: std::ops::RangeInclusive<u16>) {
    for value in values {
        regs.set_holding(1, 0, &[value]);
        wait_until(&format!("counter {value} committed"), WAIT, || {
            committed(data_dir).contains(&i64::from(value))
        });
    }
}

/// Sets the counter to each of `values`, waiting until the host received each live.
fn send_each(regs: &Registers, host: &mut LinePeer, values: std::ops::RangeInclusive<u16>) {
    let mark = host.seen.len();
    for value in values {
        regs.set_holding(1, 0, &[value]);
        ddata_with(host, mark, "boiler", "counter", json!(value));
    }
}

/// Drop test (item 13): DDATA written to the socket just before the link dies are not lost.
/// The broker is frozen (SIGSTOP: it reads nothing), a burst of values is committed and written
/// to the connection, then the broker is SIGKILLed with the burst unread. The gateway deleted
/// none of it (no PINGRESP came), so after the recovery the host gets every value of the burst,
/// as history with the original timestamps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_written_just_before_the_broker_dies_reaches_the_host_as_history() {
    let Rig {
        data,
        mut broker,
        regs,
        mut host,
        mut gateway,
        dir: _dir,
        _sim,
        config: _config,
    } = rig("    primary_host_id: scada1\n").await;
    send_each(&regs, &mut host, 1..=3);

    broker.pause();
    commit_each(&regs, &data, 4..=13);
    // The gateway wrote the burst to the socket (the broker read none of it).
    wait_until("the burst written", WAIT, || {
        gateway.log().matches("sparkplug data written").count() >= 1
    });
    broker.kill9();
    host.kill9();
    wait_until("the drop noticed", WAIT, || {
        gateway
            .log()
            .contains("stay queued and go out again as history")
    });
    broker.start_forgetting();
    let mut host2 = start_host(broker.port, "scada1");
    host2.wait_for("node online", WAIT, |r| r["event"] == "node_online");
    ddata_with(&mut host2, 0, "boiler", "counter", json!(13));
    send_each(&regs, &mut host2, 14..=15);

    assert!(
        gateway
            .log()
            .contains("stay queued and go out again as history"),
        "the burst was written and not confirmed when the link died"
    );
    let values = counter_values(&mut [&mut host, &mut host2]);
    assert_every_value_once(&values, 15);
    for (value, _, historical) in &values {
        if (4..=13).contains(value) {
            assert!(
                *historical,
                "burst value {value} came back as history: {values:?}"
            );
        }
    }
    no_violations(&mut host2);
    gateway.terminate(Duration::from_secs(10));
}

/// Outage test (item 13): the broker is down, the gateway is `kill -9`ed meanwhile and
/// restarted, the broker comes back: every value reaches the host once live or as history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_with_a_kill9_loses_no_value() {
    let Rig {
        data,
        mut broker,
        regs,
        mut host,
        config,
        mut gateway,
        dir: _dir,
        _sim,
    } = rig("    primary_host_id: scada1\n    flush_max_metrics: 3\n").await;
    send_each(&regs, &mut host, 1..=3);

    broker.stop();
    host.kill9();
    commit_each(&regs, &data, 4..=8);
    gateway.kill9();
    let mut gateway = Gateway::start(&config);
    commit_each(&regs, &data, 9..=12);
    broker.start_forgetting();
    let mut host2 = start_host(broker.port, "scada1");
    let online = host2.wait_for("node online", WAIT, |r| r["event"] == "node_online");
    // A new bdSeq per CONNECT written, the dead run's included (kept in queue.db); the refused
    // dials while the broker was down (several) took none. 3 when a redial reached the broker
    // while it was shutting down.
    let bd_seq = online["bd_seq"].as_u64().expect("bdSeq");
    assert!((2..=3).contains(&bd_seq), "{online}");
    ddata_with(&mut host2, 0, "boiler", "counter", json!(12));
    send_each(&regs, &mut host2, 13..=14);

    let values = counter_values(&mut [&mut host, &mut host2]);
    assert_every_value_once(&values, 14);
    // History is cut at flush_max_metrics per message, oldest first.
    let history: Vec<&Json> = host2
        .seen
        .iter()
        .filter(|r| message(r, "DDATA").is_some())
        .filter(|r| r["decoded"]["metrics"][0]["is_historical"] == true)
        .collect();
    assert!(history
        .iter()
        .all(|r| r["decoded"]["metrics"].as_array().unwrap().len() <= 3));
    no_violations(&mut host2);
    gateway.terminate(Duration::from_secs(10));
}

fn records_after(host: &LinePeer, from: usize) -> impl Iterator<Item = &Json> {
    host.seen.iter().skip(from)
}

/// STATE test (item 11, message-flow-edge-node-birth-publish-phid-wait, …-phid-offline): no
/// birth before the primary host is online; its offline STATE ends the session (NDEATH); while
/// it is offline nothing is published and everything is kept; back online: births, the offline
/// period as history, then live. An offline STATE older than the online one is ignored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primary_host_state_gates_births_and_data() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let broker = Mosquitto::start(dir.path());
    let (regs, device, _sim) = simulator().await;
    let config = write_config(
        dir.path(),
        broker.port,
        device,
        "    primary_host_id: scada1\n  health_interval: 1s\n",
    );
    let mut gateway = Gateway::start(&config);
    wait_until("the gateway waiting for the host", WAIT, || {
        gateway
            .log()
            .contains("waiting for the primary host's online STATE")
    });
    commit_each(&regs, &data, 1..=2);
    let published = |dir: &Path| {
        mosquitto_log(dir)
            .matches("Received PUBLISH from test-gw")
            .count()
    };
    assert_eq!(
        published(dir.path()),
        0,
        "nothing before the host is online"
    );

    let mut host = start_host(broker.port, "scada1");
    host.wait_for("node online", WAIT, |r| r["event"] == "node_online");
    ddata_with(&mut host, 0, "boiler", "counter", json!(2));
    send_each(&regs, &mut host, 3..=4);

    // A stale offline STATE (older than the online one) changes nothing.
    let stale = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &broker.port.to_string()])
        .args(["-t", "spBv1.0/STATE/scada1", "-q", "1"])
        .args(["-m", r#"{"online":false,"timestamp":1}"#])
        .status()
        .expect("run mosquitto_pub");
    assert!(stale.success());
    send_each(&regs, &mut host, 5..=5);
    assert_eq!(host.count(|r| r["event"] == "node_offline"), 0);

    // Host offline: NDEATH, reconnect, silence; every sample kept.
    let mark = gateway.log_mark();
    host.send(&json!({"cmd": "offline"}));
    wait_until("the NDEATH for the offline host", WAIT, || {
        gateway.log_since(mark).contains("primary host offline")
    });
    wait_until("the gateway waiting again", WAIT, || {
        gateway
            .log_since(mark)
            .contains("waiting for the primary host's online STATE")
    });
    let ndeath = format!("'spBv1.0/{GROUP}/NDEATH/{EDGE}'");
    assert!(mosquitto_log(dir.path()).contains(&ndeath));
    let before = published(dir.path());
    commit_each(&regs, &data, 6..=9);
    assert_eq!(
        published(dir.path()),
        before,
        "nothing published while the host is offline"
    );

    // Host online again: births, the offline period as history, then live.
    let mark = host.seen.len();
    host.send(&json!({"cmd": "online"}));
    host.wait_from(mark, "node online again", WAIT, |r| {
        r["event"] == "node_online"
    });
    ddata_with(&mut host, mark, "boiler", "counter", json!(9));
    send_each(&regs, &mut host, 10..=11);
    let after: Vec<&Json> = records_after(&host, mark)
        .filter(|r| message(r, "DDATA").is_some() && r["device"] == "boiler")
        .collect();
    let historical: Vec<bool> = after
        .iter()
        .map(|r| r["decoded"]["metrics"][0]["is_historical"] == true)
        .collect();
    let first_live = historical.iter().position(|h| !h).expect("live data");
    assert!(first_live > 0, "history first: {after:?}");
    assert!(
        historical[first_live..].iter().all(|h| !h),
        "then live only: {after:?}"
    );
    let values = counter_values(&mut [&mut host]);
    assert_every_value_once(&values, 11);
    // The health figures: in the NBIRTH, then NDATA when they change (the backlog drained).
    let nbirth = records_after(&host, mark)
        .find(|r| message(r, "NBIRTH").is_some())
        .cloned()
        .expect("an NBIRTH");
    let depth_at_birth = metric(&nbirth, "Queue/Depth")["value"].as_u64().unwrap();
    assert!(
        depth_at_birth >= 4,
        "the offline period was queued: {nbirth}"
    );
    let ndata = host.wait_from(mark, "NDATA with the queue depth", WAIT, |r| {
        message(r, "NDATA").is_some()
            && r["decoded"]["metrics"]
                .as_array()
                .is_some_and(|ms| ms.iter().any(|m| m["name"] == "Queue/Depth"))
    });
    assert!(metric(&ndata, "Queue/Depth")["value"].as_u64().unwrap() < depth_at_birth);
    no_violations(&mut host);
    gateway.terminate(Duration::from_secs(10));
}

/// Rebirth (item 9, operational-behavior-edge-node-rebirth): an NCMD `Node Control/Rebirth`
/// makes the node publish NBIRTH (same bdSeq, seq 0) and every DBIRTH without reconnecting;
/// requests in a burst are coalesced into one rebirth (at most one per 5 s: these come within
/// 5 s of the connection's births, so it goes out at the end of that interval).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebirth_request_republishes_births_without_reconnecting() {
    let Rig {
        dir,
        regs,
        mut host,
        mut gateway,
        data: _data,
        broker: _broker,
        _sim,
        config: _config,
    } = rig("").await;
    send_each(&regs, &mut host, 1..=1);
    let connects = common::connects_of(dir.path(), "test-gw");

    let mark = host.seen.len();
    let rebirth = json!({"cmd": "rebirth", "group": GROUP, "edge": EDGE});
    for _ in 0..3 {
        host.send(&rebirth);
    }
    let nbirth = host
        .wait_from(mark, "NBIRTH again", WAIT, |r| {
            message(r, "NBIRTH").is_some()
        })
        .clone();
    assert_eq!(nbirth["decoded"]["seq"], 0);
    assert_eq!(metric(&nbirth, "bdSeq")["value"], 0, "same bdSeq");
    host.wait_from(mark, "DBIRTH boiler again", WAIT, |r| {
        message(r, "DBIRTH").is_some() && r["device"] == "boiler"
    });
    host.wait_from(mark, "DBIRTH pump again", WAIT, |r| {
        message(r, "DBIRTH").is_some() && r["device"] == "pump"
    });
    send_each(&regs, &mut host, 2..=2);
    let nbirths = records_after(&host, mark)
        .filter(|r| message(r, "NBIRTH").is_some())
        .count();
    assert_eq!(nbirths, 1, "three requests in a burst, one rebirth");
    assert_eq!(
        common::connects_of(dir.path(), "test-gw"),
        connects,
        "no reconnect"
    );
    no_violations(&mut host);
    gateway.terminate(Duration::from_secs(10));
}

/// DCMD (item 10): writes go through the command pipeline — a read-only point and a value out
/// of range are refused and logged, nothing is written; a good write by name and one by alias
/// reach the device, and the host sees the new values in DDATA.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dcmd_writes_go_through_the_command_pipeline() {
    let Rig {
        regs,
        mut host,
        mut gateway,
        dir: _dir,
        data: _data,
        broker: _broker,
        _sim,
        config: _config,
    } = rig("").await;
    let boiler = host
        .wait_for("DBIRTH boiler", WAIT, |r| {
            message(r, "DBIRTH").is_some() && r["device"] == "boiler"
        })
        .clone();
    let setpoint_alias = metric(&boiler, "setpoint")["alias"].clone();
    let dcmd = |metrics: Json| json!({"cmd": "dcmd", "group": GROUP, "edge": EDGE, "device": "boiler", "metrics": metrics});

    let mark = gateway.log_mark();
    host.send(&dcmd(
        json!([{"name": "counter", "datatype": "UINT16", "value": 3}]),
    ));
    host.send(&dcmd(
        json!([{"name": "setpoint", "datatype": "UINT16", "value": 500}]),
    ));
    host.send(&dcmd(
        json!([{"name": "valve", "datatype": "BOOLEAN", "value": true}]),
    ));
    let from = host.seen.len();
    ddata_with(
        &mut host,
        from.saturating_sub(20),
        "boiler",
        "valve",
        json!(true),
    );
    host.send(&dcmd(
        json!([{"alias": setpoint_alias, "datatype": "UINT16", "value": 42}]),
    ));
    ddata_with(
        &mut host,
        from.saturating_sub(20),
        "boiler",
        "setpoint",
        json!(42),
    );
    assert_eq!(regs.holding(1, 4, 1), [42]);
    let log = gateway.log_since(mark);
    assert!(
        log.contains("point=counter") && log.contains("not_writable"),
        "{log}"
    );
    assert!(log.contains("out_of_range"), "{log}");
    assert_eq!(
        regs.holding(1, 0, 1),
        [0],
        "the read-only point was not written"
    );
    no_violations(&mut host);
    gateway.terminate(Duration::from_secs(10));
}

/// A queued row that no longer decodes is skipped (and left in the file), and one past its
/// point's `max_age` is dropped unsent, as the JSON profile does: the rows after them flow, the
/// connection is not torn down for them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_and_expired_history_rows_are_not_sent_and_the_rest_flows() {
    let Rig {
        data,
        mut broker,
        regs,
        mut host,
        config,
        mut gateway,
        dir: _dir,
        _sim,
    } = rig("    primary_host_id: scada1\n").await;
    send_each(&regs, &mut host, 1..=2);
    broker.stop();
    host.kill9();
    commit_each(&regs, &data, 3..=5);
    regs.set_holding(2, 0, &[11]);
    wait_until("speed 11 committed", WAIT, || {
        fieldrelay::queue::read_only_rows(&data).is_ok_and(|rows| {
            rows.iter().any(|r| {
                &*r.sample.point == "speed" && r.sample.value == fieldrelay::sample::Value::Int(11)
            })
        })
    });
    gateway.kill9();
    let rows = fieldrelay::queue::read_only_rows(&data).expect("read the queue");
    let bad = rows
        .iter()
        .find(|r| {
            &*r.sample.point == "counter" && r.sample.value == fieldrelay::sample::Value::Int(4)
        })
        .expect("counter 4 queued")
        .seq;
    let db = rusqlite::Connection::open(data.join("queue.db")).expect("open queue.db");
    let changed = db
        .execute(
            "UPDATE messages SET body = 'null' WHERE seq = ?1",
            [bad as i64],
        )
        .expect("corrupt one row");
    assert_eq!(changed, 1);
    drop(db);

    // Past speed's max_age (1 s) before the gateway can send it; the device reads 12 by then.
    std::thread::sleep(Duration::from_millis(1200));
    regs.set_holding(2, 0, &[12]);
    let mark = gateway.log_mark();
    let mut gateway = Gateway::start(&config);
    broker.start_forgetting();
    let mut host2 = start_host(broker.port, "scada1");
    ddata_with(&mut host2, 0, "boiler", "counter", json!(5));
    send_each(&regs, &mut host2, 6..=6);
    ddata_with(&mut host2, 0, "pump", "speed", json!(12));
    let values: Vec<u64> = counter_values(&mut [&mut host, &mut host2])
        .into_iter()
        .map(|(v, _, _)| v)
        .collect();
    assert!(values.contains(&3) && !values.contains(&4), "{values:?}");
    let expired_sent = host2.count(|r| {
        message(r, "DDATA").is_some()
            && r["device"] == "pump"
            && r["decoded"]["metrics"][0]["value"] == 11
    });
    assert_eq!(expired_sent, 0, "speed 11 expired in the queue");
    let log = gateway.log_since(mark);
    assert!(log.contains("skipping an undecodable queue row"), "{log}");
    let connects = log.matches("sparkplug uplink connected").count();
    assert_eq!(connects, 1, "no reconnect for it");
    no_violations(&mut host2);
    gateway.terminate(Duration::from_secs(10));
}
