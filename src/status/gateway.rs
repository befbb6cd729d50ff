//! The gateway's status certificates on `P/status` (pure): the birth after every connect and the
//! death (Last Will, graceful shutdown).
//!
//! - Birth, retained, QoS 1:
//!   `{"status":"online","ts":…,"version":"…","started":…,"devices":[{"name":"boiler","bus":"plc1",
//!   "points":[{"name":"setpoint","type":"f32","unit":"°C","writable":true,"min":5.0,"max":90.0}]}]}`.
//!   `ts` is the connect time, `started` the process start: a birth with a new `ts` and the same
//!   `started` is a reconnect, a new `started` a restart. `devices` is the configured map in file
//!   order, as it runs now (a reload that changes it republishes the birth); `unit`, `writable`,
//!   `min` and `max` appear only when set. `config` (`{"hash":…,"id":…}`, [`ConfigStamp`]) says
//!   which configuration file runs; it is left out when the file could not be read.
//! - Death, retained, QoS 1: `{"status":"offline","ts":…,"version":"…","reason":"shutdown"}`
//!   (graceful) or `"reason":"connection_lost"` (the Last Will, whose `ts` is the time the
//!   connection was made: the broker publishes it later without changing it). With
//!   `uplink.status.offline: clear` the death is an empty retained payload instead, which
//!   deletes the retained status.

use bytes::Bytes;
use serde::Serialize;

use super::stamp::ConfigStamp;
use crate::config::{data_type_name, DeviceConfig, OfflineStatus};

/// Version reported in the certificates.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// What the birth certificate says about the gateway.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GatewayInfo {
    pub version: &'static str,
    /// When the process started (ms since the Unix epoch).
    pub started: i64,
    pub devices: Vec<DeviceInfo>,
    /// The running configuration file's hash and the push that wrote it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config: Option<ConfigStamp>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeviceInfo {
    pub name: String,
    pub bus: String,
    pub points: Vec<PointInfo>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PointInfo {
    pub name: String,
    #[serde(rename = "type")]
    pub data_type: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub writable: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
}

impl GatewayInfo {
    /// The gateway with `devices`, in the order given.
    pub fn new<'a>(started: i64, devices: impl IntoIterator<Item = &'a DeviceConfig>) -> Self {
        GatewayInfo {
            version: VERSION,
            started,
            devices: devices
                .into_iter()
                .map(|device| DeviceInfo {
                    name: device.name.clone(),
                    bus: device.bus.clone(),
                    points: device
                        .points
                        .iter()
                        .map(|point| PointInfo {
                            name: point.name.clone(),
                            data_type: data_type_name(point.data_type),
                            unit: point.unit.clone(),
                            writable: point.write.is_some(),
                            min: point.write.and_then(|w| w.min),
                            max: point.write.and_then(|w| w.max),
                        })
                        .collect(),
                })
                .collect(),
            config: None,
        }
    }

    /// The birth certificate, connected at `ts_ms`.
    pub fn birth(&self, ts_ms: i64) -> Bytes {
        #[derive(Serialize)]
        struct Birth<'a> {
            status: &'static str,
            ts: i64,
            #[serde(flatten)]
            info: &'a GatewayInfo,
        }
        let birth = Birth {
            status: "online",
            ts: ts_ms,
            info: self,
        };
        // Serialising plain data (strings, finite numbers from a validated config) cannot fail;
        // should it, the v1 birth without the device map is still a valid certificate.
        serde_json::to_vec(&birth)
            .map(Bytes::from)
            .unwrap_or_else(|_| {
                Bytes::from(format!(
                    r#"{{"status":"online","ts":{ts_ms},"version":"{VERSION}"}}"#
                ))
            })
    }
}

/// Why the gateway is offline, as told in the death certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OfflineReason {
    /// Graceful shutdown published by the gateway itself.
    Shutdown,
    /// Last Will, published by the broker when the connection dropped without DISCONNECT.
    ConnectionLost,
}

/// The death certificate: a retained offline status, or nothing (which clears it).
pub fn death(ts_ms: i64, reason: OfflineReason, offline: OfflineStatus) -> Bytes {
    if offline == OfflineStatus::Clear {
        return Bytes::new();
    }
    let reason = match reason {
        OfflineReason::Shutdown => "shutdown",
        OfflineReason::ConnectionLost => "connection_lost",
    };
    Bytes::from(format!(
        r#"{{"status":"offline","ts":{ts_ms},"version":"{VERSION}","reason":"{reason}"}}"#
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load_str;
    use serde_json::json;

    fn json(b: &Bytes) -> serde_json::Value {
        serde_json::from_slice(b).unwrap()
    }

    #[test]
    fn birth_lists_devices_and_points_in_file_order() {
        let config = load_str(
            "gateway: {id: gw, data_dir: /d}
uplink: {url: 'mqtt://b'}
buses: [{name: plc1, type: tcp, host: h}]
devices:
  - name: boiler
    bus: plc1
    points:
      - {name: temperature, table: input, address: 0, type: f32, unit: °C}
      - {name: setpoint, table: holding, address: 0, type: f32, writable: true, min: 5, max: 90}
      - {name: run, table: coil, address: 0, type: bool, writable: true}
",
            "c.yaml",
        )
        .unwrap();
        let info = GatewayInfo::new(1_000, &config.devices);
        assert_eq!(
            json(&info.birth(2_000)),
            json!({
                "status": "online", "ts": 2000, "version": VERSION, "started": 1000,
                "devices": [{"name": "boiler", "bus": "plc1", "points": [
                    {"name": "temperature", "type": "f32", "unit": "°C"},
                    {"name": "setpoint", "type": "f32", "writable": true, "min": 5.0, "max": 90.0},
                    {"name": "run", "type": "bool", "writable": true},
                ]}]
            })
        );
    }

    #[test]
    fn death_is_retained_offline_or_empty() {
        let death_json = json(&death(
            6,
            OfflineReason::ConnectionLost,
            OfflineStatus::Retain,
        ));
        assert_eq!(
            death_json,
            json!({"status": "offline", "ts": 6, "version": VERSION, "reason": "connection_lost"})
        );
        assert_eq!(
            json(&death(7, OfflineReason::Shutdown, OfflineStatus::Retain))["reason"],
            "shutdown"
        );
        assert!(death(7, OfflineReason::Shutdown, OfflineStatus::Clear).is_empty());
    }
}
