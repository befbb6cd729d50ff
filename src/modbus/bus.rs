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
//!   RTU-over-TCP reconnect, serial RTU discards what arrives late (see [`super::link`]).
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

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::counters::{DeviceCounters, DeviceHealth};
use super::decode::{self, DecodeError, Scaling};
use super::device::{PointTable, ProbedPoint};
use super::frame::{Exception, Reply, Request, Response};
use super::link::{Link, LinkError, LinkNotes};
use super::plan::{self, Read};
use crate::backoff::Backoff;
use crate::config::{BusConfig, DataType, DeviceConfig, Table};
use crate::queue::Queue;
use crate::sample::{now_ms, Sample, Value};

/// Commands waiting for the owner; a few suffice (writes are rare), and a full channel is
/// answered with [`WriteError::Busy`] rather than queueing without bound.
const COMMAND_CAPACITY: usize = 16;

/// Where the owner delivers samples.
pub trait SampleSink: Send + Sync + 'static {
    fn push(&self, sample: Sample) -> impl Future<Output = ()> + Send;
}

impl SampleSink for Queue {
    async fn push(&self, sample: Sample) {
        if let Err(error) = Queue::push(self, sample).await {
            warn!(%error, "cannot queue sample");
        }
    }
}

impl SampleSink for mpsc::UnboundedSender<(Instant, Sample)> {
    async fn push(&self, sample: Sample) {
        let _ = self.send((Instant::now(), sample));
    }
}

/// Drops every sample (probes).
pub struct Discard;

impl SampleSink for Discard {
    async fn push(&self, _sample: Sample) {}
}

/// Why a write was not done.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WriteError {
    #[error("unknown device {0:?}")]
    UnknownDevice(String),
    #[error("unknown point {0:?}")]
    UnknownPoint(String),
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

    /// Writes the engineering `value` to a point (the inverse of its decoding: scale, offset,
    /// type, byte and word order): FC 5 for a coil, FC 6 for a one-register value, FC 16 for
    /// wider ones. Input tables, bits of registers and serial_line points are not writable.
    pub async fn write_point(
        &self,
        device: &str,
        point: &str,
        value: &Value,
    ) -> Result<(), WriteError> {
        let view = self
            .device(device)
            .ok_or_else(|| WriteError::UnknownDevice(device.to_owned()))?;
        let config = view
            .config
            .points
            .iter()
            .find(|p| p.name == point)
            .ok_or_else(|| WriteError::UnknownPoint(point.to_owned()))?;
        let request = write_request(config, value)?;
        self.write(device, request).await
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

/// The request that writes `value` to `point` (pure).
pub fn write_request(
    point: &crate::config::PointConfig,
    value: &Value,
) -> Result<Request, WriteError> {
    let not_writable = || WriteError::NotWritable(point.name.clone());
    let source = point.modbus().ok_or_else(not_writable)?;
    let scaling = Scaling {
        scale: point.scale,
        offset: point.offset,
    };
    match source.table {
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
                () = tokio::time::sleep_until(at) => {
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
        }
    }

    /// One request/response on the wire for device `index`, with turnaround, timeout and
    /// counting.
    async fn exchange(&mut self, index: usize, request: &Request) -> Result<Reply, ExchangeError> {
        if let Some(end) = self.last_end {
            tokio::time::sleep_until(end + self.bus.turnaround_delay).await;
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
                device
                    .counters
                    .last_success_ms
                    .store(now_ms(), Ordering::Relaxed);
                device.health.send_if_modified(|health| {
                    if !health.online {
                        info!(device = %name, "device answers again");
                    }
                    let changed = !health.online || health.consecutive_failures != 0;
                    health.online = true;
                    health.consecutive_failures = 0;
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

/// Response data of a probe, re-exported for callers.
pub type ProbeData = Response;
