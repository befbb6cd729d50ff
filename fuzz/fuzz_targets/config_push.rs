//! Any bytes a broker delivers on `P/config/set` parse to a push or to a refusal with a reason,
//! never a panic; a push's text goes through the pushed-configuration check and the redaction
//! of `P/config/current` without a panic, and every answer is valid JSON echoing the id.
#![no_main]

use fieldrelay::remote_config::payload::{parse_push, Answer, Status};
use fieldrelay::remote_config::redact::redacted;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match parse_push(data) {
        Ok(push) => {
            let _ = fieldrelay::config::load_pushed(&push.config, "fuzz.yaml");
            let _ = redacted(&push.config);
            let id = serde_json::Value::String(push.id.clone());
            let text = Answer::new(id.clone(), Status::Invalid, 0).to_json();
            let json: serde_json::Value = serde_json::from_str(&text).expect("an answer is json");
            assert_eq!(json["id"], id);
        }
        Err(bad) => assert!(!bad.error.is_empty()),
    }
});
