//! Any bytes received from a Modbus TCP device parse to a frame, garbage or "need more", never
//! a panic; a frame checked against any request gives a reply or a mismatch, and a read reply
//! taken as data holds exactly the requested count of registers or bits (a malformed frame
//! never becomes a value).
#![no_main]

use fieldrelay::config::Table;
use fieldrelay::modbus::frame::{interpret, Request, Response};
use fieldrelay::modbus::mbap::{parse_response, ParsedAdu, MAX_ADU};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else { return };
    let count = u16::from(selector) + 1;
    let request = match selector % 4 {
        0 => Request::Read { table: Table::Holding, start: 0, count: count.min(125) },
        1 => Request::Read { table: Table::Coil, start: 3, count: count * 7 },
        2 => Request::WriteRegister { address: 1, value: 2 },
        _ => Request::WriteRegisters { address: 1, values: vec![7; usize::from(count.min(123))] },
    };
    match parse_response(rest) {
        ParsedAdu::Frame { len, unit, function, data, .. } => {
            assert!(len <= rest.len() && len <= MAX_ADU);
            let expected = match &request {
                Request::Read { count, .. } => usize::from(*count),
                _ => 0,
            };
            match interpret(&request, 1, unit, function, &data) {
                Ok(Ok(Response::Words(words))) => assert_eq!(words.len(), expected),
                Ok(Ok(Response::Bits(bits))) => assert_eq!(bits.len(), expected),
                Ok(Ok(Response::Written)) => assert!(!matches!(request, Request::Read { .. })),
                Ok(Err(_)) | Err(_) => {}
            }
        }
        ParsedAdu::Incomplete(n) => assert!(n > rest.len() && n <= MAX_ADU),
        ParsedAdu::Garbage(_) => {}
    }
});
