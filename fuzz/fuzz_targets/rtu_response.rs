//! Any bytes received on an RTU line parse to a frame, a counted CRC error, garbage or "need
//! more", never a panic; a parsed frame checked against any request gives a reply or a
//! mismatch.
#![no_main]

use fieldrelay::config::Table;
use fieldrelay::modbus::frame::{interpret, parse_rtu_response, ParsedFrame, Request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else { return };
    let request = match selector % 4 {
        0 => Request::Read { table: Table::Holding, start: 0, count: u16::from(selector) + 1 },
        1 => Request::Read { table: Table::Coil, start: 3, count: u16::from(selector) * 7 + 1 },
        2 => Request::WriteRegister { address: 1, value: 2 },
        _ => Request::WriteCoils { address: 1, values: vec![true; usize::from(selector) + 1] },
    };
    match parse_rtu_response(rest) {
        ParsedFrame::Frame { len, unit, function, data } => {
            assert!(len <= rest.len());
            let _ = interpret(&request, 1, unit, function, &data);
        }
        ParsedFrame::BadCrc { len } => assert!(len <= rest.len()),
        ParsedFrame::Incomplete(n) => assert!(n > rest.len()),
        ParsedFrame::Garbage => {}
    }
});
