//! Operability against real parts: the `fieldrelay` binary as a child process, a simulated
//! Modbus TCP device (our simulator, in this process), a real mosquitto and a real SQLite queue.
//!
//! - `/metrics` is scraped over TCP while traffic flows and faults are injected (broker down,
//!   device silent) and the counters and gauges must follow.
//!
//! Every wait is for an observable state (a scrape showing a value, a row in the queue file, a
//! message at the subscriber), with a generous deadline: other builds share the two cores.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{free_port, port_accepts, wait_until, Gateway, Mosquitto};
use fieldrelay::simulator::{Registers, Simulator};
use tokio_util::sync::CancellationToken;

/// Generous: other test suites compile and run on the same two cores.
const DEADLINE: Duration = Duration::from_secs(60);

async fn start_simulator() -> (Registers, u16, CancellationToken) {
    let regs = Registers::default();
    let sim = Simulator::bind(SocketAddr::from(([127, 0, 0, 1], 0)), regs.clone())
        .await
        .expect("bind simulator");
    let port = sim.local_addr().port();
    let cancel = CancellationToken::new();
    tokio::spawn(sim.run(cancel.clone()));
    (regs, port, cancel)
}

/// A gateway config: one tcp bus to the simulator with `devices_yaml` on it, and `extra`
/// appended (a `metrics:` section).
fn write_config(
    path: &Path,
    data_dir: &Path,
    broker_port: u16,
    device_port: u16,
    devices_yaml: &str,
    extra: &str,
) -> PathBuf {
    let text = format!(
        "gateway:
  id: test-gw
  data_dir: {data}
uplink:
  url: mqtt://127.0.0.1:{broker_port}
  keep_alive: 5s
  reconnect_initial: 100ms
  reconnect_max: 500ms
buses:
  - name: plc1
    type: tcp
    host: 127.0.0.1
    port: {device_port}
    timeout: 200ms
devices:
{devices_yaml}{extra}",
        data = data_dir.display(),
    );
    std::fs::write(path, text).expect("write config");
    path.to_path_buf()
}

const TWO_DEVICES: &str = "  - name: boiler
    bus: plc1
    unit_id: 1
    poll_interval: 50ms
    points:
      - {name: counter, table: holding, address: 4, type: u32, qos: 1, publish: every_poll}
  - name: chiller
    bus: plc1
    unit_id: 2
    poll_interval: 50ms
    points:
      - {name: supply_temp, table: input, address: 0, type: i16, scale: 0.1, publish: every_poll}
";

/// One HTTP exchange: status code and body.
fn http(port: u16, request: &[u8]) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to the endpoint");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("read timeout");
    stream.write_all(request).expect("send the request");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read the answer");
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {answer:?}"));
    (status, body.to_owned())
}

/// `/metrics` as `sample{labels}` → value.
fn scrape(port: u16) -> HashMap<String, f64> {
    let (status, body) = http(port, b"GET /metrics HTTP/1.1\r\nHost: gw\r\n\r\n");
    assert_eq!(status, 200, "{body}");
    body.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| {
            let (name, value) = line.rsplit_once(' ').expect("sample line");
            let value = value.parse().unwrap_or_else(|_| panic!("value in {line}"));
            (name.to_owned(), value)
        })
        .collect()
}

fn device(metric: &str, device: &str) -> String {
    format!("{metric}{{bus=\"plc1\",device=\"{device}\"}}")
}

/// Scrapes until `condition` holds; returns that scrape.
fn scrape_until(
    port: u16,
    what: &str,
    condition: impl Fn(&HashMap<String, f64>) -> bool,
) -> HashMap<String, f64> {
    let mut last = HashMap::new();
    wait_until(what, DEADLINE, || {
        last = scrape(port);
        condition(&last)
    });
    last
}

fn value(metrics: &HashMap<String, f64>, key: &str) -> f64 {
    metrics.get(key).copied().unwrap_or(f64::NAN)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_traffic_and_faults() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Mosquitto::start(dir.path());
    let (regs, device_port, _sim) = start_simulator().await;
    regs.set_input(2, 0, &[215]);
    let metrics_port = free_port();
    let config = write_config(
        &dir.path().join("gateway.yaml"),
        &dir.path().join("data"),
        broker.port,
        device_port,
        TWO_DEVICES,
        &format!("metrics:\n  listen: 127.0.0.1:{metrics_port}\n"),
    );
    let mut gateway = Gateway::start(&config);
    wait_until("the metrics endpoint", DEADLINE, || {
        port_accepts(metrics_port)
    });

    // Traffic: requests and committed rows grow; every device answers.
    let boiler_requests = device("fieldrelay_device_requests_total", "boiler");
    let first = scrape_until(metrics_port, "polls and commits", |m| {
        value(m, &boiler_requests) >= 3.0 && value(m, "fieldrelay_queue_last_seq") >= 3.0
    });
    let later = scrape_until(metrics_port, "more requests", |m| {
        value(m, &boiler_requests) > value(&first, &boiler_requests)
    });
    assert_eq!(
        value(&later, &device("fieldrelay_device_online", "boiler")),
        1.0
    );
    assert_eq!(
        value(&later, &device("fieldrelay_device_online", "chiller")),
        1.0
    );
    let polls = value(
        &later,
        &device("fieldrelay_device_poll_duration_seconds_count", "boiler"),
    );
    assert!(polls >= 1.0, "{later:?}");
    let inf =
        r#"fieldrelay_device_poll_duration_seconds_bucket{bus="plc1",device="boiler",le="+Inf"}"#;
    assert_eq!(value(&later, inf), polls);
    assert!(
        value(
            &later,
            &device("fieldrelay_device_last_success_timestamp_seconds", "boiler")
        ) > 1.6e9
    );
    assert!(
        value(&later, "process_resident_memory_bytes") > 1e6,
        "{later:?}"
    );
    assert!(value(&later, "process_open_fds") >= 3.0);
    assert_eq!(
        value(
            &later,
            "fieldrelay_queue_dropped_total{reason=\"commit_failed\"}"
        ),
        0.0
    );

    // Broker down: rows stay queued and the depth grows; back up: it drains.
    broker.stop();
    scrape_until(metrics_port, "the queue to fill", |m| {
        value(m, "fieldrelay_queue_depth") >= 20.0
    });
    broker.restart();
    scrape_until(metrics_port, "the queue to drain", |m| {
        value(m, "fieldrelay_queue_depth") < 20.0
    });

    // A device stops answering: its timeouts rise and it goes offline; the other stays online.
    let timeouts = device("fieldrelay_device_timeouts_total", "chiller");
    // Not necessarily 0: a loaded machine may have delayed a reply past the 200 ms timeout.
    let before = value(&scrape(metrics_port), &timeouts);
    regs.set_silent(2, true);
    let silent = scrape_until(metrics_port, "the chiller to go offline", |m| {
        value(m, &device("fieldrelay_device_online", "chiller")) == 0.0
    });
    assert!(value(&silent, &timeouts) > before, "{silent:?}");
    assert!(
        value(
            &silent,
            &device("fieldrelay_device_consecutive_failures", "chiller")
        ) >= 1.0
    );
    assert_eq!(
        value(&silent, &device("fieldrelay_device_online", "boiler")),
        1.0
    );
    regs.set_silent(2, false);
    scrape_until(metrics_port, "the chiller to answer again", |m| {
        value(m, &device("fieldrelay_device_online", "chiller")) == 1.0
    });

    // Other paths, methods and garbage get their answer, and the endpoint keeps serving.
    assert_eq!(http(metrics_port, b"GET / HTTP/1.1\r\n\r\n").0, 404);
    assert_eq!(http(metrics_port, b"POST /metrics HTTP/1.1\r\n\r\n").0, 405);
    assert_eq!(http(metrics_port, b"\x16\x03\x01\x00\xff\r\n\r\n").0, 400);
    let (status, body) = http(metrics_port, b"HEAD /metrics HTTP/1.0\r\n\r\n");
    assert_eq!((status, body.as_str()), (200, ""));
    assert!(!scrape(metrics_port).is_empty());

    // The endpoint shuts down with the gateway.
    let exit = tokio::task::spawn_blocking(move || gateway.terminate(DEADLINE))
        .await
        .unwrap();
    assert!(exit.success(), "{exit:?}");
    assert!(!port_accepts(metrics_port));
}
