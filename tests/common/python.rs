//! The Python that runs the peers in tests/peers/: `FIELDRELAY_PYTHON`, the virtual environment
//! scripts/test-deps.sh makes (`FIELDRELAY_PYENV`, default `~/.cache/fieldrelay/pyenv`), or
//! `python3` on the PATH — the first in which a check of the needed packages passes.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The first candidate Python in which `check` (Python code) runs; `need` names the packages
/// for the panic message.
pub fn find(check: &str, need: &str) -> PathBuf {
    if let Some(python) = std::env::var_os("FIELDRELAY_PYTHON") {
        return python.into();
    }
    let venv = std::env::var_os("FIELDRELAY_PYENV")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache/fieldrelay/pyenv")))
        .map(|env| env.join("bin/python"));
    for candidate in venv.into_iter().chain([PathBuf::from("python3")]) {
        let ok = Command::new(&candidate)
            .args(["-c", check])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return candidate;
        }
    }
    panic!("no python with {need}: run scripts/test-deps.sh");
}
