//! Queue commit throughput: group commit through `Queue` against plain rusqlite batches.
//!
//! `cargo bench --bench queue`. A plain `main` (no harness) that prints one table; it must stay
//! under a minute on 2 cores. All databases live under the target directory (a real disk, not a
//! tmpfs), with the queue's pragmas (WAL, `synchronous=FULL`), so every commit is an fsync.
//!
//! - (i) `Queue`: one producer pushes N samples, then waits on `progress()` until `last_seq`
//!   reaches N; the writer thread groups what is waiting (up to `max_batch`) per transaction.
//! - (ii) baseline: plain rusqlite into an identical schema, 1000 rows per transaction.
//! - (iii) plain rusqlite, one row per transaction (smaller N): what a naive writer gets.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fieldrelay::config::Qos;
use fieldrelay::queue::{Queue, QueueOptions};
use fieldrelay::sample::{Sample, Value};
use rusqlite::{params, Connection};

const N_GROUPED: u64 = 50_000;
const N_SINGLE: u64 = 2_000;
const BASELINE_BATCH: u64 = 1_000;
const REPEATS: usize = 3;

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

/// Same schema and pragmas as `src/queue/store.rs` (kept in sync by hand: the baseline must not
/// go through the code it is measured against).
const SCHEMA: &str = "CREATE TABLE messages (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    device     TEXT    NOT NULL,
    point      TEXT    NOT NULL,
    body       TEXT    NOT NULL,
    ts_ms      INTEGER NOT NULL,
    qos        INTEGER NOT NULL,
    retain     INTEGER NOT NULL,
    kind       INTEGER NOT NULL DEFAULT 0,
    expires_ms INTEGER,
    state      INTEGER NOT NULL DEFAULT 0,
    pkid       INTEGER
);
CREATE INDEX messages_unsettled ON messages(seq) WHERE state != 0;
CREATE INDEX messages_expiry ON messages(expires_ms) WHERE expires_ms IS NOT NULL;";
const INSERT: &str = "INSERT INTO messages (device, point, body, ts_ms, qos, retain, kind, \
     expires_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0, NULL)";

const POINTS: [&str; 2] = ["temperature", "pressure"];

fn sample(i: u64) -> Sample {
    Sample {
        device: Arc::from("plc1"),
        point: Arc::from(POINTS[(i % 2) as usize]),
        value: Value::Float(20.0 + (i % 1000) as f64 / 8.0),
        ts_ms: 1_700_000_000_000 + i as i64,
        qos: Qos::AtLeastOnce,
        retain: false,
    }
}

fn open_plain(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    let _: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.execute_batch(SCHEMA)?;
    Ok(conn)
}

/// Plain rusqlite: `n` rows, `per_tx` rows per transaction.
fn plain(path: &Path, n: u64, per_tx: u64) -> rusqlite::Result<Duration> {
    let mut conn = open_plain(path)?;
    let start = Instant::now();
    let mut i = 0;
    while i < n {
        let tx = conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached(INSERT)?;
            for _ in 0..per_tx.min(n - i) {
                let s = sample(i);
                stmt.execute(params![
                    &*s.device,
                    &*s.point,
                    s.value.to_json(),
                    s.ts_ms,
                    s.qos as i64,
                    s.retain
                ])?;
                i += 1;
            }
        }
        tx.commit()?;
    }
    Ok(start.elapsed())
}

/// Through the queue: push everything, wait until the last row is committed.
async fn grouped(dir: &Path, n: u64) -> Result<Duration, Box<dyn std::error::Error>> {
    let (queue, _live, writer) = Queue::open(dir, QueueOptions::default())?;
    let mut progress = queue.progress();
    let start = Instant::now();
    for i in 0..n {
        queue.push(sample(i)).await?;
    }
    progress.wait_for(|p| p.last_seq >= n).await?;
    let elapsed = start.elapsed();
    writer.close().await?;
    Ok(elapsed)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let base = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR"))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;

    // Each case runs REPEATS times on a fresh file; the median damps one-off fsync stalls.
    let mut queue_times = Vec::new();
    let mut baseline_times = Vec::new();
    let mut single_times = Vec::new();
    for run in 0..REPEATS {
        let dir = base.path().join(format!("run{run}"));
        std::fs::create_dir_all(&dir)?;
        queue_times.push(rt.block_on(grouped(&dir.join("queue"), N_GROUPED))?);
        baseline_times.push(plain(&dir.join("baseline.db"), N_GROUPED, BASELINE_BATCH)?);
        single_times.push(plain(&dir.join("single.db"), N_SINGLE, 1)?);
    }
    let queue_time = median(queue_times);
    let baseline_time = median(baseline_times);
    let single_time = median(single_times);

    let rate = |n: u64, d: Duration| n as f64 / d.as_secs_f64();
    let baseline = rate(N_GROUPED, baseline_time);
    let rows = [
        (
            "(i) Queue, group commit (max_batch 1000)",
            N_GROUPED,
            queue_time,
        ),
        (
            "(ii) rusqlite, 1000 rows/tx (baseline)",
            N_GROUPED,
            baseline_time,
        ),
        ("(iii) rusqlite, 1 row/tx", N_SINGLE, single_time),
    ];
    println!(
        "WAL, synchronous=FULL, median of {REPEATS} runs, db under {}",
        base.path().display()
    );
    println!(
        "| {:<42} | {:>6} | {:>8} | {:>10} | {:>11} |",
        "case", "rows", "time s", "rows/s", "vs baseline"
    );
    println!(
        "|{:-<44}|{:->8}|{:->10}|{:->12}|{:->13}|",
        "", "", "", "", ""
    );
    for (name, n, d) in rows {
        let r = rate(n, d);
        println!(
            "| {:<42} | {:>6} | {:>8.3} | {:>10.0} | {:>10.3}x |",
            name,
            n,
            d.as_secs_f64(),
            r,
            r / baseline
        );
    }
    Ok(())
}
