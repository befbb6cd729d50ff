//! The status task (I/O): follows the running bus owners, turns their devices' health into
//! `P/<device>/status` messages, keeps the birth's device map current, and builds the health
//! report every `uplink.health_interval`, handing it to the uplink when what it says about
//! problems changed ([`HealthReport::signature`]) or `uplink.health_heartbeat` passed since the
//! last one (a healthy gateway costs one report per heartbeat on a metered link).
//!
//! # Design
//! - **Follows reloads.** The fleet publishes the running [`BusHandle`]s on a watch and replaces
//!   them as a whole after a SIGHUP. For each device of the current set a small forwarder task
//!   waits on its health watch and sends every change here, tagged with the generation of the
//!   set; changes from an older generation (a stopped owner's last words) are ignored. What was
//!   reported is kept by device name across generations, so a bus restarted by a reload does not
//!   announce its devices again (a removed device is forgotten; if it comes back it reports
//!   anew).
//! - **Durable device status.** A transition ([`DeviceStatus::observe`]) is pushed to the queue as
//!   a retained QoS 1 [`MessageKind::DeviceStatus`] row: it reaches the broker after a WAN
//!   outage, in commit order with the samples around it. The push waits for the queue (as a
//!   poller's does), never longer than shutdown.
//! - **Health is best effort.** The report is handed to the uplink with `try_send` on a channel
//!   of one: while the link is down, or the last report was not taken yet, it is dropped, and
//!   the next one is fresh. The oldest row's age comes from the queue's progress watch and the
//!   rejected rows from its counters, so a stuck disk never delays the report.
//!
//! Shutdown: every wait selects on the token; the forwarders stop with the task.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::device::{DeviceStatus, Transition};
use super::gateway::GatewayInfo;
use super::health::{is_due, DeviceReport, HealthReport, Signature};
use super::stamp::ConfigStamp;
use crate::config::Qos;
use crate::modbus::{BusHandle, DeviceHealth};
use crate::queue::{Message, MessageKind, Queue};
use crate::sample::now_ms;

/// Where device statuses go besides the queue (the on-site broker): a retained,
/// non-durable copy, offered without waiting.
pub trait StatusSink: Send + Sync + 'static {
    fn device_status(&self, device: &str, payload: &str);
}

/// How many broker connections the uplink made since start (the health report's reconnects),
/// asked at each report. A closure rather than the uplink's counters: the status task sits below
/// the uplink, which publishes its certificates.
pub type Connections = Box<dyn Fn() -> u64 + Send + Sync>;

/// The status task's inputs and outputs.
pub struct Monitor {
    pub queue: Queue,
    pub handles: watch::Receiver<Arc<[BusHandle]>>,
    /// The birth's device map, kept current.
    pub gateway: watch::Sender<Arc<GatewayInfo>>,
    /// Health report payloads for the uplink (`P/health`).
    pub health: mpsc::Sender<Bytes>,
    pub health_interval: Duration,
    /// Longest time between two reports that say the same.
    pub health_heartbeat: Duration,
    /// Connections the uplink made (for the report's reconnects).
    pub connections: Connections,
    pub started_ms: i64,
    /// Optional copy of every device status (the on-site broker).
    pub local: Option<Box<dyn StatusSink>>,
    /// Which configuration runs, for the birth and the report; changed by reloads and pushes.
    pub config: watch::Receiver<Option<ConfigStamp>>,
}

/// One device's health, from a forwarder.
struct Observed {
    generation: u64,
    device: Arc<str>,
    offline_after: u32,
    health: DeviceHealth,
}

/// The birth's device map for the running `handles` (buses in file order, their devices in file
/// order).
pub fn gateway_info(started_ms: i64, handles: &[BusHandle]) -> GatewayInfo {
    GatewayInfo::new(
        started_ms,
        handles
            .iter()
            .flat_map(|handle| handle.devices().iter().map(|view| &view.config)),
    )
}

impl Monitor {
    /// Runs until `cancel` fires.
    pub async fn run(mut self, cancel: CancellationToken) {
        let (tx, mut rx) = mpsc::unbounded_channel::<Observed>();
        let mut generation = 0u64;
        let mut forwarders = cancel.child_token();
        let current = self.handles.borrow_and_update().clone();
        spawn_forwarders(&current, generation, &tx, &forwarders);
        self.refresh_info(&current);
        // Without a sender (tests, or one dropped) the stamp stays what it is.
        let mut stamps = true;
        let mut reported: HashMap<Arc<str>, DeviceStatus> = HashMap::new();
        let start = tokio::time::Instant::now() + self.health_interval;
        let mut tick = tokio::time::interval_at(start, self.health_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The signature of the last report handed over, and when.
        let mut last: Option<(Signature, tokio::time::Instant)> = None;
        loop {
            tokio::select! {
                biased;
                () = cancel.cancelled() => break,
                changed = self.handles.changed() => {
                    if changed.is_err() {
                        // The fleet is gone: only at shutdown.
                        break;
                    }
                    let handles = self.handles.borrow_and_update().clone();
                    forwarders.cancel();
                    forwarders = cancel.child_token();
                    generation += 1;
                    spawn_forwarders(&handles, generation, &tx, &forwarders);
                    let names: Vec<&str> = handles
                        .iter()
                        .flat_map(|h| h.devices().iter().map(|d| d.config.name.as_str()))
                        .collect();
                    reported.retain(|name, _| names.contains(&&**name));
                    self.refresh_info(&handles);
                }
                changed = self.config.changed(), if stamps => {
                    if changed.is_err() {
                        stamps = false;
                        continue;
                    }
                    let handles = self.handles.borrow().clone();
                    self.refresh_info(&handles);
                }
                Some(observed) = rx.recv() => {
                    if observed.generation != generation {
                        continue;
                    }
                    let status = reported.entry(observed.device.clone()).or_default();
                    if let Some(transition) = status.observe(&observed.health, observed.offline_after) {
                        tokio::select! {
                            () = self.publish(&observed.device, &transition) => {}
                            () = cancel.cancelled() => break,
                        }
                    }
                }
                _ = tick.tick() => {
                    let report = tokio::select! {
                        report = self.report(&reported) => report,
                        () = cancel.cancelled() => break,
                    };
                    let signature = report.signature();
                    let now = tokio::time::Instant::now();
                    let said = last.as_ref().map(|(said, at)| (said, now.duration_since(*at)));
                    if !is_due(said, &signature, self.health_heartbeat) {
                        continue;
                    }
                    if self.health.try_send(report.payload()).is_ok() {
                        last = Some((signature, now));
                    } else {
                        debug!("health report dropped: the uplink did not take the last one (link down)");
                    }
                }
            }
        }
        forwarders.cancel();
    }

    /// The birth's info for `handles` and the running configuration; republished if it changed.
    fn refresh_info(&mut self, handles: &[BusHandle]) {
        let mut info = gateway_info(self.started_ms, handles);
        info.config = self.config.borrow_and_update().clone();
        self.gateway.send_if_modified(|current| {
            let changed = **current != info;
            if changed {
                *current = Arc::new(info);
            }
            changed
        });
    }

    async fn publish(&self, device: &Arc<str>, transition: &Transition) {
        let ts_ms = now_ms();
        let payload = transition.payload(ts_ms);
        match transition.state {
            super::device::DeviceState::Online => info!(%device, "device status: online"),
            super::device::DeviceState::Offline => {
                let error = transition.error.as_deref().unwrap_or("no answer");
                warn!(%device, %error, "device status: offline")
            }
        }
        if let Some(local) = &self.local {
            local.device_status(device, &payload);
        }
        let message = Message {
            kind: MessageKind::DeviceStatus,
            device: device.clone(),
            point: Arc::from(""),
            payload,
            ts_ms,
            qos: Qos::AtLeastOnce,
            retain: true,
        };
        if let Err(error) = self.queue.push_message(message).await {
            warn!(%device, %error, "cannot queue the device status");
        }
    }

    async fn report(&self, reported: &HashMap<Arc<str>, DeviceStatus>) -> HealthReport {
        let handles = self.handles.borrow().clone();
        let mut devices = BTreeMap::new();
        for view in handles.iter().flat_map(|h| h.devices().iter()) {
            let status = reported
                .get(view.config.name.as_str())
                .and_then(DeviceStatus::reported);
            devices.insert(
                view.config.name.clone(),
                DeviceReport::new(
                    status,
                    &view.counters.snapshot(),
                    view.counters.poll_durations.snapshot().count,
                ),
            );
        }
        let mut report = HealthReport::new(
            now_ms(),
            self.started_ms,
            *self.queue.progress().borrow(),
            self.queue.stats(),
            (self.connections)(),
            devices,
        )
        .with_rejected(&self.queue.rejected());
        report.config = self.config.borrow().clone();
        report
    }
}

/// One task per device of `handles`: sends its health now and at every change, until `stop`.
fn spawn_forwarders(
    handles: &[BusHandle],
    generation: u64,
    tx: &mpsc::UnboundedSender<Observed>,
    stop: &CancellationToken,
) {
    for view in handles.iter().flat_map(|h| h.devices().iter()) {
        let mut health = view.health.clone();
        let device: Arc<str> = Arc::from(view.config.name.as_str());
        let offline_after = view.config.offline_after;
        let (tx, stop) = (tx.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let observed = Observed {
                    generation,
                    device: device.clone(),
                    offline_after,
                    health: health.borrow_and_update().clone(),
                };
                if tx.send(observed).is_err() {
                    return;
                }
                tokio::select! {
                    changed = health.changed() => if changed.is_err() { return },
                    () = stop.cancelled() => return,
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load_str;
    use crate::fleet::{units, BusChanges, Fleet};
    use crate::queue::{Entry, QueueOptions, QueueReader};
    use crate::simulator::{Registers, Simulator};
    use std::net::SocketAddr;

    fn config(port: u16, extra_point: &str) -> crate::config::Config {
        load_str(
            &format!(
                "gateway: {{id: gw, data_dir: /d}}
uplink: {{url: 'mqtt://b'}}
buses: [{{name: plc1, type: tcp, host: 127.0.0.1, port: {port}, timeout: 100ms}}]
devices:
  - name: a
    bus: plc1
    poll_interval: 20ms
    backoff_max: 100ms
    offline_after: 2
    points: [{{name: v, table: holding, address: 0, type: u16}}{extra_point}]
"
            ),
            "c.yaml",
        )
        .unwrap()
    }

    fn statuses(dir: &std::path::Path) -> Vec<String> {
        let Ok(rows) = QueueReader::open(dir).and_then(|r| r.entries()) else {
            return Vec::new();
        };
        rows.into_iter()
            .filter_map(|row| match row.entry {
                Entry::Message(m) if m.kind == MessageKind::DeviceStatus => Some(m.payload),
                _ => None,
            })
            .collect()
    }

    async fn until_statuses(dir: &std::path::Path, n: usize, queue: &Queue) -> Vec<String> {
        let mut progress = queue.progress();
        tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                let found = statuses(dir);
                if found.len() >= n {
                    return found;
                }
                let _ = progress.changed().await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("fewer than {n} device statuses: {:?}", statuses(dir)))
    }

    /// The monitor follows the fleet across a reload: the birth's map changes, and the device
    /// of the restarted bus is still watched (its outage is reported), without announcing it
    /// online a second time.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn follows_the_fleet_across_a_reload() {
        let regs = Registers::default();
        let sim = Simulator::bind(SocketAddr::from(([127, 0, 0, 1], 0)), regs.clone())
            .await
            .unwrap();
        let port = sim.local_addr().port();
        let cancel = CancellationToken::new();
        tokio::spawn(sim.run(cancel.clone()));
        let dir = tempfile::tempdir().unwrap();
        let (queue, _live, writer) = Queue::open(dir.path(), QueueOptions::default()).unwrap();
        let before = config(port, "");
        let mut fleet = Fleet::start(&before, queue.clone(), cancel.clone());
        let handles = fleet.handles();
        let (gateway, mut birth) = watch::channel(Arc::new(gateway_info(1, &handles.borrow())));
        let (health, _reports) = mpsc::channel(1);
        let monitor = tokio::spawn(
            Monitor {
                queue: queue.clone(),
                handles,
                gateway,
                health,
                health_interval: Duration::from_secs(3600),
                health_heartbeat: Duration::from_secs(3600),
                connections: Box::new(|| 0),
                started_ms: 1,
                config: watch::channel(None).1,
                local: None,
            }
            .run(cancel.clone()),
        );
        let found = until_statuses(dir.path(), 1, &queue).await;
        assert!(found[0].contains("online"), "{found:?}");

        let after = config(port, ", {name: w, table: coil, address: 0, type: bool}");
        let changes = BusChanges::between(&units(&before), &units(&after));
        fleet.apply(&after, &changes, Duration::from_secs(5)).await;
        birth.changed().await.unwrap();
        assert_eq!(birth.borrow().devices[0].points.len(), 2);

        regs.set_silent(1, true);
        let found = until_statuses(dir.path(), 2, &queue).await;
        assert!(found[1].contains("offline"), "{found:?}");
        assert_eq!(found.len(), 2, "not announced online again: {found:?}");
        cancel.cancel();
        monitor.await.unwrap();
        writer.close().await.unwrap();
    }
}
