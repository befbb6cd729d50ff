//! The test host application (tests/peers/sparkplug_host.py, on pysparkplug) works before it
//! referees the gateway: against a real mosquitto and a tiny edge node on pysparkplug's own
//! EdgeNode, it publishes its STATE as Sparkplug 3.0 asks, tracks seq and bdSeq, answers a seq
//! gap with one Rebirth NCMD, and tells a current NDEATH from a stale one.

mod common;

use std::process::Command;
use std::time::Duration;

use common::sparkplug::{is_event, peer_script, python, start_host, LinePeer};
use common::Mosquitto;
use serde_json::{json, Value as Json};

const WAIT: Duration = Duration::from_secs(15);

/// The retained message on `topic`, read by mosquitto_sub.
fn retained(port: u16, topic: &str) -> Json {
    let output = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-t", topic])
        .args(["-C", "1", "-W", "10", "--retained-only"])
        .output()
        .expect("run mosquitto_sub (mosquitto-clients, see scripts/test-deps.sh)");
    assert!(output.status.success(), "no retained message on {topic}");
    serde_json::from_slice(&output.stdout).expect("STATE is json")
}

fn message(host: &mut LinePeer, kind: &str, seq: u64) -> Json {
    host.wait_for(&format!("{kind} seq {seq}"), WAIT, |r| {
        is_event(r, "message", &[("type", json!(kind))]) && r["decoded"]["seq"] == seq
    })
}

#[test]
fn host_publishes_state_tracks_sequences_and_asks_for_a_rebirth_on_a_gap() {
    let dir = tempfile::tempdir().expect("temp dir");
    let broker = Mosquitto::start(dir.path());
    let mut host = start_host(broker.port, "scada1");

    // STATE: retained online with the timestamp of the host's connect (its will carries it too).
    let online = host.wait_for("online STATE", WAIT, |r| r["event"] == "state");
    let state = retained(broker.port, "spBv1.0/STATE/scada1");
    assert_eq!(state["online"], true);
    assert_eq!(state["timestamp"], online["timestamp"]);

    let mut edge_cmd = Command::new(python());
    edge_cmd
        .arg(peer_script("sparkplug_edge_node.py"))
        .args(["--port", &broker.port.to_string()]);
    let mut edge = LinePeer::spawn("edge node", edge_cmd);

    let birth = host.wait_for("node online", WAIT, |r| {
        is_event(
            r,
            "node_online",
            &[("group", json!("g1")), ("edge", json!("e1"))],
        )
    });
    assert_eq!(birth["bd_seq"], 0);
    message(&mut host, "NBIRTH", 0);
    message(&mut host, "DBIRTH", 1);

    edge.send(&json!({"cmd": "data", "value": 5}));
    let data = message(&mut host, "DDATA", 2);
    let metric = &data["decoded"]["metrics"][0];
    assert_eq!(
        (&metric["name"], &metric["value"]),
        (&json!("count"), &json!(5))
    );

    // A lost message: the host sees the gap and asks once for a rebirth.
    edge.send(&json!({"cmd": "gap"}));
    edge.send(&json!({"cmd": "data", "value": 6}));
    let gap = host.wait_for("a gap", WAIT, |r| r["event"] == "gap");
    assert_eq!((&gap["expected"], &gap["got"]), (&json!(3), &json!(4)));
    host.wait_for("a rebirth request", WAIT, |r| {
        r["event"] == "rebirth_requested"
    });
    let ncmd = edge.wait_for("the Rebirth NCMD", WAIT, |r| r["event"] == "ncmd");
    assert_eq!(ncmd["metrics"][0]["name"], "Node Control/Rebirth");
    assert_eq!(ncmd["metrics"][0]["value"], true);
    edge.send(&json!({"cmd": "data", "value": 7}));
    message(&mut host, "DDATA", 5);
    assert_eq!(host.count(|r| r["event"] == "gap"), 1);
    assert_eq!(host.count(|r| r["event"] == "rebirth_requested"), 1);

    // An NDEATH of another session does not end this one; the will of this one does.
    edge.send(&json!({"cmd": "ndeath", "bd_seq": 99}));
    let stale = host.wait_for("a stale NDEATH", WAIT, |r| r["event"] == "stale_ndeath");
    assert_eq!(
        (&stale["bd_seq"], &stale["current"]),
        (&json!(99), &json!(0))
    );
    edge.kill9();
    let dead = host.wait_for("node offline", WAIT, |r| r["event"] == "node_offline");
    assert_eq!(dead["bd_seq"], 0);
    assert_eq!(
        host.count(|r| r["event"] == "violation" || r["event"] == "error"),
        0
    );

    // Offline: the retained STATE says so, with the same timestamp as the online one.
    host.send(&json!({"cmd": "offline"}));
    host.wait_for("offline STATE", WAIT, |r| {
        is_event(r, "state", &[("online", json!(false))])
    });
    let state = retained(broker.port, "spBv1.0/STATE/scada1");
    assert_eq!(state["online"], false);
    assert_eq!(state["timestamp"], online["timestamp"]);
}
