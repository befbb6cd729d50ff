//! Small real file systems for disk-full tests: a tmpfs of a given size, and a full disk under a
//! running queue.
//!
//! Mounting needs root (CI runs as root): [`Tmpfs::mount_at`] returns `None` where `mount` is
//! refused, and the tests say so and return. An unprivileged stand-in (a size limit on the
//! process) would not exercise SQLite's real ENOSPC path.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A tmpfs mounted on a directory; unmounted when dropped.
pub struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (`mount -o size=`, e.g. `2m`) on `path`, creating it.
    pub fn mount_at(path: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(path).ok()?;
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .stderr(Stdio::null())
            .status()
            .ok()?;
        status.success().then(|| Tmpfs {
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// A full disk under the queue in `data` (on a [`Tmpfs`]) that stays full however the queue
/// checkpoints: its write-ahead log is emptied, a reader holds a snapshot once the writer has
/// appended to it again (so the log cannot be reused from its start and every commit needs new
/// space), and a filler file takes the rest. [`DiskFull::free`] ends it.
pub struct DiskFull {
    reader: rusqlite::Connection,
    filler: PathBuf,
}

impl DiskFull {
    /// `active`: a writer commits all the time (a running gateway), so the log grows again by
    /// itself after it was emptied; without one, `start` commits nothing itself and the log is
    /// pinned empty, which every commit also has to grow.
    pub fn start(data: &Path, active: bool) -> DiskFull {
        let db = data.join("queue.db");
        let side = rusqlite::Connection::open(&db).expect("open the queue on the side");
        side.busy_timeout(std::time::Duration::from_secs(5))
            .expect("busy timeout");
        let busy: i64 = side
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))
            .expect("checkpoint");
        assert_eq!(busy, 0, "the log was emptied");
        drop(side);
        let wal = data.join("queue.db-wal");
        let started = std::time::Instant::now();
        while active && std::fs::metadata(&wal).map_or(0, |m| m.len()) == 0 {
            assert!(
                started.elapsed() < std::time::Duration::from_secs(10),
                "the writer never committed"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let reader =
            rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
                .expect("open a reader");
        reader
            .execute_batch("BEGIN; SELECT COUNT(*) FROM messages;")
            .expect("hold a snapshot");
        // Beside the queue, so on its file system; the queue ignores other files.
        let filler = data.join("filler");
        let mut f = std::fs::File::create(&filler).expect("create the filler");
        let block = vec![0u8; 64 * 1024];
        while f.write_all(&block).is_ok() {}
        let _ = f.sync_all();
        DiskFull { reader, filler }
    }

    /// Space returns.
    pub fn free(self) {
        let _ = self.reader.execute_batch("COMMIT");
        drop(self.reader);
        std::fs::remove_file(&self.filler).expect("remove the filler");
    }
}
