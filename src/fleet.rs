//! The running bus owners, as a set that a reload can change while the gateway runs (I/O).
//!
//! # Design
//! A bus runs as a unit: its [`BusConfig`] and the devices on it, one owner task (or one task per
//! `serial_line` instrument), a [`CancellationToken`] of its own (a child of the gateway's, so
//! shutdown still reaches it) and a [`TaskTracker`] to wait for exactly its tasks. A reload
//! ([`Fleet::apply`]) replaces only the units whose bus or devices changed; the others keep
//! running untouched — their connection, schedule, change filters, counters and health.
//!
//! # Invariants
//! - **One owner per wire.** A replaced unit is stopped, and waited for (up to a deadline),
//!   *before* its successor starts, so two owners never share a serial port or a TCP slot. A
//!   unit that overruns the deadline is logged and abandoned; it still stops at its next wait
//!   point, since it was cancelled.
//! - **No false stalls.** A unit leaves [`Pollers`] before it is cancelled and its successor
//!   joins after it was spawned, so the systemd supervisor never counts a poller that stops on
//!   purpose as a dead one.
//! - **Readers see whole sets.** [`Fleet::handles`] publishes the current `BusHandle`s as one
//!   `Arc<[BusHandle]>` after every change (metrics, and later the status publisher and the
//!   command router).
//!
//! Samples a stopped owner had read but not yet handed to the queue are dropped, exactly as at
//! shutdown: they were never committed, and the next poll of its successor reads fresh values.
//! Rows already in the queue are not affected by any of this.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::config::{BusConfig, Config, DeviceConfig};
use crate::modbus::{self, BusHandle};
use crate::sample::SampleSink;

/// A bus and the devices on it, in file order: what a reload compares.
#[derive(Debug, Clone, PartialEq)]
pub struct BusUnit {
    pub bus: BusConfig,
    pub devices: Vec<DeviceConfig>,
}

/// The units of `config`, in the order of its `buses` list.
pub fn units(config: &Config) -> Vec<BusUnit> {
    config
        .buses
        .iter()
        .map(|bus| BusUnit {
            bus: bus.clone(),
            devices: config
                .devices
                .iter()
                .filter(|device| device.bus == bus.name)
                .cloned()
                .collect(),
        })
        .collect()
}

/// Which units a change stops and starts, by bus name (pure). A unit whose bus or devices
/// changed is in both lists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BusChanges {
    /// Running units to stop: removed or changed.
    pub stop: Vec<String>,
    /// Units of the new config to start: added or changed.
    pub start: Vec<String>,
    /// Units that keep running.
    pub kept: Vec<String>,
}

impl BusChanges {
    pub fn between(running: &[BusUnit], new: &[BusUnit]) -> BusChanges {
        let find = |units: &[BusUnit], name: &str| {
            units.iter().find(|unit| unit.bus.name == name).cloned()
        };
        let mut changes = BusChanges::default();
        for unit in running {
            if find(new, &unit.bus.name).as_ref() != Some(unit) {
                changes.stop.push(unit.bus.name.clone());
            }
        }
        for unit in new {
            match find(running, &unit.bus.name) {
                Some(old) if old == *unit => changes.kept.push(unit.bus.name.clone()),
                _ => changes.start.push(unit.bus.name.clone()),
            }
        }
        changes
    }

    pub fn is_empty(&self) -> bool {
        self.stop.is_empty() && self.start.is_empty()
    }
}

/// The poller tasks of one unit: its bus name, its tracker and how many tasks it started.
type UnitTasks = (Arc<str>, TaskTracker, usize);

/// The poller tasks the systemd supervisor counts: how many were started and how many still
/// run, over the current units. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Pollers {
    units: Arc<Mutex<Vec<UnitTasks>>>,
}

impl Pollers {
    fn with_units<T>(&self, f: impl FnOnce(&mut Vec<UnitTasks>) -> T) -> T {
        // A panic while holding this lock cannot leave the list inconsistent (every change is
        // one push or retain), so a poisoned lock is still usable.
        f(&mut self.units.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Poller tasks still running.
    pub fn running(&self) -> usize {
        self.with_units(|units| units.iter().map(|(_, tracker, _)| tracker.len()).sum())
    }

    /// Poller tasks started for the current units.
    pub fn started(&self) -> usize {
        self.with_units(|units| units.iter().map(|(_, _, started)| started).sum())
    }

    /// Waits until every current poller ended (after cancellation).
    pub async fn wait(&self) {
        let trackers: Vec<TaskTracker> =
            self.with_units(|units| units.iter().map(|(_, t, _)| t.clone()).collect());
        for tracker in trackers {
            tracker.wait().await;
        }
    }
}

/// A running unit.
struct Running {
    unit: BusUnit,
    handle: BusHandle,
    cancel: CancellationToken,
    tasks: TaskTracker,
}

/// The running units and what is needed to start more.
pub struct Fleet<S> {
    running: Vec<Running>,
    sink: S,
    /// The gateway's token; every unit runs on a child of it.
    cancel: CancellationToken,
    handles: watch::Sender<Arc<[BusHandle]>>,
    pollers: Pollers,
}

impl<S: SampleSink + Clone> Fleet<S> {
    /// Starts one unit per bus of `config`.
    pub fn start(config: &Config, sink: S, cancel: CancellationToken) -> Fleet<S> {
        let (handles, _) = watch::channel(Arc::from(Vec::new()));
        let mut fleet = Fleet {
            running: Vec::new(),
            sink,
            cancel,
            handles,
            pollers: Pollers::default(),
        };
        for unit in units(config) {
            fleet.spawn(unit);
        }
        fleet.publish();
        fleet
    }

    /// The handles of the running buses, replaced as a whole after every change.
    pub fn handles(&self) -> watch::Receiver<Arc<[BusHandle]>> {
        self.handles.subscribe()
    }

    pub fn pollers(&self) -> Pollers {
        self.pollers.clone()
    }

    /// Makes the running units those of `config`: stops the units `changes.stop` names
    /// (cancelled together, each waited for until `deadline` after the call), then starts
    /// `changes.start`. Nothing is started once the gateway is shutting down.
    pub async fn apply(&mut self, config: &Config, changes: &BusChanges, deadline: Duration) {
        let deadline = Instant::now() + deadline;
        let mut stopping = Vec::new();
        for name in &changes.stop {
            if let Some(index) = self.running.iter().position(|r| r.unit.bus.name == *name) {
                let running = self.running.remove(index);
                self.pollers
                    .with_units(|units| units.retain(|(bus, _, _)| **bus != **name));
                running.cancel.cancel();
                stopping.push(running);
            }
        }
        for running in stopping {
            let name = &running.unit.bus.name;
            if tokio::time::timeout_at(deadline, running.tasks.wait())
                .await
                .is_err()
            {
                warn!(bus = %name, "bus owner did not stop in time; abandoned (it stops at its next wait point)");
            } else {
                info!(bus = %name, "bus stopped");
            }
        }
        if self.cancel.is_cancelled() {
            self.publish();
            return;
        }
        let new_units = units(config);
        for name in &changes.start {
            if let Some(unit) = new_units.iter().find(|unit| unit.bus.name == *name) {
                self.spawn(unit.clone());
                info!(bus = %name, devices = unit.devices.len(), "bus started");
            }
        }
        // File order, so handles and metrics list buses as the file does.
        self.running.sort_by_key(|running| {
            new_units
                .iter()
                .position(|unit| unit.bus.name == running.unit.bus.name)
                .unwrap_or(usize::MAX)
        });
        self.publish();
    }

    fn spawn(&mut self, unit: BusUnit) {
        let cancel = self.cancel.child_token();
        let tasks = TaskTracker::new();
        let handle = modbus::spawn_bus(
            unit.bus.clone(),
            unit.devices.clone(),
            self.sink.clone(),
            cancel.clone(),
            &tasks,
        );
        tasks.close();
        let name: Arc<str> = Arc::from(unit.bus.name.as_str());
        self.pollers
            .with_units(|units| units.push((name, tasks.clone(), tasks.len())));
        self.running.push(Running {
            unit,
            handle,
            cancel,
            tasks,
        });
    }

    fn publish(&self) {
        let handles: Arc<[BusHandle]> = self.running.iter().map(|r| r.handle.clone()).collect();
        self.handles.send_replace(handles);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load_str;
    use crate::sample::{Sample, Value};
    use crate::simulator::{Registers, Simulator};
    use std::net::SocketAddr;
    use tokio::sync::mpsc;

    fn config(port: u16, second_bus_points: &str) -> Config {
        let text = format!(
            "gateway: {{id: gw, data_dir: /d}}
uplink: {{url: 'mqtt://b'}}
buses:
  - {{name: one, type: tcp, host: 127.0.0.1, port: {port}, timeout: 1s}}
  - {{name: two, type: tcp, host: 127.0.0.1, port: {port}, timeout: 1s}}
devices:
  - name: a
    bus: one
    unit_id: 1
    poll_interval: 20ms
    points: [{{name: v, table: holding, address: 0, type: u16, publish: every_poll}}]
  - name: b
    bus: two
    unit_id: 2
    poll_interval: 20ms
    points: [{second_bus_points}]
"
        );
        load_str(&text, "c.yaml").unwrap_or_else(|errors| panic!("{errors}"))
    }

    #[test]
    fn changes_name_added_removed_and_changed_buses() {
        let a = config(1, "{name: v, table: holding, address: 0, type: u16}");
        let b = config(
            1,
            "{name: v, table: holding, address: 0, type: u16}, {name: w, table: coil, address: 0, type: bool}",
        );
        assert!(BusChanges::between(&units(&a), &units(&a)).is_empty());
        let changes = BusChanges::between(&units(&a), &units(&b));
        assert_eq!(changes.stop, ["two"]);
        assert_eq!(changes.start, ["two"]);
        assert_eq!(changes.kept, ["one"]);

        let mut fewer = a.clone();
        fewer.buses.retain(|bus| bus.name == "one");
        fewer.devices.retain(|device| device.bus == "one");
        let changes = BusChanges::between(&units(&a), &units(&fewer));
        assert_eq!(
            (changes.stop, changes.start),
            (vec!["two".to_owned()], vec![])
        );
        let changes = BusChanges::between(&units(&fewer), &units(&a));
        assert_eq!(
            (changes.stop, changes.start),
            (vec![], vec!["two".to_owned()])
        );
    }

    async fn next_from(
        rx: &mut mpsc::UnboundedReceiver<(Instant, Sample)>,
        device: &str,
        point: &str,
    ) -> Value {
        let wait = async {
            loop {
                let (_, sample) = rx.recv().await.expect("a bus owner runs");
                if &*sample.device == device && &*sample.point == point {
                    return sample.value;
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(30), wait)
            .await
            .unwrap_or_else(|_| panic!("no sample of {device}/{point}"))
    }

    /// A reload that changes one bus restarts only that one: the other keeps its owner (same
    /// counters, never stopped) and the changed one polls its new point.
    #[tokio::test]
    async fn apply_restarts_only_changed_buses() {
        let regs = Registers::default();
        regs.set_holding(1, 0, &[11]);
        regs.set_holding(2, 0, &[22]);
        regs.set_coil(2, 0, &[true]);
        let sim = Simulator::bind(SocketAddr::from(([127, 0, 0, 1], 0)), regs.clone())
            .await
            .unwrap();
        let port = sim.local_addr().port();
        let stop_sim = CancellationToken::new();
        tokio::spawn(sim.run(stop_sim.clone()));

        let before = config(
            port,
            "{name: v, table: holding, address: 0, type: u16, publish: every_poll}",
        );
        let after = config(
            port,
            "{name: v, table: holding, address: 0, type: u16, publish: every_poll}, \
             {name: w, table: coil, address: 0, type: bool, publish: every_poll}",
        );
        let (tx, mut rx) = mpsc::unbounded_channel();
        let cancel = CancellationToken::new();
        let mut fleet = Fleet::start(&before, tx, cancel.clone());
        let pollers = fleet.pollers();
        let handles = fleet.handles();
        assert_eq!((pollers.started(), pollers.running()), (2, 2));
        assert_eq!(next_from(&mut rx, "b", "v").await, Value::Int(22));
        let kept = handles.borrow()[0].device("a").unwrap().counters.clone();

        let changes = BusChanges::between(&units(&before), &units(&after));
        fleet.apply(&after, &changes, Duration::from_secs(5)).await;

        assert_eq!(next_from(&mut rx, "b", "w").await, Value::Bool(true));
        let now = handles.borrow().clone();
        assert_eq!(
            now.iter().map(|h| h.bus.to_string()).collect::<Vec<_>>(),
            ["one", "two"]
        );
        assert!(
            Arc::ptr_eq(&kept, &now[0].device("a").unwrap().counters),
            "the unchanged bus keeps its owner"
        );
        assert_eq!(now[1].device("b").unwrap().config.points.len(), 2);
        assert_eq!((pollers.started(), pollers.running()), (2, 2));

        cancel.cancel();
        tokio::time::timeout(Duration::from_secs(10), pollers.wait())
            .await
            .expect("every poller stops on cancel");
        assert_eq!(pollers.running(), 0);
        stop_sim.cancel();
    }
}
