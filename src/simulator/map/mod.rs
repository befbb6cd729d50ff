//! Simulator files: what `fieldrelay simulate --config FILE` serves when FILE starts with a
//! `simulator:` section instead of a gateway configuration. Every key, its type, default and unit
//! is documented in `docs/configuration.md` ("Simulator files").
//!
//! ```yaml
//! simulator:
//!   tick: 1s                      # default 1s: how often moving values change
//!   endpoints:                    # at least one; all serve the same units
//!     - type: tcp                 # tcp | rtu_over_tcp | rtu
//!       host: 127.0.0.1           # default 127.0.0.1 (network endpoints only)
//!       port: 5020                # required; 0 picks a free port (logged)
//!     - type: rtu
//!       port: /dev/pts/7          # e.g. one end of `socat pty,link=A pty,link=B`
//!       baud_rate: 19200          # default 19200; parity default even; stop_bits 1 or 2, default 1
//!   units:
//!     - unit_id: 1                # 0 to 255, each unit once
//!       registers:
//!         - {table: holding, address: 0, type: f32, value: 21.5}                 # static
//!         - {table: holding, address: 2, type: u32, counter: {start: 0, step: 1}}
//!         - {table: input, address: 0, type: f32, sine: {min: 15, max: 25, period: 60s}}
//!         - {table: input, address: 2, type: u16, ramp: {from: 0, to: 100, period: 10s}}
//!         - {table: holding, address: 10, type: string, length: 4, value: "AB-7"}
//!         - {table: holding, address: 20, type: bool, bit: 3, value: true}        # one bit
//!         - {table: coil, address: 0, type: bool, value: true}
//! ```
//!
//! `table`, `address`, `type`, `length`, `bit`, `byte_order`, `word_order`, `scale` and `offset`
//! mean what they mean for a gateway point and are checked by the gateway's own rules, so a
//! simulator file can mirror a device's register map exactly; values are engineering values (the
//! register holds `(value - offset) / scale`, what a point with the same keys reads back).
//!
//! Loading follows the gateway configuration's standard (`crate::config::checks`): the same
//! pipeline, so every problem of the file is reported at once as
//! `FILE:LINE:COLUMN: KEY.PATH: message`, and `fieldrelay simulate` exits 78 like `check`.
//! Nothing is silently defaulted or ignored:
//! - a value that is not valid is an error, never replaced by a default (`stop_bits: 3`);
//! - a key that does not apply is an error (`baud_rate` on a tcp endpoint, `host` on rtu);
//! - every static value, counter start and sine or ramp bound must fit the register's type after
//!   `scale` and `offset`, checked by the encoder the simulator writes with, so a value the
//!   simulator could not write is refused up front instead of leaving the register at zero;
//! - registers of a unit may not overlap (the later one would overwrite the earlier each tick).
//!
//! What is left to run time: a counter that leaves its type's range stops there (the register
//! keeps its last value), and a hostname `host` is resolved when the endpoint is bound.
//!
//! This module holds the file's sections (endpoints, units) and the served map with its
//! [`Motion`]s, [`apply`] and [`run`]; `register` holds one register's keys and checks.

mod register;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value as Json;
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::{serve_rtu, set_point, Framing, Registers, Simulator, SimulatorError};
use crate::config::checks::{
    decode_document, decode_list, decode_mapping, in_range, is_host, load_document, optional,
    positive, refuse_keys, report_overlaps, require, serial_port, serial_settings, unknown_choice,
    BusTag, Decoded, DurationValue, Footprint, Issue, KeyPath, List, PortValue, RawBus,
};
use crate::config::{ConfigErrors, DataType, ModbusSource, SerialSettings};
use crate::modbus::decode::Scaling;
use crate::sample::Value;
use register::{check_register, RawRegister, Served};

/// How often moving values change when `tick` is not given.
pub const DEFAULT_TICK: Duration = Duration::from_secs(1);

/// Where network endpoints listen when `host` is not given: a simulator is for this machine
/// unless the file says otherwise.
pub const DEFAULT_HOST: &str = "127.0.0.1";

const ENDPOINT_TYPES: [&str; 3] = ["tcp", "rtu_over_tcp", "rtu"];

// The file's shape. As in the gateway configuration's raw structs, every field is an `Option`
// and enumerations stay strings: the decoder reports each bad key on its own, and the checks
// below word the rest.

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    simulator: Option<Json>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSimulator {
    tick: Option<DurationValue>,
    endpoints: Option<Vec<Json>>,
    units: Option<Vec<Json>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEndpoint {
    #[serde(rename = "type")]
    kind: Option<String>,
    host: Option<String>,
    /// A number for network endpoints, a device path for rtu.
    port: Option<PortValue>,
    baud_rate: Option<i64>,
    parity: Option<String>,
    stop_bits: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUnit {
    unit_id: Option<i64>,
    registers: Option<Vec<Json>>,
}

/// How a register's value moves.
#[derive(Debug, Clone, PartialEq)]
pub enum Motion {
    Static(Value),
    /// `start + step × ticks`.
    Counter {
        start: f64,
        step: f64,
    },
    /// Between `min` and `max`, one cycle per `period`.
    Sine {
        min: f64,
        max: f64,
        period: Duration,
    },
    /// Sawtooth from `from` to `to` over `period`.
    Ramp {
        from: f64,
        to: f64,
        period: Duration,
    },
}

impl Motion {
    /// The value after `ticks` ticks, `elapsed` since start (pure).
    pub fn value_at(&self, ticks: u64, elapsed: Duration, data_type: DataType) -> Value {
        let number = match self {
            Motion::Static(value) => return value.clone(),
            Motion::Counter { start, step } => start + step * ticks as f64,
            Motion::Sine { min, max, period } => {
                let phase = elapsed.as_secs_f64() / period.as_secs_f64().max(1e-3);
                min + (max - min) * (0.5 + 0.5 * (std::f64::consts::TAU * phase).sin())
            }
            Motion::Ramp { from, to, period } => {
                let phase = (elapsed.as_secs_f64() / period.as_secs_f64().max(1e-3)).fract();
                from + (to - from) * phase
            }
        };
        typed(number, data_type)
    }
}

/// A moving value as the register's type holds it.
fn typed(number: f64, data_type: DataType) -> Value {
    match data_type {
        DataType::Bool => Value::Bool(number.round() as i64 % 2 != 0),
        DataType::F32 | DataType::F64 => Value::Float(number),
        DataType::String { .. } => Value::Str(Arc::from(format!("{number}").as_str())),
        DataType::U64 => Value::from_u64(number.max(0.0).round() as u64),
        _ => Value::Int(number.round() as i64),
    }
}

/// One served register (or bit) with its motion.
#[derive(Debug, Clone)]
pub struct SimPoint {
    pub unit: u8,
    pub source: ModbusSource,
    pub data_type: DataType,
    pub scaling: Scaling,
    pub motion: Motion,
}

/// Where the simulator listens.
#[derive(Debug, Clone, PartialEq)]
pub enum SimEndpoint {
    Network {
        host: String,
        port: u16,
        framing: Framing,
    },
    Rtu(SerialSettings),
}

/// A parsed simulator file.
#[derive(Debug, Clone)]
pub struct SimMap {
    pub tick: Duration,
    pub endpoints: Vec<SimEndpoint>,
    pub points: Vec<SimPoint>,
}

/// Whether `text` is a simulator file (its top level has a `simulator` key).
pub fn is_simulator_file(text: &str) -> bool {
    text.lines()
        .any(|line| line.trim_end().starts_with("simulator:"))
}

/// Parses and checks a simulator file; `file` names it in the errors. Every problem of the file
/// is returned, located, in the format of `fieldrelay check`.
pub fn parse(text: &str, file: &str) -> Result<SimMap, ConfigErrors> {
    load_document(text, file, build)
}

/// Steps 4 and 5 of the loader for a simulator file: decode and check everything, then build
/// the map only if nothing was wrong.
fn build(document: &Json, issues: &mut Vec<Issue>) -> Option<SimMap> {
    let file = decode_document::<RawFile>(
        document,
        "a simulator file",
        "the simulator file is empty: expected a simulator section",
        issues,
    )?;
    let section = require(&file.keys, "simulator", &file.value.simulator, issues)?;
    let Decoded { value: raw, keys } = decode_mapping::<RawSimulator>(
        section,
        &file.keys.path_of("simulator"),
        "the simulator section",
        issues,
    )?;
    let tick = optional(&keys, "tick", raw.tick.map(|d| d.0), DEFAULT_TICK)
        .and_then(|tick| positive(&keys, "tick", tick, issues));
    let endpoints = require(&keys, "endpoints", &raw.endpoints, issues).and_then(|items| {
        if items.is_empty() {
            issues.push(Issue::value(
                keys.path_of("endpoints"),
                "at least one endpoint is required",
            ));
        }
        let list = decode_list(
            items.clone(),
            keys.path_of("endpoints"),
            |value, path, issues| {
                let endpoint = decode_mapping::<RawEndpoint>(&value, &path, "an endpoint", issues)?;
                check_endpoint(&endpoint, issues)
            },
            issues,
        );
        complete(list).filter(|endpoints| !endpoints.is_empty())
    });
    let units = require(&keys, "units", &raw.units, issues).and_then(|items| {
        let list = decode_list(
            items.clone(),
            keys.path_of("units"),
            |value, path, issues| decode_mapping::<RawUnit>(&value, &path, "a unit", issues),
            issues,
        );
        // Every unit is checked before any result is used: one bad unit hides nothing.
        let points: Vec<Option<Vec<SimPoint>>> = list
            .items
            .iter()
            .map(|unit| check_unit(unit, issues))
            .collect();
        check_unique_units(&list.items, issues);
        let points: Option<Vec<Vec<SimPoint>>> = complete(List {
            path: list.path,
            len: list.len,
            items: points,
        })?
        .into_iter()
        .collect();
        points.map(|units| units.concat())
    });
    Some(SimMap {
        tick: tick?,
        endpoints: endpoints?,
        points: units?,
    })
}

/// The items of `list` if every one that was written could be used.
fn complete<T>(list: List<T>) -> Option<Vec<T>> {
    (list.items.len() == list.len).then_some(list.items)
}

fn check_endpoint(endpoint: &Decoded<RawEndpoint>, issues: &mut Vec<Issue>) -> Option<SimEndpoint> {
    let (raw, keys) = (&endpoint.value, &endpoint.keys);
    let kind = require(keys, "type", &raw.kind, issues)?;
    let framing = match kind.as_str() {
        "tcp" => Framing::Tcp,
        "rtu_over_tcp" => Framing::RtuOverTcp,
        "rtu" => {
            refuse_keys(keys, &["host"], "an rtu endpoint", issues);
            // The gateway's rules for an rtu bus's line, so both ends of a pair agree on them.
            let bus = RawBus {
                port: raw.port.clone(),
                baud_rate: raw.baud_rate,
                parity: raw.parity.clone(),
                stop_bits: raw.stop_bits,
                ..RawBus::default()
            };
            let port = serial_port(keys, &bus, issues);
            return serial_settings(keys, &bus, BusTag::Rtu, port, issues).map(SimEndpoint::Rtu);
        }
        other => {
            issues.push(Issue::value(
                keys.path_of("type"),
                unknown_choice("endpoint type", other, &ENDPOINT_TYPES),
            ));
            return None;
        }
    };
    refuse_keys(
        keys,
        &["baud_rate", "parity", "stop_bits"],
        &format!("a {kind} endpoint"),
        issues,
    );
    let host = optional(keys, "host", raw.host.clone(), DEFAULT_HOST.to_owned()).and_then(|host| {
        if is_host(&host) {
            Some(host)
        } else {
            issues.push(Issue::value(
                keys.path_of("host"),
                format!("invalid host {host:?}: expected a host name or an ip address"),
            ));
            None
        }
    });
    let port = require(keys, "port", &raw.port, issues).and_then(|port| match port {
        // 0 asks the system for a free port; the simulator logs the one it got.
        PortValue::Number(port) => in_range(keys, "port", *port, 0, 65_535, issues)
            .and_then(|port| u16::try_from(port).ok()),
        PortValue::Path(text) => {
            issues.push(Issue::value(
                keys.path_of("port"),
                format!("expected a tcp port number (0 to 65535), got the text {text:?}"),
            ));
            None
        }
    });
    Some(SimEndpoint::Network {
        host: host?,
        port: port?,
        framing,
    })
}

/// The unit's registers as points; `None` if the unit or any register is invalid (every
/// problem is reported).
fn check_unit(unit: &Decoded<RawUnit>, issues: &mut Vec<Issue>) -> Option<Vec<SimPoint>> {
    let (raw, keys) = (&unit.value, &unit.keys);
    let unit_id = require(keys, "unit_id", &raw.unit_id, issues)
        .and_then(|id| in_range(keys, "unit_id", *id, 0, 255, issues))
        .and_then(|id| u8::try_from(id).ok());
    let list = decode_list(
        raw.registers.clone().unwrap_or_default(),
        keys.path_of("registers"),
        |value, path, issues| decode_mapping::<RawRegister>(&value, &path, "a register", issues),
        issues,
    );
    let checked: Vec<(Option<Served>, Option<Footprint>)> = list
        .items
        .iter()
        .map(|register| check_register(register, issues))
        .collect();
    check_overlaps(&list.items, &checked, issues);
    let unit_id = unit_id?;
    if list.items.len() != list.len {
        return None;
    }
    checked
        .into_iter()
        .map(|(served, _)| {
            let served = served?;
            Some(SimPoint {
                unit: unit_id,
                source: served.source,
                data_type: served.data_type,
                scaling: served.scaling,
                motion: served.motion,
            })
        })
        .collect()
}

/// A unit written twice is a copy-paste mistake: its registers would silently merge.
fn check_unique_units(units: &[Decoded<RawUnit>], issues: &mut Vec<Issue>) {
    let mut first: HashMap<i64, KeyPath> = HashMap::new();
    for unit in units {
        let Some(id) = unit.value.unit_id else {
            continue;
        };
        let path = unit.keys.path_of("unit_id");
        match first.get(&id) {
            Some(first_path) => issues.push(
                Issue::value(path, format!("duplicate unit id {id}: list each unit once"))
                    .with_note(first_path.clone(), "first defined"),
            ),
            None => {
                first.insert(id, path);
            }
        }
    }
}

/// Reports each register that overlaps an earlier one of its unit (once, against the first).
fn check_overlaps(
    registers: &[Decoded<RawRegister>],
    checked: &[(Option<Served>, Option<Footprint>)],
    issues: &mut Vec<Issue>,
) {
    report_overlaps(
        registers,
        checked.iter().map(|(_, footprint)| *footprint),
        |_, earlier, footprint| {
            format!(
                "{} overlaps registers[{earlier}] of this unit: each would overwrite the other",
                footprint.describe()
            )
        },
        issues,
    );
}

/// Applies every point's value at `ticks`/`elapsed` to `regs`.
pub fn apply(map: &SimMap, regs: &Registers, ticks: u64, elapsed: Duration) {
    for point in &map.points {
        let value = point.motion.value_at(ticks, elapsed, point.data_type);
        // Engineering values: scale and offset give the raw value. One that does not fit (a
        // counter past its type's range; everything else was checked at load) is skipped, and
        // the register keeps its last value.
        set_point(
            regs,
            point.unit,
            &point.source,
            point.data_type,
            point.scaling,
            &value,
        );
    }
}

/// Serves `map` until `cancel` fires.
pub async fn run(
    map: SimMap,
    regs: Registers,
    cancel: CancellationToken,
) -> Result<(), SimulatorError> {
    let mut servers = tokio::task::JoinSet::new();
    apply(&map, &regs, 0, Duration::ZERO);
    for endpoint in &map.endpoints {
        match endpoint {
            SimEndpoint::Network {
                host,
                port,
                framing,
            } => {
                let addr = tokio::net::lookup_host((host.as_str(), *port))
                    .await
                    .ok()
                    .and_then(|mut a| a.next())
                    .ok_or_else(|| SimulatorError::Bind {
                        addr: format!("{host}:{port}"),
                        source: std::io::Error::other("cannot resolve"),
                    })?;
                let sim = Simulator::bind_with(addr, regs.clone(), *framing)
                    .await
                    .map_err(|source| SimulatorError::Bind {
                        addr: addr.to_string(),
                        source,
                    })?;
                info!(addr = %sim.local_addr(), ?framing, "simulating");
                servers.spawn(sim.run(cancel.clone()));
            }
            SimEndpoint::Rtu(settings) => {
                info!(port = %settings.port, "simulating rtu");
                servers.spawn(serve_rtu(settings.clone(), regs.clone(), cancel.clone()));
            }
        }
    }
    let start = tokio::time::Instant::now();
    super::serve_ticking(servers, map.tick, &cancel, |n| {
        apply(&map, &regs, n, start.elapsed())
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "simulator:
  tick: 100ms
  endpoints:
    - {type: tcp, port: 5020}
    - {type: rtu, port: /tmp/x, baud_rate: 9600, parity: none}
  units:
    - unit_id: 3
      registers:
        - {table: holding, address: 0, type: f32, value: 21.5}
        - {table: holding, address: 2, type: u32, counter: {step: 2}}
        - {table: input, address: 0, type: f64, sine: {min: 10, max: 20, period: 4s}}
        - {table: input, address: 4, type: u16, ramp: {from: 0, to: 100, period: 10s}}
        - {table: holding, address: 10, type: string, length: 2, value: ABC}
        - {table: holding, address: 20, type: u32, word_order: little, value: 65536}
";

    #[test]
    fn parses_and_moves_values() {
        assert!(is_simulator_file(FILE));
        let map = parse(FILE, "sim.yaml").unwrap();
        assert_eq!(map.tick, Duration::from_millis(100));
        assert_eq!(map.endpoints.len(), 2);
        let regs = Registers::default();
        apply(&map, &regs, 5, Duration::from_secs(1));
        assert_eq!(regs.holding(3, 0, 2), vec![0x41AC, 0x0000]);
        assert_eq!(regs.holding(3, 2, 2), vec![0, 10]);
        assert_eq!(regs.holding(3, 10, 2), vec![0x4142, 0x4300]);
        assert_eq!(regs.holding(3, 20, 2), vec![0, 1]);
        // Sine at a quarter period is at its maximum; the ramp a tenth of the way.
        assert_eq!(regs.input(3, 0, 4), {
            let b = 20.0f64.to_bits();
            vec![
                (b >> 48) as u16,
                (b >> 32) as u16,
                (b >> 16) as u16,
                b as u16,
            ]
        });
        assert_eq!(regs.input(3, 4, 1), vec![10]);
    }

    fn errors(text: &str) -> Vec<String> {
        match parse(text, "sim.yaml") {
            Ok(map) => panic!("expected errors, got {map:?}"),
            Err(errors) => errors.errors.iter().map(ToString::to_string).collect(),
        }
    }

    /// `FILE` with one register line replaced.
    fn with_register(register: &str) -> String {
        FILE.replace(
            "{table: holding, address: 0, type: f32, value: 21.5}",
            register,
        )
    }

    #[test]
    fn reports_every_problem_with_its_place() {
        let text = "\
simulator:
  tick: 0s
  endpoints:
    - {type: tcp, port: 5020, baud_rate: 9600}
    - {type: rtu, port: /tmp/x, stop_bits: 3}
  units:
    - unit_id: 1
      registers:
        - {table: holding, address: 0, type: u16, value: 70000}
        - {table: holdings, address: 5, type: f32, value: 1}
        - {table: input, address: 0, type: u16, counter: {step: 2}, value: 1}
    - unit_id: 300
";
        assert_eq!(
            errors(text),
            [
                "sim.yaml:2:9: simulator.tick: must be greater than 0s",
                "sim.yaml:4:31: simulator.endpoints[0].baud_rate: `baud_rate` does not apply to a tcp endpoint",
                "sim.yaml:5:44: simulator.endpoints[1].stop_bits: must be 1 or 2, got 3",
                "sim.yaml:9:58: simulator.units[0].registers[0].value: 70000 is out of range for type u16",
                r#"sim.yaml:10:19: simulator.units[0].registers[1].table: unknown table "holdings": expected coil, discrete_input, input or holding (did you mean "holding"?)"#,
                "sim.yaml:11:49: simulator.units[0].registers[2].counter: give only one of value, counter, sine or ramp: this register also has `value`",
                "sim.yaml:12:16: simulator.units[1].unit_id: must be between 0 and 255, got 300",
            ]
        );
    }

    #[test]
    fn serial_settings_follow_the_gateway_rules() {
        let map = parse(FILE, "sim.yaml").unwrap();
        assert_eq!(
            map.endpoints[1],
            SimEndpoint::Rtu(SerialSettings {
                port: "/tmp/x".into(),
                baud_rate: 9600,
                parity: crate::config::Parity::None,
                data_bits: 8,
                stop_bits: crate::config::StopBits::One,
            })
        );
        let two = FILE.replace("parity: none}", "parity: none, stop_bits: 2}");
        let map = parse(&two, "sim.yaml").unwrap();
        assert!(matches!(
            &map.endpoints[1],
            SimEndpoint::Rtu(s) if s.stop_bits == crate::config::StopBits::Two
        ));
        let bad = FILE.replace(
            "baud_rate: 9600, parity: none}",
            "baud_rate: 10, parity: evn, stop_bits: 0, host: h}",
        );
        assert_eq!(
            errors(&bad),
            [
                "sim.yaml:5:44: simulator.endpoints[1].baud_rate: must be between 50 and 4000000, got 10",
                r#"sim.yaml:5:56: simulator.endpoints[1].parity: unknown parity "evn": expected none, even or odd (did you mean "even"?)"#,
                "sim.yaml:5:72: simulator.endpoints[1].stop_bits: must be 1 or 2, got 0",
                "sim.yaml:5:75: simulator.endpoints[1].host: `host` does not apply to an rtu endpoint",
            ]
        );
    }

    #[test]
    fn endpoints_need_a_type_and_a_port() {
        let bad = FILE.replace(
            "- {type: tcp, port: 5020}",
            "- {type: udp, port: 1}\n    - {type: tcp, host: 'a b', port: /dev/x}\n    - {type: rtu_over_tcp}",
        );
        assert_eq!(
            errors(&bad),
            [
                r#"sim.yaml:4:14: simulator.endpoints[0].type: unknown endpoint type "udp": expected tcp, rtu_over_tcp or rtu"#,
                r#"sim.yaml:5:25: simulator.endpoints[1].host: invalid host "a b": expected a host name or an ip address"#,
                r#"sim.yaml:5:38: simulator.endpoints[1].port: expected a tcp port number (0 to 65535), got the text "/dev/x""#,
                "sim.yaml:6:7: simulator.endpoints[2].port: missing required key",
            ]
        );
        let none = FILE.replace(
            "  endpoints:\n    - {type: tcp, port: 5020}\n    - {type: rtu, port: /tmp/x, baud_rate: 9600, parity: none}\n",
            "  endpoints: []\n",
        );
        assert_eq!(
            errors(&none),
            ["sim.yaml:3:14: simulator.endpoints: at least one endpoint is required"]
        );
    }

    #[test]
    fn registers_follow_the_gateway_point_rules() {
        let cases = [
            (
                "{table: coil, address: 0, type: u16, value: 1}",
                "sim.yaml:9:43: simulator.units[0].registers[0].type: a coil holds single bits: type must be bool, got u16",
            ),
            (
                "{table: input, address: 30, type: bool, bit: 16, value: true}",
                "sim.yaml:9:56: simulator.units[0].registers[0].bit: must be between 0 and 15, got 16",
            ),
            (
                "{table: input, address: 30, type: string, value: x}",
                "sim.yaml:9:11: simulator.units[0].registers[0].length: missing required key",
            ),
            (
                "{table: input, address: 30, type: u16, length: 2, value: 1}",
                "sim.yaml:9:50: simulator.units[0].registers[0].length: `length` does not apply to a point that is not a string",
            ),
            (
                "{table: input, address: 65535, type: u32, value: 1}",
                "sim.yaml:9:35: simulator.units[0].registers[0].address: a u32 at address 65535 needs 2 registers and runs past the last address 65535",
            ),
            (
                "{table: input, address: 30, type: u16, byte_order: middle, value: 1}",
                r#"sim.yaml:9:62: simulator.units[0].registers[0].byte_order: unknown byte order "middle": expected big or little"#,
            ),
            (
                "{table: input, address: 30, type: u16, scale: 0, value: 1}",
                "sim.yaml:9:57: simulator.units[0].registers[0].scale: must not be 0: the register holds (value - offset) / scale",
            ),
            (
                "{table: input, address: 30, type: string, length: 2, scale: 2, value: x}",
                "sim.yaml:9:64: simulator.units[0].registers[0].scale: `scale` does not apply to a string register",
            ),
            (
                "{table: input, address: 30, type: u16, value: 1, colour: red}",
                r#"sim.yaml:9:60: simulator.units[0].registers[0].colour: unknown key "colour" (expected one of: table, address, type, length, bit, byte_order, word_order, scale, offset, value, counter, sine, ramp)"#,
            ),
            (
                "{table: input, address: 30, type: u16}",
                "sim.yaml:9:11: simulator.units[0].registers[0]: a register needs one of value, counter, sine or ramp",
            ),
        ];
        for (register, expected) in cases {
            assert_eq!(errors(&with_register(register)), [expected], "{register}");
        }
    }

    #[test]
    fn values_must_fit_their_register() {
        let cases = [
            (
                "{table: input, address: 30, type: bool, value: 1}",
                "sim.yaml:9:58: simulator.units[0].registers[0].value: type bool takes true or false, got a number",
            ),
            (
                "{table: input, address: 30, type: f32, value: '21.5'}",
                "sim.yaml:9:57: simulator.units[0].registers[0].value: type f32 takes a number, got a string",
            ),
            (
                "{table: input, address: 30, type: string, length: 1, value: ABC}",
                "sim.yaml:9:71: simulator.units[0].registers[0].value: text of 3 bytes does not fit 1 register(s) (2 bytes each)",
            ),
            (
                "{table: input, address: 30, type: i16, offset: 40000, value: 0}",
                "sim.yaml:9:72: simulator.units[0].registers[0].value: 0 is out of range for type i16 once scale and offset are applied",
            ),
            (
                "{table: input, address: 30, type: u16, counter: {start: -1}}",
                "sim.yaml:9:67: simulator.units[0].registers[0].counter.start: -1 is out of range for type u16",
            ),
            (
                "{table: input, address: 30, type: u16, ramp: {from: 0, to: 1e6, period: 1m}}",
                "sim.yaml:9:70: simulator.units[0].registers[0].ramp.to: 1000000 is out of range for type u16",
            ),
            (
                "{table: input, address: 30, type: u16, ramp: {from: 0, period: 1m}}",
                "sim.yaml:9:56: simulator.units[0].registers[0].ramp.to: missing required key",
            ),
            (
                "{table: input, address: 30, type: u16, counter: ~}",
                "sim.yaml:9:50: simulator.units[0].registers[0].counter: a value is required",
            ),
        ];
        for (register, expected) in cases {
            assert_eq!(errors(&with_register(register)), [expected], "{register}");
        }
        // A bound is checked even when another key of its motion is wrong.
        assert_eq!(
            errors(&with_register(
                "{table: input, address: 30, type: i16, sine: {min: -40000, max: 0, period: 0s}}"
            )),
            [
                "sim.yaml:9:62: simulator.units[0].registers[0].sine.min: -40000 is out of range for type i16",
                "sim.yaml:9:86: simulator.units[0].registers[0].sine.period: must be greater than 0s",
            ]
        );
    }

    #[test]
    fn overlapping_registers_and_duplicate_units_are_refused() {
        let text = FILE.replace(
            "{table: holding, address: 20, type: u32, word_order: little, value: 65536}",
            "{table: holding, address: 1, type: u16, value: 1}\n        \
             - {table: holding, address: 30, type: bool, bit: 0, value: true}\n        \
             - {table: holding, address: 30, type: bool, bit: 1, value: true}\n    \
             - unit_id: 3",
        );
        assert_eq!(
            errors(&text),
            [
                "sim.yaml:14:37: simulator.units[0].registers[5].address: holding 1 overlaps registers[0] of this unit: each would overwrite the other (holding 0-1, defined at line 9)",
                "sim.yaml:17:16: simulator.units[1].unit_id: duplicate unit id 3: list each unit once (first defined at line 7)",
            ]
        );
    }

    #[test]
    fn empty_and_non_mapping_files() {
        assert_eq!(
            errors("# nothing\n"),
            ["sim.yaml:1:1: the simulator file is empty: expected a simulator section"]
        );
        assert_eq!(
            errors("- simulator\n"),
            ["sim.yaml:1:1: expected a simulator file (a mapping of keys to values), got a list"]
        );
    }

    #[test]
    fn the_shipped_example_loads() {
        let text = include_str!("../../../config/examples/simulator.yaml");
        let map = parse(text, "simulator.yaml").unwrap_or_else(|errors| panic!("{errors}"));
        assert_eq!(map.tick, DEFAULT_TICK);
        assert_eq!(map.endpoints.len(), 2);
        assert_eq!(map.points.len(), 6);
    }
}
