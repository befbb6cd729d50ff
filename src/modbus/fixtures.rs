//! Point and device configurations for the modbus unit tests, as `fieldrelay check` would
//! produce them from a file that names only the keys given here.

use std::time::Duration;

use crate::config::{
    Coalesce, DataType, DeviceConfig, Encoding, ModbusSource, Planning, PointConfig, PointSource,
    PublishMode, Qos, Reporting, Table,
};

/// A modbus point with the default encoding, scale and QoS that publishes every poll, so each
/// reading a test makes is a sample it can see.
pub(crate) fn point(name: &str, table: Table, address: u16, data_type: DataType) -> PointConfig {
    PointConfig {
        name: name.into(),
        source: PointSource::Modbus(ModbusSource {
            table,
            address,
            bit: None,
            encoding: Encoding::default(),
        }),
        data_type,
        scale: 1.0,
        offset: 0.0,
        decimals: None,
        qos: Qos::AtLeastOnce,
        retain: false,
        reporting: Reporting {
            publish: PublishMode::EveryPoll,
            deadband: 0.0,
            max_silence: None,
        },
        unit: None,
        write: None,
    }
}

/// A `bool` point reading one bit of the register at `address`.
pub(crate) fn bit_point(name: &str, table: Table, address: u16, bit: u8) -> PointConfig {
    PointConfig {
        source: PointSource::Modbus(ModbusSource {
            table,
            address,
            bit: Some(bit),
            encoding: Encoding::default(),
        }),
        ..point(name, table, address, DataType::Bool)
    }
}

/// A device on the bus `"bus"` polled every second, with the default planning.
pub(crate) fn device(name: &str, unit_id: u8, points: Vec<PointConfig>) -> DeviceConfig {
    DeviceConfig {
        name: name.into(),
        bus: "bus".into(),
        unit_id,
        poll_interval: Duration::from_secs(1),
        points,
        planning: Planning {
            max_gap: 8,
            max_registers_per_read: 125,
            coalesce: Coalesce::Merge,
        },
        backoff_max: Duration::from_secs(8),
        offline_after: 3,
    }
}
