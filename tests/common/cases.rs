//! Folders of bad files and the problems they must produce (`tests/config_cases/`,
//! `tests/simulator_cases/`), and the binary run on one of them the way a user runs it.

use std::path::Path;
use std::process::{Command, Output};

/// `fieldrelay COMMAND… --config CONFIG`, run from the crate root so `config` (and every error
/// line naming it) reads as a user would type it; `RUST_LOG` removed so only the problems are on
/// stderr.
pub fn run_on_config(command: &[&str], config: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fieldrelay"))
        .args(command)
        .args(["--config", config])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("RUST_LOG")
        .output()
        .expect("the fieldrelay binary runs")
}

/// The names of the case folders in `dir` (relative to the crate root), sorted.
pub fn case_names(dir: &str) -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut names: Vec<String> = std::fs::read_dir(&path)
        .unwrap_or_else(|error| panic!("{dir}: {error}"))
        .map(|entry| entry.expect("readable directory entry"))
        .filter(|entry| entry.path().is_dir())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// `(line, column)` of an error line about `config` (`CONFIG:LINE:COLUMN: …`), if it has them.
pub fn position(config: &str, line: &str) -> Option<(u64, u64)> {
    let mut parts = line.strip_prefix(&format!("{config}:"))?.splitn(3, ':');
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}
