//! Metric values between our [`Value`] and the Sparkplug wire (pure).
//!
//! # Which protobuf field carries which datatype
//! The spec (3.0, chapter 6 "Datatype Details") names the protobuf type of each datatype but not
//! how a negative `Int8`/`Int16` goes into the unsigned `int_value`, and its peers disagree:
//!
//! | datatype | we send | Tahu Java, C, JS (Ignition, node-red) | Tahu Python, pysparkplug 0.6.1 |
//! |---|---|---|---|
//! | Int16, Int32 | `int_value`, two's complement sign-extended to 32 bits (-1 → 0xFFFFFFFF) | same | Int16: 16-bit two's complement (-1 → 0xFFFF) |
//! | UInt32 | `long_value` | `long_value` (Java and C read either) | `int_value` (pysparkplug reads either) |
//! | Int64 | `long_value`, 64-bit two's complement | same | same |
//! | UInt16 | `int_value` | same | same |
//! | UInt64 | `long_value` | same | same |
//!
//! We send what the reference implementation (Tahu Java, on which Ignition's MQTT Engine is
//! built) sends, which Tahu's decoders in every language read back. The one peer it costs is
//! pysparkplug 0.6.1, whose decoder refuses a sign-extended negative Int16 (its open issue #26).
//! For UInt32, `long_value` is what Tahu JS (and so node-red's Sparkplug nodes) can read; Tahu
//! Java and pysparkplug read either field.
//!
//! Decoding (commands from a host) accepts every form seen in the wild: for an IntN either
//! encoding (a value that fits the type after sign extension from 32 or from N bits), for any
//! integer type either field, as long as the value fits the type; anything else is a
//! [`ValueError`], never a wrap-around.
//!
//! Floats: a `float` point is sent as `Float` with the `f32` it was read as (our [`Value`] holds
//! its shortest decimal as `f64`, which converts back to that same `f32`); received `Float`s come
//! back as their shortest decimal too, so a host's 21.7 is written as 21.7.

use std::sync::Arc;

use super::proto::payload::metric::Value as Wire;
use super::proto::DataType;
use crate::sample::Value;

/// A value as one of the Sparkplug datatypes this gateway publishes. Built only by
/// [`MetricValue::from_value`], so it always fits its type.
#[derive(Debug, Clone, PartialEq)]
pub enum MetricValue {
    Boolean(bool),
    Int16(i16),
    Int32(i32),
    Int64(i64),
    UInt16(u16),
    UInt32(u32),
    UInt64(u64),
    Float(f32),
    Double(f64),
    String(Arc<str>),
}

/// Why a value does not fit a datatype.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ValueError {
    #[error("{value} does not fit {datatype}")]
    OutOfRange {
        value: String,
        datatype: &'static str,
    },
    #[error("a {got} value cannot be a {datatype}")]
    Mismatch {
        got: &'static str,
        datatype: &'static str,
    },
    #[error("datatype {0} is not supported here")]
    Unsupported(&'static str),
    #[error("the value is not finite")]
    NotFinite,
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Bool(_) => "bool",
        Value::Int(_) | Value::UInt(_) => "integer",
        Value::Float(_) => "float",
        Value::Str(_) => "string",
    }
}

/// The name of a datatype as the spec writes it (`Int16`, `Boolean`).
pub fn datatype_name(datatype: DataType) -> &'static str {
    datatype.as_str_name()
}

impl MetricValue {
    /// `value` as `datatype`. Integers must fit; a float becomes an integer type only when it is
    /// integral and fits (never rounded); an integer becomes a Float/Double (exactly or to the
    /// nearest representable value, as any float of it would).
    pub fn from_value(datatype: DataType, value: &Value) -> Result<MetricValue, ValueError> {
        let name = datatype_name(datatype);
        let mismatch = || ValueError::Mismatch {
            got: kind(value),
            datatype: name,
        };
        let out_of_range = || ValueError::OutOfRange {
            value: value.to_json(),
            datatype: name,
        };
        let integer = || -> Result<i128, ValueError> {
            match value {
                Value::Int(i) => Ok(i128::from(*i)),
                Value::UInt(u) => Ok(i128::from(*u)),
                Value::Float(f) if f.fract() == 0.0 && f.abs() < 2f64.powi(64) => Ok(*f as i128),
                Value::Float(_) => Err(out_of_range()),
                _ => Err(mismatch()),
            }
        };
        Ok(match datatype {
            DataType::Boolean => match value {
                Value::Bool(b) => MetricValue::Boolean(*b),
                _ => return Err(mismatch()),
            },
            DataType::String | DataType::Text => match value {
                Value::Str(s) => MetricValue::String(s.clone()),
                _ => return Err(mismatch()),
            },
            DataType::Float | DataType::Double => {
                let f = match value {
                    Value::Int(i) => *i as f64,
                    Value::UInt(u) => *u as f64,
                    Value::Float(f) => *f,
                    _ => return Err(mismatch()),
                };
                if !f.is_finite() {
                    return Err(ValueError::NotFinite);
                }
                if datatype == DataType::Float {
                    let narrow = f as f32;
                    if !narrow.is_finite() {
                        return Err(out_of_range());
                    }
                    MetricValue::Float(narrow)
                } else {
                    MetricValue::Double(f)
                }
            }
            DataType::Int16 => MetricValue::Int16(fit(integer()?).ok_or_else(out_of_range)?),
            DataType::Int32 => MetricValue::Int32(fit(integer()?).ok_or_else(out_of_range)?),
            DataType::Int64 => MetricValue::Int64(fit(integer()?).ok_or_else(out_of_range)?),
            DataType::UInt16 => MetricValue::UInt16(fit(integer()?).ok_or_else(out_of_range)?),
            DataType::UInt32 => MetricValue::UInt32(fit(integer()?).ok_or_else(out_of_range)?),
            DataType::UInt64 => MetricValue::UInt64(fit(integer()?).ok_or_else(out_of_range)?),
            other => return Err(ValueError::Unsupported(datatype_name(other))),
        })
    }

    pub fn datatype(&self) -> DataType {
        match self {
            MetricValue::Boolean(_) => DataType::Boolean,
            MetricValue::Int16(_) => DataType::Int16,
            MetricValue::Int32(_) => DataType::Int32,
            MetricValue::Int64(_) => DataType::Int64,
            MetricValue::UInt16(_) => DataType::UInt16,
            MetricValue::UInt32(_) => DataType::UInt32,
            MetricValue::UInt64(_) => DataType::UInt64,
            MetricValue::Float(_) => DataType::Float,
            MetricValue::Double(_) => DataType::Double,
            MetricValue::String(_) => DataType::String,
        }
    }

    /// The protobuf field and value (see the module table).
    pub fn to_wire(&self) -> Wire {
        match self {
            MetricValue::Boolean(b) => Wire::BooleanValue(*b),
            // Sign-extended to 32 bits, then the same bits as u32.
            MetricValue::Int16(i) => Wire::IntValue(i32::from(*i) as u32),
            MetricValue::Int32(i) => Wire::IntValue(*i as u32),
            MetricValue::Int64(i) => Wire::LongValue(*i as u64),
            MetricValue::UInt16(u) => Wire::IntValue(u32::from(*u)),
            MetricValue::UInt32(u) => Wire::LongValue(u64::from(*u)),
            MetricValue::UInt64(u) => Wire::LongValue(*u),
            MetricValue::Float(f) => Wire::FloatValue(*f),
            MetricValue::Double(f) => Wire::DoubleValue(*f),
            MetricValue::String(s) => Wire::StringValue(s.to_string()),
        }
    }

    /// The value as the rest of the gateway holds it.
    pub fn to_value(&self) -> Value {
        match self {
            MetricValue::Boolean(b) => Value::Bool(*b),
            MetricValue::Int16(i) => Value::Int(i64::from(*i)),
            MetricValue::Int32(i) => Value::Int(i64::from(*i)),
            MetricValue::Int64(i) => Value::Int(*i),
            MetricValue::UInt16(u) => Value::Int(i64::from(*u)),
            MetricValue::UInt32(u) => Value::Int(i64::from(*u)),
            MetricValue::UInt64(u) => Value::from_u64(*u),
            MetricValue::Float(f) => Value::Float(shortest_f64(*f)),
            MetricValue::Double(f) => Value::Float(*f),
            MetricValue::String(s) => Value::Str(s.clone()),
        }
    }
}

/// `value` as the integer type the caller wants, if it fits.
fn fit<T: TryFrom<i128>>(value: i128) -> Option<T> {
    T::try_from(value).ok()
}

/// The f64 nearest to the shortest decimal that round-trips `v` (21.7f32 → 21.7).
fn shortest_f64(v: f32) -> f64 {
    v.to_string().parse().unwrap_or(f64::from(v))
}

/// An integer that fits a signed type of `bits` (8 or 16) bits, read from a 32-bit `int_value`
/// either sign-extended from 32 bits (Tahu Java/C/JS) or as an N-bit two's complement (Tahu
/// Python, pysparkplug).
fn signed_from_u32(raw: u32, bits: u32) -> Option<i64> {
    let min = -(1i64 << (bits - 1));
    let max = (1i64 << (bits - 1)) - 1;
    let extended = i64::from(raw as i32);
    if (min..=max).contains(&extended) {
        return Some(extended);
    }
    let narrow = i64::from(raw);
    if narrow < (1i64 << bits) {
        // An N-bit two's complement: the top half are the negatives.
        return Some(if narrow > max {
            narrow - (1i64 << bits)
        } else {
            narrow
        });
    }
    None
}

/// Decodes a received metric value as `datatype` (the metric's own, or when it sent none the
/// point's). See the module header for what is accepted.
pub fn value_from_wire(datatype: DataType, wire: &Wire) -> Result<Value, ValueError> {
    let name = datatype_name(datatype);
    let got = match wire {
        Wire::IntValue(_) | Wire::LongValue(_) => "integer",
        Wire::FloatValue(_) | Wire::DoubleValue(_) => "float",
        Wire::BooleanValue(_) => "bool",
        Wire::StringValue(_) => "string",
        Wire::BytesValue(_) => "bytes",
        Wire::DatasetValue(_) => "dataset",
        Wire::TemplateValue(_) => "template",
        Wire::ExtensionValue(_) => "extension",
    };
    let mismatch = || ValueError::Mismatch {
        got,
        datatype: name,
    };
    let out_of_range = |value: String| ValueError::OutOfRange {
        value,
        datatype: name,
    };
    let signed = |bits: u32| -> Result<Value, ValueError> {
        let value = match wire {
            // A 32-bit field holds an Int32 or Int64 as the sign-extended i32 it fits in.
            Wire::IntValue(raw) if bits >= 32 => Some(i64::from(*raw as i32)),
            Wire::IntValue(raw) => signed_from_u32(*raw, bits),
            Wire::LongValue(raw) => {
                let v = *raw as i64;
                (bits == 64 || (-(1i64 << (bits - 1))..(1i64 << (bits - 1))).contains(&v))
                    .then_some(v)
            }
            _ => return Err(mismatch()),
        };
        value.map(Value::Int).ok_or_else(|| {
            out_of_range(match wire {
                Wire::IntValue(raw) => raw.to_string(),
                Wire::LongValue(raw) => raw.to_string(),
                _ => String::new(),
            })
        })
    };
    let unsigned = |bits: u32| -> Result<Value, ValueError> {
        let raw = match wire {
            Wire::IntValue(raw) => u64::from(*raw),
            Wire::LongValue(raw) => *raw,
            _ => return Err(mismatch()),
        };
        if bits < 64 && raw >> bits != 0 {
            return Err(out_of_range(raw.to_string()));
        }
        Ok(Value::from_u64(raw))
    };
    match datatype {
        DataType::Int8 => signed(8),
        DataType::Int16 => signed(16),
        DataType::Int32 => signed(32),
        DataType::Int64 => signed(64),
        DataType::UInt8 => unsigned(8),
        DataType::UInt16 => unsigned(16),
        DataType::UInt32 => unsigned(32),
        DataType::UInt64 => unsigned(64),
        DataType::Boolean => match wire {
            Wire::BooleanValue(b) => Ok(Value::Bool(*b)),
            _ => Err(mismatch()),
        },
        DataType::Float | DataType::Double => {
            let f = match wire {
                Wire::FloatValue(f) => shortest_f64(*f),
                Wire::DoubleValue(f) => *f,
                _ => return Err(mismatch()),
            };
            if f.is_finite() {
                Ok(Value::Float(f))
            } else {
                Err(ValueError::NotFinite)
            }
        }
        DataType::String | DataType::Text => match wire {
            Wire::StringValue(s) => Ok(Value::Str(Arc::from(s.as_str()))),
            _ => Err(mismatch()),
        },
        other => Err(ValueError::Unsupported(datatype_name(other))),
    }
}

/// Any value of a datatype we publish, as the rest of the gateway holds it (for property tests
/// here and in [`super::payload`]).
#[cfg(test)]
pub(crate) fn typed_value() -> impl proptest::strategy::Strategy<Value = (DataType, Value)> {
    use proptest::prelude::*;
    prop_oneof![
        any::<bool>().prop_map(|b| (DataType::Boolean, Value::Bool(b))),
        any::<i16>().prop_map(|i| (DataType::Int16, Value::Int(i64::from(i)))),
        any::<i32>().prop_map(|i| (DataType::Int32, Value::Int(i64::from(i)))),
        any::<i64>().prop_map(|i| (DataType::Int64, Value::Int(i))),
        any::<u16>().prop_map(|u| (DataType::UInt16, Value::Int(i64::from(u)))),
        any::<u32>().prop_map(|u| (DataType::UInt32, Value::Int(i64::from(u)))),
        any::<u64>().prop_map(|u| (DataType::UInt64, Value::from_u64(u))),
        any::<f32>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| (DataType::Float, Value::Float(shortest_f64(f)))),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| (DataType::Double, Value::Float(f))),
        "\\PC{0,16}".prop_map(|s| (DataType::String, Value::Str(Arc::from(s.as_str())))),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn negative_int16_is_sign_extended_like_tahu() {
        let v = MetricValue::from_value(DataType::Int16, &Value::Int(-87)).unwrap();
        assert_eq!(v.to_wire(), Wire::IntValue(0xFFFF_FFA9));
        assert_eq!(
            MetricValue::from_value(DataType::Int32, &Value::Int(-1))
                .unwrap()
                .to_wire(),
            Wire::IntValue(u32::MAX)
        );
        assert_eq!(
            MetricValue::from_value(DataType::UInt32, &Value::Int(4_000_000_000))
                .unwrap()
                .to_wire(),
            Wire::LongValue(4_000_000_000)
        );
    }

    #[test]
    fn received_int16_is_read_in_both_encodings() {
        let read = |raw| value_from_wire(DataType::Int16, &Wire::IntValue(raw));
        assert_eq!(read(0xFFFF_FFA9), Ok(Value::Int(-87)));
        assert_eq!(read(0xFFA9), Ok(Value::Int(-87)));
        assert_eq!(read(0x7FFF), Ok(Value::Int(32767)));
        assert_eq!(read(0x8000), Ok(Value::Int(-32768)));
        assert!(read(0x1_0000).is_err());
        assert!(read(0xFFFF_0000).is_err());
        assert_eq!(
            value_from_wire(DataType::Int8, &Wire::IntValue(0xFF)),
            Ok(Value::Int(-1))
        );
    }

    #[test]
    fn received_unsigned_must_fit() {
        assert_eq!(
            value_from_wire(DataType::UInt32, &Wire::IntValue(u32::MAX)),
            Ok(Value::Int(i64::from(u32::MAX)))
        );
        assert_eq!(
            value_from_wire(DataType::UInt32, &Wire::LongValue(7)),
            Ok(Value::Int(7))
        );
        assert!(value_from_wire(DataType::UInt32, &Wire::LongValue(1 << 32)).is_err());
        assert!(value_from_wire(DataType::UInt16, &Wire::IntValue(70_000)).is_err());
        assert_eq!(
            value_from_wire(DataType::UInt64, &Wire::LongValue(u64::MAX)),
            Ok(Value::UInt(u64::MAX))
        );
    }

    #[test]
    fn received_floats_are_their_shortest_decimal() {
        assert_eq!(
            value_from_wire(DataType::Float, &Wire::FloatValue(21.7)),
            Ok(Value::Float(21.7))
        );
        assert_eq!(
            value_from_wire(DataType::Double, &Wire::DoubleValue(f64::NAN)),
            Err(ValueError::NotFinite)
        );
    }

    #[test]
    fn mismatched_fields_and_values_are_errors() {
        assert!(matches!(
            value_from_wire(DataType::Boolean, &Wire::IntValue(1)),
            Err(ValueError::Mismatch { .. })
        ));
        assert!(matches!(
            value_from_wire(DataType::DataSet, &Wire::IntValue(1)),
            Err(ValueError::Unsupported(_))
        ));
        assert!(MetricValue::from_value(DataType::UInt16, &Value::Int(-1)).is_err());
        assert!(MetricValue::from_value(DataType::Int16, &Value::Float(1.5)).is_err());
        assert!(MetricValue::from_value(DataType::Boolean, &Value::Int(1)).is_err());
        assert!(MetricValue::from_value(DataType::Float, &Value::Float(1e300)).is_err());
        assert_eq!(
            MetricValue::from_value(DataType::Int16, &Value::Float(-3.0)),
            Ok(MetricValue::Int16(-3))
        );
    }

    proptest! {
        /// What we send, our decoder reads back as the same value (commands and the NCMD/DCMD
        /// codec share these rules).
        #[test]
        fn wire_round_trip((datatype, value) in typed_value()) {
            let metric = MetricValue::from_value(datatype, &value).unwrap();
            prop_assert_eq!(metric.datatype(), datatype);
            prop_assert_eq!(metric.to_value(), value.clone());
            prop_assert_eq!(value_from_wire(datatype, &metric.to_wire()), Ok(value));
        }

        #[test]
        fn decoding_any_integer_never_panics(raw: u32, long: u64, dt in 1i32..=12) {
            let datatype = DataType::try_from(dt).unwrap();
            let _ = value_from_wire(datatype, &Wire::IntValue(raw));
            let _ = value_from_wire(datatype, &Wire::LongValue(long));
        }
    }
}
