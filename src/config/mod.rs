//! The validated gateway configuration (interface contract v1).
//!
//! These types are what the rest of the gateway sees: every default is resolved and every cross
//! reference (device → bus) has been checked. Loading and validation live in [`load`]; problems
//! are [`ConfigError`]s that carry file, line, column and key path.

use std::path::PathBuf;
use std::time::Duration;

pub mod access;
mod client;
mod commands;
mod error;
pub mod files;
mod load;
mod local;
mod metrics;
mod modicon;
pub mod packaged;
mod path;
mod raw;
mod rules;
mod source_map;
mod status;
mod store;
pub mod units;
mod validate;

pub use client::{
    DEFAULT_KEEP_ALIVE, DEFAULT_MQTTS_PORT, DEFAULT_MQTT_PORT, MAX_CLIENT_ID_LEN, MAX_KEEP_ALIVE,
};
pub use commands::{
    CommandsConfig, MissingTs, WriteConfig, WriteFunction, DEFAULT_COMMAND_MAX_AGE,
    DEFAULT_OFFLINE_AFTER,
};
pub use error::{ConfigError, ConfigErrors};
pub use load::{
    load, load_for_check, load_str, load_str_with_warnings, load_with_warnings, read_text, Checked,
    MAX_FILE_SIZE,
};
pub use local::LocalConfig;
pub use modicon::{modicon_hint, ModiconReference};
pub use status::{OfflineStatus, StatusConfig, DEFAULT_HEALTH_INTERVAL};
pub use store::{DEFAULT_MAX_SIZE, MIN_MAX_SIZE};
pub(crate) use validate::data_type_name;
pub use validate::{
    DEFAULT_BACKOFF_MAX, DEFAULT_BAUD_RATE, DEFAULT_BUS_TIMEOUT, DEFAULT_CA_FILE, DEFAULT_MAX_GAP,
    DEFAULT_MAX_INFLIGHT, DEFAULT_MODBUS_PORT, DEFAULT_POLL_INTERVAL, DEFAULT_RECONNECT_INITIAL,
    DEFAULT_RECONNECT_MAX, DEFAULT_RESPONSE_TIMEOUT, DEFAULT_TOPIC_ROOT, DEFAULT_UNIT_ID,
    MAX_DECIMALS, MAX_INFLIGHT, MIN_POLL_INTERVAL,
};

/// The loader's parts for other YAML files held to the configuration's standard (the simulator
/// files of `fieldrelay simulate`): one pipeline, one error format, and the gateway's own rules
/// for the keys the files share (serial settings, a point's table, type and encoding).
pub(crate) mod checks {
    pub(crate) use super::error::Issue;
    pub(crate) use super::load::load_document;
    pub(crate) use super::path::KeyPath;
    pub(crate) use super::raw::{
        decode_document, decode_list, decode_mapping, Decoded, DurationValue, Keys, List,
        PortValue, RawBus, RawPoint,
    };
    pub(crate) use super::rules::{
        in_range, is_host, optional, positive, refuse_keys, require, unknown_choice,
    };
    pub(crate) use super::validate::{
        modbus_source, report_overlaps, require_data_type, scale_and_offset, serial_port,
        serial_settings, BusTag, Footprint, PointDefaults,
    };
}

/// The whole gateway configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub gateway: GatewayConfig,
    pub uplink: UplinkConfig,
    pub buses: Vec<BusConfig>,
    pub devices: Vec<DeviceConfig>,
    /// The `store` section, with every default resolved (the section is optional).
    pub store: StoreConfig,
    /// The Prometheus endpoint; `None` when the file has no `metrics:` section.
    pub metrics: Option<MetricsConfig>,
    /// Status certificates and health reports (keys `uplink.status`, `uplink.health_interval`).
    pub status: StatusConfig,
    /// How commands (`P/<device>/<point>/set`) are admitted (the optional `commands` section).
    pub commands: CommandsConfig,
    /// The on-site broker fieldrelay publishes to as a client; `None` without a `local` section.
    pub local: Option<LocalConfig>,
}

/// Where `/metrics` is served (Prometheus text format).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsConfig {
    pub listen: std::net::SocketAddr,
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
    /// `Some` exactly for `mqtts://` urls.
    pub tls: Option<TlsConfig>,
    pub username: Option<String>,
    /// Read at every connect (so a rotated password is picked up); one trailing newline is not
    /// part of the password.
    pub password_file: Option<PathBuf>,
    pub session: SessionMode,
    /// How long a PINGRESP, PUBACK, PUBREC or PUBCOMP may take before the link is declared
    /// half-open, torn down and redialled.
    pub response_timeout: Duration,
    /// Most unacknowledged QoS 1/2 PUBLISHes at once.
    pub max_inflight: u16,
    /// Most queued messages sent per second; `None`: as fast as the window allows.
    pub max_rate: Option<u32>,
}

/// TLS for `mqtts://`: the broker is verified against `ca_file`; with `cert_file` and
/// `key_file` the gateway also presents a client certificate (mutual TLS).
#[derive(Debug, Clone, PartialEq)]
pub struct TlsConfig {
    /// PEM bundle of trusted CAs; default Debian's system bundle.
    pub ca_file: PathBuf,
    /// PEM client certificate chain and its PKCS#8, PKCS#1 or SEC1 key; both or neither.
    pub client_auth: Option<(PathBuf, PathBuf)>,
}

/// What the broker keeps of the gateway's MQTT session between connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionMode {
    /// `clean_session = 0` with the fixed client id (default): the broker keeps our QoS 2
    /// handshakes and subscriptions across reconnects, so QoS 2 stays exactly-once and commands
    /// sent while the gateway was offline are delivered — at the price of broker memory per
    /// gateway, and a client id that must be unique.
    Persistent,
    /// `clean_session = 1`: the broker forgets everything at disconnect. Nothing piles up on the
    /// broker, but after a reconnect unacknowledged QoS 2 messages are resent as new (possible
    /// duplicates, same `seq`) and commands published meanwhile are lost.
    Clean,
}

/// The durable queue's limits (`store` section).
#[derive(Debug, Clone, PartialEq)]
pub struct StoreConfig {
    /// Bytes of `queue.db` and its write-ahead log together.
    pub max_size: u64,
    pub on_full: OnFull,
    pub sync: SyncMode,
    /// Resolved from the points' `max_age` keys: (device, point) → age. The queue applies it,
    /// so it is kept here rather than in [`PointConfig`].
    pub max_age: std::collections::BTreeMap<(String, String), Duration>,
}

/// What the queue does when `max_size` is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFull {
    /// Delete the oldest never-sent rows to make room (default): the newest data survives a
    /// long outage, the oldest is lost (counted).
    DropOldest,
    /// Refuse new samples until the backlog drains: the history of the start of the outage
    /// survives, the newest data is lost (counted).
    RejectNew,
}

/// When a commit is flushed to the medium.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncMode {
    /// fsync at every group commit (default): a power cut loses nothing committed, at the cost
    /// of one flush per group (slow on SD cards).
    Full,
    /// fsync only at checkpoints: survives process crashes; a power cut may roll back the
    /// commits since the last checkpoint (at most the WAL budget), and with them QoS 2
    /// session state.
    Normal,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BusConfig {
    pub name: String,
    pub kind: BusKind,
    /// Deadline for one request/response exchange (for `serial_line`: for one line after the
    /// poll string was written).
    pub timeout: Duration,
    /// Silence kept on the line between the end of one exchange and the next request: slow
    /// RS-485 transceivers and converters need time to turn the line around.
    pub turnaround_delay: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub enum BusKind {
    /// Modbus TCP (MBAP framing).
    Tcp { host: String, port: u16 },
    /// Modbus RTU frames (with CRC) over a TCP socket, as serial device servers speak it.
    RtuOverTcp { host: String, port: u16 },
    /// Modbus RTU on a serial port (RS-485/RS-232).
    Rtu { serial: SerialSettings },
    /// Line-oriented ASCII instruments on a serial port; points are regex captures.
    SerialLine {
        serial: SerialSettings,
        line: LineSettings,
    },
}

impl BusKind {
    /// `tcp`, `rtu`, ... as written in the file.
    pub fn type_name(&self) -> &'static str {
        match self {
            BusKind::Tcp { .. } => "tcp",
            BusKind::RtuOverTcp { .. } => "rtu_over_tcp",
            BusKind::Rtu { .. } => "rtu",
            BusKind::SerialLine { .. } => "serial_line",
        }
    }
}

/// Port settings of a serial bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SerialSettings {
    /// Device path, e.g. `/dev/ttyUSB0`.
    pub port: String,
    pub baud_rate: u32,
    pub parity: Parity,
    /// 5..=8.
    pub data_bits: u8,
    pub stop_bits: StopBits,
}

impl SerialSettings {
    /// Time one character takes on the wire (start bit, data, parity, stop bits).
    pub fn char_time(&self) -> Duration {
        let bits = 1
            + u32::from(self.data_bits)
            + u32::from(self.parity != Parity::None)
            + match self.stop_bits {
                StopBits::One => 1,
                StopBits::Two => 2,
            };
        Duration::from_secs_f64(f64::from(bits) / f64::from(self.baud_rate.max(1)))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parity {
    None,
    Even,
    Odd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopBits {
    One,
    Two,
}

/// How a `serial_line` bus splits and asks for lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineSettings {
    /// Bytes that end a line (not part of it). With the default `"\n"` a `\r` before it is
    /// dropped too, so CR LF instruments need no setting.
    pub terminator: Vec<u8>,
    /// Written on every poll interval when set (instruments that answer on request); absent for
    /// instruments that stream on their own.
    pub poll: Option<Vec<u8>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DeviceConfig {
    pub name: String,
    /// Name of a bus in [`Config::buses`] (validated).
    pub bus: String,
    pub unit_id: u8,
    pub poll_interval: Duration,
    pub points: Vec<PointConfig>,
    /// Register planning quirks of this device (see [`crate::modbus::plan`]).
    pub planning: Planning,
    /// Longest wait between attempts while the device keeps failing.
    pub backoff_max: Duration,
    /// Consecutive failed polls after which the device's status is published as offline.
    pub offline_after: u32,
}

/// How the read planner may merge a device's points into requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Planning {
    /// Unused registers (bits: 16 times as many) one read may span to join two points.
    pub max_gap: u16,
    /// 1..=125; some devices refuse long reads.
    pub max_registers_per_read: u16,
    pub coalesce: Coalesce,
}

/// Whether points may share a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coalesce {
    /// Merge near points into few requests: fewest round trips, the default.
    Merge,
    /// One request per point: for devices that answer multi-point reads wrongly or refuse reads
    /// spanning unmapped registers; costs one round trip per point.
    OnePerPoint,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PointConfig {
    pub name: String,
    /// Where the value comes from: registers or bits of a Modbus device, or a serial line.
    pub source: PointSource,
    pub data_type: DataType,
    pub scale: f64,
    pub offset: f64,
    /// At most this many decimals in the published value; `None`: those the scale and offset
    /// imply (`crate::modbus::decode`, "Decimals").
    pub decimals: Option<u8>,
    pub qos: Qos,
    pub retain: bool,
    pub reporting: Reporting,
    /// Engineering unit (`°C`, `bar`, `m³/h`), shown by `fieldrelay probe`; not published.
    pub unit: Option<String>,
    /// How commands may write the point; `None`: not writable (every command is refused).
    pub write: Option<WriteConfig>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum PointSource {
    Modbus(ModbusSource),
    /// A capture of a regex applied to every line of a `serial_line` bus.
    Line(LinePattern),
}

/// A point's place in a Modbus device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModbusSource {
    pub table: Table,
    /// 0-based protocol address.
    pub address: u16,
    /// A single bit (0 = least significant) of the register at `address` (type `bool`).
    pub bit: Option<u8>,
    pub encoding: Encoding,
}

impl PointConfig {
    /// The Modbus source of the point, `None` for a serial_line point.
    pub fn modbus(&self) -> Option<&ModbusSource> {
        match &self.source {
            PointSource::Modbus(source) => Some(source),
            PointSource::Line(_) => None,
        }
    }

    /// How a raw reading becomes the published value: scale, offset, decimals.
    pub fn scaling(&self) -> crate::modbus::decode::Scaling {
        crate::modbus::decode::Scaling {
            scale: self.scale,
            offset: self.offset,
            decimals: self.decimals,
        }
    }
}

/// A compiled `regex` of a serial_line point; compares by its text.
#[derive(Debug, Clone)]
pub struct LinePattern(pub regex::Regex);

impl PartialEq for LinePattern {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_str() == other.0.as_str()
    }
}

/// When readings become published samples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reporting {
    pub publish: PublishMode,
    /// `on_change`: publish when |new - last published| > deadband.
    pub deadband: f64,
    /// `on_change`: republish the current value when nothing was published for this long (a
    /// heartbeat, so consumers can tell "unchanged" from "gateway silent").
    pub max_silence: Option<Duration>,
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

/// Wire type of a point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataType {
    Bool,
    U16,
    I16,
    U32,
    I32,
    U64,
    I64,
    F32,
    F64,
    /// ASCII, two characters per register, trailing NULs (and spaces) trimmed.
    String {
        /// Registers.
        length: u16,
    },
}

impl DataType {
    /// Registers (or bits, for bit tables) one value occupies.
    pub fn width(self) -> u16 {
        match self {
            DataType::Bool | DataType::U16 | DataType::I16 => 1,
            DataType::U32 | DataType::I32 | DataType::F32 => 2,
            DataType::U64 | DataType::I64 | DataType::F64 => 4,
            DataType::String { length } => length,
        }
    }
}

/// Order of the two bytes within each register.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ByteOrder {
    /// High byte first, as the Modbus spec sends a register.
    #[default]
    Big,
    /// Low byte first (byte-swapped devices).
    Little,
}

/// Order of the registers of a multi-register value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WordOrder {
    /// Most significant register first ("ABCD" with big bytes).
    #[default]
    Big,
    /// Least significant register first ("CDAB" with big bytes).
    Little,
}

/// Byte and word order together: big/big = ABCD, little/big = BADC, big/little = CDAB,
/// little/little = DCBA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Encoding {
    pub byte_order: ByteOrder,
    pub word_order: WordOrder,
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
