//! Registers and bits to engineering values and back (pure).
//!
//! Contract v1 uses big-endian byte order and big-endian word order (high word first, "ABCD"):
//! what most PLCs send and what the Modbus spec implies for 16-bit registers. `value = raw *
//! scale + offset`; an integer type with `scale == 1` and `offset == 0` stays an integer on the
//! wire, so counters are exact. A non-finite result is an error, never a sample: JSON cannot
//! carry NaN or infinity, and a NaN from a device is a fault worth counting, not data.
//!
//! [`encode`] is the inverse, used by the simulator now and by cloud writes later; the property
//! tests check that `decode(encode(v)) == v`.

use crate::config::DataType;
use crate::sample::Value;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    #[error("{data_type:?} needs {needed} registers, got {got}")]
    Short {
        data_type: DataType,
        needed: usize,
        got: usize,
    },
    #[error("decoded value is not finite")]
    NotFinite,
    #[error("value {value} does not fit {data_type:?}")]
    OutOfRange { value: f64, data_type: DataType },
    #[error("a {0:?} value cannot be written as bool")]
    NotBool(Value),
}

/// Scaling applied to a point's raw value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scaling {
    pub scale: f64,
    pub offset: f64,
}

impl Scaling {
    pub const IDENTITY: Scaling = Scaling {
        scale: 1.0,
        offset: 0.0,
    };

    fn is_identity(self) -> bool {
        self.scale == 1.0 && self.offset == 0.0
    }

    fn apply_int(self, raw: i64) -> Result<Value, DecodeError> {
        if self.is_identity() {
            Ok(Value::Int(raw))
        } else {
            finite(raw as f64 * self.scale + self.offset)
        }
    }
}

fn finite(v: f64) -> Result<Value, DecodeError> {
    if v.is_finite() {
        Ok(Value::Float(v))
    } else {
        Err(DecodeError::NotFinite)
    }
}

/// Decodes a bit of a coil or discrete input table.
pub fn decode_bit(bit: bool) -> Value {
    Value::Bool(bit)
}

/// Decodes the registers of one point (`words.len() >= data_type.width()`).
pub fn decode_registers(
    data_type: DataType,
    words: &[u16],
    scaling: Scaling,
) -> Result<Value, DecodeError> {
    let needed = usize::from(data_type.width());
    if words.len() < needed {
        return Err(DecodeError::Short {
            data_type,
            needed,
            got: words.len(),
        });
    }
    let pair = || (u32::from(words[0]) << 16) | u32::from(words[1]);
    match data_type {
        DataType::Bool => Ok(Value::Bool(words[0] != 0)),
        DataType::U16 => scaling.apply_int(i64::from(words[0])),
        DataType::I16 => scaling.apply_int(i64::from(words[0] as i16)),
        DataType::U32 => scaling.apply_int(i64::from(pair())),
        DataType::I32 => scaling.apply_int(i64::from(pair() as i32)),
        DataType::F32 => {
            let raw = f32::from_bits(pair());
            if !raw.is_finite() {
                return Err(DecodeError::NotFinite);
            }
            let raw = shortest_f64(raw);
            if scaling.is_identity() {
                return Ok(Value::Float(raw));
            }
            finite(raw * scaling.scale + scaling.offset)
        }
    }
}

/// The f64 nearest to the shortest decimal that round-trips `v`: a device's 21.7f32 becomes
/// 21.7, not 21.700000762939453, in the payload. Converting back to f32 gives `v` again.
fn shortest_f64(v: f32) -> f64 {
    v.to_string().parse().unwrap_or(f64::from(v))
}

/// Encodes an engineering value into the registers of `data_type` (the inverse of
/// [`decode_registers`]); integers are rounded to the nearest raw value and range-checked.
pub fn encode_registers(
    data_type: DataType,
    value: Value,
    scaling: Scaling,
) -> Result<Vec<u16>, DecodeError> {
    if let DataType::Bool = data_type {
        return match value {
            Value::Bool(b) => Ok(vec![u16::from(b)]),
            other => Err(DecodeError::NotBool(other)),
        };
    }
    let raw = (value.as_f64() - scaling.offset) / scaling.scale;
    if !raw.is_finite() {
        return Err(DecodeError::NotFinite);
    }
    let int_in = |lo: f64, hi: f64| -> Result<i64, DecodeError> {
        let r = raw.round();
        if r < lo || r > hi {
            Err(DecodeError::OutOfRange {
                value: value.as_f64(),
                data_type,
            })
        } else {
            Ok(r as i64)
        }
    };
    let split = |v: u32| vec![(v >> 16) as u16, v as u16];
    Ok(match data_type {
        DataType::Bool => unreachable!("handled above"),
        DataType::U16 => vec![int_in(0.0, f64::from(u16::MAX))? as u16],
        DataType::I16 => vec![int_in(f64::from(i16::MIN), f64::from(i16::MAX))? as i16 as u16],
        DataType::U32 => split(int_in(0.0, f64::from(u32::MAX))? as u32),
        DataType::I32 => split(int_in(f64::from(i32::MIN), f64::from(i32::MAX))? as i32 as u32),
        DataType::F32 => {
            if raw.abs() > f64::from(f32::MAX) {
                return Err(DecodeError::OutOfRange {
                    value: value.as_f64(),
                    data_type,
                });
            }
            split((raw as f32).to_bits())
        }
    })
}

/// Shorthand for [`encode`]-style callers that have a bit table.
pub fn encode_bit(value: Value) -> Result<bool, DecodeError> {
    match value {
        Value::Bool(b) => Ok(b),
        other => Err(DecodeError::NotBool(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ID: Scaling = Scaling::IDENTITY;

    #[test]
    fn big_endian_word_order() {
        assert_eq!(
            decode_registers(DataType::U32, &[0x0001, 0x0002], ID),
            Ok(Value::Int(0x0001_0002))
        );
        assert_eq!(
            decode_registers(DataType::I32, &[0xFFFF, 0xFFFE], ID),
            Ok(Value::Int(-2))
        );
        assert_eq!(
            decode_registers(DataType::I16, &[0xFFFB], ID),
            Ok(Value::Int(-5))
        );
        let bits = 21.5f32.to_bits();
        assert_eq!(
            decode_registers(DataType::F32, &[(bits >> 16) as u16, bits as u16], ID),
            Ok(Value::Float(21.5))
        );
    }

    #[test]
    fn scaling_makes_floats() {
        let s = Scaling {
            scale: 0.01,
            offset: 0.0,
        };
        match decode_registers(DataType::U16, &[1234], s) {
            Ok(Value::Float(v)) => assert!((v - 12.34).abs() < 1e-9),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn f32_is_reported_with_its_shortest_decimal() {
        let bits = 21.7f32.to_bits();
        assert_eq!(
            decode_registers(DataType::F32, &[(bits >> 16) as u16, bits as u16], ID),
            Ok(Value::Float(21.7))
        );
    }

    #[test]
    fn nan_and_short_input_are_errors() {
        let nan = f32::NAN.to_bits();
        assert_eq!(
            decode_registers(DataType::F32, &[(nan >> 16) as u16, nan as u16], ID),
            Err(DecodeError::NotFinite)
        );
        assert!(matches!(
            decode_registers(DataType::U32, &[1], ID),
            Err(DecodeError::Short { .. })
        ));
    }

    #[test]
    fn encode_refuses_out_of_range() {
        assert!(encode_registers(DataType::U16, Value::Int(70_000), ID).is_err());
        assert!(encode_registers(DataType::I16, Value::Int(-40_000), ID).is_err());
        assert!(encode_registers(DataType::Bool, Value::Int(1), ID).is_err());
    }

    fn int_type() -> impl Strategy<Value = (DataType, i64)> {
        prop_oneof![
            (0i64..=0xFFFF).prop_map(|v| (DataType::U16, v)),
            (-0x8000i64..=0x7FFF).prop_map(|v| (DataType::I16, v)),
            (0i64..=0xFFFF_FFFF).prop_map(|v| (DataType::U32, v)),
            (i64::from(i32::MIN)..=i64::from(i32::MAX)).prop_map(|v| (DataType::I32, v)),
        ]
    }

    proptest! {
        #[test]
        fn integers_round_trip((data_type, v) in int_type()) {
            let words = encode_registers(data_type, Value::Int(v), ID).unwrap();
            prop_assert_eq!(decode_registers(data_type, &words, ID), Ok(Value::Int(v)));
        }

        #[test]
        fn scaled_integers_round_trip(raw in 0u16..=u16::MAX, scale in 0.001f64..1000.0, offset in -1000.0f64..1000.0) {
            let s = Scaling { scale, offset };
            let value = decode_registers(DataType::U16, &[raw], s).unwrap();
            prop_assert_eq!(encode_registers(DataType::U16, value, s).unwrap(), vec![raw]);
        }

        #[test]
        fn f32_round_trips(v in any::<f32>().prop_filter("finite", |v| v.is_finite())) {
            let words = encode_registers(DataType::F32, Value::Float(f64::from(v)), ID).unwrap();
            let Ok(Value::Float(decoded)) = decode_registers(DataType::F32, &words, ID) else {
                panic!("f32 decodes to a float");
            };
            prop_assert_eq!((decoded as f32).to_bits(), v.to_bits());
            let again = encode_registers(DataType::F32, Value::Float(decoded), ID).unwrap();
            prop_assert_eq!(again, words);
        }

        #[test]
        fn decode_never_panics(words in proptest::collection::vec(any::<u16>(), 0..4), t in 0usize..6) {
            let types = [DataType::Bool, DataType::U16, DataType::I16, DataType::U32, DataType::I32, DataType::F32];
            let _ = decode_registers(types[t], &words, ID);
        }
    }
}
