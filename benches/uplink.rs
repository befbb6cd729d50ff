//! The uplink's goals, each row against a baseline measured in the same run:
//! `cargo bench --bench uplink [-- drain|rtt|live ...]` (all three without a name).
//!
//! Everything is real: the `fieldrelay` binary (`run --config`, `store.sync: full`, 64 in
//! flight, persistent session) polling fieldrelay's Modbus simulator, a "cloud" mosquitto, a
//! persistent QoS 1 subscriber on it that timestamps every arrival (`support::Subscriber`), and
//! for the baselines a local mosquitto bridged to the cloud one.
//!
//! - **drain**: a 50,000-row QoS 1 backlog (one sample per message) already in `queue.db` is
//!   sent once the gateway starts; rate = messages ÷ (last arrival − first arrival) at the
//!   subscriber. Baseline: a local mosquitto holding the same 50,000 QoS 1 messages (same
//!   topic and payloads, loaded with `mosquitto_pub -q 1 -M 64` while the cloud was down) for
//!   a persistent bridge (`cleansession false`, `max_inflight_messages 64`), measured the same
//!   way once the cloud broker is up. A third row, a pipelined sender that costs nothing
//!   (pre-built PUBLISHes, 64 in flight, nothing durable) straight to the cloud, shows what any
//!   sender with that window gets through this broker and subscriber. Several runs (the order
//!   rotates), min / median / max and the median of the per-run ratios. mosquitto 2.0.11's
//!   bridge does not keep to `max_inflight_messages` (see the rtt table: its rate × RTT is the
//!   window it really uses), so it is not held to 64 in flight.
//! - **rtt**: the same drain through a proxy delaying each direction by 25 ms (RTT 50 ms),
//!   against window ÷ RTT (the most any sender with 64 in flight can do; the RTT is measured
//!   through the proxy), with the bridge through the same proxy beside it (its rate × RTT is the
//!   window it really uses). Meanwhile a QoS 1 point polled every 100 ms is live: its samples'
//!   latency (subscriber arrival − the sample's `ts`, taken at the poll), against the link's
//!   one-way delay, with `uplink.drain: in_order` (every binary) and `live_first` (this build).
//! - **live**: an empty queue, two points read by the same poll every 100 ms, one QoS 1 (a commit
//!   before the publish), one QoS 0 (the baseline): latency poll → subscriber, median and p99.
//!   `ts` has millisecond resolution, so both carry up to 1 ms of truncation. Rows: the cloud
//!   mosquitto as shipped (no `set_tcp_nodelay`: the QoS 1 PUBLISH, arriving ~1 ms after the
//!   QoS 0 one, waits in the broker's socket under Nagle's algorithm for the subscriber's delayed
//!   ACK of the QoS 0 one, ~40 ms), the same with `set_tcp_nodelay true`, and the QoS 1 point
//!   alone: the last two are the gateway's own latency.
//!
//! Knobs (environment): `FR_BENCH_RUNS` (paired runs, default 3), `FR_BENCH_ROWS` (50000),
//! `FR_BENCH_RTT_ROWS` (10000), `FR_BENCH_LIVE_SAMPLES` (300), `FR_BENCH_SUB_NODELAY` (1: the
//! subscriber sets TCP_NODELAY), `FR_BENCH_BROKER_NODELAY` (0: the cloud mosquitto's
//! `set_tcp_nodelay`; the live table runs both), `FR_BENCH_BASELINES` (0: fieldrelay only, for
//! profiles), `FR_BENCH_COMPARE` (other `fieldrelay` binaries, `:`-separated, e.g. experiments'
//! builds, measured in the same runs as this build's), `FR_BENCH_WRAP` (a profiler put in front of the
//! gateway, see `support::GatewayProcess`), `FR_BENCH_KEEP` (keep the run directories).
//!
//! Without `--bench` (as `cargo test --all-targets` runs it) it is a smoke run of a few seconds:
//! small numbers, no bridge.

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fieldrelay::queue::{Queue, QueueOptions};
use fieldrelay::simulator::Registers;
use support::{
    gateway_config, mqtt_rtt, quantile, spread, Arrival, BenchResult, Broker, DelayProxy,
    GatewayProcess, Subscriber,
};

const BACKLOG_TOPIC: &str = "fieldrelay/bench/boiler/temperature";
const LIVE_TOPIC: &str = "fieldrelay/bench/boiler/live";
const QOS0_TOPIC: &str = "fieldrelay/bench/boiler/live0";
const FILTER: &str = "fieldrelay/bench/#";
const WINDOW: u16 = 64;
const ONE_WAY: Duration = Duration::from_millis(25);

#[derive(Clone)]
struct Knobs {
    runs: usize,
    rows: u64,
    rtt_rows: u64,
    live_samples: usize,
    sub_nodelay: bool,
    broker_nodelay: bool,
    /// Run the baselines (bridge, pipelined sender); off for profiling the gateway alone.
    baselines: bool,
    /// The `fieldrelay` binaries measured: this build's, then `FR_BENCH_COMPARE`'s (experiments'
    /// builds, measured in the same runs).
    bins: Vec<(String, PathBuf)>,
}

fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

impl Knobs {
    fn read() -> Knobs {
        let full = std::env::args().any(|a| a == "--bench");
        let small = |big: u64, small: u64| if full { big } else { small };
        Knobs {
            runs: env_or("FR_BENCH_RUNS", small(3, 1) as usize),
            rows: env_or("FR_BENCH_ROWS", small(50_000, 300)),
            rtt_rows: env_or("FR_BENCH_RTT_ROWS", small(10_000, 200)),
            live_samples: env_or("FR_BENCH_LIVE_SAMPLES", small(300, 10) as usize),
            sub_nodelay: env_or("FR_BENCH_SUB_NODELAY", 1u8) == 1,
            broker_nodelay: env_or("FR_BENCH_BROKER_NODELAY", 0u8) == 1,
            baselines: full && env_or("FR_BENCH_BASELINES", 1u8) == 1,
            bins: std::iter::once((
                "fieldrelay".to_owned(),
                PathBuf::from(env!("CARGO_BIN_EXE_fieldrelay")),
            ))
            .chain(
                std::env::var("FR_BENCH_COMPARE")
                    .unwrap_or_default()
                    .split(':')
                    .filter(|p| !p.is_empty())
                    .map(|p| {
                        let bin = PathBuf::from(p);
                        let name = bin
                            .file_name()
                            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
                        (format!("fieldrelay {name} (FR_BENCH_COMPARE)"), bin)
                    }),
            )
            .collect(),
        }
    }

    fn cloud_conf(&self) -> String {
        let mut conf = String::from("max_queued_messages 200000\nmax_inflight_messages 0\n");
        if self.broker_nodelay {
            conf.push_str("set_tcp_nodelay true\n");
        }
        conf
    }
}

/// Commits `n` backlog rows into `<dir>/data/queue.db` through the queue itself.
async fn fill(dir: &Path, n: u64) -> BenchResult<()> {
    let (queue, _live, writer) = Queue::open(&dir.join("data"), QueueOptions::default())?;
    for i in 0..n {
        queue.push(support::backlog_sample(i)).await?;
    }
    queue.progress().wait_for(|p| p.last_seq >= n).await?;
    writer.close().await?;
    Ok(())
}

/// The first and the last arrival on a topic, and the rate between them.
struct Span {
    rate: f64,
    first: Arrival,
    last: Arrival,
}

/// Messages per second between the first and the last arrival on `topic`, once `n` arrived.
fn rate(arrivals: &[Arrival], topic: &str, n: u64) -> Option<Span> {
    let on: Vec<&Arrival> = arrivals.iter().filter(|a| a.topic == topic).collect();
    if (on.len() as u64) < n || n < 2 {
        return None;
    }
    let (first, last) = ((*on.first()?).clone(), (*on.last()?).clone());
    let secs = last.at.duration_since(first.at).as_secs_f64().max(1e-6);
    Some(Span {
        rate: (n - 1) as f64 / secs,
        first,
        last,
    })
}

fn count_on(arrivals: &[Arrival], topic: &str) -> u64 {
    arrivals.iter().filter(|a| a.topic == topic).count() as u64
}

/// Latencies (ms) of the samples on `topic`: arrival wall clock − `ts`.
fn latencies(arrivals: &[Arrival], topic: &str, ts_from_ms: i64, ts_to_ms: i64) -> Vec<f64> {
    let mut out: Vec<f64> = arrivals
        .iter()
        .filter(|a| a.topic == topic)
        .filter_map(|a| Some((a.wall_us, a.ts_ms?)))
        .filter(|(_, ts)| (ts_from_ms..=ts_to_ms).contains(ts))
        .map(|(wall, ts)| wall as f64 / 1000.0 - ts as f64)
        .collect();
    out.sort_by(|a, b| a.total_cmp(b));
    out
}

/// What one fieldrelay drain gave.
struct Drained {
    rate: f64,
    /// Gateway CPU (user + system) per message between the first and the last arrival, µs.
    cpu_us: f64,
    /// Latencies (ms) of live QoS 1 samples polled while the backlog drained.
    live_ms: Vec<f64>,
}

/// The gateway drains `rows` committed rows to the cloud broker (through a delaying proxy when
/// `one_way` is set); a QoS 1 point polled every 100 ms runs beside it when `live`. `drain`:
/// the `uplink.drain` line, if any.
#[allow(clippy::too_many_arguments)]
fn fieldrelay_drain(
    rt: &tokio::runtime::Runtime,
    knobs: &Knobs,
    bin: &Path,
    dir: &Path,
    rows: u64,
    one_way: Option<Duration>,
    live: bool,
    drain: Option<&str>,
) -> BenchResult<Drained> {
    rt.block_on(fill(dir, rows))?;
    let cloud = Broker::start(dir, "cloud", support::free_port()?, &knobs.cloud_conf())?;
    let sub = Subscriber::connect(cloud.port, "bench-sub", FILTER, knobs.sub_nodelay)?;
    let proxy = one_way
        .map(|d| DelayProxy::start(cloud.port, d))
        .transpose()?;
    let uplink_port = proxy.as_ref().map_or(cloud.port, |p| p.port);
    let regs = Registers::default();
    regs.set_holding(1, 0, &[7]);
    let (device, sim) = rt.block_on(support::simulator(regs))?;
    let points = if live {
        "      - {name: live, table: holding, address: 0, type: u16, qos: 1, publish: every_poll}\n"
    } else {
        "      - {name: idle, table: holding, address: 0, type: u16, qos: 0}\n"
    };
    let poll = if live { "100ms" } else { "10s" };
    let config = gateway_config(dir, "drain", uplink_port, device, poll, points)?;
    if let Some(drain) = drain {
        let text = std::fs::read_to_string(&config)?;
        let with = text.replacen(
            "  max_inflight: 64\n",
            &format!("  max_inflight: 64\n  drain: {drain}\n"),
            1,
        );
        std::fs::write(&config, with)?;
    }
    let gateway = GatewayProcess::start(bin, &config)?;
    let cpu = support::CpuSampler::start(gateway.pid().ok_or("no gateway pid")?)?;
    let timeout = Duration::from_secs(60 + rows / 500);
    let done = sub.wait_for(timeout, |a| count_on(a, BACKLOG_TOPIC) >= rows);
    let arrivals = sub.snapshot();
    let log = gateway.log_tail();
    gateway.stop();
    sim.cancel();
    if !done {
        return Err(format!(
            "fieldrelay delivered {} of {rows} rows in {timeout:?} (subscriber: {:?}); gateway \
             log:\n{log}",
            count_on(&arrivals, BACKLOG_TOPIC),
            sub.error(),
        )
        .into());
    }
    let span = rate(&arrivals, BACKLOG_TOPIC, rows).ok_or("too few arrivals for a rate")?;
    let live_ms = latencies(
        &arrivals,
        LIVE_TOPIC,
        span.first.wall_us / 1000,
        span.last.wall_us / 1000,
    );
    let cpu_us = cpu
        .between(span.first.at, span.last.at)
        .map_or(f64::NAN, |s| s * 1e6 / (rows - 1) as f64);
    Ok(Drained {
        rate: span.rate,
        cpu_us,
        live_ms,
    })
}

/// The bridge baseline: a local mosquitto holds `rows` QoS 1 messages (same topic, same
/// payloads) for a persistent bridge to a cloud broker that is down; then the cloud comes up
/// with the subscriber, and the bridge drains.
fn bridge_drain(
    knobs: &Knobs,
    dir: &Path,
    rows: u64,
    one_way: Option<Duration>,
) -> BenchResult<f64> {
    let cloud_port = support::free_port()?;
    let proxy = one_way
        .map(|d| DelayProxy::start(cloud_port, d))
        .transpose()?;
    let address = proxy.as_ref().map_or(cloud_port, |p| p.port);
    let local_port = support::free_port()?;
    // `restart_timeout 1`: the bridge redials every second (mosquitto's default waits 5 s and
    // more); only the first-to-last rate is compared, but the bench should not idle.
    let local = Broker::start(
        dir,
        "local",
        local_port,
        &format!(
            "max_queued_messages 0\nmax_inflight_messages {WINDOW}\n\
             connection cloud\naddress 127.0.0.1:{address}\ntopic fieldrelay/bench/# out 1\n\
             cleansession false\nnotifications false\ntry_private false\n\
             bridge_protocol_version mqttv311\nrestart_timeout 1\n"
        ),
    )?;
    publish_lines(local.port, rows)?;
    let cloud = Broker::start(dir, "cloud", cloud_port, &knobs.cloud_conf())?;
    let sub = Subscriber::connect(cloud.port, "bench-sub", FILTER, knobs.sub_nodelay)?;
    let timeout = Duration::from_secs(90 + rows / 500);
    let done = sub.wait_for(timeout, |a| count_on(a, BACKLOG_TOPIC) >= rows);
    let arrivals = sub.snapshot();
    drop(local);
    if !done {
        return Err(format!(
            "the bridge delivered {} of {rows} messages in {timeout:?} (if none are missing at \
             the start, it dialled before the subscriber subscribed: run again)",
            count_on(&arrivals, BACKLOG_TOPIC)
        )
        .into());
    }
    Ok(rate(&arrivals, BACKLOG_TOPIC, rows)
        .ok_or("too few arrivals for a rate")?
        .rate)
}

/// `mosquitto_pub -q 1 -M 64 -l`: the backlog's payloads, one per line, to `port`.
fn publish_lines(port: u16, rows: u64) -> BenchResult<()> {
    let mut input = Vec::new();
    for i in 0..rows {
        input.extend_from_slice(&fieldrelay::queue::wire::sample_payload(
            &support::backlog_sample(i),
            Some(i + 1),
        ));
        input.push(b'\n');
    }
    let mut child = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args([
            "-q",
            "1",
            "-M",
            &WINDOW.to_string(),
            "-t",
            BACKLOG_TOPIC,
            "-l",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    child.stdin.take().ok_or("no stdin")?.write_all(&input)?;
    if !child.wait()?.success() {
        return Err("mosquitto_pub failed".into());
    }
    Ok(())
}

/// The same payloads from [`support::pipelined_publish`] straight to the cloud broker: what
/// the broker and the subscriber carry for a sender that costs nothing, at the same window.
fn pipelined(knobs: &Knobs, dir: &Path, rows: u64) -> BenchResult<f64> {
    let cloud = Broker::start(dir, "cloud", support::free_port()?, &knobs.cloud_conf())?;
    let sub = Subscriber::connect(cloud.port, "bench-sub", FILTER, knobs.sub_nodelay)?;
    let payloads: Vec<bytes::Bytes> = (0..rows)
        .map(|i| fieldrelay::queue::wire::sample_payload(&support::backlog_sample(i), Some(i + 1)))
        .collect();
    support::pipelined_publish(cloud.port, BACKLOG_TOPIC, &payloads, usize::from(WINDOW))?;
    sub.wait_for(Duration::from_secs(60), |a| {
        count_on(a, BACKLOG_TOPIC) >= rows
    });
    Ok(rate(&sub.snapshot(), BACKLOG_TOPIC, rows)
        .ok_or("pipelined publisher: too few arrivals")?
        .rate)
}

fn run_dir(base: &Path, name: &str) -> BenchResult<std::path::PathBuf> {
    let dir = base.join(name);
    std::fs::create_dir_all(&dir)?;
    // mosquitto started as root runs as `mosquitto`: it must read its files here.
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    Ok(dir)
}

/// One row of a table: a name and what each run measured.
struct Case {
    name: String,
    values: Vec<f64>,
}

impl Case {
    fn new(name: impl Into<String>) -> Case {
        Case {
            name: name.into(),
            values: vec![],
        }
    }

    /// One empty row per measured `fieldrelay` binary, named by `name`.
    fn per_binary(knobs: &Knobs, name: impl Fn(&str) -> String) -> Vec<Case> {
        knobs
            .bins
            .iter()
            .map(|(bin, _)| Case::new(name(bin)))
            .collect()
    }
}

/// Prints `cases` as rows of min / median / max and the median of the per-run ratios to
/// `cases[base]`.
fn print_rows(cases: &[Case], base: usize, unit: &str) {
    header(&[
        "case",
        &format!("min {unit}"),
        "median",
        "max",
        "vs baseline",
    ]);
    for case in cases {
        let mut ratios: Vec<f64> = case
            .values
            .iter()
            .zip(&cases[base].values)
            .map(|(a, b)| a / b)
            .collect();
        let (rmin, rmed, rmax) = spread(&mut ratios);
        let (lo, mid, hi) = spread(&mut case.values.clone());
        // Small values (µs per message) keep a decimal.
        let f = |v: f64| {
            if v.abs() < 100.0 {
                format!("{v:.1}")
            } else {
                format!("{v:.0}")
            }
        };
        println!(
            "| {:<52} | {:>10} | {:>10} | {:>10} | {rmed:>6.2}x ({rmin:.2}-{rmax:.2}) |",
            case.name,
            f(lo),
            f(mid),
            f(hi)
        );
    }
}

fn drain(rt: &tokio::runtime::Runtime, knobs: &Knobs, base: &Path) -> BenchResult<()> {
    let n = knobs.rows;
    let mut cases = Case::per_binary(knobs, |name| format!("{name} (queue.db, sync full)"));
    let bridge = cases.len();
    if knobs.baselines {
        for name in [
            "mosquitto bridge (baseline)",
            "pipelined sender, nothing durable (ceiling)",
        ] {
            cases.push(Case::new(name));
        }
    }
    let mut cpu = Case::per_binary(knobs, str::to_owned);
    for run in 0..knobs.runs {
        // Rotate the order, so no case always gets the warmer (or busier) machine.
        for step in 0..cases.len() {
            let which = (run + step) % cases.len();
            let dir = run_dir(base, &format!("drain-{run}-{which}"))?;
            let rate = match knobs.bins.get(which) {
                Some((_, bin)) => {
                    let drained = fieldrelay_drain(rt, knobs, bin, &dir, n, None, false, None)?;
                    cpu[which].values.push(drained.cpu_us);
                    drained.rate
                }
                None if which == bridge => bridge_or_retry(knobs, &dir, n, None)?,
                None => pipelined(knobs, &dir, n)?,
            };
            cases[which].values.push(rate);
        }
    }
    println!(
        "goal 1: steady drain of a {n}-row QoS 1 backlog to a loopback mosquitto, {WINDOW} in \
         flight (the bridge: max_inflight_messages {WINDOW}), one sample per message; msgs/s \
         first-to-last at a persistent QoS 1 subscriber; {} runs",
        knobs.runs
    );
    print_rows(&cases, if knobs.baselines { bridge } else { 0 }, "msg/s");
    println!("gateway CPU (user + system) per message during the drain, µs (wall-clock rates on a shared machine swing with its load; this does less)");
    print_rows(&cpu, 0, "µs");
    println!("  goal: fieldrelay >= 2x the bridge (ratios: median of the per-run ratios)\n");
    Ok(())
}

/// The bridge run; once more if the bridge dialled the cloud before the subscriber was there.
fn bridge_or_retry(
    knobs: &Knobs,
    dir: &Path,
    n: u64,
    one_way: Option<Duration>,
) -> BenchResult<f64> {
    match bridge_drain(knobs, dir, n, one_way) {
        Ok(rate) => Ok(rate),
        Err(error) => {
            eprintln!("bridge run failed ({error}); once more");
            let again = dir.join("again");
            std::fs::create_dir_all(&again)?;
            std::fs::set_permissions(&again, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
            bridge_drain(knobs, &again, n, one_way)
        }
    }
}

fn header(columns: &[&str]) {
    let mut line = format!("| {:<52} |", columns[0]);
    let mut rule = format!("|{:-<54}|", "");
    for c in &columns[1..] {
        line.push_str(&format!(" {c:>10} |"));
        rule.push_str(&format!("{:->12}|", ""));
    }
    println!("{line}\n{rule}");
}

fn rtt(rt: &tokio::runtime::Runtime, knobs: &Knobs, base: &Path) -> BenchResult<()> {
    let n = knobs.rtt_rows;
    let measured = {
        let dir = run_dir(base, "rtt-ping")?;
        let cloud = Broker::start(&dir, "cloud", support::free_port()?, &knobs.cloud_conf())?;
        let proxy = DelayProxy::start(cloud.port, ONE_WAY)?;
        mqtt_rtt(proxy.port, 20)?
    };
    let ceiling = f64::from(WINDOW) / measured.as_secs_f64();
    // Every binary as configured by default (`drain: in_order`), and this build with
    // `drain: live_first` (older builds do not know the key).
    let mut variants: Vec<(String, &Path, Option<&str>)> = knobs
        .bins
        .iter()
        .map(|(name, bin)| (format!("{name}, drain: in_order"), bin.as_path(), None))
        .collect();
    variants.push((
        "fieldrelay, drain: live_first (live_share 25)".to_owned(),
        knobs.bins[0].1.as_path(),
        Some("live_first"),
    ));
    let mut cases: Vec<Case> = variants.iter().map(|(name, ..)| Case::new(name)).collect();
    let mut live: Vec<Vec<f64>> = vec![vec![]; cases.len()];
    let bridge = cases.len();
    if knobs.baselines {
        cases.push(Case::new("mosquitto bridge"));
    }
    for run in 0..knobs.runs {
        for step in 0..cases.len() {
            let which = (run + step) % cases.len();
            let dir = run_dir(base, &format!("rtt-{run}-{which}"))?;
            let rate = match variants.get(which) {
                Some((_, bin, drain)) => {
                    let drained =
                        fieldrelay_drain(rt, knobs, bin, &dir, n, Some(ONE_WAY), true, *drain)?;
                    live[which].extend(drained.live_ms);
                    drained.rate
                }
                None => bridge_or_retry(knobs, &dir, n, Some(ONE_WAY))?,
            };
            cases[which].values.push(rate);
        }
    }
    if knobs.baselines {
        let mut rates = cases[bridge].values.clone();
        let window = spread(&mut rates).1 * measured.as_secs_f64();
        cases[bridge].name = format!("mosquitto bridge (in flight: ~{window:.0})");
    }
    cases.push(Case {
        name: "window / RTT (baseline)".to_owned(),
        values: vec![ceiling; knobs.runs],
    });
    println!(
        "goal 2: drain of {n} QoS 1 rows over a link with RTT {:.1} ms (proxy, 25 ms each way), \
         {WINDOW} in flight; window / RTT = {ceiling:.0} msg/s; {} runs",
        measured.as_secs_f64() * 1000.0,
        knobs.runs
    );
    print_rows(&cases, cases.len() - 1, "msg/s");
    let one_way_ms = measured.as_secs_f64() * 500.0;
    println!(
        "live QoS 1 samples polled every 100 ms while the backlog drains, poll -> subscriber, ms \
         (baseline: the link's one-way delay, {one_way_ms:.1} ms)"
    );
    header(&["case", "samples", "median", "p99", "vs baseline"]);
    for ((name, ..), mut live) in variants.iter().zip(live) {
        live.sort_by(|a, b| a.total_cmp(b));
        println!(
            "| {name:<52} | {:>10} | {:>10.0} | {:>10.0} | {:>10} |",
            live.len(),
            quantile(&live, 0.5),
            quantile(&live, 0.99),
            format!("{:.1}x", quantile(&live, 0.5) / one_way_ms),
        );
    }
    println!(
        "  goal: >= 90% of window / RTT; live QoS 1 within the live share of the window \
         (live_first: about one RTT; in_order waits for the backlog)\n"
    );
    Ok(())
}

/// One gateway session for the live table: latencies (ms) of the QoS 1 point and of the QoS 0
/// point read by the same poll (`with_qos0`), the cloud broker with or without
/// `set_tcp_nodelay`.
fn live_session(
    rt: &tokio::runtime::Runtime,
    knobs: &Knobs,
    bin: &Path,
    dir: &Path,
    broker_nodelay: bool,
    with_qos0: bool,
) -> BenchResult<(Vec<f64>, Vec<f64>)> {
    let knobs = Knobs {
        broker_nodelay,
        ..knobs.clone()
    };
    let cloud = Broker::start(dir, "cloud", support::free_port()?, &knobs.cloud_conf())?;
    let sub = Subscriber::connect(cloud.port, "bench-sub", FILTER, knobs.sub_nodelay)?;
    let regs = Registers::default();
    regs.set_holding(1, 0, &[7, 7]);
    let (device, sim) = rt.block_on(support::simulator(regs))?;
    let mut points = String::from(
        "      - {name: live, table: holding, address: 0, type: u16, qos: 1, publish: every_poll}\n",
    );
    if with_qos0 {
        points.push_str(
            "      - {name: live0, table: holding, address: 1, type: u16, qos: 0, publish: every_poll}\n",
        );
    }
    let config = gateway_config(dir, "live", cloud.port, device, "100ms", &points)?;
    let gateway = GatewayProcess::start(bin, &config)?;
    // The first second (connect, birth, first polls) is not steady state.
    let warm = support::wall_us() / 1000 + 1000;
    let want = knobs.live_samples;
    let enough = |a: &[Arrival]| {
        let n = |topic| {
            a.iter()
                .filter(|x| x.topic == topic && x.ts_ms.is_some_and(|t| t >= warm))
                .count()
        };
        n(LIVE_TOPIC) >= want && (!with_qos0 || n(QOS0_TOPIC) >= want)
    };
    let timeout = Duration::from_secs(30 + want as u64 / 5);
    let done = sub.wait_for(timeout, enough);
    let arrivals = sub.snapshot();
    let log = gateway.log_tail();
    gateway.stop();
    sim.cancel();
    if !done {
        return Err(
            format!("live: too few samples arrived in {timeout:?}; gateway log:\n{log}").into(),
        );
    }
    Ok((
        latencies(&arrivals, LIVE_TOPIC, warm, i64::MAX),
        latencies(&arrivals, QOS0_TOPIC, warm, i64::MAX),
    ))
}

fn live(rt: &tokio::runtime::Runtime, knobs: &Knobs, base: &Path) -> BenchResult<()> {
    let this = &knobs.bins[0].1;
    let (q1, q0) = live_session(rt, knobs, this, &run_dir(base, "live")?, false, true)?;
    let mut rows = vec![
        (
            "QoS 1, QoS 0 point in the same poll, mosquitto as is".to_owned(),
            q1,
        ),
        ("QoS 0 from the same poll (baseline)".to_owned(), q0.clone()),
    ];
    for (i, (name, bin)) in knobs.bins.iter().enumerate() {
        let dir = run_dir(base, &format!("live-nodelay-{i}"))?;
        let (nodelay, _) = live_session(rt, knobs, bin, &dir, true, true)?;
        rows.push((
            format!("{name}: QoS 1, cloud set_tcp_nodelay true"),
            nodelay,
        ));
    }
    let (alone, _) = live_session(rt, knobs, this, &run_dir(base, "live-alone")?, false, false)?;
    rows.push((
        "QoS 1 alone on the connection, mosquitto as is".to_owned(),
        alone,
    ));
    println!(
        "goal 3: live latency poll -> subscriber, empty queue, store.sync full, polls every \
         100 ms, {} samples per row (ts has 1 ms resolution); subscriber TCP_NODELAY {}",
        knobs.live_samples, knobs.sub_nodelay,
    );
    header(&["case", "median ms", "p99 ms", "max ms", "vs QoS 0"]);
    for (name, v) in &rows {
        println!(
            "| {name:<52} | {:>10.2} | {:>10.2} | {:>10.2} | {:>9.1}x |",
            quantile(v, 0.5),
            quantile(v, 0.99),
            v.last().copied().unwrap_or(f64::NAN),
            quantile(v, 0.5) / quantile(&q0, 0.5)
        );
    }
    println!(
        "  goal: QoS 1 median <= 3 ms, p99 <= 10 ms. A QoS 1 sample that reaches mosquitto ~1 ms\n  \
         after another message to the same subscriber waits for that subscriber's delayed ACK\n  \
         (Nagle on the broker's socket): the first row; the others are the gateway's own.\n"
    );
    Ok(())
}

fn main() -> BenchResult<()> {
    let knobs = Knobs::read();
    let wanted: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let selected = |name: &str| wanted.is_empty() || wanted.iter().any(|w| w == name);
    if Command::new("mosquitto_pub")
        .arg("--help")
        .output()
        .is_err()
    {
        println!("uplink: skipped (mosquitto clients not found; see scripts/test-deps.sh)");
        return Ok(());
    }
    let temp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR"))?;
    let base = if std::env::var_os("FR_BENCH_KEEP").is_some() {
        let kept = temp.keep();
        eprintln!("run directories kept in {}", kept.display());
        kept
    } else {
        temp.path().to_path_buf()
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let started = Instant::now();
    if selected("drain") {
        drain(&rt, &knobs, &base)?;
    }
    if selected("rtt") {
        rtt(&rt, &knobs, &base)?;
    }
    if selected("live") {
        live(&rt, &knobs, &base)?;
    }
    eprintln!("uplink bench: {:.0} s", started.elapsed().as_secs_f64());
    Ok(())
}
