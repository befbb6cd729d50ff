//! Operability against real parts: the `fieldrelay` binary as a child process, a simulated
//! Modbus TCP device (our simulator, in this process), a real mosquitto and a real SQLite queue.
//!
//! - `/metrics` is scraped over TCP while traffic flows and faults are injected (broker down
//!   with samples expiring, broker hung and resumed with its session, a device answering
//!   exceptions, a device silent) and the counters and gauges must follow: drops by reason,
//!   resends, exceptions, timeouts among them.
//! - SIGHUP reloads: a new point is published without losing the rows queued during a broker
//!   outage; an invalid file, or one that changes what needs a restart, is refused and the
//!   gateway goes on with the configuration it had; systemd hears RELOADING=1 and READY=1.
//!
//! Every wait is for an observable state (a scrape showing a value, a row in the queue file, a
//! message at the subscriber), with a generous deadline: other builds share the two cores.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::notify::NotifySocket;
use common::{
    free_port, port_accepts, start_simulator, u32_words, wait_until, Gateway, Mosquitto, Subscriber,
};
use fieldrelay::sample::Value;
use fieldrelay::simulator::Registers;
use tokio_util::sync::CancellationToken;

/// Generous: other test suites compile and run on the same two cores.
const DEADLINE: Duration = Duration::from_secs(60);
/// `uplink.response_timeout`: a hung broker is found this long after it stops answering.
/// Short enough to keep the paused-broker step quick, long enough that a loaded machine does
/// not make mosquitto miss it.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(3);

/// A Modbus TCP device (tokio-modbus' server, a peer we did not write) that answers every
/// request with exception 02, illegal data address. The simulator serves the whole address
/// space and a valid configuration cannot name an address past it, so exceptions come from here.
async fn start_exception_device() -> (u16, CancellationToken) {
    use tokio_modbus::server::tcp::{accept_tcp_connection, Server};
    use tokio_modbus::{ExceptionCode, Response, SlaveRequest};

    struct Refuse;
    impl tokio_modbus::server::Service for Refuse {
        type Request = SlaveRequest<'static>;
        type Response = Response;
        type Exception = ExceptionCode;
        type Future = std::future::Ready<Result<Response, ExceptionCode>>;
        fn call(&self, _: Self::Request) -> Self::Future {
            std::future::ready(Err(ExceptionCode::IllegalDataAddress))
        }
    }

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let cancel = CancellationToken::new();
    let stop = cancel.clone();
    tokio::spawn(async move {
        let on_connected =
            |stream, addr| async move { accept_tcp_connection(stream, addr, |_| Ok(Some(Refuse))) };
        let _ = Server::new(listener)
            .serve_until(&on_connected, |_| {}, stop.cancelled_owned())
            .await;
    });
    (port, cancel)
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
    write_config_with(
        path,
        data_dir,
        broker_port,
        device_port,
        More::default(),
        devices_yaml,
        extra,
    )
}

/// What [`write_config_with`] adds to the common configuration.
#[derive(Default)]
struct More<'a> {
    /// Keys of the uplink section (indented by two).
    uplink: &'a str,
    /// Buses (YAML list items) after the simulator's bus `plc1`.
    buses: &'a str,
}

/// [`write_config`] with `more` in the uplink and bus sections.
fn write_config_with(
    path: &Path,
    data_dir: &Path,
    broker_port: u16,
    device_port: u16,
    more: More<'_>,
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
{uplink_extra}buses:
  - name: plc1
    type: tcp
    host: 127.0.0.1
    port: {device_port}
    timeout: 200ms
{more_buses}devices:
{devices_yaml}{extra}",
        data = data_dir.display(),
        uplink_extra = more.uplink,
        more_buses = more.buses,
    );
    std::fs::write(path, text).expect("write config");
    path.to_path_buf()
}

/// Two devices on the simulator (the boiler's `fresh` samples expire after a second unsent) and
/// the `meter` on the exception device's bus `plc2`.
const TWO_DEVICES: &str = "  - name: boiler
    bus: plc1
    unit_id: 1
    poll_interval: 50ms
    points:
      - {name: counter, table: holding, address: 4, type: u32, qos: 1, publish: every_poll}
      - {name: fresh, table: holding, address: 8, type: u16, qos: 1, publish: every_poll, max_age: 1s}
  - name: chiller
    bus: plc1
    unit_id: 2
    poll_interval: 50ms
    points:
      - {name: supply_temp, table: input, address: 0, type: i16, scale: 0.1, publish: every_poll}
  - name: meter
    bus: plc2
    unit_id: 1
    poll_interval: 50ms
    points:
      - {name: energy, table: holding, address: 0, type: u32, qos: 1, publish: every_poll}
";

/// The bus of the `meter`: the exception device.
fn exception_bus(port: u16) -> String {
    format!("  - name: plc2\n    type: tcp\n    host: 127.0.0.1\n    port: {port}\n    timeout: 200ms\n")
}

const EXPIRED: &str = "fieldrelay_queue_dropped_total{reason=\"expired\"}";

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
    let (exception_port, _refusing) = start_exception_device().await;
    let metrics_port = free_port();
    let config = write_config_with(
        &dir.path().join("gateway.yaml"),
        &dir.path().join("data"),
        broker.port,
        device_port,
        More {
            uplink: &format!("  response_timeout: {}ms\n", RESPONSE_TIMEOUT.as_millis()),
            buses: &exception_bus(exception_port),
        },
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
    // The command paths' metrics are served beside the rest.
    assert_eq!(
        value(&later, "fieldrelay_commands_waiting{origin=\"cloud\"}"),
        0.0
    );
    assert_eq!(
        value(
            &later,
            "fieldrelay_commands_received_total{origin=\"cloud\"}"
        ),
        0.0
    );

    // The meter answers every read with a Modbus exception: counted as exceptions, not as
    // timeouts or errors, and only for that device.
    let meter = |metric: &str| format!("{metric}{{bus=\"plc2\",device=\"meter\"}}");
    let refused = scrape_until(metrics_port, "the meter's exceptions", |m| {
        value(m, &meter("fieldrelay_device_exceptions_total")) >= 2.0
    });
    assert!(
        value(&refused, &meter("fieldrelay_device_exceptions_total"))
            <= value(&refused, &meter("fieldrelay_device_requests_total")),
        "{refused:?}"
    );
    assert_eq!(
        value(&refused, &meter("fieldrelay_device_timeouts_total")),
        0.0
    );
    assert_eq!(
        value(
            &refused,
            &device("fieldrelay_device_exceptions_total", "boiler")
        ),
        0.0
    );

    // Uplink: publishes and acknowledgements rise with traffic, on one connection.
    let flowing = scrape_until(metrics_port, "publishes and acks", |m| {
        value(m, "fieldrelay_uplink_acked_total") >= 3.0
            && value(m, "fieldrelay_uplink_connected") == 1.0
    });
    let moved = scrape_until(metrics_port, "more publishes and acks", |m| {
        value(m, "fieldrelay_uplink_published_total")
            > value(&flowing, "fieldrelay_uplink_published_total")
            && value(m, "fieldrelay_uplink_acked_total")
                > value(&flowing, "fieldrelay_uplink_acked_total")
    });
    assert_eq!(value(&moved, "fieldrelay_uplink_connects_total"), 1.0);
    assert_eq!(value(&moved, "fieldrelay_uplink_disconnects_total"), 0.0);
    assert!(
        value(&moved, "fieldrelay_queue_committed_total")
            >= value(&moved, "fieldrelay_uplink_acked_total"),
        "{moved:?}"
    );
    assert!(value(&moved, "fieldrelay_queue_bytes") > 0.0);
    assert!(
        value(&moved, "fieldrelay_queue_capacity_bytes") > value(&moved, "fieldrelay_queue_bytes")
    );
    assert!(value(&moved, "fieldrelay_uplink_inflight") <= 100.0);

    // Broker down: rows stay queued, the depth and the oldest row's age grow, the link is down
    // and nothing is acknowledged; back up: a reconnect, and it drains.
    broker.stop();
    let down = scrape_until(metrics_port, "the queue to fill", |m| {
        value(m, "fieldrelay_queue_depth") >= 20.0 && value(m, "fieldrelay_uplink_connected") == 0.0
    });
    assert_eq!(value(&down, "fieldrelay_uplink_disconnects_total"), 1.0);
    let acked_while_down = value(&down, "fieldrelay_uplink_acked_total");
    // The boiler's `fresh` samples wait longer than their max_age of 1 s: dropped as expired.
    let aged = scrape_until(metrics_port, "the oldest row to age", |m| {
        value(m, "fieldrelay_queue_oldest_age_seconds")
            > value(&down, "fieldrelay_queue_oldest_age_seconds") + 0.5
            && value(m, "fieldrelay_queue_depth") > value(&down, "fieldrelay_queue_depth")
            && value(m, "fieldrelay_uplink_connect_failures_total") >= 1.0
            && value(m, EXPIRED) > value(&down, EXPIRED)
    });
    assert_eq!(
        value(&aged, "fieldrelay_uplink_acked_total"),
        acked_while_down
    );
    assert_eq!(value(&aged, "fieldrelay_uplink_inflight"), 0.0);
    assert!(
        gateway.log().contains("queue started dropping samples"),
        "the expiries were not logged"
    );
    broker.restart();
    let back = scrape_until(metrics_port, "the queue to drain", |m| {
        value(m, "fieldrelay_queue_depth") < 20.0
    });
    assert_eq!(value(&back, "fieldrelay_uplink_connects_total"), 2.0);
    // Rows leave the queue by acknowledgement or by expiry here (no max_size in play).
    let acked_since = value(&back, "fieldrelay_uplink_acked_total") - acked_while_down;
    let expired_since = value(&back, EXPIRED) - value(&aged, EXPIRED);
    let drained = value(&aged, "fieldrelay_queue_depth") - value(&back, "fieldrelay_queue_depth");
    assert!(
        acked_since + expired_since >= drained && drained > 0.0,
        "{aged:?} {back:?}"
    );
    assert!(
        value(&back, "fieldrelay_queue_oldest_age_seconds")
            < value(&aged, "fieldrelay_queue_oldest_age_seconds"),
        "{back:?}"
    );

    // A hung broker (SIGSTOP): the link is torn down after the response timeout with rows
    // unacknowledged; when the broker answers again it still has the session, so those rows
    // are resent (QoS 1 rows as new messages, same seq).
    let before = scrape(metrics_port);
    broker.pause();
    scrape_until(metrics_port, "the hung broker to be noticed", |m| {
        value(m, "fieldrelay_uplink_disconnects_total")
            > value(&before, "fieldrelay_uplink_disconnects_total")
    });
    broker.resume();
    let resumed = scrape_until(metrics_port, "the session to resume", |m| {
        value(m, "fieldrelay_uplink_resent_total")
            > value(&before, "fieldrelay_uplink_resent_total")
            && value(m, "fieldrelay_uplink_connected") == 1.0
    });
    assert_eq!(
        value(&resumed, "fieldrelay_uplink_connects_total"),
        value(&before, "fieldrelay_uplink_connects_total") + 1.0
    );

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

const COUNTER: &str = "  - name: boiler
    bus: plc1
    unit_id: 1
    poll_interval: 50ms
    points:
      - {name: counter, table: holding, address: 4, type: u32, qos: 1, publish: on_change}
";

/// The counter device with a second point, `setpoint`.
const COUNTER_AND_SETPOINT: &str = "  - name: boiler
    bus: plc1
    unit_id: 1
    poll_interval: 50ms
    points:
      - {name: counter, table: holding, address: 4, type: u32, qos: 1, publish: on_change}
      - {name: setpoint, table: holding, address: 10, type: u16, qos: 1, publish: on_change}
";

/// Integer values of `point` committed in the queue file now (read-only connection).
fn committed(data_dir: &Path, point: &str) -> Vec<i64> {
    let Ok(rows) = fieldrelay::queue::read_only_rows(data_dir) else {
        return Vec::new(); // not created yet
    };
    rows.into_iter()
        .filter(|row| &*row.sample.point == point)
        .filter_map(|row| match row.sample.value {
            Value::Int(v) => Some(v),
            _ => None,
        })
        .collect()
}

/// Sets the counter to each value of `values` in turn, waiting until each is committed.
fn step_counter(regs: &Registers, data_dir: &Path, values: std::ops::RangeInclusive<u32>) {
    for value in values {
        regs.set_holding(1, 4, &u32_words(value));
        wait_until(&format!("counter {value} committed"), DEADLINE, || {
            committed(data_dir, "counter").contains(&i64::from(value))
        });
    }
}

/// Done when: "a reload that adds a point publishes it without losing queued rows". The broker
/// is down while rows queue, the file gains a point, SIGHUP; then the broker comes back and
/// every counter value (before and after the reload) and the new point arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_adds_a_point_and_keeps_the_queued_rows() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let mut broker = Mosquitto::start(dir.path());
    let (regs, device_port, _sim) = start_simulator().await;
    regs.set_holding(1, 4, &u32_words(0));
    regs.set_holding(1, 10, &[777]);
    let config_path = dir.path().join("gateway.yaml");
    let metrics_port = free_port();
    let metrics = format!("metrics:\n  listen: 127.0.0.1:{metrics_port}\n");
    let broker_port = broker.port;
    let write = |devices: &str| {
        write_config(
            &config_path,
            &data_dir,
            broker_port,
            device_port,
            devices,
            &metrics,
        )
    };
    write(COUNTER);
    let mut notify = NotifySocket::bind(dir.path());
    let socket = notify.path.display().to_string();
    let mut sub =
        Subscriber::connect(broker.port, "ops-reload", &["fieldrelay/test-gw/boiler/#"]).await;
    let gateway = Gateway::start_with_env(&config_path, &[("NOTIFY_SOCKET", &socket)]);
    let ready = notify.until(0, "READY=1", DEADLINE).await;
    sub.until("the first counter sample", DEADLINE, |seen| {
        !seen.is_empty()
    })
    .await;

    broker.stop();
    let data = data_dir.clone();
    let stepper = regs.clone();
    tokio::task::spawn_blocking(move || step_counter(&stepper, &data, 1..=5))
        .await
        .unwrap();

    write(COUNTER_AND_SETPOINT);
    gateway.hangup();
    let reloading = notify.until(ready + 1, "RELOADING=1", DEADLINE).await;
    assert!(
        notify.seen[reloading].contains("MONOTONIC_USEC="),
        "{:?}",
        notify.seen[reloading]
    );
    notify.until(reloading + 1, "READY=1", DEADLINE).await;
    let applied = r#"fieldrelay_config_reloads_total{result="applied"}"#;
    tokio::task::spawn_blocking(move || {
        scrape_until(metrics_port, "the reload to count as applied", |m| {
            value(m, applied) == 1.0
        })
    })
    .await
    .unwrap();
    let data = data_dir.clone();
    let stepper = regs.clone();
    tokio::task::spawn_blocking(move || {
        step_counter(&stepper, &data, 6..=8);
        wait_until("the new point committed", DEADLINE, || {
            committed(&data, "setpoint") == [777]
        });
    })
    .await
    .unwrap();

    broker.restart();
    let counter_topic = "fieldrelay/test-gw/boiler/counter";
    let setpoint_topic = "fieldrelay/test-gw/boiler/setpoint";
    sub.until("every counter value and the new point", DEADLINE, |seen| {
        let values: BTreeSet<u64> = seen
            .iter()
            .filter(|m| m.topic == counter_topic)
            .filter_map(|m| m.payload["value"].as_u64())
            .collect();
        (0..=8).all(|v| values.contains(&v)) && seen.iter().any(|m| m.topic == setpoint_topic)
    })
    .await;
    assert_eq!(sub.on(setpoint_topic)[0].payload["value"], 777);
    drop(gateway);
}

/// Done when: "a broken reload file leaves the gateway running on the old config". Also: a file
/// that changes what needs a restart is refused as a whole, and a valid one afterwards counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_reload_keeps_the_running_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let broker = Mosquitto::start(dir.path());
    let (regs, device_port, _sim) = start_simulator().await;
    regs.set_holding(1, 4, &u32_words(1));
    regs.set_holding(1, 10, &[777]);
    let config_path = dir.path().join("gateway.yaml");
    let metrics_port = free_port();
    let metrics = format!("metrics:\n  listen: 127.0.0.1:{metrics_port}\n");
    let write = |devices: &str| {
        write_config(
            &config_path,
            &data_dir,
            broker.port,
            device_port,
            devices,
            &metrics,
        )
    };
    write(COUNTER);
    let counter_topic = "fieldrelay/test-gw/boiler/counter";
    let mut sub =
        Subscriber::connect(broker.port, "ops-refused", &["fieldrelay/test-gw/boiler/#"]).await;
    let mut gateway = Gateway::start(&config_path);
    sub.until("the first counter sample", DEADLINE, |seen| {
        seen.iter()
            .any(|m| m.topic == counter_topic && m.payload["value"] == 1)
    })
    .await;

    // Reloads, each waited for through its counter in the metrics.
    let reload = |gateway: &Gateway, result: &'static str, count: f64| {
        gateway.hangup();
        let key = format!("fieldrelay_config_reloads_total{{result=\"{result}\"}}");
        scrape_until(metrics_port, &format!("{count} {result} reload(s)"), |m| {
            value(m, &key) == count
        })
    };

    // 1. Invalid: a bad type and an unknown bus, both reported with their position.
    std::fs::write(
        &config_path,
        std::fs::read_to_string(&config_path)
            .unwrap()
            .replace("type: u32", "type: u33")
            .replace("bus: plc1", "bus: plc9"),
    )
    .unwrap();
    let scraped = reload(&gateway, "invalid", 1.0);
    assert_eq!(
        value(&scraped, "fieldrelay_config_last_reload_successful"),
        0.0
    );
    let log = gateway.log();
    let file = config_path.display().to_string();
    for problem in [
        format!("{file}:17:10: devices[0].bus: unknown bus \"plc9\""),
        format!("{file}:21:59: devices[0].points[0].type: unknown type \"u33\""),
        "reload refused: the configuration file is invalid".to_owned(),
    ] {
        assert!(log.contains(&problem), "no {problem:?} in the log:\n{log}");
    }
    assert!(gateway.is_running());
    // Still polling and publishing with the old configuration.
    regs.set_holding(1, 4, &u32_words(2));
    sub.until(
        "a counter change after the refused reload",
        DEADLINE,
        |seen| {
            seen.iter()
                .any(|m| m.topic == counter_topic && m.payload["value"] == 2)
        },
    )
    .await;

    // 2. Needs a restart: a new gateway id and keep alive together with a new point; none is
    // applied, and the log names each key.
    write(COUNTER_AND_SETPOINT);
    std::fs::write(
        &config_path,
        std::fs::read_to_string(&config_path)
            .unwrap()
            .replace("id: test-gw", "id: other-gw")
            .replace("keep_alive: 5s", "keep_alive: 6s"),
    )
    .unwrap();
    reload(&gateway, "needs_restart", 1.0);
    let log = gateway.log();
    let refused = log
        .lines()
        .find(|l| l.contains("reload refused: these changes need a restart"))
        .unwrap_or_else(|| panic!("no refusal in:\n{log}"));
    assert!(
        refused.contains("gateway.id") && refused.contains("uplink.keep_alive"),
        "{refused}"
    );
    regs.set_holding(1, 4, &u32_words(3));
    sub.until("a counter change on the old topic", DEADLINE, |seen| {
        seen.iter()
            .any(|m| m.topic == counter_topic && m.payload["value"] == 3)
    })
    .await;
    assert!(
        committed(&data_dir, "setpoint").is_empty(),
        "the new point was polled"
    );

    // 3. Back to the running file: nothing to change, and the last reload counts as good.
    write(COUNTER);
    let scraped = reload(&gateway, "unchanged", 1.0);
    assert_eq!(
        value(&scraped, "fieldrelay_config_last_reload_successful"),
        1.0
    );
    assert_eq!(
        value(
            &scraped,
            r#"fieldrelay_config_reloads_total{result="applied"}"#
        ),
        0.0
    );

    let exit = tokio::task::spawn_blocking(move || gateway.terminate(DEADLINE))
        .await
        .unwrap();
    assert!(exit.success(), "{exit:?}");
}

/// The probe's device map: every kind of value from the simulator, and a device that does not
/// answer (unit 9 is silent).
const PROBED_DEVICES: &str = "  - name: boiler
    bus: plc1
    unit_id: 1
    points:
      - {name: temperature, table: holding, address: 0, type: f32, unit: °C}
      - {name: pressure, table: holding, address: 2, type: u16, scale: 0.01, unit: bar}
      - {name: counter, table: holding, address: 4, type: u32}
      - {name: pump_running, table: coil, address: 0, type: bool}
      - {name: flow, table: input, address: 0, type: i16, scale: 0.1, unit: m³/h}
      - {name: model, table: holding, address: 20, type: string, length: 3}
  - name: gone
    bus: plc1
    unit_id: 9
    points:
      - {name: level, table: input, address: 0, type: u16, unit: mm}
";

fn probe(config: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_fieldrelay"))
        .arg("probe")
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .expect("run fieldrelay probe");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Done when: "`probe` against the simulator prints the expected table".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_prints_what_the_simulator_serves() {
    let dir = tempfile::tempdir().unwrap();
    let (regs, device_port, _sim) = start_simulator().await;
    regs.set_holding(1, 0, &[0x41AC, 0x0000]); // 21.5
    regs.set_holding(1, 2, &[1234]);
    regs.set_holding(1, 4, &u32_words(70_000));
    regs.set_coil(1, 0, &[true]);
    regs.set_input(1, 0, &[569]); // 56.900000000000006 in f64: printed as its scale implies
    regs.set_holding(1, 20, &[0x4142, 0x4344, 0x4500]); // "ABCDE"
    regs.set_silent(9, true);
    // No broker: probe does not need one.
    let config = write_config(
        &dir.path().join("gateway.yaml"),
        &dir.path().join("data"),
        free_port(),
        device_port,
        PROBED_DEVICES,
        "",
    );

    let config_path = config.clone();
    let (code, stdout, stderr) =
        tokio::task::spawn_blocking(move || probe(&config_path, &["--device", "boiler"]))
            .await
            .unwrap();
    assert_eq!(
        stdout,
        "\
DEVICE  POINT         RAW                   VALUE    UNIT  STATUS
boiler  temperature   0x41AC 0x0000         21.5     °C    ok
boiler  pressure      0x04D2                12.34    bar   ok
boiler  counter       0x0001 0x1170         70000          ok
boiler  pump_running  1                     true           ok
boiler  flow          0x0239                56.9     m³/h  ok
boiler  model         0x4142 0x4344 0x4500  \"ABCDE\"        ok
",
        "{stderr}"
    );
    assert_eq!(code, Some(0), "{stderr}");
    // Not a terminal: the summary and no progress bar.
    assert_eq!(stderr, "6 points: 6 ok, 0 failed, 0 skipped\n");

    // Every device: the silent one shows its timeout, and the exit status says so.
    let config_path = config.clone();
    let (code, stdout, stderr) = tokio::task::spawn_blocking(move || probe(&config_path, &[]))
        .await
        .unwrap();
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    let gone: Vec<&str> = stdout.lines().filter(|l| l.starts_with("gone ")).collect();
    assert_eq!(gone.len(), 1, "{stdout}");
    assert!(
        gone[0].starts_with("gone    level ")
            && gone[0].ends_with("  mm    error: timed out after 200ms"),
        "{stdout}"
    );
    assert_eq!(stdout.lines().count(), 1 + 6 + 1, "{stdout}");
    assert_eq!(stderr, "7 points: 6 ok, 1 failed, 0 skipped\n");

    let (code, _, stderr) =
        tokio::task::spawn_blocking(move || probe(&config, &["--device", "boiler2"]))
            .await
            .unwrap();
    assert_eq!(code, Some(2));
    assert_eq!(
        stderr,
        "error: unknown device \"boiler2\" (the configuration has: boiler, gone)\n"
    );
}
