//! `fieldrelay points import` end to end: a vendor register list (`tests/import/meter.csv`, the
//! kind an energy meter's manual ships: `;`-separated, Modicon references, vendor type names,
//! decimal commas) becomes a device whose points pass `fieldrelay check` inside a configuration.

mod common;

use std::process::{Command, Output};

fn import(csv: &str, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fieldrelay"))
        .args([
            "points", "import", "--csv", csv, "--device", "meter1", "--bus", "rs485",
        ])
        .args(extra)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run fieldrelay points import")
}

#[test]
fn a_vendor_list_becomes_points_that_pass_check() {
    let output = import("tests/import/meter.csv", &["--unit-id", "7"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert_eq!(stderr, "", "no warnings for references it converted");
    let points: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("      - "))
        .collect();
    assert_eq!(points.len(), 10, "{stdout}");
    for expected in [
        "{name: voltage_l1_n, table: input, address: 0, type: f32, unit: V}",
        "{name: active_power_total, table: input, address: 52, type: f32, word_order: little, byte_order: big, unit: W}",
        "{name: energy_import, table: holding, address: 256, type: u32, unit: kWh, scale: 0.1}",
        "{name: frequency, table: input, address: 70, type: u16, unit: Hz, scale: 0.01}",
        "{name: ct_ratio, table: holding, address: 10, type: u16, writable: true}",
        "{name: relay_1, table: coil, address: 0, type: bool, writable: true}",
        "{name: tamper_alarm, table: discrete_input, address: 0, type: bool}",
    ] {
        assert!(stdout.contains(expected), "{expected} not in\n{stdout}");
    }

    // Pasted under `devices:` of a configuration with the bus, it passes check as it is.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "gateway: {{id: gw, data_dir: {}}}\nuplink: {{url: \"mqtt://127.0.0.1\"}}\n\
             buses:\n  - {{name: rs485, type: rtu, port: /dev/ttyUSB0, baud_rate: 9600}}\ndevices:\n{stdout}",
            dir.path().display()
        ),
    )
    .unwrap();
    let check = common::cases::run_on_config(&["check"], config.to_str().unwrap());
    assert_eq!(
        check.status.code(),
        Some(0),
        "{}\n{stdout}",
        String::from_utf8_lossy(&check.stderr)
    );
}

#[test]
fn every_bad_row_is_reported_with_its_line_and_nothing_is_printed() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("bad.csv");
    std::fs::write(
        &csv,
        "name,address,type,table\nok,40001,u16,\nbad type,40002,float128,\nclash,40001,u16,\nstring,40010,string,\n",
    )
    .unwrap();
    let csv = csv.to_str().unwrap();
    let output = import(csv, &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(65), "{stderr}");
    assert_eq!(output.stdout, b"");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 4, "{stderr}");
    assert!(
        lines[0].starts_with(&format!("{csv}:3: type: unknown type \"float128\"")),
        "{stderr}"
    );
    assert!(
        lines[1].starts_with(&format!("{csv}:4: address: ")),
        "{stderr}"
    );
    // The configuration's note points at the CSV line of the other row, not at the scratch file.
    assert!(
        lines[1].ends_with("overlaps point \"ok\" (holding 0, defined at line 2)"),
        "{stderr}"
    );
    assert_eq!(lines[2], format!("{csv}:5: length: missing required key"));
    assert_eq!(lines[3], "3 problem(s) found");

    let missing = import(&format!("{csv}.missing"), &[]);
    assert_eq!(missing.status.code(), Some(66));
}
