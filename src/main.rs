//! The `fieldrelay` command line: `run`, `check`, `probe` and `simulate`.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// sysexits.h EX_CONFIG: the configuration is invalid. systemd's `RestartPreventExitStatus=78`
/// keeps a broken config from restart-looping.
const EX_CONFIG: u8 = 78;

#[derive(Parser)]
#[command(
    name = "fieldrelay",
    version,
    about = "Edge gateway: Modbus devices -> durable SQLite queue -> cloud MQTT broker",
    long_about = "Edge gateway: polls Modbus devices, keeps every QoS 1/2 sample in a durable \
SQLite queue until the cloud MQTT broker acknowledged it, and publishes status certificates.\n\n\
Logging: set RUST_LOG (e.g. RUST_LOG=debug or RUST_LOG=fieldrelay=trace); default info. \
Under systemd, logs go to the journal with their levels as priorities.",
    after_help = "Exit status: 0 after a clean shutdown or a valid config; 1 when the gateway \
failed at run time (systemd restarts it); 78 (EX_CONFIG) for an invalid configuration (systemd does \
not restart it). probe: 0 when every point answered, 1 when any did not."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway until SIGTERM or SIGINT; SIGHUP reloads buses and devices.
    Run {
        /// Path of the YAML configuration.
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Validate the configuration; print every problem and exit 78 if there is any.
    Check {
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Read every configured point once and print a table: device, point, raw registers,
    /// decoded value, unit, status. Exit 0 if every point answered, 1 otherwise.
    Probe {
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
        /// Probe only this device (repeatable); default: every device.
        #[arg(short, long, value_name = "NAME")]
        device: Vec<String>,
    },
    /// Serve simulated Modbus devices: a simulator file (TCP, RTU-over-TCP and RTU endpoints with a
    /// register map), or a gateway config's tcp buses with moving values (demo, tests).
    Simulate {
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let config_path = match &cli.command {
        Command::Run { config }
        | Command::Check { config }
        | Command::Probe { config, .. }
        | Command::Simulate { config } => config.clone(),
    };
    if let Command::Simulate { config } = &cli.command {
        if let Some(result) = simulate_file(config) {
            return result;
        }
    }
    let config = match fieldrelay::config::load(&config_path) {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!(
                "{}: {} problem(s) found",
                config_path.display(),
                errors.errors.len()
            );
            return ExitCode::from(EX_CONFIG);
        }
    };
    let result = match cli.command {
        Command::Check { .. } => {
            println!("{}: ok", config_path.display());
            return ExitCode::SUCCESS;
        }
        Command::Probe { device, .. } => return probe(&config, &device),
        Command::Run { .. } => run_async(|cancel| async move {
            fieldrelay::app::run(config, config_path, cancel)
                .await
                .context("gateway failed")
        }),
        Command::Simulate { .. } => run_async(|cancel| async move {
            fieldrelay::simulator::run_from_config(&config, cancel)
                .await
                .context("simulator failed")
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            ExitCode::FAILURE
        }
    }
}

/// `fieldrelay probe`: the table on stdout, the summary on stderr.
fn probe(config: &fieldrelay::config::Config, devices: &[String]) -> ExitCode {
    use fieldrelay::probe::ProbeRunError;
    let display = fieldrelay::progress::Display::detect();
    let result = run_async(|cancel| async move {
        Ok(fieldrelay::probe::run(config, devices, display, cancel).await)
    });
    match result {
        Ok(Ok(report)) => {
            print!("{}", report.table());
            eprintln!("{}", report.summary());
            if report.all_answered() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Ok(Err(error @ ProbeRunError::UnknownDevice { .. })) => {
            eprintln!("error: {error}");
            ExitCode::from(2)
        }
        Ok(Err(error @ ProbeRunError::Interrupted)) => {
            eprintln!("{error}");
            ExitCode::from(130)
        }
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs `fieldrelay simulate` on a simulator file (a `simulator:` section); `None` when `path`
/// is not one, so it is loaded as a gateway configuration.
fn simulate_file(path: &std::path::Path) -> Option<ExitCode> {
    use fieldrelay::simulator::{map, Registers};
    let text = std::fs::read_to_string(path).ok()?;
    if !map::is_simulator_file(&text) {
        return None;
    }
    let sim = match map::parse(&text, &path.display().to_string()) {
        Ok(sim) => sim,
        Err(error) => {
            eprintln!("{error}");
            return Some(ExitCode::from(EX_CONFIG));
        }
    };
    let result = run_async(|cancel| async move {
        map::run(sim, Registers::default(), cancel)
            .await
            .context("simulator failed")
    });
    Some(match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            ExitCode::FAILURE
        }
    })
}

/// Builds the runtime, cancels the token on SIGTERM/SIGINT and runs `body` to completion.
fn run_async<F, Fut, T>(body: F) -> anyhow::Result<T>
where
    F: FnOnce(CancellationToken) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let cancel = CancellationToken::new();
        let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("cannot install the SIGTERM handler")?;
        let signal_cancel = cancel.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = sigterm.recv() => tracing::info!("SIGTERM received"),
                _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
            }
            signal_cancel.cancel();
        });
        body(cancel).await
    })
}

/// Logs go to the journal (native protocol: levels become priorities, fields journal fields)
/// when stderr is the journal (`JOURNAL_STREAM`, under systemd), else as text to stderr.
/// `RUST_LOG` filters both (default `info`).
fn init_logging() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let journal = if fieldrelay::service::journal::stderr_is_journal() {
        Some(tracing_journald::layer())
    } else {
        None
    };
    match journal {
        Some(Ok(layer)) => tracing_subscriber::registry()
            .with(filter)
            .with(layer)
            .init(),
        fallback => {
            tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal())
                .init();
            if let Some(Err(error)) = fallback {
                tracing::warn!(%error, "stderr is the journal but its socket cannot be used; logging text to stderr");
            }
        }
    }
}
