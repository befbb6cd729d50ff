//! Full disks, for real: the queue on a small tmpfs.
//!
//! - A disk filled by someone else (a filler file, after the write-ahead log was truncated so
//!   that every commit needs new space): new samples are dropped and counted, acknowledgements
//!   are kept and written once space returns (the depth is then the rows not acknowledged, and
//!   a restart resends none of them), committed rows and session states stay intact, commits
//!   succeed again without a restart, and the whole outage logs a handful of lines.
//! - A disk smaller than `store.max_size`: the queue's own capacity rules (`on_full`) decide
//!   what is dropped, never `ENOSPC`.
//!
//! Mounting needs root (CI runs as root). Where `mount` is refused the test says so and
//! returns: an unprivileged stand-in (a size limit on the process) would not exercise SQLite's
//! real ENOSPC path. The gateway on a full disk, with a broker, is in `uplink_faults.rs`.

mod common;

use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use common::disk::{DiskFull, Tmpfs};

use fieldrelay::config::{OnFull, Qos};
use fieldrelay::queue::{Queue, QueueOptions, QueueReader};
use fieldrelay::sample::{Sample, Value};

/// WARN and ERROR lines of the whole test binary; the tests run one at a time ([`serial`]) so
/// that each counts its own.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Log {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Log {
    fn lines(&self) -> Vec<String> {
        let bytes = self.0.lock().unwrap();
        String::from_utf8_lossy(&bytes)
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn clear(&self) {
        self.0.lock().unwrap().clear();
    }
}

/// Takes the test lock and installs (once) the subscriber that captures warnings and errors.
async fn serial() -> (tokio::sync::MutexGuard<'static, ()>, Log) {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    static LOG: OnceLock<Log> = OnceLock::new();
    let guard = LOCK.lock().await;
    let log = LOG
        .get_or_init(|| {
            let log = Log::default();
            let sink = log.clone();
            let subscriber = tracing_subscriber::fmt()
                .with_max_level(tracing::Level::WARN)
                .with_ansi(false)
                .with_writer(move || sink.clone())
                .finish();
            tracing::subscriber::set_global_default(subscriber).expect("one subscriber");
            log
        })
        .clone();
    log.clear();
    (guard, log)
}

fn sample(i: i64) -> Sample {
    Sample {
        device: Arc::from("plc1"),
        point: Arc::from("p"),
        value: Value::Int(i),
        ts_ms: 1_700_000_000_000 + i,
        qos: Qos::AtLeastOnce,
        retain: false,
    }
}

fn seqs_on_disk(data: &Path) -> Vec<u64> {
    fieldrelay::queue::read_only_rows(data)
        .unwrap()
        .iter()
        .map(|r| r.seq)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_full_keeps_acknowledgements_counts_drops_and_recovers_by_itself() {
    let (_serial, log) = serial().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let Some(_fs) = Tmpfs::mount_at(&data, "2m") else {
        eprintln!("skipped: cannot mount a tmpfs here (needs root); disk-full not exercised");
        return;
    };
    let options = QueueOptions {
        max_size: 64 << 20, // far above the disk
        max_batch: 50,
        ..QueueOptions::default()
    };
    let (q, _live, w) = Queue::open(&data, options.clone()).unwrap();
    for i in 0..200 {
        q.push(sample(i)).await.unwrap();
    }
    q.progress().wait_for(|p| p.last_seq >= 200).await.unwrap();
    // A sent row with its packet id, as the uplink leaves it.
    q.mark_published(vec![(1, 11)]).await.unwrap();

    let full = DiskFull::start(&data, false);
    // The broker acknowledges 50 rows: their deletes cannot be committed.
    for seq in 2..=51 {
        q.ack(seq).await.unwrap();
        q.fetch(0, 0).await.unwrap(); // one group each
    }
    // Pushes are accepted however full the disk is: the pollers never stall.
    for i in 200..300 {
        q.push(sample(i)).await.unwrap();
    }
    q.fetch(0, 0).await.unwrap();
    let stats = q.stats();
    assert_eq!(stats.commit_dropped, 100, "{stats:?}");
    assert!(!q.is_closed(), "the writer carries on");
    let p = *q.progress().borrow();
    assert_eq!(p.last_seq, 200, "nothing committed while full");
    assert_eq!(p.depth, 150, "the depth leaves the acknowledged rows out");
    // Acknowledged rows are never offered again; committed ones are all still there.
    let rows = q.fetch(0, 1000).await.unwrap();
    let fetched: Vec<u64> = rows.iter().map(|r| r.seq).collect();
    assert_eq!(fetched, (52..=200).collect::<Vec<_>>());
    let unsettled: Vec<u64> = q.unsettled().await.unwrap().iter().map(|r| r.seq).collect();
    assert_eq!(unsettled, [1]);
    assert_eq!(QueueReader::open(&data).unwrap().count().unwrap(), 200);

    // Space returns: the kept acknowledgements are written without any other command, and the
    // very next commits succeed, no restart.
    full.free();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while QueueReader::open(&data).unwrap().count().unwrap() != 150 {
        assert!(std::time::Instant::now() < deadline, "acks never written");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    q.push(sample(-1)).await.unwrap();
    let p = *q.progress().wait_for(|p| p.last_seq > 200).await.unwrap();
    assert_eq!(
        (p.last_seq, p.depth),
        (201, 151),
        "no seq lost, depth exact"
    );
    w.close().await.unwrap();

    // A restart finds exactly the rows not acknowledged.
    let mut want = vec![1];
    want.extend(52..=201);
    assert_eq!(seqs_on_disk(&data), want);
    let (q, _live, w) = Queue::open(&data, options).unwrap();
    assert_eq!(q.progress().borrow().depth, 151);
    w.close().await.unwrap();

    let lines = log.lines();
    assert!(
        (1..=3).contains(&lines.len()),
        "one burst, a handful of lines: {lines:#?}"
    );
}

/// Samples pushed onto the 3 MiB disk: about twice what it holds.
const ROWS: i64 = 120_000;

/// `max_size` far above a 3 MiB disk: the queue fills the disk to its own limits and then drops
/// by `on_full`, with no failed commit.
async fn fill_a_small_disk(on_full: OnFull) -> Option<(Vec<i64>, fieldrelay::queue::QueueStats)> {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let _fs = Tmpfs::mount_at(&data, "3m")?;
    let options = QueueOptions {
        max_size: 64 << 20,
        on_full,
        ..QueueOptions::default()
    };
    let (q, _live, w) = Queue::open(&data, options).unwrap();
    for i in 0..ROWS {
        q.push(sample(i)).await.unwrap();
    }
    let values = q
        .fetch(0, 100_000)
        .await
        .unwrap()
        .iter()
        .map(|r| match &r.entry {
            fieldrelay::queue::Entry::Sample(s) => match s.value {
                Value::Int(i) => i,
                _ => -1,
            },
            _ => -1,
        })
        .collect();
    // After the fetch: a group evicts whenever the room shrank below the rows, and the fetch's
    // group is the last one.
    let stats = q.stats();
    let files: u64 = ["queue.db", "queue.db-wal", "queue.db-shm"]
        .iter()
        .map(|f| std::fs::metadata(data.join(f)).map_or(0, |m| m.len()))
        .sum();
    assert!(files <= 3 << 20, "{files} bytes on a 3 MiB disk");
    w.close().await.unwrap();
    Some((values, stats))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_smaller_than_max_size_drops_by_on_full_not_by_failed_commits() {
    let (_serial, log) = serial().await;
    let Some((kept, stats)) = fill_a_small_disk(OnFull::DropOldest).await else {
        eprintln!("skipped: cannot mount a tmpfs here (needs root); disk-full not exercised");
        return;
    };
    assert_eq!(stats.commit_dropped, 0, "{stats:?}");
    assert!(stats.capacity_dropped > 0, "{stats:?}");
    assert!(kept.len() > 10_000, "the disk is used: {} rows", kept.len());
    let lines = log.lines();
    assert!(
        (1..=2).contains(&lines.len()) && lines[0].contains("queue started dropping samples"),
        "{lines:#?}"
    );
    assert_eq!(
        kept.last(),
        Some(&(ROWS - 1)),
        "drop_oldest keeps the newest"
    );
    assert_eq!(stats.capacity_dropped + kept.len() as u64, ROWS as u64);

    let (kept, stats) = fill_a_small_disk(OnFull::RejectNew).await.unwrap();
    assert_eq!(stats.commit_dropped, 0, "{stats:?}");
    assert!(stats.capacity_dropped > 0, "{stats:?}");
    assert_eq!(kept.first(), Some(&0), "reject_new keeps the oldest");
    assert_eq!(stats.capacity_dropped + kept.len() as u64, ROWS as u64);
}

/// Runs `fieldrelay run` on a gateway config whose data directory is `data` (the queue opens
/// before anything is dialled, so nothing needs to listen), as `nobody` when run as root (root
/// may write anything), as the current user otherwise.
fn run_gateway_as_someone_else(dir: &Path) -> std::process::Output {
    let points = "      - name: p\n        table: holding\n        address: 0\n        type: u16\n";
    let config = common::write_config(dir, common::free_port(), common::free_port(), points);
    let mut command = if nix::unistd::Uid::effective().is_root() {
        let mut c = std::process::Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"]);
        c.arg(env!("CARGO_BIN_EXE_fieldrelay"));
        c
    } else {
        std::process::Command::new(env!("CARGO_BIN_EXE_fieldrelay"))
    };
    command
        .arg("run")
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "error")
        .output()
        .expect("run fieldrelay")
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

/// A queue the service user cannot write: the gateway refuses to start, names the file (or the
/// directory) and the user and what to run, and leaves nothing beside the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_the_user_cannot_write_is_refused_before_anything_is_created() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |path: &Path, mode: u32| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap()
    };
    let dir = tempfile::tempdir().unwrap();
    mode(dir.path(), 0o755);
    let data = dir.path().join("data");
    let (q, _live, w) = Queue::open(&data, QueueOptions::default()).unwrap();
    q.push(sample(1)).await.unwrap();
    w.close().await.unwrap();
    assert_eq!(names_in(&data), ["queue.db"]);
    let root = nix::unistd::Uid::effective().is_root();
    let user = if root {
        "nobody".to_owned()
    } else {
        nix::unistd::User::from_uid(nix::unistd::Uid::effective())
            .unwrap()
            .unwrap()
            .name
    };

    // The directory: SQLite could not create its -wal and -shm in it.
    mode(&data, 0o555);
    mode(&data.join("queue.db"), 0o444);
    let out = run_gateway_as_someone_else(dir.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let want = format!("{} is not writable by user {user}", data.display());
    assert!(stderr.contains(&want), "{stderr}");
    assert!(stderr.contains("chown -R"), "{stderr}");
    assert_eq!(names_in(&data), ["queue.db"], "nothing created");

    // The file.
    mode(&data, 0o777);
    let out = run_gateway_as_someone_else(dir.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let want = format!(
        "{} is not writable by user {user}",
        data.join("queue.db").display()
    );
    assert!(stderr.contains(&want), "{stderr}");
    assert_eq!(names_in(&data), ["queue.db"], "nothing created");
    mode(&data.join("queue.db"), 0o644);
}
