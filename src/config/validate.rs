//! Semantic validation: from the decoded file ([`RawConfig`]) to the [`Config`] the gateway runs
//! on, with every default resolved.
//!
//! Guarantees:
//! - **Everything is checked, nothing stops early.** Each check pushes an [`Issue`] and goes on;
//!   a value that failed contributes `None` and the checks that depend on it are skipped, so one
//!   mistake is reported once and not again as a cascade (a bad `type` does not also produce an
//!   "overlap" or "width" error).
//! - **Pure.** No I/O, no clock, no positions: issues name a [`KeyPath`], and the loader looks
//!   positions up afterwards. That makes every rule testable from a YAML string.
//! - **A `Config` only when it is fully valid.** [`validate`] returns `Some` only if every part
//!   could be built; the loader in addition refuses the result if any issue was reported.
//!
//! The rules are those of the v1 contract (see `docs/configuration.md`). A few are stricter than
//! the protocol requires, on purpose:
//! - a bus `type` has no default, so a file written today keeps its meaning when serial buses
//!   arrive;
//! - `keep_alive` must be whole seconds, because MQTT transmits it in seconds and rounding would
//!   silently change what was asked for;
//! - overlapping registers in one device and table are refused: two points reading the same
//!   register with different types is almost always an address typo.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use super::client::{self, MAX_CLIENT_ID_LEN};
use super::error::Issue;
use super::path::KeyPath;
use super::raw::{
    decode_mapping, Decoded, Keys, List, PortValue, RawBus, RawConfig, RawDeviceEntry, RawGateway,
    RawPoint, RawTls, RawUplink,
};
use super::rules::{
    check_unique, choice, collect_all, file_path, identifier, in_range, is_host, optional,
    port_number, positive, refuse_keys, require, required_choice, when_written, Choice,
};
use super::units::format_duration;
use super::{
    BusConfig, BusKind, ByteOrder, Coalesce, Config, DataType, DeviceConfig, Encoding,
    GatewayConfig, LinePattern, LineSettings, ModbusSource, Parity, Planning, PointConfig,
    PointSource, PublishMode, Qos, Reporting, SerialSettings, SessionMode, StopBits, Table,
    TlsConfig, UplinkConfig, WordOrder,
};
use crate::modbus::plan::MAX_REGISTERS_PER_READ;

/// Debian's (and Raspberry Pi OS's) bundle of the system's trusted CAs, from `ca-certificates`.
pub const DEFAULT_CA_FILE: &str = "/etc/ssl/certs/ca-certificates.crt";
/// A broker answers in milliseconds; 10 s rides over a slow cellular link and a broker busy
/// persisting, yet finds a dead link far sooner than 1.5 × keep_alive.
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);
/// Keeps a WAN link with a few hundred ms of latency busy; small enough that a reconnect
/// resends little.
pub const DEFAULT_MAX_INFLIGHT: u16 = 64;
/// Packet ids are 16 bits and status messages need a few of their own.
pub const MAX_INFLIGHT: u16 = 65_000;
pub const DEFAULT_RECONNECT_INITIAL: Duration = Duration::from_secs(1);
/// A minute caps the gap after a broker outage while still sparing a broker that is restarting
/// from a thundering herd of gateways.
pub const DEFAULT_RECONNECT_MAX: Duration = Duration::from_secs(60);
/// First topic level of the default prefix `fieldrelay/<gateway.id>`.
pub const DEFAULT_TOPIC_ROOT: &str = "fieldrelay";
/// The port Modbus TCP is registered on.
pub const DEFAULT_MODBUS_PORT: u16 = 502;
/// Typical PLCs answer within tens of milliseconds; a second tolerates a busy one or a gateway in
/// front of serial devices without stalling the poll loop for long.
pub const DEFAULT_BUS_TIMEOUT: Duration = Duration::from_secs(1);
pub const DEFAULT_UNIT_ID: u8 = 1;
/// The Modbus serial line spec's default rate (with even parity).
pub const DEFAULT_BAUD_RATE: u32 = 19_200;
/// What most ASCII instruments ship with (8N1).
pub const DEFAULT_LINE_BAUD_RATE: u32 = 9_600;
/// Above this a "turnaround" is a misconfigured timeout, not line silence.
pub const MAX_TURNAROUND_DELAY: Duration = Duration::from_secs(1);
/// Unused registers a read may span to join two points: 8 registers cost 16 bytes on the wire,
/// about 1.4 ms at 115200 baud, less than one extra request/response round trip.
pub const DEFAULT_MAX_GAP: u16 = 8;
/// Longest wait between attempts on a failing device: long enough not to load a shared line
/// with a dead device's timeouts, short enough that a repaired device is back within a minute.
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(60);
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(1);
/// Faster polling than this floods a bus (and the queue) without giving fresher data: a Modbus
/// TCP round trip alone is several milliseconds.
pub const MIN_POLL_INTERVAL: Duration = Duration::from_millis(10);

/// Most decimals a point's `decimals:` key may ask for: more than an f64 promises for a value
/// near 1.
pub const MAX_DECIMALS: u8 = 15;

/// Builds the configuration; pushes every problem found to `issues`. Returns `Some` only if every
/// part could be built.
pub(crate) fn validate(raw: &RawConfig, issues: &mut Vec<Issue>) -> Option<Config> {
    let gateway = require(&raw.root, "gateway", &raw.gateway, issues)
        .and_then(|gateway| validate_gateway(gateway, issues));
    // The uplink's defaults derive from the gateway id; without a valid id they cannot be
    // resolved, and the id's own error has been reported already.
    let gateway_id = gateway.as_ref().map(|gateway| gateway.id.as_str());
    let uplink = require(&raw.root, "uplink", &raw.uplink, issues)
        .and_then(|uplink| validate_uplink(uplink, gateway_id, issues));

    let buses = require(&raw.root, "buses", &raw.buses, issues).and_then(|list| {
        if list.len == 0 {
            issues.push(Issue::value(
                list.path.clone(),
                "at least one bus is required",
            ));
        }
        let buses: Vec<_> = list
            .items
            .iter()
            .map(|bus| validate_bus(bus, issues))
            .collect();
        check_unique(
            "bus",
            list.items.iter().map(|bus| (&bus.value.name, &bus.keys)),
            issues,
        );
        collect_all(buses, list.len)
    });

    // Every bus name written counts as defined, even if that bus has errors of its own: its
    // devices should not also get "unknown bus". Its type, when valid, decides which device and
    // point keys apply.
    let mut bus_names: Vec<(&str, Option<BusTag>)> = Vec::new();
    for bus in raw.buses.iter().flat_map(|list| &list.items) {
        if let Some(name) = bus.value.name.as_deref() {
            if !bus_names.iter().any(|(known, _)| *known == name) {
                let tag = bus.value.kind.as_deref().and_then(BusTag::parse);
                bus_names.push((name, tag));
            }
        }
    }

    let devices = require(&raw.root, "devices", &raw.devices, issues).and_then(|list| {
        if list.len == 0 {
            issues.push(Issue::value(
                list.path.clone(),
                "at least one device is required",
            ));
        }
        let devices: Vec<_> = list
            .items
            .iter()
            .map(|device| validate_device(device, &bus_names, issues))
            .collect();
        check_unique(
            "device",
            list.items
                .iter()
                .map(|entry| (&entry.device.value.name, &entry.device.keys)),
            issues,
        );
        check_bus_sharing(list, &bus_names, issues);
        collect_all(devices, list.len)
    });

    let store = super::store::validate_store(raw.store.as_ref(), raw, issues);
    let metrics = super::metrics::validate_metrics(raw.metrics.as_ref(), issues);
    let status = super::status::validate_status(raw.uplink.as_ref(), issues);
    let commands = super::commands::validate_commands(raw.commands.as_ref(), &raw.root, issues);
    let local = super::local::validate_local(raw.local.as_ref(), uplink.as_ref(), issues);

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
    })
}

fn validate_gateway(
    gateway: &Decoded<RawGateway>,
    issues: &mut Vec<Issue>,
) -> Option<GatewayConfig> {
    let (raw, keys) = (&gateway.value, &gateway.keys);
    let id = identifier(keys, "id", &raw.id, Some(MAX_CLIENT_ID_LEN), issues);
    let data_dir = require(keys, "data_dir", &raw.data_dir, issues).and_then(|dir| {
        if dir.is_empty() {
            issues.push(Issue::value(keys.path_of("data_dir"), "must not be empty"));
            None
        } else if dir.contains('\0') {
            issues.push(Issue::value(
                keys.path_of("data_dir"),
                "must not contain a nul character",
            ));
            None
        } else {
            Some(PathBuf::from(dir))
        }
    });
    Some(GatewayConfig {
        id: id?,
        data_dir: data_dir?,
    })
}

fn validate_uplink(
    uplink: &Decoded<RawUplink>,
    gateway_id: Option<&str>,
    issues: &mut Vec<Issue>,
) -> Option<UplinkConfig> {
    let (raw, keys) = (&uplink.value, &uplink.keys);
    let endpoint = client::url(keys, &raw.url, issues);
    let default_id = gateway_id.map(str::to_owned);
    let client_id = client::client_id(keys, &raw.client_id, default_id, issues);
    let keep_alive = client::keep_alive(keys, raw.keep_alive, issues);
    let default_prefix = gateway_id.map(|id| format!("{DEFAULT_TOPIC_ROOT}/{id}"));
    let topic_prefix = client::topic_prefix(keys, &raw.topic_prefix, default_prefix, issues);

    let reconnect_initial = optional(
        keys,
        "reconnect_initial",
        raw.reconnect_initial.map(|d| d.0),
        DEFAULT_RECONNECT_INITIAL,
    )
    .and_then(|initial| positive(keys, "reconnect_initial", initial, issues));
    let reconnect_max = optional(
        keys,
        "reconnect_max",
        raw.reconnect_max.map(|d| d.0),
        DEFAULT_RECONNECT_MAX,
    )
    .and_then(|max| positive(keys, "reconnect_max", max, issues));
    let (reconnect_initial, reconnect_max) = match (reconnect_initial, reconnect_max) {
        (Some(initial), Some(max)) if max < initial => {
            // Point at the one the user wrote; if both, at the maximum.
            let default_note = |written: bool| if written { "" } else { ", the default" };
            if raw.reconnect_max.is_some() {
                issues.push(Issue::value(
                    keys.path_of("reconnect_max"),
                    format!(
                        "must be at least reconnect_initial ({}{}), got {}",
                        format_duration(initial),
                        default_note(raw.reconnect_initial.is_some()),
                        format_duration(max)
                    ),
                ));
            } else {
                issues.push(Issue::value(
                    keys.path_of("reconnect_initial"),
                    format!(
                        "must not exceed reconnect_max ({}, the default), got {}",
                        format_duration(max),
                        format_duration(initial)
                    ),
                ));
            }
            (None, None)
        }
        pair => pair,
    };

    let tls_wanted = endpoint.as_ref().map(|(_, _, tls)| *tls);
    let tls = validate_tls(raw.tls.as_ref(), keys, tls_wanted, issues);
    let username = client::username(keys, &raw.username, issues);
    let password_file = client::password_file(keys, &raw.password_file, &raw.username, issues);
    let session = choice(
        keys,
        "session",
        &raw.session,
        SessionMode::Persistent,
        issues,
    );
    let response_timeout = optional(
        keys,
        "response_timeout",
        raw.response_timeout.map(|d| d.0),
        DEFAULT_RESPONSE_TIMEOUT,
    )
    .and_then(|timeout| positive(keys, "response_timeout", timeout, issues));
    let max_inflight = optional(
        keys,
        "max_inflight",
        raw.max_inflight,
        i64::from(DEFAULT_MAX_INFLIGHT),
    )
    .and_then(|n| in_range(keys, "max_inflight", n, 1, i64::from(MAX_INFLIGHT), issues))
    .and_then(|n| u16::try_from(n).ok());
    let max_rate = when_written(keys, "max_rate", &raw.max_rate, |rate| {
        in_range(keys, "max_rate", *rate, 1, 1_000_000, issues).and_then(|r| u32::try_from(r).ok())
    });

    let (host, port, _) = endpoint?;
    Some(UplinkConfig {
        host,
        port,
        client_id: client_id?,
        keep_alive: keep_alive?,
        topic_prefix: topic_prefix?,
        reconnect_initial: reconnect_initial?,
        reconnect_max: reconnect_max?,
        tls: tls?,
        username: username?,
        password_file: password_file?,
        session: session?,
        response_timeout: response_timeout?,
        max_inflight: max_inflight?,
        max_rate: max_rate?,
    })
}

/// Bus types as written in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BusTag {
    Tcp,
    RtuOverTcp,
    Rtu,
    SerialLine,
}

impl Choice for BusTag {
    const WHAT: &'static str = "bus type";
    const WORDS: &'static [(&'static str, Self)] = &[
        ("tcp", BusTag::Tcp),
        ("rtu_over_tcp", BusTag::RtuOverTcp),
        ("rtu", BusTag::Rtu),
        ("serial_line", BusTag::SerialLine),
    ];
}

impl BusTag {
    /// `a tcp bus`, `an rtu bus` (said "an R-T-U").
    fn described(self) -> String {
        let article = if self.is_rtu() { "an" } else { "a" };
        format!("{article} {} bus", self.word())
    }

    fn is_network(self) -> bool {
        matches!(self, BusTag::Tcp | BusTag::RtuOverTcp)
    }

    fn is_serial(self) -> bool {
        matches!(self, BusTag::Rtu | BusTag::SerialLine)
    }

    /// Frames carry a unit id on a shared line: two devices may not share one, and unit 0 is
    /// broadcast (nobody answers it).
    fn is_rtu(self) -> bool {
        matches!(self, BusTag::Rtu | BusTag::RtuOverTcp)
    }
}

/// `uplink.tls`, checked against the url's scheme: TLS settings without `mqtts://` would be
/// silently unused, so they are refused. `Some(None)`: no TLS, valid.
fn validate_tls(
    value: Option<&serde_json::Value>,
    keys: &Keys,
    tls_wanted: Option<bool>,
    issues: &mut Vec<Issue>,
) -> Option<Option<TlsConfig>> {
    let path = keys.path_of("tls");
    let decoded = match value {
        Some(value) => Some(decode_mapping::<RawTls>(
            value,
            &path,
            "the tls settings",
            issues,
        )?),
        None if keys.rejected.contains("tls") => return None,
        None => None,
    };
    match tls_wanted {
        // The url is invalid and already reported; check the section on its own.
        None => None,
        Some(false) => {
            if decoded.is_some() {
                issues.push(Issue::key(
                    path,
                    "tls settings need an mqtts:// url (the url is mqtt://)",
                ));
                return None;
            }
            Some(None)
        }
        Some(true) => {
            let Some(tls) = decoded else {
                return Some(Some(TlsConfig {
                    ca_file: PathBuf::from(DEFAULT_CA_FILE),
                    client_auth: None,
                }));
            };
            let (raw, tls_keys) = (&tls.value, &tls.keys);
            let ca_file = file_path(tls_keys, "ca_file", &raw.ca_file, issues);
            let cert_file = file_path(tls_keys, "cert_file", &raw.cert_file, issues);
            let key_file = file_path(tls_keys, "key_file", &raw.key_file, issues);
            let client_auth = match (cert_file?, key_file?) {
                (Some(cert), Some(key)) => Some((cert, key)),
                (None, None) => None,
                (Some(_), None) => {
                    issues.push(Issue::missing(
                        tls_keys.path_of("key_file"),
                        "cert_file needs its key_file",
                    ));
                    return None;
                }
                (None, Some(_)) => {
                    issues.push(Issue::missing(
                        tls_keys.path_of("cert_file"),
                        "key_file needs its cert_file",
                    ));
                    return None;
                }
            };
            Some(Some(TlsConfig {
                ca_file: ca_file?.unwrap_or_else(|| PathBuf::from(DEFAULT_CA_FILE)),
                client_auth,
            }))
        }
    }
}

fn validate_bus(bus: &Decoded<RawBus>, issues: &mut Vec<Issue>) -> Option<BusConfig> {
    let (raw, keys) = (&bus.value, &bus.keys);
    let name = identifier(keys, "name", &raw.name, None, issues);
    let tag = required_choice::<BusTag>(keys, "type", &raw.kind, issues);
    if let Some(tag) = tag {
        let owner = tag.described();
        if tag.is_network() {
            let serial_keys = ["baud_rate", "parity", "data_bits", "stop_bits"];
            refuse_keys(keys, &serial_keys, &owner, issues);
        } else {
            refuse_keys(keys, &["host"], &owner, issues);
        }
        if tag != BusTag::SerialLine {
            refuse_keys(keys, &["terminator", "poll"], &owner, issues);
        }
    }
    // A serial bus has no host; for network buses, or when the type is unclear, a missing host
    // is worth reporting now rather than after the type is fixed.
    let host = if tag.is_some_and(BusTag::is_serial) {
        None
    } else {
        require(keys, "host", &raw.host, issues).and_then(|host| {
            if is_host(host) {
                Some(host.clone())
            } else {
                issues.push(Issue::value(
                    keys.path_of("host"),
                    format!("invalid host {host:?}: expected a host name or an ip address"),
                ));
                None
            }
        })
    };
    let (network, serial) = match tag {
        Some(tag) if tag.is_serial() => {
            let port = serial_port(keys, raw, issues);
            (None, serial_settings(keys, raw, tag, port, issues))
        }
        _ => (host.zip(network_port(keys, raw, issues)), None),
    };
    let timeout = optional(
        keys,
        "timeout",
        raw.timeout.map(|d| d.0),
        DEFAULT_BUS_TIMEOUT,
    )
    .and_then(|timeout| positive(keys, "timeout", timeout, issues));
    // RTU needs at least 3.5 character times of silence between frames (1.75 ms above 19200
    // baud, Modbus over serial line spec 2.5.1.1); network buses need none.
    let default_turnaround = match (&serial, tag) {
        (Some(serial), Some(BusTag::Rtu)) => serial
            .char_time()
            .mul_f64(3.5)
            .max(Duration::from_micros(1750)),
        _ => Duration::ZERO,
    };
    let turnaround_delay = optional(
        keys,
        "turnaround_delay",
        raw.turnaround_delay.map(|d| d.0),
        default_turnaround,
    )
    .and_then(|delay| {
        if delay > MAX_TURNAROUND_DELAY {
            issues.push(Issue::value(
                keys.path_of("turnaround_delay"),
                format!(
                    "must be at most {}, got {}",
                    format_duration(MAX_TURNAROUND_DELAY),
                    format_duration(delay)
                ),
            ));
            None
        } else {
            Some(delay)
        }
    });
    let line = if tag == Some(BusTag::SerialLine) {
        line_settings(keys, raw, issues)
    } else {
        None
    };
    let kind = match tag? {
        BusTag::Tcp => network.map(|(host, port)| BusKind::Tcp { host, port }),
        BusTag::RtuOverTcp => network.map(|(host, port)| BusKind::RtuOverTcp { host, port }),
        BusTag::Rtu => serial.map(|serial| BusKind::Rtu { serial }),
        BusTag::SerialLine => serial
            .zip(line)
            .map(|(serial, line)| BusKind::SerialLine { serial, line }),
    };
    Some(BusConfig {
        name: name?,
        kind: kind?,
        timeout: timeout?,
        turnaround_delay: turnaround_delay?,
    })
}

/// `port` of a network bus: a number, 502 by default.
fn network_port(keys: &Keys, raw: &RawBus, issues: &mut Vec<Issue>) -> Option<u16> {
    match &raw.port {
        None if keys.rejected.contains("port") => None,
        None => Some(DEFAULT_MODBUS_PORT),
        Some(PortValue::Number(port)) => port_number(keys, "port", *port, issues),
        Some(PortValue::Path(path)) => {
            issues.push(Issue::value(
                keys.path_of("port"),
                format!("expected a tcp port number (1 to 65535), got the text {path:?}"),
            ));
            None
        }
    }
}

/// `port` of a serial bus: a device path, required.
pub(crate) fn serial_port(keys: &Keys, raw: &RawBus, issues: &mut Vec<Issue>) -> Option<String> {
    let message = match require(keys, "port", &raw.port, issues)? {
        PortValue::Path(path) if !path.is_empty() && !path.contains('\0') => {
            return Some(path.clone())
        }
        PortValue::Path(_) => "expected a serial device path such as /dev/ttyUSB0".to_owned(),
        PortValue::Number(n) => {
            format!("expected a serial device path such as /dev/ttyUSB0, got the number {n}")
        }
    };
    issues.push(Issue::value(keys.path_of("port"), message));
    None
}

/// Port settings of an `rtu` or `serial_line` bus. Defaults: rtu 19200 8E1 (the Modbus serial
/// line spec's default), serial_line 9600 8N1 (what ASCII instruments ship with).
pub(crate) fn serial_settings(
    keys: &Keys,
    raw: &RawBus,
    tag: BusTag,
    port: Option<String>,
    issues: &mut Vec<Issue>,
) -> Option<SerialSettings> {
    let rtu = tag == BusTag::Rtu;
    let baud_rate = optional(
        keys,
        "baud_rate",
        raw.baud_rate,
        i64::from(if rtu {
            DEFAULT_BAUD_RATE
        } else {
            DEFAULT_LINE_BAUD_RATE
        }),
    )
    .and_then(|baud| in_range(keys, "baud_rate", baud, 50, 4_000_000, issues))
    .and_then(|baud| u32::try_from(baud).ok());
    let default_parity = if rtu { Parity::Even } else { Parity::None };
    let parity = choice(keys, "parity", &raw.parity, default_parity, issues);
    let data_bits = optional(keys, "data_bits", raw.data_bits, 8)
        .and_then(|bits| in_range(keys, "data_bits", bits, 5, 8, issues))
        .and_then(|bits| {
            if rtu && bits != 8 {
                issues.push(Issue::value(
                    keys.path_of("data_bits"),
                    format!("modbus rtu frames use 8 data bits, got {bits}"),
                ));
                None
            } else {
                u8::try_from(bits).ok()
            }
        });
    let stop_bits = optional(keys, "stop_bits", raw.stop_bits, 1).and_then(|bits| match bits {
        1 => Some(StopBits::One),
        2 => Some(StopBits::Two),
        other => {
            issues.push(Issue::value(
                keys.path_of("stop_bits"),
                format!("must be 1 or 2, got {other}"),
            ));
            None
        }
    });
    Some(SerialSettings {
        port: port?,
        baud_rate: baud_rate?,
        parity: parity?,
        data_bits: data_bits?,
        stop_bits: stop_bits?,
    })
}

/// `terminator` and `poll` of a serial_line bus.
fn line_settings(keys: &Keys, raw: &RawBus, issues: &mut Vec<Issue>) -> Option<LineSettings> {
    let terminator = optional(keys, "terminator", raw.terminator.clone(), "\n".to_owned())
        .and_then(|terminator| {
            if terminator.is_empty() || terminator.len() > 8 {
                issues.push(Issue::value(
                    keys.path_of("terminator"),
                    format!(
                        "must be 1 to 8 bytes (e.g. \"\\r\\n\" in double quotes), got {}",
                        terminator.len()
                    ),
                ));
                None
            } else {
                Some(terminator.into_bytes())
            }
        });
    let poll = when_written(keys, "poll", &raw.poll, |poll| {
        if poll.is_empty() {
            issues.push(Issue::value(
                keys.path_of("poll"),
                "must not be empty (leave the key out for instruments that send on their own)",
            ));
            return None;
        }
        Some(poll.clone().into_bytes())
    });
    Some(LineSettings {
        terminator: terminator?,
        poll: poll?,
    })
}

fn validate_device(
    entry: &RawDeviceEntry,
    buses: &[(&str, Option<BusTag>)],
    issues: &mut Vec<Issue>,
) -> Option<DeviceConfig> {
    let (raw, keys) = (&entry.device.value, &entry.device.keys);
    let name = identifier(keys, "name", &raw.name, None, issues);
    let bus = require(keys, "bus", &raw.bus, issues).and_then(|bus| {
        if let Some((_, tag)) = buses.iter().find(|(name, _)| *name == bus.as_str()) {
            return Some((bus.clone(), *tag));
        }
        let defined = if buses.is_empty() {
            "no buses are defined".to_owned()
        } else {
            let names: Vec<&str> = buses.iter().map(|(name, _)| *name).collect();
            format!("defined buses: {}", names.join(", "))
        };
        issues.push(Issue::value(
            keys.path_of("bus"),
            format!("unknown bus {bus:?} ({defined})"),
        ));
        None
    });
    // The kind of the device's bus, when known: it decides which keys apply.
    let tag = bus.as_ref().and_then(|(_, tag)| *tag);
    if tag == Some(BusTag::SerialLine) {
        refuse_keys(
            keys,
            &[
                "unit_id",
                "byte_order",
                "word_order",
                "max_gap",
                "max_registers_per_read",
                "coalesce",
            ],
            "a device on a serial_line bus",
            issues,
        );
    }
    let unit_id = optional(keys, "unit_id", raw.unit_id, i64::from(DEFAULT_UNIT_ID))
        .and_then(|unit_id| in_range(keys, "unit_id", unit_id, 0, 255, issues))
        .and_then(|unit_id| {
            if unit_id == 0 && tag.is_some_and(BusTag::is_rtu) {
                issues.push(Issue::value(
                    keys.path_of("unit_id"),
                    "unit id 0 is the rtu broadcast address, which no device answers: use 1 to 247",
                ));
                None
            } else {
                u8::try_from(unit_id).ok()
            }
        });
    let poll_interval = optional(
        keys,
        "poll_interval",
        raw.poll_interval.map(|d| d.0),
        DEFAULT_POLL_INTERVAL,
    )
    .and_then(|interval| {
        if interval >= MIN_POLL_INTERVAL {
            Some(interval)
        } else {
            issues.push(Issue::value(
                keys.path_of("poll_interval"),
                format!(
                    "must be at least {}, got {}",
                    format_duration(MIN_POLL_INTERVAL),
                    format_duration(interval)
                ),
            ));
            None
        }
    });
    let byte_order = choice(keys, "byte_order", &raw.byte_order, ByteOrder::Big, issues);
    let word_order = choice(keys, "word_order", &raw.word_order, WordOrder::Big, issues);
    let max_gap = optional(keys, "max_gap", raw.max_gap, i64::from(DEFAULT_MAX_GAP))
        .and_then(|gap| in_range(keys, "max_gap", gap, 0, 125, issues))
        .and_then(|gap| u16::try_from(gap).ok());
    let max_registers_per_read = optional(
        keys,
        "max_registers_per_read",
        raw.max_registers_per_read,
        i64::from(MAX_REGISTERS_PER_READ),
    )
    .and_then(|max| {
        in_range(
            keys,
            "max_registers_per_read",
            max,
            1,
            i64::from(MAX_REGISTERS_PER_READ),
            issues,
        )
    })
    .and_then(|max| u16::try_from(max).ok());
    let coalesce = optional(keys, "coalesce", raw.coalesce, true).map(|merge| {
        if merge {
            Coalesce::Merge
        } else {
            Coalesce::OnePerPoint
        }
    });
    let backoff_max = optional(
        keys,
        "backoff_max",
        raw.backoff_max.map(|d| d.0),
        DEFAULT_BACKOFF_MAX,
    )
    .and_then(|max| positive(keys, "backoff_max", max, issues));
    let offline_after = super::commands::offline_after(keys, raw.offline_after, issues);

    let defaults = PointDefaults {
        tag,
        encoding: byte_order
            .zip(word_order)
            .map(|(byte_order, word_order)| Encoding {
                byte_order,
                word_order,
            }),
        max_registers_per_read,
    };
    let points = require(keys, "points", &entry.points, issues).and_then(|list| {
        if list.len == 0 {
            issues.push(Issue::value(
                list.path.clone(),
                "a device needs at least one point",
            ));
        }
        let checked: Vec<_> = list
            .items
            .iter()
            .map(|point| validate_point(point, &defaults, issues))
            .collect();
        check_unique(
            "point",
            list.items
                .iter()
                .map(|point| (&point.value.name, &point.keys)),
            issues,
        );
        check_overlaps(&list.items, &checked, issues);
        collect_all(
            checked.into_iter().map(|(point, _)| point).collect(),
            list.len,
        )
    });

    Some(DeviceConfig {
        name: name?,
        bus: bus?.0,
        unit_id: unit_id?,
        poll_interval: poll_interval?,
        points: points?,
        planning: Planning {
            max_gap: max_gap?,
            max_registers_per_read: max_registers_per_read?,
            coalesce: coalesce?,
        },
        backoff_max: backoff_max?,
        offline_after: offline_after?,
    })
}

/// What a point inherits from its device.
pub(crate) struct PointDefaults {
    /// The device's bus type, when known.
    pub(crate) tag: Option<BusTag>,
    /// `None` when the device's own setting was refused: points then skip their checks of it.
    pub(crate) encoding: Option<Encoding>,
    pub(crate) max_registers_per_read: Option<u16>,
}

/// The registers (or bits) a point occupies, when its table, address and type are valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Footprint {
    table: Table,
    first: u16,
    last: u16,
    /// Points reading different single bits of one register do not overlap.
    bit: Option<u8>,
}

impl Footprint {
    pub(crate) fn overlaps(&self, other: &Footprint) -> bool {
        let bits_apart = matches!((self.bit, other.bit), (Some(a), Some(b)) if a != b);
        self.table == other.table
            && self.first <= other.last
            && other.first <= self.last
            && !bits_apart
    }

    /// `holding 10-11`, `coil 3`, `holding 7 bit 3`.
    pub(crate) fn describe(&self) -> String {
        let table = table_name(self.table);
        let mut text = if self.first == self.last {
            format!("{table} {}", self.first)
        } else {
            format!("{table} {}-{}", self.first, self.last)
        };
        if let Some(bit) = self.bit {
            text.push_str(&format!(" bit {bit}"));
        }
        text
    }
}

/// A footprint that overlaps an earlier one of the same list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Overlap {
    /// Index of the overlapping footprint.
    later: usize,
    /// Index of the first earlier footprint it overlaps.
    earlier: usize,
    footprint: Footprint,
    other: Footprint,
}

/// For each footprint, the first earlier one it overlaps (in list order; `None`s, the entries
/// whose table, address or type were refused, overlap nothing). Reporting against the first only
/// keeps one mistake to one message, however many points it collides with.
fn first_overlaps(footprints: &[Option<Footprint>]) -> Vec<Overlap> {
    footprints
        .iter()
        .enumerate()
        .filter_map(|(later, footprint)| {
            let footprint = (*footprint)?;
            footprints[..later]
                .iter()
                .enumerate()
                .find_map(|(earlier, other)| {
                    other
                        .filter(|other| other.overlaps(&footprint))
                        .map(|other| Overlap {
                            later,
                            earlier,
                            footprint,
                            other,
                        })
                })
        })
        .collect()
}

/// Reports each of `items` whose footprint overlaps an earlier one's ([`first_overlaps`]) at its
/// `address`, with a note at the earlier item that shows its footprint. `message(later,
/// earlier, footprint)` words the problem in the caller's terms (points of a device, registers
/// of a simulated unit).
pub(crate) fn report_overlaps<T>(
    items: &[Decoded<T>],
    footprints: impl IntoIterator<Item = Option<Footprint>>,
    message: impl Fn(usize, usize, &Footprint) -> String,
    issues: &mut Vec<Issue>,
) {
    let footprints: Vec<_> = footprints.into_iter().collect();
    for overlap in first_overlaps(&footprints) {
        let (Some(later), Some(earlier)) = (items.get(overlap.later), items.get(overlap.earlier))
        else {
            continue;
        };
        issues.push(
            Issue::value(
                later.keys.path_of("address"),
                message(overlap.later, overlap.earlier, &overlap.footprint),
            )
            .with_note(
                earlier.keys.path.clone(),
                format!("{}, defined", overlap.other.describe()),
            ),
        );
    }
}

/// Keys of a point that only a Modbus point has, and only a serial_line point has.
const MODBUS_POINT_KEYS: [&str; 6] = [
    "table",
    "address",
    "bit",
    "length",
    "byte_order",
    "word_order",
];

fn validate_point(
    point: &Decoded<RawPoint>,
    defaults: &PointDefaults,
    issues: &mut Vec<Issue>,
) -> (Option<PointConfig>, Option<Footprint>) {
    let (raw, keys) = (&point.value, &point.keys);
    let name = identifier(keys, "name", &raw.name, None, issues);
    // A point is a line point when its bus is a serial_line bus; when the bus is unknown, when
    // it has a regex.
    let is_line = match defaults.tag {
        Some(tag) => tag == BusTag::SerialLine,
        None => keys.present.contains("regex"),
    };
    let data_type = require_data_type(keys, &raw.data_type, issues);
    let (source, data_type, footprint) = if is_line {
        refuse_keys(
            keys,
            &MODBUS_POINT_KEYS,
            "a point on a serial_line bus",
            issues,
        );
        let data_type = data_type.map(|t| match t {
            DataType::String { .. } => DataType::String { length: 0 },
            other => other,
        });
        let data_type = data_type.and_then(|t| {
            if t == DataType::Bool {
                issues.push(Issue::value(
                    keys.path_of("type"),
                    "a serial_line point is a number or a string: bool is not supported",
                ));
                None
            } else {
                Some(t)
            }
        });
        let pattern = require(keys, "regex", &raw.regex, issues).and_then(|text| {
            match regex::Regex::new(text) {
                Ok(regex) if regex.captures_len() >= 2 => Some(LinePattern(regex)),
                Ok(_) => {
                    issues.push(Issue::value(
                        keys.path_of("regex"),
                        "needs a capture group around the value, e.g. \"T=([-0-9.]+)\"",
                    ));
                    None
                }
                Err(error) => {
                    let detail = error.to_string();
                    let last = detail.lines().last().unwrap_or("invalid").trim();
                    let last = last.strip_prefix("error: ").unwrap_or(last);
                    issues.push(Issue::value(
                        keys.path_of("regex"),
                        format!("invalid regex: {last}"),
                    ));
                    None
                }
            }
        });
        (pattern.map(PointSource::Line), data_type, None)
    } else {
        if keys.present.contains("regex") {
            let bus = defaults
                .tag
                .map_or_else(|| "a modbus bus".to_owned(), BusTag::described);
            issues.push(Issue::key(
                keys.path_of("regex"),
                format!("`regex` applies to points of a serial_line bus, not {bus}"),
            ));
        }
        let (source, data_type, footprint) = modbus_source(keys, raw, data_type, defaults, issues);
        super::modicon::check_address(keys, raw.table.as_deref(), raw.address, issues);
        (source.map(PointSource::Modbus), data_type, footprint)
    };

    // From the text, so a string whose length is missing still refuses scale and offset.
    let is_string = raw.data_type.as_deref() == Some("string");
    if is_string {
        refuse_keys(
            keys,
            &["scale", "offset", "decimals", "deadband"],
            "a string point",
            issues,
        );
    }
    let (scale, offset) = scale_and_offset(
        keys,
        raw.scale,
        raw.offset,
        "must not be 0 (every reading would become the offset)",
        issues,
    );
    let decimals = match raw.decimals {
        None => Some(None),
        Some(places) if (0..=i64::from(MAX_DECIMALS)).contains(&places) => {
            Some(u8::try_from(places).ok())
        }
        Some(places) => {
            issues.push(Issue::value(
                keys.path_of("decimals"),
                format!("must be 0 to {MAX_DECIMALS}, got {places}"),
            ));
            None
        }
    };
    let qos = optional(keys, "qos", raw.qos, 1).and_then(|qos| match qos {
        0 => Some(Qos::AtMostOnce),
        1 => Some(Qos::AtLeastOnce),
        2 => Some(Qos::ExactlyOnce),
        other => {
            issues.push(Issue::value(
                keys.path_of("qos"),
                format!("must be 0, 1 or 2, got {other}"),
            ));
            None
        }
    });
    let retain = optional(keys, "retain", raw.retain, false);
    let publish = choice(keys, "publish", &raw.publish, PublishMode::OnChange, issues);
    let deadband = optional(keys, "deadband", raw.deadband, 0.0).and_then(|deadband| {
        if !deadband.is_finite() {
            issues.push(Issue::value(
                keys.path_of("deadband"),
                "must be a finite number",
            ));
            None
        } else if deadband < 0.0 {
            issues.push(Issue::value(
                keys.path_of("deadband"),
                format!("must not be negative, got {deadband}"),
            ));
            None
        } else {
            Some(deadband)
        }
    });
    let max_silence = match raw.max_silence.map(|d| d.0) {
        None => Some(None),
        Some(silence) => positive(keys, "max_silence", silence, issues).and_then(|silence| {
            if publish == Some(PublishMode::EveryPoll) {
                issues.push(Issue::value(
                    keys.path_of("max_silence"),
                    "applies to publish: on_change (every_poll publishes every reading anyway)",
                ));
                None
            } else {
                Some(Some(silence))
            }
        }),
    };

    let unit = match &raw.unit {
        None => Some(None),
        Some(unit) => engineering_unit(keys, unit, issues).map(Some),
    };
    let modbus = match &source {
        Some(PointSource::Modbus(source)) => Some(source),
        _ => None,
    };
    let write = super::commands::validate_write(
        keys,
        raw,
        &super::commands::WriteTarget {
            is_line,
            source: modbus,
            data_type,
            scale: if is_string { Some(1.0) } else { scale },
            offset: if is_string { Some(0.0) } else { offset },
        },
        issues,
    );

    let build = || {
        Some(PointConfig {
            name: name?,
            source: source?,
            data_type: data_type?,
            scale: if is_string { 1.0 } else { scale? },
            offset: if is_string { 0.0 } else { offset? },
            decimals: decimals?,
            qos: qos?,
            retain: retain?,
            reporting: Reporting {
                publish: publish?,
                deadband: if is_string { 0.0 } else { deadband? },
                max_silence: max_silence?,
            },
            unit: unit?,
            write: write?,
        })
    };
    (build(), footprint)
}

/// Longest engineering unit accepted: room for `m³/h`, `kWh`, `°C`, `ppm`, `mg/Nm³`, ...
pub const MAX_UNIT_LEN: usize = 32;

/// A point's engineering unit: display text (`probe`), 1 to [`MAX_UNIT_LEN`] characters,
/// no control characters.
fn engineering_unit(keys: &Keys, unit: &str, issues: &mut Vec<Issue>) -> Option<String> {
    let problem = if unit.trim().is_empty() {
        Some("must not be empty".to_owned())
    } else if unit.chars().count() > MAX_UNIT_LEN {
        Some(format!(
            "must be at most {MAX_UNIT_LEN} characters, got {}",
            unit.chars().count()
        ))
    } else if unit.chars().any(char::is_control) {
        Some("must not contain control characters".to_owned())
    } else {
        None
    };
    match problem {
        Some(message) => {
            issues.push(Issue::value(keys.path_of("unit"), message));
            None
        }
        None => Some(unit.to_owned()),
    }
}

/// Table, address, bit, string length and byte/word order of a Modbus point. Returns the type
/// with its string length resolved.
pub(crate) fn modbus_source(
    keys: &Keys,
    raw: &RawPoint,
    data_type: Option<DataType>,
    defaults: &PointDefaults,
    issues: &mut Vec<Issue>,
) -> (Option<ModbusSource>, Option<DataType>, Option<Footprint>) {
    let table = required_choice::<Table>(keys, "table", &raw.table, issues);
    let address = require(keys, "address", &raw.address, issues)
        .and_then(|address| in_range(keys, "address", *address, 0, 65_535, issues))
        .and_then(|address| u16::try_from(address).ok());
    // `length` belongs to strings: resolve it into the type.
    let data_type = match data_type {
        Some(DataType::String { .. }) => require(keys, "length", &raw.length, issues)
            .and_then(|length| {
                in_range(
                    keys,
                    "length",
                    *length,
                    1,
                    i64::from(MAX_REGISTERS_PER_READ),
                    issues,
                )
            })
            .and_then(|length| u16::try_from(length).ok())
            .map(|length| DataType::String { length }),
        other => {
            if other.is_some() {
                refuse_keys(keys, &["length"], "a point that is not a string", issues);
            }
            other
        }
    };
    let data_type = match (table, data_type) {
        (Some(table), Some(data_type)) if table.is_bits() && data_type != DataType::Bool => {
            issues.push(Issue::value(
                keys.path_of("type"),
                format!(
                    "a {} holds single bits: type must be bool, got {}",
                    table_name(table),
                    data_type_name(data_type)
                ),
            ));
            None
        }
        (_, data_type) => data_type,
    };
    let bit = match raw.bit {
        None if keys.rejected.contains("bit") => None,
        None => Some(None),
        Some(bit) => in_range(keys, "bit", bit, 0, 15, issues).and_then(|bit| {
            let problem = match (table, data_type) {
                (Some(table), _) if table.is_bits() => Some(format!(
                    "a {} already holds single bits: leave `bit` out",
                    table_name(table)
                )),
                (_, Some(data_type)) if data_type != DataType::Bool => Some(format!(
                    "a single bit is a bool: type must be bool, got {}",
                    data_type_name(data_type)
                )),
                _ => None,
            };
            match problem {
                Some(problem) => {
                    issues.push(Issue::value(keys.path_of("bit"), problem));
                    None
                }
                None => u8::try_from(bit).ok().map(Some),
            }
        }),
    };
    let byte_order = match &raw.byte_order {
        None if keys.rejected.contains("byte_order") => None,
        None => defaults.encoding.map(|e| e.byte_order),
        Some(_) => choice(keys, "byte_order", &raw.byte_order, ByteOrder::Big, issues),
    };
    let word_order = match &raw.word_order {
        None if keys.rejected.contains("word_order") => None,
        None => defaults.encoding.map(|e| e.word_order),
        Some(_) => choice(keys, "word_order", &raw.word_order, WordOrder::Big, issues),
    };
    if let (Some(data_type), Some(max)) = (data_type, defaults.max_registers_per_read) {
        if data_type.width() > max && table.is_some_and(|t| !t.is_bits()) {
            issues.push(Issue::value(
                keys.path_of("type"),
                format!(
                    "a {} needs {} registers but the device's max_registers_per_read is {max}",
                    data_type_name(data_type),
                    data_type.width()
                ),
            ));
        }
    }
    let footprint = match (table, address, data_type, bit) {
        (Some(table), Some(first), Some(data_type), Some(bit)) => {
            let width = data_type.width();
            match first.checked_add(width - 1) {
                Some(last) => Some(Footprint {
                    table,
                    first,
                    last,
                    bit,
                }),
                None => {
                    issues.push(Issue::value(
                        keys.path_of("address"),
                        format!(
                            "a {} at address {first} needs {width} registers and runs past the last address 65535",
                            data_type_name(data_type)
                        ),
                    ));
                    None
                }
            }
        }
        _ => None,
    };
    let source = || {
        let footprint = footprint?;
        Some(ModbusSource {
            table: footprint.table,
            address: footprint.first,
            bit: footprint.bit,
            encoding: Encoding {
                byte_order: byte_order?,
                word_order: word_order?,
            },
        })
    };
    (source(), data_type, footprint)
}

/// Reports, after every device was read: two devices with one unit id on an rtu bus (their
/// replies could not be told apart), and more than one device on a serial_line bus (the line
/// carries one instrument's text).
fn check_bus_sharing(
    devices: &List<RawDeviceEntry>,
    buses: &[(&str, Option<BusTag>)],
    issues: &mut Vec<Issue>,
) {
    let mut seen: HashMap<(&str, i64), KeyPath> = HashMap::new();
    let mut line_users: HashMap<&str, KeyPath> = HashMap::new();
    for entry in &devices.items {
        let (raw, keys) = (&entry.device.value, &entry.device.keys);
        let Some(bus) = raw.bus.as_deref() else {
            continue;
        };
        let Some((_, Some(tag))) = buses.iter().find(|(name, _)| *name == bus) else {
            continue;
        };
        if tag.is_rtu() && !keys.rejected.contains("unit_id") {
            let unit = raw.unit_id.unwrap_or(i64::from(DEFAULT_UNIT_ID));
            match seen.get(&(bus, unit)) {
                Some(first) => issues.push(
                    Issue::value(
                        if keys.present.contains("unit_id") {
                            keys.path_of("unit_id")
                        } else {
                            keys.path_of("bus")
                        },
                        format!("unit id {unit} is already used on rtu bus {bus:?}"),
                    )
                    .with_note(first.clone(), "first used by the device defined"),
                ),
                None => {
                    seen.insert((bus, unit), keys.path_of("name"));
                }
            }
        }
        if *tag == BusTag::SerialLine {
            match line_users.get(bus) {
                Some(first) => issues.push(
                    Issue::value(
                        keys.path_of("bus"),
                        format!("serial_line bus {bus:?} already carries a device: one instrument per line"),
                    )
                    .with_note(first.clone(), "by the device defined"),
                ),
                None => {
                    line_users.insert(bus, keys.path_of("name"));
                }
            }
        }
    }
}

/// Reports each point whose registers overlap an earlier point's in the same table (once per
/// point, against the first such point), naming both.
fn check_overlaps(
    points: &[Decoded<RawPoint>],
    checked: &[(Option<PointConfig>, Option<Footprint>)],
    issues: &mut Vec<Issue>,
) {
    let label = |index: usize| match points.get(index).and_then(|p| p.value.name.as_deref()) {
        Some(name) => format!("point {name:?}"),
        None => format!("point #{}", index + 1),
    };
    report_overlaps(
        points,
        checked.iter().map(|(_, footprint)| *footprint),
        |later, earlier, footprint| {
            format!(
                "{} ({}) overlaps {}",
                label(later),
                footprint.describe(),
                label(earlier)
            )
        },
        issues,
    );
}

/// A point's `scale` (default 1) and `offset` (default 0): both finite, the scale not 0.
/// `zero_scale` is the message for a scale of 0, which says why from the caller's side (a
/// gateway reads through the scale, a simulator writes through it). `None`: refused (reported).
pub(crate) fn scale_and_offset(
    keys: &Keys,
    scale: Option<f64>,
    offset: Option<f64>,
    zero_scale: &str,
    issues: &mut Vec<Issue>,
) -> (Option<f64>, Option<f64>) {
    let scale = optional(keys, "scale", scale, 1.0).and_then(|scale| {
        let problem = if !scale.is_finite() {
            "must be a finite number"
        } else if scale == 0.0 {
            zero_scale
        } else {
            return Some(scale);
        };
        issues.push(Issue::value(keys.path_of("scale"), problem));
        None
    });
    let offset = optional(keys, "offset", offset, 0.0).and_then(|offset| {
        if offset.is_finite() {
            Some(offset)
        } else {
            issues.push(Issue::value(
                keys.path_of("offset"),
                "must be a finite number",
            ));
            None
        }
    });
    (scale, offset)
}

impl Choice for Table {
    const WHAT: &'static str = "table";
    const WORDS: &'static [(&'static str, Self)] = &[
        ("coil", Table::Coil),
        ("discrete_input", Table::DiscreteInput),
        ("input", Table::Input),
        ("holding", Table::Holding),
    ];
}

/// `string` takes its length from the `length` key: [`modbus_source`] checks it.
impl Choice for DataType {
    const WHAT: &'static str = "type";
    const WORDS: &'static [(&'static str, Self)] = &[
        ("bool", DataType::Bool),
        ("u16", DataType::U16),
        ("i16", DataType::I16),
        ("u32", DataType::U32),
        ("i32", DataType::I32),
        ("u64", DataType::U64),
        ("i64", DataType::I64),
        ("f32", DataType::F32),
        ("f64", DataType::F64),
        ("string", DataType::String { length: 0 }),
    ];

    fn word(self) -> &'static str {
        match self {
            DataType::String { .. } => "string",
            other => Self::WORDS
                .iter()
                .find(|(_, value)| *value == other)
                .map_or(Self::WHAT, |(word, _)| word),
        }
    }
}

impl Choice for ByteOrder {
    const WHAT: &'static str = "byte order";
    const WORDS: &'static [(&'static str, Self)] =
        &[("big", ByteOrder::Big), ("little", ByteOrder::Little)];
}

impl Choice for WordOrder {
    const WHAT: &'static str = "word order";
    const WORDS: &'static [(&'static str, Self)] =
        &[("big", WordOrder::Big), ("little", WordOrder::Little)];
}

impl Choice for Parity {
    const WHAT: &'static str = "parity";
    const WORDS: &'static [(&'static str, Self)] = &[
        ("none", Parity::None),
        ("even", Parity::Even),
        ("odd", Parity::Odd),
    ];
}

impl Choice for SessionMode {
    const WHAT: &'static str = "session mode";
    const WORDS: &'static [(&'static str, Self)] = &[
        ("persistent", SessionMode::Persistent),
        ("clean", SessionMode::Clean),
    ];
}

impl Choice for PublishMode {
    const WHAT: &'static str = "publish mode";
    const WORDS: &'static [(&'static str, Self)] = &[
        ("on_change", PublishMode::OnChange),
        ("every_poll", PublishMode::EveryPoll),
    ];
}

/// The required `type` of a point (or of a simulated register).
pub(crate) fn require_data_type(
    keys: &Keys,
    value: &Option<String>,
    issues: &mut Vec<Issue>,
) -> Option<DataType> {
    required_choice(keys, "type", value, issues)
}

pub(crate) fn data_type_name(data_type: DataType) -> &'static str {
    data_type.word()
}

pub(crate) fn table_name(table: Table) -> &'static str {
    table.word()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load_str;
    use crate::config::rules::is_identifier;

    /// A valid configuration; tests replace one line to break it.
    const VALID: &str = "\
gateway:
  id: gw1
  data_dir: /var/lib/fieldrelay
uplink:
  url: mqtt://broker.local
buses:
  - name: plc1
    type: tcp
    host: 10.0.0.5
devices:
  - name: boiler
    bus: plc1
    points:
      - name: temperature
        table: holding
        address: 10
        type: f32
";

    /// Errors of `text` as `LINE:COL: PATH: message` lines.
    fn errors(text: &str) -> Vec<String> {
        match load_str(text, "c.yaml") {
            Ok(config) => panic!("expected errors, got {config:?}"),
            Err(errors) => errors
                .errors
                .iter()
                .map(|e| {
                    let mut line = e.to_string();
                    line.replace_range(..e.file.len() + 1, "");
                    line
                })
                .collect(),
        }
    }

    fn with(replacements: &[(&str, &str)]) -> String {
        let mut text = VALID.to_owned();
        for (from, to) in replacements {
            assert!(text.contains(from), "{from:?} not in the base config");
            text = text.replacen(from, to, 1);
        }
        text
    }

    #[test]
    fn resolves_every_default() {
        let config = load_str(VALID, "c.yaml").unwrap();
        assert_eq!(
            config.uplink,
            UplinkConfig {
                host: "broker.local".to_owned(),
                port: 1883,
                client_id: "gw1".to_owned(),
                keep_alive: Duration::from_secs(30),
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
    fn unknown_bus_lists_the_defined_ones() {
        assert_eq!(
            errors(&with(&[("    bus: plc1", "    bus: plc9")])),
            [r#"12:10: devices[0].bus: unknown bus "plc9" (defined buses: plc1)"#]
        );
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
    fn uplink_rules() {
        let uplink = |lines: &str| errors(&with(&[("  url: mqtt://broker.local\n", lines)]));
        assert_eq!(
            uplink("  url: mqtt://b\n  tls: {ca_file: /ca.pem}\n"),
            ["6:3: uplink.tls: tls settings need an mqtts:// url (the url is mqtt://)"]
        );
        assert_eq!(
            uplink("  url: mqtts://b\n  tls: {ca_file: /c.pem, kye_file: x}\n  password_file: /p\n"),
            [
                r#"6:26: uplink.tls.kye_file: unknown key "kye_file" (did you mean "key_file"?)"#,
                "7:18: uplink.password_file: needs a username (mqtt 3.1.1 sends no password without one)",
            ]
        );
        assert_eq!(
            uplink("  url: mqtts://b\n  tls: {cert_file: /c.pem}\n"),
            ["6:8: uplink.tls.key_file: cert_file needs its key_file"]
        );
        assert_eq!(
            uplink("  url: mqtt://b\n  session: sticky\n  max_inflight: 0\n  max_rate: -1\n  response_timeout: 0s\n"),
            [
                r#"6:12: uplink.session: unknown session mode "sticky": expected persistent or clean"#,
                "7:17: uplink.max_inflight: must be between 1 and 65000, got 0",
                "8:13: uplink.max_rate: must be between 1 and 1000000, got -1",
                "9:21: uplink.response_timeout: must be greater than 0s",
            ]
        );
        let config = load_str(
            &with(&[(
                "  url: mqtt://broker.local\n",
                "  url: mqtts://broker.local\n  tls:\n    ca_file: /ca.pem\n    cert_file: /c.pem\n    key_file: /k.pem\n  username: gw\n  password_file: /pw\n  session: clean\n  response_timeout: 2s\n  max_inflight: 5\n  max_rate: 100\n",
            )]),
            "c.yaml",
        )
        .unwrap();
        let u = &config.uplink;
        assert_eq!(u.port, 8883);
        assert_eq!(
            u.tls,
            Some(TlsConfig {
                ca_file: "/ca.pem".into(),
                client_auth: Some(("/c.pem".into(), "/k.pem".into()))
            })
        );
        assert_eq!(u.username.as_deref(), Some("gw"));
        assert_eq!(u.password_file, Some(PathBuf::from("/pw")));
        assert_eq!(u.session, SessionMode::Clean);
        assert_eq!(u.response_timeout, Duration::from_secs(2));
        assert_eq!((u.max_inflight, u.max_rate), (5, Some(100)));
        let config = load_str(
            &with(&[(
                "  url: mqtt://broker.local\n",
                "  url: mqtts://broker.local\n",
            )]),
            "c.yaml",
        )
        .unwrap();
        assert_eq!(
            config.uplink.tls.unwrap().ca_file,
            PathBuf::from(DEFAULT_CA_FILE)
        );
        assert_eq!(
            uplink("  url: mqtt://b\n  keep_alive: 0s\n  client_id: a b\n  topic_prefix: a/#/\n"),
            [
                "6:15: uplink.keep_alive: must be between 1s and 65535s, got 0s",
                r#"7:14: uplink.client_id: invalid client id "a b": use 1 to 128 letters, digits, "_" or "-""#,
                "8:17: uplink.topic_prefix: must not contain the mqtt wildcards + or #",
            ]
        );
        assert_eq!(
            uplink("  url: mqtt://b\n  keep_alive: 1.5s\n  topic_prefix: /x\n"),
            [
                "6:15: uplink.keep_alive: must be a whole number of seconds (mqtt sends it in seconds), got 1500ms",
                "7:17: uplink.topic_prefix: must not start or end with /",
            ]
        );
        assert_eq!(
            uplink("  url: mqtt://b\n  reconnect_initial: 2s\n  reconnect_max: 1s\n"),
            ["7:18: uplink.reconnect_max: must be at least reconnect_initial (2s), got 1s"]
        );
        assert_eq!(
            uplink("  url: mqtt://b\n  reconnect_initial: 2m\n"),
            ["6:22: uplink.reconnect_initial: must not exceed reconnect_max (1m, the default), got 2m"]
        );
        assert_eq!(
            uplink("  url: mqtt://b\n  reconnect_max: 500ms\n"),
            ["6:18: uplink.reconnect_max: must be at least reconnect_initial (1s, the default), got 500ms"]
        );
        let long = "x".repeat(129);
        assert_eq!(
            uplink(&format!("  url: mqtt://b\n  client_id: {long}\n")).len(),
            1
        );
    }

    #[test]
    fn a_long_gateway_id_is_refused_because_it_is_the_default_client_id() {
        let long = "g".repeat(129);
        assert_eq!(
            errors(&with(&[("  id: gw1", &format!("  id: {long}"))])),
            ["2:7: gateway.id: must be at most 128 characters, got 129"]
        );
    }

    #[test]
    fn bus_rules() {
        assert_eq!(
            errors(&with(&[(
                "    host: 10.0.0.5\n",
                "    host: 10.0.0.5:502\n    port: 0\n    timeout: 0s\n"
            )])),
            [
                r#"9:11: buses[0].host: invalid host "10.0.0.5:502": expected a host name or an ip address"#,
                "10:11: buses[0].port: must be between 1 and 65535, got 0",
                "11:14: buses[0].timeout: must be greater than 0s",
            ]
        );
        assert_eq!(
            errors(&with(&[("    type: tcp\n", "    type: udp\n")])),
            [
                r#"8:11: buses[0].type: unknown bus type "udp": expected tcp, rtu_over_tcp, rtu or serial_line"#
            ]
        );
    }

    /// A config whose bus is replaced by `bus` (indented list item lines) and whose point gets
    /// `point` lines appended.
    fn fieldbus(bus: &str, point: &str) -> String {
        with(&[
            (
                "  - name: plc1\n    type: tcp\n    host: 10.0.0.5\n",
                &format!("  - name: plc1\n{bus}"),
            ),
            (
                "        type: f32\n",
                &format!("        type: f32\n{point}"),
            ),
        ])
    }

    #[test]
    fn serial_buses_resolve_their_defaults() {
        let config = load_str(
            &fieldbus("    type: rtu\n    port: /dev/ttyUSB0\n", ""),
            "c.yaml",
        )
        .unwrap();
        let bus = &config.buses[0];
        assert_eq!(
            bus.kind,
            BusKind::Rtu {
                serial: SerialSettings {
                    port: "/dev/ttyUSB0".to_owned(),
                    baud_rate: 19_200,
                    parity: Parity::Even,
                    data_bits: 8,
                    stop_bits: StopBits::One,
                }
            }
        );
        // 3.5 characters of 11 bits at 19200 baud is 2.005 ms.
        assert_eq!(bus.turnaround_delay.as_micros(), 2005);
        let config = load_str(
            &fieldbus(
                "    type: rtu_over_tcp\n    host: gw.local\n    port: 4001\n    turnaround_delay: 5ms\n",
                "",
            ),
            "c.yaml",
        )
        .unwrap();
        assert_eq!(
            config.buses[0].kind,
            BusKind::RtuOverTcp {
                host: "gw.local".to_owned(),
                port: 4001
            }
        );
        assert_eq!(config.buses[0].turnaround_delay, Duration::from_millis(5));
        let device = &config.devices[0];
        assert_eq!(
            device.planning,
            Planning {
                max_gap: 8,
                max_registers_per_read: 125,
                coalesce: Coalesce::Merge
            }
        );
        assert_eq!(device.backoff_max, Duration::from_secs(60));
    }

    #[test]
    fn serial_bus_rules() {
        assert_eq!(
            errors(&fieldbus(
                "    type: rtu\n    host: x\n    port: 502\n    baud_rate: 10\n    parity: evn\n    data_bits: 7\n    stop_bits: 3\n    poll: \"?\"\n",
                ""
            )),
            [
                "9:5: buses[0].host: `host` does not apply to an rtu bus",
                "10:11: buses[0].port: expected a serial device path such as /dev/ttyUSB0, got the number 502",
                "11:16: buses[0].baud_rate: must be between 50 and 4000000, got 10",
                r#"12:13: buses[0].parity: unknown parity "evn": expected none, even or odd (did you mean "even"?)"#,
                "13:16: buses[0].data_bits: modbus rtu frames use 8 data bits, got 7",
                "14:16: buses[0].stop_bits: must be 1 or 2, got 3",
                "15:5: buses[0].poll: `poll` does not apply to an rtu bus",
            ]
        );
        assert_eq!(
            errors(&fieldbus(
                "    type: tcp\n    host: x\n    port: /dev/ttyS0\n    baud_rate: 9600\n    turnaround_delay: 2s\n",
                ""
            )),
            [
                r#"10:11: buses[0].port: expected a tcp port number (1 to 65535), got the text "/dev/ttyS0""#,
                "11:5: buses[0].baud_rate: `baud_rate` does not apply to a tcp bus",
                "12:23: buses[0].turnaround_delay: must be at most 1s, got 2s",
            ]
        );
    }

    #[test]
    fn device_and_point_fieldbus_rules() {
        let rtu = "    type: rtu\n    port: /dev/ttyUSB0\n";
        assert_eq!(
            errors(&with(&[
                ("  - name: plc1\n    type: tcp\n    host: 10.0.0.5\n", &format!("  - name: plc1\n{rtu}")),
                (
                    "    bus: plc1\n",
                    "    bus: plc1\n    unit_id: 0\n    byte_order: middle\n    max_gap: 200\n    max_registers_per_read: 1\n    backoff_max: 0s\n"
                ),
            ])),
            [
                "13:14: devices[0].unit_id: unit id 0 is the rtu broadcast address, which no device answers: use 1 to 247",
                r#"14:17: devices[0].byte_order: unknown byte order "middle": expected big or little"#,
                "15:14: devices[0].max_gap: must be between 0 and 125, got 200",
                "17:18: devices[0].backoff_max: must be greater than 0s",
                "22:15: devices[0].points[0].type: a f32 needs 2 registers but the device's max_registers_per_read is 1",
            ]
        );
        let point = |lines: &str| errors(&with(&[("        type: f32\n", lines)]));
        assert_eq!(
            point("        type: string\n        length: 2\n        bit: 3\n        scale: 2\n        regex: x\n"),
            [
                "19:14: devices[0].points[0].bit: a single bit is a bool: type must be bool, got string",
                "20:9: devices[0].points[0].scale: `scale` does not apply to a string point",
                "21:9: devices[0].points[0].regex: `regex` applies to points of a serial_line bus, not a tcp bus",
            ]
        );
        assert_eq!(
            point("        type: string\n"),
            ["14:9: devices[0].points[0].length: missing required key"]
        );
        assert_eq!(
            point("        type: u16\n        length: 2\n        word_order: big-endian\n        max_silence: 0s\n"),
            [
                "18:9: devices[0].points[0].length: `length` does not apply to a point that is not a string",
                r#"19:21: devices[0].points[0].word_order: unknown word order "big-endian": expected big or little"#,
                "20:22: devices[0].points[0].max_silence: must be greater than 0s",
            ]
        );
        let config = load_str(
            &with(&[(
                "        type: f32\n",
                "        type: bool\n        bit: 15\n        publish: on_change\n        max_silence: 5m\n      - name: flags\n        table: holding\n        address: 10\n        type: bool\n        bit: 0\n      - name: serial\n        table: input\n        address: 0\n        type: string\n        length: 8\n        byte_order: little\n",
            )]),
            "c.yaml",
        )
        .unwrap();
        let points = &config.devices[0].points;
        assert_eq!(points[0].modbus().map(|m| m.bit), Some(Some(15)));
        assert_eq!(
            points[0].reporting.max_silence,
            Some(Duration::from_secs(300))
        );
        assert_eq!(points[2].data_type, DataType::String { length: 8 });
        assert_eq!(
            points[2].modbus().map(|m| m.encoding.byte_order),
            Some(ByteOrder::Little)
        );
        // Two different bits of one register do not overlap; the same bit does.
        let same_bit = with(&[(
            "        type: f32\n",
            "        type: bool\n        bit: 1\n      - name: again\n        table: holding\n        address: 10\n        type: bool\n        bit: 1\n",
        )]);
        assert_eq!(
            errors(&same_bit),
            [
                r#"21:18: devices[0].points[1].address: point "again" (holding 10 bit 1) overlaps point "temperature" (holding 10 bit 1, defined at line 14)"#
            ]
        );
    }

    #[test]
    fn serial_line_devices() {
        let line_bus = "    type: serial_line\n    port: /dev/ttyS1\n    terminator: \"\\r\\n\"\n    poll: \"W\\r\\n\"\n";
        let text = with(&[
            (
                "  - name: plc1\n    type: tcp\n    host: 10.0.0.5\n",
                &format!("  - name: plc1\n{line_bus}"),
            ),
            (
                "        table: holding\n        address: 10\n        type: f32\n",
                "        type: f64\n        regex: \"W=\\\\s*([-0-9.]+)\"\n",
            ),
        ]);
        let config = load_str(&text, "c.yaml").unwrap();
        let BusKind::SerialLine { serial, line } = &config.buses[0].kind else {
            panic!("a serial_line bus");
        };
        assert_eq!((serial.baud_rate, serial.parity), (9600, Parity::None));
        assert_eq!(line.terminator, b"\r\n");
        assert_eq!(line.poll.as_deref(), Some(&b"W\r\n"[..]));
        assert!(matches!(
            config.devices[0].points[0].source,
            PointSource::Line(_)
        ));

        let broken = text
            .replace("    bus: plc1\n", "    bus: plc1\n    unit_id: 3\n")
            .replace(
                "        regex: \"W=\\\\s*([-0-9.]+)\"\n",
                "        regex: \"W=(\"\n        table: input\n",
            );
        assert_eq!(
            errors(&broken),
            [
                "15:5: devices[0].unit_id: `unit_id` does not apply to a device on a serial_line bus",
                "19:16: devices[0].points[0].regex: invalid regex: unclosed group",
                "20:9: devices[0].points[0].table: `table` does not apply to a point on a serial_line bus",
            ]
        );
        let no_group = text.replace("([-0-9.]+)", "[-0-9.]+");
        assert_eq!(
            errors(&no_group),
            [
                r#"18:16: devices[0].points[0].regex: needs a capture group around the value, e.g. "T=([-0-9.]+)""#
            ]
        );
    }

    #[test]
    fn a_serial_line_bus_carries_one_device() {
        let text = with(&[
            (
                "  - name: plc1\n    type: tcp\n    host: 10.0.0.5\n",
                "  - name: plc1\n    type: serial_line\n    port: /dev/ttyS0\n",
            ),
            (
                "        table: holding\n        address: 10\n        type: f32\n",
                "        type: f64\n        regex: \"(.*)\"\n",
            ),
        ]);
        let second = text
            .split("devices:\n")
            .nth(1)
            .unwrap_or_default()
            .replace("name: boiler", "name: kettle");
        assert_eq!(
            errors(&format!("{text}{second}")),
            [
                r#"18:10: devices[1].bus: serial_line bus "plc1" already carries a device: one instrument per line (by the device defined at line 11)"#
            ]
        );
    }

    #[test]
    fn units_on_an_rtu_bus_are_unique() {
        let text = format!(
            "{}  - name: other\n    bus: plc1\n    points:\n      - name: x\n        table: coil\n        address: 0\n        type: bool\n",
            fieldbus("    type: rtu_over_tcp\n    host: gw\n", "")
        );
        assert_eq!(
            errors(&text),
            [
                r#"19:10: devices[1].bus: unit id 1 is already used on rtu bus "plc1" (first used by the device defined at line 11)"#
            ]
        );
    }

    #[test]
    fn duplicate_names_point_back_at_the_first() {
        let text = with(&[(
            "devices:\n",
            "  - name: plc1\n    type: tcp\n    host: b\ndevices:\n",
        )]);
        assert_eq!(
            errors(&text),
            [r#"10:11: buses[1].name: duplicate bus name "plc1" (first defined at line 7)"#]
        );
        let text = format!(
            "{VALID}      - name: temperature\n        table: input\n        address: 0\n        type: u16\n"
        );
        assert_eq!(
            errors(&text),
            [
                r#"18:15: devices[0].points[1].name: duplicate point name "temperature" (first defined at line 14)"#
            ]
        );
    }

    #[test]
    fn device_rules() {
        assert_eq!(
            errors(&with(&[(
                "    bus: plc1\n",
                "    bus: plc1\n    unit_id: 256\n    poll_interval: 5ms\n"
            )])),
            [
                "13:14: devices[0].unit_id: must be between 0 and 255, got 256",
                "14:20: devices[0].poll_interval: must be at least 10ms, got 5ms",
            ]
        );
        let no_points = VALID
            .split("    points:")
            .next()
            .unwrap_or_default()
            .to_owned();
        assert_eq!(
            errors(&format!("{no_points}    points: []\n")),
            ["13:13: devices[0].points: a device needs at least one point"]
        );
        assert_eq!(
            errors(&format!("{no_points}    name2: x\n")),
            [
                "11:5: devices[0].points: missing required key",
                r#"13:5: devices[0].name2: unknown key "name2" (did you mean "name"?)"#,
            ]
        );
    }

    #[test]
    fn engineering_units_are_short_display_text() {
        let with_unit = |unit: &str| {
            with(&[(
                "        type: f32\n",
                &format!("        type: f32\n        unit: {unit}\n"),
            )])
        };
        let config = load_str(&with_unit("'m³/h'"), "c.yaml").unwrap();
        assert_eq!(config.devices[0].points[0].unit.as_deref(), Some("m³/h"));
        assert_eq!(
            errors(&with_unit("''")),
            ["18:15: devices[0].points[0].unit: must not be empty"]
        );
        assert_eq!(
            errors(&with_unit(&"x".repeat(33))),
            ["18:15: devices[0].points[0].unit: must be at most 32 characters, got 33"]
        );
        assert_eq!(
            errors(&with_unit("\"a\\tb\"")),
            ["18:15: devices[0].points[0].unit: must not contain control characters"]
        );
    }

    #[test]
    fn point_rules() {
        let point = |lines: &str| errors(&with(&[("        type: f32\n", lines)]));
        assert_eq!(
            point("        type: f16\n"),
            [
                r#"17:15: devices[0].points[0].type: unknown type "f16": expected bool, u16, i16, u32, i32, u64, i64, f32, f64 or string (did you mean "u16"?)"#
            ]
        );
        assert_eq!(
            point("        type: f32\n        qos: 3\n        scale: 0\n        deadband: -1\n        publish: always\n"),
            [
                "18:14: devices[0].points[0].qos: must be 0, 1 or 2, got 3",
                "19:16: devices[0].points[0].scale: must not be 0 (every reading would become the offset)",
                "20:19: devices[0].points[0].deadband: must not be negative, got -1",
                r#"21:18: devices[0].points[0].publish: unknown publish mode "always": expected on_change or every_poll"#,
            ]
        );
        assert_eq!(
            point("        type: f32\n        scale: .nan\n        offset: 1e999\n"),
            [
                r#"18:16: devices[0].points[0].scale: invalid type: string ".nan", expected a number (it must be finite)"#,
                r#"19:17: devices[0].points[0].offset: invalid type: string ".inf", expected a number (it must be finite)"#,
            ]
        );
        assert_eq!(
            errors(&with(&[("        table: holding\n", "        table: coil\n")])),
            ["17:15: devices[0].points[0].type: a coil holds single bits: type must be bool, got f32"]
        );
        assert_eq!(
            errors(&with(&[(
                "        table: holding\n",
                "        table: holdings\n"
            )])),
            [
                r#"15:16: devices[0].points[0].table: unknown table "holdings": expected coil, discrete_input, input or holding (did you mean "holding"?)"#
            ]
        );
        assert_eq!(
            errors(&with(&[("        address: 10\n", "        address: 65535\n")])),
            ["16:18: devices[0].points[0].address: a f32 at address 65535 needs 2 registers and runs past the last address 65535"]
        );
        assert_eq!(
            errors(&with(&[("        address: 10\n", "        address: -1\n")])),
            ["16:18: devices[0].points[0].address: must be between 0 and 65535, got -1"]
        );
        assert_eq!(
            errors(&with(&[(
                "        type: f32\n",
                "        type: f32\n        retain: yes\n"
            )])),
            [
                r#"18:17: devices[0].points[0].retain: invalid type: string "yes", expected a boolean"#
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
    fn bool_on_a_register_table_is_allowed() {
        let text = with(&[("        type: f32\n", "        type: bool\n")]);
        assert_eq!(
            load_str(&text, "c.yaml").unwrap().devices[0].points[0].data_type,
            DataType::Bool
        );
    }

    #[test]
    fn overlaps_name_both_points() {
        let text = format!(
            "{VALID}      - name: pressure\n        table: holding\n        address: 11\n        type: u16\n\
             \x20     - name: elsewhere\n        table: input\n        address: 10\n        type: u32\n\
             \x20     - name: adjacent\n        table: holding\n        address: 12\n        type: i32\n"
        );
        assert_eq!(
            errors(&text),
            [
                r#"20:18: devices[0].points[1].address: point "pressure" (holding 11) overlaps point "temperature" (holding 10-11, defined at line 14)"#
            ]
        );
    }

    #[test]
    fn each_footprint_is_paired_with_the_first_earlier_one_it_overlaps() {
        let at = |first, last| {
            Some(Footprint {
                table: Table::Holding,
                first,
                last,
                bit: None,
            })
        };
        // [2] overlaps [0] and [1] and is paired with [0] only; [1] (refused) overlaps nothing.
        let footprints = [at(10, 11), None, at(11, 12), at(12, 12), at(20, 20)];
        let pairs: Vec<_> = first_overlaps(&footprints)
            .iter()
            .map(|overlap| (overlap.later, overlap.earlier))
            .collect();
        assert_eq!(pairs, [(2, 0), (3, 2)]);
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

    #[test]
    fn names_are_identifiers() {
        assert!(is_identifier("plant1-gw_01"));
        for bad in ["", "a b", "a/b", "a+b", "a#b", "ä", "a.b"] {
            assert!(!is_identifier(bad), "{bad:?}");
        }
        assert_eq!(
            errors(&with(&[("  - name: boiler", "  - name: boiler/1")])),
            [
                r#"11:11: devices[0].name: invalid name "boiler/1": use only letters, digits, "_" and "-""#
            ]
        );
    }

    #[test]
    fn hosts() {
        for good in [
            "10.0.0.5",
            "::1",
            "plc-1.local",
            "plc_1",
            "a.b.",
            "localhost",
        ] {
            assert!(is_host(good), "{good:?}");
        }
        for bad in ["", "a b", "a..b", "http://x", "10.0.0.5:502", "[::1]", "."] {
            assert!(!is_host(bad), "{bad:?}");
        }
    }
}
