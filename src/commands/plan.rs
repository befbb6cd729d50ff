//! From a command to the Modbus request that carries it out (pure): age, type, range and
//! resolution checks against the point map, then the encoding (scale/offset, type, byte and word
//! order, write function) through [`crate::modbus::bus::write_request`].
//!
//! # Rules
//! - **Age.** With a `ts`, a command older than its point's `command_max_age` (default
//!   `commands.max_age`) is `expired`; so is one whose `ts` lies further in the future than that
//!   (the sender's or the gateway's clock is wrong, and nothing can be said about its age).
//!   Without a `ts` it is written whenever it arrives, or refused with
//!   `commands.without_ts: refuse`. Both clocks must be synchronised (NTP).
//! - **Type.** A bool point takes `true`/`false`, a string point a string, a numeric point a
//!   number. `0`/`1` for a bool, `"42"` for a number are refused: guessing a type on a write is
//!   how wrong setpoints happen.
//! - **Resolution.** The value must be exactly representable: a whole number for an unscaled
//!   integer point, a multiple of the scale (after the offset) for a scaled one. `21.75` on a
//!   point with `scale: 0.1` is refused rather than silently written as 21.8.
//! - **Range.** `min`/`max` in engineering units; then what the type can hold (`out_of_range`).
//! - The answer's value is what the written registers decode to, exactly what the next poll
//!   publishes; with `verify: true` it is the value read back, which must be the written
//!   registers bit for bit.

use std::time::Duration;

use super::result::{ErrorCode, Refusal};
use crate::config::{data_type_name, DataType, MissingTs, PointConfig, WriteConfig};
use crate::modbus::bus::{write_request, WriteError};
use crate::modbus::decode::{self, DecodeError};
use crate::modbus::{ProbedPoint, Request, Response};
use crate::sample::Value;

/// A raw value this close to a whole number is that number (f64 noise of `value / scale`).
const RESOLUTION_SLACK: f64 = 1e-6;
/// Below this a `ts` is more likely seconds than milliseconds since the epoch (this is 1973 in
/// ms, 5138 in seconds).
const PLAUSIBLE_MS: i64 = 100_000_000_000;

/// Refuses a command that is too old or too new for `max_age`, or has no `ts` where one is
/// required.
pub fn check_age(
    ts_ms: Option<i64>,
    now_ms: i64,
    max_age: Duration,
    without_ts: MissingTs,
) -> Result<(), Refusal> {
    let Some(ts) = ts_ms else {
        return match without_ts {
            MissingTs::Execute => Ok(()),
            MissingTs::Refuse => Err(Refusal::new(
                ErrorCode::BadPayload,
                "the command has no ts, and this gateway refuses commands without one \
                 (commands.without_ts: refuse)",
            )),
        };
    };
    let max_ms = i64::try_from(max_age.as_millis()).unwrap_or(i64::MAX);
    let age = now_ms.saturating_sub(ts);
    let hint = if ts.unsigned_abs() < PLAUSIBLE_MS as u64 {
        " (ts counts milliseconds since the unix epoch; this one looks like seconds)"
    } else {
        ""
    };
    if age > max_ms {
        return Err(Refusal::new(
            ErrorCode::Expired,
            format!(
                "the command is {} old, more than its max age of {}; nothing was written{hint}",
                seconds(age),
                seconds(max_ms)
            ),
        ));
    }
    if age.saturating_neg() > max_ms {
        return Err(Refusal::new(
            ErrorCode::Expired,
            format!(
                "the command's ts lies {} in the future: the clocks of the sender and the \
                 gateway disagree (synchronise them with NTP); nothing was written",
                seconds(age.saturating_neg())
            ),
        ));
    }
    Ok(())
}

fn seconds(ms: i64) -> String {
    format!("{:.1}s", ms as f64 / 1000.0)
}

/// A validated write.
#[derive(Debug, Clone, PartialEq)]
pub struct WritePlan {
    pub request: Request,
    /// The registers (or bit) the point holds after the write.
    pub expected: Response,
    /// What they decode to.
    pub value: Value,
    /// Read back and compare after writing.
    pub verify: bool,
}

impl WritePlan {
    /// The write of `value` to `point`, or why it cannot be done.
    pub fn new(point: &PointConfig, value: &Value) -> Result<WritePlan, Refusal> {
        let Some(write) = point.write else {
            return Err(Refusal::new(
                ErrorCode::NotWritable,
                format!("point {:?} is not writable", point.name),
            ));
        };
        check_value(point, &write, value)?;
        let request =
            write_request(point, value).map_err(|error| encode_refusal(point, value, error))?;
        let expected = match &request {
            Request::WriteCoil { value, .. } => Response::Bits(vec![*value]),
            Request::WriteCoils { values, .. } => Response::Bits(values.clone()),
            Request::WriteRegister { value, .. } => Response::Words(vec![*value]),
            Request::WriteRegisters { values, .. } => Response::Words(values.clone()),
            Request::Read { .. } => Response::Written,
        };
        let written = match (&expected, point.modbus()) {
            (Response::Bits(bits), _) => bits.first().map(|b| Value::Bool(*b)),
            (Response::Words(words), Some(source)) => decode::decode_registers(
                point.data_type,
                source.encoding,
                words,
                decode::Scaling::of(point),
            )
            .ok(),
            _ => None,
        };
        Ok(WritePlan {
            request,
            expected,
            value: written.unwrap_or_else(|| value.clone()),
            verify: write.verify,
        })
    }

    /// Whether a read-back shows the write: the point's value if its registers are exactly the
    /// written ones, else what it holds instead.
    pub fn confirmed_by(&self, read: &ProbedPoint) -> Result<Value, String> {
        match &read.result {
            Ok((raw, decoded)) if *raw == self.expected => {
                Ok(decoded.clone().unwrap_or_else(|_| self.value.clone()))
            }
            Ok((_, Ok(value))) => Err(format!(
                "the device holds {} instead of {}",
                value.to_json(),
                self.value.to_json()
            )),
            Ok((raw, Err(error))) => Err(format!(
                "the device holds {raw:?}, which does not decode: {error}"
            )),
            Err(exception) => Err(format!("the read-back was refused: {exception}")),
        }
    }
}

/// Refuses a value of the wrong kind for the point's type, outside its `min`/`max`, or that an
/// integer register cannot hold exactly once scale and offset are applied.
fn check_value(point: &PointConfig, write: &WriteConfig, value: &Value) -> Result<(), Refusal> {
    let type_name = data_type_name(point.data_type);
    let wrong_type = |wanted: &str| {
        Refusal::new(
            ErrorCode::BadPayload,
            format!(
                "{:?} is a {type_name} point: send {wanted}, got {}",
                point.name,
                value.to_json()
            ),
        )
    };
    match (point.data_type, value) {
        (DataType::Bool, Value::Bool(_)) => {}
        (DataType::Bool, _) => return Err(wrong_type("true or false")),
        (DataType::String { .. }, Value::Str(_)) => {}
        (DataType::String { .. }, _) => return Err(wrong_type("a string")),
        (_, Value::Bool(_) | Value::Str(_)) => return Err(wrong_type("a number")),
        (data_type, number) => {
            let engineering = number.as_f64().unwrap_or(f64::NAN);
            if let Some(min) = write.min.filter(|min| engineering < *min) {
                return Err(Refusal::new(
                    ErrorCode::OutOfRange,
                    format!("{} is below min {min}", number.to_json()),
                ));
            }
            if let Some(max) = write.max.filter(|max| engineering > *max) {
                return Err(Refusal::new(
                    ErrorCode::OutOfRange,
                    format!("{} is above max {max}", number.to_json()),
                ));
            }
            let integer = !matches!(data_type, DataType::F32 | DataType::F64);
            let exact = matches!(number, Value::Int(_) | Value::UInt(_));
            let identity = point.scale == 1.0 && point.offset == 0.0;
            if integer && !(identity && exact) {
                let raw = (engineering - point.offset) / point.scale;
                if raw.is_finite() && (raw - raw.round()).abs() > RESOLUTION_SLACK {
                    return Err(Refusal::new(
                        ErrorCode::BadPayload,
                        if identity {
                            format!(
                                "{:?} is a {type_name} point: send a whole number, got {}",
                                point.name,
                                number.to_json()
                            )
                        } else {
                            format!(
                                "{} cannot be written exactly: the {type_name} register \
                                 would hold {raw} (scale {}, offset {})",
                                number.to_json(),
                                point.scale,
                                point.offset
                            )
                        },
                    ));
                }
            }
        }
    }
    Ok(())
}

/// The refusal for a value the point's encoder would not write.
fn encode_refusal(point: &PointConfig, value: &Value, error: WriteError) -> Refusal {
    let type_name = data_type_name(point.data_type);
    match error {
        WriteError::Encode(DecodeError::OutOfRange { .. }) => Refusal::new(
            ErrorCode::OutOfRange,
            format!("{} does not fit a {type_name} point", value.to_json()),
        ),
        WriteError::Encode(DecodeError::NotFinite) => Refusal::new(
            ErrorCode::OutOfRange,
            format!(
                "{} is out of range for a {type_name} point after scaling",
                value.to_json()
            ),
        ),
        WriteError::Encode(DecodeError::TooLong { len, registers }) => Refusal::new(
            ErrorCode::OutOfRange,
            format!(
                "a text of {len} characters does not fit {registers} registers ({} characters)",
                usize::from(registers) * 2
            ),
        ),
        WriteError::Encode(error) => Refusal::new(ErrorCode::BadPayload, error.to_string()),
        WriteError::NotWritable(_) => Refusal::new(
            ErrorCode::NotWritable,
            format!("point {:?} cannot be written", point.name),
        ),
        other => Refusal::new(ErrorCode::DeviceError, other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{load_str, DeviceConfig};

    fn device() -> DeviceConfig {
        load_str(
            "gateway: {id: gw, data_dir: /d}
uplink: {url: 'mqtt://b'}
buses: [{name: plc1, type: tcp, host: h}]
devices:
  - name: boiler
    bus: plc1
    points:
      - {name: sp, table: holding, address: 0, type: f32, writable: true, min: 5, max: 90}
      - {name: mode, table: holding, address: 2, type: u16, writable: true}
      - {name: tenths, table: holding, address: 3, type: i16, scale: 0.1, writable: true, verify: true}
      - {name: run, table: coil, address: 0, type: bool, writable: true}
      - {name: tag, table: holding, address: 4, type: string, length: 2, writable: true}
      - {name: temp, table: input, address: 0, type: f32}
      - {name: big, table: holding, address: 10, type: u32, writable: true, write_function: multiple}
",
            "c.yaml",
        )
        .unwrap()
        .devices
        .remove(0)
    }

    fn plan(point: &str, value: Value) -> Result<WritePlan, Refusal> {
        let device = device();
        let point = device.points.iter().find(|p| p.name == point).unwrap();
        WritePlan::new(point, &value)
    }

    fn code(point: &str, value: Value) -> ErrorCode {
        plan(point, value).unwrap_err().code
    }

    #[test]
    fn valid_writes_encode_the_point() {
        let p = plan("sp", Value::Int(21)).unwrap();
        assert_eq!(
            p.request,
            Request::WriteRegisters {
                address: 0,
                values: vec![0x41A8, 0]
            }
        );
        assert_eq!(p.value, Value::Float(21.0));
        assert!(!p.verify);
        let p = plan("tenths", Value::Float(-21.7)).unwrap();
        assert_eq!(
            p.request,
            Request::WriteRegister {
                address: 3,
                value: (-217i16) as u16
            }
        );
        // What the decoder makes of the register, as the next poll will publish it.
        assert_eq!(p.value, Value::Float(-21.7));
        assert!(p.verify);
        assert_eq!(
            plan("mode", Value::Float(7.0)).unwrap().value,
            Value::Int(7)
        );
        let p = plan("run", Value::Bool(true)).unwrap();
        assert_eq!(p.expected, Response::Bits(vec![true]));
        assert_eq!(
            plan("tag", Value::Str("AB".into())).unwrap().value,
            Value::Str("AB".into())
        );
        assert_eq!(
            plan("big", Value::Int(70_000)).unwrap().request,
            Request::WriteRegisters {
                address: 10,
                values: vec![1, 4464]
            }
        );
    }

    #[test]
    fn each_refusal_has_its_code() {
        assert_eq!(code("temp", Value::Int(1)), ErrorCode::NotWritable);
        assert_eq!(code("sp", Value::Bool(true)), ErrorCode::BadPayload);
        assert_eq!(code("sp", Value::Str("21".into())), ErrorCode::BadPayload);
        assert_eq!(code("run", Value::Int(1)), ErrorCode::BadPayload);
        assert_eq!(code("tag", Value::Int(1)), ErrorCode::BadPayload);
        assert_eq!(code("mode", Value::Float(7.5)), ErrorCode::BadPayload);
        assert_eq!(code("tenths", Value::Float(2.25)), ErrorCode::BadPayload);
        assert_eq!(code("sp", Value::Float(90.5)), ErrorCode::OutOfRange);
        assert_eq!(code("sp", Value::Int(4)), ErrorCode::OutOfRange);
        assert_eq!(code("mode", Value::Int(70_000)), ErrorCode::OutOfRange);
        assert_eq!(code("mode", Value::Int(-1)), ErrorCode::OutOfRange);
        assert_eq!(code("tenths", Value::Float(4000.0)), ErrorCode::OutOfRange);
        assert_eq!(
            code("tag", Value::Str("ABCDE".into())),
            ErrorCode::OutOfRange
        );
        assert_eq!(
            plan("sp", Value::Float(95.0)).unwrap_err().message,
            "95.0 is above max 90"
        );
    }

    #[test]
    fn ages() {
        let minute = Duration::from_secs(60);
        let now = 1_763_850_000_000;
        assert_eq!(check_age(None, now, minute, MissingTs::Execute), Ok(()));
        assert_eq!(
            check_age(None, now, minute, MissingTs::Refuse)
                .unwrap_err()
                .code,
            ErrorCode::BadPayload
        );
        assert_eq!(
            check_age(Some(now - 60_000), now, minute, MissingTs::Execute),
            Ok(())
        );
        let old = check_age(Some(now - 60_001), now, minute, MissingTs::Execute).unwrap_err();
        assert_eq!(old.code, ErrorCode::Expired);
        assert_eq!(
            old.message,
            "the command is 60.0s old, more than its max age of 60.0s; nothing was written"
        );
        let future = check_age(Some(now + 3_600_000), now, minute, MissingTs::Execute).unwrap_err();
        assert!(
            future.message.contains("in the future"),
            "{}",
            future.message
        );
        let seconds = check_age(Some(now / 1000), now, minute, MissingTs::Execute).unwrap_err();
        assert!(
            seconds.message.contains("looks like seconds"),
            "{}",
            seconds.message
        );
        assert_eq!(
            check_age(Some(i64::MIN), now, minute, MissingTs::Execute)
                .unwrap_err()
                .code,
            ErrorCode::Expired
        );
        assert_eq!(
            check_age(Some(i64::MAX), now, minute, MissingTs::Execute)
                .unwrap_err()
                .code,
            ErrorCode::Expired
        );
    }

    #[test]
    fn read_backs_confirm_only_the_written_registers() {
        let p = plan("tenths", Value::Float(-21.7)).unwrap();
        let read = |raw: u16, value: Value| ProbedPoint {
            point: "tenths".into(),
            result: Ok((Response::Words(vec![raw]), Ok(value))),
        };
        assert_eq!(
            p.confirmed_by(&read((-217i16) as u16, Value::Float(-21.7))),
            Ok(Value::Float(-21.7))
        );
        assert_eq!(
            p.confirmed_by(&read(0, Value::Float(0.0))),
            Err(format!(
                "the device holds 0.0 instead of {}",
                Value::Float(-21.7).to_json()
            ))
        );
        let refused = ProbedPoint {
            point: "tenths".into(),
            result: Err(crate::modbus::Exception(2)),
        };
        assert!(p.confirmed_by(&refused).unwrap_err().contains("refused"));
    }
}
