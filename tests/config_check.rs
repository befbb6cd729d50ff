//! `fieldrelay check` end to end: the real binary on every case in `tests/config_cases/`.
//!
//! Each case is a folder with a `config.yaml` and an `expected.txt`; every non-empty line of
//! `expected.txt` must appear, as a whole line, in the binary's stderr, and the exit code must be
//! 78 (EX_CONFIG). Adding a case is adding a folder. The shipped `config/example.yaml` must pass
//! with exit code 0.
//!
//! Paths are passed relative to the crate root (the test's working directory), so the expected
//! lines read exactly as a user would see them: `tests/config_cases/unknown_bus/config.yaml:14:10:
//! devices[0].bus: unknown bus "plc9" (defined buses: plc1)`.

mod common;

use std::path::Path;
use std::process::Output;

use common::cases::{case_names, position, run_on_config};

/// sysexits.h EX_CONFIG, what `check` exits with on an invalid configuration.
const EX_CONFIG: i32 = 78;

/// Cases the loader's contract promises to cover; more may exist.
const REQUIRED_CASES: [&str; 10] = [
    "unknown_bus",
    "duplicate_point",
    "overlapping_registers",
    "qos_too_high",
    "bad_duration",
    "unknown_field",
    "wrong_type_for_coil",
    "multiple_errors",
    "yaml_syntax",
    "missing_required",
];

fn check(config: &str) -> Output {
    run_on_config(&["check"], config)
}

#[test]
fn every_required_case_exists() {
    let names = case_names("tests/config_cases");
    for required in REQUIRED_CASES {
        assert!(
            names.iter().any(|name| name == required),
            "missing case {required}"
        );
    }
}

#[test]
fn every_case_exits_78_and_prints_its_expected_lines() {
    let mut failures = Vec::new();
    for name in case_names("tests/config_cases") {
        let config = format!("tests/config_cases/{name}/config.yaml");
        let expected_path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/config_cases")
            .join(&name)
            .join("expected.txt");
        let expected = std::fs::read_to_string(&expected_path)
            .unwrap_or_else(|error| panic!("{}: {error}", expected_path.display()));
        let output = check(&config);
        let stderr = String::from_utf8_lossy(&output.stderr);
        if output.status.code() != Some(EX_CONFIG) {
            failures.push(format!(
                "{name}: exit code {:?}, expected {EX_CONFIG}\nstderr:\n{stderr}",
                output.status.code()
            ));
        }
        let expected_lines: Vec<&str> = expected
            .lines()
            .filter(|line| !line.trim().is_empty())
            .collect();
        if expected_lines.is_empty() {
            failures.push(format!("{name}: expected.txt has no lines"));
        }
        for line in expected_lines {
            // Every expected line carries the position: FILE:LINE:COLUMN:
            if position(&config, line).is_none() {
                failures.push(format!(
                    "{name}: expected line has no {config}:LINE:COLUMN: prefix: {line}"
                ));
            }
            if !stderr.lines().any(|out| out == line) {
                failures.push(format!("{name}: missing line\n  {line}\nstderr:\n{stderr}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn multiple_errors_are_reported_in_one_run() {
    let config = "tests/config_cases/multiple_errors/config.yaml";
    let output = check(config);
    assert_eq!(output.status.code(), Some(EX_CONFIG));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let problems: Vec<&str> = stderr
        .lines()
        .filter(|line| line.starts_with(&format!("{config}:")) && line.contains(": devices["))
        .collect();
    let devices: std::collections::BTreeSet<&str> = problems
        .iter()
        .filter_map(|line| line.split(": devices[").nth(1)?.split(']').next())
        .collect();
    assert!(problems.len() >= 4, "{stderr}");
    assert!(devices.len() >= 3, "problems in every device: {stderr}");
}

#[test]
fn errors_are_sorted_by_position() {
    let config = "tests/config_cases/multiple_errors/config.yaml";
    let stderr = String::from_utf8_lossy(&check(config).stderr).into_owned();
    let positions: Vec<(u64, u64)> = stderr
        .lines()
        .filter_map(|line| position(config, line))
        .collect();
    assert!(positions.len() >= 4, "{stderr}");
    assert!(positions.windows(2).all(|w| w[0] <= w[1]), "{stderr}");
}

#[test]
fn queue_reports_an_invalid_config_like_check_does() {
    let config = "tests/config_cases/multiple_errors/config.yaml";
    let queue = run_on_config(&["queue", "stats"], config);
    assert_eq!(queue.status.code(), Some(EX_CONFIG));
    assert_eq!(
        String::from_utf8_lossy(&queue.stderr),
        String::from_utf8_lossy(&check(config).stderr)
    );
}

#[test]
fn the_shipped_example_passes() {
    let output = check("config/example.yaml");
    assert_eq!(
        output.status.code(),
        Some(0),
        "stderr:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Every file in `config/examples/` passes `check`, simulator files included (check knows them
/// by their `simulator:` section and applies the simulator's rules), as the docs promise.
#[test]
fn every_example_passes() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/examples");
    let mut checked = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("config/examples exists") {
        let path = entry.expect("readable entry").path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let name = format!(
            "config/examples/{}",
            path.file_name().unwrap_or_default().to_string_lossy()
        );
        let output = check(&name);
        assert_eq!(
            output.status.code(),
            Some(0),
            "{name}:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        checked.push(name);
    }
    checked.sort();
    assert_eq!(
        checked,
        [
            "config/examples/rtu.yaml",
            "config/examples/simulator.yaml",
            "config/examples/tcp.yaml"
        ]
    );
    let simulator = check("config/examples/simulator.yaml");
    assert_eq!(
        String::from_utf8_lossy(&simulator.stdout),
        "config/examples/simulator.yaml: ok (simulator file)\n"
    );
}

/// A simulator file with mistakes gets the simulator's messages (not "unknown key simulator")
/// and exit 78.
#[test]
fn a_broken_simulator_file_is_checked_by_the_simulator_rules() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sim.yaml");
    std::fs::write(
        &path,
        std::fs::read_to_string("config/examples/simulator.yaml")
            .unwrap()
            .replacen("type: tcp", "type: tpc", 1),
    )
    .unwrap();
    let output = check(path.to_str().unwrap());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(EX_CONFIG), "{stderr}");
    assert!(stderr.contains("\"tpc\""), "{stderr}");
    assert!(!stderr.contains("unknown key"), "{stderr}");
}

#[test]
fn a_missing_file_exits_78() {
    let output = check("tests/config_cases/does-not-exist.yaml");
    assert_eq!(output.status.code(), Some(EX_CONFIG));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("tests/config_cases/does-not-exist.yaml: cannot read the file"),
        "{stderr}"
    );
}

/// Modicon references where protocol addresses belong: warnings with position and the likely
/// address, exit 0; beside an error, both are printed and the exit is 78.
#[test]
fn modicon_references_are_warnings_with_the_likely_address() {
    let config = "tests/config_warnings/modicon.yaml";
    let output = check(config);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        format!("{config}: ok, 3 warning(s)\n")
    );
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 3, "{stderr}");
    assert_eq!(
        lines[0],
        format!(
            "{config}:16:51: warning: devices[0].points[0].address: 40003 looks like the Modicon \
             reference 40003 (holding registers count from 40001): did you mean address: 2? (keep \
             40003 if the device's manual gives it as the 0-based protocol address)"
        )
    );
    assert!(lines[1].starts_with(&format!("{config}:17:45: warning: devices[0].points[1].address: 30001 looks like the Modicon reference 30001 (input registers count from 30001): did you mean address: 0?")), "{stderr}");
    assert!(
        lines[2].contains("points[2].address: 10002 looks like")
            && lines[2].contains("address: 1?"),
        "{stderr}"
    );

    // A 6-digit reference is no address at all: the range error, and the hint beside it.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("six.yaml");
    let text = std::fs::read_to_string(config)
        .unwrap()
        .replace("address: 40003", "address: 400003");
    std::fs::write(&path, text).unwrap();
    let path = path.to_str().unwrap();
    let output = check(path);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(EX_CONFIG), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        lines[..2],
        [
            format!("{path}:16:51: devices[0].points[0].address: must be between 0 and 65535, got 400003"),
            format!(
                "{path}:16:51: warning: devices[0].points[0].address: 400003 looks like the Modicon \
                 reference 400003 (holding registers count from 400001): did you mean table: \
                 holding, address: 2?"
            ),
        ],
        "{stderr}"
    );
    assert_eq!(
        lines.last().copied(),
        Some(format!("{path}: 1 problem(s) found, 3 warning(s)").as_str())
    );
}

/// A configuration naming TLS files (made here with rcgen: nothing secret is committed).
fn tls_config(dir: &Path, ca: &Path, cert: &Path, key: &Path) -> String {
    let path = dir.join("tls.yaml");
    let text = format!(
        "gateway:\n  id: gw\n  data_dir: {data}\nuplink:\n  url: mqtts://broker.example.com\n  tls:\n    ca_file: {ca}\n    cert_file: {cert}\n    key_file: {key}\nbuses:\n  - {{name: plc1, type: tcp, host: 127.0.0.1}}\ndevices:\n  - name: boiler\n    bus: plc1\n    points:\n      - {{name: temp, table: input, address: 0, type: f32}}\n",
        data = dir.join("data").display(),
        ca = ca.display(),
        cert = cert.display(),
        key = key.display(),
    );
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// Good files pass; a key that belongs to another certificate is refused at `key_file`, with
/// the position and key path of every configuration error.
#[test]
fn a_client_key_of_another_certificate_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    // Readable by anyone: `check` as root also asks the service user, if it exists here.
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let pki = common::pki::TestPki::generate(dir.path());
    let good = tls_config(dir.path(), &pki.ca, &pki.client_cert, &pki.client_key);
    let output = check(&good);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mixed = tls_config(dir.path(), &pki.ca, &pki.client_cert, &pki.server_key);
    let output = check(&mixed);
    assert_eq!(output.status.code(), Some(EX_CONFIG));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let expected = format!(
        "{mixed}:9:15: uplink.tls.key_file: {} does not go with the certificate in {}",
        pki.server_key.display(),
        pki.client_cert.display()
    );
    assert!(
        stderr.lines().any(|l| l.starts_with(&expected)),
        "{expected}\n{stderr}"
    );
}

/// `run` refuses what `check` refuses about the named files with exit 78 (systemd does not
/// restart that), instead of failing at the first dial with 1 and restarting forever.
#[test]
fn run_exits_78_for_a_missing_tls_or_password_file() {
    let config = "tests/config_cases/tls_and_password_files/config.yaml";
    let output = run_on_config(&["run"], config);
    assert_eq!(
        output.status.code(),
        Some(EX_CONFIG),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        String::from_utf8_lossy(&check(config).stderr)
    );
}
