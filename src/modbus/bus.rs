//! The bus owner: one task per Modbus bus, the only one that talks on its wire (I/O).
//!
//! # Design
//! Every device on a bus is polled by the bus's owner task, which puts **one request on the wire
//! at a time** (RS-485 is half duplex; a Modbus TCP gateway in front of a serial line is too) and
//! keeps the bus's `turnaround_delay` of silence between the end of one exchange and the next
//! request. Devices on different buses have different owners and never wait for each other.
//!
//! Each device has its own schedule (`next_due`), plan of reads ([`super::plan`]), change
//! filters, backoff, [`DeviceCounters`] and [`DeviceHealth`]. The owner always serves the device
//! that is due first. So a dead device costs the others only the time its own requests occupy
//! the line: one `timeout` per attempt (its poll stops at the first failed request), and attempts
//! are spaced by its backoff.
//!
//! # Failure behaviour
//! - Every request runs under the bus `timeout` (tokio-modbus has none); connecting is part of
//!   the request. After a timeout the link abandons the exchange ([`Link::abandon`]): TCP and
//!   RTU-over-TCP reconnect, serial RTU discards what arrives late (see [`super::link`]). A
//!   broken serial port (unplugged adapter) is reopened by the link at the next request; an
//!   open that fails is that exchange's error, so a missing port is retried at backoff pace.
//! - A Modbus exception marks only the points of that read bad; the device counts as answering.
//! - A failed poll (timeout, CRC error, transport or protocol error) backs the device off
//!   exponentially from `poll_interval` up to its `backoff_max`, with jitter in [½, 1] of the
//!   ceiling so several dead devices drift apart; it is never given up on. One good poll resets
//!   it. A device going bad is logged once at warn, its recovery once at info.
//! - Every wait selects on the cancellation token, so shutdown is prompt.
//!
//! # Commands (writes, probes)
//! [`BusHandle`] sends [`Command`]s over a bounded channel; the owner runs them between two
//! exchanges, before any further poll request, so a write waits at most for the exchange on the
//! wire. A write to a device that is offline (its last poll failed) fails at once with
//! [`WriteError::DeviceOffline`] without touching the bus, and a full channel fails with
//! [`WriteError::Busy`]: a cloud command must get a quick, honest answer, not queue behind a
//! dead line.
//!
//! ```ignore
//! // A command handler validates against the point map, encodes the value, then
//! let request = write_request(setpoint, &Value::Float(21.5))?;
//! match handle.write("boiler", request).await {
//!     Ok(()) => {}                                   // device acknowledged (FC 6/16 echo)
//!     Err(WriteError::DeviceOffline(reason)) => {}   // at once, nothing sent
//!     Err(other) => {}                               // exception, timeout, not writable, ...
//! }
//! let mut health = handle.device("boiler").unwrap().health.clone();
//! health.changed().await;                            // online/offline for the status topic
//! ```

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::counters::{DeviceCounters, DeviceHealth};
use super::decode::{self, DecodeError};
use super::device::{PointTable, ProbedPoint};
use super::frame::{Exception, Reply, Request};
use super::link::{Link, LinkError, LinkNotes};
use super::plan::{self, Read};
use crate::backoff::Backoff;
use crate::config::{BusConfig, DataType, DeviceConfig, Table};
use crate::sample::{now_ms, Discard, Sample, SampleSink, Value};

/// Commands waiting for the owner; a few suffice (writes are rare), and a full channel is
/// answered with [`WriteError::Busy`] rather than queueing without bound.
const COMMAND_CAPACITY: usize = 16;

/// Why a write was not done.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WriteError {
    #[error("unknown device {0:?}")]
    UnknownDevice(String),
    #[error("point {0:?} is not writable (only coil and holding points are)")]
    NotWritable(String),
    #[error("cannot encode the value: {0}")]
    Encode(#[from] DecodeError),
    #[error("device is offline: {0}")]
    DeviceOffline(String),
    #[error("the bus is busy with other commands")]
    Busy,
    #[error("the bus is shut down")]
    BusClosed,
    #[error("device answered with {0}")]
    Exception(Exception),
    #[error("{0}")]
    Failed(String),
}

/// Why a probe failed as a whole.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProbeError {
    #[error("unknown device {0:?}")]
    UnknownDevice(String),
    #[error("the bus is shut down")]
    BusClosed,
    #[error("{0}")]
    Failed(String),
}

/// A request to the owner.
pub enum Command {
    /// Put `request` on the wire to the device's unit.
    Write {
        device: usize,
        request: Request,
        reply: oneshot::Sender<Result<(), WriteError>>,
    },
    /// Read every point of the device once.
    Probe {
        device: usize,
        reply: oneshot::Sender<Result<Vec<ProbedPoint>, ProbeError>>,
    },
    /// Read one point once (a command's read-back).
    ReadPoint {
        device: usize,
        point: usize,
        reply: oneshot::Sender<Result<ProbedPoint, ProbeError>>,
    },
}

/// What the rest of the gateway sees of one device.
#[derive(Debug, Clone)]
pub struct DeviceView {
    pub config: DeviceConfig,
    pub health: watch::Receiver<DeviceHealth>,
    pub counters: Arc<DeviceCounters>,
}

/// A cheap, cloneable handle on a bus owner: writes, probes, health and counters.
#[derive(Debug, Clone)]
pub struct BusHandle {
    pub bus: Arc<str>,
    tx: mpsc::Sender<Command>,
    devices: Arc<[DeviceView]>,
}

impl BusHandle {
    /// A handle for devices that have no request channel (serial_line instruments): health and
    /// counters only; writes and probes fail with [`WriteError::BusClosed`] / not writable.
    pub fn without_owner(bus: &str, devices: Vec<DeviceView>) -> BusHandle {
        let (tx, _) = mpsc::channel(1);
        BusHandle {
            bus: Arc::from(bus),
            tx,
            devices: devices.into(),
        }
    }

    pub fn devices(&self) -> &[DeviceView] {
        &self.devices
    }

    pub fn device(&self, name: &str) -> Option<&DeviceView> {
        self.devices.iter().find(|d| d.config.name == name)
    }

    fn index(&self, name: &str) -> Option<usize> {
        self.devices.iter().position(|d| d.config.name == name)
    }

    /// Sends a raw write (FC 5, 6, 15 or 16) to `device`. Fails fast when the device is offline
    /// or the bus is busy; otherwise waits for the device's answer (at most the bus timeout once
    /// the request is on the wire).
    pub async fn write(&self, device: &str, request: Request) -> Result<(), WriteError> {
        let index = self
            .index(device)
            .ok_or_else(|| WriteError::UnknownDevice(device.to_owned()))?;
        let health = self.devices[index].health.borrow().clone();
        if !health.online {
            return Err(WriteError::DeviceOffline(
                health
                    .last_error
                    .unwrap_or_else(|| "not answering".to_owned()),
            ));
        }
        let (reply, answer) = oneshot::channel();
        self.tx
            .try_send(Command::Write {
                device: index,
                request,
                reply,
            })
            .map_err(|error| match error {
                mpsc::error::TrySendError::Full(_) => WriteError::Busy,
                mpsc::error::TrySendError::Closed(_) => WriteError::BusClosed,
            })?;
        answer.await.map_err(|_| WriteError::BusClosed)?
    }

    /// Reads one point of `device` once, between two exchanges of the owner: its registers (or
    /// bit) as received and the decoded value. Fails fast, as a write does, when the device is
    /// offline or the command channel is full.
    pub async fn read_point(&self, device: &str, point: &str) -> Result<ProbedPoint, ProbeError> {
        let index = self
            .index(device)
            .ok_or_else(|| ProbeError::UnknownDevice(device.to_owned()))?;
        let view = &self.devices[index];
        let point_index = view
            .config
            .points
            .iter()
            .position(|p| p.name == point)
            .ok_or_else(|| ProbeError::Failed(format!("unknown point {point:?}")))?;
        let health = view.health.borrow().clone();
        if !health.online {
            return Err(ProbeError::Failed(format!(
                "device is offline: {}",
                health.last_error.as_deref().unwrap_or("not answering")
            )));
        }
        let (reply, answer) = oneshot::channel();
        self.tx
            .try_send(Command::ReadPoint {
                device: index,
                point: point_index,
                reply,
            })
            .map_err(|error| match error {
                mpsc::error::TrySendError::Full(_) => {
                    ProbeError::Failed("the bus is busy with other commands".to_owned())
                }
                mpsc::error::TrySendError::Closed(_) => ProbeError::BusClosed,
            })?;
        answer.await.map_err(|_| ProbeError::BusClosed)?
    }

    /// Reads every point of `device` once: raw registers and decoded values.
    pub async fn probe(&self, device: &str) -> Result<Vec<ProbedPoint>, ProbeError> {
        let index = self
            .index(device)
            .ok_or_else(|| ProbeError::UnknownDevice(device.to_owned()))?;
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Command::Probe {
                device: index,
                reply,
            })
            .await
            .map_err(|_| ProbeError::BusClosed)?;
        answer.await.map_err(|_| ProbeError::BusClosed)?
    }
}

/// The request that writes `value` to `point` (pure): FC 5 for a coil and FC 6 for a
/// one-register value, or FC 15 / FC 16 when the point's `write_function` is `multiple`; wider
/// values always FC 16.
pub fn write_request(
    point: &crate::config::PointConfig,
    value: &Value,
) -> Result<Request, WriteError> {
    let not_writable = || WriteError::NotWritable(point.name.clone());
    let source = point.modbus().ok_or_else(not_writable)?;
    let scaling = decode::Scaling::of(point);
    let multiple = point
        .write
        .is_some_and(|w| w.function == crate::config::WriteFunction::Multiple);
    match source.table {
        Table::Coil if multiple => Ok(Request::WriteCoils {
            address: source.address,
            values: vec![decode::encode_bit(value)?],
        }),
        Table::Coil => Ok(Request::WriteCoil {
            address: source.address,
            value: decode::encode_bit(value)?,
        }),
        Table::Holding if source.bit.is_none() => {
            let words = decode::encode_registers(point.data_type, source.encoding, value, scaling)?;
            Ok(match (point.data_type, words.as_slice()) {
                (DataType::String { .. }, _) | (_, [_, _, ..]) => Request::WriteRegisters {
                    address: source.address,
                    values: words,
                },
                (_, [_]) if multiple => Request::WriteRegisters {
                    address: source.address,
                    values: words,
                },
                (_, [word]) => Request::WriteRegister {
                    address: source.address,
                    value: *word,
                },
                (_, []) => return Err(not_writable()),
            })
        }
        _ => Err(not_writable()),
    }
}

/// Sleeps until `deadline` unless it has passed: tokio's timer fires a past deadline only at
/// its next millisecond tick, which would cap a fast bus at about a thousand requests a second.
async fn wait_until(deadline: Instant) {
    if deadline > Instant::now() {
        tokio::time::sleep_until(deadline).await;
    }
}

/// Why one exchange failed.
#[derive(Debug, thiserror::Error)]
enum ExchangeError {
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error(transparent)]
    Link(#[from] LinkError),
}

struct DeviceState {
    config: DeviceConfig,
    reads: Vec<Read>,
    table: PointTable,
    next_due: Instant,
    backoff: Backoff,
    counters: Arc<DeviceCounters>,
    health: watch::Sender<DeviceHealth>,
}

/// The task that owns one bus (see the module docs).
pub struct BusOwner<L: Link, S: SampleSink> {
    bus: BusConfig,
    link: L,
    sink: S,
    devices: Vec<DeviceState>,
    rx: mpsc::Receiver<Command>,
    /// End of the last exchange: the next request waits `turnaround_delay` after it.
    last_end: Option<Instant>,
    /// Uniform in [0, 1): the backoff's jitter (random in production, fixed in tests).
    jitter: fn() -> f64,
}

impl<L: Link, S: SampleSink> BusOwner<L, S> {
    /// The owner of `bus` with its `devices`, and the handle to reach it.
    pub fn new(bus: BusConfig, devices: Vec<DeviceConfig>, link: L, sink: S) -> (Self, BusHandle) {
        let (tx, rx) = mpsc::channel(COMMAND_CAPACITY);
        let now = Instant::now();
        let mut views = Vec::with_capacity(devices.len());
        let states = devices
            .into_iter()
            .map(|config| {
                let (health, watcher) = watch::channel(DeviceHealth::default());
                let counters = Arc::new(DeviceCounters::default());
                views.push(DeviceView {
                    config: config.clone(),
                    health: watcher,
                    counters: counters.clone(),
                });
                DeviceState {
                    reads: plan::plan(&config.points, &config.planning),
                    table: PointTable::new(&config),
                    next_due: now,
                    backoff: Backoff::new(config.poll_interval, config.backoff_max),
                    counters,
                    health,
                    config,
                }
            })
            .collect();
        let handle = BusHandle {
            bus: Arc::from(bus.name.as_str()),
            tx,
            devices: views.into(),
        };
        let owner = BusOwner {
            bus,
            link,
            sink,
            devices: states,
            rx,
            last_end: None,
            jitter: fastrand::f64,
        };
        (owner, handle)
    }

    /// Replaces the backoff jitter source (tests: a fixed value gives exact spacing).
    pub fn with_jitter(mut self, jitter: fn() -> f64) -> Self {
        self.jitter = jitter;
        self
    }

    /// Polls every device on schedule and serves commands until `cancel` fires.
    pub async fn run(mut self, cancel: CancellationToken) {
        if self.devices.is_empty() {
            // Still serve the channel so handles get a clear answer.
            loop {
                tokio::select! {
                    command = self.rx.recv() => match command {
                        Some(command) => self.serve(command).await,
                        None => return,
                    },
                    () = cancel.cancelled() => return,
                }
            }
        }
        loop {
            let (due, at) = self
                .devices
                .iter()
                .enumerate()
                .min_by_key(|(i, d)| (d.next_due, *i))
                .map(|(i, d)| (i, d.next_due))
                .unwrap_or((0, Instant::now()));
            tokio::select! {
                biased;
                () = cancel.cancelled() => return,
                Some(command) = self.rx.recv() => {
                    tokio::select! {
                        () = self.serve(command) => {}
                        () = cancel.cancelled() => return,
                    }
                }
                () = wait_until(at) => {
                    let samples = tokio::select! {
                        samples = self.poll_device(due) => samples,
                        () = cancel.cancelled() => return,
                    };
                    for sample in samples {
                        tokio::select! {
                            () = self.sink.push(sample) => {}
                            () = cancel.cancelled() => return,
                        }
                    }
                }
            }
        }
    }

    async fn serve(&mut self, command: Command) {
        match command {
            Command::Write {
                device,
                request,
                reply,
            } => {
                let result = match self.exchange(device, &request).await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(exception)) => Err(WriteError::Exception(exception)),
                    Err(error) => Err(WriteError::Failed(error.to_string())),
                };
                let _ = reply.send(result);
            }
            Command::Probe { device, reply } => {
                let _ = reply.send(self.read_all(device).await);
            }
            Command::ReadPoint {
                device,
                point,
                reply,
            } => {
                let _ = reply.send(self.read_point(device, point).await);
            }
        }
    }

    /// Reads point `point` of device `index` once: exactly its registers (or bit).
    async fn read_point(&mut self, index: usize, point: usize) -> Result<ProbedPoint, ProbeError> {
        let config = self
            .devices
            .get(index)
            .and_then(|device| device.table.points().get(point))
            .ok_or_else(|| ProbeError::Failed("no such point".to_owned()))?;
        let source = config
            .modbus()
            .ok_or_else(|| ProbeError::Failed("not a modbus point".to_owned()))?;
        let count = if source.table.is_bits() || source.bit.is_some() {
            1
        } else {
            config.data_type.width()
        };
        let request = Request::Read {
            table: source.table,
            start: source.address,
            count,
        };
        let name = config.name.clone();
        let reply = self
            .exchange(index, &request)
            .await
            .map_err(|error| ProbeError::Failed(error.to_string()))?;
        let table = &self.devices[index].table;
        let result = match &reply {
            Ok(data) => Ok(table.decode(point, 0, data)),
            Err(exception) => Err(*exception),
        };
        Ok(ProbedPoint {
            point: name,
            result,
        })
    }

    /// One request/response on the wire for device `index`, with turnaround, timeout and
    /// counting.
    async fn exchange(&mut self, index: usize, request: &Request) -> Result<Reply, ExchangeError> {
        if let Some(end) = self.last_end {
            wait_until(end + self.bus.turnaround_delay).await;
        }
        let Some(device) = self.devices.get(index) else {
            return Err(ExchangeError::Link(LinkError::Protocol(
                "no such device".to_owned(),
            )));
        };
        let counters = device.counters.clone();
        let unit = device.config.unit_id;
        DeviceCounters::bump(&counters.requests);
        let mut notes = LinkNotes::default();
        let timeout = self.bus.timeout;
        let result =
            tokio::time::timeout(timeout, self.link.transact(unit, request, &mut notes)).await;
        self.last_end = Some(Instant::now());
        counters
            .stale_replies
            .fetch_add(u64::from(notes.stale_frames), Ordering::Relaxed);
        match result {
            Err(_) => {
                DeviceCounters::bump(&counters.timeouts);
                self.link.abandon();
                Err(ExchangeError::Timeout(timeout))
            }
            Ok(Err(error)) => {
                match error {
                    LinkError::Crc => DeviceCounters::bump(&counters.crc_errors),
                    _ => DeviceCounters::bump(&counters.errors),
                }
                Err(ExchangeError::Link(error))
            }
            Ok(Ok(reply)) => {
                if reply.is_err() {
                    DeviceCounters::bump(&counters.exceptions);
                }
                Ok(reply)
            }
        }
    }

    /// Serves commands that arrived while a poll is under way (between its exchanges).
    async fn serve_pending(&mut self) {
        while let Ok(command) = self.rx.try_recv() {
            Box::pin(self.serve(command)).await;
        }
    }

    /// One poll of device `index`: every read of its plan, stopping at the first failure.
    /// Updates its schedule, backoff and health; returns the samples to publish.
    async fn poll_device(&mut self, index: usize) -> Vec<Sample> {
        let started = Instant::now();
        let mut samples = Vec::new();
        let mut failure = None;
        for r in 0..self.devices[index].reads.len() {
            self.serve_pending().await;
            let read = &self.devices[index].reads[r];
            let request = Request::Read {
                table: read.table,
                start: read.start,
                count: read.count,
            };
            match self.exchange(index, &request).await {
                Ok(Ok(data)) => {
                    let device = &mut self.devices[index];
                    let read = &device.reads[r];
                    samples.extend(device.table.samples(
                        read,
                        &data,
                        now_ms(),
                        Instant::now(),
                        &device.counters,
                    ));
                }
                Ok(Err(exception)) => {
                    let device = &self.devices[index];
                    let read = &device.reads[r];
                    debug!(device = %device.config.name, table = ?read.table, start = read.start,
                        count = read.count, %exception, "points of this read are bad");
                }
                Err(error) => {
                    failure = Some(error);
                    break;
                }
            }
        }
        let jitter = (self.jitter)();
        let device = &mut self.devices[index];
        let name = &device.config.name;
        match failure {
            None => {
                device.backoff.reset();
                device.counters.poll_durations.observe(started.elapsed());
                device
                    .counters
                    .last_success_ms
                    .store(now_ms(), Ordering::Relaxed);
                device.health.send_if_modified(|health| {
                    if !health.online {
                        info!(device = %name, "device answers again");
                    }
                    let changed =
                        !health.online || health.consecutive_failures != 0 || !health.answered;
                    health.online = true;
                    health.consecutive_failures = 0;
                    health.answered = true;
                    changed
                });
                // Fixed rate; a poll that overran its interval is followed at once by the next.
                device.next_due = (device.next_due + device.config.poll_interval).max(started);
            }
            Some(error) => {
                let delay = device
                    .backoff
                    .next_delay_with(0.5 + 0.5 * jitter)
                    .max(device.config.poll_interval);
                let message = error.to_string();
                device.health.send_modify(|health| {
                    if health.online {
                        warn!(device = %name, error = %message, ?delay, "device poll failed; backing off");
                    } else {
                        debug!(device = %name, error = %message, ?delay, "device still failing");
                    }
                    health.online = false;
                    health.consecutive_failures = health.consecutive_failures.saturating_add(1);
                    health.last_error = Some(message.clone());
                });
                device.next_due = Instant::now() + delay;
                samples.clear();
            }
        }
        samples
    }

    /// Reads every point of device `index` once (probe): raw data and decoded value per point.
    async fn read_all(&mut self, index: usize) -> Result<Vec<ProbedPoint>, ProbeError> {
        let mut probed = Vec::new();
        let reads = match self.devices.get(index) {
            Some(device) => device.reads.clone(),
            None => return Err(ProbeError::UnknownDevice(index.to_string())),
        };
        for read in &reads {
            let request = Request::Read {
                table: read.table,
                start: read.start,
                count: read.count,
            };
            let reply = self
                .exchange(index, &request)
                .await
                .map_err(|error| ProbeError::Failed(error.to_string()))?;
            let table = &self.devices[index].table;
            for &(point, offset) in &read.points {
                let name = table.points()[point].name.clone();
                let result = match &reply {
                    Ok(data) => Ok(table.decode(point, offset, data)),
                    Err(exception) => Err(*exception),
                };
                probed.push(ProbedPoint {
                    point: name,
                    result,
                });
            }
        }
        Ok(probed)
    }
}

/// Reads every point of `device` on `bus` once over a fresh link, without a running gateway
/// (`fieldrelay probe`).
pub async fn probe<L: Link>(
    bus: BusConfig,
    device: DeviceConfig,
    link: L,
) -> Result<Vec<ProbedPoint>, ProbeError> {
    let (mut owner, _handle) = BusOwner::new(bus, vec![device], link, Discard);
    owner.read_all(0).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{BusKind, DataType};
    use crate::modbus::fixtures::{device, point};
    use crate::modbus::frame::Response;
    use crate::modbus::link::TcpLink;
    use crate::simulator::{Registers, Simulator};
    use std::net::SocketAddr;
    use std::sync::atomic::AtomicBool;
    use std::sync::Mutex;
    use tokio::net::{TcpListener, TcpStream};

    fn bus(timeout: Duration) -> BusConfig {
        BusConfig {
            name: "bus".into(),
            kind: BusKind::Tcp {
                host: "127.0.0.1".into(),
                port: 1,
            },
            timeout,
            turnaround_delay: Duration::from_millis(5),
        }
    }

    /// An rtu bus on `port` (19200 8E1), timeout 100 ms.
    fn rtu_bus(port: &str) -> BusConfig {
        BusConfig {
            kind: BusKind::Rtu {
                serial: crate::config::SerialSettings {
                    port: port.into(),
                    baud_rate: 19_200,
                    parity: crate::config::Parity::Even,
                    data_bits: 8,
                    stop_bits: crate::config::StopBits::One,
                },
            },
            ..bus(Duration::from_millis(100))
        }
    }

    /// A wire with devices behind it, on tokio's clock: every exchange takes `latency`; a unit
    /// in `dead` never answers (the owner's timeout ends the exchange). Records when each
    /// request went out, to which unit.
    #[derive(Clone)]
    struct FakeWire {
        latency: Duration,
        dead: Arc<Mutex<Vec<u8>>>,
        sent: Arc<Mutex<Vec<(Instant, u8)>>>,
        busy: Arc<AtomicBool>,
    }

    impl Link for FakeWire {
        async fn transact(
            &mut self,
            unit: u8,
            request: &Request,
            _notes: &mut LinkNotes,
        ) -> Result<Reply, LinkError> {
            // One request on the wire at a time, or this fails.
            assert!(
                !self.busy.swap(true, Ordering::SeqCst),
                "two requests on the wire"
            );
            self.sent.lock().unwrap().push((Instant::now(), unit));
            tokio::time::sleep(self.latency).await;
            if self.dead.lock().unwrap().contains(&unit) {
                std::future::pending::<()>().await;
            }
            self.busy.store(false, Ordering::SeqCst);
            match request {
                Request::Read { count, .. } => Ok(Ok(Response::Words(vec![
                    u16::from(unit);
                    usize::from(*count)
                ]))),
                _ => Ok(Ok(Response::Written)),
            }
        }

        fn abandon(&mut self) {
            self.busy.store(false, Ordering::SeqCst);
        }
    }

    fn gaps(times: &[Instant]) -> Vec<Duration> {
        times.windows(2).map(|w| w[1] - w[0]).collect()
    }

    /// A dead device does not stall its bus: three devices on one bus, one unplugged. The other two keep
    /// their interval; the dead one is tried at backoff spacing; once back, it is read again
    /// within one backoff period. Paused time makes the schedule exact.
    #[tokio::test(start_paused = true)]
    async fn a_dead_device_does_not_delay_the_others() {
        let timeout = Duration::from_millis(200);
        let wire = FakeWire {
            latency: Duration::from_millis(10),
            dead: Arc::new(Mutex::new(vec![3])),
            sent: Arc::default(),
            busy: Arc::default(),
        };
        let devices = (1..=3)
            .map(|unit| {
                device(
                    &format!("d{unit}"),
                    unit,
                    vec![point("v", Table::Holding, 0, DataType::U16)],
                )
            })
            .collect();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let (owner, handle) = BusOwner::new(bus(timeout), devices, wire.clone(), tx);
        let owner = owner.with_jitter(|| 1.0);
        let cancel = CancellationToken::new();
        let start = Instant::now();
        tokio::spawn(owner.run(cancel.clone()));

        tokio::time::sleep(Duration::from_secs(30)).await;
        assert!(!handle.device("d3").unwrap().health.borrow().online);
        let revived = Instant::now();
        wire.dead.lock().unwrap().clear();
        tokio::time::sleep(Duration::from_secs(20)).await;
        cancel.cancel();

        let mut times: [Vec<Instant>; 3] = Default::default();
        while let Ok((at, sample)) = rx.try_recv() {
            let unit = usize::from(sample.device.as_bytes()[1] - b'0');
            times[unit - 1].push(at);
        }
        // Healthy devices: a sample every second, each at most one dead exchange (timeout) plus
        // two exchanges with turnaround late, never drifting (fixed rate).
        let slack = timeout + Duration::from_millis(60);
        for (i, t) in times[..2].iter().enumerate() {
            assert!(t.len() >= 49, "device {} polled {} times", i + 1, t.len());
            for gap in gaps(t) {
                assert!(
                    gap <= Duration::from_secs(1) + slack && gap + slack >= Duration::from_secs(1),
                    "device {} gap {gap:?}",
                    i + 1
                );
            }
            let last = *t.last().unwrap() - start;
            assert!(last >= Duration::from_secs(49), "{last:?}");
        }
        // The dead device: attempts spaced by the backoff ceiling (1, 2, 4, 8, 8, ... s with
        // jitter fixed at 1) plus the timeout its own attempt took.
        let attempts: Vec<Instant> = wire
            .sent
            .lock()
            .unwrap()
            .iter()
            .filter(|(at, unit)| *unit == 3 && *at < revived)
            .map(|(at, _)| *at)
            .collect();
        let expected = [1u64, 2, 4, 8, 8];
        for (gap, ceiling) in gaps(&attempts).iter().zip(expected) {
            let spacing = Duration::from_secs(ceiling) + timeout;
            assert!(
                *gap >= spacing && *gap <= spacing + Duration::from_millis(60),
                "dead device gap {gap:?}, expected about {spacing:?}"
            );
        }
        assert!(attempts.len() >= 5, "{} attempts", attempts.len());
        // Back: read within one backoff period (the 8 s cap), then every second again.
        let first = *times[2].iter().find(|t| **t > revived).expect("read again");
        assert!(first - revived <= Duration::from_secs(8) + slack);
        let after: Vec<Instant> = times[2].iter().copied().filter(|t| *t > revived).collect();
        assert!(gaps(&after)
            .iter()
            .all(|g| *g <= Duration::from_secs(1) + slack));
        assert!(handle.device("d3").unwrap().health.borrow().online);
        let counters = handle.device("d3").unwrap().counters.snapshot();
        assert_eq!(counters.timeouts, attempts.len() as u64);
        // One duration per successful poll, none for the failed ones; one 10 ms exchange plus
        // at most the turnaround lands in the 25 ms bucket.
        for (name, samples) in [("d1", &times[0]), ("d3", &times[2])] {
            let durations = handle
                .device(name)
                .unwrap()
                .counters
                .poll_durations
                .snapshot();
            assert_eq!(durations.count, samples.len() as u64, "{name}");
            let fast = durations.buckets.iter().find(|(bound, _)| *bound == 0.025);
            assert_eq!(fast.map(|(_, n)| *n), Some(durations.count), "{name}");
        }
    }

    /// RTU: the serial adapter is unplugged under a running owner and plugged back in. The
    /// broken port and every failed open are counted errors of the device's polls, spaced by
    /// its backoff (never a busy loop); once the port is back it is opened and read again.
    #[tokio::test(start_paused = true)]
    async fn rtu_port_that_vanishes_is_reopened_at_backoff_pace() {
        use crate::modbus::frame::crc16;
        use crate::modbus::link::{Plugs, RtuLink};
        use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

        /// The adapter with a device behind it that answers every read with `value`.
        fn adapter(plugs: &Plugs, value: u16) -> tokio::task::JoinHandle<()> {
            let (near, mut far): (DuplexStream, DuplexStream) = tokio::io::duplex(1024);
            plugs.plug(near);
            tokio::spawn(async move {
                let mut request = [0u8; 8];
                while far.read_exact(&mut request).await.is_ok() {
                    let mut frame = vec![1, 3, 2];
                    frame.extend_from_slice(&value.to_be_bytes());
                    let crc = crc16(&frame);
                    frame.extend_from_slice(&crc.to_le_bytes());
                    if far.write_all(&frame).await.is_err() {
                        return;
                    }
                }
            })
        }
        let plugs = Plugs::default();
        let plugged = adapter(&plugs, 1);
        let rtu = rtu_bus("plugs");
        let (tx, mut rx) = mpsc::unbounded_channel();
        let (owner, handle) = BusOwner::new(
            rtu,
            vec![device(
                "dev",
                1,
                vec![point("v", Table::Holding, 0, DataType::U16)],
            )],
            RtuLink::new(plugs.clone()),
            tx,
        );
        let owner = owner.with_jitter(|| 1.0);
        let cancel = CancellationToken::new();
        let start = Instant::now();
        tokio::spawn(owner.run(cancel.clone()));
        for _ in 0..3 {
            rx.recv().await.unwrap();
        }

        // Unplugged at 2 s: the poll at 3 s fails on the broken port, then each poll tries to
        // open it (4, 6, 10, 18, 26 s: the backoff's 1, 2, 4, 8, 8 s).
        plugged.abort();
        let view = handle.device("dev").unwrap();
        let mut health = view.health.clone();
        health
            .wait_for(|h| h.consecutive_failures >= 6)
            .await
            .unwrap();
        let last_error = health.borrow().last_error.clone().unwrap_or_default();
        assert!(
            last_error.starts_with("cannot open serial port plugs"),
            "{last_error}"
        );
        let counters = view.counters.snapshot();
        assert_eq!((counters.errors, counters.timeouts), (6, 0));

        // Plugged back in: read at the next attempt (34 s), within one backoff period.
        let replugged = Instant::now();
        let _plugged = adapter(&plugs, 2);
        let (at, sample) = rx.recv().await.unwrap();
        assert_eq!(sample.value, Value::Int(2));
        assert!(at - replugged <= Duration::from_secs(8));
        assert!(view.health.borrow().online);
        cancel.cancel();

        let opens: Vec<u64> = plugs
            .opens()
            .iter()
            .map(|at| (*at - start).as_secs())
            .collect();
        assert_eq!(opens, vec![0, 4, 6, 10, 18, 26, 34]);
    }

    /// RTU: a reply that arrives after its request timed out is discarded, not read as the
    /// answer to the next request (tokio-modbus' failure mode); the CRC of a garbled reply is
    /// counted. In-memory line on paused time.
    #[tokio::test(start_paused = true)]
    async fn rtu_late_reply_is_discarded_and_crc_errors_are_counted() {
        use crate::modbus::frame::crc16;
        use crate::modbus::link::{Given, RtuLink};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        fn reply(value: u16) -> Vec<u8> {
            let mut frame = vec![1, 3, 2];
            frame.extend_from_slice(&value.to_be_bytes());
            let crc = crc16(&frame);
            frame.extend_from_slice(&crc.to_le_bytes());
            frame
        }
        let (near, mut far) = tokio::io::duplex(4096);
        let slave = tokio::spawn(async move {
            let mut request = [0u8; 8];
            // 1: answered 150 ms late (the owner gives up after 100 ms).
            far.read_exact(&mut request).await.unwrap();
            tokio::time::sleep(Duration::from_millis(150)).await;
            far.write_all(&reply(1)).await.unwrap();
            // 2: a garbled answer.
            far.read_exact(&mut request).await.unwrap();
            let mut bad = reply(2);
            bad[3] ^= 0xFF;
            far.write_all(&bad).await.unwrap();
            // 3: a good one.
            far.read_exact(&mut request).await.unwrap();
            far.write_all(&reply(3)).await.unwrap();
            far
        });
        let link = RtuLink::new(Given(Some(near)));
        let rtu = rtu_bus("mem");
        let (mut owner, handle) = BusOwner::new(
            rtu,
            vec![device(
                "dev",
                1,
                vec![point("v", Table::Holding, 0, DataType::U16)],
            )],
            link,
            Discard,
        );
        assert!(owner.poll_device(0).await.is_empty(), "times out");
        // The late reply lands on the line while the device backs off.
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(owner.poll_device(0).await.is_empty(), "crc error");
        let samples = owner.poll_device(0).await;
        assert_eq!(values(&samples), vec![("v".to_owned(), Value::Int(3))]);
        let counters = handle.device("dev").unwrap().counters.snapshot();
        assert_eq!(
            (counters.requests, counters.timeouts, counters.crc_errors),
            (3, 1, 1)
        );
        drop(slave.await.unwrap());
    }

    #[test]
    fn write_function_multiple_uses_fc15_and_fc16() {
        let multiple = Some(crate::config::WriteConfig {
            min: None,
            max: None,
            verify: false,
            function: crate::config::WriteFunction::Multiple,
            max_age: None,
        });
        let mut mode = point("mode", Table::Holding, 20, DataType::U16);
        assert_eq!(
            write_request(&mode, &Value::Int(7)).unwrap(),
            Request::WriteRegister {
                address: 20,
                value: 7
            }
        );
        mode.write = multiple;
        assert_eq!(
            write_request(&mode, &Value::Int(7)).unwrap(),
            Request::WriteRegisters {
                address: 20,
                values: vec![7]
            }
        );
        let mut run = point("run", Table::Coil, 3, DataType::Bool);
        run.write = multiple;
        assert_eq!(
            write_request(&run, &Value::Bool(true)).unwrap(),
            Request::WriteCoils {
                address: 3,
                values: vec![true]
            }
        );
    }

    async fn simulator(regs: &Registers) -> (SocketAddr, CancellationToken) {
        let sim = Simulator::bind(SocketAddr::from(([127, 0, 0, 1], 0)), regs.clone())
            .await
            .unwrap();
        let addr = sim.local_addr();
        let cancel = CancellationToken::new();
        tokio::spawn(sim.run(cancel.clone()));
        (addr, cancel)
    }

    /// Writes `value` to `point` as the command handler does: the request from the point's
    /// configuration ([`write_request`]), then [`BusHandle::write`].
    async fn write_value(
        handle: &BusHandle,
        device: &str,
        point: &str,
        value: &Value,
    ) -> Result<(), WriteError> {
        let config = handle
            .device(device)
            .and_then(|view| view.config.points.iter().find(|p| p.name == point))
            .expect("a configured point");
        let request = write_request(config, value)?;
        handle.write(device, request).await
    }

    fn tcp_owner(
        addr: SocketAddr,
        timeout: Duration,
        devices: Vec<DeviceConfig>,
    ) -> (BusOwner<TcpLink, Discard>, BusHandle) {
        let mut bus = bus(timeout);
        bus.kind = BusKind::Tcp {
            host: addr.ip().to_string(),
            port: addr.port(),
        };
        let link = TcpLink::new(addr.ip().to_string(), addr.port());
        BusOwner::new(bus, devices, link, Discard)
    }

    fn values(samples: &[Sample]) -> Vec<(String, Value)> {
        samples
            .iter()
            .map(|s| (s.point.to_string(), s.value.clone()))
            .collect()
    }

    #[tokio::test]
    async fn exception_marks_only_the_points_of_that_read_bad() {
        let regs = Registers::default();
        regs.set_holding(1, 0, &[7]);
        regs.set_coil(1, 3, &[true]);
        let (addr, _sim) = simulator(&regs).await;
        // Address 65535 with two registers runs past the address space: the simulator answers
        // IllegalDataAddress (validation refuses such a point; the owner must cope anyway).
        let (mut owner, handle) = tcp_owner(
            addr,
            Duration::from_secs(1),
            vec![device(
                "dev",
                1,
                vec![
                    point("good", Table::Holding, 0, DataType::U16),
                    point("bad", Table::Holding, 65535, DataType::U32),
                    point("bit", Table::Coil, 3, DataType::Bool),
                ],
            )],
        );
        let samples = owner.poll_device(0).await;
        assert_eq!(
            values(&samples),
            vec![
                ("bit".to_owned(), Value::Bool(true)),
                ("good".to_owned(), Value::Int(7)),
            ]
        );
        let view = handle.device("dev").unwrap();
        assert_eq!(view.counters.snapshot().exceptions, 1);
        assert!(view.health.borrow().online, "an exception is an answer");
    }

    /// Forwards to `upstream`, holding back the first connection's traffic for `delay`: its first
    /// reply arrives after the owner's timeout. Reusing that connection would read the late
    /// reply as the answer to the next request (tokio-modbus #324).
    async fn slow_first_connection_proxy(upstream: SocketAddr, delay: Duration) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let mut first = true;
            while let Ok((mut client, _)) = listener.accept().await {
                let hold = if first { delay } else { Duration::ZERO };
                first = false;
                tokio::spawn(async move {
                    tokio::time::sleep(hold).await;
                    if let Ok(mut server) = TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn tcp_timeout_reconnects_and_the_next_poll_reads_fresh_data() {
        let regs = Registers::default();
        regs.set_holding(1, 0, &[1]);
        let (sim_addr, _sim) = simulator(&regs).await;
        let timeout = Duration::from_millis(100);
        let proxy = slow_first_connection_proxy(sim_addr, timeout * 3).await;
        let (mut owner, handle) = tcp_owner(
            proxy,
            timeout,
            vec![device(
                "dev",
                1,
                vec![point("v", Table::Holding, 0, DataType::U16)],
            )],
        );
        assert!(
            owner.poll_device(0).await.is_empty(),
            "first poll times out"
        );
        let view = handle.device("dev").unwrap();
        assert_eq!(view.counters.snapshot().timeouts, 1);
        assert_eq!(view.health.borrow().consecutive_failures, 1);
        assert_eq!(
            view.health.borrow().last_error.as_deref(),
            Some("timed out after 100ms")
        );
        regs.set_holding(1, 0, &[2]);
        let samples = owner.poll_device(0).await;
        assert_eq!(values(&samples), vec![("v".to_owned(), Value::Int(2))]);
        assert!(view.health.borrow().online);
    }

    #[tokio::test]
    async fn writes_encode_points_and_fail_fast_when_the_device_is_offline() {
        let regs = Registers::default();
        let (addr, _sim) = simulator(&regs).await;
        let mut setpoint = point("setpoint", Table::Holding, 10, DataType::F32);
        setpoint.scale = 0.5;
        let points = vec![
            setpoint,
            point("pump", Table::Coil, 2, DataType::Bool),
            point("mode", Table::Holding, 20, DataType::U16),
            point("temp", Table::Input, 0, DataType::U16),
        ];
        let (owner, handle) = tcp_owner(
            addr,
            Duration::from_millis(200),
            vec![
                device("dev", 1, points),
                device(
                    "gone",
                    9,
                    vec![point("v", Table::Holding, 0, DataType::U16)],
                ),
            ],
        );
        regs.set_silent(9, true);
        let cancel = CancellationToken::new();
        tokio::spawn(owner.run(cancel.clone()));

        write_value(&handle, "dev", "setpoint", &Value::Float(10.75))
            .await
            .unwrap();
        assert_eq!(
            regs.holding(1, 10, 2),
            vec![0x41AC, 0x0000],
            "raw = 10.75 / 0.5 = 21.5"
        );
        write_value(&handle, "dev", "pump", &Value::Bool(true))
            .await
            .unwrap();
        assert_eq!(regs.coils(1, 2, 1), vec![true]);
        handle
            .write(
                "dev",
                Request::WriteRegister {
                    address: 20,
                    value: 7,
                },
            )
            .await
            .unwrap();
        assert_eq!(regs.holding(1, 20, 1), vec![7]);
        assert_eq!(
            write_value(&handle, "dev", "temp", &Value::Int(1)).await,
            Err(WriteError::NotWritable("temp".into()))
        );
        assert!(matches!(
            write_value(&handle, "dev", "mode", &Value::Int(70_000)).await,
            Err(WriteError::Encode(_))
        ));

        // The silent device goes offline at its first poll; a write then fails at once.
        let mut health = handle.device("gone").unwrap().health.clone();
        health.wait_for(|h| !h.online).await.unwrap();
        let started = Instant::now();
        assert_eq!(
            write_value(&handle, "gone", "v", &Value::Int(1)).await,
            Err(WriteError::DeviceOffline("timed out after 200ms".into()))
        );
        assert!(started.elapsed() < Duration::from_millis(100));

        // The simulator counts write requests, and can acknowledge writes it ignores.
        assert_eq!(regs.write_count(1), 3);
        regs.set_ignore_writes(1, true);
        write_value(&handle, "dev", "mode", &Value::Int(9))
            .await
            .unwrap();
        assert_eq!(regs.holding(1, 20, 1), vec![7], "acknowledged, not applied");
        assert_eq!(regs.write_count(1), 4);
        regs.set_ignore_writes(1, false);

        // A read-back of one point: exactly its registers.
        let requests = regs.request_count();
        let read = handle.read_point("dev", "setpoint").await.unwrap();
        assert_eq!(
            read.result,
            Ok((Response::Words(vec![0x41AC, 0]), Ok(Value::Float(10.75))))
        );
        assert_eq!(regs.request_count(), requests + 1);
        assert!(matches!(
            handle.read_point("gone", "v").await,
            Err(ProbeError::Failed(message)) if message.starts_with("device is offline")
        ));

        // Probe: raw registers and decoded values of every point.
        let probed = handle.probe("dev").await.unwrap();
        let setpoint = probed.iter().find(|p| p.point == "setpoint").unwrap();
        assert_eq!(
            setpoint.result,
            Ok((Response::Words(vec![0x41AC, 0]), Ok(Value::Float(10.75))))
        );
        cancel.cancel();
    }
}
