//! Any register words from a device decode to a finite value or a typed error, never a panic.
#![no_main]

use fieldrelay::config::DataType;
use fieldrelay::modbus::decode::{decode_registers, Scaling};
use libfuzzer_sys::fuzz_target;

const TYPES: [DataType; 6] = [
    DataType::Bool,
    DataType::U16,
    DataType::I16,
    DataType::U32,
    DataType::I32,
    DataType::F32,
];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else { return };
    let words: Vec<u16> = rest
        .chunks_exact(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]))
        .collect();
    let data_type = TYPES[usize::from(selector) % TYPES.len()];
    if let Ok(value) = decode_registers(data_type, &words, Scaling::IDENTITY) {
        assert!(value.as_f64().is_finite());
    }
});
