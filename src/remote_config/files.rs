//! The files beside the configuration (I/O): the pushed file put in place atomically, the
//! last-known-good copy, the trial state and the push id.
//!
//! For `/etc/fieldrelay/config.yaml`:
//!
//! | file | what | written |
//! |---|---|---|
//! | `config.yaml` | the configuration that runs | replaced by a push or a rollback |
//! | `config.yaml.last-good` | the file a push replaced | before the pushed file goes in |
//! | `config.yaml.pending` | the trial state (`pending.rs`, JSON) | before the pushed file goes in; removed after the answer |
//! | `config.yaml.origin` | `{"id","hash"}` of the confirmed push (`status::stamp`) | at confirmation |
//! | `config.yaml.tmp` | a file being written | then renamed over its target |
//!
//! Every write is atomic and durable: the bytes go to the `.tmp` file, which is flushed
//! (`fsync`), renamed over the target, and the directory flushed, so after a power cut each
//! file is either the old or the new one, whole. The order of the writes is what makes a push
//! recoverable from any point (see `pending.rs`).

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use tracing::{error, warn};

use super::pending::{AtStart, Pending};
use crate::config::ConfigErrors;
use crate::sample::now_ms;
use crate::status::stamp::{origin_path, sha256_hex, sibling, ConfigStamp};

/// A file beside the configuration that could not be read or written.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct FileError {
    pub path: String,
    pub source: io::Error,
}

fn at(path: &Path) -> impl FnOnce(io::Error) -> FileError + '_ {
    move |source| FileError {
        path: path.display().to_string(),
        source,
    }
}

/// The configuration file and the files beside it.
#[derive(Debug, Clone)]
pub struct Files {
    config: PathBuf,
}

impl Files {
    pub fn new(config: &Path) -> Files {
        Files {
            config: config.to_owned(),
        }
    }

    pub fn config(&self) -> &Path {
        &self.config
    }

    pub fn last_good(&self) -> PathBuf {
        sibling(&self.config, "last-good")
    }

    pub fn pending_path(&self) -> PathBuf {
        sibling(&self.config, "pending")
    }

    /// The configuration file's bytes.
    pub fn current(&self) -> Result<Vec<u8>, FileError> {
        fs::read(&self.config).map_err(at(&self.config))
    }

    /// The trial state, if one is on disk. A damaged one (not JSON of this build) is moved
    /// aside as `.pending.damaged` and logged: nothing can be decided from it.
    pub fn pending(&self) -> Result<Option<Pending>, FileError> {
        let path = self.pending_path();
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(at(&path)(e)),
        };
        match serde_json::from_slice(&bytes) {
            Ok(pending) => Ok(Some(pending)),
            Err(e) => {
                error!(file = %path.display(), error = %e, "the pushed configuration's trial state is damaged; moved aside, the configuration file runs as it is");
                let aside = sibling(&path, "damaged");
                fs::rename(&path, &aside).map_err(at(&path))?;
                Ok(None)
            }
        }
    }

    pub fn write_pending(&self, pending: &Pending) -> Result<(), FileError> {
        let bytes = serde_json::to_vec(pending).unwrap_or_default();
        write_atomic(&self.pending_path(), &bytes)
    }

    pub fn remove_pending(&self) -> Result<(), FileError> {
        let path = self.pending_path();
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(at(&path)(e)),
            _ => sync_dir(&path),
        }
    }

    /// Keeps `current` as the last-known-good (first step of a push).
    pub fn keep_last_good(&self, current: &[u8]) -> Result<(), FileError> {
        write_atomic(&self.last_good(), current)
    }

    /// Puts `text` in place as the configuration file.
    pub fn replace(&self, text: &[u8]) -> Result<(), FileError> {
        write_atomic(&self.config, text)
    }

    /// Puts the last-known-good back as the configuration file (it stays as the copy too).
    pub fn restore(&self) -> Result<(), FileError> {
        let good = self.last_good();
        let bytes = fs::read(&good).map_err(at(&good))?;
        self.replace(&bytes)
    }

    /// Records that the file with `hash` was written by the push `id`.
    pub fn write_origin(&self, id: &str, hash: &str) -> Result<(), FileError> {
        let stamp = ConfigStamp {
            hash: hash.to_owned(),
            id: Some(id.to_owned()),
        };
        let bytes = serde_json::to_vec(&stamp).unwrap_or_default();
        write_atomic(&origin_path(&self.config), &bytes)
    }

    /// Records the decision to roll back, then restores the last-known-good.
    pub fn roll_back(&self, pending: &Pending, failed: Vec<String>) -> Result<Pending, FileError> {
        let back = pending.rolling_back(failed);
        self.write_pending(&back)?;
        self.restore()?;
        Ok(back)
    }
}

/// Before the configuration is loaded at start: a pushed file on trial whose deadline passed,
/// or whose rollback was interrupted, is replaced by the last-known-good now, so the gateway
/// starts on it. (Answering is left to the running gateway.)
pub fn prepare_start(config: &Path) -> Result<(), FileError> {
    let files = Files::new(config);
    let Some(pending) = files.pending()? else {
        return Ok(());
    };
    let current = sha256_hex(&files.current()?);
    if let AtStart::RollBack { failed } = pending.at_start(&current, now_ms()) {
        warn!(id = %pending.id, reasons = %failed.join("; "), "the pushed configuration did not confirm: restoring the last-known-good file");
        files.roll_back(&pending, failed)?;
    }
    Ok(())
}

/// When the configuration file does not load at start: if it is a pushed file on trial, the
/// last-known-good is restored (returns `true`: load again).
pub fn fall_back(config: &Path, errors: &ConfigErrors) -> Result<bool, FileError> {
    let files = Files::new(config);
    let Some(pending) = files.pending()? else {
        return Ok(false);
    };
    let current = sha256_hex(&files.current()?);
    if current != pending.new_hash {
        return Ok(false);
    }
    let mut failed = vec!["the pushed file does not load on this gateway".to_owned()];
    failed.extend(errors.errors.iter().take(10).map(ToString::to_string));
    warn!(id = %pending.id, "the pushed configuration does not load: restoring the last-known-good file");
    files.roll_back(&pending, failed)?;
    Ok(true)
}

/// Writes `bytes` to `path` through `path.tmp`, flushed, renamed, directory flushed.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), FileError> {
    let tmp = sibling(path, "tmp");
    let written = File::create(&tmp).and_then(|mut file| {
        file.write_all(bytes)?;
        file.sync_all()
    });
    written.map_err(at(&tmp))?;
    fs::rename(&tmp, path).map_err(at(path))?;
    sync_dir(path)
}

fn sync_dir(path: &Path) -> Result<(), FileError> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    File::open(dir).and_then(|d| d.sync_all()).map_err(at(dir))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote_config::pending::Phase;

    #[test]
    fn a_trial_past_its_deadline_is_rolled_back_before_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.yaml");
        let files = Files::new(&config);
        fs::write(&config, "old\n").unwrap();
        files.keep_last_good(b"old\n").unwrap();
        let pending = Pending::new(
            "p".into(),
            (sha256_hex(b"old\n"), sha256_hex(b"new\n")),
            now_ms() - 10_000,
            1_000,
            vec![],
        );
        files.write_pending(&pending).unwrap();
        files.replace(b"new\n").unwrap();
        prepare_start(&config).unwrap();
        assert_eq!(fs::read_to_string(&config).unwrap(), "old\n");
        let back = files.pending().unwrap().unwrap();
        assert!(matches!(back.phase, Phase::RollingBack { .. }), "{back:?}");
        // Damaged state: moved aside, nothing else touched.
        fs::write(files.pending_path(), "{").unwrap();
        assert_eq!(files.pending().unwrap(), None);
        assert!(sibling(&files.pending_path(), "damaged").exists());
    }
}
