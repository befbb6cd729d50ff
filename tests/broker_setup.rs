//! `packaging/fieldrelay-broker-setup`, which the postinst runs on first install: fieldrelay's
//! broker settings are turned on only when mosquitto has no listener or login settings of its
//! own, and a mosquitto that would not start with them is put back as it was, loudly. The
//! mosquitto directory is a scratch copy of Debian's layout; CI has no systemd, so the restart
//! path runs against a stand-in `systemctl` (the real broker start is in
//! `scripts/package-test.sh`).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::{free_port, port_accepts, wait_until};

const SETUP: &str = "packaging/fieldrelay-broker-setup";

/// Debian's /etc/mosquitto: mosquitto.conf reading conf.d, and the package's settings file.
fn mosquitto_dir(dir: &Path) -> PathBuf {
    let etc = dir.join("mosquitto");
    std::fs::create_dir_all(etc.join("conf.d")).unwrap();
    std::fs::write(
        etc.join("mosquitto.conf"),
        format!(
            "# Place your local configuration in /etc/mosquitto/conf.d/\n\n\
             persistence true\npersistence_location {store}/\n\n\
             log_dest stderr\n\ninclude_dir {etc}/conf.d\n",
            store = dir.display(),
            etc = etc.display()
        ),
    )
    .unwrap();
    std::fs::copy(
        "packaging/mosquitto/fieldrelay.conf",
        etc.join("fieldrelay.conf"),
    )
    .unwrap();
    etc
}

fn setup(etc: &Path, command: &str, systemctl: Option<&Path>) -> Output {
    let mut cmd = Command::new("sh");
    cmd.arg(SETUP)
        .arg(command)
        .env("FIELDRELAY_MOSQUITTO_DIR", etc);
    if let Some(systemctl) = systemctl {
        cmd.env("FIELDRELAY_SYSTEMCTL", systemctl);
    }
    cmd.output().expect("run fieldrelay-broker-setup")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn a_stock_mosquitto_gets_the_settings() {
    let dir = tempfile::tempdir().unwrap();
    let etc = mosquitto_dir(dir.path());
    let out = setup(&etc, "enable", None);
    assert!(out.status.success(), "{}", text(&out));
    let link = etc.join("conf.d/fieldrelay.conf");
    assert_eq!(
        std::fs::read_link(&link).unwrap(),
        Path::new("../fieldrelay.conf")
    );
    let status = text(&setup(&etc, "status", None));
    assert!(status.starts_with("on: "), "{status}");
    let out = setup(&etc, "disable", None);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!link.exists() && link.symlink_metadata().is_err());
}

/// The common setup: a LAN listener with anonymous access in conf.d. The settings stay off,
/// the output names each line, and mosquitto on that configuration still serves anonymous
/// clients.
#[test]
fn an_existing_listener_is_left_alone_and_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let etc = mosquitto_dir(dir.path());
    let port = free_port();
    let local = etc.join("conf.d/local.conf");
    std::fs::write(
        &local,
        format!("# our broker\n  listener {port}\nallow_anonymous true\n#port 1\n"),
    )
    .unwrap();

    let out = setup(&etc, "enable", None);
    let said = text(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains(&format!("{}:2: listener {port}", local.display())),
        "{said}"
    );
    assert!(
        said.contains(&format!("{}:3: allow_anonymous true", local.display())),
        "{said}"
    );
    assert!(!said.contains(":4:"), "a comment counted: {said}");
    assert!(said.contains("stay off"), "{said}");
    assert!(etc
        .join("conf.d/fieldrelay.conf")
        .symlink_metadata()
        .is_err());
    // What the postinst runs: the same words, and the install goes on.
    let out = setup(&etc, "install", None);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("left off"), "{}", text(&out));

    // The broker as configured still starts and serves an anonymous client.
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let mut broker = Command::new("mosquitto")
        .arg("-c")
        .arg(etc.join("mosquitto.conf"))
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start mosquitto");
    wait_until("mosquitto to listen", Duration::from_secs(30), || {
        port_accepts(port)
    });
    let published = Command::new("mosquitto_pub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-t",
            "plant/x",
            "-m",
            "1",
        ])
        .output()
        .unwrap();
    let _ = broker.kill();
    let _ = broker.wait();
    assert!(published.status.success(), "{published:?}");
}

/// A mosquitto that does not start with the settings (a conflict the check could not see) is
/// restarted without them, and the output says what happened and what to do.
#[test]
fn a_failed_restart_is_reported_and_undone() {
    let dir = tempfile::tempdir().unwrap();
    let etc = mosquitto_dir(dir.path());
    let systemctl = dir.path().join("systemctl");
    // Stands in for systemd: mosquitto "fails" while the settings are linked.
    std::fs::write(
        &systemctl,
        format!(
            "#!/bin/sh\necho \"$*\" >>{calls}\n[ ! -e {link} ]\n",
            calls = dir.path().join("calls").display(),
            link = etc.join("conf.d/fieldrelay.conf").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        &systemctl,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();

    let out = setup(&etc, "enable", Some(&systemctl));
    let said = text(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    for expected in [
        "mosquitto did not start",
        "turned the settings off again",
        "mosquitto runs again as before",
    ] {
        assert!(said.contains(expected), "{expected:?} not in:\n{said}");
    }
    assert!(etc
        .join("conf.d/fieldrelay.conf")
        .symlink_metadata()
        .is_err());
    assert_eq!(
        std::fs::read_to_string(dir.path().join("calls")).unwrap(),
        "restart mosquitto.service\nrestart mosquitto.service\n"
    );
}
