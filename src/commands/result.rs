//! The answer to a command, on `P/<device>/<point>/set/result` (pure).
//!
//! ```json
//! {"id":"a1","ok":true,"value":21.5,"ts":1763850000456}
//! {"id":"a1","ok":false,"error":"out_of_range","message":"95 is above max 90","ts":1763850000456}
//! ```
//!
//! `id` echoes the command's id (`null` without one). `value` is what the point now holds: the
//! value read back with `verify: true`, otherwise the value the written registers encode
//! (scaling and rounding of the point applied, exactly what the next poll will publish). `ts` is
//! when the answer was made. A result that went through the durable queue also carries its
//! `seq` (added at send time), by which a consumer drops a redelivered duplicate.

use serde::Serialize;
use serde_json::Value as Json;

use super::payload::CommandId;
use crate::sample::Value;

/// Why a command was not done. The codes are part of the public contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// No such device or point.
    UnknownPoint,
    /// The point exists but is not `writable: true` (or cannot be written at all).
    NotWritable,
    /// Not JSON, an unknown key, a missing value, the wrong type for the point, a fraction the
    /// point cannot represent, a missing `ts` where one is required.
    BadPayload,
    /// Outside `min`/`max`, or outside what the point's type can hold.
    OutOfRange,
    /// `ts` older than the point's max age (or too far in the future): nothing written.
    Expired,
    /// The device does not answer (its last poll failed, or its bus is restarting): nothing sent.
    DeviceOffline,
    /// The device refused the write (a Modbus exception), did not answer it, or the gateway
    /// cannot tell whether an interrupted write happened.
    DeviceError,
    /// Written, but the read-back (`verify: true`) shows another value, or could not be made.
    VerifyFailed,
    /// The command inbox of its broker is full: nothing written; it may be sent again (same id).
    Busy,
    /// Delivered as a retained message (at subscribe): never carried out.
    Retained,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::UnknownPoint => "unknown_point",
            ErrorCode::NotWritable => "not_writable",
            ErrorCode::BadPayload => "bad_payload",
            ErrorCode::OutOfRange => "out_of_range",
            ErrorCode::Expired => "expired",
            ErrorCode::DeviceOffline => "device_offline",
            ErrorCode::DeviceError => "device_error",
            ErrorCode::VerifyFailed => "verify_failed",
            ErrorCode::Busy => "busy",
            ErrorCode::Retained => "retained",
        }
    }
}

/// A refused or failed command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: ErrorCode,
    pub message: String,
}

impl Refusal {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Refusal {
        Refusal {
            code,
            message: message.into(),
        }
    }
}

/// The outcome of a command.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Done; the value the point holds now. `note` explains an unusual success (an
    /// interrupted command found done).
    Done {
        value: Value,
        note: Option<String>,
    },
    Failed(Refusal),
}

/// The result payload at `ts_ms`.
pub fn payload(id: Option<&CommandId>, outcome: &Outcome, ts_ms: i64) -> String {
    #[derive(Serialize)]
    struct Payload<'a> {
        id: &'a Json,
        ok: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        value: Option<Json>,
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<&'static str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        message: Option<&'a str>,
        ts: i64,
    }
    let id = id.map_or(&Json::Null, CommandId::json);
    let payload = match outcome {
        Outcome::Done { value, note } => Payload {
            id,
            ok: true,
            value: Some(serde_json::from_str(&value.to_json()).unwrap_or(Json::Null)),
            error: None,
            message: note.as_deref(),
            ts: ts_ms,
        },
        Outcome::Failed(refusal) => Payload {
            id,
            ok: false,
            value: None,
            error: Some(refusal.code.as_str()),
            message: Some(&refusal.message),
            ts: ts_ms,
        },
    };
    serde_json::to_string(&payload).unwrap_or_else(|_| {
        format!(r#"{{"id":null,"ok":false,"error":"device_error","message":"cannot render the result","ts":{ts_ms}}}"#)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::payload::CommandPayload;
    use serde_json::json;

    fn id(text: &str) -> CommandId {
        CommandPayload::parse(format!(r#"{{"id":{text},"value":1}}"#).as_bytes())
            .unwrap()
            .id
            .unwrap()
    }

    #[test]
    fn results_are_the_contract() {
        let done = Outcome::Done {
            value: Value::Float(21.5),
            note: None,
        };
        let parsed: Json = serde_json::from_str(&payload(Some(&id(r#""a1""#)), &done, 9)).unwrap();
        assert_eq!(
            parsed,
            json!({"id": "a1", "ok": true, "value": 21.5, "ts": 9})
        );
        let failed = Outcome::Failed(Refusal::new(ErrorCode::OutOfRange, "95 is above max 90"));
        let parsed: Json = serde_json::from_str(&payload(Some(&id("17")), &failed, 9)).unwrap();
        assert_eq!(
            parsed,
            json!({"id": 17, "ok": false, "error": "out_of_range", "message": "95 is above max 90", "ts": 9})
        );
        let parsed: Json = serde_json::from_str(&payload(None, &failed, 9)).unwrap();
        assert_eq!(parsed["id"], Json::Null);
    }
}
