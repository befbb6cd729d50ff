//! `sudo fieldrelay run` on the service user's data directory is refused before anything is
//! opened, naming the directory, its owner and the commands to use instead; the files stay the
//! owner's. Needs root (CI runs as root); skipped otherwise.

use std::os::unix::fs::MetadataExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// sysexits.h EX_NOPERM.
const EX_NOPERM: i32 = 77;

fn is_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

#[test]
fn root_is_refused_on_a_data_directory_another_user_owns() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    // uid 65534 is `nobody` on Debian: a user that is not root, as `fieldrelay` is.
    std::os::unix::fs::chown(&data, Some(65_534), Some(65_534)).unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/example.yaml"))
            .unwrap()
            .replace("/var/lib/fieldrelay", &data.display().to_string())
            // Nothing to reach: the refusal must come before any connection.
            .replace("mqtt://127.0.0.1:1883", "mqtt://127.0.0.1:9"),
    )
    .unwrap();

    let mut gateway = Command::new(env!("CARGO_BIN_EXE_fieldrelay"))
        .args(["run", "--config"])
        .arg(&config)
        .env_remove("NOTIFY_SOCKET")
        .env_remove("JOURNAL_STREAM")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = gateway.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            gateway.kill().unwrap();
            gateway.wait().unwrap();
            panic!("fieldrelay run as root on another user's data directory kept running");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut gateway.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(EX_NOPERM), "{stderr}");
    let owner = if std::fs::read_to_string("/etc/passwd")
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with("nobody:x:65534:"))
    {
        "nobody".to_owned()
    } else {
        "#65534".to_owned()
    };
    for expected in [
        format!("refusing to run as root on {}", data.display()),
        format!("it belongs to {owner} (uid 65534)"),
        format!(
            "sudo -u {owner} fieldrelay run --config {}",
            config.display()
        ),
        "sudo systemctl start fieldrelay".to_owned(),
    ] {
        assert!(stderr.contains(&expected), "{expected:?} not in:\n{stderr}");
    }
    assert_eq!(
        std::fs::read_dir(&data).unwrap().count(),
        0,
        "the refused run created files"
    );
}
