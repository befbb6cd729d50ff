//! What a host's NCMD or DCMD asks for (pure): point writes for the command pipeline, or a
//! rebirth; and when a rebirth may run.
//!
//! # Metrics to requests ([`interpret`])
//! Each metric of a command is one request or one [`Refusal`]; one bad metric does not spoil the
//! others. A metric names its target by name, or — when the node uses aliases — by alias
//! ([`super::alias`]; `payloads-alias-data-cmd-requirement`).
//! - **DCMD** `spBv1.0/<g>/DCMD/<e>/<device>`: a metric of that device's points becomes a
//!   [`WriteRequest`] with the value decoded as the metric's datatype, or the point's when the
//!   host sent none ([`super::value::value_from_wire`]), and the metric's timestamp (else the
//!   payload's) as the command's `ts`, so the pipeline's age check applies. Whether the point is
//!   writable, the value in range, the device online is the command pipeline's decision, not
//!   this module's: a request here is only well formed.
//! - **NCMD** `Node Control/Rebirth = true` is a [`Request::Rebirth`]
//!   (`operational-behavior-data-commands-ncmd-rebirth-*`); `false` asks nothing. Every other
//!   node metric is read-only.
//!
//! Sparkplug has no reply topic: the caller logs and counts refusals; the host sees a write's
//! effect in the next DDATA.
//!
//! # Rebirth debounce ([`RebirthDebounce`])
//! A host asks for a rebirth when it sees a `seq` gap, and may ask again for every message that
//! follows the gap. A full birth costs every metric of the node, so requests are coalesced: at
//! most one rebirth per `min_interval`; a request inside the interval is not dropped (it may
//! report a gap after the last birth) but deferred to the interval's end, and any number of
//! requests meanwhile make that one deferred rebirth. A birth for another reason (a new
//! connection) satisfies a deferred request.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::alias::{AliasTable, MetricRef};
use super::metric::REBIRTH;
use super::payload::{Command, CommandMetric};
use super::proto::payload::metric::Value as Wire;
use super::proto::DataType;
use super::value::{value_from_wire, ValueError};
use crate::sample::Value;

/// Rebirths closer together than this are coalesced (see the module header).
pub const DEFAULT_REBIRTH_INTERVAL: Duration = Duration::from_secs(5);

/// Whom a command is addressed to, from its topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'a> {
    /// NCMD.
    Node,
    /// DCMD to this device id.
    Device(&'a str),
}

/// A well-formed write of one point.
#[derive(Debug, Clone, PartialEq)]
pub struct WriteRequest {
    pub device: Arc<str>,
    pub point: Arc<str>,
    pub value: Value,
    /// When the host issued it (the metric's timestamp, else the payload's), ms since the Unix
    /// epoch; for the pipeline's age check.
    pub ts_ms: Option<i64>,
}

/// What one metric of a command asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    Write(WriteRequest),
    Rebirth,
    /// `Node Control/Rebirth = false`: nothing to do.
    Nothing,
}

/// Why a metric of a command is not carried out.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Refusal {
    #[error("metric has neither name nor alias")]
    Anonymous,
    #[error("alias {0} is not one this node declared")]
    UnknownAlias(u64),
    #[error("device {device:?} has no point {point:?}")]
    UnknownPoint { device: String, point: String },
    #[error("alias {alias} belongs to {owner}, not to device {device:?}")]
    WrongDevice {
        alias: u64,
        owner: String,
        device: String,
    },
    #[error("node metric {0:?} is read-only")]
    ReadOnlyNodeMetric(String),
    #[error("metric {0:?} carries no value")]
    NoValue(String),
    #[error("metric {metric:?} has unknown datatype code {code}")]
    UnknownDatatype { metric: String, code: u32 },
    #[error("metric {metric:?}: {error}")]
    BadValue { metric: String, error: ValueError },
}

/// The requests of a command, one result per metric in the order sent.
///
/// `point_type(device, point)`: the datatype of a configured point (its birth's), `None` when
/// the device has no such point.
pub fn interpret(
    target: Target<'_>,
    command: &Command,
    aliases: &AliasTable,
    point_type: impl Fn(&str, &str) -> Option<DataType>,
) -> Vec<Result<Request, Refusal>> {
    command
        .metrics
        .iter()
        .map(|metric| one(target, command.timestamp, metric, aliases, &point_type))
        .collect()
}

fn one(
    target: Target<'_>,
    sent: Option<u64>,
    metric: &CommandMetric,
    aliases: &AliasTable,
    point_type: &impl Fn(&str, &str) -> Option<DataType>,
) -> Result<Request, Refusal> {
    let named: Option<MetricRef> = metric.name.as_deref().map(|name| match target {
        Target::Node => MetricRef::Node {
            name: Arc::from(name),
        },
        Target::Device(device) => MetricRef::Device {
            device: Arc::from(device),
            point: Arc::from(name),
        },
    });
    let target_ref = match (named, metric.alias) {
        (Some(named), _) => named,
        (None, Some(alias)) => aliases
            .resolve(alias)
            .cloned()
            .ok_or(Refusal::UnknownAlias(alias))?,
        (None, None) => return Err(Refusal::Anonymous),
    };
    match (target, target_ref) {
        (Target::Node, MetricRef::Node { name }) if &*name == REBIRTH => {
            match value(metric, &name, DataType::Boolean)? {
                Value::Bool(true) => Ok(Request::Rebirth),
                _ => Ok(Request::Nothing),
            }
        }
        (Target::Node, MetricRef::Node { name }) => {
            Err(Refusal::ReadOnlyNodeMetric(name.to_string()))
        }
        (
            Target::Device(device),
            MetricRef::Device {
                device: owner,
                point,
            },
        ) if *owner == *device => {
            let expected = point_type(device, &point).ok_or_else(|| Refusal::UnknownPoint {
                device: device.to_owned(),
                point: point.to_string(),
            })?;
            Ok(Request::Write(WriteRequest {
                value: value(metric, &point, expected)?,
                ts_ms: metric
                    .timestamp
                    .or(sent)
                    .map(|ts| i64::try_from(ts).unwrap_or(i64::MAX)),
                device: owner,
                point,
            }))
        }
        (target, other) => Err(Refusal::WrongDevice {
            alias: metric.alias.unwrap_or(0),
            owner: match other {
                MetricRef::Device { device, point } => format!("{device}/{point}"),
                MetricRef::Node { name } => format!("node metric {name:?}"),
            },
            device: match target {
                Target::Device(device) => device.to_owned(),
                Target::Node => "(node)".to_owned(),
            },
        }),
    }
}

/// The metric's value as its own datatype, else `expected`.
fn value(metric: &CommandMetric, name: &str, expected: DataType) -> Result<Value, Refusal> {
    let wire: &Wire = match (&metric.value, metric.is_null) {
        (Some(wire), false) => wire,
        _ => return Err(Refusal::NoValue(name.to_owned())),
    };
    let datatype = match metric.datatype {
        None | Some(0) => expected,
        Some(code) => i32::try_from(code)
            .ok()
            .and_then(|code| DataType::try_from(code).ok())
            .ok_or_else(|| Refusal::UnknownDatatype {
                metric: name.to_owned(),
                code,
            })?,
    };
    value_from_wire(datatype, wire).map_err(|error| Refusal::BadValue {
        metric: name.to_owned(),
        error,
    })
}

/// What to do about a rebirth request now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RebirthDecision {
    /// Stop data, publish NBIRTH and the DBIRTHs now.
    Now,
    /// Do it at this time (call [`RebirthDebounce::due`] then).
    At(Instant),
    /// One is already scheduled; this request is part of it.
    Coalesced,
}

/// Coalesces rebirth requests (see the module header).
#[derive(Debug, Clone)]
pub struct RebirthDebounce {
    min_interval: Duration,
    last_birth: Option<Instant>,
    deferred: bool,
}

impl RebirthDebounce {
    pub fn new(min_interval: Duration) -> RebirthDebounce {
        RebirthDebounce {
            min_interval,
            last_birth: None,
            deferred: false,
        }
    }

    /// A host asked for a rebirth at `now`.
    pub fn request(&mut self, now: Instant) -> RebirthDecision {
        if self.deferred {
            return RebirthDecision::Coalesced;
        }
        match self.last_birth.map(|last| last + self.min_interval) {
            Some(next) if now < next => {
                self.deferred = true;
                RebirthDecision::At(next)
            }
            _ => {
                self.last_birth = Some(now);
                RebirthDecision::Now
            }
        }
    }

    /// Whether a deferred rebirth is due at `now`; if so it counts as done.
    pub fn due(&mut self, now: Instant) -> bool {
        let ready = self.deferred
            && self
                .last_birth
                .is_none_or(|last| now >= last + self.min_interval);
        if ready {
            self.deferred = false;
            self.last_birth = Some(now);
        }
        ready
    }

    /// A birth sequence went out for another reason (a new connection): it answers any
    /// deferred request, and starts the interval.
    pub fn births_sent(&mut self, now: Instant) {
        self.deferred = false;
        self.last_birth = Some(now);
    }
}

impl Default for RebirthDebounce {
    fn default() -> Self {
        RebirthDebounce::new(DEFAULT_REBIRTH_INTERVAL)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> AliasTable {
        AliasTable::new(
            [
                ("boiler", vec!["setpoint", "mode", "trip"]),
                ("pump", vec!["rpm"]),
            ],
            ["Queue/Depth"],
        )
    }

    fn types(device: &str, point: &str) -> Option<DataType> {
        match (device, point) {
            ("boiler", "setpoint") => Some(DataType::Int16),
            ("boiler", "mode") => Some(DataType::String),
            ("boiler", "trip") => Some(DataType::Boolean),
            ("pump", "rpm") => Some(DataType::UInt16),
            _ => None,
        }
    }

    fn metric(name: Option<&str>, alias: Option<u64>, value: Option<Wire>) -> CommandMetric {
        CommandMetric {
            name: name.map(str::to_owned),
            alias,
            value,
            ..CommandMetric::default()
        }
    }

    fn run(target: Target<'_>, metrics: Vec<CommandMetric>) -> Vec<Result<Request, Refusal>> {
        let command = Command {
            timestamp: Some(1_000),
            metrics,
        };
        interpret(target, &command, &table(), types)
    }

    fn write(device: &str, point: &str, value: Value, ts: i64) -> Result<Request, Refusal> {
        Ok(Request::Write(WriteRequest {
            device: device.into(),
            point: point.into(),
            value,
            ts_ms: Some(ts),
        }))
    }

    #[test]
    fn dcmd_by_name_and_by_alias_become_writes() {
        let alias = table().device("boiler", "setpoint").unwrap();
        let mut by_alias = metric(None, Some(alias), Some(Wire::IntValue(0xFFFF_FFA9)));
        by_alias.timestamp = Some(900);
        let out = run(
            Target::Device("boiler"),
            vec![
                metric(Some("mode"), None, Some(Wire::StringValue("AUTO".into()))),
                by_alias,
            ],
        );
        assert_eq!(
            out,
            [
                write("boiler", "mode", Value::Str("AUTO".into()), 1_000),
                write("boiler", "setpoint", Value::Int(-87), 900),
            ]
        );
    }

    #[test]
    fn the_metrics_own_datatype_wins_over_the_points() {
        let mut m = metric(Some("setpoint"), None, Some(Wire::DoubleValue(21.5)));
        m.datatype = Some(DataType::Double as u32);
        assert_eq!(
            run(Target::Device("boiler"), vec![m]),
            [write("boiler", "setpoint", Value::Float(21.5), 1_000)]
        );
    }

    #[test]
    fn refusals_are_per_metric() {
        let pump_alias = table().device("pump", "rpm").unwrap();
        let mut unknown_type = metric(Some("setpoint"), None, Some(Wire::IntValue(1)));
        unknown_type.datatype = Some(99);
        let mut null = metric(Some("trip"), None, Some(Wire::BooleanValue(true)));
        null.is_null = true;
        let out = run(
            Target::Device("boiler"),
            vec![
                metric(None, None, Some(Wire::IntValue(1))),
                metric(None, Some(9_999), Some(Wire::IntValue(1))),
                metric(Some("nope"), None, Some(Wire::IntValue(1))),
                metric(None, Some(pump_alias), Some(Wire::IntValue(1))),
                metric(Some("trip"), None, None),
                null,
                unknown_type,
                metric(Some("trip"), None, Some(Wire::IntValue(1))),
                metric(Some("trip"), None, Some(Wire::BooleanValue(true))),
            ],
        );
        assert_eq!(out[0], Err(Refusal::Anonymous));
        assert_eq!(out[1], Err(Refusal::UnknownAlias(9_999)));
        assert!(matches!(out[2], Err(Refusal::UnknownPoint { .. })));
        assert!(matches!(out[3], Err(Refusal::WrongDevice { .. })));
        assert!(matches!(out[4], Err(Refusal::NoValue(_))));
        assert!(matches!(out[5], Err(Refusal::NoValue(_))));
        assert!(matches!(
            out[6],
            Err(Refusal::UnknownDatatype { code: 99, .. })
        ));
        assert!(matches!(out[7], Err(Refusal::BadValue { .. })));
        assert_eq!(out[8], write("boiler", "trip", Value::Bool(true), 1_000));
    }

    #[test]
    fn ncmd_rebirth_true_false_and_other_node_metrics() {
        let depth = table().node("Queue/Depth").unwrap();
        let out = run(
            Target::Node,
            vec![
                metric(Some(REBIRTH), None, Some(Wire::BooleanValue(true))),
                metric(Some(REBIRTH), None, Some(Wire::BooleanValue(false))),
                metric(Some("Queue/Depth"), None, Some(Wire::LongValue(0))),
                metric(None, Some(depth), Some(Wire::LongValue(0))),
                metric(None, Some(16), Some(Wire::IntValue(1))),
            ],
        );
        assert_eq!(out[0], Ok(Request::Rebirth));
        assert_eq!(out[1], Ok(Request::Nothing));
        assert!(matches!(out[2], Err(Refusal::ReadOnlyNodeMetric(_))));
        assert!(matches!(out[3], Err(Refusal::ReadOnlyNodeMetric(_))));
        // A device point's alias sent to the node.
        assert!(matches!(out[4], Err(Refusal::WrongDevice { .. })));
    }

    fn at(ms: u64) -> Instant {
        static ORIGIN: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        *ORIGIN.get_or_init(Instant::now) + Duration::from_millis(ms)
    }

    #[test]
    fn first_request_rebirths_now() {
        let mut d = RebirthDebounce::new(Duration::from_secs(5));
        assert_eq!(d.request(at(0)), RebirthDecision::Now);
    }

    #[test]
    fn request_after_the_interval_rebirths_now() {
        let mut d = RebirthDebounce::new(Duration::from_secs(5));
        d.request(at(0));
        assert_eq!(d.request(at(5_000)), RebirthDecision::Now);
    }

    #[test]
    fn request_within_the_interval_is_deferred_to_its_end() {
        let mut d = RebirthDebounce::new(Duration::from_secs(5));
        d.request(at(0));
        assert_eq!(d.request(at(1_000)), RebirthDecision::At(at(5_000)));
        assert!(!d.due(at(4_999)));
        assert!(d.due(at(5_000)));
        assert!(!d.due(at(5_001)), "a deferred rebirth runs once");
    }

    #[test]
    fn requests_while_deferred_coalesce() {
        let mut d = RebirthDebounce::new(Duration::from_secs(5));
        d.request(at(0));
        d.request(at(1_000));
        assert_eq!(d.request(at(2_000)), RebirthDecision::Coalesced);
        assert_eq!(d.request(at(3_000)), RebirthDecision::Coalesced);
        assert!(d.due(at(5_000)));
        // The deferred rebirth started a new interval.
        assert_eq!(d.request(at(6_000)), RebirthDecision::At(at(10_000)));
    }

    #[test]
    fn connect_birth_satisfies_a_deferred_request() {
        let mut d = RebirthDebounce::new(Duration::from_secs(5));
        d.request(at(0));
        d.request(at(1_000));
        d.births_sent(at(2_000));
        assert!(!d.due(at(5_000)));
        assert_eq!(d.request(at(3_000)), RebirthDecision::At(at(7_000)));
    }
}
