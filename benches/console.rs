//! What the web console costs the sample path: pushing samples through `console::Tapped` (the
//! bus owners' sink with the console's value table beside it) against the plain sink, in the
//! same run.
//!
//! `cargo bench --bench console`. A plain `main` (no harness) that prints one table, well under
//! a minute on 2 cores:
//! - (i) `LatestValues::record` alone, 1,000 points round robin: the added work per sample;
//! - (ii) `Queue` as the sink (WAL, `synchronous=FULL`, under the target directory), N samples
//!   until committed: the baseline, what a sample costs today;
//! - (iii) `Tapped<Queue>`: the same through the console's sink.
//!
//! Reported as ratios to (ii); nothing is asserted. Without `--bench` (as `cargo test
//! --all-targets` runs it) it only smoke-tests on small counts.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fieldrelay::config::Qos;
use fieldrelay::console::{LatestValues, Tapped};
use fieldrelay::modbus::SampleSink;
use fieldrelay::queue::{Queue, QueueOptions};
use fieldrelay::sample::{Sample, Value};

const POINTS: usize = 1_000;
const REPEATS: usize = 3;

fn samples(n: usize) -> Vec<Sample> {
    let device: Arc<str> = Arc::from("bank");
    let points: Vec<Arc<str>> = (0..POINTS).map(|i| Arc::from(format!("p{i:04}"))).collect();
    (0..n)
        .map(|i| Sample {
            device: device.clone(),
            point: points[i % POINTS].clone(),
            value: Value::Float(20.0 + (i % 1000) as f64 / 8.0),
            ts_ms: 1_700_000_000_000 + i as i64,
            qos: Qos::AtLeastOnce,
            retain: false,
        })
        .collect()
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

/// Pushes `n` samples through `sink(queue)` and waits until the queue committed them.
async fn through<S: SampleSink>(
    dir: &Path,
    n: u64,
    sink: impl FnOnce(Queue) -> S,
) -> Result<Duration, Box<dyn std::error::Error>> {
    let (queue, _live, writer) = Queue::open(dir, QueueOptions::default())?;
    let mut progress = queue.progress();
    let input = samples(n as usize);
    let sink = sink(queue);
    let started = Instant::now();
    for sample in input {
        sink.push(sample).await;
    }
    while progress.borrow_and_update().last_seq < n {
        progress.changed().await?;
    }
    let elapsed = started.elapsed();
    drop(sink);
    writer.close().await?;
    Ok(elapsed)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let full = std::env::args().any(|a| a == "--bench");
    let (n_record, n_queue): (usize, u64) = if full {
        (2_000_000, 50_000)
    } else {
        (10_000, 500)
    };
    let base = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR"))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;

    let input = samples(n_record);
    let mut record_times = Vec::new();
    for _ in 0..REPEATS {
        let values = LatestValues::default();
        let started = Instant::now();
        for sample in &input {
            values.record(sample);
        }
        record_times.push(started.elapsed());
    }
    let mut plain_times = Vec::new();
    let mut tapped_times = Vec::new();
    for run in 0..REPEATS {
        let dir = base.path().join(format!("run{run}"));
        plain_times.push(rt.block_on(through(&dir.join("plain"), n_queue, |q| q))?);
        let values = Arc::new(LatestValues::default());
        tapped_times.push(
            rt.block_on(through(&dir.join("tapped"), n_queue, |q| Tapped {
                inner: q,
                values: Some(values),
            }))?,
        );
    }
    let per = |d: Duration, n: u64| d.as_nanos() as f64 / n as f64;
    let record = per(median(record_times), n_record as u64);
    let plain = per(median(plain_times), n_queue);
    let tapped = per(median(tapped_times), n_queue);
    println!(
        "median of {REPEATS} runs; {POINTS} points round robin; queue under {}",
        base.path().display()
    );
    println!(
        "| {:<44} | {:>12} | {:>12} |",
        "case", "ns/sample", "vs baseline"
    );
    println!("|{:-<46}|{:->14}|{:->14}|", "", "", "");
    for (name, ns) in [
        ("(i) LatestValues::record alone", record),
        ("(ii) Queue as the sink (baseline)", plain),
        ("(iii) Tapped<Queue> (console configured)", tapped),
    ] {
        println!("| {name:<44} | {ns:>12.0} | {:>11.3}x |", ns / plain);
    }
    Ok(())
}
