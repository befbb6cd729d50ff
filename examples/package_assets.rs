//! Writes what the `.deb` installs besides the binary into DIR (default `target/assets`): man
//! pages and shell completions, from the command line's own definition, and the installed
//! `config.yaml` (`config/example.yaml` with the gateway's login on). Run by
//! `scripts/build-packages.sh` and `scripts/package-test.sh` before `cargo deb`; the files are
//! build outputs, not committed.
//!
//! ```sh
//! cargo run --example package_assets -- target/assets
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let dir = std::env::args_os()
        .nth(1)
        .map_or_else(|| PathBuf::from("target/assets"), PathBuf::from);
    match fieldrelay::cli::write_package_assets(&dir) {
        Ok(()) => {
            println!("{}", dir.display());
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!(
                "error: cannot write the package assets to {}: {error}",
                dir.display()
            );
            ExitCode::FAILURE
        }
    }
}
