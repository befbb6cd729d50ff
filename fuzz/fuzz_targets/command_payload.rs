//! Any bytes a broker delivers on a command topic parse to a command or to a refusal with a
//! reason, never a panic; what parses renders a result that is valid JSON echoing its id.
#![no_main]

use fieldrelay::commands::result::{payload, Outcome};
use fieldrelay::commands::CommandPayload;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match CommandPayload::parse(data) {
        Ok(command) => {
            let outcome = Outcome::Done {
                value: command.value.clone(),
                note: None,
            };
            let text = payload(command.id.as_ref(), &outcome, 0);
            let json: serde_json::Value = serde_json::from_str(&text).expect("a result is json");
            if let Some(id) = &command.id {
                assert_eq!(&json["id"], id.json());
            }
        }
        Err(error) => assert!(!error.reason.is_empty()),
    }
});
