//! What the pages show, read from what the running parts keep anyway: the queue's progress
//! watch and counters (with its rejected rows held), the uplink's link-state watch and counters, each device's health watch
//! and counters, the console's own value table. Reading costs the parts nothing but a watch
//! borrow or an atomic load; nothing here waits for a part.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::watch;

use super::values::{LatestValues, PointValue};
use crate::modbus::{BusHandle, CounterSnapshot};
use crate::queue::rejected::ByReason;
use crate::queue::{CommandRecord, Queue, QueueReader};
use crate::sample::now_ms;
use crate::uplink::{LinkState, Retrying, UplinkStats};

/// Handles on the running parts.
#[derive(Clone)]
pub struct Parts {
    pub gateway_id: String,
    /// `host:port` of the cloud broker.
    pub broker: String,
    pub started_ms: i64,
    pub queue: Queue,
    pub handles: watch::Receiver<Arc<[BusHandle]>>,
    pub link: watch::Receiver<LinkState>,
    pub uplink: Arc<UplinkStats>,
    /// Where `queue.db` is (the commands page reads it read-only).
    pub data_dir: PathBuf,
}

/// The uplink as the overview shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Link {
    Connected,
    /// Not connected yet, and no attempt failed.
    Connecting,
    /// Down: why, and when it dials again.
    Retrying(Retrying),
}

/// The overview's figures.
#[derive(Debug, Clone, PartialEq)]
pub struct Overview {
    pub gateway_id: String,
    pub version: &'static str,
    pub started_ms: i64,
    pub now_ms: i64,
    pub broker: String,
    pub link: Link,
    /// Rows waiting, their bytes on disk, `store.max_size`, the oldest row's time.
    pub depth: u64,
    pub bytes: u64,
    pub capacity: u64,
    pub oldest_ts_ms: Option<i64>,
    /// Samples given up on, by reason, in the metrics' words.
    pub drops: [(&'static str, u64); 5],
    /// Rows the broker refused for good, held in the queue file, per reason code.
    pub rejected: ByReason,
    /// Devices online, of all.
    pub devices_online: (usize, usize),
    pub inflight: u64,
}

/// A device's state as the status topic would say it, with the steps in between.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceState {
    /// Not polled yet.
    Pending,
    Online,
    /// Failing, not yet `offline_after` polls in a row.
    Failing(u32),
    Offline,
}

impl DeviceState {
    pub fn word(self) -> &'static str {
        match self {
            DeviceState::Pending => "waiting",
            DeviceState::Online => "online",
            DeviceState::Failing(_) => "failing",
            DeviceState::Offline => "offline",
        }
    }
}

/// One device and its points.
#[derive(Debug, Clone, PartialEq)]
pub struct Device {
    pub name: String,
    pub bus: String,
    pub state: DeviceState,
    pub consecutive_failures: u32,
    pub last_error: Option<String>,
    pub counters: CounterSnapshot,
    pub points: Vec<Point>,
}

/// One point and what the console knows of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub name: String,
    pub unit: Option<String>,
    pub value: Option<PointValue>,
}

impl Parts {
    pub fn overview(&self) -> Overview {
        let progress = *self.queue.progress().borrow();
        let stats = self.queue.stats();
        let uplink = self.uplink.snapshot();
        let link = match *self.link.borrow() {
            LinkState::Connected => Link::Connected,
            LinkState::Connecting => match self.uplink.retrying() {
                Some(retrying) => Link::Retrying(retrying),
                None => Link::Connecting,
            },
        };
        let devices = self.devices(None);
        let online = devices
            .iter()
            .filter(|d| d.state == DeviceState::Online)
            .count();
        Overview {
            gateway_id: self.gateway_id.clone(),
            version: env!("CARGO_PKG_VERSION"),
            started_ms: self.started_ms,
            now_ms: now_ms(),
            broker: self.broker.clone(),
            link,
            depth: progress.depth,
            bytes: progress.bytes,
            capacity: self.queue.capacity_bytes(),
            oldest_ts_ms: progress.oldest_ts_ms,
            drops: [
                ("capacity", stats.capacity_dropped),
                ("expired", stats.expired),
                ("commit_failed", stats.commit_dropped),
                ("live_channel_full", stats.live_dropped),
                ("live_discarded", uplink.live_discarded),
            ],
            rejected: self.queue.rejected().held,
            devices_online: (online, devices.len()),
            inflight: uplink.inflight,
        }
    }

    /// Every device of the running fleet, in file order, with its points' values when
    /// `values` is given.
    pub fn devices(&self, values: Option<&LatestValues>) -> Vec<Device> {
        let handles = self.handles.borrow().clone();
        handles
            .iter()
            .flat_map(|handle| {
                handle.devices().iter().map(move |view| {
                    let health = view.health.borrow().clone();
                    let config = &view.config;
                    let state = if !health.answered && health.online {
                        DeviceState::Pending
                    } else if health.consecutive_failures >= config.offline_after {
                        DeviceState::Offline
                    } else if health.consecutive_failures > 0 {
                        DeviceState::Failing(health.consecutive_failures)
                    } else {
                        DeviceState::Online
                    };
                    Device {
                        name: config.name.clone(),
                        bus: handle.bus.to_string(),
                        state,
                        consecutive_failures: health.consecutive_failures,
                        last_error: health.last_error.clone(),
                        counters: view.counters.snapshot(),
                        points: config
                            .points
                            .iter()
                            .map(|point| Point {
                                name: point.name.clone(),
                                unit: point.unit.clone(),
                                value: values.and_then(|v| v.get(&config.name, &point.name)),
                            })
                            .collect(),
                    }
                })
            })
            .collect()
    }

    /// The newest remembered commands (blocking: a read-only SQLite read, off the async threads).
    pub async fn commands(&self, limit: usize) -> Result<Vec<CommandRecord>, String> {
        let dir = self.data_dir.clone();
        tokio::task::spawn_blocking(move || {
            QueueReader::open(&dir)
                .and_then(|reader| reader.recent_commands(limit))
                .map_err(|error| error.to_string())
        })
        .await
        .map_err(|error| error.to_string())?
    }
}
