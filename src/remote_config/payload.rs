//! The payloads of the configuration topics (pure). The contract is in `docs/interface.md`.
//!
//! - `P/config/set`: `{"id":"push-42","config":"<the whole YAML file>"}`. `id` is a non-empty
//!   string of at most [`MAX_ID_LEN`] bytes: answers are matched and redeliveries recognised
//!   by it.
//! - `P/config/get`: `{"id":"q1"}` or an empty payload; the id (any JSON value) is echoed.
//! - `P/config/result`: `{"id":…,"status":…,"ts":…}` with, by status, `hash`, `errors`
//!   (`[{"line","column","path","message"}]`), `failed` (`["…"]`) or `error` (`"…"`).
//! - `P/config/current`: `{"id":…,"hash":…,"set_by":…,"config":{…},"ts":…}`, the running file
//!   as a JSON tree with its secrets replaced (`redact.rs`).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::pending::Final;
use crate::config::ConfigError;

/// Longest push id.
pub const MAX_ID_LEN: usize = 128;

/// A `P/config/set` payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Push {
    pub id: String,
    pub config: String,
}

/// Why a `P/config/set` payload was not read; the id when it could be read.
#[derive(Debug, Clone, PartialEq)]
pub struct BadPush {
    pub id: Option<Value>,
    pub error: String,
}

/// Reads a `P/config/set` payload.
pub fn parse_push(payload: &[u8]) -> Result<Push, BadPush> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Raw {
        id: Value,
        config: Value,
    }
    let bad = |id: Option<Value>, error: &str| BadPush {
        id,
        error: error.to_owned(),
    };
    let raw: Raw = serde_json::from_slice(payload).map_err(|e| BadPush {
        id: serde_json::from_slice::<Value>(payload)
            .ok()
            .and_then(|v| v.get("id").cloned()),
        error: format!("expected {{\"id\": \"...\", \"config\": \"<yaml>\"}}: {e}"),
    })?;
    let id = match &raw.id {
        Value::String(id) if !id.is_empty() && id.len() <= MAX_ID_LEN => id.clone(),
        _ => {
            return Err(bad(
                Some(raw.id),
                "`id` must be a non-empty string of at most 128 bytes",
            ))
        }
    };
    match raw.config {
        Value::String(config) => Ok(Push { id, config }),
        _ => Err(bad(
            Some(Value::String(id)),
            "`config` must be the whole YAML file as one string",
        )),
    }
}

/// The id of a `P/config/get` payload (`null` without one).
pub fn get_id(payload: &[u8]) -> Value {
    serde_json::from_slice::<Value>(payload)
        .ok()
        .and_then(|v| v.get("id").cloned())
        .unwrap_or(Value::Null)
}

/// One problem of a refused configuration, as the result lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub line: Option<u64>,
    pub column: Option<u64>,
    pub path: String,
    pub message: String,
}

impl From<&ConfigError> for Problem {
    fn from(error: &ConfigError) -> Problem {
        Problem {
            line: error.line,
            column: error.column,
            path: error.path.clone(),
            message: error.message.clone(),
        }
    }
}

/// A `P/config/result` payload.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Answer {
    pub id: Value,
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<Problem>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub failed: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Whether applying it restarted the gateway (`applied` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restarted: Option<bool>,
    pub ts: i64,
}

/// The `status` of a result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Running and confirmed.
    Applied,
    /// The same bytes run already: nothing was done.
    Unchanged,
    /// Refused by the rules of `fieldrelay check` (or holds secrets): nothing changed.
    Invalid,
    /// Applied, not confirmed in time: the previous file runs again.
    RolledBack,
    /// Not readable (`bad_payload`), too large, or another push is on trial (`busy`).
    BadPayload,
    TooLarge,
    Busy,
    /// Could not be applied (a file could not be written, or the gateway stopped first);
    /// nothing changed.
    Failed,
    /// The configuration file was changed on the gateway while the push was on trial.
    Superseded,
}

impl Status {
    pub const ALL: [Status; 9] = [
        Status::Applied,
        Status::Unchanged,
        Status::Invalid,
        Status::RolledBack,
        Status::BadPayload,
        Status::TooLarge,
        Status::Busy,
        Status::Failed,
        Status::Superseded,
    ];

    /// As in the payload (and the metrics label).
    pub fn label(self) -> &'static str {
        match self {
            Status::Applied => "applied",
            Status::Unchanged => "unchanged",
            Status::Invalid => "invalid",
            Status::RolledBack => "rolled_back",
            Status::BadPayload => "bad_payload",
            Status::TooLarge => "too_large",
            Status::Busy => "busy",
            Status::Failed => "failed",
            Status::Superseded => "superseded",
        }
    }
}

impl Answer {
    /// An answer with only `status` (fill in the rest).
    pub fn new(id: Value, status: Status, ts: i64) -> Answer {
        Answer {
            id,
            status,
            hash: None,
            errors: Vec::new(),
            failed: Vec::new(),
            error: None,
            restarted: None,
            ts,
        }
    }

    pub fn with_error(mut self, error: impl Into<String>) -> Answer {
        self.error = Some(error.into());
        self
    }

    pub fn with_hash(mut self, hash: &str) -> Answer {
        self.hash = Some(hash.to_owned());
        self
    }

    /// The answer for how a trial of push `id` ended; `hash`: the file that runs now.
    pub fn of_final(id: &str, end: &Final, hash: &str, restarted: bool, ts: i64) -> Answer {
        let id = Value::String(id.to_owned());
        let answer = match end {
            Final::Applied => {
                let mut answer = Answer::new(id, Status::Applied, ts);
                answer.restarted = Some(restarted);
                answer
            }
            Final::RolledBack { failed } => {
                let mut answer = Answer::new(id, Status::RolledBack, ts);
                answer.failed = failed.clone();
                answer
            }
            Final::Interrupted => Answer::new(id, Status::Failed, ts).with_error(
                "the gateway stopped before the new file replaced the old one; nothing changed",
            ),
            Final::Superseded => Answer::new(id, Status::Superseded, ts).with_error(
                "the configuration file was changed on the gateway while the push was on trial",
            ),
        };
        answer.with_hash(hash)
    }

    pub fn to_json(&self) -> String {
        // Strings and numbers only: cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_push_needs_a_string_id_and_the_file_as_a_string() {
        assert_eq!(
            parse_push(br#"{"id":"p1","config":"gateway: {}\n"}"#),
            Ok(Push {
                id: "p1".into(),
                config: "gateway: {}\n".into()
            })
        );
        let bad = parse_push(br#"{"id":7,"config":"x"}"#).unwrap_err();
        assert_eq!(bad.id, Some(json!(7)));
        let bad = parse_push(br#"{"id":"p2","config":{"gateway":{}}}"#).unwrap_err();
        assert_eq!(bad.id, Some(json!("p2")));
        let bad = parse_push(br#"{"id":"p3","config":"x","extra":1}"#).unwrap_err();
        assert_eq!(bad.id, Some(json!("p3")));
        assert_eq!(parse_push(b"not json").unwrap_err().id, None);
        assert_eq!(get_id(br#"{"id":"q"}"#), json!("q"));
        assert_eq!(get_id(b""), Value::Null);
    }

    #[test]
    fn labels_are_the_payloads_words() {
        for status in Status::ALL {
            assert_eq!(serde_json::to_value(status).unwrap(), json!(status.label()));
        }
    }

    #[test]
    fn answers_carry_only_what_their_status_says() {
        let applied = Answer::of_final("p1", &Final::Applied, "abc", true, 5);
        assert_eq!(
            serde_json::from_str::<Value>(&applied.to_json()).unwrap(),
            json!({"id":"p1","status":"applied","hash":"abc","restarted":true,"ts":5})
        );
        let back = Answer::of_final(
            "p1",
            &Final::RolledBack {
                failed: vec!["uplink: not connected to b:1 within 5s".into()],
            },
            "old",
            false,
            6,
        );
        assert_eq!(
            serde_json::from_str::<Value>(&back.to_json()).unwrap(),
            json!({"id":"p1","status":"rolled_back","hash":"old",
                   "failed":["uplink: not connected to b:1 within 5s"],"ts":6})
        );
    }
}
