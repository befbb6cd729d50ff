//! The command line as clap sees it: subcommands, options, help texts. `main.rs` acts on it; the
//! same definition renders `fieldrelay completions SHELL` and, at package build time
//! ([`write_package_assets`], run by `examples/package_assets.rs`), the man pages and the
//! completion files the `.deb` installs, so help, completions and man pages cannot disagree.
//! The same step writes the installed configuration.

use std::path::{Path, PathBuf};

use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};

/// Where the package installs the configuration, and where every subcommand looks by default.
pub const DEFAULT_CONFIG: &str = "/etc/fieldrelay/config.yaml";

#[derive(Parser)]
#[command(
    name = "fieldrelay",
    version,
    about = "Edge gateway: Modbus devices -> durable SQLite queue -> cloud MQTT broker",
    long_about = "Edge gateway: polls Modbus devices, keeps every QoS 1/2 sample in a durable \
SQLite queue until the cloud MQTT broker acknowledged it, and publishes status certificates.\n\n\
Every subcommand reads /etc/fieldrelay/config.yaml (the packaged service's configuration) unless \
--config names another file. Logging: set RUST_LOG (e.g. RUST_LOG=debug or \
RUST_LOG=fieldrelay=trace); default info. Under systemd, logs go to the journal with their levels \
as priorities.",
    after_help = "Exit status: 0 after a clean shutdown or a valid config; 1 when the gateway \
failed at run time (systemd restarts it); 77 (EX_NOPERM) when run as root on a data directory \
that belongs to the service user; 78 (EX_CONFIG) for an invalid configuration (systemd does not \
restart it); 130 when a second SIGTERM/SIGINT cut a shutdown short. probe: 0 when every point \
answered, 1 when any did not. queue: see `fieldrelay queue stats --help`. points import: see \
`fieldrelay points import --help`. console-user: see `fieldrelay console-user --help`."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// `--config FILE`, with the packaged default.
#[derive(Args)]
pub struct ConfigFile {
    /// The gateway's YAML configuration (docs/configuration.md).
    #[arg(short, long, value_name = "FILE", default_value = DEFAULT_CONFIG)]
    pub config: PathBuf,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the gateway until SIGTERM or SIGINT; SIGHUP reloads buses and devices. The packaged
    /// service runs it as the user fieldrelay: start it with systemctl, or run it by hand with
    /// `sudo -u fieldrelay fieldrelay run`.
    Run {
        #[command(flatten)]
        config: ConfigFile,
    },
    /// Validate the configuration (or a simulator file): print every problem and exit 78 if
    /// there is an error; warnings (such as a Modicon reference used as an address) are printed
    /// and exit 0.
    Check {
        #[command(flatten)]
        config: ConfigFile,
        /// Also print the expected bytes per day and per month on the uplink's wire, per device
        /// and for health, keep-alive and connections, with the largest contributors.
        #[arg(long)]
        budget: bool,
        /// Check the file as a gateway checks a configuration pushed to it (P/config/set):
        /// secret values written inline (a password, a PEM key) are refused too.
        #[arg(long)]
        pushed: bool,
    },
    /// Read every configured point once and print a table: device, point, raw registers,
    /// decoded value, unit, status. Exit 0 if every point answered, 1 otherwise.
    Probe {
        #[command(flatten)]
        config: ConfigFile,
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
        /// A simulator file (with a `simulator:` section) or a gateway configuration.
        #[arg(short, long, value_name = "FILE", default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Work with point lists: turn a vendor's register list into checked configuration points.
    #[command(subcommand)]
    Points(PointsCommand),
    /// Print a shell completion script: bash, zsh, fish (the package installs them).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Manage who may log in to the web console (`console.auth.password_file`): add, delete,
    /// list. The running gateway picks changes up at the next login.
    #[command(subcommand, after_help = CONSOLE_USER_EXIT)]
    ConsoleUser(ConsoleUserCommand),
}

pub const CONSOLE_USER_EXIT: &str = "Exit status: 0 done; 65 invalid name, empty or mismatched \
password; 66 the password cannot be read; 67 no such user; 74 the file cannot be written.";

#[derive(Subcommand)]
pub enum ConsoleUserCommand {
    /// Create NAME or change its password.
    ///
    /// The password is asked twice on a terminal; from a pipe it is the first line (a second
    /// line, if any, must match): printf 'pw\npw\n' | fieldrelay console-user add NAME
    #[command(after_help = CONSOLE_USER_EXIT)]
    Add {
        /// The login: 1 to 64 printable characters without ':' or spaces.
        name: String,
        /// The password file (name:bcrypt-hash lines, as htpasswd -B writes them).
        #[arg(short, long, value_name = "FILE", default_value = crate::console::users::DEFAULT_FILE)]
        file: PathBuf,
    },
    /// Remove NAME.
    #[command(after_help = CONSOLE_USER_EXIT)]
    Delete {
        /// The login to remove.
        name: String,
        /// The password file.
        #[arg(short, long, value_name = "FILE", default_value = crate::console::users::DEFAULT_FILE)]
        file: PathBuf,
    },
    /// The user names, one per line.
    #[command(after_help = CONSOLE_USER_EXIT)]
    List {
        /// The password file.
        #[arg(short, long, value_name = "FILE", default_value = crate::console::users::DEFAULT_FILE)]
        file: PathBuf,
    },
}

/// The completion script for `shell`.
pub fn completion_script(shell: clap_complete::Shell) -> Vec<u8> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "fieldrelay", &mut script);
    script
}

/// What the `.deb` installs besides the binary, generated from this definition: `DIR/man/*.1`
/// (one page per command and subcommand) and `DIR/completions/` (`fieldrelay.bash`,
/// `_fieldrelay`, `fieldrelay.fish`, the names the shells' completion directories expect); and
/// `DIR/config.yaml`, the installed configuration ([`crate::config::packaged`]).
pub fn write_package_assets(dir: &Path) -> std::io::Result<()> {
    let config = crate::config::packaged::installed(crate::config::packaged::EXAMPLE)
        .map_err(|e| std::io::Error::other(format!("config/example.yaml: {e}")))?;
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("config.yaml"), config)?;
    let man = dir.join("man");
    std::fs::create_dir_all(&man)?;
    clap_mangen::generate_to(Cli::command(), &man)?;
    let completions = dir.join("completions");
    std::fs::create_dir_all(&completions)?;
    for (shell, name) in [
        (clap_complete::Shell::Bash, "fieldrelay.bash"),
        (clap_complete::Shell::Zsh, "_fieldrelay"),
        (clap_complete::Shell::Fish, "fieldrelay.fish"),
    ] {
        std::fs::write(completions.join(name), completion_script(shell))?;
    }
    Ok(())
}

pub const QUEUE_EXIT: &str = "Exit status: 0 done; 3 export finished but could not read every \
row (each unreadable range and bad row is listed on stderr); 65 not a queue file, a newer schema, \
or damaged (use export --file to recover it); 66 no data directory or queue file, or it cannot be \
opened; 73 the output file exists; 74 a read or write failed; 78 invalid --config.";

/// Where `fieldrelay queue` reads: at most one of these; none means the default --config.
#[derive(Args)]
#[group(required = false, multiple = false)]
pub struct QueueSource {
    /// The gateway's data directory (holds queue.db and any quarantined files).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Take the data directory and the topic prefix from this configuration [default, without
    /// --data-dir or --file: /etc/fieldrelay/config.yaml].
    #[arg(short, long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// One queue file: a copy, or a quarantined queue.db.corrupt-*.
    #[arg(long, value_name = "FILE")]
    pub file: Option<PathBuf>,
}

#[derive(Subcommand)]
pub enum QueueCommand {
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
        /// Export the rejected rows instead (refused by the broker for good, e.g. MQTT 5 0x87
        /// not_authorized; kept aside, never sent again by themselves), each with its "reason",
        /// "reason_code" and "rejected" time.
        #[arg(long)]
        rejected: bool,
    },
    /// Put the rejected rows (refused by the broker for good, e.g. an ACL) back into the queue
    /// with their seq, once the cause is fixed; the gateway sends them at its next start. Only
    /// with the gateway stopped: refused, changing nothing, while it runs.
    #[command(after_help = REQUEUE_EXIT)]
    RequeueRejected {
        /// The gateway's data directory.
        #[arg(long, value_name = "DIR", conflicts_with = "config")]
        data_dir: Option<PathBuf>,
        /// Take the data directory from this configuration [default, without --data-dir:
        /// /etc/fieldrelay/config.yaml].
        #[arg(short, long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Only the rows of this reason: a name as `queue stats` shows it (not_authorized,
        /// topic_name_invalid, packet_too_large, ...) or a code (0x87). Default: every reason.
        #[arg(long, value_name = "REASON", value_parser = reason_code)]
        reason: Option<u8>,
    },
}

pub const REQUEUE_EXIT: &str = "Exit status: 0 done (the counts per reason on stderr); 65 a \
newer schema; 66 no queue file; 74 a read or write failed; 75 a gateway runs on the data \
directory (stop it, run this, start it); 77 root on the service user's data directory (use sudo \
-u fieldrelay); 78 invalid --config.";

/// A reason as `queue stats` names it (`not_authorized`) or its code (`0x87`).
fn reason_code(text: &str) -> Result<u8, String> {
    crate::queue::reason::parse(text).ok_or_else(|| {
        let names: Vec<String> = crate::queue::reason::ROW_CODES
            .iter()
            .map(|code| crate::queue::reason::name(*code))
            .collect();
        format!(
            "not a reason: use a name ({}) or a code (0x87)",
            names.join(", ")
        )
    })
}

#[derive(Clone, Copy, ValueEnum)]
pub enum StatsFormat {
    /// A report for a person.
    Text,
    /// One JSON document, for scripts.
    Json,
}

pub const IMPORT_HELP: &str = "Columns (first row; names are case-insensitive, in any order, \
unknown ones ignored): name (or tag, point), address (or register; a protocol address, \
0x-hex, or a Modicon reference such as 40001, 300001 or 00017), table (coil, discrete_input, \
input, holding; optional with a Modicon reference), type (u16, i16, u32, i32, u64, i64, f32, f64, \
bool, string, and vendor spellings such as uint16, int, dword, float, real, double), length \
(registers of a string), unit, scale, offset, writable (yes/no, true/false, R/W, RW), \
word_order, byte_order, description (a comment). Exit status: 0 printed the points; 65 a row \
is wrong (every problem is listed with its line); 66 the file cannot be read.";

#[derive(Subcommand)]
pub enum PointsCommand {
    /// Turn a vendor register list (CSV) into one device's points, checked by the same rules as
    /// the configuration, as YAML on stdout to paste under `devices:`.
    #[command(after_help = IMPORT_HELP)]
    Import {
        /// The register list: CSV with a header row (comma, semicolon or tab separated).
        #[arg(long, value_name = "FILE")]
        csv: PathBuf,
        /// The device's name in the configuration.
        #[arg(long, value_name = "NAME")]
        device: String,
        /// The bus the device is on.
        #[arg(long, value_name = "NAME", default_value = "plc1")]
        bus: String,
        /// The device's Modbus unit id.
        #[arg(long, value_name = "ID", default_value_t = 1)]
        unit_id: u8,
        /// The list gives 0-based protocol addresses even with 5 or 6 digits (SunSpec, SMA):
        /// do not read 40003 as a Modicon reference.
        #[arg(long)]
        protocol_addresses: bool,
    },
}
