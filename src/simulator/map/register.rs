//! One register of a simulator file: its raw keys (`table`, `address`, `type`, … and the one
//! motion key of `value`, `counter`, `sine` or `ramp`) and the checks that turn it into a
//! [`Served`] register or report every problem it has.
//!
//! Addressing and scaling are checked by the gateway's own point rules (`crate::config::checks`),
//! so a register and a point with the same keys agree. Each value a motion can produce at its
//! extremes (a static value, a counter's start, a sine's or ramp's bounds) is encoded once with the
//! encoder the simulator writes with ([`writable`]): a value the simulator could not write is
//! refused at load instead of leaving the register at zero.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value as Json;

use super::{typed, Motion};
use crate::config::checks::{
    decode_mapping, modbus_source, optional, positive, refuse_keys, require, require_data_type,
    scale_and_offset, Decoded, DurationValue, Footprint, Issue, KeyPath, Keys, PointDefaults,
    RawPoint,
};
use crate::config::{data_type_name, DataType, Encoding, ModbusSource};
use crate::modbus::decode::{self, DecodeError, Scaling};
use crate::sample::Value;

/// The keys that say how a register's value moves; a register has exactly one.
const MOTIONS: [&str; 4] = ["value", "counter", "sine", "ramp"];

// The register's shape, raw as the file's other sections are (every field an `Option`,
// enumerations as strings), worded by the checks below.

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRegister {
    table: Option<String>,
    address: Option<i64>,
    #[serde(rename = "type")]
    data_type: Option<String>,
    length: Option<i64>,
    bit: Option<i64>,
    byte_order: Option<String>,
    word_order: Option<String>,
    scale: Option<f64>,
    offset: Option<f64>,
    /// Checked against `type` (a bool, text or a number).
    value: Option<Json>,
    /// Decoded separately, key by key.
    counter: Option<Json>,
    sine: Option<Json>,
    ramp: Option<Json>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCounter {
    start: Option<f64>,
    step: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSine {
    min: Option<f64>,
    max: Option<f64>,
    period: Option<DurationValue>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRamp {
    from: Option<f64>,
    to: Option<f64>,
    period: Option<DurationValue>,
}

/// A valid register, before its unit is known.
#[derive(Debug)]
pub(super) struct Served {
    pub(super) source: ModbusSource,
    pub(super) data_type: DataType,
    pub(super) scaling: Scaling,
    pub(super) motion: Motion,
}

pub(super) fn check_register(
    register: &Decoded<RawRegister>,
    issues: &mut Vec<Issue>,
) -> (Option<Served>, Option<Footprint>) {
    let (raw, keys) = (&register.value, &register.keys);
    let data_type = require_data_type(keys, &raw.data_type, issues);
    // Table, address, length, bit and orders by the gateway's rules for a modbus point.
    let point = RawPoint {
        table: raw.table.clone(),
        address: raw.address,
        data_type: raw.data_type.clone(),
        length: raw.length,
        bit: raw.bit,
        byte_order: raw.byte_order.clone(),
        word_order: raw.word_order.clone(),
        ..RawPoint::default()
    };
    let defaults = PointDefaults {
        tag: None,
        encoding: Some(Encoding::default()),
        max_registers_per_read: None,
    };
    let (source, data_type, footprint) = modbus_source(keys, &point, data_type, &defaults, issues);
    let scaling = scaling(keys, raw, issues);
    let (motion, bounds) = motion(keys, raw, data_type, issues);
    // Only against a valid target: the check writes with the simulator's own encoder.
    let problems: Vec<Issue> = match (&source, data_type, scaling) {
        (Some(source), Some(data_type), Some(scaling)) => bounds
            .into_iter()
            .filter_map(|(path, bound)| {
                let value = match bound {
                    Bound::Static(value) => value,
                    Bound::Number(number) => typed(number, data_type),
                };
                let problem = writable(source, data_type, scaling, &value).err()?;
                Some(Issue::value(path, problem))
            })
            .collect(),
        _ => Vec::new(),
    };
    let fits = problems.is_empty();
    issues.extend(problems);
    let motion = motion.filter(|_| fits);
    let served = || {
        Some(Served {
            source: source?,
            data_type: data_type?,
            scaling: scaling?,
            motion: motion?,
        })
    };
    (served(), footprint)
}

/// `scale` and `offset`, by the gateway's rules for a point (`scale_and_offset`): finite, a scale
/// of 0 refused, neither on a string.
fn scaling(keys: &Keys, raw: &RawRegister, issues: &mut Vec<Issue>) -> Option<Scaling> {
    if raw.data_type.as_deref() == Some("string") {
        refuse_keys(keys, &["scale", "offset"], "a string register", issues);
        return Some(Scaling::IDENTITY);
    }
    let (scale, offset) = scale_and_offset(
        keys,
        raw.scale,
        raw.offset,
        "must not be 0: the register holds (value - offset) / scale",
        issues,
    );
    Some(Scaling::linear(scale?, offset?))
}

/// The one motion key of a register, decoded and checked on its own (not yet against the
/// type), with the values it can produce that are to be checked against the register: a static
/// value, a counter's start, the extremes of a sine or a ramp. The values come even when another
/// key of the motion is wrong, so their problems are reported in the same run.
fn motion(
    keys: &Keys,
    raw: &RawRegister,
    data_type: Option<DataType>,
    issues: &mut Vec<Issue>,
) -> (Option<Motion>, Vec<(KeyPath, Bound)>) {
    let written: Vec<&str> = MOTIONS
        .into_iter()
        .filter(|key| keys.present.contains(*key))
        .collect();
    let Some((first, others)) = written.split_first() else {
        issues.push(Issue::value(
            keys.path.clone(),
            "a register needs one of value, counter, sine or ramp",
        ));
        return (None, Vec::new());
    };
    for other in others {
        issues.push(Issue::key(
            keys.path_of(other),
            format!(
                "give only one of value, counter, sine or ramp: this register also has `{first}`"
            ),
        ));
    }
    if !others.is_empty() {
        return (None, Vec::new());
    }
    let path = keys.path_of(first);
    match *first {
        "value" => {
            let value = require(keys, "value", &raw.value, issues)
                .and_then(|value| static_value(&path, value, data_type, issues));
            match value {
                Some(value) => (
                    Some(Motion::Static(value.clone())),
                    vec![(path, Bound::Static(value))],
                ),
                None => (None, Vec::new()),
            }
        }
        "counter" => {
            let Some(Decoded { value: c, keys }) = require(keys, first, &raw.counter, issues)
                .and_then(|value| decode_mapping::<RawCounter>(value, &path, "a counter", issues))
            else {
                return (None, Vec::new());
            };
            let start = optional(&keys, "start", c.start, 0.0);
            let step = optional(&keys, "step", c.step, 1.0);
            let bounds = extremes(&keys, [("start", start)]);
            let motion = start
                .zip(step)
                .map(|(start, step)| Motion::Counter { start, step });
            (motion, bounds)
        }
        "sine" => {
            let Some(Decoded { value: w, keys }) = require(keys, first, &raw.sine, issues)
                .and_then(|value| decode_mapping::<RawSine>(value, &path, "a sine", issues))
            else {
                return (None, Vec::new());
            };
            let min = require(&keys, "min", &w.min, issues).copied();
            let max = require(&keys, "max", &w.max, issues).copied();
            let period = period(&keys, &w.period, issues);
            let bounds = extremes(&keys, [("min", min), ("max", max)]);
            let motion = || {
                Some(Motion::Sine {
                    min: min?,
                    max: max?,
                    period: period?,
                })
            };
            (motion(), bounds)
        }
        _ => {
            let Some(Decoded { value: r, keys }) = require(keys, first, &raw.ramp, issues)
                .and_then(|value| decode_mapping::<RawRamp>(value, &path, "a ramp", issues))
            else {
                return (None, Vec::new());
            };
            let from = require(&keys, "from", &r.from, issues).copied();
            let to = require(&keys, "to", &r.to, issues).copied();
            let period = period(&keys, &r.period, issues);
            let bounds = extremes(&keys, [("from", from), ("to", to)]);
            let motion = || {
                Some(Motion::Ramp {
                    from: from?,
                    to: to?,
                    period: period?,
                })
            };
            (motion(), bounds)
        }
    }
}

/// The numbers of a counter, sine or ramp that are known, to check against the register.
fn extremes<const N: usize>(
    keys: &Keys,
    values: [(&str, Option<f64>); N],
) -> Vec<(KeyPath, Bound)> {
    values
        .into_iter()
        .filter_map(|(key, value)| Some((keys.path_of(key), Bound::Number(value?))))
        .collect()
}

fn period(
    keys: &Keys,
    period: &Option<DurationValue>,
    issues: &mut Vec<Issue>,
) -> Option<Duration> {
    require(keys, "period", period, issues)
        .and_then(|period| positive(keys, "period", period.0, issues))
}

/// A static `value` as the register's type takes it: a bool for `bool`, text for `string`, a
/// number otherwise. When the type is not known (refused elsewhere), the value is taken as
/// written and not checked further.
fn static_value(
    path: &KeyPath,
    value: &Json,
    data_type: Option<DataType>,
    issues: &mut Vec<Issue>,
) -> Option<Value> {
    let data_type = data_type.map(data_type_name);
    let kind = |value: &Json| match value {
        Json::Null => "an empty value",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "a list",
        Json::Object(_) => "a mapping",
    };
    let problem = match (data_type, value) {
        (Some("bool"), Json::Bool(b)) => return Some(Value::Bool(*b)),
        (Some("bool"), other) => {
            format!("type bool takes true or false, got {}", kind(other))
        }
        (Some("string"), Json::String(text)) => return Some(Value::Str(Arc::from(text.as_str()))),
        (Some("string"), other) => format!(
            "type string takes text, got {} (quote it to use it as text)",
            kind(other)
        ),
        (_, Json::Number(number)) => {
            return Value::from_json(&number.to_string()).or_else(|| {
                issues.push(Issue::value(
                    path.clone(),
                    format!("unsupported number {number}"),
                ));
                None
            })
        }
        (Some(name), other) => format!("type {name} takes a number, got {}", kind(other)),
        (None, Json::Bool(b)) => return Some(Value::Bool(*b)),
        (None, Json::String(text)) => return Some(Value::Str(Arc::from(text.as_str()))),
        (None, other) => format!(
            "expected a number, true, false or text, got {}",
            kind(other)
        ),
    };
    issues.push(Issue::value(path.clone(), problem));
    None
}

/// A value a motion can produce, to check against the register before serving it.
#[derive(Debug)]
enum Bound {
    Static(Value),
    /// Converted to the type as [`Motion::value_at`] does.
    Number(f64),
}

/// Whether [`set_point`] can write `value` into `source`; the reason if not.
fn writable(
    source: &ModbusSource,
    data_type: DataType,
    scaling: Scaling,
    value: &Value,
) -> Result<(), String> {
    // Bit tables and single bits take the bool the type check already required.
    if source.table.is_bits() || source.bit.is_some() {
        return Ok(());
    }
    let name = data_type_name(data_type);
    decode::encode_registers(data_type, source.encoding, value, scaling)
        .map(drop)
        .map_err(|error| match error {
            DecodeError::OutOfRange { value, .. } if scaling.is_identity() => {
                format!("{value} is out of range for type {name}")
            }
            DecodeError::OutOfRange { value, .. } => {
                format!("{value} is out of range for type {name} once scale and offset are applied")
            }
            DecodeError::NotFinite => {
                "is not a finite number once scale and offset are applied".to_owned()
            }
            DecodeError::NotAscii => "must be ascii text without NUL characters".to_owned(),
            DecodeError::TooLong { len, registers } => {
                format!("text of {len} bytes does not fit {registers} register(s) (2 bytes each)")
            }
            other => other.to_string(),
        })
}
