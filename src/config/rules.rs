//! The rules every section shares: required and optional keys, ranges, names, hosts, file paths,
//! unique names, and the one way a word in the file becomes an enum ([`Choice`]).
//!
//! Each rule checks one key of a decoded mapping ([`Keys`]), pushes an [`Issue`] at that key when
//! the value is refused, and returns `None` then, so the checks that depend on the value are
//! skipped instead of reporting the same mistake again. A key the decoder already refused
//! ([`Keys::rejected`]) is neither reported again nor replaced by its default.

use std::collections::HashMap;
use std::net::IpAddr;
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::Duration;

use super::decode::{closest, DurationValue, Keys, List};
use super::error::Issue;
use super::path::KeyPath;
use super::units::format_duration;

/// A required key's value. Reports it as missing, or as empty when written without a value,
/// unless the value was already refused by the decoder.
pub(crate) fn require<'a, T>(
    keys: &Keys,
    key: &str,
    value: &'a Option<T>,
    issues: &mut Vec<Issue>,
) -> Option<&'a T> {
    if value.is_none() && !keys.rejected.contains(key) {
        if keys.present.contains(key) {
            issues.push(Issue::key(keys.path_of(key), "a value is required"));
        } else {
            issues.push(Issue::missing(keys.path_of(key), "missing required key"));
        }
    }
    value.as_ref()
}

/// An optional key's value or its default; `None` if the written value was refused, so later
/// checks do not run on a default the user did not ask for.
pub(crate) fn optional<T>(keys: &Keys, key: &str, value: Option<T>, default: T) -> Option<T> {
    if keys.rejected.contains(key) {
        None
    } else {
        Some(value.unwrap_or(default))
    }
}

/// An optional key without a default: `Some(None)` when not written, `Some(Some(_))` when
/// `check` accepts the value, `None` when `check` or the decoder refused it.
pub(crate) fn when_written<T, U>(
    keys: &Keys,
    key: &str,
    value: &Option<T>,
    check: impl FnOnce(&T) -> Option<U>,
) -> Option<Option<U>> {
    match value {
        Some(value) => check(value).map(Some),
        None if keys.rejected.contains(key) => None,
        None => Some(None),
    }
}

pub(crate) fn in_range(
    keys: &Keys,
    key: &str,
    value: i64,
    min: i64,
    max: i64,
    issues: &mut Vec<Issue>,
) -> Option<i64> {
    if (min..=max).contains(&value) {
        Some(value)
    } else {
        issues.push(Issue::value(
            keys.path_of(key),
            format!("must be between {min} and {max}, got {value}"),
        ));
        None
    }
}

/// An optional integer key in `range`, as a `T`; `default` when absent.
pub(crate) fn number<T: Copy + Into<i64> + TryFrom<i64>>(
    keys: &Keys,
    key: &str,
    value: Option<i64>,
    default: T,
    range: RangeInclusive<i64>,
    issues: &mut Vec<Issue>,
) -> Option<T> {
    optional(keys, key, value, default.into())
        .and_then(|n| in_range(keys, key, n, *range.start(), *range.end(), issues))
        .and_then(|n| T::try_from(n).ok())
}

pub(crate) fn port_number(
    keys: &Keys,
    key: &str,
    value: i64,
    issues: &mut Vec<Issue>,
) -> Option<u16> {
    in_range(keys, key, value, 1, 65_535, issues).and_then(|port| u16::try_from(port).ok())
}

pub(crate) fn positive(
    keys: &Keys,
    key: &str,
    value: Duration,
    issues: &mut Vec<Issue>,
) -> Option<Duration> {
    if value.is_zero() {
        issues.push(Issue::value(keys.path_of(key), "must be greater than 0s"));
        None
    } else {
        Some(value)
    }
}

/// An optional duration key greater than 0; `default` when absent.
pub(crate) fn positive_duration(
    keys: &Keys,
    key: &str,
    value: Option<DurationValue>,
    default: Duration,
    issues: &mut Vec<Issue>,
) -> Option<Duration> {
    optional(keys, key, value.map(|d| d.0), default).and_then(|d| positive(keys, key, d, issues))
}

/// An optional duration key of at least `min`; `default` when absent.
pub(crate) fn duration_at_least(
    keys: &Keys,
    key: &str,
    value: Option<DurationValue>,
    default: Duration,
    min: Duration,
    issues: &mut Vec<Issue>,
) -> Option<Duration> {
    let duration = optional(keys, key, value.map(|d| d.0), default)?;
    if duration >= min {
        return Some(duration);
    }
    issues.push(Issue::value(
        keys.path_of(key),
        format!(
            "must be at least {}, got {}",
            format_duration(min),
            format_duration(duration)
        ),
    ));
    None
}

pub(crate) fn finite(keys: &Keys, key: &str, value: f64, issues: &mut Vec<Issue>) -> Option<f64> {
    if value.is_finite() {
        Some(value)
    } else {
        issues.push(Issue::value(keys.path_of(key), "must be a finite number"));
        None
    }
}

/// A required name or id: `[A-Za-z0-9_-]+`, at most `max_len` characters. These end up in MQTT
/// topics and client ids, where `/`, `+`, `#` and spaces would break or widen subscriptions.
pub(crate) fn identifier(
    keys: &Keys,
    key: &str,
    value: &Option<String>,
    max_len: Option<usize>,
    issues: &mut Vec<Issue>,
) -> Option<String> {
    let value = require(keys, key, value, issues)?;
    if !is_identifier(value) {
        issues.push(Issue::value(
            keys.path_of(key),
            format!("invalid {key} {value:?}: use only letters, digits, \"_\" and \"-\""),
        ));
        return None;
    }
    if let Some(max_len) = max_len.filter(|max| value.len() > *max) {
        issues.push(Issue::value(
            keys.path_of(key),
            format!("must be at most {max_len} characters, got {}", value.len()),
        ));
        return None;
    }
    Some(value.clone())
}

pub(crate) fn is_identifier(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// An IP address, or a DNS name: dot-separated labels of letters, digits, `-` and `_` (not
/// strictly DNS, but common in container and lab networks), with an optional final dot.
pub(crate) fn is_host(text: &str) -> bool {
    if text.parse::<IpAddr>().is_ok() {
        return true;
    }
    let name = text.strip_suffix('.').unwrap_or(text);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// An optional key naming a file: `Some(None)` when absent, `None` when it is not a usable path
/// (empty, or with a nul character). Whether the file exists is [`super::files`]' business.
pub(crate) fn file_path(
    keys: &Keys,
    key: &str,
    value: &Option<String>,
    issues: &mut Vec<Issue>,
) -> Option<Option<PathBuf>> {
    match value {
        Some(text) if text.is_empty() || text.contains('\0') => {
            issues.push(Issue::value(keys.path_of(key), "must be a file path"));
            None
        }
        other => Some(other.as_ref().map(PathBuf::from)),
    }
}

/// Reports every key of `not_for` that is written in the mapping: `baud_rate` on a tcp bus is a
/// mistake (a wrong `type`, or a copy-paste), not something to ignore.
pub(crate) fn refuse_keys(keys: &Keys, not_for: &[&str], owner: &str, issues: &mut Vec<Issue>) {
    for key in not_for {
        if keys.present.contains(*key) && !keys.rejected.contains(*key) {
            issues.push(Issue::key(
                keys.path_of(key),
                format!("`{key}` does not apply to {owner}"),
            ));
        }
    }
}

/// Reports the second and later uses of a name, pointing back at the first.
pub(crate) fn check_unique<'a>(
    what: &str,
    items: impl Iterator<Item = (&'a Option<String>, &'a Keys)>,
    issues: &mut Vec<Issue>,
) {
    let mut first: HashMap<&str, KeyPath> = HashMap::new();
    for (name, keys) in items {
        let Some(name) = name.as_deref() else {
            continue;
        };
        let path = keys.path_of("name");
        match first.get(name) {
            Some(first_path) => issues.push(
                Issue::value(path, format!("duplicate {what} name {name:?}"))
                    .with_note(first_path.clone(), "first defined"),
            ),
            None => {
                first.insert(name, path);
            }
        }
    }
}

/// Checks each item of a list that must not be empty; `empty` is the message when it is.
pub(crate) fn each<I, T>(
    list: &List<I>,
    empty: &str,
    issues: &mut Vec<Issue>,
    mut check: impl FnMut(&I, &mut Vec<Issue>) -> T,
) -> Vec<T> {
    if list.len == 0 {
        issues.push(Issue::value(list.path.clone(), empty));
    }
    list.items.iter().map(|item| check(item, issues)).collect()
}

/// All items, or `None` if any was invalid or could not be decoded at all.
pub(crate) fn collect_all<T>(items: Vec<Option<T>>, written: usize) -> Option<Vec<T>> {
    let items: Option<Vec<T>> = items.into_iter().collect();
    items.filter(|items| items.len() == written)
}

/// An enum that a key names with a word (`parity: even`). Every such key is read through
/// [`choice`] or [`required_choice`], so all of them refuse an unknown word alike:
/// `unknown parity "evn": expected none, even or odd (did you mean "even"?)`.
pub(crate) trait Choice: Copy + PartialEq + 'static {
    /// What the words name, in messages (`parity`, `session mode`).
    const WHAT: &'static str;
    /// Every word with its value, in the order messages list them.
    const WORDS: &'static [(&'static str, Self)];

    fn parse(word: &str) -> Option<Self> {
        Self::WORDS
            .iter()
            .find(|(written, _)| *written == word)
            .map(|(_, value)| *value)
    }

    /// The word for this value, as the file writes it.
    fn word(self) -> &'static str {
        Self::WORDS
            .iter()
            .find(|(_, value)| *value == self)
            .map_or(Self::WHAT, |(word, _)| word)
    }
}

/// An optional key naming a `T`: `default` when absent, `None` when refused.
pub(crate) fn choice<T: Choice>(
    keys: &Keys,
    key: &str,
    value: &Option<String>,
    default: T,
    issues: &mut Vec<Issue>,
) -> Option<T> {
    match value {
        Some(word) => parse_word(keys, key, word, issues),
        None => optional(keys, key, None, default),
    }
}

/// A required key naming a `T`.
pub(crate) fn required_choice<T: Choice>(
    keys: &Keys,
    key: &str,
    value: &Option<String>,
    issues: &mut Vec<Issue>,
) -> Option<T> {
    require(keys, key, value, issues).and_then(|word| parse_word(keys, key, word, issues))
}

fn parse_word<T: Choice>(keys: &Keys, key: &str, word: &str, issues: &mut Vec<Issue>) -> Option<T> {
    let parsed = T::parse(word);
    if parsed.is_none() {
        let words: Vec<&str> = T::WORDS.iter().map(|(word, _)| *word).collect();
        issues.push(Issue::value(
            keys.path_of(key),
            unknown_choice(T::WHAT, word, &words),
        ));
    }
    parsed
}

/// `unknown table "holdings": expected coil, discrete_input, input or holding (did you mean
/// "holding"?)`
pub(crate) fn unknown_choice(what: &str, value: &str, choices: &[&str]) -> String {
    let hint = closest(value, choices)
        .map(|near| format!(" (did you mean {near:?}?)"))
        .unwrap_or_default();
    format!(
        "unknown {what} {value:?}: expected {}{hint}",
        either(choices)
    )
}

/// An enum that a key names with a number (`stop_bits: 2`, `qos: 1`): [`Choice`] for numbers.
/// Read through [`numbered`], which refuses any other number as `must be 0, 1 or 2, got 3`.
pub(crate) trait Numbered: Copy + 'static {
    /// Every number with its value, in the order messages list them.
    const NUMBERS: &'static [(i64, Self)];
}

/// An optional key numbering a `T`: `default` when absent, `None` when refused.
pub(crate) fn numbered<T: Numbered>(
    keys: &Keys,
    key: &str,
    value: Option<i64>,
    default: T,
    issues: &mut Vec<Issue>,
) -> Option<T> {
    let Some(number) = value else {
        return optional(keys, key, None, default);
    };
    let found = T::NUMBERS.iter().find(|(written, _)| *written == number);
    if found.is_none() {
        let numbers: Vec<String> = T::NUMBERS.iter().map(|(n, _)| n.to_string()).collect();
        issues.push(Issue::value(
            keys.path_of(key),
            format!("must be {}, got {number}", either(&numbers)),
        ));
    }
    found.map(|(_, value)| *value)
}

/// `a`, `a or b`, `a, b or c`.
fn either<S: AsRef<str>>(words: &[S]) -> String {
    let words: Vec<&str> = words.iter().map(AsRef::as_ref).collect();
    match words.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => words.join(", "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::{errors, with};

    #[test]
    fn names_are_identifiers() {
        assert!(is_identifier("plant1-gw_01"));
        for bad in ["", "a b", "a/b", "a+b", "a#b", "ä", "a.b"] {
            assert!(!is_identifier(bad), "{bad:?}");
        }
        assert_eq!(
            errors(&with(&[("  - name: boiler", "  - name: boiler/1")])),
            [
                r#"11:11: devices[0].name: invalid name "boiler/1": use only letters, digits, "_" and "-""#
            ]
        );
    }

    #[test]
    fn hosts() {
        for good in [
            "10.0.0.5",
            "::1",
            "plc-1.local",
            "plc_1",
            "a.b.",
            "localhost",
        ] {
            assert!(is_host(good), "{good:?}");
        }
        for bad in ["", "a b", "a..b", "http://x", "10.0.0.5:502", "[::1]", "."] {
            assert!(!is_host(bad), "{bad:?}");
        }
    }
}
