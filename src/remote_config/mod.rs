//! Fleet operation: a whole configuration pushed from the cloud, applied through the reload
//! path, and rolled back by a dead-man timer when it does not prove itself. Opt-in
//! (`remote_config.allow`); the topics and payloads are in `docs/interface.md`, the operator's
//! view in `docs/operations.md` ("Fleet operation").
//!
//! ```text
//!  P/config/set ─► uplink ─► task: parse ─► check (= fieldrelay check, no inline secrets)
//!                                   │ invalid: answer with every problem, nothing changed
//!                                   ▼ valid
//!      last-good ◄─ current file; trial state (pending); new file in place (atomic)
//!                                   ▼
//!                reload task (as SIGHUP) ─► applied live, or exit 75 → systemd restarts
//!                                   ▼
//!      trial: connected to the broker + every device online before answers, within
//!      confirm_within ─► answer `applied`       │ not in time, or the file does not start
//!                                               ▼
//!                 last-good restored and applied ─► answer `rolled_back` with what failed
//! ```
//!
//! - [`pending`]: the trial state and every decision on it (pure).
//! - [`payload`]: the topics' payloads (pure).
//! - [`redact`]: the running file as `P/config/current` shows it (pure).
//! - [`stats`]: answers by status, for the metrics endpoint.
//! - [`files`]: the files beside the configuration, written atomically and in an order that
//!   a crash anywhere can be resolved from (`prepare_start` runs before the configuration is
//!   loaded).
//! - [`task`]: the task tying them to the uplink, the queue and the reload task.
//!
//! # Guarantees
//! - **Never touches the queue or the session.** Applying goes through the reload path (only
//!   buses and devices change live) or a clean restart (the queue is closed and reopened as at
//!   any restart); rollback likewise.
//! - **One answer per id**, committed to the queue with the id recorded in the recent-commands
//!   table (origin `config`) in one transaction: a redelivered id gets the recorded answer
//!   again, and a push is applied at most once.
//! - **Cannot lock itself out.** Until it confirms, the pushed file is on trial with a wall-
//!   clock deadline kept on disk: a file that does not connect, does not poll, crashes the
//!   gateway or does not even load is replaced by the last-known-good, whatever stops the
//!   process in between.

pub mod files;
pub mod payload;
pub mod pending;
pub mod redact;
pub mod stats;
pub mod task;

pub use files::{fall_back, prepare_start, Files};
pub use stats::PushStats;
pub use task::ConfigTask;

/// Exit status that asks systemd to start the gateway again (sysexits.h EX_TEMPFAIL): a pushed
/// configuration (or its rollback) changes a section only a restart applies. The unit restarts
/// on it (`Restart=on-failure`, and `RestartForceExitStatus=75` should that be changed).
pub const EX_RESTART: u8 = 75;

/// `P/config/set` and `P/config/get` under `prefix`.
pub fn topics(prefix: &str) -> (String, String) {
    (
        format!("{prefix}/config/set"),
        format!("{prefix}/config/get"),
    )
}
