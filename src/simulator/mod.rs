//! A Modbus slave for demos and tests, built on tokio-modbus' servers: TCP, RTU over TCP, and RTU
//! on a serial port (or one end of a `socat` pseudo-terminal pair).
//!
//! [`Registers`] holds four tables per unit id (coils, discrete inputs, input registers, holding
//! registers), each covering the whole 16-bit address space and created zeroed on first use, so
//! any unit id answers, unless it was made silent ([`Registers::set_silent`]: an unplugged
//! device, which answers nothing at all). Reads and writes of FC 1, 2, 3, 4, 5, 6, 15 and 16
//! are served; a range past the end of the address space is answered with
//! `IllegalDataAddress`, anything else with `IllegalFunction`. Tests can make a unit ignore
//! writes ([`Registers::set_ignore_writes`]) or refuse them with an exception
//! ([`Registers::set_write_exception`]).
//!
//! `fieldrelay simulate --config FILE` accepts two kinds of file:
//! - a **simulator file** ([`map`]): endpoints to serve and a register map with static values,
//!   counters, sines and ramps;
//! - a **gateway config** ([`run_from_config`]): it serves every `tcp` and `rtu_over_tcp` bus
//!   on its `host:port` and moves the configured points once a second (floats follow a sine,
//!   integers count up, bools toggle every 5 s, strings show the tick), so the demo shows live
//!   data with no hardware. Writable points keep what commands write to them. `rtu` buses are skipped (the gateway owns that port; use a
//!   simulator file naming the other end of the serial pair).

pub mod map;

use std::collections::{HashMap, HashSet};
use std::future::{ready, Ready};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_modbus::server::{rtu, rtu_over_tcp, tcp};
use tokio_modbus::{ExceptionCode, Request, Response, SlaveRequest};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::{BusKind, Config, DataType, ModbusSource, SerialSettings, Table};
use crate::modbus::decode::{self, Scaling};
use crate::modbus::link::open_serial;
use crate::sample::Value;

const SPACE: usize = 1 << 16;

#[derive(Debug, thiserror::Error)]
pub enum SimulatorError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("server failed: {0}")]
    Serve(std::io::Error),
}

#[derive(Debug)]
struct Tables {
    coils: Vec<bool>,
    discrete: Vec<bool>,
    input: Vec<u16>,
    holding: Vec<u16>,
}

impl Default for Tables {
    fn default() -> Self {
        Tables {
            coils: vec![false; SPACE],
            discrete: vec![false; SPACE],
            input: vec![0; SPACE],
            holding: vec![0; SPACE],
        }
    }
}

/// Called with the unit id of every write request, before it is applied (tests use it to act at
/// the exact moment a write reaches the device).
pub type WriteHook = Arc<dyn Fn(u8) + Send + Sync>;

/// One register write as a unit received it: start address and words.
pub type RegisterWrite = (u16, Vec<u16>);

/// The simulated register space; cheap to clone, shared with the server tasks.
#[derive(Clone, Default)]
pub struct Registers {
    units: Arc<Mutex<HashMap<u8, Tables>>>,
    /// Units that answer nothing (an unplugged device).
    silent: Arc<Mutex<HashSet<u8>>>,
    /// Units that acknowledge writes without applying them (clamped or read-only registers).
    deaf: Arc<Mutex<HashSet<u8>>>,
    /// Units that answer every write with this exception (a device refusing the value, or
    /// locked by its local panel); reads are served as usual.
    refusing: Arc<Mutex<HashMap<u8, ExceptionCode>>>,
    requests: Arc<AtomicU64>,
    /// Write requests (FC 5, 6, 15, 16) served, per unit.
    writes: Arc<Mutex<HashMap<u8, u64>>>,
    /// Every register write (FC 6, 16) received, per unit, in order: start address and words.
    register_writes: Arc<Mutex<HashMap<u8, Vec<RegisterWrite>>>>,
    write_hook: Arc<Mutex<Option<WriteHook>>>,
}

impl std::fmt::Debug for Registers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registers")
            .field("requests", &self.request_count())
            .finish_non_exhaustive()
    }
}

fn range(addr: u16, count: usize) -> Result<std::ops::Range<usize>, ExceptionCode> {
    let start = usize::from(addr);
    if count == 0 || start + count > SPACE {
        return Err(ExceptionCode::IllegalDataAddress);
    }
    Ok(start..start + count)
}

impl Registers {
    fn lock(&self) -> MutexGuard<'_, HashMap<u8, Tables>> {
        // A panic while holding this lock can only come from a bug in this module; the tables
        // themselves are always consistent, so keep serving.
        self.units.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn with<R>(&self, unit: u8, f: impl FnOnce(&mut Tables) -> R) -> R {
        f(self.lock().entry(unit).or_default())
    }

    pub fn set_holding(&self, unit: u8, addr: u16, words: &[u16]) {
        self.with(unit, |t| copy_into(&mut t.holding, addr, words));
    }

    pub fn set_input(&self, unit: u8, addr: u16, words: &[u16]) {
        self.with(unit, |t| copy_into(&mut t.input, addr, words));
    }

    pub fn set_coil(&self, unit: u8, addr: u16, bits: &[bool]) {
        self.with(unit, |t| copy_into(&mut t.coils, addr, bits));
    }

    pub fn set_discrete(&self, unit: u8, addr: u16, bits: &[bool]) {
        self.with(unit, |t| copy_into(&mut t.discrete, addr, bits));
    }

    pub fn holding(&self, unit: u8, addr: u16, count: usize) -> Vec<u16> {
        self.with(unit, |t| slice(&t.holding, addr, count))
    }

    pub fn coils(&self, unit: u8, addr: u16, count: usize) -> Vec<bool> {
        self.with(unit, |t| slice(&t.coils, addr, count))
    }

    /// Makes `unit` answer nothing (`true`), as an unplugged device, or answer again.
    pub fn set_silent(&self, unit: u8, silent: bool) {
        let mut set = self.silent.lock().unwrap_or_else(|e| e.into_inner());
        if silent {
            set.insert(unit);
        } else {
            set.remove(&unit);
        }
    }

    fn is_silent(&self, unit: u8) -> bool {
        self.silent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&unit)
    }

    pub fn input(&self, unit: u8, addr: u16, count: usize) -> Vec<u16> {
        self.with(unit, |t| slice(&t.input, addr, count))
    }

    /// Requests served so far, over all connections.
    pub fn request_count(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Write requests (FC 5, 6, 15, 16) `unit` received so far, applied or not.
    pub fn write_count(&self, unit: u8) -> u64 {
        let writes = self.writes.lock().unwrap_or_else(|e| e.into_inner());
        writes.get(&unit).copied().unwrap_or(0)
    }

    /// Every register write (FC 6, 16) `unit` received so far, applied or not, in the order it
    /// arrived: the start address and the words (tests check what was written, in which order,
    /// and that nothing was written twice).
    pub fn register_writes(&self, unit: u8) -> Vec<RegisterWrite> {
        let writes = self
            .register_writes
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        writes.get(&unit).cloned().unwrap_or_default()
    }

    /// Makes `unit` acknowledge writes without applying them (`true`), as a device whose
    /// register is read-only or clamped does, or apply them again.
    pub fn set_ignore_writes(&self, unit: u8, ignore: bool) {
        let mut set = self.deaf.lock().unwrap_or_else(|e| e.into_inner());
        if ignore {
            set.insert(unit);
        } else {
            set.remove(&unit);
        }
    }

    /// Makes `unit` answer every write request with `exception` (nothing is applied), or serve
    /// writes again (`None`).
    pub fn set_write_exception(&self, unit: u8, exception: Option<ExceptionCode>) {
        let mut map = self.refusing.lock().unwrap_or_else(|e| e.into_inner());
        match exception {
            Some(code) => map.insert(unit, code),
            None => map.remove(&unit),
        };
    }

    /// Calls `hook` with the unit id of every write request before it is applied; `None`
    /// removes it.
    pub fn set_write_hook(&self, hook: Option<WriteHook>) {
        *self.write_hook.lock().unwrap_or_else(|e| e.into_inner()) = hook;
    }

    fn handle(&self, unit: u8, request: Request<'_>) -> Result<Response, ExceptionCode> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let is_write = matches!(
            request,
            Request::WriteSingleCoil(..)
                | Request::WriteMultipleCoils(..)
                | Request::WriteSingleRegister(..)
                | Request::WriteMultipleRegisters(..)
        );
        if is_write {
            *self
                .writes
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(unit)
                .or_default() += 1;
            let words = match &request {
                Request::WriteSingleRegister(a, v) => Some((*a, vec![*v])),
                Request::WriteMultipleRegisters(a, words) => Some((*a, words.to_vec())),
                _ => None,
            };
            if let Some(write) = words {
                self.register_writes
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .entry(unit)
                    .or_default()
                    .push(write);
            }
            let hook = self
                .write_hook
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            if let Some(hook) = hook {
                hook(unit);
            }
            let refused = self
                .refusing
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&unit)
                .copied();
            if let Some(exception) = refused {
                return Err(exception);
            }
            if self
                .deaf
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains(&unit)
            {
                return Ok(match request {
                    Request::WriteSingleCoil(a, v) => Response::WriteSingleCoil(a, v),
                    Request::WriteMultipleCoils(a, bits) => {
                        Response::WriteMultipleCoils(a, bits.len() as u16)
                    }
                    Request::WriteSingleRegister(a, v) => Response::WriteSingleRegister(a, v),
                    Request::WriteMultipleRegisters(a, words) => {
                        Response::WriteMultipleRegisters(a, words.len() as u16)
                    }
                    _ => return Err(ExceptionCode::IllegalFunction),
                });
            }
        }
        self.with(unit, |t| match request {
            Request::ReadCoils(a, n) => {
                Ok(Response::ReadCoils(t.coils[range(a, n.into())?].to_vec()))
            }
            Request::ReadDiscreteInputs(a, n) => Ok(Response::ReadDiscreteInputs(
                t.discrete[range(a, n.into())?].to_vec(),
            )),
            Request::ReadInputRegisters(a, n) => Ok(Response::ReadInputRegisters(
                t.input[range(a, n.into())?].to_vec(),
            )),
            Request::ReadHoldingRegisters(a, n) => Ok(Response::ReadHoldingRegisters(
                t.holding[range(a, n.into())?].to_vec(),
            )),
            Request::WriteSingleCoil(a, v) => {
                t.coils[range(a, 1)?.start] = v;
                Ok(Response::WriteSingleCoil(a, v))
            }
            Request::WriteMultipleCoils(a, bits) => {
                let r = range(a, bits.len())?;
                t.coils[r].copy_from_slice(&bits);
                Ok(Response::WriteMultipleCoils(a, bits.len() as u16))
            }
            Request::WriteSingleRegister(a, v) => {
                t.holding[range(a, 1)?.start] = v;
                Ok(Response::WriteSingleRegister(a, v))
            }
            Request::WriteMultipleRegisters(a, words) => {
                let r = range(a, words.len())?;
                t.holding[r].copy_from_slice(&words);
                Ok(Response::WriteMultipleRegisters(a, words.len() as u16))
            }
            _ => Err(ExceptionCode::IllegalFunction),
        })
    }
}

/// Copies `src` to `dst[addr..]`, truncated at the end of the address space.
fn copy_into<T: Copy>(dst: &mut [T], addr: u16, src: &[T]) {
    let start = usize::from(addr);
    let n = src.len().min(SPACE - start);
    dst[start..start + n].copy_from_slice(&src[..n]);
}

fn slice<T: Copy>(src: &[T], addr: u16, count: usize) -> Vec<T> {
    let start = usize::from(addr);
    src[start..(start + count).min(SPACE)].to_vec()
}

struct Service {
    regs: Registers,
}

impl tokio_modbus::server::Service for Service {
    type Request = SlaveRequest<'static>;
    /// `None`: no answer at all (a silent unit).
    type Response = Option<Response>;
    type Exception = ExceptionCode;
    type Future = Ready<Result<Option<Response>, ExceptionCode>>;

    fn call(&self, req: Self::Request) -> Self::Future {
        if self.regs.is_silent(req.slave) {
            return ready(Ok(None));
        }
        ready(self.regs.handle(req.slave, req.request).map(Some))
    }
}

/// Framing a network simulator speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Modbus TCP (MBAP header).
    Tcp,
    /// RTU frames with CRC over TCP.
    RtuOverTcp,
}

/// A bound, not yet serving, network simulator.
pub struct Simulator {
    listener: TcpListener,
    regs: Registers,
    framing: Framing,
}

impl Simulator {
    /// A Modbus TCP simulator.
    pub async fn bind(addr: SocketAddr, regs: Registers) -> std::io::Result<Simulator> {
        Self::bind_with(addr, regs, Framing::Tcp).await
    }

    pub async fn bind_with(
        addr: SocketAddr,
        regs: Registers,
        framing: Framing,
    ) -> std::io::Result<Simulator> {
        Ok(Simulator {
            listener: TcpListener::bind(addr).await?,
            regs,
            framing,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// Serves connections until `cancel` fires; open connections are closed then.
    pub async fn run(self, cancel: CancellationToken) -> Result<(), SimulatorError> {
        let regs = self.regs;
        let on_error = |error| warn!(%error, "simulator connection failed");
        match self.framing {
            Framing::Tcp => {
                let on_connected = move |stream, addr| {
                    let regs = regs.clone();
                    async move {
                        tcp::accept_tcp_connection(stream, addr, move |_| {
                            Ok(Some(Service { regs: regs.clone() }))
                        })
                    }
                };
                tcp::Server::new(self.listener)
                    .serve_until(&on_connected, on_error, cancel.cancelled_owned())
                    .await
            }
            Framing::RtuOverTcp => {
                let on_connected = move |stream, addr| {
                    let regs = regs.clone();
                    async move {
                        rtu_over_tcp::accept_tcp_connection(stream, addr, move |_| {
                            Ok(Some(Service { regs: regs.clone() }))
                        })
                    }
                };
                rtu_over_tcp::Server::new(self.listener)
                    .serve_until(&on_connected, on_error, cancel.cancelled_owned())
                    .await
            }
        }
        .map(|_| ())
        .map_err(SimulatorError::Serve)
    }
}

/// Serves `regs` as Modbus RTU on the serial port `settings.port` (for tests: one end of a
/// `socat` pty pair) until `cancel` fires. A garbled frame ends tokio-modbus' server loop; the
/// port is then reopened, so line noise never stops the simulator.
pub async fn serve_rtu(
    settings: SerialSettings,
    regs: Registers,
    cancel: CancellationToken,
) -> Result<(), SimulatorError> {
    loop {
        let port = open_serial(&settings).map_err(|error| SimulatorError::Bind {
            addr: settings.port.clone(),
            source: std::io::Error::other(error.to_string()),
        })?;
        let service = Service { regs: regs.clone() };
        let served = rtu::Server::new(port)
            .serve_until(service, cancel.clone().cancelled_owned())
            .await;
        if cancel.is_cancelled() {
            return Ok(());
        }
        if let Err(error) = served {
            debug!(%error, "rtu simulator: bad frame; reopening the port");
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(20)) => {}
            () = cancel.cancelled() => return Ok(()),
        }
    }
}

/// The synthetic engineering value of a point at tick `n` (one tick per second).
fn synthetic(data_type: DataType, n: u64) -> Value {
    match data_type {
        DataType::Bool => Value::Bool((n / 5) % 2 == 1),
        DataType::F32 | DataType::F64 => Value::Float(20.0 + 5.0 * (n as f64 / 10.0).sin()),
        DataType::U16 | DataType::I16 => Value::Int((n % 30_000) as i64),
        DataType::U32 | DataType::I32 | DataType::U64 | DataType::I64 => {
            Value::Int((n % 2_000_000_000) as i64)
        }
        DataType::String { length } => {
            let text = format!("T{n}");
            let max = usize::from(length) * 2;
            Value::Str(Arc::from(&text[..text.len().min(max)]))
        }
    }
}

/// Writes engineering `value` into the registers or bits of `source` (integers are set raw so
/// they count; floats as engineering values). Values that do not fit are skipped.
pub fn set_point(
    regs: &Registers,
    unit: u8,
    source: &ModbusSource,
    data_type: DataType,
    scaling: Scaling,
    value: &Value,
) {
    match source.table {
        Table::Coil => regs.set_coil(unit, source.address, &[matches!(value, Value::Bool(true))]),
        Table::DiscreteInput => {
            regs.set_discrete(unit, source.address, &[matches!(value, Value::Bool(true))])
        }
        Table::Input | Table::Holding => {
            let words = match source.bit {
                Some(bit) => {
                    let current = if source.table == Table::Input {
                        regs.input(unit, source.address, 1)
                    } else {
                        regs.holding(unit, source.address, 1)
                    };
                    let word = current.first().copied().unwrap_or(0);
                    let mask = 1u16 << bit;
                    vec![if matches!(value, Value::Bool(true)) {
                        word | mask
                    } else {
                        word & !mask
                    }]
                }
                None => {
                    match decode::encode_registers(data_type, source.encoding, value, scaling) {
                        Ok(words) => words,
                        Err(_) => return,
                    }
                }
            };
            if source.table == Table::Input {
                regs.set_input(unit, source.address, &words);
            } else {
                regs.set_holding(unit, source.address, &words);
            }
        }
    }
}

/// Serves every `tcp` and `rtu_over_tcp` bus of `config` on its `host:port` with the
/// configured devices' points moving, until `cancel` fires.
pub async fn run_from_config(
    config: &Config,
    cancel: CancellationToken,
) -> Result<(), SimulatorError> {
    let regs = Registers::default();
    let mut servers = tokio::task::JoinSet::new();
    for bus in &config.buses {
        let (host, port, framing) = match &bus.kind {
            BusKind::Tcp { host, port } => (host, *port, Framing::Tcp),
            BusKind::RtuOverTcp { host, port } => (host, *port, Framing::RtuOverTcp),
            BusKind::Rtu { .. } | BusKind::SerialLine { .. } => {
                info!(bus = %bus.name, "not simulated: serial buses need a simulator file naming the other end of the line");
                continue;
            }
        };
        let listener = TcpListener::bind((host.as_str(), port))
            .await
            .map_err(|source| SimulatorError::Bind {
                addr: format!("{host}:{port}"),
                source,
            })?;
        info!(bus = %bus.name, addr = %format!("{host}:{port}"), "simulating bus");
        let sim = Simulator {
            listener,
            regs: regs.clone(),
            framing,
        };
        servers.spawn(sim.run(cancel.clone()));
    }
    serve_ticking(servers, Duration::from_secs(1), &cancel, |n| {
        for device in &config.devices {
            for point in &device.points {
                let Some(source) = point.modbus() else {
                    continue;
                };
                // A writable point is left to commands, so a demo's write stays visible.
                if point.write.is_some() {
                    continue;
                }
                let value = synthetic(point.data_type, n);
                let scaling = match value {
                    Value::Float(_) => Scaling::of(point),
                    _ => Scaling::IDENTITY,
                };
                let value = match (source.bit, value) {
                    (Some(_), Value::Int(i)) => Value::Bool((i / 5) % 2 == 1),
                    (_, value) => value,
                };
                set_point(
                    &regs,
                    device.unit_id,
                    source,
                    point.data_type,
                    scaling,
                    &value,
                );
            }
        }
    })
    .await
}

/// Calls `on_tick` with the tick's number every `period`, the first at once, until `cancel`
/// fires (then waits for the servers to stop) or a server fails (its error is returned).
pub(crate) async fn serve_ticking(
    mut servers: tokio::task::JoinSet<Result<(), SimulatorError>>,
    period: Duration,
    cancel: &CancellationToken,
    mut on_tick: impl FnMut(u64),
) -> Result<(), SimulatorError> {
    let mut tick = tokio::time::interval(period);
    let mut n = 0u64;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = cancel.cancelled() => break,
            Some(done) = servers.join_next() => {
                if let Ok(Err(error)) = done { return Err(error); }
            }
        }
        on_tick(n);
        n += 1;
    }
    while servers.join_next().await.is_some() {}
    Ok(())
}
