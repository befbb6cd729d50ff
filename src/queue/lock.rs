//! Who has the queue open for writing: an advisory lock (`flock(2)`) on the data directory.
//! The gateway's writer holds it shared for as long as it runs; a tool that writes the file
//! beside the gateway's back (`fieldrelay queue requeue-rejected`) takes it exclusive without
//! waiting, and refuses while a gateway runs. SQLite's own locks cannot tell: in WAL mode an idle
//! writer holds none that a second writer would meet, and the gateway keeps what it knows of
//! the file (depth, counters, the uplink's fetch cursor) in memory.
//!
//! The directory is locked, not `queue.db`: SQLite's POSIX locks on `queue.db` are dropped when
//! the process closes *any* descriptor of that file, and `flock` locks on the directory are
//! independent of them. A file system without `flock` (some network mounts) gives no lock: the
//! gateway runs without one (logged), and a tool is refused (it cannot tell).

use std::fs::File;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

/// A held lock; released when dropped (or when the process ends, however it ends).
#[derive(Debug)]
pub struct DirLock {
    _held: Flock<File>,
}

/// Why a lock was not taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds it: a gateway runs on this directory.
    #[error("a process holds {0} open (a gateway runs on it)")]
    Held(std::path::PathBuf),
    #[error("cannot lock {path}: {reason}")]
    Failed {
        path: std::path::PathBuf,
        reason: String,
    },
}

fn lock(data_dir: &Path, arg: FlockArg) -> Result<DirLock, LockError> {
    let failed = |reason: String| LockError::Failed {
        path: data_dir.to_path_buf(),
        reason,
    };
    let dir = File::open(data_dir).map_err(|e| failed(e.to_string()))?;
    match Flock::lock(dir, arg) {
        Ok(held) => Ok(DirLock { _held: held }),
        Err((_, Errno::EWOULDBLOCK)) => Err(LockError::Held(data_dir.to_path_buf())),
        Err((_, errno)) => Err(failed(errno.desc().to_owned())),
    }
}

/// The gateway's lock: shared, so that tests and tools reading the file are not affected; waits
/// while a tool holds it exclusive (for the few milliseconds of its transaction).
pub(super) fn shared(data_dir: &Path) -> Option<DirLock> {
    match lock(data_dir, FlockArg::LockShared) {
        Ok(lock) => Some(lock),
        Err(error) => {
            tracing::warn!(%error, "queue runs without its directory lock");
            None
        }
    }
}

/// A tool's lock: exclusive, refused at once while a gateway holds the directory.
pub fn exclusive(data_dir: &Path) -> Result<DirLock, LockError> {
    lock(data_dir, FlockArg::LockExclusiveNonblock)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shared_holder_refuses_the_exclusive_lock_until_it_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let gateway = shared(dir.path()).expect("flock on a local directory");
        let second = shared(dir.path()).expect("shared locks coexist");
        assert!(matches!(exclusive(dir.path()), Err(LockError::Held(_))));
        drop(gateway);
        assert!(matches!(exclusive(dir.path()), Err(LockError::Held(_))));
        drop(second);
        let tool = exclusive(dir.path()).unwrap();
        assert!(matches!(exclusive(dir.path()), Err(LockError::Held(_))));
        drop(tool);
        assert!(exclusive(dir.path()).is_ok());
    }
}
