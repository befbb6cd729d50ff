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
use std::net::{IpAddr, Ipv6Addr};
use std::path::PathBuf;
use std::time::Duration;

use super::error::Issue;
use super::raw::{
    closest, decode_mapping, Decoded, Keys, RawBus, RawConfig, RawDeviceEntry, RawGateway,
    RawPoint, RawTls, RawUplink,
};
use super::source_map::KeyPath;
use super::units::format_duration;
use super::{
    BusConfig, BusKind, Config, DataType, DeviceConfig, GatewayConfig, PointConfig, PublishMode,
    Qos, SessionMode, Table, TlsConfig, UplinkConfig,
};

/// IANA port of unencrypted MQTT; used when an `mqtt://` url names none.
pub const DEFAULT_MQTT_PORT: u16 = 1883;
/// IANA port of MQTT over TLS; used when an `mqtts://` url names none.
pub const DEFAULT_MQTTS_PORT: u16 = 8883;
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
/// Long enough not to load a cellular link with pings, short enough that the broker publishes
/// the Last Will within ~45 s (1.5 × keep alive) of a silent death.
pub const DEFAULT_KEEP_ALIVE: Duration = Duration::from_secs(30);
/// MQTT carries keep alive as a 16-bit number of seconds.
pub const MAX_KEEP_ALIVE: Duration = Duration::from_secs(65_535);
pub const DEFAULT_RECONNECT_INITIAL: Duration = Duration::from_secs(1);
/// A minute caps the gap after a broker outage while still sparing a broker that is restarting
/// from a thundering herd of gateways.
pub const DEFAULT_RECONNECT_MAX: Duration = Duration::from_secs(60);
/// MQTT 3.1.1 only guarantees 23 characters; brokers in practice (mosquitto, EMQX, HiveMQ, AWS)
/// accept far more, and gateway ids built from site and device names often need it. 128 bounds
/// the CONNECT packet while fitting every real naming scheme we have seen.
pub const MAX_CLIENT_ID_LEN: usize = 128;
/// First topic level of the default prefix `fieldrelay/<gateway.id>`.
pub const DEFAULT_TOPIC_ROOT: &str = "fieldrelay";
/// The port Modbus TCP is registered on.
pub const DEFAULT_MODBUS_PORT: u16 = 502;
/// Typical PLCs answer within tens of milliseconds; a second tolerates a busy one or a gateway in
/// front of serial devices without stalling the poll loop for long.
pub const DEFAULT_BUS_TIMEOUT: Duration = Duration::from_secs(1);
pub const DEFAULT_UNIT_ID: u8 = 1;
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(1);
/// Faster polling than this floods a bus (and the queue) without giving fresher data: a Modbus
/// TCP round trip alone is several milliseconds.
pub const MIN_POLL_INTERVAL: Duration = Duration::from_millis(10);

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
    // devices should not also get "unknown bus".
    let mut bus_names: Vec<&str> = Vec::new();
    for bus in raw.buses.iter().flat_map(|list| &list.items) {
        if let Some(name) = bus.value.name.as_deref() {
            if !bus_names.contains(&name) {
                bus_names.push(name);
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
        collect_all(devices, list.len)
    });

    let store = super::store::validate_store(raw.store.as_ref(), raw, issues);

    Some(Config {
        gateway: gateway?,
        uplink: uplink?,
        buses: buses?,
        devices: devices?,
        store: store?,
    })
}

/// All items, or `None` if any was invalid or could not be decoded at all.
fn collect_all<T>(items: Vec<Option<T>>, written: usize) -> Option<Vec<T>> {
    let items: Option<Vec<T>> = items.into_iter().collect();
    items.filter(|items| items.len() == written)
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
    let endpoint = require(keys, "url", &raw.url, issues).and_then(|url| {
        parse_mqtt_url(url)
            .map_err(|error| issues.push(Issue::value(keys.path_of("url"), error.to_string())))
            .ok()
    });

    let client_id = match &raw.client_id {
        Some(id) => {
            if is_identifier(id) && id.len() <= MAX_CLIENT_ID_LEN {
                Some(id.clone())
            } else {
                issues.push(Issue::value(
                    keys.path_of("client_id"),
                    format!(
                        "invalid client id {id:?}: use 1 to {MAX_CLIENT_ID_LEN} letters, digits, \"_\" or \"-\""
                    ),
                ));
                None
            }
        }
        None if keys.rejected.contains("client_id") => None,
        None => gateway_id.map(str::to_owned),
    };

    let keep_alive = optional(
        keys,
        "keep_alive",
        raw.keep_alive.map(|d| d.0),
        DEFAULT_KEEP_ALIVE,
    )
    .and_then(|keep_alive| {
        let path = keys.path_of("keep_alive");
        if keep_alive < Duration::from_secs(1) || keep_alive > MAX_KEEP_ALIVE {
            issues.push(Issue::value(
                path,
                format!(
                    "must be between 1s and 65535s, got {}",
                    format_duration(keep_alive)
                ),
            ));
            None
        } else if keep_alive.subsec_nanos() != 0 {
            issues.push(Issue::value(
                path,
                format!(
                    "must be a whole number of seconds (mqtt sends it in seconds), got {}",
                    format_duration(keep_alive)
                ),
            ));
            None
        } else {
            Some(keep_alive)
        }
    });

    let topic_prefix = match &raw.topic_prefix {
        Some(prefix) => match topic_prefix_problem(prefix) {
            None => Some(prefix.clone()),
            Some(problem) => {
                issues.push(Issue::value(keys.path_of("topic_prefix"), problem));
                None
            }
        },
        None if keys.rejected.contains("topic_prefix") => None,
        None => gateway_id.map(|id| format!("{DEFAULT_TOPIC_ROOT}/{id}")),
    };

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
    let username = match &raw.username {
        Some(name) if name.is_empty() || name.contains('\0') => {
            issues.push(Issue::value(
                keys.path_of("username"),
                "must not be empty or contain a nul character",
            ));
            None
        }
        other => Some(other.clone()),
    };
    let password_file = match &raw.password_file {
        Some(file) if file.is_empty() || file.contains('\0') => {
            issues.push(Issue::value(
                keys.path_of("password_file"),
                "must be a file path",
            ));
            None
        }
        Some(_) if raw.username.is_none() && !keys.rejected.contains("username") => {
            issues.push(Issue::value(
                keys.path_of("password_file"),
                "needs a username (mqtt 3.1.1 sends no password without one)",
            ));
            None
        }
        other => Some(other.as_ref().map(PathBuf::from)),
    };
    let session =
        optional(keys, "session", raw.session.clone(), "persistent".into()).and_then(|text| {
            match text.as_str() {
                "persistent" => Some(SessionMode::Persistent),
                "clean" => Some(SessionMode::Clean),
                other => {
                    issues.push(Issue::value(
                        keys.path_of("session"),
                        unknown_choice("session mode", other, &["persistent", "clean"]),
                    ));
                    None
                }
            }
        });
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
    let max_rate = match raw.max_rate {
        Some(rate) => in_range(keys, "max_rate", rate, 1, 1_000_000, issues)
            .and_then(|rate| u32::try_from(rate).ok())
            .map(Some),
        None if keys.rejected.contains("max_rate") => None,
        None => Some(None),
    };

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
            let file = |key: &str, value: &Option<String>, issues: &mut Vec<Issue>| match value {
                Some(text) if text.is_empty() || text.contains('\0') => {
                    issues.push(Issue::value(tls_keys.path_of(key), "must be a file path"));
                    None
                }
                other => Some(other.as_ref().map(PathBuf::from)),
            };
            let ca_file = file("ca_file", &raw.ca_file, issues);
            let cert_file = file("cert_file", &raw.cert_file, issues);
            let key_file = file("key_file", &raw.key_file, issues);
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
    let kind = require(keys, "type", &raw.kind, issues);
    let is_tcp = match kind.map(String::as_str) {
        Some("tcp") => Some(true),
        Some(other @ ("rtu" | "rtu_over_tcp")) => {
            issues.push(Issue::value(
                keys.path_of("type"),
                format!("bus type `{other}` is not supported yet"),
            ));
            Some(false)
        }
        Some(other) => {
            issues.push(Issue::value(
                keys.path_of("type"),
                format!("unknown bus type {other:?}: expected tcp"),
            ));
            None
        }
        None => None,
    };
    // A serial bus has no host; for tcp, or when the type is unclear, a missing host is worth
    // reporting now rather than after the type is fixed.
    let host = if is_tcp == Some(false) {
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
    let port = optional(keys, "port", raw.port, i64::from(DEFAULT_MODBUS_PORT))
        .and_then(|port| port_number(keys, "port", port, issues));
    let timeout = optional(
        keys,
        "timeout",
        raw.timeout.map(|d| d.0),
        DEFAULT_BUS_TIMEOUT,
    )
    .and_then(|timeout| positive(keys, "timeout", timeout, issues));
    if is_tcp != Some(true) {
        return None;
    }
    Some(BusConfig {
        name: name?,
        kind: BusKind::Tcp {
            host: host?,
            port: port?,
        },
        timeout: timeout?,
    })
}

fn validate_device(
    entry: &RawDeviceEntry,
    bus_names: &[&str],
    issues: &mut Vec<Issue>,
) -> Option<DeviceConfig> {
    let (raw, keys) = (&entry.device.value, &entry.device.keys);
    let name = identifier(keys, "name", &raw.name, None, issues);
    let bus = require(keys, "bus", &raw.bus, issues).and_then(|bus| {
        if bus_names.contains(&bus.as_str()) {
            return Some(bus.clone());
        }
        let defined = if bus_names.is_empty() {
            "no buses are defined".to_owned()
        } else {
            format!("defined buses: {}", bus_names.join(", "))
        };
        issues.push(Issue::value(
            keys.path_of("bus"),
            format!("unknown bus {bus:?} ({defined})"),
        ));
        None
    });
    let unit_id = optional(keys, "unit_id", raw.unit_id, i64::from(DEFAULT_UNIT_ID))
        .and_then(|unit_id| in_range(keys, "unit_id", unit_id, 0, 255, issues))
        .and_then(|unit_id| u8::try_from(unit_id).ok());
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
            .map(|point| validate_point(point, issues))
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
        bus: bus?,
        unit_id: unit_id?,
        poll_interval: poll_interval?,
        points: points?,
    })
}

/// The registers (or bits) a point occupies, when its table, address and type are valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Footprint {
    table: Table,
    first: u16,
    last: u16,
}

impl Footprint {
    fn overlaps(&self, other: &Footprint) -> bool {
        self.table == other.table && self.first <= other.last && other.first <= self.last
    }

    /// `holding 10-11`, `coil 3`.
    fn describe(&self) -> String {
        let table = table_name(self.table);
        if self.first == self.last {
            format!("{table} {}", self.first)
        } else {
            format!("{table} {}-{}", self.first, self.last)
        }
    }
}

fn validate_point(
    point: &Decoded<RawPoint>,
    issues: &mut Vec<Issue>,
) -> (Option<PointConfig>, Option<Footprint>) {
    let (raw, keys) = (&point.value, &point.keys);
    let name = identifier(keys, "name", &raw.name, None, issues);
    let table = require(keys, "table", &raw.table, issues).and_then(|table| {
        let parsed = parse_table(table);
        if parsed.is_none() {
            issues.push(Issue::value(
                keys.path_of("table"),
                unknown_choice("table", table, &TABLES.map(|(name, _)| name)),
            ));
        }
        parsed
    });
    let address = require(keys, "address", &raw.address, issues)
        .and_then(|address| in_range(keys, "address", *address, 0, 65_535, issues))
        .and_then(|address| u16::try_from(address).ok());
    let data_type = require(keys, "type", &raw.data_type, issues).and_then(|data_type| {
        let parsed = parse_data_type(data_type);
        if parsed.is_none() {
            issues.push(Issue::value(
                keys.path_of("type"),
                unknown_choice("type", data_type, &DATA_TYPES.map(|(name, _)| name)),
            ));
        }
        parsed
    });
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
    let footprint = match (table, address, data_type) {
        (Some(table), Some(first), Some(data_type)) => {
            let width = data_type.width();
            match first.checked_add(width - 1) {
                Some(last) => Some(Footprint { table, first, last }),
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

    let scale = optional(keys, "scale", raw.scale, 1.0).and_then(|scale| {
        if !scale.is_finite() {
            issues.push(Issue::value(
                keys.path_of("scale"),
                "must be a finite number",
            ));
            None
        } else if scale == 0.0 {
            issues.push(Issue::value(
                keys.path_of("scale"),
                "must not be 0 (every reading would become the offset)",
            ));
            None
        } else {
            Some(scale)
        }
    });
    let offset = optional(keys, "offset", raw.offset, 0.0).and_then(|offset| {
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
    let publish = optional(keys, "publish", raw.publish.clone(), "on_change".to_owned()).and_then(
        |publish| match publish.as_str() {
            "on_change" => Some(PublishMode::OnChange),
            "every_poll" => Some(PublishMode::EveryPoll),
            other => {
                issues.push(Issue::value(
                    keys.path_of("publish"),
                    unknown_choice("publish mode", other, &["on_change", "every_poll"]),
                ));
                None
            }
        },
    );
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

    let build = || {
        Some(PointConfig {
            name: name?,
            table: table?,
            address: footprint?.first,
            data_type: data_type?,
            scale: scale?,
            offset: offset?,
            qos: qos?,
            retain: retain?,
            publish: publish?,
            deadband: deadband?,
        })
    };
    (build(), footprint)
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
    for (later, (_, footprint)) in checked.iter().enumerate() {
        let Some(footprint) = footprint else { continue };
        let earlier = checked[..later]
            .iter()
            .enumerate()
            .find_map(|(index, (_, other))| {
                other
                    .filter(|other| other.overlaps(footprint))
                    .map(|other| (index, other))
            });
        let Some((index, other)) = earlier else {
            continue;
        };
        let (Some(point), Some(first)) = (points.get(later), points.get(index)) else {
            continue;
        };
        issues.push(
            Issue::value(
                point.keys.path_of("address"),
                format!(
                    "{} ({}) overlaps {}",
                    label(later),
                    footprint.describe(),
                    label(index)
                ),
            )
            .with_note(
                first.keys.path.clone(),
                format!("{}, defined", other.describe()),
            ),
        );
    }
}

/// Reports the second and later uses of a name, pointing back at the first.
fn check_unique<'a>(
    what: &str,
    items: impl Iterator<Item = (&'a Option<String>, &'a Keys)>,
    issues: &mut Vec<Issue>,
) {
    let mut first: HashMap<&str, KeyPath> = HashMap::new();
    for (name, keys) in items {
        let Some(name) = name.as_deref() else {
            continue;
        };
        let path = keys.path_of("name");
        match first.get(name) {
            Some(first_path) => issues.push(
                Issue::value(path, format!("duplicate {what} name {name:?}"))
                    .with_note(first_path.clone(), "first defined"),
            ),
            None => {
                first.insert(name, path);
            }
        }
    }
}

/// A required key's value. Reports it as missing, or as empty when written without a value,
/// unless the value was already refused by the decoder.
fn require<'a, T>(
    keys: &Keys,
    key: &str,
    value: &'a Option<T>,
    issues: &mut Vec<Issue>,
) -> Option<&'a T> {
    if value.is_none() && !keys.rejected.contains(key) {
        if keys.present.contains(key) {
            issues.push(Issue::key(keys.path_of(key), "a value is required"));
        } else {
            issues.push(Issue::missing(keys.path_of(key), "missing required key"));
        }
    }
    value.as_ref()
}

/// An optional key's value or its default; `None` if the written value was refused, so later
/// checks do not run on a default the user did not ask for.
pub(super) fn optional<T>(keys: &Keys, key: &str, value: Option<T>, default: T) -> Option<T> {
    if keys.rejected.contains(key) {
        None
    } else {
        Some(value.unwrap_or(default))
    }
}

/// A required name or id: `[A-Za-z0-9_-]+`, at most `max_len` characters. These end up in MQTT
/// topics and client ids, where `/`, `+`, `#` and spaces would break or widen subscriptions.
fn identifier(
    keys: &Keys,
    key: &str,
    value: &Option<String>,
    max_len: Option<usize>,
    issues: &mut Vec<Issue>,
) -> Option<String> {
    let value = require(keys, key, value, issues)?;
    if !is_identifier(value) {
        issues.push(Issue::value(
            keys.path_of(key),
            format!("invalid {key} {value:?}: use only letters, digits, \"_\" and \"-\""),
        ));
        return None;
    }
    if let Some(max_len) = max_len.filter(|max| value.len() > *max) {
        issues.push(Issue::value(
            keys.path_of(key),
            format!("must be at most {max_len} characters, got {}", value.len()),
        ));
        return None;
    }
    Some(value.clone())
}

fn is_identifier(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn in_range(
    keys: &Keys,
    key: &str,
    value: i64,
    min: i64,
    max: i64,
    issues: &mut Vec<Issue>,
) -> Option<i64> {
    if (min..=max).contains(&value) {
        Some(value)
    } else {
        issues.push(Issue::value(
            keys.path_of(key),
            format!("must be between {min} and {max}, got {value}"),
        ));
        None
    }
}

fn port_number(keys: &Keys, key: &str, value: i64, issues: &mut Vec<Issue>) -> Option<u16> {
    in_range(keys, key, value, 1, 65_535, issues).and_then(|port| u16::try_from(port).ok())
}

pub(super) fn positive(
    keys: &Keys,
    key: &str,
    value: Duration,
    issues: &mut Vec<Issue>,
) -> Option<Duration> {
    if value.is_zero() {
        issues.push(Issue::value(keys.path_of(key), "must be greater than 0s"));
        None
    } else {
        Some(value)
    }
}

/// `unknown table "holdings": expected coil, discrete_input, input or holding (did you mean
/// "holding"?)`
pub(super) fn unknown_choice(what: &str, value: &str, choices: &[&str]) -> String {
    let expected = match choices.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => choices.join(", "),
    };
    let hint = closest(value, choices)
        .map(|near| format!(" (did you mean {near:?}?)"))
        .unwrap_or_default();
    format!("unknown {what} {value:?}: expected {expected}{hint}")
}

/// Table names as written in the file.
const TABLES: [(&str, Table); 4] = [
    ("coil", Table::Coil),
    ("discrete_input", Table::DiscreteInput),
    ("input", Table::Input),
    ("holding", Table::Holding),
];

/// Type names as written in the file.
const DATA_TYPES: [(&str, DataType); 6] = [
    ("bool", DataType::Bool),
    ("u16", DataType::U16),
    ("i16", DataType::I16),
    ("u32", DataType::U32),
    ("i32", DataType::I32),
    ("f32", DataType::F32),
];

fn parse_table(text: &str) -> Option<Table> {
    TABLES
        .iter()
        .find(|(name, _)| *name == text)
        .map(|(_, table)| *table)
}

fn table_name(table: Table) -> &'static str {
    TABLES
        .iter()
        .find(|(_, t)| *t == table)
        .map_or("table", |(name, _)| name)
}

fn parse_data_type(text: &str) -> Option<DataType> {
    DATA_TYPES
        .iter()
        .find(|(name, _)| *name == text)
        .map(|(_, data_type)| *data_type)
}

fn data_type_name(data_type: DataType) -> &'static str {
    DATA_TYPES
        .iter()
        .find(|(_, t)| *t == data_type)
        .map_or("type", |(name, _)| name)
}

/// Why an `uplink.url` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum UrlError {
    #[error("invalid url {url:?}: {reason}")]
    Invalid { url: String, reason: &'static str },
}

/// Splits `mqtt://host[:port]` or `mqtts://host[:port]` into host, port (1883 or 8883 by
/// default) and whether TLS is wanted. IPv6 addresses go in
/// brackets (`mqtt://[::1]:1883`) and are returned without them, as `TcpStream::connect((host,
/// port))` wants. The scheme is case-insensitive; paths, queries and credentials are refused
/// rather than ignored, so nothing in the url is silently dropped.
pub(crate) fn parse_mqtt_url(url: &str) -> Result<(String, u16, bool), UrlError> {
    let invalid = |reason| UrlError::Invalid {
        url: url.to_owned(),
        reason,
    };
    let scheme_end = url
        .find("://")
        .ok_or(invalid("expected mqtt://host[:port]"))?;
    let (scheme, rest) = (&url[..scheme_end], &url[scheme_end + 3..]);
    let tls = scheme.eq_ignore_ascii_case("mqtts");
    if !tls && !scheme.eq_ignore_ascii_case("mqtt") {
        return Err(invalid(
            "expected mqtt://host[:port] or mqtts://host[:port]",
        ));
    }
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains(['/', '?', '#', '@']) {
        return Err(invalid(
            "paths, queries and credentials are not supported: expected mqtt://host[:port]",
        ));
    }
    let (host, port) = if let Some(bracketed) = rest.strip_prefix('[') {
        let (address, tail) = bracketed
            .split_once(']')
            .ok_or(invalid("unclosed \"[\" around an ipv6 address"))?;
        if address.parse::<Ipv6Addr>().is_err() {
            return Err(invalid("invalid ipv6 address in brackets"));
        }
        let port = match tail {
            "" => None,
            tail => Some(
                tail.strip_prefix(':')
                    .ok_or(invalid("expected mqtt://host[:port]"))?,
            ),
        };
        (address, port)
    } else {
        let (host, port) = match rest.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (rest, None),
        };
        if port.is_some_and(|port| port.contains(':')) {
            return Err(invalid(
                "ipv6 addresses must be in brackets, e.g. mqtt://[::1]:1883",
            ));
        }
        if host.is_empty() {
            return Err(invalid("the host is missing"));
        }
        if !is_host(host) {
            return Err(invalid("the host is not a valid host name or ip address"));
        }
        (host, port)
    };
    let port = match port {
        None if tls => DEFAULT_MQTTS_PORT,
        None => DEFAULT_MQTT_PORT,
        Some(port) => port
            .parse::<u16>()
            .ok()
            .filter(|port| *port != 0)
            .ok_or(invalid("the port must be a number between 1 and 65535"))?,
    };
    Ok((host.to_owned(), port, tls))
}

/// An IP address, or a DNS name: dot-separated labels of letters, digits, `-` and `_` (not
/// strictly DNS, but common in container and lab networks), with an optional final dot.
fn is_host(text: &str) -> bool {
    if text.parse::<IpAddr>().is_ok() {
        return true;
    }
    let name = text.strip_suffix('.').unwrap_or(text);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// Why a topic prefix cannot be used, or `None` if it can.
fn topic_prefix_problem(prefix: &str) -> Option<&'static str> {
    if prefix.is_empty() {
        Some("must not be empty")
    } else if prefix.contains(['+', '#']) {
        Some("must not contain the mqtt wildcards + or #")
    } else if prefix.starts_with('/') || prefix.ends_with('/') {
        Some("must not start or end with /")
    } else if prefix.contains('\0') {
        Some("must not contain a nul character")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load_str;

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
                table: Table::Holding,
                address: 10,
                data_type: DataType::F32,
                scale: 1.0,
                offset: 0.0,
                qos: Qos::AtLeastOnce,
                retain: false,
                publish: PublishMode::OnChange,
                deadband: 0.0,
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
            (point.scale, point.offset, point.deadband),
            (0.1, -40.0, 0.5)
        );
        assert_eq!(point.qos, Qos::ExactlyOnce);
        assert!(point.retain);
        assert_eq!(point.publish, PublishMode::EveryPoll);
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
    fn parses_mqtt_urls() {
        let ok = |url: &str| parse_mqtt_url(url).unwrap();
        assert_eq!(
            ok("mqtt://127.0.0.1:1883"),
            ("127.0.0.1".to_owned(), 1883, false)
        );
        assert_eq!(ok("mqtt://broker"), ("broker".to_owned(), 1883, false));
        assert_eq!(ok("mqtts://broker"), ("broker".to_owned(), 8883, true));
        assert_eq!(ok("MQTTS://broker:443"), ("broker".to_owned(), 443, true));
        assert_eq!(
            ok("mqtt://broker.example.com:8883/"),
            ("broker.example.com".to_owned(), 8883, false)
        );
        assert_eq!(ok("mqtt://[fe80::1]"), ("fe80::1".to_owned(), 1883, false));
        assert_eq!(ok("Mqtt://[::1]:1"), ("::1".to_owned(), 1, false));
        for bad in [
            "broker:1883",
            "tcp://broker",
            "mqtt://",
            "mqtt://:1883",
            "mqtt://b:0",
            "mqtt://b:65536",
            "mqtt://b:",
            "mqtt://b:x",
            "mqtt://::1",
            "mqtt://[::1",
            "mqtt://[nope]:1",
            "mqtt://[::1]x",
            "mqtt://user:pw@b",
            "mqtt://b/topic",
            "mqtt://b?x=1",
            "mqtt://b c",
            "mqtt://b..c",
        ] {
            assert!(
                matches!(parse_mqtt_url(bad), Err(UrlError::Invalid { .. })),
                "{bad:?} gave {:?}",
                parse_mqtt_url(bad)
            );
        }
        assert_eq!(
            parse_mqtt_url("tcp://b").unwrap_err().to_string(),
            r#"invalid url "tcp://b": expected mqtt://host[:port] or mqtts://host[:port]"#
        );
    }

    #[test]
    fn bus_rules() {
        assert_eq!(
            errors(&with(&[("    type: tcp\n", "    type: rtu\n")])),
            ["8:11: buses[0].type: bus type `rtu` is not supported yet"]
        );
        assert_eq!(
            errors(&with(&[("    type: tcp\n", "    type: rtu_over_tcp\n")])),
            ["8:11: buses[0].type: bus type `rtu_over_tcp` is not supported yet"]
        );
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
            [r#"8:11: buses[0].type: unknown bus type "udp": expected tcp"#]
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
    fn point_rules() {
        let point = |lines: &str| errors(&with(&[("        type: f32\n", lines)]));
        assert_eq!(
            point("        type: f64\n"),
            [
                r#"17:15: devices[0].points[0].type: unknown type "f64": expected bool, u16, i16, u32, i32 or f32"#
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
