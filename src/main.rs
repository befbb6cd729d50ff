//! The `fieldrelay` command line: `run`, `check`, `probe`, `queue`, `simulate`, `points import`,
//! `completions`, `console-user` (the options themselves are in `fieldrelay::cli`).

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

use fieldrelay::cli::{
    self, Cli, Command, ConsoleUserCommand, PointsCommand, QueueCommand, StatsFormat,
};

/// sysexits.h EX_CONFIG: the configuration is invalid. systemd's `RestartPreventExitStatus=78`
/// keeps a broken config from restart-looping.
const EX_CONFIG: u8 = 78;

/// sysexits.h EX_NOPERM: root refused on the service user's data directory.
const EX_NOPERM: u8 = 77;

/// Exit status after a second SIGTERM/SIGINT cut shutdown short (128 + SIGINT, as shells report).
const EX_INTERRUPTED: i32 = 130;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let config_path = match cli.command {
        Command::Completions { shell } => {
            // Generated into memory: the generator panics on a write error (`| head`).
            return match std::io::stdout().write_all(&cli::completion_script(shell)) {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                    eprintln!("error: cannot write the completion script: {e}");
                    ExitCode::FAILURE
                }
                _ => ExitCode::SUCCESS,
            };
        }
        Command::Points(PointsCommand::Import {
            csv,
            device,
            bus,
            unit_id,
            protocol_addresses,
        }) => {
            use fieldrelay::import::{AddressStyle, Target};
            let addresses = if protocol_addresses {
                AddressStyle::Protocol
            } else {
                AddressStyle::Modicon
            };
            let target = Target {
                device: &device,
                bus: &bus,
                unit_id,
                addresses,
            };
            return import(&csv, &target);
        }
        Command::Queue(command) => return queue(&command),
        Command::ConsoleUser(command) => return console_user(&command),
        Command::Check {
            config,
            budget,
            pushed,
        } => return check(&config.config, budget, pushed),
        Command::Run { ref config } | Command::Probe { ref config, .. } => config.config.clone(),
        Command::Simulate { ref config } => config.clone(),
    };
    if let Command::Simulate { config } = &cli.command {
        if let Some(result) = simulate_file(config) {
            return result;
        }
    }
    if matches!(cli.command, Command::Run { .. }) {
        // A pushed configuration whose trial ended while the gateway was down is rolled back
        // before it is loaded (src/remote_config).
        if let Err(error) = fieldrelay::remote_config::prepare_start(&config_path) {
            tracing::error!(%error, "cannot resolve the pushed configuration's trial");
        }
    }
    let (config, warnings) = match load_to_run(&cli.command, &config_path) {
        Ok(loaded) => loaded,
        Err(errors) => return config_errors(&config_path, &errors),
    };
    let result = match cli.command {
        Command::Probe { device, .. } => {
            for warning in &warnings {
                eprintln!("{}", warning.as_warning());
            }
            return probe(&config, &device);
        }
        Command::Run { .. } => {
            for warning in &warnings {
                tracing::warn!("{}", warning.as_warning());
            }
            if let Err(refusal) = fieldrelay::service::owner::may_run_on(
                &config.gateway.data_dir,
                fieldrelay::service::owner::effective_uid(),
            ) {
                tracing::error!("{}", refusal.explained(&config_path));
                return ExitCode::from(EX_NOPERM);
            }
            let stopped = run_async(|cancel| async move {
                fieldrelay::app::run(config, config_path, cancel)
                    .await
                    .context("gateway failed")
            });
            match stopped {
                Ok(fieldrelay::app::Stopped::Restart) => {
                    return ExitCode::from(fieldrelay::remote_config::EX_RESTART)
                }
                other => other.map(|_| ()),
            }
        }
        Command::Simulate { .. } => run_async(|cancel| async move {
            fieldrelay::simulator::run_from_config(&config, cancel)
                .await
                .context("simulator failed")
        }),
        // Answered above, before a configuration is loaded.
        Command::Check { .. }
        | Command::Queue(_)
        | Command::Points(_)
        | Command::ConsoleUser(_)
        | Command::Completions { .. } => return ExitCode::from(2),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            ExitCode::FAILURE
        }
    }
}

/// The configuration for `command`. For `run`, a pushed file on trial that does not load is
/// replaced by the last-known-good, which is loaded instead.
fn load_to_run(
    command: &Command,
    path: &Path,
) -> Result<
    (
        fieldrelay::config::Config,
        Vec<fieldrelay::config::ConfigError>,
    ),
    fieldrelay::config::ConfigErrors,
> {
    let loaded = fieldrelay::config::load_with_warnings(path);
    match (&loaded, command) {
        (Err(errors), Command::Run { .. }) => {
            match fieldrelay::remote_config::fall_back(path, errors) {
                Ok(true) => fieldrelay::config::load_with_warnings(path),
                Ok(false) => loaded,
                Err(error) => {
                    tracing::error!(%error, "cannot restore the last-known-good configuration");
                    loaded
                }
            }
        }
        _ => loaded,
    }
}

/// `fieldrelay check`: a gateway configuration or, recognised by its `simulator:` section, a
/// simulator file (checked by the simulator's rules). Warnings on stderr; exit 78 only for
/// errors. `budget`: also the expected bytes on the wire. `pushed`: as a configuration pushed
/// from the cloud (no inline secrets).
fn check(path: &Path, budget: bool, pushed: bool) -> ExitCode {
    use fieldrelay::simulator::map;
    if pushed {
        let loaded = fieldrelay::config::read_text(path)
            .and_then(|text| fieldrelay::config::load_pushed(&text, &path.display().to_string()));
        return match loaded {
            Ok((_, warnings)) => {
                for warning in &warnings {
                    eprintln!("{}", warning.as_warning());
                }
                println!("{}: ok (as a pushed configuration)", path.display());
                ExitCode::SUCCESS
            }
            Err(errors) => config_errors(path, &errors),
        };
    }
    if let Ok(text) = fieldrelay::config::read_text(path) {
        if map::is_simulator_file(&text) {
            return match map::parse(&text, &path.display().to_string()) {
                Ok(_) => {
                    println!("{}: ok (simulator file)", path.display());
                    ExitCode::SUCCESS
                }
                Err(errors) => config_errors(path, &errors),
            };
        }
    }
    match fieldrelay::config::load_for_check(path) {
        Ok(checked) => {
            for warning in &checked.warnings {
                eprintln!("{}", warning.as_warning());
            }
            let mut said = format!("{}: ok", path.display());
            if !checked.warnings.is_empty() {
                said.push_str(&format!(", {} warning(s)", checked.warnings.len()));
            }
            if let Some(user) = &checked.service_user {
                said.push_str(&format!(
                    " (every file it names is readable by the service user {user})"
                ));
            }
            println!("{said}");
            if budget {
                println!(
                    "\n{}",
                    fieldrelay::budget::estimate(&checked.config).render()
                );
            }
            ExitCode::SUCCESS
        }
        Err(errors) => config_errors(path, &errors),
    }
}

/// `fieldrelay points import`: the YAML on stdout, warnings and problems on stderr.
fn import(csv: &Path, target: &fieldrelay::import::Target<'_>) -> ExitCode {
    use fieldrelay::import::{import_file, ImportError};
    match import_file(csv, target) {
        Ok(imported) => {
            for warning in &imported.warnings {
                eprintln!("{warning}");
            }
            print!("{}", imported.yaml);
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("{error}");
            ExitCode::from(match error {
                ImportError::Read { .. } => 66,
                ImportError::Rows { .. } => 65,
            })
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
            for hint in report.hints() {
                eprintln!("hint: {hint}");
            }
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
    use fieldrelay::queue::inspect::{Inspector, Target};
    let source = match command {
        QueueCommand::Stats { source, .. }
        | QueueCommand::Peek { source, .. }
        | QueueCommand::Export { source, .. } => source,
        QueueCommand::RequeueRejected {
            data_dir,
            config,
            reason,
        } => return requeue_rejected(data_dir.as_deref(), config.as_deref(), *reason),
    };
    let (target, topic_prefix) = match (&source.data_dir, &source.config, &source.file) {
        (Some(dir), _, _) => (Target::DataDir(dir.clone()), None),
        (_, _, Some(file)) => (Target::File(file.clone()), None),
        (None, config, None) => {
            let path = config.clone().unwrap_or_else(|| cli::DEFAULT_CONFIG.into());
            match fieldrelay::config::load(&path) {
                Ok(config) => (
                    Target::DataDir(config.gateway.data_dir),
                    Some(config.uplink.topic_prefix),
                ),
                Err(errors) => return config_errors(&path, &errors),
            }
        }
    };
    let inspector = match Inspector::open(&target) {
        Ok(inspector) => inspector,
        Err(error) => return queue_failed(error),
    };
    let prefix = topic_prefix.as_deref();
    match command {
        QueueCommand::Stats { format, .. } => queue_stats(&inspector, format),
        QueueCommand::Peek { rows, .. } => {
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            match inspector.peek(*rows, prefix, &mut out) {
                Ok(outcome) => {
                    for bad in &outcome.undecodable {
                        eprintln!("row {} cannot be decoded: {}", bad.seq, bad.reason);
                    }
                    ExitCode::SUCCESS
                }
                Err(error) => queue_failed(error),
            }
        }
        QueueCommand::Export {
            output, rejected, ..
        } => queue_export(&inspector, output.as_deref(), prefix, *rejected),
        QueueCommand::RequeueRejected { .. } => ExitCode::SUCCESS, // handled above
    }
}

/// `fieldrelay queue requeue-rejected`: the counts per reason on stderr.
fn requeue_rejected(
    data_dir: Option<&Path>,
    config: Option<&Path>,
    reason: Option<u8>,
) -> ExitCode {
    let data_dir = match data_dir {
        Some(dir) => dir.to_path_buf(),
        None => {
            let path = config.map_or_else(|| cli::DEFAULT_CONFIG.into(), Path::to_path_buf);
            match fieldrelay::config::load(&path) {
                Ok(config) => config.gateway.data_dir,
                Err(errors) => return config_errors(&path, &errors),
            }
        }
    };
    let euid = fieldrelay::service::owner::effective_uid();
    if let Err(refusal) = fieldrelay::service::owner::may_run_on(&data_dir, euid) {
        eprintln!("error: {refusal}; run it as that user (sudo -u …)");
        return ExitCode::from(EX_NOPERM);
    }
    match fieldrelay::queue::requeue::requeue_rejected(&data_dir, reason) {
        Ok(moved) => {
            let counts: Vec<String> = moved
                .iter()
                .map(|(code, n)| format!("{n} {}", fieldrelay::queue::reason::label(*code)))
                .collect();
            match counts.is_empty() {
                true => eprintln!("no rejected rows to requeue"),
                false => eprintln!(
                    "requeued {} rejected rows ({}): the gateway sends them at its next start",
                    fieldrelay::queue::rejected::total(&moved),
                    counts.join(", ")
                ),
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::from(error.exit_code())
        }
    }
}

/// A `queue` command's error on stderr and its exit code; a reader that went away (`| head`) is
/// no failure.
fn queue_failed(error: fieldrelay::queue::inspect::InspectError) -> ExitCode {
    if error.is_broken_pipe() {
        return ExitCode::SUCCESS;
    }
    eprintln!("error: {error}");
    ExitCode::from(error.exit_code())
}

/// `fieldrelay queue stats`: the summary as text or JSON on stdout.
fn queue_stats(
    inspector: &fieldrelay::queue::inspect::Inspector,
    format: &StatsFormat,
) -> ExitCode {
    let summary = match inspector.summary() {
        Ok(summary) => summary,
        Err(error) => return queue_failed(error),
    };
    let now = fieldrelay::sample::now_ms();
    let text = match format {
        StatsFormat::Text => summary.text(now),
        StatsFormat::Json => format!("{:#}\n", summary.json(now)),
    };
    let stdout = std::io::stdout();
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

/// `fieldrelay queue export`: every row as JSON lines into a new file `output` (synced before
/// the summary) or on stdout; the summary on stderr.
fn queue_export(
    inspector: &fieldrelay::queue::inspect::Inspector,
    output: Option<&Path>,
    prefix: Option<&str>,
    rejected: bool,
) -> ExitCode {
    use fieldrelay::queue::inspect::{InspectError, EXIT_PARTIAL};
    let stdout = std::io::stdout();
    let display = match output {
        // Lines scrolling past on the same terminal are progress enough.
        None if stdout.is_terminal() => fieldrelay::progress::Display::Hidden,
        _ => fieldrelay::progress::Display::detect(),
    };
    let file = match output {
        Some(path) => match std::fs::File::create_new(path) {
            Ok(file) => Some((path, file)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return queue_failed(InspectError::OutputExists(path.to_path_buf()))
            }
            Err(source) => {
                return queue_failed(InspectError::Write {
                    what: path.display().to_string(),
                    source,
                })
            }
        },
        None => None,
    };
    let export = |out: &mut dyn Write| match rejected {
        true => inspector.export_rejected(prefix, out, display),
        false => inspector.export(prefix, out, display),
    };
    let result = match &file {
        Some((_, file)) => export(&mut std::io::BufWriter::new(file)),
        None => export(&mut std::io::BufWriter::new(stdout.lock())),
    };
    let outcome = match result {
        Ok(outcome) => outcome,
        Err(error) => return queue_failed(error),
    };
    // An export is often the only copy of a backlog: on disk before we say done.
    if let Some((path, file)) = &file {
        if let Err(source) = file.sync_all() {
            return queue_failed(InspectError::Write {
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
    let warnings = match errors.warnings.len() {
        0 => String::new(),
        n => format!(", {n} warning(s)"),
    };
    eprintln!(
        "{}: {} problem(s) found{warnings}",
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
