//! Disk full, for real: the queue on a 2 MiB tmpfs that a filler file fills up. Commits fail,
//! pushes keep being accepted (polling never stalls), the drops are counted, committed rows and
//! the session state stay intact, and once the filler is removed commits succeed again without
//! any restart.
//!
//! Mounting needs root (CI runs as root). Where `mount` is refused the test says so and
//! returns: an unprivileged stand-in (a size limit on the process) would not exercise SQLite's
//! real ENOSPC path.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use fieldrelay::config::Qos;
use fieldrelay::queue::{Queue, QueueOptions};
use fieldrelay::sample::{Sample, Value};

struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().ok()?;
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .ok()?;
        status.success().then_some(Tmpfs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
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

/// Fills the file system with a file of 64 KiB blocks until it is full.
fn fill(path: &Path) -> PathBuf {
    use std::io::Write;
    let filler = path.join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    let block = vec![0u8; 64 * 1024];
    while f.write_all(&block).is_ok() {}
    let _ = f.sync_all();
    filler
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_full_drops_and_counts_new_samples_and_recovers_by_itself() {
    let Some(fs) = Tmpfs::mount("2m") else {
        eprintln!("skipped: cannot mount a tmpfs here (needs root); disk-full not exercised");
        return;
    };
    let data = fs.path().join("data");
    let options = QueueOptions {
        max_size: 64 << 20, // far above the disk: the disk fills first
        max_batch: 50,
        ..QueueOptions::default()
    };
    let (q, _live, w) = Queue::open(&data, options).unwrap();
    for i in 0..200 {
        q.push(sample(i)).await.unwrap();
    }
    q.progress().wait_for(|p| p.last_seq >= 200).await.unwrap();
    // A sent row with its packet id, as the uplink leaves it.
    q.mark_published(vec![(1, 11)]).await.unwrap();

    let filler = fill(fs.path());
    let mut i = 200;
    while q.stats().commit_dropped == 0 {
        // Pushes are accepted however full the disk is: the pollers never stall.
        q.push(sample(i)).await.unwrap();
        q.fetch(0, 0).await.unwrap(); // one group per push
        i += 1;
        assert!(i < 100_000, "the disk never filled up");
    }
    let full = *q.progress().borrow();
    for _ in 0..100 {
        q.push(sample(i)).await.unwrap();
        i += 1;
    }
    q.fetch(0, 0).await.unwrap();
    let stats = q.stats();
    assert!(stats.commit_dropped >= 100, "{stats:?}");
    assert_eq!(
        q.progress().borrow().last_seq,
        full.last_seq,
        "nothing committed while full"
    );
    assert!(!q.is_closed(), "the writer carries on");
    // Committed rows are all still there (an ack may or may not fit on a full disk; a lost
    // one only means the row is sent again with its seq).
    let rows = q.fetch(0, 1000).await.unwrap();
    assert_eq!(rows.last().map(|r| r.seq), Some(full.last_seq));

    // Space returns: the very next commits succeed, no restart.
    std::fs::remove_file(filler).unwrap();
    q.push(sample(-1)).await.unwrap();
    let p = *q
        .progress()
        .wait_for(|p| p.last_seq > full.last_seq)
        .await
        .unwrap();
    assert_eq!(
        p.last_seq,
        full.last_seq + 1,
        "no seq lost to the failed commits"
    );
    q.ack(2).await.unwrap();
    let unsettled = q.unsettled().await.unwrap();
    assert_eq!(unsettled.len(), 1);
    assert_eq!(unsettled[0].seq, 1);
    w.close().await.unwrap();

    // Everything committed before and after is on disk, gapless in seq.
    let rows = fieldrelay::queue::read_only_rows(&data).unwrap();
    let seqs: Vec<u64> = rows.iter().map(|r| r.seq).collect();
    let mut want = vec![1];
    want.extend(3..=p.last_seq);
    assert_eq!(seqs, want);
}
