//! `fieldrelay queue stats|peek|export` against real parts: the `fieldrelay` binary as a child
//! process (the gateway, and the tool beside it), a simulated Modbus TCP device, a real mosquitto
//! and real SQLite files — the live queue while the gateway writes it, and a damaged one the
//! gateway quarantined.
//!
//! Every wait is for an observable state (a row committed, a message at the subscriber, a file
//! in the data directory), with a generous deadline: other builds share the two cores.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::{free_port, wait_until, write_config, Gateway, Mosquitto, Subscriber};
use fieldrelay::config::Qos;
use fieldrelay::queue::{Queue, QueueOptions};
use fieldrelay::sample::{Sample, Value};
use fieldrelay::simulator::{Registers, Simulator};
use tokio_util::sync::CancellationToken;

const DEADLINE: Duration = Duration::from_secs(60);

const COUNTER: &str =
    "      - {name: counter, table: holding, address: 4, type: u32, qos: 1, publish: on_change}\n";

/// `fieldrelay ARGS…`: exit code, stdout, stderr.
fn fieldrelay(args: &[&str]) -> (Option<i32>, String, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_fieldrelay"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run fieldrelay");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect()
}

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

fn u32_words(v: u32) -> [u16; 2] {
    [(v >> 16) as u16, v as u16]
}

fn committed(data_dir: &Path, value: i64) -> bool {
    fieldrelay::queue::read_only_rows(data_dir)
        .unwrap_or_default()
        .iter()
        .any(|row| &*row.sample.point == "counter" && row.sample.value == Value::Int(value))
}

fn str_arg(path: &Path) -> String {
    path.display().to_string()
}

/// Done when (issue 7): "`queue peek` shows the rows that are unsent during a broker outage
/// while the gateway runs" — and `queue stats` counts exactly those rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peek_and_stats_show_the_rows_queued_during_a_broker_outage() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let mut broker = Mosquitto::start(dir.path());
    let (regs, device_port, _sim) = start_simulator().await;
    regs.set_holding(1, 4, &u32_words(0));
    let config = write_config(dir.path(), broker.port, device_port, COUNTER);
    let topic = "fieldrelay/test-gw/boiler/counter";
    let mut sub = Subscriber::connect(broker.port, "queue-tools", &[topic]).await;
    let mut gateway = Gateway::start(&config);
    sub.until("the first counter sample", DEADLINE, |seen| {
        !seen.is_empty()
    })
    .await;
    let data = str_arg(&data_dir);
    let stats = move || {
        let (code, out, err) =
            fieldrelay(&["queue", "stats", "--data-dir", &data, "--format", "json"]);
        assert_eq!(code, Some(0), "{err}");
        serde_json::from_str::<serde_json::Value>(&out).unwrap()
    };
    let drained = stats.clone();
    tokio::task::spawn_blocking(move || {
        wait_until("the first sample acknowledged", DEADLINE, || {
            drained()["rows"] == 0
        })
    })
    .await
    .unwrap();

    // Outage: five new values are committed and stay queued.
    broker.stop();
    let (stepper, data) = (regs.clone(), data_dir.clone());
    tokio::task::spawn_blocking(move || {
        for value in 1..=5 {
            stepper.set_holding(1, 4, &u32_words(value));
            wait_until(&format!("counter {value} committed"), DEADLINE, || {
                committed(&data, i64::from(value))
            });
        }
    })
    .await
    .unwrap();

    let config_arg = str_arg(&config);
    let (code, out, err) = fieldrelay(&["queue", "peek", "--config", &config_arg, "-n", "100"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(err, "");
    let rows = json_lines(&out);
    let counter: Vec<&serde_json::Value> =
        rows.iter().filter(|r| r["point"] == "counter").collect();
    let values: Vec<i64> = counter
        .iter()
        .map(|r| r["value"].as_i64().unwrap())
        .collect();
    assert_eq!(values, [1, 2, 3, 4, 5], "{out}");
    let seqs: Vec<u64> = counter.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{out}");
    for row in &counter {
        assert_eq!(row["topic"], topic, "{row}");
        assert_eq!((&row["kind"], &row["qos"]), (&"sample".into(), &1.into()));
        // Never acknowledged; at most the first may have gone out to the dying socket.
        assert!(row["state"] == "queued" || row["state"] == "sent", "{row}");
    }

    let (code, out, _) = fieldrelay(&[
        "queue",
        "peek",
        "--data-dir",
        &str_arg(&data_dir),
        "-n",
        "2",
    ]);
    assert_eq!(code, Some(0));
    let two = json_lines(&out);
    assert_eq!(two.len(), 2);
    assert!(two[0].get("topic").is_none(), "no prefix without --config");

    let summary = stats();
    assert_eq!(summary["rows"], rows.len(), "{summary:#}");
    let point = summary["points"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["point"] == "counter")
        .unwrap_or_else(|| panic!("{summary:#}"));
    assert_eq!(point["rows"], 5);
    assert_eq!(point["first_seq"], seqs[0]);
    assert_eq!(point["last_seq"], seqs[4]);
    assert_eq!(summary["newest"]["seq"], seqs[4]);
    assert!(summary["last_seq"].as_u64().unwrap() >= seqs[4]);
    assert_eq!(summary["quarantined"], serde_json::json!([]));
    let (code, text, _) = fieldrelay(&["queue", "stats", "--config", &config_arg]);
    assert_eq!(code, Some(0));
    assert!(
        text.lines()
            .any(|l| l.starts_with("boiler  counter  sample  5 ")),
        "{text}"
    );
    assert!(gateway.is_running());

    // The broker is back: every value arrives and the queue empties.
    broker.restart();
    sub.until("the values queued during the outage", DEADLINE, |seen| {
        let values: BTreeSet<i64> = seen
            .iter()
            .filter_map(|m| m.payload["value"].as_i64())
            .collect();
        (1..=5).all(|v| values.contains(&v))
    })
    .await;
    tokio::task::spawn_blocking(move || {
        wait_until("peek to show an empty queue", DEADLINE, || {
            let (_, out, _) = fieldrelay(&["queue", "peek", "--config", &config_arg]);
            out.is_empty()
        })
    })
    .await
    .unwrap();
    let exit = tokio::task::spawn_blocking(move || gateway.terminate(DEADLINE))
        .await
        .unwrap();
    assert!(exit.success(), "{exit:?}");
}

/// Writes `n` committed rows (values 1..=n) to a queue in `data_dir`, closes it, and destroys
/// one page in the middle of the file.
async fn damaged_queue(data_dir: &Path, n: i64) {
    committed_queue(data_dir, n).await;
    let file = data_dir.join("queue.db");
    let mut bytes = std::fs::read(&file).unwrap();
    let middle = bytes.len() / 4096 / 2 * 4096;
    bytes[middle..middle + 4096].fill(0xA5);
    std::fs::write(&file, bytes).unwrap();
}

/// Writes `n` committed rows (values 1..=n) to a queue in `data_dir` and closes it.
async fn committed_queue(data_dir: &Path, n: i64) {
    let (queue, _live, writer) = Queue::open(data_dir, QueueOptions::default()).unwrap();
    for i in 1..=n {
        let sample = Sample {
            device: Arc::from("boiler"),
            point: Arc::from("counter"),
            value: Value::Int(i),
            ts_ms: 1_700_000_000_000 + i,
            qos: Qos::AtLeastOnce,
            retain: false,
        };
        queue.push(sample).await.unwrap();
    }
    queue.fetch(0, 0).await.unwrap();
    writer.close().await.unwrap();
}

fn quarantined(data_dir: &Path) -> Option<PathBuf> {
    std::fs::read_dir(data_dir)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| {
            let name = p.file_name().unwrap_or_default().to_string_lossy();
            name.starts_with("queue.db.corrupt-")
                && !name.ends_with("-wal")
                && !name.ends_with("-shm")
        })
}

/// Done when (issue 7, docs/operations.md "Recovery from a quarantined queue file"): the gateway
/// moves a damaged queue aside and starts a new one; `stats` lists the quarantined file, and
/// `export --file` recovers every row SQLite can still read from it, naming the range it lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_recovers_what_a_quarantined_queue_file_still_holds() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    std::fs::create_dir(&data_dir).unwrap();
    damaged_queue(&data_dir, 5000).await;
    // No broker and no device: the gateway only opens its queue and retries the rest.
    let config = write_config(dir.path(), free_port(), free_port(), COUNTER);
    let mut gateway = Gateway::start(&config);
    let data = data_dir.clone();
    let moved = tokio::task::spawn_blocking(move || {
        let mut moved = None;
        wait_until("the damaged file quarantined", DEADLINE, || {
            moved = quarantined(&data);
            moved.is_some() && data.join("queue.db-wal").exists()
        });
        moved
    })
    .await
    .unwrap()
    .unwrap();
    let exit = tokio::task::spawn_blocking(move || gateway.terminate(DEADLINE))
        .await
        .unwrap();
    assert!(exit.success(), "{exit:?}");
    let name = moved.file_name().unwrap().to_string_lossy().into_owned();
    let listing = || {
        let mut names: Vec<String> = std::fs::read_dir(&data_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    let before = listing();

    let data = str_arg(&data_dir);
    let (code, text, err) = fieldrelay(&["queue", "stats", "--data-dir", &data]);
    assert_eq!(code, Some(0), "{err}");
    assert!(text.contains("rows         0 (empty)\n"), "{text}");
    assert!(text.contains(&format!("quarantined  {name} ")), "{text}");

    // The damaged file cannot be summed up, but it can be exported.
    let file = str_arg(&moved);
    let (code, _, err) = fieldrelay(&["queue", "stats", "--file", &file]);
    assert_eq!(code, Some(65), "{err}");
    assert!(
        err.contains("is damaged") && err.contains("queue export --file"),
        "{err}"
    );

    let output = dir.path().join("recovered.jsonl");
    let out_arg = str_arg(&output);
    let (code, stdout, err) =
        fieldrelay(&["queue", "export", "--file", &file, "--output", &out_arg]);
    assert_eq!(code, Some(3), "{err}");
    assert_eq!(stdout, "");
    let rows = json_lines(&std::fs::read_to_string(&output).unwrap());
    let seqs: Vec<u64> = rows.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    for row in &rows {
        assert_eq!(
            row["value"], row["seq"],
            "values 1..=n were committed as seq 1..=n"
        );
    }
    assert!(seqs.windows(2).all(|w| w[0] < w[1]));
    // stderr names the lost range, exactly the seqs missing from the export.
    let lost = err
        .lines()
        .find_map(|l| l.strip_prefix("seq ")?.split_once(" could not be read"))
        .map(|(range, _)| range.to_owned())
        .unwrap_or_else(|| panic!("{err}"));
    let (from, to) = lost.split_once("..=").unwrap();
    let (from, to): (u64, u64) = (from.parse().unwrap(), to.parse().unwrap());
    let missing: Vec<u64> = (1..=5000).filter(|s| !seqs.contains(s)).collect();
    assert_eq!(missing, (from..=to).collect::<Vec<_>>(), "{err}");
    assert!(missing.len() < 500, "{err}");
    assert!(
        err.ends_with(&format!(
            "{} rows written; 1 unreadable range(s), 0 undecodable row(s)\n",
            rows.len()
        )),
        "{err}"
    );
    // An export never overwrites a file.
    let (code, _, err) = fieldrelay(&["queue", "export", "--file", &file, "--output", &out_arg]);
    assert_eq!(code, Some(73), "{err}");
    // Reading created nothing in the data directory.
    assert_eq!(listing(), before);

    // The new queue exports completely (to stdout).
    let (code, stdout, err) = fieldrelay(&["queue", "export", "--data-dir", &data]);
    assert_eq!(
        (code, stdout.as_str(), err.as_str()),
        (Some(0), "", "0 rows written\n")
    );
}

/// Done when (issue 7): "a progress bar on a terminal, quiet when not a TTY". Under a
/// pseudo-terminal (util-linux `script`), `queue export` redraws one bar line on stderr and
/// erases it before its summary; the quiet case (stderr a pipe) is checked above, where stderr
/// holds the summary alone.
#[tokio::test]
async fn export_draws_a_progress_bar_on_a_terminal_and_erases_it() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    std::fs::create_dir(&data_dir).unwrap();
    committed_queue(&data_dir, 3000).await;
    let output = dir.path().join("rows.jsonl");
    let command = format!(
        "{} queue export --data-dir {} --output {}",
        env!("CARGO_BIN_EXE_fieldrelay"),
        data_dir.display(),
        output.display()
    );
    let run = std::process::Command::new("script")
        .args(["--quiet", "--return", "--command", &command, "/dev/null"])
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run script (util-linux)");
    let terminal = String::from_utf8_lossy(&run.stdout);
    assert_eq!(run.status.code(), Some(0), "{terminal}");
    // Every drawing starts with "carriage return, erase the line"; the last full bar is drawn
    // when the work is done, then erased, then the summary follows on the clean line.
    let erase = "\r\x1b[2K";
    assert!(
        terminal.contains(&format!("{erase}[")),
        "no bar drawn: {terminal:?}"
    );
    let done = format!("[{}] 3000/3000 rows", "#".repeat(30));
    let tail = terminal
        .rsplit_once(&done)
        .map(|(_, tail)| tail)
        .unwrap_or_else(|| panic!("no finished bar: {terminal:?}"));
    assert!(
        tail.starts_with(erase) && tail.contains("3000 rows written"),
        "the bar is not erased before the summary: {tail:?}"
    );
    assert_eq!(
        json_lines(&std::fs::read_to_string(&output).unwrap()).len(),
        3000,
        "the export itself is complete"
    );
}
