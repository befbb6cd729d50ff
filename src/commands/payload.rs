//! The payload of a command (pure; bytes from the network, fuzzed in `fuzz/`).
//!
//! Two forms:
//! - an object `{"value": <number|bool|string>, "id": <string|integer>, "ts": <integer ms>}`:
//!   `value` is required, `id` (a correlation id, at most [`MAX_ID_LEN`] characters) and `ts`
//!   (when the command was issued, milliseconds since the Unix epoch) are optional. **Any other
//!   key is refused**: a misspelt `ts` must not silently switch the stale-command check off;
//! - a bare JSON scalar (`42`, `21.5`, `true`, `"AUTO"`): the value, without id or ts.
//!
//! `null`, arrays, nested objects as values, floats as `ts`, non-UTF-8 and non-JSON bytes are
//! errors. An error keeps the `id` when it could be read, so the error result can echo it.

use std::fmt;
use std::sync::Arc;

use serde_json::Value as Json;

use crate::sample::Value;

/// Longest accepted `id` (characters): enough for a UUID or a cloud job id with a prefix.
pub const MAX_ID_LEN: usize = 256;
/// Largest accepted payload: a command is a value and two short fields.
pub const MAX_PAYLOAD: usize = 16 * 1024;

/// A command's correlation id, kept as the JSON value it was sent as (`"a1"` or `17`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandId(Json);

impl CommandId {
    /// The id as JSON text: the key it is remembered by (so `"17"` and `17` differ).
    pub fn key(&self) -> String {
        self.0.to_string()
    }

    pub fn json(&self) -> &Json {
        &self.0
    }
}

impl fmt::Display for CommandId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A parsed command.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandPayload {
    pub value: Value,
    pub id: Option<CommandId>,
    /// When the sender issued it (ms since the Unix epoch).
    pub ts_ms: Option<i64>,
}

/// Why a payload was refused, with the id if it could be read.
#[derive(Debug, Clone, PartialEq)]
pub struct PayloadError {
    pub id: Option<CommandId>,
    pub reason: String,
}

impl fmt::Display for PayloadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

impl CommandPayload {
    pub fn parse(bytes: &[u8]) -> Result<CommandPayload, PayloadError> {
        let refuse = |id: Option<CommandId>, reason: String| PayloadError { id, reason };
        if bytes.len() > MAX_PAYLOAD {
            return Err(refuse(
                None,
                format!(
                    "payload of {} bytes is too large (at most {MAX_PAYLOAD})",
                    bytes.len()
                ),
            ));
        }
        let json: Json = serde_json::from_slice(bytes)
            .map_err(|e| refuse(None, format!("the payload is not json: {e}")))?;
        let Json::Object(mut fields) = json else {
            return match scalar(&json) {
                Ok(value) => Ok(CommandPayload {
                    value,
                    id: None,
                    ts_ms: None,
                }),
                Err(reason) => Err(refuse(None, reason)),
            };
        };
        let id = match fields.remove("id") {
            None => None,
            Some(id) => Some(parse_id(id).map_err(|reason| refuse(None, reason))?),
        };
        if let Some(key) = fields
            .keys()
            .find(|key| !matches!(key.as_str(), "value" | "ts"))
        {
            let reason = format!("unknown key {key:?} (a command has value, id and ts)");
            return Err(refuse(id, reason));
        }
        let ts_ms = match fields.remove("ts") {
            None => None,
            Some(Json::Number(n)) if n.as_i64().is_some() => n.as_i64(),
            Some(other) => {
                let reason = format!(
                    "ts must be an integer (milliseconds since the unix epoch), got {other}"
                );
                return Err(refuse(id, reason));
            }
        };
        let value = match fields.remove("value") {
            None => return Err(refuse(id, "the value is missing".to_owned())),
            Some(value) => scalar(&value).map_err(|reason| refuse(id.clone(), reason))?,
        };
        Ok(CommandPayload { value, id, ts_ms })
    }
}

fn parse_id(id: Json) -> Result<CommandId, String> {
    match &id {
        Json::String(text) if text.is_empty() => Err("id must not be empty".to_owned()),
        Json::String(text) if text.chars().count() > MAX_ID_LEN => {
            Err(format!("id must be at most {MAX_ID_LEN} characters"))
        }
        Json::String(_) => Ok(CommandId(id)),
        Json::Number(n) if n.is_i64() || n.is_u64() => Ok(CommandId(id)),
        other => Err(format!("id must be a string or an integer, got {other}")),
    }
}

/// A JSON scalar as a value.
fn scalar(json: &Json) -> Result<Value, String> {
    match json {
        Json::Bool(b) => Ok(Value::Bool(*b)),
        Json::String(s) => Ok(Value::Str(Arc::from(s.as_str()))),
        Json::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => Ok(Value::Int(i)),
            (None, Some(u), _) => Ok(Value::from_u64(u)),
            (None, None, Some(f)) if f.is_finite() => Ok(Value::Float(f)),
            _ => Err(format!("{n} is not a finite number")),
        },
        Json::Null => Err("the value must be a number, a boolean or a string, got null".to_owned()),
        Json::Array(_) | Json::Object(_) => Err(
            "the value must be a number, a boolean or a string, not a list or an object".to_owned(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ok(text: &str) -> CommandPayload {
        CommandPayload::parse(text.as_bytes()).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn err(text: &str) -> PayloadError {
        CommandPayload::parse(text.as_bytes()).expect_err(text)
    }

    #[test]
    fn the_object_form() {
        let c = ok(r#"{"value": 21.5, "id": "a1", "ts": 1763850000123}"#);
        assert_eq!(c.value, Value::Float(21.5));
        assert_eq!(
            c.id.as_ref().map(CommandId::key).as_deref(),
            Some(r#""a1""#)
        );
        assert_eq!(c.ts_ms, Some(1_763_850_000_123));
        let c = ok(r#"{"value": true, "id": 17}"#);
        assert_eq!(
            (c.value, c.id.map(|i| i.key())),
            (Value::Bool(true), Some("17".into()))
        );
        assert_eq!(ok(r#"{"value":"AUTO"}"#).value, Value::Str("AUTO".into()));
        assert_eq!(
            ok(r#"{"value": 18446744073709551615}"#).value,
            Value::UInt(u64::MAX)
        );
    }

    #[test]
    fn bare_scalars() {
        assert_eq!(
            ok("42"),
            CommandPayload {
                value: Value::Int(42),
                id: None,
                ts_ms: None
            }
        );
        assert_eq!(ok(" -1.5 ").value, Value::Float(-1.5));
        assert_eq!(ok("false").value, Value::Bool(false));
        assert_eq!(ok(r#""on""#).value, Value::Str("on".into()));
    }

    #[test]
    fn refusals_keep_the_id_when_it_could_be_read() {
        assert!(err("{").reason.starts_with("the payload is not json"));
        assert!(err("").reason.starts_with("the payload is not json"));
        assert_eq!(err("null").id, None);
        let e = err(r#"{"id": "x", "vaule": 1}"#);
        assert_eq!(e.id.map(|i| i.key()), Some(r#""x""#.into()));
        assert_eq!(
            e.reason,
            r#"unknown key "vaule" (a command has value, id and ts)"#
        );
        assert_eq!(err(r#"{"id": "x"}"#).reason, "the value is missing");
        assert_eq!(
            err(r#"{"id": "x", "value": 1, "ts": 1.5}"#).reason,
            "ts must be an integer (milliseconds since the unix epoch), got 1.5"
        );
        assert!(err(r#"{"id": "x", "value": [1]}"#).id.is_some());
        assert!(err(r#"{"id": {}, "value": 1}"#)
            .reason
            .starts_with("id must be"));
        assert!(err(r#"{"id": "", "value": 1}"#)
            .reason
            .starts_with("id must not"));
        assert!(err(r#"{"id": 1.5, "value": 1}"#)
            .reason
            .starts_with("id must be"));
        assert!(err("[1]").reason.contains("not a list"));
        assert!(CommandPayload::parse(&[0xff, 0xfe]).is_err());
        assert!(CommandPayload::parse(&vec![b' '; MAX_PAYLOAD + 1])
            .unwrap_err()
            .reason
            .contains("too large"));
    }

    proptest! {
        /// Any bytes parse or are refused with a reason; never a panic.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Err(e) = CommandPayload::parse(&bytes) {
                prop_assert!(!e.reason.is_empty());
            }
        }

        /// What a sender builds with a JSON library parses back to the same command.
        #[test]
        fn objects_round_trip(value in -1e12f64..1e12, id in "[a-z0-9-]{1,40}", ts in any::<i64>()) {
            let text = serde_json::json!({"value": value, "id": id, "ts": ts}).to_string();
            let c = CommandPayload::parse(text.as_bytes()).unwrap();
            prop_assert_eq!(c.ts_ms, Some(ts));
            prop_assert_eq!(c.id.map(|i| i.key()), Some(format!("{id:?}")));
            prop_assert_eq!(c.value.as_f64(), Some(value));
        }
    }
}
