//! `fieldrelay queue stats|peek|export` against real parts: the `fieldrelay` binary as a child
//! process (the gateway, and the tool beside it), a simulated Modbus TCP device, a real mosquitto
//! and real SQLite files — the live queue while the gateway writes it, and a damaged one the
//! gateway quarantined.
//!
//! Every wait is for an observable state (a row committed, a message at the subscriber, a file
//! in the data directory), with a generous deadline: other builds share the two cores.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::{
    free_port, start_simulator, u32_words, wait_until, write_config, Gateway, Mosquitto, Subscriber,
};
use fieldrelay::config::Qos;
use fieldrelay::queue::{Queue, QueueOptions};
use fieldrelay::sample::{Sample, Value};

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

/// `sqlite3` if it is installed and can run `.recover` (it needs `sqlite_dbpage`, which Debian
/// 12's build lacks: its `.recover` fails on any file).
fn capable_sqlite3_shell(intact: &Path) -> bool {
    std::process::Command::new("sqlite3")
        .arg(intact)
        .arg(".recover")
        .output()
        .is_ok_and(|out| {
            out.status.success() && String::from_utf8_lossy(&out.stdout).contains("INSERT")
        })
}

/// The `seq`s of queue rows the shell's `.recover` finds: the `messages` table it rebuilds, and
/// its `lost_and_found` rows shaped like queue rows.
fn shell_recover(file: &Path, work: &Path) -> BTreeSet<u64> {
    let sql = std::process::Command::new("sqlite3")
        .arg(file)
        .arg(".recover")
        .output()
        .expect("run sqlite3");
    let rebuilt = work.join("recovered-by-sqlite3.db");
    let _ = std::fs::remove_file(&rebuilt);
    let mut load = std::process::Command::new("sqlite3")
        .arg(&rebuilt)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("run sqlite3");
    std::io::Write::write_all(load.stdin.as_mut().unwrap(), &sql.stdout).unwrap();
    drop(load.stdin.take());
    load.wait().unwrap();
    let conn = rusqlite::Connection::open(&rebuilt).unwrap();
    let mut seqs = BTreeSet::new();
    for sql in [
        "SELECT seq FROM messages",
        "SELECT id FROM lost_and_found WHERE nfield BETWEEN 7 AND 11 AND c0 IS NULL \
         AND typeof(c1) = 'text' AND typeof(c4) = 'integer' AND c5 IN (1, 2)",
    ] {
        if let Ok(mut stmt) = conn.prepare(sql) {
            let rows = stmt.query_map([], |r| r.get::<_, i64>(0)).unwrap();
            seqs.extend(
                rows.filter_map(Result::ok)
                    .filter_map(|s| u64::try_from(s).ok()),
            );
        }
    }
    seqs
}

/// The rows SQLite's own b-tree still reads, each looked up by its `seq` through a connection
/// that tolerates a file cut short (`writable_schema`), as text per column. SQLite reads a page
/// cut short as if its tail were zeros, so a row whose cell was cut may come back with a
/// zeroed tail: only rows equal to the intact file's count as read.
fn sqlite_rows(file: &Path, last_seq: u64) -> std::collections::BTreeMap<u64, Vec<String>> {
    let uri = format!("file:{}?immutable=1", file.display());
    let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_URI;
    let mut rows = std::collections::BTreeMap::new();
    let Ok(conn) = rusqlite::Connection::open_with_flags(uri, flags) else {
        return rows;
    };
    let _ = conn.pragma_update(None, "writable_schema", true);
    let Ok(mut stmt) = conn.prepare(
        "SELECT seq, device, point, body, ts_ms, qos, retain, kind, expires_ms, state, pkid \
         FROM messages WHERE seq = ?1",
    ) else {
        return rows;
    };
    for seq in 1..=last_seq {
        let row = stmt.query_row([seq as i64], |r| {
            (0..11)
                .map(|i| r.get_ref(i).map(|v| format!("{v:?}")))
                .collect::<Result<Vec<String>, _>>()
        });
        if let Ok(row) = row {
            rows.insert(seq, row);
        }
    }
    rows
}

/// Done when (issue 12, recovery): a real queue file (4000 rows of three points and device
/// statuses, a quarter acknowledged so the free list holds old pages, some rows in flight) cut
/// at ten points from its header to its end, and with 1 to 3 pages destroyed at seeded random
/// places. For each: `export --file` returns every row SQLite's own b-tree still reads (and
/// every row the shell's `.recover` finds, where the installed shell can run it), each row as
/// it was committed, and only a file without a readable header is refused (exit 65); a gateway
/// started on the damaged file quarantines it and continues with a `seq` above every recovered
/// one and above the last `seq` the file handed out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_recovers_row_by_row_from_truncated_and_damaged_files() {
    use fieldrelay::progress::Display;
    use fieldrelay::queue::inspect::{InspectError, Inspector, Target, EX_DATAERR};
    use fieldrelay::queue::{Message, MessageKind};

    let dir = tempfile::tempdir().unwrap();
    let intact_dir = dir.path().join("intact");
    let (queue, _live, writer) = Queue::open(&intact_dir, QueueOptions::default()).unwrap();
    for i in 1..=4000i64 {
        if i % 500 == 0 {
            let status = Message {
                kind: MessageKind::DeviceStatus,
                device: Arc::from("boiler"),
                point: Arc::from(""),
                payload: format!(r#"{{"status":"online","n":{i}}}"#),
                ts_ms: 1_700_000_000_000 + i,
                qos: Qos::AtLeastOnce,
                retain: true,
            };
            queue.push_message(status).await.unwrap();
            continue;
        }
        let sample = Sample {
            device: Arc::from("boiler"),
            point: Arc::from(["pressure", "temperature", "flow"][(i % 3) as usize]),
            value: Value::Int(i),
            ts_ms: 1_700_000_000_000 + i,
            qos: if i % 7 == 0 {
                Qos::ExactlyOnce
            } else {
                Qos::AtLeastOnce
            },
            retain: false,
        };
        queue.push(sample).await.unwrap();
    }
    queue
        .progress()
        .wait_for(|p| p.last_seq == 4000)
        .await
        .unwrap();
    let acked: BTreeSet<u64> = (1001..=2000).filter(|s| s % 500 != 0).collect();
    for seq in &acked {
        queue.ack(*seq).await.unwrap();
    }
    queue
        .mark_published(vec![(2001, 7), (2002, 8)])
        .await
        .unwrap();
    queue.mark_received(vec![2002]).await.unwrap();
    queue.fetch(0, 0).await.unwrap();
    writer.close().await.unwrap();
    let intact_file = intact_dir.join("queue.db");
    let intact = std::fs::read(&intact_file).unwrap();

    // What the file holds, by seq, as `export` writes it.
    let export = |file: &Path| -> Result<(Vec<serde_json::Value>, String), InspectError> {
        let inspector = Inspector::open(&Target::File(file.to_path_buf()))?;
        let mut out = Vec::new();
        let outcome = inspector.export(None, &mut out, Display::Hidden)?;
        Ok((
            json_lines(&String::from_utf8(out).unwrap()),
            outcome.report(),
        ))
    };
    let (rows, report) = export(&intact_file).unwrap();
    assert_eq!(report, "3002 rows written\n");
    let truth: std::collections::BTreeMap<u64, serde_json::Value> = rows
        .into_iter()
        .map(|r| (r["seq"].as_u64().unwrap(), r))
        .collect();
    let intact_rows = sqlite_rows(&intact_file, 4000);
    let shell = capable_sqlite3_shell(&intact_file);
    if !shell {
        eprintln!("note: no sqlite3 shell that can run .recover; compared with SQLite's b-tree reads only");
    }

    let len = intact.len();
    let pages = len / 4096;
    let mut cases: Vec<(String, Vec<u8>)> = Vec::new();
    let mut cuts = vec![60, 4096 + 1000];
    cuts.extend((1..=8).map(|k| 2 * 4096 + k * (len - 2 * 4096 - 100) / 8));
    for cut in cuts {
        cases.push((
            format!("cut at {cut} of {len} bytes"),
            intact[..cut].to_vec(),
        ));
    }
    let mut rng = fastrand::Rng::with_seed(0x5a1_7a9e);
    for _ in 0..6 {
        let mut bytes = intact.clone();
        let mut hit = Vec::new();
        for _ in 0..rng.usize(1..=3) {
            let page = rng.usize(2..=pages);
            let start = (page - 1) * 4096;
            rng.fill(&mut bytes[start..start + 4096]);
            hit.push(page);
        }
        cases.push((format!("pages {hit:?} destroyed"), bytes));
    }

    let mut lost_to_bad_pages = Vec::new();
    let mut beyond_sqlite = 0;
    for (n, (name, bytes)) in cases.iter().enumerate() {
        let case_dir = dir.path().join(format!("case-{n}"));
        std::fs::create_dir(&case_dir).unwrap();
        let file = case_dir.join("queue.db");
        std::fs::write(&file, bytes).unwrap();
        let sqlite: BTreeSet<u64> = sqlite_rows(&file, 4000)
            .into_iter()
            .filter(|(seq, row)| intact_rows.get(seq) == Some(row))
            .map(|(seq, _)| seq)
            .collect();
        let recovered: BTreeSet<u64> = match export(&file) {
            Ok((rows, report)) => {
                for row in &rows {
                    let seq = row["seq"].as_u64().unwrap();
                    match truth.get(&seq) {
                        Some(want) => assert_eq!(row, want, "{name}: row {seq} as committed"),
                        // An acknowledged row from an old page: as it was inserted.
                        None => {
                            assert!(acked.contains(&seq), "{name}: row {seq} never existed");
                            assert_eq!(row["value"].as_u64(), Some(seq), "{name}: {row}");
                        }
                    }
                }
                let seqs: BTreeSet<u64> = rows.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
                assert_eq!(seqs.len(), rows.len(), "{name}: each row once");
                if name.starts_with("pages") {
                    let live = truth.keys().filter(|s| !seqs.contains(s)).count();
                    let destroyed = name.matches(',').count() + 1;
                    lost_to_bad_pages.push((live, destroyed, report.clone()));
                }
                seqs
            }
            Err(error) => {
                assert!(name.starts_with("cut at 60 "), "{name}: {error}");
                assert_eq!(error.exit_code(), EX_DATAERR, "{error}");
                BTreeSet::new()
            }
        };
        let missed: Vec<&u64> = sqlite.difference(&recovered).collect();
        assert!(
            missed.is_empty(),
            "{name}: SQLite reads {missed:?}, export does not"
        );
        beyond_sqlite += recovered.difference(&sqlite).count();
        if shell {
            let by_shell = shell_recover(&file, &case_dir);
            let missed: Vec<&u64> = by_shell.difference(&recovered).collect();
            assert!(
                missed.is_empty(),
                "{name}: .recover finds {missed:?}, export does not"
            );
        }

        // The gateway's own start on it: quarantined, and the next seq above all of it.
        let (queue, _live, writer) = Queue::open(&case_dir, QueueOptions::default()).unwrap();
        queue
            .push_message(Message {
                kind: MessageKind::DeviceStatus,
                device: Arc::from("boiler"),
                point: Arc::from(""),
                payload: "{}".into(),
                ts_ms: 1,
                qos: Qos::AtLeastOnce,
                retain: false,
            })
            .await
            .unwrap();
        let next = queue
            .progress()
            .wait_for(|p| p.depth > 0)
            .await
            .unwrap()
            .last_seq;
        writer.close().await.unwrap();
        assert!(next > 4000, "{name}: the new queue continues at {next}");
        // With `sqlite_sequence` (page 3) and the schema still in the file, right above the
        // file's last seq, not at the clock floor.
        if bytes.len() >= 3 * 4096 && name.starts_with("cut") {
            assert_eq!(next, 4001, "{name}");
        }
        assert!(recovered.iter().all(|s| *s < next), "{name}");
        assert!(quarantined(&case_dir).is_some(), "{name}");
    }
    // The page walk reads what SQLite's b-tree cannot reach (leaves below a lost page).
    assert!(beyond_sqlite > 0, "the corpus exercises orphan leaves");
    let (live, destroyed) = lost_to_bad_pages
        .iter()
        .fold((0, 0), |(l, d), (live, destroyed, _)| {
            (l + live, d + destroyed)
        });
    eprintln!(
        "rows lost per destroyed page: {:.1} ({live} rows, {destroyed} pages); \
         rows read beyond SQLite's b-tree: {beyond_sqlite}",
        live as f64 / destroyed as f64
    );
}

/// Rows the broker refused for good (MQTT 5 reason codes) are kept aside in the queue file:
/// `stats` counts them per reason, with the reason's name and code; `export --rejected` writes
/// them with their reason, and plain `export` (the queue) leaves them out.
#[tokio::test]
async fn stats_and_export_show_the_rejected_rows_with_their_reason() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    committed_queue(&data_dir, 5).await;
    let (queue, _live, writer) = Queue::open(&data_dir, QueueOptions::default()).unwrap();
    queue.reject(vec![2, 3], 0x87).await.unwrap();
    queue.reject(vec![5], 0x95).await.unwrap();
    writer.close().await.unwrap();
    let data = str_arg(&data_dir);

    let (code, out, err) = fieldrelay(&["queue", "stats", "--data-dir", &data]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("\nrows         2 (sample 2)\n"), "{out}");
    assert!(
        out.contains("\nrejected     3 (not_authorized (0x87) 2, packet_too_large (0x95) 1;"),
        "{out}"
    );
    assert!(
        out.contains("\nnot_authorized    0x87  boiler  counter  sample  2"),
        "{out}"
    );
    let (code, out, err) = fieldrelay(&["queue", "stats", "--data-dir", &data, "--format", "json"]);
    assert_eq!(code, Some(0), "{err}");
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["rows"], 2);
    assert_eq!(
        json["rejected"]["by_reason"],
        serde_json::json!([{"reason": "not_authorized", "code": "0x87", "rows": 2},
            {"reason": "packet_too_large", "code": "0x95", "rows": 1}])
    );

    let (code, out, err) = fieldrelay(&["queue", "export", "--data-dir", &data, "--rejected"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(err, "3 rows written\n");
    let rows = json_lines(&out);
    let got: Vec<(u64, i64, &str, &str, &str)> = rows
        .iter()
        .map(|r| {
            (
                r["seq"].as_u64().unwrap(),
                r["value"].as_i64().unwrap(),
                r["state"].as_str().unwrap(),
                r["reason"].as_str().unwrap(),
                r["reason_code"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (2, 2, "rejected", "not_authorized", "0x87"),
            (3, 3, "rejected", "not_authorized", "0x87"),
            (5, 5, "rejected", "packet_too_large", "0x95"),
        ]
    );
    assert!(rows.iter().all(|r| r["rejected"].as_i64() > Some(0)));
    let (code, out, err) = fieldrelay(&["queue", "export", "--data-dir", &data]);
    assert_eq!(code, Some(0), "{err}");
    let seqs: Vec<u64> = json_lines(&out)
        .iter()
        .map(|r| r["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [1, 4]);

    // The way back: refused while a gateway has the queue open, then done with it stopped.
    let requeue = ["queue", "requeue-rejected", "--data-dir", &data];
    let (queue, _live, writer) = Queue::open(&data_dir, QueueOptions::default()).unwrap();
    let (code, _, err) = fieldrelay(&requeue);
    assert_eq!(code, Some(75), "{err}");
    assert!(err.contains("stop it first"), "{err}");
    drop(queue);
    writer.close().await.unwrap();
    let (code, _, err) = fieldrelay(&[&requeue[..], &["--reason", "nope"]].concat());
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("not_authorized"), "{err}");
    let (code, _, err) = fieldrelay(&[&requeue[..], &["--reason", "not_authorized"]].concat());
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        err,
        "requeued 2 rejected rows (2 not_authorized (0x87)): the gateway sends them at its next \
         start\n"
    );
    let (_, out, _) = fieldrelay(&["queue", "export", "--data-dir", &data]);
    let seqs: Vec<u64> = json_lines(&out)
        .iter()
        .map(|r| r["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [1, 2, 3, 4], "back with their seq");
    let (_, out, _) = fieldrelay(&["queue", "stats", "--data-dir", &data, "--format", "json"]);
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["rejected"]["rows"], 1);
}
