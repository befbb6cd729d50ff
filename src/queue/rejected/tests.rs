//! Rejected rows on real SQLite files: the move out of the queue, what reads see of it, restarts,
//! failed commits.

use std::sync::Arc;

use tempfile::TempDir;

use crate::config::Qos;
use crate::queue::{db_path, Delivery, Queue, QueueError, QueueOptions, QueueWriter, StoredRow};
use crate::sample::{Sample, Value};

const TS: i64 = 1_700_000_000_000;

fn sample(i: i64, qos: Qos) -> Sample {
    Sample {
        device: Arc::from("plc1"),
        point: Arc::from(if i % 2 == 0 { "even" } else { "odd" }),
        value: Value::Int(i),
        ts_ms: TS + i,
        qos,
        retain: i == 4,
    }
}

fn seqs(rows: &[StoredRow]) -> Vec<u64> {
    rows.iter().map(|r| r.seq).collect()
}

/// A queue with rows 1..=n committed (row 4 QoS 2, the others QoS 1).
async fn queue_with(dir: &TempDir, n: i64) -> (Queue, QueueWriter) {
    let (q, _live, w) = Queue::open(dir.path(), QueueOptions::default()).unwrap();
    for i in 1..=n {
        let qos = if i == 4 {
            Qos::ExactlyOnce
        } else {
            Qos::AtLeastOnce
        };
        q.push(sample(i, qos)).await.unwrap();
    }
    q.progress()
        .wait_for(|p| p.last_seq >= n as u64)
        .await
        .unwrap();
    (q, w)
}

/// A row of the `rejected` table: seq, point, body, ts, qos, retain, kind, reason, rejected_ms.
type TableRow = (i64, String, String, i64, i64, bool, i64, i64, i64);

/// The `rejected` table, read on the side.
fn table(dir: &TempDir) -> Vec<TableRow> {
    let conn = rusqlite::Connection::open(db_path(dir.path())).unwrap();
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .unwrap();
    let mut stmt = conn
        .prepare(
            "SELECT seq, point, body, ts_ms, qos, retain, kind, reason, rejected_ms \
             FROM rejected ORDER BY seq",
        )
        .unwrap();
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
                r.get(7)?,
                r.get(8)?,
            ))
        })
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    rows
}

/// Whether the file has the `rejected` table.
fn has_table(dir: &TempDir) -> bool {
    let conn = rusqlite::Connection::open(db_path(dir.path())).unwrap();
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .unwrap();
    conn.query_row(
        "SELECT COUNT(*) FROM sqlite_master WHERE name = 'rejected'",
        [],
        |r| r.get::<_, i64>(0),
    )
    .unwrap()
        == 1
}

#[tokio::test]
async fn rejected_rows_leave_the_queue_keep_their_fields_and_survive_a_restart() {
    let dir = TempDir::new().unwrap();
    let (q, w) = queue_with(&dir, 5).await;
    assert!(!has_table(&dir), "created by the first rejection only");
    assert!(q.rejected().held.is_empty());
    q.mark_published(vec![(4, 7)]).await.unwrap();
    let before = crate::sample::now_ms();
    q.reject(vec![1, 4, 99], 0x87).await.unwrap();
    q.reject(vec![5], 0x95).await.unwrap();
    q.reject(Vec::new(), 0x90).await.unwrap();
    // Barrier: a fetch is answered after the group holding the rejections committed.
    assert_eq!(seqs(&q.fetch(0, 10).await.unwrap()), [2, 3]);
    assert!(
        q.unsettled().await.unwrap().is_empty(),
        "row 4 was in flight"
    );
    let p = *q.progress().borrow();
    assert_eq!((p.last_seq, p.depth), (5, 2));
    assert_eq!(
        p.oldest_ts_ms,
        Some(TS + 2),
        "the age leaves rejected rows out"
    );
    let stats = q.rejected();
    assert_eq!(stats.held, [(0x87, 2), (0x95, 1)].into());
    assert_eq!(stats.rejected, stats.held);
    assert!(stats.evicted.is_empty());
    w.close().await.unwrap();

    let rows = table(&dir);
    assert_eq!(
        rows.iter()
            .map(|r| (r.0, r.1.as_str(), r.2.as_str(), r.3, r.4, r.5, r.6, r.7))
            .collect::<Vec<_>>(),
        [
            (1, "odd", "1", TS + 1, 1, false, 0, 0x87),
            (4, "even", "4", TS + 4, 2, true, 0, 0x87),
            (5, "odd", "5", TS + 5, 1, false, 0, 0x95),
        ]
    );
    assert!(rows.iter().all(|r| r.8 >= before), "{rows:?}");

    let (q, _live, w) = Queue::open(dir.path(), QueueOptions::default()).unwrap();
    assert_eq!(seqs(&q.fetch(0, 10).await.unwrap()), [2, 3]);
    assert!(q.unsettled().await.unwrap().is_empty());
    assert_eq!(q.progress().borrow().depth, 2);
    let stats = q.rejected();
    assert_eq!(stats.held, [(0x87, 2), (0x95, 1)].into());
    assert!(stats.rejected.is_empty(), "counted since open");
    // The seq counter did not move back: the next row is above every rejected one.
    q.push(sample(6, Qos::AtLeastOnce)).await.unwrap();
    assert_eq!(seqs(&q.fetch(3, 10).await.unwrap()), [6]);
    w.close().await.unwrap();
    let conn = rusqlite::Connection::open(db_path(dir.path())).unwrap();
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(
        version, 2,
        "an additive table: older builds still open the file"
    );
}

#[tokio::test]
async fn rejecting_a_row_already_acknowledged_or_expired_does_nothing() {
    let dir = TempDir::new().unwrap();
    let (q, w) = queue_with(&dir, 3).await;
    q.ack(1).await.unwrap();
    q.expire(vec![2]).await.unwrap();
    q.reject(vec![1, 2], 0x90).await.unwrap();
    assert_eq!(seqs(&q.fetch(0, 10).await.unwrap()), [3]);
    assert!(q.rejected().held.is_empty());
    // An acknowledgement of a rejected row (it is no longer in the queue) leaves it rejected.
    q.reject(vec![3], 0x99).await.unwrap();
    q.ack(3).await.unwrap();
    assert!(q.fetch(0, 10).await.unwrap().is_empty());
    assert_eq!(q.progress().borrow().depth, 0);
    assert_eq!(q.rejected().held, [(0x99, 1)].into());
    w.close().await.unwrap();
    assert_eq!(table(&dir).iter().map(|r| r.0).collect::<Vec<_>>(), [3]);
}

#[tokio::test]
async fn a_rejection_whose_commit_fails_is_kept_and_written_later() {
    let dir = TempDir::new().unwrap();
    let (q, w) = queue_with(&dir, 4).await;
    q.mark_published(vec![(4, 3)]).await.unwrap();
    let side = rusqlite::Connection::open(db_path(dir.path())).unwrap();
    side.busy_timeout(std::time::Duration::from_secs(5))
        .unwrap();
    side.execute_batch(
        "CREATE TRIGGER boom BEFORE DELETE ON messages \
         BEGIN SELECT RAISE(ABORT, 'injected failure'); END;",
    )
    .unwrap();
    q.reject(vec![1, 4], 0x87).await.unwrap();
    // The reads answer as if the move were done.
    assert_eq!(seqs(&q.fetch(0, 10).await.unwrap()), [2, 3]);
    assert!(q.unsettled().await.unwrap().is_empty());
    assert_eq!(q.progress().borrow().depth, 2);
    // Row 4's packet id cannot be reused on disk before the move of row 4.
    assert!(matches!(
        q.mark_published(vec![(2, 3)]).await,
        Err(QueueError::Commit(_))
    ));
    assert!(q.rejected().held.is_empty(), "not moved yet");
    side.execute_batch("DROP TRIGGER boom").unwrap();
    w.close().await.unwrap();
    assert_eq!(table(&dir).iter().map(|r| r.0).collect::<Vec<_>>(), [1, 4]);
    let (q, _live, w) = Queue::open(dir.path(), QueueOptions::default()).unwrap();
    let rows = q.fetch(0, 10).await.unwrap();
    assert_eq!(seqs(&rows), [2, 3]);
    assert!(rows.iter().all(|r| r.delivery == Delivery::Queued));
    w.close().await.unwrap();
}

/// A full queue of `store.max_size` 256 KiB: rows pushed until `on_full` applied.
async fn full_queue(dir: &TempDir, on_full: crate::config::OnFull) -> (Queue, QueueWriter) {
    let opts = QueueOptions {
        max_size: 256 * 1024,
        on_full,
        max_batch: 50,
        ..QueueOptions::default()
    };
    let (q, _live, w) = Queue::open(dir.path(), opts).unwrap();
    for i in 0..12_000 {
        q.push(sample(i, Qos::AtLeastOnce)).await.unwrap();
    }
    q.fetch(0, 0).await.unwrap(); // barrier
    assert!(q.stats().capacity_dropped > 0, "the queue is full");
    (q, w)
}

#[tokio::test]
async fn rejected_rows_never_make_reject_new_refuse_new_samples() {
    let dir = TempDir::new().unwrap();
    let (q, w) = full_queue(&dir, crate::config::OnFull::RejectNew).await;
    let queued = seqs(&q.fetch(0, usize::MAX).await.unwrap());
    let (held, refused) = (queued.len() as u64, q.stats().capacity_dropped);
    q.reject(queued.clone(), 0x87).await.unwrap();
    // Rows refused in a group are evictable from the next group on.
    q.fetch(0, 0).await.unwrap();
    for i in 0..1000 {
        q.push(sample(i, Qos::AtLeastOnce)).await.unwrap();
    }
    let fresh = q.fetch(0, usize::MAX).await.unwrap();
    assert_eq!(fresh.len(), 1000, "every new sample admitted");
    assert_eq!(q.stats().capacity_dropped, refused);
    let stats = q.rejected();
    let evicted = stats.evicted.get(&0x87).copied().unwrap_or(0);
    assert!(evicted > 0, "{stats:?}");
    assert_eq!(stats.held, [(0x87, held - evicted)].into());
    w.close().await.unwrap();
    // Oldest first: what is left is the newest rejected rows.
    let left: Vec<u64> = table(&dir).iter().map(|r| r.0 as u64).collect();
    assert_eq!(left, queued[queued.len() - left.len()..]);
}

#[tokio::test]
async fn drop_oldest_evicts_rejected_rows_before_any_queued_row() {
    let dir = TempDir::new().unwrap();
    let (q, w) = full_queue(&dir, crate::config::OnFull::DropOldest).await;
    let queued = seqs(&q.fetch(0, usize::MAX).await.unwrap());
    let dropped = q.stats().capacity_dropped;
    // Row 1 was evicted: refusing it now does nothing.
    assert!(queued[0] > 1);
    q.reject(vec![1], 0x87).await.unwrap();
    // The newest rows are refused: the oldest queued rows are older than every rejected one.
    let newest = queued[queued.len() - 2000..].to_vec();
    q.reject(newest, 0x90).await.unwrap();
    q.fetch(0, 0).await.unwrap(); // barrier, as above
    for i in 0..500 {
        q.push(sample(i, Qos::AtLeastOnce)).await.unwrap();
    }
    let now = seqs(&q.fetch(0, usize::MAX).await.unwrap());
    assert_eq!(now.len(), queued.len() - 2000 + 500);
    assert_eq!(now[0], queued[0], "no queued row evicted");
    assert_eq!(q.stats().capacity_dropped, dropped);
    let stats = q.rejected();
    let evicted = stats.evicted.get(&0x90).copied().unwrap_or(0);
    assert!(evicted > 0);
    assert!(!stats.rejected.contains_key(&0x87), "{stats:?}");
    assert_eq!(stats.held, [(0x90, 2000 - evicted)].into());
    w.close().await.unwrap();
}
