//! `fieldrelay probe`: read every configured point once and show what came back — the first
//! thing an integrator runs after wiring a device.
//!
//! ```text
//! DEVICE   POINT        RAW            VALUE  UNIT  STATUS
//! boiler   temperature  0x41AC 0x0000  21.5   °C    ok
//! chiller  supply_temp                                error: timed out after 1s
//! ```
//!
//! # Behaviour
//! - Works without a running gateway: each device is read over a fresh connection
//!   ([`crate::modbus::probe`]) with the bus's own timeout, turnaround and read plan, so what
//!   probe sees is what the gateway will see. Devices on one bus are read one after the other
//!   (one request on a wire at a time); different buses in parallel.
//! - A device that does not answer costs one timeout: its first failed request ends its probe,
//!   and every one of its points shows the error. A Modbus exception marks only the points of
//!   that read; a value that does not decode shows its raw registers and the decode error.
//! - `serial_line` instruments have no addresses to read on demand: their points are listed as
//!   skipped (watch `fieldrelay run`'s log or the metrics instead).
//! - The table goes to stdout; a progress bar goes to stderr only when it is a terminal.
//! - [`ProbeReport::all_answered`] is the exit status: every probed point answered with a
//!   value. Skipped points do not count against it.
//!
//! A serial port can have one user: stop the service (`systemctl stop fieldrelay`) before
//! probing an `rtu` bus it owns. A Modbus TCP device usually accepts a second connection.

use std::collections::HashMap;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::{BusConfig, BusKind, Config, DeviceConfig};
use crate::modbus::{self, Exception, ProbeError, ProbedPoint, Response};
use crate::progress::{Display, Progress};

/// How one point fared.
#[derive(Debug, Clone, PartialEq)]
pub enum PointStatus {
    Ok,
    /// The device answered the read with a Modbus exception.
    Exception(Exception),
    /// Registers arrived but do not decode as the point's type.
    DecodeError(String),
    /// The device's probe failed (timeout, connection refused, CRC error, ...).
    DeviceFailed(String),
    /// Not probed, and why.
    Skipped(&'static str),
}

impl PointStatus {
    /// Whether this status makes the probe fail.
    pub fn is_failure(&self) -> bool {
        !matches!(self, PointStatus::Ok | PointStatus::Skipped(_))
    }

    fn text(&self) -> String {
        match self {
            PointStatus::Ok => "ok".to_owned(),
            PointStatus::Exception(exception) => exception.to_string(),
            PointStatus::DecodeError(error) => format!("decode error: {error}"),
            PointStatus::DeviceFailed(error) => format!("error: {error}"),
            PointStatus::Skipped(why) => format!("skipped: {why}"),
        }
    }
}

/// One line of the table.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeRow {
    pub device: String,
    pub point: String,
    /// Registers as hex words, or bits as 0/1; empty when nothing arrived.
    pub raw: String,
    /// The decoded engineering value as it would be published (JSON text); empty if none.
    pub value: String,
    pub unit: String,
    pub status: PointStatus,
    /// When the read failed and the address looks like a Modicon reference: the likely
    /// intended address.
    pub hint: Option<String>,
}

/// Every probed point, in file order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProbeReport {
    pub rows: Vec<ProbeRow>,
}

impl ProbeReport {
    pub fn all_answered(&self) -> bool {
        !self.rows.iter().any(|row| row.status.is_failure())
    }

    /// The aligned table, one line per point, with a header line.
    pub fn table(&self) -> String {
        crate::table::with_header(
            ["DEVICE", "POINT", "RAW", "VALUE", "UNIT", "STATUS"],
            self.rows.iter().map(|row| {
                [
                    row.device.clone(),
                    row.point.clone(),
                    row.raw.clone(),
                    row.value.clone(),
                    row.unit.clone(),
                    row.status.text(),
                ]
            }),
        )
    }

    /// `boiler/setpoint: 40003 looks like the Modicon reference …`, one per failed point whose
    /// address looks like one (printed after the table).
    pub fn hints(&self) -> Vec<String> {
        self.rows
            .iter()
            .filter_map(|row| {
                let hint = row.hint.as_ref()?;
                Some(format!("{}/{}: {hint}", row.device, row.point))
            })
            .collect()
    }

    /// `7 points: 5 ok, 1 failed, 1 skipped`.
    pub fn summary(&self) -> String {
        let count = |f: fn(&PointStatus) -> bool| self.rows.iter().filter(|r| f(&r.status)).count();
        format!(
            "{} points: {} ok, {} failed, {} skipped",
            self.rows.len(),
            count(|s| *s == PointStatus::Ok),
            count(PointStatus::is_failure),
            count(|s| matches!(s, PointStatus::Skipped(_))),
        )
    }
}

/// Why a probe could not run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeRunError {
    #[error("unknown device {name:?} (the configuration has: {known})")]
    UnknownDevice { name: String, known: String },
    #[error("interrupted")]
    Interrupted,
}

/// Raw data as shown: `0x41AC 0x0000`, or `1`/`0` per bit.
fn raw_text(response: &Response) -> String {
    match response {
        Response::Words(words) => words
            .iter()
            .map(|w| format!("0x{w:04X}"))
            .collect::<Vec<_>>()
            .join(" "),
        Response::Bits(bits) => bits
            .iter()
            .map(|&b| if b { "1" } else { "0" })
            .collect::<Vec<_>>()
            .join(" "),
        Response::Written => String::new(),
    }
}

/// The rows of one device from its probe result (pure), in the device's point order.
pub fn device_rows(
    device: &DeviceConfig,
    result: &Result<Vec<ProbedPoint>, PointStatus>,
) -> Vec<ProbeRow> {
    device
        .points
        .iter()
        .map(|point| {
            let mut row = ProbeRow {
                device: device.name.clone(),
                point: point.name.clone(),
                raw: String::new(),
                value: String::new(),
                unit: point.unit.clone().unwrap_or_default(),
                status: PointStatus::Ok,
                hint: None,
            };
            let read_failed = |status: &PointStatus| {
                matches!(
                    status,
                    PointStatus::Exception(_) | PointStatus::DeviceFailed(_)
                )
            };
            let hint = || {
                let source = point.modbus()?;
                crate::config::modicon_hint(Some(source.table), i64::from(source.address))
            };
            let probed = match result {
                Ok(probed) => probed.iter().find(|p| p.point == point.name),
                Err(status) => {
                    row.status = status.clone();
                    row.hint = hint().filter(|_| read_failed(status));
                    return row;
                }
            };
            match probed.map(|p| &p.result) {
                Some(Ok((raw, Ok(value)))) => {
                    row.raw = raw_text(raw);
                    row.value = value.to_json();
                }
                Some(Ok((raw, Err(error)))) => {
                    row.raw = raw_text(raw);
                    row.status = PointStatus::DecodeError(error.to_string());
                }
                Some(Err(exception)) => {
                    row.status = PointStatus::Exception(*exception);
                    row.hint = hint();
                }
                None => row.status = PointStatus::DeviceFailed("not read".to_owned()),
            }
            row
        })
        .collect()
}

/// Progress events from the bus tasks.
enum Event {
    Started(String),
    Done { points: u64, device: String },
}

/// Probes the devices of `config` (those named in `only`, or all when it is empty).
pub async fn run(
    config: &Config,
    only: &[String],
    display: Display,
    cancel: CancellationToken,
) -> Result<ProbeReport, ProbeRunError> {
    for name in only {
        if !config.devices.iter().any(|d| d.name == *name) {
            let known: Vec<&str> = config.devices.iter().map(|d| d.name.as_str()).collect();
            return Err(ProbeRunError::UnknownDevice {
                name: name.clone(),
                known: known.join(", "),
            });
        }
    }
    let selected: Vec<&DeviceConfig> = config
        .devices
        .iter()
        .filter(|d| only.is_empty() || only.contains(&d.name))
        .collect();
    let total = selected.iter().map(|d| d.points.len() as u64).sum();
    let mut progress = Progress::new(display, "points", total);

    let (events, mut rx) = mpsc::unbounded_channel();
    let mut buses = JoinSet::new();
    for bus in &config.buses {
        let devices: Vec<DeviceConfig> = selected
            .iter()
            .filter(|d| d.bus == bus.name)
            .map(|d| (*d).clone())
            .collect();
        if !devices.is_empty() {
            buses.spawn(probe_bus(bus.clone(), devices, events.clone()));
        }
    }
    drop(events);
    loop {
        tokio::select! {
            () = cancel.cancelled() => {
                buses.abort_all();
                return Err(ProbeRunError::Interrupted);
            }
            event = rx.recv() => match event {
                Some(Event::Started(device)) => progress.working_on(&device),
                Some(Event::Done { points, device }) => progress.advance(points, &device),
                None => break,
            },
        }
    }
    progress.finish();

    let mut results: HashMap<String, Result<Vec<ProbedPoint>, PointStatus>> = HashMap::new();
    while let Some(joined) = buses.join_next().await {
        // A bus task ends only by returning (it cannot panic on device input); if it did, its
        // devices have no result and show "not probed" below.
        if let Ok(bus_results) = joined {
            results.extend(bus_results);
        }
    }
    let rows = selected
        .iter()
        .flat_map(|device| {
            let result = results
                .remove(&device.name)
                .unwrap_or_else(|| Err(PointStatus::DeviceFailed("not probed".to_owned())));
            device_rows(device, &result)
        })
        .collect();
    Ok(ProbeReport { rows })
}

/// Probes the devices of one bus one after the other.
async fn probe_bus(
    bus: BusConfig,
    devices: Vec<DeviceConfig>,
    events: mpsc::UnboundedSender<Event>,
) -> Vec<(String, Result<Vec<ProbedPoint>, PointStatus>)> {
    let mut results = Vec::with_capacity(devices.len());
    for device in devices {
        let _ = events.send(Event::Started(device.name.clone()));
        let result = match bus.kind {
            BusKind::SerialLine { .. } => Err(PointStatus::Skipped("serial_line instrument")),
            _ => modbus::probe(&bus, &device)
                .await
                .map_err(|error| match error {
                    ProbeError::Failed(message) => PointStatus::DeviceFailed(message),
                    other => PointStatus::DeviceFailed(other.to_string()),
                }),
        };
        let _ = events.send(Event::Done {
            points: device.points.len() as u64,
            device: device.name.clone(),
        });
        results.push((device.name, result));
    }
    results
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load_str;
    use crate::modbus::decode::DecodeError;
    use crate::sample::Value;

    /// The device `boiler` with these points (YAML list items).
    fn device_with(points: &str) -> DeviceConfig {
        let text = format!(
            "gateway: {{id: gw, data_dir: /d}}\nuplink: {{url: 'mqtt://b'}}\n\
             buses: [{{name: plc1, type: tcp, host: h}}]\n\
             devices:\n  - name: boiler\n    bus: plc1\n    points:\n{points}"
        );
        load_str(&text, "c.yaml").unwrap().devices.remove(0)
    }

    fn device() -> DeviceConfig {
        device_with(
            "      - {name: temperature, table: holding, address: 0, type: f32, unit: °C}
      - {name: pump, table: coil, address: 0, type: bool}
      - {name: level, table: input, address: 0, type: f32, unit: m}
",
        )
    }

    #[test]
    fn rows_show_raw_data_values_and_per_point_problems() {
        let probed = vec![
            ProbedPoint {
                point: "pump".into(),
                result: Ok((Response::Bits(vec![true]), Ok(Value::Bool(true)))),
            },
            ProbedPoint {
                point: "temperature".into(),
                result: Ok((Response::Words(vec![0x41AC, 0]), Ok(Value::Float(21.5)))),
            },
            ProbedPoint {
                point: "level".into(),
                result: Ok((
                    Response::Words(vec![0x7FC0, 0]),
                    Err(DecodeError::NotFinite),
                )),
            },
        ];
        let report = ProbeReport {
            rows: device_rows(&device(), &Ok(probed)),
        };
        assert_eq!(
            report.table(),
            "\
DEVICE  POINT        RAW            VALUE  UNIT  STATUS
boiler  temperature  0x41AC 0x0000  21.5   °C    ok
boiler  pump         1              true         ok
boiler  level        0x7FC0 0x0000         m     decode error: decoded value is not finite
"
        );
        assert!(!report.all_answered());
        assert_eq!(report.summary(), "3 points: 2 ok, 1 failed, 0 skipped");
    }

    #[test]
    fn a_failed_device_shows_its_error_on_every_point() {
        let failed = Err(PointStatus::DeviceFailed("timed out after 1s".into()));
        let rows = device_rows(&device(), &failed);
        assert_eq!(rows.len(), 3);
        assert!(rows
            .iter()
            .all(|r| r.status.text() == "error: timed out after 1s" && r.raw.is_empty()));
        let exception = Ok(vec![ProbedPoint {
            point: "pump".into(),
            result: Err(Exception(2)),
        }]);
        let rows = device_rows(&device(), &exception);
        assert_eq!(
            rows[1].status.text(),
            "modbus exception 2 (illegal data address)"
        );
        assert_eq!(rows[0].status.text(), "error: not read");
    }

    /// A failed read at an address that looks like a Modicon reference says which address was
    /// probably meant; a successful one does not second-guess it.
    #[test]
    fn a_failed_read_at_a_modicon_reference_gets_a_hint() {
        let device = device_with(
            "      - {name: setpoint, table: holding, address: 40003, type: u16}
      - {name: level, table: input, address: 30002, type: u16}
",
        );
        let probed = Ok(vec![
            ProbedPoint {
                point: "setpoint".into(),
                result: Err(Exception(2)),
            },
            ProbedPoint {
                point: "level".into(),
                result: Ok((Response::Words(vec![7]), Ok(Value::Int(7)))),
            },
        ]);
        let report = ProbeReport {
            rows: device_rows(&device, &probed),
        };
        assert_eq!(
            report.hints(),
            [
                "boiler/setpoint: 40003 looks like the Modicon reference 40003 (holding registers \
              count from 40001): did you mean address: 2? (keep 40003 if the device's manual \
              gives it as the 0-based protocol address)"
            ]
        );
        let timed_out = device_rows(&device, &Err(PointStatus::DeviceFailed("timed out".into())));
        assert_eq!(timed_out.iter().filter(|r| r.hint.is_some()).count(), 2);
    }

    #[test]
    fn skipped_points_do_not_fail_the_probe() {
        let rows = device_rows(
            &device(),
            &Err(PointStatus::Skipped("serial_line instrument")),
        );
        let report = ProbeReport { rows };
        assert!(report.all_answered());
        assert_eq!(report.summary(), "3 points: 0 ok, 0 failed, 3 skipped");
    }
}
