//! The `devices` section: what is polled on which bus, how often, and how its registers may be
//! read together. Each device holds its points (`point.rs` in this module).
//!
//! ```yaml
//! devices:
//!   - name: boiler
//!     bus: plc1                 # a bus above
//!     unit_id: 1                # 0 to 255 (1 to 247 on rtu buses)
//!     poll_interval: 1s         # at least 10ms
//!     max_gap: 8                # unused registers one read may span to join two points
//!     offline_after: 3          # failed polls before P/boiler/status says offline
//!     points: [...]
//! ```
//!
//! Checked across devices, once every device was read: two devices with one unit id on an rtu
//! bus (their replies could not be told apart), and more than one device on a serial_line bus
//! (the line carries one instrument's text).

use std::collections::HashMap;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use super::bus::BusTag;
use super::decode::{decode_list, decode_mapping, Decoded, DurationValue, Keys, List};
use super::error::Issue;
use super::limits::MAX_REGISTERS_PER_READ;
use super::path::KeyPath;
use super::point::{validate_points, PointConfig, PointDefaults, RawPoint};
use super::register::{ByteOrder, Encoding, WordOrder};
use super::rules::{
    check_unique, choice, collect_all, duration_at_least, each, identifier, number, optional,
    positive_duration, refuse_keys, require,
};

pub const DEFAULT_UNIT_ID: u8 = 1;
/// Unused registers a read may span to join two points: 8 registers cost 16 bytes on the wire,
/// about 1.4 ms at 115200 baud, less than one extra request/response round trip.
pub const DEFAULT_MAX_GAP: u16 = 8;
/// Longest wait between attempts on a failing device: long enough not to load a shared line
/// with a dead device's timeouts, short enough that a repaired device is back within a minute.
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(60);
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(1);
/// Faster polling than this floods a bus (and the queue) without giving fresher data: a Modbus
/// TCP round trip alone is several milliseconds.
pub const MIN_POLL_INTERVAL: Duration = Duration::from_millis(10);
/// Three failed polls: one lost reply (a CRC error, a busy device) does not flap the status, and
/// a dead device is reported within three poll intervals (plus backoff).
pub const DEFAULT_OFFLINE_AFTER: u32 = 3;
/// Above this, an outage would be reported hours late at any sane poll interval.
pub const MAX_OFFLINE_AFTER: i64 = 10_000;

#[derive(Debug, Clone, PartialEq)]
pub struct DeviceConfig {
    pub name: String,
    /// Name of a bus in [`super::Config::buses`] (validated).
    pub bus: String,
    pub unit_id: u8,
    pub poll_interval: Duration,
    pub points: Vec<PointConfig>,
    /// Register planning quirks of this device (see [`crate::modbus::plan`]).
    pub planning: Planning,
    /// Longest wait between attempts while the device keeps failing.
    pub backoff_max: Duration,
    /// Consecutive failed polls after which the device's status is published as offline.
    pub offline_after: u32,
}

/// How the read planner may merge a device's points into requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Planning {
    /// Unused registers (bits: 16 times as many) one read may span to join two points.
    pub max_gap: u16,
    /// 1..=125; some devices refuse long reads.
    pub max_registers_per_read: u16,
    pub coalesce: Coalesce,
}

/// Whether points may share a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coalesce {
    /// Merge near points into few requests: fewest round trips, the default.
    Merge,
    /// One request per point: for devices that answer multi-point reads wrongly or refuse reads
    /// spanning unmapped registers; costs one round trip per point.
    OnePerPoint,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDevice {
    pub name: Option<String>,
    pub bus: Option<String>,
    pub unit_id: Option<i64>,
    pub poll_interval: Option<DurationValue>,
    pub byte_order: Option<String>,
    pub word_order: Option<String>,
    pub max_gap: Option<i64>,
    pub max_registers_per_read: Option<i64>,
    pub coalesce: Option<bool>,
    pub backoff_max: Option<DurationValue>,
    pub offline_after: Option<i64>,
    /// Decoded separately, point by point.
    pub points: Option<Vec<Value>>,
}

/// A device with its points decoded separately.
#[derive(Debug)]
pub(crate) struct RawDeviceEntry {
    pub device: Decoded<RawDevice>,
    pub points: Option<List<Decoded<RawPoint>>>,
}

/// Decodes one item of `devices`, then each of its points.
pub(crate) fn decode_device(
    value: Value,
    path: KeyPath,
    issues: &mut Vec<Issue>,
) -> Option<RawDeviceEntry> {
    let mut device = decode_mapping::<RawDevice>(&value, &path, "a device", issues)?;
    let points = device.value.points.take().map(|items| {
        decode_list(
            items,
            device.keys.path_of("points"),
            |value, path, issues| decode_mapping::<RawPoint>(&value, &path, "a point", issues),
            issues,
        )
    });
    Some(RawDeviceEntry { device, points })
}

/// The `devices` list: at least one, names unique, each on a bus of `buses` (see
/// [`super::bus::bus_tags`]), and buses shared as their kind allows.
pub(crate) fn validate_devices(
    list: &List<RawDeviceEntry>,
    buses: &[(&str, Option<BusTag>)],
    issues: &mut Vec<Issue>,
) -> Option<Vec<DeviceConfig>> {
    let devices = each(
        list,
        "at least one device is required",
        issues,
        |entry, issues| validate_device(entry, buses, issues),
    );
    let names = list
        .items
        .iter()
        .map(|entry| (&entry.device.value.name, &entry.device.keys));
    check_unique("device", names, issues);
    check_bus_sharing(list, buses, issues);
    collect_all(devices, list.len)
}

/// Keys that mean nothing on a serial_line bus, which has no registers and no unit ids.
const MODBUS_DEVICE_KEYS: [&str; 6] = [
    "unit_id",
    "byte_order",
    "word_order",
    "max_gap",
    "max_registers_per_read",
    "coalesce",
];

fn validate_device(
    entry: &RawDeviceEntry,
    buses: &[(&str, Option<BusTag>)],
    issues: &mut Vec<Issue>,
) -> Option<DeviceConfig> {
    let (raw, keys) = (&entry.device.value, &entry.device.keys);
    let name = identifier(keys, "name", &raw.name, None, issues);
    let bus = device_bus(keys, raw, buses, issues);
    // The kind of the device's bus, when known: it decides which keys apply.
    let tag = bus.as_ref().and_then(|(_, tag)| *tag);
    if tag == Some(BusTag::SerialLine) {
        let owner = "a device on a serial_line bus";
        refuse_keys(keys, &MODBUS_DEVICE_KEYS, owner, issues);
    }
    let unit_id = unit_id(keys, raw, tag, issues);
    let poll_interval = duration_at_least(
        keys,
        "poll_interval",
        raw.poll_interval,
        DEFAULT_POLL_INTERVAL,
        MIN_POLL_INTERVAL,
        issues,
    );
    let byte_order = choice(keys, "byte_order", &raw.byte_order, ByteOrder::Big, issues);
    let word_order = choice(keys, "word_order", &raw.word_order, WordOrder::Big, issues);
    let max_gap = number(
        keys,
        "max_gap",
        raw.max_gap,
        DEFAULT_MAX_GAP,
        0..=125,
        issues,
    );
    let max_registers_per_read = number(
        keys,
        "max_registers_per_read",
        raw.max_registers_per_read,
        MAX_REGISTERS_PER_READ,
        1..=i64::from(MAX_REGISTERS_PER_READ),
        issues,
    );
    let coalesce = optional(keys, "coalesce", raw.coalesce, true).map(|merge| {
        if merge {
            Coalesce::Merge
        } else {
            Coalesce::OnePerPoint
        }
    });
    let backoff_max = positive_duration(
        keys,
        "backoff_max",
        raw.backoff_max,
        DEFAULT_BACKOFF_MAX,
        issues,
    );
    let offline_after = offline_after(keys, raw.offline_after, issues);

    let defaults = PointDefaults {
        tag,
        encoding: byte_order
            .zip(word_order)
            .map(|(byte_order, word_order)| Encoding {
                byte_order,
                word_order,
            }),
        max_registers_per_read,
    };
    let points = require(keys, "points", &entry.points, issues)
        .and_then(|list| validate_points(list, &defaults, issues));

    Some(DeviceConfig {
        name: name?,
        bus: bus?.0,
        unit_id: unit_id?,
        poll_interval: poll_interval?,
        points: points?,
        planning: Planning {
            max_gap: max_gap?,
            max_registers_per_read: max_registers_per_read?,
            coalesce: coalesce?,
        },
        backoff_max: backoff_max?,
        offline_after: offline_after?,
    })
}

/// `unit_id`: 0 to 255, but not the broadcast address 0 on an rtu line.
fn unit_id(
    keys: &Keys,
    raw: &RawDevice,
    tag: Option<BusTag>,
    issues: &mut Vec<Issue>,
) -> Option<u8> {
    number(
        keys,
        "unit_id",
        raw.unit_id,
        DEFAULT_UNIT_ID,
        0..=255,
        issues,
    )
    .filter(|id| {
        let broadcast = *id == 0 && tag.is_some_and(BusTag::is_rtu);
        if broadcast {
            issues.push(Issue::value(
                keys.path_of("unit_id"),
                "unit id 0 is the rtu broadcast address, which no device answers: use 1 to 247",
            ));
        }
        !broadcast
    })
}

/// The device's `bus`: a name of `buses`, with its type when known.
fn device_bus(
    keys: &Keys,
    raw: &RawDevice,
    buses: &[(&str, Option<BusTag>)],
    issues: &mut Vec<Issue>,
) -> Option<(String, Option<BusTag>)> {
    let bus = require(keys, "bus", &raw.bus, issues)?;
    if let Some((_, tag)) = buses.iter().find(|(name, _)| *name == bus.as_str()) {
        return Some((bus.clone(), *tag));
    }
    let defined = if buses.is_empty() {
        "no buses are defined".to_owned()
    } else {
        let names: Vec<&str> = buses.iter().map(|(name, _)| *name).collect();
        format!("defined buses: {}", names.join(", "))
    };
    issues.push(Issue::value(
        keys.path_of("bus"),
        format!("unknown bus {bus:?} ({defined})"),
    ));
    None
}

/// A device's `offline_after`.
fn offline_after(keys: &Keys, raw: Option<i64>, issues: &mut Vec<Issue>) -> Option<u32> {
    let value = optional(keys, "offline_after", raw, i64::from(DEFAULT_OFFLINE_AFTER))?;
    if (1..=MAX_OFFLINE_AFTER).contains(&value) {
        u32::try_from(value).ok()
    } else {
        issues.push(Issue::value(
            keys.path_of("offline_after"),
            format!("must be between 1 and {MAX_OFFLINE_AFTER} failed polls, got {value}"),
        ));
        None
    }
}

/// Reports, after every device was read: two devices with one unit id on an rtu bus, and more
/// than one device on a serial_line bus (see the module header).
fn check_bus_sharing(
    devices: &List<RawDeviceEntry>,
    buses: &[(&str, Option<BusTag>)],
    issues: &mut Vec<Issue>,
) {
    let mut seen: HashMap<(&str, i64), KeyPath> = HashMap::new();
    let mut line_users: HashMap<&str, KeyPath> = HashMap::new();
    for entry in &devices.items {
        let (raw, keys) = (&entry.device.value, &entry.device.keys);
        let Some(bus) = raw.bus.as_deref() else {
            continue;
        };
        let Some((_, Some(tag))) = buses.iter().find(|(name, _)| *name == bus) else {
            continue;
        };
        if tag.is_rtu() && !keys.rejected.contains("unit_id") {
            let unit = raw.unit_id.unwrap_or(i64::from(DEFAULT_UNIT_ID));
            match seen.get(&(bus, unit)) {
                Some(first) => issues.push(
                    Issue::value(
                        if keys.present.contains("unit_id") {
                            keys.path_of("unit_id")
                        } else {
                            keys.path_of("bus")
                        },
                        format!("unit id {unit} is already used on rtu bus {bus:?}"),
                    )
                    .with_note(first.clone(), "first used by the device defined"),
                ),
                None => {
                    seen.insert((bus, unit), keys.path_of("name"));
                }
            }
        }
        if *tag == BusTag::SerialLine {
            match line_users.get(bus) {
                Some(first) => issues.push(
                    Issue::value(
                        keys.path_of("bus"),
                        format!("serial_line bus {bus:?} already carries a device: one instrument per line"),
                    )
                    .with_note(first.clone(), "by the device defined"),
                ),
                None => {
                    line_users.insert(bus, keys.path_of("name"));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::testing::{errors, with};
    use crate::config::testing::{fieldbus, VALID};

    #[test]
    fn unknown_bus_lists_the_defined_ones() {
        assert_eq!(
            errors(&with(&[("    bus: plc1", "    bus: plc9")])),
            [r#"12:10: devices[0].bus: unknown bus "plc9" (defined buses: plc1)"#]
        );
    }

    #[test]
    fn a_serial_line_bus_carries_one_device() {
        let text = with(&[
            (
                "  - name: plc1\n    type: tcp\n    host: 10.0.0.5\n",
                "  - name: plc1\n    type: serial_line\n    port: /dev/ttyS0\n",
            ),
            (
                "        table: holding\n        address: 10\n        type: f32\n",
                "        type: f64\n        regex: \"(.*)\"\n",
            ),
        ]);
        let second = text
            .split("devices:\n")
            .nth(1)
            .unwrap_or_default()
            .replace("name: boiler", "name: kettle");
        assert_eq!(
            errors(&format!("{text}{second}")),
            [
                r#"18:10: devices[1].bus: serial_line bus "plc1" already carries a device: one instrument per line (by the device defined at line 11)"#
            ]
        );
    }

    #[test]
    fn units_on_an_rtu_bus_are_unique() {
        let text = format!(
            "{}  - name: other\n    bus: plc1\n    points:\n      - name: x\n        table: coil\n        address: 0\n        type: bool\n",
            fieldbus("    type: rtu_over_tcp\n    host: gw\n", "")
        );
        assert_eq!(
            errors(&text),
            [
                r#"19:10: devices[1].bus: unit id 1 is already used on rtu bus "plc1" (first used by the device defined at line 11)"#
            ]
        );
    }

    #[test]
    fn duplicate_names_point_back_at_the_first() {
        let text = with(&[(
            "devices:\n",
            "  - name: plc1\n    type: tcp\n    host: b\ndevices:\n",
        )]);
        assert_eq!(
            errors(&text),
            [r#"10:11: buses[1].name: duplicate bus name "plc1" (first defined at line 7)"#]
        );
        let text = format!(
            "{VALID}      - name: temperature\n        table: input\n        address: 0\n        type: u16\n"
        );
        assert_eq!(
            errors(&text),
            [
                r#"18:15: devices[0].points[1].name: duplicate point name "temperature" (first defined at line 14)"#
            ]
        );
    }

    #[test]
    fn device_rules() {
        assert_eq!(
            errors(&with(&[(
                "    bus: plc1\n",
                "    bus: plc1\n    unit_id: 256\n    poll_interval: 5ms\n"
            )])),
            [
                "13:14: devices[0].unit_id: must be between 0 and 255, got 256",
                "14:20: devices[0].poll_interval: must be at least 10ms, got 5ms",
            ]
        );
        let no_points = VALID
            .split("    points:")
            .next()
            .unwrap_or_default()
            .to_owned();
        assert_eq!(
            errors(&format!("{no_points}    points: []\n")),
            ["13:13: devices[0].points: a device needs at least one point"]
        );
        assert_eq!(
            errors(&format!("{no_points}    name2: x\n")),
            [
                "11:5: devices[0].points: missing required key",
                r#"13:5: devices[0].name2: unknown key "name2" (did you mean "name"?)"#,
            ]
        );
    }
}
