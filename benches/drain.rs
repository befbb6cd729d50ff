//! Backlog drain and bytes on disk: `cargo bench --bench drain`.
//!
//! A plain `main` that prints two tables, each with its baseline measured in the same run:
//!
//! - **drain**: a queue pre-filled with N QoS 1 samples is drained by the uplink (the real
//!   `uplink::Uplink::run`, persistent session, 64 in flight) into a loopback mosquitto, until every
//!   row is acknowledged and deleted — with every packet id committed before its PUBLISH and every
//!   PUBACK's delete committed (WAL, `synchronous=FULL`). Baseline: `mosquitto_pub -q 1 -M 64 -l`
//!   publishing the same N payloads on the same topic (in memory, nothing durable).
//! - **bytes on disk per queued sample**: size of `queue.db` (closed, WAL checkpointed) holding
//!   N samples, divided by N; baseline: the bytes of one sample's MQTT PUBLISH on the wire.
//!
//! Under `cargo test --all-targets` (no `--bench` argument) it runs a small N as a smoke test.
//! Needs `mosquitto` and `mosquitto_pub` (scripts/test-deps.sh); the drain table is skipped
//! without them.

mod support;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fieldrelay::config::UplinkConfig;
use fieldrelay::queue::{Queue, QueueOptions};
use tokio_util::sync::CancellationToken;

const TOPIC: &str = "fieldrelay/bench/boiler/temperature";

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

struct Broker(std::process::Child);

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_mosquitto(dir: &Path) -> Option<(Broker, u16)> {
    let port = free_port().ok()?;
    let conf = dir.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!("listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\n"),
    )
    .ok()?;
    let mosquitto = ["mosquitto", "/usr/sbin/mosquitto"]
        .into_iter()
        .find(|m| Command::new(m).arg("-h").output().is_ok())?;
    let child = Command::new(mosquitto)
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let broker = Broker(child);
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if start.elapsed() > Duration::from_secs(10) {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Some((broker, port))
}

async fn fill(dir: &Path, n: u64) -> Result<(), Box<dyn std::error::Error>> {
    let (queue, _live, writer) = Queue::open(dir, QueueOptions::default())?;
    for i in 0..n {
        queue.push(support::backlog_sample(i)).await?;
    }
    queue.progress().wait_for(|p| p.last_seq >= n).await?;
    writer.close().await?;
    Ok(())
}

fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// The uplink drains a pre-filled queue; returns the time until depth 0.
async fn drain(dir: &Path, port: u16) -> Result<Duration, Box<dyn std::error::Error>> {
    let (queue, live, writer) = Queue::open(dir, QueueOptions::default())?;
    let config = UplinkConfig {
        keep_alive: Duration::from_secs(30),
        topic_prefix: "fieldrelay/bench".into(),
        reconnect_initial: Duration::from_millis(100),
        reconnect_max: Duration::from_secs(1),
        response_timeout: Duration::from_secs(30),
        max_inflight: 64,
        ..UplinkConfig::plain("127.0.0.1", port, &format!("bench-{port}"))
    };
    let uplink = support::in_process_uplink(config, &queue, live, Default::default())
        .map_err(|e| e.to_string())?;
    let cancel = CancellationToken::new();
    let start = Instant::now();
    let task = tokio::spawn(uplink.run(cancel.clone()));
    queue.progress().wait_for(|p| p.depth == 0).await?;
    let elapsed = start.elapsed();
    cancel.cancel();
    task.await?;
    writer.close().await?;
    Ok(elapsed)
}

/// `mosquitto_pub -q 1 -M 64 -l` publishing the same payloads; returns its run time.
fn mosquitto_pub(port: u16, n: u64) -> Option<Duration> {
    let mut input = Vec::new();
    for i in 0..n {
        let s = support::backlog_sample(i);
        let payload = fieldrelay::queue::wire::sample_payload(&s, Some(i + 1));
        input.extend_from_slice(&payload);
        input.push(b'\n');
    }
    let start = Instant::now();
    let mut child = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-q", "1", "-M", "64", "-t", TOPIC, "-l"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    child.stdin.take()?.write_all(&input).ok()?;
    let status = child.wait().ok()?;
    status.success().then(|| start.elapsed())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let full = std::env::args().any(|a| a == "--bench");
    let n: u64 = if full { 20_000 } else { 500 };
    let base = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR"))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;

    // Bytes on disk.
    let dir = base.path().join("size");
    rt.block_on(fill(&dir, n))?;
    let on_disk = file_size(&dir.join("queue.db")) + file_size(&dir.join("queue.db-wal"));
    let per_sample = on_disk as f64 / n as f64;
    let wire = {
        let s = support::backlog_sample(n / 2);
        let payload = fieldrelay::queue::wire::sample_payload(&s, Some(n / 2));
        // Fixed header (2) + topic length (2) + topic + packet id (2) + payload.
        2 + 2 + TOPIC.len() + 2 + payload.len()
    };
    println!("bytes on disk per queued sample ({n} samples, WAL checkpointed)");
    println!(
        "| {:<44} | {:>10} | {:>11} |",
        "case", "bytes", "vs baseline"
    );
    println!("|{:-<46}|{:->12}|{:->13}|", "", "", "");
    println!(
        "| {:<44} | {:>10.1} | {:>10.2}x |",
        "queue.db per sample (schema v2)",
        per_sample,
        per_sample / wire as f64
    );
    println!(
        "| {:<44} | {:>10} | {:>10.2}x |",
        "MQTT PUBLISH of one sample (baseline)", wire, 1.0
    );
    println!();

    // Drain.
    let Some((_broker, port)) = start_mosquitto(base.path()) else {
        println!("drain: skipped (mosquitto not found; see scripts/test-deps.sh)");
        return Ok(());
    };
    let dir = base.path().join("drain");
    rt.block_on(fill(&dir, n))?;
    let ours = rt.block_on(drain(&dir, port))?;
    let Some(theirs) = mosquitto_pub(port, n) else {
        println!("drain: skipped (mosquitto_pub failed)");
        return Ok(());
    };
    let rate = |d: Duration| n as f64 / d.as_secs_f64();
    println!("backlog drain at QoS 1 to a loopback mosquitto, {n} messages, 64 in flight");
    println!(
        "| {:<44} | {:>8} | {:>10} | {:>11} |",
        "case", "time s", "msgs/s", "vs baseline"
    );
    println!("|{:-<46}|{:->10}|{:->12}|{:->13}|", "", "", "", "");
    println!(
        "| {:<44} | {:>8.3} | {:>10.0} | {:>10.3}x |",
        "fieldrelay uplink from queue.db (durable)",
        ours.as_secs_f64(),
        rate(ours),
        rate(ours) / rate(theirs)
    );
    println!(
        "| {:<44} | {:>8.3} | {:>10.0} | {:>10.3}x |",
        "mosquitto_pub -q 1 -M 64 -l (baseline)",
        theirs.as_secs_f64(),
        rate(theirs),
        1.0
    );
    Ok(())
}
