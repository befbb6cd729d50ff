//! The `points` of a device: what is read, how a raw reading becomes the published value, and
//! when it is published. A point of a Modbus bus names registers or bits (`register.rs` in this
//! module); a point of a serial_line bus is a regex capture of the instrument's lines. Its write
//! keys belong to commands (`commands.rs`), its `max_age` to the queue (`store.rs`).
//!
//! ```yaml
//! points:
//!   - {name: temperature, table: holding, address: 10, type: f32, deadband: 0.1, unit: °C}
//!   - {name: running, table: coil, address: 0, type: bool, qos: 2}
//!   - {name: weight, type: f64, regex: "W=([-0-9.]+)"}      # on a serial_line bus
//! ```
//!
//! Keys that do not apply are refused rather than ignored: `table` on a serial_line point,
//! `regex` on a Modbus one, `scale` on a string, `length` on anything but a string.

use std::time::Duration;

use serde::Deserialize;

use super::bus::BusTag;
use super::commands::{validate_write, WriteConfig, WriteKeys, WriteTarget};
use super::decode::{Decoded, DurationValue, Keys, List};
use super::error::Issue;
use super::limits::MAX_REGISTERS_PER_READ;
use super::modicon;
use super::register::{
    data_type_name, report_overlaps, require_data_type, ByteOrder, DataType, Encoding, Footprint,
    ModbusSource, Table, WordOrder,
};
use super::rules::{
    check_unique, choice, collect_all, each, finite, identifier, in_range, numbered, optional,
    positive, refuse_keys, require, required_choice, when_written, Choice, Numbered,
};

/// Most decimals a point's `decimals:` key may ask for: more than an f64 promises for a value
/// near 1.
pub const MAX_DECIMALS: u8 = 15;
/// Longest engineering unit accepted: room for `m³/h`, `kWh`, `°C`, `ppm`, `mg/Nm³`, ...
pub const MAX_UNIT_LEN: usize = 32;

#[derive(Debug, Clone, PartialEq)]
pub struct PointConfig {
    pub name: String,
    /// Where the value comes from: registers or bits of a Modbus device, or a serial line.
    pub source: PointSource,
    pub data_type: DataType,
    pub scale: f64,
    pub offset: f64,
    /// At most this many decimals in the published value; `None`: those the scale and offset
    /// imply (`crate::modbus::decode`, "Decimals").
    pub decimals: Option<u8>,
    pub qos: Qos,
    pub retain: bool,
    pub reporting: Reporting,
    /// Engineering unit (`°C`, `bar`, `m³/h`), shown by `fieldrelay probe`; not published.
    pub unit: Option<String>,
    /// How commands may write the point; `None`: not writable (every command is refused).
    pub write: Option<WriteConfig>,
}

impl PointConfig {
    /// The Modbus source of the point, `None` for a serial_line point.
    pub fn modbus(&self) -> Option<&ModbusSource> {
        match &self.source {
            PointSource::Modbus(source) => Some(source),
            PointSource::Line(_) => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum PointSource {
    Modbus(ModbusSource),
    /// A capture of a regex applied to every line of a `serial_line` bus.
    Line(LinePattern),
}

/// A compiled `regex` of a serial_line point; compares by its text.
#[derive(Debug, Clone)]
pub struct LinePattern(pub regex::Regex);

impl PartialEq for LinePattern {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_str() == other.0.as_str()
    }
}

/// When readings become published samples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reporting {
    pub publish: PublishMode,
    /// `on_change`: publish when |new - last published| > deadband.
    pub deadband: f64,
    /// `on_change`: republish the current value when nothing was published for this long (a
    /// heartbeat, so consumers can tell "unchanged" from "gateway silent").
    pub max_silence: Option<Duration>,
}

/// MQTT delivery guarantee per point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Qos {
    /// Sent only while connected; never queued on disk.
    AtMostOnce = 0,
    /// Committed to the queue first; deleted on PUBACK; may be delivered twice with the same `seq`.
    AtLeastOnce = 1,
    /// Committed to the queue first; deleted on PUBCOMP.
    ExactlyOnce = 2,
}

impl Numbered for Qos {
    const NUMBERS: &'static [(i64, Self)] = &[
        (0, Qos::AtMostOnce),
        (1, Qos::AtLeastOnce),
        (2, Qos::ExactlyOnce),
    ];
}

/// When a new reading becomes a published sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishMode {
    /// Only when the value moved by more than `deadband` since the last published one: less
    /// traffic and queue space, coarser history.
    OnChange,
    /// Every successful poll: full history at the cost of traffic and queue space.
    EveryPoll,
}

impl Choice for PublishMode {
    const WHAT: &'static str = "publish mode";
    const WORDS: &'static [(&'static str, Self)] = &[
        ("on_change", PublishMode::OnChange),
        ("every_poll", PublishMode::EveryPoll),
    ];
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPoint {
    pub name: Option<String>,
    pub table: Option<String>,
    pub address: Option<i64>,
    #[serde(rename = "type")]
    pub data_type: Option<String>,
    pub scale: Option<f64>,
    pub offset: Option<f64>,
    pub decimals: Option<i64>,
    pub qos: Option<i64>,
    pub retain: Option<bool>,
    pub publish: Option<String>,
    pub deadband: Option<f64>,
    pub max_silence: Option<DurationValue>,
    pub bit: Option<i64>,
    pub length: Option<i64>,
    pub byte_order: Option<String>,
    pub word_order: Option<String>,
    pub regex: Option<String>,
    /// Applied by the queue (see `store.rs` in this module), not by the poller.
    pub max_age: Option<DurationValue>,
    pub unit: Option<String>,
    /// Commands (see `commands.rs` in this module).
    pub writable: Option<bool>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub verify: Option<bool>,
    pub write_function: Option<String>,
    pub command_max_age: Option<DurationValue>,
}

/// What a point inherits from its device.
pub(crate) struct PointDefaults {
    /// The device's bus type, when known.
    pub(crate) tag: Option<BusTag>,
    /// `None` when the device's own setting was refused: points then skip their checks of it.
    pub(crate) encoding: Option<Encoding>,
    pub(crate) max_registers_per_read: Option<u16>,
}

/// Keys of a point that only a Modbus point has.
const MODBUS_POINT_KEYS: [&str; 6] = [
    "table",
    "address",
    "bit",
    "length",
    "byte_order",
    "word_order",
];

/// A device's `points`: at least one, names unique, registers not shared.
pub(crate) fn validate_points(
    list: &List<Decoded<RawPoint>>,
    defaults: &PointDefaults,
    issues: &mut Vec<Issue>,
) -> Option<Vec<PointConfig>> {
    let checked = each(
        list,
        "a device needs at least one point",
        issues,
        |point, issues| validate_point(point, defaults, issues),
    );
    let names = list
        .items
        .iter()
        .map(|point| (&point.value.name, &point.keys));
    check_unique("point", names, issues);
    check_overlaps(&list.items, &checked, issues);
    collect_all(
        checked.into_iter().map(|(point, _)| point).collect(),
        list.len,
    )
}

fn validate_point(
    point: &Decoded<RawPoint>,
    defaults: &PointDefaults,
    issues: &mut Vec<Issue>,
) -> (Option<PointConfig>, Option<Footprint>) {
    let (raw, keys) = (&point.value, &point.keys);
    let name = identifier(keys, "name", &raw.name, None, issues);
    // A point is a line point when its bus is a serial_line bus; when the bus is unknown, when
    // it has a regex.
    let is_line = match defaults.tag {
        Some(tag) => tag == BusTag::SerialLine,
        None => keys.present.contains("regex"),
    };
    let data_type = require_data_type(keys, &raw.data_type, issues);
    let (source, data_type, footprint) = if is_line {
        let (pattern, data_type) = line_source(keys, raw, data_type, issues);
        (pattern.map(PointSource::Line), data_type, None)
    } else {
        let (source, data_type, footprint) = modbus_point(keys, raw, data_type, defaults, issues);
        (source.map(PointSource::Modbus), data_type, footprint)
    };

    // From the text, so a string whose length is missing still refuses scale and offset.
    let is_string = raw.data_type.as_deref() == Some("string");
    if is_string {
        let not_for_text = ["scale", "offset", "decimals", "deadband"];
        refuse_keys(keys, &not_for_text, "a string point", issues);
    }
    let zero_scale = "must not be 0 (every reading would become the offset)";
    let (scale, offset) = scale_and_offset(keys, raw.scale, raw.offset, zero_scale, issues);
    let decimals = when_written(keys, "decimals", &raw.decimals, |places| {
        if (0..=i64::from(MAX_DECIMALS)).contains(places) {
            return u8::try_from(*places).ok();
        }
        issues.push(Issue::value(
            keys.path_of("decimals"),
            format!("must be 0 to {MAX_DECIMALS}, got {places}"),
        ));
        None
    });
    let qos = numbered(keys, "qos", raw.qos, Qos::AtLeastOnce, issues);
    let retain = optional(keys, "retain", raw.retain, false);
    let reporting = reporting(keys, raw, is_string, issues);
    let unit = when_written(keys, "unit", &raw.unit, |unit| {
        engineering_unit(keys, unit, issues)
    });
    let (scale, offset) = if is_string {
        (Some(1.0), Some(0.0))
    } else {
        (scale, offset)
    };
    let target = WriteTarget {
        is_line,
        source: match &source {
            Some(PointSource::Modbus(source)) => Some(source),
            _ => None,
        },
        data_type,
        scale,
        offset,
    };
    let write = validate_write(keys, &write_keys(raw), &target, issues);

    let build = || {
        Some(PointConfig {
            name: name?,
            source: source?,
            data_type: data_type?,
            scale: scale?,
            offset: offset?,
            decimals: decimals?,
            qos: qos?,
            retain: retain?,
            reporting: reporting?,
            unit: unit?,
            write: write?,
        })
    };
    (build(), footprint)
}

/// The point's write keys, for the write rules.
fn write_keys(raw: &RawPoint) -> WriteKeys<'_> {
    WriteKeys {
        writable: raw.writable,
        min: raw.min,
        max: raw.max,
        verify: raw.verify,
        function: &raw.write_function,
        max_age: raw.command_max_age,
    }
}

/// `publish`, `deadband` (none for a string) and `max_silence`.
fn reporting(
    keys: &Keys,
    raw: &RawPoint,
    is_string: bool,
    issues: &mut Vec<Issue>,
) -> Option<Reporting> {
    let publish = choice(keys, "publish", &raw.publish, PublishMode::OnChange, issues);
    let deadband = optional(keys, "deadband", raw.deadband, 0.0)
        .and_then(|deadband| finite(keys, "deadband", deadband, issues))
        .and_then(|deadband| {
            if deadband >= 0.0 {
                return Some(deadband);
            }
            issues.push(Issue::value(
                keys.path_of("deadband"),
                format!("must not be negative, got {deadband}"),
            ));
            None
        });
    let max_silence = when_written(keys, "max_silence", &raw.max_silence, |silence| {
        let silence = positive(keys, "max_silence", silence.0, issues)?;
        if publish != Some(PublishMode::EveryPoll) {
            return Some(silence);
        }
        issues.push(Issue::value(
            keys.path_of("max_silence"),
            "applies to publish: on_change (every_poll publishes every reading anyway)",
        ));
        None
    });
    Some(Reporting {
        publish: publish?,
        deadband: if is_string { 0.0 } else { deadband? },
        max_silence: max_silence?,
    })
}

/// The `regex` of a serial_line point, and its type: a number or a string (of any length).
fn line_source(
    keys: &Keys,
    raw: &RawPoint,
    data_type: Option<DataType>,
    issues: &mut Vec<Issue>,
) -> (Option<LinePattern>, Option<DataType>) {
    refuse_keys(
        keys,
        &MODBUS_POINT_KEYS,
        "a point on a serial_line bus",
        issues,
    );
    let data_type = match data_type {
        Some(DataType::Bool) => {
            issues.push(Issue::value(
                keys.path_of("type"),
                "a serial_line point is a number or a string: bool is not supported",
            ));
            None
        }
        Some(DataType::String { .. }) => Some(DataType::String { length: 0 }),
        other => other,
    };
    let pattern = require(keys, "regex", &raw.regex, issues).and_then(|text| {
        let message = match regex::Regex::new(text) {
            Ok(regex) if regex.captures_len() >= 2 => return Some(LinePattern(regex)),
            Ok(_) => "needs a capture group around the value, e.g. \"T=([-0-9.]+)\"".to_owned(),
            Err(error) => {
                let detail = error.to_string();
                let last = detail.lines().last().unwrap_or("invalid").trim();
                format!(
                    "invalid regex: {}",
                    last.strip_prefix("error: ").unwrap_or(last)
                )
            }
        };
        issues.push(Issue::value(keys.path_of("regex"), message));
        None
    });
    (pattern, data_type)
}

/// The Modbus side of a point ([`modbus_source`]), with a warning for an address that looks like
/// a Modicon reference.
fn modbus_point(
    keys: &Keys,
    raw: &RawPoint,
    data_type: Option<DataType>,
    defaults: &PointDefaults,
    issues: &mut Vec<Issue>,
) -> (Option<ModbusSource>, Option<DataType>, Option<Footprint>) {
    if keys.present.contains("regex") {
        let bus = defaults
            .tag
            .map_or_else(|| "a modbus bus".to_owned(), BusTag::described);
        issues.push(Issue::key(
            keys.path_of("regex"),
            format!("`regex` applies to points of a serial_line bus, not {bus}"),
        ));
    }
    let checked = modbus_source(keys, raw, data_type, defaults, issues);
    modicon::check_address(keys, raw.table.as_deref(), raw.address, issues);
    checked
}

/// Table, address, bit, string length and byte/word order of a Modbus point. Returns the type
/// with its string length resolved.
pub(crate) fn modbus_source(
    keys: &Keys,
    raw: &RawPoint,
    data_type: Option<DataType>,
    defaults: &PointDefaults,
    issues: &mut Vec<Issue>,
) -> (Option<ModbusSource>, Option<DataType>, Option<Footprint>) {
    let table = required_choice::<Table>(keys, "table", &raw.table, issues);
    let address = require(keys, "address", &raw.address, issues)
        .and_then(|address| in_range(keys, "address", *address, 0, 65_535, issues))
        .and_then(|address| u16::try_from(address).ok());
    let data_type = string_length(keys, raw, data_type, issues);
    let data_type = match (table, data_type) {
        (Some(table), Some(data_type)) if table.is_bits() && data_type != DataType::Bool => {
            issues.push(Issue::value(
                keys.path_of("type"),
                format!(
                    "a {} holds single bits: type must be bool, got {}",
                    table.word(),
                    data_type_name(data_type)
                ),
            ));
            None
        }
        (_, data_type) => data_type,
    };
    let bit = bit(keys, raw, table, data_type, issues);
    // An order not written here is the device's.
    let byte_order = match &raw.byte_order {
        None if !keys.rejected.contains("byte_order") => defaults.encoding.map(|e| e.byte_order),
        _ => choice(keys, "byte_order", &raw.byte_order, ByteOrder::Big, issues),
    };
    let word_order = match &raw.word_order {
        None if !keys.rejected.contains("word_order") => defaults.encoding.map(|e| e.word_order),
        _ => choice(keys, "word_order", &raw.word_order, WordOrder::Big, issues),
    };
    if let (Some(data_type), Some(max)) = (data_type, defaults.max_registers_per_read) {
        if data_type.width() > max && table.is_some_and(|t| !t.is_bits()) {
            issues.push(Issue::value(
                keys.path_of("type"),
                format!(
                    "a {} needs {} registers but the device's max_registers_per_read is {max}",
                    data_type_name(data_type),
                    data_type.width()
                ),
            ));
        }
    }
    let footprint = footprint(keys, table.zip(address), data_type, bit, issues);
    let source = || {
        let footprint = footprint?;
        Some(ModbusSource {
            table: footprint.table,
            address: footprint.first,
            bit: footprint.bit,
            encoding: Encoding {
                byte_order: byte_order?,
                word_order: word_order?,
            },
        })
    };
    (source(), data_type, footprint)
}

/// A string's `length` resolved into its type; refused on any other type.
fn string_length(
    keys: &Keys,
    raw: &RawPoint,
    data_type: Option<DataType>,
    issues: &mut Vec<Issue>,
) -> Option<DataType> {
    if !matches!(data_type, Some(DataType::String { .. })) {
        if data_type.is_some() {
            refuse_keys(keys, &["length"], "a point that is not a string", issues);
        }
        return data_type;
    }
    let max = i64::from(MAX_REGISTERS_PER_READ);
    require(keys, "length", &raw.length, issues)
        .and_then(|length| in_range(keys, "length", *length, 1, max, issues))
        .and_then(|length| u16::try_from(length).ok())
        .map(|length| DataType::String { length })
}

/// `bit`: one bit of a register, for a bool point of a register table.
fn bit(
    keys: &Keys,
    raw: &RawPoint,
    table: Option<Table>,
    data_type: Option<DataType>,
    issues: &mut Vec<Issue>,
) -> Option<Option<u8>> {
    when_written(keys, "bit", &raw.bit, |bit| {
        let bit = in_range(keys, "bit", *bit, 0, 15, issues)?;
        let problem = match (table, data_type) {
            (Some(table), _) if table.is_bits() => format!(
                "a {} already holds single bits: leave `bit` out",
                table.word()
            ),
            (_, Some(data_type)) if data_type != DataType::Bool => format!(
                "a single bit is a bool: type must be bool, got {}",
                data_type_name(data_type)
            ),
            _ => return u8::try_from(bit).ok(),
        };
        issues.push(Issue::value(keys.path_of("bit"), problem));
        None
    })
}

/// The registers (or bits) a point occupies, when everything it depends on is valid and it ends
/// within the address space.
fn footprint(
    keys: &Keys,
    place: Option<(Table, u16)>,
    data_type: Option<DataType>,
    bit: Option<Option<u8>>,
    issues: &mut Vec<Issue>,
) -> Option<Footprint> {
    let ((table, first), data_type, bit) = (place?, data_type?, bit?);
    let width = data_type.width();
    if let Some(last) = first.checked_add(width - 1) {
        return Some(Footprint {
            table,
            first,
            last,
            bit,
        });
    }
    issues.push(Issue::value(
        keys.path_of("address"),
        format!(
            "a {} at address {first} needs {width} registers and runs past the last address 65535",
            data_type_name(data_type)
        ),
    ));
    None
}

/// A point's `scale` (default 1) and `offset` (default 0): both finite, the scale not 0.
/// `zero_scale` is the message for a scale of 0, which says why from the caller's side (a
/// gateway reads through the scale, a simulator writes through it). `None`: refused (reported).
pub(crate) fn scale_and_offset(
    keys: &Keys,
    scale: Option<f64>,
    offset: Option<f64>,
    zero_scale: &str,
    issues: &mut Vec<Issue>,
) -> (Option<f64>, Option<f64>) {
    let scale = optional(keys, "scale", scale, 1.0)
        .and_then(|scale| finite(keys, "scale", scale, issues))
        .filter(|scale| {
            if *scale == 0.0 {
                issues.push(Issue::value(keys.path_of("scale"), zero_scale));
            }
            *scale != 0.0
        });
    let offset = optional(keys, "offset", offset, 0.0)
        .and_then(|offset| finite(keys, "offset", offset, issues));
    (scale, offset)
}

/// A point's engineering unit: display text (`probe`), 1 to [`MAX_UNIT_LEN`] characters,
/// no control characters.
fn engineering_unit(keys: &Keys, unit: &str, issues: &mut Vec<Issue>) -> Option<String> {
    let length = unit.chars().count();
    let problem = if unit.trim().is_empty() {
        "must not be empty".to_owned()
    } else if length > MAX_UNIT_LEN {
        format!("must be at most {MAX_UNIT_LEN} characters, got {length}")
    } else if unit.chars().any(char::is_control) {
        "must not contain control characters".to_owned()
    } else {
        return Some(unit.to_owned());
    };
    issues.push(Issue::value(keys.path_of("unit"), problem));
    None
}

/// Reports each point whose registers overlap an earlier point's in the same table (once per
/// point, against the first such point), naming both.
fn check_overlaps(
    points: &[Decoded<RawPoint>],
    checked: &[(Option<PointConfig>, Option<Footprint>)],
    issues: &mut Vec<Issue>,
) {
    let label = |index: usize| match points.get(index).and_then(|p| p.value.name.as_deref()) {
        Some(name) => format!("point {name:?}"),
        None => format!("point #{}", index + 1),
    };
    report_overlaps(
        points,
        checked.iter().map(|(_, footprint)| *footprint),
        |later, earlier, footprint| {
            format!(
                "{} ({}) overlaps {}",
                label(later),
                footprint.describe(),
                label(earlier)
            )
        },
        issues,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::bus::{BusKind, Parity};
    use crate::config::load_str;
    use crate::config::testing::VALID;
    use crate::config::testing::{errors, with};

    #[test]
    fn device_and_point_fieldbus_rules() {
        let rtu = "    type: rtu\n    port: /dev/ttyUSB0\n";
        assert_eq!(
            errors(&with(&[
                ("  - name: plc1\n    type: tcp\n    host: 10.0.0.5\n", &format!("  - name: plc1\n{rtu}")),
                (
                    "    bus: plc1\n",
                    "    bus: plc1\n    unit_id: 0\n    byte_order: middle\n    max_gap: 200\n    max_registers_per_read: 1\n    backoff_max: 0s\n"
                ),
            ])),
            [
                "13:14: devices[0].unit_id: unit id 0 is the rtu broadcast address, which no device answers: use 1 to 247",
                r#"14:17: devices[0].byte_order: unknown byte order "middle": expected big or little"#,
                "15:14: devices[0].max_gap: must be between 0 and 125, got 200",
                "17:18: devices[0].backoff_max: must be greater than 0s",
                "22:15: devices[0].points[0].type: a f32 needs 2 registers but the device's max_registers_per_read is 1",
            ]
        );
        let point = |lines: &str| errors(&with(&[("        type: f32\n", lines)]));
        assert_eq!(
            point("        type: string\n        length: 2\n        bit: 3\n        scale: 2\n        regex: x\n"),
            [
                "19:14: devices[0].points[0].bit: a single bit is a bool: type must be bool, got string",
                "20:9: devices[0].points[0].scale: `scale` does not apply to a string point",
                "21:9: devices[0].points[0].regex: `regex` applies to points of a serial_line bus, not a tcp bus",
            ]
        );
        assert_eq!(
            point("        type: string\n"),
            ["14:9: devices[0].points[0].length: missing required key"]
        );
        assert_eq!(
            point("        type: u16\n        length: 2\n        word_order: big-endian\n        max_silence: 0s\n"),
            [
                "18:9: devices[0].points[0].length: `length` does not apply to a point that is not a string",
                r#"19:21: devices[0].points[0].word_order: unknown word order "big-endian": expected big or little"#,
                "20:22: devices[0].points[0].max_silence: must be greater than 0s",
            ]
        );
        let config = load_str(
            &with(&[(
                "        type: f32\n",
                "        type: bool\n        bit: 15\n        publish: on_change\n        max_silence: 5m\n      - name: flags\n        table: holding\n        address: 10\n        type: bool\n        bit: 0\n      - name: serial\n        table: input\n        address: 0\n        type: string\n        length: 8\n        byte_order: little\n",
            )]),
            "c.yaml",
        )
        .unwrap();
        let points = &config.devices[0].points;
        assert_eq!(points[0].modbus().map(|m| m.bit), Some(Some(15)));
        assert_eq!(
            points[0].reporting.max_silence,
            Some(Duration::from_secs(300))
        );
        assert_eq!(points[2].data_type, DataType::String { length: 8 });
        assert_eq!(
            points[2].modbus().map(|m| m.encoding.byte_order),
            Some(ByteOrder::Little)
        );
        // Two different bits of one register do not overlap; the same bit does.
        let same_bit = with(&[(
            "        type: f32\n",
            "        type: bool\n        bit: 1\n      - name: again\n        table: holding\n        address: 10\n        type: bool\n        bit: 1\n",
        )]);
        assert_eq!(
            errors(&same_bit),
            [
                r#"21:18: devices[0].points[1].address: point "again" (holding 10 bit 1) overlaps point "temperature" (holding 10 bit 1, defined at line 14)"#
            ]
        );
    }

    #[test]
    fn serial_line_devices() {
        let line_bus = "    type: serial_line\n    port: /dev/ttyS1\n    terminator: \"\\r\\n\"\n    poll: \"W\\r\\n\"\n";
        let text = with(&[
            (
                "  - name: plc1\n    type: tcp\n    host: 10.0.0.5\n",
                &format!("  - name: plc1\n{line_bus}"),
            ),
            (
                "        table: holding\n        address: 10\n        type: f32\n",
                "        type: f64\n        regex: \"W=\\\\s*([-0-9.]+)\"\n",
            ),
        ]);
        let config = load_str(&text, "c.yaml").unwrap();
        let BusKind::SerialLine { serial, line } = &config.buses[0].kind else {
            panic!("a serial_line bus");
        };
        assert_eq!((serial.baud_rate, serial.parity), (9600, Parity::None));
        assert_eq!(line.terminator, b"\r\n");
        assert_eq!(line.poll.as_deref(), Some(&b"W\r\n"[..]));
        assert!(matches!(
            config.devices[0].points[0].source,
            PointSource::Line(_)
        ));

        let broken = text
            .replace("    bus: plc1\n", "    bus: plc1\n    unit_id: 3\n")
            .replace(
                "        regex: \"W=\\\\s*([-0-9.]+)\"\n",
                "        regex: \"W=(\"\n        table: input\n",
            );
        assert_eq!(
            errors(&broken),
            [
                "15:5: devices[0].unit_id: `unit_id` does not apply to a device on a serial_line bus",
                "19:16: devices[0].points[0].regex: invalid regex: unclosed group",
                "20:9: devices[0].points[0].table: `table` does not apply to a point on a serial_line bus",
            ]
        );
        let no_group = text.replace("([-0-9.]+)", "[-0-9.]+");
        assert_eq!(
            errors(&no_group),
            [
                r#"18:16: devices[0].points[0].regex: needs a capture group around the value, e.g. "T=([-0-9.]+)""#
            ]
        );
    }

    #[test]
    fn engineering_units_are_short_display_text() {
        let with_unit = |unit: &str| {
            with(&[(
                "        type: f32\n",
                &format!("        type: f32\n        unit: {unit}\n"),
            )])
        };
        let config = load_str(&with_unit("'m³/h'"), "c.yaml").unwrap();
        assert_eq!(config.devices[0].points[0].unit.as_deref(), Some("m³/h"));
        assert_eq!(
            errors(&with_unit("''")),
            ["18:15: devices[0].points[0].unit: must not be empty"]
        );
        assert_eq!(
            errors(&with_unit(&"x".repeat(33))),
            ["18:15: devices[0].points[0].unit: must be at most 32 characters, got 33"]
        );
        assert_eq!(
            errors(&with_unit("\"a\\tb\"")),
            ["18:15: devices[0].points[0].unit: must not contain control characters"]
        );
    }

    #[test]
    fn point_rules() {
        let point = |lines: &str| errors(&with(&[("        type: f32\n", lines)]));
        assert_eq!(
            point("        type: f16\n"),
            [
                r#"17:15: devices[0].points[0].type: unknown type "f16": expected bool, u16, i16, u32, i32, u64, i64, f32, f64 or string (did you mean "u16"?)"#
            ]
        );
        assert_eq!(
            point("        type: f32\n        qos: 3\n        scale: 0\n        deadband: -1\n        publish: always\n"),
            [
                "18:14: devices[0].points[0].qos: must be 0, 1 or 2, got 3",
                "19:16: devices[0].points[0].scale: must not be 0 (every reading would become the offset)",
                "20:19: devices[0].points[0].deadband: must not be negative, got -1",
                r#"21:18: devices[0].points[0].publish: unknown publish mode "always": expected on_change or every_poll"#,
            ]
        );
        assert_eq!(
            point("        type: f32\n        scale: .nan\n        offset: 1e999\n"),
            [
                r#"18:16: devices[0].points[0].scale: invalid type: string ".nan", expected a number (it must be finite)"#,
                r#"19:17: devices[0].points[0].offset: invalid type: string ".inf", expected a number (it must be finite)"#,
            ]
        );
        assert_eq!(
            errors(&with(&[("        table: holding\n", "        table: coil\n")])),
            ["17:15: devices[0].points[0].type: a coil holds single bits: type must be bool, got f32"]
        );
        assert_eq!(
            errors(&with(&[(
                "        table: holding\n",
                "        table: holdings\n"
            )])),
            [
                r#"15:16: devices[0].points[0].table: unknown table "holdings": expected coil, discrete_input, input or holding (did you mean "holding"?)"#
            ]
        );
        assert_eq!(
            errors(&with(&[("        address: 10\n", "        address: 65535\n")])),
            ["16:18: devices[0].points[0].address: a f32 at address 65535 needs 2 registers and runs past the last address 65535"]
        );
        assert_eq!(
            errors(&with(&[("        address: 10\n", "        address: -1\n")])),
            ["16:18: devices[0].points[0].address: must be between 0 and 65535, got -1"]
        );
        assert_eq!(
            errors(&with(&[(
                "        type: f32\n",
                "        type: f32\n        retain: yes\n"
            )])),
            [
                r#"18:17: devices[0].points[0].retain: invalid type: string "yes", expected a boolean"#
            ]
        );
    }

    #[test]
    fn bool_on_a_register_table_is_allowed() {
        let text = with(&[("        type: f32\n", "        type: bool\n")]);
        assert_eq!(
            load_str(&text, "c.yaml").unwrap().devices[0].points[0].data_type,
            DataType::Bool
        );
    }

    #[test]
    fn overlaps_name_both_points() {
        let text = format!(
            "{VALID}      - name: pressure\n        table: holding\n        address: 11\n        type: u16\n\
             \x20     - name: elsewhere\n        table: input\n        address: 10\n        type: u32\n\
             \x20     - name: adjacent\n        table: holding\n        address: 12\n        type: i32\n"
        );
        assert_eq!(
            errors(&text),
            [
                r#"20:18: devices[0].points[1].address: point "pressure" (holding 11) overlaps point "temperature" (holding 10-11, defined at line 14)"#
            ]
        );
    }
}
