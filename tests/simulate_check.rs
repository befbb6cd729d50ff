//! `fieldrelay simulate` on simulator files, end to end: the real binary.
//!
//! A simulator file is held to the gateway configuration's standard (`fieldrelay check`): every
//! problem in one run, one per line as `FILE:LINE:COLUMN: KEY.PATH: message`, sorted by position,
//! a summary line, exit 78 (EX_CONFIG). Each folder of `tests/simulator_cases/` is a
//! `simulator.yaml` and the `expected.txt` that is exactly its problems. The shipped
//! `config/examples/simulator.yaml` must load and serve: each endpoint accepts a connection.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::cases::{case_names, position, run_on_config};

/// sysexits.h EX_CONFIG.
const EX_CONFIG: i32 = 78;

fn simulate(config: &str) -> Output {
    run_on_config(&["simulate"], config)
}

#[test]
fn every_case_reports_all_its_problems_with_positions_and_exits_78() {
    let names = case_names("tests/simulator_cases");
    assert!(
        names.iter().any(|name| name == "several_problems"),
        "{names:?}"
    );
    for name in names {
        let config = format!("tests/simulator_cases/{name}/simulator.yaml");
        let expected = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/simulator_cases")
                .join(&name)
                .join("expected.txt"),
        )
        .unwrap_or_else(|error| panic!("{name}: expected.txt: {error}"));
        let expected: Vec<&str> = expected.lines().filter(|l| !l.trim().is_empty()).collect();
        assert!(!expected.is_empty(), "{name}: expected.txt has no lines");

        let output = simulate(&config);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(EX_CONFIG), "{name}:\n{stderr}");
        // Every problem, and nothing else: the errors, then the summary line.
        let mut lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(
            lines.pop(),
            Some(format!("{config}: {} problem(s) found", expected.len()).as_str()),
            "{name}:\n{stderr}"
        );
        assert_eq!(lines, expected, "{name}");
        let positions: Vec<(u64, u64)> = lines
            .iter()
            .map(|line| {
                position(&config, line)
                    .unwrap_or_else(|| panic!("{name}: no {config}:LINE:COLUMN: in {line}"))
            })
            .collect();
        assert!(positions.windows(2).all(|w| w[0] <= w[1]), "{stderr}");
    }
}

#[test]
fn several_problems_are_all_in_one_run() {
    let config = "tests/simulator_cases/several_problems/simulator.yaml";
    let stderr = String::from_utf8_lossy(&simulate(config).stderr).into_owned();
    // A problem in each part of the file: tick, both endpoints, registers, both units.
    for path in [
        ": simulator.tick:",
        ": simulator.endpoints[0].baud_rate:",
        ": simulator.endpoints[1].stop_bits: must be 1 or 2, got 3",
        ": simulator.units[0].registers[0].value:",
        ": simulator.units[0].registers[4].colour:",
        ": simulator.units[1].unit_id:",
    ] {
        assert!(
            stderr.lines().any(|line| line.contains(path)),
            "{path} missing in\n{stderr}"
        );
    }
}

#[test]
fn a_gateway_config_is_still_checked_like_check_does() {
    let config = "tests/config_cases/multiple_errors/config.yaml";
    let simulated = simulate(config);
    let checked = run_on_config(&["check"], config);
    assert_eq!(simulated.status.code(), Some(EX_CONFIG));
    assert_eq!(
        String::from_utf8_lossy(&simulated.stderr),
        String::from_utf8_lossy(&checked.stderr)
    );
}

/// Kills the simulator when the test ends, however it ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_shipped_example_loads_and_serves() {
    // Port 0: the system picks free ports, so the test does not depend on 5020 and 5021.
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("config/examples/simulator.yaml"),
    )
    .expect("the example exists")
    .replace("port: 5020", "port: 0")
    .replace("port: 5021", "port: 0");
    let dir = tempfile::tempdir().expect("a temporary directory");
    let file = dir.path().join("simulator.yaml");
    std::fs::write(&file, text).expect("write the file");
    let mut child = Command::new(env!("CARGO_BIN_EXE_fieldrelay"))
        .args(["simulate", "--config"])
        .arg(&file)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the fieldrelay binary runs");
    let stderr = child.stderr.take().expect("piped stderr");
    let _running = Running(child);
    // Both endpoints log the address they listen on once they are bound.
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut log = Vec::new();
    let mut listening = 0;
    while listening < 2 {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| {
                panic!("the simulator did not start; it said:\n{}", log.join("\n"))
            });
        if let Some(port) = listening_port(&line) {
            assert_ne!(port, 0, "{line}");
            std::net::TcpStream::connect(("127.0.0.1", port))
                .unwrap_or_else(|error| panic!("{line}: {error}"));
            listening += 1;
        }
        log.push(line);
    }
}

/// The port of a `simulating addr=127.0.0.1:PORT` log line.
fn listening_port(line: &str) -> Option<u16> {
    let (_, rest) = line.split_once("simulating")?;
    let (_, rest) = rest.split_once("addr=127.0.0.1:")?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}
