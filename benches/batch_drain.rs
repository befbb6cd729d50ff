//! Backlog drain through a broker limited to 100 publishes/s: `cargo bench --bench batch_drain`.
//!
//! A queue pre-filled with N QoS 1 samples (two devices of 20 points, their polls interleaved
//! as a gateway commits them) is drained by the real uplink (`uplink::Uplink::run`, in-process,
//! 64 in flight, `uplink.max_rate: 100`, the publish rate AWS IoT Core allows a connection) into
//! a loopback mosquitto through a byte-counting TCP proxy, until every row is acknowledged and
//! deleted. One row per `uplink.batch` value; `batch: none`, measured in the same run, is the
//! baseline of the ratios. N is 50,000 (the backlog of the issue), or `FR_DRAIN_ROWS`.
//!
//! With the default `max_packet` (64 KiB) a batched backlog of 50,000 samples is fewer
//! messages than the rate limit's one-second burst (100), so it drains at the speed of the
//! queue; the `4 KiB` rows need hundreds of messages and show the rate-bound regime, where a
//! token must buy a full message even though the two devices' polls interleave.
//!
//! `none` sends one message per sample, so at 100 msg/s 50,000 samples take about 8 minutes:
//! by default it drains the first tenth of the backlog and **extrapolates linearly** (the
//! rate limit makes its time linear in the rows); the table says so. `FR_DRAIN_FULL=1` drains
//! the whole backlog with `none` too. The batched rows repeat `FR_DRAIN_REPEAT` times
//! (default 3) and print min / median / max.
//!
//! Under `cargo test --all-targets` (no `--bench` argument) it drains 200 rows of each as a
//! smoke test. Needs `mosquitto` (scripts/test-deps.sh).

mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fieldrelay::config::{Batching, Qos, UplinkConfig, DEFAULT_MAX_PACKET};
use fieldrelay::queue::{Queue, QueueOptions};
use fieldrelay::sample::{Sample, Value};
use support::{BenchResult, Broker, DelayProxy};
use tokio_util::sync::CancellationToken;

const RATE: u32 = 100;
const POINTS: u64 = 20;

/// Backlog row `i`: device `boiler` or `pump` by poll, one sample per point and poll.
fn row(i: u64) -> Sample {
    let poll = i / POINTS;
    Sample {
        device: Arc::from(["boiler", "pump"][(poll % 2) as usize]),
        point: Arc::from(format!("p{}", i % POINTS).as_str()),
        value: Value::Float(20.0 + (i % 1000) as f64 / 8.0),
        ts_ms: 1_700_000_000_000 + (poll / 2) as i64 * 1000,
        qos: Qos::AtLeastOnce,
        retain: false,
    }
}

async fn fill(dir: &Path, n: u64) -> BenchResult<()> {
    let (queue, _live, writer) = Queue::open(dir, QueueOptions::default())?;
    for i in 0..n {
        queue.push(row(i)).await?;
    }
    queue.progress().wait_for(|p| p.last_seq >= n).await?;
    writer.close().await?;
    Ok(())
}

/// One drain of the queue in `dir`: its time, the bytes through the proxy and the publishes.
struct Drained {
    time: Duration,
    bytes: u64,
    messages: u64,
}

async fn drain(dir: &Path, broker: u16, batch: Batching) -> BenchResult<Drained> {
    let proxy = DelayProxy::start(broker, Duration::ZERO)?;
    let (queue, live, writer) = Queue::open(dir, QueueOptions::default())?;
    let client_id = format!("drain-{}", proxy.port);
    let config = UplinkConfig {
        keep_alive: Duration::from_secs(60),
        topic_prefix: "fieldrelay/bench".into(),
        response_timeout: Duration::from_secs(30),
        max_inflight: 64,
        max_rate: Some(RATE),
        batch,
        ..UplinkConfig::plain("127.0.0.1", proxy.port, &client_id)
    };
    let stats: Arc<fieldrelay::uplink::UplinkStats> = Default::default();
    let uplink = support::in_process_uplink(config, &queue, live, stats.clone())?;
    let cancel = CancellationToken::new();
    let start = Instant::now();
    let task = tokio::spawn(uplink.run(cancel.clone()));
    queue.progress().wait_for(|p| p.depth == 0).await?;
    let time = start.elapsed();
    let bytes = proxy.bytes();
    cancel.cancel();
    task.await?;
    writer.close().await?;
    Ok(Drained {
        time,
        bytes,
        messages: stats.snapshot().published,
    })
}

fn copy_queue(from: &Path, to: &Path) -> BenchResult<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        std::fs::copy(entry.path(), to.join(entry.file_name()))?;
    }
    Ok(())
}

fn env_u64(name: &str) -> BenchResult<Option<u64>> {
    match std::env::var(name) {
        Ok(text) => Ok(Some(text.parse()?)),
        Err(_) => Ok(None),
    }
}

fn main() -> BenchResult<()> {
    let full = std::env::args().any(|a| a == "--bench");
    let n = env_u64("FR_DRAIN_ROWS")?.unwrap_or(if full { 50_000 } else { 200 });
    let repeat = env_u64("FR_DRAIN_REPEAT")?.unwrap_or(if full { 3 } else { 1 }) as usize;
    let none_rows = match env_u64("FR_DRAIN_FULL")? {
        Some(1) => n,
        _ if full => n / 10,
        _ => n,
    };
    let base = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR"))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let port = support::free_port()?;
    let _broker = Broker::start(base.path(), "cloud", port, "")?;
    let template = base.path().join("template");
    let prefix = base.path().join("template-prefix");
    rt.block_on(fill(&template, n))?;
    if none_rows < n {
        rt.block_on(fill(&prefix, none_rows))?;
    }
    let max_packet = DEFAULT_MAX_PACKET;
    let cases = [
        ("none", Batching::None),
        ("per_device", Batching::PerDevice { max_packet }),
        (
            "per_device_compact",
            Batching::PerDeviceCompact { max_packet },
        ),
        // Messages small enough that the rate limit binds after the first second's burst.
        (
            "per_device, 4 KiB",
            Batching::PerDevice { max_packet: 4096 },
        ),
        (
            "compact, 4 KiB",
            Batching::PerDeviceCompact { max_packet: 4096 },
        ),
    ];
    println!(
        "backlog drain, {n} QoS 1 samples (2 devices x 20 points, polls interleaved), \
         uplink.max_rate {RATE}/s, 64 in flight, max_packet {max_packet} unless named, loopback \
         mosquitto"
    );
    println!(
        "| {:<20} | {:>28} | {:>9} | {:>9} | {:>10} | {:>12} |",
        "batch", "drain s (min / median / max)", "messages", "B/sample", "samples/s", "vs none"
    );
    println!(
        "|{:-<22}|{:->30}|{:->11}|{:->11}|{:->12}|{:->14}|",
        "", "", "", "", "", ""
    );
    let mut baseline = None;
    for (i, (name, batch)) in cases.into_iter().enumerate() {
        let (rows, source, runs) = match batch {
            Batching::None if none_rows < n => (none_rows, &prefix, 1),
            Batching::None => (n, &template, 1),
            _ => (n, &template, repeat.max(1)),
        };
        let mut times = Vec::new();
        let mut last = None;
        for run in 0..runs {
            let dir = base.path().join(format!("{i}-{run}"));
            copy_queue(source, &dir)?;
            let drained = rt.block_on(drain(&dir, port, batch))?;
            times.push(drained.time.as_secs_f64() * n as f64 / rows as f64);
            last = Some(drained);
            std::fs::remove_dir_all(&dir)?;
        }
        let Some(last) = last else { continue };
        let (min, median, max) = support::spread(&mut times);
        let baseline = *baseline.get_or_insert(median);
        let note = if rows < n {
            format!(
                " (first {rows} rows drained, time x{:.0}: linear)",
                n as f64 / rows as f64
            )
        } else {
            String::new()
        };
        println!(
            "| {name:<20} | {:>28} | {:>9} | {:>9.1} | {:>10.0} | {:>11.1}x |{note}",
            format!("{min:.2} / {median:.2} / {max:.2}"),
            last.messages * n / rows,
            last.bytes as f64 / rows as f64,
            n as f64 / median,
            baseline / median,
        );
    }
    Ok(())
}
