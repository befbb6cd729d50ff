//! The per-device polling task (I/O). Pure parts: [`super::plan`] decides the requests,
//! [`samples_from_read`] turns a response into samples.
//!
//! # Failure behaviour
//! - Every request (and the connect) runs under the bus `timeout`: tokio-modbus has none.
//! - After a timeout or a transport/protocol error the TCP context is dropped and a new
//!   connection is made for the next poll: tokio-modbus would otherwise hand the late reply of
//!   the timed-out request to the next one (upstream #324) and stay off by one forever.
//! - A Modbus exception marks only the points of that read bad; the connection is kept.
//! - A failing device is polled again after an exponential backoff with full jitter, from
//!   `poll_interval` up to [`MAX_BACKOFF`]; it is never given up on. One good poll resets it.
//! - A device going bad is logged once at warn, its recovery once at info.
//! - Every wait selects on the cancellation token, so shutdown is prompt.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_modbus::client::{Context, Reader};
use tokio_modbus::Slave;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::decode::{self, Scaling};
use super::plan::{self, Read};
use crate::backoff::Backoff;
use crate::config::{BusConfig, BusKind, DeviceConfig, PointConfig};
use crate::queue::Queue;
use crate::sample::{now_ms, ChangeFilter, Sample};

/// Longest wait between attempts on a failing device: long enough not to load a shared line
/// with a dead device's timeouts, short enough that a repaired device is back within a minute.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Why a poll failed as a whole (the connection is dropped).
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    #[error("cannot resolve {0}")]
    Resolve(String),
    #[error("connect failed: {0}")]
    Connect(std::io::Error),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("modbus transport error: {0}")]
    Transport(#[from] tokio_modbus::Error),
}

/// Counters of one device, for logs now and metrics later.
#[derive(Debug, Default)]
pub struct DeviceStats {
    pub requests: AtomicU64,
    pub timeouts: AtomicU64,
    pub exceptions: AtomicU64,
    pub errors: AtomicU64,
    pub decode_errors: AtomicU64,
    /// Wall-clock ms of the last fully successful poll; 0 = never.
    pub last_success_ms: AtomicI64,
}

/// Data returned by one read.
#[derive(Debug, Clone, PartialEq)]
pub enum ReadData {
    Bits(Vec<bool>),
    Words(Vec<u16>),
}

/// A device's points with their shared names and change filters: what turns the data of a
/// read into samples (pure).
pub struct PointTable {
    device: Arc<str>,
    /// Shared by every sample of the point; names never change, so they are not copied per poll.
    names: Vec<Arc<str>>,
    points: Vec<PointConfig>,
    filters: Vec<ChangeFilter>,
}

impl PointTable {
    pub fn new(device: &DeviceConfig) -> Self {
        PointTable {
            device: Arc::from(device.name.as_str()),
            names: device
                .points
                .iter()
                .map(|p| Arc::from(p.name.as_str()))
                .collect(),
            points: device.points.clone(),
            filters: device.points.iter().map(ChangeFilter::new).collect(),
        }
    }

    /// Samples of the points `read` covers that pass their change filter. Points whose value
    /// cannot be decoded are counted in `decode_errors` and skipped.
    pub fn samples(
        &mut self,
        read: &Read,
        data: &ReadData,
        ts_ms: i64,
        decode_errors: &AtomicU64,
    ) -> Vec<Sample> {
        let mut samples = Vec::with_capacity(read.points.len());
        for &(index, offset) in &read.points {
            let point = &self.points[index];
            let offset = usize::from(offset);
            let value = match data {
                ReadData::Bits(bits) => bits.get(offset).map(|&b| decode::decode_bit(b)).ok_or(
                    decode::DecodeError::Short {
                        data_type: point.data_type,
                        needed: offset + 1,
                        got: bits.len(),
                    },
                ),
                ReadData::Words(words) => decode::decode_registers(
                    point.data_type,
                    words.get(offset..).unwrap_or(&[]),
                    Scaling {
                        scale: point.scale,
                        offset: point.offset,
                    },
                ),
            };
            match value {
                Ok(value) => {
                    if self.filters[index].admit(value) {
                        samples.push(Sample {
                            device: self.device.clone(),
                            point: self.names[index].clone(),
                            value,
                            ts_ms,
                            qos: point.qos,
                            retain: point.retain,
                        });
                    }
                }
                Err(error) => {
                    decode_errors.fetch_add(1, Ordering::Relaxed);
                    debug!(device = %self.device, point = %point.name, %error, "cannot decode point");
                }
            }
        }
        samples
    }
}

/// Polls one device until `cancel` fires. Never returns early on device errors.
pub async fn run_device(
    device: DeviceConfig,
    bus: BusConfig,
    queue: Queue,
    cancel: CancellationToken,
) {
    let mut poller = Poller::new(device, bus);
    let mut next = Instant::now();
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(next) => {}
            () = cancel.cancelled() => return,
        }
        let started = Instant::now();
        let outcome = tokio::select! {
            outcome = poller.poll() => outcome,
            () = cancel.cancelled() => return,
        };
        match outcome {
            Ok(samples) => {
                for sample in samples {
                    tokio::select! {
                        pushed = queue.push(sample) => if let Err(error) = pushed {
                            warn!(device = %poller.name, %error, "cannot queue sample");
                        },
                        () = cancel.cancelled() => return,
                    }
                }
                // Fixed rate; a poll that overran its interval is followed at once by the next.
                next = (next + poller.device.poll_interval).max(started);
            }
            Err(delay) => next = Instant::now() + delay,
        }
    }
}

struct Poller {
    device: DeviceConfig,
    name: Arc<str>,
    bus: BusConfig,
    reads: Vec<Read>,
    table: PointTable,
    /// `None` until connected and after any failure (see the module docs).
    ctx: Option<Context>,
    backoff: Backoff,
    healthy: bool,
    stats: Arc<DeviceStats>,
}

impl Poller {
    fn new(device: DeviceConfig, bus: BusConfig) -> Self {
        Poller {
            name: Arc::from(device.name.as_str()),
            reads: plan::plan(&device.points),
            table: PointTable::new(&device),
            backoff: Backoff::new(device.poll_interval, MAX_BACKOFF),
            ctx: None,
            healthy: true,
            stats: Arc::default(),
            device,
            bus,
        }
    }

    /// One poll of every read. `Err` carries the delay before the next attempt.
    async fn poll(&mut self) -> Result<Vec<Sample>, Duration> {
        match self.poll_reads().await {
            Ok(samples) => {
                if !self.healthy {
                    info!(device = %self.name, "device answers again");
                }
                self.healthy = true;
                self.backoff.reset();
                self.stats
                    .last_success_ms
                    .store(now_ms(), Ordering::Relaxed);
                Ok(samples)
            }
            Err(error) => {
                self.ctx = None;
                match &error {
                    PollError::Timeout(_) => self.stats.timeouts.fetch_add(1, Ordering::Relaxed),
                    _ => self.stats.errors.fetch_add(1, Ordering::Relaxed),
                };
                let delay = self.backoff.next_delay().max(self.device.poll_interval);
                if self.healthy {
                    warn!(device = %self.name, %error, "device poll failed; backing off");
                } else {
                    debug!(device = %self.name, %error, ?delay, stats = ?self.stats, "device still failing");
                }
                self.healthy = false;
                Err(delay)
            }
        }
    }

    async fn poll_reads(&mut self) -> Result<Vec<Sample>, PollError> {
        let timeout = self.bus.timeout;
        let mut samples = Vec::new();
        for i in 0..self.reads.len() {
            let ctx = match &mut self.ctx {
                Some(ctx) => ctx,
                None => self
                    .ctx
                    .insert(connect(&self.bus, self.device.unit_id).await?),
            };
            let read = &self.reads[i];
            self.stats.requests.fetch_add(1, Ordering::Relaxed);
            let (start, count) = (read.start, read.count);
            let response = tokio::time::timeout(timeout, async {
                Ok::<_, tokio_modbus::Error>(match read.table {
                    crate::config::Table::Coil => {
                        ctx.read_coils(start, count).await?.map(ReadData::Bits)
                    }
                    crate::config::Table::DiscreteInput => ctx
                        .read_discrete_inputs(start, count)
                        .await?
                        .map(ReadData::Bits),
                    crate::config::Table::Input => ctx
                        .read_input_registers(start, count)
                        .await?
                        .map(ReadData::Words),
                    crate::config::Table::Holding => ctx
                        .read_holding_registers(start, count)
                        .await?
                        .map(ReadData::Words),
                })
            })
            .await
            .map_err(|_| PollError::Timeout(timeout))??;
            match response {
                Ok(data) => samples.extend(self.table.samples(
                    read,
                    &data,
                    now_ms(),
                    &self.stats.decode_errors,
                )),
                Err(exception) => {
                    self.stats.exceptions.fetch_add(1, Ordering::Relaxed);
                    debug!(device = %self.name, ?read.table, start, count, %exception,
                        "modbus exception; points of this read are bad");
                }
            }
        }
        Ok(samples)
    }
}

async fn connect(bus: &BusConfig, unit_id: u8) -> Result<Context, PollError> {
    let BusKind::Tcp { host, port } = &bus.kind;
    let addr: SocketAddr =
        tokio::time::timeout(bus.timeout, tokio::net::lookup_host((host.as_str(), *port)))
            .await
            .map_err(|_| PollError::Timeout(bus.timeout))?
            .map_err(|_| PollError::Resolve(format!("{host}:{port}")))?
            .next()
            .ok_or_else(|| PollError::Resolve(format!("{host}:{port}")))?;
    tokio::time::timeout(
        bus.timeout,
        tokio_modbus::client::tcp::connect_slave(addr, Slave(unit_id)),
    )
    .await
    .map_err(|_| PollError::Timeout(bus.timeout))?
    .map_err(PollError::Connect)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DataType, PublishMode, Qos, Table};
    use crate::sample::Value;
    use crate::simulator::{Registers, Simulator};
    use tokio::net::{TcpListener, TcpStream};

    fn point(name: &str, table: Table, address: u16, data_type: DataType) -> PointConfig {
        PointConfig {
            name: name.into(),
            table,
            address,
            data_type,
            scale: 1.0,
            offset: 0.0,
            qos: Qos::AtLeastOnce,
            retain: false,
            publish: PublishMode::EveryPoll,
            deadband: 0.0,
        }
    }

    fn device(points: Vec<PointConfig>) -> DeviceConfig {
        DeviceConfig {
            name: "dev".into(),
            bus: "bus".into(),
            unit_id: 1,
            poll_interval: Duration::from_millis(100),
            points,
        }
    }

    fn bus(addr: SocketAddr, timeout: Duration) -> BusConfig {
        BusConfig {
            name: "bus".into(),
            kind: BusKind::Tcp {
                host: addr.ip().to_string(),
                port: addr.port(),
            },
            timeout,
        }
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

    fn values(samples: &[Sample]) -> Vec<(String, Value)> {
        samples
            .iter()
            .map(|s| (s.point.to_string(), s.value))
            .collect()
    }

    #[tokio::test]
    async fn exception_marks_only_the_points_of_that_read_bad() {
        let regs = Registers::default();
        regs.set_holding(1, 0, &[7]);
        regs.set_coil(1, 3, &[true]);
        let (addr, _sim) = simulator(&regs).await;
        // Address 65535 with two registers runs past the address space: the simulator answers
        // IllegalDataAddress (validation refuses such a point; the poller must cope anyway).
        let mut poller = Poller::new(
            device(vec![
                point("good", Table::Holding, 0, DataType::U16),
                point("bad", Table::Holding, 65535, DataType::U32),
                point("bit", Table::Coil, 3, DataType::Bool),
            ]),
            bus(addr, Duration::from_secs(1)),
        );
        let samples = poller.poll().await.expect("device answered");
        assert_eq!(
            values(&samples),
            vec![
                ("bit".to_owned(), Value::Bool(true)),
                ("good".to_owned(), Value::Int(7)),
            ]
        );
        assert_eq!(poller.stats.exceptions.load(Ordering::Relaxed), 1);
        assert!(poller.ctx.is_some(), "an exception keeps the connection");
    }

    /// Forwards to `upstream`, holding back the first connection's traffic for `delay`: its first
    /// reply arrives after the poller's timeout. A poller that reused that connection would read
    /// the late reply as the answer to its next request (tokio-modbus #324).
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
    async fn timeout_drops_the_connection_and_the_next_poll_reads_fresh_data() {
        let regs = Registers::default();
        regs.set_holding(1, 0, &[1]);
        let (sim_addr, _sim) = simulator(&regs).await;
        let timeout = Duration::from_millis(100);
        let proxy = slow_first_connection_proxy(sim_addr, timeout * 3).await;
        let mut poller = Poller::new(
            device(vec![point("v", Table::Holding, 0, DataType::U16)]),
            bus(proxy, timeout),
        );

        let delay = poller.poll().await.expect_err("first poll times out");
        assert!(
            delay >= Duration::from_millis(100),
            "backs off at least one poll interval"
        );
        assert_eq!(poller.stats.timeouts.load(Ordering::Relaxed), 1);
        assert!(poller.ctx.is_none(), "a timeout drops the connection");

        regs.set_holding(1, 0, &[2]);
        let samples = poller
            .poll()
            .await
            .expect("second poll on a new connection");
        assert_eq!(values(&samples), vec![("v".to_owned(), Value::Int(2))]);
    }

    #[tokio::test]
    async fn dead_device_is_retried_with_growing_backoff() {
        // A port nobody listens on: connection refused at once.
        let addr = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let mut poller = Poller::new(
            device(vec![point("v", Table::Holding, 0, DataType::U16)]),
            bus(addr, Duration::from_millis(200)),
        );
        let mut ceilings = Vec::new();
        for _ in 0..5 {
            ceilings.push(poller.backoff.ceiling());
            let delay = poller.poll().await.expect_err("nothing listens");
            assert!(delay >= poller.device.poll_interval);
            assert!(delay <= MAX_BACKOFF);
        }
        assert!(!poller.healthy);
        assert_eq!(poller.stats.errors.load(Ordering::Relaxed), 5);
        assert!(ceilings.windows(2).all(|w| w[1] > w[0]), "{ceilings:?}");
    }
}
