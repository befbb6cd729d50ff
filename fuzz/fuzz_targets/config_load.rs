//! Any text given as a config file yields a config or located errors, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Err(errors) = fieldrelay::config::load_str(text, "fuzz.yaml") {
            assert!(!errors.errors.is_empty());
        }
    }
});
