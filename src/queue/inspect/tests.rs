//! The inspector on real SQLite files: a live queue (its writer open), a closed one, a v1 file,
//! files that are not queues, and a queue with a page destroyed on purpose.

use std::sync::Arc;

use tempfile::TempDir;

use super::*;
use crate::config::Qos;
use crate::queue::{Message, MessageKind, Queue, QueueOptions, QueueWriter};
use crate::sample::{Sample, Value};

fn sample(point: &str, i: i64) -> Sample {
    Sample {
        device: Arc::from("boiler"),
        point: Arc::from(point),
        value: Value::Int(i),
        ts_ms: 1_700_000_000_000 + i,
        qos: Qos::AtLeastOnce,
        retain: false,
    }
}

/// A queue with `n` rows of point `p` (values 1..=n), committed.
async fn queue_with(dir: &Path, n: i64) -> (Queue, QueueWriter) {
    let (queue, _live, writer) = Queue::open(dir, QueueOptions::default()).unwrap();
    for i in 1..=n {
        queue.push(sample("p", i)).await.unwrap();
    }
    queue.fetch(0, 0).await.unwrap(); // barrier: committed
    (queue, writer)
}

fn lines(bytes: &[u8]) -> Vec<serde_json::Value> {
    std::str::from_utf8(bytes)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

#[test]
fn missing_and_foreign_files_get_their_own_error_and_exit_code() {
    let dir = TempDir::new().unwrap();
    let open = |target: Target| Inspector::open(&target).unwrap_err();

    let missing = open(Target::DataDir(dir.path().join("nope")));
    assert!(matches!(missing, InspectError::NoDataDir(_)), "{missing}");
    assert_eq!(missing.exit_code(), EX_NOINPUT);
    let empty = open(Target::DataDir(dir.path().to_path_buf()));
    assert_eq!(
        empty.to_string(),
        format!(
            "no queue file {}/queue.db (the gateway creates it at its first start)",
            dir.path().display()
        )
    );
    assert_eq!(empty.exit_code(), EX_NOINPUT);
    assert!(names(dir.path()).is_empty(), "nothing was created");

    let garbage = dir.path().join("garbage.db");
    std::fs::write(&garbage, vec![0x42u8; 8192]).unwrap();
    let error = open(Target::File(garbage.clone()));
    assert!(matches!(error, InspectError::Unreadable { .. }), "{error}");
    assert!(
        error.to_string().contains("no readable SQLite header"),
        "{error}"
    );
    assert_eq!(error.exit_code(), EX_DATAERR);

    let other = dir.path().join("other.db");
    rusqlite::Connection::open(&other)
        .unwrap()
        .execute_batch("CREATE TABLE t (x)")
        .unwrap();
    let error = open(Target::File(other));
    assert!(matches!(error, InspectError::NotAQueue(_)), "{error}");
    assert_eq!(error.exit_code(), EX_DATAERR);

    let newer = dir.path().join("newer.db");
    let conn = rusqlite::Connection::open(&newer).unwrap();
    conn.execute_batch("CREATE TABLE messages (seq INTEGER PRIMARY KEY); PRAGMA user_version = 99")
        .unwrap();
    drop(conn);
    let error = open(Target::File(newer.clone()));
    assert_eq!(
        error.to_string(),
        format!(
            "{} has queue schema version 99, newer than this build reads ({SCHEMA_VERSION}); \
             use the fieldrelay release that wrote it",
            newer.display()
        )
    );
    assert_eq!(error.exit_code(), EX_DATAERR);
}

/// `stats` of a live queue: the numbers are the ones committed, by point and kind, the rows in
/// flight carry their packet ids, and the quarantined files beside it are listed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_match_what_was_committed_while_the_writer_runs() {
    let dir = TempDir::new().unwrap();
    let (queue, writer) = queue_with(dir.path(), 5).await;
    for i in 1..=3 {
        queue.push(sample("q", 100 + i)).await.unwrap();
    }
    queue
        .push_message(Message {
            kind: MessageKind::DeviceStatus,
            device: Arc::from("boiler"),
            point: Arc::from(""),
            payload: r#"{"online":true}"#.into(),
            ts_ms: 1_700_000_000_500,
            qos: Qos::AtLeastOnce,
            retain: true,
        })
        .await
        .unwrap();
    queue.mark_published(vec![(1, 11), (2, 12)]).await.unwrap();
    queue.mark_received(vec![2]).await.unwrap();
    queue.ack(3).await.unwrap();
    queue
        .set_session_peer("gw@broker:1883".into())
        .await
        .unwrap();
    queue.fetch(0, 0).await.unwrap();
    std::fs::write(dir.path().join("queue.db.corrupt-20261120T100000Z"), b"x").unwrap();
    std::fs::write(
        dir.path().join("queue.db.corrupt-20261120T100000Z-wal"),
        b"",
    )
    .unwrap();

    let inspector = Inspector::open(&Target::DataDir(dir.path().to_path_buf())).unwrap();
    let summary = inspector.summary().unwrap();
    let c = &summary.contents;
    assert_eq!(summary.rows(), queue.progress().borrow().depth);
    assert_eq!(summary.rows(), 8);
    let groups: Vec<(&str, &str, i64, u64, u64, u64, u64)> = c
        .groups
        .iter()
        .map(|g| {
            (
                g.device.as_str(),
                g.point.as_str(),
                g.kind,
                g.rows,
                g.in_flight,
                g.first_seq,
                g.last_seq,
            )
        })
        .collect();
    assert_eq!(
        groups,
        [
            ("boiler", "", 1, 1, 0, 9, 9),
            ("boiler", "p", 0, 4, 2, 1, 5),
            ("boiler", "q", 0, 3, 0, 6, 8),
        ]
    );
    let in_flight: Vec<(u64, i64, Option<i64>)> = c
        .in_flight
        .iter()
        .map(|r| (r.seq, r.state, r.pkid))
        .collect();
    assert_eq!(in_flight, [(1, 1, Some(11)), (2, 2, Some(12))]);
    assert_eq!(
        c.oldest.map(|e| (e.seq, e.ts_ms)),
        Some((1, 1_700_000_000_001))
    );
    assert_eq!(c.newest.map(|e| e.seq), Some(9));
    assert_eq!(c.last_seq, 9);
    assert_eq!(c.session_peer.as_deref(), Some("gw@broker:1883"));
    assert_eq!(c.used_bytes, queue.progress().borrow().bytes);
    let files: Vec<&str> = summary.files.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(files, ["queue.db", "queue.db-wal", "queue.db-shm"]);
    let quarantined = summary.quarantined.as_ref().unwrap();
    assert_eq!(quarantined.len(), 1);
    assert_eq!(quarantined[0].name, "queue.db.corrupt-20261120T100000Z");

    // peek: the next rows in seq order, in-flight ones with their state and packet id.
    let mut out = Vec::new();
    let outcome = inspector.peek(3, Some("fr/gw"), &mut out).unwrap();
    assert_eq!(outcome.rows, 3);
    let rows = lines(&out);
    let seqs: Vec<u64> = rows.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, [1, 2, 4]);
    assert_eq!(rows[0]["state"], "sent");
    assert_eq!(rows[0]["pkid"], 11);
    assert_eq!(rows[1]["state"], "received");
    assert_eq!(rows[2]["state"], "queued");
    assert_eq!(rows[2]["value"], 4);
    assert_eq!(rows[2]["topic"], "fr/gw/boiler/p");
    writer.close().await.unwrap();
}

#[tokio::test]
async fn a_closed_queue_is_read_without_creating_any_file() {
    let dir = TempDir::new().unwrap();
    let (_queue, writer) = queue_with(dir.path(), 3).await;
    writer.close().await.unwrap();
    let before = names(dir.path());
    assert_eq!(before, ["queue.db"], "a clean close removes the log");
    let inspector = Inspector::open(&Target::DataDir(dir.path().to_path_buf())).unwrap();
    assert_eq!(inspector.summary().unwrap().rows(), 3);
    let mut out = Vec::new();
    let outcome = inspector.export(None, &mut out, Display::Hidden).unwrap();
    assert!(outcome.complete());
    assert_eq!(lines(&out).len(), 3);
    drop(inspector);
    assert_eq!(names(dir.path()), before);
}

#[tokio::test]
async fn a_v1_file_is_read_as_queued_samples() {
    let dir = TempDir::new().unwrap();
    let file = dir.path().join("old.db");
    let c = rusqlite::Connection::open(&file).unwrap();
    c.execute_batch(crate::queue::store::SCHEMA_V1).unwrap();
    c.pragma_update(None, "user_version", 1).unwrap();
    for i in 1..=4 {
        c.execute(
            "INSERT INTO samples (device, point, value, ts_ms, qos, retain) \
             VALUES ('plc1', 'p', ?1, 5, 2, 0)",
            [format!("{i}.5")],
        )
        .unwrap();
    }
    c.execute("DELETE FROM samples WHERE seq = 1", []).unwrap();
    drop(c);
    let inspector = Inspector::open(&Target::File(file)).unwrap();
    let summary = inspector.summary().unwrap();
    assert_eq!((summary.schema_version, summary.rows()), (1, 3));
    assert_eq!(summary.contents.last_seq, 4);
    assert!(summary.quarantined.is_none());
    let mut out = Vec::new();
    inspector.export(None, &mut out, Display::Hidden).unwrap();
    let rows = lines(&out);
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0]["seq"], 2);
    assert_eq!(rows[0]["value"], 2.5);
    assert_eq!(rows[0]["qos"], 2);
    assert_eq!(rows[0]["state"], "queued");
}

/// Writes `n` rows with a large value each (so that they span many leaf pages), closes the
/// queue and overwrites page `page` (1-based) of the file with garbage.
async fn damaged_queue(dir: &Path, n: i64, pages: &[u64]) -> PathBuf {
    let (queue, _live, writer) = Queue::open(dir, QueueOptions::default()).unwrap();
    for i in 1..=n {
        let text = format!("{i:0>200}");
        queue
            .push(Sample {
                value: Value::Str(Arc::from(text)),
                ..sample("p", i)
            })
            .await
            .unwrap();
    }
    queue.fetch(0, 0).await.unwrap();
    writer.close().await.unwrap();
    let file = db_path(dir);
    let mut bytes = std::fs::read(&file).unwrap();
    for page in pages {
        let start = usize::try_from((page - 1) * 4096).unwrap();
        bytes[start..start + 4096].fill(0xA5);
    }
    std::fs::write(&file, bytes).unwrap();
    file
}

/// `export` of a damaged file writes every row still in the file, in order and intact, and
/// names the seq ranges it could not read (the destroyed leaves); nothing else is lost.
#[tokio::test]
async fn export_reads_around_damaged_pages_and_names_what_it_lost() {
    let dir = TempDir::new().unwrap();
    // ≈ 16 rows per 4 KiB leaf: 3000 rows fill ≈ 190 pages; destroy two leaves apart.
    let file = damaged_queue(dir.path(), 3000, &[40, 120]).await;
    let inspector = Inspector::open(&Target::File(file.clone())).unwrap();
    assert!(matches!(
        inspector.summary().unwrap_err(),
        InspectError::Damaged { .. }
    ));
    let mut out = Vec::new();
    let outcome = inspector.export(None, &mut out, Display::Hidden).unwrap();
    let rows = lines(&out);
    let seqs: Vec<u64> = rows.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "in seq order");
    for row in &rows {
        let seq = row["seq"].as_u64().unwrap();
        assert_eq!(row["value"], format!("{seq:0>200}"), "row {seq} intact");
    }
    assert_eq!(outcome.rows, seqs.len() as u64);
    assert_eq!(outcome.gaps.len(), 2, "{}", outcome.report());
    // Every missing seq is inside a reported gap, and a gap is about one leaf.
    let missing: Vec<u64> = (1..=3000).filter(|s| !seqs.contains(s)).collect();
    assert!(!missing.is_empty());
    for seq in &missing {
        assert!(
            outcome
                .gaps
                .iter()
                .any(|g| { g.after.unwrap_or(0) < *seq && g.resumed_at.is_none_or(|r| *seq < r) }),
            "seq {seq} lost but not reported: {}",
            outcome.report()
        );
    }
    assert!(
        missing.len() < 100,
        "{} lost: {}",
        missing.len(),
        outcome.report()
    );
    for gap in &outcome.gaps {
        assert!(gap.resumed_at.is_some(), "{}", outcome.report());
        assert!(
            gap.reason.contains("page 40") || gap.reason.contains("page 120"),
            "{}",
            gap.reason
        );
    }
    let report = outcome.report();
    assert!(report.ends_with(&format!(
        "{} rows written; 2 unreadable range(s), 0 undecodable row(s)\n",
        seqs.len()
    )));
    // Nothing was written next to the damaged file.
    assert_eq!(names(dir.path()), ["queue.db"]);
}

#[tokio::test]
async fn export_of_a_file_damaged_at_its_end_says_how_far_it_got() {
    let dir = TempDir::new().unwrap();
    let file = damaged_queue(dir.path(), 300, &[]).await;
    let pages = std::fs::metadata(&file).unwrap().len() / 4096;
    let file = {
        let mut bytes = std::fs::read(&file).unwrap();
        let start = usize::try_from((pages - 1) * 4096).unwrap();
        bytes[start..].fill(0xA5);
        std::fs::write(&file, bytes).unwrap();
        file
    };
    let inspector = Inspector::open(&Target::File(file)).unwrap();
    let mut out = Vec::new();
    let outcome = inspector.export(None, &mut out, Display::Hidden).unwrap();
    let exported = lines(&out).len() as u64;
    assert!(exported > 200 && exported < 300, "{exported}");
    assert_eq!(outcome.gaps.len(), 1, "{}", outcome.report());
    let gap = &outcome.gaps[0];
    assert_eq!(gap.after, Some(exported));
    assert_eq!(gap.resumed_at, None);
    assert!(
        outcome
            .report()
            .starts_with(&format!("seq {}..=300 could not be read (", exported + 1)),
        "{}",
        outcome.report()
    );
}

#[test]
fn gaps_and_outcomes_read_as_sentences() {
    let gap = |after, resumed_at, last_seq| Gap {
        after,
        resumed_at,
        last_seq,
        reason: "database disk image is malformed".into(),
    };
    assert_eq!(
        gap(Some(10), Some(31), None).to_string(),
        "seq 11..=30 could not be read (database disk image is malformed)"
    );
    assert_eq!(
        gap(None, Some(5), Some(9)).to_string(),
        "seq 1..=4 could not be read (database disk image is malformed)"
    );
    assert_eq!(
        gap(Some(10), None, None).to_string(),
        "seq 11 and later could not be read (database disk image is malformed)"
    );
    let outcome = Outcome {
        rows: 7,
        undecodable: vec![Undecodable {
            seq: 3,
            reason: "column body: \"x\" is not a value".into(),
        }],
        gaps: Vec::new(),
    };
    assert!(!outcome.complete());
    assert_eq!(
        outcome.report(),
        "row 3 cannot be decoded: column body: \"x\" is not a value\n\
         7 rows written; 0 unreadable range(s), 1 undecodable row(s)\n"
    );
    assert_eq!(Outcome::default().report(), "0 rows written\n");
}

#[tokio::test]
async fn undecodable_rows_are_listed_and_the_rest_exported() {
    let dir = TempDir::new().unwrap();
    let (_queue, writer) = queue_with(dir.path(), 4).await;
    writer.close().await.unwrap();
    rusqlite::Connection::open(db_path(dir.path()))
        .unwrap()
        .execute("UPDATE messages SET body = 'x' WHERE seq = 2", [])
        .unwrap();
    let inspector = Inspector::open(&Target::DataDir(dir.path().to_path_buf())).unwrap();
    let mut out = Vec::new();
    let outcome = inspector.export(None, &mut out, Display::Hidden).unwrap();
    let seqs: Vec<u64> = lines(&out)
        .iter()
        .map(|r| r["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [1, 3, 4]);
    assert_eq!(outcome.undecodable.len(), 1);
    assert_eq!(outcome.undecodable[0].seq, 2);
    assert!(outcome.gaps.is_empty());
}
