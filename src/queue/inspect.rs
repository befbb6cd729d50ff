//! `fieldrelay queue stats|peek|export`: looking into a queue file — the live one while the
//! gateway runs, a copy, or a quarantined `queue.db.corrupt-*` — without changing it.
//!
//! # Safety while the service runs
//! Everything goes through [`QueueReader`]: a read-only connection that never creates, migrates
//! or writes, and creates no `-wal`/`-shm` beside a file no writer has open. WAL readers do not
//! block the writer; a read only keeps the log from being checkpointed past its snapshot while
//! it lasts, so `export` reads in short transactions of [`PAGE`] rows rather than one long one
//! (rows acknowledged meanwhile simply do not appear; each row appears at most once, in `seq`
//! order). `stats` reads in one snapshot (one scan) so that its numbers add up.
//!
//! # Damaged files
//! `export` is also the recovery tool for a quarantined file. The connection tolerates damage
//! (`PRAGMA writable_schema`: a file cut short opens with the pages it has). It reads rows in
//! `seq` order through SQLite while it can; at the first damaged page (corrupt, I/O error) it
//! reads the rest of the file page by page ([`super::salvage`]): every table leaf still in the
//! file, also those no interior page reaches any more. Every range it could not read is reported
//! as a [`Gap`] and every row that reads but does not decode by its `seq`; nothing is guessed.
//! When even SQLite's schema cannot be read, or the file was cut short (SQLite would read its
//! last page with a zeroed tail), `export` walks the whole file; `stats` and `peek` refuse it
//! (exit 65) and point to `export`. Only a file without a readable SQLite header is beyond
//! recovery.

use std::fmt;
use std::io::Write;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use rusqlite::ErrorCode;

use super::record::{Record, Rejection};
use super::salvage::Salvage;
use super::store::{db_path, Layout, QueueReader, DB_FILE, SCHEMA_VERSION};
use super::summary::{FileSize, Summary};
use super::{QueueError, StoredRow};
use crate::progress::{Display, Progress};

/// Rows per read transaction in `export`.
pub const PAGE: usize = 1000;

/// What to inspect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A data directory: its `queue.db`, and the quarantined files beside it.
    DataDir(PathBuf),
    /// One queue file: a copy, or a quarantined `queue.db.corrupt-*`.
    File(PathBuf),
}

/// Why a queue file cannot be inspected. [`InspectError::exit_code`] maps each to a sysexits.h
/// status.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error("data directory {0} does not exist or is not a directory")]
    NoDataDir(PathBuf),
    #[error("no queue file {0} (the gateway creates it at its first start)")]
    NoQueueFile(PathBuf),
    #[error("cannot open {path}: {source} (run as the service user: sudo -u fieldrelay …)")]
    Open { path: PathBuf, source: QueueError },
    #[error("{path} cannot be read: {reason}")]
    Unreadable { path: PathBuf, reason: String },
    #[error("{0} is an SQLite database but not a fieldrelay queue (no messages table)")]
    NotAQueue(PathBuf),
    #[error("{path} has queue schema version {found}, newer than this build reads ({supported}); use the fieldrelay release that wrote it")]
    SchemaTooNew {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    #[error("{path} is damaged ({reason}); `fieldrelay queue export --file {path}` recovers the rows SQLite can still read")]
    Damaged { path: PathBuf, reason: String },
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: QueueError },
    #[error("{0} already exists; choose another name or remove it")]
    OutputExists(PathBuf),
    #[error("cannot write {what}: {source}")]
    Write {
        what: String,
        source: std::io::Error,
    },
}

/// sysexits.h: the input file is missing or cannot be opened.
pub const EX_NOINPUT: u8 = 66;
/// sysexits.h: the input is not what it should be (not a queue, too new, damaged).
pub const EX_DATAERR: u8 = 65;
/// sysexits.h: the output file cannot be created.
pub const EX_CANTCREAT: u8 = 73;
/// sysexits.h: reading or writing failed.
pub const EX_IOERR: u8 = 74;
/// `export` finished but could not read every row (each gap and bad row is listed on stderr).
pub const EXIT_PARTIAL: u8 = 3;

impl InspectError {
    pub fn exit_code(&self) -> u8 {
        match self {
            InspectError::NoDataDir(_)
            | InspectError::NoQueueFile(_)
            | InspectError::Open { .. } => EX_NOINPUT,
            InspectError::Unreadable { .. }
            | InspectError::NotAQueue(_)
            | InspectError::SchemaTooNew { .. }
            | InspectError::Damaged { .. } => EX_DATAERR,
            InspectError::OutputExists(_) => EX_CANTCREAT,
            InspectError::Read { .. } | InspectError::Write { .. } => EX_IOERR,
        }
    }

    /// A closed pipe (`… | head`) is no failure of ours.
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, InspectError::Write { source, .. } if source.kind() == std::io::ErrorKind::BrokenPipe)
    }
}

/// Whether SQLite says the file itself is bad (a damaged page, a read error), as opposed to
/// something around it (busy, permissions).
fn is_damage(error: &QueueError) -> bool {
    matches!(
        error,
        QueueError::Sqlite(rusqlite::Error::SqliteFailure(e, _))
            if matches!(
                e.code,
                ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase | ErrorCode::SystemIoFailure
            )
    )
}

/// A range of `seq` that could not be read. Rows may or may not have existed in it: a damaged
/// page no longer says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gap {
    /// The last row read before the damage; `None`: from the start.
    pub after: Option<u64>,
    /// The first row read after it; `None`: nothing after it could be read.
    pub resumed_at: Option<u64>,
    /// The newest `seq` the file says it handed out, when it can tell.
    pub last_seq: Option<u64>,
    /// What SQLite said.
    pub reason: String,
}

impl fmt::Display for Gap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let from = self.after.map_or(1, |a| a + 1);
        match (self.resumed_at, self.last_seq) {
            (Some(b), _) => write!(f, "seq {from}..={}", b.saturating_sub(1))?,
            (None, Some(last)) if last >= from => write!(f, "seq {from}..={last}")?,
            (None, _) => write!(f, "seq {from} and later")?,
        }
        write!(f, " could not be read ({})", self.reason)
    }
}

/// A row that was read but does not decode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Undecodable {
    pub seq: u64,
    pub reason: String,
}

/// What `export` (or `peek`) wrote and what it could not.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Rows written.
    pub rows: u64,
    pub undecodable: Vec<Undecodable>,
    pub gaps: Vec<Gap>,
}

impl Outcome {
    /// Every row of the file was written.
    pub fn complete(&self) -> bool {
        self.undecodable.is_empty() && self.gaps.is_empty()
    }

    /// One line per problem, then a summary line; for stderr.
    pub fn report(&self) -> String {
        let mut out = String::new();
        for gap in &self.gaps {
            out.push_str(&format!("{gap}\n"));
        }
        for bad in &self.undecodable {
            out.push_str(&format!(
                "row {} cannot be decoded: {}\n",
                bad.seq, bad.reason
            ));
        }
        out.push_str(&format!("{} rows written", self.rows));
        if !self.complete() {
            out.push_str(&format!(
                "; {} unreadable range(s), {} undecodable row(s)",
                self.gaps.len(),
                self.undecodable.len()
            ));
        }
        out.push('\n');
        out
    }
}

/// An open queue file.
#[derive(Debug)]
pub struct Inspector {
    reader: QueueReader,
    file: PathBuf,
    /// The data directory, when one was given (for the quarantined files in it).
    dir: Option<PathBuf>,
    schema_version: i64,
    /// Why only the page walk reads the file: SQLite could not read the schema, or the file was
    /// cut short.
    schema_damage: Option<String>,
}

fn write_err(what: &str) -> impl FnOnce(std::io::Error) -> InspectError + '_ {
    move |source| InspectError::Write {
        what: what.to_owned(),
        source,
    }
}

/// `<file><suffix>` (`-wal`, `-shm`).
fn companion(file: &Path, suffix: &str) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

fn size_of(path: &Path) -> Option<FileSize> {
    let meta = std::fs::metadata(path).ok()?;
    Some(FileSize {
        name: path.file_name()?.to_string_lossy().into_owned(),
        bytes: meta.len(),
    })
}

impl Inspector {
    /// Opens the queue file read-only and checks that it is a queue this build reads.
    pub fn open(target: &Target) -> Result<Inspector, InspectError> {
        let (file, dir) = match target {
            Target::DataDir(dir) => {
                if !dir.is_dir() {
                    return Err(InspectError::NoDataDir(dir.clone()));
                }
                (db_path(dir), Some(dir.clone()))
            }
            Target::File(path) if path.is_dir() => (db_path(path), Some(path.clone())),
            Target::File(path) => (path.clone(), None),
        };
        if !file.is_file() {
            return Err(InspectError::NoQueueFile(file));
        }
        let reader = QueueReader::open(&file)
            .and_then(QueueReader::tolerate_damage)
            .map_err(|source| InspectError::Open {
                path: file.clone(),
                source,
            })?;
        // A quarantined file (or a copy) cut short: its last page would read with zeroed values.
        let cut_short = match target {
            Target::File(_) => Salvage::cut_short(&file),
            Target::DataDir(_) => None,
        };
        let schema = match reader.schema() {
            Ok(schema) => schema,
            Err(error) if is_damage(&error) => {
                // Only the page walk may still read it (`export`).
                return match Salvage::open(&file) {
                    Ok(_) => Ok(Inspector {
                        reader,
                        file,
                        dir,
                        schema_version: SCHEMA_VERSION,
                        schema_damage: Some(error.to_string()),
                    }),
                    Err(walk) => Err(InspectError::Unreadable {
                        path: file,
                        reason: format!("{error}; {walk}"),
                    }),
                };
            }
            Err(source) => return Err(InspectError::Open { path: file, source }),
        };
        let has = |table: &str| schema.tables.iter().any(|t| t == table);
        let layout = match schema.version {
            v if v > SCHEMA_VERSION => {
                return Err(InspectError::SchemaTooNew {
                    path: file,
                    found: v,
                    supported: SCHEMA_VERSION,
                })
            }
            1 if has("samples") => Layout::V1,
            v if v >= 2 && has("messages") => Layout::V2,
            _ => return Err(InspectError::NotAQueue(file)),
        };
        Ok(Inspector {
            reader: reader.with_layout(layout),
            file,
            dir,
            schema_version: schema.version,
            schema_damage: cut_short,
        })
    }

    /// `stats` and `peek` need SQLite to read the schema.
    fn readable_schema(&self) -> Result<(), InspectError> {
        match &self.schema_damage {
            Some(reason) => Err(InspectError::Damaged {
                path: self.file.clone(),
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }

    /// The queue file being read.
    pub fn file(&self) -> &Path {
        &self.file
    }

    fn read_error(&self, error: QueueError) -> InspectError {
        if is_damage(&error) {
            InspectError::Damaged {
                path: self.file.clone(),
                reason: error.to_string(),
            }
        } else {
            InspectError::Read {
                path: self.file.clone(),
                source: error,
            }
        }
    }

    /// `queue stats`: one scan of the table, in one snapshot, plus the files on disk.
    pub fn summary(&self) -> Result<Summary, InspectError> {
        self.readable_schema()?;
        let contents = self.reader.contents().map_err(|e| self.read_error(e))?;
        let files = ["", "-wal", "-shm"]
            .iter()
            .filter_map(|suffix| size_of(&companion(&self.file, suffix)))
            .collect();
        let quarantined = self.dir.as_ref().map(|dir| {
            let prefix = format!("{DB_FILE}.corrupt-");
            let mut found: Vec<FileSize> = std::fs::read_dir(dir)
                .into_iter()
                .flatten()
                .filter_map(|entry| {
                    let name = entry.ok()?.file_name().into_string().ok()?;
                    let is_db = name.starts_with(&prefix)
                        && !name.ends_with("-wal")
                        && !name.ends_with("-shm");
                    if is_db {
                        size_of(&dir.join(&name))
                    } else {
                        None
                    }
                })
                .collect();
            found.sort_by(|a, b| a.name.cmp(&b.name));
            found
        });
        Ok(Summary {
            file: self.file.clone(),
            schema_version: self.schema_version,
            contents,
            files,
            quarantined,
        })
    }

    /// `queue peek`: the next `n` rows the uplink sends (in-flight ones first: they are the
    /// oldest), as JSON lines. Rows that do not decode are listed in the outcome, not written.
    pub fn peek(
        &self,
        n: usize,
        topic_prefix: Option<&str>,
        out: &mut dyn Write,
    ) -> Result<Outcome, InspectError> {
        self.readable_schema()?;
        let mut outcome = Outcome::default();
        let mut failed = None;
        self.reader
            .visit_rows(i64::MIN, n, |row| {
                match row {
                    Ok(row) => {
                        let record = Record {
                            row: &row,
                            topic_prefix,
                            rejection: None,
                        };
                        if let Err(e) = writeln!(out, "{record}") {
                            failed = Some(e);
                            return ControlFlow::Break(());
                        }
                        outcome.rows += 1;
                    }
                    Err(e) => outcome.undecodable.push(undecodable(e)),
                }
                ControlFlow::Continue(())
            })
            .map_err(|e| self.read_error(e))?;
        if let Some(e) = failed {
            return Err(write_err("the rows")(e));
        }
        out.flush().map_err(write_err("the rows"))?;
        Ok(outcome)
    }

    /// `queue export`: every row as JSON lines, through SQLite and past its first damaged page
    /// by the page walk (see the module doc). A progress bar is drawn per `display`.
    pub fn export(
        &self,
        topic_prefix: Option<&str>,
        out: &mut dyn Write,
        display: Display,
    ) -> Result<Outcome, InspectError> {
        let mut outcome = Outcome::default();
        if self.schema_damage.is_some() {
            let mut progress = Progress::new(display, "rows", 0);
            self.export_salvaged(0, topic_prefix, out, &mut outcome, &mut progress)?;
            progress.finish();
            out.flush().map_err(write_err("the export"))?;
            return Ok(outcome);
        }
        self.export_rows(false, topic_prefix, out, display)
    }

    /// [`Inspector::export`] of the queued rows or, with `rejected`, the rejected ones (without
    /// the page walk).
    fn export_rows(
        &self,
        rejected: bool,
        topic_prefix: Option<&str>,
        out: &mut dyn Write,
        display: Display,
    ) -> Result<Outcome, InspectError> {
        let mut outcome = Outcome::default();
        let last_seq = self.reader.last_seq();
        let total = match rejected {
            false => self.reader.count().ok().or(last_seq).unwrap_or_default(),
            true => 0,
        };
        let mut progress = Progress::new(display, "rows", total);
        // Exclusive lower bound of the next read.
        let mut cursor = i64::MIN;
        loop {
            let mut last = None;
            let mut failed = None;
            let mut handed = 0;
            let read = self.read_page(rejected, cursor, |row, rejection| {
                handed += 1;
                match write_row(row, topic_prefix, rejection, out, &mut outcome) {
                    Ok(seq) => {
                        last = seq.or(last);
                        ControlFlow::Continue(())
                    }
                    Err(e) => {
                        failed = Some(e);
                        ControlFlow::Break(())
                    }
                }
            });
            if let Some(e) = failed {
                return Err(write_err("the export")(e));
            }
            progress.advance(handed, "");
            let advanced = match last.and_then(|seq| i64::try_from(seq).ok()) {
                Some(seq) if seq > cursor => {
                    cursor = seq;
                    true
                }
                _ => false,
            };
            match read {
                Ok(0) => break,
                Ok(_) if advanced => {}
                // Rows came back but none with a usable seq: nothing to continue from.
                Ok(_) => {
                    outcome.gaps.push(Gap {
                        after: u64::try_from(cursor).ok(),
                        resumed_at: None,
                        last_seq,
                        reason: "rows without a seq".to_owned(),
                    });
                    break;
                }
                // The damage may sit right after the last row read: read again from there.
                Err(e) if is_damage(&e) && advanced => {}
                Err(e) if is_damage(&e) && !rejected => {
                    let after = u64::try_from(cursor).unwrap_or(0);
                    self.export_salvaged(after, topic_prefix, out, &mut outcome, &mut progress)?;
                    break;
                }
                Err(e) => return Err(self.read_error(e)),
            }
        }
        progress.finish();
        out.flush().map_err(write_err("the export"))?;
        Ok(outcome)
    }

    /// `queue export --rejected`: the rows the broker refused for good (`rejected.rs`), as
    /// JSON lines with their reason, in `seq` order and in short read transactions like
    /// `export`. No page walk: a damaged file is refused here and recovered with `export`.
    pub fn export_rejected(
        &self,
        topic_prefix: Option<&str>,
        out: &mut dyn Write,
        display: Display,
    ) -> Result<Outcome, InspectError> {
        self.readable_schema()?;
        self.export_rows(true, topic_prefix, out, display)
    }

    /// Up to [`PAGE`] queued (or, with `rejected`, rejected) rows after `after`, each handed to
    /// `visit` with its rejection; how many were handed.
    fn read_page(
        &self,
        rejected: bool,
        after: i64,
        mut visit: impl FnMut(Result<StoredRow, QueueError>, Option<Rejection>) -> ControlFlow<()>,
    ) -> Result<usize, QueueError> {
        if !rejected {
            return self.reader.visit_rows(after, PAGE, |row| visit(row, None));
        }
        self.reader.visit_rejected(after, PAGE, |row| match row {
            Ok(r) => visit(
                Ok(r.row),
                Some(Rejection {
                    reason: r.reason,
                    at_ms: r.rejected_ms,
                }),
            ),
            Err(e) => visit(Err(e), None),
        })
    }

    /// The rows with `seq > after` and the ranges lost among them, by the page walk.
    fn export_salvaged(
        &self,
        after: u64,
        topic_prefix: Option<&str>,
        out: &mut dyn Write,
        outcome: &mut Outcome,
        progress: &mut Progress,
    ) -> Result<(), InspectError> {
        let salvage = Salvage::open(&self.file).map_err(|e| InspectError::Unreadable {
            path: self.file.clone(),
            reason: e.to_string(),
        })?;
        let mut failed = None;
        salvage.visit_rows(after, |row| {
            progress.advance(1, "");
            match write_row(row, topic_prefix, None, out, outcome) {
                Ok(_) => ControlFlow::Continue(()),
                Err(e) => {
                    failed = Some(e);
                    ControlFlow::Break(())
                }
            }
        });
        if let Some(e) = failed {
            return Err(write_err("the export")(e));
        }
        let last_seq = salvage.sequence();
        outcome
            .gaps
            .extend(salvage.lost_after(after).into_iter().map(|lost| Gap {
                after: lost.from.checked_sub(1).filter(|a| *a > 0),
                resumed_at: lost.to.map(|to| to.saturating_add(1)),
                last_seq,
                reason: lost.reason,
            }));
        Ok(())
    }
}

/// Writes one row of an export, queued (`rejection: None`) or rejected, or counts it
/// undecodable; returns its `seq`, if it has one.
fn write_row(
    row: Result<StoredRow, QueueError>,
    topic_prefix: Option<&str>,
    rejection: Option<Rejection>,
    out: &mut dyn Write,
    outcome: &mut Outcome,
) -> Result<Option<u64>, std::io::Error> {
    match row {
        Ok(row) => {
            let record = Record {
                row: &row,
                topic_prefix,
                rejection,
            };
            writeln!(out, "{record}")?;
            outcome.rows += 1;
            Ok(Some(row.seq))
        }
        Err(e) => {
            let bad = undecodable(e);
            let seq = (bad.seq > 0).then_some(bad.seq);
            outcome.undecodable.push(bad);
            Ok(seq)
        }
    }
}

fn undecodable(error: QueueError) -> Undecodable {
    match error {
        QueueError::Decode {
            seq,
            column,
            reason,
        } => Undecodable {
            seq,
            reason: format!("column {column}: {reason}"),
        },
        other => Undecodable {
            seq: 0,
            reason: other.to_string(),
        },
    }
}

#[cfg(test)]
mod tests;
