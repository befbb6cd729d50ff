//! `fieldrelay check --budget` against the bytes a TCP proxy counts: the gateway runs an
//! example-like configuration (two devices, QoS 0, 1 and 2, a retained point, a writable one)
//! over TLS to a real mosquitto through a byte-counting proxy, and the model's stream bytes for
//! the measured window must be within 25% of what crossed the proxy.
//!
//! Every point is `every_poll`, which is what the model assumes for `on_change` (its worst case,
//! a change every poll): the comparison checks the byte model, not a simulator's waveform.
//! Intervals are shortened (polls every 200 ms, a health report and a PINGREQ every 2 s) so
//! a few seconds show every source; the 10-minute run of `config/example.yaml` itself is the
//! `budget` benchmark. The window is bounded by awaited events (samples seen by a subscriber),
//! after the connection was made, so the connection's own bytes are outside it.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::pki::TestPki;
use common::{free_port, port_accepts, wait_until, Gateway, Mosquitto, Subscriber};
use fieldrelay::budget::Source;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

/// Polls of the window.
const POLLS: usize = 40;

/// Forwards every connection on its port to `target`, counting the bytes both ways.
async fn counting_proxy(target: u16, cancel: CancellationToken) -> (u16, Arc<AtomicU64>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let counted = Arc::new(AtomicU64::new(0));
    let total = counted.clone();
    tokio::spawn(async move {
        loop {
            let (inbound, _) = tokio::select! {
                () = cancel.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(_) => return,
                },
            };
            let Ok(outbound) = tokio::net::TcpStream::connect(("127.0.0.1", target)).await else {
                continue;
            };
            let (a_read, a_write) = inbound.into_split();
            let (b_read, b_write) = outbound.into_split();
            tokio::spawn(pipe(a_read, b_write, total.clone()));
            tokio::spawn(pipe(b_read, a_write, total.clone()));
        }
    });
    (port, counted)
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    counted: Arc<AtomicU64>,
) {
    let mut buf = vec![0u8; 1 << 16];
    while let Ok(n) = from.read(&mut buf).await {
        if n == 0 || to.write_all(&buf[..n]).await.is_err() {
            break;
        }
        counted.fetch_add(n as u64, Ordering::Relaxed);
    }
    let _ = to.shutdown().await;
}

fn config_text(dir: &std::path::Path, proxy: u16, device: u16, ca: &std::path::Path) -> String {
    format!(
        "gateway:
  id: test-gw
  data_dir: {data}
uplink:
  url: mqtts://127.0.0.1:{proxy}
  tls: {{ca_file: {ca}}}
  keep_alive: 2s
  health_interval: 2s
  health_heartbeat: 2s
buses:
  - {{name: plc1, type: tcp, host: 127.0.0.1, port: {device}, timeout: 500ms}}
devices:
  - name: boiler
    bus: plc1
    poll_interval: 200ms
    points:
      - {{name: temperature, table: holding, address: 0, type: f32, publish: every_poll}}
      - {{name: pressure, table: holding, address: 2, type: u16, scale: 0.01, publish: every_poll}}
      - {{name: counter, table: holding, address: 4, type: u32, publish: every_poll}}
      - {{name: pump_running, table: coil, address: 0, type: bool, publish: every_poll}}
      - {{name: flow, table: input, address: 0, type: i16, scale: 0.1, qos: 0, publish: every_poll}}
      - {{name: setpoint, table: holding, address: 6, type: f32, writable: true, publish: every_poll}}
  - name: chiller
    bus: plc1
    unit_id: 2
    poll_interval: 200ms
    points:
      - {{name: supply_temp, table: input, address: 0, type: f32, publish: every_poll}}
      - {{name: alarm, table: discrete_input, address: 0, type: bool, qos: 2, retain: true, publish: every_poll}}
",
        data = dir.join("data").display(),
        ca = ca.display(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budget_is_within_a_quarter_of_the_bytes_a_proxy_counts() {
    measure(|text| text, "fieldrelay/test-gw/boiler/counter").await;
}

/// The same devices over MQTT 5 (a property length per packet, topic aliases under mosquitto's
/// default maximum of 10 for the 8 data topics and the health topic, Message Expiry on the rows
/// of a point with `max_age`): the model of `protocol: mqtt5` against the proxy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt5_budget_is_within_a_quarter_of_the_bytes_a_proxy_counts() {
    let mqtt5 = |text: String| {
        text.replacen(
            "  health_heartbeat: 2s\n",
            "  health_heartbeat: 2s\n  protocol: mqtt5\n",
            1,
        )
        .replacen(
            "type: f32, publish: every_poll}",
            "type: f32, max_age: 1h, publish: every_poll}",
            1,
        )
    };
    measure(mqtt5, "fieldrelay/test-gw/boiler/counter").await;
}

/// The same devices as a Sparkplug edge node (aliases, QoS 0 DDATA with a PINGREQ barrier, an
/// NDATA of the health figures): the model of `profile: sparkplug` against the proxy. The
/// retained QoS 2 point stays queued (Sparkplug sends it as DDATA like the others).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sparkplug_budget_is_within_a_quarter_of_the_bytes_a_proxy_counts() {
    let sparkplug = |text: String| {
        text.replacen(
            "  health_heartbeat: 2s\n",
            "  health_heartbeat: 2s\n  profile: sparkplug\n  sparkplug: {group_id: plant}\n",
            1,
        )
        .replace(", retain: true", "")
        .replace(", writable: true", "")
    };
    // One DDATA per poll carries the chiller's queued rows.
    measure(sparkplug, "spBv1.0/plant/DDATA/test-gw/chiller").await;
}

/// Runs the gateway on `config_text` as `edit` changes it, counts the polls of the window by the
/// messages on `topic`, and compares the proxy's bytes with the budget's.
async fn measure(edit: impl FnOnce(String) -> String, topic: &str) {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::generate(&dir.path().join("pki"));
    let tls_port = free_port();
    let broker = Mosquitto::start_with(
        dir.path(),
        &format!(
            "listener {tls_port} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\n",
            pki.ca.display(),
            pki.server_cert.display(),
            pki.server_key.display()
        ),
    );
    wait_until("the tls listener", Duration::from_secs(10), || {
        port_accepts(tls_port)
    });
    let cancel = CancellationToken::new();
    let (proxy, counted) = counting_proxy(tls_port, cancel.clone()).await;
    let device = free_port();
    let path = dir.path().join("gateway.yaml");
    std::fs::write(&path, edit(config_text(dir.path(), proxy, device, &pki.ca))).unwrap();
    let config = fieldrelay::config::load(&path).expect("a valid configuration");
    let budget = fieldrelay::budget::estimate(&config);
    let simulated = config.clone();
    let sim_cancel = cancel.clone();
    tokio::spawn(
        async move { fieldrelay::simulator::run_from_config(&simulated, sim_cancel).await },
    );
    wait_until("the simulator", Duration::from_secs(10), || {
        port_accepts(device)
    });
    let mut sub = Subscriber::connect(broker.port, "budget-sub", &[topic]).await;
    let _gateway = Gateway::start(&path);

    sub.until("the first samples", Duration::from_secs(30), |seen| {
        seen.len() >= 5
    })
    .await;
    let (start, bytes0, n0) = (
        Instant::now(),
        counted.load(Ordering::Relaxed),
        sub.seen.len(),
    );
    sub.until("the window's samples", Duration::from_secs(60), |seen| {
        seen.len() >= n0 + POLLS
    })
    .await;
    let (elapsed, measured) = (start.elapsed(), counted.load(Ordering::Relaxed) - bytes0);
    // Samples by the polls counted (a slow machine polls late, not less per poll), the timers
    // (health, pings) by the time that passed; no connection was made in the window.
    let polls_per_day = 86_400.0 / 0.2;
    let expected: f64 = budget
        .lines
        .iter()
        .map(|line| match line.source {
            Source::Device => line.per_day.stream * POLLS as f64 / polls_per_day,
            Source::Fixed if line.name.starts_with("connection") => 0.0,
            Source::Fixed => line.per_day.stream * elapsed.as_secs_f64() / 86_400.0,
        })
        .sum();
    let ratio = expected / measured as f64;
    println!(
        "{POLLS} polls in {elapsed:?}: proxy counted {measured} bytes, the budget expects {expected:.0} (ratio {ratio:.3})"
    );
    assert!(
        (0.75..=1.25).contains(&ratio),
        "the budget expects {expected:.0} bytes, the proxy counted {measured} (ratio {ratio:.3})\n{}",
        budget.render()
    );
    cancel.cancel();
}
