//! Registers and bits to engineering values and back (pure).
//!
//! A value of `n` registers is first brought into canonical order and then read as big-endian
//! bytes: each register's two bytes are swapped when `byte_order: little`, and the register list
//! is reversed when `word_order: little`. So for the 32-bit value `0xAABBCCDD`:
//!
//! | byte_order | word_order | registers on the wire | name |
//! |---|---|---|---|
//! | big | big | `AABB CCDD` | ABCD (the default, what the Modbus spec implies) |
//! | little | big | `BBAA DDCC` | BADC |
//! | big | little | `CCDD AABB` | CDAB |
//! | little | little | `DDCC BBAA` | DCBA |
//!
//! Strings are two ASCII characters per register in register order (`word_order` does not
//! apply; `byte_order: little` swaps the two characters of each register); the text ends at the
//! first NUL, so trailing NUL padding is trimmed. A byte above 0x7f is a decode error.
//!
//! `value = raw * scale + offset`; an integer type with `scale == 1` and `offset == 0` stays an
//! integer on the wire, so counters are exact (a u64 above `i64::MAX` is [`Value::UInt`]). A
//! non-finite result is an error, never a sample: JSON cannot carry NaN or infinity, and a NaN
//! from a device is a fault worth counting, not data.
//!
//! # Decimals
//!
//! A scaled value is rounded here, once, to the decimals the arithmetic implies, so the queue, the
//! wire, the on-site broker and `probe` all carry `0.3`, never `0.30000000000000004`: `raw *
//! scale + offset` in exact decimal arithmetic has at most `d(raw) + d(scale)` decimals, or
//! `d(offset)` if that is more, where `d(x)` counts the decimals of the shortest text of `x`
//! (`d(0.1) = 1`, `d(0.25) = 2`, `d(-273.15) = 2`, an integer raw value has none, an f32 has those
//! of its shortest text, `21.7`). Rounding to that many decimals gives the f64 nearest to the
//! exact result, which prints as it. A point's `decimals:` key replaces the implied count (at
//! most that many decimals, e.g. `decimals: 1` on a float from a device). Results whose digits
//! do not fit an f64's 53-bit mantissa are left as computed: they have no noise below their
//! precision to remove.
//!
//! [`encode_registers`] is the inverse, used by the simulator and by writes; the property tests
//! check that `decode(encode(v)) == v` for every type and order.

use std::sync::Arc;

use crate::config::{ByteOrder, DataType, Encoding, PointConfig, WordOrder};
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
    OutOfRange { value: String, data_type: DataType },
    #[error("a {0:?} value cannot be written as bool")]
    NotBool(Value),
    #[error("a {0:?} value cannot be written as a number")]
    NotNumber(Value),
    #[error("a {0:?} value cannot be written as a string")]
    NotString(Value),
    #[error("string is not ascii")]
    NotAscii,
    #[error("text of {len} bytes does not fit {registers} registers")]
    TooLong { len: usize, registers: u16 },
}

/// Scaling applied to a point's raw value, and the decimals the result keeps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scaling {
    pub scale: f64,
    pub offset: f64,
    /// The point's `decimals:` key: at most this many decimals. `None`: those the scale, the
    /// offset and the raw value imply (module header).
    pub decimals: Option<u8>,
}

impl Scaling {
    pub const IDENTITY: Scaling = Scaling {
        scale: 1.0,
        offset: 0.0,
        decimals: None,
    };

    /// How `point`'s raw reading becomes the published value: its scale, offset, decimals.
    pub fn of(point: &PointConfig) -> Scaling {
        Scaling {
            scale: point.scale,
            offset: point.offset,
            decimals: point.decimals,
        }
    }

    /// `raw * scale + offset` with the implied decimals.
    pub fn linear(scale: f64, offset: f64) -> Scaling {
        Scaling {
            scale,
            offset,
            decimals: None,
        }
    }

    pub fn is_identity(self) -> bool {
        self.scale == 1.0 && self.offset == 0.0
    }

    /// Integers stay integers when unscaled (whatever `decimals` says: they have none).
    pub(crate) fn apply_int(self, raw: i64) -> Result<Value, DecodeError> {
        if self.is_identity() {
            Ok(Value::Int(raw))
        } else {
            self.rounded(raw as f64 * self.scale + self.offset, 0)
        }
    }

    pub(crate) fn apply_u64(self, raw: u64) -> Result<Value, DecodeError> {
        if self.is_identity() {
            Ok(Value::from_u64(raw))
        } else {
            self.rounded(raw as f64 * self.scale + self.offset, 0)
        }
    }

    /// `raw` is the shortest-decimal f64 of the reading (a device's f32, a parsed text).
    pub(crate) fn apply_float(self, raw: f64) -> Result<Value, DecodeError> {
        if !raw.is_finite() {
            return Err(DecodeError::NotFinite);
        }
        if self.is_identity() && self.decimals.is_none() {
            return Ok(Value::Float(raw));
        }
        self.rounded(raw * self.scale + self.offset, decimal_places(raw))
    }

    /// `v` rounded to the explicit decimals, or to those implied by a raw value with
    /// `raw_places` decimals.
    fn rounded(self, v: f64, raw_places: u32) -> Result<Value, DecodeError> {
        if !v.is_finite() {
            return Err(DecodeError::NotFinite);
        }
        let places = match self.decimals {
            Some(places) => u32::from(places),
            None => (raw_places + decimal_places(self.scale)).max(decimal_places(self.offset)),
        };
        Ok(Value::Float(round_to(v, places)))
    }
}

/// Digits after the decimal point in the shortest text that round-trips `x` (`0.1` → 1,
/// `0.25` → 2, `40` → 0). Rust prints an f64 without an exponent, so these are all of them.
pub fn decimal_places(x: f64) -> u32 {
    let text = x.to_string();
    text.split_once('.')
        .map_or(0, |(_, fraction)| fraction.len() as u32)
}

/// The f64 nearest to `v` rounded to `places` decimals, which prints with at most that many:
/// `k / 10^places` with `k` a whole number below 2^53 and `10^places` exact (`places <= 22`),
/// and IEEE division rounds correctly. Outside those bounds `v` is returned as it is.
pub fn round_to(v: f64, places: u32) -> f64 {
    const EXACT_POWERS_OF_TEN: u32 = 22;
    const MANTISSA: f64 = 9_007_199_254_740_992.0; // 2^53
    if places > EXACT_POWERS_OF_TEN {
        return v;
    }
    let factor = 10f64.powi(places as i32);
    let scaled = v * factor;
    if !scaled.is_finite() || scaled.abs() >= MANTISSA {
        return v;
    }
    let rounded = scaled.round() / factor;
    // -0.0 prints as "-0.0": a reading that rounds to zero is zero.
    if rounded == 0.0 {
        0.0
    } else {
        rounded
    }
}

/// Decodes a bit of a coil or discrete input table.
pub fn decode_bit(bit: bool) -> Value {
    Value::Bool(bit)
}

/// Decodes bit `bit` (0 = least significant) of a register.
pub fn decode_register_bit(word: u16, bit: u8) -> Value {
    Value::Bool(word.checked_shr(u32::from(bit)).unwrap_or(0) & 1 == 1)
}

/// The registers of a value in canonical order (big bytes, big words) as bytes.
fn canonical_bytes(words: &[u16], encoding: Encoding) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(words.len() * 2);
    let mut push = |w: u16| match encoding.byte_order {
        ByteOrder::Big => bytes.extend_from_slice(&w.to_be_bytes()),
        ByteOrder::Little => bytes.extend_from_slice(&w.to_le_bytes()),
    };
    match encoding.word_order {
        WordOrder::Big => words.iter().copied().for_each(&mut push),
        WordOrder::Little => words.iter().rev().copied().for_each(&mut push),
    }
    bytes
}

/// Inverse of [`canonical_bytes`].
fn registers_from_canonical(bytes: &[u8], encoding: Encoding) -> Vec<u16> {
    let mut words: Vec<u16> = bytes
        .chunks(2)
        .map(|pair| {
            let pair = [pair[0], pair.get(1).copied().unwrap_or(0)];
            match encoding.byte_order {
                ByteOrder::Big => u16::from_be_bytes(pair),
                ByteOrder::Little => u16::from_le_bytes(pair),
            }
        })
        .collect();
    if encoding.word_order == WordOrder::Little {
        words.reverse();
    }
    words
}

/// The big-endian integer of up to 8 canonical bytes.
fn be_u64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b))
}

/// Decodes the registers of one point (`words.len() >= data_type.width()`; extra words are
/// ignored).
pub fn decode_registers(
    data_type: DataType,
    encoding: Encoding,
    words: &[u16],
    scaling: Scaling,
) -> Result<Value, DecodeError> {
    let needed = usize::from(data_type.width());
    let Some(words) = words.get(..needed) else {
        return Err(DecodeError::Short {
            data_type,
            needed,
            got: words.len(),
        });
    };
    if let DataType::String { .. } = data_type {
        let text_encoding = Encoding {
            word_order: WordOrder::Big,
            ..encoding
        };
        let bytes = canonical_bytes(words, text_encoding);
        let text = bytes.split(|&b| b == 0).next().unwrap_or(&[]);
        if !text.is_ascii() {
            return Err(DecodeError::NotAscii);
        }
        // ASCII is UTF-8.
        let text = std::str::from_utf8(text).map_err(|_| DecodeError::NotAscii)?;
        return Ok(Value::Str(Arc::from(text)));
    }
    let raw = be_u64(&canonical_bytes(words, encoding));
    match data_type {
        DataType::Bool => Ok(Value::Bool(raw != 0)),
        DataType::U16 | DataType::U32 => scaling.apply_int(raw as i64),
        DataType::I16 => scaling.apply_int(i64::from(raw as u16 as i16)),
        DataType::I32 => scaling.apply_int(i64::from(raw as u32 as i32)),
        DataType::U64 => scaling.apply_u64(raw),
        DataType::I64 => scaling.apply_int(raw as i64),
        DataType::F32 => {
            let raw = f32::from_bits(raw as u32);
            if !raw.is_finite() {
                return Err(DecodeError::NotFinite);
            }
            scaling.apply_float(shortest_f64(raw))
        }
        DataType::F64 => scaling.apply_float(f64::from_bits(raw)),
        DataType::String { .. } => Err(DecodeError::NotAscii),
    }
}

/// The f64 nearest to the shortest decimal that round-trips `v`: a device's 21.7f32 becomes
/// 21.7, not 21.700000762939453, in the payload. Converting back to f32 gives `v` again.
fn shortest_f64(v: f32) -> f64 {
    v.to_string().parse().unwrap_or(f64::from(v))
}

/// Encodes an engineering value into the registers of `data_type` (the inverse of
/// [`decode_registers`]); integers are rounded to the nearest raw value and range-checked.
/// Unscaled integers are encoded exactly (64-bit values do not pass through f64).
pub fn encode_registers(
    data_type: DataType,
    encoding: Encoding,
    value: &Value,
    scaling: Scaling,
) -> Result<Vec<u16>, DecodeError> {
    let out_of_range = || DecodeError::OutOfRange {
        value: value.to_json(),
        data_type,
    };
    let width = usize::from(data_type.width());
    let from_int = |raw: u64| {
        let bytes = raw.to_be_bytes();
        registers_from_canonical(&bytes[8 - width * 2..], encoding)
    };
    match data_type {
        DataType::Bool => {
            return match value {
                Value::Bool(b) => Ok(vec![u16::from(*b)]),
                other => Err(DecodeError::NotBool(other.clone())),
            }
        }
        DataType::String { length } => {
            let Value::Str(text) = value else {
                return Err(DecodeError::NotString(value.clone()));
            };
            if !text.is_ascii() || text.contains('\0') {
                return Err(DecodeError::NotAscii);
            }
            if text.len() > usize::from(length) * 2 {
                return Err(DecodeError::TooLong {
                    len: text.len(),
                    registers: length,
                });
            }
            let mut bytes = text.as_bytes().to_vec();
            bytes.resize(usize::from(length) * 2, 0);
            let text_encoding = Encoding {
                word_order: WordOrder::Big,
                ..encoding
            };
            return Ok(registers_from_canonical(&bytes, text_encoding));
        }
        _ => {}
    }
    // Exact integer path: no scaling and an integer value.
    let exact: Option<i128> = match (scaling.is_identity(), value) {
        (true, Value::Int(i)) => Some(i128::from(*i)),
        (true, Value::UInt(u)) => Some(i128::from(*u)),
        _ => None,
    };
    let engineering = value
        .as_f64()
        .filter(|_| !matches!(value, Value::Bool(_)))
        .ok_or_else(|| DecodeError::NotNumber(value.clone()))?;
    let raw = (engineering - scaling.offset) / scaling.scale;
    if !raw.is_finite() {
        return Err(DecodeError::NotFinite);
    }
    let int_in = |lo: i128, hi: i128| -> Result<i128, DecodeError> {
        let r = match exact {
            Some(r) => r,
            // `as` saturates; the bounds check below catches what did not fit.
            None => raw.round() as i128,
        };
        if r < lo || r > hi || (exact.is_none() && raw.round().abs() >= 1.8e19) {
            Err(out_of_range())
        } else {
            Ok(r)
        }
    };
    Ok(match data_type {
        DataType::U16 => from_int(int_in(0, i128::from(u16::MAX))? as u64),
        DataType::I16 => {
            from_int(int_in(i128::from(i16::MIN), i128::from(i16::MAX))? as i16 as u16 as u64)
        }
        DataType::U32 => from_int(int_in(0, i128::from(u32::MAX))? as u64),
        DataType::I32 => {
            from_int(int_in(i128::from(i32::MIN), i128::from(i32::MAX))? as i32 as u32 as u64)
        }
        DataType::U64 => from_int(int_in(0, i128::from(u64::MAX))? as u64),
        DataType::I64 => {
            from_int(int_in(i128::from(i64::MIN), i128::from(i64::MAX))? as i64 as u64)
        }
        DataType::F32 => {
            if raw.abs() > f64::from(f32::MAX) {
                return Err(out_of_range());
            }
            from_int(u64::from((raw as f32).to_bits()))
        }
        DataType::F64 => from_int(raw.to_bits()),
        DataType::Bool | DataType::String { .. } => return Err(out_of_range()),
    })
}

/// Shorthand for callers that have a bit table.
pub fn encode_bit(value: &Value) -> Result<bool, DecodeError> {
    match value {
        Value::Bool(b) => Ok(*b),
        other => Err(DecodeError::NotBool(other.clone())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ID: Scaling = Scaling::IDENTITY;
    const ABCD: Encoding = Encoding {
        byte_order: ByteOrder::Big,
        word_order: WordOrder::Big,
    };
    const ORDERS: [Encoding; 4] = [
        ABCD,
        Encoding {
            byte_order: ByteOrder::Little,
            word_order: WordOrder::Big,
        },
        Encoding {
            byte_order: ByteOrder::Big,
            word_order: WordOrder::Little,
        },
        Encoding {
            byte_order: ByteOrder::Little,
            word_order: WordOrder::Little,
        },
    ];

    fn dec(t: DataType, words: &[u16]) -> Result<Value, DecodeError> {
        decode_registers(t, ABCD, words, ID)
    }

    #[test]
    fn big_endian_word_order() {
        assert_eq!(
            dec(DataType::U32, &[0x0001, 0x0002]),
            Ok(Value::Int(0x0001_0002))
        );
        assert_eq!(dec(DataType::I32, &[0xFFFF, 0xFFFE]), Ok(Value::Int(-2)));
        assert_eq!(dec(DataType::I16, &[0xFFFB]), Ok(Value::Int(-5)));
        let bits = 21.5f32.to_bits();
        assert_eq!(
            dec(DataType::F32, &[(bits >> 16) as u16, bits as u16]),
            Ok(Value::Float(21.5))
        );
    }

    #[test]
    fn the_four_orders_of_one_u32() {
        // 0xAABBCCDD as ABCD, BADC, CDAB, DCBA.
        let wire = [
            [0xAABB, 0xCCDD],
            [0xBBAA, 0xDDCC],
            [0xCCDD, 0xAABB],
            [0xDDCC, 0xBBAA],
        ];
        for (encoding, words) in ORDERS.iter().zip(wire) {
            assert_eq!(
                decode_registers(DataType::U32, *encoding, &words, ID),
                Ok(Value::Int(0xAABB_CCDD)),
                "{encoding:?}"
            );
            assert_eq!(
                encode_registers(DataType::U32, *encoding, &Value::Int(0xAABB_CCDD), ID),
                Ok(words.to_vec())
            );
        }
    }

    #[test]
    fn sixty_four_bit_values() {
        assert_eq!(
            dec(DataType::U64, &[0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF]),
            Ok(Value::UInt(u64::MAX))
        );
        assert_eq!(dec(DataType::U64, &[0, 0, 1, 2]), Ok(Value::Int(0x1_0002)));
        assert_eq!(
            dec(DataType::I64, &[0xFFFF, 0xFFFF, 0xFFFF, 0xFFFE]),
            Ok(Value::Int(-2))
        );
        let bits = (-1234.5f64).to_bits();
        let words = [
            (bits >> 48) as u16,
            (bits >> 32) as u16,
            (bits >> 16) as u16,
            bits as u16,
        ];
        assert_eq!(dec(DataType::F64, &words), Ok(Value::Float(-1234.5)));
    }

    #[test]
    fn strings_and_bits() {
        let s = |length| DataType::String { length };
        // "AB", "C\0", "\0\0": trailing NULs trimmed.
        assert_eq!(
            dec(s(3), &[0x4142, 0x4300, 0x0000]),
            Ok(Value::Str("ABC".into()))
        );
        let swapped = ORDERS[1];
        assert_eq!(
            decode_registers(s(2), swapped, &[0x4241, 0x0043], ID),
            Ok(Value::Str("ABC".into()))
        );
        assert_eq!(dec(s(1), &[0x41FF]), Err(DecodeError::NotAscii));
        assert_eq!(decode_register_bit(0b1000, 3), Value::Bool(true));
        assert_eq!(decode_register_bit(0b1000, 2), Value::Bool(false));
        assert_eq!(decode_register_bit(0x8000, 15), Value::Bool(true));
        assert!(matches!(
            encode_registers(s(1), ABCD, &Value::Str("abc".into()), ID),
            Err(DecodeError::TooLong { .. })
        ));
    }

    #[test]
    fn scaling_makes_floats() {
        let s = Scaling::linear(0.01, 0.0);
        assert_eq!(
            decode_registers(DataType::U16, ABCD, &[1234], s),
            Ok(Value::Float(12.34))
        );
    }

    /// The noise the naive arithmetic leaves (`3 * 0.1 = 0.30000000000000004`) is gone, and the
    /// value prints with the decimals of its scale and offset.
    #[test]
    fn scaled_values_keep_the_decimals_their_scale_implies() {
        let json = |t, words: &[u16], s| decode_registers(t, ABCD, words, s).unwrap().to_json();
        assert_eq!(json(DataType::U16, &[3], Scaling::linear(0.1, 0.0)), "0.3");
        assert_eq!(
            json(DataType::U16, &[569], Scaling::linear(0.1, 0.0)),
            "56.9"
        );
        assert_eq!(
            json(DataType::I16, &[0xFFFD], Scaling::linear(0.1, 0.0)),
            "-0.3"
        );
        assert_eq!(
            json(DataType::U16, &[7], Scaling::linear(0.25, 0.0)),
            "1.75"
        );
        assert_eq!(
            json(DataType::U16, &[3], Scaling::linear(0.1, -273.15)),
            "-272.85"
        );
        assert_eq!(json(DataType::U16, &[1], Scaling::linear(2.0, 0.5)), "2.5");
        assert_eq!(json(DataType::U16, &[0], Scaling::linear(0.1, 0.0)), "0.0");
        // An f32 keeps its own decimals plus the scale's: 21.7 * 0.1 = 2.17 exactly.
        let bits = 21.7f32.to_bits();
        let words = [(bits >> 16) as u16, bits as u16];
        assert_eq!(
            json(DataType::F32, &words, Scaling::linear(0.1, 0.0)),
            "2.17"
        );
        // The `decimals:` key caps them, also on an unscaled float; integers stay integers.
        let one = Scaling {
            decimals: Some(0),
            ..Scaling::IDENTITY
        };
        assert_eq!(json(DataType::F32, &words, one), "22.0");
        assert_eq!(json(DataType::U16, &[7], one), "7");
        let two = Scaling {
            decimals: Some(2),
            ..Scaling::linear(1.0 / 3.0, 0.0)
        };
        assert_eq!(json(DataType::U16, &[1], two), "0.33");
    }

    #[test]
    fn round_to_leaves_what_it_cannot_round_exactly() {
        assert_eq!(round_to(0.30000000000000004, 1), 0.3);
        assert_eq!(round_to(1e300, 2), 1e300);
        assert_eq!(round_to(0.123, 40), 0.123);
        assert_eq!(round_to(-0.04, 1).to_string(), "0");
        assert_eq!(decimal_places(0.1), 1);
        assert_eq!(decimal_places(-273.15), 2);
        assert_eq!(decimal_places(1e-7), 7);
        assert_eq!(decimal_places(40.0), 0);
    }

    #[test]
    fn f32_is_reported_with_its_shortest_decimal() {
        let bits = 21.7f32.to_bits();
        assert_eq!(
            dec(DataType::F32, &[(bits >> 16) as u16, bits as u16]),
            Ok(Value::Float(21.7))
        );
    }

    #[test]
    fn nan_and_short_input_are_errors() {
        let nan = f32::NAN.to_bits();
        assert_eq!(
            dec(DataType::F32, &[(nan >> 16) as u16, nan as u16]),
            Err(DecodeError::NotFinite)
        );
        assert_eq!(
            dec(DataType::F64, &[0x7FF0, 0, 0, 0]),
            Err(DecodeError::NotFinite)
        );
        assert!(matches!(
            dec(DataType::U32, &[1]),
            Err(DecodeError::Short { .. })
        ));
    }

    #[test]
    fn encode_refuses_out_of_range() {
        let enc = |t, v: Value| encode_registers(t, ABCD, &v, ID);
        assert!(enc(DataType::U16, Value::Int(70_000)).is_err());
        assert!(enc(DataType::I16, Value::Int(-40_000)).is_err());
        assert!(enc(DataType::U64, Value::Int(-1)).is_err());
        assert!(enc(DataType::I64, Value::UInt(u64::MAX)).is_err());
        assert!(enc(DataType::Bool, Value::Int(1)).is_err());
        assert!(enc(DataType::U16, Value::Str("1".into())).is_err());
        assert!(enc(DataType::U64, Value::Float(1e30)).is_err());
    }

    fn int_type() -> impl Strategy<Value = (DataType, Value)> {
        prop_oneof![
            (0i64..=0xFFFF).prop_map(|v| (DataType::U16, Value::Int(v))),
            (-0x8000i64..=0x7FFF).prop_map(|v| (DataType::I16, Value::Int(v))),
            (0i64..=0xFFFF_FFFF).prop_map(|v| (DataType::U32, Value::Int(v))),
            (i64::from(i32::MIN)..=i64::from(i32::MAX))
                .prop_map(|v| (DataType::I32, Value::Int(v))),
            any::<u64>().prop_map(|v| (DataType::U64, Value::from_u64(v))),
            any::<i64>().prop_map(|v| (DataType::I64, Value::Int(v))),
        ]
    }

    proptest! {
        #[test]
        fn integers_round_trip_in_every_order((data_type, v) in int_type(), order in 0usize..4) {
            let e = ORDERS[order];
            let words = encode_registers(data_type, e, &v, ID).unwrap();
            prop_assert_eq!(words.len(), usize::from(data_type.width()));
            prop_assert_eq!(decode_registers(data_type, e, &words, ID), Ok(v));
        }

        #[test]
        fn scaled_integers_round_trip(raw in 0u16..=u16::MAX, scale in 0.001f64..1000.0, offset in -1000.0f64..1000.0) {
            let s = Scaling::linear(scale, offset);
            let value = decode_registers(DataType::U16, ABCD, &[raw], s).unwrap();
            prop_assert_eq!(encode_registers(DataType::U16, ABCD, &value, s).unwrap(), vec![raw]);
        }

        /// Any raw value times a decimal scale plus a decimal offset is the exact decimal result
        /// (computed here in integers), printed with at most the implied decimals.
        #[test]
        fn scaled_integers_are_the_exact_decimal(
            raw in -10_000_000i32..10_000_000,
            (scale_mantissa, scale_places) in (1i64..=2000, 0u32..=4),
            (offset_mantissa, offset_places) in (-100_000i64..=100_000, 0u32..=3),
        ) {
            let scale: f64 = format!("{}e-{scale_places}", scale_mantissa).parse().unwrap();
            let offset: f64 = format!("{}e-{offset_places}", offset_mantissa).parse().unwrap();
            let s = Scaling::linear(scale, offset);
            let value = decode_registers(DataType::I32, ABCD, &[(raw >> 16) as u16, raw as u16], s).unwrap();
            // Exact: raw * scale + offset over the common power of ten.
            let places = scale_places.max(offset_places);
            let exact = i128::from(raw) * i128::from(scale_mantissa) * 10i128.pow(places - scale_places)
                + i128::from(offset_mantissa) * 10i128.pow(places - offset_places);
            let expected = exact as f64 / 10f64.powi(places as i32);
            prop_assert_eq!(&value, &Value::Float(if expected == 0.0 { 0.0 } else { expected }));
            let text = value.to_json();
            let decimals = text.split_once('.').map_or(0, |(_, f)| f.len() as u32);
            prop_assert!(decimals <= places.max(1), "{} has more than {} decimals", text, places);
        }

        /// The rule of thumb users see: any raw × 0.1 prints at most one decimal.
        #[test]
        fn tenths_print_one_decimal(raw in any::<i16>()) {
            let value = decode_registers(DataType::I16, ABCD, &[raw as u16], Scaling::linear(0.1, 0.0)).unwrap();
            let text = value.to_json();
            prop_assert_eq!(text.split_once('.').map(|(_, f)| f.len()), Some(1), "{}", text);
        }

        #[test]
        fn f32_round_trips(v in any::<f32>().prop_filter("finite", |v| v.is_finite()), order in 0usize..4) {
            let e = ORDERS[order];
            let words = encode_registers(DataType::F32, e, &Value::Float(f64::from(v)), ID).unwrap();
            let Ok(Value::Float(decoded)) = decode_registers(DataType::F32, e, &words, ID) else {
                panic!("f32 decodes to a float");
            };
            prop_assert_eq!((decoded as f32).to_bits(), v.to_bits());
            let again = encode_registers(DataType::F32, e, &Value::Float(decoded), ID).unwrap();
            prop_assert_eq!(again, words);
        }

        #[test]
        fn f64_round_trips(v in any::<f64>().prop_filter("finite", |v| v.is_finite()), order in 0usize..4) {
            let e = ORDERS[order];
            let words = encode_registers(DataType::F64, e, &Value::Float(v), ID).unwrap();
            prop_assert_eq!(decode_registers(DataType::F64, e, &words, ID), Ok(Value::Float(v)));
        }

        #[test]
        fn strings_round_trip(text in "[ -~]{0,20}", extra in 0u16..4, order in 0usize..4) {
            let length = (text.len() as u16).div_ceil(2) + extra;
            let t = DataType::String { length: length.max(1) };
            let e = ORDERS[order];
            let v = Value::Str(text.as_str().into());
            let words = encode_registers(t, e, &v, ID).unwrap();
            prop_assert_eq!(decode_registers(t, e, &words, ID), Ok(v));
        }

        #[test]
        fn decode_never_panics(words in proptest::collection::vec(any::<u16>(), 0..8), t in 0usize..10, order in 0usize..4) {
            let types = [DataType::Bool, DataType::U16, DataType::I16, DataType::U32, DataType::I32,
                DataType::U64, DataType::I64, DataType::F32, DataType::F64, DataType::String { length: 3 }];
            if let Ok(v) = decode_registers(types[t], ORDERS[order], &words, ID) {
                prop_assert!(v.as_f64().is_none_or(f64::is_finite));
            }
        }
    }
}
