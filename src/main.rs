//! The `fieldrelay` command line: `run`, `check`, `probe`, `queue` and `simulate`.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// sysexits.h EX_CONFIG: the configuration is invalid. systemd's `RestartPreventExitStatus=78`
/// keeps a broken config from restart-looping.
const EX_CONFIG: u8 = 78;

/// Exit status after a second SIGTERM/SIGINT cut shutdown short (128 + SIGINT, as shells report).
const EX_INTERRUPTED: i32 = 130;

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
not restart it); 130 when a second SIGTERM/SIGINT cut a shutdown short. probe: 0 when every point \
answered, 1 when any did not. queue: see \
`fieldrelay queue stats --help`."
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
    /// Look into the durable queue, read-only (safe while the gateway runs): stats, the next
    /// rows to be sent, or every row as JSON lines (also from a quarantined file).
    #[command(subcommand)]
    Queue(QueueCommand),
    /// Serve simulated Modbus devices: a simulator file (TCP, RTU-over-TCP and RTU endpoints with a
    /// register map), or a gateway config's tcp buses with moving values (demo, tests).
    Simulate {
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Manage who may log in to the web console (`console.auth.password_file`): add, delete,
    /// list. The running gateway picks changes up at the next login.
    #[command(subcommand, after_help = CONSOLE_USER_EXIT)]
    ConsoleUser(ConsoleUserCommand),
}

const CONSOLE_USER_EXIT: &str = "Exit status: 0 done; 65 invalid name, empty or mismatched \
password; 66 the password cannot be read; 67 no such user; 74 the file cannot be written.";

#[derive(Subcommand)]
enum ConsoleUserCommand {
    /// Create NAME or change its password: asked twice on a terminal; from a pipe the first line
    /// (a second line, if any, must match): printf 'pw\npw\n' | fieldrelay console-user add NAME
    Add {
        name: String,
        /// The password file (name:bcrypt-hash lines, as htpasswd -B writes them).
        #[arg(short, long, value_name = "FILE", default_value = fieldrelay::console::users::DEFAULT_FILE)]
        file: PathBuf,
    },
    /// Remove NAME.
    Delete {
        name: String,
        #[arg(short, long, value_name = "FILE", default_value = fieldrelay::console::users::DEFAULT_FILE)]
        file: PathBuf,
    },
    /// The user names, one per line.
    List {
        #[arg(short, long, value_name = "FILE", default_value = fieldrelay::console::users::DEFAULT_FILE)]
        file: PathBuf,
    },
}

const QUEUE_EXIT: &str = "Exit status: 0 done; 3 export finished but could not read every \
row (each unreadable range and bad row is listed on stderr); 65 not a queue file, a newer schema, \
or damaged (use export --file to recover it); 66 no data directory or queue file, or it cannot be \
opened; 73 the output file exists; 74 a read or write failed; 78 invalid --config.";

/// Where `fieldrelay queue` reads: exactly one of these.
#[derive(Args)]
#[group(required = true, multiple = false)]
struct QueueSource {
    /// The gateway's data directory (holds queue.db and any quarantined files).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Take the data directory and the topic prefix from this configuration.
    #[arg(short, long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// One queue file: a copy, or a quarantined queue.db.corrupt-*.
    #[arg(long, value_name = "FILE")]
    file: Option<PathBuf>,
}

#[derive(Subcommand)]
enum QueueCommand {
    /// Rows per device, point and kind, rows in flight with their packet ids, the oldest and
    /// newest row with their ages, sizes on disk, quarantined files.
    #[command(after_help = QUEUE_EXIT)]
    Stats {
        #[command(flatten)]
        source: QueueSource,
        #[arg(long, value_enum, default_value_t = StatsFormat::Text)]
        format: StatsFormat,
    },
    /// The next rows the uplink sends (in-flight ones first), as JSON lines on stdout.
    #[command(after_help = QUEUE_EXIT)]
    Peek {
        #[command(flatten)]
        source: QueueSource,
        /// How many rows.
        #[arg(short = 'n', long = "rows", value_name = "N", default_value_t = 10)]
        rows: usize,
    },
    /// Every row as JSON lines, in seq order; reads around damaged pages of a quarantined file
    /// and lists what it could not read on stderr. A progress bar on a terminal.
    #[command(after_help = QUEUE_EXIT)]
    Export {
        #[command(flatten)]
        source: QueueSource,
        /// Write here (a new file, synced when done) instead of stdout.
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum StatsFormat {
    /// A report for a person.
    Text,
    /// One JSON document, for scripts.
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let config_path = match &cli.command {
        Command::Queue(command) => return queue(command),
        Command::ConsoleUser(command) => return console_user(command),
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
        Err(errors) => return config_errors(&config_path, &errors),
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
        // Need no configuration; answered before one is loaded.
        Command::Queue(command) => return queue(&command),
        Command::ConsoleUser(command) => return console_user(&command),
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

/// `fieldrelay queue …`: reports on stdout, problems and summaries on stderr.
fn queue(command: &QueueCommand) -> ExitCode {
    use fieldrelay::queue::inspect::{InspectError, Inspector, Target, EXIT_PARTIAL};
    let source = match command {
        QueueCommand::Stats { source, .. }
        | QueueCommand::Peek { source, .. }
        | QueueCommand::Export { source, .. } => source,
    };
    let (target, topic_prefix) = match (&source.data_dir, &source.config, &source.file) {
        (Some(dir), _, _) => (Target::DataDir(dir.clone()), None),
        (_, _, Some(file)) => (Target::File(file.clone()), None),
        (None, Some(path), None) => match fieldrelay::config::load(path) {
            Ok(config) => (
                Target::DataDir(config.gateway.data_dir),
                Some(config.uplink.topic_prefix),
            ),
            Err(errors) => return config_errors(path, &errors),
        },
        // clap requires one of them.
        (None, None, None) => return ExitCode::from(2),
    };
    let failed = |error: InspectError| {
        if error.is_broken_pipe() {
            return ExitCode::SUCCESS;
        }
        eprintln!("error: {error}");
        ExitCode::from(error.exit_code())
    };
    let inspector = match Inspector::open(&target) {
        Ok(inspector) => inspector,
        Err(error) => return failed(error),
    };
    let prefix = topic_prefix.as_deref();
    let stdout = std::io::stdout();
    match command {
        QueueCommand::Stats { format, .. } => {
            let summary = match inspector.summary() {
                Ok(summary) => summary,
                Err(error) => return failed(error),
            };
            let now = fieldrelay::sample::now_ms();
            let text = match format {
                StatsFormat::Text => summary.text(now),
                StatsFormat::Json => format!("{:#}\n", summary.json(now)),
            };
            let mut out = stdout.lock();
            match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: cannot write the report: {e}");
                    ExitCode::from(fieldrelay::queue::inspect::EX_IOERR)
                }
            }
        }
        QueueCommand::Peek { rows, .. } => {
            let mut out = std::io::BufWriter::new(stdout.lock());
            match inspector.peek(*rows, prefix, &mut out) {
                Ok(outcome) => {
                    for bad in &outcome.undecodable {
                        eprintln!("row {} cannot be decoded: {}", bad.seq, bad.reason);
                    }
                    ExitCode::SUCCESS
                }
                Err(error) => failed(error),
            }
        }
        QueueCommand::Export { output, .. } => {
            let display = match output {
                // Lines scrolling past on the same terminal are progress enough.
                None if stdout.is_terminal() => fieldrelay::progress::Display::Hidden,
                _ => fieldrelay::progress::Display::detect(),
            };
            let file = match output {
                Some(path) => match std::fs::File::create_new(path) {
                    Ok(file) => Some((path, file)),
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        return failed(InspectError::OutputExists(path.clone()))
                    }
                    Err(source) => {
                        return failed(InspectError::Write {
                            what: path.display().to_string(),
                            source,
                        })
                    }
                },
                None => None,
            };
            let result = match &file {
                Some((_, file)) => {
                    let mut out = std::io::BufWriter::new(file);
                    inspector.export(prefix, &mut out, display)
                }
                None => {
                    let mut out = std::io::BufWriter::new(stdout.lock());
                    inspector.export(prefix, &mut out, display)
                }
            };
            let outcome = match result {
                Ok(outcome) => outcome,
                Err(error) => return failed(error),
            };
            // An export is often the only copy of a backlog: on disk before we say done.
            if let Some((path, file)) = &file {
                if let Err(source) = file.sync_all() {
                    return failed(InspectError::Write {
                        what: path.display().to_string(),
                        source,
                    });
                }
            }
            eprint!("{}", outcome.report());
            if outcome.complete() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_PARTIAL)
            }
        }
    }
}

/// `fieldrelay console-user …`: what changed on stderr, names on stdout.
fn console_user(command: &ConsoleUserCommand) -> ExitCode {
    use fieldrelay::console::users;
    let result = match command {
        ConsoleUserCommand::Add { name, file } => users::add(file, name)
            .map(|()| eprintln!("{}: password set for {name}", file.display())),
        ConsoleUserCommand::Delete { name, file } => {
            users::delete(file, name).map(|()| eprintln!("{}: {name} deleted", file.display()))
        }
        ConsoleUserCommand::List { file } => users::list(file).map(|names| {
            for name in names {
                println!("{name}");
            }
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::from(error.exit_code())
        }
    }
}

/// Runs `fieldrelay simulate` on a simulator file (a `simulator:` section); `None` when `path`
/// is not one (or cannot be read), so it is loaded as a gateway configuration, which reports a
/// file that cannot be read.
fn simulate_file(path: &std::path::Path) -> Option<ExitCode> {
    use fieldrelay::simulator::{map, Registers};
    let text = fieldrelay::config::read_text(path).ok()?;
    if !map::is_simulator_file(&text) {
        return None;
    }
    let sim = match map::parse(&text, &path.display().to_string()) {
        Ok(sim) => sim,
        Err(errors) => return Some(config_errors(path, &errors)),
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

/// Prints every problem of an invalid file and a summary line on stderr, as `check` does;
/// exits 78.
fn config_errors(path: &std::path::Path, errors: &fieldrelay::config::ConfigErrors) -> ExitCode {
    eprintln!("{errors}");
    eprintln!(
        "{}: {} problem(s) found",
        path.display(),
        errors.errors.len()
    );
    ExitCode::from(EX_CONFIG)
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
            // A second signal means "now": an operator pressing Ctrl-C again, or a supervisor
            // that gave up waiting. Committed rows are safe either way (as after `kill -9`).
            tokio::select! {
                _ = sigterm.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            tracing::warn!("second signal during shutdown: exiting at once");
            std::process::exit(EX_INTERRUPTED);
        });
        body(cancel).await
    })
}

/// Logs go to the journal (native protocol: levels become priorities, fields journal fields)
/// when stderr is the journal (`JOURNAL_STREAM`, under systemd), else as text to stderr.
/// `RUST_LOG` filters both (default `info`). The console's log page keeps a copy of the last
/// lines (inert until a console starts).
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
            .with(fieldrelay::console::LogLayer)
            .init(),
        fallback => {
            tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal())
                .finish()
                .with(fieldrelay::console::LogLayer)
                .init();
            if let Some(Err(error)) = fallback {
                tracing::warn!(%error, "stderr is the journal but its socket cannot be used; logging text to stderr");
            }
        }
    }
}
