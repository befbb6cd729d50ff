//! Running under systemd: readiness, a status line, a watchdog fed only while the pipeline makes
//! progress, and the choice of log sink.
//!
//! # Protocol (sd_notify(3), pure-Rust `sd-notify` crate)
//!
//! - `READY=1` once the config is valid, the queue is open and every task was started
//!   (`Type=notify`: `systemctl start` returns then, and units ordered after fieldrelay start).
//! - Every tick — a quarter of `WatchdogSec=`, or [`STATUS_INTERVAL`] without a watchdog — one
//!   probe round. If it shows progress: `WATCHDOG=1` and `STATUS=<link>; <depth> rows queued; …`
//!   in one datagram (with `, <n> rejected (fieldrelay queue stats)` after the depth while the
//!   queue file holds rows the broker refused for good). If not: only `STATUS=stalled: <reason>; …`, and systemd kills and restarts
//!   the service once a whole `WatchdogSec=` passed without a ping (`Restart=on-failure`).
//! - `STOPPING=1` as soon as shutdown begins; no pings after it (systemd stops the watchdog in the
//!   stop states, and `TimeoutStopSec=` bounds the shutdown instead).
//!
//! # What counts as progress
//!
//! A round shows progress when, within the probe deadline (one tick):
//! 1. the async runtime ran the supervisor's tick at all — a runtime whose workers are all
//!    blocked sends nothing;
//! 2. the queue writer thread answered [`crate::queue::Queue::probe`], which queues behind every
//!    command sent before it and is answered only after the writer took SQLite's write lock. A
//!    writer stuck in a commit (an fsync that never returns), blocked by another process holding
//!    the database locked, or dead, stops the pings. The busy timeout (5 s) bounds each wait
//!    inside the writer, so a lock released in time costs a slow round, not a restart;
//! 3. every device poller task and the uplink task are still running — they end before shutdown
//!    only by a panic, and a restart brings the lost part back.
//!
//! *Not* a stall: a device that does not answer, a broker that is down or refuses us, a queue
//! that grows. The gateway is built to ride those out (backoff, durable queue), and a restart
//! would fix none of them; they show in the status line instead.
//!
//! # Failure behaviour
//!
//! - Not under systemd (no `NOTIFY_SOCKET`): the supervisor returns at once; nothing changes.
//! - A send that fails (socket gone, nobody listening) is logged — the first of a run as a
//!   warning, later ones at debug — and never ends the gateway. systemd then acts on its own
//!   (start timeout, missing pings), which is the honest outcome.
//! - `NOTIFY_SOCKET` must be a file-system path (as systemd sets it); abstract sockets (`@…`)
//!   are not supported by the crate.
//!
//! # Who runs it
//!
//! [`owner`] refuses `sudo fieldrelay run` on the service user's data directory, whose files
//! root would otherwise take over.
//!
//! # Logs
//!
//! [`journal::stderr_is_journal`] tells `main` whether stderr is the journal (`JOURNAL_STREAM`
//! matches stderr's device and inode); logs then go through journald's native protocol, with
//! levels as priorities.

pub mod journal;
pub mod notifier;
pub mod owner;
pub mod status;
pub mod supervisor;
pub mod watchdog;

pub use supervisor::{supervise, Pipeline};
pub use watchdog::STATUS_INTERVAL;
