//! Queue tests on real SQLite files in temporary directories. Synchronisation is always through
//! the progress watch or a fetch reply (a fetch is answered after the group it belongs to is
//! committed and the watch updated), never through sleeps.

use std::collections::{BTreeMap, HashMap};
use std::io::BufRead;
use std::sync::Arc;

use proptest::prelude::*;
use tempfile::TempDir;

use super::*;
use crate::config::Qos;
use crate::config::{OnFull, SyncMode};
use crate::sample::{Sample, Value};

fn sample(point: &str, value: Value, qos: Qos) -> Sample {
    Sample {
        device: Arc::from("plc1"),
        point: Arc::from(point),
        value,
        ts_ms: 1_700_000_000_000,
        qos,
        retain: false,
    }
}

fn int(i: i64) -> Sample {
    sample("p", Value::Int(i), Qos::AtLeastOnce)
}

fn open(dir: &TempDir) -> (Queue, LiveReceiver, QueueWriter) {
    Queue::open(dir.path(), QueueOptions::default()).unwrap()
}

fn prog(last_seq: u64, depth: u64) -> (u64, u64) {
    (last_seq, depth)
}

fn pd(p: &QueueProgress) -> (u64, u64) {
    (p.last_seq, p.depth)
}

async fn wait_last_seq(q: &Queue, seq: u64) -> (u64, u64) {
    pd(&q.progress().wait_for(|p| p.last_seq >= seq).await.unwrap())
}

fn seqs(rows: &[StoredRow]) -> Vec<u64> {
    rows.iter().map(|r| r.seq).collect()
}

fn sample_of(row: &StoredRow) -> &Sample {
    match &row.entry {
        Entry::Sample(s) => s,
        Entry::Message(m) => panic!("expected a sample, got {m:?}"),
    }
}

#[tokio::test]
async fn push_fetch_ack_reopen() {
    let dir = TempDir::new().unwrap();
    let (q, _live, w) = open(&dir);
    let a = sample("temp", Value::Float(21.5), Qos::AtLeastOnce);
    let b = Sample {
        retain: true,
        ..sample("run", Value::Bool(true), Qos::ExactlyOnce)
    };
    let c = int(-7);
    for s in [&a, &b, &c] {
        q.push(s.clone()).await.unwrap();
    }
    let p = wait_last_seq(&q, 3).await;
    assert_eq!(p, prog(3, 3));

    let rows = q.fetch(0, 10).await.unwrap();
    assert_eq!(seqs(&rows), [1, 2, 3]);
    assert_eq!(*sample_of(&rows[0]), a);
    assert_eq!(*sample_of(&rows[1]), b);
    assert_eq!(*sample_of(&rows[2]), c);

    q.ack(2).await.unwrap();
    // The fetch is applied after the ack: it must not see row 2.
    assert_eq!(seqs(&q.fetch(0, 10).await.unwrap()), [1, 3]);
    assert_eq!(pd(&q.progress().borrow()), prog(3, 2));
    w.close().await.unwrap();

    let (q, _live, w) = open(&dir);
    assert_eq!(pd(&q.progress().borrow()), prog(3, 2));
    let rows = q.fetch(0, 10).await.unwrap();
    assert_eq!(seqs(&rows), [1, 3]);
    assert_eq!(*sample_of(&rows[1]), c);
    w.close().await.unwrap();
}

/// The head's time follows acks (and the reopen), the committed counter counts inserts only.
#[tokio::test]
async fn progress_tracks_the_oldest_row_and_stats_count_commits() {
    let dir = TempDir::new().unwrap();
    let at = |i: i64| Sample {
        ts_ms: 1_700_000_000_000 + i,
        ..int(i)
    };
    {
        let (q, _live, w) = open(&dir);
        assert_eq!(q.progress().borrow().oldest_ts_ms, None);
        for i in 1..=3 {
            q.push(at(i)).await.unwrap();
        }
        wait_last_seq(&q, 3).await;
        assert_eq!(q.progress().borrow().oldest_ts_ms, Some(1_700_000_000_001));
        assert_eq!(q.stats().committed, 3);
        q.ack(1).await.unwrap();
        q.fetch(0, 0).await.unwrap(); // barrier: the ack is committed
        assert_eq!(q.progress().borrow().oldest_ts_ms, Some(1_700_000_000_002));
        // An ack in the middle leaves the head alone; an ack of an unknown seq changes nothing.
        q.ack(3).await.unwrap();
        q.ack(99).await.unwrap();
        q.fetch(0, 0).await.unwrap();
        assert_eq!(q.progress().borrow().oldest_ts_ms, Some(1_700_000_000_002));
        assert_eq!(q.stats().committed, 3);
        assert!(q.capacity_bytes() > 0 && q.capacity_bytes() < DEFAULT_MAX_SIZE);
        w.close().await.unwrap();
    }
    let (q, _live, w) = open(&dir);
    assert_eq!(q.progress().borrow().oldest_ts_ms, Some(1_700_000_000_002));
    assert_eq!(q.stats().committed, 0, "counted since open");
    q.ack(2).await.unwrap();
    q.fetch(0, 0).await.unwrap();
    assert_eq!(q.progress().borrow().oldest_ts_ms, None);
    w.close().await.unwrap();
}

#[tokio::test]
async fn fetch_order_after_seq_and_limit() {
    let dir = TempDir::new().unwrap();
    let (q, _live, w) = open(&dir);
    for i in 0..10 {
        q.push(int(i)).await.unwrap();
    }
    wait_last_seq(&q, 10).await;
    assert_eq!(seqs(&q.fetch(0, 3).await.unwrap()), [1, 2, 3]);
    assert_eq!(seqs(&q.fetch(3, 3).await.unwrap()), [4, 5, 6]);
    assert_eq!(seqs(&q.fetch(8, 100).await.unwrap()), [9, 10]);
    assert!(q.fetch(10, 100).await.unwrap().is_empty());
    assert!(q.fetch(0, 0).await.unwrap().is_empty());
    assert!(q.fetch(u64::MAX, 10).await.unwrap().is_empty());
    q.ack(5).await.unwrap();
    q.ack(5).await.unwrap(); // second ack of the same row: no-op
    q.ack(999).await.unwrap(); // unknown: no-op
    q.ack(u64::MAX).await.unwrap(); // beyond i64: no-op
    let rows = q.fetch(3, 3).await.unwrap();
    assert_eq!(seqs(&rows), [4, 6, 7]);
    assert_eq!(*sample_of(&rows[1]), int(5));
    assert_eq!(q.progress().borrow().depth, 9);
    w.close().await.unwrap();
}

#[tokio::test]
async fn committed_rows_survive_without_close() {
    let dir = TempDir::new().unwrap();
    {
        let (q, live, w) = open(&dir);
        for i in 0..100 {
            q.push(int(i)).await.unwrap();
        }
        wait_last_seq(&q, 100).await;
        q.ack(1).await.unwrap();
        q.fetch(0, 0).await.unwrap(); // barrier: the ack is committed
                                      // No close: the writer is leaked and never told to stop, the handles are dropped.
        std::mem::forget(w);
        drop(q);
        drop(live);
    }
    let rows = read_only_rows(dir.path()).unwrap();
    assert_eq!(
        rows.iter().map(|r| r.seq).collect::<Vec<_>>(),
        (2..=100).collect::<Vec<_>>()
    );
    let (q, _live, w) = open(&dir);
    assert_eq!(pd(&q.progress().borrow()), prog(100, 99));
    q.push(int(100)).await.unwrap();
    assert_eq!(wait_last_seq(&q, 101).await.0, 101);
    w.close().await.unwrap();
}

#[tokio::test]
async fn seq_never_reused_after_draining_and_reopening() {
    let dir = TempDir::new().unwrap();
    let (q, _live, w) = open(&dir);
    for i in 0..5 {
        q.push(int(i)).await.unwrap();
    }
    wait_last_seq(&q, 5).await;
    for seq in 1..=5 {
        q.ack(seq).await.unwrap();
    }
    assert!(q.fetch(0, 10).await.unwrap().is_empty());
    assert_eq!(pd(&q.progress().borrow()), prog(5, 0));
    w.close().await.unwrap();

    let (q, _live, w) = open(&dir);
    // An empty table still remembers the newest seq.
    assert_eq!(pd(&q.progress().borrow()), prog(5, 0));
    q.push(int(42)).await.unwrap();
    wait_last_seq(&q, 6).await;
    let rows = q.fetch(0, 10).await.unwrap();
    assert_eq!(seqs(&rows), [6]);
    w.close().await.unwrap();
}

#[tokio::test]
async fn qos0_goes_live_and_never_to_disk() {
    let dir = TempDir::new().unwrap();
    let opts = QueueOptions {
        live_capacity: 2,
        ..QueueOptions::default()
    };
    let (q, mut live, w) = Queue::open(dir.path(), opts).unwrap();
    let s0 = |i| sample("fast", Value::Int(i), Qos::AtMostOnce);
    for i in 0..3 {
        q.push(s0(i)).await.unwrap();
    }
    // Capacity 2: the third was dropped and counted.
    assert_eq!(q.stats().live_dropped, 1);
    assert_eq!(live.rx.recv().await.unwrap(), s0(0));
    assert_eq!(live.rx.recv().await.unwrap(), s0(1));
    // A durable sample afterwards gets seq 1: QoS 0 never consumed a row id.
    q.push(int(7)).await.unwrap();
    wait_last_seq(&q, 1).await;
    drop(live);
    q.push(s0(9)).await.unwrap(); // no receiver: dropped and counted
    assert_eq!(q.stats().live_dropped, 2);
    w.close().await.unwrap();

    let rows = read_only_rows(&db_path(dir.path())).unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].seq, 1);
    assert_eq!(rows[0].sample, int(7));
}

/// Log lines a test captures (the thread's default subscriber, so a current-thread runtime).
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn install(&self) -> tracing::subscriber::DefaultGuard {
        let sink = self.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || sink.clone())
            .finish();
        tracing::subscriber::set_default(subscriber)
    }

    fn count(&self, needle: &str) -> usize {
        let text = String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned();
        text.lines().filter(|l| l.contains(needle)).count()
    }
}

/// QoS 0 drops are logged once per burst, however many there are, with samples that got through
/// in between (the end is logged after a quiet period: see `capacity.rs`).
#[tokio::test(flavor = "current_thread")]
async fn qos0_drops_are_logged_once_per_burst() {
    let log = Captured::default();
    let _guard = log.install();
    let dir = TempDir::new().unwrap();
    let opts = QueueOptions {
        live_capacity: 1,
        ..QueueOptions::default()
    };
    let (q, mut live, w) = Queue::open(dir.path(), opts).unwrap();
    let s0 = |i| sample("fast", Value::Int(i), Qos::AtMostOnce);
    for i in 0..50 {
        q.push(s0(i)).await.unwrap();
        q.push(s0(i)).await.unwrap(); // the channel holds one: dropped
        assert_eq!(live.rx.recv().await.unwrap(), s0(i));
    }
    assert_eq!(q.stats().live_dropped, 50);
    assert_eq!(log.count("qos 0 samples dropped"), 1);
    assert_eq!(log.count("qos 0 samples flow again"), 0);
    w.close().await.unwrap();
}

#[tokio::test]
async fn api_after_close_returns_closed() {
    let dir = TempDir::new().unwrap();
    let (q, _live, w) = open(&dir);
    let mut progress = q.progress();
    w.close().await.unwrap();
    assert!(q.is_closed());
    assert!(matches!(q.push(int(1)).await, Err(QueueError::Closed)));
    assert!(matches!(
        q.push(sample("x", Value::Int(1), Qos::AtMostOnce)).await,
        Err(QueueError::Closed)
    ));
    assert!(matches!(q.fetch(0, 10).await, Err(QueueError::Closed)));
    assert!(matches!(q.ack(1).await, Err(QueueError::Closed)));
    // Waiting for progress does not hang either: the sender is gone.
    assert!(progress.changed().await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_accepted_before_close_are_committed() {
    let dir = TempDir::new().unwrap();
    let opts = QueueOptions {
        max_batch: 7, // many small groups, several still queued when Close arrives
        ..QueueOptions::default()
    };
    let (q, _live, w) = Queue::open(dir.path(), opts).unwrap();
    let producers: Vec<_> = (0..4)
        .map(|t| {
            let q = q.clone();
            tokio::spawn(async move {
                for i in 0..250 {
                    q.push(int(t * 1000 + i)).await.unwrap();
                }
            })
        })
        .collect();
    for p in producers {
        p.await.unwrap();
    }
    w.close().await.unwrap();
    let rows = read_only_rows(dir.path()).unwrap();
    assert_eq!(
        rows.iter().map(|r| r.seq).collect::<Vec<_>>(),
        (1..=1000).collect::<Vec<_>>()
    );
    // Per producer, commit order is push order.
    for t in 0..4 {
        let values: Vec<i64> = rows
            .iter()
            .filter_map(|r| match r.sample.value {
                Value::Int(v) if v / 1000 == t => Some(v % 1000),
                _ => None,
            })
            .collect();
        assert_eq!(values, (0..250).collect::<Vec<_>>());
    }
}

#[tokio::test]
async fn undecodable_row_is_a_typed_error_with_its_seq() {
    let dir = TempDir::new().unwrap();
    let (q, _live, w) = open(&dir);
    q.push(int(1)).await.unwrap();
    wait_last_seq(&q, 1).await;
    {
        let ext = rusqlite::Connection::open(db_path(dir.path())).unwrap();
        ext.busy_timeout(std::time::Duration::from_secs(5)).unwrap();
        ext.execute(
            "INSERT INTO messages (device, point, body, ts_ms, qos, retain) \
             VALUES ('plc1', 'p', 'null', 0, 1, 0)",
            [],
        )
        .unwrap();
    }
    q.push(int(3)).await.unwrap();
    wait_last_seq(&q, 3).await;

    // The good row before the bad one is still delivered...
    assert_eq!(seqs(&q.fetch(0, 10).await.unwrap()), [1]);
    // ...then the bad row is reported by seq, and can be acked away.
    match q.fetch(1, 10).await {
        Err(QueueError::Decode {
            seq: 2,
            column: "body",
            ..
        }) => {}
        other => panic!("expected a decode error for seq 2, got {other:?}"),
    }
    assert!(matches!(
        read_only_rows(dir.path()),
        Err(QueueError::Decode { seq: 2, .. })
    ));
    q.ack(2).await.unwrap();
    assert_eq!(seqs(&q.fetch(1, 10).await.unwrap()), [3]);
    w.close().await.unwrap();
}

/// An unsettled row that no longer decodes still holds its packet id: a resumed session must
/// not hand that id to a new QoS 2 row (the broker would swallow it as a duplicate). It comes
/// back as a placeholder past PUBREC, so the session reserves the id and releases it with a
/// PUBREL; on the PUBCOMP the row the broker had is deleted and the row it may not have had is
/// queued again (kept, and skipped as undecodable like any other).
#[tokio::test]
async fn undecodable_unsettled_row_keeps_its_packet_id_reserved() {
    use crate::uplink::session::{Released, Restored, Session};
    use tokio::time::Instant;

    let dir = TempDir::new().unwrap();
    let (q, _live, w) = open(&dir);
    let q2 = |i| sample("p", Value::Int(i), Qos::ExactlyOnce);
    for i in 1..=3 {
        q.push(q2(i)).await.unwrap();
    }
    wait_last_seq(&q, 3).await;
    // Seq 1: PUBLISH sent with id 1. Seq 2: PUBREC received for id 2. Seq 3: sent with id 3.
    q.mark_published(vec![(1, 1), (2, 2), (3, 3)])
        .await
        .unwrap();
    q.mark_received(vec![2]).await.unwrap();
    {
        let ext = rusqlite::Connection::open(db_path(dir.path())).unwrap();
        ext.busy_timeout(std::time::Duration::from_secs(5)).unwrap();
        ext.execute("UPDATE messages SET body = 'null' WHERE seq IN (1, 2)", [])
            .unwrap();
    }

    let rows = q.unsettled().await.unwrap();
    assert_eq!(seqs(&rows), [1, 2, 3]);
    assert_eq!(rows[0].delivery, Delivery::Received { pkid: 1 });
    assert_eq!(rows[0].qos(), Qos::ExactlyOnce);
    assert_eq!(rows[1].delivery, Delivery::Received { pkid: 2 });
    assert_eq!(rows[2].delivery, Delivery::Published { pkid: 3 });
    assert_eq!(sample_of(&rows[2]), &q2(3));

    // What the uplink does with them on `session_present = 1`.
    let now = Instant::now();
    let mut session = Session::new(16, std::time::Duration::from_secs(10));
    session.on_connected();
    let mut restored = Vec::new();
    for row in &rows {
        let (pkid, received) = match row.delivery {
            Delivery::Published { pkid } => (pkid, false),
            Delivery::Received { pkid } => (pkid, true),
            Delivery::Queued => continue,
        };
        restored.push(
            session
                .restore(row.seq, pkid, row.qos(), received, now)
                .unwrap(),
        );
    }
    assert!(matches!(restored[0], Restored::Release(_)));
    assert!(matches!(restored[1], Restored::Release(_)));
    // A new row never gets an id the broker may still hold.
    let (_, pkid) = session
        .publish_row(
            4,
            "t".into(),
            bytes::Bytes::new(),
            Qos::ExactlyOnce,
            false,
            now,
        )
        .unwrap();
    assert!(![1, 2, 3].contains(&pkid), "reused packet id {pkid}");

    // PUBCOMPs for the PUBRELs: the rows are acked.
    for pkid in [1, 2] {
        match session.on_pubcomp(pkid).unwrap() {
            Released::Row(seq) => q.ack(seq).await.unwrap(),
            other => panic!("expected a row, got {other:?}"),
        }
    }
    // Seq 2 (the broker had it) is gone; seq 1 is queued again, still undecodable.
    match q.fetch(0, 10).await {
        Err(QueueError::Decode { seq: 1, .. }) => {}
        other => panic!("expected seq 1 queued and undecodable, got {other:?}"),
    }
    assert_eq!(seqs(&q.unsettled().await.unwrap()), [3]);
    assert_eq!(q.progress().borrow().depth, 2);
    w.close().await.unwrap();
}

#[tokio::test]
async fn failed_commit_drops_the_group_and_keeps_the_writer() {
    let dir = TempDir::new().unwrap();
    let (q, _live, w) = open(&dir);
    q.push(int(1)).await.unwrap();
    wait_last_seq(&q, 1).await;
    // Stand-in for a disk error: make any insert of device 'boom' fail.
    on_the_side(
        &dir,
        "CREATE TRIGGER boom BEFORE INSERT ON messages WHEN NEW.device = 'boom' \
         BEGIN SELECT RAISE(ABORT, 'injected failure'); END;",
    );
    let bad = Sample {
        device: Arc::from("boom"),
        ..int(2)
    };
    q.push(bad).await.unwrap();
    // Barrier: answered after the failed group (the fetch is in it or after it).
    assert_eq!(seqs(&q.fetch(0, 10).await.unwrap()), [1]);
    assert_eq!(q.stats().commit_dropped, 1);
    assert_eq!(pd(&q.progress().borrow()), prog(1, 1));

    // The writer lives on; the rolled-back insert did not consume a seq.
    q.push(int(3)).await.unwrap();
    assert_eq!(wait_last_seq(&q, 2).await, prog(2, 2));
    let rows = q.fetch(0, 10).await.unwrap();
    assert_eq!(seqs(&rows), [1, 2]);
    assert_eq!(*sample_of(&rows[1]), int(3));
    w.close().await.unwrap();
}

#[tokio::test]
async fn non_finite_value_is_refused() {
    let dir = TempDir::new().unwrap();
    let (q, _live, w) = open(&dir);
    let s = sample("p", Value::Float(f64::NAN), Qos::AtLeastOnce);
    assert!(matches!(q.push(s).await, Err(QueueError::NonFiniteValue)));
    w.close().await.unwrap();
}

#[test]
fn newer_schema_is_refused() {
    let dir = TempDir::new().unwrap();
    {
        let c = rusqlite::Connection::open(db_path(dir.path())).unwrap();
        c.pragma_update(None, "user_version", 3).unwrap();
    }
    assert!(matches!(
        Queue::open(dir.path(), QueueOptions::default()),
        Err(QueueError::SchemaTooNew {
            found: 3,
            supported: 2
        })
    ));
    // Refused, not quarantined: a newer build's file is left exactly where it was.
    assert!(db_path(dir.path()).exists());
}

#[tokio::test]
async fn open_creates_missing_dir_and_sets_pragmas() {
    let dir = TempDir::new().unwrap();
    let data = dir.path().join("a/b");
    let (q, _live, w) = Queue::open(&data, QueueOptions::default()).unwrap();
    #[cfg(target_os = "linux")]
    {
        let names: Vec<String> = std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
            .collect();
        assert!(
            names.iter().any(|n| n.trim() == "queue-writer"),
            "{names:?}"
        );
    }
    q.push(int(1)).await.unwrap();
    wait_last_seq(&q, 1).await;
    let c = rusqlite::Connection::open(db_path(&data)).unwrap();
    let mode: String = c
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .unwrap();
    let version: i64 = c
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    assert_eq!(version, 2);
    let reader = QueueReader::open(&data).unwrap();
    assert_eq!(pd(&reader.progress().unwrap()), prog(1, 1));
    w.close().await.unwrap();
}

// ---- kill -9 -------------------------------------------------------------------------------

/// Set in the child process of [`kill_9_keeps_committed_rows`]: the data directory to use.
const CRASH_DIR_ENV: &str = "FIELDRELAY_QUEUE_CRASH_DIR";
const CRASH_MARK: &str = "CRASH-CHILD committed";

/// Child half of the kill -9 test: commits 200 rows, acks 50, reports, then pushes forever
/// until killed. Does nothing when run on its own.
#[tokio::test]
#[ignore = "helper process for kill_9_keeps_committed_rows"]
async fn crash_child() {
    let Some(dir) = std::env::var_os(CRASH_DIR_ENV) else {
        return;
    };
    let (q, _live, _w) = Queue::open(std::path::Path::new(&dir), QueueOptions::default()).unwrap();
    for i in 0..200 {
        q.push(int(i)).await.unwrap();
    }
    wait_last_seq(&q, 200).await;
    for seq in 1..=50 {
        q.ack(seq).await.unwrap();
    }
    q.progress().wait_for(|p| p.depth == 150).await.unwrap();
    println!("{CRASH_MARK}");
    let mut i = 200;
    loop {
        q.push(int(i)).await.unwrap();
        i += 1;
    }
}

#[test]
fn kill_9_keeps_committed_rows() {
    let dir = TempDir::new().unwrap();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "queue::tests::crash_child",
            "--ignored",
            "--nocapture",
        ])
        .args(["--test-threads", "1"])
        .env(CRASH_DIR_ENV, dir.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = std::io::BufReader::new(stdout).lines();
    let reported = lines.any(|l| l.map(|l| l.contains(CRASH_MARK)).unwrap_or(false));
    child.kill().unwrap(); // SIGKILL on Unix: no destructor, no close, mid-stream pushes
    child.wait().unwrap();
    assert!(reported, "child never reported its commit");

    let rows = read_only_rows(dir.path()).unwrap();
    // Everything committed and not acked is there; whatever else made it to disk is a gapless
    // continuation in push order (a group is all or nothing).
    assert!(rows.len() >= 150, "{} rows", rows.len());
    for (k, r) in rows.iter().enumerate() {
        let seq = 51 + k as u64;
        assert_eq!(r.seq, seq);
        assert_eq!(r.sample, int(seq as i64 - 1));
    }
    let (q, _live, w) = Queue::open(dir.path(), QueueOptions::default()).unwrap();
    let p = *q.progress().borrow();
    assert_eq!(p.depth, rows.len() as u64);
    assert!(p.last_seq >= 50 + rows.len() as u64);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(w.close()).unwrap();
}

// ---- model test ------------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Op {
    Push(Sample),
    /// Ack the n-th (modulo) row the model holds.
    AckHeld(usize),
    /// Ack an arbitrary seq (often unknown).
    AckAny(u64),
    Fetch {
        after_seq: u64,
        limit: usize,
    },
    /// Mark the n-th held row as PUBLISHed with this packet id.
    Mark(usize, u16),
    /// Mark the n-th sent row as PUBREC received.
    Receive(usize),
    ResetSession,
    Reopen,
    /// Reject the n-th (modulo) held row with this reason code.
    Reject(usize, u8),
}

fn value_strategy() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::Int),
        (-1e12f64..1e12).prop_map(Value::Float),
    ]
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let push = (
        value_strategy(),
        prop_oneof![
            Just(Qos::AtMostOnce),
            Just(Qos::AtLeastOnce),
            Just(Qos::ExactlyOnce)
        ],
        any::<bool>(),
        0usize..3,
    )
        .prop_map(|(value, qos, retain, dev)| {
            Op::Push(Sample {
                device: Arc::from(["plc1", "plc2", "meter"][dev]),
                point: Arc::from("p"),
                value,
                ts_ms: 1_700_000_000_000,
                qos,
                retain,
            })
        });
    prop_oneof![
        6 => push,
        3 => any::<usize>().prop_map(Op::AckHeld),
        1 => (0u64..60).prop_map(Op::AckAny),
        3 => (0u64..60, 0usize..12).prop_map(|(after_seq, limit)| Op::Fetch { after_seq, limit }),
        2 => (any::<usize>(), 1u16..).prop_map(|(n, pkid)| Op::Mark(n, pkid)),
        1 => any::<usize>().prop_map(Op::Receive),
        1 => Just(Op::ResetSession),
        1 => Just(Op::Reopen),
        2 => (any::<usize>(), prop_oneof![Just(0x87u8), Just(0x95u8)]).prop_map(|(n, r)| Op::Reject(n, r)),
    ]
}

/// The model: what must be on disk. Seqs are predictable because a committed group never
/// fails in this test, so AUTOINCREMENT hands out `last_seq + 1`.
#[derive(Default)]
struct Model {
    rows: BTreeMap<u64, Sample>,
    last_seq: u64,
    /// Session state of rows that are not queued.
    sent: BTreeMap<u64, Delivery>,
    /// Rows moved to the rejected table, with their reason.
    rejected: BTreeMap<u64, (Sample, u8)>,
}

impl Model {
    fn rejected_by_reason(&self) -> rejected::ByReason {
        let mut by = rejected::ByReason::new();
        for (_, reason) in self.rejected.values() {
            *by.entry(*reason).or_default() += 1;
        }
        by
    }
}

async fn check_unsettled(q: &Queue, m: &Model) -> Result<(), TestCaseError> {
    let got: Vec<(u64, Delivery)> = q
        .unsettled()
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.seq, r.delivery))
        .collect();
    let want: Vec<(u64, Delivery)> = m.sent.iter().map(|(s, d)| (*s, *d)).collect();
    prop_assert_eq!(got, want);
    Ok(())
}

async fn run_model(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let dir = TempDir::new().unwrap();
    let opts = QueueOptions {
        max_batch: 4,
        ..QueueOptions::default()
    };
    let (mut q, mut _live, mut w) = Queue::open(dir.path(), opts.clone()).unwrap();
    let mut m = Model::default();
    for op in ops {
        match op {
            Op::Push(s) => {
                if s.qos != Qos::AtMostOnce {
                    m.last_seq += 1;
                    m.rows.insert(m.last_seq, s.clone());
                }
                q.push(s).await.unwrap();
            }
            Op::AckHeld(n) => {
                if !m.rows.is_empty() {
                    let seq = *m.rows.keys().nth(n % m.rows.len()).unwrap();
                    m.rows.remove(&seq);
                    m.sent.remove(&seq);
                    q.ack(seq).await.unwrap();
                }
            }
            Op::AckAny(seq) => {
                m.rows.remove(&seq);
                m.sent.remove(&seq);
                q.ack(seq).await.unwrap();
            }
            Op::Mark(n, pkid) => {
                if !m.rows.is_empty() {
                    let seq = *m.rows.keys().nth(n % m.rows.len()).unwrap();
                    m.sent.insert(seq, Delivery::Published { pkid });
                    q.mark_published(vec![(seq, pkid)]).await.unwrap();
                }
            }
            Op::Receive(n) => {
                if !m.sent.is_empty() {
                    let seq = *m.sent.keys().nth(n % m.sent.len()).unwrap();
                    let entry = m.sent.get_mut(&seq).unwrap();
                    if let Delivery::Published { pkid } | Delivery::Received { pkid } = *entry {
                        *entry = Delivery::Received { pkid };
                    }
                    q.mark_received(vec![seq]).await.unwrap();
                }
            }
            Op::Reject(n, reason) => {
                if !m.rows.is_empty() {
                    let seq = *m.rows.keys().nth(n % m.rows.len()).unwrap();
                    let sample = m.rows.remove(&seq).unwrap();
                    m.sent.remove(&seq);
                    m.rejected.insert(seq, (sample, reason));
                    q.reject(vec![seq], reason).await.unwrap();
                }
            }
            Op::ResetSession => {
                m.sent.clear();
                q.reset_session().await.unwrap();
            }
            Op::Fetch { after_seq, limit } => {
                let got = q.fetch(after_seq, limit).await.unwrap();
                let want: Vec<StoredRow> = m
                    .rows
                    .range(after_seq + 1..)
                    .filter(|(seq, _)| !m.sent.contains_key(seq))
                    .take(limit)
                    .map(|(&seq, s)| StoredRow {
                        seq,
                        entry: Entry::Sample(s.clone()),
                        delivery: Delivery::Queued,
                        expires_ms: None,
                    })
                    .collect();
                prop_assert_eq!(got, want);
                let p = pd(&q.progress().borrow());
                prop_assert_eq!(p, prog(m.last_seq, m.rows.len() as u64));
                check_unsettled(&q, &m).await?;
                prop_assert_eq!(q.rejected().held, m.rejected_by_reason());
            }
            Op::Reopen => {
                w.close().await.unwrap();
                (q, _live, w) = Queue::open(dir.path(), opts.clone()).unwrap();
                let p = pd(&q.progress().borrow());
                prop_assert_eq!(p, prog(m.last_seq, m.rows.len() as u64));
                check_unsettled(&q, &m).await?;
                prop_assert_eq!(q.rejected().held, m.rejected_by_reason());
            }
        }
    }
    w.close().await.unwrap();
    let rows = read_only_rows(dir.path()).unwrap();
    let want: Vec<StoredSample> = m
        .rows
        .iter()
        .map(|(&seq, s)| StoredSample {
            seq,
            sample: s.clone(),
        })
        .collect();
    prop_assert_eq!(rows, want);
    let mut rejected = Vec::new();
    QueueReader::open(dir.path())
        .unwrap()
        .visit_rejected(0, usize::MAX, |row| {
            let row = row.unwrap();
            let Entry::Sample(sample) = row.row.entry else {
                panic!("a sample was rejected")
            };
            rejected.push((row.row.seq, (sample, row.reason)));
            std::ops::ControlFlow::Continue(())
        })
        .unwrap();
    prop_assert_eq!(rejected, m.rejected.into_iter().collect::<Vec<_>>());
    prop_assert_eq!(q.stats().commit_dropped, 0);
    Ok(())
}

proptest! {
    // Every case does real fsyncs: keep the count modest so `cargo test` stays quick.
    // Failures are not persisted to a regressions file: a shrunk failing case becomes a named
    // unit test instead (see `store::tests::value_codec_round_trips`).
    #![proptest_config(ProptestConfig {
        cases: 48,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]
    #[test]
    fn queue_agrees_with_model(ops in proptest::collection::vec(op_strategy(), 1..60)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(run_model(ops))?;
    }
}

/// The watchdog's probe answers on a healthy queue, fails (after the busy timeout) while another
/// connection holds the database's write lock, and answers again once the lock is released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_fails_while_another_connection_holds_the_lock() {
    let dir = TempDir::new().unwrap();
    let (q, _live, w) = open(&dir);
    q.probe().await.unwrap();

    let other = rusqlite::Connection::open(db_path(dir.path())).unwrap();
    other.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let locked = q.probe().await;
    assert!(
        matches!(locked, Err(QueueError::Sqlite(_))),
        "probe under a foreign lock: {locked:?}"
    );

    other.execute_batch("ROLLBACK").unwrap();
    q.probe().await.unwrap();
    w.close().await.unwrap();
    assert!(matches!(q.probe().await, Err(QueueError::Closed)));
}

// ---- schema migration, quarantine, capacity, expiry ------------------------------------------

#[tokio::test]
async fn v1_file_migrates_keeping_every_row_and_its_seq() {
    let dir = TempDir::new().unwrap();
    {
        let c = rusqlite::Connection::open(db_path(dir.path())).unwrap();
        c.execute_batch(store::SCHEMA_V1).unwrap();
        c.pragma_update(None, "user_version", 1).unwrap();
        for i in 1..=100 {
            c.execute(
                "INSERT INTO samples (device, point, value, ts_ms, qos, retain) \
                 VALUES ('plc1', 'p', ?1, 5, 2, 1)",
                [i.to_string()],
            )
            .unwrap();
        }
        // The first ten were acknowledged by a v1 build.
        c.execute("DELETE FROM samples WHERE seq <= 10", [])
            .unwrap();
    }
    let (q, _live, w) = open(&dir);
    assert_eq!(pd(&q.progress().borrow()), (100, 90));
    let rows = q.fetch(0, 1000).await.unwrap();
    assert_eq!(seqs(&rows), (11..=100).collect::<Vec<_>>());
    let s = sample_of(&rows[0]);
    assert_eq!(s.value, Value::Int(11));
    assert_eq!((s.qos, s.retain, s.ts_ms), (Qos::ExactlyOnce, true, 5));
    assert!(rows.iter().all(|r| r.delivery == Delivery::Queued));
    // seq continues above the v1 rows, and the session columns work.
    q.push(int(7)).await.unwrap();
    assert_eq!(wait_last_seq(&q, 101).await, (101, 91));
    q.mark_published(vec![(11, 3)]).await.unwrap();
    assert_eq!(
        q.unsettled().await.unwrap()[0].delivery,
        Delivery::Published { pkid: 3 }
    );
    w.close().await.unwrap();
}

#[tokio::test]
async fn corrupt_file_is_quarantined_and_a_new_queue_continues_above_its_seq() {
    let dir = TempDir::new().unwrap();
    {
        let (q, _live, w) = open(&dir);
        for i in 0..500 {
            q.push(int(i)).await.unwrap();
        }
        wait_last_seq(&q, 500).await;
        w.close().await.unwrap();
    }
    // Scribble over the last page (a leaf of the table; the header and sqlite_sequence stay
    // readable, so the file still opens and tells its last seq).
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(db_path(dir.path()))
            .unwrap();
        let len = f.metadata().unwrap().len();
        f.seek(SeekFrom::Start(len - 4000)).unwrap();
        f.write_all(&[0xA5; 3900]).unwrap();
    }
    let (q, _live, w) = open(&dir);
    let moved: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| {
            n.starts_with("queue.db.corrupt-") && !n.ends_with("-wal") && !n.ends_with("-shm")
        })
        .collect();
    assert_eq!(moved.len(), 1, "quarantined, not deleted: {moved:?}");
    assert_eq!(pd(&q.progress().borrow()), (500, 0));
    q.push(int(1)).await.unwrap();
    assert_eq!(wait_last_seq(&q, 501).await, (501, 1));
    w.close().await.unwrap();
}

#[tokio::test]
async fn garbage_file_is_quarantined_with_a_clock_floor_for_seq() {
    let dir = TempDir::new().unwrap();
    std::fs::write(db_path(dir.path()), vec![0x42u8; 8192]).unwrap();
    let (q, _live, w) = open(&dir);
    let floor = *q.progress().borrow();
    assert!(floor.last_seq > 1_000_000_000_000, "{floor:?}");
    assert!(floor.last_seq < 1 << 53);
    w.close().await.unwrap();
    let moved = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .find(|n| n.starts_with("queue.db.corrupt-"))
        .unwrap();
    assert_eq!(
        std::fs::read(dir.path().join(moved)).unwrap(),
        vec![0x42u8; 8192]
    );
}

#[test]
fn utc_stamp_is_civil_time() {
    assert_eq!(store::utc_stamp(0), "19700101T000000Z");
    assert_eq!(store::utc_stamp(1_764_000_000), "20251124T160000Z");
}

async fn fill(q: &Queue, n: i64) {
    for i in 0..n {
        q.push(int(i)).await.unwrap();
    }
    q.fetch(0, 0).await.unwrap(); // barrier
}

#[tokio::test]
async fn drop_oldest_keeps_the_newest_rows_within_max_size() {
    let dir = TempDir::new().unwrap();
    let opts = QueueOptions {
        max_size: 256 * 1024,
        max_batch: 50,
        ..QueueOptions::default()
    };
    let (q, _live, w) = Queue::open(dir.path(), opts).unwrap();
    q.push(int(-1)).await.unwrap();
    wait_last_seq(&q, 1).await;
    q.mark_published(vec![(1, 9)]).await.unwrap();
    fill(&q, 20_000).await;
    let p = *q.progress().borrow();
    let budget = 256 * 1024 - super::capacity::wal_budget(256 * 1024);
    assert!(p.bytes <= budget + 2 * 4096, "{p:?}");
    let stats = q.stats();
    assert!(stats.capacity_dropped > 10_000, "{stats:?}");
    assert_eq!(p.depth + stats.capacity_dropped, 20_001);
    let rows = q.fetch(0, usize::MAX).await.unwrap();
    // The newest survive, gapless; the sent row 1 is never evicted.
    assert_eq!(rows.last().unwrap().seq, 20_001);
    assert!(rows.windows(2).all(|w| w[1].seq == w[0].seq + 1));
    assert_eq!(q.unsettled().await.unwrap()[0].seq, 1);
    // A row evicted after it was fetched is reported, not marked, by mark_published.
    let gone = q.mark_published(vec![(2, 7), (20_001, 8)]).await.unwrap();
    assert_eq!(gone, [2]);
    w.close().await.unwrap();
}

#[tokio::test]
async fn reject_new_keeps_the_oldest_rows_within_max_size() {
    let dir = TempDir::new().unwrap();
    let opts = QueueOptions {
        max_size: 256 * 1024,
        on_full: OnFull::RejectNew,
        max_batch: 50,
        ..QueueOptions::default()
    };
    let (q, _live, w) = Queue::open(dir.path(), opts).unwrap();
    fill(&q, 20_000).await;
    let p = *q.progress().borrow();
    let stats = q.stats();
    assert!(stats.capacity_dropped > 10_000, "{stats:?}");
    assert_eq!(p.depth + stats.capacity_dropped, 20_000);
    let rows = q.fetch(0, usize::MAX).await.unwrap();
    assert_eq!(rows[0].seq, 1, "the oldest survive");
    assert_eq!(rows.len() as u64, p.depth);
    w.close().await.unwrap();
}

#[tokio::test]
async fn max_age_expires_never_sent_rows_only() {
    let dir = TempDir::new().unwrap();
    let mut opts = QueueOptions {
        // The first group after open sweeps, later ones not within the hour: the test decides
        // when the sweep runs by reopening, without waiting for a clock.
        expiry_sweep: std::time::Duration::from_secs(3600),
        ..QueueOptions::default()
    };
    opts.max_age.insert(
        ("plc1".into(), "old".into()),
        std::time::Duration::from_secs(60),
    );
    let old = |ts_ms| Sample {
        ts_ms,
        ..sample("old", Value::Int(1), Qos::AtLeastOnce)
    };
    let now = crate::sample::now_ms();
    {
        let (q, _live, w) = Queue::open(dir.path(), opts.clone()).unwrap();
        q.push(old(now - 120_000)).await.unwrap(); // expired, then sent: kept
        q.push(old(now - 120_000)).await.unwrap(); // expired, never sent: dropped
        q.push(old(now)).await.unwrap(); // fresh
        q.push(sample("other", Value::Int(1), Qos::AtLeastOnce))
            .await
            .unwrap(); // no max_age
        wait_last_seq(&q, 4).await;
        let rows = q.fetch(0, 10).await.unwrap();
        assert_eq!(rows[0].expires_ms, Some(now - 60_000));
        assert_eq!(rows[3].expires_ms, None);
        assert_eq!(
            q.mark_published(vec![(1, 1)]).await.unwrap(),
            Vec::<u64>::new()
        );
        w.close().await.unwrap();
    }
    let (q, _live, w) = Queue::open(dir.path(), opts).unwrap();
    q.push(int(0)).await.unwrap(); // the first group sweeps
    q.fetch(0, 0).await.unwrap();
    let left: Vec<u64> = QueueReader::open(dir.path())
        .unwrap()
        .entries()
        .unwrap()
        .iter()
        .map(|r| r.seq)
        .collect();
    assert_eq!(left, [1, 3, 4, 5]);
    assert_eq!(q.stats().expired, 1);
    assert_eq!(q.progress().borrow().depth, 4);
    w.close().await.unwrap();
}

/// A reload's new `max_age`s apply to rows committed after it; rows already queued keep the
/// expiry they were committed with.
#[tokio::test]
async fn new_max_ages_apply_to_rows_committed_after_them() {
    let dir = TempDir::new().unwrap();
    let (q, _live, w) = open(&dir);
    let now = crate::sample::now_ms();
    let at = |ts_ms| Sample {
        ts_ms,
        ..sample("p", Value::Int(1), Qos::AtLeastOnce)
    };
    q.push(at(now)).await.unwrap();
    let mut ages = HashMap::new();
    ages.insert(
        ("plc1".to_owned(), "p".to_owned()),
        std::time::Duration::from_secs(60),
    );
    q.set_max_age(ages).await.unwrap();
    q.push(at(now)).await.unwrap();
    q.set_max_age(HashMap::new()).await.unwrap();
    q.push(at(now)).await.unwrap();
    wait_last_seq(&q, 3).await;
    let expiries: Vec<Option<i64>> = q
        .fetch(0, 10)
        .await
        .unwrap()
        .iter()
        .map(|row| row.expires_ms)
        .collect();
    assert_eq!(expiries, [None, Some(now + 60_000), None]);
    w.close().await.unwrap();
}

#[tokio::test]
async fn messages_are_stored_with_their_kind() {
    let dir = TempDir::new().unwrap();
    let (q, _live, w) = open(&dir);
    let m = Message {
        kind: MessageKind::CommandResult,
        device: Arc::from("plc1"),
        point: Arc::from("sp"),
        payload: r#"{"id":"a","ok":true}"#.into(),
        ts_ms: 3,
        qos: Qos::AtLeastOnce,
        retain: false,
    };
    q.push_message(m.clone()).await.unwrap();
    assert!(matches!(
        q.push_message(Message {
            qos: Qos::AtMostOnce,
            ..m.clone()
        })
        .await,
        Err(QueueError::QosZero)
    ));
    wait_last_seq(&q, 1).await;
    let rows = q.fetch(0, 10).await.unwrap();
    assert_eq!(rows[0].entry, Entry::Message(m));
    // Samples-only readers skip it.
    assert!(read_only_rows(dir.path()).unwrap().is_empty());
    w.close().await.unwrap();
}

/// Runs `sql` on a second connection to the queue file (to inject failures with triggers).
fn on_the_side(dir: &TempDir, sql: &str) {
    let ext = rusqlite::Connection::open(db_path(dir.path())).unwrap();
    ext.busy_timeout(std::time::Duration::from_secs(5)).unwrap();
    ext.execute_batch(sql).unwrap();
}

const DELETES_FAIL: &str = "CREATE TRIGGER boom BEFORE DELETE ON messages \
     BEGIN SELECT RAISE(ABORT, 'injected failure'); END;";

#[tokio::test]
async fn acknowledgements_that_fail_to_commit_are_kept_and_written_with_the_next_commit() {
    let dir = TempDir::new().unwrap();
    let (q, _live, w) = open(&dir);
    for i in 1..=4 {
        q.push(int(i)).await.unwrap();
    }
    wait_last_seq(&q, 4).await;
    q.mark_published(vec![(1, 5), (2, 6)]).await.unwrap();
    on_the_side(&dir, DELETES_FAIL);
    q.ack(1).await.unwrap();
    q.ack(3).await.unwrap();
    // Barrier: answered after the failed group. The acknowledged rows are as good as gone.
    assert_eq!(seqs(&q.fetch(0, 10).await.unwrap()), [4]);
    assert_eq!(seqs(&q.unsettled().await.unwrap()), [2]);
    assert_eq!(
        q.progress().borrow().depth,
        2,
        "rows 2 and 4 are not acknowledged"
    );
    // The packet id row 1 gave back cannot reach the disk before row 1's delete.
    assert!(matches!(
        q.mark_published(vec![(4, 5)]).await,
        Err(QueueError::Commit(_))
    ));
    assert_eq!(QueueReader::open(dir.path()).unwrap().count().unwrap(), 4);

    // Space returns: the writer tries again by itself, with nothing else to commit (the depth
    // does not move, so the file is polled).
    on_the_side(&dir, "DROP TRIGGER boom");
    let on_disk = || -> Vec<u64> {
        let reader = QueueReader::open(dir.path()).unwrap();
        reader.entries().unwrap().iter().map(|r| r.seq).collect()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while on_disk() != [2, 4] {
        assert!(std::time::Instant::now() < deadline, "{:?}", on_disk());
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(pd(&q.progress().borrow()), prog(4, 2));
    q.mark_published(vec![(4, 5)]).await.unwrap();
    w.close().await.unwrap();
}

#[tokio::test]
async fn closing_writes_the_kept_acknowledgements_once_more() {
    let dir = TempDir::new().unwrap();
    let (q, _live, w) = open(&dir);
    q.push(int(1)).await.unwrap();
    q.push(int(2)).await.unwrap();
    wait_last_seq(&q, 2).await;
    on_the_side(&dir, DELETES_FAIL);
    q.ack(1).await.unwrap();
    q.fetch(0, 0).await.unwrap(); // barrier: the ack failed
    on_the_side(&dir, "DROP TRIGGER boom");
    w.close().await.unwrap();
    let (q, _live, w) = open(&dir);
    assert_eq!(pd(&q.progress().borrow()), prog(2, 1));
    assert_eq!(seqs(&q.fetch(0, 10).await.unwrap()), [2]);
    w.close().await.unwrap();
}

#[tokio::test]
async fn a_fetch_skips_kept_acknowledgements_without_cutting_the_page_short() {
    let dir = TempDir::new().unwrap();
    let (q, _live, w) = open(&dir);
    for i in 1..=10 {
        q.push(int(i)).await.unwrap();
    }
    wait_last_seq(&q, 10).await;
    on_the_side(&dir, DELETES_FAIL);
    for seq in 1..=6 {
        q.ack(seq).await.unwrap();
    }
    assert_eq!(seqs(&q.fetch(0, 3).await.unwrap()), [7, 8, 9]);
    assert_eq!(seqs(&q.fetch(2, 10).await.unwrap()), [7, 8, 9, 10]);
    // Consecutive acks of a group are one range delete; its failure keeps every row of it.
    assert_eq!(q.progress().borrow().depth, 4);
    on_the_side(&dir, "DROP TRIGGER boom");
    w.close().await.unwrap();
    assert_eq!(QueueReader::open(dir.path()).unwrap().count().unwrap(), 4);
}

#[tokio::test]
async fn sync_mode_and_wal_budget_reach_sqlite() {
    for (sync, want) in [(SyncMode::Full, 2i64), (SyncMode::Normal, 1)] {
        let dir = TempDir::new().unwrap();
        let opts = QueueOptions {
            sync,
            max_size: 1 << 20,
            ..QueueOptions::default()
        };
        let conn = store::open_rw(&db_path(dir.path()), opts.sync, opts.max_size).unwrap();
        let got: i64 = conn
            .pragma_query_value(None, "synchronous", |r| r.get(0))
            .unwrap();
        assert_eq!(got, want, "{sync:?}");
        let limit: i64 = conn
            .pragma_query_value(None, "journal_size_limit", |r| r.get(0))
            .unwrap();
        assert_eq!(limit, 256 * 1024, "a quarter of max_size");
    }
}
