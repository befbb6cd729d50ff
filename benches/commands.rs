//! A command burst end to end: `cargo bench --bench commands`.
//!
//! A plain `main` that prints one table, every row measured in the same run against a loopback
//! mosquitto:
//!
//! - **burst**: N mixed QoS 1 commands (half of them writes, the rest refused for range, type,
//!   unknown point or age) published as fast as the broker takes them to the `fieldrelay`
//!   binary (its command inbox, our simulator as the device); time until every command's result
//!   arrived.
//! - **paced**: the same commands in chunks of 100, each chunk sent once the previous chunk's
//!   results arrived (how a careful sender avoided the old intake's limits).
//! - **baseline**: the same N payloads through mosquitto alone, one publisher to one subscriber
//!   (the bare round trip, nothing durable, nothing written to a device).
//!
//! Under `cargo test --all-targets` (no `--bench` argument) it runs a small N as a smoke test.
//! Needs `mosquitto` (scripts/test-deps.sh); skipped without it.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{publish_burst, start_simulator, Gateway, Mosquitto, Subscriber};
use fieldrelay::sample::now_ms;

const P: &str = "fieldrelay/bench-gw";
const DEADLINE: Duration = Duration::from_secs(600);

fn write_config(dir: &Path, broker: u16, device: u16) -> std::path::PathBuf {
    let path = dir.join("gateway.yaml");
    let text = format!(
        "gateway:\n  id: bench-gw\n  data_dir: {data}\nuplink:\n  url: mqtt://127.0.0.1:{broker}\n\
         commands:\n  max_age: 1h\nbuses:\n  - {{name: plc1, type: tcp, host: 127.0.0.1, port: {device}}}\n\
         devices:\n  - name: boiler\n    bus: plc1\n    poll_interval: 1s\n    points:\n\
         {points}      - {{name: limited, table: holding, address: 10, type: u16, writable: true, max: 90}}\n",
        data = dir.join("data").display(),
        points = (0..4)
            .map(|i| format!("      - {{name: p{i}, table: holding, address: {i}, type: u16, writable: true}}\n"))
            .collect::<String>(),
    );
    std::fs::write(&path, text).expect("write the bench config");
    path
}

/// N commands with ids `<run>0…`: half writes (each point's values increasing), the rest
/// refused.
fn commands(run: &str, n: usize) -> Vec<(String, String)> {
    let now = now_ms();
    (0..n)
        .map(|i| {
            let point = (i / 10) % 4;
            let (topic, value, ts) = match i % 10 {
                0..=4 => (format!("boiler/p{point}/set"), (i + 1).to_string(), now),
                5 => ("boiler/limited/set".into(), (100 + i).to_string(), now),
                6 => (format!("boiler/p{point}/set"), "\"warm\"".into(), now),
                7 => (format!("boiler/nope{i}/set"), "1".into(), now),
                _ => (format!("boiler/p{point}/set"), "1".into(), now - 7_200_000),
            };
            (
                format!("{P}/{topic}"),
                format!(r#"{{"id":"{run}{i}","value":{value},"ts":{ts}}}"#),
            )
        })
        .collect()
}

/// Waits until `sub` saw `n` more messages than `before`; returns the new count.
async fn results(sub: &mut Subscriber, before: usize, n: usize) -> usize {
    sub.until("the results", DEADLINE, |seen| seen.len() >= before + n)
        .await;
    sub.seen.len()
}

async fn run(n: usize) -> Option<[(String, Duration); 3]> {
    if std::process::Command::new("mosquitto")
        .arg("-h")
        .output()
        .is_err()
    {
        return None;
    }
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).ok()?;
    let broker = Mosquitto::start(dir.path());
    let burst = commands("burst", n);

    // Baseline: mosquitto alone, the same payloads.
    let raw_filter = "bench/raw/#";
    let mut raw = Subscriber::connect(broker.port, "bench-raw", &[raw_filter]).await;
    let probe = vec![("bench/raw/probe".to_owned(), "0".to_owned())];
    while !raw
        .try_until(Duration::from_millis(200), |seen| !seen.is_empty())
        .await
    {
        publish_burst(broker.port, "bench-raw-pub", probe.clone()).await;
    }
    let before = raw.seen.len();
    let messages = burst
        .iter()
        .map(|(_, payload)| ("bench/raw/x".to_owned(), payload.clone()))
        .collect();
    let start = Instant::now();
    publish_burst(broker.port, "bench-raw-pub", messages).await;
    results(&mut raw, before, n).await;
    let baseline = start.elapsed();

    let (_regs, device, _sim) = start_simulator().await;
    let config = write_config(dir.path(), broker.port, device);
    let _gateway = Gateway::start_with_env(&config, &[("RUST_LOG", "warn")]);
    let mut sub = Subscriber::connect(
        broker.port,
        "bench-results",
        &[&format!("{P}/+/+/set/result")],
    )
    .await;
    // Until the gateway answers, its subscription is not live.
    while !sub
        .try_until(Duration::from_millis(500), |seen| !seen.is_empty())
        .await
    {
        let probe = vec![(format!("{P}/boiler/nope/set"), "1".to_owned())];
        publish_burst(broker.port, "bench-probe", probe).await;
    }
    let mut seen = sub.seen.len();

    let start = Instant::now();
    publish_burst(broker.port, "bench-burst", burst.clone()).await;
    seen = results(&mut sub, seen, n).await;
    let whole = start.elapsed();

    let start = Instant::now();
    for chunk in commands("paced", n).chunks(100) {
        publish_burst(broker.port, "bench-paced", chunk.to_vec()).await;
        seen = results(&mut sub, seen, chunk.len()).await;
    }
    let paced = start.elapsed();
    Some([
        ("fieldrelay, the whole burst at once".into(), whole),
        ("fieldrelay, paced at 100 per chunk".into(), paced),
        (
            "mosquitto alone, publisher to subscriber (baseline)".into(),
            baseline,
        ),
    ])
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let n = if full { 5000 } else { 200 };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let Some(rows) = rt.block_on(run(n)) else {
        println!("commands: skipped (mosquitto not found; see scripts/test-deps.sh)");
        return;
    };
    let rate = |d: &Duration| n as f64 / d.as_secs_f64();
    let baseline = rate(&rows[2].1);
    println!("a burst of {n} mixed QoS 1 commands, each answered on …/set/result");
    println!(
        "| {:<52} | {:>8} | {:>10} | {:>11} |",
        "case", "time s", "per s", "vs baseline"
    );
    println!("|{:-<54}|{:->10}|{:->12}|{:->13}|", "", "", "", "");
    for (case, time) in &rows {
        println!(
            "| {:<52} | {:>8.3} | {:>10.0} | {:>10.3}x |",
            case,
            time.as_secs_f64(),
            rate(time),
            rate(time) / baseline
        );
    }
}
