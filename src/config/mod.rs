//! The validated gateway configuration (interface contract v1).
//!
//! These types are what the rest of the gateway sees: every default is resolved and every cross
//! reference (device → bus) has been checked. Loading and validation live in [`load`]; problems
//! are [`ConfigError`]s that carry file, line, column and key path.

use std::path::PathBuf;
use std::time::Duration;

mod error;
mod load;
mod raw;
mod source_map;
pub mod units;
mod validate;

pub use error::{ConfigError, ConfigErrors};
pub use load::{load, load_str, MAX_FILE_SIZE};
pub use validate::{
    DEFAULT_BUS_TIMEOUT, DEFAULT_KEEP_ALIVE, DEFAULT_MODBUS_PORT, DEFAULT_MQTT_PORT,
    DEFAULT_POLL_INTERVAL, DEFAULT_RECONNECT_INITIAL, DEFAULT_RECONNECT_MAX, DEFAULT_TOPIC_ROOT,
    DEFAULT_UNIT_ID, MAX_CLIENT_ID_LEN, MAX_KEEP_ALIVE, MIN_POLL_INTERVAL,
};

/// The whole gateway configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub gateway: GatewayConfig,
    pub uplink: UplinkConfig,
    pub buses: Vec<BusConfig>,
    pub devices: Vec<DeviceConfig>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct GatewayConfig {
    /// `[A-Za-z0-9_-]+`; default client id and part of the default topic prefix.
    pub id: String,
    /// Directory holding `queue.db`; created if missing.
    pub data_dir: PathBuf,
}

#[derive(Debug, Clone, PartialEq)]
pub struct UplinkConfig {
    /// Broker host from `mqtt://host:port`.
    pub host: String,
    /// Broker port; 1883 when the URL names none.
    pub port: u16,
    /// Resolved: `uplink.client_id` or `gateway.id`.
    pub client_id: String,
    pub keep_alive: Duration,
    /// Resolved: `uplink.topic_prefix` or `fieldrelay/<gateway.id>`; no trailing slash.
    pub topic_prefix: String,
    /// First reconnect delay; doubles per failed attempt (full jitter) up to `reconnect_max`.
    pub reconnect_initial: Duration,
    pub reconnect_max: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BusConfig {
    pub name: String,
    pub kind: BusKind,
    /// Deadline for one request/response exchange.
    pub timeout: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub enum BusKind {
    Tcp { host: String, port: u16 },
}

#[derive(Debug, Clone, PartialEq)]
pub struct DeviceConfig {
    pub name: String,
    /// Name of a bus in [`Config::buses`] (validated).
    pub bus: String,
    pub unit_id: u8,
    pub poll_interval: Duration,
    pub points: Vec<PointConfig>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PointConfig {
    pub name: String,
    pub table: Table,
    /// 0-based protocol address.
    pub address: u16,
    pub data_type: DataType,
    pub scale: f64,
    pub offset: f64,
    pub qos: Qos,
    pub retain: bool,
    pub publish: PublishMode,
    pub deadband: f64,
}

/// Modbus data table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    Coil,
    DiscreteInput,
    Input,
    Holding,
}

impl Table {
    /// Bit tables carry one bool per address; register tables 16 bits per address.
    pub fn is_bits(self) -> bool {
        matches!(self, Table::Coil | Table::DiscreteInput)
    }
}

/// Wire type of a point (big-endian byte and word order in contract v1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataType {
    Bool,
    U16,
    I16,
    U32,
    I32,
    F32,
}

impl DataType {
    /// Registers (or bits, for bit tables) one value occupies.
    pub fn width(self) -> u16 {
        match self {
            DataType::Bool | DataType::U16 | DataType::I16 => 1,
            DataType::U32 | DataType::I32 | DataType::F32 => 2,
        }
    }
}

/// MQTT delivery guarantee per point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Qos {
    /// Sent only while connected; never queued on disk.
    AtMostOnce = 0,
    /// Committed to the queue first; deleted on PUBACK; may be delivered twice with the same `seq`.
    AtLeastOnce = 1,
    /// Committed to the queue first; deleted on PUBCOMP.
    ExactlyOnce = 2,
}

/// When a new reading becomes a published sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishMode {
    /// Only when the value moved by more than `deadband` since the last published one: less
    /// traffic and queue space, coarser history.
    OnChange,
    /// Every successful poll: full history at the cost of traffic and queue space.
    EveryPoll,
}
