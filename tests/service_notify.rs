//! systemd integration against a fake service manager: the test binds the unix datagram socket
//! that `NOTIFY_SOCKET` names, runs the real `fieldrelay` binary (with a real mosquitto, a real
//! SQLite queue and a simulated device), and reads what the gateway tells it.
//!
//! The wedge is real: another connection holds an exclusive lock on the queue's SQLite file, so
//! the writer thread cannot commit. Every wait is for a datagram or a log line, with a deadline.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{start_simulator, wait_until, write_config, Gateway, Mosquitto};

/// Generous: other test suites compile and run on the same two cores.
const DEADLINE: Duration = Duration::from_secs(60);
/// `WatchdogSec=1s`: the gateway probes every 250 ms.
const WATCHDOG_USEC: &str = "1000000";
/// Rounds in a row without a ping that the wedge test demands: one whole watchdog period.
const STARVED_ROUNDS: usize = 4;

const COUNTER_EVERY_POLL: &str = "      - name: counter
        table: holding
        address: 4
        type: u32
        qos: 1
        publish: every_poll
";

/// One datagram from the gateway, split into its `KEY=value` lines.
#[derive(Debug, Clone, Default)]
struct Notification {
    ready: bool,
    watchdog: bool,
    stopping: bool,
    status: Option<String>,
}

impl Notification {
    fn parse(text: &str) -> Notification {
        let mut n = Notification::default();
        for line in text.lines() {
            match line.split_once('=') {
                Some(("READY", "1")) => n.ready = true,
                Some(("WATCHDOG", "1")) => n.watchdog = true,
                Some(("STOPPING", "1")) => n.stopping = true,
                Some(("STATUS", status)) => n.status = Some(status.to_string()),
                _ => {}
            }
        }
        n
    }

    fn stalled(&self) -> bool {
        self.status
            .as_deref()
            .is_some_and(|s| s.starts_with("stalled:"))
    }
}

/// The fake service manager's end of `NOTIFY_SOCKET`, its datagrams parsed.
struct NotifySocket {
    raw: common::notify::NotifySocket,
    path: PathBuf,
    seen: Vec<Notification>,
}

impl NotifySocket {
    fn bind(dir: &Path) -> NotifySocket {
        let raw = common::notify::NotifySocket::bind(dir);
        NotifySocket {
            path: raw.path.clone(),
            raw,
            seen: Vec::new(),
        }
    }

    async fn next(&mut self, gateway: &Gateway) -> Notification {
        match self.raw.recv(DEADLINE).await {
            Some(text) => {
                let notification = Notification::parse(&text);
                self.seen.push(notification.clone());
                notification
            }
            None => panic!(
                "no notification within {DEADLINE:?}; seen {:?}\n---- gateway log ----\n{}",
                self.seen,
                gateway.log()
            ),
        }
    }

    async fn until(
        &mut self,
        gateway: &Gateway,
        what: &str,
        mut done: impl FnMut(&Notification) -> bool,
    ) -> Notification {
        for _ in 0..10_000 {
            let n = self.next(gateway).await;
            if done(&n) {
                return n;
            }
        }
        panic!("{what} never came; seen {:?}", self.seen);
    }
}

/// The gateway as systemd would run it: `NOTIFY_SOCKET` and `WATCHDOG_USEC` set.
fn start_gateway(config: &Path, notify_socket: &Path) -> Gateway {
    let socket = notify_socket.display().to_string();
    Gateway::start_with_env(
        config,
        &[("NOTIFY_SOCKET", &socket), ("WATCHDOG_USEC", WATCHDOG_USEC)],
    )
}

/// READY=1 first, then WATCHDOG=1 pings with a status line; a foreign exclusive lock on the queue
/// file starves the watchdog (for a whole period, while the process keeps running) and says why
/// in STATUS=; releasing the lock brings the pings back; SIGTERM sends STOPPING=1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_and_pings_stop_while_the_queue_is_wedged() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(dir.path());
    let (_regs, device, _sim) = start_simulator().await;
    // Two devices on one bus (one poller task): the status line counts devices.
    let two_devices = format!(
        "{COUNTER_EVERY_POLL}  - name: chiller\n    bus: plc1\n    unit_id: 2\n    poll_interval: 50ms\n    points:\n{COUNTER_EVERY_POLL}"
    );
    let config = write_config(dir.path(), broker.port, device, &two_devices);
    // Rows a broker refused for good, left from an earlier run: the status line counts them.
    common::queued::seed_rejected(&dir.path().join("data"), 2, 0x87).await;
    let mut notify = NotifySocket::bind(dir.path());
    let mut gateway = start_gateway(&config, &notify.path);

    let first = notify.next(&gateway).await;
    assert!(first.ready, "the first notification is READY=1: {first:?}");
    assert!(!first.watchdog);
    let ping = notify
        .until(
            &gateway,
            "a ping while connected, both devices online",
            |n| {
                n.watchdog
                    && n.status.as_deref().is_some_and(|s| {
                        s.starts_with("uplink connected;") && s.ends_with("; 2/2 devices online")
                    })
            },
        )
        .await;
    assert!(
        ping.status
            .as_deref()
            .is_some_and(|s| s.contains(" queued, 2 rejected (fieldrelay queue stats); ")),
        "status line: {ping:?}"
    );

    // The wedge: another connection takes SQLite's write lock and keeps it.
    let lock = rusqlite::Connection::open(dir.path().join("data").join("queue.db")).unwrap();
    lock.busy_timeout(DEADLINE).unwrap();
    lock.execute_batch("BEGIN EXCLUSIVE").unwrap();
    // A ping from a probe answered before the lock was taken may still be on its way; the first
    // stalled round proves every later probe was sent after the lock was taken.
    let stalled = notify
        .until(&gateway, "a stalled status", Notification::stalled)
        .await;
    assert!(
        stalled
            .status
            .as_deref()
            .is_some_and(|s| s.contains("queue writer")),
        "{stalled:?}"
    );
    for round in 0..STARVED_ROUNDS {
        let n = notify.next(&gateway).await;
        assert!(
            !n.watchdog,
            "pinged in round {round} while the queue was locked: {:?}",
            notify.seen
        );
        assert!(n.stalled(), "{n:?}");
    }
    assert!(gateway.is_running(), "a stall must not end the process");
    assert!(gateway.log().contains("pipeline stalled"));

    lock.execute_batch("ROLLBACK").unwrap();
    notify
        .until(&gateway, "pings after the lock was released", |n| {
            n.watchdog && !n.stalled()
        })
        .await;

    let status = gateway.terminate(DEADLINE);
    assert!(status.success(), "exit status {status:?}");
    notify.until(&gateway, "STOPPING=1", |n| n.stopping).await;
    assert!(
        !notify.seen.iter().skip(1).any(|n| n.ready),
        "READY=1 is sent once"
    );
}

/// A notify socket nobody listens on is logged once as a warning (later failures at debug) and
/// the gateway keeps running and shuts down cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_failures_are_logged_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(dir.path());
    let (_regs, device, _sim) = start_simulator().await;
    let config = write_config(dir.path(), broker.port, device, COUNTER_EVERY_POLL);
    let mut gateway = start_gateway(&config, &dir.path().join("nobody-listens.sock"));

    wait_until("three failed notifications in the log", DEADLINE, || {
        gateway.log().matches("cannot notify systemd").count() >= 3
    });
    assert!(gateway.is_running());
    let log = gateway.log();
    let warnings = log
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("cannot notify systemd"))
        .count();
    assert_eq!(warnings, 1, "only the first failure is a warning:\n{log}");

    let status = gateway.terminate(DEADLINE);
    assert!(status.success(), "exit status {status:?}");
    assert!(gateway.log().contains("queue closed"));
}

/// `JOURNAL_STREAM` naming the gateway's own stderr switches logging to the journal; where no
/// journald listens (CI containers) the gateway says so and keeps logging text to stderr. A
/// stream that is not its stderr (inherited from a parent) is ignored.
#[test]
fn journal_stream_is_honoured_only_for_its_own_stderr() {
    use std::os::unix::fs::MetadataExt;

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        std::fs::read_to_string("config/example.yaml")
            .unwrap()
            .replace("/var/lib/fieldrelay", &dir.path().display().to_string()),
    )
    .unwrap();

    let run_check = |journal_stream: &dyn Fn(&std::fs::Metadata) -> String| -> String {
        let log = dir.path().join("check.log");
        let stderr = std::fs::File::create(&log).unwrap();
        let meta = stderr.metadata().unwrap();
        let status = Command::new(env!("CARGO_BIN_EXE_fieldrelay"))
            .args(["check", "--config"])
            .arg(&config)
            .env("JOURNAL_STREAM", journal_stream(&meta))
            .stdout(Stdio::null())
            .stderr(stderr)
            .status()
            .expect("run fieldrelay check");
        assert!(status.success());
        std::fs::read_to_string(&log).unwrap()
    };

    let fallback = "stderr is the journal but its socket cannot be used";
    let own = run_check(&|meta| format!("{}:{}", meta.dev(), meta.ino()));
    if Path::new("/run/systemd/journal/socket").exists() {
        assert!(!own.contains(fallback), "{own}");
    } else {
        assert!(own.contains(fallback), "{own}");
    }
    let inherited = run_check(&|meta| format!("{}:{}", meta.dev(), meta.ino() + 1));
    assert!(!inherited.contains(fallback), "{inherited}");
}

/// systemd kills the process `TimeoutStopSec=` after SIGTERM; the gateway's own shutdown
/// deadlines must end first, or the queue may not close in order (still safe, as after
/// `kill -9`, but the uplink's offline status and DISCONNECT would be lost).
#[test]
fn the_shutdown_budget_fits_in_the_units_stop_timeout() {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/systemd/fieldrelay.service"
    ))
    .unwrap();
    let value = unit
        .lines()
        .find_map(|line| line.strip_prefix("TimeoutStopSec="))
        .expect("the unit sets TimeoutStopSec=");
    let seconds: u64 = value
        .strip_suffix('s')
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("TimeoutStopSec={value}: expected whole seconds like 30s"));
    let budget = fieldrelay::app::SHUTDOWN_BUDGET;
    assert!(
        budget + std::time::Duration::from_secs(5) <= std::time::Duration::from_secs(seconds),
        "shutdown may take {budget:?}, TimeoutStopSec={value} leaves less than 5 s of margin"
    );
}
