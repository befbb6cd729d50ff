//! The data budget against the wire: `cargo bench --bench budget`.
//!
//! Runs `config/example.yaml` (its devices served by the same moving simulator as
//! `fieldrelay simulate`) over TLS to a loopback mosquitto through a byte-counting proxy for
//! `FR_BUDGET_SECS` seconds (default 600), and prints what the proxy counted next to what
//! `fieldrelay check --budget` expects for that time (stream bytes: TLS records, both
//! directions, the connection's handshake and birth included) — the budget is the baseline,
//! computed for the same config in the same run. Two rows:
//! - **as shipped**: `on_change` points as written; the simulator moves floats on a sine,
//!   integers up, bools every 5 s, so the budget's worst case for `on_change` (a change every
//!   poll) is an upper bound here;
//! - **every_poll**: the same devices with every point `every_poll`, the traffic the model
//!   assumes: how close the byte model is;
//! - **per_device**: `every_poll` with `uplink.batch: per_device` (each poll's QoS 1 samples of
//!   a device as one message; the QoS 0 and QoS 2 points as before): the bytes batching saves,
//!   as the ratio of its proxy bytes to `every_poll`'s in the same run;
//! - **20 points**, **20 per_device** and **20 compact**: one device of 20 QoS 1 `f32` points
//!   published every poll (1 s), `batch: none`, `per_device` and `per_device_compact`: bytes
//!   per sample on the wire in the steady state (from 5 s after the connection's first byte,
//!   so the TLS handshake and the birth are not spread over the samples), and their ratio to
//!   `20 points` measured in the same run. `FR_BUDGET_REPEAT` (default 1) repeats these rows
//!   and prints min / median / max;
//! - **20 v5 points**, **20 v5 points a32**, **20 v5 per_device**, **20 v5 compact**: the same
//!   with `uplink.protocol: mqtt5` (topic aliases, a property-length byte per PUBLISH), ratios
//!   still against mqtt311 `20 points`: the first under mosquitto's default `max_topic_alias`
//!   of 10 (10 of the 20 topics aliased, the rest by name), the second with 32 (all aliased).
//!
//! `FR_BUDGET_CASES=20` runs only the rows whose name starts with one of the comma-separated
//! prefixes. `FR_BUDGET_BIN` runs that gateway binary instead of the one cargo built.
//!
//! Under `cargo test --all-targets` (no `--bench` argument) it runs 3 s of the second row as a
//! smoke test. Needs `mosquitto` (scripts/test-deps.sh).

#[path = "../tests/common/pki.rs"]
#[allow(dead_code)]
mod pki;
mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use support::{free_port, BenchResult, Broker, DelayProxy, GatewayProcess};

fn main() -> BenchResult<()> {
    let full = std::env::args().any(|a| a == "--bench");
    let secs: u64 = match std::env::var("FR_BUDGET_SECS") {
        Ok(text) => text.parse()?,
        Err(_) if full => 600,
        Err(_) => 3,
    };
    let base = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR"))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let shipped =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/example.yaml"))?;
    // Every point every_poll: drop the publish lines, add one after each point's type.
    let every_poll: String = shipped
        .lines()
        .filter(|line| !line.starts_with("        publish:"))
        .flat_map(|line| {
            let extra = line
                .starts_with("        type: ")
                .then_some("        publish: every_poll");
            std::iter::once(line).chain(extra)
        })
        .map(|line| format!("{line}\n"))
        .collect();
    let per_device = every_poll.replacen(
        "  url: mqtt://127.0.0.1:1883\n",
        "  url: mqtt://127.0.0.1:1883\n  batch: per_device\n",
        1,
    );
    let twenty = twenty_points(&shipped);
    let twenty_batched = twenty.replacen(
        "  url: mqtt://127.0.0.1:1883\n",
        "  url: mqtt://127.0.0.1:1883\n  batch: per_device\n",
        1,
    );
    let twenty_compact =
        twenty_batched.replacen("batch: per_device\n", "batch: per_device_compact\n", 1);
    let mqtt5 = |text: &str| {
        text.replacen(
            "  url: mqtt://127.0.0.1:1883\n",
            "  url: mqtt://127.0.0.1:1883\n  protocol: mqtt5\n",
            1,
        )
    };
    let (v5_points, v5_batched, v5_compact) = (
        mqtt5(&twenty),
        mqtt5(&twenty_batched),
        mqtt5(&twenty_compact),
    );
    // (row, config, extra lines for the TLS listener of the broker)
    let mut cases = vec![("every_poll", every_poll, "")];
    if full {
        cases.insert(0, ("as shipped", shipped, ""));
        cases.push(("per_device", per_device, ""));
        cases.push(("20 points", twenty, ""));
        cases.push(("20 per_device", twenty_batched, ""));
        cases.push(("20 compact", twenty_compact, ""));
        // mosquitto's default `max_topic_alias` is 10: half the 20 topics get an alias.
        cases.push(("20 v5 points", v5_points.clone(), ""));
        cases.push(("20 v5 points a32", v5_points, "max_topic_alias 32\n"));
        // One topic per device: the default 10 aliases are plenty.
        cases.push(("20 v5 per_device", v5_batched, ""));
        cases.push(("20 v5 compact", v5_compact, ""));
    }
    if let Ok(only) = std::env::var("FR_BUDGET_CASES") {
        cases.retain(|(name, _, _)| only.split(',').any(|p| name.starts_with(p)));
    }
    let repeat: usize = match std::env::var("FR_BUDGET_REPEAT") {
        Ok(text) => text.parse()?,
        Err(_) => 1,
    };
    println!(
        "bytes through a counting proxy (TLS, both directions) vs `check --budget`, {secs} s each"
    );
    println!(
        "| {:<16} | {:>12} | {:>12} | {:>10} | {:>14} |",
        "config", "proxy bytes", "budget bytes", "budget/proxy", "proxy MB/month"
    );
    println!(
        "|{:-<18}|{:->14}|{:->14}|{:->14}|{:->16}|",
        "", "", "", "", ""
    );
    let mut every_poll_bytes = None;
    // Per 20-point row: bytes per sample of each run.
    let mut per_sample: Vec<(&str, Vec<f64>)> = Vec::new();
    for (name, text, listener) in cases {
        let runs = if name.starts_with("20 ") {
            repeat.max(1)
        } else {
            1
        };
        for run_index in 0..runs {
            let dir = base
                .path()
                .join(format!("{}-{run_index}", name.replace(' ', "_")));
            let counted = rt.block_on(run(&dir, &text, listener, Duration::from_secs(secs)))?;
            let proxy = counted.total;
            let budget = counted.budget;
            let month = proxy as f64 / secs as f64 * 86_400.0 * 30.0 / 1e6;
            println!(
                "| {name:<16} | {proxy:>12} | {budget:>12.0} | {:>12.3} | {month:>14.1} |",
                budget / proxy as f64
            );
            if proxy == 0 {
                return Err(format!("{name}: nothing crossed the proxy").into());
            }
            if name.starts_with("20 ") {
                // 20 samples per poll of 1 s.
                let (bytes, window) = counted.steady;
                let value = bytes as f64 / (20.0 * window.as_secs_f64());
                println!("{name}: {value:.1} bytes/sample (steady state)");
                match per_sample.iter_mut().find(|(n, _)| *n == name) {
                    Some((_, values)) => values.push(value),
                    None => per_sample.push((name, vec![value])),
                }
            }
            match name {
                "every_poll" => every_poll_bytes = Some(proxy),
                "per_device" => {
                    if let Some(base) = every_poll_bytes {
                        println!(
                            "{name} / batch none, proxy bytes: {:.3}",
                            proxy as f64 / base as f64
                        );
                    }
                }
                _ => {}
            }
        }
    }
    if !per_sample.is_empty() {
        println!();
        println!(
            "bytes per sample, 1 device x 20 QoS 1 f32 points every 1 s poll, TLS, steady state"
        );
        println!(
            "| {:<16} | {:>28} | {:>24} |",
            "row", "B/sample (min / median / max)", "none / this (median)"
        );
        println!("|{:-<18}|{:->30}|{:->26}|", "", "", "");
        let spreads: Vec<(&str, (f64, f64, f64))> = per_sample
            .iter_mut()
            .map(|(name, values)| (*name, support::spread(values)))
            .collect();
        let none = spreads
            .iter()
            .find(|(name, _)| *name == "20 points")
            .map(|(_, (_, median, _))| *median);
        for (name, (min, median, max)) in spreads {
            let ratio = none.map_or(f64::NAN, |none| none / median);
            println!(
                "| {name:<16} | {:>28} | {ratio:>23.2}x |",
                format!("{min:.1} / {median:.1} / {max:.1}")
            );
        }
    }
    Ok(())
}

/// The example's sections before `devices`, and one device of 20 QoS 1 `f32` holding
/// registers published every poll.
fn twenty_points(shipped: &str) -> String {
    let head = shipped.split("\ndevices:\n").next().unwrap_or(shipped);
    let mut text = format!(
        "{head}\ndevices:\n  - name: boiler\n    bus: plc1\n    unit_id: 1\n    \
         poll_interval: 1s\n    points:\n"
    );
    for i in 0..20 {
        text.push_str(&format!(
            "      - {{name: p{i}, table: holding, address: {}, type: f32, qos: 1, publish: \
             every_poll}}\n",
            i * 2
        ));
    }
    text
}

/// What one run counted.
struct Counted {
    /// Bytes through the proxy from the connection's first byte.
    total: u64,
    /// The budget's expectation for the same time and one connection.
    budget: f64,
    /// Bytes from [`STEADY_AFTER`] after the first byte to the end, and that window.
    steady: (u64, Duration),
}

/// When the steady state starts: the TLS handshake, the birth and the first polls are done.
const STEADY_AFTER: Duration = Duration::from_secs(5);

/// Runs `config` (the example's text) for `duration` (see [`Counted`]).
/// `listener` is added to the TLS listener's section of the broker's configuration.
async fn run(dir: &Path, config: &str, listener: &str, duration: Duration) -> BenchResult<Counted> {
    std::fs::create_dir_all(dir)?;
    let pki = pki::TestPki::generate(&dir.join("pki"));
    let tls_port = free_port()?;
    let plain_port = free_port()?;
    let _broker = Broker::start(
        dir,
        "cloud",
        plain_port,
        &format!(
            "listener {tls_port} 127.0.0.1\n{listener}cafile {}\ncertfile {}\nkeyfile {}\n",
            pki.ca.display(),
            pki.server_cert.display(),
            pki.server_key.display()
        ),
    )?;
    let proxy = DelayProxy::start(tls_port, Duration::ZERO)?;
    let device = free_port()?;
    let text = config
        .replacen(
            "  url: mqtt://127.0.0.1:1883\n",
            &format!(
                "  url: mqtts://127.0.0.1:{}\n  tls: {{ca_file: {}}}\n",
                proxy.port,
                pki.ca.display()
            ),
            1,
        )
        .replacen("    port: 5020\n", &format!("    port: {device}\n"), 1)
        .replacen(
            "  data_dir: /var/lib/fieldrelay\n",
            &format!("  data_dir: {}\n", dir.join("data").display()),
            1,
        );
    let path = dir.join("gateway.yaml");
    std::fs::write(&path, text)?;
    let config = fieldrelay::config::load(&path).map_err(|e| e.to_string())?;
    let budget = fieldrelay::budget::estimate(&config);
    let cancel = tokio_util::sync::CancellationToken::new();
    let simulated = config.clone();
    let token = cancel.clone();
    tokio::spawn(async move { fieldrelay::simulator::run_from_config(&simulated, token).await });
    while tokio::net::TcpStream::connect(("127.0.0.1", device))
        .await
        .is_err()
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // FR_BUDGET_BIN: a copy of the gateway, so that a long run survives a rebuild of target/.
    let bin = std::env::var_os("FR_BUDGET_BIN").map_or_else(
        || env!("CARGO_BIN_EXE_fieldrelay").into(),
        std::path::PathBuf::from,
    );
    let gateway = GatewayProcess::start(&bin, &path)?;
    // The window opens at the first byte: the connection's handshake and birth are in it.
    let opened = Instant::now();
    while proxy.bytes() == 0 {
        if opened.elapsed() > Duration::from_secs(30) {
            return Err(format!("no connection: {}", gateway.log_tail()).into());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let start = Instant::now();
    let warm = STEADY_AFTER.min(duration / 2);
    tokio::time::sleep(warm).await;
    let (warm_bytes, warm_at) = (proxy.bytes(), Instant::now());
    tokio::time::sleep(duration.saturating_sub(warm)).await;
    let (measured, elapsed) = (proxy.bytes(), start.elapsed());
    gateway.stop();
    cancel.cancel();
    Ok(Counted {
        total: measured,
        budget: budget.stream_over(elapsed, 1.0),
        steady: (measured - warm_bytes, warm_at.elapsed()),
    })
}
