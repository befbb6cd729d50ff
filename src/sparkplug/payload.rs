//! Sparkplug B payloads (pure): encode what the node publishes, decode what hosts send it.
//!
//! | message | payload `seq` | metrics |
//! |---|---|---|
//! | NBIRTH | 0 | `bdSeq` (Int64), `Node Control/Rebirth` (Boolean false, no alias), the node metrics: name, alias, datatype, value or `is_null`, properties |
//! | DBIRTH | next | every point: name, alias, datatype, value or `is_null`, timestamp, properties |
//! | NDATA / DDATA | next | changed metrics: alias (or name), value, timestamp, `is_historical` when true; no datatype |
//! | DDEATH | next | none |
//! | NDEATH | none | `bdSeq` only |
//! | NCMD / DCMD (decoded) | none | name or alias, value, optional datatype and timestamp |
//!
//! Every payload carries the time it was made (`timestamp`, ms since the Unix epoch); every
//! metric carries its own timestamp, the sample's for data. Datatypes and the protobuf field of
//! each value are in [`super::value`]; properties in [`super::metric`].
//!
//! A value that does not fit its metric's datatype (impossible with a consistent configuration,
//! since both come from the same point) is not encoded: in a birth the metric goes out as
//! `is_null`, in data it is left out, and either way it is listed in [`Encoded::refused`] for the
//! caller to log and count. Encoding never fails otherwise.
//!
//! Decoding takes bytes from the network: any input gives a [`Command`] or a [`DecodeError`]
//! (`fuzz/fuzz_targets/sparkplug_payload.rs`), never a panic. It checks the envelope only; what
//! each metric means is [`super::command`]'s business, metric by metric.

use prost::Message;

use super::metric::{
    MetricDef, Properties, BD_SEQ, ENG_HIGH, ENG_LOW, ENG_UNIT, READ_ONLY, REBIRTH,
};
use super::proto::payload::metric::Value as Wire;
use super::proto::payload::{property_value, Metric, PropertySet, PropertyValue};
use super::proto::{DataType, Payload};
use super::sequence::BdSeq;
use super::value::{MetricValue, ValueError};
use crate::sample::Value;

/// Largest NCMD/DCMD payload decoded: a command is a few metrics; a host writing a whole device
/// at once stays far below this.
pub const MAX_COMMAND_BYTES: usize = 64 * 1024;
/// The `uuid` of a compressed payload (spec 3.0, "Payload Compression"): not supported.
pub const COMPRESSED_UUID: &str = "SPBV1.0_COMPRESSED";

/// How a DATA metric is identified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricId<'a> {
    /// Aliases off: the name, as in the birth.
    Name(&'a str),
    /// Aliases on: the alias alone (`payloads-alias-data-cmd-requirement`).
    Alias(u64),
}

/// One metric of an NBIRTH or DBIRTH.
#[derive(Debug, Clone, Copy)]
pub struct BirthMetric<'a> {
    pub def: &'a MetricDef,
    /// `None` when aliases are off.
    pub alias: Option<u64>,
    /// The current value; `None` when never read (sent as `is_null`).
    pub value: Option<&'a Value>,
    /// When the value was read (the birth's own time for a null).
    pub ts_ms: i64,
}

/// One metric of an NDATA or DDATA.
#[derive(Debug, Clone, Copy)]
pub struct DataMetric<'a> {
    pub id: MetricId<'a>,
    /// The datatype its birth declared (not sent: it picks the field).
    pub datatype: DataType,
    pub value: &'a Value,
    /// The sample's time.
    pub ts_ms: i64,
    /// A value from before the current births (history): the host stores it, not shows it.
    pub historical: bool,
}

/// A metric left out (data) or sent as null (birth) because its value does not fit.
#[derive(Debug, Clone, PartialEq)]
pub struct Refused {
    /// The metric's name, or `#<alias>`.
    pub metric: String,
    pub error: ValueError,
}

/// An encoded payload.
#[derive(Debug, Clone, PartialEq)]
pub struct Encoded {
    pub bytes: Vec<u8>,
    pub refused: Vec<Refused>,
}

fn millis(ts_ms: i64) -> u64 {
    u64::try_from(ts_ms).unwrap_or(0)
}

fn property(datatype: DataType, value: property_value::Value) -> PropertyValue {
    PropertyValue {
        r#type: Some(datatype as u32),
        is_null: None,
        value: Some(value),
    }
}

/// The property set of a birth metric, in a fixed order; `None` when it has none.
fn property_set(properties: &Properties) -> Option<PropertySet> {
    use property_value::Value as P;
    let mut set = PropertySet::default();
    let mut add = |key: &str, value: PropertyValue| {
        set.keys.push(key.to_owned());
        set.values.push(value);
    };
    if let Some(unit) = &properties.eng_unit {
        add(
            ENG_UNIT,
            property(DataType::String, P::StringValue(unit.clone())),
        );
    }
    if let Some(low) = properties.eng_low {
        add(ENG_LOW, property(DataType::Double, P::DoubleValue(low)));
    }
    if let Some(high) = properties.eng_high {
        add(ENG_HIGH, property(DataType::Double, P::DoubleValue(high)));
    }
    if let Some(read_only) = properties.read_only {
        add(
            READ_ONLY,
            property(DataType::Boolean, P::BooleanValue(read_only)),
        );
    }
    (!set.keys.is_empty()).then_some(set)
}

fn label(name: Option<&str>, alias: Option<u64>) -> String {
    match (name, alias) {
        (Some(name), _) => name.to_owned(),
        (None, Some(alias)) => format!("#{alias}"),
        (None, None) => String::new(),
    }
}

fn birth_metric(metric: &BirthMetric<'_>, refused: &mut Vec<Refused>) -> Metric {
    let def = metric.def;
    let value = metric.value.and_then(|value| {
        MetricValue::from_value(def.datatype, value)
            .map_err(|error| {
                refused.push(Refused {
                    metric: def.name.to_string(),
                    error,
                })
            })
            .ok()
    });
    Metric {
        name: Some(def.name.to_string()),
        alias: metric.alias,
        timestamp: Some(millis(metric.ts_ms)),
        datatype: Some(def.datatype as u32),
        is_null: value.is_none().then_some(true),
        properties: property_set(&def.properties),
        value: value.map(|v| v.to_wire()),
        ..Metric::default()
    }
}

fn births(metrics: &[BirthMetric<'_>], refused: &mut Vec<Refused>) -> Vec<Metric> {
    metrics.iter().map(|m| birth_metric(m, refused)).collect()
}

fn bd_seq_metric(ts_ms: i64, bd_seq: BdSeq) -> Metric {
    Metric {
        name: Some(BD_SEQ.to_owned()),
        timestamp: Some(millis(ts_ms)),
        datatype: Some(DataType::Int64 as u32),
        value: Some(Wire::LongValue(u64::from(bd_seq.value()))),
        ..Metric::default()
    }
}

/// A payload with `seq`: every message of the node but NDEATH.
fn sequenced(ts_ms: i64, seq: u8, metrics: Vec<Metric>, refused: Vec<Refused>) -> Encoded {
    let payload = Payload {
        timestamp: Some(millis(ts_ms)),
        metrics,
        seq: Some(u64::from(seq)),
        ..Payload::default()
    };
    Encoded {
        bytes: payload.encode_to_vec(),
        refused,
    }
}

/// NBIRTH: `seq` 0, `bdSeq` (the value of this connection's will), `Node Control/Rebirth`
/// false without alias, then `metrics` (the node metrics).
pub fn nbirth(ts_ms: i64, bd_seq: BdSeq, metrics: &[BirthMetric<'_>]) -> Encoded {
    let mut refused = Vec::new();
    let mut all = vec![
        bd_seq_metric(ts_ms, bd_seq),
        Metric {
            name: Some(REBIRTH.to_owned()),
            timestamp: Some(millis(ts_ms)),
            datatype: Some(DataType::Boolean as u32),
            value: Some(Wire::BooleanValue(false)),
            ..Metric::default()
        },
    ];
    all.extend(births(metrics, &mut refused));
    sequenced(ts_ms, 0, all, refused)
}

/// DBIRTH of one device: every point with its current value (or null).
pub fn dbirth(ts_ms: i64, seq: u8, metrics: &[BirthMetric<'_>]) -> Encoded {
    let mut refused = Vec::new();
    let metrics = births(metrics, &mut refused);
    sequenced(ts_ms, seq, metrics, refused)
}

/// NDATA or DDATA: the metrics in the order given (chronological per metric, as the spec asks
/// of non-historical data).
pub fn data(ts_ms: i64, seq: u8, metrics: &[DataMetric<'_>]) -> Encoded {
    let mut refused = Vec::new();
    let metrics = metrics
        .iter()
        .filter_map(|m| {
            let (name, alias) = match m.id {
                MetricId::Name(name) => (Some(name), None),
                MetricId::Alias(alias) => (None, Some(alias)),
            };
            match MetricValue::from_value(m.datatype, m.value) {
                Ok(value) => Some(Metric {
                    name: name.map(str::to_owned),
                    alias,
                    timestamp: Some(millis(m.ts_ms)),
                    is_historical: m.historical.then_some(true),
                    value: Some(value.to_wire()),
                    ..Metric::default()
                }),
                Err(error) => {
                    refused.push(Refused {
                        metric: label(name, alias),
                        error,
                    });
                    None
                }
            }
        })
        .collect();
    sequenced(ts_ms, seq, metrics, refused)
}

/// DDEATH: a timestamp and the `seq`, no metrics.
pub fn ddeath(ts_ms: i64, seq: u8) -> Vec<u8> {
    sequenced(ts_ms, seq, Vec::new(), Vec::new()).bytes
}

/// NDEATH (the will, and the graceful death): `bdSeq` only, no `seq`.
pub fn ndeath(ts_ms: i64, bd_seq: BdSeq) -> Vec<u8> {
    Payload {
        timestamp: Some(millis(ts_ms)),
        metrics: vec![bd_seq_metric(ts_ms, bd_seq)],
        ..Payload::default()
    }
    .encode_to_vec()
}

/// A decoded NCMD or DCMD.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Command {
    /// When the host sent it (ms since the Unix epoch).
    pub timestamp: Option<u64>,
    pub metrics: Vec<CommandMetric>,
}

/// One metric of a command, as received.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CommandMetric {
    pub name: Option<String>,
    pub alias: Option<u64>,
    /// The datatype code, when the host sent one (hosts usually do not in commands).
    pub datatype: Option<u32>,
    pub timestamp: Option<u64>,
    pub is_null: bool,
    pub value: Option<Wire>,
}

/// Why a command payload was refused as a whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("payload of {len} bytes is too large (at most {MAX_COMMAND_BYTES})")]
    TooLarge { len: usize },
    #[error("not a Sparkplug B payload: {0}")]
    Protobuf(String),
    #[error("compressed payloads are not supported")]
    Compressed,
}

/// Decodes an NCMD or DCMD payload.
pub fn decode_command(bytes: &[u8]) -> Result<Command, DecodeError> {
    if bytes.len() > MAX_COMMAND_BYTES {
        return Err(DecodeError::TooLarge { len: bytes.len() });
    }
    let payload = Payload::decode(bytes).map_err(|e| DecodeError::Protobuf(e.to_string()))?;
    if payload.uuid.as_deref() == Some(COMPRESSED_UUID) {
        return Err(DecodeError::Compressed);
    }
    Ok(Command {
        timestamp: payload.timestamp,
        metrics: payload
            .metrics
            .into_iter()
            .map(|m| CommandMetric {
                name: m.name,
                alias: m.alias,
                datatype: m.datatype,
                timestamp: m.timestamp,
                is_null: m.is_null.unwrap_or(false),
                value: m.value,
            })
            .collect(),
    })
}

/// Encodes a command as a host would (tests, the fuzz target's round trip): no `seq`.
pub fn encode_command(command: &Command) -> Vec<u8> {
    Payload {
        timestamp: command.timestamp,
        metrics: command
            .metrics
            .iter()
            .map(|m| Metric {
                name: m.name.clone(),
                alias: m.alias,
                timestamp: m.timestamp,
                datatype: m.datatype,
                is_null: m.is_null.then_some(true),
                value: m.value.clone(),
                ..Metric::default()
            })
            .collect(),
        ..Payload::default()
    }
    .encode_to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::Arc;

    fn def(name: &str, datatype: DataType) -> MetricDef {
        MetricDef {
            name: Arc::from(name),
            datatype,
            properties: Properties {
                eng_unit: Some("bar".into()),
                eng_low: Some(0.0),
                eng_high: Some(16.0),
                read_only: Some(false),
            },
        }
    }

    fn decode(bytes: &[u8]) -> Payload {
        Payload::decode(bytes).expect("our own payload decodes")
    }

    #[test]
    fn nbirth_has_seq_zero_bdseq_and_rebirth_first() {
        let depth = MetricDef {
            name: "Queue/Depth".into(),
            datatype: DataType::UInt64,
            properties: Properties::default(),
        };
        let encoded = nbirth(
            1_700_000_000_000,
            BdSeq::new(7),
            &[BirthMetric {
                def: &depth,
                alias: Some(1),
                value: Some(&Value::Int(3)),
                ts_ms: 1_700_000_000_000,
            }],
        );
        assert!(encoded.refused.is_empty());
        let p = decode(&encoded.bytes);
        assert_eq!(p.seq, Some(0));
        assert_eq!(p.timestamp, Some(1_700_000_000_000));
        let names: Vec<_> = p.metrics.iter().map(|m| m.name.as_deref()).collect();
        assert_eq!(
            names,
            [
                Some("bdSeq"),
                Some("Node Control/Rebirth"),
                Some("Queue/Depth")
            ]
        );
        assert_eq!(p.metrics[0].datatype, Some(DataType::Int64 as u32));
        assert_eq!(p.metrics[0].value, Some(Wire::LongValue(7)));
        assert_eq!(p.metrics[1].alias, None);
        assert_eq!(p.metrics[1].value, Some(Wire::BooleanValue(false)));
        assert_eq!(p.metrics[2].alias, Some(1));
        assert_eq!(p.metrics[2].properties, None);
    }

    #[test]
    fn dbirth_declares_datatype_properties_and_nulls() {
        let pressure = def("pressure", DataType::Double);
        let never_read = def("level", DataType::UInt16);
        let encoded = dbirth(
            10,
            1,
            &[
                BirthMetric {
                    def: &pressure,
                    alias: Some(16),
                    value: Some(&Value::Float(2.5)),
                    ts_ms: 9,
                },
                BirthMetric {
                    def: &never_read,
                    alias: Some(17),
                    value: None,
                    ts_ms: 10,
                },
            ],
        );
        let p = decode(&encoded.bytes);
        assert_eq!(p.seq, Some(1));
        let m = &p.metrics[0];
        assert_eq!(m.datatype, Some(DataType::Double as u32));
        assert_eq!(m.timestamp, Some(9));
        assert_eq!(m.value, Some(Wire::DoubleValue(2.5)));
        let props = m.properties.as_ref().unwrap();
        assert_eq!(props.keys, ["engUnit", "engLow", "engHigh", "readOnly"]);
        assert_eq!(
            props.values[3].value,
            Some(property_value::Value::BooleanValue(false))
        );
        assert_eq!(props.values[1].r#type, Some(DataType::Double as u32));
        assert_eq!(p.metrics[1].is_null, Some(true));
        assert_eq!(p.metrics[1].value, None);
    }

    #[test]
    fn data_carries_alias_only_no_datatype_and_the_history_flag() {
        let encoded = data(
            100,
            5,
            &[
                DataMetric {
                    id: MetricId::Alias(16),
                    datatype: DataType::Int16,
                    value: &Value::Int(-87),
                    ts_ms: 90,
                    historical: true,
                },
                DataMetric {
                    id: MetricId::Name("state"),
                    datatype: DataType::String,
                    value: &Value::Str("RUN".into()),
                    ts_ms: 95,
                    historical: false,
                },
            ],
        );
        let p = decode(&encoded.bytes);
        assert_eq!(p.seq, Some(5));
        let (a, b) = (&p.metrics[0], &p.metrics[1]);
        assert_eq!(
            (a.name.as_deref(), a.alias, a.datatype),
            (None, Some(16), None)
        );
        assert_eq!(a.is_historical, Some(true));
        assert_eq!(a.value, Some(Wire::IntValue(0xFFFF_FFA9)));
        assert_eq!((b.name.as_deref(), b.alias), (Some("state"), None));
        assert_eq!(b.is_historical, None);
        assert_eq!(b.timestamp, Some(95));
    }

    #[test]
    fn values_that_do_not_fit_are_refused_not_sent() {
        let level = def("level", DataType::UInt16);
        let birth = dbirth(
            1,
            1,
            &[BirthMetric {
                def: &level,
                alias: None,
                value: Some(&Value::Int(-1)),
                ts_ms: 1,
            }],
        );
        assert_eq!(birth.refused.len(), 1);
        assert_eq!(decode(&birth.bytes).metrics[0].is_null, Some(true));
        let d = data(
            1,
            2,
            &[DataMetric {
                id: MetricId::Alias(3),
                datatype: DataType::UInt16,
                value: &Value::Int(70_000),
                ts_ms: 1,
                historical: false,
            }],
        );
        assert_eq!(d.refused[0].metric, "#3");
        assert!(decode(&d.bytes).metrics.is_empty());
    }

    #[test]
    fn deaths() {
        let n = decode(&ndeath(5, BdSeq::new(255)));
        assert_eq!(n.seq, None);
        assert_eq!(n.metrics.len(), 1);
        assert_eq!(n.metrics[0].name.as_deref(), Some("bdSeq"));
        assert_eq!(n.metrics[0].value, Some(Wire::LongValue(255)));
        let d = decode(&ddeath(6, 200));
        assert_eq!(
            (d.seq, d.timestamp, d.metrics.len()),
            (Some(200), Some(6), 0)
        );
    }

    #[test]
    fn command_envelope_errors() {
        assert!(matches!(
            decode_command(&vec![0u8; MAX_COMMAND_BYTES + 1]),
            Err(DecodeError::TooLarge { .. })
        ));
        assert!(matches!(
            decode_command(&[0xFF, 0xFF, 0xFF]),
            Err(DecodeError::Protobuf(_))
        ));
        let compressed = Payload {
            uuid: Some(COMPRESSED_UUID.into()),
            body: Some(vec![1, 2, 3]),
            ..Payload::default()
        };
        assert_eq!(
            decode_command(&compressed.encode_to_vec()),
            Err(DecodeError::Compressed)
        );
        assert_eq!(decode_command(&[]), Ok(Command::default()));
    }

    fn wire() -> impl Strategy<Value = Option<Wire>> {
        prop_oneof![
            Just(None),
            any::<u32>().prop_map(|v| Some(Wire::IntValue(v))),
            any::<u64>().prop_map(|v| Some(Wire::LongValue(v))),
            any::<bool>().prop_map(|v| Some(Wire::BooleanValue(v))),
            any::<f64>()
                .prop_filter("comparable", |f| !f.is_nan())
                .prop_map(|v| Some(Wire::DoubleValue(v))),
            "\\PC{0,8}".prop_map(|s| Some(Wire::StringValue(s))),
        ]
    }

    fn command_metric() -> impl Strategy<Value = CommandMetric> {
        (
            proptest::option::of("[a-z/ ]{1,12}"),
            proptest::option::of(any::<u64>()),
            proptest::option::of(0u32..40),
            proptest::option::of(any::<u64>()),
            any::<bool>(),
            wire(),
        )
            .prop_map(
                |(name, alias, datatype, timestamp, is_null, value)| CommandMetric {
                    name,
                    alias,
                    datatype,
                    timestamp,
                    is_null,
                    value,
                },
            )
    }

    proptest! {
        /// What a DDATA or DBIRTH carries decodes back to the values, timestamps, ids and flags
        /// that went in (the host side of the codec, with our own decoder).
        #[test]
        fn data_and_birth_round_trip(
            values in proptest::collection::vec(super::super::value::typed_value(), 0..8),
            ts in 0i64..4_000_000_000_000,
            seq: u8,
            historical: bool,
        ) {
            let metrics: Vec<DataMetric<'_>> = values.iter().enumerate().map(|(i, (datatype, value))| DataMetric {
                id: MetricId::Alias(16 + i as u64),
                datatype: *datatype,
                value,
                ts_ms: ts + i as i64,
                historical,
            }).collect();
            let encoded = data(ts, seq, &metrics);
            prop_assert!(encoded.refused.is_empty());
            let p = decode(&encoded.bytes);
            prop_assert_eq!(p.seq, Some(u64::from(seq)));
            prop_assert_eq!(p.metrics.len(), values.len());
            for (i, (m, (datatype, value))) in p.metrics.iter().zip(&values).enumerate() {
                prop_assert_eq!(m.alias, Some(16 + i as u64));
                prop_assert_eq!(m.timestamp, Some((ts + i as i64) as u64));
                prop_assert_eq!(m.is_historical.unwrap_or(false), historical);
                let wire = m.value.as_ref().unwrap();
                prop_assert_eq!(&super::super::value::value_from_wire(*datatype, wire).unwrap(), value);
            }

            let defs: Vec<MetricDef> = values.iter().enumerate().map(|(i, (datatype, _))| MetricDef {
                name: Arc::from(format!("m{i}")),
                datatype: *datatype,
                properties: Properties::default(),
            }).collect();
            let births: Vec<BirthMetric<'_>> = defs.iter().zip(&values).map(|(def, (_, value))| BirthMetric {
                def,
                alias: None,
                value: Some(value),
                ts_ms: ts,
            }).collect();
            let p = decode(&dbirth(ts, seq, &births).bytes);
            for ((m, def), (_, value)) in p.metrics.iter().zip(&defs).zip(&values) {
                prop_assert_eq!(m.name.as_deref(), Some(&*def.name));
                prop_assert_eq!(m.datatype, Some(def.datatype as u32));
                let datatype = DataType::try_from(m.datatype.unwrap() as i32).unwrap();
                prop_assert_eq!(&super::super::value::value_from_wire(datatype, m.value.as_ref().unwrap()).unwrap(), value);
            }
        }

        #[test]
        fn command_codec_round_trips(timestamp in proptest::option::of(any::<u64>()), metrics in proptest::collection::vec(command_metric(), 0..6)) {
            let command = Command { timestamp, metrics };
            prop_assert_eq!(decode_command(&encode_command(&command)), Ok(command));
        }

        #[test]
        fn decoding_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode_command(&bytes);
        }
    }
}
