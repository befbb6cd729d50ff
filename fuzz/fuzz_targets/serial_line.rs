//! Any bytes from a serial_line instrument split into lines or counted garbage with bounded
//! memory, and any line parses as every point type to a value or an error, never a panic.
#![no_main]

use fieldrelay::config::DataType;
use fieldrelay::modbus::decode::Scaling;
use fieldrelay::modbus::serial_line::{parse, LineSplitter, Piece, MAX_LINE};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let terminator: &[u8] = if data.first().is_some_and(|b| b & 1 == 1) { b"\r\n" } else { b"\n" };
    let mut splitter = LineSplitter::new(terminator);
    for chunk in data.chunks(97) {
        for piece in splitter.push(chunk) {
            if let Piece::Line(line) = piece {
                assert!(line.len() <= MAX_LINE + 97);
                for t in [DataType::U16, DataType::I64, DataType::U64, DataType::F64, DataType::String { length: 0 }] {
                    let _ = parse(&line, t, Scaling::linear(0.1, 1.0));
                }
            }
        }
    }
});
