//! Any register words from a device decode, in any byte/word order, to a finite value or a
//! typed error, never a panic; what decodes re-encodes to registers that decode the same.
#![no_main]

use fieldrelay::config::{ByteOrder, DataType, Encoding, WordOrder};
use fieldrelay::modbus::decode::{decode_registers, encode_registers, Scaling};
use libfuzzer_sys::fuzz_target;

const TYPES: [DataType; 10] = [
    DataType::Bool,
    DataType::U16,
    DataType::I16,
    DataType::U32,
    DataType::I32,
    DataType::U64,
    DataType::I64,
    DataType::F32,
    DataType::F64,
    DataType::String { length: 4 },
];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else { return };
    let words: Vec<u16> = rest
        .chunks_exact(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]))
        .collect();
    let data_type = TYPES[usize::from(selector & 0x0f) % TYPES.len()];
    let encoding = Encoding {
        byte_order: if selector & 0x10 == 0 { ByteOrder::Big } else { ByteOrder::Little },
        word_order: if selector & 0x20 == 0 { WordOrder::Big } else { WordOrder::Little },
    };
    if let Ok(value) = decode_registers(data_type, encoding, &words, Scaling::IDENTITY) {
        assert!(value.as_f64().is_none_or(f64::is_finite));
        if let Ok(again) = encode_registers(data_type, encoding, &value, Scaling::IDENTITY) {
            assert_eq!(
                decode_registers(data_type, encoding, &again, Scaling::IDENTITY),
                Ok(value)
            );
        }
    }
});
