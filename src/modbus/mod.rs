//! Modbus and serial fieldbuses: plan the reads of each device ([`plan`]), put them on the wire
//! through the one task that owns each bus ([`bus`], over a [`link`]), decode the answers
//! ([`decode`]) into samples. `serial_line` buses of ASCII instruments have their own owner
//! ([`serial_line`]).
//!
//! Pure: [`plan`], [`decode`], [`frame`], [`mbap`], [`device`], the splitter and matcher of
//! [`serial_line`]. I/O: [`link`], [`bus`], the task of [`serial_line`].

pub mod bus;
pub mod counters;
pub mod decode;
pub mod device;
#[cfg(test)]
pub(crate) mod fixtures;
pub mod frame;
pub mod link;
pub mod mbap;
pub mod plan;
pub mod serial_line;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use bus::{BusHandle, BusOwner, DeviceView, ProbeError, WriteError};
pub use counters::{
    CounterSnapshot, DeviceCounters, DeviceHealth, DurationSnapshot, PollDurations,
};
pub use device::ProbedPoint;
pub use frame::{Exception, Request, Response};

use crate::config::{BusConfig, BusKind, DeviceConfig};
use crate::sample::SampleSink;
use link::{RtuLink, SerialOpener, TcpLink, TcpOpener};

/// Starts the owner task of `bus` for `devices` on `tracker`; returns its handle.
pub fn spawn_bus<S: SampleSink + Clone>(
    bus: BusConfig,
    devices: Vec<DeviceConfig>,
    sink: S,
    cancel: CancellationToken,
    tracker: &TaskTracker,
) -> BusHandle {
    match bus.kind.clone() {
        BusKind::Tcp { host, port } => {
            let (owner, handle) = BusOwner::new(bus, devices, TcpLink::new(host, port), sink);
            tracker.spawn(owner.run(cancel));
            handle
        }
        BusKind::RtuOverTcp { host, port } => {
            let link = RtuLink::new(TcpOpener { host, port });
            let (owner, handle) = BusOwner::new(bus, devices, link, sink);
            tracker.spawn(owner.run(cancel));
            handle
        }
        BusKind::Rtu { serial } => {
            let (owner, handle) =
                BusOwner::new(bus, devices, RtuLink::new(SerialOpener(serial)), sink);
            tracker.spawn(owner.run(cancel));
            handle
        }
        BusKind::SerialLine { .. } => {
            let mut views = Vec::new();
            for device in devices {
                let (view, health) = serial_line::view(&device);
                tracker.spawn(serial_line::run(
                    bus.clone(),
                    device,
                    view.counters.clone(),
                    health,
                    sink.clone(),
                    cancel.clone(),
                ));
                views.push(view);
            }
            BusHandle::without_owner(&bus.name, views)
        }
    }
}

/// Reads every point of `device` once over a fresh connection to `bus` (`fieldrelay probe`).
pub async fn probe(bus: &BusConfig, device: &DeviceConfig) -> Result<Vec<ProbedPoint>, ProbeError> {
    let (bus, device) = (bus.clone(), device.clone());
    match bus.kind.clone() {
        BusKind::Tcp { host, port } => bus::probe(bus, device, TcpLink::new(host, port)).await,
        BusKind::RtuOverTcp { host, port } => {
            bus::probe(bus, device, RtuLink::new(TcpOpener { host, port })).await
        }
        BusKind::Rtu { serial } => {
            bus::probe(bus, device, RtuLink::new(SerialOpener(serial))).await
        }
        BusKind::SerialLine { .. } => Err(ProbeError::Failed(
            "a serial_line bus has no registers to probe".to_owned(),
        )),
    }
}
