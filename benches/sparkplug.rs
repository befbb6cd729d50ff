//! The Sparkplug profile against the JSON profile, same run, same parts:
//! `cargo bench --bench sparkplug`.
//!
//! Everything is real: the `fieldrelay` binary polling fieldrelay's Modbus simulator, mosquitto,
//! and a byte-counting TCP proxy between the gateway and the broker.
//!
//! - **bytes**: one device with 20 `u16` points that all change at every 100 ms poll (a thread
//!   bumps every register); bytes the gateway writes to the broker (and the broker's answers)
//!   per sample delivered, JSON (one QoS 1 PUBLISH per sample, its PUBACK) against Sparkplug
//!   with aliases (one DDATA per poll, a PINGREQ per window).
//! - **flush**: a backlog of queued samples (20 points, round robin) in `queue.db` before the
//!   start; samples per second from the first to the last arrival at a subscriber. JSON: its
//!   drain (64 in flight, one message per sample); Sparkplug: the history flush
//!   (`flush_max_metrics` 500, historical DDATA, the PINGRESP barrier).
//!
//! Without `--bench` (as `cargo test --all-targets` runs it) it is a smoke run: small numbers.

mod support;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fieldrelay::config::Qos;
use fieldrelay::queue::{Queue, QueueOptions};
use fieldrelay::sample::{Sample, Value};
use fieldrelay::simulator::Registers;
use fieldrelay::sparkplug::proto::Payload;
use prost::Message as _;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use support::{free_port, gateway_config, BenchResult, Broker, GatewayProcess};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const POINTS: u16 = 20;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Profile {
    Json,
    Sparkplug,
}

impl Profile {
    fn name(self) -> &'static str {
        match self {
            Profile::Json => "json (QoS 1)",
            Profile::Sparkplug => "sparkplug (aliases)",
        }
    }
}

/// A TCP proxy counting the bytes of each direction.
struct CountingProxy {
    port: u16,
    up: Arc<AtomicU64>,
    down: Arc<AtomicU64>,
}

async fn copy_counting(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    count: Arc<AtomicU64>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(n) = from.read(&mut buf).await {
        if n == 0 || to.write_all(&buf[..n]).await.is_err() {
            break;
        }
        count.fetch_add(n as u64, Ordering::Relaxed);
    }
    let _ = to.shutdown().await;
}

impl CountingProxy {
    async fn start(target: u16) -> BenchResult<CountingProxy> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let port = listener.local_addr()?.port();
        let (up, down) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let (u, d) = (up.clone(), down.clone());
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let Ok(outbound) = tokio::net::TcpStream::connect(("127.0.0.1", target)).await
                else {
                    continue;
                };
                let _ = (inbound.set_nodelay(true), outbound.set_nodelay(true));
                let (ri, wi) = inbound.into_split();
                let (ro, wo) = outbound.into_split();
                tokio::spawn(copy_counting(ri, wo, u.clone()));
                tokio::spawn(copy_counting(ro, wi, d.clone()));
            }
        });
        Ok(CountingProxy { port, up, down })
    }

    fn bytes(&self) -> (u64, u64) {
        (
            self.up.load(Ordering::Relaxed),
            self.down.load(Ordering::Relaxed),
        )
    }
}

/// Counts samples arriving at the broker's subscribers: one per JSON data message, one per
/// DDATA metric (live or historical).
struct Counter {
    samples: Arc<AtomicU64>,
    first: Arc<std::sync::Mutex<Option<Instant>>>,
    last: Arc<std::sync::Mutex<Option<Instant>>>,
}

async fn subscribe(port: u16, profile: Profile) -> BenchResult<Counter> {
    let mut options = MqttOptions::new(format!("bench-sub-{port}"), "127.0.0.1", port);
    options.set_max_packet_size(1 << 20, 1 << 20);
    options.set_keep_alive(Duration::from_secs(60));
    let (client, mut eventloop) = AsyncClient::new(options, 1024);
    let filter = match profile {
        Profile::Json => "fieldrelay/bench/boiler/+",
        Profile::Sparkplug => "spBv1.0/bench/DDATA/#",
    };
    client.subscribe(filter, QoS::AtMostOnce).await?;
    let counter = Counter {
        samples: Arc::new(AtomicU64::new(0)),
        first: Arc::default(),
        last: Arc::default(),
    };
    let (samples, first, last) = (
        counter.samples.clone(),
        counter.first.clone(),
        counter.last.clone(),
    );
    let (subscribed_tx, subscribed_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let _client = client;
        let mut subscribed = Some(subscribed_tx);
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    if let Some(tx) = subscribed.take() {
                        let _ = tx.send(());
                    }
                }
                Ok(Event::Incoming(Packet::Publish(publish))) => {
                    let n = match profile {
                        Profile::Json => 1,
                        Profile::Sparkplug => Payload::decode(publish.payload.as_ref())
                            .map_or(0, |p| p.metrics.len() as u64),
                    };
                    let now = Instant::now();
                    first.lock().unwrap().get_or_insert(now);
                    *last.lock().unwrap() = Some(now);
                    samples.fetch_add(n, Ordering::Relaxed);
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(10), subscribed_rx).await??;
    Ok(counter)
}

fn points() -> String {
    (0..POINTS)
        .map(|i| {
            format!(
                "      - {{name: p{i}, table: holding, address: {i}, type: u16, qos: 1, publish: on_change}}\n"
            )
        })
        .collect()
}

fn config(dir: &Path, profile: Profile, broker: u16, device: u16) -> BenchResult<PathBuf> {
    let path = gateway_config(dir, "gw", broker, device, "100ms", &points())?;
    if profile == Profile::Sparkplug {
        let text = std::fs::read_to_string(&path)?.replacen(
            "\nstore:\n",
            "\n  profile: sparkplug\n  sparkplug: {group_id: bench, edge_node_id: gw}\nstore:\n",
            1,
        );
        std::fs::write(&path, text)?;
    }
    Ok(path)
}

/// Bytes per sample (up, down) with every point changing at every poll, for `samples` samples.
async fn bytes_per_sample(profile: Profile, samples: u64) -> BenchResult<(f64, f64)> {
    let dir = tempfile::tempdir()?;
    let broker = Broker::start(dir.path(), "broker", free_port()?, "")?;
    let proxy = CountingProxy::start(broker.port).await?;
    let regs = Registers::default();
    let sim =
        fieldrelay::simulator::Simulator::bind(([127, 0, 0, 1], 0).into(), regs.clone()).await?;
    let device = sim.local_addr().port();
    let cancel = tokio_util::sync::CancellationToken::new();
    tokio::spawn(sim.run(cancel.clone()));
    let stop = Arc::new(AtomicBool::new(false));
    let bumper = {
        let (regs, stop) = (regs.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut v = 0u16;
            while !stop.load(Ordering::Relaxed) {
                v = v.wrapping_add(1);
                regs.set_holding(1, 0, &vec![v; usize::from(POINTS)]);
                std::thread::sleep(Duration::from_millis(25));
            }
        })
    };
    let counter = subscribe(broker.port, profile).await?;
    let path = config(dir.path(), profile, proxy.port, device)?;
    let gateway = GatewayProcess::start(Path::new(env!("CARGO_BIN_EXE_fieldrelay")), &path)?;
    // Past the connection and the births: measure the steady state.
    let warm = samples / 5;
    wait_samples(&counter, warm, Duration::from_secs(60)).await?;
    let (up0, down0, n0) = (
        proxy.bytes().0,
        proxy.bytes().1,
        counter.samples.load(Ordering::Relaxed),
    );
    wait_samples(&counter, n0 + samples, Duration::from_secs(120)).await?;
    let (up1, down1) = proxy.bytes();
    let n = counter.samples.load(Ordering::Relaxed) - n0;
    stop.store(true, Ordering::Relaxed);
    let _ = bumper.join();
    gateway.stop();
    cancel.cancel();
    Ok((
        (up1 - up0) as f64 / n as f64,
        (down1 - down0) as f64 / n as f64,
    ))
}

async fn wait_samples(counter: &Counter, n: u64, timeout: Duration) -> BenchResult<()> {
    let deadline = Instant::now() + timeout;
    while counter.samples.load(Ordering::Relaxed) < n {
        if Instant::now() > deadline {
            return Err(format!(
                "only {} of {n} samples arrived",
                counter.samples.load(Ordering::Relaxed)
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

/// Samples per second of a `backlog` flushed after the start.
async fn flush_rate(profile: Profile, backlog: u64) -> BenchResult<f64> {
    let dir = tempfile::tempdir()?;
    let broker = Broker::cloud(dir.path(), free_port()?)?;
    let (queue, _live, writer) = Queue::open(&dir.path().join("data"), QueueOptions::default())?;
    for i in 0..backlog {
        queue
            .push(Sample {
                device: Arc::from("boiler"),
                point: Arc::from(format!("p{}", i % u64::from(POINTS)).as_str()),
                value: Value::Int((i / u64::from(POINTS)) as i64),
                ts_ms: 1_700_000_000_000 + i as i64,
                qos: Qos::AtLeastOnce,
                retain: false,
            })
            .await?;
    }
    queue.progress().wait_for(|p| p.last_seq >= backlog).await?;
    writer.close().await?;
    let counter = subscribe(broker.port, profile).await?;
    // A device nobody answers: only the backlog flows.
    let path = config(dir.path(), profile, broker.port, free_port()?)?;
    let gateway = GatewayProcess::start(Path::new(env!("CARGO_BIN_EXE_fieldrelay")), &path)?;
    wait_samples(&counter, backlog, Duration::from_secs(300)).await?;
    gateway.stop();
    let first = counter.first.lock().unwrap().ok_or("no arrival")?;
    let last = counter.last.lock().unwrap().ok_or("no arrival")?;
    Ok(backlog as f64 / (last - first).as_secs_f64().max(1e-6))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> BenchResult<()> {
    let full = std::env::args().any(|a| a == "--bench");
    let (samples, backlog) = if full { (4000, 50_000) } else { (200, 2000) };
    println!("bytes on the wire per sample, 20 points changing every poll ({samples} samples):");
    let mut bytes = Vec::new();
    for profile in [Profile::Json, Profile::Sparkplug] {
        let (up, down) = bytes_per_sample(profile, samples).await?;
        bytes.push(up + down);
        println!(
            "  {:<20} up {up:>7.1} B  down {down:>6.1} B  total {:>7.1} B  ratio {:.2}",
            profile.name(),
            up + down,
            (up + down) / bytes[0]
        );
    }
    println!("flush of a {backlog}-sample backlog:");
    let mut rates = Vec::new();
    for profile in [Profile::Json, Profile::Sparkplug] {
        let rate = flush_rate(profile, backlog).await?;
        rates.push(rate);
        println!(
            "  {:<20} {rate:>10.0} samples/s  ratio {:.2}",
            profile.name(),
            rate / rates[0]
        );
    }
    Ok(())
}
