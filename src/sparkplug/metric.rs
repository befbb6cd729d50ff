//! What a metric is, derived from the configuration (pure): its Sparkplug datatype and the
//! properties a birth declares.
//!
//! # Datatype of a point
//! | point `type` | scale 1 and offset 0 | otherwise |
//! |---|---|---|
//! | `bool` | Boolean | Boolean |
//! | `u16` / `i16` | UInt16 / Int16 | Double |
//! | `u32` / `i32` | UInt32 / Int32 | Double |
//! | `u64` / `i64` | UInt64 / Int64 | Double |
//! | `f32` | Float | Double |
//! | `f64` | Double | Double |
//! | `string` | String | String |
//!
//! This follows the values the gateway already produces (`modbus::decode`: an integer type with
//! scale 1 and offset 0 stays an integer, anything scaled is a float), so every sample of a
//! point fits the datatype its birth declared.
//!
//! # Properties (births only)
//! | property | type | from | why |
//! |---|---|---|---|
//! | `engUnit` | String | the point's `unit` | Tahu's examples and Ignition's tag property of that name |
//! | `engLow` / `engHigh` | Double | a writable point's `min` / `max` | idem (`SparkplugExample.java` sends both as Double) |
//! | `readOnly` | Boolean | `true` unless the point is `writable` | Ignition's tag security property "Read Only" (scripting name `readOnly`); Cirrus Link's MQTT Engine maps birth properties onto Ignition tag properties by that name |
//!
//! Sparkplug itself has no notion of a writable metric: any metric may be the target of a
//! DCMD. `readOnly` is sent on every metric, `false` included, so a host can tell "writable"
//! from "not said". A DCMD to a read-only point is refused by the command checks anyway.

use std::sync::Arc;

use super::proto::DataType;
use crate::config::{self, PointConfig};

/// The node metric carrying the birth/death sequence number (Int64).
pub const BD_SEQ: &str = "bdSeq";
/// The node metric a host writes `true` to ask for a rebirth (Boolean, `false` in the NBIRTH).
pub const REBIRTH: &str = "Node Control/Rebirth";
pub const ENG_UNIT: &str = "engUnit";
pub const ENG_LOW: &str = "engLow";
pub const ENG_HIGH: &str = "engHigh";
pub const READ_ONLY: &str = "readOnly";

/// The properties a birth declares for a metric.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Properties {
    pub eng_unit: Option<String>,
    pub eng_low: Option<f64>,
    pub eng_high: Option<f64>,
    /// `None`: not declared (node metrics that are not points).
    pub read_only: Option<bool>,
}

impl Properties {
    pub fn is_empty(&self) -> bool {
        *self == Properties::default()
    }
}

/// A metric as a birth declares it.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricDef {
    pub name: Arc<str>,
    pub datatype: DataType,
    pub properties: Properties,
}

/// The Sparkplug datatype of a point's values (the table in the module header).
pub fn datatype_of(point: &PointConfig) -> DataType {
    let unscaled = point.scale == 1.0 && point.offset == 0.0;
    match point.data_type {
        config::DataType::Bool => DataType::Boolean,
        config::DataType::String { .. } => DataType::String,
        _ if !unscaled => DataType::Double,
        config::DataType::U16 => DataType::UInt16,
        config::DataType::I16 => DataType::Int16,
        config::DataType::U32 => DataType::UInt32,
        config::DataType::I32 => DataType::Int32,
        config::DataType::U64 => DataType::UInt64,
        config::DataType::I64 => DataType::Int64,
        config::DataType::F32 => DataType::Float,
        config::DataType::F64 => DataType::Double,
    }
}

impl MetricDef {
    /// A point's metric, named by the point.
    pub fn for_point(point: &PointConfig) -> MetricDef {
        let write = point.write.as_ref();
        MetricDef {
            name: Arc::from(point.name.as_str()),
            datatype: datatype_of(point),
            properties: Properties {
                eng_unit: point.unit.clone(),
                eng_low: write.and_then(|w| w.min),
                eng_high: write.and_then(|w| w.max),
                read_only: Some(write.is_none()),
            },
        }
    }
}

/// A gateway health figure published as a node metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeMetric {
    pub name: &'static str,
    pub datatype: DataType,
    pub unit: &'static str,
}

/// The gateway's health figures, in alias order. Append only: a new figure goes at the end, so
/// the aliases of the others stay what they were.
pub const NODE_METRICS: [NodeMetric; 5] = [
    NodeMetric {
        name: "Queue/Depth",
        datatype: DataType::UInt64,
        unit: "rows",
    },
    NodeMetric {
        name: "Queue/Oldest Age",
        datatype: DataType::UInt64,
        unit: "ms",
    },
    NodeMetric {
        name: "Queue/Dropped",
        datatype: DataType::UInt64,
        unit: "samples",
    },
    NodeMetric {
        name: "Uplink/Connects",
        datatype: DataType::UInt64,
        unit: "connections",
    },
    NodeMetric {
        name: "Properties/Software Version",
        datatype: DataType::String,
        unit: "",
    },
];

impl NodeMetric {
    pub fn def(&self) -> MetricDef {
        MetricDef {
            name: Arc::from(self.name),
            datatype: self.datatype,
            properties: Properties {
                eng_unit: (!self.unit.is_empty()).then(|| self.unit.to_owned()),
                eng_low: None,
                eng_high: None,
                read_only: Some(true),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Table, WriteConfig, WriteFunction};
    use crate::modbus::fixtures::point;

    #[test]
    fn unscaled_integers_keep_their_type_and_scaled_ones_are_double() {
        let cases = [
            (config::DataType::U16, DataType::UInt16),
            (config::DataType::I16, DataType::Int16),
            (config::DataType::U32, DataType::UInt32),
            (config::DataType::I32, DataType::Int32),
            (config::DataType::U64, DataType::UInt64),
            (config::DataType::I64, DataType::Int64),
            (config::DataType::F32, DataType::Float),
            (config::DataType::F64, DataType::Double),
            (config::DataType::Bool, DataType::Boolean),
            (config::DataType::String { length: 4 }, DataType::String),
        ];
        for (ours, theirs) in cases {
            let mut p = point("p", Table::Holding, 0, ours);
            assert_eq!(datatype_of(&p), theirs, "{ours:?}");
            p.scale = 0.1;
            let scaled = match ours {
                config::DataType::Bool | config::DataType::String { .. } => theirs,
                _ => DataType::Double,
            };
            assert_eq!(datatype_of(&p), scaled, "{ours:?} scaled");
            p.scale = 1.0;
            p.offset = -40.0;
            assert_eq!(datatype_of(&p), scaled, "{ours:?} offset");
        }
    }

    #[test]
    fn properties_come_from_unit_and_write_limits() {
        let mut p = point("setpoint", Table::Holding, 0, config::DataType::I16);
        p.unit = Some("°C".into());
        let read_only = MetricDef::for_point(&p);
        assert_eq!(read_only.properties.eng_unit.as_deref(), Some("°C"));
        assert_eq!(read_only.properties.read_only, Some(true));
        assert_eq!(read_only.properties.eng_low, None);
        p.write = Some(WriteConfig {
            min: Some(5.0),
            max: Some(90.0),
            verify: false,
            function: WriteFunction::Single,
            max_age: None,
        });
        let writable = MetricDef::for_point(&p);
        assert_eq!(writable.properties.read_only, Some(false));
        assert_eq!(writable.properties.eng_low, Some(5.0));
        assert_eq!(writable.properties.eng_high, Some(90.0));
        assert_eq!(&*writable.name, "setpoint");
    }

    #[test]
    fn node_metric_names_are_unique_and_not_reserved() {
        let mut names: Vec<&str> = NODE_METRICS.iter().map(|m| m.name).collect();
        names.extend([BD_SEQ, REBIRTH]);
        let count = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), count);
    }
}
