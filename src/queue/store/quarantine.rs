//! The integrity check at open, and what happens to a file that fails it: moved aside (never
//! deleted), and a new queue started above the last `seq` the old file handed out.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, ErrorCode};

use super::schema::open_rw;
use crate::queue::{QueueError, QueueOptions};

/// Whether an error means "this file is not a sound SQLite database" (quarantine it) rather than
/// "something around it failed" (permissions, I/O, a newer schema: refuse to start, touch
/// nothing).
pub(super) fn is_corruption(error: &QueueError) -> bool {
    match error {
        QueueError::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => {
            matches!(e.code, ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase)
        }
        QueueError::Corrupt(_) => true,
        _ => false,
    }
}

/// `PRAGMA quick_check`: verifies every page and b-tree (without the cross-checks of indexes
/// against tables that `integrity_check` adds, which is O(N log N)). Reads the whole file once.
pub(super) fn quick_check(conn: &Connection) -> Result<(), QueueError> {
    let mut stmt = conn.prepare("PRAGMA quick_check(5)")?;
    let lines: Vec<String> = stmt
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<Result<_, _>>()?;
    if lines.len() == 1 && lines[0] == "ok" {
        Ok(())
    } else {
        Err(QueueError::Corrupt(lines.join("; ")))
    }
}

/// The newest `seq` a damaged file handed out, so that the new queue continues above it:
/// `sqlite_sequence` as the page walk ([`crate::queue::salvage`]) reads it — SQLite itself refuses a
/// file cut short as a whole — raised to the highest `seq` on any page. `None` when
/// `sqlite_sequence` cannot be read: the rows' highest `seq` is no bound then (the newest rows
/// may have been acknowledged, or sat in the lost part), and a `seq` handed out again would make
/// consumers that de-duplicate by `seq` drop new samples. Values above 2^53 are refused: a
/// damaged page can decode as any number, and a seq that large would break JSON consumers and
/// soon exhaust the id space.
pub(super) fn salvage_last_seq(path: &Path) -> Option<u64> {
    const PLAUSIBLE: u64 = 1 << 53;
    let salvage = crate::queue::salvage::Salvage::open(path).ok()?;
    let last = salvage.sequence()?.max(salvage.max_seq().unwrap_or(0));
    (last < PLAUSIBLE).then_some(last)
}

/// Makes the next `seq` of a new file larger than `floor`.
pub(super) fn seed_last_seq(conn: &Connection, floor: u64) -> Result<(), QueueError> {
    let floor = i64::try_from(floor).unwrap_or(i64::MAX / 2);
    conn.execute("DELETE FROM sqlite_sequence WHERE name = 'messages'", [])?;
    conn.execute(
        "INSERT INTO sqlite_sequence (name, seq) VALUES ('messages', ?1)",
        [floor],
    )?;
    Ok(())
}

/// Renames `queue.db` (and its `-wal`/`-shm` companions, so the copy still opens with its log)
/// to `queue.db.corrupt-<UTC timestamp>[-n]`. Never deletes anything. Returns the new name.
pub(super) fn quarantine(path: &Path, utc_stamp: &str) -> Result<PathBuf, std::io::Error> {
    let mut target = PathBuf::from(format!("{}.corrupt-{utc_stamp}", path.display()));
    let mut n = 1;
    while target.exists() {
        n += 1;
        target = PathBuf::from(format!("{}.corrupt-{utc_stamp}-{n}", path.display()));
    }
    std::fs::rename(path, &target)?;
    for suffix in ["-wal", "-shm"] {
        let from = PathBuf::from(format!("{}{suffix}", path.display()));
        if from.exists() {
            std::fs::rename(&from, format!("{}{suffix}", target.display()))?;
        }
    }
    // Make the renames durable before a new file takes the old name.
    if let Some(dir) = path.parent() {
        if let Ok(dir) = std::fs::File::open(dir) {
            let _ = dir.sync_all();
        }
    }
    Ok(target)
}

/// Opens the read-write connection with the integrity check, quarantining a corrupt file.
pub(crate) fn open_checked(
    path: &Path,
    options: &QueueOptions,
) -> Result<rusqlite::Connection, QueueError> {
    let attempt = |path: &Path| -> Result<rusqlite::Connection, QueueError> {
        let conn = open_rw(path, options.sync, options.max_size)?;
        quick_check(&conn)?;
        Ok(conn)
    };
    if !path.exists() {
        return open_rw(path, options.sync, options.max_size);
    }
    match attempt(path) {
        Ok(conn) => Ok(conn),
        Err(error) if is_corruption(&error) => {
            let floor = salvage_last_seq(path);
            let stamp = utc_stamp(crate::sample::now_ms() / 1000);
            let moved = quarantine(path, &stamp).map_err(|source| QueueError::Quarantine {
                path: path.to_path_buf(),
                source,
            })?;
            // Without a readable last seq, a clock-derived floor (ms × 1000, below 2^53 until
            // the year 2255) is above any seq a gateway can have handed out.
            let floor = floor.unwrap_or_else(|| {
                u64::try_from(crate::sample::now_ms())
                    .unwrap_or(0)
                    .saturating_mul(1000)
            });
            tracing::error!(
                %error,
                quarantined = %moved.display(),
                next_seq_above = floor,
                "queue file is corrupt: moved aside (not deleted), starting a new queue"
            );
            let conn = open_rw(path, options.sync, options.max_size)?;
            seed_last_seq(&conn, floor)?;
            Ok(conn)
        }
        Err(error) => Err(error),
    }
}

/// `YYYYMMDDTHHMMSSZ` for Unix seconds (civil-from-days, proleptic Gregorian).
pub(crate) fn utc_stamp(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}
