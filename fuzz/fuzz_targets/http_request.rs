//! Any bytes a client of the metrics endpoint sends parse to a request, "incomplete" or an
//! error, never a panic; a complete head never exceeds the limit, and what parses answers.
#![no_main]

use fieldrelay::metrics::http::{parse_head, respond, MAX_HEAD};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // As the server reads: growing prefixes in 1 KiB steps, at most MAX_HEAD + one chunk.
    for end in (1..=data.len().min(MAX_HEAD + 1024)).step_by(1024).chain([data.len()]) {
        match parse_head(&data[..end.min(data.len())]) {
            Ok(Some(request)) => {
                assert!(request.path.starts_with('/'));
                let answer = respond(&request, || Some(String::from("m 1\n")));
                assert!(answer.starts_with(b"HTTP/1.1 "));
                break;
            }
            Ok(None) => assert!(end < MAX_HEAD),
            Err(_) => break,
        }
    }
});
