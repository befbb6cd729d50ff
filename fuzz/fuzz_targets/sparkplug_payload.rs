//! Any bytes a broker delivers on an NCMD or DCMD topic decode to a command or to a typed error,
//! never a panic; a decoded command encodes back to one that decodes equal, and interpreting
//! its metrics against a node's aliases and point types gives a request or a refusal per metric.
#![no_main]

use fieldrelay::sparkplug::command::{interpret, Target};
use fieldrelay::sparkplug::payload::{decode_command, encode_command};
use fieldrelay::sparkplug::{AliasTable, DataType};
use libfuzzer_sys::fuzz_target;

fn point_type(device: &str, point: &str) -> Option<DataType> {
    match (device, point) {
        ("boiler", "setpoint") => Some(DataType::Int16),
        ("boiler", "mode") => Some(DataType::String),
        ("boiler", "trip") => Some(DataType::Boolean),
        ("boiler", "flow") => Some(DataType::Double),
        ("boiler", "count") => Some(DataType::UInt64),
        _ => None,
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(command) = decode_command(data) else {
        return;
    };
    let again = decode_command(&encode_command(&command)).expect("our own encoding decodes");
    // NaN floats compare unequal; compare their encodings instead.
    assert_eq!(encode_command(&again), encode_command(&command));
    let aliases = AliasTable::new(
        [("boiler", ["setpoint", "mode", "trip", "flow", "count"])],
        ["Queue/Depth"],
    );
    for target in [Target::Node, Target::Device("boiler")] {
        let results = interpret(target, &command, &aliases, point_type);
        assert_eq!(results.len(), command.metrics.len());
    }
});
