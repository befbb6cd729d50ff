//! `scripts/demo.sh` explains its own failures: a taken device port is named with what to do,
//! and the logs it keeps are pointed at (the happy path runs in CI: `DEMO_COUNT=5
//! scripts/demo.sh`).

use std::process::Command;

#[test]
fn a_taken_device_port_is_diagnosed_not_hidden() {
    let dir = tempfile::tempdir().unwrap();
    // Another program on the demo's device port.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let output = Command::new("bash")
        .arg("scripts/demo.sh")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("DEMO_BIN", env!("CARGO_BIN_EXE_fieldrelay"))
        .env("DEMO_MODBUS_PORT", port.to_string())
        .env("DEMO_DIR", dir.path().join("demo"))
        .env("DEMO_COUNT", "1")
        .output()
        .expect("run scripts/demo.sh");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "port {port}, where the demo's simulated device listens, is already in use"
        )),
        "{stderr}"
    );
    assert!(stderr.contains("DEMO_MODBUS_PORT=5021"), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "all logs are in {}/",
            dir.path().join("demo").display()
        )),
        "{stderr}"
    );
    drop(taken);
}
