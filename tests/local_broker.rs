//! The local broker client (issue 6) against mosquitto running the shipped snippet and ACL
//! (`packaging/mosquitto/`), with on-site clients played by mosquitto_sub/mosquitto_pub (tools
//! we did not write) logged in as an HMI user, our simulator as the device and the `fieldrelay`
//! binary as the gateway.
//!
//! The WAN broker is down throughout the first test (the uplink url points at a port nobody
//! listens on): everything on site must work without it.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::snippet::{add_user, Broker, GATEWAY, HMI, SUB_TIMEOUT};
use common::{config_head, free_port, start_simulator, wait_until, Gateway, Mosquitto, Subscriber};

const P: &str = "fieldrelay/test-gw";
const DEADLINE: Duration = Duration::from_secs(60);

fn write_config(dir: &Path, cloud: u16, local: u16, password: &str, device: u16) -> PathBuf {
    let password_file = dir.join("local-password");
    std::fs::write(&password_file, format!("{password}\n")).unwrap();
    let path = dir.join("gateway.yaml");
    let local_section = format!(
        "local:
  url: mqtt://127.0.0.1:{local}
  username: fieldrelay
  password_file: {}
",
        password_file.display()
    );
    let text = config_head(&dir.join("data"), cloud, device, &local_section)
        + "devices:
  - name: boiler
    bus: plc1
    poll_interval: 50ms
    points:
      - {name: temperature, table: input, address: 0, type: i16, publish: every_poll}
      - {name: alarm, table: coil, address: 1, type: bool, retain: true}
      - {name: setpoint, table: holding, address: 0, type: u16, writable: true, max: 90}
";
    std::fs::write(&path, text).unwrap();
    path
}

/// Waits (off the runtime's threads) until the gateway logged `what`; hands the gateway back.
async fn until_logged(gateway: Gateway, what: &'static str) -> Gateway {
    tokio::task::spawn_blocking(move || {
        wait_until(what, DEADLINE, || gateway.log().contains(what));
        gateway
    })
    .await
    .unwrap()
}

/// The payload of the single line `topic payload` read for `topic`.
fn payload_of(lines: &[String], topic: &str) -> serde_json::Value {
    let line = lines
        .iter()
        .find_map(|l| l.strip_prefix(&format!("{topic} ")))
        .unwrap_or_else(|| panic!("no {topic} in {lines:?}"));
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}"))
}

/// With the WAN broker down, an on-site client reads live values, the retained value of a
/// retained point and the statuses; it sends a command and gets the result; it cannot publish
/// to a data or status topic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_site_clients_work_with_the_wan_down() {
    let dir = tempfile::tempdir().unwrap();
    let passwd = dir.path().join("fieldrelay.passwd");
    add_user(&passwd, GATEWAY);
    add_user(&passwd, HMI);
    let broker = Broker::start(dir.path());
    let (regs, device, _sim) = start_simulator().await;
    regs.set_input(1, 0, &[215]);
    regs.set_coil(1, 1, &[true]);
    let wan = free_port(); // nothing listens there: the cloud is unreachable
    let config = write_config(dir.path(), wan, broker.port, GATEWAY.1, device);
    let gateway = Gateway::start(&config);

    // Live values (not retained: they arrive because the gateway publishes them now).
    let temperature = format!("{P}/boiler/temperature");
    let (lines, broker) = tokio::task::spawn_blocking(move || {
        let lines = broker.read(HMI, &temperature, 1);
        (lines, broker)
    })
    .await
    .unwrap();
    let live = payload_of(&lines, &format!("{P}/boiler/temperature"));
    assert_eq!(live["value"], 215);
    assert!(
        live.get("seq").is_none(),
        "live values are not queued: {live}"
    );

    // The gateway's birth, the device status and the retained point (each read returns the
    // first message: the retained copy, or the live one if it was not published yet).
    let (lines, broker) = tokio::task::spawn_blocking(move || {
        let mut lines = Vec::new();
        for topic in ["status", "boiler/status", "boiler/alarm"] {
            lines.extend(broker.read(HMI, &format!("{P}/{topic}"), 1));
        }
        (lines, broker)
    })
    .await
    .unwrap();
    let birth = payload_of(&lines, &format!("{P}/status"));
    assert_eq!(birth["status"], "online");
    assert_eq!(
        birth["devices"][0]["points"][2]["writable"], true,
        "{birth}"
    );
    assert_eq!(
        payload_of(&lines, &format!("{P}/boiler/status"))["status"],
        "online"
    );
    assert_eq!(
        payload_of(&lines, &format!("{P}/boiler/alarm"))["value"],
        true
    );

    // A command from the HMI, answered on the local broker.
    let result_topic = format!("{P}/boiler/setpoint/set/result");
    let results = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &broker.port.to_string()])
        .args([
            "-u",
            HMI.0,
            "-P",
            HMI.1,
            "-i",
            "hmi-results",
            "-q",
            "1",
            "-v",
        ])
        .args(["-t", &result_topic, "-C", "1", "-W", SUB_TIMEOUT])
        .stdout(Stdio::piped())
        .spawn()
        .expect("run mosquitto_sub");
    let broker = tokio::task::spawn_blocking(move || {
        wait_until("the result subscription", DEADLINE, || {
            broker.log().contains("Sending SUBACK to hmi-results")
        });
        let out = broker.publish(
            HMI,
            &format!("{P}/boiler/setpoint/set"),
            r#"{"id":"hmi-1","value":42}"#,
        );
        assert!(out.status.success(), "{out:?}");
        broker
    })
    .await
    .unwrap();
    let received = tokio::task::spawn_blocking(move || results.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let lines: Vec<String> = String::from_utf8_lossy(&received.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    let result = payload_of(&lines, &result_topic);
    assert_eq!(result["id"], "hmi-1");
    assert_eq!(result["ok"], true, "{result}");
    assert_eq!(result["value"], 42);
    assert_eq!(regs.holding(1, 0, 1), [42]);

    // The HMI cannot publish to a data or status topic: the broker drops it (ACL), the
    // gateway's retained values stay.
    let alarm = format!("{P}/boiler/alarm");
    let broker = tokio::task::spawn_blocking(move || {
        for topic in [&alarm, &format!("{P}/status")] {
            let out = broker.publish(HMI, topic, r#"{"value":false,"status":"forged"}"#);
            assert!(out.status.success(), "{out:?}");
        }
        let lines = broker.read(HMI, &alarm, 1);
        assert_eq!(
            payload_of(&lines, &alarm)["value"],
            true,
            "a forged value got through"
        );
        let lines = broker.read(HMI, &format!("{P}/status"), 1);
        assert_eq!(
            payload_of(&lines, &format!("{P}/status"))["status"],
            "online"
        );
        broker
    })
    .await
    .unwrap();
    assert!(
        gateway.log().contains("cannot connect"),
        "the uplink should be failing meanwhile"
    );
    drop(broker);
}

/// A wrong password is refused by the local broker; the gateway keeps retrying it and the
/// cloud path goes on undisturbed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_local_password_is_refused_and_the_cloud_path_goes_on() {
    // Each broker in a directory of its own (each opens it to the mosquitto user).
    let dir = tempfile::tempdir().unwrap();
    add_user(&dir.path().join("fieldrelay.passwd"), GATEWAY);
    let local = Broker::start(dir.path());
    let cloud_dir = tempfile::tempdir().unwrap();
    let cloud = Mosquitto::start(cloud_dir.path());
    let (regs, device, _sim) = start_simulator().await;
    regs.set_input(1, 0, &[7]);
    let config = write_config(dir.path(), cloud.port, local.port, "wrong", device);
    let mut sub = Subscriber::connect(cloud.port, "local-pw", &[&format!("{P}/boiler/#")]).await;
    let gateway = Gateway::start(&config);
    sub.until("values at the cloud", DEADLINE, |seen| {
        seen.iter()
            .any(|m| m.topic == format!("{P}/boiler/temperature") && m.payload["value"] == 7)
    })
    .await;
    let log = tokio::task::spawn_blocking(move || {
        wait_until("the refusal in the gateway's log", DEADLINE, || {
            gateway.log().contains("cannot connect to the local broker")
        });
        gateway.log()
    })
    .await
    .unwrap();
    assert!(log.contains("refused the connection"), "{log}");
    assert!(local.log().contains("not authorised"), "{}", local.log());
}

/// A hung on-site broker (SIGSTOP: its socket open, nothing answered) never holds up the cloud
/// path: while the local client waits on it, finds it dead and redials, every new value still
/// reaches the cloud broker; once the broker goes on, the local client connects again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_local_broker_never_holds_up_the_cloud_path() {
    let local_dir = tempfile::tempdir().unwrap();
    let local = Mosquitto::start(local_dir.path());
    let cloud_dir = tempfile::tempdir().unwrap();
    let cloud = Mosquitto::start(cloud_dir.path());
    let (regs, device, _sim) = start_simulator().await;
    regs.set_input(1, 0, &[1]);
    let config = write_config(cloud_dir.path(), cloud.port, local.port, "any", device);
    // A short keep-alive, so the local client finds the hung broker within seconds.
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "  username: fieldrelay\n",
        "  keep_alive: 1s\n  username: fieldrelay\n",
    );
    std::fs::write(&config, text).unwrap();
    let temperature = format!("{P}/boiler/temperature");
    let mut sub = Subscriber::connect(cloud.port, "local-hung", &[&temperature]).await;
    let gateway = Gateway::start(&config);
    let gateway = until_logged(gateway, "local broker connected").await;

    local.pause();
    for value in 2..=6 {
        regs.set_input(1, 0, &[value]);
        sub.until(&format!("value {value} at the cloud"), DEADLINE, |seen| {
            seen.iter()
                .any(|m| m.topic == temperature && m.payload["value"] == value)
        })
        .await;
    }
    let gateway = tokio::task::spawn_blocking(move || {
        wait_until("the hung local broker found dead", DEADLINE, || {
            gateway.log().contains("local broker connection lost")
        });
        gateway
    })
    .await
    .unwrap();
    // Still flowing after the local client gave up on the connection and redials.
    regs.set_input(1, 0, &[7]);
    sub.until("value 7 at the cloud", DEADLINE, |seen| {
        seen.iter()
            .any(|m| m.topic == temperature && m.payload["value"] == 7)
    })
    .await;

    local.resume();
    tokio::task::spawn_blocking(move || {
        wait_until("the local broker connected again", DEADLINE, || {
            gateway.log().matches("local broker connected").count() >= 2
        });
    })
    .await
    .unwrap();
}

/// The on-site broker's commands take the same intake as the cloud's: a command far over the
/// packet limit from an on-site client (a broker without `message_size_limit`) is read past,
/// answered `bad_payload` on the local broker and acknowledged; the command behind it is
/// carried out; the local connection is never renewed for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_local_command_is_answered_and_read_past_without_a_reconnect() {
    let local_dir = tempfile::tempdir().unwrap();
    let local = Mosquitto::start(local_dir.path());
    let (regs, device, _sim) = start_simulator().await;
    let config = write_config(local_dir.path(), free_port(), local.port, "any", device);
    let result_topic = format!("{P}/boiler/setpoint/set/result");
    let mut hmi = Subscriber::connect(local.port, "hmi-results", &[&result_topic]).await;
    let gateway = Gateway::start(&config);
    let gateway = until_logged(gateway, "local broker connected").await;
    let big = local_dir.path().join("big.json");
    std::fs::write(&big, format!(r#"{{"value":{}}}"#, "7".repeat(2_000_000))).unwrap();
    let port = local.port.to_string();
    let publish = |args: &[&str]| {
        let status = Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &port, "-q", "1"])
            .args(["-t", &format!("{P}/boiler/setpoint/set")])
            .args(args)
            .status()
            .expect("run mosquitto_pub");
        assert!(status.success());
    };
    // Until the gateway's subscription is live, commands go nowhere: send the pair until the
    // small one is answered.
    for n in 0.. {
        publish(&["-f", &big.display().to_string()]);
        publish(&["-m", &format!(r#"{{"id":"after-{n}","value":{n}}}"#)]);
        let answered = hmi
            .try_until(Duration::from_millis(500), |seen| {
                seen.iter().any(|m| m.payload["id"] == format!("after-{n}"))
            })
            .await;
        if answered {
            break;
        }
        assert!(n < 60, "no command was answered on the local broker");
    }
    let refused: Vec<_> = hmi
        .seen
        .iter()
        .filter(|m| m.payload["id"].is_null())
        .collect();
    assert!(
        !refused.is_empty(),
        "the oversized command was not answered"
    );
    for m in refused {
        assert_eq!(m.payload["error"], "bad_payload", "{:?}", m.payload);
    }
    let last = hmi.seen.last().unwrap();
    assert_eq!(last.payload["ok"], true, "{:?}", last.payload);
    assert_eq!(
        regs.holding(1, 0, 1),
        [last.payload["value"].as_u64().unwrap() as u16]
    );
    let log = gateway.log();
    assert_eq!(log.matches("local broker connected").count(), 1, "{log}");
    assert!(!log.contains("local broker connection lost"), "{log}");
}
