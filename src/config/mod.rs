//! The gateway configuration (interface contract v1): the YAML file, every rule it must pass,
//! and the validated [`Config`] the rest of the gateway runs on, with every default resolved and
//! every cross reference (device → bus) checked. Problems are [`ConfigError`]s that carry file,
//! line, column and key path, every one of a file at once.
//!
//! # Layout
//! One file per section of the file, each holding the section's raw shape (serde structs that
//! mirror the YAML), its rules (`validate_*`) and the types it resolves into: `gateway.rs`,
//! `uplink.rs` (whose `status` keys are `status.rs`), `bus.rs`, `device.rs`, `point.rs`,
//! `store.rs`, `metrics.rs`, `commands.rs` (also the write keys of a point), `local.rs` and
//! `console.rs`. This file lists them, decodes the top level and hands each section to its file.
//!
//! Imports go one way, down these layers; inside a layer only where said (a test here checks
//! it against the same order, written as one list):
//! 1. [`packaged`] (the shipped example, loaded through this file); this file; [`files`] and
//!    [`access`] (the files a configuration names, found in the raw sections before validation);
//!    `secrets.rs` (secret values written inline, refused in a pushed configuration).
//! 2. The sections. `device.rs` uses `point.rs` and `bus.rs`, `point.rs` uses `bus.rs` and
//!    `commands.rs`, `store.rs` reads the points' `max_age` through `device.rs`, `status.rs` and
//!    `local.rs` read `uplink.rs`, and `console.rs` parses its `listen` as `metrics.rs` does;
//!    nothing else crosses between sections. `remote.rs` is the `remote_config` section.
//! 3. What the sections share: `client.rs` (the MQTT client keys of `uplink` and `local`),
//!    `register.rs` (Modbus tables, types and footprints), and `modicon.rs` (register numbers
//!    from manuals), which uses `register.rs`.
//! 4. `rules.rs`: required and optional keys, ranges, names, and [`rules::Choice`], the one way
//!    a word becomes an enum.
//! 5. `decode.rs` (YAML tree → raw structs, key by key) and `load.rs` (the pipeline: read, locate
//!    with `source_map.rs`, parse, decode, validate).
//! 6. `error.rs` (how a problem is printed), which uses `path.rs` (where it is); [`units`]
//!    (durations and sizes); [`limits`] (the Modbus protocol's read limits, which the read
//!    planner obeys too).
//!
//! # Guarantees
//! - **Everything is checked, nothing stops early.** Each check pushes an issue and goes on; a
//!   value that failed contributes `None` and the checks that depend on it are skipped, so one
//!   mistake is reported once and not again as a cascade (a bad `type` does not also produce an
//!   "overlap" or "width" error).
//! - **Pure.** No I/O, no clock, no positions: issues name a key path, and the loader looks
//!   positions up afterwards. That makes every rule testable from a YAML string. (The files a
//!   configuration names are opened by [`load`], beside the rules, not by them.)
//! - **A `Config` only when it is fully valid.** [`validate`] returns `Some` only if every part
//!   could be built; the loader in addition refuses the result if any issue was reported.
//!
//! The rules are those of the v1 contract (see `docs/configuration.md`). A few are stricter than
//! the protocol requires, on purpose: a bus `type` has no default, `keep_alive` must be whole
//! seconds, and overlapping registers in one device and table are refused (each section's
//! header says why).

use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

pub mod access;
mod batch;
mod broker;
mod broker_fit;
mod bus;
mod client;
mod commands;
mod console;
mod decode;
mod device;
mod drain;
mod error;
pub mod files;
mod gateway;
pub mod limits;
mod load;
mod local;
mod metrics;
mod modicon;
pub mod packaged;
mod path;
mod point;
mod protocol;
mod register;
mod remote;
mod rules;
mod secrets;
mod source_map;
mod sparkplug;
mod status;
mod store;
#[cfg(test)]
pub(crate) mod testing;
pub mod units;
mod uplink;

pub use batch::{Batching, DEFAULT_MAX_PACKET};
pub use broker::{drain_rate_under, Broker, BrokerLimits};
pub use bus::{
    BusConfig, BusKind, LineSettings, Parity, SerialSettings, StopBits, DEFAULT_BAUD_RATE,
    DEFAULT_BUS_TIMEOUT, DEFAULT_MODBUS_PORT,
};
pub use client::{
    DEFAULT_KEEP_ALIVE, DEFAULT_MQTTS_PORT, DEFAULT_MQTT_PORT, MAX_CLIENT_ID_LEN, MAX_KEEP_ALIVE,
};
pub use commands::{
    CommandsConfig, MissingTs, WriteConfig, WriteFunction, DEFAULT_COMMAND_MAX_AGE,
};
pub use console::{ConsoleAuth, ConsoleConfig};
pub use device::{
    Coalesce, DeviceConfig, Planning, DEFAULT_BACKOFF_MAX, DEFAULT_MAX_GAP, DEFAULT_OFFLINE_AFTER,
    DEFAULT_POLL_INTERVAL, DEFAULT_UNIT_ID, MIN_POLL_INTERVAL,
};
pub use drain::{DrainOrder, DEFAULT_LIVE_SHARE, MAX_LIVE_SHARE};
pub use error::{ConfigError, ConfigErrors};
pub use gateway::GatewayConfig;
pub use load::{read_text, MAX_FILE_SIZE};
pub use local::LocalConfig;
pub use metrics::MetricsConfig;
pub use modicon::{modicon_hint, ModiconReference};
pub use point::{LinePattern, PointConfig, PointSource, PublishMode, Qos, Reporting, MAX_DECIMALS};
pub use protocol::{Mqtt5Session, Protocol};
pub(crate) use register::data_type_name;
pub use register::{ByteOrder, DataType, Encoding, ModbusSource, Table, WordOrder};
pub use remote::{RemoteConfig, DEFAULT_CONFIRM_WITHIN, DEFAULT_REMOTE_MAX_SIZE};
pub use sparkplug::{
    is_sparkplug_id, SparkplugConfig, SparkplugHistory, UplinkProfile, DEFAULT_FLUSH_MAX_METRICS,
};
pub use status::{OfflineStatus, StatusConfig, DEFAULT_HEALTH_HEARTBEAT, DEFAULT_HEALTH_INTERVAL};
pub use store::{OnFull, StoreConfig, SyncMode, DEFAULT_MAX_SIZE, MIN_MAX_SIZE};
pub use uplink::{
    SessionMode, TlsConfig, UplinkConfig, DEFAULT_CA_FILE, DEFAULT_MAX_INFLIGHT,
    DEFAULT_RECONNECT_INITIAL, DEFAULT_RECONNECT_MAX, DEFAULT_RESPONSE_TIMEOUT, DEFAULT_TOPIC_ROOT,
    DEFAULT_UPLINK_KEEP_ALIVE, MAX_INFLIGHT,
};

/// The loader's parts for other YAML files held to the configuration's standard (the simulator
/// files of `fieldrelay simulate`): one pipeline, one error format, and the gateway's own rules
/// for the keys the files share (serial settings, a point's table, type and encoding).
pub(crate) mod checks {
    pub(crate) use super::bus::{serial_port, serial_settings, BusTag, RawBus};
    pub(crate) use super::decode::{
        decode_document, decode_list, decode_mapping, Decoded, DurationValue, Keys, List, PortValue,
    };
    pub(crate) use super::error::Issue;
    pub(crate) use super::load::load_document;
    pub(crate) use super::path::KeyPath;
    pub(crate) use super::point::{modbus_source, scale_and_offset, PointDefaults, RawPoint};
    pub(crate) use super::register::{report_overlaps, require_data_type, Footprint};
    pub(crate) use super::rules::{
        in_range, is_host, optional, positive, refuse_keys, require, unknown_choice,
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
    /// The local web console; `None` without a `console` section.
    pub console: Option<ConsoleConfig>,
    /// Whether and how the cloud may push a configuration (the optional `remote_config`).
    pub remote_config: RemoteConfig,
}

/// Reads, parses and validates the configuration file at `path`, and opens and parses every
/// file it names (TLS certificates and key, password files: [`files`]). Errors name the file as
/// given.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    load_with_warnings(path).map(|(config, _)| config)
}

/// [`load`], with the warnings of a valid file (print them with
/// [`ConfigError::as_warning`]); the errors of an invalid one carry its warnings too.
pub fn load_with_warnings(path: &Path) -> Result<(Config, Vec<ConfigError>), ConfigErrors> {
    load_file(path, None)
}

/// What [`load_for_check`] found in a valid file.
#[derive(Debug)]
pub struct Checked {
    pub config: Config,
    pub warnings: Vec<ConfigError>,
    /// The service user whose access to every named file was checked (run as root only).
    pub service_user: Option<String>,
}

/// [`load_with_warnings`] for `fieldrelay check`: run as root, it also checks that the service
/// user may read every file the configuration names ([`access`]), and says which user it
/// checked for.
pub fn load_for_check(path: &Path) -> Result<Checked, ConfigErrors> {
    let user = access::ServiceUser::when_root();
    let (config, warnings) = load_file(path, user.as_ref())?;
    Ok(Checked {
        config,
        warnings,
        service_user: user.map(|user| user.name),
    })
}

fn load_file(
    path: &Path,
    user: Option<&access::ServiceUser>,
) -> Result<(Config, Vec<ConfigError>), ConfigErrors> {
    let text = read_text(path)?;
    load::load_document_with_warnings(&text, &path.display().to_string(), |document, issues| {
        let raw = decode_sections(document, issues)?;
        // Every named file, whatever else is wrong: all problems at once.
        let named = files::references(raw.uplink.as_ref(), raw.local.as_ref());
        files::check(&named, user, issues);
        validate(&raw, issues)
    })
}

/// [`load_with_warnings`] for a configuration pushed from the cloud as `text` (`file_name` is
/// used in the errors): every rule of `fieldrelay check`, every file it names opened on this
/// gateway, and in addition no secret values written inline (`secrets.rs`).
pub fn load_pushed(
    text: &str,
    file_name: &str,
) -> Result<(Config, Vec<ConfigError>), ConfigErrors> {
    load::load_document_with_warnings(text, file_name, |document, issues| {
        secrets::refuse_inline_secrets(document, issues);
        let raw = decode_sections(document, issues)?;
        let named = files::references(raw.uplink.as_ref(), raw.local.as_ref());
        files::check(&named, None, issues);
        validate(&raw, issues)
    })
}

/// Whether a mapping key names a secret value (what [`load_pushed`] refuses inline); for
/// redacting a configuration shown to the cloud.
pub fn is_secret_key(key: &str) -> bool {
    secrets::is_secret_key(key)
}

/// Parses and validates configuration `text`; `file_name` is used in the errors. The files the
/// text names are not opened.
pub fn load_str(text: &str, file_name: &str) -> Result<Config, ConfigErrors> {
    load_str_with_warnings(text, file_name).map(|(config, _)| config)
}

/// [`load_str`] with the warnings of a valid file.
pub fn load_str_with_warnings(
    text: &str,
    file_name: &str,
) -> Result<(Config, Vec<ConfigError>), ConfigErrors> {
    load::load_document_with_warnings(text, file_name, |document, issues| {
        decode_sections(document, issues).and_then(|raw| validate(&raw, issues))
    })
}

/// Top level. Sections stay generic here and are decoded one by one.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoot {
    gateway: Option<Value>,
    uplink: Option<Value>,
    buses: Option<Vec<Value>>,
    devices: Option<Vec<Value>>,
    store: Option<Value>,
    metrics: Option<Value>,
    commands: Option<Value>,
    local: Option<Value>,
    console: Option<Value>,
    remote_config: Option<Value>,
}

/// The whole file, decoded as far as possible.
#[derive(Debug)]
struct RawConfig {
    /// Keys of the top-level mapping.
    root: decode::Keys,
    gateway: Option<decode::Decoded<gateway::RawGateway>>,
    uplink: Option<decode::Decoded<uplink::RawUplink>>,
    buses: Option<decode::List<decode::Decoded<bus::RawBus>>>,
    devices: Option<decode::List<device::RawDeviceEntry>>,
    store: Option<decode::Decoded<store::RawStore>>,
    metrics: Option<decode::Decoded<metrics::RawMetrics>>,
    commands: Option<decode::Decoded<commands::RawCommands>>,
    local: Option<decode::Decoded<local::RawLocal>>,
    console: Option<decode::Decoded<console::RawConsole>>,
    remote: Option<decode::Decoded<remote::RawRemote>>,
}

/// Decodes the document tree. Returns `None` only when the top level is not a mapping (then
/// nothing else can be said); every other problem is pushed to `issues` and decoding goes on.
fn decode_sections(document: &Value, issues: &mut Vec<error::Issue>) -> Option<RawConfig> {
    use decode::{decode_list, decode_mapping, decode_section};
    let decode::Decoded {
        value: root,
        mut keys,
    } = decode::decode_document::<RawRoot>(
        document,
        "the configuration",
        "the configuration is empty: expected the sections gateway, uplink, buses and devices",
        issues,
    )?;
    let gateway = decode_section(&root.gateway, "gateway", &mut keys, issues);
    let uplink = decode_section(&root.uplink, "uplink", &mut keys, issues);
    let store = decode_section(&root.store, "store", &mut keys, issues);
    let buses = root.buses.map(|items| {
        let bus =
            |value: Value, path, issues: &mut _| decode_mapping(&value, &path, "a bus", issues);
        decode_list(items, keys.path_of("buses"), bus, issues)
    });
    let devices = root.devices.map(|items| {
        decode_list(
            items,
            keys.path_of("devices"),
            device::decode_device,
            issues,
        )
    });
    let metrics = decode_section(&root.metrics, "metrics", &mut keys, issues);
    let commands = decode_section(&root.commands, "commands", &mut keys, issues);
    let local = decode_section(&root.local, "local", &mut keys, issues);
    let console = decode_section(&root.console, "console", &mut keys, issues);
    let remote = decode_section(&root.remote_config, "remote_config", &mut keys, issues);
    Some(RawConfig {
        root: keys,
        gateway,
        uplink,
        buses,
        devices,
        store,
        metrics,
        commands,
        local,
        console,
        remote,
    })
}

/// Builds the configuration, each section by its file's rules; pushes every problem found to
/// `issues`. Returns `Some` only if every part could be built.
fn validate(raw: &RawConfig, issues: &mut Vec<error::Issue>) -> Option<Config> {
    use rules::require;
    let root = &raw.root;
    let gateway = require(root, "gateway", &raw.gateway, issues)
        .and_then(|gateway| gateway::validate_gateway(gateway, issues));
    // The uplink's defaults derive from the gateway id; without a valid id they cannot be
    // resolved, and the id's own error has been reported already.
    let gateway_id = gateway.as_ref().map(|gateway| gateway.id.as_str());
    let uplink = require(root, "uplink", &raw.uplink, issues)
        .and_then(|uplink| uplink::validate_uplink(uplink, gateway_id, issues));
    let buses = require(root, "buses", &raw.buses, issues)
        .and_then(|list| bus::validate_buses(list, issues));
    let bus_tags = bus::bus_tags(raw.buses.as_ref());
    let devices = require(root, "devices", &raw.devices, issues)
        .and_then(|list| device::validate_devices(list, &bus_tags, issues));
    let store = store::validate_store(raw.store.as_ref(), root, raw.devices.as_ref(), issues);
    let metrics = metrics::validate_metrics(raw.metrics.as_ref(), issues);
    let status = status::validate_status(raw.uplink.as_ref(), issues);
    let commands = commands::validate_commands(raw.commands.as_ref(), root, issues);
    let local = local::validate_local(raw.local.as_ref(), uplink.as_ref(), issues);
    let console = console::validate_console(raw.console.as_ref(), issues);
    if let (Some(uplink), Some(devices), Some(raw_uplink)) = (&uplink, &devices, &raw.uplink) {
        broker_fit::check_broker_fit(uplink, &raw_uplink.keys, devices, issues);
    }
    let remote_config = remote::validate_remote(raw.remote.as_ref(), root, issues);
    if let Some(devices) = &devices {
        let names = devices.iter().map(|device| device.name.as_str());
        remote::refuse_config_device(remote_config.as_ref(), names, issues);
    }
    if let (Some(uplink), Some(devices)) = (&uplink, &devices) {
        batch::refuse_batch_conflicts(
            uplink.batch,
            uplink.drain != DrainOrder::InOrder,
            matches!(uplink.profile, UplinkProfile::Sparkplug(_)),
            devices.iter().map(|device| device.name.as_str()),
            issues,
        );
    }
    if let Some(uplink) = &uplink {
        if matches!(uplink.profile, UplinkProfile::Sparkplug(_))
            && uplink.drain != DrainOrder::InOrder
        {
            issues.push(error::Issue::value(
                path::KeyPath::root().key("uplink").key("drain"),
                "the JSON profile's drain order; with uplink.profile: sparkplug the order of \
                 history and live data is uplink.sparkplug.history",
            ));
        }
    }
    if let (Some(remote), Some(uplink)) = (&remote_config, &uplink) {
        if remote.allow && matches!(uplink.profile, UplinkProfile::Sparkplug(_)) {
            issues.push(error::Issue::value(
                path::KeyPath::root().key("remote_config").key("allow"),
                "configurations are pushed on the JSON profile's topics (P/config/set), which \
                 uplink.profile: sparkplug neither subscribes nor answers: set allow: false",
            ));
        }
    }

    Some(Config {
        gateway: gateway?,
        uplink: uplink?,
        buses: buses?,
        devices: devices?,
        store: store?,
        metrics: metrics?,
        status: status?,
        commands: commands?,
        local: local?,
        console: console?,
        remote_config: remote_config?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::VALID;
    use crate::config::testing::{errors, with};
    use std::collections::BTreeSet;
    use std::time::Duration;

    #[test]
    fn resolves_every_default() {
        let config = load_str(VALID, "c.yaml").unwrap();
        assert_eq!(
            config.uplink,
            UplinkConfig {
                host: "broker.local".to_owned(),
                port: 1883,
                client_id: "gw1".to_owned(),
                keep_alive: Duration::from_secs(600),
                topic_prefix: "fieldrelay/gw1".to_owned(),
                reconnect_initial: Duration::from_secs(1),
                reconnect_max: Duration::from_secs(60),
                tls: None,
                username: None,
                password_file: None,
                session: SessionMode::Persistent,
                response_timeout: Duration::from_secs(10),
                max_inflight: 64,
                max_rate: None,
                broker: Broker::Generic,
                profile: UplinkProfile::Json,
                drain: Default::default(),
                batch: Default::default(),
                protocol: Default::default(),
            }
        );
        assert_eq!(config.store.max_size, 1 << 30);
        assert_eq!(config.store.on_full, crate::config::OnFull::DropOldest);
        assert_eq!(config.store.sync, crate::config::SyncMode::Full);
        assert!(config.store.max_age.is_empty());
        assert_eq!(
            config.buses,
            vec![BusConfig {
                name: "plc1".to_owned(),
                kind: BusKind::Tcp {
                    host: "10.0.0.5".to_owned(),
                    port: 502
                },
                timeout: Duration::from_secs(1),
                turnaround_delay: Duration::ZERO,
            }]
        );
        let device = &config.devices[0];
        assert_eq!(
            (device.unit_id, device.poll_interval),
            (1, Duration::from_secs(1))
        );
        assert_eq!(
            device.points[0],
            PointConfig {
                name: "temperature".to_owned(),
                source: PointSource::Modbus(ModbusSource {
                    table: Table::Holding,
                    address: 10,
                    bit: None,
                    encoding: Encoding::default(),
                }),
                data_type: DataType::F32,
                scale: 1.0,
                offset: 0.0,
                decimals: None,
                qos: Qos::AtLeastOnce,
                retain: false,
                reporting: Reporting {
                    publish: PublishMode::OnChange,
                    deadband: 0.0,
                    max_silence: None,
                },
                unit: None,
                write: None,
            }
        );
    }

    #[test]
    fn explicit_values_win_over_defaults() {
        let text = with(&[
            (
                "  url: mqtt://broker.local\n",
                "  url: MQTT://[::1]:8883/\n  client_id: other\n  keep_alive: 1m\n  topic_prefix: site/a\n  reconnect_initial: 250ms\n  reconnect_max: 2m\n",
            ),
            ("    host: 10.0.0.5\n", "    host: plc.local\n    port: 5020\n    timeout: 1.5s\n"),
            ("    bus: plc1\n", "    bus: plc1\n    unit_id: 0\n    poll_interval: 10ms\n"),
            (
                "        type: f32\n",
                "        type: u16\n        scale: 0.1\n        offset: -40\n        qos: 2\n        retain: true\n        publish: every_poll\n        deadband: 0.5\n",
            ),
        ]);
        let config = load_str(&text, "c.yaml").unwrap();
        let uplink = &config.uplink;
        assert_eq!((uplink.host.as_str(), uplink.port), ("::1", 8883));
        assert_eq!(uplink.client_id, "other");
        assert_eq!(uplink.keep_alive, Duration::from_secs(60));
        assert_eq!(uplink.topic_prefix, "site/a");
        assert_eq!(uplink.reconnect_initial, Duration::from_millis(250));
        assert_eq!(uplink.reconnect_max, Duration::from_secs(120));
        assert_eq!(
            config.buses[0].kind,
            BusKind::Tcp {
                host: "plc.local".to_owned(),
                port: 5020
            }
        );
        assert_eq!(config.buses[0].timeout, Duration::from_millis(1500));
        assert_eq!(config.devices[0].unit_id, 0);
        assert_eq!(config.devices[0].poll_interval, Duration::from_millis(10));
        let point = &config.devices[0].points[0];
        assert_eq!(point.data_type, DataType::U16);
        assert_eq!(
            (point.scale, point.offset, point.reporting.deadband),
            (0.1, -40.0, 0.5)
        );
        assert_eq!(point.qos, Qos::ExactlyOnce);
        assert!(point.retain);
        assert_eq!(point.reporting.publish, PublishMode::EveryPoll);
    }

    #[test]
    fn missing_required_keys_point_at_their_mapping() {
        assert_eq!(
            errors(&with(&[
                ("        address: 10\n", ""),
                ("    host: 10.0.0.5\n", "")
            ])),
            [
                "7:5: buses[0].host: missing required key",
                "13:9: devices[0].points[0].address: missing required key",
            ]
        );
        assert_eq!(
            errors("gateway:\n  id: gw1\n  data_dir:\n"),
            [
                "1:1: uplink: missing required key",
                "1:1: buses: missing required key",
                "1:1: devices: missing required key",
                "3:3: gateway.data_dir: a value is required",
            ]
        );
    }

    #[test]
    fn a_misspelt_required_key_is_reported_once() {
        // Not also "address: missing required key": the suggestion already names it.
        assert_eq!(
            errors(&with(&[("        address: 10\n", "        adress: 10\n")])),
            [
                r#"16:9: devices[0].points[0].adress: unknown key "adress" (did you mean "address"?)"#
            ]
        );
        // A typo of an optional key does not silently fall back to the default either.
        assert_eq!(
            errors(&with(&[(
                "    bus: plc1\n",
                "    bus: plc1\n    pol_interval: 5ms\n"
            )])),
            [
                r#"13:5: devices[0].pol_interval: unknown key "pol_interval" (did you mean "poll_interval"?)"#
            ]
        );
    }

    #[test]
    fn one_bad_value_is_reported_once() {
        // A bad type is not also reported as missing, as a width problem or as an overlap.
        let text = with(&[("        type: f32\n", "        type: [f32]\n")]);
        assert_eq!(
            errors(&text),
            ["17:15: devices[0].points[0].type: invalid type: list, expected a string"]
        );
        // A bus with errors still counts as defined for its devices.
        let text = with(&[(
            "    host: 10.0.0.5\n",
            "    host: 10.0.0.5\n    port: 99999\n",
        )]);
        assert_eq!(
            errors(&text),
            ["10:11: buses[0].port: must be between 1 and 65535, got 99999"]
        );
    }

    /// The modules of this folder, top first: each imports only modules after it (the layers of
    /// the module doc, in one order). Test code is left out: a test may use anything.
    const LAYOUT: &[&str] = &[
        "packaged",
        "mod",
        "files",
        "access",
        "broker_fit",
        "secrets",
        "store",
        "device",
        "point",
        "bus",
        "commands",
        "status",
        "local",
        "console",
        "remote",
        "uplink",
        "sparkplug",
        "drain",
        "batch",
        "protocol",
        "metrics",
        "gateway",
        "client",
        "broker",
        "modicon",
        "register",
        "rules",
        "decode",
        "load",
        "source_map",
        "error",
        "path",
        "units",
        "limits",
    ];

    /// The modules of this folder that `code` names (`super::x`, `crate::config::x`, and in
    /// `mod.rs` a bare `x::`).
    fn named_modules(code: &str, in_mod_rs: bool) -> BTreeSet<&'static str> {
        let mut named = BTreeSet::new();
        for line in code
            .lines()
            .filter(|line| !line.trim_start().starts_with("//"))
        {
            for module in LAYOUT {
                let mut patterns = vec![format!("super::{module}"), format!("config::{module}")];
                if in_mod_rs {
                    patterns.push(format!(" {module}::"));
                    patterns.push(format!("({module}::"));
                }
                let found = patterns.iter().any(|pattern| {
                    line.match_indices(pattern.as_str()).any(|(at, _)| {
                        let after = line[at + pattern.len()..].chars().next();
                        !after.is_some_and(|c| c.is_alphanumeric() || c == '_')
                    })
                });
                if found {
                    named.insert(*module);
                }
            }
        }
        named
    }

    #[test]
    fn imports_go_down_the_layout() {
        let folder = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/config");
        let mut files: Vec<String> = std::fs::read_dir(&folder)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.ends_with(".rs") && name != "testing.rs")
            .collect();
        files.sort();
        let mut wrong = Vec::new();
        for file in &files {
            let module = file.trim_end_matches(".rs");
            let rank = LAYOUT.iter().position(|m| *m == module);
            let Some(rank) = rank else {
                wrong.push(format!("{file} is not in LAYOUT"));
                continue;
            };
            let text = std::fs::read_to_string(folder.join(file)).unwrap();
            let code = text
                .split("#[cfg(test)]\nmod tests")
                .next()
                .unwrap_or_default();
            for named in named_modules(code, module == "mod") {
                let below = LAYOUT.iter().position(|m| *m == named).unwrap();
                if named != module && below <= rank {
                    wrong.push(format!("{file} imports {named}, which is not below it"));
                }
            }
        }
        assert!(wrong.is_empty(), "{wrong:#?}");
        assert_eq!(files.len(), LAYOUT.len(), "{files:?}");
    }
}
