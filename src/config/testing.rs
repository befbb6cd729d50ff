//! Helpers of the configuration's unit tests: a valid file to break one line at a time, and
//! its errors as `LINE:COL: PATH: message` lines.

use super::load_str;

/// The smallest valid configuration, for tests of one optional section (appended to it).
pub(crate) const MINIMAL: &str = "\
gateway: {id: gw, data_dir: /d}
uplink: {url: 'mqtt://b'}
buses: [{name: plc1, type: tcp, host: h}]
devices: [{name: a, bus: plc1, points: [{name: p, table: coil, address: 0, type: bool}]}]
";

/// A valid configuration; tests replace one line to break it.
pub(crate) const VALID: &str = "\
gateway:
  id: gw1
  data_dir: /var/lib/fieldrelay
uplink:
  url: mqtt://broker.local
buses:
  - name: plc1
    type: tcp
    host: 10.0.0.5
devices:
  - name: boiler
    bus: plc1
    points:
      - name: temperature
        table: holding
        address: 10
        type: f32
";

/// Errors of `text` as `LINE:COL: PATH: message` lines.
pub(crate) fn errors(text: &str) -> Vec<String> {
    match load_str(text, "c.yaml") {
        Ok(config) => panic!("expected errors, got {config:?}"),
        Err(errors) => errors
            .errors
            .iter()
            .map(|e| {
                let mut line = e.to_string();
                line.replace_range(..e.file.len() + 1, "");
                line
            })
            .collect(),
    }
}

pub(crate) fn with(replacements: &[(&str, &str)]) -> String {
    let mut text = VALID.to_owned();
    for (from, to) in replacements {
        assert!(text.contains(from), "{from:?} not in the base config");
        text = text.replacen(from, to, 1);
    }
    text
}

/// The valid config with `keys` (indented `uplink` lines) added to its uplink section.
pub(crate) fn with_uplink(keys: &str) -> String {
    let url = "  url: mqtt://broker.local\n";
    with(&[(url, &format!("{url}{keys}"))])
}

/// A config whose bus is replaced by `bus` (indented list item lines) and whose point gets
/// `point` lines appended.
pub(crate) fn fieldbus(bus: &str, point: &str) -> String {
    with(&[
        (
            "  - name: plc1\n    type: tcp\n    host: 10.0.0.5\n",
            &format!("  - name: plc1\n{bus}"),
        ),
        (
            "        type: f32\n",
            &format!("        type: f32\n{point}"),
        ),
    ])
}
