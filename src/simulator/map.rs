//! Simulator files: what `fieldrelay simulate --config FILE` serves when FILE starts with a
//! `simulator:` section instead of a gateway configuration.
//!
//! ```yaml
//! simulator:
//!   tick: 1s                      # default 1s: how often moving values change
//!   endpoints:                    # all serve the same units
//!     - type: tcp                 # tcp | rtu_over_tcp | rtu
//!       host: 127.0.0.1
//!       port: 5020
//!     - type: rtu
//!       port: /dev/pts/7          # e.g. one end of `socat pty,link=A pty,link=B`
//!       baud_rate: 19200          # default 19200, parity even, 8 data bits, 1 stop bit
//!   units:
//!     - unit_id: 1
//!       registers:
//!         - {table: holding, address: 0, type: f32, value: 21.5}                 # static
//!         - {table: holding, address: 2, type: u32, counter: {start: 0, step: 1}}
//!         - {table: input, address: 0, type: f32, sine: {min: 15, max: 25, period: 60s}}
//!         - {table: input, address: 2, type: u16, ramp: {from: 0, to: 100, period: 10s}}
//!         - {table: holding, address: 10, type: string, length: 4, value: "AB-7"}
//!         - {table: coil, address: 0, type: bool, value: true}
//! ```
//!
//! `type`, `byte_order`, `word_order`, `length`, `scale` and `offset` mean what they mean for a
//! gateway point, so a simulator file can mirror a device's register map exactly. The file is
//! parsed strictly (unknown keys are errors, with line and column).

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::{serve_rtu, set_point, Framing, Registers, Simulator, SimulatorError};
use crate::config::units::parse_duration;
use crate::config::{
    ByteOrder, DataType, Encoding, ModbusSource, Parity, SerialSettings, StopBits, Table, WordOrder,
};
use crate::modbus::decode::Scaling;
use crate::sample::Value;

/// Why a simulator file was refused.
#[derive(Debug, thiserror::Error)]
pub enum MapError {
    #[error("{file}: {message}")]
    Parse { file: String, message: String },
    #[error("{file}: {path}: {message}")]
    Invalid {
        file: String,
        path: String,
        message: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    simulator: SimulatorSection,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SimulatorSection {
    tick: Option<String>,
    endpoints: Vec<Endpoint>,
    units: Vec<Unit>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Endpoint {
    #[serde(rename = "type")]
    kind: String,
    host: Option<String>,
    port: serde_json::Value,
    baud_rate: Option<u32>,
    parity: Option<String>,
    stop_bits: Option<u8>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Unit {
    unit_id: u8,
    #[serde(default)]
    registers: Vec<Register>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Register {
    table: String,
    address: u16,
    #[serde(rename = "type")]
    data_type: String,
    length: Option<u16>,
    bit: Option<u8>,
    byte_order: Option<String>,
    word_order: Option<String>,
    scale: Option<f64>,
    offset: Option<f64>,
    value: Option<serde_json::Value>,
    counter: Option<Counter>,
    sine: Option<Wave>,
    ramp: Option<Ramp>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
struct Counter {
    #[serde(default)]
    start: f64,
    #[serde(default = "one")]
    step: f64,
}

fn one() -> f64 {
    1.0
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Wave {
    min: f64,
    max: f64,
    period: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Ramp {
    from: f64,
    to: f64,
    period: String,
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
        match data_type {
            DataType::Bool => Value::Bool(number.round() as i64 % 2 != 0),
            DataType::F32 | DataType::F64 => Value::Float(number),
            DataType::String { .. } => Value::Str(Arc::from(format!("{number}").as_str())),
            DataType::U64 => Value::from_u64(number.max(0.0).round() as u64),
            _ => Value::Int(number.round() as i64),
        }
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

/// Parses a simulator file; `file` names it in errors.
pub fn parse(text: &str, file: &str) -> Result<SimMap, MapError> {
    let parsed: File = serde_saphyr::from_str(text).map_err(|error| MapError::Parse {
        file: file.to_owned(),
        message: error.to_string(),
    })?;
    let invalid = |path: String, message: String| MapError::Invalid {
        file: file.to_owned(),
        path,
        message,
    };
    let section = parsed.simulator;
    let tick = match &section.tick {
        None => Duration::from_secs(1),
        Some(text) => parse_duration(text)
            .ok()
            .filter(|d| !d.is_zero())
            .ok_or_else(|| {
                invalid(
                    "simulator.tick".into(),
                    format!("invalid duration {text:?}"),
                )
            })?,
    };
    let mut endpoints = Vec::new();
    for (i, e) in section.endpoints.iter().enumerate() {
        let path = format!("simulator.endpoints[{i}]");
        let number_port = || {
            e.port
                .as_u64()
                .and_then(|p| u16::try_from(p).ok())
                .ok_or_else(|| invalid(format!("{path}.port"), "expected a port number".into()))
        };
        let host = || e.host.clone().unwrap_or_else(|| "127.0.0.1".to_owned());
        endpoints.push(match e.kind.as_str() {
            "tcp" => SimEndpoint::Network {
                host: host(),
                port: number_port()?,
                framing: Framing::Tcp,
            },
            "rtu_over_tcp" => SimEndpoint::Network {
                host: host(),
                port: number_port()?,
                framing: Framing::RtuOverTcp,
            },
            "rtu" => SimEndpoint::Rtu(SerialSettings {
                port: e
                    .port
                    .as_str()
                    .ok_or_else(|| {
                        invalid(format!("{path}.port"), "expected a device path".into())
                    })?
                    .to_owned(),
                baud_rate: e.baud_rate.unwrap_or(19_200),
                parity: match e.parity.as_deref().unwrap_or("even") {
                    "none" => Parity::None,
                    "odd" => Parity::Odd,
                    "even" => Parity::Even,
                    other => {
                        return Err(invalid(
                            format!("{path}.parity"),
                            format!("unknown parity {other:?}: expected none, even or odd"),
                        ))
                    }
                },
                data_bits: 8,
                stop_bits: if e.stop_bits == Some(2) {
                    StopBits::Two
                } else {
                    StopBits::One
                },
            }),
            other => {
                return Err(invalid(
                    format!("{path}.type"),
                    format!("unknown endpoint type {other:?}: expected tcp, rtu_over_tcp or rtu"),
                ))
            }
        });
    }
    let mut points = Vec::new();
    for (u, unit) in section.units.iter().enumerate() {
        for (r, reg) in unit.registers.iter().enumerate() {
            let path = format!("simulator.units[{u}].registers[{r}]");
            points.push(
                sim_point(unit.unit_id, reg, &path)
                    .map_err(|(key, message)| invalid(format!("{path}.{key}"), message))?,
            );
        }
    }
    Ok(SimMap {
        tick,
        endpoints,
        points,
    })
}

fn sim_point(unit: u8, reg: &Register, _path: &str) -> Result<SimPoint, (&'static str, String)> {
    let table = match reg.table.as_str() {
        "coil" => Table::Coil,
        "discrete_input" => Table::DiscreteInput,
        "input" => Table::Input,
        "holding" => Table::Holding,
        other => return Err(("table", format!("unknown table {other:?}"))),
    };
    let data_type = match reg.data_type.as_str() {
        "bool" => DataType::Bool,
        "u16" => DataType::U16,
        "i16" => DataType::I16,
        "u32" => DataType::U32,
        "i32" => DataType::I32,
        "u64" => DataType::U64,
        "i64" => DataType::I64,
        "f32" => DataType::F32,
        "f64" => DataType::F64,
        "string" => DataType::String {
            length: reg
                .length
                .filter(|l| *l > 0)
                .ok_or(("length", "a string needs a length in registers".to_owned()))?,
        },
        other => return Err(("type", format!("unknown type {other:?}"))),
    };
    let order = |text: &Option<String>, key| match text.as_deref() {
        None | Some("big") => Ok(true),
        Some("little") => Ok(false),
        Some(other) => Err((key, format!("expected big or little, got {other:?}"))),
    };
    let encoding = Encoding {
        byte_order: if order(&reg.byte_order, "byte_order")? {
            ByteOrder::Big
        } else {
            ByteOrder::Little
        },
        word_order: if order(&reg.word_order, "word_order")? {
            WordOrder::Big
        } else {
            WordOrder::Little
        },
    };
    let period = |text: &str| {
        parse_duration(text)
            .ok()
            .filter(|d| !d.is_zero())
            .ok_or(("period", format!("invalid duration {text:?}")))
    };
    let motions = [
        reg.value.is_some(),
        reg.counter.is_some(),
        reg.sine.is_some(),
        reg.ramp.is_some(),
    ];
    if motions.iter().filter(|m| **m).count() != 1 {
        return Err((
            "value",
            "give exactly one of value, counter, sine or ramp".to_owned(),
        ));
    }
    let motion = if let Some(value) = &reg.value {
        let value = match value {
            serde_json::Value::Bool(b) => Value::Bool(*b),
            serde_json::Value::String(s) => Value::Str(Arc::from(s.as_str())),
            other => Value::from_json(&other.to_string())
                .ok_or(("value", format!("unsupported value {other}")))?,
        };
        Motion::Static(value)
    } else if let Some(c) = reg.counter {
        Motion::Counter {
            start: c.start,
            step: c.step,
        }
    } else if let Some(w) = &reg.sine {
        Motion::Sine {
            min: w.min,
            max: w.max,
            period: period(&w.period)?,
        }
    } else if let Some(r) = &reg.ramp {
        Motion::Ramp {
            from: r.from,
            to: r.to,
            period: period(&r.period)?,
        }
    } else {
        return Err(("value", "no value".to_owned()));
    };
    Ok(SimPoint {
        unit,
        source: ModbusSource {
            table,
            address: reg.address,
            bit: reg.bit,
            encoding,
        },
        data_type,
        scaling: Scaling {
            scale: reg.scale.unwrap_or(1.0),
            offset: reg.offset.unwrap_or(0.0),
        },
        motion,
    })
}

/// Applies every point's value at `ticks`/`elapsed` to `regs`.
pub fn apply(map: &SimMap, regs: &Registers, ticks: u64, elapsed: Duration) {
    for point in &map.points {
        let value = point.motion.value_at(ticks, elapsed, point.data_type);
        // Integers given as engineering values are scaled back to raw; a raw counter stays raw.
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
    let mut tick = tokio::time::interval(map.tick);
    let mut n = 0u64;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = cancel.cancelled() => break,
            Some(done) = servers.join_next() => {
                if let Ok(Err(error)) = done { return Err(error); }
            }
        }
        apply(&map, &regs, n, start.elapsed());
        n += 1;
    }
    while servers.join_next().await.is_some() {}
    Ok(())
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

    #[test]
    fn refuses_mistakes_with_their_place() {
        let bad = FILE.replace("counter: {step: 2}", "counter: {step: 2}, value: 1");
        let error = parse(&bad, "sim.yaml").unwrap_err().to_string();
        assert_eq!(
            error,
            "sim.yaml: simulator.units[0].registers[1].value: give exactly one of value, counter, sine or ramp"
        );
        let error = parse(&FILE.replace("tick:", "tock:"), "sim.yaml")
            .unwrap_err()
            .to_string();
        assert!(error.contains("tock"), "{error}");
    }
}
