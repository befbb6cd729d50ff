//! `fieldrelay queue requeue-rejected`: the way back for rows the broker refused for good
//! (`rejected.rs`), once the cause is fixed (an ACL, a topic, a size limit). The rows go back
//! into the queue as never sent, with their `seq`, and the gateway sends them at its next start,
//! oldest first; a row whose point has a `max_age` it has passed meanwhile is dropped as
//! expired, as any stale row.
//!
//! # Only with the gateway stopped
//! The gateway's writer is the only one to write `queue.db` while it runs (see the threading
//! model in `mod.rs`): it keeps the depth, the counters and the uplink's fetch cursor in memory,
//! and rows put back behind its back would not be sent before its next restart anyway. So the
//! tool takes the data directory's lock exclusive ([`super::lock`]) and refuses, touching
//! nothing, while a gateway holds it; a gateway that starts meanwhile waits for the tool's one
//! transaction.

use std::path::{Path, PathBuf};

use super::lock::{self, LockError};
use super::rejected::{self, ByReason};
use super::store::{self, db_path};
use super::{QueueError, DEFAULT_MAX_SIZE};
use crate::config::SyncMode;

/// Why nothing was requeued. [`RequeueError::exit_code`] maps each to a sysexits.h status.
#[derive(Debug, thiserror::Error)]
pub enum RequeueError {
    #[error("no queue file {0} (the gateway creates it at its first start)")]
    NoQueueFile(PathBuf),
    #[error(
        "{0} is in use by a running gateway; stop it first (sudo systemctl stop fieldrelay), \
         then run this again and start it (sudo systemctl start fieldrelay)"
    )]
    GatewayRunning(PathBuf),
    #[error("{0}; nothing was changed")]
    Lock(LockError),
    #[error("cannot requeue the rejected rows of {path}: {source}; nothing was changed")]
    Queue { path: PathBuf, source: QueueError },
}

/// sysexits.h: a temporary failure (the gateway runs); try again once it is stopped.
pub const EX_TEMPFAIL: u8 = 75;

impl RequeueError {
    pub fn exit_code(&self) -> u8 {
        match self {
            RequeueError::NoQueueFile(_) => super::inspect::EX_NOINPUT,
            RequeueError::GatewayRunning(_) => EX_TEMPFAIL,
            RequeueError::Lock(_) => super::inspect::EX_IOERR,
            RequeueError::Queue { source, .. } => match source {
                QueueError::SchemaTooNew { .. } => super::inspect::EX_DATAERR,
                _ => super::inspect::EX_IOERR,
            },
        }
    }
}

/// Puts the rejected rows of `reason` (every reason with `None`) of the queue in `data_dir`
/// back into the queue, in one transaction; how many per reason.
pub fn requeue_rejected(data_dir: &Path, reason: Option<u8>) -> Result<ByReason, RequeueError> {
    let file = db_path(data_dir);
    if !file.is_file() {
        return Err(RequeueError::NoQueueFile(file));
    }
    let _lock = lock::exclusive(data_dir).map_err(|e| match e {
        LockError::Held(_) => RequeueError::GatewayRunning(file.clone()),
        other => RequeueError::Lock(other),
    })?;
    let failed = |source| RequeueError::Queue {
        path: file.clone(),
        source,
    };
    store::check_writable(data_dir).map_err(failed)?;
    let mut conn = store::open_rw(&file, SyncMode::Full, DEFAULT_MAX_SIZE).map_err(failed)?;
    let requeue = |conn: &mut rusqlite::Connection| -> rusqlite::Result<ByReason> {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let moved = rejected::requeue(&tx, reason)?;
        tx.commit()?;
        Ok(moved)
    };
    let moved = requeue(&mut conn).map_err(|e| failed(e.into()))?;
    conn.close().map_err(|(_, e)| failed(e.into()))?;
    Ok(moved)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Qos;
    use crate::queue::{Queue, QueueOptions};
    use crate::sample::{Sample, Value};

    fn sample(i: i64) -> Sample {
        Sample {
            device: std::sync::Arc::from("plc1"),
            point: std::sync::Arc::from("p"),
            value: Value::Int(i),
            ts_ms: 1_700_000_000_000 + i,
            qos: Qos::AtLeastOnce,
            retain: false,
        }
    }

    #[tokio::test]
    async fn requeued_rows_come_back_with_their_seq_and_only_with_the_gateway_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let (q, _live, w) = Queue::open(dir.path(), QueueOptions::default()).unwrap();
        for i in 1..=5 {
            q.push(sample(i)).await.unwrap();
        }
        q.fetch(0, 0).await.unwrap();
        q.reject(vec![1, 2], 0x87).await.unwrap();
        q.reject(vec![4], 0x90).await.unwrap();
        assert_eq!(q.fetch(0, 10).await.unwrap().len(), 2);
        match requeue_rejected(dir.path(), None) {
            Err(e @ RequeueError::GatewayRunning(_)) => assert_eq!(e.exit_code(), EX_TEMPFAIL),
            other => panic!("expected a refusal, got {other:?}"),
        }
        w.close().await.unwrap();

        let moved = requeue_rejected(dir.path(), Some(0x87)).unwrap();
        assert_eq!(moved, [(0x87, 2)].into());
        let (q, _live, w) = Queue::open(dir.path(), QueueOptions::default()).unwrap();
        let rows = q.fetch(0, 10).await.unwrap();
        let seqs: Vec<u64> = rows.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, [1, 2, 3, 5]);
        assert_eq!(rows[0].entry, crate::queue::Entry::Sample(sample(1)));
        assert_eq!(q.progress().borrow().depth, 4);
        assert_eq!(q.rejected().held, [(0x90, 1)].into());
        // New rows still get new seqs.
        q.push(sample(6)).await.unwrap();
        assert_eq!(q.fetch(5, 10).await.unwrap()[0].seq, 6);
        w.close().await.unwrap();

        assert_eq!(
            requeue_rejected(dir.path(), None).unwrap(),
            [(0x90, 1)].into()
        );
        assert!(requeue_rejected(dir.path(), None).unwrap().is_empty());
        let missing = dir.path().join("nothing");
        assert!(matches!(
            requeue_rejected(&missing, None),
            Err(RequeueError::NoQueueFile(_))
        ));
    }
}
