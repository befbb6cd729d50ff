//! The command line's conveniences: every subcommand that reads a configuration documents
//! `--config` and its packaged default; completion scripts and man pages come from the same
//! definition.

use std::process::{Command, Output};

fn fieldrelay(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fieldrelay"))
        .args(args)
        .output()
        .expect("run fieldrelay")
}

#[test]
fn every_config_option_has_help_and_the_packaged_default() {
    for command in [
        &["run"][..],
        &["check"],
        &["probe"],
        &["simulate"],
        &["queue", "stats"],
        &["queue", "peek"],
        &["queue", "export"],
    ] {
        let args: Vec<&str> = command.iter().copied().chain(["--help"]).collect();
        let output = fieldrelay(&args);
        let help = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{command:?}");
        let option = help
            .lines()
            .skip_while(|l| !l.contains("--config <FILE>"))
            .take(3)
            .collect::<Vec<_>>()
            .join(" ");
        assert!(
            option.contains("/etc/fieldrelay/config.yaml") && option.contains("configuration"),
            "{command:?}: --config without help or default:\n{help}"
        );
    }
}

#[test]
fn completions_for_each_shell_know_the_subcommands() {
    for (shell, marker) in [
        ("bash", "complete -F _fieldrelay"),
        ("zsh", "#compdef fieldrelay"),
        ("fish", "complete -c fieldrelay"),
    ] {
        let output = fieldrelay(&["completions", shell]);
        let script = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{shell}");
        assert!(script.contains(marker), "{shell}:\n{script}");
        for sub in [
            "run",
            "check",
            "probe",
            "queue",
            "simulate",
            "points",
            "import",
            "console-user",
        ] {
            assert!(script.contains(sub), "{shell} lacks {sub}");
        }
    }
}

/// What the package installs: a man page per command and subcommand, and one completion file
/// per shell under the names the shells look for.
#[test]
fn package_assets_cover_every_subcommand() {
    let dir = tempfile::tempdir().unwrap();
    fieldrelay::cli::write_package_assets(dir.path()).unwrap();
    let mut pages: Vec<String> = std::fs::read_dir(dir.path().join("man"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    pages.sort();
    for page in [
        "fieldrelay.1",
        "fieldrelay-run.1",
        "fieldrelay-check.1",
        "fieldrelay-probe.1",
        "fieldrelay-queue-stats.1",
        "fieldrelay-points-import.1",
        "fieldrelay-completions.1",
        "fieldrelay-console-user.1",
        "fieldrelay-console-user-add.1",
        "fieldrelay-console-user-delete.1",
        "fieldrelay-console-user-list.1",
    ] {
        assert!(pages.iter().any(|p| p == page), "{page} not in {pages:?}");
    }
    let main = std::fs::read_to_string(dir.path().join("man/fieldrelay.1")).unwrap();
    assert!(main.contains("/etc/fieldrelay/config.yaml"), "{main}");
    for file in ["fieldrelay.bash", "_fieldrelay", "fieldrelay.fish"] {
        let script = std::fs::read(dir.path().join("completions").join(file)).unwrap();
        assert!(script.len() > 1000, "{file}");
    }
}
