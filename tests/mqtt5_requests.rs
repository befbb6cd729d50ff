//! MQTT 5 request/response for commands, against a real mosquitto 2 and its own clients (peers
//! we did not write): `mosquitto_rr` sends a command with a Response Topic and Correlation Data
//! and waits for the answer there; `mosquitto_pub -V 5` sends one with a wildcard response topic
//! (mosquitto 2.0.11 forwards it) and ones with a Message Expiry Interval.
//!
//! The gateway binary runs on our Modbus simulator behind a proxy that holds every request
//! [`DEVICE_DELAY`], so a run of commands takes a known least time: a command that waits behind
//! them outlives its message expiry, deterministically.

mod common;

use std::process::{Command, Output};
use std::time::Duration;

use common::{Gateway, Mosquitto, Subscriber};
use fieldrelay::sample::now_ms;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const P: &str = "fieldrelay/test-gw";
/// How long the proxy holds each Modbus request.
const DEVICE_DELAY: Duration = Duration::from_millis(250);

/// A TCP proxy to `upstream` that holds every chunk towards it [`DEVICE_DELAY`].
async fn slow_proxy(upstream: u16) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                continue;
            };
            let (mut client_rx, mut client_tx) = client.into_split();
            let (mut server_rx, mut server_tx) = server.into_split();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                while let Ok(n @ 1..) = client_rx.read(&mut buf).await {
                    tokio::time::sleep(DEVICE_DELAY).await;
                    if server_tx.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut server_rx, &mut client_tx).await;
            });
        }
    });
    port
}

/// The shared test config (`common::config_head`) under `protocol: mqtt5`, its bus allowing
/// for the proxy's delay.
fn config(dir: &std::path::Path, broker: u16, device: u16) -> std::path::PathBuf {
    let path = dir.join("gateway.yaml");
    let head = common::config_head(
        &dir.join("data"),
        broker,
        device,
        "  protocol: mqtt5\n  will_delay: 0s\n",
    );
    let text = head.replace("timeout: 200ms", "timeout: 3s")
        + "devices:
  - name: boiler
    bus: plc1
    unit_id: 1
    poll_interval: 1s
    points:
      - {name: mode, table: holding, address: 2, type: u16, writable: true}
      - {name: temperature, table: input, address: 0, type: i16}
";
    std::fs::write(&path, text).unwrap();
    path
}

/// A mosquitto client `bin` speaking MQTT 5 at QoS 1 to the broker on `port`, sending
/// `payload` on the command topic `topic`.
fn client(bin: &str, port: u16, topic: &str, payload: &str) -> Command {
    let mut command = Command::new(bin);
    command
        .args([
            "-V",
            "5",
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-q",
            "1",
        ])
        .args(["-t", &format!("{P}/{topic}"), "-m", payload]);
    command
}

/// `mosquitto_pub` with `props` (`-D publish …` arguments); returns after the broker's PUBACK.
fn publish5(port: u16, topic: &str, payload: &str, props: &[&str]) {
    let status = client("mosquitto_pub", port, topic, payload)
        .args(props)
        .status()
        .expect("run mosquitto_pub (mosquitto-clients)");
    assert!(status.success());
}

/// `mosquitto_rr`: the command with Response Topic `response` and Correlation Data
/// `correlation`; prints `<topic>|<correlation data>|<payload>` of the answer.
fn request(port: u16, topic: &str, response: &str, correlation: &str, payload: &str) -> Output {
    client("mosquitto_rr", port, topic, payload)
        .args([
            "-e",
            response,
            "-D",
            "publish",
            "correlation-data",
            correlation,
        ])
        .args(["-F", "%t|%D|%p", "-W", "20"])
        .output()
        .expect("run mosquitto_rr (mosquitto-clients)")
}

fn result_of<'a>(seen: &'a [common::Message], id: &str) -> Option<&'a serde_json::Value> {
    seen.iter()
        .find(|m| m.topic.ends_with("/set/result") && m.payload["id"] == id)
        .map(|m| &m.payload)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_with_a_response_topic_is_answered_there_with_its_correlation_data() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(dir.path());
    let (regs, device, _sim) = common::start_simulator().await;
    let config = config(dir.path(), broker.port, slow_proxy(device).await);
    let filters = [
        format!("{P}/+/+/set/result"),
        format!("{P}/boiler/temperature"),
    ];
    let filters: Vec<&str> = filters.iter().map(String::as_str).collect();
    let mut sub = Subscriber::connect(broker.port, "rr-sub", &filters).await;
    let _gateway = Gateway::start(&config);
    // The device polled once: it is online, and so is the gateway's subscription soon after.
    sub.until("a first sample", Duration::from_secs(20), |seen| {
        seen.iter().any(|m| m.topic.ends_with("/temperature"))
    })
    .await;

    // mosquitto_rr: answered on its response topic, correlation data echoed.
    let payload =
        |id: &str, value: u16| format!(r#"{{"id":"{id}","value":{value},"ts":{}}}"#, now_ms());
    let mut answer = None;
    for n in 0..20 {
        let out = request(
            broker.port,
            "boiler/mode/set",
            "reply/rr",
            "corr-42",
            &payload(&format!("rr{n}"), 42),
        );
        if out.status.success() {
            answer = Some((n, String::from_utf8_lossy(&out.stdout).trim().to_owned()));
            break;
        }
    }
    let (n, answer) = answer.expect("mosquitto_rr got an answer");
    let (head, body) = answer.split_at(answer.find('{').expect("a JSON answer"));
    assert_eq!(head, "reply/rr|corr-42|", "{answer}");
    let body: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(body["id"], format!("rr{n}"), "{body}");
    assert_eq!(body["ok"], true, "{body}");
    assert!(body["seq"].is_u64(), "{body}");
    assert_eq!(regs.holding(1, 2, 1), [42]);
    let id = format!("rr{n}");
    sub.until(
        "the result on …/set/result too",
        Duration::from_secs(20),
        |seen| result_of(seen, &id).is_some(),
    )
    .await;
    let result = result_of(&sub.seen, &id).unwrap();
    assert_eq!(result["ok"], true);
    assert_eq!(result["ts"], body["ts"], "the same answer");

    // A wildcard response topic (mosquitto 2.0.11 forwards it): ignored, counted and logged,
    // the command still carried out and answered on …/set/result.
    publish5(
        broker.port,
        "boiler/mode/set",
        &payload("wild", 43),
        &["-D", "publish", "response-topic", "reply/#"],
    );
    sub.until(
        "the wildcard command's result",
        Duration::from_secs(20),
        |seen| result_of(seen, "wild").is_some(),
    )
    .await;
    assert_eq!(result_of(&sub.seen, "wild").unwrap()["ok"], true);
    assert_eq!(regs.holding(1, 2, 1), [43]);
    let log = std::fs::read_to_string(config.with_extension("log")).unwrap();
    assert!(
        log.contains("ignoring the command's MQTT 5 response topic") && log.contains("wildcard"),
        "the invalid response topic is logged"
    );

    // Message expiry: six writes ahead take at least 6 × DEVICE_DELAY = 1.5 s; a command with
    // one second of lifetime left behind them is refused as expired, its `ts` fresh; one with a
    // minute left is carried out.
    for i in 0..6 {
        publish5(
            broker.port,
            "boiler/mode/set",
            &payload(&format!("ahead{i}"), 50 + i),
            &[],
        );
    }
    let expiry = |secs: &'static str| ["-D", "publish", "message-expiry-interval", secs];
    publish5(
        broker.port,
        "boiler/mode/set",
        &payload("short", 60),
        &expiry("1"),
    );
    publish5(
        broker.port,
        "boiler/mode/set",
        &payload("long", 61),
        &expiry("60"),
    );
    sub.until(
        "the expiring commands' results",
        Duration::from_secs(30),
        |seen| result_of(seen, "short").is_some() && result_of(seen, "long").is_some(),
    )
    .await;
    let short = result_of(&sub.seen, "short").unwrap();
    assert_eq!(short["ok"], false, "{short}");
    assert_eq!(short["error"], "expired", "{short}");
    assert!(
        short["message"].as_str().unwrap().contains("expiry"),
        "{short}"
    );
    assert_eq!(result_of(&sub.seen, "long").unwrap()["ok"], true);
    assert_eq!(
        regs.holding(1, 2, 1),
        [61],
        "the expired command wrote nothing"
    );
}
