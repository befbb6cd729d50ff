//! From the YAML tree to the raw structs of each section, one node at a time, so that one bad
//! value never hides another.
//!
//! Design:
//! - serde-saphyr first reads the whole text into a [`serde_json::Value`] tree (values only).
//!   This module then decodes that tree **section by section, item by item, key by key**: each
//!   bus, device and point is its own `deserialize` call, and inside a mapping every key is first
//!   tried on its own (`{key: value}` into the struct). A key that fails is reported with its own
//!   path and dropped, and the rest of the mapping still decodes. A single serde pass would stop
//!   at the first error of the file; this way `check` lists them all.
//! - Each section's raw struct (`RawBus`, `RawPoint`, ... in the section's file) mirrors the
//!   YAML with every field an `Option`: serde never reports "missing field". Required keys,
//!   defaults, ranges and cross references are the section's rules, which know which keys were
//!   present ([`Keys::present`]) and which were already reported ([`Keys::rejected`]) so a bad
//!   value is not reported a second time as missing.
//! - Every raw struct has `deny_unknown_fields`. Unknown keys are caught a step earlier, with the
//!   struct's field list read from its `Deserialize` impl ([`field_names`]), so all of them are
//!   reported, each with a "did you mean" for typos; `deny_unknown_fields` stays as the backstop.
//! - Enumerations (`table`, `type`, `publish`, `parity`, ...) stay strings here: the rules word
//!   those errors better than serde's "unknown variant" (`super::rules::Choice`).
//! - Integers are read as `i64` and range-checked later, so `port: 70000` or `address: -1` get
//!   "must be between …" rather than a type name.
//!
//! serde's own messages name Rust types (`expected i64`); [`humanize`] rewrites them in
//! YAML terms before they reach the user.

use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

use serde::de::{self, DeserializeOwned, Visitor};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::error::Issue;
use super::path::KeyPath;
use super::units::{self, UnitError};

/// A bus `port`: `502` for tcp, `/dev/ttyUSB0` for serial buses. Which one is allowed depends
/// on the bus type, which validation knows; here both are accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PortValue {
    Number(i64),
    Path(String),
}

impl<'de> Deserialize<'de> for PortValue {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PortVisitor;

        impl Visitor<'_> for PortVisitor {
            type Value = PortValue;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a port number or a serial device path")
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<PortValue, E> {
                Ok(PortValue::Path(text.to_owned()))
            }

            fn visit_u64<E: de::Error>(self, n: u64) -> Result<PortValue, E> {
                Ok(PortValue::Number(i64::try_from(n).unwrap_or(i64::MAX)))
            }

            fn visit_i64<E: de::Error>(self, n: i64) -> Result<PortValue, E> {
                Ok(PortValue::Number(n))
            }
        }

        deserializer.deserialize_any(PortVisitor)
    }
}

/// A duration written as `500ms`, `1s`, `1.5s`, `2m` or `1h` (see [`units::parse_duration`]).
/// A bare number is refused with the same message: its unit would be a guess.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DurationValue(pub Duration);

impl<'de> Deserialize<'de> for DurationValue {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DurationVisitor;

        impl Visitor<'_> for DurationVisitor {
            type Value = DurationValue;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as 500ms, 1s, 2m or 1h")
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<DurationValue, E> {
                units::parse_duration(text)
                    .map(DurationValue)
                    .map_err(E::custom)
            }

            fn visit_u64<E: de::Error>(self, n: u64) -> Result<DurationValue, E> {
                Err(E::custom(UnitError::InvalidDuration(n.to_string())))
            }

            fn visit_i64<E: de::Error>(self, n: i64) -> Result<DurationValue, E> {
                Err(E::custom(UnitError::InvalidDuration(n.to_string())))
            }

            fn visit_f64<E: de::Error>(self, n: f64) -> Result<DurationValue, E> {
                Err(E::custom(UnitError::InvalidDuration(n.to_string())))
            }
        }

        deserializer.deserialize_any(DurationVisitor)
    }
}

/// A size written as `4096`, `512KiB` or `256MiB` (see [`units::parse_size`]); a bare integer
/// is bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SizeValue(pub u64);

impl<'de> Deserialize<'de> for SizeValue {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SizeVisitor;

        impl Visitor<'_> for SizeVisitor {
            type Value = SizeValue;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size such as 4096, 512KiB or 256MiB")
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<SizeValue, E> {
                units::parse_size(text).map(SizeValue).map_err(E::custom)
            }

            fn visit_u64<E: de::Error>(self, n: u64) -> Result<SizeValue, E> {
                Ok(SizeValue(n))
            }

            fn visit_i64<E: de::Error>(self, n: i64) -> Result<SizeValue, E> {
                u64::try_from(n)
                    .map(SizeValue)
                    .map_err(|_| E::custom(UnitError::InvalidSize(n.to_string())))
            }

            fn visit_f64<E: de::Error>(self, n: f64) -> Result<SizeValue, E> {
                Err(E::custom(UnitError::InvalidSize(n.to_string())))
            }
        }

        deserializer.deserialize_any(SizeVisitor)
    }
}

/// What the decoder learnt about one mapping besides its values.
#[derive(Debug, Clone, Default)]
pub(crate) struct Keys {
    /// Path of the mapping itself, e.g. `buses[1]`.
    pub path: KeyPath,
    /// Every key written in the mapping, including those with an empty value: lets validation
    /// say "missing" for an absent key and "empty" for `host:` with nothing after it.
    pub present: BTreeSet<String>,
    /// Keys already reported here: a refused value, an unknown key, or the key an unknown one
    /// was probably meant to be (`adress` → `address`). Validation neither reports them as
    /// missing nor substitutes their default.
    pub rejected: BTreeSet<String>,
}

impl Keys {
    pub(crate) fn path_of(&self, key: &str) -> KeyPath {
        self.path.key(key)
    }
}

/// A decoded mapping: its values, and where they came from.
#[derive(Debug)]
pub(crate) struct Decoded<T> {
    pub value: T,
    pub keys: Keys,
}

/// A list (`buses`, `devices`, `points`) whose items were decoded one by one.
#[derive(Debug)]
pub(crate) struct List<T> {
    pub path: KeyPath,
    /// Number of items written, including those that could not be decoded: "at least one"
    /// checks count what the user wrote, not what survived.
    pub len: usize,
    pub items: Vec<T>,
}

/// Decodes the top-level section `key`. A section that is not a mapping is reported here and
/// marked rejected, so validation does not also call it missing.
pub(crate) fn decode_section<T: DeserializeOwned>(
    value: &Option<Value>,
    key: &str,
    keys: &mut Keys,
    issues: &mut Vec<Issue>,
) -> Option<Decoded<T>> {
    let value = value.as_ref()?;
    let what = format!("the {key} section");
    let decoded = decode_mapping(value, &keys.path_of(key), &what, issues);
    if decoded.is_none() {
        keys.rejected.insert(key.to_owned());
    }
    decoded
}

pub(crate) fn decode_list<T>(
    items: Vec<Value>,
    path: KeyPath,
    mut decode_item: impl FnMut(Value, KeyPath, &mut Vec<Issue>) -> Option<T>,
    issues: &mut Vec<Issue>,
) -> List<T> {
    let len = items.len();
    let items = items
        .into_iter()
        .enumerate()
        .filter_map(|(index, value)| decode_item(value, path.index(index), issues))
        .collect();
    List { path, len, items }
}

/// Decodes a whole document (its top level) into `T` with [`decode_mapping`]. An empty file is
/// one problem, `if_empty` (which says what the file should hold), not "expected a mapping, got
/// null".
pub(crate) fn decode_document<T: DeserializeOwned>(
    document: &Value,
    what: &str,
    if_empty: &str,
    issues: &mut Vec<Issue>,
) -> Option<Decoded<T>> {
    let root = KeyPath::root();
    if document.is_null() {
        issues.push(Issue::value(root, if_empty));
        return None;
    }
    decode_mapping(document, &root, what, issues)
}

/// Decodes one mapping into `T`, key by key (see the module doc). `what` names the node in the
/// error when it is not a mapping at all ("expected a point …").
pub(crate) fn decode_mapping<T: DeserializeOwned>(
    value: &Value,
    path: &KeyPath,
    what: &str,
    issues: &mut Vec<Issue>,
) -> Option<Decoded<T>> {
    let Value::Object(map) = value else {
        issues.push(Issue::value(
            path.clone(),
            format!(
                "expected {what} (a mapping of keys to values), got {}",
                describe(value)
            ),
        ));
        return None;
    };
    let fields = field_names::<T>();
    let mut keys = Keys {
        path: path.clone(),
        ..Keys::default()
    };
    let mut accepted = Map::new();
    for (key, item) in map {
        keys.present.insert(key.clone());
        let key_path = path.key(key);
        if !fields.contains(&key.as_str()) {
            let near = closest(key, fields);
            issues.push(Issue::key(key_path, unknown_key_message(key, near, fields)));
            keys.rejected.insert(key.clone());
            // `adress: 0` was reported with "did you mean address": reporting `address` as
            // missing too would be the same mistake twice.
            if let Some(near) = near.filter(|near| !map.contains_key(*near)) {
                keys.rejected.insert(near.to_owned());
            }
            continue;
        }
        let alone = Map::from_iter([(key.clone(), item.clone())]);
        match serde_json::from_value::<T>(Value::Object(alone)) {
            Ok(_) => {
                accepted.insert(key.clone(), item.clone());
            }
            Err(error) => {
                issues.push(Issue::value(key_path, humanize(&error.to_string())));
                keys.rejected.insert(key.clone());
            }
        }
    }
    // Each accepted key decoded on its own and the fields are independent, so this succeeds;
    // should it not, the problem is still reported rather than lost.
    match serde_json::from_value::<T>(Value::Object(accepted)) {
        Ok(value) => Some(Decoded { value, keys }),
        Err(error) => {
            issues.push(Issue::value(path.clone(), humanize(&error.to_string())));
            None
        }
    }
}

/// `unknown key "pol_interval" (did you mean "poll_interval"?)`, or the list of valid keys when
/// nothing is close.
fn unknown_key_message(key: &str, near: Option<&str>, fields: &[&str]) -> String {
    match near {
        Some(near) => format!("unknown key {key:?} (did you mean {near:?}?)"),
        None => format!(
            "unknown key {key:?} (expected one of: {})",
            fields.join(", ")
        ),
    }
}

/// The candidate nearest to `word` if it is a plausible typo of it: at most one edit for short
/// words, two up to eight characters, three beyond. Ties go to the earlier candidate.
pub(crate) fn closest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let limit = match word.chars().count() {
        0..=4 => 1,
        5..=8 => 2,
        _ => 3,
    };
    candidates
        .iter()
        .map(|candidate| (edit_distance(&word.to_lowercase(), candidate), *candidate))
        .filter(|(distance, _)| *distance <= limit)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate)
}

/// Optimal string alignment distance: insertions, deletions, substitutions and swaps of two
/// neighbours (`qso` → `qos` is one edit) each cost one.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // rows[i][j]: distance between a[..i] and b[..j]
    let mut rows = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in rows.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in rows[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (rows[i - 1][j] + 1)
                .min(rows[i][j - 1] + 1)
                .min(rows[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(rows[i - 2][j - 2] + 1);
            }
            rows[i][j] = best;
        }
    }
    rows[a.len()][b.len()]
}

/// The kind of a YAML value, for messages.
pub(crate) fn describe(value: &Value) -> &'static str {
    match value {
        Value::Null => "an empty value",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// Rewrites serde's messages in YAML terms: `expected i64` → `expected an integer`, `map` →
/// `mapping`, and adds a hint where the cause is a common YAML surprise.
pub(crate) fn humanize(message: &str) -> String {
    let mut message = message
        .replace("expected i64", "expected an integer")
        .replace("expected f64", "expected a number")
        .replace("expected a sequence", "expected a list")
        .replace("invalid type: sequence", "invalid type: list")
        .replace("invalid type: map", "invalid type: mapping")
        .replace("invalid type: unit value", "invalid type: empty value");
    let got_non_finite = [r#"".nan""#, r#"".inf""#, r#""-.inf""#]
        .iter()
        .any(|text| message.contains(text));
    if message.ends_with("expected a number") && got_non_finite {
        message.push_str(" (it must be finite)");
    }
    let got_scalar = ["integer `", "floating point `", "boolean `"]
        .iter()
        .any(|kind| message.starts_with(&format!("invalid type: {kind}")));
    if message.ends_with("expected a string") && got_scalar {
        message.push_str(" (quote it to use it as text)");
    }
    message
}

/// The field names of a struct, read from its derived `Deserialize` impl: the derive passes
/// them to `Deserializer::deserialize_struct`, which this one records and then gives up.
pub(crate) fn field_names<T: DeserializeOwned>() -> &'static [&'static str] {
    struct Recorder<'a>(&'a mut &'static [&'static str]);

    impl<'de> de::Deserializer<'de> for Recorder<'_> {
        type Error = de::value::Error;

        fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("not a struct"))
        }

        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            _visitor: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = fields;
            Err(de::Error::custom("fields recorded"))
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
            identifier ignored_any
        }
    }

    let mut fields: &'static [&'static str] = &[];
    // The error is the expected way out: the recorder never produces a value.
    let _ = T::deserialize(Recorder(&mut fields));
    fields
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::bus::RawBus;
    use crate::config::decode_sections as decode;
    use crate::config::point::RawPoint;
    use crate::config::RawRoot;
    use serde_json::json;

    #[test]
    fn reads_field_names_from_the_derive() {
        assert_eq!(
            field_names::<RawBus>(),
            &[
                "name",
                "type",
                "host",
                "port",
                "timeout",
                "turnaround_delay",
                "baud_rate",
                "parity",
                "data_bits",
                "stop_bits",
                "terminator",
                "poll"
            ]
        );
        assert_eq!(
            field_names::<RawRoot>(),
            &[
                "gateway",
                "uplink",
                "buses",
                "devices",
                "store",
                "metrics",
                "commands",
                "local",
                "console",
                "remote_config"
            ]
        );
    }

    #[test]
    fn decodes_a_mapping_key_by_key_and_reports_each_bad_key() {
        let mut issues = Vec::new();
        let value = json!({
            "name": "plc1",
            "port": "five",
            "timeout": "5 parsecs",
            "hots": "x",
            "host": null,
        });
        let bus =
            decode_mapping::<RawBus>(&value, &KeyPath::root().key("bus"), "a bus", &mut issues)
                .unwrap();
        assert_eq!(bus.value.name.as_deref(), Some("plc1"));
        assert_eq!(bus.value.port, Some(PortValue::Path("five".to_owned())));
        assert_eq!(bus.value.host, None);
        let found: Vec<_> = issues
            .iter()
            .map(|i| format!("{}: {}", i.path, i.message))
            .collect();
        assert_eq!(
            found,
            vec![
                r#"bus.hots: unknown key "hots" (did you mean "host"?)"#,
                r#"bus.timeout: invalid duration "5 parsecs": expected a number followed by ms, s, m or h"#,
            ]
        );
        assert!(bus.keys.present.contains("host"));
        assert!(bus.keys.rejected.contains("timeout"));
        assert!(!bus.keys.rejected.contains("host"));
    }

    #[test]
    fn a_non_mapping_is_one_issue() {
        let mut issues = Vec::new();
        let point =
            decode_mapping::<RawPoint>(&json!("temp"), &KeyPath::root(), "a point", &mut issues);
        assert!(point.is_none());
        assert_eq!(
            issues[0].message,
            "expected a point (a mapping of keys to values), got a string"
        );
    }

    #[test]
    fn one_broken_point_does_not_hide_the_others() {
        let document = json!({
            "devices": [
                {"name": "a", "points": [{"name": "p", "qos": "high"}, 7, {"nme": "q"}]},
                {"name": "b", "poll_interval": 5},
            ]
        });
        let mut issues = Vec::new();
        let raw = decode(&document, &mut issues).unwrap();
        let found: Vec<_> = issues.iter().map(|i| i.path.to_string()).collect();
        assert_eq!(
            found,
            vec![
                "devices[0].points[0].qos",
                "devices[0].points[1]",
                "devices[0].points[2].nme",
                "devices[1].poll_interval",
            ]
        );
        let devices = raw.devices.unwrap();
        assert_eq!(devices.len, 2);
        let points = devices.items[0].points.as_ref().unwrap();
        assert_eq!(points.len, 3);
        assert_eq!(points.items.len(), 2);
    }

    #[test]
    fn durations_need_a_unit() {
        let parse = |value: Value| serde_json::from_value::<DurationValue>(value);
        assert_eq!(
            parse(json!("1.5s")).unwrap(),
            DurationValue(Duration::from_millis(1500))
        );
        assert_eq!(
            parse(json!(30)).unwrap_err().to_string(),
            r#"invalid duration "30": expected a number followed by ms, s, m or h"#
        );
    }

    #[test]
    fn suggests_only_plausible_typos() {
        let fields = ["name", "bus", "unit_id", "poll_interval", "points"];
        assert_eq!(closest("pol_interval", &fields), Some("poll_interval"));
        assert_eq!(closest("unitid", &fields), Some("unit_id"));
        assert_eq!(closest("Name", &fields), Some("name"));
        assert_eq!(closest("colour", &fields), None);
        assert_eq!(closest("qso", &["qos"]), Some("qos"));
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    #[test]
    fn humanizes_serde_wording() {
        assert_eq!(
            humanize("invalid type: string \".nan\", expected f64"),
            "invalid type: string \".nan\", expected a number (it must be finite)"
        );
        assert_eq!(
            humanize("invalid type: integer `42`, expected a string"),
            "invalid type: integer `42`, expected a string (quote it to use it as text)"
        );
        assert_eq!(
            humanize("invalid type: map, expected a sequence"),
            "invalid type: mapping, expected a list"
        );
    }
}
