//! Per-device metrics, labelled `bus` and `device`: the counters and health every bus owner
//! keeps ([`crate::modbus::DeviceCounters`], [`crate::modbus::DeviceHealth`]), read at scrape
//! time from the bus handles that run *now* — after a reload, the new set (a restarted bus
//! starts its counters at zero, which Prometheus' `rate()` reads as a counter reset).

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;
use tokio::sync::watch;

use super::encode::{counter_families, family, histogram};
use crate::modbus::{BusHandle, CounterSnapshot, DurationSnapshot};

/// Reads the devices of the running bus owners.
#[derive(Debug)]
pub struct DeviceCollector {
    buses: watch::Receiver<Arc<[BusHandle]>>,
}

impl DeviceCollector {
    pub fn new(buses: watch::Receiver<Arc<[BusHandle]>>) -> DeviceCollector {
        DeviceCollector { buses }
    }
}

/// One device at scrape time.
struct Row {
    counters: CounterSnapshot,
    durations: DurationSnapshot,
    online: bool,
    consecutive_failures: u32,
}

type Labels = [(&'static str, String); 2];

/// A counter exported: name, help, and the field it reads.
type CounterField = (&'static str, &'static str, fn(&CounterSnapshot) -> u64);

const COUNTERS: [CounterField; 8] = [
    (
        "fieldrelay_device_requests",
        "Requests put on the wire to the device (reads and writes)",
        |c| c.requests,
    ),
    (
        "fieldrelay_device_timeouts",
        "Requests the device did not answer within the bus timeout",
        |c| c.timeouts,
    ),
    (
        "fieldrelay_device_exceptions",
        "Modbus exception replies (the device answers; the points of that read are bad)",
        |c| c.exceptions,
    ),
    (
        "fieldrelay_device_crc_errors",
        "Replies with a bad CRC (RTU)",
        |c| c.crc_errors,
    ),
    (
        "fieldrelay_device_errors",
        "Other transport or protocol failures (connection refused or reset, malformed reply)",
        |c| c.errors,
    ),
    (
        "fieldrelay_device_stale_replies",
        "Late replies to earlier requests that were discarded (RTU)",
        |c| c.stale_replies,
    ),
    (
        "fieldrelay_device_decode_errors",
        "Point values that could not be decoded (NaN, non-ASCII text)",
        |c| c.decode_errors,
    ),
    (
        "fieldrelay_device_garbage_lines",
        "serial_line: lines that matched no point or did not parse",
        |c| c.garbage_lines,
    ),
];

impl Collector for DeviceCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // Clone the set and release the watch at once: the reload task may be swapping it.
        let buses = self.buses.borrow().clone();
        let rows: Vec<(Labels, Row)> = buses
            .iter()
            .flat_map(|bus| {
                bus.devices().iter().map(|device| {
                    let health = device.health.borrow().clone();
                    let labels = [
                        ("bus", bus.bus.to_string()),
                        ("device", device.config.name.clone()),
                    ];
                    let row = Row {
                        counters: device.counters.snapshot(),
                        durations: device.counters.poll_durations.snapshot(),
                        online: health.online,
                        consecutive_failures: health.consecutive_failures,
                    };
                    (labels, row)
                })
            })
            .collect();

        family(
            &mut encoder,
            "fieldrelay_device_online",
            "1 while the device answers (its last poll succeeded, or it was not polled yet), 0 after a failed poll",
            MetricType::Gauge,
            &rows,
            |m, row| m.encode_gauge(&i64::from(row.online)),
        )?;
        family(
            &mut encoder,
            "fieldrelay_device_consecutive_failures",
            "Failed polls since the last successful one",
            MetricType::Gauge,
            &rows,
            |m, row| m.encode_gauge(&row.consecutive_failures),
        )?;
        family(
            &mut encoder,
            "fieldrelay_device_last_success_timestamp_seconds",
            "Unix time of the last fully successful poll; 0 if none yet",
            MetricType::Gauge,
            &rows,
            |m, row| m.encode_gauge(&(row.counters.last_success_ms as f64 / 1000.0)),
        )?;
        counter_families(&mut encoder, &COUNTERS, &rows, |field, row| {
            field(&row.counters)
        })?;
        family(
            &mut encoder,
            "fieldrelay_device_poll_duration_seconds",
            "Duration of successful polls: every read of the device, first request to last reply",
            MetricType::Histogram,
            &rows,
            |m, row| histogram(m, &row.durations),
        )
    }
}
