//! Fieldbus benchmark (`cargo bench --bench fieldbus`), printing a table.
//!
//! 1. Requests per poll cycle for a realistic map (200 points on 4 devices, small gaps between
//!    points, three tables) with coalescing vs one request per point (`coalesce: false`).
//! 2. Points per second read from a loopback Modbus TCP device (tokio-modbus' server, same
//!    process) through fieldrelay's bus owner (plan, wire, decode, change filter, samples),
//!    against plain tokio-modbus client loops measured in the same run: one issuing the same
//!    coalesced reads (fieldrelay's overhead), one reading point by point (what coalescing buys).
//!
//! Figures are ratios against the baselines; absolute numbers depend on the machine.

use std::net::SocketAddr;
use std::time::Duration;

use fieldrelay::config::{
    BusConfig, BusKind, Coalesce, DataType, DeviceConfig, Encoding, ModbusSource, Planning,
    PointConfig, PointSource, PublishMode, Qos, Reporting, Table,
};
use fieldrelay::modbus::plan::{plan, Read};
use fieldrelay::modbus::{self};
use fieldrelay::simulator::{Registers, Simulator};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use fieldrelay::sample::Sample;
use fieldrelay::sample::SampleSink;
use tokio_modbus::client::Reader;
use tokio_modbus::Slave;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long each throughput case runs: 2 s under `cargo bench` (which passes `--bench`), a short
/// smoke run under `cargo test --all-targets`, which also runs this binary.
fn run_time() -> Duration {
    if std::env::args().any(|a| a == "--bench") {
        Duration::from_secs(2)
    } else {
        Duration::from_millis(200)
    }
}

fn point(i: usize, table: Table, address: u16, data_type: DataType) -> PointConfig {
    PointConfig {
        name: format!("p{i}"),
        source: PointSource::Modbus(ModbusSource {
            table,
            address,
            bit: None,
            encoding: Encoding::default(),
        }),
        data_type,
        scale: 1.0,
        offset: 0.0,
        decimals: None,
        qos: Qos::AtLeastOnce,
        retain: false,
        reporting: Reporting {
            publish: PublishMode::EveryPoll,
            deadband: 0.0,
            max_silence: None,
        },
        unit: None,
        write: None,
    }
}

/// 50 points per device: 30 holding (f32/u16/u32 with 0..3 unused registers between), 12 input
/// u16 with gaps up to 12 (some too wide to bridge), 8 coils.
fn device_points(seed: u64) -> Vec<PointConfig> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut points = Vec::new();
    let mut address = 0u16;
    for i in 0..30 {
        let data_type = [DataType::F32, DataType::U16, DataType::U32][rng.usize(0..3)];
        points.push(point(i, Table::Holding, address, data_type));
        address += data_type.width() + rng.u16(0..4);
    }
    let mut address = 100u16;
    for i in 30..42 {
        points.push(point(i, Table::Input, address, DataType::U16));
        address += 1 + rng.u16(0..13);
    }
    for i in 42..50 {
        points.push(point(i, Table::Coil, (i as u16 - 42) * 3, DataType::Bool));
    }
    points
}

fn planning(coalesce: Coalesce) -> Planning {
    Planning {
        max_gap: 8,
        max_registers_per_read: 125,
        coalesce,
    }
}

fn device(name: &str, unit: u8, points: Vec<PointConfig>, coalesce: Coalesce) -> DeviceConfig {
    DeviceConfig {
        name: name.into(),
        bus: "bus".into(),
        unit_id: unit,
        poll_interval: Duration::from_micros(1),
        points,
        planning: planning(coalesce),
        backoff_max: Duration::from_secs(1),
        offline_after: 3,
    }
}

/// A sink that only counts samples, so the figure is the bus owner's own cost.
#[derive(Clone, Default)]
struct Count(Arc<AtomicU64>);

impl SampleSink for Count {
    async fn push(&self, _sample: Sample) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// Points per second through fieldrelay's bus owner.
async fn owner_rate(addr: SocketAddr, points: &[PointConfig], coalesce: Coalesce) -> f64 {
    let bus = BusConfig {
        name: "bus".into(),
        kind: BusKind::Tcp {
            host: addr.ip().to_string(),
            port: addr.port(),
        },
        timeout: Duration::from_secs(1),
        turnaround_delay: Duration::ZERO,
    };
    let count = Count::default();
    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    let _handle = modbus::spawn_bus(
        bus,
        vec![device("dev", 1, points.to_vec(), coalesce)],
        count.clone(),
        cancel.clone(),
        &tracker,
    );
    // Warm up (connect), then count samples for RUN.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = count.0.load(Ordering::Relaxed);
    let start = std::time::Instant::now();
    tokio::time::sleep(run_time()).await;
    let n = count.0.load(Ordering::Relaxed) - before;
    let elapsed = start.elapsed();
    cancel.cancel();
    tracker.close();
    tracker.wait().await;
    n as f64 / elapsed.as_secs_f64()
}

/// Points per second from a plain tokio-modbus client issuing `reads` in a loop.
async fn plain_rate(addr: SocketAddr, reads: &[Read]) -> f64 {
    let mut ctx = tokio_modbus::client::tcp::connect_slave(addr, Slave(1))
        .await
        .expect("connect");
    let start = std::time::Instant::now();
    let mut points = 0u64;
    let run = run_time();
    while start.elapsed() < run {
        for read in reads {
            let ok = match read.table {
                Table::Coil => ctx.read_coils(read.start, read.count).await.is_ok(),
                Table::DiscreteInput => ctx
                    .read_discrete_inputs(read.start, read.count)
                    .await
                    .is_ok(),
                Table::Input => ctx
                    .read_input_registers(read.start, read.count)
                    .await
                    .is_ok(),
                Table::Holding => ctx
                    .read_holding_registers(read.start, read.count)
                    .await
                    .is_ok(),
            };
            if ok {
                points += read.points.len() as u64;
            }
        }
    }
    points as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        println!("fieldbus benchmark (loopback, tokio-modbus server in process)\n");
        // 1. Requests per poll cycle.
        let devices: Vec<Vec<PointConfig>> = (0..4).map(device_points).collect();
        let total: usize = devices.iter().map(Vec::len).sum();
        let coalesced: usize = devices
            .iter()
            .map(|p| plan(p, &planning(Coalesce::Merge)).len())
            .sum();
        let single: usize = devices
            .iter()
            .map(|p| plan(p, &planning(Coalesce::OnePerPoint)).len())
            .sum();
        println!("| map: {total} points on 4 devices | requests per poll cycle |");
        println!("|---|---|");
        println!("| one request per point (coalesce: false) | {single} |");
        println!("| coalesced (max_gap 8) | {coalesced} |");
        println!(
            "| ratio | {:.1}x fewer requests |\n",
            single as f64 / coalesced as f64
        );

        // 2. Points per second from a loopback TCP device.
        let regs = Registers::default();
        let sim = Simulator::bind(SocketAddr::from(([127, 0, 0, 1], 0)), regs)
            .await
            .expect("bind");
        let addr = sim.local_addr();
        let cancel = CancellationToken::new();
        tokio::spawn(sim.run(cancel.clone()));
        let points = &devices[0];
        let merged = plan(points, &planning(Coalesce::Merge));
        let apart = plan(points, &planning(Coalesce::OnePerPoint));
        let plain_merged = plain_rate(addr, &merged).await;
        let plain_apart = plain_rate(addr, &apart).await;
        let ours = owner_rate(addr, points, Coalesce::Merge).await;
        let ours_apart = owner_rate(addr, points, Coalesce::OnePerPoint).await;
        println!(
            "| {} points, {} coalesced reads | points/s | vs plain tokio-modbus, same reads |",
            points.len(),
            merged.len()
        );
        println!("|---|---|---|");
        println!("| plain tokio-modbus loop, coalesced reads (baseline) | {plain_merged:.0} | 1.00 |");
        println!(
            "| fieldrelay bus owner, coalesced | {ours:.0} | {:.2} |",
            ours / plain_merged
        );
        println!("| plain tokio-modbus loop, one read per point (baseline) | {plain_apart:.0} | 1.00 |");
        println!(
            "| fieldrelay bus owner, coalesce: false | {ours_apart:.0} | {:.2} |",
            ours_apart / plain_apart
        );
        println!(
            "\ncoalescing gain through the bus owner: {:.1}x points/s",
            ours / ours_apart
        );
        println!(
            "fieldrelay coalesced vs a plain tokio-modbus loop reading point by point: {:.1}x points/s",
            ours / plain_apart
        );
        cancel.cancel();
    });
}
