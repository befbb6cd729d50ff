//! What commands may write: the optional `commands:` section and the write keys of a point
//! (`writable`, `min`, `max`, `verify`, `write_function`, `command_max_age`).
//!
//! ```yaml
//! commands:
//!   max_age: 60s          # a command whose ts is older is refused as expired
//!   without_ts: execute   # execute | refuse commands that carry no ts
//! devices:
//!   - name: boiler
//!     points:
//!       - name: setpoint
//!         writable: true
//!         min: 5          # engineering units, after scale and offset
//!         max: 90
//!         verify: true    # read back after writing and compare
//!         write_function: multiple  # FC 16 even for one register
//!         command_max_age: 10s      # this point's own max_age for commands
//! ```
//!
//! Rules, checked without I/O:
//! - Only a `coil` or a whole `holding` register value is writable: input tables are read-only
//!   by protocol, a `bit` of a register would need a read-modify-write of the whole register
//!   (racing the device and other writers), and a `serial_line` instrument has no write path.
//! - The other write keys need `writable: true`: a key that would do nothing is an error, not a
//!   silent no-op.
//! - `min`/`max` are finite, for numeric points, `min <= max`, and inside what the type can hold
//!   after scaling (a `u16` with scale 1 cannot reach 70000).
//! - `write_function: single` (FC 5/6) exists only for a coil or a one-register value; wider
//!   values are always written with FC 16.
//! - The per-point override is `command_max_age`, not `max_age`: a point's `max_age` already
//!   means how long its *samples* may wait in the queue (store section), a different clock.

use std::time::Duration;

use serde::Deserialize;

use super::decode::{Decoded, DurationValue, Keys};
use super::error::Issue;
use super::register::{data_type_name, DataType, ModbusSource, Table};
use super::rules::{choice, finite, optional, positive, positive_duration, when_written, Choice};

/// Commands older than this (by their `ts`) are refused: a setpoint delivered a minute late is
/// already suspicious, one delivered hours late (a persistent session held it through a WAN
/// outage) can start a machine nobody expects to move.
pub const DEFAULT_COMMAND_MAX_AGE: Duration = Duration::from_secs(60);

/// The resolved `commands` section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommandsConfig {
    /// Default age limit of a command's `ts`; a point may override it (`command_max_age`).
    pub max_age: Duration,
    pub without_ts: MissingTs,
}

impl Default for CommandsConfig {
    fn default() -> Self {
        CommandsConfig {
            max_age: DEFAULT_COMMAND_MAX_AGE,
            without_ts: MissingTs::Execute,
        }
    }
}

/// What happens to a command that carries no `ts` (its age cannot be checked).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MissingTs {
    /// Written whenever it arrives (default): bare values from HMIs and `mosquitto_pub -m 42`
    /// work, but a command held by the broker through an outage is written late.
    Execute,
    /// Refused (`bad_payload`): no command is ever written late, and every sender must stamp
    /// its commands with a synchronised clock.
    Refuse,
}

impl Choice for MissingTs {
    const WHAT: &'static str = "without_ts policy";
    const WORDS: &'static [(&'static str, Self)] = &[
        ("execute", MissingTs::Execute),
        ("refuse", MissingTs::Refuse),
    ];
}

/// How commands write a point (`writable: true` and its companions).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WriteConfig {
    /// Smallest value accepted, in engineering units.
    pub min: Option<f64>,
    /// Largest value accepted, in engineering units.
    pub max: Option<f64>,
    /// Read the point back after writing and compare (costs one more request).
    pub verify: bool,
    pub function: WriteFunction,
    /// This point's own age limit for commands; `None`: `commands.max_age`.
    pub max_age: Option<Duration>,
}

/// Which Modbus function writes the point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteFunction {
    /// FC 5 (coil) or FC 6 (one register): the shortest request; default where the value fits.
    Single,
    /// FC 15 (coils) or FC 16 (registers), also for one coil or register: for devices that
    /// implement only the multiple-write functions (common in PLCs and drives).
    Multiple,
}

impl Choice for WriteFunction {
    const WHAT: &'static str = "write_function";
    const WORDS: &'static [(&'static str, Self)] = &[
        ("single", WriteFunction::Single),
        ("multiple", WriteFunction::Multiple),
    ];
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCommands {
    pub max_age: Option<DurationValue>,
    pub without_ts: Option<String>,
}

/// The `commands` section, defaults when it is not written.
pub(crate) fn validate_commands(
    raw: Option<&Decoded<RawCommands>>,
    root: &Keys,
    issues: &mut Vec<Issue>,
) -> Option<CommandsConfig> {
    let Some(Decoded { value, keys }) = raw else {
        return (!root.rejected.contains("commands")).then(CommandsConfig::default);
    };
    let max_age = positive_duration(
        keys,
        "max_age",
        value.max_age,
        DEFAULT_COMMAND_MAX_AGE,
        issues,
    );
    let without_ts = choice(
        keys,
        "without_ts",
        &value.without_ts,
        MissingTs::Execute,
        issues,
    );
    Some(CommandsConfig {
        max_age: max_age?,
        without_ts: without_ts?,
    })
}

/// A point's write keys, as written (the point's other keys are not the write rules' business).
pub(crate) struct WriteKeys<'a> {
    pub writable: Option<bool>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub verify: Option<bool>,
    pub function: &'a Option<String>,
    pub max_age: Option<DurationValue>,
}

/// What the point rules already resolved, as far as they could.
pub(crate) struct WriteTarget<'a> {
    /// A point of a serial_line bus.
    pub is_line: bool,
    pub source: Option<&'a ModbusSource>,
    pub data_type: Option<DataType>,
    pub scale: Option<f64>,
    pub offset: Option<f64>,
}

/// Keys that only mean something on a writable point.
const WRITE_KEYS: [&str; 5] = ["min", "max", "verify", "write_function", "command_max_age"];

/// The point's write settings: `Some(None)` when it is not writable, `None` when a write key is
/// invalid (issues pushed). `keys` are the point's.
pub(crate) fn validate_write(
    keys: &Keys,
    raw: &WriteKeys<'_>,
    target: &WriteTarget<'_>,
    issues: &mut Vec<Issue>,
) -> Option<Option<WriteConfig>> {
    if !optional(keys, "writable", raw.writable, false)? {
        let written: Vec<&str> = WRITE_KEYS
            .into_iter()
            .filter(|key| keys.present.contains(*key) && !keys.rejected.contains(*key))
            .collect();
        for key in &written {
            issues.push(Issue::key(
                keys.path_of(key),
                format!("`{key}` applies to writable points (add writable: true)"),
            ));
        }
        return written.is_empty().then_some(None);
    }
    let refusal = write_refusal(target);
    if let Some(message) = &refusal {
        issues.push(Issue::value(keys.path_of("writable"), message.as_str()));
    }
    let min = bound(keys, "min", raw.min, target, issues);
    let max = bound(keys, "max", raw.max, target, issues);
    let (min, max) = match (min, max) {
        (Some(Some(lo)), Some(Some(hi))) if lo > hi => {
            issues.push(Issue::value(
                keys.path_of("max"),
                format!("must not be below min ({lo}), got {hi}"),
            ));
            (None, None)
        }
        pair => pair,
    };
    let verify = optional(keys, "verify", raw.verify, false);
    let function = write_function(keys, raw.function, target, issues);
    let max_age = when_written(keys, "command_max_age", &raw.max_age, |age| {
        positive(keys, "command_max_age", age.0, issues)
    });
    if refusal.is_some() {
        return None;
    }
    Some(Some(WriteConfig {
        min: min?,
        max: max?,
        verify: verify?,
        function: function?,
        max_age: max_age?,
    }))
}

/// Why the point cannot be written at all, if it cannot.
fn write_refusal(target: &WriteTarget<'_>) -> Option<String> {
    if target.is_line {
        return Some(
            "a serial_line point cannot be written: the instrument only sends lines".to_owned(),
        );
    }
    let source = target.source?;
    match (source.table, source.bit) {
        (Table::Input | Table::DiscreteInput, _) => Some(format!(
            "a point in the {} table cannot be written (only coil and holding points can)",
            source.table.word()
        )),
        (_, Some(_)) => Some(
            "a bit of a register cannot be written: it would need a read-modify-write of the \
             whole register, racing the device"
                .to_owned(),
        ),
        _ => None,
    }
}

/// `min` or `max`: finite, for a numeric point, inside what it can hold after scaling.
fn bound(
    keys: &Keys,
    key: &str,
    value: Option<f64>,
    target: &WriteTarget<'_>,
    issues: &mut Vec<Issue>,
) -> Option<Option<f64>> {
    when_written(keys, key, &value, |value| {
        let value = finite(keys, key, *value, issues)?;
        if matches!(
            target.data_type,
            Some(DataType::Bool | DataType::String { .. })
        ) {
            issues.push(Issue::key(
                keys.path_of(key),
                format!(
                    "`{key}` applies to numeric points, not to {}",
                    type_text(target)
                ),
            ));
            return None;
        }
        match engineering_range(target) {
            Some((lo, hi)) if value < lo || value > hi => {
                issues.push(Issue::value(
                    keys.path_of(key),
                    format!(
                        "{value} is outside what the point can hold after scaling ({lo} to {hi})"
                    ),
                ));
                None
            }
            _ => Some(value),
        }
    })
}

/// `write_function`: `single` where the value fits one coil or register (the default there),
/// else `multiple`.
fn write_function(
    keys: &Keys,
    value: &Option<String>,
    target: &WriteTarget<'_>,
    issues: &mut Vec<Issue>,
) -> Option<WriteFunction> {
    let too_wide = target
        .data_type
        .is_some_and(|t| t.width() != 1 || matches!(t, DataType::String { .. }));
    let default = if too_wide {
        WriteFunction::Multiple
    } else {
        WriteFunction::Single
    };
    let function = choice(keys, "write_function", value, default, issues)?;
    if function == WriteFunction::Single && too_wide {
        issues.push(Issue::value(
            keys.path_of("write_function"),
            format!(
                "{} spans several registers: it is written with write_function: multiple (FC 16)",
                type_text(target)
            ),
        ));
        return None;
    }
    Some(function)
}

/// `a bool point`, `a u32`, `a string point`: the point's type for messages.
fn type_text(target: &WriteTarget<'_>) -> String {
    match target.data_type {
        Some(DataType::Bool) => "a bool point".to_owned(),
        Some(DataType::String { .. }) => "a string point".to_owned(),
        Some(t) => format!("a {}", data_type_name(t)),
        None => "this point".to_owned(),
    }
}

/// The engineering values an integer point can hold (`raw * scale + offset` over the type's raw
/// range); `None` for floats (their range is not a useful check) and unresolved points.
fn engineering_range(target: &WriteTarget<'_>) -> Option<(f64, f64)> {
    let (lo, hi): (f64, f64) = match target.data_type? {
        DataType::U16 => (0.0, f64::from(u16::MAX)),
        DataType::I16 => (f64::from(i16::MIN), f64::from(i16::MAX)),
        DataType::U32 => (0.0, f64::from(u32::MAX)),
        DataType::I32 => (f64::from(i32::MIN), f64::from(i32::MAX)),
        DataType::U64 => (0.0, u64::MAX as f64),
        DataType::I64 => (i64::MIN as f64, i64::MAX as f64),
        _ => return None,
    };
    let (scale, offset) = (target.scale?, target.offset?);
    let (a, b) = (lo * scale + offset, hi * scale + offset);
    Some((a.min(b), a.max(b)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{load_str, DEFAULT_OFFLINE_AFTER};

    const BASE: &str = "\
gateway: {id: gw, data_dir: /d}
uplink: {url: 'mqtt://b'}
buses:
  - {name: plc1, type: tcp, host: h}
  - {name: scale, type: serial_line, port: /dev/ttyUSB0}
devices:
  - name: a
    bus: plc1
    points:
      - {name: p, table: holding, address: 0, type: u16}
  - name: w
    bus: scale
    points:
      - {name: weight, type: f32, regex: 'W=([0-9.]+)'}
";

    fn with(device_extra: &str, point: &str, tail: &str) -> String {
        BASE.replace("    bus: plc1\n", &format!("    bus: plc1\n{device_extra}"))
            .replace(
                "      - {name: p, table: holding, address: 0, type: u16}\n",
                &format!("      - {{name: p, table: holding, address: 0, type: u16}}\n{point}"),
            )
            + tail
    }

    fn errors(text: &str) -> Vec<String> {
        match load_str(text, "c.yaml") {
            Ok(_) => panic!("expected errors in\n{text}"),
            Err(errors) => errors
                .errors
                .iter()
                .map(|e| format!("{}: {}", e.path, e.message))
                .collect(),
        }
    }

    #[test]
    fn defaults_make_nothing_writable() {
        let config = load_str(BASE, "c.yaml").unwrap();
        assert_eq!(config.commands, CommandsConfig::default());
        assert_eq!(config.commands.max_age, Duration::from_secs(60));
        assert_eq!(config.devices[0].offline_after, DEFAULT_OFFLINE_AFTER);
        assert!(config
            .devices
            .iter()
            .flat_map(|d| &d.points)
            .all(|p| p.write.is_none()));
    }

    #[test]
    fn writable_points_resolve_their_settings() {
        let text = with(
            "    offline_after: 5\n",
            "      - {name: sp, table: holding, address: 10, type: f32, writable: true, min: -5, \
             max: 90.5, verify: true, command_max_age: 10s}\n      - {name: mode, table: holding, \
             address: 20, type: u16, writable: true, write_function: multiple}\n      - {name: run, \
             table: coil, address: 0, type: bool, writable: true}\n",
            "commands: {max_age: 2m, without_ts: refuse}\n",
        );
        let config = load_str(&text, "c.yaml").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            config.commands,
            CommandsConfig {
                max_age: Duration::from_secs(120),
                without_ts: MissingTs::Refuse
            }
        );
        let device = &config.devices[0];
        assert_eq!(device.offline_after, 5);
        let write = |name: &str| {
            device
                .points
                .iter()
                .find(|p| p.name == name)
                .and_then(|p| p.write)
                .unwrap()
        };
        assert_eq!(
            write("sp"),
            WriteConfig {
                min: Some(-5.0),
                max: Some(90.5),
                verify: true,
                function: WriteFunction::Multiple,
                max_age: Some(Duration::from_secs(10)),
            }
        );
        assert_eq!(write("mode").function, WriteFunction::Multiple);
        assert_eq!(write("run").function, WriteFunction::Single);
        assert!(!write("run").verify);
    }

    #[test]
    fn write_rules() {
        let text = with(
            "    offline_after: 0\n",
            "      - {name: t, table: input, address: 0, type: u16, writable: true}\n      - {name: \
             b, table: holding, address: 1, bit: 3, type: bool, writable: true}\n      - {name: \
             d, table: discrete_input, address: 0, type: bool, writable: true}\n      - {name: \
             m, table: holding, address: 2, type: u16, min: 1}\n      - {name: r, table: \
             holding, address: 3, type: u16, writable: true, min: 10, max: 5}\n      - {name: \
             big, table: holding, address: 4, type: u16, writable: true, max: 70000}\n      - \
             {name: c, table: coil, address: 0, type: bool, writable: true, min: 0}\n      - \
             {name: f, table: holding, address: 6, type: f32, writable: true, write_function: \
             single}\n      - {name: g, table: holding, address: 8, type: u16, writable: true, \
             write_function: fc16, command_max_age: 0s}\n      - {name: s, table: holding, \
             address: 9, type: u16, scale: 0.1, writable: true, max: 6553.5}\n",
            "commands: {max_age: 0s, without_ts: maybe}\n",
        )
        .replace(
            "regex: 'W=([0-9.]+)'}",
            "regex: 'W=([0-9.]+)', writable: true}",
        );
        assert_eq!(
            errors(&text),
            [
                "devices[0].offline_after: must be between 1 and 10000 failed polls, got 0",
                "devices[0].points[1].writable: a point in the input table cannot be written (only coil and holding points can)",
                "devices[0].points[2].writable: a bit of a register cannot be written: it would need a read-modify-write of the whole register, racing the device",
                "devices[0].points[3].writable: a point in the discrete_input table cannot be written (only coil and holding points can)",
                "devices[0].points[4].min: `min` applies to writable points (add writable: true)",
                "devices[0].points[5].max: must not be below min (10), got 5",
                "devices[0].points[6].max: 70000 is outside what the point can hold after scaling (0 to 65535)",
                "devices[0].points[7].min: `min` applies to numeric points, not to a bool point",
                "devices[0].points[8].write_function: a f32 spans several registers: it is written with write_function: multiple (FC 16)",
                "devices[0].points[9].write_function: unknown write_function \"fc16\": expected single or multiple",
                "devices[0].points[9].command_max_age: must be greater than 0s",
                "devices[1].points[0].writable: a serial_line point cannot be written: the instrument only sends lines",
                "commands.max_age: must be greater than 0s",
                "commands.without_ts: unknown without_ts policy \"maybe\": expected execute or refuse",
            ]
        );
    }
}
